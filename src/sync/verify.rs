//! `wharf verify`: check every pool file against its digest and every pool file the store
//! references; with `repair`, put back what is missing or damaged (manifests from the
//! store's bytes, blobs from upstream) and relink the layouts.

use std::collections::HashMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::model::{BlobRef, Digest};

use super::{SyncCtx, SyncError, republish};

/// What verification found (and, with repair, what it fixed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Pool files hashed.
    pub checked: u64,
    pub bytes: u64,
    /// Pool files whose content does not match their name (or recorded size).
    pub corrupt: Vec<String>,
    /// Pool files the store references that are not there.
    pub missing: Vec<String>,
    /// Pool files the store has no record of (adopted and collected by the next sync).
    pub untracked: u64,
    pub repaired: Vec<String>,
    /// What could not be repaired, and why.
    pub unrepaired: Vec<String>,
}

impl VerifyReport {
    /// Damage remains (found and not repaired).
    pub fn damaged(&self) -> bool {
        let fixed = |d: &String| self.repaired.contains(d);
        self.corrupt.iter().chain(&self.missing).any(|d| !fixed(d)) || !self.unrepaired.is_empty()
    }
}

/// Whether the file's sha256 is `digest` (off the async workers).
async fn intact(path: std::path::PathBuf, digest: Digest) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(mut f) = std::fs::File::open(&path) else { return false };
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        hex::encode(hasher.finalize()) == digest.hex()
    })
    .await
    .unwrap_or(false)
}

pub async fn verify(ctx: &SyncCtx, repair: bool) -> Result<VerifyReport, SyncError> {
    let records = ctx.store.pool_records().await?;
    let files: HashMap<Digest, u64> = ctx.tree.pool_files()?.into_iter().collect();
    let recorded: HashMap<&Digest, u64> = records.iter().map(|r| (&r.digest, r.size)).collect();
    let mut report = VerifyReport::default();
    for (digest, size) in &files {
        report.checked += 1;
        report.bytes += size;
        let size_ok = recorded.get(digest).is_none_or(|s| s == size);
        if !size_ok || !intact(ctx.tree.pool_path(digest), digest.clone()).await {
            report.corrupt.push(digest.to_string());
        }
        if !recorded.contains_key(digest) {
            report.untracked += 1;
        }
    }
    for r in records.iter().filter(|r| !r.released && !files.contains_key(&r.digest)) {
        report.missing.push(r.digest.to_string());
    }
    report.corrupt.sort();
    report.missing.sort();
    if !repair || (report.corrupt.is_empty() && report.missing.is_empty()) {
        return Ok(report);
    }
    let damaged: Vec<String> = report.corrupt.iter().chain(&report.missing).cloned().collect();
    for d in damaged {
        let digest: Digest = d.parse().map_err(|e| SyncError::Publish(format!("{d}: {e}")))?;
        match put_back(ctx, &digest, recorded.get(&digest).copied()).await {
            Ok(()) => report.repaired.push(d),
            Err(why) => report.unrepaired.push(format!("{d}: {why}")),
        }
    }
    ctx.tree.sync_pool()?;
    // Layout links of a replaced file still point at the damaged copy: relink everything.
    republish(ctx).await?;
    Ok(report)
}

/// Fetch one pool file again: a manifest from the store's bytes, a signature from the
/// lookaside store, a blob from upstream.
async fn put_back(ctx: &SyncCtx, digest: &Digest, size: Option<u64>) -> Result<(), String> {
    let path = ctx.tree.pool_path(digest);
    if path.exists() {
        std::fs::remove_file(&path).map_err(|e| format!("removing the damaged copy: {e}"))?;
    }
    if let Some(bytes) = ctx.store.manifest_bytes(digest).await.map_err(|e| e.to_string())? {
        return ctx.tree.put_bytes(digest, &bytes).map_err(|e| e.to_string());
    }
    if let Some((repo, manifest)) =
        ctx.store.signature_owner(digest).await.map_err(|e| e.to_string())?
    {
        let lookaside =
            ctx.lookaside.as_ref().ok_or("a signature, and no lookaside is configured")?;
        let files = lookaside.signatures(&repo, &manifest).await.map_err(|e| e.to_string())?;
        let bytes = files.into_iter().find(|f| Digest::of(f) == *digest).ok_or_else(|| {
            format!("the lookaside store no longer has this signature of {repo}@{manifest}")
        })?;
        return ctx.tree.put_bytes(digest, &bytes).map_err(|e| e.to_string());
    }
    let repo = ctx
        .store
        .repo_reaching(digest)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no repository reaches it any more")?;
    let blob = BlobRef { digest: digest.clone(), size: size.unwrap_or(0) };
    ctx.upstream
        .fetch_blob(repo.as_str(), &blob, &ctx.tree)
        .await
        .map(|_| ())
        .map_err(|e| format!("fetching it from {repo}: {e}"))
}
