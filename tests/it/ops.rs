//! Running in production: TLS with HTTP/2 and certificate reload, signals and systemd
//! notification, readiness, metrics, request limits, push-triggered sync, JSON logs.

use std::io::{Read, Write};
use std::time::Duration;

use tokio::process::Command;

use crate::harness::*;

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_http2_real_clients_and_reloads_its_certificate() {
    let upstream = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(upstream.path()).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = issue(certs.path(), "one");
    let (cert_path, key_path) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::copy(&cert1, &cert_path).unwrap();
    std::fs::copy(&key1, &key_path).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", upstream.path().display()));
    setup.server = format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let wharf = Wharf::launch(setup).await;
    wharf.sync().await;
    let tls = wharf.running().tls_addr.expect("an https listener");
    let url = format!("https://localhost:{}/v2/demo/app/tags/list", tls.port());
    let r = https_client(&ca1).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "HTTP/2 via ALPN");
    // The plain HTTP listener keeps working beside it.
    assert_eq!(wharf.get("/v2/").await.status(), 200);

    // A real client over TLS, trusting only the test CA.
    let cert_dir = tempfile::tempdir().unwrap();
    std::fs::write(cert_dir.path().join("ca.crt"), &ca1).unwrap();
    let out = run(skopeo().args([
        "inspect",
        "--cert-dir",
        &cert_dir.path().display().to_string(),
        &format!("docker://localhost:{}/demo/app:1.0", tls.port()),
    ]))
    .await;
    assert!(out.contains("\"Digest\": \"sha256:"), "{out}");

    // A new certificate from another CA: after reload (what SIGHUP does) new connections get it.
    let (ca2, cert2, key2) = issue(certs.path(), "two");
    assert!(https_client(&ca2).get(&url).send().await.is_err(), "not yet");
    std::fs::copy(&cert2, &cert_path).unwrap();
    std::fs::copy(&key2, &key_path).unwrap();
    wharf.running().reload().await.unwrap();
    assert_eq!(https_client(&ca2).get(&url).send().await.unwrap().status(), 200);
    // A broken file keeps the old certificate and says why.
    std::fs::write(&key_path, "not a key").unwrap();
    let err = wharf.running().reload().await.unwrap_err();
    assert!(err.contains("tls.key"), "{err}");
    assert_eq!(https_client(&ca2).get(&url).send().await.unwrap().status(), 200);

    // Cookies of the admin UI are Secure over TLS.
    let r = https_client(&ca2)
        .get(format!("https://localhost:{}/admin/login", tls.port()))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_new_schedules_and_refuses_a_broken_config() {
    let upstream = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(upstream.path()).unwrap();
    let wharf = Wharf::start(&format!("oci:{}", upstream.path().display())).await;
    let path = wharf.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let daily = text.replace(&format!("sync = \"{NEVER}\""), "sync = \"0 30 3 * * *\"");
    assert_ne!(daily, text);
    std::fs::write(&path, &daily).unwrap();
    wharf.running().reload().await.unwrap();
    assert_eq!(wharf.jobs().schedules().sync, "0 30 3 * * *");
    // A broken file changes nothing and says why.
    std::fs::write(&path, daily.replace("0 30 3 * * *", "every day")).unwrap();
    let err = wharf.running().reload().await.unwrap_err();
    assert!(err.contains("schedule.sync"), "{err}");
    assert_eq!(wharf.jobs().schedules().sync, "0 30 3 * * *");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_readiness_and_a_sync_stopped_at_a_safe_point() {
    let upstream = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(upstream.path()).unwrap();
    let wharf = Wharf::start(&format!("oci:{}", upstream.path().display())).await;
    assert_eq!(wharf.get("/healthz").await.status(), 200);
    assert_eq!(wharf.get("/readyz").await.status(), 200);
    wharf.sync().await;
    let m: serde_json::Value = wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(wharf.get(&format!("/v2/demo/app/blobs/{layer}")).await.status(), 307);
    let metrics = wharf.get("/metrics").await.text().await.unwrap();
    for line in [
        "wharf_sync_runs_total{result=\"ok\"} 1",
        "wharf_redirects_total{tier=\"fallback\"} 1",
        "wharf_fallback_redirects_total 1",
        "wharf_generation 1",
        "wharf_mirrors{state=\"active\"} 0",
        "wharf_crawl_runs_total{result=\"ok\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_sync_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes > 0);
    let store: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_store_size_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(store > 0);
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("wharf_"), "every metric is named wharf_...: {line}");
    }

    // Shutdown begins: a sync stops before its first repository and commits nothing.
    wharf.jobs().stop_sync().await;
    let run = wharf.sync().await;
    assert!(run.error.as_deref().unwrap_or_default().contains("safe point"), "{run:?}");
    assert_eq!(run.generation_after, 1);
    let metrics = wharf.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("wharf_sync_runs_total{result=\"interrupted\"} 1"), "{metrics}");
}

/// SIGTERM's shutdown while a sync downloads: the blob in flight finishes, no further blob
/// or repository starts, nothing is committed, and the server stops.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_a_running_sync_at_a_safe_point() {
    use crate::mirrors_harness::Nginx;
    let reg = Registry::start().await;
    reg.push("single:v1", "a:v1", &[]).await;
    reg.push("multi:v1", "b:v1", &["--all"]).await;
    // The 1 MiB base layer takes about 4 s through this proxy.
    let proxy = Nginx::slow_proxy(reg.port, 256 * 1024).await;
    let mut setup = Setup::new(&proxy.url(""));
    setup.sync = "retries = 1\nconcurrency = 1\n".into();
    let wharf = Wharf::launch(setup).await;
    let jobs = wharf.jobs().clone();
    let sync = tokio::spawn({
        let jobs = jobs.clone();
        async move { jobs.run_sync().await }
    });
    let mut downloading = false;
    for _ in 0..200 {
        let p = jobs.sync_progress();
        if p.running && p.blobs_total > 0 {
            downloading = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(downloading, "the sync reached its blob downloads");
    let data = wharf.stop().await;
    let run = sync.await.unwrap().unwrap();
    assert!(run.error.as_deref().unwrap_or_default().contains("safe point"), "{run:?}");
    assert_eq!(run.generation_after, 0, "nothing was committed");
    let started: Vec<&str> = run.repos.iter().map(|r| r.repo.as_str()).collect();
    assert_eq!(started, ["a"], "the second repository never started: {run:?}");
    // Depending on when the stop came, the big layer was in flight (and finished) or not yet
    // started (and refused); never cut off half-way.
    let layer_done = run.repos[0].bytes_fetched > 1_000_000;
    let layer_refused = run.repos[0].errors.iter().any(|e| e.contains("safe point"));
    assert!(layer_done != layer_refused, "{run:?}");
    // Whatever was downloaded is whole: every pool file hashes to its name.
    let pool = data.path().join("data/tree/blobs/sha256");
    for e in std::fs::read_dir(&pool).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        let digest = wharf::model::Digest::of(&bytes);
        assert_eq!(digest.hex(), e.file_name().to_string_lossy(), "a whole, verified file");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_heads_and_slow_clients_are_limited() {
    let upstream = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(upstream.path()).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", upstream.path().display()));
    setup.server = "client_timeout = \"1s\"\n".into();
    let wharf = Wharf::launch(setup).await;
    let post = |path: &str, len: usize| {
        http()
            .post(wharf.url(path))
            .header("Content-Type", "text/plain")
            .body(vec![b'x'; len])
            .send()
    };
    // Read-only surfaces take no POST at all: 405 saying what is allowed.
    let r = post("/tree/x", 10).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET, HEAD"));
    assert_eq!(post("/metrics", 1).await.unwrap().status(), 405);
    // A GET with a body, or a body sent to /v2, is refused before a byte is read.
    let get_body = http().get(wharf.url("/metrics")).body(vec![b'x'; 10]).send().await.unwrap();
    assert_eq!(get_body.status(), 413, "nothing else takes a body");
    let put = http().put(wharf.url("/v2/x/blobs/uploads/1")).body(vec![b'x'; 1 << 20]);
    assert_eq!(
        put.send().await.unwrap().status(),
        413,
        "/v2 refuses bodies instead of draining them"
    );
    assert_eq!(post("/hooks/registry", 2 << 20).await.unwrap().status(), 413);
    assert_eq!(post("/admin/login", 100 << 10).await.unwrap().status(), 413);

    // A request head that never ends: 408 and the connection is closed.
    let addr = wharf.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // An oversized head is refused.
    let r = http().get(wharf.url("/v2/")).header("X-Big", "a".repeat(20 << 10)).send().await;
    assert_eq!(r.unwrap().status(), 431);
    let r = http().get(wharf.url("/v2/")).header("X-Small", "a".repeat(1 << 10)).send().await;
    assert_eq!(r.unwrap().status(), 200);
}

/// Send `request` as written, read the answer until the server closes or `timeout`.
async fn raw_exchange(addr: std::net::SocketAddr, request: String, timeout: Duration) -> String {
    tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(timeout)).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = [0u8; 4096];
        let n = c.read(&mut out).unwrap_or(0);
        String::from_utf8_lossy(&out[..n]).into_owned()
    })
    .await
    .unwrap()
}

fn notifications_yaml(wharf_port: u16, secret: &str) -> String {
    format!(
        "notifications:\n  endpoints:\n    - name: wharf\n      url: http://127.0.0.1:{wharf_port}/hooks/registry\n      headers:\n        Authorization: [\"Bearer {secret}\"]\n      timeout: 2s\n      threshold: 5\n      backoff: 1s\n"
    )
}

/// Poll until `repo` lists `tag` (pushes reach Wharf through notifications).
async fn served(wharf: &Wharf, repo: &str, tag: &str) -> bool {
    for _ in 0..150 {
        let tags: serde_json::Value =
            wharf.get(&format!("/v2/{repo}/tags/list")).await.json().await.unwrap_or_default();
        if tags["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_to_the_upstream_registry_is_served_within_seconds() {
    let secret = "a-long-shared-secret-for-hooks";
    let (reg_port, port) = (free_port(), free_port());
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let mut setup = Setup::new(&format!("http://127.0.0.1:{reg_port}"));
    setup.port = Some(port);
    setup.extra =
        format!("[hooks]\nsecret_file = \"{}\"\ndebounce = \"500ms\"\n", secret_file.display());
    setup.server = "client_timeout = \"2s\"\n".into();
    let wharf = Wharf::launch(setup).await;
    let reg = Registry::start_at(reg_port, &notifications_yaml(port, secret)).await;

    // The secret is checked from the headers before a byte of the body is read: a caller
    // announcing 1 MiB and sending none gets 401 at once. With the right secret, a body that
    // never comes is cut off after client_timeout (400), not held open.
    let announce = |auth: &str| {
        format!(
            "POST /hooks/registry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{{"
        )
    };
    let started = std::time::Instant::now();
    let answer = raw_exchange(wharf.addr, announce("wrong"), Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = raw_exchange(wharf.addr, announce(secret), Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("not sent in time"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(15), "the stalled body was cut off");

    // Wrong or missing secrets and bad bodies are refused, and queue nothing.
    let hook = wharf.url("/hooks/registry");
    let envelope = r#"{"events":[{"action":"push","target":{"repository":"app","tag":"v2"}}]}"#;
    for (auth, body, want) in [
        (None, envelope, 401),
        (Some(format!("Bearer wrong-{secret}")), envelope, 401),
        (Some(format!("Bearer {secret}")), "{not json", 400),
    ] {
        let mut r = http().post(&hook).body(body.to_owned());
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        assert_eq!(r.send().await.unwrap().status(), want, "{auth:?} {body}");
    }
    assert!(wharf.runs().await.is_empty(), "refused calls synced nothing");

    // Real pushes: the registry notifies Wharf, which syncs without waiting for cron.
    reg.push("single:v1", "app:v1", &[]).await;
    reg.push("single:v1", "other:v1", &[]).await;
    assert!(served(&wharf, "app", "v1").await && served(&wharf, "other", "v1").await);
    // The registry may deliver a notification again (it retries); let those runs settle, so
    // the next push is alone in its debounce window.
    let mut runs = wharf.runs().await.len();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = wharf.runs().await.len();
        if now == runs {
            break;
        }
        runs = now;
    }
    reg.push("single2:v2", "app:v2", &[]).await;
    assert!(served(&wharf, "app", "v2").await, "the pushed tag is served within seconds");
    let runs = wharf.runs().await;
    let pushed = &runs[0];
    let repos: Vec<&str> = pushed.repos.iter().map(|r| r.repo.as_str()).collect();
    assert_eq!(repos, ["app"], "a push syncs the pushed repository alone: {pushed:?}");
    assert_eq!(pushed.repos[0].tags_added, 1);
    assert!(served(&wharf, "other", "v1").await, "others untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_is_off_without_a_secret() {
    let upstream = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(upstream.path()).unwrap();
    let wharf = Wharf::start(&format!("oci:{}", upstream.path().display())).await;
    let r = http().post(wharf.url("/hooks/registry")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The real binary under a fake systemd: READY=1 once listening, RELOADING=1/READY=1 on
/// SIGHUP, STOPPING=1 on SIGTERM, exit 0, JSON logs that never show the webhook secret.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_talks_to_systemd_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("upstream");
    wharf::demo::write_sample_images(&upstream).unwrap();
    let secret = "never-log-this-secret-value";
    std::fs::write(dir.path().join("secret"), secret).unwrap();
    let port = free_port();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{}\"\n[upstream]\nurl = \"oci:{}\"\n[hooks]\nsecret_file = \"{}\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
            dir.path().join("data").display(),
            upstream.display(),
            dir.path().join("secret").display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["--config", &config.display().to_string(), "serve"])
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let recv = move || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), notify)
    };
    let (msg, notify) = tokio::task::spawn_blocking(recv).await.unwrap();
    assert!(msg.contains("READY=1"), "{msg}");
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(http().get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let pid = child.id().unwrap().to_string();
    run(Command::new("kill").args(["-HUP", &pid])).await;
    let recv = move || {
        let mut got = String::new();
        let mut buf = [0u8; 256];
        while !got.contains("READY=1") {
            let n = notify.recv(&mut buf).expect("a notification");
            got += &String::from_utf8_lossy(&buf[..n]);
            got.push('\n');
        }
        (got, notify)
    };
    let (msg, notify) = tokio::task::spawn_blocking(recv).await.unwrap();
    assert!(msg.contains("RELOADING=1"), "{msg}");
    run(Command::new("kill").args(["-TERM", &pid])).await;
    let (msg, _) = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), ())
    })
    .await
    .unwrap();
    assert!(msg.contains("STOPPING=1"), "{msg}");
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    assert!(!dir.path().join("data/control.sock").exists(), "the control socket is removed");
    let logs = String::from_utf8_lossy(&out.stderr);
    let mut messages = Vec::new();
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        messages.push(v["fields"]["message"].as_str().unwrap_or_default().to_owned());
    }
    for want in ["serving", "SIGHUP: reloaded", "request"] {
        assert!(messages.iter().any(|m| m == want), "{want:?} logged: {logs}");
    }
    assert!(!logs.contains(secret), "the webhook secret is never logged");
}
