//! What the store keeps, as versioned serde records. These are storage types, separate from
//! the API and model types; a new layout gets a new variant and a migration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    BlobRef, ChildManifest, CrawlResult, Digest, Generation, Mirror, MirrorHealth, MirrorName,
    Platform, RepoReport, RunOutcome, SyncRun,
};

use super::StoreError;

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredRepo {
    #[serde(rename = "1")]
    V1 { created_at: DateTime<Utc>, updated_at: DateTime<Utc> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredTag {
    #[serde(rename = "1")]
    V1 { digest: Digest, updated_at: DateTime<Utc> },
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "v")]
pub(super) enum StoredManifest {
    #[serde(rename = "1")]
    V1 {
        media_type: String,
        size: u64,
        children: Vec<ChildManifest>,
        blobs: Vec<BlobRef>,
        platform: Option<Platform>,
    },
}

/// A pool file. `released` is set when the last reference to it went away.
#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "v")]
pub(super) enum StoredBlob {
    #[serde(rename = "1")]
    V1 {
        size: u64,
        first_seen: Generation,
        released: Option<Released>,
        /// Content set -> the generation from which it carries the blob (see
        /// `selection::BlobFacts::sets`).
        #[serde(default)]
        sets: std::collections::BTreeMap<String, Generation>,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub(super) struct Released {
    /// The last generation that referenced the blob.
    pub generation: Generation,
    pub at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredRun {
    #[serde(rename = "1")]
    V1(RunV1),
}

/// A sync run as stored; `model::SyncRun` may change shape, this may not.
#[derive(Serialize, Deserialize)]
pub(super) struct RunV1 {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    outcome: OutcomeV1,
    generation_before: Generation,
    generation_after: Generation,
    repos: Vec<RepoReportV1>,
    error: Option<String>,
    blobs_collected: u32,
}

#[derive(Serialize, Deserialize)]
enum OutcomeV1 {
    Ok,
    Partial,
    Failed,
}

#[derive(Serialize, Deserialize)]
struct RepoReportV1 {
    repo: String,
    tags: [u32; 4],
    manifests_fetched: u32,
    blobs_fetched: u32,
    bytes_fetched: u64,
    duration_ms: u64,
    errors: Vec<String>,
}

impl From<SyncRun> for StoredRun {
    fn from(r: SyncRun) -> Self {
        StoredRun::V1(RunV1 {
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: match r.outcome {
                RunOutcome::Ok => OutcomeV1::Ok,
                RunOutcome::Partial => OutcomeV1::Partial,
                RunOutcome::Failed => OutcomeV1::Failed,
            },
            generation_before: r.generation_before,
            generation_after: r.generation_after,
            repos: r
                .repos
                .into_iter()
                .map(|p| RepoReportV1 {
                    repo: p.repo,
                    tags: [p.tags_added, p.tags_moved, p.tags_removed, p.tags_unchanged],
                    manifests_fetched: p.manifests_fetched,
                    blobs_fetched: p.blobs_fetched,
                    bytes_fetched: p.bytes_fetched,
                    duration_ms: p.duration_ms,
                    errors: p.errors,
                })
                .collect(),
            error: r.error,
            blobs_collected: r.blobs_collected,
        })
    }
}

impl StoredRun {
    pub(super) fn into_model(self, id: u64) -> SyncRun {
        let StoredRun::V1(r) = self;
        SyncRun {
            id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: match r.outcome {
                OutcomeV1::Ok => RunOutcome::Ok,
                OutcomeV1::Partial => RunOutcome::Partial,
                OutcomeV1::Failed => RunOutcome::Failed,
            },
            generation_before: r.generation_before,
            generation_after: r.generation_after,
            repos: r
                .repos
                .into_iter()
                .map(|p| RepoReport {
                    repo: p.repo,
                    tags_added: p.tags[0],
                    tags_moved: p.tags[1],
                    tags_removed: p.tags[2],
                    tags_unchanged: p.tags[3],
                    manifests_fetched: p.manifests_fetched,
                    blobs_fetched: p.blobs_fetched,
                    bytes_fetched: p.bytes_fetched,
                    duration_ms: p.duration_ms,
                    errors: p.errors,
                })
                .collect(),
            error: r.error,
            blobs_collected: r.blobs_collected,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredMirror {
    #[serde(rename = "1")]
    V1 { mirror: MirrorV1, health: HealthV1 },
}

/// A mirror as stored; `model::Mirror` may change shape, this may not.
#[derive(Serialize, Deserialize)]
pub(super) struct MirrorV1 {
    name: String,
    owner: Option<u64>,
    urls: Vec<String>,
    country: Option<String>,
    continent_override: Option<String>,
    asns: Vec<u32>,
    netblocks: Vec<String>,
    bandwidth: u32,
    private: bool,
    enabled: bool,
    /// Added after the first release of V1: absent means not pending.
    #[serde(default)]
    pending: bool,
    active: bool,
    disabled_reason: Option<String>,
    /// `all` or `amd64,arm64`.
    content: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct HealthV1 {
    generation: Option<Generation>,
    last_crawl: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    last_error: Option<String>,
    consecutive_failures: u32,
    auto_disabled: Option<String>,
}

impl StoredMirror {
    pub(super) fn new(m: &Mirror, h: &MirrorHealth) -> StoredMirror {
        StoredMirror::V1 {
            mirror: MirrorV1 {
                name: m.name.to_string(),
                owner: m.owner,
                urls: m.urls.clone(),
                country: m.country.clone(),
                continent_override: m.continent_override.clone(),
                asns: m.asns.clone(),
                netblocks: m.netblocks.iter().map(|n| n.to_string()).collect(),
                bandwidth: m.bandwidth,
                private: m.private,
                enabled: m.enabled,
                pending: m.pending,
                active: m.active,
                disabled_reason: m.disabled_reason.clone(),
                content: m.content.to_string(),
            },
            health: HealthV1 {
                generation: h.generation,
                last_crawl: h.last_crawl,
                last_success: h.last_success,
                last_error: h.last_error.clone(),
                consecutive_failures: h.consecutive_failures,
                auto_disabled: h.auto_disabled.clone(),
            },
        }
    }

    pub(super) fn into_model(self) -> Result<(Mirror, MirrorHealth), StoreError> {
        let StoredMirror::V1 { mirror: m, health: h } = self;
        let bad = |what: &str| StoreError::Corrupt(format!("mirrors: {} has a bad {what}", m.name));
        let mirror = Mirror {
            name: m.name.parse().map_err(|_| bad("name"))?,
            owner: m.owner,
            urls: m.urls.clone(),
            country: m.country.clone(),
            continent_override: m.continent_override.clone(),
            asns: m.asns.clone(),
            netblocks: m
                .netblocks
                .iter()
                .map(|n| n.parse())
                .collect::<Result<_, _>>()
                .map_err(|_| bad("netblock"))?,
            bandwidth: m.bandwidth,
            private: m.private,
            enabled: m.enabled,
            pending: m.pending,
            active: m.active,
            disabled_reason: m.disabled_reason.clone(),
            content: m.content.parse().map_err(|_| bad("content set"))?,
        };
        let health = MirrorHealth {
            generation: h.generation,
            last_crawl: h.last_crawl,
            last_success: h.last_success,
            last_error: h.last_error,
            consecutive_failures: h.consecutive_failures,
            auto_disabled: h.auto_disabled,
        };
        Ok((mirror, health))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredCrawl {
    #[serde(rename = "1")]
    V1 {
        at: DateTime<Utc>,
        duration_ms: u64,
        claimed: Option<Generation>,
        credited: Option<Generation>,
        checks: u32,
        downloads: u32,
        error: Option<String>,
    },
}

impl StoredCrawl {
    pub(super) fn new(c: &CrawlResult) -> StoredCrawl {
        StoredCrawl::V1 {
            at: c.at,
            duration_ms: c.duration_ms,
            claimed: c.claimed,
            credited: c.credited,
            checks: c.checks,
            downloads: c.downloads,
            error: c.error.clone(),
        }
    }

    pub(super) fn into_model(self, mirror: MirrorName) -> CrawlResult {
        let StoredCrawl::V1 { at, duration_ms, claimed, credited, checks, downloads, error } = self;
        CrawlResult { mirror, at, duration_ms, claimed, credited, checks, downloads, error }
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records always serialize")
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))
}
