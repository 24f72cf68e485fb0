//! `report`: filters and formats over a store with several runs and two targets.

use scimsync::sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

use crate::common::{TestEnv, five_users, user};

/// Run 1 (app `test`): five users created, Ann's create fails (409 on her
/// email: it belongs to another account). Run 2 (app `test`): Grace's title
/// changes and Ann fails again.
pub(crate) async fn two_runs() -> TestEnv {
    let env = TestEnv::new().await;
    env.sb()
        .insert_user(json!({
            "userName": "someone.else",
            "externalId": "x-999",
            "emails": [{"value": "ann@example.com", "type": "work", "primary": true}],
        }))
        .unwrap();
    let mut rows = five_users();
    rows.push(user(
        "2001",
        "Ann",
        "Smith",
        "ann@example.com",
        "Engineer",
        "",
    ));
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    rows[1] = user(
        "1002",
        "Grace",
        "Hopper",
        "grace@example.com",
        "Admiral",
        "Engineering;Research",
    );
    env.write_users(&rows);
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    env
}

/// [`two_runs`], then run 3 (app `other`, another sandbox, same store): two
/// users created.
async fn history() -> (TestEnv, scimsync::sandbox::RunningSandbox) {
    let env = two_runs().await;
    let other = Sandbox::start(SandboxConfig::default()).await.unwrap();
    env.write(
        "other-users.csv",
        &format!(
            "{}\n{}\n{}\n",
            crate::common::USERS_HEADER,
            user(
                "3001",
                "Olga",
                "Ivanova",
                "olga@example.org",
                "Engineer",
                ""
            ),
            user("3002", "Pete", "Brown", "pete@example.org", "Engineer", ""),
        ),
    );
    let text = env
        .config_text_for("other", &other.base_url())
        .replace("users.csv", "other-users.csv");
    env.write("other.toml", &text);
    let cfg = env.path("other.toml").display().to_string();
    let out = env.run_raw(&["-c", &cfg, "sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    (env, other)
}

async fn json_rows(env: &TestEnv, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["report"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--format", "json"]);
    let out = env.run(&full).await;
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    v.as_array().expect("a JSON array").clone()
}

fn field<'a>(rows: &'a [Value], name: &str) -> Vec<&'a str> {
    rows.iter()
        .map(|r| r[name].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_filters_and_formats() {
    let (env, _other) = history().await;
    let total: i64 = env
        .store()
        .query_row("SELECT COUNT(*) FROM outcomes", [], |r| r.get(0))
        .unwrap();

    // Everything, as JSON.
    let all = json_rows(&env, &[]).await;
    assert_eq!(all.len() as i64, total);

    // A person by email and by source id: every row about Grace.
    let by_email = json_rows(&env, &["--user", "grace@example.com"]).await;
    let by_id = json_rows(&env, &["--user", "1002"]).await;
    let by_email_upper = json_rows(&env, &["--user", "GRACE@example.com"]).await;
    assert_eq!(by_email, by_id);
    assert_eq!(by_email, by_email_upper);
    let mut actions: Vec<(i64, &str, &str)> = by_email
        .iter()
        .map(|r| {
            assert_eq!(r["source_id"], "1002", "{r}");
            (
                r["run_id"].as_i64().unwrap(),
                r["action"].as_str().unwrap(),
                r["group_name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            (1, "add_member", "Engineering"),
            (1, "add_member", "Research"),
            (1, "create", ""),
            (2, "update", "")
        ]
    );

    // By target.
    let test_rows = json_rows(&env, &["--app", "test"]).await;
    let other_rows = json_rows(&env, &["--app", "other"]).await;
    assert!(test_rows.iter().all(|r| r["app"] == "test"));
    assert_eq!(field(&other_rows, "app"), ["other", "other"]);
    let mut other_ids = field(&other_rows, "source_id");
    other_ids.sort();
    assert_eq!(other_ids, ["3001", "3002"]);
    assert_eq!(test_rows.len() + other_rows.len(), all.len());
    assert!(json_rows(&env, &["--app", "nope"]).await.is_empty());

    // By time.
    assert_eq!(json_rows(&env, &["--since", "1h"]).await.len(), all.len());
    assert!(json_rows(&env, &["--until", "1h"]).await.is_empty());
    assert!(
        json_rows(&env, &["--since", "2999-01-01T00:00:00Z"])
            .await
            .is_empty()
    );
    assert_eq!(
        json_rows(&env, &["--until", "2999-01-01T00:00:00Z"])
            .await
            .len(),
        all.len()
    );

    // By outcome: Ann's create, once per run of `test`.
    let failed = json_rows(&env, &["--outcome", "failed"]).await;
    assert_eq!(field(&failed, "source_id"), ["2001", "2001"]);
    assert!(failed.iter().all(|r| r["http_status"] == 409));
    let failed_run1 = json_rows(&env, &["--outcome", "failed", "--run", "1"]).await;
    assert_eq!(failed_run1.len(), 1);

    // By run.
    let run2 = json_rows(&env, &["--run", "2"]).await;
    let mut run2_actions: Vec<(&str, &str)> = run2
        .iter()
        .map(|r| {
            (
                r["source_id"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
            )
        })
        .collect();
    run2_actions.sort();
    assert_eq!(run2_actions, [("1002", "update"), ("2001", "create")]);
    let run3 = json_rows(&env, &["--run", "3"]).await;
    assert_eq!(run3, other_rows);

    // CSV: a header and one line per row.
    let out = env
        .run(&["report", "--app", "test", "--format", "csv"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut rdr = csv::Reader::from_reader(out.stdout.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, scimsync::store::report::COLUMNS);
    let records: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), test_rows.len());
    let outcome_col = header.iter().position(|h| h == "outcome").unwrap();
    assert_eq!(
        records
            .iter()
            .filter(|r| &r[outcome_col] == "failed")
            .count(),
        2
    );

    // The table: one line per row and a count.
    let out = env.run(&["report", "--user", "grace@example.com"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("4 rows"), "{out:?}");

    // Runs, as JSON.
    let out = env.run(&["report", "runs", "--format", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let runs: Value = serde_json::from_str(&out.stdout).unwrap();
    let statuses: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["app"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("other", "succeeded"),
            ("test", "partial"),
            ("test", "partial")
        ]
    );

    // A bad filter is refused.
    let out = env.run(&["report", "--outcome", "exploded"]).await;
    assert_eq!(out.code, 2, "{out:?}");
}
