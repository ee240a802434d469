//! Self-tests of the fake GitLab (`tests/support/fake_gitlab.rs`), driven by a tiny HTTP client.

// Test code: a failed `unwrap()` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

#[path = "support/fake_gitlab.rs"]
mod fake_gitlab;

use fake_gitlab::{
    access, encode_pairs, parse_pairs, pkce_s256, BlockedUserRefresh, Endpoint, FakeGitlab,
    FakeUser, Fault, InactiveUserPolicy, PaginationHeaders,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "3f1c0e9b5d7a4c2e8b6f0a1d9e7c5b3a1f2e4d6c8b0a9f7e5d3c1b2a4f6e8d0c";
const SECRET: &str = "gloas-0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";
const REDIRECT: &str = "http://127.0.0.1:8080/oauth2/callback/gitlab";
const VERIFIER: &str = "ks02i3jdikdo2k0dkfodf3m39rjfjsdk0wk349rj3jrhf";

// --- a tiny HTTP/1.1 client ----------------------------------------------------------------

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut rest = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut body = Vec::new();
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("bad chunk"))?;
            let size_line = String::from_utf8_lossy(&rest[..eol]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = rest[eol + 2 + size + 2..].to_vec();
        }
        rest = body;
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        rest.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: rest,
    })
}

fn get(url: &str) -> HttpResponse {
    http("GET", url, &[], None).expect("GET")
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http("GET", url, headers, None).expect("GET")
}

fn post_form(url: &str, pairs: &[(&str, &str)], headers: &[(&str, &str)]) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    http("POST", url, &all, Some(&encode_pairs(pairs))).expect("POST")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// --- fixtures ----------------------------------------------------------------------------

fn fake() -> FakeGitlab {
    let fake = FakeGitlab::start();
    fake.register_app(CLIENT_ID, SECRET, &[REDIRECT], true);
    fake.add_user(FakeUser {
        id: 42,
        username: "alice".into(),
        name: "Alice Liddell".into(),
        email: "alice@example.com".into(),
        password: "wonderland".into(),
        ..FakeUser::default()
    });
    fake
}

fn authorize_url(fake: &FakeGitlab, extra: &[(&str, &str)]) -> String {
    let challenge = pkce_s256(VERIFIER);
    let mut pairs: Vec<(&str, &str)> = vec![
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "read_user read_api"),
        ("state", "st4te"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        pairs.retain(|(pk, _)| pk != k);
        pairs.push((k, v));
    }
    pairs.retain(|(_, v)| !v.is_empty());
    format!("{}/oauth/authorize?{}", fake.url(), encode_pairs(&pairs))
}

fn location_params(resp: &HttpResponse) -> Vec<(String, String)> {
    let location = resp.header("location").expect("Location");
    parse_pairs(location.split_once('?').map(|(_, q)| q).unwrap_or(""))
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Signs alice in and returns a fresh code for the default authorize URL.
fn code_for(fake: &FakeGitlab) -> String {
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(fake, &[]));
    assert_eq!(resp.status, 302, "{}", resp.text());
    param(&location_params(&resp), "code").expect("code")
}

fn exchange(fake: &FakeGitlab, code: &str, verifier: &str) -> HttpResponse {
    post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code_verifier", verifier),
        ],
        &[],
    )
}

fn groups_url(fake: &FakeGitlab, query: &str) -> String {
    format!("{}/api/v4/groups?{query}", fake.url())
}

fn full_paths(resp: &HttpResponse) -> Vec<String> {
    resp.json()
        .as_array()
        .expect("array")
        .iter()
        .map(|g| g["full_path"].as_str().unwrap().to_string())
        .collect()
}

// --- PKCE and the code flow ----------------------------------------------------------------

#[test]
fn s256_matches_the_gitlab_docs_test_vector() {
    assert_eq!(
        pkce_s256("ks02i3jdikdo2k0dkfodf3m39rjfjsdk0wk349rj3jrhf"),
        "2i0WFA-0AerkjQm4X4oDEhqA17QIAKNjXpagHBXmO_U"
    );
}

#[test]
fn code_flow_with_pkce_s256_gives_a_token_that_reads_the_user() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[]));
    assert_eq!(resp.status, 302);
    let location = resp.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=")),
        "{location}"
    );
    let params = location_params(&resp);
    let code = param(&params, "code").unwrap();
    assert_eq!(code.len(), 64);
    assert!(code.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(param(&params, "state").as_deref(), Some("st4te"));

    let token = exchange(&fake, &code, VERIFIER);
    assert_eq!(token.status, 200, "{}", token.text());
    assert_eq!(
        token.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(token.header("cache-control"), Some("no-store"));
    let t = token.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 7200);
    assert_eq!(t["scope"], "read_user read_api");
    assert_eq!(t["access_token"].as_str().unwrap().len(), 64);
    assert_eq!(t["refresh_token"].as_str().unwrap().len(), 64);
    assert!(t["created_at"].as_u64().unwrap() > 1_600_000_000);

    let access = t["access_token"].as_str().unwrap();
    let user = get_with(
        &format!("{}/api/v4/user", fake.url()),
        &[("Authorization", &bearer(access))],
    );
    assert_eq!(user.status, 200);
    let u = user.json();
    assert_eq!(u["id"], 42);
    assert_eq!(u["username"], "alice");
    assert_eq!(u["name"], "Alice Liddell");
    assert_eq!(u["email"], "alice@example.com");
    assert_eq!(u["state"], "active");
    assert_eq!(u["bot"], false);
    assert_eq!(u["locked"], false);
    assert_eq!(u["web_url"], format!("{}/alice", fake.url()));
    assert!(u.get("is_admin").is_none());
}

#[test]
fn sign_in_form_sets_a_session_cookie_then_authorize_issues_the_code() {
    let fake = fake();
    let url = authorize_url(&fake, &[]);
    let page = get(&url);
    assert_eq!(page.status, 200);
    let html = page.text();
    for needle in [
        "name=\"username\" id=\"username\"",
        "name=\"password\" id=\"password\"",
        "id=\"sign-in\"",
        "name=\"code_challenge\"",
        "/users/sign_in\"",
    ] {
        assert!(html.contains(needle), "{needle} missing in {html}");
    }
    // Submit the form as a browser would: hidden fields + credentials.
    let query = url.split_once('?').unwrap().1;
    let mut fields = parse_pairs(query);
    fields.push(("username".into(), "alice".into()));
    fields.push(("password".into(), "wonderland".into()));
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signed_in = post_form(&format!("{}/users/sign_in", fake.url()), &refs, &[]);
    assert_eq!(signed_in.status, 302);
    let cookie = signed_in.header("set-cookie").unwrap();
    assert!(cookie.starts_with("_gitlab_session="));
    let cookie = cookie.split(';').next().unwrap().to_string();
    let again = signed_in.header("location").unwrap().to_string();
    assert!(again.starts_with(&format!("{}/oauth/authorize?", fake.url())));

    let resp = get_with(&again, &[("Cookie", &cookie)]);
    assert_eq!(resp.status, 302);
    let params = location_params(&resp);
    assert!(param(&params, "code").is_some());
    assert_eq!(param(&params, "state").as_deref(), Some("st4te"));
}

#[test]
fn wrong_password_rerenders_the_sign_in_page_with_an_error() {
    let fake = fake();
    let resp = post_form(
        &format!("{}/users/sign_in", fake.url()),
        &[
            ("username", "alice"),
            ("password", "nope"),
            ("client_id", CLIENT_ID),
        ],
        &[],
    );
    assert_eq!(resp.status, 200);
    assert!(resp.header("set-cookie").is_none());
    let html = resp.text();
    assert!(html.contains("Invalid login or password."));
    assert!(html.contains("name=\"client_id\""));
}

#[test]
fn code_replay_is_refused_with_invalid_grant() {
    let fake = fake();
    let code = code_for(&fake);
    assert_eq!(exchange(&fake, &code, VERIFIER).status, 200);
    let replay = exchange(&fake, &code, VERIFIER);
    assert_eq!(replay.status, 400);
    assert_eq!(replay.json()["error"], "invalid_grant");
}

#[test]
fn wrong_code_verifier_is_refused_with_invalid_grant() {
    let fake = fake();
    let code = code_for(&fake);
    let resp = exchange(
        &fake,
        &code,
        "wrong-verifier-wrong-verifier-wrong-verifier-0",
    );
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "invalid_grant");
}

#[test]
fn missing_code_verifier_is_invalid_request() {
    let fake = fake();
    let code = code_for(&fake);
    let resp = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
        &[],
    );
    assert_eq!(resp.status, 400);
    let body = resp.json();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "Missing required parameter: code_verifier."
    );
}

#[test]
fn plain_pkce_method_is_accepted() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(
        &fake,
        &[
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
        ],
    ));
    let code = param(&location_params(&resp), "code").unwrap();
    assert_eq!(exchange(&fake, &code, VERIFIER).status, 200);
}

#[test]
fn expired_code_is_refused() {
    let fake = fake();
    let code = code_for(&fake);
    fake.advance_clock(601);
    let resp = exchange(&fake, &code, VERIFIER);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "invalid_grant");
}

#[test]
fn token_redirect_uri_mismatch_is_invalid_grant() {
    let fake = fake();
    fake.register_app(
        CLIENT_ID,
        SECRET,
        &[REDIRECT, "http://127.0.0.1:8080/other"],
        true,
    );
    let code = code_for(&fake);
    let resp = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:8080/other"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("code_verifier", VERIFIER),
        ],
        &[],
    );
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "invalid_grant");
}

#[test]
fn confidential_client_without_secret_gets_401_invalid_client() {
    let fake = fake();
    let code = code_for(&fake);
    let resp = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("code_verifier", VERIFIER),
        ],
        &[],
    );
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_client");
    assert!(resp
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_client\""));
}

#[test]
fn public_client_may_exchange_without_secret() {
    let fake = fake();
    fake.register_app(CLIENT_ID, SECRET, &[REDIRECT], false);
    let code = code_for(&fake);
    let resp = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("code_verifier", VERIFIER),
        ],
        &[],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn http_basic_client_authentication_is_accepted() {
    use base64::Engine as _;
    let fake = fake();
    let code = code_for(&fake);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"));
    let resp = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        &[("Authorization", &format!("Basic {basic}"))],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn unknown_grant_type_is_unsupported_grant_type() {
    let fake = fake();
    let resp = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "implicit"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
        &[],
    );
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "unsupported_grant_type");
}

#[test]
fn refresh_gives_a_new_pair_and_revokes_the_old_one() {
    let fake = fake();
    let code = code_for(&fake);
    let first = exchange(&fake, &code, VERIFIER).json();
    let refreshed = post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
        &[],
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let second = refreshed.json();
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let old = get_with(
        &format!("{}/api/v4/user", fake.url()),
        &[(
            "Authorization",
            &bearer(first["access_token"].as_str().unwrap()),
        )],
    );
    assert_eq!(old.status, 401);
    assert_eq!(old.json()["error"], "invalid_token");
}

/// Refreshes `refresh_token` as labgate's application.
fn refresh(fake: &FakeGitlab, refresh_token: &str) -> HttpResponse {
    post_form(
        &format!("{}/oauth/token", fake.url()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
        &[],
    )
}

/// Alice's tokens, with `openid` so that userinfo answers.
fn openid_tokens(fake: &FakeGitlab) -> Value {
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(fake, &[("scope", "openid email")]));
    let code = param(&location_params(&resp), "code").expect("code");
    exchange(fake, &code, VERIFIER).json()
}

fn userinfo_status(fake: &FakeGitlab, access_token: &str) -> u16 {
    get_with(
        &format!("{}/oauth/userinfo", fake.url()),
        &[("Authorization", &bearer(access_token))],
    )
    .status
}

#[test]
fn revoking_the_application_refuses_the_refresh_and_userinfo() {
    let fake = fake();
    let t = openid_tokens(&fake);
    assert_eq!(
        userinfo_status(&fake, t["access_token"].as_str().unwrap()),
        200
    );
    fake.revoke_app_authorization("alice", CLIENT_ID);
    assert_eq!(
        userinfo_status(&fake, t["access_token"].as_str().unwrap()),
        401
    );
    let r = refresh(&fake, t["refresh_token"].as_str().unwrap());
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    // Another application's tokens are left alone.
    let other = fake.issue_token("alice", "openid");
    fake.revoke_app_authorization("alice", CLIENT_ID);
    assert_eq!(userinfo_status(&fake, &other), 200);
}

#[test]
fn a_deleted_user_cannot_refresh_and_a_blocked_one_can_unless_told() {
    let fake = fake();
    let t = openid_tokens(&fake);
    fake.set_user_state("alice", "blocked");
    let r = refresh(&fake, t["refresh_token"].as_str().unwrap());
    assert_eq!(
        r.status,
        200,
        "GitLab does not look at the state: {}",
        r.text()
    );
    let t = r.json();
    assert_eq!(
        userinfo_status(&fake, t["access_token"].as_str().unwrap()),
        401,
        "userinfo serves active users only"
    );
    fake.set_blocked_user_refresh(BlockedUserRefresh::InvalidGrant);
    let r = refresh(&fake, t["refresh_token"].as_str().unwrap());
    assert_eq!(r.json()["error"], "invalid_grant");
    fake.set_user_state("alice", "active");
    let t = openid_tokens(&fake);
    fake.delete_user("alice");
    let r = refresh(&fake, t["refresh_token"].as_str().unwrap());
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(
        userinfo_status(&fake, t["access_token"].as_str().unwrap()),
        401
    );
}

#[test]
fn token_type_lowercase_and_omitted_scope_switches() {
    let fake = fake();
    fake.set_token_type_lowercase(true);
    fake.set_omit_token_scope(true);
    let code = code_for(&fake);
    let t = exchange(&fake, &code, VERIFIER).json();
    assert_eq!(t["token_type"], "bearer");
    assert!(t.get("scope").is_none());
}

// --- authorize errors ----------------------------------------------------------------------

#[test]
fn redirect_uri_mismatch_shows_an_error_page_without_redirecting() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(
        &fake,
        &[("redirect_uri", "http://evil.example/oauth2/callback/gitlab")],
    ));
    assert_eq!(resp.status, 400);
    assert!(resp.header("location").is_none());
    assert!(resp.text().contains("invalid_redirect_uri"));
}

#[test]
fn unknown_client_id_shows_an_error_page_without_redirecting() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[("client_id", "nope")]));
    assert_eq!(resp.status, 401);
    assert!(resp.header("location").is_none());
    assert!(resp.text().contains("invalid_client"));
}

#[test]
fn loopback_redirect_uri_ignores_the_port_but_not_localhost() {
    let fake = fake();
    fake.register_app(
        CLIENT_ID,
        SECRET,
        &[
            "http://127.0.0.1/oauth2/callback/gitlab",
            "http://localhost/cb",
        ],
        true,
    );
    fake.sign_in_as("alice");
    let loopback = "http://127.0.0.1:53123/oauth2/callback/gitlab";
    let resp = get(&authorize_url(&fake, &[("redirect_uri", loopback)]));
    assert_eq!(resp.status, 302);
    assert!(resp.header("location").unwrap().starts_with(loopback));
    let resp = get(&authorize_url(
        &fake,
        &[("redirect_uri", "http://localhost:53123/cb")],
    ));
    assert_eq!(resp.status, 400);
}

#[test]
fn invalid_scope_redirects_with_error_and_state() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[("scope", "read_user api")]));
    assert_eq!(resp.status, 302);
    let params = location_params(&resp);
    assert_eq!(param(&params, "error").as_deref(), Some("invalid_scope"));
    assert!(param(&params, "error_description").is_some());
    assert_eq!(param(&params, "state").as_deref(), Some("st4te"));
    assert!(param(&params, "code").is_none());
}

#[test]
fn omitted_scope_defaults_to_api_which_the_app_lacks() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[("scope", "")]));
    assert_eq!(
        param(&location_params(&resp), "error").as_deref(),
        Some("invalid_scope")
    );
}

#[test]
fn unsupported_response_type_redirects_with_the_error() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[("response_type", "token")]));
    assert_eq!(resp.status, 302);
    assert_eq!(
        param(&location_params(&resp), "error").as_deref(),
        Some("unsupported_response_type")
    );
}

#[test]
fn bad_code_challenge_method_is_invalid_request() {
    let fake = fake();
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[("code_challenge_method", "S512")]));
    assert_eq!(
        param(&location_params(&resp), "error").as_deref(),
        Some("invalid_request")
    );
}

#[test]
fn deny_next_authorization_redirects_with_access_denied_once() {
    let fake = fake();
    fake.sign_in_as("alice");
    fake.deny_next_authorization();
    let resp = get(&authorize_url(&fake, &[]));
    let params = location_params(&resp);
    assert_eq!(param(&params, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&params, "state").as_deref(), Some("st4te"));
    let resp = get(&authorize_url(&fake, &[]));
    assert!(param(&location_params(&resp), "code").is_some());
}

#[test]
fn redirect_keeps_the_existing_query_and_encodes_spaces_as_plus() {
    let fake = fake();
    let with_query = "http://127.0.0.1:8080/cb?tenant=a";
    fake.register_app(CLIENT_ID, SECRET, &[with_query], true);
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(
        &fake,
        &[("redirect_uri", with_query), ("state", "a b/c")],
    ));
    let location = resp.header("location").unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:8080/cb?tenant=a&code="),
        "{location}"
    );
    assert!(location.ends_with("&state=a+b%2Fc"), "{location}");
}

// --- /api/v4/user --------------------------------------------------------------------------

#[test]
fn missing_or_unknown_token_gets_401_message() {
    let fake = fake();
    let url = format!("{}/api/v4/user", fake.url());
    for resp in [
        get(&url),
        get_with(&url, &[("Authorization", "Bearer 00ff")]),
    ] {
        assert_eq!(resp.status, 401);
        assert_eq!(resp.text(), r#"{"message":"401 Unauthorized"}"#);
    }
}

#[test]
fn access_token_query_parameter_is_accepted() {
    let fake = fake();
    let token = fake.issue_token("alice", "read_user");
    let resp = get(&format!("{}/api/v4/user?access_token={token}", fake.url()));
    assert_eq!(resp.status, 200);
}

#[test]
fn expired_token_gets_401_invalid_token_with_www_authenticate() {
    let fake = fake();
    let token = fake.issue_token("alice", "read_user");
    fake.advance_clock(7200);
    let resp = get_with(
        &format!("{}/api/v4/user", fake.url()),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_token");
    assert!(resp
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));
}

#[test]
fn openid_only_token_gets_403_insufficient_scope_on_user() {
    let fake = fake();
    let token = fake.issue_token("alice", "openid profile email");
    let resp = get_with(
        &format!("{}/api/v4/user", fake.url()),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "insufficient_scope");
}

#[test]
fn blocked_user_gets_403_account_blocked() {
    let fake = fake();
    let token = fake.issue_token("alice", "read_user");
    fake.set_user_state("alice", "blocked");
    let resp = get_with(
        &format!("{}/api/v4/user", fake.url()),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.text(),
        r#"{"message":"403 Forbidden - Your account has been blocked."}"#
    );
}

#[test]
fn deactivated_user_is_served_with_its_state_by_default() {
    let fake = fake();
    let token = fake.issue_token("alice", "read_user");
    fake.set_user_state("alice", "deactivated");
    let url = format!("{}/api/v4/user", fake.url());
    let auth = bearer(&token);
    let resp = get_with(&url, &[("Authorization", &auth)]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["state"], "deactivated");
    fake.set_inactive_user_policy(InactiveUserPolicy::AllInactive);
    assert_eq!(get_with(&url, &[("Authorization", &auth)]).status, 403);
}

// --- /api/v4/groups ------------------------------------------------------------------------

#[test]
fn min_access_level_gives_direct_groups_and_descendants_never_ancestors() {
    let fake = fake();
    fake.add_group("acme/platform/sre");
    fake.add_group("acme/web");
    fake.add_group("other");
    fake.add_member("alice", "acme/platform", access::DEVELOPER);
    let token = fake.issue_token("alice", "read_api");
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10&per_page=100"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(full_paths(&resp), ["acme/platform", "acme/platform/sre"]);
    // A higher threshold than the membership gives nothing.
    let resp = get_with(
        &groups_url(&fake, "min_access_level=40"),
        &[("Authorization", &bearer(&token))],
    );
    assert!(full_paths(&resp).is_empty());
}

#[test]
fn default_listing_adds_ancestors() {
    let fake = fake();
    fake.add_member("alice", "acme/platform/sre", access::GUEST);
    fake.add_group("acme/web");
    let token = fake.issue_token("alice", "read_api");
    let resp = get_with(
        &groups_url(&fake, ""),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(
        full_paths(&resp),
        ["acme", "acme/platform", "acme/platform/sre"]
    );
}

#[test]
fn groups_keep_case_and_lookups_ignore_it() {
    let fake = fake();
    let id = fake.add_group("Beta-Labs/Core");
    assert_eq!(fake.add_group("beta-labs/core"), id);
    assert_eq!(fake.group_id("BETA-LABS/CORE"), Some(id));
    fake.add_member("alice", "beta-labs", access::OWNER);
    let token = fake.issue_token("alice", "read_api");
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10"),
        &[("Authorization", &bearer(&token))],
    );
    let groups = resp.json();
    assert_eq!(groups[0]["full_path"], "Beta-Labs");
    assert_eq!(groups[1]["full_path"], "Beta-Labs/Core");
    assert_eq!(groups[1]["parent_id"], groups[0]["id"]);
    assert_eq!(
        groups[1]["web_url"],
        format!("{}/groups/Beta-Labs/Core", fake.url())
    );
}

#[test]
fn invalid_min_access_level_is_400() {
    let fake = fake();
    let token = fake.issue_token("alice", "read_api");
    let resp = get_with(
        &groups_url(&fake, "min_access_level=11"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.text(),
        r#"{"error":"min_access_level does not have a valid value"}"#
    );
}

fn fake_with_250_groups() -> (FakeGitlab, String) {
    let fake = fake();
    for i in 0..250 {
        fake.add_member("alice", &format!("g{i:03}"), access::REPORTER);
    }
    let token = fake.issue_token("alice", "read_api");
    (fake, token)
}

#[test]
fn two_hundred_fifty_groups_give_three_pages_with_headers() {
    let (fake, token) = fake_with_250_groups();
    let auth = bearer(&token);
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let resp = get_with(
            &groups_url(
                &fake,
                &format!("min_access_level=10&per_page=100&page={page}"),
            ),
            &[("Authorization", &auth)],
        );
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-per-page"), Some("100"));
        assert_eq!(resp.header("x-page"), Some(page.to_string().as_str()));
        assert_eq!(resp.header("x-total"), Some("250"));
        assert_eq!(resp.header("x-total-pages"), Some("3"));
        let link = resp.header("link").unwrap().to_string();
        assert!(link.contains("rel=\"first\"") && link.contains("rel=\"last\""));
        seen.extend(full_paths(&resp));
        let next = resp.header("x-next-page").unwrap().to_string();
        let prev = resp.header("x-prev-page").unwrap();
        match page {
            1 => {
                assert_eq!(prev, "");
                assert_eq!(next, "2");
                assert!(!link.contains("rel=\"prev\""));
                let expected = format!(
                    "<{}/api/v4/groups?min_access_level=10&order_by=name&owned=false&page=2&per_page=100&sort=asc&statistics=false&with_custom_attributes=false>; rel=\"next\"",
                    fake.url()
                );
                assert!(link.contains(&expected), "{link}");
            }
            2 => assert_eq!((prev, next.as_str()), ("1", "3")),
            _ => {
                assert_eq!(prev, "2");
                assert_eq!(next, "");
                assert!(!link.contains("rel=\"next\""));
            }
        }
        if next.is_empty() {
            break;
        }
        page += 1;
    }
    assert_eq!(page, 3);
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}

#[test]
fn per_page_above_100_is_clamped() {
    let (fake, token) = fake_with_250_groups();
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10&per_page=500"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.header("x-per-page"), Some("100"));
    assert_eq!(resp.header("x-total-pages"), Some("3"));
    assert_eq!(full_paths(&resp).len(), 100);
}

#[test]
fn default_per_page_is_20() {
    let (fake, token) = fake_with_250_groups();
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.header("x-per-page"), Some("20"));
    assert_eq!(full_paths(&resp).len(), 20);
}

#[test]
fn page_past_the_end_is_empty_with_empty_next_and_prev() {
    let (fake, token) = fake_with_250_groups();
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10&per_page=100&page=9"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "[]");
    assert_eq!(resp.header("x-next-page"), Some(""));
    assert_eq!(resp.header("x-prev-page"), Some(""));
}

#[test]
fn read_user_token_gets_403_insufficient_scope_on_groups() {
    let fake = fake();
    let token = fake.issue_token("alice", "read_user openid");
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 403);
    let body = resp.json();
    assert_eq!(body["error"], "insufficient_scope");
    assert!(resp.header("www-authenticate").is_none());
}

#[test]
fn anonymous_groups_listing_shows_public_groups_only() {
    let fake = fake();
    fake.add_group("open");
    fake.add_group("secret");
    fake.set_group_visibility("open", "public");
    assert_eq!(full_paths(&get(&groups_url(&fake, ""))), ["open"]);
}

#[test]
fn omitted_totals_drop_x_total_and_last_link() {
    let (fake, token) = fake_with_250_groups();
    fake.set_omit_pagination_totals(true);
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10&per_page=100"),
        &[("Authorization", &bearer(&token))],
    );
    assert!(resp.header("x-total").is_none());
    assert!(resp.header("x-total-pages").is_none());
    assert_eq!(resp.header("x-next-page"), Some("2"));
    assert!(!resp.header("link").unwrap().contains("rel=\"last\""));
}

#[test]
fn link_only_and_x_headers_only_switches() {
    let (fake, token) = fake_with_250_groups();
    let url = groups_url(&fake, "min_access_level=10&per_page=100");
    let auth = bearer(&token);
    fake.set_pagination_headers(PaginationHeaders::LinkOnly);
    let resp = get_with(&url, &[("Authorization", &auth)]);
    assert!(resp.header("x-next-page").is_none());
    assert!(resp.header("link").unwrap().contains("rel=\"next\""));
    fake.set_pagination_headers(PaginationHeaders::XHeadersOnly);
    let resp = get_with(&url, &[("Authorization", &auth)]);
    assert!(resp.header("link").is_none());
    assert_eq!(resp.header("x-next-page"), Some("2"));
}

#[test]
fn next_link_can_point_to_another_host() {
    let (fake, token) = fake_with_250_groups();
    fake.set_next_link_base(Some("http://evil.example:9"));
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10&per_page=100"),
        &[("Authorization", &bearer(&token))],
    );
    let link = resp.header("link").unwrap();
    assert!(
        link.contains("<http://evil.example:9/api/v4/groups?"),
        "{link}"
    );
    assert!(link.contains(&format!("<{}/api/v4/groups?", fake.url())));
}

// --- faults, recorder, lifecycle -----------------------------------------------------------

#[test]
fn status_fault_fires_and_is_recorded() {
    let fake = fake();
    fake.set_fault(Endpoint::User, Fault::internal_error());
    let resp = get(&format!("{}/api/v4/user", fake.url()));
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), r#"{"message":"500 Internal Server Error"}"#);
    let recorded = fake.requests_to("/api/v4/user");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].endpoint, Some(Endpoint::User));
    assert_eq!(recorded[0].fault, Some(Fault::Status(500)));
    fake.clear_faults();
    assert_eq!(get(&format!("{}/api/v4/user", fake.url())).status, 401);
}

#[test]
fn fault_on_nth_call_hits_only_that_call() {
    let fake = fake();
    fake.set_fault_on_call(Endpoint::User, 2, Fault::Status(503));
    let url = format!("{}/api/v4/user", fake.url());
    let statuses: Vec<u16> = (0..3).map(|_| get(&url).status).collect();
    assert_eq!(statuses, [401, 503, 401]);
    assert_eq!(fake.call_count(Endpoint::User), 3);
}

#[test]
fn fault_for_first_calls_then_recovers() {
    let fake = fake();
    fake.set_fault_for_calls(Endpoint::Token, 2, Fault::Status(502));
    let url = format!("{}/oauth/token", fake.url());
    let statuses: Vec<u16> = (0..3)
        .map(|_| post_form(&url, &[("grant_type", "nope")], &[]).status)
        .collect();
    assert_eq!(statuses, [502, 502, 400]);
}

#[test]
fn fault_on_groups_page_n_only() {
    let (fake, token) = fake_with_250_groups();
    fake.set_fault_on_groups_page(2, Fault::Status(500));
    let auth = bearer(&token);
    let page = |n: u32| {
        get_with(
            &groups_url(&fake, &format!("min_access_level=10&per_page=100&page={n}")),
            &[("Authorization", &auth)],
        )
        .status
    };
    assert_eq!((page(1), page(2), page(3)), (200, 500, 200));
}

#[test]
fn rate_limit_text_fault_has_retry_after() {
    let fake = fake();
    fake.set_fault(
        Endpoint::Groups,
        Fault::RateLimited {
            retry_after: Some(7),
        },
    );
    let resp = get(&groups_url(&fake, ""));
    assert_eq!(resp.status, 429);
    assert_eq!(resp.text(), "Retry later\n");
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert!(resp.header("ratelimit-reset").is_some());
}

#[test]
fn rate_limit_json_fault_without_retry_after() {
    let fake = fake();
    fake.set_fault(
        Endpoint::Groups,
        Fault::RateLimitedJson { retry_after: None },
    );
    let resp = get(&groups_url(&fake, ""));
    assert_eq!(resp.status, 429);
    assert_eq!(
        resp.json()["message"]["error"],
        "This endpoint has been requested too many times. Try again later."
    );
    assert!(resp.header("retry-after").is_none());
}

#[test]
fn malformed_json_fault() {
    let fake = fake();
    fake.set_fault(Endpoint::User, Fault::MalformedJson);
    let resp = get(&format!("{}/api/v4/user", fake.url()));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "{\"id\": 1,");
    assert!(serde_json::from_slice::<Value>(&resp.body).is_err());
}

#[test]
fn oversized_fault_sends_ten_mebibytes_of_valid_json() {
    let fake = fake();
    fake.set_fault(Endpoint::Groups, Fault::oversized());
    let resp = get(&groups_url(&fake, ""));
    assert!(resp.body.len() >= 10 * 1024 * 1024);
    assert!(resp.json().is_array());
    fake.set_fault(
        Endpoint::User,
        Fault::Oversized {
            bytes: 1 << 20,
            chunked: true,
        },
    );
    let resp = get(&format!("{}/api/v4/user", fake.url()));
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert!(resp.body.len() >= 1 << 20);
    assert_eq!(resp.json()["id"], 1);
}

#[test]
fn close_connection_fault_answers_nothing() {
    let fake = fake();
    fake.set_fault_on_call(Endpoint::Token, 1, Fault::CloseConnection);
    let url = format!("{}/oauth/token", fake.url());
    let body = encode_pairs(&[("grant_type", "authorization_code")]);
    let err = http("POST", &url, &[], Some(&body))
        .err()
        .expect("no response");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    // The server is still fine afterwards.
    assert_eq!(http("POST", &url, &[], Some(&body)).unwrap().status, 400);
    assert_eq!(
        fake.requests_to("/oauth/token")[0].fault,
        Some(Fault::CloseConnection)
    );
}

#[test]
fn delay_fault_delays_the_normal_answer() {
    let fake = fake();
    fake.set_fault(Endpoint::User, Fault::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    let resp = get(&format!("{}/api/v4/user", fake.url()));
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status, 401);
}

#[test]
fn recorder_shows_pkce_parameters_and_secret_only_at_token() {
    let fake = fake();
    let code = code_for(&fake);
    let token = exchange(&fake, &code, VERIFIER).json();
    let access = token["access_token"].as_str().unwrap().to_string();
    get_with(
        &format!("{}/api/v4/user", fake.url()),
        &[("Authorization", &bearer(&access))],
    );
    let authorize = &fake.requests_to("/oauth/authorize")[0];
    assert_eq!(
        authorize.query_param("code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        authorize.query_param("code_challenge"),
        Some(pkce_s256(VERIFIER))
    );
    let token_req = &fake.requests_to("/oauth/token")[0];
    assert_eq!(token_req.method, "POST");
    assert_eq!(
        token_req.form_param("code_verifier").as_deref(),
        Some(VERIFIER)
    );
    let with_secret: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.contains(SECRET))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(with_secret, ["/oauth/token"]);
    assert_eq!(
        fake.requests_to("/api/v4/user")[0].header("authorization"),
        Some(bearer(&access).as_str())
    );
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[test]
fn path_prefix_is_served_and_used_in_links() {
    let fake = FakeGitlab::start_with_prefix("/gitlab");
    assert!(fake.url().ends_with("/gitlab"));
    fake.add_user(FakeUser::new(7, "bob"));
    fake.add_member("bob", "team", access::GUEST);
    let token = fake.issue_token("bob", "read_api");
    let resp = get_with(
        &groups_url(&fake, "min_access_level=10"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("link")
        .unwrap()
        .contains(&format!("<{}/api/v4/groups?", fake.url())));
    assert_eq!(fake.requests_to("/api/v4/groups").len(), 1);
    let root = fake.url().trim_end_matches("/gitlab").to_string();
    assert_eq!(get(&format!("{root}/api/v4/user")).status, 404);
}

#[test]
fn dropped_fake_answers_503() {
    let fake = fake();
    let url = format!("{}/api/v4/user", fake.url());
    drop(fake);
    assert_eq!(get(&url).status, 503);
}

#[test]
fn recording_can_be_switched_off() {
    let fake = fake();
    fake.set_recording(false);
    get(&format!("{}/api/v4/user", fake.url()));
    assert!(fake.requests().is_empty());
    assert_eq!(fake.call_count(Endpoint::User), 1);
}

#[test]
fn date_helpers_match_the_gitlab_md_example() {
    assert_eq!(
        fake_gitlab::http_date(1_609_844_400),
        "Tue, 05 Jan 2021 11:00:00 GMT"
    );
    assert_eq!(
        fake_gitlab::iso8601(1_609_844_400),
        "2021-01-05T11:00:00.000Z"
    );
}

// --- OIDC: userinfo and discovery ---------------------------------------------------------------

fn userinfo_with(fake: &FakeGitlab, token: &str) -> HttpResponse {
    get_with(
        &format!("{}/oauth/userinfo", fake.url()),
        &[("Authorization", &bearer(token))],
    )
}

#[test]
fn the_code_flow_with_openid_email_gives_a_token_that_reads_userinfo() {
    let fake = fake();
    fake.add_member("alice", "acme/platform", access::GUEST);
    fake.sign_in_as("alice");
    let resp = get(&authorize_url(&fake, &[("scope", "openid email")]));
    assert_eq!(resp.status, 302, "{}", resp.text());
    let code = param(&location_params(&resp), "code").unwrap();
    let token = exchange(&fake, &code, VERIFIER).json();
    assert_eq!(token["scope"], "openid email");
    let info = userinfo_with(&fake, token["access_token"].as_str().unwrap());
    assert_eq!(info.status, 200, "{}", info.text());
    let claims = info.json();
    assert_eq!(claims["sub"], "42", "sub is the id as a string");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["nickname"], "alice");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], serde_json::json!(["acme/platform"]));
    assert_eq!(fake.call_count(Endpoint::Userinfo), 1);
}

#[test]
fn userinfo_groups_are_direct_groups_and_descendants_never_ancestors() {
    let fake = fake();
    fake.add_group("acme/platform/sre");
    fake.add_group("acme/web");
    fake.add_member("alice", "acme/platform", access::GUEST);
    fake.add_member("alice", "other", access::OWNER);
    fake.add_member("alice", "labs", access::DEVELOPER);
    let token = fake.issue_token("alice", "openid");
    let claims = userinfo_with(&fake, &token).json();
    assert_eq!(
        claims["groups"],
        serde_json::json!(["acme/platform", "acme/platform/sre", "labs", "other"])
    );
    assert_eq!(
        claims["https://gitlab.org/claims/groups/owner"],
        serde_json::json!(["other"])
    );
    assert_eq!(
        claims["https://gitlab.org/claims/groups/developer"],
        serde_json::json!(["labs"])
    );
    assert!(
        claims
            .get("https://gitlab.org/claims/groups/maintainer")
            .is_none(),
        "an empty role claim is absent: {claims}"
    );
    let none = FakeUser::new(7, "nobody");
    fake.add_user(none);
    let claims = userinfo_with(&fake, &fake.issue_token("nobody", "openid")).json();
    assert_eq!(claims["groups"], serde_json::json!([]), "groups may be []");
}

#[test]
fn userinfo_gives_the_primary_email_only_with_the_email_scope() {
    let fake = fake();
    let claims = userinfo_with(&fake, &fake.issue_token("alice", "openid")).json();
    assert!(claims.get("email").is_none(), "no public email: {claims}");
    assert!(claims.get("email_verified").is_none(), "{claims}");
    fake.update_user("alice", |u| {
        u.public_email = Some("alice@public.example".into())
    });
    let claims = userinfo_with(&fake, &fake.issue_token("alice", "openid")).json();
    assert_eq!(claims["email"], "alice@public.example");
    fake.update_user("alice", |u| u.email_verified = false);
    let claims = userinfo_with(&fake, &fake.issue_token("alice", "openid email")).json();
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], false);
}

#[test]
fn userinfo_refuses_without_openid_403_and_a_bad_token_401() {
    let fake = fake();
    let resp = userinfo_with(&fake, &fake.issue_token("alice", "read_api"));
    assert_eq!(resp.status, 403);
    assert!(resp
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
    for token in [String::from("00ff"), String::new()] {
        let resp = userinfo_with(&fake, &token);
        assert_eq!(resp.status, 401, "{token:?}");
        assert!(resp
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""));
        assert!(resp.body.is_empty());
    }
    let expired = fake.issue_token("alice", "openid");
    fake.advance_clock(7200);
    assert_eq!(userinfo_with(&fake, &expired).status, 401);
    let revoked = fake.issue_token("alice", "openid");
    fake.revoke_token(&revoked);
    assert_eq!(userinfo_with(&fake, &revoked).status, 401);
}

#[test]
fn userinfo_serves_active_users_only() {
    let fake = fake();
    let token = fake.issue_token("alice", "openid");
    for state in ["blocked", "deactivated", "banned"] {
        fake.set_user_state("alice", state);
        assert_eq!(userinfo_with(&fake, &token).status, 401, "{state}");
    }
    fake.set_user_state("alice", "active");
    assert_eq!(userinfo_with(&fake, &token).status, 200);
}

#[test]
fn userinfo_answers_post_and_the_access_token_parameter() {
    let fake = fake();
    let token = fake.issue_token("alice", "openid");
    let resp = get(&format!(
        "{}/oauth/userinfo?access_token={token}",
        fake.url()
    ));
    assert_eq!(resp.status, 200);
    let resp = http(
        "POST",
        &format!("{}/oauth/userinfo", fake.url()),
        &[("Authorization", &bearer(&token))],
        Some(""),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
}

#[test]
fn discovery_names_the_issuer_endpoints_and_scopes_and_can_be_changed() {
    let fake = FakeGitlab::start_with_prefix("gitlab");
    let doc = get(&format!("{}/.well-known/openid-configuration", fake.url())).json();
    assert_eq!(doc["issuer"], fake.url());
    assert_eq!(
        doc["userinfo_endpoint"],
        format!("{}/oauth/userinfo", fake.url())
    );
    assert_eq!(doc["token_endpoint"], format!("{}/oauth/token", fake.url()));
    let scopes = doc["scopes_supported"].as_array().unwrap();
    for s in ["openid", "email", "read_api"] {
        assert!(scopes.iter().any(|x| x == s), "{s}");
    }
    fake.set_issuer(Some("https://gitlab.example"));
    fake.set_scopes_supported(Some(&["openid", "read_api"]));
    let doc = get(&format!("{}/.well-known/openid-configuration", fake.url())).json();
    assert_eq!(doc["issuer"], "https://gitlab.example");
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["openid", "read_api"])
    );
    fake.set_fault(Endpoint::Discovery, Fault::Status(502));
    let resp = get(&format!("{}/.well-known/openid-configuration", fake.url()));
    assert_eq!(resp.status, 502);
}

// --- access tokens, single groups, descendant groups and members ---------------------------

/// `acme` with `acme/platform`, `acme/platform/sre`, `acme/data`, and `beta` beside it; alice
/// is a direct member of `acme`, bob of `acme/platform/sre` only.
fn fake_with_tree() -> FakeGitlab {
    let fake = fake();
    fake.add_user(FakeUser::new(7, "bob"));
    for path in ["acme/platform/sre", "acme/data", "beta"] {
        fake.add_group(path);
    }
    fake.add_member("alice", "acme", access::MAINTAINER);
    fake.add_member("bob", "acme/platform/sre", access::DEVELOPER);
    fake
}

fn api(fake: &FakeGitlab, path: &str) -> String {
    format!("{}/api/v4/{path}", fake.url())
}

fn private(token: &str) -> [(&'static str, &str); 1] {
    [("PRIVATE-TOKEN", token)]
}

/// `GET /api/v4/<path>` with a new `read_api` personal access token of `username`.
fn get_as(fake: &FakeGitlab, username: &str, path: &str) -> HttpResponse {
    let token = fake.add_personal_access_token(username, "t", "read_api", None);
    get_with(&api(fake, path), &private(&token))
}

/// `count` people `m000`, `m001`, ... (ids from 100), each a direct member of `groups`.
fn add_people(fake: &FakeGitlab, count: u64, groups: &[&str]) {
    for i in 0..count {
        let name = format!("m{i:03}");
        fake.add_user(FakeUser::new(100 + i, &name));
        for group in groups {
            fake.add_member(&name, group, access::DEVELOPER);
        }
    }
}

/// The full paths a listing answered, sorted.
fn sorted_paths(resp: &HttpResponse) -> Vec<String> {
    let mut paths = full_paths(resp);
    paths.sort();
    paths
}

#[test]
fn a_personal_access_token_is_read_from_private_token_bearer_or_the_parameter() {
    let fake = fake_with_tree();
    let token = fake.add_personal_access_token("alice", "labgate", "read_api", None);
    assert!(token.starts_with("glpat-"), "{token}");
    let by_header = get_with(&api(&fake, "personal_access_tokens/self"), &private(&token));
    assert_eq!(by_header.status, 200, "{}", by_header.text());
    let me = by_header.json();
    assert_eq!(me["name"], "labgate");
    assert_eq!(me["scopes"], serde_json::json!(["read_api"]));
    assert_eq!(me["user_id"], 42);
    assert_eq!(
        (me["active"].clone(), me["revoked"].clone()),
        (true.into(), false.into())
    );
    assert!(me["expires_at"].is_null());
    assert!(
        !by_header.text().contains(&token),
        "the value is never returned"
    );
    let by_bearer = get_with(
        &api(&fake, "groups/acme"),
        &[("Authorization", &bearer(&token))],
    );
    assert_eq!(by_bearer.status, 200);
    let by_param = get(&api(&fake, &format!("groups/acme?private_token={token}")));
    assert_eq!(by_param.status, 200);
    let unknown = get_with(&api(&fake, "groups/acme"), &private("glpat-nope"));
    assert_eq!(
        (unknown.status, unknown.text()),
        (401, r#"{"message":"401 Unauthorized"}"#.to_string())
    );
}

#[test]
fn token_self_answers_any_scope_but_an_oauth_token_gets_404() {
    let fake = fake_with_tree();
    let read_user = fake.add_personal_access_token("alice", "narrow", "read_user", None);
    let me = get_with(
        &api(&fake, "personal_access_tokens/self"),
        &private(&read_user),
    );
    assert_eq!(me.status, 200);
    let group = get_with(&api(&fake, "groups/acme"), &private(&read_user));
    assert_eq!(group.status, 403);
    assert_eq!(group.json()["error"], "insufficient_scope");
    let oauth = fake.issue_token("alice", "read_api");
    let resp = get_with(
        &api(&fake, "personal_access_tokens/self"),
        &[("Authorization", &bearer(&oauth))],
    );
    assert_eq!(resp.status, 404);
}

#[test]
fn an_access_token_expires_at_the_start_of_its_day_and_can_be_revoked() {
    let fake = fake_with_tree();
    let today = fake.date_in_days(0);
    let tomorrow = fake.date_in_days(1);
    assert!(tomorrow > today && today.len() == 10, "{today} {tomorrow}");
    let expired = fake.add_personal_access_token("alice", "old", "read_api", Some(&today));
    let resp = get_with(
        &api(&fake, "personal_access_tokens/self"),
        &private(&expired),
    );
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_token");
    assert!(resp.text().contains("Token is expired"), "{}", resp.text());
    let live = fake.add_personal_access_token("alice", "new", "read_api", Some(&tomorrow));
    let resp = get_with(&api(&fake, "personal_access_tokens/self"), &private(&live));
    assert_eq!(resp.json()["expires_at"], tomorrow.as_str());
    fake.advance_clock(86_400);
    let resp = get_with(&api(&fake, "groups/acme"), &private(&live));
    assert_eq!(resp.status, 401, "expired once its day starts");
    let revoked = fake.add_personal_access_token("alice", "gone", "read_api", None);
    fake.revoke_access_token(&revoked);
    let resp = get_with(&api(&fake, "groups/acme"), &private(&revoked));
    assert_eq!(resp.status, 401);
    assert!(resp.text().contains("Token was revoked"), "{}", resp.text());
}

#[test]
fn a_blocked_owners_token_gets_403_blocked() {
    let fake = fake_with_tree();
    let token = fake.add_personal_access_token("alice", "labgate", "read_api", None);
    fake.set_user_state("alice", "blocked");
    let resp = get_with(&api(&fake, "groups/acme/members"), &private(&token));
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json()["message"],
        "403 Forbidden - Your account has been blocked."
    );
}

#[test]
fn a_group_access_token_is_a_bot_member_of_its_group() {
    let fake = fake_with_tree();
    let (token, bot) =
        fake.add_group_access_token("acme", "provisioning", "read_api", access::REPORTER, None);
    let group_id = fake.group_id("acme").unwrap();
    assert!(bot.starts_with(&format!("group_{group_id}_bot_")), "{bot}");
    let members = get_with(&api(&fake, "groups/acme/members"), &private(&token));
    assert_eq!(members.status, 200);
    let usernames: Vec<String> = members
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap().to_string())
        .collect();
    assert!(usernames.contains(&bot) && usernames.contains(&"alice".to_string()));
    let me = get_with(&api(&fake, "user"), &private(&token)).json();
    assert_eq!(
        (me["username"].as_str(), me["bot"].clone()),
        (Some(bot.as_str()), true.into())
    );
    let sub = get_with(&api(&fake, "groups/acme%2Fplatform"), &private(&token));
    assert_eq!(sub.status, 200, "a member of acme sees its subgroups");
    let beta = get_with(&api(&fake, "groups/beta"), &private(&token));
    assert_eq!(beta.status, 404, "nor member of beta");
}

#[test]
fn a_group_is_found_by_id_or_encoded_path_and_hidden_ones_are_404() {
    let fake = fake_with_tree();
    let bob = fake.add_personal_access_token("bob", "t", "read_api", None);
    let sre = fake.group_id("acme/platform/sre").unwrap();
    let by_path = get_with(&api(&fake, "groups/acme%2Fplatform%2Fsre"), &private(&bob));
    let by_id = get_with(&api(&fake, &format!("groups/{sre}")), &private(&bob));
    assert_eq!((by_path.status, by_id.status), (200, 200));
    assert_eq!(by_path.json()["full_path"], "acme/platform/sre");
    assert_eq!(by_id.json()["id"], sre);
    let ancestor = get_with(&api(&fake, "groups/acme"), &private(&bob));
    assert_eq!(
        ancestor.status, 200,
        "ancestors of one's groups are visible"
    );
    for hidden in ["groups/acme%2Fdata", "groups/beta", "groups/nowhere"] {
        let resp = get_with(&api(&fake, hidden), &private(&bob));
        assert_eq!(
            (resp.status, resp.text()),
            (404, r#"{"message":"404 Group Not Found"}"#.to_string()),
            "{hidden}"
        );
    }
}

#[test]
fn descendant_groups_are_every_visible_level_below_the_group_itself_excluded() {
    let fake = fake_with_tree();
    let resp = get_as(&fake, "alice", "groups/acme/descendant_groups");
    assert_eq!(resp.status, 200);
    assert_eq!(
        sorted_paths(&resp),
        ["acme/data", "acme/platform", "acme/platform/sre"]
    );
    assert_eq!(
        sorted_paths(&get_as(&fake, "bob", "groups/acme/descendant_groups")),
        ["acme/platform", "acme/platform/sre"],
        "a member of a subgroup sees its branch only"
    );
}

#[test]
fn members_are_direct_only_and_blocked_ones_are_listed_with_their_state() {
    let fake = fake_with_tree();
    fake.add_user(FakeUser::new(8, "carol"));
    fake.add_member("carol", "acme", access::GUEST);
    fake.set_user_state("carol", "blocked");
    let alice = fake.add_personal_access_token("alice", "t", "read_api", None);
    let resp = get_with(&api(&fake, "groups/acme/members"), &private(&alice));
    assert_eq!(resp.status, 200);
    let members = resp.json();
    let rows: Vec<(String, String, u64)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["username"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
                m["access_level"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("carol".to_string(), "blocked".to_string(), 10),
            ("alice".to_string(), "active".to_string(), 40)
        ],
        "ordered by user id here; bob (acme/platform/sre) is not a direct member"
    );
    let sub = get_with(
        &api(&fake, "groups/acme%2Fplatform%2Fsre/members"),
        &private(&alice),
    );
    assert_eq!(sub.json()[0]["username"], "bob");
    fake.remove_member("bob", "acme/platform/sre");
    let sub = get_with(
        &api(&fake, "groups/acme%2Fplatform%2Fsre/members"),
        &private(&alice),
    );
    assert_eq!(sub.text(), "[]", "a removed membership is gone at once");
}

#[test]
fn members_are_paged_like_every_listing() {
    let fake = fake_with_tree();
    add_people(&fake, 230, &["acme/data"]);
    let alice = fake.add_personal_access_token("alice", "t", "read_api", None);
    let group = fake.group_id("acme/data").unwrap();
    let mut seen = Vec::new();
    let mut url = api(&fake, &format!("groups/{group}/members?per_page=100"));
    let mut pages = 0;
    loop {
        let resp = get_with(&url, &private(&alice));
        assert_eq!(resp.status, 200);
        pages += 1;
        assert_eq!(resp.header("x-total"), Some("230"));
        assert_eq!(resp.header("x-per-page"), Some("100"));
        seen.extend(
            resp.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_u64().unwrap()),
        );
        let link = resp.header("link").unwrap_or("").to_string();
        match link.split(", ").find(|l| l.ends_with("rel=\"next\"")) {
            Some(next) => {
                assert!(
                    next.contains(&format!("/groups/{group}/members?page=")),
                    "{next}"
                );
                url = next
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string();
            }
            None => {
                assert_eq!(resp.header("x-next-page"), Some(""));
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 230);
    let clamped = get_with(
        &api(&fake, "groups/acme%2Fdata/members?per_page=500"),
        &private(&alice),
    );
    assert_eq!(clamped.header("x-per-page"), Some("100"));
    let default = get_with(&api(&fake, "groups/acme%2Fdata/members"), &private(&alice));
    assert_eq!(default.header("x-per-page"), Some("20"));
}

#[test]
fn one_page_of_one_groups_members_can_fail_and_answers_can_be_slow() {
    let fake = fake_with_tree();
    add_people(&fake, 150, &["acme/data", "beta"]);
    let admin = FakeUser {
        admin: true,
        ..FakeUser::new(99, "root")
    };
    fake.add_user(admin);
    let root = fake.add_personal_access_token("root", "t", "read_api", None);
    fake.set_fault_on_group_page(Endpoint::Members, "acme/data", 2, Fault::Status(502), true);
    let page = |group: &str, n: u32| {
        get_with(
            &api(
                &fake,
                &format!("groups/{group}/members?per_page=100&page={n}"),
            ),
            &private(&root),
        )
        .status
    };
    assert_eq!(page("beta", 2), 200, "another group's page 2 is served");
    assert_eq!(page("acme%2Fdata", 1), 200);
    assert_eq!(page("acme%2Fdata", 2), 502);
    assert_eq!(page("acme%2Fdata", 2), 200, "once");
    fake.set_fault(Endpoint::Members, Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(page("beta", 1), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_deleted_user_leaves_the_members_and_takes_their_access_tokens() {
    let fake = fake_with_tree();
    add_people(&fake, 3, &["acme/data"]);
    let gone = fake.add_personal_access_token("m001", "t", "read_api", None);
    fake.delete_user("m001");
    let members = get_as(&fake, "alice", "groups/acme%2Fdata/members").json();
    let names: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m000", "m002"]);
    let resp = get_with(&api(&fake, "personal_access_tokens/self"), &private(&gone));
    assert_eq!(resp.status, 401);
    assert_eq!(get_as(&fake, "m002", "groups/acme%2Fdata").status, 200);
}
