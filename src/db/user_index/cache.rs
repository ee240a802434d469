//! The search cache: what the latest text searches found, so that a next page or a repeat is
//! answered without reading the image again. One of the index's two pieces of process-wide
//! state: see [`super`].

use super::image::ImageDiff;
use crate::db::page_of;
use std::collections::VecDeque;
use std::sync::Mutex;

/// What earlier searches found at a generation: for each, the number of matches of a text
/// (lowercased) in a list, and the matches in login order when there were at most the
/// `keep_max` of the search. Each is valid at the generation it was taken at (generations are
/// random, so two databases in one process never share one), and brought to the next one the
/// held image was caught up to by [`SearchCache::advance`].
pub(super) struct SearchCache {
    entries: Mutex<VecDeque<Entry>>,
}

/// The searches this process remembers, shared by every request; kept until they are pushed out
/// by newer ones or a generation they cannot be brought to.
pub(super) static SEARCH_CACHE: SearchCache = SearchCache::new();

struct Entry {
    generation: i64,
    active: bool,
    phrase: String,
    total: i64,
    sorted: Option<Vec<i64>>,
}

/// What a search looks for in the [`SearchCache`]: a text (lowercased) in the list of active
/// users or of deactivated ones, at a generation.
pub(super) struct Key<'a> {
    pub generation: i64,
    pub active: bool,
    pub phrase: &'a str,
}

/// What the [`SearchCache`] knows of a search.
pub(super) enum CachedAnswer {
    /// The page (from the sorted matches) and the total.
    Page(Vec<i64>, i64),
    /// The total only.
    Total(i64),
}

/// How many searches are kept (a few bytes each, plus their sorted matches)...
const ENTRIES_KEPT: usize = 64;
/// ... and how many sorted matches in all (8 bytes each; one search may keep more).
const IDS_KEPT: usize = 50_000;

impl SearchCache {
    pub(super) const fn new() -> SearchCache {
        SearchCache {
            entries: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, key: &Key, offset: i64, limit: i64) -> Option<CachedAnswer> {
        let entries = self.lock();
        let entry = entries.iter().find(|e| key.is(e))?;
        Some(match &entry.sorted {
            Some(sorted) => CachedAnswer::Page(page_of(sorted, offset, limit), entry.total),
            None => CachedAnswer::Total(entry.total),
        })
    }

    /// Brings what was kept at the generation `diff` starts from to `generation`: each total
    /// moved by the changed users that match (before or after), the sorted matches kept when
    /// none of them does (the order of the others did not change). Kept at other generations:
    /// forgotten.
    pub(super) fn advance(&self, diff: &ImageDiff, generation: i64) {
        let mut entries = self.lock();
        if !entries.iter().any(|e| e.generation == diff.from_generation) {
            return;
        }
        entries.retain(|e| e.generation == diff.from_generation || e.generation == generation);
        for e in entries.iter_mut() {
            if e.generation != diff.from_generation {
                continue;
            }
            let (delta, touched) = diff.delta(e.active, e.phrase.as_bytes());
            e.total += delta;
            if touched {
                e.sorted = None;
            }
            e.generation = generation;
        }
    }

    /// Keeps the total (and the sorted matches) of a search, in place of what was kept for it;
    /// forgets other generations and, past the limits, the oldest searches.
    pub(super) fn put(&self, key: &Key, total: i64, sorted: Option<Vec<i64>>) {
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
            active: key.active,
            phrase: key.phrase.to_string(),
            total,
            sorted,
        });
    }

    /// The generations of the searches kept (for the tests).
    #[cfg(test)]
    pub(super) fn generations(&self) -> Vec<i64> {
        self.lock().iter().map(|e| e.generation).collect()
    }
}

impl Key<'_> {
    fn is(&self, e: &Entry) -> bool {
        e.generation == self.generation && e.active == self.active && e.phrase == self.phrase
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_searches_stay_within_their_limits() {
        let kept = SearchCache::new();
        let key = |phrase: &'static str| Key {
            generation: 7,
            active: true,
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
            Some(CachedAnswer::Page(page, total)) => {
                assert_eq!((page, total), (vec![2, 3, 4], half.len() as i64))
            }
            _ => panic!("b is kept"),
        }
        // Searching again replaces what was kept; another generation forgets the rest.
        kept.put(&key("\"b\""), 3, None);
        assert!(matches!(
            kept.get(&key("\"b\""), 0, 1),
            Some(CachedAnswer::Total(3))
        ));
        kept.put(
            &Key {
                generation: 8,
                active: true,
                phrase: "\"c\"",
            },
            1,
            None,
        );
        assert_eq!(kept.lock().len(), 1);
    }
}
