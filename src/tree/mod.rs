//! The mirror tree on disk: what mirrors rsync and what Wharf serves under `/tree/`.
//!
//! ```text
//! <tree>/blobs/sha256/<hex>                   the pool: every blob and manifest, immutable
//! <tree>/repositories/<repo>/oci-layout       one OCI image layout per repository
//! <tree>/repositories/<repo>/index.json       one descriptor per tag (ref.name annotation)
//! <tree>/repositories/<repo>/blobs/sha256/<hex>   hardlinks into the pool
//! <tree>/sigstore/<repo>@sha256=<hex>/signature-<n>  simple-signing signatures (a lookaside
//!                                             store), hardlinks into the pool
//! <tree>/v2/...                               the static registry view (`view.rs`):
//!                                             manifests by tag and digest, tags lists
//! <tree>/wharf-generation.json                the generation marker, written last
//! ```
//!
//! Architecture invariant: a pool file exists only after its bytes were verified against its
//! name; it is written to a temp file outside the tree (same filesystem), fsynced and renamed.
//! Imports `model` only.

mod view;
mod writer;

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Digest, Generation, RepoLayout, RepoName};

pub use writer::BlobWriter;

/// The generation marker's file name, at the tree root.
pub const MARKER_FILE: &str = "wharf-generation.json";
/// The directory of per-architecture file lists.
pub const CONTENT_SETS: &str = "content-sets";
/// The lookaside store of simple-signing signatures, laid out as containers/image reads one.
pub const SIGSTORE: &str = "sigstore";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Entries of a layout directory; no repository name component may equal one.
const RESERVED: [&str; 3] = ["blobs", "index.json", "oci-layout"];

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn io_err(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> TreeError {
    move |source| TreeError::Io { context: context.to_string(), source }
}

/// The generation marker's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub generation: Generation,
    pub published_at: DateTime<Utc>,
}

/// The mirror tree rooted at a directory, with its temp directory.
#[derive(Debug, Clone)]
pub struct MirrorTree {
    root: PathBuf,
    tmp: PathBuf,
}

impl MirrorTree {
    /// Create the tree's directories; `tmp` must be on the tree's filesystem.
    pub fn open(root: &Path, tmp: &Path) -> Result<MirrorTree, TreeError> {
        std::fs::create_dir_all(tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        public_dirs(root, Path::new("blobs/sha256"))?;
        public_dirs(root, Path::new("repositories"))?;
        public_dirs(root, Path::new(SIGSTORE))?;
        std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io_err(tmp.display()))?;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
        let (a, b) =
            (dev(root).map_err(io_err(root.display()))?, dev(tmp).map_err(io_err(tmp.display()))?);
        if a != b {
            return Err(TreeError::Setup(format!(
                "the temp dir {} and the tree {} are on different filesystems; files could not \
                 be renamed into the tree atomically",
                tmp.display(),
                root.display()
            )));
        }
        // Temp files of an interrupted run: nothing refers to them.
        for e in std::fs::read_dir(tmp).map_err(io_err(tmp.display()))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let tree = MirrorTree { root: root.to_owned(), tmp: tmp.to_owned() };
        tree.write_ping()?;
        Ok(tree)
    }

    /// A file beside the temp dir that exists while a sync runs: found at start, it says a
    /// run was cut off and may have left pool files no record names.
    fn running_flag(&self) -> PathBuf {
        self.tmp.with_file_name("sync-running")
    }

    /// A sync begins (see [`Self::sync_was_cut_off`]).
    pub fn sync_started(&self) -> Result<(), TreeError> {
        let flag = self.running_flag();
        std::fs::File::create(&flag)
            .and_then(|f| f.sync_all())
            .map_err(io_err(format!("creating {}", flag.display())))?;
        sync_parent(&flag);
        Ok(())
    }

    /// A sync ended, however it ended, without the process dying.
    pub fn sync_ended(&self) {
        let _ = std::fs::remove_file(self.running_flag());
    }

    /// Whether the last sync was cut off by a crash or a kill.
    pub fn sync_was_cut_off(&self) -> bool {
        self.running_flag().exists()
    }

    /// Whether `repo` can have a layout: a name component that is itself a layout entry
    /// (`blobs`, `index.json`, `oci-layout`) would collide with another repository's layout.
    pub fn can_publish(repo: &RepoName) -> bool {
        !repo.as_str().split('/').any(|c| RESERVED.contains(&c))
    }

    /// Every pool file as (digest, size).
    pub fn pool_files(&self) -> Result<Vec<(Digest, u64)>, TreeError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(dir.display()))? {
            let e = e.map_err(io_err(dir.display()))?;
            let name = e.file_name();
            let Ok(digest) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() else {
                continue;
            };
            let size = e.metadata().map_err(io_err(e.path().display()))?.len();
            out.push((digest, size));
        }
        Ok(out)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a digest lives in the pool.
    pub fn pool_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.pool_path(digest).is_file()
    }

    /// A writer that hashes while it writes and publishes into the pool only on a match.
    pub async fn writer(&self, expected: Digest) -> Result<BlobWriter, TreeError> {
        BlobWriter::create(&self.tmp, self.pool_path(&expected), expected).await
    }

    /// Put small verified bytes (a manifest) into the pool.
    pub fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<(), TreeError> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(TreeError::DigestMismatch { expected: digest.clone(), actual });
        }
        if self.has(digest) {
            return Ok(());
        }
        // The pool directory is synced once per batch (`sync_pool`), not per file.
        self.write_file(&self.pool_path(digest), bytes)
    }

    /// Make the pool's new entries durable: one directory fsync for a batch of pool files,
    /// before the store records them. Each file's data was fsynced before its rename, so
    /// after a crash a pool file is either whole or absent (and then fetched again: the
    /// store never named it).
    pub fn sync_pool(&self) -> Result<(), TreeError> {
        let dir = self.root.join("blobs/sha256");
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(format!("fsync {}", dir.display())))
    }

    /// Write `bytes` to `dest` via a temp file + fsync + rename, and fsync the directory.
    fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<(), TreeError> {
        self.write_file(dest, bytes)?;
        sync_parent(dest);
        Ok(())
    }

    /// Write `bytes` to `dest` via a temp file + fsync + rename (the caller syncs the
    /// directory).
    fn write_file(&self, dest: &Path, bytes: &[u8]) -> Result<(), TreeError> {
        let ctx = || format!("writing {}", dest.display());
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp).map_err(io_err(ctx()))?;
        tmp.as_file().set_permissions(public_file()).map_err(io_err(ctx()))?;
        tmp.write_all(bytes).map_err(io_err(ctx()))?;
        tmp.as_file().sync_all().map_err(io_err(ctx()))?;
        tmp.persist(dest).map_err(|e| io_err(ctx())(e.error))?;
        Ok(())
    }

    /// Remove a collected pool file. Missing is fine.
    pub fn remove_pool_file(&self, digest: &Digest) -> Result<(), TreeError> {
        match std::fs::remove_file(self.pool_path(digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("removing pool file {digest}"))(e))
            }
            _ => Ok(()),
        }
    }

    fn layout_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    /// Make a repository's layout match `layout`: link new blobs first, then swap
    /// `index.json`, then drop links nothing references. Returns whether anything changed.
    pub fn publish_layout(&self, layout: &RepoLayout) -> Result<bool, TreeError> {
        let dir = self.layout_dir(&layout.repo);
        let blobs = dir.join("blobs/sha256");
        public_dirs(
            &self.root,
            &Path::new("repositories").join(layout.repo.as_str()).join("blobs/sha256"),
        )?;
        let mut changed = false;
        let oci_layout = dir.join("oci-layout");
        if !oci_layout.exists() {
            self.write_atomically(&oci_layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            changed = true;
        }
        let wanted: HashSet<&str> = layout.content.iter().map(|d| d.hex()).collect();
        for digest in &layout.content {
            let pool = self.pool_path(digest);
            let link = blobs.join(digest.hex());
            let pool_ino =
                std::fs::metadata(&pool).map_err(io_err(format!("pool file {digest}")))?.ino();
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.ino() == pool_ino => continue,
                Ok(_) => std::fs::remove_file(&link).map_err(io_err(link.display()))?,
                Err(_) => {}
            }
            std::fs::hard_link(&pool, &link)
                .map_err(io_err(format!("linking {}", link.display())))?;
            changed = true;
        }
        changed |= self.publish_view(layout)?;
        let index = index_json(layout);
        if std::fs::read(dir.join("index.json")).ok().as_deref() != Some(index.as_slice()) {
            self.write_atomically(&dir.join("index.json"), &index)?;
            changed = true;
        }
        for entry in std::fs::read_dir(&blobs).map_err(io_err(blobs.display()))? {
            let entry = entry.map_err(io_err(blobs.display()))?;
            let name = entry.file_name();
            if !wanted.contains(name.to_string_lossy().as_ref()) {
                std::fs::remove_file(entry.path()).map_err(io_err(entry.path().display()))?;
                changed = true;
            }
        }
        changed |= self.publish_signatures(&layout.repo, &layout.signatures)?;
        Ok(changed)
    }

    /// The directory of `manifest`'s signatures in `repo`: `sigstore/<repo>@sha256=<hex>`.
    fn signature_dir(&self, repo: &RepoName, manifest: &Digest) -> PathBuf {
        self.root.join(SIGSTORE).join(crate::model::LookasidePath::dir(repo, manifest))
    }

    /// Make `sigstore/<repo>@sha256=<hex>/signature-<n>` match `signed`: each a hardlink to
    /// its pool file, put in place by a rename (a reader sees the old file or the new one),
    /// the ones beyond the count removed. Directories of manifests no longer signed are
    /// removed by [`Self::remove_signatures`] (the commit says which).
    fn publish_signatures(
        &self,
        repo: &RepoName,
        signed: &[(Digest, Vec<Digest>)],
    ) -> Result<bool, TreeError> {
        let mut changed = false;
        for (manifest, sigs) in signed.iter().filter(|(_, s)| !s.is_empty()) {
            let dir = self.signature_dir(repo, manifest);
            public_dirs(&self.root, dir.strip_prefix(&self.root).unwrap_or(&dir))?;
            for (i, sig) in sigs.iter().enumerate() {
                changed |= self.link_into(sig, &dir.join(format!("signature-{}", i + 1)))?;
            }
            for e in std::fs::read_dir(&dir).map_err(io_err(dir.display()))?.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let keep = n
                    .strip_prefix("signature-")
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i >= 1 && i <= sigs.len());
                if !keep {
                    std::fs::remove_file(e.path()).map_err(io_err(e.path().display()))?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Make `link` a hardlink of `digest`'s pool file, put in place by a rename (a reader
    /// sees the old file or the new one). Returns whether it changed.
    fn link_into(&self, digest: &Digest, link: &Path) -> Result<bool, TreeError> {
        let pool = self.pool_path(digest);
        let pool_ino =
            std::fs::metadata(&pool).map_err(io_err(format!("pool file {digest}")))?.ino();
        if std::fs::symlink_metadata(link).is_ok_and(|m| m.ino() == pool_ino) {
            return Ok(false);
        }
        let tmp = self.tmp.join(format!("link-{}", digest.hex()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(&pool, &tmp).map_err(io_err(format!("linking {}", tmp.display())))?;
        std::fs::rename(&tmp, link).map_err(io_err(link.display()))?;
        Ok(true)
    }

    /// Remove the signature directories of these (repository, manifest) pairs, and the
    /// directories that leaves empty. Missing is fine.
    pub fn remove_signatures(&self, gone: &[(RepoName, Digest)]) -> Result<(), TreeError> {
        let base = self.root.join(SIGSTORE);
        for (repo, manifest) in gone {
            let dir = self.signature_dir(repo, manifest);
            if dir.is_dir() {
                remove_dir_files(&dir)?;
            }
            remove_empty_dirs(dir.parent().unwrap_or(&base), &base);
        }
        Ok(())
    }

    /// Remove every signature directory that is not one of `keep` (a full republish).
    pub fn remove_other_signatures(
        &self,
        keep: &HashSet<(RepoName, Digest)>,
    ) -> Result<(), TreeError> {
        let base = self.root.join(SIGSTORE);
        let mut gone = Vec::new();
        let mut todo = vec![base.clone()];
        while let Some(dir) = todo.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = e.path();
                let rel = path.strip_prefix(&base).unwrap_or(&path).to_string_lossy().into_owned();
                let Some((repo, hex)) = rel.rsplit_once("@sha256=") else {
                    todo.push(path);
                    continue;
                };
                let pair = repo.parse().ok().zip(format!("sha256:{hex}").parse().ok());
                match pair {
                    Some(p) if keep.contains(&p) => {}
                    Some(p) => gone.push(p),
                    None => remove_dir_files(&path)?,
                }
            }
        }
        self.remove_signatures(&gone)
    }

    /// Remove the layouts of repositories not in `keep`. Returns how many were removed.
    pub fn remove_other_layouts(&self, keep: &HashSet<RepoName>) -> Result<usize, TreeError> {
        let base = self.root.join("repositories");
        let mut removed = 0;
        for dir in find_layouts(&base)? {
            let name = dir.strip_prefix(&base).unwrap_or(&dir).to_string_lossy().into_owned();
            if name.parse::<RepoName>().is_ok_and(|r| keep.contains(&r)) {
                continue;
            }
            self.remove_layout_dir(&dir)?;
            removed += 1;
        }
        self.remove_other_views(keep)?;
        Ok(removed)
    }

    /// Remove these repositories' layouts (those that exist). Returns how many were removed.
    pub fn remove_layouts(&self, repos: &[RepoName]) -> Result<usize, TreeError> {
        let mut removed = 0;
        for repo in repos {
            let dir = self.layout_dir(repo);
            self.remove_view(repo)?;
            if dir.join("oci-layout").is_file() {
                self.remove_layout_dir(&dir)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn remove_layout_dir(&self, dir: &Path) -> Result<(), TreeError> {
        let base = self.root.join("repositories");
        let blobs = dir.join("blobs/sha256");
        if blobs.is_dir() {
            for e in std::fs::read_dir(&blobs).map_err(io_err(blobs.display()))? {
                let p = e.map_err(io_err(blobs.display()))?.path();
                std::fs::remove_file(&p).map_err(io_err(p.display()))?;
            }
        }
        for f in ["index.json", "oci-layout"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        // Remove now-empty directories up to (not including) `repositories/`; a layout of
        // a nested repository (`a/b` under `a`) keeps its parent.
        let _ = std::fs::remove_dir(&blobs);
        let _ = std::fs::remove_dir(dir.join("blobs"));
        remove_empty_dirs(dir, &base);
        Ok(())
    }

    /// Write `content-sets/<arch>.txt` for each architecture of `arches` (paths relative to
    /// the tree root, for `rsync --files-from`, as `lines` writes them) and remove the lists of
    /// architectures no longer present. Each list is streamed to a temp file and renamed into
    /// place: no list is ever held in memory.
    pub fn write_content_sets(
        &self,
        arches: &[String],
        lines: impl Fn(&str, &mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<(), TreeError> {
        public_dirs(&self.root, Path::new(CONTENT_SETS))?;
        let dir = self.root.join(CONTENT_SETS);
        for arch in arches {
            let path = dir.join(format!("{arch}.txt"));
            let ctx = || format!("writing {}", path.display());
            let tmp = tempfile::NamedTempFile::new_in(&self.tmp).map_err(io_err(ctx()))?;
            tmp.as_file().set_permissions(public_file()).map_err(io_err(ctx()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp);
            lines(arch, &mut out).map_err(io_err(ctx()))?;
            let tmp = out.into_inner().map_err(|e| io_err(ctx())(e.into_error()))?;
            tmp.as_file().sync_all().map_err(io_err(ctx()))?;
            tmp.persist(&path).map_err(|e| io_err(ctx())(e.error))?;
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        for e in std::fs::read_dir(&dir).map_err(io_err(dir.display()))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.strip_suffix(".txt").is_some_and(|a| arches.iter().any(|x| x == a)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    pub fn read_marker(&self) -> Option<Marker> {
        let bytes = std::fs::read(self.root.join(MARKER_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Write the generation marker (last, atomically).
    pub fn write_marker(&self, marker: &Marker) -> Result<(), TreeError> {
        let mut bytes = serde_json::to_vec_pretty(marker).expect("marker serializes");
        bytes.push(b'\n');
        self.write_atomically(&self.root.join(MARKER_FILE), &bytes)
    }
}

/// Mode of everything published: mirrors' rsync daemons and web servers run as other users,
/// so the tree is world-readable whatever the process umask.
pub(crate) fn public_file() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o644)
}

/// Create `root/rel` and every directory between, each world-readable and traversable.
fn public_dirs(root: &Path, rel: &Path) -> Result<(), TreeError> {
    let mut dir = root.to_owned();
    for part in std::iter::once(None).chain(rel.components().map(Some)) {
        dir.extend(part);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let mode = std::fs::metadata(&dir).map_err(io_err(dir.display()))?.permissions();
        if std::os::unix::fs::PermissionsExt::mode(&mode) & 0o755 != 0o755 {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err(dir.display()))?;
        }
    }
    Ok(())
}

/// Directories under `base` that hold an `oci-layout` file.
fn find_layouts(base: &Path) -> Result<Vec<PathBuf>, TreeError> {
    let mut out = Vec::new();
    let mut todo = vec![base.to_owned()];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        if dir.join("oci-layout").is_file() {
            out.push(dir.clone());
        }
        for e in rd {
            let e = e.map_err(io_err(dir.display()))?;
            if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "blobs" {
                todo.push(e.path());
            }
        }
    }
    Ok(out)
}

/// Remove `dir` and its parents while they are empty, up to (not including) `base`.
fn remove_empty_dirs(dir: &Path, base: &Path) {
    let mut d = dir;
    while d != base && d.starts_with(base) && std::fs::remove_dir(d).is_ok() {
        d = d.parent().unwrap_or(base);
    }
}

/// Remove a directory of files (a signature directory) and the directory.
fn remove_dir_files(dir: &Path) -> Result<(), TreeError> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir.display()))?.flatten() {
        std::fs::remove_file(e.path()).map_err(io_err(e.path().display()))?;
    }
    std::fs::remove_dir(dir).map_err(io_err(dir.display()))
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
        let _ = dir.sync_all();
    }
}

/// The layout's `index.json`: one descriptor per tag, sorted by tag, then one per untagged
/// manifest (a referrer), sorted by digest, without a ref name.
fn index_json(layout: &RepoLayout) -> Vec<u8> {
    let tagged = layout.tags.iter().map(|t| {
        let mut d = serde_json::json!({
            "mediaType": t.media_type,
            "digest": t.digest.as_str(),
            "size": t.size,
            "annotations": { ANNOTATION_REF_NAME: t.tag.as_str() },
        });
        if let Some(p) = &t.platform {
            d["platform"] = serde_json::to_value(p).expect("platform serializes");
        }
        d
    });
    let untagged = layout.untagged.iter().map(|u| {
        serde_json::json!({ "mediaType": u.media_type, "digest": u.digest.as_str(), "size": u.size })
    });
    let manifests: Vec<serde_json::Value> = tagged.chain(untagged).collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::model::media_type::OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec(&index).expect("index serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TagEntry, UntaggedEntry};

    fn layout(tree: &MirrorTree, repo: &str, signed: &[(&Digest, &[&[u8]])]) -> RepoLayout {
        let image = br#"{"schemaVersion":2}"#;
        let d = Digest::of(image);
        tree.put_bytes(&d, image).unwrap();
        let mut content = vec![d.clone()];
        let signatures = signed
            .iter()
            .map(|(m, sigs)| {
                let sigs: Vec<Digest> = sigs
                    .iter()
                    .map(|s| {
                        let sd = Digest::of(s);
                        tree.put_bytes(&sd, s).unwrap();
                        content.push(sd.clone());
                        sd
                    })
                    .collect();
                ((*m).clone(), sigs)
            })
            .collect();
        let entry = TagEntry {
            tag: "v1".parse().unwrap(),
            digest: d.clone(),
            media_type: crate::model::media_type::OCI_MANIFEST.into(),
            size: image.len() as u64,
            platform: None,
        };
        let untagged =
            vec![UntaggedEntry { digest: d, media_type: entry.media_type.clone(), size: 1 }];
        let manifests = vec![(entry.digest.clone(), entry.media_type.clone())];
        RepoLayout {
            repo: repo.parse().unwrap(),
            tags: vec![entry],
            untagged,
            signatures,
            content,
            manifests,
        }
    }

    #[test]
    fn the_registry_view_names_each_manifest_by_tag_and_digest_and_goes_with_its_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        let tree = MirrorTree::open(&root, &dir.path().join("tmp")).unwrap();
        assert_eq!(std::fs::read(root.join("v2/_ping.json")).unwrap(), b"{}");
        let l = layout(&tree, "lib/app", &[]);
        let d = l.tags[0].digest.clone();
        tree.publish_layout(&l).unwrap();
        let view = root.join("v2/lib/app/_manifests");
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let pool = ino(&tree.pool_path(&d));
        assert_eq!(ino(&view.join("v1.oci-manifest")), pool, "a tag is a hardlink of its manifest");
        assert_eq!(ino(&view.join(format!("{d}.oci-manifest"))), pool);
        let list: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("v2/lib/app/_tags.json")).unwrap())
                .unwrap();
        assert_eq!(list, serde_json::json!({"name": "lib/app", "tags": ["v1"]}));
        // A content set's list names what it carries: both names of a carried manifest.
        let repo: RepoName = "lib/app".parse().unwrap();
        let mut all = tree.view_files(&repo, |_| true).unwrap();
        all.sort();
        assert_eq!(
            all,
            [
                format!("v2/lib/app/_manifests/{d}.oci-manifest"),
                "v2/lib/app/_manifests/v1.oci-manifest".to_owned(),
                "v2/lib/app/_tags.json".to_owned(),
            ]
        );
        assert_eq!(tree.view_files(&repo, |_| false).unwrap(), ["v2/lib/app/_tags.json"]);
        // The tag moves to another kind of manifest: the old name goes.
        let mut moved = l.clone();
        moved.tags[0].media_type = crate::model::media_type::OCI_INDEX.into();
        tree.publish_layout(&moved).unwrap();
        assert!(view.join("v1.oci-index").exists() && !view.join("v1.oci-manifest").exists());
        // The repository goes: its view goes with its layout, and the empty parents.
        tree.remove_layouts(std::slice::from_ref(&repo)).unwrap();
        assert!(!root.join("v2/lib").exists());
        // A full republish removes views of repositories it does not keep.
        tree.publish_layout(&l).unwrap();
        tree.remove_other_layouts(&HashSet::new()).unwrap();
        assert!(!root.join("v2/lib").exists() && root.join("v2/_ping.json").exists());
    }

    #[test]
    fn signatures_are_linked_where_a_lookaside_store_has_them_and_removed_when_they_go() {
        let dir = tempfile::tempdir().unwrap();
        let tree = MirrorTree::open(&dir.path().join("tree"), &dir.path().join("tmp")).unwrap();
        let (m1, m2) = (Digest::of(b"m1"), Digest::of(b"m2"));
        let at = |repo: &str, m: &Digest, n: u32| {
            let p = crate::model::LookasidePath {
                repo: repo.parse().unwrap(),
                manifest: m.clone(),
                index: n,
            };
            dir.path().join("tree").join(SIGSTORE).join(p.to_string())
        };
        let l = layout(&tree, "lib/app", &[(&m1, &[b"one", b"two"]), (&m2, &[b"three"])]);
        tree.publish_layout(&l).unwrap();
        assert_eq!(std::fs::read(at("lib/app", &m1, 2)).unwrap(), b"two");
        assert_eq!(std::fs::read(at("lib/app", &m2, 1)).unwrap(), b"three");
        // The untagged manifest is in index.json without a ref name.
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("tree/repositories/lib/app/index.json")).unwrap(),
        )
        .unwrap();
        assert!(index["manifests"][1].get("annotations").is_none());
        // Fewer signatures: the extra file goes; a replaced one is the new file.
        let l = layout(&tree, "lib/app", &[(&m1, &[b"uno"]), (&m2, &[b"three"])]);
        tree.publish_layout(&l).unwrap();
        assert_eq!(std::fs::read(at("lib/app", &m1, 1)).unwrap(), b"uno");
        assert!(!at("lib/app", &m1, 2).exists());
        // What the commit says went is removed, and the directories it leaves empty.
        tree.remove_signatures(&[("lib/app".parse().unwrap(), m2.clone())]).unwrap();
        assert!(!at("lib/app", &m2, 1).parent().unwrap().exists());
        assert!(at("lib/app", &m1, 1).exists());
        // A full republish keeps only what the layouts name.
        tree.publish_layout(&layout(&tree, "other", &[(&m2, &[b"x"])])).unwrap();
        let keep = HashSet::from([("other".parse().unwrap(), m2.clone())]);
        tree.remove_other_signatures(&keep).unwrap();
        assert!(at("other", &m2, 1).exists());
        assert!(!dir.path().join("tree/sigstore/lib").exists());
        // Nothing of the links is left in the tree's temp dir.
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
