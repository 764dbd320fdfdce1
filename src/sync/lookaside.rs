//! The upstream's lookaside store of simple-signing signatures (`[upstream] lookaside`):
//! `<base><repo>@sha256=<hex>/signature-<n>`, read from 1 until a 404, as containers/image
//! reads one. Each file must be at most `MAX_SIGNATURE_SIZE` bytes and an OpenPGP signed
//! message carrying a container signature (whose key signed it, clients and
//! `[sync.policy]` decide); anything else fails the manifest's signatures, which then keep
//! what they were.

use std::time::Duration;

use reqwest::{StatusCode, Url};

use crate::config::SyncSettings;
use crate::model::attachment::{MAX_SIGNATURE_SIZE, MAX_SIGNATURES};
use crate::model::{Digest, LookasidePath, RepoName, signature};

use super::UpstreamError;

pub struct Lookaside {
    http: reqwest::Client,
    base: Url,
    retries: u32,
}

/// Why a manifest's signatures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LookasideError {
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: larger than {MAX_SIGNATURE_SIZE} bytes")]
    TooLarge { url: String },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("more than {MAX_SIGNATURES} signatures")]
    TooMany,
}

impl Lookaside {
    pub fn new(base: Url, settings: &SyncSettings) -> Result<Lookaside, UpstreamError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.request_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| UpstreamError::Setup(e.to_string()))?;
        Ok(Lookaside { http, base, retries: settings.retries })
    }

    /// Every signature of `manifest` in `repo`, `signature-1` first; an empty list when there
    /// is none.
    pub async fn signatures(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> Result<Vec<Vec<u8>>, LookasideError> {
        let mut out = Vec::new();
        for index in 1..=MAX_SIGNATURES + 1 {
            let path = LookasidePath { repo: repo.clone(), manifest: manifest.clone(), index };
            let url = self.base.join(&path.to_string()).map_err(|e| LookasideError::Invalid {
                url: format!("{}{path}", self.base),
                reason: e.to_string(),
            })?;
            let Some(bytes) = self.get(&url).await? else { break };
            if index > MAX_SIGNATURES {
                return Err(LookasideError::TooMany);
            }
            signature::check_simple_signing(&bytes).map_err(|e| LookasideError::Invalid {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            out.push(bytes);
        }
        Ok(out)
    }

    /// One file: `None` for a 404 (the end of the list); retried on 5xx and transport errors.
    async fn get(&self, url: &Url) -> Result<Option<Vec<u8>>, LookasideError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.http.get(url.clone()).send().await {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status().is_success() => return read_limited(url, r).await.map(Some),
                Ok(r) => {
                    let status = r.status();
                    let e =
                        LookasideError::Status { url: url.to_string(), status: status.as_u16() };
                    if !status.is_server_error() && status != StatusCode::TOO_MANY_REQUESTS {
                        return Err(e);
                    }
                    e
                }
                Err(source) => LookasideError::Transport { url: url.to_string(), source },
            };
            if attempt >= self.retries {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt.min(5))).await;
        }
    }
}

/// A response body of at most [`MAX_SIGNATURE_SIZE`] bytes.
async fn read_limited(url: &Url, mut resp: reqwest::Response) -> Result<Vec<u8>, LookasideError> {
    let too_large = || LookasideError::TooLarge { url: url.to_string() };
    if resp.content_length().is_some_and(|n| n > MAX_SIGNATURE_SIZE) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if (out.len() + chunk.len()) as u64 > MAX_SIGNATURE_SIZE {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(source) => return Err(LookasideError::Transport { url: url.to_string(), source }),
        }
    }
}
