//! `sync --cron`: a long-lived job on a cron schedule.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{FAST, TestEnv, five_users};

fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("-c")
        .arg(env.config_path())
        .args(args)
        .current_dir(env.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait (bounded by a number of polls, not a duration assertion) until `n`
/// finished runs are recorded; returns how many there were.
async fn wait_for_runs(env: &TestEnv, n: i64) -> i64 {
    let mut runs = 0;
    for _ in 0..1500 {
        runs = if env.store_path().exists() {
            env.store()
                .query_row(
                    "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
        } else {
            0
        };
        if runs >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runs
}

async fn stop(child: Child) -> (Option<i32>, String) {
    let pid = child.id().to_string();
    tokio::task::spawn_blocking(move || {
        Command::new("kill").args(["-TERM", &pid]).status().unwrap()
    })
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_runs_at_each_occurrence_and_stops_on_sigterm() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    // The optional leading seconds field: every second, so the test is short.
    let child = spawn(&env, &["sync", "--cron", "* * * * * *"]);
    let runs = wait_for_runs(&env, 2).await;
    let (code, stderr) = stop(child).await;
    assert!(runs >= 2, "only {runs} runs were recorded\n{stderr}");
    assert!(matches!(code, Some(0 | 1)), "{code:?}\n{stderr}");
    assert!(
        stderr.contains("cron \"* * * * * *\": first sync in"),
        "{stderr}"
    );
    assert!(stderr.contains("next sync in"), "{stderr}");
    assert_eq!(env.sb().users().len(), 5);
    let statuses: Vec<String> = env
        .runs()
        .into_iter()
        .filter(|r| r.status != "running")
        .map(|r| r.status)
        .collect();
    assert!(statuses.iter().all(|s| s == "succeeded"), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_cannot_start_gets_a_failed_run_row_with_the_reason() {
    let mut env = TestEnv::new().await;
    env.write_users(&five_users());
    let connector = env.fast_retry_connector();
    env.configure(&format!("{FAST}{connector}max_attempts = 2\n"), "");
    // Nothing listens on port 1: the target is unreachable.
    env.write(
        "scimsync.toml",
        &env.config_text_for("test", "http://127.0.0.1:1/scim/directory/x"),
    );
    let child = spawn(
        &env,
        &["sync", "--cron", "* * * * * *", "--metrics-file", "m.prom"],
    );
    let runs = wait_for_runs(&env, 2).await;
    let (_, stderr) = stop(child).await;
    assert!(runs >= 2, "only {runs} runs were recorded\n{stderr}");
    let rows = env.runs();
    let first = &rows[0];
    assert_eq!(first.status, "failed", "{rows:?}");
    let detail = first.detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("the scheduled run could not start:") && detail.contains("connect"),
        "{detail}"
    );
    // The schedule went on after the failure, backing off.
    assert!(stderr.contains("failed runs in a row"), "{stderr}");
    let metrics = std::fs::read_to_string(env.path("m.prom")).unwrap();
    assert!(
        metrics.contains("scimsync_run_status{app=\"test\",status=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("scimsync_last_success_timestamp_seconds"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cron_usage_is_refused_before_any_request() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync", "--cron", "61 * * * *"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--cron: `61 * * * *`"), "{out:?}");
    let out = env
        .run(&["sync", "--cron", "* * * * *", "--every", "1m"])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("cannot be used with"), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
    assert!(!env.store_path().exists());
}
