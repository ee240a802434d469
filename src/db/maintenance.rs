//! Statements that read or write no table: the health probe, the WAL checkpoint at
//! shutdown, and erasing what deleted rows left in the file.

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
