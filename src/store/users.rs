//! User accounts. Password hashes are stored, never listed.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::model::{EmailAddress, Role, User, UserName};

use super::records::{decode, encode};
use super::tables::*;
use super::{Store, StoreError};

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
enum StoredUser {
    #[serde(rename = "1")]
    V1 {
        id: u64,
        /// `operator` or `mirror-admin`.
        role: String,
        /// Argon2id PHC string.
        password_hash: String,
        created_at: DateTime<Utc>,
        last_login: Option<DateTime<Utc>>,
        disabled: bool,
        /// Added after the first release: absent in older records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    },
}

/// What to change about a user.
#[derive(Debug, Default)]
pub struct UserChange {
    /// A new argon2id PHC string.
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
    pub role: Option<Role>,
    /// `Some(None)` removes the address.
    pub email: Option<Option<EmailAddress>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserEditError {
    #[error("user {0} already exists")]
    Exists(UserName),
    #[error("no user named {0}")]
    Unknown(UserName),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn to_user(name: &str, rec: StoredUser) -> Result<(User, String), StoreError> {
    let StoredUser::V1 { id, role, password_hash, created_at, last_login, disabled, email } = rec;
    let bad = |what: &str| StoreError::Corrupt(format!("users: {name} has a bad {what}"));
    let user = User {
        id,
        name: name.parse().map_err(|_| bad("name"))?,
        role: role.parse().map_err(|_| bad("role"))?,
        created_at,
        last_login,
        disabled,
        // An address that no longer parses is dropped, never an error to the reader.
        email: email.and_then(|e| e.parse().ok()),
    };
    Ok((user, password_hash))
}

impl Store {
    pub async fn add_user(
        &self,
        name: &UserName,
        role: Role,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> Result<User, UserEditError> {
        let name = name.clone();
        self.blocking("add_user", move |db| {
            let txn = db.begin_write()?;
            let user = {
                let mut users = txn.open_table(USERS)?;
                if users.get(name.as_str())?.is_some() {
                    return Ok(Err(UserEditError::Exists(name)));
                }
                let mut meta = txn.open_table(META)?;
                let id = meta.get(KEY_NEXT_USER)?.map(|v| v.value()).unwrap_or(1);
                meta.insert(KEY_NEXT_USER, id + 1)?;
                let rec = StoredUser::V1 {
                    id,
                    role: role.to_string(),
                    password_hash,
                    created_at: now,
                    last_login: None,
                    disabled: false,
                    email: None,
                };
                users.insert(name.as_str(), encode(&rec).as_slice())?;
                User {
                    id,
                    name,
                    role,
                    created_at: now,
                    last_login: None,
                    disabled: false,
                    email: None,
                }
            };
            txn.commit()?;
            Ok(Ok(user))
        })
        .await?
    }

    /// Change a user; `None` fields stay as they are.
    pub async fn update_user(
        &self,
        name: &UserName,
        change: UserChange,
    ) -> Result<User, UserEditError> {
        let UserChange { password_hash, disabled, role: new_role, email: new_email } = change;
        let name = name.clone();
        self.blocking("update_user", move |db| {
            let txn = db.begin_write()?;
            let user = {
                let mut users = txn.open_table(USERS)?;
                let Some(row) = users.get(name.as_str())? else {
                    return Ok(Err(UserEditError::Unknown(name)));
                };
                let StoredUser::V1 {
                    id,
                    role,
                    password_hash: old,
                    created_at,
                    last_login,
                    disabled: was,
                    email,
                } = decode("users", row.value())?;
                drop(row);
                // A new password, another role or a disable ends every session of the user
                // (a stolen session does not outlive a password reset).
                let ends_sessions = password_hash.is_some()
                    || new_role.is_some_and(|r| r.to_string() != role)
                    || disabled == Some(true);
                if ends_sessions {
                    super::sessions::end_sessions_of(&txn, id)?;
                }
                let rec = StoredUser::V1 {
                    id,
                    role: new_role.map(|r| r.to_string()).unwrap_or(role),
                    password_hash: password_hash.unwrap_or(old),
                    created_at,
                    last_login,
                    disabled: disabled.unwrap_or(was),
                    email: match new_email {
                        Some(e) => e.map(String::from),
                        None => email,
                    },
                };
                users.insert(name.as_str(), encode(&rec).as_slice())?;
                to_user(name.as_str(), rec)?.0
            };
            txn.commit()?;
            Ok(Ok(user))
        })
        .await?
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.blocking("users", |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(USERS)?.iter()? {
                let (k, v) = row?;
                out.push(to_user(k.value(), decode("users", v.value())?)?.0);
            }
            Ok(out)
        })
        .await
    }

    /// A user with the stored password hash, for logging in.
    pub async fn user_credentials(
        &self,
        name: &UserName,
    ) -> Result<Option<(User, String)>, StoreError> {
        let name = name.clone();
        self.blocking("user_credentials", move |db| {
            let txn = db.begin_read()?;
            let row = txn.open_table(USERS)?.get(name.as_str())?;
            row.map(|r| to_user(name.as_str(), decode("users", r.value())?)).transpose()
        })
        .await
    }
}

/// Set a user's last login, inside a write transaction.
/// Whether user `name` exists, is enabled and still has password hash `verified`.
pub(super) fn credentials_unchanged(
    txn: &redb::WriteTransaction,
    name: &str,
    verified: &str,
) -> Result<bool, StoreError> {
    let users = txn.open_table(USERS)?;
    let Some(row) = users.get(name)? else { return Ok(false) };
    let StoredUser::V1 { password_hash, disabled, .. } = decode("users", row.value())?;
    Ok(!disabled && password_hash == verified)
}

pub(super) fn record_login(
    txn: &redb::WriteTransaction,
    name: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut users = txn.open_table(USERS)?;
    let Some(row) = users.get(name)? else { return Ok(()) };
    let StoredUser::V1 { id, role, password_hash, created_at, disabled, email, .. } =
        decode("users", row.value())?;
    drop(row);
    let last_login = Some(at);
    let rec = StoredUser::V1 { id, role, password_hash, created_at, last_login, disabled, email };
    users.insert(name, encode(&rec).as_slice())?;
    Ok(())
}
