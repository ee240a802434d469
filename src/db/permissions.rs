//! The `user_permissions` and `group_permissions` tables, and the last-administrator count.

use crate::model::Permission;
use rusqlite::{params, Connection};

fn parse_keys(keys: Vec<String>) -> Vec<Permission> {
    // Keys this binary does not know (written by a newer one) are ignored, never granted.
    let mut perms: Vec<Permission> = keys
        .iter()
        .filter_map(|k| Permission::parse(k).ok())
        .collect();
    perms.sort();
    perms.dedup();
    perms
}

/// Permissions granted to the user directly.
pub fn of_user(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<Permission>> {
    let mut stmt =
        conn.prepare_cached("SELECT permission FROM user_permissions WHERE user_id = ?1")?;
    let keys = stmt
        .query_map([user_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(parse_keys(keys))
}

/// Permissions the user holds through its groups.
pub fn of_user_groups(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<Permission>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT p.permission FROM group_permissions p \
         JOIN group_members m ON m.group_id = p.group_id WHERE m.user_id = ?1",
    )?;
    let keys = stmt
        .query_map([user_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(parse_keys(keys))
}

pub fn of_group(conn: &Connection, group_id: i64) -> rusqlite::Result<Vec<Permission>> {
    let mut stmt =
        conn.prepare_cached("SELECT permission FROM group_permissions WHERE group_id = ?1")?;
    let keys = stmt
        .query_map([group_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(parse_keys(keys))
}

pub fn grant_user(conn: &Connection, user_id: i64, p: Permission) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT OR IGNORE INTO user_permissions (user_id, permission) VALUES (?1, ?2)",
        )?
        .execute(params![user_id, p.key()])?
        == 1)
}

pub fn revoke_user(conn: &Connection, user_id: i64, p: Permission) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM user_permissions WHERE user_id = ?1 AND permission = ?2")?
        .execute(params![user_id, p.key()])?
        == 1)
}

pub fn grant_group(conn: &Connection, group_id: i64, p: Permission) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT OR IGNORE INTO group_permissions (group_id, permission) VALUES (?1, ?2)",
        )?
        .execute(params![group_id, p.key()])?
        == 1)
}

pub fn revoke_group(conn: &Connection, group_id: i64, p: Permission) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM group_permissions WHERE group_id = ?1 AND permission = ?2")?
        .execute(params![group_id, p.key()])?
        == 1)
}

/// Active users holding `admin`, directly or through a group. Checked inside every write
/// transaction that could lower it, before committing.
pub fn count_active_admins(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM users u WHERE u.active = 1 AND ( \
           EXISTS (SELECT 1 FROM user_permissions up WHERE up.user_id = u.id AND up.permission = 'admin') \
           OR EXISTS (SELECT 1 FROM group_members m JOIN group_permissions gp ON gp.group_id = m.group_id \
                      WHERE m.user_id = u.id AND gp.permission = 'admin'))",
    )?
    .query_row([], |r| r.get(0))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: i64,
    pub name: String,
    /// The user's name (users) or the group's description (groups).
    pub detail: String,
    pub permissions: Vec<Permission>,
}

/// Users with direct permissions (filtered by `permission` when given); with `q`, every active
/// user whose login or name matches, with their direct permissions.
pub fn user_holders(
    conn: &Connection,
    permission: Option<Permission>,
    q: Option<&str>,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<Holder>, i64)> {
    let pattern = q.map(super::users::like_pattern);
    macro_rules! filter {
        () => {
            "u.active = 1 AND ( \
        (?1 IS NULL AND ?2 IS NULL AND EXISTS (SELECT 1 FROM user_permissions up WHERE up.user_id = u.id)) \
        OR (?1 IS NOT NULL AND EXISTS (SELECT 1 FROM user_permissions up WHERE up.user_id = u.id AND up.permission = ?1) \
            AND (?2 IS NULL OR u.login LIKE ?2 ESCAPE '\\' OR u.name LIKE ?2 ESCAPE '\\')) \
        OR (?1 IS NULL AND ?2 IS NOT NULL AND (u.login LIKE ?2 ESCAPE '\\' OR u.name LIKE ?2 ESCAPE '\\')))"
        };
    }
    let key = permission.map(|p| p.key());
    let total: i64 = conn
        .prepare_cached(concat!("SELECT count(*) FROM users u WHERE ", filter!()))?
        .query_row(params![key, pattern], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT u.id, u.login, u.name FROM users u WHERE ",
        filter!(),
        " ORDER BY u.login LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt
        .query_map(params![key, pattern, limit, offset], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<(i64, String, String)>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, login, name) in rows {
        out.push(Holder {
            id,
            name: login,
            detail: name,
            permissions: of_user(conn, id)?,
        });
    }
    Ok((out, total))
}

/// Groups with permissions (filtered by `permission`); with `q`, every matching group.
pub fn group_holders(
    conn: &Connection,
    permission: Option<Permission>,
    q: Option<&str>,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<Holder>, i64)> {
    let pattern = q.map(super::users::like_pattern);
    macro_rules! filter {
        () => {
            "( \
        (?1 IS NULL AND ?2 IS NULL AND EXISTS (SELECT 1 FROM group_permissions gp WHERE gp.group_id = g.id)) \
        OR (?1 IS NOT NULL AND EXISTS (SELECT 1 FROM group_permissions gp WHERE gp.group_id = g.id AND gp.permission = ?1) \
            AND (?2 IS NULL OR g.name LIKE ?2 ESCAPE '\\')) \
        OR (?1 IS NULL AND ?2 IS NOT NULL AND g.name LIKE ?2 ESCAPE '\\'))"
        };
    }
    let key = permission.map(|p| p.key());
    let total: i64 = conn
        .prepare_cached(concat!("SELECT count(*) FROM groups g WHERE ", filter!()))?
        .query_row(params![key, pattern], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT g.id, g.name, g.description FROM groups g WHERE ",
        filter!(),
        " ORDER BY g.name LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt
        .query_map(params![key, pattern, limit, offset], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<(i64, String, String)>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, name, description) in rows {
        out.push(Holder {
            id,
            name,
            detail: description,
            permissions: of_group(conn, id)?,
        });
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{groups, test_db, users, ADMIN_GROUP};

    #[test]
    fn admin_count_follows_groups_and_direct_grants() {
        let conn = test_db();
        assert_eq!(count_active_admins(&conn).unwrap(), 1);
        let admin = users::find_by_login(&conn, "admin").unwrap().unwrap();
        grant_user(&conn, admin.id, Permission::Admin).unwrap();
        assert_eq!(count_active_admins(&conn).unwrap(), 1, "counted once");
        let g = groups::find_by_name(&conn, ADMIN_GROUP).unwrap().unwrap();
        revoke_group(&conn, g.id, Permission::Admin).unwrap();
        assert_eq!(count_active_admins(&conn).unwrap(), 1, "still direct");
        revoke_user(&conn, admin.id, Permission::Admin).unwrap();
        assert_eq!(count_active_admins(&conn).unwrap(), 0);
    }

    #[test]
    fn holders_list_direct_grants_and_search() {
        let conn = test_db();
        let (groups_with, total) = group_holders(&conn, None, None, 0, 10).unwrap();
        assert_eq!(total, 1);
        assert_eq!(groups_with[0].name, ADMIN_GROUP);
        assert_eq!(groups_with[0].permissions, vec![Permission::Admin]);
        let (users_with, total) = user_holders(&conn, None, None, 0, 10).unwrap();
        assert_eq!((users_with.len(), total), (0, 0));
        let (users_found, _) = user_holders(&conn, None, Some("adm"), 0, 10).unwrap();
        assert_eq!(users_found[0].name, "admin");
        assert!(users_found[0].permissions.is_empty());
        let (found, _) =
            group_holders(&conn, Some(Permission::Admin), Some("admin"), 0, 10).unwrap();
        assert_eq!(found.len(), 1);
    }
}
