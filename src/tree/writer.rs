//! Streaming a blob into the pool: hash while writing to a temp file, fsync, and rename into
//! place only when the digest (and size, when known) match.

use std::path::{Path, PathBuf};

use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::model::Digest;

use super::{TreeError, io_err};

pub struct BlobWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
    temp: tempfile::TempPath,
    hasher: sha2::Sha256,
    written: u64,
    expected: Digest,
    dest: PathBuf,
}

impl BlobWriter {
    pub(super) async fn create(
        tmp: &Path,
        dest: PathBuf,
        expected: Digest,
    ) -> Result<Self, TreeError> {
        let (file, temp) = tempfile::NamedTempFile::new_in(tmp)
            .map_err(io_err(format!("temp file in {}", tmp.display())))?
            .into_parts();
        file.set_permissions(super::public_file())
            .map_err(io_err(format!("temp file in {}", tmp.display())))?;
        Ok(BlobWriter {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file)),
            temp,
            hasher: sha2::Sha256::new(),
            written: 0,
            expected,
            dest,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), TreeError> {
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        self.file.write_all(chunk).await.map_err(io_err("writing temp file"))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verify and publish. On any mismatch the temp file is deleted and nothing is published.
    pub async fn finish(mut self, expected_size: Option<u64>) -> Result<u64, TreeError> {
        let actual = Digest::from_sha256(self.hasher.finalize().as_slice());
        if actual != self.expected {
            return Err(TreeError::DigestMismatch { expected: self.expected, actual });
        }
        if let Some(size) = expected_size.filter(|s| *s != self.written) {
            return Err(TreeError::SizeMismatch {
                digest: self.expected,
                expected: size,
                actual: self.written,
            });
        }
        self.file.flush().await.map_err(io_err("flushing temp file"))?;
        self.file.get_mut().sync_all().await.map_err(io_err("fsync temp file"))?;
        let (temp, dest) = (self.temp, self.dest);
        tokio::task::spawn_blocking(move || {
            // The directory is synced once per batch (`MirrorTree::sync_pool`).
            temp.persist(&dest)
                .map_err(|e| io_err(format!("renaming to {}", dest.display()))(e.error))?;
            Ok::<_, TreeError>(())
        })
        .await
        .map_err(|e| TreeError::Setup(format!("publish task: {e}")))??;
        Ok(self.written)
    }
}
