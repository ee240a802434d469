//! Starting provisioning runs: one at a time, each on its own thread with its own database
//! connection (never one of the requests' pool), on demand ([`Runner::start`]) and on a
//! schedule ([`Runner::spawn_scheduler`]): every `labgate.gitlab.provisioning.intervalMinutes`
//! after the last run started, and at once when automatic provisioning is turned on. The
//! scheduler looks at the configuration again only after a commit of this process or when a
//! run is due, so an idle labgate reads nothing.

use super::{
    changes_json, held_for_approval, run, view_of, Outcome, Overview, Progress, Request, RunView,
    Trigger,
};
use crate::db::{self, gitlab_provisioning as store};
use crate::error::{AppError, AppResult};
use crate::gitlab::Client;
use crate::provisioning::auto;
use crate::settings;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Refusal while a run is going on.
pub const ALREADY_RUNNING: &str =
    "A GitLab synchronization is already running: wait for it to finish";

/// How often the scheduler wakes to look for a change of configuration or a run due.
const TICK: Duration = Duration::from_secs(1);

/// The run going on: what started it, when, and how far it has read.
#[derive(Debug, Clone)]
pub struct Running {
    pub trigger: Trigger,
    pub started_at: i64,
    pub progress: Arc<Progress>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
}

/// Starts runs, one at a time.
pub struct Runner {
    db_path: PathBuf,
    client: Client,
    state: Mutex<State>,
    /// Signalled when a run ends.
    ended: Condvar,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// When the next scheduled run is due, in milliseconds: `interval` after the last run started,
/// or now when none ever ran.
pub fn next_due(last_started_at: Option<i64>, interval_minutes: i64, now: i64) -> i64 {
    match last_started_at {
        Some(at) => at.saturating_add(interval_minutes.saturating_mul(60_000)),
        None => now,
    }
}

impl Runner {
    /// A runner using the database at `db_path` and the one GitLab client.
    pub fn new(db_path: PathBuf, client: Client) -> Runner {
        Runner {
            db_path,
            client,
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run going on, if any.
    pub fn running(&self) -> Option<Running> {
        self.state().running.clone()
    }

    /// Takes the one place of a running run; refused while one is going on.
    fn claim(&self, trigger: Trigger) -> AppResult<Arc<Progress>> {
        let mut state = self.state();
        if state.running.is_some() {
            return Err(AppError::Conflict(ALREADY_RUNNING.into()));
        }
        let running = Running {
            trigger,
            started_at: now_ms(),
            progress: Arc::new(Progress::default()),
        };
        let progress = Arc::clone(&running.progress);
        state.running = Some(running);
        Ok(progress)
    }

    /// Runs with the place taken by [`Runner::claim`], then gives it back.
    fn run_claimed(&self, request: &Request, progress: &Progress) {
        if let Err(e) = self.run_now(request, progress) {
            log::error!("gitlab provisioning: the run could not be recorded: {e:?}");
        }
        self.state().running = None;
        self.ended.notify_all();
    }

    /// Starts a run on its own thread; refused while one is going on.
    pub fn start(self: &Arc<Self>, request: Request) -> AppResult<()> {
        let progress = self.claim(request.trigger.unwrap_or(Trigger::Manual))?;
        let runner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("gitlab-provisioning".into())
            .spawn(move || runner.run_claimed(&request, &progress));
        if let Err(e) = spawned {
            self.state().running = None;
            return Err(AppError::Internal(format!("provisioning thread: {e}")));
        }
        Ok(())
    }

    /// Has the run going on, if any, stop reading GitLab and record that labgate stopped it
    /// (a run already writing finishes), and waits for it at most `timeout`; whether none is
    /// left. For labgate's shutdown: without it, a run cut short left no record at all.
    pub fn stop(&self, timeout: Duration) -> bool {
        if let Some(running) = &self.state().running {
            running.progress.stopping.store(true, Ordering::Relaxed);
        }
        self.wait_idle(timeout)
    }

    /// Waits until no run is going on, at most `timeout`; whether none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let state = self.state();
        let (state, _) = self
            .ended
            .wait_timeout_while(state, timeout, |s| s.running.is_some())
            .unwrap_or_else(|p| p.into_inner());
        state.running.is_none()
    }

    fn run_now(&self, request: &Request, progress: &Progress) -> AppResult<Outcome> {
        let mut conn = db::open(&self.db_path)?;
        let config = crate::gitlab_config::load(&conn)?;
        run(&mut conn, &self.client, &config, request, progress, &now_ms)
    }

    /// Starts the scheduler thread: a run every interval while automatic provisioning is on,
    /// and one at once when it is turned on. Scheduled runs run on that thread.
    pub fn spawn_scheduler(self: &Arc<Self>) -> std::io::Result<()> {
        let runner = Arc::clone(self);
        std::thread::Builder::new()
            .name("gitlab-provisioning-schedule".into())
            .spawn(move || runner.schedule())?;
        Ok(())
    }

    fn schedule(&self) {
        let mut seen_generation = None;
        let mut was_on: Option<bool> = None;
        let mut due: Option<i64> = None;
        let mut conn: Option<Connection> = None;
        // The first look is at once, so that the mode found at start is no change of mode.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                std::thread::sleep(TICK);
            }
            let generation = db::generation();
            let now = now_ms();
            if seen_generation == Some(generation) && due.is_none_or(|d| now < d) {
                continue;
            }
            seen_generation = Some(generation);
            if conn.is_none() {
                conn = db::open(&self.db_path).ok();
            }
            let found = match &conn {
                Some(conn) => when_due(conn, now),
                None => Err(AppError::Unavailable("database".into())),
            };
            let (on, next) = match found {
                Ok(found) => found,
                Err(e) => {
                    log::warn!("gitlab provisioning: cannot read the schedule: {e:?}");
                    conn = None;
                    continue;
                }
            };
            let turned_on = on && was_on == Some(false);
            was_on = Some(on);
            due = on.then_some(next);
            let trigger = match (turned_on, on && now >= next) {
                (true, _) => Trigger::ModeChange,
                (false, true) => Trigger::Schedule,
                (false, false) => continue,
            };
            let request = Request {
                trigger: Some(trigger),
                approved: None,
            };
            // Refused while a run started on demand goes on: that one is as good.
            if let Ok(progress) = self.claim(trigger) {
                self.run_claimed(&request, &progress);
            }
        }
    }
}

/// Whether automatic provisioning is on and can run, and when its next run is due (ms).
pub fn when_due(conn: &Connection, now: i64) -> AppResult<(bool, i64)> {
    let on = crate::gitlab_config::load(conn)?.provisions();
    let interval = settings::provisioning_interval_minutes(conn)?;
    let last = store::runs(conn, 1)?
        .into_iter()
        .next()
        .map(|r| r.started_at);
    Ok((on, next_due(last, interval, now)))
}

/// The run going on as the API and the page show it: groups read of groups known.
pub fn progress_of(running: &Running) -> (usize, usize) {
    (
        running.progress.groups_read.load(Ordering::Relaxed),
        running.progress.groups_known.load(Ordering::Relaxed),
    )
}

/// What the API and the GitLab tab show of automatic provisioning. The run going on is
/// recorded as `RUNNING` as soon as it starts; its progress is this process's to show.
pub fn status(conn: &Connection, runner: &Runner) -> AppResult<Overview> {
    let mut runs: Vec<RunView> = store::runs(conn, store::RUNS_KEPT)?
        .into_iter()
        .map(view_of)
        .collect();
    if let Some(running) = runner.running() {
        let (read, known) = progress_of(&running);
        let id = running.progress.run_id.load(Ordering::Relaxed);
        match runs.iter_mut().find(|r| r.id == Some(id)) {
            Some(run) if run.status == "RUNNING" => {
                run.groups_read = i64::try_from(read).unwrap_or(i64::MAX);
                run.progress = Some((read, known));
            }
            // Its end recorded, its thread not yet done: shown as it ended.
            Some(_) => {}
            // Claimed, its record not written yet.
            None => {
                runs.truncate(usize::try_from(store::RUNS_KEPT - 1).unwrap_or(0));
                runs.insert(
                    0,
                    RunView {
                        id: None,
                        status: "RUNNING".into(),
                        trigger: running.trigger.as_str().into(),
                        started_at: running.started_at,
                        finished_at: None,
                        groups_read: i64::try_from(read).unwrap_or(i64::MAX),
                        users_read: 0,
                        changes: changes_json(&auto::Changes::default()),
                        error: None,
                        progress: Some((read, known)),
                        held: Vec::new(),
                        warnings: Vec::new(),
                    },
                )
            }
        }
    }
    let (on, next) = when_due(conn, now_ms())?;
    Ok(Overview {
        runs,
        next_run_at: on.then_some(next),
    })
}

/// Refusal of "Synchronize now" while automatic provisioning cannot run.
pub const NOT_PROVISIONING: &str = "Automatic provisioning is off: choose it (provisioningType \
    AUTO_PROVISIONING) with its provisioning token and at least one allowed group first";
/// Refusal of "Apply anyway" when the latest run was not held.
pub const NOTHING_HELD: &str = "No held run to apply: the latest run was not held";

/// Starts a run on demand (`by`: the administrator); `force`: apply the deactivations of the
/// latest run, which was held. Refused while automatic provisioning cannot run, and while a
/// run goes on.
pub fn start(conn: &Connection, runner: &Arc<Runner>, force: bool, by: &str) -> AppResult<()> {
    let config = crate::gitlab_config::load(conn)?;
    if config.provisioning_token_lost() {
        return Err(AppError::rule(format!(
            "Cannot synchronize: {}",
            super::TOKEN_UNREADABLE
        )));
    }
    if !config.provisions() {
        return Err(AppError::rule(NOT_PROVISIONING));
    }
    let approved = if force {
        Some(held_for_approval(conn)?.ok_or_else(|| AppError::rule(NOTHING_HELD))?)
    } else {
        None
    };
    runner.start(Request {
        trigger: Some(Trigger::Manual),
        approved,
    })?;
    log::info!("admin: gitlab synchronization started by={by:?} force={force}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_going_on_is_shown_once_with_its_progress() {
        let path = db::temp_db("runner-status");
        let conn = db::open(&path).unwrap();
        let runner = Runner::new(path.clone(), Client::new(None).unwrap());
        let done = store::start_run(&conn, "SCHEDULE", 1_000, "{}").unwrap();
        let finished = store::Run {
            id: done,
            status: "SUCCESS".into(),
            trigger: "SCHEDULE".into(),
            started_at: 1_000,
            finished_at: Some(2_000),
            groups_read: 4,
            users_read: 9,
            changes: "{}".into(),
            error: None,
            held: None,
            warnings: None,
        };
        store::finish_run(&conn, &finished).unwrap();
        // Each run shown: its id, its status and its progress.
        type Shown = (Option<i64>, String, Option<(usize, usize)>);
        let shown = |runner: &Runner| -> Vec<Shown> {
            status(&conn, runner)
                .unwrap()
                .runs
                .into_iter()
                .map(|r| (r.id, r.status, r.progress))
                .collect()
        };
        let success = (Some(done), "SUCCESS".to_string(), None);
        assert_eq!(shown(&runner), std::slice::from_ref(&success));
        // Claimed, not recorded yet: shown from memory, first.
        let progress = runner.claim(Trigger::Manual).unwrap();
        progress.groups_known.store(10, Ordering::Relaxed);
        progress.groups_read.store(3, Ordering::Relaxed);
        let claimed = (None, "RUNNING".to_string(), Some((3, 10)));
        assert_eq!(shown(&runner), [claimed, success.clone()]);
        // Recorded: the record, with this process's progress.
        let id = store::start_run(&conn, "MANUAL", 3_000, "{}").unwrap();
        progress.run_id.store(id, Ordering::Relaxed);
        let recorded = (Some(id), "RUNNING".to_string(), Some((3, 10)));
        assert_eq!(shown(&runner), [recorded, success.clone()]);
        // Its end recorded, its thread not yet done: shown as it ended, once.
        store::finish_run(&conn, &store::Run { id, ..finished }).unwrap();
        let ended = (Some(id), "SUCCESS".to_string(), None);
        assert_eq!(shown(&runner), [ended, success]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn the_next_run_is_an_interval_after_the_last_one_started_or_now() {
        assert_eq!(next_due(None, 60, 5_000), 5_000);
        assert_eq!(next_due(Some(1_000), 60, 5_000), 1_000 + 3_600_000);
        assert_eq!(next_due(Some(1_000), 5, 0), 301_000);
    }
}
