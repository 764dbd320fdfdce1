//! What the store keeps, as versioned serde records. These are storage types, separate from
//! the API and model types; a new layout gets a new variant and a migration.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{BlobRef, ChildManifest, Digest, Generation, Platform, SyncRun};

use super::StoreError;

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredRepo {
    #[serde(rename = "1")]
    V1 { created_at: DateTime<Utc>, updated_at: DateTime<Utc> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredTag {
    #[serde(rename = "1")]
    V1 { digest: Digest, updated_at: DateTime<Utc> },
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "v")]
pub(super) enum StoredManifest {
    #[serde(rename = "1")]
    V1 {
        media_type: String,
        size: u64,
        children: Vec<ChildManifest>,
        blobs: Vec<BlobRef>,
        platform: Option<Platform>,
    },
}

/// A pool file. `released` is set when the last reference to it went away.
#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "v")]
pub(super) enum StoredBlob {
    #[serde(rename = "1")]
    V1 { size: u64, first_seen: Generation, released: Option<Released> },
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub(super) struct Released {
    /// The last generation that referenced the blob.
    pub generation: Generation,
    pub at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredRun {
    #[serde(rename = "1")]
    V1(SyncRun),
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records always serialize")
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))
}
