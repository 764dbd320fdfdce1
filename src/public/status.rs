//! `/api/v1/status`: the current generation, when it was published, and how fast recent
//! generations reached the public mirrors (seconds until 50 %, 90 % and all of them held
//! it). One short store read, at most once per selection state and 30 seconds: anonymous
//! requests cannot make it more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Generation, MirrorStatus};
use crate::registry::{RegistryError, RegistryState};
use crate::store::GenerationReach;

use super::mirrors::{Freshness, public_mirrors};

/// Generations the status shows.
pub const SHOWN: usize = 20;
const FRESH_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusDoc {
    pub generation: Generation,
    /// When the current generation was published (unknown for generations published before
    /// Wharf kept this).
    pub published_at: Option<DateTime<Utc>>,
    /// Public mirrors in rotation (listed, not opted out): what the percentages count.
    pub mirrors: usize,
    /// Newest first.
    pub propagation: Vec<Spread>,
}

/// How one generation spread over the public mirrors in rotation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub generation: Generation,
    pub published_at: DateTime<Utc>,
    /// Mirrors that have held it (or a newer one).
    pub reached: usize,
    /// Seconds from publication until half of the mirrors held it; `null` until then.
    pub seconds_to_50: Option<i64>,
    pub seconds_to_90: Option<i64>,
    pub seconds_to_100: Option<i64>,
}

/// The status from the mirror records (only public ones in rotation count) and the kept
/// propagation history.
pub fn status(
    records: &[MirrorStatus],
    current: Generation,
    history: &[GenerationReach],
) -> StatusDoc {
    // A set: each generation checks every mirror that reached it (thousands) against it.
    let counted: std::collections::HashSet<String> = public_mirrors(records, current)
        .into_iter()
        .filter(|m| m.state != Freshness::OptedOut)
        .map(|m| m.name)
        .collect();
    let total = counted.len();
    let propagation = history
        .iter()
        .map(|g| {
            let mut after: Vec<i64> = g
                .reached
                .iter()
                .filter(|(m, _)| counted.contains(m.as_str()))
                .map(|(_, t)| (*t - g.published_at).num_seconds().max(0))
                .collect();
            after.sort_unstable();
            // The k-th fastest mirror, where k is `percent` of all (rounded up).
            let to = |percent: usize| {
                let k = (total * percent).div_ceil(100);
                (k > 0).then(|| after.get(k - 1).copied()).flatten()
            };
            Spread {
                generation: g.generation,
                published_at: g.published_at,
                reached: after.len(),
                seconds_to_50: to(50),
                seconds_to_90: to(90),
                seconds_to_100: to(100),
            }
        })
        .collect();
    let published_at = history.iter().find(|g| g.generation == current).map(|g| g.published_at);
    StatusDoc { generation: current, published_at, mirrors: total, propagation }
}

/// A status made for one selection state (its address and generation), and when.
struct Made {
    snapshot: usize,
    generation: Generation,
    at: Instant,
    doc: Arc<StatusDoc>,
}

/// The last status made.
#[derive(Default)]
pub struct StatusCache {
    last: Mutex<Option<Made>>,
}

/// The status now: from the cache while the selection state is the same and it is fresh.
pub async fn current(
    state: &RegistryState,
    cache: &StatusCache,
) -> Result<Arc<StatusDoc>, RegistryError> {
    let snapshot = state.snapshot()?;
    let key = Arc::as_ptr(&*snapshot) as usize;
    if let Some(m) = &*cache.last.lock().unwrap_or_else(|p| p.into_inner())
        && (m.snapshot, m.generation) == (key, snapshot.generation)
        && m.at.elapsed() < FRESH_FOR
    {
        return Ok(m.doc.clone());
    }
    let history = state.store.propagation(SHOWN).await?;
    let doc = Arc::new(status(snapshot.mirror_records(), snapshot.generation, &history));
    let made = Made {
        snapshot: key,
        generation: snapshot.generation,
        at: Instant::now(),
        doc: doc.clone(),
    };
    *cache.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(made);
    Ok(doc)
}

pub async fn api(
    state: web::Data<RegistryState>,
    cache: web::Data<StatusCache>,
) -> Result<HttpResponse, RegistryError> {
    let doc = current(&state, &cache).await?;
    Ok(HttpResponse::Ok().insert_header(super::mirrors::CACHE).json(&*doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mirror, MirrorHealth, MirrorPatch};

    #[test]
    fn spread_counts_public_mirrors_in_rotation_only() {
        let t0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        let mirror = |name: &str, patch: MirrorPatch| {
            let mut m = Mirror::new(name.parse().unwrap());
            MirrorPatch { urls: Some(vec![format!("https://{name}.example/")]), ..patch }
                .apply(&mut m)
                .unwrap();
            let health = MirrorHealth { generation: Some(2), ..MirrorHealth::default() };
            MirrorStatus { continent: None, mirror: m, health }
        };
        let records = vec![
            mirror("a", MirrorPatch::default()),
            mirror("b", MirrorPatch::default()),
            mirror("c", MirrorPatch::default()),
            mirror("d", MirrorPatch::default()),
            mirror("lan", MirrorPatch { private: Some(true), ..MirrorPatch::default() }),
            mirror("away", MirrorPatch { active: Some(false), ..MirrorPatch::default() }),
        ];
        let reach = |names: &[(&str, i64)]| {
            names.iter().map(|(n, m)| (n.parse().unwrap(), min(*m))).collect::<Vec<_>>()
        };
        let history = vec![
            GenerationReach {
                generation: 2,
                published_at: min(0),
                // The private and opted-out mirrors were fastest: they do not count.
                reached: reach(&[("lan", 1), ("away", 1), ("a", 3), ("b", 7), ("c", 20)]),
            },
            GenerationReach {
                generation: 1,
                published_at: min(-60),
                reached: reach(&[("a", -50), ("b", -50), ("c", -40), ("d", -30)]),
            },
        ];
        let doc = status(&records, 2, &history);
        assert_eq!((doc.generation, doc.published_at, doc.mirrors), (2, Some(min(0)), 4));
        let g2 = &doc.propagation[0];
        assert_eq!(
            (g2.reached, g2.seconds_to_50, g2.seconds_to_90, g2.seconds_to_100),
            (3, Some(7 * 60), None, None)
        );
        let g1 = &doc.propagation[1];
        assert_eq!(
            (g1.seconds_to_50, g1.seconds_to_90, g1.seconds_to_100),
            (Some(600), Some(1800), Some(1800))
        );
        // No mirrors: no figures, never a division by zero.
        let empty = status(&[], 2, &history);
        assert_eq!((empty.mirrors, empty.propagation[0].seconds_to_50), (0, None));
    }
}
