//! The directory's state: users, groups, and the indexes that keep every request cheap.
//!
//! Users are kept as the JSON the client sent (plus server attributes); uniqueness of
//! `userName` and of the primary email is enforced through case-folded indexes. Group
//! membership is a set per group plus a reverse user → groups index, so member
//! changes and user deletion never scan whole member lists.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::order::OrderIndex;
use super::patch::{
    ATLASSIAN_EXTERNAL_URN, CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_URN, GroupChange, OpKind,
    PatchOp, apply_user_ops, get_ci, member_ids, plan_group_ops, remove_ci, set_ci,
};

// ---------------------------------------------------------------------------------
// Ids and timestamps.

/// Lock-free splitmix64 generator seeded from the process's hash randomness.
#[derive(Debug)]
pub(crate) struct IdGen {
    state: AtomicU64,
}

impl IdGen {
    pub(crate) fn new() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        IdGen {
            state: AtomicU64::new(h.finish()),
        }
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random version-4-shaped UUID string.
    pub(crate) fn uuid(&self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// `n` random lowercase hex digits.
    pub(crate) fn hex(&self, n: usize) -> String {
        let mut s = String::with_capacity(n + 16);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(n);
        s
    }
}

fn now_string() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Millisecond)
        .unwrap_or(now)
        .to_string()
}

// ---------------------------------------------------------------------------------
// Records.

/// The index keys of one user, as sent (case folding happens at lookup).
#[derive(Clone, Debug)]
struct UserKeys {
    user_name: String,
    email: String,
    external_id: Option<String>,
}

#[derive(Debug)]
struct UserRec {
    slot: usize,
    res: Map<String, Value>,
    keys: UserKeys,
}

#[derive(Debug)]
struct GroupRec {
    slot: usize,
    /// The group without `members`.
    res: Map<String, Value>,
    name: String,
    members: BTreeSet<String>,
}

/// A validated group body, split into its parts.
struct GroupBody {
    /// Attributes other than `members`.
    res: Map<String, Value>,
    name: String,
    members: Vec<String>,
}

/// Which users a list request asks for.
#[derive(Clone, Debug)]
pub(crate) enum UserFilter {
    UserName(String),
    ExternalId(String),
}

/// One page of a list: the total match count and the rendered resources.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) total: usize,
    pub(crate) resources: Vec<Value>,
}

/// All directory state.
#[derive(Debug)]
pub(crate) struct Store {
    base_path: String,
    users: HashMap<String, UserRec>,
    user_order: OrderIndex,
    by_user_name: HashMap<String, String>,
    by_email: HashMap<String, String>,
    by_external_id: HashMap<String, HashSet<String>>,
    groups: HashMap<String, GroupRec>,
    group_order: OrderIndex,
    group_by_name: HashMap<String, String>,
    user_groups: HashMap<String, BTreeSet<String>>,
    /// Most members per group (Atlassian's hard limit: 290,000).
    max_group_members: usize,
}

fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn user_not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("Resource [USER]: with id[{id}] does not exist."))
}

fn group_not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("Resource [GROUP]: with id[{id}] does not exist."))
}

/// Take a client body apart: must be an object; read-only attributes are dropped.
fn client_object(body: Value, read_only: &[&str]) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(mut m) = body else {
        return Err(ScimError::invalid_syntax(
            "request body must be a JSON object",
        ));
    };
    for k in read_only {
        remove_ci(&mut m, k);
    }
    Ok(m)
}

fn ensure_schemas(m: &mut Map<String, Value>, core: &str) -> Result<(), ScimError> {
    match get_ci(m, "schemas") {
        None | Some(Value::Null) => {
            let mut schemas = vec![Value::from(core)];
            if get_ci(m, ENTERPRISE_URN).is_some() {
                schemas.push(Value::from(ENTERPRISE_URN));
            }
            set_ci(m, "schemas", Value::Array(schemas));
            Ok(())
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err(ScimError::invalid_syntax(
            "schemas must be an array of strings",
        )),
    }
}

/// Check a user resource and extract its index keys. `active` defaults to true.
fn validate_user(m: &mut Map<String, Value>) -> Result<UserKeys, ScimError> {
    let user_name = match get_ci(m, "userName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ScimError::invalid_value("userName is required"));
        }
        Some(_) => return Err(ScimError::invalid_value("userName must be a string")),
    };
    let no_primary = || ScimError::invalid_value("One email address need to be marked as primary");
    let emails = match get_ci(m, "emails") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(no_primary()),
        Some(_) => return Err(ScimError::invalid_value("emails must be an array")),
    };
    let mut primary = None;
    let mut primaries = 0;
    for e in emails {
        let obj = e
            .as_object()
            .ok_or_else(|| ScimError::invalid_value("each email must be an object"))?;
        let value = match get_ci(obj, "value") {
            Some(Value::String(v)) if v.contains('@') && !v.trim().is_empty() => v,
            Some(Value::String(v)) => {
                return Err(ScimError::invalid_value(format!(
                    "Invalid email address [{v}]"
                )));
            }
            _ => return Err(ScimError::invalid_value("each email needs a string value")),
        };
        if get_ci(obj, "primary") == Some(&Value::Bool(true)) {
            primaries += 1;
            primary = Some(value.clone());
        }
    }
    let email = match (primaries, primary) {
        (1, Some(p)) => p,
        _ => return Err(no_primary()),
    };
    match get_ci(m, "active") {
        None | Some(Value::Null) => set_ci(m, "active", Value::Bool(true)),
        Some(Value::Bool(_)) => {}
        Some(_) => return Err(ScimError::invalid_value("active must be a boolean")),
    }
    let external_id = match get_ci(m, "externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::invalid_value("externalId must be a string")),
    };
    for (attr, what) in [("name", "an object"), (ENTERPRISE_URN, "an object")] {
        if get_ci(m, attr).is_some_and(|v| !v.is_object() && !v.is_null()) {
            return Err(ScimError::invalid_value(format!("{attr} must be {what}")));
        }
    }
    Ok(UserKeys {
        user_name,
        email,
        external_id,
    })
}

impl Store {
    pub(crate) fn new(base_path: String) -> Self {
        Store {
            base_path,
            users: HashMap::new(),
            user_order: OrderIndex::default(),
            by_user_name: HashMap::new(),
            by_email: HashMap::new(),
            by_external_id: HashMap::new(),
            groups: HashMap::new(),
            group_order: OrderIndex::default(),
            group_by_name: HashMap::new(),
            user_groups: HashMap::new(),
            max_group_members: crate::sandbox::ATLASSIAN_MAX_GROUP_MEMBERS,
        }
    }

    /// Set the per-group member limit.
    pub(crate) fn with_max_group_members(mut self, max: usize) -> Self {
        self.max_group_members = max;
        self
    }

    /// Refuse a membership change that would take a group over the limit.
    fn check_group_size(&self, id: &str, adding: &[String]) -> Result<(), ScimError> {
        let current = self.groups.get(id).map_or(0, |g| g.members.len());
        let new = adding
            .iter()
            .filter(|u| !self.groups.get(id).is_some_and(|g| g.members.contains(*u)))
            .collect::<BTreeSet<_>>()
            .len();
        if current + new > self.max_group_members {
            return Err(ScimError::bad_request(
                "tooMany",
                format!(
                    "group {id} would have {} members; the limit is {}",
                    current + new,
                    self.max_group_members
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }

    // ---- users -------------------------------------------------------------------

    fn check_user_unique(&self, keys: &UserKeys, me: Option<&str>) -> Result<(), ScimError> {
        let other = |hit: Option<&String>| hit.is_some_and(|id| Some(id.as_str()) != me);
        if other(self.by_user_name.get(&fold(&keys.user_name))) {
            return Err(ScimError::uniqueness(format!(
                "Resource [USER]: with userName[{}] already exists.",
                keys.user_name
            )));
        }
        if other(self.by_email.get(&fold(&keys.email))) {
            return Err(ScimError::uniqueness(format!(
                "Resource [USER]: with email[{}] already exists.",
                keys.email
            )));
        }
        Ok(())
    }

    fn index_user(&mut self, id: &str, keys: &UserKeys) {
        self.by_user_name
            .insert(fold(&keys.user_name), id.to_owned());
        self.by_email.insert(fold(&keys.email), id.to_owned());
        if let Some(ext) = &keys.external_id {
            self.by_external_id
                .entry(ext.clone())
                .or_default()
                .insert(id.to_owned());
        }
    }

    fn unindex_user(&mut self, id: &str, keys: &UserKeys) {
        let un = fold(&keys.user_name);
        if self.by_user_name.get(&un).is_some_and(|v| v == id) {
            self.by_user_name.remove(&un);
        }
        let em = fold(&keys.email);
        if self.by_email.get(&em).is_some_and(|v| v == id) {
            self.by_email.remove(&em);
        }
        if let Some(ext) = &keys.external_id
            && let Some(set) = self.by_external_id.get_mut(ext)
        {
            set.remove(id);
            if set.is_empty() {
                self.by_external_id.remove(ext);
            }
        }
    }

    /// POST /Users (and seeding). With `accept_id`, a string `id` in the body is kept.
    pub(crate) fn create_user(
        &mut self,
        body: Value,
        ids: &IdGen,
        accept_id: bool,
    ) -> Result<String, ScimError> {
        let wanted_id = if accept_id {
            body.get("id").and_then(Value::as_str).map(str::to_owned)
        } else {
            None
        };
        let mut m = client_object(body, &["id", "meta", "groups", ATLASSIAN_EXTERNAL_URN])?;
        ensure_schemas(&mut m, CORE_USER_URN)?;
        let keys = validate_user(&mut m)?;
        self.check_user_unique(&keys, None)?;
        let id = match wanted_id {
            Some(id) if !id.is_empty() => {
                if self.users.contains_key(&id) {
                    return Err(ScimError::uniqueness(format!(
                        "Resource [USER]: with id[{id}] already exists."
                    )));
                }
                id
            }
            _ => loop {
                let id = ids.uuid();
                if !self.users.contains_key(&id) {
                    break id;
                }
            },
        };
        let now = now_string();
        m.insert("id".into(), Value::from(id.clone()));
        m.insert(
            "meta".into(),
            json!({"resourceType": "User", "created": now, "lastModified": now}),
        );
        m.insert(
            ATLASSIAN_EXTERNAL_URN.into(),
            json!({"atlassianAccountId": ids.hex(24)}),
        );
        self.index_user(&id, &keys);
        let slot = self.user_order.push(id.clone());
        self.users
            .insert(id.clone(), UserRec { slot, res: m, keys });
        Ok(id)
    }

    /// Store `m` (already validated into `keys`) as the new state of user `id`.
    fn commit_user(&mut self, id: &str, mut m: Map<String, Value>, keys: UserKeys) {
        let Some(rec) = self.users.get(id) else {
            return;
        };
        let old = rec.keys.clone();
        let now = now_string();
        if let Some(Value::Object(meta)) = m.get_mut("meta") {
            meta.insert("lastModified".into(), Value::from(now));
        }
        self.unindex_user(id, &old);
        self.index_user(id, &keys);
        if let Some(rec) = self.users.get_mut(id) {
            m.insert("id".into(), Value::from(id));
            rec.res = m;
            rec.keys = keys;
        }
    }

    /// PUT /Users/{id}: replace everything except id, meta and the Atlassian extension.
    pub(crate) fn replace_user(&mut self, id: &str, body: Value) -> Result<(), ScimError> {
        let rec = self.users.get(id).ok_or_else(|| user_not_found(id))?;
        let mut m = client_object(body, &["id", "meta", "groups", ATLASSIAN_EXTERNAL_URN])?;
        ensure_schemas(&mut m, CORE_USER_URN)?;
        let keys = validate_user(&mut m)?;
        self.check_user_unique(&keys, Some(id))?;
        for keep in ["meta", ATLASSIAN_EXTERNAL_URN] {
            if let Some(v) = rec.res.get(keep) {
                m.insert(keep.into(), v.clone());
            }
        }
        self.commit_user(id, m, keys);
        Ok(())
    }

    /// PATCH /Users/{id}: apply to a copy, re-validate, then commit (all or nothing).
    pub(crate) fn patch_user(&mut self, id: &str, ops: &[PatchOp]) -> Result<(), ScimError> {
        let rec = self.users.get(id).ok_or_else(|| user_not_found(id))?;
        let mut m = rec.res.clone();
        apply_user_ops(&mut m, ops)?;
        let keys = validate_user(&mut m)?;
        self.check_user_unique(&keys, Some(id))?;
        self.commit_user(id, m, keys);
        Ok(())
    }

    /// DELETE /Users/{id}: the record goes, and so do its memberships.
    pub(crate) fn delete_user(&mut self, id: &str) -> Result<(), ScimError> {
        let rec = self.users.remove(id).ok_or_else(|| user_not_found(id))?;
        self.unindex_user(id, &rec.keys);
        self.user_order.remove(rec.slot);
        if self.user_order.needs_compaction() {
            for (uid, slot) in self.user_order.compact() {
                if let Some(r) = self.users.get_mut(&uid) {
                    r.slot = slot;
                }
            }
        }
        let now = now_string();
        for gid in self.user_groups.remove(id).unwrap_or_default() {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.members.remove(id);
                touch(&mut g.res, &now);
            }
        }
        Ok(())
    }

    /// Simulate an out-of-band edit: `replace` (or `remove` for null) of one path.
    pub(crate) fn set_user_attr(&mut self, id: &str, path: &str, value: Value) -> bool {
        let kind = if value.is_null() {
            OpKind::Remove
        } else {
            OpKind::Replace
        };
        let op = PatchOp {
            kind,
            path: Some(path.to_owned()),
            value: (!value.is_null()).then_some(value),
        };
        self.patch_user(id, &[op]).is_ok()
    }

    pub(crate) fn user_exists(&self, id: &str) -> bool {
        self.users.contains_key(id)
    }

    pub(crate) fn group_exists(&self, id: &str) -> bool {
        self.groups.contains_key(id)
    }

    fn location(&self, origin: &str, kind: &str, id: &str) -> String {
        format!("{origin}{}/{kind}/{id}", self.base_path)
    }

    /// The user as served, `meta.location` built from `origin` (e.g. `http://host:port`).
    pub(crate) fn render_user(&self, id: &str, origin: &str) -> Option<Value> {
        let rec = self.users.get(id)?;
        let mut m = rec.res.clone();
        if let Some(Value::Object(meta)) = m.get_mut("meta") {
            meta.insert(
                "location".into(),
                Value::from(self.location(origin, "Users", id)),
            );
        }
        if let Some(gids) = self.user_groups.get(id).filter(|g| !g.is_empty()) {
            let groups: Vec<Value> = gids
                .iter()
                .filter_map(|gid| {
                    let g = self.groups.get(gid)?;
                    Some(json!({"value": gid, "display": g.name, "type": "direct"}))
                })
                .collect();
            m.insert("groups".into(), Value::Array(groups));
        }
        Some(Value::Object(m))
    }

    /// Page through users in creation order, optionally filtered.
    pub(crate) fn list_users(
        &self,
        filter: Option<&UserFilter>,
        offset: usize,
        count: usize,
        origin: &str,
    ) -> Page {
        let ids: Vec<&str> = match filter {
            None => {
                return Page {
                    total: self.user_order.len(),
                    resources: self
                        .user_order
                        .page(offset, count)
                        .filter_map(|id| self.render_user(id, origin))
                        .collect(),
                };
            }
            Some(UserFilter::UserName(name)) => self
                .by_user_name
                .get(&fold(name))
                .map(String::as_str)
                .into_iter()
                .collect(),
            Some(UserFilter::ExternalId(ext)) => {
                let mut hits: Vec<(usize, &str)> = self
                    .by_external_id
                    .get(ext)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.users.get(id).map(|r| (r.slot, id.as_str())))
                    .collect();
                hits.sort_unstable();
                hits.into_iter().map(|(_, id)| id).collect()
            }
        };
        Page {
            total: ids.len(),
            resources: ids
                .iter()
                .skip(offset)
                .take(count)
                .filter_map(|id| self.render_user(id, origin))
                .collect(),
        }
    }

    /// Every user, sorted by id.
    pub(crate) fn all_users(&self, origin: &str) -> Vec<Value> {
        let mut ids: Vec<&String> = self.users.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.render_user(id, origin))
            .collect()
    }

    // ---- groups ------------------------------------------------------------------

    fn missing_user<'a>(&self, ids: &'a [String]) -> Option<&'a String> {
        ids.iter().find(|id| !self.users.contains_key(*id))
    }

    /// Validate a group body; returns it without `members`, its name and member ids.
    fn group_body(&self, body: Value) -> Result<GroupBody, ScimError> {
        let mut m = client_object(body, &["id", "meta"])?;
        let members = match remove_ci(&mut m, "members") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => member_ids(&v)?,
        };
        let name = match get_ci(&m, "displayName") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(ScimError::invalid_value("displayName is required")),
        };
        if get_ci(&m, "externalId").is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(ScimError::invalid_value("externalId must be a string"));
        }
        ensure_schemas(&mut m, CORE_GROUP_URN)?;
        Ok(GroupBody {
            res: m,
            name,
            members,
        })
    }

    /// Add and remove members directly (test control, not a SCIM operation).
    pub fn edit_members(&mut self, gid: &str, add: &[&str], remove: &[&str]) -> bool {
        if !self.groups.contains_key(gid) {
            return false;
        }
        for uid in add {
            self.add_member(gid, uid);
        }
        for uid in remove {
            self.remove_member(gid, uid);
        }
        true
    }

    fn add_member(&mut self, gid: &str, uid: &str) {
        if let Some(g) = self.groups.get_mut(gid)
            && g.members.insert(uid.to_owned())
        {
            self.user_groups
                .entry(uid.to_owned())
                .or_default()
                .insert(gid.to_owned());
        }
    }

    fn remove_member(&mut self, gid: &str, uid: &str) {
        if let Some(g) = self.groups.get_mut(gid)
            && g.members.remove(uid)
            && let Some(set) = self.user_groups.get_mut(uid)
        {
            set.remove(gid);
            if set.is_empty() {
                self.user_groups.remove(uid);
            }
        }
    }

    fn clear_members(&mut self, gid: &str) {
        let members = match self.groups.get_mut(gid) {
            Some(g) => std::mem::take(&mut g.members),
            None => return,
        };
        for uid in members {
            if let Some(set) = self.user_groups.get_mut(&uid) {
                set.remove(gid);
                if set.is_empty() {
                    self.user_groups.remove(&uid);
                }
            }
        }
    }

    /// POST /Groups (and seeding). With `accept_id`, a string `id` in the body is kept.
    pub(crate) fn create_group(
        &mut self,
        body: Value,
        ids: &IdGen,
        accept_id: bool,
    ) -> Result<String, ScimError> {
        let wanted_id = if accept_id {
            body.get("id").and_then(Value::as_str).map(str::to_owned)
        } else {
            None
        };
        let GroupBody {
            res: mut m,
            name,
            members,
        } = self.group_body(body)?;
        if self.group_by_name.contains_key(&fold(&name)) {
            return Err(ScimError::uniqueness(format!(
                "Resource [GROUP]: with displayName[{name}] already exists."
            )));
        }
        if let Some(missing) = self.missing_user(&members) {
            return Err(ScimError::not_found(format!(
                "user {missing} does not exist"
            )));
        }
        let distinct: BTreeSet<&String> = members.iter().collect();
        if distinct.len() > self.max_group_members {
            return Err(ScimError::bad_request(
                "tooMany",
                format!(
                    "a group may have at most {} members",
                    self.max_group_members
                ),
            ));
        }
        let id = match wanted_id {
            Some(id) if !id.is_empty() => {
                if self.groups.contains_key(&id) {
                    return Err(ScimError::uniqueness(format!(
                        "Resource [GROUP]: with id[{id}] already exists."
                    )));
                }
                id
            }
            _ => loop {
                let id = ids.uuid();
                if !self.groups.contains_key(&id) {
                    break id;
                }
            },
        };
        let now = now_string();
        m.insert("id".into(), Value::from(id.clone()));
        m.insert(
            "meta".into(),
            json!({"resourceType": "Group", "created": now, "lastModified": now}),
        );
        let slot = self.group_order.push(id.clone());
        self.group_by_name.insert(fold(&name), id.clone());
        self.groups.insert(
            id.clone(),
            GroupRec {
                slot,
                res: m,
                name,
                members: BTreeSet::new(),
            },
        );
        for uid in &members {
            self.add_member(&id, uid);
        }
        Ok(id)
    }

    /// PUT /Groups/{id}: same name required; members and other attributes replaced.
    pub(crate) fn replace_group(&mut self, id: &str, body: Value) -> Result<(), ScimError> {
        let rec = self.groups.get(id).ok_or_else(|| group_not_found(id))?;
        let GroupBody {
            res: mut m,
            name,
            members,
        } = self.group_body(body)?;
        if name != rec.name {
            return Err(ScimError::mutability("group displayName cannot be changed"));
        }
        if let Some(missing) = self.missing_user(&members) {
            return Err(ScimError::new(
                StatusCode::BAD_REQUEST,
                Some("invalidValue"),
                format!("users referenced do not exist: {missing}"),
            ));
        }
        if let Some(meta) = rec.res.get("meta") {
            m.insert("meta".into(), meta.clone());
        }
        m.insert("id".into(), Value::from(id));
        touch(&mut m, &now_string());
        if let Some(g) = self.groups.get_mut(id) {
            g.res = m;
        }
        self.clear_members(id);
        for uid in &members {
            self.add_member(id, uid);
        }
        Ok(())
    }

    /// PATCH /Groups/{id}: every operation is checked before any is applied.
    pub(crate) fn patch_group(&mut self, id: &str, ops: &[PatchOp]) -> Result<(), ScimError> {
        let rec = self.groups.get(id).ok_or_else(|| group_not_found(id))?;
        let changes = plan_group_ops(ops, &rec.name, |uid| self.users.contains_key(uid))?;
        let mut adding: Vec<String> = Vec::new();
        for change in &changes {
            if let GroupChange::AddMembers(uids) = change {
                adding.extend(uids.iter().cloned());
            }
        }
        self.check_group_size(id, &adding)?;
        for change in changes {
            match change {
                GroupChange::AddMembers(uids) => {
                    for uid in &uids {
                        self.add_member(id, uid);
                    }
                }
                GroupChange::RemoveMembers(uids) => {
                    for uid in &uids {
                        self.remove_member(id, uid);
                    }
                }
                GroupChange::RemoveAllMembers => self.clear_members(id),
                GroupChange::ReplaceMembers(uids) => {
                    self.clear_members(id);
                    for uid in &uids {
                        self.add_member(id, uid);
                    }
                }
                GroupChange::SetExternalId(value) => {
                    if let Some(g) = self.groups.get_mut(id) {
                        match value {
                            Some(v) => set_ci(&mut g.res, "externalId", v),
                            None => {
                                remove_ci(&mut g.res, "externalId");
                            }
                        }
                    }
                }
            }
        }
        if let Some(g) = self.groups.get_mut(id) {
            touch(&mut g.res, &now_string());
        }
        Ok(())
    }

    /// DELETE /Groups/{id}.
    pub(crate) fn delete_group(&mut self, id: &str) -> Result<(), ScimError> {
        if !self.groups.contains_key(id) {
            return Err(group_not_found(id));
        }
        self.clear_members(id);
        let Some(rec) = self.groups.remove(id) else {
            return Err(group_not_found(id));
        };
        self.group_by_name.remove(&fold(&rec.name));
        self.group_order.remove(rec.slot);
        if self.group_order.needs_compaction() {
            for (gid, slot) in self.group_order.compact() {
                if let Some(g) = self.groups.get_mut(&gid) {
                    g.slot = slot;
                }
            }
        }
        Ok(())
    }

    /// The group as served, members inline as `{value, display}`.
    pub(crate) fn render_group(&self, id: &str, origin: &str) -> Option<Value> {
        let rec = self.groups.get(id)?;
        let mut m = rec.res.clone();
        if let Some(Value::Object(meta)) = m.get_mut("meta") {
            meta.insert(
                "location".into(),
                Value::from(self.location(origin, "Groups", id)),
            );
        }
        let members: Vec<Value> = rec
            .members
            .iter()
            .map(|uid| {
                let display = self
                    .users
                    .get(uid)
                    .map(|u| u.keys.user_name.as_str())
                    .unwrap_or_default();
                json!({"value": uid, "display": display})
            })
            .collect();
        m.insert("members".into(), Value::Array(members));
        Some(Value::Object(m))
    }

    /// Page through groups in creation order, optionally by exact (case-insensitive) name.
    pub(crate) fn list_groups(
        &self,
        name: Option<&str>,
        offset: usize,
        count: usize,
        origin: &str,
    ) -> Page {
        match name {
            None => Page {
                total: self.group_order.len(),
                resources: self
                    .group_order
                    .page(offset, count)
                    .filter_map(|id| self.render_group(id, origin))
                    .collect(),
            },
            Some(name) => {
                let hit = self.group_by_name.get(&fold(name));
                Page {
                    total: usize::from(hit.is_some()),
                    resources: hit
                        .into_iter()
                        .skip(offset)
                        .take(count)
                        .filter_map(|id| self.render_group(id, origin))
                        .collect(),
                }
            }
        }
    }

    /// Every group, sorted by id.
    pub(crate) fn all_groups(&self, origin: &str) -> Vec<Value> {
        let mut ids: Vec<&String> = self.groups.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.render_group(id, origin))
            .collect()
    }
}

fn touch(res: &mut Map<String, Value>, now: &str) {
    if let Some(Value::Object(meta)) = res.get_mut("meta") {
        meta.insert("lastModified".into(), Value::from(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, email: &str) -> Value {
        json!({"userName": name, "emails": [{"value": email, "primary": true}]})
    }

    #[test]
    fn uniqueness_is_case_insensitive_and_external_id_is_not_unique() {
        let ids = IdGen::new();
        let mut s = Store::new("/b".into());
        let mut a = user("Alice", "alice@x.com");
        a["externalId"] = json!("e1");
        let a = s.create_user(a, &ids, false).unwrap();
        let err = s
            .create_user(user("alice", "other@x.com"), &ids, false)
            .unwrap_err();
        assert!(err.detail.contains("userName[alice]"));
        let err = s
            .create_user(user("bob", "ALICE@x.com"), &ids, false)
            .unwrap_err();
        assert!(err.detail.contains("email[ALICE@x.com]"));
        let mut b = user("bob", "bob@x.com");
        b["externalId"] = json!("e1");
        let b = s.create_user(b, &ids, false).unwrap();
        let page = s.list_users(Some(&UserFilter::ExternalId("e1".into())), 0, 10, "");
        assert_eq!(page.total, 2);
        assert_eq!(page.resources[0]["id"], json!(a));
        assert_eq!(page.resources[1]["id"], json!(b));
        // Renaming bob onto alice's email fails and leaves bob untouched.
        let op = PatchOp {
            kind: OpKind::Replace,
            path: Some("emails".into()),
            value: Some(json!([{"value": "alice@X.com", "primary": true}])),
        };
        assert_eq!(
            s.patch_user(&b, &[op]).unwrap_err().status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            s.render_user(&b, "").unwrap()["emails"][0]["value"],
            "bob@x.com"
        );
    }

    #[test]
    fn delete_user_leaves_groups() {
        let ids = IdGen::new();
        let mut s = Store::new("/b".into());
        let u = s.create_user(user("u", "u@x.com"), &ids, false).unwrap();
        let g = s
            .create_group(
                json!({"displayName": "G", "members": [{"value": u}]}),
                &ids,
                false,
            )
            .unwrap();
        assert_eq!(
            s.render_user(&u, "").unwrap()["groups"][0]["value"],
            json!(g)
        );
        s.delete_user(&u).unwrap();
        assert_eq!(s.render_group(&g, "").unwrap()["members"], json!([]));
        assert!(s.user_groups.is_empty());
    }

    #[test]
    fn ids_look_like_uuids() {
        let ids = IdGen::new();
        let id = ids.uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(ids.uuid(), id);
        assert_eq!(ids.hex(24).len(), 24);
    }
}
