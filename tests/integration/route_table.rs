//! Checks generated from labgate's own route table (`labgate::routes::routes()`), so a new
//! route cannot be forgotten: every admin route refuses anonymous and non-admin callers, every
//! signed-in route refuses anonymous callers, and every state-changing route refuses a
//! cookie-authenticated request without the CSRF token.

use crate::harness::*;
use labgate::routes::routes;
use labgate::web::Access;

/// Routes that authenticate by the credentials they carry, not by the session cookie.
const SIGN_IN_ROUTES: &[&str] = &["/sessions/new", "/api/authentication/login"];

fn call(c: &mut Client, method: &str, path: &str) -> Resp {
    let body = b"name=x&login=x&key=x&value=x";
    // A route ending in `/{id}` answers any id: the checks come before the id is read.
    let path = path.replace("{id}", "1");
    c.request(
        method,
        &path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
}

#[test]
fn every_admin_and_user_route_refuses_anonymous_callers() {
    let lg = Labgate::start();
    let mut checked = 0;
    // The gate's checks (`Access::Proxy`) answer anonymous callers themselves: `gate` tests them.
    for route in routes()
        .iter()
        .filter(|r| !matches!(r.access, Access::Public | Access::Proxy))
    {
        let r = call(&mut lg.client(), route.method, route.path);
        if route.path.starts_with("/api/") {
            assert_eq!(
                r.status,
                401,
                "{} {}: {}",
                route.method,
                route.path,
                r.describe()
            );
        } else {
            let to = r.location().unwrap_or_default();
            assert!(
                (r.status == 302 || r.status == 303) && to.starts_with("/sessions/new"),
                "{} {}: {}",
                route.method,
                route.path,
                r.describe()
            );
        }
        checked += 1;
    }
    assert!(checked > 40, "only {checked} routes checked");
}

#[test]
fn every_admin_route_refuses_a_signed_in_non_admin() {
    let lg = Labgate::start();
    lg.create_user("plain", USER_PASSWORD);
    let mut user = lg.login("plain", USER_PASSWORD);
    let mut checked = 0;
    for route in routes().iter().filter(|r| r.access == Access::Admin) {
        let r = call(&mut user, route.method, route.path);
        assert_eq!(
            r.status,
            403,
            "{} {}: {}",
            route.method,
            route.path,
            r.describe()
        );
        if route.path.starts_with("/api/") {
            assert_eq!(
                r.expect_error(403),
                "Insufficient privileges",
                "{}",
                route.path
            );
        }
        checked += 1;
    }
    assert!(checked > 30, "only {checked} admin routes checked");
}

#[test]
fn every_state_changing_route_refuses_a_cookie_request_without_csrf_token() {
    let lg = Labgate::start();
    let mut admin = lg.login("admin", ADMIN_PASSWORD).with_xsrf(false);
    let mut checked = 0;
    for route in routes()
        .iter()
        .filter(|r| r.is_write() && !SIGN_IN_ROUTES.contains(&r.path))
    {
        let r = call(&mut admin, route.method, route.path);
        assert_eq!(
            r.status,
            403,
            "{} {}: {}",
            route.method,
            route.path,
            r.describe()
        );
        checked += 1;
    }
    assert!(checked > 30, "only {checked} write routes checked");
    // The session survived all of that (logout without the token was refused too).
    admin
        .with_xsrf(true)
        .get("/api/users/current")
        .expect_json(200);
}
