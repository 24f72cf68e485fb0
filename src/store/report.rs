//! Provisioning report queries: what happened to whom, when, and why.
//!
//! Rows stream to a callback, so an export of any size never sits in memory
//! and has no row cap.

use rusqlite::{Connection, ToSql};
use serde::Serialize;

/// Which rows to return. Every set field narrows the result.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Source id, userName or email of a person (case-insensitive): every row
    /// about that person, memberships included.
    pub user: Option<String>,
    /// Target name.
    pub app: Option<String>,
    /// Rows at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Rows before (Unix ms).
    pub until_ms: Option<i64>,
    /// `applied`, `failed`, `skipped`, `invalid`, `held`.
    pub outcome: Option<String>,
    /// Run id.
    pub run: Option<i64>,
    /// Action verb (`create`, `disable`, ...).
    pub action: Option<String>,
    /// At most this many rows (newest first when set).
    pub limit: Option<u64>,
    /// Newest first even without a limit.
    pub newest_first: bool,
}

/// One report row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Row id.
    pub id: i64,
    /// Run id.
    pub run_id: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Target name.
    pub app: String,
    /// `user`, `group`, `membership`, `record`.
    pub resource: String,
    /// Action verb.
    pub action: String,
    /// Source id.
    pub source_id: Option<String>,
    /// userName or group name.
    pub user_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Group (membership rows).
    pub group_name: Option<String>,
    /// Target id.
    pub scim_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// HTTP status.
    pub http_status: Option<u16>,
    /// SCIM error type.
    pub scim_type: Option<String>,
    /// Detail.
    pub detail: Option<String>,
    /// Attempts.
    pub attempts: u32,
    /// Duration.
    pub duration_ms: Option<i64>,
}

/// Column names, in `Row` order (CSV header).
pub const COLUMNS: &[&str] = &[
    "id",
    "run_id",
    "at",
    "app",
    "resource",
    "action",
    "source_id",
    "user_name",
    "email",
    "group_name",
    "scim_id",
    "outcome",
    "http_status",
    "scim_type",
    "detail",
    "attempts",
    "duration_ms",
];

/// Format Unix milliseconds as RFC 3339 UTC.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// The `WHERE` conditions (after `WHERE 1 = 1`) and their parameters for a filter.
fn conditions(f: &Filter) -> (String, Vec<Box<dyn ToSql>>) {
    let mut sql = String::new();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(u) = &f.user {
        args.push(Box::new(u.clone()));
        let n = args.len();
        sql.push_str(&format!(
            " AND (source_id IN (SELECT DISTINCT source_id FROM outcomes WHERE resource IN ('user', 'membership', 'record')
                AND (source_id = ?{n} OR user_name = ?{n} COLLATE NOCASE OR email = ?{n} COLLATE NOCASE))
              OR user_name = ?{n} COLLATE NOCASE OR email = ?{n} COLLATE NOCASE)
              AND resource IN ('user', 'membership', 'record')"
        ));
    }
    let mut eq = |col: &str, v: Box<dyn ToSql>, sql: &mut String| {
        args.push(v);
        sql.push_str(&format!(" AND {col} ?{}", args.len()));
    };
    if let Some(a) = &f.app {
        eq("app =", Box::new(a.clone()), &mut sql);
    }
    if let Some(s) = f.since_ms {
        eq("at >=", Box::new(s), &mut sql);
    }
    if let Some(u) = f.until_ms {
        eq("at <", Box::new(u), &mut sql);
    }
    if let Some(o) = &f.outcome {
        eq("outcome =", Box::new(o.clone()), &mut sql);
    }
    if let Some(r) = f.run {
        eq("run_id =", Box::new(r), &mut sql);
    }
    if let Some(a) = &f.action {
        eq("action =", Box::new(a.clone()), &mut sql);
    }
    (sql, args)
}

/// How many rows the filter matches (its `limit` ignored).
pub fn count(conn: &Connection, f: &Filter) -> rusqlite::Result<u64> {
    let (cond, args) = conditions(f);
    let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
    conn.query_row(
        &format!("SELECT count(*) FROM outcomes WHERE 1 = 1{cond}"),
        params.as_slice(),
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Run the query, calling `each` per row (oldest first; newest first with a
/// limit or `newest_first`).
pub fn query<E: From<rusqlite::Error>>(
    conn: &Connection,
    f: &Filter,
    mut each: impl FnMut(Row) -> Result<(), E>,
) -> Result<(), E> {
    let (cond, args) = conditions(f);
    let mut sql = format!(
        "SELECT id, run_id, at, app, resource, action, source_id, user_name, email, group_name, scim_id,
         outcome, http_status, scim_type, detail, attempts, duration_ms FROM outcomes WHERE 1 = 1{cond}"
    );
    match (f.limit, f.newest_first) {
        (Some(n), _) => sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT {n}")),
        (None, true) => sql.push_str(" ORDER BY at DESC, id DESC"),
        (None, false) => sql.push_str(" ORDER BY at, id"),
    }
    let mut stmt = conn.prepare(&sql)?;
    let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
    // The cursor is read row by row and each row handed on at once: memory
    // stays flat however many rows match.
    let mut rows = stmt.query(params.as_slice())?;
    while let Some(r) = rows.next()? {
        let row = Row {
            id: r.get(0)?,
            run_id: r.get(1)?,
            at: format_ms(r.get(2)?),
            app: r.get(3)?,
            resource: r.get(4)?,
            action: r.get(5)?,
            source_id: r.get(6)?,
            user_name: r.get(7)?,
            email: r.get(8)?,
            group_name: r.get(9)?,
            scim_id: r.get(10)?,
            outcome: r.get(11)?,
            http_status: r.get(12)?,
            scim_type: r.get(13)?,
            detail: r.get(14)?,
            attempts: r.get(15)?,
            duration_ms: r.get(16)?,
        };
        each(row)?;
    }
    Ok(())
}

/// A run summary row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Target name.
    pub app: String,
    /// Command.
    pub command: String,
    /// Full read of the target.
    pub reconcile: bool,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End.
    pub finished_at: Option<String>,
    /// Wall time of the run, when it finished.
    pub duration_ms: Option<i64>,
    /// Status.
    pub status: String,
    /// Counts.
    pub actions: i64,
    /// Applied.
    pub applied: i64,
    /// Failed.
    pub failed: i64,
    /// Skipped.
    pub skipped: i64,
    /// Invalid.
    pub invalid: i64,
    /// Held.
    pub held: i64,
    /// Requests.
    pub requests: i64,
    /// Retries.
    pub retries: i64,
    /// 429 answers.
    pub throttled: i64,
    /// Detail.
    pub detail: Option<String>,
    /// Start, Unix ms (for charts).
    #[serde(skip)]
    pub started_ms: i64,
}

const RUN_COLUMNS: &str = "id, app, command, reconcile, started_at, finished_at, status, actions, applied, failed, skipped,
     invalid, held, requests, retries, throttled, detail";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let started: i64 = r.get(4)?;
    let finished: Option<i64> = r.get(5)?;
    Ok(RunRow {
        id: r.get(0)?,
        app: r.get(1)?,
        command: r.get(2)?,
        reconcile: r.get(3)?,
        started_at: format_ms(started),
        finished_at: finished.map(format_ms),
        duration_ms: finished.map(|f| (f - started).max(0)),
        status: r.get(6)?,
        actions: r.get(7)?,
        applied: r.get(8)?,
        failed: r.get(9)?,
        skipped: r.get(10)?,
        invalid: r.get(11)?,
        held: r.get(12)?,
        requests: r.get(13)?,
        retries: r.get(14)?,
        throttled: r.get(15)?,
        detail: r.get(16)?,
        started_ms: started,
    })
}

/// Runs, newest first.
pub fn runs(conn: &Connection, app: Option<&str>, limit: u64) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR app = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(rusqlite::params![app, limit as i64], run_row)?;
    rows.collect()
}

/// One run.
pub fn run(conn: &Connection, id: i64) -> rusqlite::Result<Option<RunRow>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [id],
        run_row,
    )
    .optional()
}

/// Which failures to group.
#[derive(Clone, Debug, Default)]
pub struct FailureFilter {
    /// Target name.
    pub app: Option<String>,
    /// At or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Before (Unix ms).
    pub until_ms: Option<i64>,
    /// Action verb.
    pub action: Option<String>,
    /// Outcome grouped (default `failed`).
    pub outcome: Option<String>,
    /// At most this many groups (largest first).
    pub limit: Option<u64>,
}

/// Outcomes that share a reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailureGroup {
    /// Action verb.
    pub action: String,
    /// HTTP status, if any.
    pub http_status: Option<u16>,
    /// SCIM error type, if any.
    pub scim_type: Option<String>,
    /// The reason as recorded.
    pub reason: String,
    /// Outcome rows.
    pub count: u64,
    /// Different people or groups affected.
    pub subjects: u64,
    /// First seen (RFC 3339).
    pub first_seen: String,
    /// Last seen (RFC 3339).
    pub last_seen: String,
    /// Up to three of the people or groups affected.
    pub examples: Vec<String>,
}

/// Failed (or other) outcomes grouped by action, HTTP status, scimType and
/// detail, largest group first.
pub fn failures(conn: &Connection, f: &FailureFilter) -> rusqlite::Result<Vec<FailureGroup>> {
    let filter = Filter {
        app: f.app.clone(),
        since_ms: f.since_ms,
        until_ms: f.until_ms,
        action: f.action.clone(),
        outcome: Some(f.outcome.clone().unwrap_or_else(|| "failed".into())),
        ..Filter::default()
    };
    let (cond, args) = conditions(&filter);
    let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
    let limit = f.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let mut stmt = conn.prepare(&format!(
        "SELECT action, http_status, scim_type, coalesce(detail, ''), count(*), min(at), max(at),
           count(DISTINCT coalesce(user_name, source_id, scim_id))
         FROM outcomes WHERE 1 = 1{cond}
         GROUP BY action, http_status, scim_type, coalesce(detail, '')
         ORDER BY count(*) DESC, max(at) DESC{limit}"
    ))?;
    let mut groups = stmt
        .query_map(params.as_slice(), |r| {
            Ok(FailureGroup {
                action: r.get(0)?,
                http_status: r.get(1)?,
                scim_type: r.get(2)?,
                reason: r.get(3)?,
                count: r.get::<_, i64>(4)? as u64,
                first_seen: format_ms(r.get(5)?),
                last_seen: format_ms(r.get(6)?),
                subjects: r.get::<_, i64>(7)? as u64,
                examples: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let n = args.len();
    let mut ex = conn.prepare(&format!(
        "SELECT DISTINCT coalesce(user_name, source_id, scim_id) AS who FROM outcomes WHERE 1 = 1{cond}
           AND action = ?{a} AND http_status IS ?{b} AND scim_type IS ?{c} AND coalesce(detail, '') = ?{d}
           AND who IS NOT NULL ORDER BY who LIMIT 3",
        a = n + 1,
        b = n + 2,
        c = n + 3,
        d = n + 4
    ))?;
    for g in &mut groups {
        let mut p = params.clone();
        p.push(&g.action);
        p.push(&g.http_status);
        p.push(&g.scim_type);
        p.push(&g.reason);
        g.examples = ex
            .query_map(p.as_slice(), |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(groups)
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Runs removed.
    pub runs: u64,
    /// Outcome rows removed.
    pub outcomes: u64,
}

/// Delete runs that ended (or, if they never recorded an end, started) before
/// `cutoff_ms`, with their outcome rows, in one transaction. A run still marked
/// `running` is never removed; links, stored state, memberships and the
/// create journal are never touched.
pub fn prune(conn: &Connection, cutoff_ms: i64) -> rusqlite::Result<Pruned> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS prune_runs (id INTEGER PRIMARY KEY)",
        [],
    )?;
    tx.execute("DELETE FROM temp.prune_runs", [])?;
    tx.execute(
        "INSERT INTO temp.prune_runs SELECT id FROM runs
         WHERE status <> 'running' AND coalesce(finished_at, started_at) < ?1",
        [cutoff_ms],
    )?;
    let outcomes = tx.execute(
        "DELETE FROM outcomes WHERE run_id IN (SELECT id FROM temp.prune_runs)",
        [],
    )?;
    let runs = tx.execute(
        "DELETE FROM runs WHERE id IN (SELECT id FROM temp.prune_runs)",
        [],
    )?;
    tx.execute("DROP TABLE temp.prune_runs", [])?;
    tx.commit()?;
    Ok(Pruned {
        runs: runs as u64,
        outcomes: outcomes as u64,
    })
}

/// Outcome rows counted by action and outcome (for the HTML report).
pub fn totals(
    conn: &Connection,
    app: Option<&str>,
    since_ms: Option<i64>,
) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT action, outcome, count(*) FROM outcomes
         WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR at >= ?2)
         GROUP BY action, outcome ORDER BY action, outcome",
    )?;
    let rows = stmt.query_map(rusqlite::params![app, since_ms], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    rows.collect()
}
