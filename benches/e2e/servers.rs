//! The processes under measurement: the release `labgate` binary, and this benchmark binary
//! started again as a bare oxhttp "hello" server or as the fake GitLab (so that each one's CPU
//! time and memory can be read from its own `/proc/<pid>`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary cargo built for this benchmark (release settings: the bench profile inherits them).
pub const LABGATE_BIN: &str = env!("CARGO_BIN_EXE_labgate");
/// Password of `admin` on the first start.
pub const ADMIN_PASSWORD: &str = "bench-Admin-Passw0rd";
/// The longest a server may take to print its listening line.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// labgate's variables that must not leak from the caller's shell.
const LABGATE_ENV: &[&str] = &[
    "LABGATE_LISTEN",
    "LABGATE_DATA_DIR",
    "LABGATE_BASE_URL",
    "LABGATE_CA_FILE",
    "LABGATE_ADMIN_PASSWORD",
    "LABGATE_ADMIN_PASSWORD_FILE",
    "LABGATE_LOG",
    "LABGATE_TRUSTED_PROXIES",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A server process started by the benchmark: its address, pid, and the time from exec to
/// its listening line.
pub struct Server {
    child: Option<Child>,
    /// Kept open: a child of this binary exits when it reaches end of input.
    _stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
    pub pid: u32,
    pub start_time: Duration,
}

impl Server {
    /// Starts `cmd` and waits for a stdout line `<prefix>http://IP:PORT`.
    fn spawn(mut cmd: Command, prefix: &'static str, what: &str) -> Result<Server, String> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{what}: cannot start: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel::<(Instant, String)>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut found = false;
            while !found {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let at = Instant::now();
                found = line.starts_with(prefix);
                let _ = tx.send((at, line.trim_end().to_string()));
            }
            // Keep draining so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let deadline = started + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((at, line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        let addr = rest
                            .strip_prefix("http://")
                            .and_then(|a| a.parse().ok())
                            .ok_or_else(|| format!("{what}: bad listening line {line:?}"))?;
                        return Ok(Server {
                            pid: child.id(),
                            child: Some(child),
                            _stdin: stdin,
                            addr,
                            start_time: at - started,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(format!(
                        "{what}: no listening line within {START_DEADLINE:?} (exit: {status:?})"
                    ));
                }
            }
        }
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL past the bound.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("process {} exited with {status}", self.pid))
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("process {} did not stop after SIGTERM", self.pid));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// labgate on its own data directory (kept across restarts), logging to a file.
pub struct Labgate {
    pub data_dir: PathBuf,
    log: PathBuf,
    /// Variables set for this labgate only (`LABGATE_BENCH_AUDIT=off`).
    env: Vec<(&'static str, &'static str)>,
}

impl Labgate {
    pub fn new(root: &Path) -> Labgate {
        Labgate {
            data_dir: root.join("data"),
            log: root.join("labgate.log"),
            env: Vec::new(),
        }
    }

    /// The same, started with `key=value` in its environment.
    pub fn with_env(mut self, key: &'static str, value: &'static str) -> Labgate {
        self.env.push((key, value));
        self
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("labgate.db")
    }

    /// Starts the release binary on `127.0.0.1:0` with the default log level (`info`: one line
    /// per request, as in production), stderr appended to a file.
    pub fn start(&self) -> Result<Server, String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        // For profiling: `LABGATE_BENCH_WRAP="valgrind --tool=callgrind"` runs labgate under it.
        let wrap = std::env::var("LABGATE_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(LABGATE_BIN);
                c
            }
            None => Command::new(LABGATE_BIN),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir);
        for k in LABGATE_ENV {
            cmd.env_remove(k);
        }
        cmd.env("LABGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LABGATE_LOG", "info")
            .env_remove("LABGATE_BENCH_AUDIT")
            .envs(self.env.iter().copied())
            .stderr(Stdio::from(log));
        Server::spawn(cmd, "labgate listening on ", "labgate")
    }
}

/// This benchmark binary in one of its server roles (`--serve-hello`, `--serve-fake ...`).
pub fn start_self(args: &[&str], prefix: &'static str, what: &str) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stderr(Stdio::inherit());
    Server::spawn(cmd, prefix, what)
}

/// Blocks until standard input reaches its end (the benchmark dropped it or died).
pub fn wait_for_end_of_input() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "labgate-bench-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
