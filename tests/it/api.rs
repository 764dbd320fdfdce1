//! The pull API's protocol details and its answers to bad input: the right error code each
//! time, and nothing written.

use crate::harness::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A GET written by hand, so the path reaches the server exactly as given.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["docker-distribution-api-version"], "registry/2.0");
    let body: serde_json::Value =
        r.json().await.unwrap_or_else(|e| panic!("not JSON ({status}): {e}"));
    (status, body["errors"][0]["code"].as_str().unwrap_or_default().to_owned())
}

/// Everything under the data dir, with sizes and mtimes: proof that nothing was written.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path().display().to_string(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_headers_negotiation_and_pagination() {
    let (_reg, wharf) = synced_pair().await;
    let fx = fixtures();
    let index = layout_digest(&fx.join("multi"), "v1");
    let amd64 = index_children(&fx.join("multi"), &index)
        .into_iter()
        .find(|(a, _)| a == "amd64")
        .unwrap()
        .1;
    let c = http();
    let url = wharf.url("/v2/multi/manifests/v1");

    let r = c.get(wharf.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-distribution-api-version"], "registry/2.0");
    assert_eq!(r.text().await.unwrap(), "{}");

    // GET with everything accepted: the index's exact bytes.
    let r =
        c.get(&url).header("Accept", format!("{OCI_INDEX}, {OCI_MANIFEST}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert_eq!(r.headers()["docker-content-digest"], index.as_str());
    assert_eq!(r.headers()["etag"], format!("\"{index}\"").as_str());
    let len: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), len);
    assert_eq!(
        body.as_ref(),
        std::fs::read(fx.join("multi/blobs/sha256").join(&index[7..])).unwrap()
    );

    // HEAD: same headers, no body.
    let r = c.head(&url).header("Accept", OCI_INDEX).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), len.to_string());
    assert_eq!(r.headers()["docker-content-digest"], index.as_str());
    assert_eq!(r.headers()["content-type"], OCI_INDEX, "Docker skips its GET only with the type");
    assert!(r.bytes().await.unwrap().is_empty());

    // If-None-Match -> 304.
    let r = c
        .get(&url)
        .header("Accept", OCI_INDEX)
        .header("If-None-Match", format!("\"{index}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Several Accept lines are all read; an index by tag without an index type accepted is
    // answered with the linux/amd64 child.
    let r = c
        .get(&url)
        .header("Accept", DOCKER_MANIFEST)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], amd64.as_str());
    assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
    // ... but not by digest, and not when the child's type is not accepted either.
    let r = c
        .get(wharf.url(&format!("/v2/multi/manifests/{index}")))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "MANIFEST_UNKNOWN".into()));
    let r = c.get(&url).header("Accept", DOCKER_MANIFEST).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "MANIFEST_UNKNOWN".into()));
    // A Docker manifest list asked for with only v2s2 accepted: its amd64 child.
    let r = c
        .get(wharf.url("/v2/docker/multi/manifests/v1"))
        .header("Accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], DOCKER_MANIFEST);
    let r = c
        .get(wharf.url("/v2/docker/multi/manifests/v1"))
        .header("Accept", DOCKER_LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], DOCKER_LIST);

    // Children by digest; a digest from another repository is unknown here.
    let r = c.get(wharf.url(&format!("/v2/multi/manifests/{amd64}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(wharf.url(&format!("/v2/single/manifests/{amd64}"))).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "MANIFEST_UNKNOWN".into()));

    // Blobs: GET redirects to the tree, HEAD answers locally.
    let single: serde_json::Value =
        c.get(wharf.url("/v2/single/manifests/v1")).send().await.unwrap().json().await.unwrap();
    let layer = single["layers"][1]["digest"].as_str().unwrap();
    let size = single["layers"][1]["size"].as_u64().unwrap();
    let r = c.get(wharf.url(&format!("/v2/single/blobs/{layer}"))).send().await.unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        wharf.url(&format!("/tree/blobs/sha256/{}", &layer[7..])).as_str()
    );
    assert_eq!(r.headers()["docker-content-digest"], layer);
    let r = c.head(wharf.url(&format!("/v2/single/blobs/{layer}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), size.to_string());
    assert_eq!(r.headers()["docker-content-digest"], layer);
    // A blob of another repository is unknown here.
    let multi_layer = {
        let m: serde_json::Value = c
            .get(wharf.url(&format!("/v2/multi/manifests/{amd64}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        m["layers"][1]["digest"].as_str().unwrap().to_owned()
    };
    let r = c.get(wharf.url(&format!("/v2/single/blobs/{multi_layer}"))).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "BLOB_UNKNOWN".into()));

    // Pagination with n/last and Link.
    let r = c.get(wharf.url("/v2/_catalog?n=2")).send().await.unwrap();
    assert_eq!(r.headers()["link"], "</v2/_catalog?last=docker/single&n=2>; rel=\"next\"");
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["repositories"], serde_json::json!(["docker/multi", "docker/single"]));
    let r = c.get(wharf.url("/v2/_catalog?n=2&last=docker/single")).send().await.unwrap();
    assert!(r.headers().get("link").is_none());
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["repositories"], serde_json::json!(["multi", "single"]));
    let tags: serde_json::Value =
        c.get(wharf.url("/v2/multi/tags/list?n=5")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tags, serde_json::json!({"name": "multi", "tags": ["v1"]}));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_error_and_writes_nothing() {
    let (_reg, wharf) = synced_pair().await;
    let data = wharf.tree().parent().unwrap().to_owned();
    let before = snapshot(&data);
    let generation = wharf.generation().await;
    let c = http();
    // "METHOD PATH STATUS CODE", with {long} and {digest} filled in.
    let cases = [
        "GET /v2/..%2fx/manifests/v1 400 NAME_INVALID",
        "GET /v2/Multi/tags/list 400 NAME_INVALID",
        "GET /v2/{long}/tags/list 400 NAME_INVALID",
        "GET /v2/multi/manifests/.bad 400 TAG_INVALID",
        "GET /v2/multi/manifests/sha256:abc 400 DIGEST_INVALID",
        "GET /v2/multi/blobs/sha256:XYZ 400 DIGEST_INVALID",
        "GET /v2/multi/blobs/md5:0123 400 DIGEST_INVALID",
        "GET /v2/multi/blobs/sha512:{digest}{digest} 400 DIGEST_INVALID",
        "GET /v2/nope/tags/list 404 NAME_UNKNOWN",
        "GET /v2/nope/manifests/v1 404 NAME_UNKNOWN",
        "GET /v2/nope/blobs/sha256:{digest} 404 NAME_UNKNOWN",
        "GET /v2/multi/manifests/v9 404 MANIFEST_UNKNOWN",
        "GET /v2/multi/blobs/sha256:{digest} 404 BLOB_UNKNOWN",
        "GET /v2/_catalog?n=-1 400 PAGINATION_NUMBER_INVALID",
        "GET /v2/multi/tags/list?n=many 400 PAGINATION_NUMBER_INVALID",
        "PUT /v2/multi/manifests/v1 405 UNSUPPORTED",
        "DELETE /v2/multi/manifests/v1 405 UNSUPPORTED",
        "DELETE /v2/multi/blobs/sha256:{digest} 405 UNSUPPORTED",
        "POST /v2/multi/blobs/uploads/ 405 UNSUPPORTED",
        "PATCH /v2/multi/blobs/uploads/abc 405 UNSUPPORTED",
        "PUT /v2/multi/blobs/uploads/abc?digest=x 405 UNSUPPORTED",
    ];
    for case in cases {
        let case = case.replace("{long}", &"a".repeat(256)).replace("{digest}", &"0".repeat(64));
        let [method, path, status, code] = case.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{case}")
        };
        let method: reqwest::Method = method.parse().unwrap();
        let r = c.request(method.clone(), wharf.url(path)).send().await.unwrap();
        assert_eq!(r.url().path(), path.split('?').next().unwrap(), "the client rewrote the path");
        let expected = (status.parse().unwrap(), code.to_owned());
        assert_eq!(error_code(r).await, expected, "{method} {path}");
    }
    // A body is refused before it is read (distribution's SIZE_INVALID), whatever the method.
    for method in [reqwest::Method::PUT, reqwest::Method::GET] {
        let r = c.request(method, wharf.url("/v2/multi/manifests/v1")).body(vec![b'{'; 64 << 10]);
        assert_eq!(error_code(r.send().await.unwrap()).await, (413, "SIZE_INVALID".to_owned()));
    }
    // Dot segments sent as-is (HTTP clients normalise them away, so write the request by hand).
    for path in ["/v2/../x/tags/list", "/v2/a/../../tree/blobs/sha256/x/manifests/v1"] {
        let head = raw_get(wharf.addr, path).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
        assert!(head.contains("NAME_INVALID"), "{path}: {head}");
    }
    for path in ["/tree/../wharf.redb", "/tree/blobs/../../wharf.redb", "/tree/%2e%2e/wharf.redb"] {
        let head = raw_get(wharf.addr, path).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
    }

    // A real client's push is refused too.
    let out = run_failing(
        skopeo()
            .args(["copy", "--dest-tls-verify=false", "--retry-times", "0"])
            .arg(format!("oci:{}/single:v1", fixtures().display()))
            .arg(format!("docker://{}/pushed:v1", wharf.host())),
    )
    .await;
    assert!(out.contains("405") || out.to_lowercase().contains("unsupported"), "{out}");

    assert_eq!(snapshot(&data), before, "a bad request changed the data dir");
    assert_eq!(wharf.generation().await, generation);
}
