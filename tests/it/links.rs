//! `scimsync links`: list, search, show, unlink, relink — one account repaired
//! without touching the rest.

use scimsync::sandbox::Route;
use serde_json::{Value, json};

use crate::common::{TestEnv, five_users};

async fn synced() -> TestEnv {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    env
}

fn json_of(out: &crate::common::Output) -> Value {
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn links_lists_searches_and_shows() {
    let env = synced().await;
    let all = json_of(&env.run(&["links", "--format", "json"]).await);
    let all = all.as_array().unwrap();
    let users = all.iter().filter(|l| l["kind"] == "user").count();
    let groups = all.iter().filter(|l| l["kind"] == "group").count();
    assert_eq!((users, groups), (5, 2), "{all:#?}");

    let grace = json_of(
        &env.run(&["links", "--search", "GRACE", "--format", "json"])
            .await,
    );
    let grace = grace.as_array().unwrap();
    assert_eq!(grace.len(), 1, "{grace:#?}");
    assert_eq!(grace[0]["source_id"], "1002");
    assert_eq!(grace[0]["groups"], json!(["Engineering", "Research"]));
    let scim_id = grace[0]["scim_id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.target_user("grace@example.com").unwrap()["id"],
        scim_id.as_str()
    );

    let eng = json_of(
        &env.run(&["links", "--groups", "--search", "eng", "--format", "json"])
            .await,
    );
    assert_eq!(eng.as_array().unwrap().len(), 1);
    assert_eq!(eng[0]["members"], 3);

    // show by target id, by userName, by source id: the same link.
    for id in [scim_id.as_str(), "grace@example.com", "1002"] {
        let out = env.run(&["links", "show", id]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.starts_with("user grace@example.com"), "{out:?}");
        assert!(
            out.stdout.contains(&format!("target id   {scim_id}")),
            "{out:?}"
        );
        assert!(out.stdout.contains("title = \"Manager\""), "{out:?}");
    }
    let out = env.run(&["links", "show", "nobody"]).await;
    assert_eq!(out.code, 2, "{out:?}");

    let table = env.run(&["links"]).await;
    assert!(
        table.stdout.contains("5 user links, 2 group links"),
        "{table:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unlink_forgets_one_link_and_the_next_sync_matches_it_again_without_a_create() {
    let env = synced().await;
    env.sb().reset_counts();
    let out = env.run(&["links", "unlink", "1002"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("Unlinked user 1002 from "),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().total, 0, "unlink sends nothing");
    assert_eq!(env.user_link_count(), 4);
    let rest = json_of(&env.run(&["links", "--format", "json"]).await);
    assert!(
        rest.as_array()
            .unwrap()
            .iter()
            .all(|l| l["source_id"] != "1002")
    );

    // The change is in the report.
    let hist = json_of(
        &env.run(&["report", "user", "1002", "--format", "json"])
            .await,
    );
    assert_eq!(hist[0]["action"], "unlink", "{hist:#}");

    let out = env.run(&["links", "unlink", "1002"]).await;
    assert_eq!(out.code, 2, "a second unlink: no such link: {out:?}");

    // Next sync: a full read, Grace matched by externalId, no POST, no write.
    let plan = env.run(&["plan"]).await;
    assert!(plan.stdout.contains("read in full"), "{plan:?}");
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::CreateUser), 0, "{c:?}");
    assert_eq!(c.writes, 0, "{c:?}");
    assert_eq!(env.user_link_count(), 5);
    env.assert_no_duplicates("after unlink and sync");
}

#[tokio::test(flavor = "multi_thread")]
async fn relink_points_one_source_id_at_another_account_and_the_next_sync_fixes_it() {
    let env = synced().await;
    // An admin deleted Katherine's account by hand and made a new one with
    // another userName and no externalId; a plain sync would create a third.
    let old = env.target_user("katherine@example.com").unwrap();
    env.delete_in_target(old["id"].as_str().unwrap()).await;
    let new_id = env
        .sb()
        .insert_user(json!({
            "userName": "kjohnson@example.com",
            "name": {"givenName": "Kate", "familyName": "Johnson"},
            "emails": [{"value": "kjohnson@example.com", "type": "work", "primary": true}],
            "active": true,
        }))
        .unwrap();

    // Unknown id: refused, nothing changed.
    let out = env.run(&["links", "relink", "1004", "no-such-id"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("has no user with id `no-such-id`"),
        "{out:?}"
    );
    // An id linked to another source id: refused.
    let ada = env.target_user("ada@example.com").unwrap();
    let out = env
        .run(&["links", "relink", "1004", ada["id"].as_str().unwrap()])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("linked to source id `1001`"), "{out:?}");

    env.sb().reset_counts();
    let out = env.run(&["links", "relink", "1004", &new_id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "Linked user 1004 to {new_id} (kjohnson@example.com)"
        )),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().writes, 0, "relink only reads");
    let shown = env.run(&["links", "show", "1004"]).await;
    assert!(
        shown.stdout.contains(&format!("target id   {new_id}")),
        "{shown:?}"
    );

    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let c = env.sb().counts();
    assert_eq!(
        c.get(Route::CreateUser),
        0,
        "the relinked account is updated, not replaced: {c:?}"
    );
    assert_eq!(c.get(Route::PatchUser), 1, "{c:?}");
    let now = env.sb().user(&new_id).unwrap();
    assert_eq!(now["userName"], "katherine@example.com");
    assert_eq!(now["externalId"], "1004");
    assert_eq!(now["name"]["givenName"], "Katherine");
    env.assert_state(&five_users(), &[], "after relink and sync");
}

#[tokio::test(flavor = "multi_thread")]
async fn link_changes_wait_for_a_running_sync() {
    let env = synced().await;
    let lock = scimsync::store::lock::RunLock::acquire(&env.store_path()).unwrap();
    let out = env.run(&["links", "unlink", "1001"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("another scimsync run"), "{out:?}");
    assert_eq!(env.user_link_count(), 5);
    // Reading is not blocked.
    let out = env.run(&["links", "--format", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    drop(lock);
    let out = env.run(&["links", "unlink", "1001"]).await;
    assert_eq!(out.code, 0, "{out:?}");
}
