//! Finding users for the user lists (`api/users/search`, `/admin/users`): which plan answers
//! which search, so that a page over 100,000 users costs about what it costs over a hundred.
//!
//! What matches is what always matched: `q` is a substring of the login, the name or the email,
//! ASCII letters compared without case, `%` and `_` literal (`LIKE '%q%' ESCAPE '\'`); active or
//! deactivated users; ordered by login; the total is exact. The plans, per list:
//!
//! - **No text**: the list in login order; its size is kept in `user_stats` by triggers.
//! - **Text of 3 characters or more**: the list's trigram index (migration 3), which holds
//!   login, name and email lowercased the way `LIKE` compares them, so that a phrase query
//!   finds exactly the rows `LIKE` finds. The matches are counted in the index (the count is
//!   reused while `user_stats.generation` does not change: paging through a result counts
//!   once). The page comes from a walk of the list in login order when matches are dense
//!   enough to fill it within a bounded number of rows (a text most users match), else from
//!   sorting the matches by login through the narrow `(id, login)` index, no row read.
//! - **Shorter text** (too short for trigrams), or text with a character the trigram tokenizer
//!   reads differently: one pass over the list with `LIKE`, keeping only the logins the page
//!   needs.

use super::users::{self, User};
use rusqlite::{params, Connection};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{LazyLock, Mutex};

/// When to walk the list in login order rather than sort the matches (tests change it to
/// run every plan on a few users).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// A walk may read this many times the rows that evenly spread matches need to fill the
    /// page...
    pub walk_slack: i64,
    /// ... at most this many rows ...
    pub walk_max: i64,
    /// ... and is tried when each row it may read counts as this many sorted matches and that
    /// is still fewer than the matches (a row read in login order costs a random row lookup;
    /// a match sorted through the index costs its share of the index query, about 4 times
    /// less as measured).
    pub walk_row_cost: i64,
}

/// The thresholds labgate runs with.
pub const PLAN: Plan = Plan {
    walk_slack: 4,
    walk_max: 2_000,
    walk_row_cost: 4,
};

/// Users whose login, name or email contains `q` (see the module comment), active or
/// deactivated, ordered by login; one page and the exact total.
pub fn search(
    conn: &Connection,
    q: Option<&str>,
    active: bool,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<User>, i64)> {
    search_with(conn, q, active, offset, limit, PLAN)
}

/// [`search`] with the given thresholds.
pub fn search_with(
    conn: &Connection,
    q: Option<&str>,
    active: bool,
    offset: i64,
    limit: i64,
    plan: Plan,
) -> rusqlite::Result<(Vec<User>, i64)> {
    let list = if active { &ACTIVE } else { &DEACTIVATED };
    let (offset, limit) = (offset.max(0), limit.max(0));
    // One snapshot, so that the page, the total and the generation agree.
    let _read = if conn.is_autocommit() {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    };
    let (ids, total) = match q {
        None => whole_list(conn, list, offset, limit)?,
        Some(q) if indexable(q) => indexed(conn, list, q, offset, limit, plan)?,
        Some(q) => scanned(conn, list, q, offset, limit)?,
    };
    Ok((rows(conn, &ids)?, total))
}

/// Whether the trigram index answers `q`: 3 characters or more, none that the tokenizer skips
/// (NUL) or reads as another (U+FFFE and U+FFFF read as U+FFFD).
fn indexable(q: &str) -> bool {
    q.chars().count() >= 3
        && !q
            .chars()
            .any(|c| matches!(c, '\0' | '\u{FFFD}' | '\u{FFFE}' | '\u{FFFF}'))
}

/// The FTS5 query for `q`: one phrase, so user text is never read as query syntax; lowercased
/// like the indexed values (SQLite's `lower()` without ICU, which changes ASCII letters only).
fn phrase(q: &str) -> String {
    format!("\"{}\"", q.to_ascii_lowercase().replace('"', "\"\""))
}

/// `LIKE` on login, name and email with the pattern parameter `$p`, columns prefixed `$t`.
macro_rules! like_any {
    ($t:literal, $p:literal) => {
        concat!(
            "(",
            $t,
            "login LIKE ",
            $p,
            " ESCAPE '\\' OR ",
            $t,
            "name LIKE ",
            $p,
            " ESCAPE '\\' OR ",
            $t,
            "email LIKE ",
            $p,
            " ESCAPE '\\')"
        )
    };
}

/// The statements of one list. `active` is written out (not bound) so that the deactivated
/// list's partial index serves it.
struct ListSql {
    /// Which list (a key of the counts).
    name: &'static str,
    /// Its size and the generation: `(size, generation)`.
    size: &'static str,
    /// `id` of a page of the whole list, in login order: `?1` limit, `?2` offset.
    page: &'static str,
    /// Matches in the index: `?1` phrase.
    count: &'static str,
    /// `id` of a page of the matches in login order: `?1` phrase, `?2` limit, `?3` offset.
    /// Logins come from the narrow `(id, login)` index; no row is read: the trigram index of a
    /// list holds only its users and its phrase query is exact.
    matches_page: &'static str,
    /// `(id, matches)` of the whole list in login order: `?1` pattern.
    walk: &'static str,
    /// `(id, login)` of every match, reading the whole list: `?1` pattern.
    scan: &'static str,
}

macro_rules! list_sql {
    ($active:literal, $size:literal, $fts:literal, $scan_from:literal) => {
        ListSql {
            name: $size,
            size: concat!("SELECT ", $size, ", generation FROM user_stats"),
            page: concat!(
                "SELECT id FROM users WHERE active = ",
                $active,
                " ORDER BY login LIMIT ?1 OFFSET ?2"
            ),
            count: concat!("SELECT count(*) FROM ", $fts, " WHERE ", $fts, " MATCH ?1"),
            matches_page: concat!(
                "SELECT u.id FROM ",
                $fts,
                " CROSS JOIN users u INDEXED BY users_login_by_id ON u.id = ",
                $fts,
                ".rowid WHERE ",
                $fts,
                " MATCH ?1 ORDER BY u.login LIMIT ?2 OFFSET ?3"
            ),
            walk: concat!(
                "SELECT id, ",
                like_any!("", "?1"),
                " FROM users WHERE active = ",
                $active,
                " ORDER BY login"
            ),
            scan: concat!(
                "SELECT id, login FROM ",
                $scan_from,
                " WHERE active = ",
                $active,
                " AND ",
                like_any!("", "?1")
            ),
        }
    };
}

/// Active users: a scan reads the table (most rows are active).
const ACTIVE: ListSql = list_sql!(
    "1",
    "active_users",
    "users_search_active",
    "users NOT INDEXED"
);
/// Deactivated users: a scan reads their partial index.
const DEACTIVATED: ListSql = list_sql!(
    "0",
    "deactivated_users",
    "users_search_deactivated",
    "users"
);

/// `(ids of the page, total)`.
type Found = (Vec<i64>, i64);

fn list_size(conn: &Connection, list: &ListSql) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(list.size)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

fn whole_list(
    conn: &Connection,
    list: &ListSql,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<Found> {
    let (total, _) = list_size(conn, list)?;
    let ids = conn
        .prepare_cached(list.page)?
        .query_map(params![limit, offset], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok((ids, total))
}

fn indexed(
    conn: &Connection,
    list: &ListSql,
    q: &str,
    offset: i64,
    limit: i64,
    plan: Plan,
) -> rusqlite::Result<Found> {
    let phrase = phrase(q);
    let (size, generation) = list_size(conn, list)?;
    let total = count(conn, list, &phrase, generation)?;
    // Rows a walk in login order reads to fill the page if matches were spread evenly.
    let even = (offset + limit).saturating_mul(size) / total.max(1);
    let budget = even.saturating_mul(plan.walk_slack).saturating_add(limit);
    if budget <= plan.walk_max && budget.saturating_mul(plan.walk_row_cost) < total {
        let pattern = users::like_pattern(q);
        if let Some(ids) = walk(conn, list, &pattern, offset, limit, budget)? {
            return Ok((ids, total));
        }
    }
    let ids = conn
        .prepare_cached(list.matches_page)?
        .query_map(params![phrase, limit, offset], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok((ids, total))
}

/// The page by walking the list in login order, or `None` when `budget` rows were read
/// before the page was full.
fn walk(
    conn: &Connection,
    list: &ListSql,
    pattern: &str,
    offset: i64,
    limit: i64,
    budget: i64,
) -> rusqlite::Result<Option<Vec<i64>>> {
    let mut stmt = conn.prepare_cached(list.walk)?;
    let mut rows = stmt.query([pattern])?;
    let (mut read, mut matched) = (0i64, 0i64);
    let mut ids = Vec::new();
    while matched < offset + limit {
        let Some(row) = rows.next()? else { break };
        if read == budget {
            return Ok(None);
        }
        read += 1;
        // NULL (no email, no match elsewhere) is no match.
        if row.get::<_, Option<bool>>(1)? == Some(true) {
            if matched >= offset {
                ids.push(row.get(0)?);
            }
            matched += 1;
        }
    }
    Ok(Some(ids))
}

fn scanned(
    conn: &Connection,
    list: &ListSql,
    q: &str,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<Found> {
    let mut first = FirstLogins::new(offset, limit);
    let mut stmt = conn.prepare_cached(list.scan)?;
    let mut rows = stmt.query([users::like_pattern(q)])?;
    while let Some(row) = rows.next()? {
        first.offer(row.get_ref(1)?.as_str()?, row.get(0)?);
    }
    Ok(first.page(offset))
}

/// The first `offset + limit` logins (and ids) among matches read in any order, and how many
/// matches were read.
struct FirstLogins {
    keep: usize,
    seen: i64,
    /// A max-heap: the largest kept login is the first to leave.
    kept: BinaryHeap<(String, i64)>,
}

impl FirstLogins {
    fn new(offset: i64, limit: i64) -> FirstLogins {
        FirstLogins {
            keep: usize::try_from(offset.saturating_add(limit)).unwrap_or(usize::MAX),
            seen: 0,
            kept: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, login: &str, id: i64) {
        self.seen += 1;
        if self.kept.len() < self.keep {
            self.kept.push((login.to_string(), id));
        } else if self
            .kept
            .peek()
            .is_some_and(|(last, _)| login < last.as_str())
        {
            self.kept.pop();
            self.kept.push((login.to_string(), id));
        }
    }

    fn page(self, offset: i64) -> Found {
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let ids = self
            .kept
            .into_sorted_vec()
            .into_iter()
            .skip(skip)
            .map(|(_, id)| id)
            .collect();
        (ids, self.seen)
    }
}

/// A count of matches, valid while `user_stats.generation` is the one it was taken at.
/// Generations are random, so two databases in one process never share one.
struct Count {
    generation: i64,
    list: &'static str,
    phrase: String,
    total: i64,
}

/// How many counts are kept (a few bytes each).
const COUNTS_KEPT: usize = 64;

static COUNTS: Mutex<VecDeque<Count>> = Mutex::new(VecDeque::new());

/// The matches of `phrase` in the list's index, counted there (about a microsecond a match)
/// or taken from an earlier count at the same generation.
fn count(
    conn: &Connection,
    list: &ListSql,
    phrase: &str,
    generation: i64,
) -> rusqlite::Result<i64> {
    let same = |c: &Count| c.generation == generation && c.list == list.name && c.phrase == phrase;
    {
        let counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.iter().find(|c| same(c)) {
            return Ok(c.total);
        }
    }
    let total: i64 = conn
        .prepare_cached(list.count)?
        .query_row([phrase], |r| r.get(0))?;
    let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    counts.retain(|c| c.generation == generation);
    if counts.len() == COUNTS_KEPT {
        counts.pop_front();
    }
    counts.push_back(Count {
        generation,
        list: list.name,
        phrase: phrase.to_string(),
        total,
    });
    Ok(total)
}

static ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM users WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY login",
        users::COLUMNS
    )
});

/// The users with these ids, in login order (the order of a page).
fn rows(conn: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<User>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    conn.prepare_cached(&ROWS)?
        .query_map([super::id_list(ids)], users::from_row)?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;
    use crate::db::users::{NewUser, User};

    /// What the search must answer: every match by `LIKE` on the whole list, in login order.
    fn reference(conn: &Connection, q: Option<&str>, active: bool) -> Vec<i64> {
        let mut stmt = conn
            .prepare(concat!(
                "SELECT id FROM users WHERE active = ?1 AND (?2 IS NULL OR ",
                like_any!("", "?2"),
                ") ORDER BY login"
            ))
            .unwrap();
        stmt.query_map(params![active, q.map(users::like_pattern)], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<Vec<i64>>>()
            .unwrap()
    }

    /// A small deterministic generator (xorshift), so that a failure can be replayed.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    const PARTS: &[&str] = &[
        "ann",
        "Anna",
        "ANNE",
        "bob",
        "b_b",
        "b%b",
        "100%",
        "o'neil",
        "\"quoted\"",
        "back\\slash",
        "Élodie",
        "élodie",
        "ÉLO",
        "Straße",
        "STRASSE",
        "Jürgen",
        "jÜrgen",
        "日本語",
        "😀",
        "x",
        "and",
        "OR",
        "NEAR",
        "a.b",
        "a-b",
        "smith",
        "Smith",
        "greta",
        "\u{FFFD}",
        "ab",
        "z",
    ];

    fn word(g: &mut Gen) -> String {
        (0..1 + g.below(3)).map(|_| g.pick(PARTS)).collect()
    }

    /// `n` users with tricky logins, names and emails, some renamed, deactivated or
    /// reactivated after creation (so the triggers' every branch runs).
    fn populate(conn: &Connection, g: &mut Gen, n: usize) -> Vec<User> {
        let mut ids = Vec::new();
        for i in 0..n {
            let login = format!("{}{i}", word(g));
            let name = format!("{} {}", word(g), word(g));
            let email = (g.below(4) != 0).then(|| format!("{}@{}.Org", word(g), word(g)));
            let id = users::create(
                conn,
                &NewUser {
                    login: &login,
                    name: &name,
                    email: email.as_deref(),
                    password_hash: None,
                    must_change_password: false,
                    external: None,
                },
                1,
            )
            .unwrap();
            ids.push(id);
        }
        for &id in &ids {
            match g.below(10) {
                0 | 1 => users::deactivate(conn, id, 2).unwrap(),
                2 => {
                    users::deactivate(conn, id, 2).unwrap();
                    users::reactivate(conn, id, 3).unwrap();
                }
                3 => {
                    let email = format!("{}@Renamed.org", word(g));
                    users::update_profile(conn, id, &word(g), Some(&email), 4).unwrap();
                }
                4 => users::update_profile(conn, id, &word(g), None, 4).unwrap(),
                _ => {}
            }
        }
        let mut all = Vec::new();
        for id in ids {
            all.push(users::find_by_id(conn, id).unwrap().unwrap());
        }
        all
    }

    /// A piece of a user's login, name or email, ASCII case flipped at random.
    fn piece_of(g: &mut Gen, u: &User) -> String {
        let fields = [Some(&u.login), Some(&u.name), u.email.as_ref()];
        let text: Vec<char> = fields[g.below(3)].unwrap_or(&u.login).chars().collect();
        let len = 1 + g.below(6.min(text.len()));
        let start = g.below(text.len() - len + 1);
        text[start..start + len]
            .iter()
            .map(|c| match g.below(2) {
                0 => c.to_ascii_uppercase(),
                _ => c.to_ascii_lowercase(),
            })
            .collect()
    }

    const PLANS: &[Plan] = &[
        PLAN,
        // Every search of 3+ characters tries a short walk in login order...
        Plan {
            walk_slack: 1,
            walk_max: i64::MAX,
            walk_row_cost: 0,
        },
        // ... never walks (always sorts the matches)...
        Plan {
            walk_max: 0,
            ..PLAN
        },
        // ... or walks as far as it takes.
        Plan {
            walk_slack: 1_000_000,
            walk_max: i64::MAX,
            walk_row_cost: 0,
        },
    ];

    fn check(conn: &Connection, q: Option<&str>, active: bool, page_size: i64) {
        let expected = reference(conn, q, active);
        let total = expected.len() as i64;
        for plan in PLANS {
            // Every page, and one past the end.
            for page in 0..=(total / page_size + 1) {
                let offset = page * page_size;
                let (found, n) = search_with(conn, q, active, offset, page_size, *plan).unwrap();
                let ids: Vec<i64> = found.iter().map(|u| u.id).collect();
                let want: Vec<i64> = expected
                    .iter()
                    .skip(offset as usize)
                    .take(page_size as usize)
                    .copied()
                    .collect();
                assert_eq!(
                    (&ids, n),
                    (&want, total),
                    "q={q:?} active={active} offset={offset} {plan:?}"
                );
            }
        }
        // The walk in login order alone, never out of budget.
        let list = if active { &ACTIVE } else { &DEACTIVATED };
        let pattern = q.map_or("%".to_string(), users::like_pattern);
        for page in 0..=(total / page_size + 1) {
            let offset = page * page_size;
            let walked = walk(conn, list, &pattern, offset, page_size, i64::MAX).unwrap();
            let want: Vec<i64> = expected
                .iter()
                .skip(offset as usize)
                .take(page_size as usize)
                .copied()
                .collect();
            assert_eq!(
                walked,
                Some(want),
                "walk q={q:?} active={active} offset={offset}"
            );
        }
    }

    #[test]
    fn search_answers_what_like_answers_on_every_page() {
        let conn = test_db();
        let mut g = Gen(0x5eed_1abe_1234_5678);
        let all = populate(&conn, &mut g, 300);
        let mut queries: Vec<String> = [
            "%",
            "_",
            "b_b",
            "b%b",
            "0%",
            "\\",
            "\"",
            "\"quoted\"",
            "o'n",
            "' OR 1",
            "é",
            "É",
            "éLO",
            "ÉLO",
            "élodie",
            "STRASSE",
            "straße",
            "ÜRG",
            "日本",
            "😀a",
            "\u{FFFD}",
            "ab",
            "AB",
            "a.b",
            "and",
            "AND",
            "NEAR(",
            "* OR",
            "login:",
            "{name}",
            "a\"b",
            "nn ",
            "ann an",
            ".org",
            "@",
            "org",
            "ORG",
            "renamed",
            "b\0b",
            "zzz",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..60 {
            let u = &all[g.below(all.len())];
            queries.push(piece_of(&mut g, u));
        }
        for q in &queries {
            for active in [true, false] {
                check(&conn, Some(q), active, 7);
            }
        }
        for active in [true, false] {
            check(&conn, None, active, 25);
        }
        // Dense enough to walk with the default plan too.
        let many = all.len() as i64;
        check(&conn, Some("org"), true, many);
    }

    #[test]
    fn a_reused_count_follows_changes() {
        let conn = test_db();
        let mut g = Gen(42);
        let all = populate(&conn, &mut g, 60);
        let count = |conn: &Connection| search(conn, Some(".ORG"), true, 0, 5).unwrap().1;
        let before = count(&conn);
        assert_eq!(before, count(&conn), "same generation, same count");
        let target = all
            .iter()
            .find(|u| u.active && u.email.is_some())
            .expect("an active user with an email");
        users::update_profile(&conn, target.id, "Renamed", None, 9).unwrap();
        assert_eq!(count(&conn), before - 1);
        users::deactivate(&conn, target.id, 9).unwrap();
        users::update_profile(&conn, target.id, "Renamed", Some("back@x.org"), 9).unwrap();
        assert_eq!(count(&conn), before - 1, "deactivated users are not listed");
        users::reactivate(&conn, target.id, 9).unwrap();
        assert_eq!(count(&conn), before);
        assert_eq!(
            count(&conn),
            reference(&conn, Some(".ORG"), true).len() as i64
        );
    }

    #[test]
    fn a_rewrite_that_changes_nothing_keeps_the_generation() {
        let conn = test_db();
        let admin = users::find_by_login(&conn, "admin").unwrap().unwrap();
        let generation = |conn: &Connection| list_size(conn, &ACTIVE).unwrap().1;
        let before = generation(&conn);
        users::update_profile(&conn, admin.id, &admin.name, admin.email.as_deref(), 9).unwrap();
        users::touch_last_connection(&conn, admin.id, 9).unwrap();
        assert_eq!(generation(&conn), before);
        users::update_profile(&conn, admin.id, "Admin", admin.email.as_deref(), 9).unwrap();
        assert_ne!(generation(&conn), before);
        let (found, _) = search(&conn, Some("admin"), true, 0, 5).unwrap();
        assert_eq!(found[0].name, "Admin");
    }

    #[test]
    fn list_sizes_follow_changes() {
        let conn = test_db();
        let mut g = Gen(7);
        populate(&conn, &mut g, 80);
        for (active, list) in [(true, &ACTIVE), (false, &DEACTIVATED)] {
            let (size, _) = list_size(&conn, list).unwrap();
            assert_eq!(size, reference(&conn, None, active).len() as i64);
        }
        for fts in ["users_search_active", "users_search_deactivated"] {
            conn.execute(
                &format!("INSERT INTO {fts} ({fts}) VALUES ('integrity-check')"),
                [],
            )
            .unwrap();
        }
    }

    #[test]
    fn the_bundled_sqlite_has_fts5_and_folds_ascii_only() {
        // The index relies on both: `lower()` (stored values) and `LIKE` fold the same letters.
        let conn = test_db();
        let (fts5, lower): (bool, String) = conn
            .query_row(
                "SELECT sqlite_compileoption_used('ENABLE_FTS5'), lower('ÉLODIE Straße')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(fts5);
        assert_eq!(lower, "Élodie straße");
        assert_eq!(phrase("Ab\"C"), "\"ab\"\"c\"");
    }
}
