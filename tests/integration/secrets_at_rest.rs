//! The key file and the secrets encrypted at rest: `labgate.key` made at the first start
//! (0600) and a damaged one refusing the start; the GitLab secret never in the database file or
//! its log in clear, whatever door stored it; a secret stored in clear by an older labgate
//! sealed at the first start, its clear bytes erased; a database restored without its key file
//! asking for the secret again; `labgate backup` writing an owner-only file and saying to keep
//! the key with it.

use crate::cli::{failed_start, mode};
use crate::gitlab_flow::{
    fake_with_app, gitlab_user, lab, set_setting, sign_in, APP_ID, APP_SECRET,
};
use crate::harness::*;
use crate::support_gitlab::FakeGitlab;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// How many migrations a labgate that stored the GitLab secret in clear had: a database it
/// made is built from that many, then started with this labgate.
const SCHEMA_WITH_CLEAR_SECRET: usize = 10;

/// The bytes of the database file and of its write-ahead log, as a copy of the data directory
/// without the key file would hold them.
pub(crate) fn store_bytes(data_dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["labgate.db", "labgate.db-wal"] {
        if let Ok(b) = std::fs::read(data_dir.join(name)) {
            bytes.extend(b);
        }
    }
    assert!(bytes.starts_with(b"SQLite format 3\0"), "no database read");
    bytes
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The stored value of a setting, read beside the running server.
fn stored_setting(data_dir: &Path, key: &str) -> Option<String> {
    let conn = rusqlite::Connection::open(data_dir.join("labgate.db")).expect("open the database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .ok()
}

#[test]
fn the_key_file_is_made_at_the_first_start_owner_only_and_kept() {
    let mut lg = Labgate::start();
    let key = lg.data_dir().join("labgate.key");
    assert_eq!(mode(&key), 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("key ")),
        "a key line: {text}"
    );
    lg.restart();
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "the same key after a restart"
    );
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn a_damaged_or_exposed_key_file_refuses_the_start_and_names_the_fix() {
    let mut lg = Labgate::start();
    lg.sigterm();
    lg.wait_exit(Duration::from_secs(15));
    let data = lg.data_dir().to_string_lossy().to_string();
    let key = lg.data_dir().join("labgate.key");
    let good = std::fs::read_to_string(&key).unwrap();
    let start = || failed_start(&["--data-dir", &data], &[]);

    std::fs::write(&key, "key 0a1b2c3d not-hex\n").unwrap();
    let stderr = start();
    assert!(
        stderr.contains("key file")
            && stderr.contains("labgate.key")
            && stderr.contains("malformed")
            && stderr.contains("restore the labgate.key"),
        "{stderr}"
    );

    std::fs::write(&key, &good).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let stderr = start();
    assert!(
        stderr.contains("readable by others") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    let stderr = start();
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn the_gitlab_secret_is_never_in_the_database_file_or_its_log_in_clear() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    // Through the settings API (`lab`), then the v2 resource, then the page's form.
    let v2 = "v2-secret-7d3f0b1e9c";
    lg.admin()
        .request(
            "PATCH",
            "/api/v2/dop-translation/gitlab-configurations/gitlab-configuration",
            &[("Content-Type", "application/merge-patch+json")],
            json!({ "secret": v2 }).to_string().as_bytes(),
        )
        .expect(200);
    let mut admin = lg.admin_client().with_xsrf(true);
    let page = admin.get("/admin/settings/gitlab/edit").expect_html(200);
    let csrf = csrf_field(&page).expect("csrf field");
    let form = "form-secret-52a8c4d6e0";
    admin
        .post_form(
            "/admin/settings/gitlab/edit",
            &[
                ("csrf_token", &csrf),
                ("applicationId", APP_ID),
                ("url", &gl.url()),
                ("secret", form),
            ],
        )
        .expect(303);
    let stored = store_bytes(&lg.data_dir());
    for secret in [APP_SECRET, v2, form] {
        assert!(!holds(&stored, secret), "{secret} in the database file");
    }
    let raw = stored_setting(&lg.data_dir(), "sonar.auth.gitlab.secret.secured").unwrap();
    assert!(raw.starts_with("lgs1:"), "{raw}");
    // Sealed, it still signs in: GitLab checks the secret at the token endpoint.
    set_setting(&lg, "sonar.auth.gitlab.secret.secured", &[APP_SECRET]);
    sign_in(&lg, &gl, "ann", "/").accepted("/");
    assert!(!holds(&store_bytes(&lg.data_dir()), APP_SECRET));
}

/// A database as a labgate that stored the secret in clear left it: its schema, the first
/// start's groups and administrator, and a GitLab configuration for `gl` whose secret was
/// changed once (the first value stays in the file's free space).
fn database_of_a_clear_secret_labgate(path: &Path, gl: &FakeGitlab, first_secret: &str) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for (i, sql) in labgate::db::migrations::MIGRATIONS[..SCHEMA_WITH_CLEAR_SECRET]
        .iter()
        .enumerate()
    {
        conn.execute_batch(sql).unwrap();
        conn.pragma_update(None, "user_version", i as i64 + 1)
            .unwrap();
    }
    labgate::db::bootstrap(&mut conn, Some(ADMIN_PASSWORD), 1_700_000_000).unwrap();
    let url = gl.url();
    let rows = [
        ("sonar.auth.gitlab.url", url.as_str()),
        ("sonar.auth.gitlab.applicationId.secured", APP_ID),
        ("sonar.auth.gitlab.secret.secured", first_secret),
        ("sonar.auth.gitlab.enabled", "true"),
        ("sonar.auth.gitlab.secret.secured", APP_SECRET),
    ];
    for (key, value) in rows {
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )
        .unwrap();
    }
}

#[test]
fn a_secret_stored_in_clear_by_an_older_labgate_is_sealed_at_the_first_start_and_erased() {
    let gl = fake_with_app();
    gitlab_user(&gl, 1001, "ann");
    let scratch = TempDir::new("clear-secret");
    let old = scratch.path().join("old.db");
    let first = "first-secret-9e1c77a0b3";
    database_of_a_clear_secret_labgate(&old, &gl, first);
    let before = std::fs::read(&old).unwrap();
    assert!(
        holds(&before, APP_SECRET),
        "the older database holds the secret in clear"
    );

    let mut lg = Launch::new().seed_db(&old).start();
    let stored = store_bytes(&lg.data_dir());
    for secret in [APP_SECRET, first] {
        assert!(!holds(&stored, secret), "{secret} left in the database");
    }
    let sealed = stored_setting(&lg.data_dir(), "sonar.auth.gitlab.secret.secured").unwrap();
    assert!(sealed.starts_with("lgs1:"), "{sealed}");
    // The sealed secret is the one GitLab knows.
    sign_in(&lg, &gl, "ann", "/").accepted("/");

    lg.restart();
    assert_eq!(
        stored_setting(&lg.data_dir(), "sonar.auth.gitlab.secret.secured").as_deref(),
        Some(sealed.as_str()),
        "a later start seals nothing again"
    );
    sign_in(&lg, &gl, "ann", "/").accepted("/");
}

#[test]
fn a_database_restored_without_its_key_file_asks_for_the_secret_again() {
    let (lg, gl) = lab(&[]);
    gitlab_user(&gl, 1001, "ann");
    let backup = lg.scratch().join("no-key.db");
    let run = run_cli(
        &["backup", &backup.to_string_lossy()],
        &[("LABGATE_DATA_DIR", &lg.data_dir().to_string_lossy())],
    );
    assert!(run.status.success(), "{run:?}");

    // Restored alone: the new labgate makes a new key, which does not open the old secret.
    let restored = Launch::new().seed_db(&backup).start();
    assert!(
        restored
            .stderr()
            .wait_for(Duration::from_secs(5), |l| l.contains("enter it again"))
            .is_some(),
        "a warning at start: {}",
        restored.stderr().joined()
    );
    let mut admin = restored.admin();
    let tab = html_unescape(
        &admin
            .get("/admin/settings?category=authentication")
            .expect_html(200),
    );
    assert!(
        tab.contains("id=\"gitlab-secret-unreadable\"") && tab.contains("Enter the secret again"),
        "{tab}"
    );
    let config = admin
        .get("/api/v2/dop-translation/gitlab-configurations/gitlab-configuration")
        .expect_json(200);
    assert_eq!(config["isSecretSet"], false, "{config}");
    let login = restored.client().get("/sessions/new").expect_html(200);
    assert!(!login.contains("/sessions/init/gitlab"), "{login}");

    // Entered again, it works.
    set_setting(&restored, "sonar.auth.gitlab.secret.secured", &[APP_SECRET]);
    sign_in(&restored, &gl, "ann", "/").accepted("/");
}

#[test]
fn backup_is_owner_only_and_says_to_keep_the_key_file_with_it() {
    let lg = Labgate::start();
    let backup = lg.scratch().join("private.db");
    let run = run_cli(
        &["backup", &backup.to_string_lossy()],
        &[("LABGATE_DATA_DIR", &lg.data_dir().to_string_lossy())],
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(mode(&backup), 0o600);
    assert!(
        run.stderr.contains("labgate.key") && run.stderr.contains("enter the GitLab secret again"),
        "{}",
        run.stderr
    );
    let again = run_cli(
        &["backup", &backup.to_string_lossy()],
        &[("LABGATE_DATA_DIR", &lg.data_dir().to_string_lossy())],
    );
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
    assert_eq!(mode(&backup), 0o600);
}
