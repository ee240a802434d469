//! `GET /api/v2/labgate/audit-events` (a page of the audit log, with the page's filters) and
//! `…/export` (every event the filters keep, as NDJSON, streamed).

use super::Paging;
use crate::audit;
use crate::db::audit::Filter;
use crate::error::{AppError, AppResult};
use crate::web::request::Resp;
use crate::web::Ctx;
use serde_json::{json, Value};

/// The filters of both endpoints: `q`, `action`, `outcome`, `from`, `to`.
fn filter(ctx: &Ctx<'_>) -> AppResult<Filter> {
    let req = ctx.req;
    audit::parse_filter(
        req.param("q"),
        req.param("action"),
        req.param("outcome"),
        req.param("from"),
        req.param("to"),
    )
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let paging = Paging::from_req(ctx.req, 50)?;
    let filter = filter(ctx)?;
    let (events, total) = audit::list(&mut ctx.conn, &filter, paging.offset(), paging.size)?;
    let events: Vec<Value> = events.iter().map(audit::Shown::to_json).collect();
    Ok(Resp::json(
        &json!({ "events": events, "page": paging.json(total) }),
    ))
}

/// The export's content type: one JSON object a line.
pub const NDJSON: &str = "application/x-ndjson";

pub fn export(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let filter = filter(ctx)?;
    // The answer is read after the handler returns: the export reads with its own connection.
    let conn = crate::db::open(&ctx.app.config.db_path())
        .map_err(|e| AppError::Internal(format!("audit export: {e}")))?;
    Ok(Resp::streamed(NDJSON, audit::Export::new(conn, filter)?))
}
