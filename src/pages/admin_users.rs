//! `/admin/users`: find users, create them (local, or GitLab pre-provisioned), edit their
//! profile and group memberships, deactivate them (after a confirmation) and reactivate them.

use super::admin::{self, done, field, param, ConfirmThenAct, Confirmation, ListState};
use super::FormErrors;
use crate::accounts::{self, NewUserInput};
use crate::db::{self, groups, user_index, users};
use crate::error::AppResult;
use crate::model::PROVIDER_GITLAB;
use crate::web::request::Resp;
use crate::web::views::{self, render, url_with, Layout, Pager};
use crate::web::Ctx;
use askama::Template;

const LIST: &str = "/admin/users";

/// The yes/no filter of the list: deactivated users instead of active ones.
const DEACTIVATED: &str = "deactivated";

fn list_state(ctx: &Ctx<'_>) -> ListState {
    ListState::read(ctx, LIST, &[DEACTIVATED])
}

fn edit_url(login: &str) -> String {
    url_with("/admin/users/edit", &[("login", login)])
}

/// How a user signs in, as the pages show it.
struct GitlabLink {
    username: String,
    /// Signed in with GitLab at least once (the GitLab numeric id is known).
    linked: bool,
}

/// A user as the list and the edit page show it.
struct UserRow {
    login: String,
    name: String,
    email: String,
    gitlab: Option<GitlabLink>,
    groups: Vec<String>,
    last_connection: String,
    created: String,
    active: bool,
    is_self: bool,
    edit_url: String,
    deactivate_url: String,
}

fn user_row(
    ctx: &Ctx<'_>,
    user: users::User,
    groups: Vec<String>,
    state: &ListState,
) -> AppResult<UserRow> {
    let gitlab = match (&user.external_provider, &user.external_identity) {
        (Some(p), Some(username)) if p == PROVIDER_GITLAB => Some(GitlabLink {
            username: username.clone(),
            linked: user.external_id.is_some(),
        }),
        _ => None,
    };
    Ok(UserRow {
        groups,
        last_connection: views::datetime(user.last_connection_at),
        created: views::datetime(Some(user.created_at)),
        is_self: ctx.caller()?.user.id == user.id,
        edit_url: edit_url(&user.login),
        deactivate_url: state.link("/admin/users/deactivate", &[("login", &user.login)]),
        email: user.email.unwrap_or_default(),
        gitlab,
        active: user.active,
        login: user.login,
        name: user.name,
    })
}

/// Values and errors of one of the two "create a user" forms.
#[derive(Default)]
struct NewUserForm {
    login: String,
    name: String,
    email: String,
    gitlab_username: String,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct ListPage {
    l: Layout,
    q: String,
    deactivated: bool,
    /// Hidden fields that bring every action back to this list.
    state: Vec<(&'static str, String)>,
    users: Vec<UserRow>,
    pager: Pager,
    prev_url: Option<String>,
    next_url: Option<String>,
    local: NewUserForm,
    gitlab: NewUserForm,
    /// A refused action on a row (reactivation).
    errors: FormErrors,
}

fn list_page(
    ctx: &Ctx<'_>,
    status: u16,
    state: ListState,
    forms: (NewUserForm, NewUserForm),
    errors: FormErrors,
) -> AppResult<Resp> {
    let q = (!state.q.is_empty()).then_some(state.q.as_str());
    let deactivated = state.is_on(DEACTIVATED);
    let (found, pager) = Pager::fetch(state.page, |offset, limit| {
        user_index::search(&ctx.conn, q, !deactivated, offset, limit)
    })?;
    let state = state.at(pager.page);
    let ids: Vec<i64> = found.iter().map(|u| u.id).collect();
    let mut group_names = users::group_names_of(&ctx.conn, &ids)?;
    let rows = found
        .into_iter()
        .map(|u| {
            let user_groups = group_names.remove(&u.id).unwrap_or_default();
            user_row(ctx, u, user_groups, &state)
        })
        .collect::<AppResult<Vec<_>>>()?;
    let page = ListPage {
        l: Layout::new(ctx, "Users", "users")?,
        prev_url: pager.prev().map(|p| state.page_url(p)),
        next_url: pager.next().map(|p| state.page_url(p)),
        state: state.params(),
        q: state.q,
        deactivated,
        users: rows,
        pager,
        local: forms.0,
        gitlab: forms.1,
        errors,
    };
    render(status, &page)
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    list_page(ctx, 200, state, Default::default(), FormErrors::default())
}

/// Creates a local user, or a GitLab user by GitLab username (`provider=gitlab`).
pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    let is_gitlab = field(ctx, "provider") == PROVIDER_GITLAB;
    let form = NewUserForm {
        login: field(ctx, "login").trim().to_string(),
        name: field(ctx, "name"),
        email: field(ctx, "email"),
        gitlab_username: field(ctx, "gitlab_username").trim().to_string(),
        errors: FormErrors::default(),
    };
    let password = field(ctx, "password");
    // A deactivated user with this login comes back with the new details.
    let existed = users::find_by_login(&ctx.conn, &form.login)?.is_some();
    let input = NewUserInput {
        login: &form.login,
        name: &form.name,
        email: &form.email,
        password: &password,
        gitlab_username: is_gitlab.then_some(form.gitlab_username.as_str()),
    };
    let hash = crate::web::auth::new_password_hash(ctx.app, &mut ctx.conn, &input)?;
    match accounts::create_user_hashed(&mut ctx.conn, &input, hash, ctx.now) {
        Ok(user) => {
            let what = if existed {
                "was reactivated with these details"
            } else {
                "was created"
            };
            let message = match user.external_identity.as_deref().filter(|_| is_gitlab) {
                Some(username) => format!(
                    "User '{}' {what}. GitLab user '{username}' can now sign in with GitLab.",
                    user.login
                ),
                None => format!(
                    "User '{}' {what}. They can sign in with their login and password.",
                    user.login
                ),
            };
            log::info!("admin: user {} login={:?}", what, user.login);
            done(ctx, &message, &state.url())
        }
        Err(e) => {
            let form = NewUserForm {
                errors: FormErrors::from_error(e)?,
                ..form
            };
            let forms = if is_gitlab {
                (NewUserForm::default(), form)
            } else {
                (form, NewUserForm::default())
            };
            list_page(ctx, 422, state, forms, FormErrors::default())
        }
    }
}

/// A group of the edit page's membership list.
struct MembershipRow {
    group: String,
    member: bool,
}

/// What the edit page shows besides the stored user: values sent back and errors, per form.
#[derive(Default)]
struct EditForms {
    name: Option<String>,
    email: Option<String>,
    profile_errors: FormErrors,
    membership_errors: FormErrors,
    status_errors: FormErrors,
}

#[derive(Template)]
#[template(path = "admin/user_edit.html")]
struct EditPage {
    l: Layout,
    user: UserRow,
    name: String,
    email: String,
    profile_errors: FormErrors,
    default_group: &'static str,
    memberships: Vec<MembershipRow>,
    /// Why memberships cannot be edited by hand, when they cannot.
    locked: Option<&'static str>,
    membership_errors: FormErrors,
    status_errors: FormErrors,
    /// Since when and why GitLab no longer admits the person (a revalidation held the
    /// account's API tokens until they sign in with GitLab again).
    access_held: Option<String>,
}

fn edit_page(ctx: &Ctx<'_>, status: u16, login: &str, forms: EditForms) -> AppResult<Resp> {
    let user = accounts::user_by_login(&ctx.conn, login)?;
    let locked = admin::memberships_locked(ctx, &user)?;
    let groups = users::group_names(&ctx.conn, user.id)?;
    let access_held = db::gitlab_revalidation::hold_of(&ctx.conn, user.id)?
        .map(|(at, reason)| format!("since {}: {reason}", views::datetime(Some(at))));
    let row = user_row(ctx, user, groups, &ListState::plain(LIST))?;
    let memberships = groups::all_names(&ctx.conn)?
        .into_iter()
        .filter(|g| g != db::DEFAULT_GROUP)
        .map(|group| MembershipRow {
            member: row.groups.contains(&group),
            group,
        })
        .collect();
    let page = EditPage {
        l: Layout::new(ctx, format!("User {}", row.login), "users")?,
        name: forms.name.unwrap_or_else(|| row.name.clone()),
        email: forms.email.unwrap_or_else(|| row.email.clone()),
        user: row,
        profile_errors: forms.profile_errors,
        default_group: db::DEFAULT_GROUP,
        memberships,
        locked,
        membership_errors: forms.membership_errors,
        status_errors: forms.status_errors,
        access_held,
    };
    render(status, &page)
}

pub fn edit(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = param(ctx, "login");
    edit_page(ctx, 200, &login, EditForms::default())
}

/// Changes a user's name and email.
pub fn update(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = field(ctx, "login");
    let name = field(ctx, "name");
    let email = field(ctx, "email");
    match accounts::update_user(&mut ctx.conn, &login, Some(&name), Some(&email), ctx.now) {
        Ok(user) => done(
            ctx,
            &format!("User '{}' was updated.", user.login),
            &edit_url(&user.login),
        ),
        Err(e) => {
            let forms = EditForms {
                name: Some(name),
                email: Some(email),
                profile_errors: FormErrors::from_error(e)?,
                ..EditForms::default()
            };
            edit_page(ctx, 422, &login, forms)
        }
    }
}

fn membership_failed(ctx: &Ctx<'_>, login: &str, e: crate::error::AppError) -> AppResult<Resp> {
    let forms = EditForms {
        membership_errors: FormErrors::from_error(e)?,
        ..EditForms::default()
    };
    edit_page(ctx, 422, login, forms)
}

pub fn add_group(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = field(ctx, "login");
    let group = field(ctx, "group");
    match accounts::add_member(&mut ctx.conn, &group, &login) {
        Ok(()) => done(
            ctx,
            &format!("User '{login}' was added to group '{group}'."),
            &edit_url(&login),
        ),
        Err(e) => membership_failed(ctx, &login, e),
    }
}

pub fn remove_group(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = field(ctx, "login");
    let group = field(ctx, "group");
    match accounts::remove_member(&mut ctx.conn, &group, &login) {
        Ok(()) => done(
            ctx,
            &format!("User '{login}' was removed from group '{group}'."),
            &edit_url(&login),
        ),
        Err(e) => membership_failed(ctx, &login, e),
    }
}

/// Deactivating a user, confirmed first.
const DEACTIVATION: ConfirmThenAct<users::User> = ConfirmThenAct {
    key: "login",
    list: list_state,
    find: accounts::user_by_login,
    confirmation: deactivation,
};

fn deactivation(ctx: &Ctx<'_>, user: &users::User) -> AppResult<Confirmation> {
    let blocked = if !user.active {
        Some(format!("User '{}' is already deactivated.", user.login))
    } else if ctx.caller()?.user.id == user.id {
        Some("You cannot deactivate your own account.".to_string())
    } else {
        None
    };
    Ok(Confirmation {
        title: "Deactivate user",
        nav: "users",
        name: user.login.clone(),
        question: format!(
            "Are you sure you want to deactivate user '{}' ({})?",
            user.login, user.name
        ),
        consequences: vec![
            "Their sessions end and their API tokens are revoked.".into(),
            "They leave all their groups and lose their direct permissions.".into(),
            "They cannot sign in until an administrator reactivates them.".into(),
        ],
        action: "/admin/users/deactivate",
        button: "Deactivate",
        blocked,
    })
}

/// "Are you sure…" before deactivating.
pub fn deactivate_confirm(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    DEACTIVATION.ask(ctx)
}

pub fn deactivate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    DEACTIVATION.act(ctx, |ctx, login| {
        let actor = ctx.caller()?.user.clone();
        let user = accounts::deactivate_user(&mut ctx.conn, actor.id, login, ctx.now)?;
        log::info!(
            "admin: user deactivated login={:?} by={:?}",
            user.login,
            actor.login
        );
        Ok(format!("User '{}' was deactivated.", user.login))
    })
}

/// Reactivates a user, from the list or from the edit page (`from=edit`).
pub fn reactivate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    let login = field(ctx, "login");
    let from_edit = field(ctx, "from") == "edit";
    match accounts::reactivate_user(&mut ctx.conn, &login, ctx.now) {
        Ok(user) => {
            let back = if from_edit {
                edit_url(&user.login)
            } else {
                state.url()
            };
            done(
                ctx,
                &format!(
                    "User '{}' was reactivated. They belong to the default group only: add them to their other groups again.",
                    user.login
                ),
                &back,
            )
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            if from_edit {
                let forms = EditForms {
                    status_errors: errors,
                    ..EditForms::default()
                };
                edit_page(ctx, 422, &login, forms)
            } else {
                list_page(ctx, 422, state, Default::default(), errors)
            }
        }
    }
}
