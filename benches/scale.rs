//! The scale benchmarks behind BENCHMARKS.md. Not a test: it measures and
//! prints markdown tables, it asserts nothing about time.
//!
//! ```sh
//! cargo bench --bench scale -- plan [--sizes 10000,100000,1000000]
//! cargo bench --bench scale -- requests [--users 10000]
//! cargo bench --bench scale -- throughput [--users 20000] [--concurrency 16] [--rate 200]
//! cargo bench --bench scale -- nochange [--users 100000] [--runs 5] [--hold-secs 0]
//! cargo bench --bench scale -- process [--users 1000000] [--runs 3] [--compare OTHER_BINARY] [--keep DIR]
//! ```
//!
//! `plan` runs each size in a child process so each peak memory figure is its
//! own (VmHWM of the child). The sandbox sections start the in-process
//! Atlassian-like sandbox on 127.0.0.1:0 and run the real `scimsync` binary
//! against it, as a user would.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scimsync::config::Settings;
use scimsync::datagen::{self, Directory, Spec};
use scimsync::model::ScimId;
use scimsync::plan::Desired;
use scimsync::sandbox::{RateLimit, Route, Sandbox, SandboxConfig};
use scimsync::store::{self as store, GroupLink, Record, Store, UserLink};
use scimsync::{mapping, plan, source, target};
use serde_json::{Value, json};

// The same allocator as the `scimsync` binary, so the in-process stages
// (section 1) cost what they cost in a real run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 7;
const CHANGE_RATE: f64 = 0.01;
/// The binary under test: `SCIMSYNC_BIN`, or the one cargo built with this bench.
fn bin() -> String {
    std::env::var("SCIMSYNC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_scimsync").to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let opt = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num = |name: &str, default: usize| -> usize {
        opt(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let what = args.first().map(String::as_str).unwrap_or("all");
    let sizes: Vec<usize> = opt("--sizes")
        .unwrap_or_else(|| "10000,100000,1000000".into())
        .split(',')
        .map(|s| s.parse().expect("sizes: numbers"))
        .collect();
    println!("machine: {}", machine());
    match what {
        "plan-one" => plan_one(args[1].parse().expect("a size")),
        "plan" => plan_table(&sizes),
        "requests" => requests(num("--users", 10_000)),
        "throughput" => throughput(
            num("--users", 20_000),
            num("--concurrency", 16),
            num("--rate", 200),
        ),
        "nochange" => nochange(
            num("--users", 100_000),
            num("--runs", 5),
            num("--hold-secs", 0),
        ),
        "process" => process(
            num("--users", 1_000_000),
            num("--runs", 3),
            opt("--compare"),
            opt("--keep").map(PathBuf::from),
        ),
        "all" => {
            plan_table(&sizes);
            requests(10_000);
            throughput(20_000, 16, 200);
            nochange(100_000, 5, 0);
        }
        other => {
            panic!("unknown section `{other}` (plan, requests, throughput, nochange, process)")
        }
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}

/// `VmHWM` / `VmRSS` of this process in MiB.
fn proc_status_mib(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Reset the peak RSS to the current RSS (Linux 4.0+), so a figure covers
/// only what follows.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn settings_for(dir: &Path, extra_target: &str, extra: &str) -> String {
    format!(
        "[source]\nusers = \"users.csv\"\ngroups = \"groups.csv\"\n\n[target]\nname = \"bench\"\nbase_url = \"{{BASE}}\"\napi_key_file = \"key\"\n{extra_target}\n\n[guard]\nmax_disable = 1000000\nmax_member_remove = 100000000\n{extra}\n[store]\npath = \"{}\"\n",
        dir.join("scimsync.db").display()
    )
}

fn load_settings(dir: &Path) -> Settings {
    let text = settings_for(dir, "", "").replace("{BASE}", "http://127.0.0.1:9/scim");
    Settings::from_toml(&text, &dir.join("scimsync.toml")).expect("bench config")
}

/// Links as a perfect earlier sync would have stored them.
fn links_from(desired: &Desired) -> (Vec<UserLink>, Vec<GroupLink>) {
    let users = desired
        .users
        .iter()
        .map(|(id, u)| UserLink {
            source_id: id.clone(),
            scim_id: ScimId(format!("u-{id}")),
            state: u.attrs.clone(),
        })
        .collect();
    let groups = desired
        .groups
        .iter()
        .map(|(id, g)| GroupLink {
            source_id: id.clone(),
            scim_id: ScimId(format!("g-{id}")),
            display_name: g.display_name.clone(),
            members: g.members.clone(),
        })
        .collect();
    (users, groups)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Yesterday's and today's directories (a 1 % day of changes) written to
/// `d1` and `d2`; their sizes (today's groups and memberships) and the
/// minimum writes between them.
fn two_days(users: usize, d1: &Path, d2: &Path) -> (usize, usize, u64) {
    std::fs::create_dir_all(d1).expect("mkdir");
    std::fs::create_dir_all(d2).expect("mkdir");
    let day1 = datagen::generate(&Spec::scaled(users, SEED));
    let (day2, _stats) = datagen::day_of_changes(&day1, CHANGE_RATE, SEED);
    datagen::write_csv(&day1, d1).expect("write day 1");
    datagen::write_csv(&day2, d2).expect("write day 2");
    let chunk = load_settings(d1).limits.member_chunk;
    let min_writes = datagen::minimum_writes(&day1, &day2, chunk, false);
    (
        day2.groups.len(),
        datagen::membership_count(&day2),
        min_writes,
    )
}

/// The links a perfect sync of the directory in `dir` would have stored.
fn synced_links(dir: &Path) -> (Vec<UserLink>, Vec<GroupLink>) {
    let s = load_settings(dir);
    let mut snap = source::load(&s.source).expect("directory loads");
    let desired = mapping::desired_state_taking(&mut snap, &s.mapping, &s.groups);
    drop(snap);
    links_from(&desired)
}

/// Stored links as a full decode gives them (the in-process stages start
/// from decoded states; the `process` section measures the text comparison).
fn decoded(links: Vec<store::UserLink>) -> Vec<store::StoredUser> {
    links.into_iter().map(store::StoredUser::from).collect()
}

/// One size, in this (child) process; prints one JSON line.
fn plan_one(users: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (d1, d2) = (tmp.path().join("day1"), tmp.path().join("day2"));
    let t = Instant::now();
    let (groups, memberships, min_writes) = two_days(users, &d1, &d2);
    eprintln!("  {users}: generated in {:.1}s", secs(t.elapsed()));

    // Yesterday's sync, as the store would hold it.
    let (ulinks, glinks) = synced_links(&d1);

    let s2 = load_settings(&d2);
    let chunk = s2.limits.member_chunk;
    let base_mib = proc_status_mib("VmRSS:");
    let reset = reset_peak();
    let t0 = Instant::now();
    let mut snap2 = source::load(&s2.source).expect("day 2 loads");
    let t_load = t0.elapsed();
    let t1 = Instant::now();
    let desired2 = mapping::desired_state_taking(&mut snap2, &s2.mapping, &s2.groups);
    let t_map = t1.elapsed();
    let t2 = Instant::now();
    let actual = target::from_store_owned(decoded(ulinks), glinks);
    let t_actual = t2.elapsed();
    let t3 = Instant::now();
    let plan = plan::compute(&desired2, &actual, &s2.policy);
    let t_plan = t3.elapsed();
    let total = t0.elapsed();
    let peak_mib = proc_status_mib("VmHWM:");
    let requests: usize = plan.actions.iter().map(|a| a.requests(chunk)).sum();
    drop((actual, plan));

    // No change: today's state against itself.
    let (u2, g2) = links_from(&desired2);
    let t4 = Instant::now();
    let actual2 = target::from_store_owned(decoded(u2), g2);
    let nochange = plan::compute(&desired2, &actual2, &s2.policy);
    let t_nochange = t4.elapsed();
    let doc = json!({
        "users": users,
        "groups": groups,
        "memberships": memberships,
        "load_s": secs(t_load),
        "map_s": secs(t_map),
        "actual_s": secs(t_actual),
        "plan_s": secs(t_plan),
        "total_s": secs(total),
        "map_actual_plan_s": secs(t_map + t_actual + t_plan),
        "nochange_actual_plan_s": secs(t_nochange),
        "nochange_actions": nochange.actions.len(),
        "requests": requests,
        "min_requests": min_writes,
        "base_mib": base_mib,
        "peak_mib": if reset { peak_mib } else { f64::NAN },
        "peak_whole_process_mib": proc_status_mib("VmHWM:"),
    });
    println!("{doc}");
}

fn plan_table(sizes: &[usize]) {
    println!("\n## plan: load, map, target from store, diff (1 % day of changes)\n");
    println!(
        "| users | groups | memberships | load CSV s | map s | target-from-store s | plan::compute s | map+target+plan s | no-change target+plan s | peak RSS MiB (above links) | plan requests / minimum |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let me = std::env::current_exe().expect("own path");
    for &n in sizes {
        let out = Command::new(&me)
            .args(["plan-one", &n.to_string()])
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(v) = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
        else {
            println!(
                "| {n} | failed: {} |",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        };
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {n} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} (+{:.0} held) | {}/{} = {:.2} |",
            v["groups"],
            v["memberships"],
            f("load_s"),
            f("map_s"),
            f("actual_s"),
            f("plan_s"),
            f("map_actual_plan_s"),
            f("nochange_actual_plan_s"),
            f("peak_mib") - f("base_mib"),
            f("base_mib"),
            v["requests"],
            v["min_requests"],
            f("requests") / f("min_requests"),
        );
    }
}

/// A work folder with a key, a config and a sandbox.
struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    running: Option<scimsync::sandbox::RunningSandbox>,
}

impl Env {
    fn new(cfg: SandboxConfig, target_extra: &str) -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let running = rt.block_on(Sandbox::start(cfg)).expect("sandbox starts");
        std::fs::write(dir.join("key"), &running.sandbox.config().api_key).expect("key");
        let config = settings_for(&dir, target_extra, "").replace("{BASE}", &running.base_url());
        std::fs::write(dir.join("scimsync.toml"), config).expect("config");
        Env {
            _tmp: tmp,
            dir,
            rt,
            running: Some(running),
        }
    }

    fn sb(&self) -> &Sandbox {
        &self.running.as_ref().expect("running").sandbox
    }

    fn write(&self, d: &Directory) {
        datagen::write_csv(d, &self.dir).expect("write csv");
    }

    /// Run `scimsync sync --format json` (plus `args`); the JSON summary and the wall time.
    fn sync(&self, args: &[&str]) -> (Value, Duration) {
        let t = Instant::now();
        let out = Command::new(bin())
            .arg("-c")
            .arg(self.dir.join("scimsync.toml"))
            .args(["-q", "sync", "--format", "json", "--allow-deprovision"])
            .args(args)
            .output()
            .expect("scimsync runs");
        let wall = t.elapsed();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "sync output is not JSON (exit {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if v["status"] != "succeeded" {
            eprintln!("warning: run status {}", v["status"]);
        }
        (v, wall)
    }

    fn counts(&self) -> BTreeMap<Route, u64> {
        let c = self.sb().counts();
        ALL_ROUTES.iter().map(|r| (*r, c.get(*r))).collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }
}

const ALL_ROUTES: &[Route] = &[
    Route::ServiceProviderConfig,
    Route::Schemas,
    Route::ResourceTypes,
    Route::ListUsers,
    Route::CreateUser,
    Route::GetUser,
    Route::ReplaceUser,
    Route::PatchUser,
    Route::DeleteUser,
    Route::ListGroups,
    Route::CreateGroup,
    Route::GetGroup,
    Route::ReplaceGroup,
    Route::PatchGroup,
    Route::DeleteGroup,
    Route::Other,
];

fn writes(c: &BTreeMap<Route, u64>) -> u64 {
    c.iter().filter(|(r, _)| r.is_write()).map(|(_, n)| n).sum()
}

fn total(c: &BTreeMap<Route, u64>) -> u64 {
    c.values().sum()
}

fn describe(c: &BTreeMap<Route, u64>) -> String {
    c.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r:?} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const FAST: &str = "requests_per_second = 100000.0\nburst = 1000\nconcurrency = 16\n";

fn requests(users: usize) {
    println!("\n## request efficiency: {users} users against the sandbox\n");
    let env = Env::new(SandboxConfig::default(), FAST);
    let chunk = load_settings(&env.dir).limits.member_chunk;
    let day1 = datagen::generate(&Spec::scaled(users, SEED));
    let (day2, stats) = datagen::day_of_changes(&day1, CHANGE_RATE, SEED);
    println!(
        "{} users, {} groups, {} memberships; day of changes: {stats:?}\n",
        day1.users.len(),
        day1.groups.len(),
        datagen::membership_count(&day1)
    );
    println!(
        "| run | writes sent | minimum writes | writes / minimum | reads sent | all requests by route |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let row = |name: &str, min: u64, args: &[&str]| {
        env.sb().reset_counts();
        let (_v, _wall) = env.sync(args);
        let c = env.counts();
        let w = writes(&c);
        let ratio = if min == 0 {
            if w == 0 {
                "0 = 0".to_owned()
            } else {
                format!("{w} (min 0)")
            }
        } else {
            format!("{:.2}", w as f64 / min as f64)
        };
        println!(
            "| {name} | {w} | {min} | {ratio} | {} | {} |",
            total(&c) - w,
            describe(&c)
        );
    };
    env.write(&day1);
    row(
        "first sync (empty target)",
        datagen::minimum_writes(&Directory::default(), &day1, chunk, false),
        &[],
    );
    row("no-change sync", 0, &[]);
    row(
        "no-change sync --reconcile (full read)",
        0,
        &["--reconcile"],
    );
    env.write(&day2);
    row(
        "day of changes (1 %)",
        datagen::minimum_writes(&day1, &day2, chunk, false),
        &[],
    );
    row("no-change sync after it", 0, &[]);
}

/// Requests per second between the first and the last outcome of `run_id`.
fn outcome_rate(dir: &Path, run_id: i64) -> (u64, f64) {
    let conn = rusqlite::Connection::open(dir.join("scimsync.db")).expect("store");
    let (n, first, last): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), min(at), max(at) FROM outcomes WHERE run_id = ?1 AND resource = 'user'",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("outcomes");
    let span = (last - first).max(1) as f64 / 1000.0;
    (n as u64, (n - 1).max(0) as f64 / span)
}

fn throughput(users: usize, concurrency: usize, rate: usize) {
    println!("\n## throughput: {users} users, concurrency {concurrency}, unthrottled sandbox\n");
    println!(
        "| run | requests | run wall s (whole process) | per second (whole process) | per second (first to last outcome) | 429s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let spec = Spec {
        groups: 0,
        memberships_per_user: 0.0,
        ..Spec::scaled(users, SEED)
    };
    let day1 = datagen::generate(&spec);
    let fast =
        format!("requests_per_second = 100000.0\nburst = 1000\nconcurrency = {concurrency}\n");
    {
        let env = Env::new(SandboxConfig::default(), &fast);
        env.write(&day1);
        for (name, d) in [
            ("creates", day1.clone()),
            ("patches", datagen::edit_all(&day1)),
        ] {
            env.write(&d);
            env.sb().reset_counts();
            let (v, wall) = env.sync(&[]);
            let c = env.counts();
            let run_id = v["run_id"].as_i64().unwrap_or(0);
            let (n, r) = outcome_rate(&env.dir, run_id);
            let sent = if name == "creates" {
                c[&Route::CreateUser]
            } else {
                c[&Route::PatchUser]
            };
            println!(
                "| {name} | {sent} ({n} outcomes) | {:.2} | {:.0} | {:.0} | {} |",
                secs(wall),
                sent as f64 / secs(wall),
                r,
                v["counts"]["throttled"]
            );
        }
    }

    let n = rate * 20;
    println!(
        "\n## throttled: sandbox limited to R = {rate} requests/s (burst 10, Retry-After), {n} creates\n"
    );
    println!(
        "| client rate | client burst | requests | 429s | achieved req/s (first to last outcome) | % of R | run wall s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let small = datagen::generate(&Spec {
        groups: 0,
        memberships_per_user: 0.0,
        ..Spec::scaled(n, SEED)
    });
    for (client_rate, client_burst) in [
        (rate as f64, 10),
        (rate as f64, 1),
        (rate as f64 * 1.25, 10),
    ] {
        let cfg = SandboxConfig {
            rate_limit: Some(RateLimit {
                per_second: rate as f64,
                burst: 10,
                send_retry_after: true,
            }),
            ..SandboxConfig::default()
        };
        let env = Env::new(
            cfg,
            &format!(
                "requests_per_second = {client_rate}\nburst = {client_burst}\nconcurrency = {concurrency}\n"
            ),
        );
        env.write(&small);
        let (v, wall) = env.sync(&[]);
        let c = env.counts();
        let run_id = v["run_id"].as_i64().unwrap_or(0);
        let (_, r) = outcome_rate(&env.dir, run_id);
        println!(
            "| {client_rate} | {client_burst} | {} | {} | {r:.1} | {:.1} % | {:.2} |",
            total(&c),
            v["counts"]["throttled"],
            100.0 * r / rate as f64,
            secs(wall)
        );
    }
}

fn nochange(users: usize, runs: usize, hold_secs: usize) {
    println!("\n## no-change incremental run at {users} users (whole process)\n");
    let env = Env::new(SandboxConfig::default(), FAST);
    let day1 = datagen::generate(&Spec::scaled(users, SEED));
    env.write(&day1);
    let t = Instant::now();
    let (v, _) = env.sync(&[]);
    eprintln!(
        "  first sync: {} requests in {:.1}s",
        v["counts"]["requests"],
        secs(t.elapsed())
    );
    let mut walls = Vec::new();
    for _ in 0..runs {
        env.sb().reset_counts();
        let (_v, wall) = env.sync(&[]);
        assert_eq!(total(&env.counts()), 0, "a no-change run sends nothing");
        walls.push(secs(wall));
    }
    walls.sort_by(f64::total_cmp);
    println!(
        "| users | groups | memberships | runs | wall s min | median | max | requests |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {users} | {} | {} | {runs} | {:.2} | {:.2} | {:.2} | 0 |",
        day1.groups.len(),
        datagen::membership_count(&day1),
        walls.first().copied().unwrap_or(f64::NAN),
        walls.get(walls.len() / 2).copied().unwrap_or(f64::NAN),
        walls.last().copied().unwrap_or(f64::NAN),
    );
    if hold_secs > 0 {
        println!(
            "\nholding the sandbox for {hold_secs}s; time it with:\n  {} -c {} -q sync",
            bin(),
            env.dir.join("scimsync.toml").display()
        );
        std::thread::sleep(Duration::from_secs(hold_secs as u64));
    }
}

/// `VmHWM` of a running child, in MiB (0 once it has exited).
fn child_peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The real `scimsync plan` process on a directory of `users` people: the
/// store holds yesterday's perfect sync (written through the store's own
/// records, as a run writes them, and marked reconciled), the CSV files hold
/// today's 1 % day of changes; no target is contacted. With `compare`, that
/// binary runs too, interleaved with ours, on the same files.
/// `keep`: build the directory and store there, or reuse them if a run left
/// them (`DIR/run/scimsync.db`), so a change can be measured against the same store.
fn process(users: usize, runs: usize, compare: Option<String>, keep: Option<PathBuf>) {
    println!("\n## the `scimsync plan` process at {users} users (state from the store)\n");
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = keep.unwrap_or_else(|| tmp.path().to_owned());
    let (d1, dir) = (root.join("day1"), root.join("run"));
    let sizes = if dir.join("scimsync.db").exists() {
        eprintln!("  reusing the store in {}", dir.display());
        None
    } else {
        Some(store_two_days(users, &d1, &dir))
    };
    println!(
        "| run | binary | wall s | peak RSS MiB (sampled every 5 ms) | stored state read ms | source load ms | map ms | plan computed ms | planned actions |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let bins: Vec<String> = std::iter::once(bin()).chain(compare).collect();
    for (run, binary) in (1..=runs).flat_map(|r| bins.iter().map(move |b| (r, b))) {
        // Output to files: a pipe nobody reads while the child runs would
        // stall it once full.
        let (out_path, log_path) = (dir.join("plan.json"), dir.join("plan.log"));
        let file = |p: &Path| std::fs::File::create(p).expect("output file");
        let t = Instant::now();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(dir.join("scimsync.toml"))
            .args(["-vv", "--log-format", "json", "plan", "--format", "json"])
            .stdout(file(&out_path))
            .stderr(file(&log_path))
            .spawn()
            .expect("scimsync runs");
        let mut peak: f64 = 0.0;
        while child.try_wait().expect("wait").is_none() {
            peak = peak.max(child_peak_mib(child.id()));
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall = t.elapsed();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let stdout = std::fs::read(&out_path).unwrap_or_default();
        let field = |msg: &str, key: &str| -> String {
            log.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["fields"]["message"] == msg)
                .map(|v| v["fields"][key].to_string())
                .unwrap_or_else(|| "?".into())
        };
        let plan: Value = serde_json::from_slice(&stdout).unwrap_or(Value::Null);
        let actions = plan["actions"]
            .as_array()
            .map_or_else(|| "?".into(), |a| a.len().to_string());
        println!(
            "| {run} | {} | {:.2} | {peak:.0} | {} | {} | {} | {} | {actions} |",
            Path::new(binary).display(),
            secs(wall),
            field("stored state read", "ms"),
            field("source stage", "load_ms"),
            field("source stage", "map_ms"),
            field("plan computed", "ms"),
        );
    }
    match sizes {
        Some((groups, memberships)) => {
            println!("\n({users} users, {groups} groups, {memberships} memberships)");
        }
        None => println!("\n(the store in {})", dir.display()),
    }
}

/// Yesterday's sync of a generated directory, recorded in a store in `dir` as
/// a run records it, with today's source files beside it.
fn store_two_days(users: usize, d1: &Path, dir: &Path) -> (usize, usize) {
    let t = Instant::now();
    let (groups, memberships, _) = two_days(users, d1, dir);
    let base = "http://127.0.0.1:9/scim/directory/bench";
    let text = settings_for(dir, "", "").replace("{BASE}", base);
    std::fs::write(dir.join("scimsync.toml"), &text).expect("config");
    std::fs::write(dir.join("key"), "bench-key").expect("key");

    let (ulinks, glinks) = synced_links(d1);
    let mut st = Store::open(&dir.join("scimsync.db")).expect("store");
    let app = "bench".to_owned();
    for batch in ulinks.chunks(50_000) {
        let recs: Vec<Record> = batch
            .iter()
            .map(|l| Record::UserState {
                app: app.clone(),
                source_id: l.source_id.clone(),
                scim_id: l.scim_id.clone(),
                state: l.state.clone(),
            })
            .collect();
        st.apply(&recs).expect("user links");
    }
    for batch in glinks.chunks(5_000) {
        let mut recs = Vec::new();
        for g in batch {
            recs.push(Record::GroupLink {
                app: app.clone(),
                source_id: g.source_id.clone(),
                scim_id: g.scim_id.clone(),
                display_name: g.display_name.clone(),
            });
            recs.push(Record::Members {
                app: app.clone(),
                group: g.source_id.clone(),
                add: g.members.iter().cloned().collect(),
                remove: Vec::new(),
            });
        }
        st.apply(&recs).expect("group links");
    }
    st.set_reconciled(&app, base, store::now_ms())
        .expect("reconciled");
    eprintln!(
        "  {users}: generated and stored in {:.1}s",
        secs(t.elapsed())
    );
    (groups, memberships)
}
