//! What anyone may see without logging in, besides the pull API: the registry's
//! repositories and tags with pull commands (`/`, `/r/<name>`, [`catalog`]) and the mirror
//! network's status (`/mirrors`, `/api/v1/mirrors`). The status reads the in-memory
//! selection state the redirects use, never the store; the catalog pages read the store at
//! most once per generation. They cost the same at any catalog size and show only what is
//! meant to be public (see [`mirrors::PublicMirror`]).

pub mod catalog;
pub mod mirrors;
pub mod status;

use actix_web::web;

use crate::config::PublicSite;

/// The public routes, unless `[public] enabled = false`.
/// What the public pages keep between requests, made once for all workers.
#[derive(Default, Clone)]
pub struct PublicCaches {
    pub catalog: web::Data<catalog::CatalogCache>,
    pub status: web::Data<status::StatusCache>,
}

pub fn configure(cfg: &mut web::ServiceConfig, site: &PublicSite, caches: &PublicCaches) {
    if !site.enabled {
        return;
    }
    cfg.app_data(web::Data::new(site.clone()))
        .app_data(caches.catalog.clone())
        .app_data(caches.status.clone())
        .route("/", web::get().to(catalog::index))
        .route("/r/{name:.+}", web::get().to(catalog::repository))
        .route("/assets/{name}", web::get().to(crate::admin::serve_asset))
        .route("/mirrors", web::get().to(mirrors::page))
        .route("/api/v1/mirrors", web::get().to(mirrors::api))
        .route("/api/v1/status", web::get().to(status::api));
}
