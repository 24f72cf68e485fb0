//! The mass-deprovisioning guard.
//!
//! An empty or truncated export must not wipe the target. Before a plan is
//! applied, its destructive actions are counted per kind (user disables, user
//! deletes, group deletes, member removals) against thresholds: an absolute
//! number and a share of what scimsync manages. When any threshold is crossed
//! — or the source has no valid user at all while accounts are managed — every
//! destructive action is held (reported with outcome `held`, nothing sent), the
//! rest of the plan is applied, and the run exits 1 with the exact command to
//! approve. Pure logic, no I/O.

use serde::{Deserialize, Serialize};

use super::{Action, Actual, LinkState, Plan};

/// Thresholds, per kind: an absolute count and a percentage of the managed base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most user disables in one run.
    pub max_disable: u64,
    /// Most user disables as a percentage of managed users.
    pub max_disable_percent: u64,
    /// Most user deletes in one run.
    pub max_delete: u64,
    /// Most user deletes as a percentage of managed users.
    pub max_delete_percent: u64,
    /// Most group deletes in one run.
    pub max_group_delete: u64,
    /// Most group deletes as a percentage of managed groups.
    pub max_group_delete_percent: u64,
    /// Most member removals in one run.
    pub max_member_remove: u64,
    /// Most member removals as a percentage of managed memberships.
    pub max_member_remove_percent: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_disable: 500,
            max_disable_percent: 20,
            max_delete: 500,
            max_delete_percent: 20,
            max_group_delete: 50,
            max_group_delete_percent: 20,
            max_member_remove: 5000,
            max_member_remove_percent: 20,
        }
    }
}

/// The guard's decision on a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Why the plan is held; empty when it may proceed.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// Whether destructive actions must be held.
    pub fn tripped(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Whether an action removes access (held when the guard trips).
pub fn is_destructive(a: &Action) -> bool {
    matches!(
        a,
        Action::DisableUser { .. }
            | Action::DeleteUser { .. }
            | Action::DeleteGroup { .. }
            | Action::RemoveMembers { .. }
    )
}

fn check(reasons: &mut Vec<String>, what: &str, count: u64, base: u64, max: u64, max_percent: u64) {
    if count == 0 {
        return;
    }
    let share = max_percent.saturating_mul(base) / 100;
    let percent = (count * 100).checked_div(base).unwrap_or(100);
    if count > max {
        reasons.push(format!(
            "{count} {what} (of {base} managed) is more than the limit of {max}"
        ));
    } else if count > share.max(1) {
        reasons.push(format!(
            "{count} {what} is {percent}% of {base} managed, more than the limit of {max_percent}%"
        ));
    }
}

/// Judge a plan against the limits. `source_users` is the number of valid
/// users the source yielded (before scope).
pub fn evaluate(plan: &Plan, actual: &Actual, source_users: usize, limits: &Limits) -> Verdict {
    let managed_users = actual
        .users
        .values()
        .filter(|u| u.link == LinkState::Linked)
        .count() as u64;
    let managed_groups = actual
        .groups
        .values()
        .filter(|g| g.link == LinkState::Linked)
        .count() as u64;
    let memberships: u64 = actual
        .groups
        .values()
        .map(|g| (g.members.len() + g.foreign_members.len()) as u64)
        .sum();
    let (mut disable, mut delete, mut group_delete, mut member_remove) = (0u64, 0u64, 0u64, 0u64);
    for a in &plan.actions {
        match a {
            Action::DisableUser { .. } => disable += 1,
            Action::DeleteUser { .. } => delete += 1,
            Action::DeleteGroup { .. } => group_delete += 1,
            Action::RemoveMembers { members, .. } => member_remove += members.len() as u64,
            _ => {}
        }
    }
    let mut reasons = Vec::new();
    if source_users == 0 && managed_users > 0 && disable + delete > 0 {
        reasons.push(format!(
            "the source has no valid user at all while {managed_users} accounts are managed (an empty or truncated export?)"
        ));
    }
    check(
        &mut reasons,
        "user disables",
        disable,
        managed_users,
        limits.max_disable,
        limits.max_disable_percent,
    );
    check(
        &mut reasons,
        "user deletes",
        delete,
        managed_users,
        limits.max_delete,
        limits.max_delete_percent,
    );
    check(
        &mut reasons,
        "group deletes",
        group_delete,
        managed_groups,
        limits.max_group_delete,
        limits.max_group_delete_percent,
    );
    check(
        &mut reasons,
        "member removals",
        member_remove,
        memberships,
        limits.max_member_remove,
        limits.max_member_remove_percent,
    );
    Verdict { reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ScimId, SourceId};
    use crate::plan::{ActualAttrs, ActualUser, Attrs, Why};

    fn actual(n: usize) -> Actual {
        let mut a = Actual::default();
        for i in 0..n {
            a.users.insert(
                SourceId::from(format!("u{i}")),
                ActualUser {
                    scim_id: ScimId(format!("s{i}")),
                    attrs: ActualAttrs::Known(Attrs::new()),
                    link: LinkState::Linked,
                    pushed: None,
                },
            );
        }
        a
    }

    fn disables(n: usize) -> Plan {
        Plan {
            actions: (0..n)
                .map(|i| Action::DisableUser {
                    user: SourceId::from(format!("u{i}")),
                    scim_id: ScimId(format!("s{i}")),
                    user_name: format!("u{i}"),
                    why: Why::NotInSource,
                })
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn one_leaver_in_a_small_directory_passes() {
        let v = evaluate(&disables(1), &actual(8), 7, &Limits::default());
        assert!(!v.tripped(), "{v:?}");
    }

    #[test]
    fn an_empty_source_trips_even_for_one_account() {
        let v = evaluate(&disables(1), &actual(1), 0, &Limits::default());
        assert!(v.tripped());
        assert!(v.reasons[0].contains("no valid user"));
    }

    #[test]
    fn a_truncated_source_trips_the_percentage() {
        let v = evaluate(&disables(500), &actual(1000), 500, &Limits::default());
        assert!(v.tripped());
        assert!(v.reasons.iter().any(|r| r.contains("50% of 1000")), "{v:?}");
    }

    #[test]
    fn the_absolute_limit_applies_to_large_directories() {
        let limits = Limits {
            max_disable: 100,
            ..Limits::default()
        };
        let v = evaluate(&disables(150), &actual(10_000), 9_850, &limits);
        assert!(v.tripped());
        assert!(v.reasons[0].contains("limit of 100"));
        assert!(!evaluate(&disables(90), &actual(10_000), 9_910, &limits).tripped());
    }
}
