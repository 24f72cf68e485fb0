//! Shared helpers: a temporary directory with a config, CSV files and an API
//! key, a running sandbox, the binary run as a child process, and the store.

#![allow(dead_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::{Connection, OpenFlags};
use scimsync::sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use serde_json::Value;
use tempfile::TempDir;

/// Header of the users CSV written by [`TestEnv::write_users`].
pub const USERS_HEADER: &str =
    "id,user_name,given_name,family_name,display_name,email,active,title,groups";

/// One users.csv row (userName = email, display name from the names, active).
pub fn user(id: &str, given: &str, family: &str, email: &str, title: &str, groups: &str) -> String {
    format!("{id},{email},{given},{family},,{email},true,{title},{groups}")
}

/// One users.csv row marked inactive.
pub fn inactive_user(
    id: &str,
    given: &str,
    family: &str,
    email: &str,
    title: &str,
    groups: &str,
) -> String {
    format!("{id},{email},{given},{family},,{email},false,{title},{groups}")
}

/// The five people most tests start from: two groups, four memberships.
pub fn five_users() -> Vec<String> {
    vec![
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
            "Engineering;Research",
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
            "",
        ),
        user(
            "1005",
            "Linus",
            "Torvalds",
            "linus@example.com",
            "Engineer",
            "Engineering",
        ),
    ]
}

/// What a run of the binary produced.
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// One row of the `outcomes` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub id: i64,
    pub run_id: i64,
    pub app: String,
    pub resource: String,
    pub action: String,
    pub source_id: Option<String>,
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub group_name: Option<String>,
    pub scim_id: Option<String>,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub scim_type: Option<String>,
    pub detail: Option<String>,
    pub attempts: i64,
}

/// One row of the `runs` table.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub app: String,
    pub command: String,
    pub reconcile: bool,
    pub status: String,
    pub actions: i64,
    pub applied: i64,
    pub failed: i64,
    pub skipped: i64,
    pub invalid: i64,
    pub requests: i64,
    pub retries: i64,
    pub throttled: i64,
    pub detail: Option<String>,
}

/// A temporary directory (config, CSV files, key, store) and a running sandbox.
pub struct TestEnv {
    pub dir: TempDir,
    pub running: RunningSandbox,
    target_extra: String,
    extra: String,
}

/// Pacing for tests: fast, so the suite stays quick.
pub const FAST: &str = "requests_per_second = 1000.0\nburst = 100\n";

impl TestEnv {
    /// A default sandbox, an empty users file and the default config.
    pub async fn new() -> TestEnv {
        Self::with_sandbox(SandboxConfig::default()).await
    }

    /// A sandbox with this configuration.
    pub async fn with_sandbox(cfg: SandboxConfig) -> TestEnv {
        let running = Sandbox::start(cfg).await.expect("the sandbox starts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let env = TestEnv {
            dir,
            running,
            target_extra: FAST.to_owned(),
            extra: String::new(),
        };
        env.write_key(&env.running.sandbox.config().api_key.clone());
        env.write_users::<&str>(&[]);
        env.write_config();
        env
    }

    /// The sandbox state.
    pub fn sb(&self) -> &Sandbox {
        &self.running.sandbox
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config file's path.
    pub fn config_path(&self) -> PathBuf {
        self.path("scimsync.toml")
    }

    /// The store's path (`[store] path` is left at its default).
    pub fn store_path(&self) -> PathBuf {
        self.path("scimsync.db")
    }

    /// Write `text` to `name` in the temporary directory.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("writing a test file");
    }

    /// Write the API key file.
    pub fn write_key(&self, key: &str) {
        self.write("key", &format!("{key}\n"));
    }

    /// Write users.csv with [`USERS_HEADER`] and these rows.
    pub fn write_users<S: AsRef<str>>(&self, rows: &[S]) {
        let mut text = format!("{USERS_HEADER}\n");
        for r in rows {
            text.push_str(r.as_ref());
            text.push('\n');
        }
        self.write("users.csv", &text);
    }

    /// Write groups.csv (`group_id,group,member` rows after the header) and
    /// point the config at it.
    pub fn write_groups<S: AsRef<str>>(&self, rows: &[S]) {
        let mut text = String::from("group_id,group,member\n");
        for r in rows {
            text.push_str(r.as_ref());
            text.push('\n');
        }
        self.write("groups.csv", &text);
        self.write_config();
    }

    /// Extra keys for `[target]` (replacing the fast pacing defaults) and extra
    /// sections appended to the config; rewrites the config file.
    pub fn configure(&mut self, target_extra: &str, extra: &str) {
        self.target_extra = target_extra.to_owned();
        self.extra = extra.to_owned();
        self.write_config();
    }

    /// Extra sections appended to the config (the `[target]` keys stay fast).
    pub fn set_extra(&mut self, extra: &str) {
        let target = FAST.to_owned();
        self.configure(&target, extra);
    }

    /// The config text for the current settings.
    pub fn config_text(&self) -> String {
        self.config_text_for("test", &self.running.base_url())
    }

    /// The config text for another target name and base URL.
    pub fn config_text_for(&self, name: &str, base_url: &str) -> String {
        let groups = if self.path("groups.csv").exists() {
            "groups = \"groups.csv\"\n"
        } else {
            ""
        };
        format!(
            "[source]\nusers = \"users.csv\"\n{groups}\n[target]\nname = \"{name}\"\nbase_url = \"{base_url}\"\napi_key_file = \"key\"\n{}\n{}\n",
            self.target_extra, self.extra
        )
    }

    /// (Re)write the config file.
    pub fn write_config(&self) {
        self.write("scimsync.toml", &self.config_text());
    }

    /// Run the binary with `-c <config> <args>` and wait for it.
    pub async fn run(&self, args: &[&str]) -> Output {
        let config = self.config_path();
        let mut full: Vec<String> = vec!["-c".into(), config.display().to_string()];
        full.extend(args.iter().map(|s| (*s).to_owned()));
        run_binary(self.dir.path(), full).await
    }

    /// Run the binary with exactly these arguments (no `-c`).
    pub async fn run_raw(&self, args: &[&str]) -> Output {
        run_binary(
            self.dir.path(),
            args.iter().map(|s| (*s).to_owned()).collect(),
        )
        .await
    }

    /// Open the store read-only.
    pub fn store(&self) -> Connection {
        Connection::open_with_flags(
            self.store_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("the store opens")
    }

    /// Every outcome row, in id order.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes_where("1 = 1")
    }

    /// Outcome rows of one run.
    pub fn outcomes_of_run(&self, run: i64) -> Vec<Outcome> {
        self.outcomes_where(&format!("run_id = {run}"))
    }

    /// Outcome rows matching a SQL condition.
    pub fn outcomes_where(&self, cond: &str) -> Vec<Outcome> {
        let conn = self.store();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id, run_id, app, resource, action, source_id, user_name, email, group_name, scim_id,
                 outcome, http_status, scim_type, detail, attempts FROM outcomes WHERE {cond} ORDER BY id"
            ))
            .expect("outcomes query");
        stmt.query_map([], |r| {
            Ok(Outcome {
                id: r.get(0)?,
                run_id: r.get(1)?,
                app: r.get(2)?,
                resource: r.get(3)?,
                action: r.get(4)?,
                source_id: r.get(5)?,
                user_name: r.get(6)?,
                email: r.get(7)?,
                group_name: r.get(8)?,
                scim_id: r.get(9)?,
                outcome: r.get(10)?,
                http_status: r.get(11)?,
                scim_type: r.get(12)?,
                detail: r.get(13)?,
                attempts: r.get(14)?,
            })
        })
        .expect("outcomes rows")
        .collect::<Result<_, _>>()
        .expect("outcome row")
    }

    /// Every run row, in id order.
    pub fn runs(&self) -> Vec<RunRow> {
        let conn = self.store();
        let mut stmt = conn
            .prepare(
                "SELECT id, app, command, reconcile, status, actions, applied, failed, skipped, invalid,
                 requests, retries, throttled, detail FROM runs ORDER BY id",
            )
            .expect("runs query");
        stmt.query_map([], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                app: r.get(1)?,
                command: r.get(2)?,
                reconcile: r.get(3)?,
                status: r.get(4)?,
                actions: r.get(5)?,
                applied: r.get(6)?,
                failed: r.get(7)?,
                skipped: r.get(8)?,
                invalid: r.get(9)?,
                requests: r.get(10)?,
                retries: r.get(11)?,
                throttled: r.get(12)?,
                detail: r.get(13)?,
            })
        })
        .expect("runs rows")
        .collect::<Result<_, _>>()
        .expect("run row")
    }

    /// Number of user links in the store.
    pub fn user_link_count(&self) -> i64 {
        self.store()
            .query_row("SELECT COUNT(*) FROM user_links", [], |r| r.get(0))
            .expect("count")
    }

    /// The sandbox account with this userName (case-insensitive).
    pub fn target_user(&self, user_name: &str) -> Option<Value> {
        self.sb().users().into_iter().find(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        })
    }

    /// The sandbox group with this displayName.
    pub fn target_group(&self, name: &str) -> Option<Value> {
        self.sb()
            .groups()
            .into_iter()
            .find(|g| g["displayName"].as_str() == Some(name))
    }

    /// userNames of a sandbox group's members, sorted.
    pub fn member_names(&self, group: &str) -> Vec<String> {
        let g = self.target_group(group).expect("the group exists");
        let users = self.sb().users();
        let mut names: Vec<String> = g["members"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["value"].as_str())
            .filter_map(|id| {
                users
                    .iter()
                    .find(|u| u["id"].as_str() == Some(id))
                    .and_then(|u| u["userName"].as_str())
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// Delete a user through the SCIM API (an admin removing it by hand).
    pub async fn delete_in_target(&self, id: &str) {
        let url = format!("{}/Users/{id}", self.running.base_url());
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client")
            .delete(url)
            .bearer_auth(&self.sb().config().api_key)
            .send()
            .await
            .expect("the DELETE is answered");
        assert_eq!(resp.status().as_u16(), 204, "sandbox DELETE");
    }
}

/// Run the scimsync binary in `dir` and capture its output. Runs on a
/// blocking thread so the sandbox's runtime threads keep serving.
pub async fn run_binary(dir: &Path, args: Vec<String>) -> Output {
    run_binary_env(dir, args, &[]).await
}

/// [`run_binary`] with extra environment variables.
pub async fn run_binary_env(dir: &Path, args: Vec<String>, vars: &[(&str, &str)]) -> Output {
    let dir = dir.to_path_buf();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scimsync"));
        cmd.args(&args)
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .env_remove("SCIMSYNC_CONFIG")
            .env_remove("SCIMSYNC_LOG")
            .env_remove("RUST_LOG")
            .envs(vars);
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("the scimsync binary runs");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("the runner thread does not panic")
}

// ---- helpers for the fault matrix, hostile-response, secrets and fuzz tests ----

/// File name of the fast-retry copy of the built-in Atlassian profile.
pub const FAST_RETRY_CONNECTOR: &str = "atlassian-fast-retry.toml";

/// The built-in Atlassian profile with a 20 ms first backoff (1 s at most)
/// instead of 1 s (60 s at most): the same retry decisions, a shorter wait.
pub fn fast_retry_profile() -> String {
    let text = include_str!("../../../connectors/atlassian.toml");
    let out = text
        .replace("initial_delay_ms = 1000", "initial_delay_ms = 20")
        .replace("max_delay_secs = 60", "max_delay_secs = 1");
    assert!(
        out.contains("initial_delay_ms = 20") && out.contains("max_delay_secs = 1"),
        "connectors/atlassian.toml changed: update fast_retry_profile()"
    );
    out
}

/// One users.csv row parsed back (the rows written by [`user`] and friends:
/// no quoting).
#[derive(Clone, Debug)]
pub struct SourceRow {
    pub id: String,
    pub user_name: String,
    pub given: String,
    pub family: String,
    pub display: String,
    pub email: String,
    pub active: bool,
    pub title: String,
    pub groups: Vec<String>,
}

/// Parse a users.csv row in [`USERS_HEADER`] order.
pub fn parse_row(row: &str) -> SourceRow {
    let f: Vec<&str> = row.split(',').collect();
    assert_eq!(f.len(), 9, "a users.csv row without quoting: {row}");
    SourceRow {
        id: f[0].to_owned(),
        user_name: f[1].to_owned(),
        given: f[2].to_owned(),
        family: f[3].to_owned(),
        display: f[4].to_owned(),
        email: f[5].to_owned(),
        active: f[6] == "true",
        title: f[7].to_owned(),
        groups: f[8]
            .split(';')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// The managed attributes of one account, as compared by [`TestEnv::assert_state`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AccountView {
    pub external_id: Option<String>,
    pub user_name: Option<String>,
    pub given: Option<String>,
    pub family: Option<String>,
    pub display: Option<String>,
    pub email: Option<String>,
    pub active: Option<bool>,
    pub title: Option<String>,
}

fn opt_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl AccountView {
    /// What the sandbox holds.
    pub fn of_resource(u: &Value) -> AccountView {
        let emails = u["emails"].as_array().cloned().unwrap_or_default();
        let email = emails
            .iter()
            .find(|e| e["primary"] == Value::Bool(true))
            .or(emails.first())
            .and_then(|e| opt_str(&e["value"]));
        AccountView {
            external_id: opt_str(&u["externalId"]),
            user_name: opt_str(&u["userName"]),
            given: opt_str(&u["name"]["givenName"]),
            family: opt_str(&u["name"]["familyName"]),
            display: opt_str(&u["displayName"]),
            email,
            active: u["active"].as_bool(),
            title: opt_str(&u["title"]).filter(|t| !t.is_empty()),
        }
    }

    /// What the source row asks for (default Atlassian mapping).
    pub fn of_row(r: &SourceRow) -> AccountView {
        let display = if r.display.is_empty() {
            format!("{} {}", r.given, r.family)
        } else {
            r.display.clone()
        };
        AccountView {
            external_id: Some(r.id.clone()),
            user_name: Some(r.user_name.clone()),
            given: Some(r.given.clone()),
            family: Some(r.family.clone()),
            display: Some(display),
            email: Some(r.email.clone()),
            active: Some(r.active),
            title: (!r.title.is_empty()).then(|| r.title.clone()),
        }
    }
}

impl TestEnv {
    /// Write the fast-retry profile next to the config; returns the
    /// `connector = ...` line for `[target]`.
    pub fn fast_retry_connector(&self) -> String {
        self.write(FAST_RETRY_CONNECTOR, &fast_retry_profile());
        format!("connector = \"{FAST_RETRY_CONNECTOR}\"\n")
    }

    /// Run the binary with `-c <config> <args>` and extra environment variables.
    pub async fn run_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let config = self.config_path();
        let mut full: Vec<String> = vec!["-c".into(), config.display().to_string()];
        full.extend(args.iter().map(|s| (*s).to_owned()));
        run_binary_env(self.dir.path(), full, vars).await
    }

    /// No two accounts share a userName (case-insensitive) or an externalId,
    /// no two groups share a displayName (case-insensitive) or an externalId.
    pub fn assert_no_duplicates(&self, context: &str) {
        use std::collections::HashSet;
        let users = self.sb().users();
        let mut names = HashSet::new();
        let mut ext = HashSet::new();
        for u in &users {
            let name = u["userName"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                names.insert(name.clone()),
                "{context}: duplicate userName {name}: {users:#?}"
            );
            if let Some(e) = u["externalId"].as_str() {
                assert!(
                    ext.insert(e.to_owned()),
                    "{context}: duplicate externalId {e}: {users:#?}"
                );
            }
        }
        let groups = self.sb().groups();
        let mut gnames = HashSet::new();
        let mut gext = HashSet::new();
        for g in &groups {
            let name = g["displayName"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                gnames.insert(name.clone()),
                "{context}: duplicate group {name}: {groups:#?}"
            );
            if let Some(e) = g["externalId"].as_str() {
                assert!(
                    gext.insert(e.to_owned()),
                    "{context}: duplicate group externalId {e}: {groups:#?}"
                );
            }
        }
    }

    /// The sandbox holds exactly the accounts of `rows` (plus `extra`, e.g.
    /// disabled accounts) with their mapped attributes, and exactly the groups
    /// named in `rows` with exactly those members.
    pub fn assert_state<S: AsRef<str>>(&self, rows: &[S], extra: &[AccountView], context: &str) {
        let rows: Vec<SourceRow> = rows.iter().map(|r| parse_row(r.as_ref())).collect();
        let mut want: Vec<AccountView> = rows.iter().map(AccountView::of_row).collect();
        want.extend(extra.iter().cloned());
        want.sort();
        let mut have: Vec<AccountView> = self
            .sb()
            .users()
            .iter()
            .map(AccountView::of_resource)
            .collect();
        have.sort();
        assert_eq!(have, want, "{context}: accounts differ from the source");

        let mut want_groups: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for r in &rows {
            for g in &r.groups {
                want_groups
                    .entry(g.clone())
                    .or_default()
                    .push(r.user_name.clone());
            }
        }
        for members in want_groups.values_mut() {
            members.sort();
        }
        let have_groups: std::collections::BTreeMap<String, Vec<String>> = self
            .sb()
            .groups()
            .iter()
            .filter_map(|g| g["displayName"].as_str().map(str::to_owned))
            .map(|name| {
                let members = self.member_names(&name);
                (name, members)
            })
            .collect();
        assert_eq!(
            have_groups, want_groups,
            "{context}: groups differ from the source"
        );
    }

    /// `finished_at` of a run, if set.
    pub fn run_finished_at(&self, run: i64) -> Option<i64> {
        self.store()
            .query_row("SELECT finished_at FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .expect("the run exists")
    }
}
