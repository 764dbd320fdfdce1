//! The home page: operators get the dashboard (with live sync progress, "Sync now" and
//! "Crawl now"), mirror admins their own mirrors.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::{Deserialize, Serialize};

use crate::model::{EmailAddress, MirrorState, Role, hour_of};
use crate::sync::ProgressSnapshot;

use super::mirrors::MirrorRow;
use super::runs::RunRow;
use super::session::CsrfForm;
use super::{AdminError, AdminState, AnySession, Frame, OperatorSession, bytes, charts, render};

/// Runs shown in the charts.
const CHART_RUNS: usize = 20;

pub struct Overview {
    generation: u64,
    tree_size: String,
    repositories: usize,
    progress: Progress,
    last_run: Option<RunRow>,
    next_runs: Vec<(&'static str, String)>,
    by_state: Vec<(String, usize)>,
    /// (generation, mirrors holding it), newest first.
    propagation: Vec<(String, usize)>,
    errors: Vec<String>,
    charts: Vec<String>,
}

/// What the live-progress box shows; also the JSON of `/admin/progress`.
#[derive(Serialize)]
pub struct Progress {
    sync: ProgressSnapshot,
    crawl_running: bool,
    /// One line for people.
    summary: String,
}

fn progress(state: &AdminState) -> Progress {
    let sync = state.jobs.sync_progress();
    let crawl_running = state.jobs.crawl_running();
    let mut summary = if sync.running {
        format!(
            "Sync running: {}/{} repositories, {}/{} blobs, {} fetched{}",
            sync.repos_done,
            sync.repos_total,
            sync.blobs_done,
            sync.blobs_total,
            bytes(sync.bytes_done),
            if sync.current.is_empty() { String::new() } else { format!(" ({})", sync.current) }
        )
    } else {
        "No sync running.".to_owned()
    };
    summary.push_str(if crawl_running { " A crawl is running." } else { " No crawl running." });
    Progress { sync, crawl_running, summary }
}

#[derive(Template)]
#[template(path = "admin/dashboard/home.html")]
pub struct HomePage {
    frame: Frame,
    operator: Option<Overview>,
    mirrors: Vec<MirrorRow>,
    /// The address notices go to, as stored or as just typed (with `email_error`).
    email: String,
    email_error: Option<String>,
}

/// Operators see the whole appliance; mirror admins their own mirrors.
pub async fn home(
    session: AnySession,
    state: web::Data<AdminState>,
    query: web::Query<NoticeQuery>,
) -> Result<HttpResponse, AdminError> {
    let mut page = home_page(&session, &state, None).await?;
    page.frame.notice = query.into_inner().notice();
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct EmailForm {
    #[serde(default)]
    csrf: String,
    /// Empty: no notices by e-mail.
    #[serde(default)]
    email: String,
}

/// `POST /admin/account`: any user sets the address notices about their mirrors go to.
pub async fn set_own_email(
    session: AnySession,
    state: web::Data<AdminState>,
    form: web::Form<EmailForm>,
) -> Result<HttpResponse, AdminError> {
    session.check_csrf(&form.csrf)?;
    let typed = form.into_inner().email;
    let email = match EmailAddress::optional(&typed) {
        Ok(e) => e,
        Err(err) => {
            let page = home_page(&session, &state, Some((typed, err.to_string()))).await?;
            return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    };
    let detail = email.as_ref().map(EmailAddress::to_string).unwrap_or_default();
    crate::accounts::set_email(state.store(), &session.session.user, email)
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    let name = session.session.user.to_string();
    state.audit(&session, "user.email", &name, detail).await;
    Ok(HttpResponse::SeeOther().insert_header(("Location", "/admin/?notice=saved")).finish())
}

/// The home page; `typed` is a rejected address with the reason.
async fn home_page(
    session: &AnySession,
    state: &AdminState,
    typed: Option<(String, String)>,
) -> Result<HomePage, AdminError> {
    let store = state.store();
    let all = store.mirrors().await?;
    let generation = store.generation().await?;
    let operator = session.session.role == Role::Operator;
    let overview = if operator { Some(overview(state, generation, &all).await?) } else { None };
    let mirrors = all
        .iter()
        .filter(|m| operator || m.mirror.owner == Some(session.session.user_id))
        .map(|m| MirrorRow::new(m, generation))
        .collect();
    let (email, email_error) = match typed {
        Some((typed, error)) => (typed, Some(error)),
        None => {
            let user = store.user_credentials(&session.session.user).await?;
            let email = user.and_then(|(u, _)| u.email).map(String::from).unwrap_or_default();
            (email, None)
        }
    };
    let frame = Frame::of(session);
    Ok(HomePage { frame, operator: overview, mirrors, email, email_error })
}

async fn overview(
    state: &AdminState,
    generation: u64,
    all: &[crate::model::MirrorStatus],
) -> Result<Overview, AdminError> {
    let store = state.store();
    let runs = store.recent_runs(CHART_RUNS).await?;
    let now = state.clock.now();
    let schedules = state.jobs.schedules();
    let next_runs = [("sync", schedules.sync), ("crawl", schedules.crawl)]
        .into_iter()
        .map(|(job, cron)| {
            let next = crate::config::parse_cron(&cron)
                .ok()
                .and_then(|c| c.find_next_occurrence(&now, false).ok())
                .map(super::when)
                .unwrap_or_else(|| "never".into());
            (job, next)
        })
        .collect();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_generation: BTreeMap<std::cmp::Reverse<u64>, usize> = BTreeMap::new();
    let mut lag: BTreeMap<u64, u64> = BTreeMap::new();
    let mut unverified = 0;
    for m in all {
        *by_state.entry(m.state().as_str()).or_default() += 1;
        if m.state() == MirrorState::Pending {
            continue;
        }
        match m.health.generation {
            Some(g) => {
                *per_generation.entry(std::cmp::Reverse(g)).or_default() += 1;
                *lag.entry(generation.saturating_sub(g).min(5)).or_default() += 1;
            }
            None => unverified += 1,
        }
    }
    let mut propagation: Vec<(String, usize)> = per_generation
        .into_iter()
        .map(|(g, n)| {
            let label =
                if g.0 >= generation { format!("{} (current)", g.0) } else { g.0.to_string() };
            (label, n)
        })
        .collect();
    if unverified > 0 {
        propagation.push(("unverified".into(), unverified));
    }
    let mut errors: Vec<String> = runs.iter().take(5).flat_map(|r| r.errors().take(5)).collect();
    errors.extend(all.iter().filter_map(|m| {
        let e = m.health.auto_disabled.as_ref().or(m.health.last_error.as_ref())?;
        Some(format!("mirror {}: {e}", m.mirror.name))
    }));
    errors.truncate(20);

    let oldest_first: Vec<_> = runs.iter().rev().collect();
    let run_label = |r: &&crate::model::SyncRun| format!("#{}", r.id);
    let durations: Vec<(String, u64)> = oldest_first
        .iter()
        .map(|r| (run_label(r), (r.finished_at - r.started_at).num_milliseconds().max(0) as u64))
        .collect();
    let fetched: Vec<(String, u64)> =
        oldest_first.iter().map(|r| (run_label(r), r.bytes_fetched())).collect();
    let lag_bars: Vec<(String, u64)> = (0..=5)
        .map(|l| {
            let label = match l {
                0 => "current".to_owned(),
                5 => "5+".to_owned(),
                l => l.to_string(),
            };
            (label, lag.get(&l).copied().unwrap_or(0))
        })
        .chain([("unverified".to_owned(), unverified as u64)])
        .collect();
    let redirects = store.redirects_since(hour_of(now).saturating_sub(23)).await?;
    let mut by_tier: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_country: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_hour: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &redirects {
        *by_tier.entry(&r.tier).or_default() += r.count;
        *by_country.entry(&r.country).or_default() += r.count;
        *by_hour.entry(r.hour).or_default() += r.count;
    }
    let tier_bars: Vec<(String, u64)> = crate::geo::TIERS
        .iter()
        .map(|t| (t.to_string(), by_tier.get(t).copied().unwrap_or(0)))
        .collect();
    let mut country_bars: Vec<(String, u64)> =
        by_country.into_iter().map(|(c, n)| (c.to_owned(), n)).collect();
    country_bars.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    country_bars.truncate(12);
    let first_hour = hour_of(now).saturating_sub(23);
    let hour_bars: Vec<(String, u64)> = (first_hour..=hour_of(now))
        .map(|h| (format!("{:02}h", h % 24), by_hour.get(&h).copied().unwrap_or(0)))
        .collect();
    let count = |v: u64| v.to_string();
    let charts = vec![
        charts::bars("Sync duration per run", &durations, |ms| {
            format!("{:.1} s", ms as f64 / 1000.0)
        }),
        charts::bars("Bytes fetched per run", &fetched, bytes),
        charts::bars("Mirrors by generations behind", &lag_bars, count),
        charts::bars("Blob redirects by tier, last 24 h", &tier_bars, count),
        charts::bars("Blob redirects by client country, last 24 h", &country_bars, count),
        charts::bars("Blob redirects per hour (UTC), last 24 h", &hour_bars, count),
    ];
    Ok(Overview {
        generation,
        tree_size: bytes(state.jobs.selector().snapshot().pool_bytes),
        repositories: store.catalog().await?.len(),
        progress: progress(state),
        last_run: runs.first().map(RunRow::from),
        next_runs,
        by_state: by_state.into_iter().map(|(s, n)| (s.replace('-', " "), n)).collect(),
        propagation,
        errors,
        charts,
    })
}

/// `?notice=` after an action: only known notices are shown (no text from the URL).
#[derive(serde::Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

impl NoticeQuery {
    pub fn notice(self) -> Option<String> {
        let text = match self.notice.as_deref()? {
            "sync-started" => "Sync started.",
            "sync-running" => "A sync is already running; nothing new was started.",
            "crawl-started" => "Crawl started.",
            "crawl-running" => "A crawl is already running; nothing new was started.",
            "saved" => "Saved.",
            _ => return None,
        };
        Some(text.to_owned())
    }
}

/// `GET /admin/progress`: the live-progress box as JSON (polled by admin.js).
pub async fn progress_json(
    _session: OperatorSession,
    state: web::Data<AdminState>,
) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(progress(&state))
}

/// "Sync now": through the scheduler's lock, never overlapping a running sync.
pub async fn sync_now(
    session: OperatorSession,
    state: web::Data<AdminState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AdminError> {
    session.0.check_csrf(&form.csrf)?;
    let started = state.jobs.start_sync();
    if started {
        state.audit(&session.0, "sync.start", "tree", String::new()).await;
    }
    Ok(super::see_other(if started {
        "/admin/?notice=sync-started"
    } else {
        "/admin/?notice=sync-running"
    }))
}

/// "Crawl now": likewise.
pub async fn crawl_now(
    session: OperatorSession,
    state: web::Data<AdminState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AdminError> {
    session.0.check_csrf(&form.csrf)?;
    let started = state.jobs.start_crawl();
    if started {
        state.audit(&session.0, "crawl.start", "mirrors", String::new()).await;
    }
    Ok(super::see_other(if started {
        "/admin/?notice=crawl-started"
    } else {
        "/admin/?notice=crawl-running"
    }))
}
