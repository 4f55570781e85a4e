//! The release lifecycle on a forge: trigger push, release pull requests, commands, policy,
//! merge, tag and release.
//!
//! Webhooks keep the stored facts of each release pull request current (head commit, checks,
//! approvals) at no API cost; [`Bot::reconcile`] re-reads the forge for every release in flight
//! (on a timer and at start-up), so a lost or reordered webhook only delays a release. Every
//! step records its state before its side effect, and every side effect is either looked up
//! before it is made or safe to repeat.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::commands::{self, Command};
use crate::config::{ForgeSettings, OperatorConfig};
use crate::diagnostics::Diagnostics;
use crate::events::{self, CommentAction, Event, PullRequestAction, ReviewState};
use crate::forge::{ChangeState, Forge, ForgeError, MergeOutcome, NewChangeRequest};
use crate::git::{AppRepoInfo, DeployRepo, GitError, Remote};
use crate::policy::{self, Approval, Decision, Facts};
use crate::release::state::ReleaseState;
use crate::release::{ReleaseError, execute, prepare_with_app};
use crate::store::forge_releases::{ForgeRelease, ReleasePr};
use crate::store::{Store, StoreError, Transition};

/// Marks the bot's status comment, so a lost comment id can be found again.
const STATUS_MARKER: &str = "<!-- release-coordinator:status -->";
/// Begins the bot's comment on a trigger commit it could not release.
const TRIGGER_MARKER: &str = "<!-- release-coordinator:trigger -->";
/// A release pull request the forge will merge by itself once its pipeline succeeds.
const SCHEDULED: &str = "scheduled";
/// How long a team membership answer is reused.
const TEAM_CACHE_TTL: Duration = Duration::from_secs(300);

/// An internal failure (logged; the delivery is recorded as failed and reconcile retries).
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(transparent)]
    Forge(#[from] ForgeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("{0}")]
    Io(String),
}

pub struct Bot {
    pub config: OperatorConfig,
    pub settings: ForgeSettings,
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    cache_root: PathBuf,
    teams: Mutex<HashMap<(String, String), (bool, Instant)>>,
    /// One release is advanced at a time: the worker is serial, and reconcile shares it.
    serial: tokio::sync::Mutex<()>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
}

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

impl Bot {
    pub fn new(
        config: OperatorConfig,
        settings: ForgeSettings,
        store: Store,
        forge: Arc<dyn Forge>,
    ) -> Bot {
        let cache_root = config.resolve_path(&config.orchestration.deployment.cache_dir);
        Bot {
            config,
            settings,
            store,
            forge,
            cache_root,
            teams: Mutex::new(HashMap::new()),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// Acts on one stored event.
    pub async fn handle(&self, event: &Event) -> Result<(), BotError> {
        let _one_at_a_time = self.serial.lock().await;
        match event {
            Event::Push(p) => self.on_push(p).await,
            Event::Comment(c) => self.on_comment(c).await,
            Event::Review(r) => self.on_review(r).await,
            Event::PullRequest(p) => self.on_pull_request(p).await,
            Event::Check(c) => self.on_check(c).await,
            Event::Installation(i) => {
                tracing::info!(action = %i.action, account = %i.account, "installation changed");
                Ok(())
            }
        }
    }

    /// Re-reads the forge for every release in flight and moves each on as far as it can go.
    pub async fn reconcile(&self) -> Result<(), BotError> {
        let _one_at_a_time = self.serial.lock().await;
        for rel in self.store.forge_releases_in_flight().await? {
            if let Err(e) = self.advance(rel.release_id, true).await {
                tracing::warn!(release = %rel.version_tag, error = %e, "reconcile could not advance the release");
            }
        }
        Ok(())
    }

    fn is_deployment_repo(&self, repo: &events::RepoRef) -> bool {
        repo.full_name
            .eq_ignore_ascii_case(&self.settings.deployment_repo)
    }

    // --- the trigger ---

    async fn on_push(&self, p: &events::Push) -> Result<(), BotError> {
        if !push_may_trigger(&self.settings, p) {
            return Ok(());
        }
        let trigger = self.settings.trigger_path.as_str();
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        let outcome = self.store.trigger_outcome(forge, repo, &p.after).await?;
        // Rejected before and cut short (an answer lost, a crash): its comment may be there.
        let rejected_before = outcome.as_deref() == Some("rejecting");
        match outcome {
            // Recorded as started, then the process died before the release was linked to
            // this forge: link it now (its branches are pushed, or the push is resumed).
            Some(intent) if intent.starts_with('{') => {
                if let Ok(intent) = serde_json::from_str::<Intent>(&intent)
                    && let Some(record) = self.store.find_release(&intent.version).await?
                    && record.state != ReleaseState::Pending.as_str()
                {
                    return self.link_release(p, record, intent).await;
                }
            }
            // A replayed push (or a retry after a failure further on): carry on from the store.
            Some(o) if o.starts_with("released:") => {
                if let Some(record) = self.store.find_release(&o["released:".len()..]).await? {
                    return self.advance(record.id, false).await;
                }
                return Ok(());
            }
            Some(o) if o != "rejecting" => return Ok(()),
            _ => {}
        }
        let access = self.forge.git_access(repo).await?;
        let token = access
            .token
            .as_ref()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
        let app = DeployRepo::open(
            Remote::new(access.url, token).with_basic_user(access.username),
            &self.cache_root.join("apps"),
        )?;
        let commit = app.fetch_commit(&p.branch, &p.after)?;
        let (dir, file) = match trigger.rsplit_once('/') {
            Some((d, f)) => (d, f),
            None => ("", trigger),
        };
        let files = app.read_dir(commit, dir)?;
        if !files.iter().any(|(name, _)| name == file) {
            return Ok(()); // the trigger was deleted
        }
        let tmp = tempfile::tempdir().map_err(|e| BotError::Io(e.to_string()))?;
        for (name, content) in &files {
            let target = if name == file {
                tmp.path().join("promotion-trigger.yaml")
            } else {
                tmp.path().join(name)
            };
            std::fs::write(target, content).map_err(|e| BotError::Io(e.to_string()))?;
        }
        let info = AppRepoInfo {
            head_commit: Some(p.after.clone()),
            tags: app.remote_tags()?,
        };
        let deploy = self
            .forge
            .git_access(&self.settings.deployment_repo)
            .await?;
        let deploy_access = deploy.token.map(|t| {
            (
                deploy.username,
                secrecy::ExposeSecret::expose_secret(&t).to_string(),
            )
        });
        let prepared = prepare_with_app(
            &self.config,
            tmp.path(),
            info,
            deploy_access,
            Some(&self.store),
            now(),
        )
        .await;
        let outcome = match prepared {
            Ok(prepared) => {
                let intent = Intent {
                    version: prepared.plan.spec.version.clone(),
                    summary: summary(&prepared.plan),
                    environments: prepared
                        .plan
                        .environments
                        .iter()
                        .map(|e| (e.environment.clone(), e.branch.clone()))
                        .collect(),
                };
                // Written before the push, so a crash between the push and the link below
                // is finished by the replay of this delivery instead of refused.
                self.store
                    .set_trigger_outcome(
                        forge,
                        repo,
                        &p.after,
                        &serde_json::to_string(&intent).expect("JSON"),
                    )
                    .await?;
                execute(prepared, &self.store, true, &p.pusher.login)
                    .await
                    .map(|_| intent)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(intent) => {
                let record = self
                    .store
                    .find_release(&intent.version)
                    .await?
                    .ok_or_else(|| BotError::Io(format!("release {} vanished", intent.version)))?;
                self.link_release(p, record, intent).await
            }
            Err(e) if e.is_user_error() => self.reject_trigger(p, dir, &e, rejected_before).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Links a recorded release to the forge and opens its first pull request.
    async fn link_release(
        &self,
        p: &events::Push,
        record: crate::store::ReleaseRecord,
        intent: Intent,
    ) -> Result<(), BotError> {
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        self.store
            .record_forge_release(
                &ForgeRelease {
                    release_id: record.id,
                    version_tag: intent.version.clone(),
                    state: record.state.clone(),
                    forge: forge.to_string(),
                    app_repo: repo.clone(),
                    app_commit: p.after.clone(),
                    requester: p.pusher.login.clone(),
                    summary: intent.summary,
                    tagged: false,
                    release_url: None,
                },
                &intent.environments,
            )
            .await?;
        self.store
            .record_event(
                record.id,
                "ReleaseTriggered",
                &p.pusher.login,
                json!({"repo": repo, "commit": p.after}),
                now(),
            )
            .await?;
        self.store
            .set_trigger_outcome(
                forge,
                repo,
                &p.after,
                &format!("released:{}", intent.version),
            )
            .await?;
        self.advance(record.id, false).await
    }

    /// A trigger that cannot be released: a failed status and a comment on the commit that
    /// list every problem with its file, line and column. `rejected_before`: an earlier attempt
    /// was cut short, so the comment is looked for before it is made.
    async fn reject_trigger(
        &self,
        p: &events::Push,
        dir: &str,
        e: &ReleaseError,
        rejected_before: bool,
    ) -> Result<(), BotError> {
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        self.store
            .set_trigger_outcome(forge, repo, &p.after, "rejecting")
            .await?;
        let problems: Vec<String> = match e {
            ReleaseError::Invalid(Diagnostics(list)) => list
                .iter()
                .map(|d| {
                    // The files were read from a scratch directory; name them as in the repository.
                    let name = std::path::Path::new(&d.file)
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let name = if name == "promotion-trigger.yaml" {
                        self.settings.trigger_path.clone()
                    } else if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    format!("{name}:{}:{}: {}", d.line, d.column, d.message)
                })
                .collect(),
            other => vec![other.to_string()],
        };
        let n = problems.len();
        let body = format!(
            "{TRIGGER_MARKER}\n**Release Coordinator could not start this release**: {n} problem{} found.\n\n```text\n{}\n```\n\nFix {} and push again.",
            if n == 1 { "" } else { "s" },
            problems.join("\n"),
            if n == 1 { "it" } else { "them" }
        );
        self.forge
            .set_commit_status(
                repo,
                &p.after,
                true,
                "release-coordinator",
                &format!("{n} problem(s) in the promotion trigger; see the commit comment"),
            )
            .await?;
        let commented = rejected_before
            && self
                .own_note(
                    self.forge.commit_comments(repo, &p.after).await?,
                    TRIGGER_MARKER,
                )
                .is_some();
        if !commented {
            self.forge.comment_on_commit(repo, &p.after, &body).await?;
        }
        self.store
            .set_trigger_outcome(forge, repo, &p.after, "rejected")
            .await?;
        Ok(())
    }

    // --- events on release pull requests ---

    async fn release_pr(
        &self,
        repo: &events::RepoRef,
        number: u64,
    ) -> Result<Option<ReleasePr>, BotError> {
        if !self.is_deployment_repo(repo) {
            return Ok(None);
        }
        Ok(self.store.release_pr_by_number(number).await?)
    }

    async fn on_comment(&self, c: &events::Comment) -> Result<(), BotError> {
        if !c.on_pull_request || c.author.login.eq_ignore_ascii_case(self.forge.bot_login()) {
            return Ok(());
        }
        let Some(pr) = self.release_pr(&c.repo, c.number).await? else {
            return Ok(());
        };
        self.apply_comment(&pr, c.comment_id, &c.author, &c.body, c.action)
            .await?;
        self.advance(pr.release_id, false).await
    }

    /// Carries out the commands of one comment (once per version of its text) and keeps the
    /// approval it gives in step with its current text.
    async fn apply_comment(
        &self,
        pr: &ReleasePr,
        comment_id: u64,
        author: &events::Actor,
        body: &str,
        action: CommentAction,
    ) -> Result<(), BotError> {
        let source = format!("comment:{comment_id}");
        let parsed = if action == CommentAction::Deleted {
            Vec::new()
        } else {
            commands::parse_comment(body)
        };
        let approves = parsed.iter().any(|c| matches!(c, Ok(Command::Approve)));
        if !approves {
            // Deleted, or edited so that it no longer approves: the approval goes.
            self.store.set_approval(pr, &source, None).await?;
        }
        if action == CommentAction::Deleted || parsed.is_empty() {
            return Ok(());
        }
        let body_sha = sha_hex(body);
        if self.store.comment_handled(comment_id, &body_sha).await? {
            return Ok(()); // this text was acted on before (a redelivery, or reconcile)
        }
        let Some(rel) = self.store.forge_release(pr.release_id).await? else {
            return Ok(());
        };
        let number = pr.pr_number.unwrap_or_default();
        let mut pr = pr.clone();
        let mut replies = Vec::new();
        for command in parsed {
            match command {
                Ok(Command::Approve) => {
                    let approval = Approval {
                        user: author.login.clone(),
                        commit: pr.head_commit.clone().unwrap_or_default(),
                        user_is_bot: author.is_bot,
                    };
                    let roles = self.roles_of(std::slice::from_ref(&author.login)).await?;
                    let facts_checks = Vec::new();
                    let facts = Facts {
                        environment: &pr.environment,
                        policy: &self.config.policy,
                        head_commit: pr.head_commit.as_deref().unwrap_or_default(),
                        requester: &rel.requester,
                        approvals: &[],
                        roles: &roles,
                        checks: &facts_checks,
                        qa_coverage: None,
                        manual_approval_required: false,
                        held_by: None,
                    };
                    match policy::check_approval(&facts, &approval) {
                        Ok(()) => {
                            self.store
                                .set_approval(&pr, &source, Some(&approval))
                                .await?
                        }
                        Err(why) => {
                            self.store.set_approval(&pr, &source, None).await?;
                            replies.push(format!(
                                "@{}, your approval does not count: {why}.",
                                author.login
                            ));
                        }
                    }
                }
                Ok(Command::ApproveCancel) => {
                    self.store.drop_user_approvals(&pr, &author.login).await?;
                    replies.push(format!("@{}, your approval is withdrawn.", author.login));
                }
                Ok(Command::Hold) => {
                    if pr.held_by.as_deref() == Some(author.login.as_str()) {
                        continue; // held already (by this comment, in an attempt that failed later)
                    }
                    pr.held_by = Some(author.login.clone());
                    self.store.save_release_pr(&pr).await?;
                    self.audit(
                        &rel,
                        "ReleaseHeld",
                        &author.login,
                        json!({"environment": pr.environment}),
                    )
                    .await?;
                }
                Ok(Command::Unhold) => {
                    if pr.held_by.is_none() {
                        continue;
                    }
                    pr.held_by = None;
                    self.store.save_release_pr(&pr).await?;
                    self.audit(
                        &rel,
                        "ReleaseUnheld",
                        &author.login,
                        json!({"environment": pr.environment}),
                    )
                    .await?;
                }
                Ok(Command::Cancel) => {
                    if !self.may_steer(&rel, &author.login).await? {
                        replies.push(format!("@{}, only the requester or a holder of a release role can cancel a release.", author.login));
                        continue;
                    }
                    self.abort(&rel, &author.login, "cancelled with /cancel")
                        .await?;
                    self.forge
                        .close_change_request(&self.settings.deployment_repo, number)
                        .await?;
                    pr.state = "closed".into();
                    self.store.save_release_pr(&pr).await?;
                    replies.push(format!(
                        "Release {} was cancelled by @{}.",
                        rel.version_tag, author.login
                    ));
                }
                Ok(Command::Retry) => {
                    // The next advance re-reads the forge and tries the pending step again.
                    replies.push("Trying again.".to_string());
                }
                Ok(Command::Help) => replies.push(commands::help_text()),
                Err(e) => replies.push(format!("@{}: {e}", author.login)),
            }
        }
        if !replies.is_empty() {
            let key = format!("reply:{comment_id}:{}", &body_sha[..16]);
            self.post_note_once(number, &key, &replies.join("\n\n"))
                .await?;
        }
        // Only now is this text done with: a failure above leaves it to be tried again (every
        // step above is idempotent), where marking it first would have dropped it for good.
        self.store
            .mark_comment_handled(comment_id, &body_sha)
            .await?;
        Ok(())
    }

    /// The bot's own note among `notes` that carries `marker` (a comment hidden when rendered).
    fn own_note(&self, notes: Vec<crate::forge::Note>, marker: &str) -> Option<crate::forge::Note> {
        notes.into_iter().find(|n| {
            n.author.login.eq_ignore_ascii_case(self.forge.bot_login()) && n.body.contains(marker)
        })
    }

    /// Posts a one-off note at most once for `key`, however often the step that posts it runs
    /// (a delivery tried again, an answer lost after the forge carried out the request). The
    /// intent is recorded first; when an earlier attempt recorded it but not the note's id, the
    /// note is looked for (by the key's hidden marker) before it is posted again.
    async fn post_note_once(&self, number: u64, key: &str, body: &str) -> Result<(), BotError> {
        let repo = &self.settings.deployment_repo;
        let marker = format!("<!-- release-coordinator:note:{key} -->");
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

    async fn on_review(&self, r: &events::Review) -> Result<(), BotError> {
        let Some(pr) = self.release_pr(&r.repo, r.number).await? else {
            return Ok(());
        };
        self.apply_review(
            &pr,
            &format!("review:{}", r.review_id),
            &r.author,
            r.state,
            &r.commit,
        )
        .await?;
        self.advance(pr.release_id, false).await
    }

    /// Records what a review or approval (`source`: `review:<id>`, `approval:<user>`) means.
    async fn apply_review(
        &self,
        pr: &ReleasePr,
        source: &str,
        author: &events::Actor,
        state: ReviewState,
        commit: &str,
    ) -> Result<(), BotError> {
        match state {
            ReviewState::Approved => {
                let approval = Approval {
                    user: author.login.clone(),
                    commit: commit.to_string(),
                    user_is_bot: author.is_bot,
                };
                self.store.set_approval(pr, source, Some(&approval)).await?;
            }
            ReviewState::ChangesRequested | ReviewState::Dismissed => {
                self.store.set_approval(pr, source, None).await?;
                if state == ReviewState::ChangesRequested {
                    self.store.drop_user_approvals(pr, &author.login).await?;
                }
            }
            ReviewState::Commented => {}
        }
        Ok(())
    }

    async fn on_pull_request(&self, p: &events::PullRequest) -> Result<(), BotError> {
        let Some(mut pr) = self.release_pr(&p.repo, p.number).await? else {
            return Ok(());
        };
        match p.action {
            PullRequestAction::Synchronize => {
                self.new_head(&mut pr, &p.head_commit).await?;
            }
            // GitLab's approve button: one approval per user, on the head it was given on.
            PullRequestAction::Approved | PullRequestAction::Unapproved => {
                let state = if p.action == PullRequestAction::Approved {
                    ReviewState::Approved
                } else {
                    ReviewState::Dismissed
                };
                let source = approval_source(&p.actor.login);
                self.apply_review(&pr, &source, &p.actor, state, &p.head_commit)
                    .await?;
            }
            PullRequestAction::Closed if p.merged && pr.state == "merged" => {}
            PullRequestAction::Closed if p.merged => {
                // Merged by someone else (or by the forge itself, when the bot asked it to merge
                // once its pipeline succeeds): the forge is the truth.
                pr.state = "merged".into();
                pr.head_commit = Some(p.head_commit.clone());
                self.store.save_release_pr(&pr).await?;
                if let Some(rel) = self.store.forge_release(pr.release_id).await? {
                    self.audit(
                        &rel,
                        "ReleaseMerged",
                        &p.actor.login,
                        json!({
                            "environment": pr.environment,
                            "by_hand": !p.actor.login.eq_ignore_ascii_case(self.forge.bot_login()),
                        }),
                    )
                    .await?;
                }
            }
            PullRequestAction::Closed => {
                if pr.state == "open" || pr.state == SCHEDULED {
                    pr.state = "closed".into();
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

    /// The pull request's head moved: approvals given on the old head no longer count, and
    /// the people who gave them are told.
    async fn new_head(&self, pr: &mut ReleasePr, head: &str) -> Result<(), BotError> {
        if pr.head_commit.as_deref() == Some(head) {
            return Ok(());
        }
        let old = pr.head_commit.replace(head.to_string());
        self.store.save_release_pr(pr).await?;
        let stale: BTreeSet<String> = self
            .store
            .approvals(pr)
            .await?
            .into_iter()
            .filter(|(_, a)| a.commit != head)
            .map(|(_, a)| format!("@{}", a.user))
            .collect();
        if !stale.is_empty()
            && let Some(number) = pr.pr_number
        {
            let list: Vec<String> = stale.into_iter().collect();
            self.post_note_once(
                    number,
                    &format!("stale:{head}"),
                    &format!(
                        "New commits were pushed (head is now {}, was {}). The approvals of {} were given on the earlier commit and no longer count: please review and `/approve` again.",
                        short(head),
                        short(old.as_deref().unwrap_or("?")),
                        list.join(", ")
                    ),
                )
                .await?;
        }
        Ok(())
    }

    async fn on_check(&self, c: &events::Check) -> Result<(), BotError> {
        if !self.is_deployment_repo(&c.repo) {
            return Ok(());
        }
        for pr in self.store.release_prs_by_head(&c.commit).await? {
            for result in &c.results {
                let check = policy::Check {
                    name: result.name.clone(),
                    state: result.state.into(),
                };
                self.store.set_check(&pr, &c.commit, &check).await?;
            }
            self.advance(pr.release_id, false).await?;
        }
        Ok(())
    }

    // --- moving a release on ---

    /// Opens the next pull request, decides, merges, and finishes the release when every
    /// environment is merged. With `refresh`, first re-reads the forge's state.
    async fn advance(&self, release_id: i64, refresh: bool) -> Result<(), BotError> {
        for mut pr in self.store.release_prs(release_id).await? {
            // Read afresh each round: merging the previous pull request moved the state on.
            let Some(rel) = self.store.forge_release(release_id).await? else {
                return Ok(());
            };
            if ReleaseState::parse(&rel.state).is_some_and(ReleaseState::is_final) {
                return Ok(());
            }
            match pr.state.as_str() {
                "merged" => continue,
                "closed" => return Ok(()),
                "waiting" => {
                    self.open_pr(&rel, &mut pr).await?;
                }
                _ => {
                    if refresh {
                        self.refresh(&rel, &mut pr).await?;
                        if pr.state == "merged" {
                            continue;
                        }
                        if pr.state == "closed" {
                            return Ok(());
                        }
                    }
                }
            }
            if !self.evaluate(&rel, &mut pr).await? {
                return Ok(());
            }
        }
        match self.store.forge_release(release_id).await? {
            Some(rel) if !ReleaseState::parse(&rel.state).is_some_and(ReleaseState::is_final) => {
                self.finish(&rel).await
            }
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
                pr.opening = true;
                self.store.save_release_pr(pr).await?;
                let title = format!("Release {} to {}", rel.version_tag, pr.environment);
                let body = pr_body(rel, pr);
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
        pr.pr_number = Some(cr.number);
        pr.head_commit = Some(cr.head_commit.clone());
        pr.state = "open".into();
        self.store.save_release_pr(pr).await?;
        if ReleaseState::parse(&rel.state) == Some(ReleaseState::Pending) {
            self.store
                .transition(rel.release_id, Transition {
                    from: ReleaseState::Pending,
                    to: ReleaseState::AwaitingApproval,
                    event: "ReleaseApprovalRequested",
                    actor: self.forge.bot_login(),
                    detail: json!({"environment": pr.environment, "pull_request": cr.number, "url": cr.url}),
                }, now())
                .await?;
        } else {
            self.audit(
                rel,
                "ReleaseApprovalRequested",
                self.forge.bot_login(),
                json!({"environment": pr.environment, "pull_request": cr.number, "url": cr.url}),
            )
            .await?;
        }
        Ok(())
    }

    /// Reads the pull request, its comments, reviews and checks from the forge.
    async fn refresh(&self, rel: &ForgeRelease, pr: &mut ReleasePr) -> Result<(), BotError> {
        let repo = &self.settings.deployment_repo;
        let Some(number) = pr.pr_number else {
            return Ok(());
        };
        let cr = self.forge.change_request(repo, number).await?;
        match cr.state {
            ChangeState::Merged => {
                pr.state = "merged".into();
                pr.merge_commit = cr.merge_commit.clone();
                self.store.save_release_pr(pr).await?;
                return Ok(());
            }
            ChangeState::Closed => {
                pr.state = "closed".into();
                self.store.save_release_pr(pr).await?;
                self.abort(
                    rel,
                    self.forge.bot_login(),
                    "its pull request was closed without merging",
                )
                .await?;
                return Ok(());
            }
            ChangeState::Open => self.new_head(pr, &cr.head_commit).await?,
        }
        let notes = self.forge.notes(repo, number).await?;
        let present: BTreeSet<String> = notes.iter().map(|n| format!("comment:{}", n.id)).collect();
        let mut approving = BTreeSet::new();
        for (source, _) in self.store.approvals(pr).await? {
            if source.starts_with("comment:") && !present.contains(&source) {
                self.store.set_approval(pr, &source, None).await?; // the comment was deleted
            } else {
                approving.insert(source);
            }
        }
        for note in &notes {
            if note
                .author
                .login
                .eq_ignore_ascii_case(self.forge.bot_login())
            {
                if pr.status_comment_id.is_none() && note.body.starts_with(STATUS_MARKER) {
                    pr.status_comment_id = Some(note.id);
                    self.store.save_release_pr(pr).await?;
                }
                continue;
            }
            // Most comments are conversation: nothing to do unless they hold a command or
            // once gave an approval that their current text may have taken back.
            let source = format!("comment:{}", note.id);
            if !approving.contains(&source) && commands::parse_comment(&note.body).is_empty() {
                continue;
            }
            self.apply_comment(pr, note.id, &note.author, &note.body, CommentAction::Edited)
                .await?;
        }
        let mut latest: BTreeMap<String, crate::forge::ReviewInfo> = BTreeMap::new();
        for r in self.forge.reviews(repo, number).await? {
            if r.state != ReviewState::Commented {
                latest.insert(r.author.login.clone(), r);
            }
        }
        let known: BTreeMap<String, Approval> =
            self.store.approvals(pr).await?.into_iter().collect();
        let listed: BTreeSet<&str> = latest.values().map(|r| r.source.as_str()).collect();
        for source in known.keys() {
            // A GitLab approval taken back while its webhook was lost.
            if source.starts_with("approval:") && !listed.contains(source.as_str()) {
                self.store.set_approval(pr, source, None).await?;
            }
        }
        for r in latest.values() {
            // GitLab does not say which head an approval was given on: the one recorded when
            // it was first seen, else the head now (GitLab resets approvals on push when the
            // project says so; the README asks for that setting).
            let commit = if r.commit.is_empty() {
                known
                    .get(&r.source)
                    .map(|a| a.commit.clone())
                    .unwrap_or_else(|| cr.head_commit.clone())
            } else {
                r.commit.clone()
            };
            self.apply_review(pr, &r.source, &r.author, r.state, &commit)
                .await?;
        }
        let head = cr.head_commit;
        if self
            .env_policy(&pr.environment)
            .is_some_and(|e| !e.required_checks.is_empty())
        {
            for check in self.forge.checks(repo, &head).await? {
                self.store.set_check(pr, &head, &check).await?;
            }
        }
        Ok(())
    }

    fn env_policy(&self, env: &str) -> Option<&crate::config::EnvironmentPolicy> {
        self.config.policy.environments.get(env)
    }

    /// Decides one pull request; merges when the policy is met. True when it is merged.
    async fn evaluate(&self, rel: &ForgeRelease, pr: &mut ReleasePr) -> Result<bool, BotError> {
        let head = pr.head_commit.clone().unwrap_or_default();
        let approvals: Vec<Approval> = self
            .store
            .approvals(pr)
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        let checks = self.store.checks(pr, &head).await?;
        let users: Vec<String> = approvals.iter().map(|a| a.user.clone()).collect();
        let roles = self.roles_of(&users).await?;
        let manual = rel.summary["manual_approval_environments"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e == pr.environment.as_str()));
        let facts = Facts {
            environment: &pr.environment,
            policy: &self.config.policy,
            head_commit: &head,
            requester: &rel.requester,
            approvals: &approvals,
            roles: &roles,
            checks: &checks,
            qa_coverage: rel.summary["qa_coverage"].as_f64(),
            manual_approval_required: manual,
            held_by: pr.held_by.as_deref(),
        };
        let decision = policy::decide(&facts);
        let counted: Vec<&Approval> = approvals
            .iter()
            .filter(|a| policy::check_approval(&facts, a).is_ok())
            .collect();
        if pr.state == SCHEDULED {
            // The forge was asked to merge when its pipeline succeeds. While the policy still
            // allows it, leave it to the forge (its merge webhook moves the release on) unless
            // a check failed, which cancels the forge's merge: then try again ourselves. When
            // the policy no longer allows it, take the scheduled merge back.
            let failed = checks
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
            pr.state = "open".into();
            self.store.save_release_pr(pr).await?;
        }
        match decision {
            Decision::Merge => {
                let state =
                    ReleaseState::parse(&rel.state).unwrap_or(ReleaseState::AwaitingApproval);
                if state != ReleaseState::Merging {
                    self.store.transition(rel.release_id, Transition {
                        from: state,
                        to: ReleaseState::Merging,
                        event: "ReleaseMerging",
                        actor: self.forge.bot_login(),
                        detail: json!({"environment": pr.environment, "head": head, "approvers": counted.iter().map(|a| &a.user).collect::<Vec<_>>()}),
                    }, now()).await?;
                }
                let number = pr.pr_number.unwrap_or_default();
                let merged = self
                    .forge
                    .merge(
                        &self.settings.deployment_repo,
                        number,
                        &head,
                        self.settings.merge_method,
                    )
                    .await;
                let sha = match merged {
                    Ok(MergeOutcome::Merged(sha)) => sha,
                    Ok(MergeOutcome::Scheduled) => {
                        pr.state = SCHEDULED.into();
                        self.store.save_release_pr(pr).await?;
                        let text = format!(
                            "⏳ Approved. The forge will merge {} once its own pipeline succeeds (a newer push cancels that).",
                            short(&head)
                        );
                        self.update_status(rel, pr, &text).await?;
                        return Ok(false);
                    }
                    Err(e) => {
                        self.store.transition(rel.release_id, Transition {
                            from: ReleaseState::Merging,
                            to: ReleaseState::AwaitingApproval,
                            event: "ReleaseMergeFailed",
                            actor: self.forge.bot_login(),
                            detail: json!({"environment": pr.environment, "error": e.to_string()}),
                        }, now()).await?;
                        let text = format!(
                            "Merging failed: {e}. I will try again when something changes (or comment `/retry`)."
                        );
                        self.update_status(rel, pr, &text).await?;
                        return if e.is_retryable() {
                            Err(e.into())
                        } else {
                            Ok(false)
                        };
                    }
                };
                pr.state = "merged".into();
                pr.merge_commit = Some(sha.clone());
                self.store.save_release_pr(pr).await?;
                self.audit(
                    rel,
                    "ReleaseMerged",
                    self.forge.bot_login(),
                    json!({"environment": pr.environment, "merge_commit": sha}),
                )
                .await?;
                let who: Vec<String> = counted.iter().map(|a| format!("@{}", a.user)).collect();
                let text = format!(
                    "✅ Merged as {} (approved by {}).",
                    short(&sha),
                    if who.is_empty() {
                        "policy: no approval required".to_string()
                    } else {
                        who.join(", ")
                    }
                );
                self.update_status(rel, pr, &text).await?;
                // The next environment starts from AwaitingApproval.
                if self
                    .store
                    .release_prs(rel.release_id)
                    .await?
                    .iter()
                    .any(|p| p.state == "waiting")
                {
                    self.store
                        .transition(
                            rel.release_id,
                            Transition {
                                from: ReleaseState::Merging,
                                to: ReleaseState::AwaitingApproval,
                                event: "ReleaseNextEnvironment",
                                actor: self.forge.bot_login(),
                                detail: json!({"after": pr.environment}),
                            },
                            now(),
                        )
                        .await?;
                }
                Ok(true)
            }
            Decision::Wait(reasons) | Decision::Block(reasons) => {
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
                let state = ReleaseState::parse(&rel.state).unwrap_or(want);
                if state != want
                    && matches!(
                        state,
                        ReleaseState::AwaitingApproval
                            | ReleaseState::AwaitingChecks
                            | ReleaseState::Merging
                    )
                {
                    self.store.transition(rel.release_id, Transition {
                        from: state,
                        to: want,
                        event: if want == ReleaseState::AwaitingChecks { "ReleaseAwaitingChecks" } else { "ReleaseAwaitingApproval" },
                        actor: self.forge.bot_login(),
                        detail: json!({"environment": pr.environment, "reasons": reasons.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                    }, now()).await?;
                }
                let mut text = String::from("⏳ Not merged yet:\n");
                for r in &reasons {
                    text.push_str(&format!("- {r}\n"));
                }
                if !counted.is_empty() {
                    let who: Vec<String> = counted.iter().map(|a| format!("@{}", a.user)).collect();
                    text.push_str(&format!(
                        "\nApproved by {} on {}.",
                        who.join(", "),
                        short(&head)
                    ));
                }
                self.update_status(rel, pr, &text).await?;
                Ok(false)
            }
        }
    }

    /// Keeps the one status comment of a pull request up to date; writes only when it changed.
    async fn update_status(
        &self,
        rel: &ForgeRelease,
        pr: &mut ReleasePr,
        status: &str,
    ) -> Result<(), BotError> {
        let body = format!(
            "{STATUS_MARKER}\n### Release {} to {}\n\n{}\n\n{}\n\n<sub>Commands: `/approve`, `/approve cancel`, `/hold`, `/unhold`, `/retry`, `/cancel`, `/help`</sub>\n",
            rel.version_tag,
            pr.environment,
            policy_line(self.env_policy(&pr.environment)),
            status.trim_end()
        );
        let digest = sha_hex(&body);
        if pr.status_body_sha.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let repo = &self.settings.deployment_repo;
        match pr.status_comment_id {
            Some(id) => {
                self.forge
                    .edit_note(repo, pr.pr_number.unwrap_or_default(), id, &body)
                    .await?
            }
            None => {
                let number = pr.pr_number.unwrap_or_default();
                // An earlier attempt may have posted it and lost the answer (or died) before
                // recording its id: adopt that one rather than post a second.
                let landed = if pr.status_posting {
                    self.own_note(self.forge.notes(repo, number).await?, STATUS_MARKER)
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
        pr.status_body_sha = Some(digest);
        self.store.save_release_pr(pr).await?;
        Ok(())
    }

    /// Every environment is merged: tag the application commit and publish the release.
    async fn finish(&self, rel: &ForgeRelease) -> Result<(), BotError> {
        let state = ReleaseState::parse(&rel.state).unwrap_or(ReleaseState::Merging);
        if state != ReleaseState::Documenting {
            self.store
                .transition(
                    rel.release_id,
                    Transition {
                        from: state,
                        to: ReleaseState::Documenting,
                        event: "ReleaseDocumenting",
                        actor: self.forge.bot_login(),
                        detail: json!({}),
                    },
                    now(),
                )
                .await?;
        }
        let tag = rel.summary["git_tag"]
            .as_str()
            .unwrap_or(&rel.version_tag)
            .to_string();
        let notes = rel.summary["release_notes"].as_str().unwrap_or_default();
        let url = if rel.tagged {
            rel.release_url.clone().unwrap_or_default()
        } else {
            let message = format!(
                "Release {}\n\nRelease-Coordinator-Version: {}\n",
                rel.version_tag, rel.version_tag
            );
            match self
                .forge
                .ensure_tag(&rel.app_repo, &tag, &rel.app_commit, &message)
                .await
            {
                Ok(()) => {}
                // The tag exists on another commit: nothing the bot may fix on its own.
                Err(e @ ForgeError::Conflict(_)) => return self.fail(rel, &e.to_string()).await,
                Err(e) => return Err(e.into()),
            }
            let url = self
                .forge
                .ensure_release(
                    &rel.app_repo,
                    &tag,
                    &format!("Release {}", rel.version_tag),
                    notes,
                )
                .await?;
            self.store.mark_tagged(rel.release_id, Some(&url)).await?;
            url
        };
        self.store
            .transition(
                rel.release_id,
                Transition {
                    from: ReleaseState::Documenting,
                    to: ReleaseState::Completed,
                    event: "ReleaseCompleted",
                    actor: self.forge.bot_login(),
                    detail: json!({"tag": tag, "release_url": url}),
                },
                now(),
            )
            .await?;
        Ok(())
    }

    /// The release cannot be completed without a person: recorded as `Failed` with the reason,
    /// which is also posted on its last pull request.
    async fn fail(&self, rel: &ForgeRelease, why: &str) -> Result<(), BotError> {
        // `rel` may predate the last transition; the store has the state now.
        let current = self.store.forge_release(rel.release_id).await?;
        let Some(state) = current.and_then(|r| ReleaseState::parse(&r.state)) else {
            return Ok(());
        };
        if state.is_final() || state == ReleaseState::Failed {
            return Ok(());
        }
        self.store
            .transition(
                rel.release_id,
                Transition {
                    from: state,
                    to: ReleaseState::Failed,
                    event: "ReleaseFailed",
                    actor: self.forge.bot_login(),
                    detail: json!({"reason": why}),
                },
                now(),
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
                    &format!("failed:{}", &sha_hex(why)[..16]),
                    &format!(
                        "❌ Release {} failed after merging: {why}. The deployment repository has the change; tag the application commit by hand or remove the clashing tag and comment `/retry`.",
                        rel.version_tag
                    ),
                )
                .await?;
        }
        Ok(())
    }

    async fn abort(&self, rel: &ForgeRelease, actor: &str, why: &str) -> Result<(), BotError> {
        let Some(state) = ReleaseState::parse(&rel.state) else {
            return Ok(());
        };
        if state.is_final() {
            return Ok(());
        }
        self.store
            .transition(
                rel.release_id,
                Transition {
                    from: state,
                    to: ReleaseState::Aborted,
                    event: "ReleaseAborted",
                    actor,
                    detail: json!({"reason": why}),
                },
                now(),
            )
            .await?;
        Ok(())
    }

    async fn audit(
        &self,
        rel: &ForgeRelease,
        event: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), BotError> {
        Ok(self
            .store
            .record_event(rel.release_id, event, actor, detail, now())
            .await?)
    }

    /// Whether `user` may steer a release (`/cancel`): its requester or any role holder.
    async fn may_steer(&self, rel: &ForgeRelease, user: &str) -> Result<bool, BotError> {
        if user.eq_ignore_ascii_case(&rel.requester) {
            return Ok(true);
        }
        let roles = self.roles_of(&[user.to_string()]).await?;
        Ok(roles.get(user).is_some_and(|r| !r.is_empty()))
    }

    /// The policy roles of each user: listed by name, or through a team (asked of the forge,
    /// answers reused for a few minutes).
    async fn roles_of(
        &self,
        users: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<String>>, BotError> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for user in users {
            let mut roles = BTreeSet::new();
            for (role, members) in &self.config.policy.roles {
                let mut member = members.users.iter().any(|u| u.eq_ignore_ascii_case(user));
                let teams = match self.forge.kind() {
                    events::ForgeKind::Github => &members.github_teams,
                    events::ForgeKind::Gitlab => &members.gitlab_groups,
                };
                for team in teams {
                    if member {
                        break;
                    }
                    member = self.team_member(team, user).await?;
                }
                if member {
                    roles.insert(role.clone());
                }
            }
            out.insert(user.clone(), roles);
        }
        Ok(out)
    }

    async fn team_member(&self, team: &str, user: &str) -> Result<bool, BotError> {
        let key = (team.to_string(), user.to_ascii_lowercase());
        if let Some((member, at)) = self.teams.lock().unwrap().get(&key)
            && at.elapsed() < TEAM_CACHE_TTL
        {
            return Ok(*member);
        }
        let member = self.forge.is_team_member(team, user).await?;
        self.teams
            .lock()
            .unwrap()
            .insert(key, (member, Instant::now()));
        Ok(member)
    }
}

/// The source key of a GitLab approval: one per user and merge request.
fn approval_source(login: &str) -> String {
    format!("approval:{}", login.to_ascii_lowercase())
}

/// A push to an application repository's default branch that touches the trigger file (or
/// whose list of changed paths was cut short, so it may).
fn push_may_trigger(settings: &ForgeSettings, p: &events::Push) -> bool {
    !p.repo
        .full_name
        .eq_ignore_ascii_case(&settings.deployment_repo)
        && p.branch == p.default_branch
        && (p.truncated || p.changed_paths.contains(&settings.trigger_path))
}

/// Whether an event can matter to a release, judged from the event alone. Everything else (a
/// comment on some other repository, a push that does not touch the trigger) is stored as
/// already processed at the door: an organization-wide App receives far more of those than of
/// anything the bot acts on, and the worker never has to look at them.
pub fn concerns_the_bot(settings: &ForgeSettings, event: &Event) -> bool {
    let deployment =
        |r: &events::RepoRef| r.full_name.eq_ignore_ascii_case(&settings.deployment_repo);
    match event {
        Event::Push(p) => push_may_trigger(settings, p),
        Event::Comment(c) => c.on_pull_request && deployment(&c.repo),
        Event::Review(r) => deployment(&r.repo),
        Event::PullRequest(p) => deployment(&p.repo),
        Event::Check(c) => deployment(&c.repo),
        Event::Installation(_) => true,
    }
}

/// A release started from a trigger commit, recorded before its branches are pushed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Intent {
    version: String,
    summary: serde_json::Value,
    environments: Vec<(String, String)>,
}

/// What a release's comments and its forge release need, kept with the release.
fn summary(plan: &crate::release::plan::ReleasePlan) -> serde_json::Value {
    let spec = &plan.spec;
    let notes = plan
        .documents
        .iter()
        .find(|d| d.path.ends_with("release-notes.md"))
        .map(|d| String::from_utf8_lossy(&d.content).to_string())
        .unwrap_or_default();
    json!({
        "version": spec.version,
        "milestone_id": spec.milestone_id,
        "trace_id": spec.trace_id,
        "qa_coverage": spec.qa_coverage,
        "git_tag": spec.git_tag,
        "manual_approval_environments": if spec.manual_approval_required {
            spec.environments.iter().map(|e| e.name.clone()).collect::<Vec<_>>()
        } else { Vec::new() },
        "changes": plan.environments.iter().map(|e| json!({
            "environment": e.environment,
            "services": e.changes.iter().map(|c| json!({"service": c.service, "image": c.image, "file": c.values_file, "from": c.old_tag, "to": c.tag})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "release_notes": notes,
    })
}

fn policy_line(env: Option<&crate::config::EnvironmentPolicy>) -> String {
    match env {
        None => "Policy: one approval from a holder of a release role (this environment has no rule of its own).".to_string(),
        Some(e) => {
            let mut parts = vec![format!("{} approval{}", e.required_approvals, if e.required_approvals == 1 { "" } else { "s" })];
            if !e.required_roles.is_empty() {
                parts.push(format!("roles {}", e.required_roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")));
            }
            if !e.required_checks.is_empty() {
                parts.push(format!("checks {}", e.required_checks.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")));
            }
            if let Some(q) = e.qa_coverage_above {
                parts.push(format!("QA coverage above {q}%"));
            }
            format!("Policy: {}.", parts.join("; "))
        }
    }
}

/// The pull request description: what changes, and the facts behind it.
fn pr_body(rel: &ForgeRelease, pr: &ReleasePr) -> String {
    let s = &rel.summary;
    let mut body = format!(
        "Release **{}** of milestone `{}` to **{}**, requested by @{} in {}@{}.\n\n| service | image | tag |\n|---|---|---|\n",
        rel.version_tag,
        s["milestone_id"].as_str().unwrap_or_default(),
        pr.environment,
        rel.requester,
        rel.app_repo,
        short(&rel.app_commit),
    );
    if let Some(changes) = s["changes"].as_array()
        && let Some(env) = changes
            .iter()
            .find(|c| c["environment"] == pr.environment.as_str())
    {
        for c in env["services"].as_array().into_iter().flatten() {
            body.push_str(&format!(
                "| {} | `{}` | `{}` → `{}` |\n",
                c["service"].as_str().unwrap_or_default(),
                c["image"].as_str().unwrap_or_default(),
                c["from"].as_str().unwrap_or_default(),
                c["to"].as_str().unwrap_or_default()
            ));
        }
    }
    body.push_str(&format!(
        "\nQA coverage: {} · trace `{}`\n\nThe release documents (notes, metadata, signed manifest) are under `releases/{}/`. Comment `/help` for the commands.\n",
        s["qa_coverage"].as_f64().map(|q| format!("{q}%")).unwrap_or_else(|| "not reported".into()),
        s["trace_id"].as_str().unwrap_or_default(),
        rel.version_tag,
    ));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Actor, Comment, Push, RepoRef};

    fn settings() -> ForgeSettings {
        ForgeSettings {
            deployment_repo: "acme/deploy".into(),
            trigger_path: "release/promotion-trigger.yaml".into(),
            merge_method: crate::forge::MergeMethod::Merge,
        }
    }

    fn repo(name: &str) -> RepoRef {
        RepoRef {
            full_name: name.into(),
            id: 1,
        }
    }

    #[test]
    fn only_events_that_can_matter_reach_the_worker() {
        let push = |branch: &str, paths: &[&str], truncated| {
            Event::Push(Push {
                repo: repo("acme/shop"),
                branch: branch.into(),
                default_branch: "main".into(),
                before: "a".into(),
                after: "b".into(),
                pusher: Actor {
                    login: "dave".into(),
                    is_bot: false,
                },
                changed_paths: paths.iter().map(|p| p.to_string()).collect(),
                truncated,
            })
        };
        let s = settings();
        assert!(concerns_the_bot(
            &s,
            &push("main", &["release/promotion-trigger.yaml"], false)
        ));
        assert!(!concerns_the_bot(&s, &push("main", &["README.md"], false)));
        assert!(
            concerns_the_bot(&s, &push("main", &["README.md"], true)),
            "a cut list may hide it"
        );
        assert!(!concerns_the_bot(
            &s,
            &push("feature", &["release/promotion-trigger.yaml"], false)
        ));
        let comment = |r: &str, on_pr| {
            Event::Comment(Comment {
                repo: repo(r),
                number: 1,
                on_pull_request: on_pr,
                comment_id: 1,
                action: CommentAction::Created,
                author: Actor {
                    login: "alice".into(),
                    is_bot: false,
                },
                body: "/approve".into(),
            })
        };
        assert!(concerns_the_bot(&s, &comment("acme/deploy", true)));
        assert!(!concerns_the_bot(&s, &comment("acme/deploy", false)));
        assert!(!concerns_the_bot(&s, &comment("acme/shop", true)));
    }
}
