-- The merge gate's facts.

-- Approvals are an append-only ledger of acts (approve or withdraw), each by its author at the
-- time the forge gives, with the head an approval binds to. The latest act of each person wins;
-- nothing is ever updated or deleted, so a withdrawal outlives every re-read of the forge.
CREATE TABLE approval_acts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id   INTEGER NOT NULL,
    environment  TEXT NOT NULL,
    user_login   TEXT NOT NULL,
    user_is_bot  INTEGER NOT NULL,
    source       TEXT NOT NULL,    -- comment:<id> | review:<id> | approval:<user>
    act          TEXT NOT NULL,    -- approve | withdraw
    head         TEXT,             -- the head an approval was given on, when it can be told
    at           TEXT NOT NULL,    -- the forge's time (RFC 3339)
    UNIQUE (release_id, environment, source, act, at)
);
CREATE INDEX approval_acts_by_pr ON approval_acts (release_id, environment);
CREATE TRIGGER approval_acts_no_update BEFORE UPDATE ON approval_acts
BEGIN SELECT RAISE(ABORT, 'approval_acts is append-only'); END;
CREATE TRIGGER approval_acts_no_delete BEFORE DELETE ON approval_acts
BEGIN SELECT RAISE(ABORT, 'approval_acts is append-only'); END;
DROP TABLE pr_approvals;

-- The push history of each release branch: which head it had since when (the forge's time
-- where it says, else when the bot saw it), and who pushed it (NULL: the bot, or not known).
-- A head can come back (the bot resets a branch it built): each change is a row.
CREATE TABLE pr_heads (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id   INTEGER NOT NULL,
    environment  TEXT NOT NULL,
    commit_id    TEXT NOT NULL,
    since        TEXT NOT NULL,
    pusher       TEXT,
    -- The head it replaced, when the bot rebuilt the branch and the change stayed the same
    -- (approvals of that head carry over).
    same_change_as TEXT
);
CREATE INDEX pr_heads_by_pr ON pr_heads (release_id, environment);

-- Each check run by its source, keeping the newest run by the forge's own order.
DROP TABLE pr_checks;
CREATE TABLE pr_checks (
    release_id   INTEGER NOT NULL,
    environment  TEXT NOT NULL,
    commit_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    source       TEXT NOT NULL,    -- JSON of the source (app, status creator, pipeline)
    state        TEXT NOT NULL,
    ordering     INTEGER NOT NULL,
    PRIMARY KEY (release_id, environment, commit_id, name, source)
);

ALTER TABLE forge_releases ADD COLUMN trigger_author TEXT;
ALTER TABLE release_prs ADD COLUMN opened_at TEXT;

-- What the approvers decided, signed at merge (one record per environment): it goes into the
-- annotated tag's message and the forge release's notes.
CREATE TABLE approval_records (
    release_id   INTEGER NOT NULL,
    environment  TEXT NOT NULL,
    record       TEXT NOT NULL,     -- the signed JSON
    PRIMARY KEY (release_id, environment)
);
