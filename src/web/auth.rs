//! Who is asking: credentials (Bearer / Basic token / Basic login:password / session cookie)
//! resolved to a caller with effective permissions; password sign-in with throttling;
//! session and CSRF cookies.

use super::request::Req;
use super::App;
use crate::authz;
use crate::crypto;
use crate::db::{self, sessions, tokens, users};
use crate::error::{AppError, AppResult};
use crate::model::Permission;
use crate::throttle::Verdict;
use base64::Engine;
use rusqlite::Connection;
use std::collections::BTreeSet;

pub const SESSION_COOKIE: &str = "labgate_session";
pub const XSRF_COOKIE: &str = "XSRF-TOKEN";
pub const XSRF_HEADER: &str = "X-XSRF-TOKEN";
pub const CSRF_FIELD: &str = "csrf_token";

#[derive(Debug, Clone)]
pub enum Via {
    Session(sessions::Session),
    Token,
    Password,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: users::User,
    pub permissions: BTreeSet<Permission>,
    pub via: Via,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.permissions.contains(&Permission::Admin)
    }

    pub fn session(&self) -> Option<&sessions::Session> {
        match &self.via {
            Via::Session(s) => Some(s),
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

fn load_caller(conn: &Connection, user_id: i64, via: Via) -> AppResult<Option<Caller>> {
    let Some(user) = users::find_by_id(conn, user_id)? else {
        return Ok(None);
    };
    if !user.active {
        return Ok(None);
    }
    let permissions = authz::effective(
        &db::permissions::of_user(conn, user.id)?,
        &db::permissions::of_user_groups(conn, user.id)?,
    );
    Ok(Some(Caller {
        user,
        permissions,
        via,
    }))
}

fn unauthorized() -> AppError {
    AppError::Unauthorized("Authentication failed: wrong, revoked or expired credentials".into())
}

/// Resolves the caller from the Authorization header, else the session cookie.
pub fn resolve(app: &App, conn: &Connection, req: &Req, now: i64) -> AppResult<Credentials> {
    if let Some(header) = req.header("authorization") {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return token_caller(conn, rest, now);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((user, password)) = decode_basic(rest) else {
                return Ok(Credentials::Invalid(unauthorized()));
            };
            if password.is_empty() {
                return token_caller(conn, &user, now);
            }
            return match check_password(app, conn, &user, &password, req, now) {
                Ok(u) => Ok(match load_caller(conn, u.id, Via::Password)? {
                    Some(c) => Credentials::Valid(Box::new(c)),
                    None => Credentials::Invalid(unauthorized()),
                }),
                Err(e @ AppError::TooManyRequests(_)) => Ok(Credentials::Invalid(e)),
                Err(AppError::Unauthorized(_)) => Ok(Credentials::Invalid(unauthorized())),
                Err(e) => Err(e),
            };
        }
        return Ok(Credentials::Invalid(unauthorized()));
    }
    if let Some(value) = req.cookie(SESSION_COOKIE) {
        if value.is_empty() {
            return Ok(Credentials::None);
        }
        let timeout = crate::settings::session_timeout_secs(conn)?;
        return match sessions::find(conn, value, now, timeout)? {
            Some(session) => {
                sessions::touch(conn, &session, now)?;
                let user_id = session.user_id;
                Ok(match load_caller(conn, user_id, Via::Session(session))? {
                    Some(c) => Credentials::Valid(Box::new(c)),
                    None => Credentials::StaleSession,
                })
            }
            None => Ok(Credentials::StaleSession),
        };
    }
    Ok(Credentials::None)
}

fn token_caller(conn: &Connection, value: &str, now: i64) -> AppResult<Credentials> {
    match tokens::authenticate(conn, value, now)? {
        Some((user_id, token_id)) => match load_caller(conn, user_id, Via::Token)? {
            Some(caller) => {
                tokens::touch(conn, token_id, now)?;
                Ok(Credentials::Valid(Box::new(caller)))
            }
            None => Ok(Credentials::Invalid(unauthorized())),
        },
        None => Ok(Credentials::Invalid(unauthorized())),
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

/// Checks a local login and password, throttled per login, per client address and globally.
/// Errors: 401 for wrong credentials (same answer for unknown logins), 429 while locked.
pub fn check_password(
    app: &App,
    conn: &Connection,
    login: &str,
    password: &str,
    req: &Req,
    now: i64,
) -> AppResult<users::User> {
    match app.throttle.check(login, req.client_ip, now) {
        Verdict::Allow => {}
        Verdict::Slow(wait) => std::thread::sleep(wait),
        Verdict::Locked(secs) => {
            log::warn!(
                "sign-in provider=local login={login:?} outcome=refused reason=throttled for {secs}s"
            );
            return Err(AppError::TooManyRequests(format!(
                "Too many failed sign-in attempts. Try again in {secs} seconds."
            )));
        }
    }
    let user = users::find_by_login(conn, login)?;
    let hash = match &user {
        Some(u) if u.active => users::password_hash(conn, u.id)?,
        _ => None,
    };
    let ok = match &hash {
        Some(h) => crypto::verify_password(password, h),
        None => {
            crypto::dummy_verify(password);
            false
        }
    };
    match user {
        Some(u) if ok => {
            app.throttle.record_success(login);
            Ok(u)
        }
        _ => {
            app.throttle.record_failure(login, req.client_ip, now);
            log::info!(
                "sign-in provider=local login={login:?} outcome=refused reason=bad credentials"
            );
            Err(AppError::Unauthorized("Authentication failed".into()))
        }
    }
}

/// Creates a session for a user who just proved who they are; returns the cookies to set.
pub fn start_session(
    app: &App,
    conn: &mut Connection,
    user: &users::User,
    now: i64,
) -> AppResult<Vec<String>> {
    let timeout = crate::settings::session_timeout_secs(conn)?;
    let tx = db::write_tx(conn)?;
    // Checked again inside the transaction: a deactivation that committed since the password
    // was verified must not leave a session behind.
    if !users::find_by_id(&tx, user.id)?.is_some_and(|u| u.active) {
        return Err(AppError::Unauthorized("Authentication failed".into()));
    }
    // Sessions that ran out are removed as new ones start, so the table does not grow.
    sessions::purge_expired(&tx, now, timeout)?;
    let (value, session) = sessions::create(&tx, user.id, now)?;
    users::touch_last_connection(&tx, user.id, now)?;
    tx.commit()?;
    Ok(session_cookies(app, conn, &value, &session.csrf_token))
}

/// `; Secure` when browsers reach labgate over https, for every cookie labgate sets.
pub fn secure_attribute(app: &App, conn: &Connection) -> &'static str {
    if app.base_url(conn).starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

pub fn session_cookies(app: &App, conn: &Connection, value: &str, csrf: &str) -> Vec<String> {
    let secure = secure_attribute(app, conn);
    let max_age = sessions::MAX_AGE_SECS;
    vec![
        format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        ),
        format!("{XSRF_COOKIE}={csrf}; Path=/; SameSite=Lax; Max-Age={max_age}{secure}"),
    ]
}

pub fn clear_cookies() -> Vec<String> {
    vec![
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        format!("{XSRF_COOKIE}=; Path=/; SameSite=Lax; Max-Age=0"),
    ]
}

/// Whether a cookie-authenticated write carries the session's CSRF token.
pub fn csrf_ok(req: &Req, session: &sessions::Session) -> bool {
    let presented = req.header(XSRF_HEADER).or_else(|| req.form.get(CSRF_FIELD));
    presented.is_some_and(|t| crypto::ct_eq(t, &session.csrf_token))
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
