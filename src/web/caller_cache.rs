//! Callers recently resolved from a session cookie or an API token, kept in memory so that a
//! signed-in request does not read the same rows again.
//!
//! An entry is keyed by the SHA-256 of the credential (the hash the database stores; never the
//! secret itself) and is used only while both hold:
//!
//! - **no commit since it was read**: it carries the [`crate::db::generation`] read *before* its
//!   rows were, and the generation moves after every commit of this process (deactivation,
//!   logout, token revocation, password change, permission and membership changes, settings:
//!   every write, by whichever connection). So a change is seen by the very next request.
//! - **it is younger than [`MAX_AGE`]**: writes of *other* processes (`labgate admin
//!   reset-password` while the server runs) do not move the generation; they are seen within
//!   [`MAX_AGE`]. (The alternative, `PRAGMA data_version` on every request, costs a read
//!   transaction per request and changes on this process's own writes too, through its other
//!   connections.)
//!
//! Expiry is checked against `now` on every request from the instants kept in the entry (idle
//! timeout and 3-month limit of a session, a token's expiry date); an entry past them is dropped
//! and the request takes the database path, which answers as before. Password (Basic
//! `login:password`) callers are never cached.

use crate::db::{sessions, users};
use crate::model::Permission;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest life of an entry: how late a write by another process may be seen.
pub const MAX_AGE: Duration = crate::db::HELD_MAX_AGE;
/// Most entries kept; when full, the stale ones are dropped, and all of them if none is.
pub const CAPACITY: usize = 10_000;
/// Above this many entries, stale ones are also dropped every [`MAX_AGE`], so that the memory
/// held follows the credentials in use rather than every credential ever seen.
const SWEEP_ABOVE: usize = 256;

/// What is cached: the SHA-256 of a session cookie value or of an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Session([u8; 32]),
    Token([u8; 32]),
}

/// Who the credential belongs to, as `load_caller` read it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Arc<users::User>,
    pub permissions: Arc<BTreeSet<Permission>>,
    /// Names of the user's groups, sorted.
    pub groups: Arc<[String]>,
    /// The `api/users/current` answer for this identity, written by the first request that
    /// asks for it and reused by the next ones while the entry is valid (it depends on nothing
    /// else).
    pub current_json: Arc<std::sync::OnceLock<Vec<u8>>>,
    /// The identity headers the gate answers with for this identity, written by the first
    /// check that admits it and reused like `current_json`.
    pub gate_headers: Arc<std::sync::OnceLock<crate::web::request::SharedHeaders>>,
}

/// The credential's own state, for the checks made on every request.
#[derive(Debug, Clone)]
pub enum Credential {
    Session {
        session: Arc<sessions::Session>,
        /// The idle timeout in effect when read (a settings change moves the generation).
        idle_timeout_secs: i64,
    },
    Token(crate::db::tokens::Presented),
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// [`crate::db::generation`] read before the rows were.
    pub generation: u64,
    pub loaded_at: Instant,
    pub identity: Identity,
    pub credential: Credential,
}

impl Entry {
    fn fresh(&self, generation: u64, now: Instant) -> bool {
        self.generation == generation && now.saturating_duration_since(self.loaded_at) < MAX_AGE
    }
}

pub struct CallerCache {
    entries: Mutex<Entries>,
    /// Most entries; 0 keeps none.
    capacity: usize,
}

struct Entries {
    map: HashMap<Key, Arc<Entry>>,
    last_sweep: Instant,
}

impl Default for CallerCache {
    fn default() -> Self {
        CallerCache::new(CAPACITY)
    }
}

impl CallerCache {
    pub fn new(capacity: usize) -> CallerCache {
        CallerCache {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nothing is kept when commits are not counted (see [`crate::db::commits_counted`]).
    fn usable(&self) -> bool {
        self.capacity > 0 && crate::db::commits_counted()
    }

    /// The entry for `key` if it is still valid at `generation` (read before calling); a stale
    /// entry is dropped.
    pub fn get(&self, key: &Key, generation: u64) -> Option<Arc<Entry>> {
        if !self.usable() {
            return None;
        }
        let mut entries = self.lock();
        let entry = entries.map.get(key)?;
        if entry.fresh(generation, Instant::now()) {
            return Some(Arc::clone(entry));
        }
        entries.map.remove(key);
        None
    }

    /// Keeps `entry`; `generation` is the current one, to tell stale entries when full.
    pub fn insert(&self, key: Key, entry: Entry, generation: u64) {
        if !self.usable() {
            return;
        }
        let mut entries = self.lock();
        let now = Instant::now();
        let full = entries.map.len() >= self.capacity && !entries.map.contains_key(&key);
        let due = entries.map.len() > SWEEP_ABOVE
            && now.saturating_duration_since(entries.last_sweep) >= MAX_AGE;
        if full || due {
            entries.map.retain(|_, e| e.fresh(generation, now));
            entries.last_sweep = now;
            if entries.map.len() >= self.capacity {
                entries.map.clear();
            }
        }
        entries.map.insert(key, Arc::new(entry));
    }

    /// Keeps who `key` belongs to and its credential, just read from the database, as of
    /// `generation` (read before them).
    pub fn remember(&self, key: Key, identity: Identity, credential: Credential, generation: u64) {
        let entry = Entry {
            generation,
            loaded_at: Instant::now(),
            identity,
            credential,
        };
        self.insert(key, entry, generation);
    }

    pub fn remove(&self, key: &Key) {
        self.lock().map.remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u64) -> Entry {
        let user = users::User {
            id: 1,
            login: "ann".into(),
            name: "Ann".into(),
            email: None,
            active: true,
            local: true,
            must_change_password: false,
            external_provider: None,
            external_identity: None,
            external_id: None,
            created_at: 0,
            last_connection_at: None,
        };
        Entry {
            generation,
            loaded_at: Instant::now(),
            identity: Identity {
                user: Arc::new(user),
                permissions: Arc::new(BTreeSet::new()),
                groups: Arc::from(Vec::new()),
                current_json: Default::default(),
                gate_headers: Default::default(),
            },
            credential: Credential::Token(crate::db::tokens::Presented {
                user_id: 1,
                token_id: 1,
                expires_at: None,
                last_connection_at: None,
            }),
        }
    }

    #[test]
    fn an_entry_is_used_only_at_its_generation() {
        let cache = CallerCache::new(10);
        let key = Key::Token([1; 32]);
        cache.insert(key, entry(7), 7);
        assert!(cache.get(&key, 7).is_some());
        assert!(cache.get(&key, 8).is_none(), "a commit since: stale");
        assert!(cache.is_empty(), "a stale entry is dropped");
    }

    #[test]
    fn an_entry_is_used_only_while_young() {
        let cache = CallerCache::new(10);
        let key = Key::Session([2; 32]);
        let mut old = entry(3);
        old.loaded_at = Instant::now() - MAX_AGE;
        cache.insert(key, old, 3);
        assert!(cache.get(&key, 3).is_none());
    }

    #[test]
    fn stale_entries_are_swept_once_there_are_many() {
        let cache = CallerCache::new(CAPACITY);
        cache.lock().last_sweep = Instant::now() + Duration::from_secs(3600);
        for i in 0..=SWEEP_ABOVE {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(Key::Token(key), entry(1), 1);
        }
        assert_eq!(cache.len(), SWEEP_ABOVE + 1, "not swept before MAX_AGE");
        cache.lock().last_sweep = Instant::now() - MAX_AGE;
        cache.insert(Key::Session([0; 32]), entry(2), 2);
        assert_eq!(cache.len(), 1, "the entries of generation 1 went");
    }

    #[test]
    fn a_full_cache_drops_stale_entries_then_everything() {
        let cache = CallerCache::new(3);
        let mut too_old = entry(5);
        too_old.loaded_at = Instant::now() - MAX_AGE;
        cache.insert(Key::Token([1; 32]), too_old, 5);
        cache.insert(Key::Token([2; 32]), entry(4), 5);
        cache.insert(Key::Token([3; 32]), entry(5), 5);
        cache.insert(Key::Token([4; 32]), entry(5), 5);
        assert_eq!(cache.len(), 2, "full: the two stale entries went");
        assert!(cache.get(&Key::Token([3; 32]), 5).is_some());
        cache.insert(Key::Token([5; 32]), entry(5), 5);
        cache.insert(Key::Token([6; 32]), entry(5), 5);
        assert_eq!(cache.len(), 1, "full of fresh entries: all went");
        assert!(cache.get(&Key::Token([6; 32]), 5).is_some());
    }
}
