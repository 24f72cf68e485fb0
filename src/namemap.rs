//! [`NameMap`]: the small map every record carries, name → value, kept as
//! one sorted vector with shared names.
//!
//! A directory has millions of records, each with a dozen named values (a
//! source person's fields, a target account's attributes). A `BTreeMap`
//! spends a tree node sized for eleven entries and a copy of every name per
//! record; this map is one allocation, looks up by binary search, and takes
//! its names from an [`Names`] policy that hands out one shared static copy
//! of each known name. It iterates, compares and serializes exactly as the
//! sorted map it replaces (the same JSON objects in the store and saved
//! plans).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Index;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Where a [`NameMap`]'s names come from: the shared copy of a name when
/// there is one, an owned one otherwise.
pub trait Names {
    /// The name to store for `name`.
    fn name(name: &str) -> Cow<'static, str>;
}

/// Name → value, sorted by name, each name at most once.
pub struct NameMap<V, N: Names> {
    pairs: Vec<(Cow<'static, str>, V)>,
    names: PhantomData<fn() -> N>,
}

impl<V, N: Names> NameMap<V, N> {
    /// An empty map.
    pub fn new() -> Self {
        Self::from_sorted(Vec::new())
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self::from_sorted(Vec::with_capacity(n))
    }

    fn from_sorted(pairs: Vec<(Cow<'static, str>, V)>) -> Self {
        Self {
            pairs,
            names: PhantomData,
        }
    }

    /// From pairs in any order; of the same name the last value wins, as
    /// inserting them one by one would give.
    pub fn from_pairs(mut pairs: Vec<(Cow<'static, str>, V)>) -> Self {
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: of equal names the last stays last, and wins below.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(Cow<'static, str>, V)> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                match out.last_mut() {
                    Some(last) if last.0 == k => last.1 = v,
                    _ => out.push((k, v)),
                }
            }
            pairs = out;
        }
        Self::from_sorted(pairs)
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.pairs.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.find(name).ok().map(|i| &self.pairs[i].1)
    }

    /// [`NameMap::get`] for a name that may be a shared copy: stored names
    /// are those copies (see [`Names`]), so a map of a dozen entries is
    /// searched by address first, one comparison of two words per entry;
    /// any other name (or a miss) by text.
    // The variant is the point: a borrowed name is the shared copy.
    #[allow(clippy::ptr_arg)]
    pub fn get_named(&self, name: &Cow<'static, str>) -> Option<&V> {
        if let Cow::Borrowed(shared) = name {
            let same = |k: &Cow<'static, str>| matches!(k, Cow::Borrowed(s) if std::ptr::eq(s.as_ptr(), shared.as_ptr()) && s.len() == shared.len());
            if let Some((_, v)) = self.pairs.iter().find(|(k, _)| same(k)) {
                return Some(v);
            }
        }
        self.get(name)
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Set `name` to `value`; the value it replaces, if any.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: V) -> Option<V> {
        let name = name.into();
        // Names given in order (a mapping's attributes) append.
        let after_last = self.pairs.last().is_none_or(|(k, _)| *k < name);
        let at = if after_last {
            Err(self.pairs.len())
        } else {
            self.find(&name)
        };
        match at {
            Ok(i) => Some(std::mem::replace(&mut self.pairs[i].1, value)),
            Err(i) => {
                let name = match name {
                    Cow::Owned(n) => N::name(&n),
                    shared => shared,
                };
                self.pairs.insert(i, (name, value));
                None
            }
        }
    }

    /// Remove `name`; its value, if it had one.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        self.find(name).ok().map(|i| self.pairs.remove(i).1)
    }

    /// Keep the entries `keep` says yes to (it may edit the value).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut V) -> bool) {
        self.pairs.retain_mut(|(k, v)| keep(k, v));
    }

    /// (name, value) in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &V)> + '_ {
        self.pairs.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The names, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.pairs.iter().map(|(k, _)| k.as_ref())
    }

    /// The values, in name order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.pairs.iter().map(|(_, v)| v)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<V, N: Names> Default for NameMap<V, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone, N: Names> Clone for NameMap<V, N> {
    fn clone(&self) -> Self {
        Self::from_sorted(self.pairs.clone())
    }
}

impl<V: PartialEq, N: Names> PartialEq for NameMap<V, N> {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl<V: Eq, N: Names> Eq for NameMap<V, N> {}

impl<V: fmt::Debug, N: Names> fmt::Debug for NameMap<V, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V, N: Names> Index<&str> for NameMap<V, N> {
    type Output = V;

    /// The value of `name`; panics when absent (tests and known-present names).
    fn index(&self, name: &str) -> &V {
        self.get(name)
            .unwrap_or_else(|| panic!("no entry {name:?}"))
    }
}

impl<K: AsRef<str>, V, N: Names> FromIterator<(K, V)> for NameMap<V, N> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_pairs(
            iter.into_iter()
                .map(|(k, v)| (N::name(k.as_ref()), v))
                .collect(),
        )
    }
}

impl<'a, V, N: Names> IntoIterator for &'a NameMap<V, N> {
    type Item = (&'a str, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Cow<'static, str>, V)>,
        fn(&'a (Cow<'static, str>, V)) -> (&'a str, &'a V),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.pairs.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<V: Serialize, N: Names> Serialize for NameMap<V, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.pairs.len()))?;
        for (k, v) in &self.pairs {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>, N: Names> Deserialize<'de> for NameMap<V, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V, N>(PhantomData<fn() -> (V, N)>);

        impl<'de, V: Deserialize<'de>, N: Names> Visitor<'de> for MapVisitor<V, N> {
            type Value = NameMap<V, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                // Borrowed from the input when it has no escapes: no copy
                // to look the name up.
                while let Some((k, v)) = access.next_entry::<Cow<'de, str>, V>()? {
                    pairs.push((N::name(&k), v));
                }
                Ok(NameMap::from_pairs(pairs))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Names shared when they start with `k`, owned otherwise.
    struct Test;
    impl Names for Test {
        fn name(name: &str) -> Cow<'static, str> {
            const KNOWN: &[&str] = &["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
            KNOWN
                .iter()
                .find(|k| **k == name)
                .map_or_else(|| Cow::Owned(name.to_owned()), |k| Cow::Borrowed(*k))
        }
    }
    type Map = NameMap<i64, Test>;

    #[test]
    fn behaves_like_a_sorted_map_and_shares_names() {
        let mut m = Map::new();
        assert_eq!(m.insert("k2".to_string(), 1), None);
        assert_eq!(m.insert("other", 2), None);
        assert_eq!(m.insert("k2", 3), Some(1));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["k2", "other"]);
        let (k2, _) = m.iter().next().unwrap();
        assert!(
            std::ptr::eq(k2.as_ptr(), Test::name("k2").as_ptr()),
            "an owned known name is swapped for the shared one"
        );
        m.retain(|k, v| {
            *v += 10;
            k != "other"
        });
        assert_eq!(m["k2"], 13);
        assert_eq!(m.remove("other"), None);
        assert_eq!(format!("{m:?}"), r#"{"k2": 13}"#);
    }

    #[test]
    fn json_is_the_sorted_object_and_duplicates_keep_the_last() {
        let m: Map = serde_json::from_str(r#"{"k1": 1, "k0": 2, "k1": 3}"#).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"k0":2,"k1":3}"#);
        assert!(serde_json::from_str::<Map>("[1]").is_err());
    }

    proptest! {
        /// Any sequence of inserts and removes leaves what a `BTreeMap` would
        /// hold, in the same order, with the same JSON.
        #[test]
        fn same_as_a_btreemap(ops in proptest::collection::vec((0u8..10, any::<bool>(), 0i64..100), 0..60)) {
            let mut ours = Map::new();
            let mut theirs: BTreeMap<String, i64> = BTreeMap::new();
            for (key, insert, v) in ops {
                let key = format!("k{key}");
                if insert {
                    prop_assert_eq!(ours.insert(key.clone(), v), theirs.insert(key, v));
                } else {
                    prop_assert_eq!(ours.remove(&key), theirs.remove(&key));
                }
                prop_assert_eq!(ours.get("k3"), theirs.get("k3"));
            }
            prop_assert!(ours.iter().eq(theirs.iter().map(|(k, v)| (k.as_str(), v))));
            prop_assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
            let collected: Map = theirs.clone().into_iter().rev().collect();
            prop_assert!(collected == ours);
        }
    }
}
