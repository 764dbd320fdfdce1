//! Sync behaviour against a real registry: incremental runs, tags added, moved and deleted,
//! corrupt upstream blobs, an unreachable upstream, Basic auth, `oci:` upstreams, and
//! collection of unreferenced blobs after the grace period.

use std::sync::Arc;

use wharf::clock::ManualClock;
use wharf::model::RunOutcome;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn incremental_sync_adds_moves_and_removes_tags() {
    let (reg, wharf) = synced_pair().await;
    assert_eq!(wharf.generation().await, 1);

    // Nothing new upstream: no blob downloaded, generation kept, marker untouched.
    let marker = std::fs::read(wharf.tree().join("wharf-generation.json")).unwrap();
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    assert_eq!(run.blobs_fetched(), 0);
    assert_eq!(run.repos.iter().map(|r| r.manifests_fetched).sum::<u32>(), 0);
    assert_eq!((run.generation_before, run.generation_after), (1, 1));
    assert_eq!(std::fs::read(wharf.tree().join("wharf-generation.json")).unwrap(), marker);

    // A new tag: appears after one sync with a new generation; only its own layer and
    // config are downloaded (the base layer is shared).
    reg.push("single2:v2", "single:v2", &[]).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    assert_eq!(run.generation_after, 2);
    assert_eq!(run.blobs_fetched(), 2, "{run:#?}");
    let single = run.repos.iter().find(|r| r.repo == "single").unwrap();
    assert_eq!((single.tags_added, single.tags_unchanged), (1, 1));
    let tags: serde_json::Value = wharf.get("/v2/single/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    let index =
        std::fs::read_to_string(wharf.tree().join("repositories/single/index.json")).unwrap();
    assert!(index.contains("\"v2\""), "{index}");

    // A moved tag: v1 now points where v2 does.
    reg.push("single2:v2", "single:v1", &[]).await;
    let run = wharf.sync().await;
    assert_eq!(run.generation_after, 3);
    assert_eq!(run.blobs_fetched(), 0, "the content was already in the pool");
    assert_eq!(run.repos.iter().find(|r| r.repo == "single").unwrap().tags_moved, 1);
    let r = wharf.get("/v2/single/manifests/v1").await;
    assert_eq!(
        r.headers()["docker-content-digest"],
        layout_digest(&fixtures().join("single2"), "v2").as_str()
    );

    // A deleted tag disappears (deleting the manifest removes both tags pointing to it);
    // its blobs stay in the pool through the grace period.
    crate::harness::run(
        skopeo()
            .args(["delete", "--tls-verify=false"])
            .arg(format!("docker://{}/single:v2", reg.host())),
    )
    .await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    assert_eq!(run.generation_after, 4);
    assert_eq!(
        wharf.get("/v2/single/tags/list").await.status(),
        404,
        "repository with no tags is gone"
    );
    assert!(!wharf.tree().join("repositories/single").exists());
    let v2 = layout_digest(&fixtures().join("single2"), "v2");
    assert!(wharf.tree().join("blobs/sha256").join(&v2[7..]).exists(), "kept for the grace period");
    let catalog: serde_json::Value = wharf.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["docker/multi", "docker/single", "multi"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_upstream_blob_is_never_published() {
    let reg = Registry::start().await;
    reg.push("single:v1", "single:v1", &[]).await;
    reg.push("single2:v2", "good:v2", &[]).await;
    // Alter the bytes of single's own layer in the registry's storage, same size.
    let fx = fixtures();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            fx.join("single/blobs/sha256").join(&layout_digest(&fx.join("single"), "v1")[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let own = m["layers"][1]["digest"].as_str().unwrap().to_owned();
    let data = reg.blob_data(&own);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let wharf = Wharf::start(&reg.url()).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Partial, "{run:#?}");
    let errors: Vec<String> = run.errors().collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("single") && e.contains("digest mismatch") && e.contains(&own)),
        "{errors:?}"
    );
    assert!(!wharf.tree().join("blobs/sha256").join(&own[7..]).exists(), "corrupt blob published");
    assert!(
        std::fs::read_dir(wharf.tree().join("../tmp")).unwrap().next().is_none(),
        "temp file left behind"
    );
    let r = wharf.get("/v2/single/manifests/v1").await;
    assert_eq!(r.status(), 404);
    // The good repository was published anyway.
    assert_eq!(wharf.get("/v2/good/manifests/v2").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_reports_and_keeps_serving() {
    let (mut reg, wharf) = synced_pair().await;
    reg.stop().await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Failed);
    let error = run.error.clone().unwrap();
    assert!(error.contains("cannot list repositories") && error.contains(&reg.host()), "{error}");
    assert_eq!(run.generation_after, 1);
    // Old content keeps serving to a real client.
    let out = tempfile::tempdir().unwrap();
    run_cmd_copy(&wharf, "multi:v1", &out.path().join("x")).await;
    assert_eq!(
        layout_digest(&out.path().join("x"), "v1"),
        layout_digest(&fixtures().join("multi"), "v1")
    );
}

async fn run_cmd_copy(wharf: &Wharf, image: &str, dest: &std::path::Path) {
    run(skopeo()
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{image}", wharf.host()))
        .arg(format!("oci:{}:v1", dest.display())))
    .await;
}

/// Without credentials a sync fails with `refusal` in its error; with `mirror`/`s3cret` (the
/// password read from a file) it succeeds. Returns the Wharf that synced.
async fn sync_needs_credentials(reg: &Registry, dir: &std::path::Path, refusal: &str) -> Wharf {
    let anon = Wharf::start(&reg.url()).await;
    let run = anon.sync().await;
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(run.error.as_deref().unwrap_or("").contains(refusal), "{run:#?}");

    std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
    let mut setup = Setup::new(&reg.url());
    let pw = dir.join("pw");
    setup.upstream += &format!("username = \"mirror\"\npassword_file = \"{}\"\n", pw.display());
    let wharf = Wharf::launch(setup).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    wharf
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_upstream() {
    let htpasswd = require("htpasswd");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    run(tokio::process::Command::new(htpasswd)
        .args(["-Bbc"])
        .arg(&file)
        .args(["mirror", "s3cret"]))
    .await;
    let reg = Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
        file.display()
    ))
    .await;
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", "mirror:s3cret"])
        .arg(format!("oci:{}/single:v1", fixtures().display()))
        .arg(format!("docker://{}/single:v1", reg.host())))
    .await;

    let wharf = sync_needs_credentials(&reg, dir.path(), "Basic auth").await;
    assert_eq!(wharf.get("/v2/single/manifests/v1").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_directory_upstream() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let wharf = Wharf::start(&format!("oci:{}", dir.path().display())).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    let catalog: serde_json::Value = wharf.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["demo/app", "demo/multi"]));
    let out = tempfile::tempdir().unwrap();
    crate::harness::run(
        skopeo()
            .args(["copy", "--src-tls-verify=false", "--override-arch", "arm64"])
            .arg(format!("docker://{}/demo/multi:latest", wharf.host()))
            .arg(format!("oci:{}:latest", out.path().join("arm").display())),
    )
    .await;
    let index = layout_digest(&dir.path().join("demo/multi"), "latest");
    let children = index_children(&dir.path().join("demo/multi"), &index);
    let arm = &children.iter().find(|(a, _)| a == "arm64").unwrap().1;
    assert_eq!(&layout_digest(&out.path().join("arm"), "latest"), arm);
}

/// A Wharf on a manual clock syncing the demo images from an `oci:` directory.
async fn demo_upstream_with_clock(grace: &str) -> (tempfile::TempDir, Arc<ManualClock>, Wharf) {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.storage = format!("gc_grace = \"{grace}\"\n");
    setup.clock = clock.clone();
    let wharf = Wharf::launch(setup).await;
    (dir, clock, wharf)
}

#[tokio::test(flavor = "multi_thread")]
async fn unreferenced_blobs_leave_the_pool_after_the_grace_period() {
    let (dir, clock, wharf) = demo_upstream_with_clock("2days").await;
    assert_eq!(wharf.sync().await.generation_after, 1);
    let app_manifest = layout_digest(&dir.path().join("demo/app"), "1.0");
    let pool_file = wharf.tree().join("blobs/sha256").join(&app_manifest[7..]);
    assert!(pool_file.exists());

    // An upstream that lists nothing at all is refused rather than mirrored.
    let moved = tempfile::tempdir().unwrap();
    std::fs::rename(dir.path().join("demo"), moved.path().join("demo")).unwrap();
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(run.error.as_deref().unwrap().contains("refusing to remove all 2"), "{run:#?}");
    assert_eq!(run.generation_after, 1);
    std::fs::rename(moved.path().join("demo"), dir.path().join("demo")).unwrap();

    // The tag disappears upstream: gone from the API at once, still in the pool.
    std::fs::remove_dir_all(dir.path().join("demo/app")).unwrap();
    let run = wharf.sync().await;
    assert_eq!((run.generation_after, run.blobs_collected), (2, 0));
    assert_eq!(wharf.get("/v2/demo/app/tags/list").await.status(), 404);
    assert!(pool_file.exists());

    clock.advance(chrono::Duration::days(1));
    let run = wharf.sync().await;
    assert_eq!(
        (run.generation_after, run.blobs_collected),
        (2, 0),
        "within the grace period nothing changes"
    );

    clock.advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));
    let run = wharf.sync().await;
    // The app manifest, its config and its own layer; the shared base layer stays.
    assert_eq!(run.blobs_collected, 3, "{run:#?}");
    assert_eq!(run.generation_after, 3, "collecting changes the tree");
    assert!(!pool_file.exists());
    let multi = layout_digest(&dir.path().join("demo/multi"), "latest");
    assert!(wharf.tree().join("blobs/sha256").join(&multi[7..]).exists());
    let pool_count = std::fs::read_dir(wharf.tree().join("blobs/sha256")).unwrap().count();
    assert_eq!(pool_count, 8, "index, 2 manifests, 2 configs, base + 2 arch layers");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_pagination_is_followed() {
    let reg = Registry::start().await;
    reg.push_standard().await;
    reg.push("single2:v2", "single:v2", &[]).await;
    reg.push("single2:v2", "single:v3", &[]).await;
    let mut setup = Setup::new(&reg.url());
    setup.sync += "page_size = 1\n";
    let wharf = Wharf::launch(setup).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    let catalog: serde_json::Value = wharf.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["docker/multi", "docker/single", "multi", "single"])
    );
    let tags: serde_json::Value = wharf.get("/v2/single/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2", "v3"]));
}

/// Several repositories are resolved at once; their blobs are still fetched one repository
/// at a time, so content they share is downloaded once, and each repository gets its tags.
#[tokio::test(flavor = "multi_thread")]
async fn repositories_resolved_together_download_shared_blobs_once() {
    let reg = Registry::start().await;
    let repos: Vec<String> = (1..=6).map(|i| format!("shared/r{i}")).collect();
    for r in &repos {
        reg.push("single:v1", &format!("{r}:v1"), &[]).await;
    }
    let layout = fixtures().join("single");
    let digest = layout_digest(&layout, "v1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    let blobs = 1 + manifest["layers"].as_array().unwrap().len() as u32;

    let wharf = Wharf::start(&reg.url()).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    assert_eq!(run.blobs_fetched(), blobs, "{run:#?}");
    for r in &repos {
        let got = wharf.get(&format!("/v2/{r}/manifests/v1")).await;
        assert_eq!(got.status(), 200, "{r}");
        assert_eq!(got.headers()["docker-content-digest"], digest.as_str(), "{r}");
    }
}
#[tokio::test(flavor = "multi_thread")]
async fn repository_globs_and_tag_regex_select_what_is_synced() {
    let reg = Registry::start().await;
    reg.push_standard().await;
    reg.push("single2:v2", "single:v2", &[]).await;
    let mut setup = Setup::new(&reg.url());
    setup.upstream += "repositories = [\"docker/*\", \"single\"]\ntags = \"v1\"\n";
    let wharf = Wharf::launch(setup).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    let catalog: serde_json::Value = wharf.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["docker/multi", "docker/single", "single"])
    );
    let tags: serde_json::Value = wharf.get("/v2/single/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_syncs_run_and_never_overlap() {
    let reg = Registry::start().await;
    reg.push("single:v1", "single:v1", &[]).await;
    let mut setup = Setup::new(&reg.url());
    setup.schedule = format!("sync = \"* * * * * *\"\ncrawl = \"{NEVER}\"\n");
    let wharf = Wharf::launch(setup).await;
    // The cron (every second) publishes without anyone asking.
    let mut served = false;
    for _ in 0..100 {
        if wharf.get("/v2/single/tags/list").await.status() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "the scheduled sync did not run");
    // Manual runs racing the cron are serialised: no two recorded runs overlap in time.
    let (a, b) = tokio::join!(wharf.sync(), wharf.sync());
    assert_ne!(a.id, b.id);
    let runs = wharf.runs().await;
    assert!(runs.len() >= 3, "{}", runs.len());
    for pair in runs.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert!(
            newer.started_at >= older.finished_at,
            "runs {} and {} overlap",
            older.id,
            newer.id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = crate::token::TokenIssuer::start(dir.path(), "mirror", "s3cret").await;
    let reg = Registry::start_with(&issuer.registry_yaml()).await;
    for (src, dest) in
        [("single:v1", "single:v1"), ("single2:v2", "single:v2"), ("single:v1", "other:v1")]
    {
        crate::harness::run(
            skopeo()
                .args(["copy", "--dest-tls-verify=false", "--dest-creds", "mirror:s3cret"])
                .arg(format!("oci:{}/{src}", fixtures().display()))
                .arg(format!("docker://{}/{dest}", reg.host())),
        )
        .await;
    }
    let pushes = issuer.requests().len();

    // The token endpoint refuses anonymous requests.
    let wharf = sync_needs_credentials(&reg, dir.path(), "token endpoint").await;
    let tags: serde_json::Value = wharf.get("/v2/single/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    // One token per scope, cached for the run: catalog + one per repository, not one per request.
    let mut scopes: Vec<String> = issuer.requests()[pushes..].to_vec();
    scopes.sort();
    assert_eq!(
        scopes,
        ["registry:catalog:*", "repository:other:pull", "repository:single:pull"],
        "token requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema1_manifests_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    // A layout whose tag is a Docker schema 1 manifest.
    let old = dir.path().join("legacy");
    std::fs::create_dir_all(old.join("blobs/sha256")).unwrap();
    let s1 = br#"{"schemaVersion":1,"name":"legacy","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let hex = crate::pull::sha256_hex(s1);
    std::fs::write(old.join("blobs/sha256").join(&hex), s1).unwrap();
    std::fs::write(old.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "digest": format!("sha256:{hex}"), "size": s1.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(old.join("index.json"), index.to_string()).unwrap();

    let wharf = Wharf::start(&format!("oci:{}", dir.path().display())).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "skipping is not a failure: {run:#?}");
    assert_eq!(wharf.get("/v2/legacy/tags/list").await.status(), 404);
    assert_eq!(wharf.get("/v2/demo/app/tags/list").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_upstream_failures_are_retried() {
    let mut reg = Registry::start().await;
    reg.push("single:v1", "single:v1", &[]).await;
    let config = reg.dir.path().join("config.yml");
    reg.stop().await;
    // The registry comes back while Wharf is still retrying (connection refused meanwhile).
    let mut setup = Setup::new(&reg.url());
    setup.sync = "retries = 6\n".into();
    let wharf = Wharf::launch(setup).await;
    let restart = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        tokio::process::Command::new(require("docker-registry"))
            .arg("serve")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    });
    let run = wharf.sync().await;
    let _registry = restart.await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    assert_eq!(wharf.get("/v2/single/manifests/v1").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_files_the_store_does_not_know_are_adopted_and_collected() {
    let (dir, clock, wharf) = demo_upstream_with_clock("1day").await;
    wharf.sync().await;
    // What a run killed mid-way leaves: a verified pool file no record mentions, and the
    // flag saying a sync was running. The next start finds it (a sync does not walk the pool).
    let bytes = b"left by an interrupted run";
    let orphan = wharf.tree().join("blobs/sha256").join(crate::pull::sha256_hex(bytes));
    std::fs::write(&orphan, bytes).unwrap();
    std::fs::write(wharf.tree().join("../sync-running"), b"").unwrap();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.storage = "gc_grace = \"1day\"\n".into();
    setup.clock = clock.clone();
    let wharf = wharf.restart(setup).await;
    let run = wharf.sync().await;
    assert_eq!((run.generation_after, run.blobs_collected), (1, 0));
    assert!(orphan.exists(), "adopted, not deleted at once");
    clock.advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));
    let run = wharf.sync().await;
    assert_eq!(run.blobs_collected, 1, "{run:#?}");
    assert!(!orphan.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_5xx_answers_are_retried_with_backoff() {
    let reg = Registry::start().await;
    reg.push("single:v1", "single:v1", &[]).await;
    // nginx in front of the real registry answers 503 until the flag file appears.
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("up");
    let proxy = crate::mirrors_harness::Nginx::failing_proxy(&flag, reg.port).await;
    let mut setup = Setup::new(proxy.url("").trim_end_matches('/'));
    setup.sync = "retries = 6\n".into();
    let wharf = Wharf::launch(setup).await;
    let flag_later = flag.clone();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        std::fs::write(flag_later, "ok").unwrap();
    });
    let run = wharf.sync().await;
    heal.await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    assert_eq!(wharf.get("/v2/single/manifests/v1").await.status(), 200);
    let statuses = proxy.statuses();
    assert!(statuses.iter().take_while(|s| **s == 503).count() >= 2, "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}
