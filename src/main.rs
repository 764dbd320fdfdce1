//! The `wharf` binary: command-line parsing and the top-level error report. Everything else
//! lives in the library.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use wharf::app::App;
use wharf::clock::SystemClock;
use wharf::config::{self, CliOverrides, Config};
use wharf::control::{Reply, Request};
use wharf::model::MirrorPatch;
use wharf::model::registry_view::{self, Server};
use wharf::sync::ProgressSnapshot;
use wharf::{control, demo};

mod output;

#[derive(Parser)]
#[command(name = "wharf", version, about = "A container registry front for a mirror network")]
struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// Override `server.listen`.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Override `storage.data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print the result as JSON (sync, crawl, mirror and user commands).
    #[arg(long, global = true)]
    json: bool,
    /// Log format: `text` or `json` (one object a line, for journald and ingestion);
    /// overrides `log.format`.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API and the tree, and run the schedules.
    Serve,
    /// Run one sync now (through the running server if there is one) and print a summary.
    Sync,
    /// Generate sample images, sync them and serve them: nothing else needed.
    Demo {
        /// Port to serve on (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Only write the sample images (OCI layouts, usable as an `oci:` upstream) to DIR.
        #[arg(long, value_name = "DIR")]
        write_images: Option<PathBuf>,
        /// Synthetic pulls from the pretend clients once the mirrors are crawled, to fill
        /// the counters, charts and status page (at most 100000).
        #[arg(long, value_name = "PULLS", default_value_t = 200,
              value_parser = clap::value_parser!(u32).range(0..=i64::from(demo::network::MAX_TRAFFIC)))]
        traffic: u32,
    },
    /// Exit 0 if the server configured here answers its health check.
    Healthcheck,
    /// Check the configuration (file, WHARF__* variables, flags) and exit non-zero with the
    /// reason if it is not valid.
    CheckConfig,
    /// Write a consistent copy of the store to FILE (also while `serve` runs).
    Backup { file: PathBuf },
    /// Replace the store with a backup. Only while no `wharf serve` runs; the replaced store
    /// is kept as `wharf.redb.before-restore`. Run `wharf verify --repair` afterwards.
    Restore { file: PathBuf },
    /// Check every pool file's digest and every file the store references; exit 1 on damage.
    Verify {
        /// Fetch what is missing or damaged again (manifests from the store, blobs from
        /// upstream) and relink the layouts.
        #[arg(long)]
        repair: bool,
    },
    /// Crawl every enabled mirror now and print what each holds.
    Crawl,
    /// Manage mirrors (through the running server if there is one).
    #[command(subcommand)]
    Mirror(Box<MirrorCommand>),
    /// Manage admin UI accounts (through the running server if there is one).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from stdin when it is not a terminal, else
    /// generated and printed once.
    Add {
        name: String,
        /// `operator` or `mirror-admin`.
        #[arg(long)]
        role: String,
    },
    /// Set a user's password (read from stdin when it is not a terminal, else generated).
    Passwd { name: String },
    /// Every user.
    List,
    /// Disable a user (they can no longer log in).
    Disable { name: String },
    /// Set the e-mail address notices about the user's mirrors go to (`""` removes it).
    Email { name: String, address: String },
}

/// A password piped on stdin (first line), or `None` on a terminal or empty input.
fn password_from_stdin() -> anyhow::Result<Option<String>> {
    if std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    Ok((!line.is_empty()).then_some(line))
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// Register a mirror.
    Add {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: MirrorFields,
    },
    /// Change a mirror's fields (list options replace the list).
    Set {
        name: String,
        #[command(flatten)]
        fields: MirrorFields,
    },
    /// Remove a mirror and its crawl history.
    Remove { name: String },
    /// Every mirror with its state, and how far the current generation has propagated.
    List,
    /// One mirror with its recent crawls.
    Show { name: String },
    /// Print the web server configuration that serves a copy of the tree as a read-only
    /// registry (the static registry view), with the rsync commands that keep it consistent.
    RegistryConfig {
        /// nginx, apache or caddy.
        #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Server>()))]
        server: Server,
        /// Where the copy of the tree is (the rsync destination).
        #[arg(long, default_value = "/srv/wharf/")]
        root: String,
        /// The address the server listens on: `host:port` or a port.
        #[arg(long, default_value = "80")]
        listen: String,
        /// `all`, or architectures like `amd64,arm64` (what the rsync commands copy).
        #[arg(long, default_value = "all")]
        content: String,
    },
}

#[derive(clap::Args)]
struct MirrorFields {
    /// Base URL under which the tree root is served (http and/or https; repeatable).
    #[arg(long = "url")]
    urls: Vec<String>,
    /// ISO 3166-1 alpha-2 country code ("" clears).
    #[arg(long)]
    country: Option<String>,
    /// Continent code overriding the one derived from the country ("" clears).
    #[arg(long)]
    continent: Option<String>,
    /// AS number whose clients this mirror serves first (repeatable).
    #[arg(long = "asn")]
    asns: Vec<u32>,
    /// CIDR whose clients this mirror serves first (repeatable).
    #[arg(long = "netblock")]
    netblocks: Vec<String>,
    /// Remove every ASN.
    #[arg(long)]
    clear_asns: bool,
    /// Remove every netblock.
    #[arg(long)]
    clear_netblocks: bool,
    /// Bandwidth in Mbit/s: the weight within a tier.
    #[arg(long)]
    bandwidth: Option<u32>,
    /// Private mirrors serve only their netblocks and ASNs.
    #[arg(long)]
    private: Option<bool>,
    /// Operator approval.
    #[arg(long)]
    enabled: Option<bool>,
    /// The mirror admin's opt-in.
    #[arg(long)]
    active: Option<bool>,
    /// Why the mirror is disabled ("" clears).
    #[arg(long)]
    reason: Option<String>,
    /// `all`, or architectures like `amd64,arm64`.
    #[arg(long)]
    content: Option<String>,
    /// Owning user id.
    #[arg(long)]
    owner: Option<u64>,
    /// Where the mirror's web server answers the registry pull API from its copy of the
    /// tree: `http(s)://host[:port]/` ("" clears). See `wharf mirror registry-config`.
    #[arg(long)]
    registry_url: Option<String>,
}

impl MirrorFields {
    fn patch(&self) -> MirrorPatch {
        let list = |v: &Vec<String>, clear: bool| (clear || !v.is_empty()).then(|| v.clone());
        MirrorPatch {
            urls: list(&self.urls, false),
            country: self.country.clone(),
            continent: self.continent.clone(),
            asns: (self.clear_asns || !self.asns.is_empty()).then(|| self.asns.clone()),
            netblocks: list(&self.netblocks, self.clear_netblocks),
            bandwidth: self.bandwidth,
            private: self.private,
            enabled: self.enabled,
            active: self.active,
            reason: self.reason.clone(),
            content: self.content.clone(),
            owner: self.owner,
            registry_url: self.registry_url.clone(),
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    // A service logs what it does, as configured; one-shot commands print their own
    // summary and log only warnings.
    let (level, json) = match cli.command {
        Command::Serve => match load_config(&cli) {
            Ok(c) => (c.log_level.clone(), c.log_json),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        Command::Demo { .. } => ("info,actix_server=warn".to_owned(), false),
        _ => ("warn".to_owned(), false),
    };
    let json = cli.log_format.as_deref().map(|f| f == "json").unwrap_or(json);
    let set_filter = init_logging(&level, json);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli, set_filter)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator gives each thread that allocates its own arena (up to 8 per core), and
/// freed memory stays in the arena that held it: a sync's phases, on different blocking
/// threads, add up (a full sync at a million blobs: 307 MiB against 222 with two arenas).
/// The allocator reads its settings from the environment before `main` runs, so Wharf sets
/// `MALLOC_ARENA_MAX=2` by executing itself again, once, before any thread exists; a value
/// already in the environment (an operator's, even empty) is kept.
fn limit_malloc_arenas() {
    const VAR: &str = "MALLOC_ARENA_MAX";
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    // Returns only if the exec failed; the process goes on with glibc's default.
    let e = again.args(args).env(VAR, "2").exec();
    eprintln!("warning: could not execute Wharf again with {VAR}=2 ({e}); going on without");
}

/// Log to stderr (journald takes it from there) as text or JSON, filtered by `RUST_LOG`
/// when set, else by `level`. Returns how to change the filter later (SIGHUP).
fn init_logging(level: &str, json: bool) -> wharf::app::LogFilterSetter {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let from_env = std::env::var("RUST_LOG").is_ok();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(fmt::layer().json().with_writer(std::io::stderr)).init();
    } else {
        registry.with(fmt::layer().with_writer(std::io::stderr)).init();
    }
    Arc::new(move |level: &str| {
        if from_env {
            return Ok(()); // RUST_LOG wins over the configuration
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

fn overrides(cli: &Cli) -> CliOverrides {
    let mut values = Vec::new();
    if let Some(l) = &cli.listen {
        values.push(("server.listen".into(), toml::Value::String(l.clone())));
    }
    if let Some(d) = &cli.data_dir {
        values.push(("storage.data_dir".into(), toml::Value::String(d.display().to_string())));
    }
    CliOverrides { values }
}

/// The config file: `--config`, else the default path if it exists.
fn config_file(cli: &Cli) -> Option<PathBuf> {
    let default = PathBuf::from(config::DEFAULT_CONFIG_PATH);
    match &cli.config {
        Some(p) => Some(p.clone()),
        None => default.exists().then_some(default),
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let file = config_file(cli);
    config::load(file.as_deref(), std::env::vars(), &overrides(cli)).with_context(|| match &file {
        Some(f) => format!("configuration (from {} and WHARF__* variables)", f.display()),
        None => format!(
            "configuration (no file: {} does not exist; pass --config or set WHARF_CONFIG)",
            config::DEFAULT_CONFIG_PATH
        ),
    })
}

async fn run(cli: Cli, set_filter: wharf::app::LogFilterSetter) -> anyhow::Result<ExitCode> {
    let request = match &cli.command {
        Command::Serve => {
            let config = load_config(&cli)?;
            let listener = TcpListener::bind(config.listen)
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let file = config_file(&cli);
            let cli_overrides = overrides(&cli);
            let source: wharf::app::ConfigSource =
                Arc::new(move || config::load(file.as_deref(), std::env::vars(), &cli_overrides));
            App::open(config, Arc::new(SystemClock))?
                .with_reload(source, Some(set_filter))
                .serve(listener)
                .await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::CheckConfig => {
            let c = load_config(&cli)?;
            println!("configuration ok");
            println!("  listen {} (public URL {})", c.listen, c.public_url);
            if let Some(t) = &c.tls {
                wharf::tls::CertStore::open(&t.cert, &t.key)?;
                println!("  https {} (certificate {})", t.listen, t.cert.display());
            }
            println!("  data dir {}, tree {}", c.data_dir.display(), c.tree_dir.display());
            println!("  schedules: sync {:?}, crawl {:?}", c.sync_schedule, c.crawl_schedule);
            let ports = [Some(c.listen), c.tls.as_ref().map(|t| t.listen), c.admin_listen];
            if ports.iter().flatten().any(|a| a.port() < 1024 && a.port() != 0) {
                println!(
                    "  note: a port below 1024 needs CAP_NET_BIND_SERVICE \
                     (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE in a drop-in)"
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Demo { write_images: Some(dir), .. } => {
            demo::write_sample_images(dir).with_context(|| format!("writing {}", dir.display()))?;
            println!(
                "sample images written to {} (use it as upstream.url = \"oci:{0}\")",
                dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Demo { port, traffic, .. } => return demo(*port, *traffic, &cli).await,
        Command::Healthcheck => return healthcheck(&load_config(&cli)?).await,
        Command::Backup { file } => Request::Backup {
            path: std::path::absolute(file).with_context(|| format!("{}", file.display()))?,
        },
        Command::Restore { file } => {
            let config = load_config(&cli)?;
            wharf::store::restore(file, &config.store_path())
                .with_context(|| format!("restoring {}", file.display()))?;
            println!(
                "restored {} into {} (the replaced store is kept as wharf.redb.before-restore); \
                 start the server, then run `wharf verify --repair` to check the tree against it",
                file.display(),
                config.store_path().display(),
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Verify { repair } => Request::Verify { repair: *repair },
        Command::Sync => Request::Sync,
        Command::Crawl => Request::Crawl,
        Command::Mirror(m) => match m.as_ref() {
            MirrorCommand::Add { name, fields, .. } => {
                Request::MirrorAdd { name: name.clone(), patch: fields.patch() }
            }
            MirrorCommand::Set { name, fields, .. } => {
                Request::MirrorSet { name: name.clone(), patch: fields.patch() }
            }
            MirrorCommand::Remove { name, .. } => Request::MirrorRemove { name: name.clone() },
            MirrorCommand::List => Request::MirrorList,
            MirrorCommand::Show { name, .. } => Request::MirrorShow { name: name.clone() },
            MirrorCommand::RegistryConfig { server, root, listen, content } => {
                let content: wharf::model::ContentSet =
                    content.parse().map_err(|e| anyhow::anyhow!("--content: {e}"))?;
                // The rsync source is the configured one when there is a configuration.
                let source = load_config(&cli)
                    .map(|c| c.rsync_url)
                    .unwrap_or_else(|_| "rsync://<wharf>/wharf/".to_owned());
                let root = if root.ends_with('/') { root.clone() } else { format!("{root}/") };
                let rsync = wharf::model::rsync_commands(&source, &content, &root);
                let site = registry_view::ViewSite { root: &root, listen, rsync: &rsync };
                print!("{}", registry_view::server_config(*server, &site));
                return Ok(ExitCode::SUCCESS);
            }
        },
        Command::User(u) => match u {
            UserCommand::Add { name, role, .. } => Request::UserAdd {
                name: name.clone(),
                role: role.clone(),
                password: password_from_stdin()?,
            },
            UserCommand::Passwd { name, .. } => {
                Request::UserPasswd { name: name.clone(), password: password_from_stdin()? }
            }
            UserCommand::List => Request::UserList,
            UserCommand::Disable { name, .. } => Request::UserDisable { name: name.clone() },
            UserCommand::Email { name, address } => {
                Request::UserEmail { name: name.clone(), email: address.clone() }
            }
        },
    };
    let reply = execute(load_config(&cli)?, request).await?;
    output::print(&reply, cli.json)
}

/// Run a request through the running server if one answers on the control socket, else on a
/// store opened here.
async fn execute(config: Config, request: Request) -> anyhow::Result<Reply> {
    let bar = matches!(request, Request::Sync).then(progress_bar).flatten();
    let show = |p: &ProgressSnapshot| {
        if let Some(bar) = &bar {
            bar.set_length(p.blobs_total.max(1));
            bar.set_position(p.blobs_done);
            bar.set_message(format!(
                "repos {}/{} {} {}",
                p.repos_done,
                p.repos_total,
                output::human_bytes(p.bytes_done),
                p.current
            ));
        }
    };
    let socket = config.control_socket();
    let reply = match control::call(&socket, &request, show).await? {
        Some(reply) => reply,
        None => {
            let (store_path, cache) = (config.store_path(), config.store_cache);
            let app = App::open(config, Arc::new(SystemClock))?;
            let jobs = app.jobs.clone();
            // Only a crawl reads the selection state here (a sync builds its own; an edit
            // needs none): a one-off command does not pay for loading the catalog.
            if matches!(request, Request::Crawl) {
                app.jobs.load_selection().await?;
            }
            let syncs = matches!(request, Request::Sync);
            let reply = {
                let run = control::execute(&jobs, request);
                tokio::pin!(run);
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        r = &mut run => break r,
                        _ = tick.tick() => show(&jobs.sync_progress()),
                    }
                }
            };
            // Opening the store again, with nothing else holding it, compacts it if this
            // sync's commit rewrote much of it (a first import); only a sync commits that.
            drop((jobs, app));
            if syncs && let Err(e) = wharf::store::Store::open_with_cache(&store_path, cache) {
                tracing::warn!(error = %e, "reopening the store to compact it");
            }
            reply
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(reply)
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed}] blobs {pos}/{len} {wide_msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

async fn healthcheck(config: &Config) -> anyhow::Result<ExitCode> {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/healthz");
    let resp = reqwest::Client::new().get(&url).timeout(Duration::from_secs(5)).send().await;
    match resp {
        Ok(r) if r.status().is_success() => {
            println!("ok: {url}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => bail!("{url} answered {}", r.status()),
        Err(e) => bail!("{url}: {e}"),
    }
}

async fn demo(port: Option<u16>, traffic: u32, cli: &Cli) -> anyhow::Result<ExitCode> {
    // The demo never touches a real data dir: its own temp dir, its own upstream.
    if cli.data_dir.is_some() || cli.listen.is_some() {
        bail!("demo uses its own temp data dir and --port; --data-dir and --listen do not apply");
    }
    let work = tempfile::Builder::new().prefix("wharf-demo.").tempdir().context("temp dir")?;
    let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .with_context(|| format!("cannot listen on port {}", port.unwrap_or(0)))?;
    let addr = listener.local_addr()?;
    let values = demo::network::settings(work.path(), addr)?;
    let config = config::load(None, std::iter::empty(), &CliOverrides { values })?;
    let app = App::open(config, Arc::new(SystemClock))?;
    let built = demo::network::build(&app, work.path()).await;
    for run in built.as_ref().map(|n| n.runs.as_slice()).unwrap_or_default() {
        output::report(run, false)?;
    }
    let network = built?;
    let (_, password) = wharf::accounts::add_user(
        &app.store,
        &"demo".parse()?,
        wharf::model::Role::Operator,
        None,
        chrono::Utc::now(),
    )
    .await?;
    let password = password.unwrap_or_default();
    let tree = app.tree.root().to_owned();
    let running = app.start(listener).await?;
    let host = addr.to_string();
    let tally = network.traffic(&format!("http://{host}"), traffic, rand::random()).await?;
    running.save_counts().await;
    let spread: Vec<String> = tally.iter().map(|(to, n)| format!("{to} {n}")).collect();
    println!(
        "\n{traffic} synthetic pulls from the pretend clients: blob redirects to {}.",
        spread.join(", ")
    );
    println!(
        "{}\nWharf demo serving on http://{host} (tree: {tree})\n\
         Admin UI: http://{host}/admin/ (user demo, password {password}): the dashboard's \
         charts show the pulls by tier, country and hour; each mirror's page its traffic.\n\n\
         Ctrl-C stops the demo and removes its files.",
        network.instructions(&host),
        tree = tree.display(),
    );
    running.run_until_signalled().await?;
    network.stop().await;
    drop(work);
    Ok(ExitCode::SUCCESS)
}
