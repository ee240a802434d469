//! End to end in a real browser (Debian's headless Chromium through chromedriver): a person
//! signs in with GitLab from the login page, and an admin turns on group synchronization from
//! the settings page. These tests never skip: without Chromium they fail, and `.ci/run`
//! installs it.

use crate::harness::*;
use crate::support_gitlab::{access, FakeGitlab, FakeUser};
use crate::webdriver::Browser;
use std::time::Duration;

const APP_ID: &str = "browser-app-id";
const APP_SECRET: &str = "browser-app-secret-value";

/// labgate wired to a fake GitLab that knows Ann (member of acme/platform), GitLab enabled.
fn lab() -> (Labgate, FakeGitlab) {
    let gl = FakeGitlab::start();
    // Loopback redirect URIs match whatever the port (RFC 8252), as on GitLab.
    gl.register_app(
        APP_ID,
        APP_SECRET,
        &["http://127.0.0.1/oauth2/callback/gitlab"],
        true,
    );
    let mut ann = FakeUser::new(4242, "ann");
    ann.name = "Ann Lovelace".into();
    ann.password = "ann-gitlab-password".into();
    gl.add_user(ann);
    gl.add_member("ann", "acme/platform", access::DEVELOPER);
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for (key, value) in [
        ("sonar.auth.gitlab.url", gl.url()),
        (
            "sonar.auth.gitlab.applicationId.secured",
            APP_ID.to_string(),
        ),
        ("sonar.auth.gitlab.secret.secured", APP_SECRET.to_string()),
        ("sonar.auth.gitlab.allowedGroups", "acme".to_string()),
        ("sonar.auth.gitlab.enabled", "true".to_string()),
    ] {
        admin
            .post_form("/api/settings/set", &[("key", key), ("value", &value)])
            .expect(204);
    }
    (lg, gl)
}

fn base(lg: &Labgate) -> String {
    format!("http://{}", lg.addr)
}

/// In the browser: login page → "Log in with GitLab" → GitLab's sign-in form → back, signed in.
fn sign_in_with_gitlab(browser: &Browser, lg: &Labgate) {
    browser.goto(&format!("{}/sessions/new", base(lg)));
    browser.click("a.gitlab");
    browser.type_into("#username", "ann");
    browser.type_into("#password", "ann-gitlab-password");
    browser.click("#sign-in");
    browser.wait_url(Duration::from_secs(15), |u| u == format!("{}/", base(lg)));
}

#[test]
fn a_person_signs_in_with_gitlab_in_a_real_browser() {
    let (lg, _gl) = lab();
    let browser = Browser::start();
    sign_in_with_gitlab(&browser, &lg);
    let page = browser.source();
    assert!(page.contains("Welcome, Ann Lovelace"), "{page}");
    assert!(page.contains("GitLab (ann)"), "{page}");
    // The account exists, created just in time, and is a GitLab one.
    let users = lg
        .admin()
        .get_query("/api/users/search", &[("q", "ann")])
        .expect_json(200);
    assert_eq!(users["users"][0]["externalProvider"], "gitlab", "{users}");
    assert_eq!(users["users"][0]["externalIdentity"], "ann", "{users}");
}

#[test]
fn an_admin_turns_on_group_synchronization_from_the_settings_page() {
    let (lg, _gl) = lab();
    lg.create_group("acme/platform");
    let browser = Browser::start();
    // The admin signs in with the local form and ticks "Synchronize user groups".
    browser.goto(&format!("{}/sessions/new", base(&lg)));
    browser.type_into("#login", "admin");
    browser.type_into("#password", ADMIN_PASSWORD);
    browser.click("button.primary");
    browser.wait_url(Duration::from_secs(10), |u| u == format!("{}/", base(&lg)));
    browser.goto(&format!(
        "{}/admin/settings?category=authentication",
        base(&lg)
    ));
    assert!(!browser.is_selected("form.provisioning input[name=groupsSync]"));
    browser.click("form.provisioning input[name=groupsSync]");
    browser.click("form.provisioning button.primary");
    // The answer comes back to the same URL: wait for its confirmation, not for the URL.
    let saved = poll(Duration::from_secs(10), || {
        let page = browser.source();
        page.contains("The provisioning settings were saved.")
            .then_some(())
    });
    assert!(saved.is_some(), "not saved: {}", browser.source());
    assert!(
        browser.is_selected("form.provisioning input[name=groupsSync]"),
        "{}",
        browser.source()
    );
    let values = lg
        .admin()
        .get_query(
            "/api/settings/values",
            &[("keys", "sonar.auth.gitlab.groupsSync")],
        )
        .expect_json(200);
    assert_eq!(values["settings"][0]["value"], "true", "{values}");
    // Ann's next sign-in puts her into the local group named like her GitLab group.
    browser.click("button.link"); // sign out
    browser.wait_url(Duration::from_secs(10), |u| u.contains("/sessions/new"));
    sign_in_with_gitlab(&browser, &lg);
    let page = browser.source();
    assert!(page.contains("acme/platform"), "{page}");
}
