-- scimsync store, schema version 1.
-- Timestamps are Unix milliseconds (UTC) so "last 7 days" is an index range.

-- One row per run of `sync` (and `demo`).
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app         TEXT    NOT NULL,              -- target name from the config
    command     TEXT    NOT NULL,              -- sync | demo
    reconcile   INTEGER NOT NULL DEFAULT 0,    -- 1 when the target was read in full
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT    NOT NULL,              -- running | succeeded | partial | failed | interrupted
    actions     INTEGER NOT NULL DEFAULT 0,
    applied     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    invalid     INTEGER NOT NULL DEFAULT 0,
    held        INTEGER NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,
    retries     INTEGER NOT NULL DEFAULT 0,
    throttled   INTEGER NOT NULL DEFAULT 0,
    detail      TEXT
);
CREATE INDEX runs_app_started ON runs(app, started_at);

-- The provisioning report: one row per action outcome (per member for memberships).
CREATE TABLE outcomes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    at            INTEGER NOT NULL,
    app           TEXT    NOT NULL,
    resource      TEXT    NOT NULL,   -- user | group | membership | record
    action        TEXT    NOT NULL,   -- create | update | link | disable | delete | add_member | remove_member | validate | match
    source_id     TEXT,
    user_name     TEXT,               -- userName, or the group name for group rows
    email         TEXT,
    group_name    TEXT,               -- membership rows
    scim_id       TEXT,
    outcome       TEXT    NOT NULL,   -- applied | failed | skipped | invalid | held
    http_status   INTEGER,
    scim_type     TEXT,
    detail        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    duration_ms   INTEGER
);
CREATE INDEX outcomes_at ON outcomes(at);
CREATE INDEX outcomes_run ON outcomes(run_id);
CREATE INDEX outcomes_app_at ON outcomes(app, at);
CREATE INDEX outcomes_source ON outcomes(source_id, at);
CREATE INDEX outcomes_user_name ON outcomes(user_name COLLATE NOCASE);
CREATE INDEX outcomes_email ON outcomes(email COLLATE NOCASE);

-- Source user <-> target account links, with the attributes last pushed.
CREATE TABLE user_links (
    app        TEXT NOT NULL,
    source_id  TEXT NOT NULL,
    scim_id    TEXT NOT NULL,
    state      TEXT NOT NULL,          -- JSON object: attribute path -> value
    linked_at  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (app, source_id)
);
CREATE UNIQUE INDEX user_links_scim ON user_links(app, scim_id);

-- Source group <-> target group links.
CREATE TABLE group_links (
    app          TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    scim_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    linked_at    INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (app, source_id)
);
CREATE UNIQUE INDEX group_links_scim ON group_links(app, scim_id);

-- Memberships last pushed (group and user by source id).
CREATE TABLE memberships (
    app      TEXT NOT NULL,
    group_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (app, group_id, user_id)
) WITHOUT ROWID;

-- Per-target bookkeeping.
CREATE TABLE targets (
    app               TEXT PRIMARY KEY,
    base_url          TEXT,
    last_reconcile_at INTEGER
);
