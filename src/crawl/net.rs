//! The crawler's HTTP client, which is not a proxy into the operator's network: it connects
//! only to public addresses (checked on the resolved address at connect time, so DNS
//! rebinding does not help, and on IP-literal hosts before a request), follows no redirect
//! to another origin, and turns errors into classified messages that never quote a
//! response or a URL's credentials.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address a mirror may not send the crawler to: loopback, private,
/// shared (CGNAT), link-local, multicast, broadcast, unspecified, documentation,
/// benchmarking, reserved, unique-local, and IPv6 forms that embed such an IPv4 address.
pub fn is_special(ip: IpAddr) -> bool {
    let v4 = |a: std::net::Ipv4Addr| {
        let o = a.octets();
        a.is_loopback()
            || a.is_private()
            || a.is_link_local()
            || a.is_multicast()
            || a.is_broadcast()
            || a.is_unspecified()
            || a.is_documentation()
            || o[0] == 0
            || (o[0] == 100 && (64..128).contains(&o[1])) // 100.64.0.0/10 shared
            || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
            || (o[0] == 198 && (18..20).contains(&o[1])) // 198.18.0.0/15 benchmarking
            || o[0] >= 240 // reserved
    };
    match ip.to_canonical() {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64: embeds an IPv4 address
                || s[0] == 0x2002 // 6to4: embeds an IPv4 address
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || s[..6] == [0; 6] // IPv4-compatible and reserved ::/96
        }
    }
}

/// Resolves names to public addresses only (unless allowed).
struct PublicOnly;

/// The error a refused address gives (found again by [`classify`]).
#[derive(Debug, thiserror::Error)]
#[error("the host resolves only to private or special-purpose addresses")]
struct Refused;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                found.into_iter().filter(|a| !is_special(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The crawler's client: redirects only within the same origin (at most 5), public
/// addresses only unless `allow_private`.
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().first().is_some_and(|first| {
            first.origin() == attempt.url().origin() && attempt.url().username().is_empty()
        });
        if same && attempt.previous().len() <= 5 {
            attempt.follow()
        } else {
            attempt.error(RedirectRefused)
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("wharf-crawler/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .timeout(timeout)
        // A proxy from the environment would resolve and connect for us, past the checks.
        .no_proxy()
        .redirect(policy);
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build()
}

#[derive(Debug, thiserror::Error)]
#[error("redirected to another origin or too often")]
struct RedirectRefused;

/// Whether a URL may be fetched: its host, when an IP literal, must be public (names are
/// checked when they resolve).
pub fn check_url(url: &str, allow_private: bool) -> Result<(), Failure> {
    let parsed = url::Url::parse(url).map_err(|_| Failure::BadUrl)?;
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Failure::BadUrl),
    };
    if !allow_private && literal.is_some_and(is_special) {
        return Err(Failure::Refused);
    }
    Ok(())
}

/// What went wrong talking to a mirror, as its admin may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the address is private or special-purpose (not crawled)")]
    Refused,
    #[error("the URL is not valid")]
    BadUrl,
    #[error("timed out")]
    Timeout,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("could not connect (or the host name does not resolve)")]
    Connect,
    #[error("redirected to another origin or too often")]
    Redirect,
    #[error("the response could not be read")]
    Body,
    #[error("the request failed")]
    Other,
}

/// Classify a reqwest error without quoting it (its text can carry response content).
pub fn classify(e: &reqwest::Error) -> Failure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    while let Some(c) = cause {
        if c.is::<Refused>() {
            return Failure::Refused;
        }
        if c.is::<RedirectRefused>() {
            return Failure::Redirect;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        cause = c.source();
    }
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_redirect() {
        Failure::Redirect
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        Failure::ConnectionRefused
    } else if e.is_connect() {
        Failure::Connect
    } else if e.is_body() || e.is_decode() {
        Failure::Body
    } else {
        Failure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses() {
        for special in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "64:ff9b::a01:203",
            "2002:a01:203::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(is_special(special.parse().unwrap()), "{special}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2a00:1450:4001::1", "::ffff:8.8.8.8"] {
            assert!(!is_special(public.parse().unwrap()), "{public}");
        }
        assert_eq!(check_url("http://10.0.0.1/x/", false), Err(Failure::Refused));
        assert_eq!(check_url("http://[::ffff:7f00:1]/x/", false), Err(Failure::Refused));
        assert_eq!(check_url("http://10.0.0.1/x/", true), Ok(()));
        assert_eq!(check_url("http://mirror.example/x/", false), Ok(()));
    }
}
