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
    ForgeRelease, NewRollback, ReleasePr, Rollback, rollback_environment, rolled_back_environment,
};

/// What a `/rollback` came to.
pub(super) enum RollbackOutcome {
    Opened,
    /// This environment of the release is being rolled back already.
    AlreadyRequested,
    /// Nothing to roll back, and why.
    Refused(String),
}

/// One values file as the rollback writes it.
struct Restored {
    path: String,
    content: Vec<u8>,
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
        if pr.state != PrState::Merged {
            return Ok(RollbackOutcome::Refused(format!(
                "{} is not merged, so nothing of it is deployed; to stop it, comment `/cancel`",
                pr.environment
            )));
        }
        let known = self.store.rollbacks(rel.release_id).await?;
        if known.iter().any(|r| r.environment == pr.environment) {
            self.stop_rollout(rel).await?;
            return Ok(RollbackOutcome::AlreadyRequested);
        }
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
            let (Some(old), released, current) = (read(before)?, read(merge)?, read(base)?) else {
                return Ok(RollbackOutcome::Refused(format!(
                    "`{path}` did not exist before the release, so there is nothing to restore it to"
                )));
            };
            let whole = current.is_some() && current == released;
            let restored = if whole {
                old
            } else {
                // Changed since the release: only the released values are set back.
                let mut text = String::from_utf8(current.unwrap_or_default())
                    .map_err(|_| BotError::Io(format!("`{path}` is not UTF-8 text")))?;
                for c in changes {
                    let service = self
                        .config
                        .orchestration
                        .services
                        .iter()
                        .find(|s| s.name == c.service)
                        .ok_or_else(|| {
                            BotError::Io(format!("service `{}` is no longer configured", c.service))
                        })?;
                    text = crate::yaml_edit::set_scalar(&text, &service.tag_route(), &c.from)
                        .map_err(|e| BotError::Io(format!("`{path}`: {e}")))?
                        .text;
                }
                text.into_bytes()
            };
            for c in changes {
                restores.push(json!({
                    "service": c.service,
                    "file": path,
                    "from": c.to,
                    "to": c.from,
                    "how": if whole { "the whole file as it was before the release" } else { "the value only (the file changed since the release)" },
                }));
            }
            files.push(Restored {
                path: path.clone(),
                content: restored,
            });
        }
        let now = self.now();
        let rollback = Rollback {
            release_id: rel.release_id,
            environment: pr.environment.clone(),
            requested_by: actor.to_string(),
            reason: reason.to_string(),
            automatic,
            requested_at: now,
            restores: json!(restores),
        };
        let plan = texts::rollback_plan(rel, &rollback, &merged);
        let mut writes: Vec<FileWrite> = files
            .into_iter()
            .map(|f| FileWrite {
                path: f.path,
                content: f.content,
            })
            .collect();
        writes.push(FileWrite {
            path: format!("releases/{}/rollback-plan.yaml", rel.version_tag),
            content: plan.into_bytes(),
        });
        let deployment = &self.config.orchestration.deployment;
        let commit = repo.build_commit(
            base,
            &writes,
            (&deployment.author_name, &deployment.author_email),
            now,
            &texts::rollback_commit_message(&rel.version_tag, &pr.environment, actor, reason),
        )?;
        let branch = format!("rollback/{}/{}", rel.version_tag, pr.environment);
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
        tracing::info!(release = %rel.version_tag, environment = %pr.environment, actor, automatic, reason, "rollback requested");
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(RollbackOutcome::Opened);
        };
        let detail = json!({"environment": pr.environment, "reason": reason, "automatic": automatic, "restores": restores, "branch": branch});
        if matches!(
            rel.state,
            ReleaseState::Completed
                | ReleaseState::Failed
                | ReleaseState::Deploying
                | ReleaseState::Documenting
                | ReleaseState::Merging
        ) {
            self.transition(
                &rel,
                ReleaseState::AwaitingApproval,
                AuditEvent::ReleaseRollbackRequested,
                actor,
                detail,
            )
            .await?;
        } else {
            self.audit(&rel, AuditEvent::ReleaseRollbackRequested, actor, detail)
                .await?;
        }
        self.stop_rollout(&rel).await?;
        Ok(RollbackOutcome::Opened)
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
                        self.post_note_once(
                            number,
                            "rolled-back",
                            &texts::closed_for_rollback(&rel.version_tag),
                        )
                        .await?;
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
        let rollbacks = self.store.rollbacks(rel.release_id).await?;
        let prs = self.store.release_prs(rel.release_id).await?;
        let environments: Vec<&str> = rollbacks.iter().map(|r| r.environment.as_str()).collect();
        self.transition(
            rel,
            ReleaseState::RolledBack,
            AuditEvent::ReleaseRolledBack,
            self.bot_login(),
            json!({"environments": environments}),
        )
        .await?;
        for r in &rollbacks {
            let env = rollback_environment(&r.environment);
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
        let Some(env) = rolled_back_environment(&pr.environment) else {
            return Ok(None);
        };
        Ok(self
            .store
            .rollbacks(rel.release_id)
            .await?
            .into_iter()
            .find(|r| r.environment == env))
    }

    /// A failed deployment: rolled back by itself when the trigger's `rollbackEnabled` (or
    /// else the operator's `defaults.autoRollbackOnFailure`) says so.
    pub(super) async fn roll_back_on_failure(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        why: &str,
    ) -> Result<(), BotError> {
        let automatic = rel
            .summary
            .rollback_enabled
            .unwrap_or(self.config.orchestration.defaults.auto_rollback_on_failure);
        if !automatic || rolled_back_environment(&pr.environment).is_some() {
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
