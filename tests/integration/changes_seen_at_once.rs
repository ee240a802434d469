//! Changes to who may do what are seen by the very next request, although labgate keeps the
//! callers of session cookies and API tokens in memory: each test first uses the credential a
//! few times (so that it is cached), makes the change, then uses it again at once.

use crate::harness::*;
use rusqlite::{Connection, OpenFlags};

/// Uses a credential a few times, so that the server holds its caller in memory.
fn warm(client: &mut Client, path: &str) -> serde_json::Value {
    for _ in 0..3 {
        client.get(path).expect(200);
    }
    client.get(path).expect_json(200)
}

#[test]
fn a_revoked_token_is_refused_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("tess", USER_PASSWORD);
    let token = lg.token_for("tess");
    let mut bearer = lg.client().bearer(&token);
    let mut basic = lg.client().basic(&token, "");
    warm(&mut bearer, "/api/users/current");
    warm(&mut basic, "/api/users/current");
    let v = lg
        .admin()
        .get_query("/api/user_tokens/search", &[("login", "tess")])
        .expect_json(200);
    let name = v["userTokens"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lg.admin()
        .post_form(
            "/api/user_tokens/revoke",
            &[("login", "tess"), ("name", &name)],
        )
        .expect(204);
    bearer.get("/api/users/current").expect_error(401);
    basic.get("/api/users/current").expect_error(401);
}

#[test]
fn a_removed_admin_permission_is_refused_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("boss", USER_PASSWORD);
    lg.grant_user("boss", "admin");
    let mut session = lg.login("boss", USER_PASSWORD);
    let mut token = lg.token_client("boss");
    warm(&mut session, "/api/system/health");
    warm(&mut token, "/api/system/health");
    lg.admin()
        .post_form(
            "/api/permissions/remove_user",
            &[("login", "boss"), ("permission", "admin")],
        )
        .expect(204);
    session.get("/api/system/health").expect_error(403);
    token.get("/api/system/health").expect_error(403);
    let v = session.get("/api/users/current").expect_json(200);
    assert_eq!(v["permissions"]["global"], serde_json::json!([]), "{v}");
}

#[test]
fn admin_through_a_group_ends_with_the_membership_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("deputy", USER_PASSWORD);
    let add = [("name", "administrators"), ("login", "deputy")];
    lg.admin()
        .post_form("/api/user_groups/add_user", &add)
        .expect(204);
    let mut session = lg.login("deputy", USER_PASSWORD);
    let v = warm(&mut session, "/api/users/current");
    assert_eq!(
        v["groups"],
        serde_json::json!(["administrators", "users"]),
        "{v}"
    );
    session.get("/api/system/health").expect(200);
    lg.admin()
        .post_form("/api/user_groups/remove_user", &add)
        .expect(204);
    session.get("/api/system/health").expect_error(403);
    let v = session.get("/api/users/current").expect_json(200);
    assert_eq!(v["groups"], serde_json::json!(["users"]), "{v}");
}

#[test]
fn a_logged_out_cookie_is_not_signed_in_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("leo", USER_PASSWORD);
    let mut session = lg.login("leo", USER_PASSWORD);
    warm(&mut session, "/api/users/current");
    let mut copy = session.clone();
    session
        .post_form("/api/authentication/logout", &[])
        .expect(204);
    copy.get("/api/users/current").expect_error(401);
    // A page with the old cookie: the sign-in form, not the account.
    let r = copy.get("/account");
    let location = r.location().unwrap_or_default();
    assert!(location.starts_with("/sessions/new"), "{}", r.describe());
}

#[test]
fn a_deactivated_users_session_and_token_are_refused_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("dora", USER_PASSWORD);
    let mut session = lg.login("dora", USER_PASSWORD);
    let mut token = lg.token_client("dora");
    warm(&mut session, "/api/users/current");
    warm(&mut token, "/api/users/current");
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "dora")])
        .expect_json(200);
    session.get("/api/users/current").expect_error(401);
    token.get("/api/users/current").expect_error(401);
}

#[test]
fn a_password_change_ends_the_other_sessions_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("pat", USER_PASSWORD);
    let mut here = lg.login("pat", USER_PASSWORD);
    let mut elsewhere = lg.login("pat", USER_PASSWORD);
    warm(&mut here, "/api/users/current");
    warm(&mut elsewhere, "/api/users/current");
    here.post_form(
        "/api/users/change_password",
        &[
            ("login", "pat"),
            ("previousPassword", USER_PASSWORD),
            ("password", "another-Passw0rd-789"),
        ],
    )
    .expect(204);
    elsewhere.get("/api/users/current").expect_error(401);
    here.get("/api/users/current").expect_json(200);
}

#[test]
fn a_shorter_session_timeout_ends_an_idle_session_on_the_next_request() {
    let lg = Labgate::start();
    lg.create_user("ida", USER_PASSWORD);
    let mut session = lg.login("ida", USER_PASSWORD);
    warm(&mut session, "/api/users/current");
    // Ida was last seen an hour ago: live under the default timeout of 3 days.
    let value = session
        .cookie("labgate_session")
        .unwrap_or_default()
        .to_string();
    let path = lg.data_dir().join("labgate.db");
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    let hash = sha256_hex(&value);
    let changed = conn
        .execute(
            "UPDATE sessions SET last_seen_at = last_seen_at - 3600 WHERE id_hash = ?1",
            [&hash],
        )
        .expect("age the session");
    assert_eq!(changed, 1, "the session row of the cookie");
    drop(conn);
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.web.sessionTimeoutInMinutes"),
                ("value", "30"),
            ],
        )
        .expect(204);
    session.get("/api/users/current").expect_error(401);
}

/// SHA-256 as lowercase hex (how labgate stores a session cookie value).
fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
