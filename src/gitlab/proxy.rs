//! Which proxy a call to GitLab goes through. The environment (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`, upper or lower case) is read once at start; the choice per URL is a
//! pure function, so the NO_PROXY rules are tested here rather than trusted to ureq (whose own
//! matching neither trims `a, b` lists nor treats `example.com` as covering its subdomains).
//!
//! Rules, as curl has them: an `https://` URL uses `HTTPS_PROXY`, an `http://` one `HTTP_PROXY`,
//! either falls back to `ALL_PROXY`. `NO_PROXY` is a comma- or space-separated list: `*` (no
//! proxy at all), a domain (`example.com`, `.example.com` or `*.example.com`: the domain and
//! its subdomains), an IP address, or a CIDR range (`10.0.0.0/8`); ports in entries are
//! ignored. Loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) never go through a proxy.

use std::net::IpAddr;
use ureq::http::Uri;

/// The proxy settings read from the environment. Values may hold credentials: never print them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// (variable name, value) for `https://` URLs.
    pub https: Option<(&'static str, String)>,
    /// (variable name, value) for `http://` URLs.
    pub http: Option<(&'static str, String)>,
    /// (variable name, value) for both when the above is unset.
    pub all: Option<(&'static str, String)>,
    /// The `NO_PROXY` list ("" when unset).
    pub no_proxy: String,
}

impl std::fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |v: &Option<(&'static str, String)>| v.as_ref().map(|(n, _)| *n);
        f.debug_struct("ProxyEnv")
            .field("https", &name(&self.https))
            .field("http", &name(&self.http))
            .field("all", &name(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyEnv {
    /// Reads the variables through `get` (first non-empty of each pair wins).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                get(name)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .map(|v| (name, v))
            })
        };
        ProxyEnv {
            https: first(["HTTPS_PROXY", "https_proxy"]),
            http: first(["HTTP_PROXY", "http_proxy"]),
            all: first(["ALL_PROXY", "all_proxy"]),
            no_proxy: first(["NO_PROXY", "no_proxy"])
                .map(|(_, v)| v)
                .unwrap_or_default(),
        }
    }

    /// Reads the process environment.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// Every configured proxy as (variable name, value).
    pub fn configured(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [&self.https, &self.http, &self.all]
            .into_iter()
            .flatten()
            .map(|(name, value)| (*name, value.as_str()))
    }

    /// The proxy (its value) a call to `url` goes through; `None` for a direct connection.
    pub fn proxy_for(&self, url: &str) -> Option<&str> {
        let uri = url.parse::<Uri>().ok()?;
        let host = uri.host()?;
        if is_loopback(host) || no_proxy_matches(&self.no_proxy, host) {
            return None;
        }
        let chosen = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
            "https" => self.https.as_ref().or(self.all.as_ref()),
            "http" => self.http.as_ref().or(self.all.as_ref()),
            _ => None,
        };
        chosen.map(|(_, value)| value.as_str())
    }
}

/// A host name without brackets (IPv6), trailing dot or upper case.
fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `localhost`, `*.localhost`, `127.0.0.0/8`, `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = normalize_host(host);
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` is covered by the `NO_PROXY` list `no_proxy` (rules in the module docs).
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = normalize_host(host);
    if host.is_empty() {
        return false;
    }
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                let net = normalize_host(net).parse::<IpAddr>();
                return match (host_ip, net, bits.trim().parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            let name = strip_port(entry);
            let name = normalize_host(name.trim_start_matches('*').trim_start_matches('.'));
            if name.is_empty() {
                return false;
            }
            match (host_ip, name.parse::<IpAddr>()) {
                (Some(ip), Ok(entry_ip)) => ip == entry_ip,
                (Some(_), Err(_)) | (None, Ok(_)) => false,
                (None, Err(_)) => {
                    host == name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.'))
                }
            }
        })
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 address is left alone.
fn strip_port(entry: &str) -> &str {
    if entry.starts_with('[') {
        return entry.find(']').map_or(entry, |end| &entry[..=end]);
    }
    match entry.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => entry,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn no_proxy_domains_cover_their_subdomains() {
        for entry in [
            "example.com",
            ".example.com",
            "*.example.com",
            "EXAMPLE.com.",
        ] {
            assert!(no_proxy_matches(entry, "example.com"), "{entry}");
            assert!(no_proxy_matches(entry, "Git.Example.com"), "{entry}");
            assert!(!no_proxy_matches(entry, "badexample.com"), "{entry}");
            assert!(!no_proxy_matches(entry, "example.com.evil.org"), "{entry}");
        }
    }

    #[test]
    fn no_proxy_lists_are_trimmed_and_may_use_spaces() {
        let list = " a.example , gitlab.corp.example  other.example,,";
        assert!(no_proxy_matches(list, "gitlab.corp.example"));
        assert!(no_proxy_matches(list, "other.example"));
        assert!(no_proxy_matches(list, "a.example"));
        assert!(!no_proxy_matches(list, "b.example"));
        assert!(!no_proxy_matches("", "a.example"));
        assert!(!no_proxy_matches(",", "a.example"));
    }

    #[test]
    fn no_proxy_star_matches_everything() {
        assert!(no_proxy_matches("*", "gitlab.com"));
        assert!(no_proxy_matches("x.org, *", "10.1.2.3"));
    }

    #[test]
    fn no_proxy_ports_are_ignored() {
        assert!(no_proxy_matches("gitlab.corp:8443", "gitlab.corp"));
        assert!(no_proxy_matches("[fd00::1]:443", "[fd00::1]"));
        assert!(no_proxy_matches("10.0.0.5:80", "10.0.0.5"));
    }

    #[test]
    fn no_proxy_ip_addresses_and_ranges() {
        assert!(no_proxy_matches("10.0.0.5", "10.0.0.5"));
        assert!(!no_proxy_matches("10.0.0.5", "10.0.0.50"));
        assert!(no_proxy_matches("10.0.0.0/8", "10.200.3.4"));
        assert!(!no_proxy_matches("10.0.0.0/8", "11.0.0.1"));
        assert!(no_proxy_matches("192.168.1.0/24", "192.168.1.77"));
        assert!(no_proxy_matches("0.0.0.0/0", "8.8.8.8"));
        assert!(no_proxy_matches("fd00::/8", "[fd12:3456::1]"));
        assert!(no_proxy_matches("fd00::1", "[FD00:0::1]"));
        assert!(!no_proxy_matches("10.0.0.0/8", "ten.example"));
        assert!(!no_proxy_matches("10.0.0.0/99", "10.0.0.1"));
        assert!(!no_proxy_matches("10.0.0.0/x", "10.0.0.1"));
        assert!(
            !no_proxy_matches("0.0.0.10", "10"),
            "a name is never an address"
        );
    }

    #[test]
    fn https_urls_use_https_proxy_http_urls_http_proxy_and_all_proxy_is_the_fallback() {
        let e = env(&[
            ("https_proxy", "http://sp:3128"),
            ("HTTP_PROXY", "http://p:3128"),
        ]);
        assert_eq!(
            e.proxy_for("https://gitlab.com/api"),
            Some("http://sp:3128")
        );
        assert_eq!(e.proxy_for("http://gitlab.lab/api"), Some("http://p:3128"));
        let e = env(&[("ALL_PROXY", "http://all:1")]);
        assert_eq!(e.proxy_for("https://gitlab.com"), Some("http://all:1"));
        assert_eq!(e.proxy_for("http://gitlab.lab"), Some("http://all:1"));
        let e = env(&[("HTTPS_PROXY", "http://sp:3128")]);
        assert_eq!(e.proxy_for("http://gitlab.lab"), None);
        assert_eq!(env(&[]).proxy_for("https://gitlab.com"), None);
    }

    #[test]
    fn upper_case_wins_and_blank_values_count_as_unset() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
        ]);
        assert_eq!(e.proxy_for("https://g"), Some("http://upper:1"));
        let e = env(&[("HTTPS_PROXY", "  "), ("https_proxy", "http://lower:1")]);
        assert_eq!(e.proxy_for("https://g"), Some("http://lower:1"));
        let e = env(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "g")]);
        assert_eq!(e.proxy_for("https://g/x"), None);
    }

    #[test]
    fn no_proxy_hosts_and_loopback_go_direct() {
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("HTTP_PROXY", "http://proxy:3128"),
            ("NO_PROXY", "corp.example, 10.0.0.0/8"),
        ]);
        for direct in [
            "https://gitlab.corp.example/gitlab",
            "https://10.1.1.1:8443",
            "http://127.0.0.1:9999",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert_eq!(e.proxy_for(direct), None, "{direct}");
        }
        assert_eq!(e.proxy_for("https://gitlab.com"), Some("http://proxy:3128"));
        assert_eq!(e.proxy_for("not a url"), None);
    }

    #[test]
    fn debug_output_hides_proxy_credentials() {
        let e = env(&[("HTTPS_PROXY", "http://user:pa55word@proxy:3128")]);
        assert!(!format!("{e:?}").contains("pa55word"));
    }
}
