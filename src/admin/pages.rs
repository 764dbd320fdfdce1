//! The pages: one template struct per page, next to its handler.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;
use serde::Deserialize;

use crate::accounts::{self, LoginError, SESSION_COOKIE};
use crate::model::{MirrorName, MirrorStatus, Role};

use super::{AdminError, AdminState, AnySession, CSS_NAME, MirrorAdminSession, OperatorSession};

const LOGIN_CSRF_COOKIE: &str = "wharf_login_csrf";

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

/// A cookie only the admin pages see, never readable by scripts, never sent cross-site, and
/// only over TLS when the request came over TLS.
fn cookie<'a>(req: &HttpRequest, name: &'a str, value: String) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.app_config().secure())
        .finish()
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/login.html")]
pub struct LoginPage {
    css: &'static str,
    nav: Option<Nav>,
    csrf: String,
    name: String,
    error: Option<String>,
}

pub async fn login_form(req: HttpRequest) -> HttpResponse {
    let csrf = accounts::random_token();
    let page = LoginPage {
        css: &CSS_NAME,
        nav: None,
        csrf: csrf.clone(),
        name: String::new(),
        error: None,
    };
    render(HttpResponse::Ok().cookie(cookie(&req, LOGIN_CSRF_COOKIE, csrf)), &page)
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    csrf: String,
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<AdminState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AdminError> {
    let expected = req.cookie(LOGIN_CSRF_COOKIE).map(|c| c.value().to_owned());
    if expected.as_deref() != Some(form.csrf.as_str()) || form.csrf.is_empty() {
        return Err(AdminError::Csrf);
    }
    let client = req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let form = form.into_inner();
    let now = state.clock.now();
    match accounts::login(&state.store, &state.throttle, now, &form.name, form.password, client)
        .await
    {
        Ok(ticket) => {
            let mut gone = cookie(&req, LOGIN_CSRF_COOKIE, String::new());
            gone.make_removal();
            Ok(HttpResponse::SeeOther()
                .cookie(cookie(&req, SESSION_COOKIE, ticket.token))
                .cookie(gone)
                .insert_header((header::LOCATION, "/admin/"))
                .finish())
        }
        Err(LoginError::Store(e)) => Err(e.into()),
        Err(e) => {
            let mut res = match e {
                LoginError::Throttled(_) => HttpResponse::TooManyRequests(),
                _ => HttpResponse::Unauthorized(),
            };
            let page = LoginPage {
                css: &CSS_NAME,
                nav: None,
                csrf: form.csrf,
                name: form.name,
                error: Some(e.to_string()),
            };
            Ok(render(&mut res, &page))
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    req: HttpRequest,
    session: AnySession,
    state: web::Data<AdminState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AdminError> {
    session.check_csrf(&form.csrf)?;
    accounts::logout(&state.store, &session.token).await?;
    let mut gone = cookie(&req, SESSION_COOKIE, String::new());
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/admin/login"))
        .finish())
}

pub struct Overview {
    generation: u64,
    repositories: usize,
    current: usize,
    behind: usize,
    unverified: usize,
    last_run: Option<RunRow>,
}

pub struct RunRow {
    id: u64,
    outcome: String,
    generation_before: u64,
    generation_after: u64,
    blobs: u32,
    finished: String,
    errors: Vec<String>,
}

pub struct MirrorRow {
    name: String,
    active: bool,
    state: String,
    holds: String,
    country: String,
    problem: String,
}

impl From<&MirrorStatus> for MirrorRow {
    fn from(m: &MirrorStatus) -> MirrorRow {
        MirrorRow {
            name: m.mirror.name.to_string(),
            active: m.mirror.active,
            state: m.state().to_string(),
            holds: m
                .health
                .generation
                .map(|g| format!("generation {g}"))
                .unwrap_or_else(|| "unverified".into()),
            country: m.mirror.country.clone().unwrap_or_default(),
            problem: m
                .health
                .auto_disabled
                .clone()
                .or_else(|| m.mirror.disabled_reason.clone())
                .or_else(|| m.health.last_error.clone())
                .unwrap_or_default(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/home.html")]
pub struct HomePage {
    css: &'static str,
    nav: Option<Nav>,
    operator: Option<Overview>,
    mirrors: Vec<MirrorRow>,
}

/// Operators see the whole appliance; mirror admins their own mirrors.
pub async fn home(
    session: AnySession,
    state: web::Data<AdminState>,
) -> Result<HomePage, AdminError> {
    let store = &state.store;
    let all = store.mirrors().await?;
    let operator = session.session.role == Role::Operator;
    let overview = if operator {
        let generation = store.generation().await?;
        let p = crate::crawl::Propagation::of(generation, &all);
        let last_run = store.recent_runs(1).await?.into_iter().next().map(|r| RunRow {
            id: r.id,
            outcome: format!("{:?}", r.outcome),
            generation_before: r.generation_before,
            generation_after: r.generation_after,
            blobs: r.blobs_fetched(),
            finished: r.finished_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            errors: r.errors().take(10).collect(),
        });
        Some(Overview {
            generation,
            repositories: store.catalog().await?.len(),
            current: p.current,
            behind: p.previous + p.older,
            unverified: p.unknown,
            last_run,
        })
    } else {
        None
    };
    let mirrors = all
        .iter()
        .filter(|m| operator || m.mirror.owner == Some(session.session.user_id))
        .map(MirrorRow::from)
        .collect();
    Ok(HomePage { css: &CSS_NAME, nav: Some(Nav::from(&session)), operator: overview, mirrors })
}

#[derive(Deserialize)]
pub struct ActiveForm {
    csrf: String,
    active: bool,
}

/// Opt a mirror in or out: its admin's one button. Someone else's mirror is "not found".
pub async fn set_active(
    session: MirrorAdminSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    form: web::Form<ActiveForm>,
) -> Result<HttpResponse, AdminError> {
    let s = &session.0;
    s.check_csrf(&form.csrf)?;
    let name: MirrorName = name.parse().map_err(|_| AdminError::NotFound)?;
    let mirror = state.store.mirror(&name).await?.ok_or(AdminError::NotFound)?;
    if s.session.role != Role::Operator && mirror.mirror.owner != Some(s.session.user_id) {
        return Err(AdminError::NotFound);
    }
    let active = form.active;
    state
        .store
        .update_mirror(&name, move |m| {
            m.active = active;
            Ok(())
        })
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    (state.after_mirror_edit)().await;
    tracing::info!(user = %s.session.user, mirror = %name, active, "mirror opt-in changed");
    Ok(HttpResponse::SeeOther().insert_header((header::LOCATION, "/admin/")).finish())
}

pub struct UserRow {
    name: String,
    role: String,
    state: &'static str,
    last_login: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/users.html")]
pub struct UsersPage {
    css: &'static str,
    nav: Option<Nav>,
    users: Vec<UserRow>,
}

pub async fn users(
    session: OperatorSession,
    state: web::Data<AdminState>,
) -> Result<UsersPage, AdminError> {
    let users = state
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| UserRow {
            name: u.name.to_string(),
            role: u.role.to_string(),
            state: if u.disabled { "disabled" } else { "active" },
            last_login: u
                .last_login
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "never".into()),
        })
        .collect();
    Ok(UsersPage { css: &CSS_NAME, nav: Some(Nav::from(&session.0)), users })
}

fn render(res: &mut actix_web::HttpResponseBuilder, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(html) => res.content_type("text/html; charset=utf-8").body(html),
        Err(e) => actix_web::ResponseError::error_response(&AdminError::Internal(e.to_string())),
    }
}
