//! The one filter form Atlassian understands: a single `attr eq value` comparison.

use serde_json::Value;

/// A parsed `attr eq value` expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EqFilter {
    /// The attribute as written (compare case-insensitively).
    pub(crate) attr: String,
    /// A JSON literal: string, boolean, number or null.
    pub(crate) value: Value,
}

impl EqFilter {
    /// The value when it is a string.
    pub(crate) fn str_value(&self) -> Option<&str> {
        self.value.as_str()
    }

    /// Whether `candidate` satisfies the comparison (strings case-insensitively when
    /// `case_exact` is false).
    pub(crate) fn matches(&self, candidate: Option<&Value>, case_exact: bool) -> bool {
        match (candidate, &self.value) {
            (Some(Value::String(a)), Value::String(b)) => {
                if case_exact {
                    a == b
                } else {
                    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
                }
            }
            (None | Some(Value::Null), Value::Null) => true,
            (Some(a), b) => a == b,
            (None, _) => false,
        }
    }
}

/// Parse exactly one `attr eq value` expression; anything else is an error message.
pub(crate) fn parse_eq(input: &str) -> Result<EqFilter, String> {
    let s = input.trim();
    let attr_end = s.find(char::is_whitespace).unwrap_or(s.len());
    let attr = &s[..attr_end];
    if attr.is_empty()
        || !attr.starts_with(|c: char| c.is_ascii_alphabetic())
        || !attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '$'))
    {
        return Err(format!("unsupported filter attribute in [{input}]"));
    }
    let rest = s[attr_end..].trim_start();
    let op_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let op = &rest[..op_end];
    if !op.eq_ignore_ascii_case("eq") {
        return Err(format!(
            "unsupported filter operator [{op}]; only a single eq is supported"
        ));
    }
    let value_text = rest[op_end..].trim_start();
    if value_text.is_empty() {
        return Err(format!("missing comparison value in filter [{input}]"));
    }
    let mut values = serde_json::Deserializer::from_str(value_text).into_iter::<Value>();
    let value = match values.next() {
        Some(Ok(v @ (Value::String(_) | Value::Bool(_) | Value::Number(_) | Value::Null))) => v,
        _ => return Err(format!("invalid comparison value in filter [{input}]")),
    };
    if !value_text[values.byte_offset()..].trim().is_empty() {
        return Err(format!(
            "unsupported filter [{input}]; only a single eq is supported"
        ));
    }
    Ok(EqFilter {
        attr: attr.to_owned(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_single_eq() {
        let f = parse_eq(r#"userName eq "a@b.c""#).unwrap();
        assert_eq!(f.attr, "userName");
        assert_eq!(f.value, json!("a@b.c"));
        let f = parse_eq(r#"  externalId EQ "x \"q\" y"  "#).unwrap();
        assert_eq!(f.value, json!("x \"q\" y"));
        let f = parse_eq("primary eq true").unwrap();
        assert_eq!(f.value, json!(true));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            r#"userName co "a""#,
            r#"userName eq "a" and externalId eq "b""#,
            r#"userName eq "a" or userName eq "b""#,
            r#"emails[type eq "work"].value eq "a@b.c""#,
            "userName eq jdoe",
            "userName pr",
            r#"userName eq "unterminated"#,
            "",
            r#"(userName eq "a")"#,
        ] {
            assert!(parse_eq(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let f = parse_eq(r#"userName eq "JDoe""#).unwrap();
        assert!(f.matches(Some(&json!("jdoe")), false));
        assert!(!f.matches(Some(&json!("jdoe")), true));
        assert!(!f.matches(None, false));
    }
}
