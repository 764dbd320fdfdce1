//! A repository as published: its tags with descriptor fields, and everything they reach.

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

/// A repository as the tree publishes it.
#[derive(Debug, Clone)]
pub struct RepoLayout {
    pub repo: RepoName,
    pub tags: Vec<TagEntry>,
    /// Everything the tags reach (manifests, configs, layers).
    pub content: Vec<Digest>,
}
