//! The Prometheus metrics file: written after each run, for node_exporter's
//! textfile collector (`[metrics] file` or `--metrics-file`).
//!
//! Every series describes the **last run** (gauges): outcomes by resource,
//! action and outcome, HTTP answers by status code, requests, retries, 429s,
//! duration, run id, status, when it finished, and when a run last
//! succeeded (carried over from the previous file and the store). The file is
//! written to a temporary file beside it and renamed, so the collector never
//! reads half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::store::{RunCounts, Store};

/// What one run reports.
pub struct RunMetrics<'a> {
    /// Target name (label `app`).
    pub app: &'a str,
    /// The run's id (none when it could not start).
    pub run_id: Option<i64>,
    /// `succeeded`, `partial`, `failed`, `interrupted`.
    pub status: &'a str,
    /// How long it took.
    pub duration: Duration,
    /// Its counts.
    pub counts: &'a RunCounts,
    /// HTTP answers by status code.
    pub http: BTreeMap<u16, u64>,
    /// Requests without an HTTP answer.
    pub transport_errors: u64,
}

/// The statuses a run can end with (one `scimsync_run_status` series each).
pub const STATUSES: [&str; 4] = ["succeeded", "partial", "failed", "interrupted"];

/// Escape a label value (exposition format: `\\`, `\"`, `\n`).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Write `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".scimsync-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Readable by a collector running as another user (no secret in here).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The last-success timestamp (seconds) in an earlier metrics file for `app`.
pub fn previous_last_success(text: &str, app: &str) -> Option<f64> {
    let prefix = format!(
        "scimsync_last_success_timestamp_seconds{{app=\"{}\"}} ",
        escape_label(app)
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

struct Doc {
    out: String,
    app: String,
}

impl Doc {
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} gauge");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut l = format!("app=\"{}\"", escape_label(&self.app));
        for (k, v) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "{name}{{{l}}} {value}");
    }
}

/// Render the file. `actions` are (resource, action, outcome) → count;
/// `now_s` is the run's end; `last_success_s` when a run ever succeeded.
pub fn render(
    run: &RunMetrics<'_>,
    actions: &BTreeMap<(String, String, String), u64>,
    now_s: f64,
    last_success_s: Option<f64>,
) -> String {
    let mut d = Doc {
        out: String::new(),
        app: run.app.to_owned(),
    };
    d.family(
        "scimsync_run_actions",
        "Outcomes of the last run by resource, action and outcome (one per member for memberships).",
    );
    for ((resource, action, outcome), n) in actions {
        d.sample(
            "scimsync_run_actions",
            &[
                ("resource", resource),
                ("action", action),
                ("outcome", outcome),
            ],
            *n as f64,
        );
    }
    d.family(
        "scimsync_run_http_responses",
        "HTTP answers in the last run by status code (code=\"none\": no answer: timeout, reset, DNS, TLS).",
    );
    for (code, n) in &run.http {
        d.sample(
            "scimsync_run_http_responses",
            &[("code", &code.to_string())],
            *n as f64,
        );
    }
    if run.transport_errors > 0 {
        d.sample(
            "scimsync_run_http_responses",
            &[("code", "none")],
            run.transport_errors as f64,
        );
    }
    let c = run.counts;
    for (name, help, v) in [
        (
            "scimsync_run_requests",
            "HTTP requests sent in the last run (attempts).",
            c.requests,
        ),
        (
            "scimsync_run_retries",
            "Retries in the last run.",
            c.retries,
        ),
        (
            "scimsync_run_throttled",
            "429 answers in the last run.",
            c.throttled,
        ),
        (
            "scimsync_run_held",
            "Destructive outcomes held by the deprovisioning guard in the last run.",
            c.held,
        ),
        (
            "scimsync_run_invalid_records",
            "Invalid source records in the last run.",
            c.invalid,
        ),
    ] {
        d.family(name, help);
        d.sample(name, &[], v as f64);
    }
    d.family(
        "scimsync_run_duration_seconds",
        "Duration of the last run in seconds.",
    );
    d.sample(
        "scimsync_run_duration_seconds",
        &[],
        (run.duration.as_millis() as f64) / 1000.0,
    );
    if let Some(id) = run.run_id {
        d.family("scimsync_run_id", "Id of the last run in the report.");
        d.sample("scimsync_run_id", &[], id as f64);
    }
    d.family(
        "scimsync_run_status",
        "1 for the status the last run ended with, 0 for the others.",
    );
    for s in STATUSES {
        d.sample(
            "scimsync_run_status",
            &[("status", s)],
            if s == run.status { 1.0 } else { 0.0 },
        );
    }
    d.family(
        "scimsync_last_run_timestamp_seconds",
        "When the last run ended (Unix time).",
    );
    d.sample("scimsync_last_run_timestamp_seconds", &[], now_s);
    if let Some(t) = last_success_s {
        d.family(
            "scimsync_last_success_timestamp_seconds",
            "When a run last ended with status succeeded (Unix time).",
        );
        d.sample("scimsync_last_success_timestamp_seconds", &[], t);
    }
    d.out
}

/// Gather what the store knows about the run and write the file.
pub fn write_for_run(path: &Path, store: &Store, run: &RunMetrics<'_>) -> Result<(), String> {
    let mut actions = BTreeMap::new();
    if let Some(run_id) = run.run_id {
        let mut stmt = store
            .conn()
            .prepare(
                "SELECT resource, action, outcome, count(*) FROM outcomes WHERE run_id = ?1
                 GROUP BY resource, action, outcome",
            )
            .map_err(|e| format!("store: {e}"))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ),
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| format!("store: {e}"))?;
        for row in rows {
            let (k, n) = row.map_err(|e| format!("store: {e}"))?;
            actions.insert(k, n.max(0) as u64);
        }
    }
    let stored: Option<i64> = store
        .conn()
        .query_row(
            "SELECT max(finished_at) FROM runs WHERE app = ?1 AND status = 'succeeded'",
            [run.app],
            |r| r.get(0),
        )
        .map_err(|e| format!("store: {e}"))?;
    let previous = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| previous_last_success(&t, run.app));
    let now_s = crate::store::now_ms() as f64 / 1000.0;
    let mut last_success = match (stored.map(|ms| ms as f64 / 1000.0), previous) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if run.status == "succeeded" {
        last_success = Some(last_success.map_or(now_s, |t| t.max(now_s)));
    }
    let text = render(run, &actions, now_s, last_success);
    write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_run(counts: &RunCounts) -> RunMetrics<'_> {
        RunMetrics {
            app: "prod \"eu\"\\x\nline",
            run_id: Some(7),
            status: "partial",
            duration: Duration::from_millis(1500),
            counts,
            http: BTreeMap::from([(201, 3), (429, 2)]),
            transport_errors: 1,
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let counts = RunCounts {
            requests: 6,
            retries: 2,
            throttled: 2,
            ..RunCounts::default()
        };
        let actions = BTreeMap::from([(
            ("user".to_owned(), "create".to_owned(), "applied".to_owned()),
            3,
        )]);
        let text = render(&sample_run(&counts), &actions, 1000.0, Some(900.0));
        let mut typed = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(kind, "gauge");
                assert!(typed.insert(name.to_owned()), "TYPE twice for {name}");
            } else if !line.starts_with("# HELP ") {
                let name = &line[..line.find('{').unwrap()];
                assert!(typed.contains(name), "sample before TYPE: {line}");
            }
        }
        assert!(text.contains(
            "scimsync_run_actions{app=\"prod \\\"eu\\\"\\\\x\\nline\",resource=\"user\",action=\"create\",outcome=\"applied\"} 3\n"
        ), "{text}");
        assert!(
            text.contains(
                "scimsync_run_http_responses{app=\"prod \\\"eu\\\"\\\\x\\nline\",code=\"429\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains(",code=\"none\"} 1\n"), "{text}");
        assert!(
            text.contains(
                "scimsync_run_status{app=\"prod \\\"eu\\\"\\\\x\\nline\",status=\"partial\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(",status=\"succeeded\"} 0\n"), "{text}");
        assert!(
            text.contains(
                "scimsync_run_duration_seconds{app=\"prod \\\"eu\\\"\\\\x\\nline\"} 1.5\n"
            ),
            "{text}"
        );
        assert_eq!(
            previous_last_success(&text, "prod \"eu\"\\x\nline"),
            Some(900.0)
        );
    }

    #[test]
    fn no_success_yet_means_no_last_success_series() {
        let counts = RunCounts::default();
        let text = render(&sample_run(&counts), &BTreeMap::new(), 1000.0, None);
        assert!(
            !text.contains("scimsync_last_success_timestamp_seconds"),
            "{text}"
        );
        assert_eq!(previous_last_success(&text, "prod"), None);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.prom");
        write_atomic(&path, b"one\n").unwrap();
        write_atomic(&path, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
