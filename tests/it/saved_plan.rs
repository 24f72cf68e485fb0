//! `plan --out` then `apply`: exactly the reviewed plan, or a refusal.

use scimsync::sandbox::Route;
use serde_json::Value;

use crate::common::{TestEnv, five_users, user};

fn read_plan(env: &TestEnv) -> Value {
    serde_json::from_str(&std::fs::read_to_string(env.path("plan.json")).unwrap()).unwrap()
}

fn actions_of(plan: &Value, kind: &str) -> usize {
    plan["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == kind)
        .count()
}

/// Five users synced, then Grace promoted and Linus gone: two changes pending.
async fn synced_with_changes(env: &TestEnv) -> Vec<String> {
    env.write_users(&five_users());
    assert_eq!(env.run(&["sync"]).await.code, 0);
    let mut rows = five_users();
    rows[1] = user(
        "1002",
        "Grace",
        "Hopper",
        "grace@example.com",
        "VP Engineering",
        "Engineering;Research",
    );
    rows.pop();
    env.write_users(&rows);
    env.sb().reset_counts();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_out_then_apply_applies_exactly_the_saved_plan() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let plan = env.run(&["plan", "--out", "plan.json"]).await;
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stderr.contains("scimsync apply plan.json"), "{plan:?}");
    assert_eq!(env.sb().counts().writes, 0, "plan --out writes nothing");
    let saved = read_plan(&env);
    assert_eq!(saved["format"], "scimsync-plan/1");
    assert_eq!(saved["basis"], "full_read", "first run reads the target");
    for fp in ["source", "target", "config"] {
        let v = saved["fingerprints"][fp].as_str().unwrap();
        assert!(v.starts_with("sha256:") && v.len() == 71, "{fp}: {v}");
    }
    let creates = actions_of(&saved, "create_user");
    let groups = actions_of(&saved, "create_group");
    assert_eq!((creates, groups), (5, 2), "{saved:#}");

    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("still holds"), "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser) as usize, creates, "{c:?}");
    assert_eq!(c.get(Route::CreateGroup) as usize, groups, "{c:?}");
    env.assert_state(&five_users(), &[], "after apply");
    let runs = env.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0].command.as_str(), runs[0].status.as_str()),
        ("apply", "succeeded")
    );
    // Everything the plan held is done: the next plan is empty.
    let again = env.run(&["plan", "--check"]).await;
    assert_eq!(again.code, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_edited_after_the_plan_is_refused_without_a_write() {
    let env = TestEnv::new().await;
    let rows = synced_with_changes(&env).await;
    assert_eq!(env.run(&["plan", "--out", "plan.json"]).await.code, 0);
    assert_eq!(read_plan(&env)["basis"], "stored");
    // Someone fixes a title after the review.
    let mut edited = rows.clone();
    edited[0] = edited[0].replace("Engineer", "Principal Engineer");
    env.write_users(&edited);
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("the source changed since the plan was made"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("re-run `scimsync plan --out"),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().total, 0, "{:?}", env.sb().counts());
    assert_eq!(env.runs().len(), 1, "no run row for a refused plan");

    // Back to the reviewed bytes: the plan holds again and is applied.
    env.write_users(&rows);
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let grace = env.target_user("grace@example.com").unwrap();
    assert_eq!(grace["title"], "VP Engineering");
    assert_eq!(
        env.target_user("linus@example.com").unwrap()["active"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_changed_after_a_full_read_plan_is_refused() {
    let env = TestEnv::new().await;
    synced_with_changes(&env).await;
    let plan = env
        .run(&["plan", "--reconcile", "--out", "plan.json"])
        .await;
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(read_plan(&env)["basis"], "full_read");
    // An admin edits Ada in Atlassian after the review.
    let ada = env.target_user("ada@example.com").unwrap();
    assert!(env.sb().set_user_attr(
        ada["id"].as_str().unwrap(),
        "title",
        Value::String("Edited by hand".into())
    ));
    env.sb().reset_counts();
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("the target changed"), "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.writes, 0, "{c:?}");
    assert!(c.total > 0, "apply read the target again: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_state_plan_is_refused_after_another_run() {
    let env = TestEnv::new().await;
    synced_with_changes(&env).await;
    assert_eq!(env.run(&["plan", "--out", "plan.json"]).await.code, 0);
    // A scheduled sync applies the same changes in between.
    assert_eq!(env.run(&["sync"]).await.code, 0);
    env.sb().reset_counts();
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("the target state changed"), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_plan_file_is_refused() {
    let env = TestEnv::new().await;
    synced_with_changes(&env).await;
    assert_eq!(env.run(&["plan", "--out", "plan.json"]).await.code, 0);
    let text = std::fs::read_to_string(env.path("plan.json")).unwrap();
    assert!(text.contains("VP Engineering"));
    env.write("plan.json", &text.replace("VP Engineering", "CEO"));
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("modified after it was written"),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().total, 0);

    // Even with a recomputed checksum, the recomputed plan must match.
    let mut v: Value = serde_json::from_str(&text.replace("VP Engineering", "CEO")).unwrap();
    let fake = {
        let mut w = v.clone();
        w.as_object_mut().unwrap().remove("checksum");
        let canonical = scimsync::plan::saved::canonical_json(&w);
        scimsync::plan::saved::sha256(canonical.as_bytes())
    };
    v["checksum"] = Value::String(fake);
    env.write("plan.json", &serde_json::to_string_pretty(&v).unwrap());
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("differs"), "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);
    assert_eq!(
        env.target_user("grace@example.com").unwrap()["title"],
        "Manager"
    );

    let out = env.run(&["apply", "missing.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    env.write("plan.json", "{\"format\": \"scimsync-plan/1\"}");
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not a scimsync plan file"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_holds_a_saved_plan_unless_approved() {
    let mut env = TestEnv::new().await;
    env.set_extra("[guard]\nmax_disable = 1\n");
    env.write_users(&five_users());
    assert_eq!(env.run(&["sync"]).await.code, 0);
    env.write_users(&five_users()[..2]);
    env.sb().reset_counts();
    let plan = env.run(&["plan", "--out", "plan.json"]).await;
    assert!(plan.stdout.contains("Guard:"), "{plan:?}");
    // Applied as reviewed: the three disables are held.
    let out = env.run(&["apply", "plan.json"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchUser), 0);
    // The store did not change (held actions change nothing), so the same
    // plan can be approved.
    let out = env
        .run(&["apply", "plan.json", "--allow-deprovision"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchUser), 3);

    // A plan made with --allow-deprovision needs no second approval.
    env.write_users(&five_users()[..0]);
    let mut none = env
        .run(&["plan", "--out", "p2.json", "--allow-deprovision"])
        .await;
    assert_eq!(none.code, 0, "{none:?}");
    none = env.run(&["apply", "p2.json"]).await;
    assert!(!none.stderr.contains("held"), "{none:?}");
}
