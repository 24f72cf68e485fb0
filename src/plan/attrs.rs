//! [`Attrs`]: a user's target attributes, SCIM attribute path → JSON value.
//!
//! A person has a dozen attributes and a run holds a million people twice
//! (desired and actual), so the map is a sorted vector rather than a
//! `BTreeMap`: one allocation per person instead of a tree of nodes sized for
//! eleven entries each, about half the memory, and lookups by binary search.
//! It iterates, compares and serializes exactly as the sorted map did (the
//! stored state and saved plans are the same JSON objects).
//!
//! The paths themselves are few (the mapping's, a dozen or two) but were a
//! string per attribute per person: they are interned instead ([`path`]), so
//! every person's `name.givenName` is the same static string.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Index;
use std::sync::{Mutex, PoisonError};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A user's target attributes: SCIM attribute path → JSON value, sorted by
/// path, each path at most once.
#[derive(Clone, Default, PartialEq)]
pub struct Attrs(Vec<(Cow<'static, str>, Value)>);

/// Paths interned so far. Attribute paths are a small closed set (the
/// mapping's, the connector's), so each distinct one is kept for the life of
/// the process; past the caps below (a store or saved plan full of odd keys)
/// paths are simply owned, never leaked without bound.
static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
const MAX_INTERNED: usize = 4096;
const MAX_INTERNED_LEN: usize = 256;

/// The shared static copy of an attribute path (owned when past the caps).
pub fn path(p: &str) -> Cow<'static, str> {
    if p.len() > MAX_INTERNED_LEN {
        return Cow::Owned(p.to_owned());
    }
    let mut guard = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(known) = set.get(p) {
        return Cow::Borrowed(known);
    }
    if set.len() >= MAX_INTERNED {
        return Cow::Owned(p.to_owned());
    }
    let leaked: &'static str = Box::leak(p.to_owned().into_boxed_str());
    set.insert(leaked);
    Cow::Borrowed(leaked)
}

fn interned(p: Cow<'static, str>) -> Cow<'static, str> {
    match p {
        Cow::Owned(s) => path(&s),
        known => known,
    }
}

impl Attrs {
    /// No attributes.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// No attributes, room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    fn find(&self, path: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(path))
    }

    /// The value at `path`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.find(path).ok().map(|i| &self.0[i].1)
    }

    /// Whether `path` has a value.
    pub fn contains_key(&self, path: &str) -> bool {
        self.find(path).is_ok()
    }

    /// Set `path` to `value`; the value it replaces, if any.
    pub fn insert(&mut self, path: impl Into<Cow<'static, str>>, value: Value) -> Option<Value> {
        let path = path.into();
        match self.find(&path) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (interned(path), value));
                None
            }
        }
    }

    /// Remove `path`; its value, if it had one.
    pub fn remove(&mut self, path: &str) -> Option<Value> {
        self.find(path).ok().map(|i| self.0.remove(i).1)
    }

    /// The attributes in path order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The paths, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// How many attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sort pairs gathered in any order; the last value given for a path wins
    /// (as inserting them one by one into a map would).
    fn from_pairs(mut pairs: Vec<(Cow<'static, str>, Value)>) -> Self {
        if pairs.is_sorted_by(|a, b| a.0 < b.0) {
            return Self(pairs);
        }
        // Stable: equal paths keep their order, so the last one is the latest.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Cow<'static, str>, Value)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Self(out)
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Index<&str> for Attrs {
    type Output = Value;

    /// The value at `path`; panics when absent (tests and known-present paths).
    fn index(&self, path: &str) -> &Value {
        self.get(path)
            .unwrap_or_else(|| panic!("no attribute {path:?}"))
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Self::from_pairs(
            iter.into_iter()
                .map(|(k, v)| (path(k.as_ref()), v))
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Cow<'static, str>, Value)>,
        fn(&'a (Cow<'static, str>, Value)) -> (&'a str, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttrsVisitor;

        impl<'de> Visitor<'de> for AttrsVisitor {
            type Value = Attrs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute paths to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Attrs, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                // Borrowed from the input when it has no escapes: no copy to intern.
                while let Some((k, v)) = access.next_entry::<Cow<'de, str>, Value>()? {
                    pairs.push((path(&k), v));
                }
                Ok(Attrs::from_pairs(pairs))
            }
        }

        deserializer.deserialize_map(AttrsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut a = Attrs::new();
        assert_eq!(a.insert("userName", json!("ann")), None);
        assert_eq!(a.insert("active", json!(true)), None);
        assert_eq!(a.insert("userName", json!("bo")), Some(json!("ann")));
        assert_eq!(a.keys().collect::<Vec<_>>(), ["active", "userName"]);
        assert_eq!(a["userName"], json!("bo"));
        assert!(a.contains_key("active"));
        assert_eq!(a.remove("active"), Some(json!(true)));
        assert_eq!(a.remove("active"), None);
        assert_eq!(a.len(), 1);
        assert_eq!(format!("{a:?}"), r#"{"userName": String("bo")}"#);
    }

    #[test]
    fn paths_are_shared_not_copied() {
        let (a, b) = (
            path("name.givenName"),
            path(String::from("name.givenName").as_str()),
        );
        assert!(matches!((&a, &b), (Cow::Borrowed(x), Cow::Borrowed(y)) if std::ptr::eq(*x, *y)));
        let long = "x".repeat(MAX_INTERNED_LEN + 1);
        assert!(matches!(path(&long), Cow::Owned(_)), "past the cap: owned");
        let mut attrs = Attrs::new();
        attrs.insert(String::from("title"), json!("CTO"));
        let decoded: Attrs = serde_json::from_str(r#"{"title": "CTO"}"#).unwrap();
        assert!(matches!(&attrs.0[0].0, Cow::Borrowed(x) if std::ptr::eq(*x, &*path("title"))));
        assert!(matches!(&decoded.0[0].0, Cow::Borrowed(x) if std::ptr::eq(*x, &*path("title"))));
    }

    #[test]
    fn json_is_the_sorted_object_and_duplicates_keep_the_last() {
        let a: Attrs = serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":2,"b":3}"#);
        assert!(serde_json::from_str::<Attrs>("[1]").is_err());
    }

    proptest! {
        /// Any sequence of inserts and removes leaves what a `BTreeMap` would
        /// hold, in the same order, with the same JSON.
        #[test]
        fn same_as_a_btreemap(ops in proptest::collection::vec((0u8..8, any::<bool>(), 0i64..100), 0..60)) {
            let mut ours = Attrs::new();
            let mut theirs: BTreeMap<String, Value> = BTreeMap::new();
            for (key, insert, v) in ops {
                let key = format!("k{key}");
                if insert {
                    prop_assert_eq!(ours.insert(key.clone(), json!(v)), theirs.insert(key, json!(v)));
                } else {
                    prop_assert_eq!(ours.remove(&key), theirs.remove(&key));
                }
                prop_assert_eq!(ours.get("k3"), theirs.get("k3"));
            }
            prop_assert!(ours.iter().eq(theirs.iter().map(|(k, v)| (k.as_str(), v))));
            prop_assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
            let collected: Attrs = theirs.clone().into_iter().rev().collect();
            prop_assert!(collected == ours);
        }
    }
}
