//! `api/settings/*` and `/api/v2/dop-translation/gitlab-configurations`: the GitLab
//! configuration through both paths, secrets never returned.

use crate::harness::*;
use serde_json::{json, Value};

const CONFIGS: &str = "/api/v2/dop-translation/gitlab-configurations";
const CONFIG: &str = "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration";
const SECRET: &str = "gitlab-secret-value-42";

fn values(lg: &Labgate) -> Value {
    lg.admin().get("/api/settings/values").expect_json(200)
}

fn setting<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v["settings"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["key"] == key))
}

fn set(lg: &Labgate, key: &str, value: &str) {
    lg.admin()
        .post_form("/api/settings/set", &[("key", key), ("value", value)])
        .expect(204);
}

fn patch(c: &mut Client, body: &Value) -> Resp {
    c.request(
        "PATCH",
        CONFIG,
        &[("Content-Type", "application/merge-patch+json")],
        body.to_string().as_bytes(),
    )
}

/// Creates the configuration through the v2 API (removing any first).
fn create_config(lg: &Labgate) -> Value {
    let mut admin = lg.admin();
    let r = admin.request("DELETE", CONFIG, &[], b"");
    assert!(r.status == 204 || r.status == 404, "{}", r.describe());
    let r = admin.post_json(
        CONFIGS,
        &json!({
            "enabled": true,
            "applicationId": "app-id-1",
            "url": "https://gitlab.example.com/",
            "secret": SECRET,
            "synchronizeGroups": false,
            "allowedGroups": ["acme"],
            "allowUsersToSignUp": true,
            "provisioningType": "JIT"
        }),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.describe());
    assert!(
        !r.text().contains(SECRET),
        "secret returned: {}",
        r.describe()
    );
    r.json()
}

#[test]
fn values_lists_the_gitlab_defaults_as_strings() {
    let lg = Labgate::start();
    let v = values(&lg);
    let expect = [
        ("sonar.auth.gitlab.enabled", "false"),
        ("sonar.auth.gitlab.url", "https://gitlab.com"),
        ("sonar.auth.gitlab.allowUsersToSignUp", "true"),
        ("sonar.auth.gitlab.groupsSync", "false"),
    ];
    for (key, value) in expect {
        let s = setting(&v, key).unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert_eq!(s["value"], value, "{key}: {v}");
    }
    assert!(v["setSecuredSettings"].is_array(), "{v}");
    assert!(
        !v["setSecuredSettings"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k == "sonar.auth.gitlab.secret.secured")),
        "no secret yet: {v}"
    );
}

#[test]
fn set_then_reset_round_trips_a_value() {
    let lg = Labgate::start();
    set(&lg, "sonar.auth.gitlab.allowUsersToSignUp", "false");
    let v = values(&lg);
    let s = setting(&v, "sonar.auth.gitlab.allowUsersToSignUp").expect("key listed");
    assert_eq!(s["value"], "false", "{v}");
    lg.admin()
        .post_form(
            "/api/settings/reset",
            &[("keys", "sonar.auth.gitlab.allowUsersToSignUp")],
        )
        .expect(204);
    let v = values(&lg);
    let s = setting(&v, "sonar.auth.gitlab.allowUsersToSignUp").expect("key listed");
    assert_eq!(s["value"], "true", "{v}");
}

#[test]
fn values_filters_by_keys() {
    let lg = Labgate::start();
    let v = lg
        .admin()
        .get_query(
            "/api/settings/values",
            &[("keys", "sonar.auth.gitlab.enabled,sonar.auth.gitlab.url")],
        )
        .expect_json(200);
    let mut keys: Vec<String> = v["settings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    assert_eq!(
        keys,
        vec!["sonar.auth.gitlab.enabled", "sonar.auth.gitlab.url"],
        "{v}"
    );
}

#[test]
fn allowed_groups_is_multi_valued() {
    let lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.gitlab.allowedGroups"),
                ("values", "acme"),
                ("values", "beta-org"),
            ],
        )
        .expect(204);
    let v = values(&lg);
    let s = setting(&v, "sonar.auth.gitlab.allowedGroups").expect("key listed");
    assert_eq!(s["values"], json!(["acme", "beta-org"]), "{v}");
}

#[test]
fn secrets_are_listed_but_never_returned() {
    let lg = Labgate::start();
    set(&lg, "sonar.auth.gitlab.secret.secured", SECRET);
    let r = lg.admin().get("/api/settings/values");
    assert!(!r.text().contains(SECRET), "{}", r.describe());
    let v = r.expect_json(200);
    assert!(
        setting(&v, "sonar.auth.gitlab.secret.secured").is_none(),
        "{v}"
    );
    assert!(
        v["setSecuredSettings"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k == "sonar.auth.gitlab.secret.secured")),
        "{v}"
    );
}

#[test]
fn invalid_setting_values_and_unknown_keys_are_400() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    admin
        .post_form(
            "/api/settings/set",
            &[("key", "sonar.auth.gitlab.enabled"), ("value", "maybe")],
        )
        .expect_error(400);
    admin
        .post_form(
            "/api/settings/set",
            &[("key", "sonar.no.such.key"), ("value", "x")],
        )
        .expect_error(400);
    admin
        .post_form(
            "/api/settings/set",
            &[("key", "sonar.auth.gitlab.url"), ("value", "not a url")],
        )
        .expect_error(400);
    admin
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.web.sessionTimeoutInMinutes"),
                ("value", "-5"),
            ],
        )
        .expect_error(400);
}

#[test]
fn settings_url_change_is_refused_while_a_secret_is_set() {
    // Both paths are the same change: the URL cannot move away from an existing secret.
    let lg = Labgate::start();
    set(&lg, "sonar.auth.gitlab.url", "https://gitlab.example.com");
    set(&lg, "sonar.auth.gitlab.secret.secured", SECRET);
    let msg = lg
        .admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.gitlab.url"),
                ("value", "https://evil.example.net"),
            ],
        )
        .expect_error(400);
    assert!(msg.contains("secret"), "{msg}");
    let v = values(&lg);
    assert_eq!(
        setting(&v, "sonar.auth.gitlab.url").expect("listed")["value"],
        "https://gitlab.example.com",
        "{v}"
    );
}

#[test]
fn gitlab_configuration_is_created_once_and_never_shows_the_secret() {
    let lg = Labgate::start();
    let created = create_config(&lg);
    assert_eq!(created["id"], "gitlab-configuration", "{created}");
    assert_eq!(created["applicationId"], "app-id-1", "{created}");
    assert_eq!(
        created["url"], "https://gitlab.example.com",
        "one trailing slash removed: {created}"
    );
    assert_eq!(created["enabled"], true, "{created}");
    assert_eq!(created["allowedGroups"], json!(["acme"]), "{created}");
    assert_eq!(created["isProvisioningTokenSet"], false, "{created}");
    assert!(created.get("secret").is_none(), "{created}");

    let mut admin = lg.admin();
    let r = admin.post_json(
        CONFIGS,
        &json!({"enabled": false, "applicationId": "again", "url": "https://gitlab.com", "secret": "x"}),
    );
    r.expect_error(400);

    let one = admin.get(CONFIG).expect_json(200);
    assert_eq!(one["id"], "gitlab-configuration", "{one}");
    assert!(one.get("secret").is_none(), "{one}");
    let list = admin.get(CONFIGS);
    assert!(!list.text().contains(SECRET), "{}", list.describe());
    let list = list.expect_json(200);
    let configs = list["gitlabConfigurations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(configs.len(), 1, "{list}");
    assert_eq!(configs[0]["applicationId"], "app-id-1", "{list}");
    assert!(list["page"].is_object(), "{list}");
}

#[test]
fn changing_the_gitlab_url_requires_the_secret() {
    let lg = Labgate::start();
    create_config(&lg);
    let mut admin = lg.admin();
    patch(&mut admin, &json!({"url": "https://evil.example.net"})).expect_error(400);
    let one = admin.get(CONFIG).expect_json(200);
    assert_eq!(one["url"], "https://gitlab.example.com", "{one}");
    let v = patch(
        &mut admin,
        &json!({"url": "https://gitlab2.example.com/gitlab", "secret": "new-secret-1"}),
    )
    .expect_json(200);
    assert_eq!(v["url"], "https://gitlab2.example.com/gitlab", "{v}");
    assert!(v.get("secret").is_none(), "{v}");
}

#[test]
fn patching_other_fields_needs_no_secret() {
    let lg = Labgate::start();
    create_config(&lg);
    let v = patch(
        &mut lg.admin(),
        &json!({"synchronizeGroups": true, "allowedGroups": ["acme", "beta"], "allowUsersToSignUp": false}),
    )
    .expect_json(200);
    assert_eq!(v["synchronizeGroups"], true, "{v}");
    assert_eq!(v["allowedGroups"], json!(["acme", "beta"]), "{v}");
    assert_eq!(v["allowUsersToSignUp"], false, "{v}");
}

#[test]
fn configuration_and_settings_are_the_same_state() {
    let lg = Labgate::start();
    create_config(&lg);
    // v2 → settings
    patch(
        &mut lg.admin(),
        &json!({"allowedGroups": ["one", "two"], "synchronizeGroups": true}),
    )
    .expect_json(200);
    let v = values(&lg);
    assert_eq!(
        setting(&v, "sonar.auth.gitlab.allowedGroups").expect("listed")["values"],
        json!(["one", "two"]),
        "{v}"
    );
    assert_eq!(
        setting(&v, "sonar.auth.gitlab.groupsSync").expect("listed")["value"],
        "true",
        "{v}"
    );
    assert_eq!(
        setting(&v, "sonar.auth.gitlab.enabled").expect("listed")["value"],
        "true",
        "{v}"
    );
    assert!(
        v["setSecuredSettings"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k == "sonar.auth.gitlab.secret.secured")),
        "{v}"
    );
    // settings → v2
    set(&lg, "sonar.auth.gitlab.allowUsersToSignUp", "false");
    let one = lg.admin().get(CONFIG).expect_json(200);
    assert_eq!(one["allowUsersToSignUp"], false, "{one}");
}

#[test]
fn deleting_the_configuration_answers_204_then_404() {
    let lg = Labgate::start();
    create_config(&lg);
    let mut admin = lg.admin();
    admin.request("DELETE", CONFIG, &[], b"").expect(204);
    admin.get(CONFIG).expect_error(404);
    admin.request("DELETE", CONFIG, &[], b"").expect_error(404);
    let list = admin.get(CONFIGS).expect_json(200);
    assert_eq!(list["gitlabConfigurations"], json!([]), "{list}");
}

#[test]
fn unknown_configuration_id_is_404() {
    let lg = Labgate::start();
    create_config(&lg);
    lg.admin()
        .get("/api/v2/dop-translation/gitlab-configurations/other-id")
        .expect_error(404);
}

#[test]
fn invalid_configuration_json_is_400() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let r = admin.request("DELETE", CONFIG, &[], b"");
    assert!(r.status == 204 || r.status == 404, "{}", r.describe());
    for body in [
        "{not json",
        r#"{"enabled": "yes", "applicationId": "a", "url": "https://gitlab.com", "secret": "s"}"#,
        r#"{"enabled": true, "applicationId": "a", "url": "ftp://gitlab.com", "secret": "s"}"#,
        r#"{"enabled": true, "applicationId": "a", "url": "https://gitlab.com", "secret": "s", "provisioningType": "AUTO"}"#,
    ] {
        let r = admin.request(
            "POST",
            CONFIGS,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.describe());
        r.expect_error(400);
    }
}

#[test]
fn token_lifetime_setting_takes_exactly_its_four_values() {
    let lg = Labgate::start();
    let key = "sonar.auth.token.max.allowed.lifetime";
    let v = values(&lg);
    let s = setting(&v, key).unwrap_or_else(|| panic!("{key} missing: {v}"));
    assert_eq!(s["value"], "No expiration", "{v}");
    for value in ["30 days", "90 days", "1 year", "No expiration"] {
        set(&lg, key, value);
        let v = values(&lg);
        assert_eq!(
            setting(&v, key).map(|s| &s["value"]),
            Some(&json!(value)),
            "{v}"
        );
    }
    set(&lg, key, "1 year");
    for bad in ["45 days", "90 Days", "forever", ""] {
        let msg = lg
            .admin()
            .post_form("/api/settings/set", &[("key", key), ("value", bad)])
            .expect_error(400);
        assert_eq!(
            msg,
            "Setting 'sonar.auth.token.max.allowed.lifetime': value must be one of \
             '30 days', '90 days', '1 year', 'No expiration'",
            "{bad:?}"
        );
    }
    let v = values(&lg);
    assert_eq!(
        setting(&v, key).map(|s| &s["value"]),
        Some(&json!("1 year")),
        "{v}"
    );
    lg.admin()
        .post_form("/api/settings/reset", &[("keys", key)])
        .expect(204);
    let v = values(&lg);
    assert_eq!(
        setting(&v, key).map(|s| &s["value"]),
        Some(&json!("No expiration")),
        "{v}"
    );
}

const SYNC_NEEDS_ALLOWED_GROUP: &str = "Synchronize user groups needs at least one allowed group: only groups under an allowed group are synchronized";

/// The two settings the group synchronization rule is about, as `api/settings/values` shows
/// them.
fn group_sync(lg: &Labgate) -> (Value, Value) {
    let v = values(lg);
    let sync = setting(&v, "sonar.auth.gitlab.groupsSync").expect("listed")["value"].clone();
    let allowed = setting(&v, "sonar.auth.gitlab.allowedGroups")
        .map(|s| s["values"].clone())
        .unwrap_or(Value::Null);
    (sync, allowed)
}

/// Asserts a 400 with exactly the group synchronization refusal.
#[track_caller]
fn refused_sync(r: Resp) {
    let v = r.expect_json(400);
    assert_eq!(
        v,
        json!({"errors": [{"msg": SYNC_NEEDS_ALLOWED_GROUP}]}),
        "{}",
        r.describe()
    );
}

#[test]
fn group_sync_cannot_be_turned_on_without_an_allowed_group_through_the_apis() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let off = group_sync(&lg);
    refused_sync(admin.post_form(
        "/api/settings/set",
        &[("key", "sonar.auth.gitlab.groupsSync"), ("value", "true")],
    ));
    assert_eq!(group_sync(&lg), off, "nothing changed");
    refused_sync(admin.post_json(
        CONFIGS,
        &json!({"applicationId": "app", "url": "https://gitlab.com", "secret": "s",
                "synchronizeGroups": true, "allowedGroups": []}),
    ));
    let list = admin.get(CONFIGS).expect_json(200);
    assert_eq!(
        list["gitlabConfigurations"],
        json!([]),
        "nothing created: {list}"
    );
    create_config(&lg);
    refused_sync(patch(
        &mut admin,
        &json!({"synchronizeGroups": true, "allowedGroups": null}),
    ));
    assert_eq!(
        group_sync(&lg),
        (json!("false"), json!(["acme"])),
        "nothing changed"
    );
    let v = patch(&mut admin, &json!({"synchronizeGroups": true})).expect_json(200);
    assert_eq!(v["synchronizeGroups"], true, "{v}");
}

#[test]
fn the_last_allowed_group_cannot_be_removed_while_group_sync_is_on() {
    let lg = Labgate::start();
    create_config(&lg);
    let mut admin = lg.admin();
    patch(&mut admin, &json!({"synchronizeGroups": true})).expect_json(200);
    let on = (json!("true"), json!(["acme"]));
    assert_eq!(group_sync(&lg), on);
    refused_sync(patch(&mut admin, &json!({"allowedGroups": []})));
    refused_sync(patch(
        &mut admin,
        &json!({"allowedGroups": null, "enabled": false}),
    ));
    refused_sync(admin.post_form(
        "/api/settings/set",
        &[("key", "sonar.auth.gitlab.allowedGroups"), ("values", "")],
    ));
    refused_sync(admin.post_form(
        "/api/settings/reset",
        &[("keys", "sonar.auth.gitlab.allowedGroups")],
    ));
    refused_sync(admin.post_form(
        "/api/settings/reset",
        &[(
            "keys",
            "sonar.auth.gitlab.allowUsersToSignUp,sonar.auth.gitlab.allowedGroups",
        )],
    ));
    assert_eq!(group_sync(&lg), on, "nothing changed");
    let one = admin.get(CONFIG).expect_json(200);
    assert_eq!(one["enabled"], true, "nothing changed: {one}");
    // Replacing the groups, or turning synchronization off with them, is fine.
    set(&lg, "sonar.auth.gitlab.allowedGroups", "beta");
    admin
        .post_form(
            "/api/settings/reset",
            &[(
                "keys",
                "sonar.auth.gitlab.groupsSync,sonar.auth.gitlab.allowedGroups",
            )],
        )
        .expect(204);
    assert_eq!(group_sync(&lg), (json!("false"), Value::Null));
}

#[test]
fn a_stored_group_sync_without_allowed_group_still_takes_unrelated_edits() {
    let lg = Labgate::start();
    create_config(&lg);
    let mut admin = lg.admin();
    patch(&mut admin, &json!({"allowedGroups": null})).expect_json(200);
    // Stored before synchronization needed an allowed group.
    lg.store_settings(&[("sonar.auth.gitlab.groupsSync", "true")]);
    let legacy = (json!("true"), Value::Null);
    assert_eq!(group_sync(&lg), legacy);
    set(&lg, "sonar.auth.gitlab.allowUsersToSignUp", "false");
    let v = patch(&mut admin, &json!({"enabled": false})).expect_json(200);
    assert_eq!(v["enabled"], false, "{v}");
    assert_eq!(group_sync(&lg), legacy);
}
