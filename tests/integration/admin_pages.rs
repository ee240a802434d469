//! The admin pages driven like a browser without JavaScript: forms posted with the CSRF field
//! (no header), 303 + a visible confirmation on success, 422 + field errors on bad input,
//! 403 without the token, confirmation pages before destructive actions, escaping.

use crate::harness::*;

const SCRIPT: &str = "<script>alert(1)</script>";

/// A signed-in admin that sends the CSRF token only as a form field, like a browser.
fn browser(lg: &Labgate) -> Client {
    lg.admin_client().with_xsrf(false)
}

/// Posts a form with the `csrf_token` field, whose value is the `XSRF-TOKEN` cookie's.
fn submit(c: &mut Client, path: &str, params: &[(&str, &str)]) -> Resp {
    let token = c
        .cookie("XSRF-TOKEN")
        .unwrap_or_else(|| panic!("no XSRF-TOKEN cookie: {:?}", c.cookies))
        .to_string();
    let mut all = params.to_vec();
    all.push(("csrf_token", &token));
    c.post_form(path, &all)
}

/// Asserts a 303 to a path starting with `to`, follows it, and returns the page (unescaped).
#[track_caller]
fn follow(c: &mut Client, r: &Resp, to: &str) -> String {
    assert_eq!(r.status, 303, "expected 303 See Other: {}", r.describe());
    let location = r.expect_redirect();
    assert!(
        location.starts_with(to),
        "redirect to {location}, wanted {to}"
    );
    html_unescape(&c.get(&location).expect_html(200))
}

/// Asserts a 422 page and returns it (unescaped).
#[track_caller]
fn refused(r: &Resp) -> String {
    html_unescape(&r.expect_html(422))
}

#[test]
fn form_token_is_the_xsrf_cookie_value() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let page = c.get("/admin/users").expect_html(200);
    let field = csrf_field(&page).unwrap_or_else(|| panic!("no csrf_token field:\n{page}"));
    assert_eq!(Some(field.as_str()), c.cookie("XSRF-TOKEN"));
}

#[test]
fn admin_creates_a_local_user_and_sees_it_listed() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/users/create",
        &[
            ("provider", "local"),
            ("login", "ann"),
            ("name", "Ann Smith"),
            ("email", "ann@example.org"),
            ("password", USER_PASSWORD),
        ],
    );
    let page = follow(&mut c, &r, "/admin/users");
    assert!(page.contains("User 'ann' was created."), "{page}");
    assert!(
        page.contains("Ann Smith") && page.contains("ann@example.org"),
        "{page}"
    );
    // The confirmation is shown once.
    let again = html_unescape(&c.get("/admin/users").expect_html(200));
    assert!(!again.contains("was created"), "{again}");
    // And the user can sign in with that password.
    lg.login("ann", USER_PASSWORD);
}

#[test]
fn admin_pre_provisions_a_gitlab_user_not_linked_yet() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/users/create",
        &[
            ("provider", "gitlab"),
            ("login", "bob"),
            ("name", "Bob"),
            ("email", ""),
            ("gitlab_username", "bob.gl"),
        ],
    );
    let page = follow(&mut c, &r, "/admin/users");
    assert!(page.contains("User 'bob' was created."), "{page}");
    assert!(page.contains("bob.gl"), "{page}");
    assert!(page.contains("not linked yet"), "{page}");
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("q", "bob")])
        .expect_json(200);
    assert_eq!(v["users"][0]["local"], false, "{v}");
    assert_eq!(v["users"][0]["externalIdentity"], "bob.gl", "{v}");
}

#[test]
fn gitlab_user_form_refuses_a_gitlab_username_already_linked() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let gitlab_user = |login: &'static str, username: &'static str| {
        [
            ("provider", "gitlab"),
            ("login", login),
            ("name", "Some One"),
            ("email", ""),
            ("gitlab_username", username),
        ]
    };
    let r = submit(
        &mut c,
        "/admin/users/create",
        &gitlab_user("holder", "bob.gl"),
    );
    follow(&mut c, &r, "/admin/users");
    let field_error =
        "<p class=\"field-error\">GitLab user 'BOB.gl' is already linked to user 'holder'";
    // A new user.
    let r = submit(
        &mut c,
        "/admin/users/create",
        &gitlab_user("second", "BOB.gl"),
    );
    let page = refused(&r);
    assert!(page.contains(field_error), "{page}");
    assert!(
        page.contains("value=\"second\""),
        "the login is kept:\n{page}"
    );
    // A deactivated login that the form would bring back.
    lg.create_user("old", USER_PASSWORD);
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "old")])
        .expect_json(200);
    let r = submit(&mut c, "/admin/users/create", &gitlab_user("old", "BOB.gl"));
    let page = refused(&r);
    assert!(page.contains(field_error), "{page}");
    let v = lg
        .admin()
        .get_query(
            "/api/users/search",
            &[("q", "old"), ("deactivated", "true")],
        )
        .expect_json(200);
    assert_eq!(v["users"][0]["login"], "old", "still deactivated: {v}");
    assert_eq!(v["users"][0]["local"], true, "still local: {v}");
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("q", "second")])
        .expect_json(200);
    assert_eq!(v["paging"]["total"], 0, "nothing was created: {v}");
}

#[test]
fn gitlab_user_form_says_that_gitlab_usernames_change_hands() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let page = html_unescape(&c.get("/admin/users").expect_html(200));
    let form = page
        .split("id=\"create-gitlab\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no GitLab user form:\n{page}"));
    // As a browser shows it: line breaks and indentation are single spaces.
    let form = form.split_whitespace().collect::<Vec<_>>().join(" ");
    for words in [
        "A GitLab username can change hands",
        "by GitLab's numeric user id",
        "shortly before their first sign-in",
        "allowed groups",
    ] {
        assert!(form.contains(words), "{words:?} missing from:\n{form}");
    }
}

#[test]
fn bad_user_form_is_shown_again_with_field_errors() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/users/create",
        &[
            ("provider", "local"),
            ("login", "carol"),
            ("name", "Carol"),
            ("email", "not-an-email"),
            ("password", "short"),
        ],
    );
    let page = refused(&r);
    assert!(page.contains("Email 'not-an-email' is not valid"), "{page}");
    assert!(
        page.contains("Password must be at least 12 characters long"),
        "{page}"
    );
    assert!(
        page.contains("value=\"carol\""),
        "the login is kept:\n{page}"
    );
    assert!(
        !page.contains("value=\"short\""),
        "the password is not sent back"
    );
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("q", "carol")])
        .expect_json(200);
    assert_eq!(v["paging"]["total"], 0, "{v}");
}

#[test]
fn duplicate_login_is_a_visible_error() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/users/create",
        &[
            ("provider", "local"),
            ("login", "admin"),
            ("name", "Again"),
            ("password", USER_PASSWORD),
        ],
    );
    assert!(refused(&r).contains("An active user with login 'admin' already exists"));
}

#[test]
fn page_forms_without_csrf_token_are_refused() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let forms: &[(&str, &[(&str, &str)])] = &[
        (
            "/admin/users/create",
            &[
                ("provider", "local"),
                ("login", "mallory"),
                ("name", "M"),
                ("password", USER_PASSWORD),
            ],
        ),
        ("/admin/groups/create", &[("name", "forged")]),
        (
            "/admin/permissions/grant_user",
            &[("login", "admin"), ("permission", "admin")],
        ),
        (
            "/admin/settings",
            &[
                ("key", "sonar.web.sessionTimeoutInMinutes"),
                ("value", "60"),
            ],
        ),
    ];
    for (path, params) in forms {
        c.post_form(path, params).expect_html(403);
        let mut forged = params.to_vec();
        forged.push(("csrf_token", "forged-token"));
        c.post_form(path, &forged).expect_html(403);
    }
    let mut admin = lg.admin();
    let v = admin
        .get_query("/api/users/search", &[("q", "mallory")])
        .expect_json(200);
    assert_eq!(v["paging"]["total"], 0, "{v}");
    let v = admin
        .get_query("/api/user_groups/search", &[("q", "forged")])
        .expect_json(200);
    assert_eq!(v["paging"]["total"], 0, "{v}");
}

#[test]
fn admin_creates_a_group_adds_a_member_and_grants_it_admin() {
    let lg = Labgate::start();
    lg.create_user("dave", USER_PASSWORD);
    let mut c = browser(&lg);

    let r = submit(
        &mut c,
        "/admin/groups/create",
        &[("name", "acme/platform"), ("description", "Platform team")],
    );
    let page = follow(&mut c, &r, "/admin/groups");
    assert!(
        page.contains("Group 'acme/platform' was created."),
        "{page}"
    );
    assert!(page.contains("Platform team"), "{page}");

    let r = submit(
        &mut c,
        "/admin/groups/add_member",
        &[("name", "acme/platform"), ("login", "dave")],
    );
    let page = follow(&mut c, &r, "/admin/groups/edit?name=acme%2Fplatform");
    assert!(
        page.contains("User 'dave' was added to group 'acme/platform'."),
        "{page}"
    );
    assert!(page.contains("Name of dave"), "{page}");

    let r = submit(
        &mut c,
        "/admin/permissions/grant_group",
        &[("groupName", "acme/platform"), ("permission", "admin")],
    );
    let page = follow(&mut c, &r, "/admin/permissions");
    assert!(
        page.contains("Permission 'Administer System' was granted to group 'acme/platform'."),
        "{page}"
    );
    // Dave is now an admin through the group.
    lg.login("dave", USER_PASSWORD)
        .get("/admin/users")
        .expect_html(200);
}

#[test]
fn adding_an_unknown_user_to_a_group_is_a_visible_error() {
    let lg = Labgate::start();
    lg.create_group("devs");
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/groups/add_member",
        &[("name", "devs"), ("login", "nobody")],
    );
    let page = refused(&r);
    assert!(page.contains("User 'nobody' not found"), "{page}");
    assert!(page.contains("value=\"nobody\""), "{page}");
}

#[test]
fn bad_group_name_is_shown_next_to_the_field() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(&mut c, "/admin/groups/create", &[("name", "Anyone")]);
    let page = refused(&r);
    assert!(page.contains("Anyone group cannot be used"), "{page}");
    assert!(page.contains("class=\"field-error\""), "{page}");
}

#[test]
fn user_edit_page_adds_and_removes_groups() {
    let lg = Labgate::start();
    lg.create_user("erin", USER_PASSWORD);
    lg.create_group("qa");
    let mut c = browser(&lg);
    let page = html_unescape(&c.get("/admin/users/edit?login=erin").expect_html(200));
    assert!(page.contains("qa") && page.contains("users"), "{page}");
    let r = submit(
        &mut c,
        "/admin/users/add_group",
        &[("login", "erin"), ("group", "qa")],
    );
    let page = follow(&mut c, &r, "/admin/users/edit?login=erin");
    assert!(
        page.contains("User 'erin' was added to group 'qa'."),
        "{page}"
    );
    let r = submit(
        &mut c,
        "/admin/users/remove_group",
        &[("login", "erin"), ("group", "qa")],
    );
    let page = follow(&mut c, &r, "/admin/users/edit?login=erin");
    assert!(
        page.contains("User 'erin' was removed from group 'qa'."),
        "{page}"
    );
    // The default group is not editable by hand.
    let r = submit(
        &mut c,
        "/admin/users/remove_group",
        &[("login", "erin"), ("group", "users")],
    );
    assert!(refused(&r).contains("Default group 'users' cannot be used"));
}

#[test]
fn user_profile_edit_validates_the_email() {
    let lg = Labgate::start();
    lg.create_user("fred", USER_PASSWORD);
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/users/update",
        &[("login", "fred"), ("name", "Fred F."), ("email", "fred@")],
    );
    let page = refused(&r);
    assert!(page.contains("Email 'fred@' is not valid"), "{page}");
    assert!(page.contains("value=\"Fred F.\""), "{page}");
    let r = submit(
        &mut c,
        "/admin/users/update",
        &[
            ("login", "fred"),
            ("name", "Fred F."),
            ("email", "fred@x.org"),
        ],
    );
    let page = follow(&mut c, &r, "/admin/users/edit?login=fred");
    assert!(page.contains("User 'fred' was updated."), "{page}");
    assert!(page.contains("fred@x.org"), "{page}");
}

#[test]
fn deactivation_asks_for_confirmation_then_reactivation_brings_the_user_back() {
    let lg = Labgate::start();
    lg.create_user("gina", USER_PASSWORD);
    let mut c = browser(&lg);
    let confirm = c
        .get("/admin/users/deactivate?login=gina&q=gi")
        .expect_html(200);
    assert!(confirm.contains("Are you sure"), "{confirm}");
    assert!(confirm.contains("method=\"post\""), "{confirm}");
    // The GET changed nothing.
    lg.login("gina", USER_PASSWORD);

    let r = submit(
        &mut c,
        "/admin/users/deactivate",
        &[("login", "gina"), ("q", "gi")],
    );
    let page = follow(&mut c, &r, "/admin/users?q=gi");
    assert!(page.contains("User 'gina' was deactivated."), "{page}");
    assert!(page.contains("No user matches 'gi'"), "{page}");
    let deactivated = html_unescape(&c.get("/admin/users?deactivated=true").expect_html(200));
    assert!(deactivated.contains("gina"), "{deactivated}");

    let r = submit(
        &mut c,
        "/admin/users/reactivate",
        &[("login", "gina"), ("deactivated", "true")],
    );
    let page = follow(&mut c, &r, "/admin/users?deactivated=true");
    assert!(page.contains("User 'gina' was reactivated."), "{page}");
}

#[test]
fn admins_cannot_deactivate_themselves() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let confirm = html_unescape(
        &c.get("/admin/users/deactivate?login=admin")
            .expect_html(200),
    );
    assert!(
        confirm.contains("You cannot deactivate your own account."),
        "{confirm}"
    );
    let r = submit(&mut c, "/admin/users/deactivate", &[("login", "admin")]);
    assert!(refused(&r).contains("Self-deactivation is not possible"));
}

#[test]
fn group_deletion_asks_for_confirmation() {
    let lg = Labgate::start();
    lg.create_group("old-team");
    let mut c = browser(&lg);
    let confirm = html_unescape(&c.get("/admin/groups/delete?name=old-team").expect_html(200));
    assert!(
        confirm.contains("Are you sure you want to delete group 'old-team'?"),
        "{confirm}"
    );
    let r = submit(&mut c, "/admin/groups/delete", &[("name", "old-team")]);
    let page = follow(&mut c, &r, "/admin/groups");
    assert!(page.contains("Group 'old-team' was deleted."), "{page}");
    assert!(!page.contains(">old-team<"), "{page}");
    // The default group offers no deletion at all.
    let page = html_unescape(&c.get("/admin/groups/delete?name=users").expect_html(200));
    assert!(!page.contains("action=\"/admin/groups/delete\""), "{page}");
}

#[test]
fn last_admin_rule_is_a_visible_error_on_the_permissions_page() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/permissions/revoke_group",
        &[("groupName", "administrators"), ("permission", "admin")],
    );
    let page = refused(&r);
    assert!(
        page.contains("Last user with permission 'admin'. Permission cannot be removed."),
        "{page}"
    );
    assert!(page.contains("class=\"error\""), "{page}");
}

#[test]
fn granting_to_an_unknown_user_or_permission_is_refused_with_an_error() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/permissions/grant_user",
        &[("login", "ghost"), ("permission", "admin")],
    );
    assert!(refused(&r).contains("User 'ghost' not found"));
    let r = submit(
        &mut c,
        "/admin/permissions/grant_user",
        &[("login", "admin"), ("permission", "root")],
    );
    assert!(refused(&r).contains("Value of parameter 'permission' (root) must be one of"));
}

#[test]
fn granted_user_permission_is_listed_and_revocable() {
    let lg = Labgate::start();
    lg.create_user("hank", USER_PASSWORD);
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/permissions/grant_user",
        &[("login", "hank"), ("permission", "admin")],
    );
    let page = follow(&mut c, &r, "/admin/permissions");
    assert!(
        page.contains("Permission 'Administer System' was granted to user 'hank'."),
        "{page}"
    );
    assert!(page.contains("Name of hank"), "{page}");
    let r = submit(
        &mut c,
        "/admin/permissions/revoke_user",
        &[("login", "hank"), ("permission", "admin")],
    );
    let page = follow(&mut c, &r, "/admin/permissions");
    assert!(
        page.contains("Permission 'Administer System' was revoked from user 'hank'."),
        "{page}"
    );
    assert!(!page.contains("Name of hank"), "{page}");
}

#[test]
fn settings_are_saved_validated_and_reset() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let key = "sonar.web.sessionTimeoutInMinutes";
    let page = html_unescape(
        &c.get("/admin/settings?category=authentication")
            .expect_html(200),
    );
    assert!(
        page.contains(key) && page.contains("4320 (default)"),
        "{page}"
    );

    let r = submit(&mut c, "/admin/settings", &[("key", key), ("value", "5")]);
    let page = refused(&r);
    assert!(page.contains("whole number between 6 and"), "{page}");
    assert!(page.contains("value=\"5\""), "{page}");

    let r = submit(&mut c, "/admin/settings", &[("key", key), ("value", "90")]);
    let page = follow(&mut c, &r, "/admin/settings?category=authentication");
    assert!(page.contains("was saved."), "{page}");
    let v = lg
        .admin()
        .get_query("/api/settings/values", &[("keys", key)])
        .expect_json(200);
    assert_eq!(v["settings"][0]["value"], "90", "{v}");

    let r = submit(
        &mut c,
        "/admin/settings",
        &[("key", key), ("value", "90"), ("action", "reset")],
    );
    let page = follow(&mut c, &r, "/admin/settings?category=authentication");
    assert!(page.contains("was reset to its default."), "{page}");
    assert!(page.contains("4320 (default)"), "{page}");
}

#[test]
fn token_lifetime_is_chosen_from_its_values_on_the_settings_page() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let key = "sonar.auth.token.max.allowed.lifetime";
    let page = html_unescape(
        &c.get("/admin/settings?category=authentication")
            .expect_html(200),
    );
    assert!(
        page.contains(key) && page.contains("No expiration (default)"),
        "{page}"
    );
    for value in ["30 days", "90 days", "1 year", "No expiration"] {
        assert!(
            page.contains(&format!("<option value=\"{value}\"")),
            "{value} not offered:\n{page}"
        );
    }
    let r = submit(
        &mut c,
        "/admin/settings",
        &[("key", key), ("value", "2 years")],
    );
    let page = refused(&r);
    assert!(page.contains("value must be one of '30 days'"), "{page}");

    let r = submit(
        &mut c,
        "/admin/settings",
        &[("key", key), ("value", "1 year")],
    );
    let page = follow(&mut c, &r, "/admin/settings?category=authentication");
    assert!(page.contains("was saved."), "{page}");
    assert!(
        page.contains("<option value=\"1 year\" selected"),
        "the saved value is the one selected:\n{page}"
    );
    let v = lg
        .admin()
        .get_query("/api/settings/values", &[("keys", key)])
        .expect_json(200);
    assert_eq!(v["settings"][0]["value"], "1 year", "{v}");
}

#[test]
fn base_url_given_at_start_is_read_only_on_the_settings_page() {
    let lg = Labgate::start_with(&["--base-url", "https://labgate.example.com"], &[]);
    let mut c = browser(&lg);
    let page = html_unescape(&c.get("/admin/settings").expect_html(200));
    assert!(page.contains("https://labgate.example.com"), "{page}");
    assert!(page.contains("--base-url"), "{page}");
    assert!(
        !page.contains("name=\"value\""),
        "no editable field:\n{page}"
    );
    let r = submit(
        &mut c,
        "/admin/settings",
        &[
            ("key", "sonar.core.serverBaseURL"),
            ("value", "https://other.example.com"),
        ],
    );
    refused(&r);
}

#[test]
fn user_list_pages_keep_the_search() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for i in 0..55 {
        let login = format!("pg-user-{i:02}");
        admin
            .post_form(
                "/api/users/create",
                &[("login", &login), ("name", "Paged"), ("local", "false")],
            )
            .expect_json(200);
    }
    let mut c = browser(&lg);
    // Links are compared decoded: how they are escaped is the page's business.
    let decoded = |page: &str| urldecode(&html_unescape(page));
    let page = decoded(&c.get("/admin/users?q=pg-user").expect_html(200));
    assert!(
        page.contains("href=\"/admin/users?q=pg-user&p=2\""),
        "{page}"
    );
    assert!(page.contains("1–50 of 55"), "{page}");
    let page = decoded(&c.get("/admin/users?q=pg-user&p=2").expect_html(200));
    assert!(
        page.contains("pg-user-54") && !page.contains("pg-user-03"),
        "{page}"
    );
    assert!(page.contains("href=\"/admin/users?q=pg-user\""), "{page}");
    // The forms of page 2 come back to page 2.
    assert!(page.contains("name=\"p\" value=\"2\""), "{page}");
}

#[test]
fn hostile_text_is_escaped_on_every_admin_page() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/users/create",
        &[
            ("provider", "local"),
            ("login", "xss"),
            ("name", SCRIPT),
            ("password", USER_PASSWORD),
        ],
    );
    follow(&mut c, &r, "/admin/users");
    let r = submit(
        &mut c,
        "/admin/groups/create",
        &[("name", SCRIPT), ("description", SCRIPT)],
    );
    follow(&mut c, &r, "/admin/groups");
    let r = submit(
        &mut c,
        "/admin/groups/add_member",
        &[("name", SCRIPT), ("login", "xss")],
    );
    follow(&mut c, &r, "/admin/groups/edit");
    let r = submit(
        &mut c,
        "/admin/permissions/grant_group",
        &[("groupName", SCRIPT), ("permission", "admin")],
    );
    follow(&mut c, &r, "/admin/permissions");
    let hostile_url = format!("https://labgate.example.com/{SCRIPT}");
    let r = submit(
        &mut c,
        "/admin/settings",
        &[("key", "sonar.core.serverBaseURL"), ("value", &hostile_url)],
    );
    follow(&mut c, &r, "/admin/settings");

    let encoded = urlencode(SCRIPT);
    let pages = [
        "/admin/users".to_string(),
        format!("/admin/users?q={encoded}"),
        "/admin/users/edit?login=xss".to_string(),
        "/admin/groups".to_string(),
        format!("/admin/groups?q={encoded}"),
        format!("/admin/groups/edit?name={encoded}"),
        format!("/admin/groups/delete?name={encoded}"),
        "/admin/permissions".to_string(),
        "/admin/settings?category=general".to_string(),
    ];
    for path in &pages {
        let page = c.get(path).expect_html(200);
        assert!(!page.contains(SCRIPT), "{path} has the raw text:\n{page}");
        assert!(
            html_unescape(&page).contains(SCRIPT),
            "{path} does not show the text escaped:\n{page}"
        );
    }
    // A refused value sent back into a form is escaped too.
    let r = submit(
        &mut c,
        "/admin/settings",
        &[
            ("key", "sonar.web.sessionTimeoutInMinutes"),
            ("value", SCRIPT),
        ],
    );
    let page = r.expect_html(422);
    assert!(!page.contains(SCRIPT), "{page}");
    assert!(html_unescape(&page).contains(SCRIPT), "{page}");
}

#[test]
fn revoking_your_own_admin_sends_you_home_with_the_confirmation() {
    let lg = Labgate::start();
    lg.create_user("ivy", USER_PASSWORD);
    lg.grant_user("ivy", "admin");
    let mut ivy = lg.login("ivy", USER_PASSWORD).with_xsrf(false);
    let r = submit(
        &mut ivy,
        "/admin/permissions/revoke_user",
        &[("login", "ivy"), ("permission", "admin")],
    );
    let page = follow(&mut ivy, &r, "/");
    assert!(
        page.contains("Permission 'Administer System' was revoked from user 'ivy'."),
        "{page}"
    );
    assert!(page.contains("You no longer hold"), "{page}");
    ivy.get("/admin/permissions").expect_html(403);
}
