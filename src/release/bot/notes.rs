//! What the bot posts on pull requests: the one status comment kept current, and one-off notes
//! posted at most once however often the step that posts them runs.

use sha2::{Digest, Sha256};

use super::{Bot, BotError, texts};
use crate::forge::Note;
use crate::store::forge_releases::{ForgeRelease, ReleasePr};

pub(super) fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Bot {
    /// The bot's own note among `notes` that carries `marker` (a comment hidden when rendered).
    pub(super) fn own_note(&self, notes: Vec<Note>, marker: &str) -> Option<Note> {
        notes.into_iter().find(|n| {
            n.author.login.eq_ignore_ascii_case(self.bot_login()) && n.body.contains(marker)
        })
    }

    /// Posts a one-off note at most once for `key`, however often the step that posts it runs
    /// (a delivery tried again, an answer lost after the forge carried out the request). The
    /// intent is recorded first; when an earlier attempt recorded it but not the note's id, the
    /// note is looked for (by the key's hidden marker) before it is posted again.
    pub(super) async fn post_note_once(
        &self,
        number: u64,
        key: &str,
        body: &str,
    ) -> Result<(), BotError> {
        let repo = &self.settings.deployment_repo;
        let marker = texts::note_marker(key);
        match self.store.posted_note(repo, number, key).await? {
            Some(Some(_)) => return Ok(()),
            Some(None) => {
                let notes = self.forge.notes(repo, number).await?;
                if let Some(note) = self.own_note(notes, &marker) {
                    self.store.record_note(repo, number, key, note.id).await?;
                    return Ok(());
                }
            }
            None => self.store.intend_note(repo, number, key).await?,
        }
        let id = self
            .forge
            .post_note(repo, number, &format!("{body}\n\n{marker}"))
            .await?;
        self.store.record_note(repo, number, key, id).await?;
        Ok(())
    }

    /// Keeps the one status comment of a pull request up to date; writes only when it changed.
    pub(super) async fn update_status(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        status: &str,
    ) -> Result<(), BotError> {
        let body = texts::status_comment(
            &rel.version_tag,
            &pr.environment,
            self.env_policy(&pr.environment),
            status,
        );
        let digest = sha_hex(&body);
        if pr.status_body_sha.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let repo = &self.settings.deployment_repo;
        let number = pr.pr_number.unwrap_or_default();
        // What the release waits for now, as its pull request says it.
        let status_line = status.split_whitespace().collect::<Vec<_>>().join(" ");
        match pr.status_comment_id {
            Some(id) => self.forge.edit_note(repo, number, id, &body).await?,
            None => {
                // An earlier attempt may have posted it and lost the answer (or died) before
                // recording its id: adopt that one rather than post a second.
                let landed = if pr.status_posting {
                    self.own_note(self.forge.notes(repo, number).await?, texts::STATUS_MARKER)
                } else {
                    None
                };
                let id = match landed {
                    Some(note) => {
                        self.forge.edit_note(repo, number, note.id, &body).await?;
                        note.id
                    }
                    None => {
                        pr.status_posting = true;
                        self.store.save_release_pr(pr).await?;
                        self.forge.post_note(repo, number, &body).await?
                    }
                };
                pr.status_comment_id = Some(id);
                pr.status_posting = false;
            }
        }
        // Before the digest that says "written": a failure here is written again next time.
        self.store
            .set_waits_for(rel.release_id, &pr.environment, &status_line)
            .await?;
        // Said once posted and recorded (`status` shows the same words from then on).
        tracing::info!(release = %rel.version_tag, environment = %pr.environment, pr = number, status = %status_line, "status");
        pr.status_body_sha = Some(digest);
        self.store.save_release_pr(pr).await?;
        Ok(())
    }
}
