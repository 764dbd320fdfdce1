//! The mirror network against real HTTP mirrors (nginx serving copies of the tree): the
//! crawler credits only verified generations, selection follows the tiers and never sends a
//! blob to a mirror that lacks it, and real clients pull from the mirrors.

use wharf::control::{Reply, Request};
use wharf::model::{MirrorPatch, RunOutcome};

use crate::harness::*;
use crate::mirrors_harness::*;

/// Crawl settings that check every blob and download each one, with short timeouts.
const THOROUGH: &str = "[crawl]\nrequest_timeout = \"2s\"\nmirror_timeout = \"4s\"\nnew_blobs = 1000\nrandom_blobs = 1000\ndownloads = 1000\nmax_failures = 2\n";

async fn add_mirror(wharf: &Wharf, name: &str, url: &str, patch: MirrorPatch) {
    let patch = MirrorPatch { urls: Some(vec![url.to_owned()]), ..patch };
    let reply = wharf.control(Request::MirrorAdd { name: name.into(), patch }).await;
    assert!(matches!(reply, Reply::Mirror(_)), "{reply:?}");
}

fn holds(report: &wharf::crawl::CrawlReport, name: &str) -> Option<u64> {
    report
        .results
        .iter()
        .find(|r| r.mirror.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not crawled"))
        .credited
}

/// The digests of a pool blob new in generation 2 (single2's own layer) and of the shared
/// base layer (generation 1).
fn new_and_old_blobs() -> (String, String) {
    let fx = fixtures();
    let read = |layout: &str, tag: &str| -> serde_json::Value {
        let d = layout_digest(&fx.join(layout), tag);
        serde_json::from_slice(
            &std::fs::read(fx.join(layout).join("blobs/sha256").join(&d[7..])).unwrap(),
        )
        .unwrap()
    };
    let new = read("single2", "v2")["layers"][1]["digest"].as_str().unwrap().to_owned();
    let old = read("single", "v1")["layers"][0]["digest"].as_str().unwrap().to_owned();
    (new, old)
}

#[tokio::test(flavor = "multi_thread")]
async fn crawler_credits_only_verified_generations() {
    let reg = Registry::start().await;
    reg.push_standard().await;
    let mut setup = Setup::new(&reg.url());
    setup.extra = THOROUGH.into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.generation_after, 1);
    let stale_copy = public_tempdir();
    copy_tree(wharf.tree(), stale_copy.path()).await;
    reg.push("single2:v2", "single:v2", &[]).await;
    assert_eq!(wharf.sync().await.generation_after, 2);
    let (new_blob, old_blob) = new_and_old_blobs();

    // fresh, partial (a generation-2 blob missing), corrupt (one altered, same size).
    let copies = public_tempdir();
    for name in ["fresh", "partial", "corrupt"] {
        copy_tree(wharf.tree(), &copies.path().join(name)).await;
    }
    std::fs::remove_file(copies.path().join("partial/blobs/sha256").join(&new_blob[7..])).unwrap();
    let victim = copies.path().join("corrupt/blobs/sha256").join(&old_blob[7..]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x55;
    std::fs::remove_file(&victim).unwrap(); // break the hardlink: only the pool copy changes
    std::fs::write(&victim, &bytes).unwrap();
    let nginx = Nginx::start(copies.path(), None, None).await;
    let stale = Nginx::start(stale_copy.path(), None, None).await;
    let slow = Nginx::start(copies.path(), None, Some(1)).await;
    let dead_port = free_port();

    for (name, url) in [
        ("fresh", nginx.url("fresh/")),
        ("partial", nginx.url("partial/")),
        ("corrupt", nginx.url("corrupt/")),
        ("stale", stale.url("")),
        ("slow", slow.url("fresh/")),
        ("dead", format!("http://127.0.0.1:{dead_port}/")),
    ] {
        add_mirror(&wharf, name, &url, MirrorPatch::default()).await;
    }
    let report = wharf.crawl().await;
    assert_eq!(holds(&report, "fresh"), Some(2));
    assert_eq!(holds(&report, "stale"), Some(1), "a stale mirror holds its generation");
    for name in ["partial", "corrupt", "slow", "dead"] {
        assert_eq!(holds(&report, name), None, "{name} must not be credited: {report:#?}");
    }
    let error = |n: &str| {
        report.results.iter().find(|r| r.mirror.as_str() == n).unwrap().error.clone().unwrap()
    };
    assert!(error("corrupt").contains("corrupt"), "{}", error("corrupt"));
    assert!(error("partial").contains("404"), "{}", error("partial"));
    assert_eq!(
        (report.propagation.current, report.propagation.previous, report.propagation.unknown),
        (1, 1, 4)
    );

    // Selection: the new blob only to fresh; the old one to fresh or stale, never others.
    let explain = |digest: String, repo: &'static str| {
        let url = wharf.url(&format!("/explain?ip=192.0.2.1&name={repo}&digest={digest}"));
        async move { http().get(url).send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let e = explain(new_blob.clone(), "single").await;
    let names = |v: &serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["mirror"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&e["candidates"]), ["fresh"], "{e:#}");
    let stale_why =
        e["excluded"].as_array().unwrap().iter().find(|x| x["mirror"] == "stale").unwrap();
    assert_eq!(stale_why["reason"], "stale", "{e:#}");
    let e = explain(old_blob.clone(), "single").await;
    assert_eq!(names(&e["candidates"]), ["fresh", "stale"], "{e:#}");
    for _ in 0..20 {
        let r =
            http().get(wharf.url(&format!("/v2/single/blobs/{new_blob}"))).send().await.unwrap();
        assert_eq!(r.status(), 307);
        assert_eq!(
            r.headers()["location"],
            nginx.url(&format!("fresh/blobs/sha256/{}", &new_blob[7..])).as_str()
        );
    }

    // A second failed crawl disables the failing mirrors automatically...
    let report = wharf.crawl().await;
    let list = wharf.control(Request::MirrorList).await;
    let Reply::Mirrors { mirrors, .. } = list else { panic!("{list:?}") };
    for m in &mirrors {
        let auto = m.health.auto_disabled.is_some();
        let failing = ["partial", "corrupt", "slow", "dead"].contains(&m.mirror.name.as_str());
        assert_eq!(auto, failing, "{}: {:?}", m.mirror.name, m.health);
    }
    assert!(report.results.iter().all(|r| r.error.is_some()
        == ["partial", "corrupt", "slow", "dead"].contains(&r.mirror.as_str())));

    // ...and one successful crawl brings a healed mirror back.
    let _healed = Nginx::start(copies.path().join("fresh").as_path(), Some(dead_port), None).await;
    let report = wharf.crawl().await;
    assert_eq!(holds(&report, "dead"), Some(2));
    let reply = wharf.control(Request::MirrorShow { name: "dead".into() }).await;
    let Reply::Mirror(d) = reply else { panic!("{reply:?}") };
    assert_eq!(d.status.health.auto_disabled, None);
    assert_eq!(d.status.health.generation, Some(2));
    assert_eq!(d.crawls.len(), 3, "crawl history is kept per mirror");
    assert!(d.crawls[0].error.is_none() && d.crawls[1].error.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_pull_from_the_nearest_verified_mirror() {
    // A GeoIP database placing loopback clients in Germany.
    let geo = public_tempdir();
    write_city_db(&geo.path().join("city.mmdb"), &[("127.0.0.0/8", "DE")]);
    let reg = Registry::start().await;
    reg.push_standard().await;
    let mut setup = Setup::new(&reg.url());
    setup.extra =
        format!("{THOROUGH}[geoip]\ndatabase = \"{}\"\n", geo.path().join("city.mmdb").display());
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);

    let copies = public_tempdir();
    copy_tree(wharf.tree(), &copies.path().join("de")).await;
    copy_tree(wharf.tree(), &copies.path().join("us")).await;
    let de = Nginx::start(&copies.path().join("de"), None, None).await;
    let us = Nginx::start(&copies.path().join("us"), None, None).await;
    let country = |c: &str| MirrorPatch { country: Some(c.into()), ..MirrorPatch::default() };
    add_mirror(&wharf, "de", &de.url(""), country("DE")).await;
    add_mirror(&wharf, "us", &us.url(""), country("US")).await;
    wharf.crawl().await;
    let (de_before, us_before) = (de.requests().len(), us.requests().len());

    let out = tempfile::tempdir().unwrap();
    let pull = |dest: std::path::PathBuf| {
        let src = format!("docker://{}/multi:v1", wharf.host());
        async move {
            skopeo()
                .args(["copy", "--src-tls-verify=false", "--retry-times", "0"])
                .arg(src)
                .arg(format!("oci:{}:v1", dest.display()))
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap()
        }
    };
    let o = pull(out.path().join("a")).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let blob_gets = |n: &Nginx, from: usize| {
        n.requests()[from..].iter().filter(|r| r.starts_with("GET /blobs/")).count()
    };
    assert!(
        blob_gets(&de, de_before) >= 3,
        "the DE client's blobs came from the DE mirror: {:?}",
        de.requests()
    );
    assert_eq!(blob_gets(&us, us_before), 0);
    assert_eq!(wharf.requests("blob", "GET", "307").await, 3);

    // Corrupt the DE mirror after the crawl: the client's digest check fails...
    let index = layout_digest(&fixtures().join("multi"), "v1");
    let amd64 = index_children(&fixtures().join("multi"), &index)
        .into_iter()
        .find(|(a, _)| a == "amd64")
        .unwrap()
        .1;
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("multi/blobs/sha256").join(&amd64[7..])).unwrap(),
    )
    .unwrap();
    let layer = m["layers"][1]["digest"].as_str().unwrap();
    let victim = copies.path().join("de/blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[40] ^= 0xff;
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, &bytes).unwrap();
    let o = pull(out.path().join("b")).await;
    assert!(!o.status.success(), "a corrupt mirror must make the pull fail");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("igest"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // ...and the next crawl stops sending clients there.
    let report = wharf.crawl().await;
    assert!(holds(&report, "de").is_none() && holds(&report, "us") == Some(1), "{report:#?}");
    let us_before = us.requests().len();
    let o = pull(out.path().join("c")).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(blob_gets(&us, us_before) >= 3);
}
