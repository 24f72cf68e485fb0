//! The LDAP / Active Directory source (`source.type = "ldap"`).
//!
//! Binds (password from an environment variable or a file, never argv),
//! searches the configured bases for people and groups with RFC 2696 paged
//! results, then turns entries into the same [`Snapshot`](crate::model::Snapshot)
//! the file loaders produce. An entry with a problem becomes a reject naming
//! its DN; a server that cannot be reached, refuses the bind, or answers a
//! search with an error fails the whole load (exit 2) — a partial directory
//! would deprovision the rest.
//!
//! Group membership comes from the groups' member DN lists (`member`,
//! `uniqueMember`) and from the users' `memberOf`; a member DN naming another
//! loaded group is a nested group, flattened into effective user membership
//! (cycles are cut and logged).

pub mod config;
pub mod tls;
pub mod values;

use std::collections::{BTreeSet, HashMap};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use secrecy::ExposeSecret;

use super::{Builder, SourceError};
use crate::model::{Origin, RecordKind, SourceId};
pub use config::{LdapConfig, LdapSettings, Tls};

/// What the searches returned.
struct Fetched {
    users: Vec<SearchEntry>,
    groups: Vec<SearchEntry>,
}

/// Load people and groups from the directory into `builder`.
pub(crate) fn load(s: &LdapSettings, builder: &mut Builder<'_>) -> Result<(), SourceError> {
    // The loader API is synchronous and may be called from inside the CLI's
    // runtime: run the LDAP client on a runtime of its own, on its own thread.
    let fetched = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| err(s, format!("cannot start the LDAP client: {e}")))?;
                rt.block_on(fetch(s))
            })
            .join()
            .unwrap_or_else(|_| Err(err(s, "the LDAP client thread panicked".into())))
    })?;
    tracing::info!(
        users = fetched.users.len(),
        groups = fetched.groups.len(),
        "LDAP entries read"
    );
    convert(s, fetched, builder);
    Ok(())
}

fn err(s: &LdapSettings, message: String) -> SourceError {
    SourceError::Ldap {
        url: s.url.clone(),
        message,
    }
}

/// One line for an LDAP failure, with the likely cause. Never contains the password.
fn describe(s: &LdapSettings, what: &str, e: &LdapError) -> String {
    match e {
        LdapError::LdapResult { result } => {
            let text = if result.text.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", result.text.trim())
            };
            match result.rc {
                49 => format!(
                    "{what}: the server refused the bind (invalidCredentials){text}: source.ldap.bind_dn or the bind password is wrong"
                ),
                32 => format!(
                    "{what}: the base DN does not exist (noSuchObject{}){text}",
                    if result.matched.is_empty() {
                        String::new()
                    } else {
                        format!("; the server knows `{}`", result.matched)
                    }
                ),
                4 => format!(
                    "{what}: the server's size limit was reached (sizeLimitExceeded){text}; paged results avoid it: set source.ldap.page_size above 0 (default {})",
                    config::DEFAULT_PAGE_SIZE
                ),
                11 => format!(
                    "{what}: the server's administrative limit was reached (adminLimitExceeded){text}; lower source.ldap.page_size"
                ),
                12 => format!(
                    "{what}: the server does not support paged results (unavailableCriticalExtension){text}; set source.ldap.page_size = 0"
                ),
                50 => format!(
                    "{what}: the bind DN may not read this (insufficientAccessRights){text}"
                ),
                48 => format!(
                    "{what}: the server requires a bind (inappropriateAuthentication){text}: set source.ldap.bind_dn"
                ),
                13 => format!(
                    "{what}: the server requires TLS (confidentialityRequired){text}: use ldaps:// or starttls = true"
                ),
                rc => format!("{what}: the server answered with result code {rc}{text}"),
            }
        }
        LdapError::Timeout { .. } => format!(
            "{what}: the server did not answer within {}s (source.ldap.timeout)",
            s.timeout.as_secs()
        ),
        LdapError::Io { source } => {
            let tls_failure = source
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
            if tls_failure {
                format!(
                    "{what}: TLS failed: {source} (the server certificate is not trusted: name its CA in source.ldap.ca_file)"
                )
            } else {
                match source.kind() {
                    std::io::ErrorKind::ConnectionRefused => format!(
                        "{what}: connection refused: is the server running, and is the port in source.ldap.url right?"
                    ),
                    _ => format!("{what}: {source}"),
                }
            }
        }
        other => format!("{what}: {other}"),
    }
}

async fn fetch(s: &LdapSettings) -> Result<Fetched, SourceError> {
    let mut cs = LdapConnSettings::new().set_conn_timeout(s.timeout);
    if s.tls != Tls::None {
        cs = cs
            .set_config(tls::client_config(s).map_err(|m| err(s, m))?)
            .set_starttls(s.tls == Tls::StartTls);
    }
    let (conn, mut ldap) =
        tokio::time::timeout(s.timeout, LdapConnAsync::with_settings(cs, &s.url))
            .await
            .map_err(|_| {
                err(
                    s,
                    format!(
                        "connecting: no answer within {}s (source.ldap.timeout)",
                        s.timeout.as_secs()
                    ),
                )
            })?
            .map_err(|e| err(s, describe(s, "connecting", &e)))?;
    ldap3::drive!(conn);
    if let Some((dn, source)) = &s.bind {
        let pw = source.read().map_err(|m| err(s, m))?;
        ldap.with_timeout(s.timeout)
            .simple_bind(dn, pw.expose_secret())
            .await
            .and_then(|r| r.success())
            .map_err(|e| err(s, describe(s, &format!("binding as `{dn}`"), &e)))?;
    }
    let mut user_attrs: BTreeSet<String> = s.attributes.values().flatten().cloned().collect();
    if let Some(m) = &s.member_of_attribute {
        user_attrs.insert(m.clone());
    }
    let mut users = Vec::new();
    for base in &s.user_bases {
        search(s, &mut ldap, base, &s.user_filter, &user_attrs, &mut users).await?;
    }
    let mut group_attrs: BTreeSet<String> = s.member_attributes.iter().cloned().collect();
    group_attrs.insert(s.group_id_attribute.clone());
    group_attrs.insert(s.group_name_attribute.clone());
    let mut groups = Vec::new();
    for base in &s.group_bases {
        search(
            s,
            &mut ldap,
            base,
            &s.group_filter,
            &group_attrs,
            &mut groups,
        )
        .await?;
    }
    let _ = ldap.unbind().await;
    Ok(Fetched { users, groups })
}

async fn search(
    s: &LdapSettings,
    ldap: &mut ldap3::Ldap,
    base: &str,
    filter: &str,
    attrs: &BTreeSet<String>,
    out: &mut Vec<SearchEntry>,
) -> Result<(), SourceError> {
    let what = format!("searching `{base}` for `{filter}`");
    let attrs: Vec<String> = attrs.iter().cloned().collect();
    let mut adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
        vec![Box::new(EntriesOnly::new())];
    if s.page_size > 0 {
        adapters.push(Box::new(PagedResults::new(s.page_size as i32)));
    }
    let before = out.len();
    let mut stream = ldap
        .with_timeout(s.timeout)
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
        .await
        .map_err(|e| err(s, describe(s, &what, &e)))?;
    loop {
        match stream.next().await {
            Ok(Some(entry)) => out.push(SearchEntry::construct(entry)),
            Ok(None) => break,
            Err(e) => return Err(err(s, describe(s, &what, &e))),
        }
    }
    // The final result decides: a search cut short (size limit, time limit)
    // is an error, never a smaller directory.
    stream
        .finish()
        .await
        .success()
        .map_err(|e| err(s, describe(s, &what, &e)))?;
    tracing::debug!(base, entries = out.len() - before, "LDAP search done");
    Ok(())
}

/// An entry's attributes by lowercased name, text and binary values together.
struct Attrs(HashMap<String, Vec<Vec<u8>>>);

impl Attrs {
    fn of(e: &SearchEntry) -> Attrs {
        let mut m: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (k, vs) in &e.attrs {
            m.entry(k.to_ascii_lowercase())
                .or_default()
                .extend(vs.iter().map(|v| v.as_bytes().to_vec()));
        }
        for (k, vs) in &e.bin_attrs {
            m.entry(k.to_ascii_lowercase())
                .or_default()
                .extend(vs.iter().cloned());
        }
        Attrs(m)
    }

    fn all(&self, attr: &str) -> &[Vec<u8>] {
        self.0
            .get(&attr.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The first value of the first attribute in `alts` that has a non-empty
    /// one, as text (`objectGUID` converted to its canonical string).
    fn first<'s>(&self, alts: &'s [String]) -> Result<Option<(String, &'s str)>, String> {
        for attr in alts {
            let Some(v) = self.all(attr).iter().find(|v| !v.is_empty()) else {
                continue;
            };
            let text = if attr.eq_ignore_ascii_case("objectGUID") {
                values::guid_to_string(v)?
            } else {
                String::from_utf8(v.clone())
                    .map_err(|_| format!("attribute `{attr}` is not UTF-8 text"))?
            };
            if !text.trim().is_empty() {
                return Ok(Some((text, attr.as_str())));
            }
        }
        Ok(None)
    }

    /// Every value of `attr` as text (non-UTF-8 values are skipped).
    fn texts(&self, attr: &str) -> Vec<String> {
        self.all(attr)
            .iter()
            .filter_map(|v| String::from_utf8(v.clone()).ok())
            .collect()
    }
}

fn origin(dn: &str) -> Origin {
    Origin {
        file: "ldap".into(),
        location: dn.to_owned(),
    }
}

fn convert(s: &LdapSettings, fetched: Fetched, b: &mut Builder<'_>) {
    let mut dn_to_user: HashMap<String, SourceId> = HashMap::new();
    let mut user_member_of: Vec<(SourceId, Vec<String>)> = Vec::new();
    let id_alts = &s.attributes["id"];
    for e in &fetched.users {
        let a = Attrs::of(e);
        let o = origin(&e.dn);
        let label = a
            .first(s.attributes.get("user_name").map_or(&[][..], Vec::as_slice))
            .ok()
            .flatten()
            .map(|(v, _)| v);
        let id = match a.first(id_alts) {
            Ok(Some((id, _))) => id,
            Ok(None) => {
                b.reject(
                    RecordKind::User,
                    o,
                    None,
                    label,
                    format!("entry has no `{}` (the id attribute)", id_alts.join("`/`")),
                );
                continue;
            }
            Err(m) => {
                b.reject(RecordKind::User, o, None, label, m);
                continue;
            }
        };
        let mut fields = crate::model::Fields::new();
        let mut problem = None;
        for (field, alts) in &s.attributes {
            if field == "id" {
                continue;
            }
            match a.first(alts) {
                Ok(Some((v, attr))) => {
                    let v = if field == "active" && attr.eq_ignore_ascii_case("userAccountControl")
                    {
                        match values::uac_active(&v) {
                            Ok(active) => active.to_string(),
                            Err(m) => {
                                problem = Some(m);
                                break;
                            }
                        }
                    } else {
                        v
                    };
                    fields.insert(field.clone(), v.into());
                }
                Ok(None) => {}
                Err(m) => {
                    problem = Some(m);
                    break;
                }
            }
        }
        if let Some(m) = problem {
            b.reject(RecordKind::User, o, Some(id), label, m);
            continue;
        }
        let sid = SourceId::from(id.as_str());
        dn_to_user.insert(values::normalize_dn(&e.dn), sid.clone());
        if let Some(attr) = &s.member_of_attribute {
            let groups: Vec<String> = a
                .texts(attr)
                .iter()
                .map(|d| values::normalize_dn(d))
                .collect();
            if !groups.is_empty() {
                user_member_of.push((sid, groups));
            }
        }
        fields.insert("id", id.into());
        b.user(o, fields);
    }

    // Groups: id, name and member DNs.
    struct G {
        id: String,
        name: String,
        origin: Origin,
        members: Vec<String>,
    }
    let mut groups: Vec<G> = Vec::new();
    let mut dn_to_group: HashMap<String, usize> = HashMap::new();
    for e in &fetched.groups {
        let a = Attrs::of(e);
        let o = origin(&e.dn);
        let name = a.first(std::slice::from_ref(&s.group_name_attribute));
        let id = a.first(std::slice::from_ref(&s.group_id_attribute));
        let (id, name) = match (id, name) {
            (Ok(Some((id, _))), Ok(Some((name, _)))) => (id, name),
            (id, name) => {
                let label = name.as_ref().ok().cloned().flatten().map(|(n, _)| n);
                let sid = id.as_ref().ok().cloned().flatten().map(|(i, _)| i);
                let reason = match (id, name) {
                    (Err(m), _) | (_, Err(m)) => m,
                    (Ok(None), _) => format!(
                        "group entry has no `{}` (the group id attribute)",
                        s.group_id_attribute
                    ),
                    _ => format!(
                        "group entry has no `{}` (the group name attribute)",
                        s.group_name_attribute
                    ),
                };
                b.reject(RecordKind::Group, o, sid, label, reason);
                continue;
            }
        };
        let members = s
            .member_attributes
            .iter()
            .flat_map(|attr| a.texts(attr))
            .map(|v| values::normalize_dn(values::strip_unique_member_uid(&v)))
            .collect();
        dn_to_group.insert(values::normalize_dn(&e.dn), groups.len());
        groups.push(G {
            id,
            name,
            origin: o,
            members,
        });
    }
    let mut direct: Vec<BTreeSet<SourceId>> = vec![BTreeSet::new(); groups.len()];
    let mut children: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); groups.len()];
    let mut unresolved = 0usize;
    for (i, g) in groups.iter().enumerate() {
        for m in &g.members {
            if let Some(u) = dn_to_user.get(m) {
                direct[i].insert(u.clone());
            } else if let Some(&c) = dn_to_group.get(m) {
                children[i].insert(c);
            } else {
                unresolved += 1;
            }
        }
    }
    for (user, group_dns) in user_member_of {
        for g in group_dns {
            if let Some(&i) = dn_to_group.get(&g) {
                direct[i].insert(user.clone());
            }
        }
    }
    if unresolved > 0 {
        tracing::debug!(
            unresolved,
            "group member DNs that are neither a loaded user nor a loaded group (ignored)"
        );
    }
    let members = if s.nested_groups {
        let f = values::flatten(&direct, &children);
        if !f.cyclic.is_empty() {
            let names: Vec<&str> = f.cyclic.iter().map(|&i| groups[i].name.as_str()).collect();
            tracing::warn!(groups = ?names, "nested groups form a cycle; each gets the members of the whole cycle");
        }
        f.members
    } else {
        direct
    };
    for (g, members) in groups.into_iter().zip(members) {
        if !b.group(g.origin.clone(), Some(g.id.clone()), g.name.clone(), None) {
            continue;
        }
        for m in members {
            b.group(
                g.origin.clone(),
                Some(g.id.clone()),
                g.name.clone(),
                Some(m.to_string()),
            );
        }
    }
}
