-- Releases, their branches, and the append-only audit log.
CREATE TABLE releases (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    version_tag    TEXT NOT NULL UNIQUE,
    milestone_id   TEXT NOT NULL,
    trace_id       TEXT NOT NULL,
    state          TEXT NOT NULL,
    -- SHA-256 of the inputs the release was planned from: a re-run with the same inputs may
    -- resume an unfinished release; different inputs for the same version are refused.
    inputs_digest  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE release_branches (
    release_id   INTEGER NOT NULL REFERENCES releases(id),
    environment  TEXT NOT NULL,
    branch       TEXT NOT NULL,
    commit_id    TEXT NOT NULL,
    pushed       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (release_id, environment)
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id  INTEGER NOT NULL REFERENCES releases(id),
    at          TEXT NOT NULL,
    event       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    detail      TEXT NOT NULL
);

-- The audit log is append-only: the database itself refuses changes.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
