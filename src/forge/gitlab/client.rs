//! GitLab's REST API (v4) through the `gitlab` crate's async client (`AsyncGitlab`).
//!
//! Merge requests are the change requests, their notes the comments, GitLab's approve button
//! the reviews (one approval per user), the head commit's pipeline and its jobs (commit
//! statuses) the checks. The instance URL is configurable, so self-managed GitLab works the
//! same as gitlab.com; a project, group or personal access token authenticates the API and git.

use std::fmt::Display;

use async_trait::async_trait;
use gitlab::api::endpoint_prelude::*;
use gitlab::api::projects::merge_requests::{
    self as mrs, MergeRequestStateEvent,
    approvals::MergeRequestApprovals,
    notes::{CreateMergeRequestNote, EditMergeRequestNote, MergeRequestNotes},
};
use gitlab::api::projects::pipelines::{PipelineJobs, PipelineOrderBy, Pipelines};
use gitlab::api::projects::releases::{CreateRelease, ProjectReleaseByTag};
use gitlab::api::projects::repository::commits::{
    CommentOnCommit, CommitComments, CommitStatusState, CommitStatuses, CreateCommitStatus,
};
use gitlab::api::{self, ApiError, AsyncQuery, Pagination};
use gitlab::{AsyncGitlab, GitlabBuilder, RestError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::events::CheckResult as Check;
use crate::events::{Actor, CheckSource, CheckState as EventCheckState, ForgeKind, ReviewState};
use crate::forge::gitlab::webhook::check_state;
use crate::forge::{
    ChangeRequest, ChangeState, CheckKinds, Forge, ForgeError, GitAccess, MergeMethod,
    MergeOutcome, NewChangeRequest, Note, PublishedRelease, ReviewInfo, fit, release_marker,
};

/// GitLab's limit on notes and descriptions, in characters.
const TEXT_LIMIT: usize = 1_000_000;

pub struct GitlabForge {
    client: AsyncGitlab,
    /// The instance URL as configured (without a trailing slash), for links.
    web_url: String,
    clone_base: String,
    token: SecretString,
    /// The token's user: its notes are never commands.
    bot: String,
}

#[derive(Deserialize)]
struct UserBody {
    username: String,
    #[serde(default)]
    bot: bool,
}

impl From<UserBody> for Actor {
    fn from(u: UserBody) -> Actor {
        Actor {
            login: u.username,
            is_bot: u.bot,
        }
    }
}

#[derive(Deserialize)]
struct MergeRequestBody {
    iid: u64,
    source_branch: String,
    target_branch: String,
    state: String,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    squash_commit_sha: Option<String>,
    web_url: String,
    #[serde(default)]
    merge_when_pipeline_succeeds: bool,
    #[serde(default)]
    head_pipeline: Option<PipelineBody>,
    #[serde(default)]
    merged_by: Option<UserBody>,
    #[serde(default)]
    merge_user: Option<UserBody>,
}

impl MergeRequestBody {
    /// The commit the merge made: the merge commit, the squash commit, or (fast-forward) the
    /// head itself.
    fn merged_as(&self) -> String {
        self.merge_commit_sha
            .clone()
            .or_else(|| self.squash_commit_sha.clone())
            .or_else(|| self.sha.clone())
            .unwrap_or_default()
    }

    fn into_change_request(self) -> ChangeRequest {
        let state = match self.state.as_str() {
            "merged" => ChangeState::Merged,
            "opened" | "locked" => ChangeState::Open,
            _ => ChangeState::Closed,
        };
        let merge_commit = (state == ChangeState::Merged).then(|| self.merged_as());
        ChangeRequest {
            number: self.iid,
            head_branch: self.source_branch,
            head_commit: self.sha.unwrap_or_default(),
            base_branch: self.target_branch,
            state,
            merge_commit,
            merged_by: self.merge_user.or(self.merged_by).map(|u| u.username),
            url: self.web_url,
        }
    }
}

#[derive(Deserialize)]
struct NoteBody {
    id: u64,
    body: String,
    author: UserBody,
    #[serde(default)]
    system: bool,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    created_at: Option<time::OffsetDateTime>,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    updated_at: Option<time::OffsetDateTime>,
}

/// A comment on a commit: GitLab gives it no id.
#[derive(Deserialize)]
struct CommitCommentBody {
    note: String,
    author: UserBody,
}

#[derive(Deserialize)]
struct ApprovalsBody {
    #[serde(default)]
    approved_by: Vec<ApprovedBy>,
}

#[derive(Deserialize)]
struct ApprovedBy {
    user: UserBody,
}

#[derive(Deserialize)]
struct PipelineBody {
    #[serde(default)]
    id: u64,
    status: String,
    /// `push`, `merge_request_event`, ...; `external` for the pipeline GitLab makes for
    /// commit statuses posted through the API, which is not the project's CI.
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
struct StatusBody {
    id: u64,
    name: String,
    status: String,
    #[serde(default)]
    author: Option<UserBody>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

#[derive(Deserialize)]
struct ReleaseBody {
    #[serde(default, rename = "_links")]
    links: Option<ReleaseLinks>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct ReleaseLinks {
    #[serde(rename = "self")]
    self_url: Option<String>,
}

#[derive(Deserialize)]
struct MemberBody {
    username: String,
    #[serde(default)]
    state: Option<String>,
    /// Project and group access tokens are bot users that are members too.
    #[serde(default)]
    bot: bool,
}

#[derive(Deserialize)]
struct GroupBody {
    id: u64,
}

/// `GET /groups/:id/descendant_groups`, which the crate does not have: every subgroup, at any
/// depth.
struct DescendantGroups<'a> {
    group: &'a str,
}

impl Endpoint for DescendantGroups<'_> {
    fn method(&self) -> Method {
        Method::GET
    }

    fn endpoint(&self) -> Cow<'static, str> {
        format!(
            "groups/{}/descendant_groups",
            api::common::path_escaped(self.group)
        )
        .into()
    }
}

impl Pageable for DescendantGroups<'_> {}

/// `POST .../merge_requests/:iid/cancel_merge_when_pipeline_succeeds`, which the crate does not
/// have.
struct CancelMergeWhenPipelineSucceeds<'a> {
    project: &'a str,
    merge_request: u64,
}

impl Endpoint for CancelMergeWhenPipelineSucceeds<'_> {
    fn method(&self) -> Method {
        Method::POST
    }

    fn endpoint(&self) -> Cow<'static, str> {
        format!(
            "projects/{}/merge_requests/{}/cancel_merge_when_pipeline_succeeds",
            api::common::path_escaped(self.project),
            self.merge_request
        )
        .into()
    }
}

/// `PUT /projects/:id/releases/:tag_name`, which the crate does not have: a release's name and
/// description.
struct UpdateRelease<'a> {
    project: &'a str,
    tag: &'a str,
    name: &'a str,
    description: &'a str,
}

impl Endpoint for UpdateRelease<'_> {
    fn method(&self) -> Method {
        Method::PUT
    }

    fn endpoint(&self) -> Cow<'static, str> {
        format!(
            "projects/{}/releases/{}",
            api::common::path_escaped(self.project),
            api::common::path_escaped(self.tag)
        )
        .into()
    }

    fn body(&self) -> Result<Option<(&'static str, Vec<u8>)>, BodyError> {
        let body = serde_json::json!({"name": self.name, "description": self.description});
        Ok(Some(("application/json", serde_json::to_vec(&body)?)))
    }
}

fn status_of(e: &ApiError<RestError>) -> Option<u16> {
    match e {
        ApiError::GitlabWithStatus { status, .. }
        | ApiError::GitlabObjectWithStatus { status, .. }
        | ApiError::GitlabUnrecognizedWithStatus { status, .. }
        | ApiError::GitlabService { status, .. } => Some(status.as_u16()),
        _ => None,
    }
}

fn map_err(e: ApiError<RestError>) -> ForgeError {
    if let ApiError::GitlabRateLimited { retry_after, .. } = &e {
        return ForgeError::RateLimited {
            retry_after: (!retry_after.is_zero()).then_some(*retry_after),
        };
    }
    let message = match &e {
        ApiError::GitlabWithStatus { msg, .. } => msg.clone(),
        ApiError::GitlabService { status, .. } => status.to_string(),
        other => crate::forge::with_causes(other),
    };
    match status_of(&e) {
        Some(404) => ForgeError::NotFound(message),
        Some(401 | 403) => ForgeError::Unauthorized(message),
        Some(409) => ForgeError::Conflict(message),
        Some(s) if s >= 500 => ForgeError::Transient(format!("{s}: {message}")),
        Some(_) => ForgeError::Rejected(message),
        // No answer at all: the connection failed or timed out.
        None if matches!(e, ApiError::Client { .. }) => ForgeError::Transient(message),
        None => ForgeError::Rejected(message),
    }
}

/// A request the bot built wrongly: a bug, not something to retry.
fn built(e: impl Display) -> ForgeError {
    ForgeError::Rejected(format!("building the GitLab request: {e}"))
}

impl GitlabForge {
    /// Connects to the instance at `url` (`https://gitlab.com`, `http://127.0.0.1:8080`,
    /// `https://example.com/gitlab`) and asks who the token belongs to.
    pub async fn connect(
        url: &str,
        clone_base: Option<&str>,
        token: SecretString,
    ) -> Result<GitlabForge, ForgeError> {
        let web_url = url.trim_end_matches('/').to_string();
        let (insecure, host) = match web_url.split_once("://") {
            Some(("http", rest)) => (true, rest),
            Some(("https", rest)) => (false, rest),
            _ => {
                return Err(ForgeError::Rejected(format!(
                    "`{web_url}` is not an http(s) URL"
                )));
            }
        };
        let mut builder = GitlabBuilder::new(host, token.expose_secret());
        if insecure {
            builder.insecure();
        }
        let client = builder.build_async().await.map_err(|e| match e {
            gitlab::GitlabError::Api { source } => map_err(source),
            other => ForgeError::Transient(other.to_string()),
        })?;
        let me: UserBody = api::users::CurrentUser::builder()
            .build()
            .map_err(built)?
            .query_async(&client)
            .await
            .map_err(map_err)?;
        Ok(GitlabForge {
            client,
            clone_base: clone_base
                .map(|c| c.trim_end_matches('/').to_string())
                .unwrap_or_else(|| web_url.clone()),
            web_url,
            token,
            bot: me.username,
        })
    }

    async fn query<T, E>(&self, endpoint: E) -> Result<T, ForgeError>
    where
        E: Endpoint + Sync,
        T: serde::de::DeserializeOwned + 'static,
    {
        endpoint.query_async(&self.client).await.map_err(map_err)
    }

    /// Every page of a list.
    async fn all<T, E>(&self, endpoint: E) -> Result<Vec<T>, ForgeError>
    where
        E: Pageable + Endpoint + Sync,
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        api::paged(endpoint, Pagination::All)
            .query_async(&self.client)
            .await
            .map_err(map_err)
    }

    async fn merge_request(&self, repo: &str, number: u64) -> Result<MergeRequestBody, ForgeError> {
        self.query(
            mrs::MergeRequest::builder()
                .project(repo)
                .merge_request(number)
                .build()
                .map_err(built)?,
        )
        .await
    }

    /// Whether `user` is an active member of `group`: with `inherited`, also through a parent
    /// group (`members/all`); without, directly (`members`).
    /// The active members of a group (with `inherited`: also those it inherits from its
    /// parents), logins in lower case; `None` when there is no such group.
    async fn members(
        &self,
        group: &str,
        inherited: bool,
    ) -> Result<Option<Vec<String>>, ForgeError> {
        use api::groups::members::{AllGroupMembers, GroupMembers};
        let members: Result<Vec<MemberBody>, ForgeError> = if inherited {
            let ep = AllGroupMembers::builder()
                .group(group)
                .build()
                .map_err(built)?;
            self.all(ep).await
        } else {
            let ep = GroupMembers::builder()
                .group(group)
                .build()
                .map_err(built)?;
            self.all(ep).await
        };
        let members = match members {
            Ok(m) => m,
            Err(ForgeError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(
            members
                .into_iter()
                .filter(|m| !m.bot && m.state.as_deref().is_none_or(|s| s == "active"))
                .map(|m| m.username.to_ascii_lowercase())
                .collect(),
        ))
    }
}

#[async_trait]
impl Forge for GitlabForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Gitlab
    }

    fn bot_login(&self) -> &str {
        &self.bot
    }

    async fn git_access(&self, repo: &str) -> Result<GitAccess, ForgeError> {
        Ok(GitAccess {
            url: format!("{}/{repo}.git", self.clone_base),
            username: "oauth2",
            token: Some(self.token.clone()),
        })
    }

    async fn find_change_request(
        &self,
        repo: &str,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError> {
        let found: Vec<MergeRequestBody> = self
            .query(
                mrs::MergeRequests::builder()
                    .project(repo)
                    .source_branch(head_branch)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(found
            .into_iter()
            .next()
            .map(MergeRequestBody::into_change_request))
    }

    async fn change_request(&self, repo: &str, number: u64) -> Result<ChangeRequest, ForgeError> {
        Ok(self
            .merge_request(repo, number)
            .await?
            .into_change_request())
    }

    async fn open_change_request(
        &self,
        repo: &str,
        new: &NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError> {
        let mr: MergeRequestBody = self
            .query(
                mrs::CreateMergeRequest::builder()
                    .project(repo)
                    .source_branch(new.head_branch)
                    .target_branch(new.base_branch)
                    .title(new.title)
                    .description(fit(new.body, TEXT_LIMIT))
                    .remove_source_branch(true)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(mr.into_change_request())
    }

    async fn close_change_request(&self, repo: &str, number: u64) -> Result<(), ForgeError> {
        let _: serde_json::Value = self
            .query(
                mrs::EditMergeRequest::builder()
                    .project(repo)
                    .merge_request(number)
                    .state_event(MergeRequestStateEvent::Close)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(())
    }

    async fn notes(&self, repo: &str, number: u64) -> Result<Vec<Note>, ForgeError> {
        let notes: Vec<NoteBody> = self
            .all(
                MergeRequestNotes::builder()
                    .project(repo)
                    .merge_request(number)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(notes
            .into_iter()
            // "approved this merge request" and the like are GitLab's words, not commands.
            .filter(|n| !n.system)
            .map(|n| Note {
                id: n.id,
                author: n.author.into(),
                body: n.body,
                created_at: n.created_at,
                // GitLab moves `updated_at` a few milliseconds past `created_at` on creation
                // (and on resolving): only a later change counts as an edit.
                updated_at: match (n.created_at, n.updated_at) {
                    (Some(c), Some(u)) if u - c < time::Duration::seconds(2) => Some(c),
                    (_, u) => u,
                },
            })
            .collect())
    }

    async fn post_note(&self, repo: &str, number: u64, body: &str) -> Result<u64, ForgeError> {
        let note: IdOnly = self
            .query(
                CreateMergeRequestNote::builder()
                    .project(repo)
                    .merge_request(number)
                    .body(fit(body, TEXT_LIMIT))
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(note.id)
    }

    async fn edit_note(
        &self,
        repo: &str,
        number: u64,
        note_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let _: IdOnly = self
            .query(
                EditMergeRequestNote::builder()
                    .project(repo)
                    .merge_request(number)
                    .note(note_id)
                    .body(fit(body, TEXT_LIMIT))
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(())
    }

    /// The users who pressed "Approve". GitLab does not say on which head: the lifecycle binds
    /// each to the head it first saw it on.
    async fn reviews(&self, repo: &str, number: u64) -> Result<Vec<ReviewInfo>, ForgeError> {
        let approvals: ApprovalsBody = self
            .query(
                MergeRequestApprovals::builder()
                    .project(repo)
                    .merge_request(number)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(approvals
            .approved_by
            .into_iter()
            .map(|a| ReviewInfo {
                source: format!("approval:{}", a.user.username.to_ascii_lowercase()),
                author: a.user.into(),
                state: ReviewState::Approved,
                commit: String::new(),
                // GitLab's approvals API dates no approval.
                at: None,
            })
            .collect())
    }

    /// The newest pipeline of `commit` (as `pipeline`) and the latest status of each job and
    /// external status on it, by name.
    async fn checks(
        &self,
        repo: &str,
        commit: &str,
        kinds: CheckKinds,
    ) -> Result<Vec<Check>, ForgeError> {
        if !kinds.runs && !kinds.statuses {
            return Ok(Vec::new());
        }
        let pipelines: Vec<PipelineBody> = self
            .query(
                Pipelines::builder()
                    .project(repo)
                    .sha(commit)
                    .order_by(PipelineOrderBy::Id)
                    .sort(api::common::SortOrder::Descending)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        let mut checks = Vec::new();
        let mut jobs = std::collections::BTreeSet::new();
        if let Some(p) = pipelines
            .iter()
            .find(|p| p.source.as_deref() != Some("external"))
        {
            checks.push(Check {
                name: "pipeline".into(),
                state: check_state(&p.status),
                source: CheckSource::Pipeline,
                order: p.id,
            });
            // The jobs of the project's own newest pipeline; every other status on the commit
            // was posted through the API, by its author.
            let pipeline_jobs: Vec<StatusBody> = self
                .all(
                    PipelineJobs::builder()
                        .project(repo)
                        .pipeline(p.id)
                        .build()
                        .map_err(built)?,
                )
                .await?;
            for j in pipeline_jobs {
                jobs.insert(j.id);
                checks.push(Check {
                    state: check_state(&j.status),
                    name: j.name,
                    source: CheckSource::Pipeline,
                    order: j.id,
                });
            }
        }
        if !kinds.statuses {
            return Ok(checks);
        }
        let statuses: Vec<StatusBody> = self
            .all(
                CommitStatuses::builder()
                    .project(repo)
                    .commit(commit)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        checks.extend(
            statuses
                .into_iter()
                .filter(|s| !jobs.contains(&s.id))
                .map(|s| Check {
                    state: check_state(&s.status),
                    name: s.name,
                    source: CheckSource::Status {
                        creator: s.author.map(|a| a.username).unwrap_or_default(),
                    },
                    order: s.id,
                }),
        );
        Ok(checks)
    }

    /// Merges pinned to `head_commit`. When GitLab refuses because its own pipeline has not
    /// finished ("Pipelines must succeed"), the bot asks GitLab to merge when it succeeds, still
    /// pinned to that head, instead of racing the pipeline.
    async fn merge(
        &self,
        repo: &str,
        number: u64,
        head_commit: &str,
        method: MergeMethod,
    ) -> Result<MergeOutcome, ForgeError> {
        let request = |when_pipeline_succeeds: bool| {
            mrs::MergeMergeRequest::builder()
                .project(repo)
                .merge_request(number)
                .sha(head_commit)
                .squash(method == MergeMethod::Squash)
                .merge_when_pipeline_succeeds(when_pipeline_succeeds)
                .build()
                .map_err(built)
        };
        let outcome = |mr: MergeRequestBody| {
            if mr.state == "merged" {
                MergeOutcome::Merged(mr.merged_as())
            } else {
                MergeOutcome::Scheduled
            }
        };
        let refused = match request(false)?.query_async(&self.client).await {
            Ok(mr) => return Ok(outcome(mr)),
            Err(e) => e,
        };
        let status = status_of(&refused);
        let mr = self.merge_request(repo, number).await?;
        if mr.state == "merged" {
            return Ok(MergeOutcome::Merged(mr.merged_as()));
        }
        if mr.sha.as_deref() != Some(head_commit) {
            return Err(ForgeError::Conflict(format!(
                "the head moved to {}",
                mr.sha.unwrap_or_default()
            )));
        }
        if mr.merge_when_pipeline_succeeds {
            return Ok(MergeOutcome::Scheduled);
        }
        let running = mr.head_pipeline.as_ref().is_some_and(|p| {
            check_state(&p.status) == EventCheckState::Pending && p.status != "skipped"
        });
        if matches!(status, Some(405 | 406 | 422)) && running {
            let mr: MergeRequestBody = self.query(request(true)?).await?;
            return Ok(outcome(mr));
        }
        Err(match (status, map_err(refused)) {
            // 406: "Branch cannot be merged" (a conflict with the target branch).
            (Some(406), ForgeError::Rejected(why)) => ForgeError::Conflict(why),
            (_, e) => e,
        })
    }

    async fn cancel_scheduled_merge(&self, repo: &str, number: u64) -> Result<(), ForgeError> {
        let cancelled: Result<serde_json::Value, ForgeError> = self
            .query(CancelMergeWhenPipelineSucceeds {
                project: repo,
                merge_request: number,
            })
            .await;
        match cancelled {
            // 406: it was not scheduled (any more); 405: already merged, which reconcile reads.
            Ok(_) | Err(ForgeError::Rejected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A member of `team` (a group path) directly, through a parent group (GitLab's inherited
    /// members), or through any of its subgroups.
    async fn team_members(&self, team: &str) -> Result<Vec<String>, ForgeError> {
        let mut out = match self.members(team, true).await? {
            Some(m) => m,
            None => return Ok(Vec::new()),
        };
        let subgroups: Vec<GroupBody> = match self.all(DescendantGroups { group: team }).await {
            Ok(g) => g,
            Err(ForgeError::NotFound(_)) => return Ok(out),
            Err(e) => return Err(e),
        };
        for g in subgroups {
            out.extend(
                self.members(&g.id.to_string(), false)
                    .await?
                    .unwrap_or_default(),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn set_commit_status(
        &self,
        repo: &str,
        commit: &str,
        failed: bool,
        context: &str,
        description: &str,
    ) -> Result<(), ForgeError> {
        let description = fit(description, 255);
        let _: IdOnly = self
            .query(
                CreateCommitStatus::builder()
                    .project(repo)
                    .commit(commit)
                    .state(if failed {
                        CommitStatusState::Failed
                    } else {
                        CommitStatusState::Success
                    })
                    .name(context)
                    .description(description)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(())
    }

    async fn commit_comments(&self, repo: &str, commit: &str) -> Result<Vec<Note>, ForgeError> {
        let comments: Vec<CommitCommentBody> = self
            .all(
                CommitComments::builder()
                    .project(repo)
                    .commit(commit)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(comments
            .into_iter()
            .map(|c| Note {
                id: 0,
                author: c.author.into(),
                body: c.note,
                created_at: None,
                updated_at: None,
            })
            .collect())
    }

    async fn comment_on_commit(
        &self,
        repo: &str,
        commit: &str,
        body: &str,
    ) -> Result<(), ForgeError> {
        let _: serde_json::Value = self
            .query(
                CommentOnCommit::builder()
                    .project(repo)
                    .commit(commit)
                    .note(fit(body, TEXT_LIMIT))
                    .build()
                    .map_err(built)?,
            )
            .await?;
        Ok(())
    }

    async fn publish_release(
        &self,
        repo: &str,
        release: &PublishedRelease<'_>,
        existing: bool,
    ) -> Result<String, ForgeError> {
        let fallback = format!("{}/{repo}/-/releases/{}", self.web_url, release.tag);
        let url = |r: ReleaseBody| r.links.and_then(|l| l.self_url).unwrap_or(fallback.clone());
        let body = fit(release.body, TEXT_LIMIT);
        if !existing {
            let created: Result<ReleaseBody, ForgeError> = self
                .query(
                    CreateRelease::builder()
                        .project(repo)
                        .tag_name(release.tag)
                        .name(release.name)
                        .description(body.clone())
                        .build()
                        .map_err(built)?,
                )
                .await;
            match created {
                Ok(r) => return Ok(url(r)),
                // 409 "Release already exists": an earlier attempt's, or someone else's.
                Err(ForgeError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let r: ReleaseBody = self
            .query(
                ProjectReleaseByTag::builder()
                    .project(repo)
                    .tag(release.tag)
                    .build()
                    .map_err(built)?,
            )
            .await?;
        let theirs = r.description.as_deref().unwrap_or_default();
        if !theirs.contains(&release_marker(release.tag)) {
            return Err(ForgeError::Conflict(format!(
                "a release of {} that the bot did not make exists",
                release.tag
            )));
        }
        if theirs.trim() == body.trim() && r.name.as_deref() == Some(release.name) {
            return Ok(url(r));
        }
        let updated: ReleaseBody = self
            .query(UpdateRelease {
                project: repo,
                tag: release.tag,
                name: release.name,
                description: &body,
            })
            .await?;
        Ok(url(updated))
    }
}

#[cfg(test)]
mod unreachable_tests {
    use super::*;

    /// A stale `url` (nothing listens there) fails with the address and the reason.
    #[tokio::test]
    async fn an_unreachable_instance_is_named_with_the_reason() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let err = GitlabForge::connect(
            &format!("http://{addr}"),
            None,
            SecretString::from("glpat-a-token".to_string()),
        )
        .await
        .err()
        .expect("nothing listens there")
        .to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
        assert!(!err.contains("glpat-a-token"), "{err}");
    }
}
