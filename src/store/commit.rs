//! Applying a sync: tags, manifests, blob records, repository content sets, generation and
//! garbage collection, all in one write transaction, so readers see either the old tree or
//! the new one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable};

use crate::model::{BlobRef, ChildManifest, Digest, Generation, Platform, RepoName, Tag};

use super::records::{Released, StoredBlob, StoredManifest, StoredRepo, StoredTag, decode, encode};
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
    pub manifests: Vec<NewManifest>,
    /// Pool files written by this run (blobs; manifests are added from `manifests`).
    pub blobs: Vec<(Digest, u64)>,
    pub now: DateTime<Utc>,
    /// How long an unreferenced pool file stays before it is collected.
    pub grace: chrono::Duration,
}

/// How a repository's tags changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagDiff {
    pub added: u32,
    pub moved: u32,
    pub removed: u32,
    pub unchanged: u32,
}

impl TagDiff {
    pub fn changed(&self) -> bool {
        self.added + self.moved + self.removed > 0
    }
}

#[derive(Debug, Clone)]
pub struct CommitOutcome {
    pub generation_before: Generation,
    pub generation: Generation,
    pub diffs: BTreeMap<RepoName, TagDiff>,
    /// Pool files whose records were removed: the caller deletes the files.
    pub collected: Vec<Digest>,
}

impl CommitOutcome {
    pub fn changed(&self) -> bool {
        self.generation != self.generation_before
    }
}

pub(super) fn apply(db: &Database, c: SyncCommit) -> Result<CommitOutcome, StoreError> {
    let txn = db.begin_write()?;
    let outcome = {
        let mut meta = txn.open_table(META)?;
        let mut repos = txn.open_table(REPOS)?;
        let mut tags = txn.open_table(TAGS)?;
        let mut manifests = txn.open_table(MANIFESTS)?;
        let mut manifest_bytes = txn.open_table(MANIFEST_BYTES)?;
        let mut blobs = txn.open_table(BLOBS)?;
        let mut content = txn.open_table(REPO_CONTENT)?;

        let before = meta.get(KEY_GENERATION)?.map(|v| v.value()).unwrap_or(0);
        // Content that becomes visible in this commit belongs to the next generation; if
        // nothing changes it is not visible anywhere new and the number stays.
        let candidate = before + 1;

        let mut new_pool: BTreeMap<Digest, u64> = c.blobs.iter().cloned().collect();
        for m in &c.manifests {
            let rec = StoredManifest::V1 {
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
                children: m.children.clone(),
                blobs: m.blobs.clone(),
                platform: m.platform.clone(),
            };
            manifests.insert(m.digest.as_str(), encode(&rec).as_slice())?;
            manifest_bytes.insert(m.digest.as_str(), m.bytes.as_slice())?;
            new_pool.insert(m.digest.clone(), m.bytes.len() as u64);
        }
        let mut added_to_pool = Vec::new();
        for (digest, size) in &new_pool {
            if blobs.get(digest.as_str())?.is_none() {
                added_to_pool.push((digest.clone(), *size));
            }
        }

        let mut diffs = BTreeMap::new();
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

            // Recompute what the repository reaches.
            let mut stale = Vec::new();
            for row in content.range((repo.as_str(), "")..(repo.as_str(), KEY_END))? {
                stale.push(row?.0.value().1.to_owned());
            }
            for d in stale {
                content.remove((repo.as_str(), d.as_str()))?;
            }
            let mut reach = BTreeMap::new();
            for digest in new_tags.values() {
                reach_from(&manifests, digest, &mut reach)?;
            }
            for (d, size) in &reach {
                content.insert((repo.as_str(), d.as_str()), *size)?;
            }

            let existed = match repos.get(repo.as_str())? {
                Some(v) => Some(decode::<StoredRepo>("repos", v.value())?),
                None => None,
            };
            if new_tags.is_empty() {
                repos.remove(repo.as_str())?;
            } else if diff.changed() || existed.is_none() {
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

        // Which pool files any repository still reaches (digest -> size).
        let mut referenced: HashMap<String, u64> = HashMap::new();
        for row in content.iter()? {
            let (k, v) = row?;
            referenced.insert(k.value().1.to_owned(), v.value());
        }
        let mut collected: Vec<Digest> = Vec::new();
        let mut updates: Vec<(String, StoredBlob)> = Vec::new();
        for row in blobs.iter()? {
            let (k, v) = row?;
            let key = k.value().to_owned();
            let StoredBlob::V1 { size, first_seen, released, sets } = decode("blobs", v.value())?;
            let live = referenced.contains_key(&key);
            match (live, released) {
                (true, Some(_)) => {
                    updates.push((key, StoredBlob::V1 { size, first_seen, released: None, sets }))
                }
                (false, None) => updates.push((
                    key,
                    StoredBlob::V1 {
                        size,
                        first_seen,
                        released: Some(Released { generation: before, at: c.now }),
                        sets,
                    },
                )),
                (false, Some(r)) if expired(r.at, c.grace, c.now) => collected.push(
                    key.parse()
                        .map_err(|_| StoreError::Corrupt(format!("blobs: bad key {key:?}")))?,
                ),
                _ => {}
            }
        }
        for (key, rec) in updates {
            blobs.insert(key.as_str(), encode(&rec).as_slice())?;
        }
        let current = selection::current_sets(&manifests)?;
        for d in &collected {
            blobs.remove(d.as_str())?;
            manifests.remove(d.as_str())?;
            manifest_bytes.remove(d.as_str())?;
        }

        // Pool files referenced now that have no record (left by an interrupted run, say)
        // get one, so they are tracked and eventually collected like any other.
        let known: HashSet<&Digest> = added_to_pool.iter().map(|(d, _)| d).collect();
        let mut adopt = Vec::new();
        for (d, size) in &referenced {
            let digest: Digest = d
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("repo_content: bad key {d:?}")))?;
            if !known.contains(&digest) && blobs.get(d.as_str())?.is_none() {
                adopt.push((digest, *size));
            }
        }
        added_to_pool.extend(adopt);

        let changed = tags_changed || !collected.is_empty();
        let generation = if changed { candidate } else { before };
        for (digest, size) in added_to_pool {
            let released = (!referenced.contains_key(digest.as_str()))
                .then_some(Released { generation, at: c.now });
            let sets = BTreeMap::new();
            let rec = StoredBlob::V1 { size, first_seen: generation, released, sets };
            blobs.insert(digest.as_str(), encode(&rec).as_slice())?;
        }
        // Content sets that carry a blob from now on, from this generation on.
        let mut grown = Vec::new();
        for row in blobs.iter()? {
            let (k, v) = row?;
            let StoredBlob::V1 { size, first_seen, released, mut sets } =
                decode("blobs", v.value())?;
            let mut changed = false;
            for set in current.get(k.value()).into_iter().flatten() {
                if !sets.contains_key(set) {
                    sets.insert(set.clone(), generation.max(first_seen));
                    changed = true;
                }
            }
            if changed {
                grown.push((
                    k.value().to_owned(),
                    StoredBlob::V1 { size, first_seen, released, sets },
                ));
            }
        }
        for (key, rec) in grown {
            blobs.insert(key.as_str(), encode(&rec).as_slice())?;
        }
        meta.insert(KEY_GENERATION, generation)?;
        CommitOutcome { generation_before: before, generation, diffs, collected }
    };
    txn.commit()?;
    Ok(outcome)
}

/// Whether something released at `at` has outlived `grace` at `now`. A grace too long to
/// represent never expires.
pub(super) fn expired(at: DateTime<Utc>, grace: chrono::Duration, now: DateTime<Utc>) -> bool {
    at.checked_add_signed(grace).is_some_and(|t| t <= now)
}

/// Add `digest` and everything it references to `reach` (digest -> size).
fn reach_from(
    manifests: &redb::Table<&str, &[u8]>,
    digest: &Digest,
    reach: &mut BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    let mut todo = vec![digest.clone()];
    let mut seen = BTreeSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let rec = manifests.get(d.as_str())?.ok_or_else(|| {
            StoreError::Corrupt(format!("manifest {d} referenced but not stored"))
        })?;
        let StoredManifest::V1 { size, children, blobs, .. } = decode("manifests", rec.value())?;
        reach.insert(d.as_str().to_owned(), size);
        for b in blobs {
            reach.insert(b.digest.as_str().to_owned(), b.size);
        }
        todo.extend(children.into_iter().map(|c| c.digest));
    }
    Ok(())
}
