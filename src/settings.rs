//! Instance settings changed at run time (SonarQube keys): their definitions, validation,
//! defaults, and reading the effective value. Pages and `api/settings/*` both go through here.

use crate::audit::{self, Action, By, Event};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::model::TokenLifetime;
use rusqlite::Connection;

pub const SERVER_BASE_URL: &str = "sonar.core.serverBaseURL";
pub const SESSION_TIMEOUT: &str = "sonar.web.sessionTimeoutInMinutes";
pub const GITLAB_ENABLED: &str = "sonar.auth.gitlab.enabled";
pub const GITLAB_URL: &str = "sonar.auth.gitlab.url";
pub const GITLAB_APPLICATION_ID: &str = "sonar.auth.gitlab.applicationId.secured";
pub const GITLAB_SECRET: &str = "sonar.auth.gitlab.secret.secured";
pub const GITLAB_SIGN_UP: &str = "sonar.auth.gitlab.allowUsersToSignUp";
pub const GITLAB_ALLOWED_GROUPS: &str = "sonar.auth.gitlab.allowedGroups";
pub const GITLAB_GROUPS_SYNC: &str = "sonar.auth.gitlab.groupsSync";
pub const TOKEN_MAX_LIFETIME: &str = "sonar.auth.token.max.allowed.lifetime";
pub const AUDIT_RETENTION_DAYS: &str = audit::RETENTION_DAYS;
/// `GET /metrics` answers only when this is `true`.
pub const METRICS_ENABLED: &str = "labgate.metrics.enabled";
/// When set, `GET /metrics` needs `Authorization: Bearer <it>`. Write-only like a secret.
pub const METRICS_TOKEN: &str = "labgate.metrics.token";
pub const REVALIDATE_MINUTES: &str = "labgate.gitlab.revalidateMinutes";
pub const GATE_COOKIE_DOMAIN: &str = "labgate.gate.cookieDomain";
/// `true`: automatic provisioning (`provisioningType` `AUTO_PROVISIONING`); `false`: JIT.
pub const GITLAB_PROVISIONING: &str = "provisioning.gitlab.enabled";
/// The GitLab access token automatic provisioning reads GitLab with: write-only.
pub const GITLAB_PROVISIONING_TOKEN: &str = "provisioning.gitlab.token.secured";
pub const PROVISIONING_INTERVAL: &str = "labgate.gitlab.provisioning.intervalMinutes";
pub const PROVISIONING_MAX_DEACTIVATION: &str =
    "labgate.gitlab.provisioning.maxDeactivationPercent";

/// Every GitLab key: together they are the one GitLab configuration.
pub const GITLAB_KEYS: &[&str] = &[
    GITLAB_ENABLED,
    GITLAB_URL,
    GITLAB_APPLICATION_ID,
    GITLAB_SECRET,
    GITLAB_SIGN_UP,
    GITLAB_ALLOWED_GROUPS,
    GITLAB_GROUPS_SYNC,
    GITLAB_PROVISIONING,
    GITLAB_PROVISIONING_TOKEN,
];

/// The settings stored sealed with the key of `labgate.key` ([`crate::secrets`]), so that a
/// copy of the database alone does not reveal them. Every write goes through [`store`], which
/// seals them; they are read back through [`Snapshot::secret`] (or [`secret`]); a clear value
/// left by an older labgate is sealed at start by [`seal_clear_values`]. A new secret setting
/// needs nothing more than its key in this list.
pub const ENCRYPTED: &[&str] = &[GITLAB_SECRET, GITLAB_PROVISIONING_TOKEN];

/// Whether a setting is stored sealed (see [`ENCRYPTED`]).
pub fn encrypted(key: &str) -> bool {
    ENCRYPTED.contains(&key)
}

/// What a sealed setting is sealed for: its key, so that its value opens nowhere else.
fn sealing_context(key: &str) -> String {
    format!("setting:{key}")
}

/// Stores a setting's value in `conn`, sealed when the setting is [`ENCRYPTED`]: every write of
/// a setting's value goes through here.
pub fn store(conn: &Connection, key: &str, value: &str) -> AppResult<()> {
    if encrypted(key) {
        let sealed = crate::secrets::seal(&sealing_context(key), value)
            .ok_or_else(|| AppError::Internal("secrets: no key loaded".into()))?;
        db::settings::set(conn, key, &sealed)?;
    } else {
        db::settings::set(conn, key, value)?;
    }
    Ok(())
}

/// A secret setting ([`ENCRYPTED`]) as read back.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Unset,
    Set(String),
    /// Stored, but it does not open with the key file labgate has (see
    /// [`crate::secrets::OpenError`]): it must be entered again.
    Unreadable(crate::secrets::OpenError),
}

/// Never prints a secret.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Unset => f.write_str("Unset"),
            Secret::Set(_) => f.write_str("Set(<hidden>)"),
            Secret::Unreadable(why) => write!(f, "Unreadable({why:?})"),
        }
    }
}

impl Secret {
    /// The secret, when it is set and readable.
    pub fn value(self) -> Option<String> {
        match self {
            Secret::Set(value) => Some(value),
            _ => None,
        }
    }
}

/// Opens a stored value of an [`ENCRYPTED`] setting. A value that is not sealed (written in
/// clear by an older labgate or by hand since the start) is taken as it is: the next start
/// seals it.
fn open_stored(key: &str, stored: Option<&str>) -> Secret {
    match stored {
        None => Secret::Unset,
        Some(value) if !crate::secrets::is_sealed(value) => Secret::Set(value.to_string()),
        Some(value) => match crate::secrets::open(&sealing_context(key), value) {
            Ok(plain) => Secret::Set(plain),
            Err(why) => Secret::Unreadable(why),
        },
    }
}

/// A secret setting as stored ([`Snapshot::secret`] reads it with the others).
pub fn secret(conn: &Connection, key: &str) -> AppResult<Secret> {
    Ok(open_stored(key, db::settings::get(conn, key)?.as_deref()))
}

/// Seals, in one transaction, the value of every [`ENCRYPTED`] setting still stored in clear:
/// a database written by a labgate that stored secrets in clear, at its first start with
/// `labgate.key`. Returns the keys sealed (none on every later start).
pub fn seal_clear_values(conn: &mut Connection) -> AppResult<Vec<&'static str>> {
    let tx = db::write_tx(conn)?;
    let mut sealed = Vec::new();
    for key in ENCRYPTED {
        if let Some(value) = db::settings::get(&tx, key)? {
            if !crate::secrets::is_sealed(&value) {
                store(&tx, key, &value)?;
                sealed.push(*key);
            }
        }
    }
    tx.commit()?;
    Ok(sealed)
}

/// Refusal when the GitLab URL would change without the secret being sent again.
pub const URL_NEEDS_SECRET: &str =
    "For security reasons, the URL can't be updated without providing the secret.";

/// Refusal when the GitLab URL would change while a provisioning token is stored and not sent
/// again: the token must not follow the URL to another server.
pub const URL_NEEDS_TOKEN: &str =
    "For security reasons, the URL can't be updated without providing the provisioning token.";

/// Refusal when a change would leave group synchronization on without an allowed group.
pub const SYNC_NEEDS_ALLOWED_GROUP: &str = "Synchronize user groups needs at least one allowed group: only groups under an allowed group are synchronized";

/// Bounds of the revalidation interval when it is on, in minutes (0 turns it off).
pub const REVALIDATE_MINUTES_MIN: i64 = 5;
pub const REVALIDATE_MINUTES_MAX: i64 = 1440;
/// The revalidation interval when none is stored.
pub const REVALIDATE_MINUTES_DEFAULT: i64 = 15;
/// Refusal when a change would leave automatic provisioning on without its token or without an
/// allowed group.
pub const PROVISIONING_NEEDS: &str = "Automatic provisioning needs a provisioning token and at least one allowed group: only the members of the allowed groups and their subgroups are provisioned";

/// Bounds of the idle timeout, in minutes: 6 minutes to 3 months.
pub const SESSION_TIMEOUT_MIN: i64 = 6;
pub const SESSION_TIMEOUT_MAX: i64 = 90 * 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An absolute http(s) URL, stored without trailing `/`.
    Url,
    /// An integer within bounds.
    Integer { min: i64, max: i64 },
    /// A number of minutes within bounds, or 0 for "off".
    Interval { min: i64, max: i64 },
    /// `true` or `false`.
    Bool,
    /// Free text up to a length.
    Text { max: usize },
    /// A list of GitLab root group slugs (multi-valued).
    GroupSlugs,
    /// One of these exact texts.
    Choice { values: &'static [&'static str] },
    /// A domain for the session cookie: a DNS name of two labels or more, which must also
    /// cover the base URL's host (checked when stored, see [`check_cookie_domain`]).
    CookieDomain,
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

impl Definition {
    /// Secured settings are write-only: never returned, only listed as set, never in the
    /// audit log.
    pub fn secured(&self) -> bool {
        self.key.ends_with(".secured") || self.key == METRICS_TOKEN
    }

    pub fn multi(&self) -> bool {
        matches!(self.kind, Kind::GroupSlugs)
    }
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
    Definition {
        key: TOKEN_MAX_LIFETIME,
        name: "Maximum allowed lifetime of API tokens",
        description: "New API tokens expire after at most this long: a token asked for without an \
                      expiration date, or with a later one, expires this long after the day it is \
                      generated. Tokens that exist already keep their expiration date.",
        kind: Kind::Choice {
            values: TokenLifetime::LABELS,
        },
        default: Some("No expiration"),
    },
    Definition {
        key: AUDIT_RETENTION_DAYS,
        name: "Audit log retention (days)",
        description: "Audit events older than this are removed (1 to 3650 days; checked every \
                      hour). At most 1,000,000 events are kept whatever their age, the oldest \
                      going first.",
        kind: Kind::Integer {
            min: audit::RETENTION_DAYS_MIN,
            max: audit::RETENTION_DAYS_MAX,
        },
        default: Some("90"),
    },
    Definition {
        key: METRICS_ENABLED,
        name: "Prometheus metrics",
        description: "Answer GET /metrics in the Prometheus text format (counts and durations, \
                      no personal data).",
        kind: Kind::Bool,
        default: Some("false"),
    },
    Definition {
        key: METRICS_TOKEN,
        name: "Metrics bearer token",
        description: "When set, /metrics answers only requests carrying \
                      'Authorization: Bearer <this token>'. Never shown again.",
        kind: Kind::Text { max: 255 },
        default: None,
    },
    Definition {
        key: REVALIDATE_MINUTES,
        name: "GitLab revalidation interval (minutes)",
        description: "Every this many minutes, labgate asks GitLab about each GitLab user with a \
                      live session or an API token used in that time: a person GitLab no longer \
                      admits (out of the allowed groups, blocked or deleted, or who revoked \
                      labgate) loses their sessions at once, and their API tokens until they \
                      sign in with GitLab again. 0 turns it off; otherwise 5 to 1440.",
        kind: Kind::Interval {
            min: REVALIDATE_MINUTES_MIN,
            max: REVALIDATE_MINUTES_MAX,
        },
        default: Some("15"),
    },
    Definition {
        key: GATE_COOKIE_DOMAIN,
        name: "Cookie domain",
        description: "Sends the session cookie to every host under this domain (e.g. lab.example), \
                      so that one sign-in admits a person to the applications behind labgate on \
                      sibling hosts. It must be labgate's own host or a parent domain of it. \
                      Every application under it receives the cookie. Empty: labgate's host only.",
        kind: Kind::CookieDomain,
        default: None,
    },
    Definition {
        key: GITLAB_ENABLED,
        name: "Enabled",
        description: "Offer \"Log in with GitLab\" (only once the application ID and secret are set).",
        kind: Kind::Bool,
        default: Some("false"),
    },
    Definition {
        key: GITLAB_URL,
        name: "GitLab URL",
        description: "Base URL of GitLab, e.g. https://gitlab.com or https://git.example.org/gitlab.",
        kind: Kind::Url,
        default: Some("https://gitlab.com"),
    },
    Definition {
        key: GITLAB_APPLICATION_ID,
        name: "Application ID",
        description: "The Application ID of the OAuth application registered in GitLab.",
        kind: Kind::Text { max: 255 },
        default: None,
    },
    Definition {
        key: GITLAB_SECRET,
        name: "Secret",
        description: "The Secret of the OAuth application registered in GitLab. Never shown again.",
        kind: Kind::Text { max: 1024 },
        default: None,
    },
    Definition {
        key: GITLAB_SIGN_UP,
        name: "Allow users to sign up",
        description: "Create an account at the first sign-in of a GitLab user. When off, only \
                      existing or pre-provisioned accounts can sign in.",
        kind: Kind::Bool,
        default: Some("true"),
    },
    Definition {
        key: GITLAB_ALLOWED_GROUPS,
        name: "Allowed groups",
        description: "Only members of these GitLab root groups (and their subgroups) may sign in.",
        kind: Kind::GroupSlugs,
        default: None,
    },
    Definition {
        key: GITLAB_GROUPS_SYNC,
        name: "Synchronize user groups",
        description: "At each sign-in, a GitLab user's memberships become the local groups named \
                      like their GitLab groups under an allowed group; other GitLab groups are \
                      ignored. Needs at least one allowed group.",
        kind: Kind::Bool,
        default: Some("false"),
    },
    Definition {
        key: GITLAB_PROVISIONING,
        name: "Automatic provisioning",
        description: "Read the members of the allowed groups from GitLab on a schedule: accounts, \
                      groups and memberships follow GitLab, and only those accounts may sign in. \
                      Needs the provisioning token and at least one allowed group. Off: \
                      Just-in-Time provisioning.",
        kind: Kind::Bool,
        default: Some("false"),
    },
    Definition {
        key: GITLAB_PROVISIONING_TOKEN,
        name: "Provisioning token",
        description: "A GitLab group access token or personal access token with the read_api \
                      scope that can see the allowed groups. Never shown again.",
        kind: Kind::Text { max: 1024 },
        default: None,
    },
    Definition {
        key: PROVISIONING_INTERVAL,
        name: "Provisioning interval (minutes)",
        description: "How often automatic provisioning reads GitLab (5 minutes to a day).",
        kind: Kind::Integer { min: 5, max: 1440 },
        default: Some("60"),
    },
    Definition {
        key: PROVISIONING_MAX_DEACTIVATION,
        name: "Provisioning: most accounts deactivated at once (%)",
        description: "A run that would deactivate more than this share of the active GitLab \
                      accounts (and more than 5 of them) changes nothing and waits for an \
                      administrator to apply it.",
        kind: Kind::Integer { min: 1, max: 100 },
        default: Some("20"),
    },
];

pub fn definition(key: &str) -> Option<&'static Definition> {
    DEFINITIONS.iter().find(|d| d.key == key)
}

pub fn known(key: &str) -> AppResult<&'static Definition> {
    definition(key)
        .ok_or_else(|| AppError::invalid("key", format!("Setting '{key}' is not defined")))
}

/// Validates a single value for a setting and returns the form it is stored in.
pub fn normalize(def: &Definition, raw: &str) -> AppResult<String> {
    normalize_values(def, &[raw])
}

/// Validates the value(s) for a setting: multi-valued settings are stored as a JSON array.
pub fn normalize_values(def: &Definition, raws: &[&str]) -> AppResult<String> {
    let invalid = |message: String| AppError::invalid("value", message);
    if def.multi() {
        let mut slugs: Vec<String> = Vec::new();
        for raw in raws.iter().flat_map(|r| r.split(',')) {
            if raw.trim().is_empty() {
                continue;
            }
            let slug = crate::provisioning::parse_allowed_group(raw)
                .map_err(|e| invalid(format!("Setting '{}': {}", def.key, e.message)))?;
            if !slugs.iter().any(|s| s.eq_ignore_ascii_case(&slug)) {
                slugs.push(slug);
            }
        }
        return Ok(serde_json::Value::from(slugs).to_string());
    }
    let [raw] = raws else {
        return Err(invalid(format!(
            "Setting '{}' takes a single value",
            def.key
        )));
    };
    let raw = raw.trim();
    match def.kind {
        Kind::Url => {
            let url = raw.strip_suffix('/').unwrap_or(raw);
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .unwrap_or("");
            let host = rest.split('/').next().unwrap_or("");
            let ok = !host.is_empty()
                && url.len() <= 2048
                && !url.chars().any(|c| c.is_whitespace() || c.is_control())
                && !url.contains(['?', '#', '@']);
            if !ok {
                return Err(invalid(format!(
                    "Setting '{}': '{raw}' is not a valid http or https URL",
                    def.key
                )));
            }
            Ok(url.to_string())
        }
        Kind::Integer { min, max } => match raw.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid(format!(
                "Setting '{}': value must be a whole number between {min} and {max}",
                def.key
            ))),
        },
        Kind::Interval { min, max } => match raw.parse::<i64>() {
            Ok(n) if n == 0 || (min..=max).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid(format!(
                "Setting '{}': value must be 0 (off) or a whole number between {min} and {max}",
                def.key
            ))),
        },
        Kind::Bool => match raw {
            "true" | "false" => Ok(raw.to_string()),
            _ => Err(invalid(format!(
                "Setting '{}': value must be 'true' or 'false'",
                def.key
            ))),
        },
        Kind::Text { max } => {
            if raw.is_empty() || raw.chars().count() > max || raw.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "Setting '{}': value must be 1 to {max} characters",
                    def.key
                )));
            }
            Ok(raw.to_string())
        }
        Kind::Choice { values } => {
            if !values.contains(&raw) {
                let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
                return Err(invalid(format!(
                    "Setting '{}': value must be one of {}",
                    def.key,
                    quoted.join(", ")
                )));
            }
            Ok(raw.to_string())
        }
        Kind::CookieDomain => crate::gate::rules::cookie_domain_syntax(raw)
            .map_err(|why| invalid(format!("Setting '{}': {why}", def.key))),
        Kind::GroupSlugs => unreachable!("multi-valued settings are handled above"),
    }
}

/// Every stored setting, read with one query, for code that needs several of them (the GitLab
/// configuration, `api/settings/values`). Answers like the functions below that read one key.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(std::collections::HashMap<String, String>);

impl Snapshot {
    pub fn load(conn: &Connection) -> AppResult<Snapshot> {
        Ok(Snapshot(db::settings::all(conn)?.into_iter().collect()))
    }

    /// The stored value, without default.
    pub fn stored(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The stored value or the default; like [`value`].
    pub fn value(&self, key: &str) -> AppResult<Option<String>> {
        let def = known(key)?;
        Ok(self.stored(key).or(def.default).map(str::to_string))
    }

    /// The values of a multi-valued setting; like [`values`].
    pub fn values(&self, key: &str) -> Vec<String> {
        self.stored(key)
            .map(|json| serde_json::from_str(json).unwrap_or_default())
            .unwrap_or_default()
    }

    /// A boolean setting; like [`flag`].
    pub fn flag(&self, key: &str) -> AppResult<bool> {
        Ok(self.value(key)?.as_deref() == Some("true"))
    }

    /// Whether a value is stored; like [`is_set`].
    pub fn is_set(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// An [`ENCRYPTED`] setting, opened; like [`secret`].
    pub fn secret(&self, key: &str) -> Secret {
        open_stored(key, self.stored(key))
    }
}

/// The stored settings held in memory until a commit writes a setting ([`db::Held`] keyed by
/// [`db::settings_generation`]), so that a request reads them without a read transaction of
/// its own, also right after the commits of sign-ins and admin writes.
pub struct Cache(db::Held<Snapshot>);

impl Default for Cache {
    fn default() -> Self {
        Cache(db::Held::keyed_by(db::settings_generation))
    }
}

impl Cache {
    /// The settings as of now: the snapshot held, or one read afresh from `conn`.
    pub fn current(&self, conn: &Connection) -> AppResult<std::sync::Arc<Snapshot>> {
        self.0.get(conn, Snapshot::load)
    }
}

/// The stored value or the default.
pub fn value(conn: &Connection, key: &str) -> AppResult<Option<String>> {
    let def = known(key)?;
    Ok(db::settings::get(conn, key)?.or_else(|| def.default.map(str::to_string)))
}

/// The values of a multi-valued setting.
pub fn values(conn: &Connection, key: &str) -> AppResult<Vec<String>> {
    Ok(match db::settings::get(conn, key)? {
        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
        None => Vec::new(),
    })
}

/// A boolean setting.
pub fn flag(conn: &Connection, key: &str) -> AppResult<bool> {
    Ok(value(conn, key)?.as_deref() == Some("true"))
}

/// Whether a value is stored (not just the default).
pub fn is_set(conn: &Connection, key: &str) -> AppResult<bool> {
    Ok(db::settings::get(conn, key)?.is_some())
}

/// Refuses pointing GitLab elsewhere while a secret or a provisioning token is stored that was
/// meant for the old URL.
pub fn check_url_change(conn: &Connection, key: &str, stored: &str) -> AppResult<()> {
    if key != GITLAB_URL {
        return Ok(());
    }
    check_new_url(conn, stored, false, false)
}

/// Refuses a new GitLab URL `url` (as stored) unless every credential stored for the old one
/// is sent again in the same change: the secret (`secret_sent`) and the provisioning token
/// (`token_sent`). Either would otherwise be sent to whatever server the new URL names.
pub fn check_new_url(
    conn: &Connection,
    url: &str,
    secret_sent: bool,
    token_sent: bool,
) -> AppResult<()> {
    if value(conn, GITLAB_URL)?.as_deref() == Some(url) {
        return Ok(());
    }
    if !secret_sent && is_set(conn, GITLAB_SECRET)? {
        return Err(AppError::rule(URL_NEEDS_SECRET));
    }
    if !token_sent && is_set(conn, GITLAB_PROVISIONING_TOKEN)? {
        return Err(AppError::rule(URL_NEEDS_TOKEN));
    }
    Ok(())
}

/// The GitLab settings the rules of [`check_group_sync`] are about, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSync {
    /// "Synchronize user groups".
    pub sync: bool,
    pub allowed_groups: Vec<String>,
    /// Automatic provisioning is on.
    pub provisioning: bool,
    /// A provisioning token is stored.
    pub token: bool,
}

/// Reads [`GroupSync`] before a change, to give it to [`check_group_sync`] after.
pub fn group_sync(conn: &Connection) -> AppResult<GroupSync> {
    Ok(GroupSync {
        sync: flag(conn, GITLAB_GROUPS_SYNC)?,
        allowed_groups: values(conn, GITLAB_ALLOWED_GROUPS)?,
        provisioning: flag(conn, GITLAB_PROVISIONING)?,
        token: is_set(conn, GITLAB_PROVISIONING_TOKEN)?,
    })
}

/// Refuses the change made in `tx` (not committed yet), `before` being [`group_sync`] read
/// before it in the same transaction, when it turns on, or keeps on:
/// - group synchronization without an allowed group: only GitLab groups under an allowed group
///   are synchronized, so without one it would take nothing while showing as on;
/// - automatic provisioning without its token or without an allowed group: it reads the members
///   of the allowed groups with the token.
///
/// A configuration already in such a state (stored by an older labgate) may still change its
/// other settings.
pub fn check_group_sync(tx: &Connection, before: &GroupSync) -> AppResult<()> {
    let after = group_sync(tx)?;
    fn sync(g: &GroupSync) -> (bool, &[String]) {
        (g.sync, &g.allowed_groups)
    }
    fn auto(g: &GroupSync) -> (bool, bool, &[String]) {
        (g.provisioning, g.token, &g.allowed_groups)
    }
    if crate::provisioning::sync_change_refused(sync(before), sync(&after)) {
        return Err(AppError::rule(SYNC_NEEDS_ALLOWED_GROUP));
    }
    if crate::provisioning::auto_change_refused(auto(before), auto(&after)) {
        return Err(AppError::rule(PROVISIONING_NEEDS));
    }
    Ok(())
}

/// Whether GitLab sign-in synchronizes groups: on, with an allowed group (see
/// [`crate::provisioning::synchronizes`]).
#[cfg(test)]
pub fn synchronizes_groups(conn: &Connection) -> AppResult<bool> {
    let rules = group_sync(conn)?;
    Ok(crate::provisioning::synchronizes(
        rules.sync,
        &rules.allowed_groups,
    ))
}

/// Whether automatic provisioning is on (then the memberships of GitLab users follow GitLab).
pub fn auto_provisioning(conn: &Connection) -> AppResult<bool> {
    flag(conn, GITLAB_PROVISIONING)
}

/// Whether changing `key` may break a rule of [`check_group_sync`].
fn touches_group_sync(key: &str) -> bool {
    [
        GITLAB_GROUPS_SYNC,
        GITLAB_ALLOWED_GROUPS,
        GITLAB_PROVISIONING,
        GITLAB_PROVISIONING_TOKEN,
    ]
    .contains(&key)
}

/// Refuses a cookie domain (stored in `tx`, not committed yet) that does not cover the host
/// of the base URL: `fixed_base_url` (`--base-url`) when given, else the setting. A browser
/// ignores a cookie whose domain does not cover the host that sets it: nobody could sign in.
pub fn check_cookie_domain(tx: &Connection, fixed_base_url: Option<&str>) -> AppResult<()> {
    let Some(domain) = db::settings::get(tx, GATE_COOKIE_DOMAIN)? else {
        return Ok(());
    };
    let base = match fixed_base_url {
        Some(url) => Some(url.to_string()),
        None => db::settings::get(tx, SERVER_BASE_URL)?,
    };
    let Some(base) = base else {
        return Err(AppError::invalid(
            "value",
            format!(
                "Setting '{GATE_COOKIE_DOMAIN}': set the server base URL first \
                 (labgate's host must lie under the cookie domain '{domain}')"
            ),
        ));
    };
    crate::gate::rules::cookie_domain(&domain, &base)
        .map(|_| ())
        .map_err(|why| AppError::invalid("value", format!("Setting '{GATE_COOKIE_DOMAIN}': {why}")))
}

/// Whether changing `key` may break the rule of [`check_cookie_domain`].
fn touches_cookie_domain(key: &str) -> bool {
    key == GATE_COOKIE_DOMAIN || key == SERVER_BASE_URL
}

pub fn set(conn: &mut Connection, by: &By, key: &str, raw: &str) -> AppResult<()> {
    set_values(conn, by, key, &[raw])
}

/// [`set_values_fixed`] for a labgate started without `--base-url`.
pub fn set_values(conn: &mut Connection, by: &By, key: &str, raws: &[&str]) -> AppResult<()> {
    set_values_fixed(conn, by, key, raws, None)
}

/// Stores a setting; `fixed_base_url` is `--base-url` when labgate was started with it, which
/// the cookie domain is checked against instead of the base URL setting.
pub fn set_values_fixed(
    conn: &mut Connection,
    by: &By,
    key: &str,
    raws: &[&str],
    fixed_base_url: Option<&str>,
) -> AppResult<()> {
    let def = known(key)?;
    let stored = normalize_values(def, raws)?;
    let tx = db::write_tx(conn)?;
    check_url_change(&tx, key, &stored)?;
    let before = touches_group_sync(key)
        .then(|| group_sync(&tx))
        .transpose()?;
    let previous = db::settings::get(&tx, key)?;
    store(&tx, key, &stored)?;
    if let Some(before) = before {
        check_group_sync(&tx, &before)?;
    }
    if touches_cookie_domain(key) {
        check_cookie_domain(&tx, fixed_base_url)?;
    }
    let mut event = Event::ok(Action::SettingSet, key);
    if !def.secured() {
        event = event
            .with("value", shown_value(def, Some(&stored)))
            .with("previous", shown_value(def, previous.as_deref()));
    }
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(())
}

/// A stored value as the audit log shows it: a multi-valued setting as its list; `None`
/// (unset) as null.
fn shown_value(def: &Definition, stored: Option<&str>) -> serde_json::Value {
    match stored {
        None => serde_json::Value::Null,
        Some(v) if def.multi() => serde_json::from_str(v).unwrap_or(serde_json::Value::Null),
        Some(v) => v.into(),
    }
}

pub fn reset(conn: &mut Connection, by: &By, key: &str) -> AppResult<()> {
    reset_all(conn, by, &[key])
}

/// [`reset_all_fixed`] for a labgate started without `--base-url`.
pub fn reset_all(conn: &mut Connection, by: &By, keys: &[&str]) -> AppResult<()> {
    reset_all_fixed(conn, by, keys, None)
}

/// Resets several keys in one transaction; `fixed_base_url` as in [`set_values_fixed`].
pub fn reset_all_fixed(
    conn: &mut Connection,
    by: &By,
    keys: &[&str],
    fixed_base_url: Option<&str>,
) -> AppResult<()> {
    for key in keys {
        known(key)?;
    }
    let tx = db::write_tx(conn)?;
    if keys.contains(&GITLAB_URL) {
        check_new_url(
            &tx,
            "https://gitlab.com",
            keys.contains(&GITLAB_SECRET),
            keys.contains(&GITLAB_PROVISIONING_TOKEN),
        )?;
    }
    let before = keys
        .iter()
        .any(|key| touches_group_sync(key))
        .then(|| group_sync(&tx))
        .transpose()?;
    for key in keys {
        let def = known(key)?;
        let previous = db::settings::get(&tx, key)?;
        db::settings::delete(&tx, key)?;
        let mut event = Event::ok(Action::SettingReset, key);
        if !def.secured() {
            event = event.with("previous", shown_value(def, previous.as_deref()));
        }
        audit::record(&tx, by, event)?;
    }
    if let Some(before) = before {
        check_group_sync(&tx, &before)?;
    }
    if keys.iter().any(|key| touches_cookie_domain(key)) {
        check_cookie_domain(&tx, fixed_base_url)?;
    }
    tx.commit()?;
    Ok(())
}

/// How often automatic provisioning runs, in minutes.
pub fn provisioning_interval_minutes(conn: &Connection) -> AppResult<i64> {
    integer(conn, PROVISIONING_INTERVAL)
}

/// The share of the active GitLab accounts a run may deactivate without an administrator.
pub fn provisioning_max_deactivation_percent(conn: &Connection) -> AppResult<i64> {
    integer(conn, PROVISIONING_MAX_DEACTIVATION)
}

/// The session idle timeout in seconds.
pub fn session_timeout_secs(conn: &Connection) -> AppResult<i64> {
    Ok(integer(conn, SESSION_TIMEOUT)? * 60)
}

/// An integer setting ([`Kind::Integer`]): the stored value, else its default, within its
/// bounds. A value out of them, or not a number, can only come from a hand edit of the
/// database: it counts as the nearest bound, or as the default.
fn integer(conn: &Connection, key: &str) -> AppResult<i64> {
    let def = known(key)?;
    let Kind::Integer { min, max } = def.kind else {
        return Err(AppError::Internal(format!(
            "{key} is not an integer setting"
        )));
    };
    let default = def.default.and_then(|d| d.parse().ok()).unwrap_or(min);
    Ok(db::settings::get(conn, key)?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(default)
        .clamp(min, max))
}

/// The revalidation interval in minutes; 0: off. A stored value out of bounds (only a hand
/// edit of the database can store one) counts as the default.
pub fn revalidate_minutes(conn: &Connection) -> AppResult<i64> {
    let stored = value(conn, REVALIDATE_MINUTES)?.and_then(|v| v.parse::<i64>().ok());
    Ok(match stored {
        Some(n) if n == 0 || (REVALIDATE_MINUTES_MIN..=REVALIDATE_MINUTES_MAX).contains(&n) => n,
        _ => REVALIDATE_MINUTES_DEFAULT,
    })
}

/// The longest life of a new API token. A stored value that is none of the setting's values
/// (only a hand edit of the database can store one) counts as the shortest lifetime, so that
/// the cap never silently disappears.
pub fn token_max_lifetime(conn: &Connection) -> AppResult<TokenLifetime> {
    Ok(value(conn, TOKEN_MAX_LIFETIME)?
        .as_deref()
        .and_then(TokenLifetime::parse)
        .unwrap_or(TokenLifetime::Days30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_sees_each_commit_and_never_keeps_what_a_transaction_read() {
        let path = db::temp_db("settings-cache");
        let mut conn = db::open(&path).unwrap();
        let cache = Cache::default();
        let base = |cache: &Cache, conn: &Connection| {
            let snapshot = cache.current(conn).unwrap();
            snapshot.stored(SERVER_BASE_URL).map(str::to_string)
        };
        db::settings::set(&conn, SERVER_BASE_URL, "https://a.example").unwrap();
        assert_eq!(base(&cache, &conn).as_deref(), Some("https://a.example"));
        db::settings::set(&conn, SERVER_BASE_URL, "https://b.example").unwrap();
        assert_eq!(base(&cache, &conn).as_deref(), Some("https://b.example"));
        // Inside a transaction the read sees the transaction's own write; rolled back, that
        // value was never stored, and the cache must not serve it.
        let tx = db::write_tx(&mut conn).unwrap();
        db::settings::set(&tx, SERVER_BASE_URL, "https://never.example").unwrap();
        assert_eq!(base(&cache, &tx).as_deref(), Some("https://never.example"));
        tx.rollback().unwrap();
        assert_eq!(base(&cache, &conn).as_deref(), Some("https://b.example"));
    }

    #[test]
    fn url_setting_is_validated_and_normalized() {
        let def = known(SERVER_BASE_URL).unwrap();
        assert_eq!(
            normalize(def, "https://x.org/lab/").unwrap(),
            "https://x.org/lab"
        );
        for bad in ["ftp://x", "x.org", "https://", "https://a b", "https://x?y"] {
            assert!(normalize(def, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bools_multi_values_and_secured_keys() {
        let mut conn = db::test_db();
        assert!(set(&mut conn, &By::admin(), GITLAB_ENABLED, "maybe").is_err());
        set(&mut conn, &By::admin(), GITLAB_ENABLED, "true").unwrap();
        assert!(flag(&conn, GITLAB_ENABLED).unwrap());
        set_values(
            &mut conn,
            &By::admin(),
            GITLAB_ALLOWED_GROUPS,
            &["acme", "beta,Acme"],
        )
        .unwrap();
        assert_eq!(
            values(&conn, GITLAB_ALLOWED_GROUPS).unwrap(),
            vec!["acme", "beta"]
        );
        assert!(set_values(
            &mut conn,
            &By::admin(),
            GITLAB_ALLOWED_GROUPS,
            &["acme/sub"]
        )
        .is_err());
        assert!(known(GITLAB_SECRET).unwrap().secured());
        assert!(!known(GITLAB_URL).unwrap().secured());
    }

    #[test]
    fn gitlab_url_change_needs_the_secret_once_one_is_stored() {
        let mut conn = db::test_db();
        set(&mut conn, &By::admin(), GITLAB_URL, "https://a.example/").unwrap();
        assert_eq!(
            value(&conn, GITLAB_URL).unwrap().as_deref(),
            Some("https://a.example")
        );
        set(&mut conn, &By::admin(), GITLAB_SECRET, "s3cret").unwrap();
        set(&mut conn, &By::admin(), GITLAB_URL, "https://a.example").unwrap();
        let err = set(&mut conn, &By::admin(), GITLAB_URL, "https://evil.example").unwrap_err();
        assert_eq!(err.public_message(), URL_NEEDS_SECRET);
        assert_eq!(
            value(&conn, GITLAB_URL).unwrap().as_deref(),
            Some("https://a.example")
        );
    }

    fn group_sync_now(conn: &Connection) -> (Option<String>, Vec<String>) {
        (
            db::settings::get(conn, GITLAB_GROUPS_SYNC).unwrap(),
            values(conn, GITLAB_ALLOWED_GROUPS).unwrap(),
        )
    }

    #[test]
    fn group_sync_needs_an_allowed_group_through_set_and_reset() {
        let mut conn = db::test_db();
        let refused = |r: AppResult<()>| {
            let err = r.expect_err("refused");
            assert_eq!(err.public_message(), SYNC_NEEDS_ALLOWED_GROUP);
            assert_eq!(err.status(), 400);
        };
        refused(set(&mut conn, &By::admin(), GITLAB_GROUPS_SYNC, "true"));
        assert_eq!(group_sync_now(&conn), (None, vec![]), "nothing stored");
        set(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS, "acme").unwrap();
        set(&mut conn, &By::admin(), GITLAB_GROUPS_SYNC, "true").unwrap();
        let on = (Some("true".to_string()), vec!["acme".to_string()]);
        refused(set_values(
            &mut conn,
            &By::admin(),
            GITLAB_ALLOWED_GROUPS,
            &[" ", ""],
        ));
        refused(reset(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS));
        refused(reset_all(
            &mut conn,
            &By::admin(),
            &[SESSION_TIMEOUT, GITLAB_ALLOWED_GROUPS],
        ));
        assert_eq!(group_sync_now(&conn), on, "nothing changed on refusal");
        set_values(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS, &["beta"]).unwrap();
        set(&mut conn, &By::admin(), SESSION_TIMEOUT, "60").unwrap();
        reset_all(
            &mut conn,
            &By::admin(),
            &[GITLAB_ALLOWED_GROUPS, GITLAB_GROUPS_SYNC],
        )
        .unwrap();
        assert_eq!(group_sync_now(&conn), (None, vec![]));
        set(&mut conn, &By::admin(), GITLAB_GROUPS_SYNC, "false").unwrap();
    }

    #[test]
    fn automatic_provisioning_needs_its_token_and_an_allowed_group_through_set_and_reset() {
        let mut conn = db::test_db();
        let refused = |r: AppResult<()>| {
            assert_eq!(r.expect_err("refused").public_message(), PROVISIONING_NEEDS);
        };
        refused(set(&mut conn, &By::admin(), GITLAB_PROVISIONING, "true"));
        set(
            &mut conn,
            &By::admin(),
            GITLAB_PROVISIONING_TOKEN,
            "glpat-t0ken",
        )
        .unwrap();
        refused(set(&mut conn, &By::admin(), GITLAB_PROVISIONING, "true"));
        set(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS, "acme").unwrap();
        set(&mut conn, &By::admin(), GITLAB_PROVISIONING, "true").unwrap();
        assert!(auto_provisioning(&conn).unwrap());
        refused(reset(&mut conn, &By::admin(), GITLAB_PROVISIONING_TOKEN));
        refused(reset(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS));
        assert!(
            is_set(&conn, GITLAB_PROVISIONING_TOKEN).unwrap(),
            "nothing changed"
        );
        reset_all(
            &mut conn,
            &By::admin(),
            &[GITLAB_PROVISIONING, GITLAB_PROVISIONING_TOKEN],
        )
        .unwrap();
        assert!(!auto_provisioning(&conn).unwrap());
        assert!(known(GITLAB_PROVISIONING_TOKEN).unwrap().secured());
    }

    #[test]
    fn provisioning_interval_and_share_have_bounds_and_defaults() {
        let mut conn = db::test_db();
        assert_eq!(provisioning_interval_minutes(&conn).unwrap(), 60);
        assert_eq!(provisioning_max_deactivation_percent(&conn).unwrap(), 20);
        for bad in ["4", "1441", "x"] {
            assert!(
                set(&mut conn, &By::admin(), PROVISIONING_INTERVAL, bad).is_err(),
                "{bad}"
            );
        }
        set(&mut conn, &By::admin(), PROVISIONING_INTERVAL, "5").unwrap();
        set(&mut conn, &By::admin(), PROVISIONING_MAX_DEACTIVATION, "50").unwrap();
        assert_eq!(provisioning_interval_minutes(&conn).unwrap(), 5);
        assert_eq!(provisioning_max_deactivation_percent(&conn).unwrap(), 50);
        assert!(set(&mut conn, &By::admin(), PROVISIONING_MAX_DEACTIVATION, "0").is_err());
    }

    #[test]
    fn a_stored_sync_without_allowed_group_keeps_other_settings_editable() {
        let mut conn = db::test_db();
        // Stored before synchronization needed an allowed group.
        db::settings::set(&conn, GITLAB_GROUPS_SYNC, "true").unwrap();
        assert!(!synchronizes_groups(&conn).unwrap());
        set(&mut conn, &By::admin(), SESSION_TIMEOUT, "60").unwrap();
        set(&mut conn, &By::admin(), GITLAB_URL, "https://gl.example").unwrap();
        reset(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS).unwrap();
        set(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS, "acme").unwrap();
        assert!(synchronizes_groups(&conn).unwrap());
        let err = reset(&mut conn, &By::admin(), GITLAB_ALLOWED_GROUPS).unwrap_err();
        assert_eq!(
            err.public_message(),
            SYNC_NEEDS_ALLOWED_GROUP,
            "once out of that state, it cannot go back"
        );
    }

    #[test]
    fn snapshot_answers_like_single_reads() {
        let mut conn = db::test_db();
        set(&mut conn, &By::admin(), GITLAB_ENABLED, "true").unwrap();
        set_values(
            &mut conn,
            &By::admin(),
            GITLAB_ALLOWED_GROUPS,
            &["acme", "beta"],
        )
        .unwrap();
        set(&mut conn, &By::admin(), GITLAB_SECRET, "s3cret").unwrap();
        let snap = Snapshot::load(&conn).unwrap();
        for def in DEFINITIONS {
            assert_eq!(snap.value(def.key).unwrap(), value(&conn, def.key).unwrap());
            assert_eq!(snap.values(def.key), values(&conn, def.key).unwrap());
            assert_eq!(snap.flag(def.key).unwrap(), flag(&conn, def.key).unwrap());
            assert_eq!(snap.is_set(def.key), is_set(&conn, def.key).unwrap());
        }
        assert!(snap.value("sonar.unknown").is_err());
    }

    #[test]
    fn encrypted_settings_are_sealed_in_the_table_and_read_back() {
        let mut conn = db::test_db();
        set(&mut conn, &By::admin(), GITLAB_SECRET, "s3cret-value").unwrap();
        let raw = db::settings::get(&conn, GITLAB_SECRET).unwrap().unwrap();
        assert!(
            crate::secrets::is_sealed(&raw) && !raw.contains("s3cret"),
            "{raw}"
        );
        assert_eq!(
            secret(&conn, GITLAB_SECRET).unwrap(),
            Secret::Set("s3cret-value".into())
        );
        let snap = Snapshot::load(&conn).unwrap();
        assert_eq!(
            snap.secret(GITLAB_SECRET),
            Secret::Set("s3cret-value".into())
        );
        assert_eq!(snap.secret(GITLAB_URL), Secret::Unset);
        assert!(is_set(&conn, GITLAB_SECRET).unwrap());
        // Only the listed settings are sealed.
        set(&mut conn, &By::admin(), GITLAB_APPLICATION_ID, "app-id").unwrap();
        assert_eq!(
            db::settings::get(&conn, GITLAB_APPLICATION_ID)
                .unwrap()
                .as_deref(),
            Some("app-id")
        );
        assert!(!format!("{:?}", secret(&conn, GITLAB_SECRET).unwrap()).contains("s3cret"));
    }

    #[test]
    fn a_clear_secret_is_sealed_once_and_a_foreign_one_is_unreadable() {
        let mut conn = db::test_db();
        assert!(
            seal_clear_values(&mut conn).unwrap().is_empty(),
            "nothing stored"
        );
        // As an older labgate stored it.
        db::settings::set(&conn, GITLAB_SECRET, "clear-secret").unwrap();
        assert_eq!(
            secret(&conn, GITLAB_SECRET).unwrap(),
            Secret::Set("clear-secret".into())
        );
        assert_eq!(seal_clear_values(&mut conn).unwrap(), vec![GITLAB_SECRET]);
        let sealed = db::settings::get(&conn, GITLAB_SECRET).unwrap().unwrap();
        assert!(crate::secrets::is_sealed(&sealed) && !sealed.contains("clear"));
        assert!(
            seal_clear_values(&mut conn).unwrap().is_empty(),
            "idempotent"
        );
        assert_eq!(
            db::settings::get(&conn, GITLAB_SECRET).unwrap(),
            Some(sealed)
        );
        assert_eq!(
            secret(&conn, GITLAB_SECRET).unwrap(),
            Secret::Set("clear-secret".into())
        );
        // Sealed with a key this labgate does not have: a database restored without its key.
        let other = crate::secrets::Keyring::parse(&crate::secrets::new_key_file_text()).unwrap();
        let foreign = other.seal(&sealing_context(GITLAB_SECRET), "clear-secret");
        db::settings::set(&conn, GITLAB_SECRET, &foreign).unwrap();
        assert!(matches!(
            secret(&conn, GITLAB_SECRET).unwrap(),
            Secret::Unreadable(crate::secrets::OpenError::UnknownKey(_))
        ));
        let config = crate::gitlab_config::load(&conn).unwrap();
        assert!(config.secret.is_none() && config.secret_unreadable);
        assert!(!config.provisioning_token_unreadable);
        // The provisioning token likewise.
        let token = other.seal(&sealing_context(GITLAB_PROVISIONING_TOKEN), "glpat-x");
        db::settings::set(&conn, GITLAB_PROVISIONING_TOKEN, &token).unwrap();
        let config = crate::gitlab_config::load(&conn).unwrap();
        assert!(config.provisioning_token.is_none() && config.provisioning_token_unreadable);
        // Sealed for another setting: does not open as this one.
        let moved = crate::secrets::seal("setting:other", "x").unwrap();
        db::settings::set(&conn, GITLAB_SECRET, &moved).unwrap();
        assert_eq!(
            secret(&conn, GITLAB_SECRET).unwrap(),
            Secret::Unreadable(crate::secrets::OpenError::Damaged)
        );
        set(&mut conn, &By::admin(), GITLAB_SECRET, "entered-again").unwrap();
        assert_eq!(
            crate::gitlab_config::load(&conn).unwrap().secret.as_deref(),
            Some("entered-again")
        );
    }

    #[test]
    fn token_lifetime_setting_takes_exactly_its_four_values() {
        let mut conn = db::test_db();
        let key = "sonar.auth.token.max.allowed.lifetime";
        assert_eq!(value(&conn, key).unwrap().as_deref(), Some("No expiration"));
        for ok in ["30 days", "90 days", "1 year", "No expiration"] {
            set(&mut conn, &By::admin(), key, ok).unwrap();
            assert_eq!(value(&conn, key).unwrap().as_deref(), Some(ok));
        }
        set(&mut conn, &By::admin(), key, "90 days").unwrap();
        for bad in ["45 days", "90 Days", "no expiration", "1 years", "90", ""] {
            let err = set(&mut conn, &By::admin(), key, bad).unwrap_err();
            assert_eq!(
                err.public_message(),
                "Setting 'sonar.auth.token.max.allowed.lifetime': value must be one of \
                 '30 days', '90 days', '1 year', 'No expiration'",
                "{bad:?}"
            );
        }
        assert_eq!(value(&conn, key).unwrap().as_deref(), Some("90 days"));
        reset(&mut conn, &By::admin(), key).unwrap();
        assert_eq!(value(&conn, key).unwrap().as_deref(), Some("No expiration"));
    }

    #[test]
    fn token_lifetime_is_read_as_stored_and_an_unknown_stored_value_is_the_shortest() {
        let mut conn = db::test_db();
        assert_eq!(token_max_lifetime(&conn).unwrap(), TokenLifetime::Unlimited);
        set(&mut conn, &By::admin(), TOKEN_MAX_LIFETIME, "1 year").unwrap();
        assert_eq!(token_max_lifetime(&conn).unwrap(), TokenLifetime::Year);
        // Only a hand edit of the database stores such a value; the cap stays.
        db::settings::set(&conn, TOKEN_MAX_LIFETIME, "forever").unwrap();
        assert_eq!(token_max_lifetime(&conn).unwrap(), TokenLifetime::Days30);
    }

    #[test]
    fn revalidation_interval_is_off_or_within_bounds() {
        let mut conn = db::test_db();
        assert_eq!(revalidate_minutes(&conn).unwrap(), 15);
        for ok in ["0", "5", "60", "1440"] {
            set(&mut conn, &By::admin(), REVALIDATE_MINUTES, ok).unwrap();
            assert_eq!(revalidate_minutes(&conn).unwrap().to_string(), ok);
        }
        for bad in ["4", "1", "1441", "-1", "x", "15.5"] {
            let err = set(&mut conn, &By::admin(), REVALIDATE_MINUTES, bad).unwrap_err();
            assert!(err.public_message().contains("0 (off)"), "{bad}: {err:?}");
        }
        db::settings::set(&conn, REVALIDATE_MINUTES, "2").unwrap();
        assert_eq!(
            revalidate_minutes(&conn).unwrap(),
            15,
            "a hand edit out of bounds"
        );
    }

    #[test]
    fn session_timeout_bounds_and_default() {
        let mut conn = db::test_db();
        assert_eq!(session_timeout_secs(&conn).unwrap(), 3 * 24 * 3600);
        assert!(set(&mut conn, &By::admin(), SESSION_TIMEOUT, "5").is_err());
        assert!(set(&mut conn, &By::admin(), SESSION_TIMEOUT, "abc").is_err());
        set(&mut conn, &By::admin(), SESSION_TIMEOUT, "60").unwrap();
        assert_eq!(session_timeout_secs(&conn).unwrap(), 3600);
        reset(&mut conn, &By::admin(), SESSION_TIMEOUT).unwrap();
        assert!(!is_set(&conn, SESSION_TIMEOUT).unwrap());
        assert!(set(&mut conn, &By::admin(), "sonar.unknown", "1").is_err());
    }
}
