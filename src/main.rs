//! The `scimsync` binary: parse arguments, set up logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use scimsync::cli::{self, Cli, CliError};
use scimsync::exit::ExitStatus;

// A run builds and frees millions of small strings and maps (people,
// attributes, memberships), from several threads; mimalloc does that with
// far less time in the allocator than the system's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.verbose, cli.quiet, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error(&CliError::msg(format!(
                "cannot start the async runtime: {e}"
            )));
            return ExitStatus::Error.into();
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(status) => status.into(),
        // A closed pipe (`scimsync report | head`) is not an error.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitStatus::Success.into()
        }
        Err(e) => {
            report_error(&e);
            ExitStatus::Error.into()
        }
    }
}

#[allow(clippy::print_stderr)]
fn report_error(e: &CliError) {
    eprintln!("error: {e}");
}
