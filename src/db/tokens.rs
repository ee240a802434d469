//! The `user_tokens` table: named API tokens stored as SHA-256 hashes.

use crate::crypto;
use crate::model::TOKEN_PREFIX;
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_connection_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl Token {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A fresh token value: `lgu_` and 40 lowercase hex characters.
pub fn new_value() -> String {
    format!("{TOKEN_PREFIX}{}", crypto::random_hex(20))
}

/// Stores a new token for the user and returns its value (shown once, never stored).
pub fn create(
    conn: &Connection,
    user_id: i64,
    name: &str,
    expires_at: Option<i64>,
    now: i64,
) -> rusqlite::Result<String> {
    let value = new_value();
    conn.prepare_cached(
        "INSERT INTO user_tokens (user_id, name, token_hash, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        user_id,
        name,
        crypto::sha256_hex(&value),
        now,
        expires_at
    ])?;
    Ok(value)
}

pub fn exists(conn: &Connection, user_id: i64, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM user_tokens WHERE user_id = ?1 AND name = ?2)",
    )?
    .query_row(params![user_id, name], |r| r.get(0))
}

/// Resolves a presented token to (user id, token id) if it exists and has not expired.
pub fn authenticate(
    conn: &Connection,
    value: &str,
    now: i64,
) -> rusqlite::Result<Option<(i64, i64)>> {
    if !value.starts_with(TOKEN_PREFIX) || value.len() != TOKEN_PREFIX.len() + 40 {
        return Ok(None);
    }
    conn.prepare_cached(
        "SELECT user_id, id FROM user_tokens WHERE token_hash = ?1 \
         AND (expires_at IS NULL OR expires_at > ?2)",
    )?
    .query_row(params![crypto::sha256_hex(value), now], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Records use of a token, at most once a minute to spare writes.
pub fn touch(conn: &Connection, token_id: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE user_tokens SET last_connection_at = ?2 WHERE id = ?1 \
         AND (last_connection_at IS NULL OR last_connection_at < ?2 - 60)",
    )?
    .execute(params![token_id, now])?;
    Ok(())
}

/// Deletes a token by name; false when the user has none by that name.
pub fn revoke(conn: &Connection, user_id: i64, name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM user_tokens WHERE user_id = ?1 AND name = ?2")?
        .execute(params![user_id, name])?
        == 1)
}

pub fn list(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<Token>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, created_at, last_connection_at, expires_at FROM user_tokens \
         WHERE user_id = ?1 ORDER BY name",
    )?;
    let tokens = stmt
        .query_map([user_id], |r| {
            Ok(Token {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
                last_connection_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;

    #[test]
    fn only_the_hash_is_stored_and_the_value_authenticates() {
        let conn = test_db();
        let value = create(&conn, 1, "ci", None, 100).unwrap();
        assert!(value.starts_with("lgu_") && value.len() == 44);
        assert!(value[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let stored: String = conn
            .query_row("SELECT token_hash FROM user_tokens", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, value);
        assert!(!stored.contains(&value[4..]));
        assert_eq!(
            authenticate(&conn, &value, 101).unwrap().map(|t| t.0),
            Some(1)
        );
        assert_eq!(authenticate(&conn, "lgu_nope", 101).unwrap(), None);
    }

    #[test]
    fn expired_token_no_longer_authenticates() {
        let conn = test_db();
        let value = create(&conn, 1, "short", Some(200), 100).unwrap();
        assert!(authenticate(&conn, &value, 199).unwrap().is_some());
        assert!(authenticate(&conn, &value, 200).unwrap().is_none());
        let token = &list(&conn, 1).unwrap()[0];
        assert!(token.is_expired(200) && !token.is_expired(199));
    }

    #[test]
    fn names_are_unique_per_user_and_revocable() {
        let conn = test_db();
        create(&conn, 1, "a", None, 1).unwrap();
        assert!(create(&conn, 1, "a", None, 1).is_err());
        assert!(exists(&conn, 1, "a").unwrap());
        assert!(revoke(&conn, 1, "a").unwrap());
        assert!(!revoke(&conn, 1, "a").unwrap());
    }
}
