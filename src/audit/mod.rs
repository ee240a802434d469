//! The audit log: every sign-in decision and every change, recorded so that an administrator
//! can answer "why can't Ann sign in?" and "who gave Bob admin?" without reading logs.
//!
//! An operation records its event with [`record`] in its own write transaction, so that a
//! change and its event commit together or not at all. The event is appended to the pending
//! events (one row in a table without indexes: the cheapest write there is), and [`flush`]
//! moves the pending events into the indexed log in one batch: the maintenance every second,
//! and every reader before it reads, so that the log always shows every event committed. Who acts comes in as [`By`] (the
//! signed-in login, the client address, the request id and the time). An event never holds a
//! password, secret, token, OAuth code, session id or hash: [`Event::with`] refuses the keys
//! that name one, and the operations put in only names, counts and values shown on pages.
//!
//! Failed local sign-ins of one login are folded into one event a minute with a count
//! ([`failed_local_sign_in`]), and at most [`NEW_FAILURE_EVENTS_PER_MINUTE`] logins a minute
//! get an event of their own, so that a flood of guesses cannot crowd out the log. Old events
//! are removed by age and by number ([`Retention`]).

use crate::db::{self, audit as store};
use crate::error::AppResult;
use rusqlite::Connection;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::sync::Mutex;

mod read;
mod retention;

pub use read::{at_text, line, list, of_user, parse_filter, Export, Shown};
pub use retention::{prune, retention_days, Pruned, Retention};

/// The setting holding how many days events are kept.
pub const RETENTION_DAYS: &str = "labgate.audit.retentionDays";
/// Days kept when the setting is not set.
pub const RETENTION_DAYS_DEFAULT: i64 = 90;
/// Bounds of the setting.
pub const RETENTION_DAYS_MIN: i64 = 1;
pub const RETENTION_DAYS_MAX: i64 = 3650;
/// Most events kept; past it the oldest go first.
pub const MAX_EVENTS: i64 = 1_000_000;
/// Events removed per transaction, so that a large removal never holds the write lock long.
pub const PRUNE_BATCH: i64 = 1_000;
/// Removal of old events runs at most this often.
pub const PRUNE_EVERY_MS: i64 = 3_600_000;
/// Failures of one login within this window share one event.
pub const FOLD_WINDOW_MS: i64 = 60_000;
/// Logins whose failed sign-ins get an event of their own, per minute; the failures of any
/// further login that minute are counted in one shared event (target [`MANY_LOGINS`]).
pub const NEW_FAILURE_EVENTS_PER_MINUTE: u32 = 60;
/// The target of the shared event of failed sign-ins past the per-minute number of logins:
/// no login can be written so.
pub const MANY_LOGINS: &str = "*";

/// Who acts, from where, when: the signed-in login (none for a sign-in that has not succeeded
/// yet or for labgate itself), the client address, the request id, and the time of the event
/// (UTC milliseconds; tests choose it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct By {
    pub actor: Option<String>,
    pub client: Option<IpAddr>,
    pub request_id: Option<String>,
    pub at_ms: i64,
}

impl By {
    /// labgate itself (a scheduled task, the command line), at `at_ms`.
    pub fn system(at_ms: i64) -> By {
        By {
            actor: None,
            client: None,
            request_id: None,
            at_ms,
        }
    }

    /// `login` at `at_ms`, from nowhere in particular (tests, the command line).
    pub fn login(login: &str, at_ms: i64) -> By {
        By {
            actor: Some(login.to_string()),
            ..By::system(at_ms)
        }
    }

    /// `admin` at time 1,000 ms: the actor of unit tests.
    #[cfg(test)]
    pub fn admin() -> By {
        By::login("admin", 1_000)
    }

    /// The same, with this actor.
    pub fn as_actor(&self, login: &str) -> By {
        By {
            actor: Some(login.to_string()),
            ..self.clone()
        }
    }
}

/// What happened. The text of each is what is stored and filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SigninGitlab,
    SigninLocal,
    Signout,
    SessionEnded,
    UserCreate,
    UserUpdate,
    UserDeactivate,
    UserReactivate,
    UserLink,
    PasswordChange,
    GroupCreate,
    GroupUpdate,
    GroupDelete,
    MembershipAdd,
    MembershipRemove,
    PermissionGrant,
    PermissionRevoke,
    TokenGenerate,
    TokenRevoke,
    SettingSet,
    SettingReset,
    GitlabConfigure,
    ApplicationCreate,
    ApplicationUpdate,
    ApplicationDelete,
    GateRefused,
    ProvisioningRun,
    RevalidationRun,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::SigninGitlab,
        Action::SigninLocal,
        Action::Signout,
        Action::SessionEnded,
        Action::UserCreate,
        Action::UserUpdate,
        Action::UserDeactivate,
        Action::UserReactivate,
        Action::UserLink,
        Action::PasswordChange,
        Action::GroupCreate,
        Action::GroupUpdate,
        Action::GroupDelete,
        Action::MembershipAdd,
        Action::MembershipRemove,
        Action::PermissionGrant,
        Action::PermissionRevoke,
        Action::TokenGenerate,
        Action::TokenRevoke,
        Action::SettingSet,
        Action::SettingReset,
        Action::GitlabConfigure,
        Action::ApplicationCreate,
        Action::ApplicationUpdate,
        Action::ApplicationDelete,
        Action::GateRefused,
        Action::ProvisioningRun,
        Action::RevalidationRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::SigninGitlab => "signin.gitlab",
            Action::SigninLocal => "signin.local",
            Action::Signout => "signout",
            Action::SessionEnded => "session.ended",
            Action::UserCreate => "user.create",
            Action::UserUpdate => "user.update",
            Action::UserDeactivate => "user.deactivate",
            Action::UserReactivate => "user.reactivate",
            Action::UserLink => "user.link",
            Action::PasswordChange => "password.change",
            Action::GroupCreate => "group.create",
            Action::GroupUpdate => "group.update",
            Action::GroupDelete => "group.delete",
            Action::MembershipAdd => "membership.add",
            Action::MembershipRemove => "membership.remove",
            Action::PermissionGrant => "permission.grant",
            Action::PermissionRevoke => "permission.revoke",
            Action::TokenGenerate => "token.generate",
            Action::TokenRevoke => "token.revoke",
            Action::SettingSet => "setting.set",
            Action::SettingReset => "setting.reset",
            Action::GitlabConfigure => "gitlab.configure",
            Action::ApplicationCreate => "application.create",
            Action::ApplicationUpdate => "application.update",
            Action::ApplicationDelete => "application.delete",
            Action::GateRefused => "gate.refused",
            Action::ProvisioningRun => "provisioning.run",
            Action::RevalidationRun => "revalidation.run",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.as_str() == text)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

impl Outcome {
    pub const ALL: &'static [Outcome] = &[Outcome::Ok, Outcome::Refused, Outcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.iter().copied().find(|o| o.as_str() == text)
    }
}

/// Keys a detail never holds: each would name a secret. (A token's name is `tokenName`.)
const FORBIDDEN_KEYS: &[&str] = &[
    "password",
    "previousPassword",
    "secret",
    "token",
    "accessToken",
    "refreshToken",
    "code",
    "verifier",
    "session",
    "sessionId",
    "hash",
    "passwordHash",
    "tokenHash",
    "provisioningToken",
];

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub action: Action,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub detail: Map<String, Value>,
}

/// Whether a detail key or a changed field names a secret ([`FORBIDDEN_KEYS`]); a debug build
/// stops there, so that a test finds the caller.
fn names_secret(key: &str) -> bool {
    let secret = FORBIDDEN_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key));
    debug_assert!(!secret, "audit detail key {key:?} names a secret");
    secret
}

impl Event {
    pub fn new(action: Action, outcome: Outcome, target: Option<&str>) -> Event {
        Event {
            action,
            target: target.map(str::to_string),
            outcome,
            reason: None,
            detail: Map::new(),
        }
    }

    /// A change or an admission about `target`.
    pub fn ok(action: Action, target: &str) -> Event {
        Event::new(action, Outcome::Ok, Some(target))
    }

    /// A refusal about `target` (the person, when known), with its reason.
    pub fn refused(action: Action, target: Option<&str>, reason: &str) -> Event {
        Event::new(action, Outcome::Refused, target).because(reason)
    }

    /// A failure about `target`, with its reason.
    pub fn failed(action: Action, target: Option<&str>, reason: &str) -> Event {
        Event::new(action, Outcome::Failed, target).because(reason)
    }

    pub fn because(mut self, reason: &str) -> Event {
        self.reason = Some(reason.to_string());
        self
    }

    /// Adds `key` to the detail. A key that names a secret is dropped (and a debug build
    /// stops): no secret may reach the log, whatever a caller passes.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        if names_secret(key) {
            return self;
        }
        self.detail.insert(key.to_string(), value.into());
        self
    }

    /// Adds the old and new value of a field that changed, under `changes`; nothing when equal.
    /// A field that names a secret is dropped, as by [`Event::with`].
    pub fn change(mut self, field: &str, old: impl Into<Value>, new: impl Into<Value>) -> Event {
        let (old, new) = (old.into(), new.into());
        if old != new && !names_secret(field) {
            let changes = self
                .detail
                .entry("changes")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(changes) = changes {
                changes.insert(
                    field.to_string(),
                    serde_json::json!({"old": old, "new": new}),
                );
            }
        }
        self
    }
}

/// Whether events are written. Only the benchmark turns it off (environment variable
/// `LABGATE_BENCH_AUDIT=off`, read once), to measure what recording costs in the same run.
fn recording() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("LABGATE_BENCH_AUDIT").as_deref() != Ok("off"))
}

/// Writes `event` in the caller's transaction `conn`, with `by`'s actor, client address and
/// request id, among the pending events ([`flush`] moves them into the log).
pub fn record(conn: &Connection, by: &By, event: Event) -> AppResult<()> {
    if !recording() {
        return Ok(());
    }
    let mut detail = event.detail;
    if let Some(client) = by.client {
        detail.insert("client".into(), Value::String(client.to_string()));
    }
    if let Some(request) = &by.request_id {
        detail.insert("requestId".into(), Value::String(request.clone()));
    }
    // Serialized straight into a string: `Display` would go through the formatter piece by
    // piece, checking each piece's UTF-8 again.
    let detail = serde_json::to_string(&detail)
        .map_err(|e| crate::error::AppError::Internal(e.to_string()))?;
    store::append(
        conn,
        &store::NewEvent {
            at: by.at_ms,
            actor: by.actor.as_deref(),
            action: event.action.as_str(),
            target: event.target.as_deref(),
            outcome: event.outcome.as_str(),
            reason: event.reason.as_deref(),
            detail: &detail,
        },
    )?;
    Ok(())
}

/// Runs `write`, which writes the audit log and nothing else, in a write transaction of its
/// own. What is held in memory between commits (signed-in callers, settings, applications)
/// depends on nothing the log holds, so the commit leaves the commit generation as it is: a
/// flood of refused or failed sign-ins does not empty those caches.
fn audit_only<T>(
    conn: &mut Connection,
    write: impl FnOnce(&rusqlite::Transaction<'_>) -> AppResult<T>,
) -> AppResult<T> {
    db::uncounted_write(|| {
        let tx = db::write_tx(conn)?;
        let out = write(&tx)?;
        tx.commit()?;
        Ok(out)
    })
}

/// Records `event` in a transaction of its own (an event without a change: a refusal).
pub fn record_alone(conn: &mut Connection, by: &By, event: Event) -> AppResult<()> {
    audit_only(conn, |tx| record(tx, by, event))
}

/// Moves the pending events into the log, in one transaction; returns how many. Nothing is
/// written when none is pending.
pub fn flush(conn: &mut Connection) -> AppResult<usize> {
    if !store::any_pending(conn)? {
        return Ok(0);
    }
    audit_only(conn, |tx| Ok(store::move_pending(tx)?))
}

/// State kept for the current UTC minute only: a new minute starts from `S::default()`.
#[derive(Debug, Default)]
struct ThisMinute<S> {
    /// (minute, state)
    state: Mutex<(i64, S)>,
}

impl<S: Default> ThisMinute<S> {
    /// Runs `f` on the state of the minute of `at_ms`.
    fn with<R>(&self, at_ms: i64, f: impl FnOnce(&mut S) -> R) -> R {
        let minute = at_ms.div_euclid(60_000);
        let mut held = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if held.0 != minute {
            *held = (minute, S::default());
        }
        f(&mut held.1)
    }
}

/// The per-minute number of logins whose failed sign-ins got an event of their own.
#[derive(Debug, Default)]
pub struct FailureEvents(ThisMinute<u32>);

impl FailureEvents {
    /// Takes one of this minute's events; `false` when they are spent.
    fn take(&self, at_ms: i64) -> bool {
        self.0.with(at_ms, |taken| {
            let free = *taken < NEW_FAILURE_EVENTS_PER_MINUTE;
            *taken += u32::from(free);
            free
        })
    }
}

/// Keys seen this minute, for events recorded at most once a minute per key (a refusal at the
/// gate, per person and application). At most [`ONCE_PER_MINUTE_KEYS`] keys are held; past
/// that, the minute starts over (a few events more, never unbounded memory).
#[derive(Debug, Default)]
pub struct OncePerMinute(ThisMinute<std::collections::HashSet<String>>);

/// Keys [`OncePerMinute`] holds at most.
pub const ONCE_PER_MINUTE_KEYS: usize = 10_000;

impl OncePerMinute {
    /// Whether `key` is seen for the first time in the minute of `at_ms` (and notes it).
    pub fn first(&self, key: &str, at_ms: i64) -> bool {
        self.0.with(at_ms, |seen| {
            if seen.len() >= ONCE_PER_MINUTE_KEYS {
                seen.clear();
            }
            seen.insert(key.to_string())
        })
    }
}

/// Records a failed local sign-in of `login` (`reason`: a short code such as
/// `wrong-password` or `throttled`), folded: within [`FOLD_WINDOW_MS`] of the event of that
/// login's last failure, that event's `count` grows instead. A login past the minute's
/// [`NEW_FAILURE_EVENTS_PER_MINUTE`] is counted in the shared event of [`MANY_LOGINS`].
pub fn failed_local_sign_in(
    conn: &mut Connection,
    budget: &FailureEvents,
    by: &By,
    login: &str,
    reason: &str,
) -> AppResult<()> {
    if !recording() {
        return Ok(());
    }
    // A login is at most 255 characters; anything longer is not one, and is cut.
    let login: String = login.chars().take(255).collect();
    let action = Action::SigninLocal.as_str();
    let failed = Outcome::Failed.as_str();
    audit_only(conn, |tx| {
        // The failures recorded last may still be pending: moved first, they are found below.
        store::move_pending(tx)?;
        let recent = |target: &str| -> AppResult<Option<i64>> {
            Ok(store::newest_about(tx, action, failed, target)?
                .filter(|&(_, at)| at > by.at_ms - FOLD_WINDOW_MS)
                .map(|(id, _)| id))
        };
        if let Some(id) = recent(&login)? {
            store::add_to_count(tx, id, 1)?;
        } else if budget.take(by.at_ms) {
            let event = Event::failed(Action::SigninLocal, Some(&login), reason).with("count", 1);
            record(tx, by, event)?;
        } else if let Some(id) = recent(MANY_LOGINS)? {
            store::add_to_count(tx, id, 1)?;
        } else {
            let event = Event::failed(Action::SigninLocal, Some(MANY_LOGINS), "too-many-logins")
                .with("count", 1);
            record(tx, by, event)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;

    fn stored(conn: &Connection) -> Vec<store::Event> {
        store::move_pending(conn).unwrap();
        store::page(conn, &store::Filter::default(), 0, 1000).unwrap()
    }

    #[test]
    fn an_event_carries_who_from_where_and_its_detail() {
        let conn = test_db();
        let by = By {
            actor: Some("admin".into()),
            client: Some("192.0.2.7".parse().unwrap()),
            request_id: Some("r-1".into()),
            at_ms: 1_234,
        };
        let event = Event::ok(Action::UserCreate, "ann")
            .with("local", true)
            .change("name", "", "Ann");
        record(&conn, &by, event).unwrap();
        let [e] = &stored(&conn)[..] else {
            panic!("one event")
        };
        assert_eq!(
            (
                e.at,
                e.actor.as_deref(),
                e.action.as_str(),
                e.target.as_deref()
            ),
            (1_234, Some("admin"), "user.create", Some("ann"))
        );
        assert_eq!(e.outcome, "ok");
        let detail: Value = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({
                "local": true,
                "changes": {"name": {"old": "", "new": "Ann"}},
                "client": "192.0.2.7",
                "requestId": "r-1",
            })
        );
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "names a secret"))]
    fn a_detail_key_naming_a_secret_is_dropped() {
        let event = Event::ok(Action::TokenGenerate, "ann").with("token", "lgu_x");
        assert!(event.detail.is_empty());
    }

    /// Failures of one login within a minute share one event that counts them; another
    /// login, or the same a minute later, gets its own.
    #[test]
    fn failed_sign_ins_of_one_login_are_folded_a_minute_at_a_time() {
        let mut conn = test_db();
        let budget = FailureEvents::default();
        let at = |ms: i64| By::system(ms);
        for ms in [0, 10_000, 59_999] {
            failed_local_sign_in(&mut conn, &budget, &at(ms), "ann", "wrong-password").unwrap();
        }
        failed_local_sign_in(&mut conn, &budget, &at(20_000), "bob", "wrong-password").unwrap();
        failed_local_sign_in(&mut conn, &budget, &at(60_000), "ann", "throttled").unwrap();
        let events = stored(&conn);
        let summary: Vec<(String, String, i64)> = events
            .iter()
            .rev()
            .map(|e| {
                let detail: Value = serde_json::from_str(&e.detail).unwrap();
                (
                    e.target.clone().unwrap(),
                    e.reason.clone().unwrap(),
                    detail["count"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("ann".into(), "wrong-password".into(), 3),
                ("bob".into(), "wrong-password".into(), 1),
                ("ann".into(), "throttled".into(), 1),
            ]
        );
    }

    #[test]
    fn once_per_minute_lets_each_key_through_once_a_minute() {
        let once = OncePerMinute::default();
        assert!(once.first("ann/wiki", 1_000));
        assert!(!once.first("ann/wiki", 59_999));
        assert!(once.first("bob/wiki", 2_000));
        assert!(once.first("ann/wiki", 60_000));
    }

    /// A flood of failures over ever new logins opens at most so many events a minute; the
    /// rest are counted in one shared event.
    #[test]
    fn a_flood_of_logins_opens_a_bounded_number_of_events() {
        let mut conn = test_db();
        let budget = FailureEvents::default();
        let by = By::system(5_000);
        let logins = NEW_FAILURE_EVENTS_PER_MINUTE as usize + 500;
        for i in 0..logins {
            failed_local_sign_in(&mut conn, &budget, &by, &format!("guess{i}"), "unknown").unwrap();
        }
        let events = stored(&conn);
        assert_eq!(events.len(), NEW_FAILURE_EVENTS_PER_MINUTE as usize + 1);
        let shared = &events[0];
        assert_eq!(shared.target.as_deref(), Some(MANY_LOGINS));
        let detail: Value = serde_json::from_str(&shared.detail).unwrap();
        assert_eq!(detail["count"], 500);
        // The next minute opens events again.
        failed_local_sign_in(&mut conn, &budget, &By::system(65_000), "late", "unknown").unwrap();
        assert_eq!(stored(&conn)[0].target.as_deref(), Some("late"));
    }
}
