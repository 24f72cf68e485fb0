//! Domain types that cross the pipeline's stage boundaries.
//!
//! A source loader produces a [`Snapshot`]: the people and groups of the local
//! directory, plus every record it had to reject and why. Nothing in here knows
//! about SCIM or HTTP; the mapping stage turns a snapshot into the desired
//! target state (`plan::Desired`).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The stable identifier of a person or group in the source directory
/// (employee number, LDAP `objectGUID`, ...). Sent to the target as `externalId`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceId(pub String);

/// The identifier the SCIM target assigned to a resource (`id`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScimId(pub String);

macro_rules! id_impls {
    ($t:ty) => {
        impl $t {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}
id_impls!(SourceId);
id_impls!(ScimId);

/// Where a source record came from, for error messages and report rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The file the record was read from.
    pub file: String,
    /// Its position: `line 12` for CSV, `users[3]` for JSON.
    pub location: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.location)
    }
}

/// One person in the source directory, as loaded (before mapping).
///
/// Well-known fields have names of their own; anything else a file carries is
/// kept in `custom` so mapping templates can use it (`{cost_center}`). An empty
/// string means "no value".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUser {
    /// Stable source identifier (required).
    pub id: SourceId,
    /// Field values by canonical name: `user_name`, `given_name`, `family_name`,
    /// `display_name`, `email`, `title`, `department`, `organization`,
    /// `timezone`, `preferred_language`, `phone`, plus custom columns.
    pub fields: Fields,
    /// Whether the person is active in the source (`active` column; default true).
    pub active: bool,
    /// Names of the source groups the record itself lists (`groups` column).
    pub groups: Vec<String>,
    /// Where it came from.
    pub origin: Origin,
}

impl SourceUser {
    /// A field's value, or `""` when absent. `id` and `active` are fields too.
    pub fn field(&self, name: &str) -> &str {
        match name {
            "id" => self.id.as_str(),
            "active" => {
                if self.active {
                    "true"
                } else {
                    "false"
                }
            }
            _ => self.fields.get(name).map(String::as_str).unwrap_or(""),
        }
    }
}

/// A source record's values by canonical field name, sorted by name, each
/// name at most once.
///
/// A directory has millions of these, so the names the loaders know (`id`,
/// `active`, `groups` and [`STANDARD_FIELDS`]) are shared static strings,
/// not a copy per record, and the pairs sit in one vector rather than a tree
/// of nodes; it otherwise reads like the sorted map it replaces (same order,
/// same JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(Cow<'static, str>, String)>);

/// The static copy of a field name the loaders know, or an owned one.
pub fn field_name(name: &str) -> Cow<'static, str> {
    ["id", "active", "groups"]
        .iter()
        .chain(STANDARD_FIELDS)
        .find(|known| **known == name)
        .map_or_else(
            || Cow::Owned(name.to_owned()),
            |known| Cow::Borrowed(*known),
        )
}

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    /// Set `name` to `value`; the value it replaces, if any.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: String) -> Option<String> {
        let name = name.into();
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                let name = match name {
                    Cow::Owned(n) => field_name(&n),
                    borrowed => borrowed,
                };
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// Remove `name`; its value, if it had one.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    /// Keep the fields `keep` says yes to (it may edit the value).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut String) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    /// (name, value) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &String)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The values in name order.
    pub fn values(&self) -> impl Iterator<Item = &String> + '_ {
        self.0.iter().map(|(_, v)| v)
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Fields {
    /// From pairs in any order; of the same name the last value wins, as
    /// inserting them one by one would give.
    pub fn from_pairs(mut pairs: Vec<(Cow<'static, str>, String)>) -> Self {
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: of equal names the last stays last, and wins below.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                match out.last_mut() {
                    Some(last) if last.0 == k => last.1 = v,
                    _ => out.push((k, v)),
                }
            }
            pairs = out;
        }
        Self(pairs)
    }
}

impl<K: AsRef<str>> FromIterator<(K, String)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, String)>>(iter: I) -> Self {
        Self::from_pairs(
            iter.into_iter()
                .map(|(k, v)| (field_name(k.as_ref()), v))
                .collect(),
        )
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of field names to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = access.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// The canonical field names a source record may carry besides `id`, `active`
/// and `groups`. Other columns are kept as custom fields.
pub const STANDARD_FIELDS: &[&str] = &[
    "user_name",
    "given_name",
    "family_name",
    "display_name",
    "email",
    "title",
    "department",
    "organization",
    "timezone",
    "preferred_language",
    "phone",
];

/// One group in the source directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceGroup {
    /// Stable identifier (defaults to the name when the source has none).
    pub id: SourceId,
    /// Display name, as it should appear in the target.
    pub name: String,
    /// Members, by user source id.
    pub members: BTreeSet<SourceId>,
    /// Where it was first seen.
    pub origin: Origin,
}

/// Which kind of record a rejection concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A person.
    User,
    /// A group or membership row.
    Group,
}

/// A source record that could not be used, with the reason. Rejected records are
/// listed in the plan and get a report row; they never abort a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// User or group.
    pub kind: RecordKind,
    /// Where it came from.
    pub origin: Origin,
    /// The record's source id when one could be read. The engine leaves the
    /// target account of such an id untouched (never deprovisions it because
    /// of a bad row).
    pub source_id: Option<SourceId>,
    /// A label for humans (userName, email or group name) when one was read.
    pub label: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

/// Everything a source loader read: valid records and rejections.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Valid people, unique by id, in file order.
    pub users: Vec<SourceUser>,
    /// Groups, unique by id.
    pub groups: Vec<SourceGroup>,
    /// Records that were not usable.
    pub rejects: Vec<Reject>,
}

/// Why `s` is not a usable email address, or `None` when it is. A pragmatic
/// check (one `@`, a dotted domain, no spaces or control characters, RFC 5321
/// lengths), not a full RFC 5322 parser.
pub fn email_problem(s: &str) -> Option<&'static str> {
    if s.len() > 254 {
        return Some("longer than 254 characters");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or control characters");
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Some("has no `@`");
    };
    if local.is_empty() || local.len() > 64 {
        return Some("has an empty or over-long local part");
    }
    if local.contains('@') && !(local.starts_with('"') && local.ends_with('"')) {
        return Some("has more than one `@`");
    }
    if domain.is_empty() || !domain.contains('.') {
        return Some("has no dotted domain after `@`");
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Some("has a malformed domain");
    }
    if !domain
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
    {
        return Some("has invalid characters in its domain");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_like_a_sorted_map_and_share_known_names() {
        let mut f: Fields = [("title", "CTO".to_string()), ("email", "a@x.org".into())]
            .into_iter()
            .collect();
        assert_eq!(f.insert("cost_center".to_string(), "42".into()), None);
        assert_eq!(f.insert("title", "CEO".into()), Some("CTO".into()));
        let names: Vec<&str> = f.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["cost_center", "email", "title"]);
        assert!(
            matches!(f.0[1].0, Cow::Borrowed(_)),
            "a standard name is not copied"
        );
        assert!(matches!(
            field_name("email".to_string().as_str()),
            Cow::Borrowed(_)
        ));
        f.retain(|k, v| {
            v.push('!');
            k != "email"
        });
        assert_eq!(f.get("title").map(String::as_str), Some("CEO!"));
        assert_eq!(f.remove("email"), None);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"cost_center":"42!","title":"CEO!"}"#);
        assert_eq!(serde_json::from_str::<Fields>(&json).unwrap(), f);
        let dup: Fields = [("a", "1".to_string()), ("b", "2".into()), ("a", "3".into())]
            .into_iter()
            .collect();
        assert_eq!(dup.get("a").map(String::as_str), Some("3"));
        assert_eq!(dup.len(), 2);
    }

    #[test]
    fn email_checks() {
        assert_eq!(email_problem("ann@example.com"), None);
        assert_eq!(email_problem("ann.o'neil+tag@sub.example.co.uk"), None);
        assert!(email_problem("ann").is_some());
        assert!(email_problem("ann@localhost").is_some());
        assert!(email_problem("a b@example.com").is_some());
        assert!(email_problem("ann@@example.com").is_some());
        assert!(email_problem("@example.com").is_some());
        assert!(email_problem("ann@example..com").is_some());
        assert!(email_problem("ann@exa_mple.com").is_some());
    }
}
