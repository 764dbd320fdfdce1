//! What repositories publish besides their tags, as the registry and the sync read it: each
//! subject's referrers (one range read of `referrers`, descriptors from `subjects`), each
//! manifest's simple-signing signatures, a repository's untagged manifests, and the manifests
//! a set of roots reaches (for the sync's referrer discovery).

use std::collections::BTreeSet;

use redb::{ReadableDatabase, ReadableTable};

use crate::model::{Digest, RepoName};

use super::commit::Attachments;
use super::records::StoredManifest;
use super::tables::*;
use super::{Lookup, Store, StoreError};

/// A repository's attachments as stored (in a read or a write transaction).
pub(super) fn read(
    untagged: &impl ReadableTable<(&'static str, &'static [u8; 32]), ()>,
    signatures: &impl ReadableTable<(&'static str, &'static [u8; 32]), &'static [u8]>,
    repo: &str,
) -> Result<Attachments, StoreError> {
    let mut a = Attachments::default();
    for row in untagged.range(repo_keys(repo))? {
        a.untagged.insert(Digest::from_sha256(row?.0.value().1));
    }
    for row in signatures.range(repo_keys(repo))? {
        let (k, v) = row?;
        a.signatures.insert(Digest::from_sha256(k.value().1), decode_signatures(v.value())?);
    }
    Ok(a)
}

/// A page of a subject's referrers: descriptors (JSON) in digest order.
#[derive(Debug, Clone, Default)]
pub struct ReferrerPage {
    pub descriptors: Vec<Vec<u8>>,
    /// The digest to continue after, when there are more.
    pub next: Option<Digest>,
}

impl Store {
    /// The referrers of `subject` in `repo` after `after` (exclusive), as many as fit in
    /// `max_bytes` of descriptors (at least one) and `max` entries, optionally only those of
    /// `artifact_type`. One read transaction.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        after: Option<Digest>,
        artifact_type: Option<String>,
        max: usize,
        max_bytes: usize,
    ) -> Result<Lookup<ReferrerPage>, StoreError> {
        let (repo, subject) = (repo.clone(), subject.raw());
        self.blocking("referrers", move |db| {
            let txn = db.begin_read()?;
            if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
                return Ok(Lookup::NameUnknown);
            }
            let subjects = txn.open_table(SUBJECTS)?;
            let table = txn.open_table(REFERRERS)?;
            let start = after.map(|d| d.raw());
            let mut page = ReferrerPage::default();
            let mut bytes = 0;
            let mut last: Option<[u8; 32]> = None;
            for row in table.range(referrer_keys(repo.as_str(), &subject))? {
                let d = *row?.0.value().2;
                if start.is_some_and(|s| d <= s) {
                    continue;
                }
                let Some(rec) = subjects.get(&d)? else { continue };
                let descriptor = rec.value().get(32..).unwrap_or_default();
                if artifact_type.as_deref().is_some_and(|t| {
                    crate::model::Referrer::artifact_type_of(descriptor).as_deref() != Some(t)
                }) {
                    continue;
                }
                if let Some(l) = last.filter(|_| {
                    page.descriptors.len() >= max.max(1) || bytes + descriptor.len() > max_bytes
                }) {
                    page.next = Some(Digest::from_sha256(&l));
                    break;
                }
                bytes += descriptor.len();
                page.descriptors.push(descriptor.to_vec());
                last = Some(d);
            }
            Ok(Lookup::Found(page))
        })
        .await
    }

    /// The simple-signing signatures of `manifest` in `repo` (digest and size, in order).
    pub async fn signatures(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> Result<Lookup<Vec<(Digest, u64)>>, StoreError> {
        let (repo, manifest) = (repo.clone(), manifest.raw());
        self.blocking("signatures", move |db| {
            let txn = db.begin_read()?;
            if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
                return Ok(Lookup::NameUnknown);
            }
            match txn.open_table(SIGNATURES)?.get((repo.as_str(), &manifest))? {
                Some(v) => Ok(Lookup::Found(decode_signatures(v.value())?)),
                None => Ok(Lookup::Found(Vec::new())),
            }
        })
        .await
    }

    /// What `repo` publishes besides its tags now (the sync compares and keeps on failure).
    pub async fn attachments(&self, repo: &RepoName) -> Result<Attachments, StoreError> {
        let repo = repo.clone();
        self.blocking("attachments", move |db| {
            let txn = db.begin_read()?;
            read(&txn.open_table(UNTAGGED)?, &txn.open_table(SIGNATURES)?, repo.as_str())
        })
        .await
    }

    /// Every manifest `roots` reach through index children, those the store knows (a root it
    /// does not know is left out).
    pub async fn manifest_closure(
        &self,
        roots: Vec<Digest>,
    ) -> Result<BTreeSet<Digest>, StoreError> {
        self.blocking("manifest_closure", move |db| {
            let txn = db.begin_read()?;
            let manifests = txn.open_table(MANIFESTS)?;
            let mut seen = BTreeSet::new();
            let mut todo: Vec<Digest> = roots;
            while let Some(d) = todo.pop() {
                if seen.contains(&d) {
                    continue;
                }
                let Some(rec) = manifests.get(&d.raw())? else { continue };
                let StoredManifest { children, .. } = StoredManifest::decode(rec.value())?;
                todo.extend(children.into_iter().map(|c| c.digest));
                seen.insert(d);
            }
            Ok(seen)
        })
        .await
    }

    /// For each of `digests`: `None` if the store has no such manifest, else what it names as
    /// its subject and its artifact type (`Some(None)`: it names none). One read.
    #[allow(clippy::type_complexity)]
    pub async fn referrer_facts(
        &self,
        digests: Vec<Digest>,
    ) -> Result<Vec<Option<Option<(Digest, Option<String>)>>>, StoreError> {
        self.blocking("referrer_facts", move |db| {
            let txn = db.begin_read()?;
            let (manifests, subjects) = (txn.open_table(MANIFESTS)?, txn.open_table(SUBJECTS)?);
            let mut out = Vec::with_capacity(digests.len());
            for d in digests {
                let key = d.raw();
                if manifests.get(&key)?.is_none() {
                    out.push(None);
                    continue;
                }
                let facts = subjects.get(&key)?.and_then(|v| {
                    let v = v.value();
                    let t = crate::model::Referrer::artifact_type_of(v.get(32..)?);
                    Some((Digest::from_sha256(v.get(..32)?), t))
                });
                out.push(Some(facts));
            }
            Ok(out)
        })
        .await
    }

    /// A repository and manifest that have the signature file `digest`, if any (for
    /// `verify --repair`; scans the signature lists).
    pub async fn signature_owner(
        &self,
        digest: &Digest,
    ) -> Result<Option<(RepoName, Digest)>, StoreError> {
        let digest = digest.clone();
        self.blocking("signature_owner", move |db| {
            let txn = db.begin_read()?;
            for row in txn.open_table(SIGNATURES)?.iter()? {
                let (k, v) = row?;
                if decode_signatures(v.value())?.iter().any(|(d, _)| *d == digest) {
                    let (repo, manifest) = k.value();
                    let Ok(repo) = repo.parse() else { continue };
                    return Ok(Some((repo, Digest::from_sha256(manifest))));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Every signature file as (repository, manifest, its signatures), for the content-set
    /// lists. As many rows as signed manifests.
    pub async fn all_signatures(&self) -> Result<Vec<(RepoName, Digest, usize)>, StoreError> {
        self.blocking("all_signatures", |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(SIGNATURES)?.iter()? {
                let (k, v) = row?;
                let (repo, d) = k.value();
                let Ok(repo) = repo.parse() else { continue };
                out.push((repo, Digest::from_sha256(d), v.value().len() / 40));
            }
            Ok(out)
        })
        .await
    }
}
