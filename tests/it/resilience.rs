//! Failures that must not lose work: transient errors on group creation,
//! persistent errors retried on the next run, interruption, a store that
//! belongs to another directory, a group deleted behind scimsync's back.

use std::process::Command;
use std::time::Duration;

use scimsync::sandbox::{Fault, FaultRule, Route, Sandbox, SandboxConfig};

use crate::common::{FAST, TestEnv, five_users};

fn status(status: u16, retry_after: Option<&str>) -> Fault {
    Fault::Status {
        status,
        retry_after: retry_after.map(str::to_owned),
        body: None,
        content_type: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_on_group_create_is_looked_up_then_sent_again() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_attempts = 3\n"), "");
    env.write_users(&five_users());
    env.sb()
        .inject(FaultRule::status(Some(Route::CreateGroup), 503, 1));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateGroup), 3, "{c:?}");
    // The full read, then one lookup by name after the 503.
    assert_eq!(c.get(Route::ListGroups), 2, "{c:?}");
    assert_eq!(env.sb().groups().len(), 2);
    assert_eq!(env.member_names("Engineering").len(), 3);
    assert_eq!(env.member_names("Research").len(), 2);
    assert_eq!(env.runs()[0].status, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_failure_is_retried_on_the_next_run() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_attempts = 3\n"), "");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut rows = five_users();
    rows[0] = rows[0].replace("Engineer", "Countess");
    env.write_users(&rows);
    // Three 503s (Retry-After: 0 keeps the test fast): every attempt fails.
    env.sb().inject(FaultRule::new(
        Some(Route::PatchUser),
        status(503, Some("0")),
        3,
    ));
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchUser), 3);
    let failed = env.outcomes_where("outcome = 'failed'");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(failed[0].http_status, Some(503));
    assert_eq!(
        env.target_user("ada@example.com").unwrap()["title"],
        "Engineer"
    );

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchUser), 1);
    assert_eq!(
        env.target_user("ada@example.com").unwrap()["title"],
        "Countess"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_retry_budget_fails_at_once() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_retries_per_run = 0\n"), "");
    env.write_users(&five_users());
    env.sb().inject(FaultRule::new(
        Some(Route::PatchGroup),
        status(503, Some("0")),
        1,
    ));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchGroup), 2);
    let run = &env.runs()[0];
    assert_eq!(run.retries, 0);
    assert!(run.failed >= 1, "{run:?}");
    // The next run adds the missing members.
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.member_names("Engineering").len(), 3);
    assert_eq!(env.member_names("Research").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_linked_to_another_directory_is_refused() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let other = Sandbox::start(SandboxConfig::default()).await.unwrap();
    env.write(
        "scimsync.toml",
        &env.config_text_for("test", &other.base_url()),
    );
    env.sb().reset_counts();
    for cmd in ["sync", "plan"] {
        let out = env.run(&[cmd]).await;
        assert_eq!(out.code, 2, "{cmd}: {out:?}");
        assert!(out.stderr.contains("meaningless in another"), "{out:?}");
    }
    assert_eq!(env.sb().counts().total, 0);
    assert_eq!(other.sandbox.counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_recreates_a_group_deleted_in_the_target() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let research = env.target_group("Research").unwrap();
    let url = format!(
        "{}/Groups/{}",
        env.running.base_url(),
        research["id"].as_str().unwrap()
    );
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .delete(url)
        .bearer_auth(&env.sb().config().api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateGroup), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 1, "{c:?}");
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com", "grace@example.com"]
    );
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_stops_dispatching_and_the_next_run_finishes() {
    interrupted_by("-INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_run_stops_dispatching_and_the_next_run_finishes() {
    interrupted_by("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_store_is_refused_while_one_runs() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let held = scimsync::store::lock::RunLock::acquire(&env.store_path()).unwrap();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("another scimsync run"), "{out:?}");
    assert!(
        out.stderr.contains(&format!("pid {}", std::process::id())),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().total, 0);
    // `plan` reads only: it is not blocked.
    assert_eq!(env.run(&["plan"]).await.code, 0);
    drop(held);
    assert_eq!(env.run(&["sync"]).await.code, 0);
}

async fn interrupted_by(signal: &'static str) {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}concurrency = 1\n"), "");
    env.write_users(&five_users());
    env.sb().inject(FaultRule::new(
        Some(Route::CreateUser),
        Fault::Delay { millis: 700 },
        2,
    ));
    let dir = env.dir.path().to_path_buf();
    let config = env.config_path();
    let child = Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("-c")
        .arg(&config)
        .arg("sync")
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first create to reach the sandbox, then interrupt.
    let mut seen = false;
    for _ in 0..500 {
        if env.sb().counts().get(Route::CreateUser) >= 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "no create reached the sandbox");
    let pid = child.id().to_string();
    let killed = tokio::task::spawn_blocking(move || {
        Command::new("kill").args([signal, &pid]).status().unwrap()
    })
    .await
    .unwrap();
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let run = &env.runs()[0];
    assert_eq!(run.status, "interrupted", "{run:?}");
    let created = env.sb().counts().get(Route::CreateUser);
    assert!(created < 5, "every create was still sent: {created}");
    assert_eq!(env.sb().users().len() as u64, created);
    let skipped = env.outcomes_where("outcome = 'skipped' AND detail LIKE '%interrupted%'");
    assert!(!skipped.is_empty(), "{:#?}", env.outcomes());
    assert_eq!(env.user_link_count() as u64, created);

    // The next run finishes the job without duplicates.
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().users().len(), 5);
    assert_eq!(env.member_names("Engineering").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_come_from_the_environment() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let text = env.config_text().replace(
        "api_key_file = \"key\"",
        "api_key_env = \"SCIMSYNC_IT_KEY\"",
    );
    env.write("scimsync.toml", &text);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("SCIMSYNC_IT_KEY"), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
    let key = env.sb().config().api_key.clone();
    let out = crate::common::run_binary_env(
        env.dir.path(),
        vec![
            "-c".into(),
            env.config_path().display().to_string(),
            "sync".into(),
        ],
        &[("SCIMSYNC_IT_KEY", key.as_str())],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().users().len(), 5);
}

/// A 503 with `Retry-After: 0` answered after the operation happened: the
/// write is done, the client does not know it.
fn lost_answer(route: Route) -> FaultRule {
    FaultRule::new(Some(route), status(503, Some("0")), 1).after_operation()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_writes_whose_answer_was_lost_are_repeated_safely() {
    let mut env = TestEnv::new().await;
    env.configure(
        &format!("{FAST}max_attempts = 3\n"),
        "[policy]\ndeprovision = \"delete\"\n",
    );
    env.write_users(&five_users());
    env.sb().inject(lost_answer(Route::PatchGroup));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.member_names("Engineering").len(), 3);
    assert_eq!(env.member_names("Research").len(), 2);
    assert_eq!(env.sb().counts().get(Route::PatchGroup), 3);

    // Ada moves to Research (remove answer lost); Alan leaves (delete answer
    // lost: the retry finds the account gone); Grace changes title (PATCH lost).
    let mut rows: Vec<String> = five_users()
        .into_iter()
        .filter(|r| !r.starts_with("1003,"))
        .collect();
    rows[0] = rows[0].replace(",Engineering", ",Research");
    rows[1] = rows[1].replace("Manager", "Admiral");
    env.write_users(&rows);
    env.sb().inject(lost_answer(Route::DeleteUser));
    env.sb().inject(lost_answer(Route::PatchUser));
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(env.sb().faults().is_empty());
    let c = env.sb().counts();
    assert_eq!(c.get(Route::DeleteUser), 2, "{c:?}");
    assert_eq!(c.get(Route::PatchUser), 2, "{c:?}");
    assert!(env.target_user("alan@example.com").is_none());
    assert_eq!(
        env.target_user("grace@example.com").unwrap()["title"],
        "Admiral"
    );
    assert_eq!(
        env.member_names("Engineering"),
        ["grace@example.com", "linus@example.com"]
    );
    assert_eq!(
        env.member_names("Research"),
        ["ada@example.com", "grace@example.com"]
    );
    let failed = env.outcomes_where("outcome <> 'applied'");
    assert!(failed.is_empty(), "{failed:#?}");

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_timed_out_after_the_write_is_adopted() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_attempts = 2\ntimeout = \"1s\"\n"), "");
    env.write_users(&five_users());
    env.sb().inject(
        FaultRule::new(Some(Route::CreateUser), Fault::Delay { millis: 1500 }, 1).after_operation(),
    );
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().users().len(), 5);
    assert_eq!(env.sb().counts().get(Route::CreateUser), 5);
    let adopted = env.outcomes_where("action = 'create' AND detail LIKE '%in doubt%'");
    assert_eq!(adopted.len(), 1, "{:#?}", env.outcomes());
    assert_eq!(env.member_names("Engineering").len(), 3);
}
