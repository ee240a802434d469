//! Real reverse proxies for the end-to-end tests of the gate: Debian's nginx and Caddy run as
//! child processes on loopback ports, each with its own temporary directory, killed when
//! dropped (nginx without a master process, Caddy without its admin endpoint, so nothing
//! outlives the kill). And the upstream: a small HTTP server standing for the application,
//! which answers every request with the request line and headers it received, as JSON.
//! Never installs anything: `.ci/run` installs nginx and caddy, and these fail loudly when
//! they are missing.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";
pub const CADDY: &str = "/usr/bin/caddy";

/// A free loopback port (bound, then released for the proxy to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "labgate-proxy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until something accepts connections on `port`, or the child exits, or 20 s pass.
fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A directory for `package`'s `tool`, holding its configuration `file` written by `text`
/// from the directory's path; fails at once when the tool is missing.
fn configure(
    tool: &str,
    package: &str,
    file: &str,
    text: impl FnOnce(&str) -> String,
) -> (Scratch, PathBuf) {
    require(tool, package);
    let dir = Scratch::new(package);
    let path = dir.0.join(file);
    let contents = text(&dir.0.display().to_string());
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {file}: {e}"));
    (dir, path)
}

fn require(tool: &str, package: &str) {
    assert!(
        Path::new(tool).exists(),
        "{tool} is missing: install Debian's {package} (`.ci/run` does)"
    );
}

/// A running proxy, nginx or Caddy, killed when dropped.
pub struct Proxy {
    child: Child,
    pub port: u16,
    dir: Scratch,
    /// The file its messages go to, in `dir`.
    log: &'static str,
}

pub type Nginx = Proxy;
pub type Caddy = Proxy;

impl Proxy {
    /// nginx serving `servers` (`server { … }` blocks) inside a minimal `http` block, one
    /// process (no master), waited for on `port`.
    pub fn nginx(servers: &str, port: u16) -> Proxy {
        let (dir, path) = configure(NGINX, "nginx", "nginx.conf", |d| {
            format!(
                "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n{servers}}}\n"
            )
        });
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p").arg(&dir.0).arg("-c").arg(&path);
        cmd.args(["-g", "daemon off; master_process off;"]);
        Proxy::start(cmd, port, dir, "error.log")
    }

    /// Caddy on a Caddyfile of global options (no admin endpoint, no automatic HTTPS, storage
    /// and configuration in its own directory) and `sites`, waited for on `port`.
    pub fn caddy(sites: &str, port: u16) -> Proxy {
        let (dir, path) = configure(CADDY, "caddy", "Caddyfile", |d| {
            format!("{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {d}/storage\n}}\n\n{sites}")
        });
        let mut cmd = Command::new(CADDY);
        cmd.arg("run").arg("--config").arg(&path);
        cmd.args(["--adapter", "caddyfile"]);
        cmd.env("HOME", &dir.0)
            .env("XDG_DATA_HOME", dir.0.join("data"))
            .env("XDG_CONFIG_HOME", dir.0.join("config"));
        Proxy::start(cmd, port, dir, "caddy.log")
    }

    /// Starts `cmd` with its standard error in `dir/log` (where nginx writes its own log too)
    /// and waits until it listens on `port`.
    fn start(mut cmd: Command, port: u16, dir: Scratch, log: &'static str) -> Proxy {
        let path = dir.0.join(log);
        let out = std::fs::File::create(&path).expect("log file");
        let what = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        wait_listening(&mut child, port, &what, &path);
        Proxy {
            child,
            port,
            dir,
            log,
        }
    }

    /// The process id (one process: nginx runs without a master here).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join(self.log)).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The application behind the proxy: answers every request 200 with a JSON object holding
/// the request line (`"request"`) and every header received (`"headers"`: a list of
/// `[name, value]`, names as sent). An HTML page with the same JSON in a `<pre>` when the
/// request accepts HTML, so that a browser shows it.
pub struct Upstream {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("upstream address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || serve(stream));
                }
            }
        });
        Upstream { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers the requests of one connection (keep-alive), each from its head alone: the
/// proxies in front send no body here that matters.
fn serve(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request = line.trim_end().to_string();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push(serde_json::json!([k.trim(), v.trim()]));
            }
        }
        if length > 0 {
            let mut body = vec![0; length];
            if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                return;
            }
        }
        let seen = serde_json::json!({ "request": request, "headers": headers });
        let html = headers.iter().any(|h| {
            h[0].as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("accept"))
                && h[1].as_str().is_some_and(|v| v.contains("text/html"))
        });
        let (body, kind) = if html {
            let text = serde_json::to_string_pretty(&seen).unwrap_or_default();
            let escaped = text.replace('&', "&amp;").replace('<', "&lt;");
            (
                format!("<!DOCTYPE html><title>upstream</title><pre id=\"seen\">{escaped}</pre>"),
                "text/html; charset=utf-8",
            )
        } else {
            (seen.to_string(), "application/json")
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The headers an upstream answer says it received, named `name` (any case).
pub fn received<'a>(seen: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    seen["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str())
                .collect()
        })
        .unwrap_or_default()
}
