//! Wiring: open the store and the tree, build the jobs, start the scheduler, the control
//! socket, the webhook queue and the HTTP(S) server; handle SIGTERM (graceful stop: requests
//! finish, a running sync stops at a safe point) and SIGHUP (reload). Everything long-lived
//! is created once here, outside the per-worker `HttpServer::new` factory.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use actix_web::web;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::control;
use crate::crawl::{CrawlCtx, CrawlError};
use crate::geo::{GeoDb, RedirectCounters, Selector};
use crate::model::hour_of;
use crate::registry::{self, RegistryState};
use crate::scheduler::{self, Jobs, Schedules};
use crate::store::{Store, StoreError};
use crate::sync::{SyncCtx, SyncError};
use crate::tls::{CertStore, TlsError};
use crate::tree::{MirrorTree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tree(#[from] TreeError),
    #[error("{0}")]
    Sync(#[from] SyncError),
    #[error("{0}")]
    Scheduler(#[from] scheduler::SchedulerError),
    #[error("{0}")]
    Crawl(#[from] CrawlError),
    #[error("{0}")]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// Reads the configuration again (for SIGHUP).
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;
/// Sets the log filter (for SIGHUP).
pub type LogFilterSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// An opened Wharf instance: store, tree and jobs, not yet serving.
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub tree: MirrorTree,
    pub jobs: Arc<Jobs>,
    pub geo: Arc<GeoDb>,
    pub clock: Arc<dyn Clock>,
    notices: Option<tokio::sync::mpsc::Receiver<crate::crawl::Crawled>>,
    reload_config: Option<ConfigSource>,
    set_log_filter: Option<LogFilterSetter>,
}

impl App {
    /// Create the data dir, open the store (takes its file lock; owner-only) and the tree.
    /// A new data dir is made traversable (0755): the default tree lives in it and an rsync
    /// daemon or web server serving the tree may run as another user.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<App, AppError> {
        let io = |what: String| move |source| AppError::Io { what, source };
        if !config.data_dir.is_dir() {
            // An existing data dir keeps the mode its operator gave it.
            std::fs::create_dir_all(&config.data_dir)
                .and_then(|()| {
                    let mode = std::fs::Permissions::from_mode(0o755);
                    std::fs::set_permissions(&config.data_dir, mode)
                })
                .map_err(io(format!("creating data dir {}", config.data_dir.display())))?;
        }
        let store = Store::open_with_cache(&config.store_path(), config.store_cache)?;
        std::fs::set_permissions(config.store_path(), std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("restricting {}", config.store_path().display())))?;
        let tree = MirrorTree::open(&config.tree_dir, &config.tmp_dir())?;
        let selector = Arc::new(Selector::new(config.fallback_url.clone(), config.require_https));
        let sel = selector.clone();
        let content: crate::store::ContentSource =
            Arc::new(move || sel.snapshot().content().clone());
        let mut sync = SyncCtx::new(&config, store.clone(), tree.clone(), clock.clone())?;
        sync.content = Some(content.clone());
        let mut crawl = CrawlCtx::new(store.clone(), content, config.crawl.clone(), clock.clone())?;
        // Crawl reports for notices; read by the server (`start`), dropped by a CLI run.
        let notices = config.notify.enabled().then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(crate::notify::QUEUE);
            crawl.events = Some(tx);
            rx
        });
        let geo =
            Arc::new(GeoDb::open(config.geoip_database.as_deref(), config.asn_database.as_deref()));
        let schedules =
            Schedules { sync: config.sync_schedule.clone(), crawl: config.crawl_schedule.clone() };
        let jobs = Jobs::new(sync, crawl, selector, schedules);
        Ok(App {
            config: Arc::new(config),
            store,
            tree,
            jobs,
            geo,
            clock,
            notices,
            reload_config: None,
            set_log_filter: None,
        })
    }

    /// What SIGHUP re-reads: the configuration (TLS files, schedules, log level) and sets.
    pub fn with_reload(mut self, config: ConfigSource, log: Option<LogFilterSetter>) -> App {
        self.reload_config = Some(config);
        self.set_log_filter = log;
        self
    }

    /// Serve until SIGTERM or SIGINT (graceful stop); SIGHUP reloads.
    pub async fn serve(self, listener: TcpListener) -> Result<(), AppError> {
        self.start(listener).await?.run_until_signalled().await
    }

    /// Start serving; returns at once with a handle. Tells systemd READY=1 (when started
    /// by it) once every listener is bound and the selection state is loaded.
    pub async fn start(mut self, listener: TcpListener) -> Result<Running, AppError> {
        let io = |what: String| move |source| AppError::Io { what, source };
        let addr = listener.local_addr().map_err(io("listener".into()))?;
        // Everything that can refuse to start does so before anything is spawned: the other
        // listeners (with `[admin] listen`, the admin UI answers only there and the registry
        // only on the main listener) and the TLS certificate.
        let admin_listener = match self.config.admin_listen {
            Some(a) => Some(TcpListener::bind(a).map_err(io(format!("listening on {a}")))?),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let (certs, tls_listener) = match &self.config.tls {
            Some(tls) => (
                Some(CertStore::open(&tls.cert, &tls.key)?),
                Some(
                    TcpListener::bind(tls.listen)
                        .map_err(io(format!("listening on {}", tls.listen)))?,
                ),
            ),
            None => (None, None),
        };
        let tls_addr = tls_listener.as_ref().and_then(|l| l.local_addr().ok());
        if !crate::accounts::has_operator(&self.store).await? {
            tracing::warn!(
                "no operator account yet; create one with: wharf --config <file> user add NAME --role operator"
            );
        }
        // Read before any sync can run (each one sets and clears the flag).
        let cut_off = self.tree.sync_was_cut_off();
        let socket_path = self.config.control_socket();
        let control_listener = control::bind(&socket_path).await?;
        let mut tasks = vec![tokio::spawn(control::serve(control_listener, self.jobs.clone()))];
        tasks.push(tokio::spawn(watch_geo_databases(self.geo.clone())));
        let scheduler = scheduler::start(self.jobs.clone()).await?;

        if let Some(reports) = self.notices.take() {
            let ctx = crate::notify::NotifyCtx {
                store: self.store.clone(),
                clock: self.clock.clone(),
                settings: self.config.notify.clone(),
                public_url: self.config.public_url.clone(),
            };
            tasks.push(tokio::spawn(crate::notify::run(reports, ctx)));
        }
        let redirects = Arc::new(RedirectCounters::default());
        tasks.push(tokio::spawn(flush_redirects(
            self.store.clone(),
            redirects.clone(),
            self.clock.clone(),
        )));
        let (queue, pushed) = tokio::sync::mpsc::channel(crate::hooks::QUEUE);
        tasks.push(tokio::spawn(crate::hooks::sync_pushed(
            pushed,
            self.jobs.clone(),
            self.config.hook_debounce,
        )));
        let stopping = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(RegistryState {
            store: self.store.clone(),
            public_url: self.config.public_url.clone(),
            selector: self.jobs.selector().clone(),
            geo: self.geo.clone(),
            redirects: redirects.clone(),
            jobs: self.jobs.metrics.clone(),
            store_path: self.config.store_path(),
            tree_root: self.tree.root().to_owned(),
            stopping: stopping.clone(),
            ready: ready.clone(),
            manifests: Default::default(),
            signatures: self.config.upstream.lookaside.is_some(),
        });
        let hooks = web::Data::new(crate::hooks::HookState {
            secret: self.config.hook_secret.clone(),
            body_timeout: self.config.client_timeout,
            queue,
        });
        let stats = web::Data::new(registry::RequestStats::default());
        let admin = web::Data::new(crate::admin::AdminState {
            jobs: self.jobs.clone(),
            geo: self.geo.clone(),
            clock: self.clock.clone(),
            throttle: Default::default(),
            policy: Default::default(),
            rsync_url: self.config.rsync_url.clone(),
        });
        let edge = web::Data::new(crate::edge::Edge {
            trusted_proxies: self.config.trusted_proxies.clone(),
            forwarded_header: self.config.forwarded_header,
            admin_addr,
        });
        let tree_dir = self.config.tree_dir.clone();
        let public = self.config.public.clone();
        let caches = crate::public::PublicCaches::default();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .wrap(actix_web::middleware::from_fn(crate::edge::guard))
                .wrap(actix_web::middleware::from_fn(registry::count_requests))
                .app_data(edge.clone())
                .app_data(state.clone())
                .app_data(stats.clone())
                .app_data(admin.clone())
                .app_data(hooks.clone())
                .app_data(web::FormConfig::default().limit(crate::edge::MAX_FORM))
                .service(web::scope("/admin").configure(crate::admin::configure))
                .route("/hooks/registry", web::post().to(crate::hooks::registry))
                .configure(|c| crate::public::configure(c, &public, &caches))
                .configure(|c| registry::configure(c, &tree_dir))
        })
        .disable_signals()
        .client_request_timeout(self.config.client_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(2))
        .keep_alive(self.config.keep_alive)
        .shutdown_timeout(30)
        .listen(listener)
        .map_err(io(format!("listening on {addr}")))?;
        let server = match admin_listener {
            Some(l) => server.listen(l).map_err(io("admin listener".into()))?,
            None => server,
        };
        let server = match (tls_listener, &certs) {
            (Some(l), Some(c)) => server
                .listen_rustls_0_23(l, c.server_config()?)
                .map_err(io("https listener".into()))?,
            _ => server,
        };
        let server = server.run();
        let handle = server.handle();
        // The listener answers from now on (`/healthz` 200, `/readyz` 503) while the tree's
        // publication is finished and the selection state loads.
        tasks.push(tokio::spawn(get_ready(self.jobs.clone(), ready, cut_off)));
        tracing::info!(%addr, tls = ?tls_addr, admin = ?admin_addr, public_url = %self.config.public_url, "serving");
        Ok(Running {
            addr,
            tls_addr,
            admin_addr,
            handle,
            server: tokio::spawn(server),
            scheduler: tokio::sync::Mutex::new(scheduler),
            certs,
            stopping,
            tasks,
            redirects,
            socket_path,
            app: self,
        })
    }
}

/// A serving instance.
pub struct Running {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub handle: actix_web::dev::ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    scheduler: tokio::sync::Mutex<tokio_cron_scheduler::JobScheduler>,
    certs: Option<Arc<CertStore>>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    stopping: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    redirects: Arc<RedirectCounters>,
    socket_path: std::path::PathBuf,
    pub app: App,
}

impl Running {
    /// Save the redirect counts now rather than at the next minute (the demo, after its
    /// synthetic pulls, so the charts show them at once).
    pub async fn save_counts(&self) {
        save_counts(&self.app.store, &self.redirects, hour_of(self.app.clock.now())).await;
    }

    /// Serve until SIGTERM or SIGINT, reloading on SIGHUP; then stop gracefully.
    pub async fn run_until_signalled(self) -> Result<(), AppError> {
        use tokio::signal::unix::{SignalKind, signal};
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| AppError::Io { what, source }
        };
        let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                    match self.reload().await {
                        Ok(()) => tracing::info!("SIGHUP: reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed; the old settings stay"),
                    }
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
            }
        }
        tracing::info!(
            "shutting down: finishing requests, stopping a running sync at a safe point"
        );
        self.stop_gracefully().await
    }

    /// What SIGHUP does: re-read the GeoIP databases and the TLS certificate, and from the
    /// configuration the log filter and the schedules. Listeners, storage and upstream
    /// need a restart.
    pub async fn reload(&self) -> Result<(), String> {
        let geo = self.app.geo.clone();
        let _ = tokio::task::spawn_blocking(move || geo.reload_now()).await;
        if let Some(certs) = &self.certs {
            certs.reload().map_err(|e| e.to_string())?;
        }
        let Some(source) = &self.app.reload_config else { return Ok(()) };
        let config = source().map_err(|e| e.to_string())?;
        if let Some(set) = &self.app.set_log_filter {
            set(&config.log_level)?;
        }
        let wanted =
            Schedules { sync: config.sync_schedule.clone(), crawl: config.crawl_schedule.clone() };
        if wanted != self.app.jobs.schedules() {
            self.app.jobs.set_schedules(wanted);
            let mut sched = self.scheduler.lock().await;
            if let Err(e) = sched.shutdown().await {
                tracing::warn!(error = %e, "stopping the old schedules");
            }
            *sched = scheduler::start(self.app.jobs.clone()).await.map_err(|e| e.to_string())?;
            tracing::info!(sync = %config.sync_schedule, crawl = %config.crawl_schedule, "schedules reloaded");
        }
        Ok(())
    }

    /// Stop: `/readyz` turns 503, a running sync stops at its next safe point, in-flight
    /// requests finish (up to 30 s), then the schedules and the control socket stop.
    pub async fn stop_gracefully(mut self) -> Result<(), AppError> {
        self.stopping.store(true, Relaxed);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let jobs = self.app.jobs.clone();
        let (_, ()) = tokio::join!(self.handle.stop(true), jobs.stop_sync());
        let result = (&mut self.server).await;
        self.shutdown().await;
        match result {
            Ok(r) => r.map_err(|source| AppError::Io { what: "http server".into(), source }),
            Err(e) => Err(AppError::Io {
                what: "http server task".into(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// Stop serving and wait until everything is down.
    pub async fn stop(self) {
        let _ = self.stop_gracefully().await;
    }

    async fn shutdown(&mut self) {
        if let Err(e) = self.scheduler.lock().await.shutdown().await {
            tracing::warn!(error = %e, "stopping the scheduler");
        }
        for t in &self.tasks {
            t.abort();
        }
        save_counts(&self.app.store, &self.redirects, hour_of(self.app.clock.now())).await;
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// What start-up does once the listeners answer: finish the publication of a run that was
/// interrupted after its commit (only then is the tree rewritten), load the selection
/// state, report ready; then, if the last sync was cut off by a crash or a kill, adopt what
/// it left in the pool (only then is the pool walked).
async fn get_ready(jobs: Arc<scheduler::Jobs>, ready: Arc<AtomicBool>, cut_off: bool) {
    let started = std::time::Instant::now();
    if let Err(e) = jobs.finish_publication().await {
        tracing::error!(error = %e, "republishing the tree at start");
    }
    if let Err(e) = jobs.load_selection().await {
        tracing::error!(error = %e, "loading the selection state; not ready");
        return;
    }
    ready.store(true, std::sync::atomic::Ordering::Release);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(elapsed = ?started.elapsed(), "ready");
    if cut_off && let Err(e) = jobs.adopt_orphans().await {
        tracing::error!(error = %e, "adopting pool files without a record");
    }
}

/// Reload the GeoIP databases when their files change (checked every 30 s), off the async
/// workers. (SIGHUP reloads them at once, see [`Running::reload`].)
async fn watch_geo_databases(geo: Arc<GeoDb>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        let geo = geo.clone();
        let _ = tokio::task::spawn_blocking(move || geo.reload_if_changed()).await;
    }
}

/// Drain the redirect counters (by tier and country, and by mirror) into the store as
/// counts of `hour`.
async fn save_counts(store: &Store, counters: &RedirectCounters, hour: u64) {
    if let Err(e) = store.add_mirror_traffic(counters.drain_mirrors(hour)).await {
        tracing::error!(error = %e, "saving mirror traffic counts");
    }
    if let Err(e) = store.add_redirects(counters.drain(hour)).await {
        tracing::error!(error = %e, "saving redirect counts");
    }
}

/// Move the redirect counters into the store once a minute: one write per minute, never
/// one per request.
async fn flush_redirects(store: Store, counters: Arc<RedirectCounters>, clock: Arc<dyn Clock>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        save_counts(&store, &counters, hour_of(clock.now())).await;
    }
}
