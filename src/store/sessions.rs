//! Admin UI sessions. The key is the sha256 of the session token, so a copy of the store
//! does not hand out live sessions.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::model::{Role, UserName};

use super::records::{decode, encode};
use super::tables::*;
use super::{Store, StoreError};

/// A logged-in user's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: u64,
    pub user: UserName,
    pub role: Role,
    /// The token every POST form must carry.
    pub csrf: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
enum StoredSession {
    #[serde(rename = "1")]
    V1 {
        user_id: u64,
        user: String,
        role: String,
        csrf: String,
        created_at: DateTime<Utc>,
        last_seen: DateTime<Utc>,
    },
}

fn to_session(rec: StoredSession) -> Result<Session, StoreError> {
    let StoredSession::V1 { user_id, user, role, csrf, created_at, last_seen } = rec;
    let bad = || StoreError::Corrupt(format!("sessions: bad record for {user}"));
    Ok(Session {
        user_id,
        user: user.parse().map_err(|_| bad())?,
        role: role.parse().map_err(|_| bad())?,
        csrf,
        created_at,
        last_seen,
    })
}

/// Delete every session of user `id` inside a write transaction.
pub(super) fn end_sessions_of(txn: &redb::WriteTransaction, id: u64) -> Result<(), StoreError> {
    let mut table = txn.open_table(SESSIONS)?;
    let mut ended = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        // A record that does not decode is no session anyone can use: it goes too.
        match decode::<StoredSession>("sessions", v.value()) {
            Ok(StoredSession::V1 { user_id, .. }) if user_id != id => {}
            _ => ended.push(k.value().to_owned()),
        }
    }
    for k in ended {
        table.remove(k.as_str())?;
    }
    Ok(())
}

impl Store {
    /// Store a new session under `key` and record the user's login time.
    /// Only if the user's password hash is still `verified` and the user is enabled (else
    /// `false`, nothing written: a reset or disable that came during the check wins).
    pub async fn create_session(
        &self,
        key: String,
        s: Session,
        verified: String,
    ) -> Result<bool, StoreError> {
        self.blocking("create_session", move |db| {
            let txn = db.begin_write()?;
            {
                if !super::users::credentials_unchanged(&txn, s.user.as_str(), &verified)? {
                    return Ok(false);
                }
                let rec = StoredSession::V1 {
                    user_id: s.user_id,
                    user: s.user.to_string(),
                    role: s.role.to_string(),
                    csrf: s.csrf,
                    created_at: s.created_at,
                    last_seen: s.last_seen,
                };
                txn.open_table(SESSIONS)?.insert(key.as_str(), encode(&rec).as_slice())?;
                super::users::record_login(&txn, s.user.as_str(), s.created_at)?;
            }
            txn.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn session(&self, key: String) -> Result<Option<Session>, StoreError> {
        self.blocking("session", move |db| {
            let txn = db.begin_read()?;
            let row = txn.open_table(SESSIONS)?.get(key.as_str())?;
            row.map(|r| decode("sessions", r.value()).and_then(to_session)).transpose()
        })
        .await
    }

    /// Mark a session used at `now`.
    pub async fn touch_session(&self, key: String, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.blocking("touch_session", move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(SESSIONS)?;
                let Some(row) = table.get(key.as_str())? else { return Ok(()) };
                let StoredSession::V1 { user_id, user, role, csrf, created_at, .. } =
                    decode("sessions", row.value())?;
                drop(row);
                let rec =
                    StoredSession::V1 { user_id, user, role, csrf, created_at, last_seen: now };
                table.insert(key.as_str(), encode(&rec).as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn delete_session(&self, key: String) -> Result<(), StoreError> {
        self.blocking("delete_session", move |db| {
            let txn = db.begin_write()?;
            txn.open_table(SESSIONS)?.remove(key.as_str())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}
