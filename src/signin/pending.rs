//! GitLab sign-ins in progress: between the start (which sends the browser to GitLab) and the
//! callback (which comes back with GitLab's code), what the callback needs (the PKCE verifier,
//! where to send the browser afterwards) and what proves the callback belongs to that start (the
//! `state`, and the browser that started it).
//!
//! They are kept in memory, not in the database: a start then writes nothing to disk, so a flood
//! of anonymous starts costs no write transaction and cannot grow the file, and a sign-in costs
//! two write transactions fewer. What this gives up: a restart forgets the sign-ins in flight;
//! their callbacks are refused with the generic page and the person starts again.
//!
//! A state is single-use (taken out whether or not the callback then succeeds), lives at most
//! [`STATE_TTL_SECS`], and at most [`MAX_PENDING`] are kept: past that the oldest are dropped (a
//! flood of starts from many networks shortens how long a sign-in may take, instead of growing
//! memory). States and browser cookies are kept only as SHA-256 hashes, so a memory dump cannot
//! complete someone's sign-in.

use crate::crypto;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// How long a started sign-in may take to come back, seconds.
pub const STATE_TTL_SECS: i64 = 600;
/// Most sign-ins in progress kept (a few hundred bytes each).
pub const MAX_PENDING: usize = 20_000;

/// A started sign-in, as its callback finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    /// SHA-256 of the browser cookie set at the start.
    pub browser_hash: [u8; 32],
    pub verifier: String,
    pub return_to: String,
    pub created_at: i64,
}

/// The sign-ins in progress of this process.
#[derive(Debug)]
pub struct PendingSignIns {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By state hash: the entry and its insertion number.
    by_state: HashMap<[u8; 32], (u64, PendingSignIn)>,
    /// By insertion number (oldest first): the state hash and when it was started.
    by_age: BTreeMap<u64, ([u8; 32], i64)>,
    next: u64,
}

impl Default for PendingSignIns {
    fn default() -> Self {
        PendingSignIns::with_capacity(MAX_PENDING)
    }
}

impl PendingSignIns {
    /// A store keeping at most `cap` sign-ins in progress.
    pub fn with_capacity(cap: usize) -> PendingSignIns {
        PendingSignIns {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a started sign-in, dropping the expired ones and, past the capacity, the oldest.
    pub fn insert(&self, state: &str, browser: &str, verifier: &str, return_to: &str, now: i64) {
        let mut inner = self.inner();
        let Inner {
            by_state,
            by_age,
            next,
        } = &mut *inner;
        while let Some(entry) = by_age.first_entry() {
            let (_, created_at) = *entry.get();
            if created_at > now - STATE_TTL_SECS && by_state.len() < self.cap {
                break;
            }
            let (key, _) = entry.remove();
            by_state.remove(&key);
        }
        let key = crypto::sha256(state);
        let entry = PendingSignIn {
            browser_hash: crypto::sha256(browser),
            verifier: verifier.to_string(),
            return_to: return_to.to_string(),
            created_at: now,
        };
        *next += 1;
        if let Some((old, _)) = by_state.insert(key, (*next, entry)) {
            by_age.remove(&old);
        }
        by_age.insert(*next, (key, now));
    }

    /// Takes a state out (single use): it is forgotten whether or not it turns out valid.
    /// Expiry is the caller's to check, against `created_at`.
    pub fn take(&self, state: &str) -> Option<PendingSignIn> {
        let mut inner = self.inner();
        let (number, entry) = inner.by_state.remove(&crypto::sha256(state))?;
        inner.by_age.remove(&number);
        Some(entry)
    }

    /// Sign-ins in progress right now.
    pub fn len(&self) -> usize {
        self.inner().by_state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_single_use_and_kept_only_as_hashes() {
        let pending = PendingSignIns::default();
        pending.insert("st", "br", "ver", "/x", 100);
        let kept = format!("{:?}", pending.inner());
        assert!(
            !kept.contains("\"st\"") && !kept.contains("\"br\""),
            "{kept}"
        );
        let p = pending.take("st").unwrap();
        assert_eq!(p.browser_hash, crypto::sha256("br"));
        assert_eq!((p.verifier.as_str(), p.return_to.as_str()), ("ver", "/x"));
        assert_eq!(p.created_at, 100);
        assert_eq!(pending.take("st"), None);
        assert!(pending.is_empty());
    }

    #[test]
    fn expired_states_are_dropped_at_the_next_start() {
        let pending = PendingSignIns::default();
        pending.insert("old", "b", "v", "/", 0);
        pending.insert("young", "b", "v", "/", 1);
        pending.insert("new", "b", "v", "/", STATE_TTL_SECS);
        assert_eq!(pending.take("old"), None);
        assert!(pending.take("young").is_some());
        assert!(pending.take("new").is_some());
    }

    #[test]
    fn past_the_capacity_the_oldest_are_dropped() {
        let pending = PendingSignIns::with_capacity(3);
        for s in ["a", "b", "c", "d", "e"] {
            pending.insert(s, "b", "v", "/", 10);
        }
        assert_eq!(pending.len(), 3);
        assert_eq!(pending.take("a"), None);
        assert_eq!(pending.take("b"), None);
        for s in ["c", "d", "e"] {
            assert!(pending.take(s).is_some(), "{s}");
        }
        // Taken entries leave no trace in the age order.
        assert!(pending.inner().by_age.is_empty());
    }

    #[test]
    fn a_state_started_twice_keeps_the_last_start() {
        let pending = PendingSignIns::default();
        pending.insert("s", "b1", "v1", "/1", 10);
        pending.insert("s", "b2", "v2", "/2", 11);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.take("s").unwrap().verifier, "v2");
        assert!(pending.inner().by_age.is_empty());
    }
}
