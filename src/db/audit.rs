//! The `audit_events` table (with `audit_counts`: added to as events move in, taken from by a
//! trigger as they go): writing an event in the caller's transaction, the pages and totals of
//! a filtered listing, a person's last events, folding repeated failures into one row, and
//! removing the oldest rows.
//!
//! `at` never decreases with `id` ([`append`] stamps a row no earlier than the one before it),
//! and rows only ever go oldest first ([`delete_through`]): a time range is an id range, found
//! by bisection ([`first_id_at`]) without an index on `at`.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::collections::HashMap;

/// Milliseconds in a UTC day: `audit_counts` counts events per `at / DAY_MS`.
pub const DAY_MS: i64 = 86_400_000;

/// An event to write.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// UTC milliseconds; stored as at least the `at` of the newest row.
    pub at: i64,
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    /// A JSON object.
    pub detail: &'a str,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    /// A JSON object.
    pub detail: String,
}

const COLUMNS: &str = "id, at, actor, action, target, outcome, reason, detail";

fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        outcome: r.get(5)?,
        reason: r.get(6)?,
        detail: r.get(7)?,
    })
}

/// Writes an event straight into `audit_events` (with any event pending before it: see
/// [`move_pending`]); returns its id. Its time is `event.at`, or the newest row's when that is
/// later, as with [`append`]. For tests; an operation records its event with [`append`].
#[cfg(test)]
pub fn insert(conn: &Connection, event: &NewEvent<'_>) -> rusqlite::Result<i64> {
    append(conn, event)?;
    move_pending(conn)?;
    // The last row the move inserted: this event, appended last.
    Ok(conn.last_insert_rowid())
}

/// Runs `sql` (an insert of the seven columns of an event, in their order) for `event`.
fn write_event(conn: &Connection, sql: &str, e: &NewEvent<'_>) -> rusqlite::Result<()> {
    let values = params![e.at, e.actor, e.action, e.target, e.outcome, e.reason, e.detail];
    conn.prepare_cached(sql)?.execute(values)?;
    Ok(())
}

/// Writes an event to the pending events, where a recording transaction puts it: a row at
/// the end of a narrow table without indexes, the cheapest write SQLite has. [`move_pending`]
/// later moves it, with the others pending, into `audit_events` and its indexes in one batch.
///
/// Its time is `event.at`, or that of the newest event (pending, else stored) when that is
/// later: operations take their time before they wait for the write lock, and a clock may be
/// set back, but under the lock, which this write holds, events are stamped in the order they
/// commit, so that times never decrease with ids. Both lookups read the last row of a table,
/// whose page the write touches or has in its cache.
pub fn append(conn: &Connection, event: &NewEvent<'_>) -> rusqlite::Result<()> {
    let sql = "INSERT INTO audit_pending (at, actor, action, target, outcome, reason, detail) \
               VALUES (max(?1, coalesce((SELECT at FROM audit_pending ORDER BY id DESC LIMIT 1), \
                                        (SELECT at FROM audit_events ORDER BY id DESC LIMIT 1), \
                                        ?1)), \
                       ?2, ?3, ?4, ?5, ?6, ?7)";
    write_event(conn, sql, event)
}

/// Whether an event is pending.
pub fn any_pending(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM audit_pending)")?
        .query_row([], |r| r.get(0))
}

/// How many events are pending.
#[cfg(test)]
pub fn pending_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM audit_pending")?
        .query_row([], |r| r.get(0))
}

/// Moves every pending event into `audit_events`, in the order they were written (their times
/// already never decrease: [`append`]), and adds them to the day counts; returns how many. Run
/// in a write transaction, so that an event is pending or stored, never both nor neither.
///
/// The day counts are tallied here and written once per day, action and outcome of the batch
/// (a few rows): an upsert per event (a trigger) cost as much as one more index, and
/// `GROUP BY` sorts the whole batch.
pub fn move_pending(conn: &Connection) -> rusqlite::Result<usize> {
    // Events per (day, action, outcome), the texts numbered in `names`: a batch names a few
    // actions and outcomes, found by a linear search without copying each row's texts.
    let mut names: Vec<String> = Vec::new();
    let mut number = |text: &str| match names.iter().position(|n| n == text) {
        Some(i) => i,
        None => {
            names.push(text.to_string());
            names.len() - 1
        }
    };
    let mut counts: HashMap<(i64, usize, usize), i64> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached("SELECT at, action, outcome FROM audit_pending")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let day = row.get::<_, i64>(0)?.div_euclid(DAY_MS);
            let action = number(row.get_ref(1)?.as_str()?);
            let outcome = number(row.get_ref(2)?.as_str()?);
            *counts.entry((day, action, outcome)).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return Ok(0);
    }
    let mut add = conn.prepare_cached(
        "INSERT INTO audit_counts (day, action, outcome, n) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (day, action, outcome) DO UPDATE SET n = n + excluded.n",
    )?;
    for ((day, action, outcome), n) in counts {
        add.execute(params![day, names[action], names[outcome], n])?;
    }
    let moved = conn
        .prepare_cached(
            "INSERT INTO audit_events (at, actor, action, target, outcome, reason, detail) \
             SELECT at, actor, action, target, outcome, reason, detail \
             FROM audit_pending ORDER BY id",
        )?
        .execute([])?;
    conn.prepare_cached("DELETE FROM audit_pending")?
        .execute([])?;
    Ok(moved)
}

/// The newest event of `action` with `outcome` about `target` (ignoring ASCII case), as
/// `(id, at)`: the row a repeated failure is folded into.
pub fn newest_about(
    conn: &Connection,
    action: &str,
    outcome: &str,
    target: &str,
) -> rusqlite::Result<Option<(i64, i64)>> {
    // `+action`, `+outcome`: walk the target's index, not every event of that action.
    conn.prepare_cached(
        "SELECT id, at FROM audit_events \
         WHERE target = ?3 COLLATE NOCASE AND +action = ?1 AND +outcome = ?2 \
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![action, outcome, target], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Adds `more` to the `count` of a folded event's detail (1 when it has none yet).
pub fn add_to_count(conn: &Connection, id: i64, more: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE audit_events SET detail = \
             json_set(detail, '$.count', coalesce(json_extract(detail, '$.count'), 1) + ?2) \
         WHERE id = ?1",
    )?
    .execute(params![id, more])?;
    Ok(())
}

/// The smallest and largest ids stored, `None` when there is no event.
pub fn id_bounds(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    let (min, max): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT min(id) FROM audit_events), (SELECT max(id) FROM audit_events)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(min.zip(max))
}

/// The first row at or after id `from`, as `(id, at)`.
fn row_from(conn: &Connection, from: i64) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.prepare_cached("SELECT id, at FROM audit_events WHERE id >= ?1 ORDER BY id LIMIT 1")?
        .query_row([from], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// The smallest id whose event happened at or after `at` (milliseconds), or one past the
/// largest id when none did: bisection over the ids, since times never decrease with them
/// (about twenty lookups by id for a million events).
pub fn first_id_at(conn: &Connection, at: i64) -> rusqlite::Result<i64> {
    let Some((min, max)) = id_bounds(conn)? else {
        return Ok(1);
    };
    // Invariant: every row below `lo` is before `at`; the row at or after `hi` is not.
    let (mut lo, mut hi) = (min, max + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match row_from(conn, mid)? {
            Some((id, row_at)) if row_at < at => lo = id + 1,
            Some(_) | None => hi = mid,
        }
    }
    Ok(lo)
}

/// Deletes up to `batch` of the oldest events whose id is at most `last`; returns how many.
/// Emptied day counts go too.
pub fn delete_through(conn: &Connection, last: i64, batch: i64) -> rusqlite::Result<usize> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE id <= ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![last, batch])?;
    if deleted > 0 {
        conn.prepare_cached("DELETE FROM audit_counts WHERE n <= 0")?
            .execute([])?;
    }
    Ok(deleted)
}

/// What a listing keeps. Every part is optional; together they must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The beginning of the actor's or the target's name, ignoring ASCII case.
    pub text: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// First UTC day (days since 1970-01-01), included.
    pub from_day: Option<i64>,
    /// Last UTC day, included.
    pub to_day: Option<i64>,
}

/// A filter made into SQL: the `WHERE` text and its parameters.
struct Where {
    sql: String,
    params: Vec<Value>,
}

impl Where {
    fn push(&mut self, condition: &str, value: Value) {
        self.params.push(value);
        let n = self.params.len();
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition.replace('?', &format!("?{n}")));
    }
}

/// The outcome the outcome index leaves out (`WHERE outcome <> 'ok'`): most events have it, so
/// that reading the log newest first finds a page of them at once, and leaving them out spares
/// most events one index entry.
const OUTCOME_UNINDEXED: &str = "ok";

/// Index entries (actor's and target's together) beyond which a text is common: a search for
/// it reads the log newest first, where every few rows match, rather than gathering and
/// sorting the ids of all its matches (250,000 for an admin's login in a million events).
const COMMON_TEXT: i64 = 5_000;

#[cfg(test)]
thread_local! {
    /// [`COMMON_TEXT`] as this test thread sets it, so that small logs try both plans.
    static COMMON_TEXT_HERE: std::cell::Cell<i64> = const { std::cell::Cell::new(COMMON_TEXT) };
}

fn common_text() -> i64 {
    #[cfg(test)]
    return COMMON_TEXT_HERE.with(std::cell::Cell::get);
    #[cfg(not(test))]
    COMMON_TEXT
}

/// How a text search finds its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextPlan {
    /// Through the actor and target indexes: the text matches few events.
    Indexes,
    /// Reading the log newest first: the text is common. `target_first` when the target
    /// index holds fewer of its entries (the one to walk when counting rows matching both).
    Newest { target_first: bool },
}

/// `column` (`actor` or `target`) begins with the text `?1` ignoring ASCII case (`?2` is the
/// text followed by the highest code point: [`text_params`]). `plus` is `"+"` to keep the
/// planner off the column's index, `""` to let it walk it.
fn text_range(column: &str, plus: &str) -> String {
    format!("{plus}{column} >= ?1 COLLATE NOCASE AND {plus}{column} < ?2 COLLATE NOCASE")
}

/// The two parameters of [`text_range`] for `text`.
fn text_params(text: &str) -> [Value; 2] {
    [
        Value::Text(text.to_string()),
        Value::Text(format!("{text}\u{10FFFF}")),
    ]
}

/// Entries of the text's range in the target and in the actor index, each counted up to just
/// past [`COMMON_TEXT`].
fn text_plan(conn: &Connection, text: &str) -> rusqlite::Result<TextPlan> {
    let common = common_text();
    let [low, high] = text_params(text);
    let count = |column: &str| -> rusqlite::Result<i64> {
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM audit_events WHERE {} LIMIT ?3)",
            text_range(column, "")
        );
        conn.prepare_cached(&sql)?
            .query_row(params![low, high, common + 1], |r| r.get(0))
    };
    let (target, actor) = (count("target")?, count("actor")?);
    Ok(if target + actor <= common {
        TextPlan::Indexes
    } else {
        TextPlan::Newest {
            target_first: target <= actor,
        }
    })
}

/// A filter with its text's plan ([`text_plan`]) and its dates' id bounds ([`first_id_at`])
/// found once, for a page and its total, or for every slice of an export.
#[derive(Debug, Clone)]
pub struct Query {
    filter: Filter,
    text: Option<TextPlan>,
    /// The first id of `from_day`, and the first id after `to_day`.
    ids: (Option<i64>, Option<i64>),
}

impl Query {
    pub fn new(conn: &Connection, filter: Filter) -> rusqlite::Result<Query> {
        let text = match &filter.text {
            Some(text) => Some(text_plan(conn, text)?),
            None => None,
        };
        let first = match filter.from_day {
            Some(day) => Some(first_id_at(conn, day * DAY_MS)?),
            None => None,
        };
        let end = match filter.to_day {
            Some(day) => Some(first_id_at(conn, (day + 1).saturating_mul(DAY_MS))?),
            None => None,
        };
        Ok(Query {
            filter,
            text,
            ids: (first, end),
        })
    }

    /// The `WHERE` of the filter. One condition leads (the text, else the action, else an
    /// outcome other than `ok`, else the ids alone) through its index, which yields ids in
    /// order; the others are written `+column` so that the planner never trades that order for
    /// a sort. A common text leads nothing: the log is read newest first ([`TextPlan::Newest`]),
    /// and so is it for `ok`, the outcome of most events, which the outcome index leaves out.
    fn where_of(&self, before: Option<i64>) -> Where {
        let filter = &self.filter;
        let mut w = Where {
            sql: "1".into(),
            params: Vec::new(),
        };
        let (mut action, mut outcome) = ("+action = ?", "+outcome = ?");
        if let (Some(text), Some(plan)) = (&filter.text, self.text) {
            w.params.extend(text_params(text));
            w.sql = match plan {
                // The ids of either index's range, looked up in id order: a plan the planner
                // cannot trade for a scan of every event.
                TextPlan::Indexes => format!(
                    "id IN (SELECT id FROM audit_events WHERE {} \
                     UNION SELECT id FROM audit_events WHERE {})",
                    text_range("target", ""),
                    text_range("actor", "")
                ),
                // No index: the rows are read in id order, newest first, until the page is
                // full.
                TextPlan::Newest { .. } => format!(
                    "(({}) OR ({}))",
                    text_range("target", "+"),
                    text_range("actor", "+")
                ),
            };
        } else if filter.action.is_some() {
            action = "action = ?";
        } else if filter
            .outcome
            .as_deref()
            .is_some_and(|o| o != OUTCOME_UNINDEXED)
        {
            // The index holds the other outcomes only; the planner uses it when the query
            // repeats the index's condition.
            outcome = "outcome = ? AND outcome <> 'ok'";
        }
        if let Some(a) = &filter.action {
            w.push(action, Value::Text(a.clone()));
        }
        if let Some(o) = &filter.outcome {
            w.push(outcome, Value::Text(o.clone()));
        }
        if let Some(first) = self.ids.0 {
            w.push("id >= ?", Value::Integer(first));
        }
        if let Some(end) = self.ids.1 {
            w.push("id < ?", Value::Integer(end));
        }
        if let Some(before) = before {
            w.push("id < ?", Value::Integer(before));
        }
        w
    }

    /// One page of the events the filter keeps, newest first.
    pub fn page(&self, conn: &Connection, offset: i64, limit: i64) -> rusqlite::Result<Vec<Event>> {
        let mut w = self.where_of(None);
        let n = w.params.len();
        w.params.push(Value::Integer(limit));
        w.params.push(Value::Integer(offset));
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {} ORDER BY id DESC LIMIT ?{} OFFSET ?{}",
            w.sql,
            n + 1,
            n + 2
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(w.params), event_of)?
            .collect();
        rows
    }

    /// Up to `limit` events the filter keeps with an id below `before` (all when `None`),
    /// newest first: the export reads the log in such slices, each from where the last one
    /// ended.
    pub fn slice_before(
        &self,
        conn: &Connection,
        before: Option<i64>,
        limit: i64,
    ) -> rusqlite::Result<Vec<Event>> {
        let mut w = self.where_of(before);
        w.params.push(Value::Integer(limit));
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {} ORDER BY id DESC LIMIT ?{}",
            w.sql,
            w.params.len()
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(w.params), event_of)?
            .collect();
        rows
    }

    /// How many events the filter keeps. Without a text, from the day counts (no event read).
    pub fn total(&self, conn: &Connection) -> rusqlite::Result<i64> {
        let filter = &self.filter;
        if let (Some(text), Some(plan)) = (&filter.text, self.text) {
            let alone = filter.action.is_none()
                && filter.outcome.is_none()
                && filter.from_day.is_none()
                && filter.to_day.is_none();
            if let (TextPlan::Newest { target_first }, true) = (plan, alone) {
                return common_text_total(conn, text, target_first);
            }
            let w = self.where_of(None);
            let sql = format!("SELECT count(*) FROM audit_events WHERE {}", w.sql);
            return conn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(w.params), |r| r.get(0));
        }
        let mut w = Where {
            sql: "1".into(),
            params: Vec::new(),
        };
        if let Some(a) = &filter.action {
            w.push("action = ?", Value::Text(a.clone()));
        }
        if let Some(o) = &filter.outcome {
            w.push("outcome = ?", Value::Text(o.clone()));
        }
        if let Some(day) = filter.from_day {
            w.push("day >= ?", Value::Integer(day));
        }
        if let Some(day) = filter.to_day {
            w.push("day <= ?", Value::Integer(day));
        }
        let sql = format!(
            "SELECT coalesce(sum(n), 0) FROM audit_counts WHERE {}",
            w.sql
        );
        conn.prepare_cached(&sql)?
            .query_row(params_from_iter(w.params), |r| r.get(0))
    }
}

/// One page of the events `filter` keeps, newest first ([`Query::page`]).
pub fn page(
    conn: &Connection,
    filter: &Filter,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<Vec<Event>> {
    Query::new(conn, filter.clone())?.page(conn, offset, limit)
}

/// How many events `filter` keeps ([`Query::total`]).
pub fn total(conn: &Connection, filter: &Filter) -> rusqlite::Result<i64> {
    Query::new(conn, filter.clone())?.total(conn)
}

/// How many events a common text alone matches, from the indexes without gathering ids: those
/// whose target matches, plus those whose actor does, less those whose both do (counted by
/// walking the smaller of the two ranges).
fn common_text_total(conn: &Connection, text: &str, target_first: bool) -> rusqlite::Result<i64> {
    let [low, high] = text_params(text);
    let count = |condition: String| -> rusqlite::Result<i64> {
        let sql = format!("SELECT count(*) FROM audit_events WHERE {condition}");
        conn.prepare_cached(&sql)?
            .query_row(params![low, high], |r| r.get(0))
    };
    let (walked, checked) = match target_first {
        true => ("target", "actor"),
        false => ("actor", "target"),
    };
    let both = format!(
        "{} AND {}",
        text_range(walked, ""),
        text_range(checked, "+")
    );
    Ok(count(text_range("target", ""))? + count(text_range("actor", ""))? - count(both)?)
}

/// The newest `limit` events whose actor or target is `name` (exactly), newest first: what a
/// user did and what was done to them or in their name.
pub fn about(conn: &Connection, name: &str, limit: i64) -> rusqlite::Result<Vec<Event>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE id IN ( \
             SELECT id FROM audit_events WHERE target = ?1 COLLATE NOCASE AND target = ?1 \
             ORDER BY id DESC LIMIT ?2) \
         OR id IN ( \
             SELECT id FROM audit_events WHERE actor = ?1 COLLATE NOCASE AND actor = ?1 \
             ORDER BY id DESC LIMIT ?2) \
         ORDER BY id DESC LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![name, limit], event_of)?.collect();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{query_plan, test_db};

    fn add(conn: &Connection, at: i64, actor: &str, action: &str, target: &str, outcome: &str) {
        insert(
            conn,
            &NewEvent {
                at,
                actor: Some(actor),
                action,
                target: Some(target),
                outcome,
                reason: None,
                detail: "{}",
            },
        )
        .unwrap();
    }

    fn ids(events: &[Event]) -> Vec<i64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn pending_events_move_in_order_and_keep_times_from_decreasing() {
        let conn = test_db();
        add(&conn, 5_000, "a", "x", "t", "ok");
        for (at, target) in [(7_000, "p1"), (4_000, "p2"), (8_000, "p3")] {
            append(
                &conn,
                &NewEvent {
                    at,
                    actor: None,
                    action: "x",
                    target: Some(target),
                    outcome: "ok",
                    reason: None,
                    detail: "{}",
                },
            )
            .unwrap();
        }
        assert!(any_pending(&conn).unwrap());
        assert_eq!(pending_count(&conn).unwrap(), 3);
        assert_eq!(
            total(&conn, &Filter::default()).unwrap(),
            1,
            "not moved yet"
        );
        assert_eq!(move_pending(&conn).unwrap(), 3);
        assert!(!any_pending(&conn).unwrap());
        assert_eq!(move_pending(&conn).unwrap(), 0);
        let all = page(&conn, &Filter::default(), 0, 10).unwrap();
        let moved: Vec<(Option<&str>, i64)> = all
            .iter()
            .rev()
            .map(|e| (e.target.as_deref(), e.at))
            .collect();
        assert_eq!(
            moved,
            vec![
                (Some("t"), 5_000),
                (Some("p1"), 7_000),
                (Some("p2"), 7_000),
                (Some("p3"), 8_000)
            ]
        );
    }

    #[test]
    fn times_never_decrease_with_ids() {
        let conn = test_db();
        add(&conn, 5_000, "a", "x", "t", "ok");
        add(&conn, 4_000, "a", "x", "t", "ok"); // the clock went back
        add(&conn, 6_000, "a", "x", "t", "ok");
        let all = page(&conn, &Filter::default(), 0, 10).unwrap();
        let times: Vec<i64> = all.iter().rev().map(|e| e.at).collect();
        assert_eq!(times, vec![5_000, 5_000, 6_000]);
    }

    #[test]
    fn first_id_at_bisects_times() {
        let conn = test_db();
        assert_eq!(first_id_at(&conn, 10).unwrap(), 1);
        for at in [10, 20, 20, 30, 40] {
            add(&conn, at, "a", "x", "t", "ok");
        }
        assert_eq!(first_id_at(&conn, 0).unwrap(), 1);
        assert_eq!(first_id_at(&conn, 10).unwrap(), 1);
        assert_eq!(first_id_at(&conn, 11).unwrap(), 2);
        assert_eq!(first_id_at(&conn, 20).unwrap(), 2);
        assert_eq!(first_id_at(&conn, 21).unwrap(), 4);
        assert_eq!(first_id_at(&conn, 40).unwrap(), 5);
        assert_eq!(first_id_at(&conn, 41).unwrap(), 6);
        // Oldest rows gone: still right.
        delete_through(&conn, 2, 100).unwrap();
        assert_eq!(first_id_at(&conn, 0).unwrap(), 3);
        assert_eq!(first_id_at(&conn, 35).unwrap(), 5);
    }

    /// Every combination of filters, against the same filter applied to every event.
    #[test]
    fn filters_pages_and_totals_agree_with_a_scan_of_every_event() {
        let conn = test_db();
        let actors = ["admin", "Ann", "bob", "annette"];
        let actions = ["user.create", "signin.local", "group.delete"];
        let outcomes = ["ok", "failed", "refused"];
        for i in 0..300i64 {
            let at = i * DAY_MS / 7; // about 43 days
            let actor = actors[(i % 4) as usize];
            let target = actors[((i / 3) % 4) as usize];
            add(
                &conn,
                at,
                actor,
                actions[(i % 3) as usize],
                target,
                outcomes[((i / 5) % 3) as usize],
            );
        }
        let all = page(&conn, &Filter::default(), 0, 1000).unwrap();
        assert_eq!(all.len(), 300);
        let texts = [None, Some("ann"), Some("ANNE"), Some("b"), Some("zed")];
        let days = [
            (None, None),
            (Some(3), None),
            (None, Some(10)),
            (Some(5), Some(5)),
        ];
        // Every text through the indexes; then "ann" (300 entries) as a common text.
        for common in [COMMON_TEXT, 160] {
            COMMON_TEXT_HERE.with(|c| c.set(common));
            let plan = text_plan(&conn, "ann").unwrap();
            assert_eq!(plan == TextPlan::Indexes, common == COMMON_TEXT, "{plan:?}");
            for text in texts {
                for action in [None, Some("signin.local")] {
                    for outcome in [None, Some("failed")] {
                        for (from_day, to_day) in days {
                            let filter = Filter {
                                text: text.map(str::to_string),
                                action: action.map(str::to_string),
                                outcome: outcome.map(str::to_string),
                                from_day,
                                to_day,
                            };
                            let starts = |name: &Option<String>, t: &str| {
                                name.as_deref().is_some_and(|n| {
                                    n.to_ascii_lowercase().starts_with(&t.to_ascii_lowercase())
                                })
                            };
                            let expected: Vec<i64> = all
                                .iter()
                                .filter(|e| {
                                    text.is_none_or(|t| starts(&e.actor, t) || starts(&e.target, t))
                                        && action.is_none_or(|a| e.action == a)
                                        && outcome.is_none_or(|o| e.outcome == o)
                                        && from_day.is_none_or(|d| e.at / DAY_MS >= d)
                                        && to_day.is_none_or(|d| e.at / DAY_MS <= d)
                                })
                                .map(|e| e.id)
                                .collect();
                            let what = format!("{filter:?}");
                            assert_eq!(
                                total(&conn, &filter).unwrap(),
                                expected.len() as i64,
                                "{what}"
                            );
                            let first = page(&conn, &filter, 0, 7).unwrap();
                            let second = page(&conn, &filter, 7, 7).unwrap();
                            let want: Vec<i64> = expected.iter().copied().take(14).collect();
                            let got: Vec<i64> =
                                ids(&first).into_iter().chain(ids(&second)).collect();
                            assert_eq!(got, want, "{what}");
                            let query = Query::new(&conn, filter.clone()).unwrap();
                            let slice = query.slice_before(&conn, Some(200), 5).unwrap();
                            let want: Vec<i64> = expected
                                .iter()
                                .copied()
                                .filter(|&id| id < 200)
                                .take(5)
                                .collect();
                            assert_eq!(ids(&slice), want, "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn deleting_the_oldest_moves_the_totals() {
        let conn = test_db();
        for i in 0..10 {
            add(&conn, i * DAY_MS, "a", "x", "t", "ok");
        }
        assert_eq!(delete_through(&conn, 4, 3).unwrap(), 3);
        assert_eq!(delete_through(&conn, 4, 3).unwrap(), 1);
        assert_eq!(delete_through(&conn, 4, 3).unwrap(), 0);
        assert_eq!(total(&conn, &Filter::default()).unwrap(), 6);
        assert_eq!(id_bounds(&conn).unwrap(), Some((5, 10)));
        let days: i64 = conn
            .query_row("SELECT count(*) FROM audit_counts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(days, 6, "emptied days are removed");
    }

    #[test]
    fn about_a_name_is_exact_and_newest_first() {
        let conn = test_db();
        add(&conn, 1, "admin", "user.create", "ann", "ok");
        add(&conn, 2, "ann", "signin.local", "ann", "ok");
        add(&conn, 3, "admin", "user.create", "Ann", "ok");
        add(&conn, 4, "admin", "user.create", "annette", "ok");
        add(&conn, 5, "ann", "token.generate", "ann", "ok");
        let found = about(&conn, "ann", 20).unwrap();
        assert_eq!(ids(&found), vec![5, 2, 1]);
        assert_eq!(ids(&about(&conn, "ann", 2).unwrap()), vec![5, 2]);
    }

    #[test]
    fn a_fold_finds_the_newest_failure_of_that_target_and_counts() {
        let conn = test_db();
        add(&conn, 1, "-", "signin.local", "ann", "failed");
        add(&conn, 2, "-", "signin.local", "bob", "failed");
        add(&conn, 3, "ann", "signin.local", "ann", "ok");
        let (id, at) = newest_about(&conn, "signin.local", "failed", "ANN")
            .unwrap()
            .unwrap();
        assert_eq!((id, at), (1, 1));
        add_to_count(&conn, id, 1).unwrap();
        add_to_count(&conn, id, 3).unwrap();
        let detail: String = conn
            .query_row("SELECT detail FROM audit_events WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(detail, r#"{"count":5}"#);
        assert_eq!(
            newest_about(&conn, "signin.local", "failed", "zed").unwrap(),
            None
        );
    }

    #[test]
    fn listings_read_through_indexes_in_id_order() {
        let conn = test_db();
        let plan = |filter: Filter| {
            let w = Query::new(&conn, filter).unwrap().where_of(None);
            query_plan(
                &conn,
                &format!(
                    "SELECT id FROM audit_events WHERE {} ORDER BY id DESC",
                    w.sql
                ),
            )
            .join("; ")
        };
        let by_action = plan(Filter {
            action: Some("x".into()),
            outcome: Some("ok".into()),
            ..Filter::default()
        });
        assert!(by_action.contains("audit_events_action"), "{by_action}");
        assert!(!by_action.contains("TEMP B-TREE"), "{by_action}");
        for outcome in ["refused", "failed"] {
            let by_outcome = plan(Filter {
                outcome: Some(outcome.into()),
                ..Filter::default()
            });
            assert!(by_outcome.contains("audit_events_outcome"), "{by_outcome}");
            assert!(!by_outcome.contains("TEMP B-TREE"), "{by_outcome}");
        }
        // `ok`, left out of the index: the log newest first.
        let ok = plan(Filter {
            outcome: Some("ok".into()),
            ..Filter::default()
        });
        assert!(ok.starts_with("SCAN audit_events"), "{ok}");
        assert!(!ok.contains("TEMP B-TREE"), "{ok}");
        let by_text = plan(Filter {
            text: Some("ann".into()),
            action: Some("x".into()),
            ..Filter::default()
        });
        assert!(by_text.contains("audit_events_target"), "{by_text}");
        assert!(by_text.contains("audit_events_actor"), "{by_text}");
        // The matches are looked up by id, in order (each side is sorted by id to be merged).
        assert!(
            by_text.starts_with("SEARCH audit_events USING INTEGER PRIMARY KEY (rowid=?)"),
            "{by_text}"
        );
        let fold = query_plan(
            &conn,
            "SELECT id, at FROM audit_events \
             WHERE target = ?3 COLLATE NOCASE AND +action = ?1 AND +outcome = ?2 \
             ORDER BY id DESC LIMIT 1",
        )
        .join("; ");
        assert!(fold.contains("audit_events_target"), "{fold}");
    }
}
