//! `api/users/*`: create, search, update, deactivate, change_password,
//! update_identity_provider — success shapes and error shapes.

use crate::harness::*;
use serde_json::Value;

fn search(lg: &Labgate, params: &[(&str, &str)]) -> Value {
    lg.admin()
        .get_query("/api/users/search", params)
        .expect_json(200)
}

fn find_user(lg: &Labgate, login: &str) -> Value {
    let v = search(lg, &[("q", login)]);
    v["users"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["login"] == login))
        .cloned()
        .unwrap_or_else(|| panic!("{login} not found in {v}"))
}

#[test]
fn create_user_returns_the_user() {
    let lg = Labgate::start();
    let v = lg
        .admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "ann.lee"),
                ("name", "Ann Lee"),
                ("email", "ann@example.com"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    let u = &v["user"];
    assert_eq!(u["login"], "ann.lee", "{v}");
    assert_eq!(u["name"], "Ann Lee", "{v}");
    assert_eq!(u["email"], "ann@example.com", "{v}");
    assert_eq!(u["active"], true, "{v}");
    assert_eq!(u["local"], true, "{v}");
    assert_eq!(u["scmAccounts"], serde_json::json!([]), "{v}");
    // The new user can sign in.
    lg.login("ann.lee", USER_PASSWORD);
}

#[test]
fn create_user_with_short_password_is_400() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "shorty"),
                ("name", "Shorty"),
                ("password", "elevenchars"),
            ],
        )
        .expect_error(400);
    // 12 characters is enough.
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "shorty"),
                ("name", "Shorty"),
                ("password", "twelve-chars"),
            ],
        )
        .expect_json(200);
}

#[test]
fn create_local_user_without_password_is_400() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/create",
            &[("login", "nopass"), ("name", "No Pass")],
        )
        .expect_error(400);
}

#[test]
fn create_user_with_invalid_login_is_400() {
    let lg = Labgate::start();
    let too_long = "x".repeat(256);
    for login in [
        "a",
        "-dash",
        ".dot",
        "with space",
        "slash/y",
        "é-accent",
        "",
        &too_long,
    ] {
        let r = lg.admin().post_form(
            "/api/users/create",
            &[
                ("login", login),
                ("name", "Bad"),
                ("password", USER_PASSWORD),
            ],
        );
        assert_eq!(r.status, 400, "login {login:?}: {}", r.describe());
        r.expect_error(400);
    }
}

#[test]
fn create_user_accepts_every_allowed_login_character() {
    let lg = Labgate::start();
    for login in ["ab", "a.b-c_d@e", "9lives"] {
        lg.create_user(login, USER_PASSWORD);
    }
}

#[test]
fn create_user_with_invalid_email_is_400() {
    let lg = Labgate::start();
    let long = format!("{}@example.com", "a".repeat(100));
    for email in ["not-an-email", "a@", "@b.c", "a b@c.d", &long] {
        let r = lg.admin().post_form(
            "/api/users/create",
            &[
                ("login", "mailer"),
                ("name", "Mailer"),
                ("email", email),
                ("password", USER_PASSWORD),
            ],
        );
        assert_eq!(r.status, 400, "email {email:?}: {}", r.describe());
        r.expect_error(400);
    }
}

#[test]
fn create_user_without_name_is_400() {
    let lg = Labgate::start();
    for name in ["", "   "] {
        lg.admin()
            .post_form(
                "/api/users/create",
                &[
                    ("login", "nameless"),
                    ("name", name),
                    ("password", USER_PASSWORD),
                ],
            )
            .expect_error(400);
    }
    let long = "n".repeat(201);
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "nameless"),
                ("name", &long),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_error(400);
}

#[test]
fn create_existing_active_login_is_400() {
    let lg = Labgate::start();
    lg.create_user("twin", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "twin"),
                ("name", "Twin"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_error(400);
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "admin"),
                ("name", "Admin 2"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_error(400);
}

#[test]
fn create_external_user_takes_no_password() {
    let lg = Labgate::start();
    let v = lg
        .admin()
        .post_form(
            "/api/users/create",
            &[("login", "ext"), ("name", "External"), ("local", "false")],
        )
        .expect_json(200);
    assert_eq!(v["user"]["local"], false, "{v}");
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "ext2"),
                ("name", "External 2"),
                ("local", "false"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_error(400);
}

#[test]
fn new_user_is_a_member_of_the_default_group() {
    let lg = Labgate::start();
    lg.create_user("newbie", USER_PASSWORD);
    let u = find_user(&lg, "newbie");
    assert_eq!(names(&u["groups"]), vec!["users".to_string()], "{u}");
    let v = lg
        .token_client("newbie")
        .get("/api/users/current")
        .expect_json(200);
    assert!(names(&v["groups"]).contains(&"users".to_string()), "{v}");
    assert_eq!(v["permissions"]["global"], serde_json::json!([]), "{v}");
}

#[test]
fn recreating_a_deactivated_user_reactivates_it() {
    let lg = Labgate::start();
    lg.create_user("phoenix", USER_PASSWORD);
    let old_token = lg.token_for("phoenix");
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "phoenix")])
        .expect_json(200);
    let v = lg
        .admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "phoenix"),
                ("name", "Phoenix"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    assert_eq!(v["user"]["active"], true, "{v}");
    lg.login("phoenix", USER_PASSWORD);
    // Its old token died with the deactivation.
    lg.client()
        .bearer(&old_token)
        .get("/api/users/current")
        .expect_error(401);
}

#[test]
fn search_lists_users_with_the_documented_fields() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "fields"),
                ("name", "Field Test"),
                ("email", "fields@example.com"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    lg.token_for("fields");
    let v = search(&lg, &[]);
    assert_eq!(v["paging"]["pageIndex"], 1, "{v}");
    assert!(v["paging"]["pageSize"].is_u64(), "{v}");
    assert_eq!(v["paging"]["total"], 2, "{v}");
    let u = find_user(&lg, "fields");
    assert_eq!(u["name"], "Field Test", "{u}");
    assert_eq!(u["email"], "fields@example.com", "{u}");
    assert_eq!(u["active"], true, "{u}");
    assert_eq!(u["local"], true, "{u}");
    assert_eq!(u["managed"], false, "{u}");
    assert_eq!(u["tokensCount"], 1, "{u}");
    assert!(u["groups"].is_array(), "{u}");
    for key in ["externalIdentity", "externalProvider"] {
        assert!(u.get(key).is_some(), "{key} missing: {u}");
    }
    let admin = find_user(&lg, "admin");
    assert!(
        admin["lastConnectionDate"].is_string(),
        "admin has signed in: {admin}"
    );
}

#[test]
fn search_matches_login_name_and_email_ignoring_case() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "zed"),
                ("name", "Zebulon Quux"),
                ("email", "zq@Example.org"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    lg.create_user("other", USER_PASSWORD);
    for q in ["ZE", "quux", "EXAMPLE.ORG", "zq@"] {
        let v = search(&lg, &[("q", q)]);
        assert_eq!(logins(&v["users"]), vec!["zed".to_string()], "q={q}: {v}");
        assert_eq!(v["paging"]["total"], 1, "q={q}: {v}");
    }
}

#[test]
fn search_with_one_character_query_is_400() {
    let lg = Labgate::start();
    lg.admin()
        .get_query("/api/users/search", &[("q", "a")])
        .expect_error(400);
}

#[test]
fn search_deactivated_lists_only_deactivated_users() {
    let lg = Labgate::start();
    lg.create_user("alive", USER_PASSWORD);
    lg.create_user("dead", USER_PASSWORD);
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "dead")])
        .expect_json(200);
    let v = search(&lg, &[("deactivated", "true")]);
    assert_eq!(logins(&v["users"]), vec!["dead".to_string()], "{v}");
    assert_eq!(v["users"][0]["active"], false, "{v}");
    let v = search(&lg, &[]);
    let active = logins(&v["users"]);
    assert!(active.contains(&"alive".to_string()), "{v}");
    assert!(!active.contains(&"dead".to_string()), "{v}");
}

#[test]
fn update_changes_name_and_email() {
    let lg = Labgate::start();
    lg.create_user("upd", USER_PASSWORD);
    let v = lg
        .admin()
        .post_form(
            "/api/users/update",
            &[
                ("login", "upd"),
                ("name", "Updated Name"),
                ("email", "upd@example.com"),
            ],
        )
        .expect_json(200);
    assert_eq!(v["user"]["login"], "upd", "{v}");
    assert_eq!(v["user"]["name"], "Updated Name", "{v}");
    assert_eq!(v["user"]["email"], "upd@example.com", "{v}");
    let u = find_user(&lg, "upd");
    assert_eq!(u["name"], "Updated Name", "{u}");
    assert_eq!(u["email"], "upd@example.com", "{u}");
}

#[test]
fn update_unknown_user_is_404() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/update",
            &[("login", "ghost"), ("name", "Ghost")],
        )
        .expect_error(404);
}

#[test]
fn update_with_invalid_email_is_400() {
    let lg = Labgate::start();
    lg.create_user("upd", USER_PASSWORD);
    lg.admin()
        .post_form("/api/users/update", &[("login", "upd"), ("email", "nope")])
        .expect_error(400);
}

#[test]
fn deactivate_returns_the_inactive_user() {
    let lg = Labgate::start();
    lg.create_user("leaver", USER_PASSWORD);
    let v = lg
        .admin()
        .post_form("/api/users/deactivate", &[("login", "leaver")])
        .expect_json(200);
    assert_eq!(v["user"]["login"], "leaver", "{v}");
    assert_eq!(v["user"]["active"], false, "{v}");
}

#[test]
fn deactivate_unknown_user_is_404() {
    let lg = Labgate::start();
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "ghost")])
        .expect_error(404);
}

#[test]
fn deactivation_removes_memberships_permissions_and_tokens() {
    let lg = Labgate::start();
    lg.create_user("quitter", USER_PASSWORD);
    lg.create_group("crew");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "crew"), ("login", "quitter")],
        )
        .expect(204);
    lg.grant_user("quitter", "admin");
    lg.token_for("quitter");
    admin
        .post_form("/api/users/deactivate", &[("login", "quitter")])
        .expect_json(200);
    let members = admin
        .get_query("/api/user_groups/users", &[("name", "crew")])
        .expect_json(200);
    assert!(logins(&members["users"]).is_empty(), "{members}");
    let perms = admin
        .get_query("/api/permissions/users", &[("permission", "admin")])
        .expect_json(200);
    assert!(
        !logins(&perms["users"]).contains(&"quitter".to_string()),
        "{perms}"
    );
    let v = search(&lg, &[("deactivated", "true")]);
    let u = &v["users"][0];
    assert_eq!(u["login"], "quitter", "{v}");
    assert_eq!(u["tokensCount"], 0, "{v}");
    let groups = names(&u["groups"]);
    assert!(!groups.contains(&"crew".to_string()), "{v}");
}

#[test]
fn change_own_password_needs_the_previous_one() {
    let lg = Labgate::start();
    lg.create_user("pw", USER_PASSWORD);
    let mut me = lg.login("pw", USER_PASSWORD);
    me.post_form(
        "/api/users/change_password",
        &[
            ("login", "pw"),
            ("previousPassword", "not-my-password"),
            ("password", "brand-new-Passw0rd"),
        ],
    )
    .expect_error(400);
    me.post_form(
        "/api/users/change_password",
        &[("login", "pw"), ("password", "brand-new-Passw0rd")],
    )
    .expect_error(400);
    // Still the old password.
    lg.client()
        .basic("pw", USER_PASSWORD)
        .get("/api/users/current")
        .expect_json(200);
}

#[test]
fn change_own_password_replaces_it() {
    let lg = Labgate::start();
    lg.create_user("pw", USER_PASSWORD);
    let mut me = lg.login("pw", USER_PASSWORD);
    me.post_form(
        "/api/users/change_password",
        &[
            ("login", "pw"),
            ("previousPassword", USER_PASSWORD),
            ("password", "brand-new-Passw0rd"),
        ],
    )
    .expect(204);
    lg.client()
        .basic("pw", "brand-new-Passw0rd")
        .get("/api/users/current")
        .expect_json(200);
    lg.client()
        .basic("pw", USER_PASSWORD)
        .get("/api/users/current")
        .expect_error(401);
}

#[test]
fn change_password_to_a_short_one_is_400() {
    let lg = Labgate::start();
    lg.create_user("pw", USER_PASSWORD);
    lg.login("pw", USER_PASSWORD)
        .post_form(
            "/api/users/change_password",
            &[
                ("login", "pw"),
                ("previousPassword", USER_PASSWORD),
                ("password", "short"),
            ],
        )
        .expect_error(400);
}

#[test]
fn admin_sets_another_users_password_without_the_previous_one() {
    let lg = Labgate::start();
    lg.create_user("forgetful", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/users/change_password",
            &[("login", "forgetful"), ("password", "reset-by-admin-1")],
        )
        .expect(204);
    lg.login("forgetful", "reset-by-admin-1");
}

#[test]
fn update_identity_provider_links_a_user_to_gitlab() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/create",
            &[("login", "jdoe"), ("name", "J Doe"), ("local", "false")],
        )
        .expect_json(200);
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "jdoe"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "john.doe"),
            ],
        )
        .expect(204);
    let u = find_user(&lg, "jdoe");
    assert_eq!(u["local"], false, "{u}");
    assert_eq!(u["externalProvider"], "gitlab", "{u}");
    assert_eq!(u["externalIdentity"], "john.doe", "{u}");
}

#[test]
fn update_identity_provider_turns_a_local_user_external() {
    let lg = Labgate::start();
    lg.create_user("convert", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "convert"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "convert-gl"),
            ],
        )
        .expect(204);
    let u = find_user(&lg, "convert");
    assert_eq!(u["local"], false, "{u}");
    assert_eq!(u["externalProvider"], "gitlab", "{u}");
    // Only local users have a password.
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "convert"), ("password", USER_PASSWORD)],
        )
        .expect_error(401);
}

#[test]
fn update_identity_provider_refuses_unknown_provider() {
    let lg = Labgate::start();
    lg.create_user("prov", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "prov"),
                ("newExternalProvider", "github"),
                ("newExternalIdentity", "prov"),
            ],
        )
        .expect_error(400);
}

#[test]
fn update_identity_provider_of_unknown_user_is_404() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "ghost"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "ghost"),
            ],
        )
        .expect_error(404);
}

#[test]
fn update_identity_provider_ends_sessions_and_revokes_tokens() {
    let lg = Labgate::start();
    lg.create_user("handed", USER_PASSWORD);
    let mut session = lg.login("handed", USER_PASSWORD);
    let mut token = lg.token_client("handed");
    // Both work, and are now held in the server's memory of recent callers.
    for c in [&mut session, &mut token] {
        assert_eq!(
            c.get("/api/users/current").expect_json(200)["login"],
            "handed"
        );
    }
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "handed"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "new-holder"),
            ],
        )
        .expect(204);
    for (kind, c) in [("session", &mut session), ("token", &mut token)] {
        let r = c.get("/api/users/current");
        assert_eq!(r.status, 401, "{kind} after re-linking: {}", r.describe());
    }
    let u = find_user(&lg, "handed");
    assert_eq!(u["tokensCount"], 0, "{u}");
}

/// Links `login` to GitLab username `username` through the API.
fn link(lg: &Labgate, login: &str, username: &str) -> Resp {
    lg.admin().post_form(
        "/api/users/update_identity_provider",
        &[
            ("login", login),
            ("newExternalProvider", "gitlab"),
            ("newExternalIdentity", username),
        ],
    )
}

#[test]
fn create_external_user_with_a_gitlab_identity_already_linked_is_400() {
    let lg = Labgate::start();
    lg.create_user("holder", USER_PASSWORD);
    link(&lg, "holder", "Shared").expect(204);
    let msg = lg
        .admin()
        .post_form(
            "/api/users/create",
            &[("login", "shared"), ("name", "Second"), ("local", "false")],
        )
        .expect_error(400);
    assert!(
        msg.contains("GitLab user 'shared' is already linked to user 'holder'"),
        "{msg}"
    );
    let v = search(&lg, &[("q", "shared")]);
    assert_eq!(v["paging"]["total"], 0, "nothing was created: {v}");
}

#[test]
fn recreating_a_deactivated_login_with_a_gitlab_identity_already_linked_is_400() {
    let lg = Labgate::start();
    lg.create_user("old", USER_PASSWORD);
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "old")])
        .expect_json(200);
    lg.create_user("holder", USER_PASSWORD);
    link(&lg, "holder", "OLD").expect(204);
    // `local=false` pre-provisions the GitLab username equal to the login.
    let msg = lg
        .admin()
        .post_form(
            "/api/users/create",
            &[("login", "old"), ("name", "Old again"), ("local", "false")],
        )
        .expect_error(400);
    assert!(
        msg.contains("GitLab user 'old' is already linked to user 'holder'"),
        "{msg}"
    );
    let v = search(&lg, &[("q", "old"), ("deactivated", "true")]);
    let old = v["users"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["login"] == "old"))
        .cloned()
        .unwrap_or_else(|| panic!("old is no longer deactivated: {v}"));
    assert_eq!(old["local"], true, "{old}");
    assert_eq!(old["name"], "Name of old", "{old}");
}

#[test]
fn update_identity_provider_to_an_identity_already_linked_is_400() {
    let lg = Labgate::start();
    lg.create_user("holder", USER_PASSWORD);
    lg.create_user("second", USER_PASSWORD);
    link(&lg, "holder", "gl-name").expect(204);
    let msg = link(&lg, "second", "GL-Name").expect_error(400);
    assert!(
        msg.contains("GitLab user 'GL-Name' is already linked to user 'holder'"),
        "{msg}"
    );
    let u = find_user(&lg, "second");
    assert_eq!(u["local"], true, "unchanged: {u}");
    // The holder may be linked to its own identity again.
    link(&lg, "holder", "GL-NAME").expect(204);
}

#[test]
fn a_stolen_session_cannot_guess_the_password_through_change_password() {
    let lg = Labgate::start();
    lg.create_user("victim", USER_PASSWORD);
    let mut session = lg.login("victim", USER_PASSWORD);
    let attempt = |c: &mut Client, previous: &str| {
        c.post_form(
            "/api/users/change_password",
            &[
                ("login", "victim"),
                ("previousPassword", previous),
                ("password", "a-new-password-456"),
            ],
        )
    };
    for i in 0..5 {
        let r = attempt(&mut session, &format!("guess-number-{i}"));
        assert_eq!(r.status, 400, "guess {i}: {}", r.describe());
    }
    // Locked: even the right password is refused for now, at once, with Retry-After.
    let r = attempt(&mut session, USER_PASSWORD);
    assert_eq!(r.status, 429, "{}", r.describe());
    assert!(r.header("retry-after").is_some(), "{}", r.describe());
    // The guesses count as failed sign-ins of that login from that client.
    let r = lg.client().post_form(
        "/api/authentication/login",
        &[("login", "victim"), ("password", USER_PASSWORD)],
    );
    assert_eq!(r.status, 429, "{}", r.describe());
}
