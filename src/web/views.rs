//! What every page shares: the layout data (navigation, CSRF token, flash message), rendering,
//! and the error page.

use super::auth::CSRF_FIELD;
use super::request::{Req, Resp};
use super::Ctx;
use crate::error::{AppError, AppResult};
use askama::Template;

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
        format!("An internal error occurred. Quote request id {} to your administrator.", req.request_id)
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
