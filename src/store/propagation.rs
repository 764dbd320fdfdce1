//! How fast each generation spreads: when it was published and when the crawler first
//! credited each mirror with it (or a newer one), for the last [`KEPT`] generations. Written
//! inside the sync's commit and each crawl's record, so reading it is one short range scan.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::model::{Generation, MirrorName};

use super::tables::*;
use super::{Store, StoreError};

/// Generations whose propagation is kept.
pub const KEPT: u64 = 50;

/// One generation's spread.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationReach {
    pub generation: Generation,
    pub published_at: DateTime<Utc>,
    /// Each mirror credited with it, and when first.
    pub reached: Vec<(MirrorName, DateTime<Utc>)>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `generation` is published at `at`; older generations than the kept ones are forgotten.
pub(super) fn published(
    txn: &WriteTransaction,
    generation: Generation,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut published = txn.open_table(PUBLISHED)?;
    published.insert(generation, at.timestamp_millis())?;
    let Some(cutoff) = generation.checked_sub(KEPT - 1) else { return Ok(()) };
    let old: Vec<u64> =
        published.range(..cutoff)?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
    for g in old {
        published.remove(g)?;
    }
    let mut reached = txn.open_table(REACHED)?;
    let old: Vec<(u64, String)> = reached
        .range(..(cutoff, ""))?
        .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    for (g, m) in old {
        reached.remove((g, m.as_str()))?;
    }
    Ok(())
}

/// The crawler credited `mirror` with `held` at `at`, having credited it with `since` before:
/// every kept generation after `since` up to `held` is reached now, unless it was earlier.
pub(super) fn reached(
    txn: &WriteTransaction,
    mirror: &str,
    since: Generation,
    held: Generation,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if held <= since {
        return Ok(());
    }
    let published = txn.open_table(PUBLISHED)?;
    let mut reached = txn.open_table(REACHED)?;
    for row in published.range(since + 1..=held)? {
        let g = row?.0.value();
        if reached.get((g, mirror))?.is_none() {
            reached.insert((g, mirror), at.timestamp_millis())?;
        }
    }
    Ok(())
}

impl Store {
    /// The kept generations' spread, newest first, at most `limit`.
    pub async fn propagation(&self, limit: usize) -> Result<Vec<GenerationReach>, StoreError> {
        self.blocking("propagation", move |db| {
            let txn = db.begin_read()?;
            let reached = txn.open_table(REACHED)?;
            let mut out = Vec::new();
            for row in txn.open_table(PUBLISHED)?.iter()?.rev().take(limit) {
                let (g, at) = row?;
                let generation = g.value();
                let mut mirrors = Vec::new();
                for r in reached.range((generation, "")..=(generation, KEY_END))? {
                    let (k, v) = r?;
                    // A name that no longer parses is skipped, never an error to the reader.
                    if let Ok(name) = k.value().1.parse() {
                        mirrors.push((name, time(v.value())));
                    }
                }
                out.push(GenerationReach {
                    generation,
                    published_at: time(at.value()),
                    reached: mirrors,
                });
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        time(1_767_225_600_000 + min * 60_000)
    }

    #[tokio::test]
    async fn each_generation_remembers_when_each_mirror_first_held_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let write = |f: &dyn Fn(&WriteTransaction) -> Result<(), StoreError>| {
            let txn = store.db.begin_write().unwrap();
            f(&txn).unwrap();
            txn.commit().unwrap();
        };
        for g in 1..=3 {
            write(&|t| published(t, g, at(g as i64 * 10)));
        }
        write(&|t| reached(t, "a", 0, 2, at(25))); // 1 and 2 at once
        write(&|t| reached(t, "a", 2, 3, at(31)));
        write(&|t| reached(t, "b", 0, 3, at(40)));
        // Credited again after an edit reset its generation: the first time stays.
        write(&|t| reached(t, "a", 0, 3, at(50)));
        let p = store.propagation(10).await.unwrap();
        type Seen = (u64, Vec<(String, DateTime<Utc>)>);
        let seen: Vec<Seen> = p
            .iter()
            .map(|g| (g.generation, g.reached.iter().map(|(m, t)| (m.to_string(), *t)).collect()))
            .collect();
        let (a, b) = (|t| ("a".to_owned(), at(t)), |t| ("b".to_owned(), at(t)));
        assert_eq!(
            seen,
            [(3, vec![a(31), b(40)]), (2, vec![a(25), b(40)]), (1, vec![a(25), b(40)])]
        );
        assert_eq!(p[0].published_at, at(30));

        // Only the last KEPT generations are kept, with what reached them.
        for g in 4..=KEPT + 2 {
            write(&|t| published(t, g, at(g as i64 * 10)));
        }
        let p = store.propagation(usize::MAX).await.unwrap();
        assert_eq!(p.len() as u64, KEPT);
        assert_eq!(p.last().unwrap().generation, 3);
        assert_eq!(p.last().unwrap().reached.len(), 2);
    }
}
