//! The audit log: who changed what, when.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use crate::model::AuditEntry;

use super::{AdminError, AdminState, Frame, OperatorSession, render, when};

const LISTED: usize = 500;

#[derive(Template)]
#[template(path = "admin/audit/list.html")]
pub struct ListPage {
    frame: Frame,
    entries: Vec<(String, AuditEntry)>,
}

pub async fn list(
    session: OperatorSession,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let entries =
        state.store().audit_log(LISTED).await?.into_iter().map(|e| (when(e.at), e)).collect();
    Ok(render(StatusCode::OK, &ListPage { frame: Frame::of(&session.0), entries }))
}
