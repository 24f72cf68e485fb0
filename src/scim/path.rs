//! SCIM attribute paths, the subset of RFC 7644 §3.10 the engine maps onto.
//!
//! A mapped attribute is addressed by its path (`userName`, `name.givenName`,
//! `emails[type eq "work"].value`, `urn:…:enterprise:2.0:User:department`).
//! This module parses those paths, reads their value out of a SCIM resource,
//! writes them into a request body, and turns a change into a PATCH operation.

use std::fmt;

use serde_json::{Map, Value};

/// A parsed attribute path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttrPath {
    /// A top-level attribute: `userName`, `active`.
    Simple(String),
    /// A sub-attribute of a complex attribute: `name.givenName`.
    Sub(String, String),
    /// An attribute of a schema extension: `urn:…:User:department`.
    Extension {
        /// The extension's schema URN.
        urn: String,
        /// The attribute inside it.
        attr: String,
    },
    /// A sub-attribute of the element of a multi-valued attribute selected by
    /// type: `emails[type eq "work"].value`.
    Typed {
        /// The multi-valued attribute (`emails`).
        attr: String,
        /// The element's `type` (`work`).
        type_: String,
        /// The sub-attribute (`value`).
        sub: String,
    },
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

impl AttrPath {
    /// Parse a path; `None` when it is outside the supported forms.
    pub fn parse(s: &str) -> Option<AttrPath> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("urn:") {
            let (urn, attr) = s.rsplit_once(':')?;
            if rest.is_empty() || !is_name(attr) || urn.len() <= 4 {
                return None;
            }
            return Some(AttrPath::Extension {
                urn: urn.to_owned(),
                attr: attr.to_owned(),
            });
        }
        if let Some((attr, rest)) = s.split_once('[') {
            let (filter, sub) = rest.split_once("].")?;
            let mut words = filter.splitn(3, ' ');
            let (key, op, value) = (words.next()?, words.next()?, words.next()?);
            if !key.eq_ignore_ascii_case("type") || !op.eq_ignore_ascii_case("eq") {
                return None;
            }
            let type_ = value.strip_prefix('"')?.strip_suffix('"')?;
            if !is_name(attr) || !is_name(sub) || type_.is_empty() || type_.contains('"') {
                return None;
            }
            return Some(AttrPath::Typed {
                attr: attr.to_owned(),
                type_: type_.to_owned(),
                sub: sub.to_owned(),
            });
        }
        if let Some((attr, sub)) = s.split_once('.') {
            return (is_name(attr) && is_name(sub))
                .then(|| AttrPath::Sub(attr.to_owned(), sub.to_owned()));
        }
        is_name(s).then(|| AttrPath::Simple(s.to_owned()))
    }

    /// Whether values at this path compare case-insensitively (email addresses).
    pub fn case_insensitive(&self) -> bool {
        matches!(self, AttrPath::Typed { attr, .. } if attr.eq_ignore_ascii_case("emails"))
    }

    /// Read this path's value from a SCIM resource. Empty strings and nulls read as absent.
    pub fn get(&self, resource: &Value) -> Option<Value> {
        let found = match self {
            AttrPath::Simple(a) => get_ci(resource, a).cloned(),
            AttrPath::Sub(a, s) => get_ci(resource, a).and_then(|v| get_ci(v, s)).cloned(),
            AttrPath::Extension { urn, attr } => {
                get_ci(resource, urn).and_then(|v| get_ci(v, attr)).cloned()
            }
            AttrPath::Typed { attr, type_, sub } => {
                let items = get_ci(resource, attr)?.as_array()?;
                let typed = items.iter().find(|i| {
                    get_ci(i, "type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.eq_ignore_ascii_case(type_))
                });
                // A target that drops `type` still marks one element primary.
                let any_typed = items.iter().any(|i| get_ci(i, "type").is_some());
                let chosen = typed.or_else(|| {
                    (!any_typed)
                        .then(|| {
                            items
                                .iter()
                                .find(|i| get_ci(i, "primary") == Some(&Value::Bool(true)))
                                .or(items.first())
                        })
                        .flatten()
                });
                chosen.and_then(|i| get_ci(i, sub)).cloned()
            }
        };
        match found {
            Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            other => other,
        }
    }

    /// Write `value` at this path into a resource body being built.
    pub fn set(&self, body: &mut Map<String, Value>, value: Value) {
        match self {
            AttrPath::Simple(a) => {
                body.insert(a.clone(), value);
            }
            AttrPath::Sub(a, s) => {
                object_at(body, a).insert(s.clone(), value);
            }
            AttrPath::Extension { urn, attr } => {
                object_at(body, urn).insert(attr.clone(), value);
            }
            AttrPath::Typed { attr, type_, sub } => {
                let list = body
                    .entry(attr.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !list.is_array() {
                    *list = Value::Array(Vec::new());
                }
                let items = list.as_array_mut().expect("array ensured above");
                let primary = items.is_empty();
                items.push(element(type_, sub, value, primary));
            }
        }
    }

    /// The PATCH operation that sets (`Some`) or clears (`None`) this path.
    ///
    /// Typed multi-valued attributes are replaced whole (`emails` with one
    /// primary work element): Atlassian documents plain attribute paths only,
    /// and every target accepts a whole-attribute replace.
    pub fn patch_op(&self, value: Option<Value>) -> Value {
        match (self, value) {
            (AttrPath::Typed { attr, type_, sub }, Some(v)) => serde_json::json!({
                "op": "replace",
                "path": attr,
                "value": [element(type_, sub, v, true)],
            }),
            (AttrPath::Typed { attr, type_, .. }, None) => serde_json::json!({
                "op": "remove",
                "path": format!("{attr}[type eq \"{type_}\"]"),
            }),
            (_, Some(v)) => {
                serde_json::json!({"op": "replace", "path": self.to_string(), "value": v})
            }
            (_, None) => serde_json::json!({"op": "remove", "path": self.to_string()}),
        }
    }
}

fn element(type_: &str, sub: &str, value: Value, primary: bool) -> Value {
    let mut e = Map::new();
    e.insert(sub.to_owned(), value);
    e.insert("type".into(), Value::String(type_.to_owned()));
    e.insert("primary".into(), Value::Bool(primary));
    Value::Object(e)
}

fn object_at<'a>(body: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = body
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("object ensured above")
}

/// Case-insensitive member lookup (SCIM attribute names are case-insensitive).
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrPath::Simple(a) => f.write_str(a),
            AttrPath::Sub(a, s) => write!(f, "{a}.{s}"),
            AttrPath::Extension { urn, attr } => write!(f, "{urn}:{attr}"),
            AttrPath::Typed { attr, type_, sub } => write!(f, "{attr}[type eq \"{type_}\"].{sub}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_supported_forms_and_round_trips() {
        for s in [
            "userName",
            "name.givenName",
            "emails[type eq \"work\"].value",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        ] {
            let p = AttrPath::parse(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(p.to_string(), s);
        }
        for bad in [
            "",
            "a.b.c",
            "emails[value eq \"x\"].value",
            "urn:",
            "1abc",
            "x[type eq work].value",
        ] {
            assert!(AttrPath::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn get_reads_nested_typed_and_extension_values() {
        let user = json!({
            "userName": "ann",
            "name": {"givenName": "Ann"},
            "emails": [{"value": "home@x.org", "type": "home"}, {"value": "ann@x.org", "type": "work", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"},
            "title": ""
        });
        let get = |s: &str| AttrPath::parse(s).unwrap().get(&user);
        assert_eq!(get("username"), Some(json!("ann")));
        assert_eq!(get("name.givenName"), Some(json!("Ann")));
        assert_eq!(
            get("emails[type eq \"work\"].value"),
            Some(json!("ann@x.org"))
        );
        assert_eq!(
            get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            Some(json!("R&D"))
        );
        assert_eq!(get("title"), None);
        assert_eq!(get("nickName"), None);
    }

    #[test]
    fn set_then_get_is_identity() {
        let mut body = Map::new();
        let paths = [
            ("userName", json!("bob")),
            ("name.familyName", json!("Builder")),
            ("emails[type eq \"work\"].value", json!("bob@x.org")),
            ("urn:x:ext:User:costCenter", json!("42")),
            ("active", json!(true)),
        ];
        for (p, v) in &paths {
            AttrPath::parse(p).unwrap().set(&mut body, v.clone());
        }
        let body = Value::Object(body);
        for (p, v) in &paths {
            assert_eq!(
                AttrPath::parse(p).unwrap().get(&body).as_ref(),
                Some(v),
                "{p}"
            );
        }
        assert_eq!(body["emails"][0]["primary"], json!(true));
    }

    #[test]
    fn patch_ops() {
        let email = AttrPath::parse("emails[type eq \"work\"].value").unwrap();
        assert_eq!(
            email.patch_op(Some(json!("n@x.org"))),
            json!({"op":"replace","path":"emails","value":[{"value":"n@x.org","type":"work","primary":true}]})
        );
        let title = AttrPath::parse("title").unwrap();
        assert_eq!(title.patch_op(None), json!({"op":"remove","path":"title"}));
    }
}
