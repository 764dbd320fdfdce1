//! Crash safety: `wharf serve` is killed with SIGKILL at ten random moments while it syncs
//! a few hundred blobs, and started again each time. The store opens every time, nothing
//! half-written is ever reachable under the tree, `wharf verify` finds no damage, and the
//! next sync completes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sha2::Digest as _;
use tokio::process::Command;

use crate::harness::*;

/// An `oci:` upstream of `repos` repositories, each one image of `layers` random layers of
/// `size` bytes (no two blobs alike), tagged `v1`.
pub fn generate_upstream(dir: &Path, repos: usize, layers: usize, size: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for r in 0..repos {
        let repo = dir.join(format!("gen/r{r:03}"));
        let blobs = repo.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let hex = hex::encode(sha2::Sha256::digest(bytes));
            std::fs::write(blobs.join(&hex), bytes).unwrap();
            (format!("sha256:{hex}"), bytes.len())
        };
        let mut descs = Vec::new();
        for _ in 0..layers {
            let mut bytes = vec![0u8; size];
            rng.fill(&mut bytes[..]);
            let (digest, size) = put(&bytes);
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size
            }));
        }
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>() },
        });
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
            "layers": descs,
        });
        let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                "annotations": { "org.opencontainers.image.ref.name": "v1" },
            }],
        });
        std::fs::write(repo.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(repo.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

fn wharf_cmd(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.arg("--config").arg(config).env("RUST_LOG", "warn").env_remove("WHARF_CONFIG");
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Every file reachable under the tree is whole: pool files and layout blobs hash to their
/// names, every `index.json` parses and names blobs its layout has.
fn check_tree(tree: &Path) {
    let mut todo = vec![tree.to_owned()];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            files += 1;
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let parent = p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            if parent == "sha256" {
                let bytes = std::fs::read(&p).unwrap();
                assert_eq!(
                    hex::encode(sha2::Sha256::digest(&bytes)),
                    name,
                    "{} is not whole",
                    p.display()
                );
            } else if name == "index.json" {
                let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                for m in index["manifests"].as_array().unwrap() {
                    let hex = &m["digest"].as_str().unwrap()[7..];
                    assert!(
                        p.with_file_name("blobs/sha256").join(hex).is_file(),
                        "{} names a missing blob",
                        p.display()
                    );
                }
            } else {
                assert!(
                    !name.contains(".tmp") && !name.starts_with('.'),
                    "temporary file in the tree: {}",
                    p.display()
                );
            }
        }
    }
    assert!(files > 0 || !tree.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_ten_times_during_syncs_nothing_is_lost_or_corrupt() {
    const REPOS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    // Three new repositories (30 blobs) appear upstream before each round, so every round's
    // sync has work to be cut off in.
    let staged = dir.path().join("staged");
    generate_upstream(&staged, REPOS, 10, 64 << 10, 9);
    std::fs::create_dir_all(dir.path().join("up/gen")).unwrap();
    let write_config = |root: &Path, port: u16| {
        let path = root.join("wharf.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{}\"\n[upstream]\nurl = \"oci:{}\"\n[schedule]\nsync = \"{NEVER}\"\ncrawl = \"{NEVER}\"\n",
                root.join("data").display(),
                dir.path().join("up").display()
            ),
        )
        .unwrap();
        path
    };
    let port = free_port();
    let config = write_config(dir.path(), port);
    let tree = dir.path().join("data/tree");

    // How long syncing one round's repositories takes here, from a throwaway data dir.
    let probe = tempfile::tempdir().unwrap();
    let probe_config = write_config(probe.path(), free_port());
    for r in 0..3 {
        let name = format!("gen/r{r:03}");
        copy_dir(&staged.join(&name), &dir.path().join("up").join(&name));
    }
    let t0 = Instant::now();
    assert!(wharf_cmd(&probe_config).arg("sync").status().await.unwrap().success());
    let round_time = t0.elapsed().as_millis() as u64;

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut killed_mid_sync = 0;
    let mut rounds = Vec::new();
    for round in 0..10 {
        for r in round * 3..round * 3 + 3 {
            let name = format!("gen/r{r:03}");
            if !dir.path().join("up").join(&name).exists() {
                copy_dir(&staged.join(&name), &dir.path().join("up").join(&name));
            }
        }
        let mut server = wharf_cmd(&config).arg("serve").spawn().unwrap();
        wait_http(&format!("http://127.0.0.1:{port}/readyz"), &[200]).await;
        check_tree(&tree);
        let pool_before = pool_files(&tree);
        let mut sync = wharf_cmd(&config).arg("sync").spawn().unwrap();
        // Seven rounds are cut off once the sync has written a random number of new pool
        // files (whatever the machine's speed); three at a random time, which may fall in
        // the commit or the publication.
        let (mut finished, at) = if round < 7 {
            let k = rng.random_range(1..30);
            loop {
                if sync.try_wait().unwrap().is_some() {
                    break (true, format!("{k} files"));
                }
                if pool_files(&tree) >= pool_before + k {
                    break (false, format!("{k} files"));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else {
            // What earlier rounds left undone is still to do: the window grows with it.
            let delay = rng.random_range(5..round_time.max(10) * (round as u64 + 1) * 3 / 2);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            (false, format!("{delay} ms"))
        };
        finished |= sync.try_wait().unwrap().is_some();
        // SIGKILL: no handler runs, nothing is flushed.
        server.start_kill().unwrap();
        server.wait().await.unwrap();
        let _ = sync.wait().await;
        killed_mid_sync += usize::from(!finished);
        rounds.push((at, finished));
        check_tree(&tree);
    }
    eprintln!("crash rounds (killed at, sync finished): {rounds:?}; one round {round_time} ms");
    assert!(
        killed_mid_sync >= 5,
        "most kills should land during a sync: {rounds:?}, a round takes {round_time} ms"
    );

    // The store opens, verify finds nothing wrong, a sync completes, verify again.
    let out = wharf_cmd(&config).arg("verify").stdout(Stdio::piped()).output().await.unwrap();
    assert!(
        out.status.success(),
        "verify after the kills: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out =
        wharf_cmd(&config).args(["sync", "--json"]).stdout(Stdio::piped()).output().await.unwrap();
    assert!(out.status.success());
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["outcome"], "ok", "{run}");
    let out = wharf_cmd(&config).arg("verify").stdout(Stdio::piped()).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    check_tree(&tree);
    for r in 0..REPOS {
        let p = tree.join(format!("repositories/gen/r{r:03}/index.json"));
        assert!(p.is_file(), "r{r:03} was published");
    }
}

fn pool_files(tree: &Path) -> usize {
    std::fs::read_dir(tree.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
