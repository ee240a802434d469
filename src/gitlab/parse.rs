//! Pure functions over GitLab's answers: userinfo, pagination headers, `Retry-After`, the
//! retry decision and the wording of errors. No I/O; safe on any input
//! (they are fuzzing targets).

use super::{
    GitlabError, Userinfo, MAX_GROUP_PATHS, MAX_GROUP_PATH_BYTES, MAX_RETRIES, MAX_RETRY_WAIT,
    SERVER_ERROR_PAUSE,
};
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;
use ureq::http::Uri;

/// Longest text taken from GitLab into an error detail, characters.
const MAX_DETAIL: usize = 200;

/// Parses GitLab's OIDC userinfo answer.
///
/// - `sub` is GitLab's numeric user id sent as a string: only 1 to 18 ASCII digits naming an id
///   above 0 are accepted (a number, a sign, spaces or an opaque subject are refused: the id is
///   the stable key of the account, and a guess at what another form means could join two
///   people);
/// - the username is `preferred_username`, else `nickname`; one of them must be non-empty;
/// - `name` may be missing;
/// - the email is kept only when `email_verified` is `true` (an address GitLab has not
///   confirmed could be anyone's);
/// - `groups` (absent or `null`: none) is a list of full paths, at most [`MAX_GROUP_PATHS`] and
///   [`MAX_GROUP_PATH_BYTES`] of text, read element by element within those bounds; empty
///   paths are dropped, the rest sorted without duplicates.
///
/// Every other claim is skipped.
pub fn parse_userinfo(body: &[u8]) -> Result<Userinfo, GitlabError> {
    #[derive(Deserialize)]
    struct Claims<'a> {
        #[serde(default, borrow)]
        sub: Option<SubClaim<'a>>,
        #[serde(default)]
        preferred_username: Option<String>,
        #[serde(default)]
        nickname: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        email: Option<String>,
        #[serde(default)]
        email_verified: Option<bool>,
        #[serde(default, borrow)]
        groups: Option<GroupClaim<'a>>,
    }
    /// `sub` as sent: a string is what GitLab sends; anything else is kept only to be named.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SubClaim<'a> {
        Text(#[serde(borrow)] Cow<'a, str>),
        Other(serde_json::Value),
    }
    let malformed = |detail: String| GitlabError::Malformed {
        step: "userinfo",
        detail,
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| malformed(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let claims: Claims =
        serde_json::from_str(text).map_err(|e| malformed(clean(&e.to_string(), MAX_DETAIL)))?;
    let id = match &claims.sub {
        None => return Err(malformed("no sub claim".into())),
        Some(SubClaim::Other(v)) => {
            return Err(malformed(format!(
                "sub {} is not a string of digits",
                clean(&v.to_string(), 40)
            )))
        }
        Some(SubClaim::Text(sub)) => user_id_of(sub).ok_or_else(|| {
            malformed(format!(
                "sub {:?} is not a GitLab user id (a string of digits)",
                clean(sub, 40)
            ))
        })?,
    };
    let username = [claims.preferred_username, claims.nickname]
        .into_iter()
        .flatten()
        .find(|u| !u.trim().is_empty())
        .ok_or_else(|| malformed("neither preferred_username nor nickname".into()))?;
    let email = match claims.email_verified {
        Some(true) => claims.email.filter(|e| !e.trim().is_empty()),
        _ => None,
    };
    // Sorted and deduplicated while still borrowed from the body (a path with an escape is
    // the only one copied), then kept in one buffer.
    let mut paths = claims.groups.map(|g| g.0).unwrap_or_default();
    paths.sort_unstable();
    paths.dedup();
    let bytes = paths.iter().map(|p| p.len()).sum();
    let mut groups = crate::model::GroupPaths::with_capacity(paths.len(), bytes);
    for path in &paths {
        groups.push(path);
    }
    Ok(Userinfo {
        id,
        username,
        name: claims.name.unwrap_or_default(),
        email,
        groups,
    })
}

/// GitLab's user id from userinfo's `sub`: 1 to 18 ASCII digits, above 0.
fn user_id_of(sub: &str) -> Option<i64> {
    if sub.is_empty() || sub.len() > 18 || !sub.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    sub.parse::<i64>().ok().filter(|id| *id > 0)
}

/// One path of the `groups` claim: borrowed from the body, copied only when it holds an
/// escape. (serde's own `Cow<str>` always copies.)
struct PathText<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for PathText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = PathText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a group path")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<PathText<'de>, E> {
                Ok(PathText(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<PathText<'de>, E> {
                Ok(PathText(Cow::Owned(text.to_string())))
            }
        }
        d.deserialize_str(Text)
    }
}

/// The `groups` claim, read within [`MAX_GROUP_PATHS`] and [`MAX_GROUP_PATH_BYTES`], each path
/// borrowed from the body unless it holds an escape.
struct GroupClaim<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for GroupClaim<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error as _, SeqAccess, Visitor};
        struct Paths;
        impl<'de> Visitor<'de> for Paths {
            type Value = GroupClaim<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of group paths")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GroupClaim<'de>, A::Error> {
                let mut paths = Vec::new();
                let mut bytes = 0usize;
                while let Some(PathText(path)) = seq.next_element::<PathText<'de>>()? {
                    if path.is_empty() {
                        continue;
                    }
                    bytes += path.len();
                    if paths.len() >= MAX_GROUP_PATHS || bytes > MAX_GROUP_PATH_BYTES {
                        return Err(A::Error::custom(format!(
                            "more than {MAX_GROUP_PATHS} groups or {MAX_GROUP_PATH_BYTES} bytes \
                             of group paths for one user"
                        )));
                    }
                    paths.push(path);
                }
                Ok(GroupClaim(paths))
            }
        }
        d.deserialize_seq(Paths)
    }
}

/// Parses an RFC 8288 `Link` header into `(url, rel)` pairs, one per relation type (`rel="first
/// last"` gives two), relation types lower-cased, only the first `rel` of a link counted.
/// Quoted values may hold `,` and `;`. Anything unparsable is skipped.
pub fn parse_link_header(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after_open = &rest[open + 1..];
        let Some(close) = after_open.find('>') else {
            break;
        };
        let url = after_open[..close].trim();
        let (params, next) = split_unquoted(&after_open[close + 1..], ',');
        let rel = split_all_unquoted(params, ';').find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("rel")
                .then(|| unquote(value.trim()))
        });
        if let Some(rel) = rel {
            if !url.is_empty() {
                for kind in rel.split_ascii_whitespace() {
                    out.push((url.to_string(), kind.to_ascii_lowercase()));
                }
            }
        }
        rest = next;
    }
    out
}

/// `text` up to the first `sep` outside double quotes, and what follows that `sep`.
fn split_unquoted(text: &str, sep: char) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => return (&text[..i], &text[i + c.len_utf8()..]),
            _ => {}
        }
    }
    (text, "")
}

fn split_all_unquoted(mut text: &str, sep: char) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        if text.is_empty() {
            return None;
        }
        let (part, rest) = split_unquoted(text, sep);
        text = rest;
        Some(part)
    })
}

/// A token, or a quoted string with its backslash escapes resolved.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Where the next page of a listing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    /// From `X-Next-Page`: labgate builds the URL itself on the configured GitLab.
    Number(u32),
    /// From `Link: <...>; rel="next"`: to be checked with [`same_gitlab`] before following.
    Url(String),
}

/// The next page: `X-Next-Page` when it holds a page number (> 0), else the first
/// `Link rel="next"`; `None` at the end (GitLab sends an empty `X-Next-Page` on the last page).
///
/// `X-Next-Page` wins because a number cannot lead anywhere but the configured GitLab with
/// labgate's own query; the `Link` is only needed when GitLab leaves the header out.
pub fn next_page(x_next_page: Option<&str>, link: Option<&str>) -> Option<NextPage> {
    if let Some(n) = x_next_page.and_then(|v| v.trim().parse::<u32>().ok()) {
        if n > 0 {
            return Some(NextPage::Number(n));
        }
    }
    parse_link_header(link?)
        .into_iter()
        .find(|(_, rel)| rel == "next")
        .map(|(url, _)| NextPage::Url(url))
}

/// Seconds to wait from a `Retry-After` value: delay-seconds, or an HTTP date compared with
/// `now_unix` (a date in the past gives 0). `None` when absent or unreadable.
pub fn retry_after_secs(value: Option<&str>, now_unix: i64) -> Option<u64> {
    let value = value?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse::<u64>().unwrap_or(u64::MAX));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value)
        .ok()?
        .timestamp();
    Some(u64::try_from(when.saturating_sub(now_unix)).unwrap_or(0))
}

/// Whether `candidate` (a `Link` URL) is on the configured GitLab `base`: same scheme, host and
/// port (default ports filled in), no user info, and a path under `base`'s path prefix with no
/// `.` or `..` segment (a server would resolve `/gitlab/../other` outside the prefix).
pub fn same_gitlab(base: &str, candidate: &str) -> bool {
    let (Ok(b), Ok(c)) = (base.parse::<Uri>(), candidate.parse::<Uri>()) else {
        return false;
    };
    let (Some(b_auth), Some(c_auth)) = (b.authority(), c.authority()) else {
        return false;
    };
    if c_auth.as_str().contains('@') || b_auth.as_str().contains('@') {
        return false;
    }
    let scheme = |u: &Uri| u.scheme_str().map(str::to_ascii_lowercase);
    let port = |u: &Uri| {
        u.port_u16().or(match u.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
            Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
            _ => None,
        })
    };
    let prefix = b.path().trim_end_matches('/');
    let path = c.path();
    scheme(&b).is_some()
        && scheme(&b) == scheme(&c)
        && b_auth.host().eq_ignore_ascii_case(c_auth.host())
        && port(&b) == port(&c)
        && (prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/")))
        && !has_dot_segment(path)
}

/// Whether a URL path holds a `.` or `..` segment, percent-encoded or not (`%2e%2e`), with `/`
/// or `\` (which some servers take for `/`) as separators.
fn has_dot_segment(path: &str) -> bool {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .split(['/', '\\'])
        .any(|segment| segment == "." || segment == "..")
}

/// How long to wait before retrying a GET that answered `status` (not 2xx), or `None` to stop.
///
/// 429: wait `Retry-After` (1 s when absent), at most [`MAX_RETRIES`] times, each wait at most
/// [`MAX_RETRY_WAIT`]. 5xx: one quick retry. Never when the wait would eat the time left.
/// `attempt` counts the retries already made.
pub fn retry_wait(
    status: u16,
    retry_after: Option<u64>,
    attempt: usize,
    time_left: Duration,
) -> Option<Duration> {
    let wait = match status {
        429 if attempt < MAX_RETRIES => Duration::from_secs(retry_after.unwrap_or(1)),
        500..=599 if attempt == 0 => SERVER_ERROR_PAUSE,
        _ => return None,
    };
    // Leave the retried call some time of its own.
    let room = Duration::from_millis(250);
    (wait <= MAX_RETRY_WAIT && wait + room < time_left).then_some(wait)
}

/// The error for an answer with an unexpected `status`: a short detail from GitLab's JSON
/// (`error`, `error_description`, `message`), a clear one for a missing scope, and for a
/// redirect where it pointed (its origin only).
pub fn status_error(
    step: &'static str,
    status: u16,
    location: Option<&str>,
    body: &[u8],
) -> GitlabError {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            })
            .filter(|s| !s.trim().is_empty())
    };
    let detail = match status {
        300..=399 => match location.and_then(origin_of) {
            Some(origin) => format!(
                "redirect to {origin} not followed; set the GitLab URL to the address GitLab \
                 answers on"
            ),
            None => "redirect not followed; set the GitLab URL to the address GitLab answers on"
                .to_string(),
        },
        403 if field("error").as_deref() == Some("insufficient_scope") => {
            // Userinfo needs `openid`; the provisioning token's API reads need `read_api`.
            let needed = if step == "userinfo" {
                "openid"
            } else {
                "read_api"
            };
            let mut d = format!("the access token lacks the {needed} scope");
            if let Some(accepted) = field("scope") {
                d.push_str(&format!("; GitLab accepts: {}", clean(&accepted, 100)));
            }
            d
        }
        _ => {
            let mut d = match (field("error"), field("message")) {
                (Some(e), _) => e,
                (None, Some(m)) => m,
                (None, None) if json.is_none() => plain_text(body),
                (None, None) => String::new(),
            };
            if let Some(description) = field("error_description") {
                d.push_str(": ");
                d.push_str(&description);
            }
            if status == 401 && step != "token" {
                d = if d.is_empty() {
                    "the access token was refused".into()
                } else {
                    format!("the access token was refused: {d}")
                };
            }
            d
        }
    };
    GitlabError::Status {
        step,
        status,
        detail: clean(&detail, MAX_DETAIL),
    }
}

/// A short plain-text body (GitLab's throttle answers `Retry later`); nothing for HTML.
fn plain_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_DETAIL * 4)]);
    let line = text.lines().next().unwrap_or("").trim();
    if line.contains('<') {
        String::new()
    } else {
        line.to_string()
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    let uri = url.trim().parse::<Uri>().ok()?;
    let scheme = uri.scheme_str()?;
    let host = uri.host()?;
    Some(match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Text from outside fit for one log line: control and bidi characters replaced by spaces,
/// at most `max` characters.
pub(crate) fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        let unsafe_char = c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        out.push(if unsafe_char { ' ' } else { c });
    }
    out.trim().to_string()
}

/// `text` with every occurrence of a secret replaced (secrets shorter than 6 are left alone:
/// they would match ordinary words).
pub(crate) fn redact(text: String, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 6)
        .fold(text, |t, s| t.replace(s, "[redacted]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed_step(r: Result<impl std::fmt::Debug, GitlabError>) -> &'static str {
        match r {
            Err(GitlabError::Malformed { step, .. }) => step,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn link_header_as_gitlab_sends_it() {
        let link = "<https://g/api/v4/groups?min_access_level=10&page=1&per_page=100>; rel=\"prev\", \
                    <https://g/api/v4/groups?min_access_level=10&page=3&per_page=100>; rel=\"next\", \
                    <https://g/api/v4/groups?min_access_level=10&page=1&per_page=100>; rel=\"first\"";
        let rels: Vec<String> = parse_link_header(link)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(rels, vec!["prev", "next", "first"]);
        assert_eq!(
            parse_link_header(link)[1].0,
            "https://g/api/v4/groups?min_access_level=10&page=3&per_page=100"
        );
    }

    #[test]
    fn link_header_with_spaces_quotes_and_several_rels() {
        let link = r#"  < https://g/a?x=1,2 > ;title="a, b; c" ; REL = "First  LAST",<https://g/b>;rel=next;rel=prev"#;
        assert_eq!(
            parse_link_header(link),
            vec![
                ("https://g/a?x=1,2".to_string(), "first".to_string()),
                ("https://g/a?x=1,2".to_string(), "last".to_string()),
                ("https://g/b".to_string(), "next".to_string()),
            ]
        );
        assert_eq!(
            parse_link_header(r#"<u>; title="say \"hi\", bye"; rel="next""#),
            vec![("u".to_string(), "next".to_string())]
        );
    }

    #[test]
    fn link_header_garbage_gives_nothing() {
        for value in [
            "",
            "garbage",
            "<",
            "<<>>;;rel=",
            "<https://g/x>",
            "<https://g/x>; title=next",
            "https://g/x; rel=next",
            "<>; rel=next",
            "<https://g/x; rel=\"next",
            "<é>; rel=\"ñ\u{0}\"",
        ] {
            let parsed = parse_link_header(value);
            assert!(
                parsed.iter().all(|(_, rel)| rel != "next"),
                "{value:?} gave {parsed:?}"
            );
        }
    }

    #[test]
    fn next_page_from_x_next_page_only() {
        assert_eq!(next_page(Some("2"), None), Some(NextPage::Number(2)));
        assert_eq!(next_page(Some(" 17 "), None), Some(NextPage::Number(17)));
        assert_eq!(next_page(Some(""), None), None);
        assert_eq!(next_page(Some("0"), None), None);
        assert_eq!(next_page(Some("-1"), None), None);
        assert_eq!(next_page(Some("two"), None), None);
        assert_eq!(next_page(Some("99999999999"), None), None);
        assert_eq!(next_page(None, None), None);
    }

    #[test]
    fn next_page_from_link_only() {
        let link = r#"<https://g/x?page=1>; rel="prev", <https://g/x?page=3>; rel="next""#;
        assert_eq!(
            next_page(None, Some(link)),
            Some(NextPage::Url("https://g/x?page=3".into()))
        );
        assert_eq!(next_page(None, Some(r#"<https://g/x>; rel="prev""#)), None);
        assert_eq!(next_page(None, Some("")), None);
        assert_eq!(next_page(None, Some("garbage")), None);
    }

    #[test]
    fn next_page_prefers_x_next_page_over_link() {
        let link = r#"<https://g/x?page=9>; rel="next""#;
        assert_eq!(next_page(Some("3"), Some(link)), Some(NextPage::Number(3)));
        assert_eq!(
            next_page(Some(""), Some(link)),
            Some(NextPage::Url("https://g/x?page=9".into()))
        );
        assert_eq!(
            next_page(Some("junk"), Some(link)),
            Some(NextPage::Url("https://g/x?page=9".into()))
        );
        assert_eq!(next_page(Some(""), Some("")), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = 1_445_412_480; // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(retry_after_secs(Some(" 7 "), now), Some(7));
        assert_eq!(retry_after_secs(Some("0"), now), Some(0));
        assert_eq!(
            retry_after_secs(Some("99999999999999999999999"), now),
            Some(u64::MAX)
        );
        assert_eq!(
            retry_after_secs(Some("Wed, 21 Oct 2015 07:28:30 GMT"), now),
            Some(30)
        );
        assert_eq!(
            retry_after_secs(Some("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(0)
        );
        for junk in ["", "-1", "1.5", "soon", "Wed, 32 Oct 2015"] {
            assert_eq!(retry_after_secs(Some(junk), now), None, "{junk:?}");
        }
        assert_eq!(retry_after_secs(None, now), None);
    }

    #[test]
    fn same_gitlab_compares_scheme_host_port_and_prefix() {
        let base = "https://g.example/gitlab";
        for ok in [
            "https://G.example:443/gitlab/api/v4/groups?page=2",
            "https://g.example/gitlab/api/v4/groups",
        ] {
            assert!(same_gitlab(base, ok), "{ok}");
        }
        for bad in [
            "https://g.example/other/api",
            "https://g.example/gitlabx/api",
            "http://g.example/gitlab/api",
            "https://g.example:8443/gitlab/api",
            "https://evil.example/gitlab/api",
            "https://g.example@evil.example/gitlab/api",
            "https://user@g.example/gitlab/api",
            "/gitlab/api/v4/groups?page=2",
            "",
            "not a url",
        ] {
            assert!(!same_gitlab(base, bad), "{bad}");
        }
        assert!(same_gitlab("http://127.0.0.1:80", "http://127.0.0.1/x"));
        assert!(!same_gitlab(
            "http://127.0.0.1:80",
            "http://127.0.0.1:8080/x"
        ));
        assert!(same_gitlab("https://h/", "https://h/api/v4/groups"));
    }

    /// Found by the `pagination` fuzz target: a `Link` URL under the prefix as text but not
    /// once a server resolves its dot segments (the access token would go to `/admin`).
    #[test]
    fn same_gitlab_refuses_dot_segments_that_leave_the_prefix() {
        let base = "https://g.example/gitlab";
        for bad in [
            "https://g.example/gitlab/../admin/api/v4/groups?page=2",
            "https://g.example/gitlab/api/../../admin",
            "https://g.example/gitlab/%2e%2e/admin",
            "https://g.example/gitlab/%2E./admin",
            "https://g.example/gitlab/..%2fadmin",
            "https://g.example/gitlab/./api",
            "https://g.example/gitlab/..",
        ] {
            assert!(!same_gitlab(base, bad), "{bad}");
        }
        assert!(!same_gitlab("https://h/.", "https://h/."), "fuzz input");
        for ok in [
            "https://g.example/gitlab/api/v4/groups?page=2&q=..",
            "https://g.example/gitlab/api/v4/a..b/.c/d.",
        ] {
            assert!(same_gitlab(base, ok), "{ok}");
        }
    }

    #[test]
    fn rate_limits_are_waited_out_twice_within_the_caps() {
        let plenty = Duration::from_secs(10);
        assert_eq!(
            retry_wait(429, Some(1), 0, plenty),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_wait(429, None, 1, plenty),
            Some(Duration::from_secs(1))
        );
        assert_eq!(retry_wait(429, Some(0), 2, plenty), None, "third retry");
        assert_eq!(retry_wait(429, Some(60), 0, plenty), None, "over the cap");
        assert_eq!(
            retry_wait(429, Some(2), 0, Duration::from_secs(2)),
            None,
            "past the deadline"
        );
    }

    #[test]
    fn server_errors_get_one_quick_retry_and_client_errors_none() {
        let plenty = Duration::from_secs(10);
        assert_eq!(retry_wait(503, None, 0, plenty), Some(SERVER_ERROR_PAUSE));
        assert_eq!(retry_wait(500, None, 1, plenty), None);
        assert_eq!(retry_wait(502, None, 0, Duration::from_millis(300)), None);
        for status in [301, 400, 401, 403, 404] {
            assert_eq!(retry_wait(status, Some(1), 0, plenty), None, "{status}");
        }
    }

    fn detail(e: GitlabError) -> String {
        match e {
            GitlabError::Status { detail, .. } => detail,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn insufficient_scope_says_which_scope_is_missing() {
        let body = br#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token.","scope":"api read_api"}"#;
        assert_eq!(
            detail(status_error("groups", 403, None, body)),
            "the access token lacks the read_api scope; GitLab accepts: api read_api"
        );
        assert!(detail(status_error("userinfo", 403, None, body)).contains("openid"));
    }

    #[test]
    fn status_details_come_from_gitlab_json_or_short_text() {
        assert_eq!(
            detail(status_error(
                "user",
                403,
                None,
                br#"{"message":"403 Forbidden - Your account has been blocked."}"#
            )),
            "403 Forbidden - Your account has been blocked."
        );
        assert_eq!(
            detail(status_error(
                "user",
                401,
                None,
                br#"{"error":"invalid_token","error_description":"Token is expired."}"#
            )),
            "the access token was refused: invalid_token: Token is expired."
        );
        assert_eq!(
            detail(status_error("user", 401, None, b"")),
            "the access token was refused"
        );
        assert_eq!(
            detail(status_error("groups", 429, None, b"Retry later\n")),
            "Retry later"
        );
        assert_eq!(
            detail(status_error(
                "groups",
                429,
                None,
                br#"{"message":{"error":"This endpoint has been requested too many times."}}"#
            )),
            r#"{"error":"This endpoint has been requested too many times."}"#
        );
        assert_eq!(
            detail(status_error("user", 502, None, b"<html><body>Bad")),
            ""
        );
        let long = format!("{{\"message\":\"{}\\n\"}}", "x".repeat(5000));
        let d = detail(status_error("user", 500, None, long.as_bytes()));
        assert!(d.chars().count() <= MAX_DETAIL + 1 && !d.contains('\n'));
    }

    #[test]
    fn redirects_name_only_the_origin_they_point_to() {
        let d = detail(status_error(
            "user",
            301,
            Some("https://gitlab.example:8443/users/sign_in?secret=x"),
            b"",
        ));
        assert!(
            d.starts_with("redirect to https://gitlab.example:8443 not followed"),
            "{d}"
        );
        assert!(!d.contains("secret"));
        let d = detail(status_error("user", 302, Some("/users/sign_in"), b""));
        assert!(d.starts_with("redirect not followed"), "{d}");
    }

    fn userinfo(json: &str) -> Result<Userinfo, GitlabError> {
        parse_userinfo(json.as_bytes())
    }

    #[test]
    fn userinfo_as_gitlab_sends_it_is_read() {
        let info = userinfo(
            r#"{"sub":"42","sub_legacy":"9f0e","name":"Ann A","nickname":"ann",
                "preferred_username":"ann","email":"ann@x.org","email_verified":true,
                "profile":"https://g/ann","picture":"https://g/a.png",
                "groups":["acme/web","acme","acme/web"],
                "https://gitlab.org/claims/groups/owner":["acme"]}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            Userinfo {
                id: 42,
                username: "ann".into(),
                name: "Ann A".into(),
                email: Some("ann@x.org".into()),
                groups: ["acme", "acme/web"].into_iter().collect(),
            }
        );
    }

    #[test]
    fn userinfo_keeps_only_a_verified_email_and_falls_back_to_the_nickname() {
        for verified in [
            r#","email_verified":false"#,
            "",
            r#","email_verified":null"#,
        ] {
            let info = userinfo(&format!(
                r#"{{"sub":"7","nickname":"bo","email":"bo@x.org"{verified}}}"#
            ))
            .unwrap();
            assert_eq!(info.email, None, "{verified}");
            assert_eq!(info.username, "bo");
            assert_eq!(info.name, "");
            assert!(info.groups.is_empty(), "absent groups: none");
        }
        let info = userinfo(r#"{"sub":"7","preferred_username":"","nickname":"bo","groups":null}"#)
            .unwrap();
        assert_eq!(info.username, "bo");
    }

    #[test]
    fn userinfo_without_an_id_or_a_username_or_with_bad_groups_is_malformed() {
        for body in [
            r#"{"preferred_username":"ann"}"#,
            r#"{"sub":42,"preferred_username":"ann"}"#,
            r#"{"sub":"-4","preferred_username":"ann"}"#,
            r#"{"sub":"0","preferred_username":"ann"}"#,
            r#"{"sub":" 4","preferred_username":"ann"}"#,
            r#"{"sub":"4"}"#,
            r#"{"sub":"4","preferred_username":"  "}"#,
            r#"{"sub":"4","preferred_username":"ann","groups":"acme"}"#,
            r#"{"sub":"4","preferred_username":"ann","groups":[1]}"#,
            r#"{"sub":"4","preferred_username":"ann","email_verified":"yes"}"#,
            r#"[]"#,
            "not json",
        ] {
            assert_eq!(malformed_step(userinfo(body)), "userinfo", "{body}");
        }
    }

    #[test]
    fn userinfo_paths_with_escapes_are_decoded_and_details_hold_no_control_characters() {
        let info =
            userinfo(r#"{"sub":"3","preferred_username":"a","groups":["acme\/x","b\u00e9"]}"#)
                .unwrap();
        assert_eq!(info.groups, ["acme/x", "bé"]);
        let err = userinfo("{\"sub\":\"a\nb\",\"preferred_username\":\"a\"}").unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn userinfo_groups_are_bounded_in_count_and_bytes() {
        let many: Vec<String> = (0..=MAX_GROUP_PATHS).map(|i| format!("g{i}")).collect();
        let body = serde_json::json!({"sub": "4", "preferred_username": "a", "groups": many});
        let err = userinfo(&body.to_string()).unwrap_err();
        assert!(err.to_string().contains("more than 10000 groups"), "{err}");
        let long = "x".repeat(MAX_GROUP_PATH_BYTES / 4 + 1);
        let body = serde_json::json!({"sub": "4", "preferred_username": "a",
            "groups": [&long, format!("{long}1"), format!("{long}2"), format!("{long}3")]});
        assert_eq!(malformed_step(userinfo(&body.to_string())), "userinfo");
        let most: Vec<String> = (1..=MAX_GROUP_PATHS).map(|i| format!("g{i}")).collect();
        let body = serde_json::json!({"sub": "4", "preferred_username": "a", "groups": most});
        assert_eq!(
            userinfo(&body.to_string()).unwrap().groups.len(),
            MAX_GROUP_PATHS
        );
    }

    #[test]
    fn clean_and_redact() {
        assert_eq!(clean("a\nb\u{202e}c\u{7}", 100), "a b c");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(
            redact("code abcdef123 and s3".into(), &["abcdef123", "s3"]),
            "code [redacted] and s3"
        );
    }
}
