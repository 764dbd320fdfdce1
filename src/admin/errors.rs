//! The one error mapping of the admin surface: an HTML page (or a redirect to log in).
//! Causes are logged; people get a safe message.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("please log in")]
    LoginRequired,
    #[error("this page is for operators")]
    Forbidden,
    /// Also what a mirror admin gets for someone else's mirror: its existence is not told.
    #[error("no such page")]
    NotFound,
    #[error("the form expired or did not come from this site; reload and try again")]
    Csrf,
    #[error("something went wrong")]
    Internal(String),
}

impl From<crate::store::MirrorEditError> for AdminError {
    fn from(e: crate::store::MirrorEditError) -> Self {
        match e {
            crate::store::MirrorEditError::Unknown(_) => AdminError::NotFound,
            e => AdminError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Internal(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage<'a> {
    frame: super::Frame,
    title: &'a str,
    message: String,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::LoginRequired => StatusCode::SEE_OTHER,
            AdminError::Forbidden | AdminError::Csrf => StatusCode::FORBIDDEN,
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let AdminError::LoginRequired = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/admin/login"))
                .finish();
        }
        if let AdminError::Internal(cause) = self {
            tracing::error!(error = %cause, "admin request failed");
        }
        let title = match self {
            AdminError::Forbidden => "Not allowed",
            AdminError::Csrf => "Form refused",
            AdminError::NotFound => "Not found",
            _ => "Error",
        };
        let page = ErrorPage { frame: super::Frame::anonymous(), title, message: self.to_string() };
        HttpResponse::build(self.status_code())
            .content_type("text/html; charset=utf-8")
            .body(page.render().unwrap_or_else(|_| self.to_string()))
    }
}
