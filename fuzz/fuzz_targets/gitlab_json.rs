//! GitLab's JSON answers, whatever they hold: `parse_user`, `parse_groups_page` and
//! `status_error` never panic. An accepted user has id > 0, a non-blank username and no blank
//! email, and each field is the one a generic JSON reading finds; an accepted groups page is
//! the non-empty `full_path` values in order. Error texts are single-line and bounded.
#![no_main]

use labgate::gitlab::parse::{parse_groups_page, parse_user, status_error};
use labgate::gitlab::GitlabError;
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
    match parse_user(data) {
        Ok(user) => {
            assert!(user.id > 0);
            assert!(!user.username.trim().is_empty());
            assert!(user.email.as_deref().is_none_or(|e| !e.trim().is_empty()));
            // serde skips unknown fields without checking their UTF-8: compare only when the
            // whole body is JSON.
            if let Ok(v) = serde_json::from_slice::<Value>(data) {
                assert_eq!(v["id"].as_i64(), Some(user.id));
                assert_eq!(v["username"].as_str(), Some(user.username.as_str()));
                assert_eq!(v["state"].as_str(), Some(user.state.as_str()));
                assert_eq!(v["name"].as_str().unwrap_or(""), user.name);
                assert_eq!(v["bot"].as_bool().unwrap_or(false), user.bot);
            }
        }
        Err(e) => {
            assert!(matches!(e, GitlabError::Malformed { step: "user", .. }));
            check_error(&e);
        }
    }
    match parse_groups_page(data) {
        Ok(paths) => {
            assert!(paths.iter().all(|p| !p.is_empty()));
            if let Ok(v) = serde_json::from_slice::<Value>(data) {
                let expected: Vec<&str> = v
                    .as_array()
                    .expect("a page is a list")
                    .iter()
                    .map(|g| g["full_path"].as_str().expect("full_path is text"))
                    .filter(|p| !p.is_empty())
                    .collect();
                assert_eq!(paths, expected);
            }
        }
        Err(e) => {
            assert!(matches!(e, GitlabError::Malformed { step: "groups", .. }));
            check_error(&e);
        }
    }
    let location = std::str::from_utf8(data).ok();
    // One status per input (chosen by its length), to keep executions fast.
    const STATUSES: [(&str, u16); 5] = [
        ("user", 302),
        ("token", 401),
        ("groups", 403),
        ("groups", 429),
        ("user", 500),
    ];
    let (step, status) = STATUSES[data.len() % STATUSES.len()];
    let e = status_error(step, status, location, data);
    assert!(matches!(e, GitlabError::Status { .. }));
    check_error(&e);
});
