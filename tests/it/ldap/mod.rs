//! The LDAP source against a real OpenLDAP slapd (see `slapd.rs`): first sync,
//! the no-change rerun, AD conventions, nested groups, paging past the
//! server's size limit, unusable directories (exit 2 before any SCIM
//! request), the guard against a search that suddenly returns nothing, and
//! certificate verification for LDAPS and StartTLS.

mod slapd;

use scimsync::sandbox::Route;
use serde_json::Value;

use crate::common::{FAST, Output, TestEnv};
use slapd::{BIND_DN, BIND_PASSWORD, SIZE_LIMIT, SUFFIX, Slapd};

const PW_VAR: &str = "SCIMSYNC_TEST_LDAP_PASSWORD";

/// The `[source.ldap]` keys for the fixture read with Active Directory
/// conventions (the test schema carries AD's attributes; slapd has no
/// `objectCategory`, so the filters are set).
fn ad_keys(url: &str) -> String {
    format!(
        "flavor = \"active_directory\"
user_base = \"ou=people,{SUFFIX}\"
user_filter = \"(objectClass=adUser)\"
group_base = \"ou=groups,{SUFFIX}\"
group_filter = \"(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))\"
member_attributes = [\"member\", \"uniqueMember\"]
url = \"{url}\"
"
    )
}

/// Write a config with an LDAP source and the sandbox as target.
fn write_ldap_config(env: &TestEnv, ldap_keys: &str, extra: &str) {
    let text = format!(
        "[source]\ntype = \"ldap\"\n\n[source.ldap]\nbind_dn = \"{BIND_DN}\"\nbind_password_env = \"{PW_VAR}\"\n{ldap_keys}\n[target]\nname = \"test\"\nbase_url = \"{}\"\napi_key_file = \"key\"\n{FAST}\n{extra}\n",
        env.running.base_url()
    );
    env.write("scimsync.toml", &text);
}

async fn run(env: &TestEnv, args: &[&str]) -> Output {
    env.run_env(args, &[(PW_VAR, BIND_PASSWORD)]).await
}

fn user<'a>(users: &'a [Value], name: &str) -> &'a Value {
    users
        .iter()
        .find(|u| u["userName"] == name)
        .unwrap_or_else(|| panic!("no account {name}"))
}

fn no_secret(out: &Output) {
    assert!(
        !out.stdout.contains(BIND_PASSWORD) && !out.stderr.contains(BIND_PASSWORD),
        "the bind password leaked: {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_directory_conventions_first_sync_then_no_requests() {
    let Some(slapd) = Slapd::start(&slapd::fixture_ldif()) else {
        return;
    };
    let env = TestEnv::new().await;
    write_ldap_config(&env, &ad_keys(&slapd.url), "");

    let out = run(&env, &["sync"]).await;
    no_secret(&out);
    // One entry has an invalid mail: it is a reject naming its DN, the run
    // goes on (and exits 1 because of it).
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("uid=user066,ou=people,dc=example,dc=org")
            && out.stdout.contains("broken-at-example"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Source: ldap://127.0.0.1:"), "{out:?}");
    let users = env.sb().users();
    // 280 entries: one rejected, two disabled in AD (not created while disabled).
    assert_eq!(users.len(), 277, "{out:?}");
    env.assert_no_duplicates("first LDAP sync");

    // objectGUID → canonical GUID string as externalId (the expected value
    // is Python's uuid.UUID(bytes_le=...) of the fixture's bytes).
    let zoe = user(&users, "user007@example.com");
    assert_eq!(zoe["externalId"], "a0070011-3e31-584b-6572-7f8c99a6b3c0");
    // Non-ASCII names arrive intact.
    assert_eq!(zoe["name"]["givenName"], "Zoë");
    assert_eq!(zoe["name"]["familyName"], "Ångström");
    assert_eq!(
        user(&users, "user099@example.com")["displayName"],
        "太郎 山田"
    );
    // Multi-valued mail: the first value.
    let multi = user(&users, "user021@example.com");
    assert_eq!(multi["emails"][0]["value"], "user021.primary@example.com");
    // userAccountControl bit 0x2: 514 and 66050 are disabled accounts, which
    // are not created; 512 is an active one.
    assert!(users.iter().all(|u| u["userName"] != "user042@example.com"));
    assert!(users.iter().all(|u| u["userName"] != "user043@example.com"));
    assert_eq!(user(&users, "user044@example.com")["active"], true);

    // Groups: member DNs, uniqueMember, memberOf, nesting (flattened),
    // a cycle, and a member DN written in another case with spaces.
    let names = |v: &[u32]| -> Vec<String> {
        let mut n: Vec<String> = v
            .iter()
            .map(|i| format!("user{i:03}@example.com"))
            .collect();
        n.sort();
        n
    };
    let count = |g: &str| env.member_names(g).len();
    // engineering lists user001..100; user066 is rejected, 042/043 disabled.
    let eng: Vec<u32> = (1..=100).filter(|i| ![42, 43, 66].contains(i)).collect();
    assert_eq!(env.member_names("engineering"), names(&eng));
    assert_eq!(count("research"), 50);
    let mut all: Vec<u32> = eng.clone();
    all.extend(101..=150);
    all.push(200);
    assert_eq!(
        env.member_names("all-staff"),
        names(&all),
        "nested groups flattened"
    );
    assert_eq!(
        env.member_names("platform"),
        names(&(1..=10).collect::<Vec<_>>())
    );
    assert_eq!(
        env.member_names("sales"),
        names(&(151..=161).collect::<Vec<_>>()),
        "memberOf on users plus the group's own member"
    );
    assert_eq!(env.member_names("loop-a"), names(&[249, 250]));
    assert_eq!(env.member_names("loop-b"), names(&[249, 250]));
    assert_eq!(env.member_names("mixed-case"), names(&[5]));
    assert_eq!(env.sb().groups().len(), 8);

    // The rerun sends nothing.
    env.sb().reset_counts();
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 1, "still one invalid record: {out:?}");
    assert!(out.stdout.contains("No changes."), "{out:?}");
    assert_eq!(env.sb().counts().total, 0, "{:?}", env.sb().counts());

    // The directory changes: user044 is disabled in AD (514), user045's title
    // changes. The next sync deactivates one account and updates the other.
    slapd.modify(&format!(
        "dn: uid=user044,ou=people,{SUFFIX}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n\n\
         dn: uid=user045,ou=people,{SUFFIX}\nchangetype: modify\nreplace: title\ntitle: Staff Engineer\n"
    ));
    env.sb().reset_counts();
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let users = env.sb().users();
    assert_eq!(
        user(&users, "user044@example.com")["active"],
        false,
        "{out:?}"
    );
    assert_eq!(
        user(&users, "user045@example.com")["title"],
        "Staff Engineer"
    );
    assert_eq!(user(&users, "user046@example.com")["active"], true);
    assert_eq!(env.sb().counts().get(Route::CreateUser), 0);

    // The bind password is nowhere in the store.
    for f in ["scimsync.db", "scimsync.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(f)) {
            let needle = BIND_PASSWORD.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the bind password is in {f}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openldap_defaults_use_entry_uuid_and_uid() {
    let Some(slapd) = Slapd::start(&slapd::fixture_ldif()) else {
        return;
    };
    let env = TestEnv::new().await;
    let keys = format!(
        "url = \"{}\"\nuser_base = \"ou=people,{SUFFIX}\"\ngroup_base = \"ou=groups,{SUFFIX}\"\n",
        slapd.url
    );
    write_ldap_config(&env, &keys, "");
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 1, "one invalid record: {out:?}");
    let users = env.sb().users();
    assert_eq!(users.len(), 279, "one rejected, nobody disabled");
    let ann = user(&users, "user001");
    let ext = ann["externalId"].as_str().unwrap();
    assert_eq!(ext.len(), 36, "an entryUUID: {ext}");
    assert_eq!(ext.matches('-').count(), 4, "an entryUUID: {ext}");
    // Without an `active` mapping, everyone is active.
    assert_eq!(user(&users, "user042")["active"], true);
    assert_eq!(env.member_names("platform").len(), 10, "uniqueMember");
    // memberOf (here from the test schema; the memberof overlay in real
    // OpenLDAP) is read by default; `member_of_attribute = ""` ignores it.
    assert_eq!(env.member_names("sales").len(), 11);
    write_ldap_config(&env, &format!("{keys}member_of_attribute = \"\"\n"), "");
    let out = run(&env, &["plan"]).await;
    assert!(out.stdout.contains("- member user151"), "{out:?}");
    assert!(
        out.stdout.contains("10 membership changes (+0 -10)"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_loads_more_entries_than_the_server_size_limit() {
    let n = 3000;
    assert!(n > SIZE_LIMIT);
    let Some(slapd) = Slapd::start(&slapd::bulk_ldif(n)) else {
        return;
    };
    let env = TestEnv::new().await;
    let keys = format!(
        "url = \"{}\"\nuser_base = \"ou=bulk,{SUFFIX}\"\npage_size = 400\n",
        slapd.url
    );
    write_ldap_config(&env, &keys, "");
    let out = run(&env, &["plan"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("Plan: {n} to create")),
        "{}",
        out.stdout.lines().last().unwrap_or_default()
    );

    // The same search without paging hits the limit: a clear error, exit 2,
    // never a directory of SIZE_LIMIT people.
    let keys = format!(
        "url = \"{}\"\nuser_base = \"ou=bulk,{SUFFIX}\"\npage_size = 0\n",
        slapd.url
    );
    write_ldap_config(&env, &keys, "");
    env.sb().reset_counts();
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("sizeLimitExceeded"), "{out:?}");
    assert!(out.stderr.contains("page_size"), "{out:?}");
    assert_eq!(env.sb().counts().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_directory_exits_2_before_any_scim_request() {
    let Some(mut slapd) = Slapd::start(&slapd::fixture_ldif()) else {
        return;
    };
    let env = TestEnv::new().await;
    let url = slapd.url.clone();

    // Wrong password.
    write_ldap_config(&env, &ad_keys(&url), "");
    let out = env
        .run_env(&["sync"], &[(PW_VAR, "not-the-password")])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("invalidCredentials"), "{out:?}");
    assert!(!out.stderr.contains("not-the-password"), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");

    // Password variable not set.
    let out = env.run_env(&["sync"], &[]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(PW_VAR), "{out:?}");

    // A base DN that does not exist.
    let keys = ad_keys(&url).replace("ou=people,", "ou=nobody,");
    write_ldap_config(&env, &keys, "");
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("noSuchObject"), "{out:?}");
    assert!(out.stderr.contains("ou=nobody"), "{out:?}");

    // The server is down.
    slapd.stop();
    write_ldap_config(&env, &ad_keys(&url), "");
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("connection refused"), "{out:?}");
    no_secret(&out);

    assert_eq!(env.sb().counts().total, 0, "{:?}", env.sb().counts());
    assert!(env.sb().users().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ldap_search_that_suddenly_returns_nothing_is_held_by_the_guard() {
    let Some(slapd) = Slapd::start(&slapd::fixture_ldif()) else {
        return;
    };
    let env = TestEnv::new().await;
    write_ldap_config(&env, &ad_keys(&slapd.url), "");
    assert_eq!(run(&env, &["sync"]).await.code, 1);
    let active = |env: &TestEnv| {
        env.sb()
            .users()
            .iter()
            .filter(|u| u["active"] == true)
            .count()
    };
    let before = active(&env);
    assert_eq!(before, 277, "280 entries, one rejected, two disabled in AD");

    // Someone moved the people to another OU: the search succeeds, empty.
    let keys = ad_keys(&slapd.url).replace("ou=people,", "ou=empty,");
    write_ldap_config(&env, &keys, "");
    env.sb().reset_counts();
    let out = run(&env, &["sync"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--allow-deprovision"), "{out:?}");
    let c = env.sb().counts();
    assert_eq!(c.get(Route::PatchUser), 0, "{c:?}");
    assert_eq!(c.get(Route::DeleteUser), 0, "{c:?}");
    assert_eq!(active(&env), before, "nobody was disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_verify_the_server_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let (tls, other_ca) = slapd::make_tls(pki.path());
    let Some(slapd) = Slapd::start_with(&slapd::fixture_ldif(), Some(&tls)) else {
        return;
    };
    let ldaps = slapd.ldaps_url.clone().expect("an ldaps port");
    let env = TestEnv::new().await;
    let plan = |keys: String| {
        let env = &env;
        async move {
            write_ldap_config(env, &keys, "");
            run(env, &["plan"]).await
        }
    };
    let ca = tls.ca.display().to_string();
    let other = other_ca.display().to_string();

    // LDAPS with the right CA.
    let out = plan(format!("{}ca_file = \"{ca}\"\n", ad_keys(&ldaps))).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("285 to create"), "{out:?}");

    // LDAPS with the wrong CA: refused.
    let out = plan(format!("{}ca_file = \"{other}\"\n", ad_keys(&ldaps))).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TLS failed"), "{out:?}");
    assert!(out.stderr.contains("ca_file"), "{out:?}");

    // LDAPS with the system roots (which do not hold the test CA): refused.
    let out = plan(ad_keys(&ldaps)).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TLS failed"), "{out:?}");

    // The explicit, dangerous opt-out.
    let out = plan(format!(
        "{}tls_insecure_skip_verify = true\n",
        ad_keys(&ldaps)
    ))
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("285 to create"), "{out:?}");

    // StartTLS on the plain port: verified the same way.
    let out = plan(format!(
        "{}starttls = true\nca_file = \"{ca}\"\n",
        ad_keys(&slapd.url)
    ))
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("285 to create"), "{out:?}");
    let out = plan(format!(
        "{}starttls = true\nca_file = \"{other}\"\n",
        ad_keys(&slapd.url)
    ))
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TLS failed"), "{out:?}");
    assert_eq!(env.sb().counts().get(Route::CreateUser), 0);
}
