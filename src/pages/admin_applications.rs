//! `/admin/applications`: the applications behind labgate. List and create them; each one's
//! page changes its name, URL, allowed groups and description, shows the proxy configuration
//! for nginx, Caddy and Traefik with its host names filled in, and deletes it (after a
//! confirmation).

use super::admin::{done, field, param, ConfirmThenAct, Confirmation, ListState};
use super::FormErrors;
use crate::error::AppResult;
use crate::gate::applications::{self, Application, Changes};
use crate::gate::rules::Origin;
use crate::gate::snippets::{self, Target};
use crate::web::request::Resp;
use crate::web::views::{render, url_with, Layout, Pager};
use crate::web::Ctx;
use askama::Template;

const LIST: &str = "/admin/applications";
/// Where the configuration shown says the application itself answers: a placeholder the
/// administrator replaces (labgate does not know it).
pub const UPSTREAM_PLACEHOLDER: &str = "http://127.0.0.1:8000";

fn list_state(ctx: &Ctx<'_>) -> ListState {
    ListState::read(ctx, LIST, &[])
}

fn edit_url(id: i64) -> String {
    url_with("/admin/applications/edit", &[("id", &id.to_string())])
}

/// The form's text for allowed groups: one name a line (names may hold commas).
fn groups_text(groups: &[String]) -> String {
    groups.join("\n")
}

/// The allowed groups of a form: one name a line, blank lines skipped.
fn groups_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

struct Row {
    name: String,
    url: String,
    groups: Vec<String>,
    description: String,
    edit_url: String,
}

/// What the create or edit form sends back after a refusal.
#[derive(Default)]
struct Form {
    name: String,
    url: String,
    groups: String,
    description: String,
    errors: FormErrors,
}

impl Form {
    fn of(app: &Application) -> Form {
        Form {
            name: app.name.clone(),
            url: app.url.clone(),
            groups: groups_text(&app.allowed_groups),
            description: app.description.clone(),
            errors: FormErrors::default(),
        }
    }

    fn sent(ctx: &Ctx<'_>) -> Form {
        Form {
            name: field(ctx, "name"),
            url: field(ctx, "url"),
            groups: field(ctx, "allowedGroups"),
            description: field(ctx, "description"),
            errors: FormErrors::default(),
        }
    }

    fn changes(&self) -> Changes {
        Changes {
            name: Some(self.name.clone()),
            url: Some(self.url.clone()),
            allowed_groups: Some(groups_of(&self.groups)),
            description: Some(self.description.clone()),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/applications.html")]
struct ListPage {
    l: Layout,
    apps: Vec<Row>,
    pager: Pager,
    prev_url: Option<String>,
    next_url: Option<String>,
    form: Form,
    /// The cookie domain in effect, if any.
    cookie_domain: Option<String>,
}

fn list_page(ctx: &Ctx<'_>, status: u16, state: ListState, form: Form) -> AppResult<Resp> {
    let (found, pager) = Pager::fetch(state.page, |offset, limit| {
        crate::db::applications::page(&ctx.conn, offset, limit)
    })?;
    let state = state.at(pager.page);
    let page = ListPage {
        l: Layout::new(ctx, "Applications", "applications")?,
        apps: found
            .into_iter()
            .map(|a| Row {
                edit_url: edit_url(a.id),
                name: a.name,
                url: a.url,
                groups: a.allowed_groups,
                description: a.description,
            })
            .collect(),
        prev_url: pager.prev().map(|p| state.page_url(p)),
        next_url: pager.next().map(|p| state.page_url(p)),
        pager,
        form,
        cookie_domain: crate::web::auth::cookie_domain(ctx.app, &ctx.conn)?,
    };
    render(status, &page)
}

pub fn list(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    list_page(ctx, 200, state, Form::default())
}

pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let state = list_state(ctx);
    let mut form = Form::sent(ctx);
    match applications::create(&mut ctx.conn, &form.changes(), ctx.now) {
        Ok(app) => {
            log::info!(
                "admin: application created name={:?} url={:?} by={:?}",
                app.name,
                app.url,
                ctx.caller()?.user.login
            );
            done(
                ctx,
                &format!(
                    "Application '{}' was created. Put it behind labgate with the configuration below.",
                    app.name
                ),
                &edit_url(app.id),
            )
        }
        Err(e) => {
            form.errors = FormErrors::from_error(e)?;
            list_page(ctx, 422, state, form)
        }
    }
}

/// One proxy's configuration as the page shows it.
struct Snippet {
    proxy: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "admin/application_edit.html")]
struct EditPage {
    l: Layout,
    app: Application,
    form: Form,
    snippets: Vec<Snippet>,
    delete_url: String,
    base_url: String,
    cookie_domain: Option<String>,
}

/// The three configurations for `app`, reaching labgate at `base_url`.
fn snippets_of(app: &Application, base_url: &str) -> Vec<Snippet> {
    let Ok(origin) = Origin::parse(&app.url) else {
        return Vec::new();
    };
    let target = Target {
        name: &app.name,
        origin: &origin,
        labgate: base_url,
        upstream: UPSTREAM_PLACEHOLDER,
        bind: None,
    };
    vec![
        Snippet {
            proxy: "nginx",
            text: snippets::nginx(&target),
        },
        Snippet {
            proxy: "Caddy",
            text: snippets::caddy(&target),
        },
        Snippet {
            proxy: "Traefik",
            text: snippets::traefik(&target),
        },
    ]
}

fn edit_page(ctx: &Ctx<'_>, status: u16, app: Application, form: Option<Form>) -> AppResult<Resp> {
    let base_url = ctx.base_url();
    let page = EditPage {
        l: Layout::new(ctx, format!("Application {}", app.name), "applications")?,
        form: form.unwrap_or_else(|| Form::of(&app)),
        snippets: snippets_of(&app, &base_url),
        delete_url: url_with("/admin/applications/delete", &[("id", &app.id.to_string())]),
        cookie_domain: crate::web::auth::cookie_domain(ctx.app, &ctx.conn)?,
        base_url,
        app,
    };
    render(status, &page)
}

fn find(conn: &rusqlite::Connection, id: &str) -> AppResult<Application> {
    applications::get(conn, applications::parse_id(id)?)
}

pub fn edit(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let app = find(&ctx.conn, &param(ctx, "id"))?;
    edit_page(ctx, 200, app, None)
}

pub fn update(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let app = find(&ctx.conn, &field(ctx, "id"))?;
    let mut form = Form::sent(ctx);
    match applications::update(&mut ctx.conn, app.id, &form.changes(), ctx.now) {
        Ok(after) => {
            log::info!(
                "admin: application changed name={:?} by={:?}",
                after.name,
                ctx.caller()?.user.login
            );
            done(
                ctx,
                &format!("Application '{}' was saved.", after.name),
                &edit_url(after.id),
            )
        }
        Err(e) => {
            form.errors = FormErrors::from_error(e)?;
            edit_page(ctx, 422, app, Some(form))
        }
    }
}

/// Deleting an application, confirmed first.
const DELETION: ConfirmThenAct<Application> = ConfirmThenAct {
    key: "id",
    list: list_state,
    find,
    confirmation: deletion,
};

fn deletion(_ctx: &Ctx<'_>, app: &Application) -> AppResult<Confirmation> {
    Ok(Confirmation {
        title: "Delete application",
        nav: "applications",
        name: app.id.to_string(),
        question: format!(
            "Are you sure you want to delete application '{}'?",
            app.name
        ),
        consequences: vec![format!(
            "labgate then refuses every request to {} (403), whoever asks, until the proxy \
             stops asking for it or the application is created again.",
            app.url
        )],
        action: "/admin/applications/delete",
        button: "Delete application",
        blocked: None,
    })
}

pub fn delete_confirm(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    DELETION.ask(ctx)
}

pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    DELETION.act(ctx, |ctx, id| {
        let app = applications::delete(&mut ctx.conn, applications::parse_id(id)?)?;
        log::info!(
            "admin: application deleted name={:?} by={:?}",
            app.name,
            ctx.caller()?.user.login
        );
        Ok(format!("Application '{}' was deleted.", app.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_groups_are_one_name_a_line() {
        assert_eq!(groups_of(" acme/ml \n\n a, b\r\n"), ["acme/ml", "a, b"]);
        assert_eq!(groups_text(&["x".into(), "y".into()]), "x\ny");
    }
}
