//! `api/user_groups/*`: create, update, delete, search, add_user, remove_user, users — and the
//! rules of the default group `users`.

use crate::harness::*;
use serde_json::Value;

fn find_group(lg: &Labgate, name: &str) -> Option<Value> {
    let v = lg
        .admin()
        .get_query("/api/user_groups/search", &[("q", name), ("ps", "500")])
        .expect_json(200);
    v["groups"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g["name"] == name))
        .cloned()
}

fn members(lg: &Labgate, group: &str) -> Vec<String> {
    let v = lg
        .admin()
        .get_query("/api/user_groups/users", &[("name", group), ("ps", "500")])
        .expect_json(200);
    logins(&v["users"])
}

#[test]
fn create_group_returns_the_group_with_a_string_id() {
    let lg = Labgate::start();
    let v = lg
        .admin()
        .post_form(
            "/api/user_groups/create",
            &[("name", "platform"), ("description", "Platform team")],
        )
        .expect_json(200);
    let g = &v["group"];
    assert!(g["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert_eq!(g["name"], "platform", "{v}");
    assert_eq!(g["description"], "Platform team", "{v}");
    assert_eq!(g["membersCount"], 0, "{v}");
    assert_eq!(g["default"], false, "{v}");
}

#[test]
fn create_duplicate_group_is_400() {
    let lg = Labgate::start();
    lg.create_group("dup");
    lg.admin()
        .post_form("/api/user_groups/create", &[("name", "dup")])
        .expect_error(400);
    for builtin in ["users", "administrators"] {
        lg.admin()
            .post_form("/api/user_groups/create", &[("name", builtin)])
            .expect_error(400);
    }
}

#[test]
fn group_names_are_case_sensitive() {
    let lg = Labgate::start();
    lg.create_group("Team");
    lg.create_group("team");
    assert!(find_group(&lg, "Team").is_some());
    assert!(find_group(&lg, "team").is_some());
}

#[test]
fn group_name_may_be_a_gitlab_path() {
    let lg = Labgate::start();
    let g = lg.create_group("acme/platform/sre");
    assert_eq!(g["name"], "acme/platform/sre");
}

#[test]
fn invalid_group_names_are_400() {
    let lg = Labgate::start();
    let long = "g".repeat(256);
    for name in ["", "   ", "Anyone", "anyone", &long] {
        let r = lg
            .admin()
            .post_form("/api/user_groups/create", &[("name", name)]);
        assert_eq!(r.status, 400, "group name {name:?}: {}", r.describe());
        r.expect_error(400);
    }
    let ok = "g".repeat(255);
    lg.create_group(&ok);
}

#[test]
fn update_group_renames_and_answers_the_group() {
    let lg = Labgate::start();
    let created = lg.create_group("old-name");
    let v = lg
        .admin()
        .post_form(
            "/api/user_groups/update",
            &[
                ("currentName", "old-name"),
                ("name", "new-name"),
                ("description", "renamed"),
            ],
        )
        .expect_json(200);
    assert_eq!(v["group"]["name"], "new-name", "{v}");
    assert_eq!(v["group"]["description"], "renamed", "{v}");
    assert_eq!(v["group"]["id"], created["id"], "{v}");
    assert!(find_group(&lg, "old-name").is_none());
    assert!(find_group(&lg, "new-name").is_some());
}

#[test]
fn update_group_to_an_existing_name_is_400() {
    let lg = Labgate::start();
    lg.create_group("one");
    lg.create_group("two");
    lg.admin()
        .post_form(
            "/api/user_groups/update",
            &[("currentName", "one"), ("name", "two")],
        )
        .expect_error(400);
}

#[test]
fn update_unknown_group_is_404() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/user_groups/update",
            &[("currentName", "ghosts"), ("name", "spirits")],
        )
        .expect_error(404);
}

#[test]
fn delete_group_answers_204_and_the_group_is_gone() {
    let lg = Labgate::start();
    lg.create_group("doomed");
    lg.admin()
        .post_form("/api/user_groups/delete", &[("name", "doomed")])
        .expect(204);
    assert!(find_group(&lg, "doomed").is_none());
    lg.admin()
        .post_form("/api/user_groups/delete", &[("name", "doomed")])
        .expect_error(404);
}

#[test]
fn deleting_a_group_takes_its_permission_from_its_members() {
    let lg = Labgate::start();
    lg.create_user("member", USER_PASSWORD);
    lg.create_group("temp-admins");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/permissions/add_group",
            &[("groupName", "temp-admins"), ("permission", "admin")],
        )
        .expect(204);
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "temp-admins"), ("login", "member")],
        )
        .expect(204);
    let mut member = lg.token_client("member");
    member.get("/api/users/search").expect_json(200);
    admin
        .post_form("/api/user_groups/delete", &[("name", "temp-admins")])
        .expect(204);
    member.get("/api/users/search").expect_error(403);
}

#[test]
fn search_lists_the_builtin_groups() {
    let lg = Labgate::start();
    let v = lg.admin().get("/api/user_groups/search").expect_json(200);
    assert_eq!(v["paging"]["pageIndex"], 1, "{v}");
    assert_eq!(v["paging"]["total"], 2, "{v}");
    let users = find_group(&lg, "users").expect("users group");
    assert_eq!(users["default"], true, "{users}");
    assert_eq!(users["managed"], false, "{users}");
    assert_eq!(users["membersCount"], 1, "admin only: {users}");
    assert!(users["id"].is_string(), "{users}");
    let admins = find_group(&lg, "administrators").expect("administrators group");
    assert_eq!(admins["default"], false, "{admins}");
    assert_eq!(admins["managed"], false, "{admins}");
}

#[test]
fn search_filters_by_name_and_pages() {
    let lg = Labgate::start();
    for n in ["squad-a", "squad-b", "squad-c", "other"] {
        lg.create_group(n);
    }
    let mut admin = lg.admin();
    let v = admin
        .get_query("/api/user_groups/search", &[("q", "SQUAD"), ("ps", "2")])
        .expect_json(200);
    assert_eq!(v["paging"]["total"], 3, "{v}");
    assert_eq!(v["paging"]["pageSize"], 2, "{v}");
    assert_eq!(names(&v["groups"]).len(), 2, "{v}");
    let v2 = admin
        .get_query(
            "/api/user_groups/search",
            &[("q", "squad"), ("ps", "2"), ("p", "2")],
        )
        .expect_json(200);
    assert_eq!(v2["paging"]["pageIndex"], 2, "{v2}");
    let mut all = names(&v["groups"]);
    all.extend(names(&v2["groups"]));
    all.sort();
    assert_eq!(all, vec!["squad-a", "squad-b", "squad-c"], "{v} {v2}");
}

#[test]
fn add_and_remove_user_change_membership() {
    let lg = Labgate::start();
    lg.create_user("joiner", USER_PASSWORD);
    lg.create_group("club");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "club"), ("login", "joiner")],
        )
        .expect(204);
    assert_eq!(members(&lg, "club"), vec!["joiner".to_string()]);
    assert_eq!(find_group(&lg, "club").expect("club")["membersCount"], 1);
    let me = lg
        .token_client("joiner")
        .get("/api/users/current")
        .expect_json(200);
    assert!(names(&me["groups"]).contains(&"club".to_string()), "{me}");
    admin
        .post_form(
            "/api/user_groups/remove_user",
            &[("name", "club"), ("login", "joiner")],
        )
        .expect(204);
    assert!(members(&lg, "club").is_empty());
    assert_eq!(find_group(&lg, "club").expect("club")["membersCount"], 0);
}

#[test]
fn membership_calls_with_unknown_group_or_user_are_404() {
    let lg = Labgate::start();
    lg.create_user("real", USER_PASSWORD);
    lg.create_group("real-group");
    let mut admin = lg.admin();
    for path in ["/api/user_groups/add_user", "/api/user_groups/remove_user"] {
        admin
            .post_form(path, &[("name", "no-such-group"), ("login", "real")])
            .expect_error(404);
        admin
            .post_form(path, &[("name", "real-group"), ("login", "no-such-user")])
            .expect_error(404);
    }
    admin
        .get_query("/api/user_groups/users", &[("name", "no-such-group")])
        .expect_error(404);
}

#[test]
fn group_users_filters_selected_deselected_and_all() {
    let lg = Labgate::start();
    lg.create_user("inside", USER_PASSWORD);
    lg.create_user("outside", USER_PASSWORD);
    lg.create_group("fence");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "fence"), ("login", "inside")],
        )
        .expect(204);
    let v = admin
        .get_query(
            "/api/user_groups/users",
            &[("name", "fence"), ("selected", "selected")],
        )
        .expect_json(200);
    assert_eq!(logins(&v["users"]), vec!["inside".to_string()], "{v}");
    assert_eq!(v["users"][0]["selected"], true, "{v}");
    assert_eq!(v["users"][0]["name"], "Name of inside", "{v}");
    assert_eq!(v["total"], 1, "{v}");
    assert_eq!(v["p"], 1, "{v}");
    assert!(v["ps"].is_u64(), "{v}");

    let v = admin
        .get_query(
            "/api/user_groups/users",
            &[("name", "fence"), ("selected", "deselected")],
        )
        .expect_json(200);
    let out = logins(&v["users"]);
    assert!(out.contains(&"outside".to_string()), "{v}");
    assert!(out.contains(&"admin".to_string()), "{v}");
    assert!(!out.contains(&"inside".to_string()), "{v}");
    assert!(
        v["users"]
            .as_array()
            .is_some_and(|a| a.iter().all(|u| u["selected"] == false)),
        "{v}"
    );

    let v = admin
        .get_query(
            "/api/user_groups/users",
            &[("name", "fence"), ("selected", "all"), ("q", "side")],
        )
        .expect_json(200);
    let mut both = logins(&v["users"]);
    both.sort();
    assert_eq!(both, vec!["inside", "outside"], "{v}");
    assert_eq!(v["total"], 2, "{v}");
}

#[test]
fn default_group_cannot_be_deleted() {
    let lg = Labgate::start();
    lg.admin()
        .post_form("/api/user_groups/delete", &[("name", "users")])
        .expect_error(400);
    assert!(find_group(&lg, "users").is_some());
}

#[test]
fn default_group_cannot_be_renamed() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/user_groups/update",
            &[("currentName", "users"), ("name", "everyone")],
        )
        .expect_error(400);
    assert!(find_group(&lg, "users").is_some());
    assert!(find_group(&lg, "everyone").is_none());
}

#[test]
fn default_group_members_cannot_be_edited_by_hand() {
    let lg = Labgate::start();
    lg.create_user("plain", USER_PASSWORD);
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/remove_user",
            &[("name", "users"), ("login", "plain")],
        )
        .expect_error(400);
    assert!(members(&lg, "users").contains(&"plain".to_string()));
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "users"), ("login", "plain")],
        )
        .expect_error(400);
}
