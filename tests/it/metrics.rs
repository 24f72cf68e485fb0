//! The Prometheus metrics file written after each run.

use std::collections::{BTreeMap, BTreeSet};

use scimsync::sandbox::{FaultRule, Route};

use crate::common::{FAST, TestEnv, five_users};

/// A sample: metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// A strict reader of the text exposition format (the subset scimsync
/// writes): `# HELP name text`, `# TYPE name gauge|counter|...`, then
/// `name{label="value",...} number` lines; label values with `\\`, `\"`
/// and `\n` escapes. Panics on any line it cannot read, a sample without a
/// TYPE before it, a TYPE given twice, or the same series twice.
fn parse_exposition(text: &str) -> BTreeMap<Series, f64> {
    fn name_ok(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    assert!(text.ends_with('\n'), "the file ends with a newline");
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name_ok(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name_ok(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line: {line:?}"
        );
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_at(line.find(' ').expect("a value")),
        };
        assert!(name_ok(name), "{line}");
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        let mut labels = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                let mut key = String::new();
                for c in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert!(name_ok(&key), "label name {key:?} in {line}");
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value") {
                        '\\' => match chars.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        '"' => break,
                        '\n' => panic!("raw newline in {line}"),
                        c => value.push(c),
                    }
                }
                assert!(labels.insert(key, value).is_none(), "label twice: {line}");
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => panic!("expected , or }} got {other:?} in {line}"),
                }
            }
        }
        assert_eq!(chars.next(), Some(' '), "{line}");
        let value: String = chars.collect();
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        assert!(
            samples.insert((name.to_owned(), labels), v).is_none(),
            "series twice: {line}"
        );
    }
    assert_eq!(typed, helped, "every family has HELP and TYPE");
    samples
}

fn get(m: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m.get(&(name.to_owned(), labels)).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_writes_a_valid_metrics_file() {
    let mut env = TestEnv::new().await;
    env.set_extra("[metrics]\nfile = \"metrics/scimsync.prom\"\n");
    std::fs::create_dir(env.path("metrics")).unwrap();
    env.write_users(&five_users());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(env.path("metrics/scimsync.prom")).unwrap();
    let m = parse_exposition(&text);
    let app = [("app", "test")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = app.to_vec();
        l.extend_from_slice(extra);
        l
    };
    assert_eq!(
        get(
            &m,
            "scimsync_run_actions",
            &with(&[
                ("resource", "user"),
                ("action", "create"),
                ("outcome", "applied")
            ])
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        get(
            &m,
            "scimsync_run_actions",
            &with(&[
                ("resource", "membership"),
                ("action", "add_member"),
                ("outcome", "applied")
            ])
        ),
        Some(5.0),
        "{text}"
    );
    let c = env.sb().counts();
    assert_eq!(
        get(&m, "scimsync_run_http_responses", &with(&[("code", "201")])),
        Some((c.get(Route::CreateUser) + c.get(Route::CreateGroup)) as f64),
        "{text}"
    );
    assert_eq!(get(&m, "scimsync_run_requests", &app), Some(c.total as f64));
    assert_eq!(get(&m, "scimsync_run_throttled", &app), Some(0.0));
    assert_eq!(
        get(&m, "scimsync_run_status", &with(&[("status", "succeeded")])),
        Some(1.0)
    );
    assert_eq!(
        get(&m, "scimsync_run_status", &with(&[("status", "failed")])),
        Some(0.0)
    );
    assert_eq!(get(&m, "scimsync_run_id", &app), Some(1.0));
    let last_run = get(&m, "scimsync_last_run_timestamp_seconds", &app).unwrap();
    let last_ok = get(&m, "scimsync_last_success_timestamp_seconds", &app).unwrap();
    assert_eq!(last_run, last_ok, "{text}");
    assert!(get(&m, "scimsync_run_duration_seconds", &app).is_some());
    // Nothing but the file in its directory (written via rename).
    assert_eq!(std::fs::read_dir(env.path("metrics")).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_failures_are_counted_and_the_last_success_is_kept() {
    let mut env = TestEnv::new().await;
    env.configure(&format!("{FAST}max_attempts = 2\n"), "");
    env.write_users(&five_users());
    assert_eq!(env.run(&["sync", "--metrics-file", "m.prom"]).await.code, 0);
    let first = parse_exposition(&std::fs::read_to_string(env.path("m.prom")).unwrap());
    let app = [("app", "test")];
    let ok_at = get(&first, "scimsync_last_success_timestamp_seconds", &app).unwrap();

    // Ada's title changes; her PATCH meets a 429 and then 503s until the
    // attempts run out: the run fails partly.
    let mut rows = five_users();
    rows[0] = rows[0].replace("Engineer", "Principal Engineer");
    env.write_users(&rows);
    env.sb()
        .inject(FaultRule::status(Some(Route::PatchUser), 429, 1));
    env.sb()
        .inject(FaultRule::status(Some(Route::PatchUser), 503, 5));
    let out = env.run(&["sync", "--metrics-file", "m.prom"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let text = std::fs::read_to_string(env.path("m.prom")).unwrap();
    let m = parse_exposition(&text);
    let l = |k: &'static str, v: &'static str| vec![("app", "test"), (k, v)];
    assert_eq!(
        get(&m, "scimsync_run_status", &l("status", "partial")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(get(&m, "scimsync_run_throttled", &app), Some(1.0), "{text}");
    assert_eq!(get(&m, "scimsync_run_retries", &app), Some(1.0), "{text}");
    assert_eq!(
        get(&m, "scimsync_run_http_responses", &l("code", "429")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(&m, "scimsync_run_http_responses", &l("code", "503")),
        Some(1.0),
        "{text}"
    );
    let mut failed = vec![("app", "test")];
    failed.extend([
        ("resource", "user"),
        ("action", "update"),
        ("outcome", "failed"),
    ]);
    assert_eq!(
        get(&m, "scimsync_run_actions", &failed),
        Some(1.0),
        "{text}"
    );
    // The last success is still the first run's.
    assert_eq!(
        get(&m, "scimsync_last_success_timestamp_seconds", &app),
        Some(ok_at),
        "{text}"
    );
    assert!(get(&m, "scimsync_last_run_timestamp_seconds", &app).unwrap() >= ok_at);
}
