//! Automatic provisioning runs, each one story: read the allowed groups from GitLab (no
//! database connection held meanwhile), read what the store holds, let
//! [`provisioning::auto::plan`] decide, and apply the plan with the run's record in one write
//! transaction: a run that fails anywhere, or that the guard holds, changes nothing but its
//! record. [`runner`] starts runs on a schedule and on demand, one at a time.

pub mod runner;

use crate::db::{self, gitlab_provisioning as store, groups, permissions, users};
use crate::error::{AppError, AppResult};
use crate::gitlab::provision::{Member, Reader};
use crate::gitlab::{Client, GitlabError};
use crate::gitlab_config::GitlabConfig;
use crate::model::PROVIDER_GITLAB;
use crate::provisioning::{self, auto};
use crate::settings;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest a run may read GitLab; each call is also bounded by the client's own timeouts.
pub const READ_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// GitLab calls at once while reading members.
pub const CALLS_AT_ONCE: usize = 4;
/// Most groups one run reads: past it the run fails rather than hold without bound.
pub const MAX_GROUPS: usize = 10_000;
/// Most memberships one run reads (a person in two groups counts twice).
pub const MAX_MEMBERSHIPS: usize = 500_000;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Manual,
    /// Automatic provisioning was just turned on.
    ModeChange,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "SCHEDULE",
            Trigger::Manual => "MANUAL",
            Trigger::ModeChange => "MODE_CHANGE",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
    /// It would deactivate too many accounts: nothing changed until an administrator applies it.
    Held,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Failed => "FAILED",
            Status::Held => "HELD",
        }
    }
}

/// How far a run has read: groups read of the groups known so far; and whether labgate is
/// stopping, in which case the run stops reading and records why ([`STOPPED`]).
#[derive(Debug, Default)]
pub struct Progress {
    pub groups_known: AtomicUsize,
    pub groups_read: AtomicUsize,
    pub stopping: AtomicBool,
    /// The id of the run's record, once it is written (0 before).
    pub run_id: AtomicI64,
}

impl Progress {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Why a run failed when labgate was stopped while it read GitLab: it writes nothing but its
/// record, so that the next start does not show it as never having happened.
pub const STOPPED: &str = "labgate was stopped during the run: nothing it read was written";

/// Why a run found unfinished at start failed: the process running it ended first (a stop
/// whose wait ran out, a crash, a `kill -9`, the machine stopping). A run writes what it
/// changes in one transaction at its end, with its record, so nothing it read was written.
pub const CUT_SHORT: &str =
    "labgate stopped before the run ended (stopped, crashed or killed): nothing it read was written";

/// A finished run, as recorded and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: i64,
    pub status: Status,
    pub trigger: Trigger,
    pub started_at: i64,
    pub finished_at: i64,
    pub groups_read: usize,
    pub users_read: usize,
    pub changes: auto::Changes,
    pub error: Option<String>,
    /// The accounts deactivated (applied), or that would be (held).
    pub deactivations: Vec<auto::Deactivation>,
    pub warnings: Vec<String>,
    /// Milliseconds spent reading GitLab, reading the store and deciding, and writing.
    pub phases: [i64; 3],
}

/// Reads every allowed group, its descendant groups and the direct members of each from
/// GitLab, up to [`CALLS_AT_ONCE`] calls at once, counting in `progress`.
pub fn read_gitlab(
    reader: &Reader<'_>,
    allowed_groups: &[String],
    progress: &Progress,
) -> Result<auto::Read, String> {
    let mut groups: Vec<auto::ReadGroup> = Vec::new();
    let mut ids: HashSet<i64> = HashSet::new();
    for slug in allowed_groups {
        if progress.stopping() {
            return Err(STOPPED.into());
        }
        let root = reader
            .group(slug)
            .map_err(|e| allowed_group_error(slug, &e))?;
        let below = reader
            .descendant_groups(root.id)
            .map_err(|e| e.to_string())?;
        for g in std::iter::once(root).chain(below) {
            if ids.insert(g.id) {
                groups.push(auto::ReadGroup::new(g.id, &g.full_path, g.parent_id));
            }
        }
        if groups.len() > MAX_GROUPS {
            return Err(format!(
                "more than {MAX_GROUPS} groups under the allowed groups: labgate reads at most that many"
            ));
        }
        progress.groups_known.store(groups.len(), Ordering::Relaxed);
    }
    let next = AtomicUsize::new(0);
    let read = Mutex::new(Members::default());
    let lock = || read.lock().unwrap_or_else(|p| p.into_inner());
    let work = || loop {
        let Some(group) = groups.get(next.fetch_add(1, Ordering::Relaxed)) else {
            return;
        };
        if lock().error.is_some() {
            return;
        }
        if progress.stopping() {
            lock().error.get_or_insert_with(|| STOPPED.into());
            return;
        }
        let listed = reader.members(group.id);
        let mut read = lock();
        if read.error.is_some() {
            return;
        }
        match listed {
            Err(e) => read.error = Some(format!("group {}: {e}", group.full_path)),
            Ok(list) => {
                read.members
                    .extend(list.into_iter().map(|m: Member| auto::ReadMember {
                        group_id: group.id,
                        user_id: m.id,
                        username: m.username,
                        name: m.name,
                        state: m.state,
                    }));
                if read.members.len() > MAX_MEMBERSHIPS {
                    read.error = Some(format!(
                        "more than {MAX_MEMBERSHIPS} memberships under the allowed groups: \
                         labgate reads at most that many"
                    ));
                }
                progress.groups_read.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..CALLS_AT_ONCE {
            s.spawn(work);
        }
        work();
    });
    let read = read.into_inner().unwrap_or_else(|p| p.into_inner());
    match read.error {
        Some(error) => Err(error),
        None => Ok(auto::Read {
            groups,
            members: read.members,
        }),
    }
}

/// The members read so far, or why reading stopped.
#[derive(Default)]
struct Members {
    members: Vec<auto::ReadMember>,
    error: Option<String>,
}

fn allowed_group_error(slug: &str, e: &GitlabError) -> String {
    match e {
        GitlabError::Status { status: 404, .. } => format!(
            "allowed group {slug}: GitLab answers 404: it does not exist or the provisioning \
             token cannot see it"
        ),
        other => format!("allowed group {slug}: {other}"),
    }
}

/// What the store holds that a run compares with GitLab, read in the run's write transaction.
pub fn read_store(tx: &Connection) -> AppResult<auto::Store> {
    let default_group = groups::sync_candidates(tx, &[])?
        .into_iter()
        .find(|g| g.is_default)
        .map(|g| g.id)
        .ok_or_else(|| AppError::Internal("no default group".into()))?;
    let managed = store::managed_groups(tx)?
        .into_iter()
        .map(|m| auto::ManagedGroup {
            id: m.id,
            name: m.name,
            gitlab_id: m.gitlab_id,
        })
        .collect();
    let accounts = store::gitlab_accounts(tx, PROVIDER_GITLAB)?
        .into_iter()
        .map(|a| auto::Account {
            id: a.id,
            login: a.login,
            name: a.name,
            active: a.active,
            gitlab_id: a.gitlab_id,
            username: a.username,
            mark: a.mark.map(|m| match m {
                store::Mark::Read => auto::Mark::Read,
                store::Mark::Deactivated => auto::Mark::Deactivated,
            }),
        })
        .collect();
    Ok(auto::Store {
        default_group,
        managed,
        hand_made: store::hand_made_names(tx)?,
        accounts,
        memberships: store::gitlab_memberships(tx, PROVIDER_GITLAB)?,
    })
}

/// Why a run fails when the provisioning token stored does not open with labgate's key file.
pub const TOKEN_UNREADABLE: &str = "the provisioning token stored cannot be read with \
    labgate.key (the key file was replaced, or the database restored without it): enter it again";

/// Refusal when a run would leave labgate without an active administrator.
pub const NO_ADMIN_LEFT: &str = "the run would leave no active administrator (the last ones are \
    GitLab accounts it would deactivate or take out of their groups): grant 'Administer System' \
    to a local account or to a group provisioning manages";

/// Makes the writes of `plan` in `tx`, in an order no constraint minds: groups deleted, renamed
/// (through a name no group can have, so that two may swap names), created; accounts created,
/// linked or refreshed, reactivated, deactivated; memberships removed and added; the marks.
/// Refused when no active administrator would be left. A managed group to delete that admits
/// people to an application is kept, emptied of its GitLab accounts (deleting it would open
/// the application to everyone): the warnings returned say so.
pub fn apply(tx: &Connection, plan: &auto::Plan, now: i64) -> AppResult<Vec<String>> {
    let mut warnings = Vec::new();
    for &id in &plan.groups_deleted {
        let applications = db::applications::admitting(tx, id)?;
        if applications.is_empty() {
            store::delete_managed_group(tx, id)?;
        } else {
            let removed = store::remove_gitlab_members(tx, id, PROVIDER_GITLAB)?;
            warnings.push(format!(
                "a group whose GitLab group is gone was kept, without its {removed} GitLab \
                 members, because it admits people to {}: remove it from their allowed groups \
                 to let provisioning delete it",
                applications.join(", ")
            ));
        }
    }
    for (id, _) in &plan.groups_renamed {
        store::rename_managed_group(tx, *id, &format!("\u{1}renaming {id}"))?;
    }
    for (id, name) in &plan.groups_renamed {
        store::rename_managed_group(tx, *id, name)?;
    }
    let mut new_groups = Vec::with_capacity(plan.groups_created.len());
    for g in &plan.groups_created {
        new_groups.push(store::create_managed_group(tx, &g.name, g.gitlab_id, now)?);
    }
    let mut new_accounts = Vec::with_capacity(plan.accounts_created.len());
    for p in &plan.accounts_created {
        new_accounts.push(create_account(tx, p, now)?);
    }
    for (id, p) in &plan.profiles {
        let gitlab_id = p.gitlab_id.to_string();
        let written = store::Profile {
            name: &p.name,
            username: &p.username,
            gitlab_id: &gitlab_id,
        };
        store::set_profile(tx, *id, &written, now)?;
    }
    for &id in &plan.reactivated {
        users::reactivate(tx, id, now)?;
    }
    for d in &plan.deactivated {
        users::deactivate(tx, d.id, now)?;
    }
    for &(user, group) in &plan.memberships_removed {
        groups::remove_member(tx, group, user)?;
    }
    let account = |a: &auto::AccountRef| match a {
        auto::AccountRef::Local(id) => *id,
        auto::AccountRef::New(i) => new_accounts[*i],
    };
    for (a, g) in &plan.memberships_added {
        let group = match g {
            auto::GroupRef::Local(id) => *id,
            auto::GroupRef::New(i) => new_groups[*i],
        };
        groups::add_member(tx, group, account(a))?;
    }
    for a in &plan.marked_read {
        store::set_mark(tx, account(a), store::Mark::Read)?;
    }
    for d in &plan.deactivated {
        store::set_mark(tx, d.id, store::Mark::Deactivated)?;
    }
    if permissions::count_active_admins(tx)? == 0 {
        return Err(AppError::rule(NO_ADMIN_LEFT));
    }
    Ok(warnings)
}

/// Creates the account of a person read, with the first free login of
/// [`provisioning::login_candidates`].
fn create_account(tx: &Connection, p: &auto::Profile, now: i64) -> AppResult<i64> {
    let candidates = provisioning::login_candidates(&p.username, p.gitlab_id).take(1000);
    let login = users::first_free_login(tx, candidates)?.ok_or_else(|| {
        AppError::Internal(format!("no free login for GitLab user {}", p.username))
    })?;
    let gitlab_id = p.gitlab_id.to_string();
    Ok(users::create(
        tx,
        &users::NewUser {
            login: &login,
            name: &p.name,
            email: None,
            password_hash: None,
            must_change_password: false,
            external: Some(users::External {
                provider: PROVIDER_GITLAB,
                identity: &p.username,
                id: Some(&gitlab_id),
            }),
        },
        now,
    )?)
}

/// One run asked for: what started it, and the accounts an administrator agreed to deactivate
/// (applying a held run).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub trigger: Option<Trigger>,
    pub approved: Option<HashSet<i64>>,
}

/// Runs once with `config` (which must provision) and records the run: reads GitLab without
/// holding a transaction, then decides and applies in one write transaction with the run's
/// record. `clock` gives the time in milliseconds.
pub fn run(
    conn: &mut Connection,
    client: &Client,
    config: &GitlabConfig,
    request: &Request,
    progress: &Progress,
    clock: &dyn Fn() -> i64,
) -> AppResult<Outcome> {
    let trigger = request.trigger.unwrap_or(Trigger::Manual);
    let started_at = clock();
    let mut outcome = Outcome {
        id: 0,
        status: Status::Failed,
        trigger,
        started_at,
        finished_at: started_at,
        groups_read: 0,
        users_read: 0,
        changes: auto::Changes::default(),
        error: None,
        deactivations: Vec::new(),
        warnings: Vec::new(),
        phases: [0; 3],
    };
    // Recorded at once, so that a run labgate cannot finish (a crash, `kill -9`) is still
    // found: the next start records it as failed.
    outcome.id = store::start_run(
        conn,
        trigger.as_str(),
        started_at,
        &changes_json(&outcome.changes).to_string(),
    )?;
    progress.run_id.store(outcome.id, Ordering::Relaxed);
    let read = match (&config.provisioning_token, config.provisions()) {
        (Some(token), true) => {
            let reader = Reader {
                client,
                base: config.url.trim_end_matches('/'),
                token,
                deadline: Instant::now() + READ_DEADLINE,
            };
            read_gitlab(&reader, &config.allowed_groups, progress)
        }
        _ if config.provisioning_token_lost() => Err(TOKEN_UNREADABLE.into()),
        _ => Err("automatic provisioning is off, or lacks its token or an allowed group".into()),
    };
    let read = match read {
        Ok(_) if progress.stopping() => {
            return record_failure(conn, outcome, STOPPED.into(), clock)
        }
        Ok(read) => read,
        Err(error) => return record_failure(conn, outcome, error, clock),
    };
    let read_at = clock();
    outcome.phases[0] = read_at - started_at;
    let max_percent = settings::provisioning_max_deactivation_percent(conn)?;
    let tx = db::write_tx(conn)?;
    let plan = auto::plan(&read, &read_store(&tx)?);
    drop(read);
    let decided_at = clock();
    outcome.phases[1] = decided_at - read_at;
    outcome.groups_read = plan.groups_read;
    outcome.users_read = plan.users_read;
    outcome.warnings = plan.warnings.clone();
    outcome.deactivations = plan.deactivated.clone();
    if auto::held(&plan, max_percent, request.approved.as_ref()) {
        outcome.status = Status::Held;
        outcome.error = Some(format!(
            "the run would deactivate {} of the {} active GitLab accounts, more than {max_percent} %: \
             nothing was changed; an administrator may apply it",
            plan.deactivated.len(),
            plan.active_accounts
        ));
    } else {
        let now = started_at / 1000;
        let applied = apply(&tx, &plan, now);
        if let Ok(kept) = &applied {
            outcome.warnings.extend(kept.iter().cloned());
        }
        if let Err(e) = applied {
            drop(tx);
            let why = match e {
                AppError::Rule(m) => m,
                other => format!(
                    "the changes could not be written: {}",
                    other.public_message()
                ),
            };
            outcome.deactivations.clear();
            return record_failure(conn, outcome, why, clock);
        }
        outcome.status = Status::Success;
        outcome.changes = plan.changes();
    }
    outcome.finished_at = clock();
    outcome.phases[2] = outcome.finished_at - decided_at;
    store::finish_run(&tx, &record_of(&outcome))?;
    record_events(&tx, &outcome)?;
    tx.commit()?;
    report(&outcome);
    Ok(outcome)
}

/// Records the run in the audit log, in its transaction: each account it deactivated (by
/// provisioning: the person left GitLab's allowed groups), and the run with its counts, its
/// outcome (`refused` when held for an administrator) and why it failed or was held.
fn record_events(tx: &Connection, o: &Outcome) -> AppResult<()> {
    use crate::audit::{self, Action, By, Event, Outcome as Ended};
    let by = By::system(o.finished_at);
    if o.status == Status::Success {
        for d in &o.deactivations {
            let event = Event::ok(Action::UserDeactivate, &d.login)
                .with("by", "provisioning")
                .with("gitlabUsername", d.username.as_deref());
            audit::record(tx, &by, event)?;
        }
    }
    let ended = match o.status {
        Status::Success => Ended::Ok,
        Status::Held => Ended::Refused,
        Status::Failed => Ended::Failed,
    };
    let mut event = Event::new(Action::ProvisioningRun, ended, None)
        .with("run", o.id)
        .with("trigger", o.trigger.as_str())
        .with("groupsRead", o.groups_read)
        .with("usersRead", o.users_read)
        .with("changes", changes_json(&o.changes));
    if let Some(error) = &o.error {
        event = event.because(error);
    }
    audit::record(tx, &by, event)?;
    Ok(())
}

/// Records the runs still marked running, which ended with the process that ran them, as
/// failed ([`CUT_SHORT`]), each with its audit event, its log line and its count in the
/// metrics; returns how many. `now` in milliseconds.
pub fn fail_unfinished(conn: &mut Connection, now: i64) -> AppResult<usize> {
    use crate::audit::{self, Action, By, Event, Outcome as Ended};
    let tx = db::write_tx(conn)?;
    let runs = store::fail_unfinished(&tx, CUT_SHORT, now)?;
    for (id, trigger) in &runs {
        log::warn!("gitlab provisioning: run {id}: {CUT_SHORT}");
        let event = Event::new(Action::ProvisioningRun, Ended::Failed, None)
            .with("run", *id)
            .with("trigger", trigger.as_str())
            .because(CUT_SHORT);
        audit::record(&tx, &By::system(now), event)?;
    }
    tx.commit()?;
    for _ in &runs {
        crate::metrics::run(crate::metrics::Task::Provisioning, "failed", None);
    }
    Ok(runs.len())
}

/// Records a run that failed with `error` (nothing else written) and reports it.
fn record_failure(
    conn: &mut Connection,
    mut outcome: Outcome,
    error: String,
    clock: &dyn Fn() -> i64,
) -> AppResult<Outcome> {
    outcome.status = Status::Failed;
    outcome.error = Some(error);
    outcome.changes = auto::Changes::default();
    outcome.finished_at = clock();
    let tx = db::write_tx(conn)?;
    store::finish_run(&tx, &record_of(&outcome))?;
    record_events(&tx, &outcome)?;
    tx.commit()?;
    report(&outcome);
    Ok(outcome)
}

/// The counts of a run as its record and the API show them.
pub fn changes_json(c: &auto::Changes) -> Value {
    json!({
        "usersCreated": c.users_created,
        "usersUpdated": c.users_updated,
        "usersDeactivated": c.users_deactivated,
        "usersReactivated": c.users_reactivated,
        "groupsCreated": c.groups_created,
        "groupsDeleted": c.groups_deleted,
        "membershipsAdded": c.memberships_added,
        "membershipsRemoved": c.memberships_removed,
    })
}

fn record_of(o: &Outcome) -> store::Run {
    let listed = |d: &auto::Deactivation| json!({"id": d.id, "login": d.login, "gitlabUsername": d.username});
    store::Run {
        id: o.id,
        status: o.status.as_str().into(),
        trigger: o.trigger.as_str().into(),
        started_at: o.started_at,
        finished_at: Some(o.finished_at),
        groups_read: i64::try_from(o.groups_read).unwrap_or(i64::MAX),
        users_read: i64::try_from(o.users_read).unwrap_or(i64::MAX),
        changes: changes_json(&o.changes).to_string(),
        error: o.error.clone(),
        held: (o.status == Status::Held).then(|| {
            Value::from(o.deactivations.iter().map(listed).collect::<Vec<_>>()).to_string()
        }),
        warnings: (!o.warnings.is_empty()).then(|| json!(o.warnings).to_string()),
    }
}

/// A recorded run in the metrics (after its commit: a run counts once it is recorded) and its
/// log lines: one for the run, one for each account it deactivated (its sessions and tokens
/// ended with it). Every event of provisioning goes through here.
pub fn report(o: &Outcome) {
    let succeeded = (o.status == Status::Success).then_some(o.finished_at / 1000);
    let outcome = match o.status {
        Status::Success => "success",
        Status::Held => "held",
        Status::Failed => "failed",
    };
    crate::metrics::run(crate::metrics::Task::Provisioning, outcome, succeeded);
    let c = &o.changes;
    let line = format!(
        "gitlab provisioning: run {} trigger={} status={} groups_read={} users_read={} \
         users_created={} users_updated={} users_deactivated={} users_reactivated={} \
         groups_created={} groups_deleted={} memberships_added={} memberships_removed={} \
         read_ms={} decide_ms={} write_ms={}{}",
        o.id,
        o.trigger.as_str(),
        o.status.as_str(),
        o.groups_read,
        o.users_read,
        c.users_created,
        c.users_updated,
        c.users_deactivated,
        c.users_reactivated,
        c.groups_created,
        c.groups_deleted,
        c.memberships_added,
        c.memberships_removed,
        o.phases[0],
        o.phases[1],
        o.phases[2],
        o.error
            .as_deref()
            .map(|e| format!(" error={e:?}"))
            .unwrap_or_default()
    );
    match o.status {
        Status::Success => log::info!("{line}"),
        Status::Failed | Status::Held => log::warn!("{line}"),
    }
    for w in &o.warnings {
        log::warn!("gitlab provisioning: run {}: {w}", o.id);
    }
    if o.status == Status::Success {
        for d in &o.deactivations {
            log::info!(
                "gitlab provisioning: run {} deactivated login={:?} gitlab_username={:?}: \
                 sessions and API tokens ended",
                o.id,
                d.login,
                d.username.as_deref().unwrap_or("")
            );
        }
    }
}

/// A run as the API and the page show it: the one going on, or one recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// `None` while it runs.
    pub id: Option<i64>,
    /// `RUNNING`, `SUCCESS`, `FAILED` or `HELD`.
    pub status: String,
    pub trigger: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub groups_read: i64,
    pub users_read: i64,
    /// The counts, as [`changes_json`] writes them.
    pub changes: Value,
    pub error: Option<String>,
    /// While it runs: groups read of groups known.
    pub progress: Option<(usize, usize)>,
    /// A held run: the accounts it would deactivate (login, GitLab username).
    pub held: Vec<(String, Option<String>)>,
    pub warnings: Vec<String>,
}

/// Automatic provisioning's state: the run going on first, then the last recorded ones, and
/// when the next scheduled run is due (milliseconds; `None` while automatic provisioning is
/// off).
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub runs: Vec<RunView>,
    pub next_run_at: Option<i64>,
}

pub(crate) fn view_of(run: store::Run) -> RunView {
    let held: Vec<Value> = run
        .held
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    RunView {
        id: Some(run.id),
        status: run.status,
        trigger: run.trigger,
        started_at: run.started_at,
        finished_at: run.finished_at,
        groups_read: run.groups_read,
        users_read: run.users_read,
        changes: serde_json::from_str(&run.changes).unwrap_or_else(|_| json!({})),
        error: run.error,
        progress: None,
        held: held
            .iter()
            .map(|d| {
                (
                    d["login"].as_str().unwrap_or_default().to_string(),
                    d["gitlabUsername"].as_str().map(str::to_string),
                )
            })
            .collect(),
        warnings: run
            .warnings
            .as_deref()
            .and_then(|w| serde_json::from_str(w).ok())
            .unwrap_or_default(),
    }
}

/// The accounts the latest run would deactivate, when it was held: what "Apply anyway"
/// approves. `None` when the latest run was not held.
pub fn held_for_approval(conn: &Connection) -> AppResult<Option<HashSet<i64>>> {
    let Some(last) = store::last_finished_run(conn)? else {
        return Ok(None);
    };
    if last.status != Status::Held.as_str() {
        return Ok(None);
    }
    let listed: Vec<Value> = serde_json::from_str(last.held.as_deref().unwrap_or("[]"))
        .map_err(|e| AppError::Internal(format!("held run {}: {e}", last.id)))?;
    Ok(Some(
        listed.iter().filter_map(|d| d["id"].as_i64()).collect(),
    ))
}

#[cfg(test)]
mod tests;
