//! The record of one sync run, as reported to operators and kept in the store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Generation;

/// How a sync run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Every repository synced.
    Ok,
    /// Some repositories or tags failed; the rest was published.
    Partial,
    /// Nothing could be synced (upstream unreachable, store or tree error).
    Failed,
}

/// What happened to one repository during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoReport {
    pub repo: String,
    pub tags_added: u32,
    pub tags_moved: u32,
    pub tags_removed: u32,
    pub tags_unchanged: u32,
    /// Untagged referrers and simple-signing signatures that came or went.
    pub attachments_changed: u32,
    pub manifests_fetched: u32,
    pub blobs_fetched: u32,
    pub bytes_fetched: u64,
    pub duration_ms: u64,
    pub errors: Vec<String>,
}

/// One sync run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRun {
    pub id: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: RunOutcome,
    pub generation_before: Generation,
    pub generation_after: Generation,
    pub repos: Vec<RepoReport>,
    /// A failure that stopped the whole run.
    pub error: Option<String>,
    /// Pool files removed after their grace period.
    pub blobs_collected: u32,
}

impl SyncRun {
    pub fn blobs_fetched(&self) -> u32 {
        self.repos.iter().map(|r| r.blobs_fetched).sum()
    }

    pub fn bytes_fetched(&self) -> u64 {
        self.repos.iter().map(|r| r.bytes_fetched).sum()
    }

    pub fn errors(&self) -> impl Iterator<Item = String> + '_ {
        self.error.iter().cloned().chain(
            self.repos
                .iter()
                .flat_map(|r| r.errors.iter().map(move |e| format!("{}: {e}", r.repo))),
        )
    }
}
