//! The command line: argument definitions, output, and the commands.
//!
//! `main` parses [`Cli`], calls [`run`], and maps the result to an exit code
//! ([`crate::exit`]). Commands write data (plans, reports) to stdout and
//! progress, warnings and errors to stderr.

mod check;
mod demo;
mod html;
mod import;
mod links;
pub mod metrics;
mod output;
mod pipeline;
mod report;
mod sandbox;
pub mod schedule;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use output::Printer;
pub use pipeline::{PlanOptions, apply_command, plan_command, plan_command_to, sync_command};

use crate::config::{ConfigError, Settings};
use crate::exit::ExitStatus;

/// Push a local directory (CSV/JSON) to a SCIM 2.0 target such as Atlassian Cloud.
#[derive(Debug, Parser)]
#[command(name = "scimsync", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "scimsync.toml",
        env = "SCIMSYNC_CONFIG",
        hide_env_values = true
    )]
    pub config: PathBuf,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no plan on stdout during `sync`.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour: auto (a terminal and no NO_COLOR), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Colour choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of data commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Test the connection: GET /ServiceProviderConfig and a one-item /Users read.
    Check,
    /// Dry run: show what `sync` would change, without sending any write.
    Plan(PlanArgs),
    /// Compute the plan and apply it.
    Sync(SyncArgs),
    /// Apply a plan saved with `plan --out`, exactly, if the source and the
    /// target have not changed since.
    Apply(ApplyArgs),
    /// Query the provisioning report.
    Report(report::ReportArgs),
    /// Run the built-in Atlassian-like SCIM test server on 127.0.0.1.
    Sandbox(sandbox::SandboxArgs),
    /// First steps: sync the example directory into an in-process sandbox.
    Demo(demo::DemoArgs),
    // --- links and import (issue 4) ---
    /// List, search, show, unlink and relink source <-> target account links.
    Links(links::LinksArgs),
    /// Read the whole target and link the accounts that match the source;
    /// list the ones that do not. Sends no write.
    Import(import::ImportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `scimsync man > scimsync.1`.
    Man,
}

/// `completions` options.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `apply` options.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file written by `plan --out`.
    pub plan: PathBuf,
    /// Approve destructive actions the guard holds in this plan (not needed
    /// when the plan was made with `plan --allow-deprovision`).
    #[arg(long)]
    pub allow_deprovision: bool,
    /// Output format of the plan and the run summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write Prometheus metrics of the run to this file (overrides `[metrics] file`).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// `plan` options.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Read the whole target first (otherwise the state last pushed is used,
    /// except on the first run and when the reconcile interval has passed).
    #[arg(long)]
    pub reconcile: bool,
    /// Exit 1 when there are changes (for CI checks).
    #[arg(long)]
    pub check: bool,
    /// Show the plan as `sync --allow-deprovision` would apply it (no guard).
    #[arg(long)]
    pub allow_deprovision: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also save the plan, with fingerprints of the source and the target
    /// state, for `scimsync apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `sync` options.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Read the whole target first and correct drift.
    #[arg(long)]
    pub reconcile: bool,
    /// Approve disables, deletes and member removals above the guard's
    /// thresholds (`[guard]` in the config) for this run.
    #[arg(long)]
    pub allow_deprovision: bool,
    /// Keep running: one sync every DURATION (`30m`, `1h`), with a small
    /// jitter, until SIGTERM/SIGINT. A failed run does not stop the schedule;
    /// repeated failures space the runs out (up to 8 intervals).
    #[arg(long, value_name = "DURATION", conflicts_with = "cron")]
    pub every: Option<String>,
    /// Keep running: one sync at each occurrence of a cron expression
    /// (`"*/30 * * * *"`: minute hour day-of-month month day-of-week, in the
    /// local time zone), same rules as `--every`.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Output format of the plan and the run summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write Prometheus metrics of each run to this file (overrides `[metrics] file`).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// Anything that stops a command from running (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration.
    #[error("config {path}: {source}")]
    Config {
        /// The config file.
        path: String,
        /// What is wrong.
        source: ConfigError,
    },
    /// Any other reason, already worded for the user.
    #[error("{0}")]
    Message(String),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for CliError {
    fn from(e: rusqlite::Error) -> Self {
        CliError::Message(format!("store: {e}"))
    }
}

impl CliError {
    /// A plain message.
    pub fn msg(m: impl Into<String>) -> Self {
        CliError::Message(m.into())
    }
}

/// Load the settings named by `--config`.
pub fn load_settings(path: &std::path::Path) -> Result<Settings, CliError> {
    Settings::load(path).map_err(|source| CliError::Config {
        path: path.display().to_string(),
        source,
    })
}

/// Set up logging on stderr.
pub fn init_logging(verbose: u8, quiet: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "warn,scimsync=info",
        (_, 2) => "warn,scimsync=debug",
        _ => "info,scimsync=trace",
    };
    let filter =
        EnvFilter::try_from_env("SCIMSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// One sync, then `[store] retention` (pruning never changes the run's exit status).
pub(crate) async fn sync_then_retain(
    settings: &Settings,
    printer: &Printer,
    opts: PlanOptions,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<ExitStatus, CliError> {
    let status = sync_command(settings, printer, opts, "sync", cancel).await?;
    report::apply_retention(settings, printer);
    Ok(status)
}

/// SIGINT or SIGTERM: stop dispatching, let requests in flight finish, record
/// every outcome, mark the run interrupted. A second signal exits at once (130).
async fn stop_on_signal(cancel: tokio_util::sync::CancellationToken, printer: Printer) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    for n in 0.. {
        #[cfg(unix)]
        let got = match term.as_mut() {
            Some(t) => tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = t.recv() => r.is_some(),
            },
            None => tokio::signal::ctrl_c().await.is_ok(),
        };
        #[cfg(not(unix))]
        let got = tokio::signal::ctrl_c().await.is_ok();
        if !got {
            return;
        }
        if n == 0 {
            printer.warn("interrupted: finishing the requests in flight and recording their outcomes (signal again to quit at once)");
            cancel.cancel();
        } else {
            printer.warn("interrupted twice: quitting now");
            std::process::exit(130);
        }
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitStatus, CliError> {
    let printer =
        Printer::new(cli.color, cli.quiet).with_progress(cli.log_format == LogFormat::Json);
    match cli.command {
        Command::Check => {
            let settings = load_settings(&cli.config)?;
            check::check(&settings, &printer).await
        }
        Command::Plan(args) => {
            let settings = load_settings(&cli.config)?;
            plan_command_to(
                &settings,
                &printer,
                PlanOptions {
                    reconcile: args.reconcile,
                    format: args.format,
                    check: args.check,
                    allow_deprovision: args.allow_deprovision,
                    fingerprint: false,
                },
                args.out.as_deref(),
            )
            .await
        }
        Command::Sync(args) => {
            let every = args
                .every
                .as_deref()
                .map(crate::config::parse_duration)
                .transpose()
                .map_err(|m| CliError::msg(format!("--every: {m}")))?;
            if every.is_some_and(|d| d.is_zero()) {
                return Err(CliError::msg("--every: the interval must be above zero"));
            }
            let cron = args
                .cron
                .as_deref()
                .map(schedule::parse_cron)
                .transpose()
                .map_err(|m| CliError::msg(format!("--cron: {m}")))?;
            let cancel = tokio_util::sync::CancellationToken::new();
            tokio::spawn(stop_on_signal(cancel.clone(), printer.clone()));
            let opts = PlanOptions {
                reconcile: args.reconcile,
                format: args.format,
                check: false,
                allow_deprovision: args.allow_deprovision,
                fingerprint: false,
            };
            let plan = every.map(schedule::Schedule::Every).or(cron);
            match plan {
                None => {
                    let mut settings = load_settings(&cli.config)?;
                    if args.metrics_file.is_some() {
                        settings.metrics_file = args.metrics_file;
                    }
                    sync_then_retain(&settings, &printer, opts, cancel).await
                }
                Some(plan) => {
                    schedule::run_scheduled(
                        &cli.config,
                        args.metrics_file,
                        &printer,
                        opts,
                        plan,
                        cancel,
                    )
                    .await
                }
            }
        }
        Command::Apply(args) => {
            let mut settings = load_settings(&cli.config)?;
            if args.metrics_file.is_some() {
                settings.metrics_file = args.metrics_file;
            }
            let cancel = tokio_util::sync::CancellationToken::new();
            tokio::spawn(stop_on_signal(cancel.clone(), printer.clone()));
            apply_command(
                &settings,
                &printer,
                &args.plan,
                args.allow_deprovision,
                args.format,
                cancel,
            )
            .await
        }
        Command::Report(args) => report::report(&cli.config, args, &printer),
        Command::Sandbox(args) => sandbox::sandbox(args, &printer).await,
        Command::Demo(args) => demo::demo(args, &printer).await,
        Command::Links(args) => links::links(&cli.config, args, &printer).await,
        Command::Import(args) => {
            let settings = load_settings(&cli.config)?;
            import::import(&settings, args, &printer).await
        }
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "scimsync", &mut buf);
            printer.out(&String::from_utf8_lossy(&buf))?;
            Ok(ExitStatus::Success)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            printer.out(&man_page(cmd)?)?;
            Ok(ExitStatus::Success)
        }
    }
}

/// The man page: `scimsync(1)` with every subcommand's options in its own
/// section (from the clap definitions).
fn man_page(cmd: clap::Command) -> Result<String, CliError> {
    let mut buf = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    man.render_subcommands_section(&mut buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        buf.extend_from_slice(format!(".SH \"SCIMSYNC {}\"\n", name.to_uppercase()).as_bytes());
        buf.extend_from_slice(format!("{}\n.PP\n", roff_escape(&about)).as_bytes());
        let sub_man = clap_mangen::Man::new(sub.clone().bin_name(format!("scimsync {name}")));
        let mut part = Vec::new();
        sub_man.render_synopsis_section(&mut part)?;
        sub_man.render_options_section(&mut part)?;
        // Demote the sub-page's section headings to subsections.
        let text = String::from_utf8_lossy(&part).replace(".SH ", ".SS ");
        buf.extend_from_slice(text.as_bytes());
    }
    man.render_version_section(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}
