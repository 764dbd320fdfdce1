//! Blob redirects by tier and client country, counted in a fixed array of atomics (no lock,
//! no allocation per request), and by mirror (redirects and the blobs' bytes, in a map
//! swapped whole when a mirror first gets one: read without a lock); both drained in batches
//! into the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;

use crate::model::{MirrorName, MirrorTraffic, RedirectCount};

use super::Tier;

/// The tier names as counted and stored: the selection tiers, then `fallback`.
pub const TIERS: [&str; 6] = ["netblock", "asn", "country", "continent", "global", "fallback"];
/// Two upper-case letters, plus one cell for "unknown".
const COUNTRIES: usize = 26 * 26 + 1;

/// `Debug` without the cells.
impl std::fmt::Debug for RedirectCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectCounters").finish_non_exhaustive()
    }
}

impl crate::metrics::Collector for RedirectCounters {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let totals: Vec<_> = self.totals().map(|(t, n)| ([("tier", t)], n)).collect();
        let fallback = totals.last().map(|(_, n)| *n).unwrap_or(0);
        crate::metrics::counters(
            &mut e,
            "wharf_redirects",
            "Blob redirects by tier (fallback: no mirror qualified).",
            totals,
        )?;
        crate::metrics::counter(
            &mut e,
            "wharf_fallback_redirects",
            "Blob redirects to Wharf's own tree.",
            fallback,
        )?;
        // One series per mirror that got a redirect since start: at most the mirrors
        // registered, which operators approve (pending mirrors get none).
        let mirrors = self.mirrors.load();
        let mut names: Vec<&MirrorName> = mirrors.keys().collect();
        names.sort();
        let series = |f: fn(&Tally) -> u64| {
            names.iter().map(|n| ([("mirror", n.as_str())], f(&mirrors[*n]))).collect::<Vec<_>>()
        };
        crate::metrics::counters(
            &mut e,
            "wharf_mirror_redirects",
            "Blob redirects to each mirror.",
            series(|t| t.total_redirects.load(Relaxed)),
        )?;
        crate::metrics::counters(
            &mut e,
            "wharf_mirror_redirected_bytes",
            "Bytes of the blobs redirected to each mirror.",
            series(|t| t.total_bytes.load(Relaxed)),
        )
    }
}

/// One mirror's counts: since the last drain, and since start (for `/metrics`).
#[derive(Default)]
struct Tally {
    redirects: AtomicU64,
    bytes: AtomicU64,
    total_redirects: AtomicU64,
    total_bytes: AtomicU64,
}

pub struct RedirectCounters {
    /// Drained into the store.
    cells: Box<[AtomicU64]>,
    /// Since start, by tier: never drained (for `/metrics`).
    totals: [AtomicU64; TIERS.len()],
    mirrors: ArcSwap<HashMap<MirrorName, Arc<Tally>>>,
}

impl Default for RedirectCounters {
    fn default() -> Self {
        RedirectCounters {
            cells: (0..TIERS.len() * COUNTRIES).map(|_| AtomicU64::new(0)).collect(),
            totals: Default::default(),
            mirrors: Default::default(),
        }
    }
}

fn country_index(country: Option<&str>) -> usize {
    match country.map(str::as_bytes) {
        Some([a @ b'A'..=b'Z', b @ b'A'..=b'Z']) => {
            usize::from(a - b'A') * 26 + usize::from(b - b'A')
        }
        _ => COUNTRIES - 1,
    }
}

impl RedirectCounters {
    /// Count one redirect: to a mirror of `tier`, or to the fallback (`None`).
    pub fn record(&self, tier: Option<Tier>, country: Option<&str>) {
        let t = tier.map(|t| t as usize).unwrap_or(TIERS.len() - 1);
        self.cells[t * COUNTRIES + country_index(country)].fetch_add(1, Relaxed);
        self.totals[t].fetch_add(1, Relaxed);
    }

    /// Count one redirect to `mirror` of a blob of `bytes`.
    pub fn record_mirror(&self, mirror: &MirrorName, bytes: u64) {
        let add = |t: &Tally| {
            t.redirects.fetch_add(1, Relaxed);
            t.bytes.fetch_add(bytes, Relaxed);
            t.total_redirects.fetch_add(1, Relaxed);
            t.total_bytes.fetch_add(bytes, Relaxed);
        };
        if let Some(t) = self.mirrors.load().get(mirror) {
            return add(t);
        }
        // A mirror's first redirect since start: a new map with it (rare; the names come
        // from the selection state, never from a request).
        self.mirrors.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(mirror.clone()).or_default();
            m
        });
        if let Some(t) = self.mirrors.load().get(mirror) {
            add(t);
        }
    }

    /// Take each mirror's counts since the last drain (resetting them) as rows of `hour`.
    pub fn drain_mirrors(&self, hour: u64) -> Vec<MirrorTraffic> {
        let mirrors = self.mirrors.load();
        let mut out: Vec<MirrorTraffic> = mirrors
            .iter()
            .filter_map(|(name, t)| {
                let redirects = t.redirects.swap(0, Relaxed);
                let bytes = t.bytes.swap(0, Relaxed);
                (redirects > 0).then(|| MirrorTraffic {
                    hour,
                    mirror: name.clone(),
                    redirects,
                    bytes,
                })
            })
            .collect();
        out.sort_by(|a, b| a.mirror.cmp(&b.mirror));
        out
    }

    /// Redirects since start by tier (`fallback` last).
    pub fn totals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        TIERS.iter().zip(&self.totals).map(|(t, c)| (*t, c.load(Relaxed)))
    }

    /// Take every non-zero count (resetting it) as rows of `hour`.
    pub fn drain(&self, hour: u64) -> Vec<RedirectCount> {
        let mut out = Vec::new();
        for (i, cell) in self.cells.iter().enumerate() {
            let count = cell.swap(0, Relaxed);
            if count == 0 {
                continue;
            }
            let (t, c) = (i / COUNTRIES, i % COUNTRIES);
            let country = if c == COUNTRIES - 1 {
                "--".to_owned()
            } else {
                // c < 676, so both letters are in A..=Z.
                let letter = |n: usize| char::from(b'A' + u8::try_from(n).unwrap_or(0));
                [letter(c / 26), letter(c % 26)].iter().collect()
            };
            out.push(RedirectCount { hour, tier: TIERS[t].to_owned(), country, count });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_redirects_and_bytes_by_mirror_and_drains_once() {
        let c = RedirectCounters::default();
        let (a, b): (MirrorName, MirrorName) = ("a".parse().unwrap(), "b".parse().unwrap());
        c.record_mirror(&a, 100);
        c.record_mirror(&b, 7);
        c.record_mirror(&a, 50);
        let t = |m: &MirrorName, redirects, bytes| MirrorTraffic {
            hour: 3,
            mirror: m.clone(),
            redirects,
            bytes,
        };
        assert_eq!(c.drain_mirrors(3), [t(&a, 2, 150), t(&b, 1, 7)]);
        assert_eq!(c.drain_mirrors(3), []);
        c.record_mirror(&b, 1);
        assert_eq!(c.drain_mirrors(3), [t(&b, 1, 1)]);
        let text = crate::metrics::encode(vec![Box::new(c)]);
        assert!(text.contains("wharf_mirror_redirects_total{mirror=\"a\"} 2"), "{text}");
        assert!(text.contains("wharf_mirror_redirected_bytes_total{mirror=\"b\"} 8"), "{text}");
    }

    #[test]
    fn counts_by_tier_and_country_and_drains_once() {
        let c = RedirectCounters::default();
        c.record(Some(Tier::Country), Some("DE"));
        c.record(Some(Tier::Country), Some("DE"));
        c.record(None, None);
        c.record(Some(Tier::Netblock), Some("ZZ"));
        c.record(Some(Tier::Global), Some("de"));
        let rows = c.drain(7);
        let got: Vec<(&str, &str, u64)> =
            rows.iter().map(|r| (r.tier.as_str(), r.country.as_str(), r.count)).collect();
        assert_eq!(
            got,
            [
                ("netblock", "ZZ", 1),
                ("country", "DE", 2),
                ("global", "--", 1),
                ("fallback", "--", 1)
            ]
        );
        assert!(rows.iter().all(|r| r.hour == 7));
        assert!(c.drain(8).is_empty(), "drained");
        let totals: Vec<_> = c.totals().filter(|(_, n)| *n > 0).collect();
        assert_eq!(totals, [("netblock", 1), ("country", 2), ("global", 1), ("fallback", 1)]);
    }
}
