//! The scheduler: maps cron strings to jobs, keeps runs of one job from overlapping (whoever
//! asks: cron, the control socket, later the admin UI), and stops on shutdown. After every
//! sync commit (through the sync's hook) it rebuilds the selection's content facts; after a
//! crawl or a mirror edit only its mirrors.
//! Jobs are plain functions (`sync::run_once`, `crawl::run_once`); tests call them directly.
//! Imports `sync`, `crawl`, `geo`, `store`, `config`, `model`; never actix.

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::crawl::{self, CrawlCtx, CrawlError, CrawlReport};
use crate::geo::Selector;
use crate::metrics::JobMetrics;
use crate::model::SyncRun;
use crate::store::{CommitOutcome, Store, StoreError};
use crate::sync::{self, ProgressSnapshot, Scope, SyncCtx, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler: {0}")]
    Cron(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// The cron schedules (6 fields, seconds first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedules {
    pub sync: String,
    pub crawl: String,
}

/// The jobs of one Wharf instance, each behind its own lock, and the selection they feed.
pub struct Jobs {
    sync: SyncCtx,
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    crawl: CrawlCtx,
    crawl_lock: Arc<tokio::sync::Mutex<()>>,
    selector: Arc<Selector>,
    /// Serialises snapshot rebuilds, so an older read never replaces a newer snapshot.
    refresh_lock: Arc<tokio::sync::Mutex<()>>,
    pub metrics: Arc<JobMetrics>,
    schedules: std::sync::RwLock<Schedules>,
}

impl Jobs {
    pub fn new(
        mut sync: SyncCtx,
        crawl: CrawlCtx,
        selector: Arc<Selector>,
        schedules: Schedules,
    ) -> Arc<Jobs> {
        let refresh_lock = Arc::new(tokio::sync::Mutex::new(()));
        let (store, sel, lock) = (sync.store.clone(), selector.clone(), refresh_lock.clone());
        sync.after_commit = Some(Arc::new(move |outcome| {
            let (store, sel, lock) = (store.clone(), sel.clone(), lock.clone());
            Box::pin(async move {
                if let Err(e) = refresh_content(&store, &sel, &lock, Some(outcome)).await {
                    tracing::error!(error = %e, "updating the content facts");
                }
            })
        }));
        Arc::new(Jobs {
            sync,
            sync_lock: Arc::default(),
            crawl,
            crawl_lock: Arc::default(),
            selector,
            refresh_lock,
            metrics: Arc::default(),
            schedules: std::sync::RwLock::new(schedules),
        })
    }

    /// The schedules in force.
    pub fn schedules(&self) -> Schedules {
        self.schedules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Change the schedules (the caller restarts the cron scheduler with [`start`]).
    pub fn set_schedules(&self, s: Schedules) {
        *self.schedules.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Run a sync (the caller holds the sync lock) and count it.
    async fn sync_locked(&self, scope: &Scope) -> Result<SyncRun, SyncError> {
        let started = std::time::Instant::now();
        let result = sync::run_scoped(&self.sync, scope).await;
        let interrupted = result
            .as_ref()
            .is_ok_and(|r| r.error.as_deref() == Some(SyncError::Interrupted.to_string().as_str()));
        let run = result.as_ref().ok().filter(|_| !interrupted);
        self.metrics.sync_finished(run, started.elapsed());
        result
    }

    /// Sync only these repositories (a push notification), after any running sync finishes.
    pub async fn sync_repos(
        &self,
        repos: std::collections::BTreeSet<crate::model::RepoName>,
    ) -> Result<SyncRun, SyncError> {
        let _running = self.sync_lock.lock().await;
        self.sync_locked(&Scope::Repos(repos)).await
    }

    /// Verify the pool (and repair it) while no sync runs.
    pub async fn verify(&self, repair: bool) -> Result<sync::VerifyReport, SyncError> {
        let _running = self.sync_lock.lock().await;
        let report = sync::verify(&self.sync, repair).await?;
        if repair {
            refresh_content(&self.sync.store, &self.selector, &self.refresh_lock, None).await?;
        }
        Ok(report)
    }

    /// Ask a running sync to stop at its next safe point and wait until it has; later
    /// syncs stop at once. Called on shutdown.
    pub async fn stop_sync(&self) {
        self.sync.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.sync_lock.lock().await;
    }

    /// Run a sync now, after any running one finishes.
    /// (The selection snapshot is rebuilt by the sync's after-commit hook, once.)
    pub async fn run_sync(&self) -> Result<SyncRun, SyncError> {
        let _running = self.sync_lock.lock().await;
        self.sync_locked(&Scope::All).await
    }

    /// Run a sync unless one is running (what a cron tick does).
    pub async fn sync_if_idle(&self) -> Option<Result<SyncRun, SyncError>> {
        let _running = self.sync_lock.try_lock().ok()?;
        Some(self.sync_locked(&Scope::All).await)
    }

    /// Start a sync in the background unless one is running (the admin UI's "Sync now").
    /// Returns whether one was started.
    pub fn start_sync(self: &Arc<Self>) -> bool {
        let Ok(running) = self.sync_lock.clone().try_lock_owned() else { return false };
        let jobs = self.clone();
        tokio::spawn(async move {
            let _running = running;
            if let Err(e) = jobs.sync_locked(&Scope::All).await {
                tracing::error!(error = %e, "sync failed");
            }
        });
        true
    }

    /// Start a crawl in the background unless one is running. Returns whether one was started.
    pub fn start_crawl(self: &Arc<Self>) -> bool {
        let Ok(running) = self.crawl_lock.clone().try_lock_owned() else { return false };
        let jobs = self.clone();
        tokio::spawn(async move {
            let _running = running;
            jobs.crawl_and_refresh().await;
        });
        true
    }

    pub fn crawl_running(&self) -> bool {
        self.crawl_lock.try_lock().is_err()
    }

    /// Crawl the mirrors now, after any running crawl finishes.
    pub async fn run_crawl(&self) -> Result<CrawlReport, CrawlError> {
        let _running = self.crawl_lock.lock().await;
        let report = self.crawl_locked().await?;
        self.refresh_selection().await?;
        Ok(report)
    }

    /// Run a crawl (the caller holds the crawl lock) and count it.
    async fn crawl_locked(&self) -> Result<CrawlReport, CrawlError> {
        let started = std::time::Instant::now();
        let result = crawl::run_once(&self.crawl).await;
        let (passed, failed) = match &result {
            Ok(r) => {
                let failed = r.results.iter().filter(|c| c.error.is_some()).count() as u64;
                (r.results.len() as u64 - failed, failed)
            }
            Err(_) => (0, 0),
        };
        self.metrics.crawl_finished(result.is_ok(), passed, failed, started.elapsed());
        result
    }

    async fn crawl_if_idle(&self) {
        let Ok(_running) = self.crawl_lock.try_lock() else {
            tracing::info!("scheduled crawl skipped: a crawl is still running");
            return;
        };
        self.crawl_and_refresh().await;
    }

    /// Crawl and rebuild the snapshot; the caller holds the crawl lock.
    async fn crawl_and_refresh(&self) {
        if let Err(e) = self.crawl_locked().await {
            tracing::error!(error = %e, "crawl failed");
        }
        if let Err(e) = self.refresh_selection().await {
            tracing::error!(error = %e, "rebuilding the selection snapshot");
        }
    }

    /// Rebuild the mirrors' part of the selection from the store (after a crawl or an edit):
    /// cheap, and independent of the catalog's size.
    pub async fn refresh_selection(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        self.selector.install_mirrors(self.sync.store.mirrors().await?);
        Ok(())
    }

    /// At start, while no sync runs: finish the publication of a run interrupted after
    /// its commit (see `sync::finish_publication`).
    pub async fn finish_publication(&self) -> Result<bool, SyncError> {
        let _running = self.sync_lock.lock().await;
        sync::finish_publication(&self.sync).await
    }

    /// At start, once serving, while no sync runs: adopt pool files a sync cut off by a
    /// crash or a kill left behind.
    pub async fn adopt_orphans(&self) -> Result<usize, SyncError> {
        let _running = self.sync_lock.lock().await;
        sync::adopt_orphans(&self.sync).await
    }

    /// Rebuild both parts of the selection from the store (at start).
    pub async fn load_selection(&self) -> Result<(), StoreError> {
        refresh_content(&self.sync.store, &self.selector, &self.refresh_lock, None).await?;
        self.refresh_selection().await
    }

    pub fn store(&self) -> &Store {
        &self.sync.store
    }

    pub fn selector(&self) -> &Arc<Selector> {
        &self.selector
    }

    pub fn sync_progress(&self) -> ProgressSnapshot {
        self.sync.progress.snapshot()
    }

    pub fn sync_ctx(&self) -> &SyncCtx {
        &self.sync
    }
}

/// Bring the content facts up to date: after a commit, by applying what it changed to the
/// current facts (when they are those it started from); else by reading them from the store.
async fn refresh_content(
    store: &Store,
    selector: &Selector,
    lock: &tokio::sync::Mutex<()>,
    commit: Option<Arc<CommitOutcome>>,
) -> Result<(), StoreError> {
    let _one_at_a_time = lock.lock().await;
    let current = selector.snapshot().content().clone();
    let patch = commit.filter(|c| c.delta.is_some() && c.generation_before == current.generation);
    let facts = match patch {
        Some(c) => tokio::task::spawn_blocking(move || {
            let delta = c.delta.as_ref().expect("checked");
            current.patched(c.generation, delta, &c.collected)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?,
        None => store.pool_facts().await?,
    };
    selector.install_content(facts);
    Ok(())
}

/// Start the cron schedules. The caller keeps the returned scheduler and shuts it down.
pub async fn start(jobs: Arc<Jobs>) -> Result<JobScheduler, SchedulerError> {
    let Schedules { sync: sync_cron, crawl: crawl_cron } = jobs.schedules();
    let (sync_cron, crawl_cron) = (sync_cron.as_str(), crawl_cron.as_str());
    let sched = JobScheduler::new().await?;
    let sync_jobs = jobs.clone();
    sched
        .add(Job::new_async(sync_cron, move |_id, _sched| {
            let jobs = sync_jobs.clone();
            Box::pin(async move {
                match jobs.sync_if_idle().await {
                    None => tracing::info!("scheduled sync skipped: a sync is still running"),
                    Some(Err(e)) => tracing::error!(error = %e, "scheduled sync failed"),
                    Some(Ok(_)) => {}
                }
            })
        })?)
        .await?;
    sched
        .add(Job::new_async(crawl_cron, move |_id, _sched| {
            let jobs = jobs.clone();
            Box::pin(async move { jobs.crawl_if_idle().await })
        })?)
        .await?;
    sched.start().await?;
    Ok(sched)
}
