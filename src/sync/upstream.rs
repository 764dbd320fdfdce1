//! The upstream a sync reads from: a Registry v2 server or an `oci:` directory of layouts.

use crate::config::{SyncSettings, UpstreamSource};
use crate::model::{BlobRef, Digest};
use crate::tree::{MirrorTree, TreeError};

use super::oci_dir::OciDir;
use super::registry_client::RegistryClient;

/// A manifest as fetched, before verification.
#[derive(Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// What the upstream said the digest is (`Docker-Content-Digest`), if anything.
    pub claimed_digest: Option<Digest>,
}

/// One descriptor of a referrers list (the API's answer, or a fallback-tag index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerEntry {
    pub digest: Digest,
    pub artifact_type: Option<String>,
}

/// The descriptors of an image index listing referrers.
pub fn parse_referrers(bytes: &[u8]) -> Result<Vec<ReferrerEntry>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        digest: Digest,
        #[serde(default)]
        artifact_type: Option<String>,
    }
    let index: Index =
        serde_json::from_slice(bytes).map_err(|e| format!("not a referrers index: {e}"))?;
    Ok(index
        .manifests
        .into_iter()
        .map(|e| ReferrerEntry {
            digest: e.digest,
            artifact_type: e.artifact_type.filter(|t| !t.is_empty()),
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{url}: transfer interrupted: {source}")]
    Interrupted { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status} {body}")]
    Status { url: String, status: u16, body: String },
    #[error("not found upstream: {0}")]
    NotFound(String),
    #[error("upstream authentication failed: {0}")]
    Auth(String),
    #[error("unexpected upstream response: {0}")]
    Invalid(String),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("upstream client setup: {0}")]
    Setup(String),
}

pub enum Upstream {
    Registry(Box<RegistryClient>),
    OciDir(OciDir),
}

impl Upstream {
    pub fn new(
        source: &UpstreamSource,
        settings: &SyncSettings,
    ) -> Result<Upstream, UpstreamError> {
        Ok(match source {
            UpstreamSource::Registry { url, credentials } => Upstream::Registry(Box::new(
                RegistryClient::new(url.clone(), credentials.clone(), settings.clone())?,
            )),
            UpstreamSource::OciDir(path) => {
                Upstream::OciDir(OciDir::new(path.clone(), settings.concurrency))
            }
        })
    }

    /// For messages: where this upstream is.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Registry(c) => c.base().to_string(),
            Upstream::OciDir(d) => format!("oci:{}", d.root().display()),
        }
    }

    pub async fn repositories(&self) -> Result<Vec<String>, UpstreamError> {
        match self {
            Upstream::Registry(c) => c.repositories().await,
            Upstream::OciDir(d) => d.repositories().await,
        }
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, UpstreamError> {
        match self {
            Upstream::Registry(c) => c.tags(repo).await,
            Upstream::OciDir(d) => d.tags(repo).await,
        }
    }

    pub async fn manifest_digest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, UpstreamError> {
        match self {
            Upstream::Registry(c) => c.manifest_digest(repo, tag).await,
            Upstream::OciDir(d) => d.manifest_digest(repo, tag).await,
        }
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        match self {
            Upstream::Registry(c) => c.manifest(repo, reference).await,
            Upstream::OciDir(d) => d.manifest(repo, reference).await,
        }
    }

    /// The referrers of `digest` from the upstream's OCI referrers API; `None` when it has
    /// none (an `oci:` directory never has).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<ReferrerEntry>>, UpstreamError> {
        match self {
            Upstream::Registry(c) => c.referrers(repo, digest).await,
            Upstream::OciDir(_) => Ok(None),
        }
    }

    pub async fn fetch_blob(
        &self,
        repo: &str,
        blob: &BlobRef,
        tree: &MirrorTree,
    ) -> Result<u64, UpstreamError> {
        match self {
            Upstream::Registry(c) => c.fetch_blob(repo, blob, tree).await,
            Upstream::OciDir(d) => d.fetch_blob(repo, blob, tree).await,
        }
    }
}
