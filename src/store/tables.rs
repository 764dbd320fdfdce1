//! Every redb table, in one place. Keys are plain strings (repository names, tags,
//! `sha256:` digests); values are versioned JSON records (see `records.rs`) or raw bytes.

use redb::TableDefinition;

/// `schema_version`, `generation`, `next_run_id` -> number.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// repository -> `StoredRepo`.
pub(super) const REPOS: TableDefinition<&str, &[u8]> = TableDefinition::new("repos");
/// (repository, tag) -> `StoredTag`.
pub(super) const TAGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tags");
/// manifest digest -> `StoredManifest`.
pub(super) const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
/// manifest digest -> the exact bytes received from upstream.
pub(super) const MANIFEST_BYTES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("manifest_bytes");
/// digest -> `StoredBlob`: every pool file (blobs and manifests).
pub(super) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// (repository, digest) -> size: everything a repository's tags reach. Answers "may this
/// repository serve this digest" with one lookup.
pub(super) const REPO_CONTENT: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("repo_content");
/// digest -> how many repositories reach it (rows of `repo_content` naming it). A pool file
/// whose count drops to 0 is released; the commit never scans the catalog to find out.
pub(super) const REFS: TableDefinition<&str, u64> = TableDefinition::new("refs");
/// (released at, in ms since the epoch; digest): the released pool files in the order they
/// expire, so garbage collection reads only what is due.
pub(super) const RELEASED: TableDefinition<(i64, &str), ()> = TableDefinition::new("released");
/// run id -> `StoredRun`.
pub(super) const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("sync_runs");

/// mirror name -> `StoredMirror`.
pub(super) const MIRRORS: TableDefinition<&str, &[u8]> = TableDefinition::new("mirrors");
/// (mirror name, sequence) -> `StoredCrawl`: the recent crawls of each mirror.
pub(super) const CRAWLS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("crawls");

/// sha256(session token) -> `StoredSession`.
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// user name -> `StoredUser`.
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// sequence -> `StoredAudit`: who changed what, when.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// (hour since epoch, tier, country) -> blob redirects counted.
pub(super) const REDIRECTS: TableDefinition<(u64, &str, &str), u64> =
    TableDefinition::new("redirects");

pub(super) const KEY_NEXT_USER: &str = "next_user_id";
pub(super) const KEY_SCHEMA: &str = "schema_version";
pub(super) const KEY_GENERATION: &str = "generation";
pub(super) const KEY_NEXT_RUN: &str = "next_run_id";

/// Upper bound for range scans over a (name, key) prefix: every key byte is ASCII.
pub(super) const KEY_END: &str = "\u{7f}";
