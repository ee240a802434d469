//! Slowing down password guessing: failed sign-ins are counted per login, per client address
//! (when a trusted proxy tells it) and for the whole server. Also bounds how many GitLab
//! sign-ins one network address may start (each start stores a pending row). Time is passed in.

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

/// GitLab sign-ins one client network (an IPv4 address, an IPv6 /64) may start per window:
/// enough for a lab of a few hundred people behind one NAT signing in the same morning.
pub const STARTS_PER_NETWORK: u32 = 300;
/// Window in which sign-in starts are counted, seconds (the lifetime of a pending sign-in).
pub const STARTS_WINDOW_SECS: i64 = 600;

/// Counts GitLab sign-in starts per client network, so that one client cannot fill the table
/// of pending sign-ins. Memory is bounded: past `MAX_TRACKED` networks, stale ones are dropped,
/// and while all are fresh new networks are counted together in one shared bucket.
#[derive(Default)]
pub struct SignInStarts {
    state: Mutex<HashMap<Option<IpAddr>, (i64, u32)>>,
}

/// The network an address counts for: IPv4 as is, IPv6 by its /64 (one host usually has a
/// whole /64 to itself); IPv4-mapped IPv6 as IPv4.
pub fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl SignInStarts {
    pub fn new() -> SignInStarts {
        SignInStarts::default()
    }

    /// Records a start from `address`; `Err(seconds)` when that network started too many in
    /// the window (the start is then not counted), with the time to wait.
    pub fn record(&self, address: IpAddr, now: i64) -> Result<(), i64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = Some(network_of(address));
        if !state.contains_key(&key) && state.len() >= MAX_TRACKED {
            state.retain(|_, (start, _)| now - *start < STARTS_WINDOW_SECS);
            if state.len() >= MAX_TRACKED {
                key = None;
            }
        }
        let entry = state.entry(key).or_insert((now, 0));
        if now - entry.0 >= STARTS_WINDOW_SECS {
            *entry = (now, 0);
        }
        // Networks past the tracking limit share one bucket: allow it far more.
        let limit = if key.is_none() {
            STARTS_PER_NETWORK * 100
        } else {
            STARTS_PER_NETWORK
        };
        if entry.1 >= limit {
            return Err((entry.0 + STARTS_WINDOW_SECS - now).max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_network_may_start_a_bounded_number_of_sign_ins() {
        let s = SignInStarts::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..STARTS_PER_NETWORK {
            assert_eq!(s.record(a, 100), Ok(()));
        }
        assert_eq!(s.record(a, 160), Err(STARTS_WINDOW_SECS - 60));
        assert_eq!(s.record(b, 160), Ok(()));
        assert_eq!(s.record(a, 100 + STARTS_WINDOW_SECS), Ok(()));
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let s = SignInStarts::new();
        for i in 0..STARTS_PER_NETWORK {
            let a: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            assert_eq!(s.record(a, 0), Ok(()));
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(s.record(same_64, 0).is_err());
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(s.record(other_64, 0), Ok(()));
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(network_of(mapped), "192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn sign_in_start_memory_stays_bounded() {
        let s = SignInStarts::new();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(s.record(a, 0), Ok(()));
        }
        assert!(s.state.lock().unwrap().len() <= MAX_TRACKED + 1);
    }

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
