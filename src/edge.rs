//! The HTTP edge every surface shares, written once: who the client is (address and scheme,
//! believing the configured forwarding header only from trusted proxies), which surface a
//! request is for — decided on the decoded path that routing uses, so `/%61dmin/` is
//! `/admin/` here too — the listener split, request limits, the methods each surface
//! answers (HEAD wherever GET works, 405 with `Allow` otherwise), the admin UI's security
//! headers, and a log line with a request id for every 5xx.
//! Imports `config` and `geo` (the forwarding-header walk); never `registry` or `admin`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};

use crate::config::ForwardedHeader;

/// The largest admin form body accepted.
pub const MAX_FORM: usize = 64 * 1024;
/// The largest webhook body accepted.
pub const MAX_HOOK_BODY: usize = 1024 * 1024;
/// The largest request head (all header lines) accepted; actix itself stops at 128 KiB.
pub const MAX_HEAD: usize = 16 * 1024;

/// What the edge needs to know, shared by every worker.
#[derive(Debug, Clone)]
pub struct Edge {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub forwarded_header: ForwardedHeader,
    /// With `[admin] listen`: its address. `/admin/` answers only there, the rest only
    /// elsewhere (the whole address is compared: two listeners may share a port).
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// The requesting client: the address selection, throttling and logs use, and whether it
/// came over TLS (directly, or as a trusted proxy says with `X-Forwarded-Proto`).
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: IpAddr,
    pub https: bool,
}

impl Edge {
    pub fn client(&self, req: &HttpRequest) -> Client {
        let peer =
            req.peer_addr().map(|a| a.ip().to_canonical()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let lines: Vec<&str> = req
            .headers()
            .get_all(self.forwarded_header.name())
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = match self.forwarded_header {
            ForwardedHeader::XForwardedFor => {
                crate::geo::client_ip(peer, &lines, &[], &self.trusted_proxies)
            }
            ForwardedHeader::Forwarded => {
                crate::geo::client_ip(peer, &[], &lines, &self.trusted_proxies)
            }
        };
        let via_trusted = self.trusted_proxies.iter().any(|n| n.contains(&peer));
        let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok());
        let https = match proto {
            Some(p) if via_trusted => p.eq_ignore_ascii_case("https"),
            _ => req.app_config().secure(),
        };
        Client { ip, https }
    }
}

impl Client {
    /// The client of a request (the peer, if the app has no [`Edge`]).
    pub fn of(req: &HttpRequest) -> Client {
        match req.app_data::<web::Data<Edge>>() {
            Some(edge) => edge.client(req),
            None => Edge {
                trusted_proxies: Vec::new(),
                forwarded_header: ForwardedHeader::XForwardedFor,
                admin_addr: None,
            }
            .client(req),
        }
    }
}

impl FromRequest for Client {
    type Error = Infallible;
    type Future = Ready<Result<Client, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(Ok(Client::of(req)))
    }
}

/// Which part of Wharf a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Admin,
    Hooks,
    /// The pull API: it answers other methods itself (distribution's UNSUPPORTED).
    V2,
    /// Everything else: `/tree/`, metalink, mirrorlist, explain, metrics, health.
    Public,
}

impl Surface {
    /// The surface of a path as routing sees it (percent-decoded).
    pub fn of(path: &str) -> Surface {
        let under =
            |p: &str| path.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with('/'));
        if under("/admin") {
            Surface::Admin
        } else if under("/hooks") {
            Surface::Hooks
        } else if under("/v2") {
            Surface::V2
        } else {
            Surface::Public
        }
    }

    fn body_limit(self) -> usize {
        match self {
            Surface::Admin => MAX_FORM,
            Surface::Hooks => MAX_HOOK_BODY,
            Surface::V2 | Surface::Public => 0,
        }
    }

    /// The methods it answers; `None`: the surface answers every method itself.
    fn methods(self) -> Option<&'static str> {
        match self {
            Surface::Admin => Some("GET, HEAD, POST"),
            Surface::Hooks => Some("POST"),
            Surface::Public => Some("GET, HEAD"),
            Surface::V2 => None,
        }
    }
}

fn refuse(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(message)
}

/// The pull API's answer to a request with a body, in distribution's error format.
const V2_NO_BODIES: &str = r#"{"errors":[{"code":"SIZE_INVALID","message":"request bodies are not accepted: this registry is read-only","detail":null}]}"#;

/// What the admin UI sends with every response: no framing, no sniffing, no referrer, no
/// caching, and scripts and styles only from its own origin (never inline).
const ADMIN_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
];

/// The middleware: every request of every listener passes here once.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let headers = req.headers();
    let head: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if head > MAX_HEAD {
        let message = format!("request headers are limited to {MAX_HEAD} bytes\n");
        return Ok(req.into_response(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message)));
    }
    // The path routing matches: percent-decoded (but for `/`, `%` and `+`).
    let surface = Surface::of(req.match_info().as_str());
    let admin_addr = req.app_data::<web::Data<Edge>>().and_then(|e| e.admin_addr);
    if let Some(addr) = admin_addr {
        let on_admin = req.app_config().local_addr() == addr;
        if on_admin != (surface == Surface::Admin) {
            return Ok(req.into_response(HttpResponse::NotFound().finish()));
        }
    }
    let mut head_request = false;
    if let Some(allowed) = surface.methods() {
        let method = req.method().as_str();
        if !allowed.split(", ").any(|m| m == method) {
            let res = HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, allowed))
                .body(format!("{method} is not allowed here; allowed: {allowed}\n"));
            return Ok(req.into_response(res));
        }
        // HEAD is GET without the body, so every GET route answers HEAD too (the body is
        // dropped unread below; the connection knows it was a HEAD and sends none).
        if req.method() == Method::HEAD && allowed.contains("GET") {
            req.head_mut().method = Method::GET;
            head_request = true;
        }
    }
    let limit = surface.body_limit();
    let headers = req.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if declared > limit || (chunked && limit == 0) {
        // Answered before a byte of the body is read; the connection closes, so the
        // body is not drained either.
        let mut res = if surface == Surface::V2 {
            HttpResponse::PayloadTooLarge()
                .insert_header(("Docker-Distribution-API-Version", "registry/2.0"))
                .content_type("application/json")
                .body(V2_NO_BODIES)
        } else {
            let message = format!("request bodies here are limited to {limit} bytes\n");
            refuse(StatusCode::PAYLOAD_TOO_LARGE, message)
        };
        res.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
        return Ok(req.into_response(res));
    }
    // The request line is logged at debug; nothing is copied when debug is off.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (req.method().clone(), req.path().to_owned(), std::time::Instant::now()));
    let mut res = next.call(req).await?.map_into_boxed_body();
    if head_request {
        // Drop the GET body unread (a /tree file is not read for a HEAD), keeping its length.
        res = res.map_body(|_, body| match body.size() {
            actix_web::body::BodySize::Sized(n) => BoxBody::new(actix_web::body::SizedStream::new(
                n,
                futures_util::stream::empty::<Result<web::Bytes, actix_web::Error>>(),
            )),
            _ => BoxBody::new(()),
        });
    }
    if let Some((method, path, started)) = logged {
        let (status, ms) = (res.status().as_u16(), started.elapsed().as_millis() as u64);
        tracing::debug!(%method, %path, status, ms, "request");
    }
    if surface == Surface::Admin {
        let h = res.headers_mut();
        for (k, v) in ADMIN_HEADERS {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
    }
    if res.status().is_server_error() {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let status = res.status().as_u16();
        let cause = res.response().error().map(|e| e.to_string()).unwrap_or_default();
        let (method, path) = (res.request().method(), res.request().path());
        if status == 503 {
            // Starting, stopping, or busy: expected, and the cause (if any) is logged where
            // it arose.
            tracing::info!(request_id = %id, %method, %path, status, %cause, "request refused");
        } else {
            tracing::error!(request_id = %id, %method, %path, status, %cause, "request failed");
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces_by_decoded_path() {
        assert_eq!(Surface::of("/admin"), Surface::Admin);
        assert_eq!(Surface::of("/admin/users"), Surface::Admin);
        assert_eq!(Surface::of("/administrator"), Surface::Public);
        assert_eq!(Surface::of("/hooks/registry"), Surface::Hooks);
        assert_eq!(Surface::of("/v2/"), Surface::V2);
        assert_eq!(Surface::of("/v2"), Surface::V2);
        assert_eq!(Surface::of("/tree/x"), Surface::Public);
        assert_eq!(Surface::of("/metalink/a/blobs/x"), Surface::Public);
    }
}
