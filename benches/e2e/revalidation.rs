//! Part 5: the revalidation of GitLab users. Its own labgate and fake GitLab (`users` GitLab
//! users in one group), each person signed in once (creating the account, not measured), then
//! signed in again, every one of them, with labgate's CPU read around it (**the baseline**:
//! one sign-in of each of these people); then one revalidation of them all
//! (`POST /api/v2/labgate/gitlab-revalidations`: for each, the refresh grant, userinfo and the
//! sign-in rules), with labgate's CPU read around it. Both per person, in the same run.

use super::http::Conn;
use super::{
    admin_login, admin_token, configure_gitlab, fake_gitlab_url, gitlab_cookie, labgate_sign_in,
    procfs, servers, Browser, FAKE_PREFIX,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Clients signing the people in at once.
const CLIENTS: usize = 4;

/// What part 4 measured.
pub struct Measured {
    pub users: usize,
    /// labgate's CPU per sign-in of these people (the second sign-in of each), ms.
    pub sign_in_cpu_ms: f64,
    /// labgate's CPU per person revalidated, ms.
    pub revalidation_cpu_ms: f64,
    /// The fake GitLab's CPU per person revalidated, ms.
    pub fake_cpu_ms: f64,
    /// Wall time of the run (the POST's answer).
    pub took: Duration,
    /// The run as the API answered it.
    pub run: Value,
}

impl Measured {
    pub fn json(&self) -> Value {
        json!({
            "users": self.users,
            "sign_in_cpu_ms_per_user": self.sign_in_cpu_ms,
            "revalidation_cpu_ms_per_user": self.revalidation_cpu_ms,
            "fake_cpu_ms_per_user": self.fake_cpu_ms,
            "took_s": self.took.as_secs_f64(),
            "run": self.run,
        })
    }
}

/// Signs in each person once (their GitLab session cookies), `CLIENTS` at a time, each
/// client on its own keep-alive connections as a browser is.
fn sign_in_all(lg: SocketAddr, fake: SocketAddr, cookies: &[String]) -> Result<(), String> {
    let chunk = cookies.len().div_ceil(CLIENTS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = cookies
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                s.spawn(move || -> Result<(), String> {
                    let mut browser = Browser::new(lg, fake, String::new(), i);
                    for cookie in part {
                        browser.gl_cookie.clone_from(cookie);
                        labgate_sign_in(&mut browser)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| "client thread".to_string())?)
    })
}

pub fn bench(root: &Path, users: usize, ticks: u64) -> Result<Measured, String> {
    let fake = servers::start_self(
        &["--serve-fake", &users.to_string(), "1"],
        FAKE_PREFIX,
        "fake GitLab (revalidation)",
    )?;
    let dir = root.join("revalidation");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lab = servers::Labgate::new(&dir);
    let lg = lab.start()?;
    let admin = admin_login(lg.addr)?;
    let token = admin_token(lg.addr, &admin)?;
    configure_gitlab(lg.addr, &token, &fake_gitlab_url(fake.addr))?;
    let cookies = (0..users)
        .map(|i| gitlab_cookie(fake.addr, &format!("one{i:02}")))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    sign_in_all(lg.addr, fake.addr, &cookies)?;
    println!(
        "  {users} people signed in (accounts created) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cpu = |pid| procfs::cpu_time(pid, ticks);
    let before = cpu(lg.pid);
    sign_in_all(lg.addr, fake.addr, &cookies)?;
    let sign_in = cpu(lg.pid).saturating_sub(before);

    let (lg_before, fake_before) = (cpu(lg.pid), cpu(fake.pid));
    let t = Instant::now();
    let mut c = Conn::new(lg.addr);
    let auth = format!("Bearer {token}");
    let r = c
        .post_form(
            "/api/v2/labgate/gitlab-revalidations",
            &[("Authorization", &auth)],
            "",
        )
        .map_err(|e| format!("revalidation: {e}"))?;
    let took = t.elapsed();
    let (lg_cpu, fake_cpu) = (
        cpu(lg.pid).saturating_sub(lg_before),
        cpu(fake.pid).saturating_sub(fake_before),
    );
    let run: Value = serde_json::from_slice(&r.body).map_err(|e| format!("revalidation: {e}"))?;
    if r.status != 200 || run["status"] != "SUCCESS" || run["usersChecked"] != users {
        return Err(format!("revalidation answered {}: {run}", r.status));
    }
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / users as f64;
    let measured = Measured {
        users,
        sign_in_cpu_ms: per(sign_in),
        revalidation_cpu_ms: per(lg_cpu),
        fake_cpu_ms: per(fake_cpu),
        took,
        run,
    };
    println!(
        "  revalidation of {users} people in {:.2} s: labgate CPU {:.3} ms per person (one sign-in of the same people: {:.3} ms), fake CPU {:.3} ms per person",
        took.as_secs_f64(),
        measured.revalidation_cpu_ms,
        measured.sign_in_cpu_ms,
        measured.fake_cpu_ms
    );
    Ok(measured)
}
