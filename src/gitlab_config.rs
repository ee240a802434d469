//! The one GitLab configuration (SPEC §4), stored as the `sonar.auth.gitlab.*` settings so that
//! the settings API, the v2 configuration resource and the admin page are three doors to the
//! same state, effective on the next request.

use crate::db;
use crate::error::{AppError, AppResult};
use crate::settings::{self as s, GITLAB_KEYS};
use rusqlite::Connection;
use serde_json::{json, Map, Value};

/// The id of the single configuration in the v2 API.
pub const CONFIG_ID: &str = "gitlab-configuration";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitlabConfig {
    pub enabled: bool,
    pub url: String,
    pub application_id: Option<String>,
    /// Never shown; only whether it is set.
    pub secret: Option<String>,
    pub synchronize_groups: bool,
    pub allowed_groups: Vec<String>,
    pub allow_users_to_sign_up: bool,
}

impl GitlabConfig {
    /// Sign-in with GitLab is offered: enabled, and application ID and secret set.
    pub fn usable(&self) -> bool {
        self.enabled && self.application_id.is_some() && self.secret.is_some()
    }

    /// The v2 representation: never the secret.
    pub fn to_json(&self) -> Value {
        json!({
            "id": CONFIG_ID,
            "enabled": self.enabled,
            "applicationId": self.application_id,
            "url": self.url,
            "synchronizeGroups": self.synchronize_groups,
            "allowedGroups": self.allowed_groups,
            "allowUsersToSignUp": self.allow_users_to_sign_up,
            "provisioningType": "JIT",
            "isProvisioningTokenSet": false,
            "isSecretSet": self.secret.is_some(),
        })
    }

    pub fn scope(&self) -> &'static str {
        crate::provisioning::scope(self.synchronize_groups, &self.allowed_groups)
    }
}

pub fn load(conn: &Connection) -> AppResult<GitlabConfig> {
    Ok(GitlabConfig {
        enabled: s::flag(conn, s::GITLAB_ENABLED)?,
        url: s::value(conn, s::GITLAB_URL)?.unwrap_or_else(|| "https://gitlab.com".into()),
        application_id: db::settings::get(conn, s::GITLAB_APPLICATION_ID)?,
        secret: db::settings::get(conn, s::GITLAB_SECRET)?,
        synchronize_groups: s::flag(conn, s::GITLAB_GROUPS_SYNC)?,
        allowed_groups: s::values(conn, s::GITLAB_ALLOWED_GROUPS)?,
        allow_users_to_sign_up: s::flag(conn, s::GITLAB_SIGN_UP)?,
    })
}

/// A configuration exists once any of its settings is stored.
pub fn exists(conn: &Connection) -> AppResult<bool> {
    for key in GITLAB_KEYS {
        if db::settings::get(conn, key)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::invalid("body", message)
}

/// Parses a JSON object body.
pub fn parse_body(body: &[u8]) -> AppResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("The body must be a JSON object")),
        Err(e) => Err(bad(format!("The body is not valid JSON: {e}"))),
    }
}

/// One field of a v2 body turned into the setting values it stands for; `None` resets it.
fn field_values(name: &str, value: &Value) -> AppResult<(&'static str, Option<Vec<String>>)> {
    let as_bool = |key: &'static str| match value {
        Value::Bool(b) => Ok((key, Some(vec![b.to_string()]))),
        Value::Null => Ok((key, None)),
        _ => Err(bad(format!("'{name}' must be true or false"))),
    };
    let as_text = |key: &'static str| match value {
        Value::String(t) => Ok((key, Some(vec![t.clone()]))),
        Value::Null => Ok((key, None)),
        _ => Err(bad(format!("'{name}' must be a string"))),
    };
    match name {
        "enabled" => as_bool(s::GITLAB_ENABLED),
        "synchronizeGroups" => as_bool(s::GITLAB_GROUPS_SYNC),
        "allowUsersToSignUp" => as_bool(s::GITLAB_SIGN_UP),
        "url" => as_text(s::GITLAB_URL),
        "applicationId" => as_text(s::GITLAB_APPLICATION_ID),
        "secret" => as_text(s::GITLAB_SECRET),
        "allowedGroups" => match value {
            Value::Array(items) => {
                let mut slugs = Vec::new();
                for item in items {
                    match item {
                        Value::String(t) => slugs.push(t.clone()),
                        _ => return Err(bad("'allowedGroups' must be a list of strings")),
                    }
                }
                Ok((s::GITLAB_ALLOWED_GROUPS, Some(slugs)))
            }
            Value::Null => Ok((s::GITLAB_ALLOWED_GROUPS, None)),
            _ => Err(bad("'allowedGroups' must be a list of strings")),
        },
        other => Err(bad(format!("Unknown field '{other}'"))),
    }
}

/// Applies fields to the stored settings in `tx`, validating everything first. Changing the URL
/// requires the secret in the same request.
fn apply(tx: &Connection, fields: &Map<String, Value>) -> AppResult<()> {
    let mut writes: Vec<(&'static str, Option<String>)> = Vec::new();
    for (name, value) in fields {
        if name == "provisioningType" {
            match value {
                Value::String(t) if t == "JIT" => continue,
                Value::Null => continue,
                _ => return Err(bad("'provisioningType' must be \"JIT\": only just-in-time provisioning is supported")),
            }
        }
        if matches!(
            name.as_str(),
            "id" | "isProvisioningTokenSet" | "isSecretSet"
        ) {
            continue;
        }
        let (key, values) = field_values(name, value)?;
        let stored = match values {
            None => None,
            Some(values) if key == s::GITLAB_ALLOWED_GROUPS && values.is_empty() => None,
            Some(values) => {
                let def = s::known(key)?;
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                Some(s::normalize_values(def, &refs)?)
            }
        };
        writes.push((key, stored));
    }
    let new_url = writes.iter().find(|(k, _)| *k == s::GITLAB_URL);
    let secret_sent = writes
        .iter()
        .any(|(k, v)| *k == s::GITLAB_SECRET && v.is_some());
    if let Some((_, url)) = new_url {
        let current = s::value(tx, s::GITLAB_URL)?;
        let target = url.clone().or_else(|| Some("https://gitlab.com".into()));
        if target != current && !secret_sent && db::settings::get(tx, s::GITLAB_SECRET)?.is_some() {
            return Err(AppError::rule(s::URL_NEEDS_SECRET));
        }
    }
    for (key, stored) in writes {
        match stored {
            Some(v) => db::settings::set(tx, key, &v)?,
            None => db::settings::delete(tx, key)?,
        }
    }
    Ok(())
}

/// `POST`: creates the configuration; refused when one exists.
pub fn create(conn: &mut Connection, body: &[u8]) -> AppResult<GitlabConfig> {
    let fields = parse_body(body)?;
    for required in ["applicationId", "url", "secret"] {
        let given = fields.get(required).and_then(Value::as_str);
        if given.is_none_or(|t| t.trim().is_empty()) {
            return Err(bad(format!("'{required}' is required")));
        }
    }
    let tx = db::write_tx(conn)?;
    if exists(&tx)? {
        return Err(AppError::rule(
            "A GitLab configuration already exists; change it with PATCH or delete it first",
        ));
    }
    apply(&tx, &fields)?;
    let config = load(&tx)?;
    tx.commit()?;
    Ok(config)
}

/// `PATCH` (merge-patch): changes the fields given; `null` resets one.
pub fn patch(conn: &mut Connection, body: &[u8]) -> AppResult<GitlabConfig> {
    let fields = parse_body(body)?;
    let tx = db::write_tx(conn)?;
    if !exists(&tx)? {
        return Err(AppError::not_found("No GitLab configuration"));
    }
    apply(&tx, &fields)?;
    let config = load(&tx)?;
    tx.commit()?;
    Ok(config)
}

/// `DELETE`: forgets every GitLab setting.
pub fn delete(conn: &mut Connection) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    if !exists(&tx)? {
        return Err(AppError::not_found("No GitLab configuration"));
    }
    for key in GITLAB_KEYS {
        db::settings::delete(&tx, key)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"enabled":true,"applicationId":"app","url":"https://gl.example/","secret":"s3cret","allowedGroups":["acme"],"provisioningType":"JIT"}"#;

    #[test]
    fn create_load_and_json_never_show_the_secret() {
        let mut conn = db::test_db();
        assert!(!exists(&conn).unwrap());
        let c = create(&mut conn, BODY.as_bytes()).unwrap();
        assert!(c.usable());
        assert_eq!(c.url, "https://gl.example");
        assert_eq!(c.scope(), "read_api");
        assert!(!c.to_json().to_string().contains("s3cret"));
        assert!(matches!(
            create(&mut conn, BODY.as_bytes()),
            Err(AppError::Rule(_))
        ));
    }

    #[test]
    fn patch_url_needs_secret_and_null_resets() {
        let mut conn = db::test_db();
        create(&mut conn, BODY.as_bytes()).unwrap();
        let err = patch(&mut conn, br#"{"url":"https://evil.example"}"#).unwrap_err();
        assert_eq!(err.public_message(), s::URL_NEEDS_SECRET);
        let c = patch(
            &mut conn,
            br#"{"url":"https://gl2.example","secret":"new"}"#,
        )
        .unwrap();
        assert_eq!(c.url, "https://gl2.example");
        let c = patch(&mut conn, br#"{"allowedGroups":null,"enabled":false}"#).unwrap();
        assert!(c.allowed_groups.is_empty() && !c.enabled);
        assert_eq!(c.scope(), "read_user");
    }

    #[test]
    fn bad_bodies_change_nothing() {
        let mut conn = db::test_db();
        create(&mut conn, BODY.as_bytes()).unwrap();
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"enabled":"yes"}"#,
            br#"{"nope":1}"#,
            br#"{"url":"ftp://x"}"#,
            br#"{"provisioningType":"AUTO"}"#,
            br#"{"allowedGroups":["a/b"]}"#,
        ] {
            assert!(
                patch(&mut conn, body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(load(&conn).unwrap().allowed_groups, vec!["acme"]);
        delete(&mut conn).unwrap();
        assert!(!exists(&conn).unwrap());
        assert!(matches!(delete(&mut conn), Err(AppError::NotFound(_))));
    }
}
