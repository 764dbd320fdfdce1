//! What the repository browser shows: each tag's manifest, platforms, size and last change.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};

use crate::model::{Digest, RepoName};

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
            let mut out = Vec::new();
            for row in txn.open_table(TAGS)?.range((repo.as_str(), "")..(repo.as_str(), KEY_END))? {
                let (k, v) = row?;
                let StoredTag::V1 { digest, updated_at } = decode("tags", v.value())?;
                let media_type = match manifests.get(&digest.raw())? {
                    Some(m) => {
                        let StoredManifest { media_type, .. } = StoredManifest::decode(m.value())?;
                        media_type
                    }
                    None => String::new(),
                };
                let (size, platforms) = manifest_size(&manifests, &digest, 0)?;
                out.push(TagDetail {
                    tag: k.value().1.to_owned(),
                    digest,
                    media_type,
                    platforms,
                    size,
                    updated_at,
                });
            }
            Ok(Some(out))
        })
        .await
    }
}
