//! Hostile answers: HTML error pages, empty and truncated bodies, a body over
//! the 32 MiB cap, JSON labelled `text/plain`, a SCIM Error inside a 200, an
//! answer slower than the timeout, a connection cut mid-body — from the
//! sandbox's fault rules, and from a raw TCP server for what an HTTP server
//! cannot be made to say (endless bodies, bytes that are not HTTP).
//!
//! The binary must never panic (exit 0, 1 or 2, never 101), and the outcome
//! row (or, for a list read, the exit-2 message) must carry the HTTP status
//! when there was one and say in words what went wrong.

use std::net::{Ipv4Addr, SocketAddr};

use scimsync::sandbox::{Fault, FaultRule, Route};
use scimsync::scim::{MAX_DETAIL, parse_error_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::{FAST, Output, TestEnv, user};

/// The client's body cap (`push::client::MAX_BODY`).
const CAP: usize = 32 * 1024 * 1024;

const HTML_502: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n";
const TRUNCATED: &str =
    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"4f1c","userName":"ada@exa"#;
const PLAIN_JSON_ERROR: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":"invalidValue","detail":"title is too long"}"#;
const ERROR_IN_200: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"Resource [USER]: with email[ada@example.com] already exists."}"#;

/// The hostile answers served through the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hostile {
    /// 502 with an nginx HTML page.
    HtmlPage,
    /// 500 with no body at all.
    Empty500,
    /// A success status with a JSON document cut short.
    Truncated,
    /// A success status with a body over the 32 MiB cap.
    Huge,
    /// A SCIM Error (400) labelled `text/plain`.
    TextPlainJson,
    /// A SCIM Error (status "409") inside an HTTP 200.
    ErrorIn200,
    /// No answer within the 1 s timeout.
    Slow,
    /// A 200 head, part of the body, then the connection drops.
    ResetMidBody,
}

fn status(status: u16, body: Option<String>, content_type: Option<&str>) -> Fault {
    Fault::Status {
        status,
        retry_after: None,
        body,
        content_type: content_type.map(str::to_owned),
    }
}

impl Hostile {
    /// The fault, with the success status `ok` where one is answered.
    fn fault(self, ok: u16) -> Fault {
        match self {
            Hostile::HtmlPage => status(502, Some(HTML_502.into()), Some("text/html")),
            Hostile::Empty500 => Fault::EmptyBody { status: 500 },
            Hostile::Truncated => status(ok, Some(TRUNCATED.into()), None),
            Hostile::Huge => status(ok, Some("x".repeat(CAP + 1024 * 1024)), None),
            Hostile::TextPlainJson => {
                status(400, Some(PLAIN_JSON_ERROR.into()), Some("text/plain"))
            }
            Hostile::ErrorIn200 => status(200, Some(ERROR_IN_200.into()), None),
            Hostile::Slow => Fault::Delay { millis: 1500 },
            Hostile::ResetMidBody => Fault::Reset,
        }
    }

    /// The HTTP status the report must carry (`ok`: the success status answered).
    fn status(self, ok: u16) -> Option<i64> {
        match self {
            Hostile::HtmlPage => Some(502),
            Hostile::Empty500 => Some(500),
            Hostile::Truncated | Hostile::Huge => Some(i64::from(ok)),
            Hostile::TextPlainJson => Some(400),
            // The SCIM status inside the body; the detail names the HTTP 200.
            Hostile::ErrorIn200 => Some(409),
            Hostile::Slow | Hostile::ResetMidBody => None,
        }
    }

    /// Words the report (row detail or exit-2 message) must contain.
    fn words(self) -> &'static [&'static str] {
        match self {
            Hostile::HtmlPage => &["502", "HTML page: 502 Bad Gateway"],
            Hostile::Empty500 => &["HTTP 500", "Internal Server Error"],
            Hostile::Truncated => &["unreadable body", "invalid JSON"],
            Hostile::Huge => &["unreadable body", "larger than 32 MiB"],
            Hostile::TextPlainJson => &["400", "title is too long"],
            Hostile::ErrorIn200 => &["409", "uniqueness", "inside an HTTP 200"],
            Hostile::Slow => &["timed out"],
            Hostile::ResetMidBody => &["connection reset"],
        }
    }
}

/// Words the list-read message must contain (`diagnose` words a timeout its own way).
fn list_words(h: Hostile) -> &'static [&'static str] {
    match h {
        Hostile::Slow => &["did not answer in time"],
        other => other.words(),
    }
}

/// Exit 0, 1 or 2; no panic message.
fn assert_sane(out: &Output, case: &str) {
    assert!(
        matches!(out.code, 0..=2),
        "{case}: exit code {}: {out:?}",
        out.code
    );
    assert!(!out.stderr.contains("panicked"), "{case}: {out:?}");
    assert!(!out.stdout.contains("panicked"), "{case}: {out:?}");
}

/// Markup must not reach the report.
fn assert_no_markup(text: &str, case: &str) {
    assert!(
        !text.contains("<html") && !text.contains("<body"),
        "{case}: raw HTML in {text:?}"
    );
}

/// The operations a hostile answer is served to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    CreateUser,
    PatchUser,
    ListUsers,
}

async fn env_for(h: Hostile) -> TestEnv {
    let mut env = TestEnv::new().await;
    let mut target = format!("{FAST}max_attempts = 2\n{}", env.fast_retry_connector());
    if h == Hostile::Slow {
        target.push_str("timeout = \"1s\"\n");
    }
    env.configure(&target, "");
    env
}

fn ada(title: &str) -> String {
    user(
        "1001",
        "Ada",
        "Lovelace",
        "ada@example.com",
        title,
        "Engineering",
    )
}

async fn run_case(h: Hostile, op: Op) {
    let case = format!("{h:?} on {op:?}");
    let env = env_for(h).await;
    env.write_users(&[ada("Engineer")]);
    let (route, ok, args) = match op {
        Op::CreateUser => (Route::CreateUser, 201, vec!["sync"]),
        Op::PatchUser | Op::ListUsers => {
            let out = env.run(&["sync"]).await;
            assert_eq!(out.code, 0, "{case}: the initial sync: {out:?}");
            env.write_users(&[ada("Countess")]);
            if op == Op::PatchUser {
                (Route::PatchUser, 200, vec!["sync"])
            } else {
                (Route::ListUsers, 200, vec!["sync", "--reconcile"])
            }
        }
    };
    // Every request on the route gets the hostile answer.
    env.sb().inject(FaultRule::new(Some(route), h.fault(ok), 0));
    let out = env.run(&args).await;
    assert_sane(&out, &case);

    if op == Op::ListUsers {
        assert_eq!(out.code, 2, "{case}: {out:?}");
        assert!(
            out.stderr.contains("reading users from the target"),
            "{case}: {out:?}"
        );
        for w in list_words(h) {
            assert!(out.stderr.contains(w), "{case}: no {w:?} in {out:?}");
        }
        if let Some(s) = h.status(ok) {
            assert!(
                out.stderr.contains(&format!("HTTP {s}")),
                "{case}: no HTTP {s}: {out:?}"
            );
        }
        assert_no_markup(&out.stderr, &case);
        assert_eq!(
            env.target_user("ada@example.com").unwrap()["title"],
            "Engineer",
            "{case}: nothing was written"
        );
    } else {
        let action = if op == Op::CreateUser {
            "create"
        } else {
            "update"
        };
        let rows = env.outcomes_where(&format!(
            "resource = 'user' AND action = '{action}' AND source_id = '1001' \
             AND run_id = (SELECT MAX(id) FROM runs)"
        ));
        assert_eq!(rows.len(), 1, "{case}: {:#?}", env.outcomes());
        let row = &rows[0];
        // A slow create may still have been done by the sandbox once its
        // delay ran out: the lookup that follows the time-out then finds and
        // adopts the account. Either way it is never duplicated.
        let adopted_late = op == Op::CreateUser
            && h == Hostile::Slow
            && row.outcome == "applied"
            && row
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("in doubt"));
        if !adopted_late {
            assert_eq!(out.code, 1, "{case}: {out:?}");
            assert_eq!(row.outcome, "failed", "{case}: {row:#?}");
            assert_eq!(row.http_status, h.status(ok), "{case}: {row:#?}");
            let detail = row.detail.as_deref().unwrap_or_default();
            for w in h.words() {
                assert!(detail.contains(w), "{case}: no {w:?} in {row:#?}");
            }
            assert_no_markup(detail, &case);
            assert!(
                detail.chars().count() <= 2 * MAX_DETAIL,
                "{case}: a detail of {} chars",
                detail.chars().count()
            );
            if h == Hostile::TextPlainJson {
                assert_eq!(row.scim_type.as_deref(), Some("invalidValue"), "{row:#?}");
            }
            let run = env.runs().pop().unwrap();
            assert_eq!(run.status, "partial", "{case}: {run:?}");
            assert!(run.failed >= 1, "{case}: {run:?}");
        }
    }
    // The report commands read what was recorded without trouble.
    for args in [
        &["report"][..],
        &["report", "--format", "json"],
        &["report", "--format", "csv"],
        &["report", "runs"],
    ] {
        let out = env.run(args).await;
        assert_sane(&out, &case);
        assert_eq!(out.code, 0, "{case}: {args:?}: {out:?}");
    }

    // Once the target behaves, the next run converges without duplicates.
    env.sb().clear_faults();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{case}: the run after: {out:?}");
    env.assert_no_duplicates(&case);
    let want = if op == Op::CreateUser {
        ada("Engineer")
    } else {
        ada("Countess")
    };
    env.assert_state(&[want], &[], &case);
}

macro_rules! hostile_cases {
    ($($name:ident => $h:expr,)*) => {$(
        mod $name {
            use super::{Hostile, Op, run_case};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_create_user() {
                run_case($h, Op::CreateUser).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_patch_user() {
                run_case($h, Op::PatchUser).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_list_users() {
                run_case($h, Op::ListUsers).await;
            }
        }
    )*};
}

hostile_cases! {
    html_error_page => Hostile::HtmlPage,
    empty_500 => Hostile::Empty500,
    truncated_json => Hostile::Truncated,
    huge_body => Hostile::Huge,
    text_plain_json => Hostile::TextPlainJson,
    scim_error_in_200 => Hostile::ErrorIn200,
    slower_than_the_timeout => Hostile::Slow,
    reset_mid_body => Hostile::ResetMidBody,
}

// ---- unit level: the error-body parser on the same bodies ----------------------------

#[test]
fn parse_error_body_on_every_hostile_body() {
    let b = parse_error_body(HTML_502.as_bytes());
    assert_eq!(b.detail, "HTML page: 502 Bad Gateway");
    assert_eq!((b.status, b.scim_type, b.trace_id), (None, None, None));

    let b = parse_error_body(b"");
    assert_eq!(b.detail, "");
    assert_eq!(b.status, None);

    let b = parse_error_body(TRUNCATED.as_bytes());
    assert_eq!(b.status, None);
    assert!(b.detail.starts_with(r#"{"schemas""#), "{b:?}");

    let huge = "x".repeat(CAP + 1);
    let b = parse_error_body(huge.as_bytes());
    assert!(
        b.detail.chars().count() <= MAX_DETAIL + 1,
        "{}",
        b.detail.len()
    );
    assert!(b.detail.ends_with('…'));

    let b = parse_error_body(PLAIN_JSON_ERROR.as_bytes());
    assert_eq!(b.status, Some(400));
    assert_eq!(b.scim_type.as_deref(), Some("invalidValue"));
    assert_eq!(b.detail, "title is too long");

    let b = parse_error_body(ERROR_IN_200.as_bytes());
    assert_eq!(b.status, Some(409));
    assert_eq!(b.scim_type.as_deref(), Some("uniqueness"));
    assert!(b.detail.contains("already exists"));

    // What a reset leaves behind: a fragment of a document.
    let b = parse_error_body(br#"{"schemas":["urn:ietf:params:scim:api:"#);
    assert_eq!(b.status, None);
    assert!(!b.detail.is_empty());

    // An HTML page without a title, and a huge one: cut, markup or not.
    let b = parse_error_body(b"<html><body><h1>Service Unavailable</h1></body></html>");
    assert!(b.detail.starts_with("HTML page: "), "{b:?}");
    let page = format!("<html><body>{}</body></html>", "y".repeat(CAP + 1));
    let b = parse_error_body(page.as_bytes());
    assert!(b.detail.chars().count() <= MAX_DETAIL + 1);
    // Not UTF-8 at all.
    let b = parse_error_body(&[0xff, 0xfe, 0x00, 0xc3]);
    assert!(b.detail.chars().count() <= 4);
}

// ---- a raw TCP server: answers no HTTP framework would send -------------------------------

/// What the raw server answers to every request.
#[derive(Clone, Copy, Debug)]
enum Raw {
    /// A 200 announcing 40 MiB and streaming it (the client stops at 32 MiB).
    EndlessBody,
    /// A 200 announcing 4096 bytes, sending 40, then closing.
    CutShort,
    /// Bytes that are not HTTP.
    NotHttp,
    /// Closing without a word.
    Silent,
    /// A response head larger than any client accepts.
    HugeHead,
}

/// Read a request head (bounded) and ignore it.
async fn read_head(sock: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    while seen.len() < 1024 * 1024 {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    return;
                }
            }
        }
    }
}

async fn answer(mut sock: TcpStream, raw: Raw) {
    read_head(&mut sock).await;
    match raw {
        Raw::EndlessBody => {
            let total = 40 * 1024 * 1024;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {total}\r\n\r\n"
            );
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
        }
        Raw::CutShort => {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: 4096\r\n\r\n{\"schemas\":[\"urn:ietf:params:scim:api:",
                )
                .await;
        }
        Raw::NotHttp => {
            let _ = sock
                .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 not http at all\r\n\r\n")
                .await;
        }
        Raw::Silent => {}
        Raw::HugeHead => {
            let mut head = b"HTTP/1.1 200 OK\r\nX-Padding: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
            head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\n{}");
            let _ = sock.write_all(&head).await;
        }
    }
    let _ = sock.shutdown().await;
}

/// A server on 127.0.0.1 answering every connection with `raw`.
async fn raw_server(raw: Raw) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(answer(sock, raw));
        }
    });
    (addr, task)
}

/// `check` and a first `sync` (a full read) against the raw server.
async fn raw_case(raw: Raw, words: &[&str], status: Option<u16>) {
    let case = format!("{raw:?}");
    let (addr, task) = raw_server(raw).await;
    let mut env = TestEnv::new().await;
    let target = format!(
        "{FAST}max_attempts = 2\ntimeout = \"5s\"\n{}",
        env.fast_retry_connector()
    );
    env.configure(&target, "");
    env.write_users(&[ada("Engineer")]);
    let url = format!("http://{addr}/scim/directory/raw");
    env.write("scimsync.toml", &env.config_text_for("raw", &url));

    let out = env.run(&["check"]).await;
    assert_sane(&out, &case);
    assert_eq!(out.code, 2, "{case}: {out:?}");
    assert!(
        out.stdout.contains("FAIL  GET /ServiceProviderConfig"),
        "{case}: {out:?}"
    );
    for w in words {
        assert!(out.stdout.contains(w), "{case}: check: no {w:?}: {out:?}");
    }

    let out = env.run(&["sync"]).await;
    assert_sane(&out, &case);
    assert_eq!(out.code, 2, "{case}: {out:?}");
    assert!(
        out.stderr.contains("reading users from the target"),
        "{case}: {out:?}"
    );
    for w in words {
        assert!(out.stderr.contains(w), "{case}: sync: no {w:?}: {out:?}");
    }
    if let Some(s) = status {
        assert!(out.stderr.contains(&format!("HTTP {s}")), "{case}: {out:?}");
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_endless_body_is_cut_at_32_mib() {
    raw_case(
        Raw::EndlessBody,
        &["unreadable body", "larger than 32 MiB", "after 2 attempts"],
        Some(200),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_body_cut_short() {
    raw_case(
        Raw::CutShort,
        &["connection reset", "after 2 attempts"],
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_that_are_not_http() {
    raw_case(Raw::NotHttp, &["request failed", "after 2 attempts"], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_connection_closed_without_an_answer() {
    raw_case(Raw::Silent, &["connection reset", "after 2 attempts"], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_response_head_too_large() {
    raw_case(Raw::HugeHead, &["request failed", "after 2 attempts"], None).await;
}
