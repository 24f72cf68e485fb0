//! Risky actions, flagged for whoever reviews a plan.
//!
//! Not a guard (nothing is held): a list of the actions a reviewer should look
//! at twice. Pure logic over the plan:
//!
//! * an **email change**: Atlassian treats the email as the account's
//!   identity; moving it to a domain the organization has not verified
//!   unlinks the Atlassian account and strips its SCIM groups;
//! * a **user delete** (the account is gone; re-creating it loses its groups);
//! * a **group delete**;
//! * a **large membership removal**: at least `large_member_removal` members
//!   removed from one group in this plan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, Plan};

/// What kind of risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskKind {
    /// A user's email changes.
    EmailChange,
    /// A user is deleted.
    UserDelete,
    /// A group is deleted.
    GroupDelete,
    /// Many members leave one group.
    LargeMemberRemoval,
    /// A group is replaced by a new one under its new name (no rename in
    /// the target).
    GroupRename,
}

/// One flagged action (or group of membership actions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    /// What kind.
    pub kind: RiskKind,
    /// `user` or `group`.
    pub resource: String,
    /// userName or group name.
    pub subject: String,
    /// Why it deserves a second look.
    pub reason: String,
}

fn domain(email: &str) -> Option<String> {
    email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

fn email_of(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        // A whole `emails` array: its primary (or first) value.
        Some(Value::Array(items)) => items
            .iter()
            .find(|e| e["primary"] == Value::Bool(true))
            .or(items.first())
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned),
        _ => None,
    }
}

/// The risks of a plan, in plan order (membership removals per group, after
/// the rest).
pub fn assess(plan: &Plan, large_member_removal: usize) -> Vec<Risk> {
    let mut risks = Vec::new();
    let mut removals: BTreeMap<String, usize> = BTreeMap::new();
    for a in &plan.actions {
        match a {
            Action::UpdateUser {
                user_name, changes, ..
            } => {
                for c in changes.iter().filter(|c| c.path.starts_with("emails")) {
                    let (old, new) = (email_of(&c.old), email_of(&c.new));
                    if old.is_none() {
                        // Setting an email where there was none moves nothing.
                        continue;
                    }
                    let (od, nd) = (
                        old.as_deref().and_then(domain),
                        new.as_deref().and_then(domain),
                    );
                    let reason = match (&od, &nd) {
                        (Some(o), Some(n)) if o != n => format!(
                            "email moves from domain {o} to {n}: Atlassian unlinks the account (and strips its SCIM groups) when the new domain is not verified in the organization"
                        ),
                        _ => "email changes: the email is the Atlassian account's identity; the update fails with 409 when another account owns the new address".to_owned(),
                    };
                    risks.push(Risk {
                        kind: RiskKind::EmailChange,
                        resource: "user".into(),
                        subject: user_name.clone(),
                        reason,
                    });
                }
            }
            Action::DeleteUser { user_name, .. } => risks.push(Risk {
                kind: RiskKind::UserDelete,
                resource: "user".into(),
                subject: user_name.clone(),
                reason: "the account is deleted in the target; if it comes back it is a new account without its groups".into(),
            }),
            Action::DeleteGroup { display_name, .. } => risks.push(Risk {
                kind: RiskKind::GroupDelete,
                resource: "group".into(),
                subject: display_name.clone(),
                reason: "the group is deleted in the target, with every product access it grants".into(),
            }),
            Action::RetireGroup { display_name, .. } => risks.push(Risk {
                kind: RiskKind::GroupDelete,
                resource: "group".into(),
                subject: display_name.clone(),
                reason: "the old group of a rename is deleted, with every product access it grants".into(),
            }),
            Action::RenameGroup {
                old_name,
                display_name,
                ..
            } => risks.push(Risk {
                kind: RiskKind::GroupRename,
                resource: "group".into(),
                subject: display_name.clone(),
                reason: format!(
                    "the target cannot rename groups: `{display_name}` is a new group, and product access granted to `{old_name}` is not carried over (grant it to the new group in Atlassian admin)"
                ),
            }),
            Action::RemoveMembers {
                display_name,
                members,
                ..
            } => *removals.entry(display_name.clone()).or_default() += members.len(),
            _ => {}
        }
    }
    for (group, n) in removals {
        if n >= large_member_removal.max(1) {
            risks.push(Risk {
                kind: RiskKind::LargeMemberRemoval,
                resource: "group".into(),
                subject: group,
                reason: format!(
                    "{n} members are removed (flagged from {large_member_removal}, `[review] large_member_removal`)"
                ),
            });
        }
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ScimId, SourceId};
    use crate::plan::{Change, Member, Why};

    fn update(user: &str, changes: Vec<Change>) -> Action {
        Action::UpdateUser {
            user: SourceId(user.into()),
            scim_id: ScimId(format!("s-{user}")),
            user_name: format!("{user}@example.com"),
            changes,
            adopt: None,
            after: None,
        }
    }

    fn email_change(old: Option<&str>, new: Option<&str>) -> Change {
        Change {
            path: "emails[type eq \"work\"].value".into(),
            old: old.map(|s| Value::String(s.into())),
            new: new.map(|s| Value::String(s.into())),
            drift: false,
        }
    }

    fn removal(group: &str, n: usize) -> Action {
        Action::RemoveMembers {
            group: SourceId(group.into()),
            display_name: group.into(),
            group_scim_id: ScimId(format!("g-{group}")),
            members: (0..n)
                .map(|i| Member {
                    user: Some(SourceId::from(format!("u{i}"))),
                    label: format!("u{i}@example.com"),
                    scim_id: Some(ScimId(format!("s{i}"))),
                    drift: false,
                })
                .collect(),
        }
    }

    fn plan(actions: Vec<Action>) -> Plan {
        Plan {
            actions,
            ..Plan::default()
        }
    }

    #[test]
    fn an_email_moving_to_another_domain_is_flagged_with_both_domains() {
        let p = plan(vec![update(
            "ada",
            vec![email_change(Some("ada@example.com"), Some("ada@other.io"))],
        )]);
        let r = assess(&p, 10);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].kind, RiskKind::EmailChange);
        assert_eq!(r[0].subject, "ada@example.com");
        assert!(r[0].reason.contains("example.com to other.io"), "{r:?}");
    }

    #[test]
    fn an_email_change_within_a_domain_is_flagged_without_unlink_words() {
        let p = plan(vec![update(
            "ada",
            vec![email_change(
                Some("ada@example.com"),
                Some("ada.l@example.com"),
            )],
        )]);
        let r = assess(&p, 10);
        assert_eq!(r.len(), 1);
        assert!(!r[0].reason.contains("unlinks"), "{r:?}");
    }

    #[test]
    fn other_attribute_changes_and_first_emails_are_not_risky() {
        let title = Change {
            path: "title".into(),
            old: Some(Value::String("a".into())),
            new: Some(Value::String("b".into())),
            drift: false,
        };
        let p = plan(vec![
            update("ada", vec![title]),
            update("bob", vec![email_change(None, Some("bob@example.com"))]),
        ]);
        assert!(assess(&p, 10).is_empty());
    }

    #[test]
    fn deletes_are_flagged_and_disables_are_not() {
        let p = plan(vec![
            Action::DisableUser {
                user: SourceId("1".into()),
                scim_id: ScimId("s1".into()),
                user_name: "one@example.com".into(),
                why: Why::NotInSource,
            },
            Action::DeleteUser {
                user: SourceId("2".into()),
                scim_id: ScimId("s2".into()),
                user_name: "two@example.com".into(),
                why: Why::NotInSource,
            },
            Action::DeleteGroup {
                group: SourceId("g".into()),
                scim_id: ScimId("sg".into()),
                display_name: "Research".into(),
            },
        ]);
        let kinds: Vec<RiskKind> = assess(&p, 10).iter().map(|r| r.kind).collect();
        assert_eq!(kinds, vec![RiskKind::UserDelete, RiskKind::GroupDelete]);
    }

    #[test]
    fn member_removals_are_summed_over_chunks_per_group() {
        // 6 + 5 chunks of one group reach 10; 9 in another group do not.
        let p = plan(vec![
            removal("Engineering", 6),
            removal("Engineering", 5),
            removal("Research", 9),
        ]);
        let r = assess(&p, 10);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].kind, RiskKind::LargeMemberRemoval);
        assert_eq!(r[0].subject, "Engineering");
        assert!(r[0].reason.starts_with("11 members"), "{r:?}");
        assert_eq!(assess(&p, 9).len(), 2);
    }
}
