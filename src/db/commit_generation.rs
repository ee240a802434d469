//! The commit generation: a number, kept in this process, that moves after every commit that
//! changed the database, so that what was computed from the database (the cache of signed-in
//! callers) can tell it is still current without reading the database again. Counted by a WAL
//! hook that every connection from [`super::open`] carries.

use rusqlite::Connection;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Commits of this process that changed the database: see [`generation`].
pub(super) static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Commits of this process that changed the `settings` table: see [`settings_generation`].
pub(super) static SETTINGS_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Where a connection counts its commits: all of them, and those that wrote the settings.
#[derive(Clone, Copy)]
pub(super) struct Counters {
    pub commits: &'static AtomicU64,
    pub settings: &'static AtomicU64,
}

/// The table whose writes move [`settings_generation`].
const SETTINGS_TABLE: &str = "settings";
/// Cleared if a connection could not be put in WAL mode: commits are then not counted.
static COMMITS_COUNTED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Set while [`uncounted_write`] runs.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// A number that changes after every commit, by any connection of this process opened with
/// [`super::open`], that changed the database. Something computed from the database after reading
/// generation `g` is still up to date as long as the generation is `g` (writes of other
/// processes aside: they are not counted).
///
/// Counted in SQLite's WAL hook, which runs right after the commit, once the new data is
/// visible to every reader: a reader that sees the new number then reads the new data. (The
/// commit hook would not do: it runs before the commit is visible, so a reader could see the
/// new number, read the old data, and keep it as current.)
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// A number that changes after every commit, by any connection of this process opened with
/// [`super::open`], that wrote a row of the `settings` table (and only then): what is computed
/// from the settings alone stays current across the commits of sign-ins and admin writes. Seen
/// by SQLite's update hook, which sees every row a statement inserts, updates or deletes in a
/// rowid table (`settings` is one); counted, as [`generation`], once the commit is visible.
pub fn settings_generation() -> u64 {
    SETTINGS_GENERATION.load(Ordering::SeqCst)
}

/// Whether [`generation`] counts every commit: false if a connection is not in WAL mode (a file
/// system without shared memory), in which case nothing may be cached by generation.
pub fn commits_counted() -> bool {
    COMMITS_COUNTED.load(Ordering::SeqCst)
}

/// Records that a connection is not in WAL mode, where the WAL hook does not run: from then on
/// [`commits_counted`] is false.
pub(super) fn not_all_counted() {
    COMMITS_COUNTED.store(false, Ordering::SeqCst);
}

/// Runs `write`, an autocommit write that changes nothing a cache keyed by [`generation`] holds,
/// without moving the generation: the activity stamps `sessions::touch` and `tokens::touch`,
/// which would otherwise drop every cached caller once a minute per active session. Inside an
/// open transaction it has no effect (the commit, later, is counted).
pub(crate) fn uncounted_write<T>(write: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            UNCOUNTED.with(|u| u.set(false));
        }
    }
    UNCOUNTED.with(|u| u.set(true));
    let _reset = Reset;
    write()
}

/// Longest a value held by [`Held`] (or by the cache of signed-in callers) is used: how late a
/// write of another process, which the generation does not count, may be seen.
pub const HELD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

/// One value computed from the database and held in memory while nothing changed: used only at
/// the [`generation`] it was read at, and for at most [`HELD_MAX_AGE`]. It is read afresh, and
/// not kept, through a connection inside a transaction (that read may see the transaction's own
/// writes, which are not committed and may never be), or when commits are not counted.
pub struct Held<T> {
    current: std::sync::RwLock<Option<HeldValue<T>>>,
    /// The generation the value is keyed by: [`generation`], or a narrower one such as
    /// [`settings_generation`] for a value computed from fewer tables.
    source: fn() -> u64,
}

struct HeldValue<T> {
    generation: u64,
    loaded_at: std::time::Instant,
    value: std::sync::Arc<T>,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held::keyed_by(generation)
    }
}

impl<T> Held<T> {
    /// Held while `source` (a generation of this module) stays the same.
    pub fn keyed_by(source: fn() -> u64) -> Held<T> {
        Held {
            current: std::sync::RwLock::new(None),
            source,
        }
    }

    /// The value held, or `load(conn)` read afresh (and held when it may be).
    pub fn get<E>(
        &self,
        conn: &Connection,
        load: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<std::sync::Arc<T>, E> {
        // Read before the rows: what is loaded below is current at least as of this generation.
        let generation = (self.source)();
        let keep = commits_counted() && conn.is_autocommit();
        if keep {
            let held = self.current.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = held.as_ref() {
                if h.generation == generation && h.loaded_at.elapsed() < HELD_MAX_AGE {
                    return Ok(std::sync::Arc::clone(&h.value));
                }
            }
        }
        let value = std::sync::Arc::new(load(conn)?);
        if keep {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(HeldValue {
                generation,
                loaded_at: std::time::Instant::now(),
                value: std::sync::Arc::clone(&value),
            });
        }
        Ok(value)
    }
}

/// WAL frames after which a commit checkpoints, as SQLite's default WAL hook does (which ours
/// replaces).
const WAL_AUTOCHECKPOINT_PAGES: i32 = 1000;

/// Counts this connection's commits in `counters`, and checkpoints like SQLite's default hook.
pub(super) fn count_commits(conn: &mut Connection, counters: Counters) -> rusqlite::Result<()> {
    // Whether this connection wrote a setting since its last commit: set by the update hook,
    // cleared by the commit that counts it. A write rolled back leaves it set, and the next
    // commit counts it: the settings are then read once more than needed, never once too few.
    // (No rollback hook clears it: rusqlite frees the hooks before closing, and closing a
    // connection inside a transaction runs the rollback hook.)
    let wrote_settings = std::sync::Arc::new(AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&wrote_settings);
    conn.update_hook(Some(
        move |_: rusqlite::hooks::Action, _: &str, table: &str, _| {
            if table == SETTINGS_TABLE {
                seen.store(true, Ordering::SeqCst);
            }
        },
    ))?;
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if wrote_settings.swap(false, Ordering::SeqCst) {
            counters.settings.fetch_add(1, Ordering::SeqCst);
        }
        if !UNCOUNTED.with(Cell::get) {
            counters.commits.fetch_add(1, Ordering::SeqCst);
        }
        if pages >= WAL_AUTOCHECKPOINT_PAGES {
            // As SQLite's own hook: a checkpoint that cannot run now runs at a later commit,
            // and its failure is not the failure of the commit that has already happened.
            let _ = wal.checkpoint();
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{open_counting, settings, temp_db, write_tx};

    /// Counters of a test's own: `commits`, and settings writes counted apart.
    fn counters(commits: &'static AtomicU64) -> Counters {
        static SETTINGS: AtomicU64 = AtomicU64::new(0);
        Counters {
            commits,
            settings: &SETTINGS,
        }
    }

    #[test]
    fn only_commits_that_wrote_a_setting_move_the_settings_generation() {
        static COMMITS: AtomicU64 = AtomicU64::new(0);
        static SETTINGS: AtomicU64 = AtomicU64::new(0);
        let own = Counters {
            commits: &COMMITS,
            settings: &SETTINGS,
        };
        let path = temp_db("settings-generation");
        let mut conn = open_counting(&path, own).unwrap();
        let settings_now = || SETTINGS.load(Ordering::SeqCst);
        let start = settings_now();
        conn.execute(
            "INSERT INTO users (login, name, created_at, updated_at) VALUES ('ann', 'Ann', 1, 1)",
            [],
        )
        .unwrap();
        assert_eq!(settings_now(), start, "another table");
        settings::set(&conn, "a", "1").unwrap();
        assert_eq!(settings_now(), start + 1, "a setting inserted");
        settings::set(&conn, "a", "2").unwrap();
        assert_eq!(settings_now(), start + 2, "a setting changed");
        settings::delete(&conn, "a").unwrap();
        assert_eq!(settings_now(), start + 3, "a setting removed");
        let tx = write_tx(&mut conn).unwrap();
        settings::set(&tx, "b", "1").unwrap();
        assert_eq!(settings_now(), start + 3, "not before the commit");
        drop(tx);
        assert_eq!(settings_now(), start + 3, "rolled back");
        conn.execute("UPDATE users SET name = 'Ann B' WHERE login = 'ann'", [])
            .unwrap();
        assert_eq!(
            settings_now(),
            start + 4,
            "the next commit counts a setting rolled back: once too many, never too few"
        );
        conn.execute("UPDATE users SET name = 'Ann C' WHERE login = 'ann'", [])
            .unwrap();
        assert_eq!(settings_now(), start + 4, "and only that commit");
        let tx = write_tx(&mut conn).unwrap();
        tx.execute("UPDATE users SET name = 'Ann D' WHERE login = 'ann'", [])
            .unwrap();
        settings::set(&tx, "c", "1").unwrap();
        tx.commit().unwrap();
        assert_eq!(settings_now(), start + 5, "a transaction writing both");
        // Another connection of the process, and the value held by it.
        let other = open_counting(&path, own).unwrap();
        let held: Held<Option<String>> = Held::keyed_by(|| SETTINGS.load(Ordering::SeqCst));
        let read = |conn: &Connection| held.get(conn, |c| settings::get(c, "c")).unwrap();
        assert_eq!(read(&conn).as_deref(), Some("1"));
        conn.execute("UPDATE users SET name = 'Ann E' WHERE login = 'ann'", [])
            .unwrap();
        assert_eq!(
            read(&conn).as_deref(),
            Some("1"),
            "held across other writes"
        );
        settings::set(&other, "c", "2").unwrap();
        assert_eq!(settings_now(), start + 6, "any connection");
        assert_eq!(
            read(&conn).as_deref(),
            Some("2"),
            "read again after a setting"
        );
    }

    #[test]
    fn every_commit_moves_the_generation_but_reads_and_uncounted_writes_do_not() {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let path = temp_db("generation");
        let mut conn = open_counting(&path, counters(&COUNT)).unwrap();
        let other = open_counting(&path, counters(&COUNT)).unwrap();
        let start = COUNT.load(Ordering::SeqCst);
        conn.execute("INSERT INTO settings (key, value) VALUES ('a', '1')", [])
            .unwrap();
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 1, "autocommit write");
        let tx = write_tx(&mut conn).unwrap();
        settings::set(&tx, "b", "2").unwrap();
        settings::set(&tx, "c", "3").unwrap();
        assert_eq!(
            COUNT.load(Ordering::SeqCst),
            start + 1,
            "not before the commit"
        );
        tx.commit().unwrap();
        assert_eq!(
            COUNT.load(Ordering::SeqCst),
            start + 2,
            "one per transaction"
        );
        settings::set(&other, "a", "4").unwrap();
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 3, "any connection");
        assert_eq!(settings::get(&conn, "a").unwrap().as_deref(), Some("4"));
        uncounted_write(|| settings::set(&conn, "a", "5")).unwrap();
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 3, "uncounted");
        settings::set(&conn, "a", "6").unwrap();
        assert_eq!(
            COUNT.load(Ordering::SeqCst),
            start + 4,
            "counted again after"
        );
        let tx = write_tx(&mut conn).unwrap();
        settings::set(&tx, "d", "7").unwrap();
        drop(tx);
        assert_eq!(COUNT.load(Ordering::SeqCst), start + 4, "rolled back");
    }

    #[test]
    fn the_wal_is_still_checkpointed_with_the_counting_hook() {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let path = temp_db("checkpoint");
        let conn = open_counting(&path, counters(&COUNT)).unwrap();
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let blob = vec![7u8; page as usize];
        for i in 0..3 * WAL_AUTOCHECKPOINT_PAGES {
            conn.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)",
                rusqlite::params![format!("k{}", i % 100), blob],
            )
            .unwrap();
        }
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        // Without checkpoints the WAL would hold every commit: thousands of pages.
        assert!(
            wal < 2 * WAL_AUTOCHECKPOINT_PAGES as u64 * (page as u64 + 24),
            "WAL of {wal} bytes"
        );
    }
}
