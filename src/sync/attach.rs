//! What the sync finds attached to a repository's manifests upstream, and the signed-only
//! policy that reads it.
//!
//! For every manifest the repository's tags publish (index children included), and then for
//! every attachment found (a signature on an SBOM), up to [`MAX_DEPTH`] levels:
//! - its referrers: the upstream's OCI referrers API (probed once a run: an upstream without
//!   it costs one request), and the OCI fallback tag `sha256-<hex>` (an index listing them):
//!   each is fetched by digest, checked to name the manifest as its subject, and published
//!   untagged;
//! - cosign's tags `sha256-<hex>.sig`, `.att`, `.sbom`: published as the tags they are,
//!   whatever `upstream.tags` says;
//! - (tags' manifests only) its simple-signing signatures from `[upstream] lookaside`.
//!
//! `[sync] referrer_artifact_types` limits referrers and cosign tags to those types. Where
//! finding fails, what the repository published before stays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use futures_util::{StreamExt, stream};

use crate::config::SignaturePolicy;
use crate::model::attachment::artifact_type;
use crate::model::signature::{COSIGN_ANNOTATION, COSIGN_PAYLOAD};
use crate::model::{AttachmentTag, Digest, Referrer, RepoName, Tag, TagScheme};
use crate::store::{Attachments, NewManifest};

use super::{Resolution, SyncCtx, TagError, UpstreamError, parse_referrers};

/// Levels of attachments followed below a tag's manifests (an attachment of an attachment
/// of an attachment).
const MAX_DEPTH: usize = 3;

/// Whether the upstream answers the referrers API, as this run found out.
pub(super) const API_UNKNOWN: u8 = 0;
const API_YES: u8 = 1;
pub(super) const API_NO: u8 = 2;

/// What one repository has attached upstream, found before its blobs are fetched.
#[derive(Default)]
pub(super) struct Found {
    /// Cosign tags to publish, resolved like any tag.
    pub tags: Vec<(Tag, Result<Resolution, TagError>)>,
    /// Untagged referrers (with their subject), each with the manifests it needs staged.
    pub untagged: Vec<(Digest, Digest, Result<Vec<NewManifest>, TagError>)>,
    /// Signatures read from the lookaside store and put in the pool, by manifest.
    pub signatures: BTreeMap<Digest, Vec<(Digest, u64)>>,
    /// What the repository published before.
    pub before: Attachments,
    /// Some referrer lookup failed: the untagged referrers published before stay.
    pub untagged_incomplete: bool,
    /// Manifests whose signatures could not be read: theirs stay.
    pub signatures_failed: BTreeSet<Digest>,
    pub errors: Vec<String>,
    /// Discovery ran (else there is nothing attached, and nothing to check).
    pub discovered: bool,
    /// What the repository has could not be read, or its tags not listed: keep it all.
    pub keep_all: bool,
    /// The manifests the tags publish, as discovery saw them (moved tags' old manifests
    /// too); exact when no tag moved.
    pub published: BTreeSet<Digest>,
    /// Some tag moved (then what is published is known only once the moves are settled).
    pub moved: bool,
}

impl Found {
    /// Keep only what is attached to `published` (the manifests the tags publish now) or,
    /// in turn, to what is kept: an attachment of a manifest no tag moved to (refused by the
    /// policy, a blob missing, an older digest looked at in case the tag stayed) goes.
    pub fn keep_attached_to(&mut self, mut published: BTreeSet<Digest>) {
        loop {
            let before = published.len();
            for (t, r) in &self.tags {
                let Some(a) = AttachmentTag::parse(t.as_str()) else { continue };
                if let (
                    true,
                    Ok(Resolution::Unchanged(d) | Resolution::Changed { digest: d, .. }),
                ) = (published.contains(&a.subject), r)
                {
                    published.insert(d.clone());
                }
            }
            for (d, subject, _) in &self.untagged {
                if published.contains(subject) {
                    published.insert(d.clone());
                }
            }
            if published.len() == before {
                break;
            }
        }
        self.tags.retain(|(t, _)| {
            AttachmentTag::parse(t.as_str()).is_some_and(|a| published.contains(&a.subject))
        });
        self.untagged.retain(|(_, subject, _)| published.contains(subject));
        self.signatures.retain(|d, _| published.contains(d));
        self.signatures_failed.retain(|d| published.contains(d));
    }

    /// The repository's attachments once its untagged referrers `published` are in; `None`:
    /// keep what it has.
    pub fn attachments(&self, published: BTreeSet<Digest>) -> Option<Attachments> {
        if self.keep_all {
            return None;
        }
        let mut untagged = published;
        if self.untagged_incomplete {
            untagged.extend(self.before.untagged.iter().cloned());
        }
        let mut signatures = self.signatures.clone();
        for d in &self.signatures_failed {
            if let Some(kept) = self.before.signatures.get(d) {
                signatures.insert(d.clone(), kept.clone());
            }
        }
        signatures.retain(|_, s| !s.is_empty());
        Some(Attachments { untagged, signatures })
    }
}

/// What one manifest has attached upstream.
#[derive(Default)]
struct Candidates {
    tags: Vec<TagScheme>,
    untagged: Vec<(Digest, Option<String>)>,
    /// Listing its referrers failed (its cosign tags, from the tag list, are still known).
    error: Option<UpstreamError>,
}

/// Find what is attached to the manifests `resolved` tags publish (`old`: the repository's
/// tags before this run; `listed`: the attachment tags the upstream lists).
pub(super) async fn discover(
    ctx: &SyncCtx,
    repo: &RepoName,
    old: &BTreeMap<Tag, Digest>,
    resolved: &[(Tag, Result<Resolution, TagError>)],
    listed: &[AttachmentTag],
) -> Found {
    let mut found = Found { discovered: true, ..Found::default() };
    match ctx.store.attachments(repo).await {
        Ok(a) => found.before = a,
        Err(e) => {
            found.errors.push(format!("reading attachments: {e}"));
            found.keep_all = true;
            return found;
        }
    }
    // A moved tag's old manifest too: it stays if the move fails.
    let mut roots: Vec<&Digest> = Vec::new();
    let mut fresh: Vec<&NewManifest> = Vec::new();
    for (tag, r) in resolved {
        match r {
            Ok(Resolution::Unchanged(d)) => roots.push(d),
            Ok(Resolution::Changed { digest, manifests }) => {
                roots.push(digest);
                roots.extend(old.get(tag));
                fresh.extend(manifests);
                found.moved = true;
            }
            Ok(Resolution::Skipped(_)) => {}
            Err(_) => roots.extend(old.get(tag)),
        }
    }
    let published = match published_manifests(ctx, roots, fresh).await {
        Ok(p) => {
            found.published = p.clone();
            p
        }
        Err(e) => {
            found.errors.push(format!("reading manifests: {e}"));
            found.untagged_incomplete = true;
            found.signatures_failed = found.before.signatures.keys().cloned().collect();
            return found;
        }
    };
    if let Some(lookaside) = &ctx.lookaside {
        let fetched: Vec<_> = stream::iter(published.iter().cloned())
            .map(|d| async move {
                let _permit = ctx.lookups.acquire().await;
                let r = lookaside.signatures(repo, &d).await;
                (d, r)
            })
            .buffer_unordered(ctx.settings.concurrency)
            .collect()
            .await;
        for (d, r) in fetched {
            let stored = match r {
                Ok(files) => store_signatures(ctx, files).await,
                Err(e) => Err(e.to_string()),
            };
            match stored {
                Ok(sigs) => {
                    found.signatures.insert(d, sigs);
                }
                Err(e) => {
                    found.errors.push(format!("signatures of {d}: {e}"));
                    found.signatures_failed.insert(d);
                }
            }
        }
    }
    if !ctx.settings.referrers {
        return found;
    }
    let mut by_subject: BTreeMap<&Digest, Vec<TagScheme>> = BTreeMap::new();
    for a in listed {
        by_subject.entry(&a.subject).or_default().push(a.scheme);
    }
    let mut seen: BTreeSet<Digest> = published.clone();
    let mut frontier: Vec<Digest> = published.into_iter().collect();
    for _ in 0..MAX_DEPTH {
        if frontier.is_empty() {
            break;
        }
        let schemes = &by_subject;
        let lists: Vec<_> = stream::iter(frontier)
            .map(|m| async move {
                let listed = schemes.get(&m).map(Vec::as_slice).unwrap_or_default();
                let c = candidates(ctx, repo, &m, listed).await;
                (m, c)
            })
            .buffer_unordered(ctx.settings.concurrency)
            .collect()
            .await;
        let mut tags = Vec::new();
        let mut untagged = Vec::new();
        for (subject, c) in lists {
            if let Some(e) = &c.error {
                found.errors.push(format!("referrers of {subject}: {e}"));
                found.untagged_incomplete = true;
            }
            for scheme in
                c.tags.into_iter().filter(|s| ctx.settings.wants_artifact(s.artifact_type()))
            {
                tags.push(AttachmentTag { subject: subject.clone(), scheme }.tag());
            }
            for (digest, listed_type) in c.untagged {
                let wanted =
                    listed_type.is_none() || ctx.settings.wants_artifact(listed_type.as_deref());
                if wanted && seen.insert(digest.clone()) {
                    untagged.push((digest, subject.clone()));
                }
            }
        }
        // What the store knows of the referrers, in one read; the rest is fetched.
        let digests = untagged.iter().map(|(d, _)| d.clone()).collect();
        let known = match ctx.store.referrer_facts(digests).await {
            Ok(k) => k,
            Err(e) => {
                found.errors.push(format!("reading referrers: {e}"));
                found.keep_all = true;
                break;
            }
        };
        let resolved_tags: Vec<_> = stream::iter(tags)
            .map(|tag| async move {
                let _permit = ctx.lookups.acquire().await;
                let r = super::resolve_tag(ctx, repo, &tag, old.get(&tag)).await;
                (tag, r)
            })
            .buffered(ctx.settings.concurrency)
            .collect()
            .await;
        let fetched: Vec<_> = stream::iter(untagged.into_iter().zip(known))
            .map(|((digest, subject), known)| async move {
                let r = match known {
                    Some(facts) => check_referrer(ctx, &digest, &subject, facts, Vec::new()),
                    None => {
                        let _permit = ctx.lookups.acquire().await;
                        match super::resolve_digest(ctx, repo, &digest).await {
                            Ok(ms) => {
                                let top = ms.iter().find(|m| m.digest == digest);
                                let facts = top
                                    .and_then(|m| Referrer::of(&m.bytes, &m.media_type))
                                    .map(|r| (r.subject, r.artifact_type));
                                check_referrer(ctx, &digest, &subject, facts, ms)
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                (digest, subject, r)
            })
            .buffered(ctx.settings.concurrency)
            .collect()
            .await;
        let mut next = Vec::new();
        for (tag, r) in resolved_tags {
            match &r {
                Ok(Resolution::Unchanged(d)) | Ok(Resolution::Changed { digest: d, .. })
                    if seen.insert(d.clone()) =>
                {
                    next.push(d.clone())
                }
                _ => {}
            }
            found.tags.push((tag, r));
        }
        for (digest, subject, r) in fetched {
            match r {
                Ok(None) => {}
                Ok(Some(ms)) => {
                    next.push(digest.clone());
                    found.untagged.push((digest, subject, Ok(ms)));
                }
                Err(e) => {
                    found.untagged_incomplete = true;
                    found.untagged.push((digest, subject, Err(e)));
                }
            }
        }
        next.sort();
        next.dedup();
        frontier = next;
    }
    found
}

/// A referrer must name `subject` (whatever the listing said); one of an unwanted artifact
/// type is left out (`None`). `facts`: what it names and its artifact type, from the store or
/// from the bytes just fetched (`None`: it names no subject).
fn check_referrer(
    ctx: &SyncCtx,
    digest: &Digest,
    subject: &Digest,
    facts: Option<(Digest, Option<String>)>,
    manifests: Vec<NewManifest>,
) -> Result<Option<Vec<NewManifest>>, TagError> {
    match facts {
        Some((s, t)) if &s == subject => {
            Ok(ctx.settings.wants_artifact(t.as_deref()).then_some(manifests))
        }
        _ => Err(TagError::NotAReferrer { referrer: digest.clone(), subject: subject.clone() }),
    }
}

/// The manifests `roots` reach through index children: children from `fresh` (fetched in
/// this run) or from the store.
pub(super) async fn published_manifests<'a>(
    ctx: &SyncCtx,
    roots: Vec<&'a Digest>,
    fresh: Vec<&'a NewManifest>,
) -> Result<BTreeSet<Digest>, crate::store::StoreError> {
    let fresh: BTreeMap<&Digest, Vec<&Digest>> =
        fresh.iter().map(|m| (&m.digest, m.children.iter().map(|c| &c.digest).collect())).collect();
    let mut todo = roots;
    let mut seen = BTreeSet::new();
    let mut stored = Vec::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        match fresh.get(d) {
            Some(children) => todo.extend(children.iter().copied()),
            None => stored.push(d.clone()),
        }
    }
    if !stored.is_empty() {
        // Children of a stored manifest are stored too.
        seen.extend(ctx.store.manifest_closure(stored).await?);
    }
    Ok(seen)
}

/// What is attached to `manifest` upstream: its cosign tags, and the referrers the OCI
/// fallback tag and the referrers API list.
async fn candidates(
    ctx: &SyncCtx,
    repo: &RepoName,
    manifest: &Digest,
    listed: &[TagScheme],
) -> Candidates {
    let tags = listed.iter().copied().filter(|s| *s != TagScheme::Fallback).collect();
    let mut c = Candidates { tags, ..Candidates::default() };
    if let Err(e) = referrer_candidates(ctx, repo, manifest, listed, &mut c.untagged).await {
        c.error = Some(e);
    }
    c.untagged.sort();
    c.untagged.dedup_by(|a, b| a.0 == b.0);
    c
}

/// The referrers of `manifest` the OCI fallback tag (if `listed`) and the referrers API
/// list, into `out`.
async fn referrer_candidates(
    ctx: &SyncCtx,
    repo: &RepoName,
    manifest: &Digest,
    listed: &[TagScheme],
    out: &mut Vec<(Digest, Option<String>)>,
) -> Result<(), UpstreamError> {
    for scheme in listed {
        if *scheme != TagScheme::Fallback {
            continue;
        }
        let tag = AttachmentTag { subject: manifest.clone(), scheme: *scheme }.tag();
        let fetched = {
            let _permit = ctx.lookups.acquire().await;
            ctx.upstream.manifest(repo.as_str(), tag.as_str()).await
        };
        match fetched {
            Ok(f) => {
                let entries = parse_referrers(&f.bytes)
                    .map_err(|e| UpstreamError::Invalid(format!("{repo}:{tag}: {e}")))?;
                out.extend(entries.into_iter().map(|e| (e.digest, e.artifact_type)));
            }
            Err(UpstreamError::NotFound(_)) => {} // gone since the listing
            Err(e) => return Err(e),
        }
    }
    if ctx.referrers_api.load(Ordering::Relaxed) != API_NO {
        let answer = {
            let _permit = ctx.lookups.acquire().await;
            ctx.upstream.referrers(repo.as_str(), manifest).await?
        };
        match answer {
            Some(entries) => {
                ctx.referrers_api.store(API_YES, Ordering::Relaxed);
                out.extend(entries.into_iter().map(|e| (e.digest, e.artifact_type)));
            }
            None => {
                // A registry with the API never answers a well-formed request with 404.
                let _ = ctx.referrers_api.compare_exchange(
                    API_UNKNOWN,
                    API_NO,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }
    Ok(())
}

/// Put verified signature files in the pool; their digests and sizes in order.
async fn store_signatures(
    ctx: &SyncCtx,
    files: Vec<Vec<u8>>,
) -> Result<Vec<(Digest, u64)>, String> {
    let tree = ctx.tree.clone();
    tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|bytes| {
                let d = Digest::of(&bytes);
                tree.put_bytes(&d, &bytes).map_err(|e| e.to_string())?;
                Ok((d, bytes.len() as u64))
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `[sync.policy]`: whether a signature of `digest` (what tag `tag` of `repo` moves to)
/// verifies against the trusted keys and names the tag's identity. Simple-signing
/// signatures from the lookaside store and cosign signatures (the `.sig` tag, or referrers
/// of cosign's signature type) count. Runs after the repository's blobs are in the pool.
pub(super) async fn verify_tag(
    ctx: &SyncCtx,
    policy: &SignaturePolicy,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
    found: &Found,
) -> Result<(), TagError> {
    let identity = format!("{}/{repo}", policy.identity);
    let mut reasons: Vec<String> = Vec::new();
    let simple = found.signatures.get(digest).or_else(|| {
        found
            .signatures_failed
            .contains(digest)
            .then(|| found.before.signatures.get(digest))
            .flatten()
    });
    for (sig, _) in simple.into_iter().flatten() {
        let bytes = read_pool(ctx, sig).await?;
        match policy
            .keys
            .verify_simple_signing(&bytes)
            .and_then(|c| c.check(digest, &identity, Some(tag)))
        {
            Ok(()) => return Ok(()),
            Err(e) => reasons.push(format!("simple signing: {e}")),
        }
    }
    for manifest in cosign_signatures(ctx, digest, found).await? {
        for (payload, sig) in cosign_layers(&manifest) {
            let payload = read_pool(ctx, &payload).await?;
            match policy
                .keys
                .verify_cosign(&payload, &sig)
                .and_then(|c| c.check(digest, &identity, Some(tag)))
            {
                Ok(()) => return Ok(()),
                Err(e) => reasons.push(format!("cosign: {e}")),
            }
        }
    }
    if reasons.is_empty() {
        reasons.push("no signature found".into());
    }
    reasons.dedup();
    Err(TagError::Unsigned(reasons.join("; ")))
}

/// The bytes of the cosign signature manifests of `digest`: its `.sig` tag and its
/// referrers of cosign's signature type.
async fn cosign_signatures(
    ctx: &SyncCtx,
    digest: &Digest,
    found: &Found,
) -> Result<Vec<Vec<u8>>, TagError> {
    let sig_tag =
        AttachmentTag { subject: digest.clone(), scheme: TagScheme::CosignSignature }.tag();
    // (manifest, fetched now, from the `.sig` tag)
    let mut wanted: Vec<(Digest, &[NewManifest], bool)> = Vec::new();
    for (_, r) in found.tags.iter().filter(|(t, _)| *t == sig_tag) {
        match r {
            Ok(Resolution::Unchanged(d)) => wanted.push((d.clone(), &[], true)),
            Ok(Resolution::Changed { digest: d, manifests }) => {
                wanted.push((d.clone(), manifests, true))
            }
            _ => {}
        }
    }
    for (d, subject, r) in &found.untagged {
        if let (true, Ok(ms)) = (subject == digest, r) {
            wanted.push((d.clone(), ms, false));
        }
    }
    let mut out = Vec::new();
    for (d, fetched, from_tag) in wanted {
        let bytes = match fetched.iter().find(|m| m.digest == d) {
            Some(m) => m.bytes.clone(),
            None => match ctx.store.manifest_bytes(&d).await? {
                Some(b) => b,
                None => continue,
            },
        };
        // Cosign's tag scheme names no subject (one that does must name this manifest); a
        // referrer must name this manifest and be of cosign's signature type.
        let ok = match Referrer::of(&bytes, crate::model::media_type::OCI_MANIFEST) {
            Some(r) if from_tag => &r.subject == digest,
            Some(r) => {
                &r.subject == digest
                    && r.artifact_type.as_deref() == Some(artifact_type::COSIGN_SIGNATURE)
            }
            None => from_tag,
        };
        if ok {
            out.push(bytes);
        }
    }
    Ok(out)
}

/// The (payload blob, base64 signature) pairs of a cosign signature manifest.
fn cosign_layers(manifest: &[u8]) -> Vec<(Digest, String)> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(default)]
        layers: Vec<L>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct L {
        #[serde(default)]
        media_type: String,
        digest: Digest,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let Ok(m) = serde_json::from_slice::<M>(manifest) else { return Vec::new() };
    m.layers
        .into_iter()
        .filter(|l| l.media_type == COSIGN_PAYLOAD)
        .filter_map(|l| Some((l.digest, l.annotations.get(COSIGN_ANNOTATION)?.clone())))
        .collect()
}

async fn read_pool(ctx: &SyncCtx, digest: &Digest) -> Result<Vec<u8>, TagError> {
    let path = ctx.tree.pool_path(digest);
    let meta =
        tokio::fs::metadata(&path).await.map_err(|_| TagError::BlobMissing(digest.clone()))?;
    if meta.len() > crate::model::MAX_MANIFEST_SIZE {
        return Err(TagError::Unsigned(format!("signature payload {digest} is too large")));
    }
    tokio::fs::read(&path).await.map_err(|_| TagError::BlobMissing(digest.clone()))
}
