//! Applying plans to a real store: what a run writes, and what it leaves alone.

use super::*;
use crate::accounts;
use crate::db::{sessions, tokens};

/// `acme` (1) with `acme/dev` (2) and `acme/ops` (3).
fn groups() -> Vec<auto::ReadGroup> {
    ["acme", "acme/dev", "acme/ops"]
        .iter()
        .zip(1..)
        .map(|(path, id)| auto::ReadGroup::new(id, path, (id > 1).then_some(1)))
        .collect()
}

fn member(group_id: i64, user_id: i64, username: &str) -> auto::ReadMember {
    auto::ReadMember {
        group_id,
        user_id,
        username: username.into(),
        name: format!("{username} from GitLab"),
        state: "active".into(),
    }
}

/// Plans and applies `read` in one transaction; the plan applied.
fn sync(conn: &mut Connection, read: &auto::Read) -> AppResult<auto::Plan> {
    let tx = db::write_tx(conn)?;
    let plan = auto::plan(read, &read_store(&tx)?);
    apply(&tx, &plan, 50)?;
    tx.commit()?;
    Ok(plan)
}

#[test]
fn a_gone_group_that_admits_people_to_an_application_is_kept_without_its_gitlab_members() {
    let mut conn = db::test_db();
    sync(&mut conn, &ann_and_bob()).unwrap();
    let changes = crate::gate::applications::Changes {
        name: Some("wiki".into()),
        url: Some("https://wiki.lab.example".into()),
        allowed_groups: Some(vec!["acme/ops".into()]),
        description: None,
    };
    crate::gate::applications::create(&mut conn, &crate::audit::By::admin(), &changes, 60).unwrap();
    let ops_gone = auto::Read {
        groups: groups().into_iter().filter(|g| g.id != 3).collect(),
        members: vec![member(2, 7, "ann"), member(1, 8, "bob")],
    };
    let tx = db::write_tx(&mut conn).unwrap();
    let plan = auto::plan(&ops_gone, &read_store(&tx).unwrap());
    let warnings = apply(&tx, &plan, 70).unwrap();
    tx.commit().unwrap();
    assert!(
        warnings[0].contains("admits people to wiki"),
        "{warnings:?}"
    );
    let ops = accounts::group_by_name(&conn, "acme/ops").unwrap();
    assert_eq!(
        ops.members_count, 0,
        "bob no longer enters the wiki through it"
    );
    assert!(users::group_names(&conn, user(&conn, "bob").id)
        .unwrap()
        .contains(&"acme".to_string()));
}

fn user(conn: &Connection, login: &str) -> users::User {
    users::find_by_login(conn, login).unwrap().unwrap()
}

fn ann_and_bob() -> auto::Read {
    auto::Read {
        groups: groups(),
        members: vec![member(2, 7, "ann"), member(3, 8, "bob")],
    }
}

#[test]
fn a_run_creates_groups_accounts_and_memberships_and_the_same_read_again_writes_nothing() {
    let mut conn = db::test_db();
    let first = sync(&mut conn, &ann_and_bob()).unwrap();
    assert_eq!(
        first.changes(),
        auto::Changes {
            users_created: 2,
            groups_created: 3,
            memberships_added: 2,
            ..auto::Changes::default()
        }
    );
    let ann = user(&conn, "ann");
    assert_eq!(
        (ann.name.as_str(), ann.external_id.as_deref(), ann.email),
        ("ann from GitLab", Some("7"), None)
    );
    assert_eq!(
        users::group_names(&conn, ann.id).unwrap(),
        ["acme/dev", "users"]
    );
    let managed: Vec<String> = store::managed_groups(&conn)
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(managed.len(), 3);
    assert!(store::is_read(&conn, ann.id).unwrap());
    let second = sync(&mut conn, &ann_and_bob()).unwrap();
    assert!(second.changes().none(), "{second:#?}");
    assert!(second.marked_read.is_empty());
}

#[test]
fn groups_made_by_hand_and_local_accounts_are_never_touched() {
    let mut conn = db::test_db();
    accounts::create_group(
        &mut conn,
        &crate::audit::By::admin(),
        "acme/ops",
        "made by hand",
        10,
    )
    .unwrap();
    accounts::create_group(
        &mut conn,
        &crate::audit::By::admin(),
        "lab",
        "made by hand",
        10,
    )
    .unwrap();
    accounts::add_member(&mut conn, &crate::audit::By::admin(), "lab", "admin").unwrap();
    let plan = sync(&mut conn, &ann_and_bob()).unwrap();
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    let ops = accounts::group_by_name(&conn, "acme/ops").unwrap();
    assert_eq!(ops.description, "made by hand");
    assert_eq!(store::gitlab_group_of(&conn, ops.id).unwrap(), None);
    assert_eq!(
        users::group_names(&conn, user(&conn, "bob").id).unwrap(),
        ["users"],
        "bob's only GitLab group is not mirrored"
    );
    assert_eq!(
        users::group_names(&conn, user(&conn, "admin").id).unwrap(),
        ["administrators", "lab", "users"],
        "the local admin is left as it was"
    );
    let gone = auto::Read {
        groups: Vec::new(),
        members: Vec::new(),
    };
    let tx = db::write_tx(&mut conn).unwrap();
    let plan = auto::plan(&gone, &read_store(&tx).unwrap());
    assert_eq!(
        plan.groups_deleted.len(),
        2,
        "acme and acme/dev, not acme/ops"
    );
    apply(&tx, &plan, 60).unwrap();
    tx.commit().unwrap();
    assert!(accounts::group_by_name(&conn, "acme/ops").is_ok());
    assert!(accounts::group_by_name(&conn, "acme/dev").is_err());
}

#[test]
fn an_account_nobody_read_is_deactivated_with_its_sessions_and_tokens() {
    let mut conn = db::test_db();
    sync(&mut conn, &ann_and_bob()).unwrap();
    let bob = user(&conn, "bob");
    {
        let tx = db::write_tx(&mut conn).unwrap();
        sessions::create(&tx, bob.id, 55).unwrap();
        tokens::create(&tx, bob.id, "ci", None, 55).unwrap();
        tx.commit().unwrap();
    }
    let only_ann = auto::Read {
        groups: groups(),
        members: vec![member(2, 7, "ann")],
    };
    let plan = sync(&mut conn, &only_ann).unwrap();
    assert_eq!(plan.changes().users_deactivated, 1);
    let bob = user(&conn, "bob");
    assert!(!bob.active);
    assert_eq!(sessions::count(&conn, Some(bob.id)).unwrap(), 0);
    assert_eq!(users::tokens_count(&conn, bob.id).unwrap(), 0);
    assert!(users::group_names(&conn, bob.id).unwrap().is_empty());
    let back = sync(&mut conn, &ann_and_bob()).unwrap();
    assert_eq!(back.reactivated, [bob.id], "provisioning deactivated him");
    let bob = user(&conn, "bob");
    assert!(bob.active);
    assert_eq!(
        users::group_names(&conn, bob.id).unwrap(),
        ["acme/ops", "users"]
    );
    assert!(store::is_read(&conn, bob.id).unwrap());
}

#[test]
fn an_account_an_administrator_deactivated_stays_deactivated() {
    let mut conn = db::test_db();
    sync(&mut conn, &ann_and_bob()).unwrap();
    let admin = user(&conn, "admin");
    accounts::deactivate_user(&mut conn, &crate::audit::By::admin(), admin.id, "bob", 70).unwrap();
    let bob = user(&conn, "bob");
    assert!(
        !store::is_read(&conn, bob.id).unwrap(),
        "the mark is forgotten"
    );
    let plan = sync(&mut conn, &ann_and_bob()).unwrap();
    assert!(plan.changes().none(), "{plan:#?}");
    assert!(!user(&conn, "bob").active);
    // Deactivated by provisioning, then by hand reactivated and deactivated again: the
    // administrator's deactivation holds.
    let only_ann = auto::Read {
        groups: groups(),
        members: vec![member(2, 7, "ann")],
    };
    sync(&mut conn, &only_ann).unwrap();
    let ann_gone = auto::Read {
        groups: groups(),
        members: vec![member(3, 8, "bob")],
    };
    sync(&mut conn, &ann_gone).unwrap();
    assert!(!user(&conn, "ann").active);
    accounts::reactivate_user(&mut conn, &crate::audit::By::admin(), "ann", 80).unwrap();
    accounts::deactivate_user(&mut conn, &crate::audit::By::admin(), admin.id, "ann", 81).unwrap();
    let plan = sync(&mut conn, &ann_and_bob()).unwrap();
    assert!(plan.reactivated.is_empty(), "{plan:#?}");
    assert!(!user(&conn, "ann").active);
}

#[test]
fn linking_an_account_to_another_identity_forgets_that_provisioning_read_it() {
    let mut conn = db::test_db();
    sync(&mut conn, &ann_and_bob()).unwrap();
    let ann = user(&conn, "ann");
    assert!(store::is_read(&conn, ann.id).unwrap());
    accounts::update_identity_provider(
        &mut conn,
        &crate::audit::By::admin(),
        "ann",
        "gitlab",
        "someone-else",
        90,
    )
    .unwrap();
    assert!(!store::is_read(&conn, ann.id).unwrap());
    let renamed = auto::Read {
        groups: groups(),
        members: vec![auto::ReadMember {
            username: "ann2".into(),
            ..member(2, 7, "ann")
        }],
    };
    let tx = db::write_tx(&mut conn).unwrap();
    let plan = auto::plan(&renamed, &read_store(&tx).unwrap());
    drop(tx);
    assert_eq!(
        plan.accounts_created.len(),
        1,
        "GitLab user 7 has no account any more"
    );
}

#[test]
fn two_groups_swapping_their_paths_keep_their_ids_and_permissions() {
    let mut conn = db::test_db();
    sync(&mut conn, &ann_and_bob()).unwrap();
    let dev = accounts::group_by_name(&conn, "acme/dev").unwrap();
    accounts::grant_group(&mut conn, &crate::audit::By::admin(), "acme/dev", "admin").unwrap();
    let mut swapped = ann_and_bob();
    swapped.groups[1].full_path = "acme/ops".into();
    swapped.groups[2].full_path = "acme/dev".into();
    let plan = sync(&mut conn, &swapped).unwrap();
    assert_eq!(plan.groups_renamed.len(), 2);
    let now_ops = accounts::group_by_name(&conn, "acme/ops").unwrap();
    assert_eq!(
        now_ops.id, dev.id,
        "the GitLab group 2 keeps its local group"
    );
    assert_eq!(
        crate::db::permissions::of_group(&conn, now_ops.id)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_run_that_would_leave_no_administrator_is_refused() {
    let mut conn = db::test_db();
    sync(&mut conn, &ann_and_bob()).unwrap();
    accounts::grant_group(&mut conn, &crate::audit::By::admin(), "acme/dev", "admin").unwrap();
    {
        let tx = db::write_tx(&mut conn).unwrap();
        let admin = user(&tx, "admin");
        users::deactivate(&tx, admin.id, 95).unwrap();
        tx.commit().unwrap();
    }
    let ann_moved = auto::Read {
        groups: groups(),
        members: vec![member(3, 7, "ann"), member(3, 8, "bob")],
    };
    let err = sync(&mut conn, &ann_moved).unwrap_err();
    assert_eq!(err.public_message(), NO_ADMIN_LEFT);
    assert_eq!(
        users::group_names(&conn, user(&conn, "ann").id).unwrap(),
        ["acme/dev", "users"],
        "nothing written"
    );
}
