//! `/api/v2/labgate/applications`: the applications behind labgate as a JSON resource. `GET`
//! lists them (`p`, `ps`), `POST` creates one (201), `GET`, `PATCH`
//! (`application/merge-patch+json`) and `DELETE` act on `/{id}`.

use super::Paging;
use crate::error::{AppError, AppResult};
use crate::gate::applications::{self, Application, Changes};
use crate::web::request::Resp;
use crate::web::Ctx;
use serde_json::{json, Value};

fn to_json(app: &Application) -> Value {
    json!({
        "id": app.id.to_string(),
        "name": app.name,
        "url": app.url,
        "allowedGroups": app.allowed_groups,
        "description": app.description,
    })
}

/// The application named by the last segment of the path.
fn path_id(ctx: &Ctx<'_>) -> AppResult<i64> {
    applications::parse_id(ctx.req.path.rsplit('/').next().unwrap_or(""))
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::invalid("body", message)
}

/// The fields of a JSON body: each one given becomes a change; `null` empties the
/// description and the allowed groups, and is refused for the name and the URL. Unknown
/// fields are refused; `id` is ignored (it is the path's).
fn changes_of(body: &[u8]) -> AppResult<Changes> {
    let fields = crate::error::json_object_body(body)?;
    let mut changes = Changes::default();
    for (name, value) in &fields {
        let text = |required: bool| match value {
            Value::String(t) => Ok(Some(t.clone())),
            Value::Null if !required => Ok(Some(String::new())),
            _ => Err(bad(format!("'{name}' must be a string"))),
        };
        match name.as_str() {
            "id" => {}
            "name" => changes.name = text(true)?,
            "url" => changes.url = text(true)?,
            "description" => changes.description = text(false)?,
            "allowedGroups" => {
                changes.allowed_groups = Some(match value {
                    Value::Null => Vec::new(),
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("'allowedGroups' must be a list of group names"))?,
                    _ => return Err(bad("'allowedGroups' must be a list of group names")),
                })
            }
            other => return Err(bad(format!("Unknown field '{other}'"))),
        }
    }
    Ok(changes)
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let paging = Paging::from_req(ctx.req, 100)?;
    let (apps, total) = crate::db::applications::page(&ctx.conn, paging.offset(), paging.size)?;
    Ok(Resp::json(&json!({
        "applications": apps.iter().map(to_json).collect::<Vec<_>>(),
        "page": paging.json(total),
    })))
}

pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let changes = changes_of(&ctx.req.body)?;
    for (field, given) in [("name", &changes.name), ("url", &changes.url)] {
        if given.is_none() {
            return Err(AppError::invalid(field, format!("'{field}' is required")));
        }
    }
    let by = ctx.by();
    let app = applications::create(&mut ctx.conn, &by, &changes, ctx.now)?;
    log::info!(
        "admin: application created name={:?} url={:?} by={:?}",
        app.name,
        app.url,
        ctx.caller()?.user.login
    );
    Ok(Resp::json_status(201, &to_json(&app)))
}

pub fn get(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let app = applications::get(&ctx.conn, path_id(ctx)?)?;
    Ok(Resp::json(&to_json(&app)))
}

pub fn patch(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let id = path_id(ctx)?;
    let changes = changes_of(&ctx.req.body)?;
    let by = ctx.by();
    let app = applications::update(&mut ctx.conn, &by, id, &changes, ctx.now)?;
    log::info!(
        "admin: application changed name={:?} by={:?}",
        app.name,
        ctx.caller()?.user.login
    );
    Ok(Resp::json(&to_json(&app)))
}

pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let id = path_id(ctx)?;
    let by = ctx.by();
    let app = applications::delete(&mut ctx.conn, &by, id)?;
    log::info!(
        "admin: application deleted name={:?} by={:?}",
        app.name,
        ctx.caller()?.user.login
    );
    Ok(Resp::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_changes_what_it_names_and_null_empties_lists() {
        let c = changes_of(br#"{"id":"7","name":"Wiki","allowedGroups":null,"description":null}"#)
            .unwrap();
        assert_eq!(c.name.as_deref(), Some("Wiki"));
        assert_eq!(c.url, None);
        assert_eq!(c.allowed_groups, Some(Vec::new()));
        assert_eq!(c.description.as_deref(), Some(""));
        for bad in [
            &br#"{"name":null}"#[..],
            br#"{"url":3}"#,
            br#"{"allowedGroups":"ml"}"#,
            br#"{"allowedGroups":[1]}"#,
            br#"{"colour":"red"}"#,
            br#"[]"#,
            br#"{"#,
        ] {
            assert!(changes_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
