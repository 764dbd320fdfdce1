//! Signing for tests, with the real tools: a GPG key in a private `GNUPGHOME` and
//! `skopeo copy --sign-by` writing a lookaside directory (simple signing); an ECDSA P-256
//! key and signatures made with `openssl` the way cosign makes them; OCI layouts of
//! artifacts (SBOMs, signature manifests, referrer indexes) written here and pushed with
//! skopeo.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::harness::*;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
pub const COSIGN_PAYLOAD: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// A GPG signing key in a private keyring; its agent is stopped on drop.
pub struct Gpg {
    pub home: tempfile::TempDir,
    pub fingerprint: String,
    /// `gpg --export` of the public key.
    pub public_key: PathBuf,
}

impl Gpg {
    pub async fn new(name: &str) -> Gpg {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gpg = |args: &[&str]| {
            let mut c = Command::new(require("gpg"));
            c.env("GNUPGHOME", home.path()).arg("--batch").args(args);
            c
        };
        run(&mut gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <{name}@example.org>"),
            "rsa2048",
            "sign",
            "never",
        ]))
        .await;
        let listing = run(&mut gpg(&["--list-keys", "--with-colons"])).await;
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_owned()))
            .expect("a fingerprint");
        let public_key = home.path().join("public.gpg");
        let out = gpg(&["--output"]).arg(&public_key).args(["--export", &fingerprint]).output();
        assert!(out.await.unwrap().status.success());
        Gpg { home, fingerprint, public_key }
    }

    /// `skopeo copy --sign-by` the fixture layout `src` to `<registry>/<dest>`, writing the
    /// signature into `lookaside` (as `<repo>@sha256=<hex>/signature-1`).
    pub async fn push_signed(
        &self,
        reg: &Registry,
        src: &str,
        dest: &str,
        lookaside: &Path,
        extra: &[&str],
    ) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("staging.yaml"),
            format!(
                "docker:\n  {}:\n    lookaside-staging: file://{}\n",
                reg.host(),
                lookaside.display()
            ),
        )
        .unwrap();
        run(skopeo()
            .env("GNUPGHOME", self.home.path())
            .arg("--registries.d")
            .arg(d.path())
            .args(["copy", "--dest-tls-verify=false", "--sign-by", &self.fingerprint])
            .args(extra)
            .arg(format!("oci:{}/{src}", fixtures().display()))
            .arg(format!("docker://{}/{dest}", reg.host())))
        .await;
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// An ECDSA P-256 key pair made with openssl, as `cosign generate-key-pair` makes one.
pub struct EcKey {
    pub dir: tempfile::TempDir,
    pub private_key: PathBuf,
    /// PEM `PUBLIC KEY` (what `cosign.pub` holds).
    pub public_key: PathBuf,
}

impl EcKey {
    pub async fn new() -> EcKey {
        let dir = tempfile::tempdir().unwrap();
        let (private_key, public_key) = (dir.path().join("ec.key"), dir.path().join("ec.pub"));
        let openssl = || Command::new(require("openssl"));
        run(openssl()
            .args(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out"])
            .arg(&private_key))
        .await;
        run(openssl()
            .args(["ec", "-pubout", "-in"])
            .arg(&private_key)
            .arg("-out")
            .arg(&public_key))
        .await;
        EcKey { dir, private_key, public_key }
    }

    /// `openssl dgst -sha256 -sign` over `payload`: a DER ECDSA signature, as cosign signs.
    pub async fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let p = self.dir.path().join("payload");
        std::fs::write(&p, payload).unwrap();
        let sig = self.dir.path().join("sig.der");
        run(Command::new(require("openssl"))
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.private_key)
            .arg("-out")
            .arg(&sig)
            .arg(&p))
        .await;
        std::fs::read(sig).unwrap()
    }
}

/// Cosign's simple-signing payload for `digest` signed as `identity` (`host/repo`).
pub fn cosign_payload(identity: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": identity },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An OCI image layout written by hand: blobs, manifests and the tags naming them.
pub struct Layout {
    pub dir: tempfile::TempDir,
    refs: Vec<serde_json::Value>,
}

impl Default for Layout {
    fn default() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir, refs: Vec::new() }
    }
}

impl Layout {
    /// Store `bytes` as a blob; its descriptor fields (digest, size).
    pub fn blob(&self, bytes: &[u8]) -> (String, usize) {
        let d = sha256(bytes);
        std::fs::write(self.dir.path().join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    }

    /// Store a manifest (JSON) and name it `tag` in the layout; its digest and size.
    pub fn manifest(&mut self, manifest: &serde_json::Value, tag: &str) -> (String, usize) {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let (d, size) = self.blob(&bytes);
        let mt = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
        self.refs.push(serde_json::json!({
            "mediaType": mt, "digest": d, "size": size,
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }));
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": self.refs });
        std::fs::write(self.dir.path().join("index.json"), serde_json::to_vec(&index).unwrap())
            .unwrap();
        (d, size)
    }

    /// An artifact manifest of `artifact_type` with one layer `content`, naming `subject`.
    pub fn artifact(
        &mut self,
        tag: &str,
        artifact_type: &str,
        content: &[u8],
        subject: (&str, usize),
        annotations: serde_json::Value,
    ) -> (String, usize) {
        let (cd, cs) = self.blob(b"{}");
        let (ld, ls) = self.blob(content);
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": { "mediaType": EMPTY_CONFIG, "digest": cd, "size": cs },
            "layers": [{ "mediaType": artifact_type, "digest": ld, "size": ls }],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1 },
            "annotations": annotations,
        });
        self.manifest(&m, tag)
    }

    /// A cosign signature manifest (tag scheme): one payload layer with the base64 signature
    /// in its annotation.
    pub fn cosign_signature(&mut self, tag: &str, payload: &[u8], der: &[u8]) -> (String, usize) {
        use base64::Engine;
        let (pd, ps) = self.blob(payload);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": { "type": "layers", "diff_ids": [pd] },
        }))
        .unwrap();
        let (cd, cs) = self.blob(&config);
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs },
            "layers": [{
                "mediaType": COSIGN_PAYLOAD, "digest": pd, "size": ps,
                "annotations": {
                    "dev.cosignproject.cosign/signature":
                        base64::engine::general_purpose::STANDARD.encode(der),
                },
            }],
        });
        self.manifest(&m, tag)
    }

    /// An index listing `referrers` (digest, size, artifact type): the OCI fallback tag's.
    pub fn referrer_index(
        &mut self,
        tag: &str,
        referrers: &[(String, usize, &str)],
    ) -> (String, usize) {
        let manifests: Vec<serde_json::Value> = referrers
            .iter()
            .map(|(d, s, t)| serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": d, "size": s, "artifactType": t }))
            .collect();
        let m = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        self.manifest(&m, tag)
    }

    /// `skopeo copy` the layout's `tag` to `<registry>/<dest>` (`--all`: an index and what it
    /// lists).
    pub async fn push(&self, reg: &Registry, tag: &str, dest: &str) {
        run(skopeo()
            .args(["copy", "--all", "--dest-tls-verify=false", "--retry-times", "2"])
            .arg(format!("oci:{}:{tag}", self.dir.path().display()))
            .arg(format!("docker://{}/{dest}", reg.host())))
        .await;
    }
}

/// GET a manifest through Wharf as an OCI client asks for one.
pub async fn get_oci_manifest(wharf: &Wharf, repo: &str, reference: &str) -> reqwest::Response {
    http()
        .get(wharf.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

/// `skopeo delete` a manifest upstream (every tag pointing to it goes).
pub async fn delete_upstream(reg: &Registry, reference: &str) {
    run(skopeo()
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}/{reference}", reg.host())))
    .await;
}

/// The digest (and size) a tag points to in a registry, by HEAD.
pub async fn upstream_digest(registry_url: &str, repo: &str, tag: &str) -> (String, usize) {
    let r = http()
        .head(format!("{registry_url}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            format!(
                "{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json"
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}:{tag}");
    let d = r.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    let n = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    (d, n)
}
