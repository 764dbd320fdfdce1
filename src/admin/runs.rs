//! Sync runs: the list and each run's report per repository.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;

use crate::model::{RepoReport, SyncRun};

use super::{AdminError, AdminState, Frame, OperatorSession, bytes, render, when};

const LISTED: usize = 100;

pub struct RunRow {
    pub id: u64,
    pub outcome: String,
    pub generation_before: u64,
    pub generation_after: u64,
    pub blobs: u32,
    pub bytes: String,
    pub duration: String,
    pub started: String,
    pub finished: String,
    pub errors: usize,
}

fn duration(run: &SyncRun) -> String {
    let ms = (run.finished_at - run.started_at).num_milliseconds().max(0);
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl From<&SyncRun> for RunRow {
    fn from(r: &SyncRun) -> RunRow {
        RunRow {
            id: r.id,
            outcome: format!("{:?}", r.outcome).to_lowercase(),
            generation_before: r.generation_before,
            generation_after: r.generation_after,
            blobs: r.blobs_fetched(),
            bytes: bytes(r.bytes_fetched()),
            duration: duration(r),
            started: when(r.started_at),
            finished: when(r.finished_at),
            errors: r.errors().count(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/runs/list.html")]
pub struct ListPage {
    frame: Frame,
    runs: Vec<RunRow>,
}

pub async fn list(
    session: OperatorSession,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    let runs = state.store().recent_runs(LISTED).await?;
    let page =
        ListPage { frame: Frame::of(&session.0), runs: runs.iter().map(RunRow::from).collect() };
    Ok(render(StatusCode::OK, &page))
}

pub struct RepoRow {
    repo: String,
    tags: String,
    manifests: u32,
    blobs: u32,
    bytes: String,
    duration: String,
    errors: Vec<String>,
}

impl From<&RepoReport> for RepoRow {
    fn from(r: &RepoReport) -> RepoRow {
        RepoRow {
            repo: r.repo.clone(),
            tags: format!(
                "+{} added, {} moved, −{} removed, {} unchanged; {} attachments changed",
                r.tags_added, r.tags_moved, r.tags_removed, r.tags_unchanged, r.attachments_changed
            ),
            manifests: r.manifests_fetched,
            blobs: r.blobs_fetched,
            bytes: bytes(r.bytes_fetched),
            duration: format!("{:.1} s", r.duration_ms as f64 / 1000.0),
            errors: r.errors.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/runs/detail.html")]
pub struct DetailPage {
    frame: Frame,
    run: RunRow,
    error: Option<String>,
    collected: u32,
    repos: Vec<RepoRow>,
}

pub async fn detail(
    session: OperatorSession,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id: u64 = id.parse().map_err(|_| AdminError::NotFound)?;
    let run = state.store().run(id).await?.ok_or(AdminError::NotFound)?;
    let page = DetailPage {
        frame: Frame::of(&session.0),
        run: RunRow::from(&run),
        error: run.error.clone(),
        collected: run.blobs_collected,
        repos: run.repos.iter().map(RepoRow::from).collect(),
    };
    Ok(render(StatusCode::OK, &page))
}
