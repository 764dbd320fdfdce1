//! The admin UI (HTML): log in, and the pages operators and mirror admins see.
//! Handlers are thin: extract (the session type *is* the authorization), one call, render
//! one template struct. Each page module's templates live in `templates/admin/<module>/`;
//! assets are embedded with content-hashed names.
//! Imports `model`, `store`, `accounts`, `crawl`, `geo`, `sync` and `scheduler` (for "Sync
//! now" and live progress); never `registry`.

mod audit;
mod auth;
mod charts;
mod dashboard;
mod errors;
mod mirrors;
mod repos;
mod runs;
mod session;
mod users;

use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use askama::Template;

use crate::accounts::{LoginThrottle, SessionPolicy};
use crate::clock::Clock;
use crate::geo::GeoDb;
use crate::model::{AuditEntry, Role, human_bytes as bytes};
use crate::scheduler::Jobs;
use crate::service::{self, MirrorChange};
use crate::store::{MirrorEditError, Store};

pub use auth::{AnySession, MirrorAdminSession, OperatorSession};
pub use errors::AdminError;

/// What the admin handlers share.
pub struct AdminState {
    pub jobs: Arc<Jobs>,
    pub geo: Arc<GeoDb>,
    pub clock: Arc<dyn Clock>,
    pub throttle: LoginThrottle,
    pub policy: SessionPolicy,
    /// Where mirrors rsync the tree from (ends in `/`).
    pub rsync_url: String,
}

impl AdminState {
    pub fn store(&self) -> &Store {
        self.jobs.store()
    }

    /// Append to the audit log; a failure to record is logged, not shown.
    async fn audit(&self, who: &AnySession, action: &str, target: &str, detail: String) {
        let entry = AuditEntry {
            at: self.clock.now(),
            actor: who.session.user.to_string(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        tracing::info!(actor = %entry.actor, action, target, detail = %entry.detail, "admin change");
        if let Err(e) = self.store().record_audit(entry).await {
            tracing::error!(error = %e, "recording the audit log");
        }
    }

    /// Change a mirror as this session's user (see `service::change_mirror`).
    async fn change(
        &self,
        who: &AnySession,
        name: &crate::model::MirrorName,
        change: MirrorChange,
        action: &str,
    ) -> Result<Option<crate::model::MirrorStatus>, MirrorEditError> {
        service::change_mirror(&self.jobs, &who.actor(), name, change, action).await
    }
}

/// An embedded asset and its cache-busting name (`<stem>-<hash>.<ext>`).
pub struct Asset {
    pub name: String,
    body: &'static str,
    content_type: &'static str,
}

fn asset(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    Asset { name: format!("{stem}-{}.{ext}", &hash[..12]), body, content_type }
}

pub static CSS: LazyLock<Asset> = LazyLock::new(|| {
    asset("admin", "css", include_str!("../../assets/admin.css"), "text/css; charset=utf-8")
});
pub static JS: LazyLock<Asset> = LazyLock::new(|| {
    asset("admin", "js", include_str!("../../assets/admin.js"), "text/javascript; charset=utf-8")
});

/// An embedded asset by its content-hashed name (also for the public pages, whose listener
/// may not serve `/admin/`).
pub async fn serve_asset(name: web::Path<String>) -> HttpResponse {
    match [&*CSS, &*JS].into_iter().find(|a| a.name == *name) {
        Some(a) => HttpResponse::Ok()
            .content_type(a.content_type)
            .insert_header(("Cache-Control", "public, max-age=31536000, immutable"))
            .body(a.body),
        None => HttpResponse::NotFound().finish(),
    }
}

/// The page frame every template extends: the asset names and the user menu.
pub struct Frame {
    pub css: &'static str,
    pub js: &'static str,
    pub nav: Option<Nav>,
    /// A one-line notice after an action ("Sync started").
    pub notice: Option<String>,
}

impl Frame {
    pub fn anonymous() -> Frame {
        Frame { css: &CSS.name, js: &JS.name, nav: None, notice: None }
    }

    pub fn of(s: &AnySession) -> Frame {
        Frame { nav: Some(Nav::from(s)), ..Frame::anonymous() }
    }

    pub fn csrf(&self) -> &str {
        self.nav.as_ref().map(|n| n.csrf.as_str()).unwrap_or("")
    }
}

/// The header's user menu.
pub struct Nav {
    pub user: String,
    pub role: String,
    pub csrf: String,
    pub operator: bool,
}

impl From<&AnySession> for Nav {
    fn from(s: &AnySession) -> Nav {
        Nav {
            user: s.session.user.to_string(),
            role: s.session.role.to_string(),
            csrf: s.session.csrf.clone(),
            operator: s.session.role == Role::Operator,
        }
    }
}

/// Render a page with a status (form errors come back as 422 with the input kept).
fn render(status: actix_web::http::StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(html),
        Err(e) => actix_web::ResponseError::error_response(&AdminError::Internal(e.to_string())),
    }
}

/// After a successful POST: back to a page (post/redirect/get).
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// Times as people read them.
fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// For `fuzzing`: the mirror patch a posted mirror form yields (`None`: refused).
#[doc(hidden)]
pub fn mirror_form_patch(body: &[u8], operator: bool) -> Option<crate::model::MirrorPatch> {
    let form: mirrors::MirrorForm = serde_urlencoded::from_bytes(body).ok()?;
    form.patch(operator, &[]).ok()
}

/// Routes under `/admin`. Every route is in the authorization matrix test.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::home))
        .route("/login", web::get().to(session::login_form))
        .route("/login", web::post().to(session::login))
        .route("/logout", web::post().to(session::logout))
        .route("/progress", web::get().to(dashboard::progress_json))
        .route("/sync", web::post().to(dashboard::sync_now))
        .route("/crawl", web::post().to(dashboard::crawl_now))
        .route("/runs", web::get().to(runs::list))
        .route("/runs/{id}", web::get().to(runs::detail))
        .route("/repos", web::get().to(repos::list))
        .route("/repos/{name:.+}", web::get().to(repos::detail))
        .route("/mirrors", web::get().to(mirrors::list))
        .route("/mirrors/new", web::get().to(mirrors::new_form))
        .route("/mirrors/new", web::post().to(mirrors::register))
        .route("/mirrors/{name}", web::get().to(mirrors::detail))
        .route("/mirrors/{name}", web::post().to(mirrors::edit))
        .route("/mirrors/{name}/active", web::post().to(mirrors::set_active))
        .route("/mirrors/{name}/approval", web::post().to(mirrors::approval))
        .route("/explain", web::get().to(mirrors::explain))
        .route("/account", web::post().to(dashboard::set_own_email))
        .route("/users", web::get().to(users::list))
        .route("/users", web::post().to(users::create))
        .route("/users/{name}", web::post().to(users::change))
        .route("/audit", web::get().to(audit::list))
        .route("/assets/{name}", web::get().to(serve_asset));
}
