//! The process: the listening line, SIGTERM (drain, 503, exit 0), restarts keeping all
//! state, and the request log (one line per request, no secrets).

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn listening_line_is_the_only_stdout_output() {
    let mut lg = Labgate::start();
    lg.admin().get("/api/users/current").expect_json(200);
    lg.sigterm();
    lg.wait_exit(Duration::from_secs(15));
    let out = lg.stdout().all();
    let expected = format!("labgate listening on http://{}", lg.addr);
    let lines: Vec<&String> = out.iter().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines, vec![&expected], "stdout: {out:?}");
}

#[test]
fn sigterm_exits_with_status_0() {
    let mut lg = Labgate::start();
    lg.sigterm();
    let status = lg.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lg.stderr().joined());
}

#[test]
fn sigint_exits_with_status_0() {
    let mut lg = Labgate::start();
    let status = std::process::Command::new("kill")
        .arg("-INT")
        .arg(lg.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = lg.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lg.stderr().joined());
}

#[test]
fn restart_keeps_users_groups_tokens_and_sessions() {
    let mut lg = Labgate::start();
    lg.create_user("keeper", USER_PASSWORD);
    lg.create_group("kept");
    lg.admin()
        .post_form(
            "/api/user_groups/add_user",
            &[("name", "kept"), ("login", "keeper")],
        )
        .expect(204);
    lg.grant_user("keeper", "admin");
    let token = lg.token_for("keeper");
    let session = lg.login("keeper", USER_PASSWORD);

    lg.restart();

    // The session cookie still works (and its CSRF token with it).
    let mut session = session.at(lg.addr);
    let v = session.get("/api/users/current").expect_json(200);
    assert_eq!(v["login"], "keeper", "{v}");
    assert!(names(&v["groups"]).contains(&"kept".to_string()), "{v}");
    session
        .post_form("/api/user_groups/create", &[("name", "after-restart")])
        .expect_json(200);
    // The token too.
    let v = lg
        .client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(v["login"], "keeper", "{v}");
    assert!(
        v["permissions"]["global"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == "admin")),
        "{v}"
    );
    // The password.
    lg.login("keeper", USER_PASSWORD);
    let m = lg
        .admin()
        .get_query("/api/user_groups/users", &[("name", "kept")])
        .expect_json(200);
    assert_eq!(logins(&m["users"]), vec!["keeper".to_string()], "{m}");
}

#[test]
fn restart_keeps_settings() {
    let mut lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/settings/set",
            &[
                ("key", "sonar.auth.gitlab.allowedGroups"),
                ("values", "acme"),
                ("values", "beta"),
            ],
        )
        .expect(204);
    lg.restart();
    let v = lg.admin().get("/api/settings/values").expect_json(200);
    let s = v["settings"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["key"] == "sonar.auth.gitlab.allowedGroups")
        })
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(s["values"], serde_json::json!(["acme", "beta"]), "{v}");
}

#[test]
fn admin_password_variable_applies_only_on_first_start() {
    let mut lg = Labgate::start();
    lg.admin()
        .post_form(
            "/api/users/change_password",
            &[
                ("login", "admin"),
                ("previousPassword", ADMIN_PASSWORD),
                ("password", "changed-admin-Passw0rd"),
            ],
        )
        .expect(204);
    lg.restart();
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .expect_error(401);
    lg.login("admin", "changed-admin-Passw0rd");
}

#[test]
fn sigterm_drains_in_flight_requests_and_answers_503_to_new_ones() {
    let mut lg = Labgate::start();
    let token = lg.token_for("admin");
    let body = form_encode(&[("name", "drained"), ("description", "sent slowly")]);
    let (first, rest) = body.split_at(7);
    let mut slow = TcpStream::connect(lg.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    // `Expect: 100-continue`: the interim answer says the server has read the head and
    // handed the request to labgate, so it is in flight before the signal.
    let head = format!(
        "POST /api/user_groups/create HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        lg.addr,
        body.len()
    );
    slow.write_all(head.as_bytes()).expect("write head");
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        match slow.read(&mut byte) {
            Ok(1) => interim.push(byte[0]),
            other => panic!(
                "no 100 Continue ({other:?}) after {:?}",
                String::from_utf8_lossy(&interim)
            ),
        }
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "interim answer: {:?}",
        String::from_utf8_lossy(&interim)
    );
    slow.write_all(first.as_bytes())
        .expect("write start of body");
    // oxhttp writes the 100 Continue before it calls labgate's handler: the request is in
    // flight only once the handler has read the start of the body from the socket (a loaded
    // machine can leave that thread unscheduled past the drain's end).
    let client_port = slow.local_addr().expect("local address").port();
    assert!(
        poll(Duration::from_secs(10), || {
            (unread_bytes(lg.addr.port(), client_port) == Some(0)).then_some(())
        })
        .is_some(),
        "labgate never read the start of the body"
    );

    lg.sigterm();

    // New requests are answered 503 (not refused) while the slow one is in flight.
    let mut last = String::new();
    let got_503 = poll(Duration::from_secs(5), || {
        let Ok(mut s) = TcpStream::connect_timeout(&lg.addr, Duration::from_secs(1)) else {
            last = "connection refused".into();
            return None;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /api/system/status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            lg.addr
        );
        if s.write_all(req.as_bytes()).is_err() {
            last = "write failed".into();
            return None;
        }
        match read_response(&mut s) {
            Ok(r) if r.status == 503 => Some(()),
            Ok(r) => {
                last = r.describe();
                None
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    });

    // The in-flight request completes.
    slow.write_all(rest.as_bytes()).expect("write rest of body");
    let resp = read_response(&mut slow).expect("in-flight answer");
    let status = lg.wait_exit(Duration::from_secs(15));

    assert!(
        got_503.is_some(),
        "no 503 for a new request during the drain; last: {last}"
    );
    assert_eq!(resp.status, 200, "in-flight request: {}", resp.describe());
    assert_eq!(resp.json()["group"]["name"], "drained");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lg.stderr().joined());
}

#[test]
fn requests_are_logged_one_line_each_without_query_or_secrets() {
    let lg = Launch::new().env("LABGATE_LOG", "info").start();
    let session = lg.admin_client();
    let session_id = session
        .cookie("labgate_session")
        .expect("session")
        .to_string();
    let token = lg.token_for("admin");
    lg.client()
        .bearer(&token)
        .get("/api/users/search?q=needle-in-query")
        .expect_json(200);
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", "wrong-guess-Passw0rd")],
        )
        .expect(401);
    let line = lg
        .stderr()
        .wait_for(Duration::from_secs(5), |l| l.contains("/api/users/search"))
        .unwrap_or_else(|| panic!("no log line for the search:\n{}", lg.stderr().joined()));
    assert!(line.contains("GET"), "{line}");
    assert!(line.contains("200"), "{line}");
    lg.stderr()
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("/api/authentication/login") && l.contains("401")
        })
        .unwrap_or_else(|| {
            panic!(
                "no log line for the failed login:\n{}",
                lg.stderr().joined()
            )
        });
    let log = lg.stderr().joined();
    for secret in [
        ADMIN_PASSWORD,
        "wrong-guess-Passw0rd",
        token.as_str(),
        &token[4..],
        session_id.as_str(),
        "needle-in-query",
    ] {
        assert!(!log.contains(secret), "log contains {secret:?}:\n{log}");
    }
}

/// Bytes received and not yet read on labgate's side of the IPv4 connection from local port
/// `client` to `server` (Linux: `/proc/net/tcp`, whose ports and queues are hexadecimal).
fn unread_bytes(server: u16, client: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        if port(fields.get(1)?)? != server || port(fields.get(2)?)? != client {
            return None;
        }
        let (_, rx) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}
