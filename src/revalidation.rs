//! Revalidation of GitLab users: access follows GitLab within minutes, not when a session
//! expires days later.
//!
//! A run takes each GitLab user with a live session or an API token used within the interval
//! (`labgate.gitlab.revalidateMinutes`), and asks GitLab about them as a sign-in would, with the
//! refresh token kept from their last sign-in: the refresh grant (a new pair, kept sealed), then
//! OIDC userinfo, then the sign-in rules ([`signin::recheck`]: allowed groups, profile, group
//! synchronization).
//!
//! - Still admitted: the profile and memberships are updated, nothing else.
//! - No longer admitted (out of the allowed groups; the refresh refused with `invalid_grant`:
//!   labgate revoked in GitLab, or the person deleted; userinfo refusing the new token: the
//!   person blocked or deleted; or no refresh token to ask with): every session of the person
//!   ends at once and their API tokens are refused until they sign in with GitLab again
//!   ([`end_access`]).
//! - GitLab failing (unreachable, timing out, a 5xx or an unexpected answer at the token
//!   endpoint, a rate limit that outlasts the capped waits, or userinfo failing for every person
//!   tried): nothing changes for anyone; the run is recorded as failed with the reason. Only
//!   the refresh tokens GitLab rotated meanwhile are kept, so that the next run can ask again.
//!
//! The calls to GitLab are made with no database connection held, at most
//! [`MAX_CONCURRENT_CALLS`] at once, honouring `Retry-After` within [`MAX_RATE_WAIT`]; the
//! decisions and their writes are one transaction at the end. Never two runs at once
//! ([`Revalidations`]).

use crate::db::{self, gitlab_revalidation, sessions, Pool};
use crate::error::{AppError, AppResult};
use crate::gitlab::{Client, GitlabError, GitlabSettings};
use crate::gitlab_config::{self, GitlabConfig};
use crate::model::PROVIDER_GITLAB;
use crate::provisioning::Claims;
use crate::settings;
use crate::signin::{self, Rechecked};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// GitLab calls a run makes at once, at most.
pub const MAX_CONCURRENT_CALLS: usize = 4;
/// Longest wait for a `Retry-After` (or, without one, a second); past it the run fails.
pub const MAX_RATE_WAIT: Duration = Duration::from_secs(30);
/// Waits after a 429 for one call, at most; past them the run fails.
pub const MAX_RATE_WAITS: usize = 3;
/// Time one call may take, its retries included.
pub const CALL_BUDGET: Duration = Duration::from_secs(20);
/// How long to wait for a database connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Waits of [`POOL_WAIT`] for the connection that records how a run ended, at most: until then
/// the run is recorded as running, and only the next start would settle a record left so.
const FINISH_WAITS: usize = 6;
/// The users cut off that a run's record lists by name, at most.
const LISTED_CUT_OFFS: usize = 100;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule (`labgate.gitlab.revalidateMinutes`).
    Schedule,
    /// "Revalidate now", or `POST /api/v2/labgate/gitlab-revalidations`.
    Manual,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Schedule => "SCHEDULE",
            Trigger::Manual => "MANUAL",
        }
    }
}

/// The process-wide state of the revalidation: whether a run is going on, and when the last one
/// started (the schedule counts from it, or from the start of labgate).
#[derive(Debug)]
pub struct Revalidations {
    running: AtomicBool,
    /// Unix time the schedule counts from.
    since: AtomicI64,
}

impl Revalidations {
    /// The state of a labgate started at `now`: the first scheduled run comes one interval
    /// later.
    pub fn new(now: i64) -> Revalidations {
        Revalidations {
            running: AtomicBool::new(false),
            since: AtomicI64::new(now),
        }
    }

    /// Whether a run is going on.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// When the next scheduled run is due with an interval of `minutes` (0: off, none).
    pub fn next_at(&self, minutes: i64) -> Option<i64> {
        next_at(self.since.load(Ordering::SeqCst), minutes)
    }
}

/// When a run is due: `minutes` after `since`; never when `minutes` is 0 (off).
pub fn next_at(since: i64, minutes: i64) -> Option<i64> {
    (minutes > 0).then(|| since.saturating_add(minutes.saturating_mul(60)))
}

/// Marks a run as going on while it lives; the next run may start once it is dropped.
struct RunGuard<'a>(&'a Revalidations);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// The text of a conflicting request while a run goes on.
pub const RUNNING: &str = "A revalidation is running: try again when it is done";

/// What a run did, as recorded ([`gitlab_revalidation::Run`]).
pub type Run = gitlab_revalidation::Run;

/// When the next scheduled run is due: `None` while the interval is 0 (off) or GitLab sign-in
/// is not configured.
pub fn next_scheduled(
    conn: &rusqlite::Connection,
    state: &Revalidations,
) -> AppResult<Option<i64>> {
    let minutes = settings::revalidate_minutes(conn)?;
    let config = gitlab_config::load(conn)?;
    // Automatic provisioning does this work at each of its runs.
    // Enabled or not: people signed in while it was enabled are still revalidated.
    let configured = config.gitlab_settings().is_some() && !config.auto_provisioning;
    Ok(state.next_at(minutes).filter(|_| configured))
}

/// Runs a scheduled revalidation when one is due at `now` ([`next_scheduled`]) and none goes
/// on. Returns the run, if one was made.
pub fn run_if_due(
    pool: &Pool,
    gitlab: &Client,
    state: &Revalidations,
    now: i64,
) -> AppResult<Option<Run>> {
    let due = next_scheduled(&*pool.get(POOL_WAIT)?, state)?;
    match due {
        Some(due) if now >= due && !state.running() => {
            match run(pool, gitlab, state, Trigger::Schedule, now) {
                Ok(run) => Ok(Some(run)),
                // Started elsewhere meanwhile ("Revalidate now"): that run counts.
                Err(AppError::Conflict(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
        _ => Ok(None),
    }
}

/// Refusal of a revalidation under automatic provisioning, whose runs do its work.
pub const NOT_UNDER_PROVISIONING: &str = "Cannot revalidate: automatic provisioning is on, and \
    each of its runs deactivates the people GitLab no longer lists (Synchronize now runs one)";

/// One run, from `now`: refused while another goes on ([`AppError::Conflict`]) and when GitLab
/// sign-in is not configured. Returns the run as recorded.
pub fn run(
    pool: &Pool,
    gitlab: &Client,
    state: &Revalidations,
    trigger: Trigger,
    now: i64,
) -> AppResult<Run> {
    if state.running.swap(true, Ordering::SeqCst) {
        return Err(AppError::Conflict(RUNNING.into()));
    }
    let _guard = RunGuard(state);
    let (config, gitlab_settings, candidates, run_id) = {
        let conn = pool.get(POOL_WAIT)?;
        let config = gitlab_config::load(&conn)?;
        if config.auto_provisioning {
            return Err(AppError::rule(NOT_UNDER_PROVISIONING));
        }
        let Some(gitlab_settings) = config.gitlab_settings() else {
            let why = if config.secret_unreadable {
                "the GitLab secret stored cannot be read with labgate.key: enter it again"
            } else {
                "GitLab sign-in is not configured (application ID and secret)"
            };
            return Err(AppError::rule(format!("Cannot revalidate: {why}")));
        };
        let minutes = match settings::revalidate_minutes(&conn)? {
            0 => settings::REVALIDATE_MINUTES_DEFAULT,
            n => n,
        };
        let idle = settings::session_timeout_secs(&conn)?;
        let candidates = gitlab_revalidation::candidates(
            &conn,
            PROVIDER_GITLAB,
            now - idle,
            now - sessions::MAX_AGE_SECS,
            now - minutes * 60,
            now,
        )?;
        let run_id = gitlab_revalidation::start_run(&conn, trigger.name(), now)?;
        (config, gitlab_settings, candidates, run_id)
    };
    state.since.store(now, Ordering::SeqCst);
    log::info!(
        "revalidation run={run_id} trigger={} started: {} GitLab users to check",
        trigger.name(),
        candidates.len()
    );
    let answers = ask_gitlab(gitlab, &gitlab_settings, &candidates);
    let verdict = verdict(&answers);
    let finished = chrono::Utc::now().timestamp().max(now);
    let mut conn = connection_to_finish(pool, run_id, POOL_WAIT, FINISH_WAITS)?;
    let record = Record {
        id: run_id,
        trigger,
        started_at: now,
        finished_at: finished,
    };
    let run = match apply(&mut conn, &config, &candidates, answers, verdict, record) {
        Ok(run) => run,
        Err(e) => {
            // Its transaction rolled back: nothing changed; the record says why.
            let failed = Run {
                id: run_id,
                trigger: trigger.name().to_string(),
                status: "FAILED".into(),
                started_at: now,
                finished_at: Some(finished),
                users_checked: 0,
                users_updated: 0,
                users_cut_off: 0,
                sessions_ended: 0,
                cut_off: "[]".into(),
                // The public text: an internal error's details go to the log line below.
                error: Some(format!(
                    "labgate could not write the run's changes: {}",
                    e.public_message()
                )),
            };
            gitlab_revalidation::finish_run(&conn, &failed)?;
            log::error!("revalidation run={run_id} FAILED writing its changes: {e}");
            return Err(e);
        }
    };
    match &run.error {
        None => log::info!(
            "revalidation run={run_id} SUCCESS: {} checked, {} updated, {} cut off, {} sessions \
             ended",
            run.users_checked,
            run.users_updated,
            run.users_cut_off,
            run.sessions_ended
        ),
        Some(error) => {
            log::warn!("revalidation run={run_id} FAILED, nothing changed for anyone: {error}")
        }
    }
    Ok(run)
}

/// A connection to record the end of run `run_id` with, waiting up to `waits` times `wait`
/// for one: the pool may be busy for a while, and a run whose end is not recorded shows as
/// running until labgate starts again.
fn connection_to_finish(
    pool: &Pool,
    run_id: i64,
    wait: Duration,
    waits: usize,
) -> AppResult<crate::db::PooledConn<'_>> {
    let mut tries = 1;
    loop {
        match pool.get(wait) {
            Ok(conn) => return Ok(conn),
            Err(e) if tries < waits => {
                log::warn!(
                    "revalidation run={run_id}: no database connection free to record its \
                     end ({e}); waiting again ({tries} of {waits})"
                );
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What GitLab said about one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Not asked: the run failed before.
    NotAsked,
    /// No refresh token kept, or one that does not open: labgate cannot ask GitLab about them.
    NoRefreshToken,
    /// The refresh grant refused (`invalid_grant`).
    GrantRefused,
    /// Refreshed; userinfo then answered with these claims.
    Claims {
        claims: Claims,
        refresh: Option<String>,
    },
    /// Refreshed; userinfo then refused the new token for this person (401, 404).
    UserinfoRefused {
        why: String,
        refresh: Option<String>,
    },
    /// Refreshed; userinfo then answered an error that may be GitLab's (a 403, a 5xx, a
    /// malformed answer): this person's, if others' userinfo in the run answered.
    UserinfoError {
        why: String,
        refresh: Option<String>,
    },
    /// GitLab failing: the run fails. The refresh token GitLab gave before, if any, is kept.
    Failed {
        error: GitlabError,
        refresh: Option<String>,
    },
}

impl Answer {
    /// The new refresh token GitLab issued in this run, if any.
    fn refresh(&self) -> Option<&str> {
        match self {
            Answer::Claims { refresh, .. }
            | Answer::UserinfoRefused { refresh, .. }
            | Answer::UserinfoError { refresh, .. }
            | Answer::Failed { refresh, .. } => refresh.as_deref(),
            _ => None,
        }
    }
}

/// Asks GitLab about every candidate, with at most [`MAX_CONCURRENT_CALLS`] calls at once
/// (as many workers, each making one call at a time); the answers in the candidates' order.
/// Once one answer says GitLab is failing, the workers ask no one else.
fn ask_gitlab(
    gitlab: &Client,
    settings: &GitlabSettings,
    candidates: &[gitlab_revalidation::Candidate],
) -> Vec<Answer> {
    let next = AtomicUsize::new(0);
    let failing = AtomicBool::new(false);
    let pause = RatePause::default();
    let answers: Vec<Mutex<Answer>> = candidates
        .iter()
        .map(|_| Mutex::new(Answer::NotAsked))
        .collect();
    let workers = MAX_CONCURRENT_CALLS.min(candidates.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= candidates.len() || failing.load(Ordering::SeqCst) {
                    break;
                }
                let answer = ask_one(gitlab, settings, &candidates[i], &pause);
                if matches!(answer, Answer::Failed { .. }) {
                    failing.store(true, Ordering::SeqCst);
                }
                *answers[i].lock().unwrap_or_else(|p| p.into_inner()) = answer;
            });
        }
    });
    answers
        .into_iter()
        .map(|a| a.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

/// The time before which no worker calls GitLab: the last `Retry-After` seen, shared.
#[derive(Default)]
struct RatePause(Mutex<Option<Instant>>);

impl RatePause {
    /// Waits until the pause is over.
    fn wait(&self) {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = until {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
    }

    /// Pauses every worker for `wait` from now.
    fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none_or(|current| current < until) {
            *slot = Some(until);
        }
    }
}

/// A call to GitLab, made again after each 429 whose wait fits the caps (the wait shared with
/// every worker), at most [`MAX_RATE_WAITS`] times.
fn with_rate_waits<T>(
    pause: &RatePause,
    mut call: impl FnMut(Instant) -> Result<T, GitlabError>,
) -> Result<T, GitlabError> {
    let mut waits = 0;
    loop {
        pause.wait();
        match call(Instant::now() + CALL_BUDGET) {
            Err(GitlabError::RateLimited { retry_after, .. }) if waits < MAX_RATE_WAITS => {
                let wait = Duration::from_secs(retry_after.unwrap_or(1).max(1));
                if wait > MAX_RATE_WAIT {
                    return Err(GitlabError::RateLimited {
                        step: "revalidation",
                        retry_after,
                    });
                }
                waits += 1;
                pause.pause(wait);
            }
            other => return other,
        }
    }
}

/// Asks GitLab about one candidate: the refresh grant with its kept token, then userinfo with
/// the new access token.
fn ask_one(
    gitlab: &Client,
    settings: &GitlabSettings,
    candidate: &gitlab_revalidation::Candidate,
    pause: &RatePause,
) -> Answer {
    let Some(kept) = candidate
        .sealed
        .as_deref()
        .and_then(|sealed| signin::open_refresh_token(candidate.user_id, sealed).ok())
    else {
        return Answer::NoRefreshToken;
    };
    // A 429 is answered before GitLab handles the grant: waiting and trying again is safe.
    let tokens = match with_rate_waits(pause, |deadline| gitlab.refresh(settings, &kept, deadline))
    {
        Ok(tokens) => tokens,
        Err(e) if e.grant_refused() => return Answer::GrantRefused,
        Err(error) => {
            return Answer::Failed {
                error,
                refresh: None,
            }
        }
    };
    let refresh = tokens.refresh.clone();
    match with_rate_waits(pause, |deadline| {
        gitlab.userinfo(settings, &tokens.access, deadline)
    }) {
        Ok(info) => Answer::Claims {
            claims: signin::claims_of(info),
            refresh,
        },
        Err(GitlabError::Status {
            status: status @ (401 | 404),
            ..
        }) => Answer::UserinfoRefused {
            why: format!("GitLab's userinfo refused the person's new token (HTTP {status})"),
            refresh,
        },
        Err(e @ (GitlabError::Status { .. } | GitlabError::Malformed { .. })) => {
            Answer::UserinfoError {
                why: format!("GitLab's userinfo failed for this person only: {e}"),
                refresh,
            }
        }
        Err(error) => Answer::Failed { error, refresh },
    }
}

/// `None` when the answers may be acted on; otherwise why the run fails (GitLab failing).
fn verdict(answers: &[Answer]) -> Option<String> {
    if let Some(Answer::Failed { error, .. }) =
        answers.iter().find(|a| matches!(a, Answer::Failed { .. }))
    {
        return Some(match error.configuration_fix() {
            Some(fix) => format!("{error}; fix: {fix}"),
            None => error.to_string(),
        });
    }
    let some_answered = answers.iter().any(|a| matches!(a, Answer::Claims { .. }));
    let errors = answers
        .iter()
        .filter_map(|a| match a {
            Answer::UserinfoError { why, .. } => Some(why),
            _ => None,
        })
        .next();
    match errors {
        Some(why) if !some_answered => Some(format!(
            "userinfo failed for every person tried ({why}): GitLab failing, or the \
             application's scopes changed"
        )),
        _ => None,
    }
}

/// The identity of a run being recorded.
struct Record {
    id: i64,
    trigger: Trigger,
    started_at: i64,
    finished_at: i64,
}

/// A person whose access a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutOff {
    pub user_id: i64,
    pub login: String,
    pub reason: String,
    pub sessions_ended: usize,
}

/// Makes the writes the answers call for and records the run, in one transaction. When the
/// run failed (`failure`), only the refresh tokens GitLab rotated are kept.
fn apply(
    conn: &mut rusqlite::Connection,
    config: &GitlabConfig,
    candidates: &[gitlab_revalidation::Candidate],
    answers: Vec<Answer>,
    failure: Option<String>,
    record: Record,
) -> AppResult<Run> {
    let now = record.finished_at;
    let tx = db::write_tx(conn)?;
    let mut checked = 0;
    let mut updated = 0;
    let mut cut_offs: Vec<CutOff> = Vec::new();
    for (candidate, answer) in candidates.iter().zip(answers) {
        if matches!(answer, Answer::NotAsked) {
            continue;
        }
        // A sign-in, deactivation or link since the run read this user: that is newer than
        // what GitLab said here, and its own token stays.
        if gitlab_revalidation::refresh_token(&tx, candidate.user_id)? != candidate.sealed {
            continue;
        }
        if let Some(refresh) = answer.refresh() {
            signin::keep_refresh_token(&tx, candidate.user_id, Some(refresh), now)?;
        }
        if failure.is_some() {
            continue;
        }
        checked += 1;
        let reason = match answer {
            Answer::Claims { claims, .. } if claims.id.to_string() != candidate.gitlab_id => {
                Some("GitLab answered for another account".to_string())
            }
            Answer::Claims { claims, .. } => match signin::recheck(&tx, config, &claims, now)? {
                Rechecked::Admitted { changed, .. } => {
                    updated += usize::from(changed);
                    None
                }
                Rechecked::Refused(refused) => Some(format!(
                    "no longer admitted by the sign-in rules: {}",
                    refused.refusal.tag()
                )),
            },
            Answer::NoRefreshToken => Some(
                "no GitLab refresh token to ask with (signed in before labgate kept them, or \
                 sealed with another key)"
                    .to_string(),
            ),
            Answer::GrantRefused => Some(
                "GitLab refused the refresh (invalid_grant): labgate's authorization revoked, \
                 or the person deleted"
                    .to_string(),
            ),
            Answer::UserinfoRefused { why, .. } => {
                Some(format!("{why}: the person is blocked or deleted in GitLab"))
            }
            Answer::UserinfoError { why, .. } => Some(why),
            Answer::NotAsked | Answer::Failed { .. } => None,
        };
        if let Some(reason) = reason {
            cut_offs.push(end_access(&tx, candidate, &reason, now)?);
        }
    }
    let listed: Vec<_> = cut_offs
        .iter()
        .take(LISTED_CUT_OFFS)
        .map(|c| json!({ "login": c.login, "reason": c.reason }))
        .collect();
    let run = Run {
        id: record.id,
        trigger: record.trigger.name().to_string(),
        status: if failure.is_some() {
            "FAILED"
        } else {
            "SUCCESS"
        }
        .to_string(),
        started_at: record.started_at,
        finished_at: Some(record.finished_at),
        users_checked: checked,
        users_updated: updated as i64,
        users_cut_off: cut_offs.len() as i64,
        sessions_ended: cut_offs.iter().map(|c| c.sessions_ended as i64).sum(),
        cut_off: serde_json::Value::from(listed).to_string(),
        error: failure,
    };
    record_run(&tx, &run, &cut_offs)?;
    gitlab_revalidation::finish_run(&tx, &run)?;
    tx.commit()?;
    let succeeded = run.error.is_none().then_some(record.finished_at);
    let outcome = if succeeded.is_some() {
        "success"
    } else {
        "failed"
    };
    crate::metrics::run(crate::metrics::Task::Revalidation, outcome, succeeded);
    for cut_off in &cut_offs {
        log_cut_off(record.id, cut_off);
    }
    Ok(run)
}

/// Why a run found unfinished at start failed: the process running it ended first. A run
/// decides and writes in one transaction at its end, but keeps each refresh token GitLab
/// rotates as it goes (the old one no longer works).
pub const CUT_SHORT: &str = "labgate stopped before the run ended (stopped, crashed or \
     killed): nothing changed for anyone but the refresh tokens GitLab rotated meanwhile";

/// Records the runs still marked running, which ended with the process that ran them, as
/// failed ([`CUT_SHORT`]), each with its audit event, its log line and its count in the
/// metrics; returns how many. `now` in milliseconds.
pub fn fail_unfinished(conn: &mut rusqlite::Connection, now: i64) -> AppResult<usize> {
    use crate::audit::{self, Action, By, Event, Outcome};
    let tx = db::write_tx(conn)?;
    let runs = gitlab_revalidation::fail_unfinished(&tx, CUT_SHORT, now / 1000)?;
    for (id, trigger) in &runs {
        log::warn!("revalidation: run {id}: {CUT_SHORT}");
        let event = Event::new(Action::RevalidationRun, Outcome::Failed, None)
            .with("run", *id)
            .with("trigger", trigger.as_str())
            .because(CUT_SHORT);
        audit::record(&tx, &By::system(now), event)?;
    }
    tx.commit()?;
    for _ in &runs {
        crate::metrics::run(crate::metrics::Task::Revalidation, "failed", None);
    }
    Ok(runs.len())
}

/// Records the run in the audit log, in its transaction: each person whose access it ended,
/// with the reason, and the run itself with its counts (failed, with why, when it did).
fn record_run(tx: &rusqlite::Connection, run: &Run, cut_offs: &[CutOff]) -> AppResult<()> {
    use crate::audit::{self, Action, By, Event, Outcome};
    let by = By::system(run.finished_at.unwrap_or(run.started_at) * 1000);
    for c in cut_offs {
        let event = Event::new(Action::SessionEnded, Outcome::Ok, Some(&c.login))
            .because(&c.reason)
            .with("by", "revalidation")
            .with("sessions", c.sessions_ended)
            .with("apiTokens", "held until a GitLab sign-in")
            .with("run", run.id);
        audit::record(tx, &by, event)?;
    }
    let outcome = if run.error.is_some() {
        Outcome::Failed
    } else {
        Outcome::Ok
    };
    let mut event = Event::new(Action::RevalidationRun, outcome, None)
        .with("run", run.id)
        .with("trigger", run.trigger.as_str())
        .with("usersChecked", run.users_checked)
        .with("usersUpdated", run.users_updated)
        .with("usersCutOff", run.users_cut_off)
        .with("sessionsEnded", run.sessions_ended);
    if let Some(error) = &run.error {
        event = event.because(error);
    }
    audit::record(tx, &by, event)
}

/// Ends the access of a person GitLab no longer admits, in `tx`: every session ends, the API
/// tokens are held (refused until the person signs in with GitLab again, which releases them),
/// and the refresh token is forgotten. Everything a run records about a person it cut off is
/// written here, in the run's transaction.
pub fn end_access(
    tx: &rusqlite::Connection,
    candidate: &gitlab_revalidation::Candidate,
    reason: &str,
    now: i64,
) -> AppResult<CutOff> {
    let sessions_ended = sessions::delete_for_user(tx, candidate.user_id)?;
    gitlab_revalidation::hold(tx, candidate.user_id, reason, now)?;
    gitlab_revalidation::delete_refresh_token(tx, candidate.user_id)?;
    Ok(CutOff {
        user_id: candidate.user_id,
        login: candidate.login.clone(),
        reason: reason.to_string(),
        sessions_ended,
    })
}

/// The log line of a person cut off, once the run's transaction is committed.
fn log_cut_off(run_id: i64, cut_off: &CutOff) {
    log::warn!(
        "revalidation run={run_id} login={:?} cut off: {}; {} sessions ended, API tokens \
         refused until a GitLab sign-in",
        cut_off.login,
        cut_off.reason,
        cut_off.sessions_ended
    );
}

#[cfg(test)]
mod tests;
