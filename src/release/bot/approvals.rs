//! Reviews, approvals, heads and checks of release pull requests, from webhooks and from
//! re-reading the forge.
//!
//! Every approval is bound to the head that was current when it was given, by the forge's
//! timestamp against the branch's push history; an approval whose time or head cannot be told
//! binds to nothing and does not count (closed, never open).

use std::collections::BTreeSet;

use serde_json::json;
use time::OffsetDateTime;

use super::{Bot, BotError, PrState, texts};
use crate::events::{self, PullRequestAction, ReviewState};
use crate::forge::ReviewInfo;
use crate::policy::{self, ActKind, ApprovalAct};
use crate::release::state::AuditEvent;
use crate::store::forge_releases::{ForgeRelease, ReleasePr, UNKNOWN_PUSHER};

impl Bot {
    pub(super) async fn on_review(&self, r: &events::Review) -> Result<(), BotError> {
        let Some(pr) = self.release_pr(&r.repo, r.number).await? else {
            return Ok(());
        };
        let info = ReviewInfo {
            source: format!("review:{}", r.review_id),
            author: r.author.clone(),
            state: r.state,
            commit: r.commit.clone(),
            at: r.submitted_at,
        };
        self.apply_review(&pr, &info).await?;
        self.advance(pr.release_id, false).await
    }

    /// Records what a review or approval (`review:<id>`, `approval:<user>`) means.
    pub(super) async fn apply_review(
        &self,
        pr: &ReleasePr,
        r: &ReviewInfo,
    ) -> Result<(), BotError> {
        let Some(rel) = self.store.forge_release(pr.release_id).await? else {
            return Ok(());
        };
        match r.state {
            ReviewState::Approved => {
                // An approval the forge does not date (GitLab's approvals API) is taken to be
                // as old as it can be, so that any act known to come later (a withdrawal)
                // outranks it, never the other way round.
                let at = r.at.unwrap_or(OffsetDateTime::UNIX_EPOCH);
                // GitHub says which commit a review was given on; GitLab's approvals do not,
                // so the push history does, from the time of the approval.
                let head = if r.commit.is_empty() {
                    self.head_at(pr, r.at).await?
                } else {
                    Some(r.commit.clone())
                };
                let act = ApprovalAct {
                    user: r.author.login.clone(),
                    user_is_bot: r.author.is_bot,
                    source: r.source.clone(),
                    kind: ActKind::Approve,
                    head,
                    at,
                };
                if self.store.has_act(pr, &act).await? {
                    return Ok(());
                }
                let refused = self.approval_refusal(&rel, pr, &act).await?;
                self.record_act(&rel, pr, &act, refused.as_deref()).await?;
                if let Some(why) = refused
                    && let Some(number) = pr.pr_number
                {
                    let key = format!("refused:{}:{}", r.source, crate::store::ts(at));
                    self.post_note_once(
                        number,
                        &key,
                        &texts::approval_refused(&r.author.login, &why),
                    )
                    .await?;
                }
            }
            ReviewState::ChangesRequested | ReviewState::Dismissed => {
                let at = r.at.unwrap_or_else(|| self.now());
                if r.state == ReviewState::Dismissed {
                    self.withdraw_source(pr, &r.source, &r.author, at).await?;
                } else {
                    let act = ApprovalAct {
                        user: r.author.login.clone(),
                        user_is_bot: r.author.is_bot,
                        source: r.source.clone(),
                        kind: ActKind::Withdraw,
                        head: None,
                        at,
                    };
                    self.record_act(&rel, pr, &act, None).await?;
                }
            }
            ReviewState::Commented => {}
        }
        Ok(())
    }

    pub(super) async fn on_pull_request(&self, p: &events::PullRequest) -> Result<(), BotError> {
        let Some(mut pr) = self.release_pr(&p.repo, p.number).await? else {
            return Ok(());
        };
        match p.action {
            PullRequestAction::Synchronize => {
                self.new_head(&mut pr, &p.head_commit, p.at, true).await?;
            }
            // GitLab's approve button: one approval per user, on the head it was given on.
            PullRequestAction::Approved | PullRequestAction::Unapproved => {
                let state = if p.action == PullRequestAction::Approved {
                    ReviewState::Approved
                } else {
                    ReviewState::Dismissed
                };
                let info = ReviewInfo {
                    source: approval_source(&p.actor.login),
                    author: p.actor.clone(),
                    state,
                    commit: String::new(),
                    at: p.at,
                };
                self.apply_review(&pr, &info).await?;
            }
            // Merged by someone else (or by the forge itself, when the bot asked it to merge
            // once its pipeline succeeds): the forge is the truth.
            PullRequestAction::Closed if p.merged && pr.state != PrState::Merged => {
                let by_hand = !p.actor.login.eq_ignore_ascii_case(self.bot_login());
                self.merged_found(&mut pr, &p.head_commit, None, &p.actor.login, by_hand)
                    .await?;
            }
            PullRequestAction::Closed if p.merged => {}
            PullRequestAction::Closed => {
                if pr.state.is_open()
                    && let Some(rel) = self.store.forge_release(pr.release_id).await?
                    && self.rollback_of(&rel, &pr).await?.is_some()
                {
                    // A rollback closed unmerged is abandoned; the release stays as it is.
                    return self
                        .abandon_rollback(
                            &rel,
                            &mut pr,
                            &p.actor.login,
                            "its pull request was closed without merging",
                        )
                        .await;
                }
                if pr.state.is_open() {
                    pr.state = PrState::Closed;
                    self.store.save_release_pr(&pr).await?;
                    if let Some(rel) = self.store.forge_release(pr.release_id).await? {
                        self.abort(
                            &rel,
                            &p.actor.login,
                            "its pull request was closed without merging",
                        )
                        .await?;
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        self.advance(pr.release_id, false).await
    }

    /// A push to the deployment repository: on a release branch, it is recorded in the branch's
    /// push history (who pushed which head, when).
    pub(super) async fn on_release_branch_push(&self, p: &events::Push) -> Result<(), BotError> {
        let Some(mut pr) = self.store.release_pr_by_branch(&p.branch).await? else {
            return Ok(());
        };
        if self.claim(pr.release_id).await? == super::lanes::Claim::Taken {
            match self.store.release_pr_by_branch(&p.branch).await? {
                Some(again) => pr = again,
                None => return Ok(()),
            }
        }
        // The bot's own pushes are the bot's; another bot's cannot be put down to a person.
        let pusher = if p.pusher.login.eq_ignore_ascii_case(self.bot_login()) {
            None
        } else if p.pusher.is_bot {
            Some(UNKNOWN_PUSHER)
        } else {
            Some(p.pusher.login.as_str())
        };
        let since = p.pushed_at.unwrap_or_else(|| self.now());
        // A push on top of a head the bot never saw: someone pushed in between, unknown who.
        let known = self.store.heads(&pr).await?;
        if known.last().is_some_and(|h| h.commit != p.before)
            && !known.iter().any(|h| h.commit == p.before)
        {
            self.store
                .record_head(&pr, &p.before, since, Some(UNKNOWN_PUSHER))
                .await?;
        }
        self.store.record_head(&pr, &p.after, since, pusher).await?;
        if pr.state.is_open() {
            self.new_head(&mut pr, &p.after, Some(since), true).await?;
            return self.advance(pr.release_id, false).await;
        }
        Ok(())
    }

    /// The pull request's head moved: approvals given on the old head no longer count, and
    /// the people who gave them are told. `since`: when the forge says it moved, if known.
    pub(super) async fn new_head(
        &self,
        pr: &mut ReleasePr,
        head: &str,
        since: Option<OffsetDateTime>,
        announce_stale: bool,
    ) -> Result<(), BotError> {
        if pr.head_commit.as_deref() == Some(head) {
            return Ok(());
        }
        // When it is not known when the head moved, it is taken to have moved now: approvals
        // given in between bind to the earlier head, never to one they did not see.
        let since = since.unwrap_or_else(|| self.now());
        // Who pushed it is known only from its push webhook (which fills this in).
        self.store
            .record_head(pr, head, since, Some(UNKNOWN_PUSHER))
            .await?;
        let old = pr.head_commit.replace(head.to_string());
        self.store.save_release_pr(pr).await?;
        let Some(rel) = self.store.forge_release(pr.release_id).await? else {
            return Ok(());
        };
        let built = self.built_head(pr, Some(head)).await?.unwrap_or_default();
        if head != built {
            let pusher = self.store.head_pusher(pr, head).await?;
            self.audit(
                &rel,
                AuditEvent::ReleaseBranchForeignCommits,
                pusher.as_deref().unwrap_or("unknown"),
                json!({"environment": pr.environment, "head": head, "built": built, "pusher": pusher}),
            )
            .await?;
        }
        // The approvals that counted on the earlier head (not the refused ones) go stale.
        let gate = self.gate(&rel, pr, None, false).await?;
        let facts = gate.facts(&self.config.policy);
        let stale: BTreeSet<String> = gate
            .approvals()
            .iter()
            .filter(|a| a.commit != head && !a.commit.is_empty())
            .filter(|a| {
                let then = policy::Facts {
                    head_commit: &a.commit,
                    ..facts.clone()
                };
                policy::check_approval(&then, a).is_ok()
            })
            .map(|a| a.user.clone())
            .collect();
        if announce_stale
            && !stale.is_empty()
            && let Some(number) = pr.pr_number
        {
            let list: Vec<String> = stale.into_iter().collect();
            self.post_note_once(
                number,
                &format!("stale:{head}"),
                &texts::stale_approvals(head, old.as_deref().unwrap_or("?"), &list),
            )
            .await?;
        }
        Ok(())
    }

    /// The head of the pull request at `at`, by its push history; `None` when it cannot be
    /// told: no time given and the branch had more than one head, or the head changed in the
    /// very second the approval was given (the forges date to the second).
    pub(super) async fn head_at(
        &self,
        pr: &ReleasePr,
        at: Option<OffsetDateTime>,
    ) -> Result<Option<String>, BotError> {
        let heads = self.store.heads(pr).await?;
        Ok(head_at(&heads, at))
    }

    pub(super) async fn on_check(&self, c: &events::Check) -> Result<(), BotError> {
        if !self.is_deployment_repo(&c.repo) {
            return Ok(());
        }
        let mut prs = self.store.release_prs_by_head(&c.commit).await?;
        // Lanes are claimed in ascending order of release (see the lanes' notes).
        prs.sort_by_key(|p| p.release_id);
        let mut not_held = None;
        for pr in prs {
            // A release whose lane this job does not hold (the head was pushed to its branch
            // after the event was placed) is left to the delivery's next attempt, placed anew.
            let held = match self.claim(pr.release_id).await {
                Ok(_) => true,
                Err(BotError::OtherLane(r)) => {
                    not_held = Some(r);
                    false
                }
                Err(e) => return Err(e),
            };
            if !held {
                continue;
            }
            for check in &c.results {
                self.store.set_check(&pr, &c.commit, check).await?;
            }
            self.advance(pr.release_id, false).await?;
        }
        if let Some(r) = not_held {
            return Err(BotError::OtherLane(r));
        }
        Ok(())
    }

    /// Why an approval act does not count, if it does not (told to its author).
    pub(super) async fn approval_refusal(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        act: &ApprovalAct,
    ) -> Result<Option<String>, BotError> {
        let gate = self.gate(rel, pr, Some(&act.user), false).await?;
        let approval = act.as_approval();
        Ok(
            policy::check_approval(&gate.facts(&self.config.policy), &approval)
                .err()
                .map(|r| r.to_string()),
        )
    }
}

/// The head current at `at` in a push history (oldest first); see [`Bot::head_at`].
fn head_at(
    heads: &[crate::store::forge_releases::HeadRecord],
    at: Option<OffsetDateTime>,
) -> Option<String> {
    match at {
        None if heads.len() == 1 => Some(heads[0].commit.clone()),
        None => None,
        // The forges date to the second: compare whole seconds, and a head that changed in
        // the approval's second leaves it unbound.
        Some(at) => {
            let second = |t: OffsetDateTime| t.unix_timestamp();
            if heads.iter().any(|h| second(h.since) == second(at)) {
                return None;
            }
            heads
                .iter()
                .rev()
                .find(|h| second(h.since) < second(at))
                .map(|h| h.commit.clone())
        }
    }
}

/// The source key of a GitLab approval: one per user and merge request.
fn approval_source(login: &str) -> String {
    format!("approval:{}", login.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::forge_releases::HeadRecord;

    #[test]
    fn an_approval_binds_to_the_head_of_its_time_and_to_none_when_that_is_unclear() {
        let t = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_000 + s);
        let head = |id, commit: &str, since| HeadRecord {
            id,
            commit: commit.into(),
            since,
            pusher: None,
            same_change_as: None,
        };
        let history = vec![
            head(1, "built", OffsetDateTime::UNIX_EPOCH),
            head(2, "theirs", t(10)),
            head(3, "built", t(20)),
        ];
        assert_eq!(head_at(&history, Some(t(5))).as_deref(), Some("built"));
        assert_eq!(head_at(&history, Some(t(15))).as_deref(), Some("theirs"));
        assert_eq!(head_at(&history, Some(t(25))).as_deref(), Some("built"));
        assert_eq!(
            head_at(&history, Some(t(10))),
            None,
            "the same second as a push"
        );
        assert_eq!(head_at(&history, None), None, "no time, several heads");
        assert_eq!(
            head_at(&history[..1], None).as_deref(),
            Some("built"),
            "no time, one head ever"
        );
    }
}
