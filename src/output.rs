//! What the one-shot commands print: summaries for people, JSON with `--json`, and the exit
//! code each outcome deserves.

use std::process::ExitCode;

use wharf::control::{MirrorDetail, Reply};
use wharf::model::{RunOutcome, SyncRun};

pub fn print(reply: &Reply, json: bool) -> anyhow::Result<ExitCode> {
    let as_json = |v: &dyn erased::Json| -> anyhow::Result<()> {
        println!("{}", v.pretty()?);
        Ok(())
    };
    match reply {
        Reply::Synced(run) => return report(run, json),
        Reply::Error(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": e }));
            }
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Reply::Progress(_) => anyhow::bail!("unexpected progress reply"),
        _ if json => match reply {
            Reply::Crawled(r) => {
                as_json(r)?;
                return Ok(crawl_code(r));
            }
            Reply::Mirrors { mirrors, propagation } => {
                as_json(&serde_json::json!({ "mirrors": mirrors, "propagation": propagation }))?
            }
            Reply::Mirror(m) => as_json(m.as_ref())?,
            Reply::Removed(name) => as_json(&serde_json::json!({ "removed": name }))?,
            Reply::User { user, generated_password } => as_json(
                &serde_json::json!({ "user": user, "generated_password": generated_password }),
            )?,
            Reply::Users(users) => as_json(users)?,
            Reply::BackedUp { path, records } => {
                as_json(&serde_json::json!({ "backup": path, "records": records }))?
            }
            Reply::Verified(r) => {
                as_json(r)?;
                return Ok(if r.damaged() { ExitCode::FAILURE } else { ExitCode::SUCCESS });
            }
            _ => unreachable!("handled above"),
        },
        Reply::Crawled(r) => {
            for c in &r.results {
                match (&c.error, c.credited) {
                    (None, Some(g)) => println!(
                        "{}: holds generation {g} ({} checks, {} downloads, {} ms)",
                        c.mirror, c.checks, c.downloads, c.duration_ms
                    ),
                    (None, None) => println!("{}: ok", c.mirror),
                    (Some(e), _) => println!("{}: FAILED: {e}", c.mirror),
                }
            }
            let p = &r.propagation;
            println!(
                "generation {}: {} mirrors current, {} one behind, {} older, {} unverified",
                p.generation, p.current, p.previous, p.older, p.unknown
            );
            return Ok(crawl_code(r));
        }
        Reply::Mirrors { mirrors, propagation: p } => {
            println!(
                "{:<20} {:<12} {:>10} {:<8} {:>9}  URLS",
                "NAME", "STATE", "GENERATION", "COUNTRY", "MBIT/S"
            );
            for m in mirrors {
                println!(
                    "{:<20} {:<12} {:>10} {:<8} {:>9}  {}",
                    m.mirror.name,
                    m.state().as_str(),
                    m.health.generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                    m.mirror.country.as_deref().unwrap_or("-"),
                    m.mirror.bandwidth,
                    m.mirror.urls.join(" ")
                );
            }
            println!(
                "generation {}: {} current, {} one behind, {} older, {} unverified",
                p.generation, p.current, p.previous, p.older, p.unknown
            );
        }
        Reply::Mirror(d) => show(d),
        Reply::Removed(name) => println!("removed mirror {name}"),
        Reply::User { user, generated_password } => {
            println!(
                "user {} ({}, id {}){}{}",
                user.name,
                user.role,
                user.id,
                if user.disabled { ", disabled" } else { "" },
                user.email.as_ref().map(|e| format!(", notices to {e}")).unwrap_or_default()
            );
            if let Some(p) = generated_password {
                println!("generated password (shown once): {p}");
            }
        }
        Reply::BackedUp { path, records } => {
            println!("backed up {records} records to {}", path.display());
        }
        Reply::Verified(r) => {
            println!(
                "checked {} pool files ({}); {} corrupt, {} missing, {} untracked",
                r.checked,
                human_bytes(r.bytes),
                r.corrupt.len(),
                r.missing.len(),
                r.untracked
            );
            for d in &r.corrupt {
                println!("corrupt: {d}");
            }
            for d in &r.missing {
                println!("missing: {d}");
            }
            for d in &r.repaired {
                println!("repaired: {d}");
            }
            for d in &r.unrepaired {
                println!("not repaired: {d}");
            }
            if r.damaged() {
                eprintln!("error: the tree is damaged; `wharf verify --repair` fetches it again");
                return Ok(ExitCode::FAILURE);
            }
        }
        Reply::Users(users) => {
            println!("{:<24} {:<13} {:>4} {:<9} LAST LOGIN", "NAME", "ROLE", "ID", "STATE");
            for u in users {
                println!(
                    "{:<24} {:<13} {:>4} {:<9} {}",
                    u.name,
                    u.role.to_string(),
                    u.id,
                    if u.disabled { "disabled" } else { "active" },
                    u.last_login
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Serialise anything serde can, pretty.
mod erased {
    pub trait Json {
        fn pretty(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> serde_json::Result<String> {
            serde_json::to_string_pretty(self)
        }
    }
}

fn show(d: &MirrorDetail) {
    let m = &d.status.mirror;
    let h = &d.status.health;
    println!("mirror {} ({})", m.name, d.status.state().as_str());
    println!("  urls:       {}", m.urls.join(" "));
    println!(
        "  country:    {} (continent {})",
        m.country.as_deref().unwrap_or("-"),
        d.status.continent.as_deref().unwrap_or("-")
    );
    println!(
        "  netblocks:  {}",
        m.netblocks.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
    );
    println!(
        "  asns:       {}",
        m.asns.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")
    );
    println!("  bandwidth:  {} Mbit/s{}", m.bandwidth, if m.private { ", private" } else { "" });
    println!("  content:    {}", m.content);
    if let Some(url) = &m.registry_url {
        println!("  registry:   {url} ({})", h.registry_state());
    }
    if let Some(r) = &m.disabled_reason {
        println!("  disabled:   {r}");
    }
    if let Some(r) = &h.auto_disabled {
        println!("  auto-disabled: {r}");
    }
    println!(
        "  holds:      {}",
        h.generation
            .map(|g| format!("generation {g}"))
            .unwrap_or_else(|| "nothing verified".into())
    );
    for c in &d.crawls {
        println!(
            "  crawl {}: {}",
            c.at.format("%Y-%m-%d %H:%M:%S"),
            c.error
                .clone()
                .unwrap_or_else(|| format!("ok, generation {}", c.credited.unwrap_or_default()))
        );
    }
}

pub use wharf::model::human_bytes;

/// A crawl in which some mirror failed exits 2 (like a partial sync), so cron and
/// monitoring notice.
fn crawl_code(r: &wharf::crawl::CrawlReport) -> ExitCode {
    if r.results.iter().any(|c| c.error.is_some()) { ExitCode::from(2) } else { ExitCode::SUCCESS }
}

pub fn report(run: &SyncRun, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(run)?);
    } else {
        let (added, moved, removed) = run
            .repos
            .iter()
            .fold((0, 0, 0), |a, r| (a.0 + r.tags_added, a.1 + r.tags_moved, a.2 + r.tags_removed));
        let attached: u32 = run.repos.iter().map(|r| r.attachments_changed).sum();
        println!(
            "sync run #{}: {:?} in {:.1}s — generation {} -> {}; {} repositories; tags +{added} ~{moved} -{removed}; {attached} attachments changed; {} blobs fetched ({}); {} collected",
            run.id,
            run.outcome,
            (run.finished_at - run.started_at).num_milliseconds() as f64 / 1000.0,
            run.generation_before,
            run.generation_after,
            run.repos.len(),
            run.blobs_fetched(),
            human_bytes(run.bytes_fetched()),
            run.blobs_collected,
        );
        for e in run.errors() {
            println!("  error: {e}");
        }
    }
    match run.outcome {
        RunOutcome::Ok => Ok(ExitCode::SUCCESS),
        RunOutcome::Partial => {
            eprintln!(
                "error: sync finished with errors (some tags or repositories kept their previous content)"
            );
            Ok(ExitCode::from(2))
        }
        RunOutcome::Failed => {
            eprintln!("error: sync failed; the previously published tree keeps serving");
            Ok(ExitCode::FAILURE)
        }
    }
}
