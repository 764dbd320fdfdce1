//! Domain types shared by every layer: names, references, digests, media types, the parsed
//! shape of a manifest, what is attached to one and how its signatures verify, and sync-run
//! reports. Leaf module: imports nothing from the crate.

mod activity;
pub mod attachment;
pub mod geography;
mod layout;
mod manifest;
mod mirror;
mod names;
pub mod registry_view;
mod run;
pub mod signature;
mod units;
mod user;

pub use activity::{AuditEntry, MirrorTraffic, RedirectCount, hour_of};
pub use attachment::{AttachmentTag, LookasidePath, Referrer, TagScheme};
pub use layout::{RepoLayout, TagEntry, UntaggedEntry};
pub use manifest::{
    BlobRef, ChildManifest, MAX_MANIFEST_SIZE, ManifestError, ManifestShape, Platform, media_type,
    platform_of_config,
};
pub use mirror::{
    ContentSet, CrawlResult, MAX_BANDWIDTH, MAX_URL_LEN, Mirror, MirrorEditField, MirrorError,
    MirrorHealth, MirrorName, MirrorPatch, MirrorState, MirrorStatus, check_admin_totals,
    needs_reapproval, parse_base_url, parse_netblock, parse_registry_url, registry_host,
    rsync_commands,
};
pub use names::{Digest, NameError, Reference, RepoName, Tag};
pub use run::{RepoReport, RunOutcome, SyncRun};
pub use units::human_bytes;
pub use user::{EmailAddress, Role, User, UserName};

/// The tree's content generation: increases exactly when the published tree changes.
pub type Generation = u64;
