//! What people did (the audit log) and where clients were sent (redirect counters).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::MirrorName;

/// One change made by a person (through the admin UI or the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// A user name, or `cli` for the local command line.
    pub actor: String,
    /// What was done, e.g. `mirror.approve`.
    pub action: String,
    /// What it was done to, e.g. a mirror or user name.
    pub target: String,
    pub detail: String,
}

/// Blob redirects in one hour to one tier (`fallback` when no mirror qualified) for clients
/// of one country (`--` when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectCount {
    /// Hours since the Unix epoch.
    pub hour: u64,
    pub tier: String,
    pub country: String,
    pub count: u64,
}

/// Blob redirects to one mirror in one hour, and the bytes of the blobs redirected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorTraffic {
    /// Hours since the Unix epoch.
    pub hour: u64,
    pub mirror: MirrorName,
    pub redirects: u64,
    pub bytes: u64,
}

/// The hour bucket of a moment.
pub fn hour_of(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0) / 3600
}
