//! Operator commands, executed the same way whether they come over the local control socket
//! of a running `wharf serve` (`<data_dir>/control.sock`, owner-only) or from a CLI that
//! opened the store itself because no server runs. Protocol: one JSON request line; JSON
//! reply lines (progress while a sync runs, then one result).
//! Imports `scheduler`, `sync`, `crawl`, `store`, `model`; never actix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::accounts;
use crate::crawl::{CrawlReport, Propagation};
use crate::model::{
    AuditEntry, CrawlResult, EmailAddress, MirrorName, MirrorPatch, MirrorStatus, Role, SyncRun,
    User, UserName,
};
use crate::scheduler::Jobs;
use crate::service::{self, Actor, MirrorChange};
use crate::store::{MirrorEditError, UserChange};
use crate::sync::ProgressSnapshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Sync,
    Crawl,
    MirrorAdd {
        name: String,
        patch: MirrorPatch,
    },
    MirrorSet {
        name: String,
        patch: MirrorPatch,
    },
    MirrorRemove {
        name: String,
    },
    MirrorList,
    MirrorShow {
        name: String,
    },
    /// `password`: `None` generates one (shown once in the reply).
    UserAdd {
        name: String,
        role: String,
        password: Option<String>,
    },
    UserPasswd {
        name: String,
        password: Option<String>,
    },
    UserDisable {
        name: String,
    },
    /// Set the address notices go to; `""` removes it.
    UserEmail {
        name: String,
        email: String,
    },
    UserList,
    /// Write a consistent copy of the store to this absolute path.
    Backup {
        path: std::path::PathBuf,
    },
    /// Check the pool against the store; `repair` fetches what is missing or damaged.
    Verify {
        repair: bool,
    },
}

/// A mirror with its recent crawls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorDetail {
    #[serde(flatten)]
    pub status: MirrorStatus,
    pub crawls: Vec<CrawlResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Progress(ProgressSnapshot),
    Synced(Box<SyncRun>),
    Crawled(CrawlReport),
    Mirrors {
        mirrors: Vec<MirrorStatus>,
        propagation: Propagation,
    },
    Mirror(Box<MirrorDetail>),
    Removed(String),
    /// A created or changed user, with the generated password if one was generated.
    User {
        user: User,
        generated_password: Option<String>,
    },
    Users(Vec<User>),
    BackedUp {
        path: std::path::PathBuf,
        records: u64,
    },
    Verified(crate::sync::VerifyReport),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another wharf serve answers on {0}")]
    InUse(PathBuf),
    #[error("control protocol: {0}")]
    Protocol(String),
}

/// What a request changes, for the audit log: (action, target, detail); `None` for reads
/// and runs (runs have their own records).
fn audited(request: &Request) -> Option<(&'static str, String, String)> {
    match request {
        Request::UserAdd { name, role, .. } => {
            Some(("user.create", name.clone(), format!("role={role}")))
        }
        Request::UserPasswd { name, .. } => Some(("user.passwd", name.clone(), String::new())),
        Request::UserDisable { name } => Some(("user.disable", name.clone(), String::new())),
        Request::UserEmail { name, email } => Some(("user.email", name.clone(), email.clone())),
        Request::Verify { repair: true } => Some(("tree.repair", "pool".into(), String::new())),
        // Mirror changes are audited by `service::change_mirror`.
        Request::MirrorAdd { .. } | Request::MirrorSet { .. } | Request::MirrorRemove { .. } => {
            None
        }
        Request::Sync
        | Request::Crawl
        | Request::Backup { .. }
        | Request::Verify { repair: false }
        | Request::MirrorList
        | Request::MirrorShow { .. }
        | Request::UserList => None,
    }
}

/// Carry out one request. Mirror edits and runs rebuild the selection snapshot; changes are
/// recorded in the audit log as made by `cli` (the local command line).
pub async fn execute(jobs: &Jobs, request: Request) -> Reply {
    let audit = audited(&request);
    let reply = execute_unaudited(jobs, request).await;
    if let (Some((action, target, detail)), false) = (audit, matches!(reply, Reply::Error(_))) {
        let entry = AuditEntry {
            at: jobs.sync_ctx().clock.now(),
            actor: "cli".into(),
            action: action.into(),
            target,
            detail,
        };
        if let Err(e) = jobs.store().record_audit(entry).await {
            tracing::error!(error = %e, "recording the audit log");
        }
    }
    reply
}

async fn execute_unaudited(jobs: &Jobs, request: Request) -> Reply {
    let store = jobs.store();
    let name = |n: &str| n.parse::<MirrorName>().map_err(|e| e.to_string());
    let mirror = |n: &str, change: MirrorChange, action: &'static str| {
        let name = name(n);
        async move {
            let name = name?;
            let changed = service::change_mirror(jobs, &Actor::Cli, &name, change, action)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(match changed {
                Some(status) => {
                    Reply::Mirror(Box::new(MirrorDetail { status, crawls: Vec::new() }))
                }
                None => Reply::Removed(name.to_string()),
            })
        }
    };
    let result: Result<Reply, String> = async {
        match request {
            Request::Sync => {
                jobs.run_sync().await.map(|r| Reply::Synced(Box::new(r))).map_err(|e| e.to_string())
            }
            Request::Crawl => jobs.run_crawl().await.map(Reply::Crawled).map_err(|e| e.to_string()),
            Request::MirrorAdd { name: n, patch } => {
                mirror(&n, MirrorChange::Add(patch), "mirror.add").await
            }
            Request::MirrorSet { name: n, patch } => {
                mirror(&n, MirrorChange::Set(patch), "mirror.set").await
            }
            Request::MirrorRemove { name: n } => {
                mirror(&n, MirrorChange::Remove, "mirror.remove").await
            }
            Request::MirrorList => {
                let mirrors = store.mirrors().await.map_err(|e| e.to_string())?;
                let generation = store.generation().await.map_err(|e| e.to_string())?;
                let propagation = Propagation::of(generation, &mirrors);
                Ok(Reply::Mirrors { mirrors, propagation })
            }
            Request::UserAdd { name: n, role, password } => {
                let name = n.parse::<UserName>().map_err(|e| e.to_string())?;
                let role = role.parse::<Role>().map_err(|e| e.to_string())?;
                let now = jobs.sync_ctx().clock.now();
                let (user, generated_password) =
                    accounts::add_user(store, &name, role, password, now)
                        .await
                        .map_err(|e| e.to_string())?;
                Ok(Reply::User { user, generated_password })
            }
            Request::UserPasswd { name: n, password } => {
                let name = n.parse::<UserName>().map_err(|e| e.to_string())?;
                let (user, generated_password) = accounts::set_password(store, &name, password)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Reply::User { user, generated_password })
            }
            Request::UserDisable { name: n } => {
                let name = n.parse::<UserName>().map_err(|e| e.to_string())?;
                let user = store
                    .update_user(&name, UserChange { disabled: Some(true), ..Default::default() })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Reply::User { user, generated_password: None })
            }
            Request::UserEmail { name: n, email } => {
                let name = n.parse::<UserName>().map_err(|e| e.to_string())?;
                let email = EmailAddress::optional(&email).map_err(|e| e.to_string())?;
                let user =
                    accounts::set_email(store, &name, email).await.map_err(|e| e.to_string())?;
                Ok(Reply::User { user, generated_password: None })
            }
            Request::UserList => Ok(Reply::Users(store.users().await.map_err(|e| e.to_string())?)),
            Request::Backup { path } => {
                if !path.is_absolute() {
                    return Err(format!("{}: the backup path must be absolute", path.display()));
                }
                let records = store.backup_to(path.clone()).await.map_err(|e| e.to_string())?;
                Ok(Reply::BackedUp { path, records })
            }
            Request::Verify { repair } => {
                jobs.verify(repair).await.map(Reply::Verified).map_err(|e| e.to_string())
            }
            Request::MirrorShow { name: n } => {
                let n = name(&n)?;
                let status = store
                    .mirror(&n)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| MirrorEditError::Unknown(n.clone()).to_string())?;
                let crawls = store.crawl_history(&n, 20).await.map_err(|e| e.to_string())?;
                Ok(Reply::Mirror(Box::new(MirrorDetail { status, crawls })))
            }
        }
    }
    .await;
    result.unwrap_or_else(Reply::Error)
}

/// Bind the control socket, replacing a stale one, with owner-only permissions.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io { path: path.to_owned(), source };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Serve control requests until the listener is dropped.
pub async fn serve(listener: UnixListener, jobs: Arc<Jobs>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let jobs = jobs.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, jobs).await {
                tracing::warn!(error = %e, "control connection failed");
            }
        });
    }
}

fn line(r: &Reply) -> String {
    let mut s = serde_json::to_string(r).expect("replies serialize");
    s.push('\n');
    s
}

async fn handle(stream: UnixStream, jobs: Arc<Jobs>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut request = String::new();
    BufReader::new(read).read_line(&mut request).await?;
    let request = match serde_json::from_str::<Request>(&request) {
        Ok(r) => r,
        Err(e) => {
            write.write_all(line(&Reply::Error(format!("bad request: {e}"))).as_bytes()).await?;
            return write.shutdown().await;
        }
    };
    // The request runs as its own task: a client that goes away or stops reading neither
    // cancels nor stalls it.
    let show_progress = matches!(request, Request::Sync);
    let run = tokio::spawn({
        let jobs = jobs.clone();
        async move { execute(&jobs, request).await }
    });
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut client_reads = show_progress;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick(), if client_reads => {
                let p = line(&Reply::Progress(jobs.sync_progress()));
                let sent = tokio::time::timeout(Duration::from_secs(1), write.write_all(p.as_bytes())).await;
                client_reads = matches!(sent, Ok(Ok(())));
            }
        }
    };
    let last = result.unwrap_or_else(|e| Reply::Error(format!("task: {e}")));
    write.write_all(line(&last).as_bytes()).await?;
    write.shutdown().await
}

/// Send a request to a running server. `Ok(None)`: no server answers on `path`.
pub async fn call(
    path: &Path,
    request: &Request,
    mut on_progress: impl FnMut(&ProgressSnapshot),
) -> Result<Option<Reply>, ControlError> {
    let io = |source| ControlError::Io { path: path.to_owned(), source };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io(e)),
    };
    let (read, mut write) = stream.into_split();
    let mut req = serde_json::to_string(request).expect("requests serialize");
    req.push('\n');
    write.write_all(req.as_bytes()).await.map_err(io)?;
    let mut lines = BufReader::new(read).lines();
    while let Some(l) = lines.next_line().await.map_err(io)? {
        match serde_json::from_str::<Reply>(&l)
            .map_err(|e| ControlError::Protocol(e.to_string()))?
        {
            Reply::Progress(p) => on_progress(&p),
            other => return Ok(Some(other)),
        }
    }
    Err(ControlError::Protocol("server closed the connection without a result".into()))
}
