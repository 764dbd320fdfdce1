//! A real browser (Debian's chromium driven through chromedriver) against a real Wharf: a
//! mirror admin opts a crawled mirror out and registers one, an operator approves it.
//! Screenshots of the main pages land in `target/tmp/screenshots/` for reviewers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use wharf::control::{Reply, Request};
use wharf::model::MirrorPatch;

use crate::harness::*;
use crate::mirrors_harness::{Nginx, copy_tree, public_tempdir};

struct Driver {
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
    client: Client,
    shots: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        let chromedriver = require("chromedriver");
        let chromium = require("chromium");
        let port = free_port();
        let process = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        wait_http(&format!("http://127.0.0.1:{port}/status"), &[200]).await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Driver { _process: process, _profile: profile, client, shots }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    /// The page once it contains `needle` (after a click, the next page may still load).
    async fn until(&self, needle: &str) -> String {
        for _ in 0..50 {
            let page = self.client.source().await.unwrap();
            if page.contains(needle) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {needle:?} in {}", self.client.source().await.unwrap());
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn log_in(&self, wharf: &Wharf, name: &str) {
        self.client.goto(&wharf.url("/admin/login")).await.unwrap();
        self.fill("#name", name).await;
        self.fill("#password", &format!("{name}-password-123")).await;
        self.click("main button[type=submit]").await;
        self.until(&format!("{name} (")).await;
        assert_eq!(self.path().await, "/admin/");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_real_browser_a_mirror_admin_opts_out_and_an_operator_approves() {
    let upstream = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(upstream.path()).unwrap();
    let wharf = Wharf::start(&format!("oci:{}", upstream.path().display())).await;
    wharf.sync().await;
    let mut ids = HashMap::new();
    for (name, role) in [("olga", "operator"), ("ann", "mirror-admin")] {
        let req = Request::UserAdd {
            name: name.into(),
            role: role.into(),
            password: Some(format!("{name}-password-123")),
        };
        let Reply::User { user, .. } = wharf.control(req).await else { panic!() };
        ids.insert(name, user.id);
    }
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let nginx = Nginx::start(copy.path(), None, None).await;
    let patch = MirrorPatch {
        urls: Some(vec![nginx.url("t/")]),
        owner: Some(ids["ann"]),
        country: Some("DE".into()),
        ..MirrorPatch::default()
    };
    wharf.control(Request::MirrorAdd { name: "annm".into(), patch }).await;
    let report = wharf.crawl().await;
    assert_eq!(report.results[0].credited, Some(1), "{report:#?}");
    let layer = {
        let m: serde_json::Value =
            wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_owned()
    };
    let redirect = || async {
        let r = wharf.get(&format!("/v2/demo/app/blobs/{layer}")).await;
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    assert!(redirect().await.starts_with(&nginx.url("t/")), "the crawled mirror serves");

    let d = Driver::start().await;
    // The mirror admin opts the crawled mirror out with one button; redirects stop at once.
    d.log_in(&wharf, "ann").await;
    d.shot("mirror-admin-home").await;
    d.click("#toggle-annm").await;
    d.until("Opt in").await;
    for _ in 0..10 {
        assert!(redirect().await.contains("/tree/blobs/"), "no client goes to an opted-out mirror");
    }
    // ...and registers a new mirror, which waits for approval.
    d.client.goto(&wharf.url("/admin/mirrors/new")).await.unwrap();
    d.fill("#name", "ann-two").await;
    d.fill("#urls", "https://two.example/wharf/").await;
    d.fill("#country", "FR").await;
    d.fill("#netblocks", "10.0.0.0/8").await;
    d.click("main button[type=submit]").await;
    d.until("too wide").await;
    d.shot("mirror-register-error").await;
    d.fill("#netblocks", "10.9.0.0/16").await;
    d.click("main button[type=submit]").await;
    d.until("Pending").await;
    assert_eq!(d.path().await, "/admin/mirrors/ann-two?notice=saved");
    d.client.goto(&wharf.url("/admin/mirrors/annm")).await.unwrap();
    d.shot("mirror-detail").await;
    d.click("header button[type=submit]").await;
    d.until("<h1>Log in</h1>").await;

    // The operator approves the pending mirror.
    d.log_in(&wharf, "olga").await;
    d.shot("operator-dashboard").await;
    d.client.goto(&wharf.url("/admin/mirrors/ann-two")).await.unwrap();
    d.click("#approve").await;
    d.until("Saved.").await;
    let Reply::Mirror(m) = wharf.control(Request::MirrorShow { name: "ann-two".into() }).await
    else {
        panic!()
    };
    assert!(m.status.mirror.enabled && !m.status.mirror.pending, "approved");
    for (page, name) in [
        ("/admin/mirrors", "operator-mirrors"),
        ("/admin/runs", "operator-runs"),
        ("/admin/runs/1", "operator-run-detail"),
        ("/admin/repos/demo/multi", "operator-repository"),
        ("/admin/users", "operator-users"),
        ("/admin/audit", "operator-audit"),
        ("/admin/explain?ip=192.0.2.1", "operator-explain"),
    ] {
        d.client.goto(&wharf.url(page)).await.unwrap();
        d.until("</main>").await;
        assert!(!d.source().await.contains("Not allowed"), "{page}");
        d.shot(name).await;
    }
    // The public mirror status, as anyone sees it.
    d.client.goto(&wharf.url("/mirrors")).await.unwrap();
    let page = d.until("</main>").await;
    assert!(page.contains("annm") && page.contains("<table"), "{page}");
    d.shot("public-mirrors").await;
    // The public registry page: search without script, then a repository's tags.
    d.client.goto(&wharf.url("/")).await.unwrap();
    d.until("</main>").await;
    d.fill("#q", "multi").await;
    d.click("form[role=search] button").await;
    let found = d.until("1 repository").await;
    assert!(found.contains("/r/demo/multi") && !found.contains("/r/demo/app\""), "{found}");
    d.shot("public-registry").await;
    d.click("a[href='/r/demo/multi']").await;
    let repo = d.until("</table>").await;
    assert!(repo.contains("linux/arm64/v8") && repo.contains("podman pull"), "{repo}");
    d.shot("public-repository").await;
    // The live progress box is filled in by the script once a sync runs.
    d.client.goto(&wharf.url("/admin/")).await.unwrap();
    d.click("#sync-now").await;
    d.until("Sync started.").await;
    let mut seen = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let progress = d.client.find(Locator::Id("progress")).await.unwrap();
        let text = progress.text().await.unwrap();
        // `data-updated` is set by the script's poll, not by the server.
        let polled = progress.attr("data-updated").await.unwrap().is_some();
        if polled && text.contains("No sync running") && wharf.runs().await.len() == 2 {
            seen = true;
            break;
        }
    }
    assert!(seen, "the script polls the progress and the box follows the sync");
    d.client
        .execute("document.querySelector('.charts').scrollIntoView()", Vec::new())
        .await
        .unwrap();
    d.shot("operator-charts").await;
    d.client.set_window_size(390, 844).await.unwrap();
    d.client.execute("window.scrollTo(0, 0)", Vec::new()).await.unwrap();
    d.shot("operator-dashboard-phone").await;
    d.client.clone().close().await.unwrap();
}
