//! After the merge, with Argo CD: an environment is deploying until every Application of its
//! services reports a sync of a revision that contains the merge, with health `Healthy`; it
//! fails on a failed sync of such a revision, or on `Degraded`/`Missing` health for longer than
//! the health timeout after the sync. The next environment opens only once it is deployed.
//!
//! Level-triggered: each look reads the Applications afresh (reconcile looks at every release in
//! `Deploying`; a notification from Argo CD makes it look sooner), and what it concludes is
//! stored before anything is said about it.

use serde_json::json;

use super::{Bot, BotError, texts};
use crate::argocd::{self, AppVerdict};
use crate::events::DeploymentNotice;
use crate::release::state::{AuditEvent, ReleaseState};
use crate::store::forge_releases::{DeployState, ForgeRelease, ReleasePr};

/// Where one environment's deployment stands after a look.
enum Look {
    Deployed(Vec<String>),
    Waiting(String),
    Failed(String),
}

impl Bot {
    /// An environment just merged: with Argo CD it is watched deploying; without, it is done
    /// now (`deployed_at` is when, for the soak time of the environment after it).
    pub(super) fn merged_now(&self, pr: &mut ReleasePr) {
        if self.argocd.is_some() {
            if pr.deploy.is_none() {
                pr.deploy = Some(DeployState::Deploying);
                pr.deploy_since = Some(self.now());
            }
        } else if pr.deployed_at.is_none() {
            pr.deployed_at = Some(self.now());
        }
    }

    /// The release, merged (`Merging`), is `Deploying` while Argo CD deploys `pr`'s merge.
    pub(super) async fn begin_deploying(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
    ) -> Result<(), BotError> {
        if rel.state != ReleaseState::Merging {
            return Ok(());
        }
        self.transition(
            rel,
            ReleaseState::Deploying,
            AuditEvent::ReleaseDeploying,
            self.bot_login(),
            json!({"environment": pr.environment, "merge_commit": pr.merge_commit}),
        )
        .await?;
        self.show_progress(rel, pr, super::Stage::RollingOut).await;
        Ok(())
    }

    /// A release already published (an environment before this one is done) shows each step
    /// of the rollout in its forge release: this environment deploying, or failed. Not for a
    /// rollback's pull request (the rollback's end marks the release), and best-effort: the
    /// forge release is brought up to date again at the next step, and a forge that fails here
    /// must not keep what follows (an automatic rollback) from happening.
    async fn show_progress(&self, rel: &ForgeRelease, pr: &ReleasePr, stage: super::Stage) {
        if !rel.tagged
            || crate::store::forge_releases::rolled_back_environment(&pr.environment).is_some()
        {
            return;
        }
        if let Err(e) = self.publish(rel, stage).await {
            tracing::warn!(release = %rel.version_tag, error = %e, "the forge release could not be brought up to date");
        }
    }

    /// A chained environment with a soak time (`production: {after: staging, soak: 30m}`)
    /// opens that long after the environment before it was done: until when, if not yet.
    pub(super) async fn soaking_until(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
    ) -> Result<Option<time::OffsetDateTime>, BotError> {
        let Some(rule) = self.config.policy.environments.get(&pr.environment) else {
            return Ok(None);
        };
        let (Some(before), Some(soak)) = (&rule.after, &rule.soak) else {
            return Ok(None);
        };
        let Some(secs) = crate::config::parse_duration_secs(soak) else {
            return Ok(None);
        };
        let prs = self.store.release_prs(rel.release_id).await?;
        let Some(prev) = prs.iter().find(|p| &p.environment == before) else {
            return Ok(None);
        };
        let Some(done) = prev.deployed_at else {
            return Ok(None);
        };
        let until = done + time::Duration::seconds(secs as i64);
        if self.now() >= until {
            return Ok(None);
        }
        if let Some(number) = prev.pr_number {
            self.post_note_once(
                number,
                &format!("soak:{}", pr.environment),
                &texts::soaking(&rel.version_tag, before, soak, &pr.environment, until),
            )
            .await?;
        }
        Ok(Some(until))
    }

    /// The Argo CD Applications that deploy `environment` of the release, by service.
    fn applications(&self, rel: &ForgeRelease, environment: &str) -> Vec<String> {
        let Some(argo) = &self.config.orchestration.argocd else {
            return Vec::new();
        };
        // A rollback pull request deploys to the environment it rolls back.
        let environment = crate::store::forge_releases::rolled_back_environment(environment)
            .unwrap_or(environment);
        let mut names: Vec<String> = rel
            .summary
            .changes
            .iter()
            .filter(|c| c.environment == environment)
            .flat_map(|c| &c.services)
            .filter_map(|s| {
                let service = self
                    .config
                    .orchestration
                    .services
                    .iter()
                    .find(|c| c.name == s.service)?;
                Some(argo.application_of(service, environment))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// For a merged environment: whether the release may go on past it (deployed, or not
    /// watched). Looks at Argo CD while it is deploying, and records what it saw.
    pub(super) async fn deployed(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
    ) -> Result<bool, BotError> {
        match pr.deploy {
            None => return Ok(true),
            Some(DeployState::Deployed) => {
                // A stop right after the deployment was recorded left the release here.
                self.next_environment(rel, pr, ReleaseState::Deploying)
                    .await?;
                return Ok(true);
            }
            Some(DeployState::Failed) => {
                // A stop between recording the failure and failing the release: finish it.
                if rel.state == ReleaseState::Deploying {
                    let why = pr.deploy_detail.clone().unwrap_or_default();
                    self.deployment_failed(rel, pr, &why).await?;
                }
                return Ok(false);
            }
            Some(DeployState::Deploying) => {}
        }
        // A stop between the merge's record and the release's move to `Deploying`.
        let mut rel = rel.clone();
        if rel.state == ReleaseState::Merging {
            self.begin_deploying(&rel, pr).await?;
            rel = self.current(rel.release_id).await?.unwrap_or(rel);
        }
        let rel = &rel;
        if rel.state != ReleaseState::Deploying {
            // Failed (a `/retry` moves it back) or final: nothing to watch now.
            return Ok(false);
        }
        let look = self.look(rel, pr).await?;
        match look {
            Look::Deployed(apps) => {
                pr.deploy = Some(DeployState::Deployed);
                pr.deployed_at = Some(self.now());
                pr.deploy_detail = None;
                self.store.save_release_pr(pr).await?;
                tracing::info!(release = %rel.version_tag, environment = %pr.environment, applications = ?apps, "deployed");
                self.audit(
                    rel,
                    AuditEvent::ReleaseDeployed,
                    self.bot_login(),
                    json!({"environment": pr.environment, "applications": apps, "merge_commit": pr.merge_commit}),
                )
                .await?;
                self.update_status(rel, pr, &texts::deployed_status(&apps))
                    .await?;
                self.next_environment(rel, pr, ReleaseState::Deploying)
                    .await?;
                Ok(true)
            }
            Look::Waiting(detail) => {
                if pr.deploy_detail.as_deref() != Some(detail.as_str()) {
                    pr.deploy_detail = Some(detail.clone());
                    self.store.save_release_pr(pr).await?;
                }
                self.update_status(rel, pr, &texts::deploying_status(&detail))
                    .await?;
                Ok(false)
            }
            Look::Failed(why) => {
                pr.deploy = Some(DeployState::Failed);
                pr.deploy_detail = Some(why.clone());
                self.store.save_release_pr(pr).await?;
                tracing::warn!(release = %rel.version_tag, environment = %pr.environment, reason = %why, "deployment failed");
                self.audit(
                    rel,
                    AuditEvent::ReleaseDeployFailed,
                    self.bot_login(),
                    json!({"environment": pr.environment, "reason": why, "merge_commit": pr.merge_commit}),
                )
                .await?;
                self.deployment_failed(rel, pr, &why).await?;
                Ok(false)
            }
        }
    }

    /// A recorded failed deployment: its status, the release `Failed`, and the automatic
    /// rollback if it is on. Each step is safe to repeat.
    async fn deployment_failed(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        why: &str,
    ) -> Result<(), BotError> {
        self.update_status(rel, pr, &texts::deploy_failed_status(why))
            .await?;
        self.fail_with(
            rel,
            why,
            &texts::deploy_failed(
                &rel.version_tag,
                &pr.environment,
                why,
                self.rolls_back_by_itself(rel, pr),
            ),
        )
        .await?;
        self.roll_back_on_failure(rel, pr, why).await?;
        self.show_progress(rel, pr, super::Stage::Failed).await;
        Ok(())
    }

    /// `/retry` after a failed deployment: the environment is watched again from the start
    /// (its health timeout too); nothing before it is repeated.
    pub(super) async fn watch_again(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
    ) -> Result<(), BotError> {
        if pr.deploy != Some(DeployState::Failed) || rel.state != ReleaseState::Failed {
            return Ok(());
        }
        pr.deploy = Some(DeployState::Deploying);
        pr.synced_at = None;
        pr.deploy_detail = None;
        pr.deploy_since = Some(self.now());
        self.store.save_release_pr(pr).await?;
        self.transition(
            rel,
            ReleaseState::Deploying,
            AuditEvent::ReleaseDeploying,
            self.bot_login(),
            json!({"environment": pr.environment, "merge_commit": pr.merge_commit, "again": true}),
        )
        .await
    }

    /// Reads every Application of the environment and judges them together.
    async fn look(&self, rel: &ForgeRelease, pr: &mut ReleasePr) -> Result<Look, BotError> {
        let (Some(argo), Some(config)) = (&self.argocd, &self.config.orchestration.argocd) else {
            // Argo CD was configured when this environment merged and is not now: its merge
            // is all the bot can know of.
            return Ok(Look::Deployed(Vec::new()));
        };
        // Squash and rebase merges put a new commit on the base: the merge commit is what a
        // synced revision must contain (the head, when the forge never said).
        let Some(merged) = pr.merge_commit.clone().or_else(|| pr.head_commit.clone()) else {
            return Ok(Look::Waiting("the merge commit is not known yet".into()));
        };
        let apps = self.applications(rel, &pr.environment);
        let repo = self.deploy_repo().await?;
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        let mut unhealthy = Vec::new();
        let mut any_synced = false;
        // Argo CD could not be asked (unreachable, failing): nothing is known of those, which
        // is said, read again later, and never fails a deployment by itself.
        let mut unknown = Vec::new();
        for name in &apps {
            let status = match argo.application(name).await {
                Ok(status) => status,
                // Down or failing (unreachable, 5xx): nothing is known.
                Err(e @ argocd::ArgoCdError::Unreachable { .. }) => {
                    unknown.push(e.to_string());
                    continue;
                }
                Err(e @ argocd::ArgoCdError::Status { status, .. }) if status >= 500 => {
                    unknown.push(e.to_string());
                    continue;
                }
                // Anything else Argo CD answers (a token refused, another 4xx, an answer that
                // does not read) will not mend itself: it counts against the sync timeout.
                Err(e) => {
                    waiting.push(e.to_string());
                    continue;
                }
            };
            let Some(status) = status else {
                // An ApplicationSet may be making it: it counts against the sync timeout.
                waiting.push(format!(
                    "Argo CD has no Application `{name}`, or the bot's account may not read it (named by `argocd.application` or the service's `argocdApplications`; deploy/argocd/rbac.yaml)"
                ));
                continue;
            };
            let mut git_error = None;
            let verdict = argocd::judge(&status, &mut |rev| {
                repo.contains(rev, &merged).unwrap_or_else(|e| {
                    git_error.get_or_insert(e);
                    false
                })
            });
            if let Some(e) = git_error {
                return Err(e.into());
            }
            match verdict {
                AppVerdict::Deployed => any_synced = true,
                AppVerdict::Synced { health } => {
                    any_synced = true;
                    if argocd::is_unhealthy(&health) {
                        unhealthy.push(format!("`{name}` is {health}"));
                    } else {
                        waiting.push(format!("`{name}` is synced and {health}"));
                    }
                }
                AppVerdict::Waiting(why) => waiting.push(why),
                AppVerdict::Failed(why) => failed.push(why),
            }
        }
        if !failed.is_empty() {
            return Ok(Look::Failed(failed.join("; ")));
        }
        if any_synced && pr.synced_at.is_none() {
            pr.synced_at = Some(self.now());
            self.store.save_release_pr(pr).await?;
        }
        if !unhealthy.is_empty() {
            let limit = config.health_timeout_secs();
            let since = pr.synced_at.unwrap_or_else(|| self.now());
            if self.now() - since >= time::Duration::seconds(limit as i64) {
                return Ok(Look::Failed(format!(
                    "{} longer than the health timeout ({}) after the sync",
                    unhealthy.join(", "),
                    config.health_timeout
                )));
            }
            waiting.extend(
                unhealthy
                    .into_iter()
                    .map(|u| format!("{u} (fails after {})", config.health_timeout)),
            );
        }
        if waiting.is_empty() && unknown.is_empty() {
            return Ok(Look::Deployed(apps));
        }
        // While Argo CD cannot be asked, the sync timeout starts again: once it answers, the
        // deployment has the whole timeout, not what an outage left of it.
        if !unknown.is_empty() {
            pr.deploy_since = Some(self.now());
            self.store.save_release_pr(pr).await?;
        }
        let since = pr.deploy_since.unwrap_or_else(|| self.now());
        if !waiting.is_empty()
            && self.now() - since >= time::Duration::seconds(config.sync_timeout_secs() as i64)
        {
            return Ok(Look::Failed(format!(
                "not deployed within the sync timeout ({}) after the merge: {}",
                config.sync_timeout,
                waiting.join("; ")
            )));
        }
        waiting.extend(unknown);
        Ok(Look::Waiting(waiting.join("; ")))
    }

    /// Argo CD said something about an Application: every release deploying it is looked at
    /// now (the notification is only a hint; the API is read for the facts).
    pub(super) async fn on_deployment_notice(
        &self,
        notice: &DeploymentNotice,
    ) -> Result<(), BotError> {
        tracing::info!(application = %notice.application, trigger = ?notice.trigger, "Argo CD notification");
        let mut releases = Vec::new();
        for pr in self.store.release_prs_deploying().await? {
            let Some(rel) = self.current(pr.release_id).await? else {
                continue;
            };
            if self
                .applications(&rel, &pr.environment)
                .contains(&notice.application)
            {
                releases.push(rel.release_id);
            }
        }
        releases.sort_unstable();
        releases.dedup();
        // Ascending, as the lanes' lock order wants.
        for release in releases {
            let _claim = self.claim(release).await?;
            self.advance(release, false).await?;
        }
        Ok(())
    }
}
