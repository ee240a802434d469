//! `api/settings/values|set|reset` over the settings registry.

use crate::error::{AppError, AppResult};
use crate::settings::{self as registry, DEFINITIONS};
use crate::web::request::Resp;
use crate::web::Ctx;
use serde_json::{json, Value};

/// Keys from a comma-separated `keys` parameter (repeated parameters accepted too).
fn keys_param(ctx: &Ctx<'_>) -> Vec<String> {
    ctx.req
        .params("keys")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// Refuses changing the base URL when it is fixed by `--base-url`.
fn check_writable(ctx: &Ctx<'_>, key: &str) -> AppResult<()> {
    if key == registry::SERVER_BASE_URL && ctx.app.config.base_url.is_some() {
        return Err(AppError::rule(
            "sonar.core.serverBaseURL is set by --base-url (LABGATE_BASE_URL) and cannot be changed here",
        ));
    }
    Ok(())
}

pub fn values(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let requested = keys_param(ctx);
    let keys: Vec<&str> = if requested.is_empty() {
        DEFINITIONS.iter().map(|d| d.key).collect()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    let mut list: Vec<Value> = Vec::new();
    for key in keys {
        let Some(def) = registry::definition(key) else { continue };
        if key == registry::SERVER_BASE_URL {
            if let Some(fixed) = &ctx.app.config.base_url {
                list.push(json!({ "key": key, "value": fixed }));
                continue;
            }
        }
        let stored = crate::db::settings::get(&ctx.conn, key)?;
        match (stored, def.default) {
            (Some(v), _) => list.push(json!({ "key": key, "value": v })),
            (None, Some(d)) => list.push(json!({ "key": key, "value": d, "inherited": true })),
            (None, None) => {}
        }
    }
    Ok(Resp::json(&json!({ "settings": list, "setSecuredSettings": [] })))
}

pub fn set(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let key = ctx.req.required("key")?.to_string();
    registry::known(&key)?;
    check_writable(ctx, &key)?;
    let values = ctx.req.params("values");
    let value = match (ctx.req.param("value"), values.as_slice()) {
        (Some(v), []) => v.to_string(),
        (None, [single]) => single.to_string(),
        (None, []) => {
            return Err(AppError::invalid("value", "Either 'value' or 'values' must be provided"))
        }
        (Some(_), _) => {
            return Err(AppError::invalid("value", "Either 'value' or 'values' must be provided, not both"))
        }
        (None, _) => {
            return Err(AppError::invalid("values", format!("Setting '{key}' takes a single value")))
        }
    };
    registry::set(&mut ctx.conn, &key, &value)?;
    Ok(Resp::no_content())
}

pub fn reset(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let keys = keys_param(ctx);
    if keys.is_empty() {
        return Err(AppError::invalid("keys", "The 'keys' parameter is missing"));
    }
    for key in &keys {
        registry::known(key)?;
        check_writable(ctx, key)?;
    }
    for key in &keys {
        registry::reset(&mut ctx.conn, key)?;
    }
    Ok(Resp::no_content())
}
