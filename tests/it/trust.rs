//! Trust boundaries (issue 9): what hostile mirror admins, anonymous clients and mirrors
//! can try, each reproduced as it was found, against the real server, nginx and skopeo.

use std::collections::HashMap;

use wharf::control::{Reply, Request};
use wharf::model::{CrawlResult, MirrorHealth, MirrorPatch, RunOutcome};

use crate::admin::{admin_wharf, hidden, logged_in, mirror_detail};
use crate::harness::*;
use crate::mirrors_harness::*;

fn urls(u: &str) -> MirrorPatch {
    MirrorPatch { urls: Some(vec![u.to_owned()]), ..MirrorPatch::default() }
}

async fn refused(wharf: &Wharf, request: Request) -> String {
    match wharf.control(request).await {
        Reply::Error(e) => e,
        other => panic!("accepted: {other:?}"),
    }
}

/// Finding 1: a control character in a mirror URL, an uncapped bandwidth, credentials in a
/// URL: refused on the command line (and control socket) and in the admin UI alike, and a
/// refused change changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bad_mirror_values_are_refused_on_every_surface() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let add = |name: &str, patch: MirrorPatch| Request::MirrorAdd { name: name.into(), patch };
    for (patch, why) in [
        (urls("http://host/a\u{1}b/"), "control characters"),
        (urls("http://host/a b/"), "control characters or spaces"),
        (urls("http://user:secret@host/"), "user name or password"),
        (urls("http://host/x?q=1"), "query"),
        (urls("gopher://host/"), "http:// or https://"),
        (urls(&format!("http://host/{}", "a".repeat(600))), "longer than"),
        (MirrorPatch { bandwidth: Some(u32::MAX), ..urls("http://host/") }, "bandwidth"),
        (MirrorPatch { asns: Some(vec![0]), ..urls("http://host/") }, "AS0"),
    ] {
        let e = refused(&wharf, add("m1", patch.clone())).await;
        assert!(e.contains(why), "{patch:?}: {e}");
        assert!(!e.contains('\u{1}'), "the error quotes no raw control character: {e:?}");
    }
    assert!(mirror_detail(&wharf, "m1").await.is_none(), "nothing was created");
    assert!(matches!(
        wharf.control(add("m1", urls("http://Host.Example:80/t"))).await,
        Reply::Mirror(_)
    ));
    let m = mirror_detail(&wharf, "m1").await.unwrap();
    assert_eq!(m.status.mirror.urls, ["http://host.example/t/"], "normalised");
    let set = Request::MirrorSet { name: "m1".into(), patch: urls("http://host/a\u{1}b/") };
    refused(&wharf, set).await;
    assert_eq!(
        mirror_detail(&wharf, "m1").await.unwrap().status.mirror.urls,
        ["http://host.example/t/"]
    );

    // The admin UI: the same rules, the error next to the field, nothing stored.
    let (mut olga, csrf) = logged_in(&wharf, "olga").await;
    let form = |url: &str, bandwidth: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", "m2".to_owned()),
            ("urls", url.to_owned()),
            ("country", String::new()),
            ("bandwidth", bandwidth.to_owned()),
            ("asns", String::new()),
            ("netblocks", String::new()),
            ("content", "all".to_owned()),
        ]
    };
    let (status, _, page) =
        olga.post_owned("/admin/mirrors/new", form("http://h/a\u{1}b/", "100")).await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"urls-error\""), "{page}");
    let (status, _, page) =
        olga.post_owned("/admin/mirrors/new", form("http://h/", "4294967295")).await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"bandwidth-error\""), "{page}");
    assert!(mirror_detail(&wharf, "m2").await.is_none());
}

/// Finding 1, the other half: a record stored before these checks existed (here: written
/// straight into the store) makes no response fail. The mirror is left out, with the reason
/// on its explanation, and real clients pull from Wharf's own tree.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_stored_mirror_record_never_fails_a_pull() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let nginx = Nginx::start(copy.path(), None, None).await;
    assert!(matches!(
        wharf
            .control(Request::MirrorAdd { name: "bad".into(), patch: urls(&nginx.url("t/")) })
            .await,
        Reply::Mirror(_)
    ));
    let report = wharf.crawl().await;
    let generation = report.results[0].credited.expect("credited");

    // What an older release could have stored: a URL with a control character, credited.
    let store = &wharf.running().app.store;
    let planted = format!("{}a\u{1}b/", nginx.url(""));
    let name: wharf::model::MirrorName = "bad".parse().unwrap();
    let p = planted.clone();
    let m = store
        .edit_mirror(&name, move |m, _| {
            let mut m = m.unwrap().clone();
            m.urls = vec![p];
            Ok(m)
        })
        .await
        .unwrap()
        .mirror;
    let result = CrawlResult {
        mirror: name.clone(),
        at: chrono::Utc::now(),
        duration_ms: 1,
        claimed: Some(generation),
        credited: Some(generation),
        checks: 1,
        downloads: 0,
        error: None,
        registry: None,
    };
    let health = MirrorHealth { generation: Some(generation), ..MirrorHealth::default() };
    store.record_crawl(m, result, health).await.unwrap();
    wharf.jobs().refresh_selection().await.unwrap();

    let single: serde_json::Value =
        wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let digest = single["layers"][0]["digest"].as_str().unwrap().to_owned();
    let r = http().get(wharf.url(&format!("/v2/demo/app/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), 307);
    assert!(r.headers()["location"].to_str().unwrap().contains("/tree/blobs/sha256/"));
    let metalink = wharf.get(&format!("/metalink/demo/app/blobs/{digest}")).await;
    assert_eq!(metalink.status(), 200);
    assert!(!metalink.text().await.unwrap().contains('\u{1}'));
    let snap = wharf.jobs().selector().snapshot();
    let ip = "192.0.2.1".parse().unwrap();
    let e = snap.explain(
        &"demo/app".parse().unwrap(),
        &digest.parse().unwrap(),
        ip,
        Default::default(),
        false,
        false,
        &mut rand::rng(),
    );
    let why = serde_json::to_value(&e.excluded[0].why).unwrap();
    assert_eq!(why["reason"], "bad_record", "{why}");

    let out = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--retry-times", "0"])
        .arg(format!("docker://{}/demo/app:1.0", wharf.host()))
        .arg(format!("oci:{}:v1", out.path().join("o").display())))
    .await;
    assert_eq!(wharf.requests("blob", "GET", "500").await, 0);
    // The mirror's page says why it gets no clients.
    let (mut olga, _) = logged_in(&wharf, "olga").await;
    let (status, _, page) = olga.get("/admin/mirrors/bad").await;
    assert_eq!(status, 200);
    assert!(page.contains("stored record is not valid"), "{page}");
}

/// Findings 7 and the caps: a mirror admin's netblocks, ASNs, bandwidth and mirrors are
/// limited in total; a change to where clients go waits for an operator again.
#[tokio::test(flavor = "multi_thread")]
async fn mirror_admin_limits_hold_across_their_mirrors() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let (mut ann, csrf) = logged_in(&wharf, "ann").await;
    let form = |name: &str, netblocks: &str, asns: &str, bandwidth: &str, url: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_owned()),
            ("urls", url.to_owned()),
            ("country", "de".to_owned()),
            ("bandwidth", bandwidth.to_owned()),
            ("asns", asns.to_owned()),
            ("netblocks", netblocks.to_owned()),
            ("content", "all".to_owned()),
        ]
    };
    // All of 8.0.0.0/8 as 256 /16s in one edit: refused.
    let all_of_8: Vec<String> = (0..256).map(|i| format!("8.{i}.0.0/16")).collect();
    let (status, _, page) = ann
        .post_owned(
            "/admin/mirrors/new",
            form("a1", &all_of_8.join("\n"), "", "100", "http://a1.example/"),
        )
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"netblocks-error\"") && page.contains("in total"), "{page}");
    // ::ffff:0.0.0.0/96 is all of IPv4 in disguise: too wide.
    let (status, _, _) = ann
        .post_owned(
            "/admin/mirrors/new",
            form("a1", "::ffff:0.0.0.0/96", "", "100", "http://a1.example/"),
        )
        .await;
    assert_eq!(status, 422);
    // Two halves of a /16 on two mirrors: fine; a third block on top: refused.
    for (name, net) in [("a1", "10.1.0.0/17"), ("a2", "10.1.128.0/17")] {
        let url = format!("http://{name}.example/");
        let (status, _, page) =
            ann.post_owned("/admin/mirrors/new", form(name, net, "64500", "100", &url)).await;
        assert_eq!(status, 303, "{page}");
    }
    let (status, _, page) = ann
        .post_owned(
            "/admin/mirrors/new",
            form("a3", "10.3.0.0/24", "", "100", "http://a3.example/"),
        )
        .await;
    assert_eq!(status, 422, "{page}");
    // Bandwidth above the mirror admin cap, and too many ASNs in total.
    let (status, _, page) = ann
        .post_owned("/admin/mirrors/new", form("a3", "", "", "20000", "http://a3.example/"))
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"bandwidth-error\""), "{page}");
    let asns: Vec<String> = (64501..64520).map(|a| a.to_string()).collect();
    let (status, _, page) = ann
        .post_owned(
            "/admin/mirrors/new",
            form("a3", "", &asns.join(","), "100", "http://a3.example/"),
        )
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"asns-error\""), "{page}");
    // At most ten mirrors.
    for i in 3..=10 {
        let name = format!("a{i}");
        let (status, _, _) = ann
            .post_owned(
                "/admin/mirrors/new",
                form(&name, "", "", "100", &format!("http://{name}.example/")),
            )
            .await;
        assert_eq!(status, 303, "{name}");
    }
    let (status, _, page) = ann
        .post_owned("/admin/mirrors/new", form("a11", "", "", "100", "http://a11.example/"))
        .await;
    assert_eq!(status, 422);
    assert!(page.contains("at most 10 mirrors"), "{page}");
    // Someone else's name: "not available", whoever has it.
    let (mut ben, ben_csrf) = logged_in(&wharf, "ben").await;
    let mut taken = form("a1", "", "", "100", "http://b.example/");
    taken[0].1 = ben_csrf;
    let (status, _, page) = ben.post_owned("/admin/mirrors/new", taken).await;
    assert_eq!(status, 422);
    assert!(page.contains("not available") && !page.contains("already exists"), "{page}");

    // An operator approves a1; ann then points it elsewhere: pending again until approved.
    let (mut olga, olga_csrf) = logged_in(&wharf, "olga").await;
    let approve = vec![
        ("csrf", olga_csrf.clone()),
        ("action", "approve".to_owned()),
        ("reason", String::new()),
    ];
    assert_eq!(olga.post_owned("/admin/mirrors/a1/approval", approve.clone()).await.0, 303);
    assert!(mirror_detail(&wharf, "a1").await.unwrap().status.mirror.enabled);
    let (_, _, page) = ann.get("/admin/mirrors/a1").await;
    let mut edit = form("a1", "10.1.0.0/17", "64500", "100", "http://elsewhere.example/");
    edit[0].1 = hidden(&page, "csrf");
    assert_eq!(ann.post_owned("/admin/mirrors/a1", edit.clone()).await.0, 303);
    let d = mirror_detail(&wharf, "a1").await.unwrap();
    assert!(d.status.mirror.pending && !d.status.mirror.enabled, "{d:?}");
    assert_eq!(d.status.health.generation, None);
    // Moving an approved mirror to another country moves traffic: pending again too.
    assert_eq!(olga.post_owned("/admin/mirrors/a3/approval", approve.clone()).await.0, 303);
    let (_, _, page) = ann.get("/admin/mirrors/a3").await;
    let mut moved = form("a3", "", "", "100", "http://a3.example/");
    moved[0].1 = hidden(&page, "csrf");
    moved[3].1 = "fr".into();
    assert_eq!(ann.post_owned("/admin/mirrors/a3", moved).await.0, 303);
    assert!(mirror_detail(&wharf, "a3").await.unwrap().status.mirror.pending);
    // A login whose password was reset while it was being checked opens no session.
    let store = &wharf.running().app.store;
    let ann_name: wharf::model::UserName = "ann".parse().unwrap();
    let (user, _) = store.user_credentials(&ann_name).await.unwrap().unwrap();
    let session = wharf::store::Session {
        user_id: user.id,
        user: user.name.clone(),
        role: user.role,
        csrf: "c".into(),
        created_at: chrono::Utc::now(),
        last_seen: chrono::Utc::now(),
    };
    let stale = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$stale".to_owned();
    assert!(!store.create_session("k".into(), session, stale).await.unwrap());
    // Operators may grant what mirror admins may not.
    let wide = Request::MirrorSet {
        name: "a2".into(),
        patch: MirrorPatch {
            netblocks: Some(vec!["::ffff:10.0.0.0/104".into()]),
            bandwidth: Some(100_000),
            ..MirrorPatch::default()
        },
    };
    assert!(matches!(wharf.control(wide).await, Reply::Mirror(_)));
    let d = mirror_detail(&wharf, "a2").await.unwrap();
    assert_eq!(
        d.status.mirror.netblocks[0].to_string(),
        "10.0.0.0/8",
        "IPv4-mapped, canonicalised"
    );
}

/// Finding 5: the crawler refuses special-purpose addresses (literal or resolved), follows
/// no redirect to another origin, caps what it reads, and reports classified errors that
/// quote nothing a mirror sent.
#[tokio::test(flavor = "multi_thread")]
async fn the_crawler_is_not_a_proxy_into_the_operators_network() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.allow_private = false;
    setup.extra =
        "[crawl]\nrequest_timeout = \"3s\"\nmirror_timeout = \"5s\"\nmax_failures = 1\n".into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let big = "{\"generation\": 1, \"pad\": \"".to_owned() + &"x".repeat(10 << 20) + "\"}";
    std::fs::create_dir_all(copy.path().join("big")).unwrap();
    std::fs::write(copy.path().join("big/wharf-generation.json"), big).unwrap();
    let other = Nginx::start(copy.path(), None, None).await;
    let body = format!(
        "root {root};\n    location /t/ {{ }}\n    location /big/ {{ }}\n    \
         location /away/ {{ return 302 http://127.0.0.1:{other}/t/wharf-generation.json; }}\n    \
         location /loop/ {{ return 302 /loop/wharf-generation.json; }}\n    \
         location /html/ {{ default_type text/html; return 200 \"<html>internal-only-page</html>\"; }}\n    \
         location /json/ {{ default_type application/json; return 200 '{{\"generation\": \"internal-only-value\"}}'; }}",
        root = copy.path().display(),
        other = other.port,
    );
    let mirror = Nginx::launch(&body, None).await;
    let add = |name: &str, url: String| Request::MirrorAdd { name: name.into(), patch: urls(&url) };
    for name in ["ipv4", "localhost"] {
        let host = if name == "ipv4" { "127.0.0.1" } else { "localhost" };
        let url = format!("http://{host}:{}/t/", mirror.port);
        assert!(matches!(wharf.control(add(name, url)).await, Reply::Mirror(_)));
    }
    let report = wharf.crawl().await;
    for r in &report.results {
        let e = r.error.as_deref().unwrap_or_default();
        assert!(e.contains("private or special-purpose"), "{}: {e}", r.mirror);
    }
    assert!(mirror.requests().is_empty(), "no request reached the internal address");
    // Auto-disabled now (max_failures = 1): anonymous /explain names it without its error.
    let m: serde_json::Value = wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let digest = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let public =
        wharf.get(&format!("/explain?name=demo/app&digest={digest}")).await.text().await.unwrap();
    assert!(
        public.contains("auto_disabled") && public.contains("failed its recent crawls"),
        "{public}"
    );
    let mirror_addr = format!("127.0.0.1:{}", mirror.port);
    assert!(!public.contains("special-purpose") && !public.contains(&mirror_addr), "{public}");

    // Allowed to reach loopback (as in a test network), the other rules still hold.
    drop(wharf);
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.extra = "[crawl]\nrequest_timeout = \"3s\"\nmirror_timeout = \"5s\"\n".into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let cases = [
        ("away", "redirected to another origin"),
        ("loop", "too often"),
        ("html", "not valid JSON"),
        ("json", "no valid generation"),
        ("big", "larger than 4096 bytes"),
        ("t", ""),
    ];
    for (name, _) in cases {
        let url = mirror.url(&format!("{name}/"));
        assert!(matches!(wharf.control(add(name, url)).await, Reply::Mirror(_)));
    }
    let report = wharf.crawl().await;
    let errors: HashMap<&str, String> = report
        .results
        .iter()
        .map(|r| (r.mirror.as_str(), r.error.clone().unwrap_or_default()))
        .collect();
    for (name, want) in cases {
        let e = &errors[name];
        assert!(e.contains(want), "{name}: {e}");
        assert!(!e.contains("internal-only"), "{name} quotes the mirror's content: {e}");
    }
    assert!(errors["t"].is_empty(), "a good mirror still passes: {}", errors["t"]);
    assert!(other.requests().is_empty(), "no redirect to another origin was followed");
}

/// Findings 4, 6 and the low ones: one edge for every surface.
#[tokio::test(flavor = "multi_thread")]
async fn one_edge_for_every_surface() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let admin_port = free_port();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.server = "trusted_proxies = [\"127.0.0.1/32\"]\n".into();
    setup.extra = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n");
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let admin = format!("127.0.0.1:{admin_port}");

    // The listener split is decided on the decoded path routing uses.
    for path in ["/admin/login", "/%61dmin/login", "/%61%64%6d%69%6e/login", "/admin%2Flogin"] {
        let head = raw(wharf.addr.to_string(), "GET", path, "").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{path} on the public listener: {head}");
    }
    let head = raw(admin.clone(), "GET", "/%61dmin/login", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = raw(admin.clone(), "GET", "/%76%32/", "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "/v2/ on the admin listener: {head}");

    // HEAD wherever GET works; other methods 405 with Allow.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let head = raw(wharf.addr.to_string(), "HEAD", path, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "HEAD {path}: {head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    }
    let head = raw(admin.clone(), "HEAD", "/admin/login", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A file of the tree: its length, no body.
    let pool = wharf.tree().join("blobs/sha256");
    let file = std::fs::read_dir(&pool).unwrap().next().unwrap().unwrap();
    let size = file.metadata().unwrap().len();
    let path = format!("/tree/blobs/sha256/{}", file.file_name().to_string_lossy());
    let head = raw(wharf.addr.to_string(), "HEAD", &path, "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {size}\r\n")), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body: {head:?}");
    for (method, path) in [
        ("TRACE", "/metalink/demo/app/blobs/x"),
        ("PROPFIND", "/mirrorlist/x"),
        ("DELETE", "/healthz"),
    ] {
        let head = raw(wharf.addr.to_string(), method, path, "").await;
        assert!(head.starts_with("HTTP/1.1 405"), "{method} {path}: {head}");
        assert!(head.to_ascii_lowercase().contains("allow: get, head"), "{head}");
    }

    // Admin responses: CSP without inline script, no framing, no sniffing, no referrer,
    // no caching; the login cookie is Secure when the trusted proxy says https.
    let login = |proto: Option<&str>| {
        let mut r = http().get(format!("http://{admin}/admin/login"));
        if let Some(p) = proto {
            r = r.header("X-Forwarded-Proto", p);
        }
        r.send()
    };
    let r = login(Some("https")).await.unwrap();
    let h = r.headers();
    assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert!(!h["content-security-policy"].to_str().unwrap().contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["set-cookie"].to_str().unwrap().contains("Secure"), "{h:?}");
    let r = login(None).await.unwrap();
    assert!(!r.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
    let page = r.text().await.unwrap();
    assert!(!page.contains("<script>") && !page.contains("style=\""), "no inline script or style");

    // Finding 4: only the configured forwarding header is believed (x-forwarded-for, the
    // default): a client's own Forwarded header is ignored.
    let single: serde_json::Value =
        wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let digest = single["layers"][0]["digest"].as_str().unwrap().to_owned();
    let explain = http()
        .get(wharf.url(&format!("/explain?name=demo/app&digest={digest}")))
        .header("Forwarded", "for=10.1.2.3")
        .header("X-Forwarded-For", "198.51.100.4")
        .send()
        .await
        .unwrap();
    let e: serde_json::Value = explain.json().await.unwrap();
    assert_eq!(e["client"], "198.51.100.4", "{e}");
}

/// A request as written (`path` reaches the server unnormalised); the response head (and
/// body) until the server closes.
async fn raw(addr: String, method: &str, path: &str, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Finding 4: behind the nginx of docs/operators.md (its very block, run in a real nginx),
/// a client's own `Forwarded` or `X-Forwarded-For` does not choose its address.
#[tokio::test(flavor = "multi_thread")]
async fn behind_the_documented_nginx_a_client_cannot_choose_its_address() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.server =
        "trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"x-forwarded-for\"\n".into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let private = MirrorPatch {
        netblocks: Some(vec!["10.0.0.0/8".into()]),
        private: Some(true),
        ..urls("http://private.example/")
    };
    let add = Request::MirrorAdd { name: "private".into(), patch: private };
    assert!(matches!(wharf.control(add).await, Reply::Mirror(_)));

    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operators.md")).unwrap();
    let section = docs.split("## Behind HAProxy or nginx").nth(1).unwrap();
    let block = section.split("```nginx\n").nth(1).unwrap().split("```").next().unwrap();
    let block = block.replace("127.0.0.1:5000", &wharf.addr.to_string());
    let nginx = Nginx::launch(&block, None).await;

    let single: serde_json::Value =
        wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let digest = single["layers"][0]["digest"].as_str().unwrap().to_owned();
    let url = nginx.url(&format!("explain?name=demo/app&digest={digest}"));
    for (header, value) in
        [("Forwarded", "for=10.1.2.3"), ("X-Forwarded-For", "10.1.2.3"), ("X-Real-IP", "10.1.2.3")]
    {
        let r = http().get(&url).header(header, value).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["client"], "127.0.0.1", "{header}: {e}");
        assert_ne!(e["pick"]["mirror"], "private", "{header}: {e}");
    }
}
