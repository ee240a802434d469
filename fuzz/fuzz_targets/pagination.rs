//! GitLab pagination and throttling headers, whatever they hold: `parse_link_header`,
//! `next_page`, `retry_after_secs` and `same_gitlab` never panic.
//! - every link has a non-empty, trimmed URL without `>` and a lower-case rel without spaces;
//! - `next_page` gives `X-Next-Page` when it is a positive number, else the first `rel="next"`;
//! - `Retry-After` in digits is that many seconds (saturating); absent is `None`;
//! - a URL `same_gitlab` accepts has the base's scheme, host and port, no user info, a path at
//!   or under the base's path and no `.`/`..` segment (even percent-encoded) that a server
//!   would resolve to somewhere else. Checked for free-form URLs and for the base plus a suffix.
#![no_main]

use arbitrary::Arbitrary;
use labgate::gitlab::parse::{
    next_page, parse_link_header, retry_after_secs, same_gitlab, NextPage,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    x_next_page: Option<String>,
    link: Option<String>,
    retry_after: Option<String>,
    now: i64,
    https: bool,
    host: String,
    port: Option<u16>,
    prefix: String,
    suffix: String,
    candidate: String,
}

fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_same_gitlab(base: &str, candidate: &str) {
    if !same_gitlab(base, candidate) {
        return;
    }
    let b: http::Uri = base.parse().expect("accepted base parses");
    let c: http::Uri = candidate.parse().expect("accepted candidate parses");
    let (ba, ca) = (b.authority().unwrap(), c.authority().unwrap());
    assert!(!ca.as_str().contains('@'), "user info in {candidate:?}");
    let scheme = b.scheme_str().unwrap();
    assert!(c.scheme_str().unwrap().eq_ignore_ascii_case(scheme));
    assert!(ca.host().eq_ignore_ascii_case(ba.host()));
    let default = |u: &http::Uri| match u.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    assert_eq!(b.port_u16().or(default(&b)), c.port_u16().or(default(&c)));
    let prefix = b.path().trim_end_matches('/');
    let path = c.path();
    assert!(
        prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/")),
        "{candidate:?} is outside {base:?}"
    );
    let decoded = percent_decoded(path);
    assert!(
        !decoded
            .split(['/', '\\'])
            .any(|seg| seg == "." || seg == ".."),
        "{candidate:?} has a dot segment"
    );
}

fuzz_target!(|input: Input| {
    if let Some(link) = &input.link {
        for (url, rel) in parse_link_header(link) {
            assert!(
                !url.is_empty() && url.trim() == url && !url.contains('>'),
                "{url:?}"
            );
            assert!(link.contains(&url));
            assert!(
                !rel.is_empty() && rel == rel.to_ascii_lowercase(),
                "{rel:?}"
            );
            assert!(!rel.contains(|c: char| c.is_ascii_whitespace()), "{rel:?}");
        }
    }
    let number = input
        .x_next_page
        .as_deref()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&n| n > 0);
    let expected = match number {
        Some(n) => Some(NextPage::Number(n)),
        None => input.link.as_deref().and_then(|l| {
            parse_link_header(l)
                .into_iter()
                .find(|(_, rel)| rel == "next")
                .map(|(url, _)| NextPage::Url(url))
        }),
    };
    assert_eq!(
        next_page(input.x_next_page.as_deref(), input.link.as_deref()),
        expected
    );

    let wait = retry_after_secs(input.retry_after.as_deref(), input.now);
    match input.retry_after.as_deref().map(str::trim) {
        None | Some("") => assert_eq!(wait, None),
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => {
            assert_eq!(wait, Some(v.parse::<u64>().unwrap_or(u64::MAX)))
        }
        Some(_) => {}
    }

    // A base as the settings accept it: http(s)://host[:port][/prefix], no ?, # or @.
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && !c.is_control() && !"?#@".contains(*c))
            .collect()
    };
    let host: String = clean(&input.host).replace('/', "");
    let scheme = if input.https { "https" } else { "http" };
    let port = input.port.map(|p| format!(":{p}")).unwrap_or_default();
    let prefix = clean(&input.prefix);
    let prefix = prefix.trim_matches('/');
    let base = if prefix.is_empty() {
        format!("{scheme}://{host}{port}")
    } else {
        format!("{scheme}://{host}{port}/{prefix}")
    };
    check_same_gitlab(&base, &input.candidate);
    check_same_gitlab(&base, &format!("{base}{}", input.suffix));
    check_same_gitlab(&input.host, &input.candidate);
});
