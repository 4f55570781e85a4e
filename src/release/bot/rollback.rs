//! Rollback: `/rollback [reason]` on a merged release pull request (by a holder of one of the
//! environment's `rollbackRoles`), or a failed deployment with automatic rollback on, opens a
//! pull request that restores what the release changed in that environment.
//!
//! Each values file the release changed is restored byte for byte as it was before the release
//! when nobody changed it since; otherwise only the released values are set back (the rest of
//! the file, someone else's since, stays). `releases/<version>/rollback-plan.yaml` says what is
//! restored, why and who asked. The pull request is kept as the release's pull request of the
//! environment `rollback:<environment>`: approved under the environment's `rollback` rule (or its
//! own), checked, merged and watched deploying like any other, and then the release is
//! `RolledBack`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Bot, BotError, PrState, texts};
use crate::git::FileWrite;
use crate::release::state::{AuditEvent, ReleaseState};
use crate::store::forge_releases::{
    ForgeRelease, NewRollback, ReleasePr, Rollback, rolled_back_environment,
};

/// What a `/rollback` came to.
pub(super) enum RollbackOutcome {
    Opened,
    /// This environment of the release is being rolled back already.
    AlreadyRequested,
    /// Nothing to roll back, and why.
    Refused(String),
}

impl Bot {
    /// Rolls back `pr`'s environment of the release (it must be merged): builds and pushes the
    /// rollback branch, records the rollback with its pull request to be, stops the rest of
    /// the rollout, and moves the release to wait for the rollback's approval. Safe to repeat:
    /// a rollback recorded before is found, and the rest is done again only where it is not.
    pub(super) async fn roll_back(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        actor: &str,
        reason: &str,
        automatic: bool,
    ) -> Result<RollbackOutcome, BotError> {
        if rolled_back_environment(&pr.environment).is_some() {
            return Ok(RollbackOutcome::Refused(
                "this is a rollback pull request; to drop it, comment `/cancel`".into(),
            ));
        }
        if rel.state == ReleaseState::Aborted {
            return Ok(RollbackOutcome::Refused(format!(
                "release {} is {}: nothing of it goes on, and the bot rolls back only a release it can still follow; change the values by hand",
                rel.version_tag, rel.state
            )));
        }
        if pr.state != PrState::Merged {
            return Ok(RollbackOutcome::Refused(format!(
                "{} is not merged, so nothing of it is deployed; to stop it, comment `/cancel`",
                pr.environment
            )));
        }
        let prs = self.store.release_prs(rel.release_id).await?;
        let known = self.store.rollbacks(rel.release_id).await?;
        let active = |env: &str| known.iter().any(|r| r.environment == env && !r.abandoned);
        // A later environment that runs this release would keep running it.
        if let Some(later) = prs.iter().find(|p| {
            p.position > pr.position
                && rolled_back_environment(&p.environment).is_none()
                && p.state == PrState::Merged
                && !active(&p.environment)
        }) {
            return Ok(RollbackOutcome::Refused(format!(
                "{} merged this release after {}: roll {} back first",
                later.environment, pr.environment, later.environment
            )));
        }
        // Rolled back already here; another environment it still runs may be rolled back next.
        if rel.state == ReleaseState::RolledBack && active(&pr.environment) {
            return Ok(RollbackOutcome::Refused(format!(
                "{} is rolled back already (release {} is RolledBack)",
                pr.environment, rel.version_tag
            )));
        }
        if active(&pr.environment) {
            // Asked again (or the first attempt stopped half-way): make sure it goes on.
            self.enter_rollback(
                rel,
                &pr.environment,
                actor,
                json!({"environment": pr.environment, "again": true}),
            )
            .await?;
            return Ok(RollbackOutcome::AlreadyRequested);
        }
        let attempt = 1 + known
            .iter()
            .filter(|r| r.environment == pr.environment)
            .count() as i64;
        let Some(merged) = pr.merge_commit.clone() else {
            return Ok(RollbackOutcome::Refused(
                "the forge never said which commit the merge made, so the bot cannot tell what to restore".into(),
            ));
        };
        let access = self.deploy_access().await?;
        let (repo, base) = crate::release::open_deploy_repo(&self.config, access)?;
        let (merge, before) = repo.fetch_with_parent(&merged)?;

        // What the release changed in this environment, by file (services may share one).
        let mut by_file: BTreeMap<String, Vec<&super::model::ServiceChange>> = BTreeMap::new();
        for change in rel.summary.changes_to(&pr.environment) {
            by_file.entry(change.file.clone()).or_default().push(change);
        }
        let mut restores = Vec::new();
        let mut files = Vec::new();
        for (path, changes) in &by_file {
            let read = |at| repo.read_file(at, path);
            let (Some(old), released, Some(current)) = (read(before)?, read(merge)?, read(base)?)
            else {
                return Ok(RollbackOutcome::Refused(format!(
                    "`{path}` did not exist before the release, or does not now, so there is nothing to restore"
                )));
            };
            let whole = Some(&current) == released.as_ref();
            let text = |bytes: &[u8]| {
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| BotError::Io(format!("`{path}` is not UTF-8 text")))
            };
            let (old_text, mut now_text) = (text(&old)?, text(&current)?);
            let released_text = text(released.as_deref().unwrap_or_default())?;
            // Every value the release wrote in this file (tags, pinned digests, a strategy's
            // values), as the merge's parent had it and as the merge left it (the release may
            // have been rebuilt on a base that had moved on).
            let changed = match crate::yaml_edit::changed_values(&old_text, &released_text) {
                Ok(c) => c,
                Err(why) => {
                    return Ok(RollbackOutcome::Refused(format!(
                        "`{path}` changed at the release's merge in a way the bot cannot set back value by value ({why})"
                    )));
                }
            };
            for v in &changed {
                let keys: Vec<&str> = v.keys.iter().map(String::as_str).collect();
                let is = crate::yaml_edit::value_at(&now_text, &keys);
                if is.as_ref() != Some(&v.after) {
                    return Ok(RollbackOutcome::Refused(format!(
                        "`{}` in `{path}` is `{}` now, not `{}` as this release left it: rolling back would undo a later change",
                        v.path(),
                        is.as_ref()
                            .map(crate::yaml_edit::shown)
                            .unwrap_or_else(|| "gone".into()),
                        crate::yaml_edit::shown(&v.after)
                    )));
                }
                if !whole {
                    now_text = crate::yaml_edit::set_value(&now_text, &keys, &v.before)
                        .map_err(|e| BotError::Io(format!("`{path}`: {e}")))?
                        .text;
                }
            }
            for c in changes {
                let service = self.config.service(&c.service);
                // The values that are this service's: its tag, its digest, its strategy's.
                let own = |p: &str| {
                    service.is_some_and(|s| {
                        s.tag_path == p
                            || s.digest_path.as_deref() == Some(p)
                            || s.deploy_strategies.values().any(|v| v.contains_key(p))
                            || self
                                .config
                                .orchestration
                                .deploy_strategies
                                .values()
                                .any(|v| v.contains_key(p))
                    })
                };
                let values: Vec<serde_json::Value> = changed
                    .iter()
                    .filter(|v| own(&v.path()))
                    .map(|v| json!({"path": v.path(), "from": crate::yaml_edit::shown(&v.after), "to": crate::yaml_edit::shown(&v.before)}))
                    .collect();
                let was = changed
                    .iter()
                    .find(|v| service.is_some_and(|s| s.tag_path == v.path()))
                    .map(|v| crate::yaml_edit::shown(&v.before))
                    .unwrap_or_else(|| c.from.clone());
                restores.push(json!({
                    "service": c.service,
                    "file": path,
                    "from": c.to,
                    "to": was,
                    "values": values,
                    "how": if whole { "the whole file as it was before the release" } else { "the values only (the file changed since the release)" },
                }));
            }
            files.push(FileWrite {
                path: path.clone(),
                content: if whole { old } else { now_text.into_bytes() },
            });
        }
        let now = self.now();
        let rollback = Rollback {
            release_id: rel.release_id,
            environment: pr.environment.clone(),
            attempt,
            abandoned: false,
            requested_by: actor.to_string(),
            reason: reason.to_string(),
            automatic,
            requested_at: now,
            restores: json!(restores),
        };
        files.push(FileWrite {
            path: format!("releases/{}/rollback-plan.yaml", rel.version_tag),
            content: texts::rollback_plan(rel, &rollback, &merged).into_bytes(),
        });
        let deployment = &self.config.orchestration.deployment;
        let commit = repo.build_commit(
            base,
            &files,
            (&deployment.author_name, &deployment.author_email),
            now,
            &texts::rollback_commit_message(&rel.version_tag, &pr.environment, actor, reason),
        )?;
        let branch = if attempt == 1 {
            format!("rollback/{}/{}", rel.version_tag, pr.environment)
        } else {
            format!("rollback/{}/{}-{attempt}", rel.version_tag, pr.environment)
        };
        // A branch left by an attempt that stopped before it was recorded is the bot's own
        // (nothing else is recorded under this name): it is replaced, with a lease.
        match repo.push(&[(branch.clone(), commit)]) {
            Ok(()) => {}
            Err(crate::git::GitError::PushRejected { .. }) => match repo.remote_tip(&branch)? {
                Some(tip) => repo.reset_branch(&branch, commit, &tip.to_string())?,
                None => repo.push(&[(branch.clone(), commit)])?,
            },
            Err(e) => return Err(e.into()),
        }
        let recorded = self
            .store
            .record_rollback(NewRollback {
                rollback: &rollback,
                branch: &branch,
                commit: &commit.to_string(),
                position: 1000 + known.len() as i64,
            })
            .await?;
        if !recorded {
            return Ok(RollbackOutcome::AlreadyRequested);
        }
        self.rollbacks_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(release = %rel.version_tag, environment = %pr.environment, actor, automatic, reason, "rollback requested");
        self.enter_rollback(
            rel,
            &pr.environment,
            actor,
            json!({"environment": pr.environment, "reason": reason, "automatic": automatic, "restores": restores, "branch": branch, "attempt": attempt}),
        )
        .await?;
        Ok(RollbackOutcome::Opened)
    }

    /// The release waits for its rollback pull request's approval, and its rollout stops.
    /// Repeatable: a stop half-way is finished by the next `/rollback` or reconcile.
    async fn enter_rollback(
        &self,
        rel: &ForgeRelease,
        environment: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), BotError> {
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        // A rollback pull request of another environment deploying keeps the release in
        // `Deploying` until it is done; it is then picked up in order.
        let deploying_rollback = self
            .store
            .release_prs(rel.release_id)
            .await?
            .iter()
            .any(|p| {
                rolled_back_environment(&p.environment).is_some()
                    && p.deploy == Some(crate::store::forge_releases::DeployState::Deploying)
            });
        let moves = match rel.state {
            ReleaseState::Completed
            | ReleaseState::RolledBack
            | ReleaseState::Failed
            | ReleaseState::Documenting => true,
            ReleaseState::Deploying | ReleaseState::Merging => !deploying_rollback,
            _ => false,
        };
        if moves {
            self.transition(
                &rel,
                ReleaseState::AwaitingApproval,
                AuditEvent::ReleaseRollbackRequested,
                actor,
                detail,
            )
            .await?;
        } else if detail.get("again").is_none() {
            self.audit(&rel, AuditEvent::ReleaseRollbackRequested, actor, detail)
                .await?;
        }
        tracing::debug!(release = %rel.version_tag, environment, "rollback entered");
        self.stop_rollout(&rel).await
    }

    /// A rollback pull request closed without merging (closed, `/cancel`, out of time): the
    /// rollback is abandoned, and the release is `Failed` as it stands: a later `/rollback`
    /// asks again.
    pub(super) async fn abandon_rollback(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        actor: &str,
        why: &str,
    ) -> Result<(), BotError> {
        let Some(r) = self.rollback_of(rel, pr).await? else {
            return Ok(());
        };
        pr.state = PrState::Closed;
        self.store.save_release_pr(pr).await?;
        self.store.abandon_rollback(&r).await?;
        tracing::info!(release = %rel.version_tag, environment = %r.environment, actor, why, "rollback abandoned");
        let note = texts::rollback_abandoned(&rel.version_tag, &r.environment, why);
        // Its status comment said what the merge waited for; it waits for nothing now.
        self.update_status(rel, pr, &format!("⏹️ {note}")).await?;
        self.fail_with(
            rel,
            &format!("its rollback of {} was abandoned: {why}", r.environment),
            &note,
        )
        .await
    }

    /// A release being rolled back goes no further: environments not yet opened are dropped,
    /// and open release pull requests are closed, saying why.
    async fn stop_rollout(&self, rel: &ForgeRelease) -> Result<(), BotError> {
        for mut pr in self.store.release_prs(rel.release_id).await? {
            if rolled_back_environment(&pr.environment).is_some() {
                continue;
            }
            match pr.state {
                PrState::Waiting => {
                    pr.state = PrState::Closed;
                    self.store.save_release_pr(&pr).await?;
                }
                PrState::Open | PrState::Scheduled => {
                    // Recorded closed first: the forge's word that it closed is then no abort.
                    pr.state = PrState::Closed;
                    self.store.save_release_pr(&pr).await?;
                    if let Some(number) = pr.pr_number {
                        let note = texts::closed_for_rollback(&rel.version_tag);
                        // The status comment, too: it said what the merge waited for.
                        self.update_status(rel, &mut pr, &format!("⏹️ {note}"))
                            .await?;
                        self.post_note_once(number, "rolled-back", &note).await?;
                        self.forge
                            .close_change_request(&self.settings.deployment_repo, number)
                            .await?;
                    }
                }
                PrState::Merged | PrState::Closed => {}
            }
        }
        Ok(())
    }

    /// Every rollback pull request merged (and deployed, with Argo CD): the release is
    /// `RolledBack`, and each rolled back environment's pull request says so.
    pub(super) async fn rolled_back(&self, rel: &ForgeRelease) -> Result<(), BotError> {
        let rollbacks: Vec<Rollback> = self
            .store
            .rollbacks(rel.release_id)
            .await?
            .into_iter()
            .filter(|r| !r.abandoned)
            .collect();
        let prs = self.store.release_prs(rel.release_id).await?;
        let environments: Vec<&str> = rollbacks.iter().map(|r| r.environment.as_str()).collect();
        // The forge release, if there is one, says so (best effort: the record is the audit log).
        if rel.tagged
            && let Err(e) = self.publish(rel, super::Stage::RolledBack).await
        {
            tracing::warn!(release = %rel.version_tag, error = %e, "the forge release could not be marked rolled back");
        }
        self.transition(
            rel,
            ReleaseState::RolledBack,
            AuditEvent::ReleaseRolledBack,
            self.bot_login(),
            json!({"environments": environments}),
        )
        .await?;
        for r in &rollbacks {
            let env = r.pr_environment();
            let by = prs.iter().find(|p| p.environment == env);
            let original = prs.iter().find(|p| p.environment == r.environment);
            if let (Some(by), Some(number)) = (by, original.and_then(|p| p.pr_number)) {
                self.post_note_once(
                    number,
                    "rolled-back-done",
                    &texts::rolled_back(
                        &rel.version_tag,
                        &r.environment,
                        by.pr_number,
                        by.merge_commit.as_deref(),
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The rollback `pr` is the pull request of, if it is a rollback pull request.
    pub(super) async fn rollback_of(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
    ) -> Result<Option<Rollback>, BotError> {
        if rolled_back_environment(&pr.environment).is_none() {
            return Ok(None);
        }
        Ok(self
            .store
            .rollbacks(rel.release_id)
            .await?
            .into_iter()
            .find(|r| r.pr_environment() == pr.environment))
    }

    /// A failed deployment: rolled back by itself when the trigger's `rollbackEnabled` (or
    /// else the operator's `defaults.autoRollbackOnFailure`) says so.
    /// Whether the policy gives `environment` a `rollback:` rule of its own.
    pub(super) fn has_rollback_rule(&self, environment: &str) -> bool {
        self.config
            .policy
            .environment(environment)
            .is_some_and(|e| e.rollback.is_some())
    }

    /// Whether a failed deployment of `pr` is rolled back by itself: the trigger's
    /// `rollbackEnabled` or the operator's `autoRollbackOnFailure` (a trigger may ask for more
    /// safety than the operator, never less), and not for a rollback's own pull request.
    pub(super) fn rolls_back_by_itself(&self, rel: &ForgeRelease, pr: &ReleasePr) -> bool {
        (rel.summary.rollback_enabled == Some(true)
            || self.config.orchestration.defaults.auto_rollback_on_failure)
            && rolled_back_environment(&pr.environment).is_none()
    }

    pub(super) async fn roll_back_on_failure(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        why: &str,
    ) -> Result<(), BotError> {
        if !self.rolls_back_by_itself(rel, pr) {
            return Ok(());
        }
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        let reason = format!(
            "automatic: the deployment to {} failed: {why}",
            pr.environment
        );
        if let RollbackOutcome::Refused(no) = self
            .roll_back(&rel, pr, self.bot_login(), &reason, true)
            .await?
        {
            tracing::warn!(release = %rel.version_tag, environment = %pr.environment, why = %no, "no automatic rollback");
        } else if let Some(number) = pr.pr_number {
            self.post_note_once(
                number,
                "auto-rollback",
                &texts::automatic_rollback(&rel.version_tag, &pr.environment),
            )
            .await?;
        }
        Ok(())
    }
}
