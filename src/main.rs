//! The `wharf` binary: command-line parsing and the top-level error report. Everything else
//! lives in the library.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use wharf::app::App;
use wharf::clock::SystemClock;
use wharf::config::{self, CliOverrides, Config};
use wharf::model::{RunOutcome, SyncRun};
use wharf::sync::ProgressSnapshot;
use wharf::{control, demo};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API and the tree, and run the schedules.
    Serve,
    /// Run one sync now (through the running server if there is one) and print a summary.
    Sync {
        /// Print the run as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Generate sample images, sync them and serve them: nothing else needed.
    Demo {
        /// Port to serve on (default: a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Exit 0 if the server configured here answers its health check.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-shot commands print their own summary; services log what they do.
    let default_filter = match cli.command {
        Command::Sync { .. } | Command::Healthcheck => "warn",
        Command::Serve | Command::Demo { .. } => "info,actix_server=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let default = PathBuf::from(config::DEFAULT_CONFIG_PATH);
    let file = match &cli.config {
        Some(p) => Some(p.clone()),
        None => default.exists().then_some(default),
    };
    config::load(file.as_deref(), std::env::vars(), &overrides(cli)).with_context(|| match &file {
        Some(f) => format!("configuration (from {} and WHARF__* variables)", f.display()),
        None => format!(
            "configuration (no file: {} does not exist; pass --config or set WHARF_CONFIG)",
            config::DEFAULT_CONFIG_PATH
        ),
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => {
            let config = load_config(&cli)?;
            let listener = TcpListener::bind(config.listen)
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            App::open(config, Arc::new(SystemClock))?.serve(listener).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { json } => {
            let config = load_config(&cli)?;
            let run = sync(config).await?;
            report(&run, *json)
        }
        Command::Demo { port } => demo(*port, &cli).await,
        Command::Healthcheck => {
            let config = load_config(&cli)?;
            healthcheck(&config).await
        }
    }
}

/// Sync through the running server if one answers on the control socket, else directly.
async fn sync(config: Config) -> anyhow::Result<SyncRun> {
    let bar = progress_bar();
    let show = |p: &ProgressSnapshot| {
        if let Some(bar) = &bar {
            bar.set_length(p.blobs_total.max(1));
            bar.set_position(p.blobs_done);
            bar.set_message(format!(
                "repos {}/{} {} {}",
                p.repos_done,
                p.repos_total,
                human_bytes(p.bytes_done),
                p.current
            ));
        }
    };
    let socket = config.control_socket();
    let run = match control::request_sync(&socket, show).await? {
        Some(run) => run,
        None => {
            let app = App::open(config, Arc::new(SystemClock))?;
            let jobs = app.jobs.clone();
            let sync = jobs.run_sync();
            tokio::pin!(sync);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    r = &mut sync => break r?,
                    _ = tick.tick() => show(&jobs.sync_progress()),
                }
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(run)
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

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn report(run: &SyncRun, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(run)?);
    } else {
        let (added, moved, removed) = run
            .repos
            .iter()
            .fold((0, 0, 0), |a, r| (a.0 + r.tags_added, a.1 + r.tags_moved, a.2 + r.tags_removed));
        println!(
            "sync run #{}: {:?} in {:.1}s — generation {} -> {}; {} repositories; tags +{added} ~{moved} -{removed}; {} blobs fetched ({}); {} collected",
            run.id,
            run.outcome,
            (run.finished_at - run.started_at).num_milliseconds() as f64 / 1000.0,
            run.generation_before,
            run.generation_after,
            run.repos.len(),
            run.blobs_fetched(),
            human_bytes(run.bytes_fetched()),
            run.blobs_collected,
        );
        for e in run.errors() {
            println!("  error: {e}");
        }
    }
    match run.outcome {
        RunOutcome::Ok => Ok(ExitCode::SUCCESS),
        RunOutcome::Partial => {
            eprintln!(
                "error: sync finished with errors (some tags or repositories kept their previous content)"
            );
            Ok(ExitCode::from(2))
        }
        RunOutcome::Failed => {
            eprintln!("error: sync failed; the previously published tree keeps serving");
            Ok(ExitCode::FAILURE)
        }
    }
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

async fn demo(port: Option<u16>, cli: &Cli) -> anyhow::Result<ExitCode> {
    let work = tempfile::Builder::new().prefix("wharf-demo.").tempdir().context("temp dir")?;
    let upstream = work.path().join("upstream");
    demo::write_sample_images(&upstream).context("writing the sample images")?;
    let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .with_context(|| format!("cannot listen on port {}", port.unwrap_or(0)))?;
    let addr = listener.local_addr()?;
    // The demo never touches a real data dir: its own temp dir, its own upstream.
    if cli.data_dir.is_some() || cli.listen.is_some() {
        bail!("demo uses its own temp data dir and --port; --data-dir and --listen do not apply");
    }
    let text = toml::Value::String;
    let values = vec![
        ("server.listen".into(), text(addr.to_string())),
        ("storage.data_dir".into(), text(work.path().join("data").display().to_string())),
        ("upstream.url".into(), text(format!("oci:{}", upstream.display()))),
    ];
    let config = config::load(None, std::iter::empty(), &CliOverrides { values })?;
    let app = App::open(config, Arc::new(SystemClock))?;
    let run = app.jobs.run_sync().await?;
    report(&run, false)?;
    if run.outcome != RunOutcome::Ok {
        bail!("the demo sync did not succeed");
    }
    let tree = app.tree.root().to_owned();
    let host = addr.to_string();
    let (multi, app_img) = (demo::IMAGES[0], demo::IMAGES[1]);
    println!(
        "\nWharf demo serving on http://{host} (tree: {tree})\n\nTry:\n  \
         curl -s http://{host}/v2/_catalog\n  \
         skopeo inspect --tls-verify=false docker://{host}/{m}:{mt}\n  \
         skopeo --insecure-policy copy --src-tls-verify=false docker://{host}/{m}:{mt} oci:/tmp/wharf-demo-out:{mt}\n  \
         skopeo --insecure-policy copy --src-tls-verify=false --override-arch arm64 docker://{host}/{m}:{mt} oci:/tmp/wharf-demo-arm64:{mt}\n  \
         podman pull --tls-verify=false {host}/{a}:{at}\n\n\
         Blob GETs answer 307 into http://{host}/tree/. Ctrl-C stops the demo and removes its files.",
        tree = tree.display(),
        m = multi.0,
        mt = multi.1,
        a = app_img.0,
        at = app_img.1,
    );
    app.serve(listener).await?;
    drop(work);
    Ok(ExitCode::SUCCESS)
}
