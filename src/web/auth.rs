//! Who is asking: credentials (Bearer / Basic token / Basic login:password / session cookie)
//! resolved to a caller with effective permissions; password sign-in with throttling;
//! session and CSRF cookies.

use super::caller_cache::{Credential, Identity, Key};
use super::request::Req;
use super::App;
use crate::accounts;
use crate::audit::{self, Action, By, Event};
use crate::authz;
use crate::crypto;
use crate::db::{self, sessions, tokens, users, PooledConn};
use crate::error::{AppError, AppResult};
use crate::model::Permission;
use crate::throttle::Verdict;
use base64::Engine;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "labgate_session";
pub const XSRF_COOKIE: &str = "XSRF-TOKEN";
pub const XSRF_HEADER: &str = "X-XSRF-TOKEN";
pub const CSRF_FIELD: &str = "csrf_token";

#[derive(Debug, Clone)]
pub enum Via {
    Session(Arc<sessions::Session>),
    Token,
    Password,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<users::User>,
    /// Effective permissions: the user's own and its groups'.
    pub permissions: Arc<BTreeSet<Permission>>,
    /// Names of the user's groups, sorted.
    pub groups: Arc<[String]>,
    /// See [`Identity::current_json`].
    pub current_json: Arc<std::sync::OnceLock<Vec<u8>>>,
    /// See [`Identity::gate_headers`].
    pub gate_headers: Arc<std::sync::OnceLock<crate::web::request::SharedHeaders>>,
    pub via: Via,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.permissions.contains(&Permission::Admin)
    }

    pub fn session(&self) -> Option<&sessions::Session> {
        match &self.via {
            Via::Session(s) => Some(s.as_ref()),
            _ => None,
        }
    }
}

/// Outcome of looking at the request's credentials.
pub enum Credentials {
    None,
    Valid(Box<Caller>),
    /// Credentials were presented but are wrong, unknown, revoked or expired.
    Invalid(AppError),
    /// Only a stale session cookie (expired or logged out).
    StaleSession,
}

impl Caller {
    fn new(identity: &Identity, via: Via) -> Caller {
        Caller {
            user: Arc::clone(&identity.user),
            permissions: Arc::clone(&identity.permissions),
            groups: Arc::clone(&identity.groups),
            current_json: Arc::clone(&identity.current_json),
            gate_headers: Arc::clone(&identity.gate_headers),
            via,
        }
    }
}

/// Who an active user is: the account, effective permissions and groups. `None` when the user
/// is gone or deactivated, or when GitLab no longer admits the person (a revalidation held the
/// account's access until they sign in with GitLab again).
fn load_identity(conn: &Connection, user_id: i64) -> AppResult<Option<Identity>> {
    let Some(user) = users::find_by_id(conn, user_id)? else {
        return Ok(None);
    };
    if !user.active {
        return Ok(None);
    }
    if user.external_id.is_some() && db::gitlab_revalidation::hold_of(conn, user.id)?.is_some() {
        return Ok(None);
    }
    let permissions = authz::effective(
        &db::permissions::of_user(conn, user.id)?,
        &db::permissions::of_user_groups(conn, user.id)?,
    );
    Ok(Some(Identity {
        groups: users::group_names(conn, user.id)?.into(),
        user: Arc::new(user),
        permissions: Arc::new(permissions),
        current_json: Default::default(),
        gate_headers: Default::default(),
    }))
}

fn unauthorized() -> AppError {
    AppError::Unauthorized("Authentication failed: wrong, revoked or expired credentials".into())
}

/// Resolves the caller from the Authorization header, else the session cookie. Session and
/// token callers come from `app.callers` when nothing was committed since they were read (see
/// [`super::caller_cache`]). A password in Basic credentials is checked with the connection
/// given back to the pool ([`check_password`]).
pub fn resolve(
    app: &App,
    conn: &mut PooledConn<'_>,
    req: &Req,
    now: i64,
) -> AppResult<Credentials> {
    if let Some(header) = req.header("authorization") {
        match authorization(header) {
            Authorization::Bearer(token) => return token_caller(app, conn, token, now),
            Authorization::Basic(None) => return Ok(Credentials::Invalid(unauthorized())),
            Authorization::Basic(Some((user, password))) => {
                if password.is_empty() {
                    return token_caller(app, conn, &user, now);
                }
                let by = by_of(req, None, chrono::Utc::now().timestamp_millis());
                return match check_password(app, conn, &user, &password, &by, now) {
                    Ok(u) => Ok(match load_identity(conn, u.id)? {
                        Some(identity) => {
                            Credentials::Valid(Box::new(Caller::new(&identity, Via::Password)))
                        }
                        None => Credentials::Invalid(unauthorized()),
                    }),
                    Err(e @ AppError::TooManyRequests { .. }) => Ok(Credentials::Invalid(e)),
                    Err(AppError::Unauthorized(_)) => Ok(Credentials::Invalid(unauthorized())),
                    Err(e) => Err(e),
                };
            }
            Authorization::Other => return Ok(Credentials::Invalid(unauthorized())),
        }
    }
    if let Some(value) = req.cookie(SESSION_COOKIE) {
        if value.is_empty() {
            return Ok(Credentials::None);
        }
        return session_caller(app, conn, value, now);
    }
    Ok(Credentials::None)
}

fn session_caller(app: &App, conn: &Connection, value: &str, now: i64) -> AppResult<Credentials> {
    if !sessions::well_formed(value) {
        return Ok(Credentials::StaleSession);
    }
    let digest = crypto::sha256(value);
    let key = Key::Session(digest);
    // Read before anything else: what is read below is current at least as of this generation.
    let generation = db::generation();
    if let Some(entry) = app.callers.get(&key, generation) {
        if let Credential::Session {
            session,
            idle_timeout_secs,
        } = &entry.credential
        {
            if sessions::is_live(session, now, *idle_timeout_secs) {
                let mut session = Arc::clone(session);
                if now - session.last_seen_at >= 60 {
                    let mut touched = (*session).clone();
                    sessions::touch(conn, &mut touched, now)?;
                    session = Arc::new(touched);
                    let mut renewed = (*entry).clone();
                    renewed.credential = Credential::Session {
                        session: Arc::clone(&session),
                        idle_timeout_secs: *idle_timeout_secs,
                    };
                    app.callers.insert(key, renewed, generation);
                }
                let caller = Caller::new(&entry.identity, Via::Session(session));
                return Ok(Credentials::Valid(Box::new(caller)));
            }
        }
        // Ran out (or not a session): the database path below deletes it and says so.
        app.callers.remove(&key);
    }
    let timeout = crate::settings::session_timeout_secs(conn)?;
    let Some(mut session) = sessions::find_by_hash(conn, &hex::encode(digest), now, timeout)?
    else {
        return Ok(Credentials::StaleSession);
    };
    sessions::touch(conn, &mut session, now)?;
    let Some(identity) = load_identity(conn, session.user_id)? else {
        return Ok(Credentials::StaleSession);
    };
    let session = Arc::new(session);
    let caller = Caller::new(&identity, Via::Session(Arc::clone(&session)));
    let credential = Credential::Session {
        session,
        idle_timeout_secs: timeout,
    };
    app.callers.remember(key, identity, credential, generation);
    Ok(Credentials::Valid(Box::new(caller)))
}

fn token_caller(app: &App, conn: &Connection, value: &str, now: i64) -> AppResult<Credentials> {
    if !tokens::well_formed(value) {
        return Ok(Credentials::Invalid(unauthorized()));
    }
    let digest = crypto::sha256(value);
    let key = Key::Token(digest);
    // Read before anything else: what is read below is current at least as of this generation.
    let generation = db::generation();
    if let Some(entry) = app.callers.get(&key, generation) {
        if let Credential::Token(token) = &entry.credential {
            if token.expires_at.is_none_or(|at| at > now) {
                if token.needs_touch(now) {
                    tokens::touch(conn, token.token_id, now)?;
                    let mut renewed = (*entry).clone();
                    renewed.credential = Credential::Token(tokens::Presented {
                        last_connection_at: Some(now),
                        ..*token
                    });
                    app.callers.insert(key, renewed, generation);
                }
                let caller = Caller::new(&entry.identity, Via::Token);
                return Ok(Credentials::Valid(Box::new(caller)));
            }
        }
        // Expired (or not a token): the database path below refuses it.
        app.callers.remove(&key);
    }
    let Some(mut token) = tokens::authenticate_hash(conn, &hex::encode(digest), now)? else {
        return Ok(Credentials::Invalid(unauthorized()));
    };
    let Some(identity) = load_identity(conn, token.user_id)? else {
        return Ok(Credentials::Invalid(unauthorized()));
    };
    if token.needs_touch(now) {
        tokens::touch(conn, token.token_id, now)?;
        token.last_connection_at = Some(now);
    }
    let caller = Caller::new(&identity, Via::Token);
    app.callers
        .remember(key, identity, Credential::Token(token), generation);
    Ok(Credentials::Valid(Box::new(caller)))
}

/// The caller of a request that a reverse proxy asks about (the gate): labgate's own
/// credentials only. A labgate API token in `Authorization` (`Bearer lgu_…`, or Basic with the
/// token as user name and an empty password) decides; any other `Authorization` belongs to the
/// application behind the proxy and is ignored, and the session cookie decides. `None`: not
/// signed in (no credentials, or wrong, revoked or expired ones).
pub fn gate_caller(
    app: &App,
    conn: &PooledConn<'_>,
    req: &Req,
    now: i64,
) -> AppResult<Option<Caller>> {
    let resolved = match req.header("authorization").and_then(labgate_token) {
        Some(token) => token_caller(app, conn, &token, now)?,
        None => match req.cookie(SESSION_COOKIE) {
            Some(value) if !value.is_empty() => session_caller(app, conn, value, now)?,
            _ => Credentials::None,
        },
    };
    Ok(match resolved {
        Credentials::Valid(caller) => Some(*caller),
        _ => None,
    })
}

/// The labgate API token an `Authorization` value carries, if it carries one: `Bearer lgu_…`,
/// or Basic with a user name starting `lgu_` and an empty password.
fn labgate_token(header: &str) -> Option<String> {
    match authorization(header) {
        Authorization::Bearer(token) => token
            .starts_with(crate::model::TOKEN_PREFIX)
            .then(|| token.to_string()),
        Authorization::Basic(Some((user, password))) => {
            (user.starts_with(crate::model::TOKEN_PREFIX) && password.is_empty()).then_some(user)
        }
        Authorization::Basic(None) | Authorization::Other => None,
    }
}

/// What an `Authorization` header carries: a bearer token, basic credentials (`None` when
/// they do not decode), or another scheme.
pub enum Authorization<'a> {
    Bearer(&'a str),
    Basic(Option<(String, String)>),
    Other,
}

/// Reads an `Authorization` header: the scheme (any case) and what follows it, trimmed.
pub fn authorization(header: &str) -> Authorization<'_> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Authorization::Bearer(rest)
    } else if scheme.eq_ignore_ascii_case("basic") {
        Authorization::Basic(decode_basic(rest))
    } else {
        Authorization::Other
    }
}

/// `(user, password)` from the base64 part of `Authorization: Basic`; `None` unless it is
/// base64 of UTF-8 text holding a `:` (public for the fuzz targets).
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// How long a password check waits for a hashing slot before answering 429.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks a local login and password, throttled per login and client network ([`Throttle`]).
/// A lock answers 429 at once. The connection is given back to the pool while the password is
/// verified (under [`HashingSlots`]: 429 when none comes free in time), so that wrong
/// passwords cannot starve other requests of connections. Errors: 401 for wrong credentials
/// (same answer and cost for unknown logins), 429 while locked or busy.
///
/// [`Throttle`]: crate::throttle::Throttle
/// [`HashingSlots`]: crate::throttle::HashingSlots
pub fn check_password(
    app: &App,
    conn: &mut PooledConn<'_>,
    login: &str,
    password: &str,
    by: &By,
    now: i64,
) -> AppResult<users::User> {
    let client = by.client;
    if let Verdict::Locked(secs) = app.throttle.check(login, client, now) {
        log::warn!(
            "sign-in provider=local login={login:?} outcome=refused reason=throttled for {secs}s"
        );
        crate::metrics::sign_in("local", "refused", "throttled");
        audit::failed_local_sign_in(conn, &app.failure_events, by, login, "throttled")?;
        return Err(AppError::too_many(
            format!("Too many failed sign-in attempts. Try again in {secs} seconds."),
            secs,
        ));
    }
    let user = users::find_by_login(conn, login)?;
    let hash = match &user {
        Some(u) if u.active => users::password_hash(conn, u.id)?,
        _ => None,
    };
    let verified = hashing(app, conn, || match &hash {
        Some(h) => crypto::verify_password(password, h),
        None => {
            crypto::dummy_verify(password);
            false
        }
    });
    let ok = match verified {
        Ok(ok) => ok,
        Err(busy @ AppError::TooManyRequests { .. }) => {
            log::warn!("sign-in provider=local login={login:?} outcome=refused reason=busy");
            return Err(busy);
        }
        Err(e) => return Err(e),
    };
    match user {
        Some(u) if ok => {
            app.throttle.record_success(login, client, now);
            crate::metrics::sign_in("local", "ok", "-");
            Ok(u)
        }
        _ => {
            app.throttle.record_failure(login, client, now);
            log::info!(
                "sign-in provider=local login={login:?} outcome=refused reason=bad credentials"
            );
            let reason = match (&user, &hash) {
                (None, _) => "unknown-login",
                (Some(u), _) if !u.active => "deactivated",
                (Some(_), None) => "no-password",
                (Some(_), Some(_)) => "wrong-password",
            };
            crate::metrics::sign_in("local", "failed", reason);
            audit::failed_local_sign_in(conn, &app.failure_events, by, login, reason)?;
            Err(AppError::Unauthorized("Authentication failed".into()))
        }
    }
}

/// Who acts in a request, for the audit log: the caller's login (none before sign-in), the
/// client address, the request id and the time (UTC milliseconds).
pub fn by_of(req: &Req, caller: Option<&Caller>, now_ms: i64) -> By {
    By {
        actor: caller.map(|c| c.user.login.clone()),
        client: req.client_ip,
        request_id: Some(req.request_id.clone()),
        at_ms: now_ms,
    }
}

/// Runs `work` (password hashing) with the connection given back to the pool and under a
/// hashing slot; 429 when no slot comes free in time.
pub fn hashing<T>(app: &App, conn: &mut PooledConn<'_>, work: impl FnOnce() -> T) -> AppResult<T> {
    let done = conn.released(super::POOL_WAIT, || {
        let _slot = app.hashing.acquire(HASHING_WAIT)?;
        Some(work())
    })?;
    done.ok_or_else(|| {
        AppError::too_many(
            "The server is busy checking passwords. Try again in a moment.",
            1,
        )
    })
}

/// The hash of a new local user's password, computed with [`hashing`]; `None` for a GitLab
/// user or an invalid password (which the creation then reports).
pub fn new_password_hash(
    app: &App,
    conn: &mut PooledConn<'_>,
    input: &crate::accounts::NewUserInput<'_>,
) -> AppResult<Option<String>> {
    if input.gitlab_username.is_some() || crate::model::validate_password(input.password).is_err() {
        return Ok(None);
    }
    let password = input.password;
    hashing(app, conn, || crypto::hash_password(password)).map(Some)
}

/// Changes a local user's password: `previous` is the current password, required when users
/// change their own; a wrong one counts as a failed sign-in of that login from that client
/// (so that a stolen session cannot be used to guess the password), and a locked login is
/// refused with 429. Hashing runs without holding the connection ([`hashing`]). Ends the
/// user's other sessions (all of them when `keep_session` is `None`).
#[allow(clippy::too_many_arguments)]
pub fn change_password(
    app: &App,
    conn: &mut PooledConn<'_>,
    by: &By,
    login: &str,
    new_password: &str,
    previous: Option<&str>,
    keep_session: Option<&str>,
    now: i64,
) -> AppResult<()> {
    let client = by.client;
    crate::model::validate_password(new_password)?;
    let (user, stored) = crate::accounts::password_of(conn, login)?;
    if previous.is_some() {
        if let Verdict::Locked(secs) = app.throttle.check(login, client, now) {
            audit::failed_local_sign_in(conn, &app.failure_events, by, login, "throttled")?;
            return Err(AppError::too_many(
                format!("Too many failed attempts. Try again in {secs} seconds."),
                secs,
            ));
        }
    }
    let (previous_ok, new_hash) = hashing(app, conn, || {
        let ok = previous.is_none_or(|p| crypto::verify_password(p, &stored));
        (ok, ok.then(|| crypto::hash_password(new_password)))
    })?;
    let (Some(new_hash), true) = (new_hash, previous_ok) else {
        app.throttle.record_failure(login, client, now);
        let reason = "wrong-current-password";
        audit::failed_local_sign_in(conn, &app.failure_events, by, login, reason)?;
        return Err(crate::accounts::incorrect_previous_password());
    };
    if let Some(previous) = previous {
        crate::accounts::check_new_differs(previous, new_password)?;
    }
    crate::accounts::replace_password(conn, by, user.id, &stored, &new_hash, keep_session, now)
}

/// Starts a session for a user whose password was just checked ([`accounts::start_session`],
/// in a transaction of its own); returns the cookies to set.
pub fn start_session(
    app: &App,
    conn: &mut Connection,
    by: &By,
    user: &users::User,
    previous: Option<&str>,
    now: i64,
) -> AppResult<Vec<String>> {
    // Read before the commit, which moves the commit generation.
    let stored = app.settings.current(conn)?;
    let tx = db::write_tx(conn)?;
    let started = accounts::start_session(&tx, user.id, previous, now)?;
    let event = Event::ok(Action::SigninLocal, &started.user.login);
    audit::record(&tx, &by.as_actor(&started.user.login), event)?;
    tx.commit()?;
    let domain = cookie_domain_of(app, &stored);
    let (value, csrf) = (&started.value, &started.session.csrf_token);
    Ok(session_cookies_for(
        &app.base_url_of(&stored),
        domain.as_deref(),
        value,
        csrf,
    ))
}

/// `; Secure` when browsers reach labgate over https, for every cookie labgate sets.
pub fn secure_attribute(app: &App, conn: &Connection) -> &'static str {
    secure_for(&app.base_url(conn))
}

/// [`secure_attribute`] for a base URL already read.
pub fn secure_for(base_url: &str) -> &'static str {
    if base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// The cookie domain in effect ([`crate::gate::cookie_domain`]).
pub fn cookie_domain(app: &App, conn: &Connection) -> AppResult<Option<String>> {
    let stored = app.settings.current(conn)?;
    Ok(cookie_domain_of(app, &stored))
}

/// [`cookie_domain`] with the settings already read.
pub fn cookie_domain_of(app: &App, stored: &crate::settings::Snapshot) -> Option<String> {
    let base_url = app.base_url_of(stored);
    crate::gate::cookie_domain(
        stored.stored(crate::settings::GATE_COOKIE_DOMAIN),
        &base_url,
    )
}

/// The cookies of a new session, for the base URL and the cookie domain in effect: the session
/// cookie (for the cookie domain when one is set) and the CSRF cookie (labgate's host only: the
/// applications need no CSRF token of labgate).
pub fn session_cookies_for(
    base_url: &str,
    domain: Option<&str>,
    value: &str,
    csrf: &str,
) -> Vec<String> {
    let secure = secure_for(base_url);
    let max_age = sessions::MAX_AGE_SECS;
    let mut cookies = Vec::with_capacity(3);
    let scope = match domain {
        // A host-only cookie of the same name, from before the domain was set, would be sent
        // alongside: it goes first.
        Some(domain) => {
            cookies.push(format!(
                "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
            ));
            format!("; Domain={domain}")
        }
        None => String::new(),
    };
    cookies.push(format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{scope}{secure}"
    ));
    cookies.push(format!(
        "{XSRF_COOKIE}={csrf}; Path=/; SameSite=Lax; Max-Age={max_age}{secure}"
    ));
    cookies
}

/// The cookies that end a session in the browser: labgate's host's, and the session cookie of
/// the cookie domain when one is set.
pub fn clear_cookies(domain: Option<&str>) -> Vec<String> {
    let mut cookies = vec![
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        format!("{XSRF_COOKIE}=; Path=/; SameSite=Lax; Max-Age=0"),
    ];
    if let Some(domain) = domain {
        cookies.push(format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Domain={domain}"
        ));
    }
    cookies
}

/// The origin (`scheme://host[:port]`) of a URL, lower-cased.
pub fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    url[..end].to_ascii_lowercase()
}

/// Whether a browser sent this request from another site: an `Origin` that is not labgate's
/// own (`base_url`'s), or `Sec-Fetch-Site: cross-site`. Clients that are not browsers send
/// neither and pass. Sign-in forms check it so that no other site can sign a browser in to an
/// account of the attacker's choosing (login CSRF).
pub fn cross_site(req: &Req, base_url: &str) -> bool {
    let foreign_origin = req
        .header("origin")
        .is_some_and(|o| o.trim().to_ascii_lowercase() != origin_of(base_url));
    let fetch_site = req
        .header("sec-fetch-site")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"));
    foreign_origin || fetch_site
}

/// Whether a cookie-authenticated write carries the session's CSRF token.
pub fn csrf_ok(req: &Req, session: &sessions::Session) -> bool {
    let presented = req.header(XSRF_HEADER).or_else(|| req.form.get(CSRF_FIELD));
    presented.is_some_and(|t| crypto::ct_eq(t, &session.csrf_token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::request::Params;

    /// An application over a fresh database in a temporary directory (WAL, counted commits).
    fn app(tag: &str) -> App {
        let dir = std::env::temp_dir().join(format!("labgate-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let flags = crate::config::Flags {
            listen: Some("127.0.0.1:9".into()),
            data_dir: Some(dir.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let config = crate::config::Config::from_flags(&flags, &|_| None).unwrap();
        let mut conn = db::open(&config.db_path()).unwrap();
        db::migrate(&mut conn).unwrap();
        db::bootstrap(&mut conn, Some("admin-password-123"), 0).unwrap();
        App::new(
            config,
            "127.0.0.1:9".parse().unwrap(),
            "test".into(),
            crate::gitlab::Client::new(None).unwrap(),
            2,
        )
    }

    fn request(headers: Vec<(String, String)>) -> Req {
        Req {
            method: "GET".into(),
            path: "/api/users/current".into(),
            raw_query: String::new(),
            query: Params::default(),
            form: Params::default(),
            headers,
            client_ip: None,
            request_id: "test".into(),
            body: Vec::new(),
        }
    }

    fn with_cookie(value: &str) -> Req {
        request(vec![("Cookie".into(), format!("{SESSION_COOKIE}={value}"))])
    }

    fn last_seen(conn: &Connection, value: &str) -> Option<i64> {
        sessions::last_seen_at(conn, &crypto::sha256_hex(value)).unwrap()
    }

    #[test]
    fn a_cached_session_is_touched_once_a_minute_and_expires_when_idle() {
        let app = app("session");
        let mut conn = app.pool.get(std::time::Duration::from_secs(1)).unwrap();
        let idle = crate::settings::session_timeout_secs(&conn).unwrap();
        let (value, _) = sessions::create(&conn, 1, 1_000).unwrap();
        let req = with_cookie(&value);
        let valid = |conn: &mut PooledConn<'_>, now| {
            matches!(resolve(&app, conn, &req, now), Ok(Credentials::Valid(_)))
        };
        assert!(valid(&mut conn, 1_001));
        assert_eq!(app.callers.len(), 1, "cached");
        assert!(valid(&mut conn, 1_030));
        assert_eq!(last_seen(&conn, &value), Some(1_000), "not yet a minute");
        assert!(valid(&mut conn, 1_060));
        assert_eq!(
            last_seen(&conn, &value),
            Some(1_060),
            "touched from the cache"
        );
        assert_eq!(app.callers.len(), 1, "still cached after the touch");
        // Kept alive by the touch: idle since 1_060, not since 1_000.
        assert!(valid(&mut conn, 1_000 + idle));
        assert!(matches!(
            resolve(&app, &mut conn, &req, 1_000 + idle + 60 + idle),
            Ok(Credentials::StaleSession)
        ));
        assert_eq!(
            last_seen(&conn, &value),
            None,
            "an expired session is deleted"
        );
    }

    #[test]
    fn a_cached_token_expires_on_its_date_and_records_its_use_once_a_minute() {
        let app = app("token");
        let mut conn = app.pool.get(std::time::Duration::from_secs(1)).unwrap();
        let token = tokens::create(&conn, 1, "ci", Some(2_000), 1_000).unwrap();
        let req = request(vec![("Authorization".into(), format!("Bearer {token}"))]);
        let valid = |conn: &mut PooledConn<'_>, now| {
            matches!(resolve(&app, conn, &req, now), Ok(Credentials::Valid(_)))
        };
        let last_used = |conn: &Connection| tokens::list(conn, 1).unwrap()[0].last_connection_at;
        assert!(valid(&mut conn, 1_001));
        assert_eq!(last_used(&conn), Some(1_001));
        assert!(valid(&mut conn, 1_050));
        assert_eq!(last_used(&conn), Some(1_001), "at most once a minute");
        assert!(valid(&mut conn, 1_062));
        assert_eq!(last_used(&conn), Some(1_062), "recorded from the cache");
        assert!(valid(&mut conn, 1_999));
        assert!(matches!(
            resolve(&app, &mut conn, &req, 2_000),
            Ok(Credentials::Invalid(AppError::Unauthorized(_)))
        ));
    }

    #[test]
    fn a_cached_caller_sees_a_commit_at_once() {
        let app = app("commit");
        let mut conn = app.pool.get(std::time::Duration::from_secs(1)).unwrap();
        let (value, _) = sessions::create(&conn, 1, 1_000).unwrap();
        let req = with_cookie(&value);
        let caller = |conn: &mut PooledConn<'_>| match resolve(&app, conn, &req, 1_001) {
            Ok(Credentials::Valid(c)) => c,
            _ => panic!("not signed in"),
        };
        assert!(caller(&mut conn).is_admin());
        let tx = db::write_tx(&mut conn).unwrap();
        db::permissions::grant_user(&tx, 1, Permission::Admin).unwrap();
        let group = db::groups::find_by_name(&tx, db::ADMIN_GROUP)
            .unwrap()
            .unwrap();
        db::permissions::revoke_group(&tx, group.id, Permission::Admin).unwrap();
        db::permissions::revoke_user(&tx, 1, Permission::Admin).unwrap();
        tx.commit().unwrap();
        assert!(!caller(&mut conn).is_admin());
        sessions::delete(&conn, &crypto::sha256_hex(&value)).unwrap();
        assert!(matches!(
            resolve(&app, &mut conn, &req, 1_002),
            Ok(Credentials::StaleSession)
        ));
    }
}

#[cfg(test)]
mod props {
    use super::decode_basic;
    use base64::Engine;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn basic_credentials_decode_to_what_was_encoded(user in "[^:]*", password in any::<String>()) {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{password}"));
            prop_assert_eq!(decode_basic(&encoded), Some((user, password)));
        }

        #[test]
        fn any_basic_value_decodes_or_is_refused_without_panic(raw in any::<String>()) {
            if let Some((user, _)) = decode_basic(&raw) {
                prop_assert!(!user.contains(':'));
            }
        }
    }
}
