//! Forge-neutral events: what a webhook tells the bot, once verified and parsed.
//!
//! Each forge's webhook extractor turns its payloads into these types at the door, so the rest of
//! the bot never sees a GitHub or GitLab payload shape, and a payload is parsed exactly once. The
//! stored form of a delivery is this type as JSON. An event is a hint, not the truth: the
//! reconcile loop re-reads the forge for every release in flight.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitlab,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
        }
    }
}

/// A repository on a forge: `owner/name` on GitHub, the full project path on GitLab.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    pub full_name: String,
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub login: String,
    /// The forge marks the account as a bot (GitHub `type: "Bot"`, GitLab `bot: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_bot: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Push(Push),
    Comment(Comment),
    Review(Review),
    PullRequest(PullRequest),
    Check(Check),
    Installation(Installation),
    /// Argo CD Notifications said something about an Application.
    Deployment(DeploymentNotice),
}

impl Event {
    pub fn repo(&self) -> Option<&RepoRef> {
        match self {
            Event::Push(e) => Some(&e.repo),
            Event::Comment(e) => Some(&e.repo),
            Event::Review(e) => Some(&e.repo),
            Event::PullRequest(e) => Some(&e.repo),
            Event::Check(e) => Some(&e.repo),
            Event::Installation(_) | Event::Deployment(_) => None,
        }
    }
}

/// Commits pushed to a branch (tags are not pushes of interest and are dropped at the door).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub repo: RepoRef,
    pub branch: String,
    pub default_branch: String,
    pub before: String,
    pub after: String,
    pub pusher: Actor,
    /// Paths added or modified by the pushed commits, as far as the payload lists them.
    pub changed_paths: Vec<String>,
    /// The payload lists fewer commits than were pushed (GitHub stops at 20): the changed paths
    /// are incomplete and the worker must ask git.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The forge account of the head commit's author, where the forge says (GitHub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_author: Option<String>,
    /// When the forge received the push, where it says (GitHub's `repository.pushed_at`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pushed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentAction {
    Created,
    Edited,
    Deleted,
}

/// A comment on a pull request (or an issue: `on_pull_request` tells).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub repo: RepoRef,
    pub number: u64,
    pub on_pull_request: bool,
    pub comment_id: u64,
    pub action: CommentAction,
    pub author: Actor,
    pub body: String,
    /// When the forge says the comment was written.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When it was last changed (an edit, or the deletion).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
    Dismissed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub repo: RepoRef,
    pub number: u64,
    pub review_id: u64,
    pub state: ReviewState,
    pub author: Actor,
    /// The head commit the review was given on.
    pub commit: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub submitted_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestAction {
    Opened,
    /// New commits on the head branch.
    Synchronize,
    Closed,
    Reopened,
    /// GitLab's approve button, and anything else that only changes approvals.
    Approved,
    Unapproved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub repo: RepoRef,
    pub number: u64,
    pub action: PullRequestAction,
    pub head_branch: String,
    pub head_commit: String,
    pub merged: bool,
    pub actor: Actor,
    /// When the forge says this happened (GitLab's approvals carry no other time).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

/// The state of one check run, commit status or pipeline job, as both forges' webhooks and
/// APIs are mapped to it (each forge maps its own words once, in its module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Pending,
    Success,
    Failure,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pending => "pending",
            CheckState::Success => "success",
            CheckState::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> CheckState {
        match s {
            "success" => CheckState::Success,
            "failure" => CheckState::Failure,
            _ => CheckState::Pending,
        }
    }
}

/// Who reported a check. A required check counts only from the source the policy names:
/// anyone with write access can post a commit status under any name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckSource {
    /// A GitHub check run (or suite) made by this GitHub App.
    App { slug: String, id: u64 },
    /// A commit status (GitHub) or an external commit status (GitLab), posted by this user.
    Status { creator: String },
    /// A job (or the pipeline itself) of the GitLab project's own CI pipeline.
    Pipeline,
}

impl std::fmt::Display for CheckSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckSource::App { slug, .. } => write!(f, "the app `{slug}`"),
            CheckSource::Status { creator } => write!(f, "a commit status by @{creator}"),
            CheckSource::Pipeline => f.write_str("the project's pipeline"),
        }
    }
}

/// A check run, check suite, commit status or pipeline changed on a commit. A GitLab pipeline
/// reports itself (as `pipeline`) and each of its jobs by name in one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub repo: RepoRef,
    pub commit: String,
    pub results: Vec<CheckResult>,
}

/// One run of a check on a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub state: CheckState,
    pub source: CheckSource,
    /// The forge's own order of runs of one check from one source (check run, status, job or
    /// pipeline id): the newest run wins, whatever order the bot hears of them in.
    pub order: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    pub action: String,
    pub installation_id: u64,
    pub account: String,
}

/// A notification from Argo CD about one Application (see `deploy/argocd/`). Only a hint: the
/// bot reads the Application from Argo CD's API before it concludes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentNotice {
    pub application: String,
    /// The notification's trigger (`on-deployed`, `on-sync-failed`, ...), as sent.
    #[serde(default)]
    pub trigger: Option<String>,
    /// The revision the notification was about, as sent.
    #[serde(default)]
    pub revision: Option<String>,
}
