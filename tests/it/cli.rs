//! The `wharf` binary: `sync` opens the store itself when no server runs and goes through the
//! control socket of a running `wharf serve` otherwise; config errors and sync failures exit
//! non-zero with a clear message.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::harness::*;

fn wharf_cmd(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wharf"));
    c.arg("--config").arg(config).env("RUST_LOG", "warn").env_remove("WHARF_CONFIG");
    c
}

/// `wharf serve` as a child process, once it answers its health check.
async fn serve(config: &Path, port: u16) -> tokio::process::Child {
    serve_with(config, port, &[]).await
}

/// [`serve`] with these environment variables (an empty value removes one).
async fn serve_with(config: &Path, port: u16, env: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = wharf_cmd(config);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let server = cmd
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_http(&format!("http://127.0.0.1:{port}/readyz"), &[200]).await;
    server
}

fn write_config(dir: &Path, port: u16, upstream: &str) -> std::path::PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{}\"\n[upstream]\nurl = \"{upstream}\"\n[sync]\nretries = 1\n[schedule]\nsync = \"{NEVER}\"\ncrawl = \"{NEVER}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_without_a_server_opens_the_store() {
    let reg = Registry::start().await;
    reg.push("single:v1", "single:v1", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), &reg.url());

    let out = run(wharf_cmd(&config).arg("sync")).await;
    assert!(out.starts_with("sync run #1: Ok"), "{out}");
    assert!(out.contains("generation 0 -> 1") && out.contains("3 blobs fetched"), "{out}");

    let out = run(wharf_cmd(&config).args(["sync", "--json"])).await;
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["id"], 2);
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["generation_after"], 1);
    assert_eq!(run["repos"][0]["blobs_fetched"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_goes_through_a_running_server() {
    let reg = Registry::start().await;
    reg.push("multi:v1", "multi:v1", &["--all"]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &reg.url());
    let mut server = serve(&config, port).await;
    let socket = dir.path().join("data/control.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    let mode =
        |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("data/wharf.redb"), 0o600);
    assert_eq!(mode("data/tmp"), 0o700);
    assert_eq!(mode("data"), 0o755);
    assert_eq!(mode("data/tree"), 0o755, "mirrors' rsync daemons read the tree");

    // The store is locked by the server; the CLI asks the server.
    let out = run(wharf_cmd(&config).arg("sync")).await;
    assert!(out.starts_with("sync run #1: Ok"), "{out}");
    let r = http().get(format!("http://127.0.0.1:{port}/v2/multi/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the server serves what the CLI's sync fetched");
    let out = run(wharf_cmd(&config).arg("healthcheck")).await;
    assert!(out.starts_with("ok"), "{out}");

    // Without the socket, the CLI would open the store directly: the lock refuses it clearly.
    std::fs::rename(&socket, dir.path().join("moved.sock")).unwrap();
    let err = run_failing(wharf_cmd(&config).arg("sync")).await;
    assert!(err.contains("open in another process"), "{err}");

    server.kill().await.unwrap();
    let err = run_failing(wharf_cmd(&config).arg("healthcheck")).await;
    assert!(err.contains("healthz"), "{err}");
}

/// glibc reads its arena limit from the environment before `main`: Wharf executes itself
/// again (same process) with two arenas, unless the environment already says how many.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_with_two_malloc_arenas_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "http://127.0.0.1:9");
    let arenas = |server: &tokio::process::Child| {
        let environ = std::fs::read(format!("/proc/{}/environ", server.id().unwrap())).unwrap();
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"MALLOC_ARENA_MAX="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    for (given, expected) in [("", "2"), ("4", "4")] {
        let mut server = serve_with(&config, port, &[("MALLOC_ARENA_MAX", given)]).await;
        assert_eq!(arenas(&server).as_deref(), Some(expected), "given {given:?}");
        server.kill().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_exit_non_zero_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[upstream]\nurl = \"http://127.0.0.1:1\"\nrepos = [\"x\"]\n").unwrap();
    let err = run_failing(wharf_cmd(&bad).arg("sync")).await;
    assert!(err.contains("unknown field `repos`"), "{err}");
    // Missing file.
    let err = run_failing(wharf_cmd(&dir.path().join("nope.toml")).arg("sync")).await;
    assert!(err.contains("nope.toml"), "{err}");
    // Env overrides are validated too.
    let config = write_config(dir.path(), free_port(), "http://127.0.0.1:1");
    let err =
        run_failing(wharf_cmd(&config).env("WHARF__SCHEDULE__SYNC", "every minute").arg("sync"))
            .await;
    assert!(err.contains("schedule.sync"), "{err}");
    // check-config reads the TLS files: garbage is refused, naming the file.
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let tls = dir.path().join("tls.toml");
    std::fs::write(
        &tls,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[server]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let err = run_failing(wharf_cmd(&tls).arg("check-config")).await;
    assert!(err.contains("tls.crt"), "{err}");
    let ok = run(wharf_cmd(&config).arg("check-config")).await;
    assert!(ok.contains("configuration ok"), "{ok}");
    // Unreachable upstream: the run is recorded as failed and the exit code says so.
    let out = wharf_cmd(&config).arg("sync").stdin(Stdio::null()).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Failed") && stdout.contains("cannot list repositories"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_commands_work_with_and_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("upstream");
    wharf::demo::write_sample_images(&demo).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &format!("oci:{}", demo.display()));
    let json = |out: String| -> serde_json::Value { serde_json::from_str(&out).unwrap() };

    // No server: the CLI opens the store itself.
    let out = run(wharf_cmd(&config).args([
        "mirror",
        "add",
        "--name",
        "m1",
        "--url",
        "http://127.0.0.1:9/wharf",
        "--country",
        "de",
        "--bandwidth",
        "1000",
        "--netblock",
        "10.1.0.0/16",
        "--content",
        "arm64",
        "--json",
    ]))
    .await;
    let m = json(out);
    assert_eq!((m["name"].as_str(), m["continent"].as_str()), (Some("m1"), Some("EU")));
    assert_eq!(m["urls"][0], "http://127.0.0.1:9/wharf/");
    let err = run_failing(
        wharf_cmd(&config).args(["mirror", "add", "--name", "m2", "--url", "ftp://x/"]),
    )
    .await;
    assert!(err.contains("http://"), "{err}");
    let err =
        run_failing(wharf_cmd(&config).args(["mirror", "set", "nope", "--active", "false"])).await;
    assert!(err.contains("no mirror named nope"), "{err}");

    // With a server: the same commands go through its control socket.
    let mut server = serve(&config, port).await;
    run(wharf_cmd(&config).args(["mirror", "set", "m1", "--active", "false", "--asn", "64500"]))
        .await;
    let list = json(run(wharf_cmd(&config).args(["mirror", "list", "--json"])).await);
    assert_eq!(list["mirrors"][0]["active"], false);
    assert_eq!(list["mirrors"][0]["asns"], serde_json::json!([64500]));
    assert_eq!(list["propagation"]["unknown"], 1);
    let text = run(wharf_cmd(&config).args(["mirror", "show", "m1"])).await;
    assert!(text.contains("opted-out") && text.contains("nothing verified"), "{text}");
    let out = wharf_cmd(&config).args(["crawl", "--json"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "a failed mirror makes the crawl exit 2");
    let crawl = json(String::from_utf8(out.stdout).unwrap());
    // Nothing listens on port 9: the crawl records the failure.
    assert!(crawl["results"][0]["error"].as_str().unwrap().contains("127.0.0.1:9"), "{crawl}");
    run(wharf_cmd(&config).args(["mirror", "remove", "m1"])).await;
    let list = json(run(wharf_cmd(&config).args(["mirror", "list", "--json"])).await);
    assert_eq!(list["mirrors"], serde_json::json!([]));
    server.kill().await.unwrap();
}

/// Run `wharf` with `input` on stdin.
async fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
    child.wait_with_output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn user_commands_hash_passwords_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("upstream");
    wharf::demo::write_sample_images(&demo).unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, &format!("oci:{}", demo.display()));

    // A password on stdin is used; nothing of it is printed.
    let out = run_with_stdin(
        wharf_cmd(&config).args(["user", "add", "alice", "--role", "operator", "--json"]),
        "a long enough secret\n",
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["user"]["role"], "operator");
    assert_eq!(reply["generated_password"], serde_json::Value::Null);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"));
    // Empty stdin: a password is generated and shown once.
    let out = run(wharf_cmd(&config).args(["user", "add", "bob", "--role", "mirror-admin"])).await;
    assert!(out.contains("generated password (shown once): "), "{out}");

    for (args, input, needle) in [
        (vec!["user", "add", "carol", "--role", "admin"], "", "invalid role"),
        (vec!["user", "add", "Carol", "--role", "operator"], "", "invalid user name"),
        (vec!["user", "add", "alice", "--role", "operator"], "", "already exists"),
        (vec!["user", "add", "dave", "--role", "operator"], "short\n", "at least 12"),
        (vec!["user", "passwd", "nobody"], "", "no user named nobody"),
        (vec!["user", "disable", "nobody"], "", "no user named nobody"),
    ] {
        let out = run_with_stdin(wharf_cmd(&config).args(&args), input).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // Through a running server: passwd and disable; the store keeps only argon2id hashes.
    let mut server = serve(&config, port).await;
    let out = run_with_stdin(
        wharf_cmd(&config).args(["user", "passwd", "alice"]),
        "another long secret\n",
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run(wharf_cmd(&config).args(["user", "disable", "bob"])).await;
    let users: serde_json::Value =
        serde_json::from_str(&run(wharf_cmd(&config).args(["user", "list", "--json"])).await)
            .unwrap();
    let names: Vec<(&str, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["disabled"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("alice", false), ("bob", true)]);
    assert!(!users.to_string().contains("argon2"), "hashes are never listed");
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    let store = wharf::store::Store::open(&dir.path().join("data/wharf.redb")).unwrap();
    let (user, hash) = store.user_credentials(&"alice".parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(user.name.as_str(), "alice");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(
        wharf::accounts::verify_password("another long secret".into(), hash.clone()).await.unwrap()
    );
    assert!(!wharf::accounts::verify_password("a long enough secret".into(), hash).await.unwrap());
}
