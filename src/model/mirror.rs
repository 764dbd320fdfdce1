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

/// A base URL of a mirror: http(s), no query, ending in `/` (the tree root).
pub fn parse_base_url(s: &str) -> Result<String, MirrorError> {
    let bad = |why: &str| MirrorError(format!("invalid mirror URL {s:?}: {why}"));
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || s.contains(['?', '#', ' ', '"', '<', '>', '\\']) || s.len() > 512 {
        return Err(bad("needs a host, and no query, fragment or spaces"));
    }
    Ok(if s.ends_with('/') { s.to_owned() } else { format!("{s}/") })
}

/// The commands a mirror runs to copy what its content set carries from `source` (an rsync
/// URL of the tree root, ending in `/`) into `dest`.
pub fn rsync_commands(source: &str, content: &ContentSet, dest: &str) -> Vec<String> {
    match content {
        ContentSet::All => vec![format!("rsync -aH --delete --delay-updates {source} {dest}")],
        ContentSet::Arches(arches) => {
            let lists: Vec<String> =
                arches.iter().map(|a| format!("{source}content-sets/{a}.txt")).collect();
            vec![
                "mkdir -p /tmp/wharf-lists".to_owned(),
                format!("rsync -a {} /tmp/wharf-lists/", lists.join(" ")),
                "cat /tmp/wharf-lists/*.txt | sort -u > /tmp/wharf-files.txt".to_owned(),
                format!(
                    "rsync -aH --delay-updates --files-from=/tmp/wharf-files.txt {source} {dest}"
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
        if self.bandwidth == 0 {
            return Err(MirrorError("bandwidth must be at least 1 Mbit/s".into()));
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
}

/// The widest netblocks a mirror admin may claim; operators may claim any.
pub const MAX_CLAIM_V4: u8 = 16;
pub const MAX_CLAIM_V6: u8 = 32;

impl MirrorPatch {
    /// Refuse what only operators may change: approval, the disable reason, the owner, the
    /// continent override, and netblocks wider than /16 (IPv4) or /32 (IPv6) — unless the
    /// mirror already has that netblock (an operator gave it), so its admin can keep it.
    pub fn check_mirror_admin_limits(&self, current: &[ipnet::IpNet]) -> Result<(), MirrorError> {
        if self.enabled.is_some() || self.reason.is_some() || self.owner.is_some() {
            return Err(MirrorError("only operators approve, disable or reassign mirrors".into()));
        }
        if self.continent.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(MirrorError("only operators override a mirror's continent".into()));
        }
        for n in self.netblocks.iter().flatten() {
            let wide = match n.parse::<ipnet::IpNet>().map(|n| n.trunc()) {
                Ok(net) if current.contains(&net) => false,
                Ok(ipnet::IpNet::V4(v4)) => v4.prefix_len() < MAX_CLAIM_V4,
                Ok(ipnet::IpNet::V6(v6)) => v6.prefix_len() < MAX_CLAIM_V6,
                Err(_) => false, // `apply` says what is wrong with it
            };
            if wide {
                return Err(MirrorError(format!(
                    "netblock {n} is too wide: mirror admins may claim at most /{MAX_CLAIM_V4} (IPv4) or /{MAX_CLAIM_V6} (IPv6); ask an operator"
                )));
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
        if let Some(c) = &self.country {
            next.country = (!c.is_empty()).then(|| c.to_ascii_uppercase());
        }
        if let Some(c) = &self.continent {
            next.continent_override = (!c.is_empty()).then(|| c.to_ascii_uppercase());
        }
        if let Some(a) = &self.asns {
            next.asns = a.clone();
        }
        if let Some(n) = &self.netblocks {
            next.netblocks = n
                .iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>().map(|n| n.trunc()).map_err(|_| {
                        MirrorError(format!("invalid netblock {s:?}: use a CIDR like 10.1.0.0/16"))
                    })
                })
                .collect::<Result<_, _>>()?;
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
