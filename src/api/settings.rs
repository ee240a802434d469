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
    let stored_settings = registry::Snapshot::load(&ctx.conn)?;
    let mut list: Vec<Value> = Vec::new();
    let mut secured: Vec<&str> = Vec::new();
    for key in keys {
        let Some(def) = registry::definition(key) else {
            continue;
        };
        if def.secured() {
            if stored_settings.is_set(key) {
                secured.push(def.key);
            }
            continue;
        }
        if def.multi() {
            let values = stored_settings.values(key);
            if !values.is_empty() {
                list.push(json!({ "key": key, "values": values }));
            }
            continue;
        }
        if key == registry::SERVER_BASE_URL {
            if let Some(fixed) = &ctx.app.config.base_url {
                list.push(json!({ "key": key, "value": fixed }));
                continue;
            }
        }
        match (stored_settings.stored(key), def.default) {
            (Some(v), _) => list.push(json!({ "key": key, "value": v })),
            (None, Some(d)) => list.push(json!({ "key": key, "value": d, "inherited": true })),
            (None, None) => {}
        }
    }
    Ok(Resp::json(
        &json!({ "settings": list, "setSecuredSettings": secured }),
    ))
}

pub fn set(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let key = ctx.req.required("key")?.to_string();
    let def = registry::known(&key)?;
    check_writable(ctx, &key)?;
    let values: Vec<&str> = ctx.req.params("values");
    let given: Vec<&str> = match (ctx.req.param("value"), values.is_empty()) {
        (Some(v), true) => vec![v],
        (None, false) => values,
        (None, true) => {
            return Err(AppError::invalid(
                "value",
                "Either 'value' or 'values' must be provided",
            ))
        }
        (Some(_), false) => {
            return Err(AppError::invalid(
                "value",
                "Either 'value' or 'values' must be provided, not both",
            ))
        }
    };
    if !def.multi() && given.len() > 1 {
        return Err(AppError::invalid(
            "values",
            format!("Setting '{key}' takes a single value"),
        ));
    }
    let fixed = ctx.app.config.base_url.clone();
    registry::set_values_fixed(&mut ctx.conn, &key, &given, fixed.as_deref())?;
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
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let fixed = ctx.app.config.base_url.clone();
    registry::reset_all_fixed(&mut ctx.conn, &keys, fixed.as_deref())?;
    Ok(Resp::no_content())
}
