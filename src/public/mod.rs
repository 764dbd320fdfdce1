//! What anyone may see without logging in, besides the pull API: the mirror network's status
//! (`/mirrors`, `/api/v1/mirrors`). Pages read the in-memory selection state the redirects
//! use, never the store, so they cost the same at any catalog size; they show only what is
//! meant to be public (see [`mirrors::PublicMirror`]).

pub mod mirrors;

use actix_web::web;

use crate::config::PublicSite;

/// The public routes, unless `[public] enabled = false`.
pub fn configure(cfg: &mut web::ServiceConfig, site: &PublicSite) {
    if !site.enabled {
        return;
    }
    cfg.app_data(web::Data::new(site.clone()))
        .route("/assets/{name}", web::get().to(crate::admin::serve_asset))
        .route("/mirrors", web::get().to(mirrors::page))
        .route("/api/v1/mirrors", web::get().to(mirrors::api));
}
