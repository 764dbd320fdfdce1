//! The test harness: a real docker-registry (Debian's CNCF distribution) on a free port with a
//! temp store, deterministic images built offline and pushed with real skopeo, and Wharf
//! started in process on a `127.0.0.1:0` listener with a temp data dir. Everything is cleaned
//! up on drop. A missing component fails loudly with the install hint.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::Command;

use wharf::app::{App, Running};
use wharf::clock::{Clock, SystemClock};
use wharf::config::{self, CliOverrides, Config};
use wharf::model::SyncRun;

pub const INSTALL_HINT: &str = "run ./test.sh: it installs docker-registry skopeo podman \
     containerd runc busybox-static jq apache2-utils nginx apache2 caddy rsync chromium chromium-driver gnupg openssl python3-aiosmtpd (apt-get) before running the tests";

/// The path of a required program, or a panic that says how to install it.
pub fn require(tool: &str) -> PathBuf {
    let dirs = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    dirs.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("`{tool}` is not installed, so this test cannot run: {INSTALL_HINT}")
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Run a command to success and return its stdout; panic with its output otherwise.
pub async fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().await.unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command that is expected to fail; returns stderr + stdout.
pub async fn run_failing(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().await.unwrap();
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// podman with storage of its own under `root`: no system state is touched.
pub fn podman(root: &Path) -> Command {
    let mut c = Command::new(require("podman"));
    c.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .arg("--tmpdir")
        .arg(root.join("tmp"))
        .args(["--events-backend", "none"]);
    c
}

/// What `podman run` needs on these machines: runc (crun fails on this cgroup setup), no
/// network, explicit limits (root lacks CAP_SYS_RESOURCE).
pub const PODMAN_RUN: [&str; 8] = [
    "--runtime",
    "runc",
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

pub fn skopeo() -> Command {
    let mut c = Command::new(require("skopeo"));
    c.arg("--insecure-policy");
    c
}

/// Deterministic test images (see tests/fixtures/README.md), built once per test run.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        for t in ["jq", "busybox", "skopeo"] {
            require(t);
        }
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fixtures-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-images.sh");
        let out = std::process::Command::new("bash").arg(&script).arg(&dir).output().unwrap();
        assert!(out.status.success(), "build-images.sh: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// The digest recorded for `tag` in an OCI layout's index.json.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The children (platform arch -> digest) of an index blob in a layout.
pub fn index_children(layout: &Path, index_digest: &str) -> Vec<(String, String)> {
    let hex = index_digest.trim_start_matches("sha256:");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_owned(),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A real docker-registry with a temp store.
pub struct Registry {
    child: Option<tokio::process::Child>,
    pub port: u16,
    pub dir: TempDir,
}

impl Registry {
    pub async fn start() -> Registry {
        Registry::start_with("").await
    }

    /// Start with extra top-level YAML (e.g. an `auth:` section).
    pub async fn start_with(extra_yaml: &str) -> Registry {
        Registry::start_at(free_port(), extra_yaml).await
    }

    /// Start on a chosen port (when something must know the address beforehand).
    pub async fn start_at(port: u16, extra_yaml: &str) -> Registry {
        let bin = require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra_yaml}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let reg = Registry { child: Some(child), port, dir };
        wait_http(&format!("http://127.0.0.1:{port}/v2/"), &[200, 401]).await;
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `skopeo copy` an OCI layout (`fixtures()/<src>`) to `<registry>/<dest>`.
    pub async fn push(&self, src: &str, dest: &str, extra: &[&str]) {
        run(skopeo()
            .args(["copy", "--dest-tls-verify=false", "--retry-times", "2"])
            .args(extra)
            .arg(format!("oci:{}/{src}", fixtures().display()))
            .arg(format!("docker://{}/{dest}", self.host())))
        .await;
    }

    /// The four standard images: `multi:v1` (OCI index), `single:v1` (OCI manifest),
    /// `docker/single:v1` (Docker v2s2), `docker/multi:v1` (Docker manifest list).
    pub async fn push_standard(&self) {
        self.push("multi:v1", "multi:v1", &["--all"]).await;
        self.push("single:v1", "single:v1", &[]).await;
        self.push("single:v1", "docker/single:v1", &["--format", "v2s2"]).await;
        self.push("multi:v1", "docker/multi:v1", &["--all", "--format", "v2s2"]).await;
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// Poll `url` until it answers one of `statuses` (20 s at most).
pub async fn wait_http(url: &str, statuses: &[u16]) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(1)).send().await
            && statuses.contains(&r.status().as_u16())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up");
}

/// A Wharf instance in process.
pub struct Wharf {
    pub running: Option<Running>,
    _dir: TempDir,
    pub addr: std::net::SocketAddr,
}

/// The demo's sample images as an `oci:` upstream: the directory (keep it) and its URL.
pub fn demo_upstream() -> (TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let url = format!("oci:{}", dir.path().display());
    (dir, url)
}

/// A cron expression that never fires: February 31st.
pub const NEVER: &str = "0 0 0 31 2 *";

/// How to configure a test Wharf.
pub struct Setup {
    /// The `[upstream]` table's body.
    pub upstream: String,
    /// Extra lines of the `[server]` table.
    pub server: String,
    /// Extra lines of the `[storage]` table.
    pub storage: String,
    /// Lines of the `[sync]` table besides `request_timeout`.
    pub sync: String,
    /// The `[schedule]` table's body; by default crons that never fire (February 31st), so
    /// no scheduled run interferes with a test's own.
    pub schedule: String,
    /// Extra tables.
    pub extra: String,
    pub clock: Arc<dyn Clock>,
    /// Listen on this port (default: a free one).
    pub port: Option<u16>,
    /// Let the crawler reach loopback mirrors (`crawl.allow_private_addresses`, set through
    /// the environment layer so `extra` may still hold a `[crawl]` table). Default: true.
    pub allow_private: bool,
}

impl Setup {
    pub fn new(upstream_url: &str) -> Setup {
        Setup {
            upstream: format!("url = \"{upstream_url}\"\n"),
            server: String::new(),
            storage: String::new(),
            sync: "retries = 2\n".into(),
            schedule: format!("sync = \"{NEVER}\"\ncrawl = \"{NEVER}\"\n"),
            extra: String::new(),
            clock: Arc::new(SystemClock),
            port: None,
            allow_private: true,
        }
    }
}

/// Write `<dir>/wharf.toml` for `setup` listening on `addr`, and load it.
pub fn config_for(dir: &Path, addr: std::net::SocketAddr, setup: &Setup) -> Config {
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\n{}[storage]\ndata_dir = \"{}\"\n{}[upstream]\n{}[sync]\nrequest_timeout = \"5s\"\n{}[schedule]\n{}{}",
        setup.server,
        dir.join("data").display(),
        setup.storage,
        setup.upstream,
        setup.sync,
        setup.schedule,
        setup.extra,
    );
    let path = dir.join("wharf.toml");
    std::fs::write(&path, toml).unwrap();
    config::load(Some(&path), env_of(setup), &CliOverrides::default()).unwrap()
}

/// The environment layer of a test's configuration.
fn env_of(setup: &Setup) -> Vec<(String, String)> {
    let allow = ("WHARF__CRAWL__ALLOW_PRIVATE_ADDRESSES".to_owned(), "true".to_owned());
    setup.allow_private.then_some(allow).into_iter().collect()
}

impl Wharf {
    pub async fn start(upstream_url: &str) -> Wharf {
        Wharf::launch(Setup::new(upstream_url)).await
    }

    pub async fn launch(setup: Setup) -> Wharf {
        Wharf::launch_in(tempfile::tempdir().unwrap(), setup).await
    }

    /// Stop, and start again on the same data dir (what a restart of the service does).
    pub async fn restart(self, setup: Setup) -> Wharf {
        let dir = self.stop().await;
        Wharf::launch_in(dir, setup).await
    }

    async fn launch_in(dir: TempDir, setup: Setup) -> Wharf {
        let listener = TcpListener::bind(("127.0.0.1", setup.port.unwrap_or(0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = config_for(dir.path(), addr, &setup);
        // SIGHUP's reload reads the file again, as `wharf serve` does.
        let path = dir.path().join("wharf.toml");
        let env = env_of(&setup);
        let source: wharf::app::ConfigSource = std::sync::Arc::new(move || {
            config::load(Some(&path), env.clone(), &CliOverrides::default())
        });
        let running = App::open(config, setup.clock)
            .unwrap()
            .with_reload(source, None)
            .start(listener)
            .await
            .unwrap();
        wait_http(&format!("http://{addr}/readyz"), &[200]).await;
        Wharf { running: Some(running), _dir: dir, addr }
    }

    pub fn app(&self) -> &App {
        &self.running.as_ref().expect("running").app
    }

    pub fn running(&self) -> &wharf::app::Running {
        self.running.as_ref().expect("running")
    }

    pub fn jobs(&self) -> &std::sync::Arc<wharf::scheduler::Jobs> {
        &self.app().jobs
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn tree(&self) -> &Path {
        self.app().tree.root()
    }

    pub async fn sync(&self) -> SyncRun {
        self.app().jobs.run_sync().await.expect("sync run recorded")
    }

    pub fn geo(&self) -> &wharf::geo::GeoDb {
        &self.app().geo
    }

    pub async fn crawl(&self) -> wharf::crawl::CrawlReport {
        self.app().jobs.run_crawl().await.expect("crawl run")
    }

    /// Run an operator command the way `wharf mirror ...` does.
    pub async fn control(&self, request: wharf::control::Request) -> wharf::control::Reply {
        wharf::control::execute(&self.app().jobs, request).await
    }

    /// Recorded sync runs, newest first.
    pub async fn runs(&self) -> Vec<SyncRun> {
        self.app().store.recent_runs(100).await.unwrap()
    }

    /// The config file the instance was started with (for the CLI).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("wharf.toml")
    }

    /// Stop serving; the data dir stays until the returned guard is dropped.
    pub async fn stop(mut self) -> TempDir {
        self.running.take().expect("running").stop().await;
        // Aborted background tasks let go of their store handles a moment later.
        let path = self._dir.path().join("data/wharf.redb");
        for _ in 0..50 {
            match wharf::store::Store::open(&path) {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        self._dir
    }

    /// Stop serving (flushing what is buffered) and open the store file the instance used.
    pub async fn stop_and_open_store(mut self) -> (wharf::store::Store, TempDir) {
        self.running.take().expect("running").stop().await;
        // Aborted background tasks let go of their store handles a moment later.
        let path = self._dir.path().join("data/wharf.redb");
        for _ in 0..50 {
            match wharf::store::Store::open(&path) {
                Ok(store) => return (store, self._dir),
                Err(wharf::store::StoreError::Locked(_)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the store stayed locked after stop")
    }

    pub async fn generation(&self) -> u64 {
        self.app().store.generation().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        http().get(self.url(path)).send().await.unwrap()
    }

    /// The value of one `wharf_http_requests_total` series, 0 when absent.
    pub async fn requests(&self, route: &str, method: &str, status: &str) -> u64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        let key = format!(
            "wharf_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} "
        );
        text.lines().find_map(|l| l.strip_prefix(&key)).map(|n| n.parse().unwrap()).unwrap_or(0)
    }
}

/// A client that does not follow redirects, so tests see them.
pub fn http() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
        })
        .clone()
}

/// A registry with the four standard images and a Wharf that has synced them.
pub async fn synced_pair() -> (Registry, Wharf) {
    let reg = Registry::start().await;
    reg.push_standard().await;
    let wharf = Wharf::start(&reg.url()).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, wharf::model::RunOutcome::Ok, "{run:#?}");
    (reg, wharf)
}

/// A CA and a certificate for 127.0.0.1/localhost signed by it, as PEM.
pub fn issue(dir: &Path, name: &str) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_cert.pem(), cert_path, key_path)
}
