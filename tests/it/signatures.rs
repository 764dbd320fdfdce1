//! Signatures travel with their images, checked by independent verifiers: GPG simple signing
//! made by `skopeo copy --sign-by`, synced from a lookaside store a real nginx serves and
//! verified by podman pulling through Wharf with nothing but a `policy.json`; cosign's tag
//! scheme made with openssl, fetched through Wharf (the payload from a mirror) and verified
//! with `openssl dgst -verify`; and the signed-only policy.

use std::path::Path;

use tokio::process::Command;
use wharf::control::{Reply, Request};
use wharf::model::{MirrorPatch, RunOutcome};

use crate::harness::*;
use crate::mirrors_harness::*;
use crate::signing_harness::*;

/// A `policy.json` that accepts images from `wharf_host` only when signed by `key`, the
/// signature naming the upstream's host (`remapIdentity`, as for any mirror).
fn policy(dir: &Path, wharf_host: &str, upstream_host: &str, key: &Path) -> std::path::PathBuf {
    let p = serde_json::json!({
        "default": [{ "type": "reject" }],
        "transports": { "docker": { wharf_host: [{
            "type": "signedBy",
            "keyType": "GPGKeys",
            "keyPath": key,
            "signedIdentity": { "type": "remapIdentity", "prefix": wharf_host, "signedPrefix": upstream_host },
        }]}},
    });
    let path = dir.join("policy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    path
}

/// `podman pull` through Wharf under `policy` into fresh storage; the output, and whether it
/// succeeded.
async fn podman_pull(image: &str, policy: &Path) -> (bool, String) {
    let root = tempfile::tempdir().unwrap();
    let out = podman(root.path())
        .args(["pull", "--tls-verify=false", "--signature-policy"])
        .arg(policy)
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// What the signatures API extension answers for `repo@digest`.
async fn signatures_of(wharf: &Wharf, repo: &str, digest: &str) -> serde_json::Value {
    let r = wharf.get(&format!("/extensions/v2/{repo}/signatures/{digest}")).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_signing_signatures_reach_podman_through_wharf() {
    let reg = Registry::start().await;
    let (key, other) = (Gpg::new("signer").await, Gpg::new("stranger").await);
    let lookaside = public_tempdir();
    key.push_signed(&reg, "single:v1", "signed:v1", lookaside.path(), &[]).await;
    reg.push("single2:v2", "plain:v2", &[]).await;
    let digest = layout_digest(&fixtures().join("single"), "v1");
    let rel = format!("signed@sha256={}/signature-1", &digest[7..]);
    let signature = std::fs::read(lookaside.path().join(&rel)).expect("skopeo wrote the signature");
    let store = Nginx::start(lookaside.path(), None, None).await;

    let mut setup = Setup::new(&reg.url());
    setup.upstream += &format!("lookaside = \"{}\"\n", store.url(""));
    let wharf = Wharf::launch(setup).await;
    let synced = wharf.sync().await;
    assert_eq!(synced.outcome, RunOutcome::Ok, "{synced:#?}");
    // In the tree, byte for byte, where a lookaside store has it; mirrors carry it.
    assert_eq!(std::fs::read(wharf.tree().join("sigstore").join(&rel)).unwrap(), signature);
    let set = std::fs::read_to_string(wharf.tree().join("content-sets/amd64.txt")).unwrap();
    assert!(set.contains(&format!("sigstore/{rel}\n")), "{set}");
    // Served: `/v2/` says so; the extension and the lookaside store have it.
    let base = wharf.get("/v2/").await;
    assert_eq!(base.headers()["x-registry-supports-signatures"], "1");
    let ext = signatures_of(&wharf, "signed", &digest).await;
    assert_eq!(ext["signatures"].as_array().unwrap().len(), 1, "{ext}");
    assert_eq!(
        (ext["signatures"][0]["schemaVersion"].as_u64(), ext["signatures"][0]["type"].as_str()),
        (Some(2), Some("atomic"))
    );
    let content: String = ext["signatures"][0]["content"].as_str().unwrap().into();
    use base64::Engine;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(content).unwrap(), signature);
    let none = signatures_of(&wharf, "plain", &digest).await;
    assert_eq!(none, serde_json::json!({ "signatures": [] }));
    let r = wharf.get(&format!("/sigstore/{rel}")).await;
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with(&sha256(&signature)[7..]), "{location}");
    assert_eq!(http().get(&location).send().await.unwrap().bytes().await.unwrap(), signature);
    assert_eq!(wharf.get(&format!("/sigstore/{}", rel.replace("-1", "-2"))).await.status(), 404);
    for bad in ["signed@sha256=abc/signature-1", "nope@sha256=00/signature-1", "x", "../etc/passwd"]
    {
        assert_eq!(wharf.get(&format!("/sigstore/{bad}")).await.status(), 404, "{bad}");
    }
    let bad = wharf.get("/extensions/v2/signed/signatures/sha256:short").await;
    assert_eq!(bad.status(), 400);
    let unknown = wharf.get(&format!("/extensions/v2/nope/signatures/{digest}")).await;
    assert_eq!(unknown.status(), 404);

    // podman verifies through Wharf with a policy.json and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let image = format!("{}/signed:v1", wharf.host());
    let trusts = policy(dir.path(), &wharf.host(), &reg.host(), &key.public_key);
    let (ok, out) = podman_pull(&image, &trusts).await;
    assert!(ok, "{out}");
    let strangers = tempfile::tempdir().unwrap();
    let wrong_key = policy(strangers.path(), &wharf.host(), &reg.host(), &other.public_key);
    let (ok, out) = podman_pull(&image, &wrong_key).await;
    assert!(!ok && out.contains("signature"), "{out}");
    let (ok, out) = podman_pull(&format!("{}/plain:v2", wharf.host()), &trusts).await;
    assert!(!ok && out.contains("signature"), "an unsigned image: {out}");

    // Wharf's /sigstore/ is a lookaside store a client can be configured with, against the
    // upstream itself (the redirect followed to the tree).
    let regd = tempfile::tempdir().unwrap();
    std::fs::write(
        regd.path().join("wharf.yaml"),
        format!("docker:\n  {}:\n    lookaside: {}\n", reg.host(), wharf.url("/sigstore")),
    )
    .unwrap();
    let direct = tempfile::tempdir().unwrap();
    let upstream_policy = policy(direct.path(), &reg.host(), &reg.host(), &key.public_key);
    let out_dir = tempfile::tempdir().unwrap();
    run(Command::new(require("skopeo"))
        .arg("--registries.d")
        .arg(regd.path())
        .arg("--policy")
        .arg(&upstream_policy)
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/signed:v1", reg.host()))
        .arg(format!("dir:{}", out_dir.path().display())))
    .await;

    // The signature is removed upstream: after the next sync Wharf has none, and podman
    // refuses the image.
    std::fs::remove_file(lookaside.path().join(&rel)).unwrap();
    let synced = wharf.sync().await;
    assert_eq!(synced.outcome, RunOutcome::Ok, "{synced:#?}");
    assert_eq!(synced.repos.iter().map(|r| r.attachments_changed).sum::<u32>(), 1);
    assert!(!wharf.tree().join("sigstore").join(&rel).exists());
    let ext = signatures_of(&wharf, "signed", &digest).await;
    assert_eq!(ext, serde_json::json!({ "signatures": [] }));
    let (ok, out) = podman_pull(&image, &trusts).await;
    assert!(!ok && out.contains("signature"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookaside_serving_garbage_or_huge_files_changes_nothing() {
    let reg = Registry::start().await;
    let key = Gpg::new("signer").await;
    let lookaside = public_tempdir();
    key.push_signed(&reg, "single:v1", "signed:v1", lookaside.path(), &[]).await;
    reg.push("single2:v2", "other:v2", &[]).await;
    let (signed, other) = (
        layout_digest(&fixtures().join("single"), "v1"),
        layout_digest(&fixtures().join("single2"), "v2"),
    );
    let rel = format!("signed@sha256={}/signature-1", &signed[7..]);
    let good = std::fs::read(lookaside.path().join(&rel)).unwrap();
    // `other` gets a 5 MB "signature".
    let huge = lookaside.path().join(format!("other@sha256={}", &other[7..]));
    std::fs::create_dir_all(&huge).unwrap();
    std::fs::write(huge.join("signature-1"), vec![0xa3; 5 << 20]).unwrap();
    let store = Nginx::start(lookaside.path(), None, None).await;
    let mut setup = Setup::new(&reg.url());
    setup.upstream += &format!("lookaside = \"{}\"\n", store.url(""));
    let wharf = Wharf::launch(setup).await;
    let synced = wharf.sync().await;
    // The images are published; the huge file is not, and the run says why.
    let errors: Vec<String> = synced.errors().collect();
    assert!(errors.iter().any(|e| e.contains("larger than 65536 bytes")), "{errors:?}");
    assert_eq!(wharf.get("/v2/other/manifests/v2").await.status(), 200);
    assert!(!wharf.tree().join(format!("sigstore/other@sha256={}", &other[7..])).exists());
    assert!(wharf.tree().join("sigstore").join(&rel).exists());

    // The good signature turns into garbage upstream: the one Wharf has stays.
    std::fs::write(lookaside.path().join(&rel), b"<html>not a signature</html>").unwrap();
    let synced = wharf.sync().await;
    let errors: Vec<String> = synced.errors().collect();
    assert!(errors.iter().any(|e| e.contains("not a signature")), "{errors:?}");
    assert_eq!(std::fs::read(wharf.tree().join("sigstore").join(&rel)).unwrap(), good);
    assert_eq!(wharf.get(&format!("/sigstore/{rel}")).await.status(), 307);

    // A damaged signature file is found by verify and put back from the lookaside store.
    std::fs::write(lookaside.path().join(&rel), &good).unwrap();
    let pool = wharf.tree().join("blobs/sha256").join(&sha256(&good)[7..]);
    std::fs::remove_file(&pool).unwrap();
    std::fs::write(&pool, vec![0u8; good.len()]).unwrap();
    // Meanwhile the signatures API leaves the damaged file out, never a 5xx.
    assert_eq!(
        signatures_of(&wharf, "signed", &signed).await,
        serde_json::json!({ "signatures": [] })
    );
    let reply = wharf.control(Request::Verify { repair: true }).await;
    let Reply::Verified(report) = reply else { panic!("{reply:?}") };
    assert_eq!(report.repaired, vec![sha256(&good)], "{report:?}");
    assert_eq!(std::fs::read(wharf.tree().join("sigstore").join(&rel)).unwrap(), good);
    assert_eq!(
        signatures_of(&wharf, "signed", &signed).await["signatures"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cosign_signatures_come_through_wharf_and_verify_with_openssl() {
    let reg = Registry::start().await;
    reg.push("single:v1", "app:v1", &[]).await;
    let (digest, size) = upstream_digest(&reg.url(), "app", "v1").await;
    let key = EcKey::new().await;
    let payload = cosign_payload(&format!("{}/app", reg.host()), &digest);
    let der = key.sign(&payload).await;
    let mut layout = Layout::default();
    let sig_tag = format!("sha256-{}.sig", &digest[7..]);
    let (sig_digest, _) = layout.cosign_signature("sig", &payload, &der);
    layout.push(&reg, "sig", &format!("app:{sig_tag}")).await;
    // An attestation by cosign's tag scheme, and a signature of something the repository
    // does not have (not synced).
    layout.artifact(
        "att",
        "application/vnd.dsse.envelope.v1+json",
        b"{\"payloadType\":\"x\"}",
        (&digest, size),
        serde_json::json!({}),
    );
    layout.push(&reg, "att", &format!("app:sha256-{}.att", &digest[7..])).await;
    let stray = sha256(b"not in the repository");
    layout.push(&reg, "sig", &format!("app:sha256-{}.sig", &stray[7..])).await;

    let mut setup = Setup::new(&reg.url());
    setup.extra = "[crawl]\nrequest_timeout = \"2s\"\nnew_blobs = 1000\ndownloads = 1000\n".into();
    let wharf = Wharf::launch(setup).await;
    let synced = wharf.sync().await;
    assert_eq!(synced.outcome, RunOutcome::Ok, "{synced:#?}");
    let tags: serde_json::Value = wharf.get("/v2/app/tags/list").await.json().await.unwrap();
    let att_tag = format!("sha256-{}.att", &digest[7..]);
    assert_eq!(tags["tags"], serde_json::json!([att_tag, sig_tag, "v1"]));

    // A mirror holds the tree; the payload comes from it.
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let mirror = Nginx::start(copy.path(), None, None).await;
    let patch = MirrorPatch { urls: Some(vec![mirror.url("t/")]), ..MirrorPatch::default() };
    let reply = wharf.control(Request::MirrorAdd { name: "m".into(), patch }).await;
    assert!(matches!(reply, Reply::Mirror(_)), "{reply:?}");
    let report = wharf.crawl().await;
    assert_eq!(report.results[0].credited, Some(wharf.generation().await), "{report:?}");

    let r = get_oci_manifest(&wharf, "app", &sig_tag).await;
    assert_eq!(r.headers()["docker-content-digest"], sig_digest.as_str());
    let manifest: serde_json::Value = r.json().await.unwrap();
    let layer = &manifest["layers"][0];
    let r = wharf.get(&format!("/v2/app/blobs/{}", layer["digest"].as_str().unwrap())).await;
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&mirror.url("t/")), "{location}");
    let fetched = http().get(&location).send().await.unwrap().bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload"), &fetched).unwrap();
    use base64::Engine;
    let sig = layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap();
    std::fs::write(
        dir.path().join("sig.der"),
        base64::engine::general_purpose::STANDARD.decode(sig).unwrap(),
    )
    .unwrap();
    let verified = run(Command::new(require("openssl"))
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key.public_key)
        .arg("-signature")
        .arg(dir.path().join("sig.der"))
        .arg(dir.path().join("payload")))
    .await;
    assert_eq!(verified.trim(), "Verified OK");
    assert!(mirror.requests().iter().any(|r| r.contains(&layer["digest"].as_str().unwrap()[7..])));

    // The registry page and the admin's show the signature with its tag, not as a tag.
    let page = wharf.get("/r/app").await.text().await.unwrap();
    assert!(page.contains("cosign signature") && page.contains("attestation"), "{page}");
    assert!(!page.contains(&format!("<td>{sig_tag}</td>")), "{page}");

    // Removed upstream: gone at the next sync.
    delete_upstream(&reg, &format!("app:{sig_tag}")).await;
    let synced = wharf.sync().await;
    assert_eq!(synced.outcome, RunOutcome::Ok, "{synced:#?}");
    let tags: serde_json::Value = wharf.get("/v2/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!([att_tag, "v1"]));
    assert_eq!(wharf.get(&format!("/v2/app/manifests/{sig_tag}")).await.status(), 404);
}

/// A tag of the policy test: name, fixture image, how it is pushed, signed by, signed as.
type Case<'a> = (&'a str, &'a str, &'a [&'a str], Option<&'a EcKey>, String);

#[tokio::test(flavor = "multi_thread")]
async fn only_tags_with_a_verified_signature_are_published_under_the_policy() {
    let reg = Registry::start().await;
    let (trusted, stranger) = (EcKey::new().await, EcKey::new().await);
    let gpg = Gpg::new("signer").await;
    let lookaside = public_tempdir();
    let mut layout = Layout::default();
    let id = format!("{}/app", reg.host());
    // (tag, image, how it is pushed, signed by, signed as): each a different digest.
    let cases: [Case; 4] = [
        ("signed", "single:v1", &[], Some(&trusted), id.clone()),
        ("other-key", "single2:v2", &[], Some(&stranger), id.clone()),
        (
            "wrong-identity",
            "multi:v1",
            &["--all"],
            Some(&trusted),
            format!("{}/elsewhere", reg.host()),
        ),
        ("unsigned", "single2:v2", &["--format", "v2s2"], None, id.clone()),
    ];
    for (tag, image, how, signer, identity) in &cases {
        reg.push(image, &format!("app:{tag}"), how).await;
        let Some(signer) = signer else { continue };
        let (digest, _) = upstream_digest(&reg.url(), "app", tag).await;
        let payload = cosign_payload(identity, &digest);
        let der = signer.sign(&payload).await;
        layout.cosign_signature(tag, &payload, &der);
        layout.push(&reg, tag, &format!("app:sha256-{}.sig", &digest[7..])).await;
    }
    // A simple-signing signature counts as well (the docker schema 2 copy of single:v1).
    gpg.push_signed(&reg, "single:v1", "app:gpg", lookaside.path(), &["--format", "v2s2"]).await;
    let store = Nginx::start(lookaside.path(), None, None).await;

    let mut setup = Setup::new(&reg.url());
    setup.upstream += &format!("lookaside = \"{}\"\n", store.url(""));
    setup.sync += &format!(
        "[sync.policy]\nrequire_signature = true\nkeys = [\"{}\", \"{}\"]\n",
        trusted.public_key.display(),
        gpg.public_key.display()
    );
    let wharf = Wharf::launch(setup).await;
    let synced = wharf.sync().await;
    // (The run's one repository had tags refused: a run where every repository has an error
    // counts as failed.)
    assert_eq!(synced.outcome, RunOutcome::Failed, "{synced:#?}");
    let ordinary = |tags: &serde_json::Value| -> Vec<String> {
        tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .filter(|t| !t.starts_with("sha256-"))
            .collect()
    };
    let tags: serde_json::Value = wharf.get("/v2/app/tags/list").await.json().await.unwrap();
    assert_eq!(ordinary(&tags), ["gpg", "signed"]);
    let errors: Vec<String> = synced.errors().collect();
    for (tag, why) in [
        ("other-key", "does not verify"),
        ("wrong-identity", "elsewhere"),
        ("unsigned", "no signature found"),
    ] {
        assert!(
            errors.iter().any(|e| e.contains(&format!("{tag}: not published")) && e.contains(why)),
            "{tag}: {errors:?}"
        );
    }
    // Nothing of a refused tag is published, its signature neither.
    let (refused, _) = upstream_digest(&reg.url(), "app", "other-key").await;
    assert_eq!(wharf.get(&format!("/v2/app/manifests/{refused}")).await.status(), 404);
    assert!(!ordinary(&tags).iter().any(|t| t.contains(&refused[7..])));
    let all: Vec<&str> =
        tags["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(!all.iter().any(|t| t.contains(&refused[7..])), "{all:?}");

    // A signed tag moved upstream to an unsigned image keeps its digest; the run says why.
    let (before, _) = upstream_digest(&wharf.url(""), "app", "signed").await;
    reg.push("single2:v2", "app:signed", &[]).await;
    let synced = wharf.sync().await;
    let errors: Vec<String> = synced.errors().collect();
    assert!(errors.iter().any(|e| e.contains("app: signed: not published")), "{errors:?}");
    assert_eq!(upstream_digest(&wharf.url(""), "app", "signed").await.0, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_that_does_not_parse_stops_check_config_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cosign.pub");
    std::fs::write(&key, "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
        .unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[storage]\ndata_dir = \"{}\"\n[sync.policy]\nrequire_signature = true\nkeys = [\"{}\"]\n",
            dir.path().join("data").display(),
            key.display()
        ),
    )
    .unwrap();
    let check = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
        c.arg("--config").arg(&config).arg("check-config").env_remove("WHARF_CONFIG");
        c
    };
    let err = run_failing(&mut check()).await;
    assert!(err.contains("sync.policy.keys") && err.contains("cosign.pub"), "{err}");
    // A real key passes.
    let good = EcKey::new().await;
    std::fs::copy(&good.public_key, &key).unwrap();
    let ok = run(&mut check()).await;
    assert!(ok.contains("configuration ok"), "{ok}");
}
