//! `api/permissions/*` (global permissions only).

use super::{query_text, Paging};
use crate::accounts;
use crate::db::permissions as store;
use crate::error::AppResult;
use crate::model::Permission;
use crate::web::request::Resp;
use crate::web::Ctx;
use serde_json::{json, Value};

fn keys(perms: &[Permission]) -> Vec<&'static str> {
    perms.iter().map(|p| p.key()).collect()
}

fn permission_filter(ctx: &Ctx<'_>) -> AppResult<Option<Permission>> {
    match ctx
        .req
        .param("permission")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Ok(None),
        Some(raw) => Ok(Some(Permission::parse(raw)?)),
    }
}

pub fn add_group(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let group = ctx.req.required("groupName")?;
    let permission = ctx.req.required("permission")?;
    let by = ctx.by();
    accounts::grant_group(&mut ctx.conn, &by, group, permission)?;
    Ok(Resp::no_content())
}

pub fn remove_group(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let group = ctx.req.required("groupName")?;
    let permission = ctx.req.required("permission")?;
    let by = ctx.by();
    accounts::revoke_group(&mut ctx.conn, &by, group, permission)?;
    Ok(Resp::no_content())
}

pub fn add_user(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?;
    let permission = ctx.req.required("permission")?;
    let by = ctx.by();
    accounts::grant_user(&mut ctx.conn, &by, login, permission)?;
    Ok(Resp::no_content())
}

pub fn remove_user(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?;
    let permission = ctx.req.required("permission")?;
    let by = ctx.by();
    accounts::revoke_user(&mut ctx.conn, &by, login, permission)?;
    Ok(Resp::no_content())
}

pub fn groups(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let paging = Paging::from_req(ctx.req, 20)?;
    let q = query_text(ctx.req, 1)?;
    let permission = permission_filter(ctx)?;
    let (holders, total) = store::group_holders(
        &ctx.conn,
        permission,
        q.as_deref(),
        paging.offset(),
        paging.size,
    )?;
    let list: Vec<Value> = holders
        .iter()
        .map(|h| json!({ "id": h.id.to_string(), "name": h.name, "description": h.detail, "permissions": keys(&h.permissions) }))
        .collect();
    Ok(Resp::json(
        &json!({ "paging": paging.json(total), "groups": list }),
    ))
}

pub fn users(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let paging = Paging::from_req(ctx.req, 20)?;
    let q = query_text(ctx.req, 1)?;
    let permission = permission_filter(ctx)?;
    let (holders, total) = store::user_holders(
        &ctx.conn,
        permission,
        q.as_deref(),
        paging.offset(),
        paging.size,
    )?;
    let list: Vec<Value> = holders
        .iter()
        .map(|h| json!({ "login": h.name, "name": h.detail, "permissions": keys(&h.permissions) }))
        .collect();
    Ok(Resp::json(
        &json!({ "paging": paging.json(total), "users": list }),
    ))
}
