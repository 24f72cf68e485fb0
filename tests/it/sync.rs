//! `sync`: creation, idempotence, updates, deprovisioning, adoption, scope,
//! invalid records, conflicts and drift.

use scimsync::sandbox::Route;
use serde_json::{Value, json};

use crate::common::{TestEnv, five_users, inactive_user, user};

fn names(users: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = users
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

/// A seeded account, as an admin would have created it by hand.
fn seeded(user_name: &str, email: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    })
}

/// Five users, two groups, first sync.
async fn synced_five() -> TestEnv {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env.sb().reset_counts();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_creates_users_groups_and_memberships() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("+ user  ada@example.com  (Ada Lovelace)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("Run 1: 12 of 12 outcomes applied"),
        "{out:?}"
    );

    // Requests: one page of each list, then the writes.
    let c = env.sb().counts();
    assert_eq!(c.get(Route::ListUsers), 1, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(c.get(Route::CreateUser), 5, "{c:?}");
    assert_eq!(c.get(Route::CreateGroup), 2, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 2, "{c:?}");
    assert_eq!(c.writes, 9, "{c:?}");
    assert_eq!(c.total, 11, "{c:?}");
    assert_eq!(c.throttled, 0);

    // Target state: the mapped attributes.
    let users = env.sb().users();
    assert_eq!(users.len(), 5);
    let ada = env.target_user("ada@example.com").expect("ada exists");
    assert_eq!(ada["userName"], "ada@example.com");
    assert_eq!(ada["name"]["givenName"], "Ada");
    assert_eq!(ada["name"]["familyName"], "Lovelace");
    assert_eq!(ada["displayName"], "Ada Lovelace");
    assert_eq!(ada["title"], "Engineer");
    assert_eq!(ada["active"], true);
    assert_eq!(ada["externalId"], "1001");
    let emails = ada["emails"].as_array().expect("emails");
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0]["value"], "ada@example.com");
    assert_eq!(emails[0]["type"], "work");
    assert_eq!(emails[0]["primary"], true);
    for u in &users {
        let name = u["userName"].as_str().unwrap();
        assert!(
            u["externalId"]
                .as_str()
                .is_some_and(|x| x.starts_with("100")),
            "{u}"
        );
        assert_eq!(u["active"], true, "{name}");
    }
    assert_eq!(env.sb().groups().len(), 2);
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com", "linus@example.com"]
    );
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com", "grace@example.com"]
    );
    assert_eq!(
        env.target_group("Engineering").unwrap()["externalId"],
        "Engineering"
    );

    // Report: one create row per user, applied with 201.
    let rows = env.outcomes();
    let creates: Vec<_> = rows
        .iter()
        .filter(|r| r.resource == "user" && r.action == "create")
        .collect();
    assert_eq!(creates.len(), 5, "{rows:#?}");
    for r in &creates {
        assert_eq!(r.outcome, "applied", "{r:?}");
        assert_eq!(r.http_status, Some(201), "{r:?}");
        assert_eq!(r.attempts, 1, "{r:?}");
        assert_eq!(r.run_id, 1);
        let target = env.target_user(r.user_name.as_deref().unwrap()).unwrap();
        assert_eq!(r.scim_id.as_deref(), target["id"].as_str(), "{r:?}");
        assert_eq!(r.email, r.user_name, "{r:?}");
    }
    let group_rows = rows
        .iter()
        .filter(|r| r.resource == "group" && r.action == "create")
        .filter(|r| r.outcome == "applied" && r.http_status == Some(201))
        .count();
    assert_eq!(group_rows, 2, "{rows:#?}");
    let member_rows = rows
        .iter()
        .filter(|r| r.resource == "membership" && r.action == "add_member")
        .filter(|r| r.outcome == "applied" && r.http_status == Some(200))
        .count();
    assert_eq!(member_rows, 5, "{rows:#?}");
    assert_eq!(rows.len(), 12);

    let runs = env.runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.status, "succeeded");
    assert!(run.reconcile);
    assert_eq!(
        (run.applied, run.failed, run.skipped, run.invalid),
        (12, 0, 0, 0)
    );
    assert_eq!(run.requests, 11);
    assert_eq!(env.user_link_count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sync_sends_no_request_at_all() {
    let env = synced_five().await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("No changes."), "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.total, 0, "{c:?}");
    assert_eq!(c.writes, 0);
    let runs = env.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].status, "succeeded");
    assert!(!runs[1].reconcile);
    assert_eq!(runs[1].requests, 0);
    assert!(env.outcomes_of_run(2).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_attribute_sends_exactly_one_patch() {
    let env = synced_five().await;
    let mut rows = five_users();
    rows[1] = user(
        "1002",
        "Grace",
        "Hopper",
        "grace@example.com",
        "Rear Admiral",
        "Engineering;Research",
    );
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("~ title: \"Manager\" -> \"Rear Admiral\""),
        "{out:?}"
    );
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    assert_eq!(c.writes, 1, "{c:?}");
    assert_eq!(c.total, 1, "{c:?}");
    let grace = env.target_user("grace@example.com").unwrap();
    assert_eq!(grace["title"], "Rear Admiral");
    let run2 = env.outcomes_of_run(2);
    assert_eq!(run2.len(), 1, "{run2:#?}");
    assert_eq!(run2[0].action, "update");
    assert_eq!(run2[0].outcome, "applied");
    assert_eq!(run2[0].http_status, Some(200));
    assert_eq!(run2[0].source_id.as_deref(), Some("1002"));
    assert_eq!(run2[0].detail.as_deref(), Some("changed: title"));

    // And the state last pushed now has the new title: nothing more to do.
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

/// Five users synced, then Katherine (no groups) leaves the source.
async fn remove_katherine(extra: &str) -> (TestEnv, crate::common::Output) {
    let mut env = TestEnv::new().await;
    env.set_extra(extra);
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env.sb().reset_counts();
    let rows: Vec<String> = five_users()
        .into_iter()
        .filter(|r| !r.starts_with("1004,"))
        .collect();
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    (env, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_user_is_disabled_by_default() {
    let (env, out) = remove_katherine("").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "! user  katherine@example.com  (disable: no longer in the source; active true -> false)"
        ),
        "{out:?}"
    );
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    assert_eq!(c.writes, 1, "{c:?}");
    assert_eq!(c.total, 1, "{c:?}");
    let k = env
        .target_user("katherine@example.com")
        .expect("still there");
    assert_eq!(k["active"], false);
    assert_eq!(env.sb().users().len(), 5);
    let rows = env.outcomes_of_run(2);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0].action.as_str(), rows[0].outcome.as_str()),
        ("disable", "applied")
    );
    assert_eq!(rows[0].detail.as_deref(), Some("no longer in the source"));

    // Disabled once: the next run leaves it alone.
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_user_is_deleted_with_policy_delete() {
    let (env, out) = remove_katherine("[policy]\ndeprovision = \"delete\"\n").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("- user  katherine@example.com  (delete: no longer in the source)"),
        "{out:?}"
    );
    let c = env.sb().counts();
    assert_eq!(c.get(Route::DeleteUser), 1, "{c:?}");
    assert_eq!(c.writes, 1, "{c:?}");
    assert_eq!(c.total, 1, "{c:?}");
    assert!(env.target_user("katherine@example.com").is_none());
    assert_eq!(env.sb().users().len(), 4);
    let rows = env.outcomes_of_run(2);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].action, "delete");
    assert_eq!(rows[0].outcome, "applied");
    assert_eq!(rows[0].http_status, Some(204));
    assert_eq!(env.user_link_count(), 4);

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_member_sends_no_membership_patch() {
    let mut env = TestEnv::new().await;
    env.set_extra("[policy]\ndeprovision = \"delete\"\n");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env.sb().reset_counts();
    // Alan (Research) leaves.
    let rows: Vec<String> = five_users()
        .into_iter()
        .filter(|r| !r.starts_with("1003,"))
        .collect();
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::DeleteUser), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 0, "{c:?}");
    assert_eq!(c.total, 1, "{c:?}");
    assert_eq!(env.member_names("Research"), ["grace@example.com"]);

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_user_is_left_alone_with_policy_none() {
    let (env, out) = remove_katherine("[policy]\ndeprovision = \"none\"\n").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("No changes."), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
    let k = env
        .target_user("katherine@example.com")
        .expect("still there");
    assert_eq!(k["active"], true);
    assert!(env.outcomes_of_run(2).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_account_with_same_user_name_is_linked_not_duplicated() {
    let env = TestEnv::new().await;
    let seeded_id = env
        .sb()
        .insert_user(seeded(
            "ada@example.com",
            "ada@example.com",
            "Ada",
            "Lovelace",
        ))
        .unwrap();
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("~ user  ada@example.com  (adopt existing account matched by userName)"),
        "{out:?}"
    );
    let users = env.sb().users();
    assert_eq!(users.len(), 5, "{:?}", names(&users));
    let adas: Vec<_> = users
        .iter()
        .filter(|u| u["userName"] == "ada@example.com")
        .collect();
    assert_eq!(adas.len(), 1);
    assert_eq!(adas[0]["id"], seeded_id.as_str());
    assert_eq!(adas[0]["externalId"], "1001");
    assert_eq!(adas[0]["title"], "Engineer");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 4, "{c:?}");
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    let ada_rows = env.outcomes_where("source_id = '1001' AND resource = 'user'");
    assert_eq!(ada_rows.len(), 1, "{ada_rows:#?}");
    assert_eq!(ada_rows[0].action, "update");
    assert_eq!(ada_rows[0].outcome, "applied");
    assert_eq!(ada_rows[0].scim_id.as_deref(), Some(seeded_id.as_str()));
    assert!(
        ada_rows[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("existing account linked") && d.contains("externalId")),
        "{ada_rows:#?}"
    );
    assert_eq!(env.member_names("Engineering").len(), 3);

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_account_with_same_external_id_is_linked_and_renamed() {
    let env = TestEnv::new().await;
    let mut seed = seeded("ghopper", "grace@example.com", "Grace", "Hopper");
    seed["externalId"] = json!("1002");
    let seeded_id = env.sb().insert_user(seed).unwrap();
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("~ user  grace@example.com  (adopt existing account matched by externalId)"),
        "{out:?}"
    );
    let users = env.sb().users();
    assert_eq!(users.len(), 5, "{:?}", names(&users));
    let graces: Vec<_> = users.iter().filter(|u| u["externalId"] == "1002").collect();
    assert_eq!(graces.len(), 1);
    assert_eq!(graces[0]["id"], seeded_id.as_str());
    assert_eq!(graces[0]["userName"], "grace@example.com");
    assert!(env.target_user("ghopper").is_none());
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 4, "{c:?}");
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_create_looks_up_and_links_an_existing_account() {
    let env = TestEnv::new().await;
    let rows: Vec<String> = five_users()
        .into_iter()
        .filter(|r| !r.starts_with("1001,"))
        .collect();
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // Ada is created by hand in the target, then added to the source.
    let seeded_id = env
        .sb()
        .insert_user(seeded(
            "ada@example.com",
            "ada@example.com",
            "Ada",
            "Lovelace",
        ))
        .unwrap();
    env.sb().reset_counts();
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 0, "{c:?}");
    // Lookup by externalId (none), then by userName (found).
    assert_eq!(c.get(Route::ListUsers), 2, "{c:?}");
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 1, "{c:?}");
    assert_eq!(c.total, 4, "{c:?}");
    assert_eq!(env.sb().users().len(), 5);
    let ada = env.target_user("ada@example.com").unwrap();
    assert_eq!(ada["id"], seeded_id.as_str());
    assert_eq!(ada["externalId"], "1001");
    assert!(
        env.member_names("Engineering")
            .contains(&"ada@example.com".to_owned())
    );
    let row = &env.outcomes_where("source_id = '1001' AND resource = 'user'")[0];
    assert_eq!(row.outcome, "applied");
    assert!(
        row.detail
            .as_deref()
            .is_some_and(|d| d.contains("existing account matched before create")),
        "{row:?}"
    );
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_groups_provisions_only_members() {
    let mut env = TestEnv::new().await;
    env.set_extra("[scope]\ngroups = [\"Engineering\"]\n");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("note: 2 source users are not members of a scope group"),
        "{out:?}"
    );
    assert_eq!(
        names(&env.sb().users()),
        ["ada@example.com", "grace@example.com", "linus@example.com"]
    );
    assert_eq!(env.sb().counts().get(Route::CreateUser), 3);
    // Groups keep only provisioned members.
    assert_eq!(env.member_names("Research"), ["grace@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_email_domains_drops_other_domains() {
    let mut env = TestEnv::new().await;
    env.set_extra("[scope]\nemail_domains = [\"example.com\"]\n");
    let mut rows = five_users();
    rows.push(user(
        "1012",
        "Tim",
        "Berners-Lee",
        "tim@contractor.example.net",
        "Consultant",
        "Research",
    ));
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("note: 1 source users have an email outside the authorized domains"),
        "{out:?}"
    );
    assert_eq!(env.sb().users().len(), 5);
    assert!(env.target_user("tim@contractor.example.net").is_none());
    assert_eq!(env.sb().counts().get(Route::CreateUser), 5);
    assert!(env.outcomes_where("source_id = '1012'").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_name_transform_strips_the_domain() {
    let mut env = TestEnv::new().await;
    env.set_extra("[mapping.user_name_transform]\npattern = \"(.*)@.*\"\nreplacement = \"$1\"\n");
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        names(&env.sb().users()),
        ["ada", "alan", "grace", "katherine", "linus"]
    );
    let ada = env.target_user("ada").unwrap();
    assert_eq!(ada["emails"][0]["value"], "ada@example.com");
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_are_reported_and_the_rest_proceeds() {
    let env = TestEnv::new().await;
    env.write_users(&[
        user(
            "1001",
            "Ada",
            "Lovelace",
            "ada@example.com",
            "Engineer",
            "Engineering",
        ), // line 2
        user(
            "1010",
            "Ken",
            "Thompson",
            "ken@example",
            "Engineer",
            "Engineering",
        ), // line 3
        user("1011", "Frances", "", "frances@example.com", "Engineer", ""), // line 4
        user(
            "1003",
            "Alan",
            "Turing",
            "alan@example.com",
            "Scientist",
            "",
        ), // line 5
        user(
            "1003",
            "Alan",
            "Other",
            "alan2@example.com",
            "Scientist",
            "",
        ), // line 6
        user(
            "1004",
            "Katherine",
            "Johnson",
            "katherine@example.com",
            "Analyst",
            "",
        ), // line 7
    ]);
    let out = env.run(&["sync"]).await;
    // Invalid records make the run partial: exit 1 (exit.rs: "some actions failed or were held").
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("Invalid records (4)"), "{out:?}");
    for (line, what) in [
        (3, "ken@example"),
        (4, "name.familyName"),
        (5, "duplicate id `1003`"),
        (6, "duplicate id `1003`"),
    ] {
        let needle = format!("users.csv:line {line} ");
        let hit = out
            .stdout
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no plan line for line {line}: {out:?}"));
        assert!(hit.contains(what), "{hit}");
    }
    assert!(out.stderr.contains("--outcome invalid"), "{out:?}");
    assert_eq!(
        names(&env.sb().users()),
        ["ada@example.com", "katherine@example.com"]
    );
    assert_eq!(env.member_names("Engineering"), ["ada@example.com"]);

    let invalid = env.outcomes_where("outcome = 'invalid'");
    assert_eq!(invalid.len(), 4, "{invalid:#?}");
    let mut got: Vec<(String, String)> = invalid
        .iter()
        .map(|r| {
            assert_eq!(r.action, "validate");
            assert_eq!(r.resource, "user");
            let d = r.detail.clone().unwrap_or_default();
            let line = d
                .split("users.csv:")
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .unwrap_or_default()
                .to_owned();
            (r.source_id.clone().unwrap_or_default(), line)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("1003".to_owned(), "line 5".to_owned()),
            ("1003".to_owned(), "line 6".to_owned()),
            ("1010".to_owned(), "line 3".to_owned()),
            ("1011".to_owned(), "line 4".to_owned()),
        ]
    );
    let run = &env.runs()[0];
    assert_eq!(run.status, "partial");
    assert_eq!(run.invalid, 4);
    assert_eq!(run.failed, 0);
    assert_eq!(
        env.outcomes_where("resource = 'user' AND action = 'create' AND outcome = 'applied'")
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_taken_by_another_account_fails_plainly_and_does_not_loop() {
    let env = TestEnv::new().await;
    let mut other = seeded("someone.else", "ann@example.com", "Someone", "Else");
    other["externalId"] = json!("x-999");
    env.sb().insert_user(other).unwrap();
    env.write_users(&[
        user("2001", "Ann", "Smith", "ann@example.com", "Engineer", ""),
        user("2002", "Bob", "Jones", "bob@example.com", "Engineer", ""),
    ]);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 2, "{c:?}");
    // Full read, then externalId and userName lookups after the 409.
    assert_eq!(c.get(Route::ListUsers), 3, "{c:?}");
    let failed = env.outcomes_where("outcome = 'failed'");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let f = &failed[0];
    assert_eq!(f.source_id.as_deref(), Some("2001"));
    assert_eq!(f.action, "create");
    assert_eq!(f.http_status, Some(409));
    assert_eq!(f.attempts, 1);
    let detail = f.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("the conflict is on the email")
            && detail.contains("belongs to another Atlassian account"),
        "{detail}"
    );
    assert_eq!(
        names(&env.sb().users()),
        ["bob@example.com", "someone.else"]
    );
    let run = &env.runs()[0];
    assert_eq!(
        (run.status.as_str(), run.failed, run.applied),
        ("partial", 1, 1)
    );

    // The next run tries once more, fails the same way, and stops.
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 1, "{c:?}");
    assert_eq!(c.writes, 1, "{c:?}");
    // Lookup before the POST (2), and again after the 409 (2).
    assert_eq!(c.get(Route::ListUsers), 4, "{c:?}");
    let run2 = env.outcomes_of_run(2);
    assert_eq!(run2.len(), 1, "{run2:#?}");
    assert_eq!(run2[0].outcome, "failed");
    assert_eq!(run2[0].http_status, Some(409));
    assert_eq!(env.sb().users().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_corrects_drift_and_recreates_deleted_accounts() {
    let env = synced_five().await;
    let grace = env.target_user("grace@example.com").unwrap();
    let grace_id = grace["id"].as_str().unwrap().to_owned();
    assert!(env.sb().set_user_attr(&grace_id, "title", json!("Hacked")));

    // An incremental run does not see it.
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);

    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("~ title: \"Hacked\" -> \"Manager\"  (changed in the target)"),
        "{out:?}"
    );
    let c = env.sb().counts();
    assert_eq!(c.get(Route::ListUsers), 1, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    assert_eq!(c.writes, 1, "{c:?}");
    assert_eq!(
        env.target_user("grace@example.com").unwrap()["title"],
        "Manager"
    );
    let rows = env.outcomes_of_run(3);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].action, "update");
    assert!(
        rows[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("drift")),
        "{rows:#?}"
    );

    // An admin deletes Alan in the target.
    let alan = env.target_user("alan@example.com").unwrap();
    env.delete_in_target(alan["id"].as_str().unwrap()).await;
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 1, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 1, "{c:?}");
    assert_eq!(c.writes, 2, "{c:?}");
    let alan = env.target_user("alan@example.com").expect("re-created");
    assert_eq!(alan["externalId"], "1003");
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com", "grace@example.com"]
    );
    let rows = env.outcomes_of_run(4);
    let unlink = rows
        .iter()
        .find(|r| r.action == "unlink")
        .expect("an unlink row");
    assert_eq!(unlink.source_id.as_deref(), Some("1003"));
    assert!(unlink.detail.as_deref().unwrap().contains("drift"));
    let create = rows
        .iter()
        .find(|r| r.action == "create")
        .expect("a create row");
    assert_eq!(create.http_status, Some(201));
    assert_eq!(create.scim_id.as_deref(), alan["id"].as_str());

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_source_user_is_not_created() {
    let env = TestEnv::new().await;
    let mut rows = five_users();
    rows.push(inactive_user(
        "1008",
        "Edsger",
        "Dijkstra",
        "edsger@example.com",
        "Emeritus",
        "Research",
    ));
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().users().len(), 5);
    assert!(env.target_user("edsger@example.com").is_none());
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com", "grace@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_file_gives_group_ids_and_members() {
    let env = TestEnv::new().await;
    env.write_users(&[
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
            "",
        ),
    ]);
    env.write_groups(&[
        "g-eng,Engineering,1002",
        "g-res,Research,1003",
        "g-res,Research,1002",
        "g-empty,Empty,",
    ]);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateGroup), 3, "{c:?}");
    assert_eq!(c.get(Route::PatchGroup), 2, "{c:?}");
    assert_eq!(
        env.target_group("Engineering").unwrap()["externalId"],
        "g-eng"
    );
    assert_eq!(env.target_group("Empty").unwrap()["externalId"], "g-empty");
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
    assert_eq!(
        env.member_names("Research"),
        ["alan@example.com", "grace@example.com"]
    );
    assert!(env.member_names("Empty").is_empty());
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

/// The source re-keys a person: same userName, new id. The account follows the
/// new id; the old id's deprovisioning must not hit the account it now links.
async fn rekeyed(extra: &str, reconcile: bool) -> TestEnv {
    let mut env = TestEnv::new().await;
    env.set_extra(extra);
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let ada_id = env.target_user("ada@example.com").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut rows = five_users();
    rows[0] = rows[0].replacen("1001,", "9001,", 1);
    env.write_users(&rows);
    env.sb().reset_counts();
    let args: &[&str] = if reconcile {
        &["sync", "--reconcile"]
    } else {
        &["sync"]
    };
    let out = env.run(args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let users = env.sb().users();
    let adas: Vec<&serde_json::Value> = users
        .iter()
        .filter(|u| u["userName"] == "ada@example.com")
        .collect();
    assert_eq!(adas.len(), 1, "{users:#?}");
    assert_eq!(adas[0]["id"], ada_id.as_str(), "the account was replaced");
    assert_eq!(adas[0]["externalId"], "9001");
    assert_eq!(
        adas[0]["active"], true,
        "the re-keyed account was deprovisioned"
    );
    // Incremental: found by the lookup before create. Full read: the account is
    // still linked to the old id, so the POST answers 409 and the lookup links it.
    assert_eq!(
        env.sb().counts().get(Route::CreateUser),
        u64::from(reconcile)
    );
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com", "linus@example.com"],
        "the re-keyed account was dropped from its group"
    );
    let rows = env.outcomes_where("run_id = 2 AND source_id = '1001'");
    let deprovisions = !extra.contains("\"none\"");
    assert_eq!(rows.len(), usize::from(deprovisions), "{rows:#?}");
    assert!(
        rows.iter().all(|r| r.action == "unlink"
            && r.outcome == "applied"
            && r.detail.as_deref().unwrap().contains("`9001`")),
        "{rows:#?}"
    );
    assert_eq!(env.user_link_count(), 5);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_user_keeps_an_active_account() {
    let env = rekeyed("", false).await;
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_user_keeps_an_active_account_on_reconcile() {
    let env = rekeyed("", true).await;
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_user_is_not_deleted_with_policy_delete() {
    let env = rekeyed("[policy]\ndeprovision = \"delete\"\n", false).await;
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_user_stays_in_its_groups_with_policy_none() {
    let env = rekeyed("[policy]\ndeprovision = \"none\"\n", false).await;
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0, "{out:?}");
}

/// The groups file re-keys a group: same name, new id. The target group
/// follows the new id; deleting the old id's group would delete it.
async fn rekeyed_group(reconcile: bool) {
    let env = TestEnv::new().await;
    env.write_users(&[
        user("1001", "Ada", "Lovelace", "ada@example.com", "Engineer", ""),
        user(
            "1002",
            "Grace",
            "Hopper",
            "grace@example.com",
            "Manager",
            "",
        ),
    ]);
    env.write_groups(&["g-eng,Engineering,1001", "g-eng,Engineering,1002"]);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let gid = env.target_group("Engineering").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.write_groups(&["g-eng2,Engineering,1001", "g-eng2,Engineering,1002"]);
    env.sb().reset_counts();
    let args: &[&str] = if reconcile {
        &["sync", "--reconcile"]
    } else {
        &["sync"]
    };
    let out = env.run(args).await;
    assert_eq!(out.code, 0, "{out:?}");
    let g = env
        .target_group("Engineering")
        .expect("the re-keyed group was deleted");
    assert_eq!(g["id"], gid.as_str());
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
    assert_eq!(env.sb().counts().get(Route::DeleteGroup), 0);

    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(env.target_group("Engineering").is_some());
    // At most the externalId is brought in line with the new id.
    assert!(env.sb().counts().writes <= 1, "{out:?}");
    env.sb().reset_counts();
    let out = env.run(&["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().writes, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_group_is_not_deleted() {
    rekeyed_group(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekeyed_group_is_not_deleted_on_reconcile() {
    rekeyed_group(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_source_syncs_like_a_csv_one() {
    let env = TestEnv::new().await;
    env.write(
        "users.json",
        r#"{
  "users": [
    {"id": 1001, "user_name": "ada@example.com", "given_name": "Ada", "family_name": "Lovelace",
     "email": "ada@example.com", "active": true, "title": "Engineer", "groups": ["Engineering"]},
    {"id": "1002", "user_name": "grace@example.com", "given_name": "Grace", "family_name": "Hopper",
     "email": "grace@example.com", "title": "Manager"},
    {"id": "1003", "user_name": "bad@example", "given_name": "Bad", "family_name": "Email",
     "email": "bad@example"}
  ],
  "groups": [{"id": "g-eng", "name": "Engineering", "members": ["1002"]}]
}"#,
    );
    let text = env.config_text().replace("users.csv", "users.json");
    env.write("scimsync.toml", &text);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}"); // one invalid record
    assert!(out.stdout.contains("users.json:users[2]"), "{out:?}");
    assert_eq!(
        names(&env.sb().users()),
        ["ada@example.com", "grace@example.com"]
    );
    assert_eq!(
        env.target_user("ada@example.com").unwrap()["externalId"],
        "1001"
    );
    assert_eq!(
        env.target_group("Engineering").unwrap()["externalId"],
        "g-eng"
    );
    assert_eq!(
        env.member_names("Engineering"),
        ["ada@example.com", "grace@example.com"]
    );
}
