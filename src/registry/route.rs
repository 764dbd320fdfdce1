//! Parsing a `/v2/<rest>` path into what it asks for. Repository names contain slashes, so
//! the route is recognised from the right; names and references are parsed into their types
//! here, so bad input never reaches the store.

use crate::model::{Digest, NameError, Reference, RepoName};

#[derive(Debug, PartialEq, Eq)]
pub enum V2Route {
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    /// The OCI 1.1 referrers API.
    Referrers(RepoName, Digest),
    /// Upload endpoints: Wharf is read-only.
    Upload,
    Unknown,
}

pub fn parse(rest: &str) -> Result<V2Route, NameError> {
    if rest == "_catalog" {
        return Ok(V2Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(V2Route::Tags(name.parse()?));
    }
    if rest.contains("/blobs/uploads") {
        return Ok(V2Route::Upload);
    }
    let Some((prefix, last)) = rest.rsplit_once('/') else {
        return Ok(V2Route::Unknown);
    };
    let Some((name, kind)) = prefix.rsplit_once('/') else {
        return Ok(V2Route::Unknown);
    };
    match kind {
        "manifests" => Ok(V2Route::Manifest(name.parse()?, last.parse()?)),
        "blobs" => {
            let name: RepoName = name.parse()?;
            Ok(V2Route::Blob(name, last.parse()?))
        }
        "referrers" => {
            let name: RepoName = name.parse()?;
            Ok(V2Route::Referrers(name, last.parse()?))
        }
        _ => Ok(V2Route::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(parse("_catalog"), Ok(V2Route::Catalog));
        assert!(matches!(parse("a/b/tags/list"), Ok(V2Route::Tags(n)) if n.as_str() == "a/b"));
        assert!(
            matches!(parse("a/b/manifests/latest"), Ok(V2Route::Manifest(n, Reference::Tag(_))) if n.as_str() == "a/b")
        );
        assert!(matches!(
            parse(&format!("x/manifests/{d}")),
            Ok(V2Route::Manifest(_, Reference::Digest(_)))
        ));
        assert!(matches!(parse(&format!("x/blobs/{d}")), Ok(V2Route::Blob(..))));
        assert!(
            matches!(parse(&format!("a/b/referrers/{d}")), Ok(V2Route::Referrers(n, _)) if n.as_str() == "a/b")
        );
        assert!(matches!(parse("x/referrers/sha256:short"), Err(NameError::Digest(_))));
        assert!(matches!(parse("x/referrers/latest"), Err(NameError::Digest(_))));
        assert_eq!(parse("x/blobs/uploads/"), Ok(V2Route::Upload));
        assert_eq!(parse("x/whatever"), Ok(V2Route::Unknown));
        assert!(matches!(parse("../x/tags/list"), Err(NameError::Repo(_))));
        assert!(matches!(parse("UPPER/manifests/latest"), Err(NameError::Repo(_))));
        assert!(matches!(parse("x/blobs/sha256:nothex"), Err(NameError::Digest(_))));
        assert!(matches!(parse("x/manifests/-bad"), Err(NameError::Tag(_))));
    }
}
