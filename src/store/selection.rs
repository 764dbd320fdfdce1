//! What blob selection and the crawler need to know about the pool, read in one snapshot:
//! each pool file's size, the generation it appeared in, the architectures whose content
//! sets carry it, and which repositories reach it.

use std::collections::{BTreeSet, HashMap};

use redb::{ReadableDatabase, ReadableTable};

use crate::model::{Digest, Generation, RepoName};

use super::records::{StoredBlob, StoredManifest, decode};
use super::tables::*;
use super::{Store, StoreError};

/// A pool file as selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFacts {
    pub size: u64,
    pub first_seen: Generation,
    /// The architectures whose content sets carry it; `None`: every set (indexes, images
    /// without a platform, blobs shared with such images).
    pub arches: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct PoolFacts {
    pub generation: Generation,
    pub blobs: HashMap<Digest, BlobFacts>,
    /// repository -> the digests its tags reach.
    pub repos: HashMap<RepoName, Vec<Digest>>,
}

impl Store {
    pub async fn pool_facts(&self) -> Result<PoolFacts, StoreError> {
        self.blocking("pool_facts", |db| {
            let txn = db.begin_read()?;
            let generation =
                txn.open_table(META)?.get(KEY_GENERATION)?.map(|v| v.value()).unwrap_or(0);

            // Architectures per digest, from the image manifests that reference it.
            let mut arches: HashMap<String, Option<BTreeSet<String>>> = HashMap::new();
            let mut add = |d: &str, arch: Option<&str>| {
                let entry = arches.entry(d.to_owned()).or_insert_with(|| Some(BTreeSet::new()));
                match (entry.as_mut(), arch) {
                    (Some(set), Some(a)) => {
                        set.insert(a.to_owned());
                    }
                    (Some(_), None) => *entry = None,
                    (None, _) => {}
                }
            };
            for row in txn.open_table(MANIFESTS)?.iter()? {
                let (k, v) = row?;
                let StoredManifest::V1 { media_type, blobs, platform, .. } =
                    decode("manifests", v.value())?;
                let arch = platform.as_ref().map(|p| p.architecture.as_str());
                let arch =
                    if crate::model::media_type::is_index(&media_type) { None } else { arch };
                add(k.value(), arch);
                for b in &blobs {
                    add(b.digest.as_str(), arch);
                }
            }

            let mut blobs = HashMap::new();
            for row in txn.open_table(BLOBS)?.iter()? {
                let (k, v) = row?;
                let StoredBlob::V1 { size, first_seen, .. } = decode("blobs", v.value())?;
                let digest: Digest = k
                    .value()
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("blobs: bad key {}", k.value())))?;
                let arches = arches.get(k.value()).cloned().unwrap_or(None);
                blobs.insert(digest, BlobFacts { size, first_seen, arches });
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
