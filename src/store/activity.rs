//! The audit log and the redirect counters (by tier and country, and by mirror). All are
//! append-mostly and bounded: the audit log keeps the last [`AUDIT_KEPT`] entries, the
//! counters the last [`REDIRECT_HOURS_KEPT`] hours (a removed mirror's go with it).

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::model::{AuditEntry, MirrorName, MirrorTraffic, RedirectCount};

use super::records::{decode, encode};
use super::tables::*;
use super::{Store, StoreError};

pub const AUDIT_KEPT: u64 = 10_000;
pub const REDIRECT_HOURS_KEPT: u64 = 24 * 31;

#[derive(Serialize, Deserialize)]
#[serde(tag = "v")]
enum StoredAudit {
    #[serde(rename = "1")]
    V1 { at: DateTime<Utc>, actor: String, action: String, target: String, detail: String },
}

impl Store {
    /// Append to the audit log.
    pub async fn record_audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.blocking("record_audit", move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(AUDIT)?;
                let seq = table.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
                let rec = StoredAudit::V1 {
                    at: e.at,
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail: e.detail,
                };
                table.insert(seq, encode(&rec).as_slice())?;
                if seq >= AUDIT_KEPT {
                    table.remove(seq - AUDIT_KEPT)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// The most recent audit entries, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking("audit_log", move |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(AUDIT)?.iter()?.rev().take(limit) {
                let StoredAudit::V1 { at, actor, action, target, detail } =
                    decode("audit", row?.1.value())?;
                out.push(AuditEntry { at, actor, action, target, detail });
            }
            Ok(out)
        })
        .await
    }

    /// Add a batch of redirect counts (one write for many requests) and drop buckets older
    /// than [`REDIRECT_HOURS_KEPT`].
    pub async fn add_redirects(&self, counts: Vec<RedirectCount>) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        self.blocking("add_redirects", move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(REDIRECTS)?;
                let newest = counts.iter().map(|c| c.hour).max().unwrap_or(0);
                for c in &counts {
                    let key = (c.hour, c.tier.as_str(), c.country.as_str());
                    let old = table.get(key)?.map(|v| v.value()).unwrap_or(0);
                    table.insert(key, old + c.count)?;
                }
                let horizon = newest.saturating_sub(REDIRECT_HOURS_KEPT);
                table.retain_in((0, "", "")..(horizon, "", ""), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// Add a batch of per-mirror counts; each mirror in it keeps its last
    /// [`REDIRECT_HOURS_KEPT`] hours.
    pub async fn add_mirror_traffic(&self, rows: Vec<MirrorTraffic>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.blocking("add_mirror_traffic", move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(MIRROR_TRAFFIC)?;
                for r in &rows {
                    let key = (r.mirror.as_str(), r.hour);
                    let (n, b) = table.get(key)?.map(|v| v.value()).unwrap_or((0, 0));
                    table.insert(key, (n + r.redirects, b + r.bytes))?;
                    let horizon = r.hour.saturating_sub(REDIRECT_HOURS_KEPT);
                    let m = r.mirror.as_str();
                    table.retain_in((m, 0)..(m, horizon), |_, _| false)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// One mirror's counts from hour `since` on, oldest first.
    pub async fn mirror_traffic(
        &self,
        mirror: &MirrorName,
        since: u64,
    ) -> Result<Vec<MirrorTraffic>, StoreError> {
        let mirror = mirror.clone();
        self.blocking("mirror_traffic", move |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            let m = mirror.as_str();
            for row in txn.open_table(MIRROR_TRAFFIC)?.range((m, since)..=(m, u64::MAX))? {
                let (k, v) = row?;
                let (redirects, bytes) = v.value();
                out.push(MirrorTraffic {
                    hour: k.value().1,
                    mirror: mirror.clone(),
                    redirects,
                    bytes,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Redirect counts from hour `since` on, oldest first.
    pub async fn redirects_since(&self, since: u64) -> Result<Vec<RedirectCount>, StoreError> {
        self.blocking("redirects_since", move |db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for row in txn.open_table(REDIRECTS)?.range((since, "", "")..)? {
                let (k, v) = row?;
                let (hour, tier, country) = k.value();
                out.push(RedirectCount {
                    hour,
                    tier: tier.to_owned(),
                    country: country.to_owned(),
                    count: v.value(),
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

    #[tokio::test]
    async fn audit_and_redirects_round_trip_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let at = Utc::now();
        for i in 0..3 {
            let e = AuditEntry {
                at,
                actor: "olga".into(),
                action: "mirror.approve".into(),
                target: format!("m{i}"),
                detail: String::new(),
            };
            store.record_audit(e).await.unwrap();
        }
        let log = store.audit_log(2).await.unwrap();
        assert_eq!(log.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["m2", "m1"]);

        let c = |hour, tier: &str, count| RedirectCount {
            hour,
            tier: tier.into(),
            country: "DE".into(),
            count,
        };
        store.add_redirects(vec![c(10, "country", 3), c(10, "global", 1)]).await.unwrap();
        store.add_redirects(vec![c(10, "country", 2)]).await.unwrap();
        assert_eq!(
            store.redirects_since(0).await.unwrap(),
            [c(10, "country", 5), c(10, "global", 1)]
        );
        // Per mirror: added up per hour, read per mirror, old hours dropped.
        let (a, b): (MirrorName, MirrorName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let t = |m: &MirrorName, hour, redirects, bytes| MirrorTraffic {
            hour,
            mirror: m.clone(),
            redirects,
            bytes,
        };
        store.add_mirror_traffic(vec![t(&a, 10, 2, 200), t(&b, 10, 1, 5)]).await.unwrap();
        store.add_mirror_traffic(vec![t(&a, 10, 1, 100), t(&a, 11, 1, 1)]).await.unwrap();
        assert_eq!(
            store.mirror_traffic(&a, 0).await.unwrap(),
            [t(&a, 10, 3, 300), t(&a, 11, 1, 1)]
        );
        assert_eq!(store.mirror_traffic(&a, 11).await.unwrap(), [t(&a, 11, 1, 1)]);
        store.add_mirror_traffic(vec![t(&a, 12 + REDIRECT_HOURS_KEPT, 1, 1)]).await.unwrap();
        assert_eq!(
            store.mirror_traffic(&a, 0).await.unwrap(),
            [t(&a, 12 + REDIRECT_HOURS_KEPT, 1, 1)]
        );
        assert_eq!(
            store.mirror_traffic(&b, 0).await.unwrap(),
            [t(&b, 10, 1, 5)],
            "b's own horizon"
        );

        // A batch far in the future drops buckets beyond the horizon.
        store.add_redirects(vec![c(10 + REDIRECT_HOURS_KEPT + 1, "netblock", 1)]).await.unwrap();
        assert_eq!(
            store.redirects_since(0).await.unwrap(),
            [c(10 + REDIRECT_HOURS_KEPT + 1, "netblock", 1)]
        );
    }
}
