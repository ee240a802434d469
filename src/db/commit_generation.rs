//! The commit generation: a number, kept in this process, that moves after every commit that
//! changed the database, so that what was computed from the database (the cache of signed-in
//! callers) can tell it is still current without reading the database again. Counted by a WAL
//! hook that every connection from [`super::open`] carries.

use rusqlite::Connection;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Commits of this process that changed the database: see [`generation`].
pub(super) static GENERATION: AtomicU64 = AtomicU64::new(0);
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
}

struct HeldValue<T> {
    generation: u64,
    loaded_at: std::time::Instant,
    value: std::sync::Arc<T>,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            current: std::sync::RwLock::new(None),
        }
    }
}

impl<T> Held<T> {
    /// The value held, or `load(conn)` read afresh (and held when it may be).
    pub fn get<E>(
        &self,
        conn: &Connection,
        load: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<std::sync::Arc<T>, E> {
        // Read before the rows: what is loaded below is current at least as of this generation.
        let generation = generation();
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

/// Counts this connection's commits in `generation`, and checkpoints like SQLite's default hook.
pub(super) fn count_commits(
    conn: &mut Connection,
    generation: &'static AtomicU64,
) -> rusqlite::Result<()> {
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if !UNCOUNTED.with(Cell::get) {
            generation.fetch_add(1, Ordering::SeqCst);
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

    #[test]
    fn every_commit_moves_the_generation_but_reads_and_uncounted_writes_do_not() {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let path = temp_db("generation");
        let mut conn = open_counting(&path, &COUNT).unwrap();
        let other = open_counting(&path, &COUNT).unwrap();
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
        let conn = open_counting(&path, &COUNT).unwrap();
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
