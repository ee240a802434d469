//! The `oauth_states` and `sign_in_refusals` tables: a GitLab sign-in in progress (state, PKCE
//! verifier, return path, bound to the browser), and the reason of a refused one.

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};

/// How long a started sign-in may take to come back, seconds.
pub const STATE_TTL_SECS: i64 = 600;
/// Most pending sign-ins kept: past this the oldest are dropped (a flood of starts from many
/// addresses then shortens how long a sign-in may take, instead of growing the file).
pub const MAX_PENDING: i64 = 100_000;
/// How long a refusal reason waits to be shown, seconds.
pub const REFUSAL_TTL_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    pub browser_hash: String,
    pub verifier: String,
    pub return_to: String,
    pub created_at: i64,
}

/// Records a started sign-in; `state` and `browser` are stored only as hashes.
pub fn insert_state(
    conn: &Connection,
    state: &str,
    browser: &str,
    verifier: &str,
    return_to: &str,
    now: i64,
) -> rusqlite::Result<()> {
    // One transaction for the three statements: one lock and one commit, not three.
    let tx = if conn.is_autocommit() {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    };
    conn.prepare_cached("DELETE FROM oauth_states WHERE created_at <= ?1")?
        .execute([now - STATE_TTL_SECS])?;
    conn.prepare_cached(
        "INSERT INTO oauth_states (state_hash, browser_hash, verifier, return_to, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        crypto::sha256_hex(state),
        crypto::sha256_hex(browser),
        verifier,
        return_to,
        now
    ])?;
    // Row ids grow with each insert, so the oldest rows are the lowest ids.
    conn.prepare_cached(
        "DELETE FROM oauth_states WHERE rowid <= (SELECT max(rowid) FROM oauth_states) - ?1",
    )?
    .execute([MAX_PENDING])?;
    if let Some(tx) = tx {
        tx.commit()?;
    }
    Ok(())
}

/// Takes a state out (single use): it is deleted whether or not it turns out valid.
pub fn take_state(conn: &Connection, state: &str) -> rusqlite::Result<Option<PendingSignIn>> {
    conn.prepare_cached(
        "DELETE FROM oauth_states WHERE state_hash = ?1 \
         RETURNING browser_hash, verifier, return_to, created_at",
    )?
    .query_row([crypto::sha256_hex(state)], |r| {
        Ok(PendingSignIn {
            browser_hash: r.get(0)?,
            verifier: r.get(1)?,
            return_to: r.get(2)?,
            created_at: r.get(3)?,
        })
    })
    .optional()
}

/// Stores a refusal reason (or none, for the generic text) under a random key.
pub fn insert_refusal(
    conn: &Connection,
    key: &str,
    reason: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sign_in_refusals WHERE created_at <= ?1")?
        .execute([now - REFUSAL_TTL_SECS])?;
    conn.prepare_cached(
        "INSERT INTO sign_in_refusals (id_hash, reason, created_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![crypto::sha256_hex(key), reason, now])?;
    Ok(())
}

/// Takes the refusal reason stored under a key (single use); `Some(None)` is a generic refusal.
pub fn take_refusal(
    conn: &Connection,
    key: &str,
    now: i64,
) -> rusqlite::Result<Option<Option<String>>> {
    let found: Option<(Option<String>, i64)> = conn
        .prepare_cached(
            "DELETE FROM sign_in_refusals WHERE id_hash = ?1 RETURNING reason, created_at",
        )?
        .query_row([crypto::sha256_hex(key)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found
        .filter(|(_, at)| now - at < REFUSAL_TTL_SECS)
        .map(|(reason, _)| reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_single_use_and_hashed() {
        let conn = crate::db::test_db();
        insert_state(&conn, "st", "br", "ver", "/x", 100).unwrap();
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM oauth_states WHERE state_hash = 'st'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0, "the raw state is not stored");
        let p = take_state(&conn, "st").unwrap().unwrap();
        assert_eq!(p.browser_hash, crypto::sha256_hex("br"));
        assert_eq!((p.verifier.as_str(), p.return_to.as_str()), ("ver", "/x"));
        assert!(take_state(&conn, "st").unwrap().is_none());
    }

    #[test]
    fn old_states_are_purged() {
        let conn = crate::db::test_db();
        insert_state(&conn, "old", "b", "v", "/", 0).unwrap();
        insert_state(&conn, "new", "b", "v", "/", STATE_TTL_SECS).unwrap();
        assert!(take_state(&conn, "old").unwrap().is_none());
    }

    #[test]
    fn pending_sign_ins_are_capped_dropping_the_oldest() {
        let conn = crate::db::test_db();
        insert_state(&conn, "first", "b", "v", "/", 100).unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO oauth_states (state_hash, browser_hash, verifier, return_to, created_at) \
             SELECT 'filler' || i, 'b', 'v', '/', 100 FROM n",
            [MAX_PENDING],
        )
        .unwrap();
        insert_state(&conn, "last", "b", "v", "/", 100).unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM oauth_states", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, MAX_PENDING);
        assert!(
            take_state(&conn, "first").unwrap().is_none(),
            "oldest dropped"
        );
        assert!(take_state(&conn, "last").unwrap().is_some(), "newest kept");
    }

    #[test]
    fn purges_read_only_expired_rows_through_indexes() {
        let conn = crate::db::test_db();
        for table in ["oauth_states", "sign_in_refusals"] {
            let sql = format!("DELETE FROM {table} WHERE created_at <= ?1");
            let plan = crate::db::query_plan(&conn, &sql);
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{table}: {plan:?}"
            );
        }
    }

    #[test]
    fn refusal_is_single_use_and_expires() {
        let conn = crate::db::test_db();
        insert_refusal(&conn, "k", Some("why"), 10).unwrap();
        assert_eq!(
            take_refusal(&conn, "k", 11).unwrap(),
            Some(Some("why".into()))
        );
        assert_eq!(take_refusal(&conn, "k", 11).unwrap(), None);
        insert_refusal(&conn, "g", None, 10).unwrap();
        assert_eq!(
            take_refusal(&conn, "g", 10 + REFUSAL_TTL_SECS).unwrap(),
            None
        );
    }
}
