//! Account, group, permission and token operations shared by the pages and the Web API:
//! validate, then one write transaction that checks the product rules before committing.

use crate::audit::{self, Action, By, Event};
use crate::db::{self, groups, permissions, sessions, tokens, users};
use crate::error::{AppError, AppResult};
use crate::model::{self, GroupName, Login, Permission, PROVIDER_GITLAB};
use rusqlite::Connection;

/// Refuses the change being made in `tx` if it leaves no active administrator.
fn ensure_an_admin_remains(tx: &Connection, message: &str) -> AppResult<()> {
    if permissions::count_active_admins(tx)? == 0 {
        return Err(AppError::rule(message));
    }
    Ok(())
}

const LAST_ADMIN_PERMISSION: &str =
    "Last user with permission 'admin'. Permission cannot be removed.";

pub fn user_by_login(conn: &Connection, login: &str) -> AppResult<users::User> {
    users::find_by_login(conn, login)?
        .ok_or_else(|| AppError::not_found(format!("User '{login}' not found")))
}

pub fn active_user_by_login(conn: &Connection, login: &str) -> AppResult<users::User> {
    let user = user_by_login(conn, login)?;
    if !user.active {
        return Err(AppError::not_found(format!("User '{login}' not found")));
    }
    Ok(user)
}

pub fn group_by_name(conn: &Connection, name: &str) -> AppResult<groups::Group> {
    groups::find_by_name(conn, name)?
        .ok_or_else(|| AppError::not_found(format!("No group with name '{name}'")))
}

fn check_email_free(conn: &Connection, email: Option<&str>, except: Option<i64>) -> AppResult<()> {
    if let Some(email) = email {
        if users::email_owner(conn, email, except)?.is_some() {
            return Err(AppError::invalid(
                "email",
                format!("Email '{email}' is already used by another user"),
            ));
        }
    }
    Ok(())
}

/// What an admin asks for when creating a user.
pub struct NewUserInput<'a> {
    pub login: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    /// Local users: the password. GitLab users: ignored.
    pub password: &'a str,
    /// `None` for a local user; `Some(gitlab username)` to pre-provision a GitLab user.
    pub gitlab_username: Option<&'a str>,
}

/// Creates a local or pre-provisioned GitLab user. A deactivated user with that login is
/// reactivated with the new details, as SonarQube does.
pub fn create_user(
    conn: &mut Connection,
    by: &By,
    input: &NewUserInput<'_>,
    now: i64,
) -> AppResult<users::User> {
    let local = input.gitlab_username.is_none();
    let hash = (local && model::validate_password(input.password).is_ok())
        .then(|| crate::crypto::hash_password(input.password));
    create_user_hashed(conn, by, input, hash, now)
}

/// [`create_user`] with the password already hashed (`password_hash`, for a local user whose
/// password is valid), so that a handler can hash it without holding a connection.
pub fn create_user_hashed(
    conn: &mut Connection,
    by: &By,
    input: &NewUserInput<'_>,
    password_hash: Option<String>,
    now: i64,
) -> AppResult<users::User> {
    let mut errors = Vec::new();
    let login = Login::parse(input.login.trim())
        .map_err(|e| errors.push(e))
        .ok();
    let name = model::validate_name(input.name)
        .map_err(|e| errors.push(e))
        .ok();
    let email = model::validate_email(input.email)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let gitlab = match input.gitlab_username {
        Some(u) => match Login::parse(u.trim()) {
            Ok(u) => Some(u),
            Err(_) => {
                errors.push(model::FieldError::new(
                    "gitlab_username",
                    "GitLab username may only contain letters, digits, '.', '-' and '_'",
                ));
                None
            }
        },
        None => {
            if let Err(e) = model::validate_password(input.password) {
                errors.push(e);
            }
            None
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (login, name) = (login.expect("validated"), name.expect("validated"));
    if gitlab.is_none() && password_hash.is_none() {
        return Err(AppError::Internal(
            "a local user's password must be hashed first".into(),
        ));
    }
    let password_hash = if gitlab.is_none() {
        password_hash
    } else {
        None
    };
    let tx = db::write_tx(conn)?;
    let existing = users::find_by_login(&tx, login.as_str())?;
    let existing_id = existing.as_ref().map(|u| u.id);
    check_email_free(&tx, email.as_deref(), existing_id)?;
    if existing.as_ref().is_some_and(|u| u.active) {
        return Err(AppError::rule(format!(
            "An active user with login '{login}' already exists"
        )));
    }
    if let Some(g) = &gitlab {
        // A reactivated user may take back the identity it held itself.
        ensure_gitlab_identity_free(&tx, "gitlab_username", g.as_str(), None, existing_id)?;
    }
    let reactivated = existing.clone();
    let id = match existing {
        Some(existing) => {
            users::update_profile(&tx, existing.id, &name, email.as_deref(), now)?;
            match (&gitlab, &password_hash) {
                (Some(g), _) => users::set_external_identity(
                    &tx,
                    existing.id,
                    PROVIDER_GITLAB,
                    g.as_str(),
                    now,
                )?,
                (None, Some(hash)) => {
                    users::clear_external_identity(&tx, existing.id)?;
                    users::set_password(&tx, existing.id, hash, false, now)?
                }
                (None, None) => {}
            }
            users::reactivate(&tx, existing.id, now)?;
            existing.id
        }
        None => users::create(
            &tx,
            &users::NewUser {
                login: login.as_str(),
                name: &name,
                email: email.as_deref(),
                password_hash: password_hash.as_deref(),
                must_change_password: false,
                external: gitlab.as_ref().map(|g| users::External {
                    provider: PROVIDER_GITLAB,
                    identity: g.as_str(),
                    id: None,
                }),
            },
            now,
        )?,
    };
    let user =
        users::find_by_id(&tx, id)?.ok_or_else(|| AppError::Internal("user vanished".into()))?;
    let event = match &reactivated {
        Some(old) => profile_changes(Event::ok(Action::UserReactivate, &user.login), old, &user),
        None => Event::ok(Action::UserCreate, &user.login)
            .with("name", user.name.as_str())
            .with("email", user.email.as_deref()),
    };
    let event = event
        .with("local", user.local)
        .with("gitlabUsername", user.external_identity.as_deref());
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(user)
}

/// `event` with the changes between two states of a user's profile and identity.
fn profile_changes(event: Event, old: &users::User, new: &users::User) -> Event {
    event
        .change("name", old.name.as_str(), new.name.as_str())
        .change("email", old.email.as_deref(), new.email.as_deref())
        .change(
            "gitlabUsername",
            old.external_identity.as_deref(),
            new.external_identity.as_deref(),
        )
        .change("local", old.local, new.local)
}

/// Refuses linking an account to a GitLab identity that another account already holds: the
/// same username (ignoring case, as GitLab does) or the same GitLab numeric user id. One GitLab
/// account, one labgate account: otherwise a sign-in could land in an account pre-provisioned
/// for someone else. Every path that sets an identity goes through here (creating a user, new
/// or reactivated; `update_identity_provider`), before it writes anything; `field` names the
/// input that carried the username, so that a page shows the error next to it; `gitlab_id`
/// is the numeric id when the caller knows it (pre-provisioning knows only the username).
fn ensure_gitlab_identity_free(
    tx: &Connection,
    field: &'static str,
    username: &str,
    gitlab_id: Option<&str>,
    except: Option<i64>,
) -> AppResult<()> {
    if let Some(login) =
        users::external_identity_holder(tx, PROVIDER_GITLAB, username, gitlab_id, except)?
    {
        return Err(AppError::invalid(
            field,
            format!(
                "GitLab user '{username}' is already linked to user '{login}': \
                 a GitLab account can be linked to one user only"
            ),
        ));
    }
    Ok(())
}

pub fn update_user(
    conn: &mut Connection,
    by: &By,
    login: &str,
    name: Option<&str>,
    email: Option<&str>,
    now: i64,
) -> AppResult<users::User> {
    let tx = db::write_tx(conn)?;
    let user = active_user_by_login(&tx, login)?;
    let mut errors = Vec::new();
    let name = match name {
        Some(n) => model::validate_name(n).map_err(|e| errors.push(e)).ok(),
        None => Some(user.name.clone()),
    };
    let email = match email {
        Some(e) => model::validate_email(e).map_err(|e| errors.push(e)).ok(),
        None => Some(user.email.clone()),
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (name, email) = (name.expect("validated"), email.expect("validated"));
    check_email_free(&tx, email.as_deref(), Some(user.id))?;
    // Only what changed is written: nothing at all when the form is saved unchanged.
    if email != user.email {
        users::update_profile(&tx, user.id, &name, email.as_deref(), now)?;
    } else if name != user.name {
        users::set_name(&tx, user.id, &name, now)?;
    } else {
        return Ok(user);
    }
    let updated = users::find_by_id(&tx, user.id)?
        .ok_or_else(|| AppError::Internal("user vanished".into()))?;
    let event = profile_changes(Event::ok(Action::UserUpdate, login), &user, &updated);
    if event.detail.contains_key("changes") {
        audit::record(&tx, by, event)?;
    }
    tx.commit()?;
    Ok(updated)
}

/// Deactivates a user: sessions, tokens, memberships and direct permissions go with it.
pub fn deactivate_user(
    conn: &mut Connection,
    by: &By,
    actor_id: i64,
    login: &str,
    now: i64,
) -> AppResult<users::User> {
    let tx = db::write_tx(conn)?;
    let user = active_user_by_login(&tx, login)?;
    if user.id == actor_id {
        return Err(AppError::rule("Self-deactivation is not possible"));
    }
    let removed = users::deactivate(&tx, user.id, now)?;
    ensure_an_admin_remains(&tx, "User is last administrator, and cannot be deactivated")?;
    let updated = users::find_by_id(&tx, user.id)?
        .ok_or_else(|| AppError::Internal("user vanished".into()))?;
    let event = Event::ok(Action::UserDeactivate, login)
        .with("sessionsEnded", removed.sessions)
        .with("tokensRevoked", removed.tokens)
        .with("membershipsRemoved", removed.memberships)
        .with("permissionsRevoked", removed.permissions);
    audit::record(&tx, by, event)?;
    sessions_ended(&tx, by, login, removed.sessions, "deactivation")?;
    tx.commit()?;
    Ok(updated)
}

/// Records that `count` sessions of `login` were ended by `cause`, when there were any.
fn sessions_ended(
    tx: &Connection,
    by: &By,
    login: &str,
    count: usize,
    cause: &str,
) -> AppResult<()> {
    if count > 0 {
        let event = Event::ok(Action::SessionEnded, login)
            .with("sessions", count)
            .with("by", cause);
        audit::record(tx, by, event)?;
    }
    Ok(())
}

pub fn reactivate_user(
    conn: &mut Connection,
    by: &By,
    login: &str,
    now: i64,
) -> AppResult<users::User> {
    let tx = db::write_tx(conn)?;
    let user = user_by_login(&tx, login)?;
    if user.active {
        return Err(AppError::rule(format!("User '{login}' is already active")));
    }
    users::reactivate(&tx, user.id, now)?;
    let updated = users::find_by_id(&tx, user.id)?
        .ok_or_else(|| AppError::Internal("user vanished".into()))?;
    audit::record(&tx, by, Event::ok(Action::UserReactivate, login))?;
    tx.commit()?;
    Ok(updated)
}

/// The refusal of a wrong current password.
pub fn incorrect_previous_password() -> AppError {
    AppError::invalid("previousPassword", "Incorrect password")
}

/// A new password must differ from the one it replaces.
pub fn check_new_differs(previous: &str, new_password: &str) -> AppResult<()> {
    if previous == new_password {
        return Err(AppError::invalid(
            "password",
            "Password must be different from old password",
        ));
    }
    Ok(())
}

/// An active local user and the stored hash of their password, for a check made without
/// holding the connection.
pub fn password_of(conn: &Connection, login: &str) -> AppResult<(users::User, String)> {
    let user = active_user_by_login(conn, login)?;
    let hash = users::password_hash(conn, user.id)?.ok_or_else(|| {
        AppError::rule("Password cannot be changed when external authentication is used")
    })?;
    Ok((user, hash))
}

/// Stores `new_hash` as the user's password and ends their other sessions (all of them when
/// `keep_session` is `None`). `checked_hash` is the hash the caller verified against (from
/// [`password_of`]): when the password changed since, nothing is written.
pub fn replace_password(
    conn: &mut Connection,
    by: &By,
    user_id: i64,
    checked_hash: &str,
    new_hash: &str,
    keep_session: Option<&str>,
    now: i64,
) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    if users::password_hash(&tx, user_id)?.as_deref() != Some(checked_hash) {
        return Err(AppError::rule(
            "The password was changed meanwhile; reload and try again",
        ));
    }
    let user = users::find_by_id(&tx, user_id)?
        .ok_or_else(|| AppError::Internal("user vanished".into()))?;
    users::set_password(&tx, user_id, new_hash, false, now)?;
    let ended = match keep_session {
        Some(keep) => sessions::delete_others(&tx, user_id, keep)?,
        None => sessions::delete_for_user(&tx, user_id)?,
    };
    let event = Event::ok(Action::PasswordChange, &user.login).with("sessionsEnded", ended);
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(())
}

/// A session just started: its cookie value (never stored), the session, and the account as it
/// stands after the sign-in.
#[derive(Debug)]
pub struct StartedSession {
    pub user: users::User,
    pub value: String,
    pub session: sessions::Session,
}

/// Starts a session for a user who just proved who they are: the one way every sign-in ends,
/// with a password or with GitLab. It runs inside the sign-in's write transaction `tx`, so that
/// the session commits with whatever the sign-in wrote, or not at all:
/// - the account must be active as of `tx`: a deactivation that committed after the credentials
///   were checked leaves no session behind (401);
/// - sessions that ran out are removed as new ones start, so the table does not grow;
/// - the browser's previous session (`previous`, its id hash) ends in the same transaction: a
///   fresh session id at every sign-in, and a failed sign-in leaves the old session as it was;
/// - the last connection is recorded.
pub fn start_session(
    tx: &rusqlite::Transaction<'_>,
    user_id: i64,
    previous: Option<&str>,
    now: i64,
) -> AppResult<StartedSession> {
    users::touch_last_connection(tx, user_id, now)?;
    let Some(user) = users::find_by_id(tx, user_id)?.filter(|u| u.active) else {
        return Err(AppError::Unauthorized("Authentication failed".into()));
    };
    sessions::purge_expired(tx, now, crate::settings::session_timeout_secs(tx)?)?;
    if let Some(previous) = previous {
        sessions::delete(tx, previous)?;
    }
    let (value, session) = sessions::create(tx, user_id, now)?;
    Ok(StartedSession {
        user,
        value,
        session,
    })
}

/// Ends the session `id_hash` of `login` (a sign-out).
pub fn sign_out(conn: &mut Connection, by: &By, login: &str, id_hash: &str) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    sessions::delete(&tx, id_hash)?;
    audit::record(&tx, by, Event::ok(Action::Signout, login))?;
    tx.commit()?;
    Ok(())
}

/// Links a user to a GitLab username: the account is pre-provisioned, and the first GitLab
/// sign-in with that username links it for good (by GitLab's numeric user id).
///
/// The account's sessions and API tokens end in the same transaction: the person behind the
/// new identity may not be the one who held the account, and must not inherit the previous
/// holder's access, nor leave it to them. (Callers cached in memory are dropped by the commit,
/// as after any commit.)
pub fn update_identity_provider(
    conn: &mut Connection,
    by: &By,
    login: &str,
    provider: &str,
    identity: &str,
    now: i64,
) -> AppResult<users::User> {
    if provider != PROVIDER_GITLAB {
        return Err(AppError::invalid(
            "newExternalProvider",
            format!(
                "Value of parameter 'newExternalProvider' ({provider}) must be one of: [gitlab]"
            ),
        ));
    }
    let identity = identity.trim();
    if Login::parse(identity).is_err() {
        return Err(AppError::invalid(
            "newExternalIdentity",
            "GitLab username may only contain letters, digits, '.', '-' and '_'",
        ));
    }
    let tx = db::write_tx(conn)?;
    let user = active_user_by_login(&tx, login)?;
    ensure_gitlab_identity_free(&tx, "newExternalIdentity", identity, None, Some(user.id))?;
    users::set_external_identity(&tx, user.id, provider, identity, now)?;
    let ended = sessions::delete_for_user(&tx, user.id)?;
    let revoked = tokens::delete_for_user(&tx, user.id)?;
    let updated = users::find_by_id(&tx, user.id)?
        .ok_or_else(|| AppError::Internal("user vanished".into()))?;
    let event = profile_changes(Event::ok(Action::UserLink, login), &user, &updated)
        .with("gitlabUsername", identity)
        .with("sessionsEnded", ended)
        .with("tokensRevoked", revoked);
    audit::record(&tx, by, event)?;
    sessions_ended(&tx, by, login, ended, "identity link")?;
    tx.commit()?;
    Ok(updated)
}

pub fn create_group(
    conn: &mut Connection,
    by: &By,
    name: &str,
    description: &str,
    now: i64,
) -> AppResult<groups::Group> {
    let mut errors = Vec::new();
    let name = GroupName::parse(name).map_err(|e| errors.push(e)).ok();
    let description = model::validate_description(description)
        .map_err(|e| errors.push(e))
        .ok();
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (name, description) = (name.expect("validated"), description.expect("validated"));
    let tx = db::write_tx(conn)?;
    if groups::find_by_name(&tx, name.as_str())?.is_some() {
        return Err(AppError::rule(format!("Group '{name}' already exists")));
    }
    groups::create(&tx, name.as_str(), &description, now)?;
    let group = group_by_name(&tx, name.as_str())?;
    let event = Event::ok(Action::GroupCreate, &group.name).with("description", description);
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(group)
}

fn refuse_default(group: &groups::Group) -> AppResult<()> {
    if group.is_default {
        return Err(AppError::rule(format!(
            "Default group '{}' cannot be used to perform this action",
            group.name
        )));
    }
    Ok(())
}

pub fn update_group(
    conn: &mut Connection,
    by: &By,
    current: &str,
    new_name: Option<&str>,
    description: Option<&str>,
) -> AppResult<groups::Group> {
    let tx = db::write_tx(conn)?;
    let group = group_by_name(&tx, current)?;
    let mut errors = Vec::new();
    let name = match new_name {
        Some(n) => GroupName::parse(n)
            .map_err(|e| errors.push(e))
            .ok()
            .map(|n| n.as_str().to_string()),
        None => Some(group.name.clone()),
    };
    let description = match description {
        Some(d) => model::validate_description(d)
            .map_err(|e| errors.push(e))
            .ok(),
        None => Some(group.description.clone()),
    };
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    let (name, description) = (name.expect("validated"), description.expect("validated"));
    if group.is_default && name != group.name {
        refuse_default(&group)?;
    }
    if name != group.name {
        refuse_managed(&tx, &group)?;
    }
    if name != group.name && groups::find_by_name(&tx, &name)?.is_some() {
        return Err(AppError::rule(format!("Group '{name}' already exists")));
    }
    // Only what changed is written: nothing at all when the form is saved unchanged.
    if name != group.name {
        groups::update(&tx, group.id, &name, &description)?;
    } else if description != group.description {
        groups::set_description(&tx, group.id, &description)?;
    } else {
        return Ok(group);
    }
    let updated = group_by_name(&tx, &name)?;
    let event = Event::ok(Action::GroupUpdate, &updated.name)
        .change("name", group.name.as_str(), updated.name.as_str())
        .change(
            "description",
            group.description.as_str(),
            updated.description.as_str(),
        );
    if event.detail.contains_key("changes") {
        audit::record(&tx, by, event)?;
    }
    tx.commit()?;
    Ok(updated)
}

pub fn delete_group(conn: &mut Connection, by: &By, name: &str) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    let group = group_by_name(&tx, name)?;
    refuse_default(&group)?;
    refuse_managed(&tx, &group)?;
    crate::gate::applications::check_group_deletable(&tx, &group.name, group.id)?;
    groups::delete(&tx, group.id)?;
    ensure_an_admin_remains(
        &tx,
        "The last group with permission 'admin' cannot be deleted: no active user would be left with it",
    )?;
    let event = Event::ok(Action::GroupDelete, &group.name)
        .with("description", group.description.as_str())
        .with("members", group.members_count);
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(())
}

/// Why a user's memberships cannot be edited by hand, if they cannot: GitLab users while
/// automatic provisioning is on, or while group synchronization is on with an allowed group.
/// Synchronization on without one synchronizes nothing, so it locks nothing either.
pub fn memberships_locked(
    conn: &Connection,
    user: &users::User,
) -> AppResult<Option<&'static str>> {
    if user.external_provider.as_deref() != Some(PROVIDER_GITLAB) {
        return Ok(None);
    }
    gitlab_memberships_lock(conn)
}

/// Why the memberships of GitLab users follow GitLab, if they do: automatic provisioning, or
/// group synchronization at sign-in.
pub fn gitlab_memberships_lock(conn: &Connection) -> AppResult<Option<&'static str>> {
    let rules = crate::settings::group_sync(conn)?;
    Ok(if rules.provisioning {
        Some(MEMBERSHIPS_PROVISIONED)
    } else {
        crate::provisioning::synchronizes(rules.sync, &rules.allowed_groups)
            .then_some(MEMBERSHIPS_SYNCHRONIZED)
    })
}

/// The rule of [`memberships_locked`] for a user of this external provider, the lock of GitLab
/// users ([`gitlab_memberships_lock`]) being read once for a whole list.
pub fn membership_lock(
    external_provider: Option<&str>,
    gitlab_lock: Option<&'static str>,
) -> Option<&'static str> {
    gitlab_lock.filter(|_| external_provider == Some(PROVIDER_GITLAB))
}

pub const MEMBERSHIPS_SYNCHRONIZED: &str = "Group memberships of GitLab users are managed by GitLab group synchronization and cannot be changed by hand";

pub const MEMBERSHIPS_PROVISIONED: &str = "Group memberships of GitLab users are managed by GitLab provisioning and cannot be changed by hand";

/// Refuses renaming or deleting a group provisioning manages while it is on: the group follows
/// its GitLab group.
fn refuse_managed(conn: &Connection, group: &groups::Group) -> AppResult<()> {
    if crate::settings::auto_provisioning(conn)?
        && db::gitlab_provisioning::gitlab_group_of(conn, group.id)?.is_some()
    {
        return Err(AppError::rule(format!(
            "Group '{}' is managed by GitLab provisioning: it follows its GitLab group and \
             cannot be renamed or deleted by hand",
            group.name
        )));
    }
    Ok(())
}

pub fn add_member(conn: &mut Connection, by: &By, group: &str, login: &str) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    let group = group_by_name(&tx, group)?;
    refuse_default(&group)?;
    let user = active_user_by_login(&tx, login)?;
    if let Some(reason) = memberships_locked(&tx, &user)? {
        return Err(AppError::rule(reason));
    }
    if groups::add_member(&tx, group.id, user.id)? {
        let event = Event::ok(Action::MembershipAdd, login)
            .with("group", group.name.as_str())
            .with("by", "hand");
        audit::record(&tx, by, event)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn remove_member(conn: &mut Connection, by: &By, group: &str, login: &str) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    let group = group_by_name(&tx, group)?;
    refuse_default(&group)?;
    let user = user_by_login(&tx, login)?;
    if let Some(reason) = memberships_locked(&tx, &user)? {
        return Err(AppError::rule(reason));
    }
    let removed = groups::remove_member(&tx, group.id, user.id)?;
    ensure_an_admin_remains(&tx, LAST_ADMIN_PERMISSION)?;
    if removed {
        let event = Event::ok(Action::MembershipRemove, login)
            .with("group", group.name.as_str())
            .with("by", "hand");
        audit::record(&tx, by, event)?;
    }
    tx.commit()?;
    Ok(())
}

pub fn grant_user(conn: &mut Connection, by: &By, login: &str, permission: &str) -> AppResult<()> {
    let permission = Permission::parse(permission)?;
    let tx = db::write_tx(conn)?;
    let user = active_user_by_login(&tx, login)?;
    let changed = permissions::grant_user(&tx, user.id, permission)?;
    permission_event(
        &tx,
        by,
        changed,
        Action::PermissionGrant,
        "user",
        user.login.as_str(),
        permission,
    )?;
    tx.commit()?;
    Ok(())
}

pub fn revoke_user(conn: &mut Connection, by: &By, login: &str, permission: &str) -> AppResult<()> {
    let permission = Permission::parse(permission)?;
    let tx = db::write_tx(conn)?;
    let user = user_by_login(&tx, login)?;
    let changed = permissions::revoke_user(&tx, user.id, permission)?;
    ensure_an_admin_remains(&tx, LAST_ADMIN_PERMISSION)?;
    permission_event(
        &tx,
        by,
        changed,
        Action::PermissionRevoke,
        "user",
        user.login.as_str(),
        permission,
    )?;
    tx.commit()?;
    Ok(())
}

pub fn grant_group(conn: &mut Connection, by: &By, group: &str, permission: &str) -> AppResult<()> {
    let permission = Permission::parse(permission)?;
    let tx = db::write_tx(conn)?;
    let group = group_by_name(&tx, group)?;
    let changed = permissions::grant_group(&tx, group.id, permission)?;
    permission_event(
        &tx,
        by,
        changed,
        Action::PermissionGrant,
        "group",
        group.name.as_str(),
        permission,
    )?;
    tx.commit()?;
    Ok(())
}

pub fn revoke_group(
    conn: &mut Connection,
    by: &By,
    group: &str,
    permission: &str,
) -> AppResult<()> {
    let permission = Permission::parse(permission)?;
    let tx = db::write_tx(conn)?;
    let group = group_by_name(&tx, group)?;
    let changed = permissions::revoke_group(&tx, group.id, permission)?;
    ensure_an_admin_remains(&tx, LAST_ADMIN_PERMISSION)?;
    permission_event(
        &tx,
        by,
        changed,
        Action::PermissionRevoke,
        "group",
        group.name.as_str(),
        permission,
    )?;
    tx.commit()?;
    Ok(())
}

/// Records a grant or a revocation that `changed` something.
fn permission_event(
    tx: &Connection,
    by: &By,
    changed: bool,
    action: Action,
    holder: &str,
    name: &str,
    permission: Permission,
) -> AppResult<()> {
    if changed {
        let event = Event::ok(action, name)
            .with("permission", permission.key())
            .with("holder", holder);
        audit::record(tx, by, event)?;
    }
    Ok(())
}

/// Parses an API token expiry date (`YYYY-MM-DD`, UTC end of that day is not used: the token
/// expires at the start of that date, as SonarQube does) that must lie in the future.
pub fn parse_expiration(raw: &str, now: i64) -> AppResult<Option<i64>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let date = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        AppError::invalid(
            "expirationDate",
            format!("Date '{raw}' cannot be parsed as a date (expected YYYY-MM-DD)"),
        )
    })?;
    let at = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| AppError::invalid("expirationDate", "Invalid date"))?
        .and_utc()
        .timestamp();
    if at <= now {
        return Err(AppError::invalid(
            "expirationDate",
            "The expiration date must be in the future",
        ));
    }
    Ok(Some(at))
}

pub struct GeneratedToken {
    pub login: String,
    pub name: String,
    pub value: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// Generates a named API token for an active user. Its expiry is the date asked for (none when
/// `expiration` is empty), capped by `sonar.auth.token.max.allowed.lifetime`.
pub fn generate_token(
    conn: &mut Connection,
    by: &By,
    login: &str,
    name: &str,
    expiration: &str,
    now: i64,
) -> AppResult<GeneratedToken> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::invalid(
            "name",
            "Token name must be between 1 and 100 characters long",
        ));
    }
    let asked = parse_expiration(expiration, now)?;
    let tx = db::write_tx(conn)?;
    let user = active_user_by_login(&tx, login)?;
    let expires_at = crate::settings::token_max_lifetime(&tx)?.cap(asked, now);
    if tokens::exists(&tx, user.id, name)? {
        return Err(AppError::rule(format!(
            "A user token for login '{login}' and name '{name}' already exists"
        )));
    }
    let value = tokens::create(&tx, user.id, name, expires_at, now)?;
    let event = Event::ok(Action::TokenGenerate, &user.login)
        .with("tokenName", name)
        .with("expiresAt", expires_at);
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(GeneratedToken {
        login: user.login,
        name: name.to_string(),
        value,
        created_at: now,
        expires_at,
    })
}

pub fn revoke_token(conn: &mut Connection, by: &By, login: &str, name: &str) -> AppResult<()> {
    let tx = db::write_tx(conn)?;
    let user = user_by_login(&tx, login)?;
    if !tokens::revoke(&tx, user.id, name)? {
        return Err(AppError::not_found(format!(
            "User token with name '{name}' doesn't exist for user '{login}'"
        )));
    }
    let event = Event::ok(Action::TokenRevoke, &user.login).with("tokenName", name);
    audit::record(&tx, by, event)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;

    fn local<'a>(login: &'a str) -> NewUserInput<'a> {
        NewUserInput {
            login,
            name: "Test User",
            email: "",
            password: "a-long-password",
            gitlab_username: None,
        }
    }

    #[test]
    fn last_admin_cannot_be_deactivated_or_lose_admin() {
        let mut conn = test_db();
        let other = create_user(&mut conn, &By::admin(), &local("other"), 1).unwrap();
        let err = deactivate_user(&mut conn, &By::admin(), other.id, "admin", 2).unwrap_err();
        assert!(matches!(err, AppError::Rule(_)), "{err}");
        let err = revoke_group(&mut conn, &By::admin(), "administrators", "admin").unwrap_err();
        assert!(matches!(err, AppError::Rule(_)));
        let err = remove_member(&mut conn, &By::admin(), "administrators", "admin").unwrap_err();
        assert!(matches!(err, AppError::Rule(_)));
        let err = delete_group(&mut conn, &By::admin(), "administrators").unwrap_err();
        assert!(matches!(err, AppError::Rule(_)));
        // Nothing was changed by the refused calls.
        assert_eq!(permissions::count_active_admins(&conn).unwrap(), 1);
        // With a second admin, the first can go.
        grant_user(&mut conn, &By::admin(), "other", "admin").unwrap();
        let admin = users::find_by_login(&conn, "admin").unwrap().unwrap();
        deactivate_user(&mut conn, &By::admin(), other.id, "admin", 3).unwrap();
        assert!(!users::find_by_id(&conn, admin.id).unwrap().unwrap().active);
    }

    #[test]
    fn default_group_is_protected() {
        let mut conn = test_db();
        assert!(matches!(
            delete_group(&mut conn, &By::admin(), "users"),
            Err(AppError::Rule(_))
        ));
        assert!(matches!(
            update_group(&mut conn, &By::admin(), "users", Some("people"), None),
            Err(AppError::Rule(_))
        ));
        assert!(matches!(
            add_member(&mut conn, &By::admin(), "users", "admin"),
            Err(AppError::Rule(_))
        ));
        assert!(matches!(
            remove_member(&mut conn, &By::admin(), "users", "admin"),
            Err(AppError::Rule(_))
        ));
        // Its description may change.
        update_group(&mut conn, &By::admin(), "users", None, Some("Everyone")).unwrap();
    }

    #[test]
    fn a_group_update_writes_only_what_changed() {
        // Pages written to the write-ahead log by one update, counted on a database file.
        let path = db::temp_db("group-update-pages");
        let mut conn = db::open(&path).unwrap();
        create_group(&mut conn, &By::admin(), "devs", "", 1).unwrap();
        let events_before = crate::db::audit::pending_count(&conn).unwrap();
        let unchanged = db::pages_written_by(&mut conn, |c| {
            update_group(c, &By::admin(), "devs", Some("devs"), Some("")).unwrap();
        });
        assert_eq!(unchanged, 0, "saved unchanged: nothing written, no event");
        let described = db::pages_written_by(&mut conn, |c| {
            update_group(c, &By::admin(), "devs", None, Some("The developers")).unwrap();
        });
        assert_eq!(
            described, 2,
            "a description: the group's row and its event, not the name index"
        );
        let renamed = db::pages_written_by(&mut conn, |c| {
            update_group(c, &By::admin(), "devs", Some("developers"), None).unwrap();
        });
        assert!(renamed > described, "a rename also writes the name index");
        let group = groups::find_by_name(&conn, "developers").unwrap().unwrap();
        assert_eq!(group.description, "The developers");
        let events = crate::db::audit::pending_count(&conn).unwrap();
        assert_eq!(
            events - events_before,
            2,
            "one event per change, none for the unchanged save"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_user_update_writes_only_what_changed() {
        // As for groups: pages written to the write-ahead log by one update, on a file.
        let path = db::temp_db("user-update-pages");
        let mut conn = db::open(&path).unwrap();
        let mut input = local("ann");
        input.email = "ann@x.org";
        create_user(&mut conn, &By::admin(), &input, 1).unwrap();
        let events_before = crate::db::audit::pending_count(&conn).unwrap();
        let user = users::find_by_login(&conn, "ann").unwrap().unwrap();
        let unchanged = db::pages_written_by(&mut conn, |c| {
            update_user(
                c,
                &By::admin(),
                "ann",
                Some(&user.name),
                Some("ann@x.org"),
                2,
            )
            .unwrap();
        });
        assert_eq!(unchanged, 0, "saved unchanged: nothing written, no event");
        let named = db::pages_written_by(&mut conn, |c| {
            update_user(c, &By::admin(), "ann", Some("Ann Jones"), None, 3).unwrap();
        });
        assert_eq!(
            named, 4,
            "a name: the user's row, the change for the search lists (its log and the \
             generation), the event; not the email index"
        );
        let mailed = db::pages_written_by(&mut conn, |c| {
            update_user(c, &By::admin(), "ann", None, Some("jones@x.org"), 4).unwrap();
        });
        assert!(
            mailed > named,
            "an email change also writes the email index"
        );
        let ann = users::find_by_login(&conn, "ann").unwrap().unwrap();
        assert_eq!(
            (ann.name.as_str(), ann.email.as_deref()),
            ("Ann Jones", Some("jones@x.org"))
        );
        let events = crate::db::audit::pending_count(&conn).unwrap();
        assert_eq!(events - events_before, 2, "one event per change");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn create_user_validates_every_field_at_once() {
        let mut conn = test_db();
        let err = create_user(
            &mut conn,
            &By::admin(),
            &NewUserInput {
                login: "-x",
                name: " ",
                email: "nope",
                password: "short",
                gitlab_username: None,
            },
            1,
        )
        .unwrap_err();
        match err {
            AppError::Invalid(errors) => assert_eq!(errors.len(), 4),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn duplicate_login_and_email_are_refused() {
        let mut conn = test_db();
        let mut input = local("ann");
        input.email = "ann@x.org";
        create_user(&mut conn, &By::admin(), &input, 1).unwrap();
        assert!(matches!(
            create_user(&mut conn, &By::admin(), &input, 1),
            Err(AppError::Rule(_))
        ));
        let mut other = local("bob");
        other.email = "ANN@x.org";
        assert!(matches!(
            create_user(&mut conn, &By::admin(), &other, 1),
            Err(AppError::Invalid(_))
        ));
    }

    #[test]
    fn creating_a_deactivated_login_reactivates_it() {
        let mut conn = test_db();
        let ann = create_user(&mut conn, &By::admin(), &local("ann"), 1).unwrap();
        deactivate_user(&mut conn, &By::admin(), 1, "ann", 2).unwrap();
        let again = create_user(&mut conn, &By::admin(), &local("ann"), 3).unwrap();
        assert_eq!(again.id, ann.id);
        assert!(again.active);
    }

    #[test]
    fn gitlab_user_is_pre_provisioned_without_password() {
        let mut conn = test_db();
        let input = NewUserInput {
            login: "gl-ann",
            name: "Ann",
            email: "",
            password: "",
            gitlab_username: Some("ann"),
        };
        let user = create_user(&mut conn, &By::admin(), &input, 1).unwrap();
        assert!(!user.local);
        assert_eq!(user.external_provider.as_deref(), Some("gitlab"));
        assert_eq!(user.external_identity.as_deref(), Some("ann"));
        assert_eq!(user.external_id, None);
        let dup = NewUserInput {
            login: "gl-ann2",
            gitlab_username: Some("ANN"),
            ..input
        };
        assert_identity_taken(
            create_user(&mut conn, &By::admin(), &dup, 1),
            "gitlab_username",
            "gl-ann",
        );
    }

    /// Asserts the refusal of an identity already linked to `holder`, as an error of `field`.
    #[track_caller]
    fn assert_identity_taken<T: std::fmt::Debug>(result: AppResult<T>, field: &str, holder: &str) {
        match result {
            Err(AppError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].field, field);
                assert!(
                    errors[0]
                        .message
                        .contains(&format!("is already linked to user '{holder}'")),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("expected a refusal of the identity, got {other:?}"),
        }
    }

    fn gitlab<'a>(login: &'a str, username: &'a str) -> NewUserInput<'a> {
        NewUserInput {
            login,
            name: "GitLab User",
            email: "",
            password: "",
            gitlab_username: Some(username),
        }
    }

    #[test]
    fn reactivating_with_a_gitlab_identity_linked_to_another_user_is_refused() {
        let mut conn = test_db();
        let old = create_user(&mut conn, &By::admin(), &local("old"), 1).unwrap();
        deactivate_user(&mut conn, &By::admin(), 1, "old", 2).unwrap();
        create_user(&mut conn, &By::admin(), &gitlab("holder", "taken"), 3).unwrap();
        let again = create_user(&mut conn, &By::admin(), &gitlab("old", "TAKEN"), 4);
        assert_identity_taken(again, "gitlab_username", "holder");
        // Nothing changed: still deactivated, still local.
        let old_now = users::find_by_id(&conn, old.id).unwrap().unwrap();
        assert_eq!(
            old_now,
            users::User {
                active: false,
                ..old
            }
        );
        // The identity it held itself stays its own to take back.
        create_user(&mut conn, &By::admin(), &gitlab("back", "back"), 5).unwrap();
        deactivate_user(&mut conn, &By::admin(), 1, "back", 6).unwrap();
        let back = create_user(&mut conn, &By::admin(), &gitlab("back", "Back"), 7).unwrap();
        assert!(back.active);
        assert_eq!(back.external_identity.as_deref(), Some("Back"));
    }

    #[test]
    fn linking_to_a_gitlab_identity_linked_to_another_user_is_refused() {
        let mut conn = test_db();
        create_user(&mut conn, &By::admin(), &gitlab("holder", "taken"), 1).unwrap();
        let ann = create_user(&mut conn, &By::admin(), &local("ann"), 1).unwrap();
        let (_, session) = sessions::create(&conn, ann.id, 1).unwrap();
        tokens::create(&conn, ann.id, "ci", None, 1).unwrap();
        let err = update_identity_provider(&mut conn, &By::admin(), "ann", "gitlab", "Taken", 2);
        assert_identity_taken(err, "newExternalIdentity", "holder");
        // Nothing changed: the account, its session and its token are as they were.
        assert_eq!(users::find_by_id(&conn, ann.id).unwrap().unwrap(), ann);
        assert_eq!(users::tokens_count(&conn, ann.id).unwrap(), 1);
        assert!(sessions::find_by_hash(&conn, &session.id_hash, 3, 3600)
            .unwrap()
            .is_some());
        // Its own identity again is no conflict.
        update_identity_provider(&mut conn, &By::admin(), "holder", "gitlab", "TAKEN", 3).unwrap();
    }

    #[test]
    fn linking_to_another_identity_ends_sessions_and_deletes_tokens() {
        let mut conn = test_db();
        let ann = create_user(&mut conn, &By::admin(), &local("ann"), 1).unwrap();
        sessions::create(&conn, ann.id, 1).unwrap();
        tokens::create(&conn, ann.id, "ci", None, 1).unwrap();
        update_identity_provider(&mut conn, &By::admin(), "ann", "gitlab", "someone-else", 2)
            .unwrap();
        assert_eq!(users::tokens_count(&conn, ann.id).unwrap(), 0);
        let sessions = sessions::count(&conn, Some(ann.id)).unwrap();
        assert_eq!(sessions, 0);
    }

    /// A group `devs`, a GitLab user `gl` and a local user `loc`.
    fn devs_gl_and_loc() -> Connection {
        let mut conn = test_db();
        create_group(&mut conn, &By::admin(), "devs", "", 1).unwrap();
        create_user(&mut conn, &By::admin(), &gitlab("gl", "gl"), 1).unwrap();
        create_user(&mut conn, &By::admin(), &local("loc"), 1).unwrap();
        conn
    }

    #[test]
    fn memberships_of_gitlab_users_are_locked_while_synchronization_is_on() {
        let mut conn = devs_gl_and_loc();
        add_member(&mut conn, &By::admin(), "devs", "gl").unwrap();
        crate::settings::set(
            &mut conn,
            &crate::audit::By::admin(),
            crate::settings::GITLAB_ALLOWED_GROUPS,
            "acme",
        )
        .unwrap();
        crate::settings::set(
            &mut conn,
            &crate::audit::By::admin(),
            crate::settings::GITLAB_GROUPS_SYNC,
            "true",
        )
        .unwrap();
        let err = remove_member(&mut conn, &By::admin(), "devs", "gl").unwrap_err();
        assert_eq!(err.public_message(), MEMBERSHIPS_SYNCHRONIZED);
        assert!(matches!(
            add_member(&mut conn, &By::admin(), "devs", "gl"),
            Err(AppError::Rule(_))
        ));
        // Local users stay editable.
        add_member(&mut conn, &By::admin(), "devs", "loc").unwrap();
        remove_member(&mut conn, &By::admin(), "devs", "loc").unwrap();
    }

    #[test]
    fn under_automatic_provisioning_gitlab_memberships_and_managed_groups_follow_gitlab() {
        let mut conn = devs_gl_and_loc();
        {
            let tx = db::write_tx(&mut conn).unwrap();
            db::gitlab_provisioning::create_managed_group(&tx, "acme/dev", 2, 1).unwrap();
            tx.commit().unwrap();
        }
        for (key, value) in [
            (crate::settings::GITLAB_PROVISIONING_TOKEN, "glpat-t0ken"),
            (crate::settings::GITLAB_ALLOWED_GROUPS, "acme"),
            (crate::settings::GITLAB_PROVISIONING, "true"),
        ] {
            crate::settings::set(&mut conn, &crate::audit::By::admin(), key, value).unwrap();
        }
        let err = add_member(&mut conn, &By::admin(), "devs", "gl").unwrap_err();
        assert_eq!(err.public_message(), MEMBERSHIPS_PROVISIONED);
        add_member(&mut conn, &By::admin(), "acme/dev", "loc").unwrap();
        for refused in [
            update_group(&mut conn, &By::admin(), "acme/dev", Some("renamed"), None).map(|_| ()),
            delete_group(&mut conn, &By::admin(), "acme/dev"),
        ] {
            assert!(refused
                .unwrap_err()
                .public_message()
                .contains("managed by GitLab provisioning"),);
        }
        update_group(&mut conn, &By::admin(), "acme/dev", None, Some("described")).unwrap();
        update_group(&mut conn, &By::admin(), "devs", Some("developers"), None).unwrap();
        crate::settings::set(
            &mut conn,
            &crate::audit::By::admin(),
            crate::settings::GITLAB_PROVISIONING,
            "false",
        )
        .unwrap();
        add_member(&mut conn, &By::admin(), "developers", "gl").unwrap();
        delete_group(&mut conn, &By::admin(), "acme/dev").unwrap();
    }

    #[test]
    fn memberships_stay_editable_while_synchronization_is_on_without_an_allowed_group() {
        let mut conn = test_db();
        create_group(&mut conn, &By::admin(), "devs", "", 1).unwrap();
        create_user(&mut conn, &By::admin(), &gitlab("gl", "gl"), 1).unwrap();
        // Stored before synchronization needed an allowed group: it synchronizes nothing.
        db::settings::set(&conn, crate::settings::GITLAB_GROUPS_SYNC, "true").unwrap();
        add_member(&mut conn, &By::admin(), "devs", "gl").unwrap();
        remove_member(&mut conn, &By::admin(), "devs", "gl").unwrap();
    }

    #[test]
    fn token_expiry_must_be_a_future_date() {
        let now = 1_700_000_000; // 2023-11-14
        assert!(parse_expiration("2023-11-14", now).is_err());
        assert!(parse_expiration("tomorrow", now).is_err());
        assert_eq!(parse_expiration("", now).unwrap(), None);
        assert!(parse_expiration("2030-01-01", now).unwrap().is_some());
    }

    #[test]
    fn new_tokens_are_capped_by_the_lifetime_setting() {
        let mut conn = test_db();
        let now = 1_700_000_000; // 2023-11-14
        let day = |date: &str| parse_expiration(date, now).unwrap();
        let plain = generate_token(&mut conn, &By::admin(), "admin", "plain", "", now).unwrap();
        assert_eq!(plain.expires_at, None);
        let key = "sonar.auth.token.max.allowed.lifetime";
        crate::settings::set(&mut conn, &crate::audit::By::admin(), key, "30 days").unwrap();
        let none = generate_token(&mut conn, &By::admin(), "admin", "none", "", now).unwrap();
        assert_eq!(none.expires_at, day("2023-12-14"));
        let far =
            generate_token(&mut conn, &By::admin(), "admin", "far", "2099-01-01", now).unwrap();
        assert_eq!(far.expires_at, day("2023-12-14"));
        let near =
            generate_token(&mut conn, &By::admin(), "admin", "near", "2023-12-01", now).unwrap();
        assert_eq!(near.expires_at, day("2023-12-01"));
        // What is stored is what was answered.
        let stored: Vec<Option<i64>> = tokens::list(&conn, 1)
            .unwrap()
            .into_iter()
            .map(|t| t.expires_at)
            .collect();
        assert_eq!(
            stored,
            vec![far.expires_at, near.expires_at, none.expires_at, None]
        );
    }

    #[test]
    fn password_change_checks_previous_and_ends_other_sessions() {
        let mut conn = test_db();
        let admin = users::find_by_login(&conn, "admin").unwrap().unwrap();
        let (_, keep) = sessions::create(&conn, admin.id, 1).unwrap();
        sessions::create(&conn, admin.id, 1).unwrap();
        // The checks and the write of a password change; the whole operation, with its
        // throttle and hashing slots, is `web::auth::change_password`.
        let (user, stored) = password_of(&conn, "admin").unwrap();
        let err = if crate::crypto::verify_password("wrong", &stored) {
            None
        } else {
            Some(incorrect_previous_password())
        }
        .unwrap();
        assert!(matches!(err, AppError::Invalid(_)));
        assert!(crate::crypto::verify_password(
            "admin-password-123",
            &stored
        ));
        check_new_differs("admin-password-123", "new-password-123").unwrap();
        let new_hash = crate::crypto::hash_password("new-password-123");
        replace_password(
            &mut conn,
            &By::admin(),
            user.id,
            &stored,
            &new_hash,
            Some(&keep.id_hash),
            2,
        )
        .unwrap();
        let left = sessions::count(&conn, None).unwrap();
        assert_eq!(left, 1);
    }
}
