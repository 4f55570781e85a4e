-- A rebuild of a release branch is written down before its push: the commit being pushed and
-- what the rebuild was (the audit detail: base, earlier head, same change or not). A job that
-- stops after the push and before recording it leaves this behind, and the bot recognizes the
-- pushed commit as its own when it next sees it as the branch's head, instead of taking it for
-- a stranger's push.
ALTER TABLE release_branches ADD COLUMN rebuilding TEXT;
ALTER TABLE release_branches ADD COLUMN rebuilding_detail TEXT;
