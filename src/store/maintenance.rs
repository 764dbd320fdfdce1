//! Backup (a consistent copy of every table from one read snapshot, while the server runs)
//! and what `verify` needs: the pool as the store records it, and where to get a file back.

use std::path::{Path, PathBuf};

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value,
    WriteTransaction,
};

use crate::model::{Digest, RepoName};

use super::records::StoredBlob;
use super::tables::*;
use super::{Store, StoreError, parse_key};

fn copy<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let from = src.open_table(table)?;
    let mut to = dst.open_table(table)?;
    let mut n = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// A pool file as the store records it.
#[derive(Debug, Clone)]
pub struct PoolRecord {
    pub digest: Digest,
    pub size: u64,
    /// Nothing references it any more (it may already be collected).
    pub released: bool,
}

impl Store {
    /// Write a consistent copy of the store to `dest` (mode 0600), from one read snapshot:
    /// writers go on meanwhile. Returns how many records were copied.
    pub async fn backup_to(&self, dest: PathBuf) -> Result<u64, StoreError> {
        self.blocking("backup", move |db| {
            use std::os::unix::fs::PermissionsExt;
            let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", dest.display()));
            let tmp = dest.with_file_name(format!(
                ".{}.partial",
                dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ));
            let _ = std::fs::remove_file(&tmp);
            let out = Database::create(&tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            let src = db.begin_read()?;
            let dst = out.begin_write()?;
            let mut n = copy(&src, &dst, META)?;
            n += copy(&src, &dst, REPOS)?;
            n += copy(&src, &dst, TAGS)?;
            n += copy(&src, &dst, MANIFESTS)?;
            n += copy(&src, &dst, MANIFEST_BYTES)?;
            n += copy(&src, &dst, POOL)?;
            n += copy(&src, &dst, REPO_CONTENT)?;
            n += copy(&src, &dst, RELEASED)?;
            n += copy(&src, &dst, RUNS)?;
            n += copy(&src, &dst, MIRRORS)?;
            n += copy(&src, &dst, CRAWLS)?;
            n += copy(&src, &dst, SESSIONS)?;
            n += copy(&src, &dst, USERS)?;
            n += copy(&src, &dst, AUDIT)?;
            n += copy(&src, &dst, REDIRECTS)?;
            n += copy(&src, &dst, MIRROR_TRAFFIC)?;
            n += copy(&src, &dst, PUBLISHED)?;
            n += copy(&src, &dst, REACHED)?;
            n += copy(&src, &dst, SUBJECTS)?;
            n += copy(&src, &dst, REFERRERS)?;
            n += copy(&src, &dst, UNTAGGED)?;
            n += copy(&src, &dst, SIGNATURES)?;
            dst.commit()?;
            drop(out);
            std::fs::rename(&tmp, &dest).map_err(io)?;
            Ok(n)
        })
        .await
    }

    /// Every pool file the store knows, with its size and whether it is released.
    pub async fn pool_records(&self) -> Result<Vec<PoolRecord>, StoreError> {
        self.blocking("pool_records", |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(POOL)?.iter()? {
                let (k, v) = row?;
                let rec = StoredBlob::decode(v.value())?;
                out.push(PoolRecord {
                    digest: Digest::from_sha256(k.value()),
                    size: rec.size,
                    released: rec.released.is_some(),
                });
            }
            Ok(out)
        })
        .await
    }

    /// A repository whose tags reach `digest` (to fetch it again from upstream).
    pub async fn repo_reaching(&self, digest: &Digest) -> Result<Option<RepoName>, StoreError> {
        let digest = digest.clone();
        self.blocking("repo_reaching", move |db| {
            let txn = db.begin_read()?;
            for row in txn.open_table(REPO_CONTENT)?.iter()? {
                let (k, _) = row?;
                let (repo, d) = k.value();
                if d == &digest.raw() {
                    return Ok(Some(parse_key("repo_content", repo)?));
                }
            }
            Ok(None)
        })
        .await
    }

    /// A manifest's exact bytes, if the store has them.
    pub async fn manifest_bytes(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let digest = digest.clone();
        self.blocking("manifest_bytes", move |db| {
            let txn = db.begin_read()?;
            let row = txn.open_table(MANIFEST_BYTES)?.get(&digest.raw())?;
            row.map(|r| super::records::unpack_manifest(r.value())).transpose()
        })
        .await
    }
}

/// Put a backup in place of the store file at `store_path`, for a stopped instance: the
/// backup is copied next to it, opened (checked, migrated if older), then renamed over the
/// store; the replaced store is kept as `<store>.before-restore`.
pub fn restore(backup: &Path, store_path: &Path) -> Result<(), StoreError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| StoreError::Io(format!("{what}: {e}"))
    };
    if store_path.exists() {
        // Fails with `Locked` while a server has it open.
        drop(Store::open(store_path)?);
    }
    let staged = store_path.with_extension("redb.restoring");
    std::fs::copy(backup, &staged).map_err(io(backup))?;
    match Store::open(&staged) {
        Ok(s) => drop(s),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    }
    if store_path.exists() {
        std::fs::rename(store_path, store_path.with_extension("redb.before-restore"))
            .map_err(io(store_path))?;
    }
    std::fs::rename(&staged, store_path).map_err(io(store_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table added to `tables.rs` but not to `backup_to` fails here.
    #[tokio::test]
    async fn a_backup_has_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let backup = dir.path().join("b.redb");
        store.backup_to(backup.clone()).await.unwrap();
        drop(store);
        let names = |path: &Path| {
            use redb::TableHandle;
            let db = Database::open(path).unwrap();
            let txn = db.begin_read().unwrap();
            let mut names: Vec<String> =
                txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
            names.sort();
            names
        };
        let (source, copy) = (names(&dir.path().join("s.redb")), names(&backup));
        assert!(source.len() >= 14, "{source:?}");
        assert_eq!(source, copy);
    }
}
