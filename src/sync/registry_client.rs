//! A Registry v2 pull client: anonymous, Basic and Bearer auth, pagination, retries with
//! backoff on 5xx, 429, resets and timeouts.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LINK, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use crate::config::{Credentials, SyncSettings};
use crate::model::{BlobRef, Digest, MAX_MANIFEST_SIZE, media_type};
use crate::tree::{MirrorTree, TreeError};

use super::auth::{Challenge, TokenCache, TokenResponse};
use super::{FetchedManifest, ReferrerEntry, UpstreamError, parse_referrers};

/// Guard against a server whose `Link` never ends.
const MAX_PAGES: usize = 10_000;
/// Pages of one subject's referrers followed at most.
const MAX_REFERRER_PAGES: usize = 100;

pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    credentials: Option<Credentials>,
    tokens: TokenCache,
    /// The server asked for Basic auth once; send it up front from then on.
    basic: std::sync::atomic::AtomicBool,
    settings: SyncSettings,
}

enum Auth {
    None,
    Basic,
    Bearer(String),
}

impl RegistryClient {
    pub fn new(
        base: Url,
        credentials: Option<Credentials>,
        settings: SyncSettings,
    ) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.request_timeout)
            // A transfer that stalls (no byte for this long) is cut off and retried; a slow
            // one that keeps moving may take up to `blob_timeout`.
            .read_timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| UpstreamError::Setup(e.to_string()))?;
        Ok(RegistryClient {
            http,
            base,
            credentials,
            tokens: TokenCache::default(),
            basic: Default::default(),
            settings,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry paths are valid URL paths")
    }

    fn auth_for(&self, scope: &str) -> Auth {
        if let Some(t) = self.tokens.get(scope, Instant::now()) {
            Auth::Bearer(t)
        } else if self.credentials.is_some()
            && self.basic.load(std::sync::atomic::Ordering::Relaxed)
        {
            Auth::Basic
        } else {
            Auth::None
        }
    }

    /// Send one request with auth, retrying transient failures. Returns a success response,
    /// or `NotFound` for 404, or the error.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        scope: &str,
        accept: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url.clone()).timeout(timeout);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            req = match (self.auth_for(scope), &self.credentials) {
                (Auth::Bearer(t), _) => req.bearer_auth(t),
                (Auth::Basic, Some(c)) => req.basic_auth(&c.username, Some(&c.password)),
                _ => req,
            };
            let result = req.send().await;
            let err = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    reauthed = true;
                    self.authenticate(&resp, scope).await?;
                    attempt -= 1;
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                    return Err(UpstreamError::NotFound(url.to_string()));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let body: String =
                        resp.text().await.unwrap_or_default().chars().take(300).collect();
                    let e = UpstreamError::Status {
                        url: url.to_string(),
                        status: status.as_u16(),
                        body,
                    };
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(e);
                    }
                    if let Some(secs) = retry_after.filter(|_| attempt < self.settings.retries) {
                        tokio::time::sleep(Duration::from_secs(secs.min(60))).await;
                        continue;
                    }
                    e
                }
                Err(e) => UpstreamError::Transport { url: url.to_string(), source: e },
            };
            if attempt >= self.settings.retries {
                return Err(err);
            }
            tracing::debug!(%url, attempt, error = %err, "retrying upstream request");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Answer a 401: fetch a Bearer token for the challenge, or switch to Basic.
    async fn authenticate(
        &self,
        resp: &reqwest::Response,
        scope: &str,
    ) -> Result<(), UpstreamError> {
        let header =
            resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        match Challenge::parse(header) {
            Some(Challenge::Basic) => {
                if self.credentials.is_none() {
                    return Err(UpstreamError::Auth(
                        "upstream wants Basic auth; set upstream.username and password_file".into(),
                    ));
                }
                self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                let mut url = Url::parse(&realm)
                    .map_err(|e| UpstreamError::Auth(format!("bad token realm {realm:?}: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = &service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", asked.as_deref().unwrap_or(scope));
                }
                let resp = self.token_request(&url).await?;
                if !resp.status().is_success() {
                    return Err(UpstreamError::Auth(format!(
                        "token endpoint {realm} answered {}",
                        resp.status()
                    )));
                }
                let token: TokenResponse = resp
                    .json()
                    .await
                    .map_err(|e| UpstreamError::Auth(format!("token endpoint {realm}: {e}")))?;
                let token = token.into_token(Instant::now()).ok_or_else(|| {
                    UpstreamError::Auth(format!("token endpoint {realm} sent no token"))
                })?;
                self.tokens.put(scope, token);
                Ok(())
            }
            None => Err(UpstreamError::Auth(format!(
                "upstream refused access (401) with an unsupported challenge {header:?}"
            ))),
        }
    }

    /// GET a token endpoint, retrying connection failures, timeouts and 5xx.
    async fn token_request(&self, url: &Url) -> Result<reqwest::Response, UpstreamError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.get(url.clone()).timeout(self.settings.request_timeout);
            if let Some(c) = &self.credentials {
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            let transient = match req.send().await {
                Ok(r) if !r.status().is_server_error() || attempt >= self.settings.retries => {
                    return Ok(r);
                }
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) if attempt >= self.settings.retries => {
                    return Err(UpstreamError::Transport { url: url.to_string(), source: e });
                }
                Err(e) => e.to_string(),
            };
            tracing::debug!(%url, attempt, error = %transient, "retrying token request");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Follow `n`/`last`/`Link` pagination, collecting the array field `key`.
    async fn paginated(
        &self,
        path: &str,
        key: &str,
        scope: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut url = self.url(&format!("{path}?n={}", self.settings.page_size));
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp =
                self.send(Method::GET, &url, scope, None, self.settings.request_timeout).await?;
            let next = next_page(&resp, &url);
            let body: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| UpstreamError::Invalid(format!("{url}: not a JSON page: {e}")))?;
            if let Some(items) = body.get(key).and_then(|v| v.as_array()) {
                out.extend(items.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
        Err(UpstreamError::Invalid(format!("{path}: more than {MAX_PAGES} pages")))
    }

    pub async fn repositories(&self) -> Result<Vec<String>, UpstreamError> {
        self.paginated("v2/_catalog", "repositories", "registry:catalog:*").await
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, UpstreamError> {
        self.paginated(&format!("v2/{repo}/tags/list"), "tags", &pull_scope(repo)).await
    }

    /// The digest a tag points to, from a HEAD (cheap, and not counted by rate limits).
    pub async fn manifest_digest(
        &self,
        repo: &str,
        tag: &str,
    ) -> Result<Option<Digest>, UpstreamError> {
        let url = self.url(&format!("v2/{repo}/manifests/{tag}"));
        let resp = self
            .send(
                Method::HEAD,
                &url,
                &pull_scope(repo),
                Some(media_type::ACCEPT_ALL),
                self.settings.request_timeout,
            )
            .await?;
        Ok(header_digest(&resp))
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<FetchedManifest, UpstreamError> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let too_big = || UpstreamError::Invalid(format!("{url}: manifest larger than 4 MiB"));
        self.retry_interrupted(&url, || async {
            let accept = Some(media_type::ACCEPT_ALL);
            let timeout = self.settings.request_timeout;
            let resp = self.send(Method::GET, &url, &pull_scope(repo), accept, timeout).await?;
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
            let claimed_digest = header_digest(&resp);
            if resp.content_length().is_some_and(|n| n > MAX_MANIFEST_SIZE) {
                return Err(too_big());
            }
            let bytes = resp.bytes().await.map_err(|e| interrupted(&url, e))?;
            if bytes.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(too_big());
            }
            Ok(FetchedManifest { bytes: bytes.to_vec(), content_type, claimed_digest })
        })
        .await
    }

    /// The referrers of `digest` from the OCI 1.1 referrers API, every page; `None` when the
    /// registry does not have the API (404 or another refusal, or an answer that is not an
    /// image index).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<ReferrerEntry>>, UpstreamError> {
        let mut url = self.url(&format!("v2/{repo}/referrers/{digest}"));
        let mut out = Vec::new();
        for _ in 0..MAX_REFERRER_PAGES {
            let accept = Some(media_type::OCI_INDEX);
            let timeout = self.settings.request_timeout;
            let resp = match self.send(Method::GET, &url, &pull_scope(repo), accept, timeout).await
            {
                Ok(r) => r,
                Err(UpstreamError::NotFound(_)) => return Ok(None),
                Err(UpstreamError::Status { status: 400 | 405 | 406 | 501, .. }) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let is_index =
                resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| {
                    t.split(';').next().unwrap_or(t).trim() == media_type::OCI_INDEX
                });
            if !is_index {
                return Ok(None);
            }
            let next = next_page(&resp, &url);
            if resp.content_length().is_some_and(|n| n > MAX_MANIFEST_SIZE) {
                return Err(UpstreamError::Invalid(format!("{url}: referrers larger than 4 MiB")));
            }
            let bytes = resp.bytes().await.map_err(|e| interrupted(&url, e))?;
            out.extend(
                parse_referrers(&bytes)
                    .map_err(|e| UpstreamError::Invalid(format!("{url}: {e}")))?,
            );
            match next {
                Some(n) => url = n,
                None => return Ok(Some(out)),
            }
        }
        Err(UpstreamError::Invalid(format!(
            "{url}: more than {MAX_REFERRER_PAGES} pages of referrers"
        )))
    }

    /// Download a blob into the pool, verifying its digest and size. Retries restart it.
    pub async fn fetch_blob(
        &self,
        repo: &str,
        blob: &BlobRef,
        tree: &MirrorTree,
    ) -> Result<u64, UpstreamError> {
        let url = self.url(&format!("v2/{repo}/blobs/{}", blob.digest));
        self.retry_interrupted(&url, || async {
            let resp = self
                .send(Method::GET, &url, &pull_scope(repo), None, self.settings.blob_timeout)
                .await?;
            let mut writer = tree.writer(blob.digest.clone()).await?;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                writer.write(&chunk.map_err(|e| interrupted(&url, e))?).await?;
                if writer.written() > blob.size {
                    break; // longer than declared: finish() reports the mismatch
                }
            }
            Ok(writer.finish(Some(blob.size)).await?)
        })
        .await
    }

    /// Run `attempt` again when a response body broke off or its bytes did not verify (a
    /// bad transfer; what fails every time fails the tag). `send` already retries the
    /// request itself on 5xx, 429, resets and timeouts.
    async fn retry_interrupted<T, F, Fut>(
        &self,
        url: &Url,
        mut attempt: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match attempt().await {
                Err(
                    e @ (UpstreamError::Interrupted { .. }
                    | UpstreamError::Tree(
                        TreeError::DigestMismatch { .. } | TreeError::SizeMismatch { .. },
                    )),
                ) if n < self.settings.retries => {
                    tracing::debug!(%url, attempt = n, error = %e, "retrying an interrupted transfer");
                    tokio::time::sleep(backoff(n)).await;
                }
                other => return other,
            }
        }
    }
}

fn interrupted(url: &Url, source: reqwest::Error) -> UpstreamError {
    UpstreamError::Interrupted { url: url.to_string(), source }
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn header_digest(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers().get("docker-content-digest")?.to_str().ok()?.parse().ok()
}

/// Exponential backoff with jitter: ~250 ms, 500 ms, 1 s, ... capped at 10 s.
fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(6).saturating_sub(1)).min(10_000);
    Duration::from_millis(base + rand::random_range(0..=base / 4))
}

/// The next page a response's `Link` header names, resolved against `url`.
fn next_page(resp: &reqwest::Response, url: &Url) -> Option<Url> {
    let link = resp.headers().get(LINK)?.to_str().ok()?;
    url.join(&next_link(link)?).ok()
}

/// The target of `rel="next"` in a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"<x>; rel="prev", </y>; rel="next""#).as_deref(), Some("/y"));
        assert_eq!(next_link("garbage"), None);
        let base = Url::parse("http://r:5000/v2/_catalog?n=1").unwrap();
        assert_eq!(
            base.join("/v2/_catalog?last=a%2Fb&n=1").unwrap().as_str(),
            "http://r:5000/v2/_catalog?last=a%2Fb&n=1"
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert!(
            backoff(1) >= Duration::from_millis(250) && backoff(1) <= Duration::from_millis(313)
        );
        assert!(backoff(3) >= Duration::from_millis(1000));
        assert!(backoff(30) <= Duration::from_millis(12_500));
    }
}
