//! The settings page, `/admin/settings?category=general|authentication|applications`, every tab of it
//! rendered here: the run-time settings of each category, each with its current value, a save
//! form and "reset to default". Values are validated by the settings registry, the same path as
//! `api/settings/*`. The authentication category also shows the GitLab section, built by
//! `admin_gitlab_section`; its forms are handled by `admin_gitlab`, which comes back to this
//! page.

use super::admin::{done, field};
use super::admin_gitlab_section::{section, Section, Sent};
use super::FormErrors;
use crate::error::{AppError, AppResult};
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
        keys: &[
            settings::SESSION_TIMEOUT,
            settings::TOKEN_MAX_LIFETIME,
            settings::REVALIDATE_MINUTES,
            settings::PROVISIONING_INTERVAL,
            settings::PROVISIONING_MAX_DEACTIVATION,
        ],
    },
    Category {
        id: "applications",
        label: "Applications",
        keys: &[settings::GATE_COOKIE_DOMAIN],
    },
    Category {
        id: "monitoring",
        label: "Audit and monitoring",
        keys: &[
            settings::AUDIT_RETENTION_DAYS,
            settings::METRICS_ENABLED,
            settings::METRICS_TOKEN,
        ],
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
        Kind::Interval { max, .. } => ("number", "0".to_string(), max.to_string()),
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
    let (mut input_type, min, max) = input_of(def.kind);
    // A secured setting is write-only: the page says whether it is set, never what it is.
    let (value, current) = if def.secured() {
        input_type = "password";
        let current = if stored.is_some() { "set" } else { "not set" };
        (String::new(), current.to_string())
    } else {
        (value, current)
    };
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
    let by = ctx.by();
    let fixed = ctx.app.config.base_url.clone();
    let result = match fixed_by_config(ctx, def.key) {
        Some(reason) => Err(AppError::rule(reason)),
        None if reset => {
            settings::reset_all_fixed(&mut ctx.conn, &by, &[def.key], fixed.as_deref())
        }
        None => {
            settings::set_values_fixed(&mut ctx.conn, &by, def.key, &[&value], fixed.as_deref())
        }
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
