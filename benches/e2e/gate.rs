//! Part 4: the gate. Signed-in checks at `/gate/forward` and `/gate/nginx` from 32 keep-alive
//! clients, each round next to a bare oxhttp server answering 200 with the same identity
//! headers ("gate hello", its own process); then the whole chain through a real nginx (Debian's,
//! as the tests run it): nginx → labgate → upstream, against nginx → upstream without
//! `auth_request`, in the same run. The upstream is the hello server.

use crate::http::Conn;
use crate::servers::Server;
use crate::stats::median;
use crate::{run_clients, Budget, Cpu, OpResult, Session, SignedRow, SIGNED_IN_CLIENTS};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[path = "../../tests/support/proxies.rs"]
mod proxies;

pub const GATE_HELLO_PREFIX: &str = "gate hello listening on ";

/// The identity headers labgate answers the bench's admin with, and its `Cache-Control`.
const ADMIN_HEADERS: &[(&str, &str)] = &[
    ("Remote-User", "admin"),
    ("Remote-Name", "Administrator"),
    ("Remote-Email", ""),
    ("Remote-Groups", "administrators,users"),
    ("X-Auth-Request-User", "admin"),
    ("X-Auth-Request-Email", ""),
    ("X-Auth-Request-Groups", "administrators,users"),
    ("X-Auth-Request-Preferred-Username", "admin"),
    ("Cache-Control", "no-store"),
];

/// A bare oxhttp server answering 200 with labgate's identity headers for the admin and an
/// empty body: the baseline of the checks.
pub fn serve_gate_hello() {
    crate::serve_answering(GATE_HELLO_PREFIX, ADMIN_HEADERS, "")
}

struct Client {
    conn: Conn,
    headers: Vec<(String, String)>,
}

fn get_ok(c: &mut Client, target: &str) -> OpResult {
    let headers: Vec<(&str, &str)> = c
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let t = Instant::now();
    let r = c
        .conn
        .get(target, &headers)
        .map_err(|e| format!("GET {target}: {e}"))?;
    let took = t.elapsed();
    if r.status != 200 {
        return Err(format!("GET {target}: {} {}", r.status, r.text()));
    }
    Ok((took, took))
}

/// Registers the application the checks ask about (every signed-in user admitted).
fn register(lg: SocketAddr, s: &Session, url: &str) -> Result<(), String> {
    let body = json!({"name": format!("bench {url}"), "url": url}).to_string();
    let r = Conn::new(lg)
        .request(
            "POST",
            "/api/v2/labgate/applications",
            &[("Cookie", &s.cookie_header()), ("X-XSRF-TOKEN", &s.xsrf)],
            Some(("application/json", body.as_bytes())),
        )
        .map_err(|e| format!("register {url}: {e}"))?;
    if r.status != 201 {
        return Err(format!("register {url}: {} {}", r.status, r.text()));
    }
    Ok(())
}

/// What part 4 measured.
pub struct GateRun {
    /// The gate hello, `/gate/forward`, `/gate/nginx`.
    pub checks: Vec<SignedRow>,
    /// nginx → hello, nginx → labgate → hello; `None` without nginx.
    pub chain: Option<Vec<SignedRow>>,
}

/// Runs `rows.len()` kinds of request round after round, the baseline first in each round.
fn rounds(
    b: &Budget,
    rows: &mut [SignedRow],
    clients: &mut [Vec<Client>],
    targets: &[&str],
    cpus: &[Cpu],
) {
    for (clients, target) in clients.iter_mut().zip(targets) {
        run_clients(clients, Duration::from_millis(200), 20, None, |c| {
            get_ok(c, target)
        });
    }
    for round in 0..b.signed_rounds {
        for (i, row) in rows.iter_mut().enumerate() {
            let run = run_clients(
                &mut clients[i],
                b.signed_run,
                10_000_000,
                Some(&cpus[i]),
                |c| get_ok(c, targets[i]),
            );
            let cpu = run.cpu_labgate_ms;
            row.add(run, cpu);
        }
        let line: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {:.0}/s", r.name, r.rps[round]))
            .collect();
        println!("  round {}: {}", round + 1, line.join(", "));
    }
}

pub fn bench_gate(
    b: &Budget,
    lg: &Server,
    gate_hello: &Server,
    hello: &Server,
    sessions: &[Session],
    ticks: u64,
) -> Result<GateRun, String> {
    let app = "http://app.lab.test:8080";
    register(lg.addr, &sessions[0], app)?;
    let with = |addr: SocketAddr, extra: &[(&str, &str)]| -> Vec<Client> {
        sessions
            .iter()
            .take(SIGNED_IN_CLIENTS)
            .map(|s| {
                let mut headers = vec![("Cookie".to_string(), s.cookie_header())];
                headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                Client {
                    conn: Conn::new(addr),
                    headers,
                }
            })
            .collect()
    };
    let forward = [
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "app.lab.test:8080"),
        ("X-Forwarded-Uri", "/notebook?x=1"),
        ("X-Forwarded-Method", "GET"),
    ];
    let nginx = [
        ("X-Original-URL", "http://app.lab.test:8080/notebook?x=1"),
        ("X-Original-Method", "GET"),
    ];
    let mut probe = with(lg.addr, &forward).remove(0);
    get_ok(&mut probe, "/gate/forward").map_err(|e| format!("the check refuses: {e}"))?;
    // The baseline gets the same requests as /gate/forward (it reads none of them).
    let mut clients = vec![
        with(gate_hello.addr, &forward),
        with(lg.addr, &forward),
        with(lg.addr, &nginx),
    ];
    let cpu = |server: &Server, other: &Server| Cpu {
        ticks,
        labgate: server.pid,
        other: other.pid,
    };
    let cpus = [
        cpu(gate_hello, lg),
        cpu(lg, gate_hello),
        cpu(lg, gate_hello),
    ];
    let mut checks = vec![
        SignedRow::new("gate hello (bare oxhttp)"),
        SignedRow::new("/gate/forward"),
        SignedRow::new("/gate/nginx"),
    ];
    rounds(
        b,
        &mut checks,
        &mut clients,
        &["/", "/gate/forward", "/gate/nginx"],
        &cpus,
    );
    let chain = if std::path::Path::new(proxies::NGINX).exists() {
        Some(bench_chain(b, sessions, (lg, hello), ticks)?)
    } else {
        println!("  nginx is not installed: the chain through nginx is not measured");
        None
    };
    Ok(GateRun { checks, chain })
}

/// nginx in front of the hello server twice: on one port as labgate's configuration puts an
/// application behind labgate, on another with a plain `proxy_pass`.
fn bench_chain(
    b: &Budget,
    sessions: &[Session],
    (lg, hello): (&Server, &Server),
    ticks: u64,
) -> Result<Vec<SignedRow>, String> {
    let (gated_port, plain_port) = (proxies::free_port(), proxies::free_port());
    let url = format!("http://app.lab.test:{gated_port}");
    register(lg.addr, &sessions[0], &url)?;
    let origin = labgate::gate::rules::Origin::parse(&url).map_err(str::to_string)?;
    let labgate = format!("http://{}", lg.addr);
    let upstream = format!("http://{}", hello.addr);
    let gated = labgate::gate::snippets::nginx(&labgate::gate::snippets::Target {
        name: "bench",
        origin: &origin,
        labgate: &labgate,
        upstream: &upstream,
        bind: Some("127.0.0.1"),
    });
    let plain = format!(
        "server {{\n    listen 127.0.0.1:{plain_port};\n    location / {{\n        proxy_pass {upstream};\n    }}\n}}\n"
    );
    let both = format!("{gated}{plain}");
    let nginx = proxies::Proxy::nginx(&both, gated_port);
    let to = |port: u16| -> Vec<Client> {
        sessions
            .iter()
            .take(SIGNED_IN_CLIENTS)
            .map(|s| Client {
                conn: Conn::new(([127, 0, 0, 1], port).into()),
                headers: vec![("Cookie".to_string(), s.cookie_header())],
            })
            .collect()
    };
    let mut clients = vec![to(plain_port), to(gated_port)];
    let nginx_pid = nginx.pid();
    let cpus = [
        Cpu {
            ticks,
            labgate: nginx_pid,
            other: hello.pid,
        },
        Cpu {
            ticks,
            labgate: lg.pid,
            other: nginx_pid,
        },
    ];
    let mut rows = vec![
        SignedRow::new("nginx → upstream"),
        SignedRow::new("nginx → labgate → upstream"),
    ];
    rounds(
        b,
        &mut rows,
        &mut clients,
        &["/notebook?x=1", "/notebook?x=1"],
        &cpus,
    );
    let errors = nginx.log();
    if errors.contains("[error]") {
        println!(
            "  nginx logged errors: {}",
            errors
                .lines()
                .filter(|l| l.contains("[error]"))
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(rows)
}

/// The report of part 4: rows, ratios to their baseline, and the targets.
pub fn report(run: &GateRun, targets: &mut Vec<(String, String, bool)>) -> Value {
    let table = |title: &str, rows: &[SignedRow]| -> Value {
        println!("\n{title}");
        crate::print_rows(rows, "baseline")
    };
    let checks = table(
        &format!("4. The gate's checks, {SIGNED_IN_CLIENTS} keep-alive clients (admin session cookies); base: gate hello"),
        &run.checks,
    );
    for r in &run.checks[1..] {
        let paired = r.ratios_to(&run.checks[0]);
        targets.push((
            format!("{} ≥ 70 % of bare oxhttp, p99 ≤ 2 ms", r.name),
            format!(
                "{:.0} % ({:.0}/s vs {:.0}/s), p99 {:.2} ms",
                median(&paired) * 100.0,
                median(&r.rps),
                median(&run.checks[0].rps),
                r.samples.p99()
            ),
            median(&paired) >= 0.70 && r.samples.p99() <= 2.0,
        ));
    }
    let chain = run.chain.as_ref().map(|rows| {
        table(
            "   the whole chain through nginx; base: nginx → upstream without auth_request",
            rows,
        )
    });
    json!({ "checks": checks, "chain_through_nginx": chain })
}
