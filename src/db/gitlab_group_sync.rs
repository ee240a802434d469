//! The `gitlab_group_sync` table: for each GitLab user, the digest of the GitLab paths its last
//! group synchronization took. A row says the user's memberships are exactly what that
//! synchronization made, and nothing they depend on has changed since: the table's triggers
//! delete the row when that stops being true (a change of the user's memberships; for every
//! user, a group created, deleted, renamed or made the default).

use rusqlite::{params, Connection};

/// Whether the user's memberships are what synchronizing the paths with `digest` made, with
/// nothing changed since.
pub fn in_sync(conn: &Connection, user_id: i64, digest: &[u8; 16]) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM gitlab_group_sync WHERE user_id = ?1 AND paths_digest = ?2")?
        .exists(params![user_id, digest.as_slice()])
}

/// Records that the user's memberships are now what synchronizing the paths with `digest`
/// made. Call after the synchronization's own membership changes, whose triggers delete the
/// previous row.
pub fn record(conn: &Connection, user_id: i64, digest: &[u8; 16]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO gitlab_group_sync (user_id, paths_digest) VALUES (?1, ?2)",
    )?
    .execute(params![user_id, digest.as_slice()])?;
    Ok(())
}
