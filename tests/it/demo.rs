//! `wharf demo` as a newcomer runs it: the binary, its printed commands run as printed,
//! real clients (skopeo, podman), and the demo mirrors' access logs as the witness that
//! blobs came from mirrors near the pretend client, never from a dead or stale one that
//! lacks them.

use std::collections::BTreeMap;
use std::process::Stdio;

use tokio::process::Command;

use crate::harness::*;

/// `GET` request lines of a demo mirror's log (`GET /blobs/sha256/<hex> 200`).
fn gets(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("GET "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_a_mirror_network_that_serves_what_it_prints() {
    let port = free_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["demo", "--port", &port.to_string(), "--traffic", "20"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_http(&format!("http://127.0.0.1:{port}/v2/"), &[200]).await;
    let mut stdout = tokio::io::BufReader::new(demo.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("Ctrl-C") {
        let mut line = String::new();
        let n = tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line).await.unwrap();
        assert!(n > 0, "demo stopped printing: {printed}");
        printed += &line;
    }
    assert!(printed.starts_with("sync run #1: Ok"), "{printed}");
    assert!(printed.contains("sync run #2: Ok"), "{printed}");
    assert!(printed.contains("20 synthetic pulls"), "{printed}");
    // name -> url of each mirror, and where their logs are.
    // The table between its heading and the pretend clients.
    let table =
        printed.split("copy of the tree):").nth(1).unwrap().split("Pretend").next().unwrap();
    let mirrors: BTreeMap<&str, &str> = table
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, url) = (w.next()?, w.next()?);
            (url.starts_with("http://127.0.0.1:") && url.ends_with('/')).then_some((name, url))
        })
        .collect();
    assert_eq!(
        mirrors.keys().copied().collect::<Vec<_>>(),
        ["asia-jp", "campus", "eu-de", "na-us", "sa-br"]
    );
    let logs = printed.split("see ").nth(1).unwrap().split("/<mirror>.log").next().unwrap();
    let log = |name: &str| std::path::Path::new(logs).join(format!("{name}.log"));
    let before: BTreeMap<&str, usize> = mirrors.keys().map(|m| (*m, gets(&log(m)).len())).collect();

    // The skopeo copy as printed: every blob it fetched came from a mirror.
    let out = tempfile::tempdir().unwrap();
    let line = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("skopeo --insecure-policy copy"))
        .unwrap_or_else(|| panic!("no skopeo command in: {printed}"));
    let dest = format!("oci:{}:latest", out.path().join("o").display());
    let args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(|a| if a.starts_with("oci:") { dest.clone() } else { a.to_owned() })
        .collect();
    run(Command::new(require("skopeo")).args(&args)).await;
    let served: Vec<String> =
        mirrors.keys().flat_map(|m| gets(&log(m)).into_iter().skip(before[m])).collect();
    let pulled = std::fs::read_dir(out.path().join("o/blobs/sha256")).unwrap();
    let mut blobs = 0;
    for entry in pulled {
        let hex = entry.unwrap().file_name().into_string().unwrap();
        let manifest = std::fs::read(out.path().join("o/blobs/sha256").join(&hex)).unwrap();
        if manifest.starts_with(b"{")
            && String::from_utf8_lossy(&manifest).contains("schemaVersion")
        {
            continue; // manifests come from Wharf itself
        }
        blobs += 1;
        assert!(
            served.contains(&format!("GET /blobs/sha256/{hex} 200")),
            "{hex} not from a mirror: {served:?}"
        );
    }
    assert!(blobs >= 3, "config and two layers");

    // The printed explain: a client in Germany goes to the German mirror; the same digest
    // for a client in the US goes to the US mirror, and that mirror served it.
    let explain = printed.split("curl -s '").nth(1).unwrap().split('\'').next().unwrap();
    let e: serde_json::Value = http().get(explain).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (e["geo"]["country"].as_str(), e["pick"]["mirror"].as_str()),
        (Some("DE"), Some("eu-de")),
        "{e}"
    );
    let digest = explain.split("digest=").nth(1).unwrap().split('&').next().unwrap();
    let us = http()
        .get(explain.replace("192.0.2.10", "198.51.100.7"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(us["pick"]["mirror"], "na-us", "{us}");
    let seen_us = gets(&log("na-us")).len();
    let r = reqwest::Client::new() // follows the redirect, as clients do
        .get(format!("http://127.0.0.1:{port}/v2/demo/app/blobs/{digest}"))
        .header("X-Forwarded-For", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().as_str(), format!("{}blobs/sha256/{}", mirrors["na-us"], &digest[7..]));
    assert!(gets(&log("na-us")).len() > seen_us);
    // The stale mirror was asked only for what it holds; the dead one for nothing.
    let stale = gets(&log("asia-jp"));
    assert!(stale.iter().all(|l| l.ends_with(" 200")), "{stale:?}");
    assert!(!stale.iter().any(|l| l.contains(&digest[7..])), "a generation-2 blob at asia-jp");
    assert!(gets(&log("sa-br")).is_empty());

    // The demo images run and say which architecture they are.
    require("runc");
    let root = tempfile::tempdir().unwrap();
    let image = format!("127.0.0.1:{port}/demo/multi:latest");
    let run_args = ["run", "--rm", "--tls-verify=false"];
    let said = run(podman(root.path()).args(run_args).args(PODMAN_RUN).arg(&image)).await;
    assert_eq!(said, wharf::demo::greeting("amd64"));

    // The public status shows the network as it is.
    let status: serde_json::Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/mirrors"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: BTreeMap<&str, &str> = status["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    let expected = [
        ("asia-jp", "behind"),
        ("campus", "current"),
        ("eu-de", "current"),
        ("na-us", "current"),
        ("sa-br", "failing"),
    ];
    assert_eq!(states, expected.into_iter().collect(), "{status}");

    // The printed admin password logs in as an operator.
    let password = printed
        .split("password ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no admin password in: {printed}"));
    let base = format!("http://127.0.0.1:{port}/admin");
    let form = http().get(format!("{base}/login")).send().await.unwrap();
    let cookie =
        form.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = form.text().await.unwrap();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    let r = http()
        .post(format!("{base}/login"))
        .header("Cookie", cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("name=demo&password={password}&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the demo's operator logs in");
    // The synthetic pulls are in the dashboard's charts and on each mirror's page at once.
    let session = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = |path: String| {
        let session = session.clone();
        async move {
            let r = http().get(path).header("Cookie", session).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let home = page(format!("{base}/")).await;
    assert!(home.contains("Blob redirects by client country"), "{home}");
    assert!(!home.contains("Blob redirects by tier, last 24 h: nothing to show yet"), "{home}");
    let de = page(format!("{base}/mirrors/eu-de")).await;
    assert!(!de.contains("last 48 h: nothing to show yet"), "{de}");
    // Ctrl-C removes everything the demo wrote.
    let pid = demo.id().unwrap().to_string();
    run(Command::new("kill").args(["-INT", &pid])).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), demo.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let work = std::path::Path::new(logs).parent().unwrap();
    assert!(!work.exists(), "{} left behind", work.display());

    let wharf = env!("CARGO_BIN_EXE_wharf");
    let err = run_failing(Command::new(wharf).args(["--data-dir", "/srv", "demo"])).await;
    assert!(err.contains("own temp data dir"), "{err}");
    let err = run_failing(Command::new(wharf).args(["demo", "--traffic", "100001"])).await;
    assert!(err.contains("100001"), "{err}");
}
