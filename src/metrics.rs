//! The one metrics registry: every source of `/metrics` (request counters, redirects, jobs,
//! facts read at scrape time) is a [`Collector`] over its own atomics, and
//! [`encode`] writes them all with `prometheus-client` in the OpenMetrics text format. No
//! lock and no allocation on the counted paths; encoding happens only when scraped.
//! Also the job metrics: sync and crawl runs by result, their last durations, bytes synced.
//! Leaf module: imports only `model`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub use prometheus_client::collector::Collector;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every collector's metrics, in the OpenMetrics text format.
pub fn encode(collectors: Vec<Box<dyn Collector>>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

/// A counter family: `name` (the `_total` suffix is added) with one series per labels.
pub fn counters<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter without labels.
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A gauge family with one series per labels.
pub fn gauges<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
pub fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

use crate::model::{RunOutcome, SyncRun};

const SYNC_RESULTS: [&str; 4] = ["ok", "partial", "failed", "interrupted"];
const CRAWL_RESULTS: [&str; 2] = ["ok", "failed"];

#[derive(Default, Debug)]
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
}

impl Collector for JobMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seconds = |ms: &AtomicU64| ms.load(Relaxed) as f64 / 1000.0;
        let results = |names: &[&'static str],
                       cells: &[AtomicU64]|
         -> Vec<([(&'static str, &'static str); 1], u64)> {
            names.iter().zip(cells).map(|(n, c)| ([("result", *n)], c.load(Relaxed))).collect()
        };
        counters(
            &mut e,
            "wharf_sync_runs",
            "Sync runs by result.",
            results(&SYNC_RESULTS, &self.sync_runs),
        )?;
        gauge(
            &mut e,
            "wharf_sync_last_duration_seconds",
            "How long the last sync took.",
            seconds(&self.sync_last_ms),
        )?;
        counter(
            &mut e,
            "wharf_sync_bytes",
            "Bytes fetched from upstream.",
            self.sync_bytes.load(Relaxed),
        )?;
        counters(
            &mut e,
            "wharf_crawl_runs",
            "Crawl runs by result.",
            results(&CRAWL_RESULTS, &self.crawl_runs),
        )?;
        gauge(
            &mut e,
            "wharf_crawl_last_duration_seconds",
            "How long the last crawl took.",
            seconds(&self.crawl_last_ms),
        )?;
        counters(
            &mut e,
            "wharf_mirror_checks",
            "Mirror crawls by result.",
            results(&CRAWL_RESULTS, &self.mirror_checks),
        )
    }
}
