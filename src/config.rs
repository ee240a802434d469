//! Bootstrap configuration from command-line flags and environment variables (with `*_FILE`
//! variants for secrets), validated with messages that name the setting and the fix.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The `--listen` text as given, for error messages.
    pub listen_text: String,
    pub data_dir: PathBuf,
    /// Public base URL from `--base-url` (fixed, shown read-only), without trailing `/`.
    pub base_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Password of `admin` on the very first start.
    pub admin_password: Option<String>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_DATA_DIR: &str = "./labgate-data";

/// Raw values from flags; `None` falls back to the environment, then the default.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub base_url: Option<String>,
    pub ca_file: Option<String>,
    pub trusted_proxies: Option<String>,
}

/// Reads a secret from `NAME` or from the file named by `NAME_FILE`; both set is an error.
pub fn secret_from_env(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let direct = env(name).filter(|v| !v.is_empty());
    let file_var = format!("{name}_FILE");
    let file = env(&file_var).filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(format!(
            "{name} and {file_var} are both set; set only one of them"
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text.trim_end_matches(['\r', '\n']).to_string();
                if value.is_empty() {
                    Err(format!("{file_var}={path}: the file is empty"))
                } else {
                    Ok(Some(value))
                }
            }
            Err(e) => Err(format!("{file_var}={path}: {e}")),
        },
        (None, None) => Ok(None),
    }
}

/// Validates a base URL: absolute http(s), no query or fragment; trailing `/` removed.
pub fn parse_base_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['?', '#', ' ']) => Ok(url.to_string()),
        _ => Err(format!(
            "--base-url {raw}: expected an absolute http:// or https:// URL such as https://labgate.example.org"
        )),
    }
}

impl Config {
    pub fn from_flags(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let pick = |flag: &Option<String>, var: &str| {
            flag.clone().or_else(|| env(var).filter(|v| !v.is_empty()))
        };
        let listen_text =
            pick(&flags.listen, "LABGATE_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text
            .to_socket_addrs()
            .map_err(|e| {
                format!("--listen {listen_text}: {e} (expected IP:PORT such as 127.0.0.1:9000)")
            })?
            .next()
            .ok_or_else(|| format!("--listen {listen_text}: the address resolves to nothing"))?;
        let data_dir = PathBuf::from(
            pick(&flags.data_dir, "LABGATE_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        );
        let base_url = pick(&flags.base_url, "LABGATE_BASE_URL")
            .map(|u| parse_base_url(&u))
            .transpose()?;
        let ca_file = pick(&flags.ca_file, "LABGATE_CA_FILE").map(PathBuf::from);
        if let Some(ca) = &ca_file {
            if !ca.is_file() {
                return Err(format!("--ca-file {}: no such file", ca.display()));
            }
        }
        let trusted_proxies = match pick(&flags.trusted_proxies, "LABGATE_TRUSTED_PROXIES") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>().map_err(|_| {
                        format!("--trusted-proxies {list}: '{s}' is not an IP address (expected a comma-separated list such as 127.0.0.1,::1)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let admin_password = secret_from_env("LABGATE_ADMIN_PASSWORD", env)?;
        if let Some(p) = &admin_password {
            crate::model::validate_password(p)
                .map_err(|e| format!("LABGATE_ADMIN_PASSWORD: {e}"))?;
        }
        Ok(Config {
            listen,
            listen_text,
            data_dir,
            base_url,
            ca_file,
            admin_password,
            trusted_proxies,
        })
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("labgate.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_flags(&Flags::default(), &env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.data_dir, PathBuf::from("./labgate-data"));
        assert!(c.base_url.is_none() && c.admin_password.is_none());
    }

    #[test]
    fn flags_beat_environment() {
        let flags = Flags {
            listen: Some("127.0.0.1:0".into()),
            ..Flags::default()
        };
        let c = Config::from_flags(
            &flags,
            &env_of(&[
                ("LABGATE_LISTEN", "127.0.0.1:5"),
                ("LABGATE_BASE_URL", "https://x.org/"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.base_url.as_deref(), Some("https://x.org"));
    }

    #[test]
    fn secret_and_secret_file_together_is_an_error() {
        let err = Config::from_flags(
            &Flags::default(),
            &env_of(&[
                ("LABGATE_ADMIN_PASSWORD", "a-long-password"),
                ("LABGATE_ADMIN_PASSWORD_FILE", "/x"),
            ]),
        )
        .unwrap_err();
        assert!(err.contains("both set"), "{err}");
    }

    #[test]
    fn secret_file_is_read_without_newline() {
        let path = std::env::temp_dir().join(format!("labgate-secret-{}", std::process::id()));
        std::fs::write(&path, "a-long-password\n").unwrap();
        let p = path.to_string_lossy().to_string();
        let c = Config::from_flags(
            &Flags::default(),
            &env_of(&[("LABGATE_ADMIN_PASSWORD_FILE", &p)]),
        )
        .unwrap();
        assert_eq!(c.admin_password.as_deref(), Some("a-long-password"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_values_name_the_setting() {
        let bad_listen = Flags {
            listen: Some("nonsense".into()),
            ..Flags::default()
        };
        assert!(Config::from_flags(&bad_listen, &env_of(&[]))
            .unwrap_err()
            .starts_with("--listen nonsense"));
        let bad_url = Flags {
            base_url: Some("ftp://x".into()),
            ..Flags::default()
        };
        assert!(Config::from_flags(&bad_url, &env_of(&[]))
            .unwrap_err()
            .starts_with("--base-url"));
        let short = Config::from_flags(
            &Flags::default(),
            &env_of(&[("LABGATE_ADMIN_PASSWORD", "short")]),
        )
        .unwrap_err();
        assert!(short.starts_with("LABGATE_ADMIN_PASSWORD"));
        let proxies = Flags {
            trusted_proxies: Some("1.2.3.4,nope".into()),
            ..Flags::default()
        };
        assert!(Config::from_flags(&proxies, &env_of(&[]))
            .unwrap_err()
            .contains("'nope'"));
    }
}
