//! The living demo around the sample images: a mirror network in process. Five mirrors,
//! each a static web server on its own loopback port over its own copy of the tree: two
//! country mirrors, a netblock mirror, one a generation behind and one dead. Pretend
//! clients are documentation addresses placed in countries by a GeoIP database the demo
//! writes itself; loopback is a trusted proxy, so `X-Forwarded-For` places a request.
//! The mirrors are registered and crawled like real ones, then blob redirects go to them,
//! and a bounded burst of synthetic pulls fills the counters, charts and status page.
//! This module sits outside the app (it drives it the way an operator would), next to
//! `main`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix_web::dev::{ServerHandle, Service};
use ipnet::IpNet;
use rand::{Rng, SeedableRng};

use crate::app::App;
use crate::model::{Digest, MirrorName, MirrorPatch, SyncRun};
use crate::service::{Actor, MirrorChange, change_mirror};

/// Synthetic pulls one `--traffic` run may play, at most.
pub const MAX_TRAFFIC: u32 = 100_000;

/// The pretend clients: documentation ranges (RFC 5737, RFC 3849), each placed in a country.
pub const CLIENTS: [(&str, &str); 10] = [
    ("192.0.2.0/26", "DE"),
    ("192.0.2.64/26", "FR"),
    ("192.0.2.128/26", "GB"),
    ("192.0.2.192/26", "NL"),
    ("198.51.100.0/25", "US"),
    ("198.51.100.128/25", "CA"),
    ("203.0.113.0/25", "AU"),
    ("203.0.113.128/25", "BR"),
    ("2001:db8::/33", "JP"),
    ("2001:db8:8000::/33", "IN"),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Holds the current generation.
    Current,
    /// Copied before the second sync: holds generation 1 only.
    Behind,
    /// Registered, but nothing listens on its port.
    Dead,
}

struct Plan {
    name: &'static str,
    country: &'static str,
    netblock: Option<&'static str>,
    kind: Kind,
}

const MIRRORS: [Plan; 5] = [
    Plan { name: "eu-de", country: "DE", netblock: None, kind: Kind::Current },
    Plan { name: "na-us", country: "US", netblock: None, kind: Kind::Current },
    Plan { name: "campus", country: "AU", netblock: Some("203.0.113.0/25"), kind: Kind::Current },
    Plan { name: "asia-jp", country: "JP", netblock: None, kind: Kind::Behind },
    Plan { name: "sa-br", country: "BR", netblock: None, kind: Kind::Dead },
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {cause}")]
    Step { what: &'static str, cause: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

fn step<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> DemoError {
    move |e| DemoError::Step { what, cause: e.to_string() }
}

/// The demo's settings on top of the defaults, for the server on `addr` with its files in
/// `work`; writes the GeoIP database it names.
pub fn settings(work: &Path, addr: SocketAddr) -> Result<Vec<(String, toml::Value)>, DemoError> {
    let geoip = work.join("demo-geoip.mmdb");
    let clients: Vec<(IpNet, &str)> =
        CLIENTS.iter().map(|(net, c)| (net.parse().expect("a CIDR"), *c)).collect();
    super::geoip::write_city_db(&geoip, &clients)
        .map_err(io("writing the demo's GeoIP database"))?;
    let text = |s: &str| toml::Value::String(s.to_owned());
    let path = |p: PathBuf| toml::Value::String(p.display().to_string());
    let loopback = toml::Value::Array(vec![text("127.0.0.0/8"), text("::1/128")]);
    Ok(vec![
        ("server.listen".into(), text(&addr.to_string())),
        ("server.trusted_proxies".into(), loopback),
        ("storage.data_dir".into(), path(work.join("data"))),
        ("upstream.url".into(), text(&format!("oci:{}", work.join("upstream").display()))),
        ("geoip.database".into(), path(geoip)),
        // The mirrors are on loopback; a dead one is disabled at its first failed crawl,
        // and the crawl runs every minute so the status page follows changes.
        ("crawl.allow_private_addresses".into(), toml::Value::Boolean(true)),
        ("crawl.max_failures".into(), toml::Value::Integer(1)),
        ("crawl.request_timeout".into(), text("2s")),
        ("schedule.crawl".into(), text("30 * * * * *")),
    ])
}

/// A demo mirror as it runs.
pub struct DemoMirror {
    pub name: &'static str,
    pub country: &'static str,
    pub netblock: Option<&'static str>,
    pub url: String,
    /// `METHOD PATH STATUS` per request the mirror answered.
    pub log: PathBuf,
    kind: Kind,
}

impl DemoMirror {
    fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Current => "holds the current generation",
            Kind::Behind => "one generation behind (copied before the second sync)",
            Kind::Dead => "dead: nothing listens there",
        }
    }
}

/// The running network: mirrors, their servers, what was synced.
pub struct Network {
    pub mirrors: Vec<DemoMirror>,
    /// The demo's two sync runs: generation 1 (`demo/multi`), then 2 (`demo/app` added).
    pub runs: Vec<SyncRun>,
    /// Each repository's blobs (configs and layers), for the synthetic pulls.
    pub blobs: Vec<(&'static str, Vec<Digest>)>,
    pub logs: PathBuf,
    servers: Vec<ServerHandle>,
}

/// Sync the sample images in two generations, copy the tree to each mirror at the right
/// moment, serve the copies, register the mirrors and crawl them.
pub async fn build(app: &App, work: &Path) -> Result<Network, DemoError> {
    let images = work.join("images");
    let blobs = super::write_sample_images(&images).map_err(io("writing the sample images"))?;
    let upstream = work.join("upstream");
    let (mirrors_dir, logs) = (work.join("mirrors"), work.join("logs"));
    fs::create_dir_all(&logs).map_err(io("creating the logs dir"))?;
    let mut runs = Vec::new();
    // Generation 1 has only the first image; the stale mirror copies it.
    for (i, (repo, _)) in super::IMAGES.iter().enumerate() {
        copy_tree(&images.join(repo), &upstream.join(repo))
            .map_err(io(format!("copying {repo} upstream")))?;
        let run = app.jobs.run_sync().await.map_err(step("the demo sync"))?;
        let ok = run.outcome == crate::model::RunOutcome::Ok;
        runs.push(run);
        if !ok {
            return Err(DemoError::Step { what: "the demo sync", cause: "did not succeed".into() });
        }
        let kinds: &[Kind] = if i == 0 { &[Kind::Behind] } else { &[Kind::Current] };
        for plan in MIRRORS.iter().filter(|p| kinds.contains(&p.kind)) {
            copy_tree(app.tree.root(), &mirrors_dir.join(plan.name))
                .map_err(io(format!("copying the tree for mirror {}", plan.name)))?;
        }
    }

    let mut mirrors = Vec::new();
    let mut servers = Vec::new();
    for plan in &MIRRORS {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).map_err(io("listening for a demo mirror"))?;
        let port = listener.local_addr().map_err(io("a demo mirror's address"))?.port();
        let log = logs.join(format!("{}.log", plan.name));
        if plan.kind == Kind::Dead {
            drop(listener);
        } else {
            servers.push(serve_dir(&mirrors_dir.join(plan.name), listener, &log)?);
        }
        let url = format!("http://127.0.0.1:{port}/");
        let patch = MirrorPatch {
            urls: Some(vec![url.clone()]),
            country: Some(plan.country.into()),
            netblocks: plan.netblock.map(|n| vec![n.to_owned()]),
            ..MirrorPatch::default()
        };
        let name: MirrorName = plan.name.parse().map_err(step("a demo mirror's name"))?;
        change_mirror(&app.jobs, &Actor::Cli, &name, MirrorChange::Add(patch), "mirror.add")
            .await
            .map_err(step("registering a demo mirror"))?;
        mirrors.push(DemoMirror {
            name: plan.name,
            country: plan.country,
            netblock: plan.netblock,
            url,
            log,
            kind: plan.kind,
        });
    }
    app.jobs.run_crawl().await.map_err(step("crawling the demo mirrors"))?;
    Ok(Network { mirrors, runs, blobs, logs, servers })
}

/// Copy `src` to `dest` the way `cp -al` does: directories made, files hardlinked (the tree
/// is written by renames, never in place, so a copy stays as it was).
fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dest)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let to = dest.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &to)?;
        } else if fs::hard_link(entry.path(), &to).is_err() {
            fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// A static web server over `root` on `listener`, one worker, logging each request.
fn serve_dir(root: &Path, listener: TcpListener, log: &Path) -> Result<ServerHandle, DemoError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening {}", log.display())))?;
    let file = Arc::new(Mutex::new(file));
    let root = root.to_owned();
    let server = actix_web::HttpServer::new(move || {
        let file = file.clone();
        actix_web::App::new()
            .wrap_fn(move |req, srv| {
                let line = format!("{} {}", req.method(), req.path());
                let file = file.clone();
                let answer = srv.call(req);
                async move {
                    let res = answer.await?;
                    if let Ok(mut f) = file.lock() {
                        let _ = writeln!(f, "{line} {}", res.status().as_u16());
                    }
                    Ok(res)
                }
            })
            .service(actix_files::Files::new("/", &root))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(io("serving a demo mirror"))?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

/// A random address of a pretend client in `net`.
fn address_in(net: IpNet, rng: &mut impl Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let span = u32::MAX >> n.prefix_len();
            std::net::Ipv4Addr::from(u32::from(n.network()) | (rng.random::<u32>() & span)).into()
        }
        IpNet::V6(n) => {
            let span = u128::MAX >> n.prefix_len();
            std::net::Ipv6Addr::from(u128::from(n.network()) | (rng.random::<u128>() & span)).into()
        }
    }
}

impl Network {
    /// Play `pulls` synthetic pulls (every blob of a random repository) against the server
    /// at `base`, each from a random pretend client; returns how many redirects went where
    /// (a mirror's name, or `wharf` for the fallback tree).
    pub async fn traffic(
        &self,
        base: &str,
        pulls: u32,
        seed: u64,
    ) -> Result<BTreeMap<String, u64>, DemoError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(step("an HTTP client"))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let nets: Vec<IpNet> = CLIENTS.iter().map(|(n, _)| n.parse().expect("a CIDR")).collect();
        let mut tally = BTreeMap::new();
        for _ in 0..pulls.min(MAX_TRAFFIC) {
            let client = address_in(nets[rng.random_range(0..nets.len())], &mut rng);
            let (repo, digests) = &self.blobs[rng.random_range(0..self.blobs.len())];
            for digest in digests {
                let url = format!("{base}/v2/{repo}/blobs/{digest}");
                let r = http
                    .get(&url)
                    .header("X-Forwarded-For", client.to_string())
                    .send()
                    .await
                    .map_err(step("a synthetic pull"))?;
                let location = r.headers().get("location").and_then(|l| l.to_str().ok());
                let target = location
                    .and_then(|l| self.mirrors.iter().find(|m| l.starts_with(&m.url)))
                    .map_or("wharf", |m| m.name);
                *tally.entry(target.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(tally)
    }

    /// What to try, for the server at `host`.
    pub fn instructions(&self, host: &str) -> String {
        let mut s = String::from(
            "\nThe demo's mirror network (each a web server over its own copy of the tree):\n",
        );
        for m in &self.mirrors {
            let place = match m.netblock {
                Some(n) => format!("{}, clients in {n}", m.country),
                None => m.country.to_owned(),
            };
            s += &format!("  {:<8} {:<24} {:<28} {}\n", m.name, m.url, place, m.describe());
        }
        s += "Pretend clients (documentation addresses; loopback is a trusted proxy, so X-Forwarded-For places a request):\n ";
        for (net, country) in CLIENTS {
            s += &format!(" {net} {country};");
        }
        s.pop();
        let (multi, app) = (super::IMAGES[0], super::IMAGES[1]);
        let shared = self.blobs[0].1.first().map(Digest::to_string).unwrap_or_default();
        let own = self.blobs[1].1.last().map(Digest::to_string).unwrap_or_default();
        s += &format!(
            "\n\nTry:\n  \
             skopeo --insecure-policy copy --src-tls-verify=false docker://{host}/{m}:{mt} oci:/tmp/wharf-demo-out:{mt}\n      \
             (the blobs come from mirrors: see {logs}/<mirror>.log)\n  \
             curl -s 'http://{host}/explain?name={a}&digest={own}&ip=192.0.2.10'\n      \
             (why a client in Germany is sent to eu-de)\n  \
             curl -s -o /dev/null -w '%{{redirect_url}}\\n' -H 'X-Forwarded-For: 198.51.100.7' http://{host}/v2/{a}/blobs/{own}\n      \
             (the same digest for a client in the US: na-us)\n  \
             curl -s -o /dev/null -w '%{{redirect_url}}\\n' -H 'X-Forwarded-For: 2001:db8::7' http://{host}/v2/{m}/blobs/{shared}\n      \
             (Japan: asia-jp is a generation behind, but holds this blob of generation 1)\n  \
             curl -s -H 'X-Forwarded-For: 192.0.2.10' http://{host}/client-config/registries.conf\n      \
             (the client configuration: verified registry mirrors near the client, then Wharf)\n  \
             podman run --rm --tls-verify=false {host}/{m}:{mt}\n  \
             podman run --rm --tls-verify=false --arch arm64 {host}/{m}:{mt}   (needs qemu-user-static)\n  \
             open http://{host}/ (the public registry page), http://{host}/mirrors (the mirror status),\n      \
             http://{host}/api/v1/status (how fast each generation reached the mirrors)\n",
            logs = self.logs.display(),
            m = multi.0,
            mt = multi.1,
            a = app.0,
        );
        s
    }

    /// Stop the mirrors' servers.
    pub async fn stop(self) {
        for s in self.servers {
            s.stop(false).await;
        }
    }
}
