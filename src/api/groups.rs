//! `api/user_groups/*`.

use super::{query_text, Paging};
use crate::accounts;
use crate::db::groups::{self, Group, Selected};
use crate::error::{AppError, AppResult};
use crate::web::request::Resp;
use crate::web::Ctx;
use serde_json::{json, Value};

fn group_json(g: &Group) -> Value {
    json!({
        "id": g.id.to_string(),
        "name": g.name,
        "description": g.description,
        "membersCount": g.members_count,
        "default": g.is_default,
        "managed": false,
    })
}

pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let name = ctx.req.required("name")?;
    let description = ctx.req.param("description").unwrap_or("");
    let by = ctx.by();
    let group = accounts::create_group(&mut ctx.conn, &by, name, description, ctx.now)?;
    Ok(Resp::json(&json!({ "group": group_json(&group) })))
}

pub fn update(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let current = ctx.req.required("currentName")?;
    let name = ctx.req.param("name").filter(|n| !n.trim().is_empty());
    let by = ctx.by();
    let group = accounts::update_group(
        &mut ctx.conn,
        &by,
        current,
        name,
        ctx.req.param("description"),
    )?;
    Ok(Resp::json(&json!({ "group": group_json(&group) })))
}

pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let name = ctx.req.required("name")?;
    let by = ctx.by();
    accounts::delete_group(&mut ctx.conn, &by, name)?;
    Ok(Resp::no_content())
}

pub fn search(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let paging = Paging::from_req(ctx.req, 100)?;
    let q = query_text(ctx.req, 1)?;
    let (found, total) = groups::search(&ctx.conn, q.as_deref(), paging.offset(), paging.size)?;
    let list: Vec<Value> = found.iter().map(group_json).collect();
    Ok(Resp::json(
        &json!({ "paging": paging.json(total), "groups": list }),
    ))
}

pub fn add_user(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let name = ctx.req.required("name")?;
    let login = ctx.req.required("login")?;
    let by = ctx.by();
    accounts::add_member(&mut ctx.conn, &by, name, login)?;
    Ok(Resp::no_content())
}

pub fn remove_user(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let name = ctx.req.required("name")?;
    let login = ctx.req.required("login")?;
    let by = ctx.by();
    accounts::remove_member(&mut ctx.conn, &by, name, login)?;
    Ok(Resp::no_content())
}

pub fn users(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let name = ctx.req.required("name")?;
    let group = accounts::group_by_name(&ctx.conn, name)?;
    let paging = Paging::from_req(ctx.req, 25)?;
    let q = query_text(ctx.req, 1)?;
    let selected = match ctx.req.param("selected").map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("selected") => Selected::Selected,
        Some("deselected") => Selected::Deselected,
        Some("all") => Selected::All,
        Some(other) => {
            return Err(AppError::invalid(
                "selected",
                format!("Value of parameter 'selected' ({other}) must be one of: [all, deselected, selected]"),
            ))
        }
    };
    let (rows, total) = groups::members(
        &ctx.conn,
        group.id,
        q.as_deref(),
        selected,
        paging.offset(),
        paging.size,
    )?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "login": r.login, "name": r.name, "selected": r.selected }))
        .collect();
    Ok(Resp::json(&json!({
        "users": list,
        "p": paging.page,
        "ps": paging.size,
        "total": total,
        "paging": paging.json(total),
    })))
}
