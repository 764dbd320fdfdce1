//! Manifest content negotiation, as distribution does it: read every `Accept` line, split on
//! commas; an index asked for by tag whose type the client did not accept is answered with its
//! linux/amd64 child; any other type the client did not accept is MANIFEST_UNKNOWN.
//! No `Accept` header, or `*/*`, accepts every type.

use actix_web::http::header::{ACCEPT, HeaderMap};

use crate::model::{ChildManifest, Digest, media_type};

/// The media types a request accepts.
#[derive(Debug, Default)]
pub struct Accepted {
    any: bool,
    types: Vec<String>,
}

impl Accepted {
    pub fn from_headers(headers: &HeaderMap) -> Accepted {
        let mut types = Vec::new();
        for line in headers.get_all(ACCEPT) {
            let Ok(line) = line.to_str() else { continue };
            for item in line.split(',') {
                let mt = item.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                if !mt.is_empty() {
                    types.push(mt);
                }
            }
        }
        let any = types.is_empty() || types.iter().any(|t| t == "*/*");
        Accepted { any, types }
    }

    pub fn accepts(&self, mt: &str) -> bool {
        self.any || self.types.iter().any(|t| t == mt)
    }
}

/// What to answer a manifest request with.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The manifest itself.
    Serve,
    /// The index's linux/amd64 child instead.
    Child(Digest),
    /// Nothing acceptable: MANIFEST_UNKNOWN with this detail.
    Refuse(String),
}

pub fn choose(accepted: &Accepted, mt: &str, by_tag: bool, children: &[ChildManifest]) -> Choice {
    if accepted.accepts(mt) {
        return Choice::Serve;
    }
    if by_tag && media_type::is_index(mt) {
        let amd64 = children.iter().find(|c| {
            c.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        });
        // The child's own type is checked once it is loaded (`refuse_unaccepted`): an
        // index entry's `mediaType` may be missing.
        return match amd64 {
            Some(c) => Choice::Child(c.digest.clone()),
            None => {
                Choice::Refuse(format!("{mt} not accepted and the index has no linux/amd64 image"))
            }
        };
    }
    Choice::Refuse(format!("manifest is {mt}, which the client does not accept"))
}

/// Serve the manifest, or say why its type is not acceptable.
pub fn refuse_unaccepted(accepted: &Accepted, mt: &str) -> Result<(), String> {
    if accepted.accepts(mt) {
        Ok(())
    } else {
        Err(format!("manifest is {mt}, which the client does not accept"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Platform;
    use actix_web::http::header::HeaderValue;

    fn accepted(lines: &[&str]) -> Accepted {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(ACCEPT, HeaderValue::from_str(l).unwrap());
        }
        Accepted::from_headers(&h)
    }

    fn child(arch: &str) -> ChildManifest {
        ChildManifest {
            digest: Digest::of(arch.as_bytes()),
            media_type: media_type::OCI_MANIFEST.into(),
            size: 1,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: None,
            }),
        }
    }

    #[test]
    fn reads_every_accept_line() {
        let a = accepted(&[
            media_type::DOCKER_MANIFEST,
            "application/json; q=0.5, application/vnd.oci.image.index.v1+json",
        ]);
        assert!(a.accepts(media_type::DOCKER_MANIFEST));
        assert!(a.accepts(media_type::OCI_INDEX));
        assert!(!a.accepts(media_type::OCI_MANIFEST));
        assert!(accepted(&[]).accepts(media_type::OCI_MANIFEST));
        assert!(accepted(&["*/*"]).accepts(media_type::DOCKER_LIST));
    }

    #[test]
    fn index_falls_back_to_amd64_by_tag_only() {
        let kids = [child("arm64"), child("amd64")];
        let a = accepted(&[media_type::OCI_MANIFEST]);
        assert_eq!(
            choose(&a, media_type::OCI_INDEX, true, &kids),
            Choice::Child(kids[1].digest.clone())
        );
        assert!(matches!(choose(&a, media_type::OCI_INDEX, false, &kids), Choice::Refuse(_)));
        assert!(matches!(choose(&a, media_type::OCI_INDEX, true, &kids[..1]), Choice::Refuse(_)));
        let docker_only = accepted(&[media_type::DOCKER_MANIFEST]);
        // The child is chosen; its own type is then refused.
        assert_eq!(
            choose(&docker_only, media_type::OCI_INDEX, true, &kids),
            Choice::Child(kids[1].digest.clone())
        );
        assert!(refuse_unaccepted(&docker_only, media_type::OCI_MANIFEST).is_err());
        assert_eq!(choose(&a, media_type::OCI_MANIFEST, true, &[]), Choice::Serve);
        assert!(matches!(
            choose(&docker_only, media_type::OCI_MANIFEST, true, &[]),
            Choice::Refuse(_)
        ));
    }
}
