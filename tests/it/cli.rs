//! `check`, and configuration errors that stop before any request.

use scimsync::sandbox::Route;

use crate::common::{FAST, TestEnv, five_users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_the_sandbox_is_ok() {
    let env = TestEnv::new().await;
    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Connection OK."), "{out:?}");
    assert!(
        out.stdout.contains("ok    GET /ServiceProviderConfig"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("ok    GET /Users?count=1 (0 users in the target)"),
        "{out:?}"
    );
    let c = env.sb().counts();
    assert_eq!(c.get(Route::ServiceProviderConfig), 1, "{c:?}");
    assert_eq!(c.get(Route::ListUsers), 1, "{c:?}");
    assert_eq!(c.get(Route::ListGroups), 1, "{c:?}");
    assert_eq!(c.writes, 0);
    assert!(!env.store_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_directory_id_is_explained() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let wrong = env.running.base_url().replace(
        scimsync::sandbox::DEFAULT_DIRECTORY_ID,
        "99999999-2222-3333-4444-555555555555",
    );
    env.write("scimsync.toml", &env.config_text_for("test", &wrong));

    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("404"), "{out:?}");
    assert!(out.stdout.contains("directory id"), "{out:?}");
    assert!(out.stdout.contains("Connection check failed."), "{out:?}");

    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("directory id"), "{out:?}");
    assert_eq!(env.sb().counts().writes, 0);
    assert!(env.sb().users().is_empty());
}

/// Write `config`, run `sync` and `plan`: both exit 2 before any request.
async fn refused(env: &TestEnv, config: &str, expect: &[&str]) {
    env.write("scimsync.toml", config);
    for cmd in ["sync", "plan", "check"] {
        let out = env.run(&[cmd]).await;
        assert_eq!(out.code, 2, "{cmd}: {out:?}");
        for e in expect {
            assert!(out.stderr.contains(e), "{cmd}: expected {e:?} in {out:?}");
        }
        assert_eq!(env.sb().counts().total, 0, "{cmd} sent a request");
    }
    assert!(!env.store_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_2_before_any_request() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    let base = env.running.base_url();
    let good = env.config_text();

    // Unknown key.
    let text = good.replace("[target]\n", "[target]\nbase_ulr = \"x\"\n");
    refused(&env, &text, &["base_ulr", "line 5"]).await;

    // Plain http to a remote host.
    let text = good.replace(&base, "http://scim.example.com/scim/directory/abc");
    refused(&env, &text, &["target.base_url", "loopback"]).await;

    // No key source.
    let text = good.replace("api_key_file = \"key\"\n", "");
    refused(&env, &text, &["no API key source"]).await;

    // A bad regex.
    let text = format!(
        "{good}\n[mapping.user_name_transform]\npattern = \"(unclosed\"\nreplacement = \"$1\"\n"
    );
    refused(
        &env,
        &text,
        &["mapping.user_name_transform.pattern", "invalid regex"],
    )
    .await;

    // A bad duration.
    let text = format!("{good}\n[policy]\nreconcile_interval = \"soon\"\n");
    refused(&env, &text, &["policy.reconcile_interval"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_key_file_or_source_exits_2_before_any_request() {
    let mut env = TestEnv::new().await;
    env.write_users(&five_users());
    std::fs::remove_file(env.path("key")).unwrap();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("cannot read the API key file"),
        "{out:?}"
    );
    assert_eq!(env.sb().counts().total, 0);

    env.write_key(&env.sb().config().api_key.clone());
    env.configure(FAST, "");
    std::fs::remove_file(env.path("users.csv")).unwrap();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("users.csv"), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}
