//! labgate: GitLab sign-in and user administration in one binary and one SQLite file.
//!
//! `main` parses the command line and calls [`start`]; integration tests run the binary.
//!
//! The modules stand in layers, each using only its own layer and those below it, so that each
//! can be read and tested without the ones above (`cargo test --test layers` checks it):
//!
//! 1. plain values and rules: [`model`], [`error`], [`crypto`], [`config`], [`logging`],
//!    [`process`], [`authz`];
//! 2. the store: [`db`];
//! 3. tools of the operations: [`gitlab`] (the GitLab client), [`throttle`];
//! 4. the operations, the same for pages and API: [`settings`], [`gitlab_config`],
//!    [`gitlab_check`], [`provisioning`], [`gitlab_provisioning`], [`accounts`], [`signin`];
//! 5. the HTTP plumbing that pages and API share: [`web`] (state, request, caller, context,
//!    views, dispatch);
//! 6. the handlers: [`pages`] (HTML) and [`api`] (JSON), which never use each other;
//! 7. the route table, [`routes`], which names every handler;
//! 8. [`server`], which serves a route table it is handed;
//! 9. this crate root, which hands the route table and the state to the server.

pub mod accounts;
pub mod api;
pub mod authz;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod gitlab;
pub mod gitlab_check;
pub mod gitlab_config;
pub mod gitlab_provisioning;
pub mod logging;
pub mod model;
pub mod pages;
pub mod process;
pub mod provisioning;
pub mod routes;
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

/// Writes a file readable by its owner only (0600).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Starts serving with an already prepared store; returns the bound address and the state.
pub fn start(config: Config) -> Result<(std::net::SocketAddr, Arc<web::App>), String> {
    let server_id = {
        let conn = db::open(&config.db_path()).map_err(|e| format!("database: {e}"))?;
        db::settings::get(&conn, db::settings::KEY_SERVER_ID)
            .map_err(|e| format!("database: {e}"))?
            .unwrap_or_default()
    };
    let gitlab = gitlab::Client::new(config.ca_file.as_deref())?;
    let listen = config.listen;
    let listen_text = config.listen_text.clone();
    let (bound, app) = server::spawn(listen, routes::routes(), |bound| {
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
    app.provisioning
        .spawn_scheduler()
        .map_err(|e| format!("the provisioning scheduler could not start: {e}"))?;
    Ok((bound, app))
}
