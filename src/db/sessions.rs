//! The `sessions` table: browser sessions stored by the SHA-256 of the cookie value, each with
//! its CSRF token and a one-shot flash message.

use crate::crypto;
use rusqlite::{params, Connection, OptionalExtension};

/// Hard limit of a session's life, whatever its activity: 90 days.
pub const MAX_AGE_SECS: i64 = 90 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id_hash: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub flash: Option<String>,
}

/// Creates a session; returns (cookie value, session). The value itself is never stored.
pub fn create(conn: &Connection, user_id: i64, now: i64) -> rusqlite::Result<(String, Session)> {
    let value = crypto::random_hex(32);
    let session = Session {
        id_hash: crypto::sha256_hex(&value),
        user_id,
        csrf_token: crypto::random_hex(16),
        created_at: now,
        last_seen_at: now,
        flash: None,
    };
    conn.prepare_cached(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![session.id_hash, user_id, session.csrf_token, now])?;
    Ok((value, session))
}

/// Whether a session is still valid at `now` with the given idle timeout.
pub fn is_live(session: &Session, now: i64, idle_timeout_secs: i64) -> bool {
    now - session.last_seen_at < idle_timeout_secs && now - session.created_at < MAX_AGE_SECS
}

/// Whether a cookie value has the shape of one labgate made (64 hex characters).
pub fn well_formed(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the live session of a cookie value; expired ones are deleted and not returned.
pub fn find(
    conn: &Connection,
    value: &str,
    now: i64,
    idle_timeout_secs: i64,
) -> rusqlite::Result<Option<Session>> {
    if !well_formed(value) {
        return Ok(None);
    }
    find_by_hash(conn, &crypto::sha256_hex(value), now, idle_timeout_secs)
}

/// [`find`] by the stored hash of the cookie value.
pub fn find_by_hash(
    conn: &Connection,
    id_hash: &str,
    now: i64,
    idle_timeout_secs: i64,
) -> rusqlite::Result<Option<Session>> {
    let found = conn
        .prepare_cached(
            "SELECT id_hash, user_id, csrf_token, created_at, last_seen_at, flash \
             FROM sessions WHERE id_hash = ?1",
        )?
        .query_row([id_hash], |r| {
            Ok(Session {
                id_hash: r.get(0)?,
                user_id: r.get(1)?,
                csrf_token: r.get(2)?,
                created_at: r.get(3)?,
                last_seen_at: r.get(4)?,
                flash: r.get(5)?,
            })
        })
        .optional()?;
    match found {
        Some(s) if is_live(&s, now, idle_timeout_secs) => Ok(Some(s)),
        Some(s) => {
            delete(conn, &s.id_hash)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Records activity, at most once a minute to spare writes, in the row and in `session`.
///
/// Not counted in [`crate::db::generation`]: it changes only this session's `last_seen_at`,
/// which the caller's copy of the session now carries too.
pub fn touch(conn: &Connection, session: &mut Session, now: i64) -> rusqlite::Result<()> {
    if now - session.last_seen_at >= 60 {
        crate::db::uncounted_write(|| {
            conn.prepare_cached("UPDATE sessions SET last_seen_at = ?2 WHERE id_hash = ?1")?
                .execute(params![session.id_hash, now])
        })?;
        session.last_seen_at = now;
    }
    Ok(())
}

pub fn delete(conn: &Connection, id_hash: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

/// Ends every session of a user; returns how many there were.
pub fn delete_for_user(conn: &Connection, user_id: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user_id])
}

/// Ends every other session of a user (after a password change); returns how many.
pub fn delete_others(conn: &Connection, user_id: i64, keep_hash: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id_hash != ?2")?
        .execute(params![user_id, keep_hash])
}

pub fn set_flash(conn: &Connection, id_hash: &str, message: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sessions SET flash = ?2 WHERE id_hash = ?1")?
        .execute(params![id_hash, message])?;
    Ok(())
}

pub fn clear_flash(conn: &Connection, id_hash: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE sessions SET flash = NULL WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

/// Deletes sessions unused for the idle timeout. A session past its hard limit is deleted when
/// it is next presented ([`find`]), else by this purge once unused for the idle timeout, which
/// comes: its last use can no longer move. (Until then it is stored, and refused.)
pub fn purge_expired(
    conn: &Connection,
    now: i64,
    idle_timeout_secs: i64,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(PURGE_EXPIRED)?
        .execute(params![now, idle_timeout_secs])
}

/// Served by the index on `last_seen_at`: only expired rows are read.
const PURGE_EXPIRED: &str = "DELETE FROM sessions WHERE last_seen_at <= ?1 - ?2";

/// How many sessions there are: of one user, or of all users with `None`.
#[cfg(test)]
pub fn count(conn: &Connection, user_id: Option<i64>) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM sessions WHERE ?1 IS NULL OR user_id = ?1")?
        .query_row([user_id], |r| r.get(0))
}

/// The stored `last_seen_at` of a session, `None` when there is no such session.
#[cfg(test)]
pub fn last_seen_at(conn: &Connection, id_hash: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT last_seen_at FROM sessions WHERE id_hash = ?1")?
        .query_row([id_hash], |r| r.get(0))
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;

    const IDLE: i64 = 3 * 24 * 3600;

    #[test]
    fn cookie_value_is_not_stored() {
        let conn = test_db();
        let (value, s) = create(&conn, 1, 1_000).unwrap();
        assert_ne!(s.id_hash, value);
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM sessions WHERE id_hash = ?1",
                [&value],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0);
        assert_eq!(
            find(&conn, &value, 1_001, IDLE).unwrap().unwrap().user_id,
            1
        );
    }

    #[test]
    fn session_expires_after_idle_timeout() {
        let conn = test_db();
        let (value, _) = create(&conn, 1, 1_000).unwrap();
        assert!(find(&conn, &value, 1_000 + IDLE - 1, IDLE)
            .unwrap()
            .is_some());
        assert!(find(&conn, &value, 1_000 + IDLE, IDLE).unwrap().is_none());
        // An expired session is gone for good.
        assert!(find(&conn, &value, 1_001, IDLE).unwrap().is_none());
    }

    #[test]
    fn activity_extends_idle_life_but_not_hard_limit() {
        let conn = test_db();
        let (value, _) = create(&conn, 1, 0).unwrap();
        let mut now = 0;
        while now + IDLE / 2 < MAX_AGE_SECS {
            now += IDLE / 2;
            let mut session = find(&conn, &value, now, IDLE).unwrap().expect("kept alive");
            touch(&conn, &mut session, now).unwrap();
            assert_eq!(session.last_seen_at, now);
        }
        assert!(find(&conn, &value, MAX_AGE_SECS, IDLE).unwrap().is_none());
    }

    #[test]
    fn purge_removes_only_expired_sessions() {
        let conn = test_db();
        create(&conn, 1, 0).unwrap();
        let (live, _) = create(&conn, 1, IDLE).unwrap();
        assert_eq!(purge_expired(&conn, IDLE + 1, IDLE).unwrap(), 1);
        assert!(find(&conn, &live, IDLE + 1, IDLE).unwrap().is_some());
    }

    #[test]
    fn a_session_past_its_hard_limit_is_refused_at_once_and_purged_once_idle() {
        let conn = test_db();
        // Used now and then until just before its hard limit.
        let last_use = MAX_AGE_SECS - 1;
        let used_until = |value: &str| {
            let mut at = 0;
            while at < last_use {
                // Steps of half the idle timeout, the last one (at least a minute, the least
                // `touch` writes) ending at `last_use`.
                at += IDLE / 2;
                if at > last_use - 60 {
                    at = last_use;
                }
                let mut session = find(&conn, value, at, IDLE).unwrap().expect("in use");
                touch(&conn, &mut session, at).unwrap();
                assert_eq!(session.last_seen_at, at);
            }
        };
        let (old, _) = create(&conn, 1, 0).unwrap();
        used_until(&old);
        // Past the limit and never presented again: stored, until idle from its last use on.
        assert_eq!(purge_expired(&conn, MAX_AGE_SECS, IDLE).unwrap(), 0);
        assert_eq!(purge_expired(&conn, last_use + IDLE - 1, IDLE).unwrap(), 0);
        assert_eq!(purge_expired(&conn, last_use + IDLE, IDLE).unwrap(), 1);
        assert_eq!(count(&conn, None).unwrap(), 0);
        // Presented past the limit: refused and deleted at once.
        let (other, _) = create(&conn, 1, 0).unwrap();
        used_until(&other);
        assert!(find(&conn, &other, MAX_AGE_SECS, IDLE).unwrap().is_none());
        assert_eq!(count(&conn, None).unwrap(), 0);
    }

    #[test]
    fn purge_reads_only_expired_sessions_through_indexes() {
        let conn = test_db();
        let plan = crate::db::query_plan(&conn, PURGE_EXPIRED);
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN sessions")),
            "{plan:?}"
        );
    }

    #[test]
    fn malformed_cookie_values_find_nothing() {
        let conn = test_db();
        assert!(find(&conn, "", 1, IDLE).unwrap().is_none());
        assert!(find(&conn, &"z".repeat(64), 1, IDLE).unwrap().is_none());
    }
}
