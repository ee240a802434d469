//! The first start: the built-in groups, the administrator and the server id.

use super::{groups, permissions, settings, users};
use rusqlite::{Connection, TransactionBehavior};

/// Name of the built-in default group.
pub const DEFAULT_GROUP: &str = "users";
/// Name of the built-in administrators group.
pub const ADMIN_GROUP: &str = "administrators";
/// Login of the built-in administrator.
pub const ADMIN_LOGIN: &str = "admin";

/// What the first start did, for `main` to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    AlreadyDone,
    Created { admin_password_generated: bool },
}

/// On the very first start: the default groups, the `admin` user holding `admin` through the
/// `administrators` group, and a server id. All in one transaction. `password` is `None` to
/// generate one (returned through `generated`), which must then be changed at first sign-in.
pub fn bootstrap(
    conn: &mut Connection,
    password: Option<&str>,
    now: i64,
) -> rusqlite::Result<(Bootstrap, Option<String>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if settings::get(&tx, settings::KEY_SERVER_ID)?.is_some() {
        return Ok((Bootstrap::AlreadyDone, None));
    }
    let (plain, generated) = match password {
        Some(p) => (p.to_string(), false),
        None => (crate::crypto::random_password(), true),
    };
    tx.execute(
        "INSERT INTO groups (name, description, is_default, created_at) VALUES (?1, ?2, 1, ?3)",
        rusqlite::params![DEFAULT_GROUP, "Every user", now],
    )?;
    let admin_group = groups::create(&tx, ADMIN_GROUP, "System administrators", now)?;
    permissions::grant_group(&tx, admin_group, crate::model::Permission::Admin)?;
    let admin = users::create(
        &tx,
        &users::NewUser {
            login: ADMIN_LOGIN,
            name: "Administrator",
            email: None,
            password_hash: Some(&crate::crypto::hash_password(&plain)),
            must_change_password: generated,
            external: None,
        },
        now,
    )?;
    groups::add_member(&tx, admin_group, admin)?;
    settings::set(
        &tx,
        settings::KEY_SERVER_ID,
        &crate::crypto::random_hex(8).to_uppercase(),
    )?;
    tx.commit()?;
    Ok((
        Bootstrap::Created {
            admin_password_generated: generated,
        },
        generated.then_some(plain),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{migrate, test_db};

    #[test]
    fn bootstrap_runs_once() {
        let mut conn = test_db();
        let (again, pw) = bootstrap(&mut conn, None, 2_000).unwrap();
        assert_eq!(again, Bootstrap::AlreadyDone);
        assert!(pw.is_none());
        let admin = users::find_by_login(&conn, ADMIN_LOGIN).unwrap().unwrap();
        assert!(!admin.must_change_password);
        assert_eq!(permissions::count_active_admins(&conn).unwrap(), 1);
    }

    #[test]
    fn bootstrap_with_generated_password_forces_change() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let (done, pw) = bootstrap(&mut conn, None, 1).unwrap();
        assert_eq!(
            done,
            Bootstrap::Created {
                admin_password_generated: true
            }
        );
        let pw = pw.unwrap();
        let admin = users::find_by_login(&conn, ADMIN_LOGIN).unwrap().unwrap();
        assert!(admin.must_change_password);
        let hash = users::password_hash(&conn, admin.id).unwrap().unwrap();
        assert!(crate::crypto::verify_password(&pw, &hash));
    }
}
