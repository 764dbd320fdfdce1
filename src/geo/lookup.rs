//! MaxMind database lookups: country and continent from a City or Country database, the AS
//! number from an ASN database. A missing database is not an error: its tiers are skipped.
//! Files are reloaded when their modification time changes (checked by `reload_if_changed`,
//! which the server calls periodically and on SIGHUP).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};

use crate::model::geography;

type Reader = maxminddb::Reader<Vec<u8>>;

/// What the databases say about a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientGeo {
    /// Codes from Wharf's own country table: a lookup allocates nothing.
    pub country: Option<&'static str>,
    pub continent: Option<&'static str>,
    pub asn: Option<u32>,
}

struct Loaded {
    reader: Reader,
    modified: Option<SystemTime>,
}

/// One database file and its current contents.
struct Db {
    path: Option<PathBuf>,
    loaded: ArcSwapOption<Loaded>,
    warned_missing: std::sync::atomic::AtomicBool,
}

impl Db {
    fn new(path: Option<PathBuf>) -> Db {
        let db = Db { path, loaded: ArcSwapOption::empty(), warned_missing: Default::default() };
        db.reload(false);
        db
    }

    /// Reload when the file's mtime changed (or always, with `force`); a broken or missing
    /// file keeps the previous contents.
    fn reload(&self, force: bool) -> bool {
        let Some(path) = &self.path else { return false };
        let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            if !self.warned_missing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(path = %path.display(), "GeoIP database missing: its tiers are skipped");
            }
            return false;
        };
        self.warned_missing.store(false, std::sync::atomic::Ordering::Relaxed);
        let modified = Some(modified);
        if !force
            && let Some(l) = self.loaded.load().as_ref()
            && l.modified == modified
        {
            return false;
        }
        match Reader::open_readfile(path) {
            Ok(reader) => {
                self.loaded.store(Some(Arc::new(Loaded { reader, modified })));
                tracing::info!(path = %path.display(), "GeoIP database loaded");
                true
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "GeoIP database not loaded");
                false
            }
        }
    }
}

#[derive(Deserialize)]
struct Iso<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Code<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// The fields shared by the City and Country layouts.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    country: Option<Iso<'a>>,
    #[serde(borrow, default)]
    continent: Option<Code<'a>>,
}

#[derive(Deserialize)]
struct AsnRecord {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

/// The GeoIP (City or Country) and ASN databases.
pub struct GeoDb {
    geo: Db,
    asn: Db,
}

impl GeoDb {
    pub fn open(geo: Option<&Path>, asn: Option<&Path>) -> GeoDb {
        GeoDb { geo: Db::new(geo.map(Path::to_owned)), asn: Db::new(asn.map(Path::to_owned)) }
    }

    /// Reload changed files; returns whether anything was reloaded. Blocking file I/O.
    pub fn reload_if_changed(&self) -> bool {
        let a = self.geo.reload(false);
        let b = self.asn.reload(false);
        a || b
    }

    /// Reload both files whatever their mtime (SIGHUP). Blocking file I/O.
    pub fn reload_now(&self) -> bool {
        let a = self.geo.reload(true);
        let b = self.asn.reload(true);
        a || b
    }

    pub fn lookup(&self, ip: IpAddr) -> ClientGeo {
        let mut out = ClientGeo::default();
        if let Some(l) = self.geo.loaded.load().as_ref()
            && let Ok(r) = l.reader.lookup(ip)
            && let Ok(Some(rec)) = r.decode::<CountryRecord>()
        {
            out.country = rec.country.and_then(|c| c.iso_code).and_then(geography::country_code);
            out.continent = rec.continent.and_then(|c| c.code).and_then(geography::continent_code);
        }
        if let Some(l) = self.asn.loaded.load().as_ref()
            && let Ok(r) = l.reader.lookup(ip)
            && let Ok(Some(rec)) = r.decode::<AsnRecord>()
        {
            out.asn = rec.autonomous_system_number;
        }
        out
    }
}
