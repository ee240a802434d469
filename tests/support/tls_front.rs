//! A GitLab behind TLS for tests: a private certificate authority made with Debian's `openssl`,
//! and Debian's `nginx` started as a child process on a loopback port, terminating TLS with a
//! certificate of that authority and passing requests to a plain-HTTP backend (the fake GitLab).
//!
//! This is how a lab's GitLab usually looks from labgate: behind a TLS proxy, with a certificate
//! from the lab's own CA that no public root vouches for. Both tools must be installed (`.ci/run`
//! installs them); a missing tool fails the test with the package to install, never skips it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate authority and one server certificate it signed, for `127.0.0.1` and
/// `localhost`, in PEM files under `dir`.
pub struct PrivateCa {
    /// The authority's certificate: what `--ca-file` is given.
    pub ca_pem: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install Debian's {program} package (apt-get install {program})")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateCa {
    /// Makes a fresh authority and server certificate in `dir` (EC P-256, valid one day).
    // The openssl command lines stay grouped as one would type them, not one word a line.
    #[rustfmt::skip]
    pub fn create(dir: &Path) -> PrivateCa {
        std::fs::create_dir_all(dir).unwrap();
        run(
            dir,
            "openssl",
            &[
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj",
                "/CN=labgate test lab CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        run(
            dir,
            "openssl",
            &[
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                "server.key", "-out", "server.csr", "-subj", "/CN=gitlab.lab.test",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(
            dir,
            "openssl",
            &[
                "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "server.ext",
            ],
        );
        PrivateCa {
            ca_pem: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A loopback port free right now (the caller binds it soon after; a clash is retried).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx running as one child process (no master and workers: nothing outlives a kill, and as
/// root nothing switches to another user that could not read the test's files), with its files
/// under one directory; stopped on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `server` (the inside of one `server { }` block, where `{port}` is
    /// replaced by the chosen port) and waits until it accepts connections.
    pub fn start(dir: &Path, server: &str) -> Nginx {
        std::fs::create_dir_all(dir).unwrap();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = format!(
                "worker_processes 1;\n\
                 error_log {dir}/error.log warn;\n\
                 pid {dir}/nginx.pid;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 access_log off;\n\
                 client_body_temp_path {dir}/body;\n\
                 proxy_temp_path {dir}/proxy;\n\
                 fastcgi_temp_path {dir}/fastcgi;\n\
                 uwsgi_temp_path {dir}/uwsgi;\n\
                 scgi_temp_path {dir}/scgi;\n\
                 server {{\n{server}\n}}\n\
                 }}\n",
                dir = dir.display(),
                server = server.replace("{port}", &port.to_string()),
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let child = Command::new("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .args(["-g", "daemon off; master_process off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run nginx ({e}): install Debian's nginx package (apt-get install nginx)")
                });
            let mut nginx = Nginx {
                child,
                port,
                dir: dir.to_path_buf(),
            };
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = nginx.child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return nginx;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            let _ = nginx.child.kill();
            let _ = nginx.child.wait();
        }
        panic!("nginx did not start: {last}");
    }

    /// nginx terminating TLS on its port with `ca`'s server certificate and passing every
    /// request to `backend` (`http://127.0.0.1:port`), telling it the original host and scheme.
    pub fn tls_front(dir: &Path, ca: &PrivateCa, backend: &str) -> Nginx {
        Nginx::start(
            dir,
            &format!(
                "listen 127.0.0.1:{{port}} ssl;\n\
                 ssl_certificate {cert};\n\
                 ssl_certificate_key {key};\n\
                 location / {{\n\
                 proxy_pass {backend};\n\
                 proxy_set_header Host $http_host;\n\
                 proxy_set_header X-Forwarded-Proto https;\n\
                 }}",
                cert = ca.server_cert.display(),
                key = ca.server_key.display(),
            ),
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
