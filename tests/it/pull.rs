//! Real clients pull through Wharf: skopeo, podman and containerd's ctr. Pulled digests equal
//! the pushed ones, and every blob GET Wharf answered was a 307 into its tree.

use crate::harness::*;

/// Assert every blob GET Wharf answered was a redirect, and that there were some.
async fn assert_blob_gets_redirected(wharf: &Wharf) {
    let redirected = wharf.requests("blob", "GET", "307").await;
    assert!(redirected > 0, "no blob GET reached Wharf");
    let text = wharf.get("/metrics").await.text().await.unwrap();
    let others: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("route=\"blob\",method=\"GET\"") && !l.contains("status=\"307\""))
        .collect();
    assert!(others.is_empty(), "blob GETs not answered with 307: {others:?}");
    assert!(wharf.requests("tree", "GET", "200").await > 0, "blobs were not fetched from the tree");
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_every_image_kind() {
    let (_reg, wharf) = synced_pair().await;
    let out = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let index = layout_digest(&fx.join("multi"), "v1");
    let children = index_children(&fx.join("multi"), &index);
    let child = |arch: &str| children.iter().find(|(a, _)| a == arch).unwrap().1.clone();
    let src = |name: &str| format!("docker://{}/{name}", wharf.host());

    // Default platform (amd64), --override-arch arm64, and --all.
    for (name, args, expect) in [
        ("amd64", vec![], child("amd64")),
        ("arm64", vec!["--override-arch", "arm64"], child("arm64")),
        ("all", vec!["--all"], index.clone()),
    ] {
        let dest = out.path().join(name);
        run(skopeo()
            .args(["copy", "--src-tls-verify=false"])
            .args(&args)
            .arg(src("multi:v1"))
            .arg(format!("oci:{}:v1", dest.display())))
        .await;
        assert_eq!(layout_digest(&dest, "v1"), expect, "{name}");
    }

    // OCI manifest, Docker v2s2 and Docker manifest list keep their digests (dir: keeps
    // the manifest bytes as pulled).
    for (repo, all) in
        [("single:v1", false), ("docker/single:v1", false), ("docker/multi:v1", true)]
    {
        let pushed = run(skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo}", _reg.host())))
        .await;
        let dest = out.path().join(repo.replace([':', '/'], "_"));
        let mut cmd = skopeo();
        cmd.args(["copy", "--src-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        run(cmd.arg(src(repo)).arg(format!("dir:{}", dest.display()))).await;
        let pulled = std::fs::read(dest.join("manifest.json")).unwrap();
        assert_eq!(String::from_utf8(pulled).unwrap(), pushed, "{repo}: manifest bytes differ");
    }

    let inspect = run(skopeo().args(["inspect", "--tls-verify=false"]).arg(src("single:v1"))).await;
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], layout_digest(&fx.join("single"), "v1"));
    assert_eq!(inspect["RepoTags"], serde_json::json!(["v1"]));
    assert_blob_gets_redirected(&wharf).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_pulls_and_runs() {
    let (_reg, wharf) = synced_pair().await;
    require("runc");
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/multi:v1", wharf.host());
    run(podman(root.path()).args(["pull", "--tls-verify=false", &image])).await;
    let inspect = ["image", "inspect", "--format", "{{.Digest}}", &image];
    let digests = run(podman(root.path()).args(inspect)).await;
    assert_eq!(digests.trim(), layout_digest(&fixtures().join("multi"), "v1"));
    let out = run(podman(root.path()).args(["run", "--rm"]).args(PODMAN_RUN).arg(&image)).await;
    assert_eq!(out.trim(), "hello from wharf");
    assert_blob_gets_redirected(&wharf).await;
}

/// A private containerd with its own root, state and socket.
pub struct Containerd {
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub async fn start() -> Containerd {
        let bin = require("containerd");
        require("ctr");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/containerd.sock\"\n[ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n[debug]\n  address = \"{0}/debug.sock\"\n[metrics]\n  address = \"\"\n",
            d.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("containerd.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let c = Containerd { _child: child, dir };
        for _ in 0..100 {
            if c.ctr().arg("version").output().await.is_ok_and(|o| o.status.success()) {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "containerd did not start: {}",
            std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap()
        );
    }

    pub fn ctr(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(require("ctr"));
        c.arg("-a").arg(self.dir.path().join("containerd.sock"));
        c
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls() {
    let (reg, wharf) = synced_pair().await;
    let ctrd = Containerd::start().await;
    for repo in ["multi:v1", "docker/multi:v1", "docker/single:v1"] {
        let image = format!("{}/{repo}", wharf.host());
        run(ctrd.ctr().args(["images", "pull", "--plain-http", &image])).await;
        let ls = run(ctrd.ctr().args(["images", "ls"])).await;
        let digest = ls
            .lines()
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&image.as_str())).then(|| cols[2].to_owned())
            })
            .unwrap_or_else(|| panic!("{image} not in ctr images ls:\n{ls}"));
        let pushed_raw = run(skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo}", reg.host())))
        .await;
        // The digest of the tag's manifest as the upstream registry has it.
        let top = format!("sha256:{}", sha256_hex(pushed_raw.as_bytes()));
        assert_eq!(digest, top, "{repo}: ctr has {digest}, upstream tag is {top}");
    }
    assert_blob_gets_redirected(&wharf).await;
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
