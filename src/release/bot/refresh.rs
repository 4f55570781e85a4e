//! Reading the forge again: the pull request, its comments, reviews and checks (on a reconcile
//! pass, and right before a merge), and a merge the bot finds made rather than makes.

use std::collections::BTreeSet;

use serde_json::json;

use super::commands::CommentFacts;
use super::{Bot, BotError, PrState, texts};
use crate::commands;
use crate::events;
use crate::forge::ChangeState;
use crate::policy::{self, ActKind};
use crate::release::state::{AuditEvent, ReleaseState};
use crate::store::forge_releases::{ForgeRelease, ReleasePr};

impl Bot {
    /// Reads the pull request, its comments, reviews and checks from the forge. False when the
    /// pull request is no longer open (merged or closed: recorded).
    pub(super) async fn refresh(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
    ) -> Result<bool, BotError> {
        let repo = &self.settings.deployment_repo;
        let Some(number) = pr.pr_number else {
            return Ok(true);
        };
        let cr = self.forge.change_request(repo, number).await?;
        match cr.state {
            ChangeState::Merged => {
                // Who merged it, as the forge says (not known: not taken to be the bot).
                let by = cr
                    .merged_by
                    .clone()
                    .unwrap_or_else(|| "unknown".to_string());
                let by_hand = !by.eq_ignore_ascii_case(self.bot_login());
                self.merged_found(
                    pr,
                    &cr.head_commit,
                    cr.merge_commit.as_deref(),
                    &by,
                    by_hand,
                )
                .await?;
                return Ok(false);
            }
            ChangeState::Closed => {
                pr.state = PrState::Closed;
                self.store.save_release_pr(pr).await?;
                self.abort(
                    rel,
                    self.bot_login(),
                    "its pull request was closed without merging",
                )
                .await?;
                return Ok(false);
            }
            ChangeState::Open => self.new_head(pr, &cr.head_commit, None, true).await?,
        }
        let notes = self.forge.notes(repo, number).await?;
        let present: BTreeSet<String> = notes.iter().map(|n| format!("comment:{}", n.id)).collect();
        for act in self.store.acts(pr).await? {
            if act.source.starts_with("comment:")
                && !present.contains(&act.source)
                && act.kind == ActKind::Approve
            {
                let author = events::Actor {
                    login: act.user.clone(),
                    is_bot: act.user_is_bot,
                };
                let at = self.now();
                self.withdraw_source(pr, &act.source, &author, at).await?; // deleted
            }
        }
        let known: BTreeSet<String> = self
            .store
            .acts(pr)
            .await?
            .into_iter()
            .map(|a| a.source)
            .collect();
        for note in &notes {
            if note.author.login.eq_ignore_ascii_case(self.bot_login()) {
                if pr.status_comment_id.is_none() && note.body.starts_with(texts::STATUS_MARKER) {
                    pr.status_comment_id = Some(note.id);
                    self.store.save_release_pr(pr).await?;
                }
                continue;
            }
            // Most comments are conversation: nothing to do unless they hold a command or
            // once gave an approval that their current text may have taken back.
            let source = format!("comment:{}", note.id);
            if !known.contains(&source) && commands::parse_comment(&note.body).is_empty() {
                continue;
            }
            self.apply_comment(pr, &CommentFacts::of_note(note)).await?;
        }
        // A command found on the way (a `/hold` whose webhook was lost) changed the stored
        // pull request: decide on that, not on the copy read before.
        if let Some(stored) = self.store.release_pr_by_number(number).await? {
            *pr = stored;
        }
        let reviews = self.forge.reviews(repo, number).await?;
        let listed: BTreeSet<&str> = reviews.iter().map(|r| r.source.as_str()).collect();
        for act in self.store.acts(pr).await? {
            // A GitLab approval taken back while its webhook was lost.
            if act.source.starts_with("approval:")
                && act.kind == ActKind::Approve
                && !listed.contains(act.source.as_str())
            {
                let author = events::Actor {
                    login: act.user.clone(),
                    is_bot: act.user_is_bot,
                };
                let at = self.now();
                self.withdraw_source(pr, &act.source, &author, at).await?;
            }
        }
        for r in &reviews {
            // A GitLab approval already recorded from its webhook is the same act.
            if r.source.starts_with("approval:")
                && self.store.source_approved(pr, &r.source).await?
            {
                continue;
            }
            self.apply_review(pr, r).await?;
        }
        if let Some(env) = self.env_policy(&pr.environment)
            && !env.required_checks.is_empty()
        {
            let kinds = crate::forge::CheckKinds::of(&env.required_checks);
            for check in self.forge.checks(repo, &cr.head_commit, kinds).await? {
                self.store.set_check(pr, &cr.head_commit, &check).await?;
            }
        }
        Ok(true)
    }

    /// Records a pull request found merged (by a person, by the forge on the bot's request, or
    /// by the bot's own merge whose answer was lost) like one the bot merged.
    pub(super) async fn merged_found(
        &self,
        pr: &mut ReleasePr,
        head: &str,
        merge_commit: Option<&str>,
        actor: &str,
        by_hand: bool,
    ) -> Result<(), BotError> {
        if pr.state == PrState::Merged {
            return Ok(());
        }
        let Some(rel) = self.store.forge_release(pr.release_id).await? else {
            return Ok(());
        };
        // What was known when it merged (the gate's facts before the state changes).
        pr.head_commit = Some(head.to_string());
        let gate = self.gate(&rel, pr, None, false).await?;
        pr.state = PrState::Merged;
        if merge_commit.is_some() {
            pr.merge_commit = merge_commit.map(str::to_string);
        } else if pr.merge_commit.is_none()
            && let Some(number) = pr.pr_number
        {
            // A merge learned from a webhook (by hand, or the forge's scheduled merge) does not
            // say its commit; watching the deployment and rolling back both need it.
            pr.merge_commit = self
                .forge
                .change_request(&self.settings.deployment_repo, number)
                .await?
                .merge_commit;
        }
        self.merged_now(pr);
        self.store.save_release_pr(pr).await?;
        if matches!(
            rel.state,
            ReleaseState::AwaitingApproval | ReleaseState::AwaitingChecks
        ) {
            self.transition(
                &rel,
                ReleaseState::Merging,
                AuditEvent::ReleaseMerging,
                actor,
                json!({"environment": pr.environment, "head": head, "found": true}),
            )
            .await?;
        }
        let rel = self.current(rel.release_id).await?.unwrap_or(rel);
        let merged = pr.merge_commit.clone().unwrap_or_else(|| head.to_string());
        self.sign_approval_record(&rel, pr, &gate, &merged, actor)
            .await?;
        let unmet: Vec<String> = match policy::decide(&gate.facts(&self.config.policy)) {
            policy::Decision::Merge => Vec::new(),
            policy::Decision::Wait(r) | policy::Decision::Block(r) => {
                r.iter().map(ToString::to_string).collect()
            }
        };
        self.audit(
            &rel,
            AuditEvent::ReleaseMerged,
            actor,
            json!({"environment": pr.environment, "merge_commit": pr.merge_commit, "by_hand": by_hand, "found": true, "policy_met": unmet.is_empty(), "unmet": unmet}),
        )
        .await?;
        if pr.pr_number.is_some() {
            let text = texts::merged_found_status(pr.merge_commit.as_deref().unwrap_or(head));
            self.update_status(&rel, pr, &text).await?;
        }
        self.after_merge(&rel, pr).await
    }
}
