//! Blob selection, the hot path: an immutable [`Snapshot`] of the pool and the mirrors,
//! rebuilt after a sync, a crawl or a mirror edit and swapped atomically; a request reads it
//! without locks or writes and picks a mirror that provably holds the blob and is nearest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::Rng;
use serde::Serialize;

use crate::model::{ContentSet, Digest, Generation, MirrorName, MirrorStatus, RepoName};
use crate::store::{BlobFacts, PoolFacts, StoreError};

pub use crate::store::BlobLookup;

use super::lookup::ClientGeo;

/// Selection tiers, nearest first; the first with a qualifying mirror wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Netblock,
    Asn,
    Country,
    Continent,
    Global,
}

impl Tier {
    /// Metalink priority: 1 is preferred.
    pub fn priority(self) -> u32 {
        self as u32 + 1
    }
}

/// Why a mirror may not get a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Exclusion {
    Disabled {
        detail: Option<String>,
    },
    OptedOut,
    AutoDisabled {
        detail: String,
    },
    NeverVerified,
    /// The blob is newer than the generation the mirror holds.
    Stale {
        holds: Generation,
        blob_first_seen: Generation,
    },
    ContentSet {
        carries: String,
    },
    NoHttpsUrl,
    /// Private mirrors serve only their netblocks and ASNs.
    Private,
    /// Its stored record does not pass today's checks (a URL written by an older release,
    /// say): no client is sent to it until it is edited.
    BadRecord {
        detail: String,
    },
}

struct MirrorEntry {
    name: MirrorName,
    http: Option<String>,
    https: Option<String>,
    country: Option<String>,
    continent: Option<String>,
    asns: Vec<u32>,
    netblocks: Vec<ipnet::IpNet>,
    weight: u32,
    private: bool,
    generation: Option<Generation>,
    content: ContentSet,
    /// Its registry view's URL, while the crawler has verified it.
    registry: Option<String>,
    /// Operator, admin and crawler state, decided once per snapshot.
    state: Result<(), Exclusion>,
    /// Shown to anonymous clients (`/explain`): approved, enabled and not private.
    public: bool,
}

/// A qualifying mirror with the tier it falls in for this client.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub mirror: MirrorName,
    pub tier: Tier,
    /// For the netblock tier: the length of the matching prefix.
    pub prefix: u8,
    pub weight: u32,
    pub country: Option<String>,
    pub url: String,
}

/// A verified registry mirror offered to a client, with the tier it falls in.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryMirror {
    pub mirror: MirrorName,
    pub tier: Tier,
    /// `scheme://host[:port]/`.
    pub url: String,
}

/// Where a blob request goes.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    pub url: String,
    /// `None`: the fallback.
    pub mirror: Option<MirrorName>,
    pub tier: Option<Tier>,
}

/// Everything `/explain` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub client: IpAddr,
    pub geo: ClientGeo,
    pub generation: Generation,
    pub blob: Option<BlobSummary>,
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
    pub pick: Pick,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlobSummary {
    pub size: u64,
    pub first_seen: Generation,
    /// Content set -> since which generation it carries the blob.
    pub sets: std::collections::BTreeMap<String, Generation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub mirror: MirrorName,
    #[serde(flatten)]
    pub why: Exclusion,
}

/// The mirrors as selection sees them, indexed by what each tier matches on, so a request
/// looks at the mirrors of its nearest tier, not at every mirror. Rebuilt after a mirror edit
/// or a crawl, apart from the (much larger) content facts.
#[derive(Default)]
pub struct MirrorSet {
    /// What the set was built from, as the store lists it: what is written out.
    records: Vec<MirrorStatus>,
    entries: Vec<MirrorEntry>,
    /// Longest prefix first: (prefix length, network -> mirrors with that netblock).
    netblocks: Vec<(u8, HashMap<ipnet::IpNet, Vec<u32>>)>,
    asns: HashMap<u32, Vec<u32>>,
    /// Public mirrors (private ones serve only their netblocks and ASNs) by country, by
    /// continent, and all of them.
    countries: HashMap<String, Vec<u32>>,
    continents: HashMap<String, Vec<u32>>,
    global: Vec<u32>,
}

impl MirrorSet {
    pub fn build(mirrors: Vec<MirrorStatus>) -> MirrorSet {
        let entries: Vec<MirrorEntry> = mirrors.iter().cloned().map(MirrorEntry::of).collect();
        let mut set = MirrorSet { records: mirrors, ..MirrorSet::default() };
        let mut by_len: HashMap<u8, HashMap<ipnet::IpNet, Vec<u32>>> = HashMap::new();
        for (i, m) in entries.iter().enumerate() {
            let i = i as u32;
            for n in &m.netblocks {
                let ids = by_len.entry(n.prefix_len()).or_default().entry(n.trunc()).or_default();
                if ids.last() != Some(&i) {
                    ids.push(i);
                }
            }
            for a in &m.asns {
                let ids = set.asns.entry(*a).or_default();
                if ids.last() != Some(&i) {
                    ids.push(i);
                }
            }
            if m.private {
                continue;
            }
            if let Some(c) = &m.country {
                set.countries.entry(c.clone()).or_default().push(i);
            }
            if let Some(c) = &m.continent {
                set.continents.entry(c.clone()).or_default().push(i);
            }
            set.global.push(i);
        }
        set.netblocks = by_len.into_iter().collect();
        set.netblocks.sort_by_key(|n| std::cmp::Reverse(n.0));
        set.entries = entries;
        set
    }
}

impl MirrorEntry {
    fn of(s: MirrorStatus) -> MirrorEntry {
        let mut m = s.mirror;
        // Stored URLs are parsed again: only what passes reaches a Location header.
        let parsed: Result<Vec<String>, _> =
            m.urls.iter().map(|u| crate::model::parse_base_url(u)).collect();
        let state = match parsed {
            Ok(urls) => {
                m.urls = urls;
                Ok(())
            }
            Err(e) => {
                let detail = e.to_string();
                tracing::warn!(mirror = %m.name, %detail, "mirror excluded: its stored record is not valid");
                m.urls.clear();
                Err(Exclusion::BadRecord { detail })
            }
        };
        let state = if state.is_err() {
            state
        } else if !m.enabled {
            Err(Exclusion::Disabled { detail: m.disabled_reason.clone() })
        } else if !m.active {
            Err(Exclusion::OptedOut)
        } else if let Some(why) = s.health.auto_disabled.clone() {
            Err(Exclusion::AutoDisabled { detail: why })
        } else {
            Ok(())
        };
        let public = !m.private
            && !matches!(state, Err(Exclusion::Disabled { .. } | Exclusion::BadRecord { .. }));
        let registry = s.health.registry_generation.and(m.registry_url.as_deref()).and_then(|u| {
            crate::model::parse_registry_url(u)
                .inspect_err(
                    |e| tracing::warn!(mirror = %m.name, error = %e, "registry URL not offered"),
                )
                .ok()
        });
        MirrorEntry {
            registry,
            public,
            http: m.url_for(false).map(str::to_owned),
            https: m.url_for(true).map(str::to_owned),
            continent: s.continent,
            name: m.name,
            country: m.country,
            asns: m.asns,
            netblocks: m.netblocks,
            weight: m.bandwidth.max(1),
            private: m.private,
            generation: s.health.generation,
            content: m.content,
            state,
        }
    }
}

/// [`Snapshot`] as bytes: a layout byte, then postcard.
#[derive(Serialize, serde::Deserialize)]
struct StateWire {
    facts: Vec<u8>,
    mirrors: Vec<u8>,
}

const STATE_LAYOUT: u8 = 1;

/// The pool and the mirrors at one moment: two parts, each replaced on its own.
pub struct Snapshot {
    pub generation: Generation,
    /// Every pool file's size summed: what a full mirror holds.
    pub pool_bytes: u64,
    content: Arc<PoolFacts>,
    mirrors: Arc<MirrorSet>,
    fallback: String,
    require_https: bool,
}

impl Snapshot {
    pub fn empty(fallback: String, require_https: bool) -> Snapshot {
        Snapshot::build(PoolFacts::default(), Vec::new(), fallback, require_https)
    }

    pub fn build(
        facts: PoolFacts,
        mirrors: Vec<MirrorStatus>,
        fallback: String,
        require_https: bool,
    ) -> Snapshot {
        Snapshot::of(Arc::new(facts), Arc::new(MirrorSet::build(mirrors)), fallback, require_https)
    }

    fn of(
        content: Arc<PoolFacts>,
        mirrors: Arc<MirrorSet>,
        fallback: String,
        require_https: bool,
    ) -> Snapshot {
        Snapshot {
            generation: content.generation,
            pool_bytes: content.pool_bytes,
            content,
            mirrors,
            fallback,
            require_https,
        }
    }

    /// The serving state as bytes, for [`Snapshot::decode`]: the content facts as
    /// [`PoolFacts::encode`] writes them and the mirror records the selection index is
    /// built from (as JSON: they are few, and it is their format in the store and the API).
    /// What a primary will ship to its read replicas.
    pub fn encode(&self) -> Vec<u8> {
        let wire = StateWire {
            facts: self.content.encode(),
            mirrors: serde_json::to_vec(&self.mirrors.records).expect("mirrors always serialize"),
        };
        postcard::to_extend(&wire, vec![STATE_LAYOUT]).expect("the state always serializes")
    }

    /// Load a state [`Snapshot::encode`] wrote, whole: both parts checked as anything from
    /// outside the process is, the mirror index rebuilt (microseconds for thousands).
    pub fn decode(
        bytes: &[u8],
        fallback: String,
        require_https: bool,
    ) -> Result<Snapshot, StoreError> {
        let bad = |why: String| StoreError::Corrupt(format!("serving state: {why}"));
        let w: StateWire = match bytes.split_first() {
            Some((&STATE_LAYOUT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| bad(e.to_string()))?
            }
            _ => return Err(bad("unknown layout".into())),
        };
        let mirrors = serde_json::from_slice(&w.mirrors).map_err(|e| bad(e.to_string()))?;
        Ok(Snapshot::build(PoolFacts::decode(&w.facts)?, mirrors, fallback, require_https))
    }

    /// The mirror records selection was built from, as the store lists them.
    pub fn mirror_records(&self) -> &[MirrorStatus] {
        &self.mirrors.records
    }

    /// The content facts (shared with the crawler).
    pub fn content(&self) -> &Arc<PoolFacts> {
        &self.content
    }

    pub fn repo_names(&self) -> impl Iterator<Item = &RepoName> {
        self.content.repo_names()
    }

    /// A blob of a repository (the largest), for trying `explain` without typing a digest.
    pub fn sample_blob(&self, repo: &RepoName) -> Option<Digest> {
        self.content.repo_content(repo).max_by_key(|(_, b)| b.size).map(|(d, _)| d)
    }

    /// The blob, if the repository's tags reach it.
    pub fn blob(&self, repo: &RepoName, digest: &Digest) -> BlobLookup<'_> {
        self.content.lookup(repo, digest)
    }

    pub fn fallback_url(&self, digest: &Digest) -> String {
        format!("{}blobs/sha256/{}", self.fallback, digest.hex())
    }

    /// The base URL mirror `m` would serve `blob` from, if it may: the hot path's check,
    /// without building a reason.
    fn eligible<'a>(&self, m: &'a MirrorEntry, blob: &BlobFacts, https: bool) -> Option<&'a str> {
        let holds = m.generation?;
        if m.state.is_err() || self.content.carried_since(blob, &m.content)? > holds {
            return None;
        }
        if self.require_https {
            m.https.as_deref()
        } else if https {
            m.https.as_deref().or(m.http.as_deref())
        } else {
            m.http.as_deref().or(m.https.as_deref())
        }
    }

    /// Like [`Self::eligible`], saying why not (for `/explain`).
    fn qualifies<'a>(
        &self,
        m: &'a MirrorEntry,
        blob: &BlobFacts,
        https: bool,
    ) -> Result<&'a str, Exclusion> {
        if let Some(url) = self.eligible(m, blob, https) {
            return Ok(url);
        }
        m.state.clone()?;
        let holds = m.generation.ok_or(Exclusion::NeverVerified)?;
        let since = self
            .content
            .carried_since(blob, &m.content)
            .ok_or_else(|| Exclusion::ContentSet { carries: m.content.to_string() })?;
        if since > holds {
            return Err(Exclusion::Stale { holds, blob_first_seen: since });
        }
        Err(Exclusion::NoHttpsUrl)
    }

    /// The nearest tier `m` falls in for this client, with the netblock prefix length.
    fn tier_of(m: &MirrorEntry, ip: IpAddr, geo: &ClientGeo) -> Result<(Tier, u8), Exclusion> {
        let prefix = m.netblocks.iter().filter(|n| n.contains(&ip)).map(|n| n.prefix_len()).max();
        if let Some(p) = prefix {
            return Ok((Tier::Netblock, p));
        }
        if geo.asn.is_some_and(|a| m.asns.contains(&a)) {
            return Ok((Tier::Asn, 0));
        }
        if m.private {
            return Err(Exclusion::Private);
        }
        let same = |a: &Option<String>, b: Option<&str>| b.is_some() && a.as_deref() == b;
        Ok(if same(&m.country, geo.country) {
            (Tier::Country, 0)
        } else if same(&m.continent, geo.continent) {
            (Tier::Continent, 0)
        } else {
            (Tier::Global, 0)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &self,
        digest: &Digest,
        blob: &BlobFacts,
        ip: IpAddr,
        geo: &ClientGeo,
        https: bool,
        public_only: bool,
    ) -> (Vec<Candidate>, Vec<Excluded>) {
        let mut candidates = Vec::new();
        let mut excluded = Vec::new();
        for m in self.mirrors.entries.iter().filter(|m| m.public || !public_only) {
            let result = self
                .qualifies(m, blob, https)
                .and_then(|base| Self::tier_of(m, ip, geo).map(|t| (base, t)));
            match result {
                Ok((base, (tier, prefix))) => candidates.push(Candidate {
                    mirror: m.name.clone(),
                    tier,
                    prefix,
                    weight: m.weight,
                    country: m.country.clone(),
                    url: format!("{base}blobs/sha256/{}", digest.hex()),
                }),
                Err(Exclusion::AutoDisabled { .. }) if public_only => excluded.push(Excluded {
                    mirror: m.name.clone(),
                    why: Exclusion::AutoDisabled { detail: "failed its recent crawls".into() },
                }),
                Err(why) => excluded.push(Excluded { mirror: m.name.clone(), why }),
            }
        }
        candidates.sort_by(|a, b| a.tier.cmp(&b.tier).then(b.prefix.cmp(&a.prefix)));
        (candidates, excluded)
    }

    /// Pick where `blob` goes for this client: the nearest non-empty tier (for netblocks the
    /// longest prefix), weighted by bandwidth; the fallback if no mirror qualifies.
    pub fn pick(
        &self,
        digest: &Digest,
        blob: &BlobFacts,
        ip: IpAddr,
        geo: &ClientGeo,
        https: bool,
        rng: &mut impl Rng,
    ) -> Pick {
        self.pick_among(digest, blob, ip, geo, https, false, rng)
    }

    /// Weighted choice (by bandwidth) among the mirrors `ids` that may serve `blob`:
    /// reservoir sampling in one pass, no allocation.
    fn choose<'a>(
        &'a self,
        ids: &[u32],
        blob: &BlobFacts,
        https: bool,
        public_only: bool,
        rng: &mut impl Rng,
    ) -> Option<(&'a MirrorEntry, &'a str)> {
        let mut best = None;
        let mut total = 0u64;
        for &i in ids {
            let m = &self.mirrors.entries[i as usize];
            if public_only && !m.public {
                continue;
            }
            let Some(base) = self.eligible(m, blob, https) else { continue };
            let w = u64::from(m.weight);
            total += w;
            if rng.random_range(0..total) < w {
                best = Some((m, base));
            }
        }
        best
    }

    /// [`Self::pick`], among public mirrors only when `public_only` (anonymous `/explain`).
    /// The hot path: tier by tier, nearest first, it looks only at the mirrors indexed under
    /// the client's netblocks, ASN, country and continent, and at all of them only when no
    /// nearer one may serve the blob.
    #[allow(clippy::too_many_arguments)]
    fn pick_among(
        &self,
        digest: &Digest,
        blob: &BlobFacts,
        ip: IpAddr,
        geo: &ClientGeo,
        https: bool,
        public_only: bool,
        rng: &mut impl Rng,
    ) -> Pick {
        let ms = &self.mirrors;
        let netblocks = ms.netblocks.iter().filter_map(|(len, nets)| {
            let net = ipnet::IpNet::new(ip, *len).ok()?.trunc();
            nets.get(&net).map(|ids| (Tier::Netblock, ids))
        });
        let asn = geo.asn.and_then(|a| ms.asns.get(&a)).map(|ids| (Tier::Asn, ids));
        let country = geo.country.and_then(|c| ms.countries.get(c)).map(|ids| (Tier::Country, ids));
        let continent =
            geo.continent.and_then(|c| ms.continents.get(c)).map(|ids| (Tier::Continent, ids));
        let tiers = netblocks
            .chain(asn)
            .chain(country)
            .chain(continent)
            .chain([(Tier::Global, &ms.global)]);
        for (tier, ids) in tiers {
            if let Some((m, base)) = self.choose(ids, blob, https, public_only, rng) {
                return Pick {
                    url: format!("{base}blobs/sha256/{}", digest.hex()),
                    mirror: Some(m.name.clone()),
                    tier: Some(tier),
                };
            }
        }
        Pick { url: self.fallback_url(digest), mirror: None, tier: None }
    }

    /// The verified registry mirrors that may serve this client, nearest tier first (for
    /// netblocks the longest prefix), within a tier by bandwidth: what `/client-config`
    /// lists before Wharf. `arch`: the client's architecture, which partial mirrors must
    /// carry; `None` admits only mirrors carrying everything.
    pub fn registry_mirrors(
        &self,
        ip: IpAddr,
        geo: &ClientGeo,
        arch: Option<&str>,
    ) -> Vec<RegistryMirror> {
        let mut out: Vec<(Tier, u8, u32, RegistryMirror)> = Vec::new();
        for m in &self.mirrors.entries {
            let Some(url) = m.registry.as_deref() else { continue };
            let carries = match arch {
                Some(a) => m.content.contains_arch(a),
                None => m.content == ContentSet::All,
            };
            if m.state.is_err() || m.generation.is_none() || !carries {
                continue;
            }
            let Ok((tier, prefix)) = Self::tier_of(m, ip, geo) else { continue };
            let entry = RegistryMirror { mirror: m.name.clone(), tier, url: url.to_owned() };
            out.push((tier, prefix, m.weight, entry));
        }
        let key = |(tier, prefix, weight, m): &(Tier, u8, u32, RegistryMirror)| {
            (*tier, std::cmp::Reverse(*prefix), std::cmp::Reverse(*weight), m.mirror.clone())
        };
        out.sort_by_key(key);
        out.into_iter().map(|(.., m)| m).collect()
    }

    /// Every qualifying mirror, nearest tier first (for metalink and mirrorlist).
    pub fn ranked(
        &self,
        digest: &Digest,
        blob: &BlobFacts,
        ip: IpAddr,
        geo: &ClientGeo,
        https: bool,
    ) -> Vec<Candidate> {
        self.classify(digest, blob, ip, geo, https, false).0
    }

    /// Why each mirror would or would not get this request, and the pick. `public_only`
    /// (anonymous callers): only approved, enabled, non-private mirrors are considered or
    /// named, without operators' reasons or crawl errors.
    #[allow(clippy::too_many_arguments)]
    pub fn explain(
        &self,
        repo: &RepoName,
        digest: &Digest,
        ip: IpAddr,
        geo: ClientGeo,
        https: bool,
        public_only: bool,
        rng: &mut impl Rng,
    ) -> Explanation {
        let blob = match self.blob(repo, digest) {
            BlobLookup::Found(b) => Some(b),
            _ => None,
        };
        let (candidates, excluded, pick) = match blob {
            Some(b) => {
                let (c, e) = self.classify(digest, b, ip, &geo, https, public_only);
                (c, e, self.pick_among(digest, b, ip, &geo, https, public_only, rng))
            }
            None => (
                Vec::new(),
                Vec::new(),
                Pick { url: self.fallback_url(digest), mirror: None, tier: None },
            ),
        };
        Explanation {
            client: ip,
            generation: self.generation,
            blob: blob.map(|b| BlobSummary {
                size: b.size,
                first_seen: b.first_seen,
                sets: self.content.sets_of(b),
            }),
            geo,
            candidates,
            excluded,
            pick,
        }
    }
}

/// The client's address: the peer, or — only when the peer is a trusted proxy — the nearest
/// untrusted address the proxies recorded: from `Forwarded` (`for=`) when present, else from
/// `X-Forwarded-For` (all header lines, in order). Walking from the right, trusted proxies are
/// skipped; an entry that does not parse ends the walk at the peer, so nothing a client
/// wrote further left is believed. IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_ip(
    peer: IpAddr,
    x_forwarded_for: &[&str],
    forwarded: &[&str],
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let parse = |s: &str| -> Option<IpAddr> {
        let s = s.trim().trim_matches('"');
        let s = s.strip_prefix('[').and_then(|r| r.split(']').next()).unwrap_or(s);
        s.parse::<IpAddr>()
            .ok()
            .or_else(|| s.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
            .map(|ip| ip.to_canonical())
    };
    let walk = |entries: Vec<Option<IpAddr>>| -> IpAddr {
        for e in entries.into_iter().rev() {
            match e {
                Some(ip) if is_trusted(&ip) => continue,
                Some(ip) => return ip,
                None => return peer,
            }
        }
        peer
    };
    if !forwarded.is_empty() {
        let entries = forwarded
            .iter()
            .flat_map(|h| h.split(','))
            .map(|el| {
                el.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for").then(|| parse(v)).flatten()
                })
            })
            .collect();
        return walk(entries);
    }
    walk(x_forwarded_for.iter().flat_map(|h| h.split(',')).map(parse).collect())
}

/// The selection state of a running Wharf: the current snapshot, swapped atomically; its
/// content facts and its mirrors are replaced independently.
pub struct Selector {
    snapshot: ArcSwap<Snapshot>,
    fallback: String,
    require_https: bool,
}

impl Selector {
    pub fn new(fallback: String, require_https: bool) -> Selector {
        let empty = Snapshot::empty(fallback.clone(), require_https);
        Selector { snapshot: ArcSwap::from_pointee(empty), fallback, require_https }
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Replace the content facts (after a sync's commit); the mirrors stay.
    pub fn install_content(&self, facts: PoolFacts) {
        let facts = Arc::new(facts);
        self.snapshot.rcu(|old| {
            Snapshot::of(
                facts.clone(),
                old.mirrors.clone(),
                self.fallback.clone(),
                self.require_https,
            )
        });
    }

    /// Replace the mirrors (after an edit or a crawl); the content facts stay.
    pub fn install_mirrors(&self, mirrors: Vec<MirrorStatus>) {
        let mirrors = Arc::new(MirrorSet::build(mirrors));
        self.snapshot.rcu(|old| {
            Snapshot::of(
                old.content.clone(),
                mirrors.clone(),
                self.fallback.clone(),
                self.require_https,
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;

    use super::*;
    use crate::model::{Mirror, MirrorHealth, MirrorPatch};
    use crate::store::PoolFactsBuilder;

    fn mirror(name: &str, patch: MirrorPatch, generation: Option<Generation>) -> MirrorStatus {
        let mut m = Mirror::new(name.parse().unwrap());
        let patch = MirrorPatch { urls: Some(vec![format!("http://{name}.example/")]), ..patch };
        patch.apply(&mut m).unwrap();
        let health = MirrorHealth { generation, ..MirrorHealth::default() };
        MirrorStatus { continent: m.continent().map(str::to_owned), mirror: m, health }
    }

    #[test]
    fn registry_mirrors_come_nearest_first_verified_only_and_for_the_client_s_architecture() {
        let registry = |name: &str, patch: MirrorPatch, verified: bool| {
            let patch =
                MirrorPatch { registry_url: Some(format!("https://reg.{name}.example/")), ..patch };
            let mut m = mirror(name, patch, Some(3));
            m.health.registry_generation = verified.then_some(3);
            m
        };
        let at = |c: &str| MirrorPatch { country: Some(c.into()), ..MirrorPatch::default() };
        let mirrors = vec![
            registry("us-big", MirrorPatch { bandwidth: Some(9000), ..at("US") }, true),
            registry("us-small", MirrorPatch { bandwidth: Some(10), ..at("US") }, true),
            registry("de", at("DE"), true),
            registry(
                "lan",
                MirrorPatch {
                    netblocks: Some(vec!["192.0.2.0/24".into()]),
                    private: Some(true),
                    ..at("FR")
                },
                true,
            ),
            registry("unverified", at("DE"), false),
            registry("arm", MirrorPatch { content: Some("arm64".into()), ..at("DE") }, true),
            registry("away", MirrorPatch { active: Some(false), ..at("DE") }, true),
        ];
        let snap = snapshot(mirrors, &[]);
        let geo = ClientGeo { country: Some("DE"), continent: Some("EU"), asn: None };
        let names = |ip: &str, arch: Option<&str>| -> Vec<String> {
            let ip = ip.parse().unwrap();
            snap.registry_mirrors(ip, &geo, arch)
                .into_iter()
                .map(|m| m.mirror.to_string())
                .collect()
        };
        assert_eq!(names("192.0.2.7", None), ["lan", "de", "us-big", "us-small"]);
        assert_eq!(
            names("198.51.100.1", None),
            ["de", "us-big", "us-small"],
            "private: its net only"
        );
        assert_eq!(names("198.51.100.1", Some("arm64")), ["arm", "de", "us-big", "us-small"]);
        assert_eq!(
            snap.registry_mirrors("198.51.100.1".parse().unwrap(), &geo, None)[0].url,
            "https://reg.de.example/"
        );
    }

    fn snapshot(mirrors: Vec<MirrorStatus>, blobs: &[(&Digest, u64, Option<&str>)]) -> Snapshot {
        let mut facts = PoolFactsBuilder::new(3);
        for (d, first_seen, arch) in blobs {
            let set = arch.unwrap_or(crate::store::EVERY_SET).to_owned();
            facts.blob(d, 1, *first_seen, &BTreeMap::from([(set, *first_seen)]));
            facts.reaches(&"r".parse().unwrap(), d);
        }
        Snapshot::build(facts.build(), mirrors, "http://wharf/tree/".into(), false)
    }

    #[test]
    fn bandwidth_weights_split_picks() {
        let d = Digest::of(b"blob");
        let bw = |b| MirrorPatch { bandwidth: Some(b), ..MirrorPatch::default() };
        let snap = snapshot(
            vec![
                mirror("a", bw(100), Some(3)),
                mirror("b", bw(300), Some(3)),
                mirror("c", bw(600), Some(3)),
            ],
            &[(&d, 1, None)],
        );
        let BlobLookup::Found(blob) = snap.blob(&"r".parse().unwrap(), &d) else { panic!() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = HashMap::new();
        let n = 20_000;
        for _ in 0..n {
            let p = snap.pick(
                &d,
                blob,
                "192.0.2.1".parse().unwrap(),
                &ClientGeo::default(),
                false,
                &mut rng,
            );
            assert_eq!(p.tier, Some(Tier::Global));
            *counts.entry(p.mirror.unwrap().to_string()).or_insert(0) += 1;
        }
        for (name, share) in [("a", 0.1), ("b", 0.3), ("c", 0.6)] {
            let got = f64::from(counts[name]) / f64::from(n);
            assert!((got - share).abs() < 0.02, "{name}: {got} (expected {share})");
        }
    }

    #[test]
    fn never_to_a_mirror_that_lacks_the_blob() {
        let (old, new, arm) = (Digest::of(b"old"), Digest::of(b"new"), Digest::of(b"arm"));
        let arm_only = MirrorPatch { content: Some("arm64".into()), ..MirrorPatch::default() };
        let snap = snapshot(
            vec![
                mirror("stale", MirrorPatch::default(), Some(2)),
                mirror("unverified", MirrorPatch::default(), None),
                mirror("arm", arm_only, Some(3)),
                mirror(
                    "off",
                    MirrorPatch { enabled: Some(false), ..MirrorPatch::default() },
                    Some(3),
                ),
            ],
            &[(&old, 1, Some("amd64")), (&new, 3, None), (&arm, 2, Some("arm64"))],
        );
        let repo = "r".parse().unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let pick = |d: &Digest, rng: &mut rand::rngs::StdRng| {
            let BlobLookup::Found(b) = snap.blob(&repo, d) else { panic!() };
            snap.pick(d, b, ip, &ClientGeo::default(), false, rng).mirror.map(|m| m.to_string())
        };
        for _ in 0..200 {
            assert_eq!(
                pick(&old, &mut rng).as_deref(),
                Some("stale"),
                "amd64 blob: not on the arm64 mirror"
            );
            assert_eq!(
                pick(&new, &mut rng).as_deref(),
                Some("arm"),
                "generation 3 only on the mirror holding 3"
            );
            assert!(pick(&arm, &mut rng).is_some());
        }
        let e = snap.explain(&repo, &new, ip, ClientGeo::default(), false, false, &mut rng);
        let why: HashMap<String, String> = e
            .excluded
            .iter()
            .map(|x| {
                (
                    x.mirror.to_string(),
                    serde_json::to_value(&x.why).unwrap()["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(why["stale"], "stale");
        assert_eq!(why["unverified"], "never_verified");
        assert_eq!(why["off"], "disabled");
        // No qualifying mirror: the fallback.
        let only_stale =
            snapshot(vec![mirror("stale", MirrorPatch::default(), Some(2))], &[(&new, 3, None)]);
        let BlobLookup::Found(b) = only_stale.blob(&repo, &new) else { panic!() };
        let p = only_stale.pick(&new, b, ip, &ClientGeo::default(), false, &mut rng);
        assert_eq!(
            (p.mirror, p.url),
            (None, format!("http://wharf/tree/blobs/sha256/{}", new.hex()))
        );
    }

    #[test]
    fn a_content_set_that_gained_a_blob_later_needs_that_generation() {
        // Layer first seen in generation 1 for amd64; an arm64 image uses it from 3 on.
        let d = Digest::of(b"shared");
        let mut facts = PoolFactsBuilder::new(3);
        let sets = BTreeMap::from([("amd64".to_owned(), 1), ("arm64".to_owned(), 3)]);
        facts.blob(&d, 1, 1, &sets);
        facts.reaches(&"r".parse().unwrap(), &d);
        let facts = facts.build();
        let arm = |g| {
            mirror(
                "arm",
                MirrorPatch { content: Some("arm64".into()), ..MirrorPatch::default() },
                Some(g),
            )
        };
        let ip = "192.0.2.1".parse().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for (holds, expect) in [(2, None), (3, Some("arm"))] {
            let snap =
                Snapshot::build(facts.clone(), vec![arm(holds)], "http://w/tree/".into(), false);
            let BlobLookup::Found(b) = snap.blob(&"r".parse().unwrap(), &d) else { panic!() };
            let p = snap.pick(&d, b, ip, &ClientGeo::default(), false, &mut rng);
            assert_eq!(
                p.mirror.as_ref().map(|m| m.as_str()),
                expect,
                "arm64 mirror holding {holds}"
            );
        }
    }

    /// The indexed pick agrees with the full scan `explain` does: same nearest tier (and
    /// netblock prefix), a mirror of that rank, or the fallback when no mirror qualifies.
    #[test]
    fn the_tier_index_picks_what_a_scan_of_every_mirror_would() {
        use rand::Rng;
        let d = Digest::of(b"blob");
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let countries = ["DE", "FR", "US", "JP", "BR"];
        let nets = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "2001:db8::/32"];
        for round in 0..300 {
            let mirrors: Vec<MirrorStatus> = (0..rng.random_range(0..12))
                .map(|i| {
                    let patch = MirrorPatch {
                        country: Some(countries[rng.random_range(0..5)].into()),
                        netblocks: Some(if rng.random_bool(0.3) {
                            vec![nets[rng.random_range(0..4)].into()]
                        } else {
                            vec![]
                        }),
                        asns: Some(if rng.random_bool(0.2) { vec![64500] } else { vec![] }),
                        private: Some(rng.random_bool(0.2)),
                        enabled: Some(rng.random_bool(0.9)),
                        bandwidth: Some(rng.random_range(1..1000)),
                        ..MirrorPatch::default()
                    };
                    let holds = [None, Some(1), Some(3)][rng.random_range(0..3)];
                    mirror(&format!("m{round}x{i}"), patch, holds)
                })
                .collect();
            let snap = snapshot(mirrors, &[(&d, 2, None)]);
            let BlobLookup::Found(b) = snap.blob(&"r".parse().unwrap(), &d) else { panic!() };
            let ip: IpAddr = ["10.1.2.3", "10.9.9.9", "192.0.2.1", "2001:db8::5"]
                [rng.random_range(0..4)]
            .parse()
            .unwrap();
            let geo = ClientGeo {
                country: [None, Some("DE"), Some("US")][rng.random_range(0..3)],
                continent: [None, Some("EU"), Some("NA")][rng.random_range(0..3)],
                asn: [None, Some(64500)][rng.random_range(0..2)],
            };
            let (candidates, _) = snap.classify(&d, b, ip, &geo, false, false);
            let pick = snap.pick(&d, b, ip, &geo, false, &mut rng);
            match candidates.first() {
                None => assert_eq!(pick.mirror, None, "round {round}"),
                Some(best) => {
                    assert_eq!(pick.tier, Some(best.tier), "round {round}");
                    let rank = |c: &Candidate| (c.tier, c.prefix);
                    let chosen = candidates
                        .iter()
                        .find(|c| Some(&c.mirror) == pick.mirror.as_ref())
                        .expect("the pick is a candidate");
                    assert_eq!(rank(chosen), rank(best), "round {round}");
                }
            }
        }
    }

    /// The serving state written out and loaded whole answers every request as the
    /// original does; damaged bytes are refused, never half loaded.
    #[test]
    fn the_serving_state_written_out_and_loaded_whole_answers_the_same() {
        let (d, e) = (Digest::of(b"one"), Digest::of(b"two"));
        let at = |country: &str, nets: &[&str], private| MirrorPatch {
            country: Some(country.into()),
            netblocks: Some(nets.iter().map(|n| n.to_string()).collect()),
            private: Some(private),
            ..MirrorPatch::default()
        };
        let mut disabled = mirror("off", at("DE", &[], false), Some(3));
        disabled.mirror.enabled = false;
        let snap = snapshot(
            vec![
                mirror("de", at("DE", &[], false), Some(3)),
                mirror("fr", at("FR", &[], false), Some(1)),
                mirror("lan", at("US", &["10.1.0.0/16"], true), Some(3)),
                disabled,
            ],
            &[(&d, 1, None), (&e, 2, Some("arm64"))],
        );
        let bytes = snap.encode();
        let loaded = Snapshot::decode(&bytes, "http://wharf/tree/".into(), false).unwrap();
        assert_eq!(loaded.encode(), bytes);
        let repo: RepoName = "r".parse().unwrap();
        for ip in ["10.1.2.3", "192.0.2.1", "2001:db8::1"] {
            for country in [None, Some("DE"), Some("FR")] {
                for digest in [&d, &e, &Digest::of(b"unknown")] {
                    let explain = |s: &Snapshot| {
                        let geo = ClientGeo { country, continent: Some("EU"), asn: None };
                        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
                        let e = s.explain(
                            &repo,
                            digest,
                            ip.parse().unwrap(),
                            geo,
                            false,
                            false,
                            &mut rng,
                        );
                        serde_json::to_string(&e).unwrap()
                    };
                    assert_eq!(explain(&loaded), explain(&snap), "{ip} {country:?} {digest}");
                }
            }
        }
        let decode = |b: &[u8]| Snapshot::decode(b, "http://wharf/tree/".into(), false).is_err();
        assert!(decode(&bytes[..bytes.len() - 1]), "truncated");
        assert!(decode(&[9]), "unknown layout");
        let mut wire: StateWire = postcard::from_bytes(&bytes[1..]).unwrap();
        wire.mirrors = br#"[{"name": "Not A Name"}]"#.to_vec();
        assert!(decode(&postcard::to_extend(&wire, vec![STATE_LAYOUT]).unwrap()), "bad mirror");
    }

    #[test]
    fn https_clients_get_https_urls() {
        let d = Digest::of(b"x");
        let both = MirrorPatch {
            urls: Some(vec!["http://m.example/".into(), "https://m.example/".into()]),
            ..MirrorPatch::default()
        };
        let mut m = mirror("m", MirrorPatch::default(), Some(3));
        both.apply(&mut m.mirror).unwrap();
        let snap = snapshot(vec![m], &[(&d, 1, None)]);
        let BlobLookup::Found(b) = snap.blob(&"r".parse().unwrap(), &d) else { panic!() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let ip = "192.0.2.1".parse().unwrap();
        assert!(
            snap.pick(&d, b, ip, &ClientGeo::default(), true, &mut rng).url.starts_with("https://")
        );
        assert!(
            snap.pick(&d, b, ip, &ClientGeo::default(), false, &mut rng).url.starts_with("http://")
        );
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_peers() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = |peer: &str, xff: &[&str], fwd: &[&str]| client_ip(ip(peer), xff, fwd, &trusted);
        assert_eq!(c("192.0.2.9", &["198.51.100.1"], &[]), ip("192.0.2.9"), "untrusted peer");
        assert_eq!(c("10.0.0.1", &["198.51.100.1"], &[]), ip("198.51.100.1"));
        assert_eq!(c("10.0.0.1", &["198.51.100.1, 10.0.0.7"], &[]), ip("198.51.100.1"));
        // Every header line counts: the proxy's appended line is the rightmost.
        assert_eq!(c("10.0.0.1", &["10.9.9.9", "198.51.100.3"], &[]), ip("198.51.100.3"));
        // A forged entry left of an unparseable one is never reached.
        assert_eq!(c("10.0.0.1", &["10.1.1.1, unknown"], &[]), ip("10.0.0.1"));
        assert_eq!(c("10.0.0.1", &["garbage"], &[]), ip("10.0.0.1"));
        // Forwarded wins over X-Forwarded-For; `for` is case-insensitive.
        assert_eq!(
            c("10.0.0.1", &["203.0.113.5"], &["for=\"[2001:db8::1]:4711\""]),
            ip("2001:db8::1")
        );
        assert_eq!(c("10.0.0.1", &[], &["For=198.51.100.2;proto=https"]), ip("198.51.100.2"));
        // IPv4-mapped peers and addresses are IPv4.
        assert_eq!(c("::ffff:10.0.0.1", &["::ffff:198.51.100.4"], &[]), ip("198.51.100.4"));
        assert_eq!(c("::ffff:192.0.2.1", &["198.51.100.4"], &[]), ip("192.0.2.1"));
    }
}
