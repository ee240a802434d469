//! The GitLab client: the authorization URL, the code exchange (the `oauth2` crate over
//! labgate's own ureq 3 agent), OIDC userinfo (who signed in and their groups, in one call that
//! needs only the `openid` scope), and the connection check ([`check`]).
//!
//! The OAuth logic does no I/O of its own: building URLs, parsing answers, reading pagination
//! and `Retry-After` headers, deciding retries and choosing a proxy are pure functions in
//! [`parse`] and [`proxy`]; only [`Client`] touches the network. Every call is bounded by a
//! deadline the caller passes in; redirects are never followed; answers are size-capped; TLS is
//! always verified; no client secret, access token, code or verifier reaches a log line or an
//! error message.

pub mod check;
mod client;
#[cfg(test)]
mod http_tests;
pub mod parse;
#[cfg(test)]
mod parse_props;
pub mod provision;
pub mod proxy;
mod transport;

pub use client::{roots_with, Client, Page, Probe};
pub use parse::{
    next_page, parse_link_header, parse_userinfo, retry_after_secs, same_gitlab, NextPage,
};

use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::time::Duration;

/// Largest token or connection-check answer read, bytes.
pub const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Largest userinfo answer read, bytes: room for [`MAX_GROUP_PATH_BYTES`] of group paths
/// with their JSON quoting and escapes.
pub const MAX_USERINFO_BODY: u64 = 4 * 1024 * 1024;
/// Most GitLab group paths one sign-in accepts (GitLab's own limits make real users far
/// fewer); bounds the memory a hostile GitLab can make one sign-in hold.
pub const MAX_GROUP_PATHS: usize = 10_000;
/// Most bytes of group path text one sign-in accepts.
pub const MAX_GROUP_PATH_BYTES: usize = 2 * 1024 * 1024;
/// Longest single wait for a `Retry-After`.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(3);
/// Retries of a GET after a 429 (a 5xx gets one).
pub const MAX_RETRIES: usize = 2;
/// Pause before retrying a GET that got a 5xx.
pub const SERVER_ERROR_PAUSE: Duration = Duration::from_millis(200);
/// Connect timeout of every call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Overall timeout of one call, body included (lowered to the time left before the deadline).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where GitLab is and how labgate is registered there.
#[derive(Clone, PartialEq, Eq)]
pub struct GitlabSettings {
    /// Base URL, possibly with a path prefix (`https://host/gitlab`); a trailing `/` is ignored.
    pub url: String,
    pub application_id: String,
    pub secret: String,
}

impl GitlabSettings {
    /// The base URL without a trailing `/`.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

impl fmt::Debug for GitlabSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitlabSettings")
            .field("url", &self.url)
            .field("application_id", &self.application_id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// A PKCE pair (RFC 7636, S256). The verifier is a secret: no `Debug`.
pub struct Pkce {
    /// 43 characters of `[A-Za-z0-9-_]` (32 random bytes, base64url).
    pub verifier: String,
    /// `BASE64URL(SHA256(verifier))`, unpadded.
    pub challenge: String,
}

/// A fresh random verifier and its S256 challenge.
pub fn new_pkce() -> Pkce {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    Pkce {
        verifier: verifier.secret().clone(),
        challenge: challenge.as_str().to_string(),
    }
}

/// The S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_string()))
        .as_str()
        .to_string()
}

/// Everything but RFC 3986 unreserved characters is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded for a query value or a path segment.
pub(crate) fn enc(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// `<url>/oauth/authorize?...` with every parameter of the authorization-code flow with PKCE, each percent-encoded
/// (a space in `scope` becomes `%20`).
pub fn authorize_url(
    settings: &GitlabSettings,
    redirect_uri: &str,
    scope: &str,
    state: &str,
    pkce_challenge: &str,
) -> String {
    format!(
        "{}/oauth/authorize?client_id={}&redirect_uri={}&response_type=code&scope={}&state={}&code_challenge={}&code_challenge_method=S256",
        settings.base(),
        enc(&settings.application_id),
        enc(redirect_uri),
        enc(scope),
        enc(state),
        enc(pkce_challenge),
    )
}

/// What GitLab's token endpoint gave. No `Debug` of the tokens: they are secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The bearer access token (two hours on GitLab).
    pub access: String,
    /// The refresh token, when GitLab sent one (it always does for the code and refresh
    /// grants).
    pub refresh: Option<String>,
    /// The scopes granted, when GitLab said (`scope`).
    pub scopes: Option<Vec<String>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access", &"<hidden>")
            .field("refresh", &self.refresh.as_ref().map(|_| "<hidden>"))
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The person as GitLab's OIDC userinfo describes them (see [`parse::parse_userinfo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Userinfo {
    /// GitLab's numeric id (> 0), from `sub`: the stable key of the account.
    pub id: i64,
    /// `preferred_username` (else `nickname`); non-empty.
    pub username: String,
    /// As GitLab has it; may be empty (the sign-in falls back to the username).
    pub name: String,
    /// The email, only when GitLab says it is verified.
    pub email: Option<String>,
    /// Full paths of the groups the person belongs to, directly or through a parent group;
    /// sorted, without duplicates, at most [`MAX_GROUP_PATHS`].
    pub groups: crate::model::GroupPaths,
}

/// What went wrong talking to GitLab. `Display` is a log line without secrets; every text that
/// comes from GitLab is stripped of control characters and shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitlabError {
    /// No answer: DNS, connection, TLS, proxy.
    Unreachable(String),
    /// The deadline (or the per-call timeout) passed.
    Timeout,
    /// An unexpected HTTP status (3xx included: redirects are never followed).
    Status {
        step: &'static str,
        status: u16,
        detail: String,
    },
    /// 429 that could not be waited out before the deadline or within the retries.
    RateLimited {
        step: &'static str,
        retry_after: Option<u64>,
    },
    /// An answer that is not what GitLab sends.
    Malformed { step: &'static str, detail: String },
    /// An answer over the size cap.
    TooLarge { step: &'static str },
    /// GitLab refused the grant: the token endpoint's `error` (and description).
    Denied(String),
}

impl fmt::Display for GitlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitlabError::Unreachable(why) => write!(f, "GitLab unreachable: {why}"),
            GitlabError::Timeout => write!(f, "GitLab did not answer in time"),
            GitlabError::Status {
                step,
                status,
                detail,
            } => {
                write!(f, "{step}: GitLab answered HTTP {status}")?;
                if !detail.is_empty() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            GitlabError::RateLimited { step, retry_after } => match retry_after {
                Some(s) => write!(f, "{step}: GitLab rate limit (retry after {s} s)"),
                None => write!(f, "{step}: GitLab rate limit"),
            },
            GitlabError::Malformed { step, detail } => {
                write!(f, "{step}: malformed answer from GitLab: {detail}")
            }
            GitlabError::TooLarge { step } => write!(f, "{step}: GitLab's answer is too large"),
            GitlabError::Denied(error) => write!(f, "token: GitLab refused the grant: {error}"),
        }
    }
}

impl std::error::Error for GitlabError {}

/// The fix when GitLab's application lacks the scopes labgate asks for: GitLab then answers the
/// authorization with `error=invalid_scope`, or userinfo with 403.
pub const FIX_SCOPES: &str = "the GitLab application lacks the openid or email scope: in GitLab, \
     edit the application (Admin area, or the group's or user's Settings, Applications), tick \
     openid and email, and save";
/// The fix when GitLab's token endpoint refuses the client credentials.
pub const FIX_CREDENTIALS: &str = "GitLab rejects the application ID or secret: copy both again \
     from the GitLab application into labgate's GitLab settings";

impl GitlabError {
    /// A short code of the kind of failure, for metric labels and audit events.
    pub fn code(&self) -> &'static str {
        match self {
            GitlabError::Unreachable(_) => "gitlab-unreachable",
            GitlabError::Timeout => "gitlab-timeout",
            GitlabError::Status { .. } => "gitlab-status",
            GitlabError::RateLimited { .. } => "gitlab-rate-limited",
            GitlabError::Malformed { .. } => "gitlab-malformed",
            GitlabError::TooLarge { .. } => "gitlab-too-large",
            GitlabError::Denied(_) => "gitlab-denied",
        }
    }

    /// GitLab refused the grant as invalid (`invalid_grant`): for a refresh, the token was
    /// revoked (the person revoked labgate, or was deleted) or was already used.
    pub fn grant_refused(&self) -> bool {
        self.denied_with("invalid_grant")
    }

    /// GitLab's token endpoint refused with the OAuth error `code` (alone or followed by `:`
    /// and a description).
    fn denied_with(&self, code: &str) -> bool {
        matches!(self, GitlabError::Denied(error)
            if error.strip_prefix(code).is_some_and(|rest| rest.is_empty() || rest.starts_with(':')))
    }

    /// What the admin must change when this error comes from how labgate is registered in
    /// GitLab rather than from GitLab being down or the person: the scopes (userinfo's 403),
    /// the application ID or secret (the token endpoint's `invalid_client`). `None` otherwise.
    pub fn configuration_fix(&self) -> Option<&'static str> {
        match self {
            GitlabError::Status {
                step: "userinfo",
                status: 403,
                ..
            } => Some(FIX_SCOPES),
            _ if self.denied_with("invalid_client") => Some(FIX_CREDENTIALS),
            _ if self.denied_with("invalid_scope") => Some(FIX_SCOPES),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> GitlabSettings {
        GitlabSettings {
            url: url.into(),
            application_id: "app id".into(),
            secret: "s3cret-value".into(),
        }
    }

    #[test]
    fn pkce_matches_the_gitlab_docs_vector() {
        assert_eq!(
            pkce_challenge("ks02i3jdikdo2k0dkfodf3m39rjfjsdk0wk349rj3jrhf"),
            "2i0WFA-0AerkjQm4X4oDEhqA17QIAKNjXpagHBXmO_U"
        );
    }

    #[test]
    fn pkce_verifiers_are_fresh_and_use_the_rfc_alphabet() {
        let p = new_pkce();
        assert!((43..=128).contains(&p.verifier.len()), "{}", p.verifier);
        assert!(p
            .verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)));
        assert_eq!(pkce_challenge(&p.verifier), p.challenge);
        assert_ne!(new_pkce().verifier, p.verifier);
    }

    #[test]
    fn authorize_url_has_every_parameter_encoded_under_the_path_prefix() {
        let url = authorize_url(
            &settings("https://h.example/gitlab/"),
            "http://lg:9000/oauth2/callback/gitlab",
            "read_user read_api",
            "st&x=y",
            "2i0WFA-0AerkjQm4X4oDEhqA17QIAKNjXpagHBXmO_U",
        );
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(path, "https://h.example/gitlab/oauth/authorize");
        let params: Vec<&str> = query.split('&').collect();
        assert_eq!(
            params,
            vec![
                "client_id=app%20id",
                "redirect_uri=http%3A%2F%2Flg%3A9000%2Foauth2%2Fcallback%2Fgitlab",
                "response_type=code",
                "scope=read_user%20read_api",
                "state=st%26x%3Dy",
                "code_challenge=2i0WFA-0AerkjQm4X4oDEhqA17QIAKNjXpagHBXmO_U",
                "code_challenge_method=S256",
            ]
        );
        assert!(!url.contains("s3cret"));
    }

    #[test]
    fn authorize_url_encodes_non_ascii_as_utf8() {
        let url = authorize_url(&settings("https://h"), "x", "s", "é", "c");
        assert!(url.contains("state=%C3%A9&"), "{url}");
    }

    #[test]
    fn secret_is_hidden_from_debug_output() {
        assert!(!format!("{:?}", settings("https://h")).contains("s3cret"));
    }

    #[test]
    fn errors_read_as_log_lines() {
        let cases = [
            (
                GitlabError::Status {
                    step: "groups",
                    status: 403,
                    detail: "the access token lacks the read_api scope".into(),
                },
                "groups: GitLab answered HTTP 403 (the access token lacks the read_api scope)",
            ),
            (
                GitlabError::RateLimited {
                    step: "user",
                    retry_after: Some(30),
                },
                "user: GitLab rate limit (retry after 30 s)",
            ),
            (GitlabError::Timeout, "GitLab did not answer in time"),
            (
                GitlabError::Denied("invalid_grant".into()),
                "token: GitLab refused the grant: invalid_grant",
            ),
        ];
        for (error, line) in cases {
            assert_eq!(error.to_string(), line);
        }
    }
}
