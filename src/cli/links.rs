//! `scimsync links`: list, search, show, unlink and relink account links.
//!
//! Changes run under the store's run lock (never during a sync), are recorded
//! in the report as a `links` run (so `report user ID` shows them), and mark
//! the target for a full read at the next sync (see [`crate::store::links`]).

use clap::{Args, Subcommand};

use super::report::ReportFormat;
use super::{CliError, Printer, load_settings};
use crate::config::Settings;
use crate::exit::ExitStatus;
use crate::push::client::{ScimClient, ScimError};
use crate::store::links::{LinkKind, LinkRow};
use crate::store::lock::RunLock;
use crate::store::{OutcomeRow, Record, RunCounts, Store};

/// `links` options.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LinksArgs {
    /// Only links whose source id, target id, name or (users) any attribute
    /// last pushed contains this text (case-insensitive).
    #[arg(long, short)]
    pub search: Option<String>,
    /// Only user links.
    #[arg(long, conflicts_with = "groups")]
    pub users: bool,
    /// Only group links.
    #[arg(long)]
    pub groups: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<LinksAction>,
}

/// `links` subcommands.
#[derive(Debug, Subcommand)]
pub enum LinksAction {
    /// One link in full: ids, name, groups, the attributes last pushed.
    Show {
        /// Source id, target (SCIM) id, userName or group name.
        id: String,
        /// Output format (table or json).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Forget one link. Nothing is sent to the target; the next sync reads
    /// the target in full and matches the account again (externalId, then
    /// userName), or creates it if there is none.
    Unlink {
        /// Source id of the user (or, with --group, of the group).
        source_id: String,
        /// A group link.
        #[arg(long)]
        group: bool,
    },
    /// Link a source id to a given target account (checked to exist first).
    /// The next sync reads the target in full and updates that account to
    /// match the source.
    Relink {
        /// Source id of the user (or, with --group, of the group).
        source_id: String,
        /// The target's id of the account (or group).
        scim_id: String,
        /// A group link.
        #[arg(long)]
        group: bool,
    },
}

fn err<E: std::fmt::Display>(e: E) -> CliError {
    CliError::msg(e.to_string())
}

/// Run `links`.
pub async fn links(
    config: &std::path::Path,
    args: LinksArgs,
    printer: &Printer,
) -> Result<ExitStatus, CliError> {
    let settings = load_settings(config)?;
    match args.action {
        None => {
            let store = open(&settings)?;
            let kind = if args.users {
                Some(LinkKind::User)
            } else if args.groups {
                Some(LinkKind::Group)
            } else {
                None
            };
            let rows = store
                .links(&settings.app, kind, args.search.as_deref())
                .map_err(err)?;
            list(&rows, args.format, printer)
        }
        Some(LinksAction::Show { id, format }) => {
            let store = open(&settings)?;
            let rows = store.find_links(&settings.app, &id).map_err(err)?;
            if rows.is_empty() {
                return Err(CliError::msg(format!(
                    "no link of target `{}` matches `{id}` (source id, target id, userName or group name)",
                    settings.app
                )));
            }
            show(&rows, format, printer)
        }
        Some(LinksAction::Unlink { source_id, group }) => {
            let kind = if group {
                LinkKind::Group
            } else {
                LinkKind::User
            };
            let _lock = RunLock::acquire(&settings.store_path).map_err(CliError::msg)?;
            let mut store = open(&settings)?;
            let name = store
                .find_links(&settings.app, &source_id)
                .map_err(err)?
                .into_iter()
                .find(|l| l.kind == kind && l.source_id == source_id)
                .map(|l| l.name);
            let Some(change) = store.unlink(&settings.app, kind, &source_id).map_err(err)? else {
                return Err(CliError::msg(format!(
                    "no {} link for source id `{source_id}` (see `scimsync links --search {source_id}`)",
                    kind.as_str()
                )));
            };
            let previous = change.previous.unwrap_or_default();
            audit(
                &mut store,
                &settings,
                kind,
                "unlink",
                &source_id,
                name,
                &previous,
                format!(
                    "`scimsync links unlink`: was linked to {previous}; the next sync reads the target in full"
                ),
            )?;
            printer.out(&format!(
                "Unlinked {} {source_id} from {previous}. Nothing was sent to the target; the next sync reads it in full and matches the account again (externalId, then userName).\n",
                kind.as_str()
            ))?;
            Ok(ExitStatus::Success)
        }
        Some(LinksAction::Relink {
            source_id,
            scim_id,
            group,
        }) => {
            let kind = if group {
                LinkKind::Group
            } else {
                LinkKind::User
            };
            let _lock = RunLock::acquire(&settings.store_path).map_err(CliError::msg)?;
            let mut store = open(&settings)?;
            // The account must exist: one GET, no write.
            let name = fetch_name(&settings, kind, &scim_id).await?;
            let change = match store
                .relink(&settings.app, kind, &source_id, &scim_id, &name)
                .map_err(err)?
            {
                Ok(change) => change,
                Err(other) => {
                    return Err(CliError::msg(format!(
                        "{} {scim_id} is linked to source id `{other}`; unlink that first (`scimsync links unlink {other}{}`)",
                        kind.as_str(),
                        if group { " --group" } else { "" }
                    )));
                }
            };
            let was = change
                .previous
                .as_deref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default();
            audit(
                &mut store,
                &settings,
                kind,
                "relink",
                &source_id,
                Some(name.clone()),
                &scim_id,
                format!(
                    "`scimsync links relink`: linked to {scim_id}{was}; the next sync reads the target in full"
                ),
            )?;
            printer.out(&format!(
                "Linked {} {source_id} to {scim_id} ({name}){was}. The next sync reads the target in full and updates that account to match the source.\n",
                kind.as_str()
            ))?;
            Ok(ExitStatus::Success)
        }
    }
}

fn open(settings: &Settings) -> Result<Store, CliError> {
    if !settings.store_path.exists() {
        return Err(CliError::msg(format!(
            "no store at {}: nothing has been linked yet (run `scimsync sync` or `scimsync import`)",
            settings.store_path.display()
        )));
    }
    Store::open(&settings.store_path).map_err(err)
}

/// GET the target resource; its userName or displayName.
async fn fetch_name(
    settings: &Settings,
    kind: LinkKind,
    scim_id: &str,
) -> Result<String, CliError> {
    let key = settings.key_source.read().map_err(err)?;
    let client = ScimClient::new(
        &settings.base_url,
        &key,
        &settings.limits,
        &settings.profile.api.media_type,
    )
    .map_err(CliError::msg)?;
    let resource = match kind {
        LinkKind::User => "Users",
        LinkKind::Group => "Groups",
    };
    let url = client.url(&[resource, scim_id]);
    match client.send(reqwest::Method::GET, url, None, true).await {
        Ok(reply) => {
            let attr = match kind {
                LinkKind::User => "userName",
                LinkKind::Group => "displayName",
            };
            Ok(reply
                .body
                .as_ref()
                .and_then(|b| crate::scim::str_attr(b, attr))
                .unwrap_or(scim_id)
                .to_owned())
        }
        Err(f) if matches!(f.error, ScimError::Http { status: 404, .. }) => Err(CliError::msg(
            format!("the target has no {} with id `{scim_id}`", kind.as_str()),
        )),
        Err(f) => Err(CliError::msg(format!(
            "reading {resource}/{scim_id}: {}",
            super::pipeline::diagnose(settings, &f)
        ))),
    }
}

/// Record the change in the report: a `links` run with one outcome row.
#[allow(clippy::too_many_arguments)]
fn audit(
    store: &mut Store,
    settings: &Settings,
    kind: LinkKind,
    action: &str,
    source_id: &str,
    name: Option<String>,
    scim_id: &str,
    detail: String,
) -> Result<(), CliError> {
    let run = store
        .begin_run(&settings.app, "links", false)
        .map_err(err)?;
    store
        .apply(&[Record::Outcome(OutcomeRow {
            run_id: run,
            app: settings.app.clone(),
            resource: kind.as_str().into(),
            action: action.into(),
            source_id: Some(source_id.into()),
            user_name: name.filter(|n| !n.is_empty()),
            scim_id: Some(scim_id.into()),
            outcome: "applied".into(),
            detail: Some(detail),
            ..OutcomeRow::default()
        })])
        .map_err(err)?;
    store
        .finish_run(
            run,
            "succeeded",
            &RunCounts {
                actions: 1,
                applied: 1,
                ..RunCounts::default()
            },
            None,
        )
        .map_err(err)
}

fn list(rows: &[LinkRow], format: ReportFormat, printer: &Printer) -> Result<ExitStatus, CliError> {
    match format {
        ReportFormat::Json => {
            let slim: Vec<LinkRow> = rows
                .iter()
                .cloned()
                .map(|mut r| {
                    r.state = None;
                    r
                })
                .collect();
            printer.out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&slim).expect("serializable")
            ))?;
        }
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let e = |e: csv::Error| CliError::msg(e.to_string());
            w.write_record([
                "kind",
                "source_id",
                "scim_id",
                "name",
                "groups",
                "members",
                "linked_at",
                "updated_at",
            ])
            .map_err(e)?;
            for r in rows {
                w.write_record([
                    r.kind.as_str(),
                    &r.source_id,
                    &r.scim_id,
                    &r.name,
                    &r.groups.join(";"),
                    &r.members.map(|m| m.to_string()).unwrap_or_default(),
                    &r.linked_at,
                    &r.updated_at,
                ])
                .map_err(e)?;
            }
            let bytes = w.into_inner().map_err(|x| CliError::msg(x.to_string()))?;
            printer.out(&String::from_utf8_lossy(&bytes))?;
        }
        ReportFormat::Table => {
            if rows.is_empty() {
                printer.info("No matching links.");
                return Ok(ExitStatus::Success);
            }
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::ASCII_MARKDOWN);
            table.set_header([
                "kind",
                "source id",
                "target id",
                "name",
                "groups / members",
                "linked",
            ]);
            for r in rows {
                table.add_row([
                    r.kind.as_str().to_owned(),
                    r.source_id.clone(),
                    r.scim_id.clone(),
                    r.name.clone(),
                    match r.members {
                        Some(m) => format!("{m} members"),
                        None => r.groups.join(", "),
                    },
                    r.linked_at.clone(),
                ]);
            }
            let users = rows.iter().filter(|r| r.kind == LinkKind::User).count();
            printer.out(&format!(
                "{table}\n{users} user links, {} group links\n",
                rows.len() - users
            ))?;
        }
    }
    Ok(ExitStatus::Success)
}

fn show(rows: &[LinkRow], format: ReportFormat, printer: &Printer) -> Result<ExitStatus, CliError> {
    if format != ReportFormat::Table {
        printer.out(&format!(
            "{}\n",
            serde_json::to_string_pretty(rows).expect("serializable")
        ))?;
        return Ok(ExitStatus::Success);
    }
    let mut text = String::new();
    for r in rows {
        text.push_str(&format!(
            "{} {}\n  source id   {}\n  target id   {}\n  linked      {}\n  updated     {}\n",
            r.kind.as_str(),
            r.name,
            r.source_id,
            r.scim_id,
            r.linked_at,
            r.updated_at
        ));
        match r.members {
            Some(m) => text.push_str(&format!("  members     {m} (last pushed)\n")),
            None => text.push_str(&format!(
                "  groups      {}\n",
                if r.groups.is_empty() {
                    "-".to_owned()
                } else {
                    r.groups.join(", ")
                }
            )),
        }
        if let Some(state) = &r.state {
            if state.is_empty() {
                text.push_str("  state       (none: relinked; the next sync reads the account)\n");
            } else {
                text.push_str("  last pushed\n");
                for (path, value) in state {
                    text.push_str(&format!("    {path} = {value}\n"));
                }
            }
        }
    }
    printer.out(&text)?;
    Ok(ExitStatus::Success)
}
