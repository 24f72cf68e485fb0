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
        Printer { color, quiet }
    }

    /// A printer without colour (tests, the demo's embedded runs).
    pub fn plain() -> Printer {
        Printer {
            color: false,
            quiet: false,
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
