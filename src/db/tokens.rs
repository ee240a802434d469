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

/// A token that authenticated a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    pub user_id: i64,
    pub token_id: i64,
    pub expires_at: Option<i64>,
    pub last_connection_at: Option<i64>,
}

impl Presented {
    /// Whether [`touch`] would record a use at `now` (at most once a minute).
    pub fn needs_touch(&self, now: i64) -> bool {
        self.last_connection_at.is_none_or(|t| t < now - 60)
    }
}

/// Whether a presented value has the shape of a labgate token (`lgu_` and 40 characters).
pub fn well_formed(value: &str) -> bool {
    value.starts_with(TOKEN_PREFIX) && value.len() == TOKEN_PREFIX.len() + 40
}

/// Resolves a presented token if it exists and has not expired.
pub fn authenticate(
    conn: &Connection,
    value: &str,
    now: i64,
) -> rusqlite::Result<Option<Presented>> {
    if !well_formed(value) {
        return Ok(None);
    }
    authenticate_hash(conn, &crypto::sha256_hex(value), now)
}

/// [`authenticate`] by the stored hash of the token.
pub fn authenticate_hash(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> rusqlite::Result<Option<Presented>> {
    conn.prepare_cached(
        "SELECT user_id, id, expires_at, last_connection_at FROM user_tokens \
         WHERE token_hash = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?
    .query_row(params![token_hash, now], |r| {
        Ok(Presented {
            user_id: r.get(0)?,
            token_id: r.get(1)?,
            expires_at: r.get(2)?,
            last_connection_at: r.get(3)?,
        })
    })
    .optional()
}

/// Records use of a token, at most once a minute to spare writes.
///
/// Not counted in [`crate::db::generation`]: nothing cached by generation holds a token's
/// last use.
pub fn touch(conn: &Connection, token_id: i64, now: i64) -> rusqlite::Result<()> {
    crate::db::uncounted_write(|| {
        conn.prepare_cached(
            "UPDATE user_tokens SET last_connection_at = ?2 WHERE id = ?1 \
             AND (last_connection_at IS NULL OR last_connection_at < ?2 - 60)",
        )?
        .execute(params![token_id, now])
    })?;
    Ok(())
}

/// Deletes a token by name; false when the user has none by that name.
pub fn revoke(conn: &Connection, user_id: i64, name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM user_tokens WHERE user_id = ?1 AND name = ?2")?
        .execute(params![user_id, name])?
        == 1)
}

/// Deletes every token of a user; returns how many there were.
pub fn delete_for_user(conn: &Connection, user_id: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM user_tokens WHERE user_id = ?1")?
        .execute([user_id])
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
        let presented = authenticate(&conn, &value, 101).unwrap().unwrap();
        assert_eq!((presented.user_id, presented.expires_at), (1, None));
        assert!(presented.needs_touch(101));
        touch(&conn, presented.token_id, 101).unwrap();
        let presented = authenticate(&conn, &value, 102).unwrap().unwrap();
        assert_eq!(presented.last_connection_at, Some(101));
        assert!(!presented.needs_touch(161) && presented.needs_touch(162));
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
