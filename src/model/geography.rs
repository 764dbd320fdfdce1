//! Countries and continents: the embedded ISO 3166-1 alpha-2 -> continent table (the
//! continent codes MaxMind uses: AF AN AS EU NA OC SA).

use super::MirrorError;

pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// `CC:CONTINENT` pairs, sorted by country.
const TABLE: &str = "\
AD:EU AE:AS AF:AS AG:NA AI:NA AL:EU AM:AS AO:AF AQ:AN AR:SA AS:OC AT:EU AU:OC AW:NA AX:EU AZ:AS \
BA:EU BB:NA BD:AS BE:EU BF:AF BG:EU BH:AS BI:AF BJ:AF BL:NA BM:NA BN:AS BO:SA BQ:NA BR:SA BS:NA \
BT:AS BV:AN BW:AF BY:EU BZ:NA CA:NA CC:AS CD:AF CF:AF CG:AF CH:EU CI:AF CK:OC CL:SA CM:AF CN:AS \
CO:SA CR:NA CU:NA CV:AF CW:NA CX:AS CY:EU CZ:EU DE:EU DJ:AF DK:EU DM:NA DO:NA DZ:AF EC:SA EE:EU \
EG:AF EH:AF ER:AF ES:EU ET:AF FI:EU FJ:OC FK:SA FM:OC FO:EU FR:EU GA:AF GB:EU GD:NA GE:AS GF:SA \
GG:EU GH:AF GI:EU GL:NA GM:AF GN:AF GP:NA GQ:AF GR:EU GS:AN GT:NA GU:OC GW:AF GY:SA HK:AS HM:AN \
HN:NA HR:EU HT:NA HU:EU ID:AS IE:EU IL:AS IM:EU IN:AS IO:AS IQ:AS IR:AS IS:EU IT:EU JE:EU JM:NA \
JO:AS JP:AS KE:AF KG:AS KH:AS KI:OC KM:AF KN:NA KP:AS KR:AS KW:AS KY:NA KZ:AS LA:AS LB:AS LC:NA \
LI:EU LK:AS LR:AF LS:AF LT:EU LU:EU LV:EU LY:AF MA:AF MC:EU MD:EU ME:EU MF:NA MG:AF MH:OC MK:EU \
ML:AF MM:AS MN:AS MO:AS MP:OC MQ:NA MR:AF MS:NA MT:EU MU:AF MV:AS MW:AF MX:NA MY:AS MZ:AF NA:AF \
NC:OC NE:AF NF:OC NG:AF NI:NA NL:EU NO:EU NP:AS NR:OC NU:OC NZ:OC OM:AS PA:NA PE:SA PF:OC PG:OC \
PH:AS PK:AS PL:EU PM:NA PN:OC PR:NA PS:AS PT:EU PW:OC PY:SA QA:AS RE:AF RO:EU RS:EU RU:EU RW:AF \
SA:AS SB:OC SC:AF SD:AF SE:EU SG:AS SH:AF SI:EU SJ:EU SK:EU SL:AF SM:EU SN:AF SO:AF SR:SA SS:AF \
ST:AF SV:NA SX:NA SY:AS SZ:AF TC:NA TD:AF TF:AN TG:AF TH:AS TJ:AS TK:OC TL:AS TM:AS TN:AF TO:OC \
TR:AS TT:NA TV:OC TW:AS TZ:AF UA:EU UG:AF UM:OC US:NA UY:SA UZ:AS VA:EU VC:NA VE:SA VG:NA VI:NA \
VN:AS VU:OC WF:OC WS:OC XK:EU YE:AS YT:AF ZA:AF ZM:AF ZW:AF";

/// `TABLE` as sorted (country, continent) pairs, for binary search.
static PAIRS: std::sync::LazyLock<Vec<(&'static str, &'static str)>> =
    std::sync::LazyLock::new(|| TABLE.split(' ').filter_map(|pair| pair.split_once(':')).collect());

fn find(country: &str) -> Option<(&'static str, &'static str)> {
    PAIRS.binary_search_by(|(cc, _)| (*cc).cmp(country)).ok().map(|i| PAIRS[i])
}

/// The continent of an ISO country code, if the code is known.
pub fn continent_of(country: &str) -> Option<&'static str> {
    find(country).map(|(_, continent)| continent)
}

/// The table's own copy of a country code (so callers can keep it without allocating).
pub fn country_code(country: &str) -> Option<&'static str> {
    find(country).map(|(cc, _)| cc)
}

/// The static copy of a continent code.
pub fn continent_code(c: &str) -> Option<&'static str> {
    CONTINENTS.iter().copied().find(|x| *x == c)
}

pub fn check_country(c: &str) -> Result<(), MirrorError> {
    continent_of(c).map(|_| ()).ok_or_else(|| {
        MirrorError(format!("unknown country code {c:?}: use ISO 3166-1 alpha-2, e.g. DE"))
    })
}

pub fn check_continent(c: &str) -> Result<(), MirrorError> {
    if CONTINENTS.contains(&c) {
        Ok(())
    } else {
        Err(MirrorError(format!("unknown continent {c:?}: one of {}", CONTINENTS.join(" "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_complete_enough() {
        let codes: Vec<&str> = TABLE.split(' ').map(|p| &p[..2]).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(codes, sorted, "sorted, no duplicates");
        assert!(codes.len() >= 245);
        for pair in TABLE.split(' ') {
            check_continent(&pair[3..]).unwrap();
        }
        assert_eq!(continent_of("DE"), Some("EU"));
        assert_eq!(continent_of("JP"), Some("AS"));
        assert_eq!(continent_of("US"), Some("NA"));
        assert_eq!(continent_of("BR"), Some("SA"));
        assert_eq!(continent_of("AU"), Some("OC"));
        assert_eq!(continent_of("ZA"), Some("AF"));
        assert_eq!(continent_of("de"), None);
        assert!(check_country("XX").is_err());
        assert_eq!(country_code("FR"), Some("FR"));
        assert_eq!(country_code("XX"), None);
        assert_eq!(continent_code("OC"), Some("OC"));
    }
}
