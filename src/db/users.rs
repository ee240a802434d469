//! The `users` table: creating, finding, editing and deactivating accounts (finding them by
//! text for the lists: `user_index`).

use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub name: String,
    pub email: Option<String>,
    pub active: bool,
    /// Has a password (a local account).
    pub local: bool,
    pub must_change_password: bool,
    pub external_provider: Option<String>,
    pub external_identity: Option<String>,
    pub external_id: Option<String>,
    pub created_at: i64,
    pub last_connection_at: Option<i64>,
}

impl User {
    /// The provider shown in lists: `gitlab` for GitLab accounts, `labgate` for local ones
    /// (where SonarQube would say `sonarqube`).
    pub fn provider(&self) -> &str {
        self.external_provider.as_deref().unwrap_or(LOCAL_PROVIDER)
    }

    /// The identity shown with the provider: the GitLab username, or the login for local users.
    pub fn identity(&self) -> &str {
        self.external_identity.as_deref().unwrap_or(&self.login)
    }
}

/// Provider name reported for local accounts.
pub const LOCAL_PROVIDER: &str = "labgate";

/// The columns [`from_row`] reads, as a macro so that every query stays one `const` text
/// (statements are cached by their text).
macro_rules! user_columns {
    () => {
        "id, login, name, email, active, password_hash IS NOT NULL, must_change_password, \
         external_provider, external_identity, external_id, created_at, last_connection_at"
    };
}

/// The same columns as a `const`, for queries assembled elsewhere (`user_index`).
pub(super) const COLUMNS: &str = user_columns!();

pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        login: row.get(1)?,
        name: row.get(2)?,
        email: row.get(3)?,
        active: row.get(4)?,
        local: row.get(5)?,
        must_change_password: row.get(6)?,
        external_provider: row.get(7)?,
        external_identity: row.get(8)?,
        external_id: row.get(9)?,
        created_at: row.get(10)?,
        last_connection_at: row.get(11)?,
    })
}

/// An external identity for a new account.
pub struct External<'a> {
    pub provider: &'a str,
    pub identity: &'a str,
    pub id: Option<&'a str>,
}

pub struct NewUser<'a> {
    pub login: &'a str,
    pub name: &'a str,
    pub email: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub must_change_password: bool,
    pub external: Option<External<'a>>,
}

/// Inserts a user and its membership of the default group. Call inside a transaction.
pub fn create(conn: &Connection, user: &NewUser<'_>, now: i64) -> rusqlite::Result<i64> {
    let (provider, identity, ext_id) = match &user.external {
        Some(e) => (Some(e.provider), Some(e.identity), e.id),
        None => (None, None, None),
    };
    conn.prepare_cached(
        "INSERT INTO users (login, name, email, active, password_hash, must_change_password, \
         external_provider, external_identity, external_id, created_at, updated_at) \
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )?
    .execute(params![
        user.login,
        user.name,
        user.email,
        user.password_hash,
        user.must_change_password,
        provider,
        identity,
        ext_id,
        now
    ])?;
    let id = conn.last_insert_rowid();
    add_to_default_group(conn, id)?;
    Ok(id)
}

fn add_to_default_group(conn: &Connection, user_id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO group_members (group_id, user_id) \
         SELECT id, ?1 FROM groups WHERE is_default = 1",
    )?
    .execute([user_id])?;
    Ok(())
}

pub fn find_by_login(conn: &Connection, login: &str) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE login = ?1"
    ))?
    .query_row([login], from_row)
    .optional()
}

/// The first of `candidates` that no account has as its login, if any. A failed lookup is an
/// error, never taken for a login in use.
pub fn first_free_login(
    conn: &Connection,
    candidates: impl IntoIterator<Item = String>,
) -> rusqlite::Result<Option<String>> {
    let mut taken = conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE login = ?1)")?;
    for candidate in candidates {
        if !taken.query_row([&candidate], |r| r.get::<_, bool>(0))? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

pub fn find_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = ?1"
    ))?
    .query_row([id], from_row)
    .optional()
}

/// The stored password hash of a local user.
pub fn password_hash(conn: &Connection, id: i64) -> rusqlite::Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT password_hash FROM users WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// Another user (not `except_id`) already using this email, ignoring case.
pub fn email_owner(
    conn: &Connection,
    email: &str,
    except_id: Option<i64>,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT login FROM users WHERE email = ?1 COLLATE NOCASE AND id IS NOT ?2 LIMIT 1",
    )?
    .query_row(params![email, except_id], |r| r.get(0))
    .optional()
}

const EXTERNAL_IDENTITY_HOLDER: &str = "SELECT login FROM users WHERE external_provider = ?1 \
     AND (external_identity = ?2 COLLATE NOCASE OR external_id = ?3) \
     AND id IS NOT ?4 LIMIT 1";

/// The login of a user other than `except_id` linked to this external identity: the same
/// username ignoring case (GitLab usernames are unique regardless of case), or the same
/// numeric id when one is given.
pub fn external_identity_holder(
    conn: &Connection,
    provider: &str,
    username: &str,
    external_id: Option<&str>,
    except_id: Option<i64>,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(EXTERNAL_IDENTITY_HOLDER)?
        .query_row(params![provider, username, external_id, except_id], |r| {
            r.get(0)
        })
        .optional()
}

/// The SQL of [`find_by_external_id`] (index `users_external_id`).
const BY_EXTERNAL_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE external_provider = ?1 AND external_id = ?2"
);

/// The account linked to this external identity by the provider's numeric id.
pub fn find_by_external_id(
    conn: &Connection,
    provider: &str,
    external_id: &str,
) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(BY_EXTERNAL_ID)?
        .query_row(params![provider, external_id], from_row)
        .optional()
}

/// The SQL of [`find_by_external_identity`] (index `users_external_identity`).
const BY_EXTERNAL_IDENTITY: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE external_provider = ?1 AND external_identity = ?2 COLLATE NOCASE \
     AND external_id IS NOT ?3 ORDER BY external_id IS NOT NULL, id LIMIT 1"
);

/// An account of this provider whose external identity (username) is `identity`, ignoring
/// case, and whose numeric id is not `other_than_id`: one with no id yet (pre-provisioned)
/// first, else the oldest.
pub fn find_by_external_identity(
    conn: &Connection,
    provider: &str,
    identity: &str,
    other_than_id: &str,
) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(BY_EXTERNAL_IDENTITY)?
        .query_row(params![provider, identity, other_than_id], from_row)
        .optional()
}

/// The ids of up to `limit` users whose email is `email`, ignoring case.
pub fn email_holders(conn: &Connection, email: &str, limit: i64) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached("SELECT id FROM users WHERE email = ?1 COLLATE NOCASE LIMIT ?2")?
        .query_map(params![email, limit], |r| r.get(0))?
        .collect()
}

/// Writes the profile an external provider gives an account, linking it to the provider's
/// numeric id.
pub fn set_external_profile(
    conn: &Connection,
    id: i64,
    profile: &ExternalProfile<'_>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET name = ?2, email = ?3, external_identity = ?4, external_id = ?5, \
         updated_at = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id,
        profile.name,
        profile.email,
        profile.identity,
        profile.external_id,
        now
    ])?;
    Ok(())
}

/// See [`set_external_profile`].
pub struct ExternalProfile<'a> {
    pub name: &'a str,
    pub email: Option<&'a str>,
    pub identity: &'a str,
    pub external_id: &'a str,
}

pub fn update_profile(
    conn: &Connection,
    id: i64,
    name: &str,
    email: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE users SET name = ?2, email = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, name, email, now])?;
    Ok(())
}

/// Sets a user's name alone: setting the unchanged email with it would rewrite its index entry
/// (SQLite rewrites the entries of every indexed column named in a `SET` list).
pub fn set_name(conn: &Connection, id: i64, name: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE users SET name = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id, name, now])?;
    Ok(())
}

pub fn set_password(
    conn: &Connection,
    id: i64,
    hash: &str,
    must_change: bool,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET password_hash = ?2, must_change_password = ?3, updated_at = ?4 \
         WHERE id = ?1",
    )?
    .execute(params![id, hash, must_change, now])?;
    Ok(())
}

/// Links a user to an external identity (GitLab username); the numeric id is cleared so the
/// next sign-in of that username links it.
pub fn set_external_identity(
    conn: &Connection,
    id: i64,
    provider: &str,
    identity: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET external_provider = ?2, external_identity = ?3, external_id = NULL, \
         password_hash = NULL, must_change_password = 0, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, provider, identity, now])?;
    Ok(())
}

/// Unlinks a user from its external identity (a GitLab account made local again).
pub fn clear_external_identity(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET external_provider = NULL, external_identity = NULL, \
         external_id = NULL WHERE id = ?1",
    )?
    .execute([id])?;
    Ok(())
}

/// Deactivates: ends sessions and tokens, removes group memberships and direct permissions.
/// Call inside a transaction.
pub fn deactivate(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<Removed> {
    let sessions = super::sessions::delete_for_user(conn, id)?;
    let tokens = super::tokens::delete_for_user(conn, id)?;
    let memberships = conn
        .prepare_cached("DELETE FROM group_members WHERE user_id = ?1")?
        .execute([id])?;
    let permissions = conn
        .prepare_cached("DELETE FROM user_permissions WHERE user_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("UPDATE users SET active = 0, updated_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(Removed {
        sessions,
        tokens,
        memberships,
        permissions,
    })
}

/// What a deactivation took from the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub sessions: usize,
    pub tokens: usize,
    pub memberships: usize,
    pub permissions: usize,
}

/// Reactivates a deactivated user, back in the default group only.
pub fn reactivate(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE users SET active = 1, updated_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    add_to_default_group(conn, id)
}

pub fn touch_last_connection(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE users SET last_connection_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

/// How many users there are.
#[cfg(test)]
pub fn count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM users")?
        .query_row([], |r| r.get(0))
}

/// A user's `updated_at` and `last_connection_at`, and how many changes `user_changes` holds
/// for it: what tells whether a write touched the row.
#[cfg(test)]
pub fn write_marks(conn: &Connection, id: i64) -> rusqlite::Result<(i64, i64, i64)> {
    conn.prepare_cached(
        "SELECT updated_at, last_connection_at, \
         (SELECT count(*) FROM user_changes WHERE user_id = ?1) FROM users WHERE id = ?1",
    )?
    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern containing `text`.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Names of the groups a user belongs to, sorted.
pub fn group_names(conn: &Connection, id: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id \
         WHERE m.user_id = ?1 ORDER BY g.name",
    )?;
    let names = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

pub fn tokens_count(conn: &Connection, id: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM user_tokens WHERE user_id = ?1")?
        .query_row([id], |r| r.get(0))
}

/// Names of the groups of each of these users, sorted: one query for a page of users.
/// Users in no group are absent.
pub fn group_names_of(
    conn: &Connection,
    ids: &[i64],
) -> rusqlite::Result<HashMap<i64, Vec<String>>> {
    let mut names: HashMap<i64, Vec<String>> = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(names);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT m.user_id, g.name FROM group_members m JOIN groups g ON g.id = m.group_id \
         WHERE m.user_id IN (SELECT value FROM json_each(?1)) ORDER BY m.user_id, g.name",
    )?;
    let mut rows = stmt.query([super::id_list(ids)])?;
    while let Some(row) = rows.next()? {
        names.entry(row.get(0)?).or_default().push(row.get(1)?);
    }
    Ok(names)
}

/// How many API tokens each of these users has: one query for a page of users. Users without
/// tokens are absent.
pub fn tokens_counts(conn: &Connection, ids: &[i64]) -> rusqlite::Result<HashMap<i64, i64>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, count(*) FROM user_tokens \
         WHERE user_id IN (SELECT value FROM json_each(?1)) GROUP BY user_id",
    )?;
    let counts = stmt
        .query_map([super::id_list(ids)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{test_db, DEFAULT_GROUP};

    fn new_local<'a>(login: &'a str, email: Option<&'a str>) -> NewUser<'a> {
        NewUser {
            login,
            name: "Some One",
            email,
            password_hash: Some("x"),
            must_change_password: false,
            external: None,
        }
    }

    #[test]
    fn new_user_is_in_default_group() {
        let conn = test_db();
        let id = create(&conn, &new_local("ann", None), 5).unwrap();
        assert_eq!(group_names(&conn, id).unwrap(), vec![DEFAULT_GROUP]);
        let user = find_by_id(&conn, id).unwrap().unwrap();
        assert!(user.local && user.active);
        assert_eq!(user.provider(), LOCAL_PROVIDER);
    }

    #[test]
    fn the_first_free_login_skips_those_taken_and_fails_loudly() {
        let conn = test_db();
        for login in ["ann", "ann1"] {
            create(&conn, &new_local(login, None), 5).unwrap();
        }
        let candidates = || ["ann", "ann1", "ann2", "ann3"].map(String::from);
        assert_eq!(
            first_free_login(&conn, candidates()).unwrap().as_deref(),
            Some("ann2")
        );
        assert_eq!(
            first_free_login(&conn, candidates().into_iter().take(2)).unwrap(),
            None
        );
        // A store that cannot answer is an error, not a login in use.
        conn.execute_batch("ALTER TABLE users RENAME TO users_gone")
            .unwrap();
        assert!(first_free_login(&conn, candidates()).is_err());
    }

    #[test]
    fn deactivation_removes_memberships_sessions_tokens() {
        let conn = test_db();
        let id = create(&conn, &new_local("bob", None), 5).unwrap();
        crate::db::sessions::create(&conn, id, 5).unwrap();
        crate::db::tokens::create(&conn, id, "t", None, 5).unwrap();
        deactivate(&conn, id, 6).unwrap();
        assert!(group_names(&conn, id).unwrap().is_empty());
        assert_eq!(tokens_count(&conn, id).unwrap(), 0);
        let sessions: i64 = conn
            .query_row(
                "SELECT count(*) FROM sessions WHERE user_id=?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sessions, 0);
        reactivate(&conn, id, 7).unwrap();
        assert_eq!(group_names(&conn, id).unwrap(), vec![DEFAULT_GROUP]);
    }

    #[test]
    fn batched_groups_and_token_counts_equal_the_per_user_answers() {
        let conn = test_db();
        let ann = create(&conn, &new_local("ann", None), 5).unwrap();
        let bob = create(&conn, &new_local("bob", None), 5).unwrap();
        let admin = find_by_login(&conn, "admin").unwrap().unwrap().id;
        let devs = crate::db::groups::create(&conn, "devs", "", 5).unwrap();
        crate::db::groups::add_member(&conn, devs, ann).unwrap();
        crate::db::tokens::create(&conn, ann, "a", None, 5).unwrap();
        crate::db::tokens::create(&conn, ann, "b", None, 5).unwrap();
        crate::db::tokens::create(&conn, admin, "c", None, 5).unwrap();
        deactivate(&conn, bob, 6).unwrap();
        let ids = [ann, bob, admin, 999];
        let groups = group_names_of(&conn, &ids).unwrap();
        let tokens = tokens_counts(&conn, &ids).unwrap();
        for id in ids {
            assert_eq!(
                groups.get(&id).cloned().unwrap_or_default(),
                group_names(&conn, id).unwrap()
            );
            assert_eq!(
                tokens.get(&id).copied().unwrap_or(0),
                tokens_count(&conn, id).unwrap()
            );
        }
        assert_eq!(groups[&ann], vec!["devs", DEFAULT_GROUP]);
        assert_eq!(tokens[&ann], 2);
        assert!(group_names_of(&conn, &[]).unwrap().is_empty());
    }

    #[test]
    fn external_identity_holder_matches_the_username_ignoring_case_or_the_id() {
        let conn = test_db();
        let gl = create(
            &conn,
            &NewUser {
                external: Some(External {
                    provider: "gitlab",
                    identity: "Ann.GL",
                    id: Some("42"),
                }),
                password_hash: None,
                ..new_local("ann", None)
            },
            5,
        )
        .unwrap();
        create(&conn, &new_local("bob", None), 5).unwrap();
        let holder = |username, id, except| {
            external_identity_holder(&conn, "gitlab", username, id, except).unwrap()
        };
        assert_eq!(holder("ann.gl", None, None).as_deref(), Some("ann"));
        assert_eq!(holder("renamed", Some("42"), None).as_deref(), Some("ann"));
        assert_eq!(holder("ann.gl", Some("42"), Some(gl)), None, "itself");
        assert_eq!(holder("renamed", Some("43"), None), None);
        let plan = crate::db::query_plan(&conn, EXTERNAL_IDENTITY_HOLDER);
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN users")),
            "read through the indexes: {plan:?}"
        );
        // A local login is no GitLab identity.
        assert_eq!(holder("bob", None, None), None);
        assert_eq!(
            external_identity_holder(&conn, "other", "ann.gl", None, None).unwrap(),
            None
        );
    }

    #[test]
    fn accounts_are_found_through_indexes() {
        let conn = test_db();
        for sql in [BY_EXTERNAL_ID, BY_EXTERNAL_IDENTITY] {
            let plan = crate::db::query_plan(&conn, sql);
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN users")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn email_owner_ignores_case_and_self() {
        let conn = test_db();
        let id = create(&conn, &new_local("erin", Some("erin@x.org")), 5).unwrap();
        assert_eq!(
            email_owner(&conn, "ERIN@x.org", None).unwrap().as_deref(),
            Some("erin")
        );
        assert_eq!(email_owner(&conn, "erin@x.org", Some(id)).unwrap(), None);
    }
}
