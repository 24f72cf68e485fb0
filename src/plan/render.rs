//! Plan output: terraform-shaped text for humans, JSON for machines.
//!
//! The text reads without colour: a symbol column (`+` create, `~` update,
//! `!` disable, `-` delete), nested `attr: old -> new` lines, member `+`/`-`
//! lines under their group, a legend of the symbols used and one summary line.
//! "No changes." when there is nothing to do.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::risk::RiskKind;
use super::{Action, Change, LinkState, Plan};

/// ANSI styling, or none.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Whether to emit ANSI colour codes.
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn sym(&self, sym: char) -> String {
        let code = match sym {
            '+' => "32",
            '~' => "33",
            '!' => "35",
            '-' => "31",
            _ => "0",
        };
        self.paint(code, &sym.to_string())
    }
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

fn adopt_words(link: LinkState) -> &'static str {
    match link {
        LinkState::Linked => "linked",
        LinkState::MatchedExternalId => "adopt existing account matched by externalId",
        LinkState::MatchedUserName => "adopt existing account matched by userName",
        LinkState::MatchedDisplayName => "adopt existing group matched by name",
    }
}

fn change_lines(out: &mut String, style: Style, changes: &[Change]) {
    for c in changes {
        let drift = if c.drift {
            "  (changed in the target)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "        {} {}: {} -> {}{drift}",
            style.sym('~'),
            c.path,
            show(&c.old),
            show(&c.new)
        );
    }
}

fn risk_words(kind: RiskKind) -> &'static str {
    match kind {
        RiskKind::EmailChange => "email change",
        RiskKind::UserDelete => "user delete",
        RiskKind::GroupDelete => "group delete",
        RiskKind::LargeMemberRemoval => "large member removal",
        RiskKind::GroupRename => "group replaced",
    }
}

/// `  [risk: ...]` after the line of a flagged user or group, or nothing.
fn risk_marker(plan: &Plan, style: Style, resource: &str, subject: &str) -> String {
    let mut kinds: Vec<RiskKind> = plan
        .risks
        .iter()
        .filter(|r| r.resource == resource && r.subject == subject)
        .map(|r| r.kind)
        .collect();
    kinds.dedup();
    if kinds.is_empty() {
        return String::new();
    }
    let words: Vec<&str> = kinds.into_iter().map(risk_words).collect();
    format!(
        "  {}",
        style.paint("1;31", &format!("[risk: {}]", words.join(", ")))
    )
}

fn member_line(m: &crate::plan::Member) -> String {
    if m.drift {
        format!("{}  (changed in the target)", m.label)
    } else {
        m.label.clone()
    }
}

/// Render a plan for a terminal or a log. `header` lines go first.
pub fn render_human(plan: &Plan, header: &[String], style: Style) -> String {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "{line}");
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if !header.is_empty() || !plan.notes.is_empty() {
        out.push('\n');
    }

    let mut used = [false; 4]; // + ~ ! -
    let mut users = String::new();
    for a in &plan.actions {
        match a {
            Action::CreateUser {
                user_name,
                attrs,
                lookup_first,
                ..
            } => {
                used[0] = true;
                let name = attrs
                    .get("displayName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let look = if *lookup_first {
                    "  (matched first if it exists)"
                } else {
                    ""
                };
                let _ = writeln!(
                    users,
                    "  {} user  {user_name}  ({name}){look}",
                    style.sym('+')
                );
            }
            Action::UpdateUser {
                user_name,
                changes,
                adopt,
                ..
            } => {
                used[1] = true;
                let how = adopt
                    .map(|l| format!("  ({})", adopt_words(l)))
                    .unwrap_or_default();
                let _ = writeln!(
                    users,
                    "  {} user  {user_name}{how}{}",
                    style.sym('~'),
                    risk_marker(plan, style, "user", user_name)
                );
                change_lines(&mut users, style, changes);
            }
            Action::DisableUser { user_name, why, .. } => {
                used[2] = true;
                let _ = writeln!(
                    users,
                    "  {} user  {user_name}  (disable: {}; active true -> false)",
                    style.sym('!'),
                    why.describe()
                );
            }
            Action::DeleteUser { user_name, why, .. } => {
                used[3] = true;
                let _ = writeln!(
                    users,
                    "  {} user  {user_name}  (delete: {}){}",
                    style.sym('-'),
                    why.describe(),
                    risk_marker(plan, style, "user", user_name)
                );
            }
            _ => {}
        }
    }

    // Groups with their membership changes nested underneath.
    #[derive(Default)]
    struct G {
        head: Option<String>,
        adds: Vec<String>,
        removes: Vec<String>,
    }
    let mut groups: BTreeMap<(String, String), G> = BTreeMap::new();
    for a in &plan.actions {
        match a {
            Action::CreateGroup {
                group,
                display_name,
            } => {
                used[0] = true;
                groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default()
                    .head = Some(format!("  {} group {display_name}", style.sym('+')));
            }
            Action::UpdateGroup {
                group,
                display_name,
                changes,
                adopt,
                ..
            } => {
                used[1] = true;
                let how = adopt
                    .map(|l| format!("  ({})", adopt_words(l)))
                    .unwrap_or_default();
                let mut head = format!("  {} group {display_name}{how}\n", style.sym('~'));
                change_lines(&mut head, style, changes);
                groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default()
                    .head = Some(head.trim_end().to_owned());
            }
            Action::DeleteGroup {
                group,
                display_name,
                ..
            } => {
                used[3] = true;
                groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default()
                    .head = Some(format!("  {} group {display_name}", style.sym('-')));
            }
            Action::RenameGroup {
                group,
                old_name,
                display_name,
                members,
                delete_old,
                ..
            } => {
                used[1] = true;
                let old = if *delete_old {
                    format!("delete `{old_name}`")
                } else {
                    format!("leave `{old_name}` in place (policy.delete_groups = false)")
                };
                groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default()
                    .head = Some(format!(
                    "  {} group {old_name} -> {display_name}  (rename: the target cannot rename groups; create `{display_name}`, move {} members, {old}; product access granted to the old group must be granted to the new one)",
                    style.sym('~'),
                    members.len()
                ));
            }
            Action::RetireGroup {
                group,
                display_name,
                ..
            } => {
                used[3] = true;
                groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default()
                    .head = Some(format!(
                    "  {} group {display_name}  (old group of a rename, still to delete)",
                    style.sym('-')
                ));
            }
            Action::AddMembers {
                group,
                display_name,
                members,
                ..
            } => {
                used[0] = true;
                let g = groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default();
                g.adds.extend(members.iter().map(member_line));
            }
            Action::RemoveMembers {
                group,
                display_name,
                members,
                ..
            } => {
                used[3] = true;
                let g = groups
                    .entry((display_name.clone(), group.to_string()))
                    .or_default();
                g.removes.extend(members.iter().map(member_line));
            }
            _ => {}
        }
    }

    if plan.has_changes() {
        out.push_str("scimsync will perform these actions:\n\n");
        out.push_str(&users);
        for ((name, _), g) in &groups {
            let marker = risk_marker(plan, style, "group", name);
            match &g.head {
                Some(h) => {
                    // The marker goes on the group's own line, before any change lines.
                    let (first, rest) = h.split_once('\n').unwrap_or((h, ""));
                    let _ = writeln!(out, "{first}{marker}");
                    if !rest.is_empty() {
                        let _ = writeln!(out, "{rest}");
                    }
                }
                None => {
                    used[1] = true;
                    let _ = writeln!(out, "  {} group {name}{marker}", style.sym('~'));
                }
            }
            for m in &g.adds {
                let _ = writeln!(out, "        {} member {m}", style.sym('+'));
            }
            for m in &g.removes {
                let _ = writeln!(out, "        {} member {m}", style.sym('-'));
            }
        }
        out.push('\n');
    }

    if !plan.rejects.is_empty() {
        let _ = writeln!(
            out,
            "Invalid records ({}), not provisioned; their target accounts are left untouched:",
            plan.rejects.len()
        );
        for r in &plan.rejects {
            let who = match (&r.source_id, &r.label) {
                (Some(id), Some(l)) => format!("id {id}, {l}"),
                (Some(id), None) => format!("id {id}"),
                (None, Some(l)) => l.clone(),
                (None, None) => "no id".into(),
            };
            let _ = writeln!(out, "  {} ({who}): {}", r.origin, r.reason);
        }
        out.push('\n');
    }
    if !plan.conflicts.is_empty() {
        let _ = writeln!(out, "Conflicts ({}), skipped:", plan.conflicts.len());
        for c in &plan.conflicts {
            let _ = writeln!(
                out,
                "  {} {} (id {}): {}",
                c.resource, c.label, c.source_id, c.reason
            );
        }
        out.push('\n');
    }

    if !plan.risks.is_empty() {
        let _ = writeln!(
            out,
            "{} {} {} to review before applying:",
            style.paint("1;31", "Risks:"),
            plan.risks.len(),
            if plan.risks.len() == 1 {
                "action"
            } else {
                "actions"
            }
        );
        for r in &plan.risks {
            let _ = writeln!(
                out,
                "  - {} {} ({}): {}",
                r.resource,
                r.subject,
                risk_words(r.kind),
                r.reason
            );
        }
        out.push('\n');
    }

    if !plan.guard.is_empty() {
        let _ = writeln!(
            out,
            "{} the deprovisioning guard HOLDS every disable, delete and member removal of this plan:",
            style.paint("1;31", "Guard:")
        );
        for r in &plan.guard {
            let _ = writeln!(out, "  - {r}");
        }
        out.push_str("  The other actions are applied. If this is intended, approve with `sync --allow-deprovision`.\n\n");
    }

    if !plan.has_changes() {
        out.push_str(&style.paint("1;32", "No changes."));
        out.push_str(" The target matches the source directory.\n");
        return out;
    }

    let legend: Vec<String> = [
        ('+', "create"),
        ('~', "update"),
        ('!', "disable"),
        ('-', "delete"),
    ]
    .iter()
    .zip(used)
    .filter(|(_, u)| *u)
    .map(|((s, w), _)| format!("{} {w}", style.sym(*s)))
    .collect();
    let _ = writeln!(out, "Symbols: {}", legend.join(", "));
    let _ = writeln!(out, "{}", summary_line(plan));
    out
}

/// `Plan: 3 to create, 1 to update, ...` in one line.
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut parts = vec![
        format!("{} to create", s.users_create + s.groups_create),
        format!("{} to update", s.users_update + s.groups_update),
    ];
    if s.users_link > 0 {
        parts.push(format!("{} to link", s.users_link));
    }
    if s.groups_rename > 0 {
        parts.push(format!("{} to rename", s.groups_rename));
    }
    parts.push(format!("{} to disable", s.users_disable));
    parts.push(format!(
        "{} to delete",
        s.users_delete + s.groups_delete + s.groups_retire
    ));
    let mut line = format!(
        "Plan: {}; {} membership changes (+{} -{})",
        parts.join(", "),
        s.members_add + s.members_remove,
        s.members_add,
        s.members_remove
    );
    if s.invalid > 0 {
        let _ = write!(line, "; {} invalid records", s.invalid);
    }
    if s.conflicts > 0 {
        let _ = write!(line, "; {} conflicts", s.conflicts);
    }
    line.push('.');
    line
}

/// The plan as a JSON document (stable field names; see README).
pub fn render_json(plan: &Plan, context: Value) -> Value {
    serde_json::json!({
        "context": context,
        "has_changes": plan.has_changes(),
        "summary": plan.summary,
        "actions": plan.actions,
        "invalid": plan.rejects,
        "conflicts": plan.conflicts,
        "notes": plan.notes,
        "guard": plan.guard,
        "risks": plan.risks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ScimId, SourceId};
    use crate::plan::risk::assess;
    use crate::plan::{Member, Summary, Why};

    fn risky_plan() -> Plan {
        let mut plan = Plan {
            actions: vec![
                Action::UpdateUser {
                    user: SourceId("1".into()),
                    scim_id: ScimId("s1".into()),
                    user_name: "ada@example.com".into(),
                    changes: vec![Change {
                        path: "emails[type eq \"work\"].value".into(),
                        old: Some(Value::String("ada@example.com".into())),
                        new: Some(Value::String("ada@contractor.io".into())),
                        drift: false,
                    }],
                    adopt: None,
                    after: None,
                },
                Action::UpdateUser {
                    user: SourceId("2".into()),
                    scim_id: ScimId("s2".into()),
                    user_name: "grace@example.com".into(),
                    changes: vec![Change {
                        path: "title".into(),
                        old: Some(Value::String("a".into())),
                        new: Some(Value::String("b".into())),
                        drift: false,
                    }],
                    adopt: None,
                    after: None,
                },
                Action::RemoveMembers {
                    group: SourceId("g1".into()),
                    display_name: "Engineering".into(),
                    group_scim_id: ScimId("sg1".into()),
                    members: (0..3)
                        .map(|i| Member {
                            user: Some(SourceId::from(format!("u{i}"))),
                            label: format!("u{i}@example.com"),
                            scim_id: Some(ScimId(format!("su{i}"))),
                            drift: false,
                        })
                        .collect(),
                },
                Action::DeleteUser {
                    user: SourceId("3".into()),
                    scim_id: ScimId("s3".into()),
                    user_name: "alan@example.com".into(),
                    why: Why::NotInSource,
                },
                Action::DeleteGroup {
                    group: SourceId("g2".into()),
                    scim_id: ScimId("sg2".into()),
                    display_name: "Research".into(),
                },
            ],
            summary: Summary {
                users_update: 2,
                users_delete: 1,
                groups_delete: 1,
                members_remove: 3,
                ..Summary::default()
            },
            ..Plan::default()
        };
        plan.risks = assess(&plan, 3);
        plan
    }

    fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
    }

    #[test]
    fn risky_actions_are_marked_on_their_line_and_listed() {
        let text = render_human(&risky_plan(), &[], Style { color: false });
        assert!(
            line_with(&text, "user  ada@example.com").ends_with("[risk: email change]"),
            "{text}"
        );
        assert!(
            !line_with(&text, "user  grace@example.com").contains("risk"),
            "{text}"
        );
        assert!(
            line_with(&text, "user  alan@example.com").ends_with("[risk: user delete]"),
            "{text}"
        );
        assert!(
            line_with(&text, "group Research").ends_with("[risk: group delete]"),
            "{text}"
        );
        assert!(
            line_with(&text, "group Engineering").ends_with("[risk: large member removal]"),
            "{text}"
        );
        assert!(
            text.contains("Risks: 4 actions to review before applying:"),
            "{text}"
        );
        assert!(
            text.contains("user ada@example.com (email change): email moves from domain example.com to contractor.io"),
            "{text}"
        );
    }

    #[test]
    fn a_plan_without_risks_has_no_risk_section() {
        let mut plan = risky_plan();
        plan.risks.clear();
        let text = render_human(&plan, &[], Style { color: false });
        assert!(!text.contains("risk"), "{text}");
        assert!(!text.contains("Risks:"), "{text}");
    }

    #[test]
    fn risks_are_in_the_json_plan() {
        let doc = render_json(&risky_plan(), Value::Null);
        let kinds: Vec<&str> = doc["risks"]
            .as_array()
            .expect("a risks array")
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "email_change",
                "user_delete",
                "group_delete",
                "large_member_removal"
            ]
        );
    }
}
