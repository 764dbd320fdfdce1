//! Keeps the dependency rule of ARCHITECTURE.md true: each module imports only what it may.

use std::collections::BTreeMap;
use std::path::Path;

/// module -> crate modules it may import (`config`, `clock` and `model` are open to all).
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &[]),
    ("clock", &[]),
    ("store", &["model"]),
    ("tree", &["model"]),
    ("sync", &["model", "store", "tree"]),
    ("crawl", &["model", "store"]),
    ("accounts", &["model", "store"]),
    ("geo", &["model", "store", "metrics"]),
    ("scheduler", &["model", "store", "sync", "crawl", "geo", "metrics"]),
    ("service", &["model", "store", "scheduler"]),
    ("control", &["model", "store", "sync", "crawl", "scheduler", "accounts", "service"]),
    ("registry", &["model", "store", "geo", "metrics", "edge"]),
    ("metrics", &["model"]),
    ("notify", &["model", "store", "crawl"]),
    ("tls", &[]),
    ("hooks", &["model", "config", "scheduler", "edge"]),
    ("edge", &["geo"]),
    ("fuzzing", &["model", "geo", "registry", "hooks", "admin", "config"]),
    (
        "admin",
        &["model", "store", "accounts", "crawl", "geo", "sync", "scheduler", "service", "edge"],
    ),
    // The living demo drives the app the way an operator does: an outer layer beside main.
    ("demo", &["model", "app", "service"]),
    ("public", &["model", "store", "registry", "admin"]),
    (
        "app",
        &[
            "model",
            "store",
            "tree",
            "sync",
            "crawl",
            "geo",
            "scheduler",
            "control",
            "registry",
            "accounts",
            "admin",
            "service",
            "edge",
            "config",
            "hooks",
            "tls",
            "metrics",
            "public",
            "notify",
        ],
    ),
];

/// Crates a module must not use.
const FORBIDDEN_CRATES: &[(&str, &[&str])] = &[
    ("model", &["actix_web", "askama", "reqwest", "redb"]),
    ("store", &["actix_web", "askama", "reqwest"]),
    ("tree", &["actix_web", "askama", "reqwest", "redb"]),
    ("sync", &["actix_web", "askama", "redb"]),
    ("crawl", &["actix_web", "askama", "redb"]),
    ("accounts", &["actix_web", "askama", "redb", "reqwest"]),
    ("geo", &["actix_web", "askama", "redb", "reqwest"]),
    ("scheduler", &["actix_web", "askama", "redb"]),
    ("control", &["actix_web", "askama", "redb"]),
    ("service", &["actix_web", "askama", "redb", "reqwest"]),
    ("registry", &["redb", "reqwest"]),
    ("admin", &["redb", "reqwest"]),
    ("public", &["redb", "reqwest"]),
    ("notify", &["actix_web", "askama", "redb"]),
    ("edge", &["askama", "redb", "reqwest"]),
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_point_inward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let forbidden: BTreeMap<&str, &[&str]> = FORBIDDEN_CRATES.iter().copied().collect();
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let module = rel.split(['/', '.']).next().unwrap().to_owned();
        if ["main", "lib", "output"].contains(&module.as_str()) {
            continue;
        }
        let may = allowed
            .get(module.as_str())
            .unwrap_or_else(|| panic!("{rel}: module {module} missing from ALLOWED"));
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let target: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let open = ["config", "clock", "model"].contains(&target.as_str());
                if target != module && !open && !may.contains(&target.as_str()) {
                    violations.push(format!("{rel}:{}: {module} imports {target}", n + 1));
                }
            }
            for krate in forbidden.get(module.as_str()).copied().unwrap_or_default() {
                if line.contains(&format!("{krate}::")) {
                    violations.push(format!("{rel}:{}: {module} uses {krate}", n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "dependency rule broken:\n{}", violations.join("\n"));
}
