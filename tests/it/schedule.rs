//! `sync --every`: a long-lived job, one run per tick, stopped by SIGTERM.

use std::process::Command;
use std::time::Duration;

use crate::common::{TestEnv, five_users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runs_on_each_tick_and_stops_cleanly_on_sigterm() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let child = Command::new(env!("CARGO_BIN_EXE_scimsync"))
        .arg("-c")
        .arg(env.config_path())
        .args(["sync", "--every", "1s"])
        .current_dir(env.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until three runs are recorded.
    let mut runs = 0;
    for _ in 0..1000 {
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
        if runs >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(runs >= 3, "only {runs} runs were recorded");
    let pid = child.id().to_string();
    tokio::task::spawn_blocking(move || {
        Command::new("kill").args(["-TERM", &pid]).status().unwrap()
    })
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("next sync in"), "{stderr}");
    // The first run created everything; the ticks after it had nothing to do.
    assert_eq!(env.sb().users().len(), 5);
    let later_writes: i64 = env
        .store()
        .query_row(
            "SELECT coalesce(sum(requests), 0) FROM runs WHERE id > 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(later_writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_interval_is_refused() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync", "--every", "soon"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--every"), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}
