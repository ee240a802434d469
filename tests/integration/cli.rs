//! The command line: --version, --help, first start, the generated admin
//! password, backup, break-glass password reset, and startup errors.

use crate::harness::*;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `labgate serve` expecting it to refuse to start; returns its stderr.
pub(crate) fn failed_start(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let run = run_cli_within(&all, envs, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("labgate {all:?} started instead of failing"));
    assert!(
        !run.status.success(),
        "labgate {all:?} exited with success; stderr:\n{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("labgate listening on"),
        "it listened: {}",
        run.stdout
    );
    run.stderr
}

#[test]
fn version_flag_prints_the_version() {
    let run = run_cli(&["--version"], &[]);
    assert!(run.status.success(), "{run:?}");
    assert!(run.stdout.contains(VERSION), "{run:?}");
}

#[test]
fn help_flag_lists_the_commands_and_flags() {
    let run = run_cli(&["--help"], &[]);
    assert!(run.status.success(), "{run:?}");
    for word in [
        "serve",
        "backup",
        "reset-password",
        "--listen",
        "--data-dir",
        "--base-url",
        "--ca-file",
        "--version",
    ] {
        assert!(
            run.stdout.contains(word),
            "--help lacks {word}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn unknown_flag_is_an_error() {
    let run = run_cli(&["serve", "--no-such-flag"], &[]);
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("--no-such-flag"), "{run:?}");
}

#[test]
fn first_start_creates_the_data_dir_admin_and_default_groups() {
    let lg = Labgate::start();
    assert_eq!(mode(&lg.data_dir()), 0o700, "data dir mode");
    assert!(lg.data_dir().join("labgate.db").is_file());
    let v = lg.admin().get("/api/users/current").expect_json(200);
    assert_eq!(v["login"], "admin", "{v}");
    let g = lg.admin().get("/api/user_groups/search").expect_json(200);
    let mut groups = names(&g["groups"]);
    groups.sort();
    assert_eq!(groups, vec!["administrators", "users"], "{g}");
    // No generated password when one was given.
    assert!(!lg.data_dir().join("initial-admin-password").exists());
}

#[test]
fn the_database_and_its_folder_are_private_to_the_owner() {
    let lg = Labgate::start();
    assert_eq!(mode(&lg.data_dir()), 0o700);
    for name in ["labgate.db", "labgate.db-wal", "labgate.db-shm"] {
        let file = lg.data_dir().join(name);
        if name == "labgate.db" || file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}

#[test]
fn generated_admin_password_is_printed_and_saved_with_mode_0600() {
    let lg = Launch::new().env_remove("LABGATE_ADMIN_PASSWORD").start();
    let file = lg.data_dir().join("initial-admin-password");
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    let password = std::fs::read_to_string(&file)
        .expect("read initial-admin-password")
        .trim()
        .to_string();
    assert!(password.len() >= 12, "generated password {password:?}");
    let printed = lg
        .stderr()
        .wait_for(Duration::from_secs(5), |l| l.contains(&password));
    assert!(
        printed.is_some(),
        "password not printed on stderr:\n{}",
        lg.stderr().joined()
    );
    assert!(
        !lg.stdout().joined().contains(&password),
        "printed on stdout"
    );
    lg.login("admin", &password);
}

#[test]
fn admin_with_generated_password_must_change_it_first() {
    let lg = Launch::new().env_remove("LABGATE_ADMIN_PASSWORD").start();
    let password = std::fs::read_to_string(lg.data_dir().join("initial-admin-password"))
        .expect("read initial-admin-password")
        .trim()
        .to_string();
    let mut admin = lg.login("admin", &password);
    let v = admin.get("/api/users/current").expect_json(200);
    assert_eq!(v["login"], "admin", "{v}");
    admin.get("/api/authentication/validate").expect_json(200);
    for path in [
        "/api/users/search",
        "/api/user_groups/search",
        "/api/system/health",
    ] {
        admin.get(path).expect_error(401);
    }
    admin
        .post_form("/api/user_groups/create", &[("name", "too-early")])
        .expect_error(401);
    admin
        .post_form("/api/user_tokens/generate", &[("name", "too-early")])
        .expect_error(401);
    lg.client()
        .basic("admin", &password)
        .get("/api/users/search")
        .expect_error(401);
    // Pages send them to change it.
    let to = admin.get("/admin/users").expect_redirect();
    assert!(!to.starts_with("/admin/users"), "{to}");

    admin
        .post_form(
            "/api/users/change_password",
            &[
                ("login", "admin"),
                ("previousPassword", &password),
                ("password", "my-own-admin-Passw0rd"),
            ],
        )
        .expect(204);
    let mut fresh = lg.login("admin", "my-own-admin-Passw0rd");
    fresh.get("/api/users/search").expect_json(200);
    fresh.get("/admin/users").expect_html(200);
}

#[test]
fn admin_password_file_variable_is_used() {
    let dir = TempDir::new("pwfile");
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file-Passw0rd-9").expect("write password file");
    let lg = Launch::new()
        .env_remove("LABGATE_ADMIN_PASSWORD")
        .env("LABGATE_ADMIN_PASSWORD_FILE", &file.to_string_lossy())
        .start();
    lg.login("admin", "from-file-Passw0rd-9");
}

#[test]
fn admin_password_and_its_file_together_are_an_error() {
    let dir = TempDir::new("pwboth");
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file-Passw0rd-9").expect("write password file");
    let data = dir.path().join("data");
    let stderr = failed_start(
        &["--data-dir", &data.to_string_lossy()],
        &[
            ("LABGATE_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("LABGATE_ADMIN_PASSWORD_FILE", &file.to_string_lossy()),
        ],
    );
    assert!(stderr.contains("LABGATE_ADMIN_PASSWORD"), "{stderr}");
}

#[test]
fn unusable_data_dir_is_a_named_startup_error() {
    let dir = TempDir::new("baddata");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write file");
    let data = file.join("data");
    let stderr = failed_start(
        &["--data-dir", &data.to_string_lossy()],
        &[("LABGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(stderr.contains("error"), "{stderr}");
}

#[test]
fn busy_listen_address_is_a_named_startup_error() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let dir = TempDir::new("busy");
    let data = dir.path().join("data");
    let run = run_cli_within(
        &[
            "serve",
            "--listen",
            &addr,
            "--data-dir",
            &data.to_string_lossy(),
        ],
        &[("LABGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        Duration::from_secs(15),
    )
    .expect("labgate started on a busy port");
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("--listen") || run.stderr.contains(&addr),
        "{}",
        run.stderr
    );
}

#[test]
fn newer_database_is_refused() {
    let mut lg = Labgate::start();
    lg.sigterm();
    lg.wait_exit(Duration::from_secs(15));
    let db = lg.data_dir().join("labgate.db");
    let wal = lg.data_dir().join("labgate.db-wal");
    assert!(
        std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true),
        "WAL not checkpointed at shutdown"
    );
    let mut bytes = std::fs::read(&db).expect("read db");
    // PRAGMA user_version lives at offset 60 of the header, big-endian.
    bytes[60..64].copy_from_slice(&9999u32.to_be_bytes());
    std::fs::write(&db, &bytes).expect("write db");
    let stderr = failed_start(
        &["--data-dir", &lg.data_dir().to_string_lossy()],
        &[("LABGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    assert!(stderr.contains("error"), "{stderr}");
}

#[test]
fn backup_while_serving_produces_a_restorable_sqlite_file() {
    let lg = Labgate::start();
    lg.create_user("saved", USER_PASSWORD);
    lg.create_group("saved-group");
    let token = lg.token_for("saved");
    let backup = lg.scratch().join("backup.db");
    let run = run_cli(
        &["backup", &backup.to_string_lossy()],
        &[("LABGATE_DATA_DIR", &lg.data_dir().to_string_lossy())],
    );
    assert!(run.status.success(), "{run:?}");
    let bytes = std::fs::read(&backup).expect("read backup");
    assert!(bytes.starts_with(b"SQLite format 3\0"), "not a SQLite file");
    // The server kept serving.
    lg.admin().get("/api/users/search").expect_json(200);

    // The copy is a working database.
    let restored = Launch::new().seed_db(&backup).start();
    let v = restored
        .admin()
        .get_query("/api/users/search", &[("q", "saved")])
        .expect_json(200);
    assert_eq!(logins(&v["users"]), vec!["saved".to_string()], "{v}");
    let me = restored
        .client()
        .bearer(&token)
        .get("/api/users/current")
        .expect_json(200);
    assert_eq!(me["login"], "saved", "{me}");
    let g = restored
        .admin()
        .get_query("/api/user_groups/search", &[("q", "saved-group")])
        .expect_json(200);
    assert_eq!(names(&g["groups"]), vec!["saved-group".to_string()], "{g}");
}

#[test]
fn backup_also_takes_data_dir_flag() {
    let lg = Labgate::start();
    let backup = lg.scratch().join("flag-backup.db");
    let run = run_cli(
        &[
            "backup",
            "--data-dir",
            &lg.data_dir().to_string_lossy(),
            &backup.to_string_lossy(),
        ],
        &[],
    );
    assert!(run.status.success(), "{run:?}");
    let bytes = std::fs::read(&backup).expect("read backup");
    assert!(bytes.starts_with(b"SQLite format 3\0"), "not a SQLite file");
}

#[test]
fn reset_password_prints_a_password_that_works() {
    let lg = Labgate::start();
    let run = run_cli(
        &[
            "admin",
            "reset-password",
            "--data-dir",
            &lg.data_dir().to_string_lossy(),
            "--login",
            "admin",
        ],
        &[],
    );
    assert!(run.status.success(), "{run:?}");
    let password = run
        .stdout
        .split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("no password printed: {run:?}"))
        .to_string();
    assert!(password.len() >= 12, "{password:?}");
    assert_ne!(password, ADMIN_PASSWORD);
    let v = lg
        .client()
        .basic("admin", &password)
        .get("/api/authentication/validate")
        .expect_json(200);
    assert_eq!(v["valid"], true, "{v}");
    lg.login("admin", &password);
    lg.client()
        .post_form(
            "/api/authentication/login",
            &[("login", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .expect_error(401);
}

#[test]
fn reset_password_of_unknown_login_fails() {
    let lg = Labgate::start();
    let run = run_cli(
        &[
            "admin",
            "reset-password",
            "--data-dir",
            &lg.data_dir().to_string_lossy(),
            "--login",
            "nobody-here",
        ],
        &[],
    );
    assert!(!run.status.success(), "{run:?}");
    assert!(run.stderr.contains("nobody-here"), "{run:?}");
}
