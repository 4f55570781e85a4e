-- Notes (pull request comments) the bot posts, keyed by why it posts them, so that a step that
-- is retried (a lost answer, a crash, a later step that failed) never posts the same note twice:
-- the intent is recorded before the request and the note's id after it. An intent without an id
-- means the request may have landed: the bot looks for the note's marker before posting again.
CREATE TABLE posted_notes (
    repo        TEXT NOT NULL,
    number      INTEGER NOT NULL,
    note_key    TEXT NOT NULL,
    note_id     INTEGER,
    PRIMARY KEY (repo, number, note_key)
);

-- The same for the one status comment of a release pull request.
ALTER TABLE release_prs ADD COLUMN status_posting INTEGER NOT NULL DEFAULT 0;
