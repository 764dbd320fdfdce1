//! Accounts: passwords hashed with argon2id (off the async workers), generated passwords,
//! and the rule a chosen password must meet. Imports `model` and `store`; never actix.

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::model::{Role, User, UserName};
use crate::store::{Store, StoreError, UserChange, UserEditError};

/// The shortest password a user may choose.
pub const MIN_PASSWORD: usize = 12;
const GENERATED_LEN: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("passwords must be at least {MIN_PASSWORD} characters")]
    TooShort,
    #[error("password hashing: {0}")]
    Hash(String),
    #[error(transparent)]
    Edit(#[from] UserEditError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fresh random password (letters and digits, no look-alikes).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..GENERATED_LEN).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// The argon2id PHC string of `password` (random salt).
pub async fn hash_password(password: String) -> Result<String, AccountError> {
    use argon2::password_hash::PasswordHasher;
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| AccountError::Hash(e.to_string()))?
}

/// Whether `password` matches the PHC string `hash`.
pub async fn verify_password(password: String, hash: String) -> bool {
    use argon2::password_hash::PasswordVerifier;
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// The password to set: the one given (checked), or a generated one (returned to show once).
fn choose(password: Option<String>) -> Result<(String, Option<String>), AccountError> {
    match password.filter(|p| !p.is_empty()) {
        Some(p) if p.chars().count() < MIN_PASSWORD => Err(AccountError::TooShort),
        Some(p) => Ok((p, None)),
        None => {
            let p = generate_password();
            Ok((p.clone(), Some(p)))
        }
    }
}

/// Create a user. Returns the user and, when none was given, the generated password.
pub async fn add_user(
    store: &Store,
    name: &UserName,
    role: Role,
    password: Option<String>,
    now: DateTime<Utc>,
) -> Result<(User, Option<String>), AccountError> {
    let (password, generated) = choose(password)?;
    let hash = hash_password(password).await?;
    Ok((store.add_user(name, role, hash, now).await?, generated))
}

/// Set a user's password. Returns the user and, when none was given, the generated one.
pub async fn set_password(
    store: &Store,
    name: &UserName,
    password: Option<String>,
) -> Result<(User, Option<String>), AccountError> {
    let (password, generated) = choose(password)?;
    let hash = hash_password(password).await?;
    Ok((
        store
            .update_user(name, UserChange { password_hash: Some(hash), ..Default::default() })
            .await?,
        generated,
    ))
}

/// Whether an enabled operator exists (a first start says how to create one).
pub async fn has_operator(store: &Store) -> Result<bool, StoreError> {
    Ok(store.users().await?.iter().any(|u| u.role == Role::Operator && !u.disabled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery".into(), hash.clone()).await);
        assert!(!verify_password("wrong horse battery".into(), hash.clone()).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
        let again = hash_password("correct horse battery".into()).await.unwrap();
        assert_ne!(hash, again, "salted");
        assert!(matches!(choose(Some("short".into())), Err(AccountError::TooShort)));
        let (p, shown) = choose(None).unwrap();
        assert_eq!(Some(&p), shown.as_ref());
        assert_eq!(p.len(), GENERATED_LEN);
    }
}

/// The admin session cookie.
pub const SESSION_COOKIE: &str = "wharf_session";

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// From login, whatever the activity.
    pub lifetime: chrono::Duration,
    /// Without a request.
    pub idle: chrono::Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy { lifetime: chrono::Duration::hours(12), idle: chrono::Duration::minutes(30) }
    }
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// What the store keys a session by: the token's sha256.
fn session_key(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Failed logins per account and per client address, with exponential backoff: after
/// [`FREE_FAILURES`] failures, each further attempt must wait 2, 4, 8, ... s (at most 15 min).
#[derive(Debug, Default)]
pub struct LoginThrottle(std::sync::Mutex<std::collections::HashMap<String, (u32, DateTime<Utc>)>>);

/// Failures allowed before backoff starts.
pub const FREE_FAILURES: u32 = 3;

impl LoginThrottle {
    fn check(&self, keys: &[String], now: DateTime<Utc>) -> Result<(), i64> {
        let map = self.0.lock().expect("throttle lock");
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k))
            .map(|(_, until)| (*until - now).num_seconds())
            .max();
        match wait {
            Some(s) if s > 0 => Err(s),
            _ => Ok(()),
        }
    }

    fn failed(&self, keys: &[String], now: DateTime<Utc>) {
        let mut map = self.0.lock().expect("throttle lock");
        for k in keys {
            let e = map.entry(k.clone()).or_insert((0, now));
            e.0 += 1;
            let wait = if e.0 <= FREE_FAILURES {
                0
            } else {
                (1i64 << (e.0 - FREE_FAILURES).min(10)).min(900)
            };
            e.1 = now + chrono::Duration::seconds(wait);
        }
    }

    fn succeeded(&self, keys: &[String]) {
        let mut map = self.0.lock().expect("throttle lock");
        for k in keys {
            map.remove(k);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many failed logins; try again in {0} s")]
    Throttled(i64),
    #[error("wrong user name or password")]
    Invalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A successful login: the token for the cookie, and the session it opened.
pub struct LoginTicket {
    pub token: String,
    pub session: crate::store::Session,
}

/// Check a user's password (throttled per account and per client address) and open a new
/// session with a fresh token and CSRF token.
pub async fn login(
    store: &Store,
    throttle: &LoginThrottle,
    now: DateTime<Utc>,
    name: &str,
    password: String,
    client: std::net::IpAddr,
) -> Result<LoginTicket, LoginError> {
    let keys = [format!("user:{name}"), format!("ip:{client}")];
    throttle.check(&keys, now).map_err(LoginError::Throttled)?;
    let found = match name.parse::<UserName>() {
        Ok(n) => store.user_credentials(&n).await?,
        Err(_) => None,
    };
    // Hash even for unknown users, so the answer takes as long either way.
    let hash = found.as_ref().map(|(_, h)| h.clone()).unwrap_or_else(|| DUMMY_HASH.clone());
    let ok = verify_password(password, hash).await;
    match found {
        Some((user, _)) if ok && !user.disabled => {
            throttle.succeeded(&keys);
            let token = random_token();
            let session = crate::store::Session {
                user_id: user.id,
                user: user.name,
                role: user.role,
                csrf: random_token(),
                created_at: now,
                last_seen: now,
            };
            store.create_session(session_key(&token), session.clone()).await?;
            tracing::info!(user = %session.user, %client, "login");
            Ok(LoginTicket { token, session })
        }
        _ => {
            throttle.failed(&keys, now);
            tracing::warn!(user = name, %client, "failed login");
            Err(LoginError::Invalid)
        }
    }
}

static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(b"no such user")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// The live session for a cookie token: not expired, not idle too long, its user not
/// disabled. Marks it used (at most once a minute, to spare writes).
pub async fn current_session(
    store: &Store,
    token: &str,
    now: DateTime<Utc>,
    policy: SessionPolicy,
) -> Result<Option<crate::store::Session>, StoreError> {
    let key = session_key(token);
    let Some(mut s) = store.session(key.clone()).await? else { return Ok(None) };
    // The user as they are now: a disabled user's sessions end, a role change applies at once.
    let user = store.user_credentials(&s.user).await?.map(|(u, _)| u).filter(|u| !u.disabled);
    if let Some(u) = &user {
        s.role = u.role;
    }
    if now - s.created_at > policy.lifetime || now - s.last_seen > policy.idle || user.is_none() {
        store.delete_session(key).await?;
        return Ok(None);
    }
    if now - s.last_seen > chrono::Duration::minutes(1) {
        store.touch_session(key, now).await?;
    }
    Ok(Some(s))
}

/// End the session of a cookie token.
pub async fn logout(store: &Store, token: &str) -> Result<(), StoreError> {
    store.delete_session(session_key(token)).await
}
