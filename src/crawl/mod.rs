//! The crawler: checks every enabled mirror over HTTP(S). A mirror is credited with
//! generation G only when its marker says G and a sample of G's blobs passes: HEAD (status
//! and size) for the blobs new in G (up to a bound) and random older ones, plus a few full
//! downloads checked by sha256 — so a corrupt or partial mirror is caught, not only a
//! missing one. Failing mirrors are disabled automatically after `max_failures` crawls in a
//! row and re-enabled by the next successful one.
//! Imports `model`, `store`, `config`, `clock`; never actix or askama.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::clock::Clock;
use crate::config::CrawlSettings;
use crate::model::{ContentSet, CrawlResult, Digest, Generation, MirrorHealth, MirrorStatus};
use crate::store::{BlobFacts, ContentSource, PoolFacts, Store, StoreError};

mod net;
mod registry;

/// HEAD requests in flight per mirror.
const CHECKS_IN_FLIGHT: usize = 4;
/// The marker's name at the tree root (see `tree::MARKER_FILE`).
const MARKER_FILE: &str = "wharf-generation.json";

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("crawler setup: {0}")]
    Setup(String),
}

pub struct CrawlCtx {
    pub store: Store,
    /// The current content facts: never a store scan per crawl.
    content: ContentSource,
    pub settings: CrawlSettings,
    pub clock: Arc<dyn Clock>,
    /// Fixed seed for the blob sample (tests); `None`: fresh randomness each run.
    pub seed: Option<u64>,
    /// Where each mirror's crawl is reported for notices (`notify`); never waited on: when
    /// the queue is full the report is dropped.
    pub events: Option<tokio::sync::mpsc::Sender<Crawled>>,
    http: reqwest::Client,
}

/// One mirror's crawl as it changed the mirror's standing.
#[derive(Debug, Clone)]
pub struct Crawled {
    /// The mirror's health before the crawl.
    pub before: MirrorHealth,
    /// The mirror with its health after.
    pub after: MirrorStatus,
    pub result: CrawlResult,
    /// The current generation during the crawl.
    pub current: Generation,
}

impl CrawlCtx {
    pub fn new(
        store: Store,
        content: ContentSource,
        settings: CrawlSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<CrawlCtx, CrawlError> {
        let http = net::client(settings.request_timeout, settings.allow_private_addresses)
            .map_err(|e| CrawlError::Setup(e.to_string()))?;
        Ok(CrawlCtx { store, content, settings, clock, seed: None, events: None, http })
    }
}

/// How far the current generation has propagated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    pub generation: Generation,
    pub current: usize,
    pub previous: usize,
    pub older: usize,
    pub unknown: usize,
}

impl Propagation {
    pub fn of(generation: Generation, mirrors: &[MirrorStatus]) -> Propagation {
        let mut p = Propagation { generation, ..Propagation::default() };
        for m in mirrors.iter().filter(|m| m.mirror.enabled) {
            match m.health.generation {
                Some(g) if g >= generation => p.current += 1,
                Some(g) if g + 1 == generation => p.previous += 1,
                Some(_) => p.older += 1,
                None => p.unknown += 1,
            }
        }
        p
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrawlReport {
    pub results: Vec<CrawlResult>,
    pub propagation: Propagation,
}

/// Crawl every enabled mirror once and record the results. Mirrors are taken in random
/// order, so when the total time bound cuts a run short it is not always the same ones that
/// wait; those not reached are reported as skipped and keep their health.
pub async fn run_once(ctx: &CrawlCtx) -> Result<CrawlReport, CrawlError> {
    let facts = (ctx.content)();
    let mut mirrors: Vec<MirrorStatus> =
        ctx.store.mirrors().await?.into_iter().filter(|m| m.mirror.enabled).collect();
    let seed = ctx.seed.unwrap_or_else(rand::random);
    mirrors.shuffle(&mut StdRng::seed_from_u64(seed));
    let deadline = tokio::time::Instant::now() + ctx.settings.total_timeout;
    let results: Vec<Option<(MirrorStatus, CrawlResult, MirrorHealth)>> =
        stream::iter(mirrors.into_iter().enumerate())
            .map(|(i, m)| {
                let facts = facts.clone();
                async move {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        tracing::warn!(mirror = %m.mirror.name, "not crawled: the run's time bound was reached");
                        return None;
                    }
                    let started = ctx.clock.now();
                    let t0 = Instant::now();
                    let budget = ctx.settings.mirror_timeout.min(left);
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
                    let checked = tokio::time::timeout(budget, async {
                        let verdict = crawl_mirror(ctx, facts.clone(), &m, &mut rng).await;
                        let registry = match (&m.mirror.registry_url, &verdict.error) {
                            (Some(url), None) => Some(
                                registry::check(ctx, &facts, &m, verdict.claimed, url, &mut rng)
                                    .await,
                            ),
                            _ => None,
                        };
                        (verdict, registry)
                    })
                    .await;
                    let (outcome, registry) = checked.unwrap_or_else(|_| {
                        (Verdict::failed(format!("no answer within {budget:?}")), None)
                    });
                    let result = CrawlResult {
                        mirror: m.mirror.name.clone(),
                        at: started,
                        duration_ms: t0.elapsed().as_millis() as u64,
                        claimed: outcome.claimed,
                        credited: outcome.error.is_none().then_some(outcome.claimed).flatten(),
                        checks: outcome.checks,
                        downloads: outcome.downloads,
                        error: outcome.error,
                        registry,
                    };
                    let health = next_health(m.health.clone(), &result, ctx.settings.max_failures);
                    Some((m, result, health))
                }
            })
            .buffer_unordered(ctx.settings.concurrency)
            .collect()
            .await;
    let mut out = Vec::new();
    for (m, result, health) in results.into_iter().flatten() {
        match &result.error {
            None => {
                tracing::info!(mirror = %result.mirror, generation = ?result.credited, "mirror verified")
            }
            Some(e) => {
                tracing::warn!(mirror = %result.mirror, error = %e, "mirror failed its crawl")
            }
        }
        let report = ctx.events.as_ref().map(|tx| {
            let after = MirrorStatus { health: health.clone(), ..m.clone() };
            (
                tx,
                Crawled {
                    before: m.health.clone(),
                    after,
                    result: result.clone(),
                    current: facts.generation,
                },
            )
        });
        ctx.store.record_crawl(m.mirror, result.clone(), health).await?;
        if let Some((tx, crawled)) = report
            && tx.try_send(crawled).is_err()
        {
            tracing::warn!(mirror = %result.mirror, "the notice queue is full: a crawl report is dropped");
        }
        out.push(result);
    }
    out.sort_by(|a, b| a.mirror.cmp(&b.mirror));
    let generation = ctx.store.generation().await?;
    let propagation = Propagation::of(generation, &ctx.store.mirrors().await?);
    tracing::info!(
        mirrors = out.len(),
        failed = out.iter().filter(|r| r.error.is_some()).count(),
        current = propagation.current,
        "crawl finished"
    );
    Ok(CrawlReport { results: out, propagation })
}

/// A mirror's health after a crawl.
pub fn next_health(prev: MirrorHealth, result: &CrawlResult, max_failures: u32) -> MirrorHealth {
    let mut h = prev;
    h.last_crawl = Some(result.at);
    (h.registry_generation, h.registry_error) = match &result.registry {
        Some(Ok(())) => (result.credited, None),
        Some(Err(e)) => (None, Some(e.clone())),
        None => (None, None),
    };
    match &result.error {
        None => {
            h.generation = result.credited;
            h.last_success = Some(result.at);
            h.last_error = None;
            h.consecutive_failures = 0;
            h.auto_disabled = None;
        }
        Some(e) => {
            // Unverified now: no traffic until a crawl verifies it again.
            h.generation = None;
            h.last_error = Some(e.clone());
            h.consecutive_failures += 1;
            if h.consecutive_failures >= max_failures {
                h.auto_disabled = Some(format!(
                    "{} consecutive failed crawls; last: {e}",
                    h.consecutive_failures
                ));
            }
        }
    }
    h
}

/// What one mirror's crawl found.
struct Verdict {
    claimed: Option<Generation>,
    checks: u32,
    downloads: u32,
    error: Option<String>,
}

impl Verdict {
    fn failed(error: String) -> Verdict {
        Verdict { claimed: None, checks: 0, downloads: 0, error: Some(error) }
    }
}

#[derive(Deserialize)]
struct Marker {
    generation: Generation,
}

/// Blobs larger than this are checked by HEAD only, never downloaded in full.
const MAX_DOWNLOAD: u64 = 64 * 1024 * 1024;

/// Crawl a mirror through each of its URLs (clients may be sent to any of them); it is
/// credited only if every URL passes.
async fn crawl_mirror(
    ctx: &CrawlCtx,
    facts: Arc<PoolFacts>,
    m: &MirrorStatus,
    rng: &mut StdRng,
) -> Verdict {
    let mut facts = facts;
    let mut total = Verdict { claimed: None, checks: 0, downloads: 0, error: None };
    if m.mirror.urls.is_empty() {
        return Verdict::failed("no URL".into());
    }
    for base in &m.mirror.urls {
        if let Err(e) = net::check_url(base, ctx.settings.allow_private_addresses) {
            return Verdict { error: Some(format!("{base}: {e}")), ..total };
        }
        let marker_url = format!("{base}{MARKER_FILE}");
        let claimed = match get_marker(&ctx.http, &marker_url).await {
            Ok(g) => g,
            Err(e) => return Verdict { error: Some(format!("{base}: {e}")), ..total },
        };
        if total.claimed.is_some_and(|c| c != claimed) {
            total.error = Some(format!(
                "{base} claims generation {claimed}, another URL {}",
                total.claimed.unwrap_or(0)
            ));
            return total;
        }
        total.claimed = Some(claimed);
        if claimed > facts.generation {
            // A sync may have published since this crawl began.
            facts = (ctx.content)();
            if claimed > facts.generation {
                total.error = Some(format!(
                    "claims generation {claimed}, newer than Wharf's {}",
                    facts.generation
                ));
                return total;
            }
        }
        let sample = sample(&facts, claimed, &m.mirror.content, &ctx.settings, rng);
        let url = |d: &Digest| format!("{base}blobs/sha256/{}", d.hex());
        // Owned values: the stream's futures must not borrow from the sample.
        let checks: Vec<(String, Digest, u64)> =
            sample.heads.iter().map(|(d, b)| (url(d), d.clone(), b.size)).collect();
        let heads: Vec<Result<(), String>> = stream::iter(checks)
            .map(|(u, d, size)| async move { head_check(&ctx.http, u, &d, size).await })
            .buffer_unordered(CHECKS_IN_FLIGHT)
            .collect()
            .await;
        total.checks += heads.len() as u32;
        if let Some(Err(e)) = heads.into_iter().find(Result::is_err) {
            total.error = Some(e);
            return total;
        }
        for (d, b) in &sample.downloads {
            total.downloads += 1;
            let timeout = ctx.settings.mirror_timeout;
            if let Err(e) = download_check(&ctx.http, url(d), d, b.size, timeout).await {
                total.error = Some(e);
                return total;
            }
        }
    }
    total
}

struct Sample<'a> {
    heads: Vec<(Digest, &'a BlobFacts)>,
    downloads: Vec<(Digest, &'a BlobFacts)>,
}

/// The blobs to check for a mirror claiming `generation`: those new in it (up to a bound)
/// and random older ones, all within its content set; downloads are drawn from them, new
/// ones first. Drawn without looking at every blob: the new ones from the facts' index by
/// generation, the older ones by random positions.
fn sample<'a>(
    facts: &'a PoolFacts,
    generation: Generation,
    content: &ContentSet,
    s: &CrawlSettings,
    rng: &mut StdRng,
) -> Sample<'a> {
    let older = |b: &BlobFacts| facts.carried_since(b, content).is_some_and(|g| g < generation);
    let (new, old) = if facts.len() <= EXACT_SAMPLE_BELOW {
        // Small pools: exact (a scan costs nothing there), in digest order so a seed gives
        // the same sample.
        let mut new: Vec<(Digest, &BlobFacts)> = facts
            .new_in(generation)
            .iter()
            .filter_map(|&i| facts.nth(i as usize))
            .filter(|(_, b)| facts.carried_since(b, content) == Some(generation))
            .collect();
        new.shuffle(rng);
        new.truncate(s.new_blobs);
        let all: Vec<_> = facts.iter().filter(|(_, b)| older(b)).collect();
        (new, all.choose_multiple(rng, s.random_blobs).cloned().collect())
    } else {
        // Large pools: random positions, in the list of blobs new in the generation (after a
        // first sync that is every blob) and in the whole pool; only the chosen ones are
        // looked at. Enough draws to find what a mirror carries even when it is rare.
        let draw = |positions: &mut dyn FnMut(&mut StdRng) -> Option<usize>,
                    want: usize,
                    keep: &dyn Fn(&BlobFacts) -> bool,
                    rng: &mut StdRng| {
            let mut out = Vec::new();
            let mut tried = std::collections::HashSet::new();
            for _ in 0..want.saturating_mul(64) {
                if out.len() >= want {
                    break;
                }
                let Some(i) = positions(rng) else { break };
                if tried.insert(i) && facts.facts_at(i).is_some_and(keep) {
                    out.extend(facts.nth(i));
                }
            }
            out
        };
        let fresh = facts.new_in(generation);
        let new = draw(
            &mut |rng| fresh.choose(rng).map(|&i| i as usize),
            s.new_blobs,
            &|b| facts.carried_since(b, content) == Some(generation),
            rng,
        );
        let n = facts.len();
        let old = draw(&mut |rng| Some(rng.random_range(0..n)), s.random_blobs, &older, rng);
        (new, old)
    };
    let downloads = new
        .iter()
        .chain(old.iter())
        .filter(|(_, b)| b.size <= MAX_DOWNLOAD)
        .take(s.downloads)
        .cloned()
        .collect();
    Sample { heads: new.into_iter().chain(old).collect(), downloads }
}

/// Pools smaller than this are sampled exactly (a scan costs nothing there).
const EXACT_SAMPLE_BELOW: usize = 10_000;

/// The largest generation marker read.
const MAX_MARKER: usize = 4096;

/// Read the marker, stopping as soon as it is larger than [`MAX_MARKER`].
async fn get_marker(http: &reqwest::Client, url: &str) -> Result<Generation, String> {
    let resp = http.get(url).send().await.map_err(|e| format!("marker: {}", net::classify(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {} for the marker", resp.status().as_u16()));
    }
    let mut bytes = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("marker: {}", net::classify(&e)))?;
        if bytes.len() + chunk.len() > MAX_MARKER {
            return Err(format!("the marker is larger than {MAX_MARKER} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    // The parser's message would quote the mirror's content: say only what is wrong.
    match serde_json::from_slice::<Marker>(&bytes) {
        Ok(m) => Ok(m.generation),
        Err(e) if e.is_data() => Err("the marker has no valid generation number".into()),
        Err(_) => Err("the marker is not valid JSON".into()),
    }
}

async fn head_check(
    http: &reqwest::Client,
    url: String,
    digest: &Digest,
    size: u64,
) -> Result<(), String> {
    let resp =
        http.head(&url).send().await.map_err(|e| format!("{digest}: {}", net::classify(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{digest}: HTTP {} for HEAD", resp.status().as_u16()));
    }
    match resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        Some(n) if n == size => Ok(()),
        Some(n) => Err(format!("{digest}: {n} bytes, expected {size}")),
        None => Err(format!("{digest}: no Content-Length")),
    }
}

async fn download_check(
    http: &reqwest::Client,
    url: String,
    digest: &Digest,
    size: u64,
    timeout: Duration,
) -> Result<(), String> {
    let failed = |e: reqwest::Error| format!("{digest}: {}", net::classify(&e));
    let resp = http.get(&url).timeout(timeout).send().await.map_err(failed)?;
    if !resp.status().is_success() {
        return Err(format!("{digest}: HTTP {} for GET", resp.status().as_u16()));
    }
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(failed)?;
        n += chunk.len() as u64;
        if n > size {
            return Err(format!("{digest}: more than {size} bytes: corrupt"));
        }
        hasher.update(&chunk);
    }
    let actual = Digest::from_sha256(hasher.finalize().as_slice());
    if n != size || &actual != digest {
        return Err(format!("{digest}: the content hashes to {actual} ({n} bytes): corrupt"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::PoolFactsBuilder;

    /// A pool of `n` blobs: every third one arm64 (the rest amd64), first seen in generation
    /// 1 + i % 3.
    fn pool(n: usize) -> PoolFacts {
        let mut b = PoolFactsBuilder::new(3);
        for i in 0..n {
            let g = 1 + (i % 3) as u64;
            let arch = if i % 3 == 0 { "arm64" } else { "amd64" };
            b.blob(&Digest::of(&i.to_le_bytes()), 1, g, &BTreeMap::from([(arch.into(), g)]));
        }
        b.build()
    }

    fn settings() -> CrawlSettings {
        CrawlSettings {
            concurrency: 1,
            request_timeout: Duration::from_secs(1),
            mirror_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            new_blobs: 20,
            random_blobs: 30,
            downloads: 3,
            max_failures: 3,
            allow_private_addresses: false,
        }
    }

    #[test]
    fn the_sample_is_what_the_mirror_holds_at_any_pool_size() {
        let arm: ContentSet = "arm64".parse().unwrap();
        for n in [300, EXACT_SAMPLE_BELOW * 3] {
            let facts = pool(n);
            let mut rng = StdRng::seed_from_u64(5);
            for (content, claimed) in [(ContentSet::All, 3), (ContentSet::All, 2), (arm.clone(), 1)]
            {
                let s = sample(&facts, claimed, &content, &settings(), &mut rng);
                let since = |b: &BlobFacts| facts.carried_since(b, &content).unwrap();
                let new = s.heads.iter().filter(|(_, b)| since(b) == claimed).count();
                let old = s.heads.iter().filter(|(_, b)| since(b) < claimed).count();
                assert_eq!(
                    new + old,
                    s.heads.len(),
                    "nothing newer than claimed, none outside the set"
                );
                let distinct: std::collections::HashSet<_> =
                    s.heads.iter().map(|(d, _)| d).collect();
                assert_eq!(distinct.len(), s.heads.len(), "no blob twice");
                // Arm64 blobs are first seen in generation 1 only: none is older.
                let expect_old = if claimed == 1 { 0 } else { 30 };
                assert_eq!((new, old), (20, expect_old), "n={n} {content} {claimed}");
                assert_eq!(s.downloads.len(), 3);
            }
        }
    }
}
