//! `/api/v2/dop-translation/gitlab-configurations`: the GitLab configuration as one resource;
//! `/api/v2/labgate/gitlab-checks`: the connection check of the stored configuration;
//! `/api/v2/labgate/gitlab-revalidations`: revalidating GitLab users now, and the last runs;
//! `/api/v2/dop-translation/gitlab-synchronization-runs`: automatic provisioning's runs.

use super::format_datetime;
use crate::error::{AppError, AppResult};
use crate::gitlab_check;
use crate::gitlab_config;
use crate::gitlab_provisioning;
use crate::revalidation::{self, Run};
use crate::settings;
use crate::web::request::Resp;
use crate::web::{Ctx, POOL_WAIT};
use serde_json::{json, Value};

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
    let by = ctx.by();
    let config = gitlab_config::create(&mut ctx.conn, &by, &ctx.req.body)?;
    log::info!("GitLab configuration created");
    Ok(Resp::json(&config.to_json()))
}

pub fn patch(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let by = ctx.by();
    let config = gitlab_config::patch(&mut ctx.conn, &by, &ctx.req.body)?;
    log::info!("GitLab configuration changed");
    Ok(Resp::json(&config.to_json()))
}

pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let by = ctx.by();
    gitlab_config::delete(&mut ctx.conn, &by)?;
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

/// A revalidation run as the API shows it.
pub fn run_json(run: &Run) -> serde_json::Value {
    let cut_off: serde_json::Value = serde_json::from_str(&run.cut_off).unwrap_or(json!([]));
    json!({
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "startedAt": super::format_datetime(run.started_at),
        "finishedAt": run.finished_at.map(super::format_datetime),
        "usersChecked": run.users_checked,
        "usersUpdated": run.users_updated,
        "usersCutOff": run.users_cut_off,
        "sessionsEnded": run.sessions_ended,
        "cutOff": cut_off,
        "error": run.error,
    })
}

/// `POST /api/v2/labgate/gitlab-revalidations`: revalidates the GitLab users now and answers
/// the run (200), a failed one included (its `status` and `error` say so); 409 while a run goes
/// on, 400 when GitLab sign-in is not configured. No connection is held while GitLab answers.
pub fn revalidate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let run = ctx.revalidate_now()?;
    Ok(Resp::json(&run_json(&run)))
}

/// `GET /api/v2/labgate/gitlab-revalidations`: the last 50 runs, newest first, whether one
/// goes on, the interval and when the next scheduled run is due.
pub fn revalidations(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let kept = crate::db::gitlab_revalidation::RUNS_KEPT;
    let runs = crate::db::gitlab_revalidation::recent_runs(&ctx.conn, kept)?;
    let minutes = settings::revalidate_minutes(&ctx.conn)?;
    let next = revalidation::next_scheduled(&ctx.conn, &ctx.app.revalidations)?;
    Ok(Resp::json(&json!({
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
        "running": ctx.app.revalidations.running(),
        "intervalMinutes": minutes,
        "nextRunAt": next.map(super::format_datetime),
    })))
}
/// A run as `gitlab-synchronization-runs` shows it.
fn provisioning_run_json(run: &gitlab_provisioning::RunView) -> Value {
    let when = |ms: Option<i64>| ms.map(|ms| format_datetime(ms.div_euclid(1000)));
    let mut v = json!({
        "id": run.id.map(|id| id.to_string()),
        "status": run.status,
        "trigger": run.trigger,
        "startedAt": when(Some(run.started_at)),
        "finishedAt": when(run.finished_at),
        "groupsRead": run.groups_read,
        "usersRead": run.users_read,
        "changes": run.changes,
        "error": run.error,
    });
    if let Some((read, known)) = run.progress {
        v["progress"] = json!({ "groupsRead": read, "groupsKnown": known });
    }
    if !run.held.is_empty() {
        v["heldDeactivations"] = json!(run
            .held
            .iter()
            .map(|(login, username)| json!({ "login": login, "gitlabUsername": username }))
            .collect::<Vec<_>>());
    }
    if !run.warnings.is_empty() {
        v["warnings"] = json!(run.warnings);
    }
    v
}

/// `GET /api/v2/dop-translation/gitlab-synchronization-runs`: the run going on, if any, then
/// the last finished ones, newest first (50 in all), and when the next scheduled one is due.
pub fn runs(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let status = gitlab_provisioning::runner::status(&ctx.conn, &ctx.app.provisioning)?;
    let runs: Vec<Value> = status.runs.iter().map(provisioning_run_json).collect();
    Ok(Resp::json(&json!({
        "runs": runs,
        "nextRunAt": status.next_run_at.map(|ms| format_datetime(ms.div_euclid(1000))),
    })))
}

/// `POST /api/v2/dop-translation/gitlab-synchronization-runs`: starts a run now (202), or with
/// `{"force":true}` applies the held run's deactivations; 409 while a run goes on.
pub fn start_run(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let force = if ctx.req.body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let fields = crate::error::json_object_body(&ctx.req.body)?;
        match fields.get("force") {
            None | Some(Value::Bool(false)) | Some(Value::Null) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => return Err(AppError::invalid("force", "'force' must be true or false")),
        }
    };
    let by = ctx.caller()?.user.login.clone();
    gitlab_provisioning::runner::start(&ctx.conn, &ctx.app.provisioning, force, &by)?;
    Ok(Resp::json_status(202, &json!({ "status": "RUNNING" })))
}
