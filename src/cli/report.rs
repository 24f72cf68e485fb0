//! `scimsync report`: query the provisioning report.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, Printer, load_settings};
use crate::config::parse_duration;
use crate::exit::ExitStatus;
use crate::store::report::{self, COLUMNS, Filter, Row};
use crate::store::{Store, now_ms};

/// `report` options.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReportArgs {
    /// The store file (default: the one named in the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A person: source id, userName or email (case-insensitive).
    #[arg(long)]
    pub user: Option<String>,
    /// Target name (`target.name` in the config).
    #[arg(long)]
    pub app: Option<String>,
    /// From: RFC 3339 time or a span back from now (`7d`, `12h`, `30m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Until: RFC 3339 time or a span back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// Outcome: applied, failed, skipped, invalid, held.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Run id.
    #[arg(long)]
    pub run: Option<i64>,
    /// Action: create, update, link, disable, delete, add_member, remove_member, validate.
    #[arg(long)]
    pub action: Option<String>,
    /// At most this many rows, newest first.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Other views.
    #[command(subcommand)]
    pub view: Option<View>,
}

/// Report views.
#[derive(Debug, Subcommand)]
pub enum View {
    /// The runs, newest first.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}

/// Report output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// A table.
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Parse `--since`/`--until`: RFC 3339 or a span back from now.
pub fn parse_when(s: &str, now: i64) -> Result<i64, String> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    match parse_duration(s) {
        Ok(d) => Ok(now - d.as_millis() as i64),
        Err(_) => Err(format!(
            "`{s}` is neither an RFC 3339 time (2026-11-23T10:00:00Z) nor a span like 7d, 12h, 30m"
        )),
    }
}

fn store_path(config: &Path, db: Option<PathBuf>) -> Result<PathBuf, CliError> {
    match db {
        Some(p) => Ok(p),
        None => Ok(load_settings(config)?.store_path),
    }
}

/// Run `report`.
pub fn report(config: &Path, args: ReportArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    let path = store_path(config, args.db.clone())?;
    if !path.exists() {
        return Err(CliError::msg(format!(
            "no store at {}: nothing has been synced yet",
            path.display()
        )));
    }
    let store = Store::open(&path).map_err(|e| CliError::msg(e.to_string()))?;
    if let Some(View::Runs { limit, format }) = args.view {
        return runs(&store, args.app.as_deref(), limit, format, printer);
    }
    let now = now_ms();
    let valid_outcomes = ["applied", "failed", "skipped", "invalid", "held"];
    if let Some(o) = &args.outcome
        && !valid_outcomes.contains(&o.as_str())
    {
        return Err(CliError::msg(format!(
            "--outcome `{o}`: expected one of {}",
            valid_outcomes.join(", ")
        )));
    }
    let filter = Filter {
        user: args.user,
        app: args.app,
        since_ms: args
            .since
            .as_deref()
            .map(|s| parse_when(s, now))
            .transpose()
            .map_err(CliError::msg)?,
        until_ms: args
            .until
            .as_deref()
            .map(|s| parse_when(s, now))
            .transpose()
            .map_err(CliError::msg)?,
        outcome: args.outcome,
        run: args.run,
        action: args.action,
        limit: args.limit,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(COLUMNS).map_err(io)?;
            report::query::<CliError>(store.conn(), &filter, |r| {
                w.write_record(csv_fields(&r)).map_err(io)
            })?;
            w.flush()?;
        }
        ReportFormat::Json => {
            out.write_all(b"[")?;
            let mut first = true;
            report::query::<CliError>(store.conn(), &filter, |r| {
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                out.write_all(b"\n  ")?;
                serde_json::to_writer(&mut out, &r).map_err(|e| CliError::msg(e.to_string()))?;
                Ok(())
            })?;
            out.write_all(b"\n]\n")?;
        }
        ReportFormat::Table => {
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::ASCII_MARKDOWN);
            table.set_header([
                "at", "run", "app", "resource", "action", "who", "group", "outcome", "http",
                "detail",
            ]);
            let mut n = 0;
            report::query::<CliError>(store.conn(), &filter, |r| {
                n += 1;
                table.add_row([
                    r.at.clone(),
                    r.run_id.to_string(),
                    r.app.clone(),
                    r.resource.clone(),
                    r.action.clone(),
                    r.user_name
                        .clone()
                        .or(r.source_id.clone())
                        .unwrap_or_default(),
                    r.group_name.clone().unwrap_or_default(),
                    r.outcome.clone(),
                    r.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    r.detail.clone().unwrap_or_default(),
                ]);
                Ok(())
            })?;
            if n == 0 {
                drop(out);
                printer.info("No matching report rows.");
                return Ok(ExitStatus::Success);
            }
            writeln!(out, "{table}")?;
            writeln!(out, "{n} rows")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn io(e: csv::Error) -> CliError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => CliError::Io(e),
        other => CliError::msg(format!("{other:?}")),
    }
}

fn csv_fields(r: &Row) -> Vec<String> {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        r.id.to_string(),
        r.run_id.to_string(),
        r.at.clone(),
        r.app.clone(),
        r.resource.clone(),
        r.action.clone(),
        o(&r.source_id),
        o(&r.user_name),
        o(&r.email),
        o(&r.group_name),
        o(&r.scim_id),
        r.outcome.clone(),
        r.http_status.map(|s| s.to_string()).unwrap_or_default(),
        o(&r.scim_type),
        o(&r.detail),
        r.attempts.to_string(),
        r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
    ]
}

fn runs(
    store: &Store,
    app: Option<&str>,
    limit: u64,
    format: ReportFormat,
    printer: &Printer,
) -> Result<ExitStatus, CliError> {
    let rows = report::runs(store.conn(), app, limit).map_err(|e| CliError::msg(e.to_string()))?;
    match format {
        ReportFormat::Json => printer.out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).expect("serializable")
        ))?,
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record([
                "id",
                "app",
                "command",
                "reconcile",
                "started_at",
                "finished_at",
                "status",
                "actions",
                "applied",
                "failed",
                "skipped",
                "invalid",
                "held",
                "requests",
                "detail",
            ])
            .map_err(io)?;
            for r in &rows {
                w.write_record([
                    r.id.to_string(),
                    r.app.clone(),
                    r.command.clone(),
                    r.reconcile.to_string(),
                    r.started_at.clone(),
                    r.finished_at.clone().unwrap_or_default(),
                    r.status.clone(),
                    r.actions.to_string(),
                    r.applied.to_string(),
                    r.failed.to_string(),
                    r.skipped.to_string(),
                    r.invalid.to_string(),
                    r.held.to_string(),
                    r.requests.to_string(),
                    r.detail.clone().unwrap_or_default(),
                ])
                .map_err(io)?;
            }
            let bytes = w.into_inner().map_err(|e| CliError::msg(e.to_string()))?;
            printer.out(&String::from_utf8_lossy(&bytes))?;
        }
        ReportFormat::Table => {
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::ASCII_MARKDOWN);
            table.set_header([
                "run",
                "app",
                "started",
                "full read",
                "status",
                "applied",
                "failed",
                "skipped",
                "invalid",
                "requests",
            ]);
            for r in &rows {
                table.add_row([
                    r.id.to_string(),
                    r.app.clone(),
                    r.started_at.clone(),
                    if r.reconcile { "yes" } else { "no" }.to_owned(),
                    r.status.clone(),
                    r.applied.to_string(),
                    r.failed.to_string(),
                    r.skipped.to_string(),
                    r.invalid.to_string(),
                    r.requests.to_string(),
                ]);
            }
            printer.out(&format!("{table}\n"))?;
        }
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_parses_both_forms() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_when("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(
            parse_when("2026-11-23T10:00:00Z", now).unwrap(),
            1_795_428_000_000
        );
        assert!(parse_when("yesterday", now).is_err());
    }
}
