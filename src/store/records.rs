//! What the store keeps, as versioned serde records. These are storage types, separate from
//! the API and model types; a new layout gets a new variant and a migration.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    BlobRef, ChildManifest, CrawlResult, Digest, Generation, MAX_MANIFEST_SIZE, Mirror,
    MirrorHealth, MirrorName, Platform, RepoReport, RunOutcome, SyncRun,
};

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

/// A manifest's record: what the commit, negotiation and browsing need without parsing the
/// bytes. Stored as [`MANIFEST_LAYOUT`] ++ postcard([`ManifestWire`]) (schema 4; schema 3
/// kept JSON, read by [`StoredManifest::from_json`] during the migration).
#[derive(Clone, Deserialize)]
pub(super) struct StoredManifest {
    pub media_type: String,
    pub size: u64,
    pub children: Vec<ChildManifest>,
    pub blobs: Vec<BlobRef>,
    pub platform: Option<Platform>,
}

const MANIFEST_LAYOUT: u8 = 1;

/// The stored shape of a manifest record: digests as their 32 bytes.
#[derive(Serialize, Deserialize)]
struct ManifestWire {
    media_type: String,
    size: u64,
    children: Vec<ChildWire>,
    blobs: Vec<([u8; 32], u64)>,
    platform: Option<PlatformWire>,
}

#[derive(Serialize, Deserialize)]
struct ChildWire {
    digest: [u8; 32],
    media_type: String,
    size: u64,
    platform: Option<PlatformWire>,
}

#[derive(Serialize, Deserialize)]
struct PlatformWire {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl PlatformWire {
    fn of(p: &Platform) -> PlatformWire {
        PlatformWire {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        }
    }

    fn model(self) -> Platform {
        Platform { os: self.os, architecture: self.architecture, variant: self.variant }
    }
}

impl StoredManifest {
    pub(super) fn encode(&self) -> Vec<u8> {
        let StoredManifest { media_type, size, children, blobs, platform } = self;
        let wire = ManifestWire {
            media_type: media_type.clone(),
            size: *size,
            children: children
                .iter()
                .map(|c| ChildWire {
                    digest: c.digest.raw(),
                    media_type: c.media_type.clone(),
                    size: c.size,
                    platform: c.platform.as_ref().map(PlatformWire::of),
                })
                .collect(),
            blobs: blobs.iter().map(|b| (b.digest.raw(), b.size)).collect(),
            platform: platform.as_ref().map(PlatformWire::of),
        };
        encode_binary(MANIFEST_LAYOUT, &wire)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<StoredManifest, StoreError> {
        let w: ManifestWire = decode_binary("manifests", MANIFEST_LAYOUT, bytes)?;
        Ok(StoredManifest {
            media_type: w.media_type,
            size: w.size,
            children: w
                .children
                .into_iter()
                .map(|c| ChildManifest {
                    digest: Digest::from_sha256(&c.digest),
                    media_type: c.media_type,
                    size: c.size,
                    platform: c.platform.map(PlatformWire::model),
                })
                .collect(),
            blobs: w
                .blobs
                .into_iter()
                .map(|(d, size)| BlobRef { digest: Digest::from_sha256(&d), size })
                .collect(),
            platform: w.platform.map(PlatformWire::model),
        })
    }

    /// A schema-3 record (JSON).
    pub(super) fn from_json(bytes: &[u8]) -> Result<StoredManifest, StoreError> {
        #[derive(Deserialize)]
        #[serde(tag = "v")]
        enum Json {
            #[serde(rename = "1")]
            V1(StoredManifest),
        }
        let Json::V1(m) = decode("manifests", bytes)?;
        Ok(m)
    }
}

/// A pool file's record. Stored as [`POOL_LAYOUT`] ++ postcard (schema 4, keyed by the
/// digest's 32 bytes; about 15 bytes a record against ~150 as JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(super) struct StoredBlob {
    pub size: u64,
    pub first_seen: Generation,
    /// Set when the last reference to it went away.
    pub released: Option<Released>,
    /// Content set -> the generation from which it carries the blob (see
    /// `selection::BlobFacts::sets`).
    pub sets: BTreeMap<String, Generation>,
    /// How many repositories reach it (rows of `repo_content` naming it).
    pub refs: u64,
}

const POOL_LAYOUT: u8 = 1;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub(super) struct Released {
    /// The last generation that referenced the blob.
    pub generation: Generation,
    /// When, in milliseconds since the epoch (the `released` index's key).
    pub at_ms: i64,
}

impl StoredBlob {
    pub(super) fn encode(&self) -> Vec<u8> {
        encode_binary(POOL_LAYOUT, self)
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<StoredBlob, StoreError> {
        decode_binary("pool", POOL_LAYOUT, bytes)
    }

    /// A schema-3 record (JSON) and its reference count.
    pub(super) fn from_json(bytes: &[u8], refs: u64) -> Result<StoredBlob, StoreError> {
        #[derive(Deserialize)]
        struct ReleasedJson {
            generation: Generation,
            at: DateTime<Utc>,
        }
        #[derive(Deserialize)]
        #[serde(tag = "v")]
        enum Json {
            #[serde(rename = "1")]
            V1 {
                size: u64,
                first_seen: Generation,
                released: Option<ReleasedJson>,
                #[serde(default)]
                sets: BTreeMap<String, Generation>,
            },
        }
        let Json::V1 { size, first_seen, released, sets } = decode("blobs", bytes)?;
        let released =
            released.map(|r| Released { generation: r.generation, at_ms: r.at.timestamp_millis() });
        Ok(StoredBlob { size, first_seen, released, sets, refs })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredRun {
    #[serde(rename = "1")]
    V1(RunV1),
}

/// A sync run as stored; `model::SyncRun` may change shape, this may not.
#[derive(Serialize, Deserialize)]
pub(super) struct RunV1 {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    outcome: OutcomeV1,
    generation_before: Generation,
    generation_after: Generation,
    repos: Vec<RepoReportV1>,
    error: Option<String>,
    blobs_collected: u32,
}

#[derive(Serialize, Deserialize)]
enum OutcomeV1 {
    Ok,
    Partial,
    Failed,
}

#[derive(Serialize, Deserialize)]
struct RepoReportV1 {
    repo: String,
    tags: [u32; 4],
    #[serde(default)]
    attachments: u32,
    manifests_fetched: u32,
    blobs_fetched: u32,
    bytes_fetched: u64,
    duration_ms: u64,
    errors: Vec<String>,
}

impl From<SyncRun> for StoredRun {
    fn from(r: SyncRun) -> Self {
        StoredRun::V1(RunV1 {
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: match r.outcome {
                RunOutcome::Ok => OutcomeV1::Ok,
                RunOutcome::Partial => OutcomeV1::Partial,
                RunOutcome::Failed => OutcomeV1::Failed,
            },
            generation_before: r.generation_before,
            generation_after: r.generation_after,
            repos: r
                .repos
                .into_iter()
                .map(|p| RepoReportV1 {
                    repo: p.repo,
                    tags: [p.tags_added, p.tags_moved, p.tags_removed, p.tags_unchanged],
                    attachments: p.attachments_changed,
                    manifests_fetched: p.manifests_fetched,
                    blobs_fetched: p.blobs_fetched,
                    bytes_fetched: p.bytes_fetched,
                    duration_ms: p.duration_ms,
                    errors: p.errors,
                })
                .collect(),
            error: r.error,
            blobs_collected: r.blobs_collected,
        })
    }
}

impl StoredRun {
    pub(super) fn into_model(self, id: u64) -> SyncRun {
        let StoredRun::V1(r) = self;
        SyncRun {
            id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: match r.outcome {
                OutcomeV1::Ok => RunOutcome::Ok,
                OutcomeV1::Partial => RunOutcome::Partial,
                OutcomeV1::Failed => RunOutcome::Failed,
            },
            generation_before: r.generation_before,
            generation_after: r.generation_after,
            repos: r
                .repos
                .into_iter()
                .map(|p| RepoReport {
                    repo: p.repo,
                    tags_added: p.tags[0],
                    tags_moved: p.tags[1],
                    tags_removed: p.tags[2],
                    tags_unchanged: p.tags[3],
                    attachments_changed: p.attachments,
                    manifests_fetched: p.manifests_fetched,
                    blobs_fetched: p.blobs_fetched,
                    bytes_fetched: p.bytes_fetched,
                    duration_ms: p.duration_ms,
                    errors: p.errors,
                })
                .collect(),
            error: r.error,
            blobs_collected: r.blobs_collected,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredMirror {
    #[serde(rename = "1")]
    V1 { mirror: MirrorV1, health: HealthV1 },
}

/// A mirror as stored; `model::Mirror` may change shape, this may not.
#[derive(Serialize, Deserialize)]
pub(super) struct MirrorV1 {
    name: String,
    owner: Option<u64>,
    urls: Vec<String>,
    country: Option<String>,
    continent_override: Option<String>,
    asns: Vec<u32>,
    netblocks: Vec<String>,
    bandwidth: u32,
    private: bool,
    enabled: bool,
    /// Added after the first release of V1: absent means not pending.
    #[serde(default)]
    pending: bool,
    active: bool,
    disabled_reason: Option<String>,
    /// `all` or `amd64,arm64`.
    content: String,
    /// Added with registry mirrors: absent means none.
    #[serde(default)]
    registry_url: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct HealthV1 {
    generation: Option<Generation>,
    last_crawl: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    last_error: Option<String>,
    consecutive_failures: u32,
    auto_disabled: Option<String>,
    /// Added with registry mirrors: absent means not verified.
    #[serde(default)]
    registry_generation: Option<Generation>,
    #[serde(default)]
    registry_error: Option<String>,
}

impl StoredMirror {
    pub(super) fn new(m: &Mirror, h: &MirrorHealth) -> StoredMirror {
        StoredMirror::V1 {
            mirror: MirrorV1 {
                name: m.name.to_string(),
                owner: m.owner,
                urls: m.urls.clone(),
                country: m.country.clone(),
                continent_override: m.continent_override.clone(),
                asns: m.asns.clone(),
                netblocks: m.netblocks.iter().map(|n| n.to_string()).collect(),
                bandwidth: m.bandwidth,
                private: m.private,
                enabled: m.enabled,
                pending: m.pending,
                active: m.active,
                disabled_reason: m.disabled_reason.clone(),
                content: m.content.to_string(),
                registry_url: m.registry_url.clone(),
            },
            health: HealthV1 {
                generation: h.generation,
                last_crawl: h.last_crawl,
                last_success: h.last_success,
                last_error: h.last_error.clone(),
                consecutive_failures: h.consecutive_failures,
                auto_disabled: h.auto_disabled.clone(),
                registry_generation: h.registry_generation,
                registry_error: h.registry_error.clone(),
            },
        }
    }

    pub(super) fn into_model(self) -> Result<(Mirror, MirrorHealth), StoreError> {
        let StoredMirror::V1 { mirror: m, health: h } = self;
        let bad = |what: &str| StoreError::Corrupt(format!("mirrors: {} has a bad {what}", m.name));
        let mirror = Mirror {
            name: m.name.parse().map_err(|_| bad("name"))?,
            owner: m.owner,
            urls: m.urls.clone(),
            country: m.country.clone(),
            continent_override: m.continent_override.clone(),
            asns: m.asns.clone(),
            netblocks: m
                .netblocks
                .iter()
                .map(|n| n.parse())
                .collect::<Result<_, _>>()
                .map_err(|_| bad("netblock"))?,
            bandwidth: m.bandwidth,
            private: m.private,
            enabled: m.enabled,
            pending: m.pending,
            active: m.active,
            disabled_reason: m.disabled_reason.clone(),
            content: m.content.parse().map_err(|_| bad("content set"))?,
            registry_url: m.registry_url.clone(),
        };
        let health = MirrorHealth {
            generation: h.generation,
            last_crawl: h.last_crawl,
            last_success: h.last_success,
            last_error: h.last_error,
            consecutive_failures: h.consecutive_failures,
            auto_disabled: h.auto_disabled,
            registry_generation: h.registry_generation,
            registry_error: h.registry_error,
        };
        Ok((mirror, health))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum StoredCrawl {
    #[serde(rename = "1")]
    V1 {
        at: DateTime<Utc>,
        duration_ms: u64,
        claimed: Option<Generation>,
        credited: Option<Generation>,
        checks: u32,
        downloads: u32,
        error: Option<String>,
        /// Added with registry mirrors: absent means not checked.
        #[serde(default)]
        registry: Option<Result<(), String>>,
    },
}

impl StoredCrawl {
    pub(super) fn new(c: &CrawlResult) -> StoredCrawl {
        StoredCrawl::V1 {
            at: c.at,
            duration_ms: c.duration_ms,
            claimed: c.claimed,
            credited: c.credited,
            checks: c.checks,
            downloads: c.downloads,
            error: c.error.clone(),
            registry: c.registry.clone(),
        }
    }

    pub(super) fn into_model(self, mirror: MirrorName) -> CrawlResult {
        let StoredCrawl::V1 {
            at,
            duration_ms,
            claimed,
            credited,
            checks,
            downloads,
            error,
            registry,
        } = self;
        CrawlResult {
            mirror,
            at,
            duration_ms,
            claimed,
            credited,
            checks,
            downloads,
            error,
            registry,
        }
    }
}

/// A manifest's exact bytes as `manifest_raw` keeps them: a layout byte, then the bytes as
/// they are ([`RAW_STORED`]) or deflated ([`RAW_DEFLATED`], when that saves a tenth or more:
/// JSON manifests shrink to about half, and at a million pool files they are most of the
/// store). Deflate is lossless: what [`unpack_manifest`] returns is byte for byte what was
/// packed, so the digest never changes.
pub(super) fn pack_manifest(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z =
        flate2::write::DeflateEncoder::new(vec![RAW_DEFLATED], flate2::Compression::default());
    let packed = z.write_all(bytes).and_then(|()| z.finish()).expect("deflating into memory");
    if packed.len() < bytes.len() - bytes.len() / 10 {
        packed
    } else {
        let mut out = Vec::with_capacity(bytes.len() + 1);
        out.push(RAW_STORED);
        out.extend_from_slice(bytes);
        out
    }
}

const RAW_STORED: u8 = 0;
const RAW_DEFLATED: u8 = 1;

/// The bytes [`pack_manifest`] packed.
pub(super) fn unpack_manifest(packed: &[u8]) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let bad = |why: &str| StoreError::Corrupt(format!("manifest_raw: {why}"));
    match packed.split_first() {
        Some((&RAW_STORED, bytes)) => Ok(bytes.to_vec()),
        Some((&RAW_DEFLATED, z)) => {
            let mut out = Vec::with_capacity(z.len() * 3);
            // No manifest the sync accepts is larger: a record that inflates past that is
            // corrupt, not a reason to allocate without bound.
            flate2::read::DeflateDecoder::new(z)
                .take(MAX_MANIFEST_SIZE + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(&e.to_string()))?;
            if out.len() as u64 > MAX_MANIFEST_SIZE {
                return Err(bad("inflates past the manifest size limit"));
            }
            Ok(out)
        }
        _ => Err(bad("unknown record layout")),
    }
}

/// Records of the big tables (pool files, manifests): a layout byte, then postcard.
fn encode_binary<T: Serialize>(layout: u8, value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![layout]).expect("stored records always serialize")
}

fn decode_binary<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    layout: u8,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&l, rest)) if l == layout => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))
        }
        _ => Err(StoreError::Corrupt(format!("{table}: unknown record layout"))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> StoredManifest {
        let d = |s: &str| Digest::of(s.as_bytes());
        let amd = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        StoredManifest {
            media_type: crate::model::media_type::OCI_INDEX.into(),
            size: 1234,
            children: vec![ChildManifest {
                digest: d("child"),
                media_type: crate::model::media_type::OCI_MANIFEST.into(),
                size: 567,
                platform: Some(Platform { variant: Some("v8".into()), ..amd.clone() }),
            }],
            blobs: vec![BlobRef { digest: d("layer"), size: 1 << 40 }],
            platform: Some(amd),
        }
    }

    fn json_manifest(m: &StoredManifest) -> Vec<u8> {
        let StoredManifest { media_type, size, children, blobs, platform } = m;
        serde_json::to_vec(&serde_json::json!({"v": "1", "media_type": media_type, "size": size,
            "children": children, "blobs": blobs, "platform": platform}))
        .unwrap()
    }

    fn same(a: &StoredManifest, b: &StoredManifest) -> bool {
        json_manifest(a) == json_manifest(b)
    }

    #[test]
    fn records_read_back_as_written_and_schema_3_records_convert() {
        let m = manifest();
        assert!(same(&StoredManifest::decode(&m.encode()).unwrap(), &m));
        assert!(same(&StoredManifest::from_json(&json_manifest(&m)).unwrap(), &m));

        let b = StoredBlob {
            size: 26_000_000,
            first_seen: 41,
            released: Some(Released { generation: 40, at_ms: 1_767_225_600_123 }),
            sets: BTreeMap::from([("*".into(), 41), ("arm64".into(), 42)]),
            refs: 0,
        };
        assert_eq!(StoredBlob::decode(&b.encode()).unwrap(), b);
        let json = br#"{"v":"1","size":26000000,"first_seen":41,"released":{"generation":40,"at":"2026-01-01T00:00:00.123Z"},"sets":{"*":41,"arm64":42}}"#;
        assert_eq!(StoredBlob::from_json(json, 0).unwrap(), b);
        let shared = StoredBlob { released: None, refs: 3, ..b.clone() };
        let json = br#"{"v":"1","size":26000000,"first_seen":41,"released":null,"sets":{"*":41,"arm64":42}}"#;
        assert_eq!(StoredBlob::from_json(json, 3).unwrap(), shared);
        // What a million of them cost: a referenced blob in one content set.
        let typical = StoredBlob { sets: BTreeMap::from([("*".into(), 41)]), ..shared };
        assert!(typical.encode().len() <= 16, "{}", typical.encode().len());
    }

    #[test]
    fn manifest_bytes_come_back_byte_for_byte() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0e3bab54f6d5f9df3a0d1e3f0bd59f9e2e05be8d4ad0f1e3ca8cbd5f5a3e4e1c","size":1469},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:6f3e4ffb5de5f4b95e2d8e4ad47f3b6e0c9b5c4e7f7e1a39c0e0d1f2f4b0c5d1","size":3623807}]}   "#;
        let packed = pack_manifest(manifest);
        assert_eq!(packed[0], RAW_DEFLATED);
        assert!(packed.len() < manifest.len() * 3 / 4, "{} of {}", packed.len(), manifest.len());
        assert_eq!(unpack_manifest(&packed).unwrap(), manifest);
        // What does not shrink is kept as it is.
        let tiny = b"{}";
        assert_eq!(pack_manifest(tiny), [&[RAW_STORED][..], tiny].concat());
        assert_eq!(unpack_manifest(&pack_manifest(tiny)).unwrap(), tiny);
        // Damage is an error, never other bytes or an unbounded allocation.
        let mut damaged = packed.clone();
        damaged.truncate(packed.len() / 2);
        assert!(unpack_manifest(&damaged).is_err());
        let bomb = pack_manifest(&vec![b' '; (MAX_MANIFEST_SIZE + 10) as usize]);
        assert!(bomb.len() < 100_000);
        let err = unpack_manifest(&bomb).unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        assert!(unpack_manifest(&[7, 1, 2]).is_err());
        assert!(unpack_manifest(&[]).is_err());
    }

    #[test]
    fn a_record_that_does_not_decode_is_reported_not_misread() {
        let mut bytes = manifest().encode();
        bytes[0] = 9; // a layout this build does not know
        let err = StoredManifest::decode(&bytes).err().unwrap().to_string();
        assert!(err.contains("unknown record layout"), "{err}");
        let b =
            StoredBlob { size: 1, first_seen: 1, released: None, sets: BTreeMap::new(), refs: 1 };
        let bytes = b.encode();
        for cut in 0..bytes.len() {
            assert!(StoredBlob::decode(&bytes[..cut]).is_err(), "{cut} bytes decoded");
        }
        assert!(StoredBlob::decode(b"{\"v\":\"1\"}").is_err());
    }
}
