//! A small keep-alive HTTP/1.1 client over `std::net::TcpStream`: one connection per client,
//! requests written in one `write_all`, answers read by `Content-Length` or chunked encoding.
//! Only what the benchmark needs; it only ever talks to 127.0.0.1.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (the biggest page in the benchmark is a few hundred KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One answer.
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the cookie `name` set by this answer.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next()?.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }
}

/// `http://IP:PORT/path?query` → (address, `/path?query`).
pub fn split_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // A host name (LABGATE_BENCH_GITLAB_HOST) is resolved; the servers listen on IPv4.
    let addr = authority.parse().ok().or_else(|| {
        use std::net::ToSocketAddrs;
        authority.to_socket_addrs().ok()?.find(|a| a.is_ipv4())
    })?;
    Some((addr, path.to_string()))
}

/// A keep-alive connection to one server, reconnecting when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// Connections opened so far (1 for a connection kept alive throughout).
    pub connects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            connects: 0,
        }
    }

    fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            self.connects += 1;
            self.stream = Some(BufReader::with_capacity(64 * 1024, stream));
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    pub fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        self.request("GET", target, headers, None)
    }

    pub fn post_form(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
        form: &str,
    ) -> io::Result<Response> {
        self.request(
            "POST",
            target,
            headers,
            Some(("application/x-www-form-urlencoded", form.as_bytes())),
        )
    }

    /// Sends one request and reads its answer. A request on a reused connection that fails
    /// before any answer byte is sent again once on a new connection.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> io::Result<Response> {
        let mut raw = Vec::with_capacity(256 + body.map_or(0, |b| b.1.len()));
        write!(raw, "{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.addr)?;
        for (k, v) in headers {
            write!(raw, "{k}: {v}\r\n")?;
        }
        if let Some((content_type, bytes)) = body {
            write!(
                raw,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            )?;
        } else if method == "POST" {
            raw.extend_from_slice(b"Content-Length: 0\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        if let Some((_, bytes)) = body {
            raw.extend_from_slice(bytes);
        }
        let reused = self.stream.is_some();
        match self.exchange(&raw) {
            Ok(r) => Ok(r),
            Err((e, answered)) => {
                self.stream = None;
                if reused && !answered {
                    self.exchange(&raw).map_err(|(e, _)| {
                        self.stream = None;
                        e
                    })
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The error carries whether any answer byte had arrived.
    fn exchange(&mut self, raw: &[u8]) -> Result<Response, (io::Error, bool)> {
        let reader = self.connect().map_err(|e| (e, false))?;
        reader.get_mut().write_all(raw).map_err(|e| (e, false))?;
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| (e, false))?;
        if n == 0 {
            return Err((
                io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
                false,
            ));
        }
        let answered = |e: io::Error| (e, true);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| answered(bad(format!("bad status line {line:?}"))))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(answered)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line).map_err(answered)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| answered(bad(format!("bad chunk size {line:?}"))))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        reader.read_line(&mut line).map_err(answered)?;
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(answered(bad("answer too large".into())));
                }
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..]).map_err(answered)?;
                line.clear();
                reader.read_line(&mut line).map_err(answered)?;
            }
        } else if let Some(len) = length {
            if len > MAX_BODY {
                return Err(answered(bad("answer too large".into())));
            }
            body.resize(len, 0);
            reader.read_exact(&mut body).map_err(answered)?;
        } else if close {
            reader
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .map_err(answered)?;
        }
        if close {
            self.stream = None;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
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

/// `k=v&k=v` with [`form_encode`].
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The decoded value of a query parameter of a URL or path.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}
