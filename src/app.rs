//! Wiring: open the store and the tree, build the jobs, start the scheduler, the control
//! socket and the HTTP server. Everything long-lived is created once here, outside the
//! per-worker `HttpServer::new` factory.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::clock::Clock;
use crate::config::Config;
use crate::control;
use crate::crawl::{CrawlCtx, CrawlError};
use crate::geo::{GeoDb, RedirectCounters, Selector};
use crate::model::hour_of;
use crate::registry::{self, RegistryState};
use crate::scheduler::{self, Jobs};
use crate::store::{Store, StoreError};
use crate::sync::{SyncCtx, SyncError};
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
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// An opened Wharf instance: store, tree and jobs, not yet serving.
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub tree: MirrorTree,
    pub jobs: Arc<Jobs>,
    pub geo: Arc<GeoDb>,
    pub clock: Arc<dyn Clock>,
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
        let store = Store::open(&config.store_path())?;
        std::fs::set_permissions(config.store_path(), std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("restricting {}", config.store_path().display())))?;
        let tree = MirrorTree::open(&config.tree_dir, &config.tmp_dir())?;
        let sync = SyncCtx::new(&config, store.clone(), tree.clone(), clock.clone())?;
        let crawl = CrawlCtx::new(store.clone(), config.crawl.clone(), clock.clone())?;
        let selector = Arc::new(Selector::new(config.fallback_url.clone(), config.require_https));
        let geo =
            Arc::new(GeoDb::open(config.geoip_database.as_deref(), config.asn_database.as_deref()));
        let jobs = Jobs::new(sync, crawl, selector);
        Ok(App { config: Arc::new(config), store, tree, jobs, geo, clock })
    }

    /// Serve HTTP on `listener` with the schedules and the control socket until the server
    /// stops (SIGINT/SIGTERM, or `handle.stop()`).
    pub async fn serve(self, listener: TcpListener) -> Result<(), AppError> {
        let running = self.start(listener).await?;
        running.wait().await
    }

    /// Start serving; returns at once with a handle.
    pub async fn start(self, listener: TcpListener) -> Result<Running, AppError> {
        let addr = listener
            .local_addr()
            .map_err(|source| AppError::Io { what: "listener".into(), source })?;
        // Finish the publication of a run that was interrupted after its commit.
        if let Err(e) = crate::sync::republish(self.jobs.sync_ctx()).await {
            tracing::error!(error = %e, "republishing the tree at start");
        }
        self.jobs.refresh_selection().await?;
        if !crate::accounts::has_operator(&self.store).await? {
            tracing::warn!(
                "no operator account yet; create one with: wharf --config <file> user add NAME --role operator"
            );
        }
        let socket_path = self.config.control_socket();
        let control_listener = control::bind(&socket_path).await?;
        let control_task = tokio::spawn(control::serve(control_listener, self.jobs.clone()));
        let reload_task = tokio::spawn(reload_geo_databases(self.geo.clone()));
        let scheduler = scheduler::start(
            self.jobs.clone(),
            &self.config.sync_schedule,
            &self.config.crawl_schedule,
        )
        .await?;

        let redirects = Arc::new(RedirectCounters::default());
        let flush_task = tokio::spawn(flush_redirects(
            self.store.clone(),
            redirects.clone(),
            self.clock.clone(),
        ));
        let state = web::Data::new(RegistryState {
            store: self.store.clone(),
            public_url: self.config.public_url.clone(),
            selector: self.jobs.selector().clone(),
            geo: self.geo.clone(),
            trusted_proxies: self.config.trusted_proxies.clone(),
            redirects: redirects.clone(),
        });
        let stats = web::Data::new(registry::RequestStats::default());
        let schedules =
            [("sync", &self.config.sync_schedule), ("crawl", &self.config.crawl_schedule)]
                .into_iter()
                .filter_map(|(job, cron)| Some((job, crate::config::parse_cron(cron).ok()?)))
                .collect();
        let admin = web::Data::new(crate::admin::AdminState {
            jobs: self.jobs.clone(),
            geo: self.geo.clone(),
            clock: self.clock.clone(),
            throttle: Default::default(),
            policy: Default::default(),
            schedules,
            rsync_url: self.config.rsync_url.clone(),
        });
        // With `[admin] listen`, the admin UI answers only there and the registry only on
        // the main listener.
        let admin_listener = match self.config.admin_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .map_err(|source| AppError::Io { what: format!("listening on {a}"), source })?,
            ),
            None => None,
        };
        let admin_port =
            admin_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
        let tree_dir = self.config.tree_dir.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    split_listeners(admin_port, req, next)
                }))
                .wrap(actix_web::middleware::from_fn(registry::count_requests))
                .app_data(state.clone())
                .app_data(stats.clone())
                .app_data(admin.clone())
                .service(web::scope("/admin").configure(crate::admin::configure))
                .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok\n") }))
                .configure(|c| registry::configure(c, &tree_dir))
        })
        .listen(listener)
        .map_err(|source| AppError::Io { what: format!("listening on {addr}"), source })?;
        let server = match admin_listener {
            Some(l) => server
                .listen(l)
                .map_err(|source| AppError::Io { what: "admin listener".into(), source })?,
            None => server,
        };
        let server = server.shutdown_timeout(30).run();
        let handle = server.handle();
        tracing::info!(%addr, public_url = %self.config.public_url, admin = ?admin_port, "serving");
        Ok(Running {
            addr,
            flush_task,
            redirects,
            handle,
            server: tokio::spawn(server),
            scheduler,
            control_task,
            reload_task,
            socket_path,
            app: self,
        })
    }
}

/// A serving instance.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    scheduler: tokio_cron_scheduler::JobScheduler,
    control_task: tokio::task::JoinHandle<()>,
    reload_task: tokio::task::JoinHandle<()>,
    flush_task: tokio::task::JoinHandle<()>,
    redirects: Arc<RedirectCounters>,
    socket_path: std::path::PathBuf,
    pub app: App,
}

impl Running {
    /// Wait for the HTTP server to stop, then stop the schedules and the control socket.
    pub async fn wait(mut self) -> Result<(), AppError> {
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
        self.handle.stop(true).await;
        let _ = self.wait().await;
    }

    async fn shutdown(&mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(error = %e, "stopping the scheduler");
        }
        self.control_task.abort();
        self.reload_task.abort();
        self.flush_task.abort();
        let last = self.redirects.drain(hour_of(self.app.clock.now()));
        if let Err(e) = self.app.store.add_redirects(last).await {
            tracing::warn!(error = %e, "saving the last redirect counts");
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Move the redirect counters into the store once a minute: one write per minute, never
/// one per request.
async fn flush_redirects(store: Store, counters: Arc<RedirectCounters>, clock: Arc<dyn Clock>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let batch = counters.drain(hour_of(clock.now()));
        if let Err(e) = store.add_redirects(batch).await {
            tracing::error!(error = %e, "saving redirect counts");
        }
    }
}

/// Middleware: with a separate admin listener, `/admin/` answers only there and everything
/// else only on the main listener.
async fn split_listeners(
    admin_port: Option<u16>,
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Some(port) = admin_port {
        let on_admin = req.app_config().local_addr().port() == port;
        let admin_path = req.path() == "/admin" || req.path().starts_with("/admin/");
        if on_admin != admin_path {
            return Ok(req.into_response(HttpResponse::NotFound().finish()));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Reload the GeoIP databases when their files change (checked every 30 s), and
/// unconditionally on SIGHUP. The reading happens off the async workers.
async fn reload_geo_databases(geo: Arc<GeoDb>) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        let force = match &mut hup {
            Some(h) => tokio::select! {
                _ = tick.tick() => false,
                _ = h.recv() => {
                    tracing::info!("SIGHUP: reloading the GeoIP databases");
                    true
                }
            },
            None => {
                tick.tick().await;
                false
            }
        };
        let geo = geo.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if force { geo.reload_now() } else { geo.reload_if_changed() }
        })
        .await;
    }
}
