//! labgate: GitLab sign-in and user administration in one binary and one SQLite file.
//!
//! `main` parses the command line and calls [`start`]; integration tests run the binary.
//!
//! The modules stand in layers, each using only its own layer and those below it, so that each
//! can be read and tested without the ones above (`cargo test --test layers` checks it):
//!
//! 1. plain values and rules: [`model`], [`error`], [`crypto`], [`secrets`], [`config`],
//!    [`logging`], [`metrics`], [`process`], [`authz`], and the gate's rules and proxy snippets
//!    ([`gate::rules`], [`gate::snippets`]);
//! 2. the store: [`db`];
//! 3. tools of the operations: [`gitlab`] (the GitLab client), [`throttle`];
//! 4. the operations, the same for pages and API: [`audit`], [`settings`], [`gitlab_config`],
//!    [`gitlab_check`], [`provisioning`], [`accounts`], [`signin`], [`revalidation`], [`gate`]
//!    (the applications behind labgate); then [`gitlab_provisioning`], the provisioning runs;
//! 5. the HTTP plumbing that pages and API share: [`web`] (state, request, caller, context,
//!    views, dispatch);
//! 6. the handlers: [`pages`] (HTML) and [`api`] (JSON), which never use each other;
//! 7. the route table, [`routes`], which names every handler;
//! 8. [`server`], which serves a route table it is handed;
//! 9. this crate root, which hands the route table and the state to the server.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod authz;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod gate;
pub mod gitlab;
pub mod gitlab_check;
pub mod gitlab_config;
pub mod gitlab_provisioning;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pages;
pub mod process;
pub mod provisioning;
pub mod revalidation;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod signin;
pub mod throttle;
pub mod web;

use config::Config;
use std::path::Path;
use std::sync::Arc;

/// Creates the data directory (mode 0700) if missing and checks it can be written.
pub fn prepare_data_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| format!("--data-dir {shown}: {}", describe_io(&e)))?;
    } else if !dir.is_dir() {
        return Err(format!("--data-dir {shown}: exists and is not a directory"));
    }
    let probe = dir.join(".labgate-write-test");
    std::fs::write(&probe, b"").map_err(|e| {
        format!(
            "--data-dir {shown}: {} (labgate must be able to write there)",
            describe_io(&e)
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Opens the database, migrates it and runs the first-start bootstrap. Returns the generated
/// admin password when one was made (already written to `initial-admin-password`).
pub fn open_store(config: &Config) -> Result<Option<String>, String> {
    let path = config.db_path();
    // The database holds password hashes and the GitLab secret: owner-only, like its folder.
    // SQLite gives its -wal and -shm files the same mode.
    if !path.exists() {
        write_private(&path, "").map_err(|e| format!("database {}: {e}", path.display()))?;
    }
    let mut conn = db::open(&path).map_err(|e| format!("database {}: {e}", path.display()))?;
    db::migrate(&mut conn).map_err(|e| format!("database {}: {e}", path.display()))?;
    seal_secrets(config, &mut conn)?;
    let now = chrono::Utc::now().timestamp();
    let (_, generated) = db::bootstrap(&mut conn, config.admin_password.as_deref(), now)
        .map_err(|e| format!("database {}: first-start setup failed: {e}", path.display()))?;
    if let Some(password) = &generated {
        let file = config.data_dir.join("initial-admin-password");
        write_private(&file, &format!("{password}\n"))
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(generated)
}

pub use process::write_private;

/// Loads (or makes, at the first start) the key file and installs it, then seals whatever
/// secret an older labgate stored in clear and erases the clear bytes from the file. Warns, with
/// the fix, about a stored secret that does not open with this key file.
fn seal_secrets(config: &Config, conn: &mut rusqlite::Connection) -> Result<(), String> {
    let (keyring, created) = secrets::load_or_create(&config.data_dir)?;
    let keyring = secrets::install(keyring);
    if created {
        log::info!(
            "key file {} made (key {}): keep it with every backup of labgate.db",
            secrets::key_path(&config.data_dir).display(),
            keyring.current_id()
        );
    }
    let db_error = |e: error::AppError| format!("database {}: {e}", config.db_path().display());
    let sealed = settings::seal_clear_values(conn).map_err(db_error)?;
    if !sealed.is_empty() {
        db::maintenance::erase_freed_space(conn)
            .map_err(|e| format!("database {}: {e}", config.db_path().display()))?;
        log::info!(
            "encrypted at rest with {}: {} (stored in clear by an older labgate)",
            secrets::KEY_FILE,
            sealed.join(", ")
        );
    }
    for key in settings::ENCRYPTED {
        if let settings::Secret::Unreadable(why) = settings::secret(conn, key).map_err(db_error)? {
            log::warn!(
                "setting {key}: {why}: enter it again (for the GitLab secret: Settings, \
                 Authentication, GitLab, Edit), or stop labgate and put back the {} that was \
                 backed up with this database",
                secrets::KEY_FILE
            );
        }
    }
    Ok(())
}

/// Records the revalidation and provisioning runs still marked running as failed: the process
/// that ran them is gone. `now` in milliseconds.
pub fn fail_unfinished_runs(conn: &mut rusqlite::Connection, now: i64) -> error::AppResult<()> {
    revalidation::fail_unfinished(conn, now)?;
    gitlab_provisioning::fail_unfinished(conn, now)?;
    Ok(())
}

/// Starts serving with an already prepared store; returns the bound address and the state.
pub fn start(config: Config) -> Result<(std::net::SocketAddr, Arc<web::App>), String> {
    let server_id = {
        let mut conn = db::open(&config.db_path()).map_err(|e| format!("database: {e}"))?;
        fail_unfinished_runs(&mut conn, chrono::Utc::now().timestamp_millis())
            .map_err(|e| format!("recording the runs cut short: {e}"))?;
        db::settings::get(&conn, db::settings::KEY_SERVER_ID)
            .map_err(|e| format!("database: {e}"))?
            .unwrap_or_default()
    };
    let gitlab = gitlab::Client::new(config.ca_file.as_deref())?;
    let listen = config.listen;
    let listen_text = config.listen_text.clone();
    let db_path = config.db_path();
    let served = server::spawn(listen, routes::routes(), |bound| {
        Arc::new(web::App::new(
            config.clone(),
            bound,
            server_id.clone(),
            gitlab.clone(),
            web::POOL_SIZE,
        ))
    })
    .map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::AddrInUse => "address already in use (is another labgate running? choose another port with --listen)".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges; choose another port with --listen)".to_string(),
            std::io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_string(),
            _ => e.to_string(),
        };
        format!("--listen {listen_text}: {reason}")
    })?;
    schedule_revalidation(Arc::clone(&served.1));
    spawn_maintenance(db_path, Arc::clone(&served.1));
    served
        .1
        .provisioning
        .spawn_scheduler()
        .map_err(|e| format!("the provisioning scheduler could not start: {e}"))?;
    Ok(served)
}

/// How often the schedule looks whether a revalidation is due.
const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the thread that runs the revalidation of GitLab users when it is due (see
/// [`revalidation::run_if_due`]). A failing run is recorded and logged by the run itself; an
/// error before it (the database busy) is logged, and the next tick tries again.
fn schedule_revalidation(app: Arc<web::App>) {
    let spawned = std::thread::Builder::new()
        .name("revalidation".into())
        .spawn(move || loop {
            std::thread::sleep(SCHEDULE_TICK);
            let (pool, gitlab, state) = (&app.pool, &app.gitlab, &app.revalidations);
            if let Err(e) = revalidation::run_if_due(pool, gitlab, state, app.now()) {
                log::warn!("revalidation: the scheduled run could not start: {e}");
            }
        });
    if let Err(e) = spawned {
        log::error!("revalidation: the schedule's thread could not start: {e}");
    }
}

/// How often the maintenance moves pending audit events into the log.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Every how many flushes it looks at the size and age of the log.
const FLUSHES_PER_PRUNE_CHECK: u32 = 60;

/// Starts the thread that keeps the audit log: it moves the pending events into the log every
/// second ([`audit::flush`]) and removes old events ([`audit::Retention::tick`]) at start, then
/// every minute, with a connection of its own (never one of the pool's). Its failures are
/// logged and it tries again later; it ends with the process.
fn spawn_maintenance(db_path: std::path::PathBuf, app: Arc<web::App>) {
    let work = move || loop {
        match db::open(&db_path) {
            Ok(mut conn) => {
                let mut flushes = 0;
                loop {
                    if flushes % FLUSHES_PER_PRUNE_CHECK == 0 {
                        match app.retention.tick(&mut conn, app.now_ms()) {
                            Ok(pruned) if pruned != audit::Pruned::default() => log::info!(
                                "audit: removed {} events older than the retention and {} past the cap",
                                pruned.expired,
                                pruned.over_cap
                            ),
                            Ok(_) => {}
                            Err(e) => log::warn!("audit: removing old events failed: {e}"),
                        }
                    } else if let Err(e) = audit::flush(&mut conn) {
                        log::warn!("audit: moving pending events into the log failed: {e}");
                    }
                    flushes = flushes.wrapping_add(1);
                    std::thread::sleep(FLUSH_EVERY);
                }
            }
            Err(e) => {
                log::warn!("audit: maintenance cannot open the database: {e}");
                std::thread::sleep(FLUSH_EVERY * FLUSHES_PER_PRUNE_CHECK);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(work)
    {
        log::warn!("audit: the maintenance thread did not start ({e}); old events stay");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use db::gitlab_provisioning::{self as store, Run};

    fn finished(id: i64, at: i64) -> Run {
        Run {
            id,
            status: "SUCCESS".into(),
            trigger: "MANUAL".into(),
            started_at: at,
            finished_at: Some(at + 1),
            groups_read: 3,
            users_read: 7,
            changes: "{}".into(),
            error: None,
            held: None,
            warnings: None,
        }
    }

    #[test]
    fn runs_found_unfinished_at_start_are_failed_each_with_its_event() {
        let mut conn = db::test_db();
        let provisioning = store::start_run(&conn, "MANUAL", 5_000, "{}").unwrap();
        let revalidation = db::gitlab_revalidation::start_run(&conn, "SCHEDULE", 5).unwrap();
        let done = store::start_run(&conn, "MANUAL", 6_000, "{}").unwrap();
        store::finish_run(&conn, &finished(done, 6_000)).unwrap();
        fail_unfinished_runs(&mut conn, 9_000).unwrap();
        let run = store::runs(&conn, 2).unwrap();
        assert_eq!(
            (run[1].id, run[1].status.as_str(), run[1].finished_at),
            (provisioning, "FAILED", Some(9_000))
        );
        assert_eq!(run[0].status, "SUCCESS", "a finished run stays as it ended");
        let revalidated = db::gitlab_revalidation::recent_runs(&conn, 1).unwrap();
        assert_eq!(
            (revalidated[0].status.as_str(), revalidated[0].finished_at),
            ("FAILED", Some(9))
        );
        db::audit::move_pending(&conn).unwrap();
        let failed = db::audit::Filter {
            outcome: Some("failed".into()),
            ..db::audit::Filter::default()
        };
        let mut events: Vec<(String, String, String, i64)> = db::audit::page(&conn, &failed, 0, 10)
            .unwrap()
            .into_iter()
            .filter(|e| e.action.ends_with(".run"))
            .map(|e| {
                let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
                let run = detail["run"].as_i64().unwrap();
                (e.action, e.outcome, e.reason.unwrap_or_default(), run)
            })
            .collect();
        events.sort();
        assert_eq!(
            events,
            [
                (
                    "provisioning.run".into(),
                    "failed".into(),
                    crate::gitlab_provisioning::CUT_SHORT.into(),
                    provisioning
                ),
                (
                    "revalidation.run".into(),
                    "failed".into(),
                    crate::revalidation::CUT_SHORT.into(),
                    revalidation
                ),
            ]
        );
        fail_unfinished_runs(&mut conn, 10_000).unwrap();
        assert_eq!(
            db::audit::pending_count(&conn).unwrap(),
            0,
            "nothing more to record at the next start"
        );
    }
}
