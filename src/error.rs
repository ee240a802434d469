//! The one error type of labgate, and the one place that decides each error's HTTP status.

use crate::model::FieldError;
use std::fmt;

#[derive(Debug)]
pub enum AppError {
    /// Input failed validation (400 on the API, the form re-rendered with 422 on pages).
    Invalid(Vec<FieldError>),
    /// A request refused by a product rule (default group, last admin, duplicate name...).
    Rule(String),
    /// Not authenticated, or wrong / unknown / revoked / expired credentials.
    Unauthorized(String),
    /// Authenticated but lacking the permission.
    Forbidden,
    /// A cookie-authenticated write without the right CSRF token.
    Csrf,
    NotFound(String),
    /// Refused because of the state of something else right now (a run already running).
    Conflict(String),
    PayloadTooLarge,
    /// Refused for now; `retry_after` seconds is sent as `Retry-After`.
    TooManyRequests {
        message: String,
        retry_after: u64,
    },
    Unavailable(String),
    Db(rusqlite::Error),
    Internal(String),
}

impl AppError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> AppError {
        AppError::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn rule(message: impl Into<String>) -> AppError {
        AppError::Rule(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::NotFound(message.into())
    }

    /// 429 with `Retry-After: retry_after` (at least one second).
    pub fn too_many(message: impl Into<String>, retry_after: i64) -> AppError {
        AppError::TooManyRequests {
            message: message.into(),
            retry_after: retry_after.max(1) as u64,
        }
    }

    /// The `Retry-After` of a refusal that passes with time.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            AppError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The HTTP status of this error. Exhaustive on purpose: a new kind must choose.
    pub fn status(&self) -> u16 {
        match self {
            AppError::Invalid(_) | AppError::Rule(_) => 400,
            AppError::Unauthorized(_) => 401,
            AppError::Forbidden | AppError::Csrf => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::PayloadTooLarge => 413,
            AppError::TooManyRequests { .. } => 429,
            AppError::Unavailable(_) => 503,
            AppError::Db(_) | AppError::Internal(_) => 500,
        }
    }

    /// The message shown to the client. Internal details never leave the process.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Invalid(errors) => errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
            AppError::Rule(m)
            | AppError::Unauthorized(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m)
            | AppError::TooManyRequests { message: m, .. }
            | AppError::Unavailable(m) => m.clone(),
            AppError::Forbidden => "Insufficient privileges".into(),
            AppError::Csrf => "Invalid or missing CSRF token".into(),
            AppError::PayloadTooLarge => "Request body is too large".into(),
            AppError::Db(_) | AppError::Internal(_) => "An internal error occurred".into(),
        }
    }

    /// Messages of `{"errors":[{"msg":...}]}`: one per field error, else one.
    pub fn messages(&self) -> Vec<String> {
        match self {
            AppError::Invalid(errors) => errors.iter().map(|e| e.message.clone()).collect(),
            other => vec![other.public_message()],
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Db(e) => write!(f, "database: {e}"),
            AppError::Internal(m) => write!(f, "internal: {m}"),
            other => f.write_str(&other.public_message()),
        }
    }
}

impl std::error::Error for AppError {}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        AppError::Db(e)
    }
}

impl From<FieldError> for AppError {
    fn from(e: FieldError) -> Self {
        AppError::Invalid(vec![e])
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// A request body that must be a JSON object (the bodies of the v2 API), parsed; otherwise an
/// error on the field `body` saying what is wrong.
pub fn json_object_body(body: &[u8]) -> AppResult<serde_json::Map<String, serde_json::Value>> {
    let bad = |message: String| AppError::invalid("body", message);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("The body must be a JSON object".into())),
        Err(e) => Err(bad(format!("The body is not valid JSON: {e}"))),
    }
}
