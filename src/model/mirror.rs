//! Mirrors: who carries the tree, where, and what Wharf last verified they hold.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Generation, geography};

/// A mirror's name: `[a-z0-9][a-z0-9.-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MirrorName(String);

impl MirrorName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MirrorName {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, MirrorError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-');
        if ok {
            Ok(MirrorName(s.to_owned()))
        } else {
            Err(MirrorError(format!("invalid mirror name {s:?}: use [a-z0-9][a-z0-9.-]{{0,62}}")))
        }
    }
}

super::names::string_newtype!(MirrorName, MirrorError);

/// Which field of a mirror a refused change is about (the admin form shows it there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorEditField {
    Name,
    Urls,
    Bandwidth,
    Asns,
    Netblocks,
    /// What only operators change (approval, owner, continent).
    Other,
}

impl MirrorEditField {
    /// The admin form's field name.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorEditField::Name => "name",
            MirrorEditField::Urls => "urls",
            MirrorEditField::Bandwidth => "bandwidth",
            MirrorEditField::Asns => "asns",
            MirrorEditField::Netblocks => "netblocks",
            MirrorEditField::Other => "continent",
        }
    }
}

/// A mirror field that does not parse or check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MirrorError(pub String);

/// What part of the tree a mirror carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContentSet {
    #[default]
    All,
    /// Only the blobs of these architectures (plus what every set carries: indexes, layouts).
    Arches(BTreeSet<String>),
}

impl ContentSet {
    pub fn contains_arch(&self, arch: &str) -> bool {
        match self {
            ContentSet::All => true,
            ContentSet::Arches(a) => a.contains(arch),
        }
    }
}

impl FromStr for ContentSet {
    type Err = MirrorError;
    /// `all`, or a comma-separated list of architectures (`amd64,arm64`).
    fn from_str(s: &str) -> Result<Self, MirrorError> {
        if s == "all" {
            return Ok(ContentSet::All);
        }
        let arches: BTreeSet<String> = s.split(',').map(|a| a.trim().to_owned()).collect();
        let valid = |a: &String| {
            !a.is_empty()
                && a.len() <= 32
                && a.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        if arches.iter().all(valid) {
            Ok(ContentSet::Arches(arches))
        } else {
            Err(MirrorError(format!(
                "invalid content set {s:?}: `all` or architectures like `amd64,arm64`"
            )))
        }
    }
}

impl fmt::Display for ContentSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentSet::All => f.write_str("all"),
            ContentSet::Arches(a) => f.write_str(&a.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

/// The longest mirror URL accepted.
pub const MAX_URL_LEN: usize = 512;

/// A base URL of a mirror, parsed with the `url` crate: http or https, a host, no user
/// name or password, no query or fragment, no control characters or whitespace, at most
/// [`MAX_URL_LEN`] bytes; returned normalised (lower-case host, no default port) and
/// ending in `/` (the tree root). Every surface goes through this, and the selection
/// snapshot checks stored URLs with it again, so a URL that reaches a `Location` header
/// is always a valid header value.
pub fn parse_base_url(s: &str) -> Result<String, MirrorError> {
    let shown: String = s.chars().take(80).flat_map(char::escape_default).collect();
    let bad = |why: &str| MirrorError(format!("invalid mirror URL \"{shown}\": {why}"));
    if s.len() > MAX_URL_LEN {
        return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("no control characters or spaces"));
    }
    let mut url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("needs a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("no user name or password in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() || s.contains(['?', '#']) {
        return Err(bad("no query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    let out = String::from(url);
    if out.len() > MAX_URL_LEN || !out.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(&format!("longer than {MAX_URL_LEN} bytes once normalised")));
    }
    Ok(out)
}

/// A registry view's URL: a base URL (see [`parse_base_url`]) at the root of its host,
/// because clients address a registry by host and find the API at `/v2/`.
pub fn parse_registry_url(s: &str) -> Result<String, MirrorError> {
    let url = parse_base_url(s)?;
    let path = url::Url::parse(&url).map(|u| u.path().to_owned()).unwrap_or_default();
    if path != "/" {
        return Err(MirrorError(format!(
            "invalid registry URL {url:?}: a registry answers at its host's root (`/v2/`), so \
             use scheme://host[:port]/ without a path"
        )));
    }
    Ok(url)
}

/// The host (and port, when not the scheme's default) clients name a registry by.
pub fn registry_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!("{}{}", u.host_str()?, u.port().map(|p| format!(":{p}")).unwrap_or_default()))
}

/// A netblock as Wharf keeps it: truncated to its prefix, and an IPv4-mapped IPv6 block
/// (`::ffff:a.b.c.d/n`, n >= 96) turned into the IPv4 block it means (client addresses are
/// canonicalised the same way, so a mapped block could never match anything).
pub fn parse_netblock(s: &str) -> Result<ipnet::IpNet, MirrorError> {
    let bad = || MirrorError(format!("invalid netblock {s:?}: use a CIDR like 10.1.0.0/16"));
    let net = s.trim().parse::<ipnet::IpNet>().map_err(|_| bad())?.trunc();
    Ok(match net {
        ipnet::IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|_| bad())?.into()
            }
            Some(_) => return Err(bad()),
            None => net,
        },
        ipnet::IpNet::V4(_) => net,
    })
}

/// The commands a mirror runs to copy what its content set carries from `source` (an rsync
/// URL of the tree root, ending in `/`) into `dest`.
pub fn rsync_commands(source: &str, content: &ContentSet, dest: &str) -> Vec<String> {
    match content {
        ContentSet::All => {
            vec![format!(
                "rsync -aH --modify-window=-1 --delay-updates --delete-delay {source} {dest}"
            )]
        }
        ContentSet::Arches(arches) => {
            let lists: Vec<String> =
                arches.iter().map(|a| format!("{source}content-sets/{a}.txt")).collect();
            vec![
                "mkdir -p /tmp/wharf-lists".to_owned(),
                format!("rsync -a {} /tmp/wharf-lists/", lists.join(" ")),
                "cat /tmp/wharf-lists/*.txt | sort -u > /tmp/wharf-files.txt".to_owned(),
                format!(
                    "rsync -aH --modify-window=-1 --delay-updates --files-from=/tmp/wharf-files.txt {source} {dest}"
                ),
            ]
        }
    }
}

/// What the operator and the mirror admin say about a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub name: MirrorName,
    /// The user owning it ([admin-ui] brings users); operators' mirrors have none.
    pub owner: Option<u64>,
    /// Base URLs under which the tree root is served, http and/or https.
    pub urls: Vec<String>,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
    /// Set only to override the continent derived from the country.
    pub continent_override: Option<String>,
    pub asns: Vec<u32>,
    pub netblocks: Vec<ipnet::IpNet>,
    /// Mbit/s: the weight within a tier.
    pub bandwidth: u32,
    /// Private mirrors serve only clients in their netblocks or ASNs.
    pub private: bool,
    /// Operator approval.
    pub enabled: bool,
    /// Registered by its admin and not yet approved by an operator (then `enabled` is false).
    pub pending: bool,
    /// The mirror admin's own opt-in.
    pub active: bool,
    /// Why the operator disabled it.
    pub disabled_reason: Option<String>,
    pub content: ContentSet,
    /// Where the mirror's web server answers the registry pull API itself (its static
    /// registry view): `scheme://host[:port]/`. `None`: it serves the tree only.
    pub registry_url: Option<String>,
}

impl Mirror {
    pub fn new(name: MirrorName) -> Mirror {
        Mirror {
            name,
            owner: None,
            urls: Vec::new(),
            country: None,
            continent_override: None,
            asns: Vec::new(),
            netblocks: Vec::new(),
            bandwidth: 100,
            private: false,
            enabled: true,
            pending: false,
            active: true,
            disabled_reason: None,
            content: ContentSet::All,
            registry_url: None,
        }
    }

    /// The continent: the override, else derived from the country.
    pub fn continent(&self) -> Option<&str> {
        self.continent_override
            .as_deref()
            .or_else(|| geography::continent_of(self.country.as_deref()?))
    }

    /// The base URL for a scheme (`http` or `https`).
    pub fn url_for(&self, https: bool) -> Option<&str> {
        let prefix = if https { "https://" } else { "http://" };
        self.urls.iter().map(String::as_str).find(|u| u.starts_with(prefix))
    }

    /// Check the fields together (each was parsed on its own).
    pub fn validate(&self) -> Result<(), MirrorError> {
        if self.urls.is_empty() {
            return Err(MirrorError(format!("mirror {} needs at least one URL", self.name)));
        }
        if self.bandwidth == 0 || self.bandwidth > MAX_BANDWIDTH {
            return Err(MirrorError(format!(
                "bandwidth must be between 1 and {MAX_BANDWIDTH} Mbit/s"
            )));
        }
        if self.urls.len() > MAX_URLS {
            return Err(MirrorError(format!("at most {MAX_URLS} URLs")));
        }
        if self.asns.len() > MAX_ASNS || self.netblocks.len() > MAX_NETBLOCKS {
            return Err(MirrorError(format!(
                "at most {MAX_ASNS} ASNs and {MAX_NETBLOCKS} netblocks per mirror"
            )));
        }
        if let Some(a) = self.asns.iter().find(|a| **a == 0 || **a == u32::MAX) {
            return Err(MirrorError(format!("AS{a} is not a routable ASN")));
        }
        if self.disabled_reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
            return Err(MirrorError(format!("a reason is at most {MAX_REASON} characters")));
        }
        if let Some(c) = &self.country {
            geography::check_country(c)?;
        }
        if let Some(c) = &self.continent_override {
            geography::check_continent(c)?;
        }
        Ok(())
    }
}

/// What the crawler knows about a mirror.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorHealth {
    /// The generation whose sample last passed verification.
    pub generation: Option<Generation>,
    pub last_crawl: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Set by the crawler after too many failures, cleared by a successful crawl.
    pub auto_disabled: Option<String>,
    /// The generation at which its registry view (`registry_url`) last passed the crawler's
    /// client-like checks; `None`: not a verified registry mirror.
    pub registry_generation: Option<Generation>,
    /// Why its registry view did not pass the last crawl.
    pub registry_error: Option<String>,
}

impl MirrorHealth {
    /// Where the registry view stands, in words (the admin UI and the CLI show it).
    pub fn registry_state(&self) -> String {
        match (self.registry_generation, &self.registry_error) {
            (Some(g), _) => format!("verified at generation {g}; offered to clients"),
            (None, Some(e)) => format!("not verified: {e}"),
            (None, None) => "not checked yet".into(),
        }
    }
}

/// One crawl of one mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlResult {
    pub mirror: MirrorName,
    pub at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The generation the mirror's marker claimed.
    pub claimed: Option<Generation>,
    /// The generation credited (claimed and verified).
    pub credited: Option<Generation>,
    pub checks: u32,
    pub downloads: u32,
    pub error: Option<String>,
    /// The registry view's check: `None` when the mirror declares no `registry_url` or the
    /// tree check failed; `Some(Ok)` verified; `Some(Err(why))`.
    pub registry: Option<Result<(), String>>,
}

/// Where a mirror stands, as shown to people: the first that applies wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// Registered by its admin, waiting for an operator's approval.
    Pending,
    /// The operator disabled it.
    Disabled,
    /// The crawler disabled it after failed crawls.
    AutoDisabled,
    /// Its admin opted out.
    OptedOut,
    Active,
}

impl MirrorState {
    /// Every state, in the order above.
    pub const ALL: [MirrorState; 5] = [
        MirrorState::Pending,
        MirrorState::Disabled,
        MirrorState::AutoDisabled,
        MirrorState::OptedOut,
        MirrorState::Active,
    ];

    /// The command-line form (`opted-out`).
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorState::Pending => "pending",
            MirrorState::Disabled => "disabled",
            MirrorState::AutoDisabled => "auto-disabled",
            MirrorState::OptedOut => "opted-out",
            MirrorState::Active => "active",
        }
    }
}

impl fmt::Display for MirrorState {
    /// The prose form (`opted out`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().replace('-', " "))
    }
}

/// A mirror with its health, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    #[serde(flatten)]
    pub mirror: Mirror,
    pub continent: Option<String>,
    pub health: MirrorHealth,
}

impl MirrorStatus {
    pub fn state(&self) -> MirrorState {
        if self.mirror.pending && !self.mirror.enabled {
            MirrorState::Pending
        } else if !self.mirror.enabled {
            MirrorState::Disabled
        } else if self.health.auto_disabled.is_some() {
            MirrorState::AutoDisabled
        } else if !self.mirror.active {
            MirrorState::OptedOut
        } else {
            MirrorState::Active
        }
    }
}

/// A set of mirror field changes, as given on the command line (or, later, in a form).
/// `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorPatch {
    pub urls: Option<Vec<String>>,
    /// `""` clears.
    pub country: Option<String>,
    /// `""` clears the override.
    pub continent: Option<String>,
    pub asns: Option<Vec<u32>>,
    pub netblocks: Option<Vec<String>>,
    pub bandwidth: Option<u32>,
    pub private: Option<bool>,
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    /// Why the operator disabled it; `""` clears.
    pub reason: Option<String>,
    /// `all` or `amd64,arm64`.
    pub content: Option<String>,
    pub owner: Option<u64>,
    /// The registry view's URL; `""` clears.
    pub registry_url: Option<String>,
}

/// The widest netblocks a mirror admin may claim; operators may claim any.
pub const MAX_CLAIM_V4: u8 = 16;
pub const MAX_CLAIM_V6: u8 = 32;
/// What a mirror admin's mirrors may claim in total (operators may grant more): addresses
/// as many as one /16 (IPv4) and one /32 (IPv6), this many netblock entries and ASNs.
pub const ADMIN_NETBLOCKS: usize = 32;
pub const ADMIN_ASNS: usize = 16;
/// Mirrors one mirror admin may own.
pub const ADMIN_MIRRORS: usize = 10;
/// The largest bandwidth (the selection weight) a mirror admin may declare, in Mbit/s.
pub const ADMIN_BANDWIDTH: u32 = 10_000;
/// The largest bandwidth anyone may set: 1 Tbit/s.
pub const MAX_BANDWIDTH: u32 = 1_000_000;
/// The most URLs, ASNs and netblocks one mirror record may hold.
pub const MAX_URLS: usize = 4;
pub const MAX_ASNS: usize = 256;
pub const MAX_NETBLOCKS: usize = 1024;
/// The longest disable reason kept.
pub const MAX_REASON: usize = 500;

/// The limits on what one mirror admin's mirrors claim together, checked on a mirror as an
/// edit would leave it (`after`), the same mirror before (`None` when registering) and the
/// admin's other mirrors. Only what the edit adds is held to them, so what an operator
/// granted (a wide netblock, a high bandwidth) can be kept.
pub fn check_admin_totals(
    before: Option<&Mirror>,
    after: &Mirror,
    others: &[&Mirror],
) -> Result<(), (MirrorEditField, MirrorError)> {
    use MirrorEditField as F;
    let err = |f: F, m: String| Err((f, MirrorError(m)));
    if before.is_none() && others.len() >= ADMIN_MIRRORS {
        return err(
            F::Name,
            format!("a mirror admin may register at most {ADMIN_MIRRORS} mirrors"),
        );
    }
    if after.bandwidth > ADMIN_BANDWIDTH && before.is_none_or(|b| b.bandwidth != after.bandwidth) {
        return err(
            F::Bandwidth,
            format!(
                "bandwidth is at most {ADMIN_BANDWIDTH} Mbit/s for mirror admins; ask an operator"
            ),
        );
    }
    let all = || others.iter().copied().chain([after]);
    let had_net = |n: &ipnet::IpNet| before.is_some_and(|b| b.netblocks.contains(n));
    if after.netblocks.iter().any(|n| !had_net(n)) {
        let (mut v4, mut v6, mut entries) = (0u128, 0u128, 0usize);
        for n in all().flat_map(|m| m.netblocks.iter()) {
            entries += 1;
            match n {
                ipnet::IpNet::V4(n) => v4 += 1u128 << (32 - n.prefix_len()),
                ipnet::IpNet::V6(n) => {
                    v6 = v6.saturating_add(
                        1u128.checked_shl(128 - n.prefix_len() as u32).unwrap_or(u128::MAX),
                    )
                }
            }
        }
        if v4 > 1 << (32 - MAX_CLAIM_V4) || v6 > 1 << (128 - MAX_CLAIM_V6) {
            return err(
                F::Netblocks,
                format!(
                    "your mirrors' netblocks may cover at most one /{MAX_CLAIM_V4} (IPv4) and one /{MAX_CLAIM_V6} (IPv6) in total; ask an operator"
                ),
            );
        }
        if entries > ADMIN_NETBLOCKS {
            return err(
                F::Netblocks,
                format!("your mirrors may list at most {ADMIN_NETBLOCKS} netblocks in total"),
            );
        }
    }
    let had_asn = |a: &u32| before.is_some_and(|b| b.asns.contains(a));
    if after.asns.iter().any(|a| !had_asn(a)) {
        let asns: BTreeSet<u32> = all().flat_map(|m| m.asns.iter().copied()).collect();
        if asns.len() > ADMIN_ASNS {
            return err(
                F::Asns,
                format!("your mirrors may list at most {ADMIN_ASNS} ASNs in total"),
            );
        }
    }
    Ok(())
}

/// Whether a mirror admin's edit changes where clients are sent or which clients come (URLs,
/// netblocks, ASNs, country, or a private mirror turned public) on an approved mirror: then
/// it waits for an operator's approval again before it serves.
pub fn needs_reapproval(before: &Mirror, after: &Mirror) -> bool {
    before.enabled
        && (before.urls != after.urls
            || before.registry_url != after.registry_url
            || before.netblocks != after.netblocks
            || before.asns != after.asns
            || before.country != after.country
            || (before.private && !after.private))
}

impl MirrorPatch {
    /// Refuse what only operators may change: approval, the disable reason, the owner, the
    /// continent override, and netblocks wider than /16 (IPv4) or /32 (IPv6) — unless the
    /// mirror already has that netblock (an operator gave it), so its admin can keep it.
    pub fn check_mirror_admin_limits(
        &self,
        current: &[ipnet::IpNet],
    ) -> Result<(), (MirrorEditField, MirrorError)> {
        let other = |m: &str| Err((MirrorEditField::Other, MirrorError(m.into())));
        if self.enabled.is_some() || self.reason.is_some() || self.owner.is_some() {
            return other("only operators approve, disable or reassign mirrors");
        }
        if self.continent.as_ref().is_some_and(|c| !c.is_empty()) {
            return other("only operators override a mirror's continent");
        }
        for n in self.netblocks.iter().flatten() {
            let wide = match parse_netblock(n) {
                Ok(net) if current.contains(&net) => false,
                Ok(ipnet::IpNet::V4(v4)) => v4.prefix_len() < MAX_CLAIM_V4,
                Ok(ipnet::IpNet::V6(v6)) => v6.prefix_len() < MAX_CLAIM_V6,
                Err(_) => false, // `apply` says what is wrong with it
            };
            if wide {
                return Err((
                    MirrorEditField::Netblocks,
                    MirrorError(format!(
                        "netblock {n} is too wide: mirror admins may claim at most /{MAX_CLAIM_V4} (IPv4) or /{MAX_CLAIM_V6} (IPv6); ask an operator"
                    )),
                ));
            }
        }
        Ok(())
    }

    /// The fields it sets, `key=value` in name order (for the audit log).
    pub fn summary(&self) -> String {
        let fields = serde_json::to_value(self).ok();
        let set = fields.as_ref().and_then(|v| v.as_object()).into_iter().flatten();
        set.filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Apply to `m`, parsing every field; nothing changes on error.
    pub fn apply(&self, m: &mut Mirror) -> Result<(), MirrorError> {
        let mut next = m.clone();
        if let Some(urls) = &self.urls {
            next.urls = urls.iter().map(|u| parse_base_url(u)).collect::<Result<_, _>>()?;
        }
        if let Some(u) = &self.registry_url {
            next.registry_url = (!u.is_empty()).then(|| parse_registry_url(u)).transpose()?;
        }
        if let Some(c) = &self.country {
            next.country = (!c.is_empty()).then(|| c.to_ascii_uppercase());
        }
        if let Some(c) = &self.continent {
            next.continent_override = (!c.is_empty()).then(|| c.to_ascii_uppercase());
        }
        if let Some(a) = &self.asns {
            next.asns = a.clone();
            next.asns.sort_unstable();
            next.asns.dedup();
        }
        if let Some(n) = &self.netblocks {
            next.netblocks = n.iter().map(|s| parse_netblock(s)).collect::<Result<_, _>>()?;
            next.netblocks.sort();
            next.netblocks.dedup();
        }
        if let Some(b) = self.bandwidth {
            next.bandwidth = b;
        }
        if let Some(p) = self.private {
            next.private = p;
        }
        if let Some(e) = self.enabled {
            next.enabled = e;
            if e {
                next.disabled_reason = None;
                next.pending = false;
            }
        }
        if let Some(a) = self.active {
            next.active = a;
        }
        if let Some(r) = &self.reason {
            next.disabled_reason = (!r.is_empty()).then(|| r.clone());
        }
        if let Some(c) = &self.content {
            next.content = c.parse()?;
        }
        if let Some(o) = self.owner {
            next.owner = Some(o);
        }
        next.validate()?;
        *m = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_parse_and_validate() {
        let mut m = Mirror::new("m1".parse().unwrap());
        let patch = MirrorPatch {
            urls: Some(vec!["http://m1.example/wharf".into(), "https://m1.example/wharf/".into()]),
            country: Some("de".into()),
            netblocks: Some(vec!["10.1.2.3/16".into(), "2001:db8::/32".into()]),
            content: Some("arm64,amd64".into()),
            ..MirrorPatch::default()
        };
        patch.apply(&mut m).unwrap();
        assert_eq!(
            MirrorPatch { bandwidth: Some(5), country: Some("DE".into()), ..Default::default() }
                .summary(),
            "bandwidth=5 country=\"DE\""
        );
        assert_eq!(m.urls, ["http://m1.example/wharf/", "https://m1.example/wharf/"]);
        assert_eq!(m.url_for(true), Some("https://m1.example/wharf/"));
        assert_eq!(m.country.as_deref(), Some("DE"));
        assert_eq!(m.continent(), Some("EU"));
        assert_eq!(m.netblocks[0].to_string(), "10.1.0.0/16");
        assert_eq!(m.content.to_string(), "amd64,arm64");

        for bad in [
            MirrorPatch { urls: Some(vec!["ftp://x/".into()]), ..Default::default() },
            MirrorPatch { urls: Some(vec![]), ..Default::default() },
            MirrorPatch { country: Some("XX".into()), ..Default::default() },
            MirrorPatch { continent: Some("ATLANTIS".into()), ..Default::default() },
            MirrorPatch { netblocks: Some(vec!["10.0.0.0/33".into()]), ..Default::default() },
            MirrorPatch { bandwidth: Some(0), ..Default::default() },
            MirrorPatch { content: Some("AMD64".into()), ..Default::default() },
        ] {
            let before = m.clone();
            assert!(bad.apply(&mut m).is_err(), "{bad:?}");
            assert_eq!(m, before, "a failed patch changes nothing");
        }
        for bad in ["", "M1", "-m", &"a".repeat(64), "a b"] {
            assert!(bad.parse::<MirrorName>().is_err(), "{bad}");
        }
    }
}
