//! `scimsync import`: link existing target accounts to the source, report the
//! unknown ones, write nothing to the target.

use scimsync::sandbox::Route;
use serde_json::json;

use crate::common::{TestEnv, five_users};

/// A target that already has accounts: Ada (externalId 1001), Grace (same
/// userName, no externalId), two people the source does not know, and an
/// "Engineering" group.
async fn populated() -> TestEnv {
    let mut env = TestEnv::new().await;
    env.set_extra("[groups]\nadopt_existing = true\n");
    let sb = env.sb();
    let ada = sb
        .insert_user(json!({
            "userName": "ada.l@example.com",
            "externalId": "1001",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
            "active": true,
        }))
        .unwrap();
    sb.insert_user(json!({
        "userName": "GRACE@example.com",
        "name": {"givenName": "Grace", "familyName": "Hopper"},
        "emails": [{"value": "grace@example.com", "type": "work", "primary": true}],
        "active": true,
    }))
    .unwrap();
    sb.insert_user(json!({
        "userName": "contractor@example.com",
        "emails": [{"value": "contractor@example.com", "type": "work", "primary": true}],
        "active": true,
    }))
    .unwrap();
    sb.insert_user(json!({
        "userName": "old.admin@example.com",
        "externalId": "legacy-7",
        "emails": [{"value": "old.admin@example.com", "type": "work", "primary": true}],
        "active": false,
    }))
    .unwrap();
    sb.insert_group(json!({
        "displayName": "Engineering",
        "members": [{"value": ada}],
    }))
    .unwrap();
    env.write_users(&five_users());
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn import_links_matches_reports_the_unknown_and_writes_nothing() {
    let env = populated().await;
    env.sb().reset_counts();
    let out = env.run(&["import", "--export", "accounts.csv"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.writes, 0, "import sends no write: {c:?}");
    assert!(
        c.get(Route::ListUsers) >= 1 && c.get(Route::ListGroups) >= 1,
        "{c:?}"
    );

    assert!(
        out.stdout.contains("Target test: 4 users, 1 groups read."),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("Linked 2 users (1 by externalId, 1 by userName) and 1 groups"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("3 source users have no account"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("Unmatched target accounts (2)"),
        "{out:?}"
    );
    assert!(out.stdout.contains("contractor@example.com"), "{out:?}");
    assert!(
        out.stdout
            .contains("old.admin@example.com  externalId legacy-7  (inactive)"),
        "{out:?}"
    );

    // Links in the store, found by `links`.
    assert_eq!(env.user_link_count(), 2);
    let ada = env.run(&["links", "show", "1001"]).await;
    assert!(
        ada.stdout.contains("user ada.l@example.com"),
        "state = what the account holds: {ada:?}"
    );
    let eng = env.run(&["links", "--groups", "--format", "json"]).await;
    let eng: serde_json::Value = serde_json::from_str(&eng.stdout).unwrap();
    assert_eq!(eng[0]["name"], "Engineering");
    assert_eq!(eng[0]["members"], 1, "Ada, as the target has it");

    // The export: every target account with its status.
    let mut rdr = csv::Reader::from_path(env.path("accounts.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "id",
            "userName",
            "externalId",
            "displayName",
            "email",
            "active",
            "source_id",
            "status"
        ]
    );
    let mut rows: Vec<(String, String, String)> = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_owned(), r[6].to_owned(), r[7].to_owned())
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "GRACE@example.com".into(),
                "1002".into(),
                "linked by import".into()
            ),
            (
                "ada.l@example.com".into(),
                "1001".into(),
                "linked by import".into()
            ),
            (
                "contractor@example.com".into(),
                String::new(),
                "unmatched".into()
            ),
            (
                "old.admin@example.com".into(),
                String::new(),
                "unmatched".into()
            ),
        ]
    );

    // The import is in the report.
    let hist = env
        .run(&["report", "user", "grace@example.com", "--format", "json"])
        .await;
    let hist: serde_json::Value = serde_json::from_str(&hist.stdout).unwrap();
    assert_eq!(hist[0]["action"], "link");
    assert!(hist[0]["detail"].as_str().unwrap().contains("by userName"));

    // The next sync creates only the three missing people, updates the two
    // linked ones, and leaves the unknown accounts alone.
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 3, "{c:?}");
    assert_eq!(c.get(Route::CreateGroup), 1, "Research only: {c:?}");
    assert_eq!(c.get(Route::DeleteUser), 0);
    env.assert_no_duplicates("after import and sync");
    assert_eq!(
        env.target_user("ada@example.com").unwrap()["externalId"],
        "1001",
        "Ada's userName corrected on the linked account"
    );
    assert!(env.target_user("contractor@example.com").is_some());
    assert_eq!(
        env.target_user("old.admin@example.com").unwrap()["active"],
        false
    );

    // A second import finds nothing new.
    env.sb().reset_counts();
    let out = env.run(&["import"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Linked 0 users (0 by externalId, 0 by userName) and 0 groups; 5 users and 2 groups were already linked."), "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn import_reports_ambiguous_matches_and_cannot_run_without_the_target() {
    let env = populated().await;
    // A second account with Ada's externalId: ambiguous, not linked, exit 1.
    env.sb()
        .insert_user(
            json!({"userName": "ada.twin@example.com", "externalId": "1001", "active": true,
                "emails": [{"value": "ada.twin@example.com", "type": "work", "primary": true}]}),
        )
        .unwrap();
    let out = env.run(&["import"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("Not linked: user ada@example.com (1001)"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("2 target accounts carry externalId `1001`"),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().writes, 0);

    // A wrong key: exit 2, one line.
    env.write_key("wrong-key");
    let out = env.run(&["import"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
}
