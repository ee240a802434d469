//! Reading the log: the filters as people type them, pages of events, a user's last events,
//! and each event told in one readable line.

use super::{Action, Outcome};
use crate::db::audit as store;
use crate::error::{AppError, AppResult};
use crate::model::FieldError;
use rusqlite::Connection;
use serde_json::Value;

/// An event as pages and the API show it: the stored columns, the detail parsed, and its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub id: i64,
    pub at_ms: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: Value,
    pub line: String,
}

impl Shown {
    /// The event as the API and the export write it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "at": at_text(self.at_ms),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "reason": self.reason,
            "detail": self.detail,
            "line": self.line,
        })
    }

    fn of(event: store::Event) -> Shown {
        let detail = serde_json::from_str(&event.detail).unwrap_or(Value::Null);
        let line = line(&event, &detail);
        Shown {
            id: event.id,
            at_ms: event.at,
            actor: event.actor,
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            reason: event.reason,
            detail,
            line,
        }
    }
}

/// A time in UTC milliseconds as the API writes it: `2024-01-15T10:20:30.123Z`.
pub fn at_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// The events a filter keeps, newest first, as NDJSON (one JSON object a line), read from the
/// database slice by slice while they are sent: the export never holds more than a slice, and
/// holds no transaction open between slices (events added meanwhile are newer than the first
/// and are not included).
pub struct Export {
    conn: Connection,
    query: store::Query,
    /// The id the next slice starts below; `None` before the first.
    before: Option<i64>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Events per slice of an export.
const EXPORT_SLICE: i64 = 500;

impl Export {
    /// An export reading through `conn` (its own connection: it outlives the request), the
    /// pending events moved into the log first.
    pub fn new(mut conn: Connection, filter: store::Filter) -> AppResult<Export> {
        super::flush(&mut conn)?;
        let query = store::Query::new(&conn, filter)?;
        Ok(Export {
            conn,
            query,
            before: None,
            buf: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn refill(&mut self) -> rusqlite::Result<()> {
        let slice = self
            .query
            .slice_before(&self.conn, self.before, EXPORT_SLICE)?;
        self.done = (slice.len() as i64) < EXPORT_SLICE;
        self.before = slice.last().map(|e| e.id).or(self.before);
        self.buf.clear();
        self.pos = 0;
        for event in slice {
            let json = Shown::of(event).to_json();
            // Writing a `Value` to memory cannot fail.
            let _ = serde_json::to_writer(&mut self.buf, &json);
            self.buf.push(b'\n');
        }
        Ok(())
    }
}

impl std::io::Read for Export {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.refill().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Longest text filter, in characters (a login or a GitLab username is at most 255).
const MAX_TEXT: usize = 255;

/// The filter of a listing from its parameters as typed: `q` (the beginning of the actor's
/// or the target's name, ignoring case), `action`, `outcome`, and the dates `from` and `to`
/// (`YYYY-MM-DD`, UTC, both included). Empty means no filter. Every error at once, each on its
/// parameter.
pub fn parse_filter(
    q: Option<&str>,
    action: Option<&str>,
    outcome: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> AppResult<store::Filter> {
    fn given(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    let mut errors = Vec::new();
    let text = given(q).map(|q| q.chars().take(MAX_TEXT).collect::<String>());
    let action = match given(action) {
        None => None,
        Some(a) if Action::parse(a).is_some() => Some(a.to_string()),
        Some(a) => {
            errors.push(FieldError::new(
                "action",
                format!("'{a}' is not an audit action"),
            ));
            None
        }
    };
    let outcome = match given(outcome) {
        None => None,
        Some(o) if Outcome::parse(o).is_some() => Some(o.to_string()),
        Some(o) => {
            errors.push(FieldError::new(
                "outcome",
                format!("Outcome '{o}' must be one of: ok, refused, failed"),
            ));
            None
        }
    };
    let mut day = |field: &'static str, raw: Option<&str>| match given(raw) {
        None => None,
        Some(raw) => match chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            Ok(date) => Some(
                date.signed_duration_since(chrono::NaiveDate::default())
                    .num_days(),
            ),
            Err(_) => {
                errors.push(FieldError::new(
                    field,
                    format!("Date '{raw}' cannot be parsed as a date (expected YYYY-MM-DD)"),
                ));
                None
            }
        },
    };
    let from_day = day("from", from);
    let to_day = day("to", to);
    // A range that ends before it starts holds nothing: said, rather than an empty list that
    // looks like a quiet log.
    if let (Some(first), Some(last)) = (from_day, to_day) {
        if last < first {
            errors.push(FieldError::new(
                "to",
                format!(
                    "The end date '{}' is before the start date '{}'",
                    given(to).unwrap_or_default(),
                    given(from).unwrap_or_default()
                ),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    Ok(store::Filter {
        text,
        action,
        outcome,
        from_day,
        to_day,
    })
}

/// A page of the events `filter` keeps, newest first, and how many it keeps in all.
/// Pending events are moved into the log first ([`super::flush`]).
pub fn list(
    conn: &mut Connection,
    filter: &store::Filter,
    offset: i64,
    limit: i64,
) -> AppResult<(Vec<Shown>, i64)> {
    super::flush(conn)?;
    let snapshot = crate::db::read_snapshot(conn)?;
    let query = store::Query::new(conn, filter.clone())?;
    let events = query.page(conn, offset, limit)?;
    let total = query.total(conn)?;
    drop(snapshot);
    Ok((events.into_iter().map(Shown::of).collect(), total))
}

/// The last events about a user or by them: the admin's user page.
pub const USER_EVENTS: i64 = 20;

/// The last [`USER_EVENTS`] events whose actor or target is `login`, newest first.
/// Events still pending are not among them: a page that shows them calls [`super::flush`]
/// first.
pub fn of_user(conn: &Connection, login: &str) -> AppResult<Vec<Shown>> {
    Ok(store::about(conn, login, USER_EVENTS)?
        .into_iter()
        .map(Shown::of)
        .collect())
}

/// Longest value shown in a line, in characters; the detail holds it whole.
const SHOWN_VALUE: usize = 80;

/// A value as a line shows it: strings bare, `none` for null, lists joined by commas.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    };
    if text.chars().count() > SHOWN_VALUE {
        let cut: String = text.chars().take(SHOWN_VALUE).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The event in one line, for people: who did what to whom, and for a refusal why, with what
/// GitLab said ("alice refused: You are not allowed to authenticate — GitLab groups:
/// acme-other, beta"). Names come from users and GitLab: pages escape the line like any text.
pub fn line(event: &store::Event, detail: &Value) -> String {
    let text = |key: &str| detail.get(key).map(shown);
    let actor = event.actor.as_deref().unwrap_or("labgate");
    let target = event.target.as_deref().unwrap_or("someone");
    let mut line = match event.outcome.as_str() {
        "refused" | "failed" => {
            let what = match event.action.as_str() {
                "signin.local" if target == super::MANY_LOGINS => {
                    "sign-ins of further logins".to_string()
                }
                "signin.local" | "signin.gitlab" => target.to_string(),
                "gate.refused" => format!(
                    "{target} at {}",
                    detail.get("application").map(shown).unwrap_or_default()
                ),
                action if event.target.is_none() => action.to_string(),
                action => format!("{action} {target}"),
            };
            let reason = event.reason.as_deref().unwrap_or("no reason given");
            format!("{what} {}: {reason}", event.outcome)
        }
        _ => ok_line(event, detail, actor, target),
    };
    if let Some(groups) = text("gitlabGroups") {
        let groups = if groups.is_empty() {
            "none".into()
        } else {
            groups
        };
        line.push_str(&format!(" — GitLab groups: {groups}"));
    }
    if let Some(changes) = detail.get("changes").and_then(Value::as_object) {
        let parts: Vec<String> = changes
            .iter()
            .map(|(field, change)| {
                let (old, new) = (&change["old"], &change["new"]);
                format!("{field} {} → {}", shown(old), shown(new))
            })
            .collect();
        if !parts.is_empty() {
            line.push_str(&format!(": {}", parts.join("; ")));
        }
    }
    if let Some(count) = detail
        .get("count")
        .and_then(Value::as_i64)
        .filter(|&n| n > 1)
    {
        line.push_str(&format!(" ({count} times within a minute)"));
    }
    line
}

/// The line of a change or an admission.
fn ok_line(event: &store::Event, detail: &Value, actor: &str, target: &str) -> String {
    let text = |key: &str| detail.get(key).map(shown).unwrap_or_default();
    let by = detail.get("by").and_then(Value::as_str);
    match event.action.as_str() {
        "signin.gitlab" => {
            let created = detail.get("created").and_then(Value::as_bool) == Some(true);
            let mut line = format!("{target} signed in with GitLab");
            if created {
                line.push_str(" (account created)");
            }
            line
        }
        "signin.local" => format!("{target} signed in with a password"),
        "signout" => format!("{target} signed out"),
        "session.ended" => {
            let mut line = format!(
                "{} session(s) of {target} ended ({})",
                text("sessions"),
                by.unwrap_or("ended")
            );
            if let Some(reason) = &event.reason {
                line.push_str(&format!(": {reason}"));
            }
            line
        }
        "provisioning.run" => format!(
            "provisioning read {} GitLab users in {} groups",
            text("usersRead"),
            text("groupsRead")
        ),
        "revalidation.run" => format!(
            "revalidation checked {} GitLab users: {} updated, {} cut off",
            text("usersChecked"),
            text("usersUpdated"),
            text("usersCutOff")
        ),
        "user.create" => format!("{actor} created user {target}"),
        "user.update" => format!("{actor} updated user {target}"),
        "user.deactivate" => format!("{actor} deactivated user {target}"),
        "user.reactivate" => format!("{actor} reactivated user {target}"),
        "user.link" => format!(
            "{actor} linked user {target} to GitLab user {}",
            text("gitlabUsername")
        ),
        "password.change" => format!("{actor} changed the password of {target}"),
        "group.create" => format!("{actor} created group {target}"),
        "group.update" => format!("{actor} updated group {target}"),
        "group.delete" => format!("{actor} deleted group {target}"),
        "membership.add" | "membership.remove" => {
            let verb = if event.action == "membership.add" {
                "added"
            } else {
                "removed"
            };
            let groups = text("groups");
            let groups = if groups.is_empty() {
                text("group")
            } else {
                groups
            };
            let direction = if verb == "added" { "to" } else { "from" };
            match by {
                Some("hand") | None => format!("{actor} {verb} {target} {direction} {groups}"),
                Some(by) => format!("{target} {verb} {direction} {groups} (by {by})"),
            }
        }
        "permission.grant" => format!(
            "{actor} granted {} to {} {target}",
            text("permission"),
            text("holder")
        ),
        "permission.revoke" => format!(
            "{actor} revoked {} from {} {target}",
            text("permission"),
            text("holder")
        ),
        "token.generate" => format!("{actor} generated token {} of {target}", text("tokenName")),
        "token.revoke" => format!("{actor} revoked token {} of {target}", text("tokenName")),
        "setting.set" => match detail.get("value") {
            Some(value) => format!("{actor} set {target} to {}", shown(value)),
            None => format!("{actor} set {target}"),
        },
        "setting.reset" => format!("{actor} reset {target}"),
        "gitlab.configure" => format!(
            "{actor} {} the GitLab configuration",
            match text("operation").as_str() {
                "create" => "created",
                "delete" => "deleted",
                _ => "changed",
            }
        ),
        "application.create" => format!("{actor} created application {target}"),
        "application.update" => format!("{actor} updated application {target}"),
        "application.delete" => format!("{actor} deleted application {target}"),
        action => format!("{actor}: {action} {target}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, outcome: &str, target: &str, reason: Option<&str>) -> store::Event {
        store::Event {
            id: 1,
            at: 0,
            actor: Some("admin".into()),
            action: action.into(),
            target: Some(target.into()),
            outcome: outcome.into(),
            reason: reason.map(str::to_string),
            detail: "{}".into(),
        }
    }

    #[test]
    fn a_gitlab_refusal_says_why_with_what_gitlab_said() {
        let mut e = event(
            "signin.gitlab",
            "refused",
            "alice",
            Some("You are not allowed to authenticate"),
        );
        e.actor = None;
        let detail = serde_json::json!({"gitlabGroups": ["acme-other", "beta"], "gitlabId": "7"});
        assert_eq!(
            line(&e, &detail),
            "alice refused: You are not allowed to authenticate — GitLab groups: acme-other, beta"
        );
    }

    #[test]
    fn changes_and_counts_are_told() {
        let e = event("user.update", "ok", "ann", None);
        let detail = serde_json::json!({"changes": {"name": {"old": "Ann", "new": "Ann B"}}});
        assert_eq!(
            line(&e, &detail),
            "admin updated user ann: name Ann → Ann B"
        );
        let mut e = event("signin.local", "failed", "ann", Some("wrong-password"));
        e.actor = None;
        let detail = serde_json::json!({"count": 7});
        assert_eq!(
            line(&e, &detail),
            "ann failed: wrong-password (7 times within a minute)"
        );
        let e = event("membership.add", "ok", "ann", None);
        let detail = serde_json::json!({"by": "synchronization", "groups": ["acme", "acme/lab"]});
        assert_eq!(
            line(&e, &detail),
            "ann added to acme, acme/lab (by synchronization)"
        );
    }

    #[test]
    fn every_action_has_a_line_naming_its_target() {
        // The one GitLab configuration and the scheduled runs need no name.
        let unnamed = [
            Action::GitlabConfigure,
            Action::RevalidationRun,
            Action::ProvisioningRun,
        ];
        for action in Action::ALL.iter().filter(|a| !unnamed.contains(a)) {
            let e = event(action.as_str(), "ok", "the-target", None);
            let told = line(&e, &serde_json::json!({}));
            assert!(told.contains("the-target"), "{action:?}: {told}");
        }
    }

    #[test]
    fn filters_are_checked_all_at_once() {
        let err = parse_filter(None, Some("user.nope"), Some("maybe"), Some("x"), None);
        match err {
            Err(AppError::Invalid(errors)) => assert_eq!(errors.len(), 3, "{errors:?}"),
            other => panic!("{other:?}"),
        }
        let f = parse_filter(
            Some(" ann "),
            Some("user.create"),
            Some("ok"),
            Some("1970-01-02"),
            Some("1970-01-03"),
        )
        .unwrap();
        assert_eq!(f.text.as_deref(), Some("ann"));
        assert_eq!((f.from_day, f.to_day), (Some(1), Some(2)));
        assert_eq!(
            parse_filter(Some(""), None, None, None, None).unwrap(),
            store::Filter::default()
        );
        // One day is a range; a range ending before it starts is refused.
        let f = parse_filter(None, None, None, Some("1970-01-02"), Some("1970-01-02")).unwrap();
        assert_eq!((f.from_day, f.to_day), (Some(1), Some(1)));
        match parse_filter(None, None, None, Some("1970-01-03"), Some("1970-01-02")) {
            Err(AppError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].field, "to");
                assert_eq!(
                    errors[0].message,
                    "The end date '1970-01-02' is before the start date '1970-01-03'"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
