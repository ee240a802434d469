//! The labgate command line: parses it, wires the pieces, reports errors and exits.

use labgate::config::{Config, Flags};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How long a stop waits for the GitLab synchronization going on to stop reading and record
/// that it was stopped (it checks between two GitLab calls, each bounded by the client's
/// timeouts).
const PROVISIONING_STOP_WAIT: Duration = Duration::from_secs(5);

const HELP: &str = "\
labgate — GitLab sign-in and user administration in one binary

Usage:
  labgate [serve] [--listen ADDR] [--data-dir DIR] [--base-url URL] [--ca-file PEM]
                  [--trusted-proxies IP,IP]
  labgate admin reset-password [--login LOGIN] [--data-dir DIR]
  labgate backup FILE [--data-dir DIR]
  labgate --version | --help

Options (each also read from the environment variable shown):
  --listen ADDR          address to bind, port 0 picks a free port  [LABGATE_LISTEN, 127.0.0.1:9000]
  --data-dir DIR         holds labgate.db, created (0700) if missing  [LABGATE_DATA_DIR, ./labgate-data]
  --base-url URL         public URL browsers use                      [LABGATE_BASE_URL]
  --ca-file PEM          extra CA roots for outbound HTTPS            [LABGATE_CA_FILE]
  --trusted-proxies IPS  reverse proxies whose X-Forwarded-For is believed  [LABGATE_TRUSTED_PROXIES]

Environment:
  LABGATE_ADMIN_PASSWORD[_FILE]  password of `admin` on the very first start
  LABGATE_LOG                    debug | info | warn | error (default info)
";

enum Command {
    Serve,
    ResetPassword { login: String },
    Backup { file: String },
    Version,
    Help,
}

fn parse_args() -> Result<(Command, Flags), lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut flags = Flags::default();
    let mut words: Vec<String> = Vec::new();
    let mut login = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("listen") => flags.listen = Some(parser.value()?.string()?),
            Long("data-dir") => flags.data_dir = Some(parser.value()?.string()?),
            Long("base-url") => flags.base_url = Some(parser.value()?.string()?),
            Long("ca-file") => flags.ca_file = Some(parser.value()?.string()?),
            Long("trusted-proxies") => flags.trusted_proxies = Some(parser.value()?.string()?),
            Long("login") => login = Some(parser.value()?.string()?),
            Long("version") | Short('V') => return Ok((Command::Version, flags)),
            Long("help") | Short('h') => return Ok((Command::Help, flags)),
            Value(v) => words.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if login.is_some() && words.as_slice() != ["admin", "reset-password"] {
        return Err("--login only goes with `admin reset-password`".into());
    }
    let command = match words.as_slice() {
        [] | ["serve"] => Command::Serve,
        ["admin", "reset-password"] => Command::ResetPassword {
            login: login.unwrap_or_else(|| "admin".into()),
        },
        ["backup", file] => Command::Backup {
            file: (*file).to_string(),
        },
        ["backup"] => return Err("backup needs a destination: labgate backup FILE".into()),
        other => {
            return Err(format!("unknown command '{}'; see labgate --help", other.join(" ")).into())
        }
    };
    Ok((command, flags))
}

fn main() -> ExitCode {
    let result = run();
    labgate::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    labgate::process::tune_allocator();
    let (command, flags) = parse_args().map_err(|e| e.to_string())?;
    let env = |name: &str| std::env::var(name).ok();
    match command {
        Command::Version => {
            println!("labgate {}", labgate::web::VERSION);
            Ok(())
        }
        Command::Help => {
            print!("{HELP}");
            Ok(())
        }
        Command::Serve => {
            let level = labgate::logging::parse_level(env("LABGATE_LOG").as_deref())?;
            labgate::logging::init(level);
            let config = Config::from_flags(&flags, &env)?;
            serve(config)
        }
        Command::ResetPassword { login } => {
            let config = Config::from_flags(&flags, &env)?;
            labgate::prepare_data_dir(&config.data_dir)?;
            labgate::open_store(&config)?;
            let password = labgate::crypto::random_password();
            let mut conn =
                labgate::db::open(&config.db_path()).map_err(|e| format!("database: {e}"))?;
            reset_password(&mut conn, &login, &password)?;
            println!("{password}");
            eprintln!(
                "The password of '{login}' was reset; it must be changed at the next sign-in."
            );
            Ok(())
        }
        Command::Backup { file } => {
            let config = Config::from_flags(&flags, &env)?;
            let src = config.db_path();
            if !src.is_file() {
                return Err(format!(
                    "--data-dir {}: no labgate.db there",
                    config.data_dir.display()
                ));
            }
            let dest = std::path::Path::new(&file);
            if dest.exists() {
                return Err(format!("backup {file}: the file exists; choose a new name"));
            }
            labgate::db::backup(&src, dest).map_err(|e| format!("backup {file}: {e}"))?;
            eprintln!(
                "Backup written to {file} (mode 0600).\n\
                 Keep {key} with it: the GitLab secret and the GitLab refresh tokens in the \
                 backup are encrypted with that key. Restored without it, labgate makes a new \
                 key: enter the GitLab secret again, and people sign in with GitLab again.",
                key = labgate::secrets::key_path(&config.data_dir).display()
            );
            Ok(())
        }
    }
}

fn reset_password(
    conn: &mut rusqlite::Connection,
    login: &str,
    password: &str,
) -> Result<(), String> {
    use labgate::db::{self, sessions, users};
    let now = chrono::Utc::now().timestamp();
    let tx = db::write_tx(conn).map_err(|e| format!("database: {e}"))?;
    let user = users::find_by_login(&tx, login)
        .map_err(|e| format!("database: {e}"))?
        .ok_or_else(|| format!("--login {login}: no such user"))?;
    if !user.local {
        return Err(format!(
            "--login {login}: a GitLab user has no local password"
        ));
    }
    let hash = labgate::crypto::hash_password(password);
    users::set_password(&tx, user.id, &hash, true, now).map_err(|e| format!("database: {e}"))?;
    if !user.active {
        users::reactivate(&tx, user.id, now).map_err(|e| format!("database: {e}"))?;
    }
    sessions::delete_for_user(&tx, user.id).map_err(|e| format!("database: {e}"))?;
    tx.commit().map_err(|e| format!("database: {e}"))
}

fn serve(config: Config) -> Result<(), String> {
    // A panic (labgate's handlers catch theirs; oxhttp's connection threads may panic on a
    // malformed request target) is logged as one line, never a backtrace per request.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        log::error!(
            "panic in thread {:?}{location}: {message}",
            std::thread::current().name().unwrap_or("?")
        );
    }));
    labgate::prepare_data_dir(&config.data_dir)?;
    if let Some(password) = labgate::open_store(&config)? {
        eprintln!(
            "First start: the administrator account is 'admin' with password {password}\n\
             (also written to {}; you must change it at first sign-in)",
            config.data_dir.join("initial-admin-password").display()
        );
    }
    // Register signals before serving so none is missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("signals: {e}"))?;
    let (addr, app) = labgate::start(config)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "labgate listening on http://{addr}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: finishing in-flight requests, refusing new ones");
        if !labgate::server::drain(&app, labgate::server::DRAIN_TIMEOUT) {
            log::warn!("in-flight requests still running after the drain timeout; exiting anyway");
        }
        if !app.provisioning.stop(PROVISIONING_STOP_WAIT) {
            log::warn!(
                "the GitLab synchronization going on did not stop within {}s; exiting without \
                 its record",
                PROVISIONING_STOP_WAIT.as_secs()
            );
        }
        if let Ok(conn) = app.pool.get(std::time::Duration::from_secs(1)) {
            let _ = labgate::db::maintenance::checkpoint(&conn);
        }
    }
    log::info!("stopped");
    labgate::logging::flush();
    std::process::exit(0)
}
