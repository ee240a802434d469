//! The rules of the gate as pure functions: what an application's URL (an origin) may be, the
//! original request a proxy describes, who is admitted, the values of the identity headers,
//! where the sign-in sends a person back, and what cookie domain fits the base URL.

use std::borrow::Cow;

/// An origin as labgate stores and compares it: `scheme://host[:port]`, lower-case, the
/// default port of the scheme left out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: &'static str,
    pub host: String,
    /// `None`: the default port of the scheme.
    pub port: Option<u16>,
}

impl Origin {
    /// `scheme://host[:port]` of a URL's first part: the scheme `http` or `https` (any case),
    /// then an authority that is a DNS name, an IPv4 address or a bracketed IPv6 address, with
    /// an optional port. Returns the origin and the rest of the text (after the authority).
    /// No user information, no percent-encoding, no backslash: whatever a browser could read
    /// as another host is refused rather than guessed at.
    pub fn split(url: &str) -> Result<(Origin, &str), &'static str> {
        let (scheme, rest) = match url.find("://") {
            Some(i) if url[..i].eq_ignore_ascii_case("https") => ("https", &url[i + 3..]),
            Some(i) if url[..i].eq_ignore_ascii_case("http") => ("http", &url[i + 3..]),
            _ => return Err("must start with http:// or https://"),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        Ok((Origin::of_authority(scheme, authority)?, tail))
    }

    /// The origin of `scheme` (`http` or `https`) and `authority` (`host[:port]`, as in
    /// [`Origin::split`]).
    fn of_authority(scheme: &'static str, authority: &str) -> Result<Origin, &'static str> {
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], Some(&authority[i + 1..]))
            }
            _ => (authority, None),
        };
        if !valid_host(host) {
            return Err("must name a host: letters, digits, '-' and '.', or an IP address");
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err("has a port that is not a number from 1 to 65535"),
            },
        };
        let default = if scheme == "https" { 443 } else { 80 };
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.filter(|p| *p != default),
        })
    }

    /// An application's URL: an origin alone (one trailing `/` allowed), no path, query or
    /// fragment.
    pub fn parse(url: &str) -> Result<Origin, &'static str> {
        let (origin, tail) = Origin::split(url.trim())?;
        if !tail.is_empty() && tail != "/" {
            return Err("must be an origin only (scheme, host, optional port), without a path");
        }
        Ok(origin)
    }

    /// The port browsers connect to.
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme == "https" { 443 } else { 80 })
    }

    /// `host[:port]`, as a `Host` header names it.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host_port())
    }
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether the rest of an absolute URL after its origin can be followed as is: empty, or a
/// path or query of printable ASCII without spaces or backslashes.
fn clean_tail(tail: &str) -> bool {
    (tail.is_empty() || tail.starts_with('/') || tail.starts_with('?'))
        && tail.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// Longest URL labgate follows or passes on.
pub const MAX_URL: usize = 2048;

/// The request a proxy asks about, borrowed from the proxy's headers: the origin of its URL,
/// the URL itself (built only when needed: to send the person to the sign-in page), and its
/// method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original<'a> {
    pub origin: Origin,
    url: Url<'a>,
    /// As the proxy sent it; `GET` when it sent none.
    pub method: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Url<'a> {
    /// nginx: the whole URL.
    Whole(&'a str),
    /// Caddy, Traefik: the scheme, the host (with its port) and the path with the query.
    Parts {
        scheme: &'static str,
        host: &'a str,
        uri: &'a str,
    },
}

impl Original<'_> {
    /// The whole URL the person asked for.
    pub fn url(&self) -> String {
        match self.url {
            Url::Whole(url) => url.to_string(),
            Url::Parts { scheme, host, uri } => format!("{scheme}://{host}{uri}"),
        }
    }
}

fn method_or_get(method: Option<&str>) -> &str {
    method
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or("GET")
}

/// The original request as nginx's configuration describes it: `X-Original-URL` and
/// `X-Original-Method`. `None` when the URL is missing or not one labgate can follow.
pub fn from_nginx<'a>(url: Option<&'a str>, method: Option<&'a str>) -> Option<Original<'a>> {
    let url = url?.trim();
    if url.len() > MAX_URL {
        return None;
    }
    let (origin, tail) = Origin::split(url).ok()?;
    clean_tail(tail).then(|| Original {
        origin,
        url: Url::Whole(url),
        method: method_or_get(method),
    })
}

/// The original request as Caddy and Traefik describe it: `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Forwarded-Uri` and `X-Forwarded-Method`. `None` when a part is
/// missing or malformed (a host holding a path or user information, a URI not starting with
/// `/`).
pub fn from_forward<'a>(
    proto: Option<&'a str>,
    host: Option<&'a str>,
    uri: Option<&'a str>,
    method: Option<&'a str>,
) -> Option<Original<'a>> {
    let scheme = match proto?.trim() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let host = host?.trim();
    let uri = uri.map(str::trim).filter(|u| !u.is_empty()).unwrap_or("/");
    if host.len() + uri.len() > MAX_URL || !uri.starts_with('/') || !clean_tail(uri) {
        return None;
    }
    let origin = Origin::of_authority(scheme, host).ok()?;
    Some(Original {
        origin,
        url: Url::Parts { scheme, host, uri },
        method: method_or_get(method),
    })
}

/// Whether a person in `groups` (sorted) may enter an application allowing `allowed`: any
/// active user when it lists none, else a member of one of them.
pub fn admits(allowed: &[String], groups: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|g| groups.binary_search(g).is_ok())
}

/// Whether a request that is not signed in is a browser navigating to a page, which is sent
/// to the sign-in page; anything else (a script, an image, a form post) is answered 401.
pub fn browser_navigation(method: &str, accept: Option<&str>) -> bool {
    (method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"))
        && accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// The sign-in page that brings the person back to `url` afterwards.
pub fn sign_in_url(base_url: &str, url: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC);
    format!("{base_url}/sessions/new?return_to={encoded}")
}

/// Bytes of an identity header value sent as `%XX`: anything but printable ASCII, and `%`
/// itself, so that an application that decodes always gets the exact text back.
const HEADER_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
/// The same, with `,` too: the separator of `Remote-Groups`.
const LIST_ITEM_ESCAPED: &percent_encoding::AsciiSet = &HEADER_ESCAPED.add(b',');

/// An identity header value: the text as is when it is printable ASCII without `%`; otherwise
/// its UTF-8 bytes outside printable ASCII (controls included) and `%` as `%XX`. A header
/// value can carry neither a control character nor reliably anything but ASCII.
pub fn header_value(text: &str) -> Cow<'_, str> {
    percent_encoding::utf8_percent_encode(text, HEADER_ESCAPED).into()
}

/// The `Remote-Groups` value: each name as in [`header_value`], `,` escaped too, joined by `,`.
pub fn groups_header(groups: &[String]) -> String {
    let mut out = String::new();
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.extend(percent_encoding::utf8_percent_encode(
            group,
            LIST_ITEM_ESCAPED,
        ));
    }
    out
}

/// A `return_to` that is an absolute URL: `Some(origin)` when it is a URL labgate can follow
/// as is (see [`Origin::split`]), whose origin the caller then checks against the
/// applications.
pub fn absolute_return_to(raw: &str) -> Option<Origin> {
    if raw.len() > MAX_URL {
        return None;
    }
    let (origin, tail) = Origin::split(raw).ok()?;
    clean_tail(tail).then_some(origin)
}

/// Validates the cookie domain against the host of the base URL: lower-case, no leading dot,
/// at least two labels, not an IP address, and the host itself or a parent domain of it (a
/// browser ignores a cookie whose domain does not cover the host that sets it).
pub fn cookie_domain(raw: &str, base_url: &str) -> Result<String, String> {
    let domain = cookie_domain_syntax(raw)?;
    let host = Origin::split(base_url)
        .map(|(o, _)| o.host)
        .map_err(|_| format!("the base URL {base_url} has no host to compare '{domain}' with"))?;
    if host != domain && !host.ends_with(&format!(".{domain}")) {
        return Err(format!(
            "'{domain}' does not cover labgate's own host {host} (base URL {base_url}): it must be that host or a parent domain of it"
        ));
    }
    Ok(domain)
}

/// The part of [`cookie_domain`] that needs no base URL: a DNS name of at least two labels,
/// not an IP address; returned lower-case without a leading dot.
pub fn cookie_domain_syntax(raw: &str) -> Result<String, String> {
    let domain = raw.trim().trim_start_matches('.').to_ascii_lowercase();
    if domain.parse::<std::net::IpAddr>().is_ok()
        || domain.starts_with('[')
        || domain
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "'{domain}' is an IP address: a cookie domain must be a DNS name"
        ));
    }
    if !valid_host(&domain) {
        return Err(format!("'{domain}' is not a domain name"));
    }
    if domain.split('.').count() < 2 {
        return Err(format!(
            "'{domain}' has a single label: a cookie domain needs at least two (lab.example)"
        ));
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_urls_are_origins_stored_lower_case_without_default_port() {
        let ok = |raw: &str| Origin::parse(raw).map(|o| o.to_string());
        assert_eq!(
            ok("HTTPS://Jupyter.Lab.Example/").unwrap(),
            "https://jupyter.lab.example"
        );
        assert_eq!(ok("https://x.example:443").unwrap(), "https://x.example");
        assert_eq!(ok("http://x.example:80").unwrap(), "http://x.example");
        assert_eq!(ok("http://10.0.0.5:8080").unwrap(), "http://10.0.0.5:8080");
        assert_eq!(ok("http://[::1]:3000").unwrap(), "http://[::1]:3000");
        for bad in [
            "jupyter.lab.example",
            "ftp://x.example",
            "https://x.example/hub",
            "https://x.example?x",
            "https://user@x.example",
            "https://x.example:0",
            "https://x.example:99999",
            "https://x.example:8a",
            "https://-x.example",
            "https://x..example",
            "https://x_y.example",
            "https://x.example%2F",
            "https://",
            "https://[::1",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_family_reads_only_its_own_headers_into_the_original_request() {
        let n = from_nginx(Some("https://app.lab.test/notebook?x=1"), Some("post")).unwrap();
        assert_eq!(n.origin.to_string(), "https://app.lab.test");
        assert_eq!(
            (n.url().as_str(), n.method),
            ("https://app.lab.test/notebook?x=1", "post")
        );
        let f = from_forward(Some("http"), Some("App.lab.test:8080"), Some("/a?b"), None).unwrap();
        assert_eq!(f.url(), "http://App.lab.test:8080/a?b");
        assert_eq!(f.origin.to_string(), "http://app.lab.test:8080");
        assert_eq!(f.method, "GET");
        assert!(from_nginx(None, Some("GET")).is_none());
        assert!(from_forward(Some("http"), None, Some("/"), None).is_none());
        assert!(from_forward(Some("gopher"), Some("a.test"), Some("/"), None).is_none());
        assert!(from_forward(Some("http"), Some("evil.test/x"), Some("/"), None).is_none());
        assert!(from_forward(Some("http"), Some("a.test@evil.test"), Some("/"), None).is_none());
        assert!(from_forward(Some("http"), Some("a.test"), Some("x"), None).is_none());
        assert!(from_nginx(Some("https://a.test/\u{7f}"), None).is_none());
    }

    #[test]
    fn an_empty_list_admits_every_user_and_a_list_its_members() {
        let groups = vec!["acme/ml".to_string(), "users".to_string()];
        assert!(admits(&[], &groups));
        assert!(admits(&["acme/ml".into()], &groups));
        assert!(!admits(&["acme".into(), "admins".into()], &groups));
        assert!(
            !admits(&["Acme/ML".into()], &groups),
            "group names are case-sensitive"
        );
    }

    #[test]
    fn only_a_browser_navigation_is_sent_to_the_sign_in_page() {
        let html = Some("text/html,application/xhtml+xml;q=0.9");
        assert!(browser_navigation("GET", html));
        assert!(browser_navigation("HEAD", html));
        assert!(!browser_navigation("POST", html));
        assert!(!browser_navigation("GET", Some("application/json")));
        assert!(!browser_navigation("GET", None));
    }

    #[test]
    fn header_values_are_ascii_without_controls_and_decode_back() {
        assert_eq!(header_value("Ann Lovelace"), "Ann Lovelace");
        assert_eq!(header_value("Zoë Ødegård"), "Zo%C3%AB %C3%98deg%C3%A5rd");
        assert_eq!(header_value("a\r\nX-Evil: 1"), "a%0D%0AX-Evil: 1");
        assert_eq!(header_value("100%"), "100%25");
        let groups = [
            "acme/ml".to_string(),
            "a,b".to_string(),
            "équipe".to_string(),
        ];
        assert_eq!(groups_header(&groups), "acme/ml,a%2Cb,%C3%A9quipe");
        for g in groups_header(&groups).split(',').zip(&groups) {
            let back = percent_encoding::percent_decode_str(g.0)
                .decode_utf8()
                .unwrap();
            assert_eq!(&back, g.1);
        }
    }

    #[test]
    fn the_sign_in_url_carries_the_original_url_encoded() {
        assert_eq!(
            sign_in_url("https://labgate.lab.example", "https://app.lab.example/n?x=1&y=2"),
            "https://labgate.lab.example/sessions/new?return_to=https%3A%2F%2Fapp%2Elab%2Eexample%2Fn%3Fx%3D1%26y%3D2"
        );
    }

    #[test]
    fn absolute_return_to_names_exactly_the_origin_a_browser_would_go_to() {
        let origin = |raw: &str| absolute_return_to(raw).map(|o| o.to_string());
        assert_eq!(
            origin("https://app.lab.test/notebook?x=1").as_deref(),
            Some("https://app.lab.test")
        );
        assert_eq!(
            origin("https://app.lab.test").as_deref(),
            Some("https://app.lab.test")
        );
        assert_eq!(
            origin("https://app.lab.test.evil.test/").as_deref(),
            Some("https://app.lab.test.evil.test")
        );
        for refused in [
            "//evil.test",
            "https://app.lab.test@evil.test/",
            "https://app.lab.test:@evil.test/",
            "https://app.lab.test%2F@evil.test/",
            "https://app.lab.test\\@evil.test/",
            "https://app.lab.test/\\evil",
            "https://app.lab.test/ x",
            "https://app.lab.test/\nx",
            "https:/\\app.lab.test",
            "javascript://app.lab.test/%0Aalert(1)",
            "https://app.lab.test#frag",
        ] {
            assert_eq!(origin(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_cookie_domain_must_cover_the_base_url_host_with_two_labels() {
        let base = "https://labgate.lab.example";
        assert_eq!(cookie_domain("lab.example", base).unwrap(), "lab.example");
        assert_eq!(cookie_domain(".Lab.Example", base).unwrap(), "lab.example");
        assert_eq!(
            cookie_domain("labgate.lab.example", base).unwrap(),
            "labgate.lab.example"
        );
        for (bad, says) in [
            ("example", "single label"),
            ("other.example", "does not cover"),
            ("ab.example", "does not cover"),
            ("10.0.0.1", "IP address"),
            ("lab..example", "not a domain"),
            ("lab.example/x", "not a domain"),
        ] {
            let err = cookie_domain(bad, base).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(cookie_domain("0.1", "http://0.1:9000")
            .unwrap_err()
            .contains("IP address"));
        assert!(cookie_domain("lab.example", "http://127.0.0.1:9000")
            .unwrap_err()
            .contains("does not cover"));
    }
}
