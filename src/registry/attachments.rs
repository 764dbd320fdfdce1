//! What the registry serves of attachments: the OCI 1.1 referrers API
//! (`/v2/<name>/referrers/<digest>`, one store read a page), the signatures API extension
//! containers/image uses when `/v2/` says `X-Registry-Supports-Signatures: 1`
//! (`/extensions/v2/<name>/signatures/<digest>`), and the lookaside store
//! (`/sigstore/<name>@sha256=<hex>/signature-<n>`, redirected like a blob).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::Deserialize;

use crate::model::attachment::MAX_SIGNATURE_SIZE;
use crate::model::{Digest, LookasidePath, RepoName, media_type};
use crate::store::Lookup;

use super::{RegistryError, RegistryState};

/// Referrers on one page at most, and their descriptors' bytes (the index stays well under
/// the 4 MiB clients read of a manifest).
const PAGE: usize = 1000;
const PAGE_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
struct ReferrersQuery {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    last: Option<String>,
    n: Option<String>,
}

/// `GET /v2/<name>/referrers/<digest>`: an image index of every manifest in the repository
/// whose subject is `digest` (an empty one when there is none), `?artifactType=` filtered,
/// `Link` to the next page when there is one.
pub(super) async fn referrers(
    req: &HttpRequest,
    state: &RegistryState,
    name: RepoName,
    digest: Digest,
) -> Result<HttpResponse, RegistryError> {
    let q = web::Query::<ReferrersQuery>::from_query(req.query_string())
        .map_err(|e| RegistryError::BadQuery(e.to_string()))?;
    let artifact_type = q.artifact_type.clone().filter(|t| !t.is_empty());
    if artifact_type
        .as_ref()
        .is_some_and(|t| t.len() > 255 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(RegistryError::BadQuery("artifactType is not a media type".into()));
    }
    let last = match q.last.as_deref().filter(|l| !l.is_empty()) {
        Some(l) => Some(l.parse::<Digest>().map_err(|e| RegistryError::BadQuery(e.to_string()))?),
        None => None,
    };
    let n = match q.n.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| RegistryError::PaginationNumberInvalid(format!("n={n:?}")))?
            .min(PAGE),
        None => PAGE,
    };
    let page =
        state.store.referrers(&name, &digest, last, artifact_type.clone(), n, PAGE_BYTES).await?;
    let page = match page {
        Lookup::Found(p) => p,
        Lookup::NameUnknown | Lookup::Unknown => return Err(RegistryError::NameUnknown),
    };
    let mut body =
        format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":["#, media_type::OCI_INDEX)
            .into_bytes();
    for (i, d) in page.descriptors.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(d);
    }
    body.extend_from_slice(b"]}");
    let mut res = HttpResponse::Ok();
    res.content_type(media_type::OCI_INDEX);
    if let Some(t) = &artifact_type {
        res.insert_header(("OCI-Filters-Applied", "artifactType"));
        if let Some(next) = &page.next {
            let t: String = url::form_urlencoded::byte_serialize(t.as_bytes()).collect();
            link(
                &mut res,
                &format!("/v2/{name}/referrers/{digest}?last={next}&n={n}&artifactType={t}"),
            );
        }
    } else if let Some(next) = &page.next {
        link(&mut res, &format!("/v2/{name}/referrers/{digest}?last={next}&n={n}"));
    }
    Ok(res.body(body))
}

fn link(res: &mut actix_web::HttpResponseBuilder, target: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("<{target}>; rel=\"next\"")) {
        res.insert_header((header::LINK, v));
    }
}

/// `GET /extensions/v2/<name>/signatures/<digest>`: the manifest's simple-signing signatures
/// as containers/image reads them (`schemaVersion` 2, `type` atomic, `content` base64).
pub(super) async fn signatures_api(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    super::read_method(&req)?;
    let rest = req.path().strip_prefix("/extensions/v2/").unwrap_or_default();
    let (name, digest) = rest.rsplit_once("/signatures/").ok_or(RegistryError::NotFound)?;
    let (name, digest): (RepoName, Digest) = (name.parse()?, digest.parse()?);
    let sigs = match state.store.signatures(&name, &digest).await? {
        Lookup::Found(s) => s,
        Lookup::NameUnknown | Lookup::Unknown => return Err(RegistryError::NameUnknown),
    };
    let mut list = Vec::with_capacity(sigs.len());
    for (i, (sig, size)) in sigs.iter().enumerate() {
        // A damaged file is left out (and logged), never an error: clients verify what they
        // get, and `wharf verify` finds and repairs it.
        let Some(bytes) = read_signature(state.get_ref(), sig, *size).await else { continue };
        list.push(serde_json::json!({
            "schemaVersion": 2,
            "name": format!("{digest}@signature-{}", i + 1),
            "type": "atomic",
            "content": base64::engine::general_purpose::STANDARD.encode(bytes),
        }));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "signatures": list })))
}

/// A signature file from the tree's pool, if it is there with its recorded size and digest.
async fn read_signature(state: &RegistryState, digest: &Digest, size: u64) -> Option<Vec<u8>> {
    let path = state.tree_root.join("blobs/sha256").join(digest.hex());
    let on_disk = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
    let bytes = match on_disk {
        Some(n) if n == size && n <= MAX_SIGNATURE_SIZE => tokio::fs::read(&path).await.ok(),
        _ => None,
    };
    let ok = bytes.as_deref().is_some_and(|b| Digest::of(b) == *digest);
    if !ok {
        tracing::error!(signature = %digest, path = %path.display(), "signature file missing or damaged in the pool");
    }
    bytes.filter(|_| ok)
}

/// `GET /sigstore/<name>@sha256=<hex>/signature-<n>`: a lookaside store, each signature
/// redirected to a mirror that holds it (or Wharf's own tree) like a blob; 404 past the last
/// one, which is how clients know they have them all.
pub(super) async fn lookaside(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let head = super::read_method(&req)?;
    let rest = req.path().strip_prefix("/sigstore/").unwrap_or_default();
    let path: LookasidePath = rest.parse().map_err(|_| RegistryError::NotFound)?;
    let sigs = match state.store.signatures(&path.repo, &path.manifest).await? {
        Lookup::Found(s) => s,
        Lookup::NameUnknown | Lookup::Unknown => return Err(RegistryError::NotFound),
    };
    let (sig, _) = sigs.get(path.index as usize - 1).ok_or(RegistryError::NotFound)?.clone();
    super::redirect_blob(&req, &state, &path.repo, &sig, head).await
}
