//! The release lifecycle on a forge: trigger push, release pull requests, commands, policy,
//! merge, tag and release.
//!
//! Webhooks keep the stored facts of each release pull request current (head commit, checks,
//! approvals) at no API cost; [`Bot::reconcile`] re-reads the forge for every release in flight
//! (on a timer and at start-up), so a lost or reordered webhook only delays a release. Every
//! step records its state before its side effect, and every side effect is either looked up
//! before it is made or safe to repeat.
//!
//! The work is split by concern: [`trigger`] (a push to an application repository),
//! [`commands`] (comments), [`approvals`] (reviews, heads, checks), [`refresh`] (re-reading
//! the forge), [`merge`] (deciding and merging), [`rebuild`] (building a branch again on a moved
//! base, `/retry`), [`finish`] (tag, release, failure, abort, timeout), [`record`] (the signed
//! approval record), [`notes`] (what the bot posts), [`roles`] (who holds which policy role),
//! with every text in [`texts`] and the stored types in [`model`].

mod approvals;
mod commands;
mod deploy;
mod finish;
mod lanes;
mod merge;
pub mod model;
mod notes;
mod rebuild;
mod record;
mod refresh;
mod roles;
mod rollback;
pub mod texts;
mod trigger;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::config::{ForgeSettings, OperatorConfig};
use crate::events::{self, Event};
use crate::forge::{Forge, ForgeError};
use crate::git::GitError;
use crate::release::ReleaseError;
use crate::release::state::{AuditEvent, ReleaseState};
use crate::store::forge_releases::ForgeRelease;
use crate::store::{Store, StoreError, Transition};

pub use finish::Stage;
pub use lanes::{Job, Lane};
pub use model::{PrState, Summary, TriggerOutcome};

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
    #[error("handling took longer than {} s and was stopped; it is tried again", .0.as_secs())]
    TimedOut(std::time::Duration),
    #[error("handling panicked: {0}")]
    Panicked(String),
    #[error(
        "the event turned out to be about release {0}, whose lane this job does not hold; it is placed again"
    )]
    OtherLane(i64),
}

/// A team's members (lower case), when they were read, and in which job.
type TeamMembers = (std::collections::BTreeSet<String>, OffsetDateTime, u64);

pub struct Bot {
    pub config: OperatorConfig,
    pub settings: ForgeSettings,
    pub store: Store,
    pub forge: Arc<dyn Forge>,
    /// Argo CD, when the operator configured it: merged environments are watched deploying.
    argocd: Option<crate::argocd::ArgoCd>,
    /// The container registries, when the operator configured `images:`.
    registries: Option<crate::images::Registries>,
    clock: Arc<dyn Clock>,
    cache_root: PathBuf,
    /// The members of each team or group, with when and in which job they were read.
    teams: Mutex<HashMap<String, TeamMembers>>,
    /// Which work runs side by side: one job at a time per release, releases independently.
    lanes: lanes::Lanes,
    /// The merge turn: held from the fresh read of the forge, through the last look at the
    /// base branch and any rebuild, to the forge's answer. Nothing waits between the read and
    /// the merge, and no other merge the bot asks for runs in between, so a release is decided
    /// on facts read under the turn. (What the bot does not control can still move the base
    /// meanwhile: a person merging, the forge carrying out a merge scheduled for when its
    /// pipeline succeeds or one whose answer was lost; the forge then refuses a conflicting
    /// merge, or the next look at the base rebuilds.)
    merging: tokio::sync::Mutex<()>,
    /// Releases whose branches a running job has just built, with that job: their first pull
    /// request opens without another look at the base (see `open_pr`).
    just_built: Mutex<HashMap<i64, u64>>,
    /// Rollbacks this process has recorded, counted: a pass over a release that started one
    /// (a failed deployment rolled back by itself) goes on once more, so its pull request
    /// opens (see `advance`). Another release's counts too; the extra pass is harmless.
    rollbacks_started: std::sync::atomic::AtomicU64,
}

impl Bot {
    pub fn new(
        config: OperatorConfig,
        settings: ForgeSettings,
        store: Store,
        forge: Arc<dyn Forge>,
    ) -> Bot {
        Bot::with_clock(config, settings, store, forge, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: OperatorConfig,
        settings: ForgeSettings,
        store: Store,
        forge: Arc<dyn Forge>,
        clock: Arc<dyn Clock>,
    ) -> Bot {
        let cache_root = config.resolve_path(&config.orchestration.deployment.cache_dir);
        Bot {
            config,
            settings,
            store,
            forge,
            argocd: None,
            registries: None,
            clock,
            cache_root,
            teams: Mutex::new(HashMap::new()),
            lanes: lanes::Lanes::default(),
            merging: tokio::sync::Mutex::new(()),
            just_built: Mutex::new(HashMap::new()),
            rollbacks_started: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Watches merged environments deploy through `argocd` (the operator's `argocd:` names it).
    pub fn with_argocd(mut self, argocd: crate::argocd::ArgoCd) -> Bot {
        self.argocd = Some(argocd);
        self
    }

    /// Checks (and, for `tag-docker`, copies) images through `registries` before any pull
    /// request opens.
    pub fn with_registries(mut self, registries: crate::images::Registries) -> Bot {
        self.registries = Some(registries);
        self
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Acts on one stored event, as a job in its lane.
    pub async fn handle(&self, event: &Event) -> Result<(), BotError> {
        let lane = self.lane_of(event).await?;
        self.enter(&lane).await.run(self.act(event)).await
    }

    /// Acts on one stored event; run it as a job in the event's lane ([`Bot::lane_of`],
    /// [`Bot::enter`], [`Job::run`]).
    pub async fn act(&self, event: &Event) -> Result<(), BotError> {
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
            Event::Deployment(n) => self.on_deployment_notice(n).await,
        }
    }

    /// Re-reads the forge for every release in flight and moves each on as far as it can go.
    pub async fn reconcile(&self) -> Result<(), BotError> {
        self.reconcile_within(std::time::Duration::from_secs(300))
            .await
    }

    /// [`Bot::reconcile`], each release's pass stopped after `limit` (as a delivery's job is):
    /// one stuck release does not stop the pass over the others.
    pub async fn reconcile_within(&self, limit: std::time::Duration) -> Result<(), BotError> {
        crate::git::housekeeping(&self.cache_root);
        for rel in self.store.forge_releases_in_flight().await? {
            let job = self.enter(&Lane::Release(rel.release_id)).await;
            let deadline = tokio::time::Instant::now() + limit;
            let work = crate::git::within(deadline, job.run(self.advance(rel.release_id, true)));
            let pass = tokio::time::timeout_at(deadline, work);
            if let Err(e) = pass.await.unwrap_or(Err(BotError::TimedOut(limit))) {
                let _ = self
                    .store
                    .set_release_error(rel.release_id, self.now(), &e.to_string())
                    .await;
                tracing::warn!(release = %rel.version_tag, error = %e, "reconcile could not advance the release");
            }
        }
        Ok(())
    }

    fn is_deployment_repo(&self, repo: &events::RepoRef) -> bool {
        repo.full_name
            .eq_ignore_ascii_case(&self.settings.deployment_repo)
    }

    fn bot_login(&self) -> &str {
        self.forge.bot_login()
    }

    /// The environment's rule (its own, or the `default` entry); none: it cannot be released.
    fn env_policy(&self, env: &str) -> Option<&crate::config::EnvironmentPolicy> {
        self.config.policy.environment(env)
    }

    /// Moves the release to `to`, recording why. The store refuses moves the lifecycle does not
    /// allow and moves from a state the release is no longer in.
    async fn transition(
        &self,
        rel: &ForgeRelease,
        to: ReleaseState,
        event: AuditEvent,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), BotError> {
        tracing::info!(release = %rel.version_tag, from = %rel.state.as_str(), to = %to.as_str(), event = ?event, actor, "release moves on");
        self.store
            .transition(
                rel.release_id,
                Transition {
                    from: rel.state,
                    to,
                    event,
                    actor,
                    detail,
                },
                self.now(),
            )
            .await?;
        Ok(())
    }

    /// The bot's cache of an application repository, reached with the forge's credentials.
    async fn open_app_repo(&self, repo: &str) -> Result<crate::git::DeployRepo, BotError> {
        let access = self.forge.git_access(repo).await?;
        let token = access
            .token
            .as_ref()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
        Ok(crate::git::DeployRepo::open(
            crate::git::Remote::new(access.url, token).with_basic_user(access.username),
            &self.cache_root.join("apps"),
        )?)
    }

    /// The release's state now (a [`ForgeRelease`] read earlier may be behind).
    async fn current(&self, release_id: i64) -> Result<Option<ForgeRelease>, BotError> {
        Ok(self.store.forge_release(release_id).await?)
    }

    async fn audit(
        &self,
        rel: &ForgeRelease,
        event: AuditEvent,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), BotError> {
        Ok(self
            .store
            .record_event(rel.release_id, event, actor, detail, self.now())
            .await?)
    }
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
        Event::Push(p) => push_may_trigger(settings, p) || deployment(&p.repo),
        Event::Comment(c) => c.on_pull_request && deployment(&c.repo),
        Event::Review(r) => deployment(&r.repo),
        Event::PullRequest(p) => deployment(&p.repo),
        Event::Check(c) => deployment(&c.repo),
        Event::Installation(_) | Event::Deployment(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Actor, Comment, CommentAction, Push, RepoRef};

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
        let push = |r: &str, branch: &str, paths: &[&str], truncated| {
            Event::Push(Push {
                repo: repo(r),
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
                head_author: None,
                pushed_at: None,
            })
        };
        let s = settings();
        assert!(concerns_the_bot(
            &s,
            &push(
                "acme/shop",
                "main",
                &["release/promotion-trigger.yaml"],
                false
            )
        ));
        assert!(!concerns_the_bot(
            &s,
            &push("acme/shop", "main", &["README.md"], false)
        ));
        assert!(
            concerns_the_bot(&s, &push("acme/shop", "main", &["README.md"], true)),
            "a cut list may hide it"
        );
        assert!(!concerns_the_bot(
            &s,
            &push(
                "acme/shop",
                "feature",
                &["release/promotion-trigger.yaml"],
                false
            )
        ));
        assert!(
            concerns_the_bot(
                &s,
                &push("acme/deploy", "release/v1/staging", &["x"], false)
            ),
            "pushes to release branches say who pushed what"
        );
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
                created_at: None,
                updated_at: None,
            })
        };
        assert!(concerns_the_bot(&s, &comment("acme/deploy", true)));
        assert!(!concerns_the_bot(&s, &comment("acme/deploy", false)));
        assert!(!concerns_the_bot(&s, &comment("acme/shop", true)));
    }
}
