//! `POST /hooks/registry`: the upstream registry's push notifications (distribution's
//! notification envelope). A push of a wanted repository queues a sync of that repository;
//! pushes arriving within the debounce window are synced together, after any running sync
//! (never overlapping it). Authenticated by a shared secret sent as a bearer token.
//! Imports `model`, `config` (the secret type) and `scheduler`; never `registry` or `admin`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::config::Secret;
use crate::model::RepoName;
use crate::scheduler::Jobs;

/// The largest notification body accepted.
pub const MAX_BODY: usize = crate::edge::MAX_HOOK_BODY;
/// Pushed repositories waiting for their sync; when full, calls get 503 (distribution
/// retries them later).
pub const QUEUE: usize = 1024;

pub struct HookState {
    pub secret: Option<Secret>,
    /// How long reading a notification body may take (`server.client_timeout`).
    pub body_timeout: Duration,
    pub queue: mpsc::Sender<RepoName>,
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    action: String,
    target: Target,
}

#[derive(Deserialize)]
struct Target {
    repository: String,
    #[serde(default)]
    tag: Option<String>,
}

fn refuse(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

/// The repositories a notification envelope reports pushes to (names that do not parse are
/// logged and skipped).
pub(crate) fn pushed_repos(body: &[u8]) -> Result<Vec<RepoName>, String> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("not a notification envelope: {e}"))?;
    let mut repos = Vec::new();
    for event in envelope.events.iter().filter(|e| e.action == "push") {
        match event.target.repository.parse::<RepoName>() {
            Ok(repo) => {
                tracing::debug!(%repo, tag = ?event.target.tag, "push notification");
                repos.push(repo);
            }
            Err(e) => tracing::warn!(error = %e, "push notification for an invalid name"),
        }
    }
    Ok(repos)
}

/// Read a body of at most `limit` bytes within `timeout` (a stalled sender is cut off).
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<web::BytesMut, &'static str> {
    use futures_util::StreamExt;
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| "the body could not be read")?;
            if body.len() + chunk.len() > limit {
                return Err("the body is too large");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err("the body was not sent in time"))
}

/// Queue a sync for each pushed repository; answers 202 with how many were queued. The
/// secret is checked from the headers before a byte of the body is read.
pub async fn registry(
    req: HttpRequest,
    state: web::Data<HookState>,
    payload: web::Payload,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let Some(secret) = &state.secret else {
        return refuse(StatusCode::NOT_FOUND, "the webhook is off (hooks.secret_file is not set)");
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !secret.matches(given) {
        tracing::warn!(peer = ?req.peer_addr(), "webhook call with a wrong or missing secret");
        return refuse(StatusCode::UNAUTHORIZED, "wrong or missing bearer secret");
    }
    let body = match read_body(payload, MAX_BODY, state.body_timeout).await {
        Ok(b) => b,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let repos = match pushed_repos(&body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    let mut queued = 0;
    for repo in repos {
        if state.queue.try_send(repo).is_err() {
            tracing::warn!("push queue full: asking the registry to retry");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later");
        }
        queued += 1;
    }
    HttpResponse::Accepted().json(serde_json::json!({ "queued": queued }))
}

/// Sync what the webhook queued: wait for the first push, gather the pushes of the next
/// `debounce`, sync those repositories (waiting for a running sync), repeat.
pub async fn sync_pushed(mut queue: mpsc::Receiver<RepoName>, jobs: Arc<Jobs>, debounce: Duration) {
    while let Some(first) = queue.recv().await {
        let mut repos = BTreeSet::from([first]);
        let window = tokio::time::sleep(debounce);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                next = queue.recv() => match next {
                    Some(r) => { repos.insert(r); }
                    None => break,
                },
            }
        }
        let names: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
        tracing::info!(repos = ?names, "syncing pushed repositories");
        match jobs.sync_repos(repos).await {
            Ok(run) => {
                tracing::info!(run = run.id, outcome = ?run.outcome, "push-triggered sync finished")
            }
            Err(e) => tracing::error!(error = %e, "push-triggered sync failed"),
        }
    }
}
