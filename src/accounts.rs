//! Accounts: passwords hashed with argon2id (off the async workers), generated passwords,
//! and the rule a chosen password must meet. Imports `model` and `store`; never actix.

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::model::{EmailAddress, Role, User, UserName};
use crate::store::{Store, StoreError, UserChange, UserEditError};

/// The shortest password a user may choose.
pub const MIN_PASSWORD: usize = 12;
const GENERATED_LEN: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("passwords must be at least {MIN_PASSWORD} characters")]
    TooShort,
    #[error("this password is too easy to guess: {0}")]
    Weak(String),
    #[error("too many logins at once; try again in a moment")]
    Busy,
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

/// Password hashes computed at once, server-wide. Each argon2id hash holds 19 MiB for
/// tens of milliseconds; more logins than this wait briefly, then get [`AccountError::Busy`]
/// (503), so a burst of logins cannot grow memory.
const HASHERS: usize = 2;
/// How long a login waits for a free hasher.
const HASHER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHERS);

/// Run `f` (an argon2 computation) on the bounded hashing pool, off the async workers.
async fn on_hasher<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AccountError> {
    let permit = tokio::time::timeout(HASHER_WAIT, HASHING.acquire())
        .await
        .map_err(|_| AccountError::Busy)?
        .map_err(|_| AccountError::Busy)?;
    let out = tokio::task::spawn_blocking(f).await.map_err(|e| AccountError::Hash(e.to_string()));
    drop(permit);
    out
}

/// The argon2id PHC string of `password` (random salt).
pub async fn hash_password(password: String) -> Result<String, AccountError> {
    use argon2::password_hash::PasswordHasher;
    on_hasher(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hash(e.to_string()))
    })
    .await?
}

/// Whether `password` matches the PHC string `hash`.
pub async fn verify_password(password: String, hash: String) -> Result<bool, AccountError> {
    use argon2::password_hash::PasswordVerifier;
    on_hasher(move || {
        argon2::Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok()
    })
    .await
}

/// Refuse a password a guesser would find early (zxcvbn's estimate below "safely
/// unguessable"): `aaaaaaaaaaaa`, twelve spaces, `password1234`.
fn check_strength(password: &str) -> Result<(), AccountError> {
    let estimate = zxcvbn::zxcvbn(password, &[]);
    if estimate.score() >= zxcvbn::Score::Three {
        return Ok(());
    }
    let hint = estimate
        .feedback()
        .and_then(|f| f.warning().map(|w| w.to_string()))
        .unwrap_or_else(|| "add more words or characters".into());
    Err(AccountError::Weak(hint))
}

/// The password to set: the one given (checked), or a generated one (returned to show once).
fn choose(password: Option<String>) -> Result<(String, Option<String>), AccountError> {
    match password.filter(|p| !p.is_empty()) {
        Some(p) if p.chars().count() < MIN_PASSWORD => Err(AccountError::TooShort),
        Some(p) => {
            check_strength(&p)?;
            Ok((p, None))
        }
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
/// Set (or with `None` remove) the address notices about a user's mirrors go to.
pub async fn set_email(
    store: &Store,
    name: &UserName,
    email: Option<EmailAddress>,
) -> Result<User, AccountError> {
    Ok(store.update_user(name, UserChange { email: Some(email), ..Default::default() }).await?)
}

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
        assert!(verify_password("correct horse battery".into(), hash.clone()).await.unwrap());
        assert!(!verify_password("wrong horse battery".into(), hash.clone()).await.unwrap());
        assert!(!verify_password("x".into(), "not a hash".into()).await.unwrap());
        let again = hash_password("correct horse battery".into()).await.unwrap();
        assert_ne!(hash, again, "salted");
        assert!(matches!(choose(Some("short".into())), Err(AccountError::TooShort)));
        for weak in [" ".repeat(12), "aaaaaaaaaaaa".into(), "password1234".into()] {
            assert!(matches!(choose(Some(weak.clone())), Err(AccountError::Weak(_))), "{weak:?}");
        }
        assert!(choose(Some("correct horse battery staple".into())).is_ok());
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

/// Failed logins, counted per client address and per (account, client address), with
/// exponential backoff: after [`FREE_FAILURES`] failures under a key, each further attempt
/// must wait 2, 4, 8, ... s (at most 15 min). Checking and counting an attempt is one step
/// under one lock (a burst of parallel guesses cannot all pass); a correct password takes
/// back only its own attempt; failures from one address never refuse another address's
/// login. IPv6 clients are counted per /64. The table is bounded: quiet entries are
/// forgotten, and when it is full the oldest go first.
#[derive(Debug, Default)]
pub struct LoginThrottle(std::sync::Mutex<std::collections::HashMap<String, Failures>>);

#[derive(Debug, Clone, Copy)]
pub struct Failures {
    count: u32,
    last: DateTime<Utc>,
}

impl Failures {
    fn until(&self) -> DateTime<Utc> {
        let wait = if self.count <= FREE_FAILURES {
            0
        } else {
            (1i64 << (self.count - FREE_FAILURES).min(10)).min(MAX_WAIT)
        };
        self.last + chrono::Duration::seconds(wait)
    }
}

/// Failures allowed before backoff starts.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait, in seconds.
const MAX_WAIT: i64 = 900;
/// A key quiet for this long (after its wait) is forgotten, in seconds.
const FORGET_AFTER: i64 = 24 * 3600;
/// Entries kept at most.
const MAX_ENTRIES: usize = 100_000;

impl LoginThrottle {
    /// The keys of an attempt: the client's address (its /64 for IPv6), and the account
    /// from that address.
    fn keys(name: &str, client: std::net::IpAddr) -> [String; 2] {
        let client = match client.to_canonical() {
            std::net::IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64)
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| v6.to_string()),
            v4 => v4.to_string(),
        };
        [format!("ip:{client}"), format!("user:{name}@{client}")]
    }

    /// Refuse (with the seconds to wait) or count this attempt as a failure now; a correct
    /// password takes it back with [`Self::undo`].
    fn begin(&self, keys: &[String; 2], now: DateTime<Utc>) -> Result<(), i64> {
        let mut map = self.0.lock().expect("throttle lock");
        // Whole seconds, rounded up: a 2 s wait is not over after 1.5 s.
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k))
            .map(|f| (f.until() - now).num_milliseconds())
            .max();
        if let Some(ms) = wait.filter(|ms| *ms > 0) {
            return Err((ms + 999) / 1000);
        }
        if map.len() + keys.len() > MAX_ENTRIES {
            // Forget what has been quiet long enough; then the oldest.
            let cutoff = now - chrono::Duration::seconds(FORGET_AFTER);
            map.retain(|_, f| f.until() > cutoff);
            while map.len() + keys.len() > MAX_ENTRIES {
                let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone())
                else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        for k in keys {
            let f = map.entry(k.clone()).or_insert(Failures { count: 0, last: now });
            // A key quiet for a day starts again.
            if now - f.until() > chrono::Duration::seconds(FORGET_AFTER) {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
        Ok(())
    }

    /// Take back an attempt that turned out right (or never ran): one count per key.
    fn undo(&self, keys: &[String; 2]) {
        let mut map = self.0.lock().expect("throttle lock");
        for k in keys {
            if let Some(f) = map.get_mut(k) {
                f.count = f.count.saturating_sub(1);
                if f.count == 0 {
                    map.remove(k);
                }
            }
        }
    }

    /// Entries held (for the test of the bound).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("throttle lock").len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("too many failed logins; try again in {0} s")]
    Throttled(i64),
    #[error("wrong user name or password")]
    Invalid,
    #[error("too many logins at once; try again in a moment")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A successful login: the token for the cookie, and the session it opened.
pub struct LoginTicket {
    pub token: String,
    pub session: crate::store::Session,
}

/// Check a user's password (throttled per client address and per account from that
/// address, see [`LoginThrottle`]; `client` is the edge's client address) and open a new
/// session with a fresh token and CSRF token.
pub async fn login(
    store: &Store,
    throttle: &LoginThrottle,
    now: DateTime<Utc>,
    name: &str,
    password: String,
    client: std::net::IpAddr,
) -> Result<LoginTicket, LoginError> {
    // A name that is no user name is one throttle key and one log word, whatever its size.
    let parsed = name.parse::<UserName>().ok();
    let shown = parsed.as_ref().map(|n| n.as_str()).unwrap_or("(not a user name)");
    let keys = LoginThrottle::keys(shown, client);
    throttle.begin(&keys, now).map_err(LoginError::Throttled)?;
    let found = match &parsed {
        Some(n) => store.user_credentials(n).await,
        None => Ok(None),
    };
    let found = found.inspect_err(|_| throttle.undo(&keys))?;
    // Hash even for unknown users, so the answer takes as long either way.
    let hash = found.as_ref().map(|(_, h)| h.clone()).unwrap_or_else(|| DUMMY_HASH.clone());
    let ok = match verify_password(password, hash).await {
        Ok(ok) => ok,
        Err(_) => {
            throttle.undo(&keys);
            return Err(LoginError::Busy);
        }
    };
    match found {
        Some((user, verified)) if ok && !user.disabled => {
            let token = random_token();
            let session = crate::store::Session {
                user_id: user.id,
                user: user.name,
                role: user.role,
                csrf: random_token(),
                created_at: now,
                last_seen: now,
            };
            // Opened only if the password is still the one verified and the user still
            // enabled: a reset or disable during the hashing wins.
            if !store.create_session(session_key(&token), session.clone(), verified).await? {
                tracing::warn!(user = shown, %client, "login raced a password change");
                return Err(LoginError::Invalid);
            }
            throttle.undo(&keys);
            tracing::info!(user = %session.user, %client, "login");
            Ok(LoginTicket { token, session })
        }
        _ => {
            tracing::warn!(user = shown, %client, "failed login");
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

#[cfg(test)]
mod throttle_tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn checking_and_counting_is_one_step_and_a_success_takes_back_only_itself() {
        let t = LoginThrottle::default();
        let a = LoginThrottle::keys("ben", "198.51.100.1".parse().unwrap());
        // Four attempts pass (the fourth starts the backoff), the fifth waits.
        for _ in 0..=FREE_FAILURES {
            assert_eq!(t.begin(&a, at(0)), Ok(()));
        }
        assert_eq!(t.begin(&a, at(0)), Err(2));
        // Another address, same account: not refused.
        let b = LoginThrottle::keys("ben", "198.51.100.2".parse().unwrap());
        assert_eq!(t.begin(&b, at(0)), Ok(()));
        t.undo(&b);
        assert_eq!(t.begin(&a, at(0)), Err(2), "b's success cleared nothing of a's");
        // IPv6: one bucket per /64, mapped IPv4 as IPv4.
        assert_eq!(
            LoginThrottle::keys("x", "2001:db8::1".parse().unwrap()),
            LoginThrottle::keys("x", "2001:db8::ffff".parse().unwrap())
        );
        assert_eq!(
            LoginThrottle::keys("x", "::ffff:198.51.100.1".parse().unwrap()),
            LoginThrottle::keys("x", "198.51.100.1".parse().unwrap())
        );
        // Waits are whole seconds rounded up.
        assert_eq!(t.begin(&a, at(1)), Err(1));
        assert_eq!(t.begin(&a, at(2)), Ok(()));
        // Quiet for a quarter of an hour is not enough to start again (the backoff keeps
        // growing), quiet for a day is.
        assert_eq!(t.begin(&a, at(4000)), Ok(()));
        assert_eq!(t.begin(&a, at(4000)), Err(8), "6 failures: 8 s");
        assert_eq!(t.begin(&a, at(200_000)), Ok(()));
        assert_eq!(t.begin(&a, at(200_000)), Ok(()), "counting from zero again");
    }

    #[test]
    fn the_table_is_bounded() {
        let t = LoginThrottle::default();
        for i in 0..(MAX_ENTRIES as u32 / 2 + 10) {
            let ip = std::net::IpAddr::from(i.to_be_bytes());
            assert!(t.begin(&LoginThrottle::keys("u", ip), at(i64::from(i % 1000))).is_ok());
        }
        assert!(t.len() <= MAX_ENTRIES, "{}", t.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_two_hashes_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        static NOW: AtomicUsize = AtomicUsize::new(0);
        static MAX: AtomicUsize = AtomicUsize::new(0);
        let runs = (0..8).map(|_| {
            tokio::spawn(on_hasher(|| {
                let n = NOW.fetch_add(1, SeqCst) + 1;
                MAX.fetch_max(n, SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                NOW.fetch_sub(1, SeqCst);
            }))
        });
        for r in futures_util::future::join_all(runs).await {
            r.unwrap().unwrap();
        }
        assert_eq!(MAX.load(SeqCst), HASHERS);
    }
}
