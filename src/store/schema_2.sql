-- scimsync store, schema version 2: the write-ahead journal of creates.
-- A create is journalled (and committed) before its POST is sent. A journal
-- entry whose resource never got a link is "in doubt" (the run was cut off
-- between sending and recording): the next run looks the resource up before
-- creating it, so it is adopted, never posted twice.
CREATE TABLE intents (
    app       TEXT    NOT NULL,
    kind      TEXT    NOT NULL,   -- user | group
    source_id TEXT    NOT NULL,
    run_id    INTEGER NOT NULL,
    sent_at   INTEGER NOT NULL,
    PRIMARY KEY (app, kind, source_id)
);
