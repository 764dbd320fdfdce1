//! The parts of a manifest Wharf needs: its media type, the blobs it references and, for an
//! index, its children with their platforms. Parsing is lenient on purpose (unknown fields are
//! ignored) so all four media types share one shape; the raw bytes stay the source of truth.

use serde::{Deserialize, Serialize};

use super::Digest;

/// The largest manifest Wharf accepts (distribution's limit is 4 MiB too).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// The manifest media types Wharf syncs and serves.
pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+json";

    /// All four, as one `Accept` value.
    pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.docker.distribution.manifest.v2+json";

    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_LIST
    }

    pub fn is_supported(mt: &str) -> bool {
        is_index(mt) || mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    pub fn is_schema1(mt: &str) -> bool {
        mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED
    }
}

/// An image platform, as in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One entry of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub platform: Option<Platform>,
}

/// A blob a manifest references (config or layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// What a manifest is, parsed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestShape {
    Index { children: Vec<ChildManifest> },
    Image { config: BlobRef, layers: Vec<BlobRef>, platform: Option<Platform> },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    manifests: Option<Vec<WireDescriptor>>,
    #[serde(default)]
    config: Option<WireDescriptor>,
    #[serde(default)]
    layers: Option<Vec<WireDescriptor>>,
}

/// Why manifest bytes could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
    #[error("manifest of type {0} has no {1}")]
    Missing(String, &'static str),
}

impl ManifestShape {
    /// The effective media type of `bytes`: the document's own `mediaType`, else the one the
    /// server sent, else guessed from the document's structure.
    pub fn media_type_of(bytes: &[u8], sent: Option<&str>) -> Result<String, ManifestError> {
        let wire: WireManifest = serde_json::from_slice(bytes)?;
        if let Some(mt) = wire.media_type.filter(|m| !m.is_empty()) {
            return Ok(mt);
        }
        if let Some(mt) = sent.filter(|m| !m.is_empty() && *m != "application/json") {
            return Ok(mt.to_owned());
        }
        Ok(match (wire.schema_version, wire.manifests.is_some()) {
            (Some(1), _) => media_type::DOCKER_SCHEMA1.to_owned(),
            (_, true) => media_type::OCI_INDEX.to_owned(),
            _ => media_type::OCI_MANIFEST.to_owned(),
        })
    }

    /// Parse `bytes` of media type `mt`. `config_platform` is filled in later, from the config.
    pub fn parse(bytes: &[u8], mt: &str) -> Result<ManifestShape, ManifestError> {
        if !media_type::is_supported(mt) {
            return Err(ManifestError::Unsupported(mt.to_owned()));
        }
        let wire: WireManifest = serde_json::from_slice(bytes)?;
        if media_type::is_index(mt) {
            let manifests = wire.manifests.ok_or(ManifestError::Missing(mt.into(), "manifests"))?;
            let children = manifests
                .into_iter()
                .map(|d| ChildManifest {
                    digest: d.digest,
                    media_type: d.media_type,
                    size: d.size,
                    platform: d.platform,
                })
                .collect();
            return Ok(ManifestShape::Index { children });
        }
        let config = wire.config.ok_or(ManifestError::Missing(mt.into(), "config"))?;
        let layers = wire
            .layers
            .ok_or(ManifestError::Missing(mt.into(), "layers"))?
            .into_iter()
            // Foreign layers (with `urls`) live elsewhere by design; registries do not serve them.
            .filter(|l| l.urls.as_ref().is_none_or(|u| u.is_empty()))
            .map(|l| BlobRef { digest: l.digest, size: l.size })
            .collect();
        Ok(ManifestShape::Image {
            config: BlobRef { digest: config.digest, size: config.size },
            layers,
            platform: None,
        })
    }

    /// Every blob (config and layers) an image manifest references; none for an index.
    pub fn blobs(&self) -> Vec<BlobRef> {
        match self {
            ManifestShape::Index { .. } => Vec::new(),
            ManifestShape::Image { config, layers, .. } => {
                std::iter::once(config.clone()).chain(layers.iter().cloned()).collect()
            }
        }
    }
}

/// The platform an image config declares (`os`, `architecture`, `variant`).
pub fn platform_of_config(bytes: &[u8]) -> Option<Platform> {
    serde_json::from_slice::<Platform>(bytes).ok().filter(|p| !p.os.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn parses_index_and_image() {
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            media_type::OCI_INDEX,
            media_type::OCI_MANIFEST
        );
        let mt = ManifestShape::media_type_of(idx.as_bytes(), None).unwrap();
        assert_eq!(mt, media_type::OCI_INDEX);
        let ManifestShape::Index { children } = ManifestShape::parse(idx.as_bytes(), &mt).unwrap()
        else {
            panic!("not an index")
        };
        assert_eq!(children[0].platform.as_ref().unwrap().to_string(), "linux/arm64/v8");

        let img = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":3}},"layers":[{{"digest":"{D2}","size":4}},{{"digest":"{D2}","size":4,"urls":["http://x"]}}]}}"#
        );
        let mt = ManifestShape::media_type_of(img.as_bytes(), Some(media_type::DOCKER_MANIFEST))
            .unwrap();
        assert_eq!(mt, media_type::DOCKER_MANIFEST);
        let shape = ManifestShape::parse(img.as_bytes(), &mt).unwrap();
        assert_eq!(shape.blobs().len(), 2, "foreign layer skipped");
    }

    #[test]
    fn rejects_schema1_and_garbage() {
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let mt = ManifestShape::media_type_of(s1, None).unwrap();
        assert!(media_type::is_schema1(&mt));
        assert!(matches!(ManifestShape::parse(s1, &mt), Err(ManifestError::Unsupported(_))));
        assert!(ManifestShape::media_type_of(b"not json", None).is_err());
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:x","size":1},"layers":[]}"#;
        assert!(ManifestShape::parse(bad_digest, media_type::OCI_MANIFEST).is_err());
    }
}
