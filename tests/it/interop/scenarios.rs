//! The end-to-end scenarios, run against scim2-server.

use axum::http::Method;
use serde_json::json;

use super::proxy::{Fault, FaultKind};
use crate::common::{AccountView, five_users, parse_row, user};

/// The view of a source row whose account was disabled.
fn disabled(row: &str) -> AccountView {
    let mut v = AccountView::of_row(&parse_row(row));
    v.active = Some(false);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_creates_users_groups_and_members() {
    let env = interop_env!();
    let rows = five_users();
    env.write_users(&rows);

    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_state(&rows, &[], &[], "after the first sync")
        .await;

    // 5 user POSTs, 2 group POSTs and one member PATCH per group; every one of
    // them reached the server (its own access log agrees with the proxy).
    assert_eq!(env.proxy.count(&Method::POST, "/v2/Users"), 5);
    assert_eq!(env.proxy.count(&Method::POST, "/v2/Groups"), 2);
    assert_eq!(env.proxy.count(&Method::PATCH, "/v2/Groups/"), 2);
    assert_eq!(env.proxy.writes(), 9);
    assert_eq!(env.server.logged_writes(), 9, "{}", env.server.log_text());
    // The server answered each member PATCH with 204 and no body.
    assert_eq!(
        env.server
            .log_text()
            .lines()
            .filter(|l| l.contains("\"PATCH /v2/Groups/") && l.contains("\" 204 "))
            .count(),
        2,
        "{}",
        env.server.log_text()
    );
    // The report has one applied row per user (5), group (2) and membership (5).
    let report = env.run(&["report", "--run", "1", "--format", "csv"]).await;
    assert_eq!(report.code, 0, "{report:?}");
    assert_eq!(
        report
            .stdout
            .lines()
            .filter(|l| l.contains(",applied,"))
            .count(),
        12,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_sync_sends_no_writes() {
    let env = interop_env!();
    let rows = five_users();
    env.write_users(&rows);
    let first = env.run(&["sync"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    let writes_after_first = env.server.logged_writes();
    assert_eq!(writes_after_first, 9);

    // A routine run plans against the state last pushed: nothing on the wire.
    env.proxy.reset_counts();
    let routine = env.run(&["sync"]).await;
    assert_eq!(routine.code, 0, "{routine:?}");
    assert!(routine.stdout.contains("No changes."), "{routine:?}");
    assert_eq!(env.proxy.requests(), 0, "{:?}", env.proxy.seen());

    // A full read of the third-party server finds nothing to change either:
    // GETs only, no write (counted by the proxy and by the server's own log).
    let reconcile = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(reconcile.code, 0, "{reconcile:?}");
    assert!(reconcile.stdout.contains("No changes."), "{reconcile:?}");
    assert!(env.proxy.count(&Method::GET, "/v2/Users") >= 1);
    assert!(env.proxy.count(&Method::GET, "/v2/Groups") >= 1);
    assert_eq!(env.proxy.writes(), 0, "{:?}", env.proxy.seen());
    assert_eq!(env.server.logged_writes(), writes_after_first);
    env.assert_state(&rows, &[], &[], "after the no-change runs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_changes_are_patched() {
    let env = interop_env!();
    let mut rows = five_users();
    env.write_users(&rows);
    assert_eq!(env.run(&["sync"]).await.code, 0);
    let ada_id = env.user("ada@example.com").await.expect("ada")["id"].clone();

    rows[0] = user(
        "1001",
        "Ada",
        "King",
        "ada@example.com",
        "Chief Engineer",
        "Engineering",
    );
    rows[2] = user(
        "1003",
        "Alan",
        "Turing",
        "alan@example.com",
        "Professor",
        "Research",
    );
    env.write_users(&rows);
    env.proxy.reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("\"Engineer\" -> \"Chief Engineer\""),
        "{out:?}"
    );

    // One PATCH per changed user (answered 204 without a body), nothing else.
    assert_eq!(
        env.proxy.count(&Method::PATCH, "/v2/Users/"),
        2,
        "{:?}",
        env.proxy.seen()
    );
    assert_eq!(env.proxy.writes(), 2, "{:?}", env.proxy.seen());
    env.assert_state(&rows, &[], &[], "after the attribute change")
        .await;
    // Patched in place: the same resource, not a new one.
    let ada = env.user("ada@example.com").await.expect("ada");
    assert_eq!(ada["id"], ada_id);
    assert_eq!(ada["name"]["familyName"], "King");
    assert_eq!(ada["displayName"], "Ada King");

    // What scimsync recorded as pushed matches the server: a full read finds
    // nothing to do.
    env.proxy.reset_counts();
    let again = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes."), "{again:?}");
    assert_eq!(env.proxy.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_disables_then_deletes() {
    let mut env = interop_env!();
    let rows = five_users();
    env.write_users(&rows);
    assert_eq!(env.run(&["sync"]).await.code, 0);
    let alan_id = env.user("alan@example.com").await.expect("alan")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let linus_id = env.user("linus@example.com").await.expect("linus")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Alan leaves: disabled (the profile's default), dropped from Research.
    let without_alan: Vec<String> = rows
        .iter()
        .filter(|r| !r.contains("alan@"))
        .cloned()
        .collect();
    env.write_users(&without_alan);
    let out = env.run(&["sync", "--allow-deprovision"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_state(
        &without_alan,
        &[disabled(&rows[2])],
        &[],
        "after disabling Alan",
    )
    .await;

    // With deletion chosen, Linus leaves: his account is deleted (404 from the
    // server) and no group still lists him — the server keeps deleted ids in
    // `members`, so scimsync must remove the membership itself.
    env.set_extra("[policy]\ndeprovision = \"delete\"\n");
    let without_linus: Vec<String> = without_alan
        .iter()
        .filter(|r| !r.contains("linus@"))
        .cloned()
        .collect();
    env.write_users(&without_linus);
    env.proxy.reset_counts();
    let out = env.run(&["sync", "--allow-deprovision"]).await;
    assert!(out.code == 0, "{out:?}");
    assert_eq!(
        env.proxy
            .count(&Method::DELETE, &format!("/v2/Users/{linus_id}")),
        1
    );
    let (status, _) = env.server.get(&format!("/Users/{linus_id}")).await;
    assert_eq!(status, 404, "Linus was deleted");
    let accounts = env.accounts().await;
    assert!(
        !accounts
            .iter()
            .any(|a| a.user_name.as_deref() == Some("linus@example.com")),
        "{accounts:#?}"
    );
    // Groups list existing users only (checked by `groups`), Linus in none.
    let groups = env.groups("after deleting Linus").await;
    assert!(
        groups.values().flatten().all(|m| m != "linus@example.com"),
        "{groups:?}"
    );
    // Alan, disabled before, is still there or was deleted too; either way he
    // is in no group and not active.
    let (status, alan) = env.server.get(&format!("/Users/{alan_id}")).await;
    assert!(status == 404 || alan["active"] == false, "{status} {alan}");
    assert!(groups.values().flatten().all(|m| m != "alan@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_are_added_and_removed() {
    let env = interop_env!();
    let rows = five_users();
    env.write_users(&rows);
    assert_eq!(env.run(&["sync"]).await.code, 0);

    // Grace leaves Research and Engineering, Katherine joins Research and a new
    // group, Linus leaves Engineering; Alan stays in Research.
    let rows = vec![
        user(
            "1001",
            "Ada",
            "Lovelace",
            "ada@example.com",
            "Engineer",
            "Engineering",
        ),
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
            "Research",
        ),
        user(
            "1004",
            "Katherine",
            "Johnson",
            "katherine@example.com",
            "Analyst",
            "Research;Flight",
        ),
        user(
            "1005",
            "Linus",
            "Torvalds",
            "linus@example.com",
            "Engineer",
            "",
        ),
    ];
    env.write_users(&rows);
    env.proxy.reset_counts();
    let out = env.run(&["sync", "--allow-deprovision"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // Removals are PATCH `remove` with the `members[value eq "ID"]` path (the
    // only form this server accepts): had they been refused, the state check
    // below would fail.
    assert_eq!(env.proxy.count(&Method::POST, "/v2/Groups"), 1);
    assert!(env.proxy.count(&Method::PATCH, "/v2/Groups/") >= 3);
    env.assert_state(&rows, &[], &[], "after the membership changes")
        .await;

    // Every member leaves Research: it is no longer in the source, so its
    // members are removed and the group is deleted.
    let research_id = env
        .server
        .groups()
        .await
        .iter()
        .find(|g| g["displayName"] == "Research")
        .expect("Research exists")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rows: Vec<String> = rows
        .iter()
        .map(|r| r.replace(",Research;", ",").replace(",Research", ","))
        .collect();
    env.write_users(&rows);
    env.proxy.reset_counts();
    let out = env.run(&["sync", "--allow-deprovision"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.proxy.count(&Method::DELETE, "/v2/Groups/"), 1);
    let (status, _) = env.server.get(&format!("/Groups/{research_id}")).await;
    assert_eq!(status, 404, "Research was deleted");
    env.assert_state(&rows, &[], &[], "after emptying Research")
        .await;

    env.proxy.reset_counts();
    let again = env.run(&["sync", "--reconcile"]).await;
    assert!(again.stdout.contains("No changes."), "{again:?}");
    assert_eq!(env.proxy.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_after_partial_failure_converges() {
    let env = interop_env!();
    let rows = five_users();
    env.write_users(&rows);

    // Alan's create always fails (503, never reaches the server); Katherine's
    // create reaches the server but the connection drops before the answer;
    // the Research group is created but answered 503; the first member PATCH
    // is applied but its answer is cut off.
    env.proxy.inject(
        Fault::new(Method::POST, "/v2/Users", FaultKind::Unavailable, 0)
            .with_body("alan@example.com"),
    );
    env.proxy.inject(
        Fault::new(Method::POST, "/v2/Users", FaultKind::ResetAfter, 1)
            .with_body("katherine@example.com"),
    );
    env.proxy.inject(
        Fault::new(Method::POST, "/v2/Groups", FaultKind::UnavailableAfter, 1)
            .with_body("Research"),
    );
    env.proxy.inject(Fault::new(
        Method::PATCH,
        "/v2/Groups/",
        FaultKind::ResetAfter,
        1,
    ));

    let first = env.run(&["sync"]).await;
    assert_eq!(first.code, 1, "Alan's create failed: {first:?}");
    let fired = env.proxy.fired();
    assert!(
        fired[0] >= 1 && fired[1] == 1 && fired[2] == 1 && fired[3] == 1,
        "{fired:?}"
    );
    // Nothing was created twice although three writes were in doubt: the
    // server allows duplicate group names, so a blind re-send would show here.
    env.assert_no_duplicate_users("after the faulty run").await;
    let groups = env.groups("after the faulty run").await;
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(env.user("alan@example.com").await.is_none());
    assert!(env.user("katherine@example.com").await.is_some());

    // The faults are gone: a plain rerun converges.
    env.proxy.clear_faults();
    let second = env.run(&["sync"]).await;
    assert_eq!(second.code, 0, "{second:?}");
    env.assert_state(&rows, &[], &[], "after the clean rerun")
        .await;

    // And then there is nothing left to do, even on a full read.
    env.proxy.reset_counts();
    let third = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(third.code, 0, "{third:?}");
    assert!(third.stdout.contains("No changes."), "{third:?}");
    assert_eq!(env.proxy.writes(), 0, "{:?}", env.proxy.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pages_and_existing_accounts_are_adopted() {
    // The server caps every list page at 3 resources.
    let mut env = interop_env!(paged 3);
    // The hand-made Even group is taken over (the default is to report it).
    env.set_extra("[groups]\nadopt_existing = true\n");
    let rows: Vec<String> = (0..10)
        .map(|i| {
            let group = if i % 2 == 0 { "Even" } else { "Odd" };
            user(
                &format!("{}", 2000 + i),
                &format!("Given{i}"),
                &format!("Family{i}"),
                &format!("person{i}@example.com"),
                "Staff",
                group,
            )
        })
        .collect();
    // Eight of them exist already (made by hand, no externalId, an old title),
    // and so does the Even group.
    for i in 0..8 {
        env.server
            .create(
                "Users",
                &json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("Person{i}@example.com"),
                    "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
                    "displayName": format!("Given{i} Family{i}"),
                    "emails": [{"value": format!("person{i}@example.com"), "type": "work", "primary": true}],
                    "active": true,
                    "title": "Intern",
                }),
            )
            .await;
    }
    env.server
        .create(
            "Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Even"}),
        )
        .await;
    assert_eq!(env.server.users().await.len(), 8);
    env.write_users(&rows);

    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // The first run read all 8 users in pages of 3 (startIndex 1, 4, 7).
    let pages: Vec<String> = env
        .proxy
        .seen()
        .iter()
        .filter(|s| s.method == Method::GET && s.path.starts_with("/v2/Users?"))
        .map(|s| s.path.clone())
        .collect();
    assert!(
        pages.iter().any(|p| p.contains("startIndex=7")),
        "{pages:?}"
    );
    // Adopted, not re-created: 2 user POSTs, 1 group POST (Odd).
    assert_eq!(
        env.proxy.count(&Method::POST, "/v2/Users"),
        2,
        "{:?}",
        env.proxy.seen()
    );
    assert_eq!(env.proxy.count(&Method::POST, "/v2/Groups"), 1);
    // The source's spelling of each userName wins (`Person0@` becomes
    // `person0@`, patched like any other attribute).
    env.assert_state(&rows, &[], &[], "after adopting").await;

    env.proxy.reset_counts();
    let again = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("No changes."), "{again:?}");
    assert_eq!(env.proxy.writes(), 0);
    assert!(
        env.proxy.count(&Method::GET, "/v2/Users?") >= 4,
        "10 users in pages of 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_exits_2_before_any_write() {
    let env = interop_env!();
    env.write_users(&five_users());
    env.write("key", "not-the-token\n");
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
    assert!(!out.stderr.contains("not-the-token") && !out.stdout.contains("not-the-token"));
    assert_eq!(env.proxy.writes(), 0);
    assert!(env.server.users().await.is_empty());
}
