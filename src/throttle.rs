//! Slowing down password guessing: failed sign-ins are counted per login, per client address
//! (when a trusted proxy tells it) and for the whole server. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures allowed for one login within the window before it is locked.
pub const LOGIN_FREE_FAILURES: u32 = 5;
/// Failures allowed from one client address within the window before it is locked.
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// Window in which failures are counted, seconds.
pub const WINDOW_SECS: i64 = 15 * 60;
/// First lock, seconds; doubled on each further failure, up to the window.
pub const FIRST_LOCK_SECS: i64 = 60;
/// Server-wide failures per minute past which every attempt is slowed down.
pub const GLOBAL_FAILURES_PER_MINUTE: u32 = 100;
/// Tracked keys before the oldest are forgotten (bounds memory under a flood of logins).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    first_failure: i64,
    locked_until: i64,
}

impl Entry {
    fn record(&mut self, now: i64, free: u32) {
        if now - self.first_failure >= WINDOW_SECS {
            *self = Entry {
                failures: 0,
                first_failure: now,
                locked_until: 0,
            };
        }
        self.failures += 1;
        if self.failures >= free {
            let extra = (self.failures - free).min(10);
            let lock = (FIRST_LOCK_SECS << extra).min(WINDOW_SECS);
            self.locked_until = now + lock;
        }
    }
}

/// What the throttle says about an attempt about to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Allowed after waiting this long (the server is under a guessing flood).
    Slow(std::time::Duration),
    /// Refused for this many more seconds.
    Locked(i64),
}

#[derive(Default)]
struct State {
    logins: HashMap<String, Entry>,
    addresses: HashMap<IpAddr, Entry>,
    global_minute: i64,
    global_failures: u32,
}

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    pub fn check(&self, login: &str, address: Option<IpAddr>, now: i64) -> Verdict {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = login.to_ascii_lowercase();
        let login_lock = state.logins.get(&key).map_or(0, |e| e.locked_until - now);
        let addr_lock = address
            .and_then(|a| state.addresses.get(&a))
            .map_or(0, |e| e.locked_until - now);
        let lock = login_lock.max(addr_lock);
        if lock > 0 {
            return Verdict::Locked(lock);
        }
        if state.global_minute == now / 60 && state.global_failures >= GLOBAL_FAILURES_PER_MINUTE {
            return Verdict::Slow(std::time::Duration::from_secs(1));
        }
        Verdict::Allow
    }

    pub fn record_failure(&self, login: &str, address: Option<IpAddr>, now: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.logins.len() >= MAX_TRACKED {
            state
                .logins
                .retain(|_, e| now - e.first_failure < WINDOW_SECS || e.locked_until > now);
        }
        if state.logins.len() < MAX_TRACKED {
            state
                .logins
                .entry(login.to_ascii_lowercase())
                .or_default()
                .record(now, LOGIN_FREE_FAILURES);
        }
        if let Some(a) = address {
            if state.addresses.len() >= MAX_TRACKED {
                state
                    .addresses
                    .retain(|_, e| now - e.first_failure < WINDOW_SECS || e.locked_until > now);
            }
            if state.addresses.len() < MAX_TRACKED {
                state
                    .addresses
                    .entry(a)
                    .or_default()
                    .record(now, ADDRESS_FREE_FAILURES);
            }
        }
        if state.global_minute != now / 60 {
            state.global_minute = now / 60;
            state.global_failures = 0;
        }
        state.global_failures = state.global_failures.saturating_add(1);
    }

    /// A successful sign-in clears that login's count.
    pub fn record_success(&self, login: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.logins.remove(&login.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_is_locked_after_free_failures_and_lock_grows() {
        let t = Throttle::new();
        for _ in 0..LOGIN_FREE_FAILURES - 1 {
            t.record_failure("Ann", None, 100);
            assert_eq!(t.check("ann", None, 100), Verdict::Allow);
        }
        t.record_failure("ann", None, 100);
        assert_eq!(t.check("ANN", None, 100), Verdict::Locked(60));
        assert_eq!(t.check("ann", None, 160), Verdict::Allow);
        t.record_failure("ann", None, 160);
        assert_eq!(t.check("ann", None, 160), Verdict::Locked(120));
        // Other logins are not affected.
        assert_eq!(t.check("bob", None, 160), Verdict::Allow);
    }

    #[test]
    fn success_clears_the_login() {
        let t = Throttle::new();
        for _ in 0..LOGIN_FREE_FAILURES {
            t.record_failure("ann", None, 0);
        }
        t.record_success("ann");
        assert_eq!(t.check("ann", None, 0), Verdict::Allow);
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let t = Throttle::new();
        for _ in 0..LOGIN_FREE_FAILURES - 1 {
            t.record_failure("ann", None, 0);
        }
        t.record_failure("ann", None, WINDOW_SECS + 1);
        assert_eq!(t.check("ann", None, WINDOW_SECS + 1), Verdict::Allow);
    }

    #[test]
    fn address_is_locked_across_logins() {
        let t = Throttle::new();
        let addr: IpAddr = "10.0.0.7".parse().unwrap();
        for i in 0..ADDRESS_FREE_FAILURES {
            t.record_failure(&format!("user{i}"), Some(addr), 0);
        }
        assert!(matches!(
            t.check("fresh", Some(addr), 0),
            Verdict::Locked(_)
        ));
        assert_eq!(t.check("fresh", None, 0), Verdict::Allow);
    }

    #[test]
    fn global_flood_slows_everyone() {
        let t = Throttle::new();
        for i in 0..GLOBAL_FAILURES_PER_MINUTE {
            t.record_failure(&format!("u{i}"), None, 120);
        }
        assert!(matches!(
            t.check("anyone-else", None, 125),
            Verdict::Slow(_)
        ));
        assert_eq!(t.check("anyone-else", None, 180), Verdict::Allow);
    }
}
