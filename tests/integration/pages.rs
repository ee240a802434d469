//! Server-rendered pages: the sign-in gate, admin-only pages, security headers, escaping of
//! user-supplied text, page CSRF, and the start of the GitLab sign-in.

use crate::harness::*;

const PRIVATE_PAGES: &[&str] = &[
    "/",
    "/account",
    "/admin/users",
    "/admin/groups",
    "/admin/permissions",
    "/admin/settings?category=authentication",
];

const ADMIN_PAGES: &[&str] = &[
    "/admin/users",
    "/admin/groups",
    "/admin/permissions",
    "/admin/settings?category=authentication",
];

/// Asserts the security headers every HTML page must carry.
#[track_caller]
fn assert_security_headers(r: &Resp, what: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy: {}", r.describe()));
    assert!(csp.contains("default-src 'self'"), "{what}: CSP {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: CSP {csp}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {}",
        r.describe()
    );
    assert_eq!(
        r.header("referrer-policy"),
        Some("same-origin"),
        "{what}: {}",
        r.describe()
    );
}

#[test]
fn login_page_is_public_html_with_security_headers() {
    let lg = Labgate::start();
    let r = lg.client().get("/sessions/new");
    let page = r.expect_html(200);
    assert_security_headers(&r, "/sessions/new");
    assert!(page.contains("type=\"password\""), "password field: {page}");
    assert!(page.contains("<form"), "{page}");
    assert!(
        !page.contains("Log in with GitLab"),
        "GitLab is not configured: {page}"
    );
}

#[test]
fn private_pages_send_anonymous_visitors_to_sign_in() {
    let lg = Labgate::start();
    for path in PRIVATE_PAGES {
        let r = lg.client().get(path);
        let to = r.expect_redirect();
        let rest = to
            .strip_prefix("/sessions/new?return_to=")
            .unwrap_or_else(|| panic!("{path}: redirect to {to}"));
        let back = urldecode(rest.split('&').next().unwrap_or(""));
        let wanted = path.split('?').next().unwrap_or(path);
        assert!(
            back.starts_with(wanted),
            "{path}: return_to {back:?} in {to}"
        );
    }
}

#[test]
fn admin_pages_are_forbidden_to_non_admins() {
    let lg = Labgate::start();
    lg.create_user("pleb", USER_PASSWORD);
    let mut c = lg.login("pleb", USER_PASSWORD);
    for path in ADMIN_PAGES {
        let r = c.get(path);
        r.expect_html(403);
        assert_security_headers(&r, path);
    }
    // Their own pages are fine.
    c.get("/").expect_html(200);
    c.get("/account").expect_html(200);
}

#[test]
fn every_page_renders_for_the_admin_with_security_headers() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for path in PRIVATE_PAGES {
        let r = admin.get(path);
        r.expect_html(200);
        assert_security_headers(&r, path);
    }
    for path in ["/sessions/new", "/sessions/unauthorized"] {
        let r = lg.client().get(path);
        r.expect_html(200);
        assert_security_headers(&r, path);
    }
}

#[test]
fn pages_with_personal_data_are_not_cached() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for path in ["/", "/account", "/admin/users", "/admin/groups"] {
        let r = admin.get(path).expect(200);
        let cc = r.header("cache-control").unwrap_or("");
        assert!(cc.contains("no-store"), "{path}: {}", r.describe());
    }
}

#[test]
fn home_page_shows_who_you_are() {
    let lg = Labgate::start();
    lg.create_user("homer", USER_PASSWORD);
    lg.create_group("donut-lovers");
    lg.admin()
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "donut-lovers"), ("login", "homer")],
        )
        .expect(204);
    let page = lg.login("homer", USER_PASSWORD).get("/").expect_html(200);
    assert!(page.contains("homer"), "{page}");
    assert!(page.contains("donut-lovers"), "{page}");
}

#[test]
fn user_supplied_text_is_escaped_on_pages() {
    let lg = Labgate::start();
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x>";
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/users/create",
            &[
                ("login", "xss-user"),
                ("name", script),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    admin
        .post_form(
            "/api/user_groups/create",
            &[("name", img), ("description", script)],
        )
        .expect_json(200);
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", img), ("login", "xss-user")],
        )
        .expect(204);
    admin
        .post_form(
            "/api/permissions/add_group",
            &[("groupName", img), ("permission", "admin")],
        )
        .expect(204);
    admin
        .post_form(
            "/api/permissions/add_user",
            &[("login", "xss-user"), ("permission", "admin")],
        )
        .expect(204);
    let mut user = lg.login("xss-user", USER_PASSWORD);
    // (page, answer, texts that must be shown escaped). No page may contain either raw text.
    let pages = [
        ("/admin/users", admin.get("/admin/users"), vec![script]),
        ("/admin/groups", admin.get("/admin/groups"), vec![img]),
        (
            "/admin/permissions",
            admin.get("/admin/permissions"),
            vec![img],
        ),
        ("/ (as the user)", user.get("/"), vec![img]),
    ];
    for (path, r, shown) in pages {
        let page = r.expect_html(200);
        for raw in [script, img] {
            assert!(
                !page.contains(raw),
                "{path} contains the raw text {raw:?}:\n{page}"
            );
        }
        for raw in shown {
            assert!(
                html_unescape(&page).contains(raw),
                "{path} does not show {raw:?} (escaped):\n{page}"
            );
        }
    }
}

#[test]
fn page_post_without_csrf_field_is_refused() {
    let lg = Labgate::start();
    let c = lg.admin_client().with_xsrf(false);
    let r = c.clone().post_form("/sessions/logout", &[]);
    r.expect_html(403);
    // Still signed in.
    let v = c.clone().get("/api/users/current").expect_json(200);
    assert_eq!(v["isLoggedIn"], true, "{v}");
    let r = c
        .clone()
        .post_form("/sessions/logout", &[("csrf_token", "forged-token-value")]);
    r.expect_html(403);
}

#[test]
fn page_logout_with_csrf_field_ends_the_session() {
    let lg = Labgate::start();
    let mut c = lg.admin_client().with_xsrf(false);
    let page = c.get("/account").expect_html(200);
    let token = csrf_field(&page).unwrap_or_else(|| panic!("no csrf_token field:\n{page}"));
    let stolen = c.clone();
    let r = c.post_form("/sessions/logout", &[("csrf_token", &token)]);
    r.expect_redirect();
    stolen.clone().get("/api/users/current").expect_error(401);
    let to = stolen.clone().get("/account").expect_redirect();
    assert!(to.starts_with("/sessions/new"), "{to}");
}

#[test]
fn every_form_carries_the_csrf_token() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for path in PRIVATE_PAGES {
        let page = admin.get(path).expect_html(200);
        let forms = page.matches("<form").count();
        let post_forms = page.to_ascii_lowercase().matches("method=\"post\"").count();
        let tokens = page.matches("name=\"csrf_token\"").count();
        assert!(
            tokens >= post_forms,
            "{path}: {post_forms} POST forms of {forms} but {tokens} csrf_token fields"
        );
    }
}

#[test]
fn unauthorized_page_shows_generic_text_and_ignores_the_url() {
    let lg = Labgate::start();
    let r = lg.client().get(
        "/sessions/unauthorized?reason=Send+your+password+to+evil%40example.com&message=Hacked",
    );
    let page = html_unescape(&r.expect_html(200));
    assert!(
        page.contains(
            "You're not authorized to access this page. Please contact the administrator."
        ),
        "{page}"
    );
    assert!(!page.contains("evil@example.com"), "{page}");
    assert!(!page.contains("Hacked"), "{page}");
}

fn configure_gitlab(lg: &Labgate, url: &str) {
    let mut admin = lg.admin();
    // The URL first: once a secret is set, the URL only changes together with it.
    for (key, value) in [
        ("sonar.auth.gitlab.url", url),
        ("sonar.auth.gitlab.applicationId.secured", "app-123"),
        ("sonar.auth.gitlab.secret.secured", "gitlab-secret-1"),
        ("sonar.auth.gitlab.enabled", "true"),
    ] {
        admin
            .post_form("/api/settings/set", &[("key", key), ("value", value)])
            .expect(204);
    }
}

/// The query parameters of an absolute URL.
fn query_of(url: &str) -> Vec<(String, String)> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (urldecode(k), urldecode(v)))
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn login_page_offers_gitlab_once_configured() {
    let lg = Labgate::start();
    configure_gitlab(&lg, "https://gitlab.example.com");
    let page = lg.client().get("/sessions/new").expect_html(200);
    assert!(page.contains("Log in with GitLab"), "{page}");
}

#[test]
fn gitlab_sign_in_starts_with_state_and_pkce() {
    let lg = Labgate::start();
    configure_gitlab(&lg, "https://gitlab.example.com/gl/");
    let mut browser = lg.client();
    let r = browser.get("/sessions/init/gitlab?return_to=%2Faccount");
    assert_eq!(r.status, 302, "{}", r.describe());
    let loc = r.header("location").unwrap_or_default().to_string();
    assert!(
        loc.starts_with("https://gitlab.example.com/gl/oauth/authorize?"),
        "{loc}"
    );
    let q = query_of(&loc);
    assert_eq!(param(&q, "client_id"), Some("app-123"), "{loc}");
    assert_eq!(param(&q, "response_type"), Some("code"), "{loc}");
    assert_eq!(param(&q, "scope"), Some("openid email"), "{loc}");
    assert_eq!(param(&q, "code_challenge_method"), Some("S256"), "{loc}");
    let expected_redirect = format!("http://{}/oauth2/callback/gitlab", lg.addr);
    assert_eq!(
        param(&q, "redirect_uri"),
        Some(expected_redirect.as_str()),
        "{loc}"
    );
    let state = param(&q, "state").unwrap_or_default().to_string();
    assert!(state.len() >= 22, "state too short for 128 bits: {state:?}");
    let challenge = param(&q, "code_challenge").unwrap_or_default();
    assert!(challenge.len() >= 43, "S256 challenge: {challenge:?}");
    // Another start gets another state.
    let r2 = lg.client().get("/sessions/init/gitlab");
    let q2 = query_of(r2.header("location").unwrap_or_default());
    assert_ne!(param(&q2, "state"), Some(state.as_str()));
}

#[test]
fn gitlab_scopes_stay_openid_email_when_groups_are_needed() {
    let lg = Labgate::start();
    configure_gitlab(&lg, "https://gitlab.example.com");
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.gitlab.allowedGroups"),
                ("values", "acme"),
            ],
        )
        .expect(204);
    let r = lg.client().get("/sessions/init/gitlab");
    let q = query_of(r.header("location").unwrap_or_default());
    assert_eq!(param(&q, "scope"), Some("openid email"), "{}", r.describe());
}

#[test]
fn base_url_sets_the_gitlab_redirect_uri() {
    let lg = Labgate::start_with(&["--base-url", "https://labgate.example.com"], &[]);
    configure_gitlab(&lg, "https://gitlab.example.com");
    let r = lg.client().get("/sessions/init/gitlab");
    let q = query_of(r.header("location").unwrap_or_default());
    assert_eq!(
        param(&q, "redirect_uri"),
        Some("https://labgate.example.com/oauth2/callback/gitlab"),
        "{}",
        r.describe()
    );
}

#[test]
fn gitlab_callback_with_forged_state_is_refused() {
    let lg = Labgate::start();
    configure_gitlab(&lg, "https://gitlab.example.com");
    let mut browser = lg.client();
    browser.get("/sessions/init/gitlab").expect(302);
    let r = browser.get("/oauth2/callback/gitlab?code=abc&state=forged-state-value");
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
    assert!(
        r.set_cookie("labgate_session")
            .is_none_or(|c| c.to_ascii_lowercase().contains("max-age=0")),
        "a refused callback opened a session: {}",
        r.describe()
    );
    // Without any state at all.
    let r = lg.client().get("/oauth2/callback/gitlab?code=abc");
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
}

#[test]
fn gitlab_error_at_callback_is_refused_and_state_is_single_use() {
    let lg = Labgate::start();
    configure_gitlab(&lg, "https://gitlab.example.com");
    let mut browser = lg.client();
    let r = browser.get("/sessions/init/gitlab");
    let q = query_of(r.header("location").unwrap_or_default());
    let state = param(&q, "state").unwrap_or_default().to_string();
    let r = browser.get(&format!(
        "/oauth2/callback/gitlab?error=access_denied&state={}",
        urlencode(&state)
    ));
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
    let page = html_unescape(&browser.get("/sessions/unauthorized").expect_html(200));
    assert!(page.contains("You're not authorized"), "{page}");
    // The state was consumed.
    let r = browser.get(&format!(
        "/oauth2/callback/gitlab?code=abc&state={}",
        urlencode(&state)
    ));
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
    let v = browser.get("/api/users/current").expect_json(200);
    assert_eq!(v["isLoggedIn"], false, "{v}");
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let lg = Labgate::start();
    let r = lg.client().request("HEAD", "/sessions/new", &[], b"");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.body.is_empty(), "{}", r.describe());
    assert_security_headers(&r, "HEAD /sessions/new");
    let css = lg.client().request("HEAD", "/static/style.css", &[], b"");
    assert_eq!(css.status, 200);
    assert!(css.body.is_empty());
    // Private pages still need a session; writes still refuse HEAD.
    let home = lg.client().request("HEAD", "/", &[], b"");
    assert_eq!(home.status, 303, "{}", home.describe());
    let logout = lg.client().request("GET", "/sessions/logout", &[], b"");
    assert_eq!(logout.status, 405, "{}", logout.describe());
    assert_eq!(logout.header("allow"), Some("POST"));
    let api = lg.client().request("POST", "/api/system/status", &[], b"");
    assert_eq!(api.status, 405);
    assert_eq!(api.header("allow"), Some("GET, HEAD"));
}
