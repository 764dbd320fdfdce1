//! Mirror records and their crawl history.

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::model::{CrawlResult, Mirror, MirrorError, MirrorHealth, MirrorName, MirrorStatus};

use super::records::{StoredCrawl, StoredMirror, decode, encode};
use super::tables::*;
use super::{Store, StoreError};

/// Crawls kept per mirror.
pub const CRAWL_HISTORY: u64 = 50;

/// Why a mirror edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum MirrorEditError {
    #[error("mirror {0} already exists")]
    Exists(MirrorName),
    #[error("no mirror named {0}")]
    Unknown(MirrorName),
    #[error(transparent)]
    Invalid(#[from] MirrorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn status(mirror: Mirror, health: MirrorHealth) -> MirrorStatus {
    MirrorStatus { continent: mirror.continent().map(str::to_owned), mirror, health }
}

fn read(bytes: &[u8]) -> Result<(Mirror, MirrorHealth), StoreError> {
    decode::<StoredMirror>("mirrors", bytes)?.into_model()
}

fn read_all(db: &Database) -> Result<Vec<MirrorStatus>, StoreError> {
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    for row in txn.open_table(MIRRORS)?.iter()? {
        let (m, h) = read(row?.1.value())?;
        out.push(status(m, h));
    }
    Ok(out)
}

impl Store {
    pub async fn mirrors(&self) -> Result<Vec<MirrorStatus>, StoreError> {
        self.blocking("mirrors", read_all).await
    }

    pub async fn mirror(&self, name: &MirrorName) -> Result<Option<MirrorStatus>, StoreError> {
        let name = name.clone();
        self.blocking("mirror", move |db| {
            let txn = db.begin_read()?;
            let row = txn.open_table(MIRRORS)?.get(name.as_str())?;
            row.map(|r| read(r.value()).map(|(m, h)| status(m, h))).transpose()
        })
        .await
    }

    pub async fn add_mirror(&self, mirror: Mirror) -> Result<MirrorStatus, MirrorEditError> {
        mirror.validate()?;
        self.blocking("add_mirror", move |db| {
            let txn = db.begin_write()?;
            let rec = {
                let mut table = txn.open_table(MIRRORS)?;
                if table.get(mirror.name.as_str())?.is_some() {
                    return Ok(Err(MirrorEditError::Exists(mirror.name)));
                }
                let health = MirrorHealth::default();
                let rec = StoredMirror::new(&mirror, &health);
                table.insert(mirror.name.as_str(), encode(&rec).as_slice())?;
                (mirror, health)
            };
            txn.commit()?;
            Ok(Ok(status(rec.0, rec.1)))
        })
        .await?
    }

    /// Change a mirror with `edit`, validated before it is written.
    pub async fn update_mirror<F>(
        &self,
        name: &MirrorName,
        edit: F,
    ) -> Result<MirrorStatus, MirrorEditError>
    where
        F: FnOnce(&mut Mirror) -> Result<(), MirrorError> + Send + 'static,
    {
        let name = name.clone();
        self.blocking("update_mirror", move |db| {
            let txn = db.begin_write()?;
            let rec = {
                let mut table = txn.open_table(MIRRORS)?;
                let Some(row) = table.get(name.as_str())? else {
                    return Ok(Err(MirrorEditError::Unknown(name)));
                };
                let (mut mirror, mut health) = read(row.value())?;
                drop(row);
                let before = mirror.clone();
                if let Err(e) = edit(&mut mirror).and_then(|()| mirror.validate()) {
                    return Ok(Err(e.into()));
                }
                // What was verified no longer describes the mirror: new URLs, another content
                // set, or coming back from an operator's disable. No traffic until a crawl.
                if mirror.urls != before.urls
                    || mirror.content != before.content
                    || (mirror.enabled && !before.enabled)
                {
                    health.generation = None;
                }
                table.insert(
                    name.as_str(),
                    encode(&StoredMirror::new(&mirror, &health)).as_slice(),
                )?;
                (mirror, health)
            };
            txn.commit()?;
            Ok(Ok(status(rec.0, rec.1)))
        })
        .await?
    }

    /// Remove a mirror and its crawl history.
    pub async fn remove_mirror(&self, name: &MirrorName) -> Result<(), MirrorEditError> {
        let name = name.clone();
        self.blocking("remove_mirror", move |db| {
            let txn = db.begin_write()?;
            {
                if txn.open_table(MIRRORS)?.remove(name.as_str())?.is_none() {
                    return Ok(Err(MirrorEditError::Unknown(name)));
                }
                let mut crawls = txn.open_table(CRAWLS)?;
                let keys: Vec<u64> = crawls
                    .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for k in keys {
                    crawls.remove((name.as_str(), k))?;
                }
            }
            txn.commit()?;
            Ok(Ok(()))
        })
        .await?
    }

    /// Record a crawl and the mirror's resulting health; keeps the last [`CRAWL_HISTORY`].
    /// `crawled` is the mirror as the crawl saw it: if it was edited meanwhile, the credit
    /// is dropped (the crawl verified something else).
    pub async fn record_crawl(
        &self,
        crawled: Mirror,
        result: CrawlResult,
        mut health: MirrorHealth,
    ) -> Result<(), StoreError> {
        self.blocking("record_crawl", move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(MIRRORS)?;
                let name = result.mirror.as_str();
                // The mirror may have been removed while it was crawled.
                let Some(row) = table.get(name)? else { return Ok(()) };
                let (mirror, _) = read(row.value())?;
                drop(row);
                if mirror.urls != crawled.urls || mirror.content != crawled.content {
                    health.generation = None;
                }
                table.insert(name, encode(&StoredMirror::new(&mirror, &health)).as_slice())?;
                let mut crawls = txn.open_table(CRAWLS)?;
                let last = crawls.range((name, 0)..=(name, u64::MAX))?.next_back().transpose()?;
                let seq = last.map(|(k, _)| k.value().1 + 1).unwrap_or(0);
                crawls.insert((name, seq), encode(&StoredCrawl::new(&result)).as_slice())?;
                if seq >= CRAWL_HISTORY {
                    let old: Vec<u64> = crawls
                        .range((name, 0)..(name, seq + 1 - CRAWL_HISTORY))?
                        .map(|r| r.map(|(k, _)| k.value().1))
                        .collect::<Result<_, _>>()?;
                    for k in old {
                        crawls.remove((name, k))?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// A mirror's recent crawls, newest first.
    pub async fn crawl_history(
        &self,
        name: &MirrorName,
        limit: usize,
    ) -> Result<Vec<CrawlResult>, StoreError> {
        let name = name.clone();
        self.blocking("crawl_history", move |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            let crawls = txn.open_table(CRAWLS)?;
            for row in
                crawls.range((name.as_str(), 0)..=(name.as_str(), u64::MAX))?.rev().take(limit)
            {
                let c: StoredCrawl = decode("crawls", row?.1.value())?;
                out.push(c.into_model(name.clone()));
            }
            Ok(out)
        })
        .await
    }
}
