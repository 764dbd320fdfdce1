//! The public registry pages: `/` lists the repositories (with a search), `/r/<name>` a
//! repository's tags with digest, platforms, size and last change, and the commands and
//! client configuration to pull them. What they show changes only with the generation, so
//! each is read from the store at most once per generation (bounded: the repository list
//! and up to [`TAGS_KEPT`] tags of the most recently viewed repositories), answered with an ETag of the
//! generation, and 304 to a client that has it.

use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::config::PublicSite;
use crate::model::{Generation, RepoName};
use crate::registry::{RegistryError, RegistryState};
use crate::store::TagDetail;

/// Repositories and tags on one page.
pub const PAGE: usize = 100;
/// Tags (over all repositories) whose details are kept between requests: some tens of MB
/// at most, and every repository of a catalog of 10,000 with 10 tags each.
const TAGS_KEPT: u64 = 100_000;
/// The longest search accepted (repository names are at most 255 characters).
const MAX_QUERY: usize = 255;

/// What the pages read, kept for one generation.
pub struct CatalogCache {
    /// Makes ETags of one process differ from another's (a restart may change the site's
    /// title or the address in the pull commands).
    boot: u64,
    state: Mutex<Cached>,
}

struct Cached {
    generation: Generation,
    repos: Option<Arc<Vec<RepoName>>>,
    tags: quick_cache::unsync::Cache<RepoName, Arc<Vec<TagDetail>>, ByTags>,
}

/// A repository's weight in the cache: its number of tags.
#[derive(Clone)]
struct ByTags;

impl quick_cache::Weighter<RepoName, Arc<Vec<TagDetail>>> for ByTags {
    fn weight(&self, _: &RepoName, tags: &Arc<Vec<TagDetail>>) -> u64 {
        tags.len().max(1) as u64
    }
}

impl Default for CatalogCache {
    fn default() -> Self {
        CatalogCache {
            boot: rand::random(),
            state: Mutex::new(Cached {
                generation: 0,
                repos: None,
                tags: quick_cache::unsync::Cache::with_weighter(1024, TAGS_KEPT, ByTags),
            }),
        }
    }
}

impl CatalogCache {
    /// The cache for `generation`, emptied when it moved on.
    fn at(&self, generation: Generation) -> std::sync::MutexGuard<'_, Cached> {
        let mut c = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if c.generation != generation {
            c.generation = generation;
            c.repos = None;
            c.tags.clear();
        }
        c
    }

    /// The repositories, sorted: read from the store once per generation.
    async fn repos(
        &self,
        state: &RegistryState,
        generation: Generation,
    ) -> Result<Arc<Vec<RepoName>>, RegistryError> {
        if let Some(r) = self.at(generation).repos.clone() {
            return Ok(r);
        }
        let r = Arc::new(state.store.catalog().await?);
        self.at(generation).repos = Some(r.clone());
        Ok(r)
    }

    fn etag(&self, generation: Generation) -> String {
        format!("\"g{generation}-{:x}\"", self.boot)
    }
}

/// How clients address this registry: the host (with port) of `server.public_url`, and
/// whether it is plain HTTP (then clients need to be told it is not TLS).
pub struct Address {
    pub host: String,
    pub plain_http: bool,
}

impl Address {
    pub fn of(public_url: &str) -> Address {
        let url = url::Url::parse(public_url).ok();
        let host = url
            .as_ref()
            .and_then(|u| {
                Some(format!(
                    "{}{}",
                    u.host_str()?,
                    u.port().map(|p| format!(":{p}")).unwrap_or_default()
                ))
            })
            .unwrap_or_default();
        Address { host, plain_http: url.is_some_and(|u| u.scheme() == "http") }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.plain_http { "http" } else { "https" }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

/// Page `page` (from 0) of `items`, and whether more follow.
fn paged<T>(items: impl Iterator<Item = T>, page: usize) -> (Vec<T>, bool) {
    let mut shown: Vec<T> = items.skip(page.saturating_mul(PAGE)).take(PAGE + 1).collect();
    let more = shown.len() > PAGE;
    shown.truncate(PAGE);
    (shown, more)
}

/// 304 when the client's copy is of this generation, else `None`.
fn unchanged(req: &HttpRequest, etag: &str) -> Option<HttpResponse> {
    let sent = req.headers().get(header::IF_NONE_MATCH)?.to_str().ok()?;
    sent.split(',').any(|t| t.trim() == etag).then(|| {
        HttpResponse::NotModified()
            .insert_header((header::ETAG, etag.to_owned()))
            .insert_header(CACHE)
            .finish()
    })
}

/// Revalidated on each use: the ETag makes that a 304.
const CACHE: (&str, &str) = ("Cache-Control", "public, no-cache");

fn html(etag: String, page: impl Template) -> Result<HttpResponse, RegistryError> {
    let body = page.render().map_err(|e| RegistryError::Bug(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header(CACHE)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

#[derive(Template)]
#[template(path = "public/catalog.html")]
struct CatalogPage<'a> {
    css: &'a str,
    site: &'a PublicSite,
    address: Address,
    query: &'a str,
    total: usize,
    repos: Vec<&'a RepoName>,
    page: usize,
    more: bool,
}

/// `/`: the repositories, `?q=` a part of the name, `?page=` from 0.
pub async fn index(
    req: HttpRequest,
    state: web::Data<RegistryState>,
    site: web::Data<PublicSite>,
    cache: web::Data<CatalogCache>,
) -> Result<HttpResponse, RegistryError> {
    let q = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| RegistryError::BadQuery(format!("{e} (expected q, page)")))?;
    if q.q.len() > MAX_QUERY {
        return Err(RegistryError::BadQuery(format!("q is longer than {MAX_QUERY} bytes")));
    }
    let generation = state.snapshot()?.generation;
    let etag = cache.etag(generation);
    if let Some(r) = unchanged(&req, &etag) {
        return Ok(r);
    }
    let repos = cache.repos(state.get_ref(), generation).await?;
    let needle = q.q.trim().to_ascii_lowercase();
    let matching = repos.iter().filter(|r| r.as_str().contains(needle.as_str()));
    let total = matching.clone().count();
    let (shown, more) = paged(matching, q.page);
    let page = CatalogPage {
        css: &crate::admin::CSS.name,
        site: &site,
        address: Address::of(&state.public_url),
        query: q.q.trim(),
        total,
        repos: shown,
        page: q.page,
        more,
    };
    html(etag, page)
}

#[derive(Template)]
#[template(path = "public/repo.html")]
struct RepoPage<'a> {
    css: &'a str,
    site: &'a PublicSite,
    address: Address,
    name: &'a RepoName,
    /// The tag the example commands use: `latest` if there is one, else the newest.
    example: Option<&'a TagDetail>,
    total: usize,
    tags: Vec<&'a TagDetail>,
    page: usize,
    more: bool,
}

#[derive(Template)]
#[template(path = "public/not_found.html")]
struct NotFoundPage<'a> {
    css: &'a str,
    site: &'a PublicSite,
    name: &'a str,
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: usize,
}

/// `/r/<name>`: a repository's tags, newest change first.
pub async fn repository(
    req: HttpRequest,
    state: web::Data<RegistryState>,
    site: web::Data<PublicSite>,
    cache: web::Data<CatalogCache>,
) -> Result<HttpResponse, RegistryError> {
    let raw = req.match_info().query("name");
    let Ok(name) = raw.parse::<RepoName>() else {
        return not_found(&site, raw);
    };
    let q = web::Query::<PageQuery>::from_query(req.query_string())
        .map_err(|e| RegistryError::BadQuery(format!("{e} (expected page)")))?;
    let generation = state.snapshot()?.generation;
    let etag = cache.etag(generation);
    if let Some(r) = unchanged(&req, &etag) {
        return Ok(r);
    }
    // An unknown name is answered from the cached list, never with a store read.
    if cache.repos(state.get_ref(), generation).await?.binary_search(&name).is_err() {
        return not_found(&site, name.as_str());
    }
    let cached = cache.at(generation).tags.get(&name).cloned();
    let tags = match cached {
        Some(t) => t,
        None => {
            let Some(mut t) = state.store.tag_details(&name).await? else {
                return not_found(&site, name.as_str());
            };
            t.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.tag.cmp(&b.tag)));
            let t = Arc::new(t);
            cache.at(generation).tags.insert(name.clone(), t.clone());
            t
        }
    };
    let example = tags.iter().find(|t| t.tag == "latest").or(tags.first());
    let (shown, more) = paged(tags.iter(), q.page);
    let page = RepoPage {
        css: &crate::admin::CSS.name,
        site: &site,
        address: Address::of(&state.public_url),
        name: &name,
        example,
        total: tags.len(),
        tags: shown,
        page: q.page,
        more,
    };
    html(etag, page)
}

fn not_found(site: &PublicSite, name: &str) -> Result<HttpResponse, RegistryError> {
    let body = NotFoundPage { css: &crate::admin::CSS.name, site, name }
        .render()
        .map_err(|e| RegistryError::Bug(e.to_string()))?;
    Ok(HttpResponse::NotFound().content_type("text/html; charset=utf-8").body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_public_url() {
        let a = Address::of("https://registry.example.org");
        assert_eq!((a.host.as_str(), a.plain_http), ("registry.example.org", false));
        let a = Address::of("http://127.0.0.1:5000");
        assert_eq!((a.host.as_str(), a.plain_http, a.scheme()), ("127.0.0.1:5000", true, "http"));
    }
}
