//! The static registry view under `v2/` (see `model::registry_view`): what a plain web
//! server needs to answer the pull API from a copy of the tree. Manifests are hardlinks into
//! the pool, so the view costs directory entries, not bytes; blobs are served from the pool.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

use crate::model::registry_view::{self, MANIFESTS_DIR, PING_FILE, TAGS_FILE, VIEW_DIR};
use crate::model::{Digest, RepoLayout, RepoName};

use super::{MirrorTree, TreeError, io_err, public_dirs};

impl MirrorTree {
    fn view_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join(VIEW_DIR).join(repo.as_str())
    }

    /// `v2/_ping.json`, the body of `GET /v2/`: written once.
    pub(super) fn write_ping(&self) -> Result<(), TreeError> {
        public_dirs(&self.root, Path::new(VIEW_DIR))?;
        let ping = self.root.join(VIEW_DIR).join(PING_FILE);
        if std::fs::read(&ping).ok().as_deref() != Some(b"{}".as_slice()) {
            self.write_atomically(&ping, b"{}")?;
        }
        Ok(())
    }

    /// Make `v2/<repo>/` match `layout`: every manifest by digest, then every tag (each a
    /// hardlink renamed into place, so a reader sees the old manifest or the new one), then
    /// the tags list; last, files nothing names any more. Called by `publish_layout` after
    /// the layout's blobs are linked and before its stale ones go.
    pub(super) fn publish_view(&self, layout: &RepoLayout) -> Result<bool, TreeError> {
        let rel = Path::new(VIEW_DIR).join(layout.repo.as_str()).join(MANIFESTS_DIR);
        public_dirs(&self.root, &rel)?;
        let dir = self.root.join(&rel);
        let mut changed = false;
        let mut wanted = HashSet::new();
        let kinds: HashMap<&Digest, &'static str> = layout
            .manifests
            .iter()
            .filter_map(|(d, mt)| Some((d, registry_view::extension(mt)?)))
            .collect();
        for (digest, ext) in &kinds {
            let name = format!("{digest}.{ext}");
            changed |= self.link_into(digest, &dir.join(&name))?;
            wanted.insert(name);
        }
        for t in &layout.tags {
            let Some(ext) = registry_view::extension(&t.media_type) else { continue };
            let name = format!("{}.{ext}", t.tag);
            changed |= self.link_into(&t.digest, &dir.join(&name))?;
            wanted.insert(name);
        }
        let tags: Vec<&str> = layout.tags.iter().map(|t| t.tag.as_str()).collect();
        let list =
            serde_json::to_vec(&serde_json::json!({ "name": layout.repo.as_str(), "tags": tags }))
                .expect("a tag list serializes");
        let list_path = dir.with_file_name(TAGS_FILE);
        if std::fs::read(&list_path).ok().as_deref() != Some(list.as_slice()) {
            self.write_atomically(&list_path, &list)?;
            changed = true;
        }
        for e in std::fs::read_dir(&dir).map_err(io_err(dir.display()))? {
            let e = e.map_err(io_err(dir.display()))?;
            if !wanted.contains(e.file_name().to_string_lossy().as_ref()) {
                std::fs::remove_file(e.path()).map_err(io_err(e.path().display()))?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Remove a repository's view and the directories that leaves empty. Missing is fine.
    pub(super) fn remove_view(&self, repo: &RepoName) -> Result<(), TreeError> {
        let dir = self.view_dir(repo);
        let manifests = dir.join(MANIFESTS_DIR);
        if manifests.is_dir() {
            super::remove_dir_files(&manifests)?;
        }
        let _ = std::fs::remove_file(dir.join(TAGS_FILE));
        super::remove_empty_dirs(&dir, &self.root.join(VIEW_DIR));
        Ok(())
    }

    /// Remove the views of repositories not in `keep` (a full republish).
    pub(super) fn remove_other_views(&self, keep: &HashSet<RepoName>) -> Result<(), TreeError> {
        let base = self.root.join(VIEW_DIR);
        let mut gone = Vec::new();
        let mut todo = vec![base.clone()];
        while let Some(dir) = todo.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && !name.to_string_lossy().starts_with('_')
                {
                    todo.push(e.path());
                }
            }
            if dir == base || !(dir.join(TAGS_FILE).exists() || dir.join(MANIFESTS_DIR).exists()) {
                continue;
            }
            let rel = dir.strip_prefix(&base).unwrap_or(&dir).to_string_lossy().into_owned();
            match rel.parse::<RepoName>() {
                Ok(r) if keep.contains(&r) => {}
                Ok(r) => gone.push(r),
                Err(_) => {
                    let m = dir.join(MANIFESTS_DIR);
                    if m.is_dir() {
                        super::remove_dir_files(&m)?;
                    }
                    let _ = std::fs::remove_file(dir.join(TAGS_FILE));
                }
            }
        }
        for r in gone {
            self.remove_view(&r)?;
        }
        Ok(())
    }

    /// The view's files of `repo` whose manifest `carried` says a mirror has, as paths
    /// relative to the tree root (for a content set's list): its tags list, and each manifest
    /// by digest and by tag. A tag's file is the same inode as its manifest's digest file.
    pub fn view_files(
        &self,
        repo: &RepoName,
        carried: impl Fn(&Digest) -> bool,
    ) -> Result<Vec<String>, TreeError> {
        let dir = self.view_dir(repo).join(MANIFESTS_DIR);
        let rel = format!("{VIEW_DIR}/{repo}");
        let mut out = vec![format!("{rel}/{TAGS_FILE}")];
        let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut by_inode: HashMap<u64, bool> = HashMap::new();
        let mut tags = Vec::new();
        for e in rd {
            let e = e.map_err(io_err(dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // The directory entry's inode number: no stat per file.
            let ino = e.ino();
            let digest = name.rsplit_once('.').and_then(|(d, _)| d.parse::<Digest>().ok());
            match digest {
                Some(d) => {
                    let keep = carried(&d);
                    by_inode.insert(ino, keep);
                    if keep {
                        out.push(format!("{rel}/{MANIFESTS_DIR}/{name}"));
                    }
                }
                None => tags.push((ino, name)),
            }
        }
        for (ino, name) in tags {
            if by_inode.get(&ino).copied().unwrap_or(false) {
                out.push(format!("{rel}/{MANIFESTS_DIR}/{name}"));
            }
        }
        Ok(out)
    }
}
