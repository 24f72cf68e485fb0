//! CSV loader: a header row, one person (or membership) per record.

use std::borrow::Cow;
use std::path::Path;

use compact_str::CompactString;

use super::{Builder, Columns, SourceError, read_file};
use crate::config::SourceSettings;
use crate::model::{self, Origin, RecordKind};

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn reader<'b>(body: &'b [u8], settings: &SourceSettings) -> ::csv::Reader<&'b [u8]> {
    ::csv::ReaderBuilder::new()
        .delimiter(settings.delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(body)
}

fn headers(path: &Path, rdr: &mut ::csv::Reader<&[u8]>) -> Result<Vec<String>, SourceError> {
    let format = |message: String| SourceError::Format {
        path: path.to_path_buf(),
        message,
    };
    let raw = rdr
        .byte_headers()
        .map_err(|e| format(format!("cannot read the header row: {e}")))?
        .clone();
    if raw.is_empty() || (raw.len() == 1 && raw[0].is_empty()) {
        return Err(format("the file is empty: no header row".into()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let h = std::str::from_utf8(h)
            .map_err(|_| format(format!("line 1: header {} is not valid UTF-8", i + 1)))?;
        out.push(h.trim().to_owned());
    }
    Ok(out)
}

fn duplicate_column(path: &Path, names: &[Cow<'static, str>]) -> Result<(), SourceError> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(SourceError::Format {
                path: path.to_path_buf(),
                message: format!("line 1: column `{n}` appears twice"),
            });
        }
    }
    Ok(())
}

/// A quoted field that is still open at the end of the file swallowed every
/// row after it: the file cannot be used (the people in those rows would look
/// deleted). Scans like the csv crate does (RFC 4180 quoting, `""` escapes) and
/// returns the byte offset of the unclosed quote.
fn unclosed_quote(body: &[u8], delimiter: u8) -> Option<usize> {
    // Most exports quote nothing: one fast search settles them.
    if !body.contains(&b'"') {
        return None;
    }
    #[derive(PartialEq)]
    enum S {
        Start,
        Field,
        Quoted,
        QuoteInQuoted,
    }
    let mut state = S::Start;
    let mut opened = 0;
    for (i, &b) in body.iter().enumerate() {
        let end = b == delimiter || b == b'\n' || b == b'\r';
        state = match state {
            S::Start if b == b'"' => {
                opened = i;
                S::Quoted
            }
            S::Start | S::Field if end => S::Start,
            S::Start | S::Field => S::Field,
            S::Quoted if b == b'"' => S::QuoteInQuoted,
            S::Quoted => S::Quoted,
            S::QuoteInQuoted if b == b'"' => S::Quoted,
            S::QuoteInQuoted if end => S::Start,
            S::QuoteInQuoted => S::Field,
        };
    }
    (state == S::Quoted).then_some(opened)
}

/// Line numbers from byte offsets: the csv crate's own line count is off
/// after CRLF line ends and skipped blank lines.
struct Lines<'b> {
    body: &'b [u8],
    pos: usize,
    line: u64,
    /// Whether the file has a `\r` anywhere (else lines are counted by
    /// their `\n` alone, which the compiler turns into wide compares).
    has_cr: bool,
}

impl<'b> Lines<'b> {
    fn new(body: &'b [u8]) -> Self {
        Lines {
            body,
            pos: 0,
            line: 1,
            has_cr: body.contains(&b'\r'),
        }
    }

    /// The line of the first byte at or after `offset` that is not a line end.
    fn at(&mut self, offset: u64) -> u64 {
        let body = self.body;
        let mut off = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(body.len());
        while off < body.len() && (body[off] == b'\n' || body[off] == b'\r') {
            off += 1;
        }
        if off < self.pos {
            (self.pos, self.line) = (0, 1);
        }
        if self.has_cr {
            for i in self.pos..off {
                if body[i] == b'\n' || (body[i] == b'\r' && body.get(i + 1) != Some(&b'\n')) {
                    self.line += 1;
                }
            }
        } else {
            self.line += memchr::memchr_iter(b'\n', &body[self.pos..off]).count() as u64;
        }
        self.pos = off;
        self.line
    }
}

/// A well-formed row, borrowed from the reader: every field is valid UTF-8
/// and the count matches the header.
struct Fields<'r> {
    names: &'r [Cow<'static, str>],
    /// Column indexes in the order of their names.
    by_name: &'r [usize],
    record: &'r ::csv::ByteRecord,
}

impl Fields<'_> {
    /// The value of column `i` (found once per file), when there is one.
    fn at(&self, i: Option<usize>) -> Option<&str> {
        // Checked to be UTF-8 before the row was handed out.
        std::str::from_utf8(self.record.get(i?)?).ok()
    }

    /// Canonical column name → value, for records that are kept whole.
    /// In name order already: the map has nothing to sort.
    fn to_map(&self) -> model::Fields {
        let pairs = self.by_name.iter().filter_map(|&i| {
            let value = std::str::from_utf8(self.record.get(i)?).ok()?;
            Some((self.names[i].clone(), value.into()))
        });
        model::Fields::from_pairs(pairs.collect())
    }
}

/// One CSV record.
enum Row<'r> {
    /// A blank line.
    Blank,
    /// Column → value, borrowed.
    Fields(Fields<'r>),
    /// An unusable record: the reason, and the columns that could still be
    /// read (so the person's id can be held). After a record the reader
    /// cannot parse, [`records`] hands out nothing more.
    Bad {
        reason: String,
        partial: model::Fields,
    },
}

/// Hand every record to `each` as (line, row), in file order, or fail for
/// the whole file. Streams: a file of millions of rows is never held as rows
/// (a caller that fails the file drops whatever `each` built).
fn records(
    path: &Path,
    body: &[u8],
    delimiter: u8,
    rdr: &mut ::csv::Reader<&[u8]>,
    names: &[Cow<'static, str>],
    mut each: impl FnMut(u64, Row<'_>),
) -> Result<(), SourceError> {
    let mut lines = Lines::new(body);
    if let Some(at) = unclosed_quote(body, delimiter) {
        return Err(SourceError::Format {
            path: path.to_path_buf(),
            message: format!(
                "line {}: a quoted field is never closed (a stray `\"`?); every row after it would be lost",
                lines.at(at as u64)
            ),
        });
    }
    // A file that is UTF-8 as a whole has UTF-8 fields when the reader
    // splits at ASCII bytes (it drops only ASCII quotes): checked once, not
    // per field.
    let all_utf8 = delimiter.is_ascii() && std::str::from_utf8(body).is_ok();
    let mut by_name: Vec<usize> = (0..names.len()).collect();
    by_name.sort_by(|a, b| names[*a].cmp(&names[*b]));
    let mut record = ::csv::ByteRecord::new();
    let mut last_line = 1;
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Err(e) => {
                let line = e
                    .position()
                    .map(|p| lines.at(p.byte()))
                    .unwrap_or(last_line + 1);
                // A broken record (I/O or parse): report it and stop, the rest
                // of the stream cannot be trusted to be aligned.
                each(
                    line,
                    Row::Bad {
                        reason: format!("unreadable record: {e}"),
                        partial: model::Fields::new(),
                    },
                );
                break;
            }
            Ok(true) => {
                let line = record
                    .position()
                    .map(|p| lines.at(p.byte()))
                    .unwrap_or(last_line + 1);
                last_line = line;
                if record.len() == 1
                    && record[0].iter().all(u8::is_ascii_whitespace)
                    && names.len() > 1
                {
                    each(line, Row::Blank);
                    continue;
                }
                let mut problem = None;
                if !all_utf8 {
                    for (name, value) in names.iter().zip(record.iter()) {
                        if std::str::from_utf8(value).is_err() {
                            problem.get_or_insert(format!("column `{name}` is not valid UTF-8"));
                        }
                    }
                }
                // A quoted field over several lines either changes the field
                // count or, when the count still matches, holds at least a
                // whole row's worth of delimiters: the signs of a stray quote
                // that merged rows (the people in them would look deleted).
                let multiline = |f: &[u8]| f.contains(&b'\n') || f.contains(&b'\r');
                let swallowed = |f: &[u8]| {
                    multiline(f) && f.iter().filter(|b| **b == delimiter).count() + 1 >= names.len()
                };
                let merged = if record.len() != names.len() && record.iter().any(multiline) {
                    Some(format!(
                        "the record has {} fields instead of {}",
                        record.len(),
                        names.len()
                    ))
                } else if names.len() > 1 && record.iter().any(swallowed) {
                    Some("it holds what look like whole rows".to_owned())
                } else {
                    None
                };
                if let Some(what) = merged {
                    return Err(SourceError::Format {
                        path: path.to_path_buf(),
                        message: format!(
                            "line {line}: a quoted field runs over several lines and {what} (a stray `\"`?); the rows it swallowed would be lost"
                        ),
                    });
                }
                if record.len() != names.len() {
                    problem = Some(format!(
                        "expected {} fields, found {}",
                        names.len(),
                        record.len()
                    ));
                }
                let fields = Fields {
                    names,
                    by_name: &by_name,
                    record: &record,
                };
                each(
                    line,
                    match problem {
                        None => Row::Fields(fields),
                        Some(reason) => Row::Bad {
                            reason,
                            partial: fields.to_map(),
                        },
                    },
                );
            }
        }
    }
    Ok(())
}

fn line_origin(file: &str, line: u64) -> Origin {
    Origin {
        file: file.to_owned(),
        location: format!("line {line}"),
    }
}

fn non_empty(v: Option<&CompactString>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Load the people file.
pub(super) fn load_users(
    path: &Path,
    settings: &SourceSettings,
    builder: &mut Builder<'_>,
) -> Result<(), SourceError> {
    let bytes = read_file(path)?;
    let body = strip_bom(&bytes);
    let mut rdr = reader(body, settings);
    let cols = Columns::new(settings);
    let names: Vec<Cow<'static, str>> = headers(path, &mut rdr)?
        .iter()
        .map(|h| model::field_name(&cols.canonical(h)))
        .collect();
    if !names.iter().any(|n| n == "id") {
        let hint = settings
            .columns
            .get("id")
            .map(|c| format!(" (configured as `{c}`)"))
            .unwrap_or_default();
        return Err(SourceError::Format {
            path: path.to_path_buf(),
            message: format!("line 1: no `id` column{hint}; every person needs a stable id"),
        });
    }
    duplicate_column(path, &names)?;
    // At most one person per line after the header.
    builder.reserve_users(body.iter().filter(|b| **b == b'\n').count());
    let file = path.display().to_string();
    records(
        path,
        body,
        settings.delimiter,
        &mut rdr,
        &names,
        |line, row| {
            let origin = |line| line_origin(&file, line);
            match row {
                Row::Blank => {}
                Row::Fields(fields) => builder.user(origin(line), fields.to_map()),
                Row::Bad { reason, partial } => {
                    // Keep the id when it could be read: the account is then held,
                    // never deprovisioned because of a bad row.
                    let label =
                        non_empty(partial.get("user_name")).or(non_empty(partial.get("email")));
                    builder.reject(
                        RecordKind::User,
                        origin(line),
                        non_empty(partial.get("id")),
                        label,
                        reason,
                    );
                }
            }
        },
    )
}

/// Load the group membership file: `group`, `member`, optional `group_id`.
pub(super) fn load_groups(
    path: &Path,
    settings: &SourceSettings,
    builder: &mut Builder<'_>,
) -> Result<(), SourceError> {
    let bytes = read_file(path)?;
    let body = strip_bom(&bytes);
    let mut rdr = reader(body, settings);
    let names: Vec<Cow<'static, str>> = headers(path, &mut rdr)?
        .iter()
        .map(|h| Cow::Owned(h.to_ascii_lowercase()))
        .collect();
    if !names.iter().any(|n| n == "group") {
        return Err(SourceError::Format {
            path: path.to_path_buf(),
            message:
                "line 1: no `group` column (expected columns: group, member, optional group_id)"
                    .into(),
        });
    }
    duplicate_column(path, &names)?;
    let file = path.display().to_string();
    // Columns found once, not by name on each of millions of rows.
    let column = |name: &str| names.iter().position(|n| n == name);
    let (group_id, group, member) = (column("group_id"), column("group"), column("member"));
    records(
        path,
        body,
        settings.delimiter,
        &mut rdr,
        &names,
        |line, row| {
            let origin = |line| line_origin(&file, line);
            match row {
                Row::Blank => {}
                Row::Fields(f) => {
                    builder.group_row(
                        || origin(line),
                        f.at(group_id),
                        f.at(group).unwrap_or_default(),
                        f.at(member),
                    );
                }
                Row::Bad { reason, partial } => {
                    let name = non_empty(partial.get("group"));
                    let id = non_empty(partial.get("group_id")).or(name.clone());
                    builder.reject(RecordKind::Group, origin(line), id, name, reason);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Line numbers the byte-by-byte way, whatever the file's line ends.
    fn slow(body: &[u8], offsets: &[u64]) -> Vec<u64> {
        let mut lines = Lines::new(body);
        lines.has_cr = true;
        offsets.iter().map(|o| lines.at(*o)).collect()
    }

    proptest! {
        /// Counting `\n` alone (a file without `\r`) gives the lines the
        /// full rule gives, at any offsets, in order or not.
        #[test]
        fn lines_without_cr_count_as_the_full_rule(
            body in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'"'), Just(b',')], 0..200),
            offsets in proptest::collection::vec(0u64..220, 0..20),
        ) {
            let mut fast = Lines::new(&body);
            prop_assert!(!fast.has_cr);
            let got: Vec<u64> = offsets.iter().map(|o| fast.at(*o)).collect();
            prop_assert_eq!(got, slow(&body, &offsets));
        }
    }

    #[test]
    fn an_open_quote_is_still_found() {
        assert_eq!(unclosed_quote(b"id,name\n1,\"ann\n2,bo\n", b','), Some(10));
        assert_eq!(unclosed_quote(b"id,name\n1,\"ann\"\n", b','), None);
    }
}
