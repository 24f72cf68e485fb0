//! Nested source groups, flattened to effective user membership.
//!
//! Atlassian has no nested groups, so a source group that contains groups is
//! pushed with every user reachable through it. A member id names a nested
//! group when it is a group's id and no user's; a cycle (A in B in A) is
//! reported once and flattened through (every group on it gets the members of
//! all of them), never followed forever.
//!
//! Pure: no I/O. The walk is iterative (Tarjan's strongly connected
//! components), so a nesting chain of any depth cannot overflow the stack.

use std::collections::{BTreeSet, HashSet};

use rustc_hash::FxHashMap;

use crate::model::{Members, SourceGroup, SourceId};

/// Effective membership of each source group.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flattened {
    /// Per group (same order as the input): `None` when the group contains no
    /// group (its direct members are its effective members), else the users
    /// reachable through it, its direct users included.
    pub members: Vec<Option<Members>>,
    /// Group cycles found, each as the ids of the groups on it (sorted).
    pub cycles: Vec<Vec<SourceId>>,
    /// Number of groups that contain at least one group.
    pub nesting: usize,
}

/// Flatten `groups`; `is_user` tells whether a member id is a user's.
pub fn flatten(groups: &[SourceGroup], is_user: impl Fn(&SourceId) -> bool + Sync) -> Flattened {
    let index: FxHashMap<&SourceId, usize> =
        groups.iter().enumerate().map(|(i, g)| (&g.id, i)).collect();
    // Child-group edges. The group index is asked first: it is the smaller
    // table, and most members are no group's id, so `is_user` (a probe into
    // every person) runs only for the rare id that could be either. Groups
    // on all cores (one probe per membership, millions on a large directory).
    let children: Vec<Vec<usize>> = crate::par::par_map(groups, |g| {
        let mut c: Vec<usize> = g
            .members
            .iter()
            .filter_map(|m| index.get(m).copied().filter(|_| !is_user(m)))
            .collect();
        c.sort_unstable();
        c.dedup();
        c
    });
    let nesting = children.iter().filter(|c| !c.is_empty()).count();
    let mut out = Flattened {
        members: vec![None; groups.len()],
        cycles: Vec::new(),
        nesting,
    };
    if nesting == 0 {
        return out;
    }

    let sccs = tarjan(&children);
    // Tarjan emits each component after every component reachable from it, so
    // children are complete when their parents are computed.
    let mut comp_of = vec![usize::MAX; groups.len()];
    for (c, scc) in sccs.iter().enumerate() {
        for &g in scc {
            comp_of[g] = c;
        }
    }
    let mut effective: Vec<Option<Members>> = vec![None; sccs.len()];
    for (c, scc) in sccs.iter().enumerate() {
        let self_loop = scc.len() == 1 && children[scc[0]].contains(&scc[0]);
        if scc.len() > 1 || self_loop {
            let mut ids: Vec<SourceId> = scc.iter().map(|&g| groups[g].id.clone()).collect();
            ids.sort();
            out.cycles.push(ids);
        }
        let has_children = scc.iter().any(|&g| !children[g].is_empty());
        if !has_children {
            continue;
        }
        let mut set: BTreeSet<SourceId> = BTreeSet::new();
        let mut seen_comp: HashSet<usize> = HashSet::new();
        for &g in scc {
            set.extend(groups[g].members.iter().filter(|m| is_user(m)).cloned());
            for &child in &children[g] {
                let cc = comp_of[child];
                if cc == c || !seen_comp.insert(cc) {
                    continue;
                }
                match &effective[cc] {
                    Some(child_set) => set.extend(child_set.iter().cloned()),
                    None => {
                        for &cg in &sccs[cc] {
                            set.extend(groups[cg].members.iter().filter(|m| is_user(m)).cloned());
                        }
                    }
                }
            }
        }
        let set: Members = set.into_iter().collect();
        for &g in scc {
            out.members[g] = Some(set.clone());
        }
        effective[c] = Some(set);
    }
    out.cycles.sort();
    out
}

/// Strongly connected components, each emitted after all components it can
/// reach. Iterative.
fn tarjan(children: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = children.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut sccs = Vec::new();
    let mut next = 0;
    // Call stack of (node, position in its child list).
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        calls.push((root, 0));
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
            if let Some(&w) = children[v].get(*pos) {
                *pos += 1;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                scc.sort_unstable();
                sccs.push(scc);
            }
        }
    }
    sccs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn group(id: &str, members: &[&str]) -> SourceGroup {
        SourceGroup {
            id: SourceId::from(id),
            name: id.to_uppercase(),
            members: members.iter().map(|m| SourceId::from(*m)).collect(),
            origin: Origin {
                file: "groups.csv".into(),
                location: "line 2".into(),
            },
        }
    }

    fn users(id: &SourceId) -> bool {
        id.as_str().starts_with('u')
    }

    fn ids(set: &Option<Members>) -> Vec<&str> {
        set.as_ref()
            .expect("flattened")
            .iter()
            .map(SourceId::as_str)
            .collect()
    }

    #[test]
    fn flat_groups_are_left_alone() {
        let f = flatten(&[group("a", &["u1"]), group("b", &["u2", "x"])], users);
        assert_eq!(f.members, vec![None, None]);
        assert!(f.cycles.is_empty());
        assert_eq!(f.nesting, 0);
    }

    #[test]
    fn nesting_is_flattened_through_every_level() {
        let g = [
            group("all", &["u0", "eng"]),
            group("eng", &["u1", "backend", "frontend"]),
            group("backend", &["u2", "u3"]),
            group("frontend", &["u3", "u4"]),
        ];
        let f = flatten(&g, users);
        assert_eq!(ids(&f.members[0]), ["u0", "u1", "u2", "u3", "u4"]);
        assert_eq!(ids(&f.members[1]), ["u1", "u2", "u3", "u4"]);
        assert_eq!(f.members[2], None);
        assert_eq!(f.nesting, 2);
        assert!(f.cycles.is_empty());
    }

    #[test]
    fn a_cycle_is_reported_once_and_flattened_through() {
        let g = [
            group("a", &["u1", "b"]),
            group("b", &["u2", "c"]),
            group("c", &["u3", "a"]),
            group("top", &["d", "a"]),
            group("d", &["d", "u9"]),
        ];
        let f = flatten(&g, users);
        for i in 0..3 {
            assert_eq!(ids(&f.members[i]), ["u1", "u2", "u3"], "group {i}");
        }
        assert_eq!(ids(&f.members[3]), ["u1", "u2", "u3", "u9"]);
        assert_eq!(ids(&f.members[4]), ["u9"]);
        assert_eq!(
            f.cycles,
            vec![
                vec![
                    SourceId::from("a"),
                    SourceId::from("b"),
                    SourceId::from("c")
                ],
                vec![SourceId::from("d")]
            ]
        );
    }

    #[test]
    fn a_user_id_that_is_also_a_group_id_counts_as_the_user() {
        let f = flatten(&[group("u1", &["u2"]), group("g", &["u1"])], users);
        assert_eq!(f.members, vec![None, None]);
    }

    #[test]
    fn a_very_deep_chain_does_not_overflow() {
        // g0 contains g1 contains ... g199999, which holds the one user: a
        // recursive walk would need 200,000 stack frames.
        let n = 200_000;
        let g: Vec<SourceGroup> = (0..n)
            .map(|i| {
                if i + 1 < n {
                    group(&format!("g{i}"), &[&format!("g{}", i + 1)])
                } else {
                    group(&format!("g{i}"), &["u1"])
                }
            })
            .collect();
        let f = flatten(&g, users);
        assert_eq!(ids(&f.members[0]), ["u1"]);
        assert_eq!(ids(&f.members[n / 2]), ["u1"]);
        assert_eq!(f.members[n - 1], None);
        assert_eq!(f.nesting, n - 1);
        assert!(f.cycles.is_empty());
    }

    /// Reference: breadth-first walk per group with a visited set.
    fn naive(groups: &[SourceGroup]) -> Vec<Members> {
        let index: HashMap<&SourceId, usize> =
            groups.iter().enumerate().map(|(i, g)| (&g.id, i)).collect();
        (0..groups.len())
            .map(|start| {
                let mut seen = HashSet::from([start]);
                let mut queue = vec![start];
                let mut out: BTreeSet<SourceId> = BTreeSet::new();
                while let Some(g) = queue.pop() {
                    for m in &groups[g].members {
                        if users(m) {
                            out.insert(m.clone());
                        } else if let Some(&c) = index.get(m)
                            && seen.insert(c)
                        {
                            queue.push(c);
                        }
                    }
                }
                out.into_iter().collect()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_a_naive_walk(edges in proptest::collection::vec(
            proptest::collection::vec((0usize..8, 0usize..6, proptest::bool::ANY), 0..6), 1..8)
        ) {
            let groups: Vec<SourceGroup> = edges.iter().enumerate().map(|(i, members)| {
                let m: Vec<String> = members.iter().map(|(g, u, is_user)| {
                    if *is_user { format!("u{u}") } else { format!("g{}", g % edges.len()) }
                }).collect();
                let refs: Vec<&str> = m.iter().map(String::as_str).collect();
                group(&format!("g{i}"), &refs)
            }).collect();
            let f = flatten(&groups, users);
            let want = naive(&groups);
            for (i, g) in groups.iter().enumerate() {
                let got = f.members[i].clone().unwrap_or_else(|| g.members.iter().filter(|m| users(m)).cloned().collect());
                prop_assert_eq!(&got, &want[i], "group {}", i);
            }
            // Every reported cycle is real: each group on it reaches the others.
            for cycle in &f.cycles {
                for id in cycle {
                    let i = groups.iter().position(|g| &g.id == id).unwrap();
                    prop_assert!(f.members[i].is_some());
                }
            }
        }
    }
}
