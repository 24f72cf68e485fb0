//! Throttling, server errors, in-doubt writes and a refused API key.

use scimsync::sandbox::{Fault, FaultRule, Route};

use crate::common::{FAST, TestEnv, five_users, user};

fn status_fault(status: u16, retry_after: Option<&str>) -> Fault {
    Fault::Status {
        status,
        retry_after: retry_after.map(str::to_owned),
        body: None,
        content_type: None,
    }
}

/// Five users to create, few attempts per request.
async fn env_with_fault(rule: FaultRule) -> TestEnv {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_attempts = 3\n"), "");
    env.write_users(&five_users());
    env.sb().inject(rule);
    env
}

fn assert_converged(env: &TestEnv) {
    assert_eq!(env.sb().users().len(), 5);
    assert_eq!(env.sb().groups().len(), 2);
    assert_eq!(env.member_names("Engineering").len(), 3);
    assert!(env.sb().faults().is_empty(), "the fault fired");
    let creates = env.outcomes_where("resource = 'user' AND action = 'create'");
    assert_eq!(creates.len(), 5);
    assert!(
        creates.iter().all(|r| r.outcome == "applied"),
        "{creates:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out() {
    let env = env_with_fault(FaultRule::new(
        Some(Route::CreateUser),
        status_fault(429, Some("1")),
        1,
    ))
    .await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_converged(&env);
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 6, "{c:?}");
    assert_eq!(c.throttled, 1, "{c:?}");
    let retried = env.outcomes_where("resource = 'user' AND action = 'create' AND attempts > 1");
    assert_eq!(retried.len(), 1, "{retried:#?}");
    assert_eq!(retried[0].attempts, 2);
    assert_eq!(retried[0].http_status, Some(201));
    let run = &env.runs()[0];
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.throttled, 1);
    assert_eq!(run.retries, 1);
    assert!(out.stdout.contains("1 retries, 1 throttled"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_backs_off_and_converges() {
    let env = env_with_fault(FaultRule::new(
        Some(Route::CreateUser),
        status_fault(429, None),
        1,
    ))
    .await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_converged(&env);
    assert_eq!(env.sb().counts().get(Route::CreateUser), 6);
    let run = &env.runs()[0];
    assert!(run.throttled >= 1, "{run:?}");
    assert_eq!(
        env.outcomes_where("action = 'create' AND attempts = 2")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_on_create_is_looked_up_then_sent_again() {
    let env = env_with_fault(FaultRule::status(Some(Route::CreateUser), 503, 1)).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_converged(&env);
    let c = env.sb().counts();
    // The POST is not blindly re-sent: a lookup (externalId, userName) comes first.
    assert_eq!(c.get(Route::CreateUser), 6, "{c:?}");
    assert_eq!(c.get(Route::ListUsers), 3, "{c:?}");
    let retried = env.outcomes_where("action = 'create' AND attempts > 1");
    assert_eq!(retried.len(), 1, "{retried:#?}");
    assert_eq!(retried[0].http_status, Some(201));
    assert_eq!(env.runs()[0].status, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_after_the_create_happened_does_not_duplicate() {
    let env =
        env_with_fault(FaultRule::status(Some(Route::CreateUser), 503, 1).after_operation()).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_converged(&env);
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 5, "{c:?}");
    let adopted = env.outcomes_where("action = 'create' AND detail LIKE '%in doubt%'");
    assert_eq!(adopted.len(), 1, "{:#?}", env.outcomes());
    assert_eq!(env.user_link_count(), 5);
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_on_a_patch_is_retried() {
    let env = env_with_fault(FaultRule::status(Some(Route::PatchGroup), 503, 1)).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_converged(&env);
    assert_eq!(env.sb().counts().get(Route::PatchGroup), 3);
    assert_eq!(env.runs()[0].retries, 1);
}

const WRONG_KEY: &str = "WRONG-KEY-c0ffee-7f3a9c1d2e-never-print-me";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_explains_expiry_and_never_leaks() {
    let env = TestEnv::new().await;
    env.write_key(WRONG_KEY);
    env.write_users(&five_users());

    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("401"), "{out:?}");
    assert!(out.stdout.contains("expire"), "{out:?}");
    assert!(out.stdout.contains("Connection check failed."), "{out:?}");
    assert!(!out.stdout.contains(WRONG_KEY) && !out.stderr.contains(WRONG_KEY));

    let out = env.run(&["-vvv", "sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("expire"), "{out:?}");
    assert!(!out.stdout.contains(WRONG_KEY), "{out:?}");
    assert!(!out.stderr.contains(WRONG_KEY), "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);
    assert!(env.sb().users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_refused_mid_run_stops_the_run() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // The key is revoked; three users change.
    env.write_key(WRONG_KEY);
    let mut rows = five_users();
    for (i, who) in [(0, "Ada"), (2, "Alan"), (4, "Linus")] {
        rows[i] = rows[i].replace(&format!(",{who},"), &format!(",{who}e,"));
    }
    rows.push(user(
        "1006",
        "Margaret",
        "Hamilton",
        "margaret@example.com",
        "Director",
        "Engineering",
    ));
    env.write_users(&rows);
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("the run stopped"), "{out:?}");
    assert!(out.stderr.contains("expire"), "{out:?}");
    assert!(!out.stdout.contains(WRONG_KEY) && !out.stderr.contains(WRONG_KEY));
    // Phase 2 was in flight when the 401s came back; the membership phase never ran.
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchGroup), 0, "{c:?}");
    assert_eq!(c.get(Route::CreateUser), 0, "{c:?}");
    let run = &env.runs()[1];
    assert_eq!(run.status, "failed");
    assert_eq!(run.applied, 0);
    assert!(
        run.detail.as_deref().is_some_and(|d| d.contains("401")),
        "{run:?}"
    );
    let rows = env.outcomes_of_run(2);
    assert!(rows.iter().all(|r| r.outcome != "applied"), "{rows:#?}");
    assert!(
        rows.iter().any(|r| r.outcome == "skipped"
            && r.detail
                .as_deref()
                .is_some_and(|d| d.contains("not attempted"))),
        "{rows:#?}"
    );
    // Nothing changed in the target.
    assert_eq!(env.sb().users().len(), 5);
    assert_eq!(
        env.target_user("ada@example.com").unwrap()["name"]["givenName"],
        "Ada"
    );
}
