//! The tables of the revalidation of GitLab users: the sealed refresh token of each GitLab
//! user's last sign-in (`gitlab_refresh_tokens`), the users GitLab no longer admits, whose API
//! tokens are refused until they sign in again (`gitlab_access_holds`), who is revalidated (the
//! candidates), and the record of the runs (`gitlab_revalidation_runs`).

use rusqlite::{params, Connection, OptionalExtension};

/// Keeps the sealed refresh token of a user's last sign-in or revalidation, replacing the one
/// before.
pub fn store_refresh_token(
    conn: &Connection,
    user_id: i64,
    sealed: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let replace = "INSERT OR REPLACE INTO gitlab_refresh_tokens (user_id, sealed, stored_at) \
                   VALUES (?1, ?2, ?3)";
    conn.prepare_cached(replace)?
        .execute(params![user_id, sealed, now])
        .map(drop)
}

/// The sealed refresh token of a user, if one is kept.
pub fn refresh_token(conn: &Connection, user_id: i64) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT sealed FROM gitlab_refresh_tokens WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()
}

pub fn delete_refresh_token(conn: &Connection, user_id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM gitlab_refresh_tokens WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Holds a user's access: its API tokens are refused until [`release`].
pub fn hold(conn: &Connection, user_id: i64, reason: &str, now: i64) -> rusqlite::Result<()> {
    let replace = "INSERT OR REPLACE INTO gitlab_access_holds (user_id, held_at, reason) \
                   VALUES (?1, ?2, ?3)";
    conn.prepare_cached(replace)?
        .execute(params![user_id, now, reason])
        .map(drop)
}

/// Gives a held user's access back (a successful sign-in); whether it was held.
pub fn release(conn: &Connection, user_id: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM gitlab_access_holds WHERE user_id = ?1")?
        .execute([user_id])?
        > 0)
}

/// Since when and why a user's access is held, if it is.
pub fn hold_of(conn: &Connection, user_id: i64) -> rusqlite::Result<Option<(i64, String)>> {
    conn.prepare_cached("SELECT held_at, reason FROM gitlab_access_holds WHERE user_id = ?1")?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// A GitLab user to revalidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub user_id: i64,
    pub login: String,
    /// GitLab's numeric id, as stored on the account.
    pub gitlab_id: String,
    /// The sealed refresh token, when one is kept.
    pub sealed: Option<String>,
}

/// The SQL of [`candidates`]: active GitLab accounts not held, with a session that is still
/// live (seen within the idle timeout, younger than the hard limit) or an API token used since
/// a time; each with its sealed refresh token, if any. Reads the sessions by their last-seen
/// index and the tokens of each user.
const CANDIDATES: &str = "\
    SELECT u.id, u.login, u.external_id, r.sealed FROM users u \
    LEFT JOIN gitlab_refresh_tokens r ON r.user_id = u.id \
    WHERE u.external_provider = ?5 AND u.external_id IS NOT NULL AND u.active = 1 \
      AND NOT EXISTS (SELECT 1 FROM gitlab_access_holds h WHERE h.user_id = u.id) \
      AND (u.id IN (SELECT s.user_id FROM sessions s \
                    WHERE s.last_seen_at > ?1 AND s.created_at > ?2) \
           OR EXISTS (SELECT 1 FROM user_tokens t \
                      WHERE t.user_id = u.id AND t.last_connection_at >= ?3 \
                        AND (t.expires_at IS NULL OR t.expires_at > ?4))) \
    ORDER BY u.id";

/// The users of `provider` to revalidate at `now`: a session seen after `seen_after` and
/// created after `created_after` (the session is live), or an unexpired API token used at or
/// after `token_used_since`.
pub fn candidates(
    conn: &Connection,
    provider: &str,
    seen_after: i64,
    created_after: i64,
    token_used_since: i64,
    now: i64,
) -> rusqlite::Result<Vec<Candidate>> {
    let mut stmt = conn.prepare_cached(CANDIDATES)?;
    let rows = stmt
        .query_map(
            params![seen_after, created_after, token_used_since, now, provider],
            |r| {
                Ok(Candidate {
                    user_id: r.get(0)?,
                    login: r.get(1)?,
                    gitlab_id: r.get(2)?,
                    sealed: r.get(3)?,
                })
            },
        )?
        .collect();
    rows
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Run {
    pub id: i64,
    /// `SCHEDULE` or `MANUAL`.
    pub trigger: String,
    /// `RUNNING`, `SUCCESS` or `FAILED`.
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub users_checked: i64,
    pub users_updated: i64,
    pub users_cut_off: i64,
    pub sessions_ended: i64,
    /// The users cut off, as a JSON array of `{"login", "reason"}`.
    pub cut_off: String,
    pub error: Option<String>,
}

/// Runs kept: older ones are removed as new ones start.
pub const RUNS_KEPT: i64 = 50;

/// Records a run that starts; returns its id. Keeps the last [`RUNS_KEPT`] runs.
pub fn start_run(conn: &Connection, trigger: &str, now: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO gitlab_revalidation_runs (trigger, status, started_at) \
         VALUES (?1, 'RUNNING', ?2)",
    )?
    .execute(params![trigger, now])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("DELETE FROM gitlab_revalidation_runs WHERE id <= ?1 - ?2")?
        .execute([id, RUNS_KEPT])?;
    Ok(id)
}

/// Records how a run ended (`run.id` names it).
pub fn finish_run(conn: &Connection, run: &Run) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE gitlab_revalidation_runs SET status = ?2, finished_at = ?3, \
         users_checked = ?4, users_updated = ?5, users_cut_off = ?6, sessions_ended = ?7, \
         cut_off = ?8, error = ?9 WHERE id = ?1",
    )?
    .execute(params![
        run.id,
        run.status,
        run.finished_at,
        run.users_checked,
        run.users_updated,
        run.users_cut_off,
        run.sessions_ended,
        run.cut_off,
        run.error
    ])?;
    Ok(())
}

/// Runs still marked running when labgate starts were stopped with it: recorded as failed;
/// returns their ids and triggers.
pub fn fail_unfinished(
    conn: &Connection,
    reason: &str,
    now: i64,
) -> rusqlite::Result<Vec<(i64, String)>> {
    conn.prepare_cached(
        "UPDATE gitlab_revalidation_runs SET status = 'FAILED', finished_at = ?1, error = ?2 \
         WHERE status = 'RUNNING' RETURNING id, trigger",
    )?
    .query_map(params![now, reason], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The last `limit` runs, newest first. SQLite writes each row as a JSON object named like
/// the fields of [`Run`].
pub fn recent_runs(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<Run>> {
    let mut stmt = conn.prepare_cached(
        "SELECT json_object('id', id, 'trigger', trigger, 'status', status, \
         'started_at', started_at, 'finished_at', finished_at, 'users_checked', users_checked, \
         'users_updated', users_updated, 'users_cut_off', users_cut_off, \
         'sessions_ended', sessions_ended, 'cut_off', cut_off, 'error', error) \
         FROM gitlab_revalidation_runs ORDER BY id DESC LIMIT ?1",
    )?;
    let objects = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
    objects
        .map(|object| {
            serde_json::from_str(&object?).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, sessions, test_db, tokens, users};

    /// A GitLab account linked to `gitlab_id`, straight into the table.
    fn gitlab_user(conn: &Connection, login: &str, gitlab_id: &str) -> i64 {
        conn.execute(
            "INSERT INTO users (login, name, external_provider, external_identity, external_id, \
             created_at, updated_at) VALUES (?1, ?1, 'gitlab', ?1, ?2, 1, 1)",
            [login, gitlab_id],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn ids(found: Vec<Candidate>) -> Vec<i64> {
        found.into_iter().map(|c| c.user_id).collect()
    }

    #[test]
    fn candidates_are_active_unheld_gitlab_users_with_a_live_session_or_a_recent_token() {
        let conn = test_db();
        let with_session = gitlab_user(&conn, "ann", "1");
        let with_token = gitlab_user(&conn, "bob", "2");
        let idle = gitlab_user(&conn, "cid", "3");
        let held = gitlab_user(&conn, "dan", "4");
        let old_token = gitlab_user(&conn, "eve", "5");
        sessions::create(&conn, with_session, 1_000).unwrap();
        sessions::create(&conn, held, 1_000).unwrap();
        sessions::create(&conn, idle, 10).unwrap();
        tokens::create(&conn, with_token, "t", None, 1).unwrap();
        tokens::create(&conn, old_token, "t", None, 1).unwrap();
        conn.execute(
            "UPDATE user_tokens SET last_connection_at = CASE user_id WHEN ?1 THEN 900 ELSE 100 END",
            [with_token],
        )
        .unwrap();
        hold(&conn, held, "blocked", 1_000).unwrap();
        store_refresh_token(&conn, with_session, "lgs1:x:y", 1_000).unwrap();
        // A local user with a session is never a candidate.
        sessions::create(&conn, 1, 1_000).unwrap();
        let found = candidates(&conn, "gitlab", 500, 0, 800, 1_000).unwrap();
        assert_eq!(found[0].sealed.as_deref(), Some("lgs1:x:y"));
        assert_eq!(found[0].gitlab_id, "1");
        assert_eq!(ids(found), vec![with_session, with_token]);
        users::deactivate(&conn, with_token, 2).unwrap();
        assert_eq!(
            ids(candidates(&conn, "gitlab", 500, 0, 800, 1_000).unwrap()),
            vec![with_session]
        );
        assert!(
            candidates(&conn, "gitlab", 500, 1_000, 800, 1_000)
                .unwrap()
                .is_empty(),
            "a session past its hard limit"
        );
        assert!(release(&conn, held).unwrap());
        assert!(!release(&conn, held).unwrap());
        assert_eq!(
            ids(candidates(&conn, "gitlab", 500, 0, 800, 1_000).unwrap()),
            vec![with_session, held]
        );
    }

    #[test]
    fn deactivating_or_relinking_forgets_the_refresh_token_and_the_hold() {
        let mut conn = test_db();
        let ann = gitlab_user(&conn, "ann", "1");
        let keep = |conn: &Connection| {
            store_refresh_token(conn, ann, "sealed", 1).unwrap();
            hold(conn, ann, "blocked", 1).unwrap();
        };
        let kept = |conn: &Connection| {
            (
                refresh_token(conn, ann).unwrap().is_some(),
                hold_of(conn, ann).unwrap().is_some(),
            )
        };
        keep(&conn);
        users::set_external_profile(
            &conn,
            ann,
            &users::ExternalProfile {
                name: "Ann B",
                email: None,
                identity: "ann-b",
                external_id: "1",
            },
            2,
        )
        .unwrap();
        assert_eq!(kept(&conn), (true, true), "a profile refresh keeps them");
        users::set_external_identity(&conn, ann, "gitlab", "other", 3).unwrap();
        assert_eq!(kept(&conn), (false, false), "linked to another identity");
        keep(&conn);
        users::deactivate(&conn, ann, 4).unwrap();
        assert_eq!(kept(&conn), (false, false), "deactivated");
        users::reactivate(&conn, ann, 5).unwrap();
        keep(&conn);
        let tx = db::write_tx(&mut conn).unwrap();
        tx.execute("DELETE FROM users WHERE id = ?1", [ann])
            .unwrap();
        tx.commit().unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM gitlab_refresh_tokens) + \
                 (SELECT count(*) FROM gitlab_access_holds)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "deleted with the user");
    }

    #[test]
    fn runs_are_recorded_newest_first_and_the_last_fifty_kept() {
        let conn = test_db();
        for i in 0..55 {
            let id = start_run(&conn, "MANUAL", i).unwrap();
            if i < 54 {
                let run = Run {
                    id,
                    trigger: "MANUAL".into(),
                    status: "SUCCESS".into(),
                    started_at: i,
                    finished_at: Some(i + 1),
                    users_checked: 2,
                    users_updated: 1,
                    users_cut_off: 1,
                    sessions_ended: 3,
                    cut_off: r#"[{"login":"ann","reason":"blocked"}]"#.into(),
                    error: None,
                };
                finish_run(&conn, &run).unwrap();
            }
        }
        let runs = recent_runs(&conn, 100).unwrap();
        assert_eq!(runs.len(), 50);
        assert_eq!(
            (runs[0].started_at, runs[0].status.as_str()),
            (54, "RUNNING")
        );
        assert_eq!(runs[1].sessions_ended, 3);
        let last = runs[0].id;
        assert_eq!(
            fail_unfinished(&conn, "stopped", 60).unwrap(),
            vec![(last, "MANUAL".to_string())]
        );
        let runs = recent_runs(&conn, 1).unwrap();
        assert_eq!(
            (runs[0].status.as_str(), runs[0].error.as_deref()),
            ("FAILED", Some("stopped"))
        );
    }
}
