//! Releases never block each other: when the base branch moves under a release pull request in
//! a way that touches what the release writes (another release merged and appended to the
//! history, a person changed a values file), the bot builds its branch again on the current
//! base (the same edits, documents rendered again, its history row at the end, the manifest
//! signed over the files as they will be) and pushes it with a lease. Approvals carry over only
//! when the rebuilt change is the same change: the base did not touch the values files it
//! edits, so it replaces and writes exactly what was approved.

use serde_json::json;

use super::{Bot, BotError, texts};
use crate::git::{AppRepoInfo, DeployRepo};
use crate::release::state::AuditEvent;
use crate::store::forge_releases::{ForgeRelease, ReleasePr};

/// What moving to the current base would change.
enum BaseCheck {
    /// The base did not move, or moved only in files the release does not write.
    Current,
    /// The release must be built again on this base.
    Moved { base: git2::Oid },
}

impl Bot {
    /// Builds `pr`'s branch again on the current base when the base moved under it in a way
    /// that touches what it writes. True when the branch was rebuilt (its head changed).
    pub(super) async fn rebuild_if_base_moved(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
    ) -> Result<bool, BotError> {
        self.settle_stopped_rebuild(pr).await?;
        let head = pr.head_commit.clone();
        let Some(built) = self.built_head(pr, head.as_deref()).await? else {
            return Ok(false);
        };
        // A head someone else pushed is the gate's business, not the base's.
        if pr.head_commit.as_deref().is_some_and(|h| h != built) {
            return Ok(false);
        }
        let access = self.deploy_access().await?;
        let (repo, base) = crate::release::open_deploy_repo(&self.config, access.clone())?;
        let built_oid = repo.fetch_commit(&pr.branch, &built)?;
        let BaseCheck::Moved { base } = base_check(&repo, built_oid, base)? else {
            return Ok(false);
        };
        let app = self.open_app_repo(&rel.app_repo).await?;
        let app_commit = app.fetch_any_commit(&rel.app_commit)?;
        let Some(dir) = self.trigger_dir(&app, app_commit)? else {
            return Err(BotError::Io(format!(
                "the trigger of release {} is gone from {}@{}",
                rel.version_tag,
                rel.app_repo,
                texts::short(&rel.app_commit)
            )));
        };
        let record = self
            .store
            .find_release(&rel.version_tag)
            .await?
            .ok_or_else(|| BotError::Io(format!("release {} vanished", rel.version_tag)))?;
        let recorded = self.store.recorded_versions().await?;
        let info = AppRepoInfo {
            head_commit: Some(rel.app_commit.clone()),
            tags: app.remote_tags()?,
        };
        let prepared =
            crate::release::replan(&self.config, dir.path(), info, access, &record, &recorded)?;
        // Pinned digests are asked again: the plan is made afresh, as at the trigger.
        let prepared = match &self.registries {
            // Boxed: a plan is large, and this future is inside every job's.
            Some(registries) => {
                Box::pin(crate::release::pin_digests(
                    &self.config,
                    prepared,
                    registries,
                ))
                .await?
            }
            None => prepared,
        };
        let Some(env) = prepared
            .plan
            .environments
            .iter()
            .find(|e| e.environment == pr.environment)
        else {
            return Ok(false);
        };
        let author = &prepared.author;
        let commit = prepared.repo.build_commit(
            base,
            &prepared.plan.files_for(env),
            (&author.0, &author.1),
            prepared.released_at,
            &env.commit_message,
        )?;
        // The same change: the same edits of the same files, so every values file it replaces
        // and every one it writes is byte for byte what was approved.
        let old_base = repo
            .repo()
            .find_commit(built_oid)
            .and_then(|c| c.parent_id(0))
            .map_err(crate::git::GitError::from)?;
        let changed: Vec<String> = env
            .changes
            .iter()
            .filter(|c| {
                let read = |at| repo.read_file(at, &c.values_file).ok().flatten();
                read(old_base) != read(base) || read(built_oid) != read(commit)
            })
            .map(|c| c.values_file.clone())
            .collect();
        let same = changed.is_empty();
        let commit = commit.to_string();
        // Written down before the push: a job stopped between the push and its record leaves
        // the bot able to tell its own push from a stranger's (see `built_head`).
        self.store
            .begin_rebuild(
                pr.release_id,
                &pr.environment,
                &commit,
                &json!({"environment": pr.environment, "base": base.to_string(), "was": built, "head": commit, "same_change": same, "changed": changed}),
            )
            .await?;
        let oid = git2::Oid::from_str(&commit).map_err(crate::git::GitError::from)?;
        if let Err(e) = prepared.repo.reset_branch(&pr.branch, oid, &built) {
            // A refused lease: the push did not land, and the intent goes with it.
            if matches!(e, crate::git::GitError::PushRejected { .. }) {
                self.store
                    .drop_rebuild(pr.release_id, &pr.environment)
                    .await?;
            }
            return Err(e.into());
        }
        if !self.finish_rebuild(pr, &commit).await? {
            return Err(BotError::Io(format!(
                "the rebuild of {} as {} was not on record when it was pushed",
                pr.branch,
                texts::short(&commit)
            )));
        }
        self.new_head(pr, &commit, Some(self.now()), false).await?;
        Ok(true)
    }

    /// A rebuild written down and never recorded as pushed: its job stopped around the push.
    /// Whether the push landed is read from the remote (the forge may never say: a lost
    /// webhook), and when it did the rebuild is recorded as the bot's, before anything is
    /// built again (a new build on a base that moved since would be another commit, and the
    /// landed one would be left looking like a stranger's).
    async fn settle_stopped_rebuild(&self, pr: &mut ReleasePr) -> Result<(), BotError> {
        let Some((_, Some(pending))) = self
            .store
            .built_head(pr.release_id, &pr.environment)
            .await?
        else {
            return Ok(());
        };
        let repo = self.deploy_repo().await?;
        let tip = repo.remote_tip(&pr.branch)?.map(|t| t.to_string());
        if tip.as_deref() == Some(pending.as_str()) && self.finish_rebuild(pr, &pending).await? {
            tracing::info!(release = pr.release_id, environment = %pr.environment, head = %pending, "a rebuild pushed by a job that stopped before recording it is recorded");
            self.new_head(pr, &pending, Some(self.now()), false).await?;
        }
        Ok(())
    }

    /// The commit the bot built (and pushed) for `pr`'s environment. `head`: the branch's
    /// head as last seen. When it is the commit of a rebuild whose job stopped after the push
    /// and before recording it, the rebuild is recorded now, so the bot's own push is not
    /// taken for a stranger's.
    pub(super) async fn built_head(
        &self,
        pr: &ReleasePr,
        head: Option<&str>,
    ) -> Result<Option<String>, BotError> {
        let built = self
            .store
            .built_head(pr.release_id, &pr.environment)
            .await?;
        // Read first (a plain read): the gate asks this on every decision.
        if let (Some(head), Some((_, Some(pending)))) = (head, &built)
            && head == pending
            && self.finish_rebuild(pr, head).await?
        {
            return Ok(Some(head.to_string()));
        }
        Ok(built.map(|(commit, _)| commit))
    }

    /// Records the rebuild written down as `commit` as pushed: the built head, the audit
    /// entry, the head's history (the same change as the earlier head, when it is) and the
    /// note on the pull request. False when `commit` is not a rebuild in progress.
    async fn finish_rebuild(&self, pr: &ReleasePr, commit: &str) -> Result<bool, BotError> {
        let now = self.now();
        let Some(detail) = self
            .store
            .finish_rebuild(
                pr.release_id,
                &pr.environment,
                commit,
                self.bot_login(),
                now,
            )
            .await?
        else {
            return Ok(false);
        };
        let text = |key: &str| detail[key].as_str().unwrap_or_default().to_string();
        let was = text("was");
        if let Some(number) = pr.pr_number {
            let changed: Vec<String> = detail["changed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            self.post_note_once(
                number,
                &format!("rebased:{commit}"),
                &texts::rebuilt_on_base(&text("base"), &was, commit, &changed),
            )
            .await?;
        }
        Ok(true)
    }

    /// `/retry`: a failed release tries its failed step again; a release branch that someone
    /// else pushed to is reset to the commit the bot built (with a lease, so a push racing
    /// the reset is not overwritten).
    pub(super) async fn retry(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        actor: &str,
    ) -> Result<(), BotError> {
        let head = pr.head_commit.clone().unwrap_or_default();
        let built = self.built_head(pr, Some(&head)).await?.unwrap_or_default();
        if pr.state.is_open() && !built.is_empty() && head != built {
            // A rebuild written down and not seen on the branch is replaced by this reset.
            self.store
                .drop_rebuild(pr.release_id, &pr.environment)
                .await?;
            let repo = self.deploy_repo().await?;
            let oid = repo.fetch_commit(&pr.branch, &built)?;
            repo.reset_branch(&pr.branch, oid, &head)?;
            let now = self.now();
            self.store.record_head(pr, &built, now, None).await?;
            self.new_head(pr, &built, Some(now), false).await?;
            if let Some(number) = pr.pr_number {
                self.post_note_once(
                    number,
                    &format!("rebuilt:{head}"),
                    &texts::rebuilt_after_foreign_commits(&built, &head),
                )
                .await?;
            }
        }
        self.audit(
            rel,
            AuditEvent::ReleaseRetried,
            actor,
            json!({"environment": pr.environment, "state": rel.state.as_str()}),
        )
        .await?;
        self.watch_again(rel, pr).await
    }
}

/// Whether the base moved under the commit `built` in a way that touches a file it writes: a
/// file whose version on the new base is neither the one `built` started from nor the one it
/// writes (a file already written the same way, such as this release's documents merged from
/// another environment, is no conflict).
fn base_check(repo: &DeployRepo, built: git2::Oid, base: git2::Oid) -> Result<BaseCheck, BotError> {
    let git = repo.repo();
    let commit = git.find_commit(built).map_err(crate::git::GitError::from)?;
    let old_base = commit.parent_id(0).map_err(crate::git::GitError::from)?;
    if old_base == base {
        return Ok(BaseCheck::Current);
    }
    let old_tree = git
        .find_commit(old_base)
        .and_then(|c| c.tree())
        .map_err(crate::git::GitError::from)?;
    let diff = git
        .diff_tree_to_tree(
            Some(&old_tree),
            Some(&commit.tree().map_err(crate::git::GitError::from)?),
            None,
        )
        .map_err(crate::git::GitError::from)?;
    for delta in diff.deltas() {
        let Some(path) = delta.new_file().path().and_then(|p| p.to_str()) else {
            continue;
        };
        let now = repo.read_file(base, path)?;
        if now != repo.read_file(old_base, path)? && now != repo.read_file(built, path)? {
            return Ok(BaseCheck::Moved { base });
        }
    }
    Ok(BaseCheck::Current)
}
