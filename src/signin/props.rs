//! Property of step 11 against the database: a GitLab sign-in with synchronization on sets the
//! GitLab account's memberships to `users` plus the matching local groups and never touches a
//! local user, even one whose login equals the GitLab username or whose groups carry GitLab
//! paths. Few cases: each builds a database.

use super::*;
use proptest::prelude::*;

const GROUPS: &[&str] = &[
    "acme",
    "acme/platform",
    "Acme/Platform",
    "manual",
    "administrators",
];

fn memberships(conn: &Connection, login: &str) -> Vec<String> {
    let user = users::find_by_login(conn, login).unwrap().unwrap();
    users::group_names(conn, user.id).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn synchronization_never_touches_local_users(
        local_groups in prop::collection::vec(prop::sample::select(GROUPS), 0..5),
        gitlab_groups in prop::collection::vec(
            prop::sample::select(vec!["acme", "acme/platform", "ACME/PLATFORM", "users", "manual", "other"]),
            0..6,
        ),
        username in prop::sample::select(vec!["ann", "admin", "ANN"]),
    ) {
        let mut conn = db::test_db();
        {
            let tx = db::write_tx(&mut conn).unwrap();
            for name in GROUPS {
                if groups::find_by_name(&tx, name).unwrap().is_none() {
                    groups::create(&tx, name, "", 1).unwrap();
                }
            }
            let ann = users::create(&tx, &users::NewUser {
                login: "ann",
                name: "Local Ann",
                email: None,
                password_hash: Some("not-a-real-hash"),
                must_change_password: false,
                external: None,
            }, 1).unwrap();
            for name in &local_groups {
                let g = groups::find_by_name(&tx, name).unwrap().unwrap();
                groups::add_member(&tx, g.id, ann).unwrap();
            }
            tx.commit().unwrap();
        }
        let before_ann = memberships(&conn, "ann");
        let before_admin = memberships(&conn, "admin");
        let config = GitlabConfig {
            enabled: true,
            url: "https://gl".into(),
            application_id: Some("a".into()),
            secret: Some("s".into()),
            synchronize_groups: true,
            allowed_groups: vec![],
            allow_users_to_sign_up: true,
        };
        let who = GitlabIdentity { id: 42, username: username.into(), name: "G".into(), email: None };
        let paths: Vec<String> = gitlab_groups.iter().map(|s| s.to_string()).collect();
        let signed = complete(&mut conn, &config, &who, &paths, 2).unwrap();

        prop_assert_ne!(signed.user.login.as_str(), "ann");
        prop_assert_ne!(signed.user.login.as_str(), "admin");
        prop_assert_eq!(memberships(&conn, "ann"), before_ann);
        prop_assert_eq!(memberships(&conn, "admin"), before_admin);
        let mut expected: Vec<String> = GROUPS
            .iter()
            .chain(["users"].iter())
            .filter(|g| **g == "users" || paths.iter().any(|p| p == *g))
            .map(|g| g.to_string())
            .collect();
        expected.sort();
        expected.dedup();
        let mut got = memberships(&conn, &signed.user.login);
        got.sort();
        prop_assert_eq!(got, expected);
    }
}
