//! The admin UI over real HTTP: login, sessions, CSRF, throttling, roles, escaping.

use std::collections::HashMap;
use std::sync::Arc;

use wharf::clock::ManualClock;
use wharf::control::{Reply, Request};
use wharf::model::MirrorPatch;

use crate::harness::*;

/// A cookie-keeping client that does not follow redirects.
struct Browser {
    base: String,
    cookies: HashMap<String, String>,
    /// Set-Cookie lines of the last response.
    set_cookies: Vec<String>,
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Browser {
    fn new(wharf: &Wharf) -> Browser {
        Browser { base: wharf.url(""), cookies: HashMap::new(), set_cookies: Vec::new() }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, String, String) {
        let cookie =
            self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let r = req.header("Cookie", cookie).send().await.unwrap();
        let status = r.status().as_u16();
        let location =
            r.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
        self.set_cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for line in &self.set_cookies {
            let pair = line.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || line.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        (status, location, r.text().await.unwrap())
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        let req = http().get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = http()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Log in through the form; returns the POST's status.
    async fn login(&mut self, name: &str, password: &str) -> u16 {
        let (_, _, page) = self.get("/admin/login").await;
        let csrf = hidden(&page, "csrf");
        self.post("/admin/login", &[("name", name), ("password", password), ("csrf", &csrf)])
            .await
            .0
    }
}

/// The value of a hidden input in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

async fn admin_wharf() -> (tempfile::TempDir, Arc<ManualClock>, Wharf) {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.clock = clock.clone();
    let wharf = Wharf::launch(setup).await;
    wharf.sync().await;
    for (name, role) in [("olga", "operator"), ("ann", "mirror-admin"), ("ben", "mirror-admin")] {
        let req = Request::UserAdd {
            name: name.into(),
            role: role.into(),
            password: Some(format!("{name}-password-123")),
        };
        assert!(matches!(wharf.control(req).await, Reply::User { .. }));
    }
    (dir, clock, wharf)
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sessions_csrf_and_roles() {
    let (_dir, clock, wharf) = admin_wharf().await;
    let mut anon = Browser::new(&wharf);
    for path in ["/admin/", "/admin/users"] {
        let (status, location, _) = anon.get(path).await;
        assert_eq!((status, location.as_str()), (303, "/admin/login"), "{path}");
    }
    let (status, _, _) = anon.post("/admin/logout", &[("csrf", "x")]).await;
    assert_eq!(status, 303, "logout needs a session");

    // The login form sets a CSRF cookie; a POST without the matching token is refused.
    let mut b = Browser::new(&wharf);
    let (status, _, page) = b.get("/admin/login").await;
    assert_eq!(status, 200);
    assert!(page.contains("<label for=\"password\">"), "accessible labels");
    let line = b.set_cookies.iter().find(|l| l.starts_with("wharf_login_csrf=")).unwrap().clone();
    assert!(
        line.contains("HttpOnly")
            && line.contains("SameSite=Strict")
            && line.contains("Path=/admin"),
        "{line}"
    );
    assert!(!line.contains("Secure"), "plain HTTP: no Secure flag");
    let (status, _, _) = b
        .post(
            "/admin/login",
            &[("name", "olga"), ("password", "olga-password-123"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(!b.cookies.contains_key("wharf_session"));

    // Wrong password: the form comes back with the error next to the field and the name kept.
    let csrf = hidden(&page, "csrf");
    let (status, _, page) = b
        .post("/admin/login", &[("name", "olga"), ("password", "nope-nope-nope"), ("csrf", &csrf)])
        .await;
    assert_eq!(status, 401);
    assert!(
        page.contains("wrong user name or password") && page.contains("value=\"olga\""),
        "{page}"
    );
    assert!(!b.cookies.contains_key("wharf_session"));

    // Session fixation: a session id planted before login is replaced, and is worth nothing.
    b.cookies.insert("wharf_session".into(), "planted".into());
    assert_eq!(b.login("olga", "olga-password-123").await, 303);
    let session = b.cookies["wharf_session"].clone();
    assert_ne!(session, "planted");
    let line = b.set_cookies.iter().find(|l| l.starts_with("wharf_session=")).unwrap();
    assert!(
        line.contains("HttpOnly")
            && line.contains("SameSite=Strict")
            && line.contains("Path=/admin"),
        "{line}"
    );
    let mut planted = Browser::new(&wharf);
    planted.cookies.insert("wharf_session".into(), "planted".into());
    assert_eq!(planted.get("/admin/").await.0, 303);

    // The operator sees the overview and the users page.
    let (status, _, home) = b.get("/admin/").await;
    assert_eq!(status, 200);
    assert!(home.contains("current generation") && home.contains("olga (operator)"), "{home}");
    let (status, _, users) = b.get("/admin/users").await;
    assert_eq!(status, 200);
    assert!(users.contains("ann") && users.contains("mirror-admin"));

    // A mirror admin sees only their own mirrors, and never an operator page.
    let ann_id = match wharf.control(Request::UserList).await {
        Reply::Users(u) => u.iter().find(|u| u.name.as_str() == "ann").unwrap().id,
        other => panic!("{other:?}"),
    };
    for (name, owner, reason) in
        [("ann-mirror", ann_id, "<script>alert(1)</script>"), ("ben-mirror", ann_id + 1, "")]
    {
        let patch = MirrorPatch {
            urls: Some(vec!["http://127.0.0.1:9/".into()]),
            owner: Some(owner),
            reason: Some(reason.into()),
            enabled: Some(reason.is_empty()),
            ..MirrorPatch::default()
        };
        assert!(matches!(
            wharf.control(Request::MirrorAdd { name: name.into(), patch }).await,
            Reply::Mirror(_)
        ));
    }
    let mut ann = Browser::new(&wharf);
    assert_eq!(ann.login("ann", "ann-password-123").await, 303);
    let (status, _, page) = ann.get("/admin/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("My mirrors") && page.contains("ann-mirror") && !page.contains("ben-mirror"),
        "{page}"
    );
    let escaped = page.contains("&lt;script&gt;") || page.contains("&#60;script&#62;");
    assert!(escaped && !page.contains("<script>alert"), "user text is escaped: {page}");
    assert!(!page.contains("current generation"), "no operator overview");
    let (status, _, page) = ann.get("/admin/users").await;
    assert_eq!(status, 403);
    assert!(page.contains("for operators"));

    // Logout needs the session's CSRF token; afterwards the session is gone.
    let (status, _, _) = b.post("/admin/logout", &[("csrf", "wrong")]).await;
    assert_eq!(status, 403);
    assert_eq!(b.get("/admin/").await.0, 200, "a refused logout changes nothing");
    let csrf = hidden(&b.get("/admin/").await.2, "csrf");
    let (status, location, _) = b.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!((status, location.as_str()), (303, "/admin/login"));
    let mut old = Browser::new(&wharf);
    old.cookies.insert("wharf_session".into(), session);
    assert_eq!(old.get("/admin/").await.0, 303, "the old session id is dead");

    // Idle timeout, and a disabled user's session ends.
    clock.advance(chrono::Duration::minutes(31));
    assert_eq!(ann.get("/admin/").await.0, 303, "idle sessions expire");
    assert_eq!(ann.login("ann", "ann-password-123").await, 303);
    assert_eq!(ann.get("/admin/").await.0, 200);
    wharf.control(Request::UserDisable { name: "ann".into() }).await;
    assert_eq!(ann.get("/admin/").await.0, 303);
    assert_eq!(ann.login("ann", "ann-password-123").await, 401, "disabled users cannot log in");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_throttled_with_backoff() {
    let (_dir, clock, wharf) = admin_wharf().await;
    let mut b = Browser::new(&wharf);
    for _ in 0..4 {
        assert_eq!(b.login("ben", "wrong-password-x").await, 401);
    }
    // After the free failures, even the right password waits.
    assert_eq!(b.login("ben", "ben-password-123").await, 429);
    clock.advance(chrono::Duration::seconds(3));
    assert_eq!(b.login("ben", "ben-password-123").await, 303);
    // Another account from the same address is throttled by address too.
    let mut c = Browser::new(&wharf);
    for _ in 0..4 {
        assert_eq!(c.login("nobody", "whatever-password").await, 401);
    }
    assert_eq!(c.login("olga", "olga-password-123").await, 429, "the address is throttled");
    clock.advance(chrono::Duration::seconds(3));
    assert_eq!(c.login("olga", "olga-password-123").await, 303);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_admin_opts_a_crawled_mirror_out_and_redirects_stop() {
    use crate::mirrors_harness::{Nginx, copy_tree, public_tempdir};
    let (_upstream, _clock, wharf) = admin_wharf().await;
    let copy = public_tempdir();
    copy_tree(wharf.tree(), &copy.path().join("t")).await;
    let nginx = Nginx::start(copy.path(), None, None).await;
    let ids: HashMap<String, u64> = match wharf.control(Request::UserList).await {
        Reply::Users(u) => u.into_iter().map(|u| (u.name.to_string(), u.id)).collect(),
        other => panic!("{other:?}"),
    };
    for (name, owner) in [("annm", ids["ann"]), ("benm", ids["ben"])] {
        let patch = MirrorPatch {
            urls: Some(vec![nginx.url("t/")]),
            owner: Some(owner),
            ..MirrorPatch::default()
        };
        wharf.control(Request::MirrorAdd { name: name.into(), patch }).await;
    }
    // ben's mirror is opted out by its admin beforehand, so only ann's serves.
    wharf
        .control(Request::MirrorSet {
            name: "benm".into(),
            patch: MirrorPatch { active: Some(false), ..Default::default() },
        })
        .await;
    let report = wharf.crawl().await;
    assert!(report.results.iter().all(|r| r.credited == Some(1)), "{report:#?}");
    let location = || async {
        let r = http().get(wharf.url("/v2/demo/app/manifests/1.0")).send().await.unwrap();
        let m: serde_json::Value = r.json().await.unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
        let r = http().get(wharf.url(&format!("/v2/demo/app/blobs/{layer}"))).send().await.unwrap();
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    assert!(location().await.starts_with(&nginx.url("t/")), "ann's mirror serves");

    let mut ann = Browser::new(&wharf);
    assert_eq!(ann.login("ann", "ann-password-123").await, 303);
    let (_, _, page) = ann.get("/admin/").await;
    let csrf = hidden(&page, "csrf");
    // ann cannot touch ben's mirror, not even by guessing its name.
    let (status, _, _) =
        ann.post("/admin/mirrors/benm/active", &[("csrf", &csrf), ("active", "true")]).await;
    assert_eq!(status, 404);
    let (status, _, _) =
        ann.post("/admin/mirrors/annm/active", &[("csrf", "forged"), ("active", "false")]).await;
    assert_eq!(status, 403, "CSRF");
    assert!(location().await.starts_with(&nginx.url("t/")), "refused forms change nothing");
    // One button opts out; redirects stop at once.
    let (status, location_header, _) =
        ann.post("/admin/mirrors/annm/active", &[("csrf", &csrf), ("active", "false")]).await;
    assert_eq!((status, location_header.as_str()), (303, "/admin/"));
    for _ in 0..10 {
        assert!(location().await.contains("/tree/blobs/"), "opted-out mirror still gets clients");
    }
    let (_, _, page) = ann.get("/admin/").await;
    assert!(page.contains("opted out") && page.contains("Opt in"), "{page}");
    let Reply::Mirror(d) = wharf.control(Request::MirrorShow { name: "benm".into() }).await else {
        panic!()
    };
    assert!(!d.status.mirror.active, "ben's mirror untouched");
}

/// Every admin route × {anonymous, mirror admin A, mirror admin B, operator}. New routes get
/// a row here; a row must say what each kind of visitor gets.
#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix_over_every_admin_route() {
    let (_upstream, _clock, wharf) = admin_wharf().await;
    let ids: HashMap<String, u64> = match wharf.control(Request::UserList).await {
        Reply::Users(u) => u.into_iter().map(|u| (u.name.to_string(), u.id)).collect(),
        other => panic!("{other:?}"),
    };
    for (name, owner) in [("annm", ids["ann"]), ("benm", ids["ben"])] {
        let patch = MirrorPatch {
            urls: Some(vec!["http://127.0.0.1:9/".into()]),
            owner: Some(owner),
            ..Default::default()
        };
        wharf.control(Request::MirrorAdd { name: name.into(), patch }).await;
    }
    // (method, path, [anonymous, ann, ben, operator]) expected statuses. POSTs carry the
    // visitor's own CSRF token, so only authorization decides.
    let rows: &[(&str, &str, [u16; 4])] = &[
        ("GET", "/admin/", [303, 200, 200, 200]),
        ("GET", "/admin/users", [303, 403, 403, 200]),
        ("GET", "/admin/login", [200, 200, 200, 200]),
        ("POST", "/admin/mirrors/annm/active", [303, 303, 404, 303]),
        ("POST", "/admin/mirrors/benm/active", [303, 404, 303, 303]),
        ("POST", "/admin/mirrors/nosuch/active", [303, 404, 404, 404]),
        ("POST", "/admin/mirrors/..%2F..%2Fx/active", [303, 404, 404, 404]),
    ];
    let visitors = [None, Some("ann"), Some("ben"), Some("olga")];
    for (method, path, expected) in rows {
        for (who, want) in visitors.iter().zip(expected) {
            let mut b = Browser::new(&wharf);
            let mut csrf = String::new();
            if let Some(name) = who {
                assert_eq!(b.login(name, &format!("{name}-password-123")).await, 303);
                csrf = hidden(&b.get("/admin/").await.2, "csrf");
            }
            let (status, _, _) = match *method {
                "GET" => b.get(path).await,
                _ => b.post(path, &[("csrf", &csrf), ("active", "true")]).await,
            };
            assert_eq!(status, *want, "{method} {path} as {who:?}");
        }
    }
    // What anonymous and foreign visitors tried changed nothing they could not change.
    let Reply::Mirror(d) = wharf.control(Request::MirrorShow { name: "annm".into() }).await else {
        panic!()
    };
    assert!(d.status.mirror.active);
}
