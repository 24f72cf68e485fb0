//! Crash safety at scale: a sync of 2,000 users and 10 groups killed with
//! SIGKILL at 22 points (group creates, user creates, member adds; some while
//! creates are in flight: performed by the target, not yet answered), each
//! kill followed by a rerun, then a final run. Nothing may be posted twice,
//! and the end state must be exactly the source.
//!
//! A first sync of an empty source records a completed full read, so the
//! reruns alternate between the incremental mode (the store's links plus the
//! write-ahead journal of creates decide what exists) and `--reconcile` (a
//! full read of the target decides): a create cut off in flight is resolved by
//! the journal in one mode and by the full read in the other.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use scimsync::sandbox::{Fault, FaultRule, Route};
use serde_json::Value;

use crate::common::{TestEnv, user};

const USERS: usize = 2_000;
const GROUPS: usize = 10;
/// `member_chunk` of the built-in profile (not overridden here).
const MEMBER_CHUNK: usize = 100;
const PACING: &str = "requests_per_second = 2000.0\nburst = 200\nconcurrency = 8\n";
/// How long the sandbox holds the answer of a create it has performed.
const HOLD_MS: u64 = 300;
/// How long it holds the answer of a member PATCH it has performed, so the
/// short member phase can be cut at chosen points.
const SLOW_PATCH_MS: u64 = 40;
const SIGKILL: i32 = 9;

fn group_name(i: usize) -> String {
    format!("team-{i:02}")
}

/// Whether user `n` (1-based) is in group `i`: group 0 holds 9 in 10 users,
/// group i ≥ 1 every (i+1)-th: sizes 1800, 1000, 667, 500, 400, 334, 286,
/// 250, 223, 200.
fn in_group(n: usize, i: usize) -> bool {
    if i == 0 {
        !n.is_multiple_of(10)
    } else {
        n.is_multiple_of(i + 1)
    }
}

fn source_id(n: usize) -> String {
    format!("u{n:05}")
}

fn user_name(n: usize) -> String {
    format!("user{n:05}@example.com")
}

fn source_rows() -> Vec<String> {
    (1..=USERS)
        .map(|n| {
            let groups: Vec<String> = (0..GROUPS)
                .filter(|&i| in_group(n, i))
                .map(group_name)
                .collect();
            user(
                &source_id(n),
                &format!("Given{n}"),
                &format!("Family{n}"),
                &user_name(n),
                &format!("Title {}", n % 7),
                &groups.join(";"),
            )
        })
        .collect()
}

/// Desired members (userNames) per group name.
fn desired_groups() -> BTreeMap<String, BTreeSet<String>> {
    (0..GROUPS)
        .map(|i| {
            let members = (1..=USERS)
                .filter(|&n| in_group(n, i))
                .map(user_name)
                .collect();
            (group_name(i), members)
        })
        .collect()
}

/// Member PATCHes an uninterrupted sync sends.
fn member_patches() -> u64 {
    desired_groups()
        .values()
        .map(|m| m.len().div_ceil(MEMBER_CHUNK) as u64)
        .sum()
}

/// Where a run is killed.
#[derive(Clone, Debug)]
struct KillPoint {
    label: String,
    /// Kill (or start holding answers) once the sandbox's cumulative write
    /// count reaches this.
    at_writes: u64,
    /// Hold the answers of `route` (performed first) from then on, and kill
    /// once this many more requests on it have arrived: they are in doubt.
    hold: Option<(Route, u64)>,
    /// Answer member PATCHes `SLOW_PATCH_MS` late (after performing them).
    slow_patches: bool,
}

fn at(label: String, at_writes: u64) -> KillPoint {
    KillPoint {
        label,
        at_writes,
        hold: None,
        slow_patches: false,
    }
}

/// 22 kill points in the order the work happens: group creates (in doubt),
/// user creates (every 125 creates, 4 of them in doubt), member adds.
fn kill_points() -> Vec<KillPoint> {
    let mut points = vec![
        KillPoint {
            hold: Some((Route::CreateGroup, 2)),
            ..at("group creates in flight".into(), 0)
        },
        KillPoint {
            hold: Some((Route::CreateGroup, 1)),
            ..at("the last group creates in flight".into(), 0)
        },
    ];
    let base = GROUPS as u64;
    for j in 1..=15u64 {
        let writes = base + USERS as u64 * j / 16;
        let mut p = at(format!("user creates, {writes} writes"), writes);
        if matches!(j, 3 | 6 | 9 | 12) {
            p.label = format!("user creates in flight, {writes} writes");
            p.hold = Some((Route::CreateUser, 6));
        }
        points.push(p);
    }
    let base = (GROUPS + USERS) as u64;
    for m in [4, 14, 24, 34, 44] {
        points.push(KillPoint {
            slow_patches: true,
            ..at(format!("member adds, {} writes", base + m), base + m)
        });
    }
    points
}

/// What one killed run left behind.
struct Kill {
    run: usize,
    label: String,
    mode: &'static str,
    writes_at_kill: u64,
    /// Users, groups and memberships in the target the store does not know of.
    unrecorded_users: usize,
    unrecorded_groups: usize,
    unrecorded_members: usize,
    /// Journal entries without a link.
    open_intents: i64,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {:2} ({}, {}): killed at {} writes; not recorded: {} users, {} groups, {} memberships; {} journal entries open",
            self.run,
            self.mode,
            self.label,
            self.writes_at_kill,
            self.unrecorded_users,
            self.unrecorded_groups,
            self.unrecorded_members,
            self.open_intents
        )
    }
}

pub(crate) fn spawn_sync(env: &TestEnv, run: usize, args: &[&str]) -> Child {
    let out = File::create(env.path(&format!("run-{run:02}.out"))).expect("stdout file");
    let err = File::create(env.path(&format!("run-{run:02}.err"))).expect("stderr file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scimsync"));
    cmd.arg("-c")
        .arg(env.config_path())
        .args(args)
        .current_dir(env.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("SCIMSYNC_CONFIG")
        .env_remove("SCIMSYNC_LOG")
        .env_remove("RUST_LOG")
        .stdout(out)
        .stderr(err);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.spawn().expect("the scimsync binary starts")
}

pub(crate) fn stderr_of(env: &TestEnv, run: usize) -> String {
    let text = std::fs::read_to_string(env.path(&format!("run-{run:02}.err"))).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

pub(crate) async fn kill_and_wait(child: Child) -> ExitStatus {
    let pid = child.id().to_string();
    let killed = tokio::task::spawn_blocking(move || {
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill runs")
    })
    .await
    .expect("the kill thread does not panic");
    assert!(killed.success(), "kill -KILL failed: {killed}");
    wait(child).await
}

pub(crate) async fn wait(mut child: Child) -> ExitStatus {
    tokio::task::spawn_blocking(move || child.wait().expect("waiting for the child"))
        .await
        .expect("the wait thread does not panic")
}

/// Run `sync` and kill it at `point`. `Err` when it ended on its own.
async fn run_killed(
    env: &TestEnv,
    run: usize,
    args: &[&str],
    point: &KillPoint,
) -> Result<u64, String> {
    let start = env.sb().counts().writes;
    // At least one write of this run comes before a plain kill.
    let threshold = if point.hold.is_some() {
        point.at_writes
    } else {
        point.at_writes.max(start + 1)
    };
    if point.slow_patches {
        env.sb().inject(
            FaultRule::new(
                Some(Route::PatchGroup),
                Fault::Delay {
                    millis: SLOW_PATCH_MS,
                },
                0,
            )
            .after_operation(),
        );
    }
    let mut child = spawn_sync(env, run, args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held_from: Option<u64> = None;
    loop {
        if let Some(status) = child.try_wait().expect("polling the child") {
            env.sb().clear_faults();
            return Err(format!(
                "run {run} ({}) ended on its own ({status}) before its kill point, at {} writes:\n{}",
                point.label,
                env.sb().counts().writes,
                stderr_of(env, run)
            ));
        }
        let c = env.sb().counts();
        if c.writes >= threshold {
            match (point.hold, held_from) {
                (None, _) => break,
                (Some((route, _)), None) => {
                    env.sb().inject(
                        FaultRule::new(Some(route), Fault::Delay { millis: HOLD_MS }, 0)
                            .after_operation(),
                    );
                    held_from = Some(env.sb().counts().get(route));
                }
                (Some((route, n)), Some(base)) if c.get(route) >= base + n => {
                    // Let the sandbox read the bodies and perform the creates;
                    // their answers stay held for HOLD_MS.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
                (Some(_), Some(_)) => {}
            }
        }
        if Instant::now() > deadline {
            let status = kill_and_wait(child).await;
            env.sb().clear_faults();
            panic!(
                "run {run} ({}) reached neither its kill point nor its end in 30 s ({status}); counts {c:?}:\n{}",
                point.label,
                stderr_of(env, run)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let status = kill_and_wait(child).await;
    env.sb().clear_faults();
    if status.signal() != Some(SIGKILL) {
        return Err(format!(
            "run {run} ({}) ended on its own ({status}) just before its kill:\n{}",
            point.label,
            stderr_of(env, run)
        ));
    }
    Ok(env.sb().counts().writes)
}

/// The store, read-only: a killed run's write-ahead log is left for the next
/// run to recover, as after a real crash.
fn store(env: &TestEnv) -> Connection {
    env.store()
}

fn strings(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).expect("query");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("row")
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

const OPEN_INTENTS: &str = "SELECT count(*) FROM intents i WHERE NOT EXISTS (
       SELECT 1 FROM user_links l WHERE i.kind = 'user' AND l.app = i.app AND l.source_id = i.source_id
       UNION ALL
       SELECT 1 FROM group_links l WHERE i.kind = 'group' AND l.app = i.app AND l.source_id = i.source_id)";

/// What the target holds that the store does not know of after a kill:
/// users, groups, memberships; and the journal entries still open.
struct Unrecorded {
    users: usize,
    groups: usize,
    members: usize,
    open_intents: i64,
}

fn unrecorded(env: &TestEnv) -> Unrecorded {
    let conn = store(env);
    let linked_users: HashSet<String> = strings(&conn, "SELECT scim_id FROM user_links")
        .into_iter()
        .collect();
    let linked_groups: HashSet<String> = strings(&conn, "SELECT scim_id FROM group_links")
        .into_iter()
        .collect();
    let stored_members: HashSet<String> =
        strings(&conn, "SELECT group_id || ' ' || user_id FROM memberships")
            .into_iter()
            .collect();
    let open_intents = count(&conn, OPEN_INTENTS);
    let id_of = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    let users = env.sb().users();
    let external: HashMap<String, &str> = users
        .iter()
        .map(|u| (id_of(u), u["externalId"].as_str().unwrap_or_default()))
        .collect();
    let groups = env.sb().groups();
    let mut members = 0;
    for g in &groups {
        let gid = g["externalId"].as_str().unwrap_or_default();
        for m in g["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let uid = external[m["value"].as_str().unwrap_or_default()];
            if !stored_members.contains(&format!("{gid} {uid}")) {
                members += 1;
            }
        }
    }
    Unrecorded {
        users: users
            .iter()
            .filter(|u| !linked_users.contains(&id_of(u)))
            .count(),
        groups: groups
            .iter()
            .filter(|g| !linked_groups.contains(&id_of(g)))
            .count(),
        members,
        open_intents,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sync_killed_at_many_points_converges_without_duplicates() {
    let started = Instant::now();
    let mut env = TestEnv::new().await;
    env.configure(PACING, "");

    // A completed full read of the (empty) target: later runs are incremental
    // unless given --reconcile.
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "seed run: {out:?}");
    assert_eq!(env.sb().counts().writes, 0);

    let rows = source_rows();
    env.write_users(&rows);
    let points = kill_points();
    let mut kills: Vec<Kill> = Vec::new();
    let mut misses: Vec<String> = Vec::new();
    let mut run = 1; // run 0 was the seed
    for (i, point) in points.iter().enumerate() {
        let (mode, args): (&'static str, &[&str]) = if i % 2 == 1 {
            ("full read", &["sync", "--reconcile"])
        } else {
            ("incremental", &["sync"])
        };
        match run_killed(&env, run, args, point).await {
            Ok(writes_at_kill) => {
                let left = unrecorded(&env);
                kills.push(Kill {
                    run,
                    label: point.label.clone(),
                    mode,
                    writes_at_kill,
                    unrecorded_users: left.users,
                    unrecorded_groups: left.groups,
                    unrecorded_members: left.members,
                    open_intents: left.open_intents,
                });
            }
            Err(why) => misses.push(why),
        }
        env.assert_no_duplicates(&format!("after run {run} ({})", point.label));
        run += 1;
    }
    let kills_done = started.elapsed();

    // The final run finishes the job.
    let final_run = run;
    let child = spawn_sync(&env, final_run, &["sync"]);
    let status = wait(child).await;
    let c = env.sb().counts();
    let conn = store(&env);
    let resolved = |cond: &str| {
        count(
            &conn,
            &format!("SELECT count(*) FROM outcomes WHERE outcome = 'applied' AND {cond}"),
        )
    };
    let by_journal_users = resolved("detail = 'existing account matched before create'");
    let by_journal_groups =
        resolved("detail = 'an interrupted run had created this group; linked'");
    let by_full_read_users = resolved("resource = 'user' AND action = 'link'");
    let by_full_read_groups = resolved("resource = 'group' AND action = 'link'");
    let kill_lines: Vec<String> = kills.iter().map(|k| format!("  {k}")).collect();
    let summary = format!(
        "{} kill points hit of {} planned, {} runs, {:.1}s ({:.1}s for the killed runs); \
         requests {} ({} writes: {} user POSTs, {} group POSTs, {} member PATCHes of {} without kills); \
         resolved after a kill: {by_journal_users} users and {by_journal_groups} groups by the journal, \
         {by_full_read_users} users and {by_full_read_groups} groups by a full read; misses: {misses:#?}\n{}",
        kills.len(),
        points.len(),
        final_run + 1,
        started.elapsed().as_secs_f64(),
        kills_done.as_secs_f64(),
        c.total,
        c.writes,
        c.get(Route::CreateUser),
        c.get(Route::CreateGroup),
        c.get(Route::PatchGroup),
        member_patches(),
        kill_lines.join("\n"),
    );
    assert_eq!(
        status.code(),
        Some(0),
        "final run: {status}\n{}\n{summary}",
        stderr_of(&env, final_run)
    );
    assert!(kills.len() >= 20, "too few kills landed: {summary}");
    let in_doubt: Vec<&Kill> = kills
        .iter()
        .filter(|k| k.label.contains("in flight"))
        .collect();
    assert_eq!(in_doubt.len(), 6, "{summary}");
    for k in &in_doubt {
        let unrecorded = if k.label.contains("group") {
            k.unrecorded_groups
        } else {
            k.unrecorded_users
        };
        assert!(
            unrecorded >= 1 && k.open_intents >= 1,
            "run {} was killed with creates in flight, yet nothing was left in doubt: {summary}",
            k.run
        );
    }

    // Both ways of resolving a create cut off by a kill were taken.
    assert!(
        by_journal_users >= 1 && by_journal_groups >= 1,
        "the journal resolved nothing: {summary}"
    );
    assert!(
        by_full_read_users >= 1 && by_full_read_groups >= 1,
        "no full read adopted anything: {summary}"
    );

    // Nothing was posted twice: every create cut off by a kill was found
    // (journal or full read), never sent again.
    assert_eq!(c.get(Route::CreateUser), USERS as u64, "{summary}");
    assert_eq!(c.get(Route::CreateGroup), GROUPS as u64, "{summary}");

    // The target holds exactly the source: no duplicates, right attributes,
    // right members.
    env.assert_no_duplicates("after the final run");
    let users = env.sb().users();
    assert_eq!(users.len(), USERS, "{summary}");
    let by_id: HashMap<&str, &Value> = users
        .iter()
        .map(|u| (u["id"].as_str().expect("an id"), u))
        .collect();
    let mut seen = BTreeSet::new();
    for u in &users {
        let name = u["userName"].as_str().expect("a userName");
        let ext = u["externalId"].as_str().expect("an externalId");
        let n: usize = ext
            .strip_prefix('u')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected externalId {ext}: {u:#}"));
        assert_eq!(name, user_name(n), "{u:#}");
        assert_eq!(u["active"], true, "{u:#}");
        assert_eq!(u["name"]["givenName"], format!("Given{n}"), "{u:#}");
        assert_eq!(u["title"], format!("Title {}", n % 7), "{u:#}");
        assert!(seen.insert(n), "user {n} twice: {summary}");
    }
    assert_eq!(seen.len(), USERS);
    let groups = env.sb().groups();
    let mut have: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &groups {
        let name = g["displayName"].as_str().expect("a displayName").to_owned();
        let members: BTreeSet<String> = g["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let id = m["value"].as_str().expect("a member id");
                by_id.get(id).expect("members exist")["userName"]
                    .as_str()
                    .expect("a userName")
                    .to_owned()
            })
            .collect();
        assert!(
            have.insert(name.clone(), members).is_none(),
            "group {name} twice"
        );
    }
    let want = desired_groups();
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{summary}"
    );
    for (name, members) in &want {
        let got = &have[name];
        assert!(
            got == members,
            "group {name}: {} members, {} wanted; missing {:?}, extra {:?}",
            got.len(),
            members.len(),
            members.difference(got).take(5).collect::<Vec<_>>(),
            got.difference(members).take(5).collect::<Vec<_>>()
        );
    }

    // The store: a link per resource pointing at the right account, an
    // applied create (or link/adopt) outcome for every user and group, no
    // journal entry left unresolved.
    let links: HashMap<String, String> = {
        let mut stmt = conn
            .prepare("SELECT source_id, scim_id FROM user_links")
            .expect("links query");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("links")
            .collect::<Result<_, _>>()
            .expect("link")
    };
    assert_eq!(links.len(), USERS, "{summary}");
    for u in &users {
        let ext = u["externalId"].as_str().expect("an externalId");
        assert_eq!(
            links.get(ext).map(String::as_str),
            u["id"].as_str(),
            "the link of {ext}"
        );
    }
    let applied: HashSet<String> = strings(
        &conn,
        "SELECT DISTINCT source_id FROM outcomes WHERE resource = 'user' AND outcome = 'applied'
         AND source_id IS NOT NULL
         AND (action IN ('create', 'link') OR (action = 'update' AND detail LIKE 'existing account linked%'))",
    )
    .into_iter()
    .collect();
    let without: Vec<&str> = users
        .iter()
        .filter_map(|u| u["externalId"].as_str())
        .filter(|ext| !applied.contains(*ext))
        .collect();
    assert!(
        without.is_empty(),
        "{} users have no applied create/link outcome, e.g. {:?}: {summary}",
        without.len(),
        &without[..without.len().min(10)]
    );
    let group_links = strings(&conn, "SELECT source_id FROM group_links");
    assert_eq!(group_links.len(), GROUPS, "{summary}");
    let group_applied: HashSet<String> = strings(
        &conn,
        "SELECT DISTINCT source_id FROM outcomes WHERE resource = 'group' AND outcome = 'applied'
         AND source_id IS NOT NULL AND action IN ('create', 'link')",
    )
    .into_iter()
    .collect();
    for g in &group_links {
        assert!(
            group_applied.contains(g),
            "group {g} has no applied create/link outcome"
        );
    }
    let open = count(&conn, OPEN_INTENTS);
    let left = count(&conn, "SELECT count(*) FROM intents");
    assert_eq!(
        (open, left),
        (0, 0),
        "journal entries left (unresolved, in all): {summary}"
    );
    // Every killed run was closed by the run after it, with its counts.
    let running = count(&conn, "SELECT count(*) FROM runs WHERE status = 'running'");
    let interrupted = count(
        &conn,
        "SELECT count(*) FROM runs WHERE status = 'interrupted'",
    );
    assert_eq!(
        running, 0,
        "runs left `running` ({running}, interrupted {interrupted}): {summary}"
    );
    assert!(
        interrupted >= 20,
        "only {interrupted} runs marked interrupted: {summary}"
    );
    drop(conn);

    // Converged: neither an incremental run nor a full read finds work.
    for args in [&["sync"][..], &["sync", "--reconcile"][..]] {
        let before = env.sb().counts().writes;
        let out = env.run(args).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert_eq!(
            env.sb().counts().writes,
            before,
            "{args:?} after convergence wrote: {out:?}"
        );
    }
}
