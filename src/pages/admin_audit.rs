//! `/admin/audit`: the audit log, newest first, filtered by text (the beginning of the actor's
//! or the target's name), action, outcome and dates, paged; each event in one readable line
//! with its detail on demand. The rows are also shown, for one user, on the user's page.

use super::FormErrors;
use crate::audit::{self, Action, Outcome, Shown};
use crate::error::{AppError, AppResult};
use crate::web::request::Resp;
use crate::web::views::{render, url_with, Layout, Pager, PAGE_SIZE};
use crate::web::Ctx;
use askama::Template;

const PAGE: &str = "/admin/audit";

/// An event as a row of the page.
pub struct EventRow {
    pub at: String,
    pub outcome: String,
    pub line: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// The detail, indented, shown on demand.
    pub detail: String,
}

/// A time in UTC milliseconds as the pages show it: `2024-01-15 10:20:30.123 UTC`.
fn at_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_default()
}

pub fn rows_of(events: Vec<Shown>) -> Vec<EventRow> {
    events
        .into_iter()
        .map(|e| EventRow {
            at: at_ms(e.at_ms),
            detail: serde_json::to_string_pretty(&e.detail).unwrap_or_default(),
            outcome: e.outcome,
            line: e.line,
            actor: e.actor.unwrap_or_default(),
            action: e.action,
            target: e.target.unwrap_or_default(),
        })
        .collect()
}

/// The filters as typed, kept in the links of the pager.
#[derive(Default)]
struct Filters {
    q: String,
    action: String,
    outcome: String,
    from: String,
    to: String,
}

impl Filters {
    fn read(ctx: &Ctx<'_>) -> Filters {
        let get = |name: &str| {
            ctx.req
                .query
                .get(name)
                .unwrap_or("")
                .trim()
                .chars()
                .take(255)
                .collect::<String>()
        };
        Filters {
            q: get("q"),
            action: get("action"),
            outcome: get("outcome"),
            from: get("from"),
            to: get("to"),
        }
    }

    fn page_url(&self, page: i64) -> String {
        let page = page.to_string();
        url_with(
            PAGE,
            &[
                ("q", &self.q),
                ("action", &self.action),
                ("outcome", &self.outcome),
                ("from", &self.from),
                ("to", &self.to),
                ("p", if page == "1" { "" } else { &page }),
            ],
        )
    }

    fn any(&self) -> bool {
        [&self.q, &self.action, &self.outcome, &self.from, &self.to]
            .iter()
            .any(|f| !f.is_empty())
    }
}

struct Choice {
    value: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    l: Layout,
    filters: Filters,
    filtered: bool,
    actions: Vec<Choice>,
    outcomes: Vec<Choice>,
    errors: FormErrors,
    events: Vec<EventRow>,
    pager: Pager,
    prev_url: Option<String>,
    next_url: Option<String>,
    retention_days: i64,
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let filters = Filters::read(ctx);
    let choices = |all: Vec<&'static str>, chosen: &str| {
        all.into_iter()
            .map(|value| Choice {
                value,
                selected: value == chosen,
            })
            .collect::<Vec<_>>()
    };
    let actions = choices(
        Action::ALL.iter().map(|a| a.as_str()).collect(),
        &filters.action,
    );
    let outcomes = choices(
        Outcome::ALL.iter().map(|o| o.as_str()).collect(),
        &filters.outcome,
    );
    let page = Pager::page_param(ctx.req.query.get("p"));
    let parsed = audit::parse_filter(
        Some(&filters.q),
        Some(&filters.action),
        Some(&filters.outcome),
        Some(&filters.from),
        Some(&filters.to),
    );
    let (status, errors, events, pager) = match parsed {
        Ok(filter) => {
            let offset = (page - 1) * PAGE_SIZE;
            let (events, total) = audit::list(&mut ctx.conn, &filter, offset, PAGE_SIZE)?;
            let pager = Pager {
                page,
                size: PAGE_SIZE,
                total,
            };
            (200, FormErrors::default(), rows_of(events), pager)
        }
        Err(e @ AppError::Invalid(_)) => {
            let pager = Pager {
                page: 1,
                size: PAGE_SIZE,
                total: 0,
            };
            (422, FormErrors::from_error(e)?, Vec::new(), pager)
        }
        Err(e) => return Err(e),
    };
    let view = AuditPage {
        l: Layout::new(ctx, "Audit log", "audit")?,
        filtered: filters.any(),
        prev_url: pager.prev().map(|p| filters.page_url(p)),
        next_url: pager.next().map(|p| filters.page_url(p)),
        filters,
        actions,
        outcomes,
        errors,
        events,
        pager,
        retention_days: audit::retention_days(&ctx.conn)?,
    };
    render(status, &view)
}
