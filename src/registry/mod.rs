//! The registry pull API (`/v2/...`) and the tree Wharf serves itself (`/tree/...`).
//! Handlers are thin: parse at the edge (`route`), one store call, map the result.
//! Architecture invariant: no request here opens a write transaction.
//! Imports `model`, `store`; never `admin`.

mod attachments;
mod cache;
mod client_config;
mod errors;
mod mirrors;
mod negotiate;
mod route;
mod stats;

use std::path::Path;
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::geo::{BlobLookup, GeoDb, RedirectCounters, Selector};
use crate::metrics::JobMetrics;
use crate::model::{Digest, Reference, RepoName};
use crate::store::{Lookup, ManifestHit, Store};

pub use errors::RegistryError;
use negotiate::{Accepted, Choice};
use route::V2Route;
pub use stats::RequestStats;

const API_VERSION: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");
const CONTENT_DIGEST: &str = "Docker-Content-Digest";
/// Distribution's cap on one page of `_catalog` / `tags/list`.
const MAX_PAGE: usize = 1000;

/// What the registry handlers share.
pub struct RegistryState {
    pub store: Store,
    /// Without a trailing slash.
    pub public_url: String,
    pub selector: Arc<Selector>,
    pub geo: Arc<GeoDb>,
    /// Redirects by tier and country; the app drains them into the store in batches.
    pub redirects: Arc<RedirectCounters>,
    /// Sync and crawl counters, for `/metrics`.
    pub jobs: Arc<JobMetrics>,
    /// The store file (its size is a metric).
    pub store_path: std::path::PathBuf,
    pub tree_root: std::path::PathBuf,
    /// Set when shutdown begins (`/readyz` answers 503).
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Manifests as served, by generation.
    pub manifests: cache::ManifestCache,
    /// Set once the selection state is loaded at start; until then `/readyz` and blob
    /// requests answer 503 (the listener answers from the first moment).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Simple-signing signatures are synced (`[upstream] lookaside`): `/v2/` says so, and
    /// containers/image reads them through the signatures API extension.
    pub signatures: bool,
}

impl RegistryState {
    /// The selection snapshot, once it is loaded.
    pub fn snapshot(&self) -> Result<arc_swap::Guard<Arc<crate::geo::Snapshot>>, RegistryError> {
        if self.ready.load(std::sync::atomic::Ordering::Acquire) {
            Ok(self.selector.snapshot())
        } else {
            Err(RegistryError::Starting)
        }
    }
}

/// Middleware: count every response by route kind, method and status (see [`RequestStats`]).
pub async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let kind = stats::kind_of(req.match_info().as_str());
    let stats = req.app_data::<web::Data<RequestStats>>().cloned();
    let method = req.method().clone();
    let res = next.call(req).await?;
    if let Some(stats) = stats {
        stats.record(kind, method.as_str(), res.status().as_u16());
    }
    Ok(res)
}

/// Facts read from the store at scrape time.
#[derive(Debug)]
struct StoreFacts {
    mirrors: Vec<(&'static str, i64)>,
    generation: i64,
    store_bytes: i64,
}

impl crate::metrics::Collector for StoreFacts {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{gauge, gauges};
        let mirrors = self.mirrors.iter().map(|(s, n)| ([("state", *s)], *n));
        gauges(&mut e, "wharf_mirrors", "Mirrors by state.", mirrors)?;
        gauge(&mut e, "wharf_generation", "The current tree generation.", self.generation)?;
        gauge(&mut e, "wharf_store_size_bytes", "Size of the store file.", self.store_bytes)
    }
}

/// `GET /metrics`: every name `wharf_...`, in the OpenMetrics text format (one registry:
/// `metrics::encode`).
async fn metrics(
    stats: web::Data<RequestStats>,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let mirrors = state.store.mirrors().await?;
    let by_state = crate::model::MirrorState::ALL
        .iter()
        .map(|s| (s.as_str(), mirrors.iter().filter(|m| m.state() == *s).count() as i64))
        .collect();
    let facts = StoreFacts {
        mirrors: by_state,
        generation: state.store.generation().await? as i64,
        store_bytes: std::fs::metadata(&state.store_path).map(|m| m.len() as i64).unwrap_or(0),
    };
    let text = crate::metrics::encode(vec![
        Box::new(stats.into_inner()),
        Box::new(state.redirects.clone()),
        Box::new(state.jobs.clone()),
        Box::new(facts),
    ]);
    Ok(HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(text))
}

/// `GET /readyz`: 200 when the store answers, the tree is in place and the server is not
/// shutting down; else 503 with the reason.
async fn readyz(state: web::Data<RegistryState>) -> HttpResponse {
    let problem = if state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        Some("shutting down".to_owned())
    } else if !state.ready.load(std::sync::atomic::Ordering::Acquire) {
        Some("starting: loading the selection state".to_owned())
    } else if let Err(e) = state.store.generation().await {
        Some(format!("store: {e}"))
    } else if !state.tree_root.is_dir() {
        Some(format!("tree {} is missing", state.tree_root.display()))
    } else {
        None
    };
    match problem {
        None => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Some(p) => {
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("{p}\n"))
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig, tree_dir: &Path) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().body("ok\n") }))
        .route("/readyz", web::get().to(readyz))
        .route("/explain", web::get().to(mirrors::explain))
        .route("/client-config/registries.conf", web::get().to(client_config::registries_conf))
        .route("/client-config/hosts.toml", web::get().to(client_config::hosts_toml))
        .service(web::scope("/metalink").default_service(web::to(mirrors::metalink)))
        .service(web::scope("/mirrorlist").default_service(web::to(mirrors::mirrorlist)))
        .service(
            web::scope("/v2")
                .wrap(DefaultHeaders::new().add(API_VERSION))
                .route("", web::route().to(base))
                .route("/", web::route().to(base))
                .default_service(web::to(dispatch)),
        )
        .service(
            web::scope("/extensions/v2")
                .wrap(DefaultHeaders::new().add(API_VERSION))
                .default_service(web::to(attachments::signatures_api)),
        )
        .service(web::scope("/sigstore").default_service(web::to(attachments::lookaside)))
        .service(
            // No listing (not enabled), Range and HEAD supported, `..` rejected by actix-files.
            actix_files::Files::new("/tree", tree_dir),
        );
}

/// For `fuzzing`: parse a `/v2/<rest>` path.
#[doc(hidden)]
pub fn parse_v2_route(rest: &str) -> bool {
    route::parse(rest).is_ok()
}

/// For `fuzzing`: negotiate every media type against these headers; a type the client
/// accepts is always served as it is.
#[doc(hidden)]
pub fn check_negotiation(headers: &actix_web::http::header::HeaderMap) {
    use crate::model::media_type::*;
    let accepted = Accepted::from_headers(headers);
    for mt in [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "text/plain"] {
        let choice = negotiate::choose(&accepted, mt, true, &[]);
        if accepted.accepts(mt) {
            assert_eq!(choice, Choice::Serve, "{mt}");
        }
        let _ = negotiate::refuse_unaccepted(&accepted, mt);
    }
}

fn read_method(req: &HttpRequest) -> Result<bool, RegistryError> {
    match *req.method() {
        Method::GET => Ok(false),
        Method::HEAD => Ok(true),
        _ => Err(RegistryError::Unsupported),
    }
}

async fn base(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    read_method(&req)?;
    let mut res = HttpResponse::Ok();
    if state.signatures {
        res.insert_header(("X-Registry-Supports-Signatures", "1"));
    }
    Ok(res.content_type("application/json").body("{}"))
}

async fn dispatch(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let rest = req.path().strip_prefix("/v2/").unwrap_or_default();
    let route = route::parse(rest);
    let head = read_method(&req)?;
    match route? {
        V2Route::Catalog => catalog(&req, &state).await,
        V2Route::Tags(name) => tags(&req, &state, name).await,
        V2Route::Manifest(name, reference) => manifest(&req, &state, name, reference).await,
        V2Route::Blob(name, digest) => redirect_blob(&req, &state, &name, &digest, head).await,
        V2Route::Referrers(name, digest) => {
            attachments::referrers(&req, &state, name, digest).await
        }
        V2Route::Upload => Err(RegistryError::Unsupported),
        V2Route::Unknown => Err(RegistryError::NotFound),
    }
}

fn found<T>(l: Lookup<T>, unknown: RegistryError) -> Result<T, RegistryError> {
    match l {
        Lookup::Found(t) => Ok(t),
        Lookup::NameUnknown => Err(RegistryError::NameUnknown),
        Lookup::Unknown => Err(unknown),
    }
}

async fn catalog(req: &HttpRequest, state: &RegistryState) -> Result<HttpResponse, RegistryError> {
    let names = state.store.catalog().await?.into_iter().map(String::from).collect();
    let (page, next) = paginate(names, req.query_string())?;
    Ok(paged_response(next, "/v2/_catalog", serde_json::json!({ "repositories": page })))
}

async fn tags(
    req: &HttpRequest,
    state: &RegistryState,
    name: RepoName,
) -> Result<HttpResponse, RegistryError> {
    let tags = state.store.tags(&name).await?.ok_or(RegistryError::NameUnknown)?;
    let (page, next) = paginate(tags.into_iter().map(String::from).collect(), req.query_string())?;
    let path = format!("/v2/{name}/tags/list");
    Ok(paged_response(next, &path, serde_json::json!({ "name": name.as_str(), "tags": page })))
}

async fn manifest(
    req: &HttpRequest,
    state: &RegistryState,
    name: RepoName,
    reference: Reference,
) -> Result<HttpResponse, RegistryError> {
    let accepted = Accepted::from_headers(req.headers());
    let hit = resolve_manifest(state, &name, &reference, &accepted).await?;
    Ok(manifest_response(req, &hit))
}

/// The manifest a request names, after Accept negotiation (see `negotiate`).
async fn resolve_manifest(
    state: &RegistryState,
    name: &RepoName,
    reference: &Reference,
    accepted: &Accepted,
) -> Result<Arc<ManifestHit>, RegistryError> {
    let unknown = || RegistryError::ManifestUnknown(format!("{name}:{reference}"));
    let generation = state.selector.snapshot().generation;
    let lookup =
        |r: Reference| async move { state.manifests.get(&state.store, generation, name, &r).await };
    let by_tag = matches!(reference, Reference::Tag(_));
    let hit = found(lookup(reference.clone()).await?, unknown())?;
    let hit = match negotiate::choose(accepted, &hit.media_type, by_tag, &hit.children) {
        Choice::Serve => return Ok(hit),
        Choice::Child(d) => found(lookup(Reference::Digest(d)).await?, unknown())?,
        Choice::Refuse(why) => return Err(RegistryError::ManifestUnknown(why)),
    };
    negotiate::refuse_unaccepted(accepted, &hit.media_type)
        .map_err(RegistryError::ManifestUnknown)?;
    Ok(hit)
}

fn manifest_response(req: &HttpRequest, hit: &ManifestHit) -> HttpResponse {
    let etag = format!("\"{}\"", hit.digest);
    let not_modified =
        req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(',').map(str::trim).any(|t| t == etag || t == "*" || t == hit.digest.as_str())
        });
    let mut res = if not_modified { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::CONTENT_TYPE, hit.media_type.as_str()))
        .insert_header((CONTENT_DIGEST, hit.digest.as_str()))
        .insert_header((header::ETAG, etag));
    if not_modified {
        res.finish()
    } else {
        // HEAD: actix sends Content-Length of this body and omits the body itself.
        res.body(web::Bytes::copy_from_slice(&hit.bytes))
    }
}

/// The hot path: one snapshot read, one GeoIP lookup, one pick. No store access, no lock.
/// (Blobs, and the lookaside store's signature files, which are pool files too.)
async fn redirect_blob(
    req: &HttpRequest,
    state: &RegistryState,
    name: &RepoName,
    digest: &Digest,
    head: bool,
) -> Result<HttpResponse, RegistryError> {
    let snapshot = state.snapshot()?;
    let facts = match snapshot.blob(name, digest) {
        BlobLookup::Found(b) => b,
        BlobLookup::NameUnknown => return Err(RegistryError::NameUnknown),
        BlobLookup::BlobUnknown => return Err(RegistryError::BlobUnknown),
    };
    if head {
        return Ok(HttpResponse::Ok()
            .insert_header((CONTENT_DIGEST, digest.as_str()))
            .content_type("application/octet-stream")
            .no_chunking(facts.size)
            .streaming(futures_util::stream::empty::<Result<web::Bytes, actix_web::Error>>()));
    }
    let client = crate::edge::Client::of(req);
    let geo = state.geo.lookup(client.ip);
    let pick = snapshot.pick(digest, facts, client.ip, &geo, client.https, &mut rand::rng());
    state.redirects.record(pick.tier, geo.country);
    if let Some(mirror) = &pick.mirror {
        state.redirects.record_mirror(mirror, facts.size);
    }
    // Mirror URLs are checked when stored and again in the snapshot; should one still not
    // be a header value, the client gets Wharf's own copy, never a 500.
    let location = HeaderValue::try_from(pick.url).or_else(|e| {
        tracing::error!(mirror = ?pick.mirror, error = %e, "mirror URL is not a header value");
        HeaderValue::try_from(snapshot.fallback_url(digest))
    });
    let location = location.map_err(|e| RegistryError::Bug(e.to_string()))?;
    Ok(HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, location))
        .insert_header((CONTENT_DIGEST, digest.as_str()))
        .finish())
}

#[derive(Deserialize)]
struct PageQuery {
    n: Option<String>,
    last: Option<String>,
}

/// The `n` and `last` of the next page.
type NextPage = Option<(usize, String)>;

/// One page of a sorted list: items after `last` (exclusive), at most `n`. Returns the page and
/// the `last` value of the next page, if there is one.
fn paginate(items: Vec<String>, query: &str) -> Result<(Vec<String>, NextPage), RegistryError> {
    let q = web::Query::<PageQuery>::from_query(query)
        .map_err(|e| RegistryError::PaginationNumberInvalid(e.to_string()))?;
    let n = match q.n.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| RegistryError::PaginationNumberInvalid(format!("n={s:?}")))?
                .min(MAX_PAGE),
        ),
    };
    let start = match q.last.as_deref() {
        Some(last) if !last.is_empty() => items.partition_point(|i| i.as_str() <= last),
        _ => 0,
    };
    let rest = items.len() - start;
    let take = n.unwrap_or(rest).min(rest);
    let page: Vec<String> = items.into_iter().skip(start).take(take).collect();
    let next = (take < rest && take > 0).then(|| (take, page[take - 1].clone()));
    Ok((page, next))
}

fn paged_response(
    next: Option<(usize, String)>,
    path: &str,
    body: serde_json::Value,
) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    if let Some((n, last)) = next {
        // Names and tags are validated: no characters that need escaping in a query.
        let link = format!("<{path}?last={last}&n={n}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            res.insert_header((header::LINK, v));
        }
    }
    res.json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pagination() {
        let all = items(&["a", "b", "c", "d"]);
        assert_eq!(paginate(all.clone(), "").unwrap(), (all.clone(), None));
        assert_eq!(
            paginate(all.clone(), "n=2").unwrap(),
            (items(&["a", "b"]), Some((2, "b".into())))
        );
        assert_eq!(paginate(all.clone(), "n=2&last=b").unwrap(), (items(&["c", "d"]), None));
        assert_eq!(paginate(all.clone(), "last=bb").unwrap(), (items(&["c", "d"]), None));
        assert_eq!(paginate(all.clone(), "n=0").unwrap(), (vec![], None));
        assert!(matches!(
            paginate(all.clone(), "n=-1"),
            Err(RegistryError::PaginationNumberInvalid(_))
        ));
        assert!(matches!(paginate(all, "n=x"), Err(RegistryError::PaginationNumberInvalid(_))));
    }
}
