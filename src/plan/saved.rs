//! Saved plans: `plan --out plan.json`, then `apply plan.json`.
//!
//! A saved plan holds the exact [`Plan`] plus what it was computed from, as
//! SHA-256 fingerprints over canonical serialisations:
//!
//! * **source**: the bytes of the users file and of the groups file;
//! * **target**: the target state the diff ran against ([`Actual`](crate::plan::Actual): managed
//!   and matched accounts and groups with their attributes and members, the
//!   values last pushed, counts of unmanaged ones), whether it came from the
//!   store (`stored`) or from a full read (`full_read`);
//! * **config**: target name, base URL, policy, guard limits and the mapped
//!   attribute paths.
//!
//! and a `checksum` over all of it, which catches a file edited by hand or
//! damaged in transit. (It is not a signature: `apply` also recomputes the
//! plan and refuses unless it equals the saved one.) Pure logic, no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Plan;

/// The format tag of a saved plan file.
pub const FORMAT: &str = "scimsync-plan/1";

/// Where the target state of a plan came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The state last pushed, from the store (no request).
    Stored,
    /// A full paged read of the target.
    FullRead,
}

/// The fingerprints a saved plan was computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    /// `sha256:<hex>` over the source files.
    pub source: String,
    /// `sha256:<hex>` over the target state.
    pub target: String,
    /// `sha256:<hex>` over the settings that shape the plan.
    pub config: String,
}

/// A plan file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPlan {
    /// Always [`FORMAT`].
    pub format: String,
    /// The scimsync version that wrote it.
    pub scimsync_version: String,
    /// When (RFC 3339, UTC).
    pub created_at: String,
    /// Target name (`[target] name`).
    pub app: String,
    /// Target base URL.
    pub base_url: String,
    /// Where the target state came from.
    pub basis: Basis,
    /// Made with `plan --allow-deprovision`: the guard does not hold it.
    pub allow_deprovision: bool,
    /// What it was computed from.
    pub fingerprints: Fingerprints,
    /// The plan itself.
    pub plan: Plan,
    /// `sha256:<hex>` over the canonical JSON of every other field.
    pub checksum: String,
}

/// JSON with object keys sorted at every level and no insignificant
/// whitespace: the same value always gives the same bytes.
pub fn canonical_json(v: &Value) -> String {
    fn write(out: &mut String, v: &Value) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(out, &map[k]);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, item);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&mut out, v);
    out
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The fingerprint of any serialisable value (its canonical JSON).
pub fn fingerprint<T: Serialize>(value: &T) -> String {
    let v = serde_json::to_value(value).expect("plan types serialise to JSON");
    sha256(canonical_json(&v).as_bytes())
}

/// The fingerprint of named files' contents (`None`: unreadable), framed by
/// name and length so moving bytes from one file to another changes it.
pub fn files_fingerprint(files: &[(String, Option<Vec<u8>>)]) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in files {
        h.update(name.as_bytes());
        h.update([0]);
        match bytes {
            Some(b) => {
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
            None => h.update(b"unreadable"),
        }
        h.update([0]);
    }
    let mut hex = String::from("sha256:");
    for b in h.finalize() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Why a plan file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SavedPlanError {
    /// Not JSON, or not a plan file.
    #[error("not a scimsync plan file: {0}")]
    Malformed(String),
    /// A format this version does not know.
    #[error("plan file format `{found}` is not supported (this scimsync reads `{FORMAT}`)")]
    Format {
        /// What the file says.
        found: String,
    },
    /// The checksum does not match the contents.
    #[error(
        "the plan file was modified after it was written (checksum mismatch): re-run `scimsync plan --out`"
    )]
    Tampered,
}

impl SavedPlan {
    /// Build a saved plan and seal it with its checksum.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        created_at: String,
        app: String,
        base_url: String,
        basis: Basis,
        allow_deprovision: bool,
        fingerprints: Fingerprints,
        plan: Plan,
    ) -> SavedPlan {
        let mut saved = SavedPlan {
            format: FORMAT.to_owned(),
            scimsync_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at,
            app,
            base_url,
            basis,
            allow_deprovision,
            fingerprints,
            plan,
            checksum: String::new(),
        };
        saved.checksum = saved.compute_checksum();
        saved
    }

    fn compute_checksum(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a saved plan serialises");
        if let Value::Object(map) = &mut v {
            map.remove("checksum");
        }
        sha256(canonical_json(&v).as_bytes())
    }

    /// The file's text (pretty JSON, newline-terminated).
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a saved plan serialises");
        s.push('\n');
        s
    }

    /// Parse a plan file and check its format and checksum.
    pub fn parse(text: &str) -> Result<SavedPlan, SavedPlanError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| SavedPlanError::Malformed(e.to_string()))?;
        let format = v
            .get("format")
            .and_then(Value::as_str)
            .ok_or_else(|| SavedPlanError::Malformed("no `format` field".into()))?;
        if format != FORMAT {
            return Err(SavedPlanError::Format {
                found: format.to_owned(),
            });
        }
        let saved: SavedPlan =
            serde_json::from_value(v).map_err(|e| SavedPlanError::Malformed(e.to_string()))?;
        if saved.checksum != saved.compute_checksum() {
            return Err(SavedPlanError::Tampered);
        }
        Ok(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ScimId, SourceId};
    use crate::plan::{Action, Why};
    use proptest::prelude::*;

    fn sample() -> SavedPlan {
        let plan = Plan {
            actions: vec![Action::DisableUser {
                user: SourceId("1003".into()),
                scim_id: ScimId("abc".into()),
                user_name: "alan@example.com".into(),
                why: Why::NotInSource,
            }],
            ..Plan::default()
        };
        SavedPlan::new(
            "2026-01-01T00:00:00Z".into(),
            "test".into(),
            "http://127.0.0.1:1/scim".into(),
            Basis::Stored,
            false,
            Fingerprints {
                source: sha256(b"src"),
                target: sha256(b"tgt"),
                config: sha256(b"cfg"),
            },
            plan,
        )
    }

    #[test]
    fn a_saved_plan_round_trips() {
        let s = sample();
        assert_eq!(SavedPlan::parse(&s.to_text()), Ok(s));
    }

    #[test]
    fn an_edited_action_is_detected() {
        let text = sample()
            .to_text()
            .replace("alan@example.com", "ada@example.com");
        assert_eq!(SavedPlan::parse(&text), Err(SavedPlanError::Tampered));
    }

    #[test]
    fn an_added_action_is_detected() {
        let mut v: Value = serde_json::from_str(&sample().to_text()).unwrap();
        let first = v["plan"]["actions"][0].clone();
        v["plan"]["actions"].as_array_mut().unwrap().push(first);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(SavedPlan::parse(&text), Err(SavedPlanError::Tampered));
    }

    #[test]
    fn reformatting_the_file_is_not_tampering() {
        let v: Value = serde_json::from_str(&sample().to_text()).unwrap();
        let compact = serde_json::to_string(&v).unwrap();
        assert!(SavedPlan::parse(&compact).is_ok());
    }

    #[test]
    fn other_formats_and_garbage_are_refused() {
        let text = sample().to_text().replace(FORMAT, "scimsync-plan/9");
        assert!(matches!(
            SavedPlan::parse(&text),
            Err(SavedPlanError::Format { .. })
        ));
        assert!(matches!(
            SavedPlan::parse("{\"plan\": 1}"),
            Err(SavedPlanError::Malformed(_))
        ));
        assert!(matches!(
            SavedPlan::parse("not json"),
            Err(SavedPlanError::Malformed(_))
        ));
    }

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn files_fingerprint_depends_on_framing() {
        let a = files_fingerprint(&[
            ("u".into(), Some(b"ab".to_vec())),
            ("g".into(), Some(b"c".to_vec())),
        ]);
        let b = files_fingerprint(&[
            ("u".into(), Some(b"a".to_vec())),
            ("g".into(), Some(b"bc".to_vec())),
        ]);
        let c = files_fingerprint(&[("u".into(), Some(b"ab".to_vec())), ("g".into(), None)]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Canonical JSON parses back to the same value, and key order in the
        /// input does not change it.
        #[test]
        fn canonical_json_is_faithful_and_order_free(v in json_value()) {
            let c = canonical_json(&v);
            let back: Value = serde_json::from_str(&c).unwrap();
            prop_assert_eq!(&back, &v);
            fn reversed(v: &Value) -> Value {
                match v {
                    Value::Object(m) => {
                        let mut pairs: Vec<(String, Value)> =
                            m.iter().map(|(k, v)| (k.clone(), reversed(v))).collect();
                        pairs.reverse();
                        Value::Object(pairs.into_iter().collect())
                    }
                    Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
                    other => other.clone(),
                }
            }
            prop_assert_eq!(canonical_json(&reversed(&v)), c);
        }
    }
}
