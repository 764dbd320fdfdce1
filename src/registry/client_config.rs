//! `/client-config/registries.conf` (podman, buildah, skopeo, CRI-O) and
//! `/client-config/hosts.toml` (containerd): the verified registry mirrors nearest the
//! requesting client first, in the same tiers as blob redirects, and Wharf itself last, as
//! the authoritative fallback. Read from the selection snapshot; no store access.

use std::fmt::Write;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::edge::Client;
use crate::geo::RegistryMirror;

use super::{RegistryError, RegistryState};

#[derive(Deserialize)]
struct ConfigQuery {
    /// The client's architecture: mirrors carrying only some architectures are offered
    /// when they carry it; without it only mirrors carrying everything are.
    arch: Option<String>,
    /// `digest-only`: mirrors serve pulls by digest only, tags are resolved by Wharf.
    pull: Option<String>,
}

struct Asked {
    arch: Option<String>,
    digest_only: bool,
}

fn asked(req: &HttpRequest) -> Result<Asked, RegistryError> {
    let q = web::Query::<ConfigQuery>::from_query(req.query_string())
        .map_err(|e| RegistryError::BadQuery(format!("{e} (expected arch, pull)")))?;
    let arch = match q.arch.as_deref() {
        None | Some("") => None,
        Some(a)
            if a.len() <= 16 && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            Some(a.to_owned())
        }
        Some(_) => {
            return Err(RegistryError::BadQuery("arch is an architecture like arm64".into()));
        }
    };
    let digest_only = match q.pull.as_deref() {
        None | Some("") | Some("all") => false,
        Some("digest-only") => true,
        Some(_) => return Err(RegistryError::BadQuery("pull is `all` or `digest-only`".into())),
    };
    Ok(Asked { arch, digest_only })
}

/// What a configuration is written from: the request's options, the mirrors for its
/// client, Wharf's host, and the comment both files start with.
struct Prepared {
    asked: Asked,
    mirrors: Vec<RegistryMirror>,
    host: String,
    out: String,
}

fn prepare(req: &HttpRequest, state: &RegistryState) -> Result<Prepared, RegistryError> {
    let asked = asked(req)?;
    let snapshot = state.snapshot()?;
    let client = Client::of(req);
    let geo = state.geo.lookup(client.ip);
    let mirrors = snapshot.registry_mirrors(client.ip, &geo, asked.arch.as_deref());
    let host = crate::model::registry_host(&state.public_url).unwrap_or_default();
    let out = format!(
        "# Wharf {host}: the registry mirrors nearest {ip} first, then Wharf itself.\n\
         # Pulling by tag from a mirror trusts it for the tag's digest: pull by digest, add\n\
         # ?pull=digest-only (tags resolved by Wharf), or require signatures in policy.json.\n",
        ip = client.ip
    );
    Ok(Prepared { asked, mirrors, host, out })
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn plain_http(url: &str) -> bool {
    url.starts_with("http://")
}

fn text(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/toml; charset=utf-8")
        // It depends on the client's address.
        .insert_header(("Cache-Control", "private, max-age=300"))
        .body(body)
}

/// `GET /client-config/registries.conf[?arch=A][&pull=digest-only]`: a drop-in for
/// `/etc/containers/registries.conf.d/`.
pub async fn registries_conf(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let Prepared { asked, mirrors, host, mut out } = prepare(&req, &state)?;
    let _ = writeln!(
        out,
        "# Install: curl -fsS '{url}/client-config/registries.conf' \\\n\
         #   -o /etc/containers/registries.conf.d/50-wharf.conf",
        url = state.public_url
    );
    let _ = writeln!(out, "\n[[registry]]\nprefix = {h}\nlocation = {h}", h = quoted(&host));
    if plain_http(&state.public_url) {
        out.push_str("insecure = true\n");
    }
    for m in &mirrors {
        let location = crate::model::registry_host(&m.url).unwrap_or_default();
        let _ = writeln!(out, "\n# {} ({:?})", m.mirror, m.tier);
        let _ = writeln!(out, "[[registry.mirror]]\nlocation = {}", quoted(&location));
        if plain_http(&m.url) {
            out.push_str("insecure = true\n");
        }
        if asked.digest_only {
            out.push_str("pull-from-mirror = \"digest-only\"\n");
        }
    }
    Ok(text(out))
}

/// `GET /client-config/hosts.toml[?arch=A][&pull=digest-only]`: containerd's
/// `/etc/containerd/certs.d/<wharf host>/hosts.toml`.
pub async fn hosts_toml(
    req: HttpRequest,
    state: web::Data<RegistryState>,
) -> Result<HttpResponse, RegistryError> {
    let Prepared { asked, mirrors, host, mut out } = prepare(&req, &state)?;
    let _ = writeln!(
        out,
        "# Install: mkdir -p '/etc/containerd/certs.d/{host}' && curl -fsS \\\n\
         #   '{url}/client-config/hosts.toml' -o '/etc/containerd/certs.d/{host}/hosts.toml'",
        url = state.public_url
    );
    let _ = writeln!(out, "server = {}", quoted(&state.public_url));
    let capabilities = if asked.digest_only { r#"["pull"]"# } else { r#"["pull", "resolve"]"# };
    for m in &mirrors {
        let _ = writeln!(out, "\n# {} ({:?})", m.mirror, m.tier);
        let _ = writeln!(out, "[host.{}]", quoted(m.url.trim_end_matches('/')));
        let _ = writeln!(out, "  capabilities = {capabilities}");
    }
    Ok(text(out))
}
