//! Mapping and scope: from source records to the desired target state.
//!
//! Pure logic, no I/O. A connector profile gives the default mapping (target
//! attribute path → template over source fields); the config overrides it per
//! attribute and may rewrite userName with a regex. Scope rules decide who is
//! provisioned (members of chosen source groups, authorized email domains).
//! Every mapped user is validated (required attributes, email syntax,
//! booleans, unique userName) before anything is sent; a user that fails is
//! rejected with a reason and its target account is left untouched.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigError, GroupSettings, MappingConfig, NoMatch, ScopeConfig};
use crate::connector::Profile;
use crate::model::{
    Fields, Members, Origin, RecordKind, Reject, Snapshot, SourceId, SourceUser, email_problem,
};
use crate::plan::{Attrs, Desired, DesiredGroup, DesiredUser};
use crate::scim::AttrPath;

pub mod nested;

/// A template as written: one string or a list of alternatives.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TemplateSpec {
    /// `"{given_name} {family_name}"`
    One(String),
    /// `["{display_name}", "{given_name} {family_name}"]`: the first
    /// alternative whose fields all have values wins.
    Many(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// The shared copy of the name when it is a known field (see
    /// [`crate::model::field_name`]): found in a record by its address.
    Field(Cow<'static, str>),
}

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    alternatives: Vec<Vec<Piece>>,
}

impl Template {
    /// Compile a spec; `{field}` inserts a source field, `{{`/`}}` are literal braces.
    pub fn compile(spec: &TemplateSpec) -> Result<Template, String> {
        let texts: Vec<&str> = match spec {
            TemplateSpec::One(s) => vec![s.as_str()],
            TemplateSpec::Many(v) => v.iter().map(String::as_str).collect(),
        };
        let mut alternatives = Vec::new();
        for text in texts {
            alternatives.push(parse_template(text)?);
        }
        Ok(Template { alternatives })
    }

    /// Whether the template can never produce a value (an empty string).
    pub fn is_empty(&self) -> bool {
        self.alternatives.iter().all(|a| a.is_empty())
    }

    /// Source fields the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.alternatives.iter().flatten().filter_map(|p| match p {
            Piece::Field(f) => Some(f.as_ref()),
            Piece::Lit(_) => None,
        })
    }

    /// Evaluate against a source record: the first alternative whose fields
    /// are all non-empty, trimmed; `None` when none qualifies.
    pub fn render(&self, user: &SourceUser) -> Option<String> {
        'alt: for alt in &self.alternatives {
            let mut out = String::new();
            for piece in alt {
                match piece {
                    Piece::Lit(s) => out.push_str(s),
                    Piece::Field(f) => {
                        let v = user.field_named(f).trim();
                        if v.is_empty() {
                            continue 'alt;
                        }
                        out.push_str(v);
                    }
                }
            }
            let out = out.trim();
            if !out.is_empty() {
                return Some(out.to_owned());
            }
        }
        None
    }
}

fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' => {
                            name.push(c)
                        }
                        Some(c) => {
                            return Err(format!(
                                "template {text:?}: `{c}` is not allowed in a field name"
                            ));
                        }
                        None => return Err(format!("template {text:?}: `{{` is never closed")),
                    }
                }
                if name.is_empty() {
                    return Err(format!("template {text:?}: empty field name `{{}}`"));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Field(crate::model::field_name(&name)));
            }
            '}' => return Err(format!("template {text:?}: unmatched `}}` (write `}}}}`)")),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

/// The compiled userName rewrite.
#[derive(Clone, Debug)]
pub struct UserNameTransform {
    regex: Regex,
    replacement: String,
    on_no_match: NoMatch,
}

impl UserNameTransform {
    /// Apply to a mapped userName: `Ok(new)` or `Err(reason)` when the value
    /// does not match and the policy rejects it.
    pub fn apply(&self, value: &str) -> Result<String, String> {
        if !self.regex.is_match(value) {
            return match self.on_no_match {
                NoMatch::Keep => Ok(value.to_owned()),
                NoMatch::Reject => Err(format!(
                    "userName `{value}` does not match the transform pattern `{}`",
                    self.regex.as_str()
                )),
            };
        }
        Ok(self
            .regex
            .replace(value, self.replacement.as_str())
            .into_owned())
    }
}

/// Scope rules: who is provisioned.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Source group names or ids (lowercased); empty = everyone.
    pub groups: Vec<String>,
    /// Authorized email domains (lowercased); empty = any.
    pub email_domains: Vec<String>,
}

/// The compiled mapping: templates, validation rules and scope.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Target attribute path → template.
    attributes: Vec<(AttrPath, Template)>,
    /// Per attribute (same order): its key in [`Attrs`] and how to check it,
    /// worked out once here rather than for every user.
    keys: Vec<AttrKey>,
    /// Keys of the attributes that must have a value.
    required_keys: Vec<String>,
    transform: Option<UserNameTransform>,
    /// Who is in scope.
    pub scope: Scope,
    user_name_ci: bool,
    group_name_ci: bool,
}

/// An attribute's key and checks, precomputed (see [`Mapping::map_user`]).
#[derive(Clone, Debug)]
struct AttrKey {
    /// Interned: every person's attribute shares this one string.
    key: Cow<'static, str>,
    user_name: bool,
    boolean: bool,
    email: bool,
}

const RESERVED: &[&str] = &["id", "externalId", "meta", "schemas", "groups"];

impl Mapping {
    /// Merge the profile's mapping with the config's overrides and compile it.
    pub fn compile(
        profile: &Profile,
        cfg: &MappingConfig,
        scope: &ScopeConfig,
    ) -> Result<Mapping, ConfigError> {
        let mut specs = profile.mapping.clone();
        for (path, spec) in &cfg.attributes {
            specs.insert(path.clone(), spec.clone());
        }
        let mut attributes = Vec::new();
        for (raw, spec) in &specs {
            let key = format!("mapping.attributes.{raw}");
            let path = AttrPath::parse(raw).ok_or_else(|| {
                ConfigError::at(
                    &key,
                    "not a supported SCIM attribute path (forms: `title`, `name.givenName`, `emails[type eq \"work\"].value`, `urn:…:User:department`)",
                )
            })?;
            let canonical = path.to_string();
            if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&canonical)) {
                return Err(ConfigError::at(
                    &key,
                    "is set by scimsync itself (externalId is always the source id)",
                ));
            }
            let template = Template::compile(spec).map_err(|m| ConfigError::at(&key, m))?;
            if !template.is_empty() {
                attributes.push((path, template));
            }
        }
        let user_name = AttrPath::Simple("userName".into());
        if !attributes.iter().any(|(p, _)| *p == user_name) {
            return Err(ConfigError::at(
                "mapping.attributes.userName",
                "userName must be mapped",
            ));
        }
        let mut required = Vec::new();
        for raw in profile.required.iter().chain(&cfg.required) {
            let path = AttrPath::parse(raw).ok_or_else(|| {
                ConfigError::at(
                    "mapping.required",
                    format!("`{raw}` is not an attribute path"),
                )
            })?;
            if !attributes.iter().any(|(p, _)| *p == path) {
                return Err(ConfigError::at(
                    "mapping.required",
                    format!("`{raw}` is required by the connector but has no mapping"),
                ));
            }
            if !required.contains(&path) {
                required.push(path);
            }
        }
        let transform = match &cfg.user_name_transform {
            None => None,
            Some(t) => Some(UserNameTransform {
                regex: Regex::new(&t.pattern).map_err(|e| {
                    ConfigError::at(
                        "mapping.user_name_transform.pattern",
                        format!("invalid regex: {}", one_line(&e.to_string())),
                    )
                })?,
                replacement: t.replacement.clone(),
                on_no_match: t.on_no_match,
            }),
        };
        let mut email_domains = Vec::new();
        for d in &scope.email_domains {
            let d = d.trim().trim_start_matches('@').to_lowercase();
            if d.is_empty() || !d.contains('.') || d.contains('@') || d.contains(' ') {
                return Err(ConfigError::at(
                    "scope.email_domains",
                    format!("`{d}` is not a domain name"),
                ));
            }
            email_domains.push(d);
        }
        let booleans: BTreeSet<String> = profile.boolean_attributes.iter().cloned().collect();
        let keyed: Vec<((AttrPath, Template), AttrKey)> = attributes
            .into_iter()
            .map(|(path, template)| {
                let key = path.to_string();
                let k = AttrKey {
                    user_name: key == "userName",
                    boolean: booleans.contains(&key),
                    email: key.starts_with("emails["),
                    key: crate::plan::attr_path(&key),
                };
                ((path, template), k)
            })
            .collect();
        // In the order of their keys: each person's attributes are then
        // built by appending, with no search per attribute.
        let (attributes, keys): (Vec<_>, Vec<_>) = {
            let mut keyed = keyed;
            keyed.sort_by(|a, b| a.1.key.cmp(&b.1.key));
            keyed.into_iter().unzip()
        };
        let required_keys = required.iter().map(ToString::to_string).collect();
        Ok(Mapping {
            attributes,
            keys,
            required_keys,
            transform,
            scope: Scope {
                groups: scope.groups.iter().map(|g| g.to_lowercase()).collect(),
                email_domains,
            },
            user_name_ci: profile.api.user_name_case_insensitive,
            group_name_ci: profile.api.group_name_case_insensitive,
        })
    }

    /// The attribute paths this mapping manages (plus `externalId`), as strings.
    pub fn managed_paths(&self) -> BTreeSet<String> {
        let mut set: BTreeSet<String> =
            self.attributes.iter().map(|(p, _)| p.to_string()).collect();
        set.insert("externalId".into());
        set
    }

    /// Whether the target compares userNames case-insensitively.
    pub fn user_name_case_insensitive(&self) -> bool {
        self.user_name_ci
    }

    /// Map and validate one source user into target attributes.
    pub fn map_user(&self, user: &SourceUser) -> Result<Attrs, String> {
        let mut attrs = Attrs::with_capacity(self.keys.len() + 1);
        let mut has_email = false;
        for ((_, template), k) in self.attributes.iter().zip(&self.keys) {
            let Some(mut text) = template.render(user) else {
                continue;
            };
            let key = k.key.as_ref();
            if k.user_name
                && let Some(t) = &self.transform
            {
                text = t.apply(&text)?;
                if text.trim().is_empty() {
                    return Err("userName is empty after the transform".into());
                }
            }
            let value = if k.boolean {
                Value::Bool(parse_bool(&text).ok_or_else(|| {
                    format!("attribute `{key}`: `{text}` is not a boolean (true/false)")
                })?)
            } else {
                if text.chars().any(char::is_control) {
                    return Err(format!("attribute `{key}` contains control characters"));
                }
                // At most 4 bytes a character: only a long text needs counting.
                if text.len() > 1024 && text.chars().count() > 1024 {
                    return Err(format!("attribute `{key}` is longer than 1024 characters"));
                }
                Value::String(text)
            };
            has_email |= k.email;
            attrs.insert(k.key.clone(), value);
        }
        attrs.insert("externalId", Value::String(user.id.to_string()));
        for key in &self.required_keys {
            if !attrs.contains_key(key) {
                return Err(format!("required attribute `{key}` has no value"));
            }
        }
        if let Some(Value::String(u)) = attrs.get("userName")
            && u.len() > 255
            && u.chars().count() > 255
        {
            return Err("userName is longer than 255 characters".into());
        }
        if has_email {
            for (key, value) in &attrs {
                if key.starts_with("emails[")
                    && let Value::String(e) = value
                    && let Some(problem) = email_problem(e)
                {
                    return Err(format!(
                        "attribute `{key}`: `{e}` is not a valid email address ({problem})"
                    ));
                }
            }
        }
        Ok(attrs)
    }

    /// The work email a user would get (for scope and labels).
    fn work_email(attrs: &Attrs, user: &SourceUser) -> String {
        attrs
            .iter()
            .find(|(k, _)| k.starts_with("emails["))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_else(|| user.field("email"))
            .to_owned()
    }

    fn domain_in_scope(&self, email: &str) -> bool {
        if self.scope.email_domains.is_empty() {
            return true;
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_lowercase());
        domain.is_some_and(|d| self.scope.email_domains.contains(&d))
    }

    fn fold_name(&self, s: &str) -> String {
        if self.user_name_ci {
            s.to_lowercase()
        } else {
            s.to_owned()
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parse a boolean cell: true/false, yes/no, 1/0, active/inactive, enabled/disabled.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "active" | "enabled" => Some(true),
        "false" | "f" | "no" | "n" | "0" | "inactive" | "disabled" => Some(false),
        _ => None,
    }
}

/// Counts of what mapping and scope did, for the plan header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStats {
    /// Users in the source (valid records).
    pub source_users: usize,
    /// Groups in the source.
    pub source_groups: usize,
    /// Users left out by the group scope.
    pub out_of_group_scope: usize,
    /// Users left out by the email-domain scope.
    pub out_of_domain_scope: usize,
    /// Groups not selected for pushing.
    pub groups_not_pushed: usize,
}

/// One person mapped, with what the rest of [`desired_state_taking`] needs.
struct Mapped {
    user: DesiredUser,
    /// Whether the work email's domain is in scope.
    in_domain: bool,
    /// The userName as the target compares it.
    folded: String,
}

/// Build the desired target state from a snapshot: map, validate, scope.
pub fn desired_state(snapshot: &Snapshot, mapping: &Mapping, groups: &GroupSettings) -> Desired {
    desired_state_taking(&mut snapshot.clone(), mapping, groups)
}

/// [`desired_state`], moving the source groups' member sets into the
/// desired state instead of copying them: they are the bulk of a large
/// directory (8 M ids at 1 M people). Each person's source fields are freed
/// once the person is mapped, on the mapping threads, so the desired state
/// reuses their memory instead of adding to it. The snapshot is left with its
/// people's ids, flags and origins and its groups' names, without fields or
/// members: what a caller still reads of it is the counts.
pub fn desired_state_taking(
    snapshot: &mut Snapshot,
    mapping: &Mapping,
    groups: &GroupSettings,
) -> Desired {
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let mut rejects = snapshot.rejects.clone();
    let mut held_users: BTreeSet<SourceId> = rejects
        .iter()
        .filter(|r| r.kind == RecordKind::User)
        .filter_map(|r| r.source_id.clone())
        .collect();
    let mut held_groups: BTreeSet<SourceId> = rejects
        .iter()
        .filter(|r| r.kind == RecordKind::Group)
        .filter_map(|r| r.source_id.clone())
        .collect();
    let mut stats = ScopeStats {
        source_users: snapshot.users.len(),
        source_groups: snapshot.groups.len(),
        ..ScopeStats::default()
    };

    // Nested groups: effective (flattened) membership, used by the scope and
    // by the pushed groups alike.
    // Fx hashing: the ids are the admin's own directory (no untrusted keys),
    // and these sets are probed once or twice per membership.
    // The set of people's ids is only needed for a member id that is also
    // a group's: built on the first such id.
    let user_ids: std::sync::OnceLock<FxHashSet<&SourceId>> = std::sync::OnceLock::new();
    let mut flat = nested::flatten(&snapshot.groups, |m| {
        user_ids
            .get_or_init(|| snapshot.users.iter().map(|u| &u.id).collect())
            .contains(m)
    });
    let members_of = |i: usize| -> &Members {
        flat.members[i]
            .as_ref()
            .unwrap_or(&snapshot.groups[i].members)
    };
    let mut group_notes = Vec::new();
    if flat.nesting > 0 {
        group_notes.push(format!(
            "{} source groups contain groups: flattened to their users (the target has no nested groups)",
            flat.nesting
        ));
    }
    for cycle in &flat.cycles {
        let names: Vec<&str> = cycle.iter().map(SourceId::as_str).collect();
        group_notes.push(format!(
            "group cycle in the source: {} contain each other; each gets the members of all of them",
            names.join(", ")
        ));
    }

    // Group scope: the set of users that are members of a scope group.
    let scope_members: Option<BTreeSet<&SourceId>> =
        (!mapping.scope.groups.is_empty()).then(|| {
            snapshot
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| {
                    mapping.scope.groups.contains(&g.name.to_lowercase())
                        || mapping.scope.groups.contains(&g.id.as_str().to_lowercase())
                })
                .flat_map(|(i, _)| members_of(i).iter())
                .collect()
        });

    let in_group_scope = |u: &SourceUser| scope_members.as_ref().is_none_or(|m| m.contains(&u.id));
    // Each person maps independently of the others: spread over the cores.
    // What the rest needs of the fields (the work email, a label for a
    // reject) is taken here, then the fields are freed.
    let flatten_ms = ms();
    // Per person, also on the mapping threads: the work email, whether its
    // domain is in scope, the userName and its folded form (for the
    // uniqueness check below).
    let mut mapped = crate::par::par_map_mut(&mut snapshot.users, |u| {
        if held_users.contains(&u.id) || !in_group_scope(u) {
            return None;
        }
        let result = match mapping.map_user(u) {
            Ok(attrs) => {
                let email = Mapping::work_email(&attrs, u);
                let user_name = attrs
                    .get("userName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Ok(Mapped {
                    in_domain: mapping.domain_in_scope(&email),
                    folded: mapping.fold_name(&user_name),
                    user: DesiredUser {
                        user_name,
                        email,
                        attrs,
                    },
                })
            }
            Err(reason) => Err((reason, label_of(u))),
        };
        u.fields = Fields::default();
        Some(result)
    });
    let map_ms = ms();
    // The people kept, in file order, with where each came from; the map
    // by id is built in bulk once the clashes are out (one sort, no insert
    // per person).
    let mut kept: Vec<(SourceId, DesiredUser)> = Vec::with_capacity(snapshot.users.len());
    let mut folded_names: Vec<String> = Vec::with_capacity(snapshot.users.len());
    let mut origin_of: Vec<&Origin> = Vec::with_capacity(snapshot.users.len());
    let mut out_of_scope = BTreeSet::new();
    for (i, u) in snapshot.users.iter().enumerate() {
        if held_users.contains(&u.id) {
            continue;
        }
        if !in_group_scope(u) {
            stats.out_of_group_scope += 1;
            out_of_scope.insert(u.id.clone());
            continue;
        }
        let Some(result) = mapped[i].take() else {
            continue;
        };
        match result {
            Ok(m) => {
                if !m.in_domain {
                    stats.out_of_domain_scope += 1;
                    out_of_scope.insert(u.id.clone());
                    continue;
                }
                origin_of.push(&u.origin);
                folded_names.push(m.folded);
                kept.push((u.id.clone(), m.user));
            }
            Err((reason, label)) => {
                held_users.insert(u.id.clone());
                rejects.push(Reject {
                    kind: RecordKind::User,
                    origin: u.origin.clone(),
                    source_id: Some(u.id.clone()),
                    label: Some(label),
                    reason,
                });
            }
        }
    }
    drop(mapped);

    let collect_ms = ms();
    // userName must be unique among provisioned users (after mapping and the
    // transform). The first holder of each name in one map, the rare clashes
    // in another: one hash insert per person, no list per name.
    let mut first: FxHashMap<String, usize> = FxHashMap::default();
    first.reserve(kept.len());
    let mut clashes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, folded) in folded_names.into_iter().enumerate() {
        match first.entry(folded) {
            std::collections::hash_map::Entry::Occupied(e) => clashes
                .entry(e.key().clone())
                .or_insert_with(|| vec![*e.get()])
                .push(k),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(k);
            }
        }
    }
    drop(first);
    let id_of = |k: &usize| &kept[*k].0;
    let mut duplicates: Vec<(usize, String)> = Vec::new();
    for holders in clashes.values_mut() {
        holders.sort_unstable_by(|a, b| id_of(a).cmp(id_of(b)));
        for k in holders.iter() {
            let others: Vec<String> = holders
                .iter()
                .filter(|o| *o != k)
                .map(|o| format!("{} ({})", id_of(o), origin_of[*o]))
                .collect();
            duplicates.push((*k, others.join(", ")));
        }
    }
    duplicates.sort_unstable_by(|a, b| id_of(&a.0).cmp(id_of(&b.0)));
    let mut clashing = vec![false; kept.len()];
    for (k, others) in duplicates {
        let (id, u) = &kept[k];
        clashing[k] = true;
        held_users.insert(id.clone());
        rejects.push(Reject {
            kind: RecordKind::User,
            origin: origin_of[k].clone(),
            source_id: Some(id.clone()),
            label: Some(u.user_name.clone()),
            reason: format!(
                "duplicate userName `{}`: also mapped for {others}",
                u.user_name
            ),
        });
    }
    drop(origin_of);
    let users: BTreeMap<SourceId, DesiredUser> = kept
        .into_iter()
        .zip(clashing)
        .filter_map(|(entry, clash)| (!clash).then_some(entry))
        .collect();

    let unique_ms = ms();
    // Groups: those selected for pushing, members restricted to provisioned users.
    let push: Option<BTreeSet<String>> = groups
        .push
        .as_ref()
        .map(|names| names.iter().map(|n| n.to_lowercase()).collect());
    let is_default = |g: &crate::model::SourceGroup| {
        groups
            .default_groups
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&g.name) || d.eq_ignore_ascii_case(g.id.as_str()))
    };
    let mut selected = Vec::new();
    for (i, g) in snapshot.groups.iter().enumerate() {
        if held_groups.contains(&g.id) {
            continue;
        }
        if let Some(push) = &push
            && !push.contains(&g.name.to_lowercase())
            && !push.contains(&g.id.as_str().to_lowercase())
            && !is_default(g)
        {
            stats.groups_not_pushed += 1;
            continue;
        }
        selected.push(i);
    }
    // Each group keeps the members that are provisioned: its set is moved
    // out of the snapshot (or the flattening) and filtered in place, one hash
    // lookup per membership, groups on all cores. The ids are copied into the
    // set (most are held inline): a probe then reads one table slot, not a
    // slot and the key it points to.
    let provisioned: FxHashSet<SourceId> = users.keys().cloned().collect();
    let mut member_sets: Vec<Members> = selected
        .iter()
        .map(|&i| {
            flat.members[i]
                .take()
                .unwrap_or_else(|| std::mem::take(&mut snapshot.groups[i].members))
        })
        .collect();
    crate::par::par_for_each_mut(&mut member_sets, |set| {
        // Usually every member is provisioned: a read-only pass first, and
        // the set is only rebuilt when someone has to go.
        if !set.iter().all(|m| provisioned.contains(m)) {
            set.retain(|m| provisioned.contains(m));
        }
    });
    // Built in bulk (source group ids are unique).
    let mut desired_groups: BTreeMap<SourceId, DesiredGroup> = selected
        .into_iter()
        .zip(member_sets)
        .map(|(i, members)| {
            let g = &snapshot.groups[i];
            let group = DesiredGroup {
                display_name: g.name.clone(),
                members,
            };
            (g.id.clone(), group)
        })
        .collect();
    let snapshot = &*snapshot;
    // Where a refused group came from: its source record, or the config for
    // a default group the source does not have. Asked only for refusals, so
    // the index is built on the first one.
    let group_index: std::cell::OnceCell<FxHashMap<&str, usize>> = std::cell::OnceCell::new();
    let origin_of_group = |id: &SourceId| -> Origin {
        let index = group_index.get_or_init(|| {
            (snapshot.groups.iter().enumerate())
                .map(|(i, g)| (g.id.as_str(), i))
                .collect()
        });
        match index.get(id.as_str()) {
            Some(&i) => snapshot.groups[i].origin.clone(),
            None => Origin {
                file: "config".into(),
                location: "groups.default".into(),
            },
        }
    };
    // Default groups: every provisioned user joins them; one the source does
    // not have is created under its name.
    for name in &groups.default_groups {
        let existing = snapshot.groups.iter().find(|g| {
            g.name.eq_ignore_ascii_case(name) || g.id.as_str().eq_ignore_ascii_case(name)
        });
        let id = match existing {
            Some(g) if held_groups.contains(&g.id) => continue,
            Some(g) => g.id.clone(),
            None => SourceId::from(name.as_str()),
        };
        desired_groups
            .entry(id)
            .or_insert_with(|| DesiredGroup {
                display_name: name.clone(),
                members: Members::new(),
            })
            .members
            .extend(users.keys().cloned());
    }
    // Names the target reserves, and groups over its member limit: refused.
    let refused: Vec<(SourceId, String)> = desired_groups
        .iter()
        .filter_map(|(id, g)| {
            if groups.reserved_names.contains(&g.display_name.to_lowercase()) {
                return Some((id.clone(), format!(
                    "`{}` is a reserved group name in the target (an Atlassian site or default-access group): a synced group of that name never reaches the sites or cannot be synced at all; rename the group in the source or leave it out (groups.push)",
                    g.display_name
                )));
            }
            match groups.max_members {
                Some(max) if g.members.len() > max => Some((id.clone(), format!(
                    "group `{}` would have {} members (nested groups included); the target allows at most {max} per group",
                    g.display_name,
                    g.members.len()
                ))),
                _ => None,
            }
        })
        .collect();
    for (id, reason) in refused {
        if let Some(g) = desired_groups.remove(&id) {
            held_groups.insert(id.clone());
            rejects.push(Reject {
                kind: RecordKind::Group,
                origin: origin_of_group(&id),
                source_id: Some(id),
                label: Some(g.display_name),
                reason,
            });
        }
    }
    // Groups sharing a name: sorted by name, each run of equal names is one
    // clash (no map of names to lists).
    let mut names: Vec<(Cow<'_, str>, &SourceId)> = desired_groups
        .iter()
        .map(|(id, g)| {
            let folded = if mapping.group_name_ci {
                Cow::Owned(g.display_name.to_lowercase())
            } else {
                Cow::Borrowed(g.display_name.as_str())
            };
            (folded, id)
        })
        .collect();
    names.sort_unstable();
    let mut dup_groups: Vec<(SourceId, usize)> = names
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
        .flat_map(|run| run.iter().map(|(_, id)| ((*id).clone(), run.len())))
        .collect();
    drop(names);
    // Sorted by id, as the plan lists them.
    dup_groups.sort();
    for (id, count) in dup_groups {
        if let Some(g) = desired_groups.remove(&id) {
            held_groups.insert(id.clone());
            rejects.push(Reject {
                kind: RecordKind::Group,
                origin: origin_of_group(&id),
                source_id: Some(id.clone()),
                label: Some(g.display_name.clone()),
                reason: format!(
                    "duplicate group name `{}` (used by {} source groups)",
                    g.display_name, count
                ),
            });
        }
    }
    tracing::debug!(
        flatten_ms,
        map_ms,
        collect_ms,
        unique_ms,
        total_ms = ms(),
        "mapping stages (cumulative)"
    );
    // Memberships of held users are left as they are: drop held users from nothing,
    // the planner consults `held_users` before removing a member.
    Desired {
        users,
        groups: desired_groups,
        held_users,
        held_groups,
        out_of_scope,
        rejects,
        managed_paths: mapping.managed_paths(),
        stats,
        group_notes,
    }
}

fn label_of(u: &SourceUser) -> String {
    for f in ["user_name", "email", "display_name"] {
        let v = u.field(f);
        if !v.is_empty() {
            return v.to_owned();
        }
    }
    u.id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MappingConfig, TransformConfig};
    use crate::model::SourceGroup;
    use serde_json::json;
    use std::path::Path;

    fn user(id: &str, fields: &[(&str, &str)]) -> SourceUser {
        SourceUser {
            id: SourceId::from(id),
            fields: fields.iter().map(|(k, v)| (*k, (*v).into())).collect(),
            active: true,
            groups: vec![],
            origin: Origin {
                file: "users.csv".into(),
                location: format!("line {}", id.len() + 1),
            },
        }
    }

    fn full(id: &str, first: &str, last: &str, email: &str) -> SourceUser {
        user(
            id,
            &[
                ("given_name", first),
                ("family_name", last),
                ("email", email),
                ("user_name", email),
            ],
        )
    }

    fn mapping(cfg: MappingConfig, scope: ScopeConfig) -> Mapping {
        let p = Profile::load("atlassian", Path::new(".")).unwrap();
        Mapping::compile(&p, &cfg, &scope).unwrap()
    }

    #[test]
    fn template_alternatives_and_escapes() {
        let t = Template::compile(&TemplateSpec::Many(vec![
            "{display_name}".into(),
            "{given_name} {family_name}".into(),
        ]))
        .unwrap();
        let u = full("1", "Ann", "Lee", "ann@x.org");
        assert_eq!(t.render(&u).as_deref(), Some("Ann Lee"));
        let t = Template::compile(&TemplateSpec::One("{{{given_name}}}".into())).unwrap();
        assert_eq!(t.render(&u).as_deref(), Some("{Ann}"));
        assert!(Template::compile(&TemplateSpec::One("{oops".into())).is_err());
        assert!(Template::compile(&TemplateSpec::One("a}b".into())).is_err());
        assert!(Template::compile(&TemplateSpec::One("{}".into())).is_err());
    }

    #[test]
    fn maps_atlassian_defaults() {
        let m = mapping(MappingConfig::default(), ScopeConfig::default());
        let attrs = m.map_user(&full("7", "Ann", "Lee", "ann@x.org")).unwrap();
        assert_eq!(attrs["userName"], json!("ann@x.org"));
        assert_eq!(attrs["displayName"], json!("Ann Lee"));
        assert_eq!(attrs["active"], json!(true));
        assert_eq!(attrs["externalId"], json!("7"));
        assert_eq!(attrs["emails[type eq \"work\"].value"], json!("ann@x.org"));
        assert!(!attrs.contains_key("title"));
    }

    #[test]
    fn required_and_email_checks_reject_with_reason() {
        let m = mapping(MappingConfig::default(), ScopeConfig::default());
        let e = m.map_user(&full("1", "Ann", "", "ann@x.org")).unwrap_err();
        assert!(e.contains("name.familyName"), "{e}");
        let e = m
            .map_user(&full("1", "Ann", "Lee", "not-an-email"))
            .unwrap_err();
        assert!(e.contains("not a valid email"), "{e}");
    }

    #[test]
    fn user_name_regex_transform() {
        let cfg = MappingConfig {
            user_name_transform: Some(TransformConfig {
                pattern: "(.*)@.*".into(),
                replacement: "$1".into(),
                on_no_match: NoMatch::Reject,
            }),
            ..MappingConfig::default()
        };
        let m = mapping(cfg, ScopeConfig::default());
        let attrs = m.map_user(&full("1", "Ann", "Lee", "ann@x.org")).unwrap();
        assert_eq!(attrs["userName"], json!("ann"));
        let mut u = full("2", "Bo", "Ek", "bo@x.org");
        u.fields.insert("user_name", "bo".into());
        assert!(m.map_user(&u).unwrap_err().contains("does not match"));
    }

    #[test]
    fn bad_regex_is_a_config_error() {
        let p = Profile::load("atlassian", Path::new(".")).unwrap();
        let cfg = MappingConfig {
            user_name_transform: Some(TransformConfig {
                pattern: "(.*@".into(),
                replacement: "$1".into(),
                on_no_match: NoMatch::Keep,
            }),
            ..MappingConfig::default()
        };
        let e = Mapping::compile(&p, &cfg, &ScopeConfig::default()).unwrap_err();
        assert_eq!(e.key, "mapping.user_name_transform.pattern");
    }

    fn sgroup(id: &str, name: &str, members: &[&str]) -> SourceGroup {
        SourceGroup {
            id: SourceId::from(id),
            name: name.into(),
            members: members.iter().map(|s| SourceId::from(*s)).collect(),
            origin: Origin {
                file: "g.csv".into(),
                location: format!("group {id}"),
            },
        }
    }

    fn four_people(groups: Vec<SourceGroup>) -> Snapshot {
        Snapshot {
            users: vec![
                full("1", "Ann", "Lee", "ann@x.org"),
                full("2", "Bo", "Ek", "bo@x.org"),
                full("3", "Cy", "Oh", "cy@x.org"),
                full("4", "Di", "Ma", "di@x.org"),
            ],
            groups,
            rejects: vec![],
        }
    }

    fn member_ids(d: &Desired, group: &str) -> Vec<String> {
        d.groups[&SourceId::from(group)]
            .members
            .iter()
            .map(|m| m.to_string())
            .collect()
    }

    #[test]
    fn nested_groups_are_flattened_for_scope_and_for_pushing() {
        let m = mapping(
            MappingConfig::default(),
            ScopeConfig {
                groups: vec!["All".into()],
                email_domains: vec![],
            },
        );
        let snapshot = four_people(vec![
            sgroup("all", "All", &["1", "eng"]),
            sgroup("eng", "Engineering", &["2", "be"]),
            sgroup("be", "Backend", &["3"]),
            sgroup("loop-a", "Loop A", &["loop-b", "4"]),
            sgroup("loop-b", "Loop B", &["loop-a"]),
        ]);
        let d = desired_state(&snapshot, &m, &GroupSettings::default());
        // Scope through nesting: 1, 2 (via eng) and 3 (via eng/be); 4 is only
        // in the loop groups, out of scope.
        assert_eq!(
            d.users.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
        assert_eq!(member_ids(&d, "all"), ["1", "2", "3"]);
        assert_eq!(member_ids(&d, "eng"), ["2", "3"]);
        assert_eq!(member_ids(&d, "be"), ["3"]);
        assert!(member_ids(&d, "loop-a").is_empty(), "4 is out of scope");
        assert!(
            d.group_notes.iter().any(|n| n.contains("loop-a, loop-b")),
            "{:?}",
            d.group_notes
        );
        assert!(
            d.group_notes
                .iter()
                .any(|n| n.starts_with("4 source groups contain groups"))
        );
    }

    #[test]
    fn default_groups_get_every_provisioned_user() {
        let m = mapping(MappingConfig::default(), ScopeConfig::default());
        let snapshot = four_people(vec![sgroup("eng", "Engineering", &["1"])]);
        let d = desired_state(
            &snapshot,
            &m,
            &GroupSettings {
                push: Some(vec!["nothing".into()]),
                default_groups: vec!["All Staff".into(), "engineering".into()],
                ..GroupSettings::default()
            },
        );
        // Not in the source: created under its name; in the source: extended,
        // and pushed although `push` does not list it.
        assert_eq!(member_ids(&d, "All Staff"), ["1", "2", "3", "4"]);
        assert_eq!(
            d.groups[&SourceId::from("All Staff")].display_name,
            "All Staff"
        );
        assert_eq!(member_ids(&d, "eng"), ["1", "2", "3", "4"]);
        assert_eq!(d.groups[&SourceId::from("eng")].display_name, "Engineering");
        assert_eq!(d.groups.len(), 2);
    }

    #[test]
    fn reserved_names_and_oversized_groups_are_refused_with_a_reason() {
        let m = mapping(MappingConfig::default(), ScopeConfig::default());
        let snapshot = four_people(vec![
            sgroup("c", "Confluence-Users", &["1"]),
            sgroup("big", "Big", &["1", "2", "3"]),
            sgroup("nest", "Nest", &["big", "4"]),
            sgroup("ok", "Ok", &["1", "2"]),
        ]);
        let d = desired_state(
            &snapshot,
            &m,
            &GroupSettings {
                reserved_names: ["confluence-users".to_owned()].into(),
                max_members: Some(2),
                ..GroupSettings::default()
            },
        );
        assert_eq!(
            d.groups.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["ok"]
        );
        let reasons: Vec<(&str, &str)> = d
            .rejects
            .iter()
            .map(|r| (r.source_id.as_ref().unwrap().as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|(id, r)| *id == "c" && r.contains("reserved group name"))
        );
        assert!(
            reasons
                .iter()
                .any(|(id, r)| *id == "big" && r.contains("3 members") && r.contains("at most 2"))
        );
        // Nested members count toward the limit.
        assert!(
            reasons
                .iter()
                .any(|(id, r)| *id == "nest" && r.contains("4 members"))
        );
        assert!(d.held_groups.contains(&SourceId::from("c")));
        // Each refusal points at the group's own record.
        for r in &d.rejects {
            let id = r.source_id.as_ref().unwrap();
            assert_eq!(r.origin.to_string(), format!("g.csv:group {id}"));
        }
        // A default group the source does not have comes from the config.
        let d = desired_state(
            &snapshot,
            &m,
            &GroupSettings {
                default_groups: vec!["Everyone".into()],
                max_members: Some(3),
                ..GroupSettings::default()
            },
        );
        let everyone = d
            .rejects
            .iter()
            .find(|r| r.source_id == Some(SourceId::from("Everyone")))
            .expect("Everyone (4 members) is over the limit");
        assert_eq!(everyone.origin.to_string(), "config:groups.default");
    }

    #[test]
    fn scope_by_group_and_domain() {
        let m = mapping(
            MappingConfig::default(),
            ScopeConfig {
                groups: vec!["Engineering".into()],
                email_domains: vec!["x.org".into()],
            },
        );
        let snapshot = Snapshot {
            users: vec![
                full("1", "Ann", "Lee", "ann@x.org"),
                full("2", "Bo", "Ek", "bo@x.org"),
                full("3", "Cy", "Oh", "cy@elsewhere.com"),
            ],
            groups: vec![SourceGroup {
                id: SourceId::from("eng"),
                name: "Engineering".into(),
                members: ["1", "3"].iter().map(|s| SourceId::from(*s)).collect(),
                origin: Origin {
                    file: "g.csv".into(),
                    location: "line 2".into(),
                },
            }],
            rejects: vec![],
        };
        let d = desired_state(
            &snapshot,
            &m,
            &GroupSettings {
                push: None,
                adopt_existing: true,
                ..GroupSettings::default()
            },
        );
        assert_eq!(
            d.users.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["1"]
        );
        assert_eq!(d.stats.out_of_group_scope, 1);
        assert_eq!(d.stats.out_of_domain_scope, 1);
        assert_eq!(d.groups[&SourceId::from("eng")].members.len(), 1);
    }

    #[test]
    fn duplicate_user_names_after_transform_are_held() {
        let cfg = MappingConfig {
            user_name_transform: Some(TransformConfig {
                pattern: "(.*)@.*".into(),
                replacement: "$1".into(),
                on_no_match: NoMatch::Keep,
            }),
            ..MappingConfig::default()
        };
        let m = mapping(cfg, ScopeConfig::default());
        let snapshot = Snapshot {
            users: vec![
                full("1", "Ann", "Lee", "ann@x.org"),
                full("2", "Ann", "Li", "ANN@y.org"),
                full("3", "Bo", "Ek", "bo@x.org"),
            ],
            ..Snapshot::default()
        };
        let d = desired_state(
            &snapshot,
            &m,
            &GroupSettings {
                push: None,
                adopt_existing: true,
                ..GroupSettings::default()
            },
        );
        assert_eq!(d.users.len(), 1);
        assert!(d.held_users.contains(&SourceId::from("1")));
        assert!(d.held_users.contains(&SourceId::from("2")));
        assert_eq!(d.rejects.len(), 2);
        assert!(d.rejects[0].reason.contains("duplicate userName"));
    }
}
