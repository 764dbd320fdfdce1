//! The admin UI over real HTTP: login, sessions, CSRF, throttling, roles, escaping.

use std::collections::HashMap;
use std::sync::Arc;

use wharf::clock::ManualClock;
use wharf::control::{Reply, Request};
use wharf::model::MirrorPatch;

use crate::harness::*;

/// A cookie-keeping client that does not follow redirects.
pub(crate) struct Browser {
    base: String,
    /// The client address a trusted proxy (127.0.0.1 in `admin_wharf`) reports for us.
    forwarded_for: Option<String>,
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
    pub(crate) fn new(wharf: &Wharf) -> Browser {
        Browser {
            base: wharf.url(""),
            forwarded_for: None,
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    /// A browser at `ip`, behind the trusted proxy.
    pub(crate) fn at(wharf: &Wharf, ip: &str) -> Browser {
        Browser { forwarded_for: Some(ip.to_owned()), ..Browser::new(wharf) }
    }

    pub(crate) async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, String, String) {
        let cookie =
            self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let req = match &self.forwarded_for {
            Some(ip) => req.header("X-Forwarded-For", ip),
            None => req,
        };
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

    pub(crate) async fn get(&mut self, path: &str) -> (u16, String, String) {
        let req = http().get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub(crate) async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String, String) {
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

    pub(crate) async fn post_owned(
        &mut self,
        path: &str,
        fields: Vec<(&str, String)>,
    ) -> (u16, String, String) {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post(path, &fields).await
    }

    /// Log in through the form; returns the POST's status.
    pub(crate) async fn login(&mut self, name: &str, password: &str) -> u16 {
        let (_, _, page) = self.get("/admin/login").await;
        let csrf = hidden(&page, "csrf");
        self.post("/admin/login", &[("name", name), ("password", password), ("csrf", &csrf)])
            .await
            .0
    }
}

/// The value of a hidden input in a page.
pub(crate) fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

pub(crate) async fn admin_wharf() -> (tempfile::TempDir, Arc<ManualClock>, Wharf) {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.clock = clock.clone();
    setup.server = "trusted_proxies = [\"127.0.0.1/32\"]\n".into();
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
async fn failed_logins_are_throttled_per_address_and_account() {
    let (_dir, clock, wharf) = admin_wharf().await;
    let mut a = Browser::at(&wharf, "198.51.100.1");
    for _ in 0..4 {
        assert_eq!(a.login("ben", "wrong-password-x").await, 401);
    }
    // After the free failures this address waits, even with the right password.
    assert_eq!(a.login("ben", "ben-password-123").await, 429);
    // The bucket is the client behind the proxy, not the proxy: from elsewhere, ben's
    // right password works at once.
    let mut b = Browser::at(&wharf, "198.51.100.2");
    assert_eq!(b.login("ben", "ben-password-123").await, 303);
    // That success clears nothing else: the first address still waits, for every account
    // (password spraying from one address is throttled too).
    assert_eq!(a.login("ben", "ben-password-123").await, 429);
    assert_eq!(a.login("olga", "olga-password-123").await, 429, "the address is throttled");
    clock.advance(chrono::Duration::seconds(3));
    assert_eq!(a.login("olga", "olga-password-123").await, 303);
    // Names that are no user names share one key: a 60 KiB name neither grows the table
    // nor escapes the count by changing.
    let mut huge = Browser::at(&wharf, "198.51.100.3");
    for i in 0..4 {
        let name = format!("{i}{}", "x".repeat(60 << 10));
        assert_eq!(huge.login(&name, "wrong-password-x").await, 401);
    }
    assert_eq!(huge.login(&"y".repeat(60 << 10), "wrong-password-x").await, 429);
    // IPv6 clients are one bucket per /64.
    let mut v6 = Browser::at(&wharf, "2001:db8:1:2::1");
    for _ in 0..4 {
        assert_eq!(v6.login("nobody", "whatever-password").await, 401);
    }
    let mut v6b = Browser::at(&wharf, "2001:db8:1:2::99");
    assert_eq!(v6b.login("olga", "olga-password-123").await, 429);
}

/// Checking and counting an attempt is one step: parallel guesses from one address get at
/// most the free failures (and the one that starts the backoff), the rest 429 at once.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_wrong_logins_cannot_all_pass_the_throttle() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let tries = (0..20).map(|_| {
        let mut b = Browser::at(&wharf, "203.0.113.9");
        async move { b.login("ben", "wrong-password-x").await }
    });
    let statuses = futures_util::future::join_all(tries).await;
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    assert!(unauthorized <= 4, "{statuses:?}");
    assert!(statuses.iter().all(|s| [401, 429, 503].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Many addresses at once: every answer is 401 or, when the hashing pool is busy, 503
    // with Retry-After; never an error.
    let tries = (0..20).map(|i| {
        let mut b = Browser::at(&wharf, &format!("203.0.113.{}", 100 + i));
        async move { b.login("nobody", "wrong-password-x").await }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert!(statuses.iter().all(|s| [401, 503].contains(s)), "{statuses:?}");
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
    let (_, _, login_page) = Browser::new(&wharf).get("/admin/login").await;
    let assets: Vec<&str> = login_page
        .match_indices("/admin/assets/admin-")
        .map(|(i, _)| login_page[i..].split('"').next().unwrap())
        .collect();
    let (css, js) = (assets[0].to_owned(), assets[1].to_owned());
    assert!(css.ends_with(".css") && js.ends_with(".js"), "{assets:?}");
    // (method, path, [anonymous, ann, ben, operator]) expected statuses. POSTs carry the
    // visitor's own CSRF token and fields no action accepts as complete, so only
    // authorization decides: 303 or 403/404 before any validation, 422/404 after it.
    let rows: &[(&str, &str, [u16; 4])] = &[
        ("GET", "/admin/", [303, 200, 200, 200]),
        ("GET", "/admin/login", [200, 200, 200, 200]),
        ("GET", &css, [200, 200, 200, 200]),
        ("GET", &js, [200, 200, 200, 200]),
        ("GET", "/admin/assets/admin-000000000000.css", [404, 404, 404, 404]),
        ("GET", "/admin/progress", [303, 403, 403, 200]),
        ("GET", "/admin/runs", [303, 403, 403, 200]),
        ("GET", "/admin/runs/1", [303, 403, 403, 200]),
        ("GET", "/admin/repos", [303, 403, 403, 200]),
        ("GET", "/admin/repos/demo/app", [303, 403, 403, 200]),
        ("GET", "/admin/mirrors", [303, 403, 403, 200]),
        ("GET", "/admin/explain?ip=192.0.2.1", [303, 403, 403, 200]),
        ("GET", "/admin/users", [303, 403, 403, 200]),
        ("GET", "/admin/audit", [303, 403, 403, 200]),
        ("GET", "/admin/mirrors/new", [303, 200, 200, 200]),
        ("GET", "/admin/mirrors/annm", [303, 200, 404, 200]),
        ("GET", "/admin/mirrors/benm", [303, 404, 200, 200]),
        ("GET", "/admin/mirrors/nosuch", [303, 404, 404, 404]),
        ("GET", "/admin/mirrors/..%2F..%2Fx", [303, 404, 404, 404]),
        ("POST", "/admin/mirrors/new", [303, 422, 422, 422]),
        ("POST", "/admin/mirrors/annm", [303, 422, 404, 422]),
        ("POST", "/admin/mirrors/benm", [303, 404, 422, 422]),
        ("POST", "/admin/mirrors/annm/approval", [303, 403, 403, 404]),
        ("POST", "/admin/mirrors/nosuch/approval", [303, 403, 403, 404]),
        ("POST", "/admin/users", [303, 403, 403, 422]),
        ("POST", "/admin/users/ann", [303, 403, 403, 404]),
        ("POST", "/admin/account", [303, 303, 303, 303]),
        ("POST", "/admin/sync", [303, 403, 403, 303]),
        ("POST", "/admin/crawl", [303, 403, 403, 303]),
        ("POST", "/admin/mirrors/annm/active", [303, 303, 404, 303]),
        ("POST", "/admin/mirrors/benm/active", [303, 404, 303, 303]),
        ("POST", "/admin/mirrors/nosuch/active", [303, 404, 404, 404]),
        ("POST", "/admin/mirrors/..%2F..%2Fx/active", [303, 404, 404, 404]),
        ("POST", "/admin/login", [400, 400, 400, 400]),
        ("POST", "/admin/logout", [303, 303, 303, 303]),
    ];
    let visitors = [None, Some("ann"), Some("ben"), Some("olga")];
    let mut sessions = Vec::new();
    for who in visitors {
        let mut b = Browser::new(&wharf);
        let mut csrf = String::new();
        if let Some(name) = who {
            assert_eq!(b.login(name, &format!("{name}-password-123")).await, 303);
            csrf = hidden(&b.get("/admin/").await.2, "csrf");
        }
        sessions.push((b, csrf));
    }
    for (method, path, expected) in rows {
        for ((who, want), (b, csrf)) in visitors.iter().zip(expected).zip(&mut sessions) {
            let (status, _, _) = match *method {
                "GET" => b.get(path).await,
                _ => {
                    let fields = [
                        ("csrf", csrf.as_str()),
                        ("active", "true"),
                        ("action", "none"),
                        ("name", ""),
                        ("role", "none"),
                    ];
                    b.post(path, &fields).await
                }
            };
            assert_eq!(status, *want, "{method} {path} as {who:?}");
        }
    }

    // CSRF: every POST with a missing or wrong token is refused and changes nothing.
    let (mut olga, _) = logged_in(&wharf, "olga").await;
    let audit_before = olga.get("/admin/audit").await.2;
    let mirrors_before = olga.get("/admin/mirrors").await.2;
    for (method, path, _) in rows.iter().filter(|r| r.0 == "POST" && r.1 != "/admin/login") {
        for token in [None, Some("forged")] {
            let mut fields = vec![("action", "approve"), ("active", "false"), ("name", "eve")];
            fields.extend(token.map(|t| ("csrf", t)));
            let (status, _, _) = olga.post(path, &fields).await;
            assert!(matches!(status, 400 | 403), "{method} {path} with {token:?}: {status}");
        }
    }
    assert_eq!(olga.get("/admin/").await.0, 200, "the session survived");
    let audit_after = olga.get("/admin/audit").await.2;
    assert_eq!(
        audit_before.matches("<tr>").count(),
        audit_after.matches("<tr>").count(),
        "nothing was audited, so nothing changed"
    );
    let mirrors_after = olga.get("/admin/mirrors").await.2;
    assert_eq!(mirrors_before.matches("Opt out").count(), mirrors_after.matches("Opt out").count());
    // What anonymous and foreign visitors tried changed nothing they could not change.
    let Reply::Mirror(d) = wharf.control(Request::MirrorShow { name: "annm".into() }).await else {
        panic!()
    };
    assert!(d.status.mirror.active);
}

/// The user id of each user, by name.
async fn user_ids(wharf: &Wharf) -> HashMap<String, u64> {
    match wharf.control(Request::UserList).await {
        Reply::Users(u) => u.into_iter().map(|u| (u.name.to_string(), u.id)).collect(),
        other => panic!("{other:?}"),
    }
}

pub(crate) async fn mirror_detail(
    wharf: &Wharf,
    name: &str,
) -> Option<wharf::control::MirrorDetail> {
    match wharf.control(Request::MirrorShow { name: name.into() }).await {
        Reply::Mirror(d) => Some(*d),
        _ => None,
    }
}

pub(crate) async fn logged_in(wharf: &Wharf, name: &str) -> (Browser, String) {
    let mut b = Browser::new(wharf);
    assert_eq!(b.login(name, &format!("{name}-password-123")).await, 303);
    let csrf = hidden(&b.get("/admin/").await.2, "csrf");
    (b, csrf)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_admin_registers_and_edits_a_mirror_and_an_operator_approves_it() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let (mut ann, csrf) = logged_in(&wharf, "ann").await;
    let (status, _, page) = ann.get("/admin/mirrors/new").await;
    assert_eq!(status, 200);
    assert!(page.contains("<label for=\"netblocks\">") && !page.contains("id=\"continent\""));
    let form = |name: &'static str, netblocks: &'static str, bandwidth: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_owned()),
            ("urls", "https://ann.example/wharf/\nhttp://ann.example/wharf/".to_owned()),
            ("country", "de".to_owned()),
            ("bandwidth", bandwidth.to_owned()),
            ("asns", "AS3320, 680".to_owned()),
            ("netblocks", netblocks.to_owned()),
            ("content", "all".to_owned()),
        ]
    };
    // Too wide a netblock and a bad bandwidth: refused, each error next to its field, input kept.
    let (status, _, page) =
        ann.post_owned("/admin/mirrors/new", form("ann-fast", "10.0.0.0/8", "lots")).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("id=\"netblocks-error\"") && page.contains("too wide"), "{page}");
    assert!(page.contains("id=\"bandwidth-error\""), "{page}");
    assert!(page.contains("10.0.0.0/8") && page.contains("value=\"ann-fast\""), "input kept");
    assert!(mirror_detail(&wharf, "ann-fast").await.is_none(), "nothing was created");
    let (status, _, page) =
        ann.post_owned("/admin/mirrors/new", form("Bad Name", "10.1.0.0/16", "100")).await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"name-error\""), "{page}");

    // A valid registration is pending, owned by ann, and gets no clients.
    let (status, location, _) = ann
        .post_owned("/admin/mirrors/new", form("ann-fast", "10.1.0.0/16\n2001:db8::/32", "1000"))
        .await;
    assert_eq!((status, location.as_str()), (303, "/admin/mirrors/ann-fast?notice=saved"));
    let d = mirror_detail(&wharf, "ann-fast").await.unwrap();
    let ids = user_ids(&wharf).await;
    assert!(d.status.mirror.pending && !d.status.mirror.enabled);
    assert_eq!(d.status.mirror.owner, Some(ids["ann"]));
    assert_eq!(d.status.mirror.asns, [680, 3320], "sorted, without duplicates");
    assert_eq!(d.status.mirror.country.as_deref(), Some("DE"));
    let (status, _, page) = ann.get("/admin/mirrors/ann-fast?notice=saved").await;
    assert_eq!(status, 200);
    assert!(page.contains("Pending") && page.contains("Saved."), "{page}");
    assert!(
        page.contains(
            "rsync -aH --modify-window=-1 --delay-updates --delete-delay rsync://127.0.0.1/wharf/ /srv/wharf/"
        ),
        "the rsync command for the whole tree: {page}"
    );
    assert!(!page.contains("id=\"approve\""), "mirror admins do not approve");
    let (_, _, home) = ann.get("/admin/").await;
    assert!(home.contains("ann-fast") && home.contains("pending"), "{home}");

    // Editing: the arm64 content set changes the rsync command; a wide netblock is refused
    // and changes nothing.
    let mut edit = form("ann-fast", "10.1.0.0/16", "1000");
    edit[7].1 = "arm64".into();
    let (status, _, _) = ann.post_owned("/admin/mirrors/ann-fast", edit).await;
    assert_eq!(status, 303);
    let (_, _, page) = ann.get("/admin/mirrors/ann-fast").await;
    assert!(
        page.contains("rsync://127.0.0.1/wharf/content-sets/arm64.txt")
            && page.contains("--files-from=/tmp/wharf-files.txt"),
        "{page}"
    );
    let (status, _, _) =
        ann.post_owned("/admin/mirrors/ann-fast", form("ann-fast", "2001:db8::/31", "1000")).await;
    assert_eq!(status, 422);
    let d = mirror_detail(&wharf, "ann-fast").await.unwrap();
    assert_eq!(d.status.mirror.content.to_string(), "arm64");
    assert_eq!(d.status.mirror.netblocks.len(), 1);

    // A registry URL: one with a path is refused next to its field; one at a host's root is
    // kept, and the page shows the server configurations that serve the copy as a registry.
    let mut reg = form("ann-fast", "10.1.0.0/16", "1000");
    reg[7].1 = "arm64".into();
    reg.push(("registry_url", "https://ann.example/wharf/".into()));
    let (status, _, page) = ann.post_owned("/admin/mirrors/ann-fast", reg.clone()).await;
    assert_eq!(status, 422);
    assert!(
        page.contains("id=\"registry_url-error\"") && page.contains("without a path"),
        "{page}"
    );
    reg.last_mut().unwrap().1 = "https://registry.ann.example/".into();
    assert_eq!(ann.post_owned("/admin/mirrors/ann-fast", reg).await.0, 303);
    let d = mirror_detail(&wharf, "ann-fast").await.unwrap();
    assert_eq!(d.status.mirror.registry_url.as_deref(), Some("https://registry.ann.example/"));
    let (_, _, page) = ann.get("/admin/mirrors/ann-fast").await;
    for id in ["registry-config-nginx", "registry-config-apache", "registry-config-caddy"] {
        assert!(page.contains(id), "{id}: {page}");
    }
    assert!(page.contains("listen 443;") && page.contains("not checked yet"), "{page}");

    // ben cannot see or change it, not even by its name.
    let (mut ben, ben_csrf) = logged_in(&wharf, "ben").await;
    assert_eq!(ben.get("/admin/mirrors/ann-fast").await.0, 404);
    let mut f = form("ann-fast", "10.1.0.0/16", "1");
    f[0].1 = ben_csrf.clone();
    assert_eq!(ben.post_owned("/admin/mirrors/ann-fast", f).await.0, 404);
    assert_eq!(
        ben.post("/admin/mirrors/ann-fast/approval", &[("csrf", &ben_csrf), ("action", "approve")])
            .await
            .0,
        403
    );

    // The operator approves it, may claim a /8, disables with a reason (required) and enables.
    let (mut olga, ocsrf) = logged_in(&wharf, "olga").await;
    let (_, _, page) = olga.get("/admin/mirrors/ann-fast").await;
    assert!(page.contains("id=\"approve\"") && page.contains("id=\"continent\""), "{page}");
    let approval = |action: &'static str, reason: &'static str| {
        vec![("csrf", ocsrf.clone()), ("action", action.to_owned()), ("reason", reason.to_owned())]
    };
    let (status, _, _) =
        olga.post_owned("/admin/mirrors/ann-fast/approval", approval("approve", "")).await;
    assert_eq!(status, 303);
    let d = mirror_detail(&wharf, "ann-fast").await.unwrap();
    assert!(d.status.mirror.enabled && !d.status.mirror.pending);
    let mut wide = form("ann-fast", "10.0.0.0/8", "1000");
    wide[0].1 = ocsrf.clone();
    assert_eq!(olga.post_owned("/admin/mirrors/ann-fast", wide).await.0, 303);
    assert_eq!(
        mirror_detail(&wharf, "ann-fast").await.unwrap().status.mirror.netblocks[0].to_string(),
        "10.0.0.0/8"
    );
    // ann may keep the /8 the operator gave when she edits something else, not widen it.
    let (status, _, _) =
        ann.post_owned("/admin/mirrors/ann-fast", form("ann-fast", "10.0.0.0/8", "2000")).await;
    assert_eq!(status, 303, "a wide netblock an operator gave stays editable");
    let (status, _, _) =
        ann.post_owned("/admin/mirrors/ann-fast", form("ann-fast", "11.0.0.0/8", "2000")).await;
    assert_eq!(status, 422, "but she cannot claim another");
    let mut reassign = form("ann-fast", "10.0.0.0/8", "1000");
    reassign[0].1 = ocsrf.clone();
    reassign.push(("owner", "nobody".into()));
    let (status, _, page) = olga.post_owned("/admin/mirrors/ann-fast", reassign.clone()).await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"owner-error\""), "{page}");
    reassign.last_mut().unwrap().1 = "ben".into();
    assert_eq!(olga.post_owned("/admin/mirrors/ann-fast", reassign.clone()).await.0, 303);
    assert_eq!(ben.get("/admin/mirrors/ann-fast").await.0, 200, "ben owns it now");
    assert_eq!(ann.get("/admin/mirrors/ann-fast").await.0, 404);
    reassign.last_mut().unwrap().1 = "ann".into();
    assert_eq!(olga.post_owned("/admin/mirrors/ann-fast", reassign).await.0, 303);
    let (status, _, page) =
        olga.post_owned("/admin/mirrors/ann-fast/approval", approval("disable", " ")).await;
    assert_eq!(status, 422);
    assert!(page.contains("id=\"reason-error\""), "{page}");
    assert!(mirror_detail(&wharf, "ann-fast").await.unwrap().status.mirror.enabled);
    let (status, _, _) = olga
        .post_owned(
            "/admin/mirrors/ann-fast/approval",
            approval("disable", "serves <stale> content"),
        )
        .await;
    assert_eq!(status, 303);
    let (_, _, home) = ann.get("/admin/").await;
    assert!(
        home.contains("serves &#60;stale&#62; content")
            || home.contains("serves &lt;stale&gt; content"),
        "{home}"
    );
    let (status, _, _) =
        olga.post_owned("/admin/mirrors/ann-fast/approval", approval("enable", "")).await;
    assert_eq!(status, 303);
    let d = mirror_detail(&wharf, "ann-fast").await.unwrap();
    assert!(d.status.mirror.enabled && d.status.mirror.disabled_reason.is_none());

    // Every change is in the audit log, with who made it.
    let (status, _, audit) = olga.get("/admin/audit").await;
    assert_eq!(status, 200);
    for needle in [
        "<td>cli</td><td>user.create</td><td>ann</td><td>role=mirror-admin</td>",
        "<td>ann</td><td>mirror.register</td><td>ann-fast</td>",
        "<td>ann</td><td>mirror.edit</td>",
        "<td>olga</td><td>mirror.approve</td>",
        "<td>olga</td><td>mirror.disable</td><td>ann-fast</td>",
        "serves &#60;stale&#62; content",
        "<td>olga</td><td>mirror.enable</td>",
    ] {
        let alt = needle.replace("&#60;", "&lt;").replace("&#62;", "&gt;");
        assert!(audit.contains(needle) || audit.contains(&alt), "{needle} in {audit}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_pages_runs_repositories_jobs_and_explain() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let (mut olga, csrf) = logged_in(&wharf, "olga").await;
    let (status, _, page) = olga.get("/admin/").await;
    assert_eq!(status, 200);
    for needle in ["tree size", "Next scheduled: sync: never", "id=\"sync-now\"", "<svg", "Run #1"]
    {
        assert!(page.contains(needle), "{needle} in {page}");
    }

    // Sync runs: list and detail per repository; an unknown run is not found.
    let (_, _, runs) = olga.get("/admin/runs").await;
    assert!(runs.contains("href=\"/admin/runs/1\""), "{runs}");
    let (status, _, run) = olga.get("/admin/runs/1").await;
    assert_eq!(status, 200);
    assert!(run.contains("demo/app") && run.contains("+1 added"), "{run}");
    assert_eq!(olga.get("/admin/runs/999").await.0, 404);
    assert_eq!(olga.get("/admin/runs/x").await.0, 404);

    // Repositories: search and tags with digest, type, platforms, size.
    let (_, _, repos) = olga.get("/admin/repos?q=multi").await;
    assert!(repos.contains("demo/multi") && !repos.contains("demo/app"), "{repos}");
    let (status, _, multi) = olga.get("/admin/repos/demo/multi").await;
    assert_eq!(status, 200);
    assert!(
        multi.contains("OCI index")
            && multi.contains("linux/amd64")
            && multi.contains("linux/arm64"),
        "{multi}"
    );
    assert!(multi.contains("<td>latest</td>") && multi.contains("sha256:"), "{multi}");
    assert_eq!(olga.get("/admin/repos/demo/nosuch").await.0, 404);

    // Sync now and Crawl now go through the scheduler; the progress JSON says when done.
    let (status, location, _) = olga.post("/admin/sync", &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    assert!(location.contains("notice=sync-"), "{location}");
    let mut finished = false;
    for _ in 0..100 {
        let (_, _, json) = olga.get("/admin/progress").await;
        let p: serde_json::Value = serde_json::from_str(&json).unwrap();
        if wharf.runs().await.len() == 2 && p["sync"]["running"] == false {
            finished = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(finished, "Sync now ran a sync");
    let (status, location, _) = olga.post("/admin/crawl", &[("csrf", &csrf)]).await;
    assert_eq!((status, location.as_str()), (303, "/admin/?notice=crawl-started"));
    let (_, _, page) = olga.get(&location).await;
    assert!(page.contains("Crawl started."), "{page}");

    // /explain for a typed-in address; a bad one is an error on the page.
    let (status, _, page) = olga.get("/admin/explain?ip=192.0.2.7").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"pick\"") && page.contains("the fallback"), "{page}");
    let (status, _, page) = olga.get("/admin/explain?ip=not-an-ip").await;
    assert_eq!(status, 422);
    assert!(page.contains("is not an IP address"), "{page}");

    // The mirror table filters by country, state and lag.
    for (name, country, active) in [("de-1", "DE", true), ("fr-1", "FR", false)] {
        let patch = MirrorPatch {
            urls: Some(vec![format!("http://{name}.example/")]),
            country: Some(country.into()),
            active: Some(active),
            ..MirrorPatch::default()
        };
        wharf.control(Request::MirrorAdd { name: name.into(), patch }).await;
    }
    let (_, _, page) = olga.get("/admin/mirrors?country=de").await;
    assert!(page.contains("de-1") && !page.contains("fr-1"), "{page}");
    let (_, _, page) = olga.get("/admin/mirrors?state=opted-out").await;
    assert!(!page.contains(">de-1<") && page.contains(">fr-1<"), "{page}");
    let (_, _, page) = olga.get("/admin/mirrors?min_lag=1").await;
    assert!(page.contains(">de-1<"), "unverified mirrors count as lagging: {page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_manage_users() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let (mut olga, csrf) = logged_in(&wharf, "olga").await;
    let (status, _, page) = olga
        .post("/admin/users", &[("csrf", &csrf), ("name", "carl"), ("role", "mirror-admin")])
        .await;
    assert_eq!(status, 200);
    let password = page
        .split("id=\"new-password\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_else(|| panic!("{page}"))
        .to_owned();
    let mut carl = Browser::new(&wharf);
    assert_eq!(carl.login("carl", &password).await, 303);
    assert_eq!(carl.get("/admin/users").await.0, 403);

    // Refused: a duplicate, a bad name, disabling oneself. Nothing changes.
    let (status, _, page) =
        olga.post("/admin/users", &[("csrf", &csrf), ("name", "carl"), ("role", "operator")]).await;
    assert_eq!(status, 422);
    assert!(page.contains("already exists") && page.contains("id=\"new-error\""), "{page}");
    let (status, _, _) = olga
        .post("/admin/users", &[("csrf", &csrf), ("name", "Carl!"), ("role", "operator")])
        .await;
    assert_eq!(status, 422);
    let (status, _, page) =
        olga.post("/admin/users/olga", &[("csrf", &csrf), ("action", "disable")]).await;
    assert_eq!(status, 422);
    assert!(page.contains("cannot disable yourself"));
    assert_eq!(
        olga.post("/admin/users/nobody", &[("csrf", &csrf), ("action", "disable")]).await.0,
        404
    );

    // A role change ends carl's sessions; logged in again, he is an operator.
    let (status, _, _) = olga
        .post("/admin/users/carl", &[("csrf", &csrf), ("action", "role"), ("role", "operator")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(carl.get("/admin/users").await.0, 303, "the role change ended the session");
    assert_eq!(carl.login("carl", &password).await, 303);
    assert_eq!(carl.get("/admin/users").await.0, 200, "carl is an operator now");

    // Reset: a new password is shown once; the old one stops working.
    let (_, _, page) =
        olga.post("/admin/users/carl", &[("csrf", &csrf), ("action", "reset-password")]).await;
    let new_password = page
        .split("id=\"new-password\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_owned();
    assert_ne!(new_password, password);
    assert_eq!(carl.get("/admin/").await.0, 303, "a password reset ends every session");
    assert_eq!(Browser::new(&wharf).login("carl", &password).await, 401);
    assert_eq!(carl.login("carl", &new_password).await, 303);

    // Disabling ends carl's session for good: enabling him again does not bring it back.
    olga.post("/admin/users/carl", &[("csrf", &csrf), ("action", "disable")]).await;
    olga.post("/admin/users/carl", &[("csrf", &csrf), ("action", "enable")]).await;
    assert_eq!(carl.get("/admin/").await.0, 303, "disable -> enable ended the session");
    assert_eq!(carl.login("carl", &new_password).await, 303);
    let (_, _, audit) = olga.get("/admin/audit").await;
    for action in ["user.create", "user.role", "user.reset-password", "user.disable", "user.enable"]
    {
        assert!(audit.contains(&format!("<td>olga</td><td>{action}</td><td>carl</td>")), "{audit}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_ui_can_have_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    wharf::demo::write_sample_images(dir.path()).unwrap();
    let admin_port = free_port();
    let mut setup = Setup::new(&format!("oci:{}", dir.path().display()));
    setup.extra = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n");
    let wharf = Wharf::launch(setup).await;
    assert_eq!(wharf.get("/admin/login").await.status(), 404, "not on the registry port");
    assert_eq!(wharf.get("/v2/").await.status(), 200);
    let admin = |path: &str| http().get(format!("http://127.0.0.1:{admin_port}{path}")).send();
    assert_eq!(admin("/admin/login").await.unwrap().status(), 200);
    assert_eq!(admin("/v2/").await.unwrap().status(), 404, "no registry on the admin port");
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_redirects_are_counted_by_tier_and_country_in_the_store() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let m: serde_json::Value = wharf.get("/v2/demo/app/manifests/1.0").await.json().await.unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let r = wharf.get(&format!("/v2/demo/app/blobs/{layer}")).await;
        assert_eq!(r.status(), 307);
    }
    let (store, _data) = wharf.stop_and_open_store().await;
    let counts = store.redirects_since(0).await.unwrap();
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        (counts[0].tier.as_str(), counts[0].country.as_str(), counts[0].count),
        ("fallback", "--", 3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_user_sets_where_notices_go_and_operators_see_it() {
    let (_dir, _clock, wharf) = admin_wharf().await;
    let (mut ann, csrf) = logged_in(&wharf, "ann").await;
    // A bad address: the page again with the reason, and nothing stored.
    let (status, _, page) = ann
        .post("/admin/account", &[("csrf", &csrf), ("email", "ann@example.org\r\nBcc: x@y.org")])
        .await;
    assert_eq!(status, 422);
    assert!(
        page.contains("invalid e-mail address") && page.contains("id=\"email-error\""),
        "{page}"
    );
    let (status, location, _) =
        ann.post("/admin/account", &[("csrf", &csrf), ("email", "ann@mirror.example.org")]).await;
    assert_eq!((status, location.as_str()), (303, "/admin/?notice=saved"));
    let (_, _, home) = ann.get("/admin/").await;
    assert!(home.contains("value=\"ann@mirror.example.org\""), "{home}");
    let (mut olga, csrf) = logged_in(&wharf, "olga").await;
    let (_, _, users) = olga.get("/admin/users").await;
    assert!(users.contains("value=\"ann@mirror.example.org\""), "{users}");
    // The operator changes it; a bad one is refused there too.
    let set = |email: &'static str| {
        vec![("csrf", csrf.clone()), ("action", "email".into()), ("email", email.into())]
    };
    assert_eq!(olga.post_owned("/admin/users/ann", set("not-an-address")).await.0, 422);
    assert_eq!(olga.post_owned("/admin/users/ann", set("")).await.0, 200);
    let (_, _, home) = ann.get("/admin/").await;
    assert!(home.contains("id=\"email\" name=\"email\" value=\"\""), "removed: {home}");
    let (_, _, audit) = olga.get("/admin/audit").await;
    assert!(audit.contains("user.email") && audit.contains("ann@mirror.example.org"), "{audit}");
}
