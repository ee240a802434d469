//! `api/users/*`.

use super::{bool_param, format_datetime, query_text, user_json, Paging};
use crate::accounts::{self, NewUserInput};
use crate::db::{user_index, users};
use crate::error::{AppError, AppResult};
use crate::web::request::{json_bytes, Resp, JSON};
use crate::web::Ctx;
use serde_json::{json, Value};

/// The answer of `api/users/current` for a signed-in caller, serialized directly (the most
/// frequent call). Fields in the order a `serde_json::Value` writes them (sorted), so the text
/// is the one the `json!` form gave.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CurrentUser<'a> {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    external_identity: &'a str,
    external_provider: &'a str,
    groups: &'a [String],
    is_logged_in: bool,
    local: bool,
    login: &'a str,
    name: &'a str,
    permissions: GlobalPermissions,
}

#[derive(serde::Serialize)]
struct GlobalPermissions {
    global: Vec<&'static str>,
}

impl<'a> CurrentUser<'a> {
    fn of(caller: &'a crate::web::auth::Caller) -> CurrentUser<'a> {
        let user = &caller.user;
        CurrentUser {
            active: user.active,
            email: user.email.as_deref(),
            external_identity: user.identity(),
            external_provider: user.provider(),
            groups: &caller.groups,
            is_logged_in: true,
            local: user.local,
            login: &user.login,
            name: &user.name,
            permissions: GlobalPermissions {
                global: caller.permissions.iter().map(|p| p.key()).collect(),
            },
        }
    }
}

pub fn current(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let Some(caller) = &ctx.caller else {
        return Ok(Resp::json(&json!({
            "isLoggedIn": false,
            "groups": [],
            "permissions": { "global": [] },
        })));
    };
    // Serialized once per cached caller (see `Identity::current_json`).
    let body = caller
        .current_json
        .get_or_init(|| json_bytes(&CurrentUser::of(caller)));
    Ok(Resp::new(200, JSON, body.clone()))
}

pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let req = ctx.req;
    let local = bool_param(req, "local", true)?;
    let login = req.required("login")?;
    let name = req.required("name")?;
    if !local && req.param("password").is_some_and(|p| !p.is_empty()) {
        return Err(AppError::invalid(
            "password",
            "Password should only be set on local user",
        ));
    }
    let input = NewUserInput {
        login,
        name,
        email: req.param("email").unwrap_or(""),
        password: req.param("password").unwrap_or(""),
        gitlab_username: if local { None } else { Some(login) },
    };
    if local && req.param("password").is_none_or(|p| p.is_empty()) {
        return Err(AppError::invalid(
            "password",
            "Password is mandatory and must not be empty",
        ));
    }
    let hash = crate::web::auth::new_password_hash(ctx.app, &mut ctx.conn, &input)?;
    let user = accounts::create_user_hashed(&mut ctx.conn, &input, hash, ctx.now)?;
    Ok(Resp::json(&json!({ "user": user_json(&user) })))
}

fn search_json(user: &users::User, groups: Vec<String>, tokens_count: i64) -> Value {
    let mut v = json!({
        "login": user.login,
        "name": user.name,
        "active": user.active,
        "groups": groups,
        "tokensCount": tokens_count,
        "local": user.local,
        "externalIdentity": user.identity(),
        "externalProvider": user.provider(),
        "managed": false,
    });
    if let Some(email) = &user.email {
        v["email"] = json!(email);
    }
    if let Some(ts) = user.last_connection_at {
        v["lastConnectionDate"] = json!(format_datetime(ts));
    }
    v
}

pub fn search(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let paging = Paging::from_req(ctx.req, 50)?;
    let q = query_text(ctx.req, 2)?;
    let deactivated = bool_param(ctx.req, "deactivated", false)?;
    let (found, total) = user_index::search(
        &ctx.conn,
        q.as_deref(),
        !deactivated,
        paging.offset(),
        paging.size,
    )?;
    let ids: Vec<i64> = found.iter().map(|u| u.id).collect();
    let mut groups = users::group_names_of(&ctx.conn, &ids)?;
    let tokens = users::tokens_counts(&ctx.conn, &ids)?;
    let list: Vec<Value> = found
        .iter()
        .map(|u| {
            let user_groups = groups.remove(&u.id).unwrap_or_default();
            search_json(u, user_groups, tokens.get(&u.id).copied().unwrap_or(0))
        })
        .collect();
    Ok(Resp::json(
        &json!({ "paging": paging.json(total), "users": list }),
    ))
}

pub fn update(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?;
    let user = accounts::update_user(
        &mut ctx.conn,
        login,
        ctx.req.param("name"),
        ctx.req.param("email"),
        ctx.now,
    )?;
    Ok(Resp::json(&json!({ "user": user_json(&user) })))
}

pub fn deactivate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?;
    let actor = ctx.caller()?.user.id;
    let user = accounts::deactivate_user(&mut ctx.conn, actor, login, ctx.now)?;
    Ok(Resp::json(&json!({ "user": user_json(&user) })))
}

pub fn change_password(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?.to_string();
    let password = ctx.req.param("password").unwrap_or("").to_string();
    let caller = ctx.caller()?.clone();
    let own = caller.user.login == login;
    if !own && !caller.is_admin() {
        return Err(AppError::Forbidden);
    }
    let previous = if own {
        Some(ctx.req.param("previousPassword").unwrap_or("").to_string())
    } else {
        None
    };
    let keep = caller.session().map(|s| s.id_hash.clone());
    crate::web::auth::change_password(
        ctx.app,
        &mut ctx.conn,
        &login,
        &password,
        previous.as_deref(),
        if own { keep.as_deref() } else { None },
        ctx.req.client_ip,
        ctx.now,
    )?;
    Ok(Resp::no_content())
}

pub fn update_identity_provider(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let login = ctx.req.required("login")?;
    let provider = ctx.req.required("newExternalProvider")?;
    let identity = ctx.req.required("newExternalIdentity")?;
    accounts::update_identity_provider(&mut ctx.conn, login, provider, identity, ctx.now)?;
    Ok(Resp::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Permission;
    use crate::web::auth::{Caller, Via};
    use std::sync::Arc;

    /// What `api/users/current` answered when it built a `json!` value.
    fn as_value(caller: &Caller) -> Value {
        let user = &caller.user;
        let permissions: Vec<&str> = caller.permissions.iter().map(|p| p.key()).collect();
        let mut v = json!({
            "isLoggedIn": true,
            "login": user.login,
            "name": user.name,
            "local": user.local,
            "externalIdentity": user.identity(),
            "externalProvider": user.provider(),
            "groups": &caller.groups[..],
            "permissions": { "global": permissions },
            "active": user.active,
        });
        if let Some(email) = &user.email {
            v["email"] = json!(email);
        }
        v
    }

    #[test]
    fn current_user_text_is_the_one_of_the_json_value() {
        let conn = crate::db::test_db();
        let mut user = users::find_by_id(&conn, 1).unwrap().unwrap();
        for (email, name, external) in [
            (None, "Administrator", None),
            (
                Some("a\"b@x.org"),
                "Zoë \\ \"quoted\"\n",
                Some("gitlab-name"),
            ),
        ] {
            user.email = email.map(str::to_string);
            user.name = name.to_string();
            user.external_provider = external.map(|_| crate::model::PROVIDER_GITLAB.to_string());
            user.external_identity = external.map(str::to_string);
            let caller = Caller {
                user: Arc::new(user.clone()),
                permissions: Arc::new([Permission::Admin].into_iter().collect()),
                groups: vec!["administrators".to_string(), "users".to_string()].into(),
                current_json: Default::default(),
                gate_headers: Default::default(),
                via: Via::Token,
            };
            let direct = serde_json::to_string(&CurrentUser::of(&caller)).unwrap();
            assert_eq!(direct, as_value(&caller).to_string());
        }
    }
}
