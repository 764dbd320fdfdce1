//! Job metrics for `/metrics`: sync and crawl runs by result, their last durations, bytes
//! synced. Plain atomics written by the scheduler, read by the registry's `/metrics`.
//! Leaf module: imports only `model`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::model::{RunOutcome, SyncRun};

const SYNC_RESULTS: [&str; 4] = ["ok", "partial", "failed", "interrupted"];
const CRAWL_RESULTS: [&str; 2] = ["ok", "failed"];

#[derive(Default)]
pub struct JobMetrics {
    sync_runs: [AtomicU64; 4],
    sync_last_ms: AtomicU64,
    sync_bytes: AtomicU64,
    crawl_runs: [AtomicU64; 2],
    crawl_last_ms: AtomicU64,
    mirror_checks: [AtomicU64; 2],
}

impl JobMetrics {
    /// A finished sync run (`None`: it was interrupted by shutdown).
    pub fn sync_finished(&self, run: Option<&SyncRun>, elapsed: std::time::Duration) {
        let i = match run.map(|r| r.outcome) {
            Some(RunOutcome::Ok) => 0,
            Some(RunOutcome::Partial) => 1,
            Some(RunOutcome::Failed) => 2,
            None => 3,
        };
        self.sync_runs[i].fetch_add(1, Relaxed);
        self.sync_last_ms.store(elapsed.as_millis() as u64, Relaxed);
        if let Some(r) = run {
            self.sync_bytes.fetch_add(r.bytes_fetched(), Relaxed);
        }
    }

    /// A finished crawl: whether the run completed, and how many mirrors passed or failed.
    pub fn crawl_finished(&self, ok: bool, passed: u64, failed: u64, elapsed: std::time::Duration) {
        self.crawl_runs[usize::from(!ok)].fetch_add(1, Relaxed);
        self.crawl_last_ms.store(elapsed.as_millis() as u64, Relaxed);
        self.mirror_checks[0].fetch_add(passed, Relaxed);
        self.mirror_checks[1].fetch_add(failed, Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP wharf_sync_runs_total Sync runs by result.\n# TYPE wharf_sync_runs_total counter\n");
        for (name, c) in SYNC_RESULTS.iter().zip(&self.sync_runs) {
            let _ = writeln!(out, "wharf_sync_runs_total{{result=\"{name}\"}} {}", c.load(Relaxed));
        }
        let seconds = |ms: &AtomicU64| ms.load(Relaxed) as f64 / 1000.0;
        let _ = write!(
            out,
            "# HELP wharf_sync_last_duration_seconds How long the last sync took.\n\
             # TYPE wharf_sync_last_duration_seconds gauge\n\
             wharf_sync_last_duration_seconds {}\n\
             # HELP wharf_sync_bytes_total Bytes fetched from upstream.\n\
             # TYPE wharf_sync_bytes_total counter\n\
             wharf_sync_bytes_total {}\n\
             # HELP wharf_crawl_runs_total Crawl runs by result.\n\
             # TYPE wharf_crawl_runs_total counter\n",
            seconds(&self.sync_last_ms),
            self.sync_bytes.load(Relaxed),
        );
        for (name, c) in CRAWL_RESULTS.iter().zip(&self.crawl_runs) {
            let _ =
                writeln!(out, "wharf_crawl_runs_total{{result=\"{name}\"}} {}", c.load(Relaxed));
        }
        let _ = write!(
            out,
            "# HELP wharf_crawl_last_duration_seconds How long the last crawl took.\n\
             # TYPE wharf_crawl_last_duration_seconds gauge\n\
             wharf_crawl_last_duration_seconds {}\n\
             # HELP wharf_mirror_checks_total Mirror crawls by result.\n\
             # TYPE wharf_mirror_checks_total counter\n",
            seconds(&self.crawl_last_ms),
        );
        for (name, c) in CRAWL_RESULTS.iter().zip(&self.mirror_checks) {
            let _ =
                writeln!(out, "wharf_mirror_checks_total{{result=\"{name}\"}} {}", c.load(Relaxed));
        }
    }
}
