//! HTTP plumbing shared by pages and API: the application state, the per-request context, what
//! a route is, and dispatch (who is asking → may they → CSRF → handler → error mapping). The
//! route table itself (`crate::routes`) stands above the handlers and comes in as data.

pub mod auth;
pub mod caller_cache;
pub mod request;
pub mod views;

use crate::config::Config;
use crate::db::{Pool, PooledConn};
use crate::error::{AppError, AppResult};
use crate::throttle::Throttle;
use auth::{Caller, Credentials};
use request::{Req, Resp};
use rusqlite::Connection;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the handlers share, for the life of the process.
pub struct App {
    pub config: Config,
    pub pool: Pool,
    pub throttle: Throttle,
    /// Password verifications running at once.
    pub hashing: crate::throttle::HashingSlots,
    /// GitLab sign-ins started per client network.
    pub sign_in_starts: crate::throttle::SignInStarts,
    /// GitLab sign-in callbacks per client network (each may cost calls to GitLab).
    pub sign_in_callbacks: crate::throttle::SignInStarts,
    /// The address actually bound (port 0 resolved).
    pub bound: SocketAddr,
    /// Set on SIGTERM: new requests answer 503.
    pub draining: AtomicBool,
    /// Requests being handled right now.
    pub in_flight: AtomicUsize,
    pub server_id: String,
    /// The one configured HTTP client for GitLab.
    pub gitlab: crate::gitlab::Client,
    /// Session and token callers recently resolved.
    pub callers: caller_cache::CallerCache,
}

/// Connections the pool opens at most.
pub const POOL_SIZE: usize = 8;
/// Longest wait for a pooled connection before answering 503.
pub const POOL_WAIT: Duration = Duration::from_secs(10);

impl App {
    /// The state of a server bound to `bound`, with a pool of `pool_size` connections.
    pub fn new(
        config: Config,
        bound: SocketAddr,
        server_id: String,
        gitlab: crate::gitlab::Client,
        pool_size: usize,
    ) -> App {
        App {
            pool: Pool::new(config.db_path(), pool_size),
            config,
            throttle: Throttle::new(),
            hashing: crate::throttle::HashingSlots::per_core(),
            sign_in_starts: crate::throttle::SignInStarts::new(),
            sign_in_callbacks: crate::throttle::SignInStarts::new(),
            bound,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            server_id,
            gitlab,
            callers: caller_cache::CallerCache::default(),
        }
    }

    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// The public base URL: `--base-url`, else the `sonar.core.serverBaseURL` setting, else the
    /// bound address.
    pub fn base_url(&self, conn: &Connection) -> String {
        if let Some(url) = &self.config.base_url {
            return url.clone();
        }
        if let Ok(Some(url)) = crate::db::settings::get(conn, crate::settings::SERVER_BASE_URL) {
            return url;
        }
        format!("http://{}", self.bound)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user.
    User,
    /// Users holding `admin` ("Administer System").
    Admin,
}

pub type Handler = fn(&mut Ctx<'_>) -> AppResult<Resp>;

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub handler: Handler,
}

impl Route {
    /// Changes state: needs CSRF when authenticated by the session cookie.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// One request being handled.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub req: &'a Req,
    pub conn: PooledConn<'a>,
    pub now: i64,
    pub caller: Option<Caller>,
    /// `Set-Cookie` values to add to the response.
    pub cookies: Vec<String>,
}

impl Ctx<'_> {
    /// The signed-in caller; routes with `Access::User` or `Access::Admin` always have one.
    pub fn caller(&self) -> AppResult<&Caller> {
        self.caller
            .as_ref()
            .ok_or_else(|| AppError::Unauthorized("Authentication is required".into()))
    }

    pub fn base_url(&self) -> String {
        self.app.base_url(&self.conn)
    }

    /// Stores a one-shot confirmation shown on the next page of this session.
    pub fn flash(&self, message: &str) -> AppResult<()> {
        if let Some(session) = self.caller.as_ref().and_then(|c| c.session()) {
            crate::db::sessions::set_flash(&self.conn, &session.id_hash, message)?;
        }
        Ok(())
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
        .find(|r| r.path == req.path && r.method == req.method)
    else {
        if routes.iter().any(|r| r.path == req.path) {
            let mut allowed: Vec<&str> = routes
                .iter()
                .filter(|r| r.path == req.path)
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
            ctx.cookies.extend(auth::clear_cookies());
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

impl Resp {
    pub fn with_status(mut self, status: u16) -> Resp {
        self.status = status;
        self
    }
}
