//! SCIM 2.0 wire format (RFC 7643/7644): schema URNs, attribute paths, request
//! bodies, list responses and error bodies. Pure data handling, no I/O; the
//! HTTP client lives in `push::client`.

mod path;

pub use path::AttrPath;

use serde_json::{Map, Value, json};

use crate::model::ScimId;
use crate::plan::Attrs;

/// Core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// PATCH request message.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// List response message.
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Error message.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Build a POST /Users body from mapped attributes.
pub fn user_body(attrs: &Attrs) -> Value {
    let mut body = Map::new();
    let mut schemas = vec![Value::String(USER_SCHEMA.into())];
    for (path, value) in attrs {
        let Some(p) = AttrPath::parse(path) else {
            continue;
        };
        if let AttrPath::Extension { urn, .. } = &p
            && !schemas.iter().any(|s| s.as_str() == Some(urn))
        {
            schemas.push(Value::String(urn.clone()));
        }
        p.set(&mut body, value.clone());
    }
    body.insert("schemas".into(), Value::Array(schemas));
    Value::Object(body)
}

/// Build a POST /Groups body (members are added afterwards in chunks).
pub fn group_body(display_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": display_name,
        "externalId": external_id,
    })
}

/// Wrap PATCH operations in a PatchOp message.
pub fn patch_body(operations: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

/// The PATCH operation adding members.
pub fn add_members_op(ids: &[&ScimId]) -> Value {
    let values: Vec<Value> = ids.iter().map(|id| json!({"value": id.as_str()})).collect();
    json!({"op": "add", "path": "members", "value": values})
}

/// The PATCH operation removing one member (RFC 7644 value-path form).
pub fn remove_member_op(id: &ScimId) -> Value {
    json!({"op": "remove", "path": format!("members[value eq \"{}\"]", id.as_str())})
}

/// Read the managed attributes of a user resource.
pub fn read_attrs<'a>(resource: &Value, managed: impl Iterator<Item = &'a str>) -> Attrs {
    let mut attrs = Attrs::new();
    for path in managed {
        if let Some(p) = AttrPath::parse(path)
            && let Some(v) = p.get(resource)
        {
            // The shared copy of the path: no string per attribute per account.
            attrs.insert(crate::plan::attr_path(path), v);
        }
    }
    attrs
}

/// The `id` of a resource.
pub fn resource_id(resource: &Value) -> Option<ScimId> {
    match resource.get("id")? {
        Value::String(s) if !s.is_empty() => Some(ScimId(s.clone())),
        Value::Number(n) => Some(ScimId(n.to_string())),
        _ => None,
    }
}

/// A string attribute of a resource (top level, case-insensitive name).
pub fn str_attr<'a>(resource: &'a Value, name: &str) -> Option<&'a str> {
    let obj = resource.as_object()?;
    obj.get(name)
        .or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })?
        .as_str()
}

/// One page of a ListResponse.
#[derive(Debug)]
pub struct ListPage {
    /// `totalResults`.
    pub total_results: usize,
    /// `Resources` (may be missing when empty).
    pub resources: Vec<Value>,
}

/// Parse a ListResponse leniently (`itemsPerPage` is ignored: Atlassian's is wrong).
pub fn parse_list(body: &Value) -> Result<ListPage, String> {
    let obj = body
        .as_object()
        .ok_or("list response is not a JSON object")?;
    let get = |k: &str| {
        obj.get(k).or_else(|| {
            obj.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        })
    };
    let total_results = match get("totalResults") {
        Some(Value::Number(n)) => n.as_u64().ok_or("totalResults is not a whole number")? as usize,
        Some(Value::String(s)) => s.parse().map_err(|_| "totalResults is not a number")?,
        _ => return Err("list response has no totalResults".into()),
    };
    let resources = match get("Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err("Resources is not an array".into()),
    };
    Ok(ListPage {
        total_results,
        resources,
    })
}

/// What an error response said, parsed leniently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// SCIM `status` (a string at Atlassian), when present.
    pub status: Option<u16>,
    /// SCIM `scimType`.
    pub scim_type: Option<String>,
    /// `detail`, Atlassian's `error`, an exception `message`, or raw text (≤ 500 chars).
    pub detail: String,
    /// Atlassian's `traceId`.
    pub trace_id: Option<String>,
}

/// Longest raw error text kept.
pub const MAX_DETAIL: usize = 500;

/// Cut text to at most `max` characters, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Parse an error body: SCIM Error, then `{error, traceId}`, then an exception
/// shape (`message`), then raw text. Never fails.
pub fn parse_error_body(bytes: &[u8]) -> ErrorBody {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) {
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        let status = match obj.get("status") {
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        };
        let detail = s("detail")
            .or_else(|| s("error"))
            .or_else(|| s("message"))
            .or_else(|| s("error_description"))
            .unwrap_or_else(|| text.to_string());
        return ErrorBody {
            status,
            scim_type: s("scimType"),
            detail: truncate(&detail, MAX_DETAIL),
            trace_id: s("traceId"),
        };
    }
    let looks_html = text.trim_start().starts_with('<');
    let detail = if looks_html {
        // Keep the page's title or first text, not its markup.
        let title = text
            .split_once("<title>")
            .and_then(|(_, rest)| rest.split_once("</title>"))
            .map(|(t, _)| t.trim().to_owned());
        format!(
            "HTML page: {}",
            title.unwrap_or_else(|| truncate(&text, 120))
        )
    } else {
        text.to_string()
    };
    ErrorBody {
        detail: truncate(&detail, MAX_DETAIL),
        ..ErrorBody::default()
    }
}

/// Whether a JSON body is a SCIM Error message (some servers send one with 200).
pub fn is_error_message(body: &Value) -> bool {
    body.get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(ERROR)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_parsed_leniently() {
        let b = parse_error_body(
            br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"Resource [USER]: with email[a@x.org] already exists."}"#,
        );
        assert_eq!(b.status, Some(409));
        assert_eq!(b.scim_type.as_deref(), Some("uniqueness"));
        assert!(b.detail.contains("already exists"));
        let b = parse_error_body(br#"{"error":"Unauthorized","traceId":"abc123"}"#);
        assert_eq!(b.detail, "Unauthorized");
        assert_eq!(b.trace_id.as_deref(), Some("abc123"));
        let b = parse_error_body(b"<html><head><title>502 Bad Gateway</title></head></html>");
        assert_eq!(b.detail, "HTML page: 502 Bad Gateway");
        let long = "x".repeat(2000);
        assert!(parse_error_body(long.as_bytes()).detail.chars().count() <= MAX_DETAIL + 1);
        assert_eq!(parse_error_body(b"").detail, "");
        assert_eq!(parse_error_body(&[0xff, 0xfe]).detail.chars().count(), 2);
    }

    #[test]
    fn list_parsing_ignores_items_per_page() {
        let p = parse_list(
            &json!({"totalResults": 3, "itemsPerPage": 10000, "Resources": [{"id": "a"}]}),
        )
        .unwrap();
        assert_eq!(p.total_results, 3);
        assert_eq!(p.resources.len(), 1);
        assert!(parse_list(&json!({"Resources": []})).is_err());
        assert_eq!(
            parse_list(&json!({"totalResults": 0}))
                .unwrap()
                .resources
                .len(),
            0
        );
    }

    #[test]
    fn user_body_nests_paths_and_lists_extension_schemas() {
        let mut attrs = Attrs::new();
        attrs.insert("userName", json!("ann"));
        attrs.insert("name.givenName", json!("Ann"));
        attrs.insert(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            json!("R&D"),
        );
        let b = user_body(&attrs);
        assert_eq!(b["name"]["givenName"], json!("Ann"));
        assert_eq!(b["schemas"].as_array().unwrap().len(), 2);
    }
}
