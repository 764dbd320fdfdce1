//! Generates large, realistic-shaped test inputs for Wharf's scale benchmark
//! (`bench/scale.sh`): catalogs of thousands of repositories are generated, never committed.
//!
//! - `catalog` writes an `oci:` upstream (what `src/sync/oci_dir.rs` reads) into an empty
//!   DIR: one OCI image layout per repository at `DIR/lib/rNNNN/`. Every image has `--layers`
//!   layers: a base layer shared by every repository (one of 8 per architecture, written once
//!   under `DIR/.shared` and hardlinked into each layout, so it costs no bytes; `.shared`
//!   holds no `oci-layout`, so it is no repository), a middle layer shared by the tags of one
//!   repository (one of 3 per architecture) and unique top layers; plus a unique config and
//!   manifest. One tag in ten is a linux/amd64 + linux/arm64 OCI index, one in ten uses
//!   Docker schema 2 media types, the rest are OCI image manifests. Blobs are tens of bytes
//!   (not real tars: the catalog exercises sync, store and redirects, not unpacking); with the
//!   default 8 layers, 10,000 repositories x 10 tags make about 930,000 pool files.
//!   With `--sboms`, every tag also gets an SBOM (an artifact manifest naming the tag's
//!   manifest as its subject) listed by the OCI referrers fallback tag `sha256-<hex>`.
//! - `touch` moves the first tag of the I-th repository (by name) to a new manifest with a
//!   new unique top layer (another on every call), for "one tag changed" measurements.
//! - `mirrors` prints mirror records as TSV: name, url, country, bandwidth, netblock.
//!
//! Output depends only on the arguments and `--seed` (except `touch`'s, which must differ).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Base layers per architecture, shared by every repository.
const BASES: usize = 8;
/// Middle layers per architecture, shared by the tags of one repository.
const MIDDLES: usize = 3;
const ARCHES: [&str; 2] = ["amd64", "arm64"];
/// Countries for `mirrors` (all in `src/model/geography.rs`), spread over every continent.
const COUNTRIES: [&str; 64] = [
    "DE", "FR", "US", "JP", "BR", "GB", "NL", "SE", "PL", "IT", "ES", "CA", "AU", "IN", "ZA", "KR",
    "CN", "RU", "MX", "AR", "CH", "AT", "BE", "DK", "FI", "NO", "IE", "PT", "CZ", "SK", "HU", "RO",
    "BG", "GR", "TR", "IL", "AE", "SA", "EG", "NG", "KE", "MA", "TW", "HK", "SG", "MY", "TH", "VN",
    "ID", "PH", "NZ", "CL", "CO", "PE", "UY", "EC", "UA", "LT", "LV", "EE", "SI", "HR", "IS", "KZ",
];

#[derive(Parser)]
#[command(about = "Generate catalogs, tag changes and mirror lists for bench/scale.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Everything generated depends only on the arguments and this.
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Write an `oci:` upstream of REPOS repositories with TAGS tags each into DIR.
    Catalog {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        repos: usize,
        #[arg(long)]
        tags: usize,
        /// Layers per image: 1 base, 1 middle, the rest unique to the tag.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=64))]
        layers: u32,
        /// Give every tag an SBOM behind the OCI referrers fallback tag.
        #[arg(long)]
        sboms: bool,
    },
    /// Move the first tag of repository number I (sorted by name) to a new manifest.
    Touch {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, value_name = "I")]
        repo_index: usize,
    },
    /// Print COUNT mirrors as TSV lines: name, url, country, bandwidth, netblock (or empty).
    Mirrors {
        #[arg(long)]
        count: usize,
        /// Each mirror's URL is this prefix, its name and "/".
        #[arg(long, value_name = "URL_PREFIX")]
        base_url: String,
    },
}

fn main() -> Result<()> {
    let Cli { command, seed } = Cli::parse();
    match command {
        Command::Catalog { out, repos, tags, layers, sboms } => {
            catalog(&out, repos, tags, layers as usize, sboms, seed)
        }
        Command::Touch { out, repo_index } => touch(&out, repo_index, seed),
        Command::Mirrors { count, base_url } => {
            mirrors(count, &base_url, seed);
            Ok(())
        }
    }
}

/// Running totals of a `catalog` run, shared by its threads. Blobs other than the base
/// layers are unique to their repository by construction, so each layout counts its own.
#[derive(Default)]
struct Totals {
    pool_files: AtomicU64,
    bytes: AtomicU64,
    manifests: AtomicU64,
    multi_arch: AtomicU64,
    docker: AtomicU64,
    sboms: AtomicU64,
}

/// What every layout of a catalog shares.
struct Catalog {
    shared: PathBuf,
    seed: u64,
    layers: usize,
    sboms: bool,
    totals: Totals,
}

/// One repository's layout being written: its blob directory and what is already in it.
struct Layout<'a> {
    cat: &'a Catalog,
    name: String,
    blobs: PathBuf,
    written: HashSet<String>,
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Layout<'_> {
    /// Add `bytes` as a blob of this layout (a base layer: hardlinked from `.shared`, where the
    /// first layout to use it writes it); returns its descriptor.
    fn put(&mut self, bytes: &[u8], media_type: &str, base: bool) -> Result<Value> {
        let hex = hex::encode(Sha256::digest(bytes));
        if self.written.insert(hex.clone()) {
            let (to, shared) = (self.blobs.join(&hex), self.cat.shared.join(&hex));
            let path = if base { &shared } else { &to };
            match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    f.write_all(bytes)?;
                    count(&self.cat.totals.pool_files, 1);
                    count(&self.cat.totals.bytes, bytes.len() as u64);
                }
                Err(e) if base && e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
            }
            if base {
                std::fs::hard_link(&shared, &to)
                    .with_context(|| format!("linking {}", to.display()))?;
            }
        }
        let digest = format!("sha256:{hex}");
        Ok(json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() }))
    }

    /// One image of `tag` for `ARCHES[a]`: layers, config and manifest; returns its descriptor.
    fn image(&mut self, rng: &mut StdRng, tag: &str, a: usize, docker: bool) -> Result<Value> {
        let (manifest_type, config_type, layer_type) = match docker {
            true => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
            false => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
        };
        let (name, seed, arch) = (self.name.clone(), self.cat.seed, ARCHES[a]);
        let base = format!("base {arch} #{} seed {seed}\n", rng.random_range(0..BASES));
        let mut layers = vec![self.put(base.as_bytes(), layer_type, true)?];
        let middle =
            format!("middle {name} {arch} #{} seed {seed}\n", rng.random_range(0..MIDDLES));
        layers.push(self.put(middle.as_bytes(), layer_type, false)?);
        for k in 2..self.cat.layers {
            let top = format!("top {name}:{tag} {arch} #{k} seed {seed}\n");
            layers.push(self.put(top.as_bytes(), layer_type, false)?);
        }
        let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": { "Labels": { "generated-from": format!("{name}:{tag}") } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = self.put(&serde_json::to_vec(&config)?, config_type, false)?;
        let manifest = json!({ "schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": layers });
        count(&self.cat.totals.manifests, 1);
        self.put(&serde_json::to_vec(&manifest)?, manifest_type, false)
    }

    /// One tag: an amd64 image (OCI or Docker) or an amd64 + arm64 OCI index.
    fn tag(&mut self, rng: &mut StdRng, tag: &str) -> Result<Value> {
        let mut desc = match rng.random_range(0..10) {
            0 => {
                let mut children = Vec::new();
                for (a, arch) in ARCHES.iter().enumerate() {
                    let mut child = self.image(rng, tag, a, false)?;
                    child["platform"] = json!({ "architecture": arch, "os": "linux" });
                    children.push(child);
                }
                let index =
                    json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children });
                count(&self.cat.totals.manifests, 1);
                count(&self.cat.totals.multi_arch, 1);
                self.put(&serde_json::to_vec(&index)?, OCI_INDEX, false)?
            }
            1 => {
                count(&self.cat.totals.docker, 1);
                self.image(rng, tag, 0, true)?
            }
            _ => self.image(rng, tag, 0, false)?,
        };
        desc["annotations"] = json!({ REF_NAME: tag });
        Ok(desc)
    }

    /// An SBOM of the manifest `subject` (an artifact with one layer) and the OCI fallback
    /// tag's index listing it; returns the index's descriptor, tagged `sha256-<hex>`.
    fn sbom(&mut self, subject: &Value, tag: &str) -> Result<Value> {
        const SPDX: &str = "application/spdx+json";
        let doc = format!("{{\"spdxVersion\":\"SPDX-2.3\",\"name\":\"{}:{tag}\"}}", self.name);
        let layer = self.put(doc.as_bytes(), SPDX, false)?;
        let config = self.put(b"{}", "application/vnd.oci.empty.v1+json", false)?;
        let mut subject = subject.clone();
        subject.as_object_mut().map(|s| s.remove("annotations"));
        let sbom = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SPDX,
            "config": config, "layers": [layer], "subject": subject,
            "annotations": { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
        });
        let mut sbom = self.put(&serde_json::to_vec(&sbom)?, OCI_MANIFEST, false)?;
        sbom["artifactType"] = json!(SPDX);
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sbom] });
        let mut desc = self.put(&serde_json::to_vec(&index)?, OCI_INDEX, false)?;
        count(&self.cat.totals.manifests, 2);
        count(&self.cat.totals.sboms, 1);
        let hex = subject["digest"].as_str().unwrap_or_default().trim_start_matches("sha256:");
        desc["annotations"] = json!({ REF_NAME: format!("sha256-{hex}") });
        Ok(desc)
    }
}

fn catalog(
    out: &Path,
    repos: usize,
    tags: usize,
    layers: usize,
    sboms: bool,
    seed: u64,
) -> Result<()> {
    let started = Instant::now();
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!("{} is not empty", out.display());
    }
    let cat =
        Catalog { shared: out.join(".shared"), seed, layers, sboms, totals: Totals::default() };
    std::fs::create_dir_all(&cat.shared)?;
    let width = repos.to_string().len();
    let write_repo = |r: usize| -> Result<()> {
        let name = format!("lib/r{r:0width$}");
        let (dir, blobs) = (out.join(&name), out.join(&name).join("blobs/sha256"));
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let mut layout = Layout { cat: &cat, name, blobs, written: HashSet::new() };
        let mut rng = StdRng::seed_from_u64(seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut descs = Vec::new();
        for t in 0..tags {
            let tag = if t == 0 { "latest".to_owned() } else { format!("v{t}") };
            let desc = layout.tag(&mut rng, &tag)?;
            if cat.sboms {
                descs.push(layout.sbom(&desc, &tag)?);
            }
            descs.push(desc);
        }
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs });
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?)
    };
    // Repositories are independent: one thread per core, each taking every n-th one.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let write_repo = &write_repo;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|w| s.spawn(move || (w..repos).step_by(threads).try_for_each(write_repo)))
            .collect();
        workers.into_iter().try_for_each(|h| h.join().expect("worker panicked"))
    })?;
    let t = &cat.totals;
    let [multi, docker, manifests, files, bytes, sboms] =
        [&t.multi_arch, &t.docker, &t.manifests, &t.pool_files, &t.bytes, &t.sboms]
            .map(|c| c.load(Ordering::Relaxed));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "catalog {}: {repos} repos, {} tags ({multi} multi-arch, {docker} docker, {sboms} with an SBOM), {manifests} manifests, {files} pool files, {bytes} bytes, {secs:.1} s",
        out.display(),
        repos * tags,
    );
    Ok(())
}

fn touch(out: &Path, repo_index: usize, seed: u64) -> Result<()> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(out.join("lib"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    all.sort();
    let dir = all.get(repo_index).with_context(|| {
        format!("{} has {} repositories, no number {repo_index}", out.display(), all.len())
    })?;
    let blobs = dir.join("blobs/sha256");
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let nonce = format!("{nanos} pid {} seed {seed}", std::process::id());
    retarget(&blobs, &mut index["manifests"][0], &nonce)?;
    let tmp = dir.join("index.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&index)?)?;
    std::fs::rename(&tmp, &index_path)?;
    let (desc, name) = (&index["manifests"][0], dir.strip_prefix(out).unwrap_or(dir).display());
    let tag = desc["annotations"][REF_NAME].as_str().unwrap_or("?");
    println!("touched {name}:{tag} -> {}", desc["digest"].as_str().unwrap_or("?"));
    Ok(())
}

/// Point descriptor `desc` at a new version of its manifest: for an image, a new top layer
/// (and config); for an index, a new first child.
fn retarget(blobs: &Path, desc: &mut Value, nonce: &str) -> Result<()> {
    let read = |d: &Value| -> Result<Value> {
        let hex =
            d["digest"].as_str().and_then(|s| s.strip_prefix("sha256:")).context("bad digest")?;
        Ok(serde_json::from_slice(&std::fs::read(blobs.join(hex))?)?)
    };
    let put = |d: &mut Value, bytes: &[u8]| -> Result<()> {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes)?;
        d["digest"] = json!(format!("sha256:{hex}"));
        d["size"] = json!(bytes.len());
        Ok(())
    };
    let mut manifest = read(desc)?;
    if manifest.get("manifests").is_some() {
        retarget(blobs, &mut manifest["manifests"][0], nonce)?;
    } else {
        let top =
            manifest["layers"].as_array_mut().and_then(|l| l.last_mut()).context("no layers")?;
        put(top, format!("touched {nonce}\n").as_bytes())?;
        let top_digest = top["digest"].clone();
        let mut config = read(&manifest["config"])?;
        if let Some(last) = config["rootfs"]["diff_ids"].as_array_mut().and_then(|d| d.last_mut()) {
            *last = top_digest;
        }
        put(&mut manifest["config"], &serde_json::to_vec(&config)?)?;
    }
    put(desc, &serde_json::to_vec(&manifest)?)
}

fn mirrors(count: usize, base_url: &str, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut countries = COUNTRIES;
    countries.shuffle(&mut rng);
    let width = count.saturating_sub(1).to_string().len();
    for i in 0..count {
        let name = format!("m{i:0width$}");
        let bandwidth = rng.random_range(1..=100) * 100;
        let netblock =
            if rng.random_bool(0.1) { format!("10.{}.0.0/16", i % 256) } else { String::new() };
        let country = countries[i % countries.len()];
        println!("{name}\t{base_url}{name}/\t{country}\t{bandwidth}\t{netblock}");
    }
}
