//! Where output goes: data on stdout, people's messages on stderr.

use std::io::{IsTerminal, Write};

use super::ColorChoice;

/// Writes command output; the only place that touches stdout and stderr.
#[derive(Clone, Debug)]
pub struct Printer {
    /// Colour on stdout.
    pub color: bool,
    /// Suppress informational stderr lines.
    pub quiet: bool,
    /// Draw progress bars on stderr (a terminal, not `--quiet`, text logs).
    pub progress: bool,
}

impl Printer {
    /// Decide colour from the choice, `NO_COLOR` and whether stdout is a terminal.
    pub fn new(choice: ColorChoice, quiet: bool) -> Printer {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        };
        Printer {
            color,
            quiet,
            progress: false,
        }
    }

    /// Progress bars on stderr when it is a terminal, unless `--quiet` or JSON logs.
    pub fn with_progress(mut self, json_logs: bool) -> Printer {
        self.progress = !self.quiet && !json_logs && std::io::stderr().is_terminal();
        self
    }

    /// A progress bar on stderr (hidden when progress is off). Its length is
    /// set by the caller as it learns it.
    pub fn bar(&self, what: &str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let template = if self.color {
            "{msg:>15} [{bar:30.cyan/blue}] {pos}/{len} ({elapsed})"
        } else {
            "{msg:>15} [{bar:30}] {pos}/{len} ({elapsed})"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }

    /// A printer without colour (tests, the demo's embedded runs).
    pub fn plain() -> Printer {
        Printer {
            color: false,
            quiet: false,
            progress: false,
        }
    }

    /// Write data to stdout.
    pub fn out(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Write an informational line to stderr (not with --quiet).
    pub fn info(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }

    /// Write a warning or error line to stderr (always).
    pub fn warn(&self, line: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
