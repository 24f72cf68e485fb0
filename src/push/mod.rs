//! Push: apply a [`Plan`] to the target and record every outcome.
//!
//! Phases run in order with a barrier between them (groups before their
//! members, destructive work last); actions inside a phase run concurrently,
//! bounded by the target's concurrency and paced by its [`throttle`]. Each
//! finished action sends its outcome rows and link changes to the store's
//! writer thread as one message. An action that depends on a failed one
//! (members of a user whose create failed) is skipped with that reason. A 401
//! or 403 stops the run: nothing more is sent with a key the target refuses.

pub mod client;
pub mod retry;
pub mod throttle;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::model::{ScimId, SourceId};
use crate::plan::{Action, Attrs, Change, Member, Plan};
use crate::scim::{self, AttrPath};
use crate::store::{OutcomeRow, Record, Recorder, RunCounts};
use client::{Failure, ScimClient, ScimError};

/// What the executor needs besides the plan.
pub struct Context<'a> {
    /// The target's client.
    pub client: &'a ScimClient,
    /// The store writer.
    pub recorder: &'a Recorder,
    /// Run id for report rows.
    pub run_id: i64,
    /// Target name.
    pub app: &'a str,
    /// Actions in flight at once.
    pub concurrency: usize,
    /// Adopt a same-named group when a create answers 409.
    pub adopt_groups: bool,
    /// Groups whose create an interrupted run sent without recording the
    /// answer: looked up before posting.
    pub in_doubt_groups: std::collections::BTreeSet<SourceId>,
    /// Stop dispatching when cancelled (SIGINT/SIGTERM).
    pub cancel: CancellationToken,
    /// Called after each finished action with (actions done, actions in all).
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    /// Member values per group PATCH.
    pub member_chunk: usize,
}

/// How an apply ended.
#[derive(Debug, Default)]
pub struct Applied {
    /// Row counts.
    pub counts: RunCounts,
    /// Set when the run was stopped (auth refused, interrupted).
    pub stopped: Option<String>,
}

#[derive(Default)]
struct Shared {
    users: Mutex<RunLinks>,
    groups: Mutex<RunLinks>,
    failed_users: Mutex<HashSet<SourceId>>,
    failed_groups: Mutex<HashSet<SourceId>>,
    stop: Mutex<Option<String>>,
}

/// Links made or confirmed during this run, both ways.
#[derive(Default)]
struct RunLinks {
    ids: HashMap<SourceId, ScimId>,
    /// Which source record each target resource was linked to in this run.
    owners: HashMap<ScimId, SourceId>,
}

impl RunLinks {
    fn link(&mut self, source: &SourceId, id: &ScimId) {
        self.ids.insert(source.clone(), id.clone());
        self.owners.insert(id.clone(), source.clone());
    }

    fn id(&self, source: &SourceId) -> Option<ScimId> {
        self.ids.get(source).cloned()
    }

    /// The other source record resource `id` was linked to earlier in this run,
    /// if any (re-keyed in the source: same userName or name, new source id).
    /// The resource now belongs to that record: it must not be deprovisioned or
    /// dropped from groups on behalf of its previous one.
    fn new_owner(&self, source: &SourceId, id: &ScimId) -> Option<SourceId> {
        self.owners.get(id).filter(|o| *o != source).cloned()
    }
}

/// The outcome of one action: report rows and store changes.
struct Done {
    records: Vec<Record>,
    applied: u64,
    failed: u64,
    skipped: u64,
}

/// Apply the plan; returns counts. Outcome rows are queued on the recorder.
pub async fn apply(plan: &Plan, ctx: &Context<'_>) -> Applied {
    let shared = Shared::default();
    let mut counts = RunCounts::default();
    let mut phase_start = 0;
    let mut finished = 0;
    while phase_start < plan.actions.len() {
        let phase = plan.actions[phase_start].phase();
        let phase_end = plan.actions[phase_start..]
            .iter()
            .position(|a| a.phase() != phase)
            .map_or(plan.actions.len(), |n| phase_start + n);
        let actions = &plan.actions[phase_start..phase_end];
        tracing::info!(phase, actions = actions.len(), "applying phase");
        let mut stream = futures_util::stream::iter(actions)
            .map(|a| execute(a, ctx, &shared))
            .buffer_unordered(ctx.concurrency.max(1) * 2);
        while let Some(done) = stream.next().await {
            counts.applied += done.applied;
            counts.failed += done.failed;
            counts.skipped += done.skipped;
            ctx.recorder.send(done.records);
            finished += 1;
            if let Some(progress) = ctx.progress {
                progress(finished, plan.actions.len());
            }
        }
        phase_start = phase_end;
    }
    let stats = &ctx.client.stats;
    counts.requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    counts.retries = stats.retries.load(std::sync::atomic::Ordering::Relaxed);
    counts.throttled = stats.throttled.load(std::sync::atomic::Ordering::Relaxed);
    let stopped = shared.stop.lock().expect("not poisoned").clone();
    Applied { counts, stopped }
}

/// Report rows with outcome `held` for actions the deprovisioning guard
/// stopped (one per member for membership removals). Nothing is sent.
pub fn held_records(actions: &[Action], ctx: &Context<'_>, reason: &str) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let mut n = 0;
    for a in actions {
        let row = Row {
            ctx,
            resource: a.resource(),
            action: a.verb(),
            started: Instant::now(),
        };
        let done = mark_all(a, &row, "held", reason);
        n += done.skipped;
        records.extend(done.records);
    }
    (records, n)
}

/// A report row builder for one action.
struct Row<'a> {
    ctx: &'a Context<'a>,
    resource: &'static str,
    action: &'static str,
    started: Instant,
}

impl Row<'_> {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        source_id: Option<&SourceId>,
        user_name: Option<&str>,
        email: Option<&str>,
        group_name: Option<&str>,
        scim_id: Option<&ScimId>,
        outcome: &str,
        http_status: Option<u16>,
        scim_type: Option<&str>,
        detail: Option<String>,
        attempts: u32,
    ) -> Record {
        Record::Outcome(OutcomeRow {
            run_id: self.ctx.run_id,
            app: self.ctx.app.to_owned(),
            resource: self.resource.to_owned(),
            action: self.action.to_owned(),
            source_id: source_id.map(|s| s.to_string()),
            user_name: user_name.map(str::to_owned),
            email: email.map(str::to_owned),
            group_name: group_name.map(str::to_owned),
            scim_id: scim_id.map(|s| s.to_string()),
            outcome: outcome.to_owned(),
            http_status,
            scim_type: scim_type.map(str::to_owned),
            detail,
            attempts,
            duration_ms: Some(self.started.elapsed().as_millis() as u64),
        })
    }
}

/// Detail of a membership change that corrects drift.
const DRIFT: &str = "drift: the target's membership differed from what scimsync last pushed (edited in the target, or a change it acknowledged but did not apply)";

fn describe(e: &ScimError) -> String {
    match e {
        ScimError::Http {
            status: 401,
            detail,
            ..
        } => format!(
            "the target refused the API key (401 {detail}): the key is wrong or has expired — Atlassian directory API keys expire one year after they are created; generate a new one in admin.atlassian.com"
        ),
        ScimError::Http {
            status: 403,
            detail,
            ..
        } => {
            format!(
                "the target forbids this (403 {detail}): the key lacks rights on this directory"
            )
        }
        ScimError::Http {
            status: 409,
            detail,
            ..
        } => format!(
            "409 uniqueness: {detail} — the email or userName belongs to another account (or a stale SCIM record); free it in Atlassian admin, then re-run"
        ),
        other => other.to_string(),
    }
}

fn email_of(attrs: &Attrs) -> Option<&str> {
    attrs
        .iter()
        .find(|(k, _)| k.starts_with("emails["))
        .and_then(|(_, v)| v.as_str())
}

impl Shared {
    fn link_user(&self, user: &SourceId, id: &ScimId) {
        self.users.lock().expect("not poisoned").link(user, id);
    }

    fn new_owner(&self, user: &SourceId, id: &ScimId) -> Option<SourceId> {
        self.users.lock().expect("not poisoned").new_owner(user, id)
    }

    fn link_group(&self, group: &SourceId, id: &ScimId) {
        self.groups.lock().expect("not poisoned").link(group, id);
    }

    fn new_group_owner(&self, group: &SourceId, id: &ScimId) -> Option<SourceId> {
        self.groups
            .lock()
            .expect("not poisoned")
            .new_owner(group, id)
    }

    fn stopped(&self) -> Option<String> {
        self.stop.lock().expect("not poisoned").clone()
    }

    /// Note a failure that must stop the run.
    fn check_fatal(&self, e: &ScimError) {
        if matches!(e.status(), Some(401 | 403)) {
            let mut stop = self.stop.lock().expect("not poisoned");
            if stop.is_none() {
                *stop = Some(describe(e));
            }
        }
    }
}

async fn execute(action: &Action, ctx: &Context<'_>, shared: &Shared) -> Done {
    let row = Row {
        ctx,
        resource: action.resource(),
        action: action.verb(),
        started: Instant::now(),
    };
    let stop_reason = shared.stopped().or_else(|| {
        ctx.cancel
            .is_cancelled()
            .then(|| "the run was interrupted before this action".to_owned())
    });
    if let Some(reason) = stop_reason {
        return skip_all(action, &row, &format!("not attempted: {reason}"));
    }
    if let Action::DisableUser {
        user,
        scim_id,
        user_name,
        ..
    }
    | Action::DeleteUser {
        user,
        scim_id,
        user_name,
        ..
    } = action
        && let Some(owner) = shared.new_owner(user, scim_id)
    {
        let row = Row {
            action: "unlink",
            ..row
        };
        let not = if matches!(action, Action::DisableUser { .. }) {
            "disabled"
        } else {
            "deleted"
        };
        return done_ok(vec![
            row.record(
                Some(user),
                Some(user_name),
                None,
                None,
                Some(scim_id),
                "applied",
                None,
                None,
                Some(format!(
                    "the account now belongs to source user `{owner}` (linked in this run); link removed, account not {not}"
                )),
                0,
            ),
            Record::UserUnlink {
                app: ctx.app.into(),
                source_id: user.clone(),
            },
        ]);
    }
    if let Action::DeleteGroup {
        group,
        scim_id,
        display_name,
    } = action
        && let Some(owner) = shared.new_group_owner(group, scim_id)
    {
        let row = Row {
            action: "unlink",
            ..row
        };
        return done_ok(vec![
            row.record(
                Some(group),
                Some(display_name),
                None,
                None,
                Some(scim_id),
                "applied",
                None,
                None,
                Some(format!(
                    "the group now belongs to source group `{owner}` (linked in this run); link removed, group not deleted"
                )),
                0,
            ),
            Record::GroupUnlink {
                app: ctx.app.into(),
                source_id: group.clone(),
            },
        ]);
    }
    // Journal a create (committed) before anything is sent: if the run is cut
    // off between the POST and its outcome, the next run finds the entry
    // unresolved and looks the resource up instead of posting it again.
    // (A rename's create needs no entry: its group stays linked to the old
    // group until the answer is recorded, and a repeated POST meets 409 and
    // the lookup that links the group it finds under the new name.)
    if let Action::CreateUser { user: id, .. } | Action::CreateGroup { group: id, .. } = action {
        ctx.recorder.send(vec![Record::Intent {
            app: ctx.app.into(),
            kind: action.resource().into(),
            source_id: id.clone(),
            run_id: ctx.run_id,
        }]);
        ctx.recorder.flush().await;
    }
    match action {
        Action::CreateUser {
            user,
            user_name,
            attrs,
            lookup_first,
        } => create_user(ctx, shared, &row, user, user_name, attrs, *lookup_first).await,
        Action::UpdateUser {
            user,
            scim_id,
            user_name,
            changes,
            adopt,
            after,
        } => {
            shared.link_user(user, scim_id);
            update_user(
                ctx,
                shared,
                &row,
                user,
                scim_id,
                user_name,
                changes,
                adopt.is_some(),
                after.as_ref(),
            )
            .await
        }
        Action::DisableUser {
            user,
            scim_id,
            user_name,
            why,
        } => {
            let ops = vec![AttrPath::Simple("active".into()).patch_op(Some(Value::Bool(false)))];
            match ctx.client.patch("Users", scim_id, ops).await {
                Ok(r) => done_ok(vec![
                    row.record(
                        Some(user),
                        Some(user_name),
                        None,
                        None,
                        Some(scim_id),
                        "applied",
                        Some(r.status),
                        None,
                        Some(why.describe().to_owned()),
                        r.attempts,
                    ),
                    Record::UserPatch {
                        app: ctx.app.into(),
                        source_id: user.clone(),
                        changes: vec![("active".into(), Some(Value::Bool(false)))],
                    },
                ]),
                Err(f) => {
                    gone_or_failed(ctx, shared, &row, user, user_name, scim_id, f, "disabled")
                }
            }
        }
        Action::DeleteUser {
            user,
            scim_id,
            user_name,
            why,
        } => match ctx.client.delete("Users", scim_id).await {
            Ok(r) => done_ok(vec![
                row.record(
                    Some(user),
                    Some(user_name),
                    None,
                    None,
                    Some(scim_id),
                    "applied",
                    Some(r.status),
                    None,
                    Some(why.describe().to_owned()),
                    r.attempts,
                ),
                Record::UserUnlink {
                    app: ctx.app.into(),
                    source_id: user.clone(),
                },
            ]),
            Err(f) => gone_or_failed(ctx, shared, &row, user, user_name, scim_id, f, "deleted"),
        },
        Action::CreateGroup {
            group,
            display_name,
        } => create_group(ctx, shared, &row, group, display_name).await,
        Action::UpdateGroup {
            group,
            scim_id,
            display_name,
            changes,
            ..
        } => {
            shared.link_group(group, scim_id);
            let link = Record::GroupLink {
                app: ctx.app.into(),
                source_id: group.clone(),
                scim_id: scim_id.clone(),
                display_name: display_name.clone(),
            };
            if changes.is_empty() {
                return done_ok(vec![
                    row.record(
                        Some(group),
                        Some(display_name),
                        None,
                        None,
                        Some(scim_id),
                        "applied",
                        None,
                        None,
                        Some("existing group linked".into()),
                        0,
                    ),
                    link,
                ]);
            }
            let ops = patch_ops(changes);
            match ctx.client.patch("Groups", scim_id, ops).await {
                Ok(r) => done_ok(vec![
                    row.record(
                        Some(group),
                        Some(display_name),
                        None,
                        None,
                        Some(scim_id),
                        "applied",
                        Some(r.status),
                        None,
                        Some(changed_paths(changes)),
                        r.attempts,
                    ),
                    link,
                ]),
                Err(f) => {
                    shared.check_fatal(&f.error);
                    done_failed(vec![row.record(
                        Some(group),
                        Some(display_name),
                        None,
                        None,
                        Some(scim_id),
                        "failed",
                        f.error.status(),
                        f.error.scim_type(),
                        Some(describe(&f.error)),
                        f.attempts,
                    )])
                }
            }
        }
        Action::AddMembers {
            group,
            display_name,
            group_scim_id,
            members,
        } => {
            add_members(
                ctx,
                shared,
                &row,
                group,
                display_name,
                group_scim_id.as_ref(),
                members,
            )
            .await
        }
        Action::RemoveMembers {
            group,
            display_name,
            group_scim_id,
            members,
        } => {
            // A member whose account moved to another source user in this run
            // stays in the group (as that user); only the stored membership goes.
            let (moved, members): (Vec<&Member>, Vec<&Member>) = members.iter().partition(|m| {
                m.user
                    .as_ref()
                    .zip(m.scim_id.as_ref())
                    .is_some_and(|(u, id)| shared.new_owner(u, id).is_some())
            });
            let moved = Record::Members {
                app: ctx.app.into(),
                group: group.clone(),
                add: vec![],
                remove: moved.iter().filter_map(|m| m.user.clone()).collect(),
            };
            if members.is_empty() {
                return Done {
                    records: vec![moved],
                    applied: 0,
                    failed: 0,
                    skipped: 0,
                };
            }
            let ops: Vec<Value> = members
                .iter()
                .filter_map(|m| m.scim_id.as_ref().map(scim::remove_member_op))
                .collect();
            let result = ctx.client.patch("Groups", group_scim_id, ops).await;
            let (outcome, status, scim_type, detail, attempts) = match &result {
                Ok(r) => ("applied", Some(r.status), None, None, r.attempts),
                Err(f) => {
                    shared.check_fatal(&f.error);
                    (
                        "failed",
                        f.error.status(),
                        f.error.scim_type(),
                        Some(describe(&f.error)),
                        f.attempts,
                    )
                }
            };
            let mut records: Vec<Record> = members
                .iter()
                .map(|m| {
                    row.record(
                        m.user.as_ref(),
                        Some(&m.label),
                        None,
                        Some(display_name),
                        m.scim_id.as_ref(),
                        outcome,
                        status,
                        scim_type,
                        detail.clone().or_else(|| m.drift.then(|| DRIFT.to_owned())),
                        attempts,
                    )
                })
                .collect();
            records.push(moved);
            let n = members.len() as u64;
            if result.is_ok() {
                records.push(Record::Members {
                    app: ctx.app.into(),
                    group: group.clone(),
                    add: vec![],
                    remove: members.iter().filter_map(|m| m.user.clone()).collect(),
                });
                Done {
                    records,
                    applied: n,
                    failed: 0,
                    skipped: 0,
                }
            } else {
                Done {
                    records,
                    applied: 0,
                    failed: n,
                    skipped: 0,
                }
            }
        }
        Action::RenameGroup {
            group,
            old_scim_id,
            old_name,
            display_name,
            members,
            delete_old,
        } => {
            rename_group(
                ctx,
                shared,
                &row,
                group,
                old_scim_id,
                old_name,
                display_name,
                members,
                *delete_old,
            )
            .await
        }
        Action::RetireGroup {
            group,
            scim_id,
            display_name,
        } => retire_group(ctx, shared, &row, group, scim_id, display_name).await,
        Action::DeleteGroup {
            group,
            scim_id,
            display_name,
        } => {
            let unlink = Record::GroupUnlink {
                app: ctx.app.into(),
                source_id: group.clone(),
            };
            let notes = DeleteNotes {
                done: None,
                gone: "the group was already gone from the target",
                failed: "",
            };
            delete_group(
                ctx,
                shared,
                &row,
                group,
                scim_id,
                display_name,
                unlink,
                notes,
            )
            .await
        }
    }
}

fn done_ok(records: Vec<Record>) -> Done {
    Done {
        records,
        applied: 1,
        failed: 0,
        skipped: 0,
    }
}

fn done_failed(records: Vec<Record>) -> Done {
    Done {
        records,
        applied: 0,
        failed: 1,
        skipped: 0,
    }
}

fn skip_all(action: &Action, row: &Row<'_>, reason: &str) -> Done {
    mark_all(action, row, "skipped", reason)
}

fn mark_all(action: &Action, row: &Row<'_>, outcome: &str, reason: &str) -> Done {
    let records: Vec<Record> = match action {
        Action::AddMembers {
            display_name,
            members,
            ..
        }
        | Action::RemoveMembers {
            display_name,
            members,
            ..
        } => members
            .iter()
            .map(|m| {
                row.record(
                    m.user.as_ref(),
                    Some(&m.label),
                    None,
                    Some(display_name),
                    m.scim_id.as_ref(),
                    outcome,
                    None,
                    None,
                    Some(reason.to_owned()),
                    0,
                )
            })
            .collect(),
        other => {
            let (name, scim_id) = match other {
                Action::CreateUser { user_name, .. } => (user_name.as_str(), None),
                Action::UpdateUser {
                    user_name, scim_id, ..
                }
                | Action::DisableUser {
                    user_name, scim_id, ..
                }
                | Action::DeleteUser {
                    user_name, scim_id, ..
                } => (user_name.as_str(), Some(scim_id)),
                Action::CreateGroup { display_name, .. } => (display_name.as_str(), None),
                Action::UpdateGroup {
                    display_name,
                    scim_id,
                    ..
                }
                | Action::DeleteGroup {
                    display_name,
                    scim_id,
                    ..
                }
                | Action::RetireGroup {
                    display_name,
                    scim_id,
                    ..
                } => (display_name.as_str(), Some(scim_id)),
                Action::RenameGroup {
                    display_name,
                    old_scim_id,
                    ..
                } => (display_name.as_str(), Some(old_scim_id)),
                Action::AddMembers { .. } | Action::RemoveMembers { .. } => {
                    unreachable!("handled above")
                }
            };
            vec![row.record(
                Some(other.subject()),
                Some(name),
                None,
                None,
                scim_id,
                outcome,
                None,
                None,
                Some(reason.to_owned()),
                0,
            )]
        }
    };
    let n = records.len() as u64;
    Done {
        records,
        applied: 0,
        failed: 0,
        skipped: n,
    }
}

fn patch_ops(changes: &[Change]) -> Vec<Value> {
    changes
        .iter()
        .filter_map(|c| AttrPath::parse(&c.path).map(|p| p.patch_op(c.new.clone())))
        .collect()
}

fn changed_paths(changes: &[Change]) -> String {
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    format!("changed: {}", paths.join(", "))
}

/// A disable/delete that answered 404: the account is gone already, which is
/// what deprovisioning wanted; forget the link.
#[allow(clippy::too_many_arguments)]
fn gone_or_failed(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    user: &SourceId,
    user_name: &str,
    scim_id: &ScimId,
    f: Failure,
    what: &str,
) -> Done {
    if f.error.status() == Some(404) {
        return done_ok(vec![
            row.record(
                Some(user),
                Some(user_name),
                None,
                None,
                Some(scim_id),
                "applied",
                Some(404),
                None,
                Some(format!(
                    "the account was already gone from the target (not {what}); link removed"
                )),
                f.attempts,
            ),
            Record::UserUnlink {
                app: ctx.app.into(),
                source_id: user.clone(),
            },
        ]);
    }
    shared.check_fatal(&f.error);
    done_failed(vec![row.record(
        Some(user),
        Some(user_name),
        None,
        None,
        Some(scim_id),
        "failed",
        f.error.status(),
        f.error.scim_type(),
        Some(describe(&f.error)),
        f.attempts,
    )])
}

/// Find an existing account for a source user: externalId first, then userName.
async fn lookup_user(
    ctx: &Context<'_>,
    user: &SourceId,
    user_name: &str,
) -> Result<Option<Value>, Failure> {
    if let Some(found) = ctx
        .client
        .find("Users", "externalId", user.as_str())
        .await?
    {
        return Ok(Some(found));
    }
    ctx.client.find("Users", "userName", user_name).await
}

#[allow(clippy::too_many_arguments)]
async fn create_user(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    user: &SourceId,
    user_name: &str,
    attrs: &Attrs,
    lookup_first: bool,
) -> Done {
    let email = email_of(attrs);
    let fail = |f: &Failure, detail: String, shared: &Shared| {
        shared.check_fatal(&f.error);
        shared
            .failed_users
            .lock()
            .expect("not poisoned")
            .insert(user.clone());
        done_failed(vec![row.record(
            Some(user),
            Some(user_name),
            email,
            None,
            None,
            "failed",
            f.error.status(),
            f.error.scim_type(),
            Some(detail),
            f.attempts,
        )])
    };
    let mut attempts = 0;
    if lookup_first {
        match lookup_user(ctx, user, user_name).await {
            Ok(Some(found)) => {
                return adopt_user(
                    ctx,
                    shared,
                    row,
                    user,
                    user_name,
                    attrs,
                    &found,
                    "existing account matched before create",
                    attempts,
                )
                .await;
            }
            Ok(None) => {}
            Err(f) => {
                return fail(
                    &f,
                    format!(
                        "looking the account up before create failed: {}",
                        describe(&f.error)
                    ),
                    shared,
                );
            }
        }
    }
    let body = scim::user_body(attrs);
    let max_posts = 3;
    for post in 1..=max_posts {
        match ctx.client.create("Users", &body).await {
            Ok(reply) => {
                attempts += reply.attempts;
                let Some(id) = reply.body.as_ref().and_then(scim::resource_id) else {
                    // Created, but no id came back: find it.
                    return match lookup_user(ctx, user, user_name).await {
                        Ok(Some(found)) => adopt_user(ctx, shared, row, user, user_name, attrs, &found, "created; id read back by lookup", attempts).await,
                        _ => fail(
                            &Failure {
                                error: ScimError::Body {
                                    status: reply.status,
                                    message: "the create answer carried no id and the account could not be found".into(),
                                },
                                attempts,
                            },
                            "created but the answer carried no id; the next run will match the account".into(),
                            shared,
                        ),
                    };
                };
                shared.link_user(user, &id);
                return done_ok(vec![
                    row.record(
                        Some(user),
                        Some(user_name),
                        email,
                        None,
                        Some(&id),
                        "applied",
                        Some(reply.status),
                        None,
                        None,
                        attempts,
                    ),
                    Record::UserState {
                        app: ctx.app.into(),
                        source_id: user.clone(),
                        scim_id: id,
                        state: attrs.clone(),
                    },
                ]);
            }
            Err(f) => {
                attempts += f.attempts;
                let in_doubt = f.error.maybe_processed() && f.error.retryable();
                let conflict = f.error.status() == Some(409);
                if !(in_doubt || conflict) {
                    let detail = describe(&f.error);
                    return fail(&Failure { attempts, ..f }, detail, shared);
                }
                // The account may exist (409) or may have been created (in doubt):
                // look before anything else.
                match lookup_user(ctx, user, user_name).await {
                    Ok(Some(found)) => {
                        let how = if conflict {
                            "existing account adopted after 409"
                        } else {
                            "create was in doubt; the account existed and was adopted"
                        };
                        return adopt_user(
                            ctx, shared, row, user, user_name, attrs, &found, how, attempts,
                        )
                        .await;
                    }
                    Ok(None) if conflict => {
                        let detail = format!(
                            "{} (no account with this externalId or userName exists, so the conflict is on the email: it belongs to another Atlassian account)",
                            describe(&f.error)
                        );
                        return fail(&Failure { attempts, ..f }, detail, shared);
                    }
                    Ok(None) if post < max_posts => {
                        tracing::info!(user = %user, error = %f.error, "create in doubt and not found; sending it again");
                        continue;
                    }
                    Ok(None) => {
                        let detail = describe(&f.error);
                        return fail(&Failure { attempts, ..f }, detail, shared);
                    }
                    Err(lf) => {
                        let detail = format!(
                            "{}; the lookup that followed failed too: {}",
                            describe(&f.error),
                            describe(&lf.error)
                        );
                        return fail(&Failure { attempts, ..f }, detail, shared);
                    }
                }
            }
        }
    }
    unreachable!("the loop returns on its last iteration")
}

/// Link an existing account and PATCH whatever differs from `attrs`.
#[allow(clippy::too_many_arguments)]
async fn adopt_user(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    user: &SourceId,
    user_name: &str,
    attrs: &Attrs,
    found: &Value,
    how: &str,
    attempts_before: u32,
) -> Done {
    let email = email_of(attrs);
    let Some(id) = scim::resource_id(found) else {
        shared
            .failed_users
            .lock()
            .expect("not poisoned")
            .insert(user.clone());
        return done_failed(vec![row.record(
            Some(user),
            Some(user_name),
            email,
            None,
            None,
            "failed",
            None,
            None,
            Some("the matching account has no id".into()),
            attempts_before,
        )]);
    };
    let current = scim::read_attrs(found, attrs.keys());
    let mut changes = Vec::new();
    for (path, want) in attrs {
        if current.get(path) != Some(want) {
            changes.push(Change {
                path: path.to_owned(),
                old: current.get(path).cloned(),
                new: Some(want.clone()),
                drift: false,
            });
        }
    }
    shared.link_user(user, &id);
    let link = Record::UserState {
        app: ctx.app.into(),
        source_id: user.clone(),
        scim_id: id.clone(),
        state: attrs.clone(),
    };
    if changes.is_empty() {
        return done_ok(vec![
            row.record(
                Some(user),
                Some(user_name),
                email,
                None,
                Some(&id),
                "applied",
                None,
                None,
                Some(how.to_owned()),
                attempts_before,
            ),
            link,
        ]);
    }
    match ctx.client.patch("Users", &id, patch_ops(&changes)).await {
        Ok(r) => done_ok(vec![
            row.record(
                Some(user),
                Some(user_name),
                email,
                None,
                Some(&id),
                "applied",
                Some(r.status),
                None,
                Some(format!("{how}; {}", changed_paths(&changes))),
                attempts_before + r.attempts,
            ),
            link,
        ]),
        Err(f) => {
            shared.check_fatal(&f.error);
            // Linked (so it is never duplicated) with the state it really has.
            let mut state = current;
            state.insert("externalId", Value::String(user.to_string()));
            done_failed(vec![
                row.record(
                    Some(user),
                    Some(user_name),
                    email,
                    None,
                    Some(&id),
                    "failed",
                    f.error.status(),
                    f.error.scim_type(),
                    Some(format!(
                        "{how}, but updating it failed: {}",
                        describe(&f.error)
                    )),
                    attempts_before + f.attempts,
                ),
                Record::UserState {
                    app: ctx.app.into(),
                    source_id: user.clone(),
                    scim_id: id,
                    state,
                },
            ])
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn update_user(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    user: &SourceId,
    scim_id: &ScimId,
    user_name: &str,
    changes: &[Change],
    adopt: bool,
    after: Option<&Attrs>,
) -> Done {
    let state_record = || match after {
        Some(state) => Record::UserState {
            app: ctx.app.into(),
            source_id: user.clone(),
            scim_id: scim_id.clone(),
            state: state.clone(),
        },
        None => Record::UserPatch {
            app: ctx.app.into(),
            source_id: user.clone(),
            changes: changes
                .iter()
                .map(|c| (c.path.clone(), c.new.clone()))
                .collect(),
        },
    };
    if changes.is_empty() {
        return done_ok(vec![
            row.record(
                Some(user),
                Some(user_name),
                None,
                None,
                Some(scim_id),
                "applied",
                None,
                None,
                Some("existing account linked (no change needed)".into()),
                0,
            ),
            state_record(),
        ]);
    }
    match ctx.client.patch("Users", scim_id, patch_ops(changes)).await {
        Ok(r) => {
            let mut detail = changed_paths(changes);
            if adopt {
                detail = format!("existing account linked; {detail}");
            }
            if changes.iter().any(|c| c.drift) {
                detail.push_str(" (corrected drift in the target)");
            }
            done_ok(vec![
                row.record(
                    Some(user),
                    Some(user_name),
                    None,
                    None,
                    Some(scim_id),
                    "applied",
                    Some(r.status),
                    None,
                    Some(detail),
                    r.attempts,
                ),
                state_record(),
            ])
        }
        Err(f) if f.error.status() == Some(404) => {
            shared
                .failed_users
                .lock()
                .expect("not poisoned")
                .insert(user.clone());
            done_failed(vec![
                row.record(Some(user), Some(user_name), None, None, Some(scim_id), "failed", Some(404), None, Some("the account no longer exists in the target; its link was removed and the next run re-creates it".into()), f.attempts),
                Record::UserUnlink {
                    app: ctx.app.into(),
                    source_id: user.clone(),
                },
            ])
        }
        Err(f) => {
            shared.check_fatal(&f.error);
            done_failed(vec![row.record(
                Some(user),
                Some(user_name),
                None,
                None,
                Some(scim_id),
                "failed",
                f.error.status(),
                f.error.scim_type(),
                Some(describe(&f.error)),
                f.attempts,
            )])
        }
    }
}

async fn create_group(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    group: &SourceId,
    display_name: &str,
) -> Done {
    let link = |id: &ScimId| Record::GroupLink {
        app: ctx.app.into(),
        source_id: group.clone(),
        scim_id: id.clone(),
        display_name: display_name.to_owned(),
    };
    let fail = |status, scim_type: Option<&str>, detail: String, attempts| {
        shared
            .failed_groups
            .lock()
            .expect("not poisoned")
            .insert(group.clone());
        done_failed(vec![row.record(
            Some(group),
            Some(display_name),
            None,
            None,
            None,
            "failed",
            status,
            scim_type,
            Some(detail),
            attempts,
        )])
    };
    let adopt = |found: Option<Value>, attempts: u32, why: &str| -> Option<Done> {
        let id = found.as_ref().and_then(scim::resource_id)?;
        shared.link_group(group, &id);
        Some(done_ok(vec![
            row.record(
                Some(group),
                Some(display_name),
                None,
                None,
                Some(&id),
                "applied",
                None,
                None,
                Some(why.to_owned()),
                attempts,
            ),
            link(&id),
        ]))
    };
    if ctx.in_doubt_groups.contains(group) {
        match ctx.client.find("Groups", "displayName", display_name).await {
            Ok(Some(g)) if scim::str_attr(&g, "externalId") == Some(group.as_str()) => {
                if let Some(done) = adopt(
                    Some(g),
                    0,
                    "an interrupted run had created this group; linked",
                ) {
                    return done;
                }
            }
            Ok(_) => {}
            Err(f) => {
                shared.check_fatal(&f.error);
                return fail(
                    f.error.status(),
                    f.error.scim_type(),
                    format!(
                        "looking the group up before create failed: {}",
                        describe(&f.error)
                    ),
                    f.attempts,
                );
            }
        }
    }
    let body = scim::group_body(display_name, group.as_str());
    // Like users: a create that may have reached the server is looked up
    // first, and sent again (up to `max_posts` in all) only when not found.
    let max_posts = 3;
    let mut attempts = 0;
    for post in 1..=max_posts {
        let f = match ctx.client.create("Groups", &body).await {
            Ok(reply) => {
                let attempts = attempts + reply.attempts;
                return match reply.body.as_ref().and_then(scim::resource_id) {
                    Some(id) => {
                        shared.link_group(group, &id);
                        done_ok(vec![
                            row.record(
                                Some(group),
                                Some(display_name),
                                None,
                                None,
                                Some(&id),
                                "applied",
                                Some(reply.status),
                                None,
                                None,
                                attempts,
                            ),
                            link(&id),
                        ])
                    }
                    None => match ctx.client.find("Groups", "displayName", display_name).await {
                        Ok(found) => adopt(found, attempts, "created; id read back by lookup")
                            .unwrap_or_else(|| {
                                fail(
                                    Some(reply.status),
                                    None,
                                    "created but no id came back and the group was not found"
                                        .into(),
                                    attempts,
                                )
                            }),
                        Err(f) => fail(
                            f.error.status(),
                            None,
                            describe(&f.error),
                            attempts + f.attempts,
                        ),
                    },
                };
            }
            Err(f) => f,
        };
        attempts += f.attempts;
        shared.check_fatal(&f.error);
        let conflict = f.error.status() == Some(409);
        let in_doubt = f.error.maybe_processed() && f.error.retryable();
        if conflict || in_doubt {
            match ctx.client.find("Groups", "displayName", display_name).await {
                Ok(Some(g)) => {
                    let ours = scim::str_attr(&g, "externalId") == Some(group.as_str());
                    if ours || in_doubt || ctx.adopt_groups {
                        let why = if ours || in_doubt {
                            "create was in doubt; the group existed and was linked"
                        } else {
                            "a group with this name existed (409) and was adopted"
                        };
                        if let Some(done) = adopt(Some(g), attempts, why) {
                            return done;
                        }
                    } else {
                        return fail(Some(409), f.error.scim_type(), "a group with this name already exists in the target and is not managed by scimsync; set `groups.adopt_existing = true` to link it".into(), attempts);
                    }
                }
                Ok(None) if in_doubt && post < max_posts => {
                    tracing::info!(group = %group, error = %f.error, "group create in doubt and not found; sending it again");
                    continue;
                }
                _ => {}
            }
        }
        return fail(
            f.error.status(),
            f.error.scim_type(),
            describe(&f.error),
            attempts,
        );
    }
    unreachable!("the loop returns on its last iteration")
}

#[allow(clippy::too_many_arguments)]
async fn add_members(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    group: &SourceId,
    display_name: &str,
    group_scim_id: Option<&ScimId>,
    members: &[Member],
) -> Done {
    let group_id = group_scim_id
        .cloned()
        .or_else(|| shared.groups.lock().expect("not poisoned").id(group));
    let Some(group_id) = group_id else {
        let reason = if shared
            .failed_groups
            .lock()
            .expect("not poisoned")
            .contains(group)
        {
            "skipped: the group could not be created"
        } else {
            "skipped: the group has no id in the target"
        };
        let records: Vec<Record> = members
            .iter()
            .map(|m| {
                row.record(
                    m.user.as_ref(),
                    Some(&m.label),
                    None,
                    Some(display_name),
                    None,
                    "skipped",
                    None,
                    None,
                    Some(reason.into()),
                    0,
                )
            })
            .collect();
        let n = records.len() as u64;
        return Done {
            records,
            applied: 0,
            failed: 0,
            skipped: n,
        };
    };
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut ready: Vec<(&Member, ScimId)> = Vec::new();
    {
        let users = shared.users.lock().expect("not poisoned");
        let failed = shared.failed_users.lock().expect("not poisoned");
        for m in members {
            let id = m
                .scim_id
                .clone()
                .or_else(|| m.user.as_ref().and_then(|u| users.id(u)));
            match id {
                Some(id) => ready.push((m, id)),
                None => {
                    skipped += 1;
                    let reason = if m.user.as_ref().is_some_and(|u| failed.contains(u)) {
                        "skipped: the user could not be created"
                    } else {
                        "skipped: the user has no id in the target"
                    };
                    records.push(row.record(
                        m.user.as_ref(),
                        Some(&m.label),
                        None,
                        Some(display_name),
                        None,
                        "skipped",
                        None,
                        None,
                        Some(reason.into()),
                        0,
                    ));
                }
            }
        }
    }
    if ready.is_empty() {
        return Done {
            records,
            applied: 0,
            failed: 0,
            skipped,
        };
    }
    let first = send_add(ctx, &group_id, ready).await;
    let mut outcomes = vec![first];
    // A chunk refused as a whole (one unknown member: 400/404) is retried one member
    // at a time, so one bad member does not block the others.
    if let Some((batch, Err(f))) = outcomes.last()
        && batch.len() > 1
        && matches!(f.error.status(), Some(400 | 404))
    {
        let batch = batch.clone();
        outcomes.clear();
        for one in batch {
            outcomes.push(send_add(ctx, &group_id, vec![one]).await);
        }
    }
    let (mut applied, mut failed) = (0, 0);
    let mut added = Vec::new();
    for (batch, result) in outcomes {
        for (m, id) in batch {
            match &result {
                Ok(r) => {
                    applied += 1;
                    if let Some(u) = &m.user {
                        added.push(u.clone());
                    }
                    records.push(row.record(
                        m.user.as_ref(),
                        Some(&m.label),
                        None,
                        Some(display_name),
                        Some(&id),
                        "applied",
                        Some(r.status),
                        None,
                        m.drift.then(|| DRIFT.to_owned()),
                        r.attempts,
                    ));
                }
                Err(f) => {
                    failed += 1;
                    shared.check_fatal(&f.error);
                    records.push(row.record(
                        m.user.as_ref(),
                        Some(&m.label),
                        None,
                        Some(display_name),
                        Some(&id),
                        "failed",
                        f.error.status(),
                        f.error.scim_type(),
                        Some(describe(&f.error)),
                        f.attempts,
                    ));
                }
            }
        }
    }
    if !added.is_empty() {
        records.push(Record::Members {
            app: ctx.app.into(),
            group: group.clone(),
            add: added,
            remove: vec![],
        });
    }
    Done {
        records,
        applied,
        failed,
        skipped,
    }
}

async fn send_add<'m>(
    ctx: &Context<'_>,
    group_id: &ScimId,
    batch: Vec<(&'m Member, ScimId)>,
) -> (Vec<(&'m Member, ScimId)>, Result<client::Reply, Failure>) {
    let refs: Vec<&ScimId> = batch.iter().map(|(_, id)| id).collect();
    let r = ctx
        .client
        .patch("Groups", group_id, vec![scim::add_members_op(&refs)])
        .await;
    (batch, r)
}

/// A rename on a target that cannot rename: create the new group, move the
/// members that stay, delete the old group. The store follows each step
/// (the new link and the old group's retirement in one transaction, then
/// each moved chunk), so a run cut off anywhere resumes from what is done.
#[allow(clippy::too_many_arguments)]
async fn rename_group(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    group: &SourceId,
    old_scim_id: &ScimId,
    old_name: &str,
    display_name: &str,
    members: &[Member],
    delete_old: bool,
) -> Done {
    let create_row = Row {
        action: "create",
        ..*row
    };
    let created = create_group(ctx, shared, &create_row, group, display_name).await;
    let Some(new_id) = shared.groups.lock().expect("not poisoned").id(group) else {
        // The new group could not be created: the old one stays linked, with
        // its members, and the next run tries again.
        let mut created = created;
        created.records.extend(
            mark_all(
                &Action::AddMembers {
                    group: group.clone(),
                    display_name: display_name.to_owned(),
                    group_scim_id: None,
                    members: members.to_vec(),
                },
                &Row {
                    resource: "membership",
                    action: "add_member",
                    ..*row
                },
                "skipped",
                "skipped: the renamed group could not be created; the old group keeps its members",
            )
            .records,
        );
        return created;
    };
    // One transaction: the new link (from the create), the old group retired,
    // and the stored members reset to none (the new group starts empty).
    let mut records = created.records;
    if delete_old {
        records.push(Record::GroupRetire {
            app: ctx.app.into(),
            source_id: group.clone(),
            scim_id: old_scim_id.clone(),
            display_name: old_name.to_owned(),
        });
    }
    records.push(Record::MembersReset {
        app: ctx.app.into(),
        group: group.clone(),
        members: vec![],
    });
    ctx.recorder.send(records);
    ctx.recorder.flush().await;

    let mut done = Done {
        records: Vec::new(),
        applied: created.applied,
        failed: created.failed,
        skipped: created.skipped,
    };
    let member_row = Row {
        resource: "membership",
        action: "add_member",
        ..*row
    };
    let mut moved_all = true;
    for chunk in members.chunks(ctx.member_chunk.max(1)) {
        let moved = add_members(
            ctx,
            shared,
            &member_row,
            group,
            display_name,
            Some(&new_id),
            chunk,
        )
        .await;
        moved_all &= moved.failed == 0 && moved.skipped == 0;
        done.applied += moved.applied;
        done.failed += moved.failed;
        done.skipped += moved.skipped;
        ctx.recorder.send(moved.records);
    }
    let summary = format!(
        "renamed `{old_name}` to `{display_name}`: the target cannot rename groups, so `{display_name}` was created and {} members moved",
        members.len()
    );
    if !delete_old {
        done.records.push(row.record(
            Some(group),
            Some(display_name),
            None,
            None,
            Some(&new_id),
            "applied",
            None,
            None,
            Some(format!(
                "{summary}; the old group `{old_name}` ({old_scim_id}) is left in the target (policy.delete_groups = false): remove it by hand"
            )),
            0,
        ));
        return done;
    }
    if !moved_all {
        // Keep the old group (and its members' access) until every member
        // has moved: the next run moves the rest, then deletes it.
        done.records.push(row.record(
            Some(group),
            Some(display_name),
            None,
            None,
            Some(&new_id),
            "applied",
            None,
            None,
            Some(format!(
                "{summary}, some failed to move; the old group `{old_name}` is kept until they have, and deleted by a later run"
            )),
            0,
        ));
        return done;
    }
    let retired = retire_group(ctx, shared, row, group, old_scim_id, old_name).await;
    let ok = retired.failed == 0;
    done.records.extend(retired.records);
    done.records.push(row.record(
        Some(group),
        Some(display_name),
        None,
        None,
        Some(&new_id),
        if ok { "applied" } else { "failed" },
        None,
        None,
        Some(if ok {
            format!("{summary}, and the old group deleted")
        } else {
            format!("{summary}; deleting the old group `{old_name}` failed (see its row): the next run deletes it")
        }),
        0,
    ));
    if !ok {
        done.failed += 1;
    }
    done
}

/// DELETE the old group of a rename, unless this run could not create its
/// replacement (then the old group keeps serving its members).
async fn retire_group(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    group: &SourceId,
    scim_id: &ScimId,
    display_name: &str,
) -> Done {
    let row = Row {
        action: "delete",
        ..*row
    };
    if shared
        .failed_groups
        .lock()
        .expect("not poisoned")
        .contains(group)
    {
        return Done {
            records: vec![row.record(
                Some(group),
                Some(display_name),
                None,
                None,
                Some(scim_id),
                "skipped",
                None,
                None,
                Some("old group of a rename kept: its replacement could not be created in this run".into()),
                0,
            )],
            applied: 0,
            failed: 0,
            skipped: 1,
        };
    }
    let gone = Record::GroupRetired {
        app: ctx.app.into(),
        scim_id: scim_id.clone(),
    };
    let notes = DeleteNotes {
        done: Some("old group of a rename deleted"),
        gone: "old group of a rename was already gone",
        failed: "old group of a rename not deleted (the next run tries again): ",
    };
    delete_group(ctx, shared, &row, group, scim_id, display_name, gone, notes).await
}

/// Report details of a group DELETE: on success, when already gone (404),
/// and before the reason of a failure.
struct DeleteNotes {
    done: Option<&'static str>,
    gone: &'static str,
    failed: &'static str,
}

/// DELETE /Groups/{id}; `then` is the store change once the group is gone
/// (deleted now, or already gone).
#[allow(clippy::too_many_arguments)]
async fn delete_group(
    ctx: &Context<'_>,
    shared: &Shared,
    row: &Row<'_>,
    group: &SourceId,
    scim_id: &ScimId,
    display_name: &str,
    then: Record,
    notes: DeleteNotes,
) -> Done {
    let rec = |outcome, status, scim_type, detail: Option<String>, attempts| {
        row.record(
            Some(group),
            Some(display_name),
            None,
            None,
            Some(scim_id),
            outcome,
            status,
            scim_type,
            detail,
            attempts,
        )
    };
    match ctx.client.delete("Groups", scim_id).await {
        Ok(r) => done_ok(vec![
            rec(
                "applied",
                Some(r.status),
                None,
                notes.done.map(str::to_owned),
                r.attempts,
            ),
            then,
        ]),
        Err(f) if f.error.status() == Some(404) => done_ok(vec![
            rec(
                "applied",
                Some(404),
                None,
                Some(notes.gone.to_owned()),
                f.attempts,
            ),
            then,
        ]),
        Err(f) => {
            shared.check_fatal(&f.error);
            done_failed(vec![rec(
                "failed",
                f.error.status(),
                f.error.scim_type(),
                Some(format!("{}{}", notes.failed, describe(&f.error))),
                f.attempts,
            )])
        }
    }
}
