//! Registry mirrors: a copy of the tree, rsynced as the mirror admins' commands do and served
//! by an unmodified nginx or Apache with the configuration Wharf generates, answers real
//! pulls with no Wharf in the path; the crawler checks such mirrors as a client would; and
//! `/client-config` tells clients to try the nearest verified one first.

use std::path::Path;

use wharf::model::registry_view::{self, Server, ViewSite};

use crate::harness::*;
use crate::mirrors::THOROUGH;
use crate::mirrors_harness::*;
use crate::pull::{Containerd, sha256_hex};

/// The configuration `wharf mirror registry-config` prints for `root` and `port`.
fn generated(server: Server, root: &Path, port: u16) -> String {
    let rsync = ["rsync -aH --modify-window=-1 --delay-updates --delete-delay SRC DEST".to_owned()];
    let root = format!("{}/", root.display());
    let listen = format!("127.0.0.1:{port}");
    registry_view::server_config(server, &ViewSite { root: &root, listen: &listen, rsync: &rsync })
}

/// The upstream's bytes of a tag's manifest.
async fn upstream_raw(reg: &Registry, reference: &str) -> String {
    run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{reference}", reg.host())))
    .await
}

/// What a static registry at `host` must answer: skopeo for every image kind and platform,
/// podman pull and run, containerd pulls, tags/list, HEAD by tag and by digest, 404s.
async fn pulls_everything(reg: &Registry, host: &str) {
    let out = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let index = layout_digest(&fx.join("multi"), "v1");
    let children = index_children(&fx.join("multi"), &index);
    let child = |arch: &str| children.iter().find(|(a, _)| a == arch).unwrap().1.clone();
    for (name, args, expect) in [
        ("amd64", vec![], child("amd64")),
        ("arm64", vec!["--override-arch", "arm64"], child("arm64")),
        ("all", vec!["--all"], index.clone()),
    ] {
        let dest = out.path().join(name);
        run(skopeo()
            .args(["copy", "--src-tls-verify=false"])
            .args(&args)
            .arg(format!("docker://{host}/multi:v1"))
            .arg(format!("oci:{}:v1", dest.display())))
        .await;
        assert_eq!(layout_digest(&dest, "v1"), expect, "{name}");
    }
    for (repo, all) in
        [("single:v1", false), ("docker/single:v1", false), ("docker/multi:v1", true)]
    {
        let dest = out.path().join(repo.replace([':', '/'], "_"));
        let mut cmd = skopeo();
        cmd.args(["copy", "--src-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        run(cmd.arg(format!("docker://{host}/{repo}")).arg(format!("dir:{}", dest.display())))
            .await;
        let pulled = std::fs::read_to_string(dest.join("manifest.json")).unwrap();
        assert_eq!(pulled, upstream_raw(reg, repo).await, "{repo}: manifest bytes differ");
    }

    let root = tempfile::tempdir().unwrap();
    let image = format!("{host}/multi:v1");
    run(podman(root.path()).args(["pull", "--tls-verify=false", &image])).await;
    let out = run(podman(root.path()).args(["run", "--rm"]).args(PODMAN_RUN).arg(&image)).await;
    assert_eq!(out.trim(), "hello from wharf");

    let ctrd = Containerd::start().await;
    for repo in ["multi:v1", "single:v1", "docker/multi:v1", "docker/single:v1"] {
        let image = format!("{host}/{repo}");
        run(ctrd.ctr().args(["images", "pull", "--plain-http", &image])).await;
        let ls = run(ctrd.ctr().args(["images", "ls"])).await;
        let digest = ls
            .lines()
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&image.as_str())).then(|| cols[2].to_owned())
            })
            .unwrap_or_else(|| panic!("{image} not in ctr images ls:\n{ls}"));
        let top = format!("sha256:{}", sha256_hex(upstream_raw(reg, repo).await.as_bytes()));
        assert_eq!(digest, top, "{repo}: ctr has {digest}");
    }

    let http = http();
    let url = |p: &str| format!("http://{host}/v2/{p}");
    let ping = http.get(url("")).send().await.unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(ping.headers()["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(ping.json::<serde_json::Value>().await.unwrap(), serde_json::json!({}));
    let list: serde_json::Value =
        http.get(url("docker/multi/tags/list")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, serde_json::json!({"name": "docker/multi", "tags": ["v1"]}));
    for (repo, media_type) in [
        ("multi", wharf::model::media_type::OCI_INDEX),
        ("single", wharf::model::media_type::OCI_MANIFEST),
        ("docker/multi", wharf::model::media_type::DOCKER_LIST),
        ("docker/single", wharf::model::media_type::DOCKER_MANIFEST),
    ] {
        let raw = upstream_raw(reg, &format!("{repo}:v1")).await;
        let head = http.head(url(&format!("{repo}/manifests/v1"))).send().await.unwrap();
        assert_eq!(head.status(), 200, "{repo}");
        assert_eq!(head.headers()["content-type"], media_type, "{repo}");
        assert_eq!(head.headers()["content-length"], raw.len().to_string().as_str(), "{repo}");
        let digest = format!("sha256:{}", sha256_hex(raw.as_bytes()));
        let by_digest = http.head(url(&format!("{repo}/manifests/{digest}"))).send().await.unwrap();
        assert_eq!(by_digest.status(), 200, "{repo}@{digest}");
        assert_eq!(by_digest.headers()["content-type"], media_type, "{repo}");
        assert_eq!(by_digest.headers()["docker-content-digest"], digest.as_str(), "{repo}");
        assert!(
            by_digest.headers()["cache-control"].to_str().unwrap().contains("immutable"),
            "{repo}: a digest is cached for good"
        );
        let tag_cache = head.headers()["cache-control"].to_str().unwrap();
        assert!(tag_cache.contains("max-age=60"), "{repo}: a tag is cached briefly: {tag_cache}");
    }
    for missing in ["multi/manifests/v9", "nope/manifests/v1", "nope/tags/list"] {
        let resp = http.get(url(missing)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{missing}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_serves_a_copy_of_the_tree_as_a_registry_without_wharf() {
    let (reg, wharf) = synced_pair().await;
    let copy = public_tempdir();
    rsync_tree(wharf.tree(), copy.path(), &[]).await;
    // No Wharf in the path: it is stopped before any pull.
    wharf.stop().await;
    let port = free_port();
    let nginx = Nginx::launch_conf(&generated(Server::Nginx, copy.path(), port), port).await;
    pulls_everything(&reg, &format!("127.0.0.1:{port}")).await;
    let requests = nginx.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /v2/multi/blobs/sha256:")),
        "blobs came from nginx: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apache_serves_a_copy_of_the_tree_as_a_registry_without_wharf() {
    let (reg, wharf) = synced_pair().await;
    let copy = public_tempdir();
    rsync_tree(wharf.tree(), copy.path(), &[]).await;
    wharf.stop().await;
    let port = free_port();
    let apache = Apache::launch(&generated(Server::Apache, copy.path(), port), port).await;
    pulls_everything(&reg, &format!("127.0.0.1:{port}")).await;
    let requests = apache.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /v2/multi/manifests/v1")),
        "manifests came from Apache: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_serves_a_copy_of_the_tree_as_a_registry_without_wharf() {
    let (reg, wharf) = synced_pair().await;
    let copy = public_tempdir();
    rsync_tree(wharf.tree(), copy.path(), &[]).await;
    wharf.stop().await;
    let port = free_port();
    let _caddy = Caddy::launch(&generated(Server::Caddy, copy.path(), port), port).await;
    pulls_everything(&reg, &format!("127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_arm64_content_set_mirror_pulls_arm64_and_refuses_amd64_cleanly() {
    let (reg, wharf) = synced_pair().await;
    let copy = public_tempdir();
    let list = wharf.tree().join("content-sets/arm64.txt");
    let files = std::fs::read_to_string(&list).unwrap();
    assert!(files.contains("v2/multi/_manifests/v1.oci-index"), "{files}");
    // The commands a mirror admin runs for content set `arm64`, with a local source.
    rsync_tree(wharf.tree(), copy.path(), &["--files-from", list.to_str().unwrap()]).await;
    wharf.stop().await;
    let port = free_port();
    let _nginx = Nginx::launch_conf(&generated(Server::Nginx, copy.path(), port), port).await;
    let host = format!("127.0.0.1:{port}");
    let fx = fixtures();
    let index = layout_digest(&fx.join("multi"), "v1");
    let children = index_children(&fx.join("multi"), &index);
    let arm = children.iter().find(|(a, _)| a == "arm64").unwrap().1.clone();
    let out = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--override-arch", "arm64"])
        .arg(format!("docker://{host}/multi:v1"))
        .arg(format!("oci:{}:v1", out.path().join("arm").display())))
    .await;
    assert_eq!(layout_digest(&out.path().join("arm"), "v1"), arm);
    // amd64: the index is there, its amd64 manifest is not: a clean "manifest unknown".
    let err = run_failing(
        skopeo()
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/multi:v1"))
            .arg(format!("oci:{}:v1", out.path().join("amd").display())),
    )
    .await;
    assert!(err.contains("manifest unknown") || err.contains("404"), "{err}");
    // An amd64-only image is not in the view at all; its blobs were never copied.
    let single = http().get(format!("http://{host}/v2/single/manifests/v1")).send().await.unwrap();
    assert_eq!(single.status(), 404);
    let single_raw = upstream_raw(&reg, "single:v1").await;
    let config: serde_json::Value = serde_json::from_str(&single_raw).unwrap();
    let hex = config["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert!(!copy.path().join("blobs/sha256").join(hex).exists());
}

/// An nginx serving a copy of `tree` as tree and registry view, on one port.
async fn registry_mirror(
    tree: &Path,
    config: impl Fn(String) -> String,
) -> (Nginx, tempfile::TempDir) {
    let copy = public_tempdir();
    rsync_tree(tree, copy.path(), &[]).await;
    let port = free_port();
    let nginx =
        Nginx::launch_conf(&config(generated(Server::Nginx, copy.path(), port)), port).await;
    (nginx, copy)
}

async fn add_registry_mirror(wharf: &Wharf, name: &str, nginx: &Nginx, country: &str) {
    use wharf::control::{Reply, Request};
    let patch = wharf::model::MirrorPatch {
        urls: Some(vec![nginx.url("")]),
        registry_url: Some(nginx.url("")),
        country: Some(country.into()),
        ..Default::default()
    };
    let reply = wharf.control(Request::MirrorAdd { name: name.into(), patch }).await;
    assert!(matches!(reply, Reply::Mirror(_)), "{reply:?}");
}

fn registry_result(report: &wharf::crawl::CrawlReport, name: &str) -> Option<Result<(), String>> {
    let r = report.results.iter().find(|r| r.mirror.as_str() == name).expect("crawled");
    assert!(r.error.is_none(), "{name}'s tree passes: {r:?}");
    r.registry.clone()
}

/// The line numbers of each needle in `text` (panics when one is missing).
fn position(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_mirrors_are_checked_like_clients_and_offered_nearest_first_with_wharf_last() {
    // Loopback clients are in Germany.
    let geo = public_tempdir();
    write_city_db(&geo.path().join("city.mmdb"), &[("127.0.0.0/8", "DE")]);
    let reg = Registry::start().await;
    reg.push_standard().await;
    let mut setup = Setup::new(&reg.url());
    setup.extra =
        format!("{THOROUGH}[geoip]\ndatabase = \"{}\"\n", geo.path().join("city.mmdb").display());
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, wharf::model::RunOutcome::Ok);

    let (de, _de_copy) = registry_mirror(wharf.tree(), |c| c).await;
    let (us, _us_copy) = registry_mirror(wharf.tree(), |c| c).await;
    // A mirror whose tags name other bytes than Wharf's (every tag, so any sample finds it)...
    let (wrong_tag, wrong_copy) = registry_mirror(wharf.tree(), |c| c).await;
    for repo in ["multi", "single", "docker/multi", "docker/single"] {
        let dir = wrong_copy.path().join("v2").join(repo).join("_manifests");
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("v1.") {
                let mut bytes = std::fs::read(e.path()).unwrap();
                bytes.extend_from_slice(b"\n");
                std::fs::remove_file(e.path()).unwrap();
                std::fs::write(e.path(), bytes).unwrap();
            }
        }
    }
    // ...and one whose server sends manifests without their media types.
    let strip_types = |c: String| {
        c.lines()
            .map(|l| if l.trim_start().starts_with("types {") { "        types { }" } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (wrong_type, _wt_copy) = registry_mirror(wharf.tree(), strip_types).await;
    add_registry_mirror(&wharf, "de", &de, "DE").await;
    add_registry_mirror(&wharf, "us", &us, "US").await;
    add_registry_mirror(&wharf, "wrongtag", &wrong_tag, "DE").await;
    add_registry_mirror(&wharf, "wrongtype", &wrong_type, "DE").await;
    let report = wharf.crawl().await;
    assert_eq!(registry_result(&report, "de"), Some(Ok(())), "{report:#?}");
    assert_eq!(registry_result(&report, "us"), Some(Ok(())));
    let e = registry_result(&report, "wrongtag").unwrap().unwrap_err();
    assert!(e.contains("serves sha256:") && e.contains("says"), "{e}");
    let e = registry_result(&report, "wrongtype").unwrap().unwrap_err();
    assert!(e.contains("Content-Type is not application/vnd"), "{e}");
    // The mirrors' pages say so.
    let shown =
        wharf.control(wharf::control::Request::MirrorShow { name: "wrongtag".into() }).await;
    assert!(format!("{shown:?}").contains("registry_error: Some("), "{shown:?}");

    // The client configuration: DE first, US next, Wharf last; the unverified ones never.
    let conf = wharf.get("/client-config/registries.conf").await;
    assert_eq!(conf.status(), 200);
    let conf = conf.text().await.unwrap();
    let host = |n: &Nginx| format!("location = \"127.0.0.1:{}\"", n.port);
    assert!(position(&conf, &host(&de)) < position(&conf, &host(&us)), "{conf}");
    assert!(
        position(&conf, &format!("prefix = \"{}\"", wharf.host())) < position(&conf, &host(&de))
    );
    for bad in [&wrong_tag, &wrong_type] {
        assert!(!conf.contains(&host(bad)), "{conf}");
    }
    let digest_only = wharf.get("/client-config/registries.conf?pull=digest-only").await;
    assert!(digest_only.text().await.unwrap().contains("pull-from-mirror = \"digest-only\""));
    let hosts = wharf.get("/client-config/hosts.toml").await.text().await.unwrap();
    assert!(hosts.contains(&format!("server = \"http://{}\"", wharf.host())), "{hosts}");
    assert!(
        position(&hosts, &format!("[host.\"{}\"]", de.url("").trim_end_matches('/')))
            < position(&hosts, &format!("[host.\"{}\"]", us.url("").trim_end_matches('/'))),
        "{hosts}"
    );
    toml::from_str::<toml::Table>(&hosts).expect("hosts.toml is TOML");
    toml::from_str::<toml::Table>(&conf).expect("registries.conf is TOML");
    for bad in ["?arch=ARM%20", "?pull=sometimes"] {
        let r = wharf.get(&format!("/client-config/registries.conf{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
    }

    // podman configured with it pulls from the DE mirror, manifest and blobs...
    let conf_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf_file.path(), &conf).unwrap();
    let pull = |root: &Path| {
        let mut c = podman(root);
        c.env("CONTAINERS_REGISTRIES_CONF", conf_file.path())
            .arg("pull")
            .arg(format!("{}/multi:v1", wharf.host()));
        c
    };
    let wharf_manifests = || wharf.requests("manifest", "GET", "200");
    let before = wharf_manifests().await;
    let root = tempfile::tempdir().unwrap();
    run(&mut pull(root.path())).await;
    let got = de.requests();
    assert!(got.iter().any(|r| r.starts_with("GET /v2/multi/manifests/v1 ")), "{got:?}");
    assert!(got.iter().any(|r| r.starts_with("GET /v2/multi/blobs/sha256:")), "{got:?}");
    assert_eq!(wharf_manifests().await, before, "Wharf served no manifest");
    // containerd with the hosts.toml resolves and fetches from the DE mirror too.
    let hosts_dir = tempfile::tempdir().unwrap();
    let dir = hosts_dir.path().join(wharf.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.toml"), &hosts).unwrap();
    let ctrd = Containerd::start().await;
    let de_before = de.requests().len();
    run(ctrd
        .ctr()
        .args(["images", "pull", "--hosts-dir"])
        .arg(hosts_dir.path())
        .arg(format!("{}/docker/multi:v1", wharf.host())))
    .await;
    let got = de.requests()[de_before..].to_vec();
    assert!(got.iter().any(|r| r.contains(" /v2/docker/multi/manifests/v1")), "{got:?}");
    assert!(got.iter().any(|r| r.starts_with("GET /v2/docker/multi/blobs/sha256:")), "{got:?}");
    assert_eq!(wharf_manifests().await, before, "Wharf served no manifest to containerd");
    // ...from the next one when it is stopped, and from Wharf when none is left.
    drop(de);
    let root = tempfile::tempdir().unwrap();
    run(&mut pull(root.path())).await;
    assert!(us.requests().iter().any(|r| r.starts_with("GET /v2/multi/manifests/v1 ")));
    drop(us);
    // Wharf's own blob redirects stop going to the stopped mirrors at the next crawl.
    wharf.crawl().await;
    let root = tempfile::tempdir().unwrap();
    run(&mut pull(root.path())).await;
    assert!(wharf_manifests().await > before, "Wharf served the last pull");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_rsynced_while_clients_pull_never_serves_a_manifest_whose_blobs_it_lacks() {
    let (reg, wharf) = synced_pair().await;
    let copy = public_tempdir();
    rsync_tree(wharf.tree(), copy.path(), &[]).await;
    let port = free_port();
    let _nginx = Nginx::launch_conf(&generated(Server::Nginx, copy.path(), port), port).await;
    // A new generation: single:v1 moves to an image with a new layer.
    reg.push("single2:v2", "single:v1", &[]).await;
    let run2 = wharf.sync().await;
    assert_eq!(run2.outcome, wharf::model::RunOutcome::Ok, "{run2:#?}");
    let new_digest =
        format!("sha256:{}", sha256_hex(upstream_raw(&reg, "single:v1").await.as_bytes()));
    // The new manifest has the old one's size; give it the old one's mtime second too (two
    // publications within a second): only nanoseconds tell them apart, and the documented
    // rsync must still see the change (rsync's default compares whole seconds).
    let tag_file = "v2/single/_manifests/v1.oci-manifest";
    let old = std::fs::metadata(copy.path().join(tag_file)).unwrap();
    let new = wharf.tree().join("blobs/sha256").join(&new_digest[7..]);
    assert_eq!(std::fs::metadata(&new).unwrap().len(), old.len(), "same-size manifests");
    let old_mtime = old.modified().unwrap();
    let nudge = if old_mtime.duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() > 0 {
        -1i64
    } else {
        1
    };
    let same_second = if nudge < 0 {
        old_mtime - std::time::Duration::from_nanos(1)
    } else {
        old_mtime + std::time::Duration::from_nanos(1)
    };
    std::fs::File::options().write(true).open(&new).unwrap().set_modified(same_second).unwrap();

    // The documented rsync, slowed down, while a client pulls the tag over and over.
    let tree = wharf.tree().to_owned();
    let dest = copy.path().to_owned();
    let rsync = tokio::spawn(async move { rsync_tree(&tree, &dest, &["--bwlimit=300"]).await });
    let http = http();
    let base = format!("http://127.0.0.1:{port}/v2/single");
    let (mut pulls, mut saw_new) = (0, false);
    while !rsync.is_finished() || !saw_new {
        let done = rsync.is_finished();
        let resp = http
            .get(format!("{base}/manifests/v1"))
            .header("Accept", wharf::model::media_type::OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().await.unwrap();
        saw_new |= format!("sha256:{}", sha256_hex(&bytes)) == new_digest;
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let blobs = m["layers"].as_array().unwrap().iter().chain([&m["config"]]);
        for b in blobs {
            let d = b["digest"].as_str().unwrap();
            let head = http.head(format!("{base}/blobs/{d}")).send().await.unwrap();
            assert_eq!(head.status(), 200, "the copy served a manifest without its blob {d}");
        }
        pulls += 1;
        if done && !saw_new {
            let f = tag_file;
            panic!(
                "the rsync finished and the copy still serves the old manifest: {} vs {new_digest}; tree {:?} copy {:?}",
                sha256_hex(&bytes),
                sha256_hex(&std::fs::read(wharf.tree().join(f)).unwrap_or_default()),
                sha256_hex(&std::fs::read(copy.path().join(f)).unwrap_or_default()),
            );
        }
    }
    rsync.await.unwrap();
    assert!(pulls > 1, "the client pulled while rsync ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_prints_each_server_s_configuration_and_refuses_bad_input() {
    let wharf_bin = || {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        c.args(["--config", "/nonexistent/wharf.toml", "mirror", "registry-config"]);
        c
    };
    for (server, needle) in [
        ("nginx", "server {"),
        ("apache", "<VirtualHost 127.0.0.1:8080>"),
        ("caddy", "http://127.0.0.1:8080 {"),
    ] {
        let out = run(wharf_bin()
            .args(["--server", server, "--root", "/srv/w", "--listen", "127.0.0.1:8080"])
            .args(["--content", "arm64"]))
        .await;
        assert!(out.contains(needle), "{server}: {out}");
        assert!(out.contains("/srv/w/"), "{server}: {out}");
        assert!(out.contains("content-sets/arm64.txt"), "{server}: the content set's rsync: {out}");
        assert!(out.contains("--modify-window=-1 --delay-updates"), "{server}: {out}");
    }
    for (args, needle) in [
        (vec!["--server", "iis"], "unknown server"),
        (vec!["--server", "nginx", "--content", "ARM!"], "--content"),
    ] {
        let err = run_failing(wharf_bin().args(&args)).await;
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
