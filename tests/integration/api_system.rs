//! The public system endpoints, the admin health check and the API's general shape
//! (exact JSON content type, 404 for unknown paths).

use crate::harness::*;

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[test]
fn system_status_answers_up_without_authentication() {
    let lg = Labgate::start();
    let v = lg.client().get("/api/system/status").expect_json(200);
    assert_eq!(v["status"], "UP", "{v}");
    assert_eq!(v["version"], VERSION, "{v}");
    assert!(
        v["id"].as_str().is_some_and(|id| !id.is_empty()),
        "status id: {v}"
    );
}

#[test]
fn server_version_is_plain_text() {
    let lg = Labgate::start();
    let r = lg.client().get("/api/server/version").expect(200);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "{}", r.describe());
    assert_eq!(r.text().trim(), VERSION);
}

#[test]
fn system_health_is_green_for_admin() {
    let lg = Labgate::start();
    let v = lg.admin().get("/api/system/health").expect_json(200);
    assert_eq!(v["health"], "GREEN", "{v}");
    assert_eq!(v["causes"], serde_json::json!([]), "{v}");
}

#[test]
fn unknown_api_path_answers_404_json() {
    let lg = Labgate::start();
    lg.admin().get("/api/no/such/endpoint").expect_error(404);
}

#[test]
fn json_answers_carry_exactly_application_json() {
    let lg = Labgate::start();
    lg.create_user("jason", USER_PASSWORD);
    let mut admin = lg.admin();
    // Successes.
    for path in [
        "/api/system/status",
        "/api/system/health",
        "/api/users/current",
        "/api/users/search",
        "/api/user_groups/search",
        "/api/user_groups/users?name=users",
        "/api/permissions/groups?permission=admin",
        "/api/permissions/users?permission=admin",
        "/api/user_tokens/search",
        "/api/authentication/validate",
        "/api/settings/values",
    ] {
        admin.get(path).expect_json(200);
    }
    admin
        .post_form(
            "/api/users/update",
            &[("login", "jason"), ("name", "Jason")],
        )
        .expect_json(200);
    // Errors: 400, 401, 403, 404.
    admin.get("/api/users/search?q=j").expect_error(400);
    lg.client().get("/api/users/search").expect_error(401);
    lg.token_client("jason")
        .get("/api/users/search")
        .expect_error(403);
    admin
        .post_form("/api/users/deactivate", &[("login", "nobody-here")])
        .expect_error(404);
}

#[test]
fn get_on_a_post_endpoint_is_refused_without_effect() {
    let lg = Labgate::start();
    let mut admin = lg.admin();
    let r = admin.get("/api/user_groups/create?name=via-get");
    assert!(
        (400..500).contains(&r.status),
        "GET on a POST endpoint: {}",
        r.describe()
    );
    let groups = admin
        .get_query("/api/user_groups/search", &[("q", "via-get")])
        .expect_json(200);
    assert!(names(&groups["groups"]).is_empty(), "{groups}");
}

#[test]
fn a_bug_never_takes_the_process_down() {
    // Hammer a few odd inputs, then check the server still answers.
    let lg = Labgate::start();
    let mut admin = lg.admin();
    for path in [
        "/api/users/search?p=99999999999999999999",
        "/api/users/search?ps=-1",
        "/api/user_groups/users?name=users&selected=sideways",
        "/api/permissions/groups?permission=admin&p=4294967296",
    ] {
        let r = admin.get(path);
        assert!(r.status < 500, "{path}: {}", r.describe());
    }
    lg.client().get("/api/system/status").expect(200);
}
