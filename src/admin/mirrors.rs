//! Mirror pages: a mirror admin registers, edits and opts in/out their own mirrors and sees
//! them as Wharf does; operators see every mirror, filter, approve, disable and enable them
//! (with a reason), and ask `/explain` questions. Someone else's mirror is "not found".

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::model::{
    CrawlResult, Mirror, MirrorName, MirrorPatch, MirrorState, MirrorStatus, RepoName, Role,
    UserName, rsync_commands,
};
use crate::service::MirrorChange;
use crate::store::MirrorEditError;

use super::{
    AdminError, AdminState, AnySession, Frame, MirrorAdminSession, OperatorSession, render,
    see_other, when,
};

/// Where a mirror admin is told to put the copy.
const RSYNC_DEST: &str = "/srv/wharf/";

/// A mirror in a table.
pub struct MirrorRow {
    pub name: String,
    pub active: bool,
    pub state: String,
    /// The state as a CSS class suffix (`opted-out`).
    pub state_key: &'static str,
    pub holds: String,
    pub lag: String,
    pub last_crawl: String,
    pub country: String,
    pub problem: String,
}

impl MirrorRow {
    pub fn new(m: &MirrorStatus, current: u64) -> MirrorRow {
        MirrorRow {
            name: m.mirror.name.to_string(),
            active: m.mirror.active,
            state: m.state().to_string(),
            state_key: m.state().as_str(),
            holds: m
                .health
                .generation
                .map(|g| format!("{g} of {current}"))
                .unwrap_or_else(|| "unverified".into()),
            lag: lag(m, current).map(|l| l.to_string()).unwrap_or_else(|| "–".into()),
            last_crawl: m.health.last_crawl.map(when).unwrap_or_else(|| "never".into()),
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

/// How many generations behind the mirror is; `None` when unverified.
fn lag(m: &MirrorStatus, current: u64) -> Option<u64> {
    m.health.generation.map(|g| current.saturating_sub(g))
}

/// The mirror, if this visitor may see it (its owner or an operator); else "not found".
async fn visible(
    state: &AdminState,
    who: &AnySession,
    name: &str,
) -> Result<MirrorStatus, AdminError> {
    let name: MirrorName = name.parse().map_err(|_| AdminError::NotFound)?;
    let m = state.store().mirror(&name).await?.ok_or(AdminError::NotFound)?;
    if who.session.role == Role::Operator || m.mirror.owner == Some(who.session.user_id) {
        Ok(m)
    } else {
        Err(AdminError::NotFound)
    }
}

/// The registration and edit form, as typed (kept when it is refused).
#[derive(Deserialize, Default, Clone)]
pub struct MirrorForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    urls: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    continent: String,
    #[serde(default)]
    bandwidth: String,
    #[serde(default)]
    asns: String,
    #[serde(default)]
    netblocks: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    registry_url: String,
    private: Option<String>,
    /// Operators only: the owning user's name.
    #[serde(default)]
    owner: String,
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty())
}

impl MirrorForm {
    fn of(m: &Mirror) -> MirrorForm {
        let join = |v: Vec<String>| v.join("\n");
        MirrorForm {
            csrf: String::new(),
            name: m.name.to_string(),
            urls: join(m.urls.clone()),
            country: m.country.clone().unwrap_or_default(),
            continent: m.continent_override.clone().unwrap_or_default(),
            bandwidth: m.bandwidth.to_string(),
            asns: m.asns.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            netblocks: join(m.netblocks.iter().map(|n| n.to_string()).collect()),
            content: m.content.to_string(),
            registry_url: m.registry_url.clone().unwrap_or_default(),
            private: m.private.then(|| "on".into()),
            owner: String::new(),
        }
    }

    /// The patch, with the owner (operators only) resolved from a user name. `current`: the
    /// netblocks the mirror has now (a mirror admin may keep wide ones an operator gave).
    async fn resolve(
        &self,
        state: &AdminState,
        operator: bool,
        current: &[ipnet::IpNet],
    ) -> Result<MirrorPatch, FieldErrors> {
        let mut patch = self.patch(operator, current)?;
        let owner = self.owner.trim();
        if operator && !owner.is_empty() {
            let user = match owner.parse::<UserName>() {
                Ok(name) => state.store().user_credentials(&name).await.ok().flatten(),
                Err(_) => None,
            };
            match user {
                Some((u, _)) => patch.owner = Some(u.id),
                None => return Err(FieldErrors::one("owner", format!("no user named {owner:?}"))),
            }
        }
        Ok(patch)
    }

    /// The patch the form asks for, or each field's error.
    pub(crate) fn patch(
        &self,
        operator: bool,
        current: &[ipnet::IpNet],
    ) -> Result<MirrorPatch, FieldErrors> {
        let mut errors = FieldErrors::default();
        let asns = words(&self.asns)
            .map(|a| a.trim_start_matches("AS").parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|_| {
                errors.add("asns", "ASNs are numbers, like 3320 or AS3320");
                Vec::new()
            });
        let bandwidth = self.bandwidth.trim().parse::<u32>().ok().filter(|b| *b > 0);
        if bandwidth.is_none() {
            errors.add("bandwidth", "bandwidth is a whole number of Mbit/s, at least 1");
        }
        let content = self.content.trim();
        let patch = MirrorPatch {
            urls: Some(words(&self.urls).map(str::to_owned).collect()),
            country: Some(self.country.trim().to_owned()),
            continent: operator.then(|| self.continent.trim().to_owned()),
            asns: Some(asns),
            netblocks: Some(words(&self.netblocks).map(str::to_owned).collect()),
            bandwidth,
            private: Some(self.private.is_some()),
            content: Some(if content.is_empty() { "all".into() } else { content.to_owned() }),
            registry_url: Some(self.registry_url.trim().to_owned()),
            ..MirrorPatch::default()
        };
        // Each field on its own, so every error lands next to its field.
        let probe = || {
            let mut m = Mirror::new("probe".parse().expect("a valid name"));
            m.urls = vec!["http://probe.invalid/".into()];
            m
        };
        let single: [(&str, MirrorPatch); 8] = [
            ("urls", MirrorPatch { urls: patch.urls.clone(), ..Default::default() }),
            ("bandwidth", MirrorPatch { bandwidth: patch.bandwidth, ..Default::default() }),
            ("asns", MirrorPatch { asns: patch.asns.clone(), ..Default::default() }),
            ("country", MirrorPatch { country: patch.country.clone(), ..Default::default() }),
            ("continent", MirrorPatch { continent: patch.continent.clone(), ..Default::default() }),
            ("netblocks", MirrorPatch { netblocks: patch.netblocks.clone(), ..Default::default() }),
            ("content", MirrorPatch { content: patch.content.clone(), ..Default::default() }),
            (
                "registry_url",
                MirrorPatch { registry_url: patch.registry_url.clone(), ..Default::default() },
            ),
        ];
        for (field, p) in single {
            if let Err(e) = p.apply(&mut probe()) {
                errors.add(field, &e.to_string());
            }
        }
        if patch.urls.as_ref().is_some_and(|u| u.is_empty()) {
            errors.add("urls", "at least one http:// or https:// URL of the tree root");
        }
        if !operator && let Err((field, e)) = patch.check_mirror_admin_limits(current) {
            errors.add(field.as_str(), &e.to_string());
        }
        if errors.0.is_empty() { Ok(patch) } else { Err(errors) }
    }
}

/// Form errors by field name.
#[derive(Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    fn add(&mut self, field: &'static str, message: &str) {
        if self.get(field).is_none() {
            self.0.push((field, message.to_owned()));
        }
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| *f == field).map(|(_, m)| m.as_str())
    }

    fn one(field: &'static str, message: String) -> FieldErrors {
        FieldErrors(vec![(field, message)])
    }

    /// A refused change, next to the field it is about; anything else is an error page.
    fn of(e: MirrorEditError) -> Result<FieldErrors, AdminError> {
        match e {
            MirrorEditError::Exists(_) => {
                Ok(FieldErrors::one("name", "this name is not available; choose another".into()))
            }
            MirrorEditError::Invalid(e) => Ok(FieldErrors::one("urls", e.to_string())),
            MirrorEditError::Limit(field, e) => Ok(FieldErrors::one(field.as_str(), e.to_string())),
            MirrorEditError::Unknown(_) => Err(AdminError::NotFound),
            MirrorEditError::Store(e) => Err(e.into()),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/mirrors/new.html")]
pub struct NewPage {
    frame: Frame,
    operator: bool,
    form: MirrorForm,
    errors: FieldErrors,
}

pub async fn new_form(session: MirrorAdminSession) -> HttpResponse {
    let form = MirrorForm { bandwidth: "100".into(), content: "all".into(), ..Default::default() };
    let operator = session.0.session.role == Role::Operator;
    let page =
        NewPage { frame: Frame::of(&session.0), operator, form, errors: FieldErrors::default() };
    render(StatusCode::OK, &page)
}

/// Register a mirror. A mirror admin's mirror is theirs and pending until an operator
/// approves it; an operator's is enabled at once.
pub async fn register(
    session: MirrorAdminSession,
    state: web::Data<AdminState>,
    form: web::Form<MirrorForm>,
) -> Result<HttpResponse, AdminError> {
    let s = &session.0;
    s.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let operator = s.session.role == Role::Operator;
    let refuse = |errors: FieldErrors, form: MirrorForm| {
        let page = NewPage { frame: Frame::of(s), operator, form, errors };
        Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page))
    };
    let name = match form.name.trim().parse::<MirrorName>() {
        Ok(n) => n,
        Err(e) => return refuse(FieldErrors::one("name", e.to_string()), form),
    };
    let patch = match form.resolve(&state, operator, &[]).await {
        Ok(p) => p,
        Err(errors) => return refuse(errors, form),
    };
    match state.change(s, &name, MirrorChange::Add(patch), "mirror.register").await {
        Ok(_) => Ok(see_other(&format!("/admin/mirrors/{name}?notice=saved"))),
        Err(e) => refuse(FieldErrors::of(e)?, form),
    }
}

pub struct CrawlRow {
    at: String,
    result: String,
    claimed: String,
    credited: String,
    checks: u32,
    downloads: u32,
    duration_ms: u64,
}

impl From<&CrawlResult> for CrawlRow {
    fn from(c: &CrawlResult) -> CrawlRow {
        let generation = |g: Option<u64>| g.map(|g| g.to_string()).unwrap_or_else(|| "–".into());
        CrawlRow {
            at: when(c.at),
            result: match (&c.error, c.credited) {
                (Some(e), _) => format!("failed: {e}"),
                (None, Some(_)) => "verified".into(),
                (None, None) => "not credited".into(),
            },
            claimed: generation(c.claimed),
            credited: generation(c.credited),
            checks: c.checks,
            downloads: c.downloads,
            duration_ms: c.duration_ms,
        }
    }
}

#[derive(Template)]
#[template(path = "admin/mirrors/detail.html")]
pub struct DetailPage {
    frame: Frame,
    operator: bool,
    row: MirrorRow,
    pending: bool,
    enabled: bool,
    owner: String,
    urls: Vec<String>,
    continent: String,
    facts: Vec<(&'static str, String)>,
    rsync: Vec<String>,
    /// (server, configuration) for serving the mirror's copy as a registry.
    registry_configs: Vec<(&'static str, String)>,
    form: MirrorForm,
    errors: FieldErrors,
    crawls: Vec<CrawlRow>,
    /// Redirects per hour and bytes per day (SVG).
    traffic: Vec<String>,
}

/// The web server configurations that serve `m`'s copy of the tree (at [`RSYNC_DEST`]) as
/// a registry, listening on its registry URL's port (80 when it has none).
fn registry_configs(rsync_url: &str, m: &Mirror) -> Vec<(&'static str, String)> {
    use crate::model::registry_view::{Server, ViewSite, server_config};
    let port = m
        .registry_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok()?.port_or_known_default())
        .unwrap_or(80)
        .to_string();
    let rsync = rsync_commands(rsync_url, &m.content, RSYNC_DEST);
    let site = ViewSite { root: RSYNC_DEST, listen: &port, rsync: &rsync };
    Server::ALL.into_iter().map(|s| (s.as_str(), server_config(s, &site))).collect()
}

/// Days of traffic the mirror page charts.
const TRAFFIC_DAYS: u64 = 30;

/// The mirror's traffic as charts: redirects in each of the last 48 hours, bytes of the
/// blobs redirected on each of the last [`TRAFFIC_DAYS`] days (UTC).
fn traffic_charts(rows: &[crate::model::MirrorTraffic], now_hour: u64) -> Vec<String> {
    let mut hours: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut days: std::collections::BTreeMap<u64, u64> = Default::default();
    for r in rows {
        *hours.entry(r.hour).or_default() += r.redirects;
        *days.entry(r.hour / 24).or_default() += r.bytes;
    }
    let hour_bars: Vec<(String, u64)> = (now_hour.saturating_sub(47)..=now_hour)
        .map(|h| (format!("{:02}h", h % 24), hours.get(&h).copied().unwrap_or(0)))
        .collect();
    let today = now_hour / 24;
    let day_bars: Vec<(String, u64)> = (today.saturating_sub(TRAFFIC_DAYS - 1)..=today)
        .map(|d| {
            let label = chrono::DateTime::from_timestamp((d * 86_400) as i64, 0)
                .map(|t| t.format("%m-%d").to_string())
                .unwrap_or_default();
            (label, days.get(&d).copied().unwrap_or(0))
        })
        .collect();
    vec![
        super::charts::bars(
            "Blob redirects to this mirror per hour (UTC), last 48 h",
            &hour_bars,
            |v| v.to_string(),
        ),
        super::charts::bars(
            "Bytes of the blobs redirected here per day, last 30 days",
            &day_bars,
            super::bytes,
        ),
    ]
}

async fn detail_page(
    state: &AdminState,
    who: &AnySession,
    m: MirrorStatus,
    form: Option<MirrorForm>,
    errors: FieldErrors,
) -> Result<DetailPage, AdminError> {
    let store = state.store();
    let generation = store.generation().await?;
    let crawls = store.crawl_history(&m.mirror.name, 50).await?;
    let now_hour = crate::model::hour_of(state.clock.now());
    let since = (now_hour / 24).saturating_sub(TRAFFIC_DAYS - 1) * 24;
    let traffic = traffic_charts(&store.mirror_traffic(&m.mirror.name, since).await?, now_hour);
    let owner = match m.mirror.owner {
        Some(id) => store
            .users()
            .await?
            .into_iter()
            .find(|u| u.id == id)
            .map(|u| u.name.to_string())
            .unwrap_or_else(|| format!("user #{id}")),
        None => "operators".into(),
    };
    let h = &m.health;
    // A record an older release stored may not pass today's checks: the mirror gets no
    // clients until it is edited, and its page says why.
    let bad_url = m.mirror.urls.iter().find_map(|u| crate::model::parse_base_url(u).err());
    let mut facts = vec![
        ("Content set", m.mirror.content.to_string()),
        ("Bandwidth", format!("{} Mbit/s", m.mirror.bandwidth)),
        ("ASNs", m.mirror.asns.iter().map(|a| format!("AS{a}")).collect::<Vec<_>>().join(", ")),
        (
            "Netblocks",
            m.mirror.netblocks.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
        ),
        ("Private", if m.mirror.private { "yes" } else { "no" }.into()),
        ("Last successful crawl", h.last_success.map(when).unwrap_or_else(|| "never".into())),
        ("Failed crawls in a row", h.consecutive_failures.to_string()),
        ("Last error", h.last_error.clone().unwrap_or_default()),
    ];
    if let Some(url) = &m.mirror.registry_url {
        facts.push(("Registry view", format!("{url}: {}", h.registry_state())));
    }
    if let Some(e) = bad_url {
        facts.push((
            "Excluded",
            format!("its stored record is not valid ({e}); save the form to fix it"),
        ));
    }
    Ok(DetailPage {
        frame: Frame::of(who),
        operator: who.session.role == Role::Operator,
        row: MirrorRow::new(&m, generation),
        pending: m.state() == MirrorState::Pending,
        enabled: m.mirror.enabled,
        owner: owner.clone(),
        urls: m.mirror.urls.clone(),
        continent: m.continent.clone().unwrap_or_default(),
        facts,
        registry_configs: registry_configs(&state.rsync_url, &m.mirror),
        rsync: rsync_commands(&state.rsync_url, &m.mirror.content, RSYNC_DEST),
        form: form.unwrap_or_else(|| {
            let mut f = MirrorForm::of(&m.mirror);
            if m.mirror.owner.is_some() {
                f.owner = owner.clone();
            }
            f
        }),
        errors,
        crawls: crawls.iter().map(CrawlRow::from).collect(),
        traffic,
    })
}

pub async fn detail(
    session: MirrorAdminSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    query: web::Query<super::dashboard::NoticeQuery>,
) -> Result<HttpResponse, AdminError> {
    let m = visible(&state, &session.0, &name).await?;
    let mut page = detail_page(&state, &session.0, m, None, FieldErrors::default()).await?;
    page.frame.notice = query.into_inner().notice();
    Ok(render(StatusCode::OK, &page))
}

/// Edit a mirror's fields. Changing URLs or the content set drops its crawl credit.
pub async fn edit(
    session: MirrorAdminSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    form: web::Form<MirrorForm>,
) -> Result<HttpResponse, AdminError> {
    let s = &session.0;
    s.check_csrf(&form.csrf)?;
    let m = visible(&state, s, &name).await?;
    let form = form.into_inner();
    let operator = s.session.role == Role::Operator;
    let patch = match form.resolve(&state, operator, &m.mirror.netblocks).await {
        Ok(p) => p,
        Err(errors) => {
            let page = detail_page(&state, s, m, Some(form), errors).await?;
            return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    };
    let name = m.mirror.name.clone();
    match state.change(s, &name, MirrorChange::Set(patch), "mirror.edit").await {
        Ok(_) => Ok(see_other(&format!("/admin/mirrors/{name}?notice=saved"))),
        Err(e) => {
            let errors = FieldErrors::of(e)?;
            let page = detail_page(&state, s, m, Some(form), errors).await?;
            Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}

#[derive(Deserialize)]
pub struct ActiveForm {
    csrf: String,
    active: bool,
}

/// Opt a mirror in or out: its admin's one button. Redirects follow at once.
pub async fn set_active(
    session: MirrorAdminSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    form: web::Form<ActiveForm>,
) -> Result<HttpResponse, AdminError> {
    let s = &session.0;
    s.check_csrf(&form.csrf)?;
    let name = visible(&state, s, &name).await?.mirror.name;
    let active = form.active;
    let patch = MirrorPatch { active: Some(active), ..Default::default() };
    let action = if active { "mirror.opt-in" } else { "mirror.opt-out" };
    state.change(s, &name, MirrorChange::Set(patch), action).await?;
    Ok(see_other("/admin/"))
}

#[derive(Deserialize)]
pub struct ApprovalForm {
    csrf: String,
    /// `approve`, `enable` or `disable`.
    action: String,
    #[serde(default)]
    reason: String,
}

/// An operator approves a pending mirror, or disables (with a reason) or enables one.
pub async fn approval(
    session: OperatorSession,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    form: web::Form<ApprovalForm>,
) -> Result<HttpResponse, AdminError> {
    let s = &session.0;
    s.check_csrf(&form.csrf)?;
    let m = visible(&state, s, &name).await?;
    let reason = form.reason.trim().to_owned();
    let patch = match form.action.as_str() {
        "approve" | "enable" => MirrorPatch { enabled: Some(true), ..Default::default() },
        "disable" if reason.is_empty() => {
            let mut page = detail_page(&state, s, m, None, FieldErrors::default()).await?;
            page.errors.add("reason", "say why the mirror is disabled; its admin sees it");
            return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        "disable" => {
            MirrorPatch { enabled: Some(false), reason: Some(reason.clone()), ..Default::default() }
        }
        _ => return Err(AdminError::NotFound),
    };
    let name = m.mirror.name;
    let action = format!("mirror.{}", form.action);
    state.change(s, &name, MirrorChange::Set(patch), &action).await?;
    Ok(see_other(&format!("/admin/mirrors/{name}?notice=saved")))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    country: String,
    #[serde(default)]
    state: String,
    /// Only mirrors at least this many generations behind (or unverified).
    #[serde(default)]
    min_lag: String,
}

#[derive(Template)]
#[template(path = "admin/mirrors/list.html")]
pub struct ListPage {
    frame: Frame,
    mirrors: Vec<MirrorRow>,
    total: usize,
    country: String,
    state: String,
    min_lag: String,
    states: [&'static str; 5],
}

/// Every mirror, filtered by country, state and lag.
pub async fn list(
    session: OperatorSession,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let q = query.into_inner();
    let store = state.store();
    let generation = store.generation().await?;
    let all = store.mirrors().await?;
    let country = q.country.trim().to_ascii_uppercase();
    let min_lag: Option<u64> = q.min_lag.trim().parse().ok();
    let mirrors: Vec<MirrorRow> = all
        .iter()
        .filter(|m| country.is_empty() || m.mirror.country.as_deref() == Some(country.as_str()))
        .filter(|m| q.state.is_empty() || m.state().as_str() == q.state)
        .filter(|m| min_lag.is_none_or(|min| lag(m, generation).is_none_or(|l| l >= min)))
        .map(|m| MirrorRow::new(m, generation))
        .collect();
    let page = ListPage {
        frame: Frame::of(&session.0),
        mirrors,
        total: all.len(),
        country,
        state: q.state,
        min_lag: q.min_lag,
        states: MirrorState::ALL.map(MirrorState::as_str),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct ExplainQuery {
    #[serde(default)]
    ip: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    digest: String,
}

#[derive(Template)]
#[template(path = "admin/mirrors/explain.html")]
pub struct ExplainPage {
    frame: Frame,
    ip: String,
    name: String,
    digest: String,
    error: Option<String>,
    /// What the GeoIP lookup says about the address.
    location: String,
    pick: String,
    candidates: Vec<(String, String, String)>,
    excluded: Vec<(String, String)>,
}

/// What `/explain` says for a typed-in client address: where a blob request from there goes
/// and why every other mirror does not get it.
pub async fn explain(
    session: OperatorSession,
    state: web::Data<AdminState>,
    query: web::Query<ExplainQuery>,
) -> Result<HttpResponse, AdminError> {
    let q = query.into_inner();
    let mut page = ExplainPage {
        frame: Frame::of(&session.0),
        ip: q.ip.trim().to_owned(),
        name: q.name.trim().to_owned(),
        digest: q.digest.trim().to_owned(),
        error: None,
        location: String::new(),
        pick: String::new(),
        candidates: Vec::new(),
        excluded: Vec::new(),
    };
    if page.ip.is_empty() {
        return Ok(render(StatusCode::OK, &page));
    }
    let snapshot = state.jobs.selector().snapshot();
    let question = || -> Result<(std::net::IpAddr, RepoName, crate::model::Digest), String> {
        let ip = page
            .ip
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_canonical())
            .map_err(|_| format!("{:?} is not an IP address", page.ip))?;
        let repo = if page.name.is_empty() {
            state_first_repo(&snapshot).ok_or("no repository synced yet")?
        } else {
            page.name.parse::<RepoName>().map_err(|e| e.to_string())?
        };
        let digest = if page.digest.is_empty() {
            snapshot.sample_blob(&repo).ok_or(format!("repository {repo} is unknown"))?
        } else {
            page.digest.parse().map_err(|e: crate::model::NameError| e.to_string())?
        };
        Ok((ip, repo, digest))
    };
    let (ip, repo, digest) = match question() {
        Ok(q) => q,
        Err(e) => {
            page.error = Some(e);
            return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    };
    let geo = state.geo.lookup(ip);
    let x = snapshot.explain(&repo, &digest, ip, geo, false, false, &mut rand::rng());
    page.name = repo.to_string();
    page.digest = digest.to_string();
    page.location = format!(
        "country {}, continent {}, ASN {}",
        x.geo.country.unwrap_or("unknown"),
        x.geo.continent.unwrap_or("unknown"),
        x.geo.asn.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into())
    );
    page.pick = match (&x.pick.mirror, x.pick.tier) {
        (Some(m), Some(t)) => format!("{m} ({t:?} tier): {}", x.pick.url),
        _ => format!("the fallback: {}", x.pick.url),
    };
    page.candidates = x
        .candidates
        .iter()
        .map(|c| (c.mirror.to_string(), format!("{:?}", c.tier), c.url.clone()))
        .collect();
    page.excluded = x
        .excluded
        .iter()
        .map(|e| {
            let why = serde_json::to_value(&e.why).map(|v| v.to_string()).unwrap_or_default();
            (e.mirror.to_string(), why)
        })
        .collect();
    if x.blob.is_none() {
        page.error = Some(format!("repository {repo} does not reach {digest}"));
    }
    Ok(render(StatusCode::OK, &page))
}

fn state_first_repo(snapshot: &crate::geo::Snapshot) -> Option<RepoName> {
    snapshot.repo_names().min().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MirrorTraffic;

    #[test]
    fn traffic_charts_show_hours_and_days_with_the_gaps_as_zero() {
        let now = 500_000; // an hour since the epoch
        let row = |hour, redirects, bytes| MirrorTraffic {
            hour,
            mirror: "m".parse().unwrap(),
            redirects,
            bytes,
        };
        let charts = traffic_charts(
            &[row(now - 50, 9, 1 << 30), row(now - 1, 4, 2048), row(now, 3, 1024)],
            now,
        );
        let (hours, days) = (&charts[0], &charts[1]);
        // 48 hourly bars; the one 50 hours ago is outside them.
        assert_eq!(hours.matches("class=\"bar\"").count(), 48, "{hours}");
        assert!(
            hours.contains(": 4</title>")
                && hours.contains(": 3</title>")
                && !hours.contains(": 9<")
        );
        assert_eq!(days.matches("class=\"bar\"").count(), 30, "{days}");
        assert!(days.contains("1.0 GiB") || days.contains("1 GiB"), "{days}");
        assert!(traffic_charts(&[], now)[0].contains("nothing to show yet"));
    }
}
