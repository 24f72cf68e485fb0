//! RFC 7644 §3.5.2 PATCH: parsing the request, resolving paths, applying operations.
//!
//! User operations are applied to a copy of the resource, so a failing operation leaves
//! the stored user untouched. Group operations are first turned into a list of
//! membership changes (validated up front), then applied; membership lives in sets.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{EqFilter, parse_eq};

/// Schema URN of a PATCH request body.
pub(crate) const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Core User schema URN.
pub(crate) const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub(crate) const CORE_GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub(crate) const ENTERPRISE_URN: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Atlassian's read-only extension carrying the Atlassian account id.
pub(crate) const ATLASSIAN_EXTERNAL_URN: &str = "urn:scim:schemas:extension:atlassian-external:1.0";

/// The three PATCH verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Add,
    Replace,
    Remove,
}

/// One parsed PATCH operation.
#[derive(Clone, Debug)]
pub(crate) struct PatchOp {
    pub(crate) kind: OpKind,
    pub(crate) path: Option<String>,
    pub(crate) value: Option<Value>,
}

/// Parse a PatchOp body (`Operations` or `operations`, `op` in any case).
pub(crate) fn parse_patch_body(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("PATCH body must be a JSON object"))?;
    if let Some(schemas) = get_ci(obj, "schemas") {
        let ok = schemas.as_array().is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_URN))
            })
        });
        if !ok {
            return Err(ScimError::invalid_syntax(format!(
                "PATCH request schemas must contain {PATCH_OP_URN}"
            )));
        }
    }
    let ops = get_ci(obj, "Operations")
        .ok_or_else(|| ScimError::invalid_syntax("PATCH request has no Operations"))?
        .as_array()
        .ok_or_else(|| ScimError::invalid_syntax("Operations must be an array"))?;
    ops.iter().map(parse_op).collect()
}

fn parse_op(raw: &Value) -> Result<PatchOp, ScimError> {
    let obj = raw
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("each operation must be an object"))?;
    let op = get_ci(obj, "op")
        .and_then(Value::as_str)
        .ok_or_else(|| ScimError::invalid_syntax("operation without op"))?;
    let kind = match op.to_ascii_lowercase().as_str() {
        "add" => OpKind::Add,
        "replace" => OpKind::Replace,
        "remove" => OpKind::Remove,
        other => {
            return Err(ScimError::invalid_syntax(format!(
                "unsupported operation [{other}]"
            )));
        }
    };
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    let value = get_ci(obj, "value").cloned();
    if kind != OpKind::Remove && value.is_none() {
        return Err(ScimError::invalid_value(format!(
            "operation {op} needs a value"
        )));
    }
    Ok(PatchOp { kind, path, value })
}

// ---------------------------------------------------------------------------------
// Case-insensitive map helpers (SCIM attribute names are case-insensitive).

/// Look up `name` case-insensitively (exact match first).
pub(crate) fn get_ci<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn key_ci(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_owned());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn get_mut_ci<'a>(map: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Value> {
    let key = key_ci(map, name)?;
    map.get_mut(&key)
}

/// Remove every case variant of `name`.
pub(crate) fn remove_ci(map: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let mut removed = None;
    while let Some(key) = key_ci(map, name) {
        removed = map.remove(&key);
    }
    removed
}

/// Set `name` (canonical spelling), dropping any case variants.
pub(crate) fn set_ci(map: &mut Map<String, Value>, name: &str, value: Value) {
    remove_ci(map, name);
    map.insert(name.to_owned(), value);
}

/// Merge `src` into `dst` key by key (nested objects merged, everything else replaced).
pub(crate) fn merge_object(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        match (get_mut_ci(dst, k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => merge_object(d, s),
            _ => set_ci(dst, k, v.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------
// User schema knowledge used to resolve paths.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Simple,
    Complex,
    Multi,
    ReadOnly,
}

#[derive(Debug)]
struct AttrDef {
    name: &'static str,
    kind: Kind,
    subs: &'static [&'static str],
}

const fn simple(name: &'static str) -> AttrDef {
    AttrDef {
        name,
        kind: Kind::Simple,
        subs: &[],
    }
}

const MULTI_SUBS: &[&str] = &["value", "display", "type", "primary"];
const ADDRESS_SUBS: &[&str] = &[
    "formatted",
    "streetAddress",
    "locality",
    "region",
    "postalCode",
    "country",
    "type",
    "primary",
];

const fn multi(name: &'static str, subs: &'static [&'static str]) -> AttrDef {
    AttrDef {
        name,
        kind: Kind::Multi,
        subs,
    }
}

const fn read_only(name: &'static str) -> AttrDef {
    AttrDef {
        name,
        kind: Kind::ReadOnly,
        subs: &[],
    }
}

const CORE_USER_ATTRS: &[AttrDef] = &[
    simple("userName"),
    AttrDef {
        name: "name",
        kind: Kind::Complex,
        subs: &[
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix",
        ],
    },
    simple("displayName"),
    simple("nickName"),
    simple("profileUrl"),
    simple("title"),
    simple("userType"),
    simple("preferredLanguage"),
    simple("locale"),
    simple("timezone"),
    simple("active"),
    simple("externalId"),
    simple("department"),
    simple("organization"),
    multi("emails", MULTI_SUBS),
    multi("phoneNumbers", MULTI_SUBS),
    multi("ims", MULTI_SUBS),
    multi("photos", MULTI_SUBS),
    multi("addresses", ADDRESS_SUBS),
    multi("entitlements", MULTI_SUBS),
    multi("roles", MULTI_SUBS),
    multi("x509Certificates", MULTI_SUBS),
    read_only("id"),
    read_only("meta"),
    read_only("groups"),
    read_only("schemas"),
];

const ENTERPRISE_ATTRS: &[AttrDef] = &[
    simple("employeeNumber"),
    simple("costCenter"),
    simple("organization"),
    simple("division"),
    simple("department"),
    AttrDef {
        name: "manager",
        kind: Kind::Complex,
        subs: &["value", "$ref", "displayName"],
    },
];

fn find_def<'a>(table: &'a [AttrDef], name: &str) -> Option<&'a AttrDef> {
    table.iter().find(|d| d.name.eq_ignore_ascii_case(name))
}

fn find_sub(def: &AttrDef, sub: &str) -> Option<&'static str> {
    def.subs
        .iter()
        .copied()
        .find(|s| s.eq_ignore_ascii_case(sub))
}

/// A resolved user path.
#[derive(Clone, Debug)]
enum UserPath {
    /// `attr` or `attr.sub`, at top level or inside an extension object.
    Attr {
        container: Option<&'static str>,
        def: &'static AttrDef,
        sub: Option<&'static str>,
    },
    /// The whole extension object.
    Extension(&'static str),
    /// `attr[filter]` or `attr[filter].sub` on a multi-valued attribute.
    Filtered {
        def: &'static AttrDef,
        filter: EqFilter,
        filter_attr: &'static str,
        sub: Option<&'static str>,
    },
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) {
        let (head, tail) = s.split_at(prefix.len());
        head.eq_ignore_ascii_case(prefix).then_some(tail)
    } else {
        None
    }
}

fn parse_user_path(path: &str) -> Result<UserPath, ScimError> {
    let bad = || ScimError::invalid_path(format!("unsupported path [{path}]"));
    if strip_prefix_ci(path, "urn:").is_some() {
        if path.eq_ignore_ascii_case(ENTERPRISE_URN) {
            return Ok(UserPath::Extension(ENTERPRISE_URN));
        }
        if strip_prefix_ci(path, ATLASSIAN_EXTERNAL_URN).is_some() {
            return Err(ScimError::mutability(format!(
                "attribute [{path}] is read-only"
            )));
        }
        if let Some(rest) = strip_prefix_ci(path, ENTERPRISE_URN).and_then(|r| r.strip_prefix(':'))
        {
            return parse_in_table(rest, ENTERPRISE_ATTRS, Some(ENTERPRISE_URN), path);
        }
        if let Some(rest) = strip_prefix_ci(path, CORE_USER_URN).and_then(|r| r.strip_prefix(':')) {
            return parse_in_table(rest, CORE_USER_ATTRS, None, path);
        }
        return Err(bad());
    }
    parse_in_table(path, CORE_USER_ATTRS, None, path)
}

fn parse_in_table(
    s: &str,
    table: &'static [AttrDef],
    container: Option<&'static str>,
    full: &str,
) -> Result<UserPath, ScimError> {
    let bad = || ScimError::invalid_path(format!("unsupported path [{full}]"));
    if let Some(open) = s.find('[') {
        let close = s.rfind(']').ok_or_else(bad)?;
        if close < open || container.is_some() {
            return Err(bad());
        }
        let def = find_def(table, &s[..open]).ok_or_else(bad)?;
        if def.kind != Kind::Multi {
            return Err(bad());
        }
        let filter = parse_eq(&s[open + 1..close])
            .map_err(|e| ScimError::invalid_path(format!("{e} in path [{full}]")))?;
        let filter_attr = find_sub(def, &filter.attr).ok_or_else(bad)?;
        let after = &s[close + 1..];
        let sub = if after.is_empty() {
            None
        } else {
            let name = after.strip_prefix('.').ok_or_else(bad)?;
            Some(find_sub(def, name).ok_or_else(bad)?)
        };
        return Ok(UserPath::Filtered {
            def,
            filter,
            filter_attr,
            sub,
        });
    }
    let (attr, sub) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let def = find_def(table, attr).ok_or_else(bad)?;
    match (def.kind, sub) {
        (Kind::ReadOnly, _) => Err(ScimError::mutability(format!(
            "attribute [{full}] is read-only"
        ))),
        (_, None) => Ok(UserPath::Attr {
            container,
            def,
            sub: None,
        }),
        (Kind::Complex, Some(name)) => Ok(UserPath::Attr {
            container,
            def,
            sub: Some(find_sub(def, name).ok_or_else(bad)?),
        }),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------
// Applying user operations.

/// Apply `ops` in order to `user`; on error the caller discards the copy.
pub(crate) fn apply_user_ops(
    user: &mut Map<String, Value>,
    ops: &[PatchOp],
) -> Result<(), ScimError> {
    for op in ops {
        match &op.path {
            Some(path) => apply_user_path(user, op.kind, path, op.value.as_ref())?,
            None => {
                if op.kind == OpKind::Remove {
                    return Err(ScimError::bad_request(
                        "noTarget",
                        "remove operation requires a path",
                    ));
                }
                let obj = op
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .ok_or_else(|| {
                        ScimError::invalid_value("operation without path needs an object value")
                    })?;
                for (k, v) in obj {
                    if ["schemas", "id", "meta"]
                        .iter()
                        .any(|skip| k.eq_ignore_ascii_case(skip))
                    {
                        continue;
                    }
                    apply_user_path(user, op.kind, k, Some(v))?;
                }
            }
        }
    }
    Ok(())
}

fn apply_user_path(
    user: &mut Map<String, Value>,
    kind: OpKind,
    path: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match parse_user_path(path)? {
        UserPath::Extension(urn) => {
            if kind == OpKind::Remove {
                remove_ci(user, urn);
                remove_schema(user, urn);
                return Ok(());
            }
            let obj = value.and_then(Value::as_object).ok_or_else(|| {
                ScimError::invalid_value(format!("value for [{path}] must be an object"))
            })?;
            ensure_object(user, urn)?;
            for (k, v) in obj {
                apply_user_path(user, kind, &format!("{urn}:{k}"), Some(v))?;
            }
            Ok(())
        }
        UserPath::Attr {
            container,
            def,
            sub,
        } => match container {
            None => apply_attr(user, kind, def, sub, value, path),
            Some(urn) => {
                if kind == OpKind::Remove && get_ci(user, urn).is_none() {
                    return Ok(());
                }
                apply_attr(ensure_object(user, urn)?, kind, def, sub, value, path)?;
                drop_empty_extension(user, urn);
                Ok(())
            }
        },
        UserPath::Filtered {
            def,
            filter,
            filter_attr,
            sub,
        } => apply_filtered(user, kind, def, &filter, filter_attr, sub, value, path),
    }
}

/// Get (creating if needed) the object `name` inside `map`, listing extensions in `schemas`.
fn ensure_object<'a>(
    map: &'a mut Map<String, Value>,
    name: &str,
) -> Result<&'a mut Map<String, Value>, ScimError> {
    if get_ci(map, name).is_none() {
        map.insert(name.to_owned(), Value::Object(Map::new()));
        if name.starts_with("urn:") {
            add_schema(map, name);
        }
    }
    get_mut_ci(map, name)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ScimError::invalid_value(format!("attribute [{name}] is not an object")))
}

fn add_schema(user: &mut Map<String, Value>, urn: &str) {
    if let Some(Value::Array(schemas)) = get_mut_ci(user, "schemas")
        && !schemas
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)))
    {
        schemas.push(Value::from(urn));
    }
}

fn remove_schema(user: &mut Map<String, Value>, urn: &str) {
    if let Some(Value::Array(schemas)) = get_mut_ci(user, "schemas") {
        schemas.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
    }
}

fn drop_empty_extension(user: &mut Map<String, Value>, urn: &str) {
    if get_ci(user, urn)
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        remove_ci(user, urn);
        remove_schema(user, urn);
    }
}

fn apply_attr(
    target: &mut Map<String, Value>,
    kind: OpKind,
    def: &AttrDef,
    sub: Option<&'static str>,
    value: Option<&Value>,
    path: &str,
) -> Result<(), ScimError> {
    let value = match (kind, value) {
        (OpKind::Remove, _) | (_, None | Some(Value::Null)) => None,
        (_, Some(v)) => Some(v),
    };
    if let Some(sub) = sub {
        match value {
            None => {
                if let Some(Value::Object(obj)) = get_mut_ci(target, def.name) {
                    remove_ci(obj, sub);
                    if obj.is_empty() {
                        remove_ci(target, def.name);
                    }
                }
            }
            Some(v) => {
                ensure_object(target, def.name)?;
                if let Some(Value::Object(obj)) = get_mut_ci(target, def.name) {
                    set_ci(obj, sub, v.clone());
                }
            }
        }
        return Ok(());
    }
    let Some(v) = value else {
        remove_ci(target, def.name);
        return Ok(());
    };
    match def.kind {
        Kind::Simple => {
            if v.is_object() || v.is_array() {
                return Err(ScimError::invalid_value(format!(
                    "value for [{path}] must be a single value"
                )));
            }
            set_ci(target, def.name, v.clone());
        }
        Kind::Complex => {
            let src = v.as_object().ok_or_else(|| {
                ScimError::invalid_value(format!("value for [{path}] must be an object"))
            })?;
            merge_object(ensure_object(target, def.name)?, src);
        }
        Kind::Multi => {
            let items: Vec<Value> = match v {
                Value::Array(a) => a.clone(),
                Value::Object(_) => vec![v.clone()],
                _ => {
                    return Err(ScimError::invalid_value(format!(
                        "value for [{path}] must be an array"
                    )));
                }
            };
            if items.iter().any(|i| !i.is_object()) {
                return Err(ScimError::invalid_value(format!(
                    "elements of [{path}] must be objects"
                )));
            }
            if kind == OpKind::Replace || get_ci(target, def.name).is_none() {
                set_ci(target, def.name, Value::Array(items));
            } else {
                let arr = get_mut_ci(target, def.name)
                    .and_then(Value::as_array_mut)
                    .ok_or_else(|| {
                        ScimError::invalid_value(format!("attribute [{path}] is not an array"))
                    })?;
                for item in items {
                    add_multi_value(arr, item);
                }
            }
        }
        Kind::ReadOnly => {
            return Err(ScimError::mutability(format!(
                "attribute [{path}] is read-only"
            )));
        }
    }
    Ok(())
}

/// Append `item` to a multi-valued attribute: an element with the same `value`
/// (case-insensitive) is merged instead; a new primary demotes the others.
fn add_multi_value(arr: &mut Vec<Value>, item: Value) {
    let Value::Object(item) = item else { return };
    let same = item.get("value").and_then(Value::as_str).and_then(|v| {
        arr.iter().position(|e| {
            e.get("value")
                .and_then(Value::as_str)
                .is_some_and(|ev| ev.to_lowercase() == v.to_lowercase())
        })
    });
    let idx = match same {
        Some(i) => {
            if let Some(Value::Object(existing)) = arr.get_mut(i) {
                merge_object(existing, &item);
            }
            i
        }
        None => {
            arr.push(Value::Object(item));
            arr.len() - 1
        }
    };
    if is_primary(&arr[idx]) {
        demote_others(arr, idx);
    }
}

fn is_primary(v: &Value) -> bool {
    v.as_object()
        .and_then(|o| get_ci(o, "primary"))
        .is_some_and(|p| p == &Value::Bool(true))
}

fn demote_others(arr: &mut [Value], keep: usize) {
    for (i, e) in arr.iter_mut().enumerate() {
        if i != keep
            && is_primary(e)
            && let Value::Object(o) = e
        {
            set_ci(o, "primary", Value::Bool(false));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    user: &mut Map<String, Value>,
    kind: OpKind,
    def: &AttrDef,
    filter: &EqFilter,
    filter_attr: &str,
    sub: Option<&'static str>,
    value: Option<&Value>,
    path: &str,
) -> Result<(), ScimError> {
    if get_ci(user, def.name).is_none() {
        if kind == OpKind::Remove {
            return Ok(());
        }
        user.insert(def.name.to_owned(), Value::Array(Vec::new()));
    }
    let arr = get_mut_ci(user, def.name)
        .and_then(Value::as_array_mut)
        .ok_or_else(|| ScimError::invalid_value(format!("attribute [{path}] is not an array")))?;
    let matching: Vec<usize> = arr
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            let field = e.as_object().and_then(|o| get_ci(o, filter_attr));
            filter.matches(field, false)
        })
        .map(|(i, _)| i)
        .collect();
    if kind == OpKind::Remove {
        match sub {
            Some(s) if !s.eq_ignore_ascii_case("value") => {
                for &i in &matching {
                    if let Some(Value::Object(o)) = arr.get_mut(i) {
                        remove_ci(o, s);
                    }
                }
            }
            _ => {
                let mut idx = 0;
                arr.retain(|_| {
                    let keep = !matching.contains(&idx);
                    idx += 1;
                    keep
                });
            }
        }
        return Ok(());
    }
    let value = value.ok_or_else(|| ScimError::invalid_value("missing value"))?;
    let patch: Map<String, Value> = match sub {
        Some(s) => {
            if value.is_object() || value.is_array() {
                return Err(ScimError::invalid_value(format!(
                    "value for [{path}] must be a single value"
                )));
            }
            Map::from_iter([(s.to_owned(), value.clone())])
        }
        None => value.as_object().cloned().ok_or_else(|| {
            ScimError::invalid_value(format!("value for [{path}] must be an object"))
        })?,
    };
    if matching.is_empty() {
        let mut elem = Map::new();
        elem.insert(filter_attr.to_owned(), filter.value.clone());
        merge_object(&mut elem, &patch);
        if get_ci(&elem, "primary").is_none() {
            elem.insert("primary".to_owned(), Value::Bool(true));
        }
        arr.push(Value::Object(elem));
        let last = arr.len() - 1;
        if is_primary(&arr[last]) {
            demote_others(arr, last);
        }
    } else {
        for &i in &matching {
            if let Some(Value::Object(o)) = arr.get_mut(i) {
                merge_object(o, &patch);
            }
        }
        if let Some(&i) = matching.iter().find(|&&i| is_primary(&arr[i])) {
            demote_others(arr, i);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Group operations.

/// A validated change to a group, applied after every operation has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GroupChange {
    AddMembers(Vec<String>),
    RemoveMembers(Vec<String>),
    RemoveAllMembers,
    ReplaceMembers(Vec<String>),
    SetExternalId(Option<Value>),
}

enum GroupPath {
    Members,
    Member(String),
    DisplayName,
    ExternalId,
}

fn parse_group_path(path: &str) -> Result<GroupPath, ScimError> {
    let bad = || ScimError::invalid_path(format!("unsupported path [{path}]"));
    let p = strip_prefix_ci(path, CORE_GROUP_URN)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(path);
    if p.eq_ignore_ascii_case("members") {
        return Ok(GroupPath::Members);
    }
    if p.eq_ignore_ascii_case("displayName") {
        return Ok(GroupPath::DisplayName);
    }
    if p.eq_ignore_ascii_case("externalId") {
        return Ok(GroupPath::ExternalId);
    }
    if let Some(inner) = strip_prefix_ci(p, "members[").and_then(|r| r.strip_suffix(']')) {
        let f = parse_eq(inner).map_err(|e| ScimError::invalid_path(format!("{e} in [{path}]")))?;
        if f.attr.eq_ignore_ascii_case("value")
            && let Some(id) = f.str_value()
        {
            return Ok(GroupPath::Member(id.to_owned()));
        }
    }
    Err(bad())
}

/// Member ids from a `members` value (an array of `{"value": id}` or one such object).
pub(crate) fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![value],
        _ => return Err(ScimError::invalid_value("members must be an array")),
    };
    items
        .into_iter()
        .map(|m| {
            m.as_object()
                .and_then(|o| get_ci(o, "value"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ScimError::invalid_value("each member needs a string value"))
        })
        .collect()
}

/// Turn group PATCH operations into changes, checking everything first.
/// `user_exists` answers whether a member id names a current user.
pub(crate) fn plan_group_ops(
    ops: &[PatchOp],
    current_name: &str,
    user_exists: impl Fn(&str) -> bool,
) -> Result<Vec<GroupChange>, ScimError> {
    let mut changes = Vec::new();
    let check_users = |ids: &[String]| -> Result<(), ScimError> {
        match ids.iter().find(|id| !user_exists(id)) {
            Some(id) => Err(ScimError::not_found(format!("user {id} does not exist"))),
            None => Ok(()),
        }
    };
    let rename_check = |value: Option<&Value>| -> Result<(), ScimError> {
        if value.and_then(Value::as_str) == Some(current_name) {
            Ok(())
        } else {
            Err(ScimError::mutability("group displayName cannot be changed"))
        }
    };
    for op in ops {
        let value = op.value.as_ref();
        let Some(path) = &op.path else {
            if op.kind == OpKind::Remove {
                return Err(ScimError::bad_request(
                    "noTarget",
                    "remove operation requires a path",
                ));
            }
            let obj = value.and_then(Value::as_object).ok_or_else(|| {
                ScimError::invalid_value("operation without path needs an object value")
            })?;
            for (k, v) in obj {
                match k.to_ascii_lowercase().as_str() {
                    "schemas" | "id" | "meta" => {}
                    "displayname" => rename_check(Some(v))?,
                    "externalid" => changes.push(GroupChange::SetExternalId(
                        Some(v.clone()).filter(|v| !v.is_null()),
                    )),
                    "members" => {
                        let ids = member_ids(v)?;
                        check_users(&ids)?;
                        changes.push(if op.kind == OpKind::Add {
                            GroupChange::AddMembers(ids)
                        } else {
                            GroupChange::ReplaceMembers(ids)
                        });
                    }
                    _ => {
                        return Err(ScimError::invalid_path(format!(
                            "unsupported attribute [{k}]"
                        )));
                    }
                }
            }
            continue;
        };
        match (parse_group_path(path)?, op.kind) {
            (GroupPath::DisplayName, OpKind::Remove) => {
                return Err(ScimError::mutability("group displayName cannot be changed"));
            }
            (GroupPath::DisplayName, _) => rename_check(value)?,
            (GroupPath::ExternalId, OpKind::Remove) => {
                changes.push(GroupChange::SetExternalId(None));
            }
            (GroupPath::ExternalId, _) => {
                changes.push(GroupChange::SetExternalId(
                    value.cloned().filter(|v| !v.is_null()),
                ));
            }
            (GroupPath::Members, OpKind::Remove) => match value {
                None | Some(Value::Null) => changes.push(GroupChange::RemoveAllMembers),
                Some(v) => changes.push(GroupChange::RemoveMembers(member_ids(v)?)),
            },
            (GroupPath::Members, kind) => {
                let ids = member_ids(value.unwrap_or(&Value::Null))?;
                check_users(&ids)?;
                changes.push(if kind == OpKind::Add {
                    GroupChange::AddMembers(ids)
                } else {
                    GroupChange::ReplaceMembers(ids)
                });
            }
            (GroupPath::Member(id), OpKind::Remove) => {
                changes.push(GroupChange::RemoveMembers(vec![id]));
            }
            (GroupPath::Member(_), _) => {
                return Err(ScimError::invalid_path(format!(
                    "[{path}] can only be used with remove"
                )));
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> Vec<PatchOp> {
        parse_patch_body(&json!({"schemas": [PATCH_OP_URN], "Operations": v})).unwrap()
    }

    fn user() -> Map<String, Value> {
        json!({
            "schemas": [CORE_USER_URN],
            "userName": "jdoe",
            "name": {"givenName": "J", "familyName": "Doe"},
            "emails": [{"value": "j@x.com", "type": "work", "primary": true}],
            "active": true
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn plain_sub_and_extension_paths() {
        let mut u = user();
        apply_user_ops(
            &mut u,
            &ops(json!([
                {"op": "Replace", "path": "name.givenName", "value": "Jane"},
                {"op": "add", "path": "title", "value": "Boss"},
                {"op": "replace", "path": format!("{ENTERPRISE_URN}:department"), "value": "R&D"},
                {"op": "replace", "path": "active", "value": false},
            ])),
        )
        .unwrap();
        assert_eq!(u["name"]["givenName"], "Jane");
        assert_eq!(u["name"]["familyName"], "Doe");
        assert_eq!(u["title"], "Boss");
        assert_eq!(u[ENTERPRISE_URN]["department"], "R&D");
        assert!(
            u["schemas"]
                .as_array()
                .unwrap()
                .contains(&json!(ENTERPRISE_URN))
        );
        assert_eq!(u["active"], false);
        apply_user_ops(
            &mut u,
            &ops(json!([{"op": "remove", "path": format!("{ENTERPRISE_URN}:department")}])),
        )
        .unwrap();
        assert!(u.get(ENTERPRISE_URN).is_none());
    }

    #[test]
    fn value_paths() {
        let mut u = user();
        apply_user_ops(
            &mut u,
            &ops(json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@x.com"},
                {"op": "add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555"},
            ])),
        )
        .unwrap();
        assert_eq!(
            u["emails"],
            json!([{"value": "new@x.com", "type": "work", "primary": true}])
        );
        assert_eq!(
            u["phoneNumbers"],
            json!([{"type": "work", "value": "+1 555", "primary": true}])
        );
        apply_user_ops(
            &mut u,
            &ops(json!([{"op": "remove", "path": "phoneNumbers[type eq \"work\"].value"}])),
        )
        .unwrap();
        assert_eq!(u["phoneNumbers"], json!([]));
    }

    #[test]
    fn no_path_merge_and_errors() {
        let mut u = user();
        apply_user_ops(
            &mut u,
            &ops(json!([{"op": "replace", "value": {
                "name": {"givenName": "Z"},
                "displayName": "Z Doe",
                ENTERPRISE_URN: {"organization": "Acme"}
            }}])),
        )
        .unwrap();
        assert_eq!(u["name"], json!({"givenName": "Z", "familyName": "Doe"}));
        assert_eq!(u[ENTERPRISE_URN]["organization"], "Acme");

        let err = apply_user_ops(&mut user(), &ops(json!([{"op": "remove"}]))).unwrap_err();
        assert_eq!(err.scim_type, Some("noTarget"));
        for bad in [
            "foo",
            "name.nope",
            "emails.value",
            "urn:x:y:z",
            "title[type eq \"a\"]",
        ] {
            let err = apply_user_ops(
                &mut user(),
                &ops(json!([{"op": "replace", "path": bad, "value": "x"}])),
            )
            .unwrap_err();
            assert_eq!(err.scim_type, Some("invalidPath"), "{bad}");
        }
        let err = apply_user_ops(
            &mut user(),
            &ops(json!([{"op": "replace", "path": "id", "value": "x"}])),
        )
        .unwrap_err();
        assert_eq!(err.scim_type, Some("mutability"));
    }

    #[test]
    fn lowercase_operations_key_and_bad_op() {
        let parsed =
            parse_patch_body(&json!({"operations": [{"op": "REMOVE", "path": "title"}]})).unwrap();
        assert_eq!(parsed[0].kind, OpKind::Remove);
        assert!(parse_patch_body(&json!({"Operations": [{"op": "move"}]})).is_err());
        assert!(parse_patch_body(&json!({"schemas": ["x"], "Operations": []})).is_err());
    }

    #[test]
    fn group_plan() {
        let exists = |id: &str| id.starts_with('u');
        let plan = plan_group_ops(
            &ops(json!([
                {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
                {"op": "remove", "path": "members[value eq \"u1\"]"},
                {"op": "remove", "path": "members", "value": [{"value": "u2"}]},
                {"op": "replace", "path": "displayName", "value": "G"},
            ])),
            "G",
            exists,
        )
        .unwrap();
        assert_eq!(plan.len(), 3);
        let err = plan_group_ops(
            &ops(json!([{"op": "add", "path": "members", "value": [{"value": "x9"}]}])),
            "G",
            exists,
        )
        .unwrap_err();
        assert_eq!(err.status.as_u16(), 404);
        let err = plan_group_ops(
            &ops(json!([{"op": "replace", "value": {"displayName": "H"}}])),
            "G",
            exists,
        )
        .unwrap_err();
        assert_eq!(err.scim_type, Some("mutability"));
    }
}
