//! `wharf demo`: a small real image set generated in process (a linux/amd64 + linux/arm64
//! index and a second image sharing its layers; real gzip tar layers whose one program
//! says which architecture it is, see [`elf`]), written as OCI layouts and used as an
//! `oci:` upstream. Deterministic: same bytes, same digests, every run. [`network`] is
//! the living demo around them: mirrors, pretend clients and traffic.

pub mod elf;
pub mod geoip;
pub mod network;

use std::io::Write;
use std::path::Path;

use crate::model::{Digest, media_type};

/// The demo's repositories and tags.
pub const IMAGES: [(&str, &str); 2] = [("demo/multi", "latest"), ("demo/app", "1.0")];

const MTIME: u64 = 1_700_000_000;

struct Blob {
    digest: Digest,
    size: u64,
    media_type: &'static str,
}

struct Layout<'a> {
    dir: &'a Path,
    /// The configs and layers put so far: what a pull of this repository fetches as blobs.
    blobs: std::cell::RefCell<Vec<Digest>>,
}

impl Layout<'_> {
    fn put(&self, media_type: &'static str, bytes: &[u8]) -> std::io::Result<Blob> {
        let digest = Digest::of(bytes);
        let dir = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(digest.hex()), bytes)?;
        if !media_type::is_supported(media_type) {
            self.blobs.borrow_mut().push(digest.clone());
        }
        Ok(Blob { digest, size: bytes.len() as u64, media_type })
    }

    fn finish(&self, tag: &str, top: &Blob) -> std::io::Result<()> {
        std::fs::write(self.dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": top.media_type,
                "digest": top.digest.as_str(),
                "size": top.size,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)
    }
}

fn descriptor(b: &Blob) -> serde_json::Value {
    serde_json::json!({ "mediaType": b.media_type, "digest": b.digest.as_str(), "size": b.size })
}

/// A gzip tar layer of `files` (path, content, mode); returns (compressed, diff_id).
fn layer(files: &[(&str, &[u8], u32)]) -> std::io::Result<(Vec<u8>, Digest)> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, ..) in files {
        let mut acc = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map(|(_, d)| d).unwrap_or(&[])
        {
            acc.push_str(part);
            acc.push('/');
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(MTIME);
        h.set_size(0);
        tar.append_data(&mut h, d, std::io::empty())?;
    }
    for (path, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_mtime(MTIME);
        h.set_size(content.len() as u64);
        tar.append_data(&mut h, path, *content)?;
    }
    let raw = tar.into_inner()?;
    let diff_id = Digest::of(&raw);
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw)?;
    Ok((gz.finish()?, diff_id))
}

fn image(l: &Layout, arch: &str, layers: &[(&Blob, &Digest)]) -> std::io::Result<Blob> {
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": { "Env": ["PATH=/usr/bin:/bin"], "Entrypoint": [PROGRAM_PATH] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>() },
    });
    let config =
        l.put("application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor(&config),
        "layers": layers.iter().map(|(b, _)| descriptor(b)).collect::<Vec<_>>(),
    });
    l.put(media_type::OCI_MANIFEST, &serde_json::to_vec(&manifest)?)
}

/// Where the images' program is, their entrypoint.
const PROGRAM_PATH: &str = "/usr/bin/wharf-demo";

/// What the program in the image for `arch` prints.
pub fn greeting(arch: &str) -> String {
    format!("Hello from the Wharf demo image: this is linux/{arch}.\n")
}

/// The layer that makes an image `arch`'s: its program and `/etc/arch`.
fn arch_layer(arch: &str) -> std::io::Result<(Vec<u8>, Digest)> {
    let program = elf::hello(arch, &greeting(arch)).expect("an architecture the demo builds");
    layer(&[("etc/arch", arch.as_bytes(), 0o644), (&PROGRAM_PATH[1..], &program, 0o755)])
}

/// Write the demo layouts under `dir` (`dir/demo/multi`, `dir/demo/app`); returns each
/// repository's blobs (configs and layers, in the order written).
pub fn write_sample_images(dir: &Path) -> std::io::Result<Vec<(&'static str, Vec<Digest>)>> {
    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    let readme = "This image was generated by `wharf demo`.\n".repeat(64);
    let (base, base_id) = layer(&[
        ("etc/os-release", b"NAME=\"Wharf demo\"\nID=wharf-demo\n", 0o644),
        ("usr/share/wharf/README", readme.as_bytes(), 0o644),
    ])?;

    let multi = Layout { dir: &dir.join("demo/multi"), blobs: Default::default() };
    let base_blob = multi.put(GZ, &base)?;
    let mut children = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let (own, own_id) = arch_layer(arch)?;
        let own_blob = multi.put(GZ, &own)?;
        let m = image(&multi, arch, &[(&base_blob, &base_id), (&own_blob, &own_id)])?;
        let mut platform = serde_json::json!({ "os": "linux", "architecture": arch });
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        let mut d = descriptor(&m);
        d["platform"] = platform;
        children.push(d);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": children,
    });
    let index = multi.put(media_type::OCI_INDEX, &serde_json::to_vec(&index)?)?;
    multi.finish(IMAGES[0].1, &index)?;

    // The second image shares the base and the amd64 layer with the first.
    let app = Layout { dir: &dir.join("demo/app"), blobs: Default::default() };
    let base_blob = app.put(GZ, &base)?;
    let (program, program_id) = arch_layer("amd64")?;
    let program_blob = app.put(GZ, &program)?;
    let (own, own_id) = layer(&[("srv/app/hello.txt", b"hello from the wharf demo\n", 0o644)])?;
    let own_blob = app.put(GZ, &own)?;
    let layers = [(&base_blob, &base_id), (&program_blob, &program_id), (&own_blob, &own_id)];
    let m = image(&app, "amd64", &layers)?;
    app.finish(IMAGES[1].1, &m)?;
    Ok(vec![(IMAGES[0].0, multi.blobs.take()), (IMAGES[1].0, app.blobs.take())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_images_are_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_sample_images(a.path()).unwrap();
        write_sample_images(b.path()).unwrap();
        for (repo, _) in IMAGES {
            let ia = std::fs::read(a.path().join(repo).join("index.json")).unwrap();
            let ib = std::fs::read(b.path().join(repo).join("index.json")).unwrap();
            assert_eq!(ia, ib, "{repo}");
        }
        // The shared base layer is byte-identical in both layouts.
        let blobs = |r: &str| -> std::collections::BTreeSet<_> {
            std::fs::read_dir(a.path().join(r).join("blobs/sha256"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect()
        };
        assert!(blobs("demo/multi").intersection(&blobs("demo/app")).count() >= 1);
    }
}
