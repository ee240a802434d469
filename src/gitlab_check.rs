//! The connection check as the GitLab tab and the API run it, and the redirect URI a sign-in
//! sends: the stored configuration checked with the one GitLab client, no pooled connection
//! held while GitLab answers, and never the secret in what comes back or in the log.

use crate::db::PooledConn;
use crate::error::AppResult;
use crate::gitlab::check::{self, Report};
use crate::gitlab::{Client, GitlabSettings};
use crate::gitlab_config::{self, GitlabConfig};
use crate::settings;
use rusqlite::Connection;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the base URL of the redirect URI comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseUrlFrom {
    /// `--base-url` (`LABGATE_BASE_URL`), given at start.
    Flag,
    /// The Server base URL setting.
    Setting,
    /// The address labgate listens on.
    Bound(SocketAddr),
}

/// The redirect URI labgate sends at sign-in, or why it cannot know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInRedirect {
    Known {
        uri: String,
        from: BaseUrlFrom,
    },
    /// Bound to every interface (`0.0.0.0`, `::`) without a base URL: the address browsers use
    /// cannot be told from the bound one, and a sign-in would send GitLab an address no browser
    /// can reach.
    Unknown {
        bound: SocketAddr,
    },
}

impl SignInRedirect {
    /// The URI, or what to do so that labgate knows it.
    pub fn uri(&self) -> Result<&str, String> {
        match self {
            SignInRedirect::Known { uri, .. } => Ok(uri),
            SignInRedirect::Unknown { bound } => Err(format!(
                "labgate listens on {bound}, every network interface, so it cannot tell the URL \
                 browsers reach it at: start labgate with --base-url https://labgate.example.org \
                 (or LABGATE_BASE_URL), or set the Server base URL setting (General tab); the \
                 redirect URI is then <base URL>/oauth2/callback/gitlab"
            )),
        }
    }
}

/// The redirect URI for the base URL given at start (`flag`), else the Server base URL setting,
/// else the bound address when it names one interface: the order a sign-in uses.
pub fn sign_in_redirect(
    flag: Option<&str>,
    setting: Option<String>,
    bound: SocketAddr,
) -> SignInRedirect {
    let (base, from) = match (flag, setting) {
        (Some(url), _) => (url.to_string(), BaseUrlFrom::Flag),
        (None, Some(url)) => (url, BaseUrlFrom::Setting),
        (None, None) if bound.ip().is_unspecified() => return SignInRedirect::Unknown { bound },
        (None, None) => (format!("http://{bound}"), BaseUrlFrom::Bound(bound)),
    };
    SignInRedirect::Known {
        uri: gitlab_config::redirect_uri(&base),
        from,
    }
}

/// [`sign_in_redirect`] with the setting read from the store.
pub fn stored_redirect(
    conn: &Connection,
    flag: Option<&str>,
    bound: SocketAddr,
) -> AppResult<SignInRedirect> {
    let setting = crate::db::settings::get(conn, settings::SERVER_BASE_URL)?;
    Ok(sign_in_redirect(flag, setting, bound))
}

/// What the check says when no GitLab configuration is stored: what to set, and where.
pub const NOT_CONFIGURED: &str = "GitLab is not configured: set its URL, application ID and \
    secret (Configure GitLab on the GitLab tab of the Authentication settings, or POST \
    /api/v2/dop-translation/gitlab-configurations)";

/// The settings the check calls GitLab with: an unset application ID or secret is empty, which
/// the check reports as such.
fn settings_of(config: &GitlabConfig) -> GitlabSettings {
    GitlabSettings {
        url: config.url.clone(),
        application_id: config.application_id.clone().unwrap_or_default(),
        secret: config.secret.clone().unwrap_or_default(),
    }
}

/// Where labgate is and who asks: what the check needs besides the store.
pub struct Asking<'a> {
    /// The one GitLab client: the timeouts, `--ca-file` and proxies of sign-in.
    pub client: &'a Client,
    /// `--base-url`, if given.
    pub base_url_flag: Option<&'a str>,
    pub bound: SocketAddr,
    /// The admin asking, for the log.
    pub by: &'a str,
}

/// Checks the stored configuration against GitLab. The connection goes back to the pool while
/// GitLab is called (up to `wait` to take one again), so that a slow GitLab cannot starve
/// other requests. Nothing is written, here or in GitLab.
pub fn run(conn: &mut PooledConn<'_>, asking: &Asking<'_>, wait: Duration) -> AppResult<Report> {
    let report = if gitlab_config::exists(conn)? {
        let config = gitlab_config::load(conn)?;
        let settings = settings_of(&config);
        let redirect = stored_redirect(conn, asking.base_url_flag, asking.bound)?;
        let uri = redirect.uri();
        let uri = uri.as_deref().map_err(String::as_str);
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let provisioning = config.auto_provisioning.then(|| check::Provisioning {
            token: config.provisioning_token.as_deref(),
            allowed_groups: &config.allowed_groups,
            today: &today,
        });
        conn.released(wait, || {
            check::run(asking.client, &settings, uri, provisioning.as_ref())
        })?
    } else {
        Report::not_configured(NOT_CONFIGURED)
    };
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.ok && c.detail != "skipped")
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    log::info!(
        "admin: gitlab connection check by={:?} ok={}{}",
        asking.by,
        report.ok,
        if failed.is_empty() {
            String::new()
        } else {
            format!(" failed: {}", failed.join("; "))
        }
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_interface_without_a_base_url_leaves_the_redirect_uri_unknown() {
        for bound in ["0.0.0.0:9000", "[::]:9000"] {
            let redirect = sign_in_redirect(None, None, addr(bound));
            assert_eq!(redirect, SignInRedirect::Unknown { bound: addr(bound) });
            let why = redirect.uri().unwrap_err();
            assert!(why.contains("--base-url"), "{why}");
            assert!(why.contains("Server base URL"), "{why}");
        }
    }

    #[test]
    fn the_flag_wins_over_the_setting_which_wins_over_the_bound_address() {
        let any = addr("0.0.0.0:9000");
        assert_eq!(
            sign_in_redirect(
                Some("https://lg.example"),
                Some("https://s.example".into()),
                any
            ),
            SignInRedirect::Known {
                uri: "https://lg.example/oauth2/callback/gitlab".into(),
                from: BaseUrlFrom::Flag
            }
        );
        assert_eq!(
            sign_in_redirect(None, Some("https://s.example".into()), any),
            SignInRedirect::Known {
                uri: "https://s.example/oauth2/callback/gitlab".into(),
                from: BaseUrlFrom::Setting
            }
        );
        let one = addr("10.1.2.3:9000");
        assert_eq!(
            sign_in_redirect(None, None, one),
            SignInRedirect::Known {
                uri: "http://10.1.2.3:9000/oauth2/callback/gitlab".into(),
                from: BaseUrlFrom::Bound(one)
            }
        );
    }

    #[test]
    fn the_setting_is_read_from_the_store() {
        let conn = crate::db::test_db();
        let any = addr("0.0.0.0:9000");
        assert!(stored_redirect(&conn, None, any).unwrap().uri().is_err());
        crate::db::settings::set(&conn, settings::SERVER_BASE_URL, "https://s.example").unwrap();
        assert_eq!(
            stored_redirect(&conn, None, any).unwrap().uri(),
            Ok("https://s.example/oauth2/callback/gitlab")
        );
    }

    #[test]
    fn without_a_configuration_every_check_fails_saying_what_to_set() {
        let report = Report::not_configured(NOT_CONFIGURED);
        assert!(!report.ok);
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["reach", "issuer", "scopes", "credentials", "redirectUri"]
        );
        assert!(report.checks[0]
            .detail
            .contains("URL, application ID and secret"));
        assert!(report.checks[1..].iter().all(|c| c.detail == "skipped"));
    }
}
