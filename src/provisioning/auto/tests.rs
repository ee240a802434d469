//! The rules of a provisioning run, one table row or test each.

use super::*;

/// `acme` (1) with `acme/dev` (2) and `acme/dev/sre` (3), and `acme/ops` (4).
fn tree() -> Vec<ReadGroup> {
    let mut groups = vec![ReadGroup::new(1, "acme", None)];
    for (id, path, parent) in [
        (2, "acme/dev", 1),
        (3, "acme/dev/sre", 2),
        (4, "acme/ops", 1),
    ] {
        groups.push(ReadGroup::new(id, path, Some(parent)));
    }
    groups
}

fn member(group_id: i64, user_id: i64, username: &str) -> ReadMember {
    ReadMember {
        group_id,
        user_id,
        username: username.into(),
        name: format!("{username} Name"),
        state: "active".into(),
    }
}

fn read(members: Vec<ReadMember>) -> Read {
    Read {
        groups: tree(),
        members,
    }
}

const USERS: i64 = 1;

/// The store after a run that mirrored [`tree`] as groups 11–14 and read nobody.
fn mirrored() -> Store {
    let m = |id, name: &str, gitlab_id| ManagedGroup {
        id,
        name: name.into(),
        gitlab_id,
    };
    Store {
        default_group: USERS,
        managed: vec![
            m(11, "acme", 1),
            m(12, "acme/dev", 2),
            m(13, "acme/dev/sre", 3),
            m(14, "acme/ops", 4),
        ],
        hand_made: vec!["users".into(), "administrators".into()],
        accounts: Vec::new(),
        memberships: Vec::new(),
    }
}

/// An active account linked to GitLab id `gitlab_id`, read by the last run, in `groups`.
fn linked(store: &mut Store, id: i64, gitlab_id: i64, username: &str, groups: &[i64]) {
    store.accounts.push(Account {
        id,
        login: username.into(),
        name: format!("{username} Name"),
        active: true,
        gitlab_id: Some(gitlab_id.to_string()),
        username: Some(username.into()),
        mark: Some(Mark::Read),
    });
    store.memberships.extend(groups.iter().map(|&g| (id, g)));
}

fn sorted_added(plan: &Plan) -> Vec<(AccountRef, GroupRef)> {
    let mut added = plan.memberships_added.clone();
    added.sort_unstable_by_key(|(a, g)| (format!("{a:?}"), format!("{g:?}")));
    added
}

#[test]
fn a_first_run_mirrors_every_group_and_creates_every_active_person_but_bots() {
    let store = Store {
        managed: Vec::new(),
        ..mirrored()
    };
    let mut blocked = member(4, 9, "carol");
    blocked.state = "blocked".into();
    let plan = plan(
        &read(vec![
            member(2, 7, "ann"),
            member(4, 8, "bob"),
            blocked,
            member(1, 99, "group_1_bot_4f2a"),
        ]),
        &store,
    );
    let names: Vec<&str> = plan
        .groups_created
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["acme", "acme/dev", "acme/dev/sre", "acme/ops"]);
    let created: Vec<&str> = plan
        .accounts_created
        .iter()
        .map(|p| p.username.as_str())
        .collect();
    assert_eq!(
        created,
        ["ann", "bob"],
        "blocked members and bots are not people"
    );
    assert_eq!(plan.users_read, 2);
    assert_eq!(plan.groups_read, 4);
    assert_eq!(
        sorted_added(&plan),
        vec![
            (AccountRef::New(0), GroupRef::New(1)),
            (AccountRef::New(0), GroupRef::New(2)),
            (AccountRef::New(1), GroupRef::New(3)),
        ],
        "ann: acme/dev and its subgroup, never the parent; both are in the default group \
         from their creation"
    );
    assert_eq!(plan.marked_read, [AccountRef::New(0), AccountRef::New(1)]);
    assert!(plan.deactivated.is_empty() && plan.warnings.is_empty());
}

#[test]
fn a_run_with_nothing_changed_plans_no_write() {
    let mut store = mirrored();
    linked(&mut store, 100, 7, "ann", &[USERS, 12, 13]);
    linked(&mut store, 101, 8, "bob", &[USERS, 11, 12, 13, 14]);
    let plan = plan(
        &read(vec![member(2, 7, "ann"), member(1, 8, "bob")]),
        &store,
    );
    assert!(plan.changes().none(), "{plan:#?}");
    assert!(plan.marked_read.is_empty() && plan.warnings.is_empty());
    assert_eq!(
        (plan.users_read, plan.groups_read, plan.active_accounts),
        (2, 4, 2)
    );
}

#[test]
fn memberships_become_the_default_group_and_the_managed_groups_of_the_gitlab_groups() {
    let mut store = mirrored();
    // ann was in acme/ops and, by hand, in administrators (5): both go, acme/dev comes.
    store.hand_made.push("lab-admins".into());
    linked(&mut store, 100, 7, "ann", &[USERS, 14, 5]);
    let plan = plan(&read(vec![member(2, 7, "ann")]), &store);
    assert_eq!(
        plan.memberships_removed,
        [(100, 5), (100, 14)],
        "a hand-made group's membership of a GitLab account is removed too"
    );
    assert_eq!(
        sorted_added(&plan),
        [
            (AccountRef::Local(100), GroupRef::Local(12)),
            (AccountRef::Local(100), GroupRef::Local(13)),
        ]
    );
    assert!(plan.groups_created.is_empty() && plan.groups_deleted.is_empty());
}

#[test]
fn a_renamed_or_moved_gitlab_group_renames_its_group_and_a_gone_one_is_deleted() {
    let mut store = mirrored();
    linked(&mut store, 100, 7, "ann", &[USERS, 14]);
    let mut groups = tree();
    groups[1].full_path = "acme/development".into();
    groups[2].full_path = "acme/development/sre".into();
    groups.retain(|g| g.id != 4);
    let plan = plan(
        &Read {
            groups,
            members: vec![member(1, 7, "ann")],
        },
        &store,
    );
    assert_eq!(
        plan.groups_renamed,
        [
            (12, "acme/development".to_string()),
            (13, "acme/development/sre".to_string())
        ]
    );
    assert_eq!(plan.groups_deleted, [14]);
    assert!(
        plan.memberships_removed.is_empty(),
        "memberships of a deleted group go with it"
    );
    assert_eq!(
        sorted_added(&plan),
        [
            (AccountRef::Local(100), GroupRef::Local(11)),
            (AccountRef::Local(100), GroupRef::Local(12)),
            (AccountRef::Local(100), GroupRef::Local(13)),
        ]
    );
}

#[test]
fn a_gitlab_group_named_like_a_group_made_by_hand_is_not_mirrored_and_the_run_says_so() {
    let mut store = Store {
        managed: Vec::new(),
        ..mirrored()
    };
    store.hand_made.push("acme/ops".into());
    let plan = plan(&read(vec![member(4, 8, "bob")]), &store);
    assert!(!plan.groups_created.iter().any(|g| g.name == "acme/ops"));
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.warnings[0].starts_with("GitLab group acme/ops is not mirrored: a group made by hand"),
        "{}",
        plan.warnings[0]
    );
    assert!(
        plan.memberships_added.is_empty(),
        "bob joins nothing: his only group is not mirrored ({:?})",
        plan.memberships_added
    );
    let mut managed = mirrored();
    managed.hand_made.push("acme/operations".into());
    let mut groups = tree();
    groups[3].full_path = "acme/operations".into();
    let plan = super::plan(
        &Read {
            groups,
            members: vec![],
        },
        &managed,
    );
    assert!(plan.groups_renamed.is_empty(), "{:?}", plan.groups_renamed);
    assert!(
        plan.warnings[0].contains("keeps the name acme/ops"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn two_managed_groups_may_swap_their_names() {
    let store = mirrored();
    let mut groups = tree();
    groups[1].full_path = "acme/ops".into();
    groups[3].full_path = "acme/dev".into();
    groups[2].full_path = "acme/ops/sre".into();
    let plan = plan(
        &Read {
            groups,
            members: vec![],
        },
        &store,
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(
        plan.groups_renamed,
        [
            (12, "acme/ops".to_string()),
            (13, "acme/ops/sre".to_string()),
            (14, "acme/dev".to_string())
        ]
    );
}

#[test]
fn accounts_are_matched_by_gitlab_id_then_by_a_pre_provisioned_username() {
    let mut store = mirrored();
    linked(&mut store, 100, 7, "ann", &[USERS, 12, 13]);
    store.accounts.push(Account {
        id: 101,
        login: "bob".into(),
        name: "Bob".into(),
        active: true,
        gitlab_id: None,
        username: Some("Bob".into()),
        mark: None,
    });
    store.memberships.push((101, USERS));
    let mut renamed = member(2, 7, "ann");
    renamed.name = "Ann Renamed".into();
    renamed.username = "ann2".into();
    let plan = plan(&read(vec![renamed, member(4, 8, "bob")]), &store);
    assert!(plan.accounts_created.is_empty());
    let profile = |id, username: &str, name: &str| Profile {
        gitlab_id: id,
        username: username.into(),
        name: name.into(),
    };
    assert_eq!(
        plan.profiles,
        [
            (100, profile(7, "ann2", "Ann Renamed")),
            (101, profile(8, "bob", "bob Name"))
        ],
        "ann is refreshed; bob's pre-provisioned account is linked"
    );
    assert_eq!(plan.marked_read, [AccountRef::Local(101)]);
}

#[test]
fn a_name_gitlab_gives_that_is_no_valid_name_becomes_the_username() {
    let store = mirrored();
    let mut nameless = member(4, 8, "bob");
    nameless.name = "   ".into();
    let plan = plan(&read(vec![nameless]), &store);
    assert_eq!(plan.accounts_created[0].name, "bob");
}

#[test]
fn an_account_nobody_read_is_deactivated_and_an_inactive_one_left_alone() {
    let mut store = mirrored();
    linked(&mut store, 100, 7, "ann", &[USERS, 12, 13]);
    linked(&mut store, 101, 8, "bob", &[USERS, 14]);
    linked(&mut store, 102, 9, "carol", &[]);
    store.accounts[2].active = false;
    let plan = plan(&read(vec![member(2, 7, "ann")]), &store);
    assert_eq!(
        plan.deactivated,
        [Deactivation {
            id: 101,
            login: "bob".into(),
            username: Some("bob".into())
        }]
    );
    assert!(
        plan.memberships_removed.is_empty(),
        "deactivating removes them"
    );
    assert_eq!(plan.active_accounts, 2);
}

#[test]
fn provisioning_reactivates_only_the_accounts_it_deactivated() {
    let mut store = mirrored();
    linked(&mut store, 100, 7, "ann", &[]);
    linked(&mut store, 101, 8, "bob", &[]);
    store.accounts[0].active = false;
    store.accounts[0].mark = Some(Mark::Deactivated);
    store.accounts[1].active = false;
    store.accounts[1].mark = None;
    let plan = plan(
        &read(vec![member(2, 7, "ann"), member(4, 8, "bob")]),
        &store,
    );
    assert_eq!(plan.reactivated, [100]);
    assert_eq!(
        sorted_added(&plan),
        [
            (AccountRef::Local(100), GroupRef::Local(12)),
            (AccountRef::Local(100), GroupRef::Local(13)),
        ],
        "back in the default group by reactivation, and in its groups"
    );
    assert_eq!(plan.marked_read, [AccountRef::Local(100)]);
    assert!(
        !plan.profiles.iter().any(|(id, _)| *id == 101) && plan.accounts_created.is_empty(),
        "an account an administrator deactivated is left as it is, and not replaced"
    );
}

#[test]
fn the_guard_holds_a_run_that_deactivates_a_large_share() {
    let plan_of = |deactivated: usize, active: usize| Plan {
        deactivated: (0..deactivated as i64)
            .map(|id| Deactivation {
                id,
                login: format!("u{id}"),
                username: None,
            })
            .collect(),
        active_accounts: active,
        ..Plan::default()
    };
    // (deactivated, active accounts, max percent, held)
    let cases = [
        (5, 5, 20, false),
        (6, 100, 20, false),
        (6, 30, 20, false),
        (7, 30, 20, true),
        (21, 100, 20, true),
        (20, 100, 20, false),
        (6, 6, 100, false),
        (6, 10, 50, true),
        (0, 0, 20, false),
    ];
    for (deactivated, active, percent, expected) in cases {
        assert_eq!(
            held(&plan_of(deactivated, active), percent, None),
            expected,
            "{deactivated} of {active} at {percent} %"
        );
    }
    let big = plan_of(10, 10);
    let approved: HashSet<i64> = (0..10).collect();
    assert!(
        !held(&big, 20, Some(&approved)),
        "applied by an administrator"
    );
    let fewer: HashSet<i64> = (0..9).collect();
    assert!(
        held(&big, 20, Some(&fewer)),
        "one more than was approved: held again"
    );
}

#[test]
fn bots_are_told_by_their_username() {
    for (username, bot) in [
        ("group_12_bot_4f2a9c", true),
        ("project_7_bot_0a", true),
        ("group_bot_x", false),
        ("group_12", false),
        ("group_x2_bot_1", false),
        ("ann", false),
        ("project_manager_bot", false),
    ] {
        assert_eq!(is_bot_username(username), bot, "{username}");
    }
}
