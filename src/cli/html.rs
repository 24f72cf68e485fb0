//! `scimsync report html`: one self-contained static HTML file.
//!
//! Everything is inline (CSS, a small script, SVG): the file opens offline and
//! can be attached to a ticket. Every piece of data goes through [`esc`]; the
//! script reads the table from the DOM and never evaluates data. The outcome
//! table is streamed from the SQLite cursor into the file row by row.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::report::{human_ms, open_existing, parse_when};
use super::{CliError, Printer};
use crate::exit::ExitStatus;
use crate::store::now_ms;
use crate::store::report::{self, Filter, RunRow, format_ms};

/// `report html` options.
#[derive(Debug, Args)]
pub struct HtmlArgs {
    /// The HTML file to write (created owner-only: it holds directory data).
    #[arg(long)]
    pub out: PathBuf,
    /// Only this target.
    #[arg(long)]
    pub app: Option<String>,
    /// From: RFC 3339 time or a span back from now (`30d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Runs in the chart (the newest).
    #[arg(long, default_value_t = 60)]
    pub runs: u64,
    /// Outcome rows in the searchable table (the newest).
    #[arg(long, default_value_t = 5000)]
    pub rows: u64,
    /// The store file (default: the one named in the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Escape text for HTML element content and double- or single-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#59636e;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d1d9e0;border-radius:6px;padding:8px 14px;min-width:92px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e5e8eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
#outcomes td:first-child{white-space:nowrap}
.o-applied{color:#1a7f37}.o-failed{color:#cf222e;font-weight:600}.o-skipped,.o-held{color:#9a6700}.o-invalid{color:#8250df}
.controls{display:flex;gap:8px;align-items:center;margin:8px 0;flex-wrap:wrap}
.controls input{padding:4px 8px;min-width:260px}
#outcomes td{font-size:13px}
#outcomes td.detail{max-width:520px;overflow-wrap:anywhere}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
svg text{font:11px system-ui,sans-serif;fill:#59636e}
.wrap{overflow-x:auto}
.empty{color:#59636e;font-style:italic}
"#;

const SCRIPT: &str = r#"
(function(){
  var q=document.getElementById('q'),fo=document.getElementById('f-outcome'),fa=document.getElementById('f-action');
  var rows=Array.prototype.slice.call(document.querySelectorAll('#outcomes tbody tr'));
  var shown=document.getElementById('shown');
  function apply(){
    var t=q.value.trim().toLowerCase(),o=fo.value,a=fa.value,n=0;
    rows.forEach(function(r){
      var ok=(!o||r.getAttribute('data-outcome')===o)&&(!a||r.getAttribute('data-action')===a)&&(!t||r.textContent.toLowerCase().indexOf(t)>=0);
      r.hidden=!ok;if(ok)n++;
    });
    shown.textContent=n+' of '+rows.length+' rows shown';
    shown.setAttribute('data-shown',String(n));
  }
  var h=new URLSearchParams(location.hash.slice(1));
  if(h.get('q'))q.value=h.get('q');
  if(h.get('outcome'))fo.value=h.get('outcome');
  if(h.get('action'))fa.value=h.get('action');
  q.addEventListener('input',apply);fo.addEventListener('change',apply);fa.addEventListener('change',apply);
  apply();
  document.body.setAttribute('data-ready','1');
})();
"#;

const COLORS: [(&str, &str); 5] = [
    ("applied", "#2da44e"),
    ("failed", "#cf222e"),
    ("skipped", "#d4a72c"),
    ("held", "#bf8700"),
    ("invalid", "#8250df"),
];

/// The runs chart: one stacked bar per run (oldest left), outcomes by colour.
fn chart(runs: &[RunRow]) -> String {
    if runs.is_empty() {
        return "<p class=\"empty\">No runs recorded.</p>".into();
    }
    let count = |r: &RunRow, k: &str| match k {
        "applied" => r.applied,
        "failed" => r.failed,
        "skipped" => r.skipped,
        "held" => r.held,
        _ => r.invalid,
    };
    let max = runs
        .iter()
        .map(|r| COLORS.iter().map(|(k, _)| count(r, k)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (left, top, height) = (44.0, 10.0, 180.0);
    let bar = (720.0 / runs.len() as f64).clamp(4.0, 40.0);
    let width = (left + bar * runs.len() as f64 + 10.0).max(420.0);
    let mut s = format!(
        "<svg id=\"runs-chart\" role=\"img\" aria-label=\"Outcomes per run\" width=\"{width:.0}\" height=\"{:.0}\" viewBox=\"0 0 {width:.0} {:.0}\">",
        top + height + 34.0,
        top + height + 34.0
    );
    for i in 0..=4 {
        let v = max as f64 * f64::from(i) / 4.0;
        let y = top + height - height * f64::from(i) / 4.0;
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{width:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e8eb\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>",
            left - 4.0,
            y + 4.0,
            v
        ));
    }
    for (i, r) in runs.iter().enumerate() {
        let x = left + bar * i as f64 + 1.0;
        let mut y = top + height;
        let tip = format!(
            "run {} ({}) {} — {}: {} applied, {} failed, {} skipped, {} held, {} invalid{}",
            r.id,
            r.app,
            r.started_at,
            r.status,
            r.applied,
            r.failed,
            r.skipped,
            r.held,
            r.invalid,
            r.duration_ms
                .map(|d| format!(", {}", human_ms(d)))
                .unwrap_or_default()
        );
        s.push_str(&format!(
            "<g class=\"run\" data-run=\"{}\"><title>{}</title>",
            r.id,
            esc(&tip)
        ));
        let total: i64 = COLORS.iter().map(|(k, _)| count(r, k)).sum();
        if total == 0 {
            // A run with nothing to do: a thin grey mark, so it still shows.
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"2\" fill=\"#afb8c1\"/>",
                y - 2.0,
                bar - 2.0
            ));
        }
        for (k, colour) in COLORS {
            let n = count(r, k);
            if n == 0 {
                continue;
            }
            let h = height * n as f64 / max as f64;
            y -= h;
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"/>",
                bar - 2.0
            ));
        }
        s.push_str("</g>");
    }
    // First and last run labels on the time axis.
    let first = &runs[0];
    let last = &runs[runs.len() - 1];
    s.push_str(&format!(
        "<text x=\"{left}\" y=\"{:.0}\">run {} · {}</text><text x=\"{width:.0}\" y=\"{:.0}\" text-anchor=\"end\">run {} · {}</text></svg>",
        top + height + 16.0,
        first.id,
        esc(&first.started_at[..first.started_at.len().min(16)]),
        top + height + 30.0,
        last.id,
        esc(&last.started_at[..last.started_at.len().min(16)]),
    ));
    s.push_str("<div class=\"legend\">");
    for (k, colour) in COLORS {
        s.push_str(&format!(
            "<span><i style=\"background:{colour}\"></i>{k}</span>"
        ));
    }
    s.push_str("</div>");
    s
}

/// Run `report html`.
pub fn html(config: &Path, a: HtmlArgs, printer: &Printer) -> Result<ExitStatus, CliError> {
    let store = open_existing(config, a.db.clone())?;
    let conn = store.conn();
    let now = now_ms();
    let since = a
        .since
        .as_deref()
        .map(|s| parse_when(s, now))
        .transpose()
        .map_err(CliError::msg)?;
    let mut runs: Vec<RunRow> = report::runs(conn, a.app.as_deref(), a.runs)?
        .into_iter()
        .filter(|r| since.is_none_or(|s| r.started_ms >= s))
        .collect();
    runs.reverse();
    let totals = report::totals(conn, a.app.as_deref(), since)?;
    let failures = report::failures(
        conn,
        &report::FailureFilter {
            app: a.app.clone(),
            since_ms: since,
            limit: Some(10),
            ..Default::default()
        },
    )?;
    let filter = Filter {
        app: a.app.clone(),
        since_ms: since,
        limit: Some(a.rows),
        ..Filter::default()
    };
    let total_rows = report::count(
        conn,
        &Filter {
            limit: None,
            ..filter.clone()
        },
    )?;

    let file = create_private(&a.out)
        .map_err(|e| CliError::msg(format!("cannot write {}: {e}", a.out.display())))?;
    let mut w = std::io::BufWriter::new(file);
    let scope = format!(
        "{}{}",
        a.app
            .as_deref()
            .map(|x| format!("target {x}"))
            .unwrap_or_else(|| "all targets".into()),
        since
            .map(|s| format!(", since {}", format_ms(s)))
            .unwrap_or_default()
    );
    write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
         <title>scimsync provisioning report</title><style>{STYLE}</style></head><body>\n\
         <h1>scimsync provisioning report</h1><p class=\"meta\">{} · generated {}</p>\n",
        esc(&scope),
        esc(&format_ms(now))
    )?;

    // Summary cards.
    let sum = |k: &str| -> u64 {
        totals
            .iter()
            .filter(|(_, o, _)| o == k)
            .map(|(_, _, n)| n)
            .sum()
    };
    w.write_all(b"<div class=\"cards\">")?;
    write!(
        w,
        "<div class=\"card\">runs<b id=\"n-runs\">{}</b></div><div class=\"card\">outcomes<b id=\"n-outcomes\">{}</b></div>",
        runs.len(),
        total_rows
    )?;
    for (k, _) in COLORS {
        write!(
            w,
            "<div class=\"card o-{k}\">{k}<b id=\"n-{k}\">{}</b></div>",
            sum(k)
        )?;
    }
    w.write_all(b"</div>\n")?;

    writeln!(
        w,
        "<h2>Runs over time</h2><div class=\"wrap\">{}</div>",
        chart(&runs)
    )?;

    // Actions by outcome.
    w.write_all(b"<h2>Actions by outcome</h2>")?;
    if totals.is_empty() {
        w.write_all(b"<p class=\"empty\">No outcomes recorded.</p>")?;
    } else {
        let mut actions: Vec<&str> = totals.iter().map(|(a, _, _)| a.as_str()).collect();
        actions.dedup();
        w.write_all(b"<table id=\"by-outcome\"><thead><tr><th>action</th>")?;
        for (k, _) in COLORS {
            write!(w, "<th class=\"n o-{k}\">{k}</th>")?;
        }
        w.write_all(b"<th class=\"n\">total</th></tr></thead><tbody>")?;
        for act in &actions {
            write!(w, "<tr><td>{}</td>", esc(act))?;
            let mut row_total = 0;
            for (k, _) in COLORS {
                let n: u64 = totals
                    .iter()
                    .filter(|(a, o, _)| a == act && o == k)
                    .map(|(_, _, n)| n)
                    .sum();
                row_total += n;
                write!(
                    w,
                    "<td class=\"n\">{}</td>",
                    if n == 0 { String::new() } else { n.to_string() }
                )?;
            }
            write!(w, "<td class=\"n\">{row_total}</td></tr>")?;
        }
        w.write_all(b"</tbody></table>\n")?;
    }

    // Top failure reasons.
    w.write_all(b"<h2>Top failure reasons</h2>")?;
    if failures.is_empty() {
        w.write_all(b"<p class=\"empty\" id=\"no-failures\">No failed outcomes.</p>")?;
    } else {
        w.write_all(b"<table id=\"failures\"><thead><tr><th class=\"n\">count</th><th>action</th><th>http</th><th>reason</th><th>first seen</th><th>last seen</th><th>examples</th></tr></thead><tbody>")?;
        for g in &failures {
            let reason = match &g.scim_type {
                Some(t) => format!("[{t}] {}", g.reason),
                None => g.reason.clone(),
            };
            write!(
                w,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                g.count,
                esc(&g.action),
                g.http_status.map(|s| s.to_string()).unwrap_or_default(),
                esc(&reason),
                esc(&g.first_seen),
                esc(&g.last_seen),
                esc(&g.examples.join(", "))
            )?;
        }
        w.write_all(b"</tbody></table>\n")?;
    }

    // The searchable table, streamed.
    let shown = total_rows.min(a.rows);
    write!(
        w,
        "<h2>Outcomes</h2><p class=\"meta\">The newest {shown} of {total_rows} outcome rows{}.</p>\
         <div class=\"controls\"><input id=\"q\" type=\"search\" placeholder=\"Search: name, email, id, detail…\" aria-label=\"Search\">\
         <select id=\"f-outcome\" aria-label=\"Outcome\"><option value=\"\">every outcome</option>",
        if shown < total_rows {
            " (raise --rows to include more; `scimsync report --format csv` exports all)"
        } else {
            ""
        }
    )?;
    for (k, _) in COLORS {
        write!(w, "<option value=\"{k}\">{k}</option>")?;
    }
    w.write_all(b"</select><select id=\"f-action\" aria-label=\"Action\"><option value=\"\">every action</option>")?;
    let mut actions: Vec<&str> = totals.iter().map(|(a, _, _)| a.as_str()).collect();
    actions.dedup();
    for act in actions {
        write!(w, "<option value=\"{0}\">{0}</option>", esc(act))?;
    }
    w.write_all(b"</select><span id=\"shown\"></span></div>\n<div class=\"wrap\"><table id=\"outcomes\"><thead><tr><th>at</th><th class=\"n\">run</th><th>app</th><th>resource</th><th>action</th><th>who</th><th>email</th><th>group</th><th>outcome</th><th>http</th><th>detail</th></tr></thead><tbody>\n")?;
    report::query::<CliError>(conn, &filter, |r| {
        let who = r
            .user_name
            .as_deref()
            .or(r.source_id.as_deref())
            .unwrap_or_default();
        writeln!(
            w,
            "<tr data-outcome=\"{o}\" data-action=\"{a}\"><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{a}</td><td title=\"source id {}\">{}</td><td>{}</td><td>{}</td><td class=\"o-{o}\">{o}</td><td>{}</td><td class=\"detail\">{}</td></tr>",
            esc(&r.at),
            r.run_id,
            esc(&r.app),
            esc(&r.resource),
            esc(r.source_id.as_deref().unwrap_or("-")),
            esc(who),
            esc(r.email.as_deref().unwrap_or_default()),
            esc(r.group_name.as_deref().unwrap_or_default()),
            r.http_status.map(|s| s.to_string()).unwrap_or_default(),
            esc(r.detail.as_deref().unwrap_or_default()),
            o = esc(&r.outcome),
            a = esc(&r.action),
        )?;
        Ok(())
    })?;
    write!(
        w,
        "</tbody></table></div>\n<script>{SCRIPT}</script>\n</body></html>\n"
    )?;
    w.flush()?;
    printer.info(&format!(
        "Wrote {} ({} runs in the chart, {shown} of {total_rows} outcome rows in the table).",
        a.out.display(),
        runs.len()
    ));
    Ok(ExitStatus::Success)
}

/// Create (or truncate) a file readable by its owner only.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let e = esc(r#"<script>alert("x")</script> & 'y'"#);
        assert_eq!(
            e,
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert!(!e.contains('<') && !e.contains('"') && !e.contains('\''));
    }

    #[test]
    fn chart_has_one_bar_group_per_run_and_escapes_the_tooltip() {
        let run = |id: i64, applied: i64, failed: i64| RunRow {
            id,
            app: "<b>app</b>".into(),
            command: "sync".into(),
            reconcile: false,
            started_at: "2026-11-23T10:00:00Z".into(),
            finished_at: None,
            duration_ms: Some(1500),
            status: "partial".into(),
            actions: applied + failed,
            applied,
            failed,
            skipped: 0,
            invalid: 0,
            held: 0,
            requests: 0,
            retries: 0,
            throttled: 0,
            detail: None,
            started_ms: 0,
        };
        let svg = chart(&[run(1, 5, 1), run(2, 0, 0), run(3, 2, 0)]);
        assert_eq!(svg.matches("<g class=\"run\"").count(), 3);
        // Run 1: two segments; run 2: the grey "nothing to do" mark; run 3: one.
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("&lt;b&gt;app&lt;/b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(chart(&[]).contains("No runs recorded"));
    }
}
