//! Removing old events: by age (the retention setting) at most once an hour, and by number
//! (past [`MAX_EVENTS`]) whenever the maintenance looks, oldest first and in batches of
//! [`PRUNE_BATCH`] per transaction so that no removal holds the write lock for long. The time
//! is passed in, so that tests choose it.

use super::{MAX_EVENTS, PRUNE_BATCH, PRUNE_EVERY_MS, RETENTION_DAYS, RETENTION_DAYS_DEFAULT};
use super::{RETENTION_DAYS_MAX, RETENTION_DAYS_MIN};
use crate::db::{self, audit as store};
use crate::error::AppResult;
use rusqlite::Connection;
use std::sync::atomic::{AtomicI64, Ordering};

/// The retention setting as stored, within its bounds.
pub fn retention_days(conn: &Connection) -> AppResult<i64> {
    Ok(db::settings::get(conn, RETENTION_DAYS)?
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(RETENTION_DAYS_DEFAULT)
        .clamp(RETENTION_DAYS_MIN, RETENTION_DAYS_MAX))
}

/// What one removal took away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Events older than the retention.
    pub expired: usize,
    /// Events past [`MAX_EVENTS`].
    pub over_cap: usize,
}

/// Removes the events older than the retention and those past `max_events`, oldest first,
/// [`PRUNE_BATCH`] per transaction (the pending events moved into the log first).
pub fn prune(conn: &mut Connection, now_ms: i64, max_events: i64) -> AppResult<Pruned> {
    super::flush(conn)?;
    let days = retention_days(conn)?;
    let cutoff = now_ms.saturating_sub(days * store::DAY_MS);
    let last_expired = store::first_id_at(conn, cutoff)? - 1;
    let expired = delete_through(conn, last_expired)?;
    let over_cap = match store::id_bounds(conn)? {
        Some((_, max)) => delete_through(conn, max - max_events)?,
        None => 0,
    };
    Ok(Pruned { expired, over_cap })
}

/// Deletes every event whose id is at most `last`, in batches.
fn delete_through(conn: &mut Connection, last: i64) -> AppResult<usize> {
    let mut deleted = 0;
    loop {
        let tx = db::write_tx(conn)?;
        let n = store::delete_through(&tx, last, PRUNE_BATCH)?;
        tx.commit()?;
        deleted += n;
        if (n as i64) < PRUNE_BATCH {
            return Ok(deleted);
        }
    }
}

/// When removal last ran, so that it runs at most once per [`PRUNE_EVERY_MS`]; the number of
/// events is checked against the cap more often (each check is two lookups).
#[derive(Debug, Default)]
pub struct Retention {
    last_run_ms: AtomicI64,
}

impl Retention {
    /// Whether removal by age is due at `now_ms`; if so, it is marked as run.
    pub fn due(&self, now_ms: i64) -> bool {
        let last = self.last_run_ms.load(Ordering::SeqCst);
        if last != 0 && now_ms - last < PRUNE_EVERY_MS {
            return false;
        }
        self.last_run_ms
            .compare_exchange(last, now_ms, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// One tick of the maintenance: removal by age and by number when due, else by number
    /// alone when the cap is passed.
    pub fn tick(&self, conn: &mut Connection, now_ms: i64) -> AppResult<Pruned> {
        super::flush(conn)?;
        if self.due(now_ms) {
            return prune(conn, now_ms, MAX_EVENTS);
        }
        match store::id_bounds(conn)? {
            Some((min, max)) if max - min + 1 > MAX_EVENTS => Ok(Pruned {
                expired: 0,
                over_cap: delete_through(conn, max - MAX_EVENTS)?,
            }),
            _ => Ok(Pruned::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{record, Action, By, Event};
    use crate::db::test_db;

    const DAY: i64 = store::DAY_MS;

    fn add_at(conn: &Connection, at_ms: i64) {
        record(
            conn,
            &By::system(at_ms),
            Event::ok(Action::GroupCreate, "g"),
        )
        .unwrap();
    }

    fn times(conn: &Connection) -> Vec<i64> {
        let mut all: Vec<i64> = store::page(conn, &store::Filter::default(), 0, 100_000)
            .unwrap()
            .iter()
            .map(|e| e.at)
            .collect();
        all.reverse();
        all
    }

    #[test]
    fn events_older_than_the_retention_go_and_the_rest_stay() {
        let mut conn = test_db();
        for day in 0..100 {
            add_at(&conn, day * DAY);
        }
        let now = 100 * DAY;
        // Default: 90 days. Days 0 to 9 are older than now - 90 days = day 10.
        let pruned = prune(&mut conn, now, MAX_EVENTS).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                expired: 10,
                over_cap: 0
            }
        );
        assert_eq!(times(&conn).first(), Some(&(10 * DAY)));
        db::settings::set(&conn, RETENTION_DAYS, "7").unwrap();
        let pruned = prune(&mut conn, now, MAX_EVENTS).unwrap();
        assert_eq!(pruned.expired, 83);
        assert_eq!(times(&conn), (93..100).map(|d| d * DAY).collect::<Vec<_>>());
        // The totals follow.
        assert_eq!(store::total(&conn, &store::Filter::default()).unwrap(), 7);
    }

    #[test]
    fn past_the_cap_the_oldest_go_first_in_batches() {
        let mut conn = test_db();
        let n = 2 * PRUNE_BATCH + 10;
        for i in 0..n {
            add_at(&conn, i);
        }
        let pruned = prune(&mut conn, n, 5).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                expired: 0,
                over_cap: (n - 5) as usize
            }
        );
        assert_eq!(times(&conn), (n - 5..n).collect::<Vec<_>>());
    }

    #[test]
    fn removal_by_age_runs_at_most_once_an_hour() {
        let retention = Retention::default();
        let start = 10 * DAY;
        assert!(retention.due(start));
        assert!(!retention.due(start + 1));
        assert!(!retention.due(start + PRUNE_EVERY_MS - 1));
        assert!(retention.due(start + PRUNE_EVERY_MS));
        assert!(!retention.due(start + PRUNE_EVERY_MS + 1));
    }

    #[test]
    fn a_tick_removes_by_age_when_due_and_otherwise_only_past_the_cap() {
        let mut conn = test_db();
        let retention = Retention::default();
        db::settings::set(&conn, RETENTION_DAYS, "1").unwrap();
        add_at(&conn, 0);
        let now = 2 * DAY;
        assert_eq!(retention.tick(&mut conn, now).unwrap().expired, 1);
        add_at(&conn, 0);
        add_at(&conn, now);
        // Not due again within the hour: the expired event added since stays until then.
        assert_eq!(
            retention.tick(&mut conn, now + 1).unwrap(),
            Pruned::default()
        );
        assert_eq!(times(&conn).len(), 2);
    }

    #[test]
    fn the_retention_setting_is_read_within_its_bounds() {
        let conn = test_db();
        assert_eq!(retention_days(&conn).unwrap(), 90);
        for (stored, days) in [("30", 30), ("0", 1), ("99999", 3650), ("x", 90)] {
            db::settings::set(&conn, RETENTION_DAYS, stored).unwrap();
            assert_eq!(retention_days(&conn).unwrap(), days, "{stored}");
        }
    }
}
