//! Source loaders: CSV and JSON directory exports, and LDAP / Active
//! Directory (`ldap`) → [`Snapshot`].
//!
//! A loader never aborts a run for one bad record: it rejects the record with
//! its file, line and reason and goes on. It fails as a whole (exit 2) only
//! when the file cannot be used at all — missing, unreadable, no header row, no
//! `id` column, JSON that does not parse — because planning against half a
//! directory would deprovision the other half.

mod csv;
mod json;
pub mod ldap;

use std::collections::HashMap;

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};

use crate::config::{SourceKind, SourceSettings};
use crate::mapping::parse_bool;
use crate::model::{
    Fields, Origin, RecordKind, Reject, STANDARD_FIELDS, Snapshot, SourceGroup, SourceId,
    SourceUser, email_problem,
};

/// Longest accepted field value, in bytes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// A source that cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's structure is unusable.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (with a line when known).
        message: String,
    },
    /// The LDAP server could not be used (down, bind refused, search failed).
    #[error("LDAP source {url}: {message}")]
    Ldap {
        /// The server URL (never credentials).
        url: String,
        /// What went wrong, with the likely cause.
        message: String,
    },
}

/// Load the configured source.
pub fn load(settings: &SourceSettings) -> Result<Snapshot, SourceError> {
    let mut builder = Builder::new(settings);
    match settings.kind {
        SourceKind::Csv => {
            // The membership file is read on a second thread while the people
            // are: it starts from an empty builder either way (the `groups`
            // column joins at `finish`), so the result is the same as reading
            // one file after the other, rejects in the same order.
            let (users, groups) = std::thread::scope(|scope| {
                let groups = settings.groups.as_ref().map(|path| {
                    scope.spawn(move || {
                        let mut b = Builder::new(settings);
                        csv::load_groups(path, settings, &mut b).map(|()| b)
                    })
                });
                let users = csv::load_users(&settings.users, settings, &mut builder);
                let groups = groups.map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                });
                (users, groups)
            });
            users?;
            if let Some(groups) = groups {
                builder.take_groups(groups?);
            }
        }
        SourceKind::Json => {
            json::load(&settings.users, settings, &mut builder, true)?;
            if let Some(groups) = &settings.groups {
                json::load(groups, settings, &mut builder, false)?;
            }
        }
        SourceKind::Ldap => match &settings.ldap {
            Some(l) => ldap::load(l, &mut builder)?,
            None => {
                return Err(SourceError::Format {
                    path: settings.users.clone(),
                    message: "source.type is ldap but there is no [source.ldap] table".into(),
                });
            }
        },
    }
    Ok(builder.finish())
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Maps a file's column/key names to canonical field names.
pub(crate) struct Columns {
    rename: HashMap<String, String>,
}

impl Columns {
    pub(crate) fn new(settings: &SourceSettings) -> Self {
        let rename = settings
            .columns
            .iter()
            .map(|(canonical, column)| (column.trim().to_owned(), canonical.clone()))
            .collect();
        Columns { rename }
    }

    /// The canonical name of a column: an explicit mapping, else a standard
    /// name (case-insensitive), else the column name itself (a custom field).
    pub(crate) fn canonical(&self, column: &str) -> String {
        let column = column.trim();
        if let Some(c) = self.rename.get(column) {
            return c.clone();
        }
        let lower = column.to_ascii_lowercase();
        if lower == "id"
            || lower == "active"
            || lower == "groups"
            || STANDARD_FIELDS.contains(&lower.as_str())
        {
            return lower;
        }
        column.to_owned()
    }
}

/// Strip surrounding whitespace without a new allocation when there is none.
fn trim_in_place(s: &mut CompactString) {
    let t = s.trim();
    if t.len() != s.len() {
        *s = CompactString::from(t);
    }
}

/// Collects records, validates them one at a time and resolves duplicates.
pub(crate) struct Builder<'a> {
    settings: &'a SourceSettings,
    users: Vec<SourceUser>,
    groups: Vec<SourceGroup>,
    group_index: FxHashMap<String, usize>,
    /// Members read so far, per group (same index), in file order (each run
    /// of rows moved in from `run`), the sets built once in
    /// [`Builder::finish`].
    pending: Vec<Vec<SourceId>>,
    /// The group of the last row, and the members of the run of rows it
    /// heads: a membership file usually lists a group's rows together, so
    /// they are gathered here and moved into the group's list at its size
    /// when the run ends, not grown into it row by row.
    run_group: Option<usize>,
    run: Vec<SourceId>,
    rejects: Vec<Reject>,
}

impl<'a> Builder<'a> {
    fn new(settings: &'a SourceSettings) -> Self {
        Builder {
            settings,
            users: Vec::new(),
            groups: Vec::new(),
            group_index: FxHashMap::default(),
            pending: Vec::new(),
            run_group: None,
            run: Vec::new(),
            rejects: Vec::new(),
        }
    }

    /// Move the current run of members into its group's list.
    fn end_run(&mut self) {
        if let Some(g) = self.run_group.take() {
            self.pending[g].append(&mut self.run);
        }
    }

    /// Room for `n` more people: a large file's count is known from its
    /// lines, and a vector of a million people that grows by doubling
    /// copies itself into fresh memory some twenty times on the way.
    pub(crate) fn reserve_users(&mut self, n: usize) {
        self.users.reserve(n);
    }

    /// Adopt the groups and rejects of a builder that read only groups.
    fn take_groups(&mut self, mut other: Builder<'_>) {
        debug_assert!(self.groups.is_empty() && other.users.is_empty());
        other.end_run();
        self.end_run();
        self.groups = other.groups;
        self.group_index = other.group_index;
        self.pending = other.pending;
        self.rejects.extend(other.rejects);
    }

    pub(crate) fn reject(
        &mut self,
        kind: RecordKind,
        origin: Origin,
        source_id: Option<String>,
        label: Option<String>,
        reason: String,
    ) {
        self.rejects.push(Reject {
            kind,
            origin,
            source_id: source_id.filter(|s| !s.is_empty()).map(SourceId::from),
            label: label.filter(|s| !s.is_empty()),
            reason,
        });
    }

    /// Validate one user record given as canonical field → value.
    pub(crate) fn user(&mut self, origin: Origin, mut fields: Fields) {
        let mut id = fields.remove("id").unwrap_or_default();
        trim_in_place(&mut id);
        // Only a rejected record needs a label: computed then, not per row.
        let label_of = |fields: &Fields| {
            ["user_name", "email", "display_name"].iter().find_map(|f| {
                fields
                    .get(f)
                    .filter(|v| !v.trim().is_empty())
                    .map(ToString::to_string)
            })
        };
        let reject = |b: &mut Self, fields: &Fields, reason: String| {
            b.reject(
                RecordKind::User,
                origin.clone(),
                Some(id.to_string()),
                label_of(fields),
                reason,
            )
        };
        if id.is_empty() {
            return reject(self, &fields, "missing required value `id`".into());
        }
        if id.len() > MAX_FIELD_BYTES {
            // Not an id any account could carry: do not echo it as one.
            let label = label_of(&fields);
            return self.reject(
                RecordKind::User,
                origin,
                None,
                label,
                format!("field `id` is longer than {MAX_FIELD_BYTES} bytes"),
            );
        }
        if let Some((k, _)) = fields.iter().find(|(_, v)| v.len() > MAX_FIELD_BYTES) {
            let reason = format!("field `{k}` is longer than {MAX_FIELD_BYTES} bytes");
            return reject(self, &fields, reason);
        }
        let active = match fields.remove("active") {
            None => true,
            Some(v) if v.trim().is_empty() => true,
            Some(v) => match parse_bool(&v) {
                Some(b) => b,
                None => {
                    let reason = format!("`active` is `{v}`, not true/false/yes/no/1/0");
                    return reject(self, &fields, reason);
                }
            },
        };
        if let Some(email) = fields.get("email").map(|e| e.trim())
            && !email.is_empty()
            && let Some(problem) = email_problem(email)
        {
            let reason = format!("invalid email `{email}`: {problem}");
            return reject(self, &fields, reason);
        }
        let groups = fields
            .remove("groups")
            .map(|g| {
                g.split(self.settings.list_separator.as_str())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        // Trimmed in place: most values need no new string.
        fields.retain(|_, v| {
            trim_in_place(v);
            !v.is_empty()
        });
        self.users.push(SourceUser {
            id: SourceId(id),
            fields,
            active,
            groups,
            origin,
        });
    }

    /// Record a group (and optionally one member); false when the record was rejected.
    pub(crate) fn group(
        &mut self,
        origin: Origin,
        id: Option<String>,
        name: String,
        member: Option<String>,
    ) -> bool {
        self.group_row(|| origin, id.as_deref(), &name, member.as_deref())
    }

    /// [`Builder::group`] for one borrowed row: the row's [`Origin`] is only
    /// built when it is kept (a new group, a rejection), and a known group or
    /// member id costs no allocation beyond the member's own. A membership
    /// file has one row per membership, millions on a large directory.
    pub(crate) fn group_row(
        &mut self,
        origin: impl FnOnce() -> Origin,
        id: Option<&str>,
        name: &str,
        member: Option<&str>,
    ) -> bool {
        let name = name.trim();
        let id = id.map(str::trim).filter(|i| !i.is_empty()).unwrap_or(name);
        if name.is_empty() {
            self.reject(
                RecordKind::Group,
                origin(),
                Some(id.to_owned()),
                None,
                "missing required value `group` (the group name)".into(),
            );
            return false;
        }
        if name.len() > 255 || name.chars().any(char::is_control) {
            self.reject(
                RecordKind::Group,
                origin(),
                Some(id.to_owned()),
                Some(name.to_owned()),
                "group name is longer than 255 bytes or contains control characters".into(),
            );
            return false;
        }
        // The group of the row before, most of the time: no lookup.
        let last = self.run_group.filter(|&i| self.groups[i].id.as_str() == id);
        let idx = match last.or_else(|| self.group_index.get(id).copied()) {
            Some(i) => {
                if self.groups[i].name != name {
                    let first = self.groups[i].origin.clone();
                    self.reject(
                        RecordKind::Group,
                        origin(),
                        Some(id.to_owned()),
                        Some(name.to_owned()),
                        format!("group id is used with another name at {first}"),
                    );
                    return false;
                }
                i
            }
            None => {
                self.groups.push(SourceGroup {
                    id: SourceId::from(id),
                    name: name.to_owned(),
                    members: Default::default(),
                    origin: origin(),
                });
                self.group_index
                    .insert(id.to_owned(), self.groups.len() - 1);
                self.pending.push(Vec::new());
                self.groups.len() - 1
            }
        };
        if self.run_group != Some(idx) {
            self.end_run();
            self.run_group = Some(idx);
        }
        if let Some(m) = member.map(str::trim).filter(|m| !m.is_empty()) {
            self.run.push(SourceId::from(m));
        }
        true
    }

    fn finish(mut self) -> Snapshot {
        self.end_run();
        // Duplicate ids: every occurrence is rejected (which one is right is unknowable).
        // The first holder of each id in one map (borrowed, Fx-hashed: the
        // admin's own ids), the rare repeats in another.
        let mut first: FxHashMap<&str, usize> = FxHashMap::default();
        first.reserve(self.users.len());
        let mut repeats: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        for (i, u) in self.users.iter().enumerate() {
            match first.entry(u.id.as_str()) {
                std::collections::hash_map::Entry::Occupied(e) => repeats
                    .entry(*e.key())
                    .or_insert_with(|| vec![*e.get()])
                    .push(i),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        drop(first);
        let mut dup = vec![false; self.users.len()];
        let mut dup_rejects = Vec::new();
        for idxs in repeats.values() {
            for &i in idxs {
                dup[i] = true;
                let u = &self.users[i];
                let others: Vec<String> = idxs
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| self.users[j].origin.location.clone())
                    .collect();
                dup_rejects.push((
                    i,
                    Reject {
                        kind: RecordKind::User,
                        origin: u.origin.clone(),
                        source_id: Some(u.id.clone()),
                        label: u
                            .fields
                            .get("user_name")
                            .or(u.fields.get("email"))
                            .map(ToString::to_string),
                        reason: format!("duplicate id `{}` (also at {})", u.id, others.join(", ")),
                    },
                ));
            }
        }
        dup_rejects.sort_by_key(|(i, _)| *i);
        self.rejects.extend(dup_rejects.into_iter().map(|(_, r)| r));
        // In place: usually nobody is dropped, and the vector stays as it is.
        let mut users = std::mem::take(&mut self.users);
        if dup.contains(&true) {
            let mut i = 0;
            users.retain(|_| {
                let keep = !dup[i];
                i += 1;
                keep
            });
        }
        // Memberships listed on user records (`groups` column) join groups by name.
        let by_name: HashMap<String, usize> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i))
            .collect();
        let mut extra: Vec<(String, SourceId, Origin)> = Vec::new();
        for u in &users {
            for g in &u.groups {
                extra.push((g.clone(), u.id.clone(), u.origin.clone()));
            }
        }
        for (name, member, origin) in extra {
            match by_name
                .get(&name)
                .copied()
                .or_else(|| self.group_index.get(&name).copied())
            {
                Some(i) => self.pending[i].push(member),
                None => {
                    self.group(origin, None, name, Some(member.to_string()));
                }
            }
        }
        // Members the `groups` column just added to a new group.
        self.end_run();
        // Each group's set in one go: sorted and deduplicated in place,
        // rather than a set insert per membership row.
        for (g, members) in self.groups.iter_mut().zip(self.pending) {
            g.members.extend(members);
        }
        Snapshot {
            users,
            groups: self.groups,
            rejects: self.rejects,
        }
    }
}

#[cfg(test)]
mod tests;
