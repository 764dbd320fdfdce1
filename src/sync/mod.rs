//! Sync: copy the chosen repositories from the upstream into the store and the mirror tree.
//! The job is [`run_once`]; the scheduler decides when it runs and that runs never overlap.
//!
//! Order of publication (architecture invariant): pool files (verified) -> store commit
//! (tags, generation) -> repository layouts -> collected pool files removed -> generation
//! marker, last. A failed tag keeps its previous digest; a failed repository keeps its
//! previous tags; neither stops the others.
//! Imports `model`, `store`, `tree`, `config`, `clock`; never actix or askama.

mod attach;
mod auth;
mod lookaside;
mod oci_dir;
mod progress;
mod registry_client;
mod upstream;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use futures_util::{StreamExt, stream};

use crate::clock::Clock;
use crate::config::{Config, SyncSettings, UpstreamConfig};
use crate::model::registry_view;
use crate::model::{
    AttachmentTag, BlobRef, Digest, ManifestError, ManifestShape, RepoName, RepoReport, RunOutcome,
    SyncRun, Tag, media_type, platform_of_config,
};
use crate::store::{
    CommitOutcome, ContentSource, NewManifest, PoolFacts, Store, StoreError, SyncCommit,
};
use crate::tree::{Marker, MirrorTree, TreeError};

pub use progress::{ProgressSnapshot, SyncProgress};
pub use upstream::{FetchedManifest, ReferrerEntry, Upstream, UpstreamError, parse_referrers};
pub use verify::{VerifyReport, verify};

/// Index nesting deeper than this is refused (an index of indexes of images is the most seen).
const MAX_INDEX_DEPTH: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot list repositories at {upstream}: {source}")]
    Listing { upstream: String, source: UpstreamError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing the tree: {0}")]
    Tree(#[from] TreeError),
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("sync task failed: {0}")]
    Task(String),
    #[error("publishing the tree: {0}")]
    Publish(String),
    #[error("{}", Interrupted)]
    Interrupted,
    #[error(
        "{upstream} lists no repository to sync; refusing to remove all {known} published \
         repositories (check the upstream and upstream.repositories)"
    )]
    EmptyUpstream { upstream: String, known: usize },
}

/// Why one tag was not synced (the run goes on without it; the repository's report lists it).
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest digest mismatch: expected {expected}, bytes hash to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("child {0} is a schema 1 manifest")]
    Schema1Child(Digest),
    #[error("child {digest}: {source}")]
    Child { digest: Digest, source: Box<TagError> },
    #[error("index nesting deeper than {MAX_INDEX_DEPTH}")]
    TooDeep,
    /// The blob's download failed (shared by every tag that needs it).
    #[error("blob {digest}: {source}")]
    Blob { digest: Digest, source: Arc<TagError> },
    #[error("blob {digest} is {on_disk} bytes, the manifest says {declared}")]
    BlobSize { digest: Digest, on_disk: u64, declared: u64 },
    #[error("blob {0} missing")]
    BlobMissing(Digest),
    #[error("{referrer} is listed as a referrer of {subject} but does not name it as its subject")]
    NotAReferrer { referrer: Digest, subject: Digest },
    #[error("not published: no signature verifies ([sync.policy] require_signature): {0}")]
    Unsigned(String),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error("sync task failed: {0}")]
    Task(String),
}

/// The server is shutting down: work not started is not started.
#[derive(Debug, thiserror::Error)]
#[error("stopped at a safe point: the server is shutting down (nothing was committed)")]
pub struct Interrupted;

/// Called right after a sync's store commit that changed the generation, before the tree
/// is published (the server updates its content facts there, so it never redirects to a
/// blob about to be collected nor misses one just committed).
pub type CommitHook = Arc<
    dyn Fn(Arc<CommitOutcome>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Everything a sync run needs.
pub struct SyncCtx {
    pub store: Store,
    pub tree: MirrorTree,
    pub upstream: Upstream,
    pub filter: UpstreamConfig,
    pub settings: SyncSettings,
    pub grace: std::time::Duration,
    pub clock: Arc<dyn Clock>,
    pub progress: Arc<SyncProgress>,
    pub after_commit: Option<CommitHook>,
    /// The current content facts, if something keeps them (the server's selection state):
    /// the content-set lists are written from them rather than from a store scan.
    pub content: Option<ContentSource>,
    /// Set on shutdown: a running sync stops before its next repository or blob and
    /// commits nothing (downloaded pool files are adopted by the next run).
    pub stop: Arc<AtomicBool>,
    /// Tag lookups in flight at once (`[sync] concurrency`), over all the repositories a
    /// run is resolving.
    lookups: tokio::sync::Semaphore,
    /// The upstream's lookaside signature store, if configured.
    lookaside: Option<lookaside::Lookaside>,
    /// Whether the upstream answers the OCI referrers API (found out once a run).
    referrers_api: std::sync::atomic::AtomicU8,
}

/// Which repositories a run looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every wanted repository; those gone upstream are removed.
    All,
    /// Only these (a push notification), if wanted; nothing else is touched.
    Repos(BTreeSet<RepoName>),
}

impl SyncCtx {
    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl SyncCtx {
    pub fn new(
        config: &Config,
        store: Store,
        tree: MirrorTree,
        clock: Arc<dyn Clock>,
    ) -> Result<SyncCtx, SyncError> {
        Ok(SyncCtx {
            store,
            tree,
            upstream: Upstream::new(&config.upstream.source, &config.sync)?,
            filter: config.upstream.clone(),
            settings: config.sync.clone(),
            grace: config.gc_grace,
            clock,
            progress: Arc::default(),
            after_commit: None,
            content: None,
            stop: Arc::default(),
            lookups: tokio::sync::Semaphore::new(config.sync.concurrency),
            lookaside: config
                .upstream
                .lookaside
                .clone()
                .map(|url| lookaside::Lookaside::new(url, &config.sync))
                .transpose()?,
            referrers_api: attach::API_UNKNOWN.into(),
        })
    }
}

/// One sync run: fetch, commit, publish, record. Errors inside the run are reported in the
/// returned [`SyncRun`]; `Err` only when the run could not even be recorded.
pub async fn run_once(ctx: &SyncCtx) -> Result<SyncRun, SyncError> {
    run_scoped(ctx, &Scope::All).await
}

/// [`run_once`] over a [`Scope`].
pub async fn run_scoped(ctx: &SyncCtx, scope: &Scope) -> Result<SyncRun, SyncError> {
    let started_at = ctx.clock.now();
    ctx.progress.start();
    ctx.referrers_api.store(attach::API_UNKNOWN, std::sync::atomic::Ordering::Relaxed);
    let generation_before = ctx.store.generation().await?;
    let mut run = SyncRun {
        id: 0,
        started_at,
        finished_at: started_at,
        outcome: RunOutcome::Ok,
        generation_before,
        generation_after: generation_before,
        repos: Vec::new(),
        error: None,
        blobs_collected: 0,
    };
    let mut synced = 0;
    let result = match ctx.tree.sync_started() {
        Ok(()) => sync_and_publish(ctx, scope, &mut run, &mut synced).await,
        Err(e) => Err(e.into()),
    };
    // Only a crash or a kill leaves the flag: then the next start looks for what the run
    // left in the pool without a record.
    ctx.tree.sync_ended();
    if let Err(e) = result {
        tracing::error!(error = %e, "sync failed");
        run.error = Some(e.to_string());
    }
    let failed_repos = run.repos.iter().filter(|r| !r.errors.is_empty()).count();
    run.outcome = if run.error.is_some() || (failed_repos > 0 && failed_repos == synced) {
        RunOutcome::Failed
    } else if failed_repos > 0 {
        RunOutcome::Partial
    } else {
        RunOutcome::Ok
    };
    run.finished_at = ctx.clock.now();
    ctx.progress.finish();
    run.id = ctx.store.record_run(run.clone()).await?;
    tracing::info!(
        run = run.id,
        outcome = ?run.outcome,
        generation = run.generation_after,
        blobs = run.blobs_fetched(),
        bytes = run.bytes_fetched(),
        "sync finished"
    );
    Ok(run)
}

/// Sync every wanted repository, commit, publish. `synced` counts the repositories looked at.
async fn sync_and_publish(
    ctx: &SyncCtx,
    scope: &Scope,
    run: &mut SyncRun,
    synced: &mut usize,
) -> Result<(), SyncError> {
    let names = match scope {
        Scope::All => wanted_repositories(ctx).await?,
        Scope::Repos(repos) => repos
            .iter()
            .filter(|r| ctx.filter.wants(r.as_str()) && MirrorTree::can_publish(r))
            .cloned()
            .collect(),
    };
    *synced = names.len();
    let current = ctx.store.current_tags().await?;
    // An upstream that suddenly lists nothing is far more often broken than emptied.
    if *scope == Scope::All && names.is_empty() && !current.is_empty() {
        return Err(SyncError::EmptyUpstream {
            upstream: ctx.upstream.describe(),
            known: current.len(),
        });
    }
    let mut commit = SyncCommit {
        now: ctx.clock.now(),
        grace: chrono::Duration::from_std(ctx.grace).unwrap_or(chrono::Duration::MAX),
        ..SyncCommit::default()
    };
    ctx.progress.repos(names.len() as u64);
    // Tags are resolved (a HEAD each) for several repositories at once, in order; the
    // blobs of one repository are fetched and staged before the next one's, so the pool is
    // never asked for the same blob twice. A no-op run is a stream of HEADs.
    let empty = BTreeMap::new();
    let mut repos = stream::iter(names.iter().cloned())
        .map(|repo: RepoName| {
            let old = current.get(&repo).unwrap_or(&empty);
            async move {
                let tags = resolve_repo(ctx, &repo, old).await;
                (repo, tags)
            }
        })
        .buffered(ctx.settings.concurrency);
    while let Some((repo, tags)) = repos.next().await {
        if ctx.stopping() {
            return Err(SyncError::Interrupted);
        }
        ctx.progress.set_current(repo.as_str());
        let out = fetch_repo(ctx, &repo, tags).await;
        // What the repository fetched is recorded now, so a run holds a few repositories'
        // manifests at a time. The pool directory is synced once for the batch first: a
        // record never names a file a crash could lose.
        if !out.manifests.is_empty() || !out.blobs.is_empty() {
            let tree = ctx.tree.clone();
            tokio::task::spawn_blocking(move || tree.sync_pool())
                .await
                .map_err(|e| SyncError::Task(e.to_string()))??;
            ctx.store.stage(out.manifests, out.blobs, commit.now).await?;
        }
        if let Some(a) = out.attachments {
            commit.attachments.insert(repo.clone(), a);
        }
        commit.repos.insert(repo, out.tags);
        run.repos.push(out.report);
        ctx.progress.repo_done();
    }
    if ctx.stopping() {
        return Err(SyncError::Interrupted);
    }
    let wanted: HashSet<&RepoName> = names.iter().collect();
    if *scope == Scope::All {
        commit.removed_repos = current.keys().filter(|r| !wanted.contains(r)).cloned().collect();
    }
    for r in &commit.removed_repos {
        run.repos.push(RepoReport { repo: r.to_string(), ..RepoReport::default() });
    }

    ctx.progress.set_current("publishing");
    let outcome = Arc::new(ctx.store.commit_sync(commit).await?);
    // Same generation, same content: nothing for selection to learn.
    if let Some(hook) = ctx.after_commit.as_ref().filter(|_| outcome.changed()) {
        hook(outcome.clone()).await;
    }
    for report in &mut run.repos {
        if let Some(d) = report.repo.parse().ok().and_then(|r: RepoName| outcome.diffs.get(&r)) {
            report.tags_added = d.added;
            report.tags_moved = d.moved;
            report.tags_removed = d.removed;
            report.tags_unchanged = d.unchanged;
            report.attachments_changed = d.attachments;
        }
    }
    run.generation_after = outcome.generation;
    run.blobs_collected = outcome.collected.len() as u32;
    let changed = Changes {
        repos: outcome.changed_repos().cloned().collect(),
        content: outcome.changed(),
        unsigned: outcome.unsigned.clone(),
    };
    publish(ctx, outcome.generation, outcome.collected.clone(), Some(changed)).await
}

/// What a commit changed, for [`publish`] to touch only that.
pub struct Changes {
    /// Repositories whose tags changed (or that were removed).
    pub repos: Vec<RepoName>,
    /// Whether the generation changed (the content-set lists are rewritten).
    pub content: bool,
    /// Manifests whose signatures all went (their signature directories are removed).
    pub unsigned: Vec<(RepoName, Digest)>,
}

/// Bring the tree in line with the store: layouts, collected pool files, marker (last).
/// `changes`: only what a commit changed; `None`: everything (at start, after a crash), and
/// pool files the store does not know are adopted.
/// A layout that cannot be written does not stop the others or the marker (the pool, which
/// is what mirrors are checked against, is complete); the errors are returned afterwards.
pub async fn publish(
    ctx: &SyncCtx,
    generation: u64,
    collected: Vec<Digest>,
    changes: Option<Changes>,
) -> Result<(), SyncError> {
    let everything = changes.is_none();
    let (repos, rewrite_sets, unsigned) = match changes {
        None => (ctx.store.catalog().await?, true, Vec::new()),
        Some(c) => (c.repos, c.content, c.unsigned),
    };
    let blocking = |f: TreeWork| {
        let tree = ctx.tree.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&tree))
                .await
                .map_err(|e| SyncError::Task(e.to_string()))
        }
    };
    let mut errors = Vec::new();
    // Layouts a batch of repositories at a time: a full sync publishes every one, and
    // holding all their layouts at once would cost memory in proportion to the catalog.
    let mut kept: HashSet<RepoName> = HashSet::new();
    let mut signed: HashSet<(RepoName, Digest)> = HashSet::new();
    for batch in repos.chunks(LAYOUT_BATCH) {
        let layouts = ctx.store.layouts(Some(batch.to_vec())).await?;
        kept.extend(layouts.iter().map(|l| l.repo.clone()));
        if everything {
            let pairs = layouts
                .iter()
                .flat_map(|l| l.signatures.iter().map(|s| (l.repo.clone(), s.0.clone())));
            signed.extend(pairs);
        }
        errors.extend(
            blocking(Box::new(move |tree| {
                let failed = layouts.iter().filter_map(|l| {
                    tree.publish_layout(l).err().map(|e| format!("layout of {}: {e}", l.repo))
                });
                failed.collect()
            }))
            .await?,
        );
    }
    // The content-set lists name every layout's files (the registry view's as they are on
    // disk): rewritten when content changed, after the layouts and before the marker, from
    // the facts the server keeps when they are current, else from the store.
    if rewrite_sets {
        let facts = current_facts(ctx, generation).await?;
        let signatures = ctx.store.all_signatures().await?;
        errors.extend(
            blocking(Box::new(move |tree| {
                let mut repos: Vec<&RepoName> = facts.repo_names().collect();
                repos.sort();
                let written = tree.write_content_sets(&content_set_arches(&facts), |arch, out| {
                    write_content_set(tree, &facts, &repos, &signatures, arch, out)
                });
                written.err().map(|e| format!("content sets: {e}")).into_iter().collect()
            }))
            .await?,
        );
    }
    let now = ctx.clock.now();
    errors.extend(
        blocking(Box::new(move |tree| {
            let mut errors = Vec::new();
            let gone = if everything {
                tree.remove_other_layouts(&kept)
            } else {
                let removed: Vec<RepoName> =
                    repos.into_iter().filter(|r| !kept.contains(r)).collect();
                tree.remove_layouts(&removed)
            };
            if let Err(e) = gone {
                errors.push(e.to_string());
            }
            let unsigned = if everything {
                tree.remove_other_signatures(&signed)
            } else {
                tree.remove_signatures(&unsigned)
            };
            if let Err(e) = unsigned {
                errors.push(format!("signatures: {e}"));
            }
            for d in &collected {
                if let Err(e) = tree.remove_pool_file(d) {
                    errors.push(e.to_string());
                }
            }
            if tree.read_marker().map(|m| m.generation) != Some(generation)
                && let Err(e) = tree.write_marker(&Marker { generation, published_at: now })
            {
                errors.push(e.to_string());
            }
            errors
        }))
        .await?,
    );
    // Pool files the store does not know: an interrupted run's downloads, or collected files
    // whose deletion failed. They are tracked from now on and collected after the grace.
    if everything {
        adopt_orphans(ctx).await?;
    }
    if errors.is_empty() { Ok(()) } else { Err(SyncError::Publish(errors.join("; "))) }
}

/// A step of [`publish`] on the tree, run off the async workers; returns its errors.
type TreeWork = Box<dyn FnOnce(&MirrorTree) -> Vec<String> + Send>;

/// How many repositories' layouts [`publish`] reads and writes at a time.
const LAYOUT_BATCH: usize = 256;

/// The content facts of `generation`: those the server keeps if they are that
/// generation's, else read from the store.
async fn current_facts(ctx: &SyncCtx, generation: u64) -> Result<Arc<PoolFacts>, SyncError> {
    if let Some(facts) = ctx.content.as_ref().map(|c| c()).filter(|f| f.generation == generation) {
        return Ok(facts);
    }
    Ok(Arc::new(ctx.store.pool_facts().await?))
}

/// The architectures with a content-set list.
fn content_set_arches(facts: &PoolFacts) -> Vec<String> {
    let every = crate::store::EVERY_SET;
    facts.set_names().iter().filter(|k| k.as_str() != every).cloned().collect()
}

/// Write the content set of `arch`: the tree paths a mirror carrying only it needs, one a
/// line: the pool files and layout links of its blobs and of everything every set carries
/// (indexes, platform-less images, referrers, signatures), each layout's `oci-layout` and
/// `index.json`, the registry view's files of the manifests it carries, the lookaside
/// store's signatures, and the marker, last.
fn write_content_set(
    tree: &MirrorTree,
    facts: &PoolFacts,
    repos: &[&RepoName],
    signatures: &[(RepoName, Digest, usize)],
    arch: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    // `iter` is in digest order.
    for (d, _) in facts.iter().filter(|(_, b)| facts.in_set(b, arch)) {
        writeln!(out, "blobs/sha256/{}", d.hex())?;
    }
    for repo in repos {
        writeln!(out, "repositories/{repo}/oci-layout")?;
        writeln!(out, "repositories/{repo}/index.json")?;
        let mut carried = HashSet::new();
        for (d, _) in facts.repo_content(repo).filter(|(_, b)| facts.in_set(b, arch)) {
            writeln!(out, "repositories/{repo}/blobs/sha256/{}", d.hex())?;
            carried.insert(d);
        }
        for f in tree.view_files(repo, |d| carried.contains(d)).map_err(std::io::Error::other)? {
            writeln!(out, "{f}")?;
        }
    }
    writeln!(out, "{}/{}", registry_view::VIEW_DIR, registry_view::PING_FILE)?;
    for (repo, manifest, n) in signatures {
        for i in 1..=*n {
            let path = crate::model::LookasidePath {
                repo: repo.clone(),
                manifest: manifest.clone(),
                index: i as u32,
            };
            writeln!(out, "{}/{path}", crate::tree::SIGSTORE)?;
        }
    }
    writeln!(out, "{}", crate::tree::MARKER_FILE)
}

/// Rewrite layouts and marker from the store, and adopt pool files it does not know.
pub async fn republish(ctx: &SyncCtx) -> Result<(), SyncError> {
    let generation = ctx.store.generation().await?;
    publish(ctx, generation, Vec::new(), None).await
}

/// At start: finish the publication of a run interrupted between its commit and its
/// marker. The marker is written last, so a marker at the store's generation means the
/// last publication completed and nothing needs rewriting; anything else is a full
/// [`republish`]. Returns whether one was needed.
pub async fn finish_publication(ctx: &SyncCtx) -> Result<bool, SyncError> {
    let generation = ctx.store.generation().await?;
    let tree = ctx.tree.clone();
    let marker = tokio::task::spawn_blocking(move || tree.read_marker())
        .await
        .map_err(|e| SyncError::Task(e.to_string()))?;
    if marker.is_some_and(|m| m.generation == generation) {
        return Ok(false);
    }
    if generation > 0 {
        tracing::warn!(generation, "the last publication was cut off: republishing the tree");
    }
    republish(ctx).await.map(|()| true)
}

/// Give pool files the store has no record of (a run cut off before its commit) a record,
/// so they are collected after the grace unless a tag references them. Walks the pool.
pub async fn adopt_orphans(ctx: &SyncCtx) -> Result<usize, SyncError> {
    let tree = ctx.tree.clone();
    let files = tokio::task::spawn_blocking(move || tree.pool_files())
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
    let adopted = ctx.store.adopt_pool_files(files, ctx.clock.now()).await?;
    if adopted > 0 {
        tracing::warn!(adopted, "pool files without a store record adopted");
    }
    Ok(adopted)
}

fn is_literal(glob: &str) -> bool {
    !glob.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// The repositories this run syncs: literal names as given, globs matched against the catalog.
async fn wanted_repositories(ctx: &SyncCtx) -> Result<Vec<RepoName>, SyncError> {
    let listing = |source| SyncError::Listing { upstream: ctx.upstream.describe(), source };
    let names: Vec<String> = match &ctx.filter.repositories {
        Some(pats) if pats.iter().all(|p| is_literal(p.glob().glob())) => {
            pats.iter().map(|p| p.glob().glob().to_owned()).collect()
        }
        Some(pats) => {
            let mut names: Vec<String> = ctx
                .upstream
                .repositories()
                .await
                .map_err(listing)?
                .into_iter()
                .filter(|n| pats.iter().any(|p| p.is_match(n)))
                .collect();
            names.extend(
                pats.iter().map(|p| p.glob().glob()).filter(|g| is_literal(g)).map(str::to_owned),
            );
            names
        }
        None => ctx.upstream.repositories().await.map_err(listing)?,
    };
    let mut out: Vec<RepoName> = names
        .into_iter()
        .filter_map(|n| match n.parse() {
            Ok(r) if MirrorTree::can_publish(&r) => Some(r),
            Ok(r) => {
                tracing::warn!(repo = %r, "skipping upstream repository: a name component collides with OCI layout entries");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping upstream repository");
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// What one repository contributes to the commit.
struct RepoOutcome {
    tags: BTreeMap<Tag, Digest>,
    /// `None`: keep what the repository has.
    attachments: Option<crate::store::Attachments>,
    manifests: Vec<NewManifest>,
    blobs: Vec<(Digest, u64)>,
    report: RepoReport,
}

/// How a tag resolved.
enum Resolution {
    /// Same digest as last time.
    Unchanged(Digest),
    /// Points to `digest`; `manifests` are the ones not yet in the store.
    Changed { digest: Digest, manifests: Vec<NewManifest> },
    /// Gone between listing and fetching, or an obsolete schema: not published.
    Skipped(String),
}

/// A repository's tags as upstream has them now, each compared with what was synced, and
/// what is attached to their manifests.
struct ResolvedRepo {
    started: Instant,
    outcome: RepoOutcome,
    resolved: Vec<(Tag, Result<Resolution, TagError>)>,
    found: attach::Found,
}

async fn resolve_repo(ctx: &SyncCtx, repo: &RepoName, old: &BTreeMap<Tag, Digest>) -> ResolvedRepo {
    let started = Instant::now();
    let mut out = RepoOutcome {
        tags: old.clone(),
        attachments: None,
        manifests: Vec::new(),
        blobs: Vec::new(),
        report: RepoReport { repo: repo.to_string(), ..RepoReport::default() },
    };
    let listed = {
        let _permit = ctx.lookups.acquire().await;
        ctx.upstream.tags(repo.as_str()).await
    };
    let listed = match listed {
        Ok(t) => t,
        Err(UpstreamError::NotFound(_)) => Vec::new(),
        Err(e) => {
            out.report.errors.push(format!("listing tags: {e}"));
            // Everything it had stays, attachments too.
            let found = attach::Found { keep_all: true, ..attach::Found::default() };
            return ResolvedRepo { started, outcome: out, resolved: Vec::new(), found };
        }
    };
    // Attachment tags (`sha256-<hex>[.sig|.att|.sbom]`) are not images: they are published
    // with what they are attached to, or not at all.
    let (attachment_tags, ordinary): (Vec<&String>, Vec<&String>) =
        listed.iter().partition(|t| AttachmentTag::parse(t).is_some());
    let attachment_tags: Vec<AttachmentTag> =
        attachment_tags.into_iter().filter_map(|t| AttachmentTag::parse(t)).collect();
    let wanted: Vec<Tag> = ordinary
        .into_iter()
        .filter(|t| ctx.filter.tags.is_match(t))
        .filter_map(|t| {
            t.parse().map_err(|e| tracing::warn!(%repo, error = %e, "skipping tag")).ok()
        })
        .collect();

    let resolved: Vec<(Tag, Result<Resolution, TagError>)> = stream::iter(wanted.iter().cloned())
        .map(|tag| async move {
            let _permit = ctx.lookups.acquire().await;
            let r = resolve_tag(ctx, repo, &tag, old.get(&tag)).await;
            (tag, r)
        })
        .buffer_unordered(ctx.settings.concurrency)
        .collect()
        .await;
    // Nothing to look for (no lookaside, no attachment tags, an upstream without the
    // referrers API): nothing is attached, at no cost.
    let api = ctx.referrers_api.load(std::sync::atomic::Ordering::Relaxed);
    let found = if ctx.lookaside.is_some()
        || (ctx.settings.referrers && (!attachment_tags.is_empty() || api != attach::API_NO))
    {
        attach::discover(ctx, repo, old, &resolved, &attachment_tags).await
    } else {
        attach::Found::default()
    };
    let wanted_set: HashSet<&Tag> =
        wanted.iter().chain(found.tags.iter().map(|(t, _)| t)).collect();
    // Where attachments could not be looked at, the attachment tags stay as they were.
    let keep = |t: &Tag| found.keep_all && AttachmentTag::parse(t.as_str()).is_some();
    out.tags.retain(|t, _| wanted_set.contains(t) || keep(t));
    ResolvedRepo { started, outcome: out, resolved, found }
}

/// Fetch the blobs a repository's changed tags need and settle each tag.
async fn fetch_repo(ctx: &SyncCtx, repo: &RepoName, r: ResolvedRepo) -> RepoOutcome {
    let ResolvedRepo { started, outcome: mut out, mut resolved, mut found } = r;
    out.report.errors.append(&mut found.errors);
    // Every blob the new manifests need that the pool does not have yet, fetched once.
    let mut needed: BTreeMap<Digest, BlobRef> = BTreeMap::new();
    let changed = resolved.iter().chain(&found.tags).filter_map(|(_, r)| match r {
        Ok(Resolution::Changed { manifests, .. }) => Some(manifests),
        _ => None,
    });
    for manifests in changed.chain(found.untagged.iter().filter_map(|(_, _, r)| r.as_ref().ok())) {
        for m in manifests {
            out.report.manifests_fetched += 1;
            for b in &m.blobs {
                if !ctx.tree.has(&b.digest) {
                    needed.insert(b.digest.clone(), b.clone());
                }
            }
        }
    }
    ctx.progress.blobs_planned(needed.len() as u64);
    let fetched: HashMap<Digest, Result<u64, Arc<TagError>>> = stream::iter(needed.into_values())
        .map(|b| async move {
            if ctx.stopping() {
                return (b.digest, Err(Arc::new(TagError::from(Interrupted))));
            }
            let r = ctx.upstream.fetch_blob(repo.as_str(), &b, &ctx.tree).await;
            if let Ok(n) = &r {
                ctx.progress.blob_done(*n);
            }
            (b.digest, r.map_err(|e| Arc::new(TagError::from(e))))
        })
        .buffer_unordered(ctx.settings.concurrency)
        .collect()
        .await;
    for (d, r) in &fetched {
        if let Ok(n) = r {
            out.report.blobs_fetched += 1;
            out.report.bytes_fetched += n;
            out.blobs.push((d.clone(), *n));
        }
    }

    // The signed-only policy looks at what was found, before any tag moves.
    if let Some(policy) = &ctx.settings.policy {
        for (tag, r) in &mut resolved {
            if let Ok(Resolution::Changed { digest, .. }) = r
                && let Err(e) = attach::verify_tag(ctx, policy, repo, tag, digest, &found).await
            {
                *r = Err(e);
            }
        }
    }
    settle_tags(ctx, repo, &mut out, resolved, &fetched).await;
    // What the tags publish now decides what of the attachments found is published: none of
    // a manifest a tag did not move to (refused, or a blob missing).
    if found.discovered && !found.moved {
        let published = std::mem::take(&mut found.published);
        found.keep_attached_to(published);
    } else if found.discovered {
        let roots = out
            .tags
            .iter()
            .filter(|(t, _)| AttachmentTag::parse(t.as_str()).is_none())
            .map(|t| t.1);
        match attach::published_manifests(ctx, roots.collect(), out.manifests.iter().collect())
            .await
        {
            Ok(published) => found.keep_attached_to(published),
            Err(e) => out.report.errors.push(format!("reading manifests: {e}")),
        }
    }
    // Signature files new to the store get their records with the batch.
    let known: HashSet<&Digest> =
        found.before.signatures.values().flatten().map(|(d, _)| d).collect();
    for (d, size) in found.signatures.values().flatten() {
        if !known.contains(d) {
            out.blobs.push((d.clone(), *size));
        }
    }
    // Untagged referrers: each published whole or not at all (then what was there stays).
    let mut published = BTreeSet::new();
    for (digest, _, r) in std::mem::take(&mut found.untagged) {
        let r = match r {
            Ok(ms) => finish_tag(ctx, ms, &fetched).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(ms) => {
                out.manifests.extend(ms);
                published.insert(digest);
            }
            Err(e) => {
                found.untagged_incomplete = true;
                out.report.errors.push(format!("referrer {digest}: {e}"));
            }
        }
    }
    let attachment_tags = std::mem::take(&mut found.tags);
    settle_tags(ctx, repo, &mut out, attachment_tags, &fetched).await;
    out.attachments = found.attachments(published);
    out.report.duration_ms = started.elapsed().as_millis() as u64;
    out
}

/// Settle each tag: an unchanged one stays, a changed one whose manifests and blobs are all
/// in place moves, a failed one keeps its previous digest (the error is reported), a
/// skipped one goes.
async fn settle_tags(
    ctx: &SyncCtx,
    repo: &RepoName,
    out: &mut RepoOutcome,
    resolved: Vec<(Tag, Result<Resolution, TagError>)>,
    fetched: &HashMap<Digest, Result<u64, Arc<TagError>>>,
) {
    for (tag, r) in resolved {
        match r {
            Ok(Resolution::Unchanged(d)) => {
                out.tags.insert(tag, d);
            }
            Ok(Resolution::Skipped(why)) => {
                tracing::warn!(%repo, %tag, "skipped: {why}");
                out.tags.remove(&tag);
            }
            Ok(Resolution::Changed { digest, manifests }) => {
                match finish_tag(ctx, manifests, fetched).await {
                    Ok(ms) => {
                        out.manifests.extend(ms);
                        out.tags.insert(tag, digest);
                    }
                    Err(e) => out.report.errors.push(format!("{tag}: {e}")),
                }
            }
            Err(e) => out.report.errors.push(format!("{tag}: {e}")),
        }
    }
}

/// Check a changed tag's blobs all arrived, fill in platforms, and put its manifests in the
/// pool. Nothing of a tag with a missing blob is published.
async fn finish_tag(
    ctx: &SyncCtx,
    mut manifests: Vec<NewManifest>,
    fetched: &HashMap<Digest, Result<u64, Arc<TagError>>>,
) -> Result<Vec<NewManifest>, TagError> {
    for m in &manifests {
        for b in &m.blobs {
            if let Some(Err(e)) = fetched.get(&b.digest) {
                return Err(TagError::Blob { digest: b.digest.clone(), source: e.clone() });
            }
        }
    }
    let tree = ctx.tree.clone();
    tokio::task::spawn_blocking(move || {
        // Blobs that were already in the pool were verified when written; their size must
        // still match what this manifest declares (HEAD answers with it).
        for b in manifests.iter().flat_map(|m| &m.blobs) {
            match std::fs::metadata(tree.pool_path(&b.digest)) {
                Ok(meta) if meta.len() == b.size => {}
                Ok(meta) => {
                    return Err(TagError::BlobSize {
                        digest: b.digest.clone(),
                        on_disk: meta.len(),
                        declared: b.size,
                    });
                }
                Err(_) => return Err(TagError::BlobMissing(b.digest.clone())),
            }
        }
        for m in &mut manifests {
            if m.platform.is_none() && !media_type::is_index(&m.media_type) {
                let config = m.blobs.first().map(|b| tree.pool_path(&b.digest));
                m.platform =
                    config.and_then(|p| std::fs::read(p).ok()).and_then(|b| platform_of_config(&b));
            }
            tree.put_bytes(&m.digest, &m.bytes)?;
        }
        Ok(manifests)
    })
    .await
    .map_err(|e| TagError::Task(e.to_string()))?
}

async fn resolve_tag(
    ctx: &SyncCtx,
    repo: &RepoName,
    tag: &Tag,
    old: Option<&Digest>,
) -> Result<Resolution, TagError> {
    let head = match ctx.upstream.manifest_digest(repo.as_str(), tag.as_str()).await {
        Ok(d) => d,
        Err(UpstreamError::NotFound(_)) => return Ok(Resolution::Skipped("gone upstream".into())),
        Err(e) => return Err(e.into()),
    };
    if let Some(d) = head {
        if Some(&d) == old {
            return Ok(Resolution::Unchanged(d));
        }
        if !ctx.store.known_manifests(vec![d.clone()]).await?.is_empty() {
            return Ok(Resolution::Changed { digest: d, manifests: Vec::new() });
        }
    }
    let top = match fetch_manifest(ctx, repo, tag.as_str(), None).await {
        Err(FetchError::Schema1) => {
            return Ok(Resolution::Skipped("Docker schema 1 manifests are not supported".into()));
        }
        Err(FetchError::Other(e)) => return Err(e),
        Ok(m) => m,
    };
    let digest = top.digest.clone();
    if Some(&digest) == old {
        return Ok(Resolution::Unchanged(digest));
    }
    let manifests = fetch_children(ctx, repo, top).await?;
    Ok(Resolution::Changed { digest, manifests })
}

/// A manifest by digest and everything below it the store does not have yet: nothing when
/// the store has it.
async fn resolve_digest(
    ctx: &SyncCtx,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Vec<NewManifest>, TagError> {
    if !ctx.store.known_manifests(vec![digest.clone()]).await?.is_empty() {
        return Ok(Vec::new());
    }
    let top =
        fetch_manifest(ctx, repo, digest.as_str(), Some(digest)).await.map_err(|e| match e {
            FetchError::Schema1 => TagError::Schema1Child(digest.clone()),
            FetchError::Other(e) => e,
        })?;
    fetch_children(ctx, repo, top).await
}

/// `top` and the manifests below it (an index's children, theirs, ...) the store lacks.
async fn fetch_children(
    ctx: &SyncCtx,
    repo: &RepoName,
    top: NewManifest,
) -> Result<Vec<NewManifest>, TagError> {
    let mut manifests = vec![top];
    let mut level = 0;
    let mut frontier: Vec<Digest> =
        manifests[0].children.iter().map(|c| c.digest.clone()).collect();
    while !frontier.is_empty() {
        level += 1;
        if level > MAX_INDEX_DEPTH {
            return Err(TagError::TooDeep);
        }
        let known: HashSet<Digest> =
            ctx.store.known_manifests(frontier.clone()).await?.into_iter().collect();
        let mut next = Vec::new();
        for d in frontier.into_iter().filter(|d| !known.contains(d)) {
            if manifests.iter().any(|m| m.digest == d) {
                continue;
            }
            let child =
                fetch_manifest(ctx, repo, d.as_str(), Some(&d)).await.map_err(|e| match e {
                    FetchError::Schema1 => TagError::Schema1Child(d.clone()),
                    FetchError::Other(e) => TagError::Child { digest: d.clone(), source: e.into() },
                })?;
            next.extend(child.children.iter().map(|c| c.digest.clone()));
            manifests.push(child);
        }
        frontier = next;
    }
    Ok(manifests)
}

enum FetchError {
    Schema1,
    Other(TagError),
}

impl From<TagError> for FetchError {
    fn from(e: TagError) -> FetchError {
        FetchError::Other(e)
    }
}

/// Fetch and verify one manifest: its bytes must hash to what was asked for and to what the
/// upstream claimed.
async fn fetch_manifest(
    ctx: &SyncCtx,
    repo: &RepoName,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<NewManifest, FetchError> {
    let f = ctx.upstream.manifest(repo.as_str(), reference).await.map_err(TagError::from)?;
    let digest = Digest::of(&f.bytes);
    for claimed in [expected, f.claimed_digest.as_ref()].into_iter().flatten() {
        if claimed != &digest {
            let (expected, actual) = (claimed.clone(), digest);
            return Err(TagError::DigestMismatch { expected, actual }.into());
        }
    }
    let mt = ManifestShape::media_type_of(&f.bytes, f.content_type.as_deref())
        .map_err(TagError::from)?;
    if media_type::is_schema1(&mt) {
        return Err(FetchError::Schema1);
    }
    let shape = ManifestShape::parse(&f.bytes, &mt).map_err(TagError::from)?;
    let blobs = shape.blobs();
    let children = match shape {
        ManifestShape::Index { children } => children,
        ManifestShape::Image { .. } => Vec::new(),
    };
    Ok(NewManifest { digest, media_type: mt, bytes: f.bytes, children, blobs, platform: None })
}
