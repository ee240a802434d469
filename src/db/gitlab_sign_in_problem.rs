//! The `gitlab_sign_in_problem` table: the last GitLab sign-in that failed because of how
//! labgate is registered in GitLab, kept for the admins until a sign-in succeeds. The person
//! signing in only ever sees the generic refusal; what to change is an admin's business.

use rusqlite::{params, Connection, OptionalExtension};

/// A configuration problem seen at a real sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInProblem {
    pub seen_at: i64,
    /// What GitLab answered, as a log line (never a secret, code or token).
    pub problem: String,
    /// What the admin must change.
    pub fix: String,
}

/// Records `problem` as the latest one, replacing any before it.
pub fn record(conn: &Connection, problem: &str, fix: &str, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO gitlab_sign_in_problem (id, seen_at, problem, fix) VALUES (1, ?1, ?2, ?3) \
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, problem = excluded.problem, \
         fix = excluded.fix",
    )?
    .execute(params![now, problem, fix])?;
    Ok(())
}

/// Forgets the problem: a sign-in succeeded, so the registration works. Through the row's id:
/// a `DELETE` without `WHERE` empties the table by rewriting its page even when it holds no
/// row, a page written to the log by every sign-in for nothing.
pub fn clear(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM gitlab_sign_in_problem WHERE id = 1")?
        .execute([])?;
    Ok(())
}

/// The problem to show, if any.
pub fn latest(conn: &Connection) -> rusqlite::Result<Option<SignInProblem>> {
    conn.prepare_cached("SELECT seen_at, problem, fix FROM gitlab_sign_in_problem WHERE id = 1")?
        .query_row([], |r| {
            Ok(SignInProblem {
                seen_at: r.get(0)?,
                problem: r.get(1)?,
                fix: r.get(2)?,
            })
        })
        .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_problem_replaces_the_one_before_and_a_success_clears_it() {
        let conn = crate::db::test_db();
        assert_eq!(latest(&conn).unwrap(), None);
        record(&conn, "userinfo: HTTP 403", "tick openid", 10).unwrap();
        record(&conn, "token: invalid_client", "copy the secret", 20).unwrap();
        assert_eq!(
            latest(&conn).unwrap(),
            Some(SignInProblem {
                seen_at: 20,
                problem: "token: invalid_client".into(),
                fix: "copy the secret".into(),
            })
        );
        clear(&conn).unwrap();
        assert_eq!(latest(&conn).unwrap(), None);
    }
}
