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
