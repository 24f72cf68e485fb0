//! The exit-code table, in one place.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done: every action applied, nothing to do, or (`plan --check`) no changes |
//! | 1 | finished, but some actions failed or were skipped, some source records were invalid, or the run was interrupted; or `plan --check` found changes |
//! | 2 | could not run: config, source, API key, store, target unreachable or refusing the key |

use std::process::ExitCode;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: done.
    Success,
    /// 1: finished, but with failed or skipped actions, invalid source
    /// records, or an interruption; or `plan --check` found changes.
    Failure,
    /// 2: could not run.
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Error => 2,
        })
    }
}
