//! Link management: list, show, unlink and relink single source ↔ target
//! links, so an admin can repair one account without touching the rest.
//!
//! Consistency rule: any change made here also marks the target for a full
//! read at the next `sync` (`last_reconcile_at` is set to 0, so "the
//! reconcile interval has passed"). That read checks every link against the
//! target, matches the unlinked account again (externalId, then userName),
//! and corrects whatever differs, starting from the target's real state
//! rather than from the state last pushed.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::report::format_ms;
use super::{Record, Store, StoreError};
use crate::model::{ScimId, SourceId};
use crate::plan::Attrs;

/// `user` or `group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A user link.
    User,
    /// A group link.
    Group,
}

impl LinkKind {
    /// `user` or `group`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::User => "user",
            LinkKind::Group => "group",
        }
    }
}

/// One stored link, as `scimsync links` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkRow {
    /// User or group.
    pub kind: LinkKind,
    /// Source id.
    pub source_id: String,
    /// Target id.
    pub scim_id: String,
    /// userName last pushed, or the group's name.
    pub name: String,
    /// When the link was made (RFC 3339).
    pub linked_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Users: groups the user was last pushed into; groups: member count.
    pub groups: Vec<String>,
    /// Groups: members last pushed.
    pub members: Option<u64>,
    /// Users: the attributes last pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Attrs>,
}

/// What a link change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkChange {
    /// Target id the source id was linked to before, if any.
    pub previous: Option<String>,
}

fn like(search: &str) -> String {
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    /// Links of a target, users then groups, each by source id. `search`
    /// matches (case-insensitive substring) the source id, the target id, the
    /// name and, for users, any attribute value last pushed (email, ...).
    pub fn links(
        &self,
        app: &str,
        kind: Option<LinkKind>,
        search: Option<&str>,
    ) -> Result<Vec<LinkRow>, StoreError> {
        let pattern = search.map(like);
        let mut out = Vec::new();
        if kind != Some(LinkKind::Group) {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT source_id, scim_id, state, linked_at, updated_at,
                       (SELECT group_concat(coalesce(g.display_name, m.group_id), '\u{1f}')
                          FROM memberships m LEFT JOIN group_links g ON g.app = m.app AND g.source_id = m.group_id
                         WHERE m.app = u.app AND m.user_id = u.source_id)
                     FROM user_links u WHERE app = ?1
                       AND (?2 IS NULL OR source_id LIKE ?2 ESCAPE '\\' OR scim_id LIKE ?2 ESCAPE '\\' OR state LIKE ?2 ESCAPE '\\')
                     ORDER BY source_id",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![app, pattern], |r| {
                    let state: Attrs =
                        serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default();
                    let mut groups: Vec<String> = r
                        .get::<_, Option<String>>(5)?
                        .map(|g| g.split('\u{1f}').map(str::to_owned).collect())
                        .unwrap_or_default();
                    groups.sort();
                    Ok(LinkRow {
                        kind: LinkKind::User,
                        source_id: r.get(0)?,
                        scim_id: r.get(1)?,
                        name: state
                            .get("userName")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned(),
                        linked_at: format_ms(r.get(3)?),
                        updated_at: format_ms(r.get(4)?),
                        groups,
                        members: None,
                        state: Some(state),
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                out.push(row.map_err(|e| self.err(e))?);
            }
        }
        if kind != Some(LinkKind::User) {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT source_id, scim_id, display_name, linked_at, updated_at,
                       (SELECT count(*) FROM memberships m WHERE m.app = g.app AND m.group_id = g.source_id)
                     FROM group_links g WHERE app = ?1
                       AND (?2 IS NULL OR source_id LIKE ?2 ESCAPE '\\' OR scim_id LIKE ?2 ESCAPE '\\' OR display_name LIKE ?2 ESCAPE '\\')
                     ORDER BY source_id",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![app, pattern], |r| {
                    Ok(LinkRow {
                        kind: LinkKind::Group,
                        source_id: r.get(0)?,
                        scim_id: r.get(1)?,
                        name: r.get(2)?,
                        linked_at: format_ms(r.get(3)?),
                        updated_at: format_ms(r.get(4)?),
                        groups: Vec::new(),
                        members: Some(r.get::<_, i64>(5)? as u64),
                        state: None,
                    })
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                out.push(row.map_err(|e| self.err(e))?);
            }
        }
        Ok(out)
    }

    /// The links whose source id or target id is exactly `id`, or whose
    /// userName / group name equals it (case-insensitive).
    pub fn find_links(&self, app: &str, id: &str) -> Result<Vec<LinkRow>, StoreError> {
        Ok(self
            .links(app, None, Some(id))?
            .into_iter()
            .filter(|l| l.source_id == id || l.scim_id == id || l.name.eq_ignore_ascii_case(id))
            .collect())
    }

    fn linked_scim(
        &self,
        app: &str,
        kind: LinkKind,
        source_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let table = match kind {
            LinkKind::User => "user_links",
            LinkKind::Group => "group_links",
        };
        self.conn
            .query_row(
                &format!("SELECT scim_id FROM {table} WHERE app = ?1 AND source_id = ?2"),
                params![app, source_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The source id a target id is linked to, if any.
    pub fn linked_source(
        &self,
        app: &str,
        kind: LinkKind,
        scim_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let table = match kind {
            LinkKind::User => "user_links",
            LinkKind::Group => "group_links",
        };
        self.conn
            .query_row(
                &format!("SELECT source_id FROM {table} WHERE app = ?1 AND scim_id = ?2"),
                params![app, scim_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Force a full read of the target at the next sync.
    fn due_for_full_read(&self, app: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE targets SET last_reconcile_at = 0 WHERE app = ?1",
                [app],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forget one link (and, for a user, its stored memberships; for a group,
    /// its stored members). Nothing is sent to the target. `None` when the
    /// source id had no link.
    pub fn unlink(
        &mut self,
        app: &str,
        kind: LinkKind,
        source_id: &str,
    ) -> Result<Option<LinkChange>, StoreError> {
        let Some(previous) = self.linked_scim(app, kind, source_id)? else {
            return Ok(None);
        };
        let rec = match kind {
            LinkKind::User => Record::UserUnlink {
                app: app.into(),
                source_id: SourceId::from(source_id),
            },
            LinkKind::Group => Record::GroupUnlink {
                app: app.into(),
                source_id: SourceId::from(source_id),
            },
        };
        self.apply(&[rec])?;
        self.due_for_full_read(app)?;
        Ok(Some(LinkChange {
            previous: Some(previous),
        }))
    }

    /// Link `source_id` to the target resource `scim_id` (replacing its link,
    /// if any). A user's stored state is emptied and a group's stored members
    /// cleared: nothing is assumed about the account, and the next sync's full
    /// read compares the source with what the account really holds.
    /// Refused (`Err(Some(other))`) when `scim_id` is linked to another source id.
    pub fn relink(
        &mut self,
        app: &str,
        kind: LinkKind,
        source_id: &str,
        scim_id: &str,
        display_name: &str,
    ) -> Result<Result<LinkChange, String>, StoreError> {
        if let Some(other) = self.linked_source(app, kind, scim_id)?
            && other != source_id
        {
            return Ok(Err(other));
        }
        let previous = self.linked_scim(app, kind, source_id)?;
        let recs = match kind {
            LinkKind::User => vec![Record::UserState {
                app: app.into(),
                source_id: SourceId::from(source_id),
                scim_id: ScimId(scim_id.to_owned()),
                state: Attrs::new(),
            }],
            LinkKind::Group => vec![
                Record::GroupLink {
                    app: app.into(),
                    source_id: SourceId::from(source_id),
                    scim_id: ScimId(scim_id.to_owned()),
                    display_name: display_name.to_owned(),
                },
                Record::MembersReset {
                    app: app.into(),
                    group: SourceId::from(source_id),
                    members: Vec::new(),
                },
            ],
        };
        self.apply(&recs)?;
        self.due_for_full_read(app)?;
        Ok(Ok(LinkChange { previous }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with_links() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut ada = Attrs::new();
        ada.insert("userName", json!("ada@example.com"));
        let mut bob = Attrs::new();
        bob.insert("userName", json!("bob_x@example.com"));
        store
            .apply(&[
                Record::UserState {
                    app: "a".into(),
                    source_id: "1".into(),
                    scim_id: "u1".into(),
                    state: ada,
                },
                Record::UserState {
                    app: "a".into(),
                    source_id: "2".into(),
                    scim_id: "u2".into(),
                    state: bob,
                },
                Record::GroupLink {
                    app: "a".into(),
                    source_id: "eng".into(),
                    scim_id: "G1".into(),
                    display_name: "Engineering".into(),
                },
                Record::Members {
                    app: "a".into(),
                    group: "eng".into(),
                    add: vec!["1".into(), "2".into()],
                    remove: vec![],
                },
            ])
            .unwrap();
        store.set_reconciled("a", "http://x", 1_000).unwrap();
        (dir, store)
    }

    #[test]
    fn search_matches_ids_names_and_state_with_like_wildcards_escaped() {
        let (_d, store) = store_with_links();
        assert_eq!(store.links("a", None, None).unwrap().len(), 3);
        let ada = store.links("a", None, Some("ADA@")).unwrap();
        assert_eq!(ada.len(), 1);
        assert_eq!(ada[0].groups, vec!["Engineering".to_owned()]);
        // `_` is literal, not "any character".
        assert_eq!(store.links("a", None, Some("b_x")).unwrap().len(), 1);
        assert_eq!(store.links("a", None, Some("a_a")).unwrap().len(), 0);
        let groups = store.links("a", Some(LinkKind::Group), None).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].members, Some(2));
        assert!(store.links("other", None, None).unwrap().is_empty());
        assert_eq!(store.find_links("a", "u2").unwrap()[0].source_id, "2");
    }

    #[test]
    fn unlink_and_relink_keep_the_store_consistent() {
        let (_d, mut store) = store_with_links();
        let change = store.unlink("a", LinkKind::User, "1").unwrap().unwrap();
        assert_eq!(change.previous.as_deref(), Some("u1"));
        assert!(store.unlink("a", LinkKind::User, "1").unwrap().is_none());
        assert_eq!(store.group_links("a").unwrap()[0].members.len(), 1);
        assert_eq!(store.last_reconcile("a").unwrap(), Some(0), "full read due");

        // u2 belongs to source 2: refused, nothing changed.
        assert_eq!(
            store.relink("a", LinkKind::User, "1", "u2", "").unwrap(),
            Err("2".to_owned())
        );
        assert_eq!(store.user_links("a").unwrap().len(), 1);

        store
            .relink("a", LinkKind::User, "1", "u9", "")
            .unwrap()
            .unwrap();
        let links = store.user_links("a").unwrap();
        let one = links.iter().find(|l| l.source_id.as_str() == "1").unwrap();
        assert_eq!(one.scim_id.as_str(), "u9");
        assert!(one.state.is_empty(), "nothing assumed about the account");

        let g = store
            .relink("a", LinkKind::Group, "eng", "G7", "Engineering")
            .unwrap()
            .unwrap();
        assert_eq!(g.previous.as_deref(), Some("G1"));
        let groups = store.group_links("a").unwrap();
        assert_eq!(groups[0].scim_id.as_str(), "G7");
        assert!(groups[0].members.is_empty());
    }
}
