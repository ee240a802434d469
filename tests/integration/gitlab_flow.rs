//! Sign-in with GitLab driven over HTTP without a browser, against the faithful
//! fake GitLab (`tests/support/fake_gitlab.rs`): labgate's start redirects to the fake's
//! `/oauth/authorize`, the fake (with someone signed in) redirects back at once with a code and
//! the state, and the test calls labgate's callback with the same cookie jar.
//!
//! Every test checks the database afterwards through the admin API (users, deactivated users,
//! groups and memberships), so "nothing written" is verified, not assumed.

use crate::harness::*;
use crate::support_gitlab::{access, pkce_s256, Endpoint, FakeGitlab, FakeUser, Fault};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) const APP_ID: &str = "flow-app-id";
pub(crate) const APP_SECRET: &str = "flow-app-secret-4f9c2e7d1a";
/// The generic text of the refusal page.
const NOT_AUTHORIZED: &str =
    "You're not authorized to access this page. Please contact the administrator.";
pub(crate) const NOT_ALLOWED: &str = "You are not allowed to authenticate";
const NO_SIGN_UP: &str = "'gitlab' users are not allowed to sign up";
const EMAIL_TAKEN: &str = "This account is already associated with another authentication method. \
    Sign in using the current authentication method, or contact your administrator to transfer your \
    account to a different authentication method.";
const DEACTIVATED: &str = "Your account is deactivated. Please contact your administrator.";
/// Every refusal reason shown to people (the id-mismatch one by its fixed start).
const REASONS: &[&str] = &[
    NOT_ALLOWED,
    NO_SIGN_UP,
    "This account is already associated with another authentication method",
    "Failed to authenticate with login",
    "Your account is deactivated",
];

pub(crate) const SYNC_ON: (&str, &[&str]) = ("sonar.auth.gitlab.groupsSync", &["true"]);
const SYNC_OFF: (&str, &[&str]) = ("sonar.auth.gitlab.groupsSync", &["false"]);
const SIGN_UP_OFF: (&str, &[&str]) = ("sonar.auth.gitlab.allowUsersToSignUp", &["false"]);
pub(crate) const ALLOW_ACME: (&str, &[&str]) = ("sonar.auth.gitlab.allowedGroups", &["acme"]);

// ---------------------------------------------------------------------------------------------
// Set-up

/// Sets one labgate setting through `api/settings/set` (`values` for the multi-valued key).
pub(crate) fn set_setting(lg: &Labgate, key: &str, values: &[&str]) {
    let mut params = vec![("key", key)];
    if key == "sonar.auth.gitlab.allowedGroups" {
        params.extend(values.iter().map(|v| ("values", *v)));
    } else {
        params.push(("value", values[0]));
    }
    lg.admin()
        .post_form("/api/settings/set", &params)
        .expect(204);
}

/// A fake GitLab with labgate's application registered.
pub(crate) fn fake_with_app() -> FakeGitlab {
    let gl = FakeGitlab::start();
    // Loopback redirect URIs match whatever the port (RFC 8252), as on GitLab.
    gl.register_app(
        APP_ID,
        APP_SECRET,
        &["http://127.0.0.1/oauth2/callback/gitlab"],
        true,
    );
    gl
}

/// A fake GitLab with labgate's application registered, and labgate (started with `launch`)
/// configured for it and enabled, plus `settings`.
pub(crate) fn lab_with(launch: Launch, settings: &[(&str, &[&str])]) -> (Labgate, FakeGitlab) {
    let gl = fake_with_app();
    let lg = launch.start();
    let url = gl.url();
    let base: [(&str, &[&str]); 4] = [
        ("sonar.auth.gitlab.url", &[url.as_str()]),
        ("sonar.auth.gitlab.applicationId.secured", &[APP_ID]),
        ("sonar.auth.gitlab.secret.secured", &[APP_SECRET]),
        ("sonar.auth.gitlab.enabled", &["true"]),
    ];
    for (key, values) in base.iter().chain(settings.iter()) {
        set_setting(&lg, key, values);
    }
    (lg, gl)
}

pub(crate) fn lab(settings: &[(&str, &[&str])]) -> (Labgate, FakeGitlab) {
    lab_with(Launch::new(), settings)
}

/// Adds a GitLab user named "<Username> Lovelace" with `<username>@example.com`.
pub(crate) fn gitlab_user(gl: &FakeGitlab, id: u64, username: &str) {
    let mut u = FakeUser::new(id, username);
    u.name = format!("{username} Lovelace");
    gl.add_user(u);
}

// ---------------------------------------------------------------------------------------------
// The trip: start → GitLab → callback

/// A sign-in started at labgate and answered by GitLab, whose callback is not called yet.
struct Started {
    browser: Client,
    init: Resp,
    /// The full `Location` of labgate's start answer.
    authorize_url: String,
    /// Path and query of the callback GitLab sent the browser to.
    callback_url: String,
}

/// One browser's sign-in, callback answered.
pub(crate) struct Trip {
    /// The browser after the callback.
    pub(crate) browser: Client,
    /// The browser's cookie jar as it was when it called the callback.
    before_callback: Client,
    init: Resp,
    authorize_url: String,
    callback_url: String,
    pub(crate) callback: Resp,
    /// How long the callback took to answer.
    took: Duration,
}

/// `path?query` of an absolute URL (the URL itself when it has no scheme).
fn strip_origin(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None => url.to_string(),
    }
}

/// A decoded query parameter of a URL.
fn url_param(url: &str, name: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| urldecode(v))
}

/// The URL with parameter `name` replaced by `value` (removed with `None`).
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(name))
        .map(str::to_string)
        .collect();
    if let Some(v) = value {
        pairs.push(format!("{name}={}", urlencode(v)));
    }
    format!("{path}?{}", pairs.join("&"))
}

/// Starts a sign-in as `username` (signed in to the fake, which answers at once) in a new
/// browser, up to the redirect back to labgate.
fn start(lg: &Labgate, gl: &FakeGitlab, username: &str, return_to: &str) -> Started {
    gl.sign_in_as(username);
    let mut browser = lg.client();
    let init = browser.get(&format!(
        "/sessions/init/gitlab?return_to={}",
        urlencode(return_to)
    ));
    assert_eq!(init.status, 302, "start: {}", init.describe());
    let authorize_url = init.header("location").unwrap_or_default().to_string();
    assert!(
        authorize_url.starts_with(&format!("{}/oauth/authorize?", gl.url())),
        "start did not redirect to the fake's /oauth/authorize: {}",
        init.describe()
    );
    let mut fake = Client::new(SocketAddr::from(([127, 0, 0, 1], gl.port())));
    let answer = fake.get(&strip_origin(&authorize_url));
    assert_eq!(
        answer.status,
        302,
        "GitLab did not redirect back: {}",
        answer.describe()
    );
    let back = answer.header("location").unwrap_or_default().to_string();
    let expected = format!("http://{}/oauth2/callback/gitlab?", lg.addr);
    assert!(
        back.starts_with(&expected),
        "GitLab redirected to {back:?}, expected {expected}..."
    );
    Started {
        browser,
        init,
        authorize_url,
        callback_url: strip_origin(&back),
    }
}

impl Started {
    /// Calls labgate's callback at `url` with this browser.
    fn call(self, url: &str) -> Trip {
        let mut browser = self.browser;
        let before_callback = browser.clone();
        let t0 = Instant::now();
        let callback = browser.get(url);
        let took = t0.elapsed();
        Trip {
            browser,
            before_callback,
            init: self.init,
            authorize_url: self.authorize_url,
            callback_url: url.to_string(),
            callback,
            took,
        }
    }

    /// Calls labgate's callback where GitLab sent the browser.
    fn finish(self) -> Trip {
        let url = self.callback_url.clone();
        self.call(&url)
    }
}

/// The whole sign-in of `username`, asking to come back to `return_to`.
pub(crate) fn sign_in(lg: &Labgate, gl: &FakeGitlab, username: &str, return_to: &str) -> Trip {
    start(lg, gl, username, return_to).finish()
}

/// Asserts that `resp` (from `client`) refused the sign-in: 302 to `/sessions/unauthorized`,
/// nobody signed in; follows it and returns the page's text.
#[track_caller]
fn expect_refused(client: &mut Client, resp: &Resp) -> String {
    assert_eq!(
        resp.status,
        302,
        "callback: expected a refusal: {}",
        resp.describe()
    );
    assert_eq!(
        resp.header("location"),
        Some("/sessions/unauthorized"),
        "callback: {}",
        resp.describe()
    );
    assert!(
        client.cookie("labgate_session").is_none(),
        "a refused callback set a session cookie: {}",
        resp.describe()
    );
    let me = client.get("/api/users/current").expect_json(200);
    assert_eq!(me["isLoggedIn"], false, "signed in after a refusal: {me}");
    let page = html_unescape(&client.get("/sessions/unauthorized").expect_html(200));
    assert!(page.contains(NOT_AUTHORIZED), "refusal page: {page}");
    page
}

/// Asserts that the page shows none of the refusal reasons (the generic refusal).
#[track_caller]
fn assert_generic(page: &str) {
    for reason in REASONS {
        assert!(
            !page.contains(reason),
            "a generic refusal shows {reason:?}: {page}"
        );
    }
}

impl Trip {
    /// Asserts a successful sign-in that redirects to exactly `to`; returns the browser.
    #[track_caller]
    pub(crate) fn accepted(mut self, to: &str) -> Client {
        assert_eq!(
            self.callback.status,
            302,
            "callback: {}",
            self.callback.describe()
        );
        // The raw header: `location()` would hide `http://evil.example/`.
        assert_eq!(
            self.callback.header("location"),
            Some(to),
            "callback: {}",
            self.callback.describe()
        );
        let me = self.browser.get("/api/users/current").expect_json(200);
        assert_eq!(me["isLoggedIn"], true, "{me}");
        self.browser.with_xsrf(true)
    }

    /// Asserts a refusal; follows it to the refusal page and returns its text.
    #[track_caller]
    pub(crate) fn refused(&mut self) -> String {
        expect_refused(&mut self.browser, &self.callback)
    }

    /// Asserts a refusal with the generic text only.
    #[track_caller]
    pub(crate) fn refused_generic(&mut self) {
        let page = self.refused();
        assert_generic(&page);
    }

    fn code(&self) -> String {
        url_param(&self.callback_url, "code").expect("code in the callback URL")
    }
}

// ---------------------------------------------------------------------------------------------
// The database, through the admin API

/// Everything the admin API shows of users, groups and memberships.
fn snapshot(lg: &Labgate) -> Value {
    let mut admin = lg.admin();
    let active = admin
        .get_query("/api/users/search", &[("ps", "500")])
        .expect_json(200);
    let deactivated = admin
        .get_query(
            "/api/users/search",
            &[("ps", "500"), ("deactivated", "true")],
        )
        .expect_json(200);
    let groups = admin
        .get_query("/api/user_groups/search", &[("ps", "500")])
        .expect_json(200);
    json!({
        "users": active["users"],
        "deactivated": deactivated["users"],
        "groups": groups["groups"],
    })
}

#[track_caller]
fn assert_unchanged(lg: &Labgate, before: &Value) {
    let after = snapshot(lg);
    assert_eq!(
        &after, before,
        "the database changed:\nbefore: {before:#}\nafter: {after:#}"
    );
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

/// The user with that login, active or not.
pub(crate) fn find_user(lg: &Labgate, login: &str) -> Option<Value> {
    let mut admin = lg.admin();
    for deactivated in ["false", "true"] {
        let v = admin
            .get_query(
                "/api/users/search",
                &[("ps", "500"), ("deactivated", deactivated)],
            )
            .expect_json(200);
        if let Some(u) = v["users"]
            .as_array()
            .and_then(|a| a.iter().find(|u| u["login"] == login))
        {
            return Some(u.clone());
        }
    }
    None
}

#[track_caller]
pub(crate) fn user(lg: &Labgate, login: &str) -> Value {
    find_user(lg, login).unwrap_or_else(|| panic!("no user {login}: {:#}", snapshot(lg)))
}

/// The sorted group names of a user.
#[track_caller]
pub(crate) fn groups_of(lg: &Labgate, login: &str) -> Vec<String> {
    let mut g = names(&user(lg, login)["groups"]);
    g.sort();
    g
}

fn group_names(lg: &Labgate) -> Vec<String> {
    let v = lg
        .admin()
        .get_query("/api/user_groups/search", &[("ps", "500")])
        .expect_json(200);
    let mut g = names(&v["groups"]);
    g.sort();
    g
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. PKCE, scopes, client secret

#[test]
fn pkce_s256_and_the_openid_email_scopes_travel_and_the_secret_goes_only_to_the_token_endpoint() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let trip = sign_in(&lg, &gl, "ann", "/");
    let code = trip.code();
    let authorize_url = trip.authorize_url.clone();
    // Success proves the fake checked the verifier against the S256 challenge.
    trip.accepted("/");

    let authorize = gl.requests_to("/oauth/authorize");
    assert_eq!(authorize.len(), 1, "{authorize:?}");
    let a = &authorize[0];
    assert_eq!(
        a.query_param("code_challenge_method").as_deref(),
        Some("S256"),
        "{a:?}"
    );
    assert_eq!(
        a.query_param("scope").as_deref(),
        Some("openid email"),
        "{a:?}"
    );
    assert_eq!(
        a.query_param("response_type").as_deref(),
        Some("code"),
        "{a:?}"
    );
    assert_eq!(a.query_param("client_id").as_deref(), Some(APP_ID), "{a:?}");
    assert_eq!(
        a.query_param("redirect_uri"),
        Some(format!("http://{}/oauth2/callback/gitlab", lg.addr)),
        "{a:?}"
    );
    let state = a.query_param("state").unwrap_or_default();
    assert!(state.len() >= 22, "state too short for 128 bits: {state:?}");
    let challenge = a.query_param("code_challenge").expect("code_challenge");

    let token = gl.requests_to("/oauth/token");
    assert_eq!(token.len(), 1, "{token:?}");
    let t = &token[0];
    let verifier = t.form_param("code_verifier").expect("code_verifier sent");
    assert_ne!(
        verifier, challenge,
        "the challenge must not be the verifier"
    );
    assert_eq!(
        pkce_s256(&verifier),
        challenge,
        "S256(verifier) = challenge"
    );
    assert_eq!(t.form_param("code"), Some(code), "{t:?}");
    assert_eq!(
        t.form_param("grant_type").as_deref(),
        Some("authorization_code"),
        "{t:?}"
    );
    // Exactly the authorize request's redirect URI (the fake ignores loopback ports).
    assert_eq!(
        t.form_param("redirect_uri"),
        a.query_param("redirect_uri"),
        "{t:?}"
    );
    // The person was read once, from userinfo, with the access token just issued.
    let user_calls = gl.requests_to("/oauth/userinfo");
    assert_eq!(user_calls.len(), 1, "{user_calls:#?}");
    let issued = gl.issued_access_tokens();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(
        user_calls[0].header("authorization"),
        Some(format!("Bearer {}", issued[0]).as_str()),
        "{:?}",
        user_calls[0]
    );

    // The client secret travels only in the token request (form field or HTTP Basic).
    let basic = base64(format!("{APP_ID}:{APP_SECRET}").as_bytes());
    assert!(
        !authorize_url.contains(APP_SECRET),
        "secret in the authorize URL"
    );
    let requests = gl.requests();
    for r in &requests {
        let carries = r.contains(APP_SECRET) || r.contains(&basic);
        if r.endpoint == Some(Endpoint::Token) {
            assert!(carries, "token request without the client secret: {r:?}");
        } else {
            assert!(!carries, "client secret sent to {} {}", r.method, r.path);
        }
    }
    // Nothing else was asked of GitLab: no REST API call at all.
    assert_no_rest_api_call(&gl);
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
}

/// A sign-in reads the person from userinfo only: never `/api/v4/...`, which would need a token
/// that can read code.
#[track_caller]
fn assert_no_rest_api_call(gl: &FakeGitlab) {
    let rest: Vec<String> = gl
        .requests()
        .iter()
        .filter(|r| r.path.contains("/api/v4/"))
        .map(|r| r.path.clone())
        .collect();
    assert!(rest.is_empty(), "REST API called at sign-in: {rest:?}");
}

#[test]
fn the_scopes_are_openid_email_whatever_the_settings() {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    let authorize = gl.requests_to("/oauth/authorize");
    assert_eq!(authorize.len(), 1, "{authorize:?}");
    assert_eq!(
        authorize[0].query_param("scope").as_deref(),
        Some("openid email"),
        "{:?}",
        authorize[0]
    );
    assert_eq!(gl.requests_to("/oauth/userinfo").len(), 1);
    assert_no_rest_api_call(&gl);
    for r in gl.requests() {
        if r.endpoint != Some(Endpoint::Token) {
            assert!(!r.contains(APP_SECRET), "secret sent to {}", r.path);
        }
    }
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
}

// ---------------------------------------------------------------------------------------------
// 2, 3. Groups over several pages

#[test]
fn memberships_mirror_250_gitlab_groups_read_in_one_userinfo_call() {
    let allowed = (
        "sonar.auth.gitlab.allowedGroups",
        &["team-042", "team-142", "team-242"][..],
    );
    let (lg, gl) = lab(&[allowed, SYNC_ON]);
    gitlab_user(&gl, 1001, "ann");
    for i in 0..250 {
        gl.add_member("ann", &format!("team-{i:03}"), access::REPORTER);
    }
    // One local group per page, and one GitLab does not list.
    for g in ["team-042", "team-142", "team-242", "unrelated"] {
        lg.create_group(g);
    }
    let groups_before = group_names(&lg);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(
        groups_of(&lg, "ann"),
        strings(&["team-042", "team-142", "team-242", "users"])
    );
    assert_eq!(group_names(&lg), groups_before, "no group created");
    assert_eq!(gl.requests_to("/oauth/userinfo").len(), 1);
    assert_no_rest_api_call(&gl);
}

/// GitLab's `groups` claim holds the groups of direct memberships and all their subgroups, never
/// their parents: Ann, a direct member of `acme/platform`, is synchronized into the local
/// `acme/platform/sre` but not into `acme`.
#[test]
fn synchronization_takes_subgroups_of_direct_groups_and_never_their_parents() {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    gitlab_user(&gl, 1001, "ann");
    gl.add_group("acme/platform/sre");
    gl.add_member("ann", "acme/platform", access::GUEST);
    for g in ["acme", "acme/platform", "acme/platform/sre"] {
        lg.create_group(g);
    }
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(
        groups_of(&lg, "ann"),
        strings(&["acme/platform", "acme/platform/sre", "users"])
    );
}

#[test]
fn an_allowed_group_among_many_admits() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    gitlab_user(&gl, 1001, "ann");
    for i in 0..150 {
        gl.add_member("ann", &format!("g-{i:03}"), access::DEVELOPER);
    }
    gl.add_member("ann", "acme/zz-last", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
    assert_eq!(gl.requests_to("/oauth/userinfo").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Group synchronization

/// Local groups `acme`, `Acme/Platform`, `beta`, `beta/tools`, `manual`, `unrelated`; on GitLab
/// Ann is a direct member of `acme/platform`, `beta` (which has the subgroup `beta/tools`) and
/// `gamma`. Ann signed in once with synchronization off and was then added to `manual` by hand;
/// the local user Carol is in `beta` and `manual`. The allowed groups are `acme` and `beta`;
/// synchronization is then switched on.
fn sync_lab() -> (Labgate, FakeGitlab) {
    let (lg, gl) = lab(&[
        SYNC_OFF,
        ("sonar.auth.gitlab.allowedGroups", &["acme", "beta"]),
    ]);
    for g in [
        "acme",
        "Acme/Platform",
        "beta",
        "beta/tools",
        "manual",
        "unrelated",
    ] {
        lg.create_group(g);
    }
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    gl.add_member("ann", "beta", access::MAINTAINER);
    gl.add_group("beta/tools");
    gl.add_member("ann", "gamma", access::GUEST);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["users"]));
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "manual"), ("login", "ann")],
        )
        .expect(204);
    lg.create_user("carol", USER_PASSWORD);
    for g in ["beta", "manual"] {
        admin
            .post_form(
                "/api/user_groups/add_user",
                &[("name", g), ("login", "carol")],
            )
            .expect(204);
    }
    set_setting(&lg, SYNC_ON.0, SYNC_ON.1);
    (lg, gl)
}

#[test]
fn group_sync_sets_exactly_users_plus_existing_case_exact_matches() {
    let (lg, gl) = sync_lab();
    let groups_before = group_names(&lg);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    // beta and beta/tools (inherited) match; `Acme/Platform` differs in case from GitLab's
    // `acme/platform`; `acme` is a parent GitLab does not list; `gamma` has no local group;
    // the hand-made `manual` membership is removed; `users` stays.
    assert_eq!(
        groups_of(&lg, "ann"),
        strings(&["beta", "beta/tools", "users"])
    );
    assert_eq!(group_names(&lg), groups_before, "sync created groups");
    assert!(!group_names(&lg).contains(&"gamma".to_string()));
    assert!(!group_names(&lg).contains(&"acme/platform".to_string()));
}

#[test]
fn group_sync_leaves_local_users_memberships_alone() {
    let (lg, gl) = sync_lab();
    let carol_before = user(&lg, "carol");
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(
        groups_of(&lg, "ann"),
        strings(&["beta", "beta/tools", "users"])
    );
    assert_eq!(
        groups_of(&lg, "carol"),
        strings(&["beta", "manual", "users"])
    );
    assert_eq!(user(&lg, "carol"), carol_before);
}

#[test]
fn memberships_of_gitlab_users_cannot_be_edited_by_api_while_sync_is_on() {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    lg.create_group("acme/platform");
    lg.create_group("manual");
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["acme/platform", "users"]));
    let before = snapshot(&lg);
    let mut admin = lg.admin();
    for (path, group) in [
        ("/api/user_groups/add_user", "manual"),
        ("/api/user_groups/remove_user", "acme/platform"),
    ] {
        let msg = admin
            .post_form(path, &[("name", group), ("login", "ann")])
            .expect_error(400);
        assert!(
            msg.to_lowercase().contains("synchroniz"),
            "{path}: the refusal does not say why: {msg:?}"
        );
    }
    assert_unchanged(&lg, &before);
    // Local users are not managed by synchronization.
    lg.create_user("carol", USER_PASSWORD);
    for path in ["/api/user_groups/add_user", "/api/user_groups/remove_user"] {
        admin
            .post_form(path, &[("name", "manual"), ("login", "carol")])
            .expect(204);
    }
}

#[test]
fn memberships_of_gitlab_users_are_editable_while_sync_is_off() {
    let (lg, gl) = lab(&[SYNC_OFF]);
    lg.create_group("acme/platform");
    lg.create_group("manual");
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["users"]));
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "manual"), ("login", "ann")],
        )
        .expect(204);
    // Signing in again keeps the hand-made membership and adds none.
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["manual", "users"]));
    admin
        .post_form(
            "/api/user_groups/remove_user",
            &[("name", "manual"), ("login", "ann")],
        )
        .expect(204);
    assert_eq!(groups_of(&lg, "ann"), strings(&["users"]));
}

/// The attack: anyone able to create a top-level GitLab group can name it `administrators`.
/// Synchronization must ignore it, as it lies under no allowed group, although a local group of
/// that name exists (the built-in one, holding "Administer System").
#[test]
fn group_sync_ignores_a_gitlab_group_named_administrators_outside_the_allowed_groups() {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    gitlab_user(&gl, 1002, "bob");
    gl.add_member("bob", "acme/platform", access::DEVELOPER);
    sign_in(&lg, &gl, "bob", "/").accepted("/");
    assert_eq!(groups_of(&lg, "bob"), strings(&["users"]));
    gl.add_member("bob", "administrators", access::OWNER);
    let mut bob = sign_in(&lg, &gl, "bob", "/").accepted("/");
    let me = bob.get("/api/users/current").expect_json(200);
    assert_eq!(me["groups"], json!(["users"]), "bob joined a group: {me}");
    assert_eq!(
        me["permissions"]["global"],
        json!([]),
        "bob holds a permission: {me}"
    );
    let status = bob.get("/admin/users").status;
    assert_eq!(status, 403, "bob reached an admin page");
    assert_eq!(groups_of(&lg, "bob"), strings(&["users"]));
}

/// Asserts that the signed-in `client` holds no group but `users`, no permission, and is refused
/// an admin page.
#[track_caller]
fn assert_not_admin(client: &mut Client) {
    let me = client.get("/api/users/current").expect_json(200);
    assert_eq!(me["groups"], json!(["users"]), "{me}");
    assert_eq!(me["permissions"]["global"], json!([]), "{me}");
    assert_eq!(
        client.get("/admin/users").status,
        403,
        "an admin page: {me}"
    );
}

/// Without allowed groups the attack cannot be set up: synchronization cannot be turned on.
#[test]
fn group_sync_cannot_be_turned_on_without_allowed_groups_so_administrators_is_not_joined() {
    let (lg, gl) = lab(&[]);
    let msg = lg
        .admin()
        .post_form(
            "/api/settings/set",
            &[("key", SYNC_ON.0), ("value", "true")],
        )
        .expect_error(400);
    assert_eq!(
        msg,
        "Synchronize user groups needs at least one allowed group: only groups under an allowed group are synchronized"
    );
    gitlab_user(&gl, 1002, "bob");
    gl.add_member("bob", "administrators", access::OWNER);
    let mut bob = sign_in(&lg, &gl, "bob", "/").accepted("/");
    assert_not_admin(&mut bob);
}

/// A configuration stored before synchronization needed an allowed group has it on with none.
/// Sign-in keeps working and synchronizes nothing: memberships stay as they are (hand-made ones
/// included, and they stay editable), and a GitLab group named `administrators` is not joined.
#[test]
fn stored_group_sync_without_allowed_group_signs_in_and_synchronizes_nothing() {
    let (lg, gl) = lab(&[]);
    lg.create_group("acme/platform");
    lg.create_group("manual");
    gitlab_user(&gl, 1001, "ann");
    gitlab_user(&gl, 1002, "bob");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "manual"), ("login", "ann")],
        )
        .expect(204);
    lg.store_settings(&[(SYNC_ON.0, "true")]);
    for who in ["ann", "bob"] {
        gl.add_member(who, "administrators", access::OWNER);
        gl.add_member(who, "acme/platform", access::DEVELOPER);
    }
    let mut ann = sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["manual", "users"]));
    let mut bob = sign_in(&lg, &gl, "bob", "/").accepted("/");
    assert_not_admin(&mut bob);
    assert_eq!(
        ann.get("/admin/users").status,
        403,
        "ann reached an admin page"
    );
    admin
        .post_form(
            "/api/user_groups/remove_user",
            &[("name", "manual"), ("login", "ann")],
        )
        .expect(204);
    assert_eq!(groups_of(&lg, "ann"), strings(&["users"]));
}

// ---------------------------------------------------------------------------------------------
// 5. Allowed groups

#[test]
fn allowed_root_group_admits_a_subgroup_member() {
    let (lg, gl) = lab(&[("sonar.auth.gitlab.allowedGroups", &["acme"])]);
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme/platform/sre", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
    assert_eq!(user(&lg, "ann")["externalProvider"], "gitlab");
}

#[test]
fn allowed_group_does_not_admit_a_sibling_with_the_same_prefix() {
    let (lg, gl) = lab(&[("sonar.auth.gitlab.allowedGroups", &["acme"])]);
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme-other", access::OWNER);
    gl.add_member("ann", "acmeplatform/acme", access::OWNER);
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(page.contains(NOT_ALLOWED), "{page}");
    assert_unchanged(&lg, &before);
}

#[test]
fn allowed_groups_compare_ignoring_case() {
    let (lg, gl) = lab(&[("sonar.auth.gitlab.allowedGroups", &["ACME"])]);
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "Acme/Platform", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
}

#[test]
fn user_without_groups_is_refused_by_allowed_groups_even_with_sync_off() {
    let (lg, gl) = lab(&[SYNC_OFF, ("sonar.auth.gitlab.allowedGroups", &["acme"])]);
    gitlab_user(&gl, 1001, "ann");
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(page.contains(NOT_ALLOWED), "{page}");
    assert_unchanged(&lg, &before);
    assert_eq!(user_logins(&lg), strings(&["admin"]));
}

#[test]
fn existing_user_outside_allowed_groups_is_refused_without_any_write() {
    let (lg, gl) = lab(&[("sonar.auth.gitlab.allowedGroups", &["beta"]), SYNC_ON]);
    lg.create_group("beta");
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "beta", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["beta", "users"]));
    set_setting(&lg, "sonar.auth.gitlab.allowedGroups", &["acme"]);
    gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    gl.remove_member("ann", "beta");
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(page.contains(NOT_ALLOWED), "{page}");
    assert_unchanged(&lg, &before);
}

// ---------------------------------------------------------------------------------------------
// 6. Sign-up

#[test]
fn sign_up_off_refuses_a_new_gitlab_user() {
    let (lg, gl) = lab(&[SIGN_UP_OFF]);
    gitlab_user(&gl, 1001, "ann");
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(page.contains(NO_SIGN_UP), "{page}");
    assert_unchanged(&lg, &before);
    assert_eq!(user_logins(&lg), strings(&["admin"]));
}

#[test]
fn sign_up_off_admits_and_links_a_user_pre_provisioned_by_update_identity_provider() {
    let (lg, gl) = lab(&[SIGN_UP_OFF]);
    gitlab_user(&gl, 1001, "ann");
    lg.create_user("ann.l", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "ann.l"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "ann"),
            ],
        )
        .expect(204);
    let mut c = sign_in(&lg, &gl, "ann", "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "ann.l", "{me}");
    assert_eq!(me["name"], "ann Lovelace", "refreshed from GitLab: {me}");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann.l"]));
    let u = user(&lg, "ann.l");
    assert_eq!(u["externalProvider"], "gitlab", "{u}");
    assert_eq!(u["externalIdentity"], "ann", "{u}");
    assert_eq!(u["local"], false, "{u}");
    // Linked by the GitLab numeric id: a renamed GitLab account still reaches it.
    gl.update_user("ann", |u| u.username = "ann-renamed".into());
    sign_in(&lg, &gl, "ann-renamed", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann.l"]));
    assert_eq!(user(&lg, "ann.l")["externalIdentity"], "ann-renamed");
}

#[test]
fn sign_up_off_admits_and_links_a_user_created_with_local_false() {
    let (lg, gl) = lab(&[SIGN_UP_OFF]);
    gitlab_user(&gl, 1001, "ann");
    lg.admin()
        .post_form(
            "/api/users/create",
            &[("login", "ann"), ("name", "Ann (pre)"), ("local", "false")],
        )
        .expect_json(200);
    let mut c = sign_in(&lg, &gl, "ann", "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "ann", "{me}");
    assert_eq!(me["name"], "ann Lovelace", "{me}");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
    gl.update_user("ann", |u| u.username = "ann2".into());
    sign_in(&lg, &gl, "ann2", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
    assert_eq!(user(&lg, "ann")["externalIdentity"], "ann2");
}

#[test]
fn pre_provisioned_identity_is_linked_ignoring_case() {
    let (lg, gl) = lab(&[SIGN_UP_OFF]);
    gitlab_user(&gl, 1001, "ann");
    lg.create_user("ann.l", USER_PASSWORD);
    lg.admin()
        .post_form(
            "/api/users/update_identity_provider",
            &[
                ("login", "ann.l"),
                ("newExternalProvider", "gitlab"),
                ("newExternalIdentity", "ANN"),
            ],
        )
        .expect(204);
    let mut c = sign_in(&lg, &gl, "ann", "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "ann.l", "{me}");
    assert_eq!(me["externalIdentity"], "ann", "refreshed from GitLab: {me}");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann.l"]));
    // Found again by its GitLab id.
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann.l"]));
}

// ---------------------------------------------------------------------------------------------
// 7. Faults at every step

/// Synchronization on (allowed group `acme`), local groups `acme/platform` and `acme/ops`. Ann
/// signed in once (member of `acme/platform` then); since, on GitLab, she moved to `acme/ops`
/// and was renamed, so a sign-in that went through would change her name and memberships. Bob,
/// in `acme/ops`, never signed in. With `bulk`, both are also in `bulk` and its 249 subgroups
/// (3 pages of groups).
struct FaultLab {
    lg: Labgate,
    gl: FakeGitlab,
    before: Value,
}

fn fault_lab(bulk: bool) -> FaultLab {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    lg.create_group("acme/platform");
    lg.create_group("acme/ops");
    gitlab_user(&gl, 1001, "ann");
    gitlab_user(&gl, 1002, "bob");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    if bulk {
        for i in 0..249 {
            gl.add_group(&format!("bulk/sub-{i:03}"));
        }
        gl.add_member("ann", "bulk", access::DEVELOPER);
        gl.add_member("bob", "bulk", access::DEVELOPER);
    }
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(groups_of(&lg, "ann"), strings(&["acme/platform", "users"]));
    gl.remove_member("ann", "acme/platform");
    gl.add_member("ann", "acme/ops", access::DEVELOPER);
    gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    gl.add_member("bob", "acme/ops", access::DEVELOPER);
    let before = snapshot(&lg);
    FaultLab { lg, gl, before }
}

impl FaultLab {
    /// Bob (new) and Ann (existing) sign in with `fault` set up anew before each start; both
    /// callbacks run at the same time. Returns both trips, Bob's first.
    fn sign_in_both(&self, fault: &dyn Fn(&FakeGitlab)) -> Vec<Trip> {
        let started: Vec<Started> = ["bob", "ann"]
            .iter()
            .map(|who| {
                self.gl.clear_faults();
                fault(&self.gl);
                start(&self.lg, &self.gl, who, "/")
            })
            .collect();
        std::thread::scope(|s| {
            let running: Vec<_> = started
                .into_iter()
                .map(|p| s.spawn(move || p.finish()))
                .collect();
            running
                .into_iter()
                .map(|h| h.join().expect("callback thread"))
                .collect()
        })
    }

    /// Both sign-ins are refused with the generic page within 15 s, and nothing was written: no
    /// account for Bob, Ann's name and memberships unchanged.
    #[track_caller]
    fn expect_refused(&self, fault: &dyn Fn(&FakeGitlab)) -> Vec<Trip> {
        let mut trips = self.sign_in_both(fault);
        for trip in &mut trips {
            trip.refused_generic();
            assert!(
                trip.took < Duration::from_secs(15),
                "callback took {:?}",
                trip.took
            );
        }
        self.gl.clear_faults();
        assert_unchanged(&self.lg, &self.before);
        assert!(find_user(&self.lg, "bob").is_none(), "bob was created");
        let ann = user(&self.lg, "ann");
        assert_eq!(ann["name"], "ann Lovelace", "{ann}");
        assert_eq!(
            groups_of(&self.lg, "ann"),
            strings(&["acme/platform", "users"])
        );
        trips
    }
}

#[test]
fn fault_authorize_access_denied_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    let tokens_before = f.gl.requests_to("/oauth/token").len();
    let trips = f.expect_refused(&|gl| gl.deny_next_authorization());
    for t in &trips {
        assert_eq!(
            url_param(&t.callback_url, "error").as_deref(),
            Some("access_denied"),
            "{}",
            t.callback_url
        );
    }
    assert_eq!(
        f.gl.requests_to("/oauth/token").len(),
        tokens_before,
        "a denied authorization must not reach the token endpoint"
    );
}

#[test]
fn fault_token_endpoint_500_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Token, Fault::Status(500)));
}

#[test]
fn fault_token_endpoint_401_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Token, Fault::Status(401)));
}

#[test]
fn fault_userinfo_401_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Userinfo, Fault::Status(401)));
}

#[test]
fn fault_userinfo_403_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Userinfo, Fault::Status(403)));
}

#[test]
fn fault_userinfo_500_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Userinfo, Fault::Status(500)));
}

#[test]
fn fault_userinfo_malformed_json_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Userinfo, Fault::MalformedJson));
}

#[test]
fn fault_userinfo_oversized_body_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Userinfo, Fault::oversized()));
}

#[test]
fn userinfo_with_more_than_ten_thousand_groups_refuses_and_writes_nothing() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| {
        gl.set_fault(Endpoint::Userinfo, Fault::UserinfoGroups { count: 10_001 })
    });
    assert!(f
        .lg
        .stderr()
        .all()
        .iter()
        .any(|l| l.contains("more than 10000 groups")));
}

#[test]
fn fault_userinfo_delayed_20s_is_refused_within_15s() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Userinfo, Fault::Delay(Duration::from_secs(20))));
}

#[test]
fn fault_token_endpoint_delayed_20s_is_refused_within_15s() {
    let f = fault_lab(false);
    f.expect_refused(&|gl| gl.set_fault(Endpoint::Token, Fault::Delay(Duration::from_secs(20))));
}

#[test]
fn rate_limited_userinfo_without_retry_after_is_refused_after_bounded_retries() {
    let f = fault_lab(false);
    f.gl.clear_requests();
    f.expect_refused(&|gl| {
        gl.set_fault(Endpoint::Userinfo, Fault::RateLimited { retry_after: None })
    });
    let calls = f.gl.requests_to("/oauth/userinfo").len();
    assert!(
        (2..=10).contains(&calls),
        "{calls} userinfo calls for two sign-ins"
    );
}

#[test]
fn rate_limited_userinfo_with_retry_after_120_is_refused_quickly() {
    let f = fault_lab(false);
    let trips = f.expect_refused(&|gl| {
        gl.set_fault(
            Endpoint::Userinfo,
            Fault::RateLimited {
                retry_after: Some(120),
            },
        )
    });
    for t in &trips {
        assert!(
            t.took < Duration::from_secs(5),
            "refusal took {:?}: waiting out a long Retry-After",
            t.took
        );
    }
}

#[test]
fn rate_limited_userinfo_with_retry_after_1_is_retried_and_accepted() {
    let f = fault_lab(false);
    for who in ["bob", "ann"] {
        f.gl.clear_requests();
        f.gl.set_fault_for_calls(
            Endpoint::Userinfo,
            1,
            Fault::RateLimited {
                retry_after: Some(1),
            },
        );
        let trip = sign_in(&f.lg, &f.gl, who, "/");
        assert!(trip.took < Duration::from_secs(15), "{:?}", trip.took);
        trip.accepted("/");
        let calls = f.gl.requests_to("/oauth/userinfo");
        assert_eq!(calls.len(), 2, "{who}: {calls:#?}");
        assert!(
            matches!(calls[0].fault, Some(Fault::RateLimited { .. })),
            "{calls:#?}"
        );
        assert!(calls[1].fault.is_none(), "{calls:#?}");
    }
    assert_eq!(groups_of(&f.lg, "bob"), strings(&["acme/ops", "users"]));
    assert_eq!(groups_of(&f.lg, "ann"), strings(&["acme/ops", "users"]));
    assert_eq!(user(&f.lg, "ann")["name"], "Ann Renamed");
}

// ---------------------------------------------------------------------------------------------
// 8. Code and state replays

#[test]
fn a_reused_authorization_code_is_refused() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let trip = sign_in(&lg, &gl, "ann", "/");
    let used = trip.code();
    trip.accepted("/");
    gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    let before = snapshot(&lg);
    // A fresh start in a new browser (its own state and cookie), with the code already used.
    let fresh = start(&lg, &gl, "ann", "/");
    let url = with_param(&fresh.callback_url, "code", Some(&used));
    let mut trip = fresh.call(&url);
    trip.refused_generic();
    let tokens = gl.requests_to("/oauth/token");
    assert_eq!(tokens.len(), 2, "{tokens:#?}");
    assert_eq!(tokens[1].form_param("code"), Some(used));
    assert_unchanged(&lg, &before);
}

#[test]
fn a_replayed_callback_url_is_refused() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let trip = sign_in(&lg, &gl, "ann", "/");
    let url = trip.callback_url.clone();
    let mut replay = trip.before_callback.clone();
    trip.accepted("/");
    gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    let before = snapshot(&lg);
    // Same URL, same cookies as the first call.
    let r = replay.get(&url);
    let page = expect_refused(&mut replay, &r);
    assert_generic(&page);
    assert_eq!(
        gl.requests_to("/oauth/token").len(),
        1,
        "state not consumed"
    );
    assert_unchanged(&lg, &before);
}

#[test]
fn a_callback_without_state_is_refused() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let before = snapshot(&lg);
    let started = start(&lg, &gl, "ann", "/");
    let url = with_param(&started.callback_url, "state", None);
    let mut trip = started.call(&url);
    trip.refused_generic();
    assert!(gl.requests_to("/oauth/token").is_empty(), "code exchanged");
    assert_unchanged(&lg, &before);
}

#[test]
fn a_forged_state_is_refused() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let before = snapshot(&lg);
    let started = start(&lg, &gl, "ann", "/");
    let real = url_param(&started.callback_url, "state").expect("state");
    let forged: String = real
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    let url = with_param(&started.callback_url, "state", Some(&forged));
    let mut trip = started.call(&url);
    trip.refused_generic();
    assert!(gl.requests_to("/oauth/token").is_empty(), "code exchanged");
    assert_unchanged(&lg, &before);
}

#[test]
fn a_state_from_another_browser_is_refused() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let before = snapshot(&lg);
    let victim = start(&lg, &gl, "ann", "/");
    let mut attacker = lg.client();
    let r = attacker.get(&victim.callback_url);
    let page = expect_refused(&mut attacker, &r);
    assert_generic(&page);
    assert!(gl.requests_to("/oauth/token").is_empty(), "code exchanged");
    assert_unchanged(&lg, &before);
}

// ---------------------------------------------------------------------------------------------
// 9. return_to

#[test]
fn offsite_return_to_falls_back_to_root() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    for attempt in [
        "//evil.example",
        "/\\evil.example",
        "http://evil.example",
        "/%2F%2Fevil",
        "javascript:alert(1)",
    ] {
        let trip = sign_in(&lg, &gl, "ann", attempt);
        assert_eq!(
            trip.callback.header("location"),
            Some("/"),
            "return_to={attempt:?}: {}",
            trip.callback.describe()
        );
        trip.accepted("/");
    }
}

#[test]
fn local_return_to_with_query_is_kept() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    sign_in(&lg, &gl, "ann", "/admin/users?p=2").accepted("/admin/users?p=2");
}

// ---------------------------------------------------------------------------------------------
// 10. The refusal page

#[test]
fn refusal_page_takes_no_reason_from_the_url_or_a_crafted_cookie() {
    let (lg, _gl) = lab(&[]);
    let mut c = lg.client();
    let page = c
        .get(&format!(
            "/sessions/unauthorized?reason={}&message=pwned-message&error=pwned-error",
            urlencode("<script>alert('pwned-reason')</script>")
        ))
        .expect_html(200);
    assert!(page.contains(NOT_AUTHORIZED), "{page}");
    assert!(!html_unescape(&page).contains("pwned"), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    assert_generic(&html_unescape(&page));
    let mut c = lg.client();
    c.cookies
        .insert("labgate_refusal".into(), "pwned-cookie".into());
    let page = html_unescape(&c.get("/sessions/unauthorized").expect_html(200));
    assert!(!page.contains("pwned"), "{page}");
    assert_generic(&page);
}

#[test]
fn refusal_reason_is_shown_once() {
    let (lg, gl) = lab(&[SIGN_UP_OFF]);
    gitlab_user(&gl, 1001, "ann");
    let mut trip = sign_in(&lg, &gl, "ann", "/");
    let key = trip
        .browser
        .cookie("labgate_refusal")
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no refusal cookie: {}", trip.callback.describe()));
    let page = trip.refused();
    assert!(page.contains(NO_SIGN_UP), "{page}");
    // Reload.
    let page = html_unescape(&trip.browser.get("/sessions/unauthorized").expect_html(200));
    assert!(page.contains(NOT_AUTHORIZED), "{page}");
    assert_generic(&page);
    // Even with the first cookie sent again.
    let mut again = lg.client();
    again.cookies.insert("labgate_refusal".into(), key);
    let page = html_unescape(&again.get("/sessions/unauthorized").expect_html(200));
    assert_generic(&page);
}

// ---------------------------------------------------------------------------------------------
// 11. Secrets stay secret

fn whole(r: &Resp) -> String {
    let mut s: String = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    s.push_str(&r.text());
    s
}

#[test]
fn secret_code_and_access_token_appear_in_no_answer_and_no_log_line() {
    let (lg, gl) = lab_with(
        Launch::new().env("LABGATE_LOG", "debug"),
        &[("sonar.auth.gitlab.allowedGroups", &["acme"])],
    );
    gitlab_user(&gl, 1001, "ann");
    gitlab_user(&gl, 1002, "bob");
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    gl.add_member("bob", "acme", access::DEVELOPER);
    let mut answers: Vec<(String, Resp)> = Vec::new();
    let mut codes = Vec::new();

    // Accepted.
    let trip = sign_in(&lg, &gl, "ann", "/");
    codes.push(trip.code());
    let used = trip.code();
    answers.push(("start".into(), trip.init.clone()));
    answers.push(("callback".into(), trip.callback.clone()));
    let mut ann = trip.accepted("/");
    let session = ann
        .cookie("labgate_session")
        .unwrap_or_default()
        .to_string();
    answers.push(("home".into(), ann.get("/")));
    answers.push(("current".into(), ann.get("/api/users/current")));
    // Refused at the token endpoint: the code again.
    let fresh = start(&lg, &gl, "ann", "/");
    codes.push(url_param(&fresh.callback_url, "code").unwrap_or_default());
    let url = with_param(&fresh.callback_url, "code", Some(&used));
    let mut trip = fresh.call(&url);
    answers.push(("replayed code".into(), trip.callback.clone()));
    trip.refused_generic();
    // Refused after the token exchange: the access token was issued, then refused.
    gl.set_fault(Endpoint::Userinfo, Fault::Status(401));
    let mut trip = sign_in(&lg, &gl, "bob", "/");
    codes.push(trip.code());
    answers.push(("userinfo 401".into(), trip.callback.clone()));
    trip.refused_generic();
    gl.clear_faults();
    // Refused by a rule, after reading userinfo.
    gl.remove_member("bob", "acme");
    let mut trip = sign_in(&lg, &gl, "bob", "/");
    codes.push(trip.code());
    answers.push(("not allowed".into(), trip.callback.clone()));
    trip.refused();

    let mut admin = lg.admin();
    let keys = [
        "sonar.auth.gitlab.enabled",
        "sonar.auth.gitlab.url",
        "sonar.auth.gitlab.applicationId.secured",
        "sonar.auth.gitlab.secret.secured",
        "sonar.auth.gitlab.allowUsersToSignUp",
        "sonar.auth.gitlab.allowedGroups",
        "sonar.auth.gitlab.groupsSync",
    ];
    let keyed: Vec<(&str, &str)> = keys.iter().map(|k| ("keys", *k)).collect();
    let values = admin.get_query("/api/settings/values", &keyed);
    let v = values.expect_json(200);
    assert!(
        v["setSecuredSettings"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k == "sonar.auth.gitlab.secret.secured")),
        "{v}"
    );
    answers.push(("settings values".into(), values));
    answers.push((
        "all settings values".into(),
        admin.get("/api/settings/values"),
    ));
    let list = admin.get("/api/v2/dop-translation/gitlab-configurations");
    list.expect_json(200);
    answers.push(("v2 list".into(), list));
    let item = admin.get("/api/v2/dop-translation/gitlab-configurations/gitlab-configuration");
    item.expect_json(200);
    answers.push(("v2 item".into(), item));
    let page = admin.get("/admin/settings?category=authentication");
    page.expect_html(200);
    answers.push(("settings page".into(), page));
    let login = lg.client().get("/sessions/new");
    login.expect_html(200);
    answers.push(("login page".into(), login));

    let tokens = gl.issued_access_tokens();
    assert_eq!(tokens.len(), 3, "one token per successful exchange");
    let verifiers: Vec<String> = gl
        .requests_to("/oauth/token")
        .iter()
        .filter_map(|r| r.form_param("code_verifier"))
        .collect();
    assert_eq!(codes.len(), 4);
    let mut secrets: Vec<(&str, String)> = vec![("client secret", APP_SECRET.to_string())];
    secrets.extend(codes.iter().map(|c| ("OAuth code", c.clone())));
    secrets.extend(tokens.iter().map(|t| ("access token", t.clone())));
    for (label, r) in &answers {
        let text = whole(r);
        for (what, s) in &secrets {
            assert!(!s.is_empty());
            assert!(!text.contains(s), "{what} in the {label} answer:\n{text}");
        }
    }

    // The log: wait for the line of a last, distinct request, then read it all.
    lg.client().get("/api/server/version").expect(200);
    lg.stderr()
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("/api/server/version")
        })
        .unwrap_or_else(|| panic!("no request line:\n{}", lg.stderr().joined()));
    let log = lg.stderr().all();
    assert!(
        log.iter().any(|l| l.contains("outcome=refused")),
        "no sign-in decision logged:\n{}",
        log.join("\n")
    );
    secrets.extend(verifiers.iter().map(|v| ("PKCE verifier", v.clone())));
    secrets.push(("session id", session));
    for line in &log {
        for (what, s) in &secrets {
            assert!(!line.contains(s.as_str()), "{what} logged: {line}");
        }
    }
}

#[test]
fn sign_in_decisions_are_logged_with_provider_and_username_but_no_secret() {
    let (lg, gl) = lab_with(Launch::new().env("LABGATE_LOG", "info"), &[]);
    gitlab_user(&gl, 1001, "zoe.k");
    let mut secrets: Vec<(&str, String)> = vec![("client secret", APP_SECRET.to_string())];
    let trip = sign_in(&lg, &gl, "zoe.k", "/");
    secrets.push(("OAuth code", trip.code()));
    secrets.push((
        "state",
        url_param(&trip.authorize_url, "state").unwrap_or_default(),
    ));
    let c = trip.accepted("/");
    secrets.push((
        "session id",
        c.cookie("labgate_session").unwrap_or_default().to_string(),
    ));
    // Refused by a rule, once the username is known.
    set_setting(&lg, "sonar.auth.gitlab.allowedGroups", &["acme"]);
    let mut trip = sign_in(&lg, &gl, "zoe.k", "/");
    secrets.push(("OAuth code", trip.code()));
    secrets.push((
        "state",
        url_param(&trip.authorize_url, "state").unwrap_or_default(),
    ));
    let page = trip.refused();
    assert!(page.contains(NOT_ALLOWED), "{page}");
    let tokens = gl.issued_access_tokens();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    secrets.extend(tokens.into_iter().map(|t| ("access token", t)));
    secrets.extend(
        gl.requests_to("/oauth/token")
            .iter()
            .filter_map(|r| r.form_param("code_verifier"))
            .map(|v| ("PKCE verifier", v)),
    );

    for outcome in ["accepted", "refused"] {
        let tag = format!("outcome={outcome}");
        let line = lg
            .stderr()
            .wait_for(Duration::from_secs(5), |l| {
                l.contains("provider=gitlab") && l.contains(&tag)
            })
            .unwrap_or_else(|| panic!("no {tag} decision line:\n{}", lg.stderr().joined()));
        assert!(line.contains("zoe.k"), "no username: {line}");
    }
    // Wait for the line of a last, distinct request, then read the whole log.
    lg.client().get("/api/server/version").expect(200);
    lg.stderr()
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("/api/server/version")
        })
        .unwrap_or_else(|| panic!("no request line:\n{}", lg.stderr().joined()));
    for line in lg.stderr().all() {
        for (what, s) in &secrets {
            assert!(!s.is_empty(), "{what} not captured");
            assert!(!line.contains(s.as_str()), "{what} logged: {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Inactive GitLab accounts

/// GitLab's userinfo serves active people only: a blocked or deactivated GitLab account gets a
/// 401 there, and the sign-in is refused with the generic page, writing nothing, whether the
/// account is known to labgate or not.
#[test]
fn blocked_or_deactivated_gitlab_users_are_refused_and_nothing_is_written() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    gitlab_user(&gl, 1002, "bob");
    for state in ["blocked", "deactivated"] {
        for who in ["ann", "bob"] {
            gl.set_user_state(who, state);
            gl.update_user(who, |u| u.name = "Renamed".into());
        }
        let before = snapshot(&lg);
        for who in ["ann", "bob"] {
            gl.clear_requests();
            sign_in(&lg, &gl, who, "/").refused_generic();
            assert_eq!(gl.requests_to("/oauth/userinfo").len(), 1, "{who} {state}");
        }
        assert_unchanged(&lg, &before);
        assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
    }
}

// ---------------------------------------------------------------------------------------------
// 12b. A GitLab application registered without the scopes labgate asks for

/// The problem row the GitLab tab shows, read straight from the database file.
fn stored_problem(lg: &Labgate) -> Option<(String, String)> {
    let conn = rusqlite::Connection::open(lg.data_dir().join("labgate.db")).unwrap();
    conn.query_row("SELECT problem, fix FROM gitlab_sign_in_problem", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .ok()
}

/// An application registered for the old scopes (read_api) lacks openid and email: GitLab
/// refuses the authorization with `invalid_scope`. The person sees the generic refusal; the log
/// line and the admins' GitLab tab name the scopes to tick, until a sign-in succeeds.
#[test]
fn an_application_without_openid_and_email_is_refused_and_the_fix_is_kept_until_a_sign_in_works() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    gl.set_app_scopes(APP_ID, "read_api read_user");
    let before = snapshot(&lg);
    let mut trip = sign_in(&lg, &gl, "ann", "/");
    assert_eq!(
        url_param(&trip.callback_url, "error").as_deref(),
        Some("invalid_scope")
    );
    trip.refused_generic();
    assert_unchanged(&lg, &before);
    let line = lg
        .stderr()
        .wait_for(Duration::from_secs(5), |l| l.contains("outcome=refused"))
        .expect("a refusal line");
    assert!(line.contains("tick openid and email"), "{line}");
    let (problem, fix) = stored_problem(&lg).expect("the problem is kept for the admins");
    assert!(problem.contains("invalid_scope"), "{problem}");
    assert!(fix.contains("tick openid and email"), "{fix}");

    // Userinfo refusing the token (403: no openid) is the same problem.
    gl.set_app_scopes(APP_ID, "read_api openid email");
    gl.set_fault(Endpoint::Userinfo, Fault::Status(403));
    sign_in(&lg, &gl, "ann", "/").refused_generic();
    let (problem, fix) = stored_problem(&lg).unwrap();
    assert!(problem.contains("403"), "{problem}");
    assert!(fix.contains("tick openid and email"), "{fix}");

    gl.clear_faults();
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(stored_problem(&lg), None, "a sign-in that works clears it");
}

#[test]
fn a_rejected_application_secret_is_kept_for_the_admins_with_its_fix() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    set_setting(
        &lg,
        "sonar.auth.gitlab.secret.secured",
        &["not-the-secret-at-all"],
    );
    sign_in(&lg, &gl, "ann", "/").refused_generic();
    let (problem, fix) = stored_problem(&lg).expect("kept");
    assert!(problem.contains("invalid_client"), "{problem}");
    assert!(fix.contains("application ID or secret"), "{fix}");
    assert!(!problem.contains("not-the-secret-at-all") && !fix.contains("not-the-secret"));
}

// ---------------------------------------------------------------------------------------------
// 13. Accounts: creation, refresh, conflicts

#[test]
fn first_sign_in_creates_the_user_in_the_default_group() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let groups_before = group_names(&lg);
    let mut c = sign_in(&lg, &gl, "ann", "/account").accepted("/account");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "ann", "{me}");
    assert_eq!(me["name"], "ann Lovelace", "{me}");
    assert_eq!(me["email"], "ann@example.com", "{me}");
    assert_eq!(me["local"], false, "{me}");
    assert_eq!(me["externalProvider"], "gitlab", "{me}");
    assert_eq!(me["externalIdentity"], "ann", "{me}");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
    assert_eq!(groups_of(&lg, "ann"), strings(&["users"]));
    assert_eq!(group_names(&lg), groups_before, "a group was created");
    let u = user(&lg, "ann");
    assert!(u["lastConnectionDate"].is_string(), "{u}");
}

#[test]
fn name_email_and_username_are_refreshed_at_each_sign_in() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    gl.update_user("ann", |u| {
        u.username = "ann2".into();
        u.name = "Ann Renamed".into();
        u.email = "ann2@example.com".into();
    });
    let mut c = sign_in(&lg, &gl, "ann2", "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "ann", "the login stays: {me}");
    assert_eq!(me["name"], "Ann Renamed", "{me}");
    assert_eq!(me["email"], "ann2@example.com", "{me}");
    assert_eq!(me["externalIdentity"], "ann2", "{me}");
    // And at the next sign-in again, not only the first time.
    gl.update_user("ann2", |u| {
        u.username = "ann3".into();
        u.name = "Ann Third".into();
        u.email = "ann3@example.com".into();
    });
    sign_in(&lg, &gl, "ann3", "/").accepted("/");
    let u = user(&lg, "ann");
    assert_eq!(u["name"], "Ann Third", "{u}");
    assert_eq!(u["email"], "ann3@example.com", "{u}");
    assert_eq!(u["externalIdentity"], "ann3", "{u}");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann"]));
}

#[test]
fn taken_login_gets_a_gitlab_suffix() {
    let (lg, gl) = lab(&[]);
    lg.create_user("ann", USER_PASSWORD);
    let local_ann = user(&lg, "ann");
    gitlab_user(&gl, 1001, "ann");
    let mut c = sign_in(&lg, &gl, "ann", "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    assert_eq!(me["login"], "ann-gitlab", "{me}");
    assert_eq!(me["externalIdentity"], "ann", "{me}");
    assert_eq!(user(&lg, "ann"), local_ann, "the local ann changed");
    // The next sign-in finds ann-gitlab by its GitLab id.
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert_eq!(user_logins(&lg), strings(&["admin", "ann", "ann-gitlab"]));
    // Both taken: a numeric suffix.
    lg.create_user("kim", USER_PASSWORD);
    lg.create_user("kim-gitlab", USER_PASSWORD);
    gitlab_user(&gl, 1002, "kim");
    let mut c = sign_in(&lg, &gl, "kim", "/").accepted("/");
    let me = c.get("/api/users/current").expect_json(200);
    let login = me["login"].as_str().unwrap_or_default();
    let number = login
        .strip_prefix("kim-gitlab")
        .unwrap_or_default()
        .trim_start_matches('-');
    assert!(
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()),
        "{me}"
    );
}

#[test]
fn email_of_another_account_is_refused_with_the_readme_text() {
    let (lg, gl) = lab(&[]);
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "ann-local"),
                ("name", "Ann Local"),
                ("email", "ann@example.com"),
                ("password", USER_PASSWORD),
            ],
        )
        .expect_json(200);
    // A new GitLab user.
    gitlab_user(&gl, 1001, "ann");
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(page.contains(EMAIL_TAKEN), "{page}");
    assert_unchanged(&lg, &before);
    // An existing GitLab user whose GitLab email became another account's.
    gitlab_user(&gl, 1002, "bob");
    sign_in(&lg, &gl, "bob", "/").accepted("/");
    gl.update_user("bob", |u| {
        u.email = "ann@example.com".into();
        u.name = "Bob Renamed".into();
    });
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "bob", "/").refused();
    assert!(page.contains(EMAIL_TAKEN), "{page}");
    assert_unchanged(&lg, &before);
}

#[test]
fn same_username_with_another_gitlab_id_is_refused() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    // On GitLab, Ann took another username and someone else took "ann".
    gl.update_user("ann", |u| u.username = "ann-old".into());
    let mut other = FakeUser::new(2002, "ann");
    other.name = "Impostor".into();
    other.email = "impostor@example.com".into();
    gl.add_user(other);
    let before = snapshot(&lg);
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(
        page.contains("Failed to authenticate with login 'ann'"),
        "{page}"
    );
    assert_unchanged(&lg, &before);
    assert_eq!(user(&lg, "ann")["name"], "ann Lovelace");
}

#[test]
fn deactivated_user_is_refused_and_stays_deactivated() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    lg.admin()
        .post_form("/api/users/deactivate", &[("login", "ann")])
        .expect_json(200);
    gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    let before = snapshot(&lg);
    assert_eq!(
        logins(&before["deactivated"]),
        strings(&["ann"]),
        "{before}"
    );
    let page = sign_in(&lg, &gl, "ann", "/").refused();
    assert!(page.contains(DEACTIVATED), "{page}");
    assert_unchanged(&lg, &before);
}

// ---------------------------------------------------------------------------------------------
// 14. Sessions

#[test]
fn a_new_session_id_is_issued_at_the_callback_and_the_old_one_is_deleted() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let trip = sign_in(&lg, &gl, "ann", "/");
    let pre_login: Vec<String> = trip.before_callback.cookies.values().cloned().collect();
    let first = trip.accepted("/");
    let old = first
        .cookie("labgate_session")
        .expect("a session cookie after the callback")
        .to_string();
    assert!(
        !pre_login.contains(&old),
        "session id reused from before the sign-in"
    );
    // Signing in again from a browser that still holds that session.
    let mut again = start(&lg, &gl, "ann", "/");
    again
        .browser
        .cookies
        .insert("labgate_session".into(), old.clone());
    let second = again.finish().accepted("/");
    let new = second
        .cookie("labgate_session")
        .expect("a session cookie after the callback");
    assert_ne!(new, old, "the session id was kept");
    // A copy of the old cookie no longer authenticates: it is refused, not anonymous.
    let mut stale = lg.client();
    stale.cookies.insert("labgate_session".into(), old);
    stale.get("/api/users/current").expect_error(401);
}

// ---------------------------------------------------------------------------------------------
// 15. Disabled GitLab

#[test]
fn disabled_gitlab_cannot_be_used() {
    let (lg, gl) = lab(&[("sonar.auth.gitlab.enabled", &["false"])]);
    gitlab_user(&gl, 1001, "ann");
    gl.sign_in_as("ann");
    let before = snapshot(&lg);
    let mut browser = lg.client();
    let r = browser.get("/sessions/init/gitlab?return_to=%2F");
    let page = expect_refused(&mut browser, &r);
    assert_generic(&page);
    assert!(gl.requests().is_empty(), "{:#?}", gl.requests());
    // A sign-in started while enabled cannot finish once disabled.
    set_setting(&lg, "sonar.auth.gitlab.enabled", &["true"]);
    let started = start(&lg, &gl, "ann", "/");
    set_setting(&lg, "sonar.auth.gitlab.enabled", &["false"]);
    started.finish().refused_generic();
    assert!(
        gl.requests_to("/oauth/token").is_empty(),
        "code exchanged while disabled"
    );
    assert_unchanged(&lg, &before);
}

// ---------------------------------------------------------------------------------------------
// Sign-in starts per client network

/// `STARTS_PER_NETWORK` of `src/throttle.rs`.
const STARTS_PER_NETWORK: usize = 300;

fn start_from(lg: &Labgate, forwarded_for: &str) -> u16 {
    lg.client()
        .request(
            "GET",
            "/sessions/init/gitlab",
            &[("X-Forwarded-For", forwarded_for)],
            b"",
        )
        .status
}

#[test]
fn one_network_cannot_start_unbounded_sign_ins_and_others_still_can() {
    let (lg, _gl) = lab_with(Launch::new().arg("--trusted-proxies").arg("127.0.0.1"), &[]);
    for i in 0..STARTS_PER_NETWORK {
        assert_eq!(start_from(&lg, "198.51.100.7"), 302, "start {i}");
    }
    let refused = lg.client().request(
        "GET",
        "/sessions/init/gitlab",
        &[("X-Forwarded-For", "198.51.100.7")],
        b"",
    );
    assert_eq!(refused.status, 429);
    assert!(
        refused.text().contains("Too many sign-ins were started"),
        "{}",
        refused.text()
    );
    assert!(
        refused.set_cookie("labgate_oauth").is_none(),
        "a refused start binds nothing to the browser: {}",
        refused.describe()
    );
    // Another client behind the same proxy is not affected.
    assert_eq!(start_from(&lg, "198.51.100.8"), 302);
    // Without a trusted proxy, loopback peers (a local proxy speaking for everyone) are not
    // counted at all.
    let (plain, _gl2) = lab(&[]);
    for _ in 0..STARTS_PER_NETWORK + 5 {
        assert_eq!(start_from(&plain, "198.51.100.7"), 302);
    }
}

/// The database and its write-ahead log, as bytes on disk.
fn database_bytes(lg: &Labgate) -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str| std::fs::read(lg.data_dir().join(name)).unwrap_or_default();
    (read("labgate.db"), read("labgate.db-wal"))
}

/// Sign-ins in progress are kept in memory: anonymous starts, however many, write nothing to
/// the database file.
#[test]
fn starting_sign_ins_writes_nothing_to_the_database() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    // One sign-in first, so that whatever a first request writes is written.
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    let before = database_bytes(&lg);
    for _ in 0..50 {
        assert_eq!(lg.client().get("/sessions/init/gitlab").status, 302);
    }
    assert!(
        database_bytes(&lg) == before,
        "a start wrote to the database"
    );
    // And the sign-ins started still complete.
    sign_in(&lg, &gl, "ann", "/").accepted("/");
}

/// Rows of the refusal reasons waiting to be shown.
fn refusal_rows(lg: &Labgate) -> i64 {
    rusqlite::Connection::open(lg.data_dir().join("labgate.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM sign_in_refusals", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn anonymous_callbacks_without_a_state_store_nothing() {
    let (lg, _gl) = lab(&[]);
    let before = refusal_rows(&lg);
    for query in [
        "",
        "?state=",
        "?state=unknown&code=x",
        "?error=access_denied",
    ] {
        let mut c = lg.client();
        let r = c.get(&format!("/oauth2/callback/gitlab{query}"));
        assert_eq!(
            r.header("location"),
            Some("/sessions/unauthorized"),
            "{query}: {}",
            r.describe()
        );
        assert!(
            r.set_cookie("labgate_refusal").is_none(),
            "{}",
            r.describe()
        );
        assert_generic(&html_unescape(
            &c.get("/sessions/unauthorized").expect_html(200),
        ));
    }
    assert_eq!(
        refusal_rows(&lg),
        before,
        "a generic refusal stores nothing"
    );
}

#[test]
fn one_network_cannot_call_the_callback_without_bound() {
    let (lg, _gl) = lab_with(Launch::new().arg("--trusted-proxies").arg("127.0.0.1"), &[]);
    let callback = |from: &str| {
        lg.client()
            .request(
                "GET",
                "/oauth2/callback/gitlab?state=forged&code=x",
                &[("X-Forwarded-For", from)],
                b"",
            )
            .status
    };
    for i in 0..STARTS_PER_NETWORK {
        assert_eq!(callback("198.51.100.7"), 302, "callback {i}");
    }
    assert_eq!(callback("198.51.100.7"), 429);
    assert_eq!(
        callback("198.51.100.8"),
        302,
        "another network is not affected"
    );
}

// ---------------------------------------------------------------------------------------------
// The audit log of GitLab sign-ins

/// The GitLab sign-in events, newest first.
fn sign_in_events(lg: &Labgate) -> Vec<Value> {
    crate::audit::events(lg, &[("action", "signin.gitlab")])
}

#[test]
fn a_refused_person_without_an_account_is_found_by_gitlab_username_with_what_gitlab_said() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    gitlab_user(&gl, 1001, "alice");
    gl.add_member("alice", "acme-other", access::OWNER);
    gl.add_member("alice", "beta", access::DEVELOPER);
    sign_in(&lg, &gl, "alice", "/").refused();
    let found = crate::audit::events(&lg, &[("q", "alice")]);
    assert_eq!(found.len(), 1, "{found:#?}");
    let e = &found[0];
    assert_eq!(e["action"], "signin.gitlab");
    assert_eq!(e["outcome"], "refused");
    assert_eq!(e["actor"], Value::Null);
    assert_eq!(e["target"], "alice");
    assert_eq!(e["detail"]["gitlabId"], "1001");
    assert_eq!(
        e["line"],
        "alice refused: You are not allowed to authenticate — GitLab groups: acme-other, beta"
    );
    let page = lg.admin().get("/admin/audit?q=alice").expect_html(200);
    assert!(
        html_unescape(&page).contains(
            "alice refused: You are not allowed to authenticate — GitLab groups: acme-other, beta"
        ),
        "{page}"
    );
}

#[test]
fn an_admitted_sign_in_is_recorded_with_the_account_it_created() {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    lg.create_group("acme");
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme", access::DEVELOPER);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    let all = crate::audit::events(&lg, &[("q", "ann")]);
    let actions: Vec<&str> = all
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.create",
            "membership.add",
            "signin.gitlab",
            "signin.gitlab"
        ],
        "{all:#?}"
    );
    assert!(all
        .iter()
        .all(|e| e["actor"] == "ann" && e["target"] == "ann"));
    assert_eq!(all[0]["detail"]["admittedBy"], "acme");
    assert_eq!(all[2]["detail"]["groups"], json!(["acme"]));
}

#[test]
fn gitlab_supplied_names_are_escaped_on_the_audit_pages() {
    let (lg, gl) = lab(&[]);
    let mut u = crate::support_gitlab::FakeUser::new(1001, "ann");
    u.name = "<script>alert('gitlab')</script>".into();
    gl.add_user(u);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    for path in ["/admin/audit", "/admin/users/edit?login=ann"] {
        let page = lg.admin().get(path).expect_html(200);
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert!(
            html_unescape(&page).contains("<script>alert('gitlab')</script>"),
            "{path}: the name is not shown: {page}"
        );
    }
}

#[test]
fn refusals_of_started_sign_ins_are_recorded_and_stray_callbacks_are_not() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    // A callback nobody started: counted, never written.
    for _ in 0..20 {
        lg.client()
            .get("/oauth2/callback/gitlab?state=0123456789abcdef&code=x")
            .expect(302);
    }
    assert!(sign_in_events(&lg).is_empty());
    // A started sign-in called back by another browser: recorded with its code.
    let started = start(&lg, &gl, "ann", "/");
    let url = started.callback_url.clone();
    let mut other = lg.client();
    other.get(&url).expect(302);
    let recorded = sign_in_events(&lg);
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    assert_eq!(recorded[0]["outcome"], "refused");
    assert_eq!(recorded[0]["reason"], "state-mismatch");
    // GitLab failing: recorded with the kind of failure.
    gl.set_fault(Endpoint::Userinfo, Fault::Status(500));
    sign_in(&lg, &gl, "ann", "/").refused();
    let recorded = sign_in_events(&lg);
    assert_eq!(recorded[0]["reason"], "gitlab-status", "{:#}", recorded[0]);
}

#[test]
fn gitlab_sign_ins_and_calls_are_counted_in_the_metrics() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[("key", "labgate.metrics.enabled"), ("value", "true")],
        )
        .expect(204);
    gitlab_user(&gl, 1001, "ann");
    gl.add_member("ann", "acme", access::DEVELOPER);
    gitlab_user(&gl, 1002, "bob");
    for _ in 0..2 {
        sign_in(&lg, &gl, "ann", "/").accepted("/");
    }
    sign_in(&lg, &gl, "bob", "/").refused();
    let text = lg.client().get("/metrics").text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{name}: not a single value"),
            })
            .sum()
    };
    let gitlab = |outcome, reason| {
        [
            ("provider", "gitlab"),
            ("outcome", outcome),
            ("reason", reason),
        ]
    };
    assert_eq!(value("labgate_sign_ins_total", &gitlab("ok", "-")), 2.0);
    assert_eq!(
        value(
            "labgate_sign_ins_total",
            &gitlab("refused", "not-in-allowed-group")
        ),
        1.0
    );
    let calls = |endpoint| [("endpoint", endpoint), ("outcome", "ok")];
    assert_eq!(value("labgate_gitlab_calls_total", &calls("token")), 3.0);
    assert_eq!(value("labgate_gitlab_calls_total", &calls("userinfo")), 3.0);
    assert!(!text.contains("ann") && !text.contains("bob"), "{text}");
}
