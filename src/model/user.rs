//! Accounts of the admin UI: operators and mirror admins.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::MirrorError;

/// A user name: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, MirrorError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
        if ok {
            Ok(UserName(s.to_owned()))
        } else {
            Err(MirrorError(format!("invalid user name {s:?}: use [a-z0-9][a-z0-9._-]{{0,63}}")))
        }
    }
}

super::names::string_newtype!(UserName, MirrorError);

/// An e-mail address to send notices to: `local@domain`, at most 254 bytes, printable ASCII
/// without spaces or the characters that would let it become a second header or address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What every surface's address field means: empty (or blanks) removes the address,
    /// anything else must be one.
    pub fn optional(s: &str) -> Result<Option<EmailAddress>, MirrorError> {
        match s.trim() {
            "" => Ok(None),
            s => s.parse().map(Some),
        }
    }
}

impl FromStr for EmailAddress {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, MirrorError> {
        let s = s.trim();
        let allowed = |c: char| c.is_ascii_graphic() && !"<>()[],;:\\\"".contains(c);
        let ok = s.len() <= 254
            && s.chars().all(allowed)
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.contains('@')
                    && domain.split('.').all(|l| !l.is_empty())
            });
        if ok {
            Ok(EmailAddress(s.to_owned()))
        } else {
            Err(MirrorError(format!("invalid e-mail address {s:?}: use name@example.org")))
        }
    }
}

super::names::string_newtype!(EmailAddress, MirrorError);

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sees and steers everything.
    Operator,
    /// Sees and changes only their own mirrors.
    MirrorAdmin,
}

impl FromStr for Role {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, MirrorError> {
        match s {
            "operator" => Ok(Role::Operator),
            "mirror-admin" => Ok(Role::MirrorAdmin),
            _ => Err(MirrorError(format!("invalid role {s:?}: operator or mirror-admin"))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Operator => "operator",
            Role::MirrorAdmin => "mirror-admin",
        })
    }
}

/// A user as listed (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id; mirrors record their owner by it.
    pub id: u64,
    pub name: UserName,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
    pub disabled: bool,
    /// Where notices about the user's mirrors go.
    pub email: Option<EmailAddress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_one_plain_address() {
        let ok: EmailAddress = " admin@mirror.example.org ".parse().unwrap();
        assert_eq!(ok.as_str(), "admin@mirror.example.org");
        assert_eq!(EmailAddress::optional("  "), Ok(None));
        assert_eq!(EmailAddress::optional(" admin@mirror.example.org"), Ok(Some(ok)));
        assert!(EmailAddress::optional("admin").is_err());
        for bad in [
            "",
            "admin",
            "admin@localhost",
            "a@b@example.org",
            "Admin <admin@example.org>",
            "a@example.org,b@example.org",
            "a@example.org\r\nBcc: x@example.org",
            "a b@example.org",
            "a@example..org",
            &format!("{}@example.org", "a".repeat(65)),
            "ü@example.org",
        ] {
            assert!(bad.parse::<EmailAddress>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_roles_parse() {
        assert!("alice".parse::<UserName>().is_ok());
        assert!("a.b_c-1".parse::<UserName>().is_ok());
        for bad in ["", "Alice", "-a", "a b", &"a".repeat(65)] {
            assert!(bad.parse::<UserName>().is_err(), "{bad}");
        }
        assert_eq!("mirror-admin".parse::<Role>().unwrap(), Role::MirrorAdmin);
        assert_eq!(Role::Operator.to_string(), "operator");
        assert!("admin".parse::<Role>().is_err());
    }
}
