//! `api/permissions/*`: granting and revoking `admin` to users and groups, the lists, and the
//! last-admin rule.

use crate::harness::*;
use serde_json::Value;

fn perm_groups(lg: &Labgate) -> Value {
    lg.admin()
        .get_query(
            "/api/permissions/groups",
            &[("permission", "admin"), ("ps", "500")],
        )
        .expect_json(200)
}

fn perm_users(lg: &Labgate) -> Value {
    lg.admin()
        .get_query(
            "/api/permissions/users",
            &[("permission", "admin"), ("ps", "500")],
        )
        .expect_json(200)
}

/// The entry named `name` (by `name` or `login`) in a list, if it holds `admin`.
fn holds_admin(list: &Value, key: &str, name: &str) -> bool {
    list.as_array().is_some_and(|a| {
        a.iter().any(|e| {
            e[key] == name
                && e["permissions"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == "admin"))
        })
    })
}

fn is_admin(lg: &Labgate, login: &str) -> bool {
    let v = lg
        .token_client(login)
        .get("/api/users/current")
        .expect_json(200);
    v["permissions"]["global"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p == "admin"))
}

#[test]
fn add_group_gives_admin_to_its_members() {
    let lg = Labgate::start();
    lg.create_user("op", USER_PASSWORD);
    lg.create_group("ops");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "ops"), ("login", "op")],
        )
        .expect(204);
    let mut op = lg.token_client("op");
    op.get("/api/users/search").expect_error(403);
    admin
        .post_form(
            "/api/permissions/add_group",
            &[("groupName", "ops"), ("permission", "admin")],
        )
        .expect(204);
    // Takes effect on the next request.
    op.get("/api/users/search").expect_json(200);
    assert!(holds_admin(&perm_groups(&lg)["groups"], "name", "ops"));
}

#[test]
fn remove_group_takes_admin_back() {
    let lg = Labgate::start();
    lg.create_user("op", USER_PASSWORD);
    lg.create_group("ops");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "ops"), ("login", "op")],
        )
        .expect(204);
    admin
        .post_form(
            "/api/permissions/add_group",
            &[("groupName", "ops"), ("permission", "admin")],
        )
        .expect(204);
    let mut op = lg.token_client("op");
    op.get("/api/users/search").expect_json(200);
    admin
        .post_form(
            "/api/permissions/remove_group",
            &[("groupName", "ops"), ("permission", "admin")],
        )
        .expect(204);
    op.get("/api/users/search").expect_error(403);
    assert!(!holds_admin(&perm_groups(&lg)["groups"], "name", "ops"));
}

#[test]
fn add_user_and_remove_user_grant_and_revoke_admin_directly() {
    let lg = Labgate::start();
    lg.create_user("solo", USER_PASSWORD);
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/permissions/add_user",
            &[("login", "solo"), ("permission", "admin")],
        )
        .expect(204);
    assert!(is_admin(&lg, "solo"));
    assert!(holds_admin(&perm_users(&lg)["users"], "login", "solo"));
    admin
        .post_form(
            "/api/permissions/remove_user",
            &[("login", "solo"), ("permission", "admin")],
        )
        .expect(204);
    assert!(!is_admin(&lg, "solo"));
    assert!(!holds_admin(&perm_users(&lg)["users"], "login", "solo"));
}

#[test]
fn permission_lists_have_the_documented_shape() {
    let lg = Labgate::start();
    lg.create_user("lister", USER_PASSWORD);
    lg.grant_user("lister", "admin");
    let g = perm_groups(&lg);
    assert_eq!(g["paging"]["pageIndex"], 1, "{g}");
    assert_eq!(g["paging"]["pageSize"], 500, "{g}");
    assert!(g["paging"]["total"].is_u64(), "{g}");
    let admins = g["groups"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "administrators"))
        .unwrap_or_else(|| panic!("administrators not listed: {g}"));
    assert!(admins.get("description").is_some(), "{g}");
    assert_eq!(admins["permissions"], serde_json::json!(["admin"]), "{g}");

    let u = perm_users(&lg);
    assert!(u["paging"]["total"].is_u64(), "{u}");
    let lister = u["users"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["login"] == "lister"))
        .unwrap_or_else(|| panic!("lister not listed: {u}"));
    assert_eq!(lister["name"], "Name of lister", "{u}");
    assert_eq!(lister["permissions"], serde_json::json!(["admin"]), "{u}");
}

#[test]
fn unknown_or_missing_permission_is_400() {
    let lg = Labgate::start();
    lg.create_user("perm", USER_PASSWORD);
    lg.create_group("perm-group");
    let mut admin = lg.admin();
    for permission in ["gateadmin", "scan", "ADMIN", ""] {
        admin
            .post_form(
                "/api/permissions/add_user",
                &[("login", "perm"), ("permission", permission)],
            )
            .expect_error(400);
        admin
            .post_form(
                "/api/permissions/add_group",
                &[("groupName", "perm-group"), ("permission", permission)],
            )
            .expect_error(400);
    }
    admin
        .post_form("/api/permissions/add_user", &[("login", "perm")])
        .expect_error(400);
    admin
        .get_query("/api/permissions/users", &[("permission", "scan")])
        .expect_error(400);
    admin
        .get_query("/api/permissions/groups", &[("permission", "scan")])
        .expect_error(400);
    assert!(!is_admin(&lg, "perm"));
}

#[test]
fn granting_to_unknown_group_or_user_is_404() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for path in [
        "/api/permissions/add_group",
        "/api/permissions/remove_group",
    ] {
        admin
            .post_form(path, &[("groupName", "ghosts"), ("permission", "admin")])
            .expect_error(404);
    }
    for path in ["/api/permissions/add_user", "/api/permissions/remove_user"] {
        admin
            .post_form(path, &[("login", "ghost"), ("permission", "admin")])
            .expect_error(404);
    }
}

#[test]
fn last_admin_cannot_be_deactivated() {
    let lg = Labgate::start();
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "admin")])
        .expect_error(400);
    lg.admin().get("/api/users/search").expect_json(200);
}

#[test]
fn last_admin_cannot_lose_admin() {
    let lg = Labgate::start();
    let token = lg.token_for("admin");
    let mut admin = lg.client().bearer(&token);
    // Every way of taking `admin` away from the only holder: each is either a no-op (the
    // user keeps it through another grant) or refused with 400 — never a success that
    // leaves nobody with `admin`.
    let attempts: [(&str, &[(&str, &str)]); 4] = [
        (
            "/api/permissions/remove_group",
            &[("groupName", "administrators"), ("permission", "admin")],
        ),
        (
            "/api/permissions/remove_user",
            &[("login", "admin"), ("permission", "admin")],
        ),
        (
            "/api/user_groups/remove_user",
            &[("name", "administrators"), ("login", "admin")],
        ),
        ("/api/user_groups/delete", &[("name", "administrators")]),
    ];
    let mut refused = 0;
    for (path, params) in attempts {
        let r = admin.post_form(path, params);
        match r.status {
            204 => {}
            400 => {
                r.expect_error(400);
                refused += 1;
            }
            _ => panic!("{path}: {}", r.describe()),
        }
        let me = admin.get("/api/users/current").expect_json(200);
        assert!(
            me["permissions"]["global"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == "admin")),
            "after {path} the last admin lost admin: {me}"
        );
    }
    assert!(refused > 0, "no attempt was refused");
}

#[test]
fn last_admin_rule_counts_only_active_holders() {
    let lg = Labgate::start();
    // A second holder who is then deactivated does not count.
    lg.create_user("backup-admin", USER_PASSWORD);
    lg.grant_user("backup-admin", "admin");
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "backup-admin")])
        .expect_json(200);
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "admin")])
        .expect_error(400);
}

#[test]
fn admin_can_be_deactivated_while_another_admin_remains() {
    let lg = Labgate::start();
    lg.create_user("heir", USER_PASSWORD);
    lg.grant_user("heir", "admin");
    let mut heir = lg.token_client("heir");
    heir.post_form("/api/users/deactivate", &[("login", "admin")])
        .expect_json(200);
    // Now heir is the last one.
    heir.post_form("/api/users/deactivate", &[("login", "heir")])
        .expect_error(400);
    heir.post_form(
        "/api/permissions/remove_user",
        &[("login", "heir"), ("permission", "admin")],
    )
    .expect_error(400);
}

#[test]
fn group_grant_can_be_revoked_while_another_admin_remains() {
    let lg = Labgate::start();
    lg.create_user("heir", USER_PASSWORD);
    lg.grant_user("heir", "admin");
    let mut heir = lg.token_client("heir");
    lg.admin()
        .post_form(
            "/api/permissions/remove_group",
            &[("groupName", "administrators"), ("permission", "admin")],
        )
        .expect(204);
    let g = heir
        .get_query("/api/permissions/groups", &[("permission", "admin")])
        .expect_json(200);
    assert!(!holds_admin(&g["groups"], "name", "administrators"), "{g}");
}
