//! The Web API (SonarQube-compatible subset): JSON views of the model, paging, and one
//! handler per endpoint calling the same rules and store functions as the pages.

pub mod applications;
pub mod gitlab;
pub mod groups;
pub mod permissions;
pub mod settings;
pub mod system;
pub mod tokens;
pub mod users;

use crate::db::users::User;
use crate::error::{AppError, AppResult};
use crate::web::request::Req;
use serde_json::{json, Value};

/// SonarQube's date-time format: `2024-01-15T10:20:30+0000`.
pub fn format_datetime(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S+0000").to_string())
        .unwrap_or_default()
}

/// Page request: `p` (1-based) and `ps` (1–500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: i64,
    pub size: i64,
}

pub const MAX_PAGE_SIZE: i64 = 500;

impl Paging {
    pub fn from_req(req: &Req, default_size: i64) -> AppResult<Paging> {
        let page = match req.param("p").map(str::trim).filter(|s| !s.is_empty()) {
            None => 1,
            Some(raw) => match raw.parse::<i64>() {
                Ok(p) if (1..=1_000_000).contains(&p) => p,
                _ => {
                    return Err(AppError::invalid(
                        "p",
                        format!("'p' value ({raw}) must be a whole number of at least 1"),
                    ))
                }
            },
        };
        let size = match req.param("ps").map(str::trim).filter(|s| !s.is_empty()) {
            None => default_size,
            Some(raw) => match raw.parse::<i64>() {
                Ok(s) if (1..=MAX_PAGE_SIZE).contains(&s) => s,
                _ => {
                    return Err(AppError::invalid(
                        "ps",
                        format!("'ps' value ({raw}) must be between 1 and {MAX_PAGE_SIZE}"),
                    ))
                }
            },
        };
        Ok(Paging { page, size })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.size
    }

    pub fn json(&self, total: i64) -> Value {
        json!({ "pageIndex": self.page, "pageSize": self.size, "total": total })
    }
}

/// The optional search text `q`, at least `min` characters when given.
pub fn query_text(req: &Req, min: usize) -> AppResult<Option<String>> {
    match req.param("q").map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(q) if q.chars().count() < min => Err(AppError::invalid(
            "q",
            format!(
                "'q' length ({}) is shorter than the minimum authorized ({min})",
                q.chars().count()
            ),
        )),
        Some(q) => Ok(Some(q.to_string())),
    }
}

/// A boolean parameter (`true`/`false`/`yes`/`no`), or the default when absent.
pub fn bool_param(req: &Req, name: &'static str, default: bool) -> AppResult<bool> {
    match req.param(name).map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some("true") | Some("yes") => Ok(true),
        Some("false") | Some("no") => Ok(false),
        Some(other) => Err(AppError::invalid(
            name,
            format!("Value of parameter '{name}' ({other}) must be one of: [true, false, yes, no]"),
        )),
    }
}

/// The short user object of `api/users/create|update|deactivate`.
pub fn user_json(user: &User) -> Value {
    let mut v = json!({
        "login": user.login,
        "name": user.name,
        "active": user.active,
        "local": user.local,
        "externalIdentity": user.identity(),
        "externalProvider": user.provider(),
        "scmAccounts": [],
    });
    if let Some(email) = &user.email {
        v["email"] = json!(email);
    }
    v
}
