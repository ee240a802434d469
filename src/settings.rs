//! Instance settings changed at run time (SonarQube keys): their definitions, validation,
//! defaults, and reading the effective value. Pages and `api/settings/*` both go through here.

use crate::db;
use crate::error::{AppError, AppResult};
use rusqlite::Connection;

pub const SERVER_BASE_URL: &str = "sonar.core.serverBaseURL";
pub const SESSION_TIMEOUT: &str = "sonar.web.sessionTimeoutInMinutes";

/// Default idle timeout of a session: 3 days.
pub const SESSION_TIMEOUT_DEFAULT_MIN: i64 = 3 * 24 * 60;
/// Bounds of the idle timeout, in minutes: 6 minutes to 3 months.
pub const SESSION_TIMEOUT_MIN: i64 = 6;
pub const SESSION_TIMEOUT_MAX: i64 = 90 * 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An absolute http(s) URL, stored without trailing `/`.
    Url,
    /// An integer within bounds.
    Integer { min: i64, max: i64 },
}

#[derive(Debug)]
pub struct Definition {
    pub key: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    /// `None`: no value until set.
    pub default: Option<&'static str>,
}

pub const DEFINITIONS: &[Definition] = &[
    Definition {
        key: SERVER_BASE_URL,
        name: "Server base URL",
        description: "The public URL browsers use to reach labgate, e.g. https://labgate.example.org. \
                      Used to build the GitLab redirect URI. Leave empty to use the address labgate is bound to.",
        kind: Kind::Url,
        default: None,
    },
    Definition {
        key: SESSION_TIMEOUT,
        name: "Session timeout (minutes)",
        description: "A signed-in session ends after this many minutes without activity \
                      (6 minutes to 3 months). Sessions never outlive 3 months.",
        kind: Kind::Integer {
            min: SESSION_TIMEOUT_MIN,
            max: SESSION_TIMEOUT_MAX,
        },
        default: Some("4320"),
    },
];

pub fn definition(key: &str) -> Option<&'static Definition> {
    DEFINITIONS.iter().find(|d| d.key == key)
}

pub fn known(key: &str) -> AppResult<&'static Definition> {
    definition(key).ok_or_else(|| AppError::not_found(format!("Setting '{key}' is not defined")))
}

/// Validates a value for a setting and returns the form it is stored in.
pub fn normalize(def: &Definition, raw: &str) -> AppResult<String> {
    let raw = raw.trim();
    match def.kind {
        Kind::Url => {
            let url = raw.trim_end_matches('/');
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() > "https://".len()
                && url.len() <= 2048
                && !url.chars().any(|c| c.is_whitespace() || c.is_control())
                && !url.contains(['?', '#']);
            if !ok {
                return Err(AppError::invalid(
                    "value",
                    format!("Setting '{}': '{raw}' is not a valid http or https URL", def.key),
                ));
            }
            Ok(url.to_string())
        }
        Kind::Integer { min, max } => match raw.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
            _ => Err(AppError::invalid(
                "value",
                format!(
                    "Setting '{}': value must be a whole number between {min} and {max}",
                    def.key
                ),
            )),
        },
    }
}

/// The stored value or the default.
pub fn value(conn: &Connection, key: &str) -> AppResult<Option<String>> {
    let def = known(key)?;
    Ok(db::settings::get(conn, key)?.or_else(|| def.default.map(str::to_string)))
}

/// Whether a value is stored (not just the default).
pub fn is_set(conn: &Connection, key: &str) -> AppResult<bool> {
    Ok(db::settings::get(conn, key)?.is_some())
}

pub fn set(conn: &mut Connection, key: &str, raw: &str) -> AppResult<()> {
    let def = known(key)?;
    let stored = normalize(def, raw)?;
    let tx = db::write_tx(conn)?;
    db::settings::set(&tx, key, &stored)?;
    tx.commit()?;
    Ok(())
}

pub fn reset(conn: &mut Connection, key: &str) -> AppResult<()> {
    known(key)?;
    let tx = db::write_tx(conn)?;
    db::settings::delete(&tx, key)?;
    tx.commit()?;
    Ok(())
}

/// The session idle timeout in seconds.
pub fn session_timeout_secs(conn: &Connection) -> AppResult<i64> {
    let minutes = value(conn, SESSION_TIMEOUT)?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(SESSION_TIMEOUT_DEFAULT_MIN)
        .clamp(SESSION_TIMEOUT_MIN, SESSION_TIMEOUT_MAX);
    Ok(minutes * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_setting_is_validated_and_normalized() {
        let def = known(SERVER_BASE_URL).unwrap();
        assert_eq!(normalize(def, "https://x.org/lab/").unwrap(), "https://x.org/lab");
        for bad in ["ftp://x", "x.org", "https://", "https://a b", "https://x?y"] {
            assert!(normalize(def, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn session_timeout_bounds_and_default() {
        let mut conn = db::test_db();
        assert_eq!(session_timeout_secs(&conn).unwrap(), 3 * 24 * 3600);
        assert!(set(&mut conn, SESSION_TIMEOUT, "5").is_err());
        assert!(set(&mut conn, SESSION_TIMEOUT, "abc").is_err());
        set(&mut conn, SESSION_TIMEOUT, "60").unwrap();
        assert_eq!(session_timeout_secs(&conn).unwrap(), 3600);
        reset(&mut conn, SESSION_TIMEOUT).unwrap();
        assert!(!is_set(&conn, SESSION_TIMEOUT).unwrap());
        assert!(set(&mut conn, "sonar.unknown", "1").is_err());
    }
}
