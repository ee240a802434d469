//! The SQLite store, and the only place for SQL. This file opens connections (with the pragmas
//! every one carries), starts transactions and copies the database; the rest is split by
//! concern:
//!
//! - [`migrations`]: the schema, as the ordered list of migrations, and applying those a
//!   database lacks.
//! - [`bootstrap`](mod@bootstrap): the first start (the built-in groups, the administrator, the server id).
//! - [`pool`]: the connections the requests check out and give back.
//! - [`commit_generation`]: a number that moves with every commit of this process, by which
//!   what was computed from the database knows it is still current.
//! - [`paging`]: small helpers for pages of ids.
//! - [`user_index`]: the user search index, which keeps the user lists in memory between
//!   searches.
//! - One module of plain query functions per table family: [`users`], [`groups`],
//!   [`permissions`], [`tokens`], [`sessions`], [`oauth`], [`settings`],
//!   [`gitlab_group_sync`], [`gitlab_sign_in_problem`], [`applications`],
//!   [`gitlab_revalidation`], [`gitlab_provisioning`], [`audit`] (the audit log).
//! - [`maintenance`]: the statements that touch no table (the health probe, the checkpoint at
//!   shutdown).
//!
//! The items most callers need are re-exported here ([`migrate`], [`bootstrap()`], [`Pool`],
//! [`generation`], …), so that callers name `db::` and the table module, not where each piece
//! is kept.

pub mod applications;
pub mod audit;
pub mod bootstrap;
pub mod commit_generation;
pub mod gitlab_group_sync;
pub mod gitlab_provisioning;
pub mod gitlab_revalidation;
pub mod gitlab_sign_in_problem;
pub mod groups;
pub mod maintenance;
pub mod migrations;
pub mod oauth;
pub mod paging;
pub mod permissions;
pub mod pool;
pub mod sessions;
pub mod settings;
pub mod tokens;
pub mod user_index;
pub mod users;

pub use bootstrap::{bootstrap, Bootstrap, ADMIN_GROUP, ADMIN_LOGIN, DEFAULT_GROUP};
pub(crate) use commit_generation::uncounted_write;
pub use commit_generation::{commits_counted, generation, settings_generation, Held, HELD_MAX_AGE};
pub use migrations::{migrate, MigrateError};
pub use paging::id_list;
pub(crate) use paging::{as_index, page_of};
pub use pool::{Pool, PooledConn};

use commit_generation::{count_commits, Counters, GENERATION, SETTINGS_GENERATION};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// Opens a connection with labgate's pragmas (WAL, foreign keys, busy timeout), its commits
/// counted in [`generation`].
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    open_counting(
        path,
        Counters {
            commits: &GENERATION,
            settings: &SETTINGS_GENERATION,
        },
    )
}

fn open_counting(path: &Path, counters: Counters) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&mut conn, counters)?;
    Ok(conn)
}

/// Statements kept compiled per connection (`prepare_cached`, keyed by the SQL text). Above
/// the number of distinct SQL texts labgate runs (about 80), so that none is compiled twice on
/// a connection of the [`Pool`]; each costs a few KiB, and only those used are kept.
pub const STATEMENT_CACHE_CAPACITY: usize = 128;

/// Pragmas every connection carries, and the counting of its commits in `generation`.
fn configure(conn: &mut Connection, counters: Counters) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    // Keep one query plan per cached statement: without this, SQLite re-prepares statements
    // whose bound values (ids 0 and 1 among them) could change the plan, on every run.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("database: journal mode is {mode}, not WAL; callers are not cached");
        commit_generation::not_all_counted();
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    count_commits(conn, counters)?;
    Ok(())
}

/// A read transaction when `conn` is not already in one, so that several reads see one
/// snapshot (dropped, it ends).
pub(crate) fn read_snapshot(
    conn: &Connection,
) -> rusqlite::Result<Option<rusqlite::Transaction<'_>>> {
    if conn.is_autocommit() {
        Ok(Some(conn.unchecked_transaction()?))
    } else {
        Ok(None)
    }
}

/// Starts a write transaction that takes the write lock at once, so concurrent writers wait
/// (busy timeout) instead of failing halfway.
pub fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Online, consistent copy of the database at `src` into `dest` (SQLite backup API), a new
/// file readable by its owner only (0600), like the database: it holds the password and token
/// hashes and the sealed secrets. A copy that fails halfway is removed.
pub fn backup(src: &Path, dest: &Path) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(dest).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => "the file exists; choose a new name".to_string(),
        _ => e.to_string(),
    })?;
    let copied = (|| -> rusqlite::Result<()> {
        let source = open(src)?;
        let mut target = Connection::open(dest)?;
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        backup.run_to_completion(256, Duration::from_millis(5), None)
    })();
    copied.map_err(|e| {
        let _ = std::fs::remove_file(dest);
        e.to_string()
    })
}

/// The steps of SQLite's plan for `sql` (its parameters bound to 0, 1, …), for unit tests that
/// check which indexes a statement reads.
#[cfg(test)]
pub fn query_plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let params: Vec<i64> = (0..stmt.parameter_count() as i64).collect();
    stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// An in-memory database with the full schema and bootstrap, for unit tests.
#[cfg(test)]
pub fn test_db() -> Connection {
    crate::secrets::install_for_tests();
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    migrate(&mut conn).unwrap();
    bootstrap(&mut conn, Some("admin-password-123"), 1_000).unwrap();
    conn
}

/// The pages `write` appends to the write-ahead log of `conn`'s database file, for unit tests of
/// what a change writes: the log is emptied first, then counted.
#[cfg(test)]
pub(crate) fn pages_written_by(conn: &mut Connection, write: impl FnOnce(&mut Connection)) -> i64 {
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    write(conn);
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
        .unwrap()
}

/// A database file with the full schema in the temporary directory, for unit tests that need
/// a file (the pool, WAL hooks).
#[cfg(test)]
pub(crate) fn temp_db(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("labgate-pool-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("labgate.db");
    let mut conn = open(&path).unwrap();
    migrate(&mut conn).unwrap();
    path
}
