//! OCI 1.1 referrers: SBOMs pushed with the fallback tag scheme to a real docker-registry
//! (which has no referrers API) are synced and listed by Wharf's referrers API, filtered
//! and paged; a Wharf syncing from that Wharf finds them through the API; bad input gets
//! clear errors and nothing half-published.

use wharf::control::{Reply, Request};
use wharf::model::RunOutcome;

use crate::harness::*;
use crate::signing_harness::*;

const SPDX: &str = "application/spdx+json";
const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
const VEX: &str = "application/vnd.openvex+json";

/// A registry with `app:v1` and three referrers of it behind the OCI fallback tag; the
/// subject's digest and size, and the referrers (digest, size, artifact type).
async fn registry_with_sboms()
-> (Registry, Layout, (String, usize), Vec<(String, usize, &'static str)>) {
    let reg = Registry::start().await;
    reg.push("single:v1", "app:v1", &[]).await;
    let subject = upstream_digest(&reg.url(), "app", "v1").await;
    let mut layout = Layout::default();
    let mut refs = Vec::new();
    for (i, t) in [SPDX, CYCLONEDX, VEX].into_iter().enumerate() {
        let body = format!("{{\"document\":{i}}}");
        let notes = serde_json::json!({ "org.opencontainers.image.created": "2026-12-01T00:00:00Z", "n": i.to_string() });
        let (d, s) =
            layout.artifact(&format!("r{i}"), t, body.as_bytes(), (&subject.0, subject.1), notes);
        refs.push((d, s, t));
    }
    layout.referrer_index("fallback", &refs);
    layout.push(&reg, "fallback", &format!("app:sha256-{}", &subject.0[7..])).await;
    (reg, layout, subject, refs)
}

async fn referrers(wharf: &Wharf, path: &str) -> (reqwest::header::HeaderMap, serde_json::Value) {
    let r = wharf.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    let headers = r.headers().clone();
    (headers, r.json().await.unwrap())
}

fn digests(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sboms_behind_the_fallback_tag_are_listed_by_the_referrers_api() {
    let (reg, mut layout, (subject, _), refs) = registry_with_sboms().await;
    let wharf = Wharf::start(&reg.url()).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    // The fallback tag is discovery, not content: it is not a tag here.
    let tags: serde_json::Value = wharf.get("/v2/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    let path = format!("/v2/app/referrers/{subject}");
    let (headers, index) = referrers(&wharf, &path).await;
    assert!(headers.get("oci-filters-applied").is_none());
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut want: Vec<String> = refs.iter().map(|r| r.0.clone()).collect();
    want.sort();
    assert_eq!(digests(&index), want);
    for m in index["manifests"].as_array().unwrap() {
        let (d, size, t) = refs.iter().find(|r| r.0 == m["digest"]).unwrap();
        assert_eq!(
            (m["mediaType"].as_str(), m["size"].as_u64(), m["artifactType"].as_str()),
            (Some(OCI_MANIFEST), Some(*size as u64), Some(*t))
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.created"], "2026-12-01T00:00:00Z");
        // Each is served by digest, byte for byte, its layer redirected like any blob.
        let r = get_oci_manifest(&wharf, "app", d).await;
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        assert_eq!(sha256(&bytes), *d);
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(wharf.get(&format!("/v2/app/blobs/{layer}")).await.status(), 307);
    }
    // The layout lists them untagged; mirrors carry them.
    let published: serde_json::Value = serde_json::from_slice(
        &std::fs::read(wharf.tree().join("repositories/app/index.json")).unwrap(),
    )
    .unwrap();
    let untagged: Vec<&str> = published["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("annotations").is_none())
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(untagged, want);

    // Filtered by artifact type, saying so.
    let (headers, spdx) =
        referrers(&wharf, &format!("{path}?artifactType={}", SPDX.replace('+', "%2B"))).await;
    assert_eq!(headers["oci-filters-applied"], "artifactType");
    assert_eq!(digests(&spdx), vec![refs[0].0.clone()]);
    let (_, none) = referrers(&wharf, &format!("{path}?artifactType=text/plain")).await;
    assert_eq!(digests(&none), Vec::<String>::new());
    // In pages, following Link.
    let mut seen = Vec::new();
    let mut next = Some(format!("{path}?n=2"));
    while let Some(p) = next.take() {
        let (headers, page) = referrers(&wharf, &p).await;
        assert!(digests(&page).len() <= 2);
        seen.extend(digests(&page));
        next = headers.get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with("; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
    }
    assert_eq!(seen, want);

    // A digest nothing refers to: an empty index, never 404.
    let (_, empty) = referrers(&wharf, &format!("/v2/app/referrers/{}", sha256(b"nothing"))).await;
    assert_eq!(empty["manifests"], serde_json::json!([]));
    // Bad input: clear errors.
    for (bad, status, code) in [
        ("/v2/app/referrers/sha256:abc".to_owned(), 400, "DIGEST_INVALID"),
        ("/v2/app/referrers/latest".to_owned(), 400, "DIGEST_INVALID"),
        (format!("/v2/nope/referrers/{subject}"), 404, "NAME_UNKNOWN"),
        (format!("/v2/UPPER/referrers/{subject}"), 400, "NAME_INVALID"),
        (format!("{path}?n=0"), 400, "PAGINATION_NUMBER_INVALID"),
        (format!("{path}?last=nope"), 400, "INVALID_QUERY"),
    ] {
        let r = wharf.get(&bad).await;
        assert_eq!(r.status(), status, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{bad}");
    }

    // The operator's tag view names them with the tag.
    let req = Request::UserAdd {
        name: "olga".into(),
        role: "operator".into(),
        password: Some("olga-password-123".into()),
    };
    assert!(matches!(wharf.control(req).await, Reply::User { .. }));
    let (mut olga, _) = crate::admin::logged_in(&wharf, "olga").await;
    let (status, _, page) = olga.get("/admin/repos/app").await;
    assert_eq!(status, 200);
    assert!(page.contains("SBOM (application/spdx+json)") && page.contains(VEX), "{page}");

    // One referrer removed upstream: gone at the next sync.
    layout.referrer_index("fallback2", &refs[1..]);
    layout.push(&reg, "fallback2", &format!("app:sha256-{}", &subject[7..])).await;
    delete_upstream(&reg, &format!("app@{}", refs[0].0)).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    let (_, index) = referrers(&wharf, &path).await;
    assert_eq!(digests(&index).len(), 2);
    assert!(!digests(&index).contains(&refs[0].0));
    let r = get_oci_manifest(&wharf, "app", &refs[0].0).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_referrers_index_naming_what_is_not_there_publishes_nothing_of_it() {
    let (reg, _layout, (subject, size), refs) = registry_with_sboms().await;
    // A second image whose fallback index lists one referrer deleted since, and one manifest
    // that names another subject.
    reg.push("single2:v2", "app:v2", &[]).await;
    reg.push("single:v1", "clean:v1", &[]).await;
    let (second, second_size) = upstream_digest(&reg.url(), "app", "v2").await;
    let mut layout = Layout::default();
    let (gone, gone_size) = layout.artifact(
        "gone",
        SPDX,
        b"{\"gone\":1}",
        (&second, second_size),
        serde_json::json!({}),
    );
    let (wrong, wrong_size) =
        layout.artifact("wrong", SPDX, b"{\"wrong\":1}", (&subject, size), serde_json::json!({}));
    layout.referrer_index(
        "idx",
        &[(gone.clone(), gone_size, SPDX), (wrong.clone(), wrong_size, SPDX)],
    );
    layout.push(&reg, "idx", &format!("app:sha256-{}", &second[7..])).await;
    delete_upstream(&reg, &format!("app@{gone}")).await;

    let wharf = Wharf::start(&reg.url()).await;
    let run = wharf.sync().await;
    assert_eq!(run.outcome, RunOutcome::Partial, "{run:#?}");
    let errors: Vec<String> = run.errors().collect();
    assert!(errors.iter().any(|e| e.contains(&format!("referrer {gone}"))), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains(&format!("{wrong} is listed as a referrer of {second}"))),
        "{errors:?}"
    );
    // Both tags are published; the first image's referrers too; nothing of the bad index.
    let tags: serde_json::Value = wharf.get("/v2/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    let (_, first) = referrers(&wharf, &format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(digests(&first).len(), refs.len());
    let (_, bad) = referrers(&wharf, &format!("/v2/app/referrers/{second}")).await;
    assert_eq!(bad["manifests"], serde_json::json!([]));
    for d in [&gone, &wrong] {
        let r = get_oci_manifest(&wharf, "app", d).await;
        assert_eq!(r.status(), 404, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wharf_finds_referrers_through_its_upstream_s_referrers_api() {
    let (reg, _layout, (subject, _), refs) = registry_with_sboms().await;
    let first = Wharf::start(&reg.url()).await;
    assert_eq!(first.sync().await.outcome, RunOutcome::Ok);
    // The second Wharf's upstream has no fallback tag, only the referrers API.
    let second = Wharf::start(&first.url("")).await;
    let run = second.sync().await;
    assert_eq!(run.outcome, RunOutcome::Ok, "{run:#?}");
    let (_, index) = referrers(&second, &format!("/v2/app/referrers/{subject}")).await;
    let mut want: Vec<String> = refs.iter().map(|r| r.0.clone()).collect();
    want.sort();
    assert_eq!(digests(&index), want);
    assert!(first.requests("referrers", "GET", "200").await >= 1);
    // Limited to one artifact type, the others are not synced.
    let mut setup = Setup::new(&first.url(""));
    setup.sync += &format!("referrer_artifact_types = [\"{CYCLONEDX}\"]\n");
    let third = Wharf::launch(setup).await;
    assert_eq!(third.sync().await.outcome, RunOutcome::Ok);
    let (_, index) = referrers(&third, &format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(digests(&index), vec![refs[1].0.clone()]);
    // Referrers off: none.
    let mut setup = Setup::new(&reg.url());
    setup.sync += "referrers = false\n";
    let off = Wharf::launch(setup).await;
    assert_eq!(off.sync().await.outcome, RunOutcome::Ok);
    let (_, index) = referrers(&off, &format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(index["manifests"], serde_json::json!([]));
}
