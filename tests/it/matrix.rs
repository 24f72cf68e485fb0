//! The fault matrix: every fault kind, injected once into every kind of
//! operation, must leave the target exactly as the source says, without
//! duplicates, with a complete report.
//!
//! Each (fault, operation) pair is its own test, named
//! `matrix::<operation>::<fault>`; `matrix::after::<operation>::<fault>`
//! injects the fault after the sandbox did the work (an in-doubt write).
//! Retries use a copy of the Atlassian profile with a short backoff
//! ([`crate::common::fast_retry_profile`]): the same decisions, less waiting.

use scimsync::sandbox::{Fault, FaultRule, Route};

use crate::common::{FAST, TestEnv, five_users};

/// The fault kinds of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// 429 with `Retry-After: 1`.
    Throttled,
    /// 429 without `Retry-After`.
    ThrottledBare,
    /// A bare error status.
    Status(u16),
    /// A delay longer than the client's 1 s timeout.
    Timeout,
    /// A 200 head, part of a body, then the connection drops.
    Reset,
    /// A truncated JSON body with a success status.
    Malformed,
}

impl Kind {
    fn fault(self, op: Op) -> Fault {
        let status = |status: u16, retry_after: Option<&str>| Fault::Status {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: None,
            content_type: None,
        };
        match self {
            Kind::Throttled => status(429, Some("1")),
            Kind::ThrottledBare => status(429, None),
            Kind::Status(s) => status(s, None),
            Kind::Timeout => Fault::Delay { millis: 1500 },
            Kind::Reset => Fault::Reset,
            Kind::Malformed => Fault::MalformedBody {
                status: if op == Op::CreateUser { 201 } else { 200 },
            },
        }
    }
}

/// The operation kinds of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// POST /Users: five users on a first sync.
    CreateUser,
    /// PATCH /Users/{id}: one title changes.
    PatchUser,
    /// DELETE /Users/{id}: one user leaves (`deprovision = "delete"`).
    DeleteUser,
    /// PATCH /Groups/{id}: one user moves between groups (two group patches).
    PatchGroup,
    /// GET /Users: the full read of a `--reconcile` run that corrects drift
    /// and applies a source change.
    ListUsers,
}

impl Op {
    fn route(self) -> Route {
        match self {
            Op::CreateUser => Route::CreateUser,
            Op::PatchUser => Route::PatchUser,
            Op::DeleteUser => Route::DeleteUser,
            Op::PatchGroup => Route::PatchGroup,
            Op::ListUsers => Route::ListUsers,
        }
    }

    /// The outcome rows the faulted run must hold: (resource, action,
    /// source id, group name).
    fn expected_rows(
        self,
    ) -> Vec<(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    )> {
        match self {
            Op::CreateUser => vec![
                ("user", "create", "1001", None),
                ("user", "create", "1002", None),
                ("user", "create", "1003", None),
                ("user", "create", "1004", None),
                ("user", "create", "1005", None),
                ("group", "create", "Engineering", None),
                ("group", "create", "Research", None),
                ("membership", "add_member", "1001", Some("Engineering")),
                ("membership", "add_member", "1002", Some("Engineering")),
                ("membership", "add_member", "1005", Some("Engineering")),
                ("membership", "add_member", "1002", Some("Research")),
                ("membership", "add_member", "1003", Some("Research")),
            ],
            Op::PatchUser => vec![("user", "update", "1001", None)],
            Op::DeleteUser => vec![("user", "delete", "1003", None)],
            Op::PatchGroup => vec![
                ("membership", "remove_member", "1001", Some("Engineering")),
                ("membership", "add_member", "1001", Some("Research")),
            ],
            Op::ListUsers => vec![
                ("user", "update", "1001", None),
                ("user", "update", "1002", None),
            ],
        }
    }
}

/// Prepare the scenario in which `op` is needed; returns the desired rows
/// and the `sync` arguments.
async fn scenario(env: &TestEnv, op: Op) -> (Vec<String>, Vec<&'static str>) {
    let mut rows = five_users();
    env.write_users(&rows);
    if op == Op::CreateUser {
        return (rows, vec!["sync"]);
    }
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{op:?}: the initial sync: {out:?}");
    let mut args = vec!["sync"];
    match op {
        Op::CreateUser => unreachable!("returned above"),
        Op::PatchUser => rows[0] = rows[0].replace(",Engineer,", ",Countess,"),
        Op::DeleteUser => rows.retain(|r| !r.starts_with("1003,")),
        Op::PatchGroup => rows[0] = rows[0].replace(",Engineering", ",Research"),
        Op::ListUsers => {
            // Drift made by hand in the target, and a change in the source.
            let ada = env.target_user("ada@example.com").expect("ada exists");
            let id = ada["id"].as_str().expect("an id");
            assert!(
                env.sb()
                    .set_user_attr(id, "title", serde_json::json!("Drifted"))
            );
            rows[1] = rows[1].replace(",Manager,", ",Admiral,");
            args.push("--reconcile");
        }
    }
    env.write_users(&rows);
    env.sb().reset_counts();
    (rows, args)
}

async fn run_case(op: Op, kind: Kind, after: bool) {
    let case = format!(
        "{op:?} / {kind:?}{}",
        if after { " (after the operation)" } else { "" }
    );
    let mut env = TestEnv::new().await;
    let mut target = format!("{FAST}max_attempts = 3\n{}", env.fast_retry_connector());
    if kind == Kind::Timeout {
        target.push_str("timeout = \"1s\"\n");
    }
    let extra = if op == Op::DeleteUser {
        "[policy]\ndeprovision = \"delete\"\n"
    } else {
        ""
    };
    env.configure(&target, extra);
    let (rows, args) = scenario(&env, op).await;
    let run_id = if env.store_path().exists() {
        env.runs().len() as i64 + 1
    } else {
        1
    };

    let mut rule = FaultRule::new(Some(op.route()), kind.fault(op), 1);
    if after {
        rule = rule.after_operation();
    }
    env.sb().inject(rule);
    let out = env.run(&args).await;
    assert!(!out.stderr.contains("panicked"), "{case}: {out:?}");
    assert_eq!(out.code, 0, "{case}: {out:?}");
    assert!(
        env.sb().faults().is_empty(),
        "{case}: the fault never fired"
    );
    // One extra request on the faulted route: the faulted one was sent again
    // once (after a lookup, for a create). A create whose answer was lost is
    // looked up and adopted, not sent again — unless the lost answer was a 429,
    // which says "not processed": the re-sent POST then meets a 409.
    let normal = match op {
        Op::CreateUser => 5,
        Op::PatchGroup => 2,
        Op::PatchUser | Op::DeleteUser | Op::ListUsers => 1,
    };
    let resent = match (op, after, kind) {
        (Op::CreateUser, true, Kind::Throttled | Kind::ThrottledBare) => 1,
        (Op::CreateUser, true, _) => 0,
        _ => 1,
    };
    let c = env.sb().counts();
    assert_eq!(c.get(op.route()), normal + resent, "{case}: {c:?}");

    // The target is exactly what the source asks for, without duplicates.
    env.assert_no_duplicates(&case);
    env.assert_state(&rows, &[], &case);

    // The report is complete.
    let run = env
        .runs()
        .into_iter()
        .find(|r| r.id == run_id)
        .unwrap_or_else(|| panic!("{case}: no run row {run_id}"));
    assert_eq!(run.status, "succeeded", "{case}: {run:?}");
    assert!(env.run_finished_at(run_id).is_some(), "{case}: {run:?}");
    assert_eq!(run.reconcile, op == Op::CreateUser || op == Op::ListUsers);
    let outcomes = env.outcomes_of_run(run_id);
    let not_applied: Vec<_> = outcomes.iter().filter(|o| o.outcome != "applied").collect();
    assert!(not_applied.is_empty(), "{case}: {not_applied:#?}");
    assert_eq!(
        run.applied as usize,
        outcomes.len(),
        "{case}: {run:?} {outcomes:#?}"
    );
    assert_eq!((run.failed, run.skipped, run.invalid), (0, 0, 0), "{case}");
    let expected = op.expected_rows();
    for (resource, action, source, group) in &expected {
        let found = outcomes.iter().any(|o| {
            o.resource == *resource
                && o.action == *action
                && o.source_id.as_deref() == Some(*source)
                && o.group_name.as_deref() == *group
        });
        assert!(
            found,
            "{case}: no outcome row {resource} {action} {source} {group:?}: {outcomes:#?}"
        );
    }
    assert_eq!(outcomes.len(), expected.len(), "{case}: {outcomes:#?}");
    // The fault left a trace: a retry, a second attempt, or an in-doubt note.
    let traced = run.retries >= 1
        || outcomes.iter().any(|o| {
            o.attempts >= 2
                || o.detail
                    .as_deref()
                    .is_some_and(|d| d.contains("in doubt") || d.contains("409"))
        });
    assert!(traced, "{case}: {run:?} {outcomes:#?}");

    // The store agrees with the target: the next run has nothing to send.
    env.sb().reset_counts();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{case}: the run after: {out:?}");
    let c = env.sb().counts();
    assert_eq!(c.total, 0, "{case}: the run after sent requests: {c:?}");
}

/// One test per fault kind for the operation `$op`, `$after` or not.
macro_rules! fault_cases {
    ($op:expr, $after:expr) => {
        fault_cases!(@each $op, $after;
            http_429_retry_after => Kind::Throttled,
            http_429_no_retry_after => Kind::ThrottledBare,
            http_500 => Kind::Status(500),
            http_502 => Kind::Status(502),
            http_503 => Kind::Status(503),
            http_504 => Kind::Status(504),
            timeout => Kind::Timeout,
            connection_reset => Kind::Reset,
            malformed_body => Kind::Malformed,
        );
    };
    (@each $op:expr, $after:expr; $($name:ident => $kind:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            crate::matrix::run_case($op, $kind, $after).await;
        }
    )*};
}

mod create_user {
    use super::{Kind, Op};
    fault_cases!(Op::CreateUser, false);
}

mod patch_user {
    use super::{Kind, Op};
    fault_cases!(Op::PatchUser, false);
}

mod delete_user {
    use super::{Kind, Op};
    fault_cases!(Op::DeleteUser, false);
}

mod patch_group {
    use super::{Kind, Op};
    fault_cases!(Op::PatchGroup, false);
}

mod list_users {
    use super::{Kind, Op};
    fault_cases!(Op::ListUsers, false);
}

/// The operation happened; the answer is the fault.
mod after {
    mod create_user {
        use super::super::{Kind, Op};
        fault_cases!(Op::CreateUser, true);
    }

    mod patch_group {
        use super::super::{Kind, Op};
        fault_cases!(Op::PatchGroup, true);
    }
}
