//! The `sign_in_refusals` table: the reason of a refused GitLab sign-in, kept for the refusal
//! page under a random key its cookie names. (Sign-ins in progress are kept in memory, see
//! `signin::pending`.)

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};

/// How long a refusal reason waits to be shown, seconds.
pub const REFUSAL_TTL_SECS: i64 = 300;

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
    fn purges_read_only_expired_rows_through_indexes() {
        let conn = crate::db::test_db();
        let sql = "DELETE FROM sign_in_refusals WHERE created_at <= ?1";
        let plan = crate::db::query_plan(&conn, sql);
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{plan:?}"
        );
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
