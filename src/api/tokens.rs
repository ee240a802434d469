//! `api/user_tokens/*`: users manage their own tokens; admins those of anyone.

use super::format_datetime;
use crate::accounts;
use crate::db::tokens;
use crate::error::{AppError, AppResult};
use crate::web::request::Resp;
use crate::web::views::format_date;
use crate::web::Ctx;
use serde_json::{json, Value};

/// The login acted on: the caller's own, or another one for admins only.
fn target_login(ctx: &Ctx<'_>) -> AppResult<String> {
    let caller = ctx.caller()?;
    match ctx
        .req
        .param("login")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Ok(caller.user.login.clone()),
        Some(login) if login == caller.user.login => Ok(login.to_string()),
        Some(login) if caller.is_admin() => Ok(login.to_string()),
        Some(_) => Err(AppError::Forbidden),
    }
}

pub fn generate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = target_login(ctx)?;
    let name = ctx.req.required("name")?;
    let expiration = ctx.req.param("expirationDate").unwrap_or("");
    let t = accounts::generate_token(&mut ctx.conn, &login, name, expiration, ctx.now)?;
    let mut v = json!({
        "login": t.login,
        "name": t.name,
        "token": t.value,
        "createdAt": format_datetime(t.created_at),
        "type": "USER_TOKEN",
    });
    if let Some(e) = t.expires_at {
        v["expirationDate"] = json!(format_date(e));
    }
    Ok(Resp::json(&v))
}

pub fn revoke(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = target_login(ctx)?;
    let name = ctx.req.required("name")?;
    accounts::revoke_token(&mut ctx.conn, &login, name)?;
    Ok(Resp::no_content())
}

pub fn search(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = target_login(ctx)?;
    let user = accounts::user_by_login(&ctx.conn, &login)?;
    let list: Vec<Value> = tokens::list(&ctx.conn, user.id)?
        .iter()
        .map(|t| {
            let mut v = json!({
                "name": t.name,
                "createdAt": format_datetime(t.created_at),
                "isExpired": t.is_expired(ctx.now),
                "type": "USER_TOKEN",
            });
            if let Some(ts) = t.last_connection_at {
                v["lastConnectionDate"] = json!(format_datetime(ts));
            }
            if let Some(e) = t.expires_at {
                v["expirationDate"] = json!(format_date(e));
            }
            v
        })
        .collect();
    Ok(Resp::json(
        &json!({ "login": user.login, "userTokens": list }),
    ))
}
