//! Automatic provisioning end to end: labgate reads the fake GitLab's groups and members with a
//! group access token, on switching to it and on demand, through the API and the GitLab tab.
//! Each test checks accounts, groups and memberships afterwards through the admin API, so that
//! "nothing changed" is verified, not assumed; every labgate runs with every log line on, and
//! the token is looked for in every answer, page and log line.

use crate::gitlab_flow::{sign_in, NOT_ALLOWED};
use crate::harness::*;
use crate::support_gitlab::{access, Endpoint, FakeGitlab, FakeUser, Fault};
use serde_json::{json, Value};
use std::time::Duration;

/// labgate's OAuth application in the fake GitLab.
const APP_ID: &str = "prov-app-id";
const APP_SECRET: &str = "prov-app-secret-7c1e";
/// The v2 resources: the configurations, the one configuration, the runs.
const CONFIGS: &str = "/api/v2/dop-translation/gitlab-configurations";
const CONFIG: &str = "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration";
const RUNS: &str = "/api/v2/dop-translation/gitlab-synchronization-runs";
/// The GitLab tab.
const TAB: &str = "/admin/settings?category=authentication";

/// labgate, the fake GitLab it provisions from, and the provisioning token.
struct Lab {
    lg: Labgate,
    gl: FakeGitlab,
    token: String,
}

fn person(gl: &FakeGitlab, id: u64, username: &str, group: &str) {
    gl.add_user(FakeUser {
        name: format!("{username} Lovelace"),
        ..FakeUser::new(id, username)
    });
    gl.add_member(username, group, access::DEVELOPER);
}

/// `acme` with `acme/dev`, `acme/dev/sre` and `acme/ops`: ann in acme/dev, bob in acme/ops,
/// carol blocked in acme/ops, dave in acme; `other` beside it with erin; and a group access
/// token on `acme` (its bot is a member of acme too).
fn gitlab() -> (FakeGitlab, String) {
    let gl = FakeGitlab::start_with_loopback_app(APP_ID, APP_SECRET);
    gl.add_group("acme/dev/sre");
    person(&gl, 7, "ann", "acme/dev");
    person(&gl, 8, "bob", "acme/ops");
    person(&gl, 9, "carol", "acme/ops");
    gl.set_user_state("carol", "blocked");
    person(&gl, 10, "dave", "acme");
    person(&gl, 11, "erin", "other");
    let (token, _bot) =
        gl.add_group_access_token("acme", "labgate", "read_api", access::REPORTER, None);
    (gl, token)
}

/// GitLab sign-in configured for the fake, allowed group `acme`, Just-in-Time.
fn jit_lab() -> Lab {
    let (gl, token) = gitlab();
    let lg = Launch::new().env("LABGATE_LOG", "debug").start();
    let body = json!({
        "enabled": true, "url": gl.url(), "applicationId": APP_ID, "secret": APP_SECRET,
        "allowedGroups": ["acme"], "allowUsersToSignUp": true,
    });
    lg.admin().post_json(CONFIGS, &body).expect_json(200);
    Lab { lg, gl, token }
}

/// [`jit_lab`] switched to automatic provisioning, its first run finished.
fn lab() -> Lab {
    let lab = jit_lab();
    let first = lab.switch_on();
    assert_eq!(first["status"], "SUCCESS", "{first}");
    lab
}

impl Lab {
    /// Switches to automatic provisioning through the v2 resource and waits for the run that
    /// starts at once.
    fn switch_on(&self) -> Value {
        let body =
            json!({"provisioningType": "AUTO_PROVISIONING", "provisioningToken": self.token});
        let r = self.lg.admin().request(
            "PATCH",
            CONFIG,
            &[("Content-Type", "application/merge-patch+json")],
            body.to_string().as_bytes(),
        );
        let config = r.expect_json(200);
        assert_eq!(config["provisioningType"], "AUTO_PROVISIONING", "{config}");
        assert_eq!(config["isProvisioningTokenSet"], true, "{config}");
        let run = self.wait_for_run(0);
        assert_eq!(run["trigger"], "MODE_CHANGE", "{run}");
        run
    }

    /// `PATCH` of the GitLab configuration with `body`, as admin.
    fn patch(&self, body: &Value) -> Resp {
        self.lg.admin().request(
            "PATCH",
            CONFIG,
            &[("Content-Type", "application/merge-patch+json")],
            body.to_string().as_bytes(),
        )
    }

    /// The answer of `GET …/gitlab-synchronization-runs`.
    fn runs(&self) -> Value {
        self.lg.admin().get(RUNS).expect_json(200)
    }

    fn finished_runs(&self) -> usize {
        self.runs()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] != "RUNNING")
            .count()
    }

    /// Waits until more than `before` runs have finished and none is running; the newest.
    #[track_caller]
    fn wait_for_run(&self, before: usize) -> Value {
        poll(Duration::from_secs(30), || {
            let all = self.runs();
            let runs = all["runs"].as_array().unwrap();
            let finished = runs.iter().filter(|r| r["status"] != "RUNNING").count();
            (finished > before && runs[0]["status"] != "RUNNING").then(|| runs[0].clone())
        })
        .unwrap_or_else(|| panic!("no run finished: {}", self.runs()))
    }

    /// "Synchronize now" through the API (`force`: apply a held run); the run, finished.
    #[track_caller]
    fn run_now(&self, force: bool) -> Value {
        let before = self.finished_runs();
        let body = if force {
            json!({"force": true})
        } else {
            json!({})
        };
        let r = self.lg.admin().post_json(RUNS, &body);
        assert_eq!(r.status, 202, "{}", r.describe());
        self.wait_for_run(before)
    }

    /// Whether the account is active (`None`: no such account).
    fn active(&self, login: &str) -> Option<bool> {
        for deactivated in ["false", "true"] {
            let found = self
                .lg
                .admin()
                .get_query(
                    "/api/users/search",
                    &[("q", login), ("deactivated", deactivated)],
                )
                .expect_json(200);
            if logins(&found["users"]).iter().any(|l| l == login) {
                return Some(deactivated == "false");
            }
        }
        None
    }

    /// The logins in a group, sorted.
    fn members(&self, group: &str) -> Vec<String> {
        let r = self
            .lg
            .admin()
            .get_query("/api/user_groups/users", &[("name", group), ("ps", "500")]);
        if r.status == 404 {
            return Vec::new();
        }
        let mut logins: Vec<String> = r.expect_json(200)["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["login"].as_str().unwrap().to_string())
            .collect();
        logins.sort();
        logins
    }

    /// Every group name, sorted.
    fn groups(&self) -> Vec<String> {
        let found = self
            .lg
            .admin()
            .get_query("/api/user_groups/search", &[("ps", "500")])
            .expect_json(200);
        let mut names = names(&found["groups"]);
        names.sort();
        names
    }

    /// Accounts, groups and memberships as the API shows them: compared before and after.
    fn snapshot(&self) -> Value {
        let groups = self.groups();
        let members: Vec<Value> = groups
            .iter()
            .map(|g| json!({ g.as_str(): self.members(g) }))
            .collect();
        let users = |deactivated: &str| {
            self.lg
                .admin()
                .get_query(
                    "/api/users/search",
                    &[("deactivated", deactivated), ("ps", "500")],
                )
                .expect_json(200)["users"]
                .clone()
        };
        json!({"groups": groups, "members": members, "active": users("false"), "deactivated": users("true")})
    }

    /// The token appears in no answer, page or log line.
    #[track_caller]
    fn assert_token_nowhere(&self) {
        let mut seen = vec![
            self.lg.admin().get(CONFIG).text(),
            self.lg.admin().get(CONFIGS).text(),
            self.lg.admin().get("/api/settings/values").text(),
            self.runs().to_string(),
            self.lg.admin().get(TAB).text(),
            self.lg
                .admin()
                .request("POST", "/api/v2/labgate/gitlab-checks", &[], b"")
                .text(),
            self.lg.stderr().joined(),
            self.lg.stdout().joined(),
        ];
        seen.retain(|text| text.contains(&self.token));
        assert!(seen.is_empty(), "the token was shown: {seen:?}");
    }
}

#[test]
fn switching_to_automatic_provisioning_mirrors_the_allowed_groups_at_once() {
    let lab = jit_lab();
    let run = lab.switch_on();
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(
        (run["groupsRead"].clone(), run["usersRead"].clone()),
        (json!(4), json!(3)),
        "{run}"
    );
    assert_eq!(run["changes"]["usersCreated"], 3, "{run}");
    assert_eq!(run["changes"]["groupsCreated"], 4, "{run}");
    for key in ["id", "startedAt", "finishedAt", "error", "changes"] {
        assert!(run.get(key).is_some(), "{key} missing: {run}");
    }
    for (login, state) in [
        ("ann", Some(true)),
        ("bob", Some(true)),
        ("dave", Some(true)),
    ] {
        assert_eq!(lab.active(login), state, "{login}");
    }
    assert_eq!(
        lab.active("carol"),
        None,
        "a blocked member is not provisioned"
    );
    assert_eq!(lab.active("erin"), None, "outside the allowed groups");
    assert!(
        !lab.snapshot().to_string().contains("_bot_"),
        "the token's bot is not provisioned"
    );
    assert_eq!(
        lab.groups(),
        [
            "acme",
            "acme/dev",
            "acme/dev/sre",
            "acme/ops",
            "administrators",
            "users"
        ]
    );
    assert_eq!(lab.members("acme/dev"), ["ann", "dave"]);
    assert_eq!(
        lab.members("acme/dev/sre"),
        ["ann", "dave"],
        "subgroups inherit"
    );
    assert_eq!(lab.members("acme"), ["dave"], "never the parent groups");
    assert_eq!(lab.members("users"), ["admin", "ann", "bob", "dave"]);
    let next = lab.runs();
    assert!(next["nextRunAt"].is_string(), "{next}");
    lab.assert_token_nowhere();
}

#[test]
fn a_second_run_with_nothing_changed_changes_nothing() {
    let lab = lab();
    let before = lab.snapshot();
    let run = lab.run_now(false);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["trigger"], "MANUAL");
    assert!(
        run["changes"].as_object().unwrap().values().all(|v| v == 0),
        "{run}"
    );
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn people_blocked_or_removed_in_gitlab_lose_their_session_and_tokens_at_the_next_run() {
    let lab = lab();
    let ann = lab.lg.token_for("ann");
    let bob = lab.lg.token_for("bob");
    for token in [&ann, &bob] {
        let me = lab.lg.client().bearer(token).get("/api/users/current");
        assert_eq!(me.expect_json(200)["isLoggedIn"], true);
    }
    lab.gl.set_user_state("ann", "blocked");
    lab.gl.remove_member("bob", "acme/ops");
    let run = lab.run_now(false);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["changes"]["usersDeactivated"], 2, "{run}");
    for token in [&ann, &bob] {
        let r = lab.lg.client().bearer(token).get("/api/users/current");
        assert_eq!(r.status, 401, "{}", r.describe());
    }
    assert_eq!(
        (lab.active("ann"), lab.active("bob")),
        (Some(false), Some(false))
    );
    assert!(lab.members("acme/dev").iter().all(|m| m != "ann"));
    let log = lab.lg.stderr().joined();
    assert!(
        log.contains("deactivated login=\"ann\"") && log.contains("deactivated login=\"bob\""),
        "{log}"
    );
    // The audit log tells why: deactivated by provisioning, in the run that did it.
    let events = crate::audit::events(&lab.lg, &[("action", "user.deactivate")]);
    for login in ["ann", "bob"] {
        let e = events
            .iter()
            .find(|e| e["target"] == login)
            .unwrap_or_else(|| panic!("no deactivation of {login}: {events:#?}"));
        assert_eq!(e["detail"]["by"], "provisioning", "{e}");
    }
    let runs = crate::audit::events(&lab.lg, &[("action", "provisioning.run")]);
    assert_eq!(runs[0]["outcome"], "ok", "{runs:#?}");
    assert_eq!(runs[0]["detail"]["changes"]["usersDeactivated"], 2);
    // Back in GitLab: reactivated, in their groups again (their old tokens stay revoked).
    lab.gl.set_user_state("ann", "active");
    let run = lab.run_now(false);
    assert_eq!(run["changes"]["usersReactivated"], 1, "{run}");
    assert_eq!(lab.active("ann"), Some(true));
    assert_eq!(lab.members("acme/dev"), ["ann", "dave"]);
    assert_eq!(
        lab.lg
            .client()
            .bearer(&ann)
            .get("/api/users/current")
            .status,
        401
    );
}

#[test]
fn a_page_failing_in_the_middle_of_a_run_changes_nothing() {
    let lab = lab();
    for i in 0..150u64 {
        person(&lab.gl, 1_000 + i, &format!("m{i:03}"), "acme/ops");
    }
    let filled = lab.run_now(false);
    assert_eq!(filled["changes"]["usersCreated"], 150, "{filled}");
    lab.gl.remove_member("bob", "acme/ops");
    person(&lab.gl, 12, "frank", "acme/dev");
    lab.gl.update_user("ann", |u| u.name = "Ann Renamed".into());
    let before = lab.snapshot();
    lab.gl
        .set_fault_on_group_page(Endpoint::Members, "acme/ops", 2, Fault::Status(502), false);
    let run = lab.run_now(false);
    assert_eq!(run["status"], "FAILED", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("acme/ops") && error.contains("502"),
        "{error}"
    );
    assert!(
        run["changes"].as_object().unwrap().values().all(|v| v == 0),
        "{run}"
    );
    assert_eq!(lab.snapshot(), before, "nothing changed");
    lab.gl.clear_faults();
    let run = lab.run_now(false);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(lab.active("bob"), Some(false));
    assert_eq!(lab.active("frank"), Some(true));
}

/// After a restart the admin signs in again, so their last connection moves: anything else
/// that moved since `before` fails the test.
#[track_caller]
fn assert_nothing_changed_but_connections(lab: &Lab, before: Value) {
    let without_connections = |mut v: Value| {
        for user in v["active"].as_array_mut().unwrap() {
            user.as_object_mut().unwrap().remove("lastConnectionDate");
        }
        v
    };
    assert_eq!(
        without_connections(lab.snapshot()),
        without_connections(before),
        "nothing changed"
    );
}

/// A run started on demand that reads GitLab slowly (each member listing answers in 1.5 s)
/// and would give frank, added in GitLab, an account; with what was stored before it and how
/// many runs had finished.
fn a_run_reading_slowly() -> (Lab, Value, usize) {
    let lab = lab();
    person(&lab.gl, 12, "frank", "acme/dev");
    let before = lab.snapshot();
    let finished = lab.finished_runs();
    lab.gl
        .set_fault(Endpoint::Members, Fault::Delay(Duration::from_millis(1500)));
    let r = lab.lg.admin().post_json(RUNS, &json!({}));
    assert_eq!(r.status, 202, "{}", r.describe());
    (lab, before, finished)
}

/// SIGTERM while a run reads GitLab: the run stops reading, writes nothing it read, and is
/// recorded as stopped, so that the next start shows it rather than nothing; labgate still
/// exits with 0.
#[test]
fn a_run_cut_short_by_a_stop_is_recorded_and_writes_nothing() {
    let (mut lab, before, finished) = a_run_reading_slowly();
    assert_eq!(lab.runs()["runs"][0]["status"], "RUNNING");
    lab.lg.restart();
    lab.gl.clear_faults();
    let runs = lab.runs();
    let last = &runs["runs"][0];
    assert_eq!(last["status"], "FAILED", "{runs}");
    assert_eq!(
        last["error"], "labgate was stopped during the run: nothing it read was written",
        "{runs}"
    );
    assert_eq!(lab.finished_runs(), finished + 1, "{runs}");
    assert_nothing_changed_but_connections(&lab, before);
    assert_eq!(lab.active("frank"), None);
    assert!(
        lab.lg.stderr().joined().contains("stopped during the run"),
        "the run's log line says why"
    );
}

/// kill -9 while a run reads GitLab: the run has no chance to record how it ended, but it was
/// recorded when it started, so the next start finds it and records it as failed, with its
/// audit event; nothing it read was written.
#[test]
fn a_run_cut_short_by_a_kill_is_recorded_as_failed_at_the_next_start() {
    let (mut lab, before, finished) = a_run_reading_slowly();
    crate::metrics::enable(&lab.lg);
    // Shown as running at once; recorded, with its id, as soon as its thread starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let id = loop {
        let runs = lab.runs();
        let running = &runs["runs"][0];
        assert_eq!(running["status"], "RUNNING", "{runs}");
        if let Some(id) = running["id"].as_str() {
            break id.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded: {runs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let page = html_unescape(&lab.lg.admin().get(TAB).expect_html(200));
    assert!(
        page.contains("groups read so far"),
        "the tab shows the recorded run's progress: {page}"
    );
    lab.lg.kill_and_restart();
    lab.gl.clear_faults();
    let runs = lab.runs();
    let last = &runs["runs"][0];
    const CUT_SHORT: &str =
        "labgate stopped before the run ended (stopped, crashed or killed): nothing it read was written";
    assert_eq!(
        (&last["id"], &last["status"], &last["error"]),
        (&json!(id), &json!("FAILED"), &json!(CUT_SHORT)),
        "{runs}"
    );
    assert!(last["finishedAt"].is_string(), "{runs}");
    assert_eq!(lab.finished_runs(), finished + 1, "{runs}");
    let events = crate::audit::events(&lab.lg, &[("action", "provisioning.run")]);
    let event = &events[0];
    assert_eq!(
        (
            &event["outcome"],
            &event["reason"],
            event["detail"]["run"].to_string()
        ),
        (&json!("failed"), &json!(CUT_SHORT), id.clone()),
        "{events:?}"
    );
    assert_nothing_changed_but_connections(&lab, before);
    assert_eq!(lab.active("frank"), None);
    assert!(
        lab.lg.stderr().joined().contains(CUT_SHORT),
        "the start's log line says why"
    );
    let failed = [("outcome", "failed")];
    let scrape = crate::metrics::scrape(&lab.lg);
    assert_eq!(
        crate::metrics::value(&scrape, "labgate_provisioning_runs_total", &failed),
        1.0,
        "counted by the process that recorded it"
    );
    // The next run goes as usual.
    let run = lab.run_now(false);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(lab.active("frank"), Some(true));
}

#[test]
fn a_run_deactivating_too_many_is_held_until_an_administrator_applies_it() {
    let lab = jit_lab();
    for i in 0..10u64 {
        person(&lab.gl, 100 + i, &format!("p{i}"), "acme/dev");
    }
    lab.switch_on();
    for i in 0..7 {
        lab.gl.remove_member(&format!("p{i}"), "acme/dev");
    }
    let before = lab.snapshot();
    let r = lab.lg.admin().post_json(RUNS, &json!({"force": true}));
    assert_eq!(r.status, 400, "nothing held yet: {}", r.describe());
    let run = lab.run_now(false);
    assert_eq!(run["status"], "HELD", "{run}");
    assert_eq!(
        logins(&run["heldDeactivations"]),
        ["p0", "p1", "p2", "p3", "p4", "p5", "p6"],
        "{run}"
    );
    assert!(
        run["error"].as_str().unwrap().contains("more than 20 %"),
        "{run}"
    );
    assert_eq!(lab.snapshot(), before, "nothing changed while held");
    let page = html_unescape(&lab.lg.admin().get(TAB).expect_html(200));
    assert!(
        page.contains("Apply anyway") && page.contains("p6"),
        "{page}"
    );
    let applied = lab.run_now(true);
    assert_eq!(applied["status"], "SUCCESS", "{applied}");
    assert_eq!(applied["changes"]["usersDeactivated"], 7, "{applied}");
    assert_eq!(lab.active("p0"), Some(false));
    assert_eq!(lab.active("p9"), Some(true));
}

#[test]
fn an_account_an_administrator_deactivated_stays_deactivated() {
    let lab = lab();
    lab.lg
        .admin()
        .post_form("/api/users/deactivate", &[("login", "ann")])
        .expect_json(200);
    let run = lab.run_now(false);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["changes"]["usersReactivated"], 0, "{run}");
    assert_eq!(lab.active("ann"), Some(false));
}

#[test]
fn sign_in_admits_only_the_active_accounts_provisioning_read() {
    let lab = lab();
    sign_in(&lab.lg, &lab.gl, "ann", "/").accepted("/");
    // In GitLab's groups but not read yet: no account is made at sign-in.
    person(&lab.gl, 12, "frank", "acme/dev");
    let page = sign_in(&lab.lg, &lab.gl, "frank", "/").refused();
    assert!(page.contains(NOT_ALLOWED), "{page}");
    assert_eq!(lab.active("frank"), None);
    lab.run_now(false);
    sign_in(&lab.lg, &lab.gl, "frank", "/").accepted("/");
    // Deactivated by provisioning: refused as unknown.
    lab.gl.remove_member("frank", "acme/dev");
    lab.run_now(false);
    let page = sign_in(&lab.lg, &lab.gl, "frank", "/").refused();
    assert!(page.contains(NOT_ALLOWED), "{page}");
}

#[test]
fn one_run_at_a_time_and_the_running_one_shows_its_progress() {
    let lab = lab();
    lab.gl
        .set_fault(Endpoint::Members, Fault::Delay(Duration::from_millis(600)));
    let before = lab.finished_runs();
    let r = lab.lg.admin().post_json(RUNS, &json!({}));
    assert_eq!(r.status, 202, "{}", r.describe());
    let second = lab.lg.admin().post_json(RUNS, &json!({}));
    assert_eq!(second.status, 409, "{}", second.describe());
    let running = lab.runs()["runs"][0].clone();
    assert_eq!(running["status"], "RUNNING", "{running}");
    assert!(running["progress"]["groupsKnown"].is_number(), "{running}");
    let page = html_unescape(&lab.lg.admin().get(TAB).expect_html(200));
    assert!(page.contains("A synchronization is running."), "{page}");
    assert_eq!(lab.wait_for_run(before)["status"], "SUCCESS");
}

#[test]
fn only_administrators_run_and_see_runs_and_only_while_it_is_on() {
    let lab = jit_lab();
    let r = lab.lg.admin().post_json(RUNS, &json!({}));
    assert_eq!(r.status, 400, "{}", r.describe());
    assert!(
        r.text().contains("Automatic provisioning is off"),
        "{}",
        r.text()
    );
    let mut user = lab.lg.user_with_token("plain");
    assert_eq!(user.get(RUNS).status, 403);
    assert_eq!(user.post_json(RUNS, &json!({})).status, 403);
}

#[test]
fn synchronize_now_on_the_gitlab_tab_runs_and_the_tab_shows_the_last_run() {
    let lab = lab();
    let mut admin = lab.lg.admin();
    let page = admin.get(TAB).expect_html(200);
    assert!(page.contains("Synchronize now") && page.contains("Next scheduled run"));
    let csrf = csrf_field(&page).expect("csrf");
    let before = lab.finished_runs();
    let r = admin.post_form(
        "/admin/settings/gitlab/synchronize",
        &[("csrf_token", &csrf)],
    );
    assert_eq!(r.status, 303, "{}", r.describe());
    let run = lab.wait_for_run(before);
    assert_eq!(run["trigger"], "MANUAL");
    let page = html_unescape(&admin.get(TAB).expect_html(200));
    assert!(
        page.contains("on demand") && page.contains("no change"),
        "{page}"
    );
}

/// A check's detail.
fn detail(check: &Value) -> &str {
    check["detail"].as_str().unwrap_or_default()
}

#[test]
fn the_connection_check_checks_the_provisioning_token() {
    let lab = lab();
    let check = |lab: &Lab| -> Value {
        let v = lab
            .lg
            .admin()
            .request("POST", "/api/v2/labgate/gitlab-checks", &[], b"")
            .expect_json(200);
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "provisioningToken")
            .cloned()
            .unwrap_or_else(|| panic!("no provisioningToken check: {v}"))
    };
    let ok = check(&lab);
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(detail(&ok).contains("acme"), "{ok}");
    let soon = lab.gl.date_in_days(3);
    let (expiring, _) =
        lab.gl
            .add_group_access_token("acme", "soon", "read_api", access::REPORTER, Some(&soon));
    let patch = |token: &str| {
        lab.patch(&json!({ "provisioningToken": token }))
            .expect_json(200);
    };
    // (whether the check passes, what its detail says)
    let expect = |ok: bool, says: &str| {
        let found = check(&lab);
        assert_eq!(found["ok"], ok, "{found}");
        assert!(detail(&found).contains(says), "{found}");
    };
    patch(&expiring);
    expect(true, "warning: the provisioning token expires");
    lab.gl.revoke_access_token(&expiring);
    expect(false, "revoked");
    let (narrow, _) =
        lab.gl
            .add_group_access_token("other", "narrow", "read_api", access::REPORTER, None);
    patch(&narrow);
    expect(false, "cannot see the allowed group acme");
    let run = lab.run_now(false);
    assert_eq!(
        run["status"], "FAILED",
        "a token that cannot see acme changes nothing: {run}"
    );
    assert_eq!(lab.active("ann"), Some(true));
    for token in [&expiring, &narrow] {
        assert!(!lab.lg.stderr().joined().contains(token.as_str()));
    }
}

#[test]
fn the_provisioning_token_is_write_only_on_every_door() {
    let lab = lab();
    let values = lab
        .lg
        .admin()
        .get_query(
            "/api/settings/values",
            &[("keys", "provisioning.gitlab.token.secured")],
        )
        .expect_json(200);
    assert_eq!(
        values["setSecuredSettings"],
        json!(["provisioning.gitlab.token.secured"]),
        "{values}"
    );
    let page = html_unescape(&lab.lg.admin().get(TAB).expect_html(200));
    assert!(page.contains("set; leave empty to keep it"), "{page}");
    lab.assert_token_nowhere();
    let r = lab.patch(&json!({"url": "http://127.0.0.1:9", "secret": APP_SECRET}));
    assert_eq!(
        r.expect_error(400),
        "For security reasons, the URL can't be updated without providing the provisioning token."
    );
}

/// A database restored without its key file: the provisioning token stored no longer opens.
/// The tab says so and how to fix it, "Synchronize now" is refused with that reason instead of
/// "automatic provisioning is off", and the token entered again works.
#[test]
fn a_provisioning_token_that_no_longer_opens_is_asked_for_again() {
    let lab = lab();
    let backup = lab.lg.scratch().join("no-key.db");
    let run = run_cli(
        &["backup", &backup.to_string_lossy()],
        &[("LABGATE_DATA_DIR", &lab.lg.data_dir().to_string_lossy())],
    );
    assert!(run.status.success(), "{run:?}");
    // Restored alone: the new labgate makes a new key, which opens neither sealed value.
    let restored = Launch::new().seed_db(&backup).start();
    let tab = html_unescape(&restored.admin().get(TAB).expect_html(200));
    assert!(
        tab.contains("id=\"gitlab-token-unreadable\"")
            && tab.contains("unreadable: enter it again"),
        "{tab}"
    );
    let refused = restored
        .admin()
        .post_json(RUNS, &json!({}))
        .expect_error(400);
    assert!(
        refused.contains("the provisioning token stored cannot be read with labgate.key"),
        "{refused}"
    );
    let body = json!({"provisioningToken": lab.token, "secret": APP_SECRET});
    let r = restored.admin().request(
        "PATCH",
        CONFIG,
        &[("Content-Type", "application/merge-patch+json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.expect_json(200)["isProvisioningTokenSet"], true);
    let tab = restored.admin().get(TAB).expect_html(200);
    assert!(!tab.contains("gitlab-token-unreadable"), "{tab}");
}
