-- `/rollback` (or a failed deployment, with automatic rollback on): one row per environment of
-- a release being rolled back. The rollback pull request itself is a row of release_prs and
-- release_branches under the environment `rollback:<environment>`, so it is approved, checked,
-- merged and watched deploying by the same machinery as a release pull request.
CREATE TABLE rollbacks (
    release_id    INTEGER NOT NULL REFERENCES releases(id),
    environment   TEXT NOT NULL,
    -- 1 for the first rollback of this environment of the release; one closed without
    -- merging is abandoned, and a later `/rollback` is the next attempt (its pull request's
    -- environment `rollback:<environment>#<attempt>`).
    attempt       INTEGER NOT NULL,
    abandoned     INTEGER NOT NULL DEFAULT 0,
    requested_by  TEXT NOT NULL,
    reason        TEXT NOT NULL,
    automatic     INTEGER NOT NULL,
    requested_at  TEXT NOT NULL,
    -- what is restored, as written in rollback-plan.yaml (JSON)
    restores      TEXT NOT NULL,
    PRIMARY KEY (release_id, environment, attempt)
);
