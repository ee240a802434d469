//! `/admin/permissions`: who holds global permissions (groups, and users directly), granting
//! and revoking them. Refusals such as "the last administrator keeps `admin`" are shown.

use super::admin::{done, field};
use super::FormErrors;
use crate::accounts;
use crate::db::{groups, permissions};
use crate::error::{AppError, AppResult};
use crate::model::Permission;
use crate::web::request::Resp;
use crate::web::views::{render, Layout};
use crate::web::Ctx;
use askama::Template;

const PAGE: &str = "/admin/permissions";
/// Holders shown per table; more than this is unusual for global permissions, and said so.
const MAX_SHOWN: i64 = 500;

/// A group or user holding permissions.
struct HolderRow {
    /// Group name, or user login.
    name: String,
    /// Group description, or user name.
    detail: String,
    /// `(key, label)` of each permission held.
    permissions: Vec<(&'static str, &'static str)>,
}

fn rows(holders: Vec<permissions::Holder>) -> Vec<HolderRow> {
    holders
        .into_iter()
        .map(|h| HolderRow {
            name: h.name,
            detail: h.detail,
            permissions: h.permissions.iter().map(|p| (p.key(), p.label())).collect(),
        })
        .collect()
}

/// Values sent back and errors of the page's forms.
#[derive(Default)]
struct Forms {
    group_name: String,
    group_permission: String,
    group_errors: FormErrors,
    login: String,
    user_permission: String,
    user_errors: FormErrors,
    /// A refused revocation.
    revoke_errors: FormErrors,
}

impl Forms {
    fn group_chosen(&self, name: &str) -> bool {
        self.group_name == name
    }

    fn group_permission_chosen(&self, key: &str) -> bool {
        self.group_permission == key
    }

    fn user_permission_chosen(&self, key: &str) -> bool {
        self.user_permission == key
    }
}

#[derive(Template)]
#[template(path = "admin/permissions.html")]
struct Page {
    l: Layout,
    groups: Vec<HolderRow>,
    groups_total: i64,
    users: Vec<HolderRow>,
    users_total: i64,
    group_names: Vec<String>,
    /// `(key, label)` of every permission.
    all: Vec<(&'static str, &'static str)>,
    f: Forms,
}

fn page(ctx: &Ctx<'_>, status: u16, f: Forms) -> AppResult<Resp> {
    let (groups, groups_total) = permissions::group_holders(&ctx.conn, None, None, 0, MAX_SHOWN)?;
    let (users, users_total) = permissions::user_holders(&ctx.conn, None, None, 0, MAX_SHOWN)?;
    let page = Page {
        l: Layout::new(ctx, "Permissions", "permissions")?,
        groups: rows(groups),
        groups_total,
        users: rows(users),
        users_total,
        group_names: groups::all_names(&ctx.conn)?,
        all: Permission::ALL
            .iter()
            .map(|p| (p.key(), p.label()))
            .collect(),
        f,
    };
    render(status, &page)
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    page(ctx, 200, Forms::default())
}

/// The label of a permission key for messages (the key itself when unknown).
fn label(key: &str) -> &str {
    Permission::parse(key).map_or(key, |p| p.label())
}

pub fn grant_group(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let group = field(ctx, "groupName");
    let permission = field(ctx, "permission");
    match accounts::grant_group(&mut ctx.conn, &group, &permission) {
        Ok(()) => {
            log::info!(
                "admin: permission granted permission={permission:?} group={group:?} by={:?}",
                ctx.caller()?.user.login
            );
            let message = format!(
                "Permission '{}' was granted to group '{group}'.",
                label(&permission)
            );
            done(ctx, &message, PAGE)
        }
        Err(e) => {
            let f = Forms {
                group_errors: FormErrors::from_error(e)?,
                group_name: group,
                group_permission: permission,
                ..Forms::default()
            };
            page(ctx, 422, f)
        }
    }
}

pub fn grant_user(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = field(ctx, "login").trim().to_string();
    let permission = field(ctx, "permission");
    let result = if login.is_empty() {
        Err(AppError::invalid("login", "Enter the login of a user"))
    } else {
        accounts::grant_user(&mut ctx.conn, &login, &permission)
    };
    match result {
        Ok(()) => {
            log::info!(
                "admin: permission granted permission={permission:?} login={login:?} by={:?}",
                ctx.caller()?.user.login
            );
            let message = format!(
                "Permission '{}' was granted to user '{login}'.",
                label(&permission)
            );
            done(ctx, &message, PAGE)
        }
        Err(e) => {
            let f = Forms {
                user_errors: FormErrors::from_error(e)?,
                login,
                user_permission: permission,
                ..Forms::default()
            };
            page(ctx, 422, f)
        }
    }
}

pub fn revoke_group(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    revoke(ctx, "groupName", "group", accounts::revoke_group)
}

pub fn revoke_user(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    revoke(ctx, "login", "user", accounts::revoke_user)
}

/// Revokes a permission from the group or user named by `field`; `kind` names it in messages.
fn revoke(
    ctx: &mut Ctx<'_>,
    field_name: &str,
    kind: &str,
    apply: fn(&mut rusqlite::Connection, &str, &str) -> AppResult<()>,
) -> AppResult<Resp> {
    let holder = field(ctx, field_name);
    let permission = field(ctx, "permission");
    match apply(&mut ctx.conn, &holder, &permission) {
        Ok(()) => {
            log::info!(
                "admin: permission revoked permission={permission:?} {kind}={holder:?} by={:?}",
                ctx.caller()?.user.login
            );
            let message = format!(
                "Permission '{}' was revoked from {kind} '{holder}'.",
                label(&permission)
            );
            done(ctx, &message, PAGE)
        }
        Err(e) => {
            let f = Forms {
                revoke_errors: FormErrors::from_error(e)?,
                ..Forms::default()
            };
            page(ctx, 422, f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_permissions_by_label() {
        assert_eq!(label("admin"), "Administer System");
        assert_eq!(label("nonsense"), "nonsense");
    }
}
