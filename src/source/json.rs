//! JSON loader: `{"users": [...], "groups": [...]}` or a bare array of users.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{Builder, Columns, SourceError, read_file};
use crate::config::SourceSettings;
use crate::model::{Fields, Origin, RecordKind};

fn origin(path: &Path, location: String) -> Origin {
    Origin {
        file: path.display().to_string(),
        location,
    }
}

fn scalar(v: &Value) -> Result<String, &'static str> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(_) => Err("an array"),
        Value::Object(_) => Err("an object"),
    }
}

/// Load a JSON document; `users_expected` says whether it must hold users.
pub(super) fn load(
    path: &Path,
    settings: &SourceSettings,
    builder: &mut Builder<'_>,
    users_expected: bool,
) -> Result<(), SourceError> {
    let bytes = read_file(path)?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let doc: Value = serde_json::from_slice(body).map_err(|e| SourceError::Format {
        path: path.to_path_buf(),
        message: format!(
            "line {}, column {}: invalid JSON: {e}",
            e.line(),
            e.column()
        ),
    })?;
    let format = |message: &str| SourceError::Format {
        path: path.to_path_buf(),
        message: message.to_owned(),
    };
    let (users, groups) = match &doc {
        Value::Array(items) => (Some(items), None),
        Value::Object(map) => {
            for key in map.keys() {
                if key != "users" && key != "groups" {
                    return Err(format(&format!(
                        "unknown top-level key `{key}` (expected `users` and/or `groups`)"
                    )));
                }
            }
            let users = match map.get("users") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(a),
                Some(_) => return Err(format("`users` must be an array")),
            };
            let groups = match map.get("groups") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(a),
                Some(_) => return Err(format("`groups` must be an array")),
            };
            (users, groups)
        }
        _ => {
            return Err(format(
                "expected an object with `users`/`groups` or an array of users",
            ));
        }
    };
    if users_expected && users.is_none() {
        return Err(format("no `users` array"));
    }
    let cols = Columns::new(settings);
    for (i, item) in users.into_iter().flatten().enumerate() {
        let at = origin(path, format!("users[{i}]"));
        let Value::Object(obj) = item else {
            builder.reject(
                RecordKind::User,
                at,
                None,
                None,
                "expected an object".into(),
            );
            continue;
        };
        let mut fields = Fields::new();
        let mut problem = None;
        let mut keys: BTreeMap<String, &String> = BTreeMap::new();
        for (k, v) in obj {
            let name = cols.canonical(k);
            if let Some(first) = keys.insert(name.clone(), k) {
                problem = Some(format!(
                    "keys `{first}` and `{k}` both give the field `{name}`; keep one"
                ));
                continue;
            }
            if name == "groups" {
                match v {
                    Value::Array(list) => {
                        let mut names = Vec::new();
                        for g in list {
                            match g {
                                Value::String(s) => names.push(s.clone()),
                                _ => problem = Some(format!("`{k}` must be an array of strings")),
                            }
                        }
                        fields.insert(name, names.join(settings.list_separator.as_str()).into());
                    }
                    other => match scalar(other) {
                        Ok(s) => {
                            fields.insert(name, s.into());
                        }
                        Err(what) => problem = Some(format!("`{k}` is {what}, expected a list")),
                    },
                }
                continue;
            }
            match scalar(v) {
                Ok(s) => {
                    fields.insert(name, s.into());
                }
                Err(what) => problem = Some(format!("field `{k}` is {what}, expected a string")),
            }
        }
        match problem {
            Some(reason) => {
                let id = fields.get("id").map(ToString::to_string);
                let label = fields
                    .get("user_name")
                    .or(fields.get("email"))
                    .map(ToString::to_string);
                builder.reject(RecordKind::User, at, id, label, reason);
            }
            None => builder.user(at, fields),
        }
    }
    for (i, item) in groups.into_iter().flatten().enumerate() {
        let at = origin(path, format!("groups[{i}]"));
        let Value::Object(obj) = item else {
            builder.reject(
                RecordKind::Group,
                at,
                None,
                None,
                "expected an object".into(),
            );
            continue;
        };
        let id = obj.get("id").map(scalar).transpose();
        let name = obj
            .get("name")
            .or(obj.get("displayName"))
            .map(scalar)
            .transpose();
        let (id, name) = match (id, name) {
            (Ok(id), Ok(name)) => (id, name.unwrap_or_default()),
            (id, name) => {
                // Hold the group by whatever identifies it (the id, else the name).
                let trimmed =
                    |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
                let name = trimmed(name.ok().flatten());
                let id = trimmed(id.ok().flatten());
                builder.reject(
                    RecordKind::Group,
                    at,
                    id.or(name.clone()),
                    name,
                    "`id` and `name` must be strings".into(),
                );
                continue;
            }
        };
        // The id the group is known by (the name when it has none).
        let held_id = id
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .unwrap_or(name.trim())
            .to_owned();
        let held_id = Some(held_id);
        let members = match obj.get("members") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => {
                let parsed: Result<Vec<String>, _> = list.iter().map(scalar).collect();
                match parsed {
                    Ok(m) => m,
                    Err(_) => {
                        builder.reject(
                            RecordKind::Group,
                            at,
                            held_id,
                            Some(name),
                            "`members` must be an array of user ids".into(),
                        );
                        continue;
                    }
                }
            }
            Some(_) => {
                builder.reject(
                    RecordKind::Group,
                    at,
                    held_id,
                    Some(name),
                    "`members` must be an array of user ids".into(),
                );
                continue;
            }
        };
        // One reject per record: stop at the first refusal.
        if !builder.group(at.clone(), id.clone(), name.clone(), None) {
            continue;
        }
        for m in members {
            builder.group(at.clone(), id.clone(), name.clone(), Some(m));
        }
    }
    Ok(())
}
