//! Mirror admins hear when their mirror changes standing: disabled automatically after
//! failed crawls, re-enabled by a good one, or more than `notify.lag_generations` behind.
//! The crawler reports every crawl on a bounded queue (never waiting); [`run`] decides what
//! is news, holds each mirror to one notice per `notify.min_interval`, and sends it by
//! e-mail (SMTP with rustls: STARTTLS or implicit TLS) to the mirror's owner and the
//! configured operators, and as JSON to an optional webhook. Every notice sent, failed or
//! held back is in the audit log. A failing SMTP server or webhook costs the crawl nothing.
//! Imports `model`, `store`, `crawl` (the report type), `config` and `clock`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

use crate::clock::Clock;
use crate::config::{NotifySettings, SmtpSecurity};
use crate::crawl::Crawled;
use crate::model::{AuditEntry, CrawlResult, Generation, MirrorName};
use crate::store::Store;

/// Crawl reports waiting to be looked at, at most.
pub const QUEUE: usize = 4096;
/// How long one SMTP session or webhook call may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// What happened to a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Disabled by the crawler after failed crawls in a row.
    AutoDisabled { reason: String },
    /// A crawl passed again: back in rotation.
    ReEnabled,
    /// Verified, but this many generations behind.
    Lagging { behind: u64 },
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::AutoDisabled { .. } => "auto-disabled",
            Event::ReEnabled => "re-enabled",
            Event::Lagging { .. } => "lagging",
        }
    }

    fn headline(&self, mirror: &MirrorName) -> String {
        match self {
            Event::AutoDisabled { .. } => format!("mirror {mirror} was disabled automatically"),
            Event::ReEnabled => format!("mirror {mirror} is back in rotation"),
            Event::Lagging { behind } => format!("mirror {mirror} is {behind} generations behind"),
        }
    }
}

/// What the crawler's report means for the mirror's admin, if anything. `lagging` holds
/// the mirrors already reported as behind (so that is said once, until they catch up).
pub fn news(c: &Crawled, lag_generations: u64, lagging: &mut HashSet<MirrorName>) -> Option<Event> {
    let name = &c.after.mirror.name;
    match (&c.before.auto_disabled, &c.after.health.auto_disabled) {
        (None, Some(reason)) => {
            lagging.remove(name);
            return Some(Event::AutoDisabled { reason: reason.clone() });
        }
        (Some(_), None) => return Some(Event::ReEnabled),
        _ => {}
    }
    let behind = c.after.health.generation.map(|g| c.current.saturating_sub(g))?;
    if lag_generations == 0 || behind < lag_generations {
        lagging.remove(name);
        return None;
    }
    lagging.insert(name.clone()).then_some(Event::Lagging { behind })
}

/// A notice as the webhook receives it (stable field names).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub mirror: MirrorName,
    #[serde(flatten)]
    pub event: Event,
    pub at: DateTime<Utc>,
    pub current_generation: Generation,
    /// The generation verified on the mirror, if any.
    pub mirror_generation: Option<Generation>,
    /// The last crawl: what it found.
    pub last_crawl: CrawlResult,
    /// The mirror's page in the admin UI.
    pub url: String,
}

impl Notice {
    fn subject(&self) -> String {
        format!("[Wharf] {}", self.event.headline(&self.mirror))
    }

    /// The e-mail's text (plain, no HTML).
    fn body(&self) -> String {
        let c = &self.last_crawl;
        let what = match &self.event {
            Event::AutoDisabled { reason } => format!(
                "Wharf stopped sending clients to your mirror: {reason}.\n\
                 It is checked again at every crawl and re-enabled by the first that passes."
            ),
            Event::ReEnabled => {
                "A crawl passed again: clients are sent to your mirror again.".into()
            }
            Event::Lagging { behind } => format!(
                "The newest generation verified on your mirror is {behind} behind the current one,\n\
                 so it gets only requests for what it holds. Check that its sync job runs."
            ),
        };
        let opt = |g: Option<Generation>| g.map_or("none".to_owned(), |g| g.to_string());
        format!(
            "{headline}.\n\n{what}\n\n\
             Last crawl: {at}\n  result: {result}\n  generation claimed: {claimed}, verified: {credited} (current: {current})\n  \
             checks: {checks}, downloads: {downloads}, took {ms} ms\n\n\
             Your mirror's page: {url}\n",
            headline = self.event.headline(&self.mirror),
            at = c.at.format("%Y-%m-%d %H:%M:%S UTC"),
            result = c.error.as_deref().unwrap_or("passed"),
            claimed = opt(c.claimed),
            credited = opt(c.credited),
            current = self.current_generation,
            checks = c.checks,
            downloads = c.downloads,
            ms = c.duration_ms,
            url = self.url,
        )
    }
}

pub struct NotifyCtx {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: NotifySettings,
    /// `server.public_url`, for the link to the mirror's page.
    pub public_url: String,
}

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

fn transport(ctx: &NotifyCtx) -> Result<Option<Smtp>, lettre::transport::smtp::Error> {
    let Some(s) = &ctx.settings.smtp else { return Ok(None) };
    // The server's certificate is checked against the system's CAs and `smtp_ca_file`.
    let tls = || {
        let mut params = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.ca_pem {
            params = params.add_root_certificate(Certificate::from_pem(pem)?);
        }
        params.build_rustls()
    };
    let builder = Smtp::builder_dangerous(&s.host);
    let builder = match s.security {
        SmtpSecurity::StartTls => builder.tls(Tls::Required(tls()?)),
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        SmtpSecurity::None => builder,
    };
    let mut builder = builder.port(s.port).timeout(Some(SEND_TIMEOUT));
    if let Some((user, password)) = &s.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    Ok(Some(builder.build()))
}

/// Look at each crawl report until the queue closes.
pub async fn run(mut reports: tokio::sync::mpsc::Receiver<Crawled>, ctx: NotifyCtx) {
    let smtp = match transport(&ctx) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the SMTP settings cannot be used; no e-mail notices");
            None
        }
    };
    let http = reqwest::Client::builder().timeout(SEND_TIMEOUT).build().unwrap_or_default();
    let mut lagging = HashSet::new();
    let mut last_sent: HashMap<MirrorName, DateTime<Utc>> = HashMap::new();
    while let Some(c) = reports.recv().await {
        let Some(event) = news(&c, ctx.settings.lag_generations, &mut lagging) else { continue };
        let name = c.after.mirror.name.clone();
        let now = ctx.clock.now();
        let interval = chrono::Duration::from_std(ctx.settings.min_interval).unwrap_or_default();
        if last_sent.get(&name).is_some_and(|t| now - *t < interval) {
            audit(
                &ctx,
                &name,
                "notify.held",
                format!("{}: within notify.min_interval", event.kind()),
            )
            .await;
            continue;
        }
        last_sent.insert(name.clone(), now);
        let notice = Notice {
            url: format!("{}/admin/mirrors/{}", ctx.public_url, name),
            mirror: name,
            event,
            at: now,
            current_generation: c.current,
            mirror_generation: c.after.health.generation,
            last_crawl: c.result,
        };
        if let Some(smtp) = &smtp {
            let to = recipients(&ctx, c.after.mirror.owner).await;
            let detail = match send_mail(&ctx, smtp, &notice, &to).await {
                Ok(()) => format!("{} to {}", notice.event.kind(), list(&to)),
                Err(e) => {
                    tracing::warn!(mirror = %notice.mirror, error = %e, "a notice e-mail failed");
                    format!("{} to {} failed: {e}", notice.event.kind(), list(&to))
                }
            };
            audit(&ctx, &notice.mirror, "notify.email", detail).await;
        }
        if let Some(url) = &ctx.settings.webhook {
            let sent = http.post(url.clone()).json(&notice).send().await;
            let detail = match sent.map(|r| r.status()) {
                Ok(s) if s.is_success() => format!("{} to the webhook", notice.event.kind()),
                Ok(s) => {
                    format!("{} to the webhook failed: HTTP {}", notice.event.kind(), s.as_u16())
                }
                Err(e) => format!("{} to the webhook failed: {e}", notice.event.kind()),
            };
            audit(&ctx, &notice.mirror, "notify.webhook", detail).await;
        }
    }
}

fn list(to: &[Mailbox]) -> String {
    if to.is_empty() {
        return "nobody (no address known)".into();
    }
    to.iter().map(|m| m.email.to_string()).collect::<Vec<_>>().join(", ")
}

/// The owner's address (if the mirror has an owner with one) and the operators'.
async fn recipients(ctx: &NotifyCtx, owner: Option<u64>) -> Vec<Mailbox> {
    let mut to: Vec<Mailbox> = Vec::new();
    if let Some(id) = owner {
        match ctx.store.users().await {
            Ok(users) => {
                let address =
                    users.into_iter().find(|u| u.id == id && !u.disabled).and_then(|u| u.email);
                if let Some(a) = address.and_then(|a| a.as_str().parse().ok()) {
                    to.push(Mailbox::new(None, a));
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the mirror's owner"),
        }
    }
    for a in &ctx.settings.operators {
        if !to.iter().any(|m| &m.email == a) {
            to.push(Mailbox::new(None, a.clone()));
        }
    }
    to
}

/// One message per recipient: an owner never sees the operators' addresses, nor they
/// each other's.
async fn send_mail(
    ctx: &NotifyCtx,
    smtp: &Smtp,
    notice: &Notice,
    to: &[Mailbox],
) -> Result<(), String> {
    let Some(settings) = &ctx.settings.smtp else { return Ok(()) };
    for m in to {
        let message = Message::builder()
            .from(settings.from.clone())
            .to(m.clone())
            .subject(notice.subject())
            .body(notice.body())
            .map_err(|e| e.to_string())?;
        smtp.send(message).await.map_err(|e| format!("{}: {e}", m.email))?;
    }
    Ok(())
}

async fn audit(ctx: &NotifyCtx, mirror: &MirrorName, action: &str, detail: String) {
    let entry = AuditEntry {
        at: ctx.clock.now(),
        actor: "notify".into(),
        action: action.into(),
        target: mirror.to_string(),
        detail,
    };
    if let Err(e) = ctx.store.record_audit(entry).await {
        tracing::error!(error = %e, "recording a notice in the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mirror, MirrorHealth, MirrorStatus};

    fn crawled(before: MirrorHealth, after: MirrorHealth, current: Generation) -> Crawled {
        let mirror = Mirror::new("m1".parse().unwrap());
        let result = CrawlResult {
            mirror: mirror.name.clone(),
            at: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            duration_ms: 5,
            claimed: after.generation,
            credited: after.generation,
            checks: 3,
            downloads: 1,
            error: None,
            registry: None,
        };
        Crawled {
            before,
            after: MirrorStatus { continent: None, mirror, health: after },
            result,
            current,
        }
    }

    #[test]
    fn only_changes_of_standing_are_news() {
        let held = |g| MirrorHealth { generation: Some(g), ..MirrorHealth::default() };
        let off = MirrorHealth {
            auto_disabled: Some("3 failed crawls".into()),
            ..MirrorHealth::default()
        };
        let mut lagging = HashSet::new();
        let mut news = |b, a, current| news(&crawled(b, a, current), 3, &mut lagging);
        assert_eq!(news(held(5), held(5), 5), None);
        assert_eq!(
            news(held(5), off.clone(), 5),
            Some(Event::AutoDisabled { reason: "3 failed crawls".into() })
        );
        assert_eq!(news(off.clone(), off.clone(), 5), None, "still off: said already");
        assert_eq!(news(off, held(5), 5), Some(Event::ReEnabled));
        assert_eq!(news(held(5), held(6), 8), None, "two behind");
        assert_eq!(news(held(6), held(6), 9), Some(Event::Lagging { behind: 3 }));
        assert_eq!(news(held(6), held(6), 10), None, "said once");
        assert_eq!(news(held(6), held(10), 10), None, "caught up");
        assert_eq!(
            news(held(10), held(10), 14),
            Some(Event::Lagging { behind: 4 }),
            "behind again"
        );
        let mut quiet = HashSet::new();
        assert_eq!(super::news(&crawled(held(1), held(1), 99), 0, &mut quiet), None, "0: off");
    }

    #[test]
    fn the_mail_says_what_happened_and_where_to_look() {
        let c = crawled(MirrorHealth::default(), MirrorHealth::default(), 7);
        let notice = Notice {
            mirror: c.after.mirror.name.clone(),
            event: Event::AutoDisabled { reason: "failed 3 crawls in a row".into() },
            at: c.result.at,
            current_generation: 7,
            mirror_generation: None,
            last_crawl: CrawlResult { error: Some("connection refused".into()), ..c.result },
            url: "https://wharf.example/admin/mirrors/m1".into(),
        };
        assert_eq!(notice.subject(), "[Wharf] mirror m1 was disabled automatically");
        let body = notice.body();
        for want in [
            "failed 3 crawls in a row",
            "result: connection refused",
            "current: 7",
            "https://wharf.example/admin/mirrors/m1",
        ] {
            assert!(body.contains(want), "{want} in {body}");
        }
        let json = serde_json::to_value(&notice).unwrap();
        assert_eq!(
            (json["event"].as_str(), json["mirror"].as_str()),
            (Some("auto-disabled"), Some("m1"))
        );
        assert_eq!(json["reason"], "failed 3 crawls in a row");
    }
}
