//! The "Done means" walkthrough of the product, end to end over HTTP.

use crate::harness::*;

#[test]
fn done_means_walkthrough() {
    let lg = Labgate::start();
    // Sign in as admin.
    let mut admin = lg.admin_client();
    // Create a group.
    let g = admin
        .post_form(
            "/api/user_groups/create",
            &[("name", "release-managers"), ("description", "Ship it")],
        )
        .expect_json(200);
    assert_eq!(g["group"]["name"], "release-managers", "{g}");
    // Create a local user.
    let u = admin
        .post_form(
            "/api/users/create",
            &[
                ("login", "walker"),
                ("name", "Walker Texas"),
                ("email", "walker@example.com"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    assert_eq!(u["user"]["login"], "walker", "{u}");
    // Grant the group "Administer System".
    admin
        .post_form(
            "/api/permissions/add_group",
            &[("groupName", "release-managers"), ("permission", "admin")],
        )
        .expect(204);
    // Add the user to the group.
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "release-managers"), ("login", "walker")],
        )
        .expect(204);
    // Generate a token for the user, as admin.
    let t = admin
        .post_form(
            "/api/user_tokens/generate",
            &[("login", "walker"), ("name", "ci")],
        )
        .expect_json(200);
    assert_eq!(t["login"], "walker", "{t}");
    let token = t["token"].as_str().unwrap_or_default().to_string();
    // List users with that token.
    let mut walker = lg.client().bearer(&token);
    let v = walker.get("/api/users/search").expect_json(200);
    let mut all = logins(&v["users"]);
    all.sort();
    assert_eq!(all, vec!["admin", "walker"], "{v}");
    assert_eq!(v["paging"]["total"], 2, "{v}");
    // And the token really is walker's, an admin through the group.
    let me = walker.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "walker", "{me}");
    assert!(
        names(&me["groups"]).contains(&"release-managers".to_string()),
        "{me}"
    );
    assert_eq!(
        me["permissions"]["global"],
        serde_json::json!(["admin"]),
        "{me}"
    );
}
