//! 7. The audit log: what recording costs, and the audit page and search over 1,000,000 events.
//!
//! Cost: two labgate processes in the same run, configured alike against the same fake GitLab,
//! one recording and one started with `LABGATE_BENCH_AUDIT=off` (a switch read only by the
//! audit module, for this benchmark): each round measures, on both in turn (the order
//! alternating), labgate's CPU per GitLab sign-in of a returning 1-group user, of a returning
//! 250-group user, and per admin write of two kinds (a group's description,
//! `api/user_groups/update`, and a local user's name, `api/users/update`: a value that changes,
//! one event each). Each measured run starts with no event pending and ends by having labgate
//! move the events it wrote (a read of the log moves them first), so that it counts the move
//! of its own events, all of them and no others. The median of the per-round ratios is reported.
//!
//! Reading: the recording labgate is stopped, `events` events are written into its database with
//! labgate's own store function (spread over 90 days: GitLab and local sign-ins of 1,000 people,
//! refusals of 5,000 strangers, admin changes), and the page, the search and the API are timed
//! sequentially, next to the bare oxhttp server's round trip.

use super::http::Conn;
use super::servers::{Labgate, Server};
use super::stats::{median, ratio, Samples};
use super::{
    admin_login, admin_token, api_post, configure_gitlab, gitlab_cookie, labgate_sign_in,
    run_clients, sequential, Browser, Budget, Cpu, OpResult,
};
use labgate::db::{self, audit};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// One measured kind of operation, on and off, per round.
pub struct CostRow {
    pub name: &'static str,
    /// labgate CPU ms per operation, recording on, per round.
    pub on_ms: Vec<f64>,
    pub off_ms: Vec<f64>,
}

impl CostRow {
    /// The median of the per-round ratios (on / off).
    pub fn ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .on_ms
            .iter()
            .zip(&self.off_ms)
            .map(|(on, off)| ratio(*on, *off))
            .collect();
        median(&ratios)
    }

    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "cpu_ms_on": self.on_ms,
            "cpu_ms_off": self.off_ms,
            "median_on_ms": median(&self.on_ms),
            "median_off_ms": median(&self.off_ms),
            "median_ratio": self.ratio(),
        })
    }
}

pub struct QueryRow {
    pub name: &'static str,
    pub target: String,
    pub total: Option<i64>,
    pub samples: Samples,
}

pub struct Report {
    pub cost: Vec<CostRow>,
    pub events: usize,
    pub load_took: Duration,
    pub db_bytes: u64,
    pub queries: Vec<QueryRow>,
    /// The first queries, those the target is about; the others show where it ends.
    pub within_target: usize,
    pub hello: Samples,
}

impl Report {
    pub fn json(&self) -> Value {
        json!({
            "recording_cost": self.cost.iter().map(CostRow::json).collect::<Vec<_>>(),
            "events": self.events,
            "load_s": self.load_took.as_secs_f64(),
            "db_bytes": self.db_bytes,
            "queries": self.queries.iter().map(|q| json!({
                "name": q.name,
                "target": q.target,
                "total": q.total,
                "p50_ms": q.samples.p50(),
                "p99_ms": q.samples.p99(),
            })).collect::<Vec<_>>(),
            "hello_p50_ms": self.hello.p50(),
        })
    }
}

/// A labgate set up for the comparison: configured for the fake GitLab, every benchmark user
/// signed in once, a group to rewrite.
struct Side {
    server: Server,
    token: String,
    one: String,
    many: String,
}

fn side(lab: &Labgate, fake: &Server, fake_url: &str) -> Result<Side, String> {
    let server = lab.start()?;
    let admin = admin_login(server.addr)?;
    let token = admin_token(server.addr, &admin)?;
    configure_gitlab(server.addr, &token, fake_url)?;
    api_post(
        &mut Conn::new(server.addr),
        &token,
        "/api/user_groups/create",
        &[("name", "audit-bench")],
    )?;
    api_post(
        &mut Conn::new(server.addr),
        &token,
        "/api/users/create",
        &[
            ("login", "audit-bench-user"),
            ("name", "Audit Bench"),
            ("password", "audit-bench-password-1"),
        ],
    )?;
    let one = gitlab_cookie(fake.addr, "one00")?;
    let many = gitlab_cookie(fake.addr, "many00")?;
    for cookie in [&one, &many] {
        let mut b = Browser::new(server.addr, fake.addr, cookie.clone(), 0);
        labgate_sign_in(&mut b)?;
    }
    Ok(Side {
        server,
        token,
        one,
        many,
    })
}

/// An admin client that rewrites one group's description, or one local user's name (one
/// change, one event each time).
struct Writer {
    conn: Conn,
    token: String,
    n: u64,
    user: bool,
}

fn admin_write(w: &mut Writer) -> OpResult {
    w.n += 1;
    let text = format!("rewritten {}", w.n);
    let (path, fields) = match w.user {
        false => (
            "/api/user_groups/update",
            [
                ("currentName", "audit-bench"),
                ("description", text.as_str()),
            ],
        ),
        true => (
            "/api/users/update",
            [("login", "audit-bench-user"), ("name", text.as_str())],
        ),
    };
    let t = Instant::now();
    api_post(&mut w.conn, &w.token, path, &fields)?;
    let took = t.elapsed();
    Ok((took, took))
}

/// Has labgate move its pending events into the log now: a read of the log moves them first.
/// (Without recording, nothing is pending and the read finds an empty log.)
fn flush(s: &Side) -> Result<(), String> {
    let auth = format!("Bearer {}", s.token);
    let path = "/api/v2/labgate/audit-events?ps=1";
    let r = Conn::new(s.server.addr)
        .request("GET", path, &[("Authorization", &auth)], None)
        .map_err(|e| format!("{path}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{path}: {} {}", r.status, r.text()));
    }
    Ok(())
}

/// labgate's CPU per operation of a measured run of `op`: each run starts with nothing
/// pending and ends by moving what it wrote, so that it counts the move of its own events,
/// all of them and no others. (Left to the maintenance, which moves them once a second, a
/// 1.5 s run would count one or two moves, up to a second of events apart.)
fn measured<C: Send>(
    s: &Side,
    cpu: &Cpu,
    clients: &mut [C],
    run: Duration,
    op: impl Fn(&mut C) -> OpResult + Sync,
) -> Result<f64, String> {
    run_clients(clients, run / 4, 50, None, &op);
    flush(s)?;
    let before = cpu.snap();
    let r = run_clients(clients, run, 100_000, None, &op);
    flush(s)?;
    let after = cpu.snap();
    if r.errors > 0 {
        return Err(format!("operations failed: {:?}", r.first_error));
    }
    let ms = after.labgate.saturating_sub(before.labgate).as_secs_f64() * 1000.0;
    Ok(ratio(ms, r.count as f64))
}

/// labgate's CPU per operation of the four kinds on `s`, one run each.
fn measure(s: &Side, fake: &Server, ticks: u64, run: Duration) -> Result<[f64; 4], String> {
    let cpu = Cpu {
        ticks,
        labgate: s.server.pid,
        other: fake.pid,
    };
    let mut out = [0.0; 4];
    for (i, cookie) in [&s.one, &s.many].into_iter().enumerate() {
        let mut browsers = vec![Browser::new(s.server.addr, fake.addr, cookie.clone(), 0)];
        out[i] = measured(s, &cpu, &mut browsers, run, labgate_sign_in)
            .map_err(|e| format!("sign-ins: {e}"))?;
    }
    for (i, user) in [(2, false), (3, true)] {
        let mut writers = vec![Writer {
            conn: Conn::new(s.server.addr),
            token: s.token.clone(),
            n: 0,
            user,
        }];
        out[i] = measured(s, &cpu, &mut writers, run, admin_write)
            .map_err(|e| format!("admin writes: {e}"))?;
    }
    Ok(out)
}

pub fn bench(
    b: &Budget,
    quick: bool,
    root: &Path,
    fake: &Server,
    fake_url: &str,
    hello: &Server,
    ticks: u64,
) -> Result<Report, String> {
    for dir in ["audit-on", "audit-off"] {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    }
    let lab_on = Labgate::new(&root.join("audit-on"));
    let lab_off = Labgate::new(&root.join("audit-off")).with_env("LABGATE_BENCH_AUDIT", "off");
    let on = side(&lab_on, fake, fake_url)?;
    let off = side(&lab_off, fake, fake_url)?;
    let (rounds, run) = if quick {
        (3, Duration::from_millis(400))
    } else {
        (7, Duration::from_millis(1500))
    };
    let names = [
        "GitLab sign-in, user in 1 group",
        "GitLab sign-in, user in 250 groups",
        "admin write (group description)",
        "admin write (a user's name)",
    ];
    let mut cost: Vec<CostRow> = names
        .iter()
        .map(|name| CostRow {
            name,
            on_ms: Vec::new(),
            off_ms: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        let (first, second) = if round % 2 == 0 {
            (&on, &off)
        } else {
            (&off, &on)
        };
        let a = measure(first, fake, ticks, run)?;
        let z = measure(second, fake, ticks, run)?;
        let (on_ms, off_ms) = if round % 2 == 0 { (a, z) } else { (z, a) };
        for (i, row) in cost.iter_mut().enumerate() {
            row.on_ms.push(on_ms[i]);
            row.off_ms.push(off_ms[i]);
        }
        println!(
            "  round {round}: labgate CPU ms, recording on / off: sign-in 1 group {:.3} / {:.3}, 250 groups {:.3} / {:.3}, group {:.3} / {:.3}, user {:.3} / {:.3}",
            on_ms[0], off_ms[0], on_ms[1], off_ms[1], on_ms[2], off_ms[2], on_ms[3], off_ms[3]
        );
    }
    for row in &cost {
        println!(
            "  {:<36} median CPU {:.3} ms recording, {:.3} ms not recording: × {:.3} (median of the per-round ratios)",
            row.name,
            median(&row.on_ms),
            median(&row.off_ms),
            row.ratio()
        );
    }
    let mut off = off;
    off.server.stop()?;
    let mut on = on;
    on.server.stop()?;

    // Reading: the log filled with `events` events.
    let events = if quick { 200_000 } else { 1_000_000 };
    let t = Instant::now();
    fill(&lab_on.db_path(), events)?;
    let load_took = t.elapsed();
    let db_bytes = std::fs::metadata(lab_on.db_path())
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  wrote {events} audit events in {:.1} s (database {:.1} MiB)",
        load_took.as_secs_f64(),
        db_bytes as f64 / 1048576.0
    );
    let server = lab_on.start()?;
    let admin = admin_login(server.addr)?;
    let cookie = admin.cookie_header();
    let today = chrono::Utc::now().date_naive();
    let day = (today - chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let targets: Vec<(&'static str, String)> = vec![
        ("/admin/audit, first page", "/admin/audit".into()),
        ("/admin/audit, page 100", "/admin/audit?p=100".into()),
        (
            "/admin/audit?q=, a person (~800 events)",
            "/admin/audit?q=user0042".into(),
        ),
        (
            "/admin/audit?q=, a refused stranger",
            "/admin/audit?q=stranger00042".into(),
        ),
        (
            "/admin/audit, refused GitLab sign-ins",
            "/admin/audit?action=signin.gitlab&outcome=refused".into(),
        ),
        (
            "/admin/audit, outcome failed",
            "/admin/audit?outcome=failed".into(),
        ),
        (
            "/admin/audit, one day",
            format!("/admin/audit?from={day}&to={day}"),
        ),
        (
            "API audit-events?q=, a person",
            "/api/v2/labgate/audit-events?q=user0042&ps=50".into(),
        ),
        (
            "API audit-events, 500 newest",
            "/api/v2/labgate/audit-events?ps=500".into(),
        ),
        (
            "/admin/users/edit (last 20 events)",
            "/admin/users/edit?login=admin".into(),
        ),
        // A common text: every fourth event is an admin's.
        (
            "/admin/audit?q=admin (1 event in 4)",
            "/admin/audit?q=admin".into(),
        ),
        (
            "API audit-events?q=admin (1 event in 4)",
            "/api/v2/labgate/audit-events?q=admin&ps=50".into(),
        ),
        // Beyond the target: a deep page.
        ("/admin/audit, page 2,000", "/admin/audit?p=2000".into()),
    ];
    let within_target = targets.len() - 1;
    let mut queries = Vec::new();
    let mut conn = Conn::new(server.addr);
    for (name, target) in targets {
        let total = if target.starts_with("/api/") {
            conn.get(&target, &[("Cookie", &cookie)])
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .and_then(|v| v["page"]["total"].as_i64())
        } else {
            None
        };
        let samples = sequential(
            &mut conn,
            &target,
            &[("Cookie", &cookie)],
            b.query_requests,
            b.query_time,
        )?;
        println!(
            "  {name:<44} p50 {:7.2} ms p99 {:7.2} ms{}",
            samples.p50(),
            samples.p99(),
            total.map(|t| format!(" (total {t})")).unwrap_or_default()
        );
        queries.push(QueryRow {
            name,
            target,
            total,
            samples,
        });
    }
    let mut hello_conn = Conn::new(hello.addr);
    let hello = sequential(&mut hello_conn, "/", &[], b.query_requests, b.query_time)?;
    let mut server = server;
    server.stop()?;
    Ok(Report {
        cost,
        events,
        load_took,
        db_bytes,
        queries,
        within_target,
        hello,
    })
}

/// Writes `n` events into the stopped labgate's database, oldest first over the last 90 days,
/// with labgate's own insert: sign-ins of 1,000 people (`user0000`…), local failures, refusals
/// of 5,000 strangers, and changes by three admins.
fn fill(db_path: &Path, n: usize) -> Result<(), String> {
    let err = |e: rusqlite::Error| format!("filling the audit log: {e}");
    let mut conn = db::open(db_path).map_err(err)?;
    let now = chrono::Utc::now().timestamp_millis();
    let span = 90 * audit::DAY_MS;
    let tx = db::write_tx(&mut conn).map_err(err)?;
    for i in 0..n {
        let at = now - span + (i as i64 * span) / n as i64;
        let login = format!("user{:04}", (i * 7919) % 1000);
        let stranger = format!("stranger{:05}", (i * 104_729) % 5000);
        let admin = format!("admin{}", i % 3);
        let client = format!("10.{}.{}.{}", i % 7, (i / 7) % 250, (i / 1750) % 250);
        let request = format!("{:08x}", i * 2654435761 % 4294967296);
        let (actor, action, target, outcome, reason, detail) = match i % 20 {
            0..=11 => (
                Some(login.as_str()),
                "signin.gitlab",
                login.as_str(),
                "ok",
                None,
                json!({"gitlabId": (100_000 + (i * 7919) % 1000).to_string(), "gitlabUsername": login, "admittedBy": "bench", "client": client, "requestId": request}),
            ),
            12 => (
                Some(login.as_str()),
                "signin.local",
                login.as_str(),
                "ok",
                None,
                json!({"client": client, "requestId": request}),
            ),
            13 => (
                None,
                "signin.local",
                login.as_str(),
                "failed",
                Some("wrong-password"),
                json!({"count": 1 + i % 4, "client": client, "requestId": request}),
            ),
            14 => (
                None,
                "signin.gitlab",
                stranger.as_str(),
                "refused",
                Some("You are not allowed to authenticate"),
                json!({"reasonCode": "not-in-allowed-group", "gitlabId": (900_000 + i % 5000).to_string(), "gitlabUsername": stranger, "gitlabGroups": ["acme-other", "beta"], "client": client, "requestId": request}),
            ),
            k => {
                let action = [
                    "user.update",
                    "membership.add",
                    "group.create",
                    "permission.grant",
                    "setting.set",
                ][k - 15];
                (
                    Some(admin.as_str()),
                    action,
                    login.as_str(),
                    "ok",
                    None,
                    json!({"changes": {"name": {"old": "Someone", "new": "Someone Else"}}, "client": client, "requestId": request}),
                )
            }
        };
        let detail = detail.to_string();
        // Written as labgate writes events (pending, then moved in batches).
        if i % 10_000 == 0 {
            audit::move_pending(&tx).map_err(err)?;
        }
        audit::append(
            &tx,
            &audit::NewEvent {
                at,
                actor,
                action,
                target: Some(target),
                outcome,
                reason,
                detail: &detail,
            },
        )
        .map_err(err)?;
    }
    audit::move_pending(&tx).map_err(err)?;
    tx.commit().map_err(err)?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(err)?;
    Ok(())
}
