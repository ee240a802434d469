//! The `groups` and `group_members` tables.

use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub is_default: bool,
    pub members_count: i64,
}

/// The columns [`from_row`] reads, as a macro so that every query stays one `const` text
/// (statements are cached by their text).
macro_rules! group_columns {
    () => {
        "g.id, g.name, g.description, g.is_default, g.member_count"
    };
}

/// The filter of [`search`]: the name contains `?1` (a `LIKE` pattern), or `?1` is NULL.
macro_rules! search_filter {
    () => {
        "(?1 IS NULL OR g.name LIKE ?1 ESCAPE '\\')"
    };
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        is_default: row.get(3)?,
        members_count: row.get(4)?,
    })
}

pub fn create(conn: &Connection, name: &str, description: &str, now: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO groups (name, description, is_default, created_at) VALUES (?1, ?2, 0, ?3)",
    )?
    .execute(params![name, description, now])?;
    Ok(conn.last_insert_rowid())
}

pub fn find_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<Group>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        group_columns!(),
        " FROM groups g WHERE g.name = ?1"
    ))?
    .query_row([name], from_row)
    .optional()
}

pub fn update(conn: &Connection, id: i64, name: &str, description: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE groups SET name = ?2, description = ?3 WHERE id = ?1")?
        .execute(params![id, name, description])?;
    Ok(())
}

/// Sets a group's description alone. SQLite rewrites the index entries of every indexed column
/// named in a `SET` list, changed or not, so a description change that also set the unchanged
/// name would write a page of the name index too.
pub fn set_description(conn: &Connection, id: i64, description: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE groups SET description = ?2 WHERE id = ?1")?
        .execute(params![id, description])?;
    Ok(())
}

pub fn delete(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM groups WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Groups whose name contains `q` (case-insensitive), by name; one page and the total.
pub fn search(
    conn: &Connection,
    q: Option<&str>,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<Group>, i64)> {
    let pattern = q.map(super::users::like_pattern);
    let total: i64 = conn
        .prepare_cached(concat!(
            "SELECT count(*) FROM groups g WHERE ",
            search_filter!()
        ))?
        .query_row(params![pattern], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        group_columns!(),
        " FROM groups g WHERE ",
        search_filter!(),
        " ORDER BY g.name LIMIT ?2 OFFSET ?3"
    ))?;
    let groups = stmt
        .query_map(params![pattern, limit, offset], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((groups, total))
}

/// Every group name, sorted (for pickers).
pub fn all_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM groups ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// Adds a membership; returns false when it already existed.
pub fn add_member(conn: &Connection, group_id: i64, user_id: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)")?
        .execute(params![group_id, user_id])?
        == 1)
}

/// The groups a user is a member of, in no particular order.
pub fn of_member(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<Group>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        group_columns!(),
        " FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ?1"
    ))?
    .query_map([user_id], from_row)?
    .collect()
}

/// The groups GitLab group synchronization may want: the default group, and those whose name
/// equals one of `names` (case-sensitive: `name` has the binary collation; a name given twice
/// gives its group twice). Each name is looked up in the `UNIQUE` index on `name`, the default
/// group in its partial index, so the cost follows the names given, not the number of groups.
pub fn sync_candidates(conn: &Connection, names: &[&str]) -> rusqlite::Result<Vec<Group>> {
    let names = serde_json::to_string(names)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(SYNC_CANDIDATES)?
        .query_map([names], from_row)?
        .collect()
}

const SYNC_CANDIDATES: &str = concat!(
    "SELECT ",
    group_columns!(),
    " FROM json_each(?1) AS j JOIN groups AS g ON g.name = j.value WHERE g.is_default = 0 \
     UNION ALL SELECT ",
    group_columns!(),
    " FROM groups AS g WHERE g.is_default = 1"
);

/// Removes a membership; returns false when there was none.
pub fn remove_member(conn: &Connection, group_id: i64, user_id: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
        .execute(params![group_id, user_id])?
        == 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    Selected,
    Deselected,
    All,
}

impl Selected {
    /// The condition on the `LEFT JOIN`ed membership `m` that keeps this list's users.
    fn filter(self) -> &'static str {
        match self {
            Selected::Selected => "AND m.user_id IS NOT NULL",
            Selected::Deselected => "AND m.user_id IS NULL",
            Selected::All => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub login: String,
    pub name: String,
    pub selected: bool,
    /// The user's external provider (`gitlab` for GitLab users), for the membership lock.
    pub external_provider: Option<String>,
}

/// A group of up to this many members lists its members from its memberships; a bigger one
/// (the default group holds every user) walks the users in login order.
const SMALL_GROUP: i64 = 10_000;

/// Active users matching `q` with whether they belong to the group, filtered by `selected`.
pub fn members(
    conn: &Connection,
    group_id: i64,
    q: Option<&str>,
    selected: Selected,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<MemberRow>, i64)> {
    // One snapshot, so that the matches held in memory and the rows read agree.
    let _read = super::read_snapshot(conn)?;
    // With a text, the matching users from the lists held in memory (taken first in the
    // snapshot: see `user_index::current_image`), not a `LIKE` over every user, unless the list
    // is a small group's.
    let lists = q
        .map(|_| super::user_index::current_image(conn))
        .transpose()?;
    let small = selected == Selected::Selected && member_count(conn, group_id)? <= SMALL_GROUP;
    if let (Some(lists), Some(q), false) = (lists, q, small) {
        if let Some(matches) = super::user_index::active_by_login_or_name(&lists, q) {
            return listed(conn, group_id, matches, selected, offset, limit);
        }
    }
    let pattern = q.map(super::users::like_pattern);
    let matches = "u.active = 1 AND (?2 IS NULL OR u.login LIKE ?2 ESCAPE '\\' \
                   OR u.name LIKE ?2 ESCAPE '\\')";
    let from = scanned_from(small, selected, matches);
    let total: i64 = match pattern {
        // Without a text the total comes from counts kept or indexed, not from one row per
        // user: the default group holds every user.
        None => counted_total(conn, group_id, selected)?,
        Some(_) => conn
            .prepare_cached(&format!("SELECT count(*) {from}"))?
            .query_row(params![group_id, pattern], |r| r.get(0))?,
    };
    if offset >= total || limit <= 0 {
        // Nothing to list (everyone is a member of the default group, so its "deselected"
        // list would otherwise walk every user to find none).
        return Ok((Vec::new(), total));
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT u.login, u.name, m.user_id IS NOT NULL, u.external_provider {from} \
         ORDER BY u.login LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt
        .query_map(params![group_id, pattern, limit, offset], member_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total))
}

/// A member list's row: `login, name, selected, external_provider`.
fn member_row(r: &rusqlite::Row) -> rusqlite::Result<MemberRow> {
    Ok(MemberRow {
        login: r.get(0)?,
        name: r.get(1)?,
        selected: r.get(2)?,
        external_provider: r.get(3)?,
    })
}

/// The page of a member list from its matching users (`matches`, active, in login order),
/// filtered by membership as `selected` asks.
fn listed(
    conn: &Connection,
    group_id: i64,
    matches: Vec<i64>,
    selected: Selected,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<MemberRow>, i64)> {
    let ids = match selected {
        Selected::All => matches,
        Selected::Selected | Selected::Deselected => {
            let not = if selected == Selected::Deselected {
                "NOT "
            } else {
                ""
            };
            conn.prepare_cached(&format!(
                "SELECT j.value FROM json_each(?2) j WHERE {not}EXISTS \
                 (SELECT 1 FROM group_members m WHERE m.group_id = ?1 AND m.user_id = j.value) \
                 ORDER BY j.key"
            ))?
            .query_map(params![group_id, super::id_list(&matches)], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?
        }
    };
    let total = ids.len() as i64;
    let page = super::page_of(&ids, offset, limit);
    if page.is_empty() {
        return Ok((Vec::new(), total));
    }
    let rows = conn
        .prepare_cached(
            "SELECT u.login, u.name, m.user_id IS NOT NULL, u.external_provider FROM users u \
             LEFT JOIN group_members m ON m.user_id = u.id AND m.group_id = ?1 \
             WHERE u.id IN (SELECT value FROM json_each(?2)) ORDER BY u.login",
        )?
        .query_map(params![group_id, super::id_list(&page)], member_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total))
}

/// The `FROM` of a member list read with `LIKE`: a small group's from its
/// memberships, any other from every user (with `matches`, the `LIKE` filter on `?2`).
fn scanned_from(small: bool, selected: Selected, matches: &str) -> String {
    if small {
        // From the memberships (CROSS JOIN keeps them the outer loop): a group of a few
        // members costs a few rows, not one per user.
        format!(
            "FROM group_members m CROSS JOIN users u ON u.id = m.user_id \
             WHERE m.group_id = ?1 AND {matches}"
        )
    } else {
        let sel = selected.filter();
        format!(
            "FROM users u LEFT JOIN group_members m ON m.user_id = u.id AND m.group_id = ?1 \
             WHERE {matches} {sel}"
        )
    }
}

/// How many active users `selected` lists, without a text: the group's memberships (its
/// primary key) less its deactivated members (the deactivated users' partial index), and the
/// number of active users that `user_stats` keeps.
fn counted_total(conn: &Connection, group_id: i64, selected: Selected) -> rusqlite::Result<i64> {
    let active_users = || super::user_index::active_users(conn);
    let active_members = || -> rusqlite::Result<i64> {
        let deactivated: i64 = conn
            .prepare_cached(DEACTIVATED_MEMBERS)?
            .query_row([group_id], |r| r.get(0))?;
        Ok(member_count(conn, group_id)? - deactivated)
    };
    Ok(match selected {
        Selected::Selected => active_members()?,
        Selected::Deselected => active_users()? - active_members()?,
        Selected::All => active_users()?,
    })
}

/// Deactivated members of group `?1`, from the deactivated users (their partial index).
const DEACTIVATED_MEMBERS: &str = "SELECT count(*) FROM users u INDEXED BY users_deactivated \
     WHERE u.active = 0 AND EXISTS \
       (SELECT 1 FROM group_members m WHERE m.group_id = ?1 AND m.user_id = u.id)";

/// Memberships of a group, active users or not (kept by triggers, migration 5).
fn member_count(conn: &Connection, group_id: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT member_count FROM groups WHERE id = ?1")?
        .query_row([group_id], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{test_db, users, ADMIN_GROUP, DEFAULT_GROUP};

    #[test]
    fn builtin_groups_exist_with_counts() {
        let conn = test_db();
        let users_group = find_by_name(&conn, DEFAULT_GROUP).unwrap().unwrap();
        assert!(users_group.is_default);
        assert_eq!(users_group.members_count, 1);
        let admins = find_by_name(&conn, ADMIN_GROUP).unwrap().unwrap();
        assert!(!admins.is_default);
        assert_eq!(admins.members_count, 1);
    }

    #[test]
    fn names_are_case_sensitive_and_unique() {
        let conn = test_db();
        create(&conn, "acme/Platform", "", 1).unwrap();
        create(&conn, "acme/platform", "", 1).unwrap();
        assert!(create(&conn, "acme/platform", "", 1).is_err());
        assert!(find_by_name(&conn, "ACME/platform").unwrap().is_none());
    }

    #[test]
    fn members_filter_selected() {
        let conn = test_db();
        let g = create(&conn, "devs", "", 1).unwrap();
        let admin = users::find_by_login(&conn, "admin").unwrap().unwrap();
        assert!(add_member(&conn, g, admin.id).unwrap());
        assert!(!add_member(&conn, g, admin.id).unwrap());
        let (rows, total) = members(&conn, g, None, Selected::Selected, 0, 10).unwrap();
        assert_eq!(total, 1);
        assert!(rows[0].selected);
        let (_, total) = members(&conn, g, None, Selected::Deselected, 0, 10).unwrap();
        assert_eq!(total, 0);
        assert!(remove_member(&conn, g, admin.id).unwrap());
        let (rows, _) = members(&conn, g, Some("adm"), Selected::All, 0, 10).unwrap();
        assert!(!rows[0].selected);
    }

    #[test]
    fn members_of_a_small_group_are_its_active_matching_members_in_login_order() {
        let conn = test_db();
        let g = create(&conn, "devs", "", 1).unwrap();
        for (login, gitlab) in [
            ("zed", true),
            ("amy", false),
            ("gone", false),
            ("out", false),
        ] {
            let id = users::create(
                &conn,
                &users::NewUser {
                    login,
                    name: "Dev",
                    email: None,
                    password_hash: None,
                    must_change_password: false,
                    external: gitlab.then_some(users::External {
                        provider: "gitlab",
                        identity: login,
                        id: None,
                    }),
                },
                1,
            )
            .unwrap();
            if login != "out" {
                add_member(&conn, g, id).unwrap();
            }
            if login == "gone" {
                users::deactivate(&conn, id, 2).unwrap();
            }
        }
        let (rows, total) = members(&conn, g, None, Selected::Selected, 0, 10).unwrap();
        let logins: Vec<&str> = rows.iter().map(|r| r.login.as_str()).collect();
        assert_eq!((logins, total), (vec!["amy", "zed"], 2));
        assert!(rows.iter().all(|r| r.selected));
        assert_eq!(rows[1].external_provider.as_deref(), Some("gitlab"));
        let (rows, total) = members(&conn, g, Some("Z"), Selected::Selected, 0, 10).unwrap();
        assert_eq!((rows.len(), total), (1, 1));
        let (rows, total) = members(&conn, g, None, Selected::Selected, 1, 10).unwrap();
        assert_eq!((rows[0].login.as_str(), total), ("zed", 2));
    }

    /// Every list of every group, every page, with and without a text, against the same
    /// answer computed from all users in Rust (deactivated users, non-members, the default
    /// group that holds everyone).
    #[test]
    fn member_lists_and_totals_equal_a_filter_over_every_user() {
        let conn = test_db();
        let devs = create(&conn, "devs", "", 1).unwrap();
        let empty = create(&conn, "empty", "", 1).unwrap();
        let default = find_by_name(&conn, DEFAULT_GROUP).unwrap().unwrap().id;
        for i in 0..23 {
            let login = format!("u{:02}{}", (i * 7) % 23, if i % 4 == 0 { "x" } else { "" });
            let id = users::create(
                &conn,
                &users::NewUser {
                    login: &login,
                    name: if i % 2 == 0 { "Even Name" } else { "Odd" },
                    email: Some("desk@corp.example"),
                    password_hash: None,
                    must_change_password: false,
                    external: None,
                },
                1,
            )
            .unwrap();
            if i % 3 != 0 {
                add_member(&conn, devs, id).unwrap();
            }
            if i % 5 == 0 {
                users::deactivate(&conn, id, 2).unwrap();
            }
        }
        let everyone: Vec<(i64, String, String, bool)> = conn
            .prepare("SELECT id, login, lower(name), active = 1 FROM users ORDER BY login")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for group in [devs, empty, default] {
            let member = |id: i64| -> bool {
                conn.query_row(
                    "SELECT count(*) FROM group_members WHERE group_id = ?1 AND user_id = ?2",
                    [group, id],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                    == 1
            };
            // Texts come from the lists held in memory, which must not find the email's
            // "corp"; a NUL is scanned with `LIKE`.
            for q in [
                None,
                Some("x"),
                Some("U1"),
                Some("nope"),
                Some("u01"),
                Some("1X"),
                Some("EVEN"),
                Some("n n"),
                Some("dd"),
                Some("corp"),
                Some("u0\u{0}1"),
            ] {
                for selected in [Selected::Selected, Selected::Deselected, Selected::All] {
                    let expected: Vec<(String, bool)> = everyone
                        .iter()
                        .filter(|(_, login, name, active)| {
                            *active
                                && q.is_none_or(|q| {
                                    let q = q.to_lowercase();
                                    login.contains(&q) || name.contains(&q)
                                })
                        })
                        .map(|(id, login, _, _)| (login.clone(), member(*id)))
                        .filter(|(_, m)| match selected {
                            Selected::Selected => *m,
                            Selected::Deselected => !*m,
                            Selected::All => true,
                        })
                        .collect();
                    for (offset, limit) in [(0, 100), (0, 4), (4, 4), (17, 4), (30, 4), (2, 0)] {
                        let (rows, total) =
                            members(&conn, group, q, selected, offset, limit).unwrap();
                        let got: Vec<(String, bool)> =
                            rows.into_iter().map(|r| (r.login, r.selected)).collect();
                        let want: Vec<(String, bool)> = expected
                            .iter()
                            .skip(offset as usize)
                            .take(limit as usize)
                            .cloned()
                            .collect();
                        let case = (group, q, selected, offset, limit);
                        assert_eq!(total, expected.len() as i64, "{case:?}");
                        assert_eq!(got, want, "{case:?}");
                    }
                }
            }
        }
    }

    fn local_groups(conn: &Connection, names: &[&str]) {
        for name in names {
            create(conn, name, "", 1).unwrap();
        }
    }

    fn candidate_names(conn: &Connection, paths: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = sync_candidates(conn, paths)
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn sync_candidates_are_exact_names_and_the_default_group() {
        let conn = test_db();
        local_groups(
            &conn,
            &[
                "acme",
                "acme/x",
                "acme-other",
                "acme/x/y",
                "acme ",
                "Acme",
                "x/acme",
            ],
        );
        assert_eq!(
            candidate_names(&conn, &["acme", "acme/x"]),
            vec!["acme", "acme/x", "users"],
            "no prefix, suffix, padded or other-case match"
        );
        assert_eq!(candidate_names(&conn, &["ACME/X", "acm"]), vec!["users"]);
        assert_eq!(candidate_names(&conn, &["Acme"]), vec!["Acme", "users"]);
    }

    #[test]
    fn sync_candidates_without_gitlab_groups_is_the_default_group() {
        let conn = test_db();
        local_groups(&conn, &["acme", ""]);
        let groups = sync_candidates(&conn, &[]).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].name.as_str(), groups[0].is_default),
            ("users", true)
        );
        assert_eq!(candidate_names(&conn, &[""]), vec!["", "users"]);
    }

    #[test]
    fn sync_candidates_match_names_json_would_escape() {
        let conn = test_db();
        let odd = [
            "a\"b",
            "back\\slash",
            "caf\u{e9}",
            "tab\tname",
            "emoji \u{1F600}",
            "[1]",
        ];
        local_groups(&conn, &odd);
        let mut expected: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
        expected.push("users".into());
        expected.sort();
        assert_eq!(candidate_names(&conn, &odd), expected);
    }

    #[test]
    fn sync_candidates_are_read_through_indexes() {
        let conn = test_db();
        let plan = crate::db::query_plan(&conn, SYNC_CANDIDATES);
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN groups")),
            "{plan:?}"
        );
    }
}
