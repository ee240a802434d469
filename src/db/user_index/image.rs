//! The user lists held in memory for text search (`api/users/search`, `/admin/users`, the group
//! pickers and permission holders): each user's login, name and email, lowercased the way
//! `LIKE` compares them, in one buffer per run of users in login order, searched with
//! `memchr`'s substring search. A search reads every list entry once (1–2 ms for 100,000 users)
//! whatever it matches, and no page of SQLite.
//!
//! **Kept up to date by the change log.** An image is taken at a `user_stats.generation`; the
//! triggers of migration 6 write each change of a user's login, name, email or activity (and
//! each user added or removed) to `user_changes`, with the generation the change made. A search
//! at a later generation finds its image's generation at the image's last change in the log
//! (the same history), reads the users changed since, and builds a new image that shares every
//! run of users the changes did not touch. When the log no longer reaches back that far, when
//! it holds another history (another database file), or past [`CATCH_UP_MAX`] changes, the
//! image is read again from the whole table.
//!
//! **What matches** is what `LIKE '%q%'` matches on login, name or email: ASCII letters
//! compared without case (both sides lowercased, nothing else folded), any other character
//! as it is, `%` and `_` literal. The fields are separated by `0xFF`, a byte no UTF-8 text
//! holds, so a text never matches across two fields; a substring of valid UTF-8 found at a byte
//! offset always starts on a character boundary. The lists are in login order as SQLite sorts
//! them (bytes): a login that lowercasing changes is also held as written, aside.

use rusqlite::{params, Connection};
use std::sync::{Arc, Mutex};

/// Users per run of a new image; a run grown past twice this by changes is cut. A change copies
/// the run it falls in (about 250 KiB of text), not the list; that size is above the 128 KiB
/// mmap threshold labgate sets (`process::tune_allocator`), so a replaced run is given back to
/// the system rather than left in malloc's arena.
const RUN_USERS: usize = 4096;

/// Past this many changed users since an image, it is read again from the table.
pub const CATCH_UP_MAX: usize = 4096;

/// The byte after each field.
const FIELD_END: u8 = 0xFF;

/// The text `LIKE` compares: up to the first NUL (SQLite reads its arguments as C strings).
fn like_text(field: &[u8]) -> &[u8] {
    match memchr::memchr(0, field) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// Both user lists at one generation of `user_stats`.
pub struct Image {
    generation: i64,
    /// The last change in `user_changes` this image holds.
    seq: i64,
    active: List,
    deactivated: List,
    diff: Option<ImageDiff>,
}

/// The changes between the image an image was caught up from and itself: what a search of the
/// earlier one needs to answer for the later one.
pub struct ImageDiff {
    /// The earlier image's generation.
    pub from_generation: i64,
    changes: Vec<Change>,
}

/// A changed user: its list (`true`: active) and fields before and after, if it was or is.
struct Change {
    before: Option<(bool, Vec<u8>)>,
    after: Option<(bool, Vec<u8>)>,
}

impl ImageDiff {
    /// For the users containing `needle` in one list: how many more (or fewer) there are now,
    /// and whether a changed user is one of them, before or after (the order of the others is
    /// the same).
    pub fn delta(&self, active: bool, needle: &[u8]) -> (i64, bool) {
        let finder = memchr::memmem::Finder::new(needle);
        let matches = |side: &Option<(bool, Vec<u8>)>| {
            side.as_ref()
                .is_some_and(|(a, fields)| *a == active && finder.find(fields).is_some())
        };
        let (mut delta, mut touched) = (0, false);
        for change in &self.changes {
            let (before, after) = (matches(&change.before), matches(&change.after));
            delta += i64::from(after) - i64::from(before);
            touched |= before || after;
        }
        (delta, touched)
    }
}

/// Where the image a search reads came from (for the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSource {
    /// The one held was current.
    Held,
    /// The one held, brought up to date from the change log.
    CaughtUp,
    /// Read from the whole table.
    Read,
}

/// One list: runs of users in login order.
#[derive(Clone, Default)]
pub struct List {
    runs: Vec<Arc<Run>>,
}

#[derive(Default)]
struct Run {
    /// Each user's login, name and email as `LIKE` compares them, lowercased, each followed by
    /// [`FIELD_END`] (an empty field for no email).
    text: Vec<u8>,
    /// Where each user's fields end in `text`.
    ends: Vec<u32>,
    ids: Vec<i64>,
    /// The logins as written of the users (by index) whose login is not its first field (it
    /// has ASCII capitals or a NUL): the order of the list is by the login as written.
    written_logins: Vec<(u32, Box<[u8]>)>,
}

/// A user as the lists hold it.
struct UserRow {
    id: i64,
    login: String,
    name: String,
    email: Option<String>,
    active: bool,
}

/// Matches of a search in one list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Matches {
    /// The matches counted; all of them unless the search stopped at the page.
    pub counted: i64,
    /// The ids of the page, in login order.
    pub page: Vec<i64>,
    /// The ids of all matches in login order, when there were at most the `keep` asked for.
    pub all: Option<Vec<i64>>,
}

impl Run {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    /// The login of user `i`, as written.
    fn login(&self, i: usize) -> &[u8] {
        if let Ok(k) = self
            .written_logins
            .binary_search_by_key(&(i as u32), |o| o.0)
        {
            return &self.written_logins[k].1;
        }
        let fields = &self.text[self.start(i)..self.ends[i] as usize];
        let end = memchr::memchr(FIELD_END, fields).unwrap_or(fields.len());
        &fields[..end]
    }

    fn push(&mut self, row: &UserRow) {
        let email = row.email.as_deref().map(str::as_bytes);
        self.push_user(row.id, row.login.as_bytes(), row.name.as_bytes(), email);
    }

    fn push_user(&mut self, id: i64, login: &[u8], name: &[u8], email: Option<&[u8]>) {
        let start = self.text.len();
        self.push_lower(login);
        if self.text[start..self.text.len() - 1] != *login {
            self.written_logins.push((self.len() as u32, login.into()));
        }
        self.push_lower(name);
        self.push_lower(email.unwrap_or(b""));
        self.close(id);
    }

    fn push_lower(&mut self, field: &[u8]) {
        self.text
            .extend(like_text(field).iter().map(u8::to_ascii_lowercase));
        self.text.push(FIELD_END);
    }

    fn close(&mut self, id: i64) {
        // A run holds about RUN_USERS users of at most a few KiB each, far below 4 GiB.
        self.ends.push(self.text.len() as u32);
        self.ids.push(id);
    }

    /// Appends user `i` of `from`: [`Run::copy`] of one.
    fn copy_one(&mut self, from: &Run, i: usize) {
        if !from.written_logins.is_empty() {
            if let Ok(k) = from
                .written_logins
                .binary_search_by_key(&(i as u32), |o| o.0)
            {
                self.written_logins
                    .push((self.len() as u32, from.written_logins[k].1.clone()));
            }
        }
        self.text
            .extend_from_slice(&from.text[from.start(i)..from.ends[i] as usize]);
        self.close(from.ids[i]);
    }

    /// Appends the users `users` of `from`.
    fn copy(&mut self, from: &Run, users: std::ops::Range<usize>) {
        if users.is_empty() {
            return;
        }
        let (first, at) = (self.len() as u32, self.text.len() as u32);
        let start = from.start(users.start) as u32;
        let moved = from
            .written_logins
            .iter()
            .filter(|o| users.contains(&(o.0 as usize)));
        self.written_logins
            .extend(moved.map(|(i, login)| (i - users.start as u32 + first, login.clone())));
        self.text
            .extend_from_slice(&from.text[start as usize..from.ends[users.end - 1] as usize]);
        self.ends
            .extend(from.ends[users.clone()].iter().map(|end| end - start + at));
        self.ids.extend_from_slice(&from.ids[users]);
    }

    fn shrunk(mut self) -> Run {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.written_logins.shrink_to_fit();
        self
    }
}

impl List {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }

    /// Adds user `i` of `from` at the end (users come in login order).
    #[cfg(test)]
    fn push_from(&mut self, from: &Run, i: usize) {
        let full = self.runs.last().is_none_or(|r| r.len() >= RUN_USERS);
        if full {
            self.seal_last();
            self.runs.push(Arc::new(Run::default()));
        }
        let last = self.runs.last_mut().expect("a run was just added");
        Arc::get_mut(last)
            .expect("a run being built is not shared")
            .copy_one(from, i);
    }

    /// Adds a user at the end (rows come in login order).
    #[cfg(test)]
    fn push(&mut self, row: &UserRow) {
        let mut one = Run::default();
        one.push(row);
        self.push_from(&one, 0);
    }

    #[cfg(test)]
    fn seal_last(&mut self) {
        if let Some(last) = self.runs.last_mut() {
            if let Some(run) = Arc::get_mut(last) {
                *run = std::mem::take(run).shrunk();
            }
        }
    }

    /// The list with the users `gone` (sorted ids) taken out and `rows` (sorted by login) put
    /// in, copying each run they touch once and sharing the others; a run grown past twice
    /// [`RUN_USERS`] is cut into runs of about [`RUN_USERS`]. Also gives the fields of the users taken out.
    fn changed(&self, gone: &[i64], rows: &[&UserRow]) -> (List, Vec<(i64, Vec<u8>)>) {
        let holds = |id: &i64| {
            if gone.len() <= 8 {
                gone.contains(id)
            } else {
                gone.binary_search(id).is_ok()
            }
        };
        // Whether `ids` hold one of `gone`: a few compared with every id in blocks without an
        // early exit (which the compiler turns into vector compares), more looked up.
        let holds_any = |ids: &[i64]| {
            if gone.len() > 8 {
                return ids.iter().any(holds);
            }
            ids.chunks(16).any(|block| {
                gone.iter()
                    .any(|g| block.iter().fold(false, |found, id| found | (id == g)))
            })
        };
        let mut runs = Vec::with_capacity(self.runs.len() + 1);
        let mut out = Vec::new();
        let empty = [Arc::new(Run::default())];
        let old = if self.runs.is_empty() {
            &empty[..]
        } else {
            &self.runs[..]
        };
        let mut k = 0;
        for (r, run) in old.iter().enumerate() {
            // The rows before the next run's first login go into this one.
            let end = match old.get(r + 1) {
                Some(next) => {
                    let first = next.login(0);
                    k + rows[k..].partition_point(|row| row.login.as_bytes() < first)
                }
                None => rows.len(),
            };
            if end == k && !holds_any(&run.ids) {
                if run.len() > 0 {
                    runs.push(Arc::clone(run));
                }
                continue;
            }
            let mut merged = Run::default();
            let adding: usize = rows[k..end].iter().map(|r| r.text_len()).sum();
            merged.text.reserve(run.text.len() + adding);
            merged.ends.reserve(run.len() + end - k);
            merged.ids.reserve(run.len() + end - k);
            // Copies the users `from..to` of the run, leaving out those gone.
            let mut keep = |merged: &mut Run, from: usize, to: usize| {
                let mut start = from;
                for i in from..to {
                    if holds(&run.ids[i]) {
                        merged.copy(run, start..i);
                        let fields = run.text[run.start(i)..run.ends[i] as usize].to_vec();
                        out.push((run.ids[i], fields));
                        start = i + 1;
                    }
                }
                merged.copy(run, start..to);
            };
            let mut i = 0;
            for row in &rows[k..end] {
                let login = row.login.as_bytes();
                // The first user from `i` whose login does not sort before this one.
                let (mut lo, mut hi) = (i, run.len());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if run.login(mid) < login {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                keep(&mut merged, i, lo);
                merged.push(row);
                i = lo;
            }
            keep(&mut merged, i, run.len());
            k = end;
            if merged.len() == 0 {
                continue;
            }
            if merged.len() <= 2 * RUN_USERS {
                runs.push(Arc::new(merged.shrunk()));
                continue;
            }
            let pieces = merged.len().div_ceil(RUN_USERS);
            for p in 0..pieces {
                let mut piece = Run::default();
                piece.copy(
                    &merged,
                    p * merged.len() / pieces..(p + 1) * merged.len() / pieces,
                );
                runs.push(Arc::new(piece.shrunk()));
            }
        }
        (List { runs }, out)
    }

    /// The users whose login or name (not email) contains `needle` (lowercased by the
    /// caller), in login order.
    pub fn login_or_name(&self, needle: &[u8]) -> Vec<i64> {
        let mut out = Vec::new();
        let finder = memchr::memmem::Finder::new(needle);
        for run in &self.runs {
            if needle.is_empty() {
                out.extend_from_slice(&run.ids);
                continue;
            }
            let mut e = 0usize;
            for p in finder.find_iter(&run.text) {
                if p < run.start(e) {
                    continue;
                }
                while run.ends[e] as usize <= p {
                    e += 1;
                }
                // Fields before the one `p` is in: 0 the login, 1 the name, 2 the email (and
                // every later match in this user is in the email too).
                let before = memchr::memchr_iter(FIELD_END, &run.text[run.start(e)..p]).count();
                if before < 2 {
                    out.push(run.ids[e]);
                }
                e += 1;
                if e == run.len() {
                    break;
                }
            }
        }
        out
    }

    /// The users whose fields contain `needle` (lowercased by the caller): counted, the page
    /// `offset..offset + limit` of them, and all of them when at most `keep`. With
    /// `stop_at_page`, the count stops once the page is full.
    pub fn search(
        &self,
        needle: &[u8],
        offset: usize,
        limit: usize,
        keep: usize,
        stop_at_page: bool,
    ) -> Matches {
        let page_end = offset.saturating_add(limit);
        let mut page = Vec::new();
        let mut all = Some(Vec::new());
        let mut n = 0usize;
        let finder = memchr::memmem::Finder::new(needle);
        'runs: for run in &self.runs {
            let mut e = 0usize;
            let mut hits = finder.find_iter(&run.text);
            loop {
                if !needle.is_empty() {
                    let Some(p) = hits.next() else { break };
                    // `p` is in the fields of the first user (from `e`) whose end is past it.
                    if p < run.start(e) {
                        continue;
                    }
                    while run.ends[e] as usize <= p {
                        e += 1;
                    }
                } else if e == run.len() {
                    break;
                }
                if n >= offset && n < page_end {
                    page.push(run.ids[e]);
                }
                n += 1;
                if let Some(ids) = &mut all {
                    if ids.len() < keep {
                        ids.push(run.ids[e]);
                    } else {
                        all = None;
                    }
                }
                if stop_at_page && n >= page_end {
                    break 'runs;
                }
                // The next match is in a later user.
                e += 1;
                if e == run.len() {
                    break;
                }
            }
        }
        Matches {
            counted: n as i64,
            page,
            all,
        }
    }
}

impl Image {
    /// The list of active users, or of deactivated ones.
    pub fn list(&self, active: bool) -> &List {
        if active {
            &self.active
        } else {
            &self.deactivated
        }
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The image with `changed` users (sorted, deduplicated) as they are in `rows` now (those
    /// not in `rows` were removed), at `generation` and `seq`.
    fn caught_up(&self, changed: &[i64], rows: &[UserRow], generation: i64, seq: i64) -> Image {
        let by_list = |active: bool| {
            rows.iter()
                .filter(|r| r.active == active)
                .collect::<Vec<_>>()
        };
        let (active, mut was_active) = self.active.changed(changed, &by_list(true));
        let (deactivated, mut was_deactivated) = self.deactivated.changed(changed, &by_list(false));
        was_active.sort_unstable_by_key(|w| w.0);
        was_deactivated.sort_unstable_by_key(|w| w.0);
        let mut changes: Vec<Change> = changed
            .iter()
            .map(|&id| {
                let was = |list: &[(i64, Vec<u8>)], active: bool| {
                    let i = list.binary_search_by_key(&id, |w| w.0).ok()?;
                    Some((active, list[i].1.clone()))
                };
                Change {
                    before: was(&was_active, true).or_else(|| was(&was_deactivated, false)),
                    after: None,
                }
            })
            .collect();
        for row in rows {
            if let Ok(i) = changed.binary_search(&row.id) {
                let mut one = Run::default();
                one.push(row);
                changes[i].after = Some((row.active, one.text));
            }
        }
        Image {
            generation,
            seq,
            active,
            deactivated,
            diff: Some(ImageDiff {
                from_generation: self.generation,
                changes,
            }),
        }
    }

    /// What changed since the image this one was caught up from.
    pub fn diff(&self) -> Option<&ImageDiff> {
        self.diff.as_ref()
    }
}

const COLUMNS: &str = "id, login, name, email, active";

impl UserRow {
    /// An upper bound of the bytes its fields take in a run.
    fn text_len(&self) -> usize {
        self.login.len() + self.name.len() + self.email.as_ref().map_or(0, String::len) + 3
    }
}

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        login: r.get(1)?,
        name: r.get(2)?,
        email: r.get(3)?,
        active: r.get(4)?,
    })
}

/// The generation of `user_stats` and the last change in the log.
fn log_position(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(
        "SELECT (SELECT generation FROM user_stats), (SELECT coalesce(max(seq), 0) FROM user_changes)",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Reads both lists from the whole table: in table order into one buffer, then copied into
/// the lists in login order (an index walk in login order would read the rows at random).
fn read(conn: &Connection) -> rusqlite::Result<Image> {
    let (generation, seq) = log_position(conn)?;
    let mut all = Run::default();
    let mut active = Vec::new();
    // Each login as written, in one buffer, with its 16 first bytes (big-endian, zero-padded)
    // to compare most pairs at once: `(prefix, start, end)`.
    let mut logins = Vec::new();
    let mut keys: Vec<(u128, u32, u32)> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let login = r.get_ref(1)?.as_bytes()?;
            let email = r.get_ref(3)?.as_bytes_or_null()?;
            all.push_user(r.get(0)?, login, r.get_ref(2)?.as_bytes()?, email);
            active.push(r.get::<_, bool>(4)?);
            let mut prefix = [0u8; 16];
            let n = login.len().min(16);
            prefix[..n].copy_from_slice(&login[..n]);
            let start = logins.len() as u32;
            logins.extend_from_slice(login);
            keys.push((u128::from_be_bytes(prefix), start, logins.len() as u32));
        }
    }
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    // SQLite's order of TEXT (BINARY): bytes, then length; the prefix keeps it.
    let login = |k: &(u128, u32, u32)| &logins[k.1 as usize..k.2 as usize];
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&keys[a as usize], &keys[b as usize]);
        a.0.cmp(&b.0).then_with(|| login(a).cmp(login(b)))
    });
    drop(keys);
    drop(logins);
    let mut image = Image {
        generation,
        seq,
        active: List::default(),
        deactivated: List::default(),
        diff: None,
    };
    // The runs being filled: active, deactivated.
    let mut filling = [Run::default(), Run::default()];
    for i in order {
        let i = i as usize;
        let (list, run) = if active[i] {
            (&mut image.active, &mut filling[0])
        } else {
            (&mut image.deactivated, &mut filling[1])
        };
        run.copy_one(&all, i);
        if run.len() == RUN_USERS {
            list.runs.push(Arc::new(std::mem::take(run).shrunk()));
        }
    }
    let [active, deactivated] = filling;
    for (list, run) in [
        (&mut image.active, active),
        (&mut image.deactivated, deactivated),
    ] {
        if run.len() > 0 {
            list.runs.push(Arc::new(run.shrunk()));
        }
    }
    Ok(image)
}

/// `held` brought up to the database's generation from the change log, or `None` when the log
/// does not reach back to it or holds more than [`CATCH_UP_MAX`] changed users since.
fn catch_up(conn: &Connection, held: &Image) -> rusqlite::Result<Option<Image>> {
    let same_history: Option<i64> = conn
        .prepare_cached("SELECT generation FROM user_changes WHERE seq = ?1")?
        .query_row([held.seq], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if same_history != Some(held.generation) {
        return Ok(None);
    }
    let (generation, seq) = log_position(conn)?;
    let mut changed = conn
        .prepare_cached(
            "SELECT DISTINCT user_id FROM user_changes WHERE seq > ?1 AND user_id IS NOT NULL \
             LIMIT ?2",
        )?
        .query_map(params![held.seq, CATCH_UP_MAX as i64 + 1], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    if changed.len() > CATCH_UP_MAX {
        return Ok(None);
    }
    changed.sort_unstable();
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM users WHERE id IN (SELECT value FROM json_each(?1)) \
             ORDER BY login"
        ))?
        .query_map([crate::db::id_list(&changed)], user_row)?
        .collect::<rusqlite::Result<Vec<UserRow>>>()?;
    Ok(Some(held.caught_up(&changed, &rows, generation, seq)))
}

/// Where an image is held between searches: the image of the database last searched, or
/// nothing yet. One per process ([`IMAGE_SLOT`]); the tests hold their own.
pub struct ImageSlot(Mutex<Option<Arc<Image>>>);

/// The image this process holds, shared by every request, from the first text search until the
/// process ends (replaced whenever a search finds the database at another generation).
pub static IMAGE_SLOT: ImageSlot = ImageSlot::new();

impl Default for ImageSlot {
    fn default() -> ImageSlot {
        ImageSlot::new()
    }
}

impl ImageSlot {
    pub const fn new() -> ImageSlot {
        ImageSlot(Mutex::new(None))
    }

    fn get(&self) -> Option<Arc<Image>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn hold(&self, image: &Arc<Image>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(image));
    }

    /// The image of the database as `conn` sees it, and where it came from. Call it inside a read
    /// transaction, so that what the search reads next agrees with it, and before anything else
    /// is read in it: the image held is taken before the transaction's snapshot begins, so it is
    /// never newer than that snapshot (a newer one could not be caught up from, and would be
    /// read again from the table).
    pub fn current(&self, conn: &Connection) -> rusqlite::Result<(Arc<Image>, ImageSource)> {
        let held = self.get();
        let generation: i64 = conn
            .prepare_cached("SELECT generation FROM user_stats")?
            .query_row([], |r| r.get(0))?;
        if let Some(image) = &held {
            if image.generation == generation {
                return Ok((Arc::clone(image), ImageSource::Held));
            }
            if let Some(image) = catch_up(conn, image)? {
                let image = Arc::new(image);
                self.hold(&image);
                return Ok((image, ImageSource::CaughtUp));
            }
        }
        let image = Arc::new(read(conn)?);
        self.hold(&image);
        Ok((image, ImageSource::Read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, login: &str, name: &str, email: Option<&str>) -> UserRow {
        UserRow {
            id,
            login: login.into(),
            name: name.into(),
            email: email.map(Into::into),
            active: true,
        }
    }

    fn ids(list: &List) -> Vec<i64> {
        list.search(b"", 0, usize::MAX, usize::MAX, false)
            .all
            .unwrap()
    }

    fn logins(list: &List) -> Vec<String> {
        let mut out = Vec::new();
        for run in &list.runs {
            for i in 0..run.len() {
                out.push(String::from_utf8(run.login(i).to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn fields_match_apart_and_without_ascii_case() {
        let mut list = List::default();
        list.push(&user(1, "Ann", "Bob Smith", Some("x@Example.org")));
        list.push(&user(2, "bob", "Élodie", None));
        list.push(&user(3, "cy", "ÉLODIE", Some("cy@b.c")));
        let found = |q: &str| list.search(q.as_bytes(), 0, 10, 10, false).page;
        assert_eq!(found("ann"), [1]);
        assert_eq!(found("bob"), [1, 2]);
        assert_eq!(found("example"), [1]);
        // Across two fields: the login's end and the name's start.
        assert_eq!(found("nbob"), Vec::<i64>::new());
        assert_eq!(found("annbob"), Vec::<i64>::new());
        // Only ASCII is folded: "ÉLODIE" is held as "Élodie".
        assert_eq!(found("élodie"), Vec::<i64>::new());
        assert_eq!(found("Élodie"), [2, 3]);
        assert_eq!(found("Élo"), [2, 3]);
        assert_eq!(found("@"), [1, 3]);
        let by_login_or_name = |q: &str| list.login_or_name(q.as_bytes());
        assert_eq!(by_login_or_name("bob"), [1, 2]);
        assert_eq!(by_login_or_name("example"), Vec::<i64>::new());
        assert_eq!(by_login_or_name("@"), Vec::<i64>::new());
        assert_eq!(by_login_or_name("Élo"), [2, 3]);
        assert_eq!(by_login_or_name("c"), [3]);
        assert_eq!(by_login_or_name(""), [1, 2, 3]);
        assert_eq!(logins(&list), ["Ann", "bob", "cy"]);
    }

    #[test]
    fn pages_counts_and_kept_matches() {
        let n = 3 * RUN_USERS as i64 - 10;
        let mut list = List::default();
        for i in 0..n {
            list.push(&user(i, &format!("u{i:06}"), "Person", None));
        }
        assert_eq!(list.runs.len(), 3);
        // A page across two runs.
        let at = RUN_USERS - 4;
        let m = list.search(b"person", at, 10, usize::MAX, false);
        assert_eq!(m.counted, n);
        assert_eq!(m.page, (at as i64..at as i64 + 10).collect::<Vec<_>>());
        assert_eq!(m.all.as_ref().map(Vec::len), Some(n as usize));
        let m = list.search(b"person", at, 10, 100, false);
        assert_eq!((m.counted, m.all), (n, None));
        let m = list.search(b"person", at, 10, 100, true);
        assert_eq!((m.counted, m.page.len()), (at as i64 + 10, 10));
        let m = list.search(b"u00299", 0, 5, 5, false);
        assert_eq!(m.page, (2990..2995).collect::<Vec<_>>());
        assert_eq!((m.counted, m.all), (10, None));
    }

    #[test]
    fn changes_keep_login_order_and_share_untouched_runs() {
        let n = 5 * RUN_USERS;
        let login = |i: usize| format!("u{:06}", i * 2);
        let mut list = List::default();
        for i in 0..n {
            list.push(&user(i as i64, &login(i), "P", None));
        }
        list.seal_last();
        let before = list.runs.clone();
        // Removing one user copies one run.
        let (without, out) = list.changed(&[7], &[]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 7);
        let copied = without
            .runs
            .iter()
            .zip(&before)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(without.len(), n - 1);
        // Inserting many into one run cuts it, order kept; one into a run copies that run.
        let mut rows: Vec<UserRow> = (0..3 * RUN_USERS)
            .map(|i| user(1_000_000 + i as i64, &format!("u000011x{i:06}"), "P", None))
            .collect();
        rows.push(user(2_000_000, "A-first", "P", None));
        rows.push(user(2_000_001, "zz-last", "P", None));
        rows.push(user(
            2_000_002,
            &format!("{}x", login(2 * RUN_USERS + 1)),
            "P",
            None,
        ));
        rows.sort_by(|a, b| a.login.cmp(&b.login));
        let grown = without.changed(&[], &rows.iter().collect::<Vec<_>>()).0;
        let all = logins(&grown);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), n - 1 + 3 * RUN_USERS + 3);
        assert!(grown.runs.iter().all(|r| r.len() <= 2 * RUN_USERS));
        assert_eq!(ids(&grown).len(), all.len());
        let copied = grown
            .runs
            .iter()
            .filter(|r| !without.runs.iter().any(|w| Arc::ptr_eq(r, w)))
            .count();
        // The first run (RUN_USERS - 1 users, A-first and 3 × RUN_USERS: cut in 4), the third, the last.
        assert_eq!(copied, 4 + 1 + 1);
        // An empty list takes insertions.
        let empty = List::default().changed(&[1], &[]).0;
        assert!(empty.runs.is_empty());
        let some = empty
            .changed(&[], &[&user(2, "b", "b", None), &user(1, "c", "b", None)])
            .0;
        assert_eq!(ids(&some), [2, 1]);
        // Out and in at once: one copy of the run, the user moved to its new place.
        let moved = some.changed(&[2], &[&user(2, "d", "b", None)]).0;
        assert_eq!(ids(&moved), [1, 2]);
        assert_eq!(logins(&moved), ["c", "d"]);
    }

    use crate::db::test_db;
    use crate::db::users::{self, NewUser};

    /// A user as `(id, login as written, fields)`.
    type Flat = (i64, Vec<u8>, Vec<u8>);

    /// Each list as its users, whatever its runs.
    fn flat(image: &Image) -> [Vec<Flat>; 2] {
        [&image.active, &image.deactivated].map(|list| {
            let mut out = Vec::new();
            for run in &list.runs {
                for i in 0..run.len() {
                    let fields = run.text[run.start(i)..run.ends[i] as usize].to_vec();
                    out.push((run.ids[i], run.login(i).to_vec(), fields));
                }
            }
            out
        })
    }

    fn create(conn: &Connection, login: &str, name: &str) -> i64 {
        let email = format!("{login}@Example.org");
        users::create(
            conn,
            &NewUser {
                login,
                name,
                email: Some(&email),
                password_hash: None,
                must_change_password: false,
                external: None,
            },
            1,
        )
        .unwrap()
    }

    fn current(held: &ImageSlot, conn: &Connection) -> (Arc<Image>, ImageSource) {
        let _read = conn.unchecked_transaction().unwrap();
        held.current(conn).unwrap()
    }

    #[test]
    fn catching_up_gives_what_reading_gives() {
        let conn = test_db();
        {
            let tx = conn.unchecked_transaction().unwrap();
            for i in 0..(2 * RUN_USERS + 500) {
                create(&tx, &format!("u{:05}", i * 4), "Person");
            }
            tx.commit().unwrap();
        }
        let held = ImageSlot::new();
        assert_eq!(current(&held, &conn).1, ImageSource::Read);
        assert_eq!(current(&held, &conn).1, ImageSource::Held);
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut made = 0;
        for step in 0..300 {
            let id = 2 + next(2 * RUN_USERS as u64 + 500) as i64;
            let exists = users::find_by_id(&conn, id).unwrap().is_some();
            match next(8) {
                0 => {
                    made += 1;
                    create(&conn, &format!("u{:05}x{made}", next(10_000)), "New Person");
                }
                1 if exists => users::update_profile(&conn, id, "Renamed", None, 2).unwrap(),
                2 if exists => users::deactivate(&conn, id, 2).unwrap(),
                3 if exists => users::reactivate(&conn, id, 2).unwrap(),
                4 if exists => {
                    conn.execute("DELETE FROM users WHERE id = ?1", [id])
                        .unwrap();
                }
                5 if exists => {
                    // A login with capitals, sorting elsewhere.
                    let login = format!("Z{id}Mixed");
                    conn.execute(
                        "UPDATE users SET login = ?2 WHERE id = ?1",
                        params![id, login],
                    )
                    .unwrap();
                }
                6 if exists => users::touch_last_connection(&conn, id, 3).unwrap(),
                _ => {}
            }
            if step % 3 == 0 {
                let (image, how) = current(&held, &conn);
                assert_ne!(how, ImageSource::Read, "step {step}");
                let fresh = {
                    let _read = conn.unchecked_transaction().unwrap();
                    read(&conn).unwrap()
                };
                assert_eq!(image.generation, fresh.generation);
                assert_eq!(image.seq, fresh.seq);
                assert!(flat(&image) == flat(&fresh), "step {step}");
            }
        }
    }

    #[test]
    fn another_history_a_short_log_or_many_changes_read_again() {
        let a = test_db();
        let held = ImageSlot::new();
        assert_eq!(current(&held, &a).1, ImageSource::Read);
        create(&a, "one", "One");
        assert_eq!(current(&held, &a).1, ImageSource::CaughtUp);
        // Another database: its own history.
        let b = test_db();
        create(&b, "two", "Two");
        assert_eq!(current(&held, &b).1, ImageSource::Read);
        assert_eq!(current(&held, &a).1, ImageSource::Read);
        // The log no longer reaches back to the image.
        create(&a, "three", "Three");
        a.execute("DELETE FROM user_changes", []).unwrap();
        let (image, how) = current(&held, &a);
        assert_eq!(how, ImageSource::Read);
        assert_eq!(image.seq, 0);
        create(&a, "four", "Four");
        assert_eq!(
            current(&held, &a).1,
            ImageSource::Read,
            "nothing to catch up from"
        );
        assert_eq!(current(&held, &a).1, ImageSource::Held);
        create(&a, "five", "Five");
        assert_eq!(current(&held, &a).1, ImageSource::CaughtUp);
        // More changed users than are caught up: the log keeps the last 10,000 changes.
        {
            let tx = a.unchecked_transaction().unwrap();
            for i in 0..10_050 {
                create(&tx, &format!("bulk{i:05}"), "Bulk");
            }
            tx.commit().unwrap();
        }
        assert_eq!(current(&held, &a).1, ImageSource::Read);
        let (rows, first): (i64, i64) = a
            .query_row("SELECT count(*), min(seq) FROM user_changes", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(rows, 10_000);
        assert!(first > 50, "the oldest went first");
        let found = |held: &ImageSlot| {
            current(held, &a)
                .0
                .list(true)
                .search(b"bulk0", 0, 3, 0, false)
                .counted
        };
        assert_eq!(found(&held), 10_000);
    }
}
