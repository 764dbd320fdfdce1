//! Live progress of the running sync, shared by the CLI's progress bar, the control socket and
//! (later) the admin UI. Plain atomics: the sync updates them, readers take snapshots.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct SyncProgress {
    running: AtomicBool,
    repos_total: AtomicU64,
    repos_done: AtomicU64,
    blobs_total: AtomicU64,
    blobs_done: AtomicU64,
    bytes_done: AtomicU64,
    current: Mutex<String>,
}

/// A point-in-time copy of [`SyncProgress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    pub running: bool,
    pub repos_total: u64,
    pub repos_done: u64,
    pub blobs_total: u64,
    pub blobs_done: u64,
    pub bytes_done: u64,
    pub current: String,
}

impl SyncProgress {
    pub(super) fn start(&self) {
        for a in [
            &self.repos_total,
            &self.repos_done,
            &self.blobs_total,
            &self.blobs_done,
            &self.bytes_done,
        ] {
            a.store(0, Relaxed);
        }
        self.set_current("listing repositories");
        self.running.store(true, Relaxed);
    }

    pub(super) fn finish(&self) {
        self.set_current("");
        self.running.store(false, Relaxed);
    }

    pub(super) fn set_current(&self, what: &str) {
        let mut c = self.current.lock().expect("progress lock");
        c.clear();
        c.push_str(what);
    }

    pub(super) fn repos(&self, total: u64) {
        self.repos_total.store(total, Relaxed);
    }

    pub(super) fn repo_done(&self) {
        self.repos_done.fetch_add(1, Relaxed);
    }

    pub(super) fn blobs_planned(&self, n: u64) {
        self.blobs_total.fetch_add(n, Relaxed);
    }

    pub(super) fn blob_done(&self, bytes: u64) {
        self.blobs_done.fetch_add(1, Relaxed);
        self.bytes_done.fetch_add(bytes, Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            running: self.running.load(Relaxed),
            repos_total: self.repos_total.load(Relaxed),
            repos_done: self.repos_done.load(Relaxed),
            blobs_total: self.blobs_total.load(Relaxed),
            blobs_done: self.blobs_done.load(Relaxed),
            bytes_done: self.bytes_done.load(Relaxed),
            current: self.current.lock().expect("progress lock").clone(),
        }
    }
}
