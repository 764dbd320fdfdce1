//! Blob redirects by tier and client country, counted in a fixed array of atomics (no lock,
//! no allocation per request) and drained in batches into the store.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::model::RedirectCount;

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
        )
    }
}

pub struct RedirectCounters {
    /// Drained into the store.
    cells: Box<[AtomicU64]>,
    /// Since start, by tier: never drained (for `/metrics`).
    totals: [AtomicU64; TIERS.len()],
}

impl Default for RedirectCounters {
    fn default() -> Self {
        RedirectCounters {
            cells: (0..TIERS.len() * COUNTRIES).map(|_| AtomicU64::new(0)).collect(),
            totals: Default::default(),
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
