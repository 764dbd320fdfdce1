//! What blob selection and the crawler need to know about the pool, read in one snapshot:
//! each pool file's size, the generation it appeared in, since which generation each content
//! set carries it, and which repositories reach it.
//!
//! [`PoolFacts`] is compact on purpose (a million pool files fit in well under 100 MB): pool
//! files are a sorted array of 32-byte hashes with a parallel array of facts, content sets
//! are small interned ids, and a repository's content is a sorted array of indexes into the
//! pool. Lookups are binary searches; nothing per request allocates.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::model::{ContentSet, Digest, Generation, RepoName, media_type};

use super::records::{StoredBlob, StoredManifest};
use super::tables::*;
use super::{Store, StoreError};

/// The content-set key of blobs every set carries (indexes, images without a platform, and
/// blobs such images share).
pub const EVERY_SET: &str = "*";

/// A content set's index in [`PoolFacts`]'s name table.
type SetId = u16;

/// The content sets carrying a blob, each with the generation from which it does. Almost
/// every blob is in exactly one set: that case needs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SetList {
    One([(SetId, Generation); 1]),
    Many(Box<[(SetId, Generation)]>),
}

impl SetList {
    /// Intern `sets`' names in `names` (where [`EVERY_SET`] is always id 0).
    fn of(names: &mut Vec<String>, sets: &BTreeMap<String, Generation>) -> SetList {
        if names.is_empty() {
            names.push(EVERY_SET.to_owned());
        }
        let mut ids: Vec<(SetId, Generation)> = sets
            .iter()
            .map(|(name, g)| {
                let id = match names.iter().position(|n| n == name) {
                    Some(i) => i as SetId,
                    // Architectures are a handful; should an upstream invent thousands, the
                    // rest count as carried by every set (never as carried by none).
                    None if names.len() >= usize::from(SetId::MAX) => 0,
                    None => {
                        names.push(name.clone());
                        (names.len() - 1) as SetId
                    }
                };
                (id, *g)
            })
            .collect();
        ids.sort_unstable();
        match ids.as_slice() {
            [one] => SetList::One([*one]),
            _ => SetList::Many(ids.into_boxed_slice()),
        }
    }

    fn entries(&self) -> &[(SetId, Generation)] {
        match self {
            SetList::One(one) => one,
            SetList::Many(v) => v,
        }
    }
}

/// A pool file as selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFacts {
    pub size: u64,
    pub first_seen: Generation,
    sets: SetList,
}

/// The pool and the repositories' content at one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolFacts {
    pub generation: Generation,
    /// Every pool file's size summed: what a full mirror holds.
    pub pool_bytes: u64,
    /// Sorted; `blobs[i]` are the facts of `digests[i]`.
    digests: Vec<[u8; 32]>,
    blobs: Vec<BlobFacts>,
    /// Content-set names; a [`SetId`] indexes this.
    set_names: Vec<String>,
    /// repository -> sorted indexes into `digests` of what its tags reach.
    repos: HashMap<RepoName, Box<[u32]>>,
    /// generation -> indexes of the blobs some content set carries from that generation on
    /// (what a crawl of a mirror claiming it samples first), ascending.
    new_in: BTreeMap<Generation, Vec<u32>>,
}

/// Builds a [`PoolFacts`] from pool files and repository contents in any order.
#[derive(Default)]
pub struct PoolFactsBuilder {
    generation: Generation,
    rows: Vec<([u8; 32], BlobFacts)>,
    set_names: Vec<String>,
    repos: HashMap<RepoName, Vec<[u8; 32]>>,
}

impl PoolFactsBuilder {
    pub fn new(generation: Generation) -> PoolFactsBuilder {
        PoolFactsBuilder { generation, ..PoolFactsBuilder::default() }
    }

    /// A pool file with its content sets (set name -> since which generation).
    pub fn blob(
        &mut self,
        digest: &Digest,
        size: u64,
        first_seen: Generation,
        sets: &BTreeMap<String, Generation>,
    ) {
        let sets = SetList::of(&mut self.set_names, sets);
        self.rows.push((digest.raw(), BlobFacts { size, first_seen, sets }));
    }

    /// `digest` is reached by `repo`'s tags.
    pub fn reaches(&mut self, repo: &RepoName, digest: &Digest) {
        match self.repos.get_mut(repo) {
            Some(v) => v.push(digest.raw()),
            None => {
                self.repos.insert(repo.clone(), vec![digest.raw()]);
            }
        }
    }

    pub fn build(self) -> PoolFacts {
        let mut rows = self.rows;
        if !rows.is_sorted_by(|a, b| a.0 <= b.0) {
            rows.sort_unstable_by_key(|a| a.0);
        }
        rows.dedup_by(|a, b| a.0 == b.0);
        let (digests, blobs): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        let repos = self
            .repos
            .into_iter()
            .map(|(repo, raws)| {
                let idx = indexes(&digests, raws.iter());
                (repo, idx)
            })
            .collect();
        PoolFacts::assemble(self.generation, digests, blobs, self.set_names, repos)
    }
}

/// The sorted, distinct positions in `digests` of those of `raws` it has.
fn indexes<'a>(digests: &[[u8; 32]], raws: impl Iterator<Item = &'a [u8; 32]>) -> Box<[u32]> {
    let mut idx: Vec<u32> =
        raws.filter_map(|r| digests.binary_search(r).ok().map(|i| i as u32)).collect();
    idx.sort_unstable();
    idx.dedup();
    idx.into_boxed_slice()
}

/// [`PoolFacts`] as bytes: what a primary ships to a read replica, loaded whole on the other
/// side. A layout byte, then postcard; the index by generation is rebuilt, not shipped.
#[derive(serde::Serialize, serde::Deserialize)]
struct FactsWire {
    generation: Generation,
    digests: Vec<[u8; 32]>,
    blobs: Vec<BlobWire>,
    set_names: Vec<String>,
    repos: Vec<(String, Vec<u32>)>,
}

/// (size, first seen, [(set id, since)]) of one digest.
type BlobWire = (u64, Generation, Vec<(SetId, Generation)>);

const FACTS_LAYOUT: u8 = 1;

impl PoolFacts {
    /// These facts as bytes, for [`PoolFacts::decode`] (about 45 bytes a pool file).
    pub fn encode(&self) -> Vec<u8> {
        let mut repos: Vec<(String, Vec<u32>)> =
            self.repos.iter().map(|(r, idx)| (r.to_string(), idx.to_vec())).collect();
        repos.sort_unstable();
        let wire = FactsWire {
            generation: self.generation,
            digests: self.digests.clone(),
            blobs: self
                .blobs
                .iter()
                .map(|b| (b.size, b.first_seen, b.sets.entries().to_vec()))
                .collect(),
            set_names: self.set_names.clone(),
            repos,
        };
        postcard::to_extend(&wire, vec![FACTS_LAYOUT]).expect("facts always serialize")
    }

    /// Facts written by [`PoolFacts::encode`], checked as anything from outside the process
    /// is: sorted distinct digests, set ids and repository indexes in range, valid names.
    pub fn decode(bytes: &[u8]) -> Result<PoolFacts, StoreError> {
        let bad = |why: String| StoreError::Corrupt(format!("pool facts: {why}"));
        let w: FactsWire = match bytes.split_first() {
            Some((&FACTS_LAYOUT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| bad(e.to_string()))?
            }
            _ => return Err(bad("unknown layout".into())),
        };
        if w.blobs.len() != w.digests.len() {
            return Err(bad("as many facts as digests expected".into()));
        }
        if !w.digests.is_sorted_by(|a, b| a < b) {
            return Err(bad("digests not sorted or not distinct".into()));
        }
        if w.set_names.first().is_some_and(|n| n != EVERY_SET) || w.set_names.len() > 1 << 16 {
            return Err(bad("bad content-set names".into()));
        }
        let mut blobs = Vec::with_capacity(w.blobs.len());
        for (size, first_seen, sets) in w.blobs {
            if sets.iter().any(|(id, _)| *id as usize >= w.set_names.len()) {
                return Err(bad("content-set id out of range".into()));
            }
            let sets = match <[_; 1]>::try_from(sets) {
                Ok(one) => SetList::One(one),
                Err(many) => SetList::Many(many.into_boxed_slice()),
            };
            blobs.push(BlobFacts { size, first_seen, sets });
        }
        let mut repos = HashMap::with_capacity(w.repos.len());
        for (name, idx) in w.repos {
            let repo: RepoName = name.parse().map_err(|_| bad(format!("repository {name:?}")))?;
            let in_range = idx.last().is_none_or(|&i| (i as usize) < w.digests.len());
            if !in_range || !idx.is_sorted_by(|a, b| a < b) {
                return Err(bad(format!("content of {repo}")));
            }
            repos.insert(repo, idx.into_boxed_slice());
        }
        Ok(PoolFacts::assemble(w.generation, w.digests, blobs, w.set_names, repos))
    }
}

/// Where the current content facts are read (the server's selection snapshot, kept up to
/// date by every sync): the crawler and the publication read them instead of the store.
pub type ContentSource = std::sync::Arc<dyn Fn() -> std::sync::Arc<PoolFacts> + Send + Sync>;

/// How a repository-scoped lookup of a blob came out.
pub enum BlobLookup<'a> {
    Found(&'a BlobFacts),
    NameUnknown,
    BlobUnknown,
}

impl PoolFacts {
    fn assemble(
        generation: Generation,
        digests: Vec<[u8; 32]>,
        blobs: Vec<BlobFacts>,
        set_names: Vec<String>,
        repos: HashMap<RepoName, Box<[u32]>>,
    ) -> PoolFacts {
        let mut new_in: BTreeMap<Generation, Vec<u32>> = BTreeMap::new();
        let mut pool_bytes = 0u64;
        for (i, facts) in blobs.iter().enumerate() {
            pool_bytes = pool_bytes.saturating_add(facts.size);
            let mut gens: Vec<Generation> = facts.sets.entries().iter().map(|(_, g)| *g).collect();
            gens.sort_unstable();
            gens.dedup();
            for g in gens {
                new_in.entry(g).or_default().push(i as u32);
            }
        }
        PoolFacts { generation, pool_bytes, digests, blobs, set_names, repos, new_in }
    }

    /// These facts with a commit's changes applied: the facts of `generation`, given these
    /// are those of the generation the commit started from. Costs one pass over the arrays
    /// in memory, not a read of the store.
    pub fn patched(
        &self,
        generation: Generation,
        delta: &super::FactsDelta,
        collected: &[Digest],
    ) -> PoolFacts {
        let mut set_names = self.set_names.clone();
        let mut changed: Vec<([u8; 32], BlobFacts)> = delta
            .blobs
            .iter()
            .map(|(d, size, first_seen, sets)| {
                let sets = SetList::of(&mut set_names, sets);
                (d.raw(), BlobFacts { size: *size, first_seen: *first_seen, sets })
            })
            .collect();
        changed.sort_unstable_by_key(|c| c.0);
        let gone: std::collections::HashSet<[u8; 32]> = collected.iter().map(Digest::raw).collect();
        // Merge the sorted old pool with the sorted changes, dropping what was collected;
        // remember where each old entry went.
        let n = self.digests.len() + changed.len();
        let (mut digests, mut blobs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut moved = vec![u32::MAX; self.digests.len()];
        let mut changed = changed.into_iter().peekable();
        for (i, raw) in self.digests.iter().enumerate() {
            while let Some((c, _)) = changed.peek().filter(|(c, _)| c < raw) {
                let c = *c;
                let (_, f) = changed.next().expect("peeked");
                if !gone.contains(&c) {
                    digests.push(c);
                    blobs.push(f);
                }
            }
            let facts = match changed.peek() {
                Some((c, _)) if c == raw => changed.next().expect("peeked").1,
                _ => self.blobs[i].clone(),
            };
            if !gone.contains(raw) {
                moved[i] = digests.len() as u32;
                digests.push(*raw);
                blobs.push(facts);
            }
        }
        for (c, f) in changed {
            if !gone.contains(&c) {
                digests.push(c);
                blobs.push(f);
            }
        }
        let mut repos: HashMap<RepoName, Box<[u32]>> = self
            .repos
            .iter()
            .map(|(r, idx)| {
                let idx = idx.iter().map(|&i| moved[i as usize]).filter(|&i| i != u32::MAX);
                (r.clone(), idx.collect())
            })
            .collect();
        for (repo, content) in &delta.repos {
            if content.is_empty() {
                repos.remove(repo);
            } else {
                let raws: Vec<[u8; 32]> = content.iter().map(Digest::raw).collect();
                repos.insert(repo.clone(), indexes(&digests, raws.iter()));
            }
        }
        PoolFacts::assemble(generation, digests, blobs, set_names, repos)
    }

    fn index_of(&self, digest: &Digest) -> Option<usize> {
        self.digests.binary_search(&digest.raw()).ok()
    }

    /// The number of pool files.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// A pool file's facts.
    pub fn get(&self, digest: &Digest) -> Option<&BlobFacts> {
        self.index_of(digest).map(|i| &self.blobs[i])
    }

    /// The blob, if the repository's tags reach it.
    pub fn lookup(&self, repo: &RepoName, digest: &Digest) -> BlobLookup<'_> {
        let Some(content) = self.repos.get(repo) else { return BlobLookup::NameUnknown };
        match self.index_of(digest) {
            Some(i) if content.binary_search(&(i as u32)).is_ok() => {
                BlobLookup::Found(&self.blobs[i])
            }
            _ => BlobLookup::BlobUnknown,
        }
    }

    pub fn repo_names(&self) -> impl Iterator<Item = &RepoName> {
        self.repos.keys()
    }

    /// What a repository's tags reach.
    pub fn repo_content(&self, repo: &RepoName) -> impl Iterator<Item = (Digest, &BlobFacts)> {
        self.repos.get(repo).into_iter().flatten().map(|&i| self.entry(i as usize))
    }

    /// Every pool file, in digest order.
    pub fn iter(&self) -> impl Iterator<Item = (Digest, &BlobFacts)> {
        (0..self.digests.len()).map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> (Digest, &BlobFacts) {
        (Digest::from_sha256(&self.digests[i]), &self.blobs[i])
    }

    /// The content-set names any pool file is in, [`EVERY_SET`] included.
    pub fn set_names(&self) -> &[String] {
        &self.set_names
    }

    fn name(&self, id: SetId) -> &str {
        self.set_names.get(usize::from(id)).map_or(EVERY_SET, String::as_str)
    }

    /// Since which generation a mirror carrying `content` has this blob.
    pub fn carried_since(&self, blob: &BlobFacts, content: &ContentSet) -> Option<Generation> {
        match content {
            ContentSet::All => Some(blob.first_seen),
            ContentSet::Arches(_) => blob
                .sets
                .entries()
                .iter()
                .filter(|(id, _)| {
                    let k = self.name(*id);
                    k == EVERY_SET || content.contains_arch(k)
                })
                .map(|(_, g)| *g)
                .min(),
        }
    }

    /// Whether the content set named `set` (or every set) carries the blob.
    pub fn in_set(&self, blob: &BlobFacts, set: &str) -> bool {
        blob.sets.entries().iter().any(|(id, _)| {
            let k = self.name(*id);
            k == set || k == EVERY_SET
        })
    }

    /// Content set -> since which generation it carries the blob.
    pub fn sets_of(&self, blob: &BlobFacts) -> BTreeMap<String, Generation> {
        blob.sets.entries().iter().map(|(id, g)| (self.name(*id).to_owned(), *g)).collect()
    }

    /// The positions (see [`Self::nth`]) of the blobs some content set carries from
    /// `generation` on: a superset of what a mirror claiming it got new, found without
    /// looking at any other blob.
    pub fn new_in(&self, generation: Generation) -> &[u32] {
        self.new_in.get(&generation).map_or(&[], Vec::as_slice)
    }

    /// The pool file at position `i` in digest order.
    pub fn nth(&self, i: usize) -> Option<(Digest, &BlobFacts)> {
        (i < self.digests.len()).then(|| self.entry(i))
    }

    /// The facts at position `i`, without building its digest.
    pub fn facts_at(&self, i: usize) -> Option<&BlobFacts> {
        self.blobs.get(i)
    }
}

/// The content sets each digest belongs to now, from the manifests that reference it: an
/// image manifest's architecture, or [`EVERY_SET`] for indexes and platform-less images.
pub(super) fn sets_of_manifest(rec: &StoredManifest) -> (&str, Vec<&Digest>) {
    let StoredManifest { media_type: mt, blobs, platform, .. } = rec;
    let set = match platform {
        Some(p) if !media_type::is_index(mt) => p.architecture.as_str(),
        _ => EVERY_SET,
    };
    (set, blobs.iter().map(|b| &b.digest).collect())
}

impl Store {
    /// Read the pool facts from the store: one pass over `pool` and `repo_content`. Both
    /// come in digest order, so the arrays are filled in place, sized once, and a
    /// repository's content is found by binary search: the memory is the facts' own (about
    /// 80 bytes a pool file), not a builder's copies.
    pub async fn pool_facts(&self) -> Result<PoolFacts, StoreError> {
        self.blocking("pool_facts", |db| {
            let txn = db.begin_read()?;
            let generation =
                txn.open_table(META)?.get(KEY_GENERATION)?.map(|v| v.value()).unwrap_or(0);
            let pool = txn.open_table(POOL)?;
            let n = usize::try_from(pool.len()?).unwrap_or(0);
            let (mut digests, mut blobs) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut set_names = Vec::new();
            for row in pool.iter()? {
                let (k, v) = row?;
                let rec = StoredBlob::decode(v.value())?;
                digests.push(*k.value());
                let sets = SetList::of(&mut set_names, &rec.sets);
                blobs.push(BlobFacts { size: rec.size, first_seen: rec.first_seen, sets });
            }
            let mut repos: HashMap<RepoName, Box<[u32]>> = HashMap::new();
            let mut current: Option<(RepoName, Vec<u32>)> = None;
            for row in txn.open_table(REPO_CONTENT)?.iter()? {
                let (k, _) = row?;
                let (repo, digest) = k.value();
                if current.as_ref().is_none_or(|(r, _)| r.as_str() != repo) {
                    if let Some((r, idx)) = current.take() {
                        repos.insert(r, idx.into_boxed_slice());
                    }
                    let r = repo.parse().map_err(|_| {
                        StoreError::Corrupt(format!("repo_content: bad repository {repo:?}"))
                    })?;
                    current = Some((r, Vec::new()));
                }
                if let (Some((_, idx)), Ok(i)) = (&mut current, digests.binary_search(digest)) {
                    // Keys are sorted by digest within a repository: ascending already.
                    idx.push(i as u32);
                }
            }
            if let Some((r, idx)) = current {
                repos.insert(r, idx.into_boxed_slice());
            }
            Ok(PoolFacts::assemble(generation, digests, blobs, set_names, repos))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PoolFacts {
        let d = |s: &str| Digest::of(s.as_bytes());
        let mut b = PoolFactsBuilder::new(7);
        let sets = |v: &[(&str, Generation)]| -> BTreeMap<String, Generation> {
            v.iter().map(|(n, g)| (n.to_string(), *g)).collect()
        };
        b.blob(&d("base"), 100, 1, &sets(&[("amd64", 1), ("arm64", 3)]));
        b.blob(&d("index"), 10, 2, &sets(&[(EVERY_SET, 2)]));
        b.blob(&d("top"), 5, 7, &sets(&[("arm64", 7)]));
        b.blob(&d("staged"), 1, 8, &BTreeMap::new());
        for (r, blobs) in [("lib/a", &["base", "index"][..]), ("b", &["base", "top"][..])] {
            for x in blobs {
                b.reaches(&r.parse().unwrap(), &d(x));
            }
        }
        b.build()
    }

    #[test]
    fn facts_shipped_as_bytes_load_whole_and_damage_is_refused() {
        let f = facts();
        let bytes = f.encode();
        assert_eq!(PoolFacts::decode(&bytes).unwrap(), f);
        assert_eq!(
            PoolFacts::decode(&PoolFacts::default().encode()).unwrap(),
            PoolFacts::default()
        );
        // Every truncation, and a flipped byte anywhere, is an error or other valid facts,
        // never a panic; a wrong layout byte is an error.
        for cut in 0..bytes.len() {
            assert!(PoolFacts::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        for i in 1..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x55;
            let _ = PoolFacts::decode(&b);
        }
        assert!(PoolFacts::decode(&[9]).is_err());
        // What would break a lookup is refused: unsorted digests, indexes and set ids out of
        // range, bad names.
        let wire = |f: &dyn Fn(&mut FactsWire)| {
            let mut w: FactsWire = postcard::from_bytes(&bytes[1..]).unwrap();
            f(&mut w);
            postcard::to_extend(&w, vec![FACTS_LAYOUT]).unwrap()
        };
        for (what, damage) in [
            ("unsorted", &(|w: &mut FactsWire| w.digests.swap(0, 1)) as &dyn Fn(&mut FactsWire)),
            ("index", &|w: &mut FactsWire| w.repos[0].1.push(99)),
            ("unsorted index", &|w: &mut FactsWire| w.repos[0].1.reverse()),
            ("set id", &|w: &mut FactsWire| w.blobs[0].2.push((40, 1))),
            ("name", &|w: &mut FactsWire| w.repos[0].0 = "Bad Name".into()),
            ("count", &|w: &mut FactsWire| {
                w.blobs.pop();
            }),
            ("every set", &|w: &mut FactsWire| w.set_names[0] = "amd64".into()),
        ] {
            assert!(PoolFacts::decode(&wire(damage)).is_err(), "{what}");
        }
    }
}
