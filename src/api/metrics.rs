//! `GET /metrics`: the Prometheus metrics, when `labgate.metrics.enabled` is on (404 otherwise),
//! behind `Authorization: Bearer <labgate.metrics.token>` when that token is set. The route
//! resolves no caller: its token is not an API token.

use crate::db::{self, maintenance};
use crate::error::AppResult;
use crate::metrics::{self, Gauges};
use crate::settings;
use crate::web::auth;
use crate::web::request::Resp;
use crate::web::Ctx;

pub fn scrape(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    if !settings::flag(&ctx.conn, settings::METRICS_ENABLED)? {
        return Ok(Resp::text(
            404,
            "Metrics are off: an administrator turns them on in Settings → Audit and monitoring \
             (labgate.metrics.enabled).",
        ));
    }
    if let Some(token) = db::settings::get(&ctx.conn, settings::METRICS_TOKEN)? {
        let sent = match ctx.req.header("authorization").map(auth::authorization) {
            Some(auth::Authorization::Bearer(token)) => token,
            _ => "",
        };
        // Digests of equal length, compared in constant time: the length of the token leaks
        // no more than its value.
        let (sent, token) = (
            crate::crypto::sha256_hex(sent),
            crate::crypto::sha256_hex(&token),
        );
        if !crate::crypto::ct_eq(&sent, &token) {
            return Ok(Resp::text(401, "A bearer token is required for /metrics.")
                .with_header("WWW-Authenticate", "Bearer realm=\"labgate metrics\""));
        }
    }
    let timeout = settings::session_timeout_secs(&ctx.conn)?;
    let f = maintenance::figures(&ctx.conn, ctx.now, timeout)?;
    let text = metrics::encode(&Gauges {
        sessions_active: f.sessions_active,
        users_active: f.users_active,
        users_deactivated: f.users_deactivated,
        database_bytes: f.database_bytes,
        audit_events: f.audit_events,
    });
    Ok(Resp::new(200, metrics::CONTENT_TYPE, text))
}
