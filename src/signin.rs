//! Steps 7–12 of a GitLab sign-in (SPEC §5), in one transaction: find or link the account,
//! sign-up and deactivation rules, email conflicts, group synchronization, last connection and
//! a fresh session. The decisions are `provisioning`'s; this module only reads and writes.

use crate::db::{self, groups, sessions, users};
use crate::error::AppError;
use crate::gitlab_config::GitlabConfig;
use crate::model::{self, PROVIDER_GITLAB};
use crate::provisioning::{self, Account, Found, LocalGroup, Refusal};
use rusqlite::{params, Connection, OptionalExtension};

/// What GitLab said about the person signing in.
#[derive(Debug, Clone)]
pub struct GitlabIdentity {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: Option<String>,
}

#[derive(Debug)]
pub struct SignedIn {
    pub user: users::User,
    pub session_value: String,
    pub csrf_token: String,
    pub created: bool,
}

#[derive(Debug)]
pub enum SignInError {
    Refused(Refusal),
    Failed(AppError),
}

impl From<rusqlite::Error> for SignInError {
    fn from(e: rusqlite::Error) -> Self {
        SignInError::Failed(AppError::Db(e))
    }
}

impl From<AppError> for SignInError {
    fn from(e: AppError) -> Self {
        SignInError::Failed(e)
    }
}

fn account(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Option<Account>> {
    conn.query_row(sql, p, |r| {
        Ok(Account {
            id: r.get(0)?,
            active: r.get(1)?,
            gitlab_id: r.get(2)?,
        })
    })
    .optional()
}

/// Runs steps 7–12. Nothing is written unless the sign-in succeeds.
pub fn complete(
    conn: &mut Connection,
    config: &GitlabConfig,
    who: &GitlabIdentity,
    gitlab_groups: &[String],
    now: i64,
) -> Result<SignedIn, SignInError> {
    let gitlab_id = who.id.to_string();
    let tx = db::write_tx(conn)?;
    // Step 7: find by GitLab id, else a pre-provisioned account by username.
    let by_id = account(
        &tx,
        "SELECT id, active, external_id FROM users \
         WHERE external_provider = ?1 AND external_id = ?2",
        params![PROVIDER_GITLAB, gitlab_id],
    )?;
    let by_username = account(
        &tx,
        "SELECT id, active, external_id FROM users WHERE external_provider = ?1 \
         AND external_identity = ?2 COLLATE NOCASE AND external_id IS NOT ?3 \
         ORDER BY external_id IS NOT NULL, id LIMIT 1",
        params![PROVIDER_GITLAB, who.username, gitlab_id],
    )?;
    let found = provisioning::find_account(by_id.as_ref(), by_username.as_ref(), &who.username)
        .map_err(SignInError::Refused)?;
    let active = by_id
        .as_ref()
        .or(by_username.as_ref())
        .is_none_or(|a| a.active);
    // Steps 8 and 9: sign-up and deactivated accounts.
    provisioning::admission(&found, active, config.allow_users_to_sign_up)
        .map_err(SignInError::Refused)?;
    let name = model::validate_name(&who.name).unwrap_or_else(|_| who.username.clone());
    let email = who
        .email
        .as_deref()
        .and_then(|e| model::validate_email(e).ok().flatten());
    let own_id = match found {
        Found::Existing(id) | Found::Link(id) => Some(id),
        Found::New => None,
    };
    // Step 10: the email must not belong to another account.
    if let Some(email) = &email {
        if users::email_owner(&tx, email, own_id)?.is_some() {
            return Err(SignInError::Refused(Refusal::EmailTaken));
        }
    }
    let (user_id, created) = match own_id {
        Some(id) => {
            tx.execute(
                "UPDATE users SET name = ?2, email = ?3, external_identity = ?4, external_id = ?5, \
                 updated_at = ?6 WHERE id = ?1",
                params![id, name, email, who.username, gitlab_id, now],
            )?;
            (id, false)
        }
        None => {
            let login = provisioning::login_candidates(&who.username, who.id)
                .take(1000)
                .find(|candidate| matches!(users::find_by_login(&tx, candidate), Ok(None)))
                .ok_or_else(|| AppError::Internal("no free login".into()))?;
            let id = users::create(
                &tx,
                &users::NewUser {
                    login: &login,
                    name: &name,
                    email: email.as_deref(),
                    password_hash: None,
                    must_change_password: false,
                    external: Some(users::External {
                        provider: PROVIDER_GITLAB,
                        identity: &who.username,
                        id: Some(&gitlab_id),
                    }),
                },
                now,
            )?;
            (id, true)
        }
    };
    // Step 11: group synchronization.
    if config.synchronize_groups {
        let all: Vec<LocalGroup> = all_groups(&tx)?;
        let current: Vec<LocalGroup> = member_groups(&tx, user_id)?;
        let plan = provisioning::group_sync_plan(&current, &all, gitlab_groups);
        for group_id in plan.add {
            groups::add_member(&tx, group_id, user_id)?;
        }
        for group_id in plan.remove {
            groups::remove_member(&tx, group_id, user_id)?;
        }
    }
    // Step 12: last connection and a fresh session.
    sessions::purge_expired(&tx, now, crate::settings::session_timeout_secs(&tx)?)?;
    users::touch_last_connection(&tx, user_id, now)?;
    let (session_value, session) = sessions::create(&tx, user_id, now)?;
    let user = users::find_by_id(&tx, user_id)?
        .ok_or_else(|| AppError::Internal("user vanished".into()))?;
    tx.commit()?;
    Ok(SignedIn {
        user,
        session_value,
        csrf_token: session.csrf_token,
        created,
    })
}

fn all_groups(conn: &Connection) -> rusqlite::Result<Vec<LocalGroup>> {
    let mut stmt = conn.prepare("SELECT id, name, is_default FROM groups")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(LocalGroup {
                id: r.get(0)?,
                name: r.get(1)?,
                is_default: r.get(2)?,
            })
        })?
        .collect();
    rows
}

fn member_groups(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<LocalGroup>> {
    let mut stmt = conn.prepare(
        "SELECT g.id, g.name, g.is_default FROM groups g \
         JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ?1",
    )?;
    let rows = stmt
        .query_map([user_id], |r| {
            Ok(LocalGroup {
                id: r.get(0)?,
                name: r.get(1)?,
                is_default: r.get(2)?,
            })
        })?
        .collect();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts;

    fn config(sign_up: bool, sync: bool) -> GitlabConfig {
        GitlabConfig {
            enabled: true,
            url: "https://gl".into(),
            application_id: Some("a".into()),
            secret: Some("s".into()),
            synchronize_groups: sync,
            allowed_groups: vec![],
            allow_users_to_sign_up: sign_up,
        }
    }

    fn ann() -> GitlabIdentity {
        GitlabIdentity {
            id: 42,
            username: "ann".into(),
            name: "Ann".into(),
            email: Some("ann@x.org".into()),
        }
    }

    fn refused(r: Result<SignedIn, SignInError>) -> Refusal {
        match r {
            Err(SignInError::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn new_user_is_created_with_session_then_found_by_id() {
        let mut conn = db::test_db();
        let first = complete(&mut conn, &config(true, false), &ann(), &[], 10).unwrap();
        assert!(first.created);
        assert_eq!(first.user.login, "ann");
        assert_eq!(first.user.external_id.as_deref(), Some("42"));
        assert_eq!(
            users::group_names(&conn, first.user.id).unwrap(),
            vec!["users"]
        );
        let mut renamed = ann();
        renamed.name = "Ann B".into();
        renamed.username = "annb".into();
        let again = complete(&mut conn, &config(false, false), &renamed, &[], 20).unwrap();
        assert!(!again.created);
        assert_eq!(again.user.id, first.user.id);
        assert_eq!(again.user.name, "Ann B");
        assert_eq!(again.user.external_identity.as_deref(), Some("annb"));
        assert_eq!(count(&conn, "SELECT count(*) FROM sessions"), 2);
    }

    #[test]
    fn sign_up_off_refuses_new_but_admits_pre_provisioned() {
        let mut conn = db::test_db();
        assert_eq!(
            refused(complete(&mut conn, &config(false, false), &ann(), &[], 1)),
            Refusal::SignUpDisabled
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM users"),
            1,
            "nothing written"
        );
        accounts::create_user(
            &mut conn,
            &accounts::NewUserInput {
                login: "ann-local",
                name: "A",
                email: "",
                password: "",
                gitlab_username: Some("ANN"),
            },
            1,
        )
        .unwrap();
        let s = complete(&mut conn, &config(false, false), &ann(), &[], 2).unwrap();
        assert_eq!(s.user.login, "ann-local");
        assert_eq!(s.user.external_id.as_deref(), Some("42"));
    }

    #[test]
    fn same_username_with_another_id_is_refused() {
        let mut conn = db::test_db();
        complete(&mut conn, &config(true, false), &ann(), &[], 1).unwrap();
        let mut impostor = ann();
        impostor.id = 99;
        impostor.email = None;
        assert_eq!(
            refused(complete(&mut conn, &config(true, false), &impostor, &[], 2)),
            Refusal::IdMismatch("ann".into())
        );
    }

    #[test]
    fn deactivated_account_and_email_conflicts_are_refused() {
        let mut conn = db::test_db();
        let s = complete(&mut conn, &config(true, false), &ann(), &[], 1).unwrap();
        accounts::deactivate_user(&mut conn, 1, &s.user.login, 2).unwrap();
        assert_eq!(
            refused(complete(&mut conn, &config(true, false), &ann(), &[], 3)),
            Refusal::Deactivated
        );
        let mut bob = ann();
        bob.id = 7;
        bob.username = "bob".into();
        accounts::create_user(
            &mut conn,
            &accounts::NewUserInput {
                login: "local-bob",
                name: "B",
                email: "BOB@x.org",
                password: "long-enough-pw",
                gitlab_username: None,
            },
            4,
        )
        .unwrap();
        bob.email = Some("bob@x.org".into());
        assert_eq!(
            refused(complete(&mut conn, &config(true, false), &bob, &[], 5)),
            Refusal::EmailTaken
        );
    }

    #[test]
    fn taken_login_gets_the_gitlab_suffix() {
        let mut conn = db::test_db();
        accounts::create_user(
            &mut conn,
            &accounts::NewUserInput {
                login: "ann",
                name: "Local Ann",
                email: "",
                password: "long-enough-pw",
                gitlab_username: None,
            },
            1,
        )
        .unwrap();
        let mut who = ann();
        who.email = None;
        let s = complete(&mut conn, &config(true, false), &who, &[], 2).unwrap();
        assert_eq!(s.user.login, "ann-gitlab");
    }

    #[test]
    fn synchronization_sets_memberships_and_keeps_users() {
        let mut conn = db::test_db();
        accounts::create_group(&mut conn, "acme/platform", "", 1).unwrap();
        accounts::create_group(&mut conn, "manual", "", 1).unwrap();
        let s = complete(&mut conn, &config(true, false), &ann(), &[], 2).unwrap();
        accounts::add_member(&mut conn, "manual", &s.user.login).unwrap();
        let groups = vec![
            "acme".to_string(),
            "acme/platform".to_string(),
            "ACME/PLATFORM".to_string(),
        ];
        complete(&mut conn, &config(true, true), &ann(), &groups, 3).unwrap();
        assert_eq!(
            users::group_names(&conn, s.user.id).unwrap(),
            vec!["acme/platform", "users"]
        );
        // Without synchronization, memberships are left alone.
        complete(&mut conn, &config(true, false), &ann(), &[], 4).unwrap();
        assert_eq!(
            users::group_names(&conn, s.user.id).unwrap(),
            vec!["acme/platform", "users"]
        );
    }
}

#[cfg(test)]
mod props;
