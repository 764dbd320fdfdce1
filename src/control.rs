//! The local control socket: operators' CLI commands reach a running `wharf serve` through
//! `<data_dir>/control.sock` (owner-only), because the store file is locked by the server.
//! Protocol: one JSON request line; JSON reply lines (progress, then a final result).
//! Imports `scheduler`, `sync`, `model`; never actix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::model::SyncRun;
use crate::scheduler::Jobs;
use crate::sync::ProgressSnapshot;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Sync,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Progress(ProgressSnapshot),
    Done(Box<SyncRun>),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another wharf serve answers on {0}")]
    InUse(PathBuf),
    #[error("the running server reported: {0}")]
    Remote(String),
    #[error("control protocol: {0}")]
    Protocol(String),
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
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let jobs = jobs.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, jobs).await {
                tracing::warn!(error = %e, "control connection failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, jobs: Arc<Jobs>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = |r: &Reply| {
        let mut s = serde_json::to_string(r).expect("replies serialize");
        s.push('\n');
        s
    };
    match serde_json::from_str::<Request>(&line) {
        Err(e) => {
            write.write_all(reply(&Reply::Error(format!("bad request: {e}"))).as_bytes()).await?
        }
        Ok(Request::Sync) => {
            // The run is its own task: a client that goes away or stops reading neither
            // cancels nor stalls it.
            let run = tokio::spawn({
                let jobs = jobs.clone();
                async move { jobs.run_sync().await }
            });
            tokio::pin!(run);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut client_reads = true;
            let result = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tick.tick(), if client_reads => {
                        let p = reply(&Reply::Progress(jobs.sync_progress()));
                        let sent = tokio::time::timeout(Duration::from_secs(1), write.write_all(p.as_bytes())).await;
                        client_reads = matches!(sent, Ok(Ok(())));
                    }
                }
            };
            let last = match result {
                Ok(Ok(run)) => Reply::Done(Box::new(run)),
                Ok(Err(e)) => Reply::Error(e.to_string()),
                Err(e) => Reply::Error(format!("sync task: {e}")),
            };
            write.write_all(reply(&last).as_bytes()).await?;
        }
    }
    write.shutdown().await
}

/// Ask a running server to sync. `Ok(None)`: no server answers on `path`.
pub async fn request_sync(
    path: &Path,
    mut on_progress: impl FnMut(&ProgressSnapshot),
) -> Result<Option<SyncRun>, ControlError> {
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
    let mut req = serde_json::to_string(&Request::Sync).expect("requests serialize");
    req.push('\n');
    write.write_all(req.as_bytes()).await.map_err(io)?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await.map_err(io)? {
        match serde_json::from_str::<Reply>(&line)
            .map_err(|e| ControlError::Protocol(e.to_string()))?
        {
            Reply::Progress(p) => on_progress(&p),
            Reply::Done(run) => return Ok(Some(*run)),
            Reply::Error(e) => return Err(ControlError::Remote(e)),
        }
    }
    Err(ControlError::Protocol("server closed the connection without a result".into()))
}
