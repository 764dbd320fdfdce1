//! Image signatures checked against trusted public keys: simple signing (an OpenPGP signed
//! message whose literal data is the payload, as skopeo, podman and Red Hat publish them) and
//! cosign's key-pair signatures (ECDSA P-256 over the payload, base64 in the layer annotation
//! `dev.cosignproject.cosign/signature`). Both payloads are the simple-signing JSON whose
//! `critical` part names the manifest digest and the signed identity. The cryptography is
//! rPGP (`pgp`) and RustCrypto's `p256`; nothing here is hand-written crypto.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::attachment::MAX_SIGNATURE_SIZE;
use super::{Digest, Tag};

/// The layer media type of a cosign signature's payload.
pub const COSIGN_PAYLOAD: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a cosign signature (base64 of a DER ECDSA signature).
pub const COSIGN_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A key file that cannot be used, named for the operator.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "key file {path} is neither a PEM ECDSA P-256 public key (cosign) nor an OpenPGP \
         public key: {reason}"
    )]
    Parse { path: PathBuf, reason: String },
}

/// Why a signature does not make an image trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a signature: {0}")]
    Malformed(String),
    #[error("no trusted key of this kind")]
    NoKey,
    #[error("the signature does not verify against any trusted key")]
    BadSignature,
    #[error("the signed payload is not a container signature: {0}")]
    Payload(String),
    #[error("the signature is for {signed}, not {expected}")]
    Digest { signed: Digest, expected: Digest },
    #[error("the signature is for identity {signed:?}, not {expected:?}")]
    Identity { signed: String, expected: String },
}

/// What a signature claims: the manifest and the identity it was signed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedClaim {
    pub docker_reference: String,
    pub manifest_digest: Digest,
}

#[derive(Deserialize)]
struct PayloadWire {
    critical: CriticalWire,
}

#[derive(Deserialize)]
struct CriticalWire {
    identity: IdentityWire,
    image: ImageWire,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct IdentityWire {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct ImageWire {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: Digest,
}

impl SignedClaim {
    /// The `critical` part of a simple-signing payload (atomic or cosign).
    pub fn parse(payload: &[u8]) -> Result<SignedClaim, VerifyError> {
        let w: PayloadWire =
            serde_json::from_slice(payload).map_err(|e| VerifyError::Payload(e.to_string()))?;
        if !matches!(
            w.critical.kind.as_str(),
            "atomic container signature" | "cosign container image signature"
        ) {
            return Err(VerifyError::Payload(format!("type {:?}", w.critical.kind)));
        }
        Ok(SignedClaim {
            docker_reference: w.critical.identity.docker_reference,
            manifest_digest: w.critical.image.docker_manifest_digest,
        })
    }

    /// Whether the claim is for `digest` as `identity` (`host[:port]/path`), with `tag` if
    /// the signed reference names a tag (what podman's default `matchRepoDigestOrExact` asks).
    pub fn check(
        &self,
        digest: &Digest,
        identity: &str,
        tag: Option<&Tag>,
    ) -> Result<(), VerifyError> {
        if &self.manifest_digest != digest {
            let (signed, expected) = (self.manifest_digest.clone(), digest.clone());
            return Err(VerifyError::Digest { signed, expected });
        }
        let reference = self.docker_reference.split('@').next().unwrap_or_default();
        let (name, signed_tag) = match reference.rsplit_once('/') {
            Some((_, last)) if last.contains(':') => {
                let (n, t) = reference.rsplit_once(':').unwrap_or((reference, ""));
                (n, Some(t))
            }
            _ => (reference, None),
        };
        let tag_ok = match (signed_tag, tag) {
            (Some(s), Some(t)) => s == t.as_str(),
            _ => true,
        };
        if name != identity || !tag_ok {
            let expected = match tag {
                Some(t) => format!("{identity}:{t}"),
                None => identity.to_owned(),
            };
            return Err(VerifyError::Identity { signed: self.docker_reference.clone(), expected });
        }
        Ok(())
    }
}

/// The public keys signatures are checked against, parsed once at start.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    cosign: Vec<(PathBuf, p256::ecdsa::VerifyingKey)>,
    gpg: Vec<(PathBuf, Arc<pgp::composed::SignedPublicKey>)>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        f.debug_struct("TrustedKeys")
            .field("cosign", &paths(&self.cosign.iter().map(|k| k.0.clone()).collect::<Vec<_>>()))
            .field("gpg", &paths(&self.gpg.iter().map(|k| k.0.clone()).collect::<Vec<_>>()))
            .finish()
    }
}

impl TrustedKeys {
    /// Read every key file; each holds one PEM public key (cosign) or OpenPGP public keys
    /// (armored or binary, as `gpg --export` writes them).
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys, KeyError> {
        let mut keys = TrustedKeys::default();
        for path in paths {
            let bytes = std::fs::read(path)
                .map_err(|source| KeyError::Read { path: path.clone(), source })?;
            keys.add(path, &bytes)?;
        }
        Ok(keys)
    }

    fn add(&mut self, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
        use p256::pkcs8::DecodePublicKey;
        use pgp::composed::{Deserializable, SignedPublicKey};
        let bad = |reason: String| KeyError::Parse { path: path.to_owned(), reason };
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            let key = p256::ecdsa::VerifyingKey::from_public_key_pem(text)
                .map_err(|e| bad(format!("PEM: {e}")))?;
            self.cosign.push((path.to_owned(), key));
            return Ok(());
        }
        let parsed: Vec<SignedPublicKey> = if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        {
            let (keys, _) =
                SignedPublicKey::from_armor_many(bytes).map_err(|e| bad(e.to_string()))?;
            keys.collect::<Result<_, _>>().map_err(|e| bad(e.to_string()))?
        } else {
            SignedPublicKey::from_bytes_many(bytes)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?
        };
        if parsed.is_empty() {
            return Err(bad("no key in it".into()));
        }
        for key in parsed {
            key.verify_bindings().map_err(|e| bad(format!("self-signature: {e}")))?;
            self.gpg.push((path.to_owned(), Arc::new(key)));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.cosign.is_empty() && self.gpg.is_empty()
    }

    /// Verify a simple-signing signature file and return what it claims.
    pub fn verify_simple_signing(&self, signature: &[u8]) -> Result<SignedClaim, VerifyError> {
        let (message, payload) = read_signed_message(signature)?;
        if self.gpg.is_empty() {
            return Err(VerifyError::NoKey);
        }
        let claim = SignedClaim::parse(&payload)?;
        for (_, key) in &self.gpg {
            let subkeys = key.public_subkeys.iter().map(|k| k as &dyn pgp::types::VerifyingKey);
            let candidates =
                std::iter::once(key.as_ref() as &dyn pgp::types::VerifyingKey).chain(subkeys);
            for k in candidates {
                if message.verify(k).is_ok() {
                    return Ok(claim);
                }
            }
        }
        Err(VerifyError::BadSignature)
    }

    /// Verify a cosign signature (`signature_b64` from the layer annotation) over `payload`.
    pub fn verify_cosign(
        &self,
        payload: &[u8],
        signature_b64: &str,
    ) -> Result<SignedClaim, VerifyError> {
        use base64::Engine;
        use p256::ecdsa::Signature;
        use p256::ecdsa::signature::Verifier;
        if self.cosign.is_empty() {
            return Err(VerifyError::NoKey);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|e| VerifyError::Malformed(format!("base64: {e}")))?;
        let sig = Signature::from_der(&raw)
            .or_else(|_| Signature::from_slice(&raw))
            .map_err(|e| VerifyError::Malformed(format!("ECDSA signature: {e}")))?;
        let claim = SignedClaim::parse(payload)?;
        if self.cosign.iter().any(|(_, key)| key.verify(payload, &sig).is_ok()) {
            Ok(claim)
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// Check that `signature` is a simple-signing signature at all: an OpenPGP signed message
/// whose payload is a container signature (what a lookaside store must hold; whose key it
/// is, clients decide).
pub fn check_simple_signing(signature: &[u8]) -> Result<SignedClaim, VerifyError> {
    let (_, payload) = read_signed_message(signature)?;
    SignedClaim::parse(&payload)
}

/// Parse an OpenPGP signed message, decompressing as needed, and read its literal data (at
/// most [`MAX_SIGNATURE_SIZE`], whatever a compressed packet would expand to).
fn read_signed_message(bytes: &[u8]) -> Result<(pgp::composed::Message<'_>, Vec<u8>), VerifyError> {
    let bad = |e: &dyn std::fmt::Display| VerifyError::Malformed(format!("OpenPGP: {e}"));
    let mut message = pgp::composed::Message::from_bytes(bytes).map_err(|e| bad(&e))?;
    for _ in 0..2 {
        if message.is_compressed() {
            message = message.decompress().map_err(|e| bad(&e))?;
        }
    }
    if !message.is_signed() {
        return Err(VerifyError::Malformed("an OpenPGP message that is not signed".into()));
    }
    let mut payload = Vec::new();
    (&mut message).take(MAX_SIGNATURE_SIZE + 1).read_to_end(&mut payload).map_err(|e| bad(&e))?;
    if payload.len() as u64 > MAX_SIGNATURE_SIZE {
        return Err(VerifyError::Malformed("the signed payload is too large".into()));
    }
    Ok((message, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:5849ff45ed12504b46c04bf666c12c4a8d5236dfc282a12afeda49348d1ceb6c";

    fn claim(reference: &str) -> SignedClaim {
        SignedClaim { docker_reference: reference.into(), manifest_digest: D.parse().unwrap() }
    }

    #[test]
    fn identities_match_repository_and_tag_when_signed_with_one() {
        let d: Digest = D.parse().unwrap();
        let v1: Tag = "v1".parse().unwrap();
        let id = "reg.example:5000/app";
        assert_eq!(claim("reg.example:5000/app:v1").check(&d, id, Some(&v1)), Ok(()));
        assert_eq!(claim("reg.example:5000/app").check(&d, id, Some(&v1)), Ok(()));
        assert_eq!(claim(&format!("reg.example:5000/app@{D}")).check(&d, id, None), Ok(()));
        assert!(matches!(
            claim("reg.example:5000/app:v2").check(&d, id, Some(&v1)),
            Err(VerifyError::Identity { .. })
        ));
        assert!(matches!(
            claim("reg.example:5000/other:v1").check(&d, id, Some(&v1)),
            Err(VerifyError::Identity { .. })
        ));
        assert!(matches!(
            claim("evil.example/app:v1").check(&d, "reg.example:5000/app", Some(&v1)),
            Err(VerifyError::Identity { .. })
        ));
        let other: Digest = Digest::of(b"x");
        assert!(matches!(
            claim("reg.example:5000/app:v1").check(&other, id, Some(&v1)),
            Err(VerifyError::Digest { .. })
        ));
    }

    #[test]
    fn payloads_must_be_container_signatures() {
        let p = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/a"}},"image":{{"docker-manifest-digest":"{D}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(SignedClaim::parse(p.as_bytes()).unwrap().docker_reference, "r/a");
        let other = p.replace("cosign container image signature", "something else");
        assert!(matches!(SignedClaim::parse(other.as_bytes()), Err(VerifyError::Payload(_))));
        assert!(matches!(SignedClaim::parse(b"{}"), Err(VerifyError::Payload(_))));
        assert!(matches!(check_simple_signing(b"garbage"), Err(VerifyError::Malformed(_))));
        assert!(matches!(check_simple_signing(&[0u8; 100]), Err(VerifyError::Malformed(_))));
    }

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/testdata").join(name)
    }

    /// Vectors made with `skopeo copy --sign-by` (gpg) and `openssl dgst -sha256 -sign`.
    #[test]
    fn signatures_made_by_gpg_and_openssl_verify_and_tampering_does_not() {
        let gpg = TrustedKeys::load(&[testdata("simple-signing.pub.asc")]).unwrap();
        let cosign = TrustedKeys::load(&[testdata("cosign.pub")]).unwrap();
        let sig = std::fs::read(testdata("simple-signing.sig")).unwrap();
        let claim = gpg.verify_simple_signing(&sig).unwrap();
        assert_eq!(claim.manifest_digest.as_str(), D);
        assert_eq!(claim.docker_reference, "127.0.0.1:5111/signed:v1");
        assert_eq!(check_simple_signing(&sig).unwrap(), claim);
        assert_eq!(cosign.verify_simple_signing(&sig), Err(VerifyError::NoKey));
        let mut flipped = sig.clone();
        let n = flipped.len() - 20;
        flipped[n] ^= 1;
        assert!(gpg.verify_simple_signing(&flipped).is_err());

        let payload = std::fs::read(testdata("cosign.payload")).unwrap();
        let b64 = std::fs::read_to_string(testdata("cosign.sig.b64")).unwrap();
        let claim = cosign.verify_cosign(&payload, &b64).unwrap();
        assert_eq!(claim.docker_reference, "reg.example/app");
        assert_eq!(gpg.verify_cosign(&payload, &b64), Err(VerifyError::NoKey));
        let mut other = payload.clone();
        other[20] ^= 1;
        assert!(cosign.verify_cosign(&other, &b64).is_err());
        assert!(matches!(cosign.verify_cosign(&payload, "!!"), Err(VerifyError::Malformed(_))));
        // Both kinds in one set.
        let both = TrustedKeys::load(&[testdata("cosign.pub"), testdata("simple-signing.pub.asc")])
            .unwrap();
        assert!(both.verify_cosign(&payload, &b64).is_ok());
        assert!(both.verify_simple_signing(&sig).is_ok());
    }

    #[test]
    fn key_files_that_do_not_parse_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pub");
        std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .unwrap();
        let err = TrustedKeys::load(std::slice::from_ref(&path)).unwrap_err();
        assert!(err.to_string().contains("bad.pub"), "{err}");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(TrustedKeys::load(&[path]), Err(KeyError::Parse { .. })));
        let missing = dir.path().join("missing.pub");
        assert!(matches!(TrustedKeys::load(&[missing]), Err(KeyError::Read { .. })));
    }
}
