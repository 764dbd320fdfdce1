//! A repository as published: its tags with descriptor fields, its untagged manifests and
//! signatures, and everything they reach.

use super::{Digest, Platform, RepoName, Tag};

/// One tag of a repository with its manifest's descriptor fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    pub tag: Tag,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub platform: Option<Platform>,
}

/// A manifest published without a tag (a referrer), with its descriptor fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntaggedEntry {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A repository as the tree publishes it.
#[derive(Debug, Clone)]
pub struct RepoLayout {
    pub repo: RepoName,
    pub tags: Vec<TagEntry>,
    /// Manifests published without a tag: listed in `index.json` without a ref name.
    pub untagged: Vec<UntaggedEntry>,
    /// Each signed manifest's simple-signing signatures, `signature-1` first (pool files,
    /// linked at `sigstore/<repo>@sha256=<hex>/signature-<n>`).
    pub signatures: Vec<(Digest, Vec<Digest>)>,
    /// Everything the tags, the untagged manifests and the signatures reach.
    pub content: Vec<Digest>,
    /// The manifests among `content`, with their media types (the registry view serves
    /// each by digest with its content type).
    pub manifests: Vec<(Digest, String)>,
}
