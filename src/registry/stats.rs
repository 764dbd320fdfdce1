//! Request counters by route kind, method and status, kept in a fixed array of atomics (no
//! lock, no allocation per request) and exposed in Prometheus text format at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::{Collector, counters};

const KINDS: [&str; 12] = [
    "base",
    "catalog",
    "tags",
    "manifest",
    "blob",
    "referrers",
    "signatures",
    "tree",
    "metrics",
    "public",
    "client_config",
    "other",
];
const METHODS: [&str; 3] = ["GET", "HEAD", "other"];
/// Every status code from 100 to 599 has its own counter: a 5xx is counted as itself.
const STATUSES: usize = 500;
const CELLS: usize = KINDS.len() * METHODS.len() * STATUSES;

pub struct RequestStats {
    counts: Box<[AtomicU64]>,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats { counts: (0..CELLS).map(|_| AtomicU64::new(0)).collect() }
    }
}

/// `Debug` without the cells.
impl std::fmt::Debug for RequestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStats").finish_non_exhaustive()
    }
}

/// Which kind of route a path is, without allocating.
pub fn kind_of(path: &str) -> usize {
    let k = if path == "/v2" || path == "/v2/" {
        "base"
    } else if let Some(rest) = path.strip_prefix("/v2/") {
        if rest == "_catalog" {
            "catalog"
        } else if rest.ends_with("/tags/list") {
            "tags"
        } else if rest.contains("/manifests/") {
            "manifest"
        } else if rest.contains("/blobs/") {
            "blob"
        } else if rest.contains("/referrers/") {
            "referrers"
        } else {
            "other"
        }
    } else if path.starts_with("/extensions/") || path.starts_with("/sigstore/") {
        "signatures"
    } else if path.starts_with("/tree/") {
        "tree"
    } else if path.starts_with("/client-config/") {
        "client_config"
    } else if path == "/metrics" {
        "metrics"
    } else if path == "/mirrors" || path.starts_with("/api/") || path.starts_with("/assets/") {
        "public"
    } else {
        "other"
    };
    KINDS.iter().position(|x| *x == k).unwrap_or(KINDS.len() - 1)
}

impl RequestStats {
    pub fn record(&self, kind: usize, method: &str, status: u16) {
        let m = METHODS.iter().position(|x| *x == method).unwrap_or(METHODS.len() - 1);
        let s = usize::from(status.clamp(100, 599) - 100);
        let i = (kind * METHODS.len() + m) * STATUSES + s;
        self.counts[i].fetch_add(1, Relaxed);
    }
}

impl Collector for RequestStats {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let series = self.counts.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Relaxed);
            let (rest, s) = (i / STATUSES, i % STATUSES);
            let (k, m) = (rest / METHODS.len(), rest % METHODS.len());
            let status = (100 + s).to_string();
            (n > 0).then(|| {
                (
                    [
                        ("route", KINDS[k].to_owned()),
                        ("method", METHODS[m].to_owned()),
                        ("status", status),
                    ],
                    n,
                )
            })
        });
        counters(
            &mut e,
            "wharf_http_requests",
            "HTTP requests by route kind, method and status.",
            series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_method_status() {
        let s = RequestStats::default();
        let blob = kind_of("/v2/a/b/blobs/sha256:00");
        s.record(blob, "GET", 307);
        s.record(blob, "GET", 307);
        s.record(kind_of("/v2/a/manifests/x"), "HEAD", 200);
        s.record(kind_of("/tree/blobs/sha256/00"), "GET", 502);
        let out = crate::metrics::encode(vec![Box::new(s)]);
        assert!(
            out.contains(
                "wharf_http_requests_total{route=\"blob\",method=\"GET\",status=\"307\"} 2"
            ),
            "{out}"
        );
        assert!(out.contains("route=\"manifest\",method=\"HEAD\",status=\"200\"} 1"));
        assert!(out.contains("route=\"tree\",method=\"GET\",status=\"502\"} 1"), "{out}");
        assert_eq!(kind_of("/v2/"), 0);
        assert_eq!(kind_of("/v2/_catalog"), 1);
    }
}
