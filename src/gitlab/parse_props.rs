//! Properties of the pure GitLab parsers (`parse`): exact on what GitLab sends, safe on anything
//! else. The fuzz targets `gitlab_json` and `pagination` check the same with coverage guidance.

use super::parse::*;
use super::GitlabError;
use proptest::prelude::*;
use serde_json::json;

fn optional_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

/// A URL GitLab could put in a `Link` header: no `<`, `>`, `,`, `;`, `"` or spaces.
fn link_url() -> impl Strategy<Value = String> {
    r"https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?/[A-Za-z0-9/?=&%._~-]{0,40}"
}

proptest! {
    #[test]
    fn userinfo_gitlab_sends_is_read_claim_by_claim(
        id in 1i64..=999_999_999_999_999_999,
        username in r"[A-Za-z0-9_.-]{0,3}[A-Za-z0-9][A-Za-z0-9_.-]{0,20}",
        name in optional_text(),
        email in optional_text(),
        verified in prop::option::of(any::<bool>()),
        groups in prop::collection::vec(r"[A-Za-z0-9_.-]{1,8}(/[A-Za-z0-9_.-]{1,8}){0,2}", 0..30),
    ) {
        let body = json!({
            "sub": id.to_string(), "sub_legacy": "ab12", "preferred_username": username,
            "nickname": username, "name": name, "email": email, "email_verified": verified,
            "groups": groups, "https://gitlab.org/claims/groups/owner": ["x"],
        });
        let info = parse_userinfo(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(info.id, id);
        prop_assert_eq!(info.username, username);
        prop_assert_eq!(info.name, name.unwrap_or_default());
        let kept = if verified == Some(true) { email.filter(|e| !e.trim().is_empty()) } else { None };
        prop_assert_eq!(info.email, kept);
        let mut expected = groups.clone();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(info.groups, expected);
    }

    #[test]
    fn a_sub_that_is_not_a_string_of_digits_is_malformed(
        sub in prop_oneof![
            r"[0-9]{0,5}[^0-9][0-9]{0,5}".prop_map(serde_json::Value::from),
            r"0{1,18}".prop_map(serde_json::Value::from),
            r"[1-9][0-9]{18,25}".prop_map(serde_json::Value::from),
            (1i64..=i64::MAX).prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(json!(["1"])),
        ],
    ) {
        let body = json!({"sub": sub, "preferred_username": "ann"});
        let is_malformed = matches!(
            parse_userinfo(body.to_string().as_bytes()),
            Err(GitlabError::Malformed { step: "userinfo", .. })
        );
        prop_assert!(is_malformed);
    }

    #[test]
    fn any_userinfo_body_is_read_or_malformed_with_a_one_line_detail(
        body in prop::collection::vec(any::<u8>(), 0..200)
    ) {
        match parse_userinfo(&body) {
            Ok(info) => prop_assert!(info.id > 0 && !info.username.trim().is_empty()),
            Err(GitlabError::Malformed { step: "userinfo", detail }) => {
                prop_assert!(!detail.contains('\n'));
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn a_link_header_gives_its_links_back(
        links in prop::collection::vec(
            (link_url(), prop::sample::select(vec!["next", "prev", "first", "last", "NEXT"])),
            0..6,
        ),
        quoted in any::<bool>(),
    ) {
        let header = links
            .iter()
            .map(|(url, rel)| if quoted { format!("<{url}>; rel=\"{rel}\"") } else { format!("<{url}>; rel={rel}") })
            .collect::<Vec<_>>()
            .join(", ");
        let expected: Vec<(String, String)> =
            links.iter().map(|(u, r)| (u.clone(), r.to_ascii_lowercase())).collect();
        prop_assert_eq!(parse_link_header(&header), expected.clone());
        let next = expected.iter().find(|(_, r)| r == "next").map(|(u, _)| NextPage::Url(u.clone()));
        prop_assert_eq!(next_page(Some(""), Some(&header)), next);
    }

    #[test]
    fn a_positive_x_next_page_wins_over_the_link(n in 1u32.., pad in r" {0,2}", link in optional_text()) {
        let value = format!("{pad}{n}{pad}");
        prop_assert_eq!(next_page(Some(&value), link.as_deref()), Some(NextPage::Number(n)));
    }

    #[test]
    fn any_pagination_headers_give_well_formed_answers(
        x_next_page in optional_text(),
        link in optional_text(),
    ) {
        if let Some(link) = &link {
            for (url, rel) in parse_link_header(link) {
                prop_assert!(!url.is_empty() && url.trim() == url && !url.contains('>'));
                prop_assert!(!rel.is_empty() && rel == rel.to_ascii_lowercase());
            }
        }
        match next_page(x_next_page.as_deref(), link.as_deref()) {
            Some(NextPage::Number(n)) => prop_assert!(n > 0),
            Some(NextPage::Url(url)) => prop_assert!(!url.is_empty()),
            None => {}
        }
    }

    #[test]
    fn retry_after_in_seconds_saturates(digits in r"[0-9]{1,30}", now in any::<i64>()) {
        let expected = digits.parse::<u64>().unwrap_or(u64::MAX);
        prop_assert_eq!(retry_after_secs(Some(&format!(" {digits} ")), now), Some(expected));
    }

    #[test]
    fn retry_after_as_a_date_is_the_time_until_it(
        now in 0i64..4_000_000_000,
        delta in -100_000i64..100_000,
    ) {
        let when = chrono::DateTime::from_timestamp(now + delta, 0).unwrap();
        let value = when.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        prop_assert_eq!(retry_after_secs(Some(&value), now), Some(delta.max(0) as u64));
    }

    #[test]
    fn any_retry_after_is_read_or_ignored_without_panic(value in any::<String>(), now in any::<i64>()) {
        let _ = retry_after_secs(Some(&value), now);
    }

    #[test]
    fn same_gitlab_accepts_pages_under_the_base_and_nothing_else(
        https in any::<bool>(),
        host in r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}",
        port in prop::option::of(1u16..),
        prefix in r"(/[a-z][a-z0-9_-]{0,8}){0,2}",
        page in 1u32..,
        other_host in r"[a-z]{1,8}\.evil",
    ) {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let base = format!("{scheme}://{host}{port}{prefix}");
        let api = format!("/api/v4/groups?min_access_level=10&page={page}&per_page=100");
        let next = format!("{base}{api}");
        prop_assert!(same_gitlab(&base, &next), "{} refused for {}", next, base);
        let upper_host = format!("{scheme}://{}{port}{prefix}{api}", host.to_uppercase());
        let slashed = format!("{base}/");
        prop_assert!(same_gitlab(&slashed, &upper_host), "{} refused for {}", upper_host, slashed);
        let mut bad = vec![
            format!("{scheme}://{other_host}{port}{prefix}{api}"),
            format!("{scheme}://user@{host}{port}{prefix}{api}"),
            format!("{scheme}://{host}{port}@{other_host}{prefix}{api}"),
            format!("{}://{host}{port}{prefix}{api}", if https { "http" } else { "https" }),
            format!("{prefix}{api}"),
        ];
        if !prefix.is_empty() {
            bad.push(format!("{scheme}://{host}{port}{prefix}x{api}"));
            bad.push(format!("{scheme}://{host}{port}/other{api}"));
        }
        for bad in bad {
            prop_assert!(!same_gitlab(&base, &bad), "{} accepted for {}", bad, base);
        }
    }
}
