//! What anyone sees without logging in: the public mirror status, as HTML and JSON, with
//! only public, approved mirrors and nothing an operator or the crawler keeps to itself.

use wharf::control::{Reply, Request};
use wharf::model::{MirrorPatch, RunOutcome};

use crate::harness::*;
use crate::mirrors_harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_status_lists_public_mirrors_and_keeps_the_rest_to_itself() {
    let (_upstream, url) = demo_upstream();
    let mut setup = Setup::new(&url);
    setup.extra =
        "[crawl]\nrequest_timeout = \"2s\"\nmirror_timeout = \"4s\"\nmax_failures = 1\n".into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let nginx = Nginx::start(copy.path(), None, None).await;
    let good = nginx.url("t/");
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let secret = "SECRET-REASON-7f3a";
    let mirrors = [
        ("good", &good, MirrorPatch { country: Some("DE".into()), ..MirrorPatch::default() }),
        ("dead", &dead, MirrorPatch { country: Some("FR".into()), ..MirrorPatch::default() }),
        ("away", &good, MirrorPatch { active: Some(false), ..MirrorPatch::default() }),
        (
            "lan",
            &good,
            MirrorPatch {
                private: Some(true),
                netblocks: Some(vec!["10.9.0.0/16".into()]),
                ..MirrorPatch::default()
            },
        ),
        (
            "off",
            &good,
            MirrorPatch {
                enabled: Some(false),
                reason: Some(secret.into()),
                ..MirrorPatch::default()
            },
        ),
    ];
    for (name, url, patch) in mirrors {
        let patch = MirrorPatch { urls: Some(vec![url.clone()]), ..patch };
        let reply = wharf.control(Request::MirrorAdd { name: name.into(), patch }).await;
        assert!(matches!(reply, Reply::Mirror(_)), "{reply:?}");
    }
    wharf.crawl().await;

    let r = wharf.get("/api/v1/mirrors").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let body = r.text().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["generation"], 1);
    let listed: Vec<(&str, &str)> = doc["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("good", "current"), ("dead", "failing"), ("away", "opted-out")], "{body}");
    let good_doc = &doc["mirrors"][0];
    assert_eq!(good_doc["country"], "DE");
    assert_eq!(good_doc["continent"], "EU");
    assert_eq!(good_doc["urls"], serde_json::json!([good]));
    assert_eq!((good_doc["generation"].as_u64(), good_doc["lag"].as_u64()), (Some(1), Some(0)));
    assert!(good_doc["last_success"].is_string() && good_doc["content"] == "all", "{body}");

    let page = wharf.get("/mirrors").await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains(">good<") && page.contains("opted-out"), "{page}");
    assert!(page.contains("How fast new content spreads"), "{page}");

    // The status: generation 1 reached the one good mirror of the two in rotation (the
    // opted-out one does not count, the private and disabled ones are not public).
    let status: serde_json::Value = wharf.get("/api/v1/status").await.json().await.unwrap();
    assert_eq!((status["generation"].as_u64(), status["mirrors"].as_u64()), (Some(1), Some(2)));
    assert!(status["published_at"].is_string(), "{status}");
    let g1 = &status["propagation"][0];
    assert_eq!((g1["generation"].as_u64(), g1["reached"].as_u64()), (Some(1), Some(1)), "{status}");
    assert!(g1["seconds_to_50"].is_u64() && g1["seconds_to_100"].is_null(), "{status}");

    // A mirror admin with an e-mail address registers a mirror: it is pending.
    let ann = Request::UserAdd {
        name: "ann".into(),
        role: "mirror-admin".into(),
        password: Some("ann-password-123".into()),
    };
    assert!(matches!(wharf.control(ann).await, Reply::User { .. }));
    let email = "ann-secret@mirror.example.org";
    let set = Request::UserEmail { name: "ann".into(), email: email.into() };
    assert!(matches!(wharf.control(set).await, Reply::User { .. }));
    let (mut browser, csrf) = crate::admin::logged_in(&wharf, "ann").await;
    let register = vec![
        ("csrf", csrf),
        ("name", "pend".to_owned()),
        ("urls", good.clone()),
        ("country", "NL".to_owned()),
        ("bandwidth", "100".to_owned()),
        ("content", "all".to_owned()),
    ];
    assert_eq!(browser.post_owned("/admin/mirrors/new", register).await.0, 303);

    // Nothing anonymous shows a private, pending or disabled mirror, a reason, an e-mail
    // address or a crawl error.
    let layer = {
        let m: serde_json::Value =
            wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_owned()
    };
    let routes = [
        "/".to_owned(),
        "/?q=demo".into(),
        "/r/demo/app".into(),
        "/r/demo/multi".into(),
        "/mirrors".into(),
        "/api/v1/mirrors".into(),
        "/api/v1/status".into(),
        format!("/explain?name=demo/app&digest={layer}&ip=10.9.1.1"),
        format!("/mirrorlist/demo/app/blobs/{layer}"),
        format!("/metalink/demo/app/blobs/{layer}"),
        "/client-config/registries.conf".into(),
        "/client-config/hosts.toml?arch=arm64&pull=digest-only".into(),
        "/r/nosuch/repo".into(),
    ];
    for route in &routes {
        let text = wharf.get(route).await.text().await.unwrap();
        for hidden in [
            secret, "10.9.0.0", ">lan<", "\"lan\"", ">off<", "\"off\"", ">pend<", "\"pend\"",
            "refused", "connect", email,
        ] {
            assert!(!text.contains(hidden), "{hidden} is public at {route}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_page_lists_repositories_and_tags_with_pull_commands() {
    let (upstream, url) = demo_upstream();
    let wharf = Wharf::launch(Setup::new(&url)).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let host = wharf.host();

    let index = wharf.get("/").await;
    assert_eq!(index.status(), 200);
    let etag = index.headers()["etag"].to_str().unwrap().to_owned();
    let index = index.text().await.unwrap();
    for want in [
        "2 repositories",
        "href=\"/r/demo/app\"",
        "href=\"/r/demo/multi\"",
        &format!("podman pull --tls-verify=false {host}/NAME:TAG"),
        &format!("location = \"{host}\""),
        &format!("server = \"http://{host}\""),
    ] {
        assert!(index.contains(want), "{want} not in {index}");
    }
    let found = wharf.get("/?q=MULTI").await.text().await.unwrap();
    assert!(found.contains("1 repository") && !found.contains("/r/demo/app\""), "{found}");
    let none = wharf.get("/?q=%3Cscript%3E").await.text().await.unwrap();
    assert!(none.contains("&#60;script&#62;") && !none.contains("<script>"), "escaped: {none}");
    assert_eq!(wharf.get(&format!("/?q={}", "a".repeat(300))).await.status(), 400);
    assert_eq!(wharf.get("/?page=x").await.status(), 400);

    // A client with this generation's page gets a 304; the pages are the same until the
    // generation moves.
    let again = http().get(wharf.url("/")).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);

    let repo = wharf.get("/r/demo/multi").await.text().await.unwrap();
    let digest =
        wharf.get("/v2/demo/multi/manifests/latest").await.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
    for want in [
        ">latest<",
        digest.as_str(),
        "linux/amd64, linux/arm64/v8",
        "KiB",
        &format!("docker pull {host}/demo/multi:latest"),
        &format!("nerdctl pull --insecure-registry {host}/demo/multi:latest"),
        &format!("{host}/demo/multi@{digest}"),
    ] {
        assert!(repo.contains(want), "{want} not in {repo}");
    }
    let missing = wharf.get("/r/demo/nosuch").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("no repository"));
    assert_eq!(wharf.get("/r/Bad..Name").await.status(), 404);

    // A new generation: the old ETag no longer matches, the new tag is listed.
    let extra = upstream.path().join("demo/extra");
    copy_tree(&upstream.path().join("demo/app"), &extra).await;
    let run = wharf.sync().await;
    assert_eq!((run.outcome, run.generation_after), (RunOutcome::Ok, 2));
    let moved = http().get(wharf.url("/")).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(moved.status(), 200);
    assert!(moved.text().await.unwrap().contains("3 repositories"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_pages_carry_the_site_title_and_can_be_switched_off() {
    let (_upstream, upstream) = demo_upstream();
    let mut setup = Setup::new(&upstream);
    // The admin UI on a listener of its own: the public pages still get their stylesheet.
    setup.extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{}\"\n[public]\ntitle = \"Example <Registry>\"\ndescription = \"Images of Example OS\"\n",
        free_port()
    );
    let wharf = Wharf::launch(setup).await;
    let page = wharf.get("/mirrors").await.text().await.unwrap();
    assert!(page.contains("Example &#60;Registry&#62;</a>"), "escaped, in the header: {page}");
    assert!(page.contains("Images of Example OS"), "{page}");
    let css = page.split("rel=\"stylesheet\" href=\"").nth(1).unwrap().split('"').next().unwrap();
    let r = wharf.get(css).await;
    assert_eq!(r.status(), 200, "{css} on the public listener");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    // The same edge as every public route: HEAD answered, other methods 405.
    let head = http().head(wharf.url("/api/v1/mirrors")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let delete = http().delete(wharf.url("/mirrors")).send().await.unwrap();
    assert_eq!(delete.status(), 405);
    assert_eq!(delete.headers()["allow"], "GET, HEAD");
    drop(wharf);

    let mut setup = Setup::new(&upstream);
    setup.extra = "[public]\nenabled = false\n".into();
    let wharf = Wharf::launch(setup).await;
    for path in ["/mirrors", "/api/v1/mirrors"] {
        assert_eq!(wharf.get(path).await.status(), 404, "{path}");
    }
    assert_eq!(wharf.get("/v2/").await.status(), 200, "the pull API is always on");
}
