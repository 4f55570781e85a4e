//! The end of a release: every environment merged, the tag pushed and the forge release
//! published; or the release failed after merging, aborted, or out of time.

use serde_json::json;

use super::{Bot, BotError, PrState, texts};
use crate::forge::{ForgeError, PublishedRelease};
use crate::git::TagPush;
use crate::release::state::{AuditEvent, ReleaseState};
use crate::store::forge_releases::{ForgeRelease, ReleasePr};

/// How far a release has gone, as its forge release says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Some environments are done, others not yet: a pre-release.
    RollingOut,
    /// A later environment's deployment failed: a pre-release, named so.
    Failed,
    Complete,
    RolledBack,
}

impl Bot {
    /// Every environment is done: the release is published as complete.
    pub(super) async fn finish(&self, rel: &ForgeRelease) -> Result<(), BotError> {
        if rel.state != ReleaseState::Documenting {
            self.transition(
                rel,
                ReleaseState::Documenting,
                AuditEvent::ReleaseDocumenting,
                self.bot_login(),
                json!({}),
            )
            .await?;
        }
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        let Some(url) = self.publish(&rel, Stage::Complete).await? else {
            return Ok(()); // failed, and said so
        };
        self.transition(
            &rel,
            ReleaseState::Completed,
            AuditEvent::ReleaseCompleted,
            self.bot_login(),
            json!({"tag": self.tag_of(&rel), "release_url": url}),
        )
        .await
    }

    fn tag_of(&self, rel: &ForgeRelease) -> String {
        rel.summary
            .git_tag
            .clone()
            .unwrap_or_else(|| rel.version_tag.clone())
    }

    /// Publishes the release as far as it has gone: the application tag (made once, when the
    /// first environment is done) and the forge release, a pre-release until the last
    /// environment is done, its notes listing each environment with its outcome and time.
    /// `None`: the release failed on the way (someone else's tag or release), and said so.
    pub(super) async fn publish(
        &self,
        rel: &ForgeRelease,
        stage: Stage,
    ) -> Result<Option<String>, BotError> {
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(None);
        };
        let tag = self.tag_of(&rel);
        let records = self.store.approval_records(rel.release_id).await?;
        let blocks: String = records.iter().map(crate::signing::record_block).collect();
        let prs = self.store.release_prs(rel.release_id).await?;
        if !rel.tagged {
            // The tag carries the record of the environments done when it is made (the first);
            // the forge release's notes carry every one as the rollout goes on.
            let message = texts::tag_message(&rel.version_tag, &blocks);
            // The annotated tag is pushed with git, which no forge counts against its API
            // rate limit; a tag already there on this commit (an earlier attempt) is fine.
            let app = self.open_app_repo(&rel.app_repo).await?;
            let commit = app.fetch_any_commit(&rel.app_commit)?;
            let deployment = &self.config.orchestration.deployment;
            // Dated with the release, so that every attempt makes the same tag object: a tag
            // found on the remote is this one, or someone else's.
            let dated = self
                .store
                .find_release(&rel.version_tag)
                .await?
                .map(|r| r.created_at)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            match app.push_tag(
                &tag,
                commit,
                &message,
                (&deployment.author_name, &deployment.author_email),
                dated,
            )? {
                TagPush::Created | TagPush::Existed => {}
                // Someone else's tag of that name: nothing the bot may fix on its own.
                TagPush::Clash(other) => {
                    let why = format!(
                        "the tag {tag} already exists in {} and is not the bot's (it is {})",
                        rel.app_repo,
                        texts::short(&other)
                    );
                    self.fail(&rel, &why).await?;
                    return Ok(None);
                }
            }
        }
        let rollout = texts::rollout(&prs);
        let name = texts::release_name(&rel.version_tag, stage);
        let body = texts::release_notes(&rel.summary.release_notes, &blocks, &rollout, &tag);
        let published = self
            .forge
            .publish_release(
                &rel.app_repo,
                &PublishedRelease {
                    tag: &tag,
                    name: &name,
                    body: &body,
                    prerelease: stage != Stage::Complete,
                },
                rel.tagged,
            )
            .await;
        let url = match published {
            Ok(url) => url,
            Err(ForgeError::Conflict(why)) => {
                self.fail(&rel, &why).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if !rel.tagged {
            tracing::info!(release = %rel.version_tag, tag = %tag, repo = %rel.app_repo, url = %url, "tagged and published");
            self.store.mark_tagged(rel.release_id, Some(&url)).await?;
        }
        Ok(Some(url))
    }

    /// The release cannot be completed without a person: recorded as `Failed` with the reason,
    /// which is also posted on its last pull request.
    async fn fail(&self, rel: &ForgeRelease, why: &str) -> Result<(), BotError> {
        self.fail_with(rel, why, &texts::failed_after_merge(&rel.version_tag, why))
            .await
    }

    /// [`Bot::fail`], saying `note` on the last pull request.
    pub(super) async fn fail_with(
        &self,
        rel: &ForgeRelease,
        why: &str,
        note: &str,
    ) -> Result<(), BotError> {
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        if rel.state.is_final() || rel.state == ReleaseState::Failed {
            return Ok(());
        }
        self.transition(
            &rel,
            ReleaseState::Failed,
            AuditEvent::ReleaseFailed,
            self.bot_login(),
            json!({"reason": why}),
        )
        .await?;
        if let Some(number) = self
            .store
            .release_prs(rel.release_id)
            .await?
            .iter()
            .rev()
            .find_map(|p| p.pr_number)
        {
            self.post_note_once(
                number,
                &format!("failed:{}", &super::notes::sha_hex(why)[..16]),
                note,
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn abort(
        &self,
        rel: &ForgeRelease,
        actor: &str,
        why: &str,
    ) -> Result<(), BotError> {
        let Some(rel) = self.current(rel.release_id).await? else {
            return Ok(());
        };
        if rel.state.is_final() {
            return Ok(());
        }
        self.transition(
            &rel,
            ReleaseState::Aborted,
            AuditEvent::ReleaseAborted,
            actor,
            json!({"reason": why}),
        )
        .await
    }

    /// The approval timeout (the environment's, or the trigger's when shorter) ran out before
    /// the pull request merged: the release is aborted and the pull request closed, saying why.
    pub(super) async fn timed_out(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
    ) -> Result<bool, BotError> {
        let Some(opened) = pr.opened_at else {
            return Ok(false);
        };
        let Some(text) = self
            .env_policy(&pr.environment)
            .and_then(|e| e.approval_timeout.clone())
        else {
            return Ok(false);
        };
        let Some(secs) = crate::config::parse_duration_secs(&text) else {
            return Ok(false);
        };
        if self.now() - opened < time::Duration::seconds(secs as i64) {
            return Ok(false);
        }
        let number = pr.pr_number.unwrap_or_default();
        self.post_note_once(
            number,
            "timeout",
            &texts::approval_timed_out(&rel.version_tag, &pr.environment, &text),
        )
        .await?;
        let why = format!("not approved within its approval timeout of {text}");
        // A rollback out of time is abandoned; the release stays as it is.
        let rollback = self.rollback_of(rel, pr).await?.is_some();
        if rollback {
            self.abandon_rollback(rel, pr, self.bot_login(), &why)
                .await?;
        } else {
            self.abort(rel, self.bot_login(), &why).await?;
        }
        self.forge
            .close_change_request(&self.settings.deployment_repo, number)
            .await?;
        if !rollback {
            pr.state = PrState::Closed;
            self.store.save_release_pr(pr).await?;
        }
        Ok(true)
    }
}
