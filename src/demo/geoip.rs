//! MaxMind databases written by Wharf itself: the demo places its pretend clients with one
//! (documentation address ranges only, never GeoLite data), and the tests with others.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Serialize;

#[derive(Serialize)]
struct Iso<'a> {
    iso_code: &'a str,
}

#[derive(Serialize)]
struct Code<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct CityRecord<'a> {
    country: Iso<'a>,
    continent: Code<'a>,
}

#[derive(Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
}

fn path_of(net: IpNet) -> maxminddb_writer::paths::IpAddrWithMask {
    match net.addr() {
        // IPv4 lives under ::/96 in an IPv6 database.
        IpAddr::V4(v4) => maxminddb_writer::paths::IpAddrWithMask::new(
            IpAddr::V6(v4.to_ipv6_compatible()),
            96 + net.prefix_len(),
        ),
        v6 => maxminddb_writer::paths::IpAddrWithMask::new(v6, net.prefix_len()),
    }
}

fn new_db(kind: &str) -> maxminddb_writer::Database {
    let mut db = maxminddb_writer::Database::default();
    db.metadata.ip_version = maxminddb_writer::metadata::IpVersion::V6;
    db.metadata.database_type = kind.into();
    db.metadata.languages = vec!["en".into()];
    db.metadata.binary_format_major_version = 2;
    db
}

fn write(db: &maxminddb_writer::Database, path: &Path) -> std::io::Result<()> {
    db.write_to(std::fs::File::create(path)?).map(drop).map_err(std::io::Error::other)
}

/// A GeoIP2-City database placing each network in a country; the continent comes from
/// Wharf's table (an unknown country is an error).
pub fn write_city_db(path: &Path, entries: &[(IpNet, &str)]) -> std::io::Result<()> {
    let mut db = new_db("GeoIP2-City");
    for (net, country) in entries {
        let continent = crate::model::geography::continent_of(country).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("country {country}"))
        })?;
        let record =
            CityRecord { country: Iso { iso_code: country }, continent: Code { code: continent } };
        let data = db.insert_value(record).map_err(std::io::Error::other)?;
        db.insert_node(path_of(*net), data);
    }
    write(&db, path)
}

/// A GeoLite2-ASN database giving each network its AS number.
pub fn write_asn_db(path: &Path, entries: &[(IpNet, u32)]) -> std::io::Result<()> {
    let mut db = new_db("GeoLite2-ASN");
    for (net, asn) in entries {
        let data = db
            .insert_value(AsnRecord { autonomous_system_number: *asn })
            .map_err(std::io::Error::other)?;
        db.insert_node(path_of(*net), data);
    }
    write(&db, path)
}
