//! The mirror network against real HTTP mirrors (nginx serving copies of the tree): the
//! crawler credits only verified generations, selection follows the tiers and never sends a
//! blob to a mirror that lacks it, and real clients pull from the mirrors.

use wharf::control::{Reply, Request};
use wharf::model::{MirrorPatch, RunOutcome};

use crate::harness::*;
use crate::mirrors_harness::*;

/// Crawl settings that check every blob and download each one, with short timeouts.
pub const THOROUGH: &str = "[crawl]\nrequest_timeout = \"2s\"\nmirror_timeout = \"4s\"\nnew_blobs = 1000\nrandom_blobs = 1000\ndownloads = 1000\nmax_failures = 2\n";

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

    // Editing what was verified (the URLs, the content set) drops the credit until a crawl.
    let moved = MirrorPatch { urls: Some(vec![nginx.url("partial/")]), ..MirrorPatch::default() };
    let reply = wharf.control(Request::MirrorSet { name: "dead".into(), patch: moved }).await;
    let Reply::Mirror(d) = reply else { panic!("{reply:?}") };
    assert_eq!(d.status.health.generation, None);
    let r = http().get(wharf.url(&format!("/v2/single/blobs/{new_blob}"))).send().await.unwrap();
    assert!(!r.headers()["location"].to_str().unwrap().contains("/partial/"));
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

    // podman too.
    let de_before = de.requests().len();
    let root = tempfile::tempdir().unwrap();
    run(podman(root.path())
        .args(["pull", "--tls-verify=false"])
        .arg(format!("{}/multi:v1", wharf.host())))
    .await;
    assert!(blob_gets(&de, de_before) >= 3, "podman's blobs came from the DE mirror");
    assert_eq!(blob_gets(&us, us_before), 0);

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

/// Clients in DE, FR, US and JP (by GeoIP and ASN databases) against mirrors in every tier.
#[tokio::test(flavor = "multi_thread")]
async fn tiers_netblocks_asns_proxies_and_metalink() {
    let geo = public_tempdir();
    let city = write_city_db(
        &geo.path().join("city.mmdb"),
        &[
            ("10.1.0.0/16", "DE"),
            ("10.2.0.0/16", "FR"),
            ("10.3.0.0/16", "US"),
            ("10.4.0.0/16", "JP"),
            ("2001:db8:1::/48", "DE"),
        ],
    );
    let asn = write_asn_db(&geo.path().join("asn.mmdb"), &[("10.4.0.0/16", 64500)]);
    let reg = Registry::start().await;
    reg.push("single:v1", "single:v1", &[]).await;
    let mut setup = Setup::new(&reg.url());
    setup.server = "trusted_proxies = [\"127.0.0.2/32\"]\n".into();
    setup.extra = format!(
        "{THOROUGH}[geoip]\ndatabase = \"{}\"\nasn_database = \"{}\"\n",
        city.display(),
        asn.display()
    );
    let wharf = Wharf::launch(setup).await;
    wharf.sync().await;
    // One nginx serves the tree under a path per mirror.
    let root = public_tempdir();
    copy_tree(wharf.tree(), &root.path().join("tree")).await;
    let nginx = Nginx::start(root.path(), None, None).await;
    let patch = |f: fn(&mut MirrorPatch)| {
        let mut p = MirrorPatch::default();
        f(&mut p);
        p
    };
    let mirrors: Vec<(&str, MirrorPatch)> = vec![
        ("de", patch(|p| p.country = Some("DE".into()))),
        (
            "de-big",
            patch(|p| {
                p.country = Some("DE".into());
                p.bandwidth = Some(100_000);
            }),
        ),
        ("fr", patch(|p| p.country = Some("FR".into()))),
        ("us", patch(|p| p.country = Some("US".into()))),
        (
            "net",
            patch(|p| {
                p.country = Some("US".into());
                p.netblocks = Some(vec!["10.1.2.0/24".into(), "2001:db8:1:2::/64".into()]);
            }),
        ),
        ("net-wide", patch(|p| p.netblocks = Some(vec!["10.1.0.0/16".into()]))),
        (
            "asn",
            patch(|p| {
                p.country = Some("BR".into());
                p.asns = Some(vec![64500]);
            }),
        ),
        (
            "private",
            patch(|p| {
                p.private = Some(true);
                p.netblocks = Some(vec!["10.9.0.0/16".into()]);
            }),
        ),
    ];
    for (name, p) in mirrors {
        std::os::unix::fs::symlink(root.path().join("tree"), root.path().join(name)).unwrap();
        add_mirror(&wharf, name, &nginx.url(&format!("{name}/")), p).await;
    }
    let report = wharf.crawl().await;
    assert!(report.results.iter().all(|r| r.credited == Some(1)), "{report:#?}");

    let single: serde_json::Value =
        wharf.get("/v2/single/manifests/v1").await.json().await.unwrap();
    let digest = single["layers"][1]["digest"].as_str().unwrap().to_owned();
    // The full explanation, as operators see it (the public /explain names only public
    // mirrors, checked below).
    let explain = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let app = &wharf.running().app;
        let snap = app.jobs.selector().snapshot();
        let (name, d) = ("single".parse().unwrap(), digest.parse().unwrap());
        let e = snap.explain(&name, &d, ip, app.geo.lookup(ip), false, false, &mut rand::rng());
        async move { serde_json::to_value(e).unwrap() }
    };
    let public_explain = |ip: &str| {
        let url = wharf.url(&format!("/explain?ip={ip}&name=single&digest={digest}"));
        async move {
            let r = http().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let winners = |e: &serde_json::Value| -> (String, Vec<String>) {
        let c = e["candidates"].as_array().unwrap();
        let tier = c[0]["tier"].as_str().unwrap().to_owned();
        let first = &c[0];
        let mut names: Vec<String> = c
            .iter()
            .filter(|x| x["tier"] == first["tier"] && x["prefix"] == first["prefix"])
            .map(|x| x["mirror"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        (tier, names)
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Longest netblock beats a wider one and beats the country.
    assert_eq!(winners(&explain("10.1.2.3").await), ("netblock".into(), s(&["net"])));
    assert_eq!(winners(&explain("2001:db8:1:2::5").await), ("netblock".into(), s(&["net"])));
    assert_eq!(winners(&explain("10.1.9.9").await), ("netblock".into(), s(&["net-wide"])));
    let e = explain("10.1.9.9").await;
    assert_eq!(e["geo"]["country"], "DE");
    assert_eq!(
        winners(&explain("2001:db8:1:3::1").await),
        ("country".into(), s(&["de", "de-big"]))
    );
    assert_eq!(winners(&explain("10.2.0.1").await), ("country".into(), s(&["fr"])));
    assert_eq!(winners(&explain("10.4.0.1").await), ("asn".into(), s(&["asn"])));
    assert_eq!(explain("10.4.0.1").await["geo"]["asn"], 64500);
    assert_eq!(winners(&explain("10.3.0.1").await), ("country".into(), s(&["net", "us"])));
    // Unknown place: every public mirror; the private one only for its netblock.
    let e = explain("192.0.2.1").await;
    assert_eq!(winners(&e).0, "global");
    assert!(!winners(&e).1.contains(&"private".to_owned()));
    let private =
        e["excluded"].as_array().unwrap().iter().find(|x| x["mirror"] == "private").unwrap();
    assert_eq!(private["reason"], "private");
    assert_eq!(winners(&explain("10.9.1.1").await), ("netblock".into(), s(&["private"])));
    // Anonymous callers never learn of a private mirror, not even from inside its netblock.
    for ip in ["10.9.1.1", "::ffff:10.9.1.1", "192.0.2.1"] {
        let e = public_explain(ip).await;
        assert!(!e.contains("\"private\""), "{ip}: {e}");
        assert!(e.contains("\"client\":\"10.9.1.1\"") || !ip.contains("10.9"), "canonical: {e}");
    }

    // Continent: with fr opted out, a French client goes to the German mirrors.
    let off = MirrorPatch { active: Some(false), ..MirrorPatch::default() };
    wharf.control(Request::MirrorSet { name: "fr".into(), patch: off }).await;
    let e = explain("10.2.0.1").await;
    assert_eq!(winners(&e), ("continent".into(), s(&["de", "de-big"])));
    let fr = e["excluded"].as_array().unwrap().iter().find(|x| x["mirror"] == "fr").unwrap();
    assert_eq!(fr["reason"], "opted_out");

    // Forwarded addresses count only from a trusted proxy (127.0.0.2 here).
    let from = |local: &str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let blob_url = wharf.url(&format!("/v2/single/blobs/{digest}"));
    let location = |c: reqwest::Client, xff: &'static str| {
        let url = blob_url.clone();
        async move {
            let r = c.get(url).header("X-Forwarded-For", xff).send().await.unwrap();
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let trusted = location(from("127.0.0.2"), "10.1.2.3").await;
    assert!(trusted.contains("/net/"), "{trusted}");
    // From an untrusted peer the same header is ignored: the client is 127.0.0.1, in no
    // netblock, so picks spread over the global tier (mostly de-big, by bandwidth).
    let mut net_hits = 0;
    for _ in 0..10 {
        let untrusted = location(from("127.0.0.1"), "10.1.2.3").await;
        assert!(!untrusted.contains("/private/"), "{untrusted}");
        net_hits += usize::from(untrusted.contains("/net/"));
    }
    assert!(net_hits < 10, "the untrusted X-Forwarded-For was believed");
    let via_proxy_chain = location(from("127.0.0.2"), "10.2.0.1, 127.0.0.2").await;
    assert!(via_proxy_chain.contains("/de"), "{via_proxy_chain}");
    // An untrusted peer claiming a netblock address does not get the netblock mirror.
    let mut netblock_hits = 0;
    for _ in 0..30 {
        if location(from("127.0.0.1"), "10.9.1.1").await.contains("/private/") {
            netblock_hits += 1;
        }
    }
    assert_eq!(netblock_hits, 0, "X-Forwarded-For from an untrusted peer was believed");

    // Metalink 4 and the mirror list.
    // Asked through the trusted proxy for a client at 10.1.2.3 (DE, in net's netblock).
    let r = from("127.0.0.2")
        .get(wharf.url(&format!("/metalink/single/blobs/{digest}")))
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/metalink4+xml");
    let xml = r.text().await.unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let ns = "urn:ietf:params:xml:ns:metalink";
    let root_el = doc.root_element();
    assert_eq!((root_el.tag_name().namespace(), root_el.tag_name().name()), (Some(ns), "metalink"));
    let file = root_el.children().find(|n| n.has_tag_name((ns, "file"))).unwrap();
    assert_eq!(file.attribute("name"), Some(&digest[7..]));
    let child = |name: &str| file.children().find(|n| n.has_tag_name((ns, name))).unwrap();
    let size = single["layers"][1]["size"].as_u64().unwrap();
    assert_eq!(child("size").text(), Some(size.to_string().as_str()));
    assert_eq!(child("hash").attribute("type"), Some("sha-256"));
    assert_eq!(child("hash").text(), Some(&digest[7..]));
    let urls: Vec<(u32, Option<&str>, &str)> = file
        .children()
        .filter(|n| n.has_tag_name((ns, "url")))
        .map(|n| {
            (
                n.attribute("priority").unwrap().parse().unwrap(),
                n.attribute("location"),
                n.text().unwrap(),
            )
        })
        .collect();
    assert_eq!(urls.len(), 7, "6 public, active mirrors + the fallback: {xml}");
    assert!(urls.windows(2).all(|w| w[0].0 <= w[1].0), "ordered by priority");
    // Priority is the tier: netblock 1, country 3, global 5; the fallback after them.
    let priority_of = |m: &str| urls.iter().find(|u| u.2.contains(&format!("/{m}/"))).unwrap().0;
    assert_eq!(priority_of("net"), 1);
    assert_eq!(priority_of("net-wide"), 1);
    assert_eq!(priority_of("de"), 3);
    assert_eq!(priority_of("asn"), 5);
    assert!(
        urls.iter().any(|u| u.1 == Some("de") && u.2.contains("/de/")),
        "location is the country"
    );
    assert_eq!(urls.last().unwrap().0, 6);
    assert!(urls.last().unwrap().2.contains("/tree/blobs/sha256/"), "the fallback is last");
    let list = from("127.0.0.2")
        .get(wharf.url(&format!("/mirrorlist/single/blobs/{digest}")))
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines, urls.iter().map(|u| u.2).collect::<Vec<_>>());
    for l in &lines {
        let r = http().get(*l).send().await.unwrap();
        assert_eq!(r.status(), 200, "{l}");
        assert_eq!(r.bytes().await.unwrap().len() as u64, size);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_endpoints_and_commands_reject_bad_input() {
    let (_reg, wharf) = synced_pair().await;
    let digest = "sha256:".to_owned() + &"0".repeat(64);
    for (path, status) in [
        ("/explain".to_owned(), 400),
        ("/explain?name=multi".to_owned(), 400),
        (format!("/explain?ip=not-an-ip&name=multi&digest={digest}"), 400),
        ("/explain?ip=10.0.0.1&name=multi&digest=sha256:xyz".to_owned(), 400),
        (format!("/explain?ip=10.0.0.1&name=Bad..Name&digest={digest}"), 400),
        (format!("/explain?ip=10.0.0.1&name=nope&digest={digest}"), 404),
        (format!("/explain?ip=10.0.0.1&name=multi&digest={digest}"), 404),
        ("/metalink/multi/blobs/sha256:xyz".to_owned(), 400),
        (format!("/metalink/nope/blobs/{digest}"), 404),
        (format!("/metalink/multi/blobs/{digest}"), 404),
        (format!("/mirrorlist/multi/blobs/{digest}"), 404),
        ("/mirrorlist/multi/tags/list".to_owned(), 404),
    ] {
        let r = wharf.get(&path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["errors"][0]["code"].is_string(), "{path}: {body}");
    }
    let bad = |patch: MirrorPatch| Request::MirrorAdd { name: "m".into(), patch };
    let url = |u: &str| Some(vec![u.to_owned()]);
    for (request, needle) in [
        (bad(MirrorPatch::default()), "at least one URL"),
        (bad(MirrorPatch { urls: url("ftp://x/"), ..Default::default() }), "http"),
        (
            bad(MirrorPatch {
                urls: url("http://x/"),
                country: Some("XX".into()),
                ..Default::default()
            }),
            "country",
        ),
        (
            bad(MirrorPatch {
                urls: url("http://x/"),
                netblocks: Some(vec!["10/8".into()]),
                ..Default::default()
            }),
            "netblock",
        ),
        (
            bad(MirrorPatch {
                urls: url("http://x/"),
                registry_url: Some("http://x/wharf/".into()),
                ..Default::default()
            }),
            "a registry answers at its host's root",
        ),
        (
            bad(MirrorPatch {
                urls: url("http://x/"),
                registry_url: Some("ftp://x/".into()),
                ..Default::default()
            }),
            "http",
        ),
        (
            Request::MirrorAdd { name: "Bad Name".into(), patch: MirrorPatch::default() },
            "mirror name",
        ),
        (
            Request::MirrorSet { name: "nope".into(), patch: MirrorPatch::default() },
            "no mirror named nope",
        ),
        (Request::MirrorRemove { name: "nope".into() }, "no mirror named nope"),
        (Request::MirrorShow { name: "nope".into() }, "no mirror named nope"),
    ] {
        match wharf.control(request.clone()).await {
            Reply::Error(e) => assert!(e.contains(needle), "{request:?}: {e}"),
            other => panic!("{request:?} was accepted: {other:?}"),
        }
    }
    let ok = MirrorPatch { urls: url("http://m.example/"), ..Default::default() };
    assert!(matches!(
        wharf.control(Request::MirrorAdd { name: "m".into(), patch: ok.clone() }).await,
        Reply::Mirror(_)
    ));
    let dup = wharf.control(Request::MirrorAdd { name: "m".into(), patch: ok }).await;
    assert!(matches!(&dup, Reply::Error(e) if e.contains("already exists")), "{dup:?}");
    let Reply::Mirrors { mirrors, .. } = wharf.control(Request::MirrorList).await else { panic!() };
    assert_eq!(mirrors.len(), 1, "refused commands wrote nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn geoip_database_is_optional_and_reloaded_when_it_changes() {
    let geo = public_tempdir();
    let path = geo.path().join("city.mmdb");
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.extra = format!("[geoip]\ndatabase = \"{}\"\n", path.display());
    // The database does not exist yet: Wharf starts, countries are unknown.
    let wharf = Wharf::launch(setup).await;
    wharf.sync().await;
    let single = layout_digest(&dir.path().join("demo/app"), "1.0");
    let country = || async {
        let url = wharf.url(&format!("/explain?ip=10.1.0.1&name=demo/app&digest={single}"));
        let e: serde_json::Value = http().get(url).send().await.unwrap().json().await.unwrap();
        e["geo"]["country"].clone()
    };
    assert_eq!(country().await, serde_json::Value::Null);
    write_city_db(&path, &[("10.1.0.0/16", "DE")]);
    assert!(wharf.geo().reload_if_changed());
    assert_eq!(country().await, "DE");
    // A changed file (new mtime) replaces the old contents.
    write_city_db(&path, &[("10.1.0.0/16", "FR")]);
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
    assert!(wharf.geo().reload_if_changed());
    assert_eq!(country().await, "FR");
    assert!(!wharf.geo().reload_if_changed(), "unchanged: no reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_arm64_only_mirror_synced_with_files_from_gets_only_arm64_blobs() {
    let reg = Registry::start().await;
    reg.push("multi:v1", "multi:v1", &["--all"]).await;
    let mut setup = Setup::new(&reg.url());
    setup.extra = THOROUGH.into();
    let wharf = Wharf::launch(setup).await;
    wharf.sync().await;
    let fx = fixtures();
    let index = layout_digest(&fx.join("multi"), "v1");
    let children = index_children(&fx.join("multi"), &index);
    let layer_of = |arch: &str| -> String {
        let d = &children.iter().find(|(a, _)| a == arch).unwrap().1;
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fx.join("multi/blobs/sha256").join(&d[7..])).unwrap(),
        )
        .unwrap();
        m["layers"][1]["digest"].as_str().unwrap().to_owned()
    };
    let (arm, amd) = (layer_of("arm64"), layer_of("amd64"));

    // The published list for arm64 has the arm64 layer, not the amd64 one, and ends with the marker.
    let list = std::fs::read_to_string(wharf.tree().join("content-sets/arm64.txt")).unwrap();
    assert!(list.contains(&format!("blobs/sha256/{}", &arm[7..])));
    assert!(list.contains(&format!("repositories/multi/blobs/sha256/{}", &arm[7..])));
    assert!(!list.contains(&amd[7..]), "{list}");
    assert!(list.contains(&format!("blobs/sha256/{}", &index[7..])), "indexes are in every set");
    assert_eq!(list.lines().last(), Some("wharf-generation.json"));

    // A mirror admin rsyncs just that set, as the README says.
    let root = public_tempdir();
    let dest = root.path().join("arm");
    run(tokio::process::Command::new(require("rsync"))
        .args(["-aH", "--modify-window=-1", "--delay-updates", "--files-from"])
        .arg(wharf.tree().join("content-sets/arm64.txt"))
        .arg(format!("{}/", wharf.tree().display()))
        .arg(&dest))
    .await;
    assert!(!dest.join("blobs/sha256").join(&amd[7..]).exists());
    let nginx = Nginx::start(root.path(), None, None).await;
    let arm_only = MirrorPatch { content: Some("arm64".into()), ..MirrorPatch::default() };
    add_mirror(&wharf, "arm", &nginx.url("arm/"), arm_only).await;
    let report = wharf.crawl().await;
    assert_eq!(holds(&report, "arm"), Some(1), "{report:#?}");

    let location = |d: String| {
        let url = wharf.url(&format!("/v2/multi/blobs/{d}"));
        async move {
            let r = http().get(url).send().await.unwrap();
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    assert!(location(arm.clone()).await.starts_with(&nginx.url("arm/")));
    assert!(location(amd.clone()).await.contains("/tree/blobs/"), "amd64 blobs go to the fallback");
    // A real arm64 pull is served by the mirror.
    let out = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--override-arch", "arm64"])
        .arg(format!("docker://{}/multi:v1", wharf.host()))
        .arg(format!("oci:{}:v1", out.path().join("a").display())))
    .await;
    assert!(
        nginx
            .requests()
            .iter()
            .any(|r| r.starts_with(&format!("GET /arm/blobs/sha256/{}", &arm[7..])))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_mirror_and_total_time_bounds_hold() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    // Requests may take long; a mirror may not; the whole run even less with 3 slow ones.
    setup.extra = "[crawl]\nconcurrency = 1\nrequest_timeout = \"30s\"\nmirror_timeout = \"1s\"\ntotal_timeout = \"1500ms\"\n".into();
    let wharf = Wharf::launch(setup).await;
    wharf.sync().await;
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let slow = Nginx::start(copy.path(), None, Some(1)).await;
    for name in ["s1", "s2", "s3"] {
        add_mirror(&wharf, name, &slow.url("t/"), MirrorPatch::default()).await;
    }
    let report = wharf.crawl().await;
    // One mirror used its second and failed; the run's bound left no time for all three,
    // and those not reached are skipped, not failed.
    assert!(!report.results.is_empty() && report.results.len() < 3, "{report:#?}");
    for r in &report.results {
        assert!(r.error.as_deref().unwrap_or("").contains("no answer within"), "{r:?}");
    }
    let Reply::Mirrors { mirrors, .. } = wharf.control(Request::MirrorList).await else { panic!() };
    let untouched = mirrors.iter().filter(|m| m.health.last_crawl.is_none()).count();
    assert_eq!(untouched, 3 - report.results.len(), "skipped mirrors keep their health");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_mirror_s_redirects_and_bytes_are_counted_and_kept() {
    let (_upstream, url) = demo_upstream();
    let mut setup = Setup::new(&url);
    setup.extra = THOROUGH.into();
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let nginx = Nginx::start(copy.path(), None, None).await;
    add_mirror(&wharf, "m1", &nginx.url("t/"), MirrorPatch::default()).await;
    assert_eq!(holds(&wharf.crawl().await, "m1"), Some(1));
    let m: serde_json::Value = wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let layers: Vec<(String, u64)> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["digest"].as_str().unwrap().to_owned(), l["size"].as_u64().unwrap()))
        .collect();
    let mut bytes = 0;
    for (digest, size) in &layers {
        let r = wharf.get(&format!("/v2/demo/app/blobs/{digest}")).await;
        assert_eq!(r.status(), 307);
        assert!(r.headers()["location"].to_str().unwrap().starts_with(&nginx.url("t/")));
        bytes += size;
    }
    // HEAD is answered by Wharf: no redirect, nothing counted.
    let head = http().head(wharf.url(&format!("/v2/demo/app/blobs/{}", layers[0].0))).send().await;
    assert_eq!(head.unwrap().status(), 200);
    let metrics = wharf.get("/metrics").await.text().await.unwrap();
    let n = layers.len();
    assert!(
        metrics.contains(&format!("wharf_mirror_redirects_total{{mirror=\"m1\"}} {n}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("wharf_mirror_redirected_bytes_total{{mirror=\"m1\"}} {bytes}")),
        "{metrics}"
    );
    let (store, _data) = wharf.stop_and_open_store().await;
    let kept = store.mirror_traffic(&"m1".parse().unwrap(), 0).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!((kept[0].redirects, kept[0].bytes), (n as u64, bytes));
}
