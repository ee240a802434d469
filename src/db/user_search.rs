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
//!   finds exactly the rows `LIKE` finds. The first search of a text at a generation reads its
//!   matches from the index once, each with its login from the narrow `(id, login)` index (no
//!   row read): that pass counts them and, when there are at most `Plan::keep_max`, sorts them
//!   all by login. The total, and those sorted matches, are kept while `user_stats.generation`
//!   does not change: the next pages and repeats of the search read only their rows. Past
//!   `keep_max` matches the rest is only counted in the index, and a page comes from a walk of
//!   the list in login order when matches are dense enough to fill it within a bounded number
//!   of rows (a text most users match), else from sorting the matches by login for that page.
//!   (Not a walk in login order testing ids against the matches: the matches of a name are a
//!   run of logins, `greta.*`, that such a walk reaches only after every login before it.)
//! - **Shorter text** (too short for trigrams), or text with a character the trigram tokenizer
//!   reads differently: one pass over the list with `LIKE`, keeping only the logins the page
//!   needs.

use super::users::{self, User};
use rusqlite::{params, Connection};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{LazyLock, Mutex};

/// When to walk the list in login order rather than sort the matches, and when to keep the
/// sorted matches (tests change it to run every plan on a few users).
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
    /// The first search of a text at a generation sorts its matches all at once, and keeps
    /// them for its next pages and repeats, when there are at most this many; more are only
    /// counted (and each page walked or sorted). A text most users match reads this many
    /// logins before it is known to have more.
    pub keep_max: i64,
}

/// The thresholds labgate runs with.
pub const PLAN: Plan = Plan {
    walk_slack: 4,
    walk_max: 2_000,
    walk_row_cost: 4,
    keep_max: 5_000,
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
    // One snapshot, so that the page, the total and the generation agree.
    let _read = if conn.is_autocommit() {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    };
    let ((ids, total), _) = find(conn, q, active, offset, limit, plan, &KEPT)?;
    Ok((rows(conn, &ids)?, total))
}

/// How a page was found (for the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Way {
    /// The list in login order, no text.
    WholeList,
    /// One pass over the list with `LIKE`.
    Scanned,
    /// No row needed: an empty page, or an offset past the matches.
    Counted,
    /// A walk of the list in login order.
    Walked,
    /// From the matches sorted by an earlier search at the same generation.
    Kept,
    /// All matches sorted now, and kept.
    SortedAll,
    /// The page of the matches sorted by the index query, nothing kept.
    SortedPage,
}

/// The ids of the page and the total, and how they were found.
fn find(
    conn: &Connection,
    q: Option<&str>,
    active: bool,
    offset: i64,
    limit: i64,
    plan: Plan,
    kept: &Kept,
) -> rusqlite::Result<(Found, Way)> {
    let list = if active { &ACTIVE } else { &DEACTIVATED };
    let (offset, limit) = (offset.max(0), limit.max(0));
    match q {
        None => Ok((whole_list(conn, list, offset, limit)?, Way::WholeList)),
        Some(q) if indexable(q) => indexed(conn, list, q, offset, limit, plan, kept),
        Some(q) => Ok((scanned(conn, list, q, offset, limit)?, Way::Scanned)),
    }
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

/// The query of the active users' trigram index (`users_search_active`) that finds exactly the
/// users whose login or name contains `q` as `LIKE '%q%'` does (its email not looked at);
/// `None` when the index cannot answer `q` (see [`indexable`]).
pub(crate) fn login_or_name_query(q: &str) -> Option<String> {
    indexable(q).then(|| format!("{{login name}} : {}", phrase(q)))
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
    /// Which list (a key of what searches keep).
    name: &'static str,
    /// Its size and the generation: `(size, generation)`.
    size: &'static str,
    /// `id` of a page of the whole list, in login order: `?1` limit, `?2` offset.
    page: &'static str,
    /// `(id, login)` of the matches in the index, in id order (the index's own order, no
    /// sort): `?1` phrase. Logins come from the narrow `(id, login)` index.
    matches: &'static str,
    /// Matches in the index from id `?2` on: `?1` phrase.
    count_from: &'static str,
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
            matches: concat!(
                "SELECT u.id, u.login FROM ",
                $fts,
                " CROSS JOIN users u INDEXED BY users_login_by_id ON u.id = ",
                $fts,
                ".rowid WHERE ",
                $fts,
                " MATCH ?1 ORDER BY ",
                $fts,
                ".rowid"
            ),
            count_from: concat!(
                "SELECT count(*) FROM ",
                $fts,
                " WHERE ",
                $fts,
                " MATCH ?1 AND rowid >= ?2"
            ),
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
    kept: &Kept,
) -> rusqlite::Result<(Found, Way)> {
    let phrase = phrase(q);
    let (size, generation) = list_size(conn, list)?;
    let key = Key {
        generation,
        list: list.name,
        phrase: &phrase,
    };
    let total = match kept.get(&key, offset, limit) {
        Some(Known::Page(page, total)) => return Ok(((page, total), Way::Kept)),
        Some(Known::Total(total)) => total,
        None => {
            let (total, sorted) = matches(conn, list, &phrase, plan.keep_max)?;
            if let Some(sorted) = sorted {
                let page = page_of(&sorted, offset, limit);
                kept.put(&key, total, Some(sorted));
                return Ok(((page, total), Way::SortedAll));
            }
            kept.put(&key, total, None);
            total
        }
    };
    if limit == 0 || offset >= total {
        return Ok(((Vec::new(), total), Way::Counted));
    }
    // Rows a walk in login order reads to fill the page if matches were spread evenly.
    let even = (offset + limit).saturating_mul(size) / total.max(1);
    let budget = even.saturating_mul(plan.walk_slack).saturating_add(limit);
    if budget <= plan.walk_max && budget.saturating_mul(plan.walk_row_cost) < total {
        let pattern = users::like_pattern(q);
        if let Some(page) = walk(conn, list, &pattern, offset, limit, budget)? {
            return Ok(((page, total), Way::Walked));
        }
    }
    let page = conn
        .prepare_cached(list.matches_page)?
        .query_map(params![phrase, limit, offset], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(((page, total), Way::SortedPage))
}

/// The number of matches of `phrase` in the list's index and, when there are at most `keep`,
/// their ids in login order. One pass of the index; past `keep` matches, the rest is only
/// counted there (no login read).
fn matches(
    conn: &Connection,
    list: &ListSql,
    phrase: &str,
    keep: i64,
) -> rusqlite::Result<(i64, Option<Vec<i64>>)> {
    let mut logins = Logins::default();
    let mut past_keep = None;
    {
        let mut stmt = conn.prepare_cached(list.matches)?;
        let mut rows = stmt.query([phrase])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if logins.len() as i64 >= keep {
                past_keep = Some(id);
                break;
            }
            logins.push(row.get_ref(1)?.as_bytes()?, id);
        }
    }
    if let Some(from) = past_keep {
        let rest: i64 = conn
            .prepare_cached(list.count_from)?
            .query_row(params![phrase, from], |r| r.get(0))?;
        return Ok((logins.len() as i64 + rest, None));
    }
    Ok((logins.len() as i64, Some(logins.sorted_ids())))
}

/// Logins (bytes, in one buffer) with their ids, to sort.
#[derive(Default)]
struct Logins {
    bytes: Vec<u8>,
    /// `(first 8 bytes big-endian, zero-padded; start in bytes; end; id)`.
    entries: Vec<(u64, usize, usize, i64)>,
}

impl Logins {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn push(&mut self, login: &[u8], id: i64) {
        let mut prefix = [0u8; 8];
        let n = login.len().min(8);
        prefix[..n].copy_from_slice(&login[..n]);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(login);
        self.entries
            .push((u64::from_be_bytes(prefix), start, self.bytes.len(), id));
    }

    /// The ids in login order: SQLite's BINARY collation (bytes, then length), which the
    /// zero-padded prefix keeps and the whole bytes decide (logins are unique).
    fn sorted_ids(mut self) -> Vec<i64> {
        let bytes = &self.bytes;
        self.entries.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| bytes[a.1..a.2].cmp(&bytes[b.1..b.2]))
        });
        self.entries.into_iter().map(|e| e.3).collect()
    }
}

/// The ids from `offset`, at most `limit`.
fn page_of(ids: &[i64], offset: i64, limit: i64) -> Vec<i64> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(ids.len());
    let len = usize::try_from(limit).unwrap_or(usize::MAX);
    ids[start..].iter().take(len).copied().collect()
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

/// What an earlier search found at a generation: the number of matches of a phrase in a list,
/// and the matches in login order when they were sorted all at once. Valid while
/// `user_stats.generation` is the one it was taken at (generations are random, so two
/// databases in one process never share one).
struct Kept {
    entries: Mutex<VecDeque<Entry>>,
}

struct Entry {
    generation: i64,
    list: &'static str,
    phrase: String,
    total: i64,
    sorted: Option<Vec<i64>>,
}

/// What a search looks for in [`Kept`].
struct Key<'a> {
    generation: i64,
    list: &'static str,
    phrase: &'a str,
}

enum Known {
    /// The page (from the sorted matches) and the total.
    Page(Vec<i64>, i64),
    /// The total only.
    Total(i64),
}

/// How many searches are kept (a few bytes each, plus their sorted matches)...
const ENTRIES_KEPT: usize = 64;
/// ... and how many sorted matches in all (8 bytes each; one search may keep more).
const IDS_KEPT: usize = 50_000;

static KEPT: Kept = Kept::new();

impl Kept {
    const fn new() -> Kept {
        Kept {
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &Key, offset: i64, limit: i64) -> Option<Known> {
        let entries = self.lock();
        let entry = entries.iter().find(|e| key.is(e))?;
        Some(match &entry.sorted {
            Some(sorted) => Known::Page(page_of(sorted, offset, limit), entry.total),
            None => Known::Total(entry.total),
        })
    }

    /// Keeps the total (and the sorted matches) of a search, in place of what was kept for it;
    /// forgets other generations and, past the limits, the oldest searches.
    fn put(&self, key: &Key, total: i64, sorted: Option<Vec<i64>>) {
        let mut entries = self.lock();
        entries.retain(|e| e.generation == key.generation && !key.is(e));
        let ids = |e: &Entry| e.sorted.as_ref().map_or(0, Vec::len);
        let adding = sorted.as_ref().map_or(0, Vec::len);
        let mut held: usize = entries.iter().map(ids).sum();
        while entries.len() >= ENTRIES_KEPT || (held + adding > IDS_KEPT && !entries.is_empty()) {
            if let Some(old) = entries.pop_front() {
                held -= ids(&old);
            }
        }
        entries.push_back(Entry {
            generation: key.generation,
            list: key.list,
            phrase: key.phrase.to_string(),
            total,
            sorted,
        });
    }
}

impl Key<'_> {
    fn is(&self, e: &Entry) -> bool {
        e.generation == self.generation && e.list == self.list && e.phrase == self.phrase
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
        .query_map([super::id_list(ids)], users::from_row)?
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
        // Every search of 3+ characters tries a short walk in login order, and keeps nothing
        // (out of budget: the page of the sorted matches)...
        Plan {
            walk_slack: 1,
            walk_max: i64::MAX,
            walk_row_cost: 0,
            keep_max: 0,
        },
        // ... never walks and sorts the matches for every page...
        Plan {
            walk_max: 0,
            keep_max: 0,
            ..PLAN
        },
        // ... never walks and sorts all matches once, kept for the next pages...
        Plan {
            walk_max: 0,
            keep_max: i64::MAX,
            ..PLAN
        },
        // ... keeps only a few matches (more: walks or sorts each page)...
        Plan {
            keep_max: 5,
            ..PLAN
        },
        // ... or walks as far as it takes.
        Plan {
            walk_slack: 1_000_000,
            walk_max: i64::MAX,
            walk_row_cost: 0,
            keep_max: 0,
        },
    ];

    /// [`search_with`] with its own kept searches: the ids of the page's rows, the total, and
    /// how the page was found.
    fn search_in(
        conn: &Connection,
        q: Option<&str>,
        active: bool,
        offset: i64,
        limit: i64,
        plan: Plan,
        kept: &Kept,
    ) -> (Vec<i64>, i64, Way) {
        let _read = conn.unchecked_transaction().unwrap();
        let ((ids, total), way) = find(conn, q, active, offset, limit, plan, kept).unwrap();
        let rows: Vec<i64> = rows(conn, &ids).unwrap().iter().map(|u| u.id).collect();
        assert_eq!(rows, ids, "the rows come in the order of the page");
        (ids, total, way)
    }

    fn page_of_reference(expected: &[i64], offset: i64, limit: i64) -> Vec<i64> {
        expected
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .copied()
            .collect()
    }

    /// Every page (and one past the end) of `q` by every plan, and by [`search`], against
    /// `LIKE`; the ways the pages were found are added to `ways`.
    fn check(
        conn: &Connection,
        q: Option<&str>,
        active: bool,
        page_size: i64,
        ways: &mut HashSet<Way>,
    ) {
        let expected = reference(conn, q, active);
        let total = expected.len() as i64;
        let pages = 0..=(total / page_size + 1);
        for plan in PLANS {
            let kept = Kept::new();
            for page in pages.clone() {
                let offset = page * page_size;
                let (ids, n, way) = search_in(conn, q, active, offset, page_size, *plan, &kept);
                ways.insert(way);
                let want = page_of_reference(&expected, offset, page_size);
                assert_eq!(
                    (&ids, n),
                    (&want, total),
                    "q={q:?} active={active} offset={offset} {plan:?} {way:?}"
                );
            }
        }
        for page in pages.clone() {
            let offset = page * page_size;
            let (found, n) = search(conn, q, active, offset, page_size).unwrap();
            let ids: Vec<i64> = found.iter().map(|u| u.id).collect();
            let want = page_of_reference(&expected, offset, page_size);
            assert_eq!((&ids, n), (&want, total), "search q={q:?} offset={offset}");
        }
        // The walk in login order alone, never out of budget.
        let list = if active { &ACTIVE } else { &DEACTIVATED };
        let pattern = q.map_or("%".to_string(), users::like_pattern);
        for page in pages {
            let offset = page * page_size;
            let walked = walk(conn, list, &pattern, offset, page_size, i64::MAX).unwrap();
            let want = page_of_reference(&expected, offset, page_size);
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
        let mut ways = HashSet::new();
        for q in &queries {
            for active in [true, false] {
                check(&conn, Some(q), active, 7, &mut ways);
            }
        }
        for active in [true, false] {
            check(&conn, None, active, 25, &mut ways);
        }
        let many = all.len() as i64;
        check(&conn, Some("org"), true, many, &mut ways);
        for way in [
            Way::WholeList,
            Way::Scanned,
            Way::Counted,
            Way::Walked,
            Way::Kept,
            Way::SortedAll,
            Way::SortedPage,
        ] {
            assert!(ways.contains(&way), "{way:?} never ran: {ways:?}");
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

    /// Runs the searches `(offset, limit, the way expected)` of `q` in order with one set of
    /// kept searches, each against `LIKE`.
    fn expect_ways(
        conn: &Connection,
        q: &str,
        active: bool,
        plan: Plan,
        kept: &Kept,
        steps: &[(i64, i64, Way)],
    ) {
        let expected = reference(conn, Some(q), active);
        for &(offset, limit, way) in steps {
            let (ids, total, used) = search_in(conn, Some(q), active, offset, limit, plan, kept);
            let want = page_of_reference(&expected, offset, limit);
            assert_eq!(
                (&ids, total, used),
                (&want, expected.len() as i64, way),
                "q={q:?} active={active} offset={offset} limit={limit} {plan:?}"
            );
        }
    }

    #[test]
    fn each_plan_is_chosen_when_expected_and_answers_alike() {
        let conn = test_db();
        people(&conn);
        // Sorted all at once and kept; then every page, past the end and an empty page from
        // what was kept.
        let kept = Kept::new();
        expect_ways(
            &conn,
            "rare",
            true,
            PLAN,
            &kept,
            &[
                (0, 4, Way::SortedAll),
                (4, 4, Way::Kept),
                (8, 4, Way::Kept),
                (100, 4, Way::Kept),
                (0, 0, Way::Kept),
            ],
        );
        // The deactivated list keeps its own.
        expect_ways(
            &conn,
            "rare",
            false,
            PLAN,
            &kept,
            &[(0, 1, Way::SortedAll), (1, 1, Way::Kept), (5, 1, Way::Kept)],
        );
        // Nothing kept: the page of the sorted matches; past the end or an empty page: the
        // count alone.
        let sorting = Plan {
            walk_max: 0,
            keep_max: 0,
            ..PLAN
        };
        expect_ways(
            &conn,
            "rare",
            true,
            sorting,
            &Kept::new(),
            &[
                (0, 4, Way::SortedPage),
                (4, 4, Way::SortedPage),
                (100, 4, Way::Counted),
                (0, 0, Way::Counted),
            ],
        );
        expect_ways(
            &conn,
            "rare",
            false,
            sorting,
            &Kept::new(),
            &[(0, 1, Way::SortedPage), (1, 5, Way::SortedPage)],
        );
        // A text every user matches, more than is kept: a walk in login order while the page
        // is near enough (estimated rows: (offset + limit) × list size / matches, 4 times over,
        // fewer than the matches), else the page of the sorted matches.
        let walking = Plan {
            walk_row_cost: 1,
            keep_max: 10,
            ..PLAN
        };
        expect_ways(
            &conn,
            "person",
            true,
            walking,
            &Kept::new(),
            &[
                (0, 5, Way::Walked),
                (5, 5, Way::Walked),
                (85, 5, Way::SortedPage),
                (1000, 5, Way::Counted),
            ],
        );
        expect_ways(
            &conn,
            "person",
            false,
            walking,
            &Kept::new(),
            &[(0, 5, Way::Walked), (5, 5, Way::SortedPage)],
        );
        // A walk out of budget (sparse matches): the page of the sorted matches.
        let short_walk = Plan {
            walk_slack: 0,
            walk_max: i64::MAX,
            walk_row_cost: 0,
            keep_max: 0,
        };
        expect_ways(
            &conn,
            "rare",
            true,
            short_walk,
            &Kept::new(),
            &[(0, 4, Way::SortedPage), (4, 4, Way::SortedPage)],
        );
        // The same text by the plan labgate runs: all of it sorted once.
        expect_ways(
            &conn,
            "person",
            true,
            PLAN,
            &Kept::new(),
            &[(0, 5, Way::SortedAll), (95, 5, Way::Kept)],
        );
    }

    #[test]
    fn a_write_between_two_pages_sorts_again() {
        let conn = test_db();
        people(&conn);
        let kept = Kept::new();
        expect_ways(&conn, "rare", true, PLAN, &kept, &[(0, 4, Way::SortedAll)]);
        // A new match sorting first: the next page reflects it, counted and sorted again.
        let u001 = users::find_by_login(&conn, "u001").unwrap().unwrap();
        users::update_profile(&conn, u001.id, "Rare Too", u001.email.as_deref(), 3).unwrap();
        expect_ways(
            &conn,
            "rare",
            true,
            PLAN,
            &kept,
            &[(4, 4, Way::SortedAll), (8, 4, Way::Kept)],
        );
        assert_eq!(reference(&conn, Some("rare"), true).len(), 19);
        // Deactivating a match moves it to the other list.
        users::deactivate(&conn, u001.id, 4).unwrap();
        expect_ways(
            &conn,
            "rare",
            true,
            PLAN,
            &kept,
            &[(4, 4, Way::SortedAll), (0, 4, Way::Kept)],
        );
        expect_ways(&conn, "rare", false, PLAN, &kept, &[(0, 9, Way::SortedAll)]);
        assert_eq!(reference(&conn, Some("rare"), false).len(), 7);
        // Only the current generation is kept.
        let entries = kept.lock();
        let generation = list_size(&conn, &ACTIVE).unwrap().1;
        assert!(entries.iter().all(|e| e.generation == generation));
    }

    #[test]
    fn kept_searches_stay_within_their_limits() {
        let kept = Kept::new();
        let key = |phrase: &'static str| Key {
            generation: 7,
            list: "active_users",
            phrase,
        };
        let phrases: Vec<String> = (0..ENTRIES_KEPT + 10)
            .map(|i| format!("\"p{i}\""))
            .collect();
        for p in &phrases {
            let p: &'static str = Box::leak(p.clone().into_boxed_str());
            kept.put(&key(p), 1, None);
        }
        assert_eq!(kept.lock().len(), ENTRIES_KEPT);
        assert!(
            kept.get(&key("\"p0\""), 0, 1).is_none(),
            "the oldest went first"
        );
        let half = (0..IDS_KEPT as i64 / 2 + 1).collect::<Vec<_>>();
        kept.put(&key("\"a\""), half.len() as i64, Some(half.clone()));
        kept.put(&key("\"b\""), half.len() as i64, Some(half.clone()));
        assert!(
            kept.get(&key("\"a\""), 0, 1).is_none(),
            "ids past the limit"
        );
        match kept.get(&key("\"b\""), 2, 3) {
            Some(Known::Page(page, total)) => {
                assert_eq!((page, total), (vec![2, 3, 4], half.len() as i64))
            }
            _ => panic!("b is kept"),
        }
        // Searching again replaces what was kept; another generation forgets the rest.
        kept.put(&key("\"b\""), 3, None);
        assert!(matches!(
            kept.get(&key("\"b\""), 0, 1),
            Some(Known::Total(3))
        ));
        kept.put(
            &Key {
                generation: 8,
                list: "active_users",
                phrase: "\"c\"",
            },
            1,
            None,
        );
        assert_eq!(kept.lock().len(), 1);
    }

    use crate::db::query_plan;

    #[test]
    fn index_statements_read_logins_from_the_narrow_index() {
        let conn = test_db();
        for (list, fts) in [
            (&ACTIVE, "users_search_active"),
            (&DEACTIVATED, "users_search_deactivated"),
        ] {
            // The matches with their logins, in the index's order: one seek each, no sort.
            let plan = query_plan(&conn, list.matches);
            assert_eq!(plan.len(), 2, "{plan:?}");
            assert!(
                plan[0].starts_with(&format!("SCAN {fts} VIRTUAL TABLE")),
                "{plan:?}"
            );
            assert_eq!(
                plan[1],
                "SEARCH u USING COVERING INDEX users_login_by_id (id=?)"
            );
            // The rest counted in the index alone, from an id on: FTS5 takes the lower rowid
            // bound (`>` in its index string, after `M` for the MATCH).
            let plan = query_plan(&conn, list.count_from);
            assert_eq!(plan.len(), 1, "{plan:?}");
            assert!(
                plan[0].starts_with(&format!("SCAN {fts} VIRTUAL TABLE")),
                "{plan:?}"
            );
            assert!(plan[0].ends_with('>'), "{plan:?}");
            // A page of the sorted matches: the same, sorted.
            let plan = query_plan(&conn, list.matches_page);
            assert_eq!(
                plan[1],
                "SEARCH u USING COVERING INDEX users_login_by_id (id=?)"
            );
            assert!(
                plan.iter().any(|s| s == "USE TEMP B-TREE FOR ORDER BY"),
                "{plan:?}"
            );
        }
        // The walks read the list in login order, unsorted.
        for (list, index) in [
            (&ACTIVE, "sqlite_autoindex_users_1"),
            (&DEACTIVATED, "users_deactivated"),
        ] {
            let plan = query_plan(&conn, list.walk);
            assert_eq!(plan, [format!("SCAN users USING INDEX {index}")]);
        }
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
