//! Mirror-facing outputs besides the redirect: Metalink 4 (RFC 5854), a plain mirror list,
//! and `/explain`, plus who the client is (address and scheme, believing forwarding headers
//! only from trusted proxies).

use std::fmt::Write;
use std::net::IpAddr;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::edge::Client;
use crate::geo::{BlobLookup, Candidate, Tier};
use crate::model::{Digest, RepoName};
use crate::store::BlobFacts;

use super::route::{self, V2Route};
use super::{RegistryError, RegistryState};

/// `<name>/blobs/<digest>` after a prefix, parsed like the `/v2` routes.
fn blob_route(req: &HttpRequest, prefix: &str) -> Result<(RepoName, Digest), RegistryError> {
    let rest = req.path().strip_prefix(prefix).unwrap_or_default();
    match route::parse(rest)? {
        V2Route::Blob(name, digest) => Ok((name, digest)),
        _ => Err(RegistryError::NotFound),
    }
}

/// The blob and every mirror that may serve it, nearest first, then the fallback.
fn ranked(
    req: &HttpRequest,
    state: &RegistryState,
    prefix: &str,
) -> Result<(Digest, BlobFacts, Vec<Candidate>, String), RegistryError> {
    let (name, digest) = blob_route(req, prefix)?;
    let snapshot = state.snapshot()?;
    let facts = match snapshot.blob(&name, &digest) {
        BlobLookup::Found(b) => b.clone(),
        BlobLookup::NameUnknown => return Err(RegistryError::NameUnknown),
        BlobLookup::BlobUnknown => return Err(RegistryError::BlobUnknown),
    };
    let client = Client::of(req);
    let geo = state.geo.lookup(client.ip);
    let candidates = snapshot.ranked(&digest, &facts, client.ip, &geo, client.https);
    let fallback = snapshot.fallback_url(&digest);
    Ok((digest, facts, candidates, fallback))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /metalink/<name>/blobs/<digest>`: RFC 5854 with size, sha-256 and one `<url>` per
/// qualifying mirror (priority = tier, location = country), the fallback last.
pub async fn metalink(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let (digest, facts, candidates, fallback) = ranked(&req, &state, "/metalink/")?;
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n",
    );
    let _ = writeln!(xml, "  <file name=\"{}\">", digest.hex());
    let _ = writeln!(xml, "    <size>{}</size>", facts.size);
    let _ = writeln!(xml, "    <hash type=\"sha-256\">{}</hash>", digest.hex());
    for c in &candidates {
        let location =
            c.country.as_deref().map(|cc| format!(" location=\"{}\"", cc.to_ascii_lowercase()));
        let _ = writeln!(
            xml,
            "    <url{} priority=\"{}\">{}</url>",
            location.unwrap_or_default(),
            c.tier.priority(),
            xml_escape(&c.url)
        );
    }
    let _ = writeln!(
        xml,
        "    <url priority=\"{}\">{}</url>",
        Tier::Global.priority() + 1,
        xml_escape(&fallback)
    );
    xml.push_str("  </file>\n</metalink>\n");
    Ok(HttpResponse::Ok().content_type("application/metalink4+xml").body(xml))
}

/// `GET /mirrorlist/<name>/blobs/<digest>`: the same URLs as plain text, one a line.
pub async fn mirrorlist(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let (_, _, candidates, fallback) = ranked(&req, &state, "/mirrorlist/")?;
    let mut text = String::new();
    for c in candidates.iter().map(|c| c.url.as_str()).chain([fallback.as_str()]) {
        text.push_str(c);
        text.push('\n');
    }
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(text))
}

#[derive(Deserialize)]
pub struct ExplainQuery {
    ip: Option<String>,
    name: String,
    digest: String,
    https: Option<bool>,
}

/// `GET /explain?ip=A&name=N&digest=D`: the lookup, each candidate's tier, why each other
/// mirror was excluded, and the pick.
pub async fn explain(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let q = web::Query::<ExplainQuery>::from_query(req.query_string())
        .map_err(|e| RegistryError::BadQuery(format!("{e} (expected ip, name, digest)")))?;
    let name: RepoName = q.name.parse()?;
    let digest: Digest = q.digest.parse()?;
    let client = Client::of(&req);
    let ip = match &q.ip {
        Some(s) => s
            .parse::<IpAddr>()
            .map(|ip| ip.to_canonical())
            .map_err(|_| RegistryError::BadQuery(format!("ip={s:?} is not an IP address")))?,
        None => client.ip,
    };
    let snapshot = state.snapshot()?;
    match snapshot.blob(&name, &digest) {
        BlobLookup::Found(_) => {}
        BlobLookup::NameUnknown => return Err(RegistryError::NameUnknown),
        BlobLookup::BlobUnknown => return Err(RegistryError::BlobUnknown),
    }
    let geo = state.geo.lookup(ip);
    let https = q.https.unwrap_or(client.https);
    let explanation = snapshot.explain(&name, &digest, ip, geo, https, true, &mut rand::rng());
    Ok(HttpResponse::Ok().json(explanation))
}
