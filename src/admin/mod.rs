//! The admin UI (HTML): log in, and the pages operators and mirror admins see.
//! Handlers are thin: extract (the session type *is* the authorization), one call, render
//! one template struct. `templates/admin/` mirrors this module; assets are embedded.
//! Imports `model`, `store`, `accounts`; never `registry`.

mod auth;
mod errors;
mod pages;

use std::sync::{Arc, LazyLock};

use actix_web::{HttpResponse, web};

use crate::accounts::{LoginThrottle, SessionPolicy};
use crate::clock::Clock;
use crate::store::Store;

pub use auth::{AnySession, MirrorAdminSession, OperatorSession};
pub use errors::AdminError;

/// Called after a mirror edit, so blob selection sees it (the app rebuilds its snapshot).
pub type RefreshHook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// What the admin handlers share.
pub struct AdminState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub throttle: LoginThrottle,
    pub policy: SessionPolicy,
    pub after_mirror_edit: RefreshHook,
}

const CSS: &str = include_str!("../../assets/admin.css");

/// The stylesheet's cache-busting name: `admin-<hash>.css`.
pub static CSS_NAME: LazyLock<String> = LazyLock::new(|| {
    use sha2::Digest as _;
    format!("admin-{}.css", &hex::encode(sha2::Sha256::digest(CSS.as_bytes()))[..12])
});

async fn stylesheet(name: web::Path<String>) -> HttpResponse {
    if *name != *CSS_NAME {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
        .body(CSS)
}

/// Routes under `/admin`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::home))
        .route("/login", web::get().to(pages::login_form))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::post().to(pages::logout))
        .route("/users", web::get().to(pages::users))
        .route("/mirrors/{name}/active", web::post().to(pages::set_active))
        .route("/assets/{name}", web::get().to(stylesheet));
}
