//! Finding users for the user lists (`api/users/search`, `/admin/users`): which plan answers
//! which search, so that a page over 100,000 users costs about what it costs over a hundred.
//!
//! What matches is what always matched: `q` is a substring of the login, the name or the email,
//! ASCII letters compared without case, `%` and `_` literal (`LIKE '%q%' ESCAPE '\'`); active or
//! deactivated users; ordered by login; the total is exact. The plans, per list:
//!
//! - **No text**: the list in login order; its size is kept in `user_stats` by triggers.
//! - **Text**: the list held in memory ([`super::image`]), read once from end to end: the
//!   matches come out in login order, counted. The total, and the matches when there are at
//!   most [`KEEP_MAX`], are kept ([`super::cache`]) while `user_stats.generation` does not
//!   change: a repeat or a next page is then answered from them, or by reading the list only
//!   up to its page. When users change, what was kept follows: each total moves by the changed
//!   users that match before or after the change, and the matches stay kept when none of them
//!   does.
//! - **Text with a NUL**, which `LIKE` reads as the end of the text: one pass over the list with
//!   `LIKE`, keeping only the logins the page needs.

use super::cache::{CachedAnswer, Key, SearchCache, SEARCH_CACHE};
use super::image::{Image, ImageSlot, IMAGE_SLOT};
use crate::db::users::{self, User};
use rusqlite::{params, Connection};
use std::collections::BinaryHeap;
use std::sync::LazyLock;

/// A text search keeps its matches in login order, for its next pages and repeats, when there
/// are at most this many; more are only counted.
pub const KEEP_MAX: usize = 5_000;

/// Users whose login, name or email contains `q` (see the module comment), active or
/// deactivated, ordered by login; one page and the exact total.
pub fn search(
    conn: &Connection,
    q: Option<&str>,
    active: bool,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<(Vec<User>, i64)> {
    // One snapshot, so that the page, the total and the generation agree.
    let _read = crate::db::read_snapshot(conn)?;
    let ((ids, total), _) = find(
        conn,
        q,
        active,
        offset,
        limit,
        &SearchState::new(&SEARCH_CACHE, &IMAGE_SLOT),
    )?;
    Ok((rows(conn, &ids)?, total))
}

/// Which plan found a page (for the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Plan {
    /// The list in login order, no text.
    WholeList,
    /// One pass over the list with `LIKE`.
    Scanned,
    /// No row needed: an empty page, or an offset past the matches.
    Counted,
    /// From the matches kept by an earlier search at the same generation.
    Cached,
    /// The list in memory read up to the page (its total known from an earlier search).
    ReadToPage,
    /// The list in memory read to its end.
    ReadAll,
}

/// Where a search finds what earlier searches found and the user lists, and how many matches
/// it keeps: the process's [`SEARCH_CACHE`] and [`IMAGE_SLOT`] (the tests bring their own).
struct SearchState<'a> {
    keep_max: usize,
    cache: &'a SearchCache,
    image_slot: &'a ImageSlot,
}

impl<'a> SearchState<'a> {
    /// This cache and image slot, keeping up to [`KEEP_MAX`] matches.
    fn new(cache: &'a SearchCache, image_slot: &'a ImageSlot) -> Self {
        SearchState {
            keep_max: KEEP_MAX,
            cache,
            image_slot,
        }
    }
}

/// The ids of the page and the total, and the plan that found them.
fn find(
    conn: &Connection,
    q: Option<&str>,
    active: bool,
    offset: i64,
    limit: i64,
    state: &SearchState,
) -> rusqlite::Result<(PageAndTotal, Plan)> {
    let list = if active { &ACTIVE } else { &DEACTIVATED };
    let (offset, limit) = (offset.max(0), limit.max(0));
    match q {
        None => Ok((whole_list(conn, list, offset, limit)?, Plan::WholeList)),
        Some(q) if q.contains('\0') => Ok((scanned(conn, list, q, offset, limit)?, Plan::Scanned)),
        Some(q) => in_memory(conn, active, q, offset, limit, state),
    }
}

/// The image of the user lists as `conn` sees them, for [`active_by_login_or_name`]. Take
/// it first in a read transaction, so that what follows agrees with it (see
/// [`ImageSlot::current`]).
pub(crate) fn current_image(conn: &Connection) -> rusqlite::Result<std::sync::Arc<Image>> {
    Ok(IMAGE_SLOT.current(conn)?.0)
}

/// The active users whose login or name contains `q` as `LIKE '%q%'` finds them (the email not
/// looked at), in login order; `None` for a text with a NUL (which `LIKE` reads differently:
/// scan with `LIKE`). The group pickers and permission holders search by it.
pub(crate) fn active_by_login_or_name(image: &Image, q: &str) -> Option<Vec<i64>> {
    if q.contains('\0') {
        return None;
    }
    Some(
        image
            .list(true)
            .login_or_name(q.to_ascii_lowercase().as_bytes()),
    )
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
    /// Its size and the generation: `(size, generation)`.
    size: &'static str,
    /// `id` of a page of the whole list, in login order: `?1` limit, `?2` offset.
    page: &'static str,
    /// `(id, login)` of every match, reading the whole list: `?1` pattern.
    scan: &'static str,
}

macro_rules! list_sql {
    ($active:literal, $size:literal, $scan_from:literal) => {
        ListSql {
            size: concat!("SELECT ", $size, ", generation FROM user_stats"),
            page: concat!(
                "SELECT id FROM users WHERE active = ",
                $active,
                " ORDER BY login LIMIT ?1 OFFSET ?2"
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
const ACTIVE: ListSql = list_sql!("1", "active_users", "users NOT INDEXED");
/// Deactivated users: a scan reads their partial index.
const DEACTIVATED: ListSql = list_sql!("0", "deactivated_users", "users");

/// `(ids of the page, total)`.
type PageAndTotal = (Vec<i64>, i64);

/// How many users are active (kept in `user_stats` by triggers).
pub(crate) fn active_users(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(list_size(conn, &ACTIVE)?.0)
}

fn list_size(conn: &Connection, list: &ListSql) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(list.size)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

fn whole_list(
    conn: &Connection,
    list: &ListSql,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<PageAndTotal> {
    let (total, _) = list_size(conn, list)?;
    let ids = conn
        .prepare_cached(list.page)?
        .query_map(params![limit, offset], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok((ids, total))
}

fn in_memory(
    conn: &Connection,
    active: bool,
    q: &str,
    offset: i64,
    limit: i64,
    state: &SearchState,
) -> rusqlite::Result<(PageAndTotal, Plan)> {
    let (image, _) = state.image_slot.current(conn)?;
    if let Some(diff) = image.diff() {
        state.cache.advance(diff, image.generation());
    }
    let needle = q.to_ascii_lowercase();
    let key = Key {
        generation: image.generation(),
        active,
        phrase: &needle,
    };
    let in_list = image.list(active);
    let (from, len) = (crate::db::as_index(offset), crate::db::as_index(limit));
    match state.cache.get(&key, offset, limit) {
        Some(CachedAnswer::Page(page, total)) => Ok(((page, total), Plan::Cached)),
        Some(CachedAnswer::Total(total)) if limit == 0 || offset >= total => {
            Ok(((Vec::new(), total), Plan::Counted))
        }
        Some(CachedAnswer::Total(total)) => {
            let found = in_list.search(needle.as_bytes(), from, len, 0, true);
            Ok(((found.page, total), Plan::ReadToPage))
        }
        None => {
            let found = in_list.search(needle.as_bytes(), from, len, state.keep_max, false);
            state.cache.put(&key, found.counted, found.all);
            Ok(((found.page, found.counted), Plan::ReadAll))
        }
    }
}

fn scanned(
    conn: &Connection,
    list: &ListSql,
    q: &str,
    offset: i64,
    limit: i64,
) -> rusqlite::Result<PageAndTotal> {
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

    fn page(self, offset: i64) -> PageAndTotal {
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
        .query_map([crate::db::id_list(ids)], users::from_row)?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;
    use crate::db::users::{NewUser, User};
    use std::collections::HashSet;

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
        "n\0ul",
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

    /// How many matches a search keeps: never, a few (more are read to the page), as labgate
    /// does, always.
    const KEEPS: &[usize] = &[0, 5, KEEP_MAX, usize::MAX];

    /// [`find`] with its own search cache and image slot: the ids of the page's rows, the
    /// total, and the plan that found the page.
    fn search_in(
        conn: &Connection,
        q: Option<&str>,
        active: bool,
        offset: i64,
        limit: i64,
        state: &SearchState,
    ) -> (Vec<i64>, i64, Plan) {
        let _read = conn.unchecked_transaction().unwrap();
        let ((ids, total), plan) = find(conn, q, active, offset, limit, state).unwrap();
        let rows: Vec<i64> = rows(conn, &ids).unwrap().iter().map(|u| u.id).collect();
        assert_eq!(rows, ids, "the rows come in the order of the page");
        (ids, total, plan)
    }

    fn page_of_reference(expected: &[i64], offset: i64, limit: i64) -> Vec<i64> {
        expected
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .copied()
            .collect()
    }

    /// Every page (and one past the end) of `q` by every way of keeping, and by [`search`],
    /// against `LIKE`; the plans that found the pages are added to `plans`.
    fn check(
        conn: &Connection,
        q: Option<&str>,
        active: bool,
        page_size: i64,
        plans: &mut HashSet<Plan>,
    ) {
        let expected = reference(conn, q, active);
        let total = expected.len() as i64;
        let pages = 0..=(total / page_size + 1);
        let held = ImageSlot::new();
        for &keep_max in KEEPS {
            let kept = SearchCache::new();
            let state = SearchState {
                keep_max,
                cache: &kept,
                image_slot: &held,
            };
            for page in pages.clone() {
                let offset = page * page_size;
                let (ids, n, plan) = search_in(conn, q, active, offset, page_size, &state);
                plans.insert(plan);
                let want = page_of_reference(&expected, offset, page_size);
                assert_eq!(
                    (&ids, n),
                    (&want, total),
                    "q={q:?} active={active} offset={offset} keep {keep_max} {plan:?}"
                );
            }
        }
        for page in pages {
            let offset = page * page_size;
            let (found, n) = search(conn, q, active, offset, page_size).unwrap();
            let ids: Vec<i64> = found.iter().map(|u| u.id).collect();
            let want = page_of_reference(&expected, offset, page_size);
            assert_eq!((&ids, n), (&want, total), "search q={q:?} offset={offset}");
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
        let mut plans = HashSet::new();
        for q in &queries {
            for active in [true, false] {
                check(&conn, Some(q), active, 7, &mut plans);
            }
        }
        for active in [true, false] {
            check(&conn, None, active, 25, &mut plans);
        }
        let many = all.len() as i64;
        check(&conn, Some("org"), true, many, &mut plans);
        for plan in [
            Plan::WholeList,
            Plan::Scanned,
            Plan::Counted,
            Plan::Cached,
            Plan::ReadToPage,
            Plan::ReadAll,
        ] {
            assert!(plans.contains(&plan), "{plan:?} never ran: {plans:?}");
        }
    }

    /// 120 users `u000`…`u119`: every name has "Person", 1 in 5 "Rare" (`u003`, `u008`, …);
    /// 1 in 4 deactivated (`u003`, `u007`, …). So "rare": 18 active, 6 deactivated.
    fn people(conn: &Connection) {
        for i in 0..120 {
            let login = format!("u{i:03}");
            let name = if i % 5 == 3 {
                "Rare Person"
            } else {
                "Common Person"
            };
            let email = format!("{login}@example.org");
            let id = users::create(
                conn,
                &NewUser {
                    login: &login,
                    name,
                    email: Some(&email),
                    password_hash: None,
                    must_change_password: false,
                    external: None,
                },
                1,
            )
            .unwrap();
            if i % 4 == 3 {
                users::deactivate(conn, id, 2).unwrap();
            }
        }
    }

    /// Runs the searches `(offset, limit, the plan expected)` of `q` in order, each against
    /// `LIKE`.
    fn expect_plans(
        conn: &Connection,
        q: &str,
        active: bool,
        state: &SearchState,
        steps: &[(i64, i64, Plan)],
    ) {
        let expected = reference(conn, Some(q), active);
        for &(offset, limit, plan) in steps {
            let (ids, total, used) = search_in(conn, Some(q), active, offset, limit, state);
            let want = page_of_reference(&expected, offset, limit);
            assert_eq!(
                (&ids, total, used),
                (&want, expected.len() as i64, plan),
                "q={q:?} active={active} offset={offset} limit={limit}"
            );
        }
    }

    #[test]
    fn each_way_is_taken_when_expected_and_answers_alike() {
        let conn = test_db();
        people(&conn);
        let (kept, held) = (SearchCache::new(), ImageSlot::new());
        let state = SearchState::new(&kept, &held);
        // Read once and kept; then every page, past the end and an empty page from what was
        // kept. Any case of the text is the same search.
        expect_plans(
            &conn,
            "rare",
            true,
            &state,
            &[
                (0, 4, Plan::ReadAll),
                (4, 4, Plan::Cached),
                (8, 4, Plan::Cached),
                (100, 4, Plan::Cached),
                (0, 0, Plan::Cached),
            ],
        );
        expect_plans(&conn, "RaRe", true, &state, &[(12, 4, Plan::Cached)]);
        // The deactivated list keeps its own.
        expect_plans(
            &conn,
            "rare",
            false,
            &state,
            &[
                (0, 1, Plan::ReadAll),
                (1, 1, Plan::Cached),
                (5, 1, Plan::Cached),
            ],
        );
        // More matches than are kept: the total is kept, each page read up to its end; past
        // the end or an empty page: the count alone.
        let few = SearchState {
            keep_max: 10,
            ..state
        };
        expect_plans(
            &conn,
            "person",
            true,
            &few,
            &[
                (0, 5, Plan::ReadAll),
                (5, 5, Plan::ReadToPage),
                (85, 5, Plan::ReadToPage),
                (1000, 5, Plan::Counted),
                (0, 0, Plan::Counted),
            ],
        );
        expect_plans(
            &conn,
            "person",
            false,
            &few,
            &[(0, 5, Plan::ReadAll), (5, 50, Plan::ReadToPage)],
        );
        // Without text: the list in login order; a NUL: `LIKE`, which reads the text and the
        // pattern up to their first NUL.
        let expected = reference(&conn, None, true);
        let (ids, total, plan) = search_in(&conn, None, true, 3, 4, &state);
        assert_eq!(
            (ids, total, plan),
            (
                page_of_reference(&expected, 3, 4),
                expected.len() as i64,
                Plan::WholeList
            )
        );
        // ("org\0x" is the pattern '%org': emails that end so.)
        let expected = reference(&conn, Some("org\0x"), true);
        assert!(!expected.is_empty(), "LIKE reads the pattern up to the NUL");
        let (ids, total, plan) = search_in(&conn, Some("org\0x"), true, 0, 4, &state);
        assert_eq!(
            (ids, total, plan),
            (
                page_of_reference(&expected, 0, 4),
                expected.len() as i64,
                Plan::Scanned
            )
        );
        // A backslash is only a backslash.
        let (_, total, plan) = search_in(&conn, Some("u00\\0"), true, 0, 4, &state);
        assert_eq!((total, plan), (0, Plan::ReadAll));
    }

    #[test]
    fn a_write_between_two_pages_reads_again() {
        let conn = test_db();
        people(&conn);
        let (kept, held) = (SearchCache::new(), ImageSlot::new());
        let state = SearchState::new(&kept, &held);
        expect_plans(&conn, "rare", true, &state, &[(0, 4, Plan::ReadAll)]);
        // A new match sorting first: the next page reflects it, its total followed and its
        // list read to the page.
        let u001 = users::find_by_login(&conn, "u001").unwrap().unwrap();
        users::update_profile(&conn, u001.id, "Rare Too", u001.email.as_deref(), 3).unwrap();
        expect_plans(
            &conn,
            "rare",
            true,
            &state,
            &[(4, 4, Plan::ReadToPage), (8, 4, Plan::ReadToPage)],
        );
        assert_eq!(reference(&conn, Some("rare"), true).len(), 19);
        // Deactivating a match moves it to the other list.
        users::deactivate(&conn, u001.id, 4).unwrap();
        expect_plans(
            &conn,
            "rare",
            true,
            &state,
            &[(4, 4, Plan::ReadToPage), (0, 4, Plan::ReadToPage)],
        );
        expect_plans(&conn, "rare", false, &state, &[(0, 9, Plan::ReadAll)]);
        // Another generation the held image cannot be caught up from: all read again.
        let other = test_db();
        search(&other, Some("x"), true, 0, 1).unwrap();
        held.current(&other).unwrap();
        users::update_profile(&conn, u001.id, "Rare Again", None, 5).unwrap();
        expect_plans(&conn, "rare", true, &state, &[(0, 4, Plan::ReadAll)]);
        assert_eq!(reference(&conn, Some("rare"), false).len(), 7);
        // Only the current generation is kept.
        let generation = list_size(&conn, &ACTIVE).unwrap().1;
        assert!(kept.generations().iter().all(|&g| g == generation));
    }

    #[test]
    fn searches_stay_right_through_changes() {
        let conn = test_db();
        let mut g = Gen(0xc4a7_9e5d_0b1f_2a63);
        let all = populate(&conn, &mut g, 150);
        let mut texts: Vec<String> = vec!["org".into(), "smith".into(), "zzz".into(), "a".into()];
        for _ in 0..4 {
            let u = &all[g.below(all.len())];
            texts.push(piece_of(&mut g, u));
        }
        let held = ImageSlot::new();
        let kepts: Vec<SearchCache> = KEEPS.iter().map(|_| SearchCache::new()).collect();
        let mut plans = HashSet::new();
        for step in 0..80 {
            let id = all[g.below(all.len())].id;
            let exists = users::find_by_id(&conn, id).unwrap().is_some();
            match g.below(7) {
                0 => {
                    let login = format!("{}new{step}", word(&mut g));
                    let name = word(&mut g);
                    users::create(
                        &conn,
                        &NewUser {
                            login: &login,
                            name: &name,
                            email: None,
                            password_hash: None,
                            must_change_password: false,
                            external: None,
                        },
                        5,
                    )
                    .unwrap();
                }
                1 if exists => {
                    let email = format!("{}@{}.org", word(&mut g), word(&mut g));
                    users::update_profile(&conn, id, &word(&mut g), Some(&email), 5).unwrap();
                }
                2 if exists => users::deactivate(&conn, id, 5).unwrap(),
                3 if exists => users::reactivate(&conn, id, 5).unwrap(),
                4 if exists => {
                    conn.execute("DELETE FROM users WHERE id = ?1", [id])
                        .unwrap();
                }
                5 if exists => {
                    let login = format!("{}{id}", word(&mut g));
                    conn.execute(
                        "UPDATE users SET login = ?2 WHERE id = ?1",
                        params![id, login],
                    )
                    .unwrap();
                }
                _ => users::touch_last_connection(&conn, id, 5).unwrap(),
            }
            for q in &texts {
                for active in [true, false] {
                    let expected = reference(&conn, Some(q), active);
                    for (kept, &keep_max) in kepts.iter().zip(KEEPS) {
                        let state = SearchState {
                            keep_max,
                            cache: kept,
                            image_slot: &held,
                        };
                        for offset in [0, 4] {
                            let (ids, total, plan) =
                                search_in(&conn, Some(q), active, offset, 4, &state);
                            plans.insert(plan);
                            assert_eq!(
                                (ids, total),
                                (
                                    page_of_reference(&expected, offset, 4),
                                    expected.len() as i64
                                ),
                                "step {step} q={q:?} active={active} keep {keep_max} {plan:?}"
                            );
                        }
                    }
                }
            }
        }
        // A first search after a change is answered from what was kept before it: its pages,
        // or its total with the list read up to the page.
        for plan in [Plan::Cached, Plan::ReadToPage, Plan::ReadAll, Plan::Counted] {
            assert!(plans.contains(&plan), "{plan:?} never ran: {plans:?}");
        }
    }

    #[test]
    fn what_was_kept_follows_a_change() {
        let conn = test_db();
        people(&conn);
        let (kept, held) = (SearchCache::new(), ImageSlot::new());
        let state = SearchState::new(&kept, &held);
        // (One set of kept searches, as labgate has: each search brings all of it along.)
        let few_state = SearchState {
            keep_max: 10,
            ..state
        };
        expect_plans(&conn, "rare", true, &state, &[(0, 4, Plan::ReadAll)]);
        expect_plans(&conn, "person", true, &few_state, &[(0, 4, Plan::ReadAll)]);
        // A change no match sees: the matches kept stay kept.
        let u000 = users::find_by_login(&conn, "u000").unwrap().unwrap();
        users::update_profile(&conn, u000.id, "Common Person Too", None, 3).unwrap();
        expect_plans(&conn, "rare", true, &state, &[(4, 4, Plan::Cached)]);
        expect_plans(
            &conn,
            "person",
            true,
            &few_state,
            &[(4, 4, Plan::ReadToPage)],
        );
        // A new match: the total follows, the page is read.
        users::update_profile(&conn, u000.id, "Rare Now", None, 4).unwrap();
        expect_plans(&conn, "rare", true, &state, &[(0, 4, Plan::ReadToPage)]);
        // A match leaving the list.
        let u003 = users::find_by_login(&conn, "u008").unwrap().unwrap();
        users::deactivate(&conn, u003.id, 5).unwrap();
        expect_plans(&conn, "rare", true, &state, &[(0, 4, Plan::ReadToPage)]);
        expect_plans(
            &conn,
            "person",
            true,
            &few_state,
            &[(80, 20, Plan::ReadToPage)],
        );
        // Two changes between searches: caught up together.
        users::reactivate(&conn, u003.id, 6).unwrap();
        users::update_profile(&conn, u000.id, "Common Person", None, 6).unwrap();
        expect_plans(&conn, "rare", true, &state, &[(0, 4, Plan::ReadToPage)]);
        expect_plans(
            &conn,
            "person",
            true,
            &few_state,
            &[(1000, 4, Plan::Counted)],
        );
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
    }

    #[test]
    fn the_bundled_sqlite_folds_ascii_only() {
        // `LIKE` folds ASCII letters only, as the lists held in memory do.
        let conn = test_db();
        let (like, lower): (bool, String) = conn
            .query_row("SELECT 'é' LIKE 'É', lower('ÉLODIE Straße')", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert!(!like);
        assert_eq!(lower, "Élodie straße");
    }
}
