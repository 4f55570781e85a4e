-- After its merge, an environment of a release is deployed by Argo CD (when the operator
-- configured it): `deploy_state` is NULL before the merge or without Argo CD, then
-- 'deploying', 'deployed' or 'failed'. `synced_at` is when the bot first saw every
-- Application synced to a revision containing the merge commit (the health timeout runs from
-- then); `deployed_at` when it saw them all healthy; `deploy_detail` the last thing it saw, in
-- words, for the status comment and `status`.
ALTER TABLE release_prs ADD COLUMN deploy_state TEXT;
ALTER TABLE release_prs ADD COLUMN synced_at TEXT;
ALTER TABLE release_prs ADD COLUMN deployed_at TEXT;
ALTER TABLE release_prs ADD COLUMN deploy_detail TEXT;
-- When the bot began watching (the merge): Applications that never sync, or that Argo CD
-- does not have, fail the deployment `syncTimeout` after it.
ALTER TABLE release_prs ADD COLUMN deploy_since TEXT;
