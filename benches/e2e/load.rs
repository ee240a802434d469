//! Loads many users and groups straight into a stopped labgate's SQLite file, through
//! labgate's own `db` functions, in one transaction.

use labgate::db::{self, groups, users};
use std::path::Path;
use std::time::{Duration, Instant};

const FIRST: &[&str] = &[
    "anna", "bruno", "chloe", "dmitri", "elena", "farid", "greta", "hugo", "ines", "jonas",
    "karin", "lucas", "maya", "nils", "olga", "pablo", "quinn", "rosa", "sven", "tara", "umar",
    "vera", "wim", "xenia", "yusuf", "zoe", "amir", "bea", "carl", "dana", "emil", "fiona", "gus",
    "hana", "ivan", "jade", "kofi", "lena", "marc", "nora",
];
const LAST: &[&str] = &[
    "smith", "garcia", "muller", "rossi", "dubois", "kowalski", "nakamura", "okafor", "silva",
    "jensen", "novak", "ivanova", "khan", "larsen", "moreau", "petrov", "quist", "romero",
    "schmidt", "tanaka", "weber", "young", "zhang", "berg", "costa",
];

/// The login of user number `i` (`anna.smith.004242`): the six digits match only that user.
pub fn login_of(i: usize) -> String {
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i / FIRST.len()) % LAST.len()];
    format!("{first}.{last}.{i:06}")
}

/// A first name that `users / FIRST.len()` users carry (one user in 40).
pub const SOME_FIRST_NAME: &str = "greta";

/// 65 texts that each match 1 user in 25 or 1 in 40: every first and last name. More than
/// labgate keeps searches of (64), so that in turn each is searched as if for the first time.
pub fn names_not_kept() -> Vec<String> {
    FIRST.iter().chain(LAST).map(|s| s.to_string()).collect()
}

/// 66 texts that every user's email (`…@example.org`) contains: every piece of
/// `@example.org` of 2 characters or more (percent-encoded for a query string).
pub fn email_texts_not_kept() -> Vec<String> {
    let domain = "@example.org";
    let mut out = Vec::new();
    for len in 2..=domain.len() {
        for start in 0..=domain.len() - len {
            out.push(domain[start..start + len].replace('@', "%40"));
        }
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub struct Loaded {
    pub users: usize,
    pub groups: usize,
    pub memberships: usize,
    pub took: Duration,
    pub db_bytes: u64,
}

/// Adds `n_groups` groups and `n_users` users (4 in 5 GitLab users, linked; 1 in 5 local), each
/// in the default group (as `users::create` does) and in two of the new groups.
pub fn load(db_path: &Path, n_users: usize, n_groups: usize) -> Result<Loaded, String> {
    let started = Instant::now();
    let err = |e: rusqlite::Error| format!("loading {}: {e}", db_path.display());
    let mut conn = db::open(db_path).map_err(err)?;
    let now = chrono::Utc::now().timestamp();
    let tx = db::write_tx(&mut conn).map_err(err)?;
    let mut memberships = 0;
    let mut user_ids = Vec::with_capacity(n_users);
    // A password hash of the right shape; nobody signs in with it.
    let local_hash =
        "$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0$bm90LWEtcmVhbC1oYXNoLW9ubHktYmVuY2g";
    for i in 0..n_users {
        let login = login_of(i);
        let name = format!(
            "{} {}",
            capitalized(FIRST[i % FIRST.len()]),
            capitalized(LAST[(i / FIRST.len()) % LAST.len()])
        );
        let email = format!("{login}@example.org");
        let gitlab_id = (500_000 + i).to_string();
        let local = i % 5 == 0;
        let new = users::NewUser {
            login: &login,
            name: &name,
            email: Some(&email),
            password_hash: local.then_some(local_hash),
            must_change_password: false,
            external: (!local).then_some(users::External {
                provider: "gitlab",
                identity: &login,
                id: Some(&gitlab_id),
            }),
        };
        let id = users::create(&tx, &new, now - i as i64).map_err(err)?;
        user_ids.push(id);
        memberships += 1;
        if i % 3 == 0 {
            users::touch_last_connection(&tx, id, now - (i % 1000) as i64 * 60).map_err(err)?;
        }
    }
    // Groups after the users (the order of the first measurement; `users::create` now finds
    // the default group through an index, so the order no longer matters).
    let mut group_ids = Vec::with_capacity(n_groups);
    for g in 0..n_groups {
        let id = groups::create(&tx, &format!("team-{g:05}"), "loaded by the benchmark", now)
            .map_err(err)?;
        group_ids.push(id);
    }
    for (i, id) in user_ids.iter().enumerate() {
        if group_ids.is_empty() {
            break;
        }
        for g in [i % n_groups, (i * 7 + 3) % n_groups] {
            if groups::add_member(&tx, group_ids[g], *id).map_err(err)? {
                memberships += 1;
            }
        }
    }
    tx.commit().map_err(err)?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(err)?;
    drop(conn);
    let db_bytes = std::fs::metadata(db_path).map(|m| m.len()).unwrap_or(0);
    Ok(Loaded {
        users: n_users,
        groups: n_groups,
        memberships,
        took: started.elapsed(),
        db_bytes,
    })
}
