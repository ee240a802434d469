//! The GitLab forms of `/admin/settings?category=authentication`: configuring GitLab, the
//! actions of its card (edit, enable/disable, delete), "Test connection", "Revalidate now" and
//! the Just-in-Time provisioning form.
//! Every change goes through `gitlab_config`, the same `sonar.auth.gitlab.*` settings as the
//! API, effective on the next request. The section itself is part of the settings page, built
//! by `admin_gitlab_section` and rendered by `admin_settings`; a refused or unfinished form
//! shows that page again with what was sent.

use super::admin::{done, field, ConfirmPage};
use super::admin_gitlab_section::{open_warning, rows_of, CreateForm, Provisioning, Sent};
use super::admin_settings;
use super::FormErrors;
use crate::error::{AppError, AppResult};
use crate::gitlab_check;
use crate::gitlab_config::{self, GitlabForm};
use crate::gitlab_provisioning;
use crate::provisioning;
use crate::settings;
use crate::web::request::Resp;
use crate::web::views::{render, Layout};
use crate::web::{Ctx, POOL_WAIT};
use askama::Template;

/// Where every GitLab action comes back to.
pub const BACK: &str = "/admin/settings?category=authentication";

fn caller_login(ctx: &Ctx<'_>) -> AppResult<String> {
    Ok(ctx.caller()?.user.login.clone())
}

/// `POST /admin/settings/gitlab/create`: application ID, URL, secret.
pub fn create(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let form = GitlabForm {
        application_id: Some(field(ctx, "applicationId")),
        url: Some(field(ctx, "url")),
        secret: Some(field(ctx, "secret")),
        ..GitlabForm::default()
    };
    let by = ctx.by();
    match gitlab_config::create_with(&mut ctx.conn, &by, &form) {
        Ok(_) => {
            log::info!(
                "admin: gitlab configuration created by={:?}",
                caller_login(ctx)?
            );
            done(
                ctx,
                "The GitLab configuration was created. Check the provisioning settings, then enable it.",
                BACK,
            )
        }
        Err(e) => {
            let sent = CreateForm {
                application_id: form.application_id.unwrap_or_default(),
                url: form.url.unwrap_or_default(),
                errors: FormErrors::from_error(e)?,
            };
            admin_settings::authentication(ctx, 422, Sent::Create(sent))
        }
    }
}

#[derive(Template)]
#[template(path = "admin/gitlab_edit.html")]
struct EditPage {
    l: Layout,
    application_id: String,
    url: String,
    secret_set: bool,
    synchronize_groups: bool,
    errors: FormErrors,
}

fn edit_page(
    ctx: &Ctx<'_>,
    status: u16,
    form: Option<(GitlabForm, FormErrors)>,
) -> AppResult<Resp> {
    let config = gitlab_config::load(&ctx.conn)?;
    let (application_id, url, synchronize_groups, errors) = match form {
        Some((f, errors)) => (
            f.application_id.unwrap_or_default(),
            f.url.unwrap_or_default(),
            f.synchronize_groups.unwrap_or_default(),
            errors,
        ),
        None => (
            config.application_id.clone().unwrap_or_default(),
            config.url.clone(),
            config.synchronize_groups,
            FormErrors::default(),
        ),
    };
    let page = EditPage {
        l: Layout::new(ctx, "Edit the GitLab configuration", "settings")?,
        application_id,
        url,
        secret_set: config.secret.is_some(),
        synchronize_groups,
        errors,
    };
    render(status, &page)
}

fn require_configuration(ctx: &Ctx<'_>) -> AppResult<()> {
    if gitlab_config::exists(&ctx.conn)? {
        Ok(())
    } else {
        Err(AppError::not_found(
            "No GitLab configuration: configure GitLab on the Authentication settings first",
        ))
    }
}

/// `GET /admin/settings/gitlab/edit`.
pub fn edit(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    require_configuration(ctx)?;
    edit_page(ctx, 200, None)
}

/// `POST /admin/settings/gitlab/edit`: application ID, URL, secret (empty keeps it; a new URL
/// needs it), "Synchronize user groups".
pub fn update(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let form = GitlabForm {
        application_id: Some(field(ctx, "applicationId")),
        url: Some(field(ctx, "url")),
        secret: Some(field(ctx, "secret")),
        synchronize_groups: Some(field(ctx, "groupsSync") == "true"),
        ..GitlabForm::default()
    };
    let by = ctx.by();
    match gitlab_config::save(&mut ctx.conn, &by, &form) {
        Ok(_) => {
            log::info!(
                "admin: gitlab configuration changed by={:?}",
                caller_login(ctx)?
            );
            done(ctx, "The GitLab configuration was saved.", BACK)
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            edit_page(ctx, 422, Some((form, errors)))
        }
    }
}

/// `POST /admin/settings/gitlab/enabled` with `enabled=true|false`.
pub fn set_enabled(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let enabled = match field(ctx, "enabled").as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(AppError::invalid(
                "enabled",
                "'enabled' must be true or false",
            ))
        }
    };
    let form = GitlabForm {
        enabled: Some(enabled),
        ..GitlabForm::default()
    };
    let by = ctx.by();
    match gitlab_config::save(&mut ctx.conn, &by, &form) {
        Ok(config) => {
            log::info!(
                "admin: gitlab sign-in {} by={:?}",
                if enabled { "enabled" } else { "disabled" },
                caller_login(ctx)?
            );
            let message = match enabled {
                false => "Sign-in with GitLab is disabled.".to_string(),
                true if config.allow_users_to_sign_up && config.allowed_groups.is_empty() => {
                    format!(
                    "Sign-in with GitLab is enabled. Anyone with an account on {} can sign in: \
                     restrict it with allowed groups.",
                    config.url
                )
                }
                true => "Sign-in with GitLab is enabled.".to_string(),
            };
            done(ctx, &message, BACK)
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            admin_settings::authentication(ctx, 422, Sent::Card(errors))
        }
    }
}

fn delete_page(ctx: &Ctx<'_>) -> AppResult<ConfirmPage> {
    let blocked = (!gitlab_config::exists(&ctx.conn)?)
        .then(|| "There is no GitLab configuration to delete.".to_string());
    Ok(ConfirmPage {
        l: Layout::new(ctx, "Delete the GitLab configuration", "settings")?,
        question: "Delete the GitLab configuration?".into(),
        consequences: vec![
            "Sign-in with GitLab stops at once.".into(),
            "The application ID, the secret, the URL and the provisioning settings are forgotten."
                .into(),
            "Users created from GitLab are kept; they cannot sign in with GitLab until it is \
             configured again."
                .into(),
        ],
        action: "/admin/settings/gitlab/delete",
        fields: Vec::new(),
        button: "Delete",
        cancel_url: BACK.into(),
        blocked,
        errors: FormErrors::default(),
    })
}

/// `GET /admin/settings/gitlab/delete`: the confirmation.
pub fn delete_confirm(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    delete_page(ctx)?.respond(200)
}

/// `POST /admin/settings/gitlab/delete`: forgets every GitLab setting.
pub fn delete(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let by = ctx.by();
    match gitlab_config::delete(&mut ctx.conn, &by) {
        Ok(()) => {
            log::info!(
                "admin: gitlab configuration deleted by={:?}",
                caller_login(ctx)?
            );
            done(ctx, "The GitLab configuration was deleted.", BACK)
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            let page = ConfirmPage {
                errors,
                ..delete_page(ctx)?
            };
            page.respond(422)
        }
    }
}

/// `POST /admin/settings/gitlab/check`: "Test connection" checks the stored configuration
/// against GitLab and shows the tab again with each check's result. Nothing is saved, so the
/// page is answered at once rather than through a redirect.
pub fn check(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let by = caller_login(ctx)?;
    let report = gitlab_check::run(&mut ctx.conn, &ctx.app.gitlab_asking(&by), POOL_WAIT)?;
    admin_settings::authentication(ctx, 200, Sent::Checked(report))
}

/// `POST /admin/settings/gitlab/revalidate`: "Revalidate now" runs the revalidation of GitLab
/// users (without a connection held while GitLab answers) and comes back to the tab, which
/// lists the run; the confirmation sums it up.
pub fn revalidate(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let message = match ctx.revalidate_now() {
        Ok(run) if run.error.is_none() => format!(
            "Revalidation done: {} GitLab users checked, {} updated, {} cut off.",
            run.users_checked, run.users_updated, run.users_cut_off
        ),
        Ok(_) => {
            "The revalidation failed: nothing changed for anyone (the reason is below).".to_string()
        }
        Err(e @ (AppError::Rule(_) | AppError::Conflict(_))) => {
            format!("Not revalidated: {}", e.public_message())
        }
        Err(e) => return Err(e),
    };
    done(ctx, &message, BACK)
}

/// `POST /admin/settings/gitlab/synchronize`: "Synchronize now", or with `force=1` "Apply
/// anyway" (the deactivations of the held run). The run goes on in the background; the tab
/// shows its progress.
pub fn synchronize(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let force = field(ctx, "force") == "1";
    let by = caller_login(ctx)?;
    match gitlab_provisioning::runner::start(&ctx.conn, &ctx.app.provisioning, force, &by) {
        Ok(()) => done(
            ctx,
            if force {
                "The held synchronization is being applied: reload this page to see it finish."
            } else {
                "A synchronization with GitLab started: reload this page to see it finish."
            },
            BACK,
        ),
        Err(e) => {
            let status = if e.status() == 409 { 409 } else { 422 };
            let errors = FormErrors::from_error(e)?;
            admin_settings::authentication(ctx, status, Sent::Card(errors))
        }
    }
}

/// Which button submitted the provisioning form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submit {
    /// "Add": one more empty box.
    Add,
    /// "Remove" on the box at this index.
    Remove(usize),
    /// "Save", or "Save anyway" (`confirm_open=1`) after the open sign-up warning.
    Save { confirmed: bool },
}

fn submit_of(remove: Option<&str>, action: &str, confirm_open: &str) -> Submit {
    if let Some(index) = remove.and_then(|r| r.trim().parse::<usize>().ok()) {
        return Submit::Remove(index);
    }
    match action {
        "add" => Submit::Add,
        _ => Submit::Save {
            confirmed: confirm_open == "1",
        },
    }
}

/// The allowed groups after an edit: the boxes as sent (the last one is the empty "new" box),
/// trimmed, without the removed one and without blanks. "Add" keeps what was typed in the new
/// box as a group of its own; the form always ends with a fresh empty box.
fn edit_groups(sent: &[&str], remove: Option<usize>) -> Vec<String> {
    sent.iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != remove)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Each group's problem, if it is not a valid root group slug.
fn group_errors(groups: &[String]) -> Vec<Option<String>> {
    groups
        .iter()
        .map(|g| {
            provisioning::parse_allowed_group(g)
                .err()
                .map(|e| e.message)
        })
        .collect()
}

/// Sign-up on with no allowed group lets anyone in: saved only once confirmed.
fn needs_open_confirmation(sign_up: bool, groups: &[String], confirmed: bool) -> bool {
    sign_up && groups.is_empty() && !confirmed
}

/// `POST /admin/settings/gitlab/provisioning`: "Allow users to sign up", the allowed groups
/// (`allowedGroups`, repeated), "Synchronize user groups"; `remove=<index>` and `action=add`
/// only edit the list on the page.
pub fn provisioning(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    require_configuration(ctx)?;
    let auto = field(ctx, "provisioningType") == gitlab_config::AUTO_PROVISIONING;
    let token = field(ctx, "provisioningToken");
    let sign_up = field(ctx, "allowUsersToSignUp") == "true";
    let synchronize_groups = field(ctx, "groupsSync") == "true";
    let submit = submit_of(
        ctx.req.form.get("remove"),
        &field(ctx, "action"),
        &field(ctx, "confirm_open"),
    );
    let remove = match submit {
        Submit::Remove(i) => Some(i),
        _ => None,
    };
    let groups = edit_groups(&ctx.req.form.all("allowedGroups"), remove);
    let mut form = Provisioning {
        auto,
        token_set: false,
        token_unreadable: false,
        sign_up,
        synchronize_groups,
        rows: Vec::new(),
        errors: FormErrors::default(),
        open_warning: None,
        unsaved: true,
        open_now: None,
        sync_idle: None,
    };
    let Submit::Save { confirmed } = submit else {
        form.rows = rows_of(groups, Vec::new());
        return admin_settings::authentication(ctx, 200, Sent::Provisioning(form));
    };
    let errors = group_errors(&groups);
    if errors.iter().any(Option::is_some) {
        form.rows = rows_of(groups, errors);
        form.errors = FormErrors(vec![crate::model::FieldError::new(
            "allowedGroups",
            "Some allowed groups are not GitLab root group slugs: correct them below.",
        )]);
        return admin_settings::authentication(ctx, 422, Sent::Provisioning(form));
    }
    let stored = gitlab_config::load(&ctx.conn)?;
    // The save checks this rule again in its transaction; checked here first so that the open
    // sign-up warning below never asks to confirm a change that would then be refused.
    let stored_sync = (stored.synchronize_groups, &stored.allowed_groups[..]);
    if provisioning::sync_change_refused(stored_sync, (synchronize_groups, &groups)) {
        form.rows = rows_of(groups, Vec::new());
        form.errors = FormErrors(vec![crate::model::FieldError::new(
            "groupsSync",
            settings::SYNC_NEEDS_ALLOWED_GROUP,
        )]);
        return admin_settings::authentication(ctx, 422, Sent::Provisioning(form));
    }
    if !auto && needs_open_confirmation(sign_up, &groups, confirmed) {
        form.rows = rows_of(groups, Vec::new());
        form.open_warning = Some(open_warning(&stored.url));
        return admin_settings::authentication(ctx, 422, Sent::Provisioning(form));
    }
    let change = GitlabForm {
        allow_users_to_sign_up: Some(sign_up),
        allowed_groups: Some(groups.clone()),
        synchronize_groups: Some(synchronize_groups),
        auto_provisioning: Some(auto),
        provisioning_token: Some(token),
        ..GitlabForm::default()
    };
    let was_auto = gitlab_config::load(&ctx.conn)?.auto_provisioning;
    let by = ctx.by();
    match gitlab_config::save(&mut ctx.conn, &by, &change) {
        Ok(config) => {
            log::info!(
                "admin: gitlab provisioning changed type={} sign_up={sign_up} allowed_groups={:?} groups_sync={synchronize_groups} token_sent={} by={:?}",
                config.provisioning_type(),
                config.allowed_groups,
                change.provisioning_token.as_deref().is_some_and(|t| !t.trim().is_empty()),
                caller_login(ctx)?
            );
            let message = if auto && !was_auto {
                "The provisioning settings were saved. Automatic provisioning is on: the first \
                 synchronization with GitLab starts now."
            } else {
                "The provisioning settings were saved."
            };
            done(ctx, message, BACK)
        }
        Err(e) => {
            form.rows = rows_of(groups, Vec::new());
            form.errors = FormErrors::from_error(e)?;
            admin_settings::authentication(ctx, 422, Sent::Provisioning(form))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_button_pressed_decides_the_action() {
        assert_eq!(submit_of(Some("2"), "", ""), Submit::Remove(2));
        assert_eq!(submit_of(Some("x"), "add", ""), Submit::Add);
        assert_eq!(submit_of(None, "add", "1"), Submit::Add);
        assert_eq!(
            submit_of(None, "save", ""),
            Submit::Save { confirmed: false }
        );
        assert_eq!(submit_of(None, "", "1"), Submit::Save { confirmed: true });
    }

    #[test]
    fn group_boxes_are_trimmed_and_blanks_dropped() {
        assert_eq!(
            edit_groups(&[" acme ", "", "beta", " "], None),
            vec!["acme", "beta"]
        );
        assert!(edit_groups(&[], None).is_empty());
    }

    #[test]
    fn remove_drops_the_box_at_its_form_index() {
        let sent = ["acme", "", "beta", "gamma", ""];
        assert_eq!(edit_groups(&sent, Some(2)), vec!["acme", "gamma"]);
        assert_eq!(edit_groups(&sent, Some(0)), vec!["beta", "gamma"]);
        assert_eq!(edit_groups(&sent, Some(9)), vec!["acme", "beta", "gamma"]);
    }

    #[test]
    fn add_keeps_what_was_typed_in_the_new_box() {
        assert_eq!(edit_groups(&["acme", "beta"], None), vec!["acme", "beta"]);
        let rows = rows_of(edit_groups(&["acme", "beta"], None), Vec::new());
        let indexes: Vec<usize> = rows.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![0, 1]);
    }

    #[test]
    fn only_root_group_slugs_pass() {
        let groups = vec![
            "acme".to_string(),
            "acme/sub".to_string(),
            "a b".to_string(),
        ];
        let errors = group_errors(&groups);
        assert!(errors[0].is_none());
        assert!(errors[1]
            .as_deref()
            .is_some_and(|m| m.contains("not a root group")));
        assert!(errors[2].is_some());
    }

    #[test]
    fn open_sign_up_needs_a_confirmation() {
        assert!(needs_open_confirmation(true, &[], false));
        assert!(!needs_open_confirmation(true, &[], true));
        assert!(!needs_open_confirmation(false, &[], false));
        assert!(!needs_open_confirmation(true, &["acme".to_string()], false));
    }
}
