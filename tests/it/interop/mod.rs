//! Interop: scimsync's end-to-end scenarios against a SCIM server nobody on the
//! team wrote — python-scim `scim2-server` 0.8.3 (PyPI) — with the built-in
//! `scim2` connector profile.
//!
//! Every test starts its own server (a child process on 127.0.0.1) behind a
//! counting, fault-injecting proxy ([`proxy::Proxy`]); scimsync talks to the
//! proxy. The final state is read back through the server's own API with plain
//! HTTP GETs ([`server::Scim2Server::users`]), not through scimsync's code.
//! The server's quirks (PATCH 204 without a body, HTTP/1.0 without keep-alive,
//! the strict `members[value eq "…"]` removal form, duplicate group names
//! allowed, no referential integrity) must be handled by the profile and the
//! client; nothing here special-cases them.
//!
//! The server is found through `SCIMSYNC_SCIM2_SERVER` or at
//! `target/scim2-venv/bin/scim2-server`; when it is missing the tests fail
//! with install instructions, unless `SCIMSYNC_SKIP_INTEROP=1` (a loud skip).

pub mod proxy;
pub mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{AccountView, Output, SourceRow, USERS_HEADER, parse_row, run_binary};
use proxy::Proxy;
use server::Scim2Server;

/// A temporary directory (config, users.csv, key, store), a running
/// scim2-server and the proxy in front of it.
pub struct Interop {
    pub dir: TempDir,
    pub server: Scim2Server,
    pub proxy: Proxy,
    extra: String,
}

impl Interop {
    /// A server with its default configuration; `None` when skipped.
    pub async fn start() -> Option<Interop> {
        Self::start_with(None).await
    }

    /// A server that caps every page at `max_results` resources.
    pub async fn start_paged(max_results: u32) -> Option<Interop> {
        Self::start_with(Some(max_results)).await
    }

    async fn start_with(max_results: Option<u32>) -> Option<Interop> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let spc = max_results.map(|n| {
            let p = dir.path().join("service-provider-config.json");
            std::fs::write(&p, server::service_provider_config(n)).expect("spc file");
            p
        });
        let server = Scim2Server::start(dir.path(), spc.as_deref()).await?;
        let origin = server
            .base_url()
            .trim_end_matches("/v2")
            .trim_end_matches('/')
            .to_owned();
        let proxy = Proxy::start(&origin).await;
        let env = Interop {
            dir,
            server,
            proxy,
            extra: String::new(),
        };
        env.write("key", &format!("{}\n", server::TOKEN));
        env.write_users::<&str>(&[]);
        env.write_config();
        Some(env)
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file in the temporary directory.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("writing a test file");
    }

    /// Write users.csv with these rows.
    pub fn write_users<S: AsRef<str>>(&self, rows: &[S]) {
        let mut text = format!("{USERS_HEADER}\n");
        for r in rows {
            text.push_str(r.as_ref());
            text.push('\n');
        }
        self.write("users.csv", &text);
    }

    /// Sections appended to the config (e.g. `[policy]`); rewrites it.
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.to_owned();
        self.write_config();
    }

    fn write_config(&self) {
        let text = format!(
            "[source]\nusers = \"users.csv\"\n\n[target]\nname = \"scim2-server\"\nconnector = \"scim2\"\n\
             base_url = \"{}/v2\"\napi_key_file = \"key\"\nrequests_per_second = 1000.0\nburst = 100\n\n{}\n",
            self.proxy.origin(),
            self.extra
        );
        self.write("scimsync.toml", &text);
    }

    /// Run the binary with `-c scimsync.toml <args>`.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut full: Vec<String> = vec![
            "-c".into(),
            self.path("scimsync.toml").display().to_string(),
        ];
        full.extend(args.iter().map(|s| (*s).to_owned()));
        run_binary(self.dir.path(), full).await
    }

    /// The server's users, read through its API, as comparable views.
    pub async fn accounts(&self) -> Vec<AccountView> {
        let mut v: Vec<AccountView> = self
            .server
            .users()
            .await
            .iter()
            .map(AccountView::of_resource)
            .collect();
        v.sort();
        v
    }

    /// The server's user with this userName (case-insensitive).
    pub async fn user(&self, user_name: &str) -> Option<Value> {
        self.server.users().await.into_iter().find(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        })
    }

    /// Group name → sorted member userNames, read through the server's API.
    /// Fails on two groups with one name (the server allows it; scimsync must
    /// never cause it) and on a member id that names no user (the server has
    /// no referential integrity; scimsync must remove members it deletes).
    pub async fn groups(&self, context: &str) -> BTreeMap<String, Vec<String>> {
        let users = self.server.users().await;
        let names: HashMap<&str, &str> = users
            .iter()
            .filter_map(|u| Some((u["id"].as_str()?, u["userName"].as_str()?)))
            .collect();
        let mut out = BTreeMap::new();
        for g in self.server.groups().await {
            let name = g["displayName"].as_str().unwrap_or_default().to_owned();
            let mut members: Vec<String> = g["members"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    let id = m["value"].as_str().unwrap_or_default();
                    match names.get(id) {
                        Some(n) => (*n).to_owned(),
                        None => panic!("{context}: group {name} lists {id}, which is no user"),
                    }
                })
                .collect();
            members.sort();
            assert!(
                out.insert(name.clone(), members).is_none(),
                "{context}: two groups named {name} in the server"
            );
        }
        out
    }

    /// No two users share a userName (case-insensitive) or an externalId.
    pub async fn assert_no_duplicate_users(&self, context: &str) {
        let users = self.server.users().await;
        let mut names = HashSet::new();
        let mut ext = HashSet::new();
        for u in &users {
            let n = u["userName"].as_str().unwrap_or_default().to_lowercase();
            assert!(names.insert(n.clone()), "{context}: duplicate userName {n}");
            if let Some(e) = u["externalId"].as_str() {
                assert!(
                    ext.insert(e.to_owned()),
                    "{context}: duplicate externalId {e}"
                );
            }
        }
    }

    /// The server holds exactly the accounts of `rows` plus `extra` with their
    /// mapped attributes, and exactly the groups named in `rows` with exactly
    /// those members (plus `empty_groups`, which must have none).
    pub async fn assert_state<S: AsRef<str>>(
        &self,
        rows: &[S],
        extra: &[AccountView],
        empty_groups: &[&str],
        context: &str,
    ) {
        self.assert_no_duplicate_users(context).await;
        let rows: Vec<SourceRow> = rows.iter().map(|r| parse_row(r.as_ref())).collect();
        let mut want: Vec<AccountView> = rows.iter().map(AccountView::of_row).collect();
        want.extend(extra.iter().cloned());
        want.sort();
        assert_eq!(
            self.accounts().await,
            want,
            "{context}: accounts differ from the source"
        );
        let mut want_groups: BTreeMap<String, Vec<String>> = empty_groups
            .iter()
            .map(|g| ((*g).to_owned(), Vec::new()))
            .collect();
        for r in &rows {
            for g in &r.groups {
                want_groups
                    .entry(g.clone())
                    .or_default()
                    .push(r.user_name.clone());
            }
        }
        for m in want_groups.values_mut() {
            m.sort();
        }
        assert_eq!(
            self.groups(context).await,
            want_groups,
            "{context}: groups differ from the source"
        );
    }
}

/// Start an [`Interop`] environment or return from the test (loud skip).
macro_rules! interop_env {
    () => {
        match $crate::interop::Interop::start().await {
            Some(env) => env,
            None => return,
        }
    };
    (paged $n:expr) => {
        match $crate::interop::Interop::start_paged($n).await {
            Some(env) => env,
            None => return,
        }
    };
}

mod scenarios;
