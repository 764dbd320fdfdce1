//! Mirror records and their crawl history.

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::model::{
    CrawlResult, Mirror, MirrorEditField, MirrorError, MirrorHealth, MirrorName, MirrorStatus,
};

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
    /// Over a mirror admin's limits, or what only operators may change.
    #[error("{1}")]
    Limit(MirrorEditField, MirrorError),
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

    /// Create or change a mirror in one write transaction. `edit` gets the mirror as it is
    /// (`None`: no such mirror yet) and every other mirror (for limits across an owner's
    /// mirrors), and returns the mirror to write, which is validated first. What was
    /// verified no longer describes a mirror with new URLs, another content set, or coming
    /// back from a disable: its credit is dropped, and no traffic goes to it until a crawl.
    pub async fn edit_mirror<F>(
        &self,
        name: &MirrorName,
        edit: F,
    ) -> Result<MirrorStatus, MirrorEditError>
    where
        F: FnOnce(Option<&Mirror>, &[Mirror]) -> Result<Mirror, MirrorEditError> + Send + 'static,
    {
        let name = name.clone();
        self.blocking("edit_mirror", move |db| {
            let txn = db.begin_write()?;
            let rec = {
                let mut table = txn.open_table(MIRRORS)?;
                let mut current = None;
                let mut others = Vec::new();
                for row in table.iter()? {
                    let (k, v) = row?;
                    let (m, h) = read(v.value())?;
                    if k.value() == name.as_str() {
                        current = Some((m, h));
                    } else {
                        others.push(m);
                    }
                }
                let next = match edit(current.as_ref().map(|(m, _)| m), &others) {
                    Ok(m) if m.name != name => {
                        return Ok(Err(MirrorEditError::Invalid(MirrorError(
                            "a mirror cannot be renamed".into(),
                        ))));
                    }
                    Ok(m) => m,
                    Err(e) => return Ok(Err(e)),
                };
                if let Err(e) = next.validate() {
                    return Ok(Err(e.into()));
                }
                let health = match current {
                    Some((before, mut health)) => {
                        if next.urls != before.urls
                            || next.content != before.content
                            || (next.enabled && !before.enabled)
                        {
                            health.generation = None;
                        }
                        health
                    }
                    None => MirrorHealth::default(),
                };
                table
                    .insert(name.as_str(), encode(&StoredMirror::new(&next, &health)).as_slice())?;
                (next, health)
            };
            txn.commit()?;
            Ok(Ok(status(rec.0, rec.1)))
        })
        .await?
    }

    /// Remove a mirror, its crawl history and its traffic counts.
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
                let n = name.as_str();
                txn.open_table(MIRROR_TRAFFIC)?.retain_in((n, 0)..=(n, u64::MAX), |_, _| false)?;
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
                let (mirror, before) = read(row.value())?;
                drop(row);
                if mirror.urls != crawled.urls || mirror.content != crawled.content {
                    health.generation = None;
                }
                if let Some(held) = health.generation {
                    let since = before.generation.unwrap_or(0);
                    super::propagation::reached(&txn, name, since, held, result.at)?;
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
