//! The mass-deprovisioning guard: an empty or truncated export must not wipe
//! the target.

use scimsync::sandbox::Route;

use crate::common::{TestEnv, USERS_HEADER, five_users};

fn active_count(env: &TestEnv) -> usize {
    env.sb()
        .users()
        .iter()
        .filter(|u| u["active"] != serde_json::json!(false))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_export_is_held_and_can_be_approved() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    assert_eq!(env.run(&["sync"]).await.code, 0);
    assert_eq!(active_count(&env), 5);
    env.sb().reset_counts();

    // The classic disaster: the HR export arrives with its header only.
    env.write("users.csv", &format!("{USERS_HEADER}\n"));
    let plan = env.run(&["plan"]).await;
    assert!(plan.stdout.contains("Guard:"), "{plan:?}");
    assert!(plan.stdout.contains("--allow-deprovision"), "{plan:?}");

    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "held actions make a non-clean run: {out:?}");
    assert!(out.stderr.contains("--allow-deprovision"), "{out:?}");
    assert!(out.stderr.contains("no valid user"), "{out:?}");
    // Nothing destructive was sent.
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchUser), 0, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 0, "{c:?}");
    assert_eq!(
        c.get(Route::DeleteUser) + c.get(Route::DeleteGroup),
        0,
        "{c:?}"
    );
    assert_eq!(active_count(&env), 5);
    let held = env.outcomes_where("outcome = 'held'");
    assert!(
        held.iter().filter(|o| o.action == "disable").count() == 5,
        "{held:?}"
    );
    assert!(
        held.iter()
            .all(|o| o.detail.as_deref().unwrap_or("").contains("guard"))
    );
    let run = env.runs().last().cloned().unwrap();
    assert_eq!(run.status, "partial");

    // The admin approves: now it happens.
    let out = env.run(&["sync", "--allow-deprovision"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(active_count(&env), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_export_holds_destructive_work_but_applies_the_rest() {
    let mut env = TestEnv::new().await;
    let mut rows = five_users();
    env.write_users(&rows);
    assert_eq!(env.run(&["sync"]).await.code, 0);
    env.sb().reset_counts();

    // Half the file is lost, and one remaining person changed title.
    rows.truncate(2);
    rows[0] = rows[0].replace("Engineer", "Principal Engineer");
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("user disables"), "{out:?}");
    assert_eq!(active_count(&env), 5, "no account was disabled");
    // The title change is not destructive: it went through.
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");

    // Thresholds are configurable: with a higher percentage the same plan passes.
    env.set_extra("[guard]\nmax_disable_percent = 100\nmax_member_remove_percent = 100\n");
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(active_count(&env), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leaver_passes_the_guard() {
    let env = TestEnv::new().await;
    let mut rows = five_users();
    env.write_users(&rows);
    assert_eq!(env.run(&["sync"]).await.code, 0);
    rows.pop();
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(active_count(&env), 4);
    assert!(env.outcomes_where("outcome = 'held'").is_empty());
}
