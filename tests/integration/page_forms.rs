//! Page forms without JavaScript: local sign-in (with safe `return_to`), and the account
//! page's password and token forms (422 re-render with field errors, visible confirmation).

use crate::harness::*;

/// Signs in through the login page form; returns the answer and the client.
fn form_login(lg: &Labgate, login: &str, password: &str, return_to: &str) -> (Resp, Client) {
    let mut c = lg.client();
    let page = c
        .get(&format!("/sessions/new?return_to={}", urlencode(return_to)))
        .expect_html(200);
    let mut params = vec![
        ("login", login.to_string()),
        ("password", password.to_string()),
        ("return_to", return_to.to_string()),
    ];
    if let Some(token) = csrf_field(&page) {
        params.push(("csrf_token", token));
    }
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = c.post_form("/sessions/new", &params);
    (r, c)
}

/// The `csrf_token` of the account page of a signed-in client.
fn account_csrf(c: &mut Client) -> String {
    let page = c.get("/account").expect_html(200);
    csrf_field(&page).unwrap_or_else(|| panic!("no csrf_token on /account:\n{page}"))
}

#[test]
fn login_form_signs_in_and_returns_to_the_asked_page() {
    let lg = Labgate::start();
    let (r, mut c) = form_login(&lg, "admin", ADMIN_PASSWORD, "/admin/users?p=1");
    assert_eq!(r.expect_redirect(), "/admin/users?p=1");
    let session = r
        .set_cookie("labgate_session")
        .unwrap_or_else(|| panic!("no session: {}", r.describe()))
        .to_ascii_lowercase();
    assert!(session.contains("httponly"), "{session}");
    let v = c.get("/api/users/current").expect_json(200);
    assert_eq!(v["login"], "admin", "{v}");
}

#[test]
fn login_form_never_redirects_off_site() {
    let lg = Labgate::start();
    for evil in [
        "//evil.example.com/x",
        "/\\evil.example.com",
        "http://evil.example.com/",
        "https:evil.example.com",
        "javascript:alert(1)",
    ] {
        let (r, _) = form_login(&lg, "admin", ADMIN_PASSWORD, evil);
        assert_eq!(r.expect_redirect(), "/", "return_to {evil:?}");
    }
}

#[test]
fn login_form_with_wrong_password_shows_the_form_again() {
    let lg = Labgate::start();
    let (r, mut c) = form_login(&lg, "admin", "wrong-password-1", "/account");
    assert!(
        (400..500).contains(&r.status),
        "wrong password: {}",
        r.describe()
    );
    let page = r.text();
    assert!(page.contains("type=\"password\""), "{page}");
    assert!(
        r.set_cookie("labgate_session").is_none(),
        "{}",
        r.describe()
    );
    let v = c.get("/api/users/current").expect_json(200);
    assert_eq!(v["isLoggedIn"], false, "{v}");
}

#[test]
fn login_form_with_empty_fields_rerenders_with_422() {
    let lg = Labgate::start();
    let (r, _) = form_login(&lg, "", "", "/");
    let page = r.expect_html(422);
    assert!(page.contains("<form"), "{page}");
}

#[test]
fn login_page_form_carries_a_csrf_token() {
    // Every form carries a CSRF token, the sign-in form included (login CSRF).
    let lg = Labgate::start();
    let page = lg.client().get("/sessions/new").expect_html(200);
    assert!(
        csrf_field(&page).is_some(),
        "no csrf_token on /sessions/new:\n{page}"
    );
}

#[test]
fn password_form_with_short_password_rerenders_with_422() {
    let lg = Labgate::start();
    lg.create_user("formy", USER_PASSWORD);
    let mut c = lg.login("formy", USER_PASSWORD).with_xsrf(false);
    let token = account_csrf(&mut c);
    let r = c.post_form(
        "/account/password",
        &[
            ("csrf_token", &token),
            ("previousPassword", USER_PASSWORD),
            ("password", "short"),
            ("confirmPassword", "short"),
        ],
    );
    let page = html_unescape(&r.expect_html(422));
    assert!(
        page.contains("12"),
        "the error names the minimum length:\n{page}"
    );
    // Unchanged.
    lg.client()
        .basic("formy", USER_PASSWORD)
        .get("/api/users/current")
        .expect_json(200);
}

#[test]
fn password_form_changes_the_password_with_a_confirmation() {
    let lg = Labgate::start();
    lg.create_user("formy", USER_PASSWORD);
    let mut c = lg.login("formy", USER_PASSWORD).with_xsrf(false);
    let token = account_csrf(&mut c);
    let r = c.post_form(
        "/account/password",
        &[
            ("csrf_token", &token),
            ("previousPassword", USER_PASSWORD),
            ("password", "form-changed-Passw0rd"),
            ("confirmPassword", "form-changed-Passw0rd"),
        ],
    );
    let to = r.expect_redirect();
    let page = html_unescape(&c.get(&to).expect_html(200));
    assert!(page.to_lowercase().contains("password"), "{page}");
    assert!(
        page.contains("changed"),
        "no visible confirmation on {to}:\n{page}"
    );
    lg.client()
        .basic("formy", "form-changed-Passw0rd")
        .get("/api/users/current")
        .expect_json(200);
}

#[test]
fn token_form_shows_the_new_token_once() {
    let lg = Labgate::start();
    lg.create_user("formy", USER_PASSWORD);
    let mut c = lg.login("formy", USER_PASSWORD).with_xsrf(false);
    let token = account_csrf(&mut c);
    let r = c.post_form(
        "/account/tokens/generate",
        &[("csrf_token", &token), ("name", "from-the-page")],
    );
    let page = if r.status == 302 || r.status == 303 {
        let to = r.expect_redirect();
        c.get(&to).expect_html(200)
    } else {
        r.expect_html(200)
    };
    let value = page
        .match_indices("lgu_")
        .map(|(at, _)| {
            page[at..]
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                .collect::<String>()
        })
        .find(|v| v.len() == 44 && v[4..].chars().all(|ch| ch.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("token not shown:\n{page}"));
    assert_eq!(value.len(), 44, "{value}");
    lg.client()
        .bearer(&value)
        .get("/api/users/current")
        .expect_json(200);
    let again = c.get("/account").expect_html(200);
    assert!(!again.contains(&value), "token shown twice");
    assert!(again.contains("from-the-page"), "{again}");
}

#[test]
fn token_form_without_a_name_rerenders_with_422() {
    let lg = Labgate::start();
    lg.create_user("formy", USER_PASSWORD);
    let mut c = lg.login("formy", USER_PASSWORD).with_xsrf(false);
    let token = account_csrf(&mut c);
    let r = c.post_form(
        "/account/tokens/generate",
        &[("csrf_token", &token), ("name", "")],
    );
    r.expect_html(422);
}

#[test]
fn token_revoke_form_revokes_with_a_confirmation() {
    let lg = Labgate::start();
    lg.create_user("formy", USER_PASSWORD);
    let mut c = lg.login("formy", USER_PASSWORD).with_xsrf(false);
    let value = c
        .clone()
        .with_xsrf(true)
        .post_form("/api/user_tokens/generate", &[("name", "to-revoke")])
        .expect_json(200)["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let token = account_csrf(&mut c);
    let r = c.post_form(
        "/account/tokens/revoke",
        &[("csrf_token", &token), ("name", "to-revoke")],
    );
    let to = r.expect_redirect();
    let page = html_unescape(&c.get(&to).expect_html(200));
    assert!(page.contains("revoked"), "no visible confirmation:\n{page}");
    lg.client()
        .bearer(&value)
        .get("/api/users/current")
        .expect_error(401);
}

#[test]
fn account_form_post_without_csrf_token_is_refused() {
    let lg = Labgate::start();
    lg.create_user("formy", USER_PASSWORD);
    let mut c = lg.login("formy", USER_PASSWORD).with_xsrf(false);
    let r = c.post_form("/account/tokens/generate", &[("name", "csrf-less")]);
    r.expect_html(403);
    let v = c.get("/api/user_tokens/search").expect_json(200);
    assert!(names(&v["userTokens"]).is_empty(), "{v}");
}

#[test]
fn token_form_states_the_lifetime_cap_and_applies_it() {
    let lg = Labgate::start();
    lg.create_user("capped", USER_PASSWORD);
    let mut c = lg.login("capped", USER_PASSWORD).with_xsrf(false);
    let page = html_unescape(&c.get("/account").expect_html(200));
    assert!(
        !page.contains("Tokens expire after at most"),
        "no cap by default:\n{page}"
    );
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.token.max.allowed.lifetime"),
                ("value", "90 days"),
            ],
        )
        .expect(204);
    let page = html_unescape(&c.get("/account").expect_html(200));
    assert!(
        page.contains("Tokens expire after at most 90 days on this server"),
        "{page}"
    );
    let token = account_csrf(&mut c);
    let before = date_in_days(90);
    let r = c.post_form(
        "/account/tokens/generate",
        &[
            ("csrf_token", &token),
            ("name", "from-the-page"),
            ("expirationDate", "2099-12-31"),
        ],
    );
    html_unescape(&r.expect_html(200));
    let v = c.get("/api/user_tokens/search").expect_json(200);
    assert_date(&v["userTokens"][0]["expirationDate"], &before, || {
        date_in_days(90)
    });
}
