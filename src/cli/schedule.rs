//! `sync --every DURATION` and `sync --cron EXPR`: a long-lived job.
//!
//! One run per tick, never two at once (the loop waits for a run to end before
//! it computes the next tick; ticks missed meanwhile are skipped), a small
//! jitter, a clean stop on SIGTERM/SIGINT. A failed run does not stop the
//! schedule: after repeated failures the runs are spaced out to 2, 4, then 8
//! intervals (for a cron schedule: every 2nd, 4th, then 8th occurrence). A run
//! that cannot even start still gets a run row (status `failed`, the reason in
//! `detail`) so the report says why nothing happened.
//!
//! Cron expressions have five fields (minute hour day-of-month month
//! day-of-week) and are read in the machine's local time zone (`TZ` is
//! honoured); a sixth, leading seconds field is accepted too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Zoned;
use tokio_util::sync::CancellationToken;

use super::{CliError, PlanOptions, Printer, load_settings, sync_then_retain};
use crate::exit::ExitStatus;
use crate::store::{RunCounts, Store};

/// When runs happen.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every interval.
    Every(Duration),
    /// At each occurrence of a cron expression.
    Cron(Box<croner::Cron>),
}

/// Parse a cron expression (5 fields, or 6 with leading seconds).
pub fn parse_cron(expr: &str) -> Result<Schedule, String> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))?;
    // One that never fires (30 February) is refused up front.
    cron.find_next_occurrence(&Zoned::now(), false)
        .map_err(|e| format!("`{expr}` never fires: {e}"))?;
    Ok(Schedule::Cron(Box::new(cron)))
}

/// How many ticks to wait after `failures` failed runs in a row: 1, 2, 4, 8.
pub fn backoff_factor(failures: u32) -> u32 {
    1u32 << failures.saturating_sub(1).min(3)
}

fn jitter(gap: Duration, unit: f64) -> Duration {
    // Up to 5 % of the gap between ticks, at most 30 s.
    let cap = (gap / 20).min(Duration::from_secs(30));
    cap.mul_f64(unit.clamp(0.0, 1.0))
}

impl Schedule {
    /// How long to wait from `now` before the next run, after `failures`
    /// failed runs in a row; `unit` in [0, 1] picks the jitter. Pure.
    pub fn next_wait(&self, now: &Zoned, failures: u32, unit: f64) -> Duration {
        let factor = backoff_factor(failures);
        match self {
            Schedule::Every(interval) => {
                let base = interval.saturating_mul(factor);
                base + jitter(base, unit)
            }
            Schedule::Cron(cron) => {
                let mut at = now.clone();
                let mut previous = None;
                for _ in 0..factor {
                    match cron.find_next_occurrence(&at, false) {
                        Ok(next) => {
                            previous = Some(at);
                            at = next;
                        }
                        // No further occurrence (checked at parse time; the
                        // year limit only): wait a day and look again.
                        Err(_) => return Duration::from_secs(86_400),
                    }
                }
                let base = duration_between(now, &at);
                // The gap to the occurrence before: the tick's own period.
                let gap = previous
                    .filter(|p| p != now)
                    .map(|p| duration_between(&p, &at))
                    .unwrap_or_else(|| {
                        cron.find_next_occurrence(&at, false)
                            .map(|n| duration_between(&at, &n))
                            .unwrap_or(base)
                    });
                base + jitter(gap, unit)
            }
        }
    }

    /// For messages: `every 30m` or `cron "0 * * * *"`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(d) => format!("every {}s", d.as_secs()),
            Schedule::Cron(c) => format!("cron \"{}\"", c.pattern),
        }
    }
}

fn duration_between(from: &Zoned, to: &Zoned) -> Duration {
    let ms = to.timestamp().as_millisecond() - from.timestamp().as_millisecond();
    Duration::from_millis(ms.max(0) as u64)
}

/// A number in [0, 1) that differs between processes and runs.
fn jitter_unit() -> f64 {
    let x = u64::from(std::process::id())
        .wrapping_mul(2_654_435_761)
        .wrapping_add(crate::store::now_ms() as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Record a run that could not start (run row `failed` with the reason; the
/// metrics file says so too). Best effort: a store that cannot be opened is
/// only logged.
fn record_failed_start(settings: &crate::config::Settings, printer: &Printer, reason: &str) {
    let result = (|| -> Result<(), String> {
        let store = Store::open(&settings.store_path).map_err(|e| e.to_string())?;
        let run = store
            .begin_run(&settings.app, "sync", false)
            .map_err(|e| e.to_string())?;
        let counts = RunCounts::default();
        store
            .finish_run(
                run,
                "failed",
                &counts,
                Some(&format!("the scheduled run could not start: {reason}")),
            )
            .map_err(|e| e.to_string())?;
        if let Some(path) = &settings.metrics_file {
            let m = super::metrics::RunMetrics {
                app: &settings.app,
                run_id: Some(run),
                status: "failed",
                duration: Duration::ZERO,
                counts: &counts,
                http: Default::default(),
                transport_errors: 0,
            };
            super::metrics::write_for_run(path, &store, &m)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        printer.warn(&format!("warning: cannot record the failed run: {e}"));
    }
}

/// Run `sync` on a schedule until a stop signal. The config is read again
/// at every tick, so an edit takes effect at the next run.
pub async fn run_scheduled(
    config: &Path,
    metrics_file: Option<PathBuf>,
    printer: &Printer,
    opts: PlanOptions,
    schedule: Schedule,
    cancel: CancellationToken,
) -> Result<ExitStatus, CliError> {
    let mut failures: u32 = 0;
    // A cron job waits for its first tick; an interval job runs at once.
    if let Schedule::Cron(_) = &schedule {
        let wait = schedule.next_wait(&Zoned::now(), 0, jitter_unit());
        printer.info(&format!(
            "{}: first sync in {}s",
            schedule.describe(),
            wait.as_secs()
        ));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Ok(ExitStatus::Success),
        }
    }
    loop {
        let result = match load_settings(config) {
            Ok(mut settings) => {
                if metrics_file.is_some() {
                    settings.metrics_file = metrics_file.clone();
                }
                let r = sync_then_retain(&settings, printer, opts, cancel.clone()).await;
                if let Err(e) = &r
                    && !matches!(e, CliError::Io(_))
                {
                    record_failed_start(&settings, printer, &e.to_string());
                }
                r
            }
            Err(e) => Err(e),
        };
        let last = match result {
            Ok(status) => status,
            Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Err(CliError::Io(e));
            }
            Err(e) => {
                printer.warn(&format!("error: {e}"));
                ExitStatus::Error
            }
        };
        if cancel.is_cancelled() {
            return Ok(last);
        }
        failures = if last == ExitStatus::Success {
            0
        } else {
            failures + 1
        };
        let wait = schedule.next_wait(&Zoned::now(), failures, jitter_unit());
        printer.info(&format!(
            "next sync in {}s{}",
            wait.as_secs(),
            if failures > 0 {
                format!(" ({failures} failed runs in a row)")
            } else {
                String::new()
            }
        ));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Ok(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        // A fixed zone keeps the tests independent of the machine's TZ.
        format!("{s}[UTC]").parse().unwrap()
    }

    fn cron(expr: &str) -> Schedule {
        parse_cron(expr).unwrap()
    }

    #[test]
    fn every_waits_one_interval_then_backs_off_to_eight() {
        let s = Schedule::Every(Duration::from_secs(60));
        let now = at("2026-03-01T10:00:00");
        let waits: Vec<u64> = (0..6)
            .map(|f| s.next_wait(&now, f, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [60, 60, 120, 240, 480, 480]);
    }

    #[test]
    fn jitter_is_at_most_five_percent_and_thirty_seconds() {
        let s = Schedule::Every(Duration::from_secs(600));
        let now = at("2026-03-01T10:00:00");
        assert_eq!(s.next_wait(&now, 0, 1.0), Duration::from_secs(630));
        let s = Schedule::Every(Duration::from_secs(3600));
        assert_eq!(s.next_wait(&now, 0, 1.0), Duration::from_secs(3630));
        assert_eq!(s.next_wait(&now, 0, 0.5), Duration::from_secs(3615));
    }

    #[test]
    fn cron_waits_until_the_next_occurrence() {
        let s = cron("*/15 * * * *");
        assert_eq!(
            s.next_wait(&at("2026-03-01T10:07:30"), 0, 0.0),
            Duration::from_secs(7 * 60 + 30)
        );
        // Exactly on a tick: the next one, not this one.
        assert_eq!(
            s.next_wait(&at("2026-03-01T10:15:00"), 0, 0.0),
            Duration::from_secs(15 * 60)
        );
    }

    #[test]
    fn cron_backoff_skips_occurrences() {
        let s = cron("0 * * * *");
        let now = at("2026-03-01T10:30:00");
        let waits: Vec<u64> = (0..5)
            .map(|f| s.next_wait(&now, f, 0.0).as_secs() / 60)
            .collect();
        // 30 min to 11:00, then 2, 4, 8 occurrences ahead.
        assert_eq!(waits, [30, 30, 90, 210, 450]);
    }

    #[test]
    fn cron_jitter_follows_the_period_of_the_schedule() {
        // Hourly: 5 % of an hour is 180 s, capped at 30 s.
        let s = cron("0 * * * *");
        assert_eq!(
            s.next_wait(&at("2026-03-01T10:59:00"), 0, 1.0),
            Duration::from_secs(60 + 30)
        );
        // Every minute: at most 3 s.
        let s = cron("* * * * *");
        assert_eq!(
            s.next_wait(&at("2026-03-01T10:00:20"), 0, 1.0),
            Duration::from_secs(40 + 3)
        );
    }

    #[test]
    fn cron_days_of_week_and_months() {
        // 2026-03-01 is a Sunday; weekdays at 06:00.
        let s = cron("0 6 * * 1-5");
        assert_eq!(
            s.next_wait(&at("2026-03-01T07:00:00"), 0, 0.0),
            Duration::from_secs(23 * 3600)
        );
    }

    #[test]
    fn an_optional_seconds_field_is_accepted() {
        let s = cron("*/5 * * * * *");
        assert_eq!(
            s.next_wait(&at("2026-03-01T10:00:01"), 0, 0.0),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_expression() {
        for bad in ["", "61 * * * *", "* * *", "not cron", "0 0 30 2 *"] {
            let e = parse_cron(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }
}
