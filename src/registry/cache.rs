//! Manifests as served, kept in memory: a pull asks for the same few manifests over and
//! over, and a store read per request (a blocking task, a read transaction, four B-tree
//! lookups) costs more than the rest of the request. Entries are keyed by the generation,
//! so a sync that changes the tree makes the old ones unreachable (they age out); the
//! cache is bounded by the bytes it holds, and only manifests that exist are cached, so no
//! request can make it grow beyond that bound.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::model::{Generation, Reference, RepoName};
use crate::store::{Lookup, ManifestHit, Store, StoreError};

/// Bytes of manifests kept.
const CAPACITY: u64 = 32 << 20;
/// Per entry besides the manifest's bytes (key, children, bookkeeping).
const OVERHEAD: u64 = 256;

type Key = (Generation, RepoName, String);

#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Arc<ManifestHit>> for ByBytes {
    fn weight(&self, key: &Key, hit: &Arc<ManifestHit>) -> u64 {
        hit.bytes.len() as u64 + key.2.len() as u64 + OVERHEAD
    }
}

pub struct ManifestCache {
    cache: Cache<Key, Arc<ManifestHit>, ByBytes>,
}

impl Default for ManifestCache {
    fn default() -> Self {
        ManifestCache { cache: Cache::with_weighter((CAPACITY / 4096) as usize, CAPACITY, ByBytes) }
    }
}

impl ManifestCache {
    /// The manifest `reference` names in `name` at `generation`: from memory, or read from
    /// the store once.
    pub async fn get(
        &self,
        store: &Store,
        generation: Generation,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<Lookup<Arc<ManifestHit>>, StoreError> {
        let key = match reference {
            Reference::Tag(t) => (generation, name.clone(), t.to_string()),
            Reference::Digest(d) => (generation, name.clone(), d.to_string()),
        };
        if let Some(hit) = self.cache.get(&key) {
            return Ok(Lookup::Found(hit));
        }
        let found = match reference {
            Reference::Tag(t) => store.manifest_by_tag(name, t).await?,
            Reference::Digest(d) => store.manifest_by_digest(name, d).await?,
        };
        Ok(match found {
            Lookup::Found(hit) => {
                let hit = Arc::new(hit);
                self.cache.insert(key, hit.clone());
                Lookup::Found(hit)
            }
            Lookup::NameUnknown => Lookup::NameUnknown,
            Lookup::Unknown => Lookup::Unknown,
        })
    }
}
