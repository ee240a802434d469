//! The connection check: is the stored GitLab configuration one a sign-in can succeed with?
//!
//! It asks GitLab what a sign-in will need, with the same client (timeouts, `--ca-file`,
//! proxies), and turns each answer into a named check whose detail says what to fix:
//!
//! 1. `reach`: `GET <url>/.well-known/openid-configuration` answers GitLab's OIDC discovery;
//! 2. `issuer`: the document's `issuer` is the configured URL (else GitLab's own links and
//!    labgate's disagree, and a proxy or a wrong URL is in between);
//! 3. `scopes`: the instance offers `openid` and `email`;
//! 4. `credentials`: `POST <url>/oauth/token` with a random authorization code. GitLab checks
//!    the client before the code: `invalid_grant` means it accepted the application ID and
//!    secret, `invalid_client` that it did not. A random code can never be redeemed, so this
//!    creates nothing;
//! 5. `redirectUri`: labgate knows the address GitLab must send people back to;
//! 6. `provisioningToken` (automatic provisioning only): `GET
//!    <url>/api/v4/personal_access_tokens/self` with the token says it is active, has
//!    `read_api` and when it expires (a warning within 7 days), then `GET
//!    <url>/api/v4/groups/<slug>` shows that it can see each allowed group.
//!
//! When `reach` fails, the others are reported as skipped. Nothing is created, changed or
//! revoked in GitLab; the secret is sent only in the token request's body and never appears in
//! a detail. Judging the answers is pure ([`judge_discovery`], [`judge_credentials`]); only
//! [`run`] does I/O.

use super::client::{Client, Probe};
use super::parse::clean;
use super::provision::{Reader, TokenInfo};
use super::{GitlabError, GitlabSettings};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The scopes a sign-in asks for, whatever the settings: the GitLab application must be
/// registered with them, and the instance must offer them. `openid` lets labgate read who the
/// person is and their groups from GitLab's OIDC userinfo, `email` adds their primary email. A
/// token with these scopes can read nothing else: no repository, project or API.
pub const SIGN_IN_SCOPES: &str = "openid email";

/// Longest a whole check may take: each call is also bounded by the client's own timeouts.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(20);

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or what to fix; never holds the secret.
    pub detail: String,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            detail: detail.into(),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// The checks in their order; `ok` when every one passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// `reach` failed: every later check is skipped (`provisioning`: the token's too).
    fn unreached(reach: Check, provisioning: bool) -> Report {
        let mut checks = vec![reach];
        checks.extend(
            ["issuer", "scopes", "credentials", "redirectUri"].map(|n| Check::fail(n, "skipped")),
        );
        if provisioning {
            checks.push(Check::fail("provisioningToken", "skipped"));
        }
        Report::of(checks)
    }

    /// The report when there is nothing to check: `reach` fails with `what_to_set`, the rest
    /// are skipped, and GitLab is not called.
    pub fn not_configured(what_to_set: &str) -> Report {
        Report::unreached(Check::fail("reach", what_to_set), false)
    }
}

/// What automatic provisioning reads GitLab with: its token (`None`: not set) and the allowed
/// groups, and today's date (`YYYY-MM-DD`, UTC) to judge the token's expiry.
pub struct Provisioning<'a> {
    pub token: Option<&'a str>,
    pub allowed_groups: &'a [String],
    pub today: &'a str,
}

/// Runs every check against GitLab. `redirect_uri` is the URI labgate will send, or why it
/// does not know it; `provisioning`, under automatic provisioning, adds the token's check.
pub fn run(
    client: &Client,
    s: &GitlabSettings,
    redirect_uri: Result<&str, &str>,
    provisioning: Option<&Provisioning<'_>>,
) -> Report {
    let deadline = Instant::now() + CHECK_DEADLINE;
    let discovery_url = format!("{}/.well-known/openid-configuration", s.base());
    let probe = match client.probe_get(&discovery_url, deadline) {
        Err(unreachable) => {
            return Report::unreached(Check::fail("reach", unreachable), provisioning.is_some())
        }
        Ok(probe) => probe,
    };
    let [reach, issuer, scopes] = judge_discovery(s.base(), &discovery_url, &probe);
    if !reach.ok {
        return Report::unreached(reach, provisioning.is_some());
    }
    let unset: Vec<&str> = [
        ("the application ID", s.application_id.trim().is_empty()),
        ("the secret", s.secret.is_empty()),
    ]
    .into_iter()
    .filter_map(|(what, unset)| unset.then_some(what))
    .collect();
    let credentials = if !unset.is_empty() {
        Check::fail(
            "credentials",
            format!(
                "{} {}: copy {} from the GitLab application into labgate's GitLab settings",
                unset.join(" and "),
                if unset.len() > 1 {
                    "are not set"
                } else {
                    "is not set"
                },
                if unset.len() > 1 { "both" } else { "it" }
            ),
        )
    } else {
        // GitLab wants a redirect URI in the request; with none known, any will do to learn
        // whether the client is accepted (the code is refused either way).
        let sent = redirect_uri.unwrap_or("http://labgate.invalid/oauth2/callback/gitlab");
        match client.probe_token(s, sent, deadline) {
            Err(unreachable) => Check::fail("credentials", unreachable),
            Ok(probe) => judge_credentials(&probe),
        }
    };
    let redirect = match redirect_uri {
        Ok(uri) => Check::pass(
            "redirectUri",
            format!("{uri} (it must be among the application's redirect URIs in GitLab)"),
        ),
        Err(why) => Check::fail("redirectUri", why),
    };
    let mut checks = vec![reach, issuer, scopes, credentials, redirect];
    if let Some(p) = provisioning {
        checks.push(check_token(client, s.base(), p, deadline));
    }
    Report::of(checks)
}

/// The provisioning token's check: the token itself, then each allowed group through it.
fn check_token(client: &Client, base: &str, p: &Provisioning<'_>, deadline: Instant) -> Check {
    let Some(token) = p.token else {
        return Check::fail(
            "provisioningToken",
            "no provisioning token is set: create a GitLab group or personal access token with \
             the read_api scope and store it as the provisioning token",
        );
    };
    let reader = Reader {
        client,
        base,
        token,
        deadline,
    };
    let token_check = judge_token(&reader.token_self(), p.today);
    if !token_check.ok {
        return token_check;
    }
    let groups: Vec<(&str, Result<(), GitlabError>)> = p
        .allowed_groups
        .iter()
        .map(|slug| (slug.as_str(), reader.group(slug).map(|_| ())))
        .collect();
    judge_groups(token_check, &groups)
}

/// Days from `today` to `date` (both `YYYY-MM-DD`), when both are dates.
fn days_until(today: &str, date: &str) -> Option<i64> {
    let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
    Some((parse(date)? - parse(today)?).num_days())
}

/// What `personal_access_tokens/self` said of the token, judged: it must be active, hold
/// `read_api` (or `api`) and not expire today or before; within 7 days it passes with a warning.
pub fn judge_token(answer: &Result<TokenInfo, GitlabError>, today: &str) -> Check {
    let fail = |detail: String| Check::fail("provisioningToken", detail);
    const NEW_TOKEN: &str = "create a new GitLab group or personal access token with the \
                             read_api scope and store it as the provisioning token";
    let info = match answer {
        Ok(info) => info,
        Err(GitlabError::Status { status: 401, .. }) => {
            return fail(format!(
                "GitLab refuses the provisioning token: it is revoked, expired or mistyped: \
                 {NEW_TOKEN}"
            ))
        }
        Err(e) => return fail(format!("the provisioning token could not be checked: {e}")),
    };
    if info.revoked || !info.active {
        return fail(format!(
            "the provisioning token is revoked or expired: {NEW_TOKEN}"
        ));
    }
    if !info.scopes.iter().any(|s| s == "read_api" || s == "api") {
        return fail(format!(
            "the provisioning token lacks the read_api scope (it has: {}): {NEW_TOKEN}",
            clean(&info.scopes.join(" "), 100)
        ));
    }
    let expiry = info
        .expires_at
        .as_deref()
        .map(|date| (clean(date, 20), days_until(today, date)));
    match expiry {
        None => Check::pass(
            "provisioningToken",
            "the provisioning token has read_api and does not expire",
        ),
        Some((date, Some(days))) if days <= 0 => fail(format!(
            "the provisioning token expired on {date}: {NEW_TOKEN}"
        )),
        Some((date, Some(days))) if days <= 7 => Check::pass(
            "provisioningToken",
            format!(
                "warning: the provisioning token expires on {date}, in {days} day{}: {NEW_TOKEN} \
                 before then",
                if days == 1 { "" } else { "s" }
            ),
        ),
        Some((date, _)) => Check::pass(
            "provisioningToken",
            format!("the provisioning token has read_api and expires on {date}"),
        ),
    }
}

/// The token's check with what GitLab answered for each allowed group: every one must be
/// visible.
pub fn judge_groups(token: Check, groups: &[(&str, Result<(), GitlabError>)]) -> Check {
    let problems: Vec<String> = groups
        .iter()
        .filter_map(|(slug, answer)| match answer {
            Ok(()) => None,
            Err(GitlabError::Status { status: 404, .. }) => Some(format!(
                "the token cannot see the allowed group {slug} (or it does not exist): give \
                 the token's user or bot access to it"
            )),
            Err(e) => Some(format!("the allowed group {slug} could not be read: {e}")),
        })
        .collect();
    if problems.is_empty() {
        let all: Vec<&str> = groups.iter().map(|(slug, _)| *slug).collect();
        Check::pass(
            "provisioningToken",
            format!(
                "{}; it sees the allowed groups {}",
                token.detail,
                all.join(", ")
            ),
        )
    } else {
        Check::fail("provisioningToken", problems.join("; "))
    }
}

/// The discovery answer judged: `reach`, `issuer` and `scopes`.
pub fn judge_discovery(base: &str, url: &str, probe: &Probe) -> [Check; 3] {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        #[serde(default)]
        scopes_supported: Vec<String>,
        #[serde(default)]
        userinfo_endpoint: Option<String>,
    }
    let skipped = || {
        [
            Check::fail("issuer", "skipped"),
            Check::fail("scopes", "skipped"),
        ]
    };
    let fail = |detail: String| {
        let [issuer, scopes] = skipped();
        [Check::fail("reach", detail), issuer, scopes]
    };
    match probe.status {
        200..=299 => {}
        300..=399 => {
            let to = probe
                .location
                .as_deref()
                .map(|l| format!(" to {}", clean(l, 120)))
                .unwrap_or_default();
            return fail(format!(
                "GitLab answered with a redirect{to}: set the URL to the address GitLab answers \
                 on (scheme, host and path prefix)"
            ));
        }
        404 => {
            return fail(format!(
                "HTTP 404 for {url}: is this GitLab's URL (with its path prefix, if any)?"
            ))
        }
        status => {
            return fail(format!(
                "HTTP {status} for {url}: GitLab (or a proxy in front of it) refuses or fails; \
                 check that it is up and that this URL reaches it"
            ))
        }
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&probe.body) else {
        return fail(format!(
            "the answer of {url} is not JSON: is this GitLab's URL?"
        ));
    };
    let Ok(doc) = Discovery::deserialize(&doc) else {
        return fail(format!(
            "the answer of {url} is not an OpenID configuration: is this GitLab's URL, and \
             GitLab 15 or later?"
        ));
    };
    let reach = Check::pass(
        "reach",
        format!(
            "GitLab answered its OpenID configuration{}",
            doc.userinfo_endpoint
                .as_deref()
                .map(|u| format!(" (userinfo at {})", clean(u, 120)))
                .unwrap_or_default()
        ),
    );
    let issuer = clean(&doc.issuer, 200);
    let issuer = if issuer.trim_end_matches('/') == base.trim_end_matches('/') {
        Check::pass("issuer", format!("GitLab calls itself {issuer}"))
    } else {
        Check::fail(
            "issuer",
            format!("GitLab calls itself {issuer}: set the URL to that"),
        )
    };
    let missing: Vec<&str> = SIGN_IN_SCOPES
        .split(' ')
        .filter(|s| !doc.scopes_supported.iter().any(|x| x == s))
        .collect();
    let scopes = if missing.is_empty() {
        Check::pass("scopes", "GitLab offers the scopes openid and email")
    } else {
        Check::fail(
            "scopes",
            format!(
                "GitLab does not offer the scope{} {}: labgate signs people in with openid and \
                 email (GitLab 15 or later offers both)",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(" and ")
            ),
        )
    };
    [reach, issuer, scopes]
}

/// The token endpoint's answer to a random code, judged: GitLab checks the client first.
pub fn judge_credentials(probe: &Probe) -> Check {
    let error = serde_json::from_slice::<serde_json::Value>(&probe.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    match (probe.status, error.as_deref()) {
        (400, Some("invalid_grant")) => Check::pass(
            "credentials",
            "GitLab accepts the application ID and secret",
        ),
        (401 | 400, Some("invalid_client")) => Check::fail("credentials", super::FIX_CREDENTIALS),
        (status, Some(error)) => Check::fail(
            "credentials",
            format!(
                "GitLab's token endpoint answered HTTP {status} {}: expected invalid_grant for \
                 an unknown code; check the URL and the application",
                clean(error, 60)
            ),
        ),
        (status, None) => Check::fail(
            "credentials",
            format!(
                "GitLab's token endpoint answered HTTP {status} without an OAuth error: is this \
                 GitLab's URL?"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(status: u16, body: &str) -> Probe {
        Probe {
            status,
            location: None,
            body: body.as_bytes().to_vec(),
        }
    }

    const URL: &str = "https://g.example/.well-known/openid-configuration";

    fn discovery(issuer: &str, scopes: &[&str]) -> Probe {
        probe(
            200,
            &serde_json::json!({"issuer": issuer, "scopes_supported": scopes,
                "userinfo_endpoint": format!("{issuer}/oauth/userinfo")})
            .to_string(),
        )
    }

    #[test]
    fn a_gitlab_with_its_own_url_and_both_scopes_passes() {
        let checks = judge_discovery(
            "https://g.example",
            URL,
            &discovery("https://g.example", &["api", "openid", "email"]),
        );
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert_eq!(
            checks.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["reach", "issuer", "scopes"]
        );
    }

    #[test]
    fn another_issuer_names_the_url_to_set() {
        let [_, issuer, _] = judge_discovery(
            "http://10.0.0.5",
            URL,
            &discovery("https://gitlab.lab.example", &["openid", "email"]),
        );
        assert!(!issuer.ok);
        assert_eq!(
            issuer.detail,
            "GitLab calls itself https://gitlab.lab.example: set the URL to that"
        );
    }

    #[test]
    fn missing_scopes_are_named() {
        let [_, _, scopes] = judge_discovery(
            "https://g.example",
            URL,
            &discovery("https://g.example", &["read_api"]),
        );
        assert!(!scopes.ok);
        assert!(
            scopes.detail.contains("scopes openid and email"),
            "{}",
            scopes.detail
        );
        let [_, _, scopes] = judge_discovery(
            "https://g.example",
            URL,
            &discovery("https://g.example", &["openid"]),
        );
        assert!(
            scopes.detail.contains("the scope email:"),
            "{}",
            scopes.detail
        );
    }

    #[test]
    fn what_is_not_an_oidc_document_fails_reach_and_skips_the_rest() {
        let cases = [
            (probe(404, "<h1>Not found</h1>"), "HTTP 404"),
            (probe(502, ""), "HTTP 502"),
            (probe(200, "<html>welcome</html>"), "not JSON"),
            (
                probe(200, r#"{"hello":"world"}"#),
                "not an OpenID configuration",
            ),
            (
                Probe {
                    status: 302,
                    location: Some("https://sso.example/login".into()),
                    body: Vec::new(),
                },
                "redirect to https://sso.example/login",
            ),
        ];
        for (p, expected) in cases {
            let [reach, issuer, scopes] = judge_discovery("https://g.example", URL, &p);
            assert!(!reach.ok && reach.detail.contains(expected), "{reach:?}");
            assert_eq!((issuer.ok, issuer.detail.as_str()), (false, "skipped"));
            assert_eq!((scopes.ok, scopes.detail.as_str()), (false, "skipped"));
        }
    }

    fn token(scopes: &[&str], expires_at: Option<&str>) -> Result<TokenInfo, GitlabError> {
        Ok(TokenInfo {
            name: "labgate".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: expires_at.map(str::to_string),
            active: true,
            revoked: false,
        })
    }

    #[test]
    fn the_provisioning_token_must_be_live_with_read_api_and_warns_a_week_ahead() {
        let today = "2025-03-10";
        // (what GitLab said, passes, the detail starts with)
        let revoked = Err(GitlabError::Status {
            step: "personal_access_tokens/self",
            status: 401,
            detail: "invalid_token".into(),
        });
        let cases = [
            (token(&["read_api"], None), true, "the provisioning token has read_api and does not expire"),
            (token(&["api"], Some("2025-06-01")), true, "the provisioning token has read_api and expires on 2025-06-01"),
            (token(&["read_api"], Some("2025-03-17")), true, "warning: the provisioning token expires on 2025-03-17, in 7 days"),
            (token(&["read_api"], Some("2025-03-11")), true, "warning: the provisioning token expires on 2025-03-11, in 1 day:"),
            (token(&["read_api"], Some("2025-03-10")), false, "the provisioning token expired on 2025-03-10"),
            (token(&["read_user", "read_repository"], None), false, "the provisioning token lacks the read_api scope (it has: read_user read_repository)"),
            (revoked, false, "GitLab refuses the provisioning token: it is revoked"),
            (Err(GitlabError::Timeout), false, "the provisioning token could not be checked"),
        ];
        for (answer, ok, start) in cases {
            let check = judge_token(&answer, today);
            assert_eq!(check.name, "provisioningToken");
            assert_eq!(check.ok, ok, "{check:?}");
            assert!(check.detail.starts_with(start), "{check:?}");
        }
        let mut inactive = token(&["read_api"], None).unwrap();
        inactive.active = false;
        assert!(!judge_token(&Ok(inactive), today).ok);
    }

    #[test]
    fn each_allowed_group_must_be_visible_to_the_token() {
        let ok = || Check::pass("provisioningToken", "fine");
        let seen = judge_groups(ok(), &[("acme", Ok(())), ("beta", Ok(()))]);
        assert!(seen.ok);
        assert_eq!(seen.detail, "fine; it sees the allowed groups acme, beta");
        let hidden = judge_groups(
            ok(),
            &[
                ("acme", Ok(())),
                (
                    "beta",
                    Err(GitlabError::Status {
                        step: "group",
                        status: 404,
                        detail: "404 Group Not Found".into(),
                    }),
                ),
            ],
        );
        assert!(!hidden.ok);
        assert!(
            hidden
                .detail
                .starts_with("the token cannot see the allowed group beta"),
            "{hidden:?}"
        );
    }

    #[test]
    fn the_token_endpoint_tells_accepted_from_rejected_credentials() {
        let grant = judge_credentials(&probe(400, r#"{"error":"invalid_grant"}"#));
        assert!(grant.ok, "{grant:?}");
        let client = judge_credentials(&probe(
            401,
            r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
        ));
        assert!(!client.ok);
        assert_eq!(client.detail, super::super::FIX_CREDENTIALS);
        let other = judge_credentials(&probe(400, r#"{"error":"unsupported_grant_type"}"#));
        assert!(!other.ok && other.detail.contains("unsupported_grant_type"));
        let html = judge_credentials(&probe(404, "<html>"));
        assert!(!html.ok && html.detail.contains("HTTP 404"));
    }
}
