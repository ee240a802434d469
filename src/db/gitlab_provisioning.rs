//! What automatic provisioning reads and writes: the groups it manages (`groups.gitlab_group_id`),
//! its mark on the accounts it read or deactivated (`gitlab_provisioned`, forgotten by triggers
//! when anything else changes an account's activity or link), the GitLab accounts and their
//! memberships as a run compares them, and the record of its runs (`gitlab_provisioning_runs`).

use rusqlite::{params, Connection, OptionalExtension, Row};

/// A group provisioning manages: the local group and the GitLab group it mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedGroup {
    pub id: i64,
    pub name: String,
    pub gitlab_id: i64,
}

/// Every group provisioning manages.
pub fn managed_groups(conn: &Connection) -> rusqlite::Result<Vec<ManagedGroup>> {
    conn.prepare_cached(
        "SELECT id, name, gitlab_group_id FROM groups WHERE gitlab_group_id IS NOT NULL",
    )?
    .query_map([], |r| {
        Ok(ManagedGroup {
            id: r.get(0)?,
            name: r.get(1)?,
            gitlab_id: r.get(2)?,
        })
    })?
    .collect()
}

/// The names of the groups made by hand (the default group among them): provisioning never
/// takes one of these names.
pub fn hand_made_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT name FROM groups WHERE gitlab_group_id IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// The id of the GitLab group a local group mirrors; `None` for a group made by hand.
pub fn gitlab_group_of(conn: &Connection, group_id: i64) -> rusqlite::Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT gitlab_group_id FROM groups WHERE id = ?1")?
        .query_row([group_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Creates a group managed by provisioning, mirroring the GitLab group `gitlab_id`.
pub fn create_managed_group(
    conn: &Connection,
    name: &str,
    gitlab_id: i64,
    now: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO groups (name, description, is_default, created_at, gitlab_group_id) \
         VALUES (?1, 'Managed by GitLab provisioning', 0, ?2, ?3)",
    )?
    .execute(params![name, now, gitlab_id])?;
    Ok(conn.last_insert_rowid())
}

/// Renames a managed group (its GitLab group was renamed or moved).
pub fn rename_managed_group(conn: &Connection, id: i64, name: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE groups SET name = ?2 WHERE id = ?1 AND gitlab_group_id IS NOT NULL",
    )?
    .execute(params![id, name])?;
    Ok(())
}

/// Deletes a managed group (its GitLab group is no longer read); never a group made by hand.
pub fn delete_managed_group(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM groups WHERE id = ?1 AND gitlab_group_id IS NOT NULL")?
        .execute([id])?;
    Ok(())
}

/// Removes the members of `provider` from group `id`; returns how many.
pub fn remove_gitlab_members(
    conn: &Connection,
    id: i64,
    provider: &str,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM group_members WHERE group_id = ?1 AND user_id IN \
         (SELECT id FROM users WHERE external_provider = ?2)",
    )?
    .execute(params![id, provider])
}

/// Provisioning's mark on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Read by the last applied run.
    Read,
    /// Deactivated by provisioning.
    Deactivated,
}

/// A GitLab account as a run compares it with what GitLab said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitlabAccount {
    pub id: i64,
    pub login: String,
    pub name: String,
    pub active: bool,
    /// GitLab's numeric user id, when linked.
    pub gitlab_id: Option<String>,
    /// The GitLab username.
    pub username: Option<String>,
    pub mark: Option<Mark>,
}

fn account_of(r: &Row<'_>) -> rusqlite::Result<GitlabAccount> {
    let deactivated: Option<bool> = r.get(6)?;
    Ok(GitlabAccount {
        id: r.get(0)?,
        login: r.get(1)?,
        name: r.get(2)?,
        active: r.get(3)?,
        gitlab_id: r.get(4)?,
        username: r.get(5)?,
        mark: deactivated.map(|d| if d { Mark::Deactivated } else { Mark::Read }),
    })
}

/// Every GitLab account, with provisioning's mark.
pub fn gitlab_accounts(conn: &Connection, provider: &str) -> rusqlite::Result<Vec<GitlabAccount>> {
    conn.prepare_cached(
        "SELECT u.id, u.login, u.name, u.active, u.external_id, u.external_identity, \
         p.deactivated FROM users u LEFT JOIN gitlab_provisioned p ON p.user_id = u.id \
         WHERE u.external_provider = ?1",
    )?
    .query_map([provider], account_of)?
    .collect()
}

/// Every membership of a GitLab account: (user id, group id).
pub fn gitlab_memberships(conn: &Connection, provider: &str) -> rusqlite::Result<Vec<(i64, i64)>> {
    conn.prepare_cached(
        "SELECT m.user_id, m.group_id FROM group_members m JOIN users u ON u.id = m.user_id \
         WHERE u.external_provider = ?1",
    )?
    .query_map([provider], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Sets provisioning's mark on an account. Call after the account's own changes, whose
/// triggers forget a mark.
pub fn set_mark(conn: &Connection, user_id: i64, mark: Mark) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO gitlab_provisioned (user_id, deactivated) VALUES (?1, ?2)",
    )?
    .execute(params![user_id, mark == Mark::Deactivated])?;
    Ok(())
}

/// Whether provisioning read this account in its last applied run (and nothing changed its
/// activity or link since).
pub fn is_read(conn: &Connection, user_id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM gitlab_provisioned WHERE user_id = ?1 AND deactivated = 0")?
        .exists([user_id])
}

/// What provisioning writes of an account: GitLab's name, username and numeric id.
pub struct Profile<'a> {
    pub name: &'a str,
    pub username: &'a str,
    pub gitlab_id: &'a str,
}

/// Links account `id` to its GitLab user and takes GitLab's name and username; the email is
/// left as it is (it comes from sign-in).
pub fn set_profile(conn: &Connection, id: i64, p: &Profile<'_>, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE users SET name = ?2, external_identity = ?3, external_id = ?4, updated_at = ?5 \
         WHERE id = ?1",
    )?
    .execute(params![id, p.name, p.username, p.gitlab_id, now])?;
    Ok(())
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: i64,
    /// `RUNNING`, `SUCCESS`, `FAILED` or `HELD`.
    pub status: String,
    /// `SCHEDULE`, `MANUAL` or `MODE_CHANGE`.
    pub trigger: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// `None` while running.
    pub finished_at: Option<i64>,
    pub groups_read: i64,
    pub users_read: i64,
    /// A JSON object of counts.
    pub changes: String,
    pub error: Option<String>,
    /// A held run: the JSON list of the accounts it would deactivate.
    pub held: Option<String>,
    /// A JSON list of texts.
    pub warnings: Option<String>,
}

/// Runs kept: older ones are removed as new ones are recorded.
pub const RUNS_KEPT: i64 = 50;

/// Records a run that starts, `RUNNING` until [`finish_run`] (or [`fail_unfinished`] at the
/// next start, when labgate stopped without finishing it), and forgets those beyond the last
/// [`RUNS_KEPT`]; returns its id.
pub fn start_run(
    conn: &Connection,
    trigger: &str,
    started_at: i64,
    changes: &str,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO gitlab_provisioning_runs (status, trigger, started_at, groups_read, \
         users_read, changes) VALUES ('RUNNING', ?1, ?2, 0, 0, ?3)",
    )?
    .execute(params![trigger, started_at, changes])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("DELETE FROM gitlab_provisioning_runs WHERE id <= ?1")?
        .execute([id - RUNS_KEPT])?;
    Ok(id)
}

/// Records how the run `run.id` ended (its trigger and start stay as [`start_run`] wrote them).
pub fn finish_run(conn: &Connection, run: &Run) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE gitlab_provisioning_runs SET status = ?2, finished_at = ?3, groups_read = ?4, \
         users_read = ?5, changes = ?6, error = ?7, held = ?8, warnings = ?9 WHERE id = ?1",
    )?
    .execute(params![
        run.id,
        run.status,
        run.finished_at,
        run.groups_read,
        run.users_read,
        run.changes,
        run.error,
        run.held,
        run.warnings
    ])?;
    Ok(())
}

/// Runs still marked running when labgate starts ended with the process that ran them:
/// recorded as failed with `reason`; returns their ids and triggers.
pub fn fail_unfinished(
    conn: &Connection,
    reason: &str,
    now: i64,
) -> rusqlite::Result<Vec<(i64, String)>> {
    conn.prepare_cached(
        "UPDATE gitlab_provisioning_runs SET status = 'FAILED', finished_at = ?1, error = ?2 \
         WHERE status = 'RUNNING' RETURNING id, trigger",
    )?
    .query_map(params![now, reason], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

macro_rules! run_columns {
    () => {
        "id, status, trigger, started_at, finished_at, groups_read, users_read, changes, error, \
         held, warnings"
    };
}

fn run_of(r: &Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        status: r.get(1)?,
        trigger: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        groups_read: r.get(5)?,
        users_read: r.get(6)?,
        changes: r.get(7)?,
        error: r.get(8)?,
        held: r.get(9)?,
        warnings: r.get(10)?,
    })
}

/// The newest run that has ended (the one going on, if any, is not).
pub fn last_finished_run(conn: &Connection) -> rusqlite::Result<Option<Run>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        run_columns!(),
        " FROM gitlab_provisioning_runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1"
    ))?
    .query_row([], run_of)
    .optional()
}

/// The last `limit` runs, newest first.
pub fn runs(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<Run>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        run_columns!(),
        " FROM gitlab_provisioning_runs ORDER BY id DESC LIMIT ?1"
    ))?
    .query_map([limit], run_of)?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;

    fn finished(id: i64, at: i64) -> Run {
        Run {
            id,
            status: "SUCCESS".into(),
            trigger: "SCHEDULE".into(),
            started_at: at,
            finished_at: Some(at + 1),
            groups_read: 3,
            users_read: 7,
            changes: "{}".into(),
            error: None,
            held: None,
            warnings: None,
        }
    }

    #[test]
    fn runs_are_recorded_when_they_start_and_the_last_fifty_kept() {
        let conn = test_db();
        for at in 0..55 {
            let id = start_run(&conn, "SCHEDULE", at, "{}").unwrap();
            if at < 54 {
                finish_run(&conn, &finished(id, at)).unwrap();
            }
        }
        let all = runs(&conn, 100).unwrap();
        assert_eq!(all.len(), 50);
        assert_eq!(
            (
                all[0].status.as_str(),
                all[0].started_at,
                all[0].finished_at
            ),
            ("RUNNING", 54, None)
        );
        assert_eq!((all[1].groups_read, all[1].finished_at), (3, Some(54)));
        assert_eq!(
            last_finished_run(&conn).unwrap().map(|r| r.started_at),
            Some(53),
            "the run going on has not ended"
        );
        let last = all[0].id;
        assert_eq!(
            fail_unfinished(&conn, "gone", 99).unwrap(),
            vec![(last, "SCHEDULE".to_string())]
        );
        let all = runs(&conn, 1).unwrap();
        assert_eq!(
            (
                all[0].status.as_str(),
                all[0].finished_at,
                all[0].error.as_deref()
            ),
            ("FAILED", Some(99), Some("gone"))
        );
        assert!(fail_unfinished(&conn, "gone", 100).unwrap().is_empty());
    }
}
