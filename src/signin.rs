//! The end of a GitLab sign-in, in one write transaction: read what the rules consult, let
//! [`provisioning::decide`] decide, apply an admitted decision and start the session. The rules
//! are `provisioning`'s; this module only reads and writes.

pub mod pending;

use crate::accounts;
use crate::audit::{self, Action, By, Event};
use crate::db::{self, gitlab_group_sync, gitlab_provisioning, gitlab_revalidation, groups, users};
use crate::error::AppError;
use crate::gitlab_config::GitlabConfig;
use crate::model::PROVIDER_GITLAB;
use crate::provisioning::{
    self, Account, AccountWrite, Admission, Claims, Decision, LocalGroup, Policy, Refused, Stored,
    StoredGroups,
};
use rusqlite::{Connection, Transaction};

#[derive(Debug)]
pub struct SignedIn {
    pub user: users::User,
    pub session_value: String,
    pub csrf_token: String,
    pub created: bool,
    /// Whether the memberships were compared and written; `false` when synchronization is off
    /// or nothing it depends on changed since the user's last synchronization.
    pub groups_synchronized: bool,
}

#[derive(Debug)]
pub enum SignInError {
    Refused(Refused),
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

/// Signs in the person GitLab described, in one write transaction: what the rules consult is
/// read in it ([`read_stored`]), so that no concurrent sign-in or administrator's change comes
/// between the decision and its writes (sixteen simultaneous first sign-ins of one GitLab user
/// create one account); an admitted decision is applied ([`write_admission`]) and the session
/// started, ending the browser's previous session (`previous_session`, its id hash), and the
/// GitLab registration problem shown to admins, if any, cleared. Nothing is written unless the
/// sign-in succeeds.
///
/// The refresh token GitLab gave (`refresh_token`: the callback passes it when
/// [`provisioning::keeps_refresh_token`] allows) is stored sealed in place of the previous one,
/// for the revalidation ([`keep_refresh_token`]); and a hold on the account's API tokens (GitLab
/// had stopped admitting the person) is released: GitLab admits them again.
///
/// The decision is recorded in the audit log in the same transaction, by `by` (who asks: the
/// client address, the request id, the time): an admission with its writes (the account
/// created, linked or refreshed, the memberships synchronized), or a refusal with its reason
/// and what GitLab said (the GitLab id, username and groups), the refusal being all that is
/// written then.
pub fn complete(
    conn: &mut Connection,
    by: &By,
    config: &GitlabConfig,
    claims: &Claims,
    refresh_token: Option<&str>,
    previous_session: Option<&str>,
    now: i64,
) -> Result<SignedIn, SignInError> {
    let policy = config.policy();
    let tx = db::write_tx(conn)?;
    let (stored, login) = read_stored(&tx, claims, &policy)?;
    let admission = match provisioning::decide(claims, &policy, &stored) {
        Decision::Admit(admission) => admission,
        Decision::Refuse(refused) => {
            let target = login.as_deref().unwrap_or(&claims.username);
            let event =
                refusal_event(target, &refused.refusal, claims).with("why", &*refused.detail);
            audit::record(&tx, by, event)?;
            tx.commit()?;
            crate::metrics::sign_in("gitlab", "refused", refused.refusal.code());
            return Err(SignInError::Refused(refused));
        }
    };
    let user_id = write_admission(&tx, &admission, now)?;
    keep_refresh_token(&tx, user_id, refresh_token, now)?;
    if gitlab_revalidation::release(&tx, user_id)? {
        log::info!("access user_id={user_id} given back: signed in with GitLab again");
    }
    let started = accounts::start_session(&tx, user_id, previous_session, now)?;
    let signed_in = SignedIn {
        user: started.user,
        session_value: started.value,
        csrf_token: started.session.csrf_token,
        created: matches!(admission.account, AccountWrite::Create { .. }),
        groups_synchronized: admission.groups.is_some(),
    };
    record_admission(&tx, by, claims, &policy, &stored, &admission, &signed_in)?;
    // A sign-in went through: whatever registration problem the admins were shown is solved.
    db::gitlab_sign_in_problem::clear(&tx)?;
    tx.commit()?;
    crate::metrics::sign_in("gitlab", "ok", "-");
    Ok(signed_in)
}

/// The claims of the person GitLab's userinfo describes, as the sign-in rules read them.
pub fn claims_of(info: crate::gitlab::Userinfo) -> Claims {
    Claims {
        id: info.id,
        username: info.username,
        name: info.name,
        email: info.email,
        groups: info.groups,
    }
}

/// What a refresh token is sealed for: its user, so that it opens for no other account.
fn refresh_token_context(user_id: i64) -> String {
    format!("gitlab-refresh-token:{user_id}")
}

/// Stores `refresh_token` sealed as the user's, in place of the one before; none forgets the
/// one before (it belonged to an older sign-in).
pub fn keep_refresh_token(
    tx: &Connection,
    user_id: i64,
    refresh_token: Option<&str>,
    now: i64,
) -> Result<(), AppError> {
    match refresh_token {
        Some(token) => {
            let sealed = crate::secrets::seal(&refresh_token_context(user_id), token)
                .ok_or_else(|| AppError::Internal("secrets: no key loaded".into()))?;
            gitlab_revalidation::store_refresh_token(tx, user_id, &sealed, now)?;
        }
        None => gitlab_revalidation::delete_refresh_token(tx, user_id)?,
    }
    Ok(())
}

/// Opens a user's sealed refresh token (see [`keep_refresh_token`]).
pub fn open_refresh_token(user_id: i64, sealed: &str) -> Result<String, crate::secrets::OpenError> {
    crate::secrets::open(&refresh_token_context(user_id), sealed)
}

/// The sign-in rules applied again, without starting a session, to the account of a person
/// GitLab describes now (the revalidation): in `tx`, what they consult is read, and when they
/// admit, the profile and the memberships are written as a sign-in writes them.
pub fn recheck(
    tx: &Transaction<'_>,
    config: &GitlabConfig,
    claims: &Claims,
    now: i64,
) -> Result<Rechecked, AppError> {
    let policy = config.policy();
    let (stored, _) = read_stored(tx, claims, &policy)?;
    match provisioning::decide(claims, &policy, &stored) {
        Decision::Admit(admission) => {
            let changed = !matches!(admission.account, AccountWrite::Unchanged { .. })
                || admission
                    .groups
                    .as_ref()
                    .is_some_and(|g| !g.add.is_empty() || !g.remove.is_empty());
            let user_id = write_admission(tx, &admission, now)?;
            Ok(Rechecked::Admitted { user_id, changed })
        }
        Decision::Refuse(refused) => Ok(Rechecked::Refused(refused)),
    }
}

/// What [`recheck`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rechecked {
    /// Still admitted; `changed`: the profile or a membership was written.
    Admitted {
        user_id: i64,
        changed: bool,
    },
    Refused(Refused),
}

/// GitLab groups an event lists at most; past it the detail says how many there were.
const GROUPS_SHOWN: usize = 25;

/// The refusal of `target` (the account's login when there is one, else the GitLab username)
/// as an audit event: the reason as the person was told it (a code when they were told none)
/// and what GitLab said about them.
pub fn refusal_event(target: &str, refusal: &provisioning::Refusal, claims: &Claims) -> Event {
    let reason = refusal
        .reason()
        .unwrap_or_else(|| refusal.code().to_string());
    let shown: Vec<&str> = claims.groups.iter().take(GROUPS_SHOWN).collect();
    let mut event = Event::refused(Action::SigninGitlab, Some(target), &reason)
        .with("reasonCode", refusal.code())
        .with("gitlabId", claims.id.to_string())
        .with("gitlabUsername", claims.username.as_str())
        .with("gitlabGroups", shown);
    if claims.groups.len() > GROUPS_SHOWN {
        event = event.with("gitlabGroupsCount", claims.groups.len());
    }
    event
}

/// Records an admitted sign-in in `tx`: the sign-in, and what it wrote on the way (the account
/// created, linked to its GitLab id, or its profile refreshed; the memberships synchronization
/// added and removed, by group name), each by the person signing in.
fn record_admission(
    tx: &Connection,
    by: &By,
    claims: &Claims,
    policy: &Policy<'_>,
    stored: &Stored,
    admission: &Admission,
    signed_in: &SignedIn,
) -> Result<(), AppError> {
    let login = signed_in.user.login.as_str();
    let by = by.as_actor(login);
    let from_gitlab = "GitLab sign-in";
    match &admission.account {
        AccountWrite::Create { .. } => {
            let event = Event::ok(Action::UserCreate, login)
                .with("by", from_gitlab)
                .with("gitlabUsername", claims.username.as_str())
                .with("name", signed_in.user.name.as_str())
                .with("email", signed_in.user.email.as_deref());
            audit::record(tx, &by, event)?;
        }
        AccountWrite::Link { .. } => {
            let event = Event::ok(Action::UserLink, login)
                .with("by", from_gitlab)
                .with("gitlabUsername", claims.username.as_str())
                .with("gitlabId", claims.id.to_string());
            audit::record(tx, &by, event)?;
        }
        AccountWrite::Refresh { profile, .. } => {
            if let Some(old) = &stored.by_id {
                let event = Event::ok(Action::UserUpdate, login)
                    .with("by", from_gitlab)
                    .change("name", old.name.as_str(), profile.name.as_str())
                    .change("email", old.email.as_deref(), profile.email.as_deref())
                    .change(
                        "gitlabUsername",
                        old.gitlab_username.as_deref(),
                        profile.username.as_str(),
                    );
                audit::record(tx, &by, event)?;
            }
        }
        AccountWrite::Unchanged { .. } => {}
    }
    if let Some(sync) = &admission.groups {
        let names = group_names(stored);
        for (action, ids) in [
            (Action::MembershipAdd, &sync.add),
            (Action::MembershipRemove, &sync.remove),
        ] {
            if ids.is_empty() {
                continue;
            }
            let groups: Vec<&str> = ids.iter().filter_map(|id| names.get(id).copied()).collect();
            let event = Event::ok(action, login)
                .with("by", "synchronization")
                .with("groups", groups);
            audit::record(tx, &by, event)?;
        }
    }
    let mut event = Event::ok(Action::SigninGitlab, login)
        .with("gitlabId", claims.id.to_string())
        .with("gitlabUsername", claims.username.as_str());
    if let Some(path) = provisioning::admitted_by(&claims.groups, policy.allowed_groups) {
        event = event.with("admittedBy", path);
    }
    audit::record(tx, &by, event)?;
    Ok(())
}

/// The names of the groups synchronization consulted, by id.
fn group_names(stored: &Stored) -> std::collections::HashMap<i64, &str> {
    match &stored.groups {
        StoredGroups::Memberships {
            current,
            candidates,
        } => current
            .iter()
            .chain(candidates)
            .map(|g| (g.id, g.name.as_str()))
            .collect(),
        _ => std::collections::HashMap::new(),
    }
}

/// Records a GitLab sign-in refused before the rules were asked (the state did not match,
/// GitLab failed), with `code` for the reason and `detail` for what went wrong; `username`
/// when GitLab already said who it was.
pub fn record_refusal(
    conn: &mut Connection,
    by: &By,
    username: Option<&str>,
    code: &'static str,
    detail: &str,
) -> Result<(), AppError> {
    crate::metrics::sign_in("gitlab", "refused", code);
    // The detail may quote what GitLab or the browser sent: bounded.
    let detail: String = detail.chars().take(500).collect();
    let event = Event::refused(Action::SigninGitlab, username, code).with("why", detail);
    audit::record_alone(conn, by, event)?;
    Ok(())
}

/// Reads what [`provisioning::decide`] consults about these claims (see [`Stored`]): only what
/// the case at hand needs, so that a returning user costs a few index lookups.
/// With it, the login of the account found, if any (the audit log names people by login).
fn read_stored(
    tx: &Connection,
    claims: &Claims,
    policy: &Policy<'_>,
) -> Result<(Stored, Option<String>), AppError> {
    let gitlab_id = claims.id.to_string();
    let by_id = users::find_by_external_id(tx, PROVIDER_GITLAB, &gitlab_id)?;
    // Under automatic provisioning only the account of this GitLab id may sign in.
    let by_username = match by_id {
        Some(_) => None,
        None if policy.auto_provisioning => None,
        None => {
            users::find_by_external_identity(tx, PROVIDER_GITLAB, &claims.username, &gitlab_id)?
        }
    };
    let email_holders = match provisioning::claimed_email(claims) {
        Some(email) => users::email_holders(tx, &email, 2)?,
        None => Vec::new(),
    };
    let found = by_id.as_ref().or(by_username.as_ref());
    let (account, login) = (found.map(|u| u.id), found.map(|u| u.login.clone()));
    let free_login = match account {
        Some(_) => None,
        None if policy.auto_provisioning => None,
        None => users::first_free_login(
            tx,
            provisioning::login_candidates(&claims.username, claims.id).take(1000),
        )?,
    };
    let groups = if policy.synchronizes() {
        stored_groups(tx, account, claims, policy)?
    } else {
        StoredGroups::NotRead
    };
    let provisioned = match (&by_id, policy.auto_provisioning) {
        (Some(user), true) => gitlab_provisioning::is_read(tx, user.id)?,
        _ => false,
    };
    let stored = Stored {
        by_id: by_id.map(account_of),
        by_username: by_username.map(account_of),
        email_holders,
        free_login,
        groups,
        provisioned,
    };
    Ok((stored, login))
}

fn account_of(user: users::User) -> Account {
    Account {
        id: user.id,
        active: user.active,
        gitlab_id: user.external_id,
        gitlab_username: user.external_identity,
        name: user.name,
        email: user.email,
    }
}

/// The memberships of `account` (none yet: a new account) as synchronization needs them,
/// unless the paths it would take are those of the account's last synchronization and
/// nothing changed since. A path naming a group the account is already in needs no lookup
/// (names are unique): once synchronized, a sign-in looks up only the default group and new
/// paths.
fn stored_groups(
    tx: &Connection,
    account: Option<i64>,
    claims: &Claims,
    policy: &Policy<'_>,
) -> Result<StoredGroups, AppError> {
    let paths = provisioning::synchronized_paths(&claims.groups, policy.allowed_groups);
    let current = match account {
        Some(id) if gitlab_group_sync::in_sync(tx, id, &provisioning::paths_digest(&paths))? => {
            return Ok(StoredGroups::InSync);
        }
        Some(id) => groups::of_member(tx, id)?
            .into_iter()
            .map(local_group)
            .collect(),
        None => Vec::new(),
    };
    let known = provisioning::fast_set(current.iter().map(|g| g.name.as_str()));
    let unknown: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|path| !known.contains(path))
        .collect();
    let candidates = groups::sync_candidates(tx, &unknown)?;
    let candidates = candidates.into_iter().map(local_group).collect();
    Ok(StoredGroups::Memberships {
        current,
        candidates,
    })
}

fn local_group(group: groups::Group) -> LocalGroup {
    LocalGroup {
        id: group.id,
        name: group.name,
        is_default: group.is_default,
    }
}

/// Makes the writes of an admitted sign-in in `tx` (the account, its profile, its memberships);
/// returns the account's id.
fn write_admission(tx: &Transaction<'_>, admission: &Admission, now: i64) -> Result<i64, AppError> {
    let user_id = match &admission.account {
        AccountWrite::Create { login, profile } => users::create(
            tx,
            &users::NewUser {
                login,
                name: &profile.name,
                email: profile.email.as_deref(),
                password_hash: None,
                must_change_password: false,
                external: Some(users::External {
                    provider: PROVIDER_GITLAB,
                    identity: &profile.username,
                    id: Some(&profile.gitlab_id),
                }),
            },
            now,
        )?,
        AccountWrite::Link { id, profile } | AccountWrite::Refresh { id, profile } => {
            let written = users::ExternalProfile {
                name: &profile.name,
                email: profile.email.as_deref(),
                identity: &profile.username,
                external_id: &profile.gitlab_id,
            };
            users::set_external_profile(tx, *id, &written, now)?;
            *id
        }
        AccountWrite::Unchanged { id } => *id,
    };
    if let Some(sync) = &admission.groups {
        for &group_id in &sync.add {
            groups::add_member(tx, group_id, user_id)?;
        }
        for &group_id in &sync.remove {
            groups::remove_member(tx, group_id, user_id)?;
        }
        gitlab_group_sync::record(tx, user_id, &sync.digest)?;
    }
    Ok(user_id)
}

/// [`complete`] for a browser that had no session, of a person whose groups are
/// `gitlab_groups`.
#[cfg(test)]
fn complete_fresh(
    conn: &mut Connection,
    config: &GitlabConfig,
    who: &Claims,
    gitlab_groups: &[String],
    now: i64,
) -> Result<SignedIn, SignInError> {
    let claims = Claims {
        groups: gitlab_groups.iter().collect(),
        ..who.clone()
    };
    complete(
        conn,
        &By::system(now * 1000),
        config,
        &claims,
        None,
        None,
        now,
    )
}

/// The claims of an active GitLab person (no groups: [`complete_fresh`] adds them).
#[cfg(test)]
fn person(id: i64, username: &str, name: &str, email: Option<&str>) -> Claims {
    Claims {
        id,
        username: username.into(),
        name: name.into(),
        email: email.map(str::to_string),
        groups: crate::model::GroupPaths::default(),
    }
}

/// The allowed groups of [`test_config`]: the roots of every path the tests synchronize,
/// unless a test sets its own.
#[cfg(test)]
const TEST_ALLOWED: &[&str] = &["a", "b", "c", "d", "x", "acme"];

/// A GitLab configuration for the tests: enabled; with synchronization, which needs them,
/// allowed groups [`TEST_ALLOWED`]; without, none, so that every person passes that rule.
#[cfg(test)]
pub(crate) fn test_config(sign_up: bool, sync: bool) -> GitlabConfig {
    let allowed = if sync { TEST_ALLOWED } else { &[] };
    GitlabConfig {
        enabled: true,
        url: "https://gl".into(),
        application_id: Some("a".into()),
        secret: Some("s".into()),
        secret_unreadable: false,
        synchronize_groups: sync,
        allowed_groups: allowed.iter().map(|a| a.to_string()).collect(),
        allow_users_to_sign_up: sign_up,
        auto_provisioning: false,
        provisioning_token: None,
        provisioning_token_unreadable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts;
    use crate::provisioning::Refusal;

    fn config(sign_up: bool, sync: bool) -> GitlabConfig {
        test_config(sign_up, sync)
    }

    fn ann() -> Claims {
        person(42, "ann", "Ann", Some("ann@x.org"))
    }

    fn refused(r: Result<SignedIn, SignInError>) -> Refusal {
        match r {
            Err(SignInError::Refused(r)) => r.refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
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
        assert_eq!(db::sessions::count(&conn, None).unwrap(), 2);
    }

    #[test]
    fn a_sign_in_keeps_the_refresh_token_sealed_and_gives_held_access_back() {
        let mut conn = db::test_db();
        let config = config(true, false);
        let s = complete(
            &mut conn,
            &By::admin(),
            &config,
            &ann(),
            Some("refresh-1"),
            None,
            10,
        )
        .unwrap();
        let id = s.user.id;
        let sealed = gitlab_revalidation::refresh_token(&conn, id)
            .unwrap()
            .unwrap();
        assert!(!sealed.contains("refresh-1"), "{sealed}");
        assert_eq!(open_refresh_token(id, &sealed).unwrap(), "refresh-1");
        assert!(
            open_refresh_token(id + 1, &sealed).is_err(),
            "bound to its user"
        );
        gitlab_revalidation::hold(&conn, id, "blocked in GitLab", 11).unwrap();
        complete(
            &mut conn,
            &By::admin(),
            &config,
            &ann(),
            Some("refresh-2"),
            None,
            12,
        )
        .unwrap();
        assert!(gitlab_revalidation::hold_of(&conn, id).unwrap().is_none());
        let sealed = gitlab_revalidation::refresh_token(&conn, id)
            .unwrap()
            .unwrap();
        assert_eq!(open_refresh_token(id, &sealed).unwrap(), "refresh-2");
        complete(&mut conn, &By::admin(), &config, &ann(), None, None, 13).unwrap();
        assert!(
            gitlab_revalidation::refresh_token(&conn, id)
                .unwrap()
                .is_none(),
            "an older sign-in's token is not kept"
        );
        // A refused sign-in leaves the hold and the token as they were.
        gitlab_revalidation::hold(&conn, id, "blocked in GitLab", 14).unwrap();
        let strict = GitlabConfig {
            allowed_groups: vec!["acme".into()],
            ..config
        };
        assert!(complete(
            &mut conn,
            &By::admin(),
            &strict,
            &ann(),
            Some("refresh-3"),
            None,
            15
        )
        .is_err());
        assert!(gitlab_revalidation::hold_of(&conn, id).unwrap().is_some());
        assert!(gitlab_revalidation::refresh_token(&conn, id)
            .unwrap()
            .is_none());
    }

    #[test]
    fn profile_refresh_writes_only_a_change() {
        let mut conn = db::test_db();
        let id = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 10)
            .unwrap()
            .user
            .id;
        let row = |conn: &Connection| -> (i64, i64, i64) { users::write_marks(conn, id).unwrap() };
        let (_, _, logged) = row(&conn);
        complete_fresh(&mut conn, &config(true, false), &ann(), &[], 20).unwrap();
        assert_eq!(
            row(&conn),
            (10, 20, logged),
            "unchanged: only the last connection is written"
        );
        type Change = (&'static str, fn(&mut Claims));
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
        assert_eq!(users::count(&conn).unwrap(), 1, "nothing written");
        accounts::create_user(
            &mut conn,
            &By::admin(),
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
        accounts::deactivate_user(&mut conn, &By::admin(), 1, &s.user.login, 2).unwrap();
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
            &By::admin(),
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
            &By::admin(),
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

    fn local_groups(conn: &Connection, names: &[&str]) {
        for name in names {
            groups::create(conn, name, "", 1).unwrap();
        }
    }

    #[test]
    fn synchronization_adds_new_groups_and_removes_stale_ones_on_later_sign_ins() {
        let mut conn = db::test_db();
        for name in ["a", "b", "c", "d"] {
            accounts::create_group(&mut conn, &By::admin(), name, "", 1).unwrap();
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
        complete_fresh(&mut conn, &config(true, true), &ann(), &paths(&["x"]), 5).unwrap();
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
        accounts::create_group(&mut conn, &By::admin(), "manual", "", 1).unwrap();
        accounts::create_group(&mut conn, &By::admin(), "acme/platform", "", 1).unwrap();
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 2).unwrap();
        accounts::add_member(&mut conn, &By::admin(), "manual", &s.user.login).unwrap();
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
        accounts::create_group(&mut conn, &By::admin(), "acme/platform", "", 1).unwrap();
        accounts::create_group(&mut conn, &By::admin(), "manual", "", 1).unwrap();
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 2).unwrap();
        accounts::add_member(&mut conn, &By::admin(), "manual", &s.user.login).unwrap();
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

    /// Every audit event, oldest first, as (action, actor, target, outcome, reason, detail).
    type Row = (
        String,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        serde_json::Value,
    );

    fn audit_rows(conn: &Connection) -> Vec<Row> {
        db::audit::move_pending(conn).unwrap();
        let filter = db::audit::Filter::default();
        let mut rows: Vec<Row> = db::audit::page(conn, &filter, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| {
                let detail = serde_json::from_str(&e.detail).unwrap();
                (e.action, e.actor, e.target, e.outcome, e.reason, detail)
            })
            .collect();
        rows.reverse();
        rows
    }

    /// A person with no account, outside the allowed groups: the refusal is recorded with the
    /// reason and the GitLab groups, by GitLab username, and nothing else is written.
    #[test]
    fn a_refusal_is_recorded_with_what_gitlab_said_and_nothing_else() {
        let mut conn = db::test_db();
        let mut alice = person(7, "alice", "Alice", None);
        alice.groups = strings(&["acme-other", "beta"]).into();
        let result = complete(
            &mut conn,
            &By::system(5),
            &with_allowed(&["acme"]),
            &alice,
            None,
            None,
            0,
        );
        assert_eq!(refused(result), Refusal::NotInAllowedGroups);
        let rows = audit_rows(&conn);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        let (action, actor, target, outcome, reason, detail) = &rows[0];
        assert_eq!(
            (action.as_str(), actor, target.as_deref(), outcome.as_str()),
            ("signin.gitlab", &None, Some("alice"), "refused")
        );
        assert_eq!(
            reason.as_deref(),
            Some("You are not allowed to authenticate")
        );
        assert_eq!(
            detail["gitlabGroups"],
            serde_json::json!(["acme-other", "beta"])
        );
        assert_eq!(detail["gitlabId"], "7");
        assert_eq!(detail["reasonCode"], "not-in-allowed-group");
        assert_eq!(users::find_by_login(&conn, "alice").unwrap(), None);
        let event = db::audit::page(&conn, &db::audit::Filter::default(), 0, 1).unwrap();
        let line = crate::audit::line(&event[0], detail);
        assert_eq!(
            line,
            "alice refused: You are not allowed to authenticate — GitLab groups: acme-other, beta"
        );
    }

    /// A refused person who has an account is named by its login.
    #[test]
    fn a_refusal_of_an_account_names_its_login() {
        let mut conn = db::test_db();
        let s = complete_fresh(&mut conn, &config(true, false), &ann(), &[], 1).unwrap();
        accounts::deactivate_user(&mut conn, &By::admin(), 1, &s.user.login, 2).unwrap();
        let mut renamed = ann();
        renamed.username = "ann-new".into();
        refused(complete_fresh(
            &mut conn,
            &config(true, false),
            &renamed,
            &[],
            3,
        ));
        let rows = audit_rows(&conn);
        let last = rows.last().unwrap();
        assert_eq!(
            (last.0.as_str(), last.2.as_deref(), last.3.as_str()),
            ("signin.gitlab", Some("ann"), "refused")
        );
        assert_eq!(last.5["gitlabUsername"], "ann-new");
    }

    /// A first sign-in with synchronization: the account created, the groups joined (by name)
    /// and the sign-in, each by the person; a later one that changes the name and leaves a
    /// group records the change and the removal; an unchanged one records the sign-in alone.
    #[test]
    fn an_admission_records_what_it_wrote() {
        let mut conn = db::test_db();
        local_groups(&conn, &["acme", "acme/lab"]);
        let config = config(true, true);
        let groups = strings(&["acme", "acme/lab"]);
        complete_fresh(&mut conn, &config, &ann(), &groups, 1).unwrap();
        let summary = |rows: &[Row]| -> Vec<(String, Option<String>, Option<String>)> {
            rows.iter()
                .map(|r| (r.0.clone(), r.1.clone(), r.2.clone()))
                .collect()
        };
        let ann_ = || (Some("ann".to_string()), Some("ann".to_string()));
        let rows = audit_rows(&conn);
        let expected: Vec<(String, Option<String>, Option<String>)> =
            ["user.create", "membership.add", "signin.gitlab"]
                .iter()
                .map(|a| (a.to_string(), ann_().0, ann_().1))
                .collect();
        assert_eq!(summary(&rows), expected);
        assert_eq!(rows[1].5["groups"], serde_json::json!(["acme", "acme/lab"]));
        assert_eq!(rows[1].5["by"], "synchronization");
        assert_eq!(rows[2].5["admittedBy"], "acme");
        let mut renamed = ann();
        renamed.name = "Ann B".into();
        complete_fresh(&mut conn, &config, &renamed, &strings(&["acme"]), 2).unwrap();
        let rows = audit_rows(&conn);
        let later: Vec<&str> = rows[3..].iter().map(|r| r.0.as_str()).collect();
        assert_eq!(later, ["user.update", "membership.remove", "signin.gitlab"]);
        assert_eq!(
            rows[3].5["changes"]["name"],
            serde_json::json!({"old": "Ann", "new": "Ann B"})
        );
        assert_eq!(rows[4].5["groups"], serde_json::json!(["acme/lab"]));
        complete_fresh(&mut conn, &config, &renamed, &strings(&["acme"]), 3).unwrap();
        let rows = audit_rows(&conn);
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[6].0, "signin.gitlab");
    }
}

#[cfg(test)]
mod props;
