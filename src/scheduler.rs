//! The scheduler: maps cron strings to jobs, keeps runs of one job from overlapping (whoever
//! asks: cron, the control socket, later the admin UI), and stops on shutdown.
//! Jobs are plain functions (`sync::run_once`); tests call them directly.
//! Imports `sync`, `config`, `model`; never actix.

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::model::SyncRun;
use crate::sync::{self, ProgressSnapshot, SyncCtx, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler: {0}")]
    Cron(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// The jobs of one Wharf instance, each behind its own lock.
pub struct Jobs {
    sync: SyncCtx,
    sync_lock: tokio::sync::Mutex<()>,
}

impl Jobs {
    pub fn new(sync: SyncCtx) -> Arc<Jobs> {
        Arc::new(Jobs { sync, sync_lock: tokio::sync::Mutex::new(()) })
    }

    /// Run a sync now, after any running one finishes.
    pub async fn run_sync(&self) -> Result<SyncRun, SyncError> {
        let _running = self.sync_lock.lock().await;
        sync::run_once(&self.sync).await
    }

    /// Run a sync unless one is running (what a cron tick does).
    pub async fn sync_if_idle(&self) -> Option<Result<SyncRun, SyncError>> {
        let _running = self.sync_lock.try_lock().ok()?;
        Some(sync::run_once(&self.sync).await)
    }

    pub fn sync_progress(&self) -> ProgressSnapshot {
        self.sync.progress.snapshot()
    }

    pub fn sync_ctx(&self) -> &SyncCtx {
        &self.sync
    }
}

/// Start the cron schedules. The caller keeps the returned scheduler and shuts it down.
pub async fn start(jobs: Arc<Jobs>, sync_cron: &str) -> Result<JobScheduler, SchedulerError> {
    let sched = JobScheduler::new().await?;
    sched
        .add(Job::new_async(sync_cron, move |_id, _sched| {
            let jobs = jobs.clone();
            Box::pin(async move {
                match jobs.sync_if_idle().await {
                    None => tracing::info!("scheduled sync skipped: a sync is still running"),
                    Some(Err(e)) => tracing::error!(error = %e, "scheduled sync failed"),
                    Some(Ok(_)) => {}
                }
            })
        })?)
        .await?;
    sched.start().await?;
    Ok(sched)
}
