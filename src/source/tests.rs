//! Loader tests over the malformed corpus in `fixtures/malformed/` (documented
//! file by file in its README) plus a few generated inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::*;
use crate::config::{GroupSettings, MappingConfig, ScopeConfig};
use crate::connector::Profile;
use crate::mapping::{Mapping, desired_state};

// --- helpers ------------------------------------------------------------------

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/malformed")
}

fn fixture(name: &str) -> PathBuf {
    corpus().join(name)
}

fn settings(kind: SourceKind, users: PathBuf, groups: Option<PathBuf>) -> SourceSettings {
    SourceSettings {
        kind,
        users,
        groups,
        delimiter: b',',
        list_separator: ";".into(),
        columns: BTreeMap::new(),
        ldap: None,
    }
}

fn csv_users(name: &str) -> SourceSettings {
    settings(SourceKind::Csv, fixture(name), None)
}

fn json_users(name: &str) -> SourceSettings {
    settings(SourceKind::Json, fixture(name), None)
}

/// A valid people file (ids 1, 2, 3) in a temp dir, for group-file tests.
fn valid_users(dir: &tempfile::TempDir, kind: SourceKind) -> PathBuf {
    match kind {
        SourceKind::Csv => {
            let p = dir.path().join("users.csv");
            std::fs::write(&p, "id,email\n1,ann@x.org\n2,bo@x.org\n3,cy@x.org\n").unwrap();
            p
        }
        SourceKind::Json => {
            let p = dir.path().join("users.json");
            std::fs::write(&p, r#"[{"id": "1"}, {"id": "2"}, {"id": "3"}]"#).unwrap();
            p
        }
        SourceKind::Ldap => unreachable!("file tests only"),
    }
}

fn csv_groups(dir: &tempfile::TempDir, name: &str) -> SourceSettings {
    settings(
        SourceKind::Csv,
        valid_users(dir, SourceKind::Csv),
        Some(fixture(name)),
    )
}

fn ok(s: &SourceSettings) -> Snapshot {
    match load(s) {
        Ok(snap) => snap,
        Err(e) => panic!("{} should load: {e}", s.users.display()),
    }
}

/// Assert a file-level format error on `file` whose message contains `fragment`.
fn assert_format_error(s: &SourceSettings, file: &str, fragment: &str) {
    match load(s) {
        Err(SourceError::Format { path, message }) => {
            assert_eq!(path.file_name().and_then(|f| f.to_str()), Some(file));
            assert!(
                message.contains(fragment),
                "{file}: `{message}` lacks `{fragment}`"
            );
        }
        Err(other) => panic!("{file}: expected a format error, got {other}"),
        Ok(snap) => panic!(
            "{file}: expected a format error, loaded {} users",
            snap.users.len()
        ),
    }
}

fn user_ids(snap: &Snapshot) -> Vec<&str> {
    snap.users.iter().map(|u| u.id.as_str()).collect()
}

fn user_lines(snap: &Snapshot) -> Vec<(&str, &str)> {
    snap.users
        .iter()
        .map(|u| (u.id.as_str(), u.origin.location.as_str()))
        .collect()
}

/// Assert the exact rejects: (location, held source id, reason fragment), in
/// order, all of `kind` and from `file`.
fn assert_rejects(
    snap: &Snapshot,
    kind: RecordKind,
    file: &Path,
    expected: &[(&str, Option<&str>, &str)],
) {
    let got: Vec<(&str, Option<&str>, &str)> = snap
        .rejects
        .iter()
        .map(|r| {
            (
                r.origin.location.as_str(),
                r.source_id.as_ref().map(SourceId::as_str),
                r.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "rejects: {got:#?}");
    for (r, (loc, id, fragment)) in snap.rejects.iter().zip(expected) {
        assert_eq!(r.kind, kind, "{r:?}");
        assert_eq!(r.origin.file, file.display().to_string());
        assert_eq!(r.origin.location, *loc, "{r:?}");
        assert_eq!(r.source_id.as_ref().map(SourceId::as_str), *id, "{r:?}");
        assert!(
            r.reason.contains(fragment),
            "{loc}: `{}` lacks `{fragment}`",
            r.reason
        );
    }
}

fn atlassian() -> Mapping {
    let p = Profile::load("atlassian", Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    Mapping::compile(&p, &MappingConfig::default(), &ScopeConfig::default()).unwrap()
}

fn all_groups() -> GroupSettings {
    GroupSettings {
        push: None,
        adopt_existing: true,
        ..GroupSettings::default()
    }
}

// --- the corpus is complete and documented ---------------------------------------

/// Every file of the corpus, each tested below.
const CORPUS: &[&str] = &[
    "groups_bad_members.json",
    "groups_control_char_name.csv",
    "groups_duplicate_column.csv",
    "groups_duplicate_names_case.csv",
    "groups_empty_name.csv",
    "groups_id_two_names.csv",
    "groups_missing_group_column.csv",
    "groups_non_utf8.csv",
    "groups_ragged.csv",
    "users_bad_active.csv",
    "users_bad_groups_list.json",
    "users_blank_lines.csv",
    "users_bom.csv",
    "users_bom.json",
    "users_bom_only.csv",
    "users_crlf.csv",
    "users_duplicate_column.csv",
    "users_duplicate_ids.csv",
    "users_duplicate_ids.json",
    "users_duplicate_keys.json",
    "users_duplicate_usernames_case.csv",
    "users_empty.csv",
    "users_empty.json",
    "users_header_only.csv",
    "users_invalid_emails.csv",
    "users_missing_id_column.csv",
    "users_missing_id_value.csv",
    "users_no_users_key.json",
    "users_non_utf8.json",
    "users_non_utf8_header.csv",
    "users_non_utf8_value.csv",
    "users_not_array.json",
    "users_nulls.json",
    "users_quote_inside_field.csv",
    "users_quoted_multiline.csv",
    "users_ragged_long.csv",
    "users_ragged_short.csv",
    "users_scalar_document.json",
    "users_stray_quote_pair.csv",
    "users_text_after_closing_quote.csv",
    "users_trailing_delimiter.csv",
    "users_trailing_garbage.json",
    "users_truncated.json",
    "users_unknown_key.json",
    "users_unterminated_quote.csv",
    "users_unterminated_quote_last_field.csv",
    "users_wrong_delimiter.csv",
    "users_wrong_types.json",
];

#[test]
fn corpus_is_complete_and_documented() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md")
        .collect();
    let listed: BTreeSet<String> = CORPUS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(on_disk, listed, "fixtures/malformed and CORPUS differ");
    assert!(CORPUS.len() >= 30);
    let readme = std::fs::read_to_string(corpus().join("README.md")).unwrap();
    for name in CORPUS {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in README.md"
        );
    }
}

#[test]
fn binary_fixtures_still_hold_their_bytes() {
    // Guard against an editor "fixing" the files.
    for name in [
        "users_non_utf8_value.csv",
        "users_non_utf8_header.csv",
        "users_non_utf8.json",
        "groups_non_utf8.csv",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "{name} is valid UTF-8"
        );
    }
    for name in ["users_bom.csv", "users_bom.json", "users_bom_only.csv"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "{name} lost its BOM");
    }
    let crlf = std::fs::read(fixture("users_crlf.csv")).unwrap();
    assert_eq!(
        crlf.iter().filter(|b| **b == b'\n').count(),
        crlf.windows(2).filter(|w| w == b"\r\n").count()
    );
    assert_eq!(
        std::fs::metadata(fixture("users_empty.csv")).unwrap().len(),
        0
    );
    assert_eq!(
        std::fs::metadata(fixture("users_empty.json"))
            .unwrap()
            .len(),
        0
    );
}

// --- CSV users: file-level failures ------------------------------------------------

#[test]
fn empty_csv_is_a_file_error() {
    assert_format_error(
        &csv_users("users_empty.csv"),
        "users_empty.csv",
        "the file is empty: no header row",
    );
    assert_format_error(
        &csv_users("users_bom_only.csv"),
        "users_bom_only.csv",
        "the file is empty: no header row",
    );
}

#[test]
fn missing_id_column_is_a_file_error() {
    assert_format_error(
        &csv_users("users_missing_id_column.csv"),
        "users_missing_id_column.csv",
        "line 1: no `id` column; every person needs a stable id",
    );
    // With a configured id column the message names it.
    let mut s = csv_users("users_missing_id_column.csv");
    s.columns.insert("id".into(), "employee_no".into());
    assert_format_error(
        &s,
        "users_missing_id_column.csv",
        "no `id` column (configured as `employee_no`)",
    );
}

#[test]
fn wrong_delimiter_is_a_file_error_and_the_right_one_loads() {
    assert_format_error(
        &csv_users("users_wrong_delimiter.csv"),
        "users_wrong_delimiter.csv",
        "line 1: no `id` column",
    );
    let mut s = csv_users("users_wrong_delimiter.csv");
    s.delimiter = b';';
    let snap = ok(&s);
    assert_eq!(user_ids(&snap), ["1"]);
    assert_eq!(snap.users[0].field("email"), "ann@x.org");
}

#[test]
fn duplicate_column_is_a_file_error() {
    // `email` and `Email` are the same field.
    assert_format_error(
        &csv_users("users_duplicate_column.csv"),
        "users_duplicate_column.csv",
        "line 1: column `email` appears twice",
    );
}

#[test]
fn non_utf8_header_is_a_file_error() {
    assert_format_error(
        &csv_users("users_non_utf8_header.csv"),
        "users_non_utf8_header.csv",
        "line 1: header 3 is not valid UTF-8",
    );
}

#[test]
fn unterminated_quote_is_a_file_error() {
    // Without the check the open quote on line 3 swallows users 3 and 4,
    // who would then look deleted from the source.
    assert_format_error(
        &csv_users("users_unterminated_quote.csv"),
        "users_unterminated_quote.csv",
        "line 3: a quoted field is never closed",
    );
    // Same in the last column, where the field count even matches.
    assert_format_error(
        &csv_users("users_unterminated_quote_last_field.csv"),
        "users_unterminated_quote_last_field.csv",
        "line 2: a quoted field is never closed",
    );
}

#[test]
fn stray_quote_pair_merging_rows_is_a_file_error() {
    assert_format_error(
        &csv_users("users_stray_quote_pair.csv"),
        "users_stray_quote_pair.csv",
        "line 3: a quoted field runs over several lines and it holds what look like whole rows",
    );
    // A merge that changes the field count.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.csv");
    std::fs::write(
        &path,
        "id,email,title\n1,ann@x.org,\"CTO\n2,bo\"@x.org,CEO\n3,cy@x.org,\n",
    )
    .unwrap();
    assert_format_error(
        &settings(SourceKind::Csv, path, None),
        "merged.csv",
        "line 2: a quoted field runs over several lines and the record has 4 fields instead of 3",
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let s = csv_users("no-such-file.csv");
    match load(&s) {
        Err(SourceError::Io { path, .. }) => assert!(path.ends_with("no-such-file.csv")),
        other => panic!("{other:?}"),
    }
}

// --- CSV users: record-level rejects -------------------------------------------------

#[test]
fn header_only_loads_nobody() {
    let snap = ok(&csv_users("users_header_only.csv"));
    assert!(snap.users.is_empty());
    assert!(snap.groups.is_empty());
    assert!(snap.rejects.is_empty());
}

#[test]
fn bom_is_stripped() {
    let snap = ok(&csv_users("users_bom.csv"));
    assert_eq!(user_lines(&snap), [("1", "line 2"), ("2", "line 3")]);
    assert!(snap.rejects.is_empty());
}

#[test]
fn crlf_line_ends_are_read_with_the_right_lines() {
    let path = fixture("users_crlf.csv");
    let snap = ok(&csv_users("users_crlf.csv"));
    assert_eq!(user_lines(&snap), [("1", "line 2"), ("3", "line 4")]);
    assert!(
        snap.users
            .iter()
            .all(|u| u.fields.values().all(|v| !v.contains('\r')))
    );
    assert_eq!(snap.users[0].groups, ["Eng"]);
    assert!(!snap.users[1].active);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 3", Some("2"), "`active` is `perhaps`")],
    );
    // The group made from the `groups` column points at the right line too.
    assert_eq!(snap.groups[0].origin.location, "line 2");
}

#[test]
fn blank_lines_are_skipped_and_lines_still_counted() {
    let path = fixture("users_blank_lines.csv");
    let snap = ok(&csv_users("users_blank_lines.csv"));
    assert_eq!(user_lines(&snap), [("1", "line 3"), ("3", "line 8")]);
    // The whitespace-only line 7 is blank, not a ragged record.
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 6", Some("2"), "invalid email `bo`: has no `@`")],
    );
}

#[test]
fn ragged_rows_are_rejected_and_their_ids_held() {
    let path = fixture("users_ragged_short.csv");
    let snap = ok(&csv_users("users_ragged_short.csv"));
    assert_eq!(user_ids(&snap), ["1", "3"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 3", Some("2"), "expected 7 fields, found 4")],
    );
    assert_eq!(snap.rejects[0].label.as_deref(), Some("bo@x.org"));

    let path = fixture("users_ragged_long.csv");
    let snap = ok(&csv_users("users_ragged_long.csv"));
    assert_eq!(user_ids(&snap), ["1", "3"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 3", Some("2"), "expected 7 fields, found 9")],
    );

    // Through the mapping: the account of user 2 is held, not deprovisioned.
    let d = desired_state(&snap, &atlassian(), &all_groups());
    assert!(d.held_users.contains(&SourceId::from("2")));
}

#[test]
fn trailing_delimiter_rows_are_rejected_with_their_ids() {
    let path = fixture("users_trailing_delimiter.csv");
    let snap = ok(&csv_users("users_trailing_delimiter.csv"));
    assert_eq!(user_ids(&snap), ["2"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 2", Some("1"), "expected 3 fields, found 4")],
    );
}

#[test]
fn duplicate_ids_reject_every_occurrence() {
    let path = fixture("users_duplicate_ids.csv");
    let snap = ok(&csv_users("users_duplicate_ids.csv"));
    assert_eq!(user_ids(&snap), ["8"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            (
                "line 2",
                Some("7"),
                "duplicate id `7` (also at line 4, line 5)",
            ),
            (
                "line 4",
                Some("7"),
                "duplicate id `7` (also at line 2, line 5)",
            ),
            (
                "line 5",
                Some("7"),
                "duplicate id `7` (also at line 2, line 4)",
            ),
        ],
    );
}

#[test]
fn user_names_differing_only_by_case_are_held_by_the_mapping() {
    let path = fixture("users_duplicate_usernames_case.csv");
    let snap = ok(&csv_users("users_duplicate_usernames_case.csv"));
    // The loader itself accepts them.
    assert_eq!(user_ids(&snap), ["1", "2", "3"]);
    assert!(snap.rejects.is_empty());
    let d = desired_state(&snap, &atlassian(), &all_groups());
    assert_eq!(
        d.users.keys().map(SourceId::as_str).collect::<Vec<_>>(),
        ["3"]
    );
    let file = path.display().to_string();
    let got: Vec<(&str, &str, &str)> = d
        .rejects
        .iter()
        .map(|r| {
            assert_eq!(r.origin.file, file);
            (
                r.origin.location.as_str(),
                r.source_id.as_ref().map_or("", SourceId::as_str),
                r.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "line 2");
    assert_eq!(got[0].1, "1");
    assert!(
        got[0]
            .2
            .starts_with("duplicate userName `ann@x.org`: also mapped for 2")
    );
    assert_eq!(got[1].0, "line 3");
    assert_eq!(got[1].1, "2");
    assert!(
        got[1]
            .2
            .starts_with("duplicate userName `ANN@X.org`: also mapped for 1")
    );
    assert_eq!(
        d.held_users,
        ["1", "2"].into_iter().map(SourceId::from).collect()
    );
}

#[test]
fn invalid_emails_are_rejected_with_the_problem() {
    let path = fixture("users_invalid_emails.csv");
    let snap = ok(&csv_users("users_invalid_emails.csv"));
    assert_eq!(user_ids(&snap), ["1", "8"]);
    // Surrounding spaces are trimmed, not an error.
    assert_eq!(snap.users[1].field("email"), "hal@x.org");
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            ("line 3", Some("2"), "invalid email `bo`: has no `@`"),
            (
                "line 4",
                Some("3"),
                "invalid email `cy@localhost`: has no dotted domain",
            ),
            (
                "line 5",
                Some("4"),
                "invalid email `di@@x.org`: has more than one `@`",
            ),
            (
                "line 6",
                Some("5"),
                "invalid email `e d@x.org`: contains spaces",
            ),
            (
                "line 7",
                Some("6"),
                "invalid email `fay@x..org`: has a malformed domain",
            ),
            (
                "line 8",
                Some("7"),
                "invalid email `@x.org`: has an empty or over-long local part",
            ),
        ],
    );
}

#[test]
fn non_utf8_value_rejects_the_record_and_holds_its_id() {
    let path = fixture("users_non_utf8_value.csv");
    let snap = ok(&csv_users("users_non_utf8_value.csv"));
    assert_eq!(user_ids(&snap), ["1", "3"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[(
            "line 3",
            Some("2"),
            "column `given_name` is not valid UTF-8",
        )],
    );
    assert_eq!(snap.rejects[0].label.as_deref(), Some("jose@x.org"));
}

#[test]
fn generated_non_utf8_bytes_in_every_column() {
    // Latin-1 and a lone continuation byte, in each column in turn.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.csv");
    for (col, name) in ["id", "email", "given_name"].iter().enumerate() {
        let mut row: Vec<Vec<u8>> = vec![b"9".to_vec(), b"ed@x.org".to_vec(), b"Ed".to_vec()];
        row[col] = b"\xe9t\x80".to_vec();
        let mut bytes = b"id,email,given_name\n1,ann@x.org,Ann\n".to_vec();
        bytes.extend(row.join(&b","[..]));
        bytes.extend(b"\n2,bo@x.org,Bo\n");
        std::fs::write(&path, &bytes).unwrap();
        let snap = ok(&settings(SourceKind::Csv, path.clone(), None));
        assert_eq!(user_ids(&snap), ["1", "2"]);
        let held = if *name == "id" { None } else { Some("9") };
        assert_rejects(
            &snap,
            RecordKind::User,
            &path,
            &[(
                "line 3",
                held,
                &format!("column `{name}` is not valid UTF-8"),
            )],
        );
    }
}

#[test]
fn bad_active_values_are_rejected() {
    let path = fixture("users_bad_active.csv");
    let snap = ok(&csv_users("users_bad_active.csv"));
    let active: Vec<(&str, bool)> = snap
        .users
        .iter()
        .map(|u| (u.id.as_str(), u.active))
        .collect();
    // yes → true, 0 → false, empty → true (default), " Disabled " → false.
    assert_eq!(
        active,
        [("1", true), ("3", false), ("5", true), ("6", false)]
    );
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            (
                "line 3",
                Some("2"),
                "`active` is `maybe`, not true/false/yes/no/1/0",
            ),
            (
                "line 5",
                Some("4"),
                "`active` is `2`, not true/false/yes/no/1/0",
            ),
        ],
    );
}

#[test]
fn missing_id_values_are_rejected_without_an_id() {
    let path = fixture("users_missing_id_value.csv");
    let snap = ok(&csv_users("users_missing_id_value.csv"));
    assert_eq!(user_ids(&snap), ["1"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            ("line 3", None, "missing required value `id`"),
            ("line 4", None, "missing required value `id`"),
        ],
    );
    let labels: Vec<Option<&str>> = snap.rejects.iter().map(|r| r.label.as_deref()).collect();
    assert_eq!(labels, [Some("bo@x.org"), Some("cy@x.org")]);
}

#[test]
fn lenient_quoting_is_read_as_text() {
    // A quote inside an unquoted field is a literal character.
    let snap = ok(&csv_users("users_quote_inside_field.csv"));
    assert_eq!(user_ids(&snap), ["1", "2"]);
    assert_eq!(snap.users[0].field("family_name"), "O\"Neil");
    assert!(snap.rejects.is_empty());
    // Text after a closing quote is appended.
    let snap = ok(&csv_users("users_text_after_closing_quote.csv"));
    assert_eq!(user_ids(&snap), ["1", "2"]);
    assert_eq!(snap.users[0].field("given_name"), "Annie");
    assert!(snap.rejects.is_empty());
}

#[test]
fn quoted_fields_with_commas_quotes_and_newlines() {
    let path = fixture("users_quoted_multiline.csv");
    let snap = ok(&csv_users("users_quoted_multiline.csv"));
    assert_eq!(
        user_lines(&snap),
        [("1", "line 2"), ("2", "line 3"), ("4", "line 6")]
    );
    assert_eq!(snap.users[0].field("given_name"), "Ann, Jr.");
    assert_eq!(snap.users[0].field("family_name"), "Lee \"the great\"");
    assert_eq!(snap.users[1].field("given_name"), "Bo\nBert");
    // The record after a two-line one is on line 5.
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 5", Some("3"), "`active` is `maybe`")],
    );
    // The mapping then refuses the line break in a name.
    let d = desired_state(&snap, &atlassian(), &all_groups());
    assert!(d.held_users.contains(&SourceId::from("2")));
    assert!(
        d.rejects
            .iter()
            .any(|r| r.origin.location == "line 3" && r.reason.contains("control characters"))
    );
}

/// A 10 MB value: rejected by size, the other rows load.
#[test]
fn oversized_csv_field_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let big = "x".repeat(10 * 1024 * 1024);
    let text = format!(
        "id,email,title\n1,ann@x.org,CTO\n2,bo@x.org,{big}\n3,cy@x.org,\"{big}\"\n4,di@x.org,{}\n",
        "y".repeat(MAX_FIELD_BYTES)
    );
    std::fs::write(&path, text).unwrap();
    let snap = ok(&settings(SourceKind::Csv, path.clone(), None));
    // Exactly 64 KiB is still accepted.
    assert_eq!(user_ids(&snap), ["1", "4"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            (
                "line 3",
                Some("2"),
                "field `title` is longer than 65536 bytes",
            ),
            (
                "line 4",
                Some("3"),
                "field `title` is longer than 65536 bytes",
            ),
        ],
    );
}

#[test]
fn oversized_id_is_rejected_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-id.csv");
    let text = format!(
        "id,email\n1,ann@x.org\n{},bo@x.org\n",
        "7".repeat(MAX_FIELD_BYTES + 1)
    );
    std::fs::write(&path, text).unwrap();
    let snap = ok(&settings(SourceKind::Csv, path.clone(), None));
    assert_eq!(user_ids(&snap), ["1"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[("line 3", None, "field `id` is longer than 65536 bytes")],
    );
    assert_eq!(snap.rejects[0].label.as_deref(), Some("bo@x.org"));
}

// --- CSV groups -----------------------------------------------------------------------

#[test]
fn groups_file_without_group_column_is_a_file_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_format_error(
        &csv_groups(&dir, "groups_missing_group_column.csv"),
        "groups_missing_group_column.csv",
        "line 1: no `group` column (expected columns: group, member, optional group_id)",
    );
}

#[test]
fn groups_file_with_duplicate_column_is_a_file_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_format_error(
        &csv_groups(&dir, "groups_duplicate_column.csv"),
        "groups_duplicate_column.csv",
        "line 1: column `group` appears twice",
    );
}

#[test]
fn group_id_used_with_two_names_rejects_the_later_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("groups_id_two_names.csv");
    let snap = ok(&csv_groups(&dir, "groups_id_two_names.csv"));
    assert_eq!(user_ids(&snap), ["1", "2", "3"]);
    let groups: Vec<(&str, &str, Vec<&str>)> = snap
        .groups
        .iter()
        .map(|g| {
            (
                g.id.as_str(),
                g.name.as_str(),
                g.members.iter().map(SourceId::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("g-eng", "Engineering", vec!["1", "2"]),
            ("g-ops", "Ops", vec!["2"]),
        ]
    );
    assert_rejects(
        &snap,
        RecordKind::Group,
        &path,
        &[(
            "line 4",
            Some("g-eng"),
            &format!(
                "group id is used with another name at {}:line 2",
                path.display()
            ),
        )],
    );
    // The mapping then holds the whole group.
    let d = desired_state(&snap, &atlassian(), &all_groups());
    assert!(d.held_groups.contains(&SourceId::from("g-eng")));
    assert!(!d.groups.contains_key(&SourceId::from("g-eng")));
    assert!(d.groups.contains_key(&SourceId::from("g-ops")));
}

#[test]
fn ragged_group_rows_are_rejected_and_their_groups_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("groups_ragged.csv");
    let snap = ok(&csv_groups(&dir, "groups_ragged.csv"));
    let members: Vec<(&str, usize)> = snap
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.members.len()))
        .collect();
    assert_eq!(members, [("g-eng", 1), ("g-ops", 1)]);
    assert_rejects(
        &snap,
        RecordKind::Group,
        &path,
        &[
            ("line 3", Some("g-eng"), "expected 3 fields, found 2"),
            ("line 4", Some("g-ops"), "expected 3 fields, found 4"),
        ],
    );
}

#[test]
fn group_rows_without_a_name_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("groups_empty_name.csv");
    let snap = ok(&csv_groups(&dir, "groups_empty_name.csv"));
    assert_eq!(snap.groups.len(), 1);
    assert_eq!(snap.groups[0].name, "Engineering");
    assert_rejects(
        &snap,
        RecordKind::Group,
        &path,
        &[
            ("line 3", Some("g-x"), "missing required value `group`"),
            ("line 4", None, "missing required value `group`"),
        ],
    );
}

#[test]
fn group_names_with_control_characters_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("groups_control_char_name.csv");
    let snap = ok(&csv_groups(&dir, "groups_control_char_name.csv"));
    assert_eq!(snap.groups.len(), 1);
    assert_rejects(
        &snap,
        RecordKind::Group,
        &path,
        &[
            ("line 3", Some("g-tab"), "contains control characters"),
            ("line 4", Some("g-nl"), "contains control characters"),
        ],
    );
}

#[test]
fn non_utf8_group_row_is_rejected_and_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("groups_non_utf8.csv");
    let snap = ok(&csv_groups(&dir, "groups_non_utf8.csv"));
    assert_eq!(snap.groups.len(), 1);
    assert_rejects(
        &snap,
        RecordKind::Group,
        &path,
        &[("line 3", Some("g-caf"), "column `group` is not valid UTF-8")],
    );
}

#[test]
fn group_names_differing_only_by_case_are_held_by_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let snap = ok(&csv_groups(&dir, "groups_duplicate_names_case.csv"));
    assert_eq!(snap.groups.len(), 3);
    assert!(snap.rejects.is_empty());
    let mut d = desired_state(&snap, &atlassian(), &all_groups());
    // (The bare people file has no names: the mapping rejects those users too.)
    d.rejects.retain(|r| r.kind == RecordKind::Group);
    assert_eq!(
        d.groups.keys().map(SourceId::as_str).collect::<Vec<_>>(),
        ["g-3"]
    );
    let got: Vec<(&str, Option<&str>, &str)> = d
        .rejects
        .iter()
        .map(|r| {
            (
                r.origin.location.as_str(),
                r.source_id.as_ref().map(SourceId::as_str),
                r.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "line 2",
                Some("g-1"),
                "duplicate group name `Engineering` (used by 2 source groups)"
            ),
            (
                "line 3",
                Some("g-2"),
                "duplicate group name `ENGINEERING` (used by 2 source groups)"
            ),
        ]
    );
}

// --- JSON: file-level failures ------------------------------------------------------

#[test]
fn unusable_json_documents_are_file_errors() {
    for (name, fragment) in [
        ("users_empty.json", "line 1, column 0: invalid JSON: EOF"),
        (
            "users_truncated.json",
            "line 3, column 42: invalid JSON: EOF while parsing a string",
        ),
        (
            "users_trailing_garbage.json",
            "line 2, column 1: invalid JSON: trailing characters",
        ),
        (
            "users_non_utf8.json",
            "line 1, column 42: invalid JSON: invalid unicode code point",
        ),
        (
            "users_unknown_key.json",
            "unknown top-level key `people` (expected `users` and/or `groups`)",
        ),
        ("users_not_array.json", "`users` must be an array"),
        (
            "users_scalar_document.json",
            "expected an object with `users`/`groups` or an array of users",
        ),
        ("users_no_users_key.json", "no `users` array"),
    ] {
        assert_format_error(&json_users(name), name, fragment);
    }
}

// --- JSON: record-level rejects ------------------------------------------------------

#[test]
fn json_bom_is_stripped() {
    let snap = ok(&json_users("users_bom.json"));
    assert_eq!(user_ids(&snap), ["1"]);
    assert_eq!(snap.users[0].origin.location, "users[0]");
}

#[test]
fn json_wrong_types_reject_the_record() {
    let path = fixture("users_wrong_types.json");
    let snap = ok(&json_users("users_wrong_types.json"));
    // A number id and a boolean `active` are fine.
    assert_eq!(user_ids(&snap), ["1", "5"]);
    assert!(!snap.users[1].active);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            (
                "users[1]",
                Some("2"),
                "field `given_name` is an object, expected a string",
            ),
            (
                "users[2]",
                Some("3"),
                "field `family_name` is an array, expected a string",
            ),
            (
                "users[3]",
                None,
                "field `id` is an object, expected a string",
            ),
            ("users[5]", None, "expected an object"),
            ("users[6]", None, "expected an object"),
        ],
    );
}

#[test]
fn json_nulls_are_absent_values() {
    let path = fixture("users_nulls.json");
    let snap = ok(&json_users("users_nulls.json"));
    assert_eq!(user_ids(&snap), ["1", "3"]);
    // null title and null active: absent (active defaults to true).
    assert_eq!(snap.users[0].field("title"), "");
    assert!(snap.users[0].active);
    assert_eq!(snap.users[1].field("email"), "");
    assert!(snap.users[1].groups.is_empty());
    assert!(snap.groups.is_empty());
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            ("users[1]", None, "missing required value `id`"),
            ("users[2]", None, "expected an object"),
        ],
    );
}

#[test]
fn json_group_lists_must_be_lists_of_strings() {
    let path = fixture("users_bad_groups_list.json");
    let snap = ok(&json_users("users_bad_groups_list.json"));
    assert_eq!(user_ids(&snap), ["1", "4"]);
    assert_eq!(snap.users[0].groups, ["Eng", "Ops"]);
    assert_eq!(snap.users[1].groups, ["Ops"]);
    let groups: Vec<(&str, usize)> = snap
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.members.len()))
        .collect();
    assert_eq!(groups, [("Eng", 1), ("Ops", 2)]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            (
                "users[1]",
                Some("2"),
                "`groups` is an object, expected a list",
            ),
            (
                "users[2]",
                Some("3"),
                "`groups` must be an array of strings",
            ),
        ],
    );
}

#[test]
fn json_duplicate_ids_reject_every_occurrence() {
    let path = fixture("users_duplicate_ids.json");
    let snap = ok(&json_users("users_duplicate_ids.json"));
    assert_eq!(user_ids(&snap), ["2"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[
            ("users[0]", Some("1"), "duplicate id `1` (also at users[1])"),
            ("users[1]", Some("1"), "duplicate id `1` (also at users[0])"),
        ],
    );
}

#[test]
fn json_keys_naming_the_same_field_reject_the_record() {
    let path = fixture("users_duplicate_keys.json");
    let snap = ok(&json_users("users_duplicate_keys.json"));
    assert_eq!(user_ids(&snap), ["2"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[(
            "users[0]",
            Some("1"),
            "keys `Email` and `email` both give the field `email`",
        )],
    );
}

#[test]
fn json_bad_groups_are_rejected_once_each_and_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("groups_bad_members.json");
    let s = settings(
        SourceKind::Json,
        valid_users(&dir, SourceKind::Json),
        Some(path.clone()),
    );
    let snap = ok(&s);
    assert_eq!(user_ids(&snap), ["1", "2", "3"]);
    assert_eq!(snap.groups.len(), 1);
    assert_eq!(snap.groups[0].id.as_str(), "g1");
    // Numbers are accepted as member ids.
    assert_eq!(
        snap.groups[0]
            .members
            .iter()
            .map(SourceId::as_str)
            .collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_rejects(
        &snap,
        RecordKind::Group,
        &path,
        &[
            (
                "groups[1]",
                Some("g2"),
                "`members` must be an array of user ids",
            ),
            ("groups[2]", Some("g3"), "`id` and `name` must be strings"),
            (
                "groups[3]",
                Some("Legal"),
                "`members` must be an array of user ids",
            ),
            ("groups[4]", Some("g5"), "missing required value `group`"),
            ("groups[5]", None, "expected an object"),
        ],
    );
}

/// A 10 MB JSON string: rejected by size, the other records load.
#[test]
fn oversized_json_field_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    let doc = serde_json::json!({
        "users": [
            {"id": "1", "email": "ann@x.org"},
            {"id": "2", "email": "bo@x.org", "title": "x".repeat(10 * 1024 * 1024)},
        ]
    });
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let snap = ok(&settings(SourceKind::Json, path.clone(), None));
    assert_eq!(user_ids(&snap), ["1"]);
    assert_rejects(
        &snap,
        RecordKind::User,
        &path,
        &[(
            "users[1]",
            Some("2"),
            "field `title` is longer than 65536 bytes",
        )],
    );
}

// --- properties of the CSV reader ------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    fn cell() -> impl Strategy<Value = String> {
        // Commas, quotes, line breaks, spaces and non-ASCII.
        proptest::string::string_regex("[a-zé ,\"\\n]{0,8}").unwrap()
    }

    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }

    /// Cases per property: the default, or `SCIMSYNC_FUZZ_CASES` for a long run.
    fn fuzz_cases(default: u32) -> u32 {
        std::env::var("SCIMSYNC_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(fuzz_cases(64)))]

        /// Membership rows in any order (a group's rows together or
        /// interleaved with others', rows without a member, repeats) and
        /// the `groups` column of the people file give each group exactly
        /// the members listed for it, in the order groups first appear.
        #[test]
        fn membership_rows_in_any_order_give_each_group_its_members(
            rows in proptest::collection::vec((0u8..4, proptest::option::of(0u8..6)), 0..40),
            listed in proptest::collection::vec(proptest::option::of(0u8..6), 6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut users = String::from("id,email,groups\n");
            for (u, g) in listed.iter().enumerate() {
                let g = g.map(|g| format!("G{g}")).unwrap_or_default();
                users.push_str(&format!("{u},p{u}@x.org,{g}\n"));
            }
            let mut groups = String::from("group_id,group,member\n");
            let mut want: Vec<(String, std::collections::BTreeSet<String>)> = Vec::new();
            let add = |want: &mut Vec<(String, std::collections::BTreeSet<String>)>, g: String, m: Option<String>| {
                let at = match want.iter().position(|(n, _)| *n == g) {
                    Some(at) => at,
                    None => {
                        want.push((g, Default::default()));
                        want.len() - 1
                    }
                };
                want[at].1.extend(m);
            };
            for (g, m) in &rows {
                let m = m.map(|m| m.to_string());
                groups.push_str(&format!("g{g},G{g},{}\n", m.clone().unwrap_or_default()));
                add(&mut want, format!("G{g}"), m);
            }
            for (u, g) in listed.iter().enumerate() {
                if let Some(g) = g {
                    add(&mut want, format!("G{g}"), Some(u.to_string()));
                }
            }
            let (up, gp) = (dir.path().join("users.csv"), dir.path().join("groups.csv"));
            std::fs::write(&up, users).unwrap();
            std::fs::write(&gp, groups).unwrap();
            let snap = ok(&settings(SourceKind::Csv, up, Some(gp)));
            let got: Vec<(String, std::collections::BTreeSet<String>)> = snap
                .groups
                .iter()
                .map(|g| (g.name.clone(), g.members.iter().map(|m| m.to_string()).collect()))
                .collect();
            prop_assert_eq!(got, want);
            prop_assert!(snap.rejects.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(fuzz_cases(128)))]

        /// Any values, properly quoted, with LF or CRLF line ends, come back
        /// as written (trimmed) with the line each record starts on.
        #[test]
        fn quoted_values_round_trip(
            rows in proptest::collection::vec((cell(), cell()), 0..8),
            crlf in any::<bool>(),
            bom in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = String::from(if bom { "\u{feff}" } else { "" });
            // Enough columns that a multi-line value never looks like merged rows.
            text.push_str("id,title,department,c1,c2,c3,c4,c5,c6");
            text.push_str(eol);
            let mut expected = Vec::new();
            let mut line = 2;
            for (i, (a, b)) in rows.iter().enumerate() {
                let a_val = if crlf { a.replace('\n', "\r\n") } else { a.clone() };
                let b_val = if crlf { b.replace('\n', "\r\n") } else { b.clone() };
                text.push_str(&format!("{i},{},{},,,,,,{eol}", quote(&a_val), quote(&b_val)));
                expected.push((i.to_string(), format!("line {line}"), a_val, b_val));
                line += 1 + a.matches('\n').count() + b.matches('\n').count();
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.csv");
            std::fs::write(&path, &text).unwrap();
            let snap = ok(&settings(SourceKind::Csv, path, None));
            // Values with control characters are loaded; the mapping rejects them.
            prop_assert!(snap.rejects.is_empty(), "{:?}", snap.rejects);
            prop_assert_eq!(snap.users.len(), expected.len());
            for (u, (id, loc, a, b)) in snap.users.iter().zip(&expected) {
                prop_assert_eq!(u.id.as_str(), id.as_str());
                prop_assert_eq!(&u.origin.location, loc);
                prop_assert_eq!(u.field("title"), a.trim());
                prop_assert_eq!(u.field("department"), b.trim());
            }
        }

        /// A stray quote at the start of any field, optionally closed by a
        /// quote inside a later field, never makes people vanish: the file
        /// fails as a whole, or every id is loaded or held by a reject.
        #[test]
        fn stray_quotes_never_lose_people(
            n in 1..8usize,
            open in (0..8usize, 0..4usize),
            close in proptest::option::of((0..8usize, 0..4usize, 1..3usize)),
        ) {
            let mut rows: Vec<Vec<String>> = (0..n)
                .map(|i| vec![format!("{i}"), format!("u{i}@x.org"), "Ann".into(), "Lee".into()])
                .collect();
            let (r, c) = (open.0 % n, open.1);
            rows[r][c].insert(0, '"');
            if let Some((r2, c2, at)) = close {
                let (r2, c2) = (r2 % n, c2);
                if (r2, c2) > (r, c) {
                    let cell = &mut rows[r2][c2];
                    let at = at.min(cell.len());
                    cell.insert(at, '"');
                }
            }
            let mut text = String::from("id,email,given_name,family_name\n");
            for row in &rows {
                text.push_str(&row.join(","));
                text.push('\n');
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("stray.csv");
            std::fs::write(&path, &text).unwrap();
            match load(&settings(SourceKind::Csv, path, None)) {
                Err(SourceError::Format { message, .. }) => {
                    let stray = message.contains("a stray `\"`");
                    prop_assert!(stray || message.contains("never closed"), "{}", message);
                }
                Err(e) => prop_assert!(false, "{}", e),
                Ok(snap) => {
                    // Every row is loaded or rejected on its own line (with its
                    // id held unless the id cell itself is the broken one).
                    for i in 0..n {
                        let id = SourceId::from(i.to_string());
                        let line = format!("line {}", i + 2);
                        let loaded = snap
                            .users
                            .iter()
                            .any(|u| u.id == id && u.origin.location == line);
                        // A quote before the id garbles the id of that row.
                        let id_broken = c == 0 && i == r;
                        let rejected = snap.rejects.iter().any(|rej| {
                            rej.origin.location == line
                                && (id_broken || rej.source_id.as_ref() == Some(&id))
                        });
                        prop_assert!(loaded || rejected, "row {} lost in\n{}", i, text);
                    }
                }
            }
        }

        /// Arbitrary bytes never panic the loader; it either fails for the
        /// whole file or accounts for every record it read.
        #[test]
        fn arbitrary_bytes_do_not_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("junk.csv");
            let mut bytes = b"id,email,active\n".to_vec();
            bytes.extend(&body);
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(snap) = load(&settings(SourceKind::Csv, path.clone(), None)) {
                for r in &snap.rejects {
                    prop_assert_eq!(&r.origin.file, &path.display().to_string());
                    prop_assert!(r.origin.location.starts_with("line "));
                }
            }
            let json = dir.path().join("junk.json");
            std::fs::write(&json, &body).unwrap();
            let _ = load(&settings(SourceKind::Json, json, None));
        }
    }
}

/// The membership file is read on its own thread: the snapshot must be the
/// one reading the files one after the other gives, rejects of the people
/// file first, each file's in line order, and the `groups` column joined to
/// the groups of the membership file.
#[test]
fn both_csv_files_read_together_give_the_sequential_result() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    let mut text = String::from("id,email,groups\n");
    for i in 0..3000 {
        if i % 1000 == 7 {
            text.push_str(&format!("{i},not-an-email,\n"));
        } else {
            text.push_str(&format!("{i},p{i}@x.org,Extra\n"));
        }
    }
    std::fs::write(&users, text).unwrap();
    let groups = dir.path().join("groups.csv");
    let mut text = String::from("group,member\n");
    for i in 0..3000 {
        text.push_str(&format!("G{},{i}\n", i % 7));
        if i % 1000 == 11 {
            text.push_str(",9\n");
        }
    }
    text.push_str("Extra,5\n");
    std::fs::write(&groups, text).unwrap();
    let snap = ok(&settings(
        SourceKind::Csv,
        users.clone(),
        Some(groups.clone()),
    ));
    let got: Vec<(String, String)> = snap
        .rejects
        .iter()
        .map(|r| (r.origin.file.clone(), r.origin.location.clone()))
        .collect();
    let (u, g) = (users.display().to_string(), groups.display().to_string());
    let want: Vec<(String, String)> = [
        (&u, "line 9"),
        (&u, "line 1009"),
        (&u, "line 2009"),
        (&g, "line 14"),
        (&g, "line 1015"),
        (&g, "line 2016"),
    ]
    .iter()
    .map(|(f, l)| (f.to_string(), l.to_string()))
    .collect();
    assert_eq!(got, want);
    let names: Vec<&str> = snap.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["G0", "G1", "G2", "G3", "G4", "G5", "G6", "Extra"]);
    let extra = &snap.groups[7];
    assert_eq!(extra.origin.location, "line 3005");
    // Every valid person listed Extra; the file added person 5 again.
    assert_eq!(extra.members.len(), 2997);
    assert_eq!(snap.groups[0].members.len(), 429);
}
