//! Faults: a real docker-registry behind a fault-injecting forwarding proxy (5xx, a reset or
//! a truncated body mid-blob, wrong bytes, a stalled transfer, a slow trickle), and mirrors
//! that go bad in the ways real ones do. Sync retries what is transient and never publishes
//! what fails verification; the crawler never credits a mirror that does not serve the
//! right bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use wharf::control::{Reply, Request};
use wharf::model::{MirrorPatch, RunOutcome};

use crate::harness::*;
use crate::mirrors_harness::*;

/// What the proxy does to one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status without asking the registry.
    Status(u16),
    /// Send the head and half the body, then reset the connection.
    Reset,
    /// Send the head (with the full Content-Length) and half the body, then close.
    Truncate,
    /// Flip one byte of the body (same length).
    Corrupt,
    /// Send the head and half the body, then nothing for a minute.
    Stall,
    /// Send the body 4 KiB at a time, 20 ms apart.
    Trickle,
}

#[derive(Default)]
struct Plan {
    /// Faults for the next blob GETs, one each, in order.
    next: VecDeque<Fault>,
    /// A fault for every request whose path contains the string.
    always: Vec<(String, Fault)>,
    /// (path, fault applied) of every request.
    seen: Vec<(String, Option<Fault>)>,
}

/// A forwarding HTTP/1.1 proxy in front of the real registry that injects faults.
pub struct FaultProxy {
    pub port: u16,
    plan: Arc<Mutex<Plan>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let p = plan.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream_port, p.clone()));
            }
        });
        FaultProxy { port, plan, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next blob GETs get these faults, one each.
    pub fn next_blobs(&self, faults: &[Fault]) {
        self.plan.lock().unwrap().next.extend(faults.iter().copied());
    }

    pub fn always(&self, path_part: &str, fault: Fault) {
        self.plan.lock().unwrap().always.push((path_part.to_owned(), fault));
    }

    pub fn clear(&self) {
        let mut p = self.plan.lock().unwrap();
        p.next.clear();
        p.always.clear();
    }

    pub fn applied(&self) -> Vec<Fault> {
        self.plan.lock().unwrap().seen.iter().filter_map(|(_, f)| *f).collect()
    }
}

async fn serve(mut client: TcpStream, upstream_port: u16, plan: Arc<Mutex<Plan>>) {
    // One request per connection: read its head (GETs and HEADs carry no body).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
    let is_blob_get = text.starts_with("GET ") && path.contains("/blobs/sha256:");
    let fault = {
        let mut p = plan.lock().unwrap();
        let fault = p
            .always
            .iter()
            .find(|(part, _)| path.contains(part.as_str()))
            .map(|(_, f)| *f)
            .or_else(|| if is_blob_get { p.next.pop_front() } else { None });
        p.seen.push((path.clone(), fault));
        fault
    };
    if let Some(Fault::Status(code)) = fault {
        let answer =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    // Forward with Connection: close, and read the whole answer.
    let mut lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let forwarded = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { return };
    if upstream.write_all(forwarded.as_bytes()).await.is_err() {
        return;
    }
    let mut answer = Vec::new();
    if upstream.read_to_end(&mut answer).await.is_err() {
        return;
    }
    let split =
        answer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(answer.len());
    let (head, body) = answer.split_at(split);
    let half = body.len() / 2;
    match fault {
        None | Some(Fault::Status(_)) => {
            let _ = client.write_all(&answer).await;
        }
        Some(Fault::Corrupt) => {
            let mut body = body.to_vec();
            if let Some(b) = body.get_mut(half) {
                *b ^= 0xff;
            }
            let _ = client.write_all(head).await;
            let _ = client.write_all(&body).await;
        }
        Some(Fault::Reset) => {
            let _ = client.write_all(head).await;
            let _ = client.write_all(&body[..half]).await;
            let _ = client.set_zero_linger();
        }
        Some(Fault::Truncate) => {
            let _ = client.write_all(head).await;
            let _ = client.write_all(&body[..half]).await;
            let _ = client.shutdown().await;
        }
        Some(Fault::Stall) => {
            let _ = client.write_all(head).await;
            let _ = client.write_all(&body[..half]).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Some(Fault::Trickle) => {
            let _ = client.write_all(head).await;
            for chunk in body.chunks(4096) {
                if client.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_survives_upstream_faults_and_never_publishes_bad_bytes() {
    let reg = Registry::start().await;
    reg.push("multi:v1", "multi:v1", &["--all"]).await;
    reg.push("single:v1", "single:v1", &[]).await;
    let proxy = FaultProxy::start(reg.port).await;
    let mut setup = Setup::new(&proxy.url());
    setup.sync = "retries = 4\n".into();
    let wharf = Wharf::launch(setup).await;

    // Transient faults on the first blob GETs, wrong bytes included: each is retried and
    // the run succeeds.
    let transient = [
        Fault::Status(503),
        Fault::Status(500),
        Fault::Reset,
        Fault::Truncate,
        Fault::Corrupt,
        Fault::Stall,
        Fault::Trickle,
    ];
    proxy.next_blobs(&transient);
    let run = wharf.sync().await;
    let applied = proxy.applied();
    for f in transient {
        assert!(applied.contains(&f), "{f:?} was not exercised: {applied:?}");
    }
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:?}");
    let verify = wharf.jobs().verify(false).await.unwrap();
    assert!(verify.corrupt.is_empty() && verify.missing.is_empty(), "{verify:?}");
    for (repo, tag) in [("multi", "v1"), ("single", "v1")] {
        assert_eq!(wharf.get(&format!("/v2/{repo}/manifests/{tag}")).await.status(), 200);
    }

    // Wrong bytes every time for one repository: never published, the failure recorded in
    // the run, the others unaffected.
    reg.push("single2:v2", "bad:v1", &[]).await;
    reg.push("single2:v2", "good:v1", &[]).await;
    proxy.always("/v2/bad/blobs/", Fault::Corrupt);
    let run = wharf.sync().await;
    assert_ne!(run.outcome, RunOutcome::Ok);
    let bad = run.repos.iter().find(|r| r.repo.as_str() == "bad").expect("bad in the run");
    assert!(bad.errors.iter().any(|e| e.contains("digest mismatch")), "{bad:?}");
    assert_eq!(wharf.get("/v2/bad/manifests/v1").await.status(), 404, "not published");
    let verify = wharf.jobs().verify(false).await.unwrap();
    assert!(verify.corrupt.is_empty(), "no bad byte reached the pool: {verify:?}");
    assert_eq!(
        wharf.get("/v2/good/manifests/v1").await.status(),
        200,
        "one failure stops nothing else"
    );
    // Every request of that run failing: the run says so, the tree is unchanged.
    let generation = wharf.generation().await;
    proxy.clear();
    proxy.always("/v2/", Fault::Status(503));
    let run = wharf.sync().await;
    assert_ne!(run.outcome, RunOutcome::Ok);
    assert_eq!(wharf.generation().await, generation);
    proxy.clear();
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:?}");
    assert_eq!(wharf.get("/v2/bad/manifests/v1").await.status(), 200);
}

/// Mirrors that go bad the ways real ones do: one that flips between good and bad is
/// credited only while good; one that answers every blob with a 200 HTML error page is
/// never credited.
#[tokio::test(flavor = "multi_thread")]
async fn mirrors_that_flip_or_serve_error_pages_are_never_credited_while_bad() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.extra = "[crawl]\nrequest_timeout = \"2s\"\nnew_blobs = 1000\nrandom_blobs = 1000\ndownloads = 1000\nmax_failures = 10\n".into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let flag = copy.path().join("good");
    let body = format!(
        "root {root};\n    location /t/ {{ if (!-f {flag}) {{ return 500; }} }}\n    \
         location /html/ {{ alias {root}/t/; location ~ /blobs/ {{ default_type text/html; return 200 \"<html><body>Service temporarily unavailable</body></html>\"; }} }}",
        root = copy.path().display(),
        flag = flag.display(),
    );
    let nginx = Nginx::launch(&body, None).await;
    for name in ["flip", "html"] {
        let patch = MirrorPatch {
            urls: Some(vec![nginx.url(&format!("{}/", if name == "flip" { "t" } else { "html" }))]),
            ..MirrorPatch::default()
        };
        assert!(matches!(
            wharf.control(Request::MirrorAdd { name: name.into(), patch }).await,
            Reply::Mirror(_)
        ));
    }
    let credited = |report: &wharf::crawl::CrawlReport, name: &str| {
        report.results.iter().find(|r| r.mirror.as_str() == name).unwrap().credited
    };
    let blob_location = || async {
        let m: serde_json::Value =
            wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
        let d = m["layers"][0]["digest"].as_str().unwrap().to_owned();
        let r = http().get(wharf.url(&format!("/v2/demo/app/blobs/{d}"))).send().await.unwrap();
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    for round in 0..4 {
        let good = round % 2 == 0;
        if good {
            std::fs::write(&flag, "").unwrap();
        } else {
            std::fs::remove_file(&flag).unwrap();
        }
        let report = wharf.crawl().await;
        assert_eq!(credited(&report, "flip").is_some(), good, "round {round}: {report:?}");
        assert_eq!(credited(&report, "html"), None, "round {round}: {report:?}");
        let location = blob_location().await;
        assert_eq!(location.contains("/t/blobs/"), good, "round {round}: {location}");
        assert!(!location.contains("/html/"), "{location}");
    }
}
