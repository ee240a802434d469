//! `api/user_tokens/*`: generate (own, and for another user as admin), search, revoke.

use crate::harness::*;

fn is_token_value(t: &str) -> bool {
    t.len() == 44
        && t.starts_with("lgu_")
        && t[4..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[test]
fn generate_returns_the_token_once_with_the_documented_fields() {
    let lg = Labgate::start();
    lg.create_user("tok", USER_PASSWORD);
    let mut me = lg.login("tok", USER_PASSWORD);
    let v = me
        .post_form("/api/user_tokens/generate", &[("name", "laptop")])
        .expect_json(200);
    assert_eq!(v["login"], "tok", "{v}");
    assert_eq!(v["name"], "laptop", "{v}");
    assert!(v["createdAt"].is_string(), "{v}");
    assert!(v.get("expirationDate").is_none_or(|e| e.is_null()), "{v}");
    let token = v["token"].as_str().unwrap_or_default().to_string();
    assert!(is_token_value(&token), "token format: {token:?}");
    // Two tokens never share a value.
    let v2 = me
        .post_form("/api/user_tokens/generate", &[("name", "desktop")])
        .expect_json(200);
    assert_ne!(v2["token"], v["token"]);
    // The value is never shown again.
    let list = me.get("/api/user_tokens/search").expect(200);
    assert!(!list.text().contains(&token), "{}", list.describe());
    let whoami = lg
        .client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(whoami["login"], "tok");
}

#[test]
fn generate_with_an_expiration_date_reports_it() {
    let lg = Labgate::start();
    let v = lg
        .admin()
        .post_form(
            "/api/user_tokens/generate",
            &[("name", "expiring"), ("expirationDate", "2099-12-31")],
        )
        .expect_json(200);
    assert!(
        v["expirationDate"]
            .as_str()
            .is_some_and(|d| d.starts_with("2099-12-31")),
        "{v}"
    );
    let token = v["token"].as_str().unwrap_or_default().to_string();
    lg.client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_json(200);
    let list = lg.admin().get("/api/user_tokens/search").expect_json(200);
    let entry = list["userTokens"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "expiring"))
        .cloned()
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["isExpired"], false, "{list}");
    assert!(
        entry["expirationDate"]
            .as_str()
            .is_some_and(|d| d.starts_with("2099-12-31")),
        "{list}"
    );
}

#[test]
fn generate_with_a_past_or_malformed_expiration_date_is_400() {
    let lg = Labgate::start();
    for date in ["2001-01-01", "tomorrow", "2099-13-45"] {
        let r = lg.admin().post_form(
            "/api/user_tokens/generate",
            &[("name", "bad-date"), ("expirationDate", date)],
        );
        assert_eq!(r.status, 400, "expirationDate {date}: {}", r.describe());
        r.expect_error(400);
    }
}

#[test]
fn generate_without_a_name_is_400() {
    let lg = Labgate::start();
    lg.admin()
        .post_form("/api/user_tokens/generate", &[("name", "")])
        .expect_error(400);
    lg.admin()
        .post_form("/api/user_tokens/generate", &[])
        .expect_error(400);
}

#[test]
fn duplicate_token_name_for_one_user_is_400() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    admin
        .post_form("/api/user_tokens/generate", &[("name", "ci")])
        .expect_json(200);
    admin
        .post_form("/api/user_tokens/generate", &[("name", "ci")])
        .expect_error(400);
    // Another user may use the same name.
    lg.create_user("other", USER_PASSWORD);
    admin
        .post_form(
            "/api/user_tokens/generate",
            &[("name", "ci"), ("login", "other")],
        )
        .expect_json(200);
}

#[test]
fn search_lists_own_tokens_without_values() {
    let lg = Labgate::start();
    lg.create_user("lister", USER_PASSWORD);
    let mut me = lg.login("lister", USER_PASSWORD);
    let token = me
        .post_form("/api/user_tokens/generate", &[("name", "one")])
        .expect_json(200)["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = lg.client().bearer(&token).get("/api/user_tokens/search");
    assert!(!r.text().contains(&token), "{}", r.describe());
    let v = r.expect_json(200);
    assert_eq!(v["login"], "lister", "{v}");
    let t = &v["userTokens"][0];
    assert_eq!(t["name"], "one", "{v}");
    assert!(t["createdAt"].is_string(), "{v}");
    assert_eq!(t["isExpired"], false, "{v}");
    assert!(t.get("token").is_none(), "{v}");
    // Using the token records a last connection.
    let v = me.get("/api/user_tokens/search").expect_json(200);
    assert!(v["userTokens"][0]["lastConnectionDate"].is_string(), "{v}");
}

#[test]
fn admin_generates_searches_and_revokes_tokens_of_another_user() {
    let lg = Labgate::start();
    lg.create_user("robot", USER_PASSWORD);
    let mut admin = lg.admin();
    let v = admin
        .post_form(
            "/api/user_tokens/generate",
            &[("login", "robot"), ("name", "deploy")],
        )
        .expect_json(200);
    assert_eq!(v["login"], "robot", "{v}");
    let token = v["token"].as_str().unwrap_or_default().to_string();
    let me = lg
        .client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(me["login"], "robot", "acts as robot, not as admin: {me}");
    let list = admin
        .get_query("/api/user_tokens/search", &[("login", "robot")])
        .expect_json(200);
    assert_eq!(list["login"], "robot", "{list}");
    assert_eq!(names(&list["userTokens"]), vec!["deploy".to_string()]);
    admin
        .post_form(
            "/api/user_tokens/revoke",
            &[("login", "robot"), ("name", "deploy")],
        )
        .expect(204);
    lg.client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_error(401);
}

#[test]
fn revoked_token_stops_working_at_once() {
    let lg = Labgate::start();
    lg.create_user("rev", USER_PASSWORD);
    let mut me = lg.login("rev", USER_PASSWORD);
    let token = me
        .post_form("/api/user_tokens/generate", &[("name", "short-lived")])
        .expect_json(200)["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut by_token = lg.client().bearer(&token);
    by_token.get("/api/users/current").expect_json(200);
    me.post_form("/api/user_tokens/revoke", &[("name", "short-lived")])
        .expect(204);
    by_token.get("/api/users/current").expect_error(401);
    let v = me.get("/api/user_tokens/search").expect_json(200);
    assert!(names(&v["userTokens"]).is_empty(), "{v}");
}

#[test]
fn tokens_count_appears_in_user_search() {
    let lg = Labgate::start();
    lg.create_user("counted", USER_PASSWORD);
    lg.token_for("counted");
    lg.token_for("counted");
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("q", "counted")])
        .expect_json(200);
    assert_eq!(v["users"][0]["tokensCount"], 2, "{v}");
}

#[test]
fn generate_for_unknown_user_is_404() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/user_tokens/generate",
            &[("login", "ghost"), ("name", "x")],
        )
        .expect_error(404);
}

const MAX_LIFETIME: &str = "sonar.auth.token.max.allowed.lifetime";

/// Sets the longest life of new tokens, as admin.
fn set_max_lifetime(lg: &Labgate, value: &str) {
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[("key", MAX_LIFETIME), ("value", value)],
        )
        .expect(204);
}

/// Generates a token of the admin with this expiration date (none when empty).
fn generate(lg: &Labgate, name: &str, expiration: &str) -> serde_json::Value {
    let mut params = vec![("name", name)];
    if !expiration.is_empty() {
        params.push(("expirationDate", expiration));
    }
    lg.admin()
        .post_form("/api/user_tokens/generate", &params)
        .expect_json(200)
}

#[test]
fn a_token_without_a_date_expires_at_the_lifetime_cap() {
    let lg = Labgate::start();
    set_max_lifetime(&lg, "90 days");
    let before = date_in_days(90);
    let v = generate(&lg, "capped", "");
    assert_date(&v["expirationDate"], &before, || date_in_days(90));
    let list = lg.admin().get("/api/user_tokens/search").expect_json(200);
    assert_eq!(
        list["userTokens"][0]["expirationDate"], v["expirationDate"],
        "{list}"
    );
}

#[test]
fn a_token_date_beyond_the_lifetime_cap_becomes_the_cap() {
    let lg = Labgate::start();
    set_max_lifetime(&lg, "30 days");
    let before = date_in_days(30);
    let v = generate(&lg, "far", "2099-12-31");
    assert_date(&v["expirationDate"], &before, || date_in_days(30));
    let before = date_in_days(30);
    let v = generate(&lg, "just-beyond", &date_in_days(31));
    assert_date(&v["expirationDate"], &before, || date_in_days(30));
}

#[test]
fn a_token_date_within_the_lifetime_cap_is_kept() {
    let lg = Labgate::start();
    set_max_lifetime(&lg, "1 year");
    let near = date_in_days(10);
    let v = generate(&lg, "near", &near);
    assert_eq!(v["expirationDate"], near.as_str(), "{v}");
}

#[test]
fn no_expiration_leaves_the_date_to_the_caller() {
    let lg = Labgate::start();
    // The default, then the same value set explicitly.
    for setting in [None, Some("No expiration")] {
        if let Some(value) = setting {
            set_max_lifetime(&lg, value);
        }
        let v = generate(&lg, &format!("open-{}", setting.is_some()), "");
        assert!(v.get("expirationDate").is_none(), "{setting:?}: {v}");
        let v = generate(&lg, &format!("far-{}", setting.is_some()), "2099-12-31");
        assert_eq!(v["expirationDate"], "2099-12-31", "{setting:?}: {v}");
    }
}
