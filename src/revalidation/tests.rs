//! The pure parts of the revalidation (the schedule, the verdict on a run's answers) and its
//! writes on an in-memory database.

use super::*;
use crate::db::{test_db, tokens, users};

fn claims(id: i64, username: &str) -> Claims {
    Claims {
        id,
        username: username.into(),
        name: username.into(),
        email: None,
        groups: ["acme"].into_iter().collect(),
    }
}

fn failed(status: u16) -> Answer {
    Answer::Failed {
        error: GitlabError::Status {
            step: "token",
            status,
            detail: String::new(),
        },
        refresh: None,
    }
}

fn userinfo_error() -> Answer {
    Answer::UserinfoError {
        why: "HTTP 500".into(),
        refresh: Some("r".into()),
    }
}

#[test]
fn the_schedule_counts_from_the_last_run_and_zero_turns_it_off() {
    assert_eq!(next_at(1_000, 15), Some(1_900));
    assert_eq!(next_at(1_000, 0), None);
    let state = Revalidations::new(1_000);
    assert_eq!(state.next_at(5), Some(1_300));
    state.since.store(2_000, Ordering::SeqCst);
    assert_eq!(
        state.next_at(60),
        Some(5_600),
        "a new interval counts from the last run"
    );
    assert_eq!(next_at(i64::MAX - 5, 1440), Some(i64::MAX));
}

#[test]
fn gitlab_failing_anywhere_fails_the_run() {
    let answered = answered(claims(1, "ann"), None);
    assert_eq!(verdict(&[answered.clone(), Answer::GrantRefused]), None);
    assert_eq!(verdict(&[]), None);
    let why = verdict(&[answered.clone(), failed(502), Answer::NotAsked]).unwrap();
    assert!(why.contains("502"), "{why}");
    let denied = Answer::Failed {
        error: GitlabError::Denied("invalid_client".into()),
        refresh: None,
    };
    let why = verdict(&[denied]).unwrap();
    assert!(
        why.contains("fix: GitLab rejects the application ID or secret"),
        "{why}"
    );
}

#[test]
fn a_userinfo_error_is_the_persons_only_when_others_were_answered() {
    let answered = answered(claims(1, "ann"), None);
    assert_eq!(verdict(&[answered, userinfo_error()]), None);
    let why = verdict(&[userinfo_error(), userinfo_error()]).unwrap();
    assert!(
        why.contains("userinfo failed for every person tried"),
        "{why}"
    );
    let refused = Answer::UserinfoRefused {
        why: "401".into(),
        refresh: None,
    };
    assert_eq!(
        verdict(std::slice::from_ref(&refused)),
        None,
        "a refused token is the person's, even alone"
    );
    assert!(verdict(&[refused, userinfo_error()]).is_some());
}

/// A GitLab user signed in (a session and an API token), with a kept refresh token.
fn signed_in(
    conn: &mut rusqlite::Connection,
    id: i64,
    username: &str,
) -> gitlab_revalidation::Candidate {
    let config = config();
    let s = signin::complete(
        conn,
        &crate::audit::By::admin(),
        &config,
        &claims(id, username),
        Some("kept"),
        None,
        100,
    )
    .unwrap();
    tokens::create(conn, s.user.id, "ci", None, 100).unwrap();
    gitlab_revalidation::candidates(conn, PROVIDER_GITLAB, 0, 0, 0, 100)
        .unwrap()
        .into_iter()
        .find(|c| c.user_id == s.user.id)
        .unwrap()
}

/// The sign-in tests' configuration, with `acme` as the allowed group.
/// Ann (GitLab id 1) and Bob (2) signed in, on a new database.
fn ann_and_bob() -> (
    rusqlite::Connection,
    gitlab_revalidation::Candidate,
    gitlab_revalidation::Candidate,
) {
    let mut conn = test_db();
    let ann = signed_in(&mut conn, 1, "ann");
    let bob = signed_in(&mut conn, 2, "bob");
    (conn, ann, bob)
}

fn config() -> GitlabConfig {
    GitlabConfig {
        allowed_groups: vec!["acme".into()],
        ..signin::test_config(true, false)
    }
}

fn record() -> Record {
    Record {
        id: 0,
        trigger: Trigger::Manual,
        started_at: 200,
        finished_at: 201,
    }
}

fn run_with(
    conn: &mut rusqlite::Connection,
    candidates: &[gitlab_revalidation::Candidate],
    answers: Vec<Answer>,
) -> Run {
    let id = gitlab_revalidation::start_run(conn, "MANUAL", 200).unwrap();
    let failure = verdict(&answers);
    apply(
        conn,
        &config(),
        candidates,
        answers,
        failure,
        Record { id, ..record() },
    )
    .unwrap()
}

/// The refresh token kept for a user, opened.
fn kept(conn: &rusqlite::Connection, user_id: i64) -> Option<String> {
    let sealed = gitlab_revalidation::refresh_token(conn, user_id).unwrap()?;
    Some(signin::open_refresh_token(user_id, &sealed).unwrap())
}

/// Userinfo answered with `claims`, after a refresh that gave `refresh`.
fn answered(claims: Claims, refresh: Option<&str>) -> Answer {
    Answer::Claims {
        claims,
        refresh: refresh.map(str::to_string),
    }
}

fn held(conn: &rusqlite::Connection, user_id: i64) -> Option<String> {
    gitlab_revalidation::hold_of(conn, user_id)
        .unwrap()
        .map(|h| h.1)
}

#[test]
fn a_person_no_longer_admitted_loses_sessions_and_token_use_and_others_are_updated() {
    let (mut conn, ann, bob) = ann_and_bob();
    let mut renamed = claims(1, "ann");
    renamed.name = "Ann Renamed".into();
    let answers = vec![answered(renamed, Some("rotated")), Answer::GrantRefused];
    let run = run_with(&mut conn, &[ann.clone(), bob.clone()], answers);
    assert_eq!(
        (
            run.status.as_str(),
            run.users_checked,
            run.users_updated,
            run.users_cut_off
        ),
        ("SUCCESS", 2, 1, 1)
    );
    assert_eq!(run.sessions_ended, 1);
    assert!(run.cut_off.contains("\"bob\"") && run.cut_off.contains("invalid_grant"));
    let user = users::find_by_id(&conn, ann.user_id).unwrap().unwrap();
    assert_eq!(user.name, "Ann Renamed");
    assert_eq!(kept(&conn, ann.user_id).as_deref(), Some("rotated"));
    assert!(held(&conn, ann.user_id).is_none());
    assert_eq!(sessions::count(&conn, Some(ann.user_id)).unwrap(), 1);
    assert!(held(&conn, bob.user_id).unwrap().contains("invalid_grant"));
    assert_eq!(sessions::count(&conn, Some(bob.user_id)).unwrap(), 0);
    assert!(kept(&conn, bob.user_id).is_none());
    assert_eq!(
        users::tokens_count(&conn, bob.user_id).unwrap(),
        1,
        "kept, but held"
    );
}

/// The run and each person it cut off are in the audit log, with the reason, in the run's
/// transaction.
#[test]
fn a_run_and_the_people_it_cut_off_are_in_the_audit_log() {
    let (mut conn, ann, bob) = ann_and_bob();
    let answers = vec![answered(claims(1, "ann"), None), Answer::GrantRefused];
    run_with(&mut conn, &[ann, bob], answers);
    crate::db::audit::move_pending(&conn).unwrap();
    let filter = crate::db::audit::Filter::default();
    let events = crate::db::audit::page(&conn, &filter, 0, 10).unwrap();
    let run = &events[0];
    assert_eq!(
        (run.action.as_str(), run.outcome.as_str()),
        ("revalidation.run", "ok")
    );
    let detail: serde_json::Value = serde_json::from_str(&run.detail).unwrap();
    assert_eq!(
        (
            detail["usersChecked"].as_i64(),
            detail["usersCutOff"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let ended = &events[1];
    assert_eq!(
        (ended.action.as_str(), ended.target.as_deref()),
        ("session.ended", Some("bob"))
    );
    assert!(
        ended.reason.as_deref().unwrap().contains("invalid_grant"),
        "{ended:?}"
    );
    let detail: serde_json::Value = serde_json::from_str(&ended.detail).unwrap();
    assert_eq!(detail["by"], "revalidation");
}

#[test]
fn out_of_the_allowed_groups_or_another_account_is_cut_off() {
    let (mut conn, ann, bob) = ann_and_bob();
    let mut outside = claims(1, "ann");
    outside.groups = ["other"].into_iter().collect();
    let answers = vec![answered(outside, None), answered(claims(99, "bob"), None)];
    let run = run_with(&mut conn, &[ann.clone(), bob.clone()], answers);
    assert_eq!(run.users_cut_off, 2);
    assert!(held(&conn, ann.user_id)
        .unwrap()
        .contains("not in allowed groups"));
    assert!(held(&conn, bob.user_id)
        .unwrap()
        .contains("another account"));
}

#[test]
fn a_failed_run_changes_no_access_and_keeps_the_rotated_tokens() {
    let (mut conn, ann, bob) = ann_and_bob();
    let cid = signed_in(&mut conn, 3, "cid");
    let mut outside = claims(1, "ann");
    outside.groups = crate::model::GroupPaths::default();
    let answers = vec![
        answered(outside, Some("rotated")),
        Answer::GrantRefused,
        failed(503),
    ];
    let run = run_with(&mut conn, &[ann.clone(), bob.clone(), cid.clone()], answers);
    assert_eq!(run.status, "FAILED");
    assert!(run.error.as_deref().unwrap().contains("503"));
    assert_eq!(
        (run.users_checked, run.users_cut_off, run.sessions_ended),
        (0, 0, 0)
    );
    for user in [&ann, &bob, &cid] {
        assert!(held(&conn, user.user_id).is_none());
        assert_eq!(sessions::count(&conn, Some(user.user_id)).unwrap(), 1);
    }
    assert_eq!(kept(&conn, ann.user_id).as_deref(), Some("rotated"));
    assert_eq!(
        gitlab_revalidation::refresh_token(&conn, bob.user_id).unwrap(),
        bob.sealed,
        "a refused grant changes nothing in a failed run"
    );
}

#[test]
fn a_sign_in_during_the_run_is_newer_than_what_gitlab_said_in_it() {
    let mut conn = test_db();
    let ann = signed_in(&mut conn, 1, "ann");
    // Ann signs in again while the run asks GitLab about her.
    signin::complete(
        &mut conn,
        &crate::audit::By::admin(),
        &config(),
        &claims(1, "ann"),
        Some("newer"),
        None,
        150,
    )
    .unwrap();
    let run = run_with(
        &mut conn,
        std::slice::from_ref(&ann),
        vec![Answer::GrantRefused],
    );
    assert_eq!(run.users_cut_off, 0);
    assert!(held(&conn, ann.user_id).is_none());
    assert_eq!(kept(&conn, ann.user_id).as_deref(), Some("newer"));
}

#[test]
fn without_a_refresh_token_to_ask_with_the_person_must_sign_in_again() {
    let mut conn = test_db();
    let ann = signed_in(&mut conn, 1, "ann");
    gitlab_revalidation::delete_refresh_token(&conn, ann.user_id).unwrap();
    let ann = gitlab_revalidation::Candidate {
        sealed: None,
        ..ann
    };
    let run = run_with(
        &mut conn,
        std::slice::from_ref(&ann),
        vec![Answer::NoRefreshToken],
    );
    assert_eq!(run.users_cut_off, 1);
    assert!(held(&conn, ann.user_id)
        .unwrap()
        .contains("no GitLab refresh token"));
}

/// The end of a run is recorded even when every connection of the pool is taken for longer
/// than one wait; past the last wait, the error is returned.
#[test]
fn the_end_of_a_run_waits_again_for_a_busy_pool() {
    let pool = Pool::new(db::temp_db("revalidation-finish"), 1);
    let held = pool.get(POOL_WAIT).unwrap();
    let wait = Duration::from_millis(40);
    assert!(connection_to_finish(&pool, 1, wait, 2).is_err());
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        // Freed during the third wait of five.
        assert!(connection_to_finish(&pool, 1, wait, 5).is_ok());
    });
}

#[test]
fn a_second_run_is_refused_while_one_goes_on() {
    let state = Revalidations::new(0);
    state.running.store(true, Ordering::SeqCst);
    let pool = Pool::new(std::env::temp_dir().join("labgate-unused.db"), 1);
    let gitlab = Client::new(None).unwrap();
    let err = run(&pool, &gitlab, &state, Trigger::Manual, 10).unwrap_err();
    assert!(matches!(err, AppError::Conflict(_)), "{err:?}");
    assert!(state.running(), "the run going on is still marked");
}

#[test]
fn a_due_scheduled_run_runs_once_and_the_schedule_counts_from_it() {
    crate::secrets::install_for_tests();
    let pool = Pool::new(db::temp_db("revalidation-due"), 2);
    let gitlab = Client::new(None).unwrap();
    let state = Revalidations::new(1_000);
    let due = |now| run_if_due(&pool, &gitlab, &state, now).unwrap();
    assert!(due(1_000 + 15 * 60).is_none(), "GitLab not configured");
    {
        let conn = pool.get(POOL_WAIT).unwrap();
        settings::store(&conn, settings::GITLAB_APPLICATION_ID, "app").unwrap();
        settings::store(&conn, settings::GITLAB_SECRET, "secret").unwrap();
    }
    assert!(due(1_000 + 15 * 60 - 1).is_none(), "not yet");
    let run = due(1_000 + 15 * 60).expect("due");
    assert_eq!(
        (run.trigger.as_str(), run.status.as_str()),
        ("SCHEDULE", "SUCCESS")
    );
    assert_eq!(
        state.next_at(15),
        Some(1_000 + 30 * 60),
        "counted from the run"
    );
    assert!(due(1_000 + 15 * 60 + 1).is_none());
    settings::store(
        &pool.get(POOL_WAIT).unwrap(),
        settings::REVALIDATE_MINUTES,
        "0",
    )
    .unwrap();
    assert!(due(1_000 + 60 * 60).is_none(), "off");
    let conn = pool.get(POOL_WAIT).unwrap();
    assert_eq!(next_scheduled(&conn, &state).unwrap(), None);
    assert_eq!(
        gitlab_revalidation::recent_runs(&conn, 10).unwrap().len(),
        1
    );
}
