//! Sign-in with GitLab in Just-in-Time mode (SPEC §5) against a fake GitLab on port 0:
//! provisioning, allowed groups, sign-up, linking, refusals, group synchronization.

use crate::fake_gitlab::*;
use crate::harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const APP_ID: &str = "labgate-app-id";
const APP_SECRET: &str = "labgate-app-secret-value";
const CODE: &str = "the-auth-code-123";

/// labgate configured for the fake GitLab, plus extra settings (`values` for multi-valued).
fn setup_with(launch: Launch, settings: &[(&str, &[&str])]) -> (Labgate, FakeGitlab) {
    let gl = FakeGitlab::start();
    let lg = launch.start();
    let mut admin = lg.admin();
    let url = gl.url();
    let mut all: Vec<(&str, Vec<&str>)> = vec![
        ("sonar.auth.gitlab.url", vec![url.as_str()]),
        ("sonar.auth.gitlab.applicationId.secured", vec![APP_ID]),
        ("sonar.auth.gitlab.secret.secured", vec![APP_SECRET]),
        ("sonar.auth.gitlab.enabled", vec!["true"]),
    ];
    all.extend(settings.iter().map(|(k, v)| (*k, v.to_vec())));
    for (key, values) in all {
        let mut params = vec![("key", key)];
        if key == "sonar.auth.gitlab.allowedGroups" {
            params.extend(values.iter().map(|v| ("values", *v)));
        } else {
            params.push(("value", values[0]));
        }
        admin.post_form("/api/settings/set", &params).expect(204);
    }
    (lg, gl)
}

fn setup(settings: &[(&str, &[&str])]) -> (Labgate, FakeGitlab) {
    setup_with(Launch::new(), settings)
}

/// One browser's trip: start, (GitLab says yes), callback.
struct Trip {
    browser: Client,
    authorize: String,
    state: String,
    callback: Resp,
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| urldecode(v))
}

fn sign_in(lg: &Labgate, return_to: &str) -> Trip {
    let mut browser = lg.client();
    let r = browser.get(&format!(
        "/sessions/init/gitlab?return_to={}",
        urlencode(return_to)
    ));
    assert_eq!(r.status, 302, "start: {}", r.describe());
    let authorize = r.header("location").unwrap_or_default().to_string();
    let state =
        query_param(&authorize, "state").unwrap_or_else(|| panic!("no state in {authorize}"));
    let callback = browser.get(&format!(
        "/oauth2/callback/gitlab?code={CODE}&state={}",
        urlencode(&state)
    ));
    Trip {
        browser,
        authorize,
        state,
        callback,
    }
}

impl Trip {
    /// Asserts a successful sign-in landing on `to`; returns the signed-in browser.
    #[track_caller]
    fn accepted(mut self, to: &str) -> Client {
        let loc = self.callback.expect_redirect();
        assert_eq!(loc, to, "callback: {}", self.callback.describe());
        let me = self.browser.get("/api/users/current").expect_json(200);
        assert_eq!(me["isLoggedIn"], true, "{me}");
        self.browser.with_xsrf(true)
    }

    /// Asserts a refusal; returns the text of the refusal page.
    #[track_caller]
    fn refused(mut self) -> String {
        assert_eq!(
            self.callback.expect_redirect(),
            "/sessions/unauthorized",
            "callback: {}",
            self.callback.describe()
        );
        let me = self.browser.get("/api/users/current").expect_json(200);
        assert_eq!(me["isLoggedIn"], false, "{me}");
        let page = self.browser.get("/sessions/unauthorized").expect_html(200);
        let text = html_unescape(&page);
        assert!(
            text.contains(
                "You're not authorized to access this page. Please contact the administrator."
            ),
            "{text}"
        );
        text
    }
}

fn user_logins(lg: &Labgate) -> Vec<String> {
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("ps", "500")])
        .expect_json(200);
    let mut l = logins(&v["users"]);
    l.sort();
    l
}

fn find_user(lg: &Labgate, login: &str) -> Value {
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("q", login)])
        .expect_json(200);
    v["users"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["login"] == login))
        .cloned()
        .unwrap_or_else(|| panic!("{login} not found: {v}"))
}

fn groups_of(c: &mut Client) -> Vec<String> {
    let me = c.get("/api/users/current").expect_json(200);
    let mut g = names(&me["groups"]);
    g.sort();
    g
}

#[test]
fn first_sign_in_creates_the_user_in_the_default_group() {
    let (lg, _gl) = setup(&[]);
    let mut c = sign_in(&lg, "/account").accepted("/account");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "jdoe", "{me}");
    assert_eq!(me["name"], "Jane Doe", "{me}");
    assert_eq!(me["email"], "jane@example.com", "{me}");
    assert_eq!(me["local"], false, "{me}");
    assert_eq!(me["externalProvider"], "gitlab", "{me}");
    assert_eq!(me["externalIdentity"], "jdoe", "{me}");
    assert_eq!(groups_of(&mut c), vec!["users"]);
    let u = find_user(&lg, "jdoe");
    assert!(u["lastConnectionDate"].is_string(), "{u}");
}

#[test]
fn authorize_redirect_and_token_exchange_follow_oauth_with_pkce() {
    let (lg, gl) = setup(&[]);
    let trip = sign_in(&lg, "/");
    let authorize = trip.authorize.clone();
    assert!(
        authorize.starts_with(&format!("{}/oauth/authorize?", gl.url())),
        "{authorize}"
    );
    trip.accepted("/");
    let challenge = query_param(&authorize, "code_challenge").expect("code_challenge");
    let redirect_uri = format!("http://{}/oauth2/callback/gitlab", lg.addr);
    assert_eq!(
        query_param(&authorize, "redirect_uri").as_deref(),
        Some(redirect_uri.as_str())
    );
    let token_calls = gl.seen_at("/oauth/token");
    assert_eq!(token_calls.len(), 1, "{token_calls:?}");
    let t = &token_calls[0];
    assert_eq!(t.method, "POST");
    assert_eq!(t.form_value("code").as_deref(), Some(CODE), "{t:?}");
    assert_eq!(
        t.form_value("grant_type").as_deref(),
        Some("authorization_code"),
        "{t:?}"
    );
    assert_eq!(
        t.form_value("redirect_uri").as_deref(),
        Some(redirect_uri.as_str()),
        "{t:?}"
    );
    let verifier = t.form_value("code_verifier").expect("code_verifier sent");
    assert_eq!(
        s256_challenge(&verifier),
        challenge,
        "PKCE verifier/challenge"
    );
    // Client authentication: HTTP Basic or form fields.
    let basic = format!(
        "Basic {}",
        base64(format!("{APP_ID}:{APP_SECRET}").as_bytes())
    );
    let by_form = t.form_value("client_id").as_deref() == Some(APP_ID)
        && t.form_value("client_secret").as_deref() == Some(APP_SECRET);
    assert!(
        t.header("authorization") == Some(basic.as_str()) || by_form,
        "client credentials: {t:?}"
    );
    // The user was read with the access token; groups were not needed.
    let user_calls = gl.seen_at("/api/v4/user");
    assert_eq!(user_calls.len(), 1, "{user_calls:?}");
    assert!(gl.seen_at("/api/v4/groups").is_empty());
}

#[test]
fn session_id_is_new_after_the_callback() {
    let (lg, _gl) = setup(&[]);
    let mut browser = lg.client();
    let r = browser.get("/sessions/init/gitlab");
    let state = query_param(r.header("location").unwrap_or_default(), "state").expect("state");
    let pre_login = browser.cookies.clone();
    let r = browser.get(&format!(
        "/oauth2/callback/gitlab?code={CODE}&state={}",
        urlencode(&state)
    ));
    r.expect_redirect();
    let session = browser
        .cookie("labgate_session")
        .unwrap_or_else(|| panic!("no session after callback: {}", r.describe()))
        .to_string();
    assert!(
        !pre_login.values().any(|v| v == &session),
        "session id reused from before the sign-in"
    );
}

#[test]
fn replayed_callback_is_refused() {
    let (lg, _gl) = setup(&[]);
    let trip = sign_in(&lg, "/");
    let state = trip.state.clone();
    let mut browser = trip.browser.clone();
    trip.accepted("/");
    let r = browser.get(&format!(
        "/oauth2/callback/gitlab?code={CODE}&state={}",
        urlencode(&state)
    ));
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
}

#[test]
fn callback_from_another_browser_is_refused() {
    let (lg, gl) = setup(&[]);
    let mut victim = lg.client();
    let r = victim.get("/sessions/init/gitlab");
    let state = query_param(r.header("location").unwrap_or_default(), "state").expect("state");
    // The state is bound to the browser that started: a fresh browser cannot use it.
    let mut other = lg.client();
    let r = other.get(&format!(
        "/oauth2/callback/gitlab?code={CODE}&state={}",
        urlencode(&state)
    ));
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
    assert!(
        gl.seen_at("/oauth/token").is_empty(),
        "code exchanged anyway"
    );
}

#[test]
fn offsite_return_to_falls_back_to_root() {
    let (lg, _gl) = setup(&[]);
    sign_in(&lg, "//evil.example.com/x").accepted("/");
    sign_in(&lg, "https://evil.example.com/").accepted("/");
    sign_in(&lg, "/admin/users?p=2").accepted("/admin/users?p=2");
}

#[test]
fn allowed_group_admits_members_of_its_subgroups() {
    let (lg, gl) = setup(&[("sonar.auth.gitlab.allowedGroups", &["acme"])]);
    gl.set(|b| b.groups = vec!["acme/platform/sre".into()]);
    sign_in(&lg, "/").accepted("/");
    let groups = gl.seen_at("/api/v4/groups");
    assert!(!groups.is_empty());
    assert!(
        groups[0].target.contains("min_access_level=10"),
        "{:?}",
        groups[0].target
    );
}

#[test]
fn allowed_groups_ignore_case() {
    let (lg, gl) = setup(&[("sonar.auth.gitlab.allowedGroups", &["ACME"])]);
    gl.set(|b| b.groups = vec!["acme/platform".into()]);
    sign_in(&lg, "/").accepted("/");
}

#[test]
fn sign_in_outside_allowed_groups_is_refused_and_writes_nothing() {
    let (lg, gl) = setup(&[("sonar.auth.gitlab.allowedGroups", &["acme"])]);
    gl.set(|b| b.groups = vec!["acme-other".into(), "beta/acme".into()]);
    let page = sign_in(&lg, "/").refused();
    assert!(
        page.contains("You are not allowed to authenticate"),
        "{page}"
    );
    assert_eq!(user_logins(&lg), vec!["admin"]);
}

#[test]
fn allowed_groups_are_checked_even_without_synchronization() {
    let (lg, gl) = setup(&[
        ("sonar.auth.gitlab.allowedGroups", &["acme"]),
        ("sonar.auth.gitlab.groupsSync", &["false"]),
    ]);
    gl.set(|b| b.groups = vec![]);
    sign_in(&lg, "/").refused();
}

#[test]
fn groups_are_read_across_all_pages() {
    let (lg, gl) = setup(&[("sonar.auth.gitlab.allowedGroups", &["acme"])]);
    gl.set(|b| {
        b.groups = vec!["zeta".into(), "yank".into(), "acme/deep".into()];
        b.page_size = 1;
    });
    sign_in(&lg, "/").accepted("/");
    assert!(gl.seen_at("/api/v4/groups").len() >= 3);
}

#[test]
fn sign_up_off_refuses_new_users() {
    let (lg, _gl) = setup(&[("sonar.auth.gitlab.allowUsersToSignUp", &["false"])]);
    let page = sign_in(&lg, "/").refused();
    assert!(
        page.contains("'gitlab' users are not allowed to sign up"),
        "{page}"
    );
    assert_eq!(user_logins(&lg), vec!["admin"]);
}

#[test]
fn pre_provisioned_user_is_linked_at_first_sign_in() {
    let (lg, _gl) = setup(&[("sonar.auth.gitlab.allowUsersToSignUp", &["false"])]);
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/users/create",
            &[
                ("login", "jane"),
                ("name", "Jane (pre)"),
                ("local", "false"),
            ],
        )
        .expect_json(200);
    admin
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "jane"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "JDoe"),
            ],
        )
        .expect(204);
    let mut c = sign_in(&lg, "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "jane", "{me}");
    assert_eq!(me["name"], "Jane Doe", "refreshed from GitLab: {me}");
    assert_eq!(user_logins(&lg), vec!["admin", "jane"]);
    // Signing in again finds the same account by its GitLab id.
    sign_in(&lg, "/").accepted("/");
    assert_eq!(user_logins(&lg), vec!["admin", "jane"]);
}

#[test]
fn same_username_with_another_gitlab_id_is_refused() {
    let (lg, gl) = setup(&[]);
    sign_in(&lg, "/").accepted("/");
    gl.set(|b| b.user = gitlab_user(2002, "jdoe", "Impostor", "imp@example.com"));
    let page = sign_in(&lg, "/").refused();
    assert!(
        page.contains("Failed to authenticate with login 'jdoe'"),
        "{page}"
    );
    assert_eq!(find_user(&lg, "jdoe")["name"], "Jane Doe");
}

#[test]
fn deactivated_user_is_refused_and_stays_deactivated() {
    let (lg, _gl) = setup(&[]);
    sign_in(&lg, "/").accepted("/");
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "jdoe")])
        .expect_json(200);
    let page = sign_in(&lg, "/").refused();
    assert!(
        page.contains("Your account is deactivated. Please contact your administrator."),
        "{page}"
    );
    let v = lg
        .admin()
        .get_query("/api/users/search", &[("deactivated", "true")])
        .expect_json(200);
    assert_eq!(logins(&v["users"]), vec!["jdoe".to_string()], "{v}");
}

#[test]
fn inactive_gitlab_account_is_refused() {
    let (lg, gl) = setup(&[]);
    gl.set(|b| b.user["state"] = "blocked".into());
    let page = sign_in(&lg, "/").refused();
    assert!(page.contains("Your GitLab account is not active"), "{page}");
    assert_eq!(user_logins(&lg), vec!["admin"]);
}

#[test]
fn email_of_another_account_is_refused() {
    let (lg, _gl) = setup(&[]);
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "jane-local"),
                ("name", "Jane Local"),
                ("email", "jane@example.com"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    let page = sign_in(&lg, "/").refused();
    assert!(
        page.contains(
            "This account is already associated with another authentication method. Sign in \
             using the current authentication method, or contact your administrator to \
             transfer your account to a different authentication method."
        ),
        "{page}"
    );
    assert_eq!(user_logins(&lg), vec!["admin", "jane-local"]);
}

#[test]
fn taken_login_gets_a_gitlab_suffix() {
    let (lg, gl) = setup(&[]);
    lg.create_user("jdoe", USER_PASSWORD);
    let mut c = sign_in(&lg, "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "jdoe-gitlab", "{me}");
    // And the next one with a numeric suffix.
    lg.create_user("kim", USER_PASSWORD);
    lg.create_user("kim-gitlab", USER_PASSWORD);
    gl.set(|b| b.user = gitlab_user(3003, "kim", "Kim", "kim@example.com"));
    let mut c = sign_in(&lg, "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    let login = me["login"].as_str().unwrap_or_default();
    assert!(
        login.starts_with("kim-gitlab") && login != "kim-gitlab",
        "{me}"
    );
}

#[test]
fn name_email_and_username_are_refreshed_at_each_sign_in() {
    let (lg, gl) = setup(&[]);
    sign_in(&lg, "/").accepted("/");
    gl.set(|b| b.user = gitlab_user(1001, "jdoe2", "Jane Renamed", "jane2@example.com"));
    let mut c = sign_in(&lg, "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "jdoe", "login stays: {me}");
    assert_eq!(me["name"], "Jane Renamed", "{me}");
    assert_eq!(me["email"], "jane2@example.com", "{me}");
    assert_eq!(me["externalIdentity"], "jdoe2", "{me}");
}

#[test]
fn group_sync_mirrors_existing_local_groups_exactly() {
    let (lg, gl) = setup(&[("sonar.auth.gitlab.groupsSync", &["true"])]);
    for g in ["acme", "acme/platform", "Acme/Tools", "unrelated"] {
        lg.create_group(g);
    }
    gl.set(|b| {
        b.groups = vec![
            "acme/platform".into(),
            "acme/tools".into(),
            "not-here".into(),
        ]
    });
    let mut c = sign_in(&lg, "/").accepted("/");
    assert_eq!(groups_of(&mut c), vec!["acme/platform", "users"]);
    // Local groups are never created by the sign-in.
    let v = lg
        .admin()
        .get_query("/api/user_groups/search", &[("q", "not-here")])
        .expect_json(200);
    assert!(names(&v["groups"]).is_empty(), "{v}");
}

#[test]
fn group_sync_removes_memberships_gitlab_no_longer_has() {
    let (lg, gl) = setup(&[("sonar.auth.gitlab.groupsSync", &["true"])]);
    lg.create_group("acme/platform");
    gl.set(|b| b.groups = vec!["acme/platform".into()]);
    sign_in(&lg, "/").accepted("/");
    gl.set(|b| b.groups = vec![]);
    let mut c = sign_in(&lg, "/").accepted("/");
    assert_eq!(groups_of(&mut c), vec!["users"]);
}

#[test]
fn memberships_of_gitlab_users_cannot_be_edited_while_sync_is_on() {
    let (lg, _gl) = setup(&[("sonar.auth.gitlab.groupsSync", &["true"])]);
    lg.create_group("manual");
    sign_in(&lg, "/").accepted("/");
    let msg = lg
        .admin()
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "manual"), ("login", "jdoe")],
        )
        .expect_error(400);
    assert!(!msg.is_empty());
    // Local users are not managed by synchronization.
    lg.create_user("local-one", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "manual"), ("login", "local-one")],
        )
        .expect(204);
}

#[test]
fn memberships_of_gitlab_users_are_editable_while_sync_is_off() {
    let (lg, _gl) = setup(&[]);
    lg.create_group("manual");
    sign_in(&lg, "/").accepted("/");
    lg.admin()
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "manual"), ("login", "jdoe")],
        )
        .expect(204);
    // Without synchronization, signing in again keeps hand-made memberships.
    let mut c = sign_in(&lg, "/").accepted("/");
    assert_eq!(groups_of(&mut c), vec!["manual", "users"]);
}

#[test]
fn scope_follows_the_need_for_groups() {
    let (lg, _gl) = setup(&[]);
    let trip = sign_in(&lg, "/");
    assert_eq!(
        query_param(&trip.authorize, "scope").as_deref(),
        Some("read_user")
    );
    let (lg, _gl) = setup(&[("sonar.auth.gitlab.groupsSync", &["true"])]);
    let trip = sign_in(&lg, "/");
    assert_eq!(
        query_param(&trip.authorize, "scope").as_deref(),
        Some("read_api")
    );
}

/// A change to the fake's behaviour.
type Knob = fn(&mut Behaviour);

#[test]
fn gitlab_errors_refuse_and_write_nothing() {
    let cases: [(&str, Knob); 4] = [
        ("token endpoint 500", |b| b.token_status = 500),
        ("token endpoint 400", |b| b.token_status = 400),
        ("user endpoint 502", |b| b.user_status = 502),
        ("malformed user JSON", |b| {
            b.user_body = Some("{not json".into())
        }),
    ];
    for (what, knob) in cases {
        let (lg, gl) = setup(&[]);
        gl.set(knob);
        let trip = sign_in(&lg, "/");
        assert_eq!(
            trip.callback.expect_redirect(),
            "/sessions/unauthorized",
            "{what}"
        );
        assert_eq!(user_logins(&lg), vec!["admin"], "{what}");
    }
}

#[test]
fn gitlab_error_parameter_at_callback_is_refused_without_calling_gitlab() {
    let (lg, gl) = setup(&[]);
    let mut browser = lg.client();
    let r = browser.get("/sessions/init/gitlab");
    let state = query_param(r.header("location").unwrap_or_default(), "state").expect("state");
    let r = browser.get(&format!(
        "/oauth2/callback/gitlab?error=access_denied&error_description=nope&state={}",
        urlencode(&state)
    ));
    assert_eq!(r.expect_redirect(), "/sessions/unauthorized");
    assert!(gl.seen().is_empty(), "{:?}", gl.seen());
}

#[test]
fn hanging_gitlab_is_cut_off_within_15_seconds() {
    let (lg, gl) = setup(&[]);
    gl.set(|b| b.hang_token = true);
    let start = Instant::now();
    let trip = sign_in(&lg, "/");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(16), "callback took {took:?}");
    assert_eq!(trip.callback.expect_redirect(), "/sessions/unauthorized");
}

#[test]
fn disabled_gitlab_cannot_be_used() {
    let (lg, _gl) = setup(&[("sonar.auth.gitlab.enabled", &["false"])]);
    let r = lg.client().get("/sessions/init/gitlab");
    let loc = r.header("location").unwrap_or_default().to_string();
    assert!(
        !loc.contains("/oauth/authorize"),
        "sign-in started while disabled: {}",
        r.describe()
    );
}

#[test]
fn sign_in_decisions_are_logged_without_secrets() {
    let (lg, gl) = setup_with(Launch::new().env("LABGATE_LOG", "info"), &[]);
    let trip = sign_in(&lg, "/");
    let state = trip.state.clone();
    trip.accepted("/");
    gl.set(|b| b.user["state"] = "blocked".into());
    sign_in(&lg, "/").refused();
    let accepted = lg
        .stderr()
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("gitlab") && l.contains("jdoe") && !l.contains("/oauth2/")
        })
        .unwrap_or_else(|| panic!("no sign-in decision line:\n{}", lg.stderr().joined()));
    assert!(!accepted.is_empty());
    let log = lg.stderr().joined();
    for secret in [ACCESS_TOKEN, CODE, APP_SECRET, state.as_str(), "gl-refresh"] {
        assert!(!log.contains(secret), "log contains {secret:?}:\n{log}");
    }
}
