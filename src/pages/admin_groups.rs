//! `/admin/groups`: find groups, create them, rename and describe them, add and remove
//! members, and delete them (after a confirmation). The default group `users` is shown but
//! cannot be renamed, deleted or have its members changed by hand.

use super::admin::{done, field, param, ConfirmThenAct, Confirmation, ListState};
use super::FormErrors;
use crate::accounts;
use crate::db::groups::{self, Selected};
use crate::error::{AppError, AppResult};
use crate::web::request::Resp;
use crate::web::views::{render, url_with, Layout, Pager};
use crate::web::Ctx;
use askama::Template;

const LIST: &str = "/admin/groups";

fn list_state(ctx: &Ctx<'_>) -> ListState {
    ListState::read(ctx, LIST, &[])
}

fn edit_url(name: &str) -> String {
    url_with("/admin/groups/edit", &[("name", name)])
}

struct GroupRow {
    name: String,
    description: String,
    members_count: i64,
    is_default: bool,
    edit_url: String,
    delete_url: String,
}

fn group_row(group: groups::Group, state: &ListState) -> GroupRow {
    GroupRow {
        edit_url: edit_url(&group.name),
        delete_url: state.link("/admin/groups/delete", &[("name", &group.name)]),
        name: group.name,
        description: group.description,
        members_count: group.members_count,
        is_default: group.is_default,
    }
}

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct ListPage {
    l: Layout,
    q: String,
    /// Hidden fields that bring every action back to this list.
    state: Vec<(&'static str, String)>,
    groups: Vec<GroupRow>,
    pager: Pager,
    prev_url: Option<String>,
    next_url: Option<String>,
    name: String,
    description: String,
    errors: FormErrors,
}

fn list_page(
    ctx: &Ctx<'_>,
    status: u16,
    state: ListState,
    form: (String, String),
    errors: FormErrors,
) -> AppResult<Resp> {
    let q = (!state.q.is_empty()).then_some(state.q.as_str());
    let (found, pager) = Pager::fetch(state.page, |offset, limit| {
        groups::search(&ctx.conn, q, offset, limit)
    })?;
    let state = state.at(pager.page);
    let page = ListPage {
        l: Layout::new(ctx, "Groups", "groups")?,
        groups: found.into_iter().map(|g| group_row(g, &state)).collect(),
        prev_url: pager.prev().map(|p| state.page_url(p)),
        next_url: pager.next().map(|p| state.page_url(p)),
        state: state.params(),
        q: state.q,
        pager,
        name: form.0,
        description: form.1,
        errors,
    };
    render(status, &page)
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    list_page(ctx, 200, state, Default::default(), FormErrors::default())
}

pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    let name = field(ctx, "name");
    let description = field(ctx, "description");
    let by = ctx.by();
    match accounts::create_group(&mut ctx.conn, &by, &name, &description, ctx.now) {
        Ok(group) => done(
            ctx,
            &format!("Group '{}' was created.", group.name),
            &state.url(),
        ),
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            list_page(ctx, 422, state, (name, description), errors)
        }
    }
}

/// A member of the group shown on its edit page.
struct MemberRow {
    login: String,
    name: String,
    /// Why this membership cannot be changed by hand, when it cannot.
    locked: Option<&'static str>,
}

/// Values sent back and errors of the edit page's forms.
#[derive(Default)]
struct EditForms {
    name: Option<String>,
    description: Option<String>,
    update_errors: FormErrors,
    add_login: String,
    member_errors: FormErrors,
}

#[derive(Template)]
#[template(path = "admin/group_edit.html")]
struct EditPage {
    l: Layout,
    group: GroupRow,
    name: String,
    description: String,
    update_errors: FormErrors,
    members: Vec<MemberRow>,
    /// Shown once when some members' memberships cannot be changed by hand.
    locked_note: Option<&'static str>,
    pager: Pager,
    prev_url: Option<String>,
    next_url: Option<String>,
    add_login: String,
    member_errors: FormErrors,
}

fn edit_page(
    ctx: &Ctx<'_>,
    status: u16,
    group_name: &str,
    page: i64,
    forms: EditForms,
) -> AppResult<Resp> {
    let group = accounts::group_by_name(&ctx.conn, group_name)?;
    let (rows, pager) = Pager::fetch(page, |offset, limit| {
        groups::members(&ctx.conn, group.id, None, Selected::Selected, offset, limit)
    })?;
    let gitlab_lock = accounts::gitlab_memberships_lock(&ctx.conn)?;
    let members: Vec<MemberRow> = rows
        .into_iter()
        .map(|row| MemberRow {
            locked: accounts::membership_lock(row.external_provider.as_deref(), gitlab_lock),
            login: row.login,
            name: row.name,
        })
        .collect();
    let at_page = |p: i64| {
        let p = if p > 1 { p.to_string() } else { String::new() };
        url_with("/admin/groups/edit", &[("name", &group.name), ("p", &p)])
    };
    let page = EditPage {
        l: Layout::new(ctx, format!("Group {}", group.name), "groups")?,
        prev_url: pager.prev().map(at_page),
        next_url: pager.next().map(at_page),
        name: forms.name.unwrap_or_else(|| group.name.clone()),
        description: forms
            .description
            .unwrap_or_else(|| group.description.clone()),
        group: group_row(group, &ListState::plain(LIST)),
        update_errors: forms.update_errors,
        locked_note: members.iter().find_map(|m| m.locked),
        members,
        pager,
        add_login: forms.add_login,
        member_errors: forms.member_errors,
    };
    render(status, &page)
}

pub fn edit(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let name = param(ctx, "name");
    let page = Pager::page_param(ctx.req.param("p"));
    edit_page(ctx, 200, &name, page, EditForms::default())
}

/// Renames and describes a group; the default group keeps its name (its name field is not
/// sent).
pub fn update(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let current = field(ctx, "currentName");
    let new_name = ctx.req.form.get("name").map(str::to_string);
    let description = field(ctx, "description");
    let by = ctx.by();
    match accounts::update_group(
        &mut ctx.conn,
        &by,
        &current,
        new_name.as_deref(),
        Some(&description),
    ) {
        Ok(group) => {
            let message = if group.name == current {
                format!("Group '{}' was updated.", group.name)
            } else {
                format!("Group '{current}' was renamed to '{}'.", group.name)
            };
            done(ctx, &message, &edit_url(&group.name))
        }
        Err(e) => {
            let forms = EditForms {
                name: new_name,
                description: Some(description),
                update_errors: FormErrors::from_error(e)?,
                ..EditForms::default()
            };
            edit_page(ctx, 422, &current, 1, forms)
        }
    }
}

fn member_failed(ctx: &Ctx<'_>, group: &str, login: String, e: AppError) -> AppResult<Resp> {
    let forms = EditForms {
        add_login: login,
        member_errors: FormErrors::from_error(e)?,
        ..EditForms::default()
    };
    edit_page(ctx, 422, group, 1, forms)
}

pub fn add_member(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let group = field(ctx, "name");
    let login = field(ctx, "login").trim().to_string();
    let result = if login.is_empty() {
        Err(AppError::invalid("login", "Enter the login of a user"))
    } else {
        let by = ctx.by();
        accounts::add_member(&mut ctx.conn, &by, &group, &login)
    };
    match result {
        Ok(()) => done(
            ctx,
            &format!("User '{login}' was added to group '{group}'."),
            &edit_url(&group),
        ),
        Err(e) => member_failed(ctx, &group, login, e),
    }
}

pub fn remove_member(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let group = field(ctx, "name");
    let login = field(ctx, "login");
    let by = ctx.by();
    match accounts::remove_member(&mut ctx.conn, &by, &group, &login) {
        Ok(()) => done(
            ctx,
            &format!("User '{login}' was removed from group '{group}'."),
            &edit_url(&group),
        ),
        Err(e) => member_failed(ctx, &group, String::new(), e),
    }
}

/// Deleting a group, confirmed first.
const DELETION: ConfirmThenAct<groups::Group> = ConfirmThenAct {
    key: "name",
    list: list_state,
    find: accounts::group_by_name,
    confirmation: deletion,
};

fn deletion(_ctx: &Ctx<'_>, group: &groups::Group) -> AppResult<Confirmation> {
    let blocked = group.is_default.then(|| {
        format!(
            "Group '{}' is the default group: every user belongs to it, and it cannot be deleted.",
            group.name
        )
    });
    Ok(Confirmation {
        title: "Delete group",
        nav: "groups",
        name: group.name.clone(),
        question: format!("Are you sure you want to delete group '{}'?", group.name),
        consequences: vec![format!(
            "Its {} member(s) keep their accounts, but lose the permissions this group grants.",
            group.members_count
        )],
        action: "/admin/groups/delete",
        button: "Delete group",
        blocked,
    })
}

/// "Are you sure…" before deleting.
pub fn delete_confirm(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    DELETION.ask(ctx)
}

pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    DELETION.act(ctx, |ctx, name| {
        let by = ctx.by();
        accounts::delete_group(&mut ctx.conn, &by, name)?;
        log::info!(
            "admin: group deleted name={name:?} by={:?}",
            ctx.caller()?.user.login
        );
        Ok(format!("Group '{name}' was deleted."))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_links_carry_names_with_slashes_and_spaces() {
        assert_eq!(edit_url("acme/a b"), "/admin/groups/edit?name=acme%2Fa%20b");
        let row = group_row(
            groups::Group {
                id: 1,
                name: "<x>".into(),
                description: String::new(),
                is_default: false,
                members_count: 0,
            },
            &ListState::plain(LIST),
        );
        assert_eq!(row.delete_url, "/admin/groups/delete?name=%3Cx%3E");
    }
}
