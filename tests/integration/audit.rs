//! The audit log end to end: each action's event (actor, target, outcome), refused writes
//! leave none, no secret reaches an event or the export, failed sign-ins folded, the page
//! escapes what users and GitLab supply, the API's filters and the NDJSON export.

use crate::harness::*;
use serde_json::{json, Value};

/// Every event the API lists for `params` (newest first, at most 500).
pub fn events(lg: &Labgate, params: &[(&str, &str)]) -> Vec<Value> {
    let mut all = params.to_vec();
    all.push(("ps", "500"));
    let v = lg
        .admin()
        .get_query("/api/v2/labgate/audit-events", &all)
        .expect_json(200);
    v["events"].as_array().cloned().unwrap_or_default()
}

/// The events of `action` about `target`.
fn about<'a>(all: &'a [Value], action: &str, target: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|e| e["action"] == action && e["target"] == target)
        .collect()
}

#[track_caller]
fn assert_event(all: &[Value], action: &str, actor: Option<&str>, target: &str, outcome: &str) {
    let found = about(all, action, target)
        .into_iter()
        .any(|e| e["actor"] == json!(actor) && e["outcome"] == outcome);
    let seen: Vec<String> = all
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["action"], e["actor"], e["target"], e["outcome"]
            )
        })
        .collect();
    assert!(
        found,
        "no {action} event by {actor:?} about {target} ({outcome}); events:\n{}",
        seen.join("\n")
    );
}

/// The whole log as the export writes it.
fn export(lg: &Labgate, params: &[(&str, &str)]) -> (Resp, Vec<Value>) {
    let r = lg
        .admin()
        .get_query("/api/v2/labgate/audit-events/export", params);
    assert_eq!(r.status, 200, "{}", r.describe());
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (r, lines)
}

#[test]
fn each_action_records_its_event_with_actor_target_and_outcome() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let ok = |r: Resp| assert!(r.status < 400, "{}", r.describe());
    ok(admin.post_form(
        "/api/users/create",
        &[
            ("login", "ann"),
            ("name", "Ann"),
            ("password", USER_PASSWORD),
        ],
    ));
    ok(admin.post_form("/api/users/update", &[("login", "ann"), ("name", "Ann B")]));
    ok(admin.post_form(
        "/api/users/change_password",
        &[("login", "ann"), ("password", "another-Passw0rd-1")],
    ));
    ok(admin.post_form("/api/user_groups/create", &[("name", "devs")]));
    ok(admin.post_form(
        "/api/user_groups/update",
        &[("currentName", "devs"), ("description", "Developers")],
    ));
    ok(admin.post_form(
        "/api/user_groups/add_user",
        &[("name", "devs"), ("login", "ann")],
    ));
    ok(admin.post_form(
        "/api/user_groups/remove_user",
        &[("name", "devs"), ("login", "ann")],
    ));
    for (path, who) in [
        ("/api/permissions/add_user", ("login", "ann")),
        ("/api/permissions/remove_user", ("login", "ann")),
        ("/api/permissions/add_group", ("groupName", "devs")),
        ("/api/permissions/remove_group", ("groupName", "devs")),
    ] {
        ok(admin.post_form(path, &[who, ("permission", "admin")]));
    }
    ok(admin.post_form(
        "/api/user_tokens/generate",
        &[("login", "ann"), ("name", "ci")],
    ));
    ok(admin.post_form(
        "/api/user_tokens/revoke",
        &[("login", "ann"), ("name", "ci")],
    ));
    let timeout = "sonar.web.sessionTimeoutInMinutes";
    ok(admin.post_form("/api/settings/set", &[("key", timeout), ("value", "60")]));
    ok(admin.post_form("/api/settings/reset", &[("keys", timeout)]));
    let v2 = "/api/v2/dop-translation/gitlab-configurations";
    ok(admin.post_json(
        v2,
        &json!({"url": "https://gl.example", "applicationId": "app", "secret": "s3cret-gl"}),
    ));
    let one = format!("{v2}/gitlab-configuration");
    ok(admin.request(
        "PATCH",
        &one,
        &[("Content-Type", "application/merge-patch+json")],
        br#"{"allowUsersToSignUp":false}"#,
    ));
    ok(admin.request("DELETE", &one, &[], b""));
    ok(admin.post_form(
        "/api/users/create",
        &[
            ("login", "gl"),
            ("name", "GitLab person"),
            ("local", "false"),
        ],
    ));
    ok(admin.post_form(
        "/api/users/update_identity_provider",
        &[
            ("login", "gl"),
            ("newExternalProvider", "gitlab"),
            ("newExternalIdentity", "gl-other"),
        ],
    ));
    // Ann signs in and out, fails once, then is deactivated with a session open.
    let mut ann = lg.login("ann", "another-Passw0rd-1");
    ok(ann.post_form("/api/authentication/logout", &[]));
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "ann"), ("password", "wrong-password-99")],
        )
        .expect(401);
    lg.login("ann", "another-Passw0rd-1");
    ok(admin.post_form("/api/users/deactivate", &[("login", "ann")]));
    ok(admin.post_form("/admin/users/reactivate", &[("login", "ann")]));
    ok(admin.post_form("/api/user_groups/delete", &[("name", "devs")]));

    let all = events(&lg, &[]);
    let admin = Some("admin");
    assert_event(&all, "signin.local", admin, "admin", "ok");
    assert_event(&all, "user.create", admin, "ann", "ok");
    assert_event(&all, "user.update", admin, "ann", "ok");
    assert_event(&all, "password.change", admin, "ann", "ok");
    assert_event(&all, "group.create", admin, "devs", "ok");
    assert_event(&all, "group.update", admin, "devs", "ok");
    assert_event(&all, "membership.add", admin, "ann", "ok");
    assert_event(&all, "membership.remove", admin, "ann", "ok");
    assert_event(&all, "permission.grant", admin, "ann", "ok");
    assert_event(&all, "permission.revoke", admin, "ann", "ok");
    assert_event(&all, "permission.grant", admin, "devs", "ok");
    assert_event(&all, "permission.revoke", admin, "devs", "ok");
    assert_event(&all, "token.generate", admin, "ann", "ok");
    assert_event(&all, "token.revoke", admin, "ann", "ok");
    assert_event(&all, "setting.set", admin, timeout, "ok");
    assert_event(&all, "setting.reset", admin, timeout, "ok");
    assert_eq!(
        about(&all, "gitlab.configure", "gitlab-configuration").len(),
        3
    );
    assert_event(
        &all,
        "gitlab.configure",
        admin,
        "gitlab-configuration",
        "ok",
    );
    assert_event(&all, "user.create", admin, "gl", "ok");
    assert_event(&all, "user.link", admin, "gl", "ok");
    assert_event(&all, "signin.local", Some("ann"), "ann", "ok");
    assert_event(&all, "signout", Some("ann"), "ann", "ok");
    assert_event(&all, "signin.local", None, "ann", "failed");
    assert_event(&all, "user.deactivate", admin, "ann", "ok");
    assert_event(&all, "session.ended", admin, "ann", "ok");
    assert_event(&all, "user.reactivate", admin, "ann", "ok");
    assert_event(&all, "group.delete", admin, "devs", "ok");

    // The details say what changed, and each event where it came from.
    let update = about(&all, "user.update", "ann")[0];
    assert_eq!(
        update["detail"]["changes"]["name"],
        json!({"old": "Ann", "new": "Ann B"})
    );
    assert_eq!(update["line"], "admin updated user ann: name Ann → Ann B");
    assert!(update["detail"]["requestId"].is_string(), "{update}");
    let patch = all
        .iter()
        .find(|e| e["action"] == "gitlab.configure" && e["detail"]["operation"] == "update")
        .expect("the PATCH event");
    assert_eq!(
        patch["detail"]["changes"]["allowUsersToSignUp"],
        json!({"old": true, "new": false})
    );
    let deactivation = about(&all, "user.deactivate", "ann")[0];
    assert_eq!(deactivation["detail"]["sessionsEnded"], 1, "{deactivation}");
    // Newest first, with times in milliseconds.
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let at = all[0]["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('.'), "{at}");
}

#[test]
fn a_refused_admin_write_leaves_no_event() {
    let lg = Labgate::start();
    lg.create_user("ann", USER_PASSWORD);
    let before = events(&lg, &[]);
    let mut admin = lg.admin();
    let refused: &[(&str, &[(&str, &str)])] = &[
        (
            "/api/permissions/remove_group",
            &[("groupName", "administrators"), ("permission", "admin")],
        ),
        (
            "/api/user_groups/remove_user",
            &[("name", "administrators"), ("login", "admin")],
        ),
        ("/api/user_groups/delete", &[("name", "administrators")]),
        ("/api/users/deactivate", &[("login", "admin")]),
        ("/api/user_groups/create", &[("name", "users")]),
        (
            "/api/user_groups/add_user",
            &[("name", "users"), ("login", "ann")],
        ),
        (
            "/api/users/create",
            &[("login", "-bad"), ("name", "x"), ("password", "short")],
        ),
        (
            "/api/users/create",
            &[
                ("login", "ann"),
                ("name", "Ann"),
                ("password", USER_PASSWORD),
            ],
        ),
        (
            "/api/user_tokens/revoke",
            &[("login", "ann"), ("name", "none-such")],
        ),
        (
            "/api/settings/set",
            &[("key", "sonar.web.sessionTimeoutInMinutes"), ("value", "1")],
        ),
        (
            "/api/settings/set",
            &[("key", "sonar.auth.gitlab.groupsSync"), ("value", "true")],
        ),
    ];
    for (path, params) in refused {
        let r = admin.post_form(path, params);
        assert!((400..500).contains(&r.status), "{path}: {}", r.describe());
    }
    // A signed-in non-admin is refused too.
    let mut ann = lg.login("ann", USER_PASSWORD);
    ann.post_form("/api/user_groups/create", &[("name", "mine")])
        .expect_error(403);
    let after = events(&lg, &[]);
    let new: Vec<&Value> = after
        .iter()
        .filter(|e| !before.iter().any(|b| b["id"] == e["id"]))
        .collect();
    // Ann's own sign-in is the one new event.
    assert!(
        new.iter()
            .all(|e| e["action"] == "signin.local" && e["target"] == "ann"),
        "{new:#?}"
    );
    assert_eq!(new.len(), 1, "{new:#?}");
}

#[test]
fn no_secret_reaches_an_event_or_the_export() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let gitlab_secret = "gl-secret-Zq81xV3";
    let metrics_token = "metrics-token-Yp04kT9";
    let first = "first-Passw0rd-Kx7";
    let second = "second-Passw0rd-Lm2";
    lg.create_user("ann", first);
    admin
        .post_form(
            "/api/users/change_password",
            &[("login", "ann"), ("password", second)],
        )
        .expect(204);
    let mut ann = lg.login("ann", second);
    let third = "third-Passw0rd-Qw9";
    ann.post_form(
        "/api/users/change_password",
        &[
            ("login", "ann"),
            ("previousPassword", second),
            ("password", third),
        ],
    )
    .expect(204);
    // A wrong previous password and a wrong sign-in password are failures to record.
    let guess = "guessed-Passw0rd-Rt5";
    ann.post_form(
        "/api/users/change_password",
        &[
            ("login", "ann"),
            ("previousPassword", guess),
            ("password", first),
        ],
    )
    .expect_error(400);
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "ann"), ("password", guess)],
        )
        .expect(401);
    lg.client()
        .basic("ann", guess)
        .get("/api/users/current")
        .expect(401);
    let token = lg.token_for("ann");
    admin
        .post_json(
            "/api/v2/dop-translation/gitlab-configurations",
            &json!({"url": "https://gl.example", "applicationId": "app", "secret": gitlab_secret}),
        )
        .expect(200);
    admin
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.gitlab.secret.secured"),
                ("value", "gl-secret-2-Hb6"),
            ],
        )
        .expect(204);
    admin
        .post_form(
            "/api/settings/set",
            &[("key", "labgate.metrics.token"), ("value", metrics_token)],
        )
        .expect(204);
    let session = ann.cookie("labgate_session").unwrap().to_string();
    let xsrf = ann.cookie("XSRF-TOKEN").unwrap().to_string();
    ann.post_form("/api/authentication/logout", &[]).expect(204);
    let mut secrets: Vec<String> = [
        ADMIN_PASSWORD,
        first,
        second,
        third,
        guess,
        gitlab_secret,
        "gl-secret-2-Hb6",
        metrics_token,
        &token,
        &session,
        &xsrf,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let hashes: Vec<String> = secrets.iter().map(|s| sha256_hex(s)).collect();
    secrets.extend(hashes);
    // Everything the log holds, as the export writes it and as the database stores it.
    let (resp, lines) = export(&lg, &[]);
    assert!(lines.len() >= 10, "{}", resp.text());
    let conn = rusqlite::Connection::open_with_flags(
        lg.data_dir().join("labgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT coalesce(actor, '') || ' ' || action || ' ' || coalesce(target, '') || ' ' \
             || outcome || ' ' || coalesce(reason, '') || ' ' || detail \
             FROM (SELECT * FROM audit_events UNION ALL SELECT * FROM audit_pending)",
        )
        .unwrap();
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(stored.len() >= 10);
    let page = lg.admin().get("/admin/audit").expect_html(200);
    for secret in &secrets {
        assert!(
            !resp.text().contains(secret.as_str()),
            "export holds {secret}"
        );
        assert!(!page.contains(secret.as_str()), "the page holds {secret}");
        for row in &stored {
            assert!(
                !row.contains(secret.as_str()),
                "an event holds {secret}: {row}"
            );
        }
    }
    // The secured settings were recorded as changed, without a value.
    let set: Vec<&Value> = lines
        .iter()
        .filter(|e| e["action"] == "setting.set")
        .collect();
    assert_eq!(set.len(), 2, "{set:#?}");
    assert!(
        set.iter().all(|e| e["detail"].get("value").is_none()),
        "{set:#?}"
    );
}

/// The SHA-256 of a text, in lower-case hex (as labgate stores token and session hashes).
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn failed_sign_ins_of_one_login_are_folded_into_one_event_with_a_count() {
    let lg = Labgate::start();
    lg.create_user("ann", USER_PASSWORD);
    for _ in 0..5 {
        lg.client()
            .post_form(
                "/api/authentication/login",
                &[("login", "ann"), ("password", "wrong-password-1")],
            )
            .expect(401);
    }
    // Locked now: the refusal is counted in the same event.
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "ann"), ("password", "wrong-password-1")],
        )
        .expect(429);
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "nobody"), ("password", "wrong-password-1")],
        )
        .expect(401);
    let failed = events(&lg, &[("action", "signin.local"), ("outcome", "failed")]);
    let ann: Vec<&Value> = failed.iter().filter(|e| e["target"] == "ann").collect();
    assert_eq!(ann.len(), 1, "{failed:#?}");
    assert_eq!(ann[0]["detail"]["count"], 6, "{:#}", ann[0]);
    assert_eq!(ann[0]["reason"], "wrong-password");
    assert!(
        ann[0]["line"]
            .as_str()
            .unwrap()
            .ends_with("(6 times within a minute)"),
        "{}",
        ann[0]["line"]
    );
    let nobody: Vec<&Value> = failed.iter().filter(|e| e["target"] == "nobody").collect();
    assert_eq!(nobody.len(), 1);
    assert_eq!(nobody[0]["reason"], "unknown-login");
}

#[test]
fn names_from_users_are_escaped_on_the_audit_and_user_pages() {
    let lg = Labgate::start();
    let hostile = "<script>alert(1)</script>";
    let group = "<img src=x onerror=alert(2)>";
    lg.admin()
        .post_form(
            "/api/users/create",
            &[
                ("login", "ann"),
                ("name", hostile),
                ("password", USER_PASSWORD),
            ],
        )
        .expect(200);
    lg.admin()
        .post_form("/api/user_groups/create", &[("name", group)])
        .expect(200);
    for path in ["/admin/audit", "/admin/users/edit?login=ann"] {
        let page = lg.admin().get(path).expect_html(200);
        assert!(!page.contains(hostile), "{path}: unescaped name");
        assert!(!page.contains("<img src=x"), "{path}: unescaped group");
        assert!(
            html_unescape(&page).contains(hostile),
            "{path}: the name is not shown"
        );
    }
    let page = lg.admin().get("/admin/audit").expect_html(200);
    assert!(
        html_unescape(&page).contains(&format!("admin created group {group}")),
        "{page}"
    );
}

#[test]
fn the_api_filters_by_text_action_outcome_and_dates_and_pages() {
    let lg = Labgate::start();
    for login in ["ann", "annette", "bob"] {
        lg.create_user(login, USER_PASSWORD);
    }
    lg.create_group("ANNEX");
    let targets = |params: &[(&str, &str)]| -> Vec<String> {
        events(&lg, params)
            .iter()
            .map(|e| e["target"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let q = [("q", "ANN"), ("action", "user.create")];
    assert_eq!(targets(&q), vec!["annette", "ann"]);
    assert_eq!(targets(&[("q", "ann")]), vec!["ANNEX", "annette", "ann"]);
    assert_eq!(
        targets(&[("action", "group.create"), ("outcome", "ok")]),
        vec!["ANNEX"]
    );
    let today = chrono_today();
    assert_eq!(
        targets(&[("q", "bob"), ("from", &today), ("to", &today)]),
        vec!["bob"]
    );
    assert!(targets(&[("q", "bob"), ("to", "2000-01-01")]).is_empty());
    let v = lg
        .admin()
        .get_query("/api/v2/labgate/audit-events", &[("ps", "2"), ("p", "2")])
        .expect_json(200);
    assert_eq!(v["page"]["pageIndex"], 2);
    assert_eq!(v["page"]["pageSize"], 2);
    assert_eq!(v["page"]["total"], events(&lg, &[]).len());
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    for bad in [
        ("action", "user.explode"),
        ("outcome", "maybe"),
        ("from", "yesterday"),
        ("ps", "501"),
    ] {
        lg.admin()
            .get_query("/api/v2/labgate/audit-events", &[bad])
            .expect_error(400);
    }
    let message = lg
        .admin()
        .get_query(
            "/api/v2/labgate/audit-events",
            &[("from", "2026-03-02"), ("to", "2026-03-01")],
        )
        .expect_error(400);
    assert!(
        message.contains("The end date '2026-03-01' is before the start date '2026-03-02'"),
        "{message}"
    );
    // Admin only.
    lg.user_with_token("plain")
        .get("/api/v2/labgate/audit-events")
        .expect_error(403);
    lg.client()
        .get("/api/v2/labgate/audit-events/export")
        .expect_error(401);
}

/// Today's date, UTC, as the filters take it.
fn chrono_today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[test]
fn the_export_streams_every_event_the_filters_keep_as_ndjson() {
    let lg = Labgate::start();
    for i in 0..1_200 {
        lg.admin()
            .post_form("/api/user_groups/create", &[("name", &format!("g{i:04}"))])
            .expect(200);
    }
    let (resp, lines) = export(&lg, &[("action", "group.create")]);
    assert_eq!(resp.header("content-type"), Some("application/x-ndjson"));
    assert!(
        resp.header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked")),
        "streamed: {:?}",
        resp.headers
    );
    assert_eq!(lines.len(), 1_200);
    assert_eq!(lines[0]["target"], "g1199");
    assert_eq!(lines[1_199]["target"], "g0000");
    let ids: Vec<i64> = lines.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    let (_, all) = export(&lg, &[]);
    let total = lg
        .admin()
        .get("/api/v2/labgate/audit-events")
        .expect_json(200)["page"]["total"]
        .as_i64()
        .unwrap();
    assert_eq!(all.len() as i64, total);
}

#[test]
fn a_users_page_shows_their_last_twenty_events() {
    let lg = Labgate::start();
    lg.create_user("ann", USER_PASSWORD);
    for i in 0..25 {
        lg.admin()
            .post_form(
                "/api/users/update",
                &[("login", "ann"), ("name", &format!("Ann {i}"))],
            )
            .expect(200);
    }
    let page = lg
        .admin()
        .get("/admin/users/edit?login=ann")
        .expect_html(200);
    let shown = page.matches("admin updated user ann").count();
    assert_eq!(shown, 20, "{page}");
    assert!(page.contains("name Ann 23 → Ann 24"), "the newest first");
    assert!(!page.contains("created user ann"), "older than the last 20");
    assert!(page.contains("/admin/audit?q=ann"));
}

#[test]
fn the_audit_page_filters_and_pages() {
    let lg = Labgate::start();
    for i in 0..60 {
        lg.create_group(&format!("team{i:02}"));
    }
    let mut admin = lg.admin();
    let page = admin.get("/admin/audit").expect_html(200);
    assert!(page.contains("1–50 of"), "{page}");
    assert!(page.contains("created group team59"));
    let page = admin
        .get_query(
            "/admin/audit",
            &[("q", "team0"), ("action", "group.create")],
        )
        .expect_html(200);
    assert!(page.contains("1–10 of 10"), "{page}");
    let page = admin
        .get_query("/admin/audit", &[("from", "tomorrow")])
        .expect_html(422);
    assert!(page.contains("cannot be parsed as a date"), "{page}");
    let page = admin
        .get_query(
            "/admin/audit",
            &[("from", "2026-03-02"), ("to", "2026-03-01")],
        )
        .expect_html(422);
    assert!(
        page.contains(
            "The end date &#39;2026-03-01&#39; is before the start date &#39;2026-03-02&#39;"
        ),
        "{page}"
    );
}

#[test]
fn the_client_address_is_the_one_a_trusted_proxy_reports() {
    let lg = Labgate::start_with(&["--trusted-proxies", "127.0.0.1"], &[]);
    lg.admin()
        .request(
            "POST",
            "/api/user_groups/create",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Forwarded-For", "203.0.113.9"),
            ],
            b"name=devs",
        )
        .expect(200);
    let created = events(&lg, &[("action", "group.create")]);
    assert_eq!(
        created[0]["detail"]["client"], "203.0.113.9",
        "{:#}",
        created[0]
    );
}

#[test]
fn application_changes_and_gate_refusals_are_recorded_the_refusals_once_a_minute() {
    let lg = Labgate::start();
    lg.create_group("ml");
    lg.create_user("bob", USER_PASSWORD);
    let mut admin = lg.admin();
    let created = admin
        .post_json(
            "/api/v2/labgate/applications",
            &json!({"name": "Wiki", "url": "https://wiki.lab.example", "allowedGroups": ["ml"]}),
        )
        .expect_json(201);
    let path = format!(
        "/api/v2/labgate/applications/{}",
        created["id"].as_str().unwrap()
    );
    admin
        .request(
            "PATCH",
            &path,
            &[("Content-Type", "application/merge-patch+json")],
            br#"{"description":"the lab's wiki"}"#,
        )
        .expect_json(200);
    let mut bob = lg.login("bob", USER_PASSWORD);
    let original = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "wiki.lab.example"),
        ("X-Forwarded-Uri", "/page"),
        ("X-Forwarded-Method", "GET"),
    ];
    for _ in 0..5 {
        let r = bob.request("GET", "/gate/forward", &original, b"");
        assert_eq!(r.status, 403, "{}", r.describe());
    }
    admin.request("DELETE", &path, &[], b"").expect(204);
    let all = events(&lg, &[]);
    assert_event(&all, "application.create", Some("admin"), "Wiki", "ok");
    assert_event(&all, "application.update", Some("admin"), "Wiki", "ok");
    assert_event(&all, "application.delete", Some("admin"), "Wiki", "ok");
    let update = about(&all, "application.update", "Wiki")[0];
    assert_eq!(
        update["detail"]["changes"]["description"],
        json!({"old": "", "new": "the lab's wiki"})
    );
    let refused = about(&all, "gate.refused", "bob");
    assert_eq!(refused.len(), 1, "once a minute: {refused:#?}");
    assert_eq!(refused[0]["outcome"], "refused");
    assert_eq!(refused[0]["detail"]["application"], "Wiki");
    assert_eq!(refused[0]["detail"]["allowedGroups"], json!(["ml"]));
    assert_eq!(
        refused[0]["line"],
        "bob at Wiki refused: not-in-allowed-group"
    );
}
