//! What automatic provisioning reads from GitLab's REST API with its access token (a personal
//! or group access token, sent as `PRIVATE-TOKEN`): a group by path, its descendant groups and
//! its direct members, every page of each (`per_page=100`, followed by `X-Next-Page`, else by a
//! `Link` on the configured GitLab), and the token itself (`personal_access_tokens/self`, for
//! the connection check). The parsers are pure and take only the fields used; the [`Reader`]
//! does the calls, each bounded like every GitLab call, and a listing longer than
//! [`MAX_PAGES`] pages fails rather than reading without end.

use super::client::{Client, Page};
use super::parse::clean;
use super::{same_gitlab, GitlabError, NextPage};
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Instant;

/// Largest page read, bytes: 100 members or groups are far smaller.
pub const MAX_PAGE_BODY: u64 = 4 * 1024 * 1024;
/// Most pages of one listing: 100,000 groups or members.
pub const MAX_PAGES: u32 = 1_000;
/// Items per page asked for (GitLab's most).
pub const PER_PAGE: u32 = 100;

/// A GitLab group: the fields provisioning uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub full_path: String,
    pub parent_id: Option<i64>,
}

/// A direct member of a group, whatever their `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub state: String,
}

/// The access token as `personal_access_tokens/self` describes it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub scopes: Vec<String>,
    /// `YYYY-MM-DD`: the token stops working at the start of that day.
    pub expires_at: Option<String>,
    pub active: bool,
    pub revoked: bool,
}

#[derive(Deserialize)]
struct GroupFields<'a> {
    id: i64,
    #[serde(borrow)]
    full_path: Cow<'a, str>,
    #[serde(default)]
    parent_id: Option<i64>,
}

impl From<GroupFields<'_>> for Group {
    fn from(g: GroupFields<'_>) -> Group {
        Group {
            id: g.id,
            full_path: g.full_path.into_owned(),
            parent_id: g.parent_id,
        }
    }
}

#[derive(Deserialize)]
struct MemberFields<'a> {
    id: i64,
    #[serde(borrow)]
    username: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    state: Option<Cow<'a, str>>,
}

fn malformed(step: &'static str, e: impl std::fmt::Display) -> GitlabError {
    GitlabError::Malformed {
        step,
        detail: clean(&e.to_string(), 200),
    }
}

fn text<'a>(step: &'static str, body: &'a [u8]) -> Result<&'a str, GitlabError> {
    std::str::from_utf8(body).map_err(|e| malformed(step, format!("not UTF-8 ({e})")))
}

/// A group object (`GET /groups/:id`).
pub fn parse_group(body: &[u8]) -> Result<Group, GitlabError> {
    let fields: GroupFields =
        serde_json::from_str(text("group", body)?).map_err(|e| malformed("group", e))?;
    Ok(fields.into())
}

/// A page of groups (`descendant_groups`).
pub fn parse_groups(body: &[u8]) -> Result<Vec<Group>, GitlabError> {
    let step = "descendant_groups";
    let list: Vec<GroupFields> =
        serde_json::from_str(text(step, body)?).map_err(|e| malformed(step, e))?;
    Ok(list.into_iter().map(Group::from).collect())
}

/// A page of members: `state` absent counts as unknown (not `active`), `name` absent as empty.
pub fn parse_members(body: &[u8]) -> Result<Vec<Member>, GitlabError> {
    let step = "members";
    let list: Vec<MemberFields> =
        serde_json::from_str(text(step, body)?).map_err(|e| malformed(step, e))?;
    Ok(list
        .into_iter()
        .map(|m| Member {
            id: m.id,
            username: m.username.into_owned(),
            name: m.name.map(Cow::into_owned).unwrap_or_default(),
            state: m.state.map(Cow::into_owned).unwrap_or_default(),
        })
        .collect())
}

/// `personal_access_tokens/self`.
pub fn parse_token_self(body: &[u8]) -> Result<TokenInfo, GitlabError> {
    #[derive(Deserialize)]
    struct Fields {
        #[serde(default)]
        name: String,
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        expires_at: Option<String>,
        #[serde(default)]
        active: Option<bool>,
        #[serde(default)]
        revoked: bool,
    }
    let step = "personal_access_tokens/self";
    let f: Fields = serde_json::from_str(text(step, body)?).map_err(|e| malformed(step, e))?;
    Ok(TokenInfo {
        name: f.name,
        scopes: f.scopes,
        expires_at: f.expires_at,
        active: f.active.unwrap_or(!f.revoked),
        revoked: f.revoked,
    })
}

/// A path segment: `acme/platform` as `acme%2Fplatform`.
fn segment(path: &str) -> String {
    super::enc(path)
}

/// GitLab, reached with an access token, until `deadline`.
pub struct Reader<'a> {
    pub client: &'a Client,
    /// The configured GitLab URL, without a trailing `/`.
    pub base: &'a str,
    pub token: &'a str,
    pub deadline: Instant,
}

impl Reader<'_> {
    /// `GET /api/v4/groups/<path>`: 404 when the token cannot see it.
    pub fn group(&self, path: &str) -> Result<Group, GitlabError> {
        let url = format!("{}/api/v4/groups/{}", self.base, segment(path));
        let page = self.get("group", &url)?;
        parse_group(&page.body)
    }

    /// Every group below group `id`, every page.
    pub fn descendant_groups(&self, id: i64) -> Result<Vec<Group>, GitlabError> {
        self.listing(id, "descendant_groups", parse_groups)
    }

    /// The direct members of group `id`, every page, whatever their state.
    pub fn members(&self, id: i64) -> Result<Vec<Member>, GitlabError> {
        self.listing(id, "members", parse_members)
    }

    /// Every page of `/api/v4/groups/<id>/<what>`, each parsed with `parse`.
    fn listing<T>(
        &self,
        id: i64,
        what: &'static str,
        parse: fn(&[u8]) -> Result<Vec<T>, GitlabError>,
    ) -> Result<Vec<T>, GitlabError> {
        let url = format!(
            "{}/api/v4/groups/{id}/{what}?per_page={PER_PAGE}",
            self.base
        );
        let mut all = Vec::new();
        self.pages(what, &url, |body| {
            all.extend(parse(body)?);
            Ok(())
        })?;
        Ok(all)
    }

    /// `GET /api/v4/personal_access_tokens/self`.
    pub fn token_self(&self) -> Result<TokenInfo, GitlabError> {
        let url = format!("{}/api/v4/personal_access_tokens/self", self.base);
        let page = self.get("personal_access_tokens/self", &url)?;
        parse_token_self(&page.body)
    }

    fn get(&self, step: &'static str, url: &str) -> Result<Page, GitlabError> {
        self.client
            .access_token_get(step, url, self.token, MAX_PAGE_BODY, self.deadline)
    }

    /// Reads `first` and every next page, giving each body to `take`. A page number must grow
    /// and a `Link` must stay on the configured GitLab; past [`MAX_PAGES`] the listing fails.
    fn pages(
        &self,
        step: &'static str,
        first: &str,
        mut take: impl FnMut(&[u8]) -> Result<(), GitlabError>,
    ) -> Result<(), GitlabError> {
        let mut url = first.to_string();
        let mut number = 1u32;
        for _ in 0..MAX_PAGES {
            let page = self.get(step, &url)?;
            take(&page.body)?;
            url = match page.next {
                None => return Ok(()),
                Some(NextPage::Number(n)) if n > number => {
                    number = n;
                    format!("{first}&page={n}")
                }
                Some(NextPage::Number(n)) => {
                    return Err(malformed(
                        step,
                        format!("the next page ({n}) does not follow page {number}"),
                    ))
                }
                Some(NextPage::Url(next)) if same_gitlab(self.base, &next) => {
                    number = number.saturating_add(1);
                    next
                }
                Some(NextPage::Url(_)) => {
                    return Err(malformed(
                        step,
                        "the link to the next page leads outside the configured GitLab",
                    ))
                }
            };
        }
        Err(malformed(
            step,
            format!("more than {MAX_PAGES} pages of {PER_PAGE}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_take_their_id_path_and_parent_and_skip_the_rest() {
        let body = br#"[{"id":2,"name":"Dev","full_path":"acme/dev","parent_id":1,"web_url":"x","description":"d"},
            {"id":1,"full_path":"acme","parent_id":null}]"#;
        assert_eq!(
            parse_groups(body).unwrap(),
            [
                Group {
                    id: 2,
                    full_path: "acme/dev".into(),
                    parent_id: Some(1)
                },
                Group {
                    id: 1,
                    full_path: "acme".into(),
                    parent_id: None
                }
            ]
        );
        assert_eq!(
            parse_group(br#"{"id":1,"full_path":"acme"}"#)
                .unwrap()
                .full_path,
            "acme"
        );
        for bad in [
            &b"{"[..],
            b"[{\"id\":\"x\"}]",
            b"[{\"full_path\":\"a\"}]",
            b"\xff",
        ] {
            assert!(
                matches!(parse_groups(bad), Err(GitlabError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn members_keep_their_state_and_a_missing_state_is_not_active() {
        let body = br#"[{"id":7,"username":"ann","name":"Ann","state":"active","access_level":30},
            {"id":8,"username":"bob","state":"blocked"},{"id":9,"username":"eve"}]"#;
        let members = parse_members(body).unwrap();
        let rows: Vec<(i64, &str, &str, &str)> = members
            .iter()
            .map(|m| (m.id, m.username.as_str(), m.name.as_str(), m.state.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                (7, "ann", "Ann", "active"),
                (8, "bob", "", "blocked"),
                (9, "eve", "", "")
            ]
        );
    }

    #[test]
    fn the_token_is_described_without_its_value() {
        let body = br#"{"id":1,"name":"labgate","revoked":false,"created_at":"2025-01-01T00:00:00.000Z",
            "scopes":["read_api"],"user_id":5,"last_used_at":null,"active":true,"expires_at":"2026-01-31"}"#;
        assert_eq!(
            parse_token_self(body).unwrap(),
            TokenInfo {
                name: "labgate".into(),
                scopes: vec!["read_api".into()],
                expires_at: Some("2026-01-31".into()),
                active: true,
                revoked: false,
            }
        );
    }

    #[test]
    fn group_paths_are_one_encoded_segment() {
        assert_eq!(segment("acme/platform"), "acme%2Fplatform");
        assert_eq!(segment("a.b-c_d é"), "a.b-c_d%20%C3%A9");
    }
}
