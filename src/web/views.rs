//! What every page shares: the layout data (navigation, CSRF token, flash message), rendering,
//! the error page (which dispatch shows for a failed page route), dates, and list paging.

use super::auth::CSRF_FIELD;
use super::request::{encode_component, Req, Resp};
use super::Ctx;
use crate::error::{AppError, AppResult};
use askama::Template;

/// The Content-Security-Policy of every HTML page that sets none of its own.
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// [`CSP`] with `origin` added to `form-action`: for a form whose answer redirects there
/// (browsers check a form's redirects against `form-action` too, and stop at one it does not
/// allow).
pub fn csp_with_form_target(origin: &str) -> String {
    CSP.replace(
        "form-action 'self'",
        &format!("form-action 'self' {origin}"),
    )
}

pub struct NavUser {
    pub login: String,
    pub name: String,
    pub is_admin: bool,
}

/// Data of `base.html`: every page template has a `l: Layout` field.
pub struct Layout {
    pub title: String,
    pub user: Option<NavUser>,
    pub csrf: String,
    pub csrf_field: &'static str,
    pub flash: Option<String>,
    /// Which navigation entry is current: "home", "account", "users", "groups", ...
    pub active: &'static str,
}

impl Layout {
    /// Layout for a page; takes (and clears) the session's flash message.
    pub fn new(ctx: &Ctx<'_>, title: impl Into<String>, active: &'static str) -> AppResult<Layout> {
        let session = ctx.caller.as_ref().and_then(|c| c.session());
        let flash = session.and_then(|s| s.flash.clone());
        if let (Some(s), Some(_)) = (session, &flash) {
            crate::db::sessions::clear_flash(&ctx.conn, &s.id_hash)?;
        }
        Ok(Layout {
            title: title.into(),
            user: ctx.caller.as_ref().map(|c| NavUser {
                login: c.user.login.clone(),
                name: c.user.name.clone(),
                is_admin: c.is_admin(),
            }),
            csrf: session.map(|s| s.csrf_token.clone()).unwrap_or_default(),
            csrf_field: CSRF_FIELD,
            flash,
            active,
        })
    }

    /// Layout for pages shown without a usable session (sign-in, errors before routing).
    pub fn anonymous(title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            user: None,
            csrf: String::new(),
            csrf_field: CSRF_FIELD,
            flash: None,
            active: "",
        }
    }
}

/// Renders a template into an HTML response.
pub fn render(status: u16, page: &impl Template) -> AppResult<Resp> {
    let html = page
        .render()
        .map_err(|e| AppError::Internal(format!("template: {e}")))?;
    Ok(Resp::html(status, html))
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub l: Layout,
    pub status: u16,
    pub heading: &'a str,
    pub message: String,
    pub request_id: &'a str,
}

fn heading(status: u16) -> &'static str {
    match status {
        400 => "That request could not be handled",
        403 => "Access denied",
        404 => "Page not found",
        405 => "Method not allowed",
        413 => "Request too large",
        429 => "Too many attempts",
        503 => "Temporarily unavailable",
        _ => "Something went wrong",
    }
}

/// The error page with the given layout.
pub fn error_with_layout(l: Layout, req: &Req, err: &AppError) -> Resp {
    let status = err.status();
    if status >= 500 {
        log::error!("request {}: {err}", req.request_id);
    }
    let message = if status >= 500 {
        format!(
            "An internal error occurred. Quote request id {} to your administrator.",
            req.request_id
        )
    } else {
        err.public_message()
    };
    let page = ErrorPage {
        l,
        status,
        heading: heading(status),
        message,
        request_id: &req.request_id,
    };
    render(status, &page).unwrap_or_else(|_| Resp::text(status, heading(status)))
}

/// The page for an error on a page route: sign-in for anonymous callers, else the error page.
pub fn error_page(ctx: &mut Ctx<'_>, err: AppError) -> Resp {
    if let AppError::Unauthorized(_) = err {
        if ctx.caller.is_none() {
            let back = ctx.req.path_and_query();
            return Resp::redirect(&format!(
                "/sessions/new?return_to={}",
                encode_component(&back)
            ));
        }
    }
    let layout = Layout::new(ctx, "Error", "").unwrap_or_else(|_| Layout::anonymous("Error"));
    error_with_layout(layout, ctx.req, &err)
}

/// The error page when no request context exists.
pub fn plain_error_page(req: &Req, err: &AppError) -> Resp {
    error_with_layout(Layout::anonymous("Error"), req, err)
}

/// Formats a timestamp for pages: `2024-01-15 10:20 UTC`.
pub fn datetime(ts: Option<i64>) -> String {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

/// A date as `YYYY-MM-DD` (pages, and the API's token expiration dates).
pub fn format_date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Rows per page on the admin lists.
pub const PAGE_SIZE: i64 = 50;
/// Highest page number honoured; keeps `OFFSET` arithmetic far from overflow.
const MAX_PAGE: i64 = 1_000_000;

/// Where a list page stands: the page shown (1-based), its size, and how many rows match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pager {
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

impl Pager {
    /// The page asked for by `p`: missing, unreadable or below 1 means the first page.
    pub fn page_param(raw: Option<&str>) -> i64 {
        raw.and_then(|p| p.trim().parse::<i64>().ok())
            .filter(|p| *p >= 1)
            .map_or(1, |p| p.min(MAX_PAGE))
    }

    fn offset_of(page: i64, size: i64) -> i64 {
        (page - 1).max(0) * size
    }

    /// The last page that has rows (1 when nothing matches).
    pub fn last_page(&self) -> i64 {
        ((self.total + self.size - 1) / self.size).max(1)
    }

    pub fn prev(&self) -> Option<i64> {
        (self.page > 1).then(|| (self.page - 1).min(self.last_page()))
    }

    pub fn next(&self) -> Option<i64> {
        (self.page < self.last_page()).then_some(self.page + 1)
    }

    /// "51–100 of 120": the rows shown and the total.
    pub fn summary(&self) -> String {
        if self.total == 0 {
            return "0 of 0".into();
        }
        let first = Pager::offset_of(self.page, self.size) + 1;
        let last = (first + self.size - 1).min(self.total);
        format!("{first}–{last} of {}", self.total)
    }

    /// Runs a paged query for `page`; a page past the end shows the last page instead.
    pub fn fetch<T>(
        page: i64,
        mut query: impl FnMut(i64, i64) -> rusqlite::Result<(Vec<T>, i64)>,
    ) -> AppResult<(Vec<T>, Pager)> {
        let (rows, total) = query(Pager::offset_of(page, PAGE_SIZE), PAGE_SIZE)?;
        let pager = Pager {
            page,
            size: PAGE_SIZE,
            total,
        };
        if rows.is_empty() && total > 0 && page > pager.last_page() {
            let last = pager.last_page();
            let (rows, total) = query(Pager::offset_of(last, PAGE_SIZE), PAGE_SIZE)?;
            let pager = Pager {
                page: last,
                size: PAGE_SIZE,
                total,
            };
            return Ok((rows, pager));
        }
        Ok((rows, pager))
    }
}

/// A local URL with its non-empty parameters percent-encoded: `/admin/users?q=ann&p=2`.
pub fn url_with(path: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode_component(v)))
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_param_falls_back_to_the_first_page() {
        assert_eq!(Pager::page_param(None), 1);
        assert_eq!(Pager::page_param(Some("3")), 3);
        for bad in ["0", "-2", "x", "", "1.5"] {
            assert_eq!(Pager::page_param(Some(bad)), 1, "{bad:?}");
        }
        assert_eq!(Pager::page_param(Some("99999999999999")), MAX_PAGE);
    }

    #[test]
    fn pager_links_and_summary() {
        let p = Pager {
            page: 2,
            size: 50,
            total: 120,
        };
        assert_eq!((p.prev(), p.next(), p.last_page()), (Some(1), Some(3), 3));
        assert_eq!(p.summary(), "51–100 of 120");
        let last = Pager { page: 3, ..p };
        assert_eq!(
            (last.next(), last.summary().as_str()),
            (None, "101–120 of 120")
        );
        let empty = Pager {
            page: 1,
            size: 50,
            total: 0,
        };
        assert_eq!(
            (empty.prev(), empty.next(), empty.last_page()),
            (None, None, 1)
        );
        assert_eq!(empty.summary(), "0 of 0");
    }

    #[test]
    fn a_page_past_the_end_shows_the_last_page() {
        let rows: Vec<i64> = (0..120).collect();
        let query = |offset: i64, limit: i64| {
            let page: Vec<i64> = rows
                .iter()
                .copied()
                .skip(offset as usize)
                .take(limit as usize)
                .collect();
            Ok((page, 120))
        };
        let (shown, pager) = Pager::fetch(9, query).unwrap();
        assert_eq!(pager.page, 3);
        assert_eq!(shown.first(), Some(&100));
        let (shown, pager) = Pager::fetch(1, query).unwrap();
        assert_eq!((pager.page, shown.len()), (1, 50));
    }

    #[test]
    fn url_with_encodes_and_drops_empty_parameters() {
        assert_eq!(
            url_with("/admin/users", &[("q", ""), ("p", "")]),
            "/admin/users"
        );
        assert_eq!(
            url_with(
                "/admin/groups/edit",
                &[("name", "acme/plat form&x"), ("p", "2")]
            ),
            "/admin/groups/edit?name=acme%2Fplat%20form%26x&p=2"
        );
    }

    #[test]
    fn datetime_formats_utc_or_never() {
        assert_eq!(datetime(None), "never");
        assert_eq!(datetime(Some(0)), "1970-01-01 00:00 UTC");
    }
}
