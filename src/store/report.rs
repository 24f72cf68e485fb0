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

/// Run the query, calling `each` per row (oldest first, or newest first with a limit).
pub fn query<E: From<rusqlite::Error>>(
    conn: &Connection,
    f: &Filter,
    mut each: impl FnMut(Row) -> Result<(), E>,
) -> Result<(), E> {
    let mut sql = String::from(
        "SELECT id, run_id, at, app, resource, action, source_id, user_name, email, group_name, scim_id,
         outcome, http_status, scim_type, detail, attempts, duration_ms FROM outcomes WHERE 1 = 1",
    );
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
    match f.limit {
        Some(n) => sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT {n}")),
        None => sql.push_str(" ORDER BY at, id"),
    }
    let mut stmt = conn.prepare(&sql)?;
    let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
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
    /// Detail.
    pub detail: Option<String>,
}

/// Runs, newest first.
pub fn runs(conn: &Connection, app: Option<&str>, limit: u64) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, app, command, reconcile, started_at, finished_at, status, actions, applied, failed, skipped,
         invalid, held, requests, detail FROM runs WHERE (?1 IS NULL OR app = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![app, limit as i64], |r| {
        Ok(RunRow {
            id: r.get(0)?,
            app: r.get(1)?,
            command: r.get(2)?,
            reconcile: r.get(3)?,
            started_at: format_ms(r.get(4)?),
            finished_at: r.get::<_, Option<i64>>(5)?.map(format_ms),
            status: r.get(6)?,
            actions: r.get(7)?,
            applied: r.get(8)?,
            failed: r.get(9)?,
            skipped: r.get(10)?,
            invalid: r.get(11)?,
            held: r.get(12)?,
            requests: r.get(13)?,
            detail: r.get(14)?,
        })
    })?;
    rows.collect()
}
