//! Connector profiles: declarative descriptions of a SCIM target.
//!
//! A profile (`connectors/*.toml`) carries the defaults for one kind of target:
//! attribute mapping, required attributes, page size, member chunk size, rate,
//! retry schedule and quirks such as "groups cannot be renamed". Profiles are
//! data; the built-in ones are compiled into the binary so an installed
//! `scimsync` needs no files besides its config.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Deprovision};
use crate::mapping::TemplateSpec;

/// Built-in profiles, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("atlassian", include_str!("../connectors/atlassian.toml")),
    ("scim2", include_str!("../connectors/scim2.toml")),
];

/// A connector profile as written in TOML.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name (`atlassian`).
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Protocol facts and quirks.
    pub api: ApiProfile,
    /// Default pacing.
    pub rate: RateProfile,
    /// Default retry schedule.
    pub retry: RetryProfile,
    /// Target attributes a mapped user must carry.
    pub required: Vec<String>,
    /// Attributes sent as JSON booleans.
    pub boolean_attributes: Vec<String>,
    /// Default mapping: target attribute path → template.
    pub mapping: BTreeMap<String, TemplateSpec>,
}

/// Protocol facts and quirks of a target.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiProfile {
    /// Resources requested per list page (`count`).
    pub page_size: usize,
    /// Member values per group PATCH.
    pub member_chunk: usize,
    /// `Content-Type` / `Accept` media type.
    pub media_type: String,
    /// Attributes usable in a Users `eq` filter.
    pub user_filter_attributes: Vec<String>,
    /// Attributes usable in a Groups `eq` filter.
    pub group_filter_attributes: Vec<String>,
    /// Whether a group's displayName can be replaced.
    pub group_rename: bool,
    /// Deprovisioning used when the config does not choose.
    pub deprovision_default: Deprovision,
    /// Whether the target compares userName case-insensitively.
    pub user_name_case_insensitive: bool,
    /// Whether the target compares group names case-insensitively.
    pub group_name_case_insensitive: bool,
    /// Most members one group may have (nested members included); a source
    /// group over it is refused in the plan. None: no limit.
    #[serde(default)]
    pub max_group_members: Option<usize>,
    /// Group names the target reserves (site and default-access groups):
    /// a source group with one of these names is refused in the plan.
    #[serde(default)]
    pub reserved_group_names: Vec<String>,
    /// Whether DELETE /Users/{id} also drops the user from every group. When
    /// false (a target without referential integrity), memberships of a user
    /// being deleted are removed explicitly before the delete. Optional in a
    /// profile file; absent means false (the safe choice for an unknown target).
    #[serde(default)]
    pub delete_removes_memberships: bool,
}

/// Default pacing of requests.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateProfile {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout_secs: u64,
}

/// Default retry schedule.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryProfile {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff delay.
    pub initial_delay_ms: u64,
    /// Longest backoff delay.
    pub max_delay_secs: u64,
    /// Longest Retry-After honoured.
    pub max_retry_after_secs: u64,
    /// Retries allowed in one run.
    pub max_retries_per_run: u32,
}

impl Profile {
    /// Load a profile by built-in name, or from a TOML file when `spec` names a
    /// path (contains `/` or ends in `.toml`; relative to `base_dir`).
    pub fn load(spec: &str, base_dir: &Path) -> Result<Profile, ConfigError> {
        let (origin, text) = if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == spec) {
            (format!("built-in connector `{spec}`"), (*text).to_owned())
        } else if spec.contains('/') || spec.ends_with(".toml") {
            let path = base_dir.join(spec);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::at(
                    "target.connector",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            (path.display().to_string(), text)
        } else {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            return Err(ConfigError::at(
                "target.connector",
                format!(
                    "unknown connector `{spec}` (built-in: {}; or give a path to a profile .toml)",
                    names.join(", ")
                ),
            ));
        };
        let profile: Profile = toml::from_str(&text).map_err(|e| {
            ConfigError::at("target.connector", format!("{origin}: {}", e.message()))
        })?;
        if profile.api.page_size == 0 || profile.api.member_chunk == 0 {
            return Err(ConfigError::at(
                "target.connector",
                format!("{origin}: page_size and member_chunk must be at least 1"),
            ));
        }
        Ok(profile)
    }

    /// Names of the built-in profiles.
    pub fn built_in_names() -> impl Iterator<Item = &'static str> {
        BUILT_IN.iter().map(|(n, _)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse() {
        for name in Profile::built_in_names() {
            let p = Profile::load(name, Path::new(".")).unwrap();
            assert_eq!(p.name, name);
            assert!(p.required.iter().any(|r| r == "userName"));
            assert!(p.mapping.contains_key("userName"));
        }
    }

    #[test]
    fn atlassian_facts() {
        let p = Profile::load("atlassian", Path::new(".")).unwrap();
        assert_eq!(p.api.page_size, 100);
        assert!(!p.api.group_rename);
        assert_eq!(p.api.deprovision_default, Deprovision::Disable);
        assert!(p.api.delete_removes_memberships);
    }

    #[test]
    fn generic_scim2_does_not_rely_on_referential_integrity() {
        let p = Profile::load("scim2", Path::new(".")).unwrap();
        assert!(!p.api.delete_removes_memberships);
        assert!(p.api.group_rename);
    }

    #[test]
    fn a_profile_without_delete_removes_memberships_removes_them_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../connectors/atlassian.toml")
            .replace("delete_removes_memberships = true\n", "");
        assert!(!text.contains("delete_removes_memberships"));
        std::fs::write(dir.path().join("old.toml"), text).unwrap();
        let p = Profile::load("old.toml", dir.path()).unwrap();
        assert!(!p.api.delete_removes_memberships);
    }

    #[test]
    fn unknown_profile_is_a_config_error() {
        let e = Profile::load("nope", Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("unknown connector `nope`"), "{e}");
    }
}
