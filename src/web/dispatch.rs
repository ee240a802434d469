//! What a route is, and dispatch: the route of a request → who is asking → may they → CSRF →
//! the handler → the error mapping, in one place for pages and API alike.

use super::auth::{self, Credentials};
use super::ctx::Ctx;
use super::request::{Req, Resp};
use super::views;
use super::{App, POOL_WAIT};
use crate::error::{AppError, AppResult};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user.
    User,
    /// Users holding `admin` ("Administer System").
    Admin,
    /// A reverse proxy asking about a request to another application: the handler reads
    /// labgate's own credentials itself (session cookie, API token) and leaves any other
    /// `Authorization` to the application, so dispatch resolves no caller and checks no CSRF
    /// (such a route changes nothing).
    Proxy,
}

/// The method of a route that answers every method (it must change nothing).
pub const ANY_METHOD: &str = "*";

/// What answers a route.
pub type Handler = fn(&mut Ctx<'_>) -> AppResult<Resp>;

/// A line of the route table: method and path, who may call it, and its handler.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub handler: Handler,
}

impl Route {
    /// Changes state: needs CSRF when authenticated by the session cookie.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && self.method != ANY_METHOD
    }

    /// Whether `path` is this route's: the same text, or for a route ending in `/{id}`, the
    /// same text before it and one non-empty segment in its place (which the handler reads).
    pub fn matches(&self, path: &str) -> bool {
        match self.path.strip_suffix("{id}") {
            Some(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|id| !id.is_empty() && !id.contains('/')),
            None => self.path == path,
        }
    }

    fn answers(&self, method: &str) -> bool {
        self.method == method || self.method == ANY_METHOD
    }
}

/// Paths a user who must change their password may still use.
const ALLOWED_BEFORE_PASSWORD_CHANGE: &[&str] = &[
    "/account/password",
    "/sessions/logout",
    "/api/users/change_password",
    "/api/authentication/logout",
    "/api/authentication/validate",
    "/api/users/current",
];

/// Routes a request to its handler among `routes`, enforcing authentication, access and CSRF
/// in one place.
pub fn dispatch(app: &App, routes: &[Route], req: &Req) -> Resp {
    let is_api = req.is_api();
    let fail = |err: AppError| {
        let retry_after = err.retry_after();
        with_retry_after(error_response(req, is_api, err), retry_after)
    };
    let Some(route) = routes
        .iter()
        .find(|r| r.matches(&req.path) && r.answers(&req.method))
    else {
        if routes.iter().any(|r| r.matches(&req.path)) {
            let mut allowed: Vec<&str> = routes
                .iter()
                .filter(|r| r.matches(&req.path))
                .map(|r| r.method)
                .collect();
            if allowed.contains(&"GET") {
                allowed.push("HEAD");
            }
            return fail(AppError::invalid(
                "method",
                format!("Method {} is not allowed here", req.method),
            ))
            .with_status(405)
            .with_header("Allow", allowed.join(", "));
        }
        return fail(AppError::not_found("Unknown URL"));
    };
    let conn = match app.pool.get(POOL_WAIT) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let now = app.now();
    let mut ctx = Ctx {
        app,
        req,
        conn,
        now,
        caller: None,
        cookies: Vec::new(),
    };
    let result = authorize_and_run(&mut ctx, route);
    // A handler may have given its connection back to the pool and failed to take one again:
    // rendering the error page needs one.
    if let Err(e) = ctx.conn.reacquire(POOL_WAIT) {
        return fail(e);
    }
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            let retry_after = err.retry_after();
            let resp = if is_api {
                Resp::api_error(&err)
            } else {
                views::error_page(&mut ctx, err)
            };
            with_retry_after(resp, retry_after)
        }
    };
    for cookie in ctx.cookies.drain(..) {
        resp.headers.push(("Set-Cookie".into(), cookie));
    }
    resp
}

fn authorize_and_run(ctx: &mut Ctx<'_>, route: &Route) -> AppResult<Resp> {
    if route.access == Access::Proxy {
        return (route.handler)(ctx);
    }
    let login_route = matches!(
        route.path,
        "/api/authentication/login" | "/api/authentication/validate" | "/sessions/new"
    );
    match auth::resolve(ctx.app, &mut ctx.conn, ctx.req, ctx.now)? {
        Credentials::Valid(caller) => ctx.caller = Some(*caller),
        Credentials::None => {}
        Credentials::Invalid(err) => {
            if route.path != "/api/authentication/validate" {
                return Err(err);
            }
        }
        Credentials::StaleSession => {
            let domain = auth::cookie_domain(ctx.app, &ctx.conn)?;
            ctx.cookies.extend(auth::clear_cookies(domain.as_deref()));
            if ctx.req.is_api() && !login_route {
                return Err(AppError::Unauthorized(
                    "Your session has expired; sign in again".into(),
                ));
            }
        }
    }
    if let Some(caller) = &ctx.caller {
        if caller.user.must_change_password
            && route.access != Access::Public
            && !ALLOWED_BEFORE_PASSWORD_CHANGE.contains(&route.path)
        {
            if ctx.req.is_api() {
                return Err(AppError::Unauthorized(
                    "You must change your password before using labgate".into(),
                ));
            }
            return Ok(Resp::redirect("/account/password"));
        }
    }
    match (route.access, &ctx.caller) {
        (Access::Public, _) => {}
        (_, None) => return Err(AppError::Unauthorized("Authentication is required".into())),
        (Access::Admin, Some(c)) if !c.is_admin() => return Err(AppError::Forbidden),
        _ => {}
    }
    // Sign-in forms are authenticated by the credentials they carry, not by the cookie.
    if route.is_write() && !login_route {
        if let Some(session) = ctx.caller.as_ref().and_then(|c| c.session()) {
            if !auth::csrf_ok(ctx.req, session) {
                return Err(AppError::Csrf);
            }
        }
    }
    (route.handler)(ctx)
}

/// `Retry-After: secs` on a refusal that passes with time.
fn with_retry_after(resp: Resp, retry_after: Option<u64>) -> Resp {
    match retry_after {
        Some(secs) => resp.with_header("Retry-After", secs.to_string()),
        None => resp,
    }
}

/// An error answered outside any handler (routing, limits, pool).
pub fn error_response(req: &Req, is_api: bool, err: AppError) -> Resp {
    if is_api {
        Resp::api_error(&err)
    } else {
        views::plain_error_page(req, &err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &'static str, path: &'static str) -> Route {
        fn handler(_: &mut Ctx<'_>) -> AppResult<Resp> {
            Ok(Resp::no_content())
        }
        Route {
            method,
            path,
            access: Access::Public,
            handler,
        }
    }

    #[test]
    fn a_route_ending_in_id_takes_one_non_empty_segment() {
        let r = route("GET", "/api/v2/labgate/applications/{id}");
        assert!(r.matches("/api/v2/labgate/applications/7"));
        assert!(r.matches("/api/v2/labgate/applications/abc"));
        assert!(!r.matches("/api/v2/labgate/applications/"));
        assert!(!r.matches("/api/v2/labgate/applications"));
        assert!(!r.matches("/api/v2/labgate/applications/7/x"));
        assert!(route("GET", "/a").matches("/a") && !route("GET", "/a").matches("/a/b"));
    }

    #[test]
    fn a_route_for_any_method_answers_each_and_changes_nothing() {
        let r = route(ANY_METHOD, "/gate/forward");
        assert!(["GET", "POST", "DELETE", "OPTIONS"]
            .iter()
            .all(|m| r.answers(m)));
        assert!(!r.is_write());
        assert!(route("PATCH", "/x").is_write() && !route("GET", "/x").is_write());
    }
}
