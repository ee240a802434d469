//! The SQLite store: opening with the right pragmas, the migration list, first-start bootstrap,
//! the connection checkout, and one module of plain query functions per table family.

pub mod gitlab_group_sync;
pub mod groups;
pub mod maintenance;
pub mod oauth;
pub mod permissions;
pub mod sessions;
pub mod settings;
pub mod tokens;
pub mod user_image;
pub mod user_search;
pub mod users;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    // 3: user search at scale (see `user_search`). A trigram index of login, name
    // and email for each list (active, deactivated users), holding the values lowercased by
    // SQLite's `lower()`, which like `LIKE` folds ASCII letters only: a phrase query for the
    // lowercased text then matches exactly the rows `LIKE '%text%'` matches. Contentless
    // (`content=''`): the values are in `users`; the triggers pass the same `lower()` values to
    // 'delete'. `user_stats` holds the size of each list and a generation that changes with
    // every change to who matches what (read by the search to reuse counts). Indexes: the
    // deactivated list by login, logins by id (to sort matches), the default group.
    r#"
    CREATE VIRTUAL TABLE users_search_active USING fts5(
        login, name, email,
        content='', columnsize=0, detail=full, tokenize='trigram case_sensitive 1'
    );
    CREATE VIRTUAL TABLE users_search_deactivated USING fts5(
        login, name, email,
        content='', columnsize=0, detail=full, tokenize='trigram case_sensitive 1'
    );
    INSERT INTO users_search_active (rowid, login, name, email)
        SELECT id, lower(login), lower(name), lower(email) FROM users WHERE active = 1;
    INSERT INTO users_search_deactivated (rowid, login, name, email)
        SELECT id, lower(login), lower(name), lower(email) FROM users WHERE active = 0;
    CREATE TABLE user_stats (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        active_users INTEGER NOT NULL,
        deactivated_users INTEGER NOT NULL,
        generation INTEGER NOT NULL
    );
    INSERT INTO user_stats (id, active_users, deactivated_users, generation) VALUES (
        1,
        (SELECT count(*) FROM users WHERE active = 1),
        (SELECT count(*) FROM users WHERE active = 0),
        random()
    );
    CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
        INSERT INTO users_search_active (rowid, login, name, email)
            SELECT new.id, lower(new.login), lower(new.name), lower(new.email)
            WHERE new.active = 1;
        INSERT INTO users_search_deactivated (rowid, login, name, email)
            SELECT new.id, lower(new.login), lower(new.name), lower(new.email)
            WHERE new.active = 0;
        UPDATE user_stats SET active_users = active_users + (new.active = 1),
            deactivated_users = deactivated_users + (new.active = 0), generation = random();
    END;
    CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
        INSERT INTO users_search_active (users_search_active, rowid, login, name, email)
            SELECT 'delete', old.id, lower(old.login), lower(old.name), lower(old.email)
            WHERE old.active = 1;
        INSERT INTO users_search_deactivated (users_search_deactivated, rowid, login, name, email)
            SELECT 'delete', old.id, lower(old.login), lower(old.name), lower(old.email)
            WHERE old.active = 0;
        UPDATE user_stats SET active_users = active_users - (old.active = 1),
            deactivated_users = deactivated_users - (old.active = 0), generation = random();
    END;
    -- Only real changes: a GitLab sign-in rewrites the name and email, mostly unchanged.
    CREATE TRIGGER users_search_update AFTER UPDATE OF login, name, email, active ON users
        WHEN old.login IS NOT new.login OR old.name IS NOT new.name
            OR old.email IS NOT new.email OR old.active IS NOT new.active
    BEGIN
        INSERT INTO users_search_active (users_search_active, rowid, login, name, email)
            SELECT 'delete', old.id, lower(old.login), lower(old.name), lower(old.email)
            WHERE old.active = 1;
        INSERT INTO users_search_deactivated (users_search_deactivated, rowid, login, name, email)
            SELECT 'delete', old.id, lower(old.login), lower(old.name), lower(old.email)
            WHERE old.active = 0;
        INSERT INTO users_search_active (rowid, login, name, email)
            SELECT new.id, lower(new.login), lower(new.name), lower(new.email)
            WHERE new.active = 1;
        INSERT INTO users_search_deactivated (rowid, login, name, email)
            SELECT new.id, lower(new.login), lower(new.name), lower(new.email)
            WHERE new.active = 0;
        UPDATE user_stats SET active_users = active_users - (old.active = 1) + (new.active = 1),
            deactivated_users = deactivated_users - (old.active = 0) + (new.active = 0),
            generation = random();
    END;
    -- The deactivated list in login order (the active list walks the login index).
    CREATE INDEX users_deactivated ON users(login) WHERE active = 0;
    -- Logins by id, narrow: sorting a search's matches by login reads this, not their rows.
    CREATE INDEX users_login_by_id ON users(id, login);
    -- The default group, found for every new or reactivated user.
    CREATE INDEX groups_default ON groups(is_default) WHERE is_default = 1;
    "#,
    // 4: indexes for the GitLab sign-in: the GitLab username of pre-provisioned accounts
    // (looked up, ignoring case, by every sign-in), and the creation or last-use times by which
    // expired sessions, pending sign-ins and refusal reasons are purged (on every sign-in, start
    // of a sign-in and refusal): the purges read only the expired rows, however many live ones
    // there are. (The default group's index is in 3.)
    r#"
    CREATE INDEX users_external_identity
        ON users(external_provider, external_identity COLLATE NOCASE);
    CREATE INDEX sessions_last_seen ON sessions(last_seen_at);
    CREATE INDEX sessions_created ON sessions(created_at);
    CREATE INDEX oauth_states_created ON oauth_states(created_at);
    CREATE INDEX sign_in_refusals_created ON sign_in_refusals(created_at);
    "#,
    // 5: each group's number of memberships (active users or not), kept by triggers: the group
    // lists show it for every group, and the member lists of a big group start from it; counted,
    // it read every membership (the default group holds every user).
    r#"
    ALTER TABLE groups ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
    UPDATE groups SET member_count =
        (SELECT count(*) FROM group_members m WHERE m.group_id = groups.id);
    CREATE TRIGGER group_members_counted_insert AFTER INSERT ON group_members BEGIN
        UPDATE groups SET member_count = member_count + 1 WHERE id = new.group_id;
    END;
    CREATE TRIGGER group_members_counted_delete AFTER DELETE ON group_members BEGIN
        UPDATE groups SET member_count = member_count - 1 WHERE id = old.group_id;
    END;
    CREATE TRIGGER group_members_counted_update AFTER UPDATE OF group_id ON group_members
        WHEN old.group_id IS NOT new.group_id
    BEGIN
        UPDATE groups SET member_count = member_count - 1 WHERE id = old.group_id;
        UPDATE groups SET member_count = member_count + 1 WHERE id = new.group_id;
    END;
    "#,
    // 6: text searches read the user lists held in memory (see `user_image`), kept up
    // to date by a log of the changes to who matches a search: each change the triggers of
    // migration 3 count (a user added, removed, or its login, name, email or activity changed)
    // is written to `user_changes` with the generation it made, so that the lists catch up by
    // reading the changed users alone. The last 10,000 changes are kept; the first row is the
    // generation at upgrade. Nothing reads the trigram indexes of migration 3 or the narrow
    // index of logins by id (which sorted their matches) any more: dropped, with the three
    // triggers rewritten to keep `user_stats` and the log (the database's free pages are
    // reused; `VACUUM` returns them to the file system).
    r#"
    CREATE TABLE user_changes (
        seq INTEGER PRIMARY KEY,
        user_id INTEGER,
        generation INTEGER NOT NULL
    );
    INSERT INTO user_changes (user_id, generation) SELECT NULL, generation FROM user_stats;
    DROP TRIGGER users_search_insert;
    DROP TRIGGER users_search_delete;
    DROP TRIGGER users_search_update;
    DROP TABLE users_search_active;
    DROP TABLE users_search_deactivated;
    DROP INDEX users_login_by_id;
    CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
        UPDATE user_stats SET active_users = active_users + (new.active = 1),
            deactivated_users = deactivated_users + (new.active = 0), generation = random();
        INSERT INTO user_changes (user_id, generation) SELECT new.id, generation FROM user_stats;
        DELETE FROM user_changes WHERE seq <= (SELECT max(seq) FROM user_changes) - 10000;
    END;
    CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
        UPDATE user_stats SET active_users = active_users - (old.active = 1),
            deactivated_users = deactivated_users - (old.active = 0), generation = random();
        INSERT INTO user_changes (user_id, generation) SELECT old.id, generation FROM user_stats;
        DELETE FROM user_changes WHERE seq <= (SELECT max(seq) FROM user_changes) - 10000;
    END;
    CREATE TRIGGER users_search_update AFTER UPDATE OF login, name, email, active ON users
        WHEN old.login IS NOT new.login OR old.name IS NOT new.name
            OR old.email IS NOT new.email OR old.active IS NOT new.active
    BEGIN
        UPDATE user_stats SET active_users = active_users - (old.active = 1) + (new.active = 1),
            deactivated_users = deactivated_users - (old.active = 0) + (new.active = 0),
            generation = random();
        INSERT INTO user_changes (user_id, generation) SELECT new.id, generation FROM user_stats;
        DELETE FROM user_changes WHERE seq <= (SELECT max(seq) FROM user_changes) - 10000;
    END;
    "#,
    // 7: a GitLab sign-in whose groups have not changed skips the group synchronization (issue
    // 5). A row of `gitlab_group_sync` says: this user's memberships are exactly what the
    // synchronization made of the GitLab paths with this digest, and nothing they depend on
    // has changed since. The triggers delete the row when that stops being true: any change
    // to the user's memberships, and for every user, any group created, deleted, renamed or
    // made the default. (A sign-in's own synchronization deletes the row too, then writes it
    // afresh.)
    r#"
    CREATE TABLE gitlab_group_sync (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        paths_digest BLOB NOT NULL
    );
    CREATE TRIGGER gitlab_group_sync_member_insert AFTER INSERT ON group_members BEGIN
        DELETE FROM gitlab_group_sync WHERE user_id = new.user_id;
    END;
    CREATE TRIGGER gitlab_group_sync_member_delete AFTER DELETE ON group_members BEGIN
        DELETE FROM gitlab_group_sync WHERE user_id = old.user_id;
    END;
    CREATE TRIGGER gitlab_group_sync_member_update AFTER UPDATE ON group_members BEGIN
        DELETE FROM gitlab_group_sync WHERE user_id IN (old.user_id, new.user_id);
    END;
    CREATE TRIGGER gitlab_group_sync_group_insert AFTER INSERT ON groups BEGIN
        DELETE FROM gitlab_group_sync;
    END;
    CREATE TRIGGER gitlab_group_sync_group_delete AFTER DELETE ON groups BEGIN
        DELETE FROM gitlab_group_sync;
    END;
    CREATE TRIGGER gitlab_group_sync_group_update AFTER UPDATE OF name, is_default ON groups
        WHEN old.name IS NOT new.name OR old.is_default IS NOT new.is_default
    BEGIN
        DELETE FROM gitlab_group_sync;
    END;
    "#,
];

/// The schema version this binary writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens a connection with labgate's pragmas (WAL, foreign keys, busy timeout), its commits
/// counted in [`generation`].
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    open_counting(path, &GENERATION)
}

fn open_counting(path: &Path, generation: &'static AtomicU64) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&mut conn, generation)?;
    Ok(conn)
}

/// Commits of this process that changed the database: see [`generation`].
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Cleared if a connection could not be put in WAL mode: commits are then not counted.
static COMMITS_COUNTED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Set while [`uncounted_write`] runs.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// A number that changes after every commit, by any connection of this process opened with
/// [`open`], that changed the database. Something computed from the database after reading
/// generation `g` is still up to date as long as the generation is `g` (writes of other
/// processes aside: they are not counted).
///
/// Counted in SQLite's WAL hook, which runs right after the commit, once the new data is
/// visible to every reader: a reader that sees the new number then reads the new data. (The
/// commit hook would not do: it runs before the commit is visible, so a reader could see the
/// new number, read the old data, and keep it as current.)
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// Whether [`generation`] counts every commit: false if a connection is not in WAL mode (a file
/// system without shared memory), in which case nothing may be cached by generation.
pub fn commits_counted() -> bool {
    COMMITS_COUNTED.load(Ordering::SeqCst)
}

/// Runs `write`, an autocommit write that changes nothing a cache keyed by [`generation`] holds,
/// without moving the generation: the activity stamps `sessions::touch` and `tokens::touch`,
/// which would otherwise drop every cached caller once a minute per active session. Inside an
/// open transaction it has no effect (the commit, later, is counted).
pub(crate) fn uncounted_write<T>(write: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            UNCOUNTED.with(|u| u.set(false));
        }
    }
    UNCOUNTED.with(|u| u.set(true));
    let _reset = Reset;
    write()
}

/// WAL frames after which a commit checkpoints, as SQLite's default WAL hook does (which ours
/// replaces).
const WAL_AUTOCHECKPOINT_PAGES: i32 = 1000;

/// Counts this connection's commits in `generation`, and checkpoints like SQLite's default hook.
fn count_commits(conn: &mut Connection, generation: &'static AtomicU64) -> rusqlite::Result<()> {
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if !UNCOUNTED.with(Cell::get) {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        if pages >= WAL_AUTOCHECKPOINT_PAGES {
            // As SQLite's own hook: a checkpoint that cannot run now runs at a later commit,
            // and its failure is not the failure of the commit that has already happened.
            let _ = wal.checkpoint();
        }
        Ok(())
    }))
}

/// Statements kept compiled per connection (`prepare_cached`, keyed by the SQL text). Above
/// the number of distinct SQL texts labgate runs (about 80), so that none is compiled twice on
/// a connection of the [`Pool`]; each costs a few KiB, and only those used are kept.
pub const STATEMENT_CACHE_CAPACITY: usize = 128;

/// Pragmas every connection carries, and the counting of its commits in `generation`.
fn configure(conn: &mut Connection, generation: &'static AtomicU64) -> rusqlite::Result<()> {
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
        COMMITS_COUNTED.store(false, Ordering::SeqCst);
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    count_commits(conn, generation)?;
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

/// A count or position from SQL as an index (negative: 0; too big: the largest).
pub(crate) fn as_index(n: i64) -> usize {
    usize::try_from(n.max(0)).unwrap_or(usize::MAX)
}

/// The ids from `offset`, at most `limit`: a page of a list held in memory.
pub(crate) fn page_of(ids: &[i64], offset: i64, limit: i64) -> Vec<i64> {
    let start = as_index(offset).min(ids.len());
    ids[start..].iter().take(as_index(limit)).copied().collect()
}

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`: one statement for a page of
/// rows instead of one per row.
pub fn id_list(ids: &[i64]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
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
    /// Requests waiting for a connection: only then is a returned one announced (waking
    /// nobody still costs a system call per request).
    waiting: usize,
}

impl Pool {
    pub fn new(path: PathBuf, max: usize) -> Pool {
        Pool {
            path,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
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
                        if state.waiting > 0 {
                            self.available.notify_one();
                        }
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
            state.waiting += 1;
            state = self
                .available
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.waiting -= 1;
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
        if state.waiting > 0 {
            self.available.notify_one();
        }
    }
}

/// A connection checked out of the [`Pool`]; returned on drop.
pub struct PooledConn<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl PooledConn<'_> {
    /// Gives the connection back to the pool while the request waits on something slow
    /// (password hashing, a throttle, a call to GitLab), so that a flood of such requests
    /// cannot starve everyone else of connections. [`PooledConn::reacquire`] takes one again;
    /// using the connection in between is a bug (it panics, and the request answers 500).
    /// Outside a transaction only: an open transaction would be rolled back.
    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }

    /// Takes a connection again after [`PooledConn::release`], waiting up to `wait`; a no-op
    /// when one is held.
    pub fn reacquire(&mut self, wait: Duration) -> Result<(), crate::error::AppError> {
        if self.conn.is_none() {
            let mut fresh = self.pool.get(wait)?;
            self.conn = fresh.conn.take();
        }
        Ok(())
    }

    /// Runs `slow` with the connection given back to the pool, then takes one again.
    pub fn released<T>(
        &mut self,
        wait: Duration,
        slow: impl FnOnce() -> T,
    ) -> Result<T, crate::error::AppError> {
        self.release();
        let out = slow();
        self.reacquire(wait)?;
        Ok(out)
    }
}

impl Deref for PooledConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("connection used while released to the pool")
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("connection used while released to the pool")
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

    fn logins(found: (Vec<users::User>, i64)) -> (Vec<String>, i64) {
        (found.0.into_iter().map(|u| u.login).collect(), found.1)
    }

    /// The kept member counts: filled by the upgrade from existing memberships, then moved by
    /// every way a membership comes and goes (duplicates ignored, removals, a user or a group
    /// deleted through their foreign keys).
    #[test]
    fn member_counts_are_kept_through_upgrade_and_every_change() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..4]).unwrap();
        bootstrap(&mut conn, Some("admin-password-123"), 1).unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, login, name, created_at, updated_at) VALUES
                 (10, 'ann', 'Ann', 1, 1), (11, 'bob', 'Bob', 1, 1), (12, 'cid', 'Cid', 1, 1);
             INSERT INTO groups (id, name, created_at) VALUES (20, 'devs', 1), (21, 'ops', 1);
             INSERT INTO group_members (group_id, user_id) VALUES (20, 10), (20, 11), (21, 10);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let check = |conn: &Connection, when: &str| {
            let wrong: Vec<(String, i64, i64)> = conn
                .prepare(
                    "SELECT name, member_count, \
                       (SELECT count(*) FROM group_members m WHERE m.group_id = g.id) AS counted \
                     FROM groups g WHERE member_count IS NOT counted",
                )
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(wrong.is_empty(), "{when}: {wrong:?}");
        };
        check(&conn, "after the upgrade");
        let devs: i64 = conn
            .query_row("SELECT member_count FROM groups WHERE id = 20", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(devs, 2);
        groups::add_member(&conn, 20, 12).unwrap();
        assert!(!groups::add_member(&conn, 20, 12).unwrap());
        check(&conn, "after adding, twice");
        groups::remove_member(&conn, 20, 11).unwrap();
        groups::remove_member(&conn, 20, 11).unwrap();
        check(&conn, "after removing, twice");
        conn.execute(
            "UPDATE group_members SET group_id = 21 WHERE group_id = 20 AND user_id = 12",
            [],
        )
        .unwrap();
        check(&conn, "after moving a membership");
        conn.execute("DELETE FROM users WHERE id = 10", []).unwrap();
        check(&conn, "after deleting a user (cascade)");
        conn.execute("DELETE FROM groups WHERE id = 21", [])
            .unwrap();
        check(&conn, "after deleting a group (cascade)");
        let ops_members: i64 = conn
            .query_row(
                "SELECT count(*) FROM group_members WHERE group_id = 21",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ops_members, 0, "the cascade ran");
    }

    #[test]
    fn upgrade_to_search_index_indexes_existing_users() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..2]).unwrap();
        bootstrap(&mut conn, Some("admin-password-123"), 1).unwrap();
        conn.execute_batch(
            "INSERT INTO users (login, name, email, active, created_at, updated_at) VALUES
                 ('ann', 'Ann Smith', 'Ann@Example.org', 1, 1, 1),
                 ('bob', 'Bob Smith', NULL, 0, 1, 1),
                 ('carl', 'Carl', 'carl@example.org', 1, 1, 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), schema_version());
        let search = |conn: &Connection, q: Option<&str>, active: bool| {
            logins(user_search::search(conn, q, active, 0, 10).unwrap())
        };
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            search(&conn, Some("EXAMPLE.ORG"), true),
            (names(&["ann", "carl"]), 2)
        );
        assert_eq!(search(&conn, Some("smi"), false), (names(&["bob"]), 1));
        assert_eq!(
            search(&conn, None, true),
            (names(&["admin", "ann", "carl"]), 3)
        );
        // The triggers keep it after the upgrade.
        let ann = users::find_by_login(&conn, "ann").unwrap().unwrap();
        users::deactivate(&conn, ann.id, 2).unwrap();
        assert_eq!(
            search(&conn, Some("smith"), false),
            (names(&["ann", "bob"]), 2)
        );
        assert_eq!(search(&conn, Some("smith"), true), (names(&[]), 0));
        assert_eq!(search(&conn, None, true), (names(&["admin", "carl"]), 2));
    }

    #[test]
    fn upgrade_to_skipped_synchronization_starts_empty_and_triggers_forget_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..6]).unwrap();
        bootstrap(&mut conn, Some("admin-password-123"), 1).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), schema_version());
        let rows = |conn: &Connection| -> Vec<i64> {
            let mut stmt = conn
                .prepare("SELECT user_id FROM gitlab_group_sync ORDER BY user_id")
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert!(
            rows(&conn).is_empty(),
            "every user synchronizes once after the upgrade"
        );
        let user = |login: &str| -> i64 {
            conn.execute(
                "INSERT INTO users (login, name, created_at, updated_at) VALUES (?1, ?1, 1, 1)",
                [login],
            )
            .unwrap();
            conn.last_insert_rowid()
        };
        let (ann, bob) = (user("ann"), user("bob"));
        let remember = |conn: &Connection| {
            for id in [ann, bob] {
                conn.execute(
                    "INSERT OR REPLACE INTO gitlab_group_sync VALUES (?1, x'00')",
                    [id],
                )
                .unwrap();
            }
        };
        let g = groups::create(&conn, "g", "", 1).unwrap();
        remember(&conn);
        groups::add_member(&conn, g, ann).unwrap();
        assert_eq!(
            rows(&conn),
            [bob],
            "a membership added forgets that user only"
        );
        remember(&conn);
        groups::remove_member(&conn, g, ann).unwrap();
        assert_eq!(rows(&conn), [bob], "a membership removed");
        remember(&conn);
        groups::update(&conn, g, "g", "described").unwrap();
        assert_eq!(rows(&conn), [ann, bob], "a new description changes nothing");
        groups::update(&conn, g, "h", "").unwrap();
        assert!(rows(&conn).is_empty(), "a group renamed forgets everyone");
        remember(&conn);
        groups::create(&conn, "i", "", 1).unwrap();
        assert!(rows(&conn).is_empty(), "a group created");
        remember(&conn);
        groups::delete(&conn, g).unwrap();
        assert!(rows(&conn).is_empty(), "a group deleted");
        remember(&conn);
        conn.execute("DELETE FROM users WHERE id = ?1", [ann])
            .unwrap();
        assert_eq!(rows(&conn), [bob], "a user deleted takes its row along");
    }

    #[test]
    fn upgrade_to_the_change_log_starts_it_at_the_current_generation() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..5]).unwrap();
        bootstrap(&mut conn, Some("admin-password-123"), 1).unwrap();
        conn.execute(
            "INSERT INTO users (login, name, email, active, created_at, updated_at)
                 VALUES ('ann', 'Ann Smith', 'ann@example.org', 1, 1, 1)",
            [],
        )
        .unwrap();
        let generation = |conn: &Connection| -> i64 {
            conn.query_row("SELECT generation FROM user_stats", [], |r| r.get(0))
                .unwrap()
        };
        let before = generation(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn), schema_version());
        let log = |conn: &Connection| -> Vec<(Option<i64>, i64)> {
            let mut stmt = conn
                .prepare("SELECT user_id, generation FROM user_changes ORDER BY seq")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(log(&conn), [(None, before)]);
        assert_eq!(generation(&conn), before, "the upgrade changes no user");
        // Each trigger still does what it did, and writes the change with its generation.
        let ann = users::find_by_login(&conn, "ann").unwrap().unwrap();
        users::update_profile(&conn, ann.id, "Ann Jones", None, 2).unwrap();
        let renamed = generation(&conn);
        users::touch_last_connection(&conn, ann.id, 3).unwrap();
        conn.execute("DELETE FROM users WHERE id = ?1", [ann.id])
            .unwrap();
        let deleted = generation(&conn);
        assert_eq!(
            log(&conn),
            [
                (None, before),
                (Some(ann.id), renamed),
                (Some(ann.id), deleted)
            ]
        );
        let found = logins(user_search::search(&conn, Some("ann"), true, 0, 10).unwrap());
        assert_eq!(found, (Vec::<String>::new(), 0));
        assert_eq!(
            logins(user_search::search(&conn, None, true, 0, 10).unwrap()),
            (vec!["admin".to_string()], 1)
        );
    }

    #[test]
    fn fresh_database_indexes_users_for_search() {
        let conn = test_db();
        let found = logins(user_search::search(&conn, Some("ADMIN"), true, 0, 10).unwrap());
        assert_eq!(found, (vec!["admin".to_string()], 1));
        let default_group: i64 = conn
            .query_row(
                "SELECT count(*) FROM groups INDEXED BY groups_default WHERE is_default = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(default_group, 1);
        // Migration 6 dropped what text searches no longer read.
        let gone: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'users_search_%' \
                 AND type = 'table' OR name = 'users_login_by_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
    }

    #[test]
    fn id_list_is_a_json_array() {
        assert_eq!(id_list(&[]), "[]");
        assert_eq!(id_list(&[3, -1, 42]), "[3,-1,42]");
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
    fn every_commit_moves_the_generation_but_reads_and_uncounted_writes_do_not() {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let path = temp_db("generation");
        let mut conn = open_counting(&path, &COUNT).unwrap();
        let other = open_counting(&path, &COUNT).unwrap();
        let start = COUNT.load(Ordering::SeqCst);
        conn.execute("INSERT INTO settings (key, value) VALUES ('a', '1')", [])
            .unwrap();
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 1, "autocommit write");
        let tx = write_tx(&mut conn).unwrap();
        settings::set(&tx, "b", "2").unwrap();
        settings::set(&tx, "c", "3").unwrap();
        assert_eq!(
            COUNT.load(Ordering::SeqCst),
            start + 1,
            "not before the commit"
        );
        tx.commit().unwrap();
        assert_eq!(
            COUNT.load(Ordering::SeqCst),
            start + 2,
            "one per transaction"
        );
        settings::set(&other, "a", "4").unwrap();
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 3, "any connection");
        assert_eq!(settings::get(&conn, "a").unwrap().as_deref(), Some("4"));
        uncounted_write(|| settings::set(&conn, "a", "5")).unwrap();
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 3, "uncounted");
        settings::set(&conn, "a", "6").unwrap();
        assert_eq!(
            COUNT.load(Ordering::SeqCst),
            start + 4,
            "counted again after"
        );
        let tx = write_tx(&mut conn).unwrap();
        settings::set(&tx, "d", "7").unwrap();
        drop(tx);
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 4, "rolled back");
    }

    #[test]
    fn the_wal_is_still_checkpointed_with_the_counting_hook() {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let path = temp_db("checkpoint");
        let conn = open_counting(&path, &COUNT).unwrap();
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let blob = vec![7u8; page as usize];
        for i in 0..3 * WAL_AUTOCHECKPOINT_PAGES {
            conn.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)",
                rusqlite::params![format!("k{}", i % 100), blob],
            )
            .unwrap();
        }
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        // Without checkpoints the WAL would hold every commit: thousands of pages.
        assert!(
            wal < 2 * WAL_AUTOCHECKPOINT_PAGES as u64 * (page as u64 + 24),
            "WAL of {wal} bytes"
        );
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
