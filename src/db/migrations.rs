//! The schema: the ordered migrations and the function that applies those a database lacks.

use rusqlite::{Connection, TransactionBehavior};

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
    // 3: user search at scale (see `user_index`). A trigram index of login, name
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
    // 6: text searches read the user lists held in memory (see `user_index`), kept up
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
    // 7: a GitLab sign-in whose groups have not changed skips the group synchronization. A row
    // of `gitlab_group_sync` says: this user's memberships are exactly what the synchronization
    // made of the GitLab paths with this digest, and nothing they depend on has changed since.
    // The triggers delete the row when that stops being true: any change to the user's
    // memberships, and for every user, any group created, deleted, renamed or made the
    // default. (A sign-in's own synchronization deletes the row too, then writes it afresh.)
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
    // 8: the last sign-in that failed because of how labgate is registered in GitLab (scopes
    // not ticked, application ID or secret refused), shown to admins on the GitLab tab with its
    // fix until a sign-in succeeds. One row at most.
    r#"
    CREATE TABLE gitlab_sign_in_problem (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seen_at INTEGER NOT NULL,
        problem TEXT NOT NULL,
        fix TEXT NOT NULL
    );
    "#,
    // 9: GitLab sign-ins in progress are kept in memory (a start writes nothing to disk).
    r#"
    DROP TABLE oauth_states;
    "#,
    // 10: applications behind labgate (forward authentication): each is known by its origin,
    // and admits the members of its allowed groups (none listed: every active user). A group
    // that admits people to an application cannot be deleted (RESTRICT): deleting it must not
    // leave the application open to everyone. Names are unique ignoring case, so that two
    // entries of a list cannot be told apart only by case.
    r#"
    CREATE TABLE applications (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL COLLATE NOCASE UNIQUE,
        url TEXT NOT NULL UNIQUE CHECK (url = lower(url)),
        description TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
    );
    CREATE TABLE application_groups (
        application_id INTEGER NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
        group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE RESTRICT,
        PRIMARY KEY (application_id, group_id)) WITHOUT ROWID;
    CREATE INDEX application_groups_by_group ON application_groups(group_id);
    "#,
    // 11: revalidation of GitLab users. `gitlab_refresh_tokens` keeps the refresh token of each
    // GitLab user's last sign-in, sealed with the key of labgate.key (never in clear), replaced
    // at each sign-in and each revalidation. `gitlab_access_holds` marks the users GitLab no
    // longer admits: their API tokens are refused until they sign in with GitLab again, which
    // removes the row. The triggers forget both when the account is deactivated or linked to
    // another GitLab identity (its sessions and tokens end then anyway); deleting the user
    // takes them along. `gitlab_revalidation_runs` records the last runs.
    r#"
    CREATE TABLE gitlab_refresh_tokens (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        sealed TEXT NOT NULL,
        stored_at INTEGER NOT NULL
    );
    CREATE TABLE gitlab_access_holds (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        held_at INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TRIGGER gitlab_access_forgotten_deactivated AFTER UPDATE OF active ON users
        WHEN new.active = 0 AND old.active = 1
    BEGIN
        DELETE FROM gitlab_refresh_tokens WHERE user_id = new.id;
        DELETE FROM gitlab_access_holds WHERE user_id = new.id;
    END;
    CREATE TRIGGER gitlab_access_forgotten_relinked
        AFTER UPDATE OF external_provider, external_id ON users
        WHEN old.external_provider IS NOT new.external_provider
            OR old.external_id IS NOT new.external_id
    BEGIN
        DELETE FROM gitlab_refresh_tokens WHERE user_id = new.id;
        DELETE FROM gitlab_access_holds WHERE user_id = new.id;
    END;
    CREATE TABLE gitlab_revalidation_runs (
        id INTEGER PRIMARY KEY,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        users_checked INTEGER NOT NULL DEFAULT 0,
        users_updated INTEGER NOT NULL DEFAULT 0,
        users_cut_off INTEGER NOT NULL DEFAULT 0,
        sessions_ended INTEGER NOT NULL DEFAULT 0,
        cut_off TEXT NOT NULL DEFAULT '[]',
        error TEXT
    );
    "#,
    // 12: automatic provisioning. A group it manages carries the id of its GitLab group (NULL:
    // a group made by hand, which provisioning never renames or deletes). `gitlab_provisioned`
    // holds a row for each account provisioning read in its last applied run (`deactivated`
    // 0) and for each account it deactivated (1). The triggers forget the row as soon as
    // anything else changes whether the account is active, or which GitLab account it is
    // linked to: provisioning then reactivates only the accounts it deactivated itself, never
    // one an administrator deactivated, and a re-linked account must be read again before it
    // may sign in. `gitlab_provisioning_runs` keeps the last runs (times in milliseconds).
    r#"
    ALTER TABLE groups ADD COLUMN gitlab_group_id INTEGER;
    CREATE UNIQUE INDEX groups_gitlab_group_id ON groups(gitlab_group_id)
        WHERE gitlab_group_id IS NOT NULL;
    CREATE TABLE gitlab_provisioned (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        deactivated INTEGER NOT NULL DEFAULT 0
    );
    CREATE TRIGGER gitlab_provisioned_activity AFTER UPDATE OF active ON users
        WHEN old.active IS NOT new.active
    BEGIN
        DELETE FROM gitlab_provisioned WHERE user_id = new.id;
    END;
    CREATE TRIGGER gitlab_provisioned_link AFTER UPDATE OF external_provider, external_id ON users
        WHEN old.external_provider IS NOT new.external_provider
            OR old.external_id IS NOT new.external_id
    BEGIN
        DELETE FROM gitlab_provisioned WHERE user_id = new.id;
    END;
    CREATE TABLE gitlab_provisioning_runs (
        id INTEGER PRIMARY KEY,
        status TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        groups_read INTEGER NOT NULL,
        users_read INTEGER NOT NULL,
        changes TEXT NOT NULL,
        error TEXT,
        held TEXT,
        warnings TEXT
    );
    "#,
    // 13: the audit log: one row per decision or change, never updated but for the count of a
    // folded failure (`detail`), removed oldest first by retention and the cap. A transaction
    // that records an event appends it to `audit_pending` (no index: one page written), and
    // events are moved into `audit_events` in batches, so that the indexes cost a batch, not
    // every change. `at` (UTC
    // milliseconds) never decreases with `id` (each insert takes at least the time of the row
    // before), so a time range is a range of ids and the oldest rows are the first ids. Indexes
    // for the filters that start a listing (each also ordered by id: newest first without a
    // sort); `audit_counts`, kept by triggers, holds the number of events per UTC day, action
    // and outcome, so that a page's total without a text filter reads no event.
    r#"
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT,
        action TEXT NOT NULL,
        target TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_events_action ON audit_events(action);
    CREATE INDEX audit_events_outcome ON audit_events(outcome);
    CREATE INDEX audit_events_actor ON audit_events(actor COLLATE NOCASE);
    CREATE INDEX audit_events_target ON audit_events(target COLLATE NOCASE);
    CREATE TABLE audit_counts (
        day INTEGER NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (day, action, outcome)
    ) WITHOUT ROWID;
    CREATE TRIGGER audit_events_counted_insert AFTER INSERT ON audit_events BEGIN
        INSERT INTO audit_counts (day, action, outcome, n)
            VALUES (new.at / 86400000, new.action, new.outcome, 1)
            ON CONFLICT (day, action, outcome) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER audit_events_counted_delete AFTER DELETE ON audit_events BEGIN
        UPDATE audit_counts SET n = n - 1
            WHERE day = old.at / 86400000 AND action = old.action AND outcome = old.outcome;
    END;
    -- Events written by the transactions they record, moved into audit_events in batches:
    -- the same columns, no index.
    CREATE TABLE audit_pending (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT,
        action TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL, reason TEXT, detail TEXT NOT NULL);
    "#,
    // 14: sessions are purged by their last use alone. A session past its hard limit is refused
    // when presented and never used again, so its last use ages past the idle timeout and the
    // purge takes it then; the index on the creation time, one more b-tree written at every
    // sign-in, is no longer needed.
    r#"
    DROP INDEX sessions_created;
    "#,
    // 15: a moved event costs fewer b-tree writes. Pending events are stamped when they are
    // written (no window over the batch when they move), the day counts are added once per
    // batch instead of by a trigger per event, and the outcome index leaves out `ok`, the
    // outcome of most events (a listing of `ok` reads the log newest first). The events
    // pending at the upgrade move first, stamped as before.
    r#"
    INSERT INTO audit_events (at, actor, action, target, outcome, reason, detail)
        SELECT max(max(at) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING),
                   coalesce((SELECT at FROM audit_events ORDER BY id DESC LIMIT 1), 0)),
               actor, action, target, outcome, reason, detail
        FROM audit_pending ORDER BY id;
    DELETE FROM audit_pending;
    DROP TRIGGER audit_events_counted_insert;
    DROP INDEX audit_events_outcome;
    CREATE INDEX audit_events_outcome ON audit_events(outcome) WHERE outcome <> 'ok';
    "#,
    // 16: a provisioning run is recorded when it starts (`RUNNING`, no end time yet), so that a
    // run cut short by a crash or `kill -9` is found at the next start and recorded as failed.
    r#"
    CREATE TABLE gitlab_provisioning_runs_16 (
        id INTEGER PRIMARY KEY,
        status TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        groups_read INTEGER NOT NULL,
        users_read INTEGER NOT NULL,
        changes TEXT NOT NULL,
        error TEXT,
        held TEXT,
        warnings TEXT
    );
    INSERT INTO gitlab_provisioning_runs_16 SELECT id, status, trigger, started_at, finished_at,
        groups_read, users_read, changes, error, held, warnings FROM gitlab_provisioning_runs;
    DROP TABLE gitlab_provisioning_runs;
    ALTER TABLE gitlab_provisioning_runs_16 RENAME TO gitlab_provisioning_runs;
    "#,
];

/// The schema version this binary writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{bootstrap, groups, test_db, user_index, users};

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
            logins(user_index::search(conn, q, active, 0, 10).unwrap())
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
        let found = logins(user_index::search(&conn, Some("ann"), true, 0, 10).unwrap());
        assert_eq!(found, (Vec::<String>::new(), 0));
        assert_eq!(
            logins(user_index::search(&conn, None, true, 0, 10).unwrap()),
            (vec!["admin".to_string()], 1)
        );
    }

    /// Events pending at the upgrade to stamping at append move, stamped as before, with their
    /// day counts; after it, moves count without the trigger and `ok` is left out of the
    /// outcome index.
    #[test]
    fn upgrade_to_stamping_at_append_moves_what_is_pending_and_keeps_the_counts() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..14]).unwrap();
        let day = crate::db::audit::DAY_MS;
        conn.execute_batch(&format!(
            "INSERT INTO audit_events (at, action, outcome, detail) VALUES ({day} + 500, 'a', 'ok', '{{}}');
             INSERT INTO audit_pending (at, action, outcome, detail) VALUES
                 ({day} + 700, 'a', 'ok', '{{}}'),
                 ({day} + 100, 'b', 'refused', '{{}}'),
                 (2 * {day}, 'a', 'ok', '{{}}');"
        ))
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows = |conn: &Connection, sql: &str| -> Vec<(i64, String, String, i64)> {
            let mut stmt = conn.prepare(sql).unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap();
            rows.map(Result::unwrap).collect()
        };
        let times: Vec<i64> = rows(
            &conn,
            "SELECT id, action, outcome, at FROM audit_events ORDER BY id",
        )
        .into_iter()
        .map(|r| r.3)
        .collect();
        assert_eq!(times, vec![day + 500, day + 700, day + 700, 2 * day]);
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM audit_pending", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pending, 0);
        let counts = "SELECT day, action, outcome, n FROM audit_counts ORDER BY 1, 2, 3";
        assert_eq!(
            rows(&conn, counts),
            vec![
                (1, "a".into(), "ok".into(), 2),
                (1, "b".into(), "refused".into(), 1),
                (2, "a".into(), "ok".into(), 1)
            ]
        );
        // A move after the upgrade adds to the same counts.
        conn.execute_batch(
            "INSERT INTO audit_pending (at, action, outcome, detail) VALUES
                 (2 * 86400000 + 1, 'a', 'ok', '{}'), (2 * 86400000 + 2, 'a', 'ok', '{}')",
        )
        .unwrap();
        assert_eq!(crate::db::audit::move_pending(&conn).unwrap(), 2);
        assert_eq!(rows(&conn, counts)[2], (2, "a".into(), "ok".into(), 3));
        let outcome_index: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'audit_events_outcome'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            outcome_index.contains("WHERE outcome <> 'ok'"),
            "{outcome_index}"
        );
    }

    #[test]
    fn upgrade_to_runs_recorded_as_they_start_keeps_every_run() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..15]).unwrap();
        conn.execute_batch(
            "INSERT INTO gitlab_provisioning_runs (status, trigger, started_at, finished_at, \
                 groups_read, users_read, changes, error, held, warnings) VALUES
                 ('SUCCESS', 'SCHEDULE', 10, 20, 3, 7, '{\"usersCreated\":7}', NULL, NULL, '[\"w\"]'),
                 ('HELD', 'MANUAL', 30, 40, 3, 7, '{}', 'too many', '[{\"login\":\"ann\"}]', NULL);",
        )
        .unwrap();
        let before = crate::db::gitlab_provisioning::runs(&conn, 10).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(
            crate::db::gitlab_provisioning::runs(&conn, 10).unwrap(),
            before
        );
        assert_eq!(before[0].held.as_deref(), Some(r#"[{"login":"ann"}]"#));
        // A run now starts recorded, without an end time.
        let id = crate::db::gitlab_provisioning::start_run(&conn, "MANUAL", 50, "{}").unwrap();
        assert_eq!(id, 3, "ids go on from the kept runs");
        let runs = crate::db::gitlab_provisioning::runs(&conn, 1).unwrap();
        assert_eq!(
            (runs[0].status.as_str(), runs[0].finished_at),
            ("RUNNING", None)
        );
    }

    #[test]
    fn fresh_database_indexes_users_for_search() {
        let conn = test_db();
        let found = logins(user_index::search(&conn, Some("ADMIN"), true, 0, 10).unwrap());
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
}
