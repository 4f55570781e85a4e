-- What people read with `release-coordinator status`: each pull request's address and what it
-- waits for (the status comment's words), and a release's last failed attempt (cleared when
-- the release moves on).
CREATE TABLE pr_status (
    release_id   INTEGER NOT NULL REFERENCES releases(id),
    environment  TEXT NOT NULL,
    url          TEXT,
    waits_for    TEXT,
    PRIMARY KEY (release_id, environment)
);
ALTER TABLE releases ADD COLUMN last_error TEXT;
ALTER TABLE releases ADD COLUMN last_error_at TEXT;
