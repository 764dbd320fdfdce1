//! What the repository browser shows: each tag's manifest, platforms, size, last change and
//! what is attached to it (signatures, attestations, SBOMs). Attachment tags
//! (`sha256-<hex>.sig` ...) are shown with the tag they belong to, not as tags of their own.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};

use std::collections::BTreeMap;

use crate::model::attachment::artifact_type as at;
use crate::model::{AttachmentTag, Digest, Referrer, RepoName, TagScheme};

use super::records::{StoredManifest, StoredTag, decode};
use super::tables::*;
use super::{Store, StoreError};

/// One tag as an operator browses it.
#[derive(Debug, Clone)]
pub struct TagDetail {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    /// `os/arch[/variant]` of the image, or of each child of an index.
    pub platforms: Vec<String>,
    /// Manifests and every blob they reference, summed over an index's children.
    pub size: u64,
    pub updated_at: DateTime<Utc>,
    /// What is attached to the tag's manifest: "cosign signature", "SBOM
    /// (application/spdx+json)", "2 simple-signing signatures", ...
    pub attachments: Vec<String>,
}

/// What a person calls an artifact type.
fn label(artifact_type: Option<&str>) -> String {
    match artifact_type {
        Some(at::COSIGN_SIGNATURE) => TagScheme::CosignSignature.label().into(),
        Some(at::COSIGN_ATTESTATION) => TagScheme::CosignAttestation.label().into(),
        Some(at::COSIGN_SBOM) => TagScheme::CosignSbom.label().into(),
        Some(t) if t.contains("spdx") || t.contains("cyclonedx") => format!("SBOM ({t})"),
        Some(t) if t.contains("in-toto") || t.contains("dsse") => format!("attestation ({t})"),
        Some(t) => t.to_owned(),
        None => "artifact".into(),
    }
}

fn manifest_size(
    manifests: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    digest: &Digest,
    depth: u8,
) -> Result<(u64, Vec<String>), StoreError> {
    let Some(row) = manifests.get(&digest.raw())? else { return Ok((0, Vec::new())) };
    let StoredManifest { size, children, blobs, platform, .. } =
        StoredManifest::decode(row.value())?;
    let mut total = size + blobs.iter().map(|b| b.size).sum::<u64>();
    let mut platforms: Vec<String> = platform.iter().map(|p| p.to_string()).collect();
    if depth < 2 {
        for c in &children {
            total += manifest_size(manifests, &c.digest, depth + 1)?.0;
            platforms.extend(c.platform.iter().map(|p| p.to_string()));
        }
    }
    Ok((total, platforms))
}

impl Store {
    /// The tags of a repository with their details, sorted by tag; `None` if unknown.
    pub async fn tag_details(&self, repo: &RepoName) -> Result<Option<Vec<TagDetail>>, StoreError> {
        let repo = repo.clone();
        self.blocking("tag_details", move |db| {
            let txn = db.begin_read()?;
            if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
                return Ok(None);
            }
            let manifests = txn.open_table(MANIFESTS)?;
            let (subjects, referrers) = (txn.open_table(SUBJECTS)?, txn.open_table(REFERRERS)?);
            let signatures = txn.open_table(SIGNATURES)?;
            let mut out = Vec::new();
            let mut cosign: BTreeMap<Digest, Vec<TagScheme>> = BTreeMap::new();
            for row in txn.open_table(TAGS)?.range((repo.as_str(), "")..(repo.as_str(), KEY_END))? {
                let (k, v) = row?;
                if let Some(a) = AttachmentTag::parse(k.value().1) {
                    cosign.entry(a.subject).or_default().push(a.scheme);
                    continue;
                }
                let StoredTag::V1 { digest, updated_at } = decode("tags", v.value())?;
                let media_type = match manifests.get(&digest.raw())? {
                    Some(m) => {
                        let StoredManifest { media_type, .. } = StoredManifest::decode(m.value())?;
                        media_type
                    }
                    None => String::new(),
                };
                let (size, platforms) = manifest_size(&manifests, &digest, 0)?;
                let mut attachments = Vec::new();
                for row in referrers.range(referrer_keys(repo.as_str(), &digest.raw()))? {
                    let d = *row?.0.value().2;
                    let descriptor = subjects.get(&d)?;
                    let t =
                        descriptor.and_then(|v| Referrer::artifact_type_of(v.value().get(32..)?));
                    attachments.push(label(t.as_deref()));
                }
                if let Some(v) = signatures.get((repo.as_str(), &digest.raw()))? {
                    let n = decode_signatures(v.value())?.len();
                    let s = if n == 1 { "" } else { "s" };
                    attachments.push(format!("{n} simple-signing signature{s}"));
                }
                out.push(TagDetail {
                    tag: k.value().1.to_owned(),
                    digest,
                    media_type,
                    platforms,
                    size,
                    updated_at,
                    attachments,
                });
            }
            for t in &mut out {
                for scheme in cosign.get(&t.digest).into_iter().flatten() {
                    t.attachments.push(scheme.label().to_owned());
                }
                t.attachments.sort();
                t.attachments.dedup();
            }
            Ok(Some(out))
        })
        .await
    }
}
