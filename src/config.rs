//! Configuration: defaults -> TOML file -> env `WHARF__SECTION__KEY` -> CLI overrides, parsed
//! into [`RawConfig`] (unknown keys rejected) and validated once into [`Config`]. Leaf module.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the config file is looked for when neither `--config` nor `WHARF_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wharf/wharf.toml";

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("{key}: {reason}")]
    Key { key: &'static str, reason: String },
}

fn key_err(key: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Key { key, reason: reason.to_string() }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub upstream: RawUpstream,
    pub schedule: RawSchedule,
    pub sync: RawSync,
    pub mirrors: RawMirrors,
    pub crawl: RawCrawl,
    pub geoip: RawGeoip,
    pub admin: RawAdmin,
    pub hooks: RawHooks,
    pub log: RawLog,
    pub public: RawPublic,
    pub notify: RawNotify,
}

/// `[notify]`: telling mirror admins (and operators) when their mirror is disabled
/// automatically, re-enabled, or falls behind.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotify {
    /// Tell when a mirror's verified generation is this many behind the current one; 0: never.
    pub lag_generations: u64,
    /// Operators' addresses, told about every mirror as well as its owner.
    pub operators: Vec<String>,
    /// At most one notice per mirror in this time.
    pub min_interval: String,
    /// POST each notice as JSON here too (optional).
    pub webhook_url: String,
    /// The SMTP server; empty: no e-mail.
    pub smtp_host: String,
    /// Default 587 (starttls), 465 (tls) or 25 (none).
    pub smtp_port: Option<u16>,
    /// `starttls`, `tls` (implicit TLS) or `none` (only to a trusted local relay).
    pub smtp_security: String,
    pub smtp_username: String,
    /// The password, read from this file (required with a user name).
    pub smtp_password_file: String,
    /// The sender, e.g. `Wharf <wharf@example.org>`.
    pub from: String,
    /// CA certificates (PEM) the SMTP server's certificate may also chain to, besides the
    /// system's: a relay with an internal CA.
    pub smtp_ca_file: String,
}

impl Default for RawNotify {
    fn default() -> Self {
        RawNotify {
            lag_generations: 3,
            operators: Vec::new(),
            min_interval: "1h".into(),
            webhook_url: String::new(),
            smtp_host: String::new(),
            smtp_port: None,
            smtp_security: "starttls".into(),
            smtp_username: String::new(),
            smtp_password_file: String::new(),
            from: String::new(),
            smtp_ca_file: String::new(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPublic {
    /// The public pages (`/mirrors`, `/api/v1/...`); the pull API is always on.
    pub enabled: bool,
    /// The site's name on every public page.
    pub title: String,
    /// A line under it (plain text).
    pub description: String,
}

impl Default for RawPublic {
    fn default() -> Self {
        RawPublic { enabled: true, title: "Wharf".into(), description: String::new() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub public_url: Option<String>,
    /// Peers whose forwarding header and `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<String>,
    /// Which forwarding header the trusted proxies set: `x-forwarded-for` or `forwarded`.
    /// Only that one is read; the proxies must overwrite (or clear) it, see docs/operators.md.
    pub forwarded_header: String,
    /// An HTTPS listener (HTTP/2 via ALPN), besides the HTTP one.
    pub tls_listen: Option<String>,
    /// PEM certificate chain and private key of the HTTPS listener; reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long a client may take to send its request head before it gets 408.
    pub client_timeout: String,
    /// Idle keep-alive connections are closed after this long.
    pub keep_alive: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:5000".into(),
            public_url: None,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            client_timeout: "10s".into(),
            keep_alive: "30s".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHooks {
    /// A file holding the shared secret the upstream registry sends as
    /// `Authorization: Bearer <secret>`; absent: `POST /hooks/registry` is off.
    pub secret_file: Option<PathBuf>,
    /// Pushes arriving within this long are synced together.
    pub debounce: String,
}

impl Default for RawHooks {
    fn default() -> Self {
        RawHooks { secret_file: None, debounce: "2s".into() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A tracing filter: `info`, `debug`, `wharf=debug,actix_web=info`. `RUST_LOG` wins.
    pub level: String,
    /// `text` (for a terminal) or `json` (one object a line, for journald and ingestion).
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { level: "info".into(), format: "text".into() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub data_dir: PathBuf,
    pub tree_dir: Option<PathBuf>,
    pub gc_grace: String,
    /// The store's page cache in MiB (inside the process).
    pub cache_mib: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            data_dir: "/var/lib/wharf".into(),
            tree_dir: None,
            gc_grace: "7days".into(),
            cache_mib: 64,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: String,
    pub repositories: Option<Vec<String>>,
    pub tags: Option<String>,
    pub username: String,
    pub password_file: String,
    /// The upstream's simple-signing signature store (`<repo>@sha256=<hex>/signature-N`),
    /// an http(s) URL; empty: none.
    pub lookaside: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSchedule {
    pub sync: String,
    pub crawl: String,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule { sync: "0 */10 * * * *".into(), crawl: "0 5-59/15 * * * *".into() }
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawMirrors {
    /// Where blobs go when no mirror qualifies; default `<public_url>/tree/`.
    pub fallback_url: Option<String>,
    /// Send clients only to https mirror URLs.
    pub require_https: bool,
    /// The rsync URL mirrors copy the tree from (shown to mirror admins); default
    /// `rsync://<public host>/wharf/`.
    pub rsync_url: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// A separate listener for `/admin/`; absent: the admin UI is on the main listener.
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCrawl {
    /// Mirrors crawled at once.
    pub concurrency: usize,
    /// Timeout of one request to a mirror.
    pub request_timeout: String,
    /// Time one mirror's crawl may take.
    pub mirror_timeout: String,
    /// Time a whole crawl run may take.
    pub total_timeout: String,
    /// Blobs new in the claimed generation checked (HEAD), at most.
    pub new_blobs: usize,
    /// Older blobs checked at random (HEAD).
    pub random_blobs: usize,
    /// Blobs downloaded in full and hashed.
    pub downloads: usize,
    /// Consecutive failed crawls before a mirror is disabled automatically.
    pub max_failures: u32,
    /// Let the crawler connect to loopback, private, link-local and other special-purpose
    /// addresses (tests, or a mirror network inside one organisation). Off: a mirror URL
    /// cannot make the crawler a proxy into the operator's network.
    pub allow_private_addresses: bool,
}

impl Default for RawCrawl {
    fn default() -> Self {
        RawCrawl {
            concurrency: 8,
            request_timeout: "10s".into(),
            mirror_timeout: "2min".into(),
            total_timeout: "10min".into(),
            new_blobs: 50,
            random_blobs: 20,
            downloads: 2,
            max_failures: 4,
            allow_private_addresses: false,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawGeoip {
    /// A MaxMind City or Country database (GeoLite2-City.mmdb).
    pub database: Option<PathBuf>,
    /// A MaxMind ASN database (GeoLite2-ASN.mmdb).
    pub asn_database: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSync {
    /// Blob downloads in flight at once.
    pub concurrency: usize,
    /// Attempts per upstream request on 5xx, 429, resets and timeouts.
    pub retries: u32,
    /// Timeout to connect and for each upstream request that is not a blob body.
    pub request_timeout: String,
    /// Timeout for one whole blob download.
    pub blob_timeout: String,
    /// `n` asked for per page of the upstream's `_catalog` and `tags/list`.
    pub page_size: u32,
    /// Sync what refers to each synced manifest (signatures, attestations, SBOMs): the
    /// upstream's referrers API, the OCI fallback tag and cosign's tags.
    pub referrers: bool,
    /// Only referrers of these artifact types; empty: all.
    pub referrer_artifact_types: Vec<String>,
    /// `[sync.policy]`: publish only signed tags.
    pub policy: RawPolicy,
}

/// `[sync.policy]`: which tags may be published.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    /// Publish a tag only when a signature of its manifest verifies against one of `keys`.
    pub require_signature: bool,
    /// Public key files: PEM ECDSA P-256 (cosign) and/or OpenPGP (simple signing).
    pub keys: Vec<PathBuf>,
    /// The identity signatures must name (`host[:port][/path]`, the repository appended);
    /// default: the upstream registry's host.
    pub identity: String,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            concurrency: 4,
            retries: 4,
            request_timeout: "30s".into(),
            blob_timeout: "30min".into(),
            page_size: 1000,
            referrers: true,
            referrer_artifact_types: Vec::new(),
            policy: RawPolicy::default(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    pub data_dir: PathBuf,
    pub tree_dir: PathBuf,
    pub gc_grace: Duration,
    /// The store's page cache, in bytes.
    pub store_cache: usize,
    pub upstream: UpstreamConfig,
    pub sync_schedule: String,
    pub sync: SyncSettings,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub forwarded_header: ForwardedHeader,
    /// Base URL of the fallback tree, ending in `/`.
    pub fallback_url: String,
    pub require_https: bool,
    pub crawl_schedule: String,
    pub crawl: CrawlSettings,
    pub geoip_database: Option<PathBuf>,
    pub asn_database: Option<PathBuf>,
    /// Ends in `/`.
    pub rsync_url: String,
    /// `None`: the admin UI is served under `/admin/` on `listen`.
    pub admin_listen: Option<SocketAddr>,
    pub tls: Option<TlsSettings>,
    pub client_timeout: Duration,
    pub keep_alive: Duration,
    /// The webhook's shared secret; `None`: the webhook is off.
    pub hook_secret: Option<Secret>,
    pub hook_debounce: Duration,
    pub log_level: String,
    pub log_json: bool,
    pub public: PublicSite,
    pub notify: NotifySettings,
}

/// `[notify]`, checked.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// 0: lagging mirrors are not reported.
    pub lag_generations: u64,
    pub operators: Vec<lettre::Address>,
    pub min_interval: Duration,
    pub webhook: Option<url::Url>,
    pub smtp: Option<SmtpSettings>,
}

impl NotifySettings {
    /// Whether any notice can go anywhere.
    pub fn enabled(&self) -> bool {
        self.smtp.is_some() || self.webhook.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    Tls,
    None,
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// (user name, password).
    pub credentials: Option<(String, Secret)>,
    pub from: lettre::message::Mailbox,
    /// Extra trusted CA certificates (PEM), checked to parse at start.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("from", &self.from.to_string())
            .finish()
    }
}

fn notify_settings(raw: RawNotify) -> Result<NotifySettings, ConfigError> {
    let operators = raw
        .operators
        .iter()
        .map(|a| a.trim().parse().map_err(|e| key_err("notify.operators", format!("{a:?}: {e}"))))
        .collect::<Result<Vec<lettre::Address>, _>>()?;
    let min_interval = duration("notify.min_interval", &raw.min_interval)?;
    let webhook = match raw.webhook_url.trim() {
        "" => None,
        u => {
            let url = url::Url::parse(u)
                .map_err(|e| key_err("notify.webhook_url", format!("{u:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(key_err("notify.webhook_url", "must be an http(s) URL"));
            }
            Some(url)
        }
    };
    let smtp = match raw.smtp_host.trim() {
        "" => None,
        host => {
            let security = match raw.smtp_security.as_str() {
                "starttls" => SmtpSecurity::StartTls,
                "tls" => SmtpSecurity::Tls,
                "none" => SmtpSecurity::None,
                other => {
                    return Err(key_err(
                        "notify.smtp_security",
                        format!("{other:?}: use \"starttls\", \"tls\" or \"none\""),
                    ));
                }
            };
            let port = raw.smtp_port.unwrap_or(match security {
                SmtpSecurity::StartTls => 587,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::None => 25,
            });
            let credentials = match raw.smtp_username.trim() {
                "" => None,
                user => {
                    if raw.smtp_password_file.is_empty() {
                        return Err(key_err(
                            "notify.smtp_password_file",
                            "required when smtp_username is set",
                        ));
                    }
                    let password = read_secret(
                        "notify.smtp_password_file",
                        Path::new(&raw.smtp_password_file),
                    )?;
                    Some((
                        user.to_owned(),
                        Secret(password.trim_end_matches(['\r', '\n']).to_owned()),
                    ))
                }
            };
            let from = raw.from.trim().parse().map_err(|e| {
                key_err(
                    "notify.from",
                    format!("{:?}: {e} (e.g. \"Wharf <wharf@example.org>\")", raw.from),
                )
            })?;
            let ca_pem = match raw.smtp_ca_file.trim() {
                "" => None,
                path => {
                    let pem = read_secret("notify.smtp_ca_file", Path::new(path))?.into_bytes();
                    lettre::transport::smtp::client::Certificate::from_pem(&pem).map_err(|e| {
                        key_err(
                            "notify.smtp_ca_file",
                            format!("{path}: not a PEM certificate: {e}"),
                        )
                    })?;
                    Some(pem)
                }
            };
            Some(SmtpSettings { host: host.to_owned(), port, security, credentials, from, ca_pem })
        }
    };
    Ok(NotifySettings {
        lag_generations: raw.lag_generations,
        operators,
        min_interval,
        webhook,
        smtp,
    })
}

/// `[public]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSite {
    pub enabled: bool,
    pub title: String,
    pub description: String,
}

/// The HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    /// Whether `given` is the secret, in time that does not depend on where they differ.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The forwarding header trusted proxies set (only that one is believed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=...`.
    Forwarded,
}

impl ForwardedHeader {
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CrawlSettings {
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub mirror_timeout: Duration,
    pub total_timeout: Duration,
    pub new_blobs: usize,
    pub random_blobs: usize,
    pub downloads: usize,
    pub max_failures: u32,
    pub allow_private_addresses: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub source: UpstreamSource,
    /// `None`: every repository in the catalog.
    pub repositories: Option<Vec<globset::GlobMatcher>>,
    pub tags: regex::Regex,
    /// The upstream's lookaside signature store, with a trailing slash.
    pub lookaside: Option<reqwest::Url>,
}

impl UpstreamConfig {
    /// Whether a repository is one to sync.
    pub fn wants(&self, repo: &str) -> bool {
        self.repositories.as_ref().is_none_or(|pats| pats.iter().any(|p| p.is_match(repo)))
    }
}

#[derive(Debug, Clone)]
pub enum UpstreamSource {
    Registry { url: reqwest::Url, credentials: Option<Credentials> },
    OciDir(PathBuf),
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub concurrency: usize,
    pub retries: u32,
    pub request_timeout: Duration,
    pub blob_timeout: Duration,
    pub page_size: u32,
    pub referrers: bool,
    /// Referrers of these artifact types only; empty: every type.
    pub referrer_artifact_types: Vec<String>,
    /// Publish only tags with a verified signature.
    pub policy: Option<SignaturePolicy>,
}

impl SyncSettings {
    /// Whether referrers of `artifact_type` are synced.
    pub fn wants_artifact(&self, artifact_type: Option<&str>) -> bool {
        self.referrer_artifact_types.is_empty()
            || artifact_type.is_some_and(|t| self.referrer_artifact_types.iter().any(|w| w == t))
    }
}

/// `[sync.policy]` validated: the keys parsed and the identity signatures must name.
#[derive(Debug, Clone)]
pub struct SignaturePolicy {
    pub keys: crate::model::signature::TrustedKeys,
    /// `host[:port][/path]`; a repository `r` is signed as `<identity>/r`.
    pub identity: String,
}

impl Config {
    /// The redb file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("wharf.redb")
    }

    /// Temp files for the tree: same filesystem, outside the published paths.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// The local control socket of a running `wharf serve`.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
}

/// Overrides given on the command line, applied last.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    /// `(section.key, TOML value)` pairs, e.g. `("server.listen", "\"127.0.0.1:0\"")`.
    pub values: Vec<(String, toml::Value)>,
}

/// Load the layered configuration. `file` is optional only when `required` is false
/// (the default path may be absent).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    cli: &CliOverrides,
) -> Result<Config, ConfigError> {
    let table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.into(), source })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse { path: path.into(), source: Box::new(e) })?
        }
        None => toml::Table::new(),
    };
    load_table(table, env, cli)
}

/// [`load`] with the file already parsed.
pub fn load_table(
    mut table: toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    cli: &CliOverrides,
) -> Result<Config, ConfigError> {
    let defaults = toml::Table::try_from(RawConfig::default()).expect("defaults serialize");
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("WHARF__") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            return Err(ConfigError::Env { var, reason: "expected WHARF__SECTION__KEY".into() });
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let value = env_value(&defaults, &section, &key, &value)
            .map_err(|reason| ConfigError::Env { var, reason })?;
        set(&mut table, &section, &key, value);
    }
    for (path, value) in &cli.values {
        let (section, key) = path.split_once('.').expect("CLI override keys are section.key");
        set(&mut table, section, key, value.clone());
    }
    let raw: RawConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
    validate(raw)
}

/// Keys without a default whose values are not strings.
const OPTIONAL_NON_STRING: [(&str, &str); 1] = [("upstream", "repositories")];

/// An env value is read as the key's type: a string for string keys (so `USERNAME=12345`
/// stays a string), TOML (`4`, `true`, `["a","b"]`) for the others.
fn env_value(
    defaults: &toml::Table,
    section: &str,
    key: &str,
    s: &str,
) -> Result<toml::Value, String> {
    let default = defaults.get(section).and_then(|t| t.get(key));
    let is_string = match default {
        Some(v) => v.is_str(),
        None => !OPTIONAL_NON_STRING.contains(&(section, key)),
    };
    if is_string {
        return Ok(toml::Value::String(s.to_owned()));
    }
    format!("v = {s}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")).ok_or_else(
        || format!("{s:?} is not a TOML value (a number, boolean or array like [\"a\"])"),
    )
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry =
        table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_owned(), value);
    } else {
        *entry = toml::Value::Table(toml::Table::from_iter([(key.to_owned(), value)]));
    }
}

/// The longest secret file read.
const MAX_SECRET: u64 = 64 * 1024;

/// A secret file's text; a file larger than [`MAX_SECRET`] (or `/dev/zero`) is refused
/// without being read whole.
fn read_secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET + 1).read_to_string(&mut text))
        .map_err(|e| key_err(key, format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_SECRET {
        return Err(key_err(key, format!("{}: larger than {MAX_SECRET} bytes", path.display())));
    }
    Ok(text)
}

fn duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| key_err(key, format!("{s:?}: {e}")))
}

/// Check a 6-field cron expression the way the scheduler will read it.
pub fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(s)
        .map_err(|e| format!("{s:?} is not a 6-field cron expression (seconds first): {e}"))
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen: SocketAddr = raw
        .server
        .listen
        .parse()
        .map_err(|e| key_err("server.listen", format!("{:?}: {e}", raw.server.listen)))?;
    let public_url = match raw.server.public_url {
        Some(u) => u,
        None if listen.ip().is_unspecified() => {
            return Err(key_err(
                "server.public_url",
                format!(
                    "required when listening on {listen}: blob redirects need a host clients can reach"
                ),
            ));
        }
        None => format!("http://{listen}"),
    };
    let parsed = reqwest::Url::parse(&public_url)
        .map_err(|e| key_err("server.public_url", format!("{public_url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
        return Err(key_err("server.public_url", "must be an http(s) URL without a query"));
    }
    let public_url = public_url.trim_end_matches('/').to_owned();

    if raw.storage.data_dir.as_os_str().is_empty() {
        return Err(key_err("storage.data_dir", "must not be empty"));
    }
    let data_dir = absolute(&raw.storage.data_dir);
    let tree_dir =
        raw.storage.tree_dir.map(|t| absolute(&t)).unwrap_or_else(|| data_dir.join("tree"));
    if data_dir.starts_with(&tree_dir) {
        return Err(key_err(
            "storage.tree_dir",
            format!(
                "{} must not contain the data dir: mirrors would copy the store",
                tree_dir.display()
            ),
        ));
    }
    let gc_grace = duration("storage.gc_grace", &raw.storage.gc_grace)?;
    if gc_grace > Duration::from_secs(10 * 365 * 86400) {
        return Err(key_err("storage.gc_grace", "at most 10 years"));
    }
    if !(4..=65536).contains(&raw.storage.cache_mib) {
        return Err(key_err("storage.cache_mib", "must be between 4 and 65536"));
    }
    let store_cache = (raw.storage.cache_mib as usize) << 20;

    let upstream = validate_upstream(raw.upstream)?;
    parse_cron(&raw.schedule.sync).map_err(|e| key_err("schedule.sync", e))?;

    let s = raw.sync;
    if s.concurrency == 0 || s.concurrency > 64 {
        return Err(key_err("sync.concurrency", "must be between 1 and 64"));
    }
    if s.page_size == 0 || s.page_size > 10_000 {
        return Err(key_err("sync.page_size", "must be between 1 and 10000"));
    }
    if s.retries == 0 || s.retries > 20 {
        return Err(key_err("sync.retries", "must be between 1 and 20"));
    }
    for t in &s.referrer_artifact_types {
        let ok = t.len() <= 255
            && t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
            && t.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(key_err(
                "sync.referrer_artifact_types",
                format!("{t:?} is not a media type (type/subtype)"),
            ));
        }
    }
    let policy = signature_policy(s.policy, &upstream)?;
    let sync = SyncSettings {
        concurrency: s.concurrency,
        retries: s.retries,
        request_timeout: duration("sync.request_timeout", &s.request_timeout)?,
        blob_timeout: duration("sync.blob_timeout", &s.blob_timeout)?,
        page_size: s.page_size,
        referrers: s.referrers,
        referrer_artifact_types: s.referrer_artifact_types,
        policy,
    };
    let trusted_proxies = raw
        .server
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    key_err("server.trusted_proxies", format!("{p:?} is not a CIDR or address"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let forwarded_header = match raw.server.forwarded_header.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => ForwardedHeader::XForwardedFor,
        "forwarded" => ForwardedHeader::Forwarded,
        other => {
            return Err(key_err(
                "server.forwarded_header",
                format!("{other:?}: use \"x-forwarded-for\" or \"forwarded\""),
            ));
        }
    };
    let fallback_url = match raw.mirrors.fallback_url {
        Some(u) => {
            crate::model::parse_base_url(&u).map_err(|e| key_err("mirrors.fallback_url", e))?
        }
        None => format!("{public_url}/tree/"),
    };
    let rsync_url = match raw.mirrors.rsync_url {
        Some(u) if u.starts_with("rsync://") && !u.contains([' ', '"', '<', '>']) => {
            if u.ends_with('/') { u } else { format!("{u}/") }
        }
        Some(u) => {
            return Err(key_err("mirrors.rsync_url", format!("{u:?} must start with rsync://")));
        }
        None => {
            format!("rsync://{}/wharf/", parsed.host_str().unwrap_or("localhost"))
        }
    };
    let admin_listen = raw
        .admin
        .listen
        .map(|l| {
            l.parse::<SocketAddr>().map_err(|e| key_err("admin.listen", format!("{l:?}: {e}")))
        })
        .transpose()?;
    let tls = match (raw.server.tls_listen, raw.server.tls_cert, raw.server.tls_key) {
        (None, None, None) => None,
        (Some(l), Some(cert), Some(key)) => {
            let listen = l
                .parse::<SocketAddr>()
                .map_err(|e| key_err("server.tls_listen", format!("{l:?}: {e}")))?;
            for (k, p) in [("server.tls_cert", &cert), ("server.tls_key", &key)] {
                std::fs::metadata(p).map_err(|e| key_err(k, format!("{}: {e}", p.display())))?;
            }
            Some(TlsSettings { listen, cert: absolute(&cert), key: absolute(&key) })
        }
        _ => {
            return Err(key_err(
                "server.tls_listen",
                "tls_listen, tls_cert and tls_key go together: set all three or none",
            ));
        }
    };
    let client_timeout = duration("server.client_timeout", &raw.server.client_timeout)?;
    if client_timeout.is_zero() {
        // 0 would mean "never" to the HTTP server and "at once" to the webhook body read.
        return Err(key_err("server.client_timeout", "must be more than 0"));
    }
    let keep_alive = duration("server.keep_alive", &raw.server.keep_alive)?;
    let hook_secret = match raw.hooks.secret_file {
        Some(path) => {
            let text = read_secret("hooks.secret_file", &path)?;
            let secret = text.trim().to_owned();
            if secret.len() < 16 {
                return Err(key_err(
                    "hooks.secret_file",
                    "the secret must be at least 16 characters",
                ));
            }
            Some(Secret(secret))
        }
        None => None,
    };
    let hook_debounce = duration("hooks.debounce", &raw.hooks.debounce)?;
    let text = |key, value: String, max: usize| {
        if value.chars().count() > max || value.chars().any(char::is_control) {
            return Err(key_err(key, format!("at most {max} characters, on one line")));
        }
        Ok(value.trim().to_owned())
    };
    let public = PublicSite {
        enabled: raw.public.enabled,
        title: text("public.title", raw.public.title, 80)?,
        description: text("public.description", raw.public.description, 300)?,
    };
    if public.title.is_empty() {
        return Err(key_err("public.title", "must not be empty"));
    }
    tracing_subscriber::EnvFilter::try_new(&raw.log.level)
        .map_err(|e| key_err("log.level", format!("{:?}: {e}", raw.log.level)))?;
    let log_json = match raw.log.format.as_str() {
        "text" => false,
        "json" => true,
        other => return Err(key_err("log.format", format!("{other:?}: use text or json"))),
    };
    parse_cron(&raw.schedule.crawl).map_err(|e| key_err("schedule.crawl", e))?;
    let c = raw.crawl;
    if c.concurrency == 0 || c.concurrency > 256 {
        return Err(key_err("crawl.concurrency", "must be between 1 and 256"));
    }
    if c.max_failures == 0 {
        return Err(key_err("crawl.max_failures", "must be at least 1"));
    }
    let crawl = CrawlSettings {
        concurrency: c.concurrency,
        request_timeout: duration("crawl.request_timeout", &c.request_timeout)?,
        mirror_timeout: duration("crawl.mirror_timeout", &c.mirror_timeout)?,
        total_timeout: duration("crawl.total_timeout", &c.total_timeout)?,
        new_blobs: c.new_blobs,
        random_blobs: c.random_blobs,
        downloads: c.downloads,
        max_failures: c.max_failures,
        allow_private_addresses: c.allow_private_addresses,
    };
    // A database that is missing is not an error: its tiers are skipped until the file
    // appears (it is picked up by the periodic reload).
    let notify = notify_settings(raw.notify)?;
    let file = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty()).map(|p| absolute(&p));
    let geoip_database = file(raw.geoip.database);
    let asn_database = file(raw.geoip.asn_database);
    Ok(Config {
        rsync_url,
        admin_listen,
        tls,
        client_timeout,
        keep_alive,
        hook_secret,
        hook_debounce,
        log_level: raw.log.level,
        log_json,
        public,
        notify,
        trusted_proxies,
        forwarded_header,
        fallback_url,
        require_https: raw.mirrors.require_https,
        crawl_schedule: raw.schedule.crawl,
        crawl,
        geoip_database,
        asn_database,
        listen,
        public_url,
        data_dir,
        tree_dir,
        gc_grace,
        store_cache,
        upstream,
        sync_schedule: raw.schedule.sync,
        sync,
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// `[sync.policy]`: the keys read and parsed now, so a bad key file stops the start.
fn signature_policy(
    p: RawPolicy,
    upstream: &UpstreamConfig,
) -> Result<Option<SignaturePolicy>, ConfigError> {
    if !p.require_signature {
        return Ok(None);
    }
    if p.keys.is_empty() {
        return Err(key_err("sync.policy.keys", "require_signature needs at least one key file"));
    }
    let keys: Vec<PathBuf> = p.keys.iter().map(|k| absolute(k)).collect();
    let keys = crate::model::signature::TrustedKeys::load(&keys)
        .map_err(|e| key_err("sync.policy.keys", e))?;
    let identity = match (p.identity.trim(), &upstream.source) {
        ("", UpstreamSource::Registry { url, .. }) => match (url.host_str(), url.port()) {
            (Some(h), Some(port)) => format!("{h}:{port}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(key_err("sync.policy.identity", "the upstream has no host")),
        },
        ("", UpstreamSource::OciDir(_)) => {
            return Err(key_err(
                "sync.policy.identity",
                "required with an oci: upstream: the host[/path] signatures name",
            ));
        }
        (id, _) => id.trim_end_matches('/').to_owned(),
    };
    let ok = !identity.is_empty()
        && identity.len() <= 255
        && identity.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:/".contains(&b));
    if !ok {
        return Err(key_err(
            "sync.policy.identity",
            format!("{identity:?} is not host[:port][/path]"),
        ));
    }
    Ok(Some(SignaturePolicy { keys, identity }))
}

fn validate_upstream(u: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let source = if let Some(path) = u.url.strip_prefix("oci:") {
        if path.is_empty() {
            return Err(key_err("upstream.url", "oci: needs a directory, e.g. oci:/srv/layouts"));
        }
        UpstreamSource::OciDir(absolute(Path::new(path)))
    } else if u.url.is_empty() {
        return Err(key_err("upstream.url", "missing: a registry URL or oci:/path is required"));
    } else {
        let mut url = reqwest::Url::parse(&u.url)
            .map_err(|e| key_err("upstream.url", format!("{:?}: {e}", u.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(key_err("upstream.url", "must be http(s):// or oci:"));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let credentials = if u.username.is_empty() {
            None
        } else {
            if u.password_file.is_empty() {
                return Err(key_err("upstream.password_file", "required when username is set"));
            }
            let password = read_secret("upstream.password_file", Path::new(&u.password_file))?;
            Some(Credentials { username: u.username, password: password.trim_end().to_owned() })
        };
        UpstreamSource::Registry { url, credentials }
    };
    let repositories = u
        .repositories
        .map(|pats| {
            pats.iter()
                .map(|p| {
                    globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .build()
                        .map(|g| g.compile_matcher())
                        .map_err(|e| key_err("upstream.repositories", format!("{p:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let tags_src = u.tags.unwrap_or_else(|| ".*".into());
    let tags = regex::Regex::new(&format!("^(?:{tags_src})$"))
        .map_err(|e| key_err("upstream.tags", format!("{tags_src:?}: {e}")))?;
    let lookaside = match u.lookaside.trim() {
        "" => None,
        l => {
            let mut url = reqwest::Url::parse(l)
                .map_err(|e| key_err("upstream.lookaside", format!("{l:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
                return Err(key_err(
                    "upstream.lookaside",
                    "must be an http(s) URL without a query",
                ));
            }
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            Some(url)
        }
    };
    Ok(UpstreamConfig { source, repositories, tags, lookaside })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(a, b)| (a.to_string(), b.to_string()));
        load(Some(&path), env, &CliOverrides::default())
    }

    #[test]
    fn layers_apply_in_order() {
        let c = load_str(
            "[upstream]\nurl = \"http://r:5000\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("WHARF__SERVER__LISTEN", "127.0.0.1:2"),
                ("WHARF__SYNC__CONCURRENCY", "7"),
                ("WHARF__UPSTREAM__TAGS", "1"),
                ("WHARF__UPSTREAM__REPOSITORIES", "[\"a\", \"b/*\"]"),
            ],
        )
        .unwrap();
        assert!(c.upstream.tags.is_match("1") && !c.upstream.tags.is_match("11"), "a string regex");
        assert_eq!(c.upstream.repositories.as_ref().map(Vec::len), Some(2));
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.sync.concurrency, 7);
        assert_eq!(c.public_url, "http://127.0.0.1:2");
        assert_eq!(c.tree_dir, Path::new("/var/lib/wharf/tree"));
        assert_eq!(c.gc_grace, Duration::from_secs(7 * 86400));
        let cli = CliOverrides {
            values: vec![("server.listen".into(), toml::Value::String("127.0.0.1:3".into()))],
        };
        let c = load(None, [("WHARF__UPSTREAM__URL".into(), "oci:/x".into())], &cli).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert!(matches!(c.upstream.source, UpstreamSource::OciDir(_)));
    }

    #[test]
    fn rejects_bad_input_clearly() {
        let cases = [
            ("[upstream]\nurl = \"http://r\"\nbogus = 1\n", "bogus"),
            ("[upstreem]\nurl = \"http://r\"\n", "upstreem"),
            ("[upstream]\nurl = \"ftp://r\"\n", "upstream.url"),
            ("[upstream]\n", "upstream.url"),
            ("[upstream]\nurl = \"http://r\"\ntags = \"(\"\n", "upstream.tags"),
            (
                "[upstream]\nurl = \"http://r\"\n[schedule]\nsync = \"*/5 * * * *\"\n",
                "schedule.sync",
            ),
            ("[upstream]\nurl = \"http://r\"\n[server]\nlisten = \"nope\"\n", "server.listen"),
            ("[upstream]\nurl = \"http://r\"\n[sync]\nconcurrency = 0\n", "sync.concurrency"),
            (
                "[upstream]\nurl = \"http://r\"\n[storage]\ngc_grace = \"soon\"\n",
                "storage.gc_grace",
            ),
            ("[upstream]\nurl = \"http://r\"\nusername = \"u\"\n", "upstream.password_file"),
            (
                "[upstream]\nurl = \"http://r\"\n[server]\nlisten = \"0.0.0.0:80\"\n",
                "server.public_url",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[server]\npublic_url = \"ftp://x\"\n",
                "server.public_url",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[server]\nclient_timeout = \"0s\"\n",
                "server.client_timeout",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[server]\nforwarded_header = \"x-real-ip\"\n",
                "server.forwarded_header",
            ),
            ("[upstream]\nurl = \"http://r\"\n[public]\ntitle = \" \"\n", "public.title"),
            ("[upstream]\nurl = \"http://r\"\n[public]\ntitle = \"a\\nb\"\n", "public.title"),
            ("[upstream]\nurl = \"http://r\"\n[notify]\nsmtp_host = \"mx\"\n", "notify.from"),
            (
                "[upstream]\nurl = \"http://r\"\n[notify]\nsmtp_host = \"mx\"\nfrom = \"w@x.org\"\nsmtp_security = \"ssl\"\n",
                "notify.smtp_security",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[notify]\nsmtp_host = \"mx\"\nfrom = \"w@x.org\"\nsmtp_username = \"u\"\n",
                "notify.smtp_password_file",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[notify]\noperators = [\"not an address\"]\n",
                "notify.operators",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[notify]\nwebhook_url = \"ftp://x\"\n",
                "notify.webhook_url",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[notify]\nmin_interval = \"soon\"\n",
                "notify.min_interval",
            ),
            ("[upstream]\nurl = \"http://r\"\nlookaside = \"file:///x\"\n", "upstream.lookaside"),
            (
                "[upstream]\nurl = \"http://r\"\n[sync]\nreferrer_artifact_types = [\"sbom\"]\n",
                "sync.referrer_artifact_types",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[sync.policy]\nrequire_signature = true\n",
                "sync.policy.keys",
            ),
            (
                "[upstream]\nurl = \"http://r\"\n[sync.policy]\nrequire_signature = true\nkeys = [\"/nonexistent/k.pub\"]\n",
                "/nonexistent/k.pub",
            ),
            (
                "[upstream]\nurl = \"oci:/x\"\n[sync.policy]\nrequire_signature = true\nkeys = [\"src/model/testdata/cosign.pub\"]\n",
                "sync.policy.identity",
            ),
        ];
        for (toml, needle) in cases {
            let err = load_str(toml, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml:?} -> {err}");
        }
        let long = format!(
            "[upstream]\nurl = \"http://r\"\n[public]\ndescription = \"{}\"\n",
            "x".repeat(301)
        );
        assert!(load_str(&long, &[]).unwrap_err().to_string().contains("public.description"));
        // A key file that does not parse stops the start, named.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad-key.pem");
        std::fs::write(&bad, "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
            .unwrap();
        let toml = format!(
            "[upstream]\nurl = \"http://r:5000\"\n[sync.policy]\nrequire_signature = true\nkeys = [\"{}\"]\n",
            bad.display()
        );
        let err = load_str(&toml, &[]).unwrap_err().to_string();
        assert!(err.contains("sync.policy.keys") && err.contains("bad-key.pem"), "{err}");
        let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/testdata/cosign.pub");
        let c =
            load_str(&toml.replace(&bad.display().to_string(), &good.display().to_string()), &[])
                .unwrap();
        assert_eq!(c.sync.policy.unwrap().identity, "r:5000");
        let err =
            load_str("[upstream]\nurl = \"http://r\"\n", &[("WHARF__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("WHARF__NOPE"), "{err}");
    }

    #[test]
    fn packaged_config_is_valid_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/wharf.toml");
        let c = load(Some(&path), std::iter::empty(), &CliOverrides::default()).unwrap();
        assert_eq!(c.listen.port(), 5000);
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::to_string(&RawConfig::default()).unwrap();
        let optional = [
            "public_url",
            "tree_dir",
            "repositories",
            "tags",
            "fallback_url",
            "rsync_url",
            "listen",
            "tls_listen",
            "tls_cert",
            "tls_key",
            "secret_file",
            "database",
            "asn_database",
        ];
        let keys = defaults.lines().filter_map(|l| l.split_once(" = ")).map(|(k, _)| k);
        for key in keys.chain(optional) {
            assert!(text.contains(&format!("{key} =")), "packaging/wharf.toml lacks {key}");
        }
    }

    #[test]
    fn globs_do_not_cross_slashes() {
        let c = load_str("[upstream]\nurl = \"http://r\"\nrepositories = [\"library/*\"]\n", &[])
            .unwrap();
        let pats = c.upstream.repositories.unwrap();
        assert!(pats[0].is_match("library/busybox"));
        assert!(!pats[0].is_match("library/a/b"));
        assert!(c.upstream.tags.is_match("anything"));
    }
}
