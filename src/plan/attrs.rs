//! [`Attrs`]: a user's target attributes, SCIM attribute path → JSON value.
//!
//! A person has a dozen attributes and a run holds a million people twice
//! (desired and actual), so the map is a [`NameMap`] (one sorted vector per
//! person) rather than a `BTreeMap`, and the paths themselves, a dozen or two
//! distinct ones, are interned ([`path`]): every person's `name.givenName` is
//! the same static string.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use crate::namemap::{NameMap, Names};

/// A user's target attributes: SCIM attribute path → JSON value, sorted by
/// path, each path at most once.
pub type Attrs = NameMap<Value, AttrPaths>;

/// The [`Names`] of [`Attrs`]: interned attribute paths.
pub struct AttrPaths;

impl Names for AttrPaths {
    fn name(name: &str) -> Cow<'static, str> {
        path(name)
    }
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_are_shared_not_copied() {
        let (a, b) = (
            path("name.givenName"),
            path(String::from("name.givenName").as_str()),
        );
        assert!(matches!((&a, &b), (Cow::Borrowed(x), Cow::Borrowed(y)) if std::ptr::eq(*x, *y)));
        let long = "x".repeat(MAX_INTERNED_LEN + 1);
        assert!(matches!(path(&long), Cow::Owned(_)), "past the cap: owned");
        let shared = path("title").as_ptr();
        let mut attrs = Attrs::new();
        attrs.insert(String::from("title"), json!("CTO"));
        let decoded: Attrs = serde_json::from_str(r#"{"title": "CTO"}"#).unwrap();
        for a in [&attrs, &decoded] {
            assert!(a.keys().all(|k| std::ptr::eq(k.as_ptr(), shared)), "{a:?}");
        }
        assert_eq!(attrs, decoded);
        assert_eq!(format!("{attrs:?}"), r#"{"title": String("CTO")}"#);
    }
}
