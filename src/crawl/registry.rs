//! The check of a mirror's registry view (`registry_url`), as a client would pull: `GET
//! /v2/`, a sampled tag's manifest by HEAD and GET (the media type as `Content-Type`, the
//! bytes hashing to the digest the current generation gives the tag), the tags list, and a
//! blob. Only a mirror holding the current generation is checked: a client pulling by tag
//! trusts the mirror for the tag's digest, so a stale one is not offered.

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::model::registry_view;
use crate::model::{Digest, MAX_MANIFEST_SIZE, MirrorStatus, RepoName, TagEntry};
use crate::store::PoolFacts;

use super::{CrawlCtx, MAX_DOWNLOAD, download_check, net};

/// How many repositories are tried for a tag the mirror's content set carries.
const REPO_TRIES: usize = 4;
/// The largest `/v2/` or tags list body read.
const MAX_SMALL: usize = 1 << 20;

pub(super) async fn check(
    ctx: &CrawlCtx,
    facts: &PoolFacts,
    m: &MirrorStatus,
    claimed: Option<u64>,
    base: &str,
    rng: &mut StdRng,
) -> Result<(), String> {
    if claimed != Some(facts.generation) {
        return Err(format!(
            "holds generation {}, not the current {}: a registry mirror is offered only while \
             it is current",
            claimed.unwrap_or(0),
            facts.generation
        ));
    }
    net::check_url(base, ctx.settings.allow_private_addresses).map_err(|e| e.to_string())?;
    let ping = get_small(ctx, &format!("{base}v2/")).await?;
    if !serde_json::from_slice::<serde_json::Value>(&ping).is_ok_and(|v| v.is_object()) {
        return Err("GET /v2/ is not a JSON object".into());
    }
    let Some((repo, tag, blob)) = pick(ctx, facts, m, rng).await? else {
        // Nothing it carries has a tag: nothing a client could pull.
        return Ok(());
    };
    let url = format!("{base}v2/{repo}/manifests/{}", tag.tag);
    let accept = registry_view::KINDS.map(|(_, mt)| mt).join(", ");
    let head = ctx
        .http
        .head(&url)
        .header(reqwest::header::ACCEPT, &accept)
        .send()
        .await
        .map_err(|e| format!("HEAD {repo}:{}: {}", tag.tag, net::classify(&e)))?;
    check_manifest_headers("HEAD", &repo, &tag, &head)?;
    let resp = ctx
        .http
        .get(&url)
        .header(reqwest::header::ACCEPT, &accept)
        .send()
        .await
        .map_err(|e| format!("GET {repo}:{}: {}", tag.tag, net::classify(&e)))?;
    check_manifest_headers("GET", &repo, &tag, &resp)?;
    let bytes = read_limited(resp, MAX_MANIFEST_SIZE as usize).await?;
    let actual = Digest::of(&bytes);
    if actual != tag.digest {
        return Err(format!(
            "{repo}:{} serves {actual}; generation {} says {}",
            tag.tag, facts.generation, tag.digest
        ));
    }
    let list = get_small(ctx, &format!("{base}v2/{repo}/tags/list")).await?;
    let listed = serde_json::from_slice::<serde_json::Value>(&list).ok().is_some_and(|v| {
        v["name"] == repo.as_str()
            && v["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.tag.as_str()))
    });
    if !listed {
        return Err(format!("{repo}/tags/list does not list {}", tag.tag));
    }
    if let Some((digest, size)) = blob {
        let timeout = ctx.settings.mirror_timeout;
        download_check(
            &ctx.http,
            format!("{base}v2/{repo}/blobs/{digest}"),
            &digest,
            size,
            timeout,
        )
        .await?;
    }
    Ok(())
}

/// A tag (and a blob of its repository) that the mirror's content set carries.
async fn pick(
    ctx: &CrawlCtx,
    facts: &PoolFacts,
    m: &MirrorStatus,
    rng: &mut StdRng,
) -> Result<Option<(RepoName, TagEntry, Option<(Digest, u64)>)>, String> {
    let repos: Vec<&RepoName> = facts.repo_names().collect();
    let carried =
        |d: &Digest| facts.get(d).and_then(|b| facts.carried_since(b, &m.mirror.content)).is_some();
    for repo in repos.choose_multiple(rng, REPO_TRIES) {
        let layouts =
            ctx.store.layouts(Some(vec![(*repo).clone()])).await.map_err(|e| e.to_string())?;
        let Some(layout) = layouts.into_iter().next() else { continue };
        let tags: Vec<&TagEntry> = layout
            .tags
            .iter()
            .filter(|t| registry_view::extension(&t.media_type).is_some() && carried(&t.digest))
            .collect();
        let Some(tag) = tags.choose(rng) else { continue };
        let manifests: std::collections::HashSet<&Digest> =
            layout.manifests.iter().map(|(d, _)| d).collect();
        let blobs: Vec<(Digest, u64)> = facts
            .repo_content(repo)
            .filter(|(d, b)| {
                !manifests.contains(d)
                    && b.size <= MAX_DOWNLOAD
                    && facts.carried_since(b, &m.mirror.content).is_some()
            })
            .map(|(d, b)| (d, b.size))
            .collect();
        return Ok(Some(((*repo).clone(), (*tag).clone(), blobs.choose(rng).cloned())));
    }
    Ok(None)
}

fn check_manifest_headers(
    method: &str,
    repo: &RepoName,
    tag: &TagEntry,
    resp: &reqwest::Response,
) -> Result<(), String> {
    if !resp.status().is_success() {
        return Err(format!("{method} {repo}:{}: HTTP {}", tag.tag, resp.status().as_u16()));
    }
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ct = ct.split(';').next().unwrap_or_default().trim();
    if ct != tag.media_type {
        // Only the expected type is named: nothing the mirror sent is quoted.
        return Err(format!(
            "{method} {repo}:{}: the Content-Type is not {}",
            tag.tag, tag.media_type
        ));
    }
    Ok(())
}

async fn get_small(ctx: &CrawlCtx, url: &str) -> Result<Vec<u8>, String> {
    let path = url::Url::parse(url).map(|u| u.path().to_owned()).unwrap_or_default();
    let resp =
        ctx.http.get(url).send().await.map_err(|e| format!("GET {path}: {}", net::classify(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {path}: HTTP {}", resp.status().as_u16()));
    }
    read_limited(resp, MAX_SMALL).await
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| net::classify(&e).to_string())?;
        if out.len() + chunk.len() > limit {
            return Err(format!("a body larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
