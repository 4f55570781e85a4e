//! Forge-neutral events: what a webhook tells the bot, once verified and parsed.
//!
//! Each forge's webhook extractor turns its payloads into these types at the door, so the rest of
//! the bot never sees a GitHub or GitLab payload shape, and a payload is parsed exactly once. The
//! stored form of a delivery is this type as JSON. An event is a hint, not the truth: the
//! reconcile loop re-reads the forge for every release in flight.

use serde::{Deserialize, Serialize};

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
}

impl Event {
    pub fn repo(&self) -> Option<&RepoRef> {
        match self {
            Event::Push(e) => Some(&e.repo),
            Event::Comment(e) => Some(&e.repo),
            Event::Review(e) => Some(&e.repo),
            Event::PullRequest(e) => Some(&e.repo),
            Event::Check(e) => Some(&e.repo),
            Event::Installation(_) => None,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Pending,
    Success,
    Failure,
}

impl From<CheckState> for crate::policy::CheckState {
    fn from(s: CheckState) -> Self {
        match s {
            CheckState::Pending => crate::policy::CheckState::Pending,
            CheckState::Success => crate::policy::CheckState::Success,
            CheckState::Failure => crate::policy::CheckState::Failure,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub state: CheckState,
}

impl CheckState {
    /// GitLab's pipeline and job statuses.
    pub fn from_gitlab(status: &str) -> CheckState {
        match status {
            "success" => CheckState::Success,
            "failed" | "canceled" => CheckState::Failure,
            // created, waiting_for_resource, preparing, pending, running, manual, scheduled;
            // a skipped job has not passed either.
            _ => CheckState::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    pub action: String,
    pub installation_id: u64,
    pub account: String,
}
