//! GitLab's JSON answers, whatever they hold: `parse_userinfo` and `status_error` never panic.
//! Accepted userinfo has an id > 0, a non-blank username, an email only when it was said to be
//! verified, and groups that are non-empty, sorted, distinct and within the bounds; each is what
//! a generic JSON reading finds. Error texts are single-line and bounded.
#![no_main]

use labgate::gitlab::parse::{parse_userinfo, status_error};
use labgate::gitlab::{GitlabError, MAX_GROUP_PATHS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// `MAX_DETAIL` in parse.rs, plus the ellipsis.
const MAX_DETAIL_CHARS: usize = 201;

fn check_error(e: &GitlabError) {
    let text = e.to_string();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    if let GitlabError::Malformed { detail, .. } | GitlabError::Status { detail, .. } = e {
        assert!(detail.chars().count() <= MAX_DETAIL_CHARS, "{detail:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_userinfo(data) {
        Ok(info) => {
            assert!(info.id > 0);
            assert!(!info.username.trim().is_empty());
            assert!(info.groups.len() <= MAX_GROUP_PATHS);
            assert!(info.groups.iter().all(|p| !p.is_empty()));
            assert!(info.groups.windows(2).all(|w| w[0] < w[1]));
            if let Ok(v) = serde_json::from_slice::<Value>(data) {
                assert_eq!(v["sub"].as_str(), Some(info.id.to_string().as_str()));
                if info.email.is_some() {
                    assert_eq!(v["email_verified"].as_bool(), Some(true));
                    assert_eq!(v["email"].as_str(), info.email.as_deref());
                }
                assert_eq!(v["name"].as_str().unwrap_or(""), info.name);
            }
        }
        Err(e) => {
            assert!(matches!(
                e,
                GitlabError::Malformed {
                    step: "userinfo",
                    ..
                }
            ));
            check_error(&e);
        }
    }
    let location = std::str::from_utf8(data).ok();
    // One status per input (chosen by its length), to keep executions fast.
    const STATUSES: [(&str, u16); 5] = [
        ("userinfo", 302),
        ("token", 401),
        ("userinfo", 403),
        ("userinfo", 429),
        ("token", 500),
    ];
    let (step, status) = STATUSES[data.len() % STATUSES.len()];
    let e = status_error(step, status, location, data);
    assert!(matches!(e, GitlabError::Status { .. }));
    check_error(&e);
});
