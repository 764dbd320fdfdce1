//! Registry mirrors: a copy of the tree, rsynced as the mirror admins' commands do and served
//! by an unmodified nginx or Apache with the configuration Wharf generates, answers real
//! pulls with no Wharf in the path; the crawler checks such mirrors as a client would; and
//! `/client-config` tells clients to try the nearest verified one first.

use std::path::Path;

use wharf::model::registry_view::{self, Server, ViewSite};

use crate::harness::*;
use crate::mirrors_harness::*;
use crate::pull::{Containerd, sha256_hex};

/// The configuration `wharf mirror registry-config` prints for `root` and `port`.
fn generated(server: Server, root: &Path, port: u16) -> String {
    let rsync = ["rsync -aH --delay-updates --delete-delay SRC DEST".to_owned()];
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
