//! Logging in and out.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::accounts::{self, LoginError, SESSION_COOKIE};
use crate::edge::Client;

use super::{AdminError, AdminState, AnySession, Frame, render};

const LOGIN_CSRF_COOKIE: &str = "wharf_login_csrf";

/// A cookie only the admin pages see, never readable by scripts, never sent cross-site, and
/// only over TLS when the request came over TLS (directly or, as a trusted proxy says,
/// through it).
fn cookie<'a>(req: &HttpRequest, name: &'a str, value: String) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(Client::of(req).https)
        .finish()
}

fn removal<'a>(req: &HttpRequest, name: &'a str) -> Cookie<'a> {
    let mut gone = cookie(req, name, String::new());
    gone.make_removal();
    gone
}

#[derive(Template)]
#[template(path = "admin/session/login.html")]
pub struct LoginPage {
    frame: Frame,
    csrf: String,
    name: String,
    error: Option<String>,
}

pub async fn login_form(req: HttpRequest) -> HttpResponse {
    let csrf = accounts::random_token();
    let page = LoginPage {
        frame: Frame::anonymous(),
        csrf: csrf.clone(),
        name: String::new(),
        error: None,
    };
    let mut res = render(StatusCode::OK, &page);
    let _ = res.add_cookie(&cookie(&req, LOGIN_CSRF_COOKIE, csrf));
    res
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
    let client = Client::of(&req).ip;
    let form = form.into_inner();
    let now = state.clock.now();
    match accounts::login(state.store(), &state.throttle, now, &form.name, form.password, client)
        .await
    {
        Ok(ticket) => Ok(HttpResponse::SeeOther()
            .cookie(cookie(&req, SESSION_COOKIE, ticket.token))
            .cookie(removal(&req, LOGIN_CSRF_COOKIE))
            .insert_header((actix_web::http::header::LOCATION, "/admin/"))
            .finish()),
        Err(LoginError::Store(e)) => Err(e.into()),
        Err(e) => {
            let (status, retry) = match e {
                LoginError::Throttled(s) => (StatusCode::TOO_MANY_REQUESTS, s.max(1)),
                LoginError::Busy => (StatusCode::SERVICE_UNAVAILABLE, 1),
                _ => (StatusCode::UNAUTHORIZED, 0),
            };
            let page = LoginPage {
                frame: Frame::anonymous(),
                csrf: form.csrf,
                name: form.name,
                error: Some(e.to_string()),
            };
            let mut res = render(status, &page);
            if retry > 0 {
                res.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from(retry),
                );
            }
            Ok(res)
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(
    req: HttpRequest,
    session: AnySession,
    state: web::Data<AdminState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AdminError> {
    session.check_csrf(&form.csrf)?;
    accounts::logout(state.store(), &session.token).await?;
    Ok(HttpResponse::SeeOther()
        .cookie(removal(&req, SESSION_COOKIE))
        .insert_header((actix_web::http::header::LOCATION, "/admin/login"))
        .finish())
}
