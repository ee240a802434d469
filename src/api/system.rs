//! `api/system/*`, `api/server/version` and `api/authentication/*`.

use crate::error::AppResult;
use crate::web::auth;
use crate::web::request::Resp;
use crate::web::{Ctx, VERSION};
use serde_json::json;

pub fn status(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    Ok(Resp::json(&json!({
        "id": ctx.app.server_id,
        "version": VERSION,
        "status": "UP",
    })))
}

pub fn version(_ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    Ok(Resp::text(200, VERSION))
}

pub fn health(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let _: i64 = ctx
        .conn
        .prepare_cached("SELECT 1")?
        .query_row([], |r| r.get(0))?;
    Ok(Resp::json(&json!({ "health": "GREEN", "causes": [] })))
}

pub fn login(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?.to_string();
    let password = ctx.req.param("password").unwrap_or("").to_string();
    let user = auth::check_password(ctx.app, &ctx.conn, &login, &password, ctx.req, ctx.now)?;
    log::info!(
        "sign-in provider=local login={:?} outcome=accepted",
        user.login
    );
    let cookies = auth::start_session(ctx.app, &mut ctx.conn, &user, ctx.now)?;
    ctx.cookies.extend(cookies);
    Ok(Resp::no_content())
}

pub fn logout(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    if let Some(session) = ctx.caller.as_ref().and_then(|c| c.session()) {
        crate::db::sessions::delete(&ctx.conn, &session.id_hash)?;
    }
    ctx.cookies.extend(auth::clear_cookies());
    Ok(Resp::no_content())
}

pub fn validate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    Ok(Resp::json(&json!({ "valid": ctx.caller.is_some() })))
}
