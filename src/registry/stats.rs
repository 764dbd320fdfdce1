//! Request counters by route kind, method and status, kept in a fixed array of atomics (no
//! lock, no allocation per request) and exposed in Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const KINDS: [&str; 8] =
    ["base", "catalog", "tags", "manifest", "blob", "tree", "metrics", "other"];
const METHODS: [&str; 3] = ["GET", "HEAD", "other"];
const STATUSES: [u16; 18] =
    [200, 202, 206, 303, 304, 307, 400, 401, 403, 404, 405, 408, 413, 416, 422, 429, 500, 503];
const OTHER_STATUS: usize = STATUSES.len();
const CELLS: usize = KINDS.len() * METHODS.len() * (STATUSES.len() + 1);

pub struct RequestStats {
    counts: [AtomicU64; CELLS],
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats { counts: std::array::from_fn(|_| AtomicU64::new(0)) }
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
        } else {
            "other"
        }
    } else if path.starts_with("/tree/") {
        "tree"
    } else if path == "/metrics" {
        "metrics"
    } else {
        "other"
    };
    KINDS.iter().position(|x| *x == k).unwrap_or(KINDS.len() - 1)
}

impl RequestStats {
    pub fn record(&self, kind: usize, method: &str, status: u16) {
        let m = METHODS.iter().position(|x| *x == method).unwrap_or(METHODS.len() - 1);
        let s = STATUSES.iter().position(|x| *x == status).unwrap_or(OTHER_STATUS);
        let i = (kind * METHODS.len() + m) * (STATUSES.len() + 1) + s;
        self.counts[i].fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition of the non-zero counters.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP wharf_http_requests_total HTTP requests by route kind, method and status.\n",
        );
        out.push_str("# TYPE wharf_http_requests_total counter\n");
        for (k, kind) in KINDS.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for s in 0..=STATUSES.len() {
                    let n = self.counts[(k * METHODS.len() + m) * (STATUSES.len() + 1) + s]
                        .load(Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let status =
                        STATUSES.get(s).map(|c| c.to_string()).unwrap_or_else(|| "other".into());
                    let _ = writeln!(
                        out,
                        "wharf_http_requests_total{{route=\"{kind}\",method=\"{method}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
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
        s.record(kind_of("/tree/blobs/sha256/00"), "GET", 599);
        let mut out = String::new();
        s.render(&mut out);
        assert!(
            out.contains(
                "wharf_http_requests_total{route=\"blob\",method=\"GET\",status=\"307\"} 2"
            ),
            "{out}"
        );
        assert!(out.contains("route=\"manifest\",method=\"HEAD\",status=\"200\"} 1"));
        assert!(out.contains("route=\"tree\",method=\"GET\",status=\"other\"} 1"));
        assert_eq!(kind_of("/v2/"), 0);
        assert_eq!(kind_of("/v2/_catalog"), 1);
    }
}
