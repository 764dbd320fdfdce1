//! The mirror tree Wharf writes: a verified pool, hardlinked OCI layouts, the marker.

use std::os::unix::fs::MetadataExt;

use crate::harness::*;
use crate::pull::sha256_hex;

#[tokio::test(flavor = "multi_thread")]
async fn tree_is_verified_hardlinked_and_usable() {
    let (_reg, wharf) = synced_pair().await;
    let tree = wharf.tree().to_owned();

    // Every pool file hashes to its name.
    let pool = tree.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&pool).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert_eq!(sha256_hex(&std::fs::read(e.path()).unwrap()), name);
        n += 1;
    }
    assert!(n >= 10, "pool has only {n} files");
    // World-readable whatever the umask: mirrors' rsync daemons run as other users.
    let any_blob = std::fs::read_dir(&pool).unwrap().next().unwrap().unwrap().path();
    for p in [any_blob, tree.join("repositories/docker/single/index.json")] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644, "{}", p.display());
    }
    for d in [
        "",
        "blobs",
        "blobs/sha256",
        "repositories/docker",
        "repositories/docker/single/blobs/sha256",
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tree.join(d)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o755, "{d}");
    }

    // The shared base layer is one inode in the pool and in both layouts.
    let fx = fixtures();
    let single = layout_digest(&fx.join("single"), "v1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fx.join("single/blobs/sha256").join(&single[7..])).unwrap(),
    )
    .unwrap();
    let base = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_owned();
    let ino = |p: std::path::PathBuf| {
        std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).ino()
    };
    let pool_ino = ino(pool.join(&base));
    for repo in ["multi", "single", "docker/single", "docker/multi"] {
        assert_eq!(
            ino(tree.join("repositories").join(repo).join("blobs/sha256").join(&base)),
            pool_ino,
            "{repo}"
        );
    }
    assert!(std::fs::metadata(pool.join(&base)).unwrap().nlink() >= 5);

    // Each layout is a valid OCI layout that skopeo reads.
    let out = tempfile::tempdir().unwrap();
    for (repo, tag, all) in [("single", "v1", false), ("multi", "v1", true)] {
        let dest = out.path().join(repo);
        let mut cmd = skopeo();
        cmd.arg("copy");
        if all {
            cmd.arg("--all");
        }
        run(cmd
            .arg(format!("oci:{}:{tag}", tree.join("repositories").join(repo).display()))
            .arg(format!("oci:{}:{tag}", dest.display())))
        .await;
        assert_eq!(layout_digest(&dest, tag), layout_digest(&fx.join(repo), tag));
    }
    let layout = std::fs::read_to_string(tree.join("repositories/single/oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);

    // The marker names the generation; /tree/ serves the tree with Range and no listing.
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.join("wharf-generation.json")).unwrap())
            .unwrap();
    assert_eq!(marker["generation"], 1);
    assert!(marker["published_at"].is_string());
    let r = http()
        .get(wharf.url(&format!("/tree/blobs/sha256/{base}")))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-length"], "10");
    let full = std::fs::read(pool.join(&base)).unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &full[10..20]);
    let r = wharf.get("/tree/wharf-generation.json").await;
    assert_eq!(r.status(), 200);
    // No listings. (Dot segments are tested with a raw request in api.rs.)
    for path in
        ["/tree/", "/tree/blobs/sha256/", "/tree/repositories/", "/tree/repositories/multi/"]
    {
        let r = wharf.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    // Temp files live outside the published tree.
    assert!(!tree.join("tmp").exists());
}
