//! A fake GitLab for labgate's tests and benchmarks.
//!
//! It serves, on `127.0.0.1:<free port>`, the parts of GitLab that labgate talks to, as GitLab's
//! OAuth and REST API documentation describes them:
//!
//! - `GET /oauth/authorize`: the authorization-code flow (+PKCE `S256`/`plain`), with a plain
//!   HTML sign-in page (`POST /users/sign_in`) when nobody is signed in to the fake;
//! - `POST /oauth/token`: `authorization_code` and `refresh_token` grants, Doorkeeper's error
//!   shapes;
//! - `GET /api/v4/user` and `GET /api/v4/groups` (GitLab's membership semantics and offset
//!   pagination headers);
//! - OIDC: `GET /.well-known/openid-configuration` (discovery) and `GET`/`POST /oauth/userinfo`
//!   (`sub` as a string, `groups` = direct groups and all their descendants, the primary email
//!   only with the `email` scope, 403 without `openid`, 401 for an invalid token or an inactive
//!   user);
//! - what automatic provisioning reads: personal and group access tokens (sent as
//!   `PRIVATE-TOKEN`, `?private_token=` or `Authorization: Bearer`; expiry at the start of their
//!   `expires_at` day, revocation, scopes, a blocked owner), `GET
//!   /api/v4/personal_access_tokens/self`, `GET /api/v4/groups/:id` (numeric id or URL-encoded
//!   full path, 404 for a group the caller cannot see), `GET /api/v4/groups/:id/descendant_groups`
//!   and `GET /api/v4/groups/:id/members` (direct members only, blocked ones listed with their
//!   `state`, offset pagination with GitLab's headers).
//!
//! Tests configure it through [`FakeGitlab`]'s methods (applications, users, groups, members,
//! faults, switches) and read back every request it received ([`FakeGitlab::requests`]).
//!
//! Include it with `#[path = "../support/fake_gitlab.rs"] mod fake_gitlab;`.
//!
//! Limits and deliberate choices:
//! - oxhttp cannot be shut down: dropping [`FakeGitlab`] leaves the listener thread running, but
//!   every later request is answered `503` with `{"message":"503 Service Unavailable"}`.
//! - [`Fault::CloseConnection`] closes the TCP connection without an answer by unwinding the
//!   connection thread (`std::panic::resume_unwind`, which does not run the panic hook, so nothing
//!   is printed).
//! - As on GitLab, `/oauth/authorize` asks for sign-in *before* validating the parameters; the
//!   sign-in page is answered directly (200) instead of GitLab's 302 to `/users/sign_in`.
//! - Applications are trusted (no consent page); [`FakeGitlab::deny_next_authorization`] stands
//!   in for "Deny".
//! - No `id_token`, `/oauth/revoke`, `/oauth/token/info` or `/oauth/discovery/keys` (labgate
//!   reads userinfo over TLS and needs no signed token).
//! - Faults answer before any processing: a faulted `/oauth/token` call does not use up the code.
//! - A refresh revokes the old token pair at once. A deleted user's tokens are gone (refresh
//!   `invalid_grant`); a blocked user's refresh succeeds unless
//!   [`FakeGitlab::set_blocked_user_refresh`] says otherwise (GitLab's code does not look at the
//!   user's state there); [`FakeGitlab::revoke_app_authorization`] is the user revoking an
//!   application in their settings.
//! - `per_page` < 1 gives 20, `page` < 1 gives 1; names sort byte-wise (GitLab's collation is
//!   unknown). Members come in the order of their user ids (GitLab's order is the database's).
//! - A group access token's bot is listed among the group's members with `bot: true` on
//!   `/api/v4/user`, as GitLab is believed to do (not confirmed on a live instance).

#![allow(dead_code)]

use base64::Engine as _;
use oxhttp::model::{Body, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Cursor, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Scopes an application registered with [`FakeGitlab::register_app`] may request.
pub const DEFAULT_APP_SCOPES: &str = "read_user read_api openid profile email";
/// Lifetime of an authorization code (Doorkeeper's default).
pub const CODE_LIFETIME_SECS: u64 = 600;
/// Lifetime of an access token (fixed on GitLab).
pub const TOKEN_LIFETIME_SECS: u64 = 7200;
/// Name of the fake's browser session cookie.
pub const SESSION_COOKIE: &str = "_gitlab_session";
/// Size of [`Fault::Oversized`] bodies built by [`Fault::oversized`].
pub const OVERSIZED_BYTES: usize = 10 * 1024 * 1024;

/// GitLab access levels (`Gitlab::Access`).
pub mod access {
    pub const MINIMAL_ACCESS: u32 = 5;
    pub const GUEST: u32 = 10;
    pub const PLANNER: u32 = 15;
    pub const REPORTER: u32 = 20;
    pub const DEVELOPER: u32 = 30;
    pub const MAINTAINER: u32 = 40;
    pub const OWNER: u32 = 50;
    /// Values accepted by `min_access_level`.
    pub const ALL: [u32; 7] = [5, 10, 15, 20, 30, 40, 50];
}

/// Every scope GitLab knows (`doc/integration/oauth_provider.md`).
pub const KNOWN_SCOPES: &[&str] = &[
    "api",
    "read_api",
    "read_user",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "read_repository",
    "write_repository",
    "read_registry",
    "write_registry",
    "read_virtual_registry",
    "write_virtual_registry",
    "read_observability",
    "write_observability",
    "ai_features",
    "sudo",
    "admin_mode",
    "read_service_ping",
    "openid",
    "profile",
    "email",
];

const DESC_INVALID_REQUEST: &str = "The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed.";
const DESC_INVALID_REDIRECT_URI: &str =
    "The requested redirect uri is malformed or doesn't match client redirect URI.";
const DESC_ACCESS_DENIED: &str = "The resource owner or authorization server denied the request.";
const DESC_INVALID_SCOPE: &str = "The requested scope is invalid, unknown, or malformed.";
const DESC_UNSUPPORTED_RESPONSE_TYPE: &str =
    "The authorization server does not support this response type.";
const DESC_INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.";
const DESC_INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
const DESC_UNSUPPORTED_GRANT_TYPE: &str =
    "The authorization grant type is not supported by the authorization server.";
const DESC_INVALID_CODE_CHALLENGE_METHOD: &str = "The code challenge method must be plain or S256.";
const DESC_TOKEN_EXPIRED: &str =
    "Token is expired. You can either do re-authorization or token refresh.";
const DESC_TOKEN_REVOKED: &str = "Token was revoked. You have to re-authorize from the user.";
const DESC_INSUFFICIENT_SCOPE: &str =
    "The request requires higher privileges than provided by the access token.";
const MSG_BLOCKED: &str = "403 Forbidden - Your account has been blocked.";
const MSG_DEACTIVATED: &str = "403 Forbidden - Your account has been deactivated by your administrator. Please log back in to reactivate your account.";
const MSG_PENDING_APPROVAL: &str = "403 Forbidden - Your account is pending approval from your GitLab administrator and hence blocked. Please contact your GitLab administrator if you think this is an error.";
const RATE_LIMIT_JSON: &str =
    r#"{"message":{"error":"This endpoint has been requested too many times. Try again later."}}"#;
const USER_CREATED_AT: &str = "2024-01-15T10:00:00.000Z";

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// The endpoints faults can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /oauth/authorize`
    Authorize,
    /// `GET`/`POST /users/sign_in`
    SignIn,
    /// `POST /oauth/token`
    Token,
    /// `GET /api/v4/user`
    User,
    /// `GET /api/v4/groups`
    Groups,
    /// `GET`/`POST /oauth/userinfo`
    Userinfo,
    /// `GET /.well-known/openid-configuration`
    Discovery,
    /// `GET /api/v4/personal_access_tokens/self`
    TokenSelf,
    /// `GET /api/v4/groups/:id`
    Group,
    /// `GET /api/v4/groups/:id/descendant_groups`
    DescendantGroups,
    /// `GET /api/v4/groups/:id/members`
    Members,
}

/// A failure the fake answers instead of the normal response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// That status with `{"message":"<code> <reason>"}` (e.g. `{"message":"500 Internal Server Error"}`).
    Status(u16),
    /// Rack::Attack throttle: 429, `text/plain`, body `Retry later\n`. With `Some(n)`: `Retry-After: n`
    /// and the `RateLimit-*` headers; with `None`: no rate-limit header at all.
    RateLimited { retry_after: Option<u64> },
    /// Application rate limiter: 429 with
    /// `{"message":{"error":"This endpoint has been requested too many times. Try again later."}}`,
    /// `Retry-After` only when given.
    RateLimitedJson { retry_after: Option<u64> },
    /// Sleep, then answer normally (several delays add up; a delay combines with another fault).
    Delay(Duration),
    /// 200 with `Content-Type: application/json` and the body `{"id": 1,`.
    MalformedJson,
    /// 200 with a valid-looking JSON body of at least `bytes` bytes (an array of groups on
    /// [`Endpoint::Groups`], an object elsewhere); `chunked` streams it without `Content-Length`.
    Oversized { bytes: usize, chunked: bool },
    /// Close the connection without any answer.
    CloseConnection,
    /// A hostile GitLab on [`Endpoint::Groups`]: every page is about `page_bytes` of the
    /// smallest groups possible (`{"full_path":"g123"}`, all different) and names a next page,
    /// without end.
    EndlessGroups { page_bytes: usize },
    /// A hostile GitLab on [`Endpoint::Userinfo`]: 200 with the claims of a person `hostile`
    /// (`sub` `"999999"`) in `count` groups (`g1`, `g2`, ...).
    UserinfoGroups { count: usize },
}

impl Fault {
    /// `Fault::Status(500)`.
    pub fn internal_error() -> Fault {
        Fault::Status(500)
    }

    /// A 10 MiB JSON body with `Content-Length`.
    pub fn oversized() -> Fault {
        Fault::Oversized {
            bytes: OVERSIZED_BYTES,
            chunked: false,
        }
    }
}

/// Which pagination headers `/api/v4/groups` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PaginationHeaders {
    /// `X-Per-Page`, `X-Page`, `X-Next-Page`, `X-Prev-Page`, `X-Total`, `X-Total-Pages`, `Link`.
    #[default]
    Full,
    /// Only `Link` (no `X-*` header at all).
    LinkOnly,
    /// Only the `X-*` headers (no `Link`).
    XHeadersOnly,
}

/// How the API treats users whose `state` is not `active`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InactiveUserPolicy {
    /// `blocked`, `banned`, `ldap_blocked` → 403 "Your account has been blocked."; any other state
    /// (`deactivated`, `blocked_pending_approval`, ...) → 200 with that `state`.
    #[default]
    BlockedOnly,
    /// Every non-`active` state → 403 with GitLab's reason text.
    AllInactive,
    /// Never refuse: 200 with the user's `state`, whatever it is.
    Never,
}

/// What the refresh grant answers for a user whose `state` is not `active`. GitLab's own code
/// does not look at the user's state during a refresh, so it probably succeeds (and userinfo
/// then refuses the new token); the other branch covers a GitLab that refuses the grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BlockedUserRefresh {
    /// A new token pair, as for anyone.
    #[default]
    Allow,
    /// 400 `invalid_grant`.
    InvalidGrant,
}

/// A GitLab user. `FakeUser::new(id, username)` fills the rest; or use a struct literal with
/// `..FakeUser::default()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUser {
    pub id: u64,
    pub username: String,
    pub name: String,
    pub email: String,
    /// `active` (default), `blocked`, `deactivated`, `blocked_pending_approval`, `banned`, `ldap_blocked`.
    pub state: String,
    pub bot: bool,
    /// Password for the fake's sign-in form.
    pub password: String,
    /// Instance administrator: `is_admin: true` on `/user`, every group on `/groups` by default.
    pub admin: bool,
    pub locked: bool,
    pub public_email: Option<String>,
    /// Whether the primary email is confirmed (`email_verified` in userinfo).
    pub email_verified: bool,
}

impl Default for FakeUser {
    fn default() -> Self {
        FakeUser::new(1, "user")
    }
}

impl FakeUser {
    /// name = username, email = `<username>@example.com`, password = `password`, state active.
    pub fn new(id: u64, username: &str) -> FakeUser {
        FakeUser {
            id,
            username: username.to_string(),
            name: username.to_string(),
            email: format!("{username}@example.com"),
            state: "active".to_string(),
            bot: false,
            password: "password".to_string(),
            admin: false,
            locked: false,
            public_email: None,
            email_verified: true,
        }
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as received (including any path prefix).
    pub path: String,
    /// The raw query string (without `?`), `""` when absent.
    pub query: String,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub endpoint: Option<Endpoint>,
    /// The fault answered instead of the normal response (the last non-delay one, or a delay).
    pub fault: Option<Fault>,
}

impl RecordedRequest {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A decoded query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        param(&parse_pairs(&self.query), name).map(str::to_string)
    }

    /// A decoded `application/x-www-form-urlencoded` body parameter.
    pub fn form_param(&self, name: &str) -> Option<String> {
        param(&parse_pairs(&self.body), name).map(str::to_string)
    }

    /// Whether `needle` appears anywhere in the request: path, query, header values or body
    /// (raw, and once form-decoded).
    pub fn contains(&self, needle: &str) -> bool {
        self.path.contains(needle)
            || self.query.contains(needle)
            || form_decode(&self.query).contains(needle)
            || self.headers.iter().any(|(_, v)| v.contains(needle))
            || self.body.contains(needle)
            || form_decode(&self.body).contains(needle)
    }
}

/// `BASE64URL(SHA256(verifier))` without padding (RFC 7636 `S256`).
pub fn pkce_s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Form/CGI escaping as Rails `to_query` does it: unreserved characters kept, space → `+`.
pub fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes one form-encoded component (`+` → space, `%XX`).
pub fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses `a=1&b=2` (query string or form body) into decoded pairs, in order.
pub fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), String::new()),
        })
        .collect()
}

/// Encodes pairs as `k=v&k2=v2` with [`form_urlencode`].
pub fn encode_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                form_urlencode(k.as_ref()),
                form_urlencode(v.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Doorkeeper's redirect-URI check: exact match, except that the port is ignored when both are
/// loopback IP literals (`127.0.0.0/8`, `[::1]`; not `localhost`), RFC 8252 §7.3.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Some(a), Some(b)) = (split_uri(registered), split_uri(requested)) else {
        return false;
    };
    is_loopback_ip(&a.host)
        && is_loopback_ip(&b.host)
        && a.scheme.eq_ignore_ascii_case(&b.scheme)
        && a.userinfo == b.userinfo
        && a.host.eq_ignore_ascii_case(&b.host)
        && a.rest == b.rest
}

// ---------------------------------------------------------------------------------------------
// The fake
// ---------------------------------------------------------------------------------------------

/// A running fake GitLab. All methods take `&self`; state is shared with the server threads.
pub struct FakeGitlab {
    shared: Arc<Shared>,
    port: u16,
}

struct Shared {
    base_url: String,
    prefix: String,
    state: Mutex<State>,
    /// Requests being answered right now, and the most at once since the last reset.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Debug)]
struct App {
    client_id: String,
    secret: String,
    redirect_uris: Vec<String>,
    confidential: bool,
    scopes: Vec<String>,
}

#[derive(Clone, Debug)]
struct Group {
    id: u64,
    name: String,
    path: String,
    full_path: String,
    parent_id: Option<u64>,
    visibility: String,
    description: String,
}

#[derive(Clone, Debug)]
struct Grant {
    client_id: String,
    user_id: u64,
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: Option<(String, String)>,
    created_at: u64,
    used: bool,
}

#[derive(Clone, Debug)]
struct AccessToken {
    user_id: u64,
    client_id: Option<String>,
    scopes: Vec<String>,
    created_at: u64,
    revoked: bool,
    refresh_token: String,
}

#[derive(Clone, Debug)]
enum Trigger {
    Always,
    /// The absolute call number (1-based) on the endpoint.
    Call(u64),
    Page(u64),
    /// That page of a listing under `/api/v4/groups/<this group>/...`.
    GroupPage {
        group: u64,
        page: u64,
    },
}

/// A personal access token (a group access token is one of its bot user).
#[derive(Clone, Debug)]
struct PersonalToken {
    id: u64,
    name: String,
    user_id: u64,
    scopes: Vec<String>,
    /// `YYYY-MM-DD`: the token stops working at the start of that day (UTC).
    expires_at: Option<String>,
    revoked: bool,
    created_at: u64,
}

#[derive(Clone, Debug)]
struct FaultRule {
    endpoint: Endpoint,
    fault: Fault,
    trigger: Trigger,
    remaining: Option<u64>,
}

#[derive(Default)]
struct State {
    stopped: bool,
    clock_offset: u64,
    apps: Vec<App>,
    users: Vec<FakeUser>,
    /// User id → index in `users`.
    user_pos: HashMap<u64, usize>,
    /// Lower-cased username → user id.
    login_index: HashMap<String, u64>,
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
    /// (user id, group id) → access level: the direct memberships.
    memberships: BTreeMap<(u64, u64), u32>,
    /// The same memberships by group: group id → user id → access level.
    group_members: HashMap<u64, BTreeMap<u64, u32>>,
    /// Personal and group access tokens by value.
    personal_tokens: HashMap<String, PersonalToken>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, AccessToken>,
    refresh_tokens: HashMap<String, String>,
    issued_tokens: Vec<String>,
    issued_refresh_tokens: Vec<String>,
    sessions: HashMap<String, u64>,
    signed_in: Option<u64>,
    deny_next: bool,
    token_type_lowercase: bool,
    omit_token_scope: bool,
    pagination_headers: PaginationHeaders,
    omit_totals: bool,
    next_link_base: Option<String>,
    inactive_policy: InactiveUserPolicy,
    blocked_user_refresh: BlockedUserRefresh,
    /// Discovery's `issuer` when set (else the base URL).
    issuer: Option<String>,
    /// Discovery's `scopes_supported` when set (else every known scope).
    scopes_supported: Option<Vec<String>>,
    faults: Vec<FaultRule>,
    calls: HashMap<Endpoint, u64>,
    requests: Vec<RecordedRequest>,
    not_recording: bool,
}

impl State {
    fn now(&self) -> u64 {
        unix_now() + self.clock_offset
    }

    fn user_by_id(&self, id: u64) -> Option<&FakeUser> {
        self.user_pos.get(&id).map(|&i| &self.users[i])
    }

    /// The id of a user the test added (a typo in a test panics, naming it).
    fn known_user_id(&self, login: &str) -> u64 {
        self.user_by_login(login)
            .unwrap_or_else(|| panic!("fake_gitlab: unknown user {login:?}"))
            .id
    }

    fn user_by_login(&self, login: &str) -> Option<&FakeUser> {
        match self.login_index.get(&login.to_lowercase()) {
            Some(id) => self.user_by_id(*id),
            None => self.users.iter().find(|u| {
                u.username.eq_ignore_ascii_case(login) || u.email.eq_ignore_ascii_case(login)
            }),
        }
    }

    /// Adds a user, or replaces the one with its id.
    fn put_user(&mut self, user: FakeUser) {
        match self.user_pos.get(&user.id) {
            Some(&i) => {
                self.login_index
                    .remove(&self.users[i].username.to_lowercase());
                self.login_index
                    .insert(user.username.to_lowercase(), user.id);
                self.users[i] = user;
            }
            None => {
                self.user_pos.insert(user.id, self.users.len());
                self.login_index
                    .insert(user.username.to_lowercase(), user.id);
                self.users.push(user);
            }
        }
    }

    /// Removes a user, their memberships with them, and keeps the indexes right.
    fn remove_user(&mut self, id: u64) {
        let groups: Vec<u64> = self.direct_groups(id, |_| true).into_iter().collect();
        for group in groups {
            self.set_membership(id, group, None);
        }
        self.personal_tokens.retain(|_, t| t.user_id != id);
        self.users.retain(|u| u.id != id);
        self.user_pos = self
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id, i))
            .collect();
        self.login_index = self
            .users
            .iter()
            .map(|u| (u.username.to_lowercase(), u.id))
            .collect();
    }

    fn set_membership(&mut self, user_id: u64, group_id: u64, access_level: Option<u32>) {
        match access_level {
            Some(level) => {
                self.memberships.insert((user_id, group_id), level);
                self.group_members
                    .entry(group_id)
                    .or_default()
                    .insert(user_id, level);
            }
            None => {
                self.memberships.remove(&(user_id, group_id));
                if let Some(m) = self.group_members.get_mut(&group_id) {
                    m.remove(&user_id);
                }
            }
        }
    }

    /// Group ids count from 1 in creation order and groups are never removed.
    fn group(&self, id: u64) -> Option<&Group> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.groups.get(i).filter(|g| g.id == id)
    }

    fn group_by_path(&self, full_path: &str) -> Option<&Group> {
        let key = full_path.trim_matches('/').to_lowercase();
        self.group_index.get(&key).map(|&i| &self.groups[i])
    }

    fn add_group(&mut self, full_path: &str) -> u64 {
        let full_path = full_path.trim_matches('/');
        assert!(!full_path.is_empty(), "fake_gitlab: empty group path");
        let mut parent: Option<u64> = None;
        let mut so_far = String::new();
        for segment in full_path.split('/') {
            assert!(
                !segment.is_empty(),
                "fake_gitlab: bad group path {full_path:?}"
            );
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(segment);
            let id = match self.group_by_path(&so_far) {
                Some(g) => g.id,
                None => {
                    let id = self.groups.len() as u64 + 1;
                    // Keep the case of the existing ancestors: rebuild from the parent's path.
                    let full = match parent.and_then(|p| self.group(p)) {
                        Some(p) => format!("{}/{}", p.full_path, segment),
                        None => segment.to_string(),
                    };
                    self.group_index
                        .insert(full.to_lowercase(), self.groups.len());
                    self.groups.push(Group {
                        id,
                        name: segment.to_string(),
                        path: segment.to_string(),
                        full_path: full,
                        parent_id: parent,
                        visibility: "private".to_string(),
                        description: String::new(),
                    });
                    id
                }
            };
            parent = Some(id);
        }
        parent.expect("at least one segment")
    }

    fn group_mut(&mut self, full_path: &str) -> &mut Group {
        let key = full_path.trim_matches('/').to_lowercase();
        let i = *self
            .group_index
            .get(&key)
            .unwrap_or_else(|| panic!("fake_gitlab: unknown group {full_path:?}"));
        &mut self.groups[i]
    }

    fn ancestors(&self, id: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cur = self.group(id).and_then(|g| g.parent_id);
        while let Some(p) = cur {
            out.push(p);
            cur = self.group(p).and_then(|g| g.parent_id);
        }
        out
    }

    /// `roots` and every group below one of them.
    fn self_and_descendants(&self, roots: &HashSet<u64>) -> HashSet<u64> {
        self.groups
            .iter()
            .filter(|g| {
                roots.contains(&g.id) || self.ancestors(g.id).iter().any(|a| roots.contains(a))
            })
            .map(|g| g.id)
            .collect()
    }

    fn direct_groups(&self, user_id: u64, pred: impl Fn(u32) -> bool) -> HashSet<u64> {
        self.memberships
            .range((user_id, 0)..=(user_id, u64::MAX))
            .filter(|(_, level)| pred(**level))
            .map(|((_, g), _)| *g)
            .collect()
    }

    /// The fake's date, `YYYY-MM-DD` (UTC), `days` from today.
    fn date_in_days(&self, days: i64) -> String {
        let (y, m, d) = civil_from_days((self.now() / 86_400) as i64 + days);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// A token stops working at the start of its `expires_at` day (UTC): whether it still works
    /// on that day before midnight is not known of GitLab, so it counts as expired.
    fn personal_token_expired(&self, t: &PersonalToken) -> bool {
        t.expires_at
            .as_deref()
            .is_some_and(|date| date <= self.date_in_days(0).as_str())
    }

    /// The group a path segment `:id` names: a numeric id, or a URL-encoded full path.
    fn group_by_ref(&self, id: &str) -> Option<&Group> {
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            return id.parse().ok().and_then(|n| self.group(n));
        }
        self.group_by_path(&form_decode(id))
    }

    /// The groups `user` may see as a member (`None`: anonymous, the public ones): those they
    /// are a member of with all their descendants, the ancestors of those, and the public and
    /// internal ones when `public_and_internal` (`all_available`, or a single group). Callers
    /// give administrators every group themselves.
    fn visible_groups(&self, user: Option<&FakeUser>, public_and_internal: bool) -> HashSet<u64> {
        let Some(user) = user else {
            return self
                .groups
                .iter()
                .filter(|g| g.visibility == "public")
                .map(|g| g.id)
                .collect();
        };
        let mut set = self.self_and_descendants(&self.direct_groups(user.id, |_| true));
        let ancestors: Vec<u64> = set.iter().flat_map(|g| self.ancestors(*g)).collect();
        set.extend(ancestors);
        if public_and_internal {
            set.extend(
                self.groups
                    .iter()
                    .filter(|g| g.visibility == "public" || g.visibility == "internal")
                    .map(|g| g.id),
            );
        }
        set
    }

    fn issue_token(
        &mut self,
        user_id: u64,
        client_id: Option<String>,
        scopes: Vec<String>,
    ) -> (String, AccessToken) {
        let access = random_hex(32);
        let token = AccessToken {
            user_id,
            client_id,
            scopes,
            created_at: self.now(),
            revoked: false,
            refresh_token: random_hex(32),
        };
        self.refresh_tokens
            .insert(token.refresh_token.clone(), access.clone());
        self.tokens.insert(access.clone(), token.clone());
        self.issued_tokens.push(access.clone());
        self.issued_refresh_tokens.push(token.refresh_token.clone());
        (access, token)
    }
}

impl FakeGitlab {
    /// Starts a fake GitLab at `http://127.0.0.1:<free port>`.
    pub fn start() -> FakeGitlab {
        FakeGitlab::start_with_prefix("")
    }

    /// Starts a fake GitLab served under a path prefix, e.g. `/gitlab` (`url()` then ends with it).
    pub fn start_with_prefix(prefix: &str) -> FakeGitlab {
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("/{p}"),
        };
        let mut last_error = None;
        for _ in 0..50 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("fake_gitlab: cannot bind 127.0.0.1:0")
                .port();
            let shared = Arc::new(Shared {
                base_url: format!("http://127.0.0.1:{port}{prefix}"),
                prefix: prefix.clone(),
                state: Mutex::new(State::default()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            });
            let handler_shared = Arc::clone(&shared);
            let server = oxhttp::Server::new(move |request| handle(&handler_shared, request))
                .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .with_global_timeout(Duration::from_secs(120))
                .with_max_concurrent_connections(512);
            match server.spawn() {
                Ok(_listening) => return FakeGitlab { shared, port },
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => panic!("fake_gitlab: cannot start: {e}"),
            }
        }
        panic!("fake_gitlab: no free port: {last_error:?}")
    }

    /// `http://127.0.0.1:PORT` (plus the prefix, if any), without a trailing slash.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // --- applications -------------------------------------------------------------------

    /// Registers an OAuth application (trusted: no consent page) allowed [`DEFAULT_APP_SCOPES`].
    pub fn register_app(
        &self,
        client_id: &str,
        secret: &str,
        redirect_uris: &[&str],
        confidential: bool,
    ) {
        let mut st = self.state();
        st.apps.retain(|a| a.client_id != client_id);
        st.apps.push(App {
            client_id: client_id.to_string(),
            secret: secret.to_string(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            confidential,
            scopes: split_scopes(DEFAULT_APP_SCOPES),
        });
    }

    /// Starts a fake GitLab with one confidential application whose redirect URI is on
    /// loopback, so that it matches labgate's callback on whatever port (RFC 8252), as GitLab.
    pub fn start_with_loopback_app(client_id: &str, secret: &str) -> FakeGitlab {
        let gl = FakeGitlab::start();
        gl.register_app(
            client_id,
            secret,
            &["http://127.0.0.1/oauth2/callback/gitlab"],
            true,
        );
        gl
    }

    /// Replaces the scopes the application may request (space-separated).
    pub fn set_app_scopes(&self, client_id: &str, scopes: &str) {
        let mut st = self.state();
        let app = st
            .apps
            .iter_mut()
            .find(|a| a.client_id == client_id)
            .unwrap_or_else(|| panic!("fake_gitlab: unknown app {client_id:?}"));
        app.scopes = split_scopes(scopes);
    }

    // --- groups ---------------------------------------------------------------------------

    /// Creates a group and its missing ancestors (name = path); returns its id. Ids count from 1.
    /// Existing groups (compared case-insensitively) are reused.
    pub fn add_group(&self, full_path: &str) -> u64 {
        self.state().add_group(full_path)
    }

    /// The id of a group (case-insensitive lookup).
    pub fn group_id(&self, full_path: &str) -> Option<u64> {
        self.state().group_by_path(full_path).map(|g| g.id)
    }

    /// The `full_path` of a group as stored (its case).
    pub fn group_full_path(&self, id: u64) -> Option<String> {
        self.state().group(id).map(|g| g.full_path.clone())
    }

    /// Sets a group's display `name` (it drives the ordering and `full_name`).
    pub fn set_group_name(&self, full_path: &str, name: &str) {
        self.state().group_mut(full_path).name = name.to_string();
    }

    /// Sets a group's visibility: `private` (default), `internal` or `public`.
    pub fn set_group_visibility(&self, full_path: &str, visibility: &str) {
        self.state().group_mut(full_path).visibility = visibility.to_string();
    }

    // --- users ----------------------------------------------------------------------------

    /// Adds (or replaces, by id) a user.
    pub fn add_user(&self, user: FakeUser) {
        self.state().put_user(user);
    }

    /// Changes a user's `state` (e.g. `blocked` between two calls).
    pub fn set_user_state(&self, username: &str, state: &str) {
        self.update_user(username, |u| u.state = state.to_string());
    }

    /// Changes any field of a user.
    pub fn update_user(&self, username: &str, f: impl FnOnce(&mut FakeUser)) {
        let mut st = self.state();
        let mut user = st
            .users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .cloned()
            .unwrap_or_else(|| panic!("fake_gitlab: unknown user {username:?}"));
        f(&mut user);
        st.put_user(user);
    }

    /// Makes the user a direct member of the group (created with its ancestors if missing) at
    /// that access level (see [`access`]); replaces an existing direct membership.
    pub fn add_member(&self, username: &str, group_full_path: &str, access_level: u32) {
        let mut st = self.state();
        let user_id = st
            .user_by_login(username)
            .unwrap_or_else(|| panic!("fake_gitlab: unknown user {username:?}"))
            .id;
        let group_id = st.add_group(group_full_path);
        st.set_membership(user_id, group_id, Some(access_level));
    }

    /// Removes a direct membership.
    pub fn remove_member(&self, username: &str, group_full_path: &str) {
        let mut st = self.state();
        let user = st.user_by_login(username).map(|u| u.id);
        let group = st.group_by_path(group_full_path).map(|g| g.id);
        if let (Some(u), Some(g)) = (user, group) {
            st.set_membership(u, g, None);
        }
    }

    // --- browser session, consent ---------------------------------------------------------

    /// Every browser is signed in to the fake as this user: `/oauth/authorize` issues a code at once.
    pub fn sign_in_as(&self, username: &str) {
        let mut st = self.state();
        let id = st.known_user_id(username);
        st.signed_in = Some(id);
    }

    /// Forgets [`sign_in_as`](Self::sign_in_as) and every session cookie.
    pub fn sign_out(&self) {
        let mut st = self.state();
        st.signed_in = None;
        st.sessions.clear();
    }

    /// The next authorization (of a signed-in user) redirects with `error=access_denied`.
    pub fn deny_next_authorization(&self) {
        self.state().deny_next = true;
    }

    // --- clock, tokens --------------------------------------------------------------------

    /// Moves the fake's clock forward (codes expire after 600 s, tokens after 7200 s).
    pub fn advance_clock(&self, secs: u64) {
        self.state().clock_offset += secs;
    }

    /// The fake's current Unix time (real time + [`advance_clock`](Self::advance_clock)s).
    pub fn now(&self) -> u64 {
        self.state().now()
    }

    /// Issues an access token directly (no OAuth app), e.g. for API-only tests.
    pub fn issue_token(&self, username: &str, scopes: &str) -> String {
        let mut st = self.state();
        let id = st.known_user_id(username);
        st.issue_token(id, None, split_scopes(scopes)).0
    }

    /// Revokes an access token (the API then answers 401 `invalid_token`, "Token was revoked").
    pub fn revoke_token(&self, access_token: &str) {
        if let Some(t) = self.state().tokens.get_mut(access_token) {
            t.revoked = true;
        }
    }

    /// The user revokes an application in their settings (User Settings > Applications >
    /// Revoke): every access token of that application for that user is revoked with its
    /// refresh token, and its unused authorization codes die. A refresh then answers
    /// `invalid_grant`, userinfo 401.
    pub fn revoke_app_authorization(&self, username: &str, client_id: &str) {
        let mut st = self.state();
        let id = st.known_user_id(username);
        for token in st.tokens.values_mut() {
            if token.user_id == id && token.client_id.as_deref() == Some(client_id) {
                token.revoked = true;
            }
        }
        for grant in st.codes.values_mut() {
            if grant.user_id == id && grant.client_id == client_id {
                grant.used = true;
            }
        }
    }

    /// Deletes a user: their memberships and tokens go with them (a refresh then answers
    /// `invalid_grant`, userinfo 401).
    pub fn delete_user(&self, username: &str) {
        let mut st = self.state();
        let id = st.known_user_id(username);
        st.remove_user(id);
        let gone: Vec<String> = st
            .tokens
            .iter()
            .filter(|(_, t)| t.user_id == id)
            .map(|(access, _)| access.clone())
            .collect();
        for access in gone {
            if let Some(token) = st.tokens.remove(&access) {
                st.refresh_tokens.remove(&token.refresh_token);
            }
        }
    }

    /// Every access token issued so far, oldest first.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state().issued_tokens.clone()
    }

    // --- personal and group access tokens -------------------------------------------------

    /// Creates a personal access token of `username` with these scopes (space-separated) that
    /// stops working at the start of `expires_at` (`YYYY-MM-DD`; `None`: never); returns its
    /// value (`glpat-` and 20 random characters).
    pub fn add_personal_access_token(
        &self,
        username: &str,
        name: &str,
        scopes: &str,
        expires_at: Option<&str>,
    ) -> String {
        let mut st = self.state();
        let user_id = st
            .user_by_login(username)
            .unwrap_or_else(|| panic!("fake_gitlab: unknown user {username:?}"))
            .id;
        let value = format!("glpat-{}", random_hex(10));
        let token = PersonalToken {
            id: st.personal_tokens.len() as u64 + 1,
            name: name.to_string(),
            user_id,
            scopes: split_scopes(scopes),
            expires_at: expires_at.map(str::to_string),
            revoked: false,
            created_at: st.now(),
        };
        st.personal_tokens.insert(value.clone(), token);
        value
    }

    /// Creates a group access token as GitLab does: a bot user `group_<id>_bot_<random hex>`
    /// (`bot: true`) made a direct member of the group at `access_level`, and a personal access
    /// token of that bot. Returns the token's value and the bot's username.
    pub fn add_group_access_token(
        &self,
        group_full_path: &str,
        name: &str,
        scopes: &str,
        access_level: u32,
        expires_at: Option<&str>,
    ) -> (String, String) {
        let bot = {
            let mut st = self.state();
            let group_id = st
                .group_by_path(group_full_path)
                .unwrap_or_else(|| panic!("fake_gitlab: unknown group {group_full_path:?}"))
                .id;
            let id = 1_000_000 + st.users.len() as u64 + 1;
            let username = format!("group_{group_id}_bot_{}", random_hex(16));
            st.put_user(FakeUser {
                bot: true,
                name: name.to_string(),
                email: format!("{username}@noreply.gitlab.example"),
                ..FakeUser::new(id, &username)
            });
            st.set_membership(id, group_id, Some(access_level));
            username
        };
        let value = self.add_personal_access_token(&bot, name, scopes, expires_at);
        (value, bot)
    }

    /// Revokes a personal or group access token: GitLab then answers 401 `invalid_token`,
    /// "Token was revoked".
    pub fn revoke_access_token(&self, value: &str) {
        if let Some(t) = self.state().personal_tokens.get_mut(value) {
            t.revoked = true;
        }
    }

    /// The date `days` from the fake's today (UTC), in the form `expires_at` takes.
    pub fn date_in_days(&self, days: i64) -> String {
        self.state().date_in_days(days)
    }

    /// Every refresh token issued so far, oldest first.
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.state().issued_refresh_tokens.clone()
    }

    /// The most requests the fake was answering at once since it started or since the last
    /// [`reset_max_in_flight`](Self::reset_max_in_flight).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.shared.max_in_flight.store(0, Ordering::SeqCst);
    }

    // --- switches -------------------------------------------------------------------------

    /// `/oauth/token` answers `"token_type":"bearer"` instead of `"Bearer"`.
    pub fn set_token_type_lowercase(&self, on: bool) {
        self.state().token_type_lowercase = on;
    }

    /// `/oauth/token` leaves `scope` out of its answer.
    pub fn set_omit_token_scope(&self, on: bool) {
        self.state().omit_token_scope = on;
    }

    /// Which pagination headers `/api/v4/groups` sends.
    pub fn set_pagination_headers(&self, headers: PaginationHeaders) {
        self.state().pagination_headers = headers;
    }

    /// Leaves out `X-Total`, `X-Total-Pages` and `rel="last"`, as GitLab does above 10,000 rows.
    pub fn set_omit_pagination_totals(&self, on: bool) {
        self.state().omit_totals = on;
    }

    /// The `rel="next"` link uses this base URL (e.g. `http://evil.example:9`, or another fake's
    /// `url()`) instead of the fake's own; `X-Next-Page` is unchanged.
    pub fn set_next_link_base(&self, base_url: Option<&str>) {
        self.state().next_link_base = base_url.map(|s| s.trim_end_matches('/').to_string());
    }

    /// What the refresh grant answers for a user who is not `active` (see
    /// [`BlockedUserRefresh`]; `Allow` by default).
    pub fn set_blocked_user_refresh(&self, answer: BlockedUserRefresh) {
        self.state().blocked_user_refresh = answer;
    }

    /// How `/api/v4/*` treats non-active users.
    pub fn set_inactive_user_policy(&self, policy: InactiveUserPolicy) {
        self.state().inactive_policy = policy;
    }

    /// Makes discovery name another `issuer` (as a GitLab whose `external_url` differs from the
    /// URL labgate was given); `None` restores the base URL.
    pub fn set_issuer(&self, issuer: Option<&str>) {
        self.state().issuer = issuer.map(str::to_string);
    }

    /// Makes discovery list only these `scopes_supported`; `None` restores every known scope.
    pub fn set_scopes_supported(&self, scopes: Option<&[&str]>) {
        self.state().scopes_supported = scopes.map(|s| s.iter().map(|x| x.to_string()).collect());
    }

    // --- faults ---------------------------------------------------------------------------

    /// Every call to `endpoint` gets `fault`, until [`clear_faults`](Self::clear_faults).
    pub fn set_fault(&self, endpoint: Endpoint, fault: Fault) {
        self.push_fault(endpoint, fault, Trigger::Always, None);
    }

    /// Only the `n`-th call to `endpoint` from now on (1 = the next one) gets `fault`.
    pub fn set_fault_on_call(&self, endpoint: Endpoint, n: u64, fault: Fault) {
        assert!(n >= 1, "fake_gitlab: calls count from 1");
        let at = self.call_count(endpoint) + n;
        self.push_fault(endpoint, fault, Trigger::Call(at), Some(1));
    }

    /// The next `count` calls to `endpoint` get `fault`, later ones are served normally.
    pub fn set_fault_for_calls(&self, endpoint: Endpoint, count: u64, fault: Fault) {
        self.push_fault(endpoint, fault, Trigger::Always, Some(count));
    }

    /// Every request for `/api/v4/groups` page `page` (the `page` parameter, default 1) gets `fault`.
    pub fn set_fault_on_groups_page(&self, page: u64, fault: Fault) {
        self.push_fault(Endpoint::Groups, fault, Trigger::Page(page), None);
    }

    /// Only the next request for `/api/v4/groups` page `page` gets `fault`.
    pub fn set_fault_on_groups_page_once(&self, page: u64, fault: Fault) {
        self.push_fault(Endpoint::Groups, fault, Trigger::Page(page), Some(1));
    }

    /// Every request for page `page` of a listing of the group (`/api/v4/groups/<it>/members`,
    /// `/descendant_groups`) on `endpoint` gets `fault`; `once`: only the next one.
    pub fn set_fault_on_group_page(
        &self,
        endpoint: Endpoint,
        group_full_path: &str,
        page: u64,
        fault: Fault,
        once: bool,
    ) {
        let group = self
            .group_id(group_full_path)
            .unwrap_or_else(|| panic!("fake_gitlab: unknown group {group_full_path:?}"));
        let remaining = once.then_some(1);
        self.push_fault(
            endpoint,
            fault,
            Trigger::GroupPage { group, page },
            remaining,
        );
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    fn push_fault(
        &self,
        endpoint: Endpoint,
        fault: Fault,
        trigger: Trigger,
        remaining: Option<u64>,
    ) {
        self.state().faults.push(FaultRule {
            endpoint,
            fault,
            trigger,
            remaining,
        });
    }

    /// How many requests reached `endpoint` since start (faulted ones included).
    pub fn call_count(&self, endpoint: Endpoint) -> u64 {
        self.state().calls.get(&endpoint).copied().unwrap_or(0)
    }

    // --- recorder -------------------------------------------------------------------------

    /// A copy of every request received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests whose path is `path`, given with or without the fake's prefix (e.g. `/oauth/token`).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        let prefixed = format!("{}{}", self.shared.prefix, path);
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path || r.path == prefixed)
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests (the call counters are kept).
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Turns the recorder on (default) or off (for benchmarks: the log grows without bound).
    pub fn set_recording(&self, on: bool) {
        self.state().not_recording = !on;
    }
}

impl Drop for FakeGitlab {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

struct Req {
    method: String,
    /// Path with the prefix removed.
    route: String,
    raw_query: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn q(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Resp {
    fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: body.into(),
            chunked: false,
        }
    }

    fn json(status: u16, value: &Value) -> Resp {
        Resp::new(status, "application/json", value.to_string())
    }

    fn html(status: u16, html: String) -> Resp {
        Resp::new(status, "text/html; charset=utf-8", html)
    }

    fn redirect(location: &str) -> Resp {
        let mut r = Resp::html(
            302,
            format!(
                "<html><body>You are being <a href=\"{}\">redirected</a>.</body></html>",
                html_escape(location)
            ),
        );
        r.headers
            .push(("Location".to_string(), location.to_string()));
        r
    }

    fn with_header(mut self, name: &str, value: impl Into<String>) -> Resp {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = if self.chunked {
            Body::from_read(Cursor::new(self.body))
        } else {
            Body::from(self.body)
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Response::builder().status(500).body(Body::empty()).unwrap())
    }
}

fn handle(shared: &Shared, request: &mut Request<Body>) -> Response<Body> {
    /// Counts the request out however it ends ([`Fault::CloseConnection`] unwinds).
    struct InFlight<'a>(&'a AtomicUsize);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _counted = InFlight(&shared.in_flight);
    answer(shared, request)
}

fn answer(shared: &Shared, request: &mut Request<Body>) -> Response<Body> {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body_bytes = Vec::new();
    let _ = request.body_mut().read_to_end(&mut body_bytes);
    let body = String::from_utf8_lossy(&body_bytes).into_owned();

    let route = if shared.prefix.is_empty() {
        Some(path.clone())
    } else if path == shared.prefix {
        Some("/".to_string())
    } else {
        path.strip_prefix(&format!("{}/", shared.prefix))
            .map(|rest| format!("/{rest}"))
    };
    let group_route = route.as_deref().and_then(group_route_of);
    let endpoint = route.as_deref().and_then(|r| match (method.as_str(), r) {
        ("GET", "/oauth/authorize") => Some(Endpoint::Authorize),
        ("GET" | "POST", "/users/sign_in") => Some(Endpoint::SignIn),
        ("POST", "/oauth/token") => Some(Endpoint::Token),
        ("GET", "/api/v4/user") => Some(Endpoint::User),
        ("GET", "/api/v4/groups") => Some(Endpoint::Groups),
        ("GET" | "POST", "/oauth/userinfo") => Some(Endpoint::Userinfo),
        ("GET", "/.well-known/openid-configuration") => Some(Endpoint::Discovery),
        ("GET", "/api/v4/personal_access_tokens/self") => Some(Endpoint::TokenSelf),
        ("GET", _) => group_route.as_ref().map(|(_, endpoint)| *endpoint),
        _ => None,
    });
    let req = Req {
        method: method.clone(),
        route: route.unwrap_or_default(),
        query: parse_pairs(&raw_query),
        raw_query: raw_query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    };

    // Count, pick the faults, record: all under one lock.
    let (stopped, delay, fault) = {
        let mut st = shared.lock();
        let (delay, fault) = match endpoint {
            Some(ep) if !st.stopped => {
                let n = {
                    let c = st.calls.entry(ep).or_insert(0);
                    *c += 1;
                    *c
                };
                let page = req
                    .q("page")
                    .and_then(|p| p.trim().parse::<u64>().ok())
                    .filter(|p| *p >= 1)
                    .unwrap_or(1);
                let group = group_route
                    .as_ref()
                    .and_then(|(id, _)| st.group_by_ref(id).map(|g| g.id));
                pick_faults(&mut st.faults, ep, n, page, group)
            }
            _ => (Duration::ZERO, None),
        };
        let recorded_fault = fault
            .clone()
            .or_else(|| (!delay.is_zero()).then_some(Fault::Delay(delay)));
        if !st.not_recording {
            st.requests.push(RecordedRequest {
                method,
                path,
                query: raw_query,
                headers,
                body,
                endpoint,
                fault: recorded_fault,
            });
        }
        (st.stopped, delay, fault)
    };

    if stopped {
        return Resp::json(503, &json!({"message": "503 Service Unavailable"})).into_response();
    }
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    if let Some(fault) = fault {
        if fault == Fault::CloseConnection {
            // Unwinds the connection thread: the stream is dropped, nothing is written. No lock
            // is held here, so nothing is poisoned; resume_unwind skips the panic hook.
            std::panic::resume_unwind(Box::new("fake_gitlab: closing the connection"));
        }
        return fault_response(shared, &fault, endpoint).into_response();
    }

    let mut st = shared.lock();
    let resp = match endpoint {
        Some(Endpoint::Authorize) => authorize(&mut st, shared, &req),
        Some(Endpoint::SignIn) if req.method == "GET" => sign_in_page(shared, &req.query, None),
        Some(Endpoint::SignIn) => sign_in_post(&mut st, shared, &req),
        Some(Endpoint::Token) => token(&mut st, &req),
        Some(Endpoint::User) => api_user(&st, shared, &req),
        Some(Endpoint::Groups) => api_groups(&st, shared, &req),
        Some(Endpoint::Userinfo) => userinfo(&st, shared, &req),
        Some(Endpoint::Discovery) => discovery(&st, shared),
        Some(Endpoint::TokenSelf) => token_self(&st, &req),
        Some(Endpoint::Group | Endpoint::DescendantGroups | Endpoint::Members) => {
            match &group_route {
                Some((id, endpoint)) => api_group_route(&st, shared, &req, id, *endpoint),
                None => Resp::json(404, &json!({"error": "404 Not Found"})),
            }
        }
        None if req.route.starts_with("/api/") => {
            Resp::json(404, &json!({"error": "404 Not Found"}))
        }
        None => Resp::html(404, page("Not Found", "<h1>404</h1><p>Page Not Found</p>")),
    };
    drop(st);
    resp.into_response()
}

/// Returns the summed delay and the fault to answer (the first matching non-delay rule).
fn pick_faults(
    rules: &mut Vec<FaultRule>,
    ep: Endpoint,
    call: u64,
    page: u64,
    group: Option<u64>,
) -> (Duration, Option<Fault>) {
    let mut delay = Duration::ZERO;
    let mut fault = None;
    for rule in rules.iter_mut() {
        if rule.endpoint != ep || rule.remaining == Some(0) {
            continue;
        }
        let hit = match rule.trigger {
            Trigger::Always => true,
            Trigger::Call(n) => n == call,
            Trigger::Page(p) => p == page,
            Trigger::GroupPage { group: g, page: p } => Some(g) == group && p == page,
        };
        if !hit {
            continue;
        }
        match &rule.fault {
            Fault::Delay(d) => delay += *d,
            f if fault.is_none() => fault = Some(f.clone()),
            _ => continue,
        }
        if let Some(r) = rule.remaining.as_mut() {
            *r -= 1;
        }
    }
    rules.retain(|r| r.remaining != Some(0));
    (delay, fault)
}

fn fault_response(shared: &Shared, fault: &Fault, endpoint: Option<Endpoint>) -> Resp {
    match fault {
        Fault::Status(code) => {
            let reason = StatusCode::from_u16(*code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            Resp::json(*code, &json!({"message": format!("{code} {reason}")}))
        }
        Fault::RateLimited { retry_after } => {
            let mut r = Resp::new(429, "text/plain", "Retry later\n");
            if let Some(secs) = retry_after {
                let reset = unix_now() + secs;
                r = r
                    .with_header("RateLimit-Name", "throttle_authenticated_api")
                    .with_header("RateLimit-Limit", "60")
                    .with_header("RateLimit-Observed", "61")
                    .with_header("RateLimit-Remaining", "0")
                    .with_header("RateLimit-Reset", reset.to_string())
                    .with_header("RateLimit-ResetTime", http_date(reset))
                    .with_header("Retry-After", secs.to_string());
            }
            r
        }
        Fault::RateLimitedJson { retry_after } => {
            let r = Resp::new(429, "application/json", RATE_LIMIT_JSON);
            match retry_after {
                Some(secs) => r.with_header("Retry-After", secs.to_string()),
                None => r,
            }
        }
        Fault::MalformedJson => Resp::new(200, "application/json", "{\"id\": 1,"),
        Fault::UserinfoGroups { count } => {
            let groups: Vec<String> = (1..=*count).map(|i| format!("g{i}")).collect();
            Resp::json(
                200,
                &json!({"sub": "999999", "preferred_username": "hostile", "groups": groups}),
            )
        }
        Fault::EndlessGroups { page_bytes } => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let page = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = Vec::with_capacity(page_bytes + 64);
            out.push(b'[');
            let mut i = 0u64;
            while out.len() < *page_bytes {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(format!("{{\"full_path\":\"p{page}g{i}\"}}").as_bytes());
                i += 1;
            }
            out.push(b']');
            Resp::new(200, "application/json", out)
                .with_header("X-Next-Page", (page + 1_000_000).to_string())
        }
        Fault::Oversized { bytes, chunked } => {
            let mut r = Resp::new(
                200,
                "application/json",
                oversized_body(shared, *bytes, endpoint),
            );
            r.chunked = *chunked;
            r
        }
        // Handled by the caller.
        Fault::Delay(_) | Fault::CloseConnection => {
            Resp::json(500, &json!({"message": "500 Internal Server Error"}))
        }
    }
}

fn oversized_body(shared: &Shared, bytes: usize, endpoint: Option<Endpoint>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 1024);
    if endpoint == Some(Endpoint::Groups) {
        out.push(b'[');
        let mut i = 0u64;
        while out.len() < bytes {
            if i > 0 {
                out.push(b',');
            }
            i += 1;
            let g = json!({
                "id": 900_000 + i,
                "web_url": format!("{}/groups/oversized/g{i}", shared.base_url),
                "name": format!("g{i}"),
                "path": format!("g{i}"),
                "description": "x".repeat(200),
                "visibility": "private",
                "full_name": format!("oversized / g{i}"),
                "full_path": format!("oversized/g{i}"),
                "parent_id": 900_000,
            });
            out.extend_from_slice(g.to_string().as_bytes());
        }
        out.push(b']');
    } else {
        let head = json!({
            "id": 1,
            "username": "oversized",
            "name": "Over Sized",
            "state": "active",
            "email": "oversized@example.com",
            "access_token": "0".repeat(64),
            "token_type": "Bearer",
        })
        .to_string();
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"bio\":\"");
        let fill = bytes.saturating_sub(out.len() + 2);
        out.resize(out.len() + fill, b'x');
        out.extend_from_slice(b"\"}");
    }
    out
}

// --- /oauth/authorize, /users/sign_in ------------------------------------------------------

fn authorize(st: &mut State, shared: &Shared, req: &Req) -> Resp {
    // GitLab authenticates the resource owner before Doorkeeper validates anything.
    let session_user = req
        .cookie(SESSION_COOKIE)
        .and_then(|c| st.sessions.get(&c).copied());
    let Some(user_id) = session_user.or(st.signed_in) else {
        return sign_in_page(shared, &req.query, None);
    };

    let client_id = req.q("client_id").unwrap_or("");
    if client_id.is_empty() {
        return authorize_error_page(
            400,
            "invalid_request",
            "Missing required parameter: client_id.",
        );
    }
    let Some(app) = st.apps.iter().find(|a| a.client_id == client_id).cloned() else {
        return authorize_error_page(401, "invalid_client", DESC_INVALID_CLIENT);
    };
    let redirect_uri = req.q("redirect_uri").unwrap_or("").to_string();
    if redirect_uri.is_empty() {
        return authorize_error_page(
            400,
            "invalid_request",
            "Missing required parameter: redirect_uri.",
        );
    }
    if !app
        .redirect_uris
        .iter()
        .any(|r| redirect_uri_matches(r, &redirect_uri))
    {
        return authorize_error_page(400, "invalid_redirect_uri", DESC_INVALID_REDIRECT_URI);
    }
    let state = req.q("state").map(str::to_string);
    let redirect_error = |error: &str, description: &str| {
        let mut pairs = vec![
            ("error", error.to_string()),
            ("error_description", description.to_string()),
        ];
        if let Some(s) = &state {
            pairs.push(("state", s.clone()));
        }
        Resp::redirect(&append_query(&redirect_uri, &pairs))
    };

    match req.q("response_type") {
        None | Some("") => {
            return redirect_error(
                "invalid_request",
                "Missing required parameter: response_type.",
            )
        }
        Some("code") => {}
        Some(_) => {
            return redirect_error("unsupported_response_type", DESC_UNSUPPORTED_RESPONSE_TYPE)
        }
    }

    let requested = match req.q("scope") {
        Some(s) if !s.trim().is_empty() => split_scopes(s),
        // Doorkeeper's default scopes (`api`) intersected with the application's.
        _ => ["api"]
            .iter()
            .filter(|s| app.scopes.iter().any(|a| a == *s))
            .map(|s| s.to_string())
            .collect(),
    };
    if requested.is_empty()
        || requested
            .iter()
            .any(|s| !KNOWN_SCOPES.contains(&s.as_str()) || !app.scopes.contains(s))
    {
        return redirect_error("invalid_scope", DESC_INVALID_SCOPE);
    }

    let challenge = match req.q("code_challenge").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match req.q("code_challenge_method").filter(|m| !m.is_empty()) {
            None | Some("plain") => Some((c.to_string(), "plain".to_string())),
            Some("S256") => Some((c.to_string(), "S256".to_string())),
            Some(_) => {
                return redirect_error("invalid_request", DESC_INVALID_CODE_CHALLENGE_METHOD)
            }
        },
    };

    if std::mem::take(&mut st.deny_next) {
        return redirect_error("access_denied", DESC_ACCESS_DENIED);
    }

    let code = random_hex(32);
    st.codes.insert(
        code.clone(),
        Grant {
            client_id: app.client_id.clone(),
            user_id,
            redirect_uri: redirect_uri.clone(),
            scopes: requested,
            challenge,
            created_at: st.now(),
            used: false,
        },
    );
    let mut pairs = vec![("code", code)];
    if let Some(s) = &state {
        pairs.push(("state", s.clone()));
    }
    Resp::redirect(&append_query(&redirect_uri, &pairs))
}

fn authorize_error_page(status: u16, error: &str, description: &str) -> Resp {
    Resp::html(
        status,
        page(
            "An error has occurred",
            &format!(
                "<h1>An error has occurred</h1>\n<p id=\"error\">{}</p>\n<p id=\"error-description\">{}</p>",
                html_escape(error),
                html_escape(description)
            ),
        ),
    )
}

fn sign_in_page(
    shared: &Shared,
    authorize_params: &[(String, String)],
    error: Option<&str>,
) -> Resp {
    let hidden: String = authorize_params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "username" | "password"))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                html_escape(k),
                html_escape(v)
            )
        })
        .collect();
    let flash = error
        .map(|e| {
            format!(
                "<div class=\"flash-alert\" id=\"flash-alert\">{}</div>\n",
                html_escape(e)
            )
        })
        .unwrap_or_default();
    Resp::html(
        200,
        page(
            "Sign in · GitLab",
            &format!(
                "<h1>Sign in</h1>\n{flash}<form id=\"new_user\" action=\"{}/users/sign_in\" method=\"post\" accept-charset=\"UTF-8\">\n\
                 {hidden}<label for=\"username\">Username or primary email</label>\n\
                 <input type=\"text\" name=\"username\" id=\"username\" autocomplete=\"username\">\n\
                 <label for=\"password\">Password</label>\n\
                 <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\">\n\
                 <button type=\"submit\" id=\"sign-in\">Sign in</button>\n</form>",
                html_escape(&shared.base_url)
            ),
        ),
    )
}

fn sign_in_post(st: &mut State, shared: &Shared, req: &Req) -> Resp {
    let form = parse_pairs(&req.body);
    let username = param(&form, "username").unwrap_or("");
    let password = param(&form, "password").unwrap_or("");
    let authorize_params: Vec<(String, String)> = form
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "username" | "password" | "authenticity_token" | "remember_me"
            )
        })
        .cloned()
        .collect();
    let user = st
        .user_by_login(username)
        .filter(|u| !u.password.is_empty() && u.password == password)
        .cloned();
    let Some(user) = user else {
        return sign_in_page(
            shared,
            &authorize_params,
            Some("Invalid login or password."),
        );
    };
    if matches!(user.state.as_str(), "blocked" | "banned" | "ldap_blocked") {
        return sign_in_page(
            shared,
            &authorize_params,
            Some("Your account has been blocked. Please contact your GitLab administrator if you think this is an error."),
        );
    }
    let session = random_hex(16);
    st.sessions.insert(session.clone(), user.id);
    let location = if authorize_params.is_empty() {
        format!("{}/", shared.base_url)
    } else {
        format!(
            "{}/oauth/authorize?{}",
            shared.base_url,
            encode_pairs(&authorize_params)
        )
    };
    Resp::redirect(&location).with_header(
        "Set-Cookie",
        format!("{SESSION_COOKIE}={session}; path=/; HttpOnly; SameSite=Lax"),
    )
}

// --- /oauth/token --------------------------------------------------------------------------

fn oauth_error(status: u16, error: &str, description: &str) -> Resp {
    let mut r = Resp::new(
        status,
        "application/json; charset=utf-8",
        json!({"error": error, "error_description": description}).to_string(),
    )
    .with_header("Cache-Control", "no-store")
    .with_header("Pragma", "no-cache");
    if error == "invalid_client" {
        r = r.with_header(
            "WWW-Authenticate",
            format!("Bearer realm=\"Doorkeeper\", error=\"invalid_client\", error_description=\"{DESC_INVALID_CLIENT}\""),
        );
    }
    r
}

/// Doorkeeper `client_credentials :from_basic, :from_params`, then `Client.authenticate`.
fn authenticate_client(st: &State, req: &Req, params: &[(String, String)]) -> Option<App> {
    let basic = req
        .header("authorization")
        .and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_string())
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| {
            let s = String::from_utf8(raw).ok()?;
            let (id, secret) = s.split_once(':')?;
            Some((id.to_string(), secret.to_string()))
        });
    let (id, secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => (
            param(params, "client_id")?.to_string(),
            param(params, "client_secret").map(str::to_string),
        ),
    };
    let app = st.apps.iter().find(|a| a.client_id == id)?;
    match secret.filter(|s| !s.is_empty()) {
        Some(s) => (s == app.secret).then(|| app.clone()),
        None => (!app.confidential).then(|| app.clone()),
    }
}

fn token(st: &mut State, req: &Req) -> Resp {
    // Doorkeeper reads `params`: query and body merged, the body winning.
    let mut params = req.query.clone();
    params.extend(parse_pairs(&req.body));
    let p = |name: &str| -> Option<String> {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let grant_type = match p("grant_type") {
        None => {
            return oauth_error(
                400,
                "invalid_request",
                "Missing required parameter: grant_type.",
            )
        }
        Some(g) => g,
    };
    let client = authenticate_client(st, req, &params);
    match grant_type.as_str() {
        "authorization_code" => {
            let code = p("code").unwrap_or_default();
            let grant = st.codes.get(&code).cloned();
            let verifier = p("code_verifier");
            let redirect_uri = p("redirect_uri");
            if grant.as_ref().is_some_and(|g| g.challenge.is_some()) && verifier.is_none() {
                return oauth_error(
                    400,
                    "invalid_request",
                    "Missing required parameter: code_verifier.",
                );
            }
            let Some(redirect_uri) = redirect_uri else {
                return oauth_error(
                    400,
                    "invalid_request",
                    "Missing required parameter: redirect_uri.",
                );
            };
            let Some(client) = client else {
                return oauth_error(401, "invalid_client", DESC_INVALID_CLIENT);
            };
            let now = st.now();
            let Some(grant) = grant.filter(|g| {
                !g.used
                    && now < g.created_at + CODE_LIFETIME_SECS
                    && g.client_id == client.client_id
            }) else {
                return oauth_error(400, "invalid_grant", DESC_INVALID_GRANT);
            };
            if !redirect_uri_matches(&grant.redirect_uri, &redirect_uri) {
                return oauth_error(400, "invalid_grant", DESC_INVALID_GRANT);
            }
            let verified = match (&grant.challenge, &verifier) {
                (None, None) => true,
                (Some((c, m)), Some(v)) if m == "S256" => pkce_s256(v) == *c,
                (Some((c, _)), Some(v)) => v == c,
                _ => false,
            };
            if !verified {
                return oauth_error(400, "invalid_grant", DESC_INVALID_GRANT);
            }
            if let Some(g) = st.codes.get_mut(&code) {
                g.used = true;
            }
            let (access, token) =
                st.issue_token(grant.user_id, Some(client.client_id), grant.scopes);
            token_response(st, &access, &token)
        }
        "refresh_token" => {
            let Some(refresh) = p("refresh_token") else {
                return oauth_error(
                    400,
                    "invalid_request",
                    "Missing required parameter: refresh_token.",
                );
            };
            let old_access = st.refresh_tokens.get(&refresh).cloned();
            let Some((old_access, old)) = old_access
                .and_then(|a| st.tokens.get(&a).cloned().map(|t| (a, t)))
                .filter(|(_, t)| !t.revoked)
            else {
                return oauth_error(400, "invalid_grant", DESC_INVALID_GRANT);
            };
            let has_credentials = req.header("authorization").is_some() || p("client_id").is_some();
            if has_credentials && client.is_none() {
                return oauth_error(401, "invalid_client", DESC_INVALID_CLIENT);
            }
            if old.client_id.is_some()
                && old.client_id != client.as_ref().map(|c| c.client_id.clone())
            {
                return oauth_error(400, "invalid_grant", DESC_INVALID_GRANT);
            }
            let refused_owner = match st.user_by_id(old.user_id) {
                None => true,
                Some(u) => {
                    u.state != "active"
                        && st.blocked_user_refresh == BlockedUserRefresh::InvalidGrant
                }
            };
            if refused_owner {
                return oauth_error(400, "invalid_grant", DESC_INVALID_GRANT);
            }
            let scopes = match p("scope") {
                Some(s) => {
                    let s = split_scopes(&s);
                    if s.iter().any(|x| !old.scopes.contains(x)) {
                        return oauth_error(400, "invalid_scope", DESC_INVALID_SCOPE);
                    }
                    s
                }
                None => old.scopes.clone(),
            };
            // The docs say the old pair dies at refresh time; the fake does it immediately.
            if let Some(t) = st.tokens.get_mut(&old_access) {
                t.revoked = true;
            }
            st.refresh_tokens.remove(&refresh);
            let (access, token) = st.issue_token(old.user_id, old.client_id, scopes);
            token_response(st, &access, &token)
        }
        _ => oauth_error(400, "unsupported_grant_type", DESC_UNSUPPORTED_GRANT_TYPE),
    }
}

fn token_response(st: &State, access: &str, token: &AccessToken) -> Resp {
    let mut body = Map::new();
    body.insert("access_token".into(), json!(access));
    body.insert(
        "token_type".into(),
        json!(if st.token_type_lowercase {
            "bearer"
        } else {
            "Bearer"
        }),
    );
    body.insert("expires_in".into(), json!(TOKEN_LIFETIME_SECS));
    body.insert("refresh_token".into(), json!(token.refresh_token));
    if !st.omit_token_scope {
        body.insert("scope".into(), json!(token.scopes.join(" ")));
    }
    body.insert("created_at".into(), json!(token.created_at));
    Resp::new(
        200,
        "application/json; charset=utf-8",
        Value::Object(body).to_string(),
    )
    .with_header("Cache-Control", "no-store")
    .with_header("Pragma", "no-cache")
}

// --- /api/v4 -------------------------------------------------------------------------------

/// The access token of a request, where GitLab's Doorkeeper looks for it, in its order: the
/// `access_token` parameter, the `Authorization: Bearer` header, the `bearer_token` parameter.
fn access_token_of(req: &Req) -> Option<String> {
    let from_header = req.header("authorization").and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    req.q("access_token")
        .map(str::to_string)
        .or(from_header)
        .or_else(|| req.q("bearer_token").map(str::to_string))
        .filter(|t| !t.is_empty())
}

fn invalid_token(description: &str) -> Resp {
    Resp::json(401, &json!({"error": "invalid_token", "error_description": description})).with_header(
        "WWW-Authenticate",
        format!("Bearer realm=\"Protected by OAuth 2.0\", error=\"invalid_token\", error_description=\"{description}\""),
    )
}

/// The token a REST call presents: a personal or group access token in `PRIVATE-TOKEN` or
/// `?private_token=`, else an access token where [`access_token_of`] finds it.
fn presented_token(req: &Req) -> Option<String> {
    req.header("private-token")
        .map(|t| t.trim().to_string())
        .or_else(|| req.q("private_token").map(str::to_string))
        .filter(|t| !t.is_empty())
        .or_else(|| access_token_of(req))
}

/// Finds the API token ([`presented_token`]) and checks it in GitLab's order: unknown, expired,
/// revoked, scope (`accepted`; empty: any scope), the owner's state. A personal or group
/// access token is looked up first, then an OAuth token. `Ok(None)`: no token at all.
fn api_authenticate<'a>(
    st: &'a State,
    req: &Req,
    accepted: &[&str],
) -> Result<Option<&'a FakeUser>, Resp> {
    let Some(token) = presented_token(req) else {
        return Ok(None);
    };
    let unauthorized = || Resp::json(401, &json!({"message": "401 Unauthorized"}));
    let (user_id, scopes) = if let Some(t) = st.personal_tokens.get(&token) {
        if st.personal_token_expired(t) {
            return Err(invalid_token(DESC_TOKEN_EXPIRED));
        }
        if t.revoked {
            return Err(invalid_token(DESC_TOKEN_REVOKED));
        }
        (t.user_id, &t.scopes)
    } else if let Some(t) = st.tokens.get(&token) {
        if st.now() >= t.created_at + TOKEN_LIFETIME_SECS {
            return Err(invalid_token(DESC_TOKEN_EXPIRED));
        }
        if t.revoked {
            return Err(invalid_token(DESC_TOKEN_REVOKED));
        }
        (t.user_id, &t.scopes)
    } else {
        return Err(unauthorized());
    };
    if !accepted.is_empty() && !scopes.iter().any(|s| accepted.contains(&s.as_str())) {
        return Err(Resp::json(
            403,
            &json!({
                "error": "insufficient_scope",
                "error_description": DESC_INSUFFICIENT_SCOPE,
                "scope": accepted.join(" "),
            }),
        ));
    }
    let Some(user) = st.user_by_id(user_id) else {
        return Err(unauthorized());
    };
    let refused = match (st.inactive_policy, user.state.as_str()) {
        (_, "active") | (InactiveUserPolicy::Never, _) => None,
        (_, "blocked" | "banned" | "ldap_blocked") => Some(MSG_BLOCKED),
        (InactiveUserPolicy::BlockedOnly, _) => None,
        (_, "deactivated") => Some(MSG_DEACTIVATED),
        (_, "blocked_pending_approval") => Some(MSG_PENDING_APPROVAL),
        (_, _) => Some(MSG_BLOCKED),
    };
    if let Some(message) = refused {
        return Err(Resp::json(403, &json!({ "message": message })));
    }
    Ok(Some(user))
}

fn api_user(st: &State, shared: &Shared, req: &Req) -> Resp {
    let user = match api_authenticate(st, req, &["api", "read_api", "read_user"]) {
        Err(resp) => return resp,
        Ok(None) => return Resp::json(401, &json!({"message": "401 Unauthorized"})),
        Ok(Some(u)) => u,
    };
    let now = iso8601(st.now());
    let mut v = user_basic(shared, user);
    v.as_object_mut().expect("object").extend(
        json!({
            "created_at": USER_CREATED_AT,
            "bio": "",
            "location": "",
            "public_email": user.public_email,
            "skype": "",
            "linkedin": "",
            "twitter": "",
            "discord": "",
            "website_url": "",
            "organization": "",
            "job_title": "",
            "pronouns": null,
            "bot": user.bot,
            "work_information": null,
            "followers": 0,
            "following": 0,
            "is_followed": false,
            "local_time": null,
            "last_sign_in_at": now,
            "confirmed_at": USER_CREATED_AT,
            "last_activity_on": &now[..10],
            "email": user.email,
            "theme_id": 1,
            "color_scheme_id": 1,
            "projects_limit": 100000,
            "current_sign_in_at": now,
            "identities": [],
            "can_create_group": true,
            "can_create_project": true,
            "two_factor_enabled": false,
            "external": false,
            "private_profile": false,
            "commit_email": user.email,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    if user.admin {
        let obj = v.as_object_mut().expect("object");
        obj.insert("is_admin".into(), json!(true));
        obj.insert("note".into(), Value::Null);
        obj.insert("namespace_id".into(), json!(user.id));
        obj.insert("created_by".into(), Value::Null);
        obj.insert("email_reset_offered_at".into(), Value::Null);
        obj.insert("current_sign_in_ip".into(), json!("127.0.0.1"));
        obj.insert("last_sign_in_ip".into(), json!("127.0.0.1"));
    }
    Resp::json(200, &v)
}

// --- OIDC: /oauth/userinfo, /.well-known/openid-configuration ------------------------------

/// Doorkeeper's `doorkeeper_authorize! :openid`: the token from the same places as the API, then
/// 401 (with `WWW-Authenticate`, empty body) for a missing, unknown, expired or revoked token or
/// an inactive user (userinfo looks users up among active ones only), 403 without `openid`.
fn userinfo(st: &State, shared: &Shared, req: &Req) -> Resp {
    let challenge = |status: u16, error: &str, description: &str| {
        let mut value = format!(
            "Bearer realm=\"Doorkeeper\", error=\"{error}\", error_description=\"{description}\""
        );
        if status == 403 {
            value.push_str(", scope=\"openid\"");
        }
        Resp::new(status, "text/plain", "").with_header("WWW-Authenticate", value)
    };
    let token = access_token_of(req);
    const UNKNOWN: &str = "The access token is invalid";
    let Some(t) = token.as_deref().and_then(|t| st.tokens.get(t)) else {
        return challenge(401, "invalid_token", UNKNOWN);
    };
    if st.now() >= t.created_at + TOKEN_LIFETIME_SECS {
        return challenge(401, "invalid_token", DESC_TOKEN_EXPIRED);
    }
    if t.revoked {
        return challenge(401, "invalid_token", DESC_TOKEN_REVOKED);
    }
    if !t.scopes.iter().any(|s| s == "openid") {
        return challenge(403, "insufficient_scope", DESC_INSUFFICIENT_SCOPE);
    }
    let Some(user) = st.user_by_id(t.user_id).filter(|u| u.state == "active") else {
        return challenge(401, "invalid_token", UNKNOWN);
    };
    Resp::json(200, &userinfo_claims(st, shared, user, &t.scopes))
}

/// The claims GitLab's userinfo gives for `user` under `scopes` (every claim is under `openid`;
/// `email` switches the email from the public one to the primary one). Empty values are left
/// out, as GitLab drops `nil` and `""`; `groups` may be `[]`.
fn userinfo_claims(st: &State, shared: &Shared, user: &FakeUser, scopes: &[String]) -> Value {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.id.to_string()));
    claims.insert(
        "sub_legacy".into(),
        json!(hex::encode(Sha256::digest(
            format!("{}-fake-secret-key-base", user.id).as_bytes()
        ))),
    );
    if !user.name.is_empty() {
        claims.insert("name".into(), json!(user.name));
    }
    claims.insert("nickname".into(), json!(user.username));
    claims.insert("preferred_username".into(), json!(user.username));
    let (email, verified) = if scopes.iter().any(|s| s == "email") {
        (Some(user.email.clone()), user.email_verified)
    } else {
        // The public email is always one of the user's confirmed addresses.
        (user.public_email.clone(), true)
    };
    if let Some(email) = email.filter(|e| !e.is_empty()) {
        claims.insert("email".into(), json!(email));
        claims.insert("email_verified".into(), json!(verified));
    }
    claims.insert(
        "profile".into(),
        json!(format!("{}/{}", shared.base_url, user.username)),
    );
    claims.insert(
        "picture".into(),
        json!(format!(
            "https://secure.gravatar.com/avatar/{}?s=80&d=identicon",
            hex::encode(Sha256::digest(user.email.to_lowercase().as_bytes()))
        )),
    );
    // `membership_groups`: every group the user is a member of, with all its descendants.
    let direct = st.direct_groups(user.id, |_| true);
    let mut groups: Vec<&str> = st
        .self_and_descendants(&direct)
        .iter()
        .filter_map(|id| st.group(*id).map(|g| g.full_path.as_str()))
        .collect();
    groups.sort_unstable();
    claims.insert("groups".into(), json!(groups));
    // The role claims: direct memberships at exactly that level; absent when empty.
    for (claim, level) in [
        ("owner", access::OWNER),
        ("maintainer", access::MAINTAINER),
        ("developer", access::DEVELOPER),
    ] {
        let mut paths: Vec<&str> = st
            .direct_groups(user.id, |l| l == level)
            .iter()
            .filter_map(|id| st.group(*id).map(|g| g.full_path.as_str()))
            .collect();
        if !paths.is_empty() {
            paths.sort_unstable();
            claims.insert(
                format!("https://gitlab.org/claims/groups/{claim}"),
                json!(paths),
            );
        }
    }
    Value::Object(claims)
}

/// doorkeeper-openid_connect's discovery document, the issuer being the base URL.
fn discovery(st: &State, shared: &Shared) -> Resp {
    let base = &shared.base_url;
    let scopes: Vec<String> = st
        .scopes_supported
        .clone()
        .unwrap_or_else(|| KNOWN_SCOPES.iter().map(|s| s.to_string()).collect());
    Resp::json(
        200,
        &json!({
            "issuer": st.issuer.clone().unwrap_or_else(|| base.clone()),
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "introspection_endpoint": format!("{base}/oauth/introspect"),
            "userinfo_endpoint": format!("{base}/oauth/userinfo"),
            "jwks_uri": format!("{base}/oauth/discovery/keys"),
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": ["authorization_code", "password", "client_credentials", "device_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claim_types_supported": ["normal"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "sub_legacy", "name", "nickname", "preferred_username", "email", "email_verified", "website", "profile", "picture", "groups", "groups_direct", "https://gitlab.org/claims/groups/owner", "https://gitlab.org/claims/groups/maintainer", "https://gitlab.org/claims/groups/developer"],
            "code_challenge_methods_supported": ["plain", "S256"],
        }),
    )
}

fn bad_param(message: String) -> Resp {
    Resp::json(400, &json!({ "error": message }))
}

fn parse_bool(req: &Req, name: &str) -> Result<Option<bool>, Resp> {
    match req.q(name) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" | "y" => Ok(Some(true)),
            "false" | "0" | "f" | "no" | "n" => Ok(Some(false)),
            _ => Err(bad_param(format!("{name} is invalid"))),
        },
    }
}

fn parse_int(req: &Req, name: &str) -> Result<Option<i64>, Resp> {
    match req.q(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad_param(format!("{name} is invalid"))),
    }
}

fn api_groups(st: &State, shared: &Shared, req: &Req) -> Resp {
    let user = match api_authenticate(st, req, &["api", "read_api"]) {
        Err(resp) => return resp,
        Ok(u) => u,
    };
    let parsed = (|| -> Result<_, Resp> {
        let min_access_level = match parse_int(req, "min_access_level")? {
            None => None,
            Some(v) if access::ALL.iter().any(|a| i64::from(*a) == v) => Some(v as u32),
            Some(_) => {
                return Err(bad_param(
                    "min_access_level does not have a valid value".to_string(),
                ))
            }
        };
        let owned = parse_bool(req, "owned")?.unwrap_or(false);
        let all_available = parse_bool(req, "all_available")?;
        let top_level_only = parse_bool(req, "top_level_only")?.unwrap_or(false);
        let statistics = parse_bool(req, "statistics")?.unwrap_or(false);
        let custom = parse_bool(req, "with_custom_attributes")?.unwrap_or(false);
        let order_by = req.q("order_by").unwrap_or("name").to_string();
        if !matches!(order_by.as_str(), "name" | "path" | "id" | "similarity") {
            return Err(bad_param(
                "order_by does not have a valid value".to_string(),
            ));
        }
        let sort = req.q("sort").unwrap_or("asc").to_string();
        if !matches!(sort.as_str(), "asc" | "desc") {
            return Err(bad_param("sort does not have a valid value".to_string()));
        }
        let page = parse_int(req, "page")?;
        let per_page = parse_int(req, "per_page")?;
        Ok((
            min_access_level,
            owned,
            all_available,
            top_level_only,
            statistics,
            custom,
            order_by,
            sort,
            page,
            per_page,
        ))
    })();
    let (
        min_access_level,
        owned,
        all_available,
        top_level_only,
        statistics,
        custom,
        order_by,
        sort,
        page_param,
        per_page_param,
    ) = match parsed {
        Ok(p) => p,
        Err(resp) => return resp,
    };

    // GroupsFinder#all_groups.
    let ids: HashSet<u64> = match user {
        None => st.visible_groups(None, false),
        Some(u) if owned => st.direct_groups(u.id, |l| l == access::OWNER),
        Some(u) if min_access_level.is_some() => {
            let n = min_access_level.unwrap_or(0);
            st.self_and_descendants(&st.direct_groups(u.id, |l| l >= n))
        }
        Some(u) if u.admin && all_available.unwrap_or(true) => {
            st.groups.iter().map(|g| g.id).collect()
        }
        Some(u) => st.visible_groups(Some(u), all_available == Some(true)),
    };
    let search = req
        .q("search")
        .map(str::to_lowercase)
        .filter(|s| !s.is_empty());
    let mut groups: Vec<&Group> = st
        .groups
        .iter()
        .filter(|g| ids.contains(&g.id))
        .filter(|g| !top_level_only || g.parent_id.is_none())
        .filter(|g| {
            search.as_ref().is_none_or(|s| {
                g.name.to_lowercase().contains(s)
                    || g.path.to_lowercase().contains(s)
                    || g.full_path.to_lowercase().contains(s)
            })
        })
        .collect();
    groups.sort_by(|a, b| {
        let primary = match order_by.as_str() {
            "path" => a.path.cmp(&b.path),
            "id" => a.id.cmp(&b.id),
            _ => a.name.cmp(&b.name),
        };
        let primary = if sort == "desc" {
            primary.reverse()
        } else {
            primary
        };
        primary.then(a.id.cmp(&b.id))
    });

    // Link: every request parameter plus Grape's defaults, sorted, `page` replaced.
    let mut link_params: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        ("order_by", "name"),
        ("owned", "false"),
        ("sort", "asc"),
        ("statistics", "false"),
        ("with_custom_attributes", "false"),
    ] {
        link_params.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &req.query {
        link_params.insert(k.clone(), v.clone());
    }
    link_params.insert("owned".into(), owned.to_string());
    link_params.insert("statistics".into(), statistics.to_string());
    link_params.insert("with_custom_attributes".into(), custom.to_string());
    if let Some(v) = all_available {
        link_params.insert("all_available".into(), v.to_string());
    }
    if let Some(n) = min_access_level {
        link_params.insert("min_access_level".into(), n.to_string());
    }
    let listing = Listing {
        path: "/api/v4/groups".to_string(),
        page: page_param,
        per_page: per_page_param,
        link_params,
    };
    listing.answer(st, shared, &groups, |g| group_json(st, shared, g))
}

/// One page of a listing with GitLab's offset pagination (Kaminari: `per_page` default 20, at
/// most 100; `page` default 1) and its headers, as the switches ask.
struct Listing {
    /// The path of the listing (without the fake's prefix), for the `Link` URLs.
    path: String,
    page: Option<i64>,
    per_page: Option<i64>,
    /// Every request parameter plus the endpoint's defaults; `page` and `per_page` are set here.
    link_params: BTreeMap<String, String>,
}

impl Listing {
    fn answer<T>(
        self,
        st: &State,
        shared: &Shared,
        all: &[T],
        to_json: impl Fn(&T) -> Value,
    ) -> Resp {
        let per_page = match self.per_page {
            Some(n) if n >= 1 => n.min(100) as usize,
            _ => 20,
        };
        let page = match self.page {
            Some(n) if n >= 1 => n as usize,
            _ => 1,
        };
        let total = all.len();
        let total_pages = total.div_ceil(per_page).max(1);
        let in_range = page <= total_pages;
        let items: Vec<Value> = all
            .iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .map(to_json)
            .collect();
        let next_page = (page < total_pages).then_some(page + 1);
        let prev_page = (page > 1 && in_range).then(|| page - 1);
        let mut link_params = self.link_params;
        link_params
            .entry("per_page".into())
            .or_insert_with(|| "20".into());
        if let Some(n) = self.per_page {
            link_params.insert("per_page".into(), n.to_string());
        }
        let href = |base: &str, page: usize| {
            let mut params = link_params.clone();
            params.insert("page".into(), page.to_string());
            let pairs: Vec<(String, String)> = params.into_iter().collect();
            format!("{base}{}?{}", self.path, encode_pairs(&pairs))
        };
        let mut links = Vec::new();
        if let Some(p) = prev_page {
            links.push(format!("<{}>; rel=\"prev\"", href(&shared.base_url, p)));
        }
        if let Some(p) = next_page {
            let base = st.next_link_base.as_deref().unwrap_or(&shared.base_url);
            links.push(format!("<{}>; rel=\"next\"", href(base, p)));
        }
        links.push(format!("<{}>; rel=\"first\"", href(&shared.base_url, 1)));
        if !st.omit_totals {
            links.push(format!(
                "<{}>; rel=\"last\"",
                href(&shared.base_url, total_pages)
            ));
        }

        let mut resp = Resp::json(200, &Value::Array(items));
        let opt = |v: Option<usize>| v.map(|n| n.to_string()).unwrap_or_default();
        if st.pagination_headers != PaginationHeaders::LinkOnly {
            resp = resp
                .with_header("X-Per-Page", per_page.to_string())
                .with_header("X-Page", page.to_string())
                .with_header("X-Next-Page", opt(next_page))
                .with_header("X-Prev-Page", opt(prev_page));
            if !st.omit_totals {
                resp = resp
                    .with_header("X-Total", total.to_string())
                    .with_header("X-Total-Pages", total_pages.to_string());
            }
        }
        if st.pagination_headers != PaginationHeaders::XHeadersOnly {
            resp = resp.with_header("Link", links.join(", "));
        }
        resp
    }
}

/// `/api/v4/groups/<id>[/descendant_groups|/members]`: the `:id` segment as sent and the
/// endpoint.
fn group_route_of(route: &str) -> Option<(String, Endpoint)> {
    let rest = route.strip_prefix("/api/v4/groups/")?;
    let (id, tail) = match rest.split_once('/') {
        Some((id, tail)) => (id, tail),
        None => (rest, ""),
    };
    let endpoint = match tail {
        "" => Endpoint::Group,
        "descendant_groups" => Endpoint::DescendantGroups,
        "members" => Endpoint::Members,
        _ => return None,
    };
    (!id.is_empty()).then(|| (id.to_string(), endpoint))
}

/// `GET /api/v4/personal_access_tokens/self`: the token used, for any scope; the token checks
/// come first (401 for an expired or revoked one). With an OAuth token: 404.
fn token_self(st: &State, req: &Req) -> Resp {
    if let Err(resp) = api_authenticate(st, req, &[]) {
        return resp;
    }
    let token = presented_token(req).unwrap_or_default();
    let Some(t) = st.personal_tokens.get(&token) else {
        return match st.tokens.get(&token) {
            Some(_) => Resp::json(404, &json!({"message": "404 Not Found"})),
            None => Resp::json(401, &json!({"message": "401 Unauthorized"})),
        };
    };
    Resp::json(
        200,
        &json!({
            "id": t.id,
            "name": t.name,
            "revoked": t.revoked,
            "created_at": iso8601(t.created_at),
            "description": null,
            "scopes": t.scopes,
            "user_id": t.user_id,
            "last_used_at": iso8601(st.now()),
            "active": !t.revoked && !st.personal_token_expired(t),
            "expires_at": t.expires_at,
            "expired": st.personal_token_expired(t),
        }),
    )
}

/// `GET /api/v4/groups/:id`, `…/descendant_groups` and `…/members` (`read_api` or `api`). The
/// group must be visible to the caller, else 404 as for a group that does not exist.
fn api_group_route(st: &State, shared: &Shared, req: &Req, id: &str, endpoint: Endpoint) -> Resp {
    let user = match api_authenticate(st, req, &["api", "read_api"]) {
        Err(resp) => return resp,
        Ok(u) => u,
    };
    let not_found = || Resp::json(404, &json!({"message": "404 Group Not Found"}));
    let Some(group) = st.group_by_ref(id) else {
        return not_found();
    };
    let admin = user.is_some_and(|u| u.admin);
    if !admin && !st.visible_groups(user, true).contains(&group.id) {
        return not_found();
    }
    let (page, per_page) = match (parse_int(req, "page"), parse_int(req, "per_page")) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(resp), _) | (_, Err(resp)) => return resp,
    };
    let mut link_params: BTreeMap<String, String> = req.query.iter().cloned().collect();
    let listing = |path: String, link_params| Listing {
        path,
        page,
        per_page,
        link_params,
    };
    match endpoint {
        Endpoint::DescendantGroups => {
            let all_available = match parse_bool(req, "all_available") {
                Ok(v) => v,
                Err(resp) => return resp,
            };
            let visible = match all_available.unwrap_or(admin) {
                true if admin => st.groups.iter().map(|g| g.id).collect(),
                public_and_internal => st.visible_groups(user, public_and_internal),
            };
            let mut below: Vec<&Group> = st
                .groups
                .iter()
                .filter(|g| g.id != group.id && visible.contains(&g.id))
                .filter(|g| st.ancestors(g.id).contains(&group.id))
                .collect();
            below.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            for (k, v) in [
                ("order_by", "name"),
                ("sort", "asc"),
                ("statistics", "false"),
            ] {
                link_params.entry(k.into()).or_insert_with(|| v.into());
            }
            listing(
                format!("/api/v4/groups/{id}/descendant_groups"),
                link_params,
            )
            .answer(st, shared, &below, |g| group_json(st, shared, g))
        }
        Endpoint::Members => {
            let members: Vec<(&FakeUser, u32)> = st
                .group_members
                .get(&group.id)
                .into_iter()
                .flatten()
                .filter_map(|(user_id, level)| st.user_by_id(*user_id).map(|u| (u, *level)))
                .collect();
            listing(format!("/api/v4/groups/{id}/members"), link_params).answer(
                st,
                shared,
                &members,
                |(u, level)| member_json(shared, u, *level),
            )
        }
        _ => Resp::json(200, &group_json(st, shared, group)),
    }
}

/// A direct member as `GET /groups/:id/members` shows one: the user (`UserBasic`, whatever its
/// `state`) and its membership.
fn member_json(shared: &Shared, user: &FakeUser, access_level: u32) -> Value {
    let mut v = user_basic(shared, user);
    if let Some(fields) = v.as_object_mut() {
        fields.insert("access_level".into(), json!(access_level));
        fields.insert("created_at".into(), json!(USER_CREATED_AT));
        fields.insert("expires_at".into(), Value::Null);
        fields.insert("membership_state".into(), json!("active"));
    }
    v
}

/// GitLab's `UserBasic` entity: what every answer naming a user shows of them.
fn user_basic(shared: &Shared, user: &FakeUser) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": user.state,
        "locked": user.locked,
        "avatar_url": format!("https://secure.gravatar.com/avatar/{}?s=80&d=identicon", hex::encode(Sha256::digest(user.email.to_lowercase().as_bytes()))),
        "web_url": format!("{}/{}", shared.base_url, user.username),
    })
}

fn group_json(st: &State, shared: &Shared, g: &Group) -> Value {
    let mut chain: Vec<&Group> = st
        .ancestors(g.id)
        .iter()
        .filter_map(|a| st.group(*a))
        .collect();
    chain.reverse();
    chain.push(g);
    let full_name = chain
        .iter()
        .map(|x| x.name.as_str())
        .collect::<Vec<_>>()
        .join(" / ");
    json!({
        "id": g.id,
        "web_url": format!("{}/groups/{}", shared.base_url, g.full_path),
        "name": g.name,
        "path": g.path,
        "description": g.description,
        "visibility": g.visibility,
        "share_with_group_lock": false,
        "require_two_factor_authentication": false,
        "two_factor_grace_period": 48,
        "project_creation_level": "developer",
        "auto_devops_enabled": null,
        "subgroup_creation_level": "maintainer",
        "emails_disabled": false,
        "emails_enabled": true,
        "mentions_disabled": null,
        "lfs_enabled": true,
        "default_branch": null,
        "default_branch_protection": 2,
        "default_branch_protection_defaults": {
            "allowed_to_push": [{"access_level": 40}],
            "allow_force_push": false,
            "allowed_to_merge": [{"access_level": 40}]
        },
        "avatar_url": null,
        "request_access_enabled": true,
        "full_name": full_name,
        "full_path": g.full_path,
        "created_at": USER_CREATED_AT,
        "parent_id": g.parent_id,
        "organization_id": 1,
        "shared_runners_setting": "enabled",
        "ldap_cn": null,
        "ldap_access": null,
        "marked_for_deletion_on": null,
        "wiki_access_level": "enabled",
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn split_scopes(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for scope in s.split_whitespace() {
        if !out.iter().any(|x| x == scope) {
            out.push(scope.to_string());
        }
    }
    out
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("fake_gitlab: getrandom");
    hex::encode(buf)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends query parameters to a URI, keeping its query (and putting them before any fragment).
fn append_query(uri: &str, pairs: &[(&str, String)]) -> String {
    let (base, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut out = format!("{base}{sep}{}", encode_pairs(pairs));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

struct UriParts {
    scheme: String,
    userinfo: Option<String>,
    host: String,
    rest: String,
}

fn split_uri(uri: &str) -> Option<UriParts> {
    let (scheme, after) = uri.split_once("://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let host = if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        hostport[..=close].to_string()
    } else {
        hostport.split(':').next().unwrap_or("").to_string()
    };
    Some(UriParts {
        scheme: scheme.to_string(),
        userinfo,
        host,
        rest: rest.to_string(),
    })
}

fn is_loopback_ip(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{body}\n</body>\n</html>\n",
        html_escape(title)
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2021-01-05T11:00:00.000Z`, as GitLab formats times in JSON.
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `Tue, 05 Jan 2021 11:00:00 GMT` (IMF-fixdate), as in `RateLimit-ResetTime`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
