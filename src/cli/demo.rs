//! `scimsync demo`: the newcomer's first command. Starts the sandbox in
//! process, syncs the example directory (shipped in `fixtures/demo`, compiled
//! in) into it, changes the directory, syncs again, and shows the report —
//! on an embedded SQLite file, with nothing to install.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::pipeline::{PlanOptions, plan_command, sync_command};
use super::report::{ReportArgs, ReportFormat, View, report};
use super::{CliError, Format, Printer, load_settings};
use crate::exit::ExitStatus;
use crate::sandbox::{Sandbox, SandboxConfig};

const USERS: &str = include_str!("../../fixtures/demo/users.csv");
const GROUPS: &str = include_str!("../../fixtures/demo/groups.csv");
const CONFIG: &str = include_str!("../../fixtures/demo/scimsync.toml");

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's files (config, CSV, SQLite report) in this folder
    /// instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn write(path: PathBuf, text: &str) -> Result<(), CliError> {
    std::fs::write(&path, text)
        .map_err(|e| CliError::msg(format!("writing {}: {e}", path.display())))
}

/// Run the demo.
pub async fn demo(args: DemoArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    let temp;
    let dir = match args.dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let running = Sandbox::start(SandboxConfig::default()).await?;
    let config = CONFIG.replace(
        "http://127.0.0.1:8089/scim/directory/00000000-0000-4000-8000-000000000000",
        &running.base_url(),
    );
    write(dir.join("scimsync.toml"), &config)?;
    write(dir.join("users.csv"), USERS)?;
    write(dir.join("groups.csv"), GROUPS)?;
    write(
        dir.join("api-key"),
        &format!("{}\n", running.sandbox.config().api_key),
    )?;
    let config_path = dir.join("scimsync.toml");
    let settings = load_settings(&config_path)?;
    let text = PlanOptions {
        reconcile: false,
        format: Format::Text,
        check: false,
        allow_deprovision: false,
        fingerprint: false,
    };
    let banner = |s: &str| printer.out(&format!("\n=== {s} ===\n\n"));

    printer.out(&format!(
        "scimsync demo: an Atlassian-like SCIM sandbox is running at {}\n\
         The example directory has 12 people: one with a bad email, one without a family name,\n\
         one contractor outside the authorized domain, one marked inactive.\n\
         Files (config, CSV, SQLite report) are in {}\n",
        running.base_url(),
        dir.display()
    ))?;

    banner("1. scimsync plan  (dry run: nothing is sent)")?;
    plan_command(&settings, printer, text).await?;
    banner("2. scimsync sync")?;
    sync_command(&settings, printer, text, "demo", CancellationToken::new()).await?;

    banner("3. The directory changes: Grace gets a new title, Alan leaves; scimsync plan")?;
    let changed: String = USERS
        .lines()
        .filter(|l| !l.starts_with("1003,"))
        .map(|l| {
            if l.starts_with("1002,") {
                l.replace("Engineering Manager", "VP Engineering")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write(dir.join("users.csv"), &format!("{changed}\n"))?;
    plan_command(&settings, printer, text).await?;
    banner("4. scimsync sync")?;
    sync_command(&settings, printer, text, "demo", CancellationToken::new()).await?;
    banner("5. scimsync sync  (nothing left to do: no request is sent)")?;
    let before = running.sandbox.counts().total;
    sync_command(&settings, printer, text, "demo", CancellationToken::new()).await?;
    let after = running.sandbox.counts().total;
    printer.out(&format!(
        "(requests sent by that run: {})\n",
        after - before
    ))?;

    banner("6. scimsync report runs")?;
    report(
        &config_path,
        ReportArgs {
            db: None,
            user: None,
            app: None,
            since: None,
            until: None,
            outcome: None,
            run: None,
            action: None,
            limit: None,
            format: ReportFormat::Table,
            view: Some(View::Runs {
                limit: 10,
                format: ReportFormat::Table,
            }),
        },
        printer,
    )?;
    banner("7. scimsync report --user alan@example.com  (everything that happened to one person)")?;
    report(
        &config_path,
        ReportArgs {
            db: None,
            user: Some("alan@example.com".into()),
            app: None,
            since: None,
            until: None,
            outcome: None,
            run: None,
            action: None,
            limit: None,
            format: ReportFormat::Table,
            view: None,
        },
        printer,
    )?;
    banner("8. scimsync report --outcome invalid")?;
    report(
        &config_path,
        ReportArgs {
            db: None,
            user: None,
            app: None,
            since: None,
            until: None,
            outcome: Some("invalid".into()),
            run: Some(1),
            action: None,
            limit: None,
            format: ReportFormat::Table,
            view: None,
        },
        printer,
    )?;
    let counts = running.sandbox.counts();
    printer.out(&format!(
        "\nThe sandbox answered {} requests in all ({} writes). Next: copy fixtures/scimsync.example.toml, \
         point it at your directory, run `scimsync check`, then `scimsync plan`.\n",
        counts.total, counts.writes
    ))?;
    running.stop().await;
    Ok(ExitStatus::Success)
}
