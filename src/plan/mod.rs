//! The diff engine: desired state + actual state + policy → [`Plan`].
//!
//! [`compute`] is a pure, deterministic function: no I/O, no clock, ordered
//! maps only, actions sorted by phase then key, so the same inputs always give
//! the same plan whatever order the source file listed people in. The phases
//! put destructive work last, so a run cut short leaves the target as intact
//! as possible:
//!
//! 1. create groups (and link adopted ones)
//! 2. create / update users
//! 3. add members
//! 4. remove members
//! 5. disable users
//! 6. delete users
//! 7. delete groups
//!
//! Only accounts scimsync manages (a stored link) are ever disabled or
//! deleted. Users whose source record was rejected are "held": nothing is done
//! to their account or memberships until the record is fixed.

mod attrs;
pub mod guard;
pub mod render;
pub mod risk;
pub mod saved;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Deprovision, Policy};
use crate::mapping::ScopeStats;
use crate::model::{Members, Reject, ScimId, SourceId};
use crate::scim::AttrPath;

pub(crate) use attrs::path as attr_path;
pub use attrs::{AttrPaths, Attrs};

/// A user as the target should have it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredUser {
    /// Mapped userName (also in `attrs`), for labels.
    pub user_name: String,
    /// Mapped work email, for labels and reports.
    pub email: String,
    /// Every mapped attribute, `externalId` and `active` included.
    pub attrs: Attrs,
}

/// A group as the target should have it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGroup {
    /// Name in the target.
    pub display_name: String,
    /// Members by user source id (provisioned users only).
    pub members: Members,
}

/// What the target should look like, from the source after mapping and scope.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    /// Users to provision.
    pub users: BTreeMap<SourceId, DesiredUser>,
    /// Groups to push.
    pub groups: BTreeMap<SourceId, DesiredGroup>,
    /// Users whose record was rejected: leave their accounts alone.
    pub held_users: BTreeSet<SourceId>,
    /// Groups whose record was rejected: leave them alone.
    pub held_groups: BTreeSet<SourceId>,
    /// Valid source users left out by the scope rules.
    pub out_of_scope: BTreeSet<SourceId>,
    /// Records rejected by the loader or the mapping.
    pub rejects: Vec<Reject>,
    /// Attribute paths the mapping manages; others are never touched.
    pub managed_paths: BTreeSet<String>,
    /// Scope counts.
    pub stats: ScopeStats,
    /// What group flattening found (nesting, cycles), for the plan notes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_notes: Vec<String>,
}

/// How a target resource came to be associated with a source record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// A stored link from an earlier run.
    Linked,
    /// An unlinked target account whose externalId equals the source id.
    MatchedExternalId,
    /// An unlinked target account with the same userName.
    MatchedUserName,
    /// An unlinked target group with the same name.
    MatchedDisplayName,
}

/// A user as the target has it (from a full read, or from the stored state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActualUser {
    /// The target's id.
    pub scim_id: ScimId,
    /// Current values of the managed attributes.
    pub attrs: ActualAttrs,
    /// Linked or merely matched.
    pub link: LinkState,
    /// The values scimsync last pushed, when known and `attrs` came from a full
    /// read: a difference between the two is drift (an edit made in the target).
    pub pushed: Option<Attrs>,
}

/// What is known of an account's managed attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActualAttrs {
    /// Their values.
    Known(Attrs),
    /// Exactly the wanted attributes of the same source id in the
    /// [`Desired`] the plan is computed with: the state stored at the last
    /// push was the same text as the wanted one, so it was never decoded
    /// (most people on a routine run). Only ever set for a linked user that
    /// is in that desired state.
    AsWanted,
}

impl ActualUser {
    /// Whether the account is active (absent `active` counts as active);
    /// `None` when its attributes are [`ActualAttrs::AsWanted`].
    pub fn active(&self) -> Option<bool> {
        match &self.attrs {
            ActualAttrs::Known(a) => Some(a.get("active") != Some(&Value::Bool(false))),
            ActualAttrs::AsWanted => None,
        }
    }

    /// The known attributes (`None`: [`ActualAttrs::AsWanted`]).
    pub fn known(&self) -> Option<&Attrs> {
        match &self.attrs {
            ActualAttrs::Known(a) => Some(a),
            ActualAttrs::AsWanted => None,
        }
    }

    fn user_name(&self) -> String {
        self.known()
            .and_then(|a| a.get("userName"))
            .and_then(Value::as_str)
            .unwrap_or(self.scim_id.as_str())
            .to_owned()
    }
}

/// A group as the target has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualGroup {
    /// The target's id.
    pub scim_id: ScimId,
    /// Its name in the target.
    pub display_name: String,
    /// Its externalId in the target, when known.
    pub external_id: Option<String>,
    /// Members that are managed users, by source id.
    pub members: Members,
    /// Members the engine does not manage: target id → label.
    pub foreign_members: BTreeMap<ScimId, String>,
    /// Linked or merely matched.
    pub link: LinkState,
    /// Managed users whose membership here differs from what scimsync last
    /// pushed (found by a full read).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub drift: BTreeSet<SourceId>,
}

/// A problem found while matching the target, reported as a skipped item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// `user` or `group`.
    pub resource: String,
    /// Source id concerned.
    pub source_id: SourceId,
    /// userName or group name.
    pub label: String,
    /// What is wrong and what to do.
    pub reason: String,
}

/// What the target looks like, as far as this engine is concerned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Actual {
    /// Managed (linked) or matched users, by source id.
    pub users: BTreeMap<SourceId, ActualUser>,
    /// Managed or matched groups, by source id.
    pub groups: BTreeMap<SourceId, ActualGroup>,
    /// True when read in full from the target in this run (reconcile): absence
    /// is then proven and creates need no lookup first.
    pub complete: bool,
    /// Target accounts that are neither linked nor matched (left untouched).
    pub unmanaged_users: usize,
    /// Target groups neither linked nor matched.
    pub unmanaged_groups: usize,
    /// Matching problems.
    pub conflicts: Vec<Conflict>,
    /// Old groups of renames, recorded for deletion and not deleted yet.
    pub retired_groups: Vec<RetiredGroup>,
}

/// A group left behind by a rename (see [`Action::RenameGroup`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredGroup {
    /// Source id of the renamed group.
    pub group: SourceId,
    /// The old group's target id.
    pub scim_id: ScimId,
    /// The old name.
    pub display_name: String,
}

/// One attribute change of an update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// SCIM attribute path.
    pub path: String,
    /// Current value (None: absent).
    pub old: Option<Value>,
    /// New value (None: remove).
    pub new: Option<Value>,
    /// True when the target drifted from what scimsync last pushed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drift: bool,
}

/// A member in a membership action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user's source id; `None` for a target account the engine does not manage.
    pub user: Option<SourceId>,
    /// userName (or the target id) for humans.
    pub label: String,
    /// The user's target id when known at plan time (unknown for users created in this run).
    pub scim_id: Option<ScimId>,
    /// The target's membership differs from what scimsync last pushed here
    /// (an edit in the target, or a change the target did not apply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drift: bool,
}

/// Why an account is deprovisioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// No longer in the source.
    NotInSource,
    /// In the source but out of scope.
    OutOfScope,
    /// Marked inactive in the source.
    InactiveInSource,
}

impl Why {
    /// Words for the plan and report.
    pub fn describe(self) -> &'static str {
        match self {
            Why::NotInSource => "no longer in the source",
            Why::OutOfScope => "out of scope",
            Why::InactiveInSource => "inactive in the source",
        }
    }
}

/// One planned change to the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// POST /Groups.
    CreateGroup {
        /// Source id (sent as externalId).
        group: SourceId,
        /// Name.
        display_name: String,
    },
    /// Link an existing group, and PATCH its externalId when it differs.
    UpdateGroup {
        /// Source id.
        group: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// Name.
        display_name: String,
        /// Attribute changes (displayName when the target can rename, externalId).
        changes: Vec<Change>,
        /// Set when this adopts an unlinked group.
        adopt: Option<LinkState>,
    },
    /// POST /Users.
    CreateUser {
        /// Source id (externalId).
        user: SourceId,
        /// userName.
        user_name: String,
        /// Full attribute set to send.
        attrs: Attrs,
        /// Look the account up (externalId, then userName) before POSTing:
        /// set when the plan was not computed from a full read of the target.
        lookup_first: bool,
    },
    /// PATCH /Users/{id}, one operation per changed attribute; or a link-only adoption.
    UpdateUser {
        /// Source id.
        user: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// userName.
        user_name: String,
        /// Attribute changes.
        changes: Vec<Change>,
        /// Set when this adopts an unlinked account.
        adopt: Option<LinkState>,
        /// For an adoption: every managed attribute as it will be after the
        /// update (stored as the state last pushed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Attrs>,
    },
    /// PATCH /Groups/{id} add members (one chunk).
    AddMembers {
        /// Group source id.
        group: SourceId,
        /// Group name.
        display_name: String,
        /// Group target id (None: created in this run).
        group_scim_id: Option<ScimId>,
        /// Members to add.
        members: Vec<Member>,
    },
    /// PATCH /Groups/{id} remove members (one chunk).
    RemoveMembers {
        /// Group source id.
        group: SourceId,
        /// Group name.
        display_name: String,
        /// Group target id.
        group_scim_id: ScimId,
        /// Members to remove.
        members: Vec<Member>,
    },
    /// PATCH /Users/{id} active=false.
    DisableUser {
        /// Source id.
        user: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// userName.
        user_name: String,
        /// Why.
        why: Why,
    },
    /// DELETE /Users/{id}.
    DeleteUser {
        /// Source id.
        user: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// userName.
        user_name: String,
        /// Why.
        why: Why,
    },
    /// DELETE /Groups/{id}.
    DeleteGroup {
        /// Source id.
        group: SourceId,
        /// Target id.
        scim_id: ScimId,
        /// Name.
        display_name: String,
    },
    /// A group renamed in the source, on a target that cannot rename groups
    /// (Atlassian): POST the group under its new name, move the members that
    /// stay, then DELETE the old group (when groups may be deleted; the old
    /// group is recorded as retired first, so a run cut off half-way finishes
    /// the job in the next run).
    RenameGroup {
        /// Source id.
        group: SourceId,
        /// The old group's target id.
        old_scim_id: ScimId,
        /// The old name.
        old_name: String,
        /// The new name.
        display_name: String,
        /// Members moved to the new group (existing accounts); members created
        /// in this run are added by the usual member actions.
        members: Vec<Member>,
        /// Delete the old group once the new one has its members.
        delete_old: bool,
    },
    /// DELETE a group left behind by a rename that did not finish.
    RetireGroup {
        /// Source id of the renamed group.
        group: SourceId,
        /// The old group's target id.
        scim_id: ScimId,
        /// The old name.
        display_name: String,
    },
}

impl Action {
    /// Execution phase (1–7); actions of one phase are independent of each other.
    pub fn phase(&self) -> u8 {
        match self {
            Action::CreateGroup { .. }
            | Action::UpdateGroup { .. }
            | Action::RenameGroup { .. } => 1,
            Action::CreateUser { .. } | Action::UpdateUser { .. } => 2,
            Action::AddMembers { .. } => 3,
            Action::RemoveMembers { .. } => 4,
            Action::DisableUser { .. } => 5,
            Action::DeleteUser { .. } => 6,
            Action::DeleteGroup { .. } | Action::RetireGroup { .. } => 7,
        }
    }

    /// The source id the action is about (group id for membership actions).
    pub fn subject(&self) -> &SourceId {
        match self {
            Action::CreateGroup { group, .. }
            | Action::UpdateGroup { group, .. }
            | Action::AddMembers { group, .. }
            | Action::RemoveMembers { group, .. }
            | Action::DeleteGroup { group, .. }
            | Action::RenameGroup { group, .. }
            | Action::RetireGroup { group, .. } => group,
            Action::CreateUser { user, .. }
            | Action::UpdateUser { user, .. }
            | Action::DisableUser { user, .. }
            | Action::DeleteUser { user, .. } => user,
        }
    }

    /// Short verb used in reports: `create`, `update`, `link`, `add_member`, ...
    pub fn verb(&self) -> &'static str {
        match self {
            Action::CreateGroup { .. } | Action::CreateUser { .. } => "create",
            Action::UpdateGroup {
                adopt: Some(_),
                changes,
                ..
            }
            | Action::UpdateUser {
                adopt: Some(_),
                changes,
                ..
            } if changes.is_empty() => "link",
            Action::UpdateGroup { .. } | Action::UpdateUser { .. } => "update",
            Action::AddMembers { .. } => "add_member",
            Action::RemoveMembers { .. } => "remove_member",
            Action::DisableUser { .. } => "disable",
            Action::RenameGroup { .. } => "rename",
            Action::DeleteUser { .. } | Action::DeleteGroup { .. } | Action::RetireGroup { .. } => {
                "delete"
            }
        }
    }

    /// `user`, `group` or `membership`.
    pub fn resource(&self) -> &'static str {
        match self {
            Action::CreateGroup { .. }
            | Action::UpdateGroup { .. }
            | Action::DeleteGroup { .. }
            | Action::RenameGroup { .. }
            | Action::RetireGroup { .. } => "group",
            Action::AddMembers { .. } | Action::RemoveMembers { .. } => "membership",
            _ => "user",
        }
    }

    /// Whether the action sends a request (a link-only adoption does not).
    pub fn sends_request(&self) -> bool {
        !matches!(
            self,
            Action::UpdateUser { changes, adopt: Some(_), .. }
            | Action::UpdateGroup { changes, adopt: Some(_), .. } if changes.is_empty()
        )
    }

    /// How many write requests executing the action sends, with
    /// `member_chunk` members per group PATCH. One for every action but a
    /// link-only adoption (none) and a rename on a target that cannot rename
    /// (the POST of the new group, the PATCHes moving its members, the
    /// DELETE of the old one).
    pub fn requests(&self, member_chunk: usize) -> usize {
        match self {
            Action::RenameGroup {
                members,
                delete_old,
                ..
            } => 1 + members.len().div_ceil(member_chunk.max(1)) + usize::from(*delete_old),
            other => usize::from(other.sends_request()),
        }
    }
}

/// Counts of a plan, for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Users to create.
    pub users_create: usize,
    /// Users to update (re-enable included).
    pub users_update: usize,
    /// Existing accounts to link.
    pub users_link: usize,
    /// Users to disable.
    pub users_disable: usize,
    /// Users to delete.
    pub users_delete: usize,
    /// Groups to create.
    pub groups_create: usize,
    /// Groups to update or link.
    pub groups_update: usize,
    /// Groups to delete.
    pub groups_delete: usize,
    /// Groups to rename (create under the new name, move members, delete the old).
    #[serde(default)]
    pub groups_rename: usize,
    /// Old groups of earlier renames still to delete.
    #[serde(default)]
    pub groups_retire: usize,
    /// Member additions.
    pub members_add: usize,
    /// Member removals.
    pub members_remove: usize,
    /// Rejected records.
    pub invalid: usize,
    /// Conflicts (skipped).
    pub conflicts: usize,
}

/// The plan: ordered actions plus what could not be planned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Actions sorted by phase, then subject.
    pub actions: Vec<Action>,
    /// Source records that were rejected (listed, reported, not provisioned).
    pub rejects: Vec<Reject>,
    /// Matching conflicts (reported as skipped).
    pub conflicts: Vec<Conflict>,
    /// Counts.
    pub summary: Summary,
    /// Context for humans: scope counts, unmanaged target accounts.
    pub notes: Vec<String>,
    /// Why the deprovisioning guard holds this plan's destructive actions
    /// (empty: it does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard: Vec<String>,
    /// Actions a reviewer should look at twice ([`risk::assess`]; set by the caller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<risk::Risk>,
}

impl Plan {
    /// True when there is nothing to send or link.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// Compare two attribute values as the target would (emails case-insensitively).
fn same_value(path: &str, a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        // Equal strings are equal under any case rule: no path parse, no lowercasing.
        (Some(Value::String(x)), Some(Value::String(y))) if x == y => true,
        (Some(Value::String(x)), Some(Value::String(y)))
            if AttrPath::parse(path).is_some_and(|p| p.case_insensitive()) =>
        {
            x.to_lowercase() == y.to_lowercase()
        }
        (a, b) => a == b,
    }
}

/// Attribute changes that turn `actual` into `desired`, over the managed paths.
/// `active` is left out: enabling and disabling are decided by the caller.
fn attr_changes(managed: &BTreeSet<String>, desired: &Attrs, actual: &ActualUser) -> Vec<Change> {
    let mut changes = Vec::new();
    // The usual case on a routine run: the state last pushed is exactly what
    // is wanted (known without decoding it, or by one linear comparison
    // instead of two lookups per path).
    let attrs = match &actual.attrs {
        ActualAttrs::AsWanted => return changes,
        ActualAttrs::Known(attrs) if attrs == desired => return changes,
        ActualAttrs::Known(attrs) => attrs,
    };
    for path in managed {
        if path == "active" {
            continue;
        }
        let want = desired.get(path);
        let have = attrs.get(path);
        if same_value(path, want, have) {
            continue;
        }
        let drift = actual
            .pushed
            .as_ref()
            .is_some_and(|pushed| same_value(path, pushed.get(path), want));
        changes.push(Change {
            path: path.clone(),
            old: have.cloned(),
            new: want.cloned(),
            drift,
        });
    }
    changes
}

fn chunks(members: Vec<Member>, size: usize) -> Vec<Vec<Member>> {
    members
        .chunks(size.max(1))
        .map(<[Member]>::to_vec)
        .collect()
}

/// Compute the plan that turns `actual` into `desired` under `policy`.
pub fn compute(desired: &Desired, actual: &Actual, policy: &Policy) -> Plan {
    let mut actions = Vec::new();
    let mut summary = Summary::default();

    // Conflicted records are neither created nor touched.
    let conflicted: BTreeSet<&SourceId> = actual.conflicts.iter().map(|c| &c.source_id).collect();

    // --- users ---------------------------------------------------------------
    // Wanted in id order (so the set is built in bulk after the walk).
    let mut will_exist: Vec<&SourceId> = Vec::with_capacity(desired.users.len());
    let mut being_deleted: BTreeSet<&SourceId> = BTreeSet::new();
    // Each wanted person with their account, if any: both maps are sorted by
    // id, walked together instead of a tree search per person.
    let mut accounts = actual.users.iter().peekable();
    let wanted: Vec<(&SourceId, &DesiredUser, Option<&ActualUser>)> = desired
        .users
        .iter()
        .map(|(id, want)| {
            while accounts.next_if(|(have, _)| *have < id).is_some() {}
            let have = accounts.next_if(|(have, _)| *have == id).map(|(_, a)| a);
            (id, want, have)
        })
        .collect();
    // Comparing every person's attributes is the bulk of a routine plan and
    // each comparison stands alone: done on all cores, consumed in order.
    let compared = crate::par::par_map(&wanted, |(_, want, have)| {
        let have = (*have)?;
        let adopt = have.link != LinkState::Linked;
        Some((
            have,
            if policy.update_users || adopt {
                attr_changes(&desired.managed_paths, &want.attrs, have)
            } else {
                Vec::new()
            },
        ))
    });
    for ((id, want, _), found) in wanted.into_iter().zip(compared) {
        let want_active = want.attrs.get("active") != Some(&Value::Bool(false));
        match found {
            Some((have, mut changes)) => {
                will_exist.push(id);
                let adopt = (have.link != LinkState::Linked).then_some(have.link);
                if !policy.update_users {
                    // Adoption still links; attribute updates are switched off.
                    changes.clear();
                }
                let have_active = have.active().unwrap_or(want_active);
                if want_active && !have_active && policy.update_users {
                    changes.push(Change {
                        path: "active".into(),
                        old: Some(Value::Bool(false)),
                        new: Some(Value::Bool(true)),
                        drift: have
                            .pushed
                            .as_ref()
                            .is_some_and(|p| p.get("active") == Some(&Value::Bool(true))),
                    });
                    changes.sort_by(|a, b| a.path.cmp(&b.path));
                }
                if !changes.is_empty() || adopt.is_some() {
                    if adopt.is_some() && changes.is_empty() {
                        summary.users_link += 1;
                    } else {
                        summary.users_update += 1;
                    }
                    let after = adopt.map(|_| {
                        let mut after = have.known().unwrap_or(&want.attrs).clone();
                        for c in &changes {
                            match &c.new {
                                Some(v) => after.insert(c.path.clone(), v.clone()),
                                None => after.remove(&c.path),
                            };
                        }
                        after
                    });
                    actions.push(Action::UpdateUser {
                        user: id.clone(),
                        scim_id: have.scim_id.clone(),
                        user_name: want.user_name.clone(),
                        changes,
                        adopt,
                        after,
                    });
                }
                if !want_active && have_active && policy.update_users {
                    summary.users_disable += 1;
                    actions.push(Action::DisableUser {
                        user: id.clone(),
                        scim_id: have.scim_id.clone(),
                        user_name: want.user_name.clone(),
                        why: Why::InactiveInSource,
                    });
                }
            }
            None => {
                if want_active && policy.create_users && !conflicted.contains(id) {
                    will_exist.push(id);
                    summary.users_create += 1;
                    actions.push(Action::CreateUser {
                        user: id.clone(),
                        user_name: want.user_name.clone(),
                        attrs: want.attrs.clone(),
                        lookup_first: !actual.complete,
                    });
                }
            }
        }
    }
    let will_exist: BTreeSet<&SourceId> = will_exist.into_iter().collect();
    // Both maps are sorted by id: walk them together instead of a tree
    // search per account.
    let mut wanted_ids = desired.users.keys().peekable();
    for (id, have) in &actual.users {
        while wanted_ids.next_if(|w| *w < id).is_some() {}
        if wanted_ids.peek() == Some(&id)
            || desired.held_users.contains(id)
            || have.link != LinkState::Linked
        {
            continue;
        }
        let why = if desired.out_of_scope.contains(id) {
            Why::OutOfScope
        } else {
            Why::NotInSource
        };
        match policy.deprovision {
            // Unknown (never the case for an account not wanted): disabled
            // again rather than left enabled.
            Deprovision::Disable if have.active().unwrap_or(true) => {
                summary.users_disable += 1;
                actions.push(Action::DisableUser {
                    user: id.clone(),
                    scim_id: have.scim_id.clone(),
                    user_name: have.user_name(),
                    why,
                });
            }
            Deprovision::Delete => {
                being_deleted.insert(id);
                summary.users_delete += 1;
                actions.push(Action::DeleteUser {
                    user: id.clone(),
                    scim_id: have.scim_id.clone(),
                    user_name: have.user_name(),
                    why,
                });
            }
            _ => {}
        }
    }

    // --- groups --------------------------------------------------------------
    let label = |id: &SourceId| -> String {
        desired
            .users
            .get(id)
            .map(|u| u.user_name.clone())
            .or_else(|| actual.users.get(id).map(ActualUser::user_name))
            .unwrap_or_else(|| id.to_string())
    };
    let scim_of = |id: &SourceId| actual.users.get(id).map(|u| u.scim_id.clone());
    let fold_group = |n: &str| {
        if policy.group_name_ci {
            n.to_lowercase()
        } else {
            n.to_owned()
        }
    };
    // A managed group leaving the source under one id while a group of the
    // same name arrives under another is the same group re-keyed: the new
    // record takes it over (the old one is unlinked, not deleted).
    let mut leaving_by_name: BTreeMap<String, &ActualGroup> = BTreeMap::new();
    for (gid, have) in &actual.groups {
        if have.link == LinkState::Linked
            && !desired.groups.contains_key(gid)
            && !desired.held_groups.contains(gid)
        {
            leaving_by_name
                .entry(fold_group(&have.display_name))
                .or_insert(have);
        }
    }
    // Borrowed, not cloned: the member sets are the bulk of the state.
    let no_members = Members::new();
    let no_foreign = BTreeMap::new();
    // On a routine run most groups have exactly the members wanted: found
    // for all groups at once, on all cores, before the walk below (which
    // then has no member to add or remove in them).
    let wanted_groups: Vec<(&SourceId, &DesiredGroup)> = desired.groups.iter().collect();
    let same_members = crate::par::par_map(&wanted_groups, |(gid, want)| {
        actual
            .groups
            .get(*gid)
            .is_some_and(|have| have.foreign_members.is_empty() && have.members == want.members)
    });
    for ((gid, want), same_members) in wanted_groups.into_iter().zip(same_members) {
        // Whether `current` below is this group's own stored or read set.
        let mut current_is_own = false;
        let rekeyed = if actual.groups.contains_key(gid) {
            None
        } else {
            leaving_by_name.remove(&fold_group(&want.display_name))
        };
        let (group_scim_id, current, foreign) = match actual.groups.get(gid) {
            None if rekeyed.is_some() => {
                let have = rekeyed.expect("checked");
                summary.groups_update += 1;
                actions.push(Action::UpdateGroup {
                    group: gid.clone(),
                    scim_id: have.scim_id.clone(),
                    display_name: want.display_name.clone(),
                    changes: if policy.update_groups {
                        vec![Change {
                            path: "externalId".into(),
                            old: have.external_id.clone().map(Value::String),
                            new: Some(Value::String(gid.to_string())),
                            drift: false,
                        }]
                    } else {
                        Vec::new()
                    },
                    adopt: Some(LinkState::MatchedDisplayName),
                });
                (
                    Some(have.scim_id.clone()),
                    Cow::Borrowed(&have.members),
                    &have.foreign_members,
                )
            }
            Some(have)
                if !policy.group_rename
                    && policy.update_groups
                    && policy.create_groups
                    && fold_group(&have.display_name) != fold_group(&want.display_name) =>
            {
                // The target cannot rename: a new group takes the name and the
                // members that stay; the old one goes.
                let carried: Members = have
                    .members
                    .iter()
                    .filter(|m| {
                        (want.members.contains(*m) || desired.held_users.contains(*m))
                            && !being_deleted.contains(*m)
                            && scim_of(m).is_some()
                    })
                    .cloned()
                    .collect();
                let members: Vec<Member> = if policy.sync_memberships {
                    carried
                        .iter()
                        .map(|m| Member {
                            user: Some(m.clone()),
                            label: label(m),
                            scim_id: scim_of(m),
                            drift: false,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                summary.groups_rename += 1;
                actions.push(Action::RenameGroup {
                    group: gid.clone(),
                    old_scim_id: have.scim_id.clone(),
                    old_name: have.display_name.clone(),
                    display_name: want.display_name.clone(),
                    members,
                    delete_old: policy.delete_groups,
                });
                (None, Cow::Owned(carried), &no_foreign)
            }
            Some(have) => {
                let adopt = (have.link != LinkState::Linked).then_some(have.link);
                let mut changes = Vec::new();
                if policy.update_groups
                    && policy.group_rename
                    && have.display_name != want.display_name
                {
                    changes.push(Change {
                        path: "displayName".into(),
                        old: Some(Value::String(have.display_name.clone())),
                        new: Some(Value::String(want.display_name.clone())),
                        drift: false,
                    });
                }
                if policy.update_groups && have.external_id.as_deref() != Some(gid.as_str()) {
                    changes.push(Change {
                        path: "externalId".into(),
                        old: have.external_id.clone().map(Value::String),
                        new: Some(Value::String(gid.to_string())),
                        drift: false,
                    });
                }
                if adopt.is_some() || !changes.is_empty() {
                    summary.groups_update += 1;
                    actions.push(Action::UpdateGroup {
                        group: gid.clone(),
                        scim_id: have.scim_id.clone(),
                        display_name: want.display_name.clone(),
                        changes,
                        adopt,
                    });
                }
                current_is_own = true;
                (
                    Some(have.scim_id.clone()),
                    Cow::Borrowed(&have.members),
                    &have.foreign_members,
                )
            }
            None => {
                if !policy.create_groups || conflicted.contains(gid) {
                    continue;
                }
                summary.groups_create += 1;
                actions.push(Action::CreateGroup {
                    group: gid.clone(),
                    display_name: want.display_name.clone(),
                });
                (None, Cow::Borrowed(&no_members), &no_foreign)
            }
        };
        let drifted = actual.groups.get(gid).map(|g| &g.drift);
        if !policy.sync_memberships || (current_is_own && same_members) {
            continue;
        }
        // Set differences walk both sorted sets once (no lookup per member).
        let adds: Vec<Member> = want
            .members
            .difference(&current)
            .filter(|m| will_exist.contains(*m))
            .map(|m| Member {
                user: Some(m.clone()),
                label: label(m),
                scim_id: scim_of(m),
                drift: drifted.is_some_and(|d| d.contains(m)),
            })
            .collect();
        summary.members_add += adds.len();
        for chunk in chunks(adds, policy.member_chunk) {
            actions.push(Action::AddMembers {
                group: gid.clone(),
                display_name: want.display_name.clone(),
                group_scim_id: group_scim_id.clone(),
                members: chunk,
            });
        }
        let Some(group_scim_id) = group_scim_id else {
            continue;
        };
        // Where the target takes a deleted user out of its groups itself,
        // its memberships are not removed one by one first.
        let dropped_by_delete =
            |m: &SourceId| policy.delete_removes_memberships && being_deleted.contains(m);
        let mut removes: Vec<Member> = current
            .difference(&want.members)
            .filter(|m| !desired.held_users.contains(*m) && !dropped_by_delete(m))
            .filter_map(|m| {
                scim_of(m).map(|s| Member {
                    user: Some(m.clone()),
                    label: label(m),
                    scim_id: Some(s),
                    drift: drifted.is_some_and(|d| d.contains(m)),
                })
            })
            .collect();
        removes.extend(foreign.iter().map(|(sid, l)| Member {
            user: None,
            label: l.clone(),
            scim_id: Some(sid.clone()),
            drift: false,
        }));
        summary.members_remove += removes.len();
        for chunk in chunks(removes, policy.member_chunk) {
            actions.push(Action::RemoveMembers {
                group: gid.clone(),
                display_name: want.display_name.clone(),
                group_scim_id: group_scim_id.clone(),
                members: chunk,
            });
        }
    }
    if policy.delete_groups {
        for (gid, have) in &actual.groups {
            if desired.groups.contains_key(gid)
                || desired.held_groups.contains(gid)
                || have.link != LinkState::Linked
            {
                continue;
            }
            summary.groups_delete += 1;
            actions.push(Action::DeleteGroup {
                group: gid.clone(),
                scim_id: have.scim_id.clone(),
                display_name: have.display_name.clone(),
            });
        }
        for r in &actual.retired_groups {
            summary.groups_retire += 1;
            actions.push(Action::RetireGroup {
                group: r.group.clone(),
                scim_id: r.scim_id.clone(),
                display_name: r.display_name.clone(),
            });
        }
    }

    // Stable order: phase, then subject; chunks of one group keep their order.
    actions.sort_by(|a, b| {
        a.phase()
            .cmp(&b.phase())
            .then_with(|| a.subject().cmp(b.subject()))
    });

    summary.invalid = desired.rejects.len();
    summary.conflicts = actual.conflicts.len();
    let mut notes = desired.group_notes.clone();
    let s = &desired.stats;
    if s.out_of_group_scope > 0 {
        notes.push(format!(
            "{} source users are not members of a scope group (not provisioned)",
            s.out_of_group_scope
        ));
    }
    if s.out_of_domain_scope > 0 {
        notes.push(format!(
            "{} source users have an email outside the authorized domains (not provisioned)",
            s.out_of_domain_scope
        ));
    }
    if s.groups_not_pushed > 0 {
        notes.push(format!(
            "{} source groups are not selected for pushing",
            s.groups_not_pushed
        ));
    }
    if actual.unmanaged_users > 0 || actual.unmanaged_groups > 0 {
        notes.push(format!(
            "{} users and {} groups in the target are not managed by scimsync (left untouched)",
            actual.unmanaged_users, actual.unmanaged_groups
        ));
    }
    Plan {
        actions,
        rejects: desired.rejects.clone(),
        conflicts: actual.conflicts.clone(),
        summary,
        notes,
        guard: Vec::new(),
        risks: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
