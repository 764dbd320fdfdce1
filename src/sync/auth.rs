//! Upstream authentication: parsing `WWW-Authenticate` challenges and caching Bearer tokens
//! per scope until they expire.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

impl Challenge {
    /// Parse `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `k="v", k2=v2` pairs; quoted values may contain commas and escaped quotes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

/// A token endpoint's answer.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self, now: Instant) -> Option<CachedToken> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        // Distribution's spec: 60 s when absent. Renew a little early.
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).max(1));
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        Some(CachedToken { value, expires: now + lifetime - margin })
    }
}

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub value: String,
    pub expires: Instant,
}

/// Bearer tokens by scope.
#[derive(Debug, Default)]
pub struct TokenCache(std::sync::Mutex<HashMap<String, CachedToken>>);

impl TokenCache {
    pub fn get(&self, scope: &str, now: Instant) -> Option<String> {
        let map = self.0.lock().expect("token cache lock");
        map.get(scope).filter(|t| t.expires > now).map(|t| t.value.clone())
    }

    pub fn put(&self, scope: &str, token: CachedToken) {
        self.0.lock().expect("token cache lock").insert(scope.to_owned(), token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(Challenge::parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None, "realm is required");
    }

    #[test]
    fn tokens_expire() {
        let now = Instant::now();
        let cache = TokenCache::default();
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":300}"#).unwrap();
        cache.put("s", t.into_token(now).unwrap());
        assert_eq!(cache.get("s", now).as_deref(), Some("abc"));
        assert_eq!(cache.get("other", now), None);
        assert_eq!(cache.get("s", now + Duration::from_secs(299)), None, "renewed early");
        let none: TokenResponse = serde_json::from_str(r#"{"expires_in":1}"#).unwrap();
        assert!(none.into_token(now).is_none());
    }
}
