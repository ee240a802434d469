//! The client against a tiny in-test HTTP server (std `TcpListener` on 127.0.0.1:0, a thread
//! answering canned responses in order and recording what it was sent).

use super::proxy::ProxyEnv;
use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the server got: the request line, the headers (names lower-cased) and the body.
#[derive(Debug, Clone, Default)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One canned answer: wait `delay`, write `head`, wait `pause`, write `rest`.
struct Reply {
    delay: Duration,
    head: String,
    pause: Duration,
    rest: String,
}

fn reply(text: impl Into<String>) -> Reply {
    Reply {
        delay: Duration::ZERO,
        head: text.into(),
        pause: Duration::ZERO,
        rest: String::new(),
    }
}

fn json(status: &str, body: &str, extra_headers: &str) -> Reply {
    reply(format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n\
         {extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

fn ok(body: &str, extra_headers: &str) -> Reply {
    json("200 OK", body, extra_headers)
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut seen = Seen::default();
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    seen.line = line.trim_end().to_string();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        seen.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = seen
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    seen.body = String::from_utf8_lossy(&body).into_owned();
    Some(seen)
}

/// Serves `replies`, one per connection; `{addr}` in a reply becomes the server's address.
/// Returns the base URL and what the server was sent.
fn canned(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let base = format!("http://{addr}");
    std::thread::spawn(move || {
        for r in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if let Some(s) = read_request(&mut reader) {
                log.lock().unwrap().push(s);
            }
            let mut stream = stream;
            std::thread::sleep(r.delay);
            let _ = stream.write_all(r.head.replace("{addr}", &addr).as_bytes());
            let _ = stream.flush();
            std::thread::sleep(r.pause);
            let _ = stream.write_all(r.rest.as_bytes());
        }
    });
    (base, seen)
}

fn settings(url: &str) -> GitlabSettings {
    GitlabSettings {
        url: url.into(),
        application_id: "app-id".into(),
        secret: "the-client-secret".into(),
    }
}

fn client() -> Client {
    Client::with_proxy_env(None, ProxyEnv::default()).unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn lines(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| s.line.clone())
        .collect()
}

const USER: &str = r#"{"sub":"1","preferred_username":"ann","name":"Ann"}"#;

// ---------------------------------------------------------------------------------------------
// GET /oauth/userinfo: the calls with a token (retries, deadlines, caps)

#[test]
fn user_is_read_with_the_bearer_token() {
    let (url, seen) = canned(vec![ok(USER, "")]);
    let user = client()
        .userinfo(&settings(&format!("{url}/")), "tok-123", soon())
        .unwrap();
    assert_eq!(user.username, "ann");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].line, "GET /oauth/userinfo HTTP/1.1");
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok-123"));
    assert_eq!(seen[0].header("accept"), Some("application/json"));
    assert!(seen[0]
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("labgate/")));
}

#[test]
fn a_gitlab_named_by_host_name_is_resolved() {
    // `localhost` is a name: ureq's own resolver looks it up (only IP literals skip it).
    let (url, seen) = canned(vec![ok(USER, "")]);
    let by_name = url.replace("127.0.0.1", "localhost");
    let user = client().userinfo(&settings(&by_name), "t", soon()).unwrap();
    assert_eq!(user.username, "ann");
    assert_eq!(lines(&seen), vec!["GET /oauth/userinfo HTTP/1.1"]);
}

#[test]
fn redirects_are_not_followed() {
    let (elsewhere, elsewhere_seen) = canned(vec![ok(USER, "")]);
    let (url, _) = canned(vec![reply(format!(
        "HTTP/1.1 302 Found\r\nLocation: {elsewhere}/oauth/userinfo\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    ))]);
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    match &err {
        GitlabError::Status {
            status: 302,
            detail,
            ..
        } => assert!(detail.contains(&elsewhere), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(elsewhere_seen.lock().unwrap().is_empty());
}

#[test]
fn an_oversized_userinfo_is_refused() {
    let big = format!(
        r#"{{"sub":"1","preferred_username":"ann","bio":"{}"}}"#,
        "x".repeat(MAX_USERINFO_BODY as usize)
    );
    let (url, _) = canned(vec![ok(&big, "")]);
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert_eq!(err, GitlabError::TooLarge { step: "userinfo" });
}

#[test]
fn an_oversized_answer_without_content_length_is_refused() {
    let big = "x".repeat(MAX_USERINFO_BODY as usize + 10);
    let (url, _) = canned(vec![reply(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{big}"
    ))]);
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert_eq!(err, GitlabError::TooLarge { step: "userinfo" });
}

#[test]
fn rate_limit_with_retry_after_is_waited_then_retried() {
    let (url, seen) = canned(vec![
        reply(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 12\r\n\
             Connection: close\r\n\r\nRetry later\n",
        ),
        ok(USER, ""),
    ]);
    let started = Instant::now();
    let user = client().userinfo(&settings(&url), "t", soon()).unwrap();
    assert_eq!(user.username, "ann");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn a_retry_after_beyond_the_cap_is_refused_at_once() {
    let (url, seen) = canned(vec![reply(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n",
    )]);
    let started = Instant::now();
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert_eq!(
        err,
        GitlabError::RateLimited {
            step: "userinfo",
            retry_after: Some(60)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn rate_limits_are_retried_twice_at_most() {
    let limited = || {
        reply(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
        )
    };
    let (url, seen) = canned(vec![limited(), limited(), limited(), ok(USER, "")]);
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert!(matches!(err, GitlabError::RateLimited { .. }), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[test]
fn a_server_error_gets_one_quick_retry() {
    let failing = || json("503 Service Unavailable", r#"{"message":"down"}"#, "");
    let (url, seen) = canned(vec![failing(), ok(USER, "")]);
    assert!(client().userinfo(&settings(&url), "t", soon()).is_ok());
    assert_eq!(seen.lock().unwrap().len(), 2);

    let (url, seen) = canned(vec![failing(), failing(), ok(USER, "")]);
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert_eq!(
        err,
        GitlabError::Status {
            step: "userinfo",
            status: 503,
            detail: "down".into()
        }
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn a_refused_token_is_a_status_error_and_not_retried() {
    let (url, seen) = canned(vec![
        json("401 Unauthorized", r#"{"message":"401 Unauthorized"}"#, ""),
        ok(USER, ""),
    ]);
    let err = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert!(
        matches!(err, GitlabError::Status { status: 401, .. }),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn the_deadline_bounds_a_slow_gitlab() {
    let (url, _) = canned(vec![Reply {
        delay: Duration::from_secs(5),
        ..ok(USER, "")
    }]);
    let started = Instant::now();
    let err = client()
        .userinfo(
            &settings(&url),
            "t",
            Instant::now() + Duration::from_millis(500),
        )
        .unwrap_err();
    assert_eq!(err, GitlabError::Timeout);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn the_deadline_bounds_a_body_that_trickles() {
    let body = format!("{USER}{}", " ".repeat(100));
    let (url, _) = canned(vec![Reply {
        delay: Duration::ZERO,
        head: format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{{",
            body.len()
        ),
        pause: Duration::from_secs(5),
        rest: body[1..].to_string(),
    }]);
    let started = Instant::now();
    let err = client()
        .userinfo(
            &settings(&url),
            "t",
            Instant::now() + Duration::from_millis(500),
        )
        .unwrap_err();
    assert_eq!(err, GitlabError::Timeout);
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_rate_limit_wait_past_the_deadline_is_not_waited() {
    let (url, seen) = canned(vec![reply(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n",
    )]);
    let started = Instant::now();
    let err = client()
        .userinfo(
            &settings(&url),
            "t",
            Instant::now() + Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(matches!(err, GitlabError::RateLimited { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn nothing_is_sent_once_the_deadline_has_passed() {
    let (url, seen) = canned(vec![ok(USER, "")]);
    let err = client()
        .userinfo(&settings(&url), "t", Instant::now())
        .unwrap_err();
    assert_eq!(err, GitlabError::Timeout);
    std::thread::sleep(Duration::from_millis(50));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_closed_port_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client()
        .userinfo(&settings(&format!("http://127.0.0.1:{port}")), "t", soon())
        .unwrap_err();
    assert!(matches!(err, GitlabError::Unreachable(_)), "{err}");
}

#[test]
fn tls_is_required_for_https_urls() {
    let (url, _) = canned(vec![ok(USER, "")]);
    let https = url.replace("http://", "https://");
    let err = client()
        .userinfo(&settings(&https), "t", soon())
        .unwrap_err();
    match err {
        GitlabError::Unreachable(why) => assert!(why.contains("TLS"), "{why}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// POST /oauth/token

const VERIFIER: &str = "ks02i3jdikdo2k0dkfodf3m39rjfjsdk0wk349rj3jrhf";
const CODE: &str = "4f9c2b1e8d7a6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615243f";

fn exchange(url: &str) -> Result<String, GitlabError> {
    exchange_tokens(url).map(|t| t.access)
}

fn exchange_tokens(url: &str) -> Result<Tokens, GitlabError> {
    client().exchange_code(
        &settings(url),
        "http://lg.example/oauth2/callback/gitlab",
        CODE,
        VERIFIER,
        soon(),
    )
}

/// Asserts that a form body holds exactly these pairs, in any order (`expected` sorted).
#[track_caller]
fn assert_form(body: &str, expected: &[(&str, &str)]) {
    let mut sent = form(body);
    sent.sort();
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(sent, expected);
}

fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[test]
fn each_code_exchange_sends_the_credentials_and_redirect_uri_of_its_own_settings() {
    // One client, so that the oauth2 client kept from one exchange is offered to the next:
    // a changed secret, application or redirect URI must reach GitLab at once.
    let answer = || {
        ok(
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":7200}"#,
            "Cache-Control: no-store\r\n",
        )
    };
    let (url, seen) = canned(vec![answer(), answer(), answer(), answer(), answer()]);
    let client = client();
    let first = settings(&url);
    let new_secret = GitlabSettings {
        secret: "a-new-secret".into(),
        ..settings(&url)
    };
    let new_app = GitlabSettings {
        application_id: "other-app".into(),
        ..new_secret.clone()
    };
    let here = "http://lg.example/oauth2/callback/gitlab";
    let moved = "https://lg.moved.example/oauth2/callback/gitlab";
    for (s, redirect) in [
        (&first, here),
        (&first, here),
        (&new_secret, here),
        (&new_app, here),
        (&new_app, moved),
    ] {
        client
            .exchange_code(s, redirect, CODE, VERIFIER, soon())
            .unwrap();
    }
    let sent: Vec<(String, String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|seen| {
            let form = form(&seen.body);
            let field = |name: &str| {
                let found = form.iter().find(|(k, _)| k == name);
                found.map(|(_, v)| v.clone()).unwrap_or_default()
            };
            (
                field("client_id"),
                field("client_secret"),
                field("redirect_uri"),
            )
        })
        .collect();
    let expected = |id: &str, secret: &str, redirect: &str| {
        (id.to_string(), secret.to_string(), redirect.to_string())
    };
    assert_eq!(
        sent,
        [
            expected("app-id", "the-client-secret", here),
            expected("app-id", "the-client-secret", here),
            expected("app-id", "a-new-secret", here),
            expected("other-app", "a-new-secret", here),
            expected("other-app", "a-new-secret", moved),
        ]
    );
}

#[test]
fn the_code_is_exchanged_with_secret_verifier_and_redirect_uri_in_the_body() {
    let (url, seen) = canned(vec![ok(
        r#"{"access_token":"abc","token_type":"Bearer","expires_in":7200,"refresh_token":"r","scope":"read_user read_api","created_at":1607635748}"#,
        "Cache-Control: no-store\r\n",
    )]);
    let tokens = exchange_tokens(&format!("{url}/gitlab")).unwrap();
    assert_eq!(tokens.access, "abc");
    assert_eq!(tokens.refresh.as_deref(), Some("r"));
    assert_eq!(
        tokens.scopes,
        Some(vec!["read_user".to_string(), "read_api".to_string()])
    );
    assert!(!format!("{tokens:?}").contains("abc"), "{tokens:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line, "POST /gitlab/oauth/token HTTP/1.1");
    assert_eq!(
        seen[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(seen[0].header("authorization"), None);
    assert_form(
        &seen[0].body,
        &[
            ("client_id", "app-id"),
            ("client_secret", "the-client-secret"),
            ("code", CODE),
            ("code_verifier", VERIFIER),
            ("grant_type", "authorization_code"),
            ("redirect_uri", "http://lg.example/oauth2/callback/gitlab"),
        ],
    );
}

#[test]
fn token_type_is_compared_ignoring_case_and_must_be_bearer() {
    let (url, _) = canned(vec![ok(
        r#"{"access_token":"abc","token_type":"bearer"}"#,
        "",
    )]);
    assert_eq!(exchange(&url).unwrap(), "abc");
    let (url, _) = canned(vec![ok(r#"{"access_token":"abc","token_type":"mac"}"#, "")]);
    assert!(matches!(
        exchange(&url),
        Err(GitlabError::Malformed { step: "token", .. })
    ));
}

#[test]
fn a_refused_grant_names_the_error_without_the_code() {
    let body = format!(
        r#"{{"error":"invalid_grant","error_description":"The provided authorization grant is invalid: {CODE}"}}"#
    );
    let (url, seen) = canned(vec![json("400 Bad Request", &body, ""), ok("{}", "")]);
    let err = exchange(&url).unwrap_err();
    assert_eq!(
        err,
        GitlabError::Denied(
            "invalid_grant: The provided authorization grant is invalid: [redacted]".into()
        )
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "a code is never retried");
}

#[test]
fn a_bad_client_is_denied() {
    let (url, _) = canned(vec![json(
        "401 Unauthorized",
        r#"{"error":"invalid_client","error_description":"Client authentication failed due to unknown client."}"#,
        "WWW-Authenticate: Bearer realm=\"Doorkeeper\", error=\"invalid_client\"\r\n",
    )]);
    match exchange(&url).unwrap_err() {
        GitlabError::Denied(why) => assert!(why.starts_with("invalid_client: "), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn token_server_errors_and_rate_limits_are_not_retried() {
    let (url, seen) = canned(vec![
        reply("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 6\r\nConnection: close\r\n\r\n<html>"),
        ok(r#"{"access_token":"abc","token_type":"bearer"}"#, ""),
    ]);
    assert_eq!(
        exchange(&url).unwrap_err(),
        GitlabError::Status {
            step: "token",
            status: 502,
            detail: String::new()
        }
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (url, seen) = canned(vec![
        reply("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        ok(r#"{"access_token":"abc","token_type":"bearer"}"#, ""),
    ]);
    assert_eq!(
        exchange(&url).unwrap_err(),
        GitlabError::RateLimited {
            step: "token",
            retry_after: Some(1)
        }
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

const REFRESH: &str = "8257e65c97202ed1726cf9571600918f3bffb2544b26e00a61df9897668c33a1";

fn refresh(url: &str) -> Result<Tokens, GitlabError> {
    client().refresh(&settings(url), REFRESH, soon())
}

#[test]
fn the_refresh_grant_sends_the_token_and_the_credentials_and_reads_the_new_pair() {
    let (url, seen) = canned(vec![ok(
        r#"{"access_token":"new-access","token_type":"Bearer","expires_in":7200,"refresh_token":"new-refresh","scope":"openid email","created_at":1607635748}"#,
        "",
    )]);
    let tokens = refresh(&url).unwrap();
    assert_eq!(tokens.access, "new-access");
    assert_eq!(tokens.refresh.as_deref(), Some("new-refresh"));
    assert_eq!(
        tokens.scopes,
        Some(vec!["openid".to_string(), "email".to_string()])
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].line, "POST /oauth/token HTTP/1.1");
    assert_form(
        &seen[0].body,
        &[
            ("client_id", "app-id"),
            ("client_secret", "the-client-secret"),
            ("grant_type", "refresh_token"),
            ("refresh_token", REFRESH),
        ],
    );
}

#[test]
fn a_refused_refresh_is_a_refused_grant_and_never_names_the_token() {
    let client_refused = r#"{"error":"invalid_client"}"#;
    let (url, _) = canned(vec![json("401 Unauthorized", client_refused, "")]);
    let err = refresh(&url).unwrap_err();
    assert!(
        !err.grant_refused() && err.configuration_fix().is_some(),
        "{err:?}"
    );
    let description = format!("The provided authorization grant is invalid: {REFRESH}");
    let body = serde_json::json!({ "error": "invalid_grant", "error_description": description });
    let answers = vec![json("400 Bad Request", &body.to_string(), ""), ok("{}", "")];
    let (url, seen) = canned(answers);
    let err = refresh(&url).unwrap_err();
    assert!(
        err.grant_refused() && !err.to_string().contains(REFRESH),
        "{err:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "never retried");
}

#[test]
fn a_refresh_is_never_retried_after_a_server_error() {
    let (url, seen) = canned(vec![
        reply("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        ok(r#"{"access_token":"abc","token_type":"bearer"}"#, ""),
    ]);
    let err = refresh(&url).unwrap_err();
    assert!(
        matches!(err, GitlabError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "GitLab may have rotated the pair"
    );
}

#[test]
fn a_token_answer_that_is_not_json_is_malformed_and_leaks_nothing() {
    for body in [
        r#"{"access_token":"abc"}"#,
        r#"{"access_token":12345678901,"token_type":"bearer"}"#,
        "<html>sign in</html>",
    ] {
        let (url, _) = canned(vec![ok(body, "")]);
        let err = exchange(&url).unwrap_err();
        assert!(
            matches!(err, GitlabError::Malformed { step: "token", .. }),
            "{body}: {err}"
        );
        let line = err.to_string();
        assert!(
            !line.contains("12345678901") && !line.contains("abc"),
            "{line}"
        );
    }
    let (url, _) = canned(vec![reply(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )]);
    assert!(matches!(
        exchange(&url),
        Err(GitlabError::Malformed { step: "token", .. })
    ));
}

#[test]
fn a_token_redirect_is_not_followed() {
    let (url, seen) = canned(vec![reply(
        "HTTP/1.1 302 Found\r\nLocation: https://gitlab.example/oauth/token\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )]);
    assert!(matches!(
        exchange(&url),
        Err(GitlabError::Status {
            step: "token",
            status: 302,
            ..
        })
    ));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn no_error_line_carries_a_secret() {
    // A GitLab that echoes everything it was sent in its error.
    let (url, _) = canned(vec![json(
        "500 Internal Server Error",
        &format!(r#"{{"message":"code={CODE} verifier={VERIFIER} secret=the-client-secret"}}"#),
        "",
    )]);
    let line = exchange(&url).unwrap_err().to_string();
    for secret in [CODE, VERIFIER, "the-client-secret"] {
        assert!(!line.contains(secret), "{line}");
    }
    let (url, _) = canned(vec![json(
        "404 Not Found",
        r#"{"message":"no such token tok-0123456789"}"#,
        "",
    )]);
    let line = client()
        .userinfo(&settings(&url), "tok-0123456789", soon())
        .unwrap_err()
        .to_string();
    assert!(!line.contains("tok-0123456789"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// What automatic provisioning reads with its access token

/// `f` with a reader of the GitLab at `url` holding the access token `glpat-secret-1`.
fn reading<T>(url: &str, f: impl FnOnce(&provision::Reader<'_>) -> T) -> T {
    let c = client();
    f(&provision::Reader {
        client: &c,
        base: url.trim_end_matches('/'),
        token: "glpat-secret-1",
        deadline: soon(),
    })
}

#[test]
fn members_are_read_page_after_page_with_the_access_token() {
    let (url, seen) = canned(vec![
        ok(
            r#"[{"id":7,"username":"ann","name":"Ann","state":"active"}]"#,
            "X-Next-Page: 2\r\n",
        ),
        ok(
            r#"[{"id":8,"username":"bob","name":"Bob","state":"blocked"}]"#,
            "X-Next-Page: \r\nLink: <http://{addr}/api/v4/groups/5/members?page=1>; rel=\"first\"\r\n",
        ),
    ]);
    let members = reading(&url, |r| r.members(5)).unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
    assert_eq!(names, ["ann", "bob"]);
    assert_eq!(
        lines(&seen),
        [
            "GET /api/v4/groups/5/members?per_page=100 HTTP/1.1",
            "GET /api/v4/groups/5/members?per_page=100&page=2 HTTP/1.1"
        ]
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].header("private-token"), Some("glpat-secret-1"));
    assert_eq!(seen[0].header("authorization"), None);
}

#[test]
fn a_link_to_the_next_page_is_followed_only_on_the_configured_gitlab() {
    let (url, seen) = canned(vec![
        ok(
            r#"[{"id":2,"full_path":"acme/dev","parent_id":1}]"#,
            "Link: <http://{addr}/api/v4/groups/1/descendant_groups?page=2&per_page=100>; rel=\"next\"\r\n",
        ),
        ok(r#"[{"id":3,"full_path":"acme/ops","parent_id":1}]"#, ""),
    ]);
    assert_eq!(reading(&url, |r| r.descendant_groups(1)).unwrap().len(), 2);
    assert_eq!(lines(&seen).len(), 2);
    let (url, seen) = canned(vec![ok(
        "[]",
        "Link: <http://evil.example:9/api/v4/groups/1/descendant_groups?page=2>; rel=\"next\"\r\n",
    )]);
    let err = reading(&url, |r| r.descendant_groups(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the configured GitLab"), "{err}");
    assert_eq!(lines(&seen).len(), 1, "never followed");
}

#[test]
fn a_page_number_that_does_not_grow_ends_the_listing_with_an_error() {
    let (url, _) = canned(vec![ok("[]", "X-Next-Page: 1\r\n")]);
    let err = reading(&url, |r| r.members(5)).unwrap_err().to_string();
    assert!(err.contains("does not follow page 1"), "{err}");
}

#[test]
fn a_refused_access_token_is_an_error_that_never_names_it() {
    let (url, _) = canned(vec![json(
        "401 Unauthorized",
        r#"{"error":"invalid_token","error_description":"Token was revoked: glpat-secret-1"}"#,
        "",
    )]);
    let err = reading(&url, |r| r.group("acme/platform")).unwrap_err();
    assert!(
        matches!(err, GitlabError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("glpat-secret-1"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Proxies

/// A CONNECT proxy for one tunnel: records the CONNECT line, then answers the tunnelled
/// request with `answer`.
fn connect_proxy(answer: Reply) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        if let Some(connect) = read_request(&mut reader) {
            log.lock().unwrap().push(connect);
            let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            if let Some(inner) = read_request(&mut reader) {
                log.lock().unwrap().push(inner);
                let _ = stream.write_all(answer.head.as_bytes());
            }
        }
    });
    (format!("http://{addr}"), seen)
}

#[test]
fn calls_go_through_the_proxy_unless_no_proxy_or_loopback() {
    let (proxy, seen) = connect_proxy(ok(USER, ""));
    let env = ProxyEnv::from_lookup(|name| match name {
        "HTTP_PROXY" => Some(proxy.clone()),
        "NO_PROXY" => Some("other.example".into()),
        _ => None,
    });
    let client = Client::with_proxy_env(None, env).unwrap();
    let user = client
        .userinfo(&settings("http://gitlab.test"), "t", soon())
        .unwrap();
    assert_eq!(user.username, "ann");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].line, "CONNECT gitlab.test:80 HTTP/1.1");
    assert_eq!(seen[1].line, "GET /oauth/userinfo HTTP/1.1");
    assert_eq!(seen[1].header("authorization"), Some("Bearer t"));
    drop(seen);

    // Loopback goes direct although the proxy is set.
    let (url, direct_seen) = canned(vec![ok(USER, "")]);
    assert!(client.userinfo(&settings(&url), "t", soon()).is_ok());
    assert_eq!(direct_seen.lock().unwrap().len(), 1);
}

#[test]
fn a_bad_proxy_variable_is_named_without_its_value() {
    for value in [
        "http://user:pa55word@[bad",
        "socks5://user:pa55word@proxy:1080",
    ] {
        let env = ProxyEnv::from_lookup(|name| (name == "https_proxy").then(|| value.to_string()));
        let err = Client::with_proxy_env(None, env).unwrap_err();
        assert!(err.starts_with("https_proxy: "), "{err}");
        assert!(!err.contains("pa55word"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// --ca-file

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("labgate-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[test]
fn a_ca_file_adds_its_roots_to_the_bundled_ones() {
    let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
    let pem = format!("some comment\n{}", pem_of(der));
    let roots = roots_with(pem.as_bytes()).unwrap();
    assert_eq!(
        roots.len(),
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1
    );
    let path = temp_file("good-ca.pem", pem.as_bytes());
    assert!(Client::with_proxy_env(Some(&path), ProxyEnv::default()).is_ok());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_ca_file_without_certificates_is_refused_clearly() {
    let path = temp_file("no-cert.pem", b"not a certificate\n");
    let err = Client::with_proxy_env(Some(&path), ProxyEnv::default()).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.starts_with("--ca-file ") && err.contains("no certificate found"),
        "{err}"
    );
}

#[test]
fn a_ca_file_with_a_broken_certificate_is_refused_clearly() {
    let garbage = pem_of(b"this is not DER at all");
    let err = roots_with(garbage.as_bytes()).unwrap_err();
    assert!(err.contains("cannot be used as a trusted root"), "{err}");
    let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let err = roots_with(bad_base64.as_bytes()).unwrap_err();
    assert!(err.starts_with("not a readable PEM file"), "{err}");
    let unterminated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    assert!(roots_with(unterminated.as_bytes()).is_err());
}

#[test]
fn a_missing_ca_file_is_named() {
    let err = Client::with_proxy_env(
        Some(std::path::Path::new("/nonexistent/ca.pem")),
        ProxyEnv::default(),
    )
    .unwrap_err();
    assert!(err.starts_with("--ca-file /nonexistent/ca.pem: "), "{err}");
}

// ---------------------------------------------------------------------------------------------
// GET /oauth/userinfo

const USERINFO: &str = r#"{"sub":"7","preferred_username":"ann","name":"Ann","email":"a@x.org",
    "email_verified":true,"groups":["acme/web","acme"]}"#;

#[test]
fn userinfo_is_read_with_the_bearer_token_in_one_call() {
    let (url, seen) = canned(vec![ok(USERINFO, "")]);
    let info = client()
        .userinfo(&settings(&format!("{url}/gitlab")), "tok123", soon())
        .unwrap();
    assert_eq!(info.id, 7);
    assert_eq!(info.groups, ["acme", "acme/web"]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].line, "GET /gitlab/oauth/userinfo HTTP/1.1");
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok123"));
}

#[test]
fn userinfo_403_names_the_scopes_to_tick_and_401_does_not() {
    let (url, _) = canned(vec![
        json(
            "403 Forbidden",
            "",
            "WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n",
        ),
        json(
            "401 Unauthorized",
            "",
            "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n",
        ),
    ]);
    let forbidden = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert_eq!(
        forbidden.configuration_fix(),
        Some(FIX_SCOPES),
        "{forbidden}"
    );
    let unauthorized = client().userinfo(&settings(&url), "t", soon()).unwrap_err();
    assert!(
        matches!(unauthorized, GitlabError::Status { status: 401, .. }),
        "{unauthorized}"
    );
    assert_eq!(unauthorized.configuration_fix(), None);
}

// ---------------------------------------------------------------------------------------------
// The connection check's calls

#[test]
fn probes_say_what_to_fix_when_gitlab_cannot_be_reached() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = client()
        .probe_get(&format!("http://127.0.0.1:{port}/x"), soon())
        .unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    assert!(refused.contains("check the port"), "{refused}");

    let dns = client()
        .probe_get("http://no-such-host.invalid/x", soon())
        .unwrap_err();
    assert!(
        dns.starts_with("DNS name no-such-host.invalid not found"),
        "{dns}"
    );

    let (url, _) = canned(vec![ok("{}", "")]);
    let tls = client()
        .probe_get(&url.replace("http://", "https://"), soon())
        .unwrap_err();
    assert!(tls.contains("TLS"), "{tls}");

    let (url, _) = canned(vec![Reply {
        delay: Duration::from_secs(3),
        ..ok("{}", "")
    }]);
    let slow = client()
        .probe_get(&url, Instant::now() + Duration::from_millis(600))
        .unwrap_err();
    assert!(slow.starts_with("timed out"), "{slow}");
}

#[test]
fn the_token_probe_sends_a_random_code_and_the_credentials_in_the_body() {
    let (url, seen) = canned(vec![json(
        "400 Bad Request",
        r#"{"error":"invalid_grant"}"#,
        "",
    )]);
    let s = settings(&url);
    let probe = client()
        .probe_token(&s, "http://lg.example/oauth2/callback/gitlab", soon())
        .unwrap();
    assert_eq!(probe.status, 400);
    let seen = seen.lock().unwrap();
    let body = form(&seen[0].body);
    let get = |k: &str| body.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("grant_type"), Some("authorization_code"));
    assert_eq!(get("client_id"), Some("app-id"));
    assert_eq!(get("client_secret"), Some("the-client-secret"));
    assert_eq!(
        get("redirect_uri"),
        Some("http://lg.example/oauth2/callback/gitlab")
    );
    assert_eq!(get("code").map(str::len), Some(40));
    assert!(!seen[0].line.contains("secret"), "never in the URL");
}

#[test]
fn a_token_answer_echoing_the_secret_is_not_kept() {
    let (url, _) = canned(vec![json(
        "400 Bad Request",
        r#"{"error":"invalid_grant","error_description":"the-client-secret"}"#,
        "",
    )]);
    let probe = client()
        .probe_token(&settings(&url), "http://x/cb", soon())
        .unwrap();
    assert!(!String::from_utf8_lossy(&probe.body).contains("the-client-secret"));
}
