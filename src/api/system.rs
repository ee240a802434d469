//! `api/system/*`, `api/server/version` and `api/authentication/*`.

use crate::error::{AppError, AppResult};
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
    crate::db::maintenance::ping(&ctx.conn)?;
    Ok(Resp::json(&json!({ "health": "GREEN", "causes": [] })))
}

/// `POST api/authentication/login`: `login` and `password` from the form body only (never the
/// query string, which ends up in logs and browser history); a request from another site is
/// refused (login CSRF); the session the caller had is ended with the new one's start.
pub fn login(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    if auth::cross_site(ctx.req, &ctx.base_url()) {
        log::warn!("sign-in provider=local outcome=refused reason=cross-site request");
        return Err(AppError::Forbidden);
    }
    let Some(login) = ctx
        .req
        .form
        .get("login")
        .map(str::trim)
        .filter(|l| !l.is_empty())
    else {
        return Err(AppError::invalid(
            "login",
            "The 'login' parameter is missing (send it in the form body)",
        ));
    };
    let login = login.to_string();
    let password = ctx.req.form.get("password").unwrap_or("").to_string();
    let client = ctx.req.client_ip;
    let user = auth::check_password(ctx.app, &mut ctx.conn, &login, &password, client, ctx.now)?;
    log::info!(
        "sign-in provider=local login={:?} outcome=accepted",
        user.login
    );
    let previous = ctx.caller.as_ref().and_then(|c| c.session());
    let previous = previous.map(|s| s.id_hash.clone());
    let cookies = auth::start_session(ctx.app, &mut ctx.conn, &user, previous.as_deref(), ctx.now)?;
    ctx.cookies.extend(cookies);
    Ok(Resp::no_content())
}

pub fn logout(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    if let Some(session) = ctx.caller.as_ref().and_then(|c| c.session()) {
        crate::db::sessions::delete(&ctx.conn, &session.id_hash)?;
    }
    let domain = auth::cookie_domain(ctx.app, &ctx.conn)?;
    ctx.cookies.extend(auth::clear_cookies(domain.as_deref()));
    Ok(Resp::no_content())
}

pub fn validate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    Ok(Resp::json(&json!({ "valid": ctx.caller.is_some() })))
}
