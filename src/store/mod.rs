//! The store: every piece of state in one redb file. All redb access lives in this module;
//! no redb type leaks out. Every transaction runs in a named `spawn_blocking`.
//! Imports `model` only (and `clock` types by value); never actix, askama or reqwest.

mod activity;
mod attachments;
mod browse;
mod commit;
mod maintenance;
mod mirrors;
mod propagation;
mod records;
mod selection;
mod sessions;
mod tables;
mod users;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::model::{
    ChildManifest, Digest, Generation, RepoLayout, RepoName, SyncRun, Tag, TagEntry, UntaggedEntry,
};

pub use attachments::ReferrerPage;
pub use browse::TagDetail;
pub use commit::{Attachments, CommitOutcome, FactsDelta, NewManifest, SyncCommit, TagDiff};
pub use maintenance::{PoolRecord, restore};
pub use mirrors::{CRAWL_HISTORY, MirrorEditError};
pub use propagation::GenerationReach;
use records::{StoredManifest, StoredRun, StoredTag, decode, encode};
pub use selection::{BlobFacts, BlobLookup, ContentSource, EVERY_SET, PoolFacts, PoolFactsBuilder};
pub use sessions::Session;
use tables::*;
pub use users::{UserChange, UserEditError};

/// The schema this build writes. Opening an older store migrates it; a newer one is refused.
/// The store layout this build writes. History:
/// 1. the first release: repositories, tags, manifests, blobs, runs, mirrors, crawls, users,
///    sessions;
/// 2. the audit log and the hourly redirect counters; mirrors may be `pending` (a record
///    field with a default, so schema-1 mirror records read unchanged);
/// 3. per-digest reference counts (`refs`) and the index of released pool files
///    (`released`), so a commit costs what changed, not a scan of the catalog;
/// 4. compact: digests keyed by their 32 bytes, pool-file and manifest records in a binary
///    encoding, the reference count inside the pool file's record (`pool`): about a third
///    of the bytes per pool file;
/// 5. attachments: `subjects` (manifests that name a subject), `referrers` (per repository),
///    `untagged` (referrers published without a tag) and `signatures` (simple signing).
pub const SCHEMA_VERSION: u64 = 5;

/// redb's page cache unless configured (`storage.cache_mib`).
pub const DEFAULT_CACHE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {0} is open in another process (is `wharf serve` running?)")]
    Locked(String),
    #[error("the store was written by a newer Wharf (schema {found}, this build knows {known})")]
    TooNew { found: u64, known: u64 },
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
    #[error("store I/O: {0}")]
    Db(#[from] redb::Error),
    #[error("store task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Io(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The outcome of a lookup scoped to a repository.
#[derive(Debug)]
pub enum Lookup<T> {
    Found(T),
    /// The repository does not exist.
    NameUnknown,
    /// The repository exists; the thing asked for is not in it.
    Unknown,
}

/// A manifest as served: exact bytes plus what negotiation needs.
#[derive(Debug, Clone)]
pub struct ManifestHit {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub children: Vec<ChildManifest>,
}

/// The store handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Open (or create) the store file, creating tables and migrating old schemas.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE)
    }

    /// [`Store::open`] with redb's page cache limited to `cache_bytes` (it lives inside the
    /// process: its size is most of Wharf's memory at a large catalog).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let db =
            Database::builder().set_cache_size(cache_bytes).create(path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Locked(path.display().to_string())
                }
                other => other.into(),
            })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let fresh = meta.is_empty()?;
            let found = meta.get(KEY_SCHEMA)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::TooNew { found: v, known: SCHEMA_VERSION });
                }
                Some(v) => {
                    if migrate(&txn, v)? {
                        meta.insert(KEY_COMPACT_DUE, 1)?;
                    }
                }
                None if fresh => {}
                None => {
                    return Err(StoreError::Corrupt("meta table without schema_version".into()));
                }
            }
            meta.insert(KEY_SCHEMA, SCHEMA_VERSION)?;
            txn.open_table(REPOS)?;
            txn.open_table(TAGS)?;
            txn.open_table(MANIFESTS)?;
            txn.open_table(MANIFEST_BYTES)?;
            txn.open_table(POOL)?;
            txn.open_table(REPO_CONTENT)?;
            txn.open_table(RELEASED)?;
            txn.open_table(RUNS)?;
            txn.open_table(MIRRORS)?;
            txn.open_table(CRAWLS)?;
            txn.open_table(USERS)?;
            txn.open_table(SESSIONS)?;
            txn.open_table(AUDIT)?;
            txn.open_table(REDIRECTS)?;
            txn.open_table(PUBLISHED)?;
            txn.open_table(REACHED)?;
            txn.open_table(MIRROR_TRAFFIC)?;
            txn.open_table(SUBJECTS)?;
            txn.open_table(REFERRERS)?;
            txn.open_table(UNTAGGED)?;
            txn.open_table(SIGNATURES)?;
        }
        txn.commit()?;
        let mut db = db;
        compact_if_due(&mut db)?;
        Ok(Store { db: Arc::new(db) })
    }

    async fn blocking<T, F>(&self, name: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        let span = tracing::trace_span!("store", op = name);
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&db)))
            .await
            .map_err(|e| StoreError::Task(format!("{name}: {e}")))?
    }

    /// The schema version of the open store (always [`SCHEMA_VERSION`] after `open`).
    pub async fn schema_version(&self) -> Result<u64, StoreError> {
        self.blocking("schema_version", |db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(META)?.get(KEY_SCHEMA)?.map(|v| v.value()).unwrap_or(0))
        })
        .await
    }

    /// The current tree generation (0 before the first publish).
    pub async fn generation(&self) -> Result<Generation, StoreError> {
        self.blocking("generation", |db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(META)?.get(KEY_GENERATION)?.map(|v| v.value()).unwrap_or(0))
        })
        .await
    }

    /// Every repository with at least one tag, sorted.
    pub async fn catalog(&self) -> Result<Vec<RepoName>, StoreError> {
        self.blocking("catalog", |db| {
            let txn = db.begin_read()?;
            let repos = txn.open_table(REPOS)?;
            let mut out = Vec::new();
            for row in repos.iter()? {
                out.push(parse_key::<RepoName>("repos", row?.0.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// The repository's tags, sorted; `None` if the repository is unknown.
    pub async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>, StoreError> {
        let repo = repo.clone();
        self.blocking("tags", move |db| {
            let txn = db.begin_read()?;
            if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
                return Ok(None);
            }
            let tags = txn.open_table(TAGS)?;
            let mut out = Vec::new();
            for row in tags.range((repo.as_str(), "")..(repo.as_str(), KEY_END))? {
                out.push(parse_key::<Tag>("tags", row?.0.value().1)?);
            }
            Ok(Some(out))
        })
        .await
    }

    /// The manifest a tag points to.
    pub async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Lookup<ManifestHit>, StoreError> {
        let (repo, tag) = (repo.clone(), tag.clone());
        self.blocking("manifest_by_tag", move |db| {
            let txn = db.begin_read()?;
            if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
                return Ok(Lookup::NameUnknown);
            }
            let Some(row) = txn.open_table(TAGS)?.get((repo.as_str(), tag.as_str()))? else {
                return Ok(Lookup::Unknown);
            };
            let StoredTag::V1 { digest, .. } = decode("tags", row.value())?;
            read_manifest(&txn, &digest)
        })
        .await
    }

    /// A manifest by digest, if the repository's tags reach it.
    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Lookup<ManifestHit>, StoreError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.blocking("manifest_by_digest", move |db| {
            let txn = db.begin_read()?;
            if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
                return Ok(Lookup::NameUnknown);
            }
            if txn.open_table(REPO_CONTENT)?.get((repo.as_str(), &digest.raw()))?.is_none() {
                return Ok(Lookup::Unknown);
            }
            read_manifest(&txn, &digest)
        })
        .await
    }

    /// Every repository's current tags, for the next sync to compare against.
    pub async fn current_tags(
        &self,
    ) -> Result<BTreeMap<RepoName, BTreeMap<Tag, Digest>>, StoreError> {
        self.blocking("current_tags", |db| {
            let txn = db.begin_read()?;
            let mut out: BTreeMap<RepoName, BTreeMap<Tag, Digest>> = BTreeMap::new();
            for row in txn.open_table(TAGS)?.iter()? {
                let (k, v) = row?;
                let (repo, tag) = k.value();
                let StoredTag::V1 { digest, .. } = decode("tags", v.value())?;
                out.entry(parse_key("tags", repo)?)
                    .or_default()
                    .insert(parse_key("tags", tag)?, digest);
            }
            Ok(out)
        })
        .await
    }

    /// Which of `digests` the store already has manifest records for.
    pub async fn known_manifests(&self, digests: Vec<Digest>) -> Result<Vec<Digest>, StoreError> {
        self.blocking("known_manifests", move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(MANIFESTS)?;
            let mut out = Vec::new();
            for d in digests {
                if table.get(&d.raw())?.is_some() {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Repositories as the tree should publish them: these (those that still have tags),
    /// or every one.
    pub async fn layouts(
        &self,
        repos: Option<Vec<RepoName>>,
    ) -> Result<Vec<RepoLayout>, StoreError> {
        self.blocking("layouts", move |db| {
            let txn = db.begin_read()?;
            let manifests = txn.open_table(MANIFESTS)?;
            let content = txn.open_table(REPO_CONTENT)?;
            let tags = txn.open_table(TAGS)?;
            let ranges = match &repos {
                None => vec![tags.iter()?],
                Some(rs) => rs
                    .iter()
                    .map(|r| tags.range((r.as_str(), "")..(r.as_str(), KEY_END)))
                    .collect::<Result<_, _>>()?,
            };
            let mut by_repo: BTreeMap<String, Vec<TagEntry>> = BTreeMap::new();
            for range in ranges {
                for row in range {
                    let (k, v) = row?;
                    let (repo, tag) = k.value();
                    let StoredTag::V1 { digest, .. } = decode("tags", v.value())?;
                    let m = manifests.get(&digest.raw())?.ok_or_else(|| {
                        StoreError::Corrupt(format!("tag {repo}:{tag} -> {digest}"))
                    })?;
                    let StoredManifest { media_type, size, platform, .. } =
                        StoredManifest::decode(m.value())?;
                    by_repo.entry(repo.to_owned()).or_default().push(TagEntry {
                        tag: parse_key("tags", tag)?,
                        digest,
                        media_type,
                        size,
                        platform,
                    });
                }
            }
            let (untagged, signatures) = (txn.open_table(UNTAGGED)?, txn.open_table(SIGNATURES)?);
            let mut out = Vec::new();
            for (repo, tags) in by_repo {
                let (mut digests, mut kinds) = (Vec::new(), Vec::new());
                for row in content.range(repo_keys(repo.as_str()))? {
                    let digest = Digest::from_sha256(row?.0.value().1);
                    if let Some(m) = manifests.get(&digest.raw())? {
                        kinds.push((digest.clone(), StoredManifest::decode(m.value())?.media_type));
                    }
                    digests.push(digest);
                }
                let attached = attachments::read(&untagged, &signatures, &repo)?;
                let mut entries = Vec::new();
                for digest in attached.untagged {
                    let m = manifests.get(&digest.raw())?.ok_or_else(|| {
                        StoreError::Corrupt(format!("untagged {repo}@{digest} not stored"))
                    })?;
                    let StoredManifest { media_type, size, .. } =
                        StoredManifest::decode(m.value())?;
                    entries.push(UntaggedEntry { digest, media_type, size });
                }
                let signatures = attached
                    .signatures
                    .into_iter()
                    .map(|(m, sigs)| (m, sigs.into_iter().map(|(d, _)| d).collect()))
                    .collect();
                out.push(RepoLayout {
                    repo: parse_key("tags", &repo)?,
                    tags,
                    untagged: entries,
                    signatures,
                    content: digests,
                    manifests: kinds,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Record a finished sync run; returns its id.
    pub async fn record_run(&self, run: SyncRun) -> Result<u64, StoreError> {
        self.blocking("record_run", move |db| {
            let txn = db.begin_write()?;
            let id = {
                let mut meta = txn.open_table(META)?;
                let id = meta.get(KEY_NEXT_RUN)?.map(|v| v.value()).unwrap_or(1);
                meta.insert(KEY_NEXT_RUN, id + 1)?;
                txn.open_table(RUNS)?.insert(id, encode(&StoredRun::from(run)).as_slice())?;
                id
            };
            txn.commit()?;
            Ok(id)
        })
        .await
    }

    /// The most recent runs, newest first.
    pub async fn recent_runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
        self.blocking("recent_runs", move |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(RUNS)?.iter()?.rev().take(limit) {
                let (id, rec) = row?;
                let run: StoredRun = decode("sync_runs", rec.value())?;
                out.push(run.into_model(id.value()));
            }
            Ok(out)
        })
        .await
    }

    /// One run by id.
    pub async fn run(&self, id: u64) -> Result<Option<SyncRun>, StoreError> {
        self.blocking("run", move |db| {
            let txn = db.begin_read()?;
            let row = txn.open_table(RUNS)?.get(id)?;
            row.map(|r| decode::<StoredRun>("sync_runs", r.value()).map(|s| s.into_model(id)))
                .transpose()
        })
        .await
    }

    /// Give pool files the store has no record of (left by an interrupted run, or collected
    /// but not yet deleted) a record marked released now, so they are collected after the
    /// grace period unless a tag references them again. Returns how many were adopted.
    pub async fn adopt_pool_files(
        &self,
        files: Vec<(Digest, u64)>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        self.blocking("adopt_pool_files", move |db| commit::stage(db, &[], &files, now)).await
    }

    /// Record manifests and pool files a sync verified, ahead of its commit (see
    /// `commit::stage`), so the run need not keep them in memory.
    pub async fn stage(
        &self,
        manifests: Vec<NewManifest>,
        blobs: Vec<(Digest, u64)>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.blocking("stage", move |db| commit::stage(db, &manifests, &blobs, now).map(drop)).await
    }

    /// Apply a sync's results in one write transaction; see [`commit`].
    pub async fn commit_sync(&self, change: SyncCommit) -> Result<CommitOutcome, StoreError> {
        self.blocking("commit_sync", move |db| commit::apply(db, change)).await
    }
}

/// Bring a store of schema `from` (1 is the first) to [`SCHEMA_VERSION`], inside the opening
/// transaction (all or nothing). Returns whether the file is worth compacting afterwards.
fn migrate(txn: &redb::WriteTransaction, from: u64) -> Result<bool, StoreError> {
    if from == 0 {
        return Err(StoreError::Corrupt("unknown schema version 0".into()));
    }
    if from < 2 {
        txn.open_table(AUDIT)?;
        txn.open_table(REDIRECTS)?;
        tracing::info!("store migrated from schema 1 to 2 (audit log, redirect counters)");
    }
    if from < 3 {
        commit::index_references(txn)?;
        tracing::info!("store migrated to schema 3 (reference counts, released index)");
    }
    if from < 4 {
        commit::compact_tables(txn)?;
        tracing::info!("store migrated to schema 4 (binary keys and records)");
    }
    if from < 5 {
        let n = commit::index_subjects(txn)?;
        tracing::info!(referrers = n, "store migrated to schema 5 (referrers, signatures)");
    }
    Ok(from < 4)
}

/// Give the file back the space a big rewrite left free (a first import, a migration: the
/// commit that did it marks compaction due). Runs where the store is opened, which is the one
/// moment nothing else uses it: the next start of the server, or at the end of an offline
/// command. A failure is logged and leaves a larger file, nothing else.
fn compact_if_due(db: &mut Database) -> Result<(), StoreError> {
    let due = |db: &Database| -> Result<bool, StoreError> {
        let txn = db.begin_read()?;
        Ok(txn.open_table(META)?.get(KEY_COMPACT_DUE)?.is_some())
    };
    if !due(db)? {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let txn = db.begin_write()?;
    txn.open_table(META)?.remove(KEY_COMPACT_DUE)?;
    txn.commit()?;
    loop {
        match db.compact() {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "compacting the store");
                return Ok(());
            }
        }
    }
    tracing::info!(ms = t0.elapsed().as_millis() as u64, "store file compacted");
    Ok(())
}

fn parse_key<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("{table}: bad key {s:?}")))
}

fn read_manifest(
    txn: &redb::ReadTransaction,
    digest: &Digest,
) -> Result<Lookup<ManifestHit>, StoreError> {
    let key = digest.raw();
    let Some(rec) = txn.open_table(MANIFESTS)?.get(&key)? else {
        return Ok(Lookup::Unknown);
    };
    let StoredManifest { media_type, children, .. } = StoredManifest::decode(rec.value())?;
    let bytes = records::unpack_manifest(
        txn.open_table(MANIFEST_BYTES)?
            .get(&key)?
            .ok_or_else(|| StoreError::Corrupt(format!("manifest bytes missing for {digest}")))?
            .value(),
    )?;
    Ok(Lookup::Found(ManifestHit { digest: digest.clone(), media_type, bytes, children }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_is_recorded_and_newer_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        drop(Store::open(&path).unwrap());
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            assert_eq!(meta.get(KEY_SCHEMA).unwrap().unwrap().value(), SCHEMA_VERSION);
        }
        // Reopening the current schema works (and would migrate an older one).
        drop(Store::open(&path).unwrap());
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(KEY_SCHEMA, SCHEMA_VERSION + 1).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn a_due_compaction_gives_the_space_back_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        drop(Store::open(&path).unwrap());
        let len = || std::fs::metadata(&path).unwrap().len();
        // 20 MB written, then dropped: the file keeps the space.
        let fill_and_empty = |due: bool| {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(MANIFEST_BYTES).unwrap();
                for i in 0..20_000u32 {
                    t.insert(&Digest::of(&i.to_le_bytes()).raw(), &[7u8; 1000][..]).unwrap();
                }
            }
            txn.commit().unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(MANIFEST_BYTES).unwrap();
            if due {
                txn.open_table(META).unwrap().insert(KEY_COMPACT_DUE, 1).unwrap();
            }
            txn.commit().unwrap();
        };
        fill_and_empty(false);
        let big = len();
        assert!(big > 20_000_000, "{big}");
        // Not due: an open leaves the space in the file (it costs one read).
        drop(Store::open(&path).unwrap());
        assert!(len() > big * 9 / 10, "{} of {big}", len());
        // Due: the open compacts, and clears the mark.
        fill_and_empty(true);
        drop(Store::open(&path).unwrap());
        assert!(len() < big / 4, "{} of {big}", len());
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(META).unwrap().get(KEY_COMPACT_DUE).unwrap().is_none());
    }

    #[test]
    fn a_second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).err().expect("second open must fail");
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        assert!(err.to_string().contains("another process"));
    }
}
