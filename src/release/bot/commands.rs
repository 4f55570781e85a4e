//! Comments on release pull requests: the commands in them, and the approvals they give.
//!
//! An approval is an act by the comment's author at the time the forge says it was written. An
//! edit never creates one (GitHub lets anyone with write access edit other people's comments;
//! the edit's author is not the comment's), it may only withdraw one.

use serde_json::json;
use time::OffsetDateTime;

use super::{Bot, BotError, PrState, texts};
use crate::commands::{self, Command};
use crate::events::{self, Actor, CommentAction};
use crate::forge::Note;
use crate::policy::{ActKind, ApprovalAct};
use crate::release::state::AuditEvent;
use crate::store::forge_releases::{ForgeRelease, ReleasePr};

/// A comment as the bot reads it, from a webhook or from the forge's list.
pub(super) struct CommentFacts<'a> {
    pub id: u64,
    pub author: &'a Actor,
    pub body: &'a str,
    pub action: CommentAction,
    /// When the forge says the comment was written; `None` when it does not say.
    pub created_at: Option<OffsetDateTime>,
    /// When it was last edited, if ever.
    pub edited_at: Option<OffsetDateTime>,
}

impl<'a> CommentFacts<'a> {
    pub fn of_note(note: &'a Note) -> CommentFacts<'a> {
        CommentFacts {
            id: note.id,
            author: &note.author,
            body: &note.body,
            action: CommentAction::Edited,
            created_at: note.created_at,
            edited_at: note.updated_at.filter(|u| Some(*u) != note.created_at),
        }
    }
}

impl Bot {
    pub(super) async fn release_pr(
        &self,
        repo: &events::RepoRef,
        number: u64,
    ) -> Result<Option<ReleasePr>, BotError> {
        if !self.is_deployment_repo(repo) {
            return Ok(None);
        }
        let Some(pr) = self.store.release_pr_by_number(number).await? else {
            return Ok(None);
        };
        Ok(match self.claim(pr.release_id).await? {
            super::lanes::Claim::Held => Some(pr),
            // Taken after a wait: what another job did meanwhile counts.
            super::lanes::Claim::Taken => self.store.release_pr_by_number(number).await?,
        })
    }

    pub(super) async fn on_comment(&self, c: &events::Comment) -> Result<(), BotError> {
        if !c.on_pull_request || c.author.login.eq_ignore_ascii_case(self.bot_login()) {
            return Ok(());
        }
        let Some(pr) = self.release_pr(&c.repo, c.number).await? else {
            return Ok(());
        };
        let facts = CommentFacts {
            id: c.comment_id,
            author: &c.author,
            body: &c.body,
            action: c.action,
            created_at: c.created_at,
            edited_at: match c.action {
                CommentAction::Created => None,
                _ => Some(c.updated_at.unwrap_or_else(|| self.now())),
            },
        };
        self.apply_comment(&pr, &facts).await?;
        self.advance(pr.release_id, false).await
    }

    /// Carries out the commands of one comment (once per version of its text) and records
    /// the approval it gives or takes back.
    pub(super) async fn apply_comment(
        &self,
        pr: &ReleasePr,
        c: &CommentFacts<'_>,
    ) -> Result<(), BotError> {
        let source = format!("comment:{}", c.id);
        let parsed = if c.action == CommentAction::Deleted {
            Vec::new()
        } else {
            commands::parse_comment(c.body)
        };
        let approves = parsed.iter().any(|p| matches!(p, Ok(Command::Approve)));
        if !approves {
            // Deleted, or edited so that it no longer approves: the approval it gave goes.
            let at = c.edited_at.unwrap_or_else(|| self.now());
            self.withdraw_source(pr, &source, c.author, at).await?;
        }
        if c.action == CommentAction::Deleted || parsed.is_empty() {
            return Ok(());
        }
        let body_sha = super::notes::sha_hex(c.body);
        if self.store.comment_handled(c.id, &body_sha).await? {
            return Ok(()); // this text was acted on before (a redelivery, or reconcile)
        }
        let Some(rel) = self.store.forge_release(pr.release_id).await? else {
            return Ok(());
        };
        let number = pr.pr_number.unwrap_or_default();
        let mut pr = pr.clone();
        let login = c.author.login.as_str();
        let written_at = c.created_at.unwrap_or_else(|| self.now());
        let mut replies = Vec::new();
        for command in parsed {
            let command = match command {
                Ok(command) => command,
                Err(e) => {
                    tracing::info!(release = %rel.version_tag, environment = %pr.environment, pr = number, user = login, why = %e, "comment not understood");
                    replies.push(texts::command_error(login, &e.to_string()));
                    continue;
                }
            };
            // An edit is not its author's act (GitHub lets anyone with write access edit any
            // comment, and the edit's webhook names the comment's author): edited text gives no
            // command. An approval it gave before stays until the text takes it back.
            if c.edited_at.is_some() && command != Command::Help {
                if command == Command::Approve && self.store.source_approved(&pr, &source).await? {
                    continue;
                }
                replies.push(texts::edited_command(login, command));
                continue;
            }
            if let Some(who_may) = self.may_give(&rel, &pr, login, command).await? {
                tracing::info!(release = %rel.version_tag, environment = %pr.environment, pr = number, user = login, command = ?command, "command refused: {who_may}");
                replies.push(texts::command_refused(login, command, who_may));
                continue;
            }
            match command {
                Command::Approve => {
                    let head = self.head_at(&pr, c.created_at).await?;
                    let act = ApprovalAct {
                        user: login.to_string(),
                        user_is_bot: c.author.is_bot,
                        source: source.clone(),
                        kind: ActKind::Approve,
                        head,
                        at: written_at,
                    };
                    let refused = self.approval_refusal(&rel, &pr, &act).await?;
                    self.record_act(&rel, &pr, &act, refused.as_deref()).await?;
                    if let Some(why) = refused {
                        replies.push(texts::approval_refused(login, &why));
                    }
                }
                Command::ApproveCancel => {
                    let act = ApprovalAct {
                        user: login.to_string(),
                        user_is_bot: c.author.is_bot,
                        source: source.clone(),
                        kind: ActKind::Withdraw,
                        head: None,
                        at: written_at,
                    };
                    self.record_act(&rel, &pr, &act, None).await?;
                    replies.push(texts::approval_withdrawn(login));
                }
                Command::Hold => {
                    if pr.held_by.is_some() {
                        continue; // held already (perhaps by this comment, in an attempt that failed later)
                    }
                    pr.held_by = Some(login.to_string());
                    self.store.save_release_pr(&pr).await?;
                    self.audit(
                        &rel,
                        AuditEvent::ReleaseHeld,
                        login,
                        json!({"environment": pr.environment}),
                    )
                    .await?;
                }
                Command::Unhold => {
                    if pr.held_by.is_none() {
                        continue;
                    }
                    pr.held_by = None;
                    self.store.save_release_pr(&pr).await?;
                    self.audit(
                        &rel,
                        AuditEvent::ReleaseUnheld,
                        login,
                        json!({"environment": pr.environment}),
                    )
                    .await?;
                }
                Command::Cancel if self.rollback_of(&rel, &pr).await?.is_some() => {
                    self.abandon_rollback(&rel, &mut pr, login, "cancelled with /cancel")
                        .await?;
                    self.forge
                        .close_change_request(&self.settings.deployment_repo, number)
                        .await?;
                    // The abandoned rollback's note is the answer.
                }
                Command::Cancel => {
                    self.abort(&rel, login, "cancelled with /cancel").await?;
                    self.forge
                        .close_change_request(&self.settings.deployment_repo, number)
                        .await?;
                    pr.state = PrState::Closed;
                    self.store.save_release_pr(&pr).await?;
                    replies.push(texts::cancelled(&rel.version_tag, login));
                }
                // Nothing goes on from a final state: said, rather than "trying again".
                Command::Retry if rel.state.is_final() => {
                    replies.push(texts::nothing_to_retry(&rel.version_tag, rel.state));
                }
                Command::Retry => {
                    self.retry(&rel, &mut pr, login).await?;
                    replies.push(texts::retrying());
                }
                Command::Rollback => {
                    let reason = commands::rollback_reason(c.body).unwrap_or_default();
                    let reply = match self.roll_back(&rel, &pr, login, &reason, false).await? {
                        super::rollback::RollbackOutcome::Opened => texts::rollback_opened(
                            login,
                            &pr.environment,
                            self.has_rollback_rule(&pr.environment),
                        ),
                        super::rollback::RollbackOutcome::AlreadyRequested => {
                            texts::rollback_already(&pr.environment)
                        }
                        super::rollback::RollbackOutcome::Refused(why) => {
                            texts::rollback_refused(login, &why)
                        }
                    };
                    replies.push(reply);
                }
                Command::Help => replies.push(commands::help_text()),
            }
        }
        if !replies.is_empty() {
            let key = format!("reply:{}:{}", c.id, &body_sha[..16]);
            self.post_note_once(number, &key, &replies.join("\n\n"))
                .await?;
        }
        // Only now is this text done with: a failure above leaves it to be tried again (every
        // step above is idempotent), where marking it first would have dropped it for good.
        self.store.mark_comment_handled(c.id, &body_sha).await?;
        Ok(())
    }

    /// `None` when `login` may give `command` on this release, else who may.
    async fn may_give(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        login: &str,
        command: Command,
    ) -> Result<Option<&'static str>, BotError> {
        // A rollback pull request is the business of the environment's rollback roles and of
        // whoever asked for it, not of the release's requester.
        if let Some(r) = self.rollback_of(rel, pr).await?
            && matches!(command, Command::Cancel | Command::Hold | Command::Retry)
        {
            let allowed = r.requested_by.eq_ignore_ascii_case(login)
                || self.holds_rollback_role(&r.environment, login).await?;
            return Ok((!allowed).then_some(
                "only whoever asked for this rollback or a holder of one of the environment's `rollbackRoles` may",
            ));
        }
        let requester = rel.is_requester(login);
        let who_may = match command {
            Command::Approve | Command::ApproveCancel | Command::Help => return Ok(None),
            // Only the environment's `rollbackRoles`, read afresh: the requester of the release
            // has no say over rolling it back.
            // On a rollback pull request, `/rollback` is answered by what it is (see
            // `roll_back`), whoever gives it.
            Command::Rollback
                if crate::store::forge_releases::rolled_back_environment(&pr.environment)
                    .is_some() =>
            {
                return Ok(None);
            }
            Command::Rollback => {
                return Ok(if self.holds_rollback_role(&pr.environment, login).await? {
                    None
                } else {
                    Some(
                        "only a holder of one of this environment's `rollbackRoles` (release-policy.yaml) may roll it back",
                    )
                });
            }
            Command::Hold | Command::Cancel | Command::Retry if requester => return Ok(None),
            Command::Hold => {
                "only the requester or a holder of a role of this environment may hold it"
            }
            Command::Cancel => {
                "only the requester or a holder of a role of this environment may cancel it"
            }
            Command::Retry => {
                "only the requester or a holder of a role of this environment may retry it"
            }
            Command::Unhold
                if pr
                    .held_by
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(login)) =>
            {
                return Ok(None);
            }
            Command::Unhold => {
                "only whoever held it or a holder of a role of this environment may lift the hold"
            }
        };
        if self.holds_environment_role(&pr.environment, login).await? {
            return Ok(None);
        }
        Ok(Some(who_may))
    }

    /// Records an act in the append-only ledger (once: the same act read again is a no-op),
    /// and audits and logs it. `refused`: why an approval does not count, as the policy reads
    /// it when given (the merge decision reads it again).
    pub(super) async fn record_act(
        &self,
        rel: &ForgeRelease,
        pr: &ReleasePr,
        act: &ApprovalAct,
        refused: Option<&str>,
    ) -> Result<(), BotError> {
        if self.store.record_act(pr, act).await? {
            let (event, mut detail) = match act.kind {
                ActKind::Approve => (
                    AuditEvent::ApprovalRecorded,
                    json!({"counts": refused.is_none(), "refused": refused}),
                ),
                ActKind::Withdraw => (AuditEvent::ApprovalWithdrawn, json!({})),
            };
            detail["environment"] = json!(pr.environment);
            detail["source"] = json!(act.source);
            detail["head"] = json!(act.head);
            detail["at"] = json!(crate::store::ts(act.at));
            let message = match (act.kind, refused) {
                (ActKind::Withdraw, _) => "approval withdrawn".to_string(),
                (ActKind::Approve, None) => "approval recorded".to_string(),
                (ActKind::Approve, Some(why)) => format!("approval does not count: {why}"),
            };
            tracing::info!(release = %rel.version_tag, environment = %pr.environment, pr = pr.pr_number, user = %act.user, source = %act.source, "{message}");
            self.audit(rel, event, &act.user, detail).await?;
        }
        Ok(())
    }

    /// Withdraws what `source` approved, if its latest act approves (so re-reading a deleted
    /// or edited comment withdraws once).
    pub(super) async fn withdraw_source(
        &self,
        pr: &ReleasePr,
        source: &str,
        author: &Actor,
        at: OffsetDateTime,
    ) -> Result<(), BotError> {
        if !self.store.source_approved(pr, source).await? {
            return Ok(());
        }
        let Some(rel) = self.store.forge_release(pr.release_id).await? else {
            return Ok(());
        };
        let act = ApprovalAct {
            user: author.login.clone(),
            user_is_bot: author.is_bot,
            source: source.to_string(),
            kind: ActKind::Withdraw,
            head: None,
            at,
        };
        self.record_act(&rel, pr, &act, None).await
    }
}
