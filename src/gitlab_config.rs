//! The one GitLab configuration, stored as the `sonar.auth.gitlab.*` settings so that
//! the settings API, the v2 configuration resource and the admin page are three doors to the
//! same state, effective on the next request.

use crate::audit::{self, Action, By, Event};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::model::FieldError;
use crate::settings::{self as s, GITLAB_KEYS};
use rusqlite::Connection;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The redirect URI to register in GitLab for a base URL.
pub fn redirect_uri(base_url: &str) -> String {
    format!("{base_url}/oauth2/callback/gitlab")
}

/// The id of the single configuration in the v2 API.
pub const CONFIG_ID: &str = "gitlab-configuration";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitlabConfig {
    pub enabled: bool,
    pub url: String,
    pub application_id: Option<String>,
    /// Never shown; only whether it is set. `None` also when it is stored but does not open
    /// with labgate's key file ([`GitlabConfig::secret_unreadable`]).
    pub secret: Option<String>,
    /// A secret is stored but does not open with the key file labgate has (the key file was
    /// replaced, or the database restored without it): it must be entered again.
    pub secret_unreadable: bool,
    pub synchronize_groups: bool,
    pub allowed_groups: Vec<String>,
    pub allow_users_to_sign_up: bool,
    /// `provisioningType` `AUTO_PROVISIONING`: accounts follow GitLab's groups, read on a
    /// schedule; `false`: `JIT`, accounts made at sign-in.
    pub auto_provisioning: bool,
    /// The token automatic provisioning reads GitLab with. Never shown; only whether it is set.
    /// `None` also when it is stored but does not open with labgate's key file
    /// ([`GitlabConfig::provisioning_token_unreadable`]).
    pub provisioning_token: Option<String>,
    /// A provisioning token is stored but does not open with the key file labgate has: it must
    /// be entered again (as the secret: [`GitlabConfig::secret_unreadable`]).
    pub provisioning_token_unreadable: bool,
}

/// `provisioningType` in the v2 resource.
pub const JIT: &str = "JIT";
pub const AUTO_PROVISIONING: &str = "AUTO_PROVISIONING";

impl GitlabConfig {
    /// Sign-in with GitLab is offered: enabled, and application ID and secret set.
    pub fn usable(&self) -> bool {
        self.enabled && self.application_id.is_some() && self.secret.is_some()
    }

    /// The v2 representation: never the secret nor the provisioning token.
    pub fn to_json(&self) -> Value {
        json!({
            "id": CONFIG_ID,
            "enabled": self.enabled,
            "applicationId": self.application_id,
            "url": self.url,
            "synchronizeGroups": self.synchronize_groups,
            "allowedGroups": self.allowed_groups,
            "allowUsersToSignUp": self.allow_users_to_sign_up,
            "provisioningType": self.provisioning_type(),
            "isProvisioningTokenSet": self.provisioning_token.is_some(),
            "isSecretSet": self.secret.is_some(),
        })
    }

    /// `JIT` or `AUTO_PROVISIONING`.
    pub fn provisioning_type(&self) -> &'static str {
        if self.auto_provisioning {
            AUTO_PROVISIONING
        } else {
            JIT
        }
    }

    /// Whether automatic provisioning can run: on, with its token and an allowed group.
    pub fn provisions(&self) -> bool {
        self.auto_provisioning
            && self.provisioning_token.is_some()
            && !self.allowed_groups.is_empty()
    }

    /// Whether automatic provisioning is chosen but cannot run because its token, stored, does
    /// not open with labgate's key file: the token must be entered again.
    pub fn provisioning_token_lost(&self) -> bool {
        self.auto_provisioning && self.provisioning_token_unreadable
    }

    /// Whether sign-in synchronizes groups: the setting is on and at least one allowed group
    /// bounds which GitLab paths it takes. A configuration stored before that rule may have it
    /// on without an allowed group: synchronization then does nothing and counts as off.
    pub fn synchronizes(&self) -> bool {
        crate::provisioning::synchronizes(self.synchronize_groups, &self.allowed_groups)
    }

    /// The configuration as the sign-in rules see it.
    pub fn policy(&self) -> crate::provisioning::Policy<'_> {
        crate::provisioning::Policy {
            allow_sign_up: self.allow_users_to_sign_up,
            synchronize_groups: self.synchronize_groups,
            allowed_groups: &self.allowed_groups,
            auto_provisioning: self.auto_provisioning,
        }
    }

    /// The settings to call GitLab with, when the application ID and a readable secret are set
    /// (whether sign-in is enabled or not).
    pub fn gitlab_settings(&self) -> Option<crate::gitlab::GitlabSettings> {
        Some(crate::gitlab::GitlabSettings {
            url: self.url.clone(),
            application_id: self.application_id.clone()?,
            secret: self.secret.clone()?,
        })
    }

    /// The scopes a sign-in asks of GitLab: always the same (see [`crate::provisioning::SCOPES`]).
    pub fn scope(&self) -> &'static str {
        crate::provisioning::SCOPES
    }
}

/// The configuration in effect, read with one query.
pub fn load(conn: &Connection) -> AppResult<GitlabConfig> {
    of(&s::Snapshot::load(conn)?)
}

/// The configuration held in `stored` (the settings as read at once: [`s::Snapshot`]).
pub fn of(stored: &s::Snapshot) -> AppResult<GitlabConfig> {
    let secret = stored.secret(s::GITLAB_SECRET);
    let secret_unreadable = matches!(secret, s::Secret::Unreadable(_));
    let token = stored.secret(s::GITLAB_PROVISIONING_TOKEN);
    let provisioning_token_unreadable = matches!(token, s::Secret::Unreadable(_));
    Ok(GitlabConfig {
        enabled: stored.flag(s::GITLAB_ENABLED)?,
        url: stored
            .value(s::GITLAB_URL)?
            .unwrap_or_else(|| "https://gitlab.com".into()),
        application_id: stored.stored(s::GITLAB_APPLICATION_ID).map(str::to_string),
        secret: secret.value(),
        secret_unreadable,
        synchronize_groups: stored.flag(s::GITLAB_GROUPS_SYNC)?,
        allowed_groups: stored.values(s::GITLAB_ALLOWED_GROUPS),
        allow_users_to_sign_up: stored.flag(s::GITLAB_SIGN_UP)?,
        auto_provisioning: stored.flag(s::GITLAB_PROVISIONING)?,
        provisioning_token: token.value(),
        provisioning_token_unreadable,
    })
}

/// The configuration of the settings snapshot last asked about ([`crate::settings::Cache`]
/// shares one snapshot between requests until a setting changes), worked out once for it:
/// working it out opens the sealed application secret and provisioning token, which each
/// sign-in would otherwise do twice (at its start and at GitLab's callback).
#[derive(Default)]
pub struct Held(std::sync::Mutex<Option<(Arc<s::Snapshot>, Arc<GitlabConfig>)>>);

impl Held {
    /// The configuration of `stored`: the one held when `stored` is the snapshot it was worked
    /// out from (the same allocation, which the held copy keeps alive), else worked out now.
    pub fn of(&self, stored: &Arc<s::Snapshot>) -> AppResult<Arc<GitlabConfig>> {
        let held = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((snapshot, config)) = held().as_ref() {
            if Arc::ptr_eq(snapshot, stored) {
                return Ok(Arc::clone(config));
            }
        }
        let config = Arc::new(of(stored)?);
        *held() = Some((Arc::clone(stored), Arc::clone(&config)));
        Ok(config)
    }
}

/// A configuration exists once any of its settings is stored.
pub fn exists(conn: &Connection) -> AppResult<bool> {
    let stored = s::Snapshot::load(conn)?;
    Ok(GITLAB_KEYS.iter().any(|key| stored.is_set(key)))
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::invalid("body", message)
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
        "provisioningToken" => as_text(s::GITLAB_PROVISIONING_TOKEN),
        "provisioningType" => match value {
            Value::String(t) if t == JIT => {
                Ok((s::GITLAB_PROVISIONING, Some(vec!["false".into()])))
            }
            Value::String(t) if t == AUTO_PROVISIONING => {
                Ok((s::GITLAB_PROVISIONING, Some(vec!["true".into()])))
            }
            Value::Null => Ok((s::GITLAB_PROVISIONING, None)),
            _ => Err(bad(
                "'provisioningType' must be \"JIT\" or \"AUTO_PROVISIONING\"",
            )),
        },
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
/// requires the secret in the same request; group synchronization needs an allowed group.
fn apply(tx: &Connection, fields: &Map<String, Value>) -> AppResult<()> {
    let mut writes: Vec<(&'static str, Option<String>)> = Vec::new();
    for (name, value) in fields {
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
    let sent = |key: &str| writes.iter().any(|(k, v)| *k == key && v.is_some());
    if let Some((_, url)) = new_url {
        let target = url.as_deref().unwrap_or("https://gitlab.com");
        s::check_new_url(
            tx,
            target,
            sent(s::GITLAB_SECRET),
            sent(s::GITLAB_PROVISIONING_TOKEN),
        )?;
    }
    write(tx, writes)
}

/// Stores (`Some`) or resets (`None`) each setting in `tx`, then refuses the whole change when
/// it leaves group synchronization on without an allowed group, or automatic provisioning
/// without its token or an allowed group ([`s::check_group_sync`]).
fn write(tx: &Connection, writes: Vec<(&'static str, Option<String>)>) -> AppResult<()> {
    let before = s::group_sync(tx)?;
    for (key, stored) in writes {
        match stored {
            Some(v) => s::store(tx, key, &v)?,
            None => db::settings::delete(tx, key)?,
        }
    }
    s::check_group_sync(tx, &before)
}

/// Records a change of the configuration from `before` to `after` (`operation`: `create`,
/// `update` or `delete`): each field that changed with its old and new value, as the v2
/// resource shows them, so never the secret; `secret_sent` says a new secret was stored.
fn record_change(
    tx: &Connection,
    by: &By,
    operation: &str,
    before: &GitlabConfig,
    after: &GitlabConfig,
    secret_sent: bool,
) -> AppResult<()> {
    let mut event = Event::ok(Action::GitlabConfigure, CONFIG_ID).with("operation", operation);
    let (old, new) = (before.to_json(), after.to_json());
    if let (Value::Object(old), Value::Object(new)) = (&old, &new) {
        for (field, value) in new {
            event = event.change(
                field,
                old.get(field).cloned().unwrap_or(Value::Null),
                value.clone(),
            );
        }
    }
    if secret_sent {
        event = event.with("secretChanged", true);
    }
    audit::record(tx, by, event)?;
    Ok(())
}

/// Whether a v2 body sends a new secret.
fn sends_secret(fields: &Map<String, Value>) -> bool {
    fields
        .get("secret")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty())
}

/// `POST`: creates the configuration; refused when one exists.
pub fn create(conn: &mut Connection, by: &By, body: &[u8]) -> AppResult<GitlabConfig> {
    let fields = crate::error::json_object_body(body)?;
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
    let before = load(&tx)?;
    apply(&tx, &fields)?;
    let config = load(&tx)?;
    record_change(&tx, by, "create", &before, &config, sends_secret(&fields))?;
    tx.commit()?;
    Ok(config)
}

/// `PATCH` (merge-patch): changes the fields given; `null` resets one.
pub fn patch(conn: &mut Connection, by: &By, body: &[u8]) -> AppResult<GitlabConfig> {
    let fields = crate::error::json_object_body(body)?;
    let tx = db::write_tx(conn)?;
    if !exists(&tx)? {
        return Err(AppError::not_found("No GitLab configuration"));
    }
    let before = load(&tx)?;
    apply(&tx, &fields)?;
    let config = load(&tx)?;
    record_change(&tx, by, "update", &before, &config, sends_secret(&fields))?;
    tx.commit()?;
    Ok(config)
}

/// `DELETE`: forgets every GitLab setting.
pub fn delete(conn: &mut Connection, by: &By) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    if !exists(&tx)? {
        return Err(AppError::not_found("No GitLab configuration"));
    }
    let before = load(&tx)?;
    for key in GITLAB_KEYS {
        db::settings::delete(&tx, key)?;
    }
    let after = load(&tx)?;
    record_change(&tx, by, "delete", &before, &after, false)?;
    tx.commit()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The admin page's door: typed changes, validated by the same settings rules, one transaction.

/// Refusal when sign-in with GitLab would be enabled without the credentials it needs.
pub const ENABLE_NEEDS_CREDENTIALS: &str =
    "GitLab sign-in cannot be enabled yet: set the application ID and the secret first (Edit).";

/// A change sent by the admin page; `None` leaves a field as it is. The secret is write-only:
/// `None` or an empty value keeps the stored one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GitlabForm {
    pub enabled: Option<bool>,
    pub application_id: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub synchronize_groups: Option<bool>,
    pub allowed_groups: Option<Vec<String>>,
    pub allow_users_to_sign_up: Option<bool>,
    /// `Some(true)`: automatic provisioning; `Some(false)`: Just-in-Time.
    pub auto_provisioning: Option<bool>,
    /// Write-only like the secret: `None` or an empty value keeps the stored one.
    pub provisioning_token: Option<String>,
}

impl GitlabForm {
    /// The new secret, when one was typed.
    fn new_secret(&self) -> Option<&str> {
        self.secret.as_deref().filter(|t| !t.trim().is_empty())
    }

    /// The new provisioning token, when one was typed.
    fn new_token(&self) -> Option<&str> {
        self.provisioning_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
    }
}

/// Never prints the secret, only whether one was sent.
impl std::fmt::Debug for GitlabForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitlabForm")
            .field("enabled", &self.enabled)
            .field("application_id", &self.application_id)
            .field("url", &self.url)
            .field("secret", &self.new_secret().map(|_| "<sent>"))
            .field("synchronize_groups", &self.synchronize_groups)
            .field("allowed_groups", &self.allowed_groups)
            .field("allow_users_to_sign_up", &self.allow_users_to_sign_up)
            .field("auto_provisioning", &self.auto_provisioning)
            .field("provisioning_token", &self.new_token().map(|_| "<sent>"))
            .finish()
    }
}

/// Validates `raws` for `key` with the settings rules; errors are reported on the form `field`,
/// named after the setting ("GitLab URL: ...") rather than its key.
fn form_value(
    field: &'static str,
    key: &'static str,
    raws: &[&str],
    errors: &mut Vec<FieldError>,
) -> AppResult<Option<String>> {
    let def = s::known(key)?;
    match s::normalize_values(def, raws) {
        Ok(v) => Ok(Some(v)),
        Err(AppError::Invalid(found)) => {
            let prefix = format!("Setting '{key}'");
            errors.extend(
                found
                    .into_iter()
                    .map(|e| FieldError::new(field, e.message.replacen(&prefix, def.name, 1))),
            );
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// The settings a form writes (`None`: reset), or every field error at once.
fn form_writes(form: &GitlabForm) -> AppResult<Vec<(&'static str, Option<String>)>> {
    let mut errors = Vec::new();
    let mut writes = Vec::new();
    let flags = [
        (s::GITLAB_ENABLED, form.enabled),
        (s::GITLAB_GROUPS_SYNC, form.synchronize_groups),
        (s::GITLAB_SIGN_UP, form.allow_users_to_sign_up),
        (s::GITLAB_PROVISIONING, form.auto_provisioning),
    ];
    for (key, flag) in flags {
        if let Some(b) = flag {
            writes.push((key, Some(b.to_string())));
        }
    }
    let texts = [
        (
            "applicationId",
            s::GITLAB_APPLICATION_ID,
            form.application_id.as_deref(),
        ),
        ("url", s::GITLAB_URL, form.url.as_deref()),
        ("secret", s::GITLAB_SECRET, form.new_secret()),
        (
            "provisioningToken",
            s::GITLAB_PROVISIONING_TOKEN,
            form.new_token(),
        ),
    ];
    for (field, key, text) in texts {
        if let Some(text) = text {
            if let Some(v) = form_value(field, key, &[text], &mut errors)? {
                writes.push((key, Some(v)));
            }
        }
    }
    if let Some(groups) = &form.allowed_groups {
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        if let Some(v) = form_value(
            "allowedGroups",
            s::GITLAB_ALLOWED_GROUPS,
            &refs,
            &mut errors,
        )? {
            let stored = (v != "[]").then_some(v);
            writes.push((s::GITLAB_ALLOWED_GROUPS, stored));
        }
    }
    if errors.is_empty() {
        Ok(writes)
    } else {
        Err(AppError::Invalid(errors))
    }
}

/// Applies a validated form in `tx`: the URL changes only with the secret, enabling needs the
/// application ID and the secret, and group synchronization needs an allowed group (refused on
/// the `groupsSync` field).
fn apply_form(tx: &Connection, form: &GitlabForm) -> AppResult<GitlabConfig> {
    let writes = form_writes(form)?;
    if let Some((_, Some(url))) = writes.iter().find(|(k, _)| *k == s::GITLAB_URL) {
        let (secret, token) = (form.new_secret().is_some(), form.new_token().is_some());
        s::check_new_url(tx, url, secret, token).map_err(|e| match e {
            AppError::Rule(m) if m == s::URL_NEEDS_TOKEN => {
                AppError::Invalid(vec![FieldError::new("provisioningToken", m)])
            }
            AppError::Rule(m) => AppError::Invalid(vec![FieldError::new("secret", m)]),
            other => other,
        })?;
    }
    write(tx, writes).map_err(|e| match e {
        AppError::Rule(m) if m == s::PROVISIONING_NEEDS => {
            AppError::Invalid(vec![FieldError::new("provisioningType", m)])
        }
        AppError::Rule(m) => AppError::Invalid(vec![FieldError::new("groupsSync", m)]),
        other => other,
    })?;
    let config = load(tx)?;
    if form.enabled == Some(true) && !config.usable() {
        return Err(AppError::rule(ENABLE_NEEDS_CREDENTIALS));
    }
    Ok(config)
}

/// Creates the configuration from the page's form: application ID, URL and secret required.
pub fn create_with(conn: &mut Connection, by: &By, form: &GitlabForm) -> AppResult<GitlabConfig> {
    let required = [
        (
            "applicationId",
            form.application_id.as_deref(),
            "Enter the application ID",
        ),
        ("url", form.url.as_deref(), "Enter the URL of GitLab"),
        ("secret", form.new_secret(), "Enter the secret"),
    ];
    let missing: Vec<FieldError> = required
        .into_iter()
        .filter(|(_, given, _)| given.is_none_or(|t| t.trim().is_empty()))
        .map(|(field, _, message)| FieldError::new(field, message))
        .collect();
    if !missing.is_empty() {
        let mut errors = missing;
        if let Err(AppError::Invalid(more)) = form_writes(form) {
            for e in more {
                if errors.iter().all(|m| m.field != e.field) {
                    errors.push(e);
                }
            }
        }
        return Err(AppError::Invalid(errors));
    }
    let tx = db::write_tx(conn)?;
    if exists(&tx)? {
        return Err(AppError::rule(
            "A GitLab configuration already exists; edit it or delete it first",
        ));
    }
    let before = load(&tx)?;
    let config = apply_form(&tx, form)?;
    let secret_sent = form.new_secret().is_some();
    record_change(&tx, by, "create", &before, &config, secret_sent)?;
    tx.commit()?;
    Ok(config)
}

/// Changes the existing configuration as the page's form says, in one transaction.
pub fn save(conn: &mut Connection, by: &By, form: &GitlabForm) -> AppResult<GitlabConfig> {
    let tx = db::write_tx(conn)?;
    if !exists(&tx)? {
        return Err(AppError::not_found(
            "No GitLab configuration: configure GitLab first",
        ));
    }
    let before = load(&tx)?;
    let config = apply_form(&tx, form)?;
    let secret_sent = form.new_secret().is_some();
    record_change(&tx, by, "update", &before, &config, secret_sent)?;
    tx.commit()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"enabled":true,"applicationId":"app","url":"https://gl.example/","secret":"s3cret","allowedGroups":["acme"],"provisioningType":"JIT"}"#;

    #[test]
    fn the_configuration_is_held_for_its_snapshot_only() {
        let mut conn = db::test_db();
        create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
        let held = Held::default();
        let first = Arc::new(s::Snapshot::load(&conn).unwrap());
        let a = held.of(&first).unwrap();
        assert!(
            Arc::ptr_eq(&a, &held.of(&first).unwrap()),
            "worked out once"
        );
        assert_eq!(*a, of(&first).unwrap());
        // A snapshot read after a change gets its own configuration, never the held one.
        crate::db::settings::set(&conn, s::GITLAB_URL, "https://other.example").unwrap();
        let second = Arc::new(s::Snapshot::load(&conn).unwrap());
        let b = held.of(&second).unwrap();
        assert_eq!(b.url, "https://other.example");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(held.of(&first).unwrap().url, "https://gl.example");
    }

    #[test]
    fn create_load_and_json_never_show_the_secret() {
        let mut conn = db::test_db();
        assert!(!exists(&conn).unwrap());
        let c = create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
        assert!(c.usable());
        assert_eq!(c.url, "https://gl.example");
        assert_eq!(c.scope(), "openid email");
        assert!(!c.to_json().to_string().contains("s3cret"));
        assert!(matches!(
            create(&mut conn, &By::admin(), BODY.as_bytes()),
            Err(AppError::Rule(_))
        ));
    }

    #[test]
    fn patch_url_needs_secret_and_null_resets() {
        let mut conn = db::test_db();
        create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
        let err = patch(
            &mut conn,
            &By::admin(),
            br#"{"url":"https://evil.example"}"#,
        )
        .unwrap_err();
        assert_eq!(err.public_message(), s::URL_NEEDS_SECRET);
        let c = patch(
            &mut conn,
            &By::admin(),
            br#"{"url":"https://gl2.example","secret":"new"}"#,
        )
        .unwrap();
        assert_eq!(c.url, "https://gl2.example");
        let c = patch(
            &mut conn,
            &By::admin(),
            br#"{"allowedGroups":null,"enabled":false}"#,
        )
        .unwrap();
        assert!(c.allowed_groups.is_empty() && !c.enabled);
        assert_eq!(c.scope(), "openid email");
    }

    #[test]
    fn bad_bodies_change_nothing() {
        let mut conn = db::test_db();
        create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
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
                patch(&mut conn, &By::admin(), body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(load(&conn).unwrap().allowed_groups, vec!["acme"]);
        delete(&mut conn, &By::admin()).unwrap();
        assert!(!exists(&conn).unwrap());
        assert!(matches!(
            delete(&mut conn, &By::admin()),
            Err(AppError::NotFound(_))
        ));
    }

    fn form() -> GitlabForm {
        GitlabForm {
            application_id: Some("app".into()),
            url: Some("https://gl.example/".into()),
            secret: Some("s3cret".into()),
            ..GitlabForm::default()
        }
    }

    #[test]
    fn create_with_reports_every_missing_or_bad_field_on_the_form() {
        let mut conn = db::test_db();
        let bad = GitlabForm {
            application_id: Some(" ".into()),
            url: Some("ftp://x".into()),
            secret: Some(String::new()),
            ..GitlabForm::default()
        };
        let AppError::Invalid(errors) = create_with(&mut conn, &By::admin(), &bad).unwrap_err()
        else {
            panic!("expected field errors");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["applicationId", "secret", "url"]);
        assert!(errors[2].message.starts_with("GitLab URL: "), "{errors:?}");
        assert!(!exists(&conn).unwrap());
        let c = create_with(&mut conn, &By::admin(), &form()).unwrap();
        assert_eq!(c.url, "https://gl.example");
        assert!(!c.enabled && c.secret.is_some());
        assert!(matches!(
            create_with(&mut conn, &By::admin(), &form()),
            Err(AppError::Rule(_))
        ));
    }

    #[test]
    fn save_refuses_a_new_url_without_the_secret_on_the_secret_field() {
        let mut conn = db::test_db();
        assert!(matches!(
            save(&mut conn, &By::admin(), &form()),
            Err(AppError::NotFound(_))
        ));
        create_with(&mut conn, &By::admin(), &form()).unwrap();
        let moved = GitlabForm {
            application_id: Some("app2".into()),
            url: Some("https://evil.example".into()),
            secret: Some(String::new()),
            ..GitlabForm::default()
        };
        let AppError::Invalid(errors) = save(&mut conn, &By::admin(), &moved).unwrap_err() else {
            panic!("expected a field error");
        };
        assert_eq!(errors[0].field, "secret");
        assert_eq!(errors[0].message, s::URL_NEEDS_SECRET);
        let c = load(&conn).unwrap();
        assert_eq!(
            (c.url.as_str(), c.application_id.as_deref()),
            ("https://gl.example", Some("app"))
        );
        // Same URL without the secret, or a new URL with it, is fine.
        let same = GitlabForm {
            url: Some("https://gl.example/".into()),
            ..moved.clone()
        };
        assert_eq!(
            save(&mut conn, &By::admin(), &same)
                .unwrap()
                .application_id
                .as_deref(),
            Some("app2")
        );
        let with_secret = GitlabForm {
            secret: Some("new".into()),
            ..moved
        };
        let c = save(&mut conn, &By::admin(), &with_secret).unwrap();
        assert_eq!(
            (c.url.as_str(), c.secret.as_deref()),
            ("https://evil.example", Some("new"))
        );
    }

    #[test]
    fn enabling_needs_the_application_id_and_the_secret() {
        let mut conn = db::test_db();
        db::settings::set(&conn, s::GITLAB_APPLICATION_ID, "app").unwrap();
        let on = GitlabForm {
            enabled: Some(true),
            ..GitlabForm::default()
        };
        let err = save(&mut conn, &By::admin(), &on).unwrap_err();
        assert_eq!(err.public_message(), ENABLE_NEEDS_CREDENTIALS);
        assert!(!load(&conn).unwrap().enabled);
        db::settings::set(&conn, s::GITLAB_SECRET, "s3cret").unwrap();
        assert!(save(&mut conn, &By::admin(), &on).unwrap().usable());
    }

    #[test]
    fn provisioning_fields_are_validated_and_an_empty_group_list_resets() {
        let mut conn = db::test_db();
        create_with(&mut conn, &By::admin(), &form()).unwrap();
        let bad = GitlabForm {
            allowed_groups: Some(vec!["acme/sub".into()]),
            ..GitlabForm::default()
        };
        let AppError::Invalid(errors) = save(&mut conn, &By::admin(), &bad).unwrap_err() else {
            panic!("expected a field error");
        };
        assert_eq!(errors[0].field, "allowedGroups");
        assert!(errors[0].message.contains("not a root group"), "{errors:?}");
        let ok = GitlabForm {
            allowed_groups: Some(vec!["acme".into(), " Beta ".into(), "ACME".into()]),
            allow_users_to_sign_up: Some(false),
            synchronize_groups: Some(true),
            ..GitlabForm::default()
        };
        let c = save(&mut conn, &By::admin(), &ok).unwrap();
        assert_eq!(c.allowed_groups, vec!["acme", "Beta"]);
        assert!(!c.allow_users_to_sign_up && c.synchronize_groups);
        let none = GitlabForm {
            allowed_groups: Some(Vec::new()),
            synchronize_groups: Some(false),
            ..GitlabForm::default()
        };
        save(&mut conn, &By::admin(), &none).unwrap();
        assert!(!s::is_set(&conn, s::GITLAB_ALLOWED_GROUPS).unwrap());
    }

    /// The sync flag and the allowed groups as stored.
    fn group_sync_now(conn: &Connection) -> (bool, Vec<String>) {
        let c = load(conn).unwrap();
        (c.synchronize_groups, c.allowed_groups)
    }

    #[test]
    fn v2_refuses_group_sync_without_an_allowed_group() {
        let mut conn = db::test_db();
        let lone = br#"{"applicationId":"app","url":"https://gl.example","secret":"s","synchronizeGroups":true}"#;
        let err = create(&mut conn, &By::admin(), lone).unwrap_err();
        assert_eq!(err.public_message(), s::SYNC_NEEDS_ALLOWED_GROUP);
        assert_eq!(err.status(), 400);
        assert!(!exists(&conn).unwrap(), "nothing created");
        create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
        patch(&mut conn, &By::admin(), br#"{"synchronizeGroups":true}"#).unwrap();
        for body in [
            &br#"{"allowedGroups":[]}"#[..],
            br#"{"allowedGroups":null}"#,
            br#"{"allowedGroups":null,"enabled":false,"synchronizeGroups":true}"#,
        ] {
            let err = patch(&mut conn, &By::admin(), body).unwrap_err();
            assert_eq!(
                err.public_message(),
                s::SYNC_NEEDS_ALLOWED_GROUP,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(group_sync_now(&conn), (true, vec!["acme".to_string()]));
        assert!(load(&conn).unwrap().enabled, "nothing changed on refusal");
        let c = patch(
            &mut conn,
            &By::admin(),
            br#"{"allowedGroups":null,"synchronizeGroups":false}"#,
        )
        .unwrap();
        assert!(!c.synchronize_groups && c.allowed_groups.is_empty());
        let err = patch(&mut conn, &By::admin(), br#"{"synchronizeGroups":true}"#).unwrap_err();
        assert_eq!(err.public_message(), s::SYNC_NEEDS_ALLOWED_GROUP);
    }

    #[test]
    fn the_form_refuses_group_sync_without_an_allowed_group_on_its_field() {
        let mut conn = db::test_db();
        create_with(&mut conn, &By::admin(), &form()).unwrap();
        let on = GitlabForm {
            synchronize_groups: Some(true),
            allowed_groups: Some(Vec::new()),
            allow_users_to_sign_up: Some(false),
            ..GitlabForm::default()
        };
        let AppError::Invalid(errors) = save(&mut conn, &By::admin(), &on).unwrap_err() else {
            panic!("expected a field error");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "groupsSync");
        assert_eq!(errors[0].message, s::SYNC_NEEDS_ALLOWED_GROUP);
        let c = load(&conn).unwrap();
        assert!(
            !c.synchronize_groups && c.allow_users_to_sign_up,
            "nothing saved"
        );
        let with_group = GitlabForm {
            allowed_groups: Some(vec!["acme".into()]),
            ..on.clone()
        };
        assert!(save(&mut conn, &By::admin(), &with_group)
            .unwrap()
            .synchronizes());
        let AppError::Invalid(errors) = save(&mut conn, &By::admin(), &on).unwrap_err() else {
            panic!("expected a field error");
        };
        assert_eq!(
            errors[0].field, "groupsSync",
            "removing the last allowed group"
        );
        assert_eq!(group_sync_now(&conn), (true, vec!["acme".to_string()]));
    }

    #[test]
    fn a_stored_sync_without_allowed_group_synchronizes_nothing_and_stays_editable() {
        let mut conn = db::test_db();
        create_with(&mut conn, &By::admin(), &form()).unwrap();
        // Stored before synchronization needed an allowed group.
        db::settings::set(&conn, s::GITLAB_GROUPS_SYNC, "true").unwrap();
        let c = load(&conn).unwrap();
        assert!(c.synchronize_groups && !c.synchronizes());
        let edit = GitlabForm {
            application_id: Some("app2".into()),
            synchronize_groups: Some(true),
            ..GitlabForm::default()
        };
        assert_eq!(
            save(&mut conn, &By::admin(), &edit)
                .unwrap()
                .application_id
                .as_deref(),
            Some("app2")
        );
        patch(
            &mut conn,
            &By::admin(),
            br#"{"enabled":false,"allowUsersToSignUp":false}"#,
        )
        .unwrap();
        assert_eq!(group_sync_now(&conn), (true, vec![]));
    }

    #[test]
    fn automatic_provisioning_needs_its_token_and_an_allowed_group_through_v2() {
        let mut conn = db::test_db();
        create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
        let err = patch(
            &mut conn,
            &By::admin(),
            br#"{"provisioningType":"AUTO_PROVISIONING"}"#,
        )
        .unwrap_err();
        assert_eq!(err.public_message(), s::PROVISIONING_NEEDS);
        let err = patch(
            &mut conn,
            &By::admin(),
            br#"{"provisioningType":"AUTO_PROVISIONING","provisioningToken":"glpat-t0ken","allowedGroups":null}"#,
        )
        .unwrap_err();
        assert_eq!(err.public_message(), s::PROVISIONING_NEEDS);
        assert!(!load(&conn).unwrap().auto_provisioning, "nothing saved");
        let c = patch(
            &mut conn,
            &By::admin(),
            br#"{"provisioningType":"AUTO_PROVISIONING","provisioningToken":"glpat-t0ken"}"#,
        )
        .unwrap();
        assert!(c.auto_provisioning && c.provisions());
        let shown = c.to_json();
        assert_eq!(shown["provisioningType"], AUTO_PROVISIONING);
        assert_eq!(shown["isProvisioningTokenSet"], true);
        assert!(!shown.to_string().contains("glpat-t0ken"), "{shown}");
        for body in [
            &br#"{"provisioningToken":null}"#[..],
            br#"{"allowedGroups":[]}"#,
        ] {
            let err = patch(&mut conn, &By::admin(), body).unwrap_err();
            assert_eq!(err.public_message(), s::PROVISIONING_NEEDS);
        }
        let c = patch(&mut conn, &By::admin(), br#"{"provisioningType":"JIT"}"#).unwrap();
        assert_eq!(c.to_json()["provisioningType"], JIT);
        assert!(c.provisioning_token.is_some(), "JIT keeps the token");
        let err = patch(&mut conn, &By::admin(), br#"{"provisioningType":"AUTO"}"#).unwrap_err();
        assert!(err.public_message().contains("AUTO_PROVISIONING"));
    }

    /// The first field error of saving `form`, which must be refused for its fields.
    fn first_field_error(conn: &mut Connection, form: &GitlabForm) -> (&'static str, String) {
        match save(conn, &By::admin(), form) {
            Err(AppError::Invalid(errors)) => (errors[0].field, errors[0].message.clone()),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_new_url_needs_the_provisioning_token_too() {
        let mut conn = db::test_db();
        create(&mut conn, &By::admin(), BODY.as_bytes()).unwrap();
        patch(
            &mut conn,
            &By::admin(),
            br#"{"provisioningToken":"glpat-t0ken"}"#,
        )
        .unwrap();
        let err = patch(
            &mut conn,
            &By::admin(),
            br#"{"url":"https://evil.example","secret":"again"}"#,
        )
        .unwrap_err();
        assert_eq!(err.public_message(), s::URL_NEEDS_TOKEN);
        let c = patch(
            &mut conn,
            &By::admin(),
            br#"{"url":"https://gl2.example","secret":"again","provisioningToken":"glpat-new"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.url.as_str(), c.provisioning_token.as_deref()),
            ("https://gl2.example", Some("glpat-new"))
        );
        let moved = GitlabForm {
            url: Some("https://evil.example".into()),
            secret: Some("again".into()),
            ..GitlabForm::default()
        };
        assert_eq!(
            first_field_error(&mut conn, &moved),
            ("provisioningToken", s::URL_NEEDS_TOKEN.to_string())
        );
        let mut conn2 = db::test_db();
        s::set(
            &mut conn2,
            &By::admin(),
            s::GITLAB_PROVISIONING_TOKEN,
            "glpat-t0ken",
        )
        .unwrap();
        let err = s::set(
            &mut conn2,
            &By::admin(),
            s::GITLAB_URL,
            "https://evil.example",
        )
        .unwrap_err();
        assert_eq!(err.public_message(), s::URL_NEEDS_TOKEN);
        let err = s::reset(&mut conn2, &By::admin(), s::GITLAB_URL);
        assert!(err.is_ok(), "the default URL is the stored one: {err:?}");
    }

    #[test]
    fn the_form_turns_automatic_provisioning_on_with_its_token_reported_on_its_field() {
        let mut conn = db::test_db();
        create_with(&mut conn, &By::admin(), &form()).unwrap();
        let on = GitlabForm {
            auto_provisioning: Some(true),
            allowed_groups: Some(vec!["acme".into()]),
            provisioning_token: Some(" ".into()),
            ..GitlabForm::default()
        };
        assert_eq!(
            first_field_error(&mut conn, &on),
            ("provisioningType", s::PROVISIONING_NEEDS.to_string())
        );
        let with_token = GitlabForm {
            provisioning_token: Some("glpat-t0ken".into()),
            ..on.clone()
        };
        let text = format!("{with_token:?}");
        assert!(
            !text.contains("glpat-t0ken") && text.contains("<sent>"),
            "{text}"
        );
        assert!(save(&mut conn, &By::admin(), &with_token)
            .unwrap()
            .provisions());
        let keep = GitlabForm {
            provisioning_token: Some(String::new()),
            ..on
        };
        let c = save(&mut conn, &By::admin(), &keep).unwrap();
        assert_eq!(c.provisioning_token.as_deref(), Some("glpat-t0ken"));
    }

    #[test]
    fn a_form_never_prints_its_secret() {
        let text = format!("{:?}", form());
        assert!(
            !text.contains("s3cret") && text.contains("<sent>"),
            "{text}"
        );
    }
}
