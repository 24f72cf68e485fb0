//! The SQLite store: account links, the state last pushed, runs and the
//! provisioning report.
//!
//! One file, embedded (rusqlite with bundled SQLite), created owner-only
//! (0600) because it holds directory data. WAL journal, `synchronous=NORMAL`,
//! foreign keys on. The schema is versioned with `PRAGMA user_version` and
//! migrated on open. During a run a single writer thread ([`Recorder`]) owns a
//! connection and commits outcome rows and link updates in batches, one action
//! per message so an action's outcome and its link change land together.

pub mod links;
pub mod lock;
mod recorder;
pub mod report;

pub use recorder::{OutcomeRow, Record, Recorder};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{Members, ScimId, SourceId};
use crate::plan::{Attrs, RetiredGroup};

/// Ordered schema migrations; index + 1 is the `user_version` they lead to.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_2.sql"),
    include_str!("schema_3.sql"),
];

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file could not be created.
    #[error("store {}: {source}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was written by a newer scimsync.
    #[error("store {}: schema version {found} is newer than this scimsync understands ({known}); upgrade scimsync", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Latest known here.
        known: i64,
    },
}

/// Milliseconds since the Unix epoch, now. The one place the store reads the clock.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A stored user link.
#[derive(Clone, Debug, PartialEq)]
pub struct UserLink {
    /// Source id.
    pub source_id: SourceId,
    /// Target id.
    pub scim_id: ScimId,
    /// Attributes last pushed.
    pub state: Attrs,
}

/// Column `i` of a row as the text SQLite holds (no copy).
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

/// A stored user link as [`Store::stored_users`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredUser {
    /// Source id.
    pub source_id: SourceId,
    /// Target id.
    pub scim_id: ScimId,
    /// Attributes last pushed; `None` when they were the same text as the
    /// state wanted now, and so not decoded.
    pub state: Option<Attrs>,
}

impl From<UserLink> for StoredUser {
    fn from(l: UserLink) -> Self {
        StoredUser {
            source_id: l.source_id,
            scim_id: l.scim_id,
            state: Some(l.state),
        }
    }
}

/// An undecoded state becomes an empty one: the caller asked for every
/// state decoded and compares it with nothing.
impl From<StoredUser> for UserLink {
    fn from(u: StoredUser) -> Self {
        UserLink {
            source_id: u.source_id,
            scim_id: u.scim_id,
            state: u.state.unwrap_or_default(),
        }
    }
}

/// A stored group link with the members last pushed.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupLink {
    /// Source id.
    pub source_id: SourceId,
    /// Target id.
    pub scim_id: ScimId,
    /// Name last pushed.
    pub display_name: String,
    /// Members last pushed, by user source id.
    pub members: Members,
}

/// Final counts of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Planned actions.
    pub actions: u64,
    /// Applied.
    pub applied: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped (a dependency failed, a conflict).
    pub skipped: u64,
    /// Invalid source records.
    pub invalid: u64,
    /// Held by the deprovisioning guard.
    pub held: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
}

/// The store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating owner-only if needed) and migrate.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private(path)?;
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// A second connection to the same store file, for reading on another
    /// thread; `None` for an in-memory store (it has no second connection).
    pub fn another_connection(&self) -> Result<Option<Store>, StoreError> {
        if self.path == Path::new(":memory:") {
            return Ok(None);
        }
        Store::open(&self.path).map(Some)
    }

    /// A throwaway in-memory store (a `plan` before the first `sync`).
    pub fn memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut store = Store { conn, path };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        self.conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", i as i64 + 1))
                .and_then(|_| tx.commit())
                .map_err(|source| StoreError::Sqlite {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Direct access for report queries.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Start a run row; returns its id.
    pub fn begin_run(&self, app: &str, command: &str, reconcile: bool) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO runs (app, command, reconcile, started_at, status) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![app, command, reconcile, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Close a run row.
    pub fn finish_run(
        &self,
        run_id: i64,
        status: &str,
        c: &RunCounts,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, actions = ?4, applied = ?5, failed = ?6,
                 skipped = ?7, invalid = ?8, held = ?9, requests = ?10, retries = ?11, throttled = ?12, detail = ?13
                 WHERE id = ?1",
                params![
                    run_id,
                    now_ms(),
                    status,
                    c.actions as i64,
                    c.applied as i64,
                    c.failed as i64,
                    c.skipped as i64,
                    c.invalid as i64,
                    c.held as i64,
                    c.requests as i64,
                    c.retries as i64,
                    c.throttled as i64,
                    detail
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Close run rows left `running` by a process that died (SIGKILL, power
    /// loss): mark them interrupted and count their outcome rows. Call only
    /// while holding the run lock. Returns how many were closed.
    pub fn close_abandoned_runs(&self, app: &str) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET status = 'interrupted',
                   finished_at = coalesce((SELECT max(at) FROM outcomes o WHERE o.run_id = runs.id), started_at),
                   applied = (SELECT count(*) FROM outcomes o WHERE o.run_id = runs.id AND o.outcome = 'applied'),
                   failed = (SELECT count(*) FROM outcomes o WHERE o.run_id = runs.id AND o.outcome = 'failed'),
                   skipped = (SELECT count(*) FROM outcomes o WHERE o.run_id = runs.id AND o.outcome = 'skipped'),
                   invalid = (SELECT count(*) FROM outcomes o WHERE o.run_id = runs.id AND o.outcome = 'invalid'),
                   held = (SELECT count(*) FROM outcomes o WHERE o.run_id = runs.id AND o.outcome = 'held'),
                   detail = 'the process ended before the run finished (killed or crashed); counts are from its recorded outcomes'
                 WHERE app = ?1 AND status = 'running'",
                [app],
            )
            .map_err(|e| self.err(e))
    }

    /// When the target was last read in full, if ever.
    pub fn last_reconcile(&self, app: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT last_reconcile_at FROM targets WHERE app = ?1",
                [app],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Record a completed full read of the target.
    pub fn set_reconciled(&self, app: &str, base_url: &str, at_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO targets (app, base_url, last_reconcile_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(app) DO UPDATE SET base_url = excluded.base_url, last_reconcile_at = excluded.last_reconcile_at",
                params![app, base_url, at_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The base URL the store last reconciled this app against.
    pub fn target_url(&self, app: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT base_url FROM targets WHERE app = ?1", [app], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// All user links of a target.
    pub fn user_links(&self, app: &str) -> Result<Vec<UserLink>, StoreError> {
        // Nothing is "the same": every state is decoded.
        let users = self.stored_users(app, |_, _| false)?;
        Ok(users.into_iter().map(UserLink::from).collect())
    }

    /// All user links of a target, in source id order, each stored state
    /// decoded only when `same(source id, stored text)` says it is not the
    /// text of the state wanted now (decoding a million states is a good
    /// share of a routine run on a large directory; comparing texts is not).
    pub fn stored_users(
        &self,
        app: &str,
        same: impl FnMut(&str, &str) -> bool,
    ) -> Result<Vec<StoredUser>, StoreError> {
        self.stored_users_in(
            app,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            same,
        )
    }

    /// [`Store::stored_users`] for the source ids in `range` (so that two
    /// connections can each read a part).
    pub fn stored_users_in(
        &self,
        app: &str,
        range: (std::ops::Bound<&str>, std::ops::Bound<&str>),
        mut same: impl FnMut(&str, &str) -> bool,
    ) -> Result<Vec<StoredUser>, StoreError> {
        use std::ops::Bound;
        // The bounds as SQL the primary key's index can seek on.
        let mut bounds = String::new();
        let mut args: Vec<&str> = vec![app];
        for (bound, inclusive, exclusive) in [(range.0, ">=", ">"), (range.1, "<=", "<")] {
            let (op, id) = match bound {
                Bound::Included(id) => (inclusive, id),
                Bound::Excluded(id) => (exclusive, id),
                Bound::Unbounded => continue,
            };
            args.push(id);
            bounds.push_str(&format!(" AND source_id {op} ?{}", args.len()));
        }
        let params = rusqlite::params_from_iter(args.iter());
        // Counted first: the vector is allocated once at its size instead of
        // being copied into fresh memory each time it doubles.
        let count: i64 = self
            .conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM user_links WHERE app = ?1{bounds}"
            ))
            .and_then(|mut s| s.query_row(params.clone(), |r| r.get(0)))
            .map_err(|e| self.err(e))?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT source_id, scim_id, state FROM user_links WHERE app = ?1{bounds} ORDER BY source_id"
            ))
            .map_err(|e| self.err(e))?;
        let mut unreadable = 0usize;
        let rows = stmt
            .query_map(params, |r| {
                let source_id = text(r, 0)?;
                // Compared and parsed where SQLite holds it: no copy of the
                // text per row.
                let stored = text(r, 2)?;
                // A state that cannot be read is taken as "nothing known":
                // the plan then sends every managed attribute again, which
                // repairs it. Counted and reported, not silently dropped.
                let state = (!same(source_id, stored)).then(|| {
                    serde_json::from_str(stored).unwrap_or_else(|_| {
                        unreadable += 1;
                        Attrs::default()
                    })
                });
                Ok(StoredUser {
                    source_id: SourceId::from(source_id),
                    scim_id: ScimId(r.get(1)?),
                    state,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut links = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for link in rows {
            links.push(link.map_err(|e| self.err(e))?);
        }
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                store = %self.path.display(),
                "stored attribute state of some linked users could not be read; their managed attributes will be sent again"
            );
        }
        Ok(links)
    }

    /// All group links of a target, with stored members.
    pub fn group_links(&self, app: &str) -> Result<Vec<GroupLink>, StoreError> {
        let mut members: BTreeMap<String, Members> = BTreeMap::new();
        {
            // In primary-key order (free on this WITHOUT ROWID table): each
            // group's members arrive together and sorted (SQLite's binary
            // collation orders text as Rust does), so each group's set is its
            // rows as they come, with no lookup or sorting per membership
            // (millions on a large directory).
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT group_id, user_id FROM memberships WHERE app = ?1 ORDER BY group_id, user_id",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([app]).map_err(|e| self.err(e))?;
            // One buffer for every group (it grows to the largest once), each
            // set then allocated at its size.
            let mut current: Option<String> = None;
            let mut buffer: Vec<SourceId> = Vec::new();
            let mut close = |group: Option<String>, users: &mut Vec<SourceId>| {
                if let Some(g) = group {
                    members.entry(g).or_default().extend(users.drain(..));
                }
            };
            // Read where SQLite holds them: a group id is copied once per
            // group, a member id straight into its (usually inline) id.
            while let Some(r) = rows.next().map_err(|e| self.err(e))? {
                let (g, u) = (text(r, 0), text(r, 1));
                let (g, u) = (g.map_err(|e| self.err(e))?, u.map_err(|e| self.err(e))?);
                let u = SourceId::from(u);
                if current.as_deref() != Some(g) {
                    close(current.replace(g.to_owned()), &mut buffer);
                }
                buffer.push(u);
            }
            close(current, &mut buffer);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source_id, scim_id, display_name FROM group_links WHERE app = ?1 ORDER BY source_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([app], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (sid, scim, name) = row.map_err(|e| self.err(e))?;
            out.push(GroupLink {
                members: members.remove(&sid).unwrap_or_default(),
                source_id: SourceId::from(sid),
                scim_id: ScimId(scim),
                display_name: name,
            });
        }
        Ok(out)
    }

    /// Old groups of renames still to delete, oldest first.
    pub fn retired_groups(&self, app: &str) -> Result<Vec<RetiredGroup>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source_id, scim_id, display_name FROM retired_groups WHERE app = ?1 ORDER BY retired_at, scim_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([app], |r| {
                Ok(RetiredGroup {
                    group: SourceId::from(text(r, 0)?),
                    scim_id: ScimId(r.get(1)?),
                    display_name: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Source ids whose create was journalled but never linked: a run was cut
    /// off after sending it. `kind` is `user` or `group`.
    pub fn in_doubt(&self, app: &str, kind: &str) -> Result<BTreeSet<SourceId>, StoreError> {
        let table = if kind == "group" {
            "group_links"
        } else {
            "user_links"
        };
        let sql = format!(
            "SELECT source_id FROM intents i WHERE app = ?1 AND kind = ?2
             AND NOT EXISTS (SELECT 1 FROM {table} l WHERE l.app = i.app AND l.source_id = i.source_id)"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![app, kind], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map(SourceId::from))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Forget journal entries whose resource is now linked (resolved).
    pub fn settle_intents(&self, app: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM intents WHERE app = ?1 AND (
                   (kind = 'user' AND source_id IN (SELECT source_id FROM user_links WHERE app = ?1))
                   OR (kind = 'group' AND source_id IN (SELECT source_id FROM group_links WHERE app = ?1)))",
                [app],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Apply records in one transaction (used by the recorder and by tests).
    pub fn apply(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        for rec in records {
            recorder::apply_one(&tx, rec).map_err(wrap)?;
        }
        tx.commit().map_err(wrap)
    }
}

/// Create the database file with mode 0600 if it does not exist yet.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_migrates_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        let v: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(store);
        Store::open(&path).unwrap(); // reopening is a no-op migration
    }

    #[test]
    fn a_journalled_create_is_in_doubt_until_linked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .apply(&[Record::Intent {
                app: "a".into(),
                kind: "user".into(),
                source_id: "7".into(),
                run_id: 1,
            }])
            .unwrap();
        let doubt = store.in_doubt("a", "user").unwrap();
        assert!(doubt.contains(&SourceId::from("7")));
        assert!(store.in_doubt("a", "group").unwrap().is_empty());
        store.settle_intents("a").unwrap();
        assert_eq!(
            store.in_doubt("a", "user").unwrap().len(),
            1,
            "unresolved entries stay"
        );
        store
            .apply(&[Record::UserState {
                app: "a".into(),
                source_id: "7".into(),
                scim_id: "u7".into(),
                state: Attrs::new(),
            }])
            .unwrap();
        assert!(store.in_doubt("a", "user").unwrap().is_empty());
        store.settle_intents("a").unwrap();
        let n: i64 = store
            .conn
            .query_row("SELECT count(*) FROM intents", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn abandoned_runs_are_closed_with_their_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let run = store.begin_run("a", "sync", false).unwrap();
        store
            .apply(&[Record::Outcome(OutcomeRow {
                run_id: run,
                app: "a".into(),
                resource: "user".into(),
                action: "create".into(),
                outcome: "applied".into(),
                ..OutcomeRow::default()
            })])
            .unwrap();
        assert_eq!(store.close_abandoned_runs("b").unwrap(), 0);
        assert_eq!(store.close_abandoned_runs("a").unwrap(), 1);
        let (status, applied): (String, i64) = store
            .conn
            .query_row(
                "SELECT status, applied FROM runs WHERE id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), applied), ("interrupted", 1));
    }

    #[test]
    fn links_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut state = Attrs::new();
        state.insert("userName", json!("ann"));
        store
            .apply(&[
                Record::UserState {
                    app: "a".into(),
                    source_id: "1".into(),
                    scim_id: "u1".into(),
                    state: state.clone(),
                },
                Record::GroupLink {
                    app: "a".into(),
                    source_id: "g".into(),
                    scim_id: "G1".into(),
                    display_name: "Eng".into(),
                },
                Record::Members {
                    app: "a".into(),
                    group: "g".into(),
                    add: vec!["1".into()],
                    remove: vec![],
                },
            ])
            .unwrap();
        let users = store.user_links("a").unwrap();
        assert_eq!(users[0].state, state);
        let groups = store.group_links("a").unwrap();
        assert_eq!(groups[0].members.len(), 1);
        assert!(store.user_links("other").unwrap().is_empty());
        store
            .apply(&[Record::UserUnlink {
                app: "a".into(),
                source_id: "1".into(),
            }])
            .unwrap();
        assert!(store.user_links("a").unwrap().is_empty());
        // A deleted user also leaves the stored memberships.
        assert!(store.group_links("a").unwrap()[0].members.is_empty());
    }

    #[test]
    fn stored_users_decode_only_what_is_not_the_same_and_keep_to_the_range() {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let state = |name: &str| {
            let mut a = Attrs::new();
            a.insert("userName", json!(name));
            a
        };
        let ids = ["a", "b", "c", "d"];
        let recs: Vec<Record> = ids
            .iter()
            .map(|id| Record::UserState {
                app: "x".into(),
                source_id: (*id).into(),
                scim_id: format!("u-{id}").into(),
                state: state(id),
            })
            .collect();
        store.apply(&recs).unwrap();
        // `same` sees each row's id and stored text; "b" is the same.
        let mut seen = Vec::new();
        let all = store
            .stored_users("x", |id, text| {
                seen.push((id.to_owned(), text.to_owned()));
                id == "b"
            })
            .unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], ("a".into(), r#"{"userName":"a"}"#.into()));
        let got: Vec<(&str, Option<&Attrs>)> = all
            .iter()
            .map(|u| (u.source_id.as_str(), u.state.as_ref()))
            .collect();
        let (a, c, d) = (state("a"), state("c"), state("d"));
        assert_eq!(
            got,
            vec![
                ("a", Some(&a)),
                ("b", None),
                ("c", Some(&c)),
                ("d", Some(&d))
            ]
        );
        assert_eq!(all[1].scim_id.as_str(), "u-b");
        // Two halves make the whole, in order, each row once.
        let lower = store
            .stored_users_in("x", (Unbounded, Excluded("c")), |_, _| false)
            .unwrap();
        let upper = store
            .stored_users_in("x", (Included("c"), Unbounded), |_, _| false)
            .unwrap();
        let names = |v: &[StoredUser]| -> Vec<String> {
            v.iter().map(|u| u.source_id.to_string()).collect()
        };
        assert_eq!(names(&lower), ["a", "b"]);
        assert_eq!(names(&upper), ["c", "d"]);
        let middle = store
            .stored_users_in("x", (Excluded("a"), Included("c")), |_, _| false)
            .unwrap();
        assert_eq!(names(&middle), ["b", "c"]);
        assert!(store.stored_users("other", |_, _| true).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_state_is_read_as_empty_and_the_rest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut state = Attrs::new();
        state.insert("userName", json!("ann"));
        let link = |id: &str| Record::UserState {
            app: "a".into(),
            source_id: id.into(),
            scim_id: format!("u{id}").into(),
            state: state.clone(),
        };
        store.apply(&[link("1"), link("2")]).unwrap();
        store
            .conn
            .execute(
                "UPDATE user_links SET state = '{\"userName\": tru' WHERE source_id = '1'",
                [],
            )
            .unwrap();
        let users = store.user_links("a").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].source_id.as_str(), "1");
        assert!(users[0].state.is_empty());
        assert_eq!(users[0].scim_id.0, "u1");
        assert_eq!(users[1].state, state);
    }
}
