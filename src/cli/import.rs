//! `scimsync import`: the initial synchronization. Read every user and group
//! in the target, link the ones that match the source (externalId, then
//! userName; groups by name when `groups.adopt_existing` is set — the same
//! matching a full-read sync uses), and list the target accounts the source
//! does not know. Sends no write request.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::{CliError, Printer};
use crate::config::Settings;
use crate::exit::ExitStatus;
use crate::model::ScimId;
use crate::plan::LinkState;
use crate::push::client::ScimClient;
use crate::store::lock::RunLock;
use crate::store::{OutcomeRow, Record, RunCounts, Store};
use crate::target::{self, MatchRules};
use crate::{mapping, scim, source};

/// `import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Also write every target account to this CSV file (id, userName,
    /// externalId, displayName, email, active, linked source id, status).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    /// Unmatched target accounts listed on stdout (all of them are in --export).
    #[arg(long, default_value_t = 50)]
    pub show: usize,
}

fn err<E: std::fmt::Display>(e: E) -> CliError {
    CliError::msg(e.to_string())
}

/// The primary (or first) email of a SCIM user.
fn email(u: &Value) -> Option<&str> {
    let emails = u.get("emails")?.as_array()?;
    emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or(emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
}

/// Run `import`.
pub async fn import(
    settings: &Settings,
    args: ImportArgs,
    printer: &Printer,
) -> Result<ExitStatus, CliError> {
    let app = settings.app.as_str();
    let key = settings.key_source.read().map_err(err)?;
    let _lock = RunLock::acquire(&settings.store_path).map_err(CliError::msg)?;
    let mut store = Store::open(&settings.store_path).map_err(err)?;
    let user_links = store.user_links(app).map_err(err)?;
    let group_links = store.group_links(app).map_err(err)?;
    if let Some(url) = store.target_url(app).map_err(err)?
        && url != settings.base_url
        && !(user_links.is_empty() && group_links.is_empty())
    {
        return Err(CliError::msg(format!(
            "the store {} links target `{app}` to {url}, but the config now says {}; use a new store file or another target name",
            settings.store_path.display(),
            settings.base_url
        )));
    }
    let mut snapshot = source::load(&settings.source).map_err(err)?;
    let desired = mapping::desired_state_taking(&mut snapshot, &settings.mapping, &settings.groups);

    let client = ScimClient::new(
        &settings.base_url,
        &key,
        &settings.limits,
        &settings.profile.api.media_type,
    )
    .map_err(CliError::msg)?;
    printer.info("Reading every user and group in the target...");
    let page = settings.limits.page_size;
    let read_failed = |what: &str, f| {
        CliError::msg(format!(
            "reading {what} from the target: {}",
            super::pipeline::diagnose(settings, &f)
        ))
    };
    let users = client
        .list_all("Users", page, |_, _| {})
        .await
        .map_err(|f| read_failed("users", f))?;
    let groups = client
        .list_all("Groups", page, |_, _| {})
        .await
        .map_err(|f| read_failed("groups", f))?;
    let rules = MatchRules {
        user_name_ci: settings.profile.api.user_name_case_insensitive,
        group_name_ci: settings.profile.api.group_name_case_insensitive,
        adopt_groups: settings.groups.adopt_existing,
    };
    let retired = store.retired_groups(app).map_err(err)?;
    let r = target::reconcile(
        &desired,
        &user_links,
        &group_links,
        &retired,
        &users,
        &groups,
        rules,
    );

    // New links, recorded with a report row each, as one `import` run.
    let run = store.begin_run(app, "import", true).map_err(err)?;
    let mut recs = Vec::new();
    let (mut by_external, mut by_name, mut new_groups) = (0u64, 0u64, 0u64);
    let mut linked: std::collections::HashMap<ScimId, String> = user_links
        .iter()
        .map(|l| (l.scim_id.clone(), l.source_id.to_string()))
        .collect();
    for (sid, u) in &r.actual.users {
        let how = match u.link {
            LinkState::MatchedExternalId => {
                by_external += 1;
                "externalId"
            }
            LinkState::MatchedUserName => {
                by_name += 1;
                "userName"
            }
            _ => continue,
        };
        linked.insert(u.scim_id.clone(), sid.to_string());
        recs.push(Record::UserState {
            app: app.into(),
            source_id: sid.clone(),
            scim_id: u.scim_id.clone(),
            // What the account holds now: the next sync sends only what differs.
            // (A full read: always known.)
            state: u
                .known()
                .or(desired.users.get(sid).map(|w| &w.attrs))
                .cloned()
                .unwrap_or_default(),
        });
        let want = desired.users.get(sid);
        recs.push(Record::Outcome(OutcomeRow {
            run_id: run,
            app: app.into(),
            resource: "user".into(),
            action: "link".into(),
            source_id: Some(sid.to_string()),
            user_name: want.map(|w| w.user_name.clone()),
            email: want.map(|w| w.email.clone()),
            scim_id: Some(u.scim_id.0.clone()),
            outcome: "applied".into(),
            detail: Some(format!("import: matched an existing account by {how}")),
            ..OutcomeRow::default()
        }));
    }
    for (gid, g) in &r.actual.groups {
        if g.link != LinkState::MatchedDisplayName {
            continue;
        }
        new_groups += 1;
        recs.push(Record::GroupLink {
            app: app.into(),
            source_id: gid.clone(),
            scim_id: g.scim_id.clone(),
            display_name: g.display_name.clone(),
        });
        recs.push(Record::MembersReset {
            app: app.into(),
            group: gid.clone(),
            members: r.memberships.get(gid).cloned().unwrap_or_default(),
        });
        recs.push(Record::Outcome(OutcomeRow {
            run_id: run,
            app: app.into(),
            resource: "group".into(),
            action: "link".into(),
            source_id: Some(gid.to_string()),
            user_name: Some(g.display_name.clone()),
            scim_id: Some(g.scim_id.0.clone()),
            outcome: "applied".into(),
            detail: Some("import: matched an existing group by name".into()),
            ..OutcomeRow::default()
        }));
    }
    for c in &r.actual.conflicts {
        recs.push(Record::Outcome(OutcomeRow {
            run_id: run,
            app: app.into(),
            resource: c.resource.clone(),
            action: "match".into(),
            source_id: Some(c.source_id.to_string()),
            user_name: Some(c.label.clone()),
            outcome: "skipped".into(),
            detail: Some(c.reason.clone()),
            ..OutcomeRow::default()
        }));
    }
    store.apply(&recs).map_err(err)?;
    let applied = by_external + by_name + new_groups;
    let conflicts = r.actual.conflicts.len() as u64;
    store
        .finish_run(
            run,
            if conflicts > 0 {
                "partial"
            } else {
                "succeeded"
            },
            &RunCounts {
                actions: applied + conflicts,
                applied,
                skipped: conflicts,
                requests: client
                    .stats
                    .requests
                    .load(std::sync::atomic::Ordering::Relaxed),
                ..RunCounts::default()
            },
            None,
        )
        .map_err(err)?;

    // Target accounts the source does not know.
    let unmatched: Vec<&Value> = users
        .iter()
        .filter(|u| scim::resource_id(u).is_some_and(|id| !linked.contains_key(&id)))
        .collect();
    let missing = desired
        .users
        .keys()
        .filter(|sid| !r.actual.users.contains_key(*sid))
        .count();

    if let Some(path) = &args.export {
        let new: BTreeSet<ScimId> = r
            .actual
            .users
            .values()
            .filter(|u| u.link != LinkState::Linked)
            .map(|u| u.scim_id.clone())
            .collect();
        let mut w = csv::Writer::from_path(path)
            .map_err(|e| CliError::msg(format!("cannot write {}: {e}", path.display())))?;
        let werr = |e: csv::Error| CliError::msg(format!("writing {}: {e}", path.display()));
        w.write_record([
            "id",
            "userName",
            "externalId",
            "displayName",
            "email",
            "active",
            "source_id",
            "status",
        ])
        .map_err(werr)?;
        for u in &users {
            let Some(id) = scim::resource_id(u) else {
                continue;
            };
            let sid = linked.get(&id).cloned().unwrap_or_default();
            let status = if sid.is_empty() {
                "unmatched"
            } else if new.contains(&id) {
                "linked by import"
            } else {
                "linked"
            };
            w.write_record([
                id.0.as_str(),
                scim::str_attr(u, "userName").unwrap_or_default(),
                scim::str_attr(u, "externalId").unwrap_or_default(),
                scim::str_attr(u, "displayName").unwrap_or_default(),
                email(u).unwrap_or_default(),
                match u.get("active").and_then(Value::as_bool) {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "",
                },
                &sid,
                status,
            ])
            .map_err(werr)?;
        }
        w.flush()?;
    }

    let mut text = format!(
        "Target {app}: {} users, {} groups read.\n\
         Linked {} users ({by_external} by externalId, {by_name} by userName) and {new_groups} groups; {} users and {} groups were already linked.\n",
        users.len(),
        groups.len(),
        by_external + by_name,
        user_links.len(),
        group_links.len(),
    );
    if missing > 0 {
        text.push_str(&format!(
            "{missing} source users have no account in the target: the next sync creates them.\n"
        ));
    }
    for c in &r.actual.conflicts {
        text.push_str(&format!(
            "Not linked: {} {} ({}): {}\n",
            c.resource, c.label, c.source_id, c.reason
        ));
    }
    if unmatched.is_empty() {
        text.push_str("Every target account is linked to the source.\n");
    } else {
        text.push_str(&format!(
            "Unmatched target accounts ({}), unknown to the source and left untouched:\n",
            unmatched.len()
        ));
        for u in unmatched.iter().take(args.show) {
            text.push_str(&format!(
                "  {}  {}{}{}\n",
                scim::resource_id(u).map(|i| i.0).unwrap_or_default(),
                scim::str_attr(u, "userName").unwrap_or_default(),
                scim::str_attr(u, "externalId")
                    .map(|x| format!("  externalId {x}"))
                    .unwrap_or_default(),
                if u.get("active").and_then(Value::as_bool) == Some(false) {
                    "  (inactive)"
                } else {
                    ""
                }
            ));
        }
        if unmatched.len() > args.show {
            text.push_str(&format!(
                "  ... and {} more{}\n",
                unmatched.len() - args.show,
                if args.export.is_some() {
                    " (all are in the export)"
                } else {
                    " (--export FILE lists them all)"
                }
            ));
        }
    }
    if let Some(path) = &args.export {
        text.push_str(&format!(
            "Wrote {} target accounts to {}.\n",
            users.len(),
            path.display()
        ));
    }
    printer.out(&text)?;
    Ok(if conflicts > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
