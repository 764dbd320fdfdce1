//! Applying a sync: tags, manifests, blob records, repository content sets, generation and
//! garbage collection, all in one write transaction, so readers see either the old tree or
//! the new one.
//!
//! The work is proportional to what changed, never to the catalog: a repository whose tags
//! did not change is not touched; what a repository reaches is compared with what it
//! reached (`repo_reach`), and only the difference moves the reference counts in the pool
//! files' records; a pool file whose count drops to 0 is released and enters the
//! `released_at` index, which garbage collection reads from its oldest end only as far as is
//! due.
//!
//! A sync may also *stage* manifests and pool files before its commit ([`stage`]), in
//! batches, so it never holds the catalog's manifests in memory: staged records are
//! released (nothing references them yet), so if the run never commits, they are collected
//! after the grace period like anything else nobody references.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use crate::model::{BlobRef, ChildManifest, Digest, Generation, Platform, Referrer, RepoName, Tag};

use super::records::{
    Released, StoredBlob, StoredManifest, StoredRepo, StoredTag, decode, encode, pack_manifest,
};
use super::tables::*;
use super::{StoreError, selection};

/// A manifest fetched and verified by the sync, with its bytes already in the pool.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub children: Vec<ChildManifest>,
    pub blobs: Vec<BlobRef>,
    pub platform: Option<Platform>,
}

/// Everything one sync run wants published.
#[derive(Debug, Clone, Default)]
pub struct SyncCommit {
    /// The complete tag set of every repository the run looked at. An empty set removes the
    /// repository.
    pub repos: BTreeMap<RepoName, BTreeMap<Tag, Digest>>,
    /// Repositories no longer wanted (gone upstream or filtered out).
    pub removed_repos: Vec<RepoName>,
    /// Manifests not staged yet (see [`stage`]).
    pub manifests: Vec<NewManifest>,
    /// Pool files written by this run and not staged yet (blobs; manifests are added from
    /// `manifests`).
    pub blobs: Vec<(Digest, u64)>,
    /// What repositories publish besides their tags. A repository named here gets exactly
    /// these; one that is not keeps what it had (until it is removed).
    pub attachments: BTreeMap<RepoName, Attachments>,
    pub now: DateTime<Utc>,
    /// How long an unreferenced pool file stays before it is collected.
    pub grace: chrono::Duration,
}

/// What a repository publishes besides its tags: manifests without a tag (referrers the
/// upstream's referrers API or fallback index lists) and each manifest's simple-signing
/// signatures (pool files, `signature-1` first). Everything here is in the pool already.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachments {
    pub untagged: BTreeSet<Digest>,
    pub signatures: BTreeMap<Digest, Vec<(Digest, u64)>>,
}

/// How a repository's tags (and attachments) changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagDiff {
    pub added: u32,
    pub moved: u32,
    pub removed: u32,
    pub unchanged: u32,
    /// Untagged manifests and signature lists that came, went or changed.
    pub attachments: u32,
}

impl TagDiff {
    pub fn changed(&self) -> bool {
        self.added + self.moved + self.removed + self.attachments > 0
    }
}

#[derive(Debug, Clone)]
pub struct CommitOutcome {
    pub generation_before: Generation,
    pub generation: Generation,
    pub diffs: BTreeMap<RepoName, TagDiff>,
    /// Pool files whose records were removed: the caller deletes the files.
    pub collected: Vec<Digest>,
    /// Manifests whose simple-signing signatures all went, by repository: the caller removes
    /// their signature directories.
    pub unsigned: Vec<(RepoName, Digest)>,
    /// What changed for selection: applied to the facts of `generation_before` it gives
    /// those of `generation` (see `PoolFacts::patched`); `None` when the commit changed
    /// too much to be worth it (read the facts again).
    pub delta: Option<FactsDelta>,
}

/// A commit that writes more pool-file records than this reports no [`FactsDelta`] (the
/// delta costs a few hundred bytes a record; reading the facts again costs less than that
/// past a few tens of thousands).
const DELTA_LIMIT: usize = 20_000;

/// A commit that writes at least this many pool-file records, and a quarter of the pool or
/// more, marks the store file for compaction at its next open.
const COMPACT_AFTER: u64 = 10_000;

/// The content facts a commit changed.
#[derive(Debug, Clone, Default)]
pub struct FactsDelta {
    /// Pool files whose record this commit wrote: (digest, size, first seen, sets).
    pub blobs: Vec<(Digest, u64, Generation, BTreeMap<String, Generation>)>,
    /// The complete content of every repository whose tags changed (empty: removed).
    pub repos: Vec<(RepoName, Vec<Digest>)>,
}

impl CommitOutcome {
    pub fn changed(&self) -> bool {
        self.generation != self.generation_before
    }

    /// The repositories whose published layout changes.
    pub fn changed_repos(&self) -> impl Iterator<Item = &RepoName> {
        self.diffs.iter().filter(|(_, d)| d.changed()).map(|(r, _)| r)
    }
}

/// The tables a commit writes, open once.
struct Tables<'t> {
    /// Pool files whose record was written in this transaction; `None` once there are more
    /// than [`DELTA_LIMIT`] (a first sync): then the facts are read again in full.
    touched: Option<BTreeSet<[u8; 32]>>,
    /// How many pool-file records this transaction wrote.
    written: u64,
    meta: Table<'t, &'static str, u64>,
    manifests: Table<'t, &'static [u8; 32], &'static [u8]>,
    manifest_bytes: Table<'t, &'static [u8; 32], &'static [u8]>,
    pool: Table<'t, &'static [u8; 32], &'static [u8]>,
    released: Table<'t, (i64, &'static [u8; 32]), ()>,
    subjects: Table<'t, &'static [u8; 32], &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            touched: Some(BTreeSet::new()),
            written: 0,
            meta: txn.open_table(META)?,
            manifests: txn.open_table(MANIFESTS)?,
            manifest_bytes: txn.open_table(MANIFEST_BYTES)?,
            pool: txn.open_table(POOL)?,
            released: txn.open_table(RELEASED)?,
            subjects: txn.open_table(SUBJECTS)?,
        })
    }

    /// The subject manifest `digest` names, if it is a manifest that names one.
    fn subject_of(&self, digest: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.subjects.get(digest)?.and_then(|v| v.value().get(..32)?.try_into().ok()))
    }

    fn generation(&self) -> Result<Generation, StoreError> {
        Ok(self.meta.get(KEY_GENERATION)?.map(|v| v.value()).unwrap_or(0))
    }

    fn blob(&self, digest: &[u8; 32]) -> Result<Option<StoredBlob>, StoreError> {
        match self.pool.get(digest)? {
            Some(v) => Ok(Some(StoredBlob::decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn put_blob(&mut self, digest: &[u8; 32], rec: &StoredBlob) -> Result<(), StoreError> {
        self.pool.insert(digest, rec.encode().as_slice())?;
        self.written += 1;
        if let Some(t) = &mut self.touched {
            t.insert(*digest);
            if t.len() > DELTA_LIMIT {
                self.touched = None;
            }
        }
        Ok(())
    }

    /// The facts of every pool file whose record this transaction wrote and still exists;
    /// `None` if there were too many to keep.
    #[allow(clippy::type_complexity)]
    fn touched_facts(
        &self,
    ) -> Result<Option<Vec<(Digest, u64, Generation, BTreeMap<String, Generation>)>>, StoreError>
    {
        let Some(touched) = &self.touched else { return Ok(None) };
        let mut out = Vec::with_capacity(touched.len());
        for d in touched {
            if let Some(b) = self.blob(d)? {
                out.push((Digest::from_sha256(d), b.size, b.first_seen, b.sets));
            }
        }
        Ok(Some(out))
    }

    /// Record manifests and pool files; new records start released at `now` (unless a
    /// repository already reaches them), first seen in the generation after the current one:
    /// a mirror holding the current generation may have copied the tree before these files
    /// were in it. Returns how many pool files got a record.
    fn stage(
        &mut self,
        manifests: &[NewManifest],
        blobs: &[(Digest, u64)],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let next = self.generation()? + 1;
        let mut pool: Vec<([u8; 32], u64)> = blobs.iter().map(|(d, s)| (d.raw(), *s)).collect();
        for m in manifests {
            let rec = StoredManifest {
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
                children: m.children.clone(),
                blobs: m.blobs.clone(),
                platform: m.platform.clone(),
            };
            let key = m.digest.raw();
            self.manifests.insert(&key, rec.encode().as_slice())?;
            self.manifest_bytes.insert(&key, pack_manifest(&m.bytes).as_slice())?;
            if let Some(r) = Referrer::of(&m.bytes, &m.media_type) {
                self.subjects.insert(&key, subject_record(&r).as_slice())?;
            }
            pool.push((key, m.bytes.len() as u64));
        }
        let mut added = 0;
        for (digest, size) in pool {
            if self.pool.get(&digest)?.is_some() {
                continue;
            }
            let at_ms = now.timestamp_millis();
            self.released.insert((at_ms, &digest), ())?;
            let rec = StoredBlob {
                size,
                first_seen: next,
                released: Some(Released { generation: next - 1, at_ms }),
                sets: BTreeMap::new(),
                refs: 0,
            };
            self.put_blob(&digest, &rec)?;
            added += 1;
        }
        Ok(added)
    }

    /// One more repository reaches `digest` (of `size` bytes): a released pool file is
    /// referenced again, and one without a record (left by an interrupted run, say) gets
    /// one, so it is tracked and eventually collected like any other.
    fn reference(
        &mut self,
        digest: &[u8; 32],
        size: u64,
        candidate: Generation,
    ) -> Result<(), StoreError> {
        let mut rec = self.blob(digest)?.unwrap_or(StoredBlob {
            size,
            first_seen: candidate,
            released: None,
            sets: BTreeMap::new(),
            refs: 0,
        });
        if let Some(r) = rec.released.take() {
            self.released.remove((r.at_ms, digest))?;
        }
        rec.refs += 1;
        self.put_blob(digest, &rec)
    }

    /// One repository less reaches `digest`; when none does, it is released.
    fn unreference(
        &mut self,
        digest: &[u8; 32],
        generation: Generation,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(mut rec) = self.blob(digest)? else { return Ok(()) };
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs == 0 && rec.released.is_none() {
            let at_ms = now.timestamp_millis();
            self.released.insert((at_ms, digest), ())?;
            rec.released = Some(Released { generation, at_ms });
        }
        self.put_blob(digest, &rec)
    }

    /// Content set `set` carries `digest` from `generation` on (or from when it was first
    /// seen, if later). Membership only grows.
    fn grow_set(
        &mut self,
        digest: &[u8; 32],
        set: &str,
        generation: Generation,
    ) -> Result<(), StoreError> {
        if let Some(mut rec) = self.blob(digest)?
            && !rec.sets.contains_key(set)
        {
            rec.sets.insert(set.to_owned(), generation.max(rec.first_seen));
            self.put_blob(digest, &rec)?;
        }
        Ok(())
    }
}

/// Record manifests and pool files ahead of the commit that publishes them (or pool files
/// found without a record: an interrupted run's downloads). Returns how many pool files got
/// a record.
pub(super) fn stage(
    db: &Database,
    manifests: &[NewManifest],
    blobs: &[(Digest, u64)],
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let txn = db.begin_write()?;
    let added = Tables::open(&txn)?.stage(manifests, blobs, now)?;
    txn.commit()?;
    Ok(added)
}

pub(super) fn apply(db: &Database, c: SyncCommit) -> Result<CommitOutcome, StoreError> {
    let txn = db.begin_write()?;
    let outcome = {
        let mut t = Tables::open(&txn)?;
        let mut repos = txn.open_table(REPOS)?;
        let mut tags = txn.open_table(TAGS)?;
        let mut content = txn.open_table(REPO_CONTENT)?;
        let mut untagged = txn.open_table(UNTAGGED)?;
        let mut signatures = txn.open_table(SIGNATURES)?;
        let mut referrers = txn.open_table(REFERRERS)?;
        t.stage(&c.manifests, &c.blobs, c.now)?;

        let before = t.generation()?;
        // Content that becomes visible in this commit belongs to the next generation; if
        // nothing changes it is not visible anywhere new and the number stays.
        let candidate = before + 1;

        let mut diffs = BTreeMap::new();
        let mut changed_content: Vec<RepoName> = Vec::new();
        let mut unsigned = Vec::new();
        let mut wanted = c.repos;
        for r in c.removed_repos {
            wanted.insert(r, BTreeMap::new());
        }
        for (repo, new_tags) in &wanted {
            let mut old: BTreeMap<String, Digest> = BTreeMap::new();
            for row in tags.range((repo.as_str(), "")..(repo.as_str(), KEY_END))? {
                let (k, v) = row?;
                let StoredTag::V1 { digest, .. } = decode("tags", v.value())?;
                old.insert(k.value().1.to_owned(), digest);
            }
            let mut diff = TagDiff::default();
            for (tag, digest) in new_tags {
                match old.remove(tag.as_str()) {
                    Some(d) if &d == digest => {
                        diff.unchanged += 1;
                        continue;
                    }
                    Some(_) => diff.moved += 1,
                    None => diff.added += 1,
                }
                let rec = StoredTag::V1 { digest: digest.clone(), updated_at: c.now };
                tags.insert((repo.as_str(), tag.as_str()), encode(&rec).as_slice())?;
            }
            for tag in old.keys() {
                tags.remove((repo.as_str(), tag.as_str()))?;
                diff.removed += 1;
            }
            // Attachments: what the run found, else what there was; none without tags.
            let had = super::attachments::read(&untagged, &signatures, repo.as_str())?;
            let has = match c.attachments.get(repo) {
                _ if new_tags.is_empty() => Attachments::default(),
                Some(a) => a.clone(),
                None => had.clone(),
            };
            diff.attachments =
                write_attachments(&mut untagged, &mut signatures, repo.as_str(), &had, &has)?;
            for d in had.signatures.keys().filter(|d| !has.signatures.contains_key(*d)) {
                unsigned.push((repo.clone(), d.clone()));
            }
            if !diff.changed() {
                // Same tags, same digests: the same content (manifests are immutable).
                diffs.insert(repo.clone(), diff);
                continue;
            }

            // What the repository reaches now against what it reached: its tags, its untagged
            // manifests, and its signature files (which every content set carries).
            let mut reach = BTreeMap::new();
            for digest in new_tags.values().chain(&has.untagged) {
                reach_from(&t.manifests, digest.raw(), &mut reach)?;
            }
            let mut signature_files = BTreeSet::new();
            for (d, size) in has.signatures.values().flatten() {
                reach.insert(d.raw(), *size);
                signature_files.insert(d.raw());
            }
            let mut gone = Vec::new();
            for row in content.range(repo_keys(repo.as_str()))? {
                let d = *row?.0.value().1;
                if reach.remove(&d).is_none() {
                    gone.push(d);
                }
            }
            for d in gone {
                content.remove((repo.as_str(), &d))?;
                t.unreference(&d, before, c.now)?;
                if let Some(subject) = t.subject_of(&d)? {
                    referrers.remove((repo.as_str(), &subject, &d))?;
                }
            }
            // `reach` now holds only what is new to this repository.
            for (d, size) in &reach {
                content.insert((repo.as_str(), d), *size)?;
                t.reference(d, *size, candidate)?;
                if let Some(subject) = t.subject_of(d)? {
                    referrers.insert((repo.as_str(), &subject, d), ())?;
                }
            }
            // Content sets that carry a blob from now on: those of every manifest this
            // repository reaches for the first time, for it and its blobs. (A repository
            // reaching something new changed its tags: the generation is `candidate`.)
            for d in reach.keys() {
                if signature_files.contains(d) {
                    t.grow_set(d, selection::EVERY_SET, candidate)?;
                    continue;
                }
                let rec = match t.manifests.get(d)? {
                    Some(v) => StoredManifest::decode(v.value())?,
                    None => continue,
                };
                let (set, blobs) = selection::sets_of_manifest(&rec);
                for digest in std::iter::once(*d).chain(blobs.iter().map(|b| b.raw())) {
                    t.grow_set(&digest, set, candidate)?;
                }
            }
            changed_content.push(repo.clone());

            let existed = match repos.get(repo.as_str())? {
                Some(v) => Some(decode::<StoredRepo>("repos", v.value())?),
                None => None,
            };
            if new_tags.is_empty() {
                repos.remove(repo.as_str())?;
            } else {
                let created_at = match existed {
                    Some(StoredRepo::V1 { created_at, .. }) => created_at,
                    None => c.now,
                };
                let rec = StoredRepo::V1 { created_at, updated_at: c.now };
                repos.insert(repo.as_str(), encode(&rec).as_slice())?;
            }
            diffs.insert(repo.clone(), diff);
        }
        let tags_changed = diffs.values().any(TagDiff::changed);

        // Garbage collection: released pool files whose grace is over, oldest first, read
        // from the index only as far as is due. What this run released (at `now`) waits for
        // a later one, whatever the grace.
        let mut collected: Vec<Digest> = Vec::new();
        if let Some(cutoff) = c.now.checked_sub_signed(c.grace) {
            let mut due = Vec::new();
            for row in t.released.range(..(cutoff.timestamp_millis(), &[0u8; 32]))? {
                let (k, _) = row?;
                let (at, d) = k.value();
                due.push((at, *d));
            }
            for (at, d) in due {
                t.released.remove((at, &d))?;
                if t.blob(&d)?.is_some_and(|b| b.refs > 0) {
                    continue; // referenced after all: never collected
                }
                t.pool.remove(&d)?;
                t.manifests.remove(&d)?;
                t.manifest_bytes.remove(&d)?;
                t.subjects.remove(&d)?;
                collected.push(Digest::from_sha256(&d));
            }
        }

        let changed = tags_changed || !collected.is_empty();
        let generation = if changed { candidate } else { before };
        t.meta.insert(KEY_GENERATION, generation)?;
        if changed {
            super::propagation::published(&txn, generation, c.now)?;
        }
        if t.written >= COMPACT_AFTER && t.written >= t.pool.len()? / 4 {
            // A rewrite of much of the catalog (a first import) leaves about as much free
            // space in the file as it holds data.
            t.meta.insert(KEY_COMPACT_DUE, 1)?;
        }
        let mut delta = t.touched_facts()?.map(|blobs| FactsDelta { blobs, repos: Vec::new() });
        if let Some(delta) = &mut delta {
            for repo in changed_content {
                let mut reach = Vec::new();
                for row in content.range(repo_keys(repo.as_str()))? {
                    reach.push(Digest::from_sha256(row?.0.value().1));
                }
                delta.repos.push((repo, reach));
            }
        }
        CommitOutcome { generation_before: before, generation, diffs, collected, unsigned, delta }
    };
    txn.commit()?;
    Ok(outcome)
}

/// A `subjects` value: the subject's 32 bytes, then the descriptor.
fn subject_record(r: &Referrer) -> Vec<u8> {
    let mut v = r.subject.raw().to_vec();
    v.extend_from_slice(&r.descriptor);
    v
}

/// Make a repository's stored attachments `has` (they were `had`); returns how many entries
/// changed.
fn write_attachments(
    untagged: &mut Table<(&str, &[u8; 32]), ()>,
    signatures: &mut Table<(&str, &[u8; 32]), &[u8]>,
    repo: &str,
    had: &Attachments,
    has: &Attachments,
) -> Result<u32, StoreError> {
    let mut changed = 0;
    for d in had.untagged.difference(&has.untagged) {
        untagged.remove((repo, &d.raw()))?;
        changed += 1;
    }
    for d in has.untagged.difference(&had.untagged) {
        untagged.insert((repo, &d.raw()), ())?;
        changed += 1;
    }
    for d in had.signatures.keys().filter(|d| !has.signatures.contains_key(*d)) {
        signatures.remove((repo, &d.raw()))?;
        changed += 1;
    }
    for (d, sigs) in &has.signatures {
        if had.signatures.get(d) != Some(sigs) {
            if sigs.is_empty() {
                signatures.remove((repo, &d.raw()))?;
            } else {
                signatures.insert((repo, &d.raw()), encode_signatures(sigs).as_slice())?;
            }
            changed += 1;
        }
    }
    Ok(changed)
}

/// Index the subjects of every stored manifest and each repository's referrers (the schema 5
/// migration). Returns how many referrer rows it wrote.
pub(super) fn index_subjects(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut subjects = std::collections::HashMap::new();
    {
        let records = txn.open_table(MANIFESTS)?;
        let mut table = txn.open_table(SUBJECTS)?;
        for row in txn.open_table(MANIFEST_BYTES)?.iter()? {
            let (k, v) = row?;
            let key = *k.value();
            let Some(rec) = records.get(&key)? else { continue };
            let media_type = StoredManifest::decode(rec.value())?.media_type;
            let bytes = super::records::unpack_manifest(v.value())?;
            if let Some(r) = Referrer::of(&bytes, &media_type) {
                table.insert(&key, subject_record(&r).as_slice())?;
                subjects.insert(key, r.subject.raw());
            }
        }
    }
    let mut n = 0;
    if !subjects.is_empty() {
        let mut referrers = txn.open_table(REFERRERS)?;
        for row in txn.open_table(REPO_CONTENT)?.iter()? {
            let (k, _) = row?;
            let (repo, d) = k.value();
            if let Some(subject) = subjects.get(d) {
                referrers.insert((repo, subject, d), ())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Build reference counts and the released index from `repo_content` and `blobs` (the
/// schema 3 migration, on the schema 3 tables).
pub(super) fn index_references(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut refs = txn.open_table(v3::REFS)?;
    let mut released = txn.open_table(v3::RELEASED)?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for row in txn.open_table(v3::REPO_CONTENT)?.iter()? {
        *counts.entry(row?.0.value().1.to_owned()).or_default() += 1;
    }
    for (d, n) in counts {
        refs.insert(d.as_str(), n)?;
    }
    for row in txn.open_table(v3::BLOBS)?.iter()? {
        let (k, v) = row?;
        if let Some(r) = StoredBlob::from_json(v.value(), 0)?.released {
            released.insert((r.at_ms, k.value()), ())?;
        }
    }
    Ok(())
}

/// Move schema 3's tables to schema 4's: digests as 32-byte keys, compact records, the
/// reference count inside the pool file's record. The old tables are deleted.
pub(super) fn compact_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let key = |table: &str, d: &str| {
        d.parse::<Digest>()
            .map(|d| d.raw())
            .map_err(|_| StoreError::Corrupt(format!("{table}: bad key {d:?}")))
    };
    {
        let refs = txn.open_table(v3::REFS)?;
        let mut pool = txn.open_table(POOL)?;
        for row in txn.open_table(v3::BLOBS)?.iter()? {
            let (k, v) = row?;
            let n = refs.get(k.value())?.map(|v| v.value()).unwrap_or(0);
            let rec = StoredBlob::from_json(v.value(), n)?;
            pool.insert(&key("blobs", k.value())?, rec.encode().as_slice())?;
        }
        let mut released = txn.open_table(RELEASED)?;
        for row in txn.open_table(v3::RELEASED)?.iter()? {
            let (k, _) = row?;
            let (at, d) = k.value();
            released.insert((at, &key("released", d)?), ())?;
        }
        let mut content = txn.open_table(REPO_CONTENT)?;
        for row in txn.open_table(v3::REPO_CONTENT)?.iter()? {
            let (k, v) = row?;
            let (repo, d) = k.value();
            content.insert((repo, &key("repo_content", d)?), v.value())?;
        }
        let mut manifests = txn.open_table(MANIFESTS)?;
        for row in txn.open_table(v3::MANIFESTS)?.iter()? {
            let (k, v) = row?;
            let rec = StoredManifest::from_json(v.value())?;
            manifests.insert(&key("manifests", k.value())?, rec.encode().as_slice())?;
        }
        let mut bytes = txn.open_table(MANIFEST_BYTES)?;
        for row in txn.open_table(v3::MANIFEST_BYTES)?.iter()? {
            let (k, v) = row?;
            bytes
                .insert(&key("manifest_bytes", k.value())?, pack_manifest(v.value()).as_slice())?;
        }
    }
    txn.delete_table(v3::BLOBS)?;
    txn.delete_table(v3::REFS)?;
    txn.delete_table(v3::RELEASED)?;
    txn.delete_table(v3::REPO_CONTENT)?;
    txn.delete_table(v3::MANIFESTS)?;
    txn.delete_table(v3::MANIFEST_BYTES)?;
    Ok(())
}

/// Add `digest` and everything it references to `reach` (digest -> size).
fn reach_from(
    manifests: &Table<&[u8; 32], &[u8]>,
    digest: [u8; 32],
    reach: &mut BTreeMap<[u8; 32], u64>,
) -> Result<(), StoreError> {
    let mut todo = vec![digest];
    let mut seen = BTreeSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d) {
            continue;
        }
        let rec = manifests.get(&d)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "manifest {:?} referenced but not stored",
                Digest::from_sha256(&d)
            ))
        })?;
        let StoredManifest { size, children, blobs, .. } = StoredManifest::decode(rec.value())?;
        reach.insert(d, size);
        for b in blobs {
            reach.insert(b.digest.raw(), b.size);
        }
        todo.extend(children.into_iter().map(|c| c.digest.raw()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// An image manifest over `layers` (and its own bytes), for `arch`.
    fn image(layers: &[&str], arch: &str) -> NewManifest {
        let bytes = format!("manifest {layers:?} {arch}").into_bytes();
        NewManifest {
            digest: Digest::of(&bytes),
            media_type: crate::model::media_type::OCI_MANIFEST.into(),
            children: Vec::new(),
            blobs: layers
                .iter()
                .map(|l| BlobRef { digest: Digest::of(l.as_bytes()), size: l.len() as u64 })
                .collect(),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: None,
            }),
            bytes,
        }
    }

    fn layer(l: &str) -> (Digest, u64) {
        (Digest::of(l.as_bytes()), l.len() as u64)
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        now: DateTime<Utc>,
        /// The facts kept up to date by patching, as the server does.
        facts: std::sync::Mutex<crate::store::PoolFacts>,
    }

    type View = (
        Generation,
        u64,
        Vec<(Digest, u64, Generation, BTreeMap<String, Generation>)>,
        BTreeMap<RepoName, Vec<Digest>>,
    );

    /// What selection can observe of facts.
    fn view(f: &crate::store::PoolFacts) -> View {
        let blobs = f.iter().map(|(d, b)| (d, b.size, b.first_seen, f.sets_of(b))).collect();
        let repos = f
            .repo_names()
            .map(|r| (r.clone(), f.repo_content(r).map(|(d, _)| d).collect()))
            .collect();
        (f.generation, f.pool_bytes, blobs, repos)
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("w.redb")).unwrap();
            let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
            Fixture { _dir: dir, store, now, facts: Default::default() }
        }

        /// Commit `repos` (tag -> manifest) with `manifests` and their layers staged.
        async fn commit(
            &self,
            repos: &[(&str, &[(&str, &NewManifest)])],
            staged: &[&NewManifest],
            hours_later: i64,
        ) -> CommitOutcome {
            self.commit_with(repos, staged, &BTreeMap::new(), hours_later).await
        }

        /// [`Self::commit`] with attachments.
        async fn commit_with(
            &self,
            repos: &[(&str, &[(&str, &NewManifest)])],
            staged: &[&NewManifest],
            attachments: &BTreeMap<RepoName, Attachments>,
            hours_later: i64,
        ) -> CommitOutcome {
            let blobs = staged
                .iter()
                .flat_map(|m| m.blobs.iter().map(|b| (b.digest.clone(), b.size)))
                .collect();
            let c = SyncCommit {
                repos: repos
                    .iter()
                    .map(|(r, tags)| {
                        let tags = tags.iter().map(|(t, m)| (t.parse().unwrap(), m.digest.clone()));
                        (r.parse().unwrap(), tags.collect())
                    })
                    .collect(),
                removed_repos: Vec::new(),
                manifests: staged.iter().map(|m| (*m).clone()).collect(),
                blobs,
                attachments: attachments.clone(),
                now: self.now + chrono::Duration::hours(hours_later),
                grace: chrono::Duration::hours(24),
            };
            let out = self.store.commit_sync(c).await.unwrap();
            // Patching the facts the commit started from gives what a full read gives.
            let fresh = self.store.pool_facts().await.unwrap();
            let mut kept = self.facts.lock().unwrap();
            if let Some(delta) = &out.delta {
                assert_eq!(kept.generation, out.generation_before);
                let patched = kept.patched(out.generation, delta, &out.collected);
                // Staged records nothing references are only in a full read.
                let referenced = |v: View| {
                    let reached: BTreeSet<Digest> = v.3.values().flatten().cloned().collect();
                    let blobs =
                        v.2.into_iter().filter(|b| reached.contains(&b.0)).collect::<Vec<_>>();
                    (v.0, blobs, v.3)
                };
                assert_eq!(referenced(view(&patched)), referenced(view(&fresh)));
            }
            *kept = fresh;
            out
        }

        async fn released(&self) -> BTreeSet<Digest> {
            let records = self.store.pool_records().await.unwrap();
            records.into_iter().filter(|r| r.released).map(|r| r.digest).collect()
        }
    }

    #[tokio::test]
    async fn the_generation_moves_exactly_when_the_tree_changes() {
        let f = Fixture::new();
        let a = image(&["base", "a"], "amd64");
        let out = f.commit(&[("r", &[("v1", &a)])], &[&a], 0).await;
        assert_eq!((out.generation_before, out.generation), (0, 1));
        assert_eq!(out.changed_repos().count(), 1);
        // The same tags again: nothing changes, not even the number.
        let out = f.commit(&[("r", &[("v1", &a)])], &[], 1).await;
        assert_eq!((out.generation, out.changed_repos().count()), (1, 0));
        assert!(f.released().await.is_empty());
        // A moved tag is a new generation; its first-seen content belongs to it.
        let b = image(&["base", "b"], "amd64");
        let out = f.commit(&[("r", &[("v1", &b)])], &[&b], 2).await;
        assert_eq!(out.generation, 2);
        let facts = f.store.pool_facts().await.unwrap();
        let (shared, new) = (layer("base").0, layer("b").0);
        assert_eq!(facts.get(&shared).unwrap().first_seen, 1);
        assert_eq!(facts.get(&new).unwrap().first_seen, 2);
        // `a`'s own layer and manifest are released, the shared base is not.
        let released = f.released().await;
        assert_eq!(released, BTreeSet::from([a.digest.clone(), layer("a").0]));
    }

    #[tokio::test]
    async fn a_blob_is_collected_only_when_no_repository_reaches_it_for_the_whole_grace() {
        let f = Fixture::new();
        let a = image(&["base", "a"], "amd64");
        let b = image(&["base", "b"], "amd64");
        f.commit(&[("r", &[("v1", &a)]), ("s", &[("v1", &b)])], &[&a, &b], 0).await;
        // `r` goes: `a`'s content is released; `base` is still reached by `s`.
        let out = f.commit(&[("r", &[])], &[], 1).await;
        assert_eq!((out.generation, out.collected.len()), (2, 0));
        assert!(!f.released().await.contains(&layer("base").0));
        // Within the grace nothing is collected.
        let out = f.commit(&[("s", &[("v1", &b)])], &[], 24).await;
        assert_eq!((out.generation, out.collected.len()), (2, 0));
        // After it, what was released is, and the generation moves.
        let out = f.commit(&[("s", &[("v1", &b)])], &[], 26).await;
        let collected: BTreeSet<Digest> = out.collected.into_iter().collect();
        assert_eq!(collected, BTreeSet::from([a.digest.clone(), layer("a").0]));
        assert_eq!(out.generation, 3);
        assert!(f.store.pool_facts().await.unwrap().get(&layer("a").0).is_none());
        assert!(f.store.known_manifests(vec![a.digest.clone()]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_released_blob_referenced_again_is_never_collected() {
        let f = Fixture::new();
        let a = image(&["a"], "amd64");
        f.commit(&[("r", &[("v1", &a)])], &[&a], 0).await;
        f.commit(&[("r", &[])], &[], 1).await;
        assert!(f.released().await.contains(&layer("a").0));
        // Another repository reaches it before the grace is over.
        let out = f.commit(&[("s", &[("v1", &a)])], &[], 2).await;
        assert_eq!(out.generation, 3);
        assert!(f.released().await.is_empty());
        let out = f.commit(&[("s", &[("v1", &a)])], &[], 100).await;
        assert!(out.collected.is_empty(), "{:?}", out.collected);
    }

    #[tokio::test]
    async fn staged_content_no_tag_references_is_collected_after_the_grace() {
        let f = Fixture::new();
        let a = image(&["a"], "amd64");
        // A run that staged `a` (its tag then failed, or the run was cut off).
        f.store.stage(vec![a.clone()], vec![layer("a")], f.now).await.unwrap();
        let out = f.commit(&[], &[], 1).await;
        assert_eq!((out.generation, out.collected.len()), (0, 0));
        assert_eq!(f.released().await.len(), 2);
        let out = f.commit(&[], &[], 25).await;
        assert_eq!(out.collected.len(), 2);
        assert_eq!(out.generation, 1, "collecting changes the tree");
    }

    #[tokio::test]
    async fn a_content_set_carries_a_shared_blob_from_the_generation_it_gained_it() {
        let f = Fixture::new();
        let amd = image(&["base", "x"], "amd64");
        f.commit(&[("r", &[("amd", &amd)])], &[&amd], 0).await;
        let arm = image(&["base", "y"], "arm64");
        f.commit(&[("r", &[("amd", &amd), ("arm", &arm)])], &[&arm], 1).await;
        let facts = f.store.pool_facts().await.unwrap();
        let base = facts.get(&layer("base").0).unwrap();
        assert_eq!(
            facts.sets_of(base),
            BTreeMap::from([("amd64".to_owned(), 1), ("arm64".to_owned(), 2)])
        );
    }

    /// An artifact manifest naming `subject`, of `artifact_type`, with one layer.
    fn referrer(subject: &NewManifest, artifact_type: &str, layer: &str) -> NewManifest {
        let l = Digest::of(layer.as_bytes());
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{l}","size":2}},"layers":[{{"mediaType":"{artifact_type}","digest":"{l}","size":{}}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}}}"#,
            layer.len(),
            subject.digest
        )
        .into_bytes();
        NewManifest {
            digest: Digest::of(&bytes),
            media_type: crate::model::media_type::OCI_MANIFEST.into(),
            children: Vec::new(),
            blobs: vec![BlobRef { digest: l, size: layer.len() as u64 }],
            platform: None,
            bytes,
        }
    }

    async fn referrer_digests(f: &Fixture, repo: &str, subject: &NewManifest) -> Vec<Digest> {
        let page = f
            .store
            .referrers(&repo.parse().unwrap(), &subject.digest, None, None, 100, 1 << 20)
            .await
            .unwrap();
        let crate::store::Lookup::Found(page) = page else { panic!("repo unknown") };
        page.descriptors
            .iter()
            .map(|d| {
                let v: serde_json::Value = serde_json::from_slice(d).unwrap();
                v["digest"].as_str().unwrap().parse().unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn attachments_are_reached_listed_by_subject_and_released_when_they_go() {
        let f = Fixture::new();
        let img = image(&["base", "a"], "amd64");
        let sbom = referrer(&img, "application/spdx+json", "sbom");
        let sig = referrer(&img, crate::model::attachment::artifact_type::COSIGN_SIGNATURE, "sig");
        let lookaside = layer("a simple-signing signature");
        f.store
            .stage(
                vec![sbom.clone(), sig.clone()],
                vec![layer("sbom"), layer("sig"), lookaside.clone()],
                f.now,
            )
            .await
            .unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let both = Attachments {
            untagged: BTreeSet::from([sbom.digest.clone(), sig.digest.clone()]),
            signatures: BTreeMap::from([(img.digest.clone(), vec![lookaside.clone()])]),
        };
        let out = f
            .commit_with(
                &[("r", &[("v1", &img)])],
                &[&img],
                &BTreeMap::from([(repo.clone(), both.clone())]),
                0,
            )
            .await;
        assert_eq!(out.generation, 1);
        let mut want = vec![sbom.digest.clone(), sig.digest.clone()];
        want.sort();
        assert_eq!(referrer_digests(&f, "r", &img).await, want);
        // The repository serves them: untagged manifests, their layers, the signature file;
        // the signature is in every content set.
        let facts = f.store.pool_facts().await.unwrap();
        let content: BTreeSet<Digest> = facts.repo_content(&repo).map(|(d, _)| d).collect();
        for d in [&sbom.digest, &sig.digest, &layer("sbom").0, &lookaside.0] {
            assert!(content.contains(d), "{d:?}");
        }
        assert!(facts.in_set(facts.get(&lookaside.0).unwrap(), "arm64"));
        assert_eq!(f.store.attachments(&repo).await.unwrap(), both);
        let layouts = f.store.layouts(Some(vec![repo.clone()])).await.unwrap();
        assert_eq!(layouts[0].untagged.len(), 2);
        assert_eq!(layouts[0].signatures, vec![(img.digest.clone(), vec![lookaside.0.clone()])]);
        // The same again: nothing changes, not even the generation.
        let out = f
            .commit_with(
                &[("r", &[("v1", &img)])],
                &[],
                &BTreeMap::from([(repo.clone(), both.clone())]),
                1,
            )
            .await;
        assert_eq!((out.generation, out.changed_repos().count()), (1, 0));
        // Not named: kept as it is.
        let out = f.commit(&[("r", &[("v1", &img)])], &[], 2).await;
        assert_eq!(out.generation, 1);
        assert_eq!(f.store.attachments(&repo).await.unwrap(), both);
        // The SBOM and the signature file go: a new generation, released, no longer listed.
        let only_sig = Attachments {
            untagged: BTreeSet::from([sig.digest.clone()]),
            ..Attachments::default()
        };
        let out = f
            .commit_with(
                &[("r", &[("v1", &img)])],
                &[],
                &BTreeMap::from([(repo.clone(), only_sig)]),
                3,
            )
            .await;
        assert_eq!(out.generation, 2);
        assert_eq!(out.diffs[&repo].attachments, 2);
        assert_eq!(referrer_digests(&f, "r", &img).await, vec![sig.digest.clone()]);
        let released = f.released().await;
        for d in [&sbom.digest, &layer("sbom").0, &lookaside.0] {
            assert!(released.contains(d), "{d:?}");
        }
        // After the grace they are collected, and so is the subject index entry.
        f.commit(&[("r", &[("v1", &img)])], &[], 30).await;
        assert!(f.store.known_manifests(vec![sbom.digest.clone()]).await.unwrap().is_empty());
        // The repository goes: everything attached goes with it.
        f.commit(&[("r", &[])], &[], 31).await;
        assert_eq!(f.store.attachments(&repo).await.unwrap(), Attachments::default());
        let gone = f.store.referrers(&repo, &img.digest, None, None, 10, 1 << 20).await.unwrap();
        assert!(matches!(gone, crate::store::Lookup::NameUnknown));
    }

    #[tokio::test]
    async fn referrers_come_in_pages_and_filter_by_artifact_type() {
        let f = Fixture::new();
        let img = image(&["base"], "amd64");
        let refs: Vec<NewManifest> = (0..5)
            .map(|i| {
                referrer(
                    &img,
                    if i % 2 == 0 { "application/spdx+json" } else { "text/x-note" },
                    &format!("l{i}"),
                )
            })
            .collect();
        let blobs = (0..5).map(|i| layer(&format!("l{i}"))).collect();
        f.store.stage(refs.clone(), blobs, f.now).await.unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let a = Attachments {
            untagged: refs.iter().map(|r| r.digest.clone()).collect(),
            ..Attachments::default()
        };
        f.commit_with(&[("r", &[("v1", &img)])], &[&img], &BTreeMap::from([(repo.clone(), a)]), 0)
            .await;
        let page = |after: Option<Digest>, t: Option<&str>| {
            let (store, repo, img) = (f.store.clone(), repo.clone(), img.digest.clone());
            let t = t.map(str::to_owned);
            async move {
                match store.referrers(&repo, &img, after, t, 2, 1 << 20).await.unwrap() {
                    crate::store::Lookup::Found(p) => p,
                    _ => panic!(),
                }
            }
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = page(after.clone(), None).await;
            assert!(p.descriptors.len() <= 2);
            seen.extend(p.descriptors);
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        let sboms = page(None, Some("application/spdx+json")).await;
        assert_eq!(sboms.descriptors.len(), 2);
        let rest = page(sboms.next.clone(), Some("application/spdx+json")).await;
        assert_eq!((rest.descriptors.len(), rest.next), (1, None));
        // A digest nothing refers to: an empty page, not an unknown.
        let none =
            f.store.referrers(&repo, &Digest::of(b"x"), None, None, 2, 1 << 20).await.unwrap();
        assert!(matches!(none, crate::store::Lookup::Found(p) if p.descriptors.is_empty()));
    }
}
