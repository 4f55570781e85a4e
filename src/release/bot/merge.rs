//! Moving a release on: open the next pull request, decide on fresh facts, merge pinned to
//! the head, and finish the release (tag, forge release) when every environment is merged.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Bot, BotError, PrState, texts};
use crate::forge::{ForgeError, MergeOutcome, NewChangeRequest};
use crate::policy::{self, Approval, Check, Decision, Facts};
use crate::release::state::{AuditEvent, ReleaseState};
use crate::store::forge_releases::{ForgeRelease, ReleasePr, rolled_back_environment};

/// Everything one decision about one pull request reads, gathered from the store (and, right
/// before a merge, from the forge).
pub(super) struct Gate {
    environment: String,
    pub head: String,
    built: String,
    requesters: Vec<String>,
    pushers: Vec<String>,
    head_pusher_unknown: bool,
    extra_roles: Vec<String>,
    approvals: Vec<Approval>,
    roles: BTreeMap<String, std::collections::BTreeSet<String>>,
    checks: Vec<Check>,
    qa_coverage: Option<f64>,
    manual: bool,
    held_by: Option<String>,
}

/// What a merge call came to.
enum Merged {
    Yes,
    /// Not merged (scheduled with the forge, or refused; the status says so).
    No,
    /// Refused as a conflict with the base.
    Conflict,
}

impl Gate {
    pub fn approvals(&self) -> &[Approval] {
        &self.approvals
    }

    pub fn facts<'a>(&'a self, policy: &'a crate::config::ReleasePolicy) -> Facts<'a> {
        Facts {
            environment: &self.environment,
            policy,
            head_commit: &self.head,
            built_head: &self.built,
            requesters: &self.requesters,
            pushers: &self.pushers,
            head_pusher_unknown: self.head_pusher_unknown,
            extra_roles: &self.extra_roles,
            approvals: &self.approvals,
            roles: &self.roles,
            checks: &self.checks,
            qa_coverage: self.qa_coverage,
            manual_approval_required: self.manual,
            held_by: self.held_by.as_deref(),
        }
    }
}

impl Bot {
    /// Opens the next pull request, decides, merges, and finishes the release when every
    /// environment is merged. With `refresh`, first re-reads the forge's state.
    pub(super) async fn advance(&self, release_id: i64, refresh: bool) -> Result<(), BotError> {
        use std::sync::atomic::Ordering;
        let started = self.rollbacks_started.load(Ordering::Relaxed);
        self.advance_once(release_id, refresh).await?;
        // A failed deployment was rolled back by itself just now: its pull request opens.
        if self.rollbacks_started.load(Ordering::Relaxed) > started {
            self.advance_once(release_id, false).await?;
        }
        Ok(())
    }

    async fn advance_once(&self, release_id: i64, refresh: bool) -> Result<(), BotError> {
        let mut prs = self.store.release_prs(release_id).await?;
        // A release being rolled back goes on with its rollback pull requests only.
        // (An abandoned rollback's pull request is closed, and left out.)
        let active_rollback = |p: &ReleasePr| {
            rolled_back_environment(&p.environment).is_some() && p.state != PrState::Closed
        };
        let rolling_back = prs.iter().any(active_rollback);
        if rolling_back {
            prs.retain(active_rollback);
        }
        for mut pr in prs {
            // Read afresh each round: merging the previous pull request moved the state on.
            let Some(rel) = self.current(release_id).await? else {
                return Ok(());
            };
            if rel.state.is_final() {
                return Ok(());
            }
            match pr.state {
                // With Argo CD, the next environment waits until this one is deployed.
                PrState::Merged => {
                    if self.deployed(&rel, &mut pr).await? {
                        continue;
                    }
                    return Ok(());
                }
                PrState::Closed => return Ok(()),
                PrState::Waiting => {
                    if let Some(until) = self.soaking_until(&rel, &pr).await? {
                        tracing::info!(release = %rel.version_tag, environment = %pr.environment, until = %until, "soaking before the next environment opens");
                        return Ok(());
                    }
                    self.open_pr(&rel, &mut pr).await?
                }
                PrState::Open | PrState::Scheduled => {
                    if refresh && !self.refresh(&rel, &mut pr).await? {
                        if pr.state == PrState::Merged {
                            let rel = self.current(release_id).await?.unwrap_or(rel);
                            if self.deployed(&rel, &mut pr).await? {
                                continue;
                            }
                        }
                        return Ok(());
                    }
                }
            }
            if self.timed_out(&rel, &mut pr).await? {
                return Ok(());
            }
            let Some(rel) = self.current(release_id).await? else {
                return Ok(());
            };
            if !self.evaluate(&rel, &mut pr).await? {
                return Ok(());
            }
            // Merged just now: with Argo CD, the next environment waits for this one to run.
            let Some(rel) = self.current(release_id).await? else {
                return Ok(());
            };
            if !self.deployed(&rel, &mut pr).await? {
                return Ok(());
            }
        }
        match self.current(release_id).await? {
            Some(rel) if !rel.state.is_final() && rolling_back => self.rolled_back(&rel).await,
            Some(rel) if !rel.state.is_final() => self.finish(&rel).await,
            _ => Ok(()),
        }
    }

    async fn open_pr(&self, rel: &ForgeRelease, pr: &mut ReleasePr) -> Result<(), BotError> {
        let repo = &self.settings.deployment_repo;
        let base = &self.config.orchestration.deployment.base_branch;
        // A previous attempt may have opened it and died before recording the number.
        let existing = if pr.opening {
            self.forge.find_change_request(repo, &pr.branch).await?
        } else {
            None
        };
        let cr = match existing {
            Some(cr) => cr,
            None => {
                // Built when the release started; the base may have moved since (an earlier
                // environment merged): build it on the base as it is before anyone reviews it.
                // Not when this very job built it a moment ago: the look before the merge
                // rebuilds it if the base has moved since.
                let just_built = self
                    .just_built
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&rel.release_id)
                    == Some(super::lanes::current_job());
                let rollback = self.rollback_of(rel, pr).await?;
                // A rollback restores what was before the release; the forge refuses its merge
                // if the base has moved in a way that conflicts.
                if !just_built && rollback.is_none() {
                    self.rebuild_if_base_moved(rel, pr).await?;
                }
                pr.opening = true;
                pr.opened_at = Some(self.now());
                self.store.save_release_pr(pr).await?;
                let (title, body) = match &rollback {
                    Some(r) => (
                        texts::rollback_title(&rel.version_tag, &r.environment),
                        texts::rollback_body(
                            &rel.summary,
                            &r.environment,
                            &r.requested_by,
                            &r.reason,
                            r.automatic,
                            self.has_rollback_rule(&r.environment),
                        ),
                    ),
                    None => (
                        texts::pr_title(&rel.version_tag, &pr.environment),
                        texts::pr_body(
                            &rel.summary,
                            &pr.environment,
                            &rel.requester,
                            &rel.app_repo,
                            &rel.app_commit,
                        ),
                    ),
                };
                self.forge
                    .open_change_request(
                        repo,
                        &NewChangeRequest {
                            head_branch: &pr.branch,
                            base_branch: base,
                            title: &title,
                            body: &body,
                        },
                    )
                    .await?
            }
        };
        // The head the pull request opened with is the first of its push history; an
        // approval can be given on no earlier one.
        self.store
            .record_head(pr, &cr.head_commit, time::OffsetDateTime::UNIX_EPOCH, None)
            .await?;
        tracing::info!(release = %rel.version_tag, environment = %pr.environment, pr = cr.number, url = %cr.url, "pull request open");
        self.store
            .set_pr_url(rel.release_id, &pr.environment, &cr.url)
            .await?;
        pr.pr_number = Some(cr.number);
        pr.head_commit = Some(cr.head_commit.clone());
        pr.state = PrState::Open;
        self.store.save_release_pr(pr).await?;
        let detail =
            json!({"environment": pr.environment, "pull_request": cr.number, "url": cr.url});
        if rel.state == ReleaseState::Pending {
            self.transition(
                rel,
                ReleaseState::AwaitingApproval,
                AuditEvent::ReleaseApprovalRequested,
                self.bot_login(),
                detail,
            )
            .await
        } else {
            self.audit(
                rel,
                AuditEvent::ReleaseApprovalRequested,
                self.bot_login(),
                detail,
            )
            .await
        }
    }

    /// Gathers what a decision reads. `fresh`: memberships are read from the forge, not reused.
    pub(super) async fn gate(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        also: Option<&str>,
        fresh: bool,
    ) -> Result<Gate, BotError> {
        let head = pr.head_commit.clone().unwrap_or_default();
        let built = self.built_head(pr, Some(&head)).await?.unwrap_or_default();
        let acts = self.store.acts(pr).await?;
        let mut approvals = policy::approvals_in_force(&acts);
        // Approvals of a head the bot rebuilt on a moved base, as the same change, count for
        // the rebuilt head.
        let mut same: Vec<String> = vec![head.clone()];
        for h in self.store.heads(pr).await?.iter().rev() {
            if same.contains(&h.commit)
                && let Some(earlier) = &h.same_change_as
                && !same.contains(earlier)
            {
                same.push(earlier.clone());
            }
        }
        for a in &mut approvals {
            if same.contains(&a.commit) {
                a.commit = head.clone();
            }
        }
        let mut users: Vec<String> = approvals.iter().map(|a| a.user.clone()).collect();
        users.extend(also.map(str::to_string));
        let mut needed: Vec<String> = self
            .env_policy(&pr.environment)
            .map(|e| e.required_roles.clone())
            .unwrap_or_default();
        // A rollback merges under its rule alone: what the trigger asked of the release does
        // not bind undoing it. Whoever asked for the rollback does not approve it.
        let rollback = self.rollback_of(rel, pr).await?;
        let extra_roles = if rollback.is_some() {
            Vec::new()
        } else {
            rel.summary.extra_roles.clone()
        };
        needed.extend(extra_roles.iter().cloned());
        let roles = self.roles_of(&users, &needed, fresh).await?;
        let pushers = self.store.pushers(pr).await?;
        let head_pusher_unknown =
            head != built && self.store.unknown_pusher_since_built(pr).await?;
        let mut requesters = vec![rel.requester.clone()];
        requesters.extend(rel.trigger_author.clone());
        if let Some(r) = &rollback {
            requesters = vec![r.requested_by.clone()];
        }
        Ok(Gate {
            environment: pr.environment.clone(),
            checks: self.store.checks(pr, &head).await?,
            head,
            built,
            requesters,
            pushers,
            head_pusher_unknown,
            extra_roles,
            approvals,
            roles,
            qa_coverage: rel.summary.qa_coverage,
            manual: rel.summary.needs_manual_approval(&pr.environment),
            held_by: pr.held_by.clone(),
        })
    }

    /// Decides one pull request; merges when the policy is met, on facts read afresh from the
    /// forge right before. True when it is merged.
    async fn evaluate(&self, rel: &ForgeRelease, pr: &mut ReleasePr) -> Result<bool, BotError> {
        // The merge turn (see `Bot::merging`): taken once the stored facts say merge, before
        // the fresh read, and held to the forge's answer.
        let mut merging = None;
        // A rebuild on a moved base changes the head: decide again on it (bounded, in case
        // people keep moving the base).
        for _ in 0..3 {
            let mut gate = self.gate(rel, pr, None, false).await?;
            let mut decision = policy::decide(&gate.facts(&self.config.policy));
            if decision == Decision::Merge {
                if merging.is_none() {
                    // Waiting for the turn, the job keeps its worker slot: at most `--jobs`
                    // jobs wait for it, each within its time limit. (Given back, every approval
                    // of a burst would queue for the turn at once and most would run out of
                    // time waiting: 15 of 500 merged in 7 minutes.)
                    merging = Some(self.merging.lock().await);
                    // The facts a merge is decided on are read under the turn: whatever was
                    // read before (by reconcile, or before a wait) may be stale by now,
                    // memberships this job read included.
                    self.forget_memberships_read_in_this_job();
                }
                // Decide on fresh facts: what the store holds came from webhooks, which may
                // be late, lost or forged by timing. Re-read the forge and the memberships
                // under the turn (again for each rebuilt head), and decide again.
                if !self.refresh(rel, pr).await? {
                    return Ok(pr.state == PrState::Merged);
                }
                gate = self.gate(rel, pr, None, true).await?;
                decision = policy::decide(&gate.facts(&self.config.policy));
            }
            let facts = gate.facts(&self.config.policy);
            let counted: Vec<String> = gate
                .approvals
                .iter()
                .filter(|a| policy::check_approval(&facts, a).is_ok())
                .map(|a| a.user.clone())
                .collect();
            let head = gate.head.clone();
            if pr.state == PrState::Scheduled {
                // The forge was asked to merge when its pipeline succeeds. While the policy
                // still allows it, leave it to the forge (its merge webhook moves the release
                // on) unless a check failed, which cancels the forge's merge: then try again
                // ourselves. When the policy no longer allows it, take the scheduled merge back.
                let failed = gate
                    .checks
                    .iter()
                    .any(|c| c.state == policy::CheckState::Failure);
                match decision {
                    Decision::Merge if !failed => return Ok(false),
                    Decision::Merge => {}
                    _ => {
                        self.forge
                            .cancel_scheduled_merge(
                                &self.settings.deployment_repo,
                                pr.pr_number.unwrap_or_default(),
                            )
                            .await?;
                    }
                }
                pr.state = PrState::Open;
                self.store.save_release_pr(pr).await?;
            }
            match decision {
                Decision::Merge => {
                    // The base moved under the release in a way that touches it: build it
                    // again on the base as it is, then decide on the new head.
                    // A new head is decided on facts read afresh.
                    if self.rebuild_if_base_moved(rel, pr).await? {
                        continue;
                    }
                    match self.merge(rel, pr, &gate, &counted, merging.take()).await? {
                        Merged::Yes => return Ok(true),
                        Merged::No => return Ok(false),
                        // The base moved between the look and the merge.
                        Merged::Conflict => {
                            if self.rebuild_if_base_moved(rel, pr).await? {
                                continue;
                            }
                            return Ok(false);
                        }
                    }
                }
                Decision::Wait(reasons) | Decision::Block(reasons) => {
                    drop(merging.take());
                    self.not_yet(rel, pr, &reasons, &counted, &head).await?;
                    return Ok(false);
                }
            }
        }
        // Its next event or the reconcile pass decides again.
        tracing::info!(release = %rel.version_tag, environment = %pr.environment, "the base branch kept moving under the release; it was not merged this time");
        Ok(false)
    }

    async fn merge(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        gate: &Gate,
        approvers: &[String],
        merging: Option<tokio::sync::MutexGuard<'_, ()>>,
    ) -> Result<Merged, BotError> {
        let head = gate.head.as_str();
        if rel.state != ReleaseState::Merging {
            self.transition(
                rel,
                ReleaseState::Merging,
                AuditEvent::ReleaseMerging,
                self.bot_login(),
                json!({"environment": pr.environment, "head": head, "approvers": approvers}),
            )
            .await?;
        }
        let rel = self.current(rel.release_id).await?.unwrap_or(rel.clone());
        let number = pr.pr_number.unwrap_or_default();
        let merged = self
            .forge
            .merge(
                &self.settings.deployment_repo,
                number,
                head,
                self.settings.merge_method,
            )
            .await;
        drop(merging);
        let sha = match merged {
            Ok(MergeOutcome::Merged(sha)) => sha,
            Ok(MergeOutcome::Scheduled) => {
                pr.state = PrState::Scheduled;
                self.store.save_release_pr(pr).await?;
                self.update_status(&rel, pr, &texts::scheduled_status(head))
                    .await?;
                return Ok(Merged::No);
            }
            Err(e) => {
                self.transition(
                    &rel,
                    ReleaseState::AwaitingApproval,
                    AuditEvent::ReleaseMergeFailed,
                    self.bot_login(),
                    json!({"environment": pr.environment, "error": e.to_string()}),
                )
                .await?;
                self.update_status(&rel, pr, &texts::merge_failed_status(&e.to_string()))
                    .await?;
                return match e {
                    e if e.is_retryable() => Err(e.into()),
                    ForgeError::Conflict(_) => Ok(Merged::Conflict),
                    _ => Ok(Merged::No),
                };
            }
        };
        tracing::info!(release = %rel.version_tag, environment = %pr.environment, pr = number, merge_commit = %sha, "merged");
        pr.state = PrState::Merged;
        pr.merge_commit = Some(sha.clone());
        self.merged_now(pr);
        self.store.save_release_pr(pr).await?;
        self.sign_approval_record(&rel, pr, gate, &sha, self.bot_login())
            .await?;
        self.audit(
            &rel,
            AuditEvent::ReleaseMerged,
            self.bot_login(),
            json!({"environment": pr.environment, "merge_commit": sha, "head": head, "approvers": approvers}),
        )
        .await?;
        self.update_status(&rel, pr, &texts::merged_status(&sha, approvers))
            .await?;
        self.after_merge(&rel, pr).await?;
        Ok(Merged::Yes)
    }

    /// After one environment merged: with Argo CD the release is `Deploying` (the next
    /// environment waits for it), without it the next one starts from `AwaitingApproval`.
    pub(super) async fn after_merge(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
    ) -> Result<(), BotError> {
        self.delete_merged_branch(rel, pr).await;
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        if pr.deploy == Some(crate::store::forge_releases::DeployState::Deploying) {
            return self.begin_deploying(&rel, pr).await;
        }
        self.next_environment(&rel, pr, ReleaseState::Merging).await
    }

    /// `pr`'s environment is done (merged; deployed, with Argo CD): if another environment
    /// waits, the release waits for its approval. Only from `from`: the state the release is in
    /// while that environment finishes.
    pub(super) async fn next_environment(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        from: ReleaseState,
    ) -> Result<(), BotError> {
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        if rel.state != from {
            return Ok(());
        }
        let more = self
            .store
            .release_prs(rel.release_id)
            .await?
            .iter()
            .any(|p| p.state == PrState::Waiting);
        if more {
            // The release so far is published (the tag once, a pre-release) before the next
            // environment opens; a clash fails it here, not after production.
            if self
                .publish(&rel, super::Stage::RollingOut)
                .await?
                .is_none()
            {
                return Ok(());
            }
            self.transition(
                &rel,
                ReleaseState::AwaitingApproval,
                AuditEvent::ReleaseNextEnvironment,
                self.bot_login(),
                json!({"after": pr.environment}),
            )
            .await?;
        }
        Ok(())
    }

    /// The pull request cannot merge yet: the release's state says what it waits for, and the
    /// status comment says why.
    async fn not_yet(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        reasons: &[policy::Reason],
        approvers: &[String],
        head: &str,
    ) -> Result<(), BotError> {
        let only_checks = reasons.iter().all(|r| {
            matches!(
                r,
                policy::Reason::CheckPending { .. } | policy::Reason::CheckMissing { .. }
            )
        });
        let want = if only_checks {
            ReleaseState::AwaitingChecks
        } else {
            ReleaseState::AwaitingApproval
        };
        if rel.state != want
            && matches!(
                rel.state,
                ReleaseState::AwaitingApproval
                    | ReleaseState::AwaitingChecks
                    | ReleaseState::Merging
            )
        {
            self.transition(
                rel,
                want,
                if want == ReleaseState::AwaitingChecks {
                    AuditEvent::ReleaseAwaitingChecks
                } else {
                    AuditEvent::ReleaseAwaitingApproval
                },
                self.bot_login(),
                json!({"environment": pr.environment, "reasons": reasons.iter().map(ToString::to_string).collect::<Vec<_>>()}),
            )
            .await?;
        }
        let text = reasons
            .iter()
            .find_map(|r| match r {
                policy::Reason::ForeignHead {
                    built,
                    head,
                    pushers,
                } => Some(texts::foreign_commits_status(built, head, pushers)),
                _ => None,
            })
            .unwrap_or_else(|| texts::waiting_status(reasons, approvers, head));
        self.update_status(rel, pr, &text).await
    }

    /// Deletes a merged release branch (best effort: a branch left behind harms nothing, so a
    /// failure is logged and the release goes on). Only while it is still at the merged head.
    async fn delete_merged_branch(&self, rel: &ForgeRelease, pr: &ReleasePr) {
        if !self.config.orchestration.deployment.delete_merged_branches {
            return;
        }
        let Some(head) = pr.head_commit.clone() else {
            return;
        };
        let deleted = async {
            let repo = self.deploy_repo().await?;
            Ok::<bool, BotError>(repo.delete_branch(&pr.branch, &head)?)
        }
        .await;
        match deleted {
            Ok(true) => {
                tracing::info!(release = %rel.version_tag, environment = %pr.environment, branch = %pr.branch, "merged release branch deleted")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(release = %rel.version_tag, branch = %pr.branch, error = %e, "the merged release branch could not be deleted; it stays")
            }
        }
    }
}
