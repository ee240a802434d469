//! A fake GitLab on 127.0.0.1:0 for the sign-in tests: `/oauth/token`, `/api/v4/user` and a
//! paginated `/api/v4/groups`, with knobs for failures, and a record of what labgate sent.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The access token the fake hands out.
pub const ACCESS_TOKEN: &str = "gl-access-token-0123456789";

/// What the fake answers; tests change it between sign-ins.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// `GET /api/v4/user`.
    pub user: Value,
    /// The user's groups (`full_path`), served `page_size` per page.
    pub groups: Vec<String>,
    pub page_size: usize,
    /// Status of `POST /oauth/token` (200 answers a token).
    pub token_status: u16,
    /// Status of `GET /api/v4/user` (200 answers `user`).
    pub user_status: u16,
    /// Body of `GET /api/v4/user` instead of `user` (malformed JSON tests).
    pub user_body: Option<String>,
    /// Never answer `POST /oauth/token` (the connection stays open).
    pub hang_token: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            user: gitlab_user(1001, "jdoe", "Jane Doe", "jane@example.com"),
            groups: Vec::new(),
            page_size: 100,
            token_status: 200,
            user_status: 200,
            user_body: None,
            hang_token: false,
        }
    }
}

/// A GitLab `/api/v4/user` answer.
pub fn gitlab_user(id: u64, username: &str, name: &str, email: &str) -> Value {
    json!({
        "id": id,
        "username": username,
        "name": name,
        "email": email,
        "state": "active",
        "web_url": format!("https://gitlab.example.com/{username}"),
    })
}

/// One request received by the fake.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Form parameters of the body.
    pub fn form(&self) -> Vec<(String, String)> {
        self.body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (crate::harness::urldecode(k), crate::harness::urldecode(v)))
            .collect()
    }

    pub fn form_value(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

pub struct FakeGitlab {
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FakeGitlab {
    pub fn start() -> FakeGitlab {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake GitLab");
        let addr = listener.local_addr().expect("fake GitLab address");
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let behaviour = Arc::clone(&behaviour);
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let behaviour = Arc::clone(&behaviour);
                    let seen = Arc::clone(&seen);
                    thread::spawn(move || serve(stream, &behaviour, &seen));
                }
            });
        }
        FakeGitlab {
            addr,
            behaviour,
            seen,
            stop,
        }
    }

    /// The base URL to configure in labgate.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests whose target starts with `prefix`.
    pub fn seen_at(&self, prefix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.target.starts_with(prefix))
            .collect()
    }
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(stream: TcpStream, behaviour: &Mutex<Behaviour>, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
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
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Seen {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request.clone());
    let b = behaviour.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let bearer_ok = request.header("authorization") == Some(&format!("Bearer {ACCESS_TOKEN}"));
    let (status, extra, body): (u16, Vec<(String, String)>, String) =
        match (request.method.as_str(), path) {
            ("POST", "/oauth/token") => {
                if b.hang_token {
                    thread::sleep(Duration::from_secs(60));
                    return;
                }
                if b.token_status == 200 {
                    (
                        200,
                        vec![],
                        json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                           "expires_in": 7200, "refresh_token": "gl-refresh", "scope": "read_user",
                           "created_at": 1_700_000_000})
                        .to_string(),
                    )
                } else {
                    (
                        b.token_status,
                        vec![],
                        json!({"error": "invalid_grant"}).to_string(),
                    )
                }
            }
            ("GET", "/api/v4/user") if !bearer_ok => {
                (401, vec![], r#"{"message":"401 Unauthorized"}"#.into())
            }
            ("GET", "/api/v4/user") => match (&b.user_body, b.user_status) {
                (Some(raw), status) => (status, vec![], raw.clone()),
                (None, 200) => (200, vec![], b.user.to_string()),
                (None, status) => (status, vec![], r#"{"message":"error"}"#.into()),
            },
            ("GET", "/api/v4/groups") if !bearer_ok => {
                (401, vec![], r#"{"message":"401 Unauthorized"}"#.into())
            }
            ("GET", "/api/v4/groups") => {
                let page: usize = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == "page")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(1)
                    .max(1);
                let size = b.page_size.max(1);
                let start = (page - 1) * size;
                let items: Vec<Value> = b
                    .groups
                    .iter()
                    .enumerate()
                    .skip(start)
                    .take(size)
                    .map(|(i, p)| {
                        let last = p.rsplit('/').next().unwrap_or(p);
                        json!({"id": 100 + i, "name": last, "path": last, "full_path": p,
                           "full_name": p.replace('/', " / ")})
                    })
                    .collect();
                let next = if start + size < b.groups.len() {
                    (page + 1).to_string()
                } else {
                    String::new()
                };
                let total_pages = b.groups.len().div_ceil(size).max(1);
                (
                    200,
                    vec![
                        ("x-next-page".into(), next),
                        ("x-page".into(), page.to_string()),
                        ("x-per-page".into(), size.to_string()),
                        ("x-total".into(), b.groups.len().to_string()),
                        ("x-total-pages".into(), total_pages.to_string()),
                    ],
                    Value::Array(items).to_string(),
                )
            }
            _ => (404, vec![], r#"{"message":"404 Not Found"}"#.into()),
        };
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

// ---------------------------------------------------------------------------------------------
// PKCE check: SHA-256 and base64url, small and self-contained.

/// SHA-256 of `data` (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// base64url without padding (RFC 7636's `BASE64URL-ENCODE`).
pub fn base64url(data: &[u8]) -> String {
    crate::harness::base64(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// The S256 code challenge of a PKCE verifier.
pub fn s256_challenge(verifier: &str) -> String {
    base64url(&sha256(verifier.as_bytes()))
}

#[test]
fn sha256_matches_known_vectors() {
    let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        hex(sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(
        hex(sha256(&long)),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

#[test]
fn s256_challenge_is_base64url_of_sha256() {
    // Computed independently (Python hashlib + urlsafe_b64encode, padding stripped).
    assert_eq!(
        s256_challenge("dBjftJeZ4CI5ltkKX2AMX4qA5GsLl9Pn4xT2nqu9B5E"),
        "-6bOhJpnUpF83_JzJXncSy_v7Te7xbItYq-s22pfYDc"
    );
}

#[test]
fn fake_gitlab_answers_like_gitlab() {
    use crate::harness::Client;
    let gl = FakeGitlab::start();
    let mut c = Client::new(gl.addr);
    let t = c
        .post_form(
            "/oauth/token",
            &[("code", "c"), ("grant_type", "authorization_code")],
        )
        .expect_json(200);
    assert_eq!(t["access_token"], ACCESS_TOKEN);
    c.get("/api/v4/user").expect(401);
    let mut authed = Client::new(gl.addr).bearer(ACCESS_TOKEN);
    assert_eq!(
        authed.get("/api/v4/user").expect_json(200)["username"],
        "jdoe"
    );
    gl.set(|b| {
        b.groups = vec!["a".into(), "b/c".into(), "d".into()];
        b.page_size = 2;
    });
    let p1 = authed.get("/api/v4/groups?min_access_level=10&per_page=100");
    assert_eq!(p1.header("x-next-page"), Some("2"));
    assert_eq!(p1.json()[1]["full_path"], "b/c");
    let p2 = authed.get("/api/v4/groups?min_access_level=10&per_page=100&page=2");
    assert_eq!(p2.header("x-next-page"), Some(""));
    assert_eq!(p2.json()[0]["full_path"], "d");
    assert_eq!(
        gl.seen_at("/oauth/token")[0].form_value("code").as_deref(),
        Some("c")
    );
}
