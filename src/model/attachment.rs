//! What is attached to a manifest without being part of it, as the sync finds it upstream
//! and the registry serves it again: OCI 1.1 referrers (manifests whose `subject` names it),
//! the tags cosign and the OCI referrers fallback use (`sha256-<hex>.sig`, `.att`, `.sbom`,
//! `sha256-<hex>`), and simple-signing signatures in a lookaside store
//! (`<repo>@sha256=<hex>/signature-<n>`). Parsed once, here; the bytes stay as received.

use std::fmt;

use serde::Deserialize;

use super::{Digest, RepoName, Tag};

/// The artifact types of cosign's attachments (as cosign sets them in OCI 1.1 mode, and as
/// Wharf names the tag-scheme ones for `[sync] referrer_artifact_types`).
pub mod artifact_type {
    pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    pub const COSIGN_ATTESTATION: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
    pub const COSIGN_SBOM: &str = "application/vnd.dev.cosign.artifact.sbom.v1+json";
}

/// Signatures read per manifest from a lookaside store, at most (`signature-1` ...).
pub const MAX_SIGNATURES: u32 = 16;
/// The largest simple-signing signature accepted (they are about a kilobyte; containers/image
/// reads at most 4 MiB of a whole signature list).
pub const MAX_SIGNATURE_SIZE: u64 = 64 * 1024;

/// Which tag scheme an attachment tag follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TagScheme {
    /// `sha256-<hex>`: the OCI referrers fallback, an index listing the referrers.
    Fallback,
    /// `sha256-<hex>.sig`: cosign signatures.
    CosignSignature,
    /// `sha256-<hex>.att`: cosign attestations.
    CosignAttestation,
    /// `sha256-<hex>.sbom`: cosign SBOMs.
    CosignSbom,
}

impl TagScheme {
    const SUFFIXES: [(&'static str, TagScheme); 3] = [
        (".sig", TagScheme::CosignSignature),
        (".att", TagScheme::CosignAttestation),
        (".sbom", TagScheme::CosignSbom),
    ];

    /// The artifact type the scheme stands for (none for the fallback index, which lists
    /// artifacts of any type).
    pub fn artifact_type(self) -> Option<&'static str> {
        match self {
            TagScheme::Fallback => None,
            TagScheme::CosignSignature => Some(artifact_type::COSIGN_SIGNATURE),
            TagScheme::CosignAttestation => Some(artifact_type::COSIGN_ATTESTATION),
            TagScheme::CosignSbom => Some(artifact_type::COSIGN_SBOM),
        }
    }

    /// What a person calls it.
    pub fn label(self) -> &'static str {
        match self {
            TagScheme::Fallback => "referrers",
            TagScheme::CosignSignature => "cosign signature",
            TagScheme::CosignAttestation => "attestation",
            TagScheme::CosignSbom => "SBOM",
        }
    }
}

/// A tag that carries something attached to `subject` rather than an image of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttachmentTag {
    pub subject: Digest,
    pub scheme: TagScheme,
}

impl AttachmentTag {
    /// `sha256-<64 hex>` with an optional `.sig`, `.att` or `.sbom`; anything else is an
    /// ordinary tag.
    pub fn parse(tag: &str) -> Option<AttachmentTag> {
        let rest = tag.strip_prefix("sha256-")?;
        let (hex, scheme) = match TagScheme::SUFFIXES.iter().find(|(s, _)| rest.ends_with(s)) {
            Some((s, scheme)) => (&rest[..rest.len() - s.len()], *scheme),
            None => (rest, TagScheme::Fallback),
        };
        let subject = format!("sha256:{hex}").parse().ok()?;
        Some(AttachmentTag { subject, scheme })
    }

    pub fn tag(&self) -> Tag {
        let suffix = TagScheme::SUFFIXES.iter().find(|(_, s)| *s == self.scheme).map(|(s, _)| *s);
        format!("sha256-{}{}", self.subject.hex(), suffix.unwrap_or(""))
            .parse()
            .expect("an attachment tag is a valid tag")
    }
}

/// What a manifest that names a `subject` contributes to its subject's referrers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub subject: Digest,
    /// The manifest's `artifactType`, else its config's media type (for an image manifest).
    pub artifact_type: Option<String>,
    /// The descriptor the referrers API lists, as JSON: `mediaType`, `digest`, `size`,
    /// `artifactType` and the manifest's `annotations`.
    pub descriptor: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubjectWire {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<ConfigWire>,
    #[serde(default)]
    subject: Option<DescriptorWire>,
    #[serde(default)]
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigWire {
    #[serde(default)]
    media_type: String,
}

#[derive(Deserialize)]
struct DescriptorWire {
    digest: Digest,
}

impl Referrer {
    /// The referrer facts of manifest `bytes` of media type `media_type`, if it names a
    /// subject. Annotations that are not strings are dropped (the image spec allows only
    /// strings).
    pub fn of(bytes: &[u8], media_type: &str) -> Option<Referrer> {
        // Most manifests name no subject: not parsed again for nothing (a first sync stages
        // a million of them).
        if !bytes.windows(9).any(|w| w == b"\"subject\"") {
            return None;
        }
        let wire: SubjectWire = serde_json::from_slice(bytes).ok()?;
        let subject = wire.subject?.digest;
        let artifact_type = wire
            .artifact_type
            .filter(|t| !t.is_empty())
            .or_else(|| wire.config.map(|c| c.media_type).filter(|t| !t.is_empty()));
        let mut d = serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::of(bytes).as_str(),
            "size": bytes.len(),
        });
        if let Some(t) = &artifact_type {
            d["artifactType"] = t.as_str().into();
        }
        let annotations: serde_json::Map<String, serde_json::Value> = wire
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, v)| v.is_string())
            .collect();
        if !annotations.is_empty() {
            d["annotations"] = annotations.into();
        }
        let descriptor = serde_json::to_vec(&d).expect("a descriptor serializes");
        Some(Referrer { subject, artifact_type, descriptor })
    }

    /// The artifact type in a stored descriptor (for `?artifactType=` filtering).
    pub fn artifact_type_of(descriptor: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct T {
            #[serde(rename = "artifactType")]
            artifact_type: Option<String>,
        }
        serde_json::from_slice::<T>(descriptor).ok()?.artifact_type
    }
}

/// Where a simple-signing signature lives in a lookaside store (and in the tree under
/// `sigstore/`): `<repo>@sha256=<hex>/signature-<index>`, `index` from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookasidePath {
    pub repo: RepoName,
    pub manifest: Digest,
    pub index: u32,
}

impl LookasidePath {
    /// The directory of a manifest's signatures, relative to the store's root.
    pub fn dir(repo: &RepoName, manifest: &Digest) -> String {
        format!("{repo}@sha256={}", manifest.hex())
    }
}

impl fmt::Display for LookasidePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/signature-{}", LookasidePath::dir(&self.repo, &self.manifest), self.index)
    }
}

impl std::str::FromStr for LookasidePath {
    type Err = ();

    fn from_str(s: &str) -> Result<LookasidePath, ()> {
        let (dir, file) = s.rsplit_once('/').ok_or(())?;
        let index = file.strip_prefix("signature-").ok_or(())?;
        // Canonical decimal only: `signature-01` is not `signature-1`.
        if index.starts_with('0') || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let index: u32 = index.parse().map_err(|_| ())?;
        let (repo, hex) = dir.rsplit_once("@sha256=").ok_or(())?;
        Ok(LookasidePath {
            repo: repo.parse().map_err(|_| ())?,
            manifest: format!("sha256:{hex}").parse().map_err(|_| ())?,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "5849ff45ed12504b46c04bf666c12c4a8d5236dfc282a12afeda49348d1ceb6c";

    #[test]
    fn attachment_tags_are_recognised_exactly() {
        let sig = AttachmentTag::parse(&format!("sha256-{HEX}.sig")).unwrap();
        assert_eq!(sig.scheme, TagScheme::CosignSignature);
        assert_eq!(sig.subject.hex(), HEX);
        assert_eq!(sig.tag().as_str(), format!("sha256-{HEX}.sig"));
        let fallback = AttachmentTag::parse(&format!("sha256-{HEX}")).unwrap();
        assert_eq!(fallback.scheme, TagScheme::Fallback);
        assert_eq!(fallback.tag().as_str(), format!("sha256-{HEX}"));
        for scheme in [".att", ".sbom"] {
            assert!(AttachmentTag::parse(&format!("sha256-{HEX}{scheme}")).is_some());
        }
        for ordinary in
            ["latest", "sha256-abc.sig", &format!("sha256-{HEX}.zip"), &format!("sha512-{HEX}")]
        {
            assert_eq!(AttachmentTag::parse(ordinary), None, "{ordinary}");
        }
        assert_eq!(AttachmentTag::parse(&format!("sha256-{}", HEX.to_uppercase())), None);
    }

    #[test]
    fn a_referrer_lists_its_artifact_type_and_annotations() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:{HEX}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{HEX}","size":1}},"annotations":{{"a":"1","n":2}}}}"#
        );
        let r = Referrer::of(m.as_bytes(), "application/vnd.oci.image.manifest.v1+json").unwrap();
        assert_eq!(r.subject.hex(), HEX);
        assert_eq!(r.artifact_type.as_deref(), Some("application/spdx+json"));
        let d: serde_json::Value = serde_json::from_slice(&r.descriptor).unwrap();
        assert_eq!(d["digest"], Digest::of(m.as_bytes()).as_str());
        assert_eq!(d["size"], m.len());
        assert_eq!(d["annotations"], serde_json::json!({"a": "1"}));
        assert_eq!(
            Referrer::artifact_type_of(&r.descriptor).as_deref(),
            r.artifact_type.as_deref()
        );
        // Without artifactType: the config's media type.
        let m = m.replace(r#""artifactType":"application/spdx+json","#, "");
        let r = Referrer::of(m.as_bytes(), "x").unwrap();
        assert_eq!(r.artifact_type.as_deref(), Some("application/vnd.oci.empty.v1+json"));
        // No subject, or not JSON: not a referrer.
        assert_eq!(Referrer::of(br#"{"schemaVersion":2}"#, "x"), None);
        assert_eq!(Referrer::of(b"garbage", "x"), None);
    }

    #[test]
    fn lookaside_paths_round_trip_and_reject_the_rest() {
        let p: LookasidePath = format!("library/busybox@sha256={HEX}/signature-2").parse().unwrap();
        assert_eq!((p.repo.as_str(), p.manifest.hex(), p.index), ("library/busybox", HEX, 2));
        assert_eq!(p.to_string(), format!("library/busybox@sha256={HEX}/signature-2"));
        for bad in [
            format!("x@sha256={HEX}/signature-01"),
            format!("x@sha256={HEX}/signature-"),
            format!("x@sha256={HEX}/signature-1x"),
            format!("x@sha256={HEX}/sig-1"),
            format!("../x@sha256={HEX}/signature-1"),
            "x@sha256=abc/signature-1".to_string(),
            format!("x@sha512={HEX}/signature-1"),
            format!("x@sha256={HEX}/signature-99999999999"),
        ] {
            assert!(bad.parse::<LookasidePath>().is_err(), "{bad}");
        }
    }
}
