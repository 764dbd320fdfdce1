//! The public mirror status: every public, enabled mirror with where it is, what it
//! carries and how fresh it is, as HTML and as JSON with stable field names.

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::PublicSite;
use crate::model::{Generation, MirrorState, MirrorStatus};
use crate::registry::{RegistryError, RegistryState};

/// A mirror as anyone may see it: what its admin published for users and what the crawler
/// found, never an operator's reason, a crawl error, an owner, netblocks or ASNs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicMirror {
    pub name: String,
    pub country: Option<String>,
    pub continent: Option<String>,
    /// Base URLs of the tree (only those that parse).
    pub urls: Vec<String>,
    /// The content set it carries (`all`, or an architecture).
    pub content: String,
    /// The newest generation verified on it.
    pub generation: Option<Generation>,
    /// Generations behind the current one.
    pub lag: Option<u64>,
    pub last_check: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub state: Freshness,
}

/// Where a listed mirror stands, for users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freshness {
    /// Verified at the current generation.
    Current,
    /// Verified at an older generation: gets only what that generation had.
    Behind,
    /// Not verified yet.
    Unverified,
    /// Failed its recent checks; gets no requests until one passes.
    Failing,
    /// Its admin took it out of rotation for now.
    OptedOut,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Current => "current",
            Freshness::Behind => "behind",
            Freshness::Unverified => "unverified",
            Freshness::Failing => "failing",
            Freshness::OptedOut => "opted-out",
        }
    }
}

/// The mirrors anyone may see (public, approved, not disabled by an operator), by
/// continent, country and name (no stated place last), with their freshness against
/// `current`.
pub fn public_mirrors(records: &[MirrorStatus], current: Generation) -> Vec<PublicMirror> {
    let mut out: Vec<PublicMirror> = records
        .iter()
        .filter(|s| !s.mirror.private)
        .filter_map(|s| {
            let state = match s.state() {
                MirrorState::Pending | MirrorState::Disabled => return None,
                MirrorState::AutoDisabled => Freshness::Failing,
                MirrorState::OptedOut => Freshness::OptedOut,
                MirrorState::Active => match s.health.generation {
                    None => Freshness::Unverified,
                    Some(g) if g >= current => Freshness::Current,
                    Some(_) => Freshness::Behind,
                },
            };
            Some(PublicMirror {
                name: s.mirror.name.to_string(),
                country: s.mirror.country.clone(),
                continent: s.continent.clone(),
                urls: s
                    .mirror
                    .urls
                    .iter()
                    .filter_map(|u| crate::model::parse_base_url(u).ok())
                    .collect(),
                content: s.mirror.content.to_string(),
                generation: s.health.generation,
                lag: s.health.generation.map(|g| current.saturating_sub(g)),
                last_check: s.health.last_crawl,
                last_success: s.health.last_success,
                state,
            })
        })
        .collect();
    // Those with no stated place last.
    let place = |m: &PublicMirror| {
        (m.continent.is_none(), m.continent.clone(), m.country.is_none(), m.country.clone())
    };
    out.sort_by(|a, b| place(a).cmp(&place(b)).then_with(|| a.name.cmp(&b.name)));
    out
}

/// `/api/v1/mirrors`: the current generation and the public mirrors.
#[derive(Serialize)]
pub struct MirrorsDoc {
    pub generation: Generation,
    pub mirrors: Vec<PublicMirror>,
}

fn listing(state: &RegistryState) -> Result<MirrorsDoc, RegistryError> {
    let snapshot = state.snapshot()?;
    Ok(MirrorsDoc {
        generation: snapshot.generation,
        mirrors: public_mirrors(snapshot.mirror_records(), snapshot.generation),
    })
}

/// Public, short-lived: the list changes after a crawl or an edit.
pub(super) const CACHE: (&str, &str) = ("Cache-Control", "public, max-age=30");

pub async fn api(state: web::Data<RegistryState>) -> Result<HttpResponse, RegistryError> {
    Ok(HttpResponse::Ok().insert_header(CACHE).json(listing(&state)?))
}

/// One country on the freshness grid: where it is drawn and its freshest mirror's state.
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub country: String,
    pub state: Freshness,
    /// What hovering shows: `DE: 3 mirrors (2 current, 1 behind)`.
    pub title: String,
}

/// The mirrors as a grid of countries, a row of tiles per continent.
pub struct Grid {
    pub width: u32,
    pub height: u32,
    /// (y, continent) of each row's label.
    pub rows: Vec<(u32, String)>,
    pub tiles: Vec<Tile>,
}

/// How many of each state, freshest first.
fn tally(states: &[Freshness]) -> Vec<(Freshness, usize)> {
    let mut counts: Vec<(Freshness, usize)> = Vec::new();
    for s in states {
        match counts.iter_mut().find(|(f, _)| f == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((*s, 1)),
        }
    }
    counts.sort();
    counts
}

const TILE_W: u32 = 44;
const TILE_H: u32 = 28;
const GAP: u32 = 4;
const LABEL_W: u32 = 36;
const PER_ROW: u32 = 16;

/// Lay out `mirrors` (sorted by continent and country) as a [`Grid`]; mirrors with no
/// country are left out of it.
pub fn grid(mirrors: &[PublicMirror]) -> Grid {
    let mut countries: Vec<(String, String, Vec<Freshness>)> = Vec::new();
    for m in mirrors {
        let Some(country) = &m.country else { continue };
        let continent = m.continent.clone().unwrap_or_else(|| "–".into());
        match countries.last_mut() {
            Some((c, k, states)) if *c == continent && k == country => states.push(m.state),
            _ => countries.push((continent, country.clone(), vec![m.state])),
        }
    }
    let mut g = Grid {
        width: LABEL_W + PER_ROW * (TILE_W + GAP),
        height: 0,
        rows: Vec::new(),
        tiles: Vec::new(),
    };
    let mut column = PER_ROW;
    for (continent, country, states) in countries {
        if g.rows.last().is_none_or(|(_, c)| *c != continent) {
            g.rows.push((g.height, continent));
            g.height += TILE_H + GAP;
            column = 0;
        } else if column == PER_ROW {
            g.height += TILE_H + GAP;
            column = 0;
        }
        let counts = tally(&states);
        let parts: Vec<String> =
            counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
        let n = states.len();
        g.tiles.push(Tile {
            x: LABEL_W + column * (TILE_W + GAP),
            y: g.height - TILE_H - GAP,
            title: format!(
                "{country}: {n} mirror{} ({})",
                if n == 1 { "" } else { "s" },
                parts.join(", ")
            ),
            country,
            state: counts[0].0,
        });
        column += 1;
    }
    g
}

#[derive(Template)]
#[template(path = "public/mirrors.html")]
struct MirrorsPage<'a> {
    css: &'static str,
    site: &'a PublicSite,
    doc: MirrorsDoc,
    counts: Vec<(Freshness, usize)>,
    grid: Grid,
    status: std::sync::Arc<super::status::StatusDoc>,
}

/// `95 s`, `12 min`, `3.5 h`, or `–` when not reached (yet).
pub fn duration(seconds: &Option<i64>) -> String {
    match *seconds {
        None => "–".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{:.1} h", s as f64 / 3600.0),
    }
}

pub async fn page(
    state: web::Data<RegistryState>,
    site: web::Data<PublicSite>,
    status: web::Data<super::status::StatusCache>,
) -> Result<HttpResponse, RegistryError> {
    let doc = listing(&state)?;
    let status = super::status::current(&state, &status).await?;
    let states: Vec<Freshness> = doc.mirrors.iter().map(|m| m.state).collect();
    let counts = tally(&states);
    let grid = grid(&doc.mirrors);
    let html = MirrorsPage { css: &crate::admin::CSS.name, site: &site, doc, counts, grid, status }
        .render()
        .map_err(|e| RegistryError::Bug(e.to_string()))?;
    Ok(HttpResponse::Ok().insert_header(CACHE).content_type("text/html; charset=utf-8").body(html))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mirror, MirrorHealth, MirrorPatch};

    fn status(name: &str, patch: MirrorPatch, health: MirrorHealth) -> MirrorStatus {
        let mut m = Mirror::new(name.parse().unwrap());
        MirrorPatch { urls: Some(vec![format!("https://{name}.example/")]), ..patch }
            .apply(&mut m)
            .unwrap();
        MirrorStatus { continent: m.continent().map(str::to_owned), mirror: m, health }
    }

    #[test]
    fn only_public_approved_mirrors_are_listed_with_their_freshness() {
        let held = |g| MirrorHealth { generation: Some(g), ..MirrorHealth::default() };
        let country = |c: &str| MirrorPatch { country: Some(c.into()), ..MirrorPatch::default() };
        let mut pending = status("pending", country("DE"), held(3));
        (pending.mirror.pending, pending.mirror.enabled) = (true, false);
        let mut failing = status("failing", country("DE"), held(3));
        failing.health.auto_disabled = Some("refused at 10.0.0.1".into());
        failing.health.last_error = Some("refused at 10.0.0.1".into());
        let records = vec![
            status("nowhere", MirrorPatch::default(), held(3)),
            status("now", country("FR"), held(3)),
            status("old", country("DE"), held(1)),
            status("new", country("US"), MirrorHealth::default()),
            failing,
            status("out", MirrorPatch { active: Some(false), ..country("JP") }, held(3)),
            status(
                "off",
                MirrorPatch { enabled: Some(false), reason: Some("abuse".into()), ..country("DE") },
                held(3),
            ),
            status("lan", MirrorPatch { private: Some(true), ..country("DE") }, held(3)),
            pending,
        ];
        let listed = public_mirrors(&records, 3);
        let got: Vec<(&str, Freshness, Option<u64>)> =
            listed.iter().map(|m| (m.name.as_str(), m.state, m.lag)).collect();
        assert_eq!(
            got,
            [
                ("out", Freshness::OptedOut, Some(0)),
                ("failing", Freshness::Failing, Some(0)),
                ("old", Freshness::Behind, Some(2)),
                ("now", Freshness::Current, Some(0)),
                ("new", Freshness::Unverified, None),
                ("nowhere", Freshness::Current, Some(0)),
            ],
            "by continent, country, name"
        );
        let g = grid(&listed);
        let tiles: Vec<(&str, Freshness, &str)> =
            g.tiles.iter().map(|t| (t.country.as_str(), t.state, t.title.as_str())).collect();
        assert_eq!(
            tiles,
            [
                ("JP", Freshness::OptedOut, "JP: 1 mirror (1 opted-out)"),
                ("DE", Freshness::Behind, "DE: 2 mirrors (1 behind, 1 failing)"),
                ("FR", Freshness::Current, "FR: 1 mirror (1 current)"),
                ("US", Freshness::Unverified, "US: 1 mirror (1 unverified)"),
            ]
        );
        let rows: Vec<&str> = g.rows.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(rows, ["AS", "EU", "NA"]);
        assert_eq!((g.tiles[1].y, g.tiles[2].y), (g.tiles[1].y, g.tiles[1].y), "one row for EU");
        assert!(g.tiles[2].x > g.tiles[1].x && g.tiles[3].y > g.tiles[2].y);
        let json = serde_json::to_string(&listed).unwrap();
        for secret in ["abuse", "10.0.0.1", "lan", "pending", "owner"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
    }
}
