//! Test harness: starts the real `labgate` binary on port 0 against a fresh data directory,
//! and talks to it with a tiny HTTP/1.1 client written over `std::net::TcpStream`.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Password of the built-in `admin` on first start (given by `LABGATE_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "admin-Passw0rd-123";
/// Password used for the local users the tests create (≥ 12 characters).
pub const USER_PASSWORD: &str = "user-Passw0rd-456";
/// The labgate binary built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_labgate");
/// How long the server may take to print its "listening" line.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Read/write timeout of one HTTP exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Environment variables of labgate that must not leak from the developer's shell.
const LABGATE_ENV: &[&str] = &[
    "LABGATE_LISTEN",
    "LABGATE_DATA_DIR",
    "LABGATE_BASE_URL",
    "LABGATE_CA_FILE",
    "LABGATE_ADMIN_PASSWORD",
    "LABGATE_ADMIN_PASSWORD_FILE",
    "LABGATE_LOG",
    "HTTPS_PROXY",
    "https_proxy",
];

// ---------------------------------------------------------------------------------------------
// Temporary directories

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "labgate-it-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Captured output of the child process

/// Lines printed by the child, shared with the thread that reads them.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn push(&self, line: String) {
        let (lock, cvar) = &*self.0;
        lock.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        cvar.notify_all();
    }

    pub fn all(&self) -> Vec<String> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until some line satisfies `pred`, at most `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut lines = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = cvar
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn joined(&self) -> String {
        self.all().join("\n")
    }
}

fn spawn_line_reader(stream: impl Read + Send + 'static, lines: Lines) {
    thread::spawn(move || read_all_lines(stream, lines));
}

// ---------------------------------------------------------------------------------------------
// The server under test

/// How to launch labgate: extra arguments and environment on top of the defaults.
#[derive(Clone, Default)]
pub struct Launch {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    removed: Vec<String>,
    seed_db: Option<PathBuf>,
}

impl Launch {
    pub fn new() -> Launch {
        Launch::default()
    }

    pub fn arg(mut self, arg: &str) -> Launch {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts without this variable (e.g. without `LABGATE_ADMIN_PASSWORD`).
    pub fn env_remove(mut self, key: &str) -> Launch {
        self.removed.push(key.to_string());
        self
    }

    /// Starts on a data directory whose `labgate.db` is a copy of `db` (restoring a backup).
    pub fn seed_db(mut self, db: &Path) -> Launch {
        self.seed_db = Some(db.to_path_buf());
        self
    }

    pub fn start(self) -> Labgate {
        Labgate::launch(self)
    }
}

/// A running labgate process on its own data directory.
pub struct Labgate {
    root: TempDir,
    child: Option<Child>,
    pub addr: SocketAddr,
    stderr: Lines,
    stdout: Lines,
    launch: Launch,
    admin: Mutex<Option<Client>>,
}

impl Labgate {
    /// Starts labgate with the default settings on a fresh data directory.
    pub fn start() -> Labgate {
        Launch::new().start()
    }

    /// Starts labgate with extra arguments and environment variables.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Labgate {
        let mut launch = Launch::new();
        for a in args {
            launch = launch.arg(a);
        }
        for (k, v) in envs {
            launch = launch.env(k, v);
        }
        launch.start()
    }

    fn launch(launch: Launch) -> Labgate {
        let root = TempDir::new("srv");
        let mut server = Labgate {
            root,
            child: None,
            addr: "127.0.0.1:9".parse().expect("literal address"),
            stderr: Lines::default(),
            stdout: Lines::default(),
            launch,
            admin: Mutex::new(None),
        };
        if let Some(db) = server.launch.seed_db.clone() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(server.data_dir())
                .expect("create data dir");
            std::fs::copy(&db, server.data_dir().join("labgate.db")).expect("copy seed db");
        }
        server.spawn();
        server
    }

    /// The data directory passed with `--data-dir` (created by labgate itself).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch directory beside the data directory, removed with it.
    pub fn scratch(&self) -> PathBuf {
        self.root.path().to_path_buf()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Everything the server printed on stderr so far (all runs).
    pub fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// Everything the server printed on stdout so far (all runs).
    pub fn stdout(&self) -> &Lines {
        &self.stdout
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.launch.args);
        for k in LABGATE_ENV {
            cmd.env_remove(k);
        }
        cmd.env("LABGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LABGATE_LOG", "warn");
        for (k, v) in &self.launch.envs {
            cmd.env(k, v);
        }
        for k in &self.launch.removed {
            cmd.env_remove(k);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn labgate binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_line_reader(stderr, self.stderr.clone());

        // Stdout: forward lines to us until the listening line, then keep draining.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout_lines = self.stdout.clone();
        thread::spawn(move || {
            let reader = BufReader::new(stdout);
            for line in reader.split(b'\n') {
                let Ok(bytes) = line else { break };
                let text = String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\r')
                    .to_string();
                stdout_lines.push(text.clone());
                let _ = tx.send(text);
            }
        });
        self.child = Some(child);

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("labgate listening on http://") {
                        self.addr = rest.trim().parse().unwrap_or_else(|e| {
                            panic!("listening line {line:?}: bad address: {e}")
                        });
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "labgate did not print its listening line within {START_DEADLINE:?}\n\
                         stderr:\n{}",
                        self.stderr.joined()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    // Give the stderr reader a moment to catch the last lines.
                    let _ = self
                        .stderr
                        .wait_for(Duration::from_millis(500), |l| l.contains("error"));
                    panic!(
                        "labgate exited ({status:?}) before listening\nstderr:\n{}",
                        self.stderr.joined()
                    );
                }
            }
        }
    }

    /// Sends SIGTERM to the server (it keeps running while it drains).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the server to exit, at most `timeout`; panics past it.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("server was started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for labgate") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "labgate did not exit within {timeout:?}\nstderr:\n{}",
                    self.stderr.joined()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait for the exit (which must be status 0), and start again on the same data.
    pub fn restart(&mut self) {
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(15));
        assert_eq!(
            status.code(),
            Some(0),
            "labgate exit status after SIGTERM\nstderr:\n{}",
            self.stderr.joined()
        );
        *self.admin.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.spawn();
    }

    /// SIGKILL (nothing can be finished or recorded), wait for the exit, and start again on the
    /// same data.
    pub fn kill_and_restart(&mut self) {
        let status = Command::new("kill")
            .arg("-KILL")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL failed: {status}");
        self.wait_exit(Duration::from_secs(15));
        *self.admin.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.spawn();
    }

    // ----- clients and helpers

    /// An anonymous client.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// Signs in as `login` with `POST /api/authentication/login`; a cookie client with
    /// the CSRF header on.
    pub fn login(&self, login: &str, password: &str) -> Client {
        let mut c = self.client();
        let r = c.post_form(
            "/api/authentication/login",
            &[("login", login), ("password", password)],
        );
        assert_eq!(r.status, 204, "login of {login}: {}", r.describe());
        assert!(
            c.cookie("labgate_session").is_some(),
            "login of {login} set no labgate_session cookie: {:?}",
            r.headers
        );
        c.with_xsrf(true)
    }

    /// A freshly signed-in admin (cookie session + X-XSRF-TOKEN).
    pub fn admin_client(&self) -> Client {
        self.login("admin", ADMIN_PASSWORD)
    }

    /// A signed-in admin shared by the helpers of this server (one sign-in per run).
    pub fn admin(&self) -> Client {
        let mut cached = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            *cached = Some(self.admin_client());
        }
        cached.clone().expect("admin client just set")
    }

    /// Creates a local user (name = "Name of <login>") as admin; returns the `user` object.
    pub fn create_user(&self, login: &str, password: &str) -> Value {
        let name = format!("Name of {login}");
        let r = self.admin().post_form(
            "/api/users/create",
            &[("login", login), ("name", &name), ("password", password)],
        );
        let body = r.expect_json(200);
        body["user"].clone()
    }

    /// Creates a group as admin; returns the `group` object.
    pub fn create_group(&self, name: &str) -> Value {
        let r = self.admin().post_form(
            "/api/user_groups/create",
            &[("name", name), ("description", "made by a test")],
        );
        r.expect_json(200)["group"].clone()
    }

    /// Grants a global permission to a user, as admin.
    pub fn grant_user(&self, login: &str, permission: &str) {
        self.admin()
            .post_form(
                "/api/permissions/add_user",
                &[("login", login), ("permission", permission)],
            )
            .expect(204);
    }

    /// Generates an API token for `login` as admin and returns its value.
    pub fn token_for(&self, login: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("test-token-{}", N.fetch_add(1, Ordering::SeqCst));
        let r = self.admin().post_form(
            "/api/user_tokens/generate",
            &[("login", login), ("name", &name)],
        );
        let body = r.expect_json(200);
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_string()
    }

    /// A client authenticated with a fresh token of `login` (Bearer).
    pub fn token_client(&self, login: &str) -> Client {
        self.client().bearer(&self.token_for(login))
    }

    /// Creates a local user and returns a Bearer client for it.
    pub fn user_with_token(&self, login: &str) -> Client {
        self.create_user(login, USER_PASSWORD);
        self.token_client(login)
    }

    /// Writes settings straight into the `settings` table of the running server, past every
    /// check: for states no door accepts any more, such as a configuration stored by an older
    /// labgate. Settings are read from the database at each request, so the next one sees them.
    pub fn store_settings(&self, rows: &[(&str, &str)]) {
        let conn = rusqlite::Connection::open(self.data_dir().join("labgate.db"))
            .expect("open the database");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("set a busy timeout");
        for (key, value) in rows {
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .unwrap_or_else(|e| panic!("store setting {key}: {e}"));
        }
    }
}

impl Drop for Labgate {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished CLI run printed.
#[derive(Debug)]
pub struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the labgate binary to completion (for CLI subcommands and failing starts), at most
/// `timeout`; `None` when it was still running then (it is killed).
pub fn run_cli_within(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Option<CliRun> {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for k in LABGATE_ENV {
        cmd.env_remove(k);
    }
    cmd.env("LABGATE_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn labgate binary");
    let out = Lines::default();
    let err = Lines::default();
    let out_reader = {
        let stream = child.stdout.take().expect("piped stdout");
        let lines = out.clone();
        thread::spawn(move || read_all_lines(stream, lines))
    };
    let err_reader = {
        let stream = child.stderr.take().expect("piped stderr");
        let lines = err.clone();
        thread::spawn(move || read_all_lines(stream, lines))
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for labgate") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = out_reader.join();
    let _ = err_reader.join();
    status.map(|status| CliRun {
        status,
        stdout: out.joined(),
        stderr: err.joined(),
    })
}

/// Runs a CLI command that must finish within 30 s.
pub fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> CliRun {
    run_cli_within(args, envs, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("labgate {args:?} did not finish within 30 s"))
}

fn read_all_lines(stream: impl Read, lines: Lines) {
    let reader = BufReader::new(stream);
    for line in reader.split(b'\n') {
        match line {
            Ok(bytes) => lines.push(
                String::from_utf8_lossy(&bytes)
                    .trim_end_matches('\r')
                    .to_string(),
            ),
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// A response, fully read.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The raw `Set-Cookie` header that sets `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers_named("set-cookie").into_iter().find(|v| {
            v.split(';')
                .next()
                .and_then(|nv| nv.split_once('='))
                .is_some_and(|(n, _)| n.trim() == name)
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.describe()))
    }

    /// The `Location` header with the scheme and authority removed, if it had them.
    pub fn location(&self) -> Option<String> {
        let loc = self.header("location")?;
        if let Some(rest) = loc
            .strip_prefix("http://")
            .or_else(|| loc.strip_prefix("https://"))
        {
            let path_start = rest.find('/').unwrap_or(rest.len());
            Some(rest[path_start..].to_string())
        } else {
            Some(loc.to_string())
        }
    }

    /// Status, headers and the start of the body, for assertion messages.
    pub fn describe(&self) -> String {
        let body = self.text();
        let body: String = body.chars().take(1500).collect();
        format!(
            "status {} headers {:?} body {body}",
            self.status, self.headers
        )
    }

    /// Asserts the status; returns the response for chaining.
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.describe()
        );
        self
    }

    /// Asserts the status and `Content-Type: application/json` exactly; returns the JSON.
    #[track_caller]
    pub fn expect_json(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.describe()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "Content-Type of a JSON answer: {}",
            self.describe()
        );
        self.json()
    }

    /// Asserts an error answer `{"errors":[{"msg":"..."}]}` with that status; returns the
    /// first message.
    #[track_caller]
    pub fn expect_error(&self, status: u16) -> String {
        let v = self.expect_json(status);
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {}", self.describe()));
        assert!(
            !errors.is_empty(),
            "empty errors array: {}",
            self.describe()
        );
        for e in errors {
            let msg = e["msg"].as_str().unwrap_or("");
            assert!(!msg.is_empty(), "error without msg: {}", self.describe());
        }
        errors[0]["msg"].as_str().unwrap_or("").to_string()
    }

    /// Asserts an HTML answer with that status; returns the page.
    #[track_caller]
    pub fn expect_html(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.describe()
        );
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("text/html"),
            "Content-Type of a page: {}",
            self.describe()
        );
        self.text()
    }

    /// Asserts a redirect (302 or 303) and returns its target path.
    #[track_caller]
    pub fn expect_redirect(&self) -> String {
        assert!(
            self.status == 302 || self.status == 303,
            "expected a redirect: {}",
            self.describe()
        );
        self.location()
            .unwrap_or_else(|| panic!("redirect without Location: {}", self.describe()))
    }
}

/// A tiny HTTP/1.1 client: one connection per request, `Connection: close`, a cookie jar.
#[derive(Clone, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub cookies: BTreeMap<String, String>,
    auth: Option<String>,
    xsrf: bool,
    /// The `Host` header sent, when not the address connected to (a name that resolves
    /// nowhere, such as `app.lab.test:8080`, reached through a proxy on loopback).
    host: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            cookies: BTreeMap::new(),
            auth: None,
            xsrf: false,
            host: None,
        }
    }

    /// The same client connecting to `addr` and naming `host` in the `Host` header.
    pub fn via(mut self, addr: SocketAddr, host: &str) -> Client {
        self.addr = addr;
        self.host = Some(host.to_string());
        self
    }

    /// Sends no `Authorization` header.
    pub fn without_auth(mut self) -> Client {
        self.auth = None;
        self
    }

    /// The same client (cookies, credentials) pointed at another address (after a restart).
    pub fn at(mut self, addr: SocketAddr) -> Client {
        self.addr = addr;
        self
    }

    /// Authenticates every request with `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: &str) -> Client {
        self.auth = Some(format!("Bearer {token}"));
        self
    }

    /// Authenticates every request with HTTP Basic `user:password`.
    pub fn basic(mut self, user: &str, password: &str) -> Client {
        self.auth = Some(format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes())
        ));
        self
    }

    /// Sends this exact `Authorization` header value.
    pub fn authorization(mut self, value: &str) -> Client {
        self.auth = Some(value.to_string());
        self
    }

    /// When on, POST/PUT/PATCH/DELETE carry `X-XSRF-TOKEN` copied from the `XSRF-TOKEN` cookie.
    pub fn with_xsrf(mut self, on: bool) -> Client {
        self.xsrf = on;
        self
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// GET with a percent-encoded query string.
    pub fn get_query(&mut self, path: &str, params: &[(&str, &str)]) -> Resp {
        let q = form_encode(params);
        self.get(&format!("{path}?{q}"))
    }

    pub fn post_form(&mut self, path: &str, params: &[(&str, &str)]) -> Resp {
        let body = form_encode(params);
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    pub fn post_json(&mut self, path: &str, json: &Value) -> Resp {
        let body = json.to_string();
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// The request head this client would send (without the blank line).
    pub fn head(&self, method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> String {
        let host = self.host.clone().unwrap_or_else(|| self.addr.to_string());
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: labgate-it\r\n"
        );
        if let Some(auth) = &self.auth {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            head.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        if self.xsrf && method != "GET" && method != "HEAD" {
            if let Some(token) = self.cookies.get("XSRF-TOKEN") {
                head.push_str(&format!("X-XSRF-TOKEN: {token}\r\n"));
            }
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if len > 0 || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        head
    }

    /// Sends one request and reads the whole answer; keeps the cookies it sets.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut bytes = self.head(method, path, headers, body.len()).into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        let mut stream = self.connect();
        // A server may answer and close before reading everything (413): ignore write errors
        // and read what it said.
        let _ = stream.write_all(&bytes);
        let resp = read_response(&mut stream)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
        self.store_cookies(&resp);
        resp
    }

    /// Sends the head at once and the body from another thread while reading the answer, so
    /// a server that answers before reading the body does not make us lose its answer.
    pub fn request_streaming(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut head = self.head(method, path, headers, body.len()).into_bytes();
        head.extend_from_slice(b"\r\n");
        let mut stream = self.connect();
        stream.write_all(&head).expect("write request head");
        let mut writer = stream.try_clone().expect("clone stream");
        let sender = thread::spawn(move || {
            for chunk in body.chunks(4096) {
                if writer.write_all(chunk).is_err() {
                    break;
                }
            }
        });
        let resp = read_response(&mut stream)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
        let _ = stream.shutdown(Shutdown::Both);
        let _ = sender.join();
        self.store_cookies(&resp);
        resp
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to labgate at {}: {e}", self.addr));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream
    }

    /// Writes arbitrary bytes and reads until the server closes (or 5 s of silence).
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        raw_exchange(self.addr, bytes, Duration::from_secs(5))
    }

    fn store_cookies(&mut self, resp: &Resp) {
        for value in resp.headers_named("set-cookie") {
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let name = name.trim().to_string();
            let val = val.trim().trim_matches('"').to_string();
            let expired = parts.any(|attr| {
                let attr = attr.trim().to_ascii_lowercase();
                attr == "max-age=0"
                    || attr.starts_with("max-age=-")
                    || (attr.starts_with("expires=") && attr.contains("1970"))
            });
            if expired || val.is_empty() {
                self.cookies.remove(&name);
            } else {
                self.cookies.insert(name, val);
            }
        }
    }
}

/// Writes `bytes` and reads until EOF or `silence` without data; returns what was read.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], silence: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to labgate at {addr}: {e}"));
    stream.set_read_timeout(Some(silence)).expect("timeout");
    stream.set_write_timeout(Some(silence)).expect("timeout");
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// The status code of a raw HTTP answer, if it starts with a status line.
pub fn raw_status(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Reads one HTTP/1.1 response (skipping 1xx answers).
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Resp> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut status_line = String::new();
        if reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a status line",
            ));
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside the headers",
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        let chunked =
            find("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if status == 204 || status == 304 {
            // no body
        } else if chunked {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line)?;
                let size_hex = size_line.trim().split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {size_line:?}"),
                    )
                })?;
                if size == 0 {
                    // trailers until the blank line
                    loop {
                        let mut t = String::new();
                        if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0u8; size];
                reader.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                let mut crlf = String::new();
                reader.read_line(&mut crlf)?;
            }
        } else if let Some(len) = find("content-length") {
            let len: usize = len.trim().parse().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad Content-Length")
            })?;
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        } else {
            reader.read_to_end(&mut body)?;
        }
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers

/// Percent-encodes everything but the RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `k=v&k=v`, percent-encoded (repeated keys stay repeated).
pub fn form_encode(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes `%XX` escapes and `+` (for checking `return_to` in redirects).
pub fn urldecode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding.
pub fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes the HTML character references a template engine may use, for checking escaping.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of the hidden `csrf_token` field of the first form of a page.
pub fn csrf_field(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf_token\"")?;
    let tag_start = page[..at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let v = tag.find("value=\"")? + "value=\"".len();
    let len = tag[v..].find('"')?;
    Some(html_unescape(&tag[v..v + len]))
}

/// Polls `f` until it returns `Some`, at most `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The UTC date `days` days from today, `YYYY-MM-DD`, as token expiry dates are written.
pub fn date_in_days(days: u64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(days)).to_string()
}

/// Asserts that `got` is the date `expected` computes, read just before or just after the
/// request that produced it (a run may cross midnight UTC).
#[track_caller]
pub fn assert_date(got: &Value, before: &str, expected: impl Fn() -> String) {
    let after = expected();
    assert!(
        got.as_str().is_some_and(|d| d == before || d == after),
        "expected {before} (or {after}), got {got}"
    );
}

/// The `logins` of a `users` array.
pub fn logins(users: &Value) -> Vec<String> {
    users
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["login"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `name`s of a `groups` array (objects or plain strings).
pub fn names(groups: &Value) -> Vec<String> {
    groups
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| {
                    g.as_str()
                        .or_else(|| g["name"].as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn base64_matches_rfc4648_vectors() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (input, expected) in cases {
        assert_eq!(base64(input.as_bytes()), expected);
    }
}

#[test]
fn urlencode_escapes_reserved_and_utf8() {
    assert_eq!(urlencode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    assert_eq!(urldecode("a%20b+c%2F%C3%A9"), "a b c/é");
}

#[test]
fn html_unescape_decodes_named_and_numeric_references() {
    assert_eq!(html_unescape("&lt;a&#62;&#x22;&amp;&quot;"), "<a>\"&\"");
}
