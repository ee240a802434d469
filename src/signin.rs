//! The end of a GitLab sign-in, in one transaction: find or link the account,
//! sign-up and deactivation rules, email conflicts, group synchronization, last connection and
//! a fresh session. The decisions are `provisioning`'s; this module only reads and writes.

use crate::db::{self, groups, users};
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
    /// Whether step 11 compared and wrote the memberships; `false` when synchronization is off
    /// or nothing it depends on changed since the user's last synchronization.
    pub groups_synchronized: bool,
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
    conn.prepare_cached(sql)?
        .query_row(p, |r| {
            Ok(Account {
                id: r.get(0)?,
                active: r.get(1)?,
                gitlab_id: r.get(2)?,
            })
        })
        .optional()
}

/// Step 7, by GitLab id (index `users_external_id`).
const ACCOUNT_BY_ID: &str = "SELECT id, active, external_id FROM users \
     WHERE external_provider = ?1 AND external_id = ?2";

/// Step 7, a pre-provisioned account by GitLab username, ignoring case (index
/// `users_external_identity`).
const ACCOUNT_BY_USERNAME: &str = "SELECT id, active, external_id FROM users \
     WHERE external_provider = ?1 AND external_identity = ?2 COLLATE NOCASE \
     AND external_id IS NOT ?3 ORDER BY external_id IS NOT NULL, id LIMIT 1";

/// Runs steps 7–12, ending the browser's previous session (`previous_session`, its id hash) in
/// the same transaction. Nothing is written unless the sign-in succeeds.
pub fn complete(
    conn: &mut Connection,
    config: &GitlabConfig,
    who: &GitlabIdentity,
    gitlab_groups: &[String],
    previous_session: Option<&str>,
    now: i64,
) -> Result<SignedIn, SignInError> {
    let gitlab_id = who.id.to_string();
    let tx = db::write_tx(conn)?;
    // Step 7: find by GitLab id, else a pre-provisioned account by username.
    let by_id = account(&tx, ACCOUNT_BY_ID, params![PROVIDER_GITLAB, gitlab_id])?;
    let by_username = account(
        &tx,
        ACCOUNT_BY_USERNAME,
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
            // Only a change is written: an UPDATE that sets an indexed column rewrites its index
            // entries (email, GitLab id and username) even when the value is the same.
            tx.prepare_cached(
                "UPDATE users SET name = ?2, email = ?3, external_identity = ?4, external_id = ?5, \
                 updated_at = ?6 WHERE id = ?1 AND (name IS NOT ?2 OR email IS NOT ?3 \
                 OR external_identity IS NOT ?4 OR external_id IS NOT ?5)",
            )?
            .execute(params![id, name, email, who.username, gitlab_id, now])?;
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
    // Step 11: group synchronization, over the paths under an allowed group only.
    let groups_synchronized = config.synchronizes() && {
        let paths = provisioning::synchronized_paths(gitlab_groups, &config.allowed_groups);
        synchronize_groups(&tx, user_id, &paths)?
    };
    // Step 12: last connection and a fresh session.
    let started = crate::accounts::start_session(&tx, user_id, previous_session, now)?;
    tx.commit()?;
    Ok(SignedIn {
        user: started.user,
        session_value: started.value,
        csrf_token: started.session.csrf_token,
        created,
        groups_synchronized,
    })
}

/// Group synchronization for `user_id`: its memberships become `users` plus the local groups
/// named like `gitlab_paths`, which must be the paths [`provisioning::synchronized_paths`]
/// kept. Skipped when those paths are the ones of the user's last synchronization and nothing
/// it depends on has changed since (migration 7); the digest is taken over the kept paths, so
/// a change of the allowed groups that changes them makes the next sign-in synchronize again.
/// Returns whether it compared and wrote the memberships.
fn synchronize_groups(
    tx: &Connection,
    user_id: i64,
    gitlab_paths: &[&str],
) -> Result<bool, AppError> {
    let digest = paths_digest(gitlab_paths);
    if in_sync(tx, user_id, &digest)? {
        return Ok(false);
    }
    let current = member_groups(tx, user_id)?;
    // A path naming a group the user is already in needs no lookup (names are unique):
    // once synchronized, a sign-in looks up only the default group and new paths.
    let known = provisioning::fast_set(current.iter().map(|g| g.name.as_str()));
    let unknown: Vec<&str> = gitlab_paths
        .iter()
        .copied()
        .filter(|path| !known.contains(path))
        .collect();
    let found = sync_candidates(tx, &unknown)?;
    let plan = provisioning::group_sync_plan(&current, &found, gitlab_paths);
    for group_id in plan.add {
        groups::add_member(tx, group_id, user_id)?;
    }
    for group_id in plan.remove {
        groups::remove_member(tx, group_id, user_id)?;
    }
    // After the changes above, whose triggers deleted the previous row.
    tx.prepare_cached(
        "INSERT OR REPLACE INTO gitlab_group_sync (user_id, paths_digest) VALUES (?1, ?2)",
    )?
    .execute(params![user_id, digest.as_slice()])?;
    Ok(true)
}

/// Digest of a set of GitLab paths: SHA-256 of the sorted, distinct paths, each preceded by its
/// length, truncated to 128 bits (compared with the stored one only: a forged match would need
/// a second preimage).
fn paths_digest(paths: &[&str]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&str> = paths.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hash = Sha256::new();
    for path in sorted {
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
    }
    let full: [u8; 32] = hash.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Whether the user's memberships are what synchronizing the paths with `digest` made, with
/// nothing changed since: the row the triggers of migration 7 delete on any such change.
fn in_sync(conn: &Connection, user_id: i64, digest: &[u8; 16]) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM gitlab_group_sync WHERE user_id = ?1 AND paths_digest = ?2")?
        .exists(params![user_id, digest.as_slice()])
}

/// The local groups synchronization may want: the default group, and those
/// whose name equals one of `gitlab_paths` (case-sensitive: `name` has the binary collation; a
/// path given twice gives its group twice). Each path is looked up in the `UNIQUE` index on
/// `name`, the default group in its partial index, so the cost follows the user's groups, not
/// the number of local groups.
fn sync_candidates(conn: &Connection, gitlab_paths: &[&str]) -> rusqlite::Result<Vec<LocalGroup>> {
    let names = serde_json::to_string(gitlab_paths)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut stmt = conn.prepare_cached(SYNC_CANDIDATES)?;
    let rows = stmt.query_map([names], local_group)?.collect();
    rows
}

const SYNC_CANDIDATES: &str = "SELECT g.id, g.name, g.is_default \
     FROM json_each(?1) AS j JOIN groups AS g ON g.name = j.value WHERE g.is_default = 0 \
     UNION ALL SELECT id, name, is_default FROM groups WHERE is_default = 1";

fn local_group(r: &rusqlite::Row<'_>) -> rusqlite::Result<LocalGroup> {
    Ok(LocalGroup {
        id: r.get(0)?,
        name: r.get(1)?,
        is_default: r.get(2)?,
    })
}

fn member_groups(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<LocalGroup>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.id, g.name, g.is_default FROM groups g \
         JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ?1",
    )?;
    let rows = stmt.query_map([user_id], local_group)?.collect();
    rows
}

/// [`complete`] for a browser that had no session.
#[cfg(test)]
fn complete_fresh(
    conn: &mut Connection,
    config: &GitlabConfig,
    who: &GitlabIdentity,
    gitlab_groups: &[String],
    now: i64,
) -> Result<SignedIn, SignInError> {
    complete(conn, config, who, gitlab_groups, None, now)
}

/// The allowed groups of [`test_config`]: the roots of every path the tests synchronize,
/// unless a test sets its own.
#[cfg(test)]
const TEST_ALLOWED: &[&str] = &["a", "b", "c", "d", "x", "acme"];

/// A GitLab configuration for the tests: enabled, allowed groups [`TEST_ALLOWED`].
#[cfg(test)]
fn test_config(sign_up: bool, sync: bool) -> GitlabConfig {
    GitlabConfig {
        enabled: true,
        url: "https://gl".into(),
        application_id: Some("a".into()),
        secret: Some("s".into()),
        synchronize_groups: sync,
        allowed_groups: TEST_ALLOWED.iter().map(|a| a.to_string()).collect(),
        allow_users_to_sign_up: sign_up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts;

    fn config(sign_up: bool, sync: bool) -> GitlabConfig {
        test_config(sign_up, sync)
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
        let first = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 10).unwrap();
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
        let again = complete_fresh(&mut conn, &config(false, false), &renamed, &[], 20).unwrap();
        assert!(!again.created);
        assert_eq!(again.user.id, first.user.id);
        assert_eq!(again.user.name, "Ann B");
        assert_eq!(again.user.external_identity.as_deref(), Some("annb"));
        assert_eq!(count(&conn, "SELECT count(*) FROM sessions"), 2);
    }

    #[test]
    fn profile_refresh_writes_only_a_change() {
        let mut conn = db::test_db();
        let id = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 10)
            .unwrap()
            .user
            .id;
        let row = |conn: &Connection| -> (i64, i64, i64) {
            conn.query_row(
                "SELECT updated_at, last_connection_at, \
                 (SELECT count(*) FROM user_changes WHERE user_id = ?1) FROM users WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        let (_, _, logged) = row(&conn);
        complete_fresh(&mut conn, &config(true, false), &ann(), &[], 20).unwrap();
        assert_eq!(
            row(&conn),
            (10, 20, logged),
            "unchanged: only the last connection is written"
        );
        type Change = (&'static str, fn(&mut GitlabIdentity));
        let changes: [Change; 5] = [
            ("name", |w| w.name = "Ann B".into()),
            ("email case", |w| w.email = Some("Ann@x.org".into())),
            ("no email", |w| w.email = None),
            ("username case", |w| w.username = "Ann".into()),
            ("username", |w| w.username = "ann2".into()),
        ];
        let mut who = ann();
        for (n, (what, change)) in changes.into_iter().enumerate() {
            change(&mut who);
            let now = 30 + n as i64;
            let s = complete_fresh(&mut conn, &config(true, false), &who, &[], now).unwrap();
            assert_eq!((s.user.id, row(&conn).0), (id, now), "{what}: written");
            assert_eq!(s.user.name, who.name, "{what}");
            assert_eq!(s.user.email, who.email, "{what}");
            assert_eq!(
                s.user.external_identity.as_deref(),
                Some(who.username.as_str())
            );
        }
    }

    #[test]
    fn sign_up_off_refuses_new_but_admits_pre_provisioned() {
        let mut conn = db::test_db();
        assert_eq!(
            refused(complete_fresh(
                &mut conn,
                &config(false, false),
                &ann(),
                &[],
                1
            )),
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
        let s = complete_fresh(&mut conn, &config(false, false), &ann(), &[], 2).unwrap();
        assert_eq!(s.user.login, "ann-local");
        assert_eq!(s.user.external_id.as_deref(), Some("42"));
    }

    #[test]
    fn same_username_with_another_id_is_refused() {
        let mut conn = db::test_db();
        complete_fresh(&mut conn, &config(true, false), &ann(), &[], 1).unwrap();
        let mut impostor = ann();
        impostor.id = 99;
        impostor.email = None;
        assert_eq!(
            refused(complete_fresh(
                &mut conn,
                &config(true, false),
                &impostor,
                &[],
                2
            )),
            Refusal::IdMismatch("ann".into())
        );
    }

    #[test]
    fn deactivated_account_and_email_conflicts_are_refused() {
        let mut conn = db::test_db();
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 1).unwrap();
        accounts::deactivate_user(&mut conn, 1, &s.user.login, 2).unwrap();
        assert_eq!(
            refused(complete_fresh(
                &mut conn,
                &config(true, false),
                &ann(),
                &[],
                3
            )),
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
            refused(complete_fresh(
                &mut conn,
                &config(true, false),
                &bob,
                &[],
                5
            )),
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
        let s = complete_fresh(&mut conn, &config(true, false), &who, &[], 2).unwrap();
        assert_eq!(s.user.login, "ann-gitlab");
    }

    fn candidate_names(conn: &Connection, paths: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = sync_candidates(conn, paths)
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        names.sort();
        names
    }

    fn local_groups(conn: &Connection, names: &[&str]) {
        for name in names {
            groups::create(conn, name, "", 1).unwrap();
        }
    }

    #[test]
    fn sync_candidates_are_exact_names_and_the_default_group() {
        let conn = db::test_db();
        local_groups(
            &conn,
            &[
                "acme",
                "acme/x",
                "acme-other",
                "acme/x/y",
                "acme ",
                "Acme",
                "x/acme",
            ],
        );
        assert_eq!(
            candidate_names(&conn, &["acme", "acme/x"]),
            vec!["acme", "acme/x", "users"],
            "no prefix, suffix, padded or other-case match"
        );
        assert_eq!(candidate_names(&conn, &["ACME/X", "acm"]), vec!["users"]);
        assert_eq!(candidate_names(&conn, &["Acme"]), vec!["Acme", "users"]);
    }

    #[test]
    fn sync_candidates_without_gitlab_groups_is_the_default_group() {
        let conn = db::test_db();
        local_groups(&conn, &["acme", ""]);
        let groups = sync_candidates(&conn, &[]).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(
            (groups[0].name.as_str(), groups[0].is_default),
            ("users", true)
        );
        assert_eq!(candidate_names(&conn, &[""]), vec!["", "users"]);
    }

    #[test]
    fn sync_candidates_match_names_json_would_escape() {
        let conn = db::test_db();
        let odd = [
            "a\"b",
            "back\\slash",
            "caf\u{e9}",
            "tab\tname",
            "emoji \u{1F600}",
            "[1]",
        ];
        local_groups(&conn, &odd);
        let mut expected: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
        expected.push("users".into());
        expected.sort();
        assert_eq!(candidate_names(&conn, &odd), expected);
    }

    use crate::db::query_plan;

    #[test]
    fn sync_candidates_are_read_through_indexes() {
        let conn = db::test_db();
        let plan = query_plan(&conn, SYNC_CANDIDATES);
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN groups")),
            "{plan:?}"
        );
    }

    #[test]
    fn accounts_are_found_through_indexes() {
        let conn = db::test_db();
        for sql in [ACCOUNT_BY_ID, ACCOUNT_BY_USERNAME] {
            let plan = query_plan(&conn, sql);
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN users")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn synchronization_adds_new_groups_and_removes_stale_ones_on_later_sign_ins() {
        let mut conn = db::test_db();
        for name in ["a", "b", "c", "d"] {
            accounts::create_group(&mut conn, name, "", 1).unwrap();
        }
        let paths = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let s = complete_fresh(
            &mut conn,
            &config(true, true),
            &ann(),
            &paths(&["a", "b"]),
            2,
        )
        .unwrap();
        let names = |conn: &Connection| users::group_names(conn, s.user.id).unwrap();
        assert_eq!(names(&conn), vec!["a", "b", "users"]);
        complete_fresh(
            &mut conn,
            &config(true, true),
            &ann(),
            &paths(&["b", "c", "x"]),
            3,
        )
        .unwrap();
        assert_eq!(names(&conn), vec!["b", "c", "users"]);
        let users_group = groups::find_by_name(&conn, "users").unwrap().unwrap();
        groups::remove_member(&conn, users_group.id, s.user.id).unwrap();
        complete_fresh(
            &mut conn,
            &config(true, true),
            &ann(),
            &paths(&["b", "c"]),
            4,
        )
        .unwrap();
        assert_eq!(names(&conn), vec!["b", "c", "users"], "users restored");
        complete_fresh(&mut conn, &config(true, true), &ann(), &[], 5).unwrap();
        assert_eq!(names(&conn), vec!["users"]);
    }

    #[test]
    fn synchronization_is_skipped_until_something_it_depends_on_changes() {
        let mut conn = db::test_db();
        local_groups(&conn, &["a", "b", "c"]);
        let paths = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let mut now = 10;
        let mut sign_in = |conn: &mut Connection, list: &[&str]| -> (bool, Vec<String>) {
            now += 1;
            let s = complete_fresh(conn, &config(true, true), &ann(), &paths(list), now).unwrap();
            let names = users::group_names(conn, s.user.id).unwrap();
            (s.groups_synchronized, names)
        };
        let with = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sign_in(&mut conn, &["a", "x"]),
            (true, with(&["a", "users"]))
        );
        assert_eq!(
            sign_in(&mut conn, &["a", "x"]),
            (false, with(&["a", "users"]))
        );
        assert_eq!(
            sign_in(&mut conn, &["x", "a", "a"]),
            (false, with(&["a", "users"])),
            "the same set of paths"
        );
        assert_eq!(
            sign_in(&mut conn, &["a", "b", "x"]),
            (true, with(&["a", "b", "users"]))
        );
        let user = users::find_by_login(&conn, "ann").unwrap().unwrap().id;
        let id =
            |conn: &Connection, name: &str| groups::find_by_name(conn, name).unwrap().unwrap().id;
        // Each change below must make the next sign-in synchronize, and its result be right.
        type Change = (&'static str, Box<dyn Fn(&Connection)>, Vec<String>);
        let changes: Vec<Change> = vec![
            (
                "a group named like a path created",
                Box::new(|c| {
                    groups::create(c, "x", "", 1).unwrap();
                }),
                with(&["a", "b", "users", "x"]),
            ),
            (
                "a group renamed away from a path",
                Box::new(move |c| {
                    groups::update(c, id(c, "x"), "y", "").unwrap();
                }),
                with(&["a", "b", "users"]),
            ),
            (
                "a group renamed to a path",
                Box::new(move |c| {
                    groups::update(c, id(c, "y"), "x", "").unwrap();
                }),
                with(&["a", "b", "users", "x"]),
            ),
            (
                "a group deleted",
                Box::new(move |c| {
                    groups::delete(c, id(c, "x")).unwrap();
                }),
                with(&["a", "b", "users"]),
            ),
            (
                "a membership removed by hand",
                Box::new(move |c| {
                    groups::remove_member(c, id(c, "b"), user).unwrap();
                }),
                with(&["a", "b", "users"]),
            ),
            (
                "a membership added by hand",
                Box::new(move |c| {
                    groups::add_member(c, id(c, "c"), user).unwrap();
                }),
                with(&["a", "b", "users"]),
            ),
            (
                "the default group removed by hand",
                Box::new(move |c| {
                    groups::remove_member(c, id(c, "users"), user).unwrap();
                }),
                with(&["a", "b", "users"]),
            ),
        ];
        for (what, change, expected) in changes {
            change(&conn);
            assert_eq!(
                sign_in(&mut conn, &["a", "b", "x"]),
                (true, expected.clone()),
                "{what}"
            );
            assert_eq!(
                sign_in(&mut conn, &["a", "b", "x"]),
                (false, expected),
                "{what}, then"
            );
        }
        groups::update(&conn, id(&conn, "c"), "c", "a new description").unwrap();
        assert!(
            !sign_in(&mut conn, &["a", "b", "x"]).0,
            "a description is not a name"
        );
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 99).unwrap();
        assert!(!s.groups_synchronized, "synchronization off");
    }

    fn with_allowed(allowed: &[&str]) -> GitlabConfig {
        GitlabConfig {
            allowed_groups: allowed.iter().map(|a| a.to_string()).collect(),
            ..config(true, true)
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn synchronization_never_joins_a_gitlab_group_outside_the_allowed_groups() {
        let mut conn = db::test_db();
        local_groups(&conn, &["acme/platform"]);
        let gitlab = strings(&["administrators", "acme/platform"]);
        let acme = with_allowed(&["acme"]);
        let s = complete_fresh(&mut conn, &acme, &ann(), &gitlab, 2).unwrap();
        let names = |conn: &Connection| users::group_names(conn, s.user.id).unwrap();
        assert_eq!(names(&conn), vec!["acme/platform", "users"]);
        // A membership of administrators held from before is removed, not kept.
        let admins = groups::find_by_name(&conn, "administrators")
            .unwrap()
            .unwrap();
        groups::add_member(&conn, admins.id, s.user.id).unwrap();
        let again = complete_fresh(&mut conn, &acme, &ann(), &gitlab, 3).unwrap();
        assert!(again.groups_synchronized);
        assert_eq!(names(&conn), vec!["acme/platform", "users"]);
    }

    #[test]
    fn shrinking_the_allowed_groups_makes_the_next_sign_in_synchronize_again() {
        let mut conn = db::test_db();
        local_groups(&conn, &["acme/platform", "beta/tools"]);
        let gitlab = strings(&["acme/platform", "beta/tools"]);
        let mut now = 10;
        let mut sign_in = |conn: &mut Connection, allowed: &[&str]| -> (bool, Vec<String>) {
            now += 1;
            let s = complete_fresh(conn, &with_allowed(allowed), &ann(), &gitlab, now).unwrap();
            let names = users::group_names(conn, s.user.id).unwrap();
            (s.groups_synchronized, names)
        };
        let both = strings(&["acme/platform", "beta/tools", "users"]);
        assert_eq!(sign_in(&mut conn, &["acme", "beta"]), (true, both.clone()));
        assert_eq!(sign_in(&mut conn, &["acme", "beta"]), (false, both.clone()));
        let acme_only = strings(&["acme/platform", "users"]);
        assert_eq!(
            sign_in(&mut conn, &["acme"]),
            (true, acme_only.clone()),
            "beta no longer allowed: its membership is removed, not skipped"
        );
        assert_eq!(sign_in(&mut conn, &["acme"]), (false, acme_only.clone()));
        assert_eq!(
            sign_in(&mut conn, &["ACME"]),
            (false, acme_only),
            "the same paths taken: nothing to do"
        );
        assert_eq!(sign_in(&mut conn, &["beta", "acme"]), (true, both));
    }

    #[test]
    fn synchronization_on_without_an_allowed_group_leaves_memberships_alone() {
        let mut conn = db::test_db();
        accounts::create_group(&mut conn, "manual", "", 1).unwrap();
        accounts::create_group(&mut conn, "acme/platform", "", 1).unwrap();
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 2).unwrap();
        accounts::add_member(&mut conn, "manual", &s.user.login).unwrap();
        let legacy = with_allowed(&[]);
        assert!(legacy.synchronize_groups && !legacy.synchronizes());
        let gitlab = strings(&["administrators", "acme/platform"]);
        let again = complete_fresh(&mut conn, &legacy, &ann(), &gitlab, 3).unwrap();
        assert!(!again.groups_synchronized);
        assert_eq!(
            users::group_names(&conn, s.user.id).unwrap(),
            vec!["manual", "users"]
        );
    }

    #[test]
    fn synchronization_sets_memberships_and_keeps_users() {
        let mut conn = db::test_db();
        accounts::create_group(&mut conn, "acme/platform", "", 1).unwrap();
        accounts::create_group(&mut conn, "manual", "", 1).unwrap();
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 2).unwrap();
        accounts::add_member(&mut conn, "manual", &s.user.login).unwrap();
        let groups = vec![
            "acme".to_string(),
            "acme/platform".to_string(),
            "ACME/PLATFORM".to_string(),
        ];
        complete_fresh(&mut conn, &config(true, true), &ann(), &groups, 3).unwrap();
        assert_eq!(
            users::group_names(&conn, s.user.id).unwrap(),
            vec!["acme/platform", "users"]
        );
        // Without synchronization, memberships are left alone.
        complete_fresh(&mut conn, &config(true, false), &ann(), &[], 4).unwrap();
        assert_eq!(
            users::group_names(&conn, s.user.id).unwrap(),
            vec!["acme/platform", "users"]
        );
    }
}

#[cfg(test)]
mod props;
