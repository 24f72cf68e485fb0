//! `scimsync-gen`: write a synthetic directory (users.csv + groups.csv) for
//! benchmarks, deterministic by seed.
//!
//! ```sh
//! cargo run --release --bin scimsync-gen -- --users 100000 --seed 7 --out day1
//! cargo run --release --bin scimsync-gen -- --users 100000 --seed 7 --day-of-changes 0.01 --out day2
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use scimsync::datagen::{self, Spec};

/// Write a synthetic directory for benchmarks: users.csv and groups.csv in the
/// format the `csv` source reads. The same options always give the same files.
#[derive(Debug, Parser)]
#[command(name = "scimsync-gen", version)]
struct Args {
    /// People.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Groups (default: a quarter of the people, like Atlassian's limits of
    /// 1 M users and 250 k groups).
    #[arg(long)]
    groups: Option<usize>,
    /// Average group memberships per person (8: 8 M memberships at 1 M users).
    #[arg(long, default_value_t = 8.0)]
    memberships_per_user: f64,
    /// Zipf exponent of group sizes: higher means a few bigger groups.
    #[arg(long, default_value_t = 1.0)]
    skew: f64,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write the next day's directory instead: this share of the people
    /// changed (0.01 = 1 %: hires, leavers, moves and attribute edits in equal
    /// parts, plus group renames).
    #[arg(long, value_name = "RATE")]
    day_of_changes: Option<f64>,
    /// Output folder (created when missing).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut err = std::io::stderr();
    if let Some(r) = args.day_of_changes
        && !(0.0..=1.0).contains(&r)
    {
        let _ = writeln!(
            err,
            "error: --day-of-changes takes a share between 0 and 1, got {r}"
        );
        return ExitCode::from(2);
    }
    if !(args.memberships_per_user >= 0.0 && args.skew >= 0.0) {
        let _ = writeln!(
            err,
            "error: --memberships-per-user and --skew must be 0 or more"
        );
        return ExitCode::from(2);
    }
    let spec = Spec {
        users: args.users,
        groups: args.groups.unwrap_or((args.users / 4).max(1)),
        memberships_per_user: args.memberships_per_user,
        skew: args.skew,
        seed: args.seed,
    };
    let mut dir = datagen::generate(&spec);
    let mut line = String::new();
    if let Some(rate) = args.day_of_changes {
        let (next, s) = datagen::day_of_changes(&dir, rate, args.seed);
        dir = next;
        line = format!(
            "; day of changes: {} hires, {} leavers, {} moves, {} edits, {} group renames",
            s.hires, s.leavers, s.moves, s.edits, s.renames
        );
    }
    if let Err(e) =
        std::fs::create_dir_all(&args.out).and_then(|()| datagen::write_csv(&dir, &args.out))
    {
        let _ = writeln!(err, "error: writing to {}: {e}", args.out.display());
        return ExitCode::from(2);
    }
    let _ = writeln!(
        std::io::stdout(),
        "{}: {} users, {} groups, {} memberships{line}",
        args.out.display(),
        dir.users.len(),
        dir.groups.len(),
        datagen::membership_count(&dir)
    );
    ExitCode::SUCCESS
}
