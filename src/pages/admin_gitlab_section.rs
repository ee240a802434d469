//! The GitLab section of `/admin/settings?category=authentication`: the last sign-in problem
//! caused by labgate's registration in GitLab, the configuration's card, the connection check,
//! the revalidation of GitLab users, what to register in GitLab and the provisioning form,
//! built from the stored configuration and what a GitLab form sent back. `admin_settings` renders it inside its page; the forms of
//! `admin_gitlab` send what they refused back into it.

use super::FormErrors;
use crate::db::{gitlab_revalidation, gitlab_sign_in_problem};
use crate::error::AppResult;
use crate::gitlab::check::Report;
use crate::gitlab_check::{self, BaseUrlFrom, SignInRedirect};
use crate::gitlab_config;
use crate::gitlab_provisioning::{self, RunView};
use crate::provisioning;
use crate::revalidation;
use crate::settings;
use crate::web::views::datetime;
use crate::web::Ctx;

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
    /// A secret is stored but does not open with labgate's key file: enter it again.
    pub secret_unreadable: bool,
    pub synchronize_groups: bool,
    /// A refused enable/disable.
    pub errors: FormErrors,
}

/// What to register in GitLab: the redirect URI (when it can be derived) and the scopes.
pub struct Register {
    pub redirect_uri: Option<String>,
    /// Where the base URL of the redirect URI comes from.
    pub base_url_note: String,
    /// The address labgate listens on when it is every interface (no URI can be derived).
    pub unspecified_bind: Option<String>,
    /// The scopes to tick: those a sign-in asks for, space-separated.
    pub scopes: &'static str,
}

/// The last sign-in that failed because of how labgate is registered in GitLab.
pub struct SignInProblem {
    /// When, in words.
    pub seen: String,
    /// What GitLab answered.
    pub problem: String,
    /// What to change.
    pub fix: String,
}

/// One check of the connection check, as the page shows it.
pub struct CheckRow {
    pub label: &'static str,
    pub name: &'static str,
    pub ok: bool,
    pub skipped: bool,
    pub detail: String,
}

/// What "Test connection" found: every check passed (`ok`), and each one.
pub struct CheckResult {
    pub ok: bool,
    pub rows: Vec<CheckRow>,
}

/// The connection check's card: the button, and the results when it has just run.
pub struct ConnectionCheck {
    /// `None` until "Test connection" is pressed.
    pub ran: Option<CheckResult>,
}

/// A revalidation run as the GitLab tab lists it.
pub struct RunRow {
    pub started: String,
    pub trigger: String,
    pub status: String,
    pub ok: bool,
    pub checked: i64,
    pub updated: i64,
    pub cut_off: i64,
    pub sessions_ended: i64,
    /// The logins cut off and why, or why the run failed.
    pub detail: String,
}

/// The revalidation card: the interval, the next run, whether one goes on, the last runs.
pub struct Revalidation {
    /// `None`: off.
    pub minutes: Option<i64>,
    /// When the next scheduled run is due, in words.
    pub next: Option<String>,
    pub running: bool,
    pub runs: Vec<RunRow>,
}

/// Runs the GitLab tab lists.
const RUNS_SHOWN: i64 = 10;

fn revalidation(ctx: &Ctx<'_>) -> AppResult<Revalidation> {
    let minutes = settings::revalidate_minutes(&ctx.conn)?;
    let next = revalidation::next_scheduled(&ctx.conn, &ctx.app.revalidations)?;
    let runs = gitlab_revalidation::recent_runs(&ctx.conn, RUNS_SHOWN)?
        .into_iter()
        .map(|run| {
            let detail = match &run.error {
                Some(error) => error.clone(),
                None => cut_off_text(&run.cut_off),
            };
            RunRow {
                started: datetime(Some(run.started_at)),
                trigger: run.trigger.to_lowercase(),
                ok: run.status == "SUCCESS",
                status: run.status,
                checked: run.users_checked,
                updated: run.users_updated,
                cut_off: run.users_cut_off,
                sessions_ended: run.sessions_ended,
                detail,
            }
        })
        .collect();
    Ok(Revalidation {
        minutes: (minutes > 0).then_some(minutes),
        next: next.map(|at| datetime(Some(at))),
        running: ctx.app.revalidations.running(),
        runs,
    })
}

/// The people a run cut off, in words: `ann (why); bob (why)`.
fn cut_off_text(recorded: &str) -> String {
    let list: Vec<serde_json::Value> = serde_json::from_str(recorded).unwrap_or_default();
    list.iter()
        .map(|c| {
            format!(
                "{} ({})",
                c["login"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One "Allowed groups" box with its Remove button; `index` is its place in the form.
pub struct GroupRow {
    pub index: usize,
    pub value: String,
    pub error: Option<String>,
}

/// The provisioning form, as stored or as the admin is editing it.
pub struct Provisioning {
    /// Automatic provisioning chosen (else Just-in-Time).
    pub auto: bool,
    /// A provisioning token is stored (it is never shown).
    pub token_set: bool,
    /// A provisioning token is stored but does not open with labgate's key file.
    pub token_unreadable: bool,
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
    /// Shown until a sign-in succeeds.
    pub sign_in_problem: Option<SignInProblem>,
    pub register: Register,
    /// With a configuration, or once checked.
    pub check: Option<ConnectionCheck>,
    /// No configuration yet: the form to create one.
    pub create: Option<CreateForm>,
    pub card: Option<Card>,
    /// With a configuration.
    pub revalidation: Option<Revalidation>,
    pub provisioning: Option<Provisioning>,
    /// Automatic provisioning's runs, once it was chosen or has run.
    pub synchronization: Option<Synchronization>,
}

/// A provisioning run on the GitLab tab.
pub struct SyncRunRow {
    pub status: String,
    pub trigger: String,
    pub started: String,
    pub finished: String,
    pub groups_read: i64,
    pub users_read: i64,
    /// The changes in words ("2 accounts created, 1 deactivated"), or "no change".
    pub changes: String,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// Automatic provisioning's card: the run going on and how far it has read, when the next one
/// is due, the last runs, and the accounts a held run would deactivate.
pub struct Synchronization {
    /// Automatic provisioning can run (on, with its token and an allowed group).
    pub on: bool,
    /// "Groups read of groups known" and when the run going on started.
    pub running: Option<String>,
    pub next_run: Option<String>,
    pub last: Option<SyncRunRow>,
    /// The latest run was held: these accounts (login, GitLab username) wait for "Apply anyway".
    pub held: Vec<(String, String)>,
    /// The runs before the last one, newest first.
    pub earlier: Vec<SyncRunRow>,
}

/// What a refused or unfinished GitLab form sends back into the section.
#[derive(Default)]
pub enum Sent {
    #[default]
    Nothing,
    Create(CreateForm),
    Card(FormErrors),
    Provisioning(Provisioning),
    /// What "Test connection" found.
    Checked(Report),
}

/// Shown while synchronization is on without an allowed group (a configuration stored before
/// synchronization needed one): it then does nothing, and the admin should know why.
pub const SYNC_IDLE: &str = "Synchronize user groups is on but no allowed group is set: nothing \
    is synchronized. Add an allowed group to synchronize the GitLab groups under it (only those \
    are synchronized), or turn Synchronize user groups off. Until then, the memberships of GitLab \
    users are left as they are and can be edited by hand.";

pub fn open_warning(url: &str) -> String {
    format!(
        "Users can sign up and no allowed group is set: anyone with an account on {url} \
         could sign in to labgate."
    )
}

fn register(ctx: &Ctx<'_>) -> AppResult<Register> {
    let redirect = gitlab_check::stored_redirect(
        &ctx.conn,
        ctx.app.config.base_url.as_deref(),
        ctx.app.bound,
    )?;
    let (redirect_uri, base_url_note, unspecified_bind) = match redirect {
        SignInRedirect::Unknown { bound } => (None, String::new(), Some(bound.to_string())),
        SignInRedirect::Known { uri, from } => {
            let note = match from {
                BaseUrlFrom::Flag => {
                    "From --base-url (LABGATE_BASE_URL), given when labgate was started.".into()
                }
                BaseUrlFrom::Setting => "From the Server base URL setting (General tab).".into(),
                BaseUrlFrom::Bound(bound) => format!(
                    "Derived from the address labgate listens on ({bound}). If browsers reach \
                     labgate at another URL, set --base-url or the Server base URL setting \
                     (General tab)."
                ),
            };
            (Some(uri), note, None)
        }
    };
    Ok(Register {
        redirect_uri,
        base_url_note,
        unspecified_bind,
        scopes: provisioning::SCOPES,
    })
}

/// What a check is about, in words.
fn label_of(name: &str) -> &'static str {
    match name {
        "reach" => "GitLab answers",
        "issuer" => "GitLab's own URL",
        "scopes" => "Scopes offered",
        "credentials" => "Application ID and secret",
        "redirectUri" => "Redirect URI",
        "provisioningToken" => "Provisioning token",
        _ => "Other",
    }
}

fn connection_check(ran: Option<Report>) -> ConnectionCheck {
    ConnectionCheck {
        ran: ran.map(|report| {
            let rows = report
                .checks
                .into_iter()
                .map(|c| CheckRow {
                    label: label_of(c.name),
                    name: c.name,
                    ok: c.ok,
                    skipped: !c.ok && c.detail == "skipped",
                    detail: c.detail,
                })
                .collect();
            CheckResult {
                ok: report.ok,
                rows,
            }
        }),
    }
}

fn sign_in_problem(ctx: &Ctx<'_>) -> AppResult<Option<SignInProblem>> {
    Ok(
        gitlab_sign_in_problem::latest(&ctx.conn)?.map(|p| SignInProblem {
            seen: datetime(Some(p.seen_at)),
            problem: p.problem,
            fix: p.fix,
        }),
    )
}

pub fn rows_of(groups: Vec<String>, errors: Vec<Option<String>>) -> Vec<GroupRow> {
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
pub fn section(ctx: &Ctx<'_>, sent: Sent) -> AppResult<Section> {
    let config = gitlab_config::load(&ctx.conn)?;
    let register = register(ctx)?;
    let sign_in_problem = sign_in_problem(ctx)?;
    if !gitlab_config::exists(&ctx.conn)? {
        let (create, checked) = match sent {
            Sent::Create(form) => (form, None),
            Sent::Checked(report) => (CreateForm::default(), Some(report)),
            _ => (CreateForm::default(), None),
        };
        return Ok(Section {
            sign_in_problem,
            register,
            check: checked.map(|r| connection_check(Some(r))),
            create: Some(create),
            card: None,
            revalidation: None,
            provisioning: None,
            synchronization: None,
        });
    }
    let (card_errors, sent_provisioning, checked) = match sent {
        Sent::Create(form) => (form.errors, None, None),
        Sent::Card(errors) => (errors, None, None),
        Sent::Provisioning(p) => (FormErrors::default(), Some(p), None),
        Sent::Checked(report) => (FormErrors::default(), None, Some(report)),
        Sent::Nothing => (FormErrors::default(), None, None),
    };
    let open_now =
        (config.enabled && config.allow_users_to_sign_up && config.allowed_groups.is_empty())
            .then(|| open_warning(&config.url));
    let sync_idle = (config.synchronize_groups && !config.synchronizes()).then_some(SYNC_IDLE);
    let mut provisioning = sent_provisioning.unwrap_or_else(|| Provisioning {
        auto: config.auto_provisioning,
        token_set: config.provisioning_token.is_some(),
        token_unreadable: config.provisioning_token_unreadable,
        sign_up: config.allow_users_to_sign_up,
        synchronize_groups: config.synchronize_groups,
        rows: rows_of(config.allowed_groups.clone(), Vec::new()),
        errors: FormErrors::default(),
        open_warning: None,
        unsaved: false,
        open_now: None,
        sync_idle: None,
    });
    provisioning.open_now = open_now.filter(|_| !config.auto_provisioning);
    provisioning.sync_idle = sync_idle.filter(|_| !config.auto_provisioning);
    provisioning.token_set = config.provisioning_token.is_some();
    provisioning.token_unreadable = config.provisioning_token_unreadable;
    let synchronization = synchronization(ctx, config.provisions())?;
    Ok(Section {
        sign_in_problem,
        register,
        check: Some(connection_check(checked)),
        create: None,
        card: Some(Card {
            plain_http: config.url.starts_with("http://"),
            enabled_unusable: config.enabled && !config.usable(),
            application_id: config.application_id,
            url: config.url,
            enabled: config.enabled,
            secret_set: config.secret.is_some(),
            secret_unreadable: config.secret_unreadable,
            synchronize_groups: config.synchronize_groups,
            errors: card_errors,
        }),
        revalidation: Some(revalidation(ctx)?),
        provisioning: Some(provisioning),
        synchronization,
    })
}

/// A count in words ("2 accounts created"), or nothing when zero.
fn counted(n: i64, what: &str, done: &str) -> Option<String> {
    match n {
        0 => None,
        1 => Some(format!("1 {what} {done}")),
        n => Some(format!("{n} {what}s {done}")),
    }
}

fn run_row(run: &RunView) -> SyncRunRow {
    // Each count of the record, and what it counts.
    const COUNTED: [(&str, &str, &str); 8] = [
        ("usersCreated", "account", "created"),
        ("usersUpdated", "account", "updated"),
        ("usersDeactivated", "account", "deactivated"),
        ("usersReactivated", "account", "reactivated"),
        ("groupsCreated", "group", "created"),
        ("groupsDeleted", "group", "deleted"),
        ("membershipsAdded", "membership", "added"),
        ("membershipsRemoved", "membership", "removed"),
    ];
    let parts: Vec<String> = COUNTED
        .iter()
        .filter_map(|(key, what, done)| counted(run.changes[key].as_i64().unwrap_or(0), what, done))
        .collect();
    let when = |ms: Option<i64>| datetime_ms(ms);
    SyncRunRow {
        status: run.status.clone(),
        trigger: match run.trigger.as_str() {
            "SCHEDULE" => "scheduled",
            "MODE_CHANGE" => "provisioning turned on",
            _ => "on demand",
        }
        .into(),
        started: when(Some(run.started_at)),
        finished: when(run.finished_at),
        groups_read: run.groups_read,
        users_read: run.users_read,
        changes: if parts.is_empty() {
            "no change".into()
        } else {
            parts.join(", ")
        },
        error: run.error.clone(),
        warnings: run.warnings.clone(),
    }
}

/// A time in milliseconds, to the second, in UTC.
fn datetime_ms(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

/// Automatic provisioning's card: shown once it can run or once it has run.
fn synchronization(ctx: &Ctx<'_>, on: bool) -> AppResult<Option<Synchronization>> {
    let overview = gitlab_provisioning::runner::status(&ctx.conn, &ctx.app.provisioning)?;
    if !on && overview.runs.is_empty() {
        return Ok(None);
    }
    let mut runs = overview.runs.iter();
    let mut running = None;
    let mut last = None;
    for run in runs.by_ref() {
        match run.progress {
            Some((read, known)) => {
                running = Some(format!(
                    "Started {} ({}): {read} of {known} groups read so far.",
                    datetime_ms(Some(run.started_at)),
                    run_row(run).trigger
                ))
            }
            // Recorded as running, and not by this process: another labgate on the same
            // database, or one that stopped (the next start records it as failed).
            None if run.status == "RUNNING" => {
                running = Some(format!(
                    "Started {} ({}), not by this labgate process.",
                    datetime_ms(Some(run.started_at)),
                    run_row(run).trigger
                ))
            }
            None => {
                last = Some(run);
                break;
            }
        }
    }
    let held = last
        .filter(|run| run.status == "HELD")
        .map(|run| {
            run.held
                .iter()
                .map(|(login, username)| (login.clone(), username.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Synchronization {
        on,
        running,
        next_run: overview.next_run_at.map(|ms| datetime_ms(Some(ms))),
        last: last.map(run_row),
        held,
        earlier: runs.take(9).map(run_row).collect(),
    }))
}
