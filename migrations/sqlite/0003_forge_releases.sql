-- Releases started from a forge: where the trigger came from, one pull request per environment,
-- and the facts the merge decision reads (kept up to date from webhooks, re-read by reconcile).
CREATE TABLE forge_releases (
    release_id   INTEGER PRIMARY KEY REFERENCES releases(id),
    forge        TEXT NOT NULL,
    app_repo     TEXT NOT NULL,
    app_commit   TEXT NOT NULL,
    requester    TEXT NOT NULL,
    -- JSON of what the status comments and the release need (version, notes, qa coverage, ...).
    summary      TEXT NOT NULL,
    tagged       INTEGER NOT NULL DEFAULT 0,
    release_url  TEXT
);

CREATE TABLE release_prs (
    release_id         INTEGER NOT NULL REFERENCES releases(id),
    environment        TEXT NOT NULL,
    position           INTEGER NOT NULL,
    branch             TEXT NOT NULL,
    pr_number          INTEGER,
    -- set before the pull request is created: a retry looks it up instead of creating another
    opening            INTEGER NOT NULL DEFAULT 0,
    head_commit        TEXT,
    status_comment_id  INTEGER,
    status_body_sha    TEXT,
    state              TEXT NOT NULL DEFAULT 'waiting',  -- waiting | open | merged | closed
    held_by            TEXT,
    merge_commit       TEXT,
    PRIMARY KEY (release_id, environment)
);

CREATE TABLE pr_approvals (
    release_id   INTEGER NOT NULL,
    environment  TEXT NOT NULL,
    source       TEXT NOT NULL,   -- comment:<id> | review:<id>
    user_login   TEXT NOT NULL,
    user_is_bot  INTEGER NOT NULL,
    commit_id    TEXT NOT NULL,
    PRIMARY KEY (release_id, environment, source)
);

CREATE TABLE pr_checks (
    release_id   INTEGER NOT NULL,
    environment  TEXT NOT NULL,
    commit_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (release_id, environment, commit_id, name)
);

-- Comments whose commands were carried out (by id and content, so an edit is read again).
CREATE TABLE handled_comments (
    comment_id  INTEGER NOT NULL,
    body_sha    TEXT NOT NULL,
    PRIMARY KEY (comment_id, body_sha)
);

-- Triggers already answered, so a replayed push does not comment twice.
CREATE TABLE trigger_outcomes (
    forge       TEXT NOT NULL,
    repo        TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (forge, repo, commit_id)
);
