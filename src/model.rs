//! Domain types that cross the pipeline's stage boundaries.
//!
//! A source loader produces a [`Snapshot`]: the people and groups of the local
//! directory, plus every record it had to reject and why. Nothing in here knows
//! about SCIM or HTTP; the mapping stage turns a snapshot into the desired
//! target state (`plan::Desired`).

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::namemap::{NameMap, Names};

/// The stable identifier of a person or group in the source directory
/// (employee number, LDAP `objectGUID`, ...). Sent to the target as `externalId`.
///
/// Held inline when it is at most 24 bytes (an employee number, a short
/// name), on the heap otherwise: a large directory carries millions of them
/// (every membership is one), and most would otherwise be an allocation of
/// a few bytes each, compared through a pointer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceId(pub CompactString);

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
        // Ordered and hashed as its text (derived over the one field), so
        // maps keyed by it can be searched with a `&str`.
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
    };
}
id_impls!(SourceId);
id_impls!(ScimId);

/// A group's members by user source id: sorted, each id once.
///
/// One vector rather than a tree: a large directory has millions of
/// memberships, read in order from a file or the store, so the set is
/// sorted in place once (or found sorted) instead of copied into tree
/// nodes, and two sets compare and differ by walking both once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Members(Vec<SourceId>);

impl Members {
    /// No members.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// From ids in any order, repeats allowed.
    pub fn from_vec(mut ids: Vec<SourceId>) -> Self {
        // Cheap when they are already sorted, as the store gives them.
        if !ids.is_sorted() {
            ids.sort_unstable();
        }
        ids.dedup();
        Self(ids)
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members, sorted.
    pub fn iter(&self) -> std::slice::Iter<'_, SourceId> {
        self.0.iter()
    }

    /// Whether `id` is a member.
    pub fn contains<Q: Ord + ?Sized>(&self, id: &Q) -> bool
    where
        SourceId: std::borrow::Borrow<Q>,
    {
        use std::borrow::Borrow;
        self.0.binary_search_by(|m| m.borrow().cmp(id)).is_ok()
    }

    /// Add `id`; false when it was a member already.
    pub fn insert(&mut self, id: SourceId) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, id);
                true
            }
        }
    }

    /// Remove `id`; false when it was not a member.
    pub fn remove<Q: Ord + ?Sized>(&mut self, id: &Q) -> bool
    where
        SourceId: std::borrow::Borrow<Q>,
    {
        use std::borrow::Borrow;
        match self.0.binary_search_by(|m| m.borrow().cmp(id)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Keep the members for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&SourceId) -> bool) {
        self.0.retain(keep);
    }

    /// The members of `self` that are not members of `other`, in order
    /// (one walk of both).
    pub fn difference<'a>(&'a self, other: &'a Members) -> impl Iterator<Item = &'a SourceId> + 'a {
        let mut theirs = other.0.iter().peekable();
        self.0.iter().filter(move |m| {
            while theirs.next_if(|t| *t < *m).is_some() {}
            theirs.peek() != Some(m)
        })
    }
}

impl Extend<SourceId> for Members {
    fn extend<I: IntoIterator<Item = SourceId>>(&mut self, ids: I) {
        let mut all = std::mem::take(&mut self.0);
        all.extend(ids);
        *self = Self::from_vec(all);
    }
}

impl FromIterator<SourceId> for Members {
    fn from_iter<I: IntoIterator<Item = SourceId>>(ids: I) -> Self {
        Self::from_vec(ids.into_iter().collect())
    }
}

impl IntoIterator for Members {
    type Item = SourceId;
    type IntoIter = std::vec::IntoIter<SourceId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Members {
    type Item = &'a SourceId;
    type IntoIter = std::slice::Iter<'a, SourceId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<SourceId>::deserialize(d).map(Self::from_vec)
    }
}

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
    /// [`SourceUser::field`] for a name as [`field_name`] gives it (a
    /// template's): a known name is found by address.
    // The variant is the point: a borrowed name is the shared copy.
    #[allow(clippy::ptr_arg)]
    pub fn field_named(&self, name: &Cow<'static, str>) -> &str {
        match name.as_ref() {
            "id" | "active" => self.field(name),
            _ => self
                .fields
                .get_named(name)
                .map(CompactString::as_str)
                .unwrap_or(""),
        }
    }

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
            _ => self
                .fields
                .get(name)
                .map(CompactString::as_str)
                .unwrap_or(""),
        }
    }
}

/// A source record's values by canonical field name, sorted by name, each
/// name at most once. The names the loaders know (`id`, `active`, `groups`
/// and [`STANDARD_FIELDS`]) are shared static strings, not a copy per record.
pub type Fields = NameMap<CompactString, FieldNames>;

/// The [`Names`] of [`Fields`]: the known field names, shared.
pub struct FieldNames;

impl Names for FieldNames {
    fn name(name: &str) -> Cow<'static, str> {
        field_name(name)
    }
}

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
    pub members: Members,
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
    // Byte by byte when ASCII (most addresses): for ASCII, whitespace is
    // the space and control characters.
    let blank = if s.is_ascii() {
        s.bytes().any(|b| b == b' ' || b.is_ascii_control())
    } else {
        s.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if blank {
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
    let domain_ok = if domain.is_ascii() {
        domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    } else {
        domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
    };
    if !domain_ok {
        return Some("has invalid characters in its domain");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_like_a_sorted_map_and_share_known_names() {
        let mut f: Fields = [("title", "CTO".into()), ("email", "a@x.org".into())]
            .into_iter()
            .collect();
        assert_eq!(f.insert("cost_center".to_string(), "42".into()), None);
        assert_eq!(f.insert("title", "CEO".into()), Some("CTO".into()));
        let names: Vec<&str> = f.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["cost_center", "email", "title"]);
        let email = f.keys().nth(1).unwrap();
        assert!(
            std::ptr::eq(email.as_ptr(), field_name("email").as_ptr()),
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
        assert_eq!(f.get("title").map(CompactString::as_str), Some("CEO!"));
        assert_eq!(f.remove("email"), None);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"cost_center":"42!","title":"CEO!"}"#);
        assert_eq!(serde_json::from_str::<Fields>(&json).unwrap(), f);
        let dup: Fields = [("a", "1".into()), ("b", "2".into()), ("a", "3".into())]
            .into_iter()
            .collect();
        assert_eq!(dup.get("a").map(CompactString::as_str), Some("3"));
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

    #[test]
    fn a_field_by_its_shared_name_reads_as_by_text() {
        let mut fields: Fields = [("email", "a@x.org".into()), ("cost_center", "42".into())]
            .into_iter()
            .collect();
        // A known name stored as an owned copy (another writer) is still found.
        let mut pairs = vec![(Cow::Owned("title".to_owned()), CompactString::from("CTO"))];
        pairs.extend(fields.iter().map(|(k, v)| (field_name(k), v.clone())));
        fields = Fields::from_pairs(pairs);
        let u = SourceUser {
            id: SourceId::from("7"),
            fields,
            active: false,
            groups: vec![],
            origin: Origin {
                file: "u.csv".into(),
                location: "line 2".into(),
            },
        };
        for name in [
            "email",
            "title",
            "cost_center",
            "phone",
            "id",
            "active",
            "nothing",
        ] {
            assert_eq!(u.field_named(&field_name(name)), u.field(name), "{name}");
        }
        assert_eq!(u.field_named(&field_name("title")), "CTO");
        assert_eq!(u.field_named(&field_name("id")), "7");
    }

    /// The character-by-character rules, as they were before the ASCII path.
    fn email_problem_by_chars(s: &str) -> Option<&'static str> {
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

    proptest::proptest! {
        /// The ASCII path finds what the character rules find.
        #[test]
        fn email_problems_are_found_as_by_characters(
            s in "[a-zA-Z0-9@. \t\x0b\x0c\r\n\x00\x7f\\-_\"é\u{85}\u{a0}ü]{0,24}"
        ) {
            proptest::prop_assert_eq!(email_problem(&s), email_problem_by_chars(&s));
        }
    }

    fn member_ids(picks: &[u8]) -> Vec<SourceId> {
        picks
            .iter()
            .map(|p| SourceId::from(format!("u{p}")))
            .collect()
    }

    proptest::proptest! {
        /// Members behave as the sorted set they replace: the same order,
        /// membership, differences, inserts, removals and JSON.
        #[test]
        fn members_behave_as_a_sorted_set(
            a in proptest::collection::vec(0u8..40, 0..30),
            b in proptest::collection::vec(0u8..40, 0..30),
            probe in 0u8..45,
        ) {
            use std::collections::BTreeSet;
            let (va, vb) = (member_ids(&a), member_ids(&b));
            let (ma, mb) = (Members::from_vec(va.clone()), Members::from_vec(vb.clone()));
            let (sa, sb): (BTreeSet<SourceId>, BTreeSet<SourceId>) =
                (va.into_iter().collect(), vb.into_iter().collect());
            proptest::prop_assert!(ma.iter().eq(sa.iter()));
            proptest::prop_assert_eq!(ma.len(), sa.len());
            let p = SourceId::from(format!("u{probe}"));
            proptest::prop_assert_eq!(ma.contains(&p), sa.contains(&p));
            proptest::prop_assert_eq!(ma.contains(p.as_str()), sa.contains(p.as_str()));
            proptest::prop_assert!(ma.difference(&mb).eq(sa.difference(&sb)));
            proptest::prop_assert!(mb.difference(&ma).eq(sb.difference(&sa)));
            proptest::prop_assert_eq!(
                serde_json::to_string(&ma).unwrap(),
                serde_json::to_string(&sa).unwrap()
            );
            // Read back from any order (another writer), sorted again.
            let shuffled: Vec<&SourceId> = sa.iter().rev().collect();
            let back: Members = serde_json::from_str(&serde_json::to_string(&shuffled).unwrap()).unwrap();
            proptest::prop_assert_eq!(&back, &ma);
            let (mut m2, mut s2) = (ma.clone(), sa.clone());
            proptest::prop_assert_eq!(m2.insert(p.clone()), s2.insert(p.clone()));
            proptest::prop_assert!(m2.iter().eq(s2.iter()));
            let q = SourceId::from(format!("u{}", probe / 2));
            proptest::prop_assert_eq!(m2.remove(q.as_str()), s2.remove(q.as_str()));
            proptest::prop_assert!(m2.iter().eq(s2.iter()));
            m2.extend(mb.iter().cloned());
            s2.extend(sb.iter().cloned());
            proptest::prop_assert!(m2.iter().eq(s2.iter()));
        }
    }
}
