//! Unit and property tests of the diff engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::{Deprovision, GroupSettings, MappingConfig, Policy, ScopeConfig};
use crate::connector::Profile;
use crate::mapping::{self, Mapping};
use crate::model::{Members, Origin, RecordKind, Reject, Snapshot, SourceGroup, SourceUser};

const EMAIL: &str = "emails[type eq \"work\"].value";

// --- builders ---------------------------------------------------------------

fn sid(s: &str) -> SourceId {
    SourceId::from(s)
}

fn scim(s: &str) -> ScimId {
    ScimId::from(s)
}

fn ids<C: FromIterator<SourceId>>(list: &[&str]) -> C {
    list.iter().map(|s| sid(s)).collect()
}

/// Defaults: create/update on, deprovision Disable, groups on, member_chunk 2.
fn policy() -> Policy {
    Policy {
        create_users: true,
        update_users: true,
        deprovision: Deprovision::Disable,
        create_groups: true,
        update_groups: true,
        delete_groups: true,
        sync_memberships: true,
        group_name_ci: true,
        group_rename: false,
        delete_removes_memberships: true,
        member_chunk: 2,
        reconcile_interval: Duration::from_secs(24 * 3600),
    }
}

fn managed() -> BTreeSet<String> {
    [
        "active",
        "displayName",
        EMAIL,
        "externalId",
        "name.familyName",
        "name.givenName",
        "title",
        "userName",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The attributes the mapping would give a user `id` named `name`.
fn attrs(id: &str, name: &str) -> Attrs {
    let mut a = Attrs::new();
    a.insert("externalId", json!(id));
    a.insert("userName", json!(format!("{name}@x.org")));
    a.insert(EMAIL, json!(format!("{name}@x.org")));
    a.insert("displayName", json!(name));
    a.insert("active", json!(true));
    a
}

fn with(mut a: Attrs, path: &str, v: Value) -> Attrs {
    a.insert(path.to_owned(), v);
    a
}

fn without(mut a: Attrs, path: &str) -> Attrs {
    a.remove(path);
    a
}

fn desired_user(a: Attrs) -> DesiredUser {
    DesiredUser {
        user_name: a["userName"].as_str().unwrap_or_default().to_owned(),
        email: a
            .get(EMAIL)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        attrs: a,
    }
}

fn desired(users: Vec<(&str, Attrs)>, groups: Vec<(&str, &[&str])>) -> Desired {
    Desired {
        users: users
            .into_iter()
            .map(|(id, a)| (sid(id), desired_user(a)))
            .collect(),
        groups: groups
            .into_iter()
            .map(|(id, members)| {
                (
                    sid(id),
                    DesiredGroup {
                        display_name: format!("Group {id}"),
                        members: ids(members),
                    },
                )
            })
            .collect(),
        managed_paths: managed(),
        ..Desired::default()
    }
}

fn linked(scim_id: &str, a: Attrs) -> ActualUser {
    ActualUser {
        scim_id: scim(scim_id),
        attrs: ActualAttrs::Known(a),
        link: LinkState::Linked,
        pushed: None,
    }
}

/// The attributes of an account the tests hold as known.
fn known(u: &ActualUser) -> &Attrs {
    u.known().expect("the tests hold known attributes")
}

fn known_mut(u: &mut ActualUser) -> &mut Attrs {
    match &mut u.attrs {
        ActualAttrs::Known(a) => a,
        ActualAttrs::AsWanted => panic!("the tests hold known attributes"),
    }
}

fn group(scim_id: &str, id: &str, members: &[&str]) -> ActualGroup {
    ActualGroup {
        scim_id: scim(scim_id),
        display_name: format!("Group {id}"),
        external_id: Some(id.to_owned()),
        members: ids(members),
        foreign_members: BTreeMap::new(),
        link: LinkState::Linked,
        drift: BTreeSet::new(),
    }
}

fn actual(users: Vec<(&str, ActualUser)>, groups: Vec<(&str, ActualGroup)>) -> Actual {
    Actual {
        users: users.into_iter().map(|(id, u)| (sid(id), u)).collect(),
        groups: groups.into_iter().map(|(id, g)| (sid(id), g)).collect(),
        complete: true,
        ..Actual::default()
    }
}

fn member_users(members: &[Member]) -> Vec<Option<&str>> {
    members
        .iter()
        .map(|m| m.user.as_ref().map(SourceId::as_str))
        .collect()
}

fn verbs(plan: &Plan) -> Vec<(&'static str, String)> {
    plan.actions
        .iter()
        .map(|a| (a.verb(), a.subject().to_string()))
        .collect()
}

// --- basics -----------------------------------------------------------------

#[test]
fn empty_desired_and_actual_give_no_actions() {
    let plan = compute(&Desired::default(), &Actual::default(), &policy());
    assert!(plan.actions.is_empty());
    assert!(!plan.has_changes());
    assert_eq!(plan.summary, Summary::default());
}

#[test]
fn unchanged_objects_give_no_action() {
    let d = desired(
        vec![("1", attrs("1", "ann")), ("2", attrs("2", "bo"))],
        vec![("g", &["1", "2"])],
    );
    let a = actual(
        vec![
            ("1", linked("s1", attrs("1", "ann"))),
            (
                "2",
                // an unmanaged attribute and an absent `active` change nothing
                linked(
                    "s2",
                    with(without(attrs("2", "bo"), "active"), "nickName", json!("B")),
                ),
            ),
        ],
        vec![("g", group("sg", "g", &["1", "2"]))],
    );
    let plan = compute(&d, &a, &policy());
    assert_eq!(plan.actions, vec![], "{:#?}", plan.actions);
    assert_eq!(plan.summary, Summary::default());
}

#[test]
fn create_user_looks_up_first_unless_the_read_was_complete() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![]);
    for complete in [true, false] {
        let a = Actual {
            complete,
            ..Actual::default()
        };
        let plan = compute(&d, &a, &policy());
        assert_eq!(
            plan.actions,
            vec![Action::CreateUser {
                user: sid("1"),
                user_name: "ann@x.org".into(),
                attrs: attrs("1", "ann"),
                lookup_first: !complete,
            }]
        );
        assert_eq!(plan.summary.users_create, 1);
    }
}

#[test]
fn inactive_desired_user_absent_from_target_is_not_created() {
    let d = desired(
        vec![("1", with(attrs("1", "ann"), "active", json!(false)))],
        vec![],
    );
    let plan = compute(&d, &Actual::default(), &policy());
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
}

#[test]
fn create_users_off_creates_nobody() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![]);
    let plan = compute(
        &d,
        &Actual::default(),
        &Policy {
            create_users: false,
            ..policy()
        },
    );
    assert!(plan.actions.is_empty());
}

// --- updates ----------------------------------------------------------------

#[test]
fn attribute_changes_give_one_update_with_one_change_per_path() {
    let want = with(
        with(attrs("1", "ann"), "title", json!("CTO")),
        "displayName",
        json!("Ann L"),
    );
    let have = with(attrs("1", "ann"), "title", json!("Engineer"));
    let d = desired(vec![("1", want)], vec![]);
    let a = actual(vec![("1", linked("s1", have))], vec![]);
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::UpdateUser {
            user: sid("1"),
            scim_id: scim("s1"),
            user_name: "ann@x.org".into(),
            changes: vec![
                Change {
                    path: "displayName".into(),
                    old: Some(json!("ann")),
                    new: Some(json!("Ann L")),
                    drift: false,
                },
                Change {
                    path: "title".into(),
                    old: Some(json!("Engineer")),
                    new: Some(json!("CTO")),
                    drift: false,
                },
            ],
            adopt: None,
            after: None,
        }]
    );
    assert_eq!(plan.summary.users_update, 1);
    assert_eq!(plan.actions[0].verb(), "update");
}

#[test]
fn emails_compare_case_insensitively_other_attributes_do_not() {
    let d = desired(
        vec![("1", with(attrs("1", "ann"), EMAIL, json!("Ann@X.org")))],
        vec![],
    );
    let a = actual(vec![("1", linked("s1", attrs("1", "ann")))], vec![]);
    assert!(compute(&d, &a, &policy()).actions.is_empty());

    let d = desired(
        vec![("1", with(attrs("1", "ann"), "displayName", json!("ANN")))],
        vec![],
    );
    let plan = compute(&d, &a, &policy());
    let [Action::UpdateUser { changes, .. }] = plan.actions.as_slice() else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, "displayName");
}

#[test]
fn managed_path_absent_in_desired_is_removed_unmanaged_is_kept() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![]);
    let have = with(
        with(attrs("1", "ann"), "title", json!("CTO")),
        "nickName",
        json!("A"),
    );
    let a = actual(vec![("1", linked("s1", have))], vec![]);
    let plan = compute(&d, &a, &policy());
    let [Action::UpdateUser { changes, .. }] = plan.actions.as_slice() else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(
        changes,
        &vec![Change {
            path: "title".into(),
            old: Some(json!("CTO")),
            new: None,
            drift: false,
        }]
    );
}

#[test]
fn drift_is_flagged_when_the_target_moved_away_from_what_was_pushed() {
    let want = with(attrs("1", "ann"), "title", json!("CTO"));
    let mut have = linked("s1", with(attrs("1", "ann"), "title", json!("Boss")));
    have.pushed = Some(want.clone());
    let d = desired(vec![("1", want.clone())], vec![]);
    let a = actual(vec![("1", have.clone())], vec![]);
    let plan = compute(&d, &a, &policy());
    let [Action::UpdateUser { changes, .. }] = plan.actions.as_slice() else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(changes.len(), 1);
    assert!(changes[0].drift);

    // A source change (pushed differs from desired) is not drift.
    have.pushed = Some(with(want.clone(), "title", json!("Boss")));
    let a = actual(vec![("1", have)], vec![]);
    let plan = compute(&d, &a, &policy());
    let [Action::UpdateUser { changes, .. }] = plan.actions.as_slice() else {
        panic!("{:#?}", plan.actions);
    };
    assert!(!changes[0].drift);
}

#[test]
fn update_users_off_changes_nothing_but_still_adopts() {
    let d = desired(
        vec![("1", with(attrs("1", "ann"), "title", json!("CTO")))],
        vec![],
    );
    let p = Policy {
        update_users: false,
        ..policy()
    };
    let a = actual(vec![("1", linked("s1", attrs("1", "ann")))], vec![]);
    assert!(compute(&d, &a, &p).actions.is_empty());

    let mut matched = linked("s1", attrs("1", "ann"));
    matched.link = LinkState::MatchedUserName;
    let a = actual(vec![("1", matched)], vec![]);
    let plan = compute(&d, &a, &p);
    let [Action::UpdateUser { changes, adopt, .. }] = plan.actions.as_slice() else {
        panic!("{:#?}", plan.actions);
    };
    assert!(changes.is_empty());
    assert_eq!(*adopt, Some(LinkState::MatchedUserName));
}

// --- deprovisioning ---------------------------------------------------------

#[test]
fn linked_user_missing_from_desired_follows_the_deprovision_mode() {
    let d = desired(vec![], vec![]);
    let a = actual(vec![("9", linked("s9", attrs("9", "zed")))], vec![]);
    let plan = compute(
        &d,
        &a,
        &Policy {
            deprovision: Deprovision::Disable,
            ..policy()
        },
    );
    assert_eq!(
        plan.actions,
        vec![Action::DisableUser {
            user: sid("9"),
            scim_id: scim("s9"),
            user_name: "zed@x.org".into(),
            why: Why::NotInSource,
        }]
    );
    assert_eq!(plan.summary.users_disable, 1);

    let plan = compute(
        &d,
        &a,
        &Policy {
            deprovision: Deprovision::Delete,
            ..policy()
        },
    );
    assert_eq!(
        plan.actions,
        vec![Action::DeleteUser {
            user: sid("9"),
            scim_id: scim("s9"),
            user_name: "zed@x.org".into(),
            why: Why::NotInSource,
        }]
    );
    assert_eq!(plan.summary.users_delete, 1);

    let plan = compute(
        &d,
        &a,
        &Policy {
            deprovision: Deprovision::None,
            ..policy()
        },
    );
    assert!(plan.actions.is_empty());
}

#[test]
fn already_inactive_user_is_not_disabled_again_but_can_be_deleted() {
    let d = desired(vec![], vec![]);
    let a = actual(
        vec![(
            "9",
            linked("s9", with(attrs("9", "zed"), "active", json!(false))),
        )],
        vec![],
    );
    assert!(compute(&d, &a, &policy()).actions.is_empty());
    let plan = compute(
        &d,
        &a,
        &Policy {
            deprovision: Deprovision::Delete,
            ..policy()
        },
    );
    assert_eq!(verbs(&plan), vec![("delete", "9".to_owned())]);
}

#[test]
fn matched_but_unlinked_user_missing_from_desired_is_never_touched() {
    let d = desired(vec![], vec![]);
    for link in [LinkState::MatchedExternalId, LinkState::MatchedUserName] {
        let mut u = linked("s9", attrs("9", "zed"));
        u.link = link;
        let a = actual(vec![("9", u)], vec![]);
        for deprovision in [Deprovision::Disable, Deprovision::Delete] {
            let plan = compute(
                &d,
                &a,
                &Policy {
                    deprovision,
                    ..policy()
                },
            );
            assert!(plan.actions.is_empty(), "{link:?}: {:#?}", plan.actions);
        }
    }
}

#[test]
fn held_users_are_never_deprovisioned_and_keep_their_memberships() {
    let mut d = desired(vec![("1", attrs("1", "ann"))], vec![("g", &["1"])]);
    d.held_users = ids(&["9"]);
    let a = actual(
        vec![
            ("1", linked("s1", attrs("1", "ann"))),
            ("9", linked("s9", attrs("9", "zed"))),
        ],
        vec![("g", group("sg", "g", &["1", "9"]))],
    );
    for deprovision in [Deprovision::Disable, Deprovision::Delete] {
        let plan = compute(
            &d,
            &a,
            &Policy {
                deprovision,
                ..policy()
            },
        );
        assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    }
}

#[test]
fn out_of_scope_users_are_deprovisioned_as_out_of_scope() {
    let mut d = desired(vec![], vec![]);
    d.out_of_scope = ids(&["9"]);
    let a = actual(
        vec![
            ("8", linked("s8", attrs("8", "yan"))),
            ("9", linked("s9", attrs("9", "zed"))),
        ],
        vec![],
    );
    let plan = compute(&d, &a, &policy());
    let whys: Vec<(String, Why)> = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::DisableUser { user, why, .. } => (user.to_string(), *why),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        whys,
        vec![
            ("8".to_owned(), Why::NotInSource),
            ("9".to_owned(), Why::OutOfScope)
        ]
    );
}

#[test]
fn active_in_source_inactive_in_target_is_re_enabled() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![]);
    let a = actual(
        vec![(
            "1",
            linked("s1", with(attrs("1", "ann"), "active", json!(false))),
        )],
        vec![],
    );
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::UpdateUser {
            user: sid("1"),
            scim_id: scim("s1"),
            user_name: "ann@x.org".into(),
            changes: vec![Change {
                path: "active".into(),
                old: Some(json!(false)),
                new: Some(json!(true)),
                drift: false,
            }],
            adopt: None,
            after: None,
        }]
    );
}

#[test]
fn re_enable_change_is_sorted_with_the_other_changes() {
    let want = with(
        with(attrs("1", "ann"), "title", json!("CTO")),
        "displayName",
        json!("A"),
    );
    let d = desired(vec![("1", want)], vec![]);
    let a = actual(
        vec![(
            "1",
            linked("s1", with(attrs("1", "ann"), "active", json!(false))),
        )],
        vec![],
    );
    let plan = compute(&d, &a, &policy());
    let [Action::UpdateUser { changes, .. }] = plan.actions.as_slice() else {
        panic!("{:#?}", plan.actions);
    };
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["active", "displayName", "title"]);
}

#[test]
fn inactive_in_source_active_in_target_is_disabled() {
    let d = desired(
        vec![("1", with(attrs("1", "ann"), "active", json!(false)))],
        vec![],
    );
    let a = actual(vec![("1", linked("s1", attrs("1", "ann")))], vec![]);
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::DisableUser {
            user: sid("1"),
            scim_id: scim("s1"),
            user_name: "ann@x.org".into(),
            why: Why::InactiveInSource,
        }]
    );
    // Already inactive: nothing.
    let a = actual(
        vec![(
            "1",
            linked("s1", with(attrs("1", "ann"), "active", json!(false))),
        )],
        vec![],
    );
    assert!(compute(&d, &a, &policy()).actions.is_empty());
}

// --- adoption ---------------------------------------------------------------

#[test]
fn matched_user_is_adopted_even_without_changes() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![]);
    let mut u = linked("s1", with(attrs("1", "ann"), "nickName", json!("A")));
    u.link = LinkState::MatchedExternalId;
    let a = actual(vec![("1", u.clone())], vec![]);
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::UpdateUser {
            user: sid("1"),
            scim_id: scim("s1"),
            user_name: "ann@x.org".into(),
            changes: vec![],
            adopt: Some(LinkState::MatchedExternalId),
            after: Some(known(&u).clone()),
        }]
    );
    assert_eq!(plan.actions[0].verb(), "link");
    assert!(!plan.actions[0].sends_request());
    assert_eq!(plan.summary.users_link, 1);
    assert_eq!(plan.summary.users_update, 0);

    // With changes: `after` holds the attributes as they will be.
    let want = with(attrs("1", "ann"), "title", json!("CTO"));
    let d = desired(vec![("1", want)], vec![]);
    u.attrs = ActualAttrs::Known(with(known(&u).clone(), "displayName", json!("old")));
    u.link = LinkState::MatchedUserName;
    let a = actual(vec![("1", u)], vec![]);
    let plan = compute(&d, &a, &policy());
    let [
        Action::UpdateUser {
            changes,
            adopt,
            after,
            ..
        },
    ] = plan.actions.as_slice()
    else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(changes.len(), 2);
    assert_eq!(*adopt, Some(LinkState::MatchedUserName));
    assert_eq!(
        after.as_ref(),
        Some(&with(
            with(attrs("1", "ann"), "title", json!("CTO")),
            "nickName",
            json!("A")
        ))
    );
    assert_eq!(plan.actions[0].verb(), "update");
    assert_eq!(plan.summary.users_update, 1);
}

// --- groups -----------------------------------------------------------------

#[test]
fn new_group_is_created_and_members_added_in_chunks() {
    let d = desired(
        vec![
            ("1", attrs("1", "ann")),
            ("2", attrs("2", "bo")),
            ("3", attrs("3", "cy")),
        ],
        vec![("g", &["1", "2", "3"])],
    );
    let a = actual(
        vec![
            ("1", linked("s1", attrs("1", "ann"))),
            ("2", linked("s2", attrs("2", "bo"))),
        ],
        vec![],
    );
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![
            Action::CreateGroup {
                group: sid("g"),
                display_name: "Group g".into(),
            },
            Action::CreateUser {
                user: sid("3"),
                user_name: "cy@x.org".into(),
                attrs: attrs("3", "cy"),
                lookup_first: false,
            },
            Action::AddMembers {
                group: sid("g"),
                display_name: "Group g".into(),
                group_scim_id: None,
                members: vec![
                    Member {
                        user: Some(sid("1")),
                        label: "ann@x.org".into(),
                        scim_id: Some(scim("s1")),
                        drift: false,
                    },
                    Member {
                        user: Some(sid("2")),
                        label: "bo@x.org".into(),
                        scim_id: Some(scim("s2")),
                        drift: false,
                    },
                ],
            },
            Action::AddMembers {
                group: sid("g"),
                display_name: "Group g".into(),
                group_scim_id: None,
                members: vec![Member {
                    user: Some(sid("3")),
                    label: "cy@x.org".into(),
                    scim_id: None,
                    drift: false,
                }],
            },
        ]
    );
    assert_eq!(plan.summary.groups_create, 1);
    assert_eq!(plan.summary.members_add, 3);
}

#[test]
fn existing_group_gets_the_member_set_difference() {
    let d = desired(
        vec![
            ("1", attrs("1", "ann")),
            ("2", attrs("2", "bo")),
            ("3", attrs("3", "cy")),
            ("4", attrs("4", "di")),
        ],
        vec![("g", &["1", "3", "4"])],
    );
    let a = actual(
        vec![
            ("1", linked("s1", attrs("1", "ann"))),
            ("2", linked("s2", attrs("2", "bo"))),
            ("3", linked("s3", attrs("3", "cy"))),
            ("4", linked("s4", attrs("4", "di"))),
        ],
        vec![("g", group("sg", "g", &["1", "2"]))],
    );
    let plan = compute(&d, &a, &policy());
    assert_eq!(plan.actions.len(), 2, "{:#?}", plan.actions);
    let Action::AddMembers {
        group_scim_id,
        members,
        ..
    } = &plan.actions[0]
    else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(group_scim_id.as_ref(), Some(&scim("sg")));
    assert_eq!(member_users(members), [Some("3"), Some("4")]);
    let Action::RemoveMembers {
        group_scim_id,
        members,
        ..
    } = &plan.actions[1]
    else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(group_scim_id, &scim("sg"));
    assert_eq!(
        members,
        &vec![Member {
            user: Some(sid("2")),
            label: "bo@x.org".into(),
            scim_id: Some(scim("s2")),
            drift: false,
        }]
    );
    assert_eq!(plan.summary.members_add, 2);
    assert_eq!(plan.summary.members_remove, 1);
}

#[test]
fn foreign_members_are_removed() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![("g", &["1"])]);
    let mut g = group("sg", "g", &["1"]);
    g.foreign_members = [
        (scim("x1"), "stranger@x.org".to_owned()),
        (scim("x2"), "other@x.org".to_owned()),
        (scim("x3"), "third@x.org".to_owned()),
    ]
    .into_iter()
    .collect();
    let a = actual(vec![("1", linked("s1", attrs("1", "ann")))], vec![("g", g)]);
    let plan = compute(&d, &a, &policy());
    let removed: Vec<Member> = plan
        .actions
        .iter()
        .flat_map(|a| match a {
            Action::RemoveMembers { members, .. } => members.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let foreign = |id: &str, label: &str| Member {
        user: None,
        label: label.into(),
        scim_id: Some(scim(id)),
        drift: false,
    };
    assert_eq!(
        removed,
        vec![
            foreign("x1", "stranger@x.org"),
            foreign("x2", "other@x.org"),
            foreign("x3", "third@x.org"),
        ]
    );
    // Chunked by two: two requests.
    assert_eq!(plan.actions.len(), 2);
    assert_eq!(plan.summary.members_remove, 3);
}

#[test]
fn members_of_deleted_users_are_not_removed_separately() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![("g", &["1"])]);
    let a = actual(
        vec![
            ("1", linked("s1", attrs("1", "ann"))),
            ("9", linked("s9", attrs("9", "zed"))),
        ],
        vec![("g", group("sg", "g", &["1", "9"]))],
    );
    let plan = compute(
        &d,
        &a,
        &Policy {
            deprovision: Deprovision::Delete,
            ..policy()
        },
    );
    assert_eq!(verbs(&plan), vec![("delete", "9".to_owned())]);

    // Disabled (kept) accounts do lose the membership.
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        verbs(&plan),
        vec![
            ("remove_member", "g".to_owned()),
            ("disable", "9".to_owned())
        ]
    );

    // A target without referential integrity (scim2-server keeps a deleted
    // user's id in `members`): the membership is removed before the delete.
    let no_integrity = Policy {
        deprovision: Deprovision::Delete,
        delete_removes_memberships: false,
        ..policy()
    };
    let plan = compute(&d, &a, &no_integrity);
    assert_eq!(
        verbs(&plan),
        vec![
            ("remove_member", "g".to_owned()),
            ("delete", "9".to_owned())
        ]
    );
    let after = apply_to(&a, &plan, false);
    assert_eq!(
        after.groups[&SourceId("g".into())].members,
        Members::from_vec(vec![SourceId("1".into())])
    );
}

#[test]
fn delete_groups_policy_decides_about_linked_groups_left_out() {
    let mut d = desired(vec![], vec![]);
    d.held_groups = ids(&["held"]);
    let mut matched = group("sm", "m", &[]);
    matched.link = LinkState::MatchedDisplayName;
    let a = actual(
        vec![],
        vec![
            ("gone", group("s-gone", "gone", &[])),
            ("held", group("s-held", "held", &[])),
            ("m", matched),
        ],
    );
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::DeleteGroup {
            group: sid("gone"),
            scim_id: scim("s-gone"),
            display_name: "Group gone".into(),
        }]
    );
    assert_eq!(plan.summary.groups_delete, 1);
    let plan = compute(
        &d,
        &a,
        &Policy {
            delete_groups: false,
            ..policy()
        },
    );
    assert!(plan.actions.is_empty());
}

#[test]
fn matched_group_is_adopted_and_its_external_id_set() {
    let d = desired(vec![], vec![("g", &[])]);
    let mut g = group("sg", "g", &[]);
    g.link = LinkState::MatchedDisplayName;
    g.external_id = None;
    let a = actual(vec![], vec![("g", g)]);
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::UpdateGroup {
            group: sid("g"),
            scim_id: scim("sg"),
            display_name: "Group g".into(),
            changes: vec![Change {
                path: "externalId".into(),
                old: None,
                new: Some(json!("g")),
                drift: false,
            }],
            adopt: Some(LinkState::MatchedDisplayName),
        }]
    );
}

#[test]
fn rename_moves_the_members_that_stay_and_adds_new_ones_after_the_create() {
    // g renamed "Old name" -> "Group g"; u1 stays, u2 left the group, u3 is
    // created in this run, u4 is held (rejected record: keeps its membership).
    let mut d = desired(
        vec![("u1", attrs("u1", "one")), ("u3", attrs("u3", "three"))],
        vec![("g", &["u1", "u3"])],
    );
    d.held_users.insert(sid("u4"));
    let mut g = group("sg", "g", &["u1", "u2", "u4"]);
    g.display_name = "Old name".into();
    let a = actual(
        vec![
            ("u1", linked("s1", attrs("u1", "one"))),
            ("u2", linked("s2", attrs("u2", "two"))),
            ("u4", linked("s4", attrs("u4", "four"))),
        ],
        vec![("g", g)],
    );
    let plan = compute(&d, &a, &policy());
    let renames: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::RenameGroup { .. }))
        .collect();
    let [
        Action::RenameGroup {
            old_scim_id,
            old_name,
            display_name,
            members,
            delete_old,
            ..
        },
    ] = renames.as_slice()
    else {
        panic!("one rename: {:?}", plan.actions)
    };
    assert_eq!(old_scim_id, &scim("sg"));
    assert_eq!(old_name, "Old name");
    assert_eq!(display_name, "Group g");
    assert!(*delete_old);
    let moved: Vec<&str> = members
        .iter()
        .filter_map(|m| m.user.as_ref())
        .map(SourceId::as_str)
        .collect();
    assert_eq!(moved, ["u1", "u4"]);
    // u3 joins the new group after its create; nothing is removed (the old
    // group goes as a whole) and no DeleteGroup is planned for the old group.
    let adds: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::AddMembers { .. }))
        .collect();
    assert!(
        matches!(
            adds.as_slice(),
            [Action::AddMembers { group_scim_id: None, members, .. }] if members.len() == 1 && members[0].user == Some(sid("u3"))
        ),
        "{adds:?}"
    );
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::RemoveMembers { .. } | Action::DeleteGroup { .. }))
    );
    assert_eq!(plan.summary.groups_rename, 1);
    assert!(render::summary_line(&plan).contains("1 to rename"));
    let text = render::render_human(&plan, &[], render::Style { color: false });
    assert!(text.contains("group Old name -> Group g"), "{text}");
    assert!(text.contains("move 2 members"), "{text}");
    // Requests: the POST, one PATCH moving u1 and u4, the DELETE of the old
    // group; with one member per PATCH, two moves.
    assert_eq!(renames[0].requests(100), 3);
    assert_eq!(renames[0].requests(1), 4);
    assert_eq!(adds[0].requests(100), 1);

    // Deleting groups switched off: the old group is left in place.
    let keep = compute(
        &d,
        &a,
        &Policy {
            delete_groups: false,
            ..policy()
        },
    );
    let kept_rename = keep
        .actions
        .iter()
        .find(|a| matches!(a, Action::RenameGroup { .. }));
    assert_eq!(kept_rename.map(|a| a.requests(100)), Some(2));
    assert!(keep.actions.iter().any(|a| matches!(
        a,
        Action::RenameGroup {
            delete_old: false,
            ..
        }
    )));
    // Creating groups switched off: no rename at all.
    let none = compute(
        &d,
        &a,
        &Policy {
            create_groups: false,
            ..policy()
        },
    );
    assert!(
        !none
            .actions
            .iter()
            .any(|a| matches!(a, Action::RenameGroup { .. }))
    );
}

#[test]
fn a_name_differing_only_in_case_is_no_rename_on_a_case_insensitive_target() {
    let d = desired(vec![], vec![("g", &[])]);
    let mut g = group("sg", "g", &[]);
    g.display_name = "GROUP G".into();
    let a = actual(vec![], vec![("g", g)]);
    assert!(compute(&d, &a, &policy()).actions.is_empty());
}

#[test]
fn retired_groups_are_deleted_only_when_groups_may_be_deleted() {
    let d = desired(vec![], vec![]);
    let a = Actual {
        retired_groups: vec![RetiredGroup {
            group: sid("g"),
            scim_id: scim("old"),
            display_name: "Old".into(),
        }],
        ..Actual::default()
    };
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        plan.actions,
        vec![Action::RetireGroup {
            group: sid("g"),
            scim_id: scim("old"),
            display_name: "Old".into()
        }]
    );
    assert_eq!(plan.actions[0].phase(), 7);
    assert!(render::summary_line(&plan).contains("1 to delete"));
    assert!(
        compute(
            &d,
            &a,
            &Policy {
                delete_groups: false,
                ..policy()
            }
        )
        .actions
        .is_empty()
    );
}

#[test]
fn membership_drift_is_marked_on_the_corrective_actions() {
    let d = desired(
        vec![("u1", attrs("u1", "one")), ("u2", attrs("u2", "two"))],
        vec![("g", &["u1"])],
    );
    let mut g = group("sg", "g", &["u2"]);
    g.drift = ids(&["u1", "u2"]);
    let a = actual(
        vec![
            ("u1", linked("s1", attrs("u1", "one"))),
            ("u2", linked("s2", attrs("u2", "two"))),
        ],
        vec![("g", g)],
    );
    let plan = compute(&d, &a, &policy());
    let marked: Vec<(bool, Option<&SourceId>)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::AddMembers { members, .. } | Action::RemoveMembers { members, .. } => {
                Some(members)
            }
            _ => None,
        })
        .flatten()
        .map(|m| (m.drift, m.user.as_ref()))
        .collect();
    assert_eq!(
        marked,
        vec![(true, Some(&sid("u1"))), (true, Some(&sid("u2")))]
    );
    let text = render::render_human(&plan, &[], render::Style { color: false });
    assert!(
        text.contains("member one@x.org  (changed in the target)"),
        "{text}"
    );
}

#[test]
fn group_is_renamed_in_place_only_where_the_target_allows_it() {
    let d = desired(vec![], vec![("g", &[])]);
    let mut g = group("sg", "g", &[]);
    g.display_name = "Old name".into();
    let a = actual(vec![], vec![("g", g)]);
    // Atlassian: no rename in place; replaced (see the rename tests).
    assert!(matches!(
        compute(&d, &a, &policy()).actions.as_slice(),
        [Action::RenameGroup { .. }]
    ));
    let p = Policy {
        group_rename: true,
        ..policy()
    };
    let plan = compute(&d, &a, &p);
    assert_eq!(
        plan.actions,
        vec![Action::UpdateGroup {
            group: sid("g"),
            scim_id: scim("sg"),
            display_name: "Group g".into(),
            changes: vec![Change {
                path: "displayName".into(),
                old: Some(json!("Old name")),
                new: Some(json!("Group g")),
                drift: false,
            }],
            adopt: None,
        }]
    );
    assert_eq!(plan.summary.groups_update, 1);
    assert!(
        compute(
            &d,
            &a,
            &Policy {
                update_groups: false,
                ..p
            }
        )
        .actions
        .is_empty()
    );
}

#[test]
fn membership_of_a_user_that_will_not_exist_is_not_added() {
    let d = desired(
        vec![
            ("1", attrs("1", "ann")),
            ("2", with(attrs("2", "bo"), "active", json!(false))),
        ],
        vec![("g", &["1", "2"])],
    );
    let a = actual(vec![], vec![("g", group("sg", "g", &[]))]);
    let plan = compute(
        &d,
        &a,
        &Policy {
            create_users: false,
            ..policy()
        },
    );
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    // With creation on, only the active one is created and added.
    let plan = compute(&d, &a, &policy());
    assert_eq!(
        verbs(&plan),
        vec![("create", "1".to_owned()), ("add_member", "g".to_owned())]
    );
}

#[test]
fn conflicted_records_are_not_created() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![("g", &["1"])]);
    let mut a = actual(vec![], vec![]);
    a.conflicts = vec![
        Conflict {
            resource: "user".into(),
            source_id: sid("1"),
            label: "ann@x.org".into(),
            reason: "two accounts".into(),
        },
        Conflict {
            resource: "group".into(),
            source_id: sid("g"),
            label: "Group g".into(),
            reason: "exists".into(),
        },
    ];
    let plan = compute(&d, &a, &policy());
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(plan.summary.conflicts, 2);
    assert_eq!(plan.conflicts, a.conflicts);
}

#[test]
fn memberships_are_left_alone_when_sync_is_off() {
    let d = desired(vec![("1", attrs("1", "ann"))], vec![("g", &["1"])]);
    let a = actual(
        vec![
            ("1", linked("s1", attrs("1", "ann"))),
            ("2", linked("s2", attrs("2", "bo"))),
        ],
        vec![("g", group("sg", "g", &["2"]))],
    );
    let plan = compute(
        &d,
        &a,
        &Policy {
            sync_memberships: false,
            deprovision: Deprovision::None,
            ..policy()
        },
    );
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
}

#[test]
fn actions_are_sorted_by_phase() {
    let d = desired(
        vec![
            ("a-new", attrs("a-new", "new")),
            ("b-off", with(attrs("b-off", "off"), "active", json!(false))),
            ("c-keep", attrs("c-keep", "keep")),
            ("e-left", attrs("e-left", "left")),
        ],
        vec![("g-new", &["c-keep"]), ("g-old", &["c-keep"])],
    );
    let a = actual(
        vec![
            ("0-gone", linked("s0", attrs("0-gone", "gone"))),
            ("b-off", linked("sb", attrs("b-off", "off"))),
            ("c-keep", linked("sc", attrs("c-keep", "keep"))),
            ("d-drop", linked("sd", attrs("d-drop", "drop"))),
            ("e-left", linked("se", attrs("e-left", "left"))),
        ],
        vec![
            ("g-old", group("s-old", "g-old", &["d-drop", "e-left"])),
            ("a-gone", group("s-gone", "a-gone", &[])),
        ],
    );
    let plan = compute(
        &d,
        &a,
        &Policy {
            deprovision: Deprovision::Delete,
            member_chunk: 100,
            ..policy()
        },
    );
    // All seven phases. d-drop is deleted (no separate removal of its
    // membership); e-left stays but leaves g-old.
    assert_eq!(
        verbs(&plan),
        vec![
            ("create", "g-new".to_owned()),
            ("create", "a-new".to_owned()),
            ("add_member", "g-new".to_owned()),
            ("add_member", "g-old".to_owned()),
            ("remove_member", "g-old".to_owned()),
            ("disable", "b-off".to_owned()),
            ("delete", "0-gone".to_owned()),
            ("delete", "d-drop".to_owned()),
            ("delete", "a-gone".to_owned()),
        ]
    );
    let phases: Vec<u8> = plan.actions.iter().map(Action::phase).collect();
    assert_eq!(phases, [1, 2, 3, 3, 4, 5, 6, 6, 7]);
    let Action::RemoveMembers { members, .. } = &plan.actions[4] else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(member_users(members), [Some("e-left")]);
    // With Disable, d-drop's membership is removed with e-left's and it is disabled.
    let plan = compute(&d, &a, &policy());
    let phases: Vec<u8> = plan.actions.iter().map(Action::phase).collect();
    assert_eq!(phases, [1, 2, 3, 3, 4, 5, 5, 5, 7], "{:#?}", verbs(&plan));
    let Action::RemoveMembers { members, .. } = &plan.actions[4] else {
        panic!("{:#?}", plan.actions);
    };
    assert_eq!(member_users(members), [Some("d-drop"), Some("e-left")]);
    assert!(phases.is_sorted());
}

#[test]
fn rejects_and_notes_are_carried_into_the_plan() {
    let mut d = desired(vec![], vec![]);
    d.rejects = vec![Reject {
        kind: RecordKind::User,
        origin: Origin {
            file: "users.csv".into(),
            location: "line 3".into(),
        },
        source_id: Some(sid("3")),
        label: None,
        reason: "bad".into(),
    }];
    d.stats.out_of_group_scope = 2;
    let a = Actual {
        unmanaged_users: 4,
        ..Actual::default()
    };
    let plan = compute(&d, &a, &policy());
    assert_eq!(plan.rejects, d.rejects);
    assert_eq!(plan.summary.invalid, 1);
    assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
    assert!(plan.notes[0].starts_with("2 source users"));
    assert!(plan.notes[1].starts_with("4 users and 0 groups"));
}

#[test]
fn duplicate_group_names_are_rejected_in_a_stable_order() {
    let m = atlassian_mapping();
    let snapshot = Snapshot {
        users: vec![],
        groups: ["Eng", "ops", "ENG", "OPS", "Sales"]
            .iter()
            .enumerate()
            .map(|(i, name)| SourceGroup {
                id: SourceId::from(format!("g{i}")),
                name: (*name).to_owned(),
                members: Members::new(),
                origin: Origin {
                    file: "groups.csv".into(),
                    location: format!("line {}", i + 2),
                },
            })
            .collect(),
        rejects: vec![],
    };
    let first = mapping::desired_state(&snapshot, &m, &all_groups());
    assert_eq!(first.groups.keys().collect::<Vec<_>>(), [&sid("g4")]);
    assert_eq!(first.held_groups, ids(&["g0", "g1", "g2", "g3"]));
    let order: Vec<&str> = first
        .rejects
        .iter()
        .map(|r| r.source_id.as_ref().map_or("", SourceId::as_str))
        .collect();
    assert_eq!(order, ["g0", "g1", "g2", "g3"]);
    assert!(
        first.rejects[0]
            .reason
            .contains("duplicate group name `Eng`")
    );
    for _ in 0..32 {
        let again = mapping::desired_state(&snapshot, &m, &all_groups());
        assert_eq!(again.rejects, first.rejects);
    }
}

#[test]
fn duplicate_user_names_differing_in_case_are_held() {
    let m = atlassian_mapping();
    let snapshot = Snapshot {
        users: vec![
            source_user(0, "ann", "Lee", true, ""),
            source_user(1, "ANN", "Lee", true, ""),
            source_user(2, "bo", "Ek", true, ""),
        ],
        ..Snapshot::default()
    };
    let d = mapping::desired_state(&snapshot, &m, &all_groups());
    assert_eq!(d.users.keys().collect::<Vec<_>>(), [&sid("u2")]);
    assert_eq!(d.held_users, ids(&["u0", "u1"]));
    let reasons: Vec<&str> = d.rejects.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "duplicate userName `ann@x.org`: also mapped for u1 (users.csv:line 3)",
            "duplicate userName `ANN@x.org`: also mapped for u0 (users.csv:line 2)",
        ]
    );
    // A linked account of a held user is left alone.
    let a = actual(vec![("u1", linked("s1", attrs("u1", "ANN")))], vec![]);
    let plan = compute(&d, &a, &policy());
    assert_eq!(verbs(&plan), vec![("create", "u2".to_owned())]);
}

// --- a test-only interpreter ------------------------------------------------

/// Apply a plan to an actual state the way a faithful target would.
/// `delete_drops_members`: a DELETE of a user also drops it from every group
/// (Atlassian); otherwise the memberships stay (no referential integrity).
fn apply_to(actual: &Actual, plan: &Plan, delete_drops_members: bool) -> Actual {
    let mut a = actual.clone();
    for action in &plan.actions {
        match action {
            Action::CreateGroup {
                group,
                display_name,
            } => {
                assert!(!a.groups.contains_key(group), "group {group} created twice");
                a.groups.insert(
                    group.clone(),
                    ActualGroup {
                        scim_id: ScimId(format!("new-g-{group}")),
                        display_name: display_name.clone(),
                        external_id: Some(group.to_string()),
                        members: Members::new(),
                        foreign_members: BTreeMap::new(),
                        link: LinkState::Linked,
                        drift: BTreeSet::new(),
                    },
                );
            }
            Action::UpdateGroup {
                group,
                scim_id,
                changes,
                ..
            } => {
                let g = a.groups.get_mut(group).expect("updated group exists");
                assert_eq!(&g.scim_id, scim_id);
                for c in changes {
                    let new = c.new.as_ref().and_then(Value::as_str).map(str::to_owned);
                    match c.path.as_str() {
                        "externalId" => {
                            assert_eq!(c.old, g.external_id.clone().map(Value::String));
                            g.external_id = new;
                        }
                        "displayName" => {
                            assert_eq!(c.old, Some(Value::String(g.display_name.clone())));
                            g.display_name = new.expect("a new name");
                        }
                        other => panic!("unexpected group change {other}"),
                    }
                }
                g.link = LinkState::Linked;
            }
            Action::RenameGroup {
                group,
                old_scim_id,
                display_name,
                members,
                delete_old,
                ..
            } => {
                let old = a.groups.remove(group).expect("renamed group exists");
                assert_eq!(&old.scim_id, old_scim_id);
                assert_ne!(&old.display_name, display_name);
                let mut moved = Members::new();
                for m in members {
                    let id = m.user.as_ref().expect("moved members are managed users");
                    assert!(old.members.contains(id), "{id} moved but was not a member");
                    assert!(moved.insert(id.clone()), "{id} moved twice");
                }
                // Deleted, or (delete_old false) left behind unmanaged.
                let _ = delete_old;
                a.groups.insert(
                    group.clone(),
                    ActualGroup {
                        scim_id: ScimId(format!("renamed-g-{group}")),
                        display_name: display_name.clone(),
                        external_id: Some(group.to_string()),
                        members: moved,
                        foreign_members: BTreeMap::new(),
                        link: LinkState::Linked,
                        drift: BTreeSet::new(),
                    },
                );
            }
            Action::RetireGroup { scim_id, .. } => {
                let before = a.retired_groups.len();
                a.retired_groups.retain(|r| &r.scim_id != scim_id);
                assert_eq!(a.retired_groups.len() + 1, before, "retired {scim_id} once");
            }
            Action::CreateUser { user, attrs, .. } => {
                assert!(!a.users.contains_key(user), "user {user} created twice");
                a.users.insert(
                    user.clone(),
                    ActualUser {
                        scim_id: ScimId(format!("new-u-{user}")),
                        attrs: ActualAttrs::Known(attrs.clone()),
                        link: LinkState::Linked,
                        pushed: Some(attrs.clone()),
                    },
                );
            }
            Action::UpdateUser {
                user,
                scim_id,
                changes,
                after,
                ..
            } => {
                let u = a.users.get_mut(user).expect("updated user exists");
                assert_eq!(&u.scim_id, scim_id);
                assert!(
                    changes.windows(2).all(|w| w[0].path < w[1].path),
                    "changes sorted and unique: {changes:?}"
                );
                for c in changes {
                    assert_eq!(
                        known(u).get(&c.path),
                        c.old.as_ref(),
                        "old value of {}",
                        c.path
                    );
                    match &c.new {
                        Some(v) => known_mut(u).insert(c.path.clone(), v.clone()),
                        None => known_mut(u).remove(&c.path),
                    };
                }
                if let Some(after) = after {
                    assert_eq!(after, known(u), "`after` of {user}");
                }
                u.link = LinkState::Linked;
            }
            Action::AddMembers {
                group,
                group_scim_id,
                members,
                ..
            } => {
                assert!(!members.is_empty());
                let users = &a.users;
                let g = a.groups.get_mut(group).expect("group exists");
                if let Some(s) = group_scim_id {
                    assert_eq!(&g.scim_id, s);
                }
                for m in members {
                    let id = m.user.as_ref().expect("added members are managed users");
                    let u = users.get(id).expect("added member exists");
                    if let Some(s) = &m.scim_id {
                        assert_eq!(&u.scim_id, s);
                    }
                    assert!(g.members.insert(id.clone()), "{id} added twice");
                }
            }
            Action::RemoveMembers {
                group,
                group_scim_id,
                members,
                ..
            } => {
                assert!(!members.is_empty());
                let g = a.groups.get_mut(group).expect("group exists");
                assert_eq!(&g.scim_id, group_scim_id);
                for m in members {
                    match &m.user {
                        Some(id) => assert!(g.members.remove(id), "{id} not a member"),
                        None => {
                            let s = m.scim_id.as_ref().expect("foreign member has an id");
                            assert!(g.foreign_members.remove(s).is_some());
                        }
                    }
                }
            }
            Action::DisableUser { user, scim_id, .. } => {
                let u = a.users.get_mut(user).expect("disabled user exists");
                assert_eq!(&u.scim_id, scim_id);
                assert_eq!(u.active(), Some(true), "{user} disabled twice");
                known_mut(u).insert("active", Value::Bool(false));
            }
            Action::DeleteUser { user, scim_id, .. } => {
                let u = a.users.remove(user).expect("deleted user exists");
                assert_eq!(&u.scim_id, scim_id);
                if delete_drops_members {
                    for g in a.groups.values_mut() {
                        g.members.remove(user);
                    }
                }
            }
            Action::DeleteGroup { group, scim_id, .. } => {
                let g = a.groups.remove(group).expect("deleted group exists");
                assert_eq!(&g.scim_id, scim_id);
            }
        }
    }
    a
}

#[test]
fn interpreter_converges_the_phase_order_example() {
    let d = desired(
        vec![("1", attrs("1", "ann")), ("2", attrs("2", "bo"))],
        vec![("g", &["1", "2"])],
    );
    let a = actual(
        vec![("9", linked("s9", attrs("9", "zed")))],
        vec![("g", group("sg", "g", &["9"]))],
    );
    let p = policy();
    let plan = compute(&d, &a, &p);
    let after = apply_to(&a, &plan, true);
    assert!(compute(&d, &after, &p).actions.is_empty());
    assert_eq!(after.groups[&sid("g")].members, ids(&["1", "2"]));
    assert_eq!(after.users[&sid("9")].active(), Some(false));
}

// --- property tests ---------------------------------------------------------

const USER_IDS: &[&str] = &["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
const GROUP_IDS: &[&str] = &["g0", "g1", "g2"];

fn opt_string(choices: &'static [&'static str]) -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(proptest::sample::select(choices).prop_map(|s| json!(s)))
}

/// Attributes over a few managed paths (plus an unmanaged one), with emails in
/// varying case.
fn arb_attrs(id: &'static str) -> impl Strategy<Value = Attrs> {
    (
        proptest::sample::select(&["ann", "bo", "cy"][..]),
        any::<bool>(),
        opt_string(&["Engineer", "CTO"]),
        opt_string(&["Ann", "Bo"]),
        any::<bool>(),
        opt_string(&["nick"]),
    )
        .prop_map(move |(name, upper, title, given, active, nick)| {
            let mut a = Attrs::new();
            a.insert("externalId", json!(id));
            a.insert("userName", json!(format!("{name}.{id}@x.org")));
            let email = format!("{name}.{id}@x.org");
            a.insert(
                EMAIL,
                json!(if upper { email.to_uppercase() } else { email }),
            );
            a.insert("active", json!(active));
            for (path, v) in [
                ("title", title),
                ("name.givenName", given),
                ("nickName", nick),
            ] {
                if let Some(v) = v {
                    a.insert(path.to_owned(), v);
                }
            }
            a
        })
}

fn arb_link_user() -> impl Strategy<Value = LinkState> {
    prop_oneof![
        3 => Just(LinkState::Linked),
        1 => Just(LinkState::MatchedExternalId),
        1 => Just(LinkState::MatchedUserName),
    ]
}

/// Per user: absent / desired only / actual only / both, plus held or out of scope.
#[derive(Clone, Debug)]
struct UserCase {
    desired: Option<Attrs>,
    actual: Option<(Attrs, LinkState, Option<Attrs>)>,
    held: bool,
    out_of_scope: bool,
}

fn arb_user(id: &'static str) -> impl Strategy<Value = UserCase> {
    (
        proptest::option::of(arb_attrs(id)),
        proptest::option::of((
            arb_attrs(id),
            arb_link_user(),
            proptest::option::of(arb_attrs(id)),
        )),
        0..4u8,
    )
        .prop_map(|(desired, actual, flag)| {
            let spare = desired.is_none();
            UserCase {
                desired: desired.map(|mut a| {
                    a.remove("nickName");
                    a
                }),
                actual,
                held: spare && flag == 1,
                out_of_scope: spare && flag == 2,
            }
        })
}

#[derive(Clone, Debug)]
struct GroupCase {
    desired: Option<BTreeSet<usize>>,
    actual: Option<(BTreeSet<usize>, bool, u8, usize)>,
    held: bool,
    /// The target has an older name.
    renamed: bool,
}

fn arb_group() -> impl Strategy<Value = GroupCase> {
    let members = proptest::collection::btree_set(0..USER_IDS.len(), 0..5);
    (
        proptest::option::of(members.clone()),
        proptest::option::of((members, any::<bool>(), 0..3u8, 0..3usize)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(desired, actual, held, renamed)| GroupCase {
            held: held && desired.is_none(),
            desired,
            actual,
            renamed,
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(Deprovision::Disable),
            Just(Deprovision::Delete),
            Just(Deprovision::None)
        ],
        1..4usize,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                deprovision,
                member_chunk,
                delete_groups,
                group_rename,
                delete_removes_memberships,
            )| {
                Policy {
                    deprovision,
                    member_chunk,
                    delete_groups,
                    group_rename,
                    delete_removes_memberships,
                    ..policy()
                }
            },
        )
}

/// A small consistent directory: desired members are desired users, actual
/// members are actual users, held/out-of-scope users are not desired.
fn arb_world() -> impl Strategy<Value = (Desired, Actual)> {
    let users: Vec<_> = USER_IDS.iter().map(|id| arb_user(id)).collect();
    let groups = proptest::collection::vec(arb_group(), GROUP_IDS.len());
    (users, groups, any::<bool>()).prop_map(|(users, groups, complete)| {
        let mut d = Desired {
            managed_paths: managed(),
            ..Desired::default()
        };
        let mut a = Actual {
            complete,
            ..Actual::default()
        };
        for (case, id) in users.into_iter().zip(USER_IDS) {
            let id = sid(id);
            if let Some(attrs) = case.desired {
                d.users.insert(id.clone(), desired_user(attrs));
            }
            if case.held {
                d.held_users.insert(id.clone());
            }
            if case.out_of_scope {
                d.out_of_scope.insert(id.clone());
            }
            if let Some((attrs, link, pushed)) = case.actual {
                a.users.insert(
                    id.clone(),
                    ActualUser {
                        scim_id: ScimId(format!("s-{id}")),
                        attrs: ActualAttrs::Known(attrs),
                        link,
                        pushed,
                    },
                );
            }
        }
        for (case, gid) in groups.into_iter().zip(GROUP_IDS) {
            let gid = sid(gid);
            if let Some(members) = case.desired {
                d.groups.insert(
                    gid.clone(),
                    DesiredGroup {
                        display_name: format!("Group {gid}"),
                        members: members
                            .into_iter()
                            .map(|i| sid(USER_IDS[i]))
                            .filter(|m| d.users.contains_key(m))
                            .collect(),
                    },
                );
            }
            if case.held {
                d.held_groups.insert(gid.clone());
            }
            if let Some((members, linked, ext, foreign)) = case.actual {
                a.groups.insert(
                    gid.clone(),
                    ActualGroup {
                        scim_id: ScimId(format!("s-{gid}")),
                        display_name: if case.renamed {
                            format!("Old group {gid}")
                        } else {
                            format!("Group {gid}")
                        },
                        external_id: match ext {
                            0 => None,
                            1 => Some(gid.to_string()),
                            _ => Some("other".into()),
                        },
                        members: members
                            .into_iter()
                            .map(|i| sid(USER_IDS[i]))
                            .filter(|m| a.users.contains_key(m))
                            .collect(),
                        foreign_members: (0..foreign)
                            .map(|i| (ScimId(format!("f{i}")), format!("foreign{i}")))
                            .collect(),
                        link: if linked {
                            LinkState::Linked
                        } else {
                            LinkState::MatchedDisplayName
                        },
                        drift: BTreeSet::new(),
                    },
                );
            }
        }
        (d, a)
    })
}

fn assert_converged(d: &Desired, p: &Policy, before: &Actual, after: &Actual) {
    for (id, want) in &d.users {
        let Some(have) = after.users.get(id) else {
            assert!(
                !before.users.contains_key(id) && want.attrs["active"] == json!(false),
                "{id} should exist"
            );
            continue;
        };
        assert_eq!(have.link, LinkState::Linked, "{id} linked");
        for path in &d.managed_paths {
            if path == "active" {
                continue;
            }
            assert!(
                same_value(path, want.attrs.get(path), known(have).get(path)),
                "{id}.{path}: want {:?}, have {:?}",
                want.attrs.get(path),
                known(have).get(path)
            );
        }
        assert_eq!(
            have.active(),
            Some(want.attrs["active"] != json!(false)),
            "{id}.active"
        );
        // Attributes the mapping does not manage are never touched.
        if let Some(old) = before.users.get(id) {
            assert_eq!(known(old).get("nickName"), known(have).get("nickName"));
        }
    }
    for (gid, want) in &d.groups {
        let have = after.groups.get(gid).expect("desired group exists");
        assert_eq!(have.link, LinkState::Linked);
        assert_eq!(have.external_id.as_deref(), Some(gid.as_str()));
        assert!(have.foreign_members.is_empty());
        if p.group_rename || (p.update_groups && p.create_groups) {
            // Renamed in place, or replaced by a new group of the new name.
            assert_eq!(have.display_name, want.display_name);
        } else {
            assert_eq!(
                &have.display_name,
                before
                    .groups
                    .get(gid)
                    .map_or(&want.display_name, |g| &g.display_name)
            );
        }
        let expected: BTreeSet<SourceId> = want
            .members
            .iter()
            .filter(|m| after.users.contains_key(*m))
            .cloned()
            .collect();
        let managed_members: BTreeSet<SourceId> = have
            .members
            .iter()
            .filter(|m| !d.held_users.contains(*m))
            .cloned()
            .collect();
        assert_eq!(managed_members, expected, "members of {gid}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Applying the plan converges: a second plan is empty and the target
    /// holds the desired values.
    #[test]
    fn plan_converges((d, a) in arb_world(), p in arb_policy()) {
        let plan = compute(&d, &a, &p);
        let after = apply_to(&a, &plan, p.delete_removes_memberships);
        let again = compute(&d, &after, &p);
        prop_assert!(again.actions.is_empty(), "second plan: {:#?}", again.actions);
        assert_converged(&d, &p, &a, &after);
        // Held users keep their memberships.
        for (gid, g) in &a.groups {
            if let Some(now) = after.groups.get(gid) {
                for m in g.members.iter().filter(|m| d.held_users.contains(*m)) {
                    prop_assert!(now.members.contains(m), "{} lost held member {}", gid, m);
                }
            }
        }
        // Never touch held or unlinked-and-undesired accounts.
        for (id, old) in &a.users {
            let unlinked = old.link != LinkState::Linked && !d.users.contains_key(id);
            if d.held_users.contains(id) || unlinked {
                prop_assert_eq!(after.users.get(id), Some(old));
            }
        }
    }

    /// A stored state left undecoded because it was the wanted one
    /// (`AsWanted`) plans exactly like the same state decoded.
    #[test]
    fn an_undecoded_wanted_state_plans_like_the_decoded_one(
        (d, a) in arb_world(),
        p in arb_policy(),
        pick in any::<u64>(),
    ) {
        let (mut decoded, mut undecoded) = (a.clone(), a);
        let mut replaced = 0;
        for (i, (id, u)) in decoded.users.iter_mut().enumerate() {
            let Some(want) = d.users.get(id) else { continue };
            if u.link != LinkState::Linked || pick >> (i % 64) & 1 == 0 {
                continue;
            }
            u.attrs = ActualAttrs::Known(want.attrs.clone());
            undecoded.users.get_mut(id).expect("same ids").attrs = ActualAttrs::AsWanted;
            replaced += 1;
        }
        prop_assume!(replaced > 0);
        prop_assert_eq!(compute(&d, &decoded, &p), compute(&d, &undecoded, &p));
    }

    /// Computing twice gives the same plan; no two actions create the same id,
    /// and each user gets at most one create/update.
    #[test]
    fn plan_is_idempotent((d, a) in arb_world(), p in arb_policy()) {
        let one = compute(&d, &a, &p);
        let two = compute(&d, &a, &p);
        prop_assert_eq!(&one, &two);
        let mut created = BTreeSet::new();
        let mut touched = BTreeSet::new();
        for action in &one.actions {
            match action {
                Action::CreateUser { user, .. } => {
                    let fresh = created.insert(("user", user.clone()));
                    prop_assert!(fresh, "{} created twice", user);
                }
                Action::CreateGroup { group, .. } => {
                    let fresh = created.insert(("group", group.clone()));
                    prop_assert!(fresh, "{} created twice", group);
                }
                _ => {}
            }
            if action.phase() == 2 {
                prop_assert!(touched.insert(action.subject().clone()));
            }
        }
        let phases: Vec<u8> = one.actions.iter().map(Action::phase).collect();
        prop_assert!(phases.is_sorted());
    }
}

// --- order independence through the mapping -------------------------------------

fn atlassian_mapping() -> Mapping {
    let p = Profile::load("atlassian", Path::new(".")).expect("atlassian profile");
    Mapping::compile(&p, &MappingConfig::default(), &ScopeConfig::default()).expect("mapping")
}

fn all_groups() -> GroupSettings {
    GroupSettings {
        push: None,
        adopt_existing: true,
        ..GroupSettings::default()
    }
}

fn source_user(i: usize, name: &str, family: &str, active: bool, title: &str) -> SourceUser {
    let email = format!("{name}@x.org");
    let mut fields: crate::model::Fields = [
        ("user_name", email.as_str()),
        ("email", email.as_str()),
        ("given_name", name),
        ("family_name", family),
        ("title", title),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k, v.into()))
    .collect();
    fields.retain(|_, v| !v.is_empty());
    SourceUser {
        id: SourceId::from(format!("u{i}")),
        fields,
        active,
        groups: vec![],
        origin: Origin {
            file: "users.csv".into(),
            location: format!("line {}", i + 2),
        },
    }
}

/// A snapshot of up to 8 users: names collide (in any case), some lack a
/// family name (rejected by the mapping), groups may share a name.
fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let user = (
        proptest::sample::select(&["ann", "ANN", "bo", "cy", "di", "ed", "fay", "gus"][..]),
        proptest::sample::select(&["Lee", "", "Ek"][..]),
        any::<bool>(),
        proptest::sample::select(&["", "CTO"][..]),
    );
    let group = (
        proptest::sample::select(&["Eng", "ENG", "Ops", "OPS", "Sales"][..]),
        proptest::collection::btree_set(0..8usize, 0..5),
    );
    (
        proptest::collection::vec(user, 0..=8),
        proptest::collection::vec(group, 0..=4),
    )
        .prop_map(|(users, groups)| Snapshot {
            users: users
                .iter()
                .enumerate()
                .map(|(i, (name, family, active, title))| {
                    source_user(i, name, family, *active, title)
                })
                .collect(),
            groups: groups
                .into_iter()
                .enumerate()
                .map(|(i, (name, members))| SourceGroup {
                    id: SourceId::from(format!("g{i}")),
                    name: name.to_owned(),
                    members: members
                        .into_iter()
                        .map(|m| SourceId::from(format!("u{m}")))
                        .collect(),
                    origin: Origin {
                        file: "groups.csv".into(),
                        location: format!("line {}", i + 2),
                    },
                })
                .collect(),
            rejects: vec![],
        })
}

/// Rejects sorted into a canonical order (they follow the input order).
fn sorted_rejects(rejects: &[Reject]) -> Vec<String> {
    let mut v: Vec<String> = rejects.iter().map(|r| format!("{r:?}")).collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The plan does not depend on the order of the source records.
    #[test]
    fn plan_ignores_source_order(
        (snapshot, users, groups) in arb_snapshot().prop_flat_map(|s| {
            let users = Just(s.users.clone()).prop_shuffle();
            let groups = Just(s.groups.clone()).prop_shuffle();
            (Just(s), users, groups)
        }),
        (_, a) in arb_world(),
        p in arb_policy(),
    ) {
        let m = atlassian_mapping();
        let shuffled = Snapshot { users, groups, rejects: snapshot.rejects.clone() };
        let d1 = mapping::desired_state(&snapshot, &m, &all_groups());
        let d2 = mapping::desired_state(&shuffled, &m, &all_groups());
        prop_assert_eq!(&d1.users, &d2.users);
        prop_assert_eq!(&d1.groups, &d2.groups);
        prop_assert_eq!(&d1.held_users, &d2.held_users);
        prop_assert_eq!(&d1.held_groups, &d2.held_groups);
        let mut one = compute(&d1, &a, &p);
        let mut two = compute(&d2, &a, &p);
        prop_assert_eq!(sorted_rejects(&one.rejects), sorted_rejects(&two.rejects));
        one.rejects.clear();
        two.rejects.clear();
        prop_assert_eq!(one, two);
    }

    /// The whole pipeline from a snapshot is deterministic, rejects included.
    #[test]
    fn desired_state_is_deterministic(snapshot in arb_snapshot(), (_, a) in arb_world()) {
        let m = atlassian_mapping();
        let d1 = mapping::desired_state(&snapshot, &m, &all_groups());
        let d2 = mapping::desired_state(&snapshot, &m, &all_groups());
        prop_assert_eq!(&d1, &d2);
        prop_assert_eq!(compute(&d1, &a, &policy()), compute(&d2, &a, &policy()));
    }
}
