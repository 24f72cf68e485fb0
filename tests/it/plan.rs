//! `plan`: a dry run never writes, and never creates the store.

use scimsync::sandbox::Route;
use serde_json::{Value, json};

use crate::common::{TestEnv, inactive_user, user};

/// A target with data, a source with pending changes of every kind.
async fn pending_changes() -> TestEnv {
    let env = TestEnv::new().await;
    // Ada exists with an old title (adopted and updated).
    env.sb()
        .insert_user(json!({
            "userName": "ada@example.com",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "displayName": "Ada Lovelace",
            "title": "Old title",
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
        }))
        .unwrap();
    // Edsger is active in the target but inactive in the source (disabled).
    env.sb()
        .insert_user(json!({
            "userName": "edsger@example.com",
            "name": {"givenName": "Edsger", "familyName": "Dijkstra"},
            "emails": [{"value": "edsger@example.com", "type": "work", "primary": true}],
        }))
        .unwrap();
    env.write_users(&[
        user(
            "1001",
            "Ada",
            "Lovelace",
            "ada@example.com",
            "Engineer",
            "Engineering",
        ),
        inactive_user(
            "1008",
            "Edsger",
            "Dijkstra",
            "edsger@example.com",
            "Emeritus",
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
    ]);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sends_no_write_and_does_not_create_the_store() {
    let env = pending_changes().await;
    let out = env.run(&["plan"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.writes, 0, "{c:?}");
    assert_eq!(c.get(Route::ListUsers), 1, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(c.total, 2, "{c:?}");
    assert!(
        !env.store_path().exists(),
        "plan created {}",
        env.store_path().display()
    );
    let s = &out.stdout;
    assert!(
        s.contains("+ user  katherine@example.com  (Katherine Johnson)"),
        "{out:?}"
    );
    assert!(
        s.contains("~ user  ada@example.com  (adopt existing account matched by userName)"),
        "{out:?}"
    );
    assert!(
        s.contains("~ title: \"Old title\" -> \"Engineer\""),
        "{out:?}"
    );
    assert!(
        s.contains("! user  edsger@example.com  (disable: inactive in the source"),
        "{out:?}"
    );
    assert!(s.contains("+ group Engineering"), "{out:?}");
    let summary = s
        .lines()
        .find(|l| l.starts_with("Plan: "))
        .unwrap_or_else(|| panic!("no summary line: {out:?}"));
    assert_eq!(
        summary,
        "Plan: 2 to create, 2 to update, 1 to disable, 0 to delete; 1 membership changes (+1 -0)."
    );
    // The sandbox is untouched.
    let ada = env.target_user("ada@example.com").unwrap();
    assert_eq!(ada["title"], "Old title");
    assert!(ada.get("externalId").is_none_or(Value::is_null));
    assert_eq!(env.sb().users().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_json_lists_the_actions() {
    let env = pending_changes().await;
    let out = env.run(&["plan", "--format", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).expect("plan JSON");
    assert_eq!(doc["has_changes"], true);
    let actions = doc["actions"].as_array().expect("actions");
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "create_group",
            "update_user",
            "create_user",
            "update_user",
            "add_members",
            "disable_user"
        ],
        "{doc:#}"
    );
    assert_eq!(doc["summary"]["users_create"], 1);
    assert_eq!(doc["summary"]["users_disable"], 1);
    assert_eq!(doc["context"]["full_read"], true);
    assert_eq!(env.sb().counts().writes, 0);
    assert!(!env.store_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_check_exit_code_follows_pending_changes() {
    let env = pending_changes().await;
    let out = env.run(&["plan", "--check"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);

    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let edsger = env.target_user("edsger@example.com").unwrap();
    assert_eq!(edsger["active"], false);
    assert_eq!(edsger["externalId"], "1008");
    assert_eq!(env.sb().users().len(), 3);

    env.sb().reset_counts();
    let out = env.run(&["plan", "--check"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("No changes."), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
    // A forced full read agrees.
    let out = env.run(&["plan", "--check", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);
}
