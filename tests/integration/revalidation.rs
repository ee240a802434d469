//! Revalidation of GitLab users against the fake GitLab: a person blocked, deleted, removed from
//! the allowed groups, or who revoked labgate in GitLab loses their session and their API
//! tokens at the next run; a person still admitted has their profile and groups updated; a
//! GitLab that fails changes nothing for anyone; the tokens come back at the next sign-in; the
//! refresh token is never shown, logged or stored in clear; the calls are bounded and
//! `Retry-After` honoured; runs are listed by the API and the GitLab tab.

use crate::gate::register;
use crate::gitlab_flow::{
    gitlab_user, groups_of, lab, lab_with, set_setting, sign_in, user, ALLOW_ACME, APP_ID, SYNC_ON,
};
use crate::harness::*;
use crate::secrets_at_rest::{holds, store_bytes};
use crate::support_gitlab::{access, BlockedUserRefresh, Endpoint, FakeGitlab, Fault};
use serde_json::Value;
use std::time::{Duration, Instant};

const RUNS: &str = "/api/v2/labgate/gitlab-revalidations";

/// A GitLab person, member of `acme`, signed in to labgate: their browser (session) and an API
/// token they generated.
struct Person {
    login: String,
    browser: Client,
    token: String,
}

fn person(lg: &Labgate, gl: &FakeGitlab, id: u64, username: &str) -> Person {
    gitlab_user(gl, id, username);
    gl.add_member(username, "acme", access::DEVELOPER);
    let mut browser = sign_in(lg, gl, username, "/").accepted("/");
    let generated = browser
        .post_form("/api/user_tokens/generate", &[("name", "ci")])
        .expect_json(200);
    let token = generated["token"].as_str().unwrap().to_string();
    Person {
        login: username.to_string(),
        browser,
        token,
    }
}

impl Person {
    /// Whether the session still signs in (`api/user_tokens/search` needs a signed-in user).
    fn session_works(&mut self, lg: &Labgate) -> bool {
        let r = self.browser.get("/api/user_tokens/search");
        assert!(matches!(r.status, 200 | 401), "{}", r.describe());
        let _ = lg;
        r.status == 200
    }

    /// Whether the API token still authenticates.
    /// The gate's answer to the API token for the application at `https://wiki.lab.test`.
    fn gate_status(&self, lg: &Labgate) -> u16 {
        let headers = [
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "wiki.lab.test"),
            ("X-Forwarded-Uri", "/"),
        ];
        let mut c = lg.client().bearer(&self.token);
        c.request("GET", "/gate/forward", &headers, b"").status
    }

    fn token_works(&self, lg: &Labgate) -> bool {
        let r = lg.client().bearer(&self.token).get("/api/users/current");
        assert!(matches!(r.status, 200 | 401), "{}", r.describe());
        r.status == 200 && r.json()["login"] == self.login.as_str()
    }

    #[track_caller]
    fn assert_access(&mut self, lg: &Labgate, expected: bool) {
        assert_eq!(self.session_works(lg), expected, "{}'s session", self.login);
        assert_eq!(self.token_works(lg), expected, "{}'s API token", self.login);
    }
}

/// Runs a revalidation now as admin; the run.
fn revalidate(lg: &Labgate) -> Value {
    lg.admin().post_form(RUNS, &[]).expect_json(200)
}

/// The logins a run cut off.
fn cut_off(run: &Value) -> Vec<String> {
    run["cutOff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["login"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_blocked_user_loses_session_and_token_at_the_next_revalidation() {
    for refresh in [BlockedUserRefresh::Allow, BlockedUserRefresh::InvalidGrant] {
        let (lg, gl) = lab(&[ALLOW_ACME]);
        gl.set_blocked_user_refresh(refresh);
        let mut ann = person(&lg, &gl, 1001, "ann");
        let mut bob = person(&lg, &gl, 1002, "bob");
        ann.assert_access(&lg, true);
        gl.set_user_state("ann", "blocked");
        // Until a run, GitLab's decision is not known: access as before.
        ann.assert_access(&lg, true);
        let run = revalidate(&lg);
        assert_eq!(run["status"], "SUCCESS", "{run}");
        assert_eq!(cut_off(&run), ["ann"], "{refresh:?}: {run}");
        assert_eq!(
            (&run["usersChecked"], &run["sessionsEnded"]),
            (&Value::from(2), &Value::from(1)),
            "{run}"
        );
        ann.assert_access(&lg, false);
        bob.assert_access(&lg, true);
        // Signing in again is refused by GitLab itself while blocked.
        let mut again = sign_in(&lg, &gl, "ann", "/");
        again.refused_generic();
        assert!(!ann.token_works(&lg));
    }
}

#[test]
fn out_of_the_allowed_groups_revoked_or_deleted_in_gitlab_cuts_off() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    let mut ann = person(&lg, &gl, 1001, "ann");
    let mut bob = person(&lg, &gl, 1002, "bob");
    let mut cid = person(&lg, &gl, 1003, "cid");
    let mut dan = person(&lg, &gl, 1004, "dan");
    register(&lg, "wiki", "https://wiki.lab.test", &[]);
    assert_eq!(ann.gate_status(&lg), 200, "the application lets Ann in");
    gl.remove_member("ann", "acme");
    gl.add_member("ann", "elsewhere", access::DEVELOPER);
    gl.revoke_app_authorization("bob", APP_ID);
    gl.delete_user("cid");
    let run = revalidate(&lg);
    let mut gone = cut_off(&run);
    gone.sort();
    assert_eq!(gone, ["ann", "bob", "cid"], "{run}");
    let reasons = run["cutOff"].to_string();
    assert!(reasons.contains("not in allowed groups"), "{reasons}");
    assert!(reasons.contains("invalid_grant"), "{reasons}");
    for p in [&mut ann, &mut bob, &mut cid] {
        p.assert_access(&lg, false);
    }
    dan.assert_access(&lg, true);
    assert_eq!(
        ann.gate_status(&lg),
        401,
        "nor do the applications behind labgate"
    );
    assert_eq!(dan.gate_status(&lg), 200);
    let log = lg.stderr().joined();
    assert!(
        log.contains("login=\"ann\" cut off") && log.contains("sessions ended"),
        "{log}"
    );
}

#[test]
fn gitlab_down_during_revalidation_leaves_everyones_access_as_it_was() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    let mut ann = person(&lg, &gl, 1001, "ann");
    let mut bob = person(&lg, &gl, 1002, "bob");
    // Bob lost access in GitLab, but GitLab is failing: nothing may change, for him either.
    gl.set_user_state("bob", "blocked");
    let faults = [
        (Endpoint::Token, Fault::Status(503), "HTTP 503"),
        (
            Endpoint::Token,
            Fault::CloseConnection,
            "GitLab unreachable",
        ),
        (
            Endpoint::Userinfo,
            Fault::Status(500),
            "userinfo failed for every person tried",
        ),
        (
            Endpoint::Token,
            Fault::RateLimited {
                retry_after: Some(3600),
            },
            "rate limit",
        ),
    ];
    for (endpoint, fault, expected) in faults {
        gl.clear_faults();
        gl.set_fault(endpoint, fault.clone());
        let before = snapshot_users(&lg);
        let run = revalidate(&lg);
        assert_eq!(run["status"], "FAILED", "{fault:?}: {run}");
        let error = run["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{fault:?}: {error}");
        assert_eq!(run["usersCutOff"], 0, "{run}");
        ann.assert_access(&lg, true);
        bob.assert_access(&lg, true);
        assert_eq!(snapshot_users(&lg), before, "{fault:?}");
    }
    // GitLab back: the run goes through, and the refresh tokens rotated meanwhile still work.
    gl.clear_faults();
    let run = revalidate(&lg);
    assert_eq!(
        (run["status"].as_str(), cut_off(&run)),
        (Some("SUCCESS"), vec!["bob".to_string()]),
        "{run}"
    );
    ann.assert_access(&lg, true);
    let listed = lg.admin().get(RUNS).expect_json(200);
    let statuses: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["SUCCESS", "FAILED", "FAILED", "FAILED", "FAILED"]
    );
}

/// Users and their groups as the admin API shows them.
fn snapshot_users(lg: &Labgate) -> Value {
    lg.admin()
        .get_query("/api/users/search", &[("ps", "500")])
        .expect_json(200)["users"]
        .clone()
}

#[test]
fn a_person_readded_in_gitlab_gets_their_tokens_back_at_their_next_sign_in() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    let mut ann = person(&lg, &gl, 1001, "ann");
    gl.remove_member("ann", "acme");
    assert_eq!(cut_off(&revalidate(&lg)), ["ann"]);
    ann.assert_access(&lg, false);
    gl.add_member("ann", "acme", access::DEVELOPER);
    assert!(
        !ann.token_works(&lg),
        "held until a sign-in, not until GitLab changes"
    );
    let admin_view = html_unescape(
        &lg.admin()
            .get("/admin/users/edit?login=ann")
            .expect_html(200),
    );
    assert!(
        admin_view.contains("their API tokens are refused until")
            && admin_view.contains("not in allowed groups"),
        "{admin_view}"
    );
    let mut browser = sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert!(ann.token_works(&lg), "the token works again");
    assert_eq!(browser.get("/api/user_tokens/search").status, 200);
    assert!(revalidate(&lg)["cutOff"].as_array().unwrap().is_empty());
    assert!(ann.token_works(&lg));
}

#[test]
fn still_admitted_people_get_their_profile_and_groups_updated() {
    let (lg, gl) = lab(&[ALLOW_ACME, SYNC_ON]);
    for group in ["acme", "acme/lab", "acme/ops"] {
        lg.create_group(group);
    }
    let mut ann = person(&lg, &gl, 1001, "ann");
    gl.add_member("ann", "acme/lab", access::DEVELOPER);
    assert_eq!(groups_of(&lg, "ann"), ["acme", "users"]);
    gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    gl.remove_member("ann", "acme");
    gl.add_member("ann", "acme/ops", access::DEVELOPER);
    let run = revalidate(&lg);
    assert_eq!(
        (run["usersUpdated"].as_i64(), run["usersCutOff"].as_i64()),
        (Some(1), Some(0)),
        "{run}"
    );
    assert_eq!(user(&lg, "ann")["name"], "Ann Renamed");
    assert_eq!(groups_of(&lg, "ann"), ["acme/lab", "acme/ops", "users"]);
    ann.assert_access(&lg, true);
    let run = revalidate(&lg);
    assert_eq!(run["usersUpdated"], 0, "nothing changed since: {run}");
}

#[test]
fn the_refresh_token_is_in_no_answer_page_log_line_or_database_file() {
    let (lg, gl) = lab_with(Launch::new().env("LABGATE_LOG", "debug"), &[ALLOW_ACME]);
    let mut ann = person(&lg, &gl, 1001, "ann");
    person(&lg, &gl, 1002, "bob");
    gl.remove_member("bob", "acme");
    let run = revalidate(&lg);
    assert_eq!(cut_off(&run), ["bob"]);
    let refresh_tokens = gl.issued_refresh_tokens();
    assert!(
        refresh_tokens.len() >= 4,
        "sign-ins and refreshes: {refresh_tokens:?}"
    );
    let mut admin = lg.admin();
    let seen = [
        run.to_string(),
        admin.get(RUNS).text(),
        admin.get("/admin/settings?category=authentication").text(),
        admin.get("/admin/users/edit?login=ann").text(),
        admin.get_query("/api/users/search", &[("q", "ann")]).text(),
        ann.browser.get("/account").text(),
        ann.browser.get("/api/users/current").text(),
    ];
    let log = lg.stderr().joined();
    let stored = store_bytes(&lg.data_dir());
    for token in &refresh_tokens {
        for answer in &seen {
            assert!(
                !answer.contains(token.as_str()),
                "a refresh token in an answer: {answer}"
            );
        }
        assert!(!log.contains(token.as_str()), "a refresh token in the log");
        assert!(
            !holds(&stored, token),
            "a refresh token in the database file"
        );
    }
    for token in gl.issued_access_tokens() {
        assert!(!log.contains(token.as_str()) && !holds(&stored, &token));
    }
}

#[test]
fn at_most_four_calls_at_once_and_retry_after_is_honoured() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    let people: Vec<Person> = (0..10)
        .map(|i| person(&lg, &gl, 2000 + i, &format!("p{i}")))
        .collect();
    gl.set_fault(Endpoint::Userinfo, Fault::Delay(Duration::from_millis(150)));
    gl.set_fault(Endpoint::Token, Fault::Delay(Duration::from_millis(150)));
    gl.reset_max_in_flight();
    let run = revalidate(&lg);
    assert_eq!(
        (run["status"].as_str(), run["usersChecked"].as_i64()),
        (Some("SUCCESS"), Some(10))
    );
    assert!(
        (2..=4).contains(&gl.max_in_flight()),
        "calls at once: {}",
        gl.max_in_flight()
    );

    gl.clear_faults();
    let tokens_before = gl.call_count(Endpoint::Token);
    gl.set_fault_on_call(
        Endpoint::Token,
        1,
        Fault::RateLimited {
            retry_after: Some(2),
        },
    );
    let t0 = Instant::now();
    let run = revalidate(&lg);
    let took = t0.elapsed();
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert!(took >= Duration::from_secs(2), "waited {took:?}");
    assert_eq!(
        gl.call_count(Endpoint::Token) - tokens_before,
        11,
        "the limited call made again once"
    );
    for p in &people {
        assert!(p.token_works(&lg));
    }
}

#[test]
fn runs_are_for_admins_one_at_a_time_and_listed_with_the_next_one() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    let ann = person(&lg, &gl, 1001, "ann");
    lg.client()
        .bearer(&ann.token)
        .post_form(RUNS, &[])
        .expect(403);
    lg.client().get(RUNS).expect(401);
    let listed = lg.admin().get(RUNS).expect_json(200);
    assert_eq!(listed["intervalMinutes"], 15);
    assert!(listed["nextRunAt"].is_string(), "{listed}");
    assert_eq!(listed["runs"], Value::Array(vec![]));

    gl.set_fault(Endpoint::Token, Fault::Delay(Duration::from_millis(1500)));
    let mut admin = lg.admin();
    let slow = std::thread::spawn(move || admin.post_form(RUNS, &[]));
    let running = poll(Duration::from_secs(5), || {
        let v = lg.admin().get(RUNS).expect_json(200);
        (v["running"] == true).then_some(v)
    });
    assert!(running.is_some(), "the first run shows as running");
    let second = lg.admin().post_form(RUNS, &[]);
    assert_eq!(second.status, 409, "{}", second.describe());
    assert!(second.expect_error(409).contains("running"));
    assert_eq!(slow.join().unwrap().expect_json(200)["status"], "SUCCESS");

    set_setting(&lg, "labgate.gitlab.revalidateMinutes", &["0"]);
    let listed = lg.admin().get(RUNS).expect_json(200);
    assert_eq!(listed["nextRunAt"], Value::Null, "off: {listed}");
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    let bad = lg.admin().post_form(
        "/api/settings/set",
        &[("key", "labgate.gitlab.revalidateMinutes"), ("value", "3")],
    );
    assert!(bad.expect_error(400).contains("0 (off)"));
}

/// Presses "Revalidate now" with the page's CSRF field and follows the redirect: the tab.
fn press_revalidate_now(admin: &mut Client, csrf: &str) -> String {
    let r = admin.post_form("/admin/settings/gitlab/revalidate", &[("csrf_token", csrf)]);
    let back = r.expect_redirect();
    html_unescape(&admin.get(&back).expect_html(200))
}

#[track_caller]
fn assert_shows(page: &str, texts: &[&str]) {
    for text in texts {
        assert!(page.contains(text), "{text:?} not on the page:\n{page}");
    }
}

#[test]
fn revalidate_now_on_the_gitlab_tab_shows_the_run() {
    let (lg, gl) = lab(&[ALLOW_ACME]);
    person(&lg, &gl, 1001, "ann");
    person(&lg, &gl, 1002, "bob");
    gl.remove_member("ann", "acme");
    let mut admin = lg.admin_client().with_xsrf(false);
    let page = admin
        .get("/admin/settings?category=authentication")
        .expect_html(200);
    assert_shows(&page, &["Revalidate now", "id=\"gitlab-revalidation\""]);
    let csrf = csrf_field(&page).unwrap();
    let r = admin.post_form("/admin/settings/gitlab/revalidate", &[]);
    assert_eq!(r.status, 403, "the CSRF token is needed: {}", r.describe());
    let page = press_revalidate_now(&mut admin, &csrf);
    assert_shows(
        &page,
        &[
            "Revalidation done: 2 GitLab users checked, 0 updated, 1 cut off.",
            "ann (no longer admitted by the sign-in rules: not in allowed groups)",
            "SUCCESS",
            "manual",
        ],
    );
    gl.set_fault(Endpoint::Token, Fault::Status(502));
    let page = press_revalidate_now(&mut admin, &csrf);
    assert_shows(
        &page,
        &[
            "The revalidation failed: nothing changed for anyone",
            "FAILED",
            "HTTP 502",
        ],
    );
}
