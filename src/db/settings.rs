//! The `settings` table: a key/value store for instance settings changed at run time.

use rusqlite::{params, Connection, OptionalExtension};

/// Random id of this instance, reported by `api/system/status`.
pub const KEY_SERVER_ID: &str = "labgate.server.id";

pub fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// Every stored setting as (key, value), in one query: for readers of several settings.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM settings")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect();
    rows
}

pub fn set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

pub fn delete(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM settings WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_overwrite_delete() {
        let conn = crate::db::test_db();
        assert_eq!(get(&conn, "k").unwrap(), None);
        set(&conn, "k", "1").unwrap();
        set(&conn, "k", "2").unwrap();
        assert_eq!(get(&conn, "k").unwrap().as_deref(), Some("2"));
        assert!(all(&conn)
            .unwrap()
            .contains(&("k".to_string(), "2".to_string())));
        delete(&conn, "k").unwrap();
        assert_eq!(get(&conn, "k").unwrap(), None);
    }
}
