//! The static registry view: how the tree lays out what a plain web server needs to answer
//! the registry pull API (`/v2/...`), and the server configurations that answer it.
//!
//! ```text
//! <tree>/v2/_ping.json                              `{}`, the body of GET /v2/
//! <tree>/v2/<repo>/_tags.json                       the body of GET /v2/<repo>/tags/list
//! <tree>/v2/<repo>/_manifests/<ref>.<kind>          a manifest by tag or digest (a hardlink
//!                                                   into the pool); <kind> names its media type
//! <tree>/blobs/sha256/<hex>                         blobs: GET /v2/<repo>/blobs/sha256:<hex>
//! ```
//!
//! A repository name component never starts with `_`, so the view's own entries never
//! collide with a repository. The media type is in the file name's extension, so a server
//! maps it to the `Content-Type` with a fixed table and finds the file by trying each kind:
//! no server reload when a publication adds or moves tags.

use std::fmt::Write;

use super::media_type;

/// The view's directory at the tree root.
pub const VIEW_DIR: &str = "v2";
/// The `/v2/` body, in [`VIEW_DIR`].
pub const PING_FILE: &str = "_ping.json";
/// A repository's tags/list body, in `v2/<repo>/`.
pub const TAGS_FILE: &str = "_tags.json";
/// A repository's manifests by tag and by digest, in `v2/<repo>/`.
pub const MANIFESTS_DIR: &str = "_manifests";

/// The manifest kinds the view serves: (file extension, media type). A manifest of another
/// media type (Docker schema 1) is not in the view.
pub const KINDS: [(&str, &str); 4] = [
    ("oci-index", media_type::OCI_INDEX),
    ("oci-manifest", media_type::OCI_MANIFEST),
    ("docker-list", media_type::DOCKER_LIST),
    ("docker-manifest", media_type::DOCKER_MANIFEST),
];

/// The file extension of a media type, if the view serves it.
pub fn extension(media_type: &str) -> Option<&'static str> {
    KINDS.iter().find(|(_, mt)| *mt == media_type).map(|(ext, _)| *ext)
}

/// The servers Wharf writes a registry configuration for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Nginx,
    Apache,
    Caddy,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Nginx, Server::Apache, Server::Caddy];

    pub fn as_str(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Apache => "apache",
            Server::Caddy => "caddy",
        }
    }
}

impl std::str::FromStr for Server {
    type Err = String;
    fn from_str(s: &str) -> Result<Server, String> {
        Server::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown server {s:?}: nginx, apache or caddy"))
    }
}

/// How long clients and caches may keep what a tag names (tags move at each publication).
pub const TAG_MAX_AGE: u32 = 60;
/// Digests never change.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What a generated configuration is for.
#[derive(Debug, Clone)]
pub struct ViewSite<'a> {
    /// The directory the tree is copied to (the rsync destination).
    pub root: &'a str,
    /// `host:port` (or a port) the server listens on.
    pub listen: &'a str,
    /// The rsync commands that keep the copy consistent, shown as comments.
    pub rsync: &'a [String],
}

/// A tag or a digest as the servers match them.
const TAG_RE: &str = "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}";
const DIGEST_RE: &str = "sha256:[a-f0-9]{64}";

/// The server configuration that serves a copy of the tree at `site.root` as a read-only
/// registry (and the tree itself, for blob redirects and the crawler).
pub fn server_config(server: Server, site: &ViewSite) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Wharf registry view: `wharf mirror registry-config --server {}`.",
        server.as_str()
    );
    let _ = writeln!(out, "# Keep {} a consistent copy of the tree, from cron:", site.root);
    for c in site.rsync {
        let _ = writeln!(out, "#   {c}");
    }
    let _ = writeln!(
        out,
        "# (--delay-updates puts new files in place at the end, blobs before the \
         manifests naming them; --delete-delay removes old ones only after that;\n\
         # --modify-window=-1 compares modification times to the nanosecond, so a tag moved \
         twice within a second is still copied.)\n\
         # Serving https: add your server's TLS settings (certificate and key) to this site."
    );
    match server {
        Server::Nginx => nginx(&mut out, site),
        Server::Apache => apache(&mut out, site),
        Server::Caddy => caddy(&mut out, site),
    }
    out
}

fn manifest_files(prefix: &str, repo: &str, reference: &str) -> String {
    KINDS
        .iter()
        .map(|(ext, _)| format!("{prefix}/v2/{repo}/{MANIFESTS_DIR}/{reference}.{ext}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn nginx(out: &mut String, site: &ViewSite) {
    let types: String = KINDS.iter().map(|(ext, mt)| format!(" {mt} {ext};")).collect();
    let api = "add_header Docker-Distribution-API-Version registry/2.0 always;";
    let _ = write!(
        out,
        r#"# In nginx's http {{}} context (for example /etc/nginx/conf.d/wharf-registry.conf).
server {{
    listen {listen};
    root {root};

    # The tree as files: Wharf's blob redirects and its crawler use these.
    location / {{
    }}
    location = /v2 {{
        return 301 /v2/;
    }}
    location = /v2/ {{
        {api}
        default_type application/json;
        try_files /v2/{ping} =404;
    }}
    location ~ "^/v2/(?<wharf_repo>.+)/tags/list$" {{
        {api}
        add_header Cache-Control "public, max-age={tag_age}" always;
        default_type application/json;
        try_files /v2/$wharf_repo/{tags} =404;
    }}
    location ~ "^/v2/(?<wharf_repo>.+)/manifests/(?<wharf_ref>{digest_re})$" {{
        types {{{types} }}
        {api}
        add_header Docker-Content-Digest $wharf_ref always;
        add_header Cache-Control "{immutable}" always;
        try_files {by_digest} =404;
    }}
    location ~ "^/v2/(?<wharf_repo>.+)/manifests/(?<wharf_ref>{tag_re})$" {{
        types {{{types} }}
        {api}
        add_header Cache-Control "public, max-age={tag_age}" always;
        try_files {by_tag} =404;
    }}
    location ~ "^/v2/(?<wharf_repo>.+)/blobs/sha256:(?<wharf_hex>[a-f0-9]{{64}})$" {{
        types {{ }}
        default_type application/octet-stream;
        {api}
        add_header Docker-Content-Digest sha256:$wharf_hex always;
        add_header Cache-Control "{immutable}" always;
        try_files /blobs/sha256/$wharf_hex =404;
    }}
    location /v2/ {{
        {api}
        return 404;
    }}
}}
"#,
        listen = site.listen,
        root = site.root,
        ping = PING_FILE,
        tags = TAGS_FILE,
        tag_age = TAG_MAX_AGE,
        immutable = IMMUTABLE,
        digest_re = DIGEST_RE,
        tag_re = TAG_RE,
        by_digest = manifest_files("", "$wharf_repo", "$wharf_ref"),
        by_tag = manifest_files("", "$wharf_repo", "$wharf_ref"),
    );
}

fn apache(out: &mut String, site: &ViewSite) {
    let root = site.root.trim_end_matches('/');
    let mut rules = String::new();
    for (re, env) in [(DIGEST_RE, "WHARF_DIGEST:$2"), (TAG_RE, "WHARF_TAG:1")] {
        for (ext, _) in KINDS {
            let _ = write!(
                rules,
                "    RewriteCond {root}/v2/$1/{MANIFESTS_DIR}/$2.{ext} -f\n    \
                 RewriteRule ^/v2/(.+)/manifests/({re})$ /v2/$1/{MANIFESTS_DIR}/$2.{ext} [L,E={env}]\n"
            );
        }
    }
    let types: String =
        KINDS.iter().map(|(ext, mt)| format!("    AddType {mt} .{ext}\n")).collect();
    let _ = write!(
        out,
        r#"# Apache httpd 2.4 with mod_rewrite, mod_headers and mod_mime
# (Debian: a2enmod rewrite headers; Fedora/RHEL: loaded by default).
# Drop the Listen line if ports.conf (httpd.conf) listens there already.
Listen {listen}
<VirtualHost {vhost}>
    DocumentRoot {root}
    <Directory {root}>
        Options None
        AllowOverride None
        Require all granted
    </Directory>
    AddDefaultCharset Off
    AddType application/json .json
{types}    RewriteEngine On
    RewriteRule ^/v2$ /v2/ [R=301,L]
    RewriteRule ^/v2/$ /v2/{ping} [L,E=WHARF_API:1]
    RewriteRule ^/v2/(.+)/tags/list$ /v2/$1/{tags} [L,E=WHARF_TAG:1]
{rules}    RewriteRule ^/v2/.+/blobs/(sha256:([a-f0-9]{{64}}))$ /blobs/sha256/$2 [L,E=WHARF_DIGEST:$1,T=application/octet-stream]
    Header always set Docker-Distribution-API-Version registry/2.0 "expr=%{{REQUEST_URI}} =~ m#^/v2(/|$)#"
    Header set Docker-Content-Digest "%{{WHARF_DIGEST}}e" env=WHARF_DIGEST
    Header set Cache-Control "{immutable}" env=WHARF_DIGEST
    Header set Cache-Control "public, max-age={tag_age}" env=WHARF_TAG
</VirtualHost>
"#,
        listen = site.listen,
        vhost = if site.listen.contains(':') {
            site.listen.to_owned()
        } else {
            format!("*:{}", site.listen)
        },
        root = root,
        ping = PING_FILE,
        tags = TAGS_FILE,
        immutable = IMMUTABLE,
        tag_age = TAG_MAX_AGE,
    );
}

fn caddy(out: &mut String, site: &ViewSite) {
    // Caddy sorts a site's directives by its own order (headers before rewrites); inside
    // `route` they run as written, so each content type is set after the file was found.
    let mut types = String::new();
    for (ext, mt) in KINDS {
        let _ = writeln!(types, "            header @{ext} Content-Type {mt}");
    }
    let matchers: String =
        KINDS.iter().map(|(ext, _)| format!("    @{ext} path *.{ext}\n")).collect();
    let address = if site.listen.contains(':') {
        format!("http://{}", site.listen)
    } else {
        format!("http://:{}", site.listen)
    };
    let _ = write!(
        out,
        r#"# A Caddyfile site (Caddy 2).
{address} {{
    root * {root}
    header /v2* Docker-Distribution-API-Version registry/2.0
{matchers}    @ping path /v2/
    @tags path_regexp tags ^/v2/(.+)/tags/list$
    @digest path_regexp digest ^/v2/(.+)/manifests/({digest_re})$
    @tag path_regexp tag ^/v2/(.+)/manifests/({tag_re})$
    @blob path_regexp blob ^/v2/.+/blobs/sha256:([a-f0-9]{{64}})$
    redir /v2 /v2/ 301
    handle @ping {{
        rewrite * /v2/{ping}
        header Content-Type application/json
        file_server
    }}
    handle @tags {{
        rewrite * /v2/{{re.tags.1}}/{tags}
        header Content-Type application/json
        header Cache-Control "public, max-age={tag_age}"
        file_server
    }}
    handle @digest {{
        route {{
            try_files {by_digest}
            header Docker-Content-Digest {{re.digest.2}}
            header Cache-Control "{immutable}"
{types}            file_server
        }}
    }}
    handle @tag {{
        route {{
            try_files {by_tag}
            header Cache-Control "public, max-age={tag_age}"
{types}            file_server
        }}
    }}
    handle @blob {{
        rewrite * /blobs/sha256/{{re.blob.1}}
        header Docker-Content-Digest sha256:{{re.blob.1}}
        header Cache-Control "{immutable}"
        header Content-Type application/octet-stream
        file_server
    }}
    handle /v2/* {{
        respond 404
    }}
    handle {{
        file_server
    }}
}}
"#,
        root = site.root,
        ping = PING_FILE,
        tags = TAGS_FILE,
        digest_re = DIGEST_RE,
        tag_re = TAG_RE,
        immutable = IMMUTABLE,
        tag_age = TAG_MAX_AGE,
        by_digest = manifest_files("", "{re.digest.1}", "{re.digest.2}"),
        by_tag = manifest_files("", "{re.tag.1}", "{re.tag.2}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_extension_and_configs_name_them_all() {
        for (ext, mt) in KINDS {
            assert_eq!(extension(mt), Some(ext));
        }
        assert_eq!(extension(media_type::DOCKER_SCHEMA1), None);
        let rsync =
            vec!["rsync -aH --delay-updates --delete-delay rsync://w/wharf/ /srv/w/".into()];
        let site = ViewSite { root: "/srv/w", listen: "127.0.0.1:8080", rsync: &rsync };
        for server in Server::ALL {
            let c = server_config(server, &site);
            assert!(c.contains("/srv/w"), "{c}");
            assert!(c.contains("--delay-updates"), "{c}");
            for (ext, mt) in KINDS {
                assert!(c.contains(ext) && c.contains(mt), "{server:?} lacks {ext}: {c}");
            }
            assert_eq!(server.as_str().parse::<Server>(), Ok(server));
        }
    }
}
