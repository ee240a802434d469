//! Authentication: local sign-in, sessions and their cookies, CSRF, tokens (Bearer and Basic),
//! Basic login:password, refusal of bad credentials, lockout after repeated failures.

use crate::harness::*;

#[test]
fn login_sets_session_and_xsrf_cookies() {
    let lg = Labgate::start();
    let mut c = lg.client();
    let r = c
        .post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .expect(204);
    let session = r
        .set_cookie("labgate_session")
        .unwrap_or_else(|| panic!("no session cookie: {}", r.describe()))
        .to_ascii_lowercase();
    assert!(session.contains("httponly"), "{session}");
    assert!(session.contains("samesite=lax"), "{session}");
    assert!(session.contains("path=/"), "{session}");
    assert!(
        !session.contains("secure"),
        "http base URL, no Secure: {session}"
    );
    let xsrf = r
        .set_cookie("XSRF-TOKEN")
        .unwrap_or_else(|| panic!("no XSRF-TOKEN cookie: {}", r.describe()))
        .to_ascii_lowercase();
    assert!(!xsrf.contains("httponly"), "scripts must read it: {xsrf}");
    let value = c.cookie("labgate_session").expect("session stored");
    assert!(value.len() >= 20, "session id looks too short: {value}");
    assert!(
        !value.contains("admin"),
        "session id must be opaque: {value}"
    );
}

#[test]
fn https_base_url_marks_the_session_cookie_secure() {
    let lg = Labgate::start_with(&["--base-url", "https://labgate.example.com"], &[]);
    let mut c = lg.client();
    let r = c
        .post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .expect(204);
    let session = r
        .set_cookie("labgate_session")
        .unwrap_or_else(|| panic!("no session cookie: {}", r.describe()))
        .to_ascii_lowercase();
    assert!(session.contains("secure"), "{session}");
}

#[test]
fn login_with_wrong_password_answers_401_json() {
    let lg = Labgate::start();
    let mut c = lg.client();
    let r = c.post_form(
        "/api/authentication/login",
        &[("login", "admin"), ("password", "not-the-password")],
    );
    r.expect_error(401);
    assert!(
        r.set_cookie("labgate_session").is_none(),
        "{}",
        r.describe()
    );
}

#[test]
fn login_with_unknown_login_answers_401_json() {
    let lg = Labgate::start();
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "nobody"), ("password", "whatever-password")],
        )
        .expect_error(401);
}

#[test]
fn each_login_issues_a_new_session_id() {
    let lg = Labgate::start();
    let a = lg.admin_client();
    let b = lg.admin_client();
    assert_ne!(a.cookie("labgate_session"), b.cookie("labgate_session"));
    // Signing in again from the same browser replaces the id too.
    let mut c = a.clone();
    let before = c.cookie("labgate_session").map(str::to_string);
    c.post_form(
        "/api/authentication/login",
        &[("login", "admin"), ("password", ADMIN_PASSWORD)],
    )
    .expect(204);
    assert_ne!(before.as_deref(), c.cookie("labgate_session"));
}

#[test]
fn logout_ends_the_session() {
    let lg = Labgate::start();
    let mut c = lg.admin_client();
    let stolen = c.clone();
    c.get("/api/users/current").expect_json(200);
    c.post_form("/api/authentication/logout", &[]).expect(204);
    // A copy of the old cookie no longer authenticates: it is refused, not anonymous.
    let mut old = stolen;
    old.get("/api/users/current").expect_error(401);
}

#[test]
fn cookie_post_without_xsrf_header_is_refused() {
    let lg = Labgate::start();
    let mut c = lg.admin_client().with_xsrf(false);
    let msg = c
        .post_form("/api/user_groups/create", &[("name", "csrf-victim")])
        .expect_error(403);
    assert_eq!(msg, "Invalid or missing CSRF token");
    let groups = lg
        .admin()
        .get_query("/api/user_groups/search", &[("q", "csrf-victim")])
        .expect_json(200);
    assert!(names(&groups["groups"]).is_empty(), "{groups}");
}

#[test]
fn cookie_post_with_wrong_xsrf_header_is_refused() {
    let lg = Labgate::start();
    let mut c = lg.admin_client().with_xsrf(false);
    let msg = c
        .request(
            "POST",
            "/api/user_groups/create",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-XSRF-TOKEN", "0123456789abcdef0123456789abcdef"),
            ],
            b"name=csrf-victim",
        )
        .expect_error(403);
    assert_eq!(msg, "Invalid or missing CSRF token");
}

#[test]
fn cookie_post_with_xsrf_header_is_accepted() {
    let lg = Labgate::start();
    let mut c = lg.admin_client();
    c.post_form("/api/user_groups/create", &[("name", "with-csrf")])
        .expect_json(200);
}

#[test]
fn cookie_get_needs_no_xsrf_header() {
    let lg = Labgate::start();
    let mut c = lg.admin_client().with_xsrf(false);
    let v = c.get("/api/users/current").expect_json(200);
    assert_eq!(v["login"], "admin");
}

#[test]
fn bearer_token_authenticates() {
    let lg = Labgate::start();
    lg.create_user("bea", USER_PASSWORD);
    let token = lg.token_for("bea");
    let v = lg
        .client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(v["isLoggedIn"], true, "{v}");
    assert_eq!(v["login"], "bea", "{v}");
}

#[test]
fn basic_token_with_empty_password_authenticates() {
    let lg = Labgate::start();
    lg.create_user("basil", USER_PASSWORD);
    let token = lg.token_for("basil");
    let v = lg
        .client()
        .basic(&token, "")
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(v["login"], "basil", "{v}");
}

#[test]
fn basic_login_and_password_authenticates() {
    let lg = Labgate::start();
    lg.create_user("bart", USER_PASSWORD);
    let v = lg
        .client()
        .basic("bart", USER_PASSWORD)
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(v["login"], "bart", "{v}");
}

#[test]
fn token_and_basic_posts_need_no_csrf_token() {
    let lg = Labgate::start();
    let token = lg.token_for("admin");
    lg.client()
        .bearer(&token)
        .post_form("/api/user_groups/create", &[("name", "by-bearer")])
        .expect_json(200);
    lg.client()
        .basic(&token, "")
        .post_form("/api/user_groups/create", &[("name", "by-basic-token")])
        .expect_json(200);
    lg.client()
        .basic("admin", ADMIN_PASSWORD)
        .post_form("/api/user_groups/create", &[("name", "by-basic-login")])
        .expect_json(200);
}

#[test]
fn anonymous_current_user_is_not_logged_in() {
    let lg = Labgate::start();
    let v = lg.client().get("/api/users/current").expect_json(200);
    assert_eq!(v["isLoggedIn"], false, "{v}");
}

#[test]
fn current_user_describes_the_admin() {
    let lg = Labgate::start();
    let v = lg.admin().get("/api/users/current").expect_json(200);
    assert_eq!(v["isLoggedIn"], true, "{v}");
    assert_eq!(v["login"], "admin", "{v}");
    assert_eq!(v["local"], true, "{v}");
    assert!(v["name"].is_string(), "{v}");
    assert!(names(&v["groups"]).contains(&"users".to_string()), "{v}");
    let global = &v["permissions"]["global"];
    assert!(
        global
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == "admin")),
        "{v}"
    );
}

/// The answer of `api/users/current` is kept with a cached caller (token or session): a change
/// to the user, its groups or its permissions shows in the very next answer.
#[test]
fn current_user_follows_each_change_at_once() {
    let lg = Labgate::start();
    lg.create_user("cur", USER_PASSWORD);
    let token = lg.token_for("cur");
    let me = || {
        lg.client()
            .bearer(&token)
            .get("/api/users/current")
            .expect_json(200)
    };
    let first = me();
    assert_eq!(me(), first, "the same answer while nothing changes");
    lg.admin()
        .post_form(
            "/api/users/update",
            &[("login", "cur"), ("name", "Renamed")],
        )
        .expect_json(200);
    assert_eq!(me()["name"], "Renamed");
    lg.admin()
        .post_form("/api/user_groups/create", &[("name", "extra")])
        .expect_json(200);
    lg.admin()
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "extra"), ("login", "cur")],
        )
        .expect(204);
    assert!(names(&me()["groups"]).contains(&"extra".to_string()));
    lg.admin()
        .post_form(
            "/api/permissions/add_group",
            &[("groupName", "extra"), ("permission", "admin")],
        )
        .expect(204);
    let v = me();
    assert!(
        v["permissions"]["global"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == "admin")),
        "{v}"
    );
}

/// Every kind of bad credential, as a client; `lg` must have a user `carol` with a revoked
/// token.
fn bad_credentials(lg: &Labgate) -> Vec<(&'static str, Client)> {
    lg.create_user("carol", USER_PASSWORD);
    let revoked = lg.token_for("carol");
    let r = lg
        .client()
        .bearer(&revoked)
        .get("/api/user_tokens/search")
        .expect_json(200);
    let name = r["userTokens"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("token list: {r}"))
        .to_string();
    lg.admin()
        .post_form(
            "/api/user_tokens/revoke",
            &[("login", "carol"), ("name", &name)],
        )
        .expect(204);
    let mut forged_cookie = lg.client();
    forged_cookie.cookies.insert(
        "labgate_session".into(),
        "0123456789abcdef0123456789abcdef0123456789abcdef".into(),
    );
    vec![
        (
            "unknown bearer token",
            lg.client()
                .bearer("lgu_0000000000000000000000000000000000000000"),
        ),
        ("malformed bearer token", lg.client().bearer("nonsense")),
        ("revoked bearer token", lg.client().bearer(&revoked)),
        (
            "revoked token as basic user",
            lg.client().basic(&revoked, ""),
        ),
        (
            "basic wrong password",
            lg.client().basic("carol", "wrong-password-123"),
        ),
        (
            "basic unknown login",
            lg.client().basic("nobody", "wrong-password-123"),
        ),
        ("malformed basic", lg.client().authorization("Basic !!!")),
        ("unknown scheme", lg.client().authorization("Digest abc")),
        ("forged session cookie", forged_cookie),
    ]
}

#[test]
fn bad_credentials_answer_401_on_every_endpoint() {
    let lg = Labgate::start();
    let gets = [
        "/api/system/status",
        "/api/server/version",
        "/api/system/health",
        "/api/users/current",
        "/api/users/search",
        "/api/user_groups/search",
        "/api/user_groups/users?name=users",
        "/api/permissions/groups?permission=admin",
        "/api/permissions/users?permission=admin",
        "/api/user_tokens/search",
        "/api/settings/values",
        "/api/v2/dop-translation/gitlab-configurations",
    ];
    let posts: [(&str, &[(&str, &str)]); 4] = [
        ("/api/user_groups/create", &[("name", "bad-cred-group")]),
        ("/api/users/deactivate", &[("login", "carol")]),
        ("/api/user_tokens/generate", &[("name", "bad-cred-token")]),
        ("/api/authentication/logout", &[]),
    ];
    let mut failures = Vec::new();
    for (kind, client) in bad_credentials(&lg) {
        // Wrong passwords may also feed the sign-in throttle: 429 is a refusal too.
        let refused = |status: u16| status == 401 || (kind.starts_with("basic") && status == 429);
        for path in gets {
            let r = client.clone().get(path);
            if !refused(r.status) || r.header("content-type") != Some("application/json") {
                failures.push(format!("{kind}: GET {path}: {}", r.describe()));
            }
        }
        for (path, params) in posts {
            let r = client.clone().post_form(path, params);
            if !refused(r.status) {
                failures.push(format!("{kind}: POST {path}: {}", r.describe()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was done with them.
    let groups = lg
        .admin()
        .get_query("/api/user_groups/search", &[("q", "bad-cred")])
        .expect_json(200);
    assert!(names(&groups["groups"]).is_empty(), "{groups}");
}

#[test]
fn bad_credentials_never_fall_back_to_anonymous_on_current_user() {
    let lg = Labgate::start();
    for (kind, mut client) in bad_credentials(&lg) {
        let r = client.get("/api/users/current");
        assert_eq!(r.status, 401, "{kind}: {}", r.describe());
        r.expect_error(401);
    }
}

#[test]
fn validate_reports_good_credentials_as_valid() {
    let lg = Labgate::start();
    let token = lg.token_for("admin");
    for mut c in [
        lg.client().bearer(&token),
        lg.client().basic(&token, ""),
        lg.client().basic("admin", ADMIN_PASSWORD),
        lg.admin(),
    ] {
        let v = c.get("/api/authentication/validate").expect_json(200);
        assert_eq!(v, serde_json::json!({"valid": true}));
    }
}

#[test]
fn validate_reports_bad_credentials_as_invalid() {
    let lg = Labgate::start();
    for (kind, mut client) in bad_credentials(&lg) {
        let r = client.get("/api/authentication/validate");
        assert_eq!(r.status, 200, "{kind}: {}", r.describe());
        assert_eq!(
            r.expect_json(200),
            serde_json::json!({"valid": false}),
            "{kind}"
        );
    }
}

#[test]
fn repeated_failed_logins_lock_that_login_for_a_while() {
    let lg = Labgate::start();
    lg.create_user("lockme", USER_PASSWORD);
    let mut c = lg.client();
    for i in 0..5 {
        let r = c.post_form(
            "/api/authentication/login",
            &[("login", "lockme"), ("password", "wrong-password-123")],
        );
        assert_eq!(r.status, 401, "failure {}: {}", i + 1, r.describe());
    }
    // Even the right password is refused now.
    let r = c.post_form(
        "/api/authentication/login",
        &[("login", "lockme"), ("password", USER_PASSWORD)],
    );
    r.expect_error(429);
    assert!(
        r.set_cookie("labgate_session").is_none(),
        "{}",
        r.describe()
    );
    let r = c.post_form(
        "/api/authentication/login",
        &[("login", "lockme"), ("password", "wrong-password-123")],
    );
    r.expect_error(429);
}

#[test]
fn lockout_of_one_login_leaves_other_logins_alone() {
    let lg = Labgate::start();
    lg.create_user("lockme", USER_PASSWORD);
    lg.create_user("bystander", USER_PASSWORD);
    let mut c = lg.client();
    for _ in 0..6 {
        c.post_form(
            "/api/authentication/login",
            &[("login", "lockme"), ("password", "wrong-password-123")],
        );
    }
    lg.login("bystander", USER_PASSWORD);
}

#[test]
fn deactivated_user_session_and_token_stop_working_at_once() {
    let lg = Labgate::start();
    lg.create_user("dora", USER_PASSWORD);
    let mut session = lg.login("dora", USER_PASSWORD);
    let mut token = lg.token_client("dora");
    let mut basic = lg.client().basic("dora", USER_PASSWORD);
    for c in [&mut session, &mut token, &mut basic] {
        let v = c.get("/api/users/current").expect_json(200);
        assert_eq!(v["login"], "dora");
    }
    let v = lg
        .admin()
        .post_form("/api/users/deactivate", &[("login", "dora")])
        .expect_json(200);
    assert_eq!(v["user"]["active"], false, "{v}");
    for (kind, c) in [
        ("session", &mut session),
        ("token", &mut token),
        ("basic", &mut basic),
    ] {
        let r = c.get("/api/users/current");
        assert_eq!(r.status, 401, "{kind} after deactivation: {}", r.describe());
    }
}

#[test]
fn deactivated_user_cannot_sign_in() {
    let lg = Labgate::start();
    lg.create_user("gone", USER_PASSWORD);
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "gone")])
        .expect_json(200);
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "gone"), ("password", USER_PASSWORD)],
        )
        .expect_error(401);
}

#[test]
fn external_user_cannot_sign_in_with_a_password() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "gitlabber"),
                ("name", "GitLab user"),
                ("local", "false"),
            ],
        )
        .expect_json(200);
    for password in ["", "some-password-123"] {
        lg.client()
            .post_form(
                "/api/authentication/login",
                &[("login", "gitlabber"), ("password", password)],
            )
            .expect_error(401);
    }
}

/// `POST api/authentication/login` with the admin's credentials and `headers`.
fn api_login_with(lg: &Labgate, headers: &[(&str, &str)]) -> Resp {
    let body = form_encode(&[("login", "admin"), ("password", ADMIN_PASSWORD)]);
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    lg.client()
        .request("POST", "/api/authentication/login", &all, body.as_bytes())
}

#[test]
fn api_login_from_another_site_is_refused_without_a_session() {
    let lg = Labgate::start();
    for headers in [
        vec![("Origin", "https://evil.example")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = api_login_with(&lg, &headers);
        assert_eq!(r.status, 403, "{headers:?}: {}", r.describe());
        assert!(
            r.set_cookie("labgate_session").is_none(),
            "{headers:?}: {}",
            r.describe()
        );
    }
    // labgate's own pages, and clients that are not browsers, still sign in.
    let own = format!("http://{}", lg.addr);
    api_login_with(&lg, &[("Origin", &own)]).expect(204);
    api_login_with(&lg, &[("Sec-Fetch-Site", "same-origin")]).expect(204);
    api_login_with(&lg, &[]).expect(204);
}

#[test]
fn api_login_reads_credentials_from_the_body_only() {
    let lg = Labgate::start();
    let query = form_encode(&[("login", "admin"), ("password", ADMIN_PASSWORD)]);
    let r = lg.client().request(
        "POST",
        &format!("/api/authentication/login?{query}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.describe());
    assert!(
        r.set_cookie("labgate_session").is_none(),
        "{}",
        r.describe()
    );
}

#[test]
fn api_login_ends_the_session_the_browser_had() {
    let lg = Labgate::start();
    let old = lg.admin_client();
    let mut browser = old.clone();
    browser
        .post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .expect(204);
    // The old cookie no longer signs anyone in; the new one does.
    let mut stale = old.clone();
    let r = stale.get("/api/users/current");
    assert_eq!(r.status, 401, "old session still valid: {}", r.describe());
    browser.get("/api/users/current").expect(200);
}

#[test]
fn a_locked_login_is_answered_429_with_retry_after_at_once() {
    let lg = Labgate::start();
    let mut c = lg.client();
    for _ in 0..5 {
        c.post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", "wrong-password-123")],
        );
    }
    let started = std::time::Instant::now();
    let r = c.post_form(
        "/api/authentication/login",
        &[("login", "admin"), ("password", "wrong-password-123")],
    );
    assert_eq!(r.status, 429, "{}", r.describe());
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", r.describe()));
    assert!((1..=900).contains(&wait), "Retry-After {wait}");
    // Refused from the throttle's memory: no password verification, no sleep.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}
