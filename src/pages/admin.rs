//! What the admin pages share: reading form fields, the state of a list page, the
//! membership-lock rule as pages see it, the confirmation of destructive actions (asked, then
//! done), and ending an action (flash + redirect).

use super::FormErrors;
use crate::accounts;
use crate::authz;
use crate::db::{permissions, users};
use crate::error::AppResult;
use crate::model::Permission;
use crate::web::request::Resp;
use crate::web::views::{render, url_with, Layout, Pager};
use crate::web::Ctx;
use askama::Template;
use rusqlite::Connection;

/// A form field as sent (empty when missing).
pub fn field(ctx: &Ctx<'_>, name: &str) -> String {
    ctx.req.form.get(name).unwrap_or("").to_string()
}

/// A parameter of a GET page or of a POST form (hidden fields carry the list state).
pub fn param(ctx: &Ctx<'_>, name: &str) -> String {
    ctx.req.param(name).unwrap_or("").trim().to_string()
}

/// A list page as the admin left it: search text, yes/no filters that are on, page. Kept in
/// the list's URL and in hidden fields of its forms, so that every action comes back to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListState {
    path: &'static str,
    pub q: String,
    /// Filters sent as `name=true`, among those the list knows (e.g. `deactivated`).
    on: Vec<&'static str>,
    pub page: i64,
}

impl ListState {
    /// The first page of the whole list.
    pub fn plain(path: &'static str) -> ListState {
        ListState {
            path,
            q: String::new(),
            on: Vec::new(),
            page: 1,
        }
    }

    /// Reads `q`, the known filters and `p` through `get`.
    pub fn parse(
        path: &'static str,
        filters: &[&'static str],
        get: &dyn Fn(&str) -> Option<String>,
    ) -> ListState {
        ListState {
            path,
            q: get("q").unwrap_or_default().trim().to_string(),
            on: filters
                .iter()
                .copied()
                .filter(|f| get(f).as_deref() == Some("true"))
                .collect(),
            page: Pager::page_param(get("p").as_deref()),
        }
    }

    /// The state sent by a GET list page or a POST form of it.
    pub fn read(ctx: &Ctx<'_>, path: &'static str, filters: &[&'static str]) -> ListState {
        ListState::parse(path, filters, &|name| {
            ctx.req.param(name).map(str::to_string)
        })
    }

    pub fn is_on(&self, filter: &str) -> bool {
        self.on.contains(&filter)
    }

    pub fn at(self, page: i64) -> ListState {
        ListState { page, ..self }
    }

    /// The parameters that differ from the plain list (for links and hidden fields).
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.q.is_empty() {
            out.push(("q", self.q.clone()));
        }
        out.extend(self.on.iter().map(|f| (*f, "true".to_string())));
        if self.page > 1 {
            out.push(("p", self.page.to_string()));
        }
        out
    }

    /// A link to `path` with `extra` parameters, carrying this state.
    pub fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let params = self.params();
        let mut pairs: Vec<(&str, &str)> = extra.to_vec();
        pairs.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        url_with(path, &pairs)
    }

    /// The list itself.
    pub fn url(&self) -> String {
        self.link(self.path, &[])
    }

    pub fn page_url(&self, page: i64) -> String {
        self.clone().at(page).url()
    }
}

/// Why this user's group memberships cannot be edited by hand, if they cannot (GitLab users
/// while GitLab group synchronization is on). The one place pages ask; templates show the
/// membership controls disabled with this reason.
pub fn memberships_locked(ctx: &Ctx<'_>, user: &users::User) -> AppResult<Option<&'static str>> {
    accounts::memberships_locked(&ctx.conn, user)
}

/// Whether the signed-in caller still holds `admin` (an action may just have removed it).
fn caller_still_admin(ctx: &Ctx<'_>) -> AppResult<bool> {
    let id = ctx.caller()?.user.id;
    let direct = permissions::of_user(&ctx.conn, id)?;
    let via_groups = permissions::of_user_groups(&ctx.conn, id)?;
    Ok(authz::effective(&direct, &via_groups).contains(&Permission::Admin))
}

/// Ends a successful action: the confirmation shown on the next page, then back to `back` —
/// or home when callers just removed their own admin permission (the admin pages would now
/// refuse them).
pub fn done(ctx: &Ctx<'_>, message: &str, back: &str) -> AppResult<Resp> {
    if caller_still_admin(ctx)? {
        ctx.flash(message)?;
        return Ok(Resp::redirect(back));
    }
    ctx.flash(&format!(
        "{message} You no longer hold the permission 'Administer System'."
    ))?;
    Ok(Resp::redirect("/"))
}

/// "Are you sure…" before a destructive action: GET shows it, the form POSTs the action.
#[derive(Template)]
#[template(path = "admin/confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    pub question: String,
    /// What will happen, one line each.
    pub consequences: Vec<String>,
    /// Where the form posts.
    pub action: &'static str,
    /// Hidden fields of the form.
    pub fields: Vec<(&'static str, String)>,
    pub button: &'static str,
    pub cancel_url: String,
    /// Why the action cannot be done at all (then no form is shown).
    pub blocked: Option<String>,
    /// Errors of a refused attempt.
    pub errors: FormErrors,
}

impl ConfirmPage {
    pub fn respond(&self, status: u16) -> AppResult<Resp> {
        render(status, self)
    }
}

/// A destructive action on one row of an admin list, asked first: `GET` shows the
/// confirmation of the row named by the parameter `key`, whose form `POST`s the action. A
/// refused action shows the confirmation again with why; a done one goes back to the list as
/// the admin left it.
pub struct ConfirmThenAct<T> {
    /// The parameter naming the row (`login`, `name`), sent back by the form.
    pub key: &'static str,
    /// The list the action starts from and comes back to.
    pub list: fn(&Ctx<'_>) -> ListState,
    /// The row of that name (a missing one is refused as not found).
    pub find: fn(&Connection, &str) -> AppResult<T>,
    /// What the confirmation says about a row.
    pub confirmation: fn(&Ctx<'_>, &T) -> AppResult<Confirmation>,
}

/// What the confirmation of a [`ConfirmThenAct`] says.
pub struct Confirmation {
    pub title: &'static str,
    /// The navigation entry shown as current.
    pub nav: &'static str,
    /// The row's name as the form sends it back.
    pub name: String,
    pub question: String,
    /// What will happen, one line each.
    pub consequences: Vec<String>,
    /// Where the form posts.
    pub action: &'static str,
    pub button: &'static str,
    /// Why the action cannot be done at all (then no form is shown).
    pub blocked: Option<String>,
}

impl<T> ConfirmThenAct<T> {
    /// `GET`: the confirmation.
    pub fn ask(&self, ctx: &Ctx<'_>) -> AppResult<Resp> {
        let state = (self.list)(ctx);
        let row = (self.find)(&ctx.conn, &param(ctx, self.key))?;
        self.page(ctx, &row, &state, FormErrors::default())?
            .respond(200)
    }

    /// `POST`: `act` on the row named by the form; it returns the message shown on the list.
    pub fn act(
        &self,
        ctx: &mut Ctx<'_>,
        act: impl FnOnce(&mut Ctx<'_>, &str) -> AppResult<String>,
    ) -> AppResult<Resp> {
        let state = (self.list)(ctx);
        let name = field(ctx, self.key);
        match act(ctx, &name) {
            Ok(message) => done(ctx, &message, &state.url()),
            Err(e) => {
                let errors = FormErrors::from_error(e)?;
                let row = (self.find)(&ctx.conn, &name)?;
                self.page(ctx, &row, &state, errors)?.respond(422)
            }
        }
    }

    fn page(
        &self,
        ctx: &Ctx<'_>,
        row: &T,
        state: &ListState,
        errors: FormErrors,
    ) -> AppResult<ConfirmPage> {
        let said = (self.confirmation)(ctx, row)?;
        let mut fields = vec![(self.key, said.name)];
        fields.extend(state.params());
        Ok(ConfirmPage {
            l: Layout::new(ctx, said.title, said.nav)?,
            question: said.question,
            consequences: said.consequences,
            action: said.action,
            fields,
            button: said.button,
            cancel_url: state.url(),
            blocked: said.blocked,
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, &str)]) -> ListState {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListState::parse("/admin/users", &["deactivated"], &|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn list_state_round_trips_through_its_url() {
        let s = state(&[("q", " ann & bob "), ("deactivated", "true"), ("p", "3")]);
        assert_eq!(s.q, "ann & bob");
        assert!(s.is_on("deactivated"));
        assert_eq!(
            s.url(),
            "/admin/users?q=ann%20%26%20bob&deactivated=true&p=3"
        );
        assert_eq!(
            s.page_url(1),
            "/admin/users?q=ann%20%26%20bob&deactivated=true"
        );
    }

    #[test]
    fn unknown_or_false_filters_and_bad_pages_give_the_plain_list() {
        let s = state(&[("deactivated", "false"), ("other", "true"), ("p", "0")]);
        assert_eq!(s, ListState::plain("/admin/users"));
        assert_eq!(s.url(), "/admin/users");
        assert!(s.params().is_empty());
    }

    #[test]
    fn links_carry_their_own_parameters_first_then_the_state() {
        let s = state(&[("q", "x"), ("p", "2")]);
        assert_eq!(
            s.link("/admin/users/deactivate", &[("login", "ann")]),
            "/admin/users/deactivate?login=ann&q=x&p=2"
        );
    }
}
