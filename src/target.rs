//! The actual state of the target, as the planner needs it.
//!
//! Two ways to know it:
//! * **incremental** — from the store: the links and the state scimsync last
//!   pushed. No request at all; what was changed by hand in the target is not
//!   seen until the next reconcile.
//! * **reconcile** — a full paged read of Users and Groups. Links are checked
//!   against what exists, unlinked accounts are matched (externalId, then
//!   userName; groups by name), drift is visible to the planner, and stored
//!   memberships are reset to what the target really has.
//!
//! Matching itself ([`reconcile`]) is a pure function over the listings.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::model::{Members, ScimId, SourceId};
use crate::plan::{
    Actual, ActualAttrs, ActualGroup, ActualUser, Conflict, Desired, DesiredUser, LinkState,
    RetiredGroup,
};
use crate::scim;
use crate::store::{GroupLink, StoredUser, UserLink};

/// Build the actual state from the store alone.
pub fn from_store(users: &[UserLink], groups: &[GroupLink]) -> Actual {
    let users = users.iter().cloned().map(StoredUser::from).collect();
    from_store_owned(users, groups.to_vec())
}

/// [`from_store`], taking the links: the stored states and member sets move
/// into the actual state instead of being copied (they are most of it). A
/// state left undecoded because it was the wanted one ([`SameAsWanted`])
/// becomes [`ActualAttrs::AsWanted`].
pub fn from_store_owned(users: Vec<StoredUser>, groups: Vec<GroupLink>) -> Actual {
    Actual {
        users: users
            .into_iter()
            .map(|l| {
                (
                    l.source_id,
                    ActualUser {
                        scim_id: l.scim_id,
                        attrs: l.state.map_or(ActualAttrs::AsWanted, ActualAttrs::Known),
                        link: LinkState::Linked,
                        pushed: None,
                    },
                )
            })
            .collect(),
        groups: groups
            .into_iter()
            .map(|g| {
                let external_id = Some(g.source_id.to_string());
                (
                    g.source_id,
                    ActualGroup {
                        scim_id: g.scim_id,
                        display_name: g.display_name,
                        external_id,
                        members: g.members,
                        foreign_members: BTreeMap::new(),
                        link: LinkState::Linked,
                        drift: BTreeSet::new(),
                    },
                )
            })
            .collect(),
        complete: false,
        ..Actual::default()
    }
}

/// Tells whether a stored user state is, as text, the state wanted now
/// (the `same` test of [`crate::store::Store::stored_users`]). States are
/// stored as the compact JSON of their [`crate::plan::Attrs`]; the wanted
/// state is written the same way and the bytes compared, so "same" means
/// exactly equal. Any other text (another writer, an older format, a real
/// difference) is just "not the same": it is decoded and compared by value.
pub struct SameAsWanted<'d> {
    desired: &'d BTreeMap<SourceId, DesiredUser>,
    /// Stored rows arrive in source id order: walked in step with the
    /// wanted users instead of a tree search per row.
    next: std::iter::Peekable<std::collections::btree_map::Range<'d, SourceId, DesiredUser>>,
    text: Vec<u8>,
}

impl<'d> SameAsWanted<'d> {
    /// Over the wanted people (a [`Desired`]'s `users`).
    pub fn new(wanted: &'d BTreeMap<SourceId, DesiredUser>) -> Self {
        Self::starting_at(wanted, "")
    }

    /// Over the wanted people, for stored rows from the id `first` on.
    pub fn starting_at(wanted: &'d BTreeMap<SourceId, DesiredUser>, first: &str) -> Self {
        Self {
            desired: wanted,
            next: wanted
                .range::<str, _>((std::ops::Bound::Included(first), std::ops::Bound::Unbounded))
                .peekable(),
            text: Vec::with_capacity(1024),
        }
    }

    /// Whether `stored` is the text of the state wanted for `source_id`.
    pub fn check(&mut self, source_id: &str, stored: &str) -> bool {
        while self
            .next
            .next_if(|(id, _)| id.as_str() < source_id)
            .is_some()
        {}
        let want = match self.next.peek() {
            Some((id, want)) if id.as_str() == source_id => Some(*want),
            // Not wanted, or rows out of order: a search settles it.
            _ => self.desired.get(source_id),
        };
        let Some(want) = want else {
            return false;
        };
        self.text.clear();
        serde_json::to_writer(&mut self.text, &want.attrs).is_ok() && self.text == stored.as_bytes()
    }
}

/// What a full read found besides the actual state.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// The actual state.
    pub actual: Actual,
    /// Stored user links whose account no longer exists in the target.
    pub stale_users: Vec<SourceId>,
    /// Stored group links whose group no longer exists.
    pub stale_groups: Vec<SourceId>,
    /// Members now in each managed or matched group (by user source id), to
    /// reset the stored memberships.
    pub memberships: BTreeMap<SourceId, Vec<SourceId>>,
}

/// Options for matching.
#[derive(Clone, Copy, Debug)]
pub struct MatchRules {
    /// userName compares case-insensitively.
    pub user_name_ci: bool,
    /// group names compare case-insensitively.
    pub group_name_ci: bool,
    /// Adopt same-named unlinked groups.
    pub adopt_groups: bool,
}

fn fold(s: &str, ci: bool) -> String {
    if ci { s.to_lowercase() } else { s.to_owned() }
}

/// Join a full listing of the target with the stored links and the desired
/// state. `retired` groups (old groups of renames) are never matched.
pub fn reconcile(
    desired: &Desired,
    users: &[UserLink],
    groups: &[GroupLink],
    retired: &[RetiredGroup],
    target_users: &[Value],
    target_groups: &[Value],
    rules: MatchRules,
) -> Reconciled {
    let mut out = Reconciled::default();
    let managed = &desired.managed_paths;

    let by_id: HashMap<ScimId, &Value> = target_users
        .iter()
        .filter_map(|u| scim::resource_id(u).map(|id| (id, u)))
        .collect();
    let mut claimed: HashSet<ScimId> = HashSet::new();
    let mut scim_to_source: HashMap<ScimId, SourceId> = HashMap::new();

    for link in users {
        match by_id.get(&link.scim_id) {
            Some(resource) => {
                claimed.insert(link.scim_id.clone());
                scim_to_source.insert(link.scim_id.clone(), link.source_id.clone());
                out.actual.users.insert(
                    link.source_id.clone(),
                    ActualUser {
                        scim_id: link.scim_id.clone(),
                        attrs: ActualAttrs::Known(scim::read_attrs(
                            resource,
                            managed.iter().map(String::as_str),
                        )),
                        link: LinkState::Linked,
                        pushed: Some(link.state.clone()),
                    },
                );
            }
            None => out.stale_users.push(link.source_id.clone()),
        }
    }

    // Unlinked target accounts, indexed for matching.
    let mut by_external: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut by_name: HashMap<String, Vec<&Value>> = HashMap::new();
    for u in target_users {
        let Some(id) = scim::resource_id(u) else {
            continue;
        };
        if claimed.contains(&id) {
            continue;
        }
        if let Some(x) = scim::str_attr(u, "externalId") {
            by_external.entry(x).or_default().push(u);
        }
        if let Some(n) = scim::str_attr(u, "userName") {
            by_name
                .entry(fold(n, rules.user_name_ci))
                .or_default()
                .push(u);
        }
    }
    for (sid, want) in &desired.users {
        if out.actual.users.contains_key(sid) {
            continue;
        }
        let candidates = [
            (by_external.get(sid.as_str()), LinkState::MatchedExternalId),
            (
                by_name.get(&fold(&want.user_name, rules.user_name_ci)),
                LinkState::MatchedUserName,
            ),
        ];
        for (found, how) in candidates {
            let Some(list) = found else { continue };
            let free: Vec<&&Value> = list
                .iter()
                .filter(|v| scim::resource_id(v).is_some_and(|id| !claimed.contains(&id)))
                .collect();
            if free.len() > 1 && how == LinkState::MatchedExternalId {
                out.actual.conflicts.push(Conflict {
                    resource: "user".into(),
                    source_id: sid.clone(),
                    label: want.user_name.clone(),
                    reason: format!(
                        "{} target accounts carry externalId `{sid}`; link one by hand (scimsync links) or remove the duplicate",
                        free.len()
                    ),
                });
                break;
            }
            if let Some(resource) = free.first() {
                let id = scim::resource_id(resource).expect("filtered on id");
                claimed.insert(id.clone());
                scim_to_source.insert(id.clone(), sid.clone());
                out.actual.users.insert(
                    sid.clone(),
                    ActualUser {
                        scim_id: id,
                        attrs: ActualAttrs::Known(scim::read_attrs(
                            resource,
                            managed.iter().map(String::as_str),
                        )),
                        link: how,
                        pushed: None,
                    },
                );
                break;
            }
        }
    }
    // A user with a conflict must not be created either: hold it.
    out.actual.unmanaged_users = target_users
        .iter()
        .filter(|u| scim::resource_id(u).is_some_and(|id| !claimed.contains(&id)))
        .count();

    // Labels for members the engine does not manage.
    let user_label: HashMap<ScimId, String> = target_users
        .iter()
        .filter_map(|u| {
            let id = scim::resource_id(u)?;
            let name = scim::str_attr(u, "userName")
                .unwrap_or(id.as_str())
                .to_owned();
            Some((id, name))
        })
        .collect();

    // Groups.
    let groups_by_id: HashMap<ScimId, &Value> = target_groups
        .iter()
        .filter_map(|g| scim::resource_id(g).map(|id| (id, g)))
        .collect();
    let mut claimed_groups: HashSet<ScimId> = retired.iter().map(|r| r.scim_id.clone()).collect();
    let mut group_entries: Vec<(SourceId, &Value, LinkState)> = Vec::new();
    let mut pushed_members: HashMap<SourceId, &Members> = HashMap::new();
    for link in groups {
        match groups_by_id.get(&link.scim_id) {
            Some(g) => {
                claimed_groups.insert(link.scim_id.clone());
                pushed_members.insert(link.source_id.clone(), &link.members);
                group_entries.push((link.source_id.clone(), g, LinkState::Linked));
            }
            None => out.stale_groups.push(link.source_id.clone()),
        }
    }
    let linked_group_ids: BTreeSet<&SourceId> = group_entries.iter().map(|(s, _, _)| s).collect();
    let mut groups_by_name: HashMap<String, &Value> = HashMap::new();
    let mut groups_by_external: HashMap<&str, Vec<&Value>> = HashMap::new();
    for g in target_groups {
        let Some(id) = scim::resource_id(g) else {
            continue;
        };
        if claimed_groups.contains(&id) {
            continue;
        }
        if let Some(n) = scim::str_attr(g, "displayName") {
            groups_by_name
                .entry(fold(n, rules.group_name_ci))
                .or_insert(g);
        }
        if let Some(x) = scim::str_attr(g, "externalId") {
            groups_by_external.entry(x).or_default().push(g);
        }
    }
    let mut matched_groups = Vec::new();
    for (gid, want) in &desired.groups {
        if linked_group_ids.contains(gid) {
            continue;
        }
        let want_name = fold(&want.display_name, rules.group_name_ci);
        // externalId is ours to set: a group carrying this source id was
        // created by scimsync (a link lost, or a create whose answer was lost).
        if let Some(list) = groups_by_external.get(gid.as_str()) {
            let free: Vec<&&Value> = list
                .iter()
                .filter(|g| scim::resource_id(g).is_some_and(|id| !claimed_groups.contains(&id)))
                .collect();
            let same_name: Vec<&&Value> = free
                .iter()
                .copied()
                .filter(|g| {
                    scim::str_attr(g, "displayName")
                        .is_some_and(|n| fold(n, rules.group_name_ci) == want_name)
                })
                .collect();
            let pick = match (free.len(), same_name.len()) {
                (1, _) => Some(free[0]),
                (_, 1) => Some(same_name[0]),
                (0, _) => None,
                (n, _) => {
                    out.actual.conflicts.push(Conflict {
                        resource: "group".into(),
                        source_id: gid.clone(),
                        label: want.display_name.clone(),
                        reason: format!(
                            "{n} target groups carry externalId `{gid}`; link one by hand (scimsync links) or delete the duplicate"
                        ),
                    });
                    continue;
                }
            };
            if let Some(g) = pick {
                claimed_groups.insert(scim::resource_id(g).expect("filtered on id"));
                matched_groups.push((gid.clone(), *g, LinkState::MatchedExternalId));
                continue;
            }
        }
        if let Some(g) = groups_by_name.get(&want_name) {
            let id = scim::resource_id(g).expect("indexed by id");
            if claimed_groups.contains(&id) {
                continue;
            }
            if rules.adopt_groups {
                claimed_groups.insert(id);
                matched_groups.push((gid.clone(), *g, LinkState::MatchedDisplayName));
            } else {
                out.actual.conflicts.push(Conflict {
                    resource: "group".into(),
                    source_id: gid.clone(),
                    label: want.display_name.clone(),
                    reason: "a group with this name already exists in the target and is not managed by scimsync; set `groups.adopt_existing = true` to link it".into(),
                });
            }
        }
    }
    group_entries.extend(matched_groups);
    for (gid, g, link) in group_entries {
        let mut members = Vec::new();
        let mut foreign = BTreeMap::new();
        if let Some(list) = g.get("members").and_then(Value::as_array) {
            for m in list {
                let Some(value) = m.get("value").and_then(|v| match v {
                    Value::String(s) => Some(ScimId(s.clone())),
                    Value::Number(n) => Some(ScimId(n.to_string())),
                    _ => None,
                }) else {
                    continue;
                };
                match scim_to_source.get(&value) {
                    Some(sid) => members.push(sid.clone()),
                    None => {
                        let label = user_label
                            .get(&value)
                            .cloned()
                            .or_else(|| m.get("display").and_then(Value::as_str).map(str::to_owned))
                            .unwrap_or_else(|| value.0.clone());
                        foreign.insert(value, label);
                    }
                }
            }
        }
        let members = Members::from_vec(members);
        out.memberships
            .insert(gid.clone(), members.iter().cloned().collect());
        // What scimsync last pushed vs what the target has: an edit made in
        // the target, or a change the target acknowledged but did not apply.
        let drift: BTreeSet<SourceId> = pushed_members
            .get(&gid)
            .map(|pushed| {
                (pushed.difference(&members))
                    .chain(members.difference(pushed))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.actual.groups.insert(
            gid,
            ActualGroup {
                scim_id: scim::resource_id(g).expect("indexed by id"),
                display_name: scim::str_attr(g, "displayName")
                    .unwrap_or_default()
                    .to_owned(),
                external_id: scim::str_attr(g, "externalId").map(str::to_owned),
                members,
                foreign_members: foreign,
                link,
                drift,
            },
        );
    }
    out.actual.unmanaged_groups = target_groups
        .iter()
        .filter(|g| scim::resource_id(g).is_some_and(|id| !claimed_groups.contains(&id)))
        .count();
    out.actual.retired_groups = retired.to_vec();
    out.actual.complete = true;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Attrs;
    use serde_json::json;

    fn desired(ids: &[&str]) -> Desired {
        let users = ids
            .iter()
            .map(|id| {
                let mut attrs = Attrs::new();
                attrs.insert("userName", json!(format!("{id}@x.org")));
                attrs.insert("displayName", json!(format!("Ann \"{id}\" Ö")));
                attrs.insert("active", json!(true));
                let user = DesiredUser {
                    user_name: format!("{id}@x.org"),
                    email: String::new(),
                    attrs,
                };
                (SourceId::from(*id), user)
            })
            .collect();
        Desired {
            users,
            ..Desired::default()
        }
    }

    /// What the store holds for a state pushed as `attrs`.
    fn stored(d: &Desired, id: &str) -> String {
        serde_json::to_string(&d.users[id].attrs).unwrap()
    }

    #[test]
    fn same_as_wanted_is_the_exact_text_of_the_wanted_state() {
        let d = desired(&["1", "2", "3"]);
        let mut same = SameAsWanted::new(&d.users);
        assert!(same.check("1", &stored(&d, "1")));
        // Another user's text, a value changed, the same object written
        // another way (spaces): not the same, so decoded and compared.
        assert!(!same.check("2", &stored(&d, "3")));
        let edited = stored(&d, "3").replace("3@x.org", "3@y.org");
        assert!(!same.check("3", &edited));
        let spaced = stored(&d, "3").replace(':', ": ");
        assert!(!same.check("3", &spaced));
        // Not wanted at all.
        assert!(!same.check("4", &stored(&d, "3")));
    }

    #[test]
    fn same_as_wanted_finds_rows_out_of_order_and_from_a_starting_id() {
        let d = desired(&["a", "b", "c"]);
        let mut same = SameAsWanted::new(&d.users);
        assert!(same.check("c", &stored(&d, "c")));
        // Behind the walk: found by a search.
        assert!(same.check("a", &stored(&d, "a")));
        assert!(same.check("b", &stored(&d, "b")));
        let mut upper = SameAsWanted::starting_at(&d.users, "b");
        assert!(upper.check("b", &stored(&d, "b")));
        assert!(upper.check("c", &stored(&d, "c")));
        assert!(upper.check("a", &stored(&d, "a")));
    }

    #[test]
    fn stored_users_become_known_or_as_wanted() {
        let d = desired(&["1"]);
        let state = d.users["1"].attrs.clone();
        let actual = from_store_owned(
            vec![
                StoredUser {
                    source_id: "1".into(),
                    scim_id: ScimId::from("s1"),
                    state: None,
                },
                StoredUser {
                    source_id: "2".into(),
                    scim_id: ScimId::from("s2"),
                    state: Some(state.clone()),
                },
            ],
            Vec::new(),
        );
        assert_eq!(actual.users["1"].attrs, ActualAttrs::AsWanted);
        assert_eq!(actual.users["2"].attrs, ActualAttrs::Known(state));
        assert!(!actual.complete);
    }
}
