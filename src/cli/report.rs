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
    /// One run: its times, duration, status and counts, then its outcomes.
    Show(Box<ShowArgs>),
    /// Everything that ever happened to one person (source id, userName or
    /// email), newest first, across runs and targets.
    User(Box<UserArgs>),
    /// Failed outcomes grouped by reason, largest group first.
    Failures(Box<FailuresArgs>),
    /// Delete runs (and their outcome rows) older than a span.
    Prune(Box<PruneArgs>),
    /// Write a self-contained HTML report (chart, outcomes, failures, searchable table).
    Html(Box<super::html::HtmlArgs>),
}

/// `--db` for the report views.
#[derive(Debug, Args)]
pub struct DbArg {
    /// The store file (default: the one named in the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// `report show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Run id (see `report runs`).
    pub run: i64,
    /// Outcome: applied, failed, skipped, invalid, held.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    #[command(flatten)]
    db: DbArg,
}

/// `report user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// Source id, userName or email (case-insensitive).
    pub id: String,
    /// Target name.
    #[arg(long)]
    pub app: Option<String>,
    /// From: RFC 3339 time or a span back from now.
    #[arg(long)]
    pub since: Option<String>,
    /// Until: RFC 3339 time or a span back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// Outcome: applied, failed, skipped, invalid, held.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Action verb.
    #[arg(long)]
    pub action: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    #[command(flatten)]
    db: DbArg,
}

/// `report failures`.
#[derive(Debug, Args)]
pub struct FailuresArgs {
    /// Target name.
    #[arg(long)]
    pub app: Option<String>,
    /// From: RFC 3339 time or a span back from now.
    #[arg(long)]
    pub since: Option<String>,
    /// Until: RFC 3339 time or a span back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// Action verb.
    #[arg(long)]
    pub action: Option<String>,
    /// Group these outcomes instead: skipped, invalid, held.
    #[arg(long, default_value = "failed")]
    pub outcome: String,
    /// At most this many groups.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    #[command(flatten)]
    db: DbArg,
}

/// `report prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove runs that ended more than this long ago (`90d`, `12h`).
    #[arg(long, value_name = "SPAN")]
    pub older_than: String,
    /// Then VACUUM the file to give the space back to the file system
    /// (otherwise SQLite reuses the freed pages).
    #[arg(long)]
    pub vacuum: bool,
    #[command(flatten)]
    db: DbArg,
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

/// Open an existing store (`--db`, or the config's) for the report views.
pub(super) fn open_existing(config: &Path, db: Option<PathBuf>) -> Result<Store, CliError> {
    let path = store_path(config, db)?;
    if !path.exists() {
        return Err(CliError::msg(format!(
            "no store at {}: nothing has been synced yet",
            path.display()
        )));
    }
    Store::open(&path).map_err(|e| CliError::msg(e.to_string()))
}

const OUTCOMES: [&str; 5] = ["applied", "failed", "skipped", "invalid", "held"];

fn check_outcome(o: Option<&str>) -> Result<(), CliError> {
    match o {
        Some(o) if !OUTCOMES.contains(&o) => Err(CliError::msg(format!(
            "--outcome `{o}`: expected one of {}",
            OUTCOMES.join(", ")
        ))),
        _ => Ok(()),
    }
}

fn when(s: Option<&str>, now: i64) -> Result<Option<i64>, CliError> {
    s.map(|s| parse_when(s, now))
        .transpose()
        .map_err(CliError::msg)
}

/// Run `report`.
pub fn report(config: &Path, args: ReportArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    match args.view {
        Some(View::Show(a)) => return show(&open_existing(config, a.db.db.clone())?, *a, printer),
        Some(View::User(a)) => return user(&open_existing(config, a.db.db.clone())?, *a, printer),
        Some(View::Failures(a)) => {
            return failures(&open_existing(config, a.db.db.clone())?, *a, printer);
        }
        Some(View::Prune(a)) => return prune_command(config, *a, printer),
        Some(View::Html(a)) => return super::html::html(config, *a, printer),
        _ => {}
    }
    let store = open_existing(config, args.db.clone())?;
    if let Some(View::Runs { limit, format }) = args.view {
        return runs(&store, args.app.as_deref(), limit, format, printer);
    }
    let now = now_ms();
    check_outcome(args.outcome.as_deref())?;
    let filter = Filter {
        user: args.user,
        app: args.app,
        since_ms: when(args.since.as_deref(), now)?,
        until_ms: when(args.until.as_deref(), now)?,
        outcome: args.outcome,
        run: args.run,
        action: args.action,
        limit: args.limit,
        newest_first: false,
    };
    rows_out(&store, &filter, args.format, printer)
}

/// Write the rows a filter matches, streaming: one row at a time from the
/// SQLite cursor to stdout for JSON and CSV (nothing is collected, no cap).
fn rows_out(
    store: &Store,
    filter: &Filter,
    format: ReportFormat,
    printer: &Printer,
) -> Result<ExitStatus, CliError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(COLUMNS).map_err(io)?;
            report::query::<CliError>(store.conn(), filter, |r| {
                w.write_record(csv_fields(&r)).map_err(io)
            })?;
            w.flush()?;
        }
        ReportFormat::Json => {
            out.write_all(b"[")?;
            let mut first = true;
            report::query::<CliError>(store.conn(), filter, |r| {
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
            report::query::<CliError>(store.conn(), filter, |r| {
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

/// Human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(super) fn human_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

fn show(store: &Store, a: ShowArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    check_outcome(a.outcome.as_deref())?;
    let Some(run) = report::run(store.conn(), a.run)? else {
        return Err(CliError::msg(format!(
            "no run {} in the store (see `scimsync report runs`)",
            a.run
        )));
    };
    let filter = Filter {
        run: Some(a.run),
        outcome: a.outcome,
        ..Filter::default()
    };
    match a.format {
        ReportFormat::Json => {
            // One document: the run, then its outcomes streamed into "outcomes".
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let head = serde_json::to_string(&run).map_err(|e| CliError::msg(e.to_string()))?;
            write!(out, "{{\"run\": {head},\n\"outcomes\": [")?;
            let mut first = true;
            report::query::<CliError>(store.conn(), &filter, |r| {
                out.write_all(if first { b"\n  " } else { b",\n  " })?;
                first = false;
                serde_json::to_writer(&mut out, &r).map_err(|e| CliError::msg(e.to_string()))?;
                Ok(())
            })?;
            out.write_all(b"\n]}\n")?;
            out.flush()?;
            Ok(ExitStatus::Success)
        }
        ReportFormat::Csv => rows_out(store, &filter, ReportFormat::Csv, printer),
        ReportFormat::Table => {
            let mut head = format!(
                "Run {} ({} on {}{})\n  started   {}\n  finished  {}\n  duration  {}\n  status    {}\n  outcomes  {} applied, {} failed, {} skipped, {} invalid, {} held ({} in all)\n  requests  {} ({} retries, {} throttled)\n",
                run.id,
                run.command,
                run.app,
                if run.reconcile { ", full read" } else { "" },
                run.started_at,
                run.finished_at.as_deref().unwrap_or("-"),
                run.duration_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                run.status,
                run.applied,
                run.failed,
                run.skipped,
                run.invalid,
                run.held,
                run.actions + run.invalid,
                run.requests,
                run.retries,
                run.throttled,
            );
            if let Some(d) = &run.detail {
                head.push_str(&format!("  detail    {d}\n"));
            }
            head.push('\n');
            printer.out(&head)?;
            rows_out(store, &filter, ReportFormat::Table, printer)
        }
    }
}

fn user(store: &Store, a: UserArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    check_outcome(a.outcome.as_deref())?;
    let now = now_ms();
    let filter = Filter {
        user: Some(a.id.clone()),
        app: a.app,
        since_ms: when(a.since.as_deref(), now)?,
        until_ms: when(a.until.as_deref(), now)?,
        outcome: a.outcome,
        action: a.action,
        limit: a.limit,
        newest_first: true,
        run: None,
    };
    if a.format == ReportFormat::Table && report::count(store.conn(), &filter)? == 0 {
        return Err(CliError::msg(format!(
            "nothing recorded about `{}` (matched on source id, userName and email)",
            a.id
        )));
    }
    rows_out(store, &filter, a.format, printer)
}

fn failures(store: &Store, a: FailuresArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    check_outcome(Some(&a.outcome))?;
    let now = now_ms();
    let groups = report::failures(
        store.conn(),
        &report::FailureFilter {
            app: a.app,
            since_ms: when(a.since.as_deref(), now)?,
            until_ms: when(a.until.as_deref(), now)?,
            action: a.action,
            outcome: Some(a.outcome.clone()),
            limit: a.limit,
        },
    )?;
    match a.format {
        ReportFormat::Json => printer.out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&groups).expect("serializable")
        ))?,
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record([
                "count",
                "subjects",
                "action",
                "http_status",
                "scim_type",
                "reason",
                "first_seen",
                "last_seen",
                "examples",
            ])
            .map_err(io)?;
            for g in &groups {
                w.write_record([
                    g.count.to_string(),
                    g.subjects.to_string(),
                    g.action.clone(),
                    g.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    g.scim_type.clone().unwrap_or_default(),
                    g.reason.clone(),
                    g.first_seen.clone(),
                    g.last_seen.clone(),
                    g.examples.join("; "),
                ])
                .map_err(io)?;
            }
            let bytes = w.into_inner().map_err(|e| CliError::msg(e.to_string()))?;
            printer.out(&String::from_utf8_lossy(&bytes))?;
        }
        ReportFormat::Table => {
            if groups.is_empty() {
                printer.info(&format!("No {} outcomes.", a.outcome));
                return Ok(ExitStatus::Success);
            }
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::ASCII_MARKDOWN);
            table.set_header([
                "count",
                "who",
                "action",
                "http",
                "reason",
                "first seen",
                "last seen",
                "examples",
            ]);
            let total: u64 = groups.iter().map(|g| g.count).sum();
            for g in &groups {
                let mut reason = g.reason.clone();
                if let Some(t) = &g.scim_type {
                    reason = format!("[{t}] {reason}");
                }
                table.add_row([
                    g.count.to_string(),
                    g.subjects.to_string(),
                    g.action.clone(),
                    g.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    reason,
                    g.first_seen.clone(),
                    g.last_seen.clone(),
                    g.examples.join(", "),
                ]);
            }
            printer.out(&format!(
                "{table}\n{total} {} outcomes in {} groups\n",
                a.outcome,
                groups.len()
            ))?;
        }
    }
    Ok(ExitStatus::Success)
}

fn prune_command(config: &Path, a: PruneArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    let span =
        parse_duration(&a.older_than).map_err(|m| CliError::msg(format!("--older-than: {m}")))?;
    let path = store_path(config, a.db.db)?;
    if !path.exists() {
        return Err(CliError::msg(format!(
            "no store at {}: nothing to prune",
            path.display()
        )));
    }
    // Under the run lock: never while a sync writes to the same store.
    let _lock = crate::store::lock::RunLock::acquire(&path).map_err(CliError::msg)?;
    let store = Store::open(&path).map_err(|e| CliError::msg(e.to_string()))?;
    let cutoff = now_ms() - span.as_millis() as i64;
    let pruned = report::prune(store.conn(), cutoff)?;
    printer.out(&format!(
        "Removed {} runs and {} outcome rows older than {} (ended before {}).\n",
        pruned.runs,
        pruned.outcomes,
        a.older_than,
        report::format_ms(cutoff)
    ))?;
    if a.vacuum {
        store.conn().execute_batch("VACUUM")?;
        printer.info("Store vacuumed.");
    }
    Ok(ExitStatus::Success)
}

/// `[store] retention`: prune after a sync run, under the run lock. A failure
/// here is reported but never fails the run that just finished.
pub(super) fn apply_retention(settings: &crate::config::Settings, printer: &Printer) {
    let Some(span) = settings.retention else {
        return;
    };
    let result = (|| -> Result<report::Pruned, String> {
        let _lock = crate::store::lock::RunLock::acquire(&settings.store_path)?;
        let store = Store::open(&settings.store_path).map_err(|e| e.to_string())?;
        report::prune(store.conn(), now_ms() - span.as_millis() as i64).map_err(|e| e.to_string())
    })();
    match result {
        Ok(p) if p.runs > 0 => printer.info(&format!(
            "Retention: removed {} runs and {} outcome rows older than {}.",
            p.runs,
            p.outcomes,
            span_text(span)
        )),
        Ok(_) => {}
        Err(e) => printer.warn(&format!("warning: retention was not applied: {e}")),
    }
}

/// A span in its largest whole unit: `90d`, `36h`, `90s`.
fn span_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
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
                "duration_ms",
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
                    r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
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
                "duration",
                "status",
                "applied",
                "failed",
                "skipped",
                "invalid",
                "held",
                "requests",
            ]);
            for r in &rows {
                table.add_row([
                    r.id.to_string(),
                    r.app.clone(),
                    r.started_at.clone(),
                    if r.reconcile { "yes" } else { "no" }.to_owned(),
                    r.duration_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                    r.status.clone(),
                    r.applied.to_string(),
                    r.failed.to_string(),
                    r.skipped.to_string(),
                    r.invalid.to_string(),
                    r.held.to_string(),
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
