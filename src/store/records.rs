//! What the store keeps, as versioned serde records. These are storage types, separate from
//! the API and model types; a new layout gets a new variant and a migration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    BlobRef, ChildManifest, CrawlResult, Digest, Generation, Mirror, MirrorHealth, Platform,
    RepoReport, RunOutcome, SyncRun,
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
    V1 { mirror: Mirror, health: MirrorHealth },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredCrawl {
    #[serde(rename = "1")]
    V1(CrawlResult),
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
