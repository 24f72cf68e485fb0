//! The API key never leaves the `Authorization` header: not on stdout or
//! stderr of any command at the highest verbosity (text and JSON logs,
//! `SCIMSYNC_LOG=trace` turning on every crate's trace output), not in the
//! SQLite store (nor its -wal/-shm files, nor anything else scimsync writes
//! next to it), not in `--help` — in the clear or in a few obvious encodings.

use scimsync::sandbox::{Fault, FaultRule, Route, SandboxConfig};

use crate::common::{FAST, Output, TestEnv, five_users, user};

/// The key the sandbox accepts and scimsync sends.
const KEY: &str = "SECRETKEY-7f3a9c-DO-NOT-LEAK";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strings that betray the key: the key itself and its distinctive parts
/// (case-insensitive), `Bearer <key>`, hex, and base64 of the key as it would
/// appear inside any longer base64 text (three alignments, the edges that
/// depend on the neighbouring bytes cut off), standard and URL-safe alphabet.
fn needles() -> Vec<Needle> {
    let plain = |t: String| Needle {
        text: t,
        any_case: true,
    };
    let exact = |t: String| Needle {
        text: t,
        any_case: false,
    };
    let mut n = vec![
        plain(KEY.to_owned()),
        plain("SECRETKEY".to_owned()),
        plain("7f3a9c-DO-NOT".to_owned()),
        plain("DO-NOT-LEAK".to_owned()),
        plain(format!("Bearer {KEY}")),
        exact(KEY.bytes().map(|b| format!("{b:02x}")).collect()),
        exact(KEY.bytes().map(|b| format!("{b:02X}")).collect()),
        exact(base64(KEY.as_bytes())),
        exact(base64(format!("Bearer {KEY}").as_bytes())),
    ];
    for shift in 0..3 {
        let mut bytes = vec![0u8; shift];
        bytes.extend_from_slice(KEY.as_bytes());
        let enc = base64(&bytes);
        // Characters 0..=shift depend on the prefix; the last 4 on the padding.
        let skip = if shift == 0 { 0 } else { shift + 1 };
        let stable = &enc[skip..enc.len() - 4];
        n.push(exact(stable.to_owned()));
        n.push(exact(stable.replace('+', "-").replace('/', "_")));
    }
    n
}

/// A string that betrays the key.
struct Needle {
    text: String,
    /// Matched ignoring ASCII case (the key's own text); encodings match exactly.
    any_case: bool,
}

/// Scans text and files for the needles and counts what it looked at.
struct Scanner {
    needles: Vec<Needle>,
    blobs: usize,
    bytes: usize,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            needles: needles(),
            blobs: 0,
            bytes: 0,
        }
    }

    fn bytes(&mut self, what: &str, data: &[u8]) {
        self.blobs += 1;
        self.bytes += data.len();
        let lower = data.to_ascii_lowercase();
        for n in &self.needles {
            let hit = if n.any_case {
                find(&lower, n.text.to_ascii_lowercase().as_bytes())
            } else {
                find(data, n.text.as_bytes())
            };
            if let Some(at) = hit {
                let from = at.saturating_sub(80);
                let to = (at + n.text.len() + 80).min(data.len());
                panic!(
                    "the key leaked ({:?}) in {what} at byte {at}: …{}…",
                    n.text,
                    String::from_utf8_lossy(&data[from..to])
                );
            }
        }
    }

    fn output(&mut self, what: &str, out: &Output) {
        assert!(!out.stderr.contains("panicked"), "{what}: {out:?}");
        self.bytes(&format!("{what}: stdout"), out.stdout.as_bytes());
        self.bytes(&format!("{what}: stderr"), out.stderr.as_bytes());
    }

    /// Every file in the test directory except the key file itself: the
    /// store, its -wal/-shm/-journal, the lock file, anything else written.
    fn files(&mut self, env: &TestEnv, what: &str) {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(env.dir.path()).expect("the test directory") {
            let entry = entry.expect("a directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "key" || !entry.file_type().expect("a file type").is_file() {
                continue;
            }
            let data = std::fs::read(entry.path()).expect("a readable file");
            self.bytes(&format!("{what}: file {name}"), &data);
            names.push(name);
        }
        assert!(
            names.iter().any(|n| n == "scimsync.db"),
            "{what}: no store among {names:?}"
        );
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How verbose, and where the key comes from.
#[derive(Clone, Copy, Debug)]
struct Mode {
    json_logs: bool,
    trace_env: bool,
    key_from_env: bool,
}

async fn env_for(mode: Mode) -> TestEnv {
    let mut env = TestEnv::with_sandbox(SandboxConfig {
        api_key: KEY.to_owned(),
        ..SandboxConfig::default()
    })
    .await;
    let target = format!("{FAST}max_attempts = 3\n{}", env.fast_retry_connector());
    env.configure(&target, "");
    if mode.key_from_env {
        std::fs::remove_file(env.path("key")).expect("the key file");
        let text = env.config_text().replace(
            "api_key_file = \"key\"",
            "api_key_env = \"SCIMSYNC_API_KEY\"",
        );
        env.write("scimsync.toml", &text);
    }
    env
}

/// Run one command in `mode`, scan its output, and return it.
async fn run(env: &TestEnv, mode: Mode, scan: &mut Scanner, args: &[&str]) -> Output {
    let mut full: Vec<&str> = vec!["-vvv"];
    if mode.json_logs {
        full.extend(["--log-format", "json"]);
    }
    full.extend_from_slice(args);
    let mut vars: Vec<(&str, &str)> = Vec::new();
    if mode.trace_env {
        vars.push(("SCIMSYNC_LOG", "trace"));
    }
    if mode.key_from_env {
        vars.push(("SCIMSYNC_API_KEY", KEY));
    }
    let out = env.run_env(&full, &vars).await;
    scan.output(&format!("{mode:?} {args:?}"), &out);
    out
}

async fn full_sync_leaks_nothing(mode: Mode) {
    let env = env_for(mode).await;
    let mut scan = Scanner::new();
    env.write_users(&five_users());

    let out = run(&env, mode, &mut scan, &["check"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    for args in [&["plan"][..], &["plan", "--format", "json"]] {
        let out = run(&env, mode, &mut scan, args).await;
        assert_eq!(out.code, 0, "{out:?}");
    }
    // The logs really are at their most verbose: the requests are traced.
    assert!(
        out.stderr.contains("scim request"),
        "{mode:?}: no request log: {out:?}"
    );
    if mode.json_logs {
        assert!(
            out.stderr
                .lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
            "{out:?}"
        );
    }
    if mode.trace_env {
        assert!(
            // hyper's own trace lines (connection pool, handshake).
            out.stderr.contains("TRACE")
                && (out.stderr.contains("idle connection") || out.stderr.contains("handshake")),
            "{mode:?}: no trace output: {out:?}"
        );
    }

    // Creates and memberships, with a 429 on the way.
    env.sb().inject(FaultRule::new(
        Some(Route::CreateUser),
        Fault::Status {
            status: 429,
            retry_after: None,
            body: None,
            content_type: None,
        },
        1,
    ));
    let out = run(&env, mode, &mut scan, &["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(env.sb().counts().throttled, 1);
    assert_eq!(env.sb().users().len(), 5);

    // An update, a disable, membership changes.
    let mut rows = five_users();
    rows[0] = rows[0].replace(",Engineer,", ",Countess,");
    rows.retain(|r| !r.starts_with("1004,"));
    rows[3] = rows[3].replace(",Engineering", ",Research");
    rows.push(user(
        "1006",
        "Margaret",
        "Hamilton",
        "margaret@example.com",
        "Director",
        "Engineering;Research",
    ));
    env.write_users(&rows);
    let out = run(&env, mode, &mut scan, &["plan", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(&env, mode, &mut scan, &["sync", "--format", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["status"], "succeeded", "{out:?}");
    assert_eq!(
        env.target_user("katherine@example.com").unwrap()["active"],
        false
    );
    assert_eq!(
        env.member_names("Research"),
        [
            "alan@example.com",
            "grace@example.com",
            "linus@example.com",
            "margaret@example.com"
        ]
    );

    // A separate run refused with 401 (the key itself is still the real one).
    rows[1] = rows[1].replace(",Manager,", ",Admiral,");
    env.write_users(&rows);
    env.sb().inject(FaultRule::new(
        Some(Route::PatchUser),
        Fault::Status {
            status: 401,
            retry_after: None,
            body: Some(r#"{"error":"Unauthorized","traceId":"7e1d"}"#.into()),
            content_type: Some("application/json".into()),
        },
        1,
    ));
    let out = run(&env, mode, &mut scan, &["sync"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("401"), "{out:?}");
    let out = run(&env, mode, &mut scan, &["sync", "--reconcile"]).await;
    assert_eq!(out.code, 0, "{out:?}");

    for args in [
        &["report"][..],
        &["report", "--format", "table"],
        &["report", "--format", "json"],
        &["report", "--format", "csv"],
        &["report", "--outcome", "failed"],
        &["report", "--user", "ada@example.com", "--format", "json"],
        &["report", "runs"],
        &["report", "runs", "--format", "json"],
        &["report", "runs", "--format", "csv"],
    ] {
        let out = run(&env, mode, &mut scan, args).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    }
    let runs = env.runs();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs[2].status, "failed", "{runs:?}");

    // The commands added since: saved plans, import, links, other report views.
    for args in [
        &["plan", "--out", "saved-plan.json"][..],
        &["apply", "saved-plan.json"],
        &["import", "--export", "accounts.csv"],
        &["links"],
        &["links", "--format", "json"],
        &["report", "failures"],
        &["report", "user", "ada@example.com"],
        &["report", "html", "--out", "report.html"],
        &["sync", "--metrics-file", "metrics.prom"],
    ] {
        let out = run(&env, mode, &mut scan, args).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    }

    scan.files(&env, &format!("{mode:?}"));
    // 26 commands (two streams each) and at least the store.
    assert!(scan.blobs > 26 * 2, "{}", scan.blobs);
    assert!(scan.bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_at_trace_level() {
    full_sync_leaks_nothing(Mode {
        json_logs: false,
        trace_env: false,
        key_from_env: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_at_trace_level() {
    full_sync_leaks_nothing(Mode {
        json_logs: true,
        trace_env: false,
        key_from_env: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crate_traced_key_from_the_environment() {
    full_sync_leaks_nothing(Mode {
        json_logs: false,
        trace_env: true,
        key_from_env: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crate_traced_as_json() {
    full_sync_leaks_nothing(Mode {
        json_logs: true,
        trace_env: true,
        key_from_env: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_never_shows_the_key_from_the_environment() {
    let env = TestEnv::new().await;
    let mut scan = Scanner::new();
    let commands: [&[&str]; 8] = [
        &[],
        &["check"],
        &["plan"],
        &["sync"],
        &["report"],
        &["report", "runs"],
        &["sandbox"],
        &["demo"],
    ];
    let config = env.config_path().display().to_string();
    let vars = [
        ("SCIMSYNC_API_KEY", KEY),
        ("SCIMSYNC_SANDBOX_KEY", KEY),
        ("SCIMSYNC_CONFIG", config.as_str()),
        ("SCIMSYNC_LOG", "trace"),
    ];
    for cmd in commands {
        for flag in ["--help", "-h"] {
            let mut args: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
            args.push(flag.to_owned());
            let out = crate::common::run_binary_env(env.dir.path(), args.clone(), &vars).await;
            assert_eq!(out.code, 0, "{args:?}: {out:?}");
            assert!(out.stdout.contains("Usage"), "{args:?}: {out:?}");
            scan.output(&format!("{args:?}"), &out);
        }
    }
    for args in [
        &["help"][..],
        &["help", "sync"],
        &["help", "report", "runs"],
        &["--version"],
    ] {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let out = crate::common::run_binary_env(env.dir.path(), args.clone(), &vars).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        scan.output(&format!("{args:?}"), &out);
    }
    assert_eq!(scan.blobs, (8 * 2 + 4) * 2);
}

#[test]
fn the_needles_find_what_they_should() {
    assert_eq!(base64(b"Man"), "TWFu");
    assert_eq!(base64(b"Ma"), "TWE=");
    assert_eq!(base64(b"M"), "TQ==");
    let mut scan = Scanner::new();
    scan.bytes("clean", b"Authorization: Bearer [REDACTED]");
    for leaked in [
        format!("key={KEY}"),
        format!("authorization: bearer {}", KEY.to_lowercase()),
        format!("basic {}", base64(format!("user:{KEY}").as_bytes())),
        format!("x{}", base64(format!("ab{KEY}").as_bytes())),
        format!(
            "h={}",
            KEY.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        "token SECRETKEY-7f3a…".to_owned(),
    ] {
        let caught = std::panic::catch_unwind(|| {
            Scanner::new().bytes("leaky", leaked.as_bytes());
        });
        assert!(caught.is_err(), "not caught: {leaked}");
    }
}
