//! The identifiers' rules, on any text: `Login::parse` accepts exactly the logins the rules
//! allow (2–255 letters, digits, `.`, `-`, `_`, `@`, starting with a letter or digit);
//! `GroupName::parse` accepts exactly trimmed names of 1–255 characters without control
//! characters, other than `Anyone`, and is idempotent; names, emails and allowed-group slugs
//! keep their rules; every login generated from a GitLab username is a valid, distinct login.
#![no_main]

use arbitrary::Arbitrary;
use labgate::model::{validate_email, validate_name, GroupName, Login};
use labgate::provisioning::{in_allowed_groups, login_candidates, parse_allowed_group};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    gitlab_id: i64,
}

fn naive_login(s: &str) -> bool {
    (2..=255).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn naive_group_name(s: &str) -> bool {
    let t = s.trim();
    (1..=255).contains(&t.chars().count())
        && !t.eq_ignore_ascii_case("anyone")
        && !t.chars().any(char::is_control)
}

fuzz_target!(|input: Input| {
    let s = input.text.as_str();

    let login = Login::parse(s);
    assert_eq!(login.is_ok(), naive_login(s), "{s:?}");
    if let Ok(l) = login {
        assert_eq!(l.as_str(), s);
    }

    let group = GroupName::parse(s);
    assert_eq!(group.is_ok(), naive_group_name(s), "{s:?}");
    if let Ok(g) = group {
        assert_eq!(g.as_str(), s.trim());
        assert_eq!(GroupName::parse(g.as_str()), Ok(g.clone()));
    }

    if let Ok(name) = validate_name(s) {
        assert_eq!(name, s.trim());
        assert!((1..=200).contains(&name.chars().count()));
        assert!(!name.chars().any(char::is_control));
    }
    if let Ok(Some(email)) = validate_email(s) {
        assert_eq!(email, s.trim());
        assert!(email.chars().count() <= 100);
        assert_eq!(email.matches('@').count(), 1);
        let (local, domain) = email.split_once('@').unwrap();
        assert!(!local.is_empty() && !domain.is_empty());
        assert!(!email.chars().any(|c| c.is_whitespace() || c.is_control()));
    }

    if let Ok(slug) = parse_allowed_group(s) {
        assert_eq!(slug, s.trim().trim_matches('/'));
        assert!((1..=255).contains(&slug.len()));
        assert!(slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        let one = |p: String| in_allowed_groups(&[p], std::slice::from_ref(&slug));
        assert!(one(slug.clone()));
        assert!(one(slug.to_uppercase()));
        assert!(one(format!("{slug}/x/y")));
        assert!(!one(format!("{slug}-other")));
        assert!(!one(format!("{slug}x/y")));
    }

    let candidates: Vec<String> = login_candidates(s, input.gitlab_id).take(5).collect();
    for c in &candidates {
        assert!(Login::parse(c).is_ok(), "{s:?} gave {c:?}");
    }
    for (i, c) in candidates.iter().enumerate() {
        assert!(!candidates[..i].contains(c), "{s:?} repeats {c:?}");
    }
    if naive_login(s) && s.len() <= 240 {
        assert_eq!(candidates[0], s, "a valid username is its own login");
    }
});
