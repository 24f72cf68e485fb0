//! The writer thread: every outcome and link change of a run goes through it.
//!
//! Workers send one message per finished action (its outcome rows and link
//! updates together); the thread drains whatever is queued and commits it in
//! one transaction, so thousands of outcomes a second cost a few commits, and
//! an action's outcome never lands without its link change or the reverse.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Transaction, params};
use serde_json::Value;

use super::{Store, StoreError, now_ms};
use crate::model::{ScimId, SourceId};
use crate::plan::Attrs;

/// One report row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutcomeRow {
    /// Run id.
    pub run_id: i64,
    /// Target name.
    pub app: String,
    /// `user`, `group`, `membership`, `record`.
    pub resource: String,
    /// `create`, `update`, `link`, `disable`, `delete`, `add_member`, `remove_member`, `validate`.
    pub action: String,
    /// Source id.
    pub source_id: Option<String>,
    /// userName or group name.
    pub user_name: Option<String>,
    /// Work email.
    pub email: Option<String>,
    /// Group name (membership rows).
    pub group_name: Option<String>,
    /// Target id.
    pub scim_id: Option<String>,
    /// `applied`, `failed`, `skipped`, `invalid`, `held`.
    pub outcome: String,
    /// HTTP status of the last attempt.
    pub http_status: Option<u16>,
    /// SCIM `scimType`.
    pub scim_type: Option<String>,
    /// Reason, error detail, file and line.
    pub detail: Option<String>,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Time spent, retries included.
    pub duration_ms: Option<u64>,
}

/// A change to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A report row.
    Outcome(OutcomeRow),
    /// Link (or relink) a user and set the state last pushed.
    UserState {
        /// Target name.
        app: String,
        /// Source id.
        source_id: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// Attributes now in the target.
        state: Attrs,
    },
    /// Change some attributes of a linked user's stored state.
    UserPatch {
        /// Target name.
        app: String,
        /// Source id.
        source_id: SourceId,
        /// path → new value (None: removed).
        changes: Vec<(String, Option<Value>)>,
    },
    /// Forget a user link (and its stored memberships).
    UserUnlink {
        /// Target name.
        app: String,
        /// Source id.
        source_id: SourceId,
    },
    /// Link a group.
    GroupLink {
        /// Target name.
        app: String,
        /// Source id.
        source_id: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// Name.
        display_name: String,
    },
    /// Record the old group of a rename, to be deleted.
    GroupRetire {
        /// Target name.
        app: String,
        /// The renamed source group.
        source_id: SourceId,
        /// The old group's target id.
        scim_id: ScimId,
        /// The old name.
        display_name: String,
    },
    /// The old group of a rename is gone.
    GroupRetired {
        /// Target name.
        app: String,
        /// The old group's target id.
        scim_id: ScimId,
    },
    /// Forget a group link and its stored memberships.
    GroupUnlink {
        /// Target name.
        app: String,
        /// Source id.
        source_id: SourceId,
    },
    /// Stored membership changes.
    Members {
        /// Target name.
        app: String,
        /// Group source id.
        group: SourceId,
        /// Users added.
        add: Vec<SourceId>,
        /// Users removed.
        remove: Vec<SourceId>,
    },
    /// Journal a create before it is sent.
    Intent {
        /// Target name.
        app: String,
        /// `user` or `group`.
        kind: String,
        /// Source id.
        source_id: SourceId,
        /// Run id.
        run_id: i64,
    },
    /// Replace a group's stored members (after a full read).
    MembersReset {
        /// Target name.
        app: String,
        /// Group source id.
        group: SourceId,
        /// Members now in the target.
        members: Vec<SourceId>,
    },
}

pub(super) fn apply_one(tx: &Transaction<'_>, rec: &Record) -> rusqlite::Result<()> {
    let now = now_ms();
    match rec {
        Record::Outcome(o) => {
            tx.prepare_cached(
                "INSERT INTO outcomes (run_id, at, app, resource, action, source_id, user_name, email, group_name,
                 scim_id, outcome, http_status, scim_type, detail, attempts, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(params![
                o.run_id,
                now,
                o.app,
                o.resource,
                o.action,
                o.source_id,
                o.user_name,
                o.email,
                o.group_name,
                o.scim_id,
                o.outcome,
                o.http_status,
                o.scim_type,
                o.detail,
                o.attempts,
                o.duration_ms.map(|d| d as i64),
            ])?;
        }
        Record::UserState {
            app,
            source_id,
            scim_id,
            state,
        } => {
            tx.prepare_cached(
                "DELETE FROM user_links WHERE app = ?1 AND scim_id = ?2 AND source_id <> ?3",
            )?
            .execute(params![app, scim_id.as_str(), source_id.as_str()])?;
            let json = serde_json::to_string(state).unwrap_or_else(|_| "{}".into());
            tx.prepare_cached(
                "INSERT INTO user_links (app, source_id, scim_id, state, linked_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT(app, source_id) DO UPDATE SET scim_id = excluded.scim_id, state = excluded.state, updated_at = excluded.updated_at",
            )?
            .execute(params![app, source_id.as_str(), scim_id.as_str(), json, now])?;
        }
        Record::UserPatch {
            app,
            source_id,
            changes,
        } => {
            let current: Option<String> = tx
                .prepare_cached("SELECT state FROM user_links WHERE app = ?1 AND source_id = ?2")?
                .query_row(params![app, source_id.as_str()], |r| r.get(0))
                .ok();
            if let Some(current) = current {
                let mut state: Attrs = serde_json::from_str(&current).unwrap_or_default();
                for (path, value) in changes {
                    match value {
                        Some(v) => state.insert(path.clone(), v.clone()),
                        None => state.remove(path),
                    };
                }
                let json = serde_json::to_string(&state).unwrap_or_else(|_| "{}".into());
                tx.prepare_cached("UPDATE user_links SET state = ?3, updated_at = ?4 WHERE app = ?1 AND source_id = ?2")?
                    .execute(params![app, source_id.as_str(), json, now])?;
            }
        }
        Record::UserUnlink { app, source_id } => {
            tx.prepare_cached("DELETE FROM user_links WHERE app = ?1 AND source_id = ?2")?
                .execute(params![app, source_id.as_str()])?;
            tx.prepare_cached("DELETE FROM memberships WHERE app = ?1 AND user_id = ?2")?
                .execute(params![app, source_id.as_str()])?;
        }
        Record::GroupLink {
            app,
            source_id,
            scim_id,
            display_name,
        } => {
            // The group may move from another source record (re-keyed in the
            // source): its stored members move with it.
            tx.prepare_cached(
                "INSERT OR IGNORE INTO memberships (app, group_id, user_id)
                 SELECT m.app, ?3, m.user_id FROM memberships m JOIN group_links l
                   ON l.app = m.app AND l.source_id = m.group_id
                 WHERE l.app = ?1 AND l.scim_id = ?2 AND l.source_id <> ?3",
            )?
            .execute(params![app, scim_id.as_str(), source_id.as_str()])?;
            tx.prepare_cached(
                "DELETE FROM memberships WHERE app = ?1 AND group_id IN
                   (SELECT source_id FROM group_links WHERE app = ?1 AND scim_id = ?2 AND source_id <> ?3)",
            )?
            .execute(params![app, scim_id.as_str(), source_id.as_str()])?;
            tx.prepare_cached(
                "DELETE FROM group_links WHERE app = ?1 AND scim_id = ?2 AND source_id <> ?3",
            )?
            .execute(params![app, scim_id.as_str(), source_id.as_str()])?;
            tx.prepare_cached(
                "INSERT INTO group_links (app, source_id, scim_id, display_name, linked_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT(app, source_id) DO UPDATE SET scim_id = excluded.scim_id, display_name = excluded.display_name, updated_at = excluded.updated_at",
            )?
            .execute(params![app, source_id.as_str(), scim_id.as_str(), display_name, now])?;
        }
        Record::GroupRetire {
            app,
            source_id,
            scim_id,
            display_name,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO retired_groups (app, scim_id, source_id, display_name, retired_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![app, scim_id.as_str(), source_id.as_str(), display_name, now])?;
        }
        Record::GroupRetired { app, scim_id } => {
            tx.prepare_cached("DELETE FROM retired_groups WHERE app = ?1 AND scim_id = ?2")?
                .execute(params![app, scim_id.as_str()])?;
        }
        Record::GroupUnlink { app, source_id } => {
            tx.prepare_cached("DELETE FROM group_links WHERE app = ?1 AND source_id = ?2")?
                .execute(params![app, source_id.as_str()])?;
            tx.prepare_cached("DELETE FROM memberships WHERE app = ?1 AND group_id = ?2")?
                .execute(params![app, source_id.as_str()])?;
        }
        Record::Members {
            app,
            group,
            add,
            remove,
        } => {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO memberships (app, group_id, user_id) VALUES (?1, ?2, ?3)",
            )?;
            for u in add {
                ins.execute(params![app, group.as_str(), u.as_str()])?;
            }
            let mut del = tx.prepare_cached(
                "DELETE FROM memberships WHERE app = ?1 AND group_id = ?2 AND user_id = ?3",
            )?;
            for u in remove {
                del.execute(params![app, group.as_str(), u.as_str()])?;
            }
        }
        Record::Intent {
            app,
            kind,
            source_id,
            run_id,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO intents (app, kind, source_id, run_id, sent_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![app, kind, source_id.as_str(), run_id, now])?;
        }
        Record::MembersReset {
            app,
            group,
            members,
        } => {
            tx.prepare_cached("DELETE FROM memberships WHERE app = ?1 AND group_id = ?2")?
                .execute(params![app, group.as_str()])?;
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO memberships (app, group_id, user_id) VALUES (?1, ?2, ?3)",
            )?;
            for u in members {
                ins.execute(params![app, group.as_str(), u.as_str()])?;
            }
        }
    }
    Ok(())
}

enum Msg {
    Records(Vec<Record>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Handle to the writer thread.
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    join: JoinHandle<(Store, Result<(), StoreError>)>,
}

impl Recorder {
    /// Move the store into a writer thread.
    pub fn spawn(mut store: Store) -> Recorder {
        let (tx, rx) = mpsc::channel::<Msg>();
        let join = std::thread::Builder::new()
            .name("scimsync-store".into())
            .spawn(move || {
                let mut result = Ok(());
                while let Ok(first) = rx.recv() {
                    let mut batch = Vec::new();
                    let mut acks = Vec::new();
                    let mut next = Some(first);
                    while let Some(m) = next.take() {
                        match m {
                            Msg::Records(r) => batch.extend(r),
                            Msg::Flush(ack) => acks.push(ack),
                        }
                        if batch.len() < 10_000 {
                            next = rx.try_recv().ok();
                        }
                    }
                    if !batch.is_empty()
                        && let Err(e) = store.apply(&batch)
                        && result.is_ok()
                    {
                        tracing::error!(error = %e, "writing to the store failed");
                        result = Err(e);
                    }
                    for ack in acks {
                        let _ = ack.send(());
                    }
                }
                (store, result)
            })
            .expect("spawning the store thread");
        Recorder { tx, join }
    }

    /// Queue the records of one action.
    pub fn send(&self, records: Vec<Record>) {
        if !records.is_empty() {
            // The thread only ends when every sender is gone, so this cannot fail.
            let _ = self.tx.send(Msg::Records(records));
        }
    }

    /// Wait until everything queued so far is committed.
    pub async fn flush(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Stop the thread and get the store back, with the first write error if any.
    pub fn finish(self) -> (Store, Result<(), StoreError>) {
        drop(self.tx);
        self.join.join().expect("the store thread panicked")
    }
}
