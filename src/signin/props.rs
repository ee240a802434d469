//! Properties of group synchronization against the database: a GitLab sign-in with
//! synchronization on sets the GitLab account's memberships to `users` plus the local groups
//! named like its GitLab paths under an allowed group, never touches a local user (even one
//! whose login equals the GitLab username or whose groups carry GitLab paths), and never skips
//! a synchronization that would change something. Few cases: each builds a database.

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

/// A GitLab path that admits its member under `allowed` (as every signed-in person is admitted)
/// and names no local group the properties create: a subgroup of the first allowed group.
fn admitting_path(allowed: &[String]) -> Option<String> {
    allowed.first().map(|root| format!("{root}/signed-in"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn synchronization_never_touches_local_users(
        local_groups in prop::collection::vec(prop::sample::select(GROUPS), 0..5),
        gitlab_groups in prop::collection::vec(
            prop::sample::select(vec![
                "acme", "acme/platform", "ACME/PLATFORM", "users", "manual", "other", "administrators",
            ]),
            0..6,
        ),
        username in prop::sample::select(vec!["ann", "admin", "ANN"]),
        allowed in prop::sample::select(vec![vec!["acme"], vec!["manual", "ACME"], vec!["other"]]),
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
        let allowed: Vec<String> = allowed.into_iter().map(str::to_string).collect();
        let config = GitlabConfig { allowed_groups: allowed.clone(), ..test_config(true, true) };
        let who = person(42, username, "G", None);
        let mut paths: Vec<String> = gitlab_groups.iter().map(|s| s.to_string()).collect();
        paths.extend(admitting_path(&allowed));
        let signed = complete_fresh(&mut conn, &config, &who, &paths, 2).unwrap();

        prop_assert_ne!(signed.user.login.as_str(), "ann");
        prop_assert_ne!(signed.user.login.as_str(), "admin");
        prop_assert_eq!(memberships(&conn, "ann"), before_ann);
        prop_assert_eq!(memberships(&conn, "admin"), before_admin);
        let mut expected: Vec<String> = GROUPS
            .iter()
            .chain(["users"].iter())
            .filter(|g| {
                **g == "users"
                    || paths.iter().any(|p| {
                        p == *g && provisioning::in_allowed_groups(std::slice::from_ref(p), &allowed)
                    })
            })
            .map(|g| g.to_string())
            .collect();
        expected.sort();
        expected.dedup();
        let mut got = memberships(&conn, &signed.user.login);
        got.sort();
        prop_assert_eq!(got, expected);
    }
}

/// One step of [`skipped_synchronization_never_leaves_memberships_stale`].
#[derive(Debug, Clone)]
enum Step {
    /// A GitLab sign-in with these paths, synchronization on or off.
    SignIn(Vec<&'static str>, bool),
    /// The allowed groups of the next sign-ins become these (none: synchronization does nothing).
    SetAllowed(&'static [&'static str]),
    CreateGroup(&'static str),
    RenameGroup(&'static str, &'static str),
    DeleteGroup(&'static str),
    AddMember(&'static str),
    RemoveMember(&'static str),
}

const NAMES: &[&str] = &["a", "b", "c", "d", "a/b", "users"];
const PATH_LISTS: &[&[&str]] = &[
    &["a", "b", "d"],
    &["b", "a", "c"],
    &["a/b", "users", "d"],
    &[],
];

const ALLOWED_LISTS: &[&[&str]] = &[&["a", "b", "c", "d"], &["a"], &["B", "d"], &["users"], &[]];

fn step() -> impl Strategy<Value = Step> {
    let name = || prop::sample::select(NAMES);
    prop_oneof![
        // Few path lists, so that a sign-in often repeats the last one (the case it may skip).
        4 => (prop::sample::select(PATH_LISTS), prop::bool::weighted(0.85))
            .prop_map(|(p, sync)| Step::SignIn(p.to_vec(), sync)),
        1 => prop::sample::select(ALLOWED_LISTS).prop_map(Step::SetAllowed),
        1 => name().prop_map(Step::CreateGroup),
        1 => (name(), name()).prop_map(|(a, b)| Step::RenameGroup(a, b)),
        1 => name().prop_map(Step::DeleteGroup),
        1 => name().prop_map(Step::AddMember),
        1 => name().prop_map(Step::RemoveMember),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever happens between sign-ins (groups created, renamed, deleted, memberships edited
    /// by hand, synchronization switched off, allowed groups changed), a sign-in with
    /// synchronization on leaves the memberships exactly `users` plus the groups named like its
    /// paths under an allowed group, whether it skipped the synchronization or not; and it skips
    /// only when the memberships were already right. With no allowed group it changes nothing.
    #[test]
    fn skipped_synchronization_never_leaves_memberships_stale(
        steps in prop::collection::vec(step(), 1..24),
    ) {
        let mut conn = db::test_db();
        for name in ["a", "b", "c"] {
            groups::create(&conn, name, "", 1).unwrap();
        }
        let who = person(7, "gl", "G", None);
        let group = |conn: &Connection, name: &str| groups::find_by_name(conn, name).unwrap();
        let mut user: Option<i64> = None;
        let mut allowed: Vec<String> = ALLOWED_LISTS[0].iter().map(|a| a.to_string()).collect();
        for (n, step) in steps.into_iter().enumerate() {
            match step {
                Step::SignIn(paths, sync) => {
                    let config = GitlabConfig {
                        allowed_groups: allowed.clone(),
                        ..test_config(true, sync)
                    };
                    let mut paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                    paths.extend(admitting_path(&allowed));
                    let before = user.map(|id| {
                        let mut names = users::group_names(&conn, id).unwrap();
                        names.sort();
                        names
                    });
                    let s = complete_fresh(&mut conn, &config, &who, &paths, n as i64 + 2).unwrap();
                    user = Some(s.user.id);
                    let mut got = users::group_names(&conn, s.user.id).unwrap();
                    got.sort();
                    if sync && !allowed.is_empty() {
                        let taken = provisioning::synchronized_paths(&paths, &allowed);
                        let mut expected: Vec<String> = groups::all_names(&conn)
                            .unwrap()
                            .into_iter()
                            .filter(|g| g == "users" || taken.contains(&g.as_str()))
                            .collect();
                        expected.sort();
                        prop_assert_eq!(&got, &expected, "step {}: {:?} {:?}", n, paths, allowed);
                        if !s.groups_synchronized {
                            prop_assert_eq!(Some(&got), before.as_ref(), "skipped, so unchanged");
                        }
                    } else {
                        prop_assert!(!s.groups_synchronized);
                        let unchanged = before.unwrap_or_else(|| vec!["users".to_string()]);
                        prop_assert_eq!(&got, &unchanged, "not synchronized, so unchanged");
                    }
                }
                Step::SetAllowed(list) => {
                    allowed = list.iter().map(|a| a.to_string()).collect();
                }
                Step::CreateGroup(name) => {
                    if group(&conn, name).is_none() {
                        groups::create(&conn, name, "", 1).unwrap();
                    }
                }
                Step::RenameGroup(from, to) => {
                    if let (Some(g), None) = (group(&conn, from), group(&conn, to)) {
                        if !g.is_default {
                            groups::update(&conn, g.id, to, "").unwrap();
                        }
                    }
                }
                Step::DeleteGroup(name) => {
                    if let Some(g) = group(&conn, name).filter(|g| !g.is_default) {
                        groups::delete(&conn, g.id).unwrap();
                    }
                }
                Step::AddMember(name) => {
                    if let (Some(g), Some(id)) = (group(&conn, name), user) {
                        groups::add_member(&conn, g.id, id).unwrap();
                    }
                }
                Step::RemoveMember(name) => {
                    if let (Some(g), Some(id)) = (group(&conn, name), user) {
                        groups::remove_member(&conn, g.id, id).unwrap();
                    }
                }
            }
        }
    }
}
