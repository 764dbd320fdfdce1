//! The repository and tag browser.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::model::{RepoName, media_type};

use super::{AdminError, AdminState, Frame, OperatorSession, bytes, render, when};

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

#[derive(Template)]
#[template(path = "admin/repos/list.html")]
pub struct ListPage {
    frame: Frame,
    q: String,
    repos: Vec<String>,
    total: usize,
}

/// Every repository, or those whose name contains the search text.
pub async fn list(
    session: OperatorSession,
    state: web::Data<AdminState>,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, AdminError> {
    let q = query.into_inner().q.trim().to_lowercase();
    let all = state.store().catalog().await?;
    let repos =
        all.iter().map(|r| r.to_string()).filter(|r| q.is_empty() || r.contains(&q)).collect();
    let page = ListPage { frame: Frame::of(&session.0), q, repos, total: all.len() };
    Ok(render(StatusCode::OK, &page))
}

pub struct TagRow {
    tag: String,
    digest: String,
    kind: String,
    platforms: String,
    size: String,
    changed: String,
    /// Signatures, attestations, SBOMs.
    attached: String,
}

#[derive(Template)]
#[template(path = "admin/repos/detail.html")]
pub struct DetailPage {
    frame: Frame,
    name: String,
    tags: Vec<TagRow>,
}

/// A short name for a manifest media type.
fn kind(mt: &str) -> String {
    match mt {
        media_type::OCI_INDEX => "OCI index".into(),
        media_type::OCI_MANIFEST => "OCI manifest".into(),
        media_type::DOCKER_LIST => "Docker manifest list".into(),
        media_type::DOCKER_MANIFEST => "Docker manifest v2".into(),
        other => other.to_owned(),
    }
}

/// One repository's tags: digest, media type, platforms, size, last change, and what is
/// attached to each (signatures, attestations, SBOMs).
pub async fn detail(
    session: OperatorSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let name: RepoName = name.parse().map_err(|_| AdminError::NotFound)?;
    let details = state.store().tag_details(&name).await?.ok_or(AdminError::NotFound)?;
    let tags = details
        .into_iter()
        .map(|t| TagRow {
            tag: t.tag,
            digest: t.digest.to_string(),
            kind: kind(&t.media_type),
            platforms: t.platforms.join(", "),
            size: bytes(t.size),
            changed: when(t.updated_at),
            attached: t.attachments.join(", "),
        })
        .collect();
    let page = DetailPage { frame: Frame::of(&session.0), name: name.to_string(), tags };
    Ok(render(StatusCode::OK, &page))
}
