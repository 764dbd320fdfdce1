//! Every redb table, in one place. Keys are names (repositories, tags, mirrors, users) or a
//! digest's 32 bytes; values are versioned records (see `records.rs`: compact binary for the
//! tables with a row per pool file or manifest, JSON for the rest) or raw bytes.

use redb::TableDefinition;

/// `schema_version`, `generation`, `next_run_id` -> number.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// repository -> `StoredRepo`.
pub(super) const REPOS: TableDefinition<&str, &[u8]> = TableDefinition::new("repos");
/// (repository, tag) -> `StoredTag`.
pub(super) const TAGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tags");
/// manifest digest (its 32 bytes, as in every table below) -> `StoredManifest`.
pub(super) const MANIFESTS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("manifest_records");
/// manifest digest -> the exact bytes received from upstream.
pub(super) const MANIFEST_BYTES: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("manifest_raw");
/// digest -> `StoredBlob`: every pool file (blobs and manifests), with how many repositories
/// reach it. A pool file whose count drops to 0 is released; the commit never scans the
/// catalog to find out.
pub(super) const POOL: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pool");
/// (repository, digest) -> size: everything a repository's tags reach. Answers "may this
/// repository serve this digest" with one lookup.
pub(super) const REPO_CONTENT: TableDefinition<(&str, &[u8; 32]), u64> =
    TableDefinition::new("repo_reach");
/// (released at, in ms since the epoch; digest): the released pool files in the order they
/// expire, so garbage collection reads only what is due.
pub(super) const RELEASED: TableDefinition<(i64, &[u8; 32]), ()> =
    TableDefinition::new("released_at");
/// manifest digest -> subject digest (32 bytes) ++ the descriptor the referrers API lists
/// (JSON): every stored manifest that names a `subject`. Removed with the manifest.
pub(super) const SUBJECTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("subjects");
/// (repository, subject, referrer) -> (): the manifests a repository reaches that name each
/// subject, kept by the commit from the changes of `repo_reach`, so the referrers API is one
/// range read.
pub(super) const REFERRERS: TableDefinition<(&str, &[u8; 32], &[u8; 32]), ()> =
    TableDefinition::new("referrers");
/// (repository, manifest) -> (): manifests a repository publishes without a tag: referrers
/// found through the upstream's referrers API or its fallback index.
pub(super) const UNTAGGED: TableDefinition<(&str, &[u8; 32]), ()> =
    TableDefinition::new("untagged");
/// (repository, manifest) -> the manifest's simple-signing signatures in order
/// (`signature-1` ...): 32-byte digest ++ 8-byte size (little endian) each; the files are
/// pool files the repository reaches.
pub(super) const SIGNATURES: TableDefinition<(&str, &[u8; 32]), &[u8]> =
    TableDefinition::new("signatures");
/// run id -> `StoredRun`.
pub(super) const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("sync_runs");

/// mirror name -> `StoredMirror`.
pub(super) const MIRRORS: TableDefinition<&str, &[u8]> = TableDefinition::new("mirrors");
/// (mirror name, sequence) -> `StoredCrawl`: the recent crawls of each mirror.
pub(super) const CRAWLS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("crawls");

/// generation -> when it was published (ms since the epoch): the last [`super::propagation::KEPT`].
pub(super) const PUBLISHED: TableDefinition<u64, i64> = TableDefinition::new("published");
/// (generation, mirror name) -> when the crawler first credited the mirror with it or a
/// newer one (ms since the epoch), for the generations `published` keeps.
pub(super) const REACHED: TableDefinition<(u64, &str), i64> = TableDefinition::new("reached");

/// (mirror name, hour since epoch) -> (blob redirects, bytes of those blobs).
pub(super) const MIRROR_TRAFFIC: TableDefinition<(&str, u64), (u64, u64)> =
    TableDefinition::new("mirror_traffic");

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
/// Present when a commit rewrote so much that the file is worth compacting at the next open.
pub(super) const KEY_COMPACT_DUE: &str = "compact_due";

/// The tables of schema 3 and before (digests as `sha256:<hex>` strings, JSON records), read
/// only by the migration to schema 4, which removes them.
pub(super) mod v3 {
    use redb::TableDefinition;

    pub const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
    pub const MANIFEST_BYTES: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_bytes");
    pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
    pub const REPO_CONTENT: TableDefinition<(&str, &str), u64> =
        TableDefinition::new("repo_content");
    pub const REFS: TableDefinition<&str, u64> = TableDefinition::new("refs");
    pub const RELEASED: TableDefinition<(i64, &str), ()> = TableDefinition::new("released");
}

/// Upper bound for range scans over a (name, key) prefix: every key byte is ASCII.
pub(super) const KEY_END: &str = "\u{7f}";

const DIGEST_MIN: [u8; 32] = [0; 32];
const DIGEST_MAX: [u8; 32] = [0xff; 32];

/// Every `repo_content` (or `untagged`, `signatures`) key of `repo`.
pub(super) fn repo_keys(repo: &str) -> std::ops::RangeInclusive<(&str, &'static [u8; 32])> {
    (repo, &DIGEST_MIN)..=(repo, &DIGEST_MAX)
}

/// Every `referrers` key of `subject` in `repo`.
pub(super) fn referrer_keys<'a>(
    repo: &'a str,
    subject: &'a [u8; 32],
) -> std::ops::RangeInclusive<(&'a str, &'a [u8; 32], &'static [u8; 32])> {
    (repo, subject, &DIGEST_MIN)..=(repo, subject, &DIGEST_MAX)
}

/// A `signatures` value: each signature's digest and size.
pub(super) fn encode_signatures(sigs: &[(crate::model::Digest, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sigs.len() * 40);
    for (d, size) in sigs {
        out.extend_from_slice(&d.raw());
        out.extend_from_slice(&size.to_le_bytes());
    }
    out
}

pub(super) fn decode_signatures(
    bytes: &[u8],
) -> Result<Vec<(crate::model::Digest, u64)>, super::StoreError> {
    if !bytes.len().is_multiple_of(40) {
        return Err(super::StoreError::Corrupt("signatures: bad record length".into()));
    }
    Ok(bytes
        .chunks_exact(40)
        .map(|c| {
            let size = u64::from_le_bytes(c[32..].try_into().expect("8 bytes"));
            (crate::model::Digest::from_sha256(&c[..32]), size)
        })
        .collect())
}
