//! [`Attrs`]: a user's target attributes, SCIM attribute path → JSON value.
//!
//! A person has a dozen attributes and a run holds a million people twice
//! (desired and actual), so the map is a sorted vector rather than a
//! `BTreeMap`: one allocation per person instead of a tree of nodes sized for
//! eleven entries each, about half the memory, and lookups by binary search.
//! It iterates, compares and serializes exactly as the sorted map did (the
//! stored state and saved plans are the same JSON objects).

use std::fmt;
use std::ops::Index;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A user's target attributes: SCIM attribute path → JSON value, sorted by
/// path, each path at most once.
#[derive(Clone, Default, PartialEq)]
pub struct Attrs(Vec<(String, Value)>);

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
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(path))
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
    pub fn insert(&mut self, path: String, value: Value) -> Option<Value> {
        match self.find(&path) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (path, value));
                None
            }
        }
    }

    /// Remove `path`; its value, if it had one.
    pub fn remove(&mut self, path: &str) -> Option<Value> {
        self.find(path).ok().map(|i| self.0.remove(i).1)
    }

    /// The attributes in path order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &Value)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The paths, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> + '_ {
        self.0.iter().map(|(k, _)| k)
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
    fn from_pairs(mut pairs: Vec<(String, Value)>) -> Self {
        if pairs.is_sorted_by(|a, b| a.0 < b.0) {
            return Self(pairs);
        }
        // Stable: equal paths keep their order, so the last one is the latest.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, Value)> = Vec::with_capacity(pairs.len());
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

impl<K: Into<String>> FromIterator<(K, Value)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Self::from_pairs(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a String, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for Attrs {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
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
                while let Some(pair) = access.next_entry::<String, Value>()? {
                    pairs.push(pair);
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
        assert_eq!(a.insert("userName".into(), json!("ann")), None);
        assert_eq!(a.insert("active".into(), json!(true)), None);
        assert_eq!(a.insert("userName".into(), json!("bo")), Some(json!("ann")));
        assert_eq!(a.keys().collect::<Vec<_>>(), ["active", "userName"]);
        assert_eq!(a["userName"], json!("bo"));
        assert!(a.contains_key("active"));
        assert_eq!(a.remove("active"), Some(json!(true)));
        assert_eq!(a.remove("active"), None);
        assert_eq!(a.len(), 1);
        assert_eq!(format!("{a:?}"), r#"{"userName": String("bo")}"#);
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
            prop_assert!(ours.iter().eq(theirs.iter()));
            prop_assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
            let collected: Attrs = theirs.clone().into_iter().rev().collect();
            prop_assert!(collected == ours);
        }
    }
}
