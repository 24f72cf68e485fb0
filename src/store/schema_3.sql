-- scimsync store, schema version 3: groups left behind by renames.
-- A target that cannot rename groups (Atlassian) gets a new group under the
-- new name; the old one is recorded here when the new one is linked and
-- deleted afterwards. A row that outlives its run (cut off, or the DELETE
-- failed) is deleted by the next run.
CREATE TABLE retired_groups (
    app          TEXT    NOT NULL,
    scim_id      TEXT    NOT NULL,
    source_id    TEXT    NOT NULL,   -- the renamed source group
    display_name TEXT    NOT NULL,   -- the old name
    retired_at   INTEGER NOT NULL,
    PRIMARY KEY (app, scim_id)
);
