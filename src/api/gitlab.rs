//! `/api/v2/dop-translation/gitlab-configurations`: the GitLab configuration as one resource;
//! `/api/v2/labgate/gitlab-checks`: the connection check of the stored configuration.

use crate::error::{AppError, AppResult};
use crate::gitlab_check;
use crate::gitlab_config;
use crate::web::request::Resp;
use crate::web::{Ctx, POOL_WAIT};
use serde_json::json;

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let configs = if gitlab_config::exists(&ctx.conn)? {
        vec![gitlab_config::load(&ctx.conn)?.to_json()]
    } else {
        Vec::new()
    };
    let total = configs.len();
    Ok(Resp::json(&json!({
        "gitlabConfigurations": configs,
        "page": { "pageIndex": 1, "pageSize": 1000, "total": total },
    })))
}

fn require_existing(ctx: &Ctx<'_>) -> AppResult<()> {
    if !gitlab_config::exists(&ctx.conn)? {
        return Err(AppError::not_found(format!(
            "GitLab configuration '{}' not found",
            gitlab_config::CONFIG_ID
        )));
    }
    Ok(())
}

pub fn get(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    require_existing(ctx)?;
    Ok(Resp::json(&gitlab_config::load(&ctx.conn)?.to_json()))
}

pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let config = gitlab_config::create(&mut ctx.conn, &ctx.req.body)?;
    log::info!("GitLab configuration created");
    Ok(Resp::json(&config.to_json()))
}

pub fn patch(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let config = gitlab_config::patch(&mut ctx.conn, &ctx.req.body)?;
    log::info!("GitLab configuration changed");
    Ok(Resp::json(&config.to_json()))
}

pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    gitlab_config::delete(&mut ctx.conn)?;
    log::info!("GitLab configuration deleted");
    Ok(Resp::no_content())
}

/// `POST /api/v2/labgate/gitlab-checks`: checks the stored configuration against GitLab and
/// answers `{"ok", "checks": [{"name", "ok", "detail"}]}` in the order they ran. A failing
/// check is an answer, not an error: 200 whatever GitLab said.
pub fn check(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let by = ctx.caller()?.user.login.clone();
    let report = gitlab_check::run(&mut ctx.conn, &ctx.app.gitlab_asking(&by), POOL_WAIT)?;
    let checks: Vec<_> = report
        .checks
        .iter()
        .map(|c| json!({ "name": c.name, "ok": c.ok, "detail": c.detail }))
        .collect();
    Ok(Resp::json(&json!({ "ok": report.ok, "checks": checks })))
}
