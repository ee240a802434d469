//! `/admin/settings`.

use super::super::request::Resp;
use super::super::views::{render, Layout};
use super::super::Ctx;
use crate::error::AppResult;
use askama::Template;

#[derive(Template)]
#[template(path = "admin/placeholder.html")]
struct Page {
    l: Layout,
}

pub fn show(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    render(200, &Page { l: Layout::new(ctx, "Settings", "settings")? })
}
