//! An `oci:/path` upstream: every directory below the root holding an OCI image layout is a
//! repository named by its relative path, so build pipelines that write layouts can feed
//! Wharf without running a registry.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::model::{BlobRef, Digest, MAX_MANIFEST_SIZE, RepoName};
use crate::tree::MirrorTree;

use super::{FetchedManifest, UpstreamError};

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct OciDir {
    root: PathBuf,
    /// The last `index.json` files parsed, by repository and file identity, newest last: a
    /// sync asks for every tag of a repository (of up to `[sync] concurrency` repositories at
    /// once), and parsing the index once per tag would be quadratic.
    recent: std::sync::Mutex<std::collections::VecDeque<(IndexKey, std::sync::Arc<Index>)>>,
    /// How many `recent` keeps: one more than the repositories a sync resolves at once.
    keep: usize,
}

/// Which `index.json` (a rewrite is a new inode or a new mtime or length).
#[derive(PartialEq, Eq)]
struct IndexKey {
    repo: String,
    ino: u64,
    mtime: Option<std::time::SystemTime>,
    len: u64,
}

#[derive(Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: Option<String>,
    digest: Digest,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Index {
    manifests: Vec<IndexEntry>,
}

impl OciDir {
    /// An upstream at `root` for a sync resolving up to `concurrency` repositories at once.
    pub fn new(root: PathBuf, concurrency: usize) -> Self {
        OciDir { root, recent: std::sync::Mutex::default(), keep: concurrency + 1 }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layout(&self, repo: &str) -> Result<PathBuf, UpstreamError> {
        // Names reach here parsed, but never trust a path built from input.
        let name: RepoName = repo.parse().map_err(|e| UpstreamError::Invalid(format!("{e}")))?;
        Ok(self.root.join(name.as_str()))
    }

    pub async fn repositories(&self) -> Result<Vec<String>, UpstreamError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            if !root.is_dir() {
                return Err(UpstreamError::Invalid(format!(
                    "upstream directory {} does not exist",
                    root.display()
                )));
            }
            let mut out = Vec::new();
            let mut todo = vec![root.clone()];
            while let Some(dir) = todo.pop() {
                if let Ok(rel) = dir.strip_prefix(&root)
                    && dir.join("oci-layout").is_file()
                {
                    out.push(rel.to_string_lossy().into_owned());
                }
                let rd = std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "blobs" {
                        todo.push(e.path());
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| UpstreamError::Setup(e.to_string()))?
    }

    async fn index(&self, repo: &str) -> Result<std::sync::Arc<Index>, UpstreamError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.layout(repo)?.join("index.json");
        let not_found = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => UpstreamError::NotFound(path.display().to_string()),
            _ => io(&path, e),
        };
        let meta = tokio::fs::metadata(&path).await.map_err(not_found)?;
        let key = IndexKey {
            repo: repo.to_owned(),
            ino: meta.ino(),
            mtime: meta.modified().ok(),
            len: meta.len(),
        };
        let cached = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.iter().find(|(k, _)| *k == key).map(|(_, index)| index.clone())
        };
        if let Some(index) = cached {
            return Ok(index);
        }
        let bytes = tokio::fs::read(&path).await.map_err(not_found)?;
        let index: std::sync::Arc<Index> = serde_json::from_slice::<Index>(&bytes)
            .map_err(|e| UpstreamError::Invalid(format!("{}: {e}", path.display())))?
            .into();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|(k, _)| k.repo != key.repo);
        if recent.len() >= self.keep {
            recent.pop_front();
        }
        recent.push_back((key, index.clone()));
        Ok(index)
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, UpstreamError> {
        let mut tags: Vec<String> = self
            .index(repo)
            .await?
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(ANNOTATION_REF_NAME).cloned())
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    pub async fn manifest_digest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, UpstreamError> {
        Ok(self.find_tag(repo, tag).await?.map(|e| e.digest))
    }

    async fn find_tag(&self, repo: &str, tag: &str) -> Result<Option<IndexEntry>, UpstreamError> {
        Ok(self
            .index(repo)
            .await?
            .manifests
            .iter()
            .find(|m| m.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag))
            .cloned())
    }

    fn blob_path(&self, repo: &str, digest: &Digest) -> Result<PathBuf, UpstreamError> {
        Ok(self.layout(repo)?.join("blobs/sha256").join(digest.hex()))
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        let (digest, content_type) = match reference.parse::<Digest>() {
            Ok(d) => (d, None),
            Err(_) => {
                let entry = self
                    .find_tag(repo, reference)
                    .await?
                    .ok_or_else(|| UpstreamError::NotFound(format!("{repo}:{reference}")))?;
                (entry.digest, entry.media_type)
            }
        };
        let path = self.blob_path(repo, &digest)?;
        let len = tokio::fs::metadata(&path).await.map_err(|e| io(&path, e))?.len();
        if len > MAX_MANIFEST_SIZE {
            return Err(UpstreamError::Invalid(format!(
                "{}: manifest larger than 4 MiB",
                path.display()
            )));
        }
        let bytes = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
        Ok(FetchedManifest { bytes, content_type, claimed_digest: Some(digest) })
    }

    pub async fn fetch_blob(
        &self,
        repo: &str,
        blob: &BlobRef,
        tree: &MirrorTree,
    ) -> Result<u64, UpstreamError> {
        let path = self.blob_path(repo, &blob.digest)?;
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| io(&path, e))?;
        let mut writer = tree.writer(blob.digest.clone()).await?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| io(&path, e))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]).await?;
            if writer.written() > blob.size {
                break; // longer than declared: finish() reports the mismatch
            }
        }
        Ok(writer.finish(Some(blob.size)).await?)
    }
}

fn io(path: &Path, e: std::io::Error) -> UpstreamError {
    UpstreamError::Invalid(format!("{}: {e}", path.display()))
}
