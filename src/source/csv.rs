//! CSV loader: a header row, one person (or membership) per record.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Builder, Columns, SourceError, read_file};
use crate::config::SourceSettings;
use crate::model::{Origin, RecordKind};

fn reader(bytes: &[u8], settings: &SourceSettings) -> ::csv::Reader<std::io::Cursor<Vec<u8>>> {
    let body = bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(bytes)
        .to_vec();
    ::csv::ReaderBuilder::new()
        .delimiter(settings.delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(std::io::Cursor::new(body))
}

fn headers(
    path: &Path,
    rdr: &mut ::csv::Reader<std::io::Cursor<Vec<u8>>>,
) -> Result<Vec<String>, SourceError> {
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

fn origin(path: &Path, line: u64) -> Origin {
    Origin {
        file: path.display().to_string(),
        location: format!("line {line}"),
    }
}

/// Read one record as (line, Ok(fields) | Err(reason)).
fn records<'r>(
    rdr: &'r mut ::csv::Reader<std::io::Cursor<Vec<u8>>>,
    names: &'r [String],
) -> impl Iterator<Item = (u64, Result<BTreeMap<String, String>, String>)> + 'r {
    let mut record = ::csv::ByteRecord::new();
    let mut last_line = 1;
    std::iter::from_fn(move || {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => None,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(last_line + 1);
                last_line = line;
                // A broken record (I/O or parse): report it and stop, the rest
                // of the stream cannot be trusted to be aligned.
                Some((line, Err(format!("unreadable record: {e}"))))
            }
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(last_line + 1);
                last_line = line;
                if record.len() == 1 && record[0].is_empty() && names.len() > 1 {
                    return Some((line, Ok(BTreeMap::new()))); // blank line
                }
                if record.len() != names.len() {
                    return Some((
                        line,
                        Err(format!(
                            "expected {} fields, found {}",
                            names.len(),
                            record.len()
                        )),
                    ));
                }
                let mut fields = BTreeMap::new();
                for (name, value) in names.iter().zip(record.iter()) {
                    match std::str::from_utf8(value) {
                        Ok(v) => {
                            fields.insert(name.clone(), v.to_owned());
                        }
                        Err(_) => {
                            return Some((
                                line,
                                Err(format!("column `{name}` is not valid UTF-8")),
                            ));
                        }
                    }
                }
                Some((line, Ok(fields)))
            }
        }
    })
}

/// Load the people file.
pub(super) fn load_users(
    path: &Path,
    settings: &SourceSettings,
    builder: &mut Builder<'_>,
) -> Result<(), SourceError> {
    let bytes = read_file(path)?;
    let mut rdr = reader(&bytes, settings);
    let cols = Columns::new(settings);
    let names: Vec<String> = headers(path, &mut rdr)?
        .iter()
        .map(|h| cols.canonical(h))
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
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n) {
            return Err(SourceError::Format {
                path: path.to_path_buf(),
                message: format!("line 1: column `{n}` appears twice"),
            });
        }
    }
    for (line, rec) in records(&mut rdr, &names) {
        match rec {
            Ok(fields) if fields.is_empty() => continue,
            Ok(fields) => builder.user(origin(path, line), fields),
            Err(reason) => {
                let stop = reason.starts_with("unreadable");
                builder.reject(RecordKind::User, origin(path, line), None, None, reason);
                if stop {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Load the group membership file: `group`, `member`, optional `group_id`.
pub(super) fn load_groups(
    path: &Path,
    settings: &SourceSettings,
    builder: &mut Builder<'_>,
) -> Result<(), SourceError> {
    let bytes = read_file(path)?;
    let mut rdr = reader(&bytes, settings);
    let names: Vec<String> = headers(path, &mut rdr)?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if !names.iter().any(|n| n == "group") {
        return Err(SourceError::Format {
            path: path.to_path_buf(),
            message:
                "line 1: no `group` column (expected columns: group, member, optional group_id)"
                    .into(),
        });
    }
    for (line, rec) in records(&mut rdr, &names) {
        match rec {
            Ok(fields) if fields.is_empty() => continue,
            Ok(mut f) => builder.group(
                origin(path, line),
                f.remove("group_id"),
                f.remove("group").unwrap_or_default(),
                f.remove("member"),
            ),
            Err(reason) => {
                let stop = reason.starts_with("unreadable");
                builder.reject(RecordKind::Group, origin(path, line), None, None, reason);
                if stop {
                    break;
                }
            }
        }
    }
    Ok(())
}
