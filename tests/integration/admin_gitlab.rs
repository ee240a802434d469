//! The GitLab section of `/admin/settings?category=authentication`, driven like a browser
//! without JavaScript: configure, the card (edit, enable/disable, delete), the redirect URI and
//! scopes to register, and Just-in-Time provisioning. The secret never appears in a page or a
//! log line; every change is the same `sonar.auth.gitlab.*` setting the API reads.

use crate::harness::*;
use serde_json::Value;

const PAGE: &str = "/admin/settings?category=authentication";
const SECRET: &str = "gl-secret-Value-7f3a";
const URL_NEEDS_SECRET: &str =
    "For security reasons, the URL can't be updated without providing the secret.";
const SYNC_NEEDS_ALLOWED_GROUP: &str = "Synchronize user groups needs at least one allowed group: only groups under an allowed group are synchronized";

/// A signed-in admin that sends the CSRF token only as a form field, like a browser.
fn browser(lg: &Labgate) -> Client {
    lg.admin_client().with_xsrf(false)
}

/// Posts a form with the `csrf_token` field taken from the settings page, like a browser.
fn submit(c: &mut Client, path: &str, params: &[(&str, &str)]) -> Resp {
    let page = c.get(PAGE).expect_html(200);
    let token = csrf_field(&page).unwrap_or_else(|| panic!("no csrf_token field:\n{page}"));
    let mut all = params.to_vec();
    all.push(("csrf_token", &token));
    c.post_form(path, &all)
}

/// Asserts a 303 back to the authentication settings, follows it, returns the page (unescaped).
#[track_caller]
fn follow(c: &mut Client, r: &Resp) -> String {
    assert_eq!(r.status, 303, "expected 303 See Other: {}", r.describe());
    let location = r.expect_redirect();
    assert!(location.starts_with(PAGE), "redirect to {location}");
    html_unescape(&c.get(&location).expect_html(200))
}

/// Asserts a 422 page and returns it (unescaped).
#[track_caller]
fn refused(r: &Resp) -> String {
    html_unescape(&r.expect_html(422))
}

fn settings_page(c: &mut Client) -> String {
    html_unescape(&c.get(PAGE).expect_html(200))
}

/// The stored value of a setting through `api/settings/values`; `None` when nothing is stored
/// (the default applies).
fn setting(lg: &Labgate, key: &str) -> Option<Value> {
    let v = lg
        .admin()
        .get_query("/api/settings/values", &[("keys", key)])
        .expect_json(200);
    let found = v["settings"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["key"] == key))?;
    if found["inherited"] == true {
        return None;
    }
    found.get("value").or(found.get("values")).cloned()
}

/// The secured settings that are set (their values are never returned).
fn secured_set(lg: &Labgate) -> Vec<String> {
    let v = lg.admin().get("/api/settings/values").expect_json(200);
    names(&v["setSecuredSettings"])
}

/// Configures GitLab through the page's "Configure GitLab" form.
fn configure(c: &mut Client, url: &str) -> String {
    let r = submit(
        c,
        "/admin/settings/gitlab/create",
        &[
            ("applicationId", "app-123"),
            ("secret", SECRET),
            ("url", url),
        ],
    );
    follow(c, &r)
}

/// Sets the allowed groups through `api/settings/set`.
fn set_allowed_groups(lg: &Labgate, groups: &[&str]) {
    let mut params = vec![("key", "sonar.auth.gitlab.allowedGroups")];
    params.extend(groups.iter().map(|g| ("values", *g)));
    lg.admin()
        .post_form("/api/settings/set", &params)
        .expect(204);
}

fn allowed_group_boxes(page: &str) -> usize {
    page.matches("name=\"allowedGroups\"").count()
}

#[test]
fn configure_shows_a_card_with_the_secret_set_but_never_its_value() {
    let lg = Launch::new().env("LABGATE_LOG", "debug").start();
    let mut c = browser(&lg);
    let page = settings_page(&mut c);
    assert!(page.contains("Configure GitLab"), "{page}");
    assert!(page.contains("value=\"https://gitlab.com\""), "{page}");
    assert!(!page.contains("id=\"gitlab-configuration\""), "{page}");

    let page = configure(&mut c, "https://gitlab.example.org");
    assert!(
        page.contains("The GitLab configuration was created."),
        "{page}"
    );
    assert!(page.contains("<dt>Secret</dt><dd>set</dd>"), "{page}");
    assert!(
        page.contains("app-123") && page.contains("https://gitlab.example.org"),
        "{page}"
    );
    assert!(page.contains("badge off\">disabled"), "{page}");
    assert!(!page.contains("Configure GitLab"), "{page}");
    for path in [
        PAGE,
        "/admin/settings/gitlab/edit",
        "/admin/settings/gitlab/delete",
    ] {
        let page = c.get(path).expect_html(200);
        assert!(
            !html_unescape(&page).contains(SECRET),
            "{path} shows the secret:\n{page}"
        );
    }
    assert!(
        !lg.stderr().joined().contains(SECRET),
        "{}",
        lg.stderr().joined()
    );
}

#[test]
fn configure_with_missing_fields_is_shown_again_with_field_errors() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/create",
        &[
            ("applicationId", "app-123"),
            ("secret", ""),
            ("url", "ftp://x"),
        ],
    );
    let page = refused(&r);
    assert!(page.contains("Enter the secret"), "{page}");
    assert!(page.contains("is not a valid http or https URL"), "{page}");
    assert!(
        page.contains("value=\"app-123\""),
        "the application ID is kept:\n{page}"
    );
    assert!(secured_set(&lg).is_empty());
}

#[test]
fn plain_http_url_is_warned_about() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let page = configure(&mut c, "http://gitlab.lab");
    assert!(
        page.contains("traffic to GitLab is not encrypted"),
        "{page}"
    );
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "app-123"),
            ("url", "https://gitlab.lab"),
            ("secret", SECRET),
        ],
    );
    let page = follow(&mut c, &r);
    assert!(!page.contains("not encrypted"), "{page}");
}

#[test]
fn edit_url_without_the_secret_is_refused_and_changes_nothing() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let page = html_unescape(&c.get("/admin/settings/gitlab/edit").expect_html(200));
    assert!(page.contains("value=\"app-123\""), "{page}");
    assert!(page.contains("leave empty to keep it"), "{page}");
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "app-456"),
            ("url", "https://evil.example"),
            ("secret", ""),
        ],
    );
    let page = refused(&r);
    assert!(page.contains(URL_NEEDS_SECRET), "{page}");
    assert!(page.contains("class=\"field-error\""), "{page}");
    assert!(
        page.contains("value=\"https://evil.example\""),
        "the form is kept:\n{page}"
    );
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.url"),
        Some(Value::from("https://gitlab.example.org"))
    );
    let page = settings_page(&mut c);
    assert!(
        page.contains("app-123") && !page.contains("app-456"),
        "{page}"
    );
}

#[test]
fn edit_url_with_the_secret_is_saved() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "app-456"),
            ("url", "https://git.example.net/gitlab/"),
            ("secret", "new-secret-1"),
        ],
    );
    let page = follow(&mut c, &r);
    assert!(
        page.contains("The GitLab configuration was saved."),
        "{page}"
    );
    assert!(page.contains("app-456"), "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.url"),
        Some(Value::from("https://git.example.net/gitlab"))
    );
    assert!(!page.contains("new-secret-1"), "{page}");
}

#[test]
fn enabling_without_a_secret_is_refused() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.gitlab.applicationId.secured"),
                ("value", "app-123"),
            ],
        )
        .expect(204);
    let mut c = browser(&lg);
    let page = settings_page(&mut c);
    assert!(
        page.contains("<dt>Secret</dt><dd><span class=\"badge warn\">not set"),
        "{page}"
    );
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/enabled",
        &[("enabled", "true")],
    );
    let page = refused(&r);
    assert!(
        page.contains("cannot be enabled yet: set the application ID and the secret"),
        "{page}"
    );
    assert_eq!(setting(&lg, "sonar.auth.gitlab.enabled"), None);
}

#[test]
fn enable_and_disable_show_and_hide_gitlab_on_the_login_page() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let login_page = || lg.client().get("/sessions/new").expect_html(200);
    assert!(!login_page().contains("Log in with GitLab"));

    let r = submit(
        &mut c,
        "/admin/settings/gitlab/enabled",
        &[("enabled", "true")],
    );
    let page = follow(&mut c, &r);
    assert!(page.contains("Sign-in with GitLab is enabled."), "{page}");
    assert!(
        page.contains("anyone with an account on https://gitlab.example.org"),
        "{page}"
    );
    assert!(page.contains("badge ok\">enabled"), "{page}");
    assert!(login_page().contains("Log in with GitLab"));

    let r = submit(
        &mut c,
        "/admin/settings/gitlab/enabled",
        &[("enabled", "false")],
    );
    let page = follow(&mut c, &r);
    assert!(page.contains("Sign-in with GitLab is disabled."), "{page}");
    assert!(!login_page().contains("Log in with GitLab"));
}

#[test]
fn allowed_group_boxes_are_added_and_removed_without_saving() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let page = configure(&mut c, "https://gitlab.example.org");
    assert_eq!(allowed_group_boxes(&page), 1, "one empty box:\n{page}");

    let base = [("allowUsersToSignUp", "true")];
    let mut add = base.to_vec();
    add.extend([
        ("allowedGroups", "acme"),
        ("allowedGroups", "beta"),
        ("action", "add"),
    ]);
    let page = html_unescape(
        &submit(&mut c, "/admin/settings/gitlab/provisioning", &add).expect_html(200),
    );
    assert_eq!(
        allowed_group_boxes(&page),
        3,
        "two groups and an empty box:\n{page}"
    );
    assert!(
        page.contains("value=\"acme\"") && page.contains("value=\"beta\""),
        "{page}"
    );
    assert!(page.contains("Not saved yet"), "{page}");

    let mut remove = base.to_vec();
    remove.extend([
        ("allowedGroups", "acme"),
        ("allowedGroups", "beta"),
        ("allowedGroups", ""),
        ("remove", "0"),
    ]);
    let page = html_unescape(
        &submit(&mut c, "/admin/settings/gitlab/provisioning", &remove).expect_html(200),
    );
    assert_eq!(allowed_group_boxes(&page), 2, "{page}");
    assert!(
        !page.contains("value=\"acme\"") && page.contains("value=\"beta\""),
        "{page}"
    );
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.allowedGroups"),
        None,
        "nothing saved"
    );

    let mut save = base.to_vec();
    save.extend([
        ("allowedGroups", "beta"),
        ("allowedGroups", "gamma"),
        ("action", "save"),
    ]);
    let r = submit(&mut c, "/admin/settings/gitlab/provisioning", &save);
    let page = follow(&mut c, &r);
    assert!(
        page.contains("The provisioning settings were saved."),
        "{page}"
    );
    assert!(
        !page.contains("needs the scope")
            && page.contains(r#"<code class="copy" id="gitlab-scopes">openid email</code>"#),
        "the scopes do not depend on the provisioning settings (read_api is named only for \
         the provisioning token):\n{page}"
    );
    assert_eq!(allowed_group_boxes(&page), 3, "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.allowedGroups"),
        Some(serde_json::json!(["beta", "gamma"]))
    );
}

#[test]
fn a_subgroup_as_allowed_group_is_a_field_error() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/provisioning",
        &[
            ("allowUsersToSignUp", "true"),
            ("allowedGroups", "acme/sub"),
            ("action", "save"),
        ],
    );
    let page = refused(&r);
    assert!(page.contains("'acme/sub' is not a root group"), "{page}");
    assert!(page.contains("class=\"field-error\""), "{page}");
    assert!(
        page.contains("value=\"acme/sub\""),
        "the box keeps its text:\n{page}"
    );
    assert_eq!(setting(&lg, "sonar.auth.gitlab.allowedGroups"), None);
}

#[test]
fn open_sign_up_warns_and_is_saved_only_when_confirmed() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let form = [("allowUsersToSignUp", "true"), ("allowedGroups", "")];
    let mut save = form.to_vec();
    save.push(("action", "save"));
    let page = refused(&submit(
        &mut c,
        "/admin/settings/gitlab/provisioning",
        &save,
    ));
    assert!(
        page.contains("anyone with an account on https://gitlab.example.org could sign in"),
        "{page}"
    );
    assert!(page.contains("Save anyway"), "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.groupsSync"),
        None,
        "nothing saved"
    );
    assert_eq!(setting(&lg, "sonar.auth.gitlab.allowUsersToSignUp"), None);

    let mut anyway = form.to_vec();
    anyway.push(("confirm_open", "1"));
    let r = submit(&mut c, "/admin/settings/gitlab/provisioning", &anyway);
    let page = follow(&mut c, &r);
    assert!(
        page.contains("The provisioning settings were saved."),
        "{page}"
    );
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.groupsSync"),
        Some(Value::from("false"))
    );
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.allowUsersToSignUp"),
        Some(Value::from("true"))
    );
}

#[test]
fn sign_up_off_needs_no_confirmation() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/provisioning",
        &[("allowedGroups", ""), ("action", "save")],
    );
    let page = follow(&mut c, &r);
    assert!(!page.contains("Save anyway"), "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.allowUsersToSignUp"),
        Some(Value::from("false"))
    );
}

#[test]
fn synchronize_user_groups_is_saved_from_the_edit_form() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    set_allowed_groups(&lg, &["acme"]);
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "app-123"),
            ("url", "https://gitlab.example.org"),
            ("secret", ""),
            ("groupsSync", "true"),
        ],
    );
    let page = follow(&mut c, &r);
    assert!(
        page.contains("<dt>Synchronize user groups</dt><dd>on</dd>"),
        "{page}"
    );
    assert!(
        page.contains("id=\"gitlab-scopes\">openid email<"),
        "{page}"
    );
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.groupsSync"),
        Some(Value::from("true"))
    );
    let page = html_unescape(&c.get("/admin/settings/gitlab/edit").expect_html(200));
    assert!(
        page.contains("name=\"groupsSync\" value=\"true\" checked"),
        "{page}"
    );
}

#[test]
fn delete_after_confirmation_returns_to_not_configured() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let confirm = html_unescape(&c.get("/admin/settings/gitlab/delete").expect_html(200));
    assert!(
        confirm.contains("Delete the GitLab configuration?"),
        "{confirm}"
    );
    assert!(
        confirm.contains("action=\"/admin/settings/gitlab/delete\""),
        "{confirm}"
    );
    let r = submit(&mut c, "/admin/settings/gitlab/delete", &[]);
    let page = follow(&mut c, &r);
    assert!(
        page.contains("The GitLab configuration was deleted."),
        "{page}"
    );
    assert!(page.contains("Configure GitLab"), "{page}");
    assert!(!page.contains("id=\"gitlab-configuration\""), "{page}");
    assert_eq!(setting(&lg, "sonar.auth.gitlab.url"), None);
    assert!(secured_set(&lg).is_empty());
    let again = html_unescape(&c.get("/admin/settings/gitlab/delete").expect_html(200));
    assert!(
        again.contains("There is no GitLab configuration to delete."),
        "{again}"
    );
}

#[test]
fn redirect_uri_and_scope_to_register_follow_the_base_url() {
    let lg = Labgate::start_with(&["--base-url", "https://lg.example.org"], &[]);
    let mut c = browser(&lg);
    let page = settings_page(&mut c);
    assert!(
        page.contains("<code class=\"copy\" id=\"gitlab-redirect-uri\">https://lg.example.org/oauth2/callback/gitlab</code>"),
        "{page}"
    );
    assert!(page.contains("From --base-url"), "{page}");
    assert!(
        page.contains("id=\"gitlab-scopes\">openid email<"),
        "{page}"
    );
    for scope in ["read_user", "read_api", "\"api\""] {
        assert!(!page.contains(scope), "{scope} is not asked for:\n{page}");
    }
}

#[test]
fn all_interfaces_without_a_base_url_warn_instead_of_a_wrong_redirect_uri() {
    let lg = Labgate::start_with(&["--listen", "0.0.0.0:0"], &[]);
    let mut c = browser(&lg);
    let page = settings_page(&mut c);
    assert!(
        page.contains("The redirect URI cannot be derived"),
        "{page}"
    );
    assert!(
        page.contains("--base-url") && page.contains("Server base URL"),
        "{page}"
    );
    assert!(!page.contains("id=\"gitlab-redirect-uri\""), "{page}");

    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.core.serverBaseURL"),
                ("value", "https://lab.example.net"),
            ],
        )
        .expect(204);
    let page = settings_page(&mut c);
    assert!(!page.contains("cannot be derived"), "{page}");
    assert!(
        page.contains("https://lab.example.net/oauth2/callback/gitlab"),
        "{page}"
    );
}

#[test]
fn hostile_application_id_is_escaped() {
    let lg = Labgate::start();
    let script = "<script>alert(1)</script>";
    let mut c = browser(&lg);
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/create",
        &[
            ("applicationId", script),
            ("secret", SECRET),
            ("url", "https://gitlab.example.org"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.describe());
    for path in [PAGE, "/admin/settings/gitlab/edit"] {
        let page = c.get(path).expect_html(200);
        assert!(!page.contains(script), "{path}:\n{page}");
        assert!(html_unescape(&page).contains(script), "{path}:\n{page}");
    }
}

/// A form's fields.
type Fields = &'static [(&'static str, &'static str)];

/// Every new route, with a harmless form.
const ROUTES: &[(&str, &str, Fields)] = &[
    (
        "POST",
        "/admin/settings/gitlab/create",
        &[
            ("applicationId", "x"),
            ("secret", "y"),
            ("url", "https://gitlab.com"),
        ],
    ),
    ("GET", "/admin/settings/gitlab/edit", &[]),
    (
        "POST",
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "x"),
            ("url", "https://gitlab.com"),
            ("secret", "y"),
        ],
    ),
    (
        "POST",
        "/admin/settings/gitlab/enabled",
        &[("enabled", "false")],
    ),
    ("GET", "/admin/settings/gitlab/delete", &[]),
    ("POST", "/admin/settings/gitlab/delete", &[]),
    (
        "POST",
        "/admin/settings/gitlab/provisioning",
        &[("allowedGroups", "x"), ("action", "save")],
    ),
];

#[test]
fn non_admins_are_refused_on_every_gitlab_route() {
    let lg = Labgate::start();
    let mut admin = browser(&lg);
    configure(&mut admin, "https://gitlab.example.org");
    lg.create_user("pat", USER_PASSWORD);
    let mut user = lg.login("pat", USER_PASSWORD);
    for (method, path, params) in ROUTES {
        let r = match *method {
            "GET" => user.get(path),
            _ => user.post_form(path, params),
        };
        assert_eq!(r.status, 403, "{method} {path}: {}", r.describe());
    }
    assert_eq!(setting(&lg, "sonar.auth.gitlab.enabled"), None);
    assert_eq!(setting(&lg, "sonar.auth.gitlab.allowedGroups"), None);
    let page = settings_page(&mut admin);
    assert!(page.contains("<code>app-123</code>"), "unchanged:\n{page}");
}

#[test]
fn gitlab_forms_without_the_csrf_token_are_refused() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    for (method, path, params) in ROUTES.iter().filter(|(m, _, _)| *m == "POST") {
        let r = c.post_form(path, params);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.describe());
    }
    assert_eq!(setting(&lg, "sonar.auth.gitlab.enabled"), None);
    assert_eq!(setting(&lg, "sonar.auth.gitlab.allowedGroups"), None);
    let page = settings_page(&mut c);
    assert!(page.contains("<code>app-123</code>"), "unchanged:\n{page}");
}

#[test]
fn group_sync_needs_an_allowed_group_on_the_provisioning_form() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let lone = [
        ("allowUsersToSignUp", "true"),
        ("groupsSync", "true"),
        ("allowedGroups", ""),
        ("action", "save"),
    ];
    let page = refused(&submit(
        &mut c,
        "/admin/settings/gitlab/provisioning",
        &lone,
    ));
    assert!(page.contains(SYNC_NEEDS_ALLOWED_GROUP), "{page}");
    assert!(
        !page.contains("Save anyway"),
        "no confirmation asked for a change that is refused:\n{page}"
    );
    let mut anyway = lone.to_vec();
    anyway.push(("confirm_open", "1"));
    let page = refused(&submit(
        &mut c,
        "/admin/settings/gitlab/provisioning",
        &anyway,
    ));
    assert!(page.contains(SYNC_NEEDS_ALLOWED_GROUP), "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.groupsSync"),
        None,
        "nothing saved"
    );
    assert_eq!(setting(&lg, "sonar.auth.gitlab.allowUsersToSignUp"), None);

    let with_group = [
        ("allowUsersToSignUp", "true"),
        ("groupsSync", "true"),
        ("allowedGroups", "acme"),
        ("allowedGroups", ""),
        ("action", "save"),
    ];
    let r = submit(&mut c, "/admin/settings/gitlab/provisioning", &with_group);
    follow(&mut c, &r);
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.groupsSync"),
        Some(Value::from("true"))
    );
    // Removing the last allowed group while synchronization stays on.
    let remove_last = [
        ("allowUsersToSignUp", "false"),
        ("groupsSync", "true"),
        ("allowedGroups", ""),
        ("action", "save"),
    ];
    let page = refused(&submit(
        &mut c,
        "/admin/settings/gitlab/provisioning",
        &remove_last,
    ));
    assert!(page.contains(SYNC_NEEDS_ALLOWED_GROUP), "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.allowedGroups"),
        Some(serde_json::json!(["acme"])),
        "nothing saved"
    );
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.allowUsersToSignUp"),
        Some(Value::from("true"))
    );
}

#[test]
fn group_sync_needs_an_allowed_group_on_the_edit_form() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    configure(&mut c, "https://gitlab.example.org");
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "app-456"),
            ("url", "https://gitlab.example.org"),
            ("secret", ""),
            ("groupsSync", "true"),
        ],
    );
    let page = refused(&r);
    assert!(page.contains(SYNC_NEEDS_ALLOWED_GROUP), "{page}");
    assert!(page.contains("class=\"field-error\""), "{page}");
    assert_eq!(
        setting(&lg, "sonar.auth.gitlab.groupsSync"),
        None,
        "nothing saved"
    );
    let page = settings_page(&mut c);
    assert!(
        page.contains("app-123") && !page.contains("app-456"),
        "nothing saved:\n{page}"
    );
}

#[test]
fn a_stored_group_sync_without_allowed_group_is_explained_on_the_gitlab_tab() {
    let lg = Labgate::start();
    let mut c = browser(&lg);
    let page = configure(&mut c, "https://gitlab.example.org");
    let warning =
        "Synchronize user groups is on but no allowed group is set: nothing is synchronized.";
    assert!(!page.contains(warning), "{page}");
    // Stored before synchronization needed an allowed group.
    lg.store_settings(&[("sonar.auth.gitlab.groupsSync", "true")]);
    let page = settings_page(&mut c);
    assert!(page.contains(warning), "{page}");
    assert!(page.contains("Add an allowed group"), "{page}");
    // An unrelated edit still works, and the warning stays until the state is fixed.
    let r = submit(
        &mut c,
        "/admin/settings/gitlab/edit",
        &[
            ("applicationId", "app-456"),
            ("url", "https://gitlab.example.org"),
            ("secret", ""),
            ("groupsSync", "true"),
        ],
    );
    let page = follow(&mut c, &r);
    assert!(page.contains("app-456") && page.contains(warning), "{page}");
    set_allowed_groups(&lg, &["acme"]);
    assert!(!settings_page(&mut c).contains(warning));
}
