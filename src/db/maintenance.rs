//! Statements that read or write no table of their own: the health probe, the WAL checkpoint
//! at shutdown, erasing what deleted rows left in the file, and the figures `/metrics` reads
//! when scraped.

use rusqlite::Connection;

/// Whether the database answers a trivial query: the health check's probe.
pub fn ping(conn: &Connection) -> rusqlite::Result<()> {
    let _: i64 = conn
        .prepare_cached("SELECT 1")?
        .query_row([], |r| r.get(0))?;
    Ok(())
}

/// Copies the write-ahead log into the database file and empties the log, so that a stopped
/// server leaves everything in the database file itself.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
}

/// Leaves in the database file and its log no byte of what was deleted or overwritten before:
/// SQLite keeps the old bytes of a changed row in free space (and in the pages the log still
/// holds) until something reuses them. `VACUUM` rebuilds every page from the live rows, with
/// `secure_delete` on so that the rebuild leaves no free space unzeroed, and the checkpoint then
/// empties the log. Run at start, when a secret stored in clear by an older labgate has just
/// been sealed; it takes the time of copying the database once.
pub fn erase_freed_space(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA secure_delete = ON; VACUUM; PRAGMA wal_checkpoint(TRUNCATE); \
         PRAGMA secure_delete = OFF;",
    )
}

/// What `/metrics` reads from the database when scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Sessions neither idle past `idle_timeout_secs` nor older than the hard limit.
    pub sessions_active: i64,
    pub users_active: i64,
    pub users_deactivated: i64,
    /// Pages of the database file times their size.
    pub database_bytes: i64,
    /// Events in the audit log (ids are never reused and only the oldest are removed, so the
    /// newest id less the oldest one, plus one), those pending included.
    pub audit_events: i64,
}

/// [`Figures`] at `now` (UNIX seconds), in one read.
pub fn figures(conn: &Connection, now: i64, idle_timeout_secs: i64) -> rusqlite::Result<Figures> {
    conn.prepare_cached(
        "SELECT \
           (SELECT count(*) FROM sessions WHERE last_seen_at > ?1 - ?2 AND created_at > ?1 - ?3), \
           (SELECT active_users FROM user_stats), \
           (SELECT deactivated_users FROM user_stats), \
           (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()), \
           (SELECT coalesce(max(id) - min(id) + 1, 0) FROM audit_events) \
             + (SELECT count(*) FROM audit_pending)",
    )?
    .query_row(
        rusqlite::params![now, idle_timeout_secs, super::sessions::MAX_AGE_SECS],
        |r| {
            Ok(Figures {
                sessions_active: r.get(0)?,
                users_active: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                users_deactivated: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                database_bytes: r.get(3)?,
                audit_events: r.get(4)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_count_live_sessions_users_and_events() {
        let conn = crate::db::test_db();
        let now = 10_000_000;
        crate::db::sessions::create(&conn, 1, now - 10).unwrap();
        crate::db::sessions::create(&conn, 1, now - 5_000).unwrap();
        let f = figures(&conn, now, 3_600).unwrap();
        assert_eq!(f.sessions_active, 1);
        assert_eq!((f.users_active, f.users_deactivated), (1, 0));
        assert!(f.database_bytes > 0);
        assert_eq!(f.audit_events, 0);
    }
}
