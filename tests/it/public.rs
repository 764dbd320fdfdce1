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
    for text in [&body, &page] {
        for hidden in
            [secret, "10.9.0.0", ">lan<", "\"lan\"", ">off<", "\"off\"", "refused", "connect"]
        {
            assert!(!text.contains(hidden), "{hidden} is public: {text}");
        }
    }
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
