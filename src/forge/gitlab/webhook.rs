//! GitLab webhook payloads into forge-neutral [`Event`]s (Push, Note, Merge Request and
//! Pipeline hooks). As for GitHub, only the fields the bot uses are declared.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::events::{
    Actor, Check, CheckResult, CheckSource, CheckState, Comment, CommentAction, Event, PullRequest,
    PullRequestAction, Push, RepoRef,
};
use crate::forge::PayloadError;

/// GitLab lists at most this many commits in a push payload.
const PUSH_COMMIT_LIMIT: usize = 20;

/// The `X-Gitlab-Event` values the bot subscribes to.
pub const EVENT_KINDS: &[&str] = &[
    "Push Hook",
    "Note Hook",
    "Merge Request Hook",
    "Pipeline Hook",
];

/// Parses a payload of kind `kind` (the `X-Gitlab-Event` header).
pub fn parse(kind: &str, body: &[u8]) -> Result<Option<Event>, PayloadError> {
    use crate::forge::parse_payload as de;
    Ok(match kind {
        "Push Hook" => push(de(kind, body)?),
        "Note Hook" => note(de(kind, body)?),
        "Merge Request Hook" => merge_request(de(kind, body)?),
        "Pipeline Hook" => pipeline(de(kind, body)?),
        _ => None,
    })
}

#[derive(Deserialize)]
struct Project {
    id: u64,
    path_with_namespace: String,
    #[serde(default)]
    default_branch: Option<String>,
}

impl Project {
    fn to_ref(&self) -> RepoRef {
        RepoRef {
            full_name: self.path_with_namespace.clone(),
            id: self.id,
        }
    }
}

#[derive(Deserialize)]
struct User {
    username: String,
    #[serde(default)]
    bot: Option<bool>,
}

impl From<User> for Actor {
    fn from(u: User) -> Actor {
        Actor {
            login: u.username,
            is_bot: u.bot.unwrap_or(false),
        }
    }
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    user_username: String,
    project: Project,
    #[serde(default)]
    commits: Vec<PushCommit>,
    #[serde(default)]
    total_commits_count: Option<usize>,
}

#[derive(Deserialize)]
struct PushCommit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

fn push(p: PushPayload) -> Option<Event> {
    let branch = p.git_ref.strip_prefix("refs/heads/")?.to_string();
    if p.after.chars().all(|c| c == '0') {
        return None; // the branch was deleted
    }
    let paths: BTreeSet<String> = p
        .commits
        .iter()
        .flat_map(|c| c.added.iter().chain(&c.modified))
        .cloned()
        .collect();
    let truncated = p.commits.len() >= PUSH_COMMIT_LIMIT
        || p.total_commits_count.is_some_and(|n| n > p.commits.len());
    Some(Event::Push(Push {
        repo: p.project.to_ref(),
        default_branch: p.project.default_branch.clone().unwrap_or_default(),
        branch,
        before: p.before,
        after: p.after,
        pusher: Actor {
            login: p.user_username,
            is_bot: false,
        },
        changed_paths: paths.into_iter().collect(),
        truncated,
        // GitLab names commit authors by name and email only, and dates no push.
        head_author: None,
        pushed_at: None,
    }))
}

#[derive(Deserialize)]
struct NotePayload {
    user: User,
    project: Project,
    object_attributes: NoteAttributes,
    #[serde(default)]
    merge_request: Option<MergeRequestRef>,
}

#[derive(Deserialize)]
struct NoteAttributes {
    id: u64,
    note: String,
    noteable_type: String,
    #[serde(default)]
    system: bool,
    #[serde(default)]
    action: Option<String>,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    created_at: Option<time::OffsetDateTime>,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    updated_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct MergeRequestRef {
    iid: u64,
}

fn note(p: NotePayload) -> Option<Event> {
    // System notes ("approved this merge request") are GitLab's own words, never commands.
    if p.object_attributes.noteable_type != "MergeRequest" || p.object_attributes.system {
        return None;
    }
    let action = match p.object_attributes.action.as_deref() {
        Some("update") => CommentAction::Edited,
        _ => CommentAction::Created,
    };
    Some(Event::Comment(Comment {
        repo: p.project.to_ref(),
        number: p.merge_request?.iid,
        on_pull_request: true,
        comment_id: p.object_attributes.id,
        action,
        author: p.user.into(),
        body: p.object_attributes.note,
        created_at: p.object_attributes.created_at,
        updated_at: p.object_attributes.updated_at,
    }))
}

#[derive(Deserialize)]
struct MergeRequestPayload {
    user: User,
    project: Project,
    object_attributes: MergeRequestAttributes,
}

#[derive(Deserialize)]
struct MergeRequestAttributes {
    iid: u64,
    source_branch: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    oldrev: Option<String>,
    #[serde(default)]
    last_commit: Option<LastCommit>,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    updated_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

fn merge_request(p: MergeRequestPayload) -> Option<Event> {
    let a = p.object_attributes;
    let (action, merged) = match a.action.as_deref()? {
        "open" => (PullRequestAction::Opened, false),
        // An update with `oldrev` moved the head; other updates (title, labels) do not matter.
        "update" if a.oldrev.is_some() => (PullRequestAction::Synchronize, false),
        "merge" => (PullRequestAction::Closed, true),
        "close" => (PullRequestAction::Closed, false),
        "reopen" => (PullRequestAction::Reopened, false),
        "approved" | "approval" => (PullRequestAction::Approved, false),
        "unapproved" | "unapproval" => (PullRequestAction::Unapproved, false),
        _ => return None,
    };
    Some(Event::PullRequest(PullRequest {
        repo: p.project.to_ref(),
        number: a.iid,
        action,
        head_branch: a.source_branch,
        head_commit: a.last_commit.map(|c| c.id).unwrap_or_default(),
        merged,
        actor: p.user.into(),
        at: a.updated_at,
    }))
}

#[derive(Deserialize)]
struct PipelinePayload {
    project: Project,
    object_attributes: PipelineAttributes,
    #[serde(default)]
    builds: Vec<Build>,
}

#[derive(Deserialize)]
struct PipelineAttributes {
    id: u64,
    sha: String,
    status: String,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
struct Build {
    id: u64,
    name: String,
    status: String,
}

/// GitLab's pipeline, job and commit status words as one state (webhooks and API alike).
pub(crate) fn check_state(status: &str) -> CheckState {
    match status {
        "success" => CheckState::Success,
        "failed" | "canceled" => CheckState::Failure,
        // created, waiting_for_resource, preparing, pending, running, manual, scheduled;
        // a skipped job has not passed either.
        _ => CheckState::Pending,
    }
}

fn pipeline(p: PipelinePayload) -> Option<Event> {
    // The pipeline GitLab makes for commit statuses posted through the API is not the
    // project's CI (anyone with Developer access can post one); the bot reads those statuses
    // with their creators instead.
    if p.object_attributes.source.as_deref() == Some("external") {
        return None;
    }
    // The pipeline itself under one stable name (its own `name` is a description such as
    // "Pipeline for branch: main"), then each job by its name, the newest run of a retried job.
    let mut jobs: std::collections::BTreeMap<String, (u64, CheckState)> = Default::default();
    for b in p.builds {
        let state = check_state(&b.status);
        match jobs.get(&b.name) {
            Some((id, _)) if *id > b.id => {}
            _ => {
                jobs.insert(b.name, (b.id, state));
            }
        }
    }
    // A Pipeline Hook reports the project's own pipeline: its jobs are of the `Pipeline`
    // source, which an external commit status (anyone's, through the API) is not.
    let mut results = vec![CheckResult {
        name: "pipeline".into(),
        state: check_state(&p.object_attributes.status),
        source: CheckSource::Pipeline,
        order: p.object_attributes.id,
    }];
    results.extend(jobs.into_iter().map(|(name, (id, state))| CheckResult {
        name,
        state,
        source: CheckSource::Pipeline,
        order: id,
    }));
    Some(Event::Check(Check {
        repo: p.project.to_ref(),
        commit: p.object_attributes.sha,
        results,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/gitlab/webhooks")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn every_gitlab_example_parses_into_its_event() {
        let cases = [
            ("push_hook.json", "Push Hook"),
            ("tag_push_hook.json", "Tag Push Hook"),
            ("note_hook_merge_request.json", "Note Hook"),
            ("merge_request_hook.json", "Merge Request Hook"),
            ("pipeline_hook.json", "Pipeline Hook"),
        ];
        for (file, kind) in cases {
            let event = parse(kind, &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            match (kind, &event) {
                ("Push Hook", Some(Event::Push(p))) => {
                    assert_eq!(
                        (p.repo.full_name.as_str(), p.branch.as_str()),
                        ("mike/diaspora", "master")
                    );
                    assert_eq!(p.pusher.login, "jsmith");
                    assert!(!p.changed_paths.is_empty());
                }
                ("Tag Push Hook", None) => {}
                ("Note Hook", Some(Event::Comment(c))) => {
                    assert!(c.on_pull_request);
                    assert_eq!(c.author.login, "root");
                }
                ("Merge Request Hook", Some(Event::PullRequest(m))) => {
                    assert_eq!(m.action, PullRequestAction::Opened);
                    assert_eq!(m.head_commit, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
                }
                ("Pipeline Hook", Some(Event::Check(c))) => {
                    let got: Vec<(&str, CheckState)> = c
                        .results
                        .iter()
                        .map(|r| (r.name.as_str(), r.state))
                        .collect();
                    assert_eq!(
                        got,
                        [
                            ("pipeline", CheckState::Success),
                            ("build-image", CheckState::Success),
                            ("production", CheckState::Pending),
                            ("staging", CheckState::Pending),
                            ("test-build", CheckState::Failure),
                            ("test-image", CheckState::Success),
                        ]
                    );
                }
                other => panic!("{file}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn approvals_merges_and_head_moves_are_told_apart() {
        let text = String::from_utf8(fixture("merge_request_hook.json")).unwrap();
        for (action, want) in [
            ("\"approved\"", Some((PullRequestAction::Approved, false))),
            ("\"merge\"", Some((PullRequestAction::Closed, true))),
            ("\"close\"", Some((PullRequestAction::Closed, false))),
            ("\"update\"", None), // the example has no oldrev: a title edit, nothing to do
        ] {
            let body = text.replacen("\"action\": \"open\"", &format!("\"action\": {action}"), 1);
            assert_ne!(body, text, "the example has an open action");
            let got = parse("Merge Request Hook", body.as_bytes())
                .unwrap()
                .map(|e| match e {
                    Event::PullRequest(p) => (p.action, p.merged),
                    other => panic!("{other:?}"),
                });
            assert_eq!(got, want, "{action}");
        }
    }
}
