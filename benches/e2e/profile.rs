//! `--profile KIND [--count N]`: one operation repeated sequentially against labgate, for a
//! profiler wrapped around labgate with `LABGATE_BENCH_WRAP`. Under callgrind, the counters are
//! zeroed after the set-up and warm-up and dumped after the measured operations, so the dump
//! (`callgrind.out.<pid>.1`) holds only them:
//!
//! ```text
//! LABGATE_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" \
//!     cargo bench --bench e2e -- --profile signin-250 --count 100
//! callgrind_annotate --inclusive=yes /tmp/cg.<pid>.1 | head -60
//! ```
//!
//! KIND: `signin-1`, `signin-250` (GitLab sign-in of a user in 1 / 250 groups), `current`
//! (`api/users/current` with a session cookie), `admin-users` (the `/admin/users` page),
//! `search` (`api/users/search?q=greta` after loading 10,000 users, 100,000 without `--quick`),
//! `search-first` (the same, each after a change to a user: admin's name, set over the API),
//! `admin-write` (`api/user_groups/update`: a group's description that changes each time).
//! `--q TEXT` searches another text (`example`: every user). `LABGATE_BENCH_AUDIT=off` in the
//! environment is passed on: labgate then records no audit event.

use crate::http::Conn;
use crate::procfs;
use crate::servers::{self, Labgate, TempDir};
use crate::{
    admin_login, admin_token, api_post, configure_gitlab, fake_gitlab_url, gitlab_cookie,
    labgate_sign_in, load, Browser, FAKE_PREFIX, GITLAB_USERS, MANY_GROUPS, SCALE_GROUPS,
};
use std::time::{Duration, Instant};

fn callgrind(pid: u32, what: &str) {
    let wrap = std::env::var("LABGATE_BENCH_WRAP").unwrap_or_default();
    if wrap.contains("callgrind") {
        let status = std::process::Command::new("callgrind_control")
            .arg(what)
            .arg(pid.to_string())
            .stdout(std::process::Stdio::null())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("callgrind_control {what} {pid} failed: {status:?}");
        }
    }
}

pub fn run(kind: &str, count: Option<usize>, quick: bool, q: Option<&str>) -> Result<(), String> {
    let search = format!("/api/users/search?q={}", q.unwrap_or(load::SOME_FIRST_NAME));
    let root = TempDir::new("profile");
    let mut lab = Labgate::new(&root.0);
    // `LABGATE_BENCH_AUDIT=off` reaches labgate only when set on purpose: the profile of a
    // labgate not recording its audit log.
    if std::env::var("LABGATE_BENCH_AUDIT").as_deref() == Ok("off") {
        lab = lab.with_env("LABGATE_BENCH_AUDIT", "off");
    }
    let fake = servers::start_self(
        &[
            "--serve-fake",
            &GITLAB_USERS.to_string(),
            &MANY_GROUPS.to_string(),
        ],
        FAKE_PREFIX,
        "fake GitLab",
    )?;
    let mut lg = lab.start()?;
    let admin = admin_login(lg.addr)?;
    let token = admin_token(lg.addr, &admin)?;
    configure_gitlab(lg.addr, &token, &fake_gitlab_url(fake.addr))?;
    if kind == "search" || kind == "search-first" {
        lg.stop()?;
        let users = if quick { 10_000 } else { 100_000 };
        load::load(&lab.db_path(), users, SCALE_GROUPS)?;
        lg = lab.start()?;
    }
    if kind == "gate-forward" {
        let body = r#"{"name":"bench","url":"http://app.lab.test:8080"}"#;
        let r = Conn::new(lg.addr)
            .request(
                "POST",
                "/api/v2/labgate/applications",
                &[("Authorization", &format!("Bearer {token}"))],
                Some(("application/json", body.as_bytes())),
            )
            .map_err(|e| e.to_string())?;
        if r.status != 201 {
            return Err(format!(
                "register the application: {} {}",
                r.status,
                r.text()
            ));
        }
    }
    let cookie = admin.cookie_header();
    let mut conn = Conn::new(lg.addr);
    let mut get = |target: &str| -> Result<(), String> {
        let r = conn
            .get(target, &[("Cookie", &cookie)])
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET {target}: {}", r.status));
        }
        Ok(())
    };
    let mut gate = Conn::new(lg.addr);
    let gate_cookie = admin.cookie_header();
    let check = move || -> Result<(), String> {
        let headers = [
            ("Cookie", gate_cookie.as_str()),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "app.lab.test:8080"),
            ("X-Forwarded-Uri", "/notebook?x=1"),
            ("X-Forwarded-Method", "GET"),
        ];
        let r = gate
            .get("/gate/forward", &headers)
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET /gate/forward: {}", r.status));
        }
        Ok(())
    };
    let mut op: Box<dyn FnMut() -> Result<(), String>> = match kind {
        "signin-1" | "signin-250" => {
            let user = if kind == "signin-1" {
                "one00"
            } else {
                "many00"
            };
            let mut browser = Browser::new(lg.addr, fake.addr, gitlab_cookie(fake.addr, user)?, 0);
            Box::new(move || labgate_sign_in(&mut browser).map(|_| ()))
        }
        "current" => Box::new(move || get("/api/users/current")),
        "gate-forward" => Box::new(check),
        "admin-users" => Box::new(move || get("/admin/users")),
        "search" => Box::new(move || get(&search)),
        "search-first" => {
            let mut changes = Conn::new(lg.addr);
            let mut renames = 0u64;
            Box::new(move || {
                renames += 1;
                let name = format!("Administrator {}", renames % 2);
                api_post(
                    &mut changes,
                    &token,
                    "/api/users/update",
                    &[("login", "admin"), ("name", &name)],
                )?;
                get(&search)
            })
        }
        "admin-write" => {
            let mut writes = Conn::new(lg.addr);
            api_post(
                &mut writes,
                &token,
                "/api/user_groups/create",
                &[("name", "profile-writes")],
            )?;
            let mut n = 0u64;
            Box::new(move || {
                n += 1;
                let text = format!("rewritten {n}");
                api_post(
                    &mut writes,
                    &token,
                    "/api/user_groups/update",
                    &[("currentName", "profile-writes"), ("description", &text)],
                )
            })
        }
        other => return Err(format!("--profile {other}: unknown kind")),
    };
    let n = count.unwrap_or(match kind {
        "search" | "search-first" => 30,
        "signin-1" | "signin-250" => 100,
        _ => 500,
    });
    for _ in 0..5 {
        op()?;
    }
    callgrind(lg.pid, "--zero");
    let ticks = procfs::clock_ticks();
    let (user, system) = procfs::cpu_times(lg.pid, ticks);
    let t = Instant::now();
    for _ in 0..n {
        op()?;
    }
    let took = t.elapsed();
    let (user_after, system_after) = procfs::cpu_times(lg.pid, ticks);
    callgrind(lg.pid, "--dump=measured");
    std::thread::sleep(Duration::from_millis(200));
    let each = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "profile {kind}: {n} operations in {:.2} s ({:.3} ms each; labgate CPU {:.3} ms user, {:.3} ms system each) against labgate pid {}",
        took.as_secs_f64(),
        each(took),
        each(user_after - user),
        each(system_after - system),
        lg.pid
    );
    lg.stop()
}
