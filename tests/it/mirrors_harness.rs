//! Real mirrors for tests: nginx serving copies of Wharf's tree, and MaxMind databases
//! written with maxminddb-writer.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::harness::*;

/// An nginx serving `root` on a free port (or the given one), logging every request.
pub struct Nginx {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Stopped gracefully on drop (see `Drop`).
    child: tokio::process::Child,
}

impl Drop for Nginx {
    /// SIGQUIT (graceful shutdown: the master stops its workers), then wait. A SIGKILL would
    /// kill only the master and leave its workers behind, still holding the listening socket.
    /// A worker that outlives its master fails the test.
    fn drop(&mut self) {
        let d = self.dir.path();
        let _ = std::process::Command::new(require("nginx"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .args(["-s", "quit"])
            .stderr(std::process::Stdio::null())
            .status();
        let mut exited = false;
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                exited = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        if !exited {
            let _ = self.child.start_kill();
        }
        // A worker left behind would still hold the listening socket.
        let free = std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok();
        if !free && !std::thread::panicking() {
            panic!("an nginx worker outlived its master on port {}", self.port);
        }
    }
}

impl Nginx {
    /// Serve `root`; `limit_rate` (bytes/s) makes it slow.
    pub async fn start(root: &Path, port: Option<u16>, limit_rate: Option<u32>) -> Nginx {
        let rate = limit_rate.map(|r| format!("limit_rate {r};")).unwrap_or_default();
        Nginx::launch(&format!("root {};\n    location / {{ {rate} }}", root.display()), port).await
    }

    /// A reverse proxy to `upstream_port` answering 503 until `flag` exists.
    pub async fn failing_proxy(flag: &Path, upstream_port: u16) -> Nginx {
        let body = format!(
            "location / {{\n      if (!-f {}) {{ return 503; }}\n      proxy_pass http://127.0.0.1:{upstream_port};\n      \
             proxy_set_header Host $http_host;\n    }}",
            flag.display()
        );
        Nginx::launch(&body, None).await
    }

    /// A reverse proxy to `upstream_port` that sends at most `limit_rate` bytes/s.
    pub async fn slow_proxy(upstream_port: u16, limit_rate: u32) -> Nginx {
        let body = format!(
            "location / {{\n      limit_rate {limit_rate};\n      proxy_pass http://127.0.0.1:{upstream_port};\n      \
             proxy_set_header Host $http_host;\n    }}"
        );
        Nginx::launch(&body, None).await
    }

    /// An nginx with this `server {}` body.
    pub async fn launch(server_body: &str, port: Option<u16>) -> Nginx {
        Nginx::launch_http("", server_body, port).await
    }

    /// An nginx with `http_extra` in its `http {}` block (e.g. a `log_format`) and this
    /// `server {}` body.
    pub async fn launch_http(http_extra: &str, server_body: &str, port: Option<u16>) -> Nginx {
        let port = port.unwrap_or_else(free_port);
        let server = format!("server {{\n    listen 127.0.0.1:{port};\n    {server_body}\n  }}");
        Nginx::launch_conf(&format!("{http_extra}\n  {server}"), port).await
    }

    /// An nginx with this `http {}` body (which must listen on `port`), as an admin's
    /// configuration would be.
    pub async fn launch_conf(http_body: &str, port: u16) -> Nginx {
        let bin = require("nginx");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["tmp", "logs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let user = if nix_is_root() { "user root;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             worker_shutdown_timeout 2s;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/logs/access.log;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  \
             scgi_temp_path {d}/tmp/scgi;\n  {http_body}\n}}\n",
            d = d.display(),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("logs/stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let n = Nginx { port, dir, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(n.dir.path().join("logs/stderr.log")).unwrap_or_default()
        );
    }

    /// Status codes of the access log, in order.
    pub fn statuses(&self) -> Vec<u16> {
        std::fs::read_to_string(self.dir.path().join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(2)?.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Request lines of the access log (`GET /a/blobs/sha256/... HTTP/1.1" 200`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("logs/access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

/// Copy Wharf's tree (hardlinks kept) to `dest`, as a mirror's rsync would.
pub async fn copy_tree(tree: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    run(Command::new(require("cp")).arg("-a").arg(format!("{}/.", tree.display())).arg(dest)).await;
}

/// A directory world-readable for nginx's workers.
pub fn public_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    d
}

fn nets<T: Copy>(entries: &[(&str, T)]) -> Vec<(ipnet::IpNet, T)> {
    entries.iter().map(|(cidr, v)| (cidr.parse().unwrap(), *v)).collect()
}

/// A GeoIP2-City database placing each CIDR in a country (continent from Wharf's table).
pub fn write_city_db(path: &Path, entries: &[(&str, &str)]) -> PathBuf {
    wharf::demo::geoip::write_city_db(path, &nets(entries)).unwrap();
    path.to_owned()
}

/// A GeoLite2-ASN database.
pub fn write_asn_db(path: &Path, entries: &[(&str, u32)]) -> PathBuf {
    wharf::demo::geoip::write_asn_db(path, &nets(entries)).unwrap();
    path.to_owned()
}

/// An Apache httpd (Debian's `apache2`) with this configuration after a minimal base (the
/// modules a generated registry configuration needs), listening on `port`.
pub struct Apache {
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Apache {
    pub async fn launch(site: &str, port: u16) -> Apache {
        let bin = ["/usr/sbin/apache2", "/usr/sbin/httpd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .map(PathBuf::from)
            .unwrap_or_else(|| require("apache2"));
        let modules = ["/usr/lib/apache2/modules", "/usr/lib64/httpd/modules"]
            .into_iter()
            .find(|p| Path::new(p).is_dir())
            .expect("Apache modules (apt-get install apache2)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let load: String = ["mpm_event", "authz_core", "mime", "rewrite", "headers", "log_config"]
            .iter()
            .filter(|m| Path::new(&format!("{modules}/mod_{m}.so")).is_file())
            .map(|m| format!("LoadModule {m}_module {modules}/mod_{m}.so\n"))
            .collect();
        let (user, group) = if nix_is_root() { ("www-data", "www-data") } else { ("", "") };
        let user =
            if user.is_empty() { String::new() } else { format!("User {user}\nGroup {group}\n") };
        let conf = format!(
            "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\nServerName localhost\n{load}{user}\
             TypesConfig /dev/null\nErrorLog {d}/error.log\nLogFormat \"%h %l %u %t \\\"%r\\\" %>s %b\" common\n\
             CustomLog {d}/access.log common\n{site}\n",
            d = d.display()
        );
        std::fs::write(d.join("httpd.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(d.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let a = Apache { dir, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "apache did not start: {} {}",
            std::fs::read_to_string(a.dir.path().join("stderr.log")).unwrap_or_default(),
            std::fs::read_to_string(a.dir.path().join("error.log")).unwrap_or_default()
        );
    }

    /// Request lines of the access log.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }
}

impl Drop for Apache {
    /// SIGTERM to the master (it stops its children), then wait.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
}

/// Copy Wharf's tree to `dest` with real rsync and the flags of the commands Wharf gives
/// mirror admins (`model::rsync_commands`: for everything, or with `--files-from` in `extra`
/// for a content set).
pub async fn rsync_tree(tree: &Path, dest: &Path, extra: &[&str]) {
    std::fs::create_dir_all(dest).unwrap();
    let (src, to) = (format!("{}/", tree.display()), format!("{}/", dest.display()));
    let content = if extra.contains(&"--files-from") {
        "arm64".parse().unwrap()
    } else {
        wharf::model::ContentSet::All
    };
    let documented = wharf::model::rsync_commands(&src, &content, &to).pop().unwrap();
    let flags: Vec<&str> = documented
        .split_whitespace()
        .filter(|w| w.starts_with('-') && !w.starts_with("--files-from"))
        .collect();
    run(Command::new(require("rsync")).args(flags).args(extra).arg(&src).arg(&to)).await;
}

/// A Caddy 2 serving this Caddyfile site (admin endpoint and automatic HTTPS off), listening
/// on `port`.
pub struct Caddy {
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Caddy {
    pub async fn launch(site: &str, port: u16) -> Caddy {
        let bin = require("caddy");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = format!("{{\n    admin off\n    auto_https off\n}}\n{site}");
        std::fs::write(d.join("Caddyfile"), conf).unwrap();
        let child = Command::new(bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(d.join("Caddyfile"))
            .env("HOME", d)
            .env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let c = Caddy { dir, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "caddy did not start: {}",
            std::fs::read_to_string(c.dir.path().join("stderr.log")).unwrap_or_default()
        );
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
}
