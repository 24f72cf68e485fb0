//! Groups the way Atlassian needs them: renames (create, move, delete; resumed
//! after a failure), nested groups, default groups, scope vs pushed groups,
//! reserved names, collisions, reactivation, large groups and membership drift.

use scimsync::sandbox::{Fault, FaultRule, Route};
use serde_json::json;

use crate::common::*;

fn people() -> Vec<String> {
    vec![
        user("1001", "Ada", "Lovelace", "ada@example.com", "Engineer", ""),
        user(
            "1002",
            "Grace",
            "Hopper",
            "grace@example.com",
            "Manager",
            "",
        ),
        user(
            "1003",
            "Alan",
            "Turing",
            "alan@example.com",
            "Scientist",
            "",
        ),
        user(
            "1004",
            "Katherine",
            "Johnson",
            "katherine@example.com",
            "Analyst",
            "",
        ),
    ]
}

async fn sync_ok(env: &TestEnv, args: &[&str]) -> Output {
    let out = env.run(args).await;
    assert_eq!(out.code, 0, "{out:?}");
    out
}

/// Engineering (g-eng) = Ada, Grace; synced.
async fn engineering() -> TestEnv {
    let env = TestEnv::new().await;
    env.write_users(&people());
    env.write_groups(&["g-eng,Engineering,1001", "g-eng,Engineering,1002"]);
    sync_ok(&env, &["sync"]).await;
    env
}

fn retired_rows(env: &TestEnv) -> i64 {
    env.store()
        .query_row("SELECT count(*) FROM retired_groups", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_creates_the_new_group_moves_members_and_deletes_the_old() {
    let env = engineering().await;
    let old_id = env.target_group("Engineering").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Renamed, Grace left it, Alan joined it.
    env.write_groups(&["g-eng,Platform,1001", "g-eng,Platform,1003"]);
    env.sb().reset_counts();
    let plan = sync_ok(&env, &["plan"]).await;
    assert!(
        plan.stdout.contains("group Engineering -> Platform"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("move 1 members"), "{}", plan.stdout);
    assert!(plan.stdout.contains("1 to rename"), "{}", plan.stdout);
    assert_eq!(env.sb().counts().writes, 0);

    env.sb().reset_counts();
    let run = sync_ok(&env, &["sync"]).await;
    // The rename is announced as the requests it takes (create, move,
    // delete), plus the PATCH adding Alan.
    assert!(
        run.stderr
            .contains("Applying 2 actions (4 requests or more)"),
        "{}",
        run.stderr
    );
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateGroup), 1, "{c:?}");
    // One PATCH moves Ada, one adds Alan; nothing is removed one by one.
    assert_eq!(c.get(Route::PatchGroup), 2, "{c:?}");
    assert_eq!(c.get(Route::DeleteGroup), 1, "{c:?}");
    assert_eq!(c.writes, 4, "{c:?}");
    assert!(env.target_group("Engineering").is_none());
    assert!(env.sb().groups().iter().all(|g| g["id"] != old_id.as_str()));
    assert_eq!(
        env.member_names("Platform"),
        ["ada@example.com", "alan@example.com"]
    );
    assert_eq!(env.target_group("Platform").unwrap()["externalId"], "g-eng");
    let rename = env.outcomes_where("action = 'rename'");
    assert_eq!(rename.len(), 1, "{rename:?}");
    assert_eq!(rename[0].outcome, "applied");
    assert!(
        rename[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("old group deleted"),
        "{rename:?}"
    );
    assert_eq!(retired_rows(&env), 0);

    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    assert_eq!(env.sb().counts().total, 0, "converged");
    sync_ok(&env, &["sync", "--reconcile"]).await;
    assert_eq!(env.sb().counts().writes, 0, "converged after a full read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_whose_old_group_delete_fails_finishes_in_the_next_run() {
    let env = engineering().await;
    env.write_groups(&["g-eng,Platform,1001", "g-eng,Platform,1002"]);
    env.sb()
        .inject(FaultRule::status(Some(Route::DeleteGroup), 400, 1));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "the old group's delete failed: {out:?}");
    // Members have moved; the old group still exists and is recorded.
    assert_eq!(
        env.member_names("Platform"),
        ["ada@example.com", "grace@example.com"]
    );
    assert!(env.target_group("Engineering").is_some());
    assert_eq!(retired_rows(&env), 1);

    let plan = sync_ok(&env, &["plan"]).await;
    assert!(
        plan.stdout
            .contains("group Engineering  (old group of a rename, still to delete)"),
        "{}",
        plan.stdout
    );
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    let c = env.sb().counts();
    assert_eq!((c.get(Route::DeleteGroup), c.writes), (1, 1), "{c:?}");
    assert!(env.target_group("Engineering").is_none());
    assert_eq!(retired_rows(&env), 0);
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_whose_create_fails_keeps_the_old_group_managed() {
    let env = engineering().await;
    env.write_groups(&["g-eng,Platform,1001", "g-eng,Platform,1002"]);
    env.sb()
        .inject(FaultRule::status(Some(Route::CreateGroup), 400, 1));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(env.target_group("Platform").is_none());
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"],
        "the old group keeps serving its members"
    );
    assert_eq!(retired_rows(&env), 0);
    // Still managed: a member leaving is removed from it meanwhile... and the
    // next run completes the rename.
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    let c = env.sb().counts();
    assert_eq!(
        (
            c.get(Route::CreateGroup),
            c.get(Route::PatchGroup),
            c.get(Route::DeleteGroup)
        ),
        (1, 1, 1),
        "{c:?}"
    );
    assert!(env.target_group("Engineering").is_none());
    assert_eq!(
        env.member_names("Platform"),
        ["ada@example.com", "grace@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_answered_with_a_lost_reply_is_adopted_not_duplicated() {
    let env = engineering().await;
    env.write_groups(&["g-eng,Platform,1001", "g-eng,Platform,1002"]);
    // The POST is applied but its answer never arrives (connection reset),
    // on every attempt: the run cannot know the group exists.
    env.sb().inject(FaultRule {
        after: true,
        ..FaultRule::new(Some(Route::CreateGroup), Fault::Reset, 0)
    });
    let _ = env.run(&["sync"]).await;
    env.sb().clear_faults();
    sync_ok(&env, &["sync"]).await;
    let names: Vec<String> = env
        .sb()
        .groups()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Platform"], "one group, no duplicate");
    assert_eq!(
        env.member_names("Platform"),
        ["ada@example.com", "grace@example.com"]
    );
    env.sb().reset_counts();
    sync_ok(&env, &["sync", "--reconcile"]).await;
    assert_eq!(env.sb().counts().writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_group_deletes_off_a_rename_leaves_the_old_group_and_says_so() {
    let mut env = engineering().await;
    env.set_extra("[policy]\ndelete_groups = false\n");
    env.write_groups(&["g-eng,Platform,1001", "g-eng,Platform,1002"]);
    sync_ok(&env, &["sync"]).await;
    assert!(env.target_group("Engineering").is_some());
    assert!(env.target_group("Platform").is_some());
    let rename = env.outcomes_where("action = 'rename'");
    assert!(
        rename[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("left in the target (policy.delete_groups = false)"),
        "{rename:?}"
    );
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_groups_are_pushed_flat_and_a_cycle_is_reported() {
    let env = TestEnv::new().await;
    env.write_users(&people());
    env.write_groups(&[
        "all,Everyone,eng",
        "all,Everyone,1004",
        "eng,Engineering,1001",
        "eng,Engineering,be",
        "be,Backend,1002",
        "x,Loop X,y",
        "x,Loop X,1003",
        "y,Loop Y,x",
    ]);
    let plan = sync_ok(&env, &["plan"]).await;
    assert!(
        plan.stdout.contains("group cycle in the source: x, y"),
        "{}",
        plan.stdout
    );
    sync_ok(&env, &["sync"]).await;
    assert_eq!(
        env.member_names("Everyone"),
        [
            "ada@example.com",
            "grace@example.com",
            "katherine@example.com"
        ]
    );
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
    assert_eq!(env.member_names("Loop X"), ["alan@example.com"]);
    assert_eq!(env.member_names("Loop Y"), ["alan@example.com"]);
    // Grace leaves Backend: she leaves every group she was in through it.
    env.write_groups(&[
        "all,Everyone,eng",
        "all,Everyone,1004",
        "eng,Engineering,1001",
        "eng,Engineering,be",
        "be,Backend,1003",
        "x,Loop X,y",
        "x,Loop X,1003",
        "y,Loop Y,x",
    ]);
    env.sb().reset_counts();
    sync_ok(&env, &["sync", "--allow-deprovision"]).await;
    assert_eq!(
        env.member_names("Everyone"),
        [
            "ada@example.com",
            "alan@example.com",
            "katherine@example.com"
        ]
    );
    // Backend, Engineering, Everyone: one add and one remove each.
    assert_eq!(env.sb().counts().get(Route::PatchGroup), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_groups_get_every_user_including_new_hires() {
    let mut env = TestEnv::new().await;
    env.set_extra("[groups]\ndefault = [\"All Staff\"]\n");
    env.write_users(&people()[..3]);
    sync_ok(&env, &["sync"]).await;
    assert_eq!(
        env.member_names("All Staff"),
        ["ada@example.com", "alan@example.com", "grace@example.com"]
    );
    env.write_users(&people());
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    let c = env.sb().counts();
    assert_eq!((c.get(Route::CreateUser), c.get(Route::PatchGroup)), (1, 1));
    assert_eq!(env.member_names("All Staff").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_groups_and_pushed_groups_are_separate_settings() {
    let mut env = TestEnv::new().await;
    env.write_users(&people());
    env.write_groups(&[
        "staff,Staff,1001",
        "staff,Staff,1002",
        "staff,Staff,1003",
        "eng,Engineering,1001",
        "eng,Engineering,1004",
        "res,Research,1003",
    ]);
    // Who: members of Staff. Which groups: Engineering only.
    env.set_extra("[scope]\ngroups = [\"Staff\"]\n\n[groups]\npush = [\"Engineering\"]\n");
    sync_ok(&env, &["sync"]).await;
    let mut names: Vec<String> = env
        .sb()
        .users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ada@example.com", "alan@example.com", "grace@example.com"]
    );
    let groups: Vec<String> = env
        .sb()
        .groups()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(groups, ["Engineering"]);
    // Katherine is in Engineering but out of scope: not a member.
    assert_eq!(env.member_names("Engineering"), ["ada@example.com"]);
    // A group can be both.
    env.set_extra(
        "[scope]\ngroups = [\"Staff\"]\n\n[groups]\npush = [\"Engineering\", \"Staff\"]\n",
    );
    sync_ok(&env, &["sync"]).await;
    assert_eq!(env.member_names("Staff").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_group_names_are_refused_before_anything_is_sent() {
    let env = TestEnv::new().await;
    env.write_users(&people());
    env.write_groups(&["c,confluence-users,1001", "eng,Engineering,1001"]);
    let plan = env.run(&["plan"]).await;
    assert!(
        plan.stdout
            .contains("`confluence-users` is a reserved group name in the target"),
        "{}",
        plan.stdout
    );
    let _ = env.run(&["sync"]).await;
    assert!(env.target_group("confluence-users").is_none());
    assert!(env.target_group("Engineering").is_some());
    assert_eq!(env.sb().counts().get(Route::CreateGroup), 1);
    let rows = env.outcomes_where("outcome = 'invalid'");
    assert!(
        rows.iter().any(|r| r
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("reserved group name")),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmanaged_group_of_the_same_name_is_a_conflict_unless_adoption_is_allowed() {
    for reconcile in [false, true] {
        let mut env = TestEnv::new().await;
        env.write_users(&people());
        sync_ok(&env, &["sync"]).await;
        env.sb()
            .insert_group(json!({"displayName": "Finance", "members": []}))
            .unwrap();
        env.write_groups(&["fin,Finance,1001"]);
        let args: &[&str] = if reconcile {
            &["sync", "--reconcile"]
        } else {
            &["sync"]
        };
        env.sb().reset_counts();
        let out = env.run(args).await;
        // Not adopted: reported, and the existing group is untouched.
        let hint = "groups.adopt_existing = true";
        assert!(
            out.stdout.contains(hint)
                || env
                    .outcomes_of_run(env.runs().last().unwrap().id)
                    .iter()
                    .any(|o| o.detail.as_deref().unwrap_or("").contains(hint)),
            "reconcile={reconcile}: {out:?}"
        );
        assert_eq!(
            env.sb().counts().get(Route::CreateGroup),
            if reconcile { 0 } else { 1 }
        );
        assert_eq!(env.sb().counts().get(Route::PatchGroup), 0);
        assert!(env.member_names("Finance").is_empty());
        // Allowed: adopted and converged.
        env.set_extra("[groups]\nadopt_existing = true\n");
        sync_ok(&env, args).await;
        assert_eq!(env.member_names("Finance"), ["ada@example.com"]);
        assert_eq!(env.sb().groups().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_back_in_scope_is_re_enabled_with_exactly_the_desired_groups() {
    let env = TestEnv::new().await;
    env.write_users(&people());
    env.write_groups(&[
        "eng,Engineering,1001",
        "eng,Engineering,1002",
        "res,Research,1002",
    ]);
    sync_ok(&env, &["sync"]).await;
    // Grace leaves (disabled, out of her groups).
    let rest: Vec<String> = people()
        .into_iter()
        .filter(|r| !r.starts_with("1002"))
        .collect();
    env.write_users(&rest);
    env.write_groups(&["eng,Engineering,1001", "res,Research,1003"]);
    sync_ok(&env, &["sync", "--allow-deprovision"]).await;
    let grace = env.target_user("grace@example.com").unwrap();
    assert_eq!(grace["active"], false);
    assert!(env.member_names("Engineering") == ["ada@example.com"]);
    // While she is away an admin adds her to Research by hand; Atlassian
    // keeps memberships of deactivated accounts.
    let gid = env.target_group("Research").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let uid = grace["id"].as_str().unwrap().to_owned();
    assert!(env.sb().edit_group_members(&gid, &[uid.as_str()], &[]));
    // She comes back, into Engineering only.
    env.write_users(&people());
    env.write_groups(&[
        "eng,Engineering,1001",
        "eng,Engineering,1002",
        "res,Research,1003",
    ]);
    sync_ok(&env, &["sync", "--reconcile", "--allow-deprovision"]).await;
    let grace = env.target_user("grace@example.com").unwrap();
    assert_eq!(grace["active"], true);
    assert_eq!(grace["id"], uid.as_str(), "the same account");
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com"],
        "the stale membership is gone"
    );
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_who_returns_gets_a_new_id_and_its_memberships_again() {
    let mut env = TestEnv::new().await;
    env.set_extra("[policy]\ndeprovision = \"delete\"\n");
    env.write_users(&people());
    env.write_groups(&["eng,Engineering,1001", "eng,Engineering,1002"]);
    sync_ok(&env, &["sync"]).await;
    let old = env.target_user("grace@example.com").unwrap()["id"].clone();
    let rest: Vec<String> = people()
        .into_iter()
        .filter(|r| !r.starts_with("1002"))
        .collect();
    env.write_users(&rest);
    env.write_groups(&["eng,Engineering,1001"]);
    sync_ok(&env, &["sync", "--allow-deprovision"]).await;
    assert!(env.target_user("grace@example.com").is_none());
    env.write_users(&people());
    env.write_groups(&["eng,Engineering,1001", "eng,Engineering,1002"]);
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    let c = env.sb().counts();
    assert_eq!((c.get(Route::CreateUser), c.get(Route::PatchGroup)), (1, 1));
    let grace = env.target_user("grace@example.com").unwrap();
    assert_ne!(grace["id"], old);
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_target_acknowledged_but_did_not_apply_is_found_as_drift() {
    let env = TestEnv::new().await;
    env.write_users(&people());
    env.write_groups(&["eng,Engineering,1001", "eng,Engineering,1002"]);
    sync_ok(&env, &["sync"]).await;
    env.write_groups(&["eng,Engineering,1001"]);
    // The target answers the removal with 200 and does nothing.
    env.sb().inject(FaultRule::new(
        Some(Route::PatchGroup),
        Fault::Status {
            status: 200,
            retry_after: None,
            body: Some("{}".into()),
            content_type: None,
        },
        1,
    ));
    sync_ok(&env, &["sync", "--allow-deprovision"]).await;
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
    let plan = sync_ok(&env, &["plan", "--reconcile"]).await;
    assert!(
        plan.stdout
            .contains("- member grace@example.com  (changed in the target)"),
        "{}",
        plan.stdout
    );
    sync_ok(&env, &["sync", "--reconcile", "--allow-deprovision"]).await;
    assert_eq!(env.member_names("Engineering"), ["ada@example.com"]);
    let rows = env.outcomes_where("action = 'remove_member' AND detail LIKE '%drift%'");
    assert_eq!(rows.len(), 1, "{rows:?}");
}

/// A group of 50,000 members with 1,000 membership changes costs ⌈1,000/100⌉
/// PATCH requests, and reading it costs list pages, not a request per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_changes_in_chunks_and_reads_in_pages() {
    let env = TestEnv::new().await;
    let n = 50_500;
    let mut rows = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let email = format!("p{i:05}@example.com");
        rows.push(user(&format!("{i}"), "P", &format!("N{i}"), &email, "", ""));
        let id = env
            .sb()
            .insert_user(json!({
                "userName": email,
                "externalId": format!("{i}"),
                "name": {"givenName": "P", "familyName": format!("N{i}")},
                "displayName": format!("P N{i}"),
                "emails": [{"value": email, "type": "work", "primary": true}],
                "active": true,
                "title": "",
            }))
            .unwrap();
        ids.push(id);
    }
    let members: Vec<serde_json::Value> = ids[..50_000]
        .iter()
        .map(|id| json!({"value": id}))
        .collect();
    env.sb()
        .insert_group(json!({"displayName": "Everyone", "externalId": "all", "members": members}))
        .unwrap();
    env.write_users(&rows);
    let groups: Vec<String> = (0..50_000).map(|i| format!("all,Everyone,{i}")).collect();
    env.write_groups(&groups);
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    let c = env.sb().counts();
    // First run: a full read (50,500/100 = 505 user pages + 1 group page) links
    // everything; the target already matches.
    assert_eq!(c.get(Route::ListUsers), 505, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(c.get(Route::GetGroup), 0, "{c:?}");
    assert_eq!(c.writes, 0, "{c:?}");

    // 500 leave the group, 500 join it.
    let groups: Vec<String> = (500..50_500).map(|i| format!("all,Everyone,{i}")).collect();
    env.write_groups(&groups);
    env.sb().reset_counts();
    sync_ok(&env, &["sync"]).await;
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchGroup), 10, "{c:?}");
    assert_eq!(c.total, 10, "{c:?}");
    let g = env.target_group("Everyone").unwrap();
    assert_eq!(g["members"].as_array().unwrap().len(), 50_000);
}

/// A rename killed (SIGKILL) after its create, in the middle of moving the
/// members, and before the old group's delete is answered: the next runs
/// finish it, with one group of the new name holding every member and the
/// old group gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_killed_at_any_step_is_finished_by_the_next_run() {
    use crate::crash::{kill_and_wait, spawn_sync, stderr_of, wait};
    use std::time::{Duration, Instant};

    const N: usize = 450; // 5 member chunks of 100
    // Writes of the rename: 1 POST, 5 PATCH (moves), 1 DELETE.
    for kill_at in [1u64, 3, 6, 7] {
        let env = TestEnv::new().await;
        let rows: Vec<String> = (0..N)
            .map(|i| {
                user(
                    &format!("{i}"),
                    "P",
                    &format!("N{i}"),
                    &format!("p{i:03}@example.com"),
                    "",
                    "",
                )
            })
            .collect();
        env.write_users(&rows);
        let eng: Vec<String> = (0..N).map(|i| format!("g,Engineering,{i}")).collect();
        env.write_groups(&eng);
        sync_ok(&env, &["sync"]).await;
        let platform: Vec<String> = (0..N).map(|i| format!("g,Platform,{i}")).collect();
        env.write_groups(&platform);
        env.sb().reset_counts();
        // Every group write is performed, then its answer held a while.
        for route in [Route::CreateGroup, Route::PatchGroup, Route::DeleteGroup] {
            env.sb().inject(
                FaultRule::new(Some(route), Fault::Delay { millis: 200 }, 0).after_operation(),
            );
        }
        let child = spawn_sync(&env, 1, &["sync"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.sb().counts().writes < kill_at {
            assert!(
                Instant::now() < deadline,
                "never reached {kill_at} writes: {}",
                stderr_of(&env, 1)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let the sandbox perform the request that reached the threshold.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = kill_and_wait(child).await;
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed at {kill_at}"
        );
        env.sb().clear_faults();
        for run in 2..=3 {
            let child = spawn_sync(&env, run, &["sync", "--allow-deprovision"]);
            let status = wait(child).await;
            assert!(
                status.success(),
                "kill_at {kill_at}, run {run}: {}",
                stderr_of(&env, run)
            );
        }
        let names: Vec<String> = env
            .sb()
            .groups()
            .iter()
            .map(|g| g["displayName"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["Platform"], "kill_at {kill_at}");
        assert_eq!(env.member_names("Platform").len(), N, "kill_at {kill_at}");
        assert_eq!(retired_rows(&env), 0, "kill_at {kill_at}");
        env.sb().reset_counts();
        sync_ok(&env, &["sync", "--reconcile"]).await;
        assert_eq!(env.sb().counts().writes, 0, "kill_at {kill_at}: converged");
    }
}

/// Members of nested groups count toward the profile's per-group limit: a
/// group over it is refused in the plan, before the target would refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_the_member_limit_is_refused_in_the_plan() {
    let mut env = TestEnv::with_sandbox(scimsync::sandbox::SandboxConfig {
        max_group_members: 2,
        ..Default::default()
    })
    .await;
    let profile = include_str!("../../connectors/atlassian.toml")
        .replace("max_group_members = 290000", "max_group_members = 2");
    assert!(profile.contains("max_group_members = 2\n"));
    env.write("small-groups.toml", &profile);
    env.configure(&format!("{FAST}connector = \"small-groups.toml\"\n"), "");
    env.write_users(&people());
    env.write_groups(&[
        "sub,Sub,1002",
        "sub,Sub,1003",
        "big,Big,1001",
        "big,Big,sub",
        "ok,Ok,1001",
        "ok,Ok,1004",
    ]);
    let out = env.run(&["sync"]).await;
    assert!(
        out.stdout.contains(
            "group `Big` would have 3 members (nested groups included); the target allows at most 2"
        ),
        "{out:?}"
    );
    assert!(env.target_group("Big").is_none());
    assert_eq!(env.member_names("Sub").len(), 2);
    assert_eq!(env.member_names("Ok").len(), 2);
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateGroup), 2, "{c:?}");
}
