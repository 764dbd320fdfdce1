//! Mirror admins are told: a real SMTP server (aiosmtpd, writing each message delivered to
//! a maildir), a real nginx mirror that goes away and comes back, the injected clock for
//! the per-mirror limit, and an SMTP server that is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use wharf::clock::ManualClock;
use wharf::control::{Reply, Request};
use wharf::model::{MirrorPatch, RunOutcome};

use crate::harness::*;
use crate::mirrors_harness::*;

/// aiosmtpd on a free port, delivering into a maildir; stopped on drop.
struct Smtp {
    port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl Smtp {
    async fn start() -> Smtp {
        Smtp::start_with(&[]).await
    }

    /// With these options too (`--tlscert C --tlskey K`: STARTTLS required;
    /// `--smtpscert C --smtpskey K`: implicit TLS).
    async fn start_with(options: &[&std::ffi::OsStr]) -> Smtp {
        // The Debian/Fedora package installs it for the system Python.
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .unwrap_or_else(|| {
                panic!("aiosmtpd is not installed, so this test cannot run: {INSTALL_HINT}")
            });
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(options)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Smtp { port, maildir, _dir: dir, _child: child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not start");
    }

    /// Messages delivered so far, oldest first.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.maildir.join("new"))
                .map(|d| {
                    d.map(|e| e.unwrap().path())
                        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files.into_iter().map(|(_, p)| std::fs::read_to_string(p).unwrap()).collect()
    }

    /// Wait until `n` messages were delivered.
    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} messages expected, got {:?}", self.messages());
    }
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_default()
}

/// The audit log's details of `action`, newest first, once it has at least `n` (the sender
/// writes them after the SMTP server or webhook answered: wait for it).
async fn audit(wharf: &Wharf, action: &str, n: usize) -> Vec<String> {
    let mut found = Vec::new();
    for _ in 0..200 {
        let log = wharf.app().store.audit_log(100).await.unwrap();
        found = log.into_iter().filter(|e| e.action == action).map(|e| e.detail).collect();
        if found.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_admins_and_operators_hear_when_a_mirror_changes_standing() {
    let smtp = Smtp::start().await;
    // The operators' webhook: an nginx that logs each POST's body and answers 204.
    let hook_port = free_port();
    let hook = Nginx::launch_http(
        "log_format hook '$request_method $uri $content_type $request_body';",
        &format!(
            "location = /hook {{ access_log logs/hook.log hook; proxy_pass http://127.0.0.1:{hook_port}/ok; }}\n    \
             location = /ok {{ return 204; }}"
        ),
        Some(hook_port),
    )
    .await;
    let hook_log = hook.dir.path().join("logs/hook.log");
    let (upstream, url) = demo_upstream();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut setup = Setup::new(&url);
    setup.clock = clock.clone();
    setup.extra = format!(
        "[crawl]\nrequest_timeout = \"2s\"\nmirror_timeout = \"4s\"\nmax_failures = 1\n\
         [notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"none\"\n\
         from = \"Wharf <wharf@example.org>\"\noperators = [\"ops@example.org\"]\n\
         min_interval = \"1h\"\nlag_generations = 1\nwebhook_url = \"http://127.0.0.1:{hook_port}/hook\"\n",
        smtp.port
    );
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
    let Reply::User { user: ann, .. } = wharf
        .control(Request::UserAdd {
            name: "ann".into(),
            role: "mirror-admin".into(),
            password: None,
        })
        .await
    else {
        panic!()
    };
    // A bad address is refused at the edge and changes nothing.
    let bad =
        Request::UserEmail { name: "ann".into(), email: "ann@example.org\r\nBcc: x@y.org".into() };
    assert!(matches!(wharf.control(bad).await, Reply::Error(e) if e.contains("invalid e-mail")));
    let set = Request::UserEmail { name: "ann".into(), email: "ann@mirror.example.org".into() };
    assert!(matches!(wharf.control(set).await, Reply::User { .. }));

    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let nginx = Nginx::start(copy.path(), None, None).await;
    let port = nginx.port;
    let patch = MirrorPatch {
        urls: Some(vec![nginx.url("t/")]),
        owner: Some(ann.id),
        ..MirrorPatch::default()
    };
    let added = wharf.control(Request::MirrorAdd { name: "annm".into(), patch }).await;
    assert!(matches!(added, Reply::Mirror(_)), "{added:?}");
    wharf.crawl().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(smtp.messages().is_empty(), "a good crawl is no news");

    // The mirror goes away: disabled at its first failed crawl; its owner and the operator
    // each get a message of their own.
    drop(nginx);
    wharf.crawl().await;
    let mail = smtp.wait_for(2).await;
    let to: Vec<&str> = mail.iter().map(|m| header(m, "X-RcptTo")).collect();
    assert!(to.contains(&"ann@mirror.example.org") && to.contains(&"ops@example.org"), "{to:?}");
    for m in &mail {
        assert_eq!(header(m, "Subject"), "[Wharf] mirror annm was disabled automatically", "{m}");
        assert_eq!(header(m, "From"), "Wharf <wharf@example.org>");
        assert!(!m.contains("ann@mirror.example.org") || !m.contains("ops@example.org"), "{m}");
        for want in ["failed", "Last crawl", "/admin/mirrors/annm", "generation claimed"] {
            assert!(m.contains(want), "{want} in {m}");
        }
    }
    let sent = audit(&wharf, "notify.email", 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    // The webhook got the same notice as JSON.
    let mut posted = String::new();
    for _ in 0..100 {
        posted = std::fs::read_to_string(&hook_log).unwrap_or_default();
        if !posted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(posted.starts_with("POST /hook application/json {"), "{posted}");
    for want in [
        "\\x22event\\x22:\\x22auto-disabled\\x22",
        "\\x22mirror\\x22:\\x22annm\\x22",
        "\\x22current_generation\\x22:1",
    ] {
        assert!(posted.contains(want), "{want} in {posted}");
    }
    assert_eq!(audit(&wharf, "notify.webhook", 1).await, ["auto-disabled to the webhook"]);
    assert!(
        sent[0].starts_with("auto-disabled to ann@mirror.example.org, ops@example.org"),
        "{sent:?}"
    );

    // Back within the hour: re-enabled, but the notice is held back (one per hour).
    let nginx = Nginx::start(copy.path(), Some(port), None).await;
    wharf.crawl().await;
    assert_eq!(audit(&wharf, "notify.held", 1).await, ["re-enabled: within notify.min_interval"]);
    assert_eq!(smtp.messages().len(), 2);

    // Two hours on, a new generation the mirror does not have: it is one behind.
    clock.advance(chrono::Duration::hours(2));
    copy_tree(&upstream.path().join("demo/app"), &upstream.path().join("demo/extra")).await;
    assert_eq!(wharf.sync().await.generation_after, 2);
    wharf.crawl().await;
    let mail = smtp.wait_for(4).await;
    assert_eq!(header(&mail[3], "Subject"), "[Wharf] mirror annm is 1 generations behind");
    assert!(mail[3].contains("verified: 1 (current: 2)"), "{}", mail[3]);
    // Said once: the next crawl at the same lag is quiet.
    clock.advance(chrono::Duration::hours(2));
    wharf.crawl().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 4);

    // The SMTP server is gone: the crawl is not held up, the failure is recorded.
    drop(smtp);
    drop(nginx);
    clock.advance(chrono::Duration::hours(2));
    tokio::time::timeout(Duration::from_secs(20), wharf.crawl()).await.expect("the crawl ends");
    let failed = audit(&wharf, "notify.email", 3).await;
    assert!(
        failed[0].starts_with("auto-disabled to ") && failed[0].contains("failed"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notices_go_over_starttls_and_implicit_tls_to_a_server_whose_certificate_is_checked() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = issue(certs.path(), "smtp");
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (_upstream, url) = demo_upstream();
    let dead = format!("http://127.0.0.1:{}/", free_port());
    for (security, cert_flag, key_flag, trusted) in [
        ("starttls", "--tlscert", "--tlskey", true),
        ("tls", "--smtpscert", "--smtpskey", true),
        ("starttls", "--tlscert", "--tlskey", false),
    ] {
        let smtp = Smtp::start_with(&[
            cert_flag.as_ref(),
            cert.as_os_str(),
            key_flag.as_ref(),
            key.as_os_str(),
        ])
        .await;
        let ca_line = if trusted {
            format!("smtp_ca_file = \"{}\"\n", ca_file.display())
        } else {
            String::new()
        };
        let mut setup = Setup::new(&url);
        setup.extra = format!(
            "[crawl]\nrequest_timeout = \"1s\"\nmax_failures = 1\n\
             [notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"{security}\"\n\
             from = \"wharf@example.org\"\noperators = [\"ops@example.org\"]\n{ca_line}",
            smtp.port
        );
        let wharf = Wharf::launch(setup).await;
        assert_eq!(wharf.sync().await.outcome, RunOutcome::Ok);
        let patch = MirrorPatch { urls: Some(vec![dead.clone()]), ..MirrorPatch::default() };
        assert!(matches!(
            wharf.control(Request::MirrorAdd { name: "gone".into(), patch }).await,
            Reply::Mirror(_)
        ));
        wharf.crawl().await;
        let sent = audit(&wharf, "notify.email", 1).await;
        assert_eq!(sent.len(), 1, "{security}: {sent:?}");
        if trusted {
            assert_eq!(sent[0], "auto-disabled to ops@example.org", "{security}");
            let mail = smtp.wait_for(1).await;
            assert_eq!(
                header(&mail[0], "Subject"),
                "[Wharf] mirror gone was disabled automatically"
            );
        } else {
            // Without the CA the server's certificate is not trusted: nothing is sent.
            assert!(sent[0].contains("failed") && sent[0].contains("certificate"), "{sent:?}");
            assert!(smtp.messages().is_empty());
        }
    }
}
