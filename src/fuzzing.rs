//! Entry points for the fuzz targets (`fuzz/`) and the property tests (`tests/it/properties.rs`):
//! each takes arbitrary bytes, runs one parser at an edge where strangers' input arrives, and
//! panics if an invariant breaks. The invariants live here once, for both. Not an API.

use std::net::IpAddr;

use crate::model::{
    Digest, ManifestShape, Mirror, MirrorPatch, Reference, RepoName, Tag, media_type,
    parse_base_url, parse_netblock,
};

fn text(data: &[u8]) -> &str {
    std::str::from_utf8(data).unwrap_or_default()
}

/// Names, tags, digests and references: parsing never panics, and what parses prints back
/// to the same text and parses again to the same value.
pub fn names(data: &[u8]) {
    let s = text(data);
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.as_str(), s);
        assert!(!n.as_str().contains(".."), "{s:?}");
        assert_eq!(n.as_str().parse::<RepoName>().ok(), Some(n));
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.as_str(), s);
        assert_eq!(d.hex().len(), 64);
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
    let _ = crate::registry::parse_v2_route(s);
}

/// Mirror URLs and netblocks: what parses is normalised (parsing it again gives itself),
/// is always a valid header value, has no credentials, query or fragment.
pub fn mirror_url(data: &[u8]) {
    let s = text(data);
    if let Ok(u) = parse_base_url(s) {
        assert!(u.ends_with('/') && u.len() <= crate::model::MAX_URL_LEN, "{u:?}");
        assert!(u.starts_with("http://") || u.starts_with("https://"), "{u:?}");
        assert!(u.bytes().all(|b| b.is_ascii_graphic()), "{u:?}");
        assert!(actix_web::http::header::HeaderValue::from_str(&u).is_ok());
        assert_eq!(parse_base_url(&u).as_ref(), Ok(&u), "normalised once: {s:?}");
        let parsed = url::Url::parse(&u).expect("reparses");
        assert!(parsed.username().is_empty() && parsed.password().is_none());
        assert!(parsed.query().is_none() && parsed.fragment().is_none());
    }
    if let Ok(u) = crate::model::parse_registry_url(s) {
        // A registry URL is a base URL at a host's root, and its host names it in a TOML
        // string (`/client-config`) without escaping.
        assert_eq!(parse_base_url(&u).as_ref(), Ok(&u), "{s:?}");
        assert_eq!(url::Url::parse(&u).map(|p| p.path().to_owned()).ok().as_deref(), Some("/"));
        let host = crate::model::registry_host(&u).expect("a host");
        assert!(!host.contains(['"', '\\', '/']) && host.bytes().all(|b| b.is_ascii_graphic()));
    }
    if let Ok(n) = parse_netblock(s) {
        assert_eq!(parse_netblock(&n.to_string()).ok(), Some(n));
        if let ipnet::IpNet::V6(v6) = n {
            assert!(v6.addr().to_ipv4_mapped().is_none(), "mapped blocks become IPv4: {s:?}");
        }
    }
}

/// The forwarding-header walk: never panics; believes nothing unless the peer is a
/// trusted proxy; never answers with a trusted proxy's address unless every hop was one.
pub fn forwarded(data: &[u8]) {
    let s = text(data);
    let mut parts = s.split('\n');
    let peer: IpAddr = parts.next().and_then(|p| p.parse().ok()).unwrap_or([203, 0, 113, 1].into());
    let trusted: Vec<ipnet::IpNet> =
        parts.next().unwrap_or_default().split(',').filter_map(|n| n.trim().parse().ok()).collect();
    let xff: Vec<&str> = parts.next().into_iter().collect();
    let fwd: Vec<&str> = parts.next().into_iter().collect();
    let ip = crate::geo::client_ip(peer, &xff, &fwd, &trusted);
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    if !is_trusted(&peer.to_canonical()) {
        assert_eq!(ip, peer.to_canonical(), "an untrusted peer's headers are ignored");
    } else if ip != peer.to_canonical() {
        assert!(!is_trusted(&ip), "{ip} is a trusted proxy");
    }
    assert_eq!(ip, ip.to_canonical());
}

/// Accept negotiation over arbitrary header lines: never panics, and a client that accepts
/// a media type is served it.
pub fn accept(data: &[u8]) {
    let mut headers = actix_web::http::header::HeaderMap::new();
    for line in text(data).split('\n') {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(line) {
            headers.append(actix_web::http::header::ACCEPT, v);
        }
    }
    crate::registry::check_negotiation(&headers);
}

/// Manifest and index JSON as an upstream sends it: the media type is found or refused,
/// the shape parsed or refused, never a panic; every blob it names is a parsed digest.
pub fn manifest(data: &[u8]) {
    for sent in [None, Some(media_type::OCI_MANIFEST), Some(media_type::OCI_INDEX)] {
        let Ok(mt) = ManifestShape::media_type_of(data, sent) else { continue };
        if let Ok(shape) = ManifestShape::parse(data, &mt) {
            for b in shape.blobs() {
                assert_eq!(b.digest.hex().len(), 64);
            }
        }
    }
    let _ = crate::model::platform_of_config(data);
}

/// The webhook's envelope (after the secret matched): parsed or refused with a message;
/// every name queued is a valid repository name.
pub fn webhook(data: &[u8]) {
    if let Ok(repos) = crate::hooks::pushed_repos(data) {
        for r in repos {
            assert_eq!(r.as_str().parse::<RepoName>().ok(), Some(r));
        }
    }
}

/// The admin UI's mirror form as a mirror admin posts it: the patch it yields either
/// applies, leaving a mirror that validates and whose URLs all parse again, or changes
/// nothing.
pub fn mirror_form(data: &[u8]) {
    for operator in [false, true] {
        let Some(patch) = crate::admin::mirror_form_patch(data, operator) else { continue };
        mirror_patch(patch);
    }
}

/// A mirror patch applied to a fresh mirror.
pub fn mirror_patch(patch: MirrorPatch) {
    let mut m = Mirror::new("fuzz".parse().expect("a valid name"));
    m.urls = vec!["http://fuzz.example/".into()];
    let before = m.clone();
    match patch.apply(&mut m) {
        Ok(()) => {
            assert!(m.validate().is_ok());
            for u in &m.urls {
                assert_eq!(parse_base_url(u).as_ref(), Ok(u));
            }
            assert!(m.bandwidth >= 1 && m.bandwidth <= crate::model::MAX_BANDWIDTH);
        }
        Err(_) => assert_eq!(m, before, "a refused patch changes nothing"),
    }
}

/// The configuration file: any TOML is accepted or refused with a message, never a panic.
/// Keys naming files are left out (the fuzzer must not read the machine's files).
pub fn config(data: &[u8]) {
    let Ok(mut table) = text(data).parse::<toml::Table>() else { return };
    const FILE_KEYS: [&str; 8] = [
        "secret_file",
        "password_file",
        "database",
        "asn_database",
        "tls_cert",
        "tls_key",
        "data_dir",
        "tree_dir",
    ];
    for (_, section) in table.iter_mut() {
        if let toml::Value::Table(t) = section {
            t.retain(|k, _| !FILE_KEYS.contains(&k));
        }
    }
    let _ = crate::config::load_table(table, [], &crate::config::CliOverrides::default());
}
