//! The GitLab client: the authorization URL, the code exchange (oauth2 over labgate's own
//! configured ureq agent), `GET /api/v4/user` and the paginated `GET /api/v4/groups`. Parsing
//! and URL building are pure functions; every call is bounded by a deadline; redirects are never
//! followed; bodies are capped; no secret, token, code or verifier reaches a log or an error.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, HttpRequest, HttpResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, TokenResponse, TokenUrl,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest token or user answer read, bytes.
pub const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Largest groups page read, bytes.
pub const MAX_PAGE_BODY: u64 = 4 * 1024 * 1024;
/// Most group pages followed (100 groups each).
pub const MAX_PAGES: usize = 100;
/// Longest single wait for a `Retry-After`.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3);
/// Retries of a GET after a 429 or 5xx.
const MAX_RETRIES: usize = 2;
/// Connect timeout of every call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Overall timeout of one call (lowered to the time left before the deadline).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where GitLab is and how labgate is registered there.
#[derive(Clone)]
pub struct GitlabSettings {
    /// Base URL without trailing `/`, possibly with a path prefix.
    pub url: String,
    pub application_id: String,
    pub secret: String,
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

/// A PKCE pair (S256).
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn new_pkce() -> Pkce {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    Pkce {
        verifier: verifier.secret().clone(),
        challenge: challenge.as_str().to_string(),
    }
}

/// The S256 challenge of a verifier (for checks and tests).
pub fn pkce_challenge(verifier: &str) -> String {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_string()))
        .as_str()
        .to_string()
}

fn enc(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// `<url>/oauth/authorize?...` with every parameter SPEC §5 step 1 names.
pub fn authorize_url(
    settings: &GitlabSettings,
    redirect_uri: &str,
    scope: &str,
    state: &str,
    pkce_challenge: &str,
) -> String {
    format!(
        "{}/oauth/authorize?client_id={}&redirect_uri={}&response_type=code&scope={}&state={}&code_challenge={}&code_challenge_method=S256",
        settings.url,
        enc(&settings.application_id),
        enc(redirect_uri),
        enc(scope),
        enc(state),
        enc(pkce_challenge),
    )
}

/// The user as `GET /api/v4/user` describes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GitlabUser {
    pub id: i64,
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub state: String,
    #[serde(default)]
    pub bot: bool,
}

/// What went wrong talking to GitLab. `Display` is a log line without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitlabError {
    Unreachable(String),
    Timeout,
    Status {
        step: &'static str,
        status: u16,
        detail: String,
    },
    RateLimited {
        step: &'static str,
        retry_after: Option<u64>,
    },
    Malformed {
        step: &'static str,
        detail: String,
    },
    TooLarge {
        step: &'static str,
    },
    TooManyPages,
    /// GitLab refused the grant (token endpoint `error`).
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
                write!(f, "{step}: GitLab answered {status}")?;
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
            GitlabError::TooManyPages => {
                write!(
                    f,
                    "groups: more than {MAX_PAGES} pages; refusing to read further"
                )
            }
            GitlabError::Denied(error) => write!(f, "token: GitLab refused the grant: {error}"),
        }
    }
}

impl std::error::Error for GitlabError {}

/// Parses `GET /api/v4/user`.
pub fn parse_user(body: &[u8]) -> Result<GitlabUser, GitlabError> {
    serde_json::from_slice(body).map_err(|e| GitlabError::Malformed {
        step: "user",
        detail: e.to_string(),
    })
}

/// Parses one page of `GET /api/v4/groups` into `full_path` values.
pub fn parse_groups_page(body: &[u8]) -> Result<Vec<String>, GitlabError> {
    #[derive(Deserialize)]
    struct Group {
        full_path: String,
    }
    let groups: Vec<Group> = serde_json::from_slice(body).map_err(|e| GitlabError::Malformed {
        step: "groups",
        detail: e.to_string(),
    })?;
    Ok(groups.into_iter().map(|g| g.full_path).collect())
}

/// Parses an RFC 8288 `Link` header into (url, rel) pairs.
pub fn parse_link_header(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let url = rest[start + 1..start + end].trim().to_string();
        let after = &rest[start + end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        for param in params.split(';') {
            let param = param.trim().trim_end_matches(',').trim();
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("rel") {
                    for rel in v.trim().trim_matches('"').split_whitespace() {
                        out.push((url.clone(), rel.to_ascii_lowercase()));
                    }
                }
            }
        }
        rest = &after[params_end..];
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    Number(u32),
    Url(String),
}

/// The next page: `X-Next-Page` when it holds a number, else `Link rel="next"`; `None` at the end.
pub fn next_page(x_next_page: Option<&str>, link: Option<&str>) -> Option<NextPage> {
    if let Some(n) = x_next_page.map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(n) = n.parse::<u32>() {
            if n > 0 {
                return Some(NextPage::Number(n));
            }
        }
    }
    link.and_then(|l| {
        parse_link_header(l)
            .into_iter()
            .find(|(_, rel)| rel == "next")
            .map(|(url, _)| NextPage::Url(url))
    })
}

/// Seconds of a `Retry-After` header given in seconds (HTTP dates are not trusted).
pub fn retry_after_secs(value: Option<&str>) -> Option<u64> {
    value.and_then(|v| v.trim().parse::<u64>().ok())
}

/// `scheme://host:port` of a URL, lower-cased, for same-origin checks.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.to_ascii_lowercase();
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']'))
    {
        authority
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{authority}:{port}")
    };
    Some(format!("{scheme}://{with_port}"))
}

/// Whether `candidate` is on the same origin as `base` and under its path prefix.
pub fn same_gitlab(base: &str, candidate: &str) -> bool {
    let path_of = |u: &str| {
        u.split_once("://")
            .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string()))
            .unwrap_or_default()
    };
    origin(base).is_some()
        && origin(base) == origin(candidate)
        && path_of(candidate).starts_with(&path_of(base))
}

/// One answer read from GitLab.
struct Answer {
    status: u16,
    body: Vec<u8>,
    x_next_page: Option<String>,
    link: Option<String>,
    retry_after: Option<String>,
}

/// Error from the HTTP adapter the oauth2 crate calls.
#[derive(Debug)]
struct AdapterError(GitlabError);

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AdapterError {}

/// One configured HTTP agent for every call to GitLab (clones share it).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// Builds the agent: timeouts, no redirects, statuses read (not turned into errors), TLS
    /// verified against the bundled Mozilla roots plus `ca_file`, proxy from the environment
    /// (`HTTPS_PROXY`, `NO_PROXY`...).
    pub fn new(ca_file: Option<&Path>) -> Result<Client, String> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            let mut extra = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => extra.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(format!("--ca-file {}: not a PEM file: {e}", path.display()))
                    }
                }
            }
            if extra.is_empty() {
                return Err(format!(
                    "--ca-file {}: no certificate found in the PEM file",
                    path.display()
                ));
            }
            // `RootCerts::new_with_certs` replaces the default roots: add the bundled ones too.
            let mut roots: Vec<ureq::tls::Certificate<'static>> =
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
                    .collect();
            roots.extend(extra);
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .proxy(ureq::Proxy::try_from_env())
            .tls_config(tls.build())
            .user_agent(format!("labgate/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.new_agent(),
        })
    }

    fn time_left(deadline: Instant) -> Result<Duration, GitlabError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(50) {
            return Err(GitlabError::Timeout);
        }
        Ok(left.min(CALL_TIMEOUT))
    }

    fn map_ureq(step: &'static str, e: ureq::Error) -> GitlabError {
        match e {
            ureq::Error::Timeout(_) => GitlabError::Timeout,
            ureq::Error::BodyExceedsLimit(_) => GitlabError::TooLarge { step },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                GitlabError::Timeout
            }
            ureq::Error::Io(io) => GitlabError::Unreachable(io.kind().to_string()),
            ureq::Error::HostNotFound => GitlabError::Unreachable("host not found".into()),
            ureq::Error::ConnectionFailed => GitlabError::Unreachable("connection failed".into()),
            other => GitlabError::Unreachable(other.to_string()),
        }
    }

    fn read(
        step: &'static str,
        mut response: ureq::http::Response<ureq::Body>,
        cap: u64,
    ) -> Result<Answer, GitlabError> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (x_next_page, link, retry_after) =
            (header("x-next-page"), header("link"), header("retry-after"));
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(cap)
            .read_to_vec()
            .map_err(|e| Self::map_ureq(step, e))?;
        Ok(Answer {
            status,
            body,
            x_next_page,
            link,
            retry_after,
        })
    }

    /// A GET with the access token, retried a bounded number of times on 429 and 5xx.
    fn get(
        &self,
        step: &'static str,
        url: &str,
        token: &str,
        cap: u64,
        deadline: Instant,
    ) -> Result<Answer, GitlabError> {
        let mut attempt = 0;
        loop {
            let timeout = Self::time_left(deadline)?;
            let response = self
                .agent
                .get(url)
                .header("Authorization", &format!("Bearer {token}"))
                .header("Accept", "application/json")
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call()
                .map_err(|e| Self::map_ureq(step, e))?;
            let answer = Self::read(step, response, cap)?;
            let wait = match answer.status {
                200..=299 => return Ok(answer),
                429 => {
                    let secs = retry_after_secs(answer.retry_after.as_deref());
                    let wait = Duration::from_secs(secs.unwrap_or(1));
                    if attempt >= MAX_RETRIES
                        || wait > MAX_RETRY_WAIT
                        || Instant::now() + wait >= deadline
                    {
                        return Err(GitlabError::RateLimited {
                            step,
                            retry_after: secs,
                        });
                    }
                    wait
                }
                500..=599 if attempt < 1 => Duration::from_millis(200),
                status => return Err(status_error(step, status, &answer.body)),
            };
            attempt += 1;
            std::thread::sleep(wait);
        }
    }

    /// Exchanges the authorization code (client secret in the body, PKCE verifier) for an
    /// access token. Never retried: a code is single-use.
    pub fn exchange_code(
        &self,
        s: &GitlabSettings,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
        deadline: Instant,
    ) -> Result<String, GitlabError> {
        let bad_url = |detail: String| GitlabError::Malformed {
            step: "token",
            detail,
        };
        let client = BasicClient::new(ClientId::new(s.application_id.clone()))
            .set_client_secret(ClientSecret::new(s.secret.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(
                TokenUrl::new(format!("{}/oauth/token", s.url))
                    .map_err(|e| bad_url(e.to_string()))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.to_string()).map_err(|e| bad_url(e.to_string()))?,
            );
        let http = |request: HttpRequest| -> Result<HttpResponse, AdapterError> {
            self.send_token_request(request, deadline)
                .map_err(AdapterError)
        };
        let result = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request(&http);
        match result {
            Ok(token) => Ok(token.access_token().secret().clone()),
            Err(RequestTokenError::ServerResponse(err)) => {
                Err(GitlabError::Denied(err.error().to_string()))
            }
            Err(RequestTokenError::Request(AdapterError(e))) => Err(e),
            Err(RequestTokenError::Parse(e, _)) => Err(GitlabError::Malformed {
                step: "token",
                detail: e.to_string(),
            }),
            Err(RequestTokenError::Other(detail)) => Err(GitlabError::Malformed {
                step: "token",
                detail,
            }),
        }
    }

    /// The oauth2 crate's HTTP call, through this agent.
    fn send_token_request(
        &self,
        request: HttpRequest,
        deadline: Instant,
    ) -> Result<HttpResponse, GitlabError> {
        let timeout = Self::time_left(deadline)?;
        let (parts, body) = request.into_parts();
        let mut builder = self.agent.post(parts.uri.to_string());
        for (name, value) in &parts.headers {
            if let Ok(v) = value.to_str() {
                builder = builder.header(name.as_str(), v);
            }
        }
        let response = builder
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(&body[..])
            .map_err(|e| Self::map_ureq("token", e))?;
        let answer = Self::read("token", response, MAX_SMALL_BODY)?;
        match answer.status {
            200..=299 | 400 | 401 => {}
            429 => {
                return Err(GitlabError::RateLimited {
                    step: "token",
                    retry_after: retry_after_secs(answer.retry_after.as_deref()),
                })
            }
            status => return Err(status_error("token", status, &answer.body)),
        }
        let mut response = HttpResponse::new(answer.body);
        *response.status_mut() =
            oauth2::http::StatusCode::from_u16(answer.status).map_err(|e| {
                GitlabError::Malformed {
                    step: "token",
                    detail: e.to_string(),
                }
            })?;
        response.headers_mut().insert(
            oauth2::http::header::CONTENT_TYPE,
            oauth2::http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    pub fn current_user(
        &self,
        s: &GitlabSettings,
        token: &str,
        deadline: Instant,
    ) -> Result<GitlabUser, GitlabError> {
        let answer = self.get(
            "user",
            &format!("{}/api/v4/user", s.url),
            token,
            MAX_SMALL_BODY,
            deadline,
        )?;
        parse_user(&answer.body)
    }

    /// Every group the user belongs to, directly or through a parent group (`full_path`),
    /// following the pagination to its end (at most [`MAX_PAGES`]).
    pub fn user_groups(
        &self,
        s: &GitlabSettings,
        token: &str,
        deadline: Instant,
    ) -> Result<Vec<String>, GitlabError> {
        let first = format!("{}/api/v4/groups?min_access_level=10&per_page=100", s.url);
        let mut url = first.clone();
        let mut groups = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self.get("groups", &url, token, MAX_PAGE_BODY, deadline)?;
            groups.extend(parse_groups_page(&answer.body)?);
            match next_page(answer.x_next_page.as_deref(), answer.link.as_deref()) {
                None => {
                    groups.sort();
                    groups.dedup();
                    return Ok(groups);
                }
                Some(NextPage::Number(n)) => url = format!("{first}&page={n}"),
                Some(NextPage::Url(next)) if same_gitlab(&s.url, &next) => url = next,
                Some(NextPage::Url(_)) => {
                    return Err(GitlabError::Malformed {
                        step: "groups",
                        detail: "the next-page link points away from the configured GitLab".into(),
                    })
                }
            }
        }
        Err(GitlabError::TooManyPages)
    }
}

fn status_error(step: &'static str, status: u16, body: &[u8]) -> GitlabError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let detail = if text.contains("insufficient_scope") {
        "the token lacks the scope this call needs (read_api for groups)".to_string()
    } else if status == 401 {
        "the access token was refused".to_string()
    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        v.get("error")
            .or_else(|| v.get("message"))
            .map(|m| m.to_string().chars().take(200).collect())
            .unwrap_or_default()
    } else {
        String::new()
    };
    GitlabError::Status {
        step,
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    fn settings(url: &str) -> GitlabSettings {
        GitlabSettings {
            url: url.into(),
            application_id: "app id".into(),
            secret: "s3cret".into(),
        }
    }

    #[test]
    fn pkce_matches_the_gitlab_docs_vector_and_alphabet() {
        assert_eq!(
            pkce_challenge("ks02i3jdikdo2k0dkfodf3m39rjfjsdk0wk349rj3jrhf"),
            "2i0WFA-0AerkjQm4X4oDEhqA17QIAKNjXpagHBXmO_U"
        );
        let p = new_pkce();
        assert!((43..=128).contains(&p.verifier.len()));
        assert!(p
            .verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)));
        assert_eq!(pkce_challenge(&p.verifier), p.challenge);
    }

    #[test]
    fn authorize_url_has_every_parameter_encoded() {
        let url = authorize_url(
            &settings("https://h/gitlab"),
            "http://lg/oauth2/callback/gitlab",
            "read_api",
            "st&x",
            "ch",
        );
        assert!(
            url.starts_with("https://h/gitlab/oauth/authorize?client_id=app%20id&"),
            "{url}"
        );
        for part in [
            "redirect_uri=http%3A%2F%2Flg%2Foauth2%2Fcallback%2Fgitlab",
            "response_type=code",
            "scope=read%5Fapi",
            "state=st%26x",
            "code_challenge=ch",
            "code_challenge_method=S256",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        assert!(!url.contains("s3cret"));
    }

    #[test]
    fn secret_is_hidden_from_debug_output() {
        assert!(!format!("{:?}", settings("https://h")).contains("s3cret"));
    }

    #[test]
    fn user_parsing() {
        let u = parse_user(br#"{"id":5,"username":"ann","name":"Ann","email":null,"state":"active","bot":false,"extra":1}"#).unwrap();
        assert_eq!(
            (u.id, u.username.as_str(), u.email.clone(), u.state.as_str()),
            (5, "ann", None, "active")
        );
        assert!(parse_user(br#"{"id":"5","username":"ann","state":"active"}"#).is_err());
        assert!(parse_user(br#"{"username":"ann","state":"active"}"#).is_err());
        assert!(
            parse_user(br#"{"id":5,"username":"ann"}"#).is_err(),
            "state is required"
        );
        assert!(parse_user(b"{\"id\": 1,").is_err());
        assert!(
            parse_user(br#"{"id":5,"username":"b","state":"blocked","bot":true}"#)
                .unwrap()
                .bot
        );
    }

    #[test]
    fn groups_page_parsing() {
        assert_eq!(
            parse_groups_page(br#"[{"id":1,"full_path":"acme"},{"full_path":"acme/x"}]"#).unwrap(),
            vec!["acme", "acme/x"]
        );
        assert_eq!(parse_groups_page(b"[]").unwrap(), Vec::<String>::new());
        assert!(parse_groups_page(br#"{"message":"x"}"#).is_err());
        assert!(parse_groups_page(br#"[{"id":1}]"#).is_err());
    }

    #[test]
    fn link_header_and_next_page() {
        let link = r#"<https://g/api/v4/groups?page=1>; rel="prev", <https://g/api/v4/groups?page=3&a=b>; rel="next",<https://g/x>; rel="first last""#;
        let rels = parse_link_header(link);
        assert_eq!(rels.len(), 4);
        assert_eq!(
            next_page(None, Some(link)),
            Some(NextPage::Url("https://g/api/v4/groups?page=3&a=b".into()))
        );
        assert_eq!(next_page(Some("3"), Some(link)), Some(NextPage::Number(3)));
        assert_eq!(next_page(Some(""), None), None);
        assert_eq!(next_page(Some("junk"), Some("garbage")), None);
        assert_eq!(
            next_page(Some(""), Some(r#"<https://g/x>; rel="prev""#)),
            None
        );
        assert!(parse_link_header("<<>>;;rel=").len() <= 1);
    }

    #[test]
    fn retry_after_and_origins() {
        assert_eq!(retry_after_secs(Some(" 7 ")), Some(7));
        assert_eq!(
            retry_after_secs(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert!(same_gitlab(
            "https://g.example/gitlab",
            "https://G.example:443/gitlab/api/v4/groups?page=2"
        ));
        assert!(!same_gitlab(
            "https://g.example/gitlab",
            "https://g.example/other"
        ));
        assert!(!same_gitlab(
            "https://g.example",
            "https://evil.example/api"
        ));
        assert!(!same_gitlab(
            "http://127.0.0.1:80",
            "http://127.0.0.1:8080/x"
        ));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_clearly() {
        let path = std::env::temp_dir().join(format!("labgate-bad-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate").unwrap();
        let err = Client::new(Some(&path)).err().expect("refused");
        assert!(err.starts_with("--ca-file"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert!(Client::new(Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }

    /// A server answering each connection with the next canned response (after a delay).
    fn canned(responses: Vec<(Duration, String)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (delay, response) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                std::thread::sleep(delay);
                let mut stream = stream;
                let _ = stream.write_all(response.replace("{addr}", &addr.to_string()).as_bytes());
            }
        });
        format!("http://{addr}")
    }

    fn ok(body: &str, extra: &str) -> String {
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn groups_follow_x_next_page_and_links_then_stop() {
        let url = canned(vec![
            (
                Duration::ZERO,
                ok(r#"[{"full_path":"a"}]"#, "X-Next-Page: 2\r\n"),
            ),
            (
                Duration::ZERO,
                ok(
                    r#"[{"full_path":"b"}]"#,
                    "X-Next-Page: \r\nLink: <http://{addr}/api/v4/groups?page=3>; rel=\"next\"\r\n",
                ),
            ),
            (
                Duration::ZERO,
                ok(r#"[{"full_path":"c"}]"#, "X-Next-Page: \r\n"),
            ),
        ]);
        let groups = Client::new(None)
            .unwrap()
            .user_groups(&settings(&url), "t", soon())
            .unwrap();
        assert_eq!(groups, vec!["a", "b", "c"]);
    }

    #[test]
    fn a_next_link_to_another_host_is_not_followed() {
        let url = canned(vec![(
            Duration::ZERO,
            ok(
                "[]",
                "Link: <http://evil.example/api/v4/groups?page=2>; rel=\"next\"\r\n",
            ),
        )]);
        let err = Client::new(None)
            .unwrap()
            .user_groups(&settings(&url), "t", soon())
            .unwrap_err();
        assert!(matches!(err, GitlabError::Malformed { .. }), "{err}");
    }

    #[test]
    fn redirects_are_not_followed() {
        let url = canned(vec![(Duration::ZERO, "HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into())]);
        let err = Client::new(None)
            .unwrap()
            .current_user(&settings(&url), "t", soon())
            .unwrap_err();
        assert!(
            matches!(err, GitlabError::Status { status: 302, .. }),
            "{err}"
        );
    }

    #[test]
    fn rate_limit_with_retry_after_is_waited_then_retried() {
        let user = r#"{"id":1,"username":"a","name":"A","state":"active"}"#;
        let url = canned(vec![
            (Duration::ZERO, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 12\r\nConnection: close\r\n\r\nRetry later\n".into()),
            (Duration::ZERO, ok(user, "")),
        ]);
        let u = Client::new(None)
            .unwrap()
            .current_user(&settings(&url), "t", soon())
            .unwrap();
        assert_eq!(u.username, "a");
    }

    #[test]
    fn a_long_retry_after_is_refused_at_once() {
        let url = canned(vec![(Duration::ZERO, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into())]);
        let started = Instant::now();
        let err = Client::new(None)
            .unwrap()
            .current_user(&settings(&url), "t", soon())
            .unwrap_err();
        assert_eq!(
            err,
            GitlabError::RateLimited {
                step: "user",
                retry_after: Some(60)
            }
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_deadline_bounds_a_slow_gitlab() {
        let url = canned(vec![(Duration::from_secs(5), ok("{}", ""))]);
        let started = Instant::now();
        let err = Client::new(None)
            .unwrap()
            .current_user(
                &settings(&url),
                "t",
                Instant::now() + Duration::from_millis(500),
            )
            .unwrap_err();
        assert_eq!(err, GitlabError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn oversized_answers_are_refused() {
        let big = format!("[{}]", vec![r#"{"full_path":"x"}"#; 300_000].join(","));
        let url = canned(vec![(Duration::ZERO, ok(&big, ""))]);
        let err = Client::new(None)
            .unwrap()
            .user_groups(&settings(&url), "t", soon())
            .unwrap_err();
        assert_eq!(err, GitlabError::TooLarge { step: "groups" });
    }

    #[test]
    fn token_exchange_sends_verifier_and_reads_the_token() {
        let url = canned(vec![(
            Duration::ZERO,
            ok(
                r#"{"access_token":"abc","token_type":"bearer","expires_in":7200}"#,
                "",
            ),
        )]);
        let token = Client::new(None)
            .unwrap()
            .exchange_code(
                &settings(&url),
                "http://lg/cb",
                "code",
                "verifier-verifier-verifier-verifier-verifier",
                soon(),
            )
            .unwrap();
        assert_eq!(token, "abc");
    }

    #[test]
    fn token_errors_are_reported_without_the_code() {
        let body = r#"{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}"#;
        let url = canned(vec![(Duration::ZERO, format!("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()))]);
        let err = Client::new(None)
            .unwrap()
            .exchange_code(
                &settings(&url),
                "http://lg/cb",
                "the-secret-code",
                "verifier-verifier-verifier-verifier-verifier",
                soon(),
            )
            .unwrap_err();
        assert_eq!(err, GitlabError::Denied("invalid_grant".into()));
        assert!(!err.to_string().contains("the-secret-code"));
    }
}
