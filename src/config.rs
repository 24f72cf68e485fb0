//! The TOML configuration file and its validation into [`Settings`].
//!
//! `Config` mirrors the file (`deny_unknown_fields`, so a misspelt key is named
//! in the error); [`Settings::load`] validates it, resolves relative paths
//! against the config file's folder, merges the connector profile's defaults
//! with the overrides, compiles templates and the userName regex. Nothing here
//! opens a socket: a bad config exits 2 before any network request.
//! `fixtures/scimsync.example.toml` documents every key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connector::Profile;
use crate::mapping::{Mapping, TemplateSpec};
use crate::secret::KeySource;

/// A configuration problem: which key (when known) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Dotted key path (`target.base_url`), or empty for file-level problems.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about one key.
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

/// What to do with a managed account that left the source or the scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deprovision {
    /// PATCH `active: false` (reversible; Atlassian keeps memberships).
    Disable,
    /// DELETE the SCIM user (Atlassian unlinks and deactivates the account).
    Delete,
    /// Leave the account as it is.
    None,
}

/// Source file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Comma-separated values with a header row.
    Csv,
    /// A JSON document (`{"users": [...], "groups": [...]}` or an array of users).
    Json,
    /// An LDAP / Active Directory server (`[source.ldap]`).
    Ldap,
}

/// The configuration file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where people and groups come from.
    pub source: SourceConfig,
    /// Where they go.
    pub target: TargetConfig,
    /// Attribute mapping overrides.
    #[serde(default)]
    pub mapping: MappingConfig,
    /// Who is provisioned.
    #[serde(default)]
    pub scope: ScopeConfig,
    /// Which groups are pushed.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// What the engine may do.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The SQLite store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Mass-deprovisioning thresholds.
    #[serde(default)]
    pub guard: GuardConfig,
    /// The Prometheus metrics file written after each run.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// What the plan flags as risky for reviewers.
    #[serde(default)]
    pub review: ReviewConfig,
}

/// `[metrics]`: a Prometheus text-format file written (atomically) after each run.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to write it (e.g. node_exporter's textfile directory); none: not written.
    pub file: Option<PathBuf>,
}

/// `[review]`: what the plan flags as risky.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Member removals from one group at or above this count are flagged (default 10).
    pub large_member_removal: Option<usize>,
}

/// Default of `[review] large_member_removal`.
pub const DEFAULT_LARGE_MEMBER_REMOVAL: usize = 10;

/// `[guard]`: thresholds of the mass-deprovisioning guard (see `plan::guard`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Most user disables in one run (default 500).
    pub max_disable: Option<u64>,
    /// Most user disables, percent of managed users (default 20).
    pub max_disable_percent: Option<u64>,
    /// Most user deletes in one run (default 500).
    pub max_delete: Option<u64>,
    /// Most user deletes, percent of managed users (default 20).
    pub max_delete_percent: Option<u64>,
    /// Most group deletes in one run (default 50).
    pub max_group_delete: Option<u64>,
    /// Most group deletes, percent of managed groups (default 20).
    pub max_group_delete_percent: Option<u64>,
    /// Most member removals in one run (default 5000).
    pub max_member_remove: Option<u64>,
    /// Most member removals, percent of managed memberships (default 20).
    pub max_member_remove_percent: Option<u64>,
}

/// `[source]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `csv`, `json` or `ldap`; default from the users file's extension
    /// (`ldap` when `[source.ldap]` is present).
    #[serde(rename = "type")]
    pub kind: Option<SourceKind>,
    /// The people file (csv/json; required for them).
    pub users: Option<PathBuf>,
    /// Optional group membership file (CSV: `group`, `member` and optionally `group_id`; JSON: `{"groups": [...]}`).
    pub groups: Option<PathBuf>,
    /// CSV field delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Separator inside a multi-valued cell (the `groups` column).
    #[serde(default = "default_list_separator")]
    pub list_separator: String,
    /// Canonical field name → column/key name in the file.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// `[source.ldap]`: server, bind, bases, filters, attribute mapping.
    pub ldap: Option<crate::source::ldap::LdapConfig>,
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_list_separator() -> String {
    ";".into()
}

/// `[target]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Name of this target in reports (`--app`).
    pub name: String,
    /// Connector profile: built-in name or path to a profile TOML.
    #[serde(default = "default_connector")]
    pub connector: String,
    /// SCIM base URL (Atlassian: the directory base URL).
    pub base_url: String,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// File holding the API key (first line, trimmed).
    pub api_key_file: Option<PathBuf>,
    /// Sustained requests per second (profile default otherwise).
    pub requests_per_second: Option<f64>,
    /// The target's burst (its bucket size); scimsync uses half of it.
    pub burst: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
    /// Per-request timeout, e.g. `"30s"`.
    pub timeout: Option<String>,
    /// Attempts per request, the first included.
    pub max_attempts: Option<u32>,
    /// Retries allowed per run.
    pub max_retries_per_run: Option<u32>,
    /// Member values per group PATCH.
    pub member_chunk: Option<usize>,
}

fn default_connector() -> String {
    "atlassian".into()
}

/// `[mapping]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Target attribute path → template (overrides or extends the profile; `""` drops an attribute).
    #[serde(default)]
    pub attributes: BTreeMap<String, TemplateSpec>,
    /// Regex rewrite of the mapped userName.
    pub user_name_transform: Option<TransformConfig>,
    /// Extra required target attributes (added to the profile's).
    #[serde(default)]
    pub required: Vec<String>,
}

/// `[mapping.user_name_transform]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Replacement with `$1`/`${name}` groups.
    pub replacement: String,
    /// `keep` (default) or `reject` a value the pattern does not match.
    #[serde(default)]
    pub on_no_match: NoMatch,
}

/// What the userName transform does with a value its pattern does not match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoMatch {
    /// Keep the value unchanged.
    #[default]
    Keep,
    /// Reject the record.
    Reject,
}

/// `[scope]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// Provision only members of these source groups (names or ids). Empty: everyone.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Provision only users whose email domain is listed. Empty: any domain.
    #[serde(default)]
    pub email_domains: Vec<String>,
}

/// `[groups]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// Source groups pushed to the target (names or ids). Absent: all.
    pub push: Option<Vec<String>>,
    /// Link a same-named existing target group instead of reporting a conflict.
    #[serde(default)]
    pub adopt_existing: bool,
    /// Groups every provisioned user is added to (created when the source
    /// has no group of that name).
    #[serde(default)]
    pub default: Vec<String>,
    /// Group names never pushed, on top of the profile's reserved names.
    #[serde(default)]
    pub reserved_names: Vec<String>,
}

fn yes() -> bool {
    true
}

fn resolve_groups(g: &GroupsConfig, profile: &Profile) -> Result<GroupSettings, ConfigError> {
    let mut default_groups: Vec<String> = Vec::new();
    for (i, name) in g.default.iter().enumerate() {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(ConfigError::at(
                format!("groups.default[{i}]"),
                "a group name must be 1 to 255 bytes without control characters",
            ));
        }
        if !default_groups.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            default_groups.push(name.to_owned());
        }
    }
    let reserved_names: BTreeSet<String> = profile
        .api
        .reserved_group_names
        .iter()
        .chain(&g.reserved_names)
        .map(|n| n.trim().to_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(d) = default_groups
        .iter()
        .find(|d| reserved_names.contains(&d.to_lowercase()))
    {
        return Err(ConfigError::at(
            "groups.default",
            format!(
                "`{d}` is a reserved group name in the target (see `groups.reserved_names` and the connector profile)"
            ),
        ));
    }
    Ok(GroupSettings {
        push: g.push.clone(),
        adopt_existing: g.adopt_existing,
        default_groups,
        reserved_names,
        max_members: profile.api.max_group_members,
    })
}

/// `[policy]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Create users missing in the target.
    #[serde(default = "yes")]
    pub create_users: bool,
    /// Update attributes of managed users.
    #[serde(default = "yes")]
    pub update_users: bool,
    /// `disable`, `delete` or `none` (profile default when absent).
    pub deprovision: Option<Deprovision>,
    /// Create groups missing in the target.
    #[serde(default = "yes")]
    pub create_groups: bool,
    /// Update managed groups (externalId, rename where the target allows it).
    #[serde(default = "yes")]
    pub update_groups: bool,
    /// Delete managed groups that left the source.
    #[serde(default = "yes")]
    pub delete_groups: bool,
    /// Converge group memberships.
    #[serde(default = "yes")]
    pub sync_memberships: bool,
    /// Full read of the target at least this often, e.g. `"24h"`.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval: String,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            create_users: true,
            update_users: true,
            deprovision: None,
            create_groups: true,
            update_groups: true,
            delete_groups: true,
            sync_memberships: true,
            reconcile_interval: default_reconcile_interval(),
        }
    }
}

fn default_reconcile_interval() -> String {
    "24h".into()
}

/// `[store]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (created with owner-only permissions).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Keep runs and their report rows this long (`90d`); pruned after each sync.
    #[serde(default)]
    pub retention: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            retention: None,
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("scimsync.db")
}

/// The validated, resolved configuration every command works from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config file's path (for messages).
    pub config_path: PathBuf,
    /// Source settings with absolute paths.
    pub source: SourceSettings,
    /// Target name in reports.
    pub app: String,
    /// The target's SCIM base URL without trailing slash.
    pub base_url: String,
    /// Where the API key comes from.
    pub key_source: KeySource,
    /// The connector profile in force.
    pub profile: Profile,
    /// Effective request pacing and retry.
    pub limits: Limits,
    /// Compiled mapping and scope.
    pub mapping: Mapping,
    /// Which groups are pushed and how.
    pub groups: GroupSettings,
    /// Effective policy.
    pub policy: Policy,
    /// SQLite store path.
    pub store_path: PathBuf,
    /// Report retention (`[store] retention`), applied after each sync.
    pub retention: Option<Duration>,
    /// Mass-deprovisioning guard thresholds.
    pub guard: crate::plan::guard::Limits,
    /// `[metrics] file`, resolved against the config's directory.
    pub metrics_file: Option<PathBuf>,
    /// `[review] large_member_removal`.
    pub large_member_removal: usize,
}

/// Resolved `[source]`.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Format.
    pub kind: SourceKind,
    /// People file (for `ldap`: the server URL, shown as the source's label).
    pub users: PathBuf,
    /// Optional membership file.
    pub groups: Option<PathBuf>,
    /// CSV delimiter byte.
    pub delimiter: u8,
    /// Multi-value separator.
    pub list_separator: String,
    /// Canonical field → column name.
    pub columns: BTreeMap<String, String>,
    /// Resolved `[source.ldap]` (type `ldap` only).
    pub ldap: Option<crate::source::ldap::LdapSettings>,
}

/// Effective request pacing and retry settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Burst.
    pub burst: u32,
    /// In-flight requests.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request.
    pub max_attempts: u32,
    /// First backoff delay.
    pub initial_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// Longest Retry-After honoured.
    pub max_retry_after: Duration,
    /// Retries per run.
    pub max_retries_per_run: u32,
    /// Members per group PATCH.
    pub member_chunk: usize,
    /// Resources per list page.
    pub page_size: usize,
}

/// Resolved `[groups]` (with the profile's group limits).
#[derive(Clone, Debug, Default)]
pub struct GroupSettings {
    /// Names or ids of pushed groups; `None` = all.
    pub push: Option<Vec<String>>,
    /// Adopt same-named existing target groups.
    pub adopt_existing: bool,
    /// Groups every provisioned user joins.
    pub default_groups: Vec<String>,
    /// Reserved group names, lowercased (profile's and config's).
    pub reserved_names: BTreeSet<String>,
    /// Most members per group, nested members included.
    pub max_members: Option<usize>,
}

/// The effective policy switches, as the planner sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Create users.
    pub create_users: bool,
    /// Update users.
    pub update_users: bool,
    /// Deprovisioning mode.
    pub deprovision: Deprovision,
    /// Create groups.
    pub create_groups: bool,
    /// Update groups.
    pub update_groups: bool,
    /// Delete groups.
    pub delete_groups: bool,
    /// Converge memberships.
    pub sync_memberships: bool,
    /// Whether the target can rename groups.
    pub group_rename: bool,
    /// Whether the target compares group names case-insensitively.
    #[serde(default)]
    pub group_name_ci: bool,
    /// Whether deleting a user drops it from its groups in the target (else
    /// the plan removes those memberships first).
    #[serde(default = "yes")]
    pub delete_removes_memberships: bool,
    /// Member values per PATCH.
    pub member_chunk: usize,
    /// Full-read interval.
    #[serde(with = "duration_secs")]
    pub reconcile_interval: Duration,
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

impl Settings {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::at("", format!("cannot read config {}: {e}", path.display()))
        })?;
        Self::from_toml(&text, path)
    }

    /// Validate config text as if read from `path` (relative paths resolve against its folder).
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self::resolve(config, path, &base_dir)
    }

    fn resolve(config: Config, path: &Path, base_dir: &Path) -> Result<Settings, ConfigError> {
        let profile = Profile::load(&config.target.connector, base_dir)?;
        let source = resolve_source(&config.source, base_dir)?;
        let t = &config.target;
        if t.name.trim().is_empty() {
            return Err(ConfigError::at("target.name", "must not be empty"));
        }
        let base_url = validate_base_url(&t.base_url)?;
        let key_source = KeySource::from_config(
            t.api_key_env.as_deref(),
            t.api_key_file.as_deref().map(|p| base_dir.join(p)),
        )?;
        let limits = resolve_limits(t, &profile)?;
        let mapping = Mapping::compile(&profile, &config.mapping, &config.scope)?;
        let reconcile_interval = parse_duration(&config.policy.reconcile_interval)
            .map_err(|m| ConfigError::at("policy.reconcile_interval", m))?;
        let p = &config.policy;
        let policy = Policy {
            create_users: p.create_users,
            update_users: p.update_users,
            deprovision: p.deprovision.unwrap_or(profile.api.deprovision_default),
            create_groups: p.create_groups,
            update_groups: p.update_groups,
            delete_groups: p.delete_groups,
            sync_memberships: p.sync_memberships,
            group_rename: profile.api.group_rename,
            group_name_ci: profile.api.group_name_case_insensitive,
            delete_removes_memberships: profile.api.delete_removes_memberships,
            member_chunk: limits.member_chunk,
            reconcile_interval,
        };
        Ok(Settings {
            config_path: path.to_path_buf(),
            source,
            app: t.name.clone(),
            base_url,
            key_source,
            limits,
            mapping,
            groups: resolve_groups(&config.groups, &profile)?,
            policy,
            store_path: base_dir.join(&config.store.path),
            retention: match config.store.retention.as_deref() {
                None => None,
                Some(r) => match parse_duration(r) {
                    Ok(d) if !d.is_zero() => Some(d),
                    Ok(_) => {
                        return Err(ConfigError::at(
                            "store.retention",
                            "must be above zero (leave it out to keep every run)",
                        ));
                    }
                    Err(m) => return Err(ConfigError::at("store.retention", m)),
                },
            },
            guard: resolve_guard(&config.guard)?,
            metrics_file: config.metrics.file.as_ref().map(|f| base_dir.join(f)),
            large_member_removal: match config.review.large_member_removal {
                Some(0) => {
                    return Err(ConfigError::at(
                        "review.large_member_removal",
                        "must be at least 1",
                    ));
                }
                Some(n) => n,
                None => DEFAULT_LARGE_MEMBER_REMOVAL,
            },
            profile,
        })
    }
}

fn resolve_guard(g: &GuardConfig) -> Result<crate::plan::guard::Limits, ConfigError> {
    let d = crate::plan::guard::Limits::default();
    let percent = |key: &str, v: Option<u64>, default: u64| match v {
        Some(p) if p > 100 => Err(ConfigError::at(
            format!("guard.{key}"),
            format!("{p} is not a percentage (0 to 100)"),
        )),
        Some(p) => Ok(p),
        None => Ok(default),
    };
    Ok(crate::plan::guard::Limits {
        max_disable: g.max_disable.unwrap_or(d.max_disable),
        max_disable_percent: percent(
            "max_disable_percent",
            g.max_disable_percent,
            d.max_disable_percent,
        )?,
        max_delete: g.max_delete.unwrap_or(d.max_delete),
        max_delete_percent: percent(
            "max_delete_percent",
            g.max_delete_percent,
            d.max_delete_percent,
        )?,
        max_group_delete: g.max_group_delete.unwrap_or(d.max_group_delete),
        max_group_delete_percent: percent(
            "max_group_delete_percent",
            g.max_group_delete_percent,
            d.max_group_delete_percent,
        )?,
        max_member_remove: g.max_member_remove.unwrap_or(d.max_member_remove),
        max_member_remove_percent: percent(
            "max_member_remove_percent",
            g.max_member_remove_percent,
            d.max_member_remove_percent,
        )?,
    })
}

/// Turn a toml parse error into a key-level message with a line number.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let msg = e.message().trim().to_owned();
    match line {
        Some(l) => ConfigError::at("", format!("line {l}: {msg}")),
        None => ConfigError::at("", msg),
    }
}

fn resolve_source(s: &SourceConfig, base_dir: &Path) -> Result<SourceSettings, ConfigError> {
    if s.kind == Some(SourceKind::Ldap) || (s.kind.is_none() && s.ldap.is_some()) {
        return resolve_ldap_source(s, base_dir);
    }
    if s.ldap.is_some() {
        return Err(ConfigError::at(
            "source.ldap",
            "is only used with source.type = \"ldap\"",
        ));
    }
    let Some(users) = &s.users else {
        return Err(ConfigError::at(
            "source.users",
            "missing: the people file (or set type = \"ldap\" and a [source.ldap] table)",
        ));
    };
    let users = base_dir.join(users);
    let kind = match s.kind {
        Some(k) => k,
        None => match users.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => SourceKind::Csv,
            Some(e) if e.eq_ignore_ascii_case("json") => SourceKind::Json,
            _ => {
                return Err(ConfigError::at(
                    "source.type",
                    "cannot tell the format from the file name: set `csv`, `json` or `ldap`",
                ));
            }
        },
    };
    let delimiter = match s.delimiter.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
        _ => {
            return Err(ConfigError::at(
                "source.delimiter",
                "must be a single ASCII character other than a quote or newline",
            ));
        }
    };
    if s.list_separator.is_empty() {
        return Err(ConfigError::at(
            "source.list_separator",
            "must not be empty",
        ));
    }
    for (field, column) in &s.columns {
        let known = field == "id"
            || field == "active"
            || field == "groups"
            || crate::model::STANDARD_FIELDS.contains(&field.as_str());
        if !known {
            return Err(ConfigError::at(
                format!("source.columns.{field}"),
                "not a standard field (custom columns need no entry: use their header name in templates)",
            ));
        }
        if column.trim().is_empty() {
            return Err(ConfigError::at(
                format!("source.columns.{field}"),
                "must not be empty",
            ));
        }
    }
    Ok(SourceSettings {
        kind,
        users,
        groups: s.groups.as_ref().map(|g| base_dir.join(g)),
        delimiter,
        list_separator: s.list_separator.clone(),
        columns: s.columns.clone(),
        ldap: None,
    })
}

fn resolve_ldap_source(s: &SourceConfig, base_dir: &Path) -> Result<SourceSettings, ConfigError> {
    let Some(l) = &s.ldap else {
        return Err(ConfigError::at(
            "source.ldap",
            "missing: source.type = \"ldap\" needs a [source.ldap] table (url, user_base, ...)",
        ));
    };
    for (present, key) in [
        (s.users.is_some(), "source.users"),
        (s.groups.is_some(), "source.groups"),
        (!s.columns.is_empty(), "source.columns"),
    ] {
        if present {
            return Err(ConfigError::at(
                key,
                "is for csv/json sources; an LDAP source maps attributes in [source.ldap.attributes]",
            ));
        }
    }
    let ldap = crate::source::ldap::config::resolve(l, base_dir)?;
    Ok(SourceSettings {
        kind: SourceKind::Ldap,
        users: PathBuf::from(&ldap.url),
        groups: None,
        delimiter: b',',
        list_separator: s.list_separator.clone(),
        columns: BTreeMap::new(),
        ldap: Some(ldap),
    })
}

/// Check the base URL: absolute http(s), no query or fragment, and `https`
/// unless the host is a loopback address (tests, the sandbox).
pub fn validate_base_url(raw: &str) -> Result<String, ConfigError> {
    let key = "target.base_url";
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| ConfigError::at(key, format!("not a valid URL ({e}): {raw:?}")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(ConfigError::at(
                    key,
                    "plain http is only allowed to a loopback host (127.0.0.1, ::1, localhost): use https",
                ));
            }
        }
        other => {
            return Err(ConfigError::at(
                key,
                format!("scheme `{other}` is not http(s)"),
            ));
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::at(key, "has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::at(key, "must not carry a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::at(
            key,
            "must not carry credentials: put the API key in api_key_env or api_key_file",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn resolve_limits(t: &TargetConfig, profile: &Profile) -> Result<Limits, ConfigError> {
    let rps = t
        .requests_per_second
        .unwrap_or(profile.rate.requests_per_second);
    if !(rps.is_finite() && rps > 0.0 && rps <= 100_000.0) {
        return Err(ConfigError::at(
            "target.requests_per_second",
            "must be a number above 0 and at most 100000",
        ));
    }
    let burst = t.burst.unwrap_or(profile.rate.burst);
    if burst == 0 {
        return Err(ConfigError::at("target.burst", "must be at least 1"));
    }
    let concurrency = t.concurrency.unwrap_or(profile.rate.concurrency);
    if !(1..=256).contains(&concurrency) {
        return Err(ConfigError::at(
            "target.concurrency",
            "must be between 1 and 256",
        ));
    }
    let timeout = match &t.timeout {
        Some(s) => parse_duration(s).map_err(|m| ConfigError::at("target.timeout", m))?,
        None => Duration::from_secs(profile.rate.timeout_secs),
    };
    if timeout.is_zero() {
        return Err(ConfigError::at("target.timeout", "must be above zero"));
    }
    let max_attempts = t.max_attempts.unwrap_or(profile.retry.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(ConfigError::at(
            "target.max_attempts",
            "must be between 1 and 100",
        ));
    }
    let member_chunk = t.member_chunk.unwrap_or(profile.api.member_chunk);
    if !(1..=10_000).contains(&member_chunk) {
        return Err(ConfigError::at(
            "target.member_chunk",
            "must be between 1 and 10000",
        ));
    }
    Ok(Limits {
        requests_per_second: rps,
        burst,
        concurrency,
        timeout,
        max_attempts,
        initial_delay: Duration::from_millis(profile.retry.initial_delay_ms),
        max_delay: Duration::from_secs(profile.retry.max_delay_secs),
        max_retry_after: Duration::from_secs(profile.retry.max_retry_after_secs),
        max_retries_per_run: t
            .max_retries_per_run
            .unwrap_or(profile.retry.max_retries_per_run),
        member_chunk,
        page_size: profile.api.page_size,
    })
}

/// Parse a duration such as `30s`, `15m`, `24h`, `7d`, `1h30m` or `1w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut seen_unit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: use a number and a unit s, m, h, d or w (e.g. 30s, 15m, 24h, 7d)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: a number must come before `{c}`"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
        seen_unit = true;
    }
    if !digits.is_empty() || !seen_unit {
        return Err(format!(
            "invalid duration {s:?}: every number needs a unit s, m, h, d or w (e.g. 30s)"
        ));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[source]
users = "users.csv"
[target]
name = "acme"
base_url = "https://api.atlassian.com/scim/directory/abc"
api_key_env = "SCIMSYNC_API_KEY"
"#;

    #[test]
    fn minimal_config_resolves_with_profile_defaults() {
        let s = Settings::from_toml(MINIMAL, Path::new("/etc/scimsync/config.toml")).unwrap();
        assert_eq!(s.app, "acme");
        assert_eq!(s.source.users, PathBuf::from("/etc/scimsync/users.csv"));
        assert_eq!(s.source.kind, SourceKind::Csv);
        assert_eq!(s.limits.page_size, 100);
        assert_eq!(s.policy.deprovision, Deprovision::Disable);
        assert_eq!(s.store_path, PathBuf::from("/etc/scimsync/scimsync.db"));
        assert_eq!(s.policy.reconcile_interval, Duration::from_secs(86_400));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("[target]", "[target]\nbase_ulr = \"x\"");
        let e = Settings::from_toml(&text, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("base_ulr"), "{e}");
        assert!(e.to_string().contains("line "), "{e}");
    }

    #[test]
    fn http_is_refused_for_remote_hosts_only() {
        assert!(validate_base_url("http://example.com/scim").is_err());
        assert!(validate_base_url("http://127.0.0.1:8080/scim/directory/x").is_ok());
        assert!(validate_base_url("http://localhost/scim").is_ok());
        assert!(validate_base_url("http://[::1]:9/scim").is_ok());
        assert!(validate_base_url("ftp://example.com").is_err());
        assert!(validate_base_url("not a url").is_err());
        assert!(validate_base_url("https://user:pw@example.com/").is_err());
        assert_eq!(
            validate_base_url("https://api.atlassian.com/scim/directory/d/").unwrap(),
            "https://api.atlassian.com/scim/directory/d"
        );
    }

    #[test]
    fn missing_key_source_is_an_error() {
        let text = MINIMAL.replace("api_key_env = \"SCIMSYNC_API_KEY\"", "");
        let e = Settings::from_toml(&text, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("api_key"), "{e}");
    }

    #[test]
    fn the_commented_example_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/scimsync.example.toml"
        ));
        let s = Settings::load(path).unwrap();
        assert_eq!(s.app, "atlassian-prod");
        assert_eq!(
            s.source.columns.get("id").map(String::as_str),
            Some("employee_id")
        );
        let demo = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/demo/scimsync.toml"
        ));
        Settings::load(demo).unwrap();
    }

    #[test]
    fn guard_percentages_are_checked() {
        let text = format!("{MINIMAL}\n[guard]\nmax_disable_percent = 150\n");
        let e = Settings::from_toml(&text, Path::new("c.toml")).unwrap_err();
        assert_eq!(e.key, "guard.max_disable_percent");
        let text = format!("{MINIMAL}\n[guard]\nmax_disable = 3\n");
        let s = Settings::from_toml(&text, Path::new("c.toml")).unwrap();
        assert_eq!(s.guard.max_disable, 3);
        assert_eq!(s.guard.max_delete_percent, 20);
    }

    #[test]
    fn every_malformed_config_is_refused_with_its_key() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/malformed-config"
        ));
        let cases: &[(&str, &str)] = &[
            ("unknown_key.toml", "base_ulr"),
            ("bad_url.toml", "`target.base_url`: not a valid URL"),
            ("http_remote.toml", "`target.base_url`: plain http"),
            ("missing_key_source.toml", "no API key source"),
            (
                "both_key_sources.toml",
                "either api_key_env or api_key_file",
            ),
            (
                "bad_regex.toml",
                "`mapping.user_name_transform.pattern`: invalid regex",
            ),
            ("bad_threshold_percent.toml", "`guard.max_disable_percent`"),
            ("bad_threshold_negative.toml", "line "),
            ("bad_duration.toml", "`policy.reconcile_interval`"),
            ("bad_deprovision.toml", "archive"),
            ("unknown_connector.toml", "unknown connector `okta`"),
            ("bad_template.toml", "`mapping.attributes.displayName`"),
            ("reserved_attribute.toml", "set by scimsync itself"),
            (
                "bad_attribute_path.toml",
                "not a supported SCIM attribute path",
            ),
            ("bad_delimiter.toml", "`source.delimiter`"),
            ("bad_email_domain.toml", "`scope.email_domains`"),
            ("zero_concurrency.toml", "`target.concurrency`"),
            ("unknown_format.toml", "`source.type`"),
            ("not_toml.toml", "line 1"),
        ];
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let on_disk: std::collections::BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "README.md")
            .collect();
        let listed: std::collections::BTreeSet<String> =
            cases.iter().map(|(f, _)| (*f).to_owned()).collect();
        assert_eq!(
            on_disk, listed,
            "fixtures/malformed-config and the test differ"
        );
        for (file, expected) in cases {
            assert!(
                readme.contains(&format!("`{file}`")),
                "{file} is not in the README"
            );
            match Settings::load(&dir.join(file)) {
                Ok(_) => panic!("{file} was accepted"),
                Err(e) => assert!(e.to_string().contains(expected), "{file}: {e}"),
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn store_retention_is_parsed_and_checked() {
        let path = Path::new("/etc/scimsync/scimsync.toml");
        let s = Settings::from_toml(MINIMAL, path).unwrap();
        assert_eq!(s.retention, None);
        let s = Settings::from_toml(&format!("{MINIMAL}\n[store]\nretention = \"90d\"\n"), path)
            .unwrap();
        assert_eq!(s.retention, Some(Duration::from_secs(90 * 86_400)));
        for bad in ["0d", "ninety days"] {
            let e = Settings::from_toml(
                &format!("{MINIMAL}\n[store]\nretention = \"{bad}\"\n"),
                path,
            )
            .unwrap_err();
            assert!(e.to_string().contains("store.retention"), "{bad}: {e}");
        }
    }
}
