//! Part 6: automatic provisioning of 10,000 GitLab members in 1,000 groups, the fake GitLab
//! answering at once in its own process. Two runs on a fresh labgate: the first creates every
//! account, group and membership; the second reads the same GitLab and should find nothing to
//! write. Measured for each: its time (from the run's record, milliseconds), labgate's CPU,
//! labgate's peak memory above what it held before (VmHWM after resetting it through
//! `/proc/<pid>/clear_refs`), and the database pages it wrote (frames appended to the WAL,
//! which a read transaction held by the benchmark keeps from being recycled during the run).

use crate::fake_gitlab::{access, FakeGitlab, FakeUser};
use crate::http::{form, Conn};
use crate::procfs;
use crate::servers::{self, Labgate, Server, TempDir};
use rusqlite::Connection;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// People in GitLab, and groups under the allowed group (itself included).
pub const PEOPLE: usize = 10_000;
pub const GROUPS: usize = 1_000;
/// Runs with nothing changed, of which the median is reported.
const SECOND_RUNS: usize = 3;
const FAKE_PREFIX: &str = "provisioning gitlab listening on ";

/// The group tree: `bench`, 99 teams `bench/tNN` with 9 subgroups `bench/tNN/sN` each, and 9
/// more `bench/xN`: 1,000 groups. Person `i` is a direct member of group `i % 1000` (10 per
/// group); team members inherit the team's subgroups, the 10 members of `bench` every group.
fn group_paths() -> Vec<String> {
    let mut paths = vec!["bench".to_string()];
    for t in 0..99 {
        paths.push(format!("bench/t{t:02}"));
        for s in 0..9 {
            paths.push(format!("bench/t{t:02}/s{s}"));
        }
    }
    for x in 0..9 {
        paths.push(format!("bench/x{x}"));
    }
    paths
}

/// The fake GitLab of this part, in this binary started again: writes the provisioning
/// token (a group access token on `bench`) to `token_file`, then serves.
pub fn serve_fake(token_file: &str) {
    let gl = FakeGitlab::start();
    let paths = group_paths();
    for path in &paths {
        gl.add_group(path);
    }
    for i in 0..PEOPLE {
        let username = format!("p{i:05}");
        gl.add_user(FakeUser {
            name: format!("Person {i}"),
            ..FakeUser::new(100_000 + i as u64, &username)
        });
        gl.add_member(&username, &paths[i % paths.len()], access::DEVELOPER);
    }
    let (token, _) =
        gl.add_group_access_token("bench", "labgate", "read_api", access::REPORTER, None);
    gl.set_recording(false);
    if let Err(e) = std::fs::write(token_file, &token) {
        eprintln!("provisioning fake: {token_file}: {e}");
        return;
    }
    println!("{FAKE_PREFIX}{}", gl.url());
    let _ = std::io::stdout().flush();
    servers::wait_for_end_of_input();
}

/// One run as measured.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub status: String,
    pub changes: Value,
    /// From the run's record.
    pub took_ms: f64,
    /// labgate's CPU during the run.
    pub cpu_ms: f64,
    /// labgate's peak resident memory during the run above its resident memory before, KiB.
    pub extra_peak_kib: u64,
    pub rss_before_kib: u64,
    /// Database pages written (WAL frames appended), the run's own record included.
    pub pages_written: u64,
}

impl RunFigures {
    /// The figures in one line.
    fn line(&self) -> String {
        format!(
            "{} in {:.0} ms, labgate CPU {:.0} ms, peak {:.1} MiB above {:.1} MiB, {} pages written, changes {}",
            self.status,
            self.took_ms,
            self.cpu_ms,
            self.extra_peak_kib as f64 / 1024.0,
            self.rss_before_kib as f64 / 1024.0,
            self.pages_written,
            self.changes
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "status": self.status,
            "changes": self.changes,
            "took_ms": self.took_ms,
            "cpu_ms": self.cpu_ms,
            "extra_peak_kib": self.extra_peak_kib,
            "rss_before_kib": self.rss_before_kib,
            "pages_written": self.pages_written,
        })
    }
}

/// What part 6 found.
pub struct Figures {
    pub first: RunFigures,
    pub second: RunFigures,
    pub groups: i64,
    pub people: i64,
    pub memberships: i64,
    pub db_bytes: u64,
}

/// Frames in the WAL file now (its header and frames whose salts match it), and its
/// checkpoint sequence number.
fn wal_frames(db: &Path) -> (u64, u32) {
    let wal = db.with_extension("db-wal");
    let Ok(bytes) = std::fs::read(wal) else {
        return (0, 0);
    };
    if bytes.len() < 32 {
        return (0, 0);
    }
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let page = be(8) as usize;
    let (sequence, salt) = (be(12), (be(16), be(20)));
    let mut frames = 0;
    let mut at = 32;
    while page > 0 && at + 24 + page <= bytes.len() {
        if (be(at + 8), be(at + 12)) != salt {
            break;
        }
        frames += 1;
        at += 24 + page;
    }
    (frames, sequence)
}

/// Writes `5` to `/proc/<pid>/clear_refs`: VmHWM starts again from VmRSS.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The runs recorded: (count, the newest's id).
fn runs_recorded(conn: &Connection) -> Result<(i64, i64), String> {
    conn.query_row(
        "SELECT count(*), coalesce(max(id), 0) FROM gitlab_provisioning_runs \
         WHERE finished_at IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .map_err(|e| e.to_string())
}

/// Measures the run that `start` begins: waits for its record to show it finished (a run is
/// recorded as it starts, then updated), then reads what it cost.
fn measure(
    lg: &Server,
    db: &Path,
    ticks: u64,
    start: impl FnOnce() -> Result<(), String>,
) -> Result<RunFigures, String> {
    let open = || Connection::open(db).map_err(|e| format!("{}: {e}", db.display()));
    let poller = open()?;
    poller
        .busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    // An empty WAL, then a read transaction that keeps the frames appended from being recycled.
    poller
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| format!("checkpoint: {e}"))?;
    let pin = open()?;
    pin.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .map_err(|e| format!("pin: {e}"))?;
    let (frames_before, sequence) = wal_frames(db);
    let (runs_before, _) = runs_recorded(&poller)?;
    let (rss_before, _) = procfs::memory_kib(lg.pid);
    let peak_reset = reset_peak(lg.pid);
    let cpu_before = procfs::cpu_time(lg.pid, ticks);
    let mut sampled_peak = rss_before;
    start()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let id = loop {
        let (count, id) = runs_recorded(&poller)?;
        if count > runs_before {
            break id;
        }
        if Instant::now() > deadline {
            return Err("provisioning: no run recorded within 10 minutes".into());
        }
        sampled_peak = sampled_peak.max(procfs::memory_kib(lg.pid).0);
        std::thread::sleep(Duration::from_millis(5));
    };
    let cpu = procfs::cpu_time(lg.pid, ticks).saturating_sub(cpu_before);
    let (_, hwm) = procfs::memory_kib(lg.pid);
    let (frames_after, sequence_after) = wal_frames(db);
    pin.execute_batch("COMMIT").map_err(|e| e.to_string())?;
    if sequence_after != sequence && frames_before > 0 {
        return Err("provisioning: the WAL was recycled during the run".into());
    }
    let (status, changes, started, finished): (String, String, i64, i64) = poller
        .query_row(
            "SELECT status, changes, started_at, finished_at FROM gitlab_provisioning_runs \
             WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(|e| e.to_string())?;
    let peak = if peak_reset { hwm } else { sampled_peak };
    Ok(RunFigures {
        status,
        changes: serde_json::from_str(&changes).unwrap_or(Value::Null),
        took_ms: (finished - started) as f64,
        cpu_ms: cpu.as_secs_f64() * 1000.0,
        extra_peak_kib: peak.saturating_sub(rss_before),
        rss_before_kib: rss_before,
        pages_written: frames_after.saturating_sub(frames_before),
    })
}

fn api(
    conn: &mut Conn,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Value, String> {
    let auth = format!("Bearer {token}");
    let bytes = body.to_string();
    let content_type = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let r = conn
        .request(
            method,
            path,
            &[("Authorization", &auth)],
            Some((content_type, bytes.as_bytes())),
        )
        .map_err(|e| format!("{path}: {e}"))?;
    if r.status >= 300 {
        return Err(format!("{method} {path}: {} {}", r.status, r.text()));
    }
    Ok(serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

/// Runs part 6 on a labgate of its own; `login` signs in as admin and makes an API token.
pub fn bench(
    ticks: u64,
    login: impl Fn(SocketAddr) -> Result<String, String>,
) -> Result<Figures, String> {
    let root = TempDir::new("provisioning");
    let token_file = root.0.join("gitlab-token");
    let token_arg = token_file.to_string_lossy().into_owned();
    let t = Instant::now();
    let fake = servers::start_self(
        &["--serve-provisioning", &token_arg],
        FAKE_PREFIX,
        "fake GitLab (provisioning)",
    )?;
    let gitlab_token = std::fs::read_to_string(&token_file).map_err(|e| e.to_string())?;
    println!(
        "  fake GitLab with {PEOPLE} people in {GROUPS} groups ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Provisioning's own writes are what this part counts: the run's audit event (the event
    // table, its indexes and the day counts, about 8 pages) is the audit log's cost, measured
    // in its own part, so recording is off here.
    let lab = Labgate::new(&root.0).with_env("LABGATE_BENCH_AUDIT", "off");
    let mut lg = lab.start()?;
    let admin = login(lg.addr)?;
    let mut conn = Conn::new(lg.addr);
    let fake_url = format!("http://{}", fake.addr);
    for (key, value) in [
        ("sonar.auth.gitlab.url", fake_url.as_str()),
        (
            "sonar.auth.gitlab.applicationId.secured",
            "bench-provisioning",
        ),
        (
            "sonar.auth.gitlab.secret.secured",
            "bench-provisioning-secret",
        ),
        ("sonar.auth.gitlab.allowedGroups", "bench"),
        ("sonar.auth.gitlab.enabled", "true"),
    ] {
        let auth = format!("Bearer {admin}");
        let r = conn
            .post_form(
                "/api/settings/set",
                &[("Authorization", &auth)],
                &form(&[("key", key), ("value", value)]),
            )
            .map_err(|e| e.to_string())?;
        if r.status != 204 {
            return Err(format!("settings/set {key}: {} {}", r.status, r.text()));
        }
    }
    let db = lab.db_path();
    // Run 1: switching to automatic provisioning starts it.
    let first = measure(&lg, &db, ticks, || {
        api(
            &mut conn,
            &admin,
            "PATCH",
            "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration",
            &json!({"provisioningType": "AUTO_PROVISIONING", "provisioningToken": gitlab_token.trim()}),
        )
        .map(|_| ())
    })?;
    println!("  run 1: {}", first.line());
    // The run with nothing changed can be repeated: the median of three, as CPU time is read
    // in clock ticks of 10 ms and the machine may be shared. Each follows a request, so that
    // the token's activity stamp (once a minute) is not written during it.
    let auth = format!("Bearer {admin}");
    let mut repeats = Vec::new();
    for _ in 0..SECOND_RUNS {
        conn.get("/api/users/current", &[("Authorization", &auth)])
            .map_err(|e| format!("api/users/current: {e}"))?;
        repeats.push(measure(&lg, &db, ticks, || {
            api(
                &mut conn,
                &admin,
                "POST",
                "/api/v2/dop-translation/gitlab-synchronization-runs",
                &json!({}),
            )
            .map(|_| ())
        })?);
    }
    repeats.sort_by(|a, b| a.cpu_ms.total_cmp(&b.cpu_ms));
    let second = repeats[repeats.len() / 2].clone();
    println!(
        "  runs with nothing changed, labgate CPU: {:?} ms; pages written: {:?}",
        repeats.iter().map(|r| r.cpu_ms).collect::<Vec<_>>(),
        repeats.iter().map(|r| r.pages_written).collect::<Vec<_>>()
    );
    println!("  run with nothing changed (median): {}", second.line());
    let counts = Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM groups WHERE gitlab_group_id IS NOT NULL), \
                 (SELECT count(*) FROM users WHERE external_provider = 'gitlab' AND active = 1), \
                 (SELECT count(*) FROM group_members)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .map_err(|e| e.to_string())?;
    lg.stop()?;
    // labgate's own line for each run: how long it read GitLab, decided and wrote.
    let log = std::fs::read_to_string(root.0.join("labgate.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("gitlab provisioning: run"))
    {
        let phases = line.split_once("read_ms=").map_or(line, |(_, p)| p);
        println!("  labgate's log: read_ms={phases}");
    }
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    drop(fake);
    Ok(Figures {
        first,
        second,
        groups: counts.0,
        people: counts.1,
        memberships: counts.2,
        db_bytes,
    })
}
