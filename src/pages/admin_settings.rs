//! The settings page, `/admin/settings?category=general|authentication|applications`, every tab of it
//! rendered here: the run-time settings of each category, each with its current value, a save
//! form and "reset to default". Values are validated by the settings registry, the same path as
//! `api/settings/*`. The authentication category also shows the GitLab section (the
//! configuration's card, what to register in GitLab, the provisioning form), built here too;
//! its forms are handled by `admin_gitlab`, which comes back to this page.

use super::admin::{done, field};
use super::FormErrors;
use crate::error::{AppError, AppResult};
use crate::gitlab_config::{self, GitlabConfig};
use crate::provisioning;
use crate::settings::{self, Definition, Kind};
use crate::web::request::Resp;
use crate::web::views::{render, url_with, Layout};
use crate::web::Ctx;
use askama::Template;

/// A tab of the settings page and the settings it shows.
struct Category {
    id: &'static str,
    label: &'static str,
    keys: &'static [&'static str],
}

const CATEGORIES: &[Category] = &[
    Category {
        id: "general",
        label: "General",
        keys: &[settings::SERVER_BASE_URL],
    },
    Category {
        id: "authentication",
        label: "Authentication",
        keys: &[settings::SESSION_TIMEOUT, settings::TOKEN_MAX_LIFETIME],
    },
    Category {
        id: "applications",
        label: "Applications",
        keys: &[settings::GATE_COOKIE_DOMAIN],
    },
];

/// The category asked for; none means the first one.
fn category(id: Option<&str>) -> AppResult<&'static Category> {
    match id.map(str::trim).filter(|id| !id.is_empty()) {
        None => Ok(&CATEGORIES[0]),
        Some(id) => CATEGORIES
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| AppError::not_found(format!("No settings category '{id}'"))),
    }
}

/// The category whose page edits this key (GitLab keys have their own section).
fn category_of_key(key: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.keys.contains(&key))
}

fn category_url(category: &Category) -> String {
    url_with("/admin/settings", &[("category", category.id)])
}

/// Why a setting cannot be changed on this page, if it cannot.
fn fixed_by_config(ctx: &Ctx<'_>, key: &str) -> Option<String> {
    let url = ctx.app.config.base_url.as_ref()?;
    (key == settings::SERVER_BASE_URL).then(|| {
        format!(
            "Set to {url} by --base-url (LABGATE_BASE_URL) when labgate was started. \
             Change it there and restart labgate to use another URL."
        )
    })
}

/// The HTML input of a setting: `type`, `min`, `max` (a choice is a `select` instead).
fn input_of(kind: Kind) -> (&'static str, String, String) {
    match kind {
        Kind::Url => ("url", String::new(), String::new()),
        Kind::Integer { min, max } => ("number", min.to_string(), max.to_string()),
        Kind::Bool
        | Kind::Text { .. }
        | Kind::GroupSlugs
        | Kind::Choice { .. }
        | Kind::CookieDomain => ("text", String::new(), String::new()),
    }
}

/// An option of a setting chosen from a list.
struct Choice {
    value: &'static str,
    selected: bool,
}

/// The options of a setting chosen from a list, `value` selected; empty for other settings.
fn choices_of(kind: Kind, value: &str) -> Vec<Choice> {
    match kind {
        Kind::Choice { values } => values
            .iter()
            .map(|v| Choice {
                value: v,
                selected: *v == value,
            })
            .collect(),
        _ => Vec::new(),
    }
}

struct Tab {
    label: &'static str,
    url: String,
    current: bool,
}

struct SettingView {
    key: &'static str,
    name: &'static str,
    description: &'static str,
    /// What the value field shows.
    value: String,
    /// The value in effect, in words.
    current: String,
    /// Nothing stored: the default applies.
    is_default: bool,
    /// Why it is read-only here, when it is.
    fixed: Option<String>,
    input_type: &'static str,
    min: String,
    max: String,
    /// The options, for a setting chosen from a list (shown as a `select`).
    choices: Vec<Choice>,
    errors: FormErrors,
}

fn setting_view(
    ctx: &Ctx<'_>,
    def: &'static Definition,
    sent: Option<(String, FormErrors)>,
) -> AppResult<SettingView> {
    let stored = crate::db::settings::get(&ctx.conn, def.key)?;
    let fixed = fixed_by_config(ctx, def.key);
    let current = match (&fixed, &stored, def.default) {
        (Some(_), _, _) => ctx.base_url(),
        (None, Some(v), _) => v.clone(),
        (None, None, Some(d)) => format!("{d} (default)"),
        (None, None, None) if def.key == settings::SERVER_BASE_URL => {
            format!("not set: labgate uses {}", ctx.base_url())
        }
        (None, None, None) => "not set".to_string(),
    };
    let (value, errors) = match sent {
        Some((value, errors)) => (value, errors),
        None if fixed.is_some() => (ctx.base_url(), FormErrors::default()),
        None => (
            stored
                .clone()
                .or_else(|| def.default.map(str::to_string))
                .unwrap_or_default(),
            FormErrors::default(),
        ),
    };
    let (input_type, min, max) = input_of(def.kind);
    let choices = choices_of(def.kind, &value);
    Ok(SettingView {
        key: def.key,
        name: def.name,
        description: def.description,
        value,
        current,
        is_default: stored.is_none() && fixed.is_none(),
        fixed,
        input_type,
        min,
        max,
        choices,
        errors,
    })
}

#[derive(Template)]
#[template(path = "admin/settings.html")]
struct Page {
    l: Layout,
    tabs: Vec<Tab>,
    settings: Vec<SettingView>,
    /// The GitLab section, on the authentication category.
    gitlab: Option<Section>,
}

/// The page of a category; `failed` is a refused change: key, value sent, errors; `gitlab` is
/// what a GitLab form sent back.
fn page(
    ctx: &Ctx<'_>,
    status: u16,
    category: &'static Category,
    failed: Option<(&str, String, FormErrors)>,
    gitlab: Sent,
) -> AppResult<Resp> {
    let (failed_key, mut sent) = match failed {
        Some((key, value, errors)) => (Some(key), Some((value, errors))),
        None => (None, None),
    };
    let mut views = Vec::with_capacity(category.keys.len());
    for key in category.keys {
        let def = settings::known(key)?;
        let mine = if failed_key == Some(*key) {
            sent.take()
        } else {
            None
        };
        views.push(setting_view(ctx, def, mine)?);
    }
    let page = Page {
        l: Layout::new(ctx, "Settings", "settings")?,
        tabs: CATEGORIES
            .iter()
            .map(|c| Tab {
                label: c.label,
                url: category_url(c),
                current: c.id == category.id,
            })
            .collect(),
        settings: views,
        gitlab: match category.id {
            "authentication" => Some(section(ctx, gitlab)?),
            _ => None,
        },
    };
    render(status, &page)
}

pub fn show(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let category = category(ctx.req.query.get("category"))?;
    page(ctx, 200, category, None, Default::default())
}

/// The authentication category with what a GitLab form sent back (refused or unfinished).
pub(super) fn authentication(ctx: &Ctx<'_>, status: u16, gitlab: Sent) -> AppResult<Resp> {
    page(ctx, status, category(Some("authentication"))?, None, gitlab)
}

/// Saves a setting (`key`, `value`), or resets it (`action=reset`, or an empty value).
pub fn save(ctx: &mut Ctx<'_>) -> AppResult<Resp> {
    let key = field(ctx, "key");
    let Some(category) = category_of_key(&key) else {
        return Err(AppError::invalid(
            "key",
            format!("Setting '{key}' cannot be changed on this page"),
        ));
    };
    let def = settings::known(&key)?;
    let value = field(ctx, "value");
    let reset = field(ctx, "action") == "reset" || value.trim().is_empty();
    let fixed = ctx.app.config.base_url.clone();
    let result = match fixed_by_config(ctx, def.key) {
        Some(reason) => Err(AppError::rule(reason)),
        None if reset => settings::reset_all_fixed(&mut ctx.conn, &[def.key], fixed.as_deref()),
        None => settings::set_values_fixed(&mut ctx.conn, def.key, &[&value], fixed.as_deref()),
    };
    match result {
        Ok(()) => {
            log::info!(
                "admin: setting {} key={:?} by={:?}",
                if reset { "reset" } else { "changed" },
                def.key,
                ctx.caller()?.user.login
            );
            let message = if reset {
                format!("{} was reset to its default.", def.name)
            } else {
                format!("{} was saved.", def.name)
            };
            done(ctx, &message, &category_url(category))
        }
        Err(e) => {
            let errors = FormErrors::from_error(e)?;
            page(
                ctx,
                422,
                category,
                Some((def.key, value, errors)),
                Default::default(),
            )
        }
    }
}

/// The "Configure GitLab" form shown while no configuration exists.
pub struct CreateForm {
    pub application_id: String,
    pub url: String,
    pub errors: FormErrors,
}

impl Default for CreateForm {
    fn default() -> Self {
        CreateForm {
            application_id: String::new(),
            url: "https://gitlab.com".into(),
            errors: FormErrors::default(),
        }
    }
}

/// The configuration as its card shows it: never the secret, only whether it is set.
pub struct Card {
    pub application_id: Option<String>,
    pub url: String,
    /// Plain `http://`: traffic to GitLab is not encrypted.
    pub plain_http: bool,
    pub enabled: bool,
    /// Enabled but missing the application ID or the secret: not offered at sign-in.
    pub enabled_unusable: bool,
    pub secret_set: bool,
    pub synchronize_groups: bool,
    /// A refused enable/disable.
    pub errors: FormErrors,
}

/// What to register in GitLab: the redirect URI (when it can be derived) and the scope.
pub struct Register {
    pub redirect_uri: Option<String>,
    /// Where the base URL of the redirect URI comes from.
    pub base_url_note: String,
    /// The address labgate listens on when it is every interface (no URI can be derived).
    pub unspecified_bind: Option<String>,
    pub scope: &'static str,
    pub scope_reason: &'static str,
}

/// One "Allowed groups" box with its Remove button; `index` is its place in the form.
pub struct GroupRow {
    pub index: usize,
    pub value: String,
    pub error: Option<String>,
}

/// The Just-in-Time provisioning form, as stored or as the admin is editing it.
pub struct Provisioning {
    pub sign_up: bool,
    pub synchronize_groups: bool,
    pub rows: Vec<GroupRow>,
    pub errors: FormErrors,
    /// Shown (with "Save anyway") when sign-up is on and no allowed group restricts it.
    pub open_warning: Option<String>,
    /// The form shows edits (Add/Remove) that are not saved yet.
    pub unsaved: bool,
    /// The stored configuration lets anyone with a GitLab account sign in right now.
    pub open_now: Option<String>,
    /// The stored configuration has synchronization on and no allowed group, so it
    /// synchronizes nothing: why, and how to fix it.
    pub sync_idle: Option<&'static str>,
}

/// The whole GitLab section, rendered by `templates/admin/gitlab_section.html`.
pub struct Section {
    pub register: Register,
    /// No configuration yet: the form to create one.
    pub create: Option<CreateForm>,
    pub card: Option<Card>,
    pub provisioning: Option<Provisioning>,
}

/// What a refused or unfinished GitLab form sends back into the section.
#[derive(Default)]
pub enum Sent {
    #[default]
    Nothing,
    Create(CreateForm),
    Card(FormErrors),
    Provisioning(Provisioning),
}

/// Shown while synchronization is on without an allowed group (a configuration stored before
/// synchronization needed one): it then does nothing, and the admin should know why.
pub const SYNC_IDLE: &str = "Synchronize user groups is on but no allowed group is set: nothing \
    is synchronized. Add an allowed group to synchronize the GitLab groups under it (only those \
    are synchronized), or turn Synchronize user groups off. Until then, the memberships of GitLab \
    users are left as they are and can be edited by hand.";

pub(super) fn open_warning(url: &str) -> String {
    format!(
        "Users can sign up and no allowed group is set: anyone with an account on {url} \
         could sign in to labgate."
    )
}

fn register(ctx: &Ctx<'_>, config: &GitlabConfig) -> AppResult<Register> {
    let from_setting = crate::db::settings::get(&ctx.conn, settings::SERVER_BASE_URL)?;
    let bound = ctx.app.bound;
    let (redirect_uri, base_url_note, unspecified_bind) = if ctx.app.config.base_url.is_some() {
        let note = "From --base-url (LABGATE_BASE_URL), given when labgate was started.";
        (Some(ctx.base_url()), note.to_string(), None)
    } else if from_setting.is_some() {
        let note = "From the Server base URL setting (General tab).";
        (Some(ctx.base_url()), note.to_string(), None)
    } else if bound.ip().is_unspecified() {
        (None, String::new(), Some(bound.to_string()))
    } else {
        let note = format!(
            "Derived from the address labgate listens on ({bound}). If browsers reach labgate \
             at another URL, set --base-url or the Server base URL setting (General tab)."
        );
        (Some(ctx.base_url()), note, None)
    };
    let scope = config.scope();
    let scope_reason = if provisioning::groups_needed(
        config.synchronize_groups,
        &config.allowed_groups,
    ) {
        "read_api: labgate reads the user's GitLab groups (allowed groups or group synchronization are set)."
    } else {
        "read_user: neither allowed groups nor group synchronization need the user's groups. \
         Setting either later needs read_api instead."
    };
    Ok(Register {
        redirect_uri: redirect_uri.map(|base| gitlab_config::redirect_uri(&base)),
        base_url_note,
        unspecified_bind,
        scope,
        scope_reason,
    })
}

pub(super) fn rows_of(groups: Vec<String>, errors: Vec<Option<String>>) -> Vec<GroupRow> {
    let mut errors = errors.into_iter();
    groups
        .into_iter()
        .enumerate()
        .map(|(index, value)| GroupRow {
            index,
            value,
            error: errors.next().flatten(),
        })
        .collect()
}

/// Builds the section from the stored configuration and what a form sent back.
fn section(ctx: &Ctx<'_>, sent: Sent) -> AppResult<Section> {
    let config = gitlab_config::load(&ctx.conn)?;
    let register = register(ctx, &config)?;
    if !gitlab_config::exists(&ctx.conn)? {
        let create = match sent {
            Sent::Create(form) => form,
            _ => CreateForm::default(),
        };
        return Ok(Section {
            register,
            create: Some(create),
            card: None,
            provisioning: None,
        });
    }
    let (card_errors, sent_provisioning) = match sent {
        Sent::Create(form) => (form.errors, None),
        Sent::Card(errors) => (errors, None),
        Sent::Provisioning(p) => (FormErrors::default(), Some(p)),
        Sent::Nothing => (FormErrors::default(), None),
    };
    let open_now =
        (config.enabled && config.allow_users_to_sign_up && config.allowed_groups.is_empty())
            .then(|| open_warning(&config.url));
    let sync_idle = (config.synchronize_groups && !config.synchronizes()).then_some(SYNC_IDLE);
    let mut provisioning = sent_provisioning.unwrap_or_else(|| Provisioning {
        sign_up: config.allow_users_to_sign_up,
        synchronize_groups: config.synchronize_groups,
        rows: rows_of(config.allowed_groups.clone(), Vec::new()),
        errors: FormErrors::default(),
        open_warning: None,
        unsaved: false,
        open_now: None,
        sync_idle: None,
    });
    provisioning.open_now = open_now;
    provisioning.sync_idle = sync_idle;
    Ok(Section {
        register,
        create: None,
        card: Some(Card {
            plain_http: config.url.starts_with("http://"),
            enabled_unusable: config.enabled && !config.usable(),
            application_id: config.application_id,
            url: config.url,
            enabled: config.enabled,
            secret_set: config.secret.is_some(),
            synchronize_groups: config.synchronize_groups,
            errors: card_errors,
        }),
        provisioning: Some(provisioning),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_key_is_a_defined_setting() {
        for c in CATEGORIES {
            for key in c.keys {
                assert!(settings::definition(key).is_some(), "{key}");
                assert_eq!(category_of_key(key).map(|c| c.id), Some(c.id));
            }
        }
    }

    #[test]
    fn gitlab_keys_are_not_edited_by_the_generic_forms() {
        for key in settings::GITLAB_KEYS {
            assert!(category_of_key(key).is_none(), "{key}");
        }
    }

    #[test]
    fn category_defaults_to_general_and_refuses_unknown_ones() {
        assert_eq!(category(None).map(|c| c.id).ok(), Some("general"));
        assert_eq!(category(Some("")).map(|c| c.id).ok(), Some("general"));
        assert_eq!(
            category(Some("authentication")).map(|c| c.id).ok(),
            Some("authentication")
        );
        assert!(category(Some("nope")).is_err());
    }

    #[test]
    fn a_choice_offers_its_values_with_the_current_one_selected() {
        let kind = Kind::Choice {
            values: &["a", "b"],
        };
        let shown: Vec<(&str, bool)> = choices_of(kind, "b")
            .iter()
            .map(|c| (c.value, c.selected))
            .collect();
        assert_eq!(shown, vec![("a", false), ("b", true)]);
        assert!(choices_of(Kind::Url, "b").is_empty());
    }

    #[test]
    fn inputs_follow_the_kind_of_setting() {
        assert_eq!(input_of(Kind::Url).0, "url");
        assert_eq!(
            input_of(Kind::Integer { min: 6, max: 9 }),
            ("number", "6".to_string(), "9".to_string())
        );
    }
}
