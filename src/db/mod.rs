//! The SQLite store: opening with the right pragmas, the migration list, first-start bootstrap,
//! the connection checkout, and one module of plain query functions per table family.

pub mod groups;
pub mod oauth;
pub mod permissions;
pub mod sessions;
pub mod settings;
pub mod tokens;
pub mod users;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Ordered schema migrations; migration `i` brings `user_version` from `i` to `i + 1`.
/// Never edit one that has shipped: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: users, groups, memberships, permissions, tokens, sessions, settings.
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        login TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        email TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        password_hash TEXT,
        must_change_password INTEGER NOT NULL DEFAULT 0,
        external_provider TEXT,
        external_identity TEXT,
        external_id TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_connection_at INTEGER
    );
    CREATE UNIQUE INDEX users_external_id ON users(external_provider, external_id)
        WHERE external_id IS NOT NULL;
    CREATE INDEX users_email ON users(email COLLATE NOCASE);
    CREATE TABLE groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        is_default INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE group_members (
        group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_user ON group_members(user_id);
    CREATE TABLE user_permissions (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        permission TEXT NOT NULL,
        PRIMARY KEY (user_id, permission)
    ) WITHOUT ROWID;
    CREATE TABLE group_permissions (
        group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        permission TEXT NOT NULL,
        PRIMARY KEY (group_id, permission)
    ) WITHOUT ROWID;
    CREATE TABLE user_tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_connection_at INTEGER,
        expires_at INTEGER,
        UNIQUE (user_id, name)
    );
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        flash TEXT
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: GitLab sign-in: pending authorization states and refusal reasons for the browser.
    r#"
    CREATE TABLE oauth_states (
        state_hash TEXT PRIMARY KEY,
        browser_hash TEXT NOT NULL,
        verifier TEXT NOT NULL,
        return_to TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE sign_in_refusals (
        id_hash TEXT PRIMARY KEY,
        reason TEXT,
        created_at INTEGER NOT NULL
    );
    "#,
    // 3: indexes for the GitLab sign-in: the GitLab username of pre-provisioned accounts
    // (looked up, ignoring case, by every sign-in), the default group (by every synchronization
    // and account creation) and the creation or last-use times by which expired sessions,
    // pending sign-ins and refusal reasons are purged (on every sign-in, start of a sign-in and
    // refusal): the purges read only the expired rows, however many live ones there are.
    r#"
    CREATE INDEX users_external_identity
        ON users(external_provider, external_identity COLLATE NOCASE);
    CREATE INDEX groups_default ON groups(is_default) WHERE is_default = 1;
    CREATE INDEX sessions_last_seen ON sessions(last_seen_at);
    CREATE INDEX sessions_created ON sessions(created_at);
    CREATE INDEX oauth_states_created ON oauth_states(created_at);
    CREATE INDEX sign_in_refusals_created ON sign_in_refusals(created_at);
    "#,
];

/// The schema version this binary writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens a connection with labgate's pragmas: WAL, foreign keys, busy timeout.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    Ok(conn)
}

/// Pragmas every connection carries.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    // Keep one query plan per cached statement: without this, SQLite re-prepares statements
    // whose bound values (ids 0 and 1 among them) could change the plan, on every run.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

#[derive(Debug)]
pub enum MigrateError {
    /// The database was written by a newer labgate.
    TooNew { found: i64, supported: i64 },
    Sql {
        version: i64,
        error: rusqlite::Error,
    },
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::TooNew { found, supported } => write!(
                f,
                "database schema version {found} is newer than this labgate supports ({supported}); \
                 run a newer labgate or restore a backup"
            ),
            MigrateError::Sql { version, error } => {
                write!(f, "migration to schema version {version} failed: {error}")
            }
        }
    }
}

impl std::error::Error for MigrateError {}

/// Brings the schema up to date, each migration in its own transaction. Refuses a newer database.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, migrations: &[&str]) -> Result<(), MigrateError> {
    let sql_err = |version: i64| move |error| MigrateError::Sql { version, error };
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err(0))?;
    let supported = migrations.len() as i64;
    if current > supported {
        return Err(MigrateError::TooNew {
            found: current,
            supported,
        });
    }
    for (index, sql) in migrations.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(version))?;
        tx.execute_batch(sql).map_err(sql_err(version))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sql_err(version))?;
        tx.commit().map_err(sql_err(version))?;
    }
    Ok(())
}

/// Name of the built-in default group.
pub const DEFAULT_GROUP: &str = "users";
/// Name of the built-in administrators group.
pub const ADMIN_GROUP: &str = "administrators";
/// Login of the built-in administrator.
pub const ADMIN_LOGIN: &str = "admin";

/// What the first start did, for `main` to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    AlreadyDone,
    Created { admin_password_generated: bool },
}

/// On the very first start: the default groups, the `admin` user holding `admin` through the
/// `administrators` group, and a server id. All in one transaction. `password` is `None` to
/// generate one (returned through `generated`), which must then be changed at first sign-in.
pub fn bootstrap(
    conn: &mut Connection,
    password: Option<&str>,
    now: i64,
) -> rusqlite::Result<(Bootstrap, Option<String>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if settings::get(&tx, settings::KEY_SERVER_ID)?.is_some() {
        return Ok((Bootstrap::AlreadyDone, None));
    }
    let (plain, generated) = match password {
        Some(p) => (p.to_string(), false),
        None => (crate::crypto::random_password(), true),
    };
    tx.execute(
        "INSERT INTO groups (name, description, is_default, created_at) VALUES (?1, ?2, 1, ?3)",
        rusqlite::params![DEFAULT_GROUP, "Every user", now],
    )?;
    let admin_group = groups::create(&tx, ADMIN_GROUP, "System administrators", now)?;
    permissions::grant_group(&tx, admin_group, crate::model::Permission::Admin)?;
    let admin = users::create(
        &tx,
        &users::NewUser {
            login: ADMIN_LOGIN,
            name: "Administrator",
            email: None,
            password_hash: Some(&crate::crypto::hash_password(&plain)),
            must_change_password: generated,
            external: None,
        },
        now,
    )?;
    groups::add_member(&tx, admin_group, admin)?;
    settings::set(
        &tx,
        settings::KEY_SERVER_ID,
        &crate::crypto::random_hex(8).to_uppercase(),
    )?;
    tx.commit()?;
    Ok((
        Bootstrap::Created {
            admin_password_generated: generated,
        },
        generated.then_some(plain),
    ))
}

/// A small checkout of open connections. Each request takes one and gives it back; at most
/// `max` are open at once, so a burst waits briefly instead of opening files without bound.
pub struct Pool {
    path: PathBuf,
    max: usize,
    state: Mutex<PoolState>,
    available: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
}

impl Pool {
    pub fn new(path: PathBuf, max: usize) -> Pool {
        Pool {
            path,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            available: Condvar::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a connection, waiting up to `wait` for one to come back when all are in use.
    pub fn get(&self, wait: Duration) -> Result<PooledConn<'_>, crate::error::AppError> {
        let deadline = std::time::Instant::now() + wait;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(PooledConn {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match open(&self.path) {
                    Ok(conn) => Ok(PooledConn {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                        state.open -= 1;
                        self.available.notify_one();
                        Err(e.into())
                    }
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(crate::error::AppError::Unavailable(
                    "The server is busy; try again in a moment".into(),
                ));
            }
            state = self
                .available
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_autocommit() {
            state.idle.push(conn);
        } else {
            // Left inside a transaction (a panic mid-request): do not reuse it.
            state.open -= 1;
            drop(conn);
        }
        self.available.notify_one();
    }
}

/// A connection checked out of the [`Pool`]; returned on drop.
pub struct PooledConn<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Deref for PooledConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

/// Starts a write transaction that takes the write lock at once, so concurrent writers wait
/// (busy timeout) instead of failing halfway.
pub fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Online, consistent copy of the database at `src` into `dest` (SQLite backup API).
pub fn backup(src: &Path, dest: &Path) -> rusqlite::Result<()> {
    let source = open(src)?;
    let mut target = Connection::open(dest)?;
    let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
    backup.run_to_completion(256, Duration::from_millis(5), None)?;
    Ok(())
}

/// An in-memory database with the full schema and bootstrap, for unit tests.
#[cfg(test)]
pub fn test_db() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    migrate(&mut conn).unwrap();
    bootstrap(&mut conn, Some("admin-password-123"), 1_000).unwrap();
    conn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn fresh_database_gets_every_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), schema_version());
        // Running again is a no-op.
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), schema_version());
    }

    #[test]
    fn upgrade_applies_only_missing_migrations() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &["CREATE TABLE a (x)"]).unwrap();
        conn.execute("INSERT INTO a VALUES (1)", []).unwrap();
        migrate_with(
            &mut conn,
            &["CREATE TABLE a (x)", "ALTER TABLE a ADD COLUMN y"],
        )
        .unwrap();
        assert_eq!(version(&conn), 2);
        let y: Option<i64> = conn.query_row("SELECT y FROM a", [], |r| r.get(0)).unwrap();
        assert_eq!(y, None);
    }

    #[test]
    fn failed_migration_leaves_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &["CREATE TABLE a (x)"]).unwrap();
        let err = migrate_with(
            &mut conn,
            &["CREATE TABLE a (x)", "CREATE TABLE b (x); BROKEN"],
        )
        .unwrap_err();
        assert!(matches!(err, MigrateError::Sql { version: 2, .. }));
        assert_eq!(version(&conn), 1);
        let b: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name='b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(b, 0, "half of a failed migration must not stay");
    }

    #[test]
    fn newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", schema_version() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, MigrateError::TooNew { .. }));
        assert!(err.to_string().contains("newer"));
    }

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("labgate-pool-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labgate.db");
        let mut conn = open(&path).unwrap();
        migrate(&mut conn).unwrap();
        path
    }

    #[test]
    fn pool_reuses_connections_and_never_opens_more_than_its_size() {
        let pool = Pool::new(temp_db("size"), 2);
        let a = pool.get(Duration::from_millis(10)).unwrap();
        let b = pool.get(Duration::from_millis(10)).unwrap();
        let third = pool.get(Duration::from_millis(20));
        assert!(matches!(third, Err(crate::error::AppError::Unavailable(_))));
        drop(a);
        let c = pool
            .get(Duration::from_millis(10))
            .expect("a returned connection is reused");
        drop((b, c));
        assert_eq!(pool.state.lock().unwrap().open, 2);
    }

    #[test]
    fn pool_waits_for_a_connection_to_come_back() {
        let pool = std::sync::Arc::new(Pool::new(temp_db("wait"), 1));
        let held = pool.get(Duration::from_millis(10)).unwrap();
        let other = std::sync::Arc::clone(&pool);
        let waiter =
            std::thread::spawn(move || other.get(Duration::from_secs(10)).map(|_| ()).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_connection_left_inside_a_transaction_is_not_reused() {
        let pool = Pool::new(temp_db("tx"), 2);
        {
            let conn = pool.get(Duration::from_millis(10)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        }
        let state = pool.state.lock().unwrap();
        assert_eq!((state.idle.len(), state.open), (0, 0));
    }

    #[test]
    fn bootstrap_runs_once() {
        let mut conn = test_db();
        let (again, pw) = bootstrap(&mut conn, None, 2_000).unwrap();
        assert_eq!(again, Bootstrap::AlreadyDone);
        assert!(pw.is_none());
        let admin = users::find_by_login(&conn, ADMIN_LOGIN).unwrap().unwrap();
        assert!(!admin.must_change_password);
        assert_eq!(permissions::count_active_admins(&conn).unwrap(), 1);
    }

    #[test]
    fn bootstrap_with_generated_password_forces_change() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let (done, pw) = bootstrap(&mut conn, None, 1).unwrap();
        assert_eq!(
            done,
            Bootstrap::Created {
                admin_password_generated: true
            }
        );
        let pw = pw.unwrap();
        let admin = users::find_by_login(&conn, ADMIN_LOGIN).unwrap().unwrap();
        assert!(admin.must_change_password);
        let hash = users::password_hash(&conn, admin.id).unwrap().unwrap();
        assert!(crate::crypto::verify_password(&pw, &hash));
    }
}
