//! kill -9 during a burst of admin writes: after each restart, every change the database holds
//! has its audit event and no event stands without its change (a change and its event commit
//! in one transaction). An event is in the log or still among the pending events (moved into
//! the log in batches): the checks read both. Prints lines starting `reliability/audit-crash`.

use crate::harness::*;
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// One form POST with a Bearer token over a fresh connection; `None` when the server is gone
/// (killed on purpose) before answering.
fn post(addr: SocketAddr, token: &str, path: &str, params: &[(&str, &str)]) -> Option<u16> {
    let body = form_encode(params);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(head.as_bytes()).ok()?;
    read_response(&mut stream).ok().map(|r| r.status)
}

/// Creates groups, adds a user to each and grants it a permission, revoking every other grant,
/// until told to stop or the server dies. Counts the requests sent.
fn writer(
    addr: SocketAddr,
    token: &str,
    cycle: usize,
    w: usize,
    stop: &AtomicBool,
    sent: &AtomicUsize,
) {
    for i in 0..100_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let group = format!("c{cycle}w{w}g{i}");
        let member = format!("local{}", i % 3);
        let steps: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("/api/user_groups/create", vec![("name", &group)]),
            (
                "/api/user_groups/add_user",
                vec![("name", &group), ("login", &member)],
            ),
            (
                "/api/permissions/add_group",
                vec![("groupName", &group), ("permission", "admin")],
            ),
        ];
        for (path, params) in steps {
            sent.fetch_add(1, Ordering::SeqCst);
            if post(addr, token, path, &params).is_none() {
                return;
            }
        }
        if i % 2 == 1 {
            let params = [("groupName", group.as_str()), ("permission", "admin")];
            sent.fetch_add(1, Ordering::SeqCst);
            if post(addr, token, "/api/permissions/remove_group", &params).is_none() {
                return;
            }
        }
    }
}

fn rows(conn: &Connection, sql: &str) -> Vec<(String, String)> {
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// Checks that the changes of the burst and their events match one to one; returns what it
/// counted.
fn check(conn: &Connection) -> BTreeMap<&'static str, usize> {
    let groups: BTreeSet<String> =
        rows(conn, "SELECT name, '' FROM groups WHERE name LIKE 'c%w%g%'")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
    let created: Vec<String> = rows(
        conn,
        "WITH e AS (SELECT * FROM audit_events UNION ALL SELECT * FROM audit_pending) \
         SELECT target, '' FROM e WHERE action = 'group.create' AND outcome = 'ok' \
         AND target LIKE 'c%w%g%'",
    )
    .into_iter()
    .map(|(t, _)| t)
    .collect();
    let created_set: BTreeSet<String> = created.iter().cloned().collect();
    assert_eq!(
        created.len(),
        created_set.len(),
        "a group.create event twice"
    );
    assert_eq!(
        groups, created_set,
        "groups and their group.create events differ"
    );

    let members: BTreeSet<(String, String)> = rows(
        conn,
        "SELECT g.name, u.login FROM group_members m JOIN groups g ON g.id = m.group_id \
         JOIN users u ON u.id = m.user_id WHERE g.name LIKE 'c%w%g%'",
    )
    .into_iter()
    .collect();
    let added: Vec<(String, String)> = rows(
        conn,
        "WITH e AS (SELECT * FROM audit_events UNION ALL SELECT * FROM audit_pending) \
         SELECT json_extract(detail, '$.group'), target FROM e \
         WHERE action = 'membership.add' AND json_extract(detail, '$.group') LIKE 'c%w%g%'",
    );
    let added_set: BTreeSet<(String, String)> = added.iter().cloned().collect();
    assert_eq!(added.len(), added_set.len(), "a membership.add event twice");
    assert_eq!(
        members, added_set,
        "memberships and their membership.add events differ"
    );

    let granted: BTreeSet<String> = rows(
        conn,
        "SELECT g.name, '' FROM group_permissions p JOIN groups g ON g.id = p.group_id \
         WHERE g.name LIKE 'c%w%g%' AND p.permission = 'admin'",
    )
    .into_iter()
    .map(|(n, _)| n)
    .collect();
    let mut net: BTreeMap<String, i64> = BTreeMap::new();
    let grants = rows(
        conn,
        "WITH e AS (SELECT 0 AS src, * FROM audit_events UNION ALL \
                   SELECT 1 AS src, * FROM audit_pending) \
         SELECT target, action FROM e WHERE action IN \
         ('permission.grant', 'permission.revoke') AND target LIKE 'c%w%g%' ORDER BY src, id",
    );
    for (target, action) in &grants {
        let n = net.entry(target.clone()).or_insert(0);
        *n += if action == "permission.grant" { 1 } else { -1 };
        assert!(
            (0..=1).contains(n),
            "{target}: events out of order: {grants:?}"
        );
    }
    let by_events: BTreeSet<String> = net
        .into_iter()
        .filter(|(_, n)| *n == 1)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(granted, by_events, "grants and their events differ");
    BTreeMap::from([
        ("groups", groups.len()),
        ("memberships", members.len()),
        ("grants held", granted.len()),
        ("grant and revoke events", grants.len()),
    ])
}

#[test]
fn sigkill_during_admin_writes_leaves_each_change_with_its_event_and_no_event_alone() {
    let first = Labgate::start();
    for k in 0..3 {
        first.create_user(&format!("local{k}"), USER_PASSWORD);
    }
    let token = first.token_for("admin");
    let data_dir = first.data_dir().to_string_lossy().into_owned();
    let (mut addr, mut pid) = (first.addr, first.pid());
    let mut restarted: Vec<Labgate> = Vec::new();
    let cycles = 2;
    for cycle in 0..cycles {
        let stop = AtomicBool::new(false);
        let sent = AtomicUsize::new(0);
        let started = Instant::now();
        thread::scope(|s| {
            for w in 0..3 {
                let (token, stop, sent) = (&token, &stop, &sent);
                s.spawn(move || writer(addr, token, cycle, w, stop, sent));
            }
            thread::sleep(Duration::from_millis(1500));
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success());
            stop.store(true, Ordering::SeqCst);
        });
        let lg = Launch::new().arg("--data-dir").arg(&data_dir).start();
        lg.client().get("/api/system/status").expect_json(200);
        let conn = Connection::open_with_flags(
            first.data_dir().join("labgate.db"),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let counted = check(&conn);
        eprintln!(
            "reliability/audit-crash cycle {cycle}: SIGKILL after {:?} with {} requests sent; \
             after restart every change has its event and no event stands alone: {counted:?}",
            started.elapsed(),
            sent.load(Ordering::SeqCst)
        );
        assert!(counted["groups"] > 0, "no write happened before the kill");
        (addr, pid) = (lg.addr, lg.pid());
        restarted.push(lg);
    }
}
