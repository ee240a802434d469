//! Serving over oxhttp, and what labgate adds around it: reserving a port for `:0`, body and
//! parameter limits, the client address, panics answered 500 with a request id, security
//! headers, one log line per request, and graceful draining on SIGTERM.

use crate::web::request::{Params, Req, Resp, MAX_BODY};
use crate::web::{self, App, Route};
use oxhttp::model::{Body, HeaderName, HeaderValue, Request, Response, StatusCode};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Read/write timeout of a connection: a stalled client is dropped after this.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// Most connections served at once (one thread each, a few tens of KiB resident). Stalled
/// clients below this cap cannot lock others out; above it, new connections wait for a slot.
/// Lowered at start when the open-file limit cannot hold it (see `process`).
pub const MAX_CONNECTIONS: usize = 2048;
/// Longest time a request body may take to arrive, however it is trickled.
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
/// Most header fields in one request (431 beyond).
pub const MAX_HEADER_FIELDS: usize = 100;
/// How long in-flight requests may take to finish after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const STYLE_CSS: &str = include_str!("../static/style.css");

/// Binds and starts serving `make_app(addr)`, answering each request from `routes` through
/// [`web::dispatch()`]. With port 0, a free port is reserved first (oxhttp binds by address and
/// does not report the port it got), retrying if taken meanwhile.
pub fn spawn(
    listen: SocketAddr,
    routes: &'static [Route],
    make_app: impl Fn(SocketAddr) -> Arc<App>,
) -> std::io::Result<(SocketAddr, Arc<App>)> {
    spawn_with(listen, make_app, move |app: &App, req: &Req| {
        web::dispatch(app, routes, req)
    })
}

/// [`spawn`] with another dispatcher (tests use one that panics).
pub fn spawn_with(
    listen: SocketAddr,
    make_app: impl Fn(SocketAddr) -> Arc<App>,
    dispatch: impl Fn(&App, &Req) -> Resp + Copy + Send + Sync + 'static,
) -> std::io::Result<(SocketAddr, Arc<App>)> {
    let attempts = if listen.port() == 0 { 5 } else { 1 };
    let mut last_err = None;
    let max_connections = crate::process::connection_capacity(MAX_CONNECTIONS);
    if max_connections < MAX_CONNECTIONS {
        log::warn!(
            "the open-file limit allows only {max_connections} connections at once \
             (wanted {MAX_CONNECTIONS}); raise `ulimit -n` for more"
        );
    }
    for _ in 0..attempts {
        let addr = if listen.port() == 0 {
            reserve_port(listen.ip())?
        } else {
            listen
        };
        let app = make_app(addr);
        let handler_app = Arc::clone(&app);
        let server = oxhttp::Server::new(move |request| handle(&handler_app, request, dispatch))
            .bind(addr)
            .with_global_timeout(CONNECTION_TIMEOUT)
            .with_max_concurrent_connections(max_connections);
        match server.spawn() {
            Ok(_listening) => return Ok((addr, app)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && listen.port() == 0 => {
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("could not reserve a port")))
}

/// Finds a free port on `ip` by binding port 0 and releasing it.
pub fn reserve_port(ip: IpAddr) -> std::io::Result<SocketAddr> {
    let probe = TcpListener::bind(SocketAddr::new(ip, 0))?;
    probe.local_addr()
}

/// Waits for in-flight requests to finish (bounded), with new ones already refused.
pub fn drain(app: &App, limit: Duration) -> bool {
    app.draining.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + limit;
    while app.in_flight.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // oxhttp writes an answer after labgate's handler has returned, a moment labgate cannot
    // see: give the answers of the last requests that moment before the process exits.
    std::thread::sleep(WRITE_GRACE.min(deadline.saturating_duration_since(Instant::now())));
    true
}

/// How long the drain waits, once no request is in flight, for oxhttp to write the last answers.
const WRITE_GRACE: Duration = Duration::from_millis(250);

struct InFlight<'a>(&'a App);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The peer address: oxhttp gives handlers none, but names each connection's thread after it
/// (a thread's name never changes, so it is read once per thread).
fn peer_address() -> Option<SocketAddr> {
    thread_local! {
        static PEER: Option<SocketAddr> = {
            let current = std::thread::current();
            current
                .name()
                .and_then(|name| name.split_once(": responding thread"))
                .and_then(|(addr, _)| addr.parse().ok())
        };
    }
    PEER.with(|peer| *peer)
}

/// A request id unique in this process (for 2^48 requests) and unlike other processes' (a
/// random start): 12 hex characters. Not a secret, so no system call per request.
fn next_request_id() -> String {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    const MASK: u64 = (1 << 48) - 1;
    static START: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let bytes = crate::crypto::random_bytes(8);
        u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
    });
    // An odd multiplier is a bijection modulo 2^48: distinct counts give distinct ids, which
    // do not read as a sequence.
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:012x}",
        start.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4B)) & MASK
    )
}

/// Milliseconds with one decimal, for the request log line.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0.as_micros() + 50) / 100;
        write!(f, "{}.{}ms", tenths / 10, tenths % 10)
    }
}

/// The client address for throttling. From a configured trusted proxy: the right-most
/// `X-Forwarded-For` address not itself a proxy. Otherwise the peer, except a loopback peer,
/// which is taken for a reverse proxy on the same machine speaking for every client and
/// counted as no address (name it in `--trusted-proxies` to count its clients apart).
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        let mapped = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        return (!mapped.is_loopback()).then_some(peer);
    }
    forwarded_for?
        .split(',')
        .rev()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
}

/// Makes oxhttp close the connection after this response and not drain the unread body.
fn abandon_body(request: &mut Request<Body>) {
    *request.body_mut() = Body::empty();
    request.headers_mut().insert(
        oxhttp::model::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
}

/// Handles one request around `dispatch`: limits, panics, headers, logging.
pub fn handle(
    app: &App,
    request: &mut Request<Body>,
    dispatch: impl Fn(&App, &Req) -> Resp,
) -> Response<Body> {
    app.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(app);
    let started = Instant::now();
    let request_id = next_request_id();
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    // HEAD is answered as GET, and its body dropped below.
    let head = method == "HEAD";
    let resp = if app.draining.load(Ordering::SeqCst) {
        abandon_body(request);
        Resp::text(503, "labgate is shutting down; try again in a moment")
            .with_header("Retry-After", "5")
    } else if (method == "GET" || head) && path == "/static/style.css" {
        Resp::new(200, "text/css; charset=utf-8", STYLE_CSS)
            .with_header("Cache-Control", "public, max-age=3600")
    } else {
        match read_request(app, request, &request_id) {
            Ok(mut req) => {
                if head {
                    req.method = "GET".into();
                }
                match std::panic::catch_unwind(AssertUnwindSafe(|| dispatch(app, &req))) {
                    Ok(resp) => resp,
                    Err(_) => {
                        log::error!("request {request_id}: handler panicked on {method} {path}");
                        web::error_response(
                            &req,
                            req.is_api(),
                            crate::error::AppError::Internal(format!(
                                "panic in request {request_id}"
                            )),
                        )
                    }
                }
            }
            Err(resp) => {
                abandon_body(request);
                resp
            }
        }
    };
    let resp = if head {
        Resp {
            body: Vec::new(),
            ..resp
        }
    } else {
        resp
    };
    let status = resp.status;
    log::info!("{method} {path} {status} {}", Millis(started.elapsed()));
    to_response(resp, &request_id)
}

/// Builds a [`Req`] with the body read under the cap; refusals come back as responses.
fn read_request(app: &App, request: &mut Request<Body>, request_id: &str) -> Result<Req, Resp> {
    let is_api = request.uri().path().starts_with("/api/");
    let refuse = |err: crate::error::AppError| {
        let stub = Req {
            method: String::new(),
            path: String::new(),
            raw_query: String::new(),
            query: Params::default(),
            form: Params::default(),
            headers: Vec::new(),
            client_ip: None,
            request_id: request_id.to_string(),
            body: Vec::new(),
        };
        web::error_response(&stub, is_api, err)
    };
    // oxhttp refuses a header section over 8 KiB itself (400) before labgate sees it; labgate
    // refuses many small fields, which would each be copied and searched.
    if request.headers().len() > MAX_HEADER_FIELDS {
        return Err(refuse(crate::error::AppError::invalid(
            "headers",
            format!("Too many header fields (at most {MAX_HEADER_FIELDS})"),
        ))
        .with_status(431));
    }
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(len) = request.body().len() {
        if len > MAX_BODY as u64 {
            return Err(refuse(crate::error::AppError::PayloadTooLarge));
        }
    }
    let mut body = Vec::new();
    let started = Instant::now();
    let mut reader = request.body_mut().take(MAX_BODY as u64 + 1);
    // Most requests have no body: no buffer to clear for them.
    let mut chunk = if reader.get_ref().len() == Some(0) {
        Vec::new()
    } else {
        vec![0u8; 8192]
    };
    while !chunk.is_empty() {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let status = if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock
                {
                    408
                } else {
                    400
                };
                return Err(Resp::text(status, "The request body could not be read"));
            }
        }
        // The read timeout restarts with every byte: a body trickled in is cut off as a whole.
        if started.elapsed() > BODY_DEADLINE {
            return Err(Resp::text(408, "The request body was sent too slowly"));
        }
    }
    if body.len() > MAX_BODY {
        return Err(refuse(crate::error::AppError::PayloadTooLarge));
    }
    let raw_query = request.uri().query().unwrap_or("").to_string();
    let query = Params::parse(raw_query.as_bytes()).map_err(refuse)?;
    let is_form = header("content-type").is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    let form = if is_form {
        Params::parse(&body).map_err(refuse)?
    } else {
        Params::default()
    };
    if query.len() + form.len() > crate::web::request::MAX_PARAMS {
        return Err(refuse(crate::error::AppError::invalid(
            "request",
            "Too many parameters",
        )));
    }
    let client_ip = client_address(
        peer_address().map(|a| a.ip()),
        header("x-forwarded-for"),
        &app.config.trusted_proxies,
    );
    Ok(Req {
        method: request.method().as_str().to_string(),
        path: request.uri().path().to_string(),
        raw_query,
        query,
        form,
        client_ip,
        request_id: request_id.to_string(),
        body,
        headers,
    })
}

use crate::web::views::CSP;

fn to_response(resp: Resp, request_id: &str) -> Response<Body> {
    let is_html = resp
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("text/html"));
    let has_cache_control = resp.header("cache-control").is_some();
    // A page may widen one directive (the sign-in form, whose redirect goes on to an
    // application's origin): its own policy stands instead of the default.
    let has_csp = resp.header("content-security-policy").is_some();
    // Headers go straight into the map: the builder would move the whole response head
    // through a `Result` for each one.
    let mut response = Response::new(Body::from(resp.body));
    *response.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let shared = resp.shared.as_deref().map_or(&[][..], |s| &s[..]);
    let headers = response.headers_mut();
    headers.reserve(resp.headers.len() + shared.len() + 6);
    for (name, value) in resp.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(n, v);
        }
    }
    for (name, value) in shared {
        headers.append(name.clone(), value.clone());
    }
    use oxhttp::model::header;
    headers.append(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(id) = HeaderValue::try_from(request_id) {
        headers.append(HeaderName::from_static("x-request-id"), id);
    }
    if is_html && !has_csp {
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    if is_html {
        headers.append(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        headers.append(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if !has_cache_control {
        headers.append(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "10.1.1.1".parse().unwrap();
        let xff = Some("203.0.113.9, 198.51.100.2");
        // An untrusted peer is the client, whatever it claims; a loopback one counts as none.
        assert_eq!(client_address(Some(proxy), xff, &[]), None);
        assert_eq!(client_address(Some(other), xff, &[proxy]), Some(other));
        let mapped_loopback: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_address(Some(mapped_loopback), xff, &[]), None);
        assert_eq!(
            client_address(Some(proxy), xff, &[proxy]),
            Some("198.51.100.2".parse().unwrap())
        );
        // A chain of trusted proxies is skipped from the right.
        let p2: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(
            client_address(Some(proxy), xff, &[proxy, p2]),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(client_address(Some(proxy), Some("garbage"), &[proxy]), None);
        assert_eq!(client_address(None, xff, &[proxy]), None);
    }

    fn test_app(bound: SocketAddr) -> Arc<App> {
        let dir = std::env::temp_dir().join(format!(
            "labgate-server-test-{}-{}",
            std::process::id(),
            bound.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let flags = crate::config::Flags {
            listen: Some(bound.to_string()),
            data_dir: Some(dir.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let config = crate::config::Config::from_flags(&flags, &|_| None).unwrap();
        Arc::new(App::new(
            config,
            bound,
            "test".into(),
            crate::gitlab::Client::new(None).unwrap(),
            2,
        ))
    }

    fn panics_on_boom(_app: &App, req: &Req) -> Resp {
        if req.path == "/api/boom" {
            panic!("deliberate test panic");
        }
        Resp::text(200, "fine")
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_panicking_handler_answers_500_with_request_id_and_server_lives_on() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (addr, app) = spawn_with(listen, test_app, panics_on_boom).unwrap();
        let answer = get(addr, "/api/boom");
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        let id_line = answer
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-request-id:"))
            .expect("request id header");
        let id = id_line.split(':').nth(1).unwrap().trim();
        assert!(answer.contains(id) && answer.contains("An internal error occurred"));
        assert!(!answer.contains("deliberate"), "panic text must not leak");
        for _ in 0..3 {
            assert!(get(addr, "/api/fine").starts_with("HTTP/1.1 200"));
        }
        assert_eq!(app.in_flight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn draining_answers_503_and_waits_for_in_flight() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (addr, app) = spawn_with(listen, test_app, panics_on_boom).unwrap();
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        assert!(
            !drain(&app, Duration::from_millis(50)),
            "an in-flight request holds the drain"
        );
        assert!(get(addr, "/api/fine").starts_with("HTTP/1.1 503"));
        app.in_flight.fetch_sub(1, Ordering::SeqCst);
        assert!(drain(&app, Duration::from_secs(5)));
    }

    #[test]
    fn request_ids_are_twelve_hex_characters_and_distinct() {
        let ids: std::collections::BTreeSet<String> =
            (0..1000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn request_times_are_logged_in_milliseconds_with_one_decimal() {
        let ms = |micros| Millis(Duration::from_micros(micros)).to_string();
        assert_eq!(ms(0), "0.0ms");
        assert_eq!(ms(1_234), "1.2ms");
        assert_eq!(ms(1_250), "1.3ms");
        assert_eq!(ms(987_654), "987.7ms");
    }

    #[test]
    fn reserved_port_is_free_and_nonzero() {
        let addr = reserve_port("127.0.0.1".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        TcpListener::bind(addr).expect("port can be bound again");
    }
}
