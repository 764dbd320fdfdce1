//! Backup while serving, restore into a stopped instance, verify and repair the tree, and
//! opening a store written by the first released schema.

use std::os::unix::fs::MetadataExt;

use tokio::process::Command;
use wharf::store::Store;

use crate::harness::*;

fn wharf_cli(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.arg("--config").arg(config);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_serving_verify_repair_and_restore() {
    let reg = Registry::start().await;
    reg.push_standard().await;
    let wharf = Wharf::start(&reg.url()).await;
    wharf.sync().await;
    let config = wharf.config_path();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("wharf-backup.redb");

    // An online backup, through the running server.
    let out = run(wharf_cli(&config).arg("backup").arg(&backup)).await;
    assert!(out.contains("backed up"), "{out}");
    let mode = std::fs::metadata(&backup).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "a backup holds password hashes: owner-only");
    {
        let copy = Store::open(&backup).unwrap();
        assert_eq!(copy.generation().await.unwrap(), 1);
        assert_eq!(copy.catalog().await.unwrap().len(), 4);
    }

    // A healthy tree verifies.
    let out = run(wharf_cli(&config).arg("verify")).await;
    assert!(out.contains("0 corrupt, 0 missing"), "{out}");

    // Damage: one blob rewritten with the same size, one deleted.
    let mut blobs: Vec<_> = std::fs::read_dir(wharf.tree().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let (corrupt, gone) = (blobs.pop().unwrap(), blobs.pop().unwrap());
    let size = std::fs::metadata(&corrupt).unwrap().len() as usize;
    // Replace the file (new inode), so the layouts' links keep their good copy.
    std::fs::remove_file(&corrupt).unwrap();
    std::fs::write(&corrupt, vec![b'x'; size]).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let out = run_failing(wharf_cli(&config).arg("verify")).await;
    let name = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(out.contains(&format!("corrupt: sha256:{}", name(&corrupt))), "{out}");
    assert!(out.contains(&format!("missing: sha256:{}", name(&gone))), "{out}");
    assert!(out.contains("--repair"), "the error says what to do: {out}");

    // Repair fetches both again from upstream and relinks the layouts.
    let out = run(wharf_cli(&config).args(["verify", "--repair"])).await;
    assert!(out.contains("repaired:"), "{out}");
    run(wharf_cli(&config).arg("verify")).await;
    for p in [&corrupt, &gone] {
        let ino = std::fs::metadata(p).unwrap().ino();
        let links = walk_links(&wharf.tree().join("repositories"), &name(p));
        assert!(!links.is_empty() && links.iter().all(|l| *l == ino), "{p:?} relinked");
    }
    let dest = tempfile::tempdir().unwrap();
    run(skopeo().args([
        "copy",
        "--all",
        &format!("oci:{}:v1", wharf.tree().join("repositories/multi").display()),
        &format!("oci:{}:v1", dest.path().join("o").display()),
    ]))
    .await;

    // Restore: refused while the server runs; afterwards the store is the backup's.
    wharf
        .control(wharf::control::Request::MirrorAdd {
            name: "after-backup".into(),
            patch: wharf::model::MirrorPatch {
                urls: Some(vec!["http://m.example/".into()]),
                ..Default::default()
            },
        })
        .await;
    let err = run_failing(wharf_cli(&config).arg("restore").arg(&backup)).await;
    assert!(err.contains("wharf serve"), "{err}");
    let data = wharf.stop().await;
    let err = run_failing(wharf_cli(&config).arg("restore").arg(&config)).await;
    assert!(err.contains("restoring"), "a file that is no store is refused: {err}");
    run(wharf_cli(&config).arg("restore").arg(&backup)).await;
    let store_path = data.path().join("data/wharf.redb");
    assert!(data.path().join("data/wharf.redb.before-restore").exists());
    let restored = Store::open(&store_path).unwrap();
    assert!(restored.mirrors().await.unwrap().is_empty(), "the backup had no mirror");
    assert_eq!(restored.catalog().await.unwrap().len(), 4);
}

/// Inodes of the files named `name` under `dir` (layout links).
fn walk_links(dir: &std::path::Path, name: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            out.extend(walk_links(&e.path(), name));
        } else if e.file_name().to_string_lossy() == name {
            out.push(m.ino());
        }
    }
    out
}

/// `tests/fixtures/store-schema1.redb` was written by the first release (schema 1: a demo
/// sync, mirror `m1`, operator `olga` with password `first-release-pw-1`). Opening it
/// migrates it, and everything in it reads back.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_from_the_first_release_opens_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.redb");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-schema1.redb"),
        &path,
    )
    .unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), wharf::store::SCHEMA_VERSION);
    const { assert!(wharf::store::SCHEMA_VERSION > 1) };
    assert_eq!(store.generation().await.unwrap(), 1);
    let repos: Vec<String> = store.catalog().await.unwrap().iter().map(|r| r.to_string()).collect();
    assert_eq!(repos, ["demo/app", "demo/multi"]);
    let m = store.mirror(&"m1".parse().unwrap()).await.unwrap().unwrap();
    assert!(m.mirror.enabled && !m.mirror.pending);
    assert_eq!(m.mirror.country.as_deref(), Some("DE"));
    let (user, hash) = store.user_credentials(&"olga".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(user.role, wharf::model::Role::Operator);
    assert!(wharf::accounts::verify_password("first-release-pw-1".into(), hash).await.unwrap());
    assert_eq!(store.recent_runs(10).await.unwrap().len(), 1);
    // The tables schema 2 added work.
    assert!(store.audit_log(10).await.unwrap().is_empty());
    // Schema 4's tables hold what schema 1 recorded: every pool file, referenced; each
    // repository's content; manifests with their exact bytes.
    let records = store.pool_records().await.unwrap();
    assert!(!records.is_empty() && records.iter().all(|r| !r.released));
    assert_eq!(store.pool_facts().await.unwrap().iter().count(), records.len());
    let layouts = store.layouts(None).await.unwrap();
    assert_eq!(layouts.len(), 2);
    for l in &layouts {
        assert!(!l.content.is_empty());
        for t in &l.tags {
            match store.manifest_by_digest(&l.repo, &t.digest).await.unwrap() {
                wharf::store::Lookup::Found(hit) => {
                    assert_eq!(wharf::model::Digest::of(&hit.bytes), t.digest)
                }
                _ => panic!("{}@{} is not served", l.repo, t.digest),
            }
        }
    }
    // The reference counts came along: removing one repository releases what only it
    // reached, nothing the other one still reaches.
    let (gone, kept) = (&layouts[0], &layouts[1]);
    store
        .commit_sync(wharf::store::SyncCommit {
            removed_repos: vec![gone.repo.clone()],
            now: chrono::Utc::now(),
            grace: chrono::Duration::hours(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let released: std::collections::BTreeSet<_> = store
        .pool_records()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.released)
        .map(|r| r.digest)
        .collect();
    let only_gone: std::collections::BTreeSet<_> =
        gone.content.iter().filter(|d| !kept.content.contains(d)).cloned().collect();
    assert!(!only_gone.is_empty());
    assert_eq!(released, only_gone);
    drop(store);
    // Opening again is a no-op migration.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.generation().await.unwrap(), 2);
}
