//! Accounts: passwords hashed with argon2id (off the async workers), generated passwords,
//! and the rule a chosen password must meet. Imports `model` and `store`; never actix.

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::model::{Role, User, UserName};
use crate::store::{Store, StoreError, UserEditError};

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
    Ok((store.update_user(name, Some(hash), None).await?, generated))
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
