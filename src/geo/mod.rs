//! Where a client is (GeoIP and ASN lookups) and which mirror it should get (`select`).
//! Imports `model` and `store` types (passed in; `select` never reads the store itself);
//! never actix or askama.

mod counters;
mod lookup;
mod select;

pub use counters::{RedirectCounters, TIERS};
pub use lookup::{ClientGeo, GeoDb};
pub use select::{
    BlobLookup, Candidate, Exclusion, Explanation, Pick, RegistryMirror, Selector, Snapshot, Tier,
    client_ip,
};
