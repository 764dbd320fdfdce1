//! What blob selection and the crawler need to know about the pool, read in one snapshot:
//! each pool file's size, the generation it appeared in, since which generation each content
//! set carries it, and which repositories reach it.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableDatabase, ReadableTable};

use crate::model::{ContentSet, Digest, Generation, RepoName, media_type};

use super::records::{StoredBlob, StoredManifest, decode};
use super::tables::*;
use super::{Store, StoreError};

/// The content-set key of blobs every set carries (indexes, images without a platform, and
/// blobs such images share).
pub const EVERY_SET: &str = "*";

/// A pool file as selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFacts {
    pub size: u64,
    pub first_seen: Generation,
    /// Content set (an architecture, or [`EVERY_SET`]) -> the generation from which that set
    /// carries the blob. Membership only grows: a set that once carried a blob keeps it.
    pub sets: BTreeMap<String, Generation>,
}

impl BlobFacts {
    /// Since which generation a mirror carrying `content` has this blob.
    pub fn carried_since(&self, content: &ContentSet) -> Option<Generation> {
        match content {
            ContentSet::All => Some(self.first_seen),
            ContentSet::Arches(_) => self
                .sets
                .iter()
                .filter(|(k, _)| k.as_str() == EVERY_SET || content.contains_arch(k))
                .map(|(_, g)| *g)
                .min(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PoolFacts {
    pub generation: Generation,
    pub blobs: HashMap<Digest, BlobFacts>,
    /// repository -> the digests its tags reach.
    pub repos: HashMap<RepoName, Vec<Digest>>,
}

/// The content sets each digest belongs to now, from the manifests that reference it: an
/// image manifest's architecture, or [`EVERY_SET`] for indexes and platform-less images.
pub(super) fn current_sets(
    manifests: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let mut sets: HashMap<String, Vec<String>> = HashMap::new();
    let mut add = |d: &str, set: &str| {
        let entry = sets.entry(d.to_owned()).or_default();
        if !entry.iter().any(|s| s == set) {
            entry.push(set.to_owned());
        }
    };
    for row in manifests.iter()? {
        let (k, v) = row?;
        let StoredManifest::V1 { media_type: mt, blobs, platform, .. } =
            decode("manifests", v.value())?;
        let set = match &platform {
            Some(p) if !media_type::is_index(&mt) => p.architecture.as_str(),
            _ => EVERY_SET,
        };
        add(k.value(), set);
        for b in &blobs {
            add(b.digest.as_str(), set);
        }
    }
    Ok(sets)
}

impl Store {
    pub async fn pool_facts(&self) -> Result<PoolFacts, StoreError> {
        self.blocking("pool_facts", |db| {
            let txn = db.begin_read()?;
            let generation =
                txn.open_table(META)?.get(KEY_GENERATION)?.map(|v| v.value()).unwrap_or(0);
            let mut blobs = HashMap::new();
            for row in txn.open_table(BLOBS)?.iter()? {
                let (k, v) = row?;
                let StoredBlob::V1 { size, first_seen, sets, .. } = decode("blobs", v.value())?;
                let digest: Digest = k
                    .value()
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("blobs: bad key {}", k.value())))?;
                blobs.insert(digest, BlobFacts { size, first_seen, sets });
            }
            let mut repos: HashMap<RepoName, Vec<Digest>> = HashMap::new();
            for row in txn.open_table(REPO_CONTENT)?.iter()? {
                let (k, _) = row?;
                let (repo, digest) = k.value();
                let bad = || StoreError::Corrupt(format!("repo_content: bad key {repo} {digest}"));
                repos
                    .entry(repo.parse().map_err(|_| bad())?)
                    .or_default()
                    .push(digest.parse().map_err(|_| bad())?);
            }
            Ok(PoolFacts { generation, blobs, repos })
        })
        .await
    }
}
