//! Statements that read or write no table: the health probe and the WAL checkpoint at
//! shutdown.

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
