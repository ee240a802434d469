//! The HTTP side of the GitLab client: ureq 3 agents configured once at start (timeouts, no
//! redirects, statuses read rather than turned into errors, TLS roots, proxies), the token call
//! through the `oauth2` crate, and the GETs with their bounded retries and pagination.

use super::parse::{clean, parse_userinfo, redact, retry_after_secs, retry_wait, status_error};
use super::proxy::ProxyEnv;
use super::{
    GitlabError, GitlabSettings, Tokens, Userinfo, CALL_TIMEOUT, CONNECT_TIMEOUT, MAX_SMALL_BODY,
    MAX_USERINFO_BODY,
};
use oauth2::basic::{BasicClient, BasicTokenType};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, TokenResponse,
    TokenUrl,
};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    ConnectProxyConnector, Connector, NextTimeout, RustlsConnector,
};

/// Below this much time before the deadline no call is started.
const MIN_CALL_TIME: Duration = Duration::from_millis(50);

/// The GitLab client: one agent per route (direct, or through each configured proxy), all
/// configured alike. Built once at start; clones share the agents and their connection pools.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    direct: ureq::Agent,
    /// (proxy value from the environment, agent using it).
    proxied: Vec<(String, ureq::Agent)>,
    proxies: ProxyEnv,
    /// The `oauth2` client of the last code exchange, for the next one with the same GitLab,
    /// application and redirect URI: building it parses two URLs.
    code_client: std::sync::Mutex<Option<(CodeClientKey, Arc<OauthClient>)>>,
}

/// The `oauth2` crate's client for GitLab's token endpoint (see [`oauth_client`]).
type OauthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// What a code exchange's `oauth2` client is built from.
#[derive(PartialEq, Eq)]
struct CodeClientKey {
    settings: GitlabSettings,
    redirect_uri: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("proxies", &self.inner.proxies)
            .finish_non_exhaustive()
    }
}

/// One answer read from GitLab: the status and the headers labgate uses; the body, within its
/// cap, is read into a [`BodyBuf`].
struct Answer {
    status: u16,
    retry_after: Option<String>,
    location: Option<String>,
    content_type: Option<String>,
    /// `X-Next-Page` and `Link`: where the next page of a listing is.
    next_page: Option<String>,
    link: Option<String>,
}

/// How a GET proves who calls.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// An OAuth access token: `Authorization: Bearer`.
    Bearer(&'a str),
    /// A personal or group access token: `PRIVATE-TOKEN`.
    AccessToken(&'a str),
}

impl Credential<'_> {
    fn secret(&self) -> &str {
        match self {
            Credential::Bearer(t) | Credential::AccessToken(t) => t,
        }
    }
}

/// One page of a GitLab listing, or a single object: the body and where the next page is.
pub struct Page {
    pub body: Vec<u8>,
    pub next: Option<super::NextPage>,
}

/// A response body, read into a buffer sized once from its `Content-Length` and grown by
/// doubling up to the call's cap: a body is never held beyond the cap (plus one byte, to see
/// that it goes on), whatever the server sends or declares.
#[derive(Default)]
struct BodyBuf {
    bytes: Vec<u8>,
    len: usize,
}

impl BodyBuf {
    /// Smallest buffer allocated, bytes.
    const MIN: usize = 16 * 1024;

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Replaces the body with what `reader` gives up to its end. The buffer is first sized for
    /// `expected` bytes (the `Content-Length`, if any) and then grows by doubling, never beyond
    /// `cap + 1` bytes (the reader itself refuses more than `cap`).
    fn fill(
        &mut self,
        reader: &mut impl Read,
        expected: Option<u64>,
        cap: u64,
    ) -> std::io::Result<()> {
        let most = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
        if let Some(expected) = expected {
            // One byte more, so that the end is seen without growing.
            let wanted = usize::try_from(expected.saturating_add(1)).unwrap_or(usize::MAX);
            if wanted > self.bytes.len() {
                self.bytes.resize(wanted.min(most), 0);
            }
        }
        self.len = 0;
        loop {
            if self.len == self.bytes.len() {
                let grown = (self.bytes.len().saturating_mul(2)).clamp(Self::MIN, most);
                if grown == self.bytes.len() {
                    return Ok(());
                }
                self.bytes.resize(grown, 0);
            }
            match reader.read(&mut self.bytes[self.len..]) {
                Ok(0) => return Ok(()),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Client {
    /// Builds the agents: TLS verified against the bundled Mozilla roots plus the certificates
    /// of `ca_file`, proxies from the environment (see [`super::proxy`]). The error names the
    /// flag or variable at fault and what to do.
    pub fn new(ca_file: Option<&Path>) -> Result<Client, String> {
        Client::with_proxy_env(ca_file, ProxyEnv::from_process())
    }

    /// As [`Client::new`], with the proxy settings given rather than read from the environment.
    pub fn with_proxy_env(ca_file: Option<&Path>, proxies: ProxyEnv) -> Result<Client, String> {
        let mut tls = TlsConfig::builder();
        if let Some(path) = ca_file {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| format!("--ca-file {shown}: {e}"))?;
            let roots = roots_with(&pem).map_err(|e| format!("--ca-file {shown}: {e}"))?;
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        let tls = tls.build();
        let mut proxied: Vec<(String, ureq::Agent)> = Vec::new();
        for (name, value) in proxies.configured() {
            if proxied.iter().any(|(v, _)| v == value) {
                continue;
            }
            // The value may hold credentials: the messages never repeat it.
            let proxy = ureq::Proxy::new(value).map_err(|_| {
                format!("{name}: not a valid proxy URL (expected http://host:port)")
            })?;
            if !matches!(
                proxy.protocol(),
                ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https
            ) {
                return Err(format!(
                    "{name}: only http:// and https:// proxies are supported"
                ));
            }
            proxied.push((value.to_string(), agent(&tls, Some(proxy))));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                direct: agent(&tls, None),
                proxied,
                proxies,
                code_client: std::sync::Mutex::new(None),
            }),
        })
    }

    fn agent_for(&self, url: &str) -> &ureq::Agent {
        let inner = &*self.inner;
        match inner.proxies.proxy_for(url) {
            None => &inner.direct,
            // Always found: there is one agent per configured proxy value.
            Some(proxy) => inner
                .proxied
                .iter()
                .find(|(value, _)| value == proxy)
                .map_or(&inner.direct, |(_, agent)| agent),
        }
    }

    /// Exchanges the authorization code for tokens: `client_id` and `client_secret` in the
    /// form body (`client_secret_post`, which GitLab accepts like Basic and which survives
    /// secrets with characters Basic would need escaped), `code`, `redirect_uri` and the PKCE
    /// `code_verifier`. Never retried: a code is single-use.
    pub fn exchange_code(
        &self,
        s: &GitlabSettings,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
        deadline: Instant,
    ) -> Result<Tokens, GitlabError> {
        let started = Instant::now();
        let result = self.exchange(s, redirect_uri, code, verifier, deadline);
        counted("token", started, &result);
        result.map_err(|e| redact_error(e, &[code, verifier, &s.secret]))
    }

    /// The refresh grant: a new access token and a new refresh token for `refresh_token`, with
    /// the client credentials in the body as [`Client::exchange_code`] sends them. Never
    /// retried here: GitLab may have rotated the pair before an error reached labgate, and a
    /// second try would then be refused as if the person had lost access. A refusal of the
    /// grant is [`GitlabError::Denied`] (see [`GitlabError::grant_refused`]).
    pub fn refresh(
        &self,
        s: &GitlabSettings,
        refresh_token: &str,
        deadline: Instant,
    ) -> Result<Tokens, GitlabError> {
        let result = (|| {
            let client = oauth_client(s)?;
            let http = TokenHttp {
                client: self,
                deadline,
            };
            let answer = client
                .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
                .request(&http);
            read_token_answer(answer)
        })();
        result.map_err(|e| redact_error(e, &[refresh_token, &s.secret]))
    }

    fn exchange(
        &self,
        s: &GitlabSettings,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
        deadline: Instant,
    ) -> Result<Tokens, GitlabError> {
        let client = self.code_client(s, redirect_uri)?;
        let http = TokenHttp {
            client: self,
            deadline,
        };
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request(&http);
        read_token_answer(answer)
    }

    /// The `oauth2` client for exchanging codes of `s`'s application redirected to
    /// `redirect_uri`: the one of the last exchange when both are the same, else built anew.
    fn code_client(
        &self,
        s: &GitlabSettings,
        redirect_uri: &str,
    ) -> Result<Arc<OauthClient>, GitlabError> {
        let held = || {
            self.inner
                .code_client
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        if let Some((key, client)) = held().as_ref() {
            if key.settings == *s && key.redirect_uri == redirect_uri {
                return Ok(Arc::clone(client));
            }
        }
        let redirect_url = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| bad_token_url("the redirect URI", e))?;
        let client = Arc::new(oauth_client(s)?.set_redirect_uri(redirect_url));
        let key = CodeClientKey {
            settings: s.clone(),
            redirect_uri: redirect_uri.to_string(),
        };
        *held() = Some((key, Arc::clone(&client)));
        Ok(client)
    }

    /// The oauth2 crate's one HTTP call, through this client's agent.
    fn post_token(
        &self,
        request: HttpRequest,
        deadline: Instant,
    ) -> Result<HttpResponse, GitlabError> {
        let timeout = time_left(deadline)?;
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let mut builder = self.agent_for(&url).post(&url);
        for (name, value) in &parts.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let response = builder
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(&body[..])
            .map_err(|e| map_ureq("token", e))?;
        let mut body = BodyBuf::default();
        let answer = read("token", response, MAX_SMALL_BODY, &mut body)?;
        match answer.status {
            200 => {}
            // RFC 6749 §5.2 errors: the oauth2 crate reads them.
            400 | 401 if is_oauth_error(body.as_slice()) => {}
            429 => {
                return Err(GitlabError::RateLimited {
                    step: "token",
                    retry_after: retry_after_secs(answer.retry_after.as_deref(), now_unix()),
                })
            }
            status => {
                return Err(status_error(
                    "token",
                    status,
                    answer.location.as_deref(),
                    body.as_slice(),
                ))
            }
        }
        let mut builder = oauth2::http::Response::builder().status(answer.status);
        if let Some(content_type) = &answer.content_type {
            builder = builder.header(oauth2::http::header::CONTENT_TYPE, content_type.as_str());
        }
        builder
            .body(body.as_slice().to_vec())
            .map_err(|e| GitlabError::Malformed {
                step: "token",
                detail: clean(&e.to_string(), 200),
            })
    }

    /// `GET <url>/oauth/userinfo`: who signed in and their groups, in one call that needs only
    /// the `openid` scope. A 403 means the token lacks `openid` (see
    /// [`GitlabError::configuration_fix`]); a 401, that GitLab no longer accepts the token.
    pub fn userinfo(
        &self,
        s: &GitlabSettings,
        token: &str,
        deadline: Instant,
    ) -> Result<Userinfo, GitlabError> {
        let started = Instant::now();
        let url = format!("{}/oauth/userinfo", s.base());
        let mut body = BodyBuf::default();
        let result = self
            .get(
                "userinfo",
                &url,
                Credential::Bearer(token),
                MAX_USERINFO_BODY,
                deadline,
                &mut body,
            )
            .and_then(|_| parse_userinfo(body.as_slice()));
        counted("userinfo", started, &result);
        result
    }

    /// `GET url` with a personal or group access token (`PRIVATE-TOKEN`), retried like every
    /// GET: the body (within `cap` bytes) and where the next page is (`X-Next-Page`, else the
    /// `Link` with `rel="next"`). Any status but 2xx is an error; the token never appears in it.
    pub fn access_token_get(
        &self,
        step: &'static str,
        url: &str,
        token: &str,
        cap: u64,
        deadline: Instant,
    ) -> Result<Page, GitlabError> {
        let mut body = BodyBuf::default();
        let answer = self.get(
            step,
            url,
            Credential::AccessToken(token),
            cap,
            deadline,
            &mut body,
        )?;
        let next = super::next_page(answer.next_page.as_deref(), answer.link.as_deref());
        body.bytes.truncate(body.len);
        Ok(Page {
            body: body.bytes,
            next,
        })
    }

    /// One GET without credentials for the connection check: whatever the status, the answer
    /// (within [`MAX_SMALL_BODY`]); `Err` says why GitLab could not be reached and what to fix.
    pub fn probe_get(&self, url: &str, deadline: Instant) -> Result<Probe, String> {
        let started = Instant::now();
        let result = self.probe_get_uncounted(url, deadline);
        crate::metrics::gitlab_call("probe", probe_outcome(&result), started.elapsed());
        result
    }

    fn probe_get_uncounted(&self, url: &str, deadline: Instant) -> Result<Probe, String> {
        let timeout = time_left(deadline).map_err(|_| reach_timeout())?;
        let response = self
            .agent_for(url)
            .get(url)
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|e| reach_problem(url, &e))?;
        Probe::read(url, response)
    }

    /// The token request of the connection check: the authorization-code grant with a random
    /// code that GitLab never issued, and the client credentials in the body as a sign-in sends
    /// them. GitLab checks the client before the code, so the answer tells whether it accepts
    /// the application ID and secret; nothing can be redeemed.
    pub fn probe_token(
        &self,
        s: &GitlabSettings,
        redirect_uri: &str,
        deadline: Instant,
    ) -> Result<Probe, String> {
        let started = Instant::now();
        let result = self.probe_token_uncounted(s, redirect_uri, deadline);
        crate::metrics::gitlab_call("probe-token", probe_outcome(&result), started.elapsed());
        result
    }

    fn probe_token_uncounted(
        &self,
        s: &GitlabSettings,
        redirect_uri: &str,
        deadline: Instant,
    ) -> Result<Probe, String> {
        let url = format!("{}/oauth/token", s.base());
        let timeout = time_left(deadline).map_err(|_| reach_timeout())?;
        let code = crate::crypto::random_hex(20);
        let response = self
            .agent_for(&url)
            .post(&url)
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send_form([
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri),
                ("client_id", s.application_id.as_str()),
                ("client_secret", s.secret.as_str()),
            ])
            .map_err(|e| redact(reach_problem(&url, &e), &[&s.secret]))?;
        let mut probe = Probe::read(&url, response)?;
        // GitLab never echoes the secret; a hostile server might.
        if !s.secret.is_empty()
            && probe
                .body
                .windows(s.secret.len())
                .any(|w| w == s.secret.as_bytes())
        {
            probe.body = b"{}".to_vec();
        }
        Ok(probe)
    }

    /// One GET with the access token, retried after a 429 (within `Retry-After`, the caps and
    /// the deadline) or once after a 5xx; any other status than 2xx is an error. The body of
    /// the 2xx answer is left in `body`.
    fn get(
        &self,
        step: &'static str,
        url: &str,
        credential: Credential<'_>,
        cap: u64,
        deadline: Instant,
        body: &mut BodyBuf,
    ) -> Result<Answer, GitlabError> {
        let mut attempt = 0;
        let (header, value) = match credential {
            Credential::Bearer(token) => ("Authorization", format!("Bearer {token}")),
            Credential::AccessToken(token) => ("PRIVATE-TOKEN", token.to_string()),
        };
        loop {
            let timeout = time_left(deadline)?;
            let response = self
                .agent_for(url)
                .get(url)
                .header(header, &value)
                .header("Accept", "application/json")
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call()
                .map_err(|e| redact_error(map_ureq(step, e), &[credential.secret()]))?;
            let answer = read(step, response, cap, body)?;
            if (200..300).contains(&answer.status) {
                return Ok(answer);
            }
            let retry_after = retry_after_secs(answer.retry_after.as_deref(), now_unix());
            let left = deadline.saturating_duration_since(Instant::now());
            match retry_wait(answer.status, retry_after, attempt, left) {
                Some(wait) => {
                    log::debug!(
                        "GitLab {step}: HTTP {}, retrying in {} ms",
                        answer.status,
                        wait.as_millis()
                    );
                    attempt += 1;
                    std::thread::sleep(wait);
                }
                None if answer.status == 429 => {
                    return Err(GitlabError::RateLimited { step, retry_after })
                }
                None => {
                    let error = status_error(
                        step,
                        answer.status,
                        answer.location.as_deref(),
                        body.as_slice(),
                    );
                    return Err(redact_error(error, &[credential.secret()]));
                }
            }
        }
    }
}

/// Counts a call of a sign-in at `endpoint` that started at `started`, by its outcome.
fn counted<T>(endpoint: &'static str, started: Instant, result: &Result<T, GitlabError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    crate::metrics::gitlab_call(endpoint, outcome, started.elapsed());
}

/// The outcome of a connection check's call: whether GitLab answered at all (its status is
/// the check's to judge).
fn probe_outcome<T>(result: &Result<T, String>) -> &'static str {
    if result.is_ok() {
        "answered"
    } else {
        "unreachable"
    }
}

/// The oauth2 crate's HTTP client: the token POST through labgate's agent, bounded by the
/// sign-in's deadline.
struct TokenHttp<'a> {
    client: &'a Client,
    deadline: Instant,
}

impl oauth2::SyncHttpClient for TokenHttp<'_> {
    type Error = AdapterError;

    fn call(&self, request: HttpRequest) -> Result<HttpResponse, AdapterError> {
        self.client
            .post_token(request, self.deadline)
            .map_err(AdapterError)
    }
}

/// A [`GitlabError`] carried through the oauth2 crate.
#[derive(Debug)]
struct AdapterError(GitlabError);

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AdapterError {}

/// The oauth2 crate's client for GitLab's token endpoint, with the client credentials in the
/// request body.
fn oauth_client(s: &GitlabSettings) -> Result<OauthClient, GitlabError> {
    let token_url = TokenUrl::new(format!("{}/oauth/token", s.base()))
        .map_err(|e| bad_token_url("the GitLab URL", e))?;
    Ok(BasicClient::new(ClientId::new(s.application_id.clone()))
        .set_client_secret(ClientSecret::new(s.secret.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url))
}

fn bad_token_url(what: &str, e: oauth2::url::ParseError) -> GitlabError {
    GitlabError::Malformed {
        step: "token",
        detail: format!("{what}: {e}"),
    }
}

/// The token endpoint's answer as labgate keeps it: a bearer access token (required), the
/// refresh token and the scope when GitLab sent them; GitLab's refusal as
/// [`GitlabError::Denied`] with its `error` and description.
fn read_token_answer(
    answer: Result<
        oauth2::basic::BasicTokenResponse,
        RequestTokenError<AdapterError, oauth2::basic::BasicErrorResponse>,
    >,
) -> Result<Tokens, GitlabError> {
    let malformed = |detail: String| GitlabError::Malformed {
        step: "token",
        detail,
    };
    match answer {
        Ok(token) => {
            if *token.token_type() != BasicTokenType::Bearer {
                let kind = clean(token.token_type().as_ref(), 40);
                return Err(malformed(format!("token_type {kind:?} is not bearer")));
            }
            let access = token.access_token().secret();
            if access.is_empty() {
                return Err(malformed("empty access_token".into()));
            }
            Ok(Tokens {
                access: access.clone(),
                refresh: token
                    .refresh_token()
                    .map(|r| r.secret().clone())
                    .filter(|r| !r.is_empty()),
                scopes: token
                    .scopes()
                    .map(|list| list.iter().map(|scope| scope.to_string()).collect()),
            })
        }
        Err(RequestTokenError::ServerResponse(err)) => {
            let mut denied = clean(err.error().as_ref(), 80);
            if let Some(description) = err.error_description() {
                denied.push_str(": ");
                denied.push_str(&clean(description, 200));
            }
            Err(GitlabError::Denied(denied))
        }
        Err(RequestTokenError::Request(AdapterError(e))) => Err(e),
        Err(RequestTokenError::Parse(e, _body)) => {
            Err(malformed(json_problem(&e.path().to_string(), e.inner())))
        }
        Err(RequestTokenError::Other(detail)) => Err(malformed(clean(&detail, 200))),
    }
}

fn agent(tls: &TlsConfig, proxy: Option<ureq::Proxy>) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(CALL_TIMEOUT))
        // Explicit, also when `None`: ureq's default would read the environment itself.
        .proxy(proxy)
        .tls_config(tls.clone())
        .user_agent(format!("labgate/{}", env!("CARGO_PKG_VERSION")))
        .build();
    // ureq's default chain, with labgate's TCP transport (see [`super::transport`]) in place
    // of ureq's; SOCKS proxies are refused before an agent is built.
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(super::transport::Tcp)
            .chain(RustlsConnector::default());
    ureq::Agent::with_parts(config, connector, LiteralFirstResolver::default())
}

/// How long a resolved host name is reused. `getaddrinfo` does not tell the record's TTL; 30 s
/// is what JVMs cache a successful lookup for, short enough for a GitLab moved to a new
/// address, long enough to serve a sign-in's five calls and those close to it.
const NAME_TTL: Duration = Duration::from_secs(30);
/// Host names kept at most (labgate talks to one GitLab, perhaps through one proxy).
const MAX_NAMES: usize = 16;

/// ureq's resolver, minus its thread on most calls.
///
/// ureq resolves the host before every call, also when it then reuses a pooled connection, and
/// because labgate sets timeouts it does so on a new thread (a slow DNS must not outlast them):
/// a thread per GitLab call, five per sign-in. An IP literal needs no lookup: it is read here,
/// on the caller's thread. A host name goes to ureq's resolver and its thread, and the answer
/// is reused for [`NAME_TTL`] (failures are not kept). (The resolver API is among ureq's
/// `unversioned` ones: check it on ureq upgrades.)
#[derive(Debug)]
struct LiteralFirstResolver<R = DefaultResolver> {
    inner: R,
    ttl: Duration,
    names: std::sync::Mutex<std::collections::HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl Default for LiteralFirstResolver {
    fn default() -> Self {
        LiteralFirstResolver::with(DefaultResolver::default(), NAME_TTL)
    }
}

impl<R: Resolver> LiteralFirstResolver<R> {
    fn with(inner: R, ttl: Duration) -> Self {
        LiteralFirstResolver {
            inner,
            ttl,
            names: Default::default(),
        }
    }

    fn names(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Instant, Vec<SocketAddr>)>>
    {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: Resolver> Resolver for LiteralFirstResolver<R> {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // labgate leaves ureq's IP family at "any": every address is wanted.
        if let Some(addr) = ip_literal(uri) {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        // Scheme, host and port, as the URI gives them (the default port is the scheme's).
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        )
        .to_ascii_lowercase();
        let now = Instant::now();
        if let Some((at, kept)) = self.names().get(&key) {
            if now.duration_since(*at) < self.ttl {
                let mut addrs = self.empty();
                for addr in kept {
                    addrs.push(*addr);
                }
                return Ok(addrs);
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut names = self.names();
        if names.len() >= MAX_NAMES {
            names.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if names.len() >= MAX_NAMES {
                names.clear();
            }
        }
        names.insert(key, (now, addrs.iter().copied().collect()));
        Ok(addrs)
    }
}

/// The socket address of a URI whose host is an IPv4 or bracketed IPv6 literal (port given, or
/// the scheme's default); `None` for a host name or an unknown scheme.
fn ip_literal(uri: &ureq::http::Uri) -> Option<SocketAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some(s)) if s.eq_ignore_ascii_case("https") => 443,
        (None, Some(s)) if s.eq_ignore_ascii_case("http") => 80,
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The bundled Mozilla roots plus every certificate in `pem`, each checked to be usable as a
/// trust anchor (ureq would silently skip a bad one). `RootCerts::new_with_certs` replaces the
/// default roots, hence the bundled ones are added here.
pub fn roots_with(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut extra = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => {
                let der = rustls::pki_types::CertificateDer::from(cert.der());
                rustls::RootCertStore::empty().add(der).map_err(|e| {
                    format!(
                        "certificate {} cannot be used as a trusted root ({e})",
                        extra.len() + 1
                    )
                })?;
                extra.push(cert);
            }
            Ok(_) => {}
            Err(e) => return Err(format!("not a readable PEM file ({e})")),
        }
    }
    if extra.is_empty() {
        return Err(
            "no certificate found: expected the PEM (-----BEGIN CERTIFICATE-----) of \
                    the CA that signed GitLab's certificate"
                .into(),
        );
    }
    let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    roots.extend(extra);
    Ok(roots)
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The timeout for a call started now: the time left before `deadline`, at most
/// [`CALL_TIMEOUT`]; [`GitlabError::Timeout`] when too little is left.
fn time_left(deadline: Instant) -> Result<Duration, GitlabError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < MIN_CALL_TIME {
        return Err(GitlabError::Timeout);
    }
    Ok(left.min(CALL_TIMEOUT))
}

fn map_ureq(step: &'static str, e: ureq::Error) -> GitlabError {
    const TLS_HINT: &str = "if GitLab's certificate comes from an internal CA, pass that CA \
                            with --ca-file";
    match e {
        ureq::Error::Timeout(_) => GitlabError::Timeout,
        ureq::Error::BodyExceedsLimit(_) => GitlabError::TooLarge { step },
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            GitlabError::Timeout
        }
        ureq::Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(tls) => GitlabError::Unreachable(format!("TLS: {tls}; {TLS_HINT}")),
            None => GitlabError::Unreachable(clean(&io.to_string(), 200)),
        },
        ureq::Error::Rustls(tls) => GitlabError::Unreachable(format!("TLS: {tls}; {TLS_HINT}")),
        ureq::Error::Tls(what) => GitlabError::Unreachable(format!("TLS: {what}")),
        ureq::Error::HostNotFound => GitlabError::Unreachable("host not found".into()),
        ureq::Error::ConnectionFailed => GitlabError::Unreachable("connection failed".into()),
        other => GitlabError::Unreachable(clean(&other.to_string(), 200)),
    }
}

/// An answer to a connection-check call: its status, `Location` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub status: u16,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Probe {
    fn read(url: &str, response: ureq::http::Response<ureq::Body>) -> Result<Probe, String> {
        let mut body = BodyBuf::default();
        let answer = read("check", response, MAX_SMALL_BODY, &mut body).map_err(|e| match e {
            GitlabError::TooLarge { .. } => format!(
                "the answer of {url} is larger than {MAX_SMALL_BODY} bytes: is this GitLab's URL?"
            ),
            GitlabError::Timeout => reach_timeout(),
            other => other.to_string(),
        })?;
        Ok(Probe {
            status: answer.status,
            location: answer.location,
            body: body.as_slice().to_vec(),
        })
    }
}

fn reach_timeout() -> String {
    "timed out: check the URL, that GitLab is up, the firewall, and the proxy settings \
     (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)"
        .to_string()
}

/// Why a call did not get an answer, with what to fix.
fn reach_problem(url: &str, e: &ureq::Error) -> String {
    let place = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let host = place.rsplit_once('@').map_or(place.as_str(), |(_, h)| h);
    let not_trusted = |tls: &rustls::Error| {
        format!(
            "TLS certificate of {host} not trusted ({tls}): if it comes from an internal CA, \
             start labgate with --ca-file and that CA's certificate (PEM)"
        )
    };
    let not_found = || {
        format!(
            "DNS name {} not found: check the host name in the URL (and this machine's DNS \
             resolver)",
            host.rsplit_once(':').map_or(host, |(h, _)| h)
        )
    };
    let tls_of = |io: &std::io::Error| {
        io.get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .cloned()
    };
    match e {
        ureq::Error::Timeout(_) => reach_timeout(),
        // std reports a failed getaddrinfo as an uncategorized error with this text.
        ureq::Error::Io(io) if io.to_string().starts_with("failed to lookup address") => {
            not_found()
        }
        ureq::Error::HostNotFound => not_found(),
        ureq::Error::ConnectionFailed => format!(
            "connection to {host} refused or failed: check the port in the URL and that GitLab \
             is up"
        ),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {host}: check the port in the URL and that GitLab is up")
        }
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            reach_timeout()
        }
        ureq::Error::Io(io) => match tls_of(io) {
            Some(tls @ rustls::Error::InvalidCertificate(_)) => not_trusted(&tls),
            Some(tls) => format!("TLS handshake with {host} failed: {tls}"),
            None => format!("no answer from {host}: {}", clean(&io.to_string(), 200)),
        },
        ureq::Error::Rustls(tls @ rustls::Error::InvalidCertificate(_)) => not_trusted(tls),
        ureq::Error::Rustls(tls) => format!("TLS handshake with {host} failed: {tls}"),
        ureq::Error::Tls(what) => format!("TLS with {host} failed: {what}"),
        other => format!("no answer from {host}: {}", clean(&other.to_string(), 200)),
    }
}

/// Reads the headers labgate uses, and the body within `cap` bytes into `body`.
fn read(
    step: &'static str,
    mut response: ureq::http::Response<ureq::Body>,
    cap: u64,
    body: &mut BodyBuf,
) -> Result<Answer, GitlabError> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let answer = Answer {
        status: response.status().as_u16(),
        retry_after: header("retry-after"),
        location: header("location"),
        content_type: header("content-type"),
        next_page: header("x-next-page"),
        link: header("link"),
    };
    let expected = response.body().content_length();
    let mut reader = response.body_mut().with_config().limit(cap).reader();
    body.fill(&mut reader, expected, cap)
        .map_err(|e| map_ureq(step, ureq::Error::from(e)))?;
    Ok(answer)
}

/// Whether a token endpoint body is an RFC 6749 error object (`{"error": "..."}`).
fn is_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("error").is_some_and(|e| e.is_string()))
}

/// What is wrong with a token answer, without repeating its values (they may be tokens).
fn json_problem(path: &str, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let what = if message.starts_with("missing field") {
        message.split(" at line").next().unwrap_or("").to_string()
    } else {
        match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "not JSON".to_string()
            }
            serde_json::error::Category::Data => "a value of the wrong type".to_string(),
            serde_json::error::Category::Io => "unreadable".to_string(),
        }
    };
    format!("{} at {}", clean(&what, 100), clean(path, 100))
}

fn redact_error(e: GitlabError, secrets: &[&str]) -> GitlabError {
    match e {
        GitlabError::Unreachable(d) => GitlabError::Unreachable(redact(d, secrets)),
        GitlabError::Status {
            step,
            status,
            detail,
        } => GitlabError::Status {
            step,
            status,
            detail: redact(detail, secrets),
        },
        GitlabError::Malformed { step, detail } => GitlabError::Malformed {
            step,
            detail: redact(detail, secrets),
        },
        GitlabError::Denied(d) => GitlabError::Denied(redact(d, secrets)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_buffer_holds_the_last_body_only_and_grows_to_the_cap_plus_one() {
        let mut body = BodyBuf::default();
        let big = vec![b'a'; 40_000];
        body.fill(&mut &big[..], None, 1_000_000).unwrap();
        assert_eq!(body.as_slice(), &big[..]);
        body.fill(&mut &b"short"[..], Some(5), 1_000_000).unwrap();
        assert_eq!(body.as_slice(), b"short");
        assert_eq!(body.bytes.len(), 2 * 32 * 1024, "kept for the next body");
        let mut capped = BodyBuf::default();
        capped.fill(&mut &big[..], None, 20_000).unwrap();
        assert_eq!(capped.bytes.len(), 20_001);
        assert_eq!(capped.as_slice(), &big[..20_001]);
    }

    #[test]
    fn ip_literals_are_read_and_host_names_left_to_the_resolver() {
        let literal = |uri: &str| ip_literal(&uri.parse().unwrap());
        assert_eq!(
            literal("http://127.0.0.1:8080/api/v4/user"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            literal("https://[::1]/x"),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            literal("HTTP://10.1.2.3/x"),
            Some("10.1.2.3:80".parse().unwrap())
        );
        for name in [
            "https://gitlab.example/x",
            "http://localhost:80/x",
            "http://127.0.0.1.nip.io/x",
            "socks5://127.0.0.1/x",
        ] {
            assert_eq!(literal(name), None, "{name}");
        }
    }

    /// A resolver that counts its lookups and fails the ones for `down.example`.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Resolver for Counting {
        fn resolve(
            &self,
            uri: &ureq::http::Uri,
            _config: &ureq::config::Config,
            _timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if uri.host() == Some("down.example") {
                return Err(ureq::Error::HostNotFound);
            }
            let mut addrs = self.empty();
            addrs.push("192.0.2.7:443".parse().unwrap());
            addrs.push("[2001:db8::7]:443".parse().unwrap());
            Ok(addrs)
        }
    }

    fn lookups(resolver: &LiteralFirstResolver<Counting>) -> usize {
        resolver.inner.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn host_names_are_resolved_once_per_ttl_and_failures_are_not_kept() {
        let config = ureq::config::Config::default();
        let timeout = NextTimeout::default();
        let resolve = |r: &LiteralFirstResolver<Counting>, uri: &str| {
            r.resolve(&uri.parse().unwrap(), &config, timeout)
                .map(|a| a.iter().copied().collect::<Vec<SocketAddr>>())
        };
        let kept = LiteralFirstResolver::with(Counting::default(), Duration::from_secs(60));
        let first = resolve(&kept, "https://gitlab.example/api/v4/user").unwrap();
        assert_eq!(first.len(), 2);
        for uri in [
            "https://gitlab.example/api/v4/groups?page=2",
            "https://GitLab.Example/oauth/token",
        ] {
            assert_eq!(resolve(&kept, uri).unwrap(), first, "{uri}");
        }
        assert_eq!(lookups(&kept), 1, "one lookup for three calls");
        resolve(&kept, "https://gitlab.example:8443/x").unwrap();
        resolve(&kept, "http://gitlab.example/x").unwrap();
        assert_eq!(lookups(&kept), 3, "another port or scheme is another entry");
        resolve(&kept, "http://10.0.0.1/x").unwrap();
        assert_eq!(lookups(&kept), 3, "IP literals are not looked up");
        assert!(resolve(&kept, "https://down.example/x").is_err());
        assert!(resolve(&kept, "https://down.example/x").is_err());
        assert_eq!(lookups(&kept), 5, "a failure is asked again");
        for i in 0..2 * MAX_NAMES {
            resolve(&kept, &format!("https://h{i}.example/x")).unwrap();
        }
        assert!(kept.names().len() <= MAX_NAMES);

        let expired = LiteralFirstResolver::with(Counting::default(), Duration::ZERO);
        resolve(&expired, "https://gitlab.example/x").unwrap();
        resolve(&expired, "https://gitlab.example/x").unwrap();
        assert_eq!(lookups(&expired), 2, "asked again after the TTL");
    }

    #[test]
    fn a_body_buffer_is_sized_by_the_content_length_within_the_cap() {
        let big = vec![b'a'; 40_000];
        let mut body = BodyBuf::default();
        body.fill(&mut &big[..], Some(40_000), 1_000_000).unwrap();
        assert_eq!(body.bytes.len(), 40_001, "no growth needed");
        assert_eq!(body.as_slice(), &big[..]);
        let mut wrong = BodyBuf::default();
        wrong.fill(&mut &big[..], Some(10), 1_000_000).unwrap();
        assert_eq!(
            wrong.as_slice(),
            &big[..],
            "a wrong length only sizes the buffer"
        );
        let mut huge = BodyBuf::default();
        huge.fill(&mut &big[..100], Some(u64::MAX), 1_000).unwrap();
        assert_eq!(huge.bytes.len(), 1_001);
    }
}
