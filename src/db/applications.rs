//! The `applications` and `application_groups` tables: the applications behind labgate and the
//! local groups whose members each one admits.

use rusqlite::{params, Connection, OptionalExtension, Row};

/// An application as stored, with the names of its allowed groups (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: i64,
    pub name: String,
    /// The origin, lower-case: `https://host[:port]`.
    pub url: String,
    pub description: String,
    /// Names of the groups whose members may enter; empty: every active user.
    pub allowed_groups: Vec<String>,
}

/// The columns [`from_row`] reads, the allowed groups as a JSON array of names in name order;
/// a macro so that every query stays one `const` text (statements are cached by their text).
macro_rules! application_columns {
    () => {
        "a.id, a.name, a.url, a.description, \
         (SELECT json_group_array(name) FROM (SELECT g.name FROM application_groups ag \
          JOIN groups g ON g.id = ag.group_id WHERE ag.application_id = a.id ORDER BY g.name))"
    };
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Application> {
    let groups: String = row.get(4)?;
    Ok(Application {
        id: row.get(0)?,
        name: row.get(1)?,
        url: row.get(2)?,
        description: row.get(3)?,
        allowed_groups: serde_json::from_str(&groups).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
    })
}

/// Every application, by name.
pub fn all(conn: &Connection) -> rusqlite::Result<Vec<Application>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        application_columns!(),
        " FROM applications a ORDER BY a.name"
    ))?
    .query_map([], from_row)?
    .collect()
}

/// One page of the applications by name, and how many there are.
pub fn page(
    conn: &Connection,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<Application>, i64)> {
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM applications")?
        .query_row([], |r| r.get(0))?;
    let rows = conn
        .prepare_cached(concat!(
            "SELECT ",
            application_columns!(),
            " FROM applications a ORDER BY a.name LIMIT ?1 OFFSET ?2"
        ))?
        .query_map([limit, offset], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((rows, total))
}

pub fn find(conn: &Connection, id: i64) -> rusqlite::Result<Option<Application>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        application_columns!(),
        " FROM applications a WHERE a.id = ?1"
    ))?
    .query_row([id], from_row)
    .optional()
}

/// The id of the application named `name` (ignoring case), if any.
pub fn id_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM applications WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// The id of the application at `url` (an origin as stored), if any.
pub fn id_by_url(conn: &Connection, url: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM applications WHERE url = ?1")?
        .query_row([url], |r| r.get(0))
        .optional()
}

pub fn insert(
    conn: &Connection,
    name: &str,
    url: &str,
    description: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO applications (name, url, description, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![name, url, description, now])?;
    Ok(conn.last_insert_rowid())
}

pub fn update(
    conn: &Connection,
    id: i64,
    name: &str,
    url: &str,
    description: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE applications SET name = ?2, url = ?3, description = ?4, updated_at = ?5 \
         WHERE id = ?1",
    )?
    .execute(params![id, name, url, description, now])?;
    Ok(())
}

/// Deletes an application and its allowed groups; false when there was none.
pub fn delete(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM applications WHERE id = ?1")?
        .execute([id])?
        > 0)
}

/// Makes `group_ids` the allowed groups of application `id`.
pub fn set_groups(conn: &Connection, id: i64, group_ids: &[i64]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM application_groups WHERE application_id = ?1")?
        .execute([id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO application_groups (application_id, group_id) VALUES (?1, ?2)",
    )?;
    for group_id in group_ids {
        insert.execute([id, *group_id])?;
    }
    Ok(())
}

/// Names of the applications that group `group_id` admits people to, by name.
pub fn admitting(conn: &Connection, group_id: i64) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT a.name FROM application_groups ag JOIN applications a \
         ON a.id = ag.application_id WHERE ag.group_id = ?1 ORDER BY a.name",
    )?
    .query_map([group_id], |r| r.get(0))?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{groups, test_db};

    #[test]
    fn an_application_reads_back_with_its_groups_in_name_order() {
        let conn = test_db();
        let b = groups::create(&conn, "b-team", "", 1).unwrap();
        let a = groups::create(&conn, "a-team", "", 1).unwrap();
        let id = insert(&conn, "Jupyter", "https://jupyter.lab.example", "notes", 5).unwrap();
        set_groups(&conn, id, &[b, a, b]).unwrap();
        let app = find(&conn, id).unwrap().unwrap();
        assert_eq!(app.allowed_groups, ["a-team", "b-team"]);
        assert_eq!(id_by_name(&conn, "JUPYTER").unwrap(), Some(id));
        assert_eq!(
            id_by_url(&conn, "https://jupyter.lab.example").unwrap(),
            Some(id)
        );
        assert_eq!(admitting(&conn, a).unwrap(), ["Jupyter"]);
        assert_eq!(page(&conn, 0, 10).unwrap().1, 1);
        assert!(delete(&conn, id).unwrap());
        assert!(admitting(&conn, a).unwrap().is_empty(), "cascaded");
    }

    #[test]
    fn a_group_that_admits_people_cannot_be_deleted_underneath() {
        let conn = test_db();
        let g = groups::create(&conn, "ml", "", 1).unwrap();
        let id = insert(&conn, "Grafana", "https://grafana.lab.example", "", 5).unwrap();
        set_groups(&conn, id, &[g]).unwrap();
        assert!(groups::delete(&conn, g).is_err(), "RESTRICT");
        let open = insert(&conn, "Wiki", "https://wiki.lab.example", "", 5).unwrap();
        assert!(find(&conn, open)
            .unwrap()
            .unwrap()
            .allowed_groups
            .is_empty());
    }
}
