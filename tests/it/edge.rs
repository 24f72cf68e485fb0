//! Less travelled paths: accounts or groups changed behind scimsync's back,
//! paging, chunking, membership moves, re-enabling, odd create answers,
//! gateway throttling, and the store file itself.

use scimsync::sandbox::{Fault, FaultRule, RateLimit, Route, SandboxConfig};
use serde_json::{Value, json};

use crate::common::{FAST, TestEnv, five_users, inactive_user, user};

async fn synced(env: &TestEnv) {
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env.sb().reset_counts();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_an_account_deleted_in_the_target_unlinks_then_recreates() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    let alan = env.target_user("alan@example.com").unwrap();
    env.delete_in_target(alan["id"].as_str().unwrap()).await;
    env.sb().reset_counts();
    let mut rows = five_users();
    rows[2] = rows[2].replace("Scientist", "Professor");
    env.write_users(&rows);

    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    let row = &env.outcomes_of_run(2)[0];
    assert_eq!(
        (row.outcome.as_str(), row.http_status),
        ("failed", Some(404))
    );
    assert!(
        row.detail
            .as_deref()
            .unwrap()
            .contains("next run re-creates")
    );

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 1, "{c:?}");
    let alan = env.target_user("alan@example.com").expect("re-created");
    assert_eq!(alan["title"], "Professor");
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
async fn new_source_group_that_exists_in_the_target_is_adopted() {
    let mut env = TestEnv::new().await;
    env.set_extra("[groups]\nadopt_existing = true\n");
    env.write_users(&five_users());
    synced(&env).await;
    let gid = env
        .sb()
        .insert_group(json!({"displayName": "Finance"}))
        .unwrap();
    let mut rows = five_users();
    rows[3] = rows[3].replace("Analyst,", "Analyst,Finance");
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateGroup), 1, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(env.sb().groups().len(), 3);
    let g = env.target_group("Finance").unwrap();
    assert_eq!(g["id"], gid.as_str());
    assert_eq!(env.member_names("Finance"), ["katherine@example.com"]);
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_reads_page_on_start_index() {
    let env = TestEnv::with_sandbox(SandboxConfig {
        max_page_size: 7,
        ..SandboxConfig::default()
    })
    .await;
    // 20 accounts exist already (matched by userName), 5 more are new.
    let mut rows = Vec::new();
    for i in 0..25 {
        let email = format!("p{i:02}@example.com");
        if i < 20 {
            env.sb()
                .insert_user(json!({
                    "userName": email,
                    "emails": [{"value": email, "type": "work", "primary": true}],
                }))
                .unwrap();
        }
        rows.push(user(
            &format!("{}", 5000 + i),
            "P",
            &format!("N{i}"),
            &email,
            "T",
            "",
        ));
    }
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::ListUsers), 3, "{c:?}"); // 7 + 7 + 6
    assert_eq!(c.get(Route::CreateUser), 5, "{c:?}");
    assert_eq!(c.get(Route::PatchUser), 20, "{c:?}");
    assert_eq!(env.sb().users().len(), 25);

    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::ListUsers), 4, "{c:?}"); // 7 + 7 + 7 + 4
    assert_eq!(c.writes, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_sent_in_chunks() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}member_chunk = 2\n"), "");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // Engineering: 3 members → 2 PATCHes; Research: 2 → 1.
    assert_eq!(env.sb().counts().get(Route::PatchGroup), 3);
    assert_eq!(env.member_names("Engineering").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_moving_between_groups_costs_two_group_patches() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    let mut rows = five_users();
    rows[0] = rows[0].replace(",Engineering", ",Research");
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchGroup), 2, "{c:?}");
    assert_eq!(c.total, 2, "{c:?}");
    assert_eq!(
        env.member_names("Engineering"),
        ["grace@example.com", "linus@example.com"]
    );
    assert_eq!(
        env.member_names("Research"),
        ["ada@example.com", "alan@example.com", "grace@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_then_active_again() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    let mut rows = five_users();
    rows[3] = inactive_user(
        "1004",
        "Katherine",
        "Johnson",
        "katherine@example.com",
        "Analyst",
        "",
    );
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchUser), 1);
    assert_eq!(
        env.target_user("katherine@example.com").unwrap()["active"],
        false
    );
    let row = &env.outcomes_of_run(2)[0];
    assert_eq!(row.action, "disable");
    assert_eq!(row.detail.as_deref(), Some("inactive in the source"));

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);

    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().get(Route::PatchUser), 1);
    assert_eq!(
        env.target_user("katherine@example.com").unwrap()["active"],
        true
    );
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_user_is_disabled_and_held_user_is_left_alone() {
    let mut env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    // Linus leaves the scope (another domain); Alan's record breaks (bad email).
    env.set_extra("[scope]\nemail_domains = [\"example.com\"]\n");
    let mut rows = five_users();
    rows[4] = rows[4].replace("linus@example.com", "linus@elsewhere.org");
    rows[2] = rows[2].replace("alan@example.com,true", "alan@example,true");
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}"); // one invalid record
    let c = env.sb().counts();
    // Linus: disabled and removed from Engineering. Alan: untouched.
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 1, "{c:?}");
    let linus = env.target_user("linus@example.com").unwrap();
    assert_eq!(linus["active"], false);
    let alan = env.target_user("alan@example.com").unwrap();
    assert_eq!(alan["active"], true);
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com", "grace@example.com"]
    );
    let disable = env.outcomes_where("run_id = 2 AND action = 'disable'");
    assert_eq!(disable.len(), 1);
    assert_eq!(disable[0].detail.as_deref(), Some("out of scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_removed_from_the_source_is_deleted() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    let rows: Vec<String> = five_users()
        .into_iter()
        .map(|r| r.replace(";Research", "").replace(",Research", ","))
        .collect();
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::DeleteGroup), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 0, "{c:?}");
    assert_eq!(c.total, 1, "{c:?}");
    assert!(env.target_group("Research").is_none());
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_restores_memberships_changed_by_hand() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    // An admin adds an unmanaged account to Engineering.
    let stranger = env
        .sb()
        .insert_user(json!({
            "userName": "stranger@example.com",
            "emails": [{"value": "stranger@example.com", "type": "work", "primary": true}],
        }))
        .unwrap();
    let eng = env.target_group("Engineering").unwrap();
    // A PATCH through the API, as the admin console would send it.
    let url = format!(
        "{}/Groups/{}",
        env.running.base_url(),
        eng["id"].as_str().unwrap()
    );
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .patch(url)
        .bearer_auth(&env.sb().config().api_key)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": stranger}]}]
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.status());
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("- member stranger@example.com"),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().get(Route::PatchGroup), 1);
    assert_eq!(env.member_names("Engineering").len(), 3);
    assert!(env.target_user("stranger@example.com").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_create_answers_are_resolved_by_lookup() {
    for fault in [
        Fault::EmptyBody { status: 201 },
        Fault::MalformedBody { status: 201 },
        Fault::Reset,
    ] {
        let mut env = TestEnv::new().await;
        env.configure(&format!("{FAST}max_attempts = 2\n"), "");
        env.write_users(&five_users());
        env.sb()
            .inject(FaultRule::new(Some(Route::CreateUser), fault.clone(), 1).after_operation());
        let out = env.run(&["sync"]).await;
        assert_eq!(out.code, 0, "{fault:?}: {out:?}");
        assert_eq!(env.sb().users().len(), 5, "{fault:?}");
        assert_eq!(env.sb().counts().get(Route::CreateUser), 5, "{fault:?}");
        assert_eq!(env.user_link_count(), 5, "{fault:?}");
        assert_eq!(env.member_names("Engineering").len(), 3, "{fault:?}");
        env.sb().reset_counts();
        let out = env.run(&["sync"]).await;
        assert_eq!(out.code, 0, "{fault:?}: {out:?}");
        assert_eq!(env.sb().counts().total, 0, "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_throttling_is_survived() {
    let mut env = TestEnv::with_sandbox(SandboxConfig {
        rate_limit: Some(RateLimit {
            // 6 at once, then 5 a second: the 11 requests of this sync
            // overflow it unless they span more than a second.
            per_second: 5.0,
            burst: 6,
            send_retry_after: true,
        }),
        ..SandboxConfig::default()
    })
    .await;
    env.configure(FAST, "");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().users().len(), 5);
    assert_eq!(env.member_names("Engineering").len(), 3);
    let c = env.sb().counts();
    assert!(c.throttled >= 1, "{c:?}");
    let run = &env.runs()[0];
    assert_eq!(run.throttled as u64, c.throttled);
    assert_eq!(run.status, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_json_output_and_private_store() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync", "--format", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).expect("sync JSON");
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["counts"]["applied"], 12);
    assert_eq!(doc["counts"]["requests"], 11);
    assert_eq!(doc["summary"]["users_create"], 5);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.store_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_reads_in_full_with_a_zero_interval() {
    let mut env = TestEnv::new().await;
    env.set_extra("[policy]\nreconcile_interval = \"0s\"\n");
    env.write_users(&five_users());
    synced(&env).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::ListUsers), 1, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(c.writes, 0, "{c:?}");
    assert!(out.stdout.contains("No changes."), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pacing_stays_under_the_gateway_limit() {
    let mut env = TestEnv::with_sandbox(SandboxConfig {
        rate_limit: Some(RateLimit {
            per_second: 40.0,
            burst: 4,
            send_retry_after: true,
        }),
        ..SandboxConfig::default()
    })
    .await;
    // 20 requests a second, one at a time: half the gateway's rate.
    env.configure("requests_per_second = 20.0\nburst = 1\n", "");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.throttled, 0, "{c:?}");
    assert_eq!(c.total, 11, "{c:?}");
    assert_eq!(env.runs()[0].retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_stops_the_run() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    env.sb()
        .inject(FaultRule::status(Some(Route::CreateGroup), 403, 0));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("forbids"), "{out:?}");
    let c = env.sb().counts();
    // Group creates already dispatched may go out; nothing after them is sent.
    let group_posts = c.get(Route::CreateGroup);
    assert!((1..=2).contains(&group_posts), "{c:?}");
    assert_eq!(c.get(Route::CreateUser), 0, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 0, "{c:?}");
    let run = &env.runs()[0];
    assert_eq!(run.status, "failed");
    assert_eq!(run.applied, 0);
    // 5 users, 5 memberships, and the second group if it was not sent.
    let skipped = env.outcomes_where("outcome = 'skipped'");
    assert_eq!(skipped.len() as u64, 10 + 2 - group_posts, "{skipped:#?}");
    assert!(
        skipped
            .iter()
            .all(|r| r.detail.as_deref().unwrap().contains("not attempted")),
        "{skipped:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_exits_2() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_attempts = 1\n"), "");
    env.write_users(&five_users());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/scim/directory/abc");
    env.write("scimsync.toml", &env.config_text_for("test", &url));
    let out = env.run(&["plan"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("cannot connect"), "{out:?}");
    assert!(!env.store_path().exists());
    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("cannot connect"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_limit_returns_the_newest_rows() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = env
        .run(&["report", "--limit", "3", "--format", "json"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [12, 11, 10]);
    let out = env
        .run(&["report", "--action", "create", "--format", "json"])
        .await;
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 7);
    // No store yet elsewhere: a plain error.
    let out = env
        .run(&["report", "--db", &env.path("none.db").display().to_string()])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("nothing has been synced yet"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_attribute_is_removed_in_one_patch() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    synced(&env).await;
    let mut rows = five_users();
    rows[1] = rows[1].replace(",Manager,", ",,");
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("~ title: \"Manager\" -> (none)"),
        "{out:?}"
    );
    let c = env.sb().counts();
    assert_eq!((c.get(Route::PatchUser), c.total), (1, 1), "{c:?}");
    let grace = env.target_user("grace@example.com").unwrap();
    assert!(grace.get("title").is_none_or(Value::is_null), "{grace}");
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);
}
