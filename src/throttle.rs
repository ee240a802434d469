//! Slowing down password guessing without locking the person out, and bounding password
//! hashing. Failed sign-ins are counted per login and client address together, per client
//! network across logins, and per login across networks; a lock answers 429 at once, and
//! nothing here sleeps. Password verifications run under a bound of their own
//! ([`HashingSlots`]) so that a flood of them cannot take every core. Also bounds how many
//! GitLab sign-ins one network may start or complete. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed for one login from one client network within the window before that pair
/// is locked.
pub const LOGIN_FREE_FAILURES: u32 = 5;
/// Failures allowed from one client network within the window, whatever the logins, before
/// it is locked.
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// Failures allowed for one login within the window, from all networks together, before the
/// login is closed to every network it never signed in from (a guessing attack spread over
/// many addresses); the networks it signed in from recently stay open.
pub const LOGIN_WIDE_FREE_FAILURES: u32 = 50;
/// Window in which failures are counted, seconds.
pub const WINDOW_SECS: i64 = 15 * 60;
/// First lock, seconds; doubled on each further failure, up to the window.
pub const FIRST_LOCK_SECS: i64 = 60;
/// How long a network a login signed in from is remembered, seconds (30 days).
pub const KNOWN_NETWORK_SECS: i64 = 30 * 24 * 3600;
/// Networks remembered per login; the oldest is forgotten first.
const KNOWN_NETWORKS: usize = 8;
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

    fn stale(&self, now: i64) -> bool {
        now - self.first_failure >= WINDOW_SECS && self.locked_until <= now
    }
}

/// What the throttle says about an attempt about to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused for this many more seconds.
    Locked(i64),
}

/// Failures of one login from every network, and the networks it signed in from.
#[derive(Debug, Clone, Default)]
struct LoginWide {
    failures: Entry,
    /// `(network, last sign-in)`, most recent last.
    known: Vec<(Option<IpAddr>, i64)>,
}

impl LoginWide {
    /// Nothing left worth keeping: no recent failure, no network still remembered.
    fn forgotten(&self, now: i64) -> bool {
        self.failures.stale(now)
            && self
                .known
                .iter()
                .all(|(_, at)| now - at >= KNOWN_NETWORK_SECS)
    }

    fn knows(&self, network: Option<IpAddr>, now: i64) -> bool {
        self.known
            .iter()
            .any(|(n, at)| *n == network && now - at < KNOWN_NETWORK_SECS)
    }
}

#[derive(Default)]
struct State {
    pairs: HashMap<(String, Option<IpAddr>), Entry>,
    networks: HashMap<IpAddr, Entry>,
    logins: HashMap<String, LoginWide>,
}

/// Keeps a map under [`MAX_TRACKED`] keys: drops stale entries when full, and reports whether
/// a new key still fits (under a flood of fresh keys, new ones are not tracked until old ones
/// age out; the other counters still apply).
fn room<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    key: &K,
    stale: impl Fn(&V) -> bool,
) -> bool {
    if map.contains_key(key) || map.len() < MAX_TRACKED {
        return true;
    }
    map.retain(|_, v| !stale(v));
    map.len() < MAX_TRACKED
}

/// Counts failed password sign-ins. The client is its network ([`network_of`]); `None` is a
/// client whose address is not known (a loopback peer without a trusted proxy), counted as
/// one client.
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
        let login = login.to_lowercase();
        let network = address.map(network_of);
        let pair_lock = state
            .pairs
            .get(&(login.clone(), network))
            .map_or(0, |e| e.locked_until - now);
        let network_lock = network
            .and_then(|n| state.networks.get(&n))
            .map_or(0, |e| e.locked_until - now);
        let wide_lock = state.logins.get(&login).map_or(0, |w| {
            if w.knows(network, now) {
                0
            } else {
                w.failures.locked_until - now
            }
        });
        let lock = pair_lock.max(network_lock).max(wide_lock);
        if lock > 0 {
            Verdict::Locked(lock)
        } else {
            Verdict::Allow
        }
    }

    pub fn record_failure(&self, login: &str, address: Option<IpAddr>, now: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let login = login.to_lowercase();
        let network = address.map(network_of);
        let pair = (login.clone(), network);
        if room(&mut state.pairs, &pair, |e| e.stale(now)) {
            state
                .pairs
                .entry(pair)
                .or_default()
                .record(now, LOGIN_FREE_FAILURES);
        }
        if let Some(n) = network {
            if room(&mut state.networks, &n, |e| e.stale(now)) {
                state
                    .networks
                    .entry(n)
                    .or_default()
                    .record(now, ADDRESS_FREE_FAILURES);
            }
        }
        if room(&mut state.logins, &login, |w| w.forgotten(now)) {
            state
                .logins
                .entry(login)
                .or_default()
                .failures
                .record(now, LOGIN_WIDE_FREE_FAILURES);
        }
    }

    /// A successful sign-in clears the count of that login from that network, and remembers
    /// the network as one the login signs in from.
    pub fn record_success(&self, login: &str, address: Option<IpAddr>, now: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let login = login.to_lowercase();
        let network = address.map(network_of);
        state.pairs.remove(&(login.clone(), network));
        if room(&mut state.logins, &login, |w| w.forgotten(now)) {
            let wide = state.logins.entry(login).or_default();
            wide.known.retain(|(n, _)| *n != network);
            if wide.known.len() >= KNOWN_NETWORKS {
                wide.known.remove(0);
            }
            wide.known.push((network, now));
        }
    }
}

/// Password verifications running at once: argon2 takes tens of milliseconds of one core and
/// about 19 MiB each. Past the bound a request waits a little for a slot, then is refused
/// with 429, so that a flood of wrong passwords costs at most this many cores and never holds
/// anything other requests need.
pub struct HashingSlots {
    max: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A slot of [`HashingSlots`], given back on drop.
pub struct HashingSlot<'a>(&'a HashingSlots);

impl HashingSlots {
    pub fn new(max: usize) -> HashingSlots {
        HashingSlots {
            max: max.max(1),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// One slot per core.
    pub fn per_core() -> HashingSlots {
        HashingSlots::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Takes a slot, waiting up to `wait` for one; `None` when none came free in time.
    pub fn acquire(&self, wait: Duration) -> Option<HashingSlot<'_>> {
        let deadline = Instant::now() + wait;
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= self.max {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            busy = self
                .freed
                .wait_timeout(busy, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *busy += 1;
        Some(HashingSlot(self))
    }
}

impl Drop for HashingSlot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
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
    fn a_lock_caused_from_one_address_leaves_the_login_open_from_another() {
        let t = Throttle::new();
        let attacker: IpAddr = "203.0.113.5".parse().unwrap();
        let person: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..LOGIN_FREE_FAILURES {
            t.record_failure("admin", Some(attacker), 0);
        }
        assert!(matches!(
            t.check("admin", Some(attacker), 0),
            Verdict::Locked(_)
        ));
        assert_eq!(t.check("admin", Some(person), 0), Verdict::Allow);
    }

    #[test]
    fn success_clears_the_login_from_that_address() {
        let t = Throttle::new();
        for _ in 0..LOGIN_FREE_FAILURES {
            t.record_failure("ann", None, 0);
        }
        t.record_success("ann", None, 0);
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
    fn ipv6_clients_are_counted_per_64() {
        let t = Throttle::new();
        for i in 0..LOGIN_FREE_FAILURES {
            let a: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            t.record_failure("ann", Some(a), 0);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(matches!(
            t.check("ann", Some(same_64), 0),
            Verdict::Locked(_)
        ));
    }

    #[test]
    fn a_guessing_attack_spread_over_networks_leaves_known_networks_open() {
        let t = Throttle::new();
        let home: IpAddr = "198.51.100.7".parse().unwrap();
        t.record_success("ann", Some(home), 0);
        for i in 0..LOGIN_WIDE_FREE_FAILURES {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0xcb00_7100 + i));
            t.record_failure("ann", Some(a), 10);
        }
        let stranger: IpAddr = "192.0.2.200".parse().unwrap();
        assert!(matches!(
            t.check("ann", Some(stranger), 10),
            Verdict::Locked(_)
        ));
        assert_eq!(t.check("ann", Some(home), 10), Verdict::Allow);
        assert_eq!(t.check("bob", Some(stranger), 10), Verdict::Allow);
    }

    #[test]
    fn throttle_memory_stays_bounded() {
        let t = Throttle::new();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.record_failure(&format!("u{i}"), Some(a), 0);
        }
        let state = t.state.lock().unwrap();
        assert!(state.pairs.len() <= MAX_TRACKED);
        assert!(state.networks.len() <= MAX_TRACKED);
        assert!(state.logins.len() <= MAX_TRACKED);
    }

    #[test]
    fn hashing_slots_bound_concurrency_and_come_back() {
        let slots = HashingSlots::new(2);
        let a = slots.acquire(Duration::ZERO).unwrap();
        let _b = slots.acquire(Duration::ZERO).unwrap();
        assert!(slots.acquire(Duration::from_millis(20)).is_none());
        drop(a);
        assert!(slots.acquire(Duration::ZERO).is_some());
    }
}
