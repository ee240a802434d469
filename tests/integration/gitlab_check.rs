//! The connection check: `POST /api/v2/labgate/gitlab-checks` and "Test connection" on the
//! GitLab tab, against the fake GitLab in each way a configuration can fail, and against a
//! GitLab behind TLS with a private CA. Each failing check is named and its detail names the
//! fix; the page shows what the API answers; nothing is created in GitLab; the secret is never
//! in the answer, the page or the log. Also on the tab: the banner of the last sign-in problem.

use crate::harness::*;
use crate::support_gitlab::{Endpoint, FakeGitlab, Fault};
use crate::tls_front::{free_port, Nginx, PrivateCa};
use serde_json::Value;
use std::time::{Duration, Instant};

const CHECKS: &str = "/api/v2/labgate/gitlab-checks";
const CONFIGS: &str = "/api/v2/dop-translation/gitlab-configurations";
const PAGE: &str = "/admin/settings?category=authentication";
const FORM: &str = "/admin/settings/gitlab/check";
const APP_ID: &str = "check-app-1";
const SECRET: &str = "gl-check-Secret-91c4e";
const NAMES: [&str; 5] = ["reach", "issuer", "scopes", "credentials", "redirectUri"];

/// labgate with every log line on, so that a secret in any of them would be seen.
fn labgate(args: &[&str]) -> Labgate {
    let mut launch = Launch::new().env("LABGATE_LOG", "debug");
    for a in args {
        launch = launch.arg(a);
    }
    launch.start()
}

/// A fake GitLab that knows labgate's application (redirect URI of `lg`).
fn gitlab_for(lg: &Labgate) -> FakeGitlab {
    let fake = FakeGitlab::start();
    register(&fake, lg);
    fake
}

/// Registers labgate's application in `fake`, with the redirect URI of `lg`.
fn register(fake: &FakeGitlab, lg: &Labgate) {
    let redirect = format!("http://{}/oauth2/callback/gitlab", lg.addr);
    fake.register_app(APP_ID, SECRET, &[&redirect], true);
}

/// labgate (with `args`) and a fake GitLab that knows it, stored as its GitLab.
fn configured(args: &[&str]) -> (Labgate, FakeGitlab) {
    let lg = labgate(args);
    let fake = gitlab_for(&lg);
    configure(&lg, &fake.url(), SECRET);
    (lg, fake)
}

/// Stores the GitLab configuration through the v2 API.
fn configure(lg: &Labgate, url: &str, secret: &str) {
    let body = serde_json::json!({ "url": url, "applicationId": APP_ID, "secret": secret });
    lg.admin().post_json(CONFIGS, &body).expect_json(200);
}

/// Runs the check through the API; asserts 200 and the answer's shape, returns it.
#[track_caller]
fn api_check(lg: &Labgate) -> Value {
    let r = lg.admin().request("POST", CHECKS, &[], b"");
    assert!(!r.text().contains(SECRET), "{}", r.describe());
    let v = r.expect_json(200);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {v}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NAMES, "{v}");
    for c in v["checks"].as_array().unwrap() {
        assert!(c["ok"].is_boolean() && c["detail"].is_string(), "{c}");
        assert_eq!(c.as_object().unwrap().len(), 3, "{c}");
    }
    let all_ok = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true);
    assert_eq!(v["ok"], all_ok, "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    v
}

/// One check of an answer.
#[track_caller]
fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {v}"))
}

/// Asserts that `name` failed with a detail holding every one of `fix`.
#[track_caller]
fn assert_fails(v: &Value, name: &str, fix: &[&str]) {
    let c = check(v, name);
    assert_eq!(c["ok"], false, "{name} should fail: {v}");
    let detail = c["detail"].as_str().unwrap();
    for part in fix {
        assert!(detail.contains(part), "{name}: {detail:?} lacks {part:?}");
    }
}

/// Asserts that `name` failed naming `fix`, and every other check passed.
#[track_caller]
fn assert_only_fails(v: &Value, name: &str, fix: &[&str]) {
    assert_fails(v, name, fix);
    for other in NAMES.iter().filter(|n| **n != name) {
        assert_eq!(check(v, other)["ok"], true, "{other} should pass: {v}");
    }
}

/// Asserts that every check after `reach` was skipped.
#[track_caller]
fn assert_rest_skipped(v: &Value) {
    for name in &NAMES[1..] {
        assert_eq!(check(v, name)["detail"], "skipped", "{v}");
    }
}

/// Presses "Test connection" like a browser (the CSRF field taken from the page); returns the
/// page as sent.
fn page_check(lg: &Labgate) -> String {
    let mut c = lg.admin_client().with_xsrf(false);
    let page = c.get(PAGE).expect_html(200);
    let token = csrf_field(&page).unwrap();
    c.post_form(FORM, &[("csrf_token", &token)])
        .expect_html(200)
}

/// The page shows each check of `v` as a row with its result and detail, escaped.
#[track_caller]
fn assert_page_shows(page: &str, v: &Value) {
    assert!(!page.contains(SECRET) && !html_unescape(page).contains(SECRET));
    for c in v["checks"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let start = page
            .find(&format!("<tr id=\"check-{name}\">"))
            .unwrap_or_else(|| panic!("no row for {name}:\n{page}"));
        let row = &page[start..];
        let row = html_unescape(&row[..row.find("</tr>").unwrap()]);
        let detail = c["detail"].as_str().unwrap();
        let (badge, shown) = match (c["ok"].as_bool().unwrap(), detail) {
            (true, _) => ("badge ok\">ok<", detail),
            (false, "skipped") => ("badge\">skipped<", "not run"),
            (false, _) => ("badge off\">failed<", detail),
        };
        assert!(row.contains(badge), "{name}: {badge} in {row}");
        assert!(row.contains(shown), "{name}: {shown:?} in {row}");
    }
    let verdict = if v["ok"] == true {
        "Every check passed"
    } else {
        "Some checks failed"
    };
    assert!(page.contains(verdict), "{page}");
}

/// Runs the check through the API and the page; asserts the page shows what the API answered
/// (a second run asks GitLab again: the fake must answer both alike).
fn both(lg: &Labgate) -> Value {
    let v = api_check(lg);
    let page = page_check(lg);
    assert_page_shows(&page, &v);
    v
}

/// GitLab got nothing but discovery and, `tokens` times, the token request of an unknown
/// code: nothing was created, redeemed or revoked.
#[track_caller]
fn assert_nothing_created(fake: &FakeGitlab, tokens: usize) {
    let requests = fake.requests();
    let mut token_posts = 0;
    for r in &requests {
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => {}
            ("POST", "/oauth/token") => {
                token_posts += 1;
                assert_eq!(
                    r.form_param("grant_type").as_deref(),
                    Some("authorization_code")
                );
                let code = r.form_param("code").unwrap_or_default();
                assert!(
                    code.len() >= 32 && code.chars().all(|c| c.is_ascii_hexdigit()),
                    "{code:?}"
                );
                assert!(r.form_param("refresh_token").is_none());
            }
            (method, path) => panic!("the check called GitLab's {method} {path}"),
        }
    }
    assert_eq!(token_posts, tokens, "{requests:?}");
    assert!(fake.issued_access_tokens().is_empty());
}

/// `reach` failed naming `fix`, every later check was skipped, and the secret stayed out of
/// the log.
#[track_caller]
fn assert_unreached(lg: &Labgate, v: &Value, fix: &[&str]) {
    assert_fails(v, "reach", fix);
    assert_rest_skipped(v);
    assert_secret_kept(lg);
}

#[track_caller]
fn assert_secret_kept(lg: &Labgate) {
    let log = lg.stderr().joined();
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
}

#[test]
fn a_gitlab_ready_for_sign_in_passes_every_check_and_nothing_is_created() {
    let (lg, fake) = configured(&[]);
    let page = lg.admin_client().get(PAGE).expect_html(200);
    assert!(
        page.contains(&format!("<form method=\"post\" action=\"{FORM}\"")),
        "{page}"
    );
    assert!(page.contains(">Test connection</button>"), "{page}");
    assert!(
        fake.requests().is_empty(),
        "showing the tab calls no GitLab"
    );
    let v = both(&lg);
    assert_eq!(v["ok"], true, "{v}");
    assert!(check(&v, "credentials")["detail"]
        .as_str()
        .unwrap()
        .contains("accepts the application ID and secret"));
    let redirect = format!("http://{}/oauth2/callback/gitlab", lg.addr);
    assert!(check(&v, "redirectUri")["detail"]
        .as_str()
        .unwrap()
        .contains(&redirect));
    assert_nothing_created(&fake, 2);
    let tokens = fake.requests_to("/oauth/token");
    assert_eq!(tokens[0].form_param("redirect_uri"), Some(redirect));
    assert_eq!(tokens[0].form_param("client_id").as_deref(), Some(APP_ID));
    assert_secret_kept(&lg);
    let log = lg.stderr().joined();
    assert!(
        log.contains("gitlab connection check by=\"admin\" ok=true"),
        "{log}"
    );
}

#[test]
fn without_a_configuration_the_check_says_what_to_set() {
    let lg = labgate(&[]);
    let page = lg.admin_client().get(PAGE).expect_html(200);
    assert!(
        !page.contains("Test connection"),
        "nothing to test yet:\n{page}"
    );
    let v = both(&lg);
    assert_eq!(v["ok"], false);
    assert_unreached(
        &lg,
        &v,
        &["not configured", "URL, application ID and secret"],
    );
}

#[test]
fn a_configuration_without_credentials_says_which_to_set() {
    let lg = labgate(&[]);
    let fake = gitlab_for(&lg);
    lg.store_settings(&[("sonar.auth.gitlab.url", &fake.url())]);
    let v = both(&lg);
    assert_eq!(check(&v, "reach")["ok"], true, "{v}");
    assert_fails(
        &v,
        "credentials",
        &["the application ID and the secret are not set", "copy both"],
    );
    assert_nothing_created(&fake, 0);
}

#[test]
fn an_unknown_host_name_is_named() {
    let lg = labgate(&[]);
    configure(&lg, "https://gitlab.labgate-check.invalid", SECRET);
    let v = both(&lg);
    assert_unreached(
        &lg,
        &v,
        &[
            "DNS name gitlab.labgate-check.invalid not found",
            "check the host name in the URL",
        ],
    );
}

#[test]
fn a_refused_connection_is_named() {
    let lg = labgate(&[]);
    let port = free_port();
    configure(&lg, &format!("http://127.0.0.1:{port}"), SECRET);
    let v = both(&lg);
    assert_unreached(
        &lg,
        &v,
        &[
            &format!("127.0.0.1:{port}"),
            "refused",
            "check the port in the URL",
        ],
    );
}

/// The one slow test here: the client's own call timeout (10 s) has to pass. The API alone
/// is asked; the page shows what the API answers (see the other tests).
#[test]
fn a_gitlab_that_does_not_answer_in_time_is_named() {
    let (lg, fake) = configured(&[]);
    fake.set_fault(Endpoint::Discovery, Fault::Delay(Duration::from_secs(12)));
    let started = Instant::now();
    let v = api_check(&lg);
    assert!(started.elapsed() < Duration::from_secs(12), "{v}");
    assert_unreached(&lg, &v, &["timed out", "proxy settings"]);
    assert_nothing_created(&fake, 0);
}

#[test]
fn an_http_error_status_is_named() {
    let (lg, fake) = configured(&[]);
    fake.set_fault(Endpoint::Discovery, Fault::Status(502));
    let v = both(&lg);
    assert_unreached(
        &lg,
        &v,
        &[
            "HTTP 502",
            "check that it is up and that this URL reaches it",
        ],
    );
    assert_nothing_created(&fake, 0);
}

#[test]
fn a_url_that_is_not_gitlab_is_named() {
    let lg = labgate(&[]);
    // labgate itself: it has no OpenID configuration (404).
    configure(&lg, &format!("http://{}", lg.addr), SECRET);
    let v = both(&lg);
    assert_unreached(&lg, &v, &["HTTP 404", "is this GitLab's URL"]);

    // A web server answering an HTML page for every path.
    let dir = TempDir::new("check-html");
    let web = Nginx::start(
        dir.path(),
        "listen 127.0.0.1:{port};\n\
         location / { default_type text/html; return 200 '<html><body>Welcome</body></html>'; }",
    );
    let url = format!("http://127.0.0.1:{}", web.port);
    lg.admin()
        .request(
            "PATCH",
            &format!("{CONFIGS}/gitlab-configuration"),
            &[("Content-Type", "application/merge-patch+json")],
            serde_json::json!({ "url": url, "secret": SECRET })
                .to_string()
                .as_bytes(),
        )
        .expect_json(200);
    let v = both(&lg);
    assert_unreached(&lg, &v, &["not JSON", "is this GitLab's URL"]);
}

#[test]
fn another_issuer_names_the_url_to_set() {
    let (lg, fake) = configured(&[]);
    fake.set_issuer(Some("https://gitlab.lab.example"));
    let v = both(&lg);
    let fix = "GitLab calls itself https://gitlab.lab.example: set the URL to that";
    assert_only_fails(&v, "issuer", &[fix]);
    assert_nothing_created(&fake, 2);
    assert_secret_kept(&lg);
}

#[test]
fn missing_scopes_are_named() {
    let (lg, fake) = configured(&[]);
    fake.set_scopes_supported(Some(&["api", "read_api", "openid"]));
    let v = both(&lg);
    assert_only_fails(
        &v,
        "scopes",
        &["does not offer the scope email", "GitLab 15"],
    );
    fake.set_scopes_supported(Some(&["api", "read_user"]));
    let v = api_check(&lg);
    assert_fails(
        &v,
        "scopes",
        &["does not offer the scopes openid and email"],
    );
    assert_nothing_created(&fake, 3);
    assert_secret_kept(&lg);
}

#[test]
fn a_rejected_secret_is_named_and_never_shown() {
    let lg = labgate(&[]);
    let fake = gitlab_for(&lg);
    let wrong = "gl-check-Wrong-Secret-0d2b";
    configure(&lg, &fake.url(), wrong);
    let v = both(&lg);
    let fix = [
        "GitLab rejects the application ID or secret",
        "copy both again",
    ];
    assert_only_fails(&v, "credentials", &fix);
    assert!(!v.to_string().contains(wrong), "{v}");
    assert!(!lg.stderr().joined().contains(wrong));
    let sent = fake.requests_to("/oauth/token");
    assert_eq!(sent[0].form_param("client_secret").as_deref(), Some(wrong));
    assert_nothing_created(&fake, 2);
}

#[test]
fn every_interface_without_a_base_url_names_the_redirect_uri_fix() {
    let (lg, fake) = configured(&["--listen", "0.0.0.0:0"]);
    let v = both(&lg);
    let fix = ["every network interface", "--base-url", "Server base URL"];
    assert_only_fails(&v, "redirectUri", &fix);
    assert_nothing_created(&fake, 2);
    assert_secret_kept(&lg);
}

#[test]
fn a_tls_gitlab_with_a_private_ca_needs_the_ca_file() {
    let dir = TempDir::new("check-tls");
    let ca = PrivateCa::create(&dir.path().join("ca"));
    let fake = FakeGitlab::start();
    let front = Nginx::tls_front(&dir.path().join("nginx"), &ca, &fake.url());
    let url = format!("https://127.0.0.1:{}", front.port);
    fake.set_issuer(Some(&url));

    let started = |args: &[&str]| {
        let lg = labgate(args);
        register(&fake, &lg);
        configure(&lg, &url, SECRET);
        lg
    };

    let lg = started(&[]);
    let v = both(&lg);
    assert_unreached(&lg, &v, &["not trusted", "--ca-file"]);
    assert!(fake.requests().is_empty(), "TLS stopped at the front");

    let trusting = started(&["--ca-file", ca.ca_pem.to_str().unwrap()]);
    let v = both(&trusting);
    assert_eq!(v["ok"], true, "{v}");
    assert_nothing_created(&fake, 2);
    assert_secret_kept(&trusting);
}

#[test]
fn only_admins_may_check() {
    let (lg, fake) = configured(&[]);
    assert_eq!(lg.client().request("POST", CHECKS, &[], b"").status, 401);
    lg.create_user("pat", USER_PASSWORD);
    let mut user = lg.login("pat", USER_PASSWORD);
    let r = user.request("POST", CHECKS, &[], b"");
    assert_eq!(r.expect_error(403), "Insufficient privileges");
    assert_eq!(user.post_form(FORM, &[]).status, 403);
    let mut token = lg.user_with_token("tok");
    assert_eq!(token.request("POST", CHECKS, &[], b"").status, 403);
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_secret_kept(&lg);
}

#[test]
fn the_check_needs_the_csrf_token_with_a_session() {
    let (lg, fake) = configured(&[]);
    let mut browser = lg.admin_client().with_xsrf(false);
    assert_eq!(browser.post_form(FORM, &[]).status, 403);
    assert_eq!(
        browser.post_form(FORM, &[("csrf_token", "forged")]).status,
        403
    );
    assert_eq!(browser.request("POST", CHECKS, &[], b"").status, 403);
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    // An admin's token carries no cookie, so no CSRF token either.
    let mut token = lg.token_client("admin");
    let v = token.request("POST", CHECKS, &[], b"").expect_json(200);
    assert_eq!(v["ok"], true, "{v}");
    assert_secret_kept(&lg);
}

/// Nine checks wait on a slow GitLab at once, one more than the pool has connections: all nine
/// reach GitLab while the first ones still wait, and a request that needs the database is
/// answered at once meanwhile, since no check holds a connection while GitLab is called.
#[test]
fn a_slow_gitlab_holds_no_database_connection() {
    const DELAY: Duration = Duration::from_secs(4);
    let (lg, fake) = configured(&[]);
    let mut admin = lg.admin();
    admin.get("/api/users/current").expect_json(200);
    fake.set_fault(Endpoint::Discovery, Fault::Delay(DELAY));
    let started = Instant::now();
    let slow: Vec<_> = (0..9)
        .map(|_| {
            let mut admin = lg.admin();
            std::thread::spawn(move || admin.request("POST", CHECKS, &[], b"").status)
        })
        .collect();
    let waiting = || (fake.call_count(Endpoint::Discovery) >= 9).then_some(());
    assert!(
        poll(DELAY / 2, waiting).is_some(),
        "only {} of 9 checks reached GitLab within {:?}: the others waited for a connection",
        fake.call_count(Endpoint::Discovery),
        DELAY / 2
    );
    admin.get("/api/users/search").expect_json(200);
    assert!(
        started.elapsed() < DELAY,
        "a request waited until {:?} for a connection",
        started.elapsed()
    );
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_secret_kept(&lg);
}

/// The last sign-in problem, as a failed sign-in leaves it in the store.
fn record_sign_in_problem(lg: &Labgate, seen_at: i64, problem: &str, fix: &str) {
    let conn = rusqlite::Connection::open(lg.data_dir().join("labgate.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO gitlab_sign_in_problem (id, seen_at, problem, fix) VALUES (1, ?1, ?2, ?3)",
        rusqlite::params![seen_at, problem, fix],
    )
    .unwrap();
}

#[test]
fn the_last_sign_in_problem_is_a_banner_on_the_gitlab_tab() {
    let lg = labgate(&[]);
    let mut c = lg.admin_client();
    let page = c.get(PAGE).expect_html(200);
    assert!(!page.contains("id=\"gitlab-sign-in-problem\""), "{page}");
    record_sign_in_problem(
        &lg,
        1_767_225_600,
        "token: GitLab refused the grant: invalid_scope <b>",
        "tick openid and email in the GitLab application",
    );
    let raw = c.get(PAGE).expect_html(200);
    assert!(!raw.contains("invalid_scope <b>"), "escaped:\n{raw}");
    let page = html_unescape(&raw);
    let start = page
        .find("id=\"gitlab-sign-in-problem\"")
        .unwrap_or_else(|| panic!("no banner:\n{page}"));
    let banner = &page[start..start + page[start..].find("</div>").unwrap()];
    let shown = [
        "2026-01-01 00:00 UTC",
        "token: GitLab refused the grant: invalid_scope <b>",
        "tick openid and email in the GitLab application",
        "stays until a sign-in with GitLab succeeds",
    ];
    let missing: Vec<_> = shown.iter().filter(|p| !banner.contains(*p)).collect();
    assert!(missing.is_empty(), "{missing:?} missing from {banner}");
    // A sign-in that works clears the row (see the sign-in tests); the banner goes with it.
    let conn = rusqlite::Connection::open(lg.data_dir().join("labgate.db")).unwrap();
    conn.execute("DELETE FROM gitlab_sign_in_problem", [])
        .unwrap();
    let page = c.get(PAGE).expect_html(200);
    assert!(!page.contains("id=\"gitlab-sign-in-problem\""), "{page}");
}
