//! GitHub webhook payloads into forge-neutral [`Event`]s.
//!
//! Only the fields the bot uses are declared; serde skips the rest without building them, which
//! keeps the parse (done once, at the door) cheap. A payload of a known kind that does not parse
//! is an error that names the JSON path; an unknown kind, or an action the bot does not act on,
//! is `Ok(None)`.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::events::{
    Actor, Check, CheckResult, CheckSource, CheckState, Comment, CommentAction, Event,
    Installation, PullRequest, PullRequestAction, Push, RepoRef, Review, ReviewState,
};

/// GitHub lists at most this many commits in a push payload.
const PUSH_COMMIT_LIMIT: usize = 20;

/// The event kinds the bot subscribes to.
pub const EVENT_KINDS: &[&str] = &[
    "push",
    "issue_comment",
    "pull_request_review",
    "pull_request",
    "check_run",
    "check_suite",
    "status",
    "installation",
];

/// Parses a payload of kind `kind` (the `X-GitHub-Event` header).
pub fn parse(kind: &str, body: &[u8]) -> Result<Option<Event>, crate::forge::PayloadError> {
    use crate::forge::parse_payload as de;
    Ok(match kind {
        "push" => push(de(kind, body)?),
        "issue_comment" => comment(de(kind, body)?),
        "pull_request_review" => review(de(kind, body)?),
        "pull_request" => pull_request(de(kind, body)?),
        "check_run" => check_run(de(kind, body)?),
        "check_suite" => check_suite(de(kind, body)?),
        "status" => status(de(kind, body)?),
        "installation" => installation(de(kind, body)?),
        _ => None,
    })
}

#[derive(Deserialize)]
struct Repository<'a> {
    id: u64,
    #[serde(borrow)]
    full_name: std::borrow::Cow<'a, str>,
    #[serde(default)]
    default_branch: Option<String>,
    /// In push payloads, when the push reached GitHub (a Unix time); a date elsewhere.
    #[serde(default)]
    pushed_at: Option<serde_json::Value>,
}

impl Repository<'_> {
    fn to_ref(&self) -> RepoRef {
        RepoRef {
            full_name: self.full_name.to_string(),
            id: self.id,
        }
    }
}

/// A GitHub account as payloads and API responses show it.
#[derive(Deserialize)]
pub(crate) struct User {
    pub(crate) login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

impl From<User> for Actor {
    fn from(u: User) -> Actor {
        Actor {
            is_bot: u.kind.as_deref() == Some("Bot"),
            login: u.login,
        }
    }
}

#[derive(Deserialize)]
struct PushPayload<'a> {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    commits: Vec<PushCommit>,
    #[serde(default)]
    head_commit: Option<HeadCommit>,
    #[serde(borrow)]
    repository: Repository<'a>,
    sender: User,
}

#[derive(Deserialize)]
struct HeadCommit {
    #[serde(default)]
    author: Option<CommitAuthor>,
}

#[derive(Deserialize)]
struct CommitAuthor {
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct PushCommit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

fn push(p: PushPayload<'_>) -> Option<Event> {
    // Tag pushes and branch deletions never start a release.
    let branch = p.git_ref.strip_prefix("refs/heads/")?.to_string();
    if p.deleted {
        return None;
    }
    let paths: BTreeSet<String> = p
        .commits
        .iter()
        .flat_map(|c| c.added.iter().chain(&c.modified))
        .cloned()
        .collect();
    Some(Event::Push(Push {
        repo: p.repository.to_ref(),
        default_branch: p.repository.default_branch.clone().unwrap_or_default(),
        branch,
        before: p.before,
        after: p.after,
        pusher: p.sender.into(),
        changed_paths: paths.into_iter().collect(),
        truncated: p.commits.len() >= PUSH_COMMIT_LIMIT,
        head_author: p
            .head_commit
            .and_then(|c| c.author)
            .and_then(|a| a.username),
        pushed_at: p
            .repository
            .pushed_at
            .as_ref()
            .and_then(|v| v.as_i64())
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()),
    }))
}

#[derive(Deserialize)]
struct CommentPayload<'a> {
    action: &'a str,
    issue: Issue,
    comment: IssueComment,
    #[serde(borrow)]
    repository: Repository<'a>,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    #[serde(default)]
    pull_request: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct IssueComment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: User,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    created_at: Option<time::OffsetDateTime>,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    updated_at: Option<time::OffsetDateTime>,
}

fn comment(p: CommentPayload<'_>) -> Option<Event> {
    let action = match p.action {
        "created" => CommentAction::Created,
        "edited" => CommentAction::Edited,
        "deleted" => CommentAction::Deleted,
        _ => return None,
    };
    Some(Event::Comment(Comment {
        repo: p.repository.to_ref(),
        number: p.issue.number,
        on_pull_request: p.issue.pull_request.is_some(),
        comment_id: p.comment.id,
        action,
        author: p.comment.user.into(),
        body: p.comment.body.unwrap_or_default(),
        created_at: p.comment.created_at,
        updated_at: p.comment.updated_at,
    }))
}

#[derive(Deserialize)]
struct ReviewPayload<'a> {
    action: &'a str,
    review: ReviewBody<'a>,
    pull_request: Numbered,
    #[serde(borrow)]
    repository: Repository<'a>,
}

#[derive(Deserialize)]
struct ReviewBody<'a> {
    id: u64,
    #[serde(default)]
    commit_id: Option<String>,
    state: &'a str,
    user: User,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    submitted_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct Numbered {
    number: u64,
}

fn review(p: ReviewPayload<'_>) -> Option<Event> {
    let state = match (p.action, p.review.state.to_ascii_lowercase().as_str()) {
        ("dismissed", _) | (_, "dismissed") => ReviewState::Dismissed,
        ("submitted" | "edited", "approved") => ReviewState::Approved,
        ("submitted" | "edited", "changes_requested") => ReviewState::ChangesRequested,
        ("submitted" | "edited", "commented") => ReviewState::Commented,
        _ => return None,
    };
    Some(Event::Review(Review {
        repo: p.repository.to_ref(),
        number: p.pull_request.number,
        review_id: p.review.id,
        state,
        author: p.review.user.into(),
        commit: p.review.commit_id.unwrap_or_default(),
        submitted_at: p.review.submitted_at,
    }))
}

#[derive(Deserialize)]
struct PullRequestPayload<'a> {
    action: &'a str,
    pull_request: PullRequestBody,
    #[serde(borrow)]
    repository: Repository<'a>,
    sender: User,
}

#[derive(Deserialize)]
struct PullRequestBody {
    number: u64,
    head: Head,
    #[serde(default)]
    merged: Option<bool>,
    /// When the pull request last changed (for `synchronize`: the push).
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    updated_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
}

fn pull_request(p: PullRequestPayload<'_>) -> Option<Event> {
    let action = match p.action {
        "opened" => PullRequestAction::Opened,
        "synchronize" => PullRequestAction::Synchronize,
        "closed" => PullRequestAction::Closed,
        "reopened" => PullRequestAction::Reopened,
        _ => return None,
    };
    Some(Event::PullRequest(PullRequest {
        repo: p.repository.to_ref(),
        number: p.pull_request.number,
        action,
        head_branch: p.pull_request.head.branch,
        head_commit: p.pull_request.head.sha,
        merged: p.pull_request.merged.unwrap_or(false),
        actor: p.sender.into(),
        at: p.pull_request.updated_at,
    }))
}

/// A check run's or suite's status and conclusion, as one state (webhooks and API alike).
pub(crate) fn check_state(status: Option<&str>, conclusion: Option<&str>) -> CheckState {
    match (status, conclusion) {
        (Some("completed"), Some("success" | "neutral" | "skipped")) => CheckState::Success,
        (Some("completed"), _) => CheckState::Failure,
        _ => CheckState::Pending,
    }
}

#[derive(Deserialize)]
struct CheckRunPayload<'a> {
    check_run: CheckRunBody<'a>,
    #[serde(borrow)]
    repository: Repository<'a>,
}

#[derive(Deserialize)]
struct CheckRunBody<'a> {
    id: u64,
    head_sha: String,
    name: String,
    #[serde(default)]
    app: Option<App>,
    #[serde(default)]
    status: Option<&'a str>,
    #[serde(default)]
    conclusion: Option<&'a str>,
}

fn check_run(p: CheckRunPayload<'_>) -> Option<Event> {
    Some(Event::Check(Check {
        repo: p.repository.to_ref(),
        results: vec![CheckResult {
            state: check_state(p.check_run.status, p.check_run.conclusion),
            name: p.check_run.name,
            source: App::source(p.check_run.app),
            order: p.check_run.id,
        }],
        commit: p.check_run.head_sha,
    }))
}

#[derive(Deserialize)]
struct CheckSuitePayload<'a> {
    check_suite: CheckSuiteBody<'a>,
    #[serde(borrow)]
    repository: Repository<'a>,
}

#[derive(Deserialize)]
struct CheckSuiteBody<'a> {
    id: u64,
    head_sha: String,
    #[serde(default)]
    status: Option<&'a str>,
    #[serde(default)]
    conclusion: Option<&'a str>,
    #[serde(default)]
    app: Option<App>,
}

#[derive(Deserialize)]
pub(crate) struct App {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl App {
    /// The source of a check run made by this app (GitHub's examples carry no slug: the
    /// name stands in, and the id always counts).
    pub(crate) fn source(app: Option<App>) -> CheckSource {
        match app {
            Some(a) => CheckSource::App {
                slug: a.slug.or(a.name).unwrap_or_default(),
                id: a.id,
            },
            None => CheckSource::App {
                slug: String::new(),
                id: 0,
            },
        }
    }
}

fn check_suite(p: CheckSuitePayload<'_>) -> Option<Event> {
    // A suite is named after its app; the reconcile reads the individual runs.
    let source = App::source(p.check_suite.app);
    let name = match &source {
        CheckSource::App { slug, .. } if !slug.is_empty() => slug.clone(),
        _ => "check suite".to_string(),
    };
    Some(Event::Check(Check {
        repo: p.repository.to_ref(),
        results: vec![CheckResult {
            state: check_state(p.check_suite.status, p.check_suite.conclusion),
            name,
            source,
            order: p.check_suite.id,
        }],
        commit: p.check_suite.head_sha,
    }))
}

#[derive(Deserialize)]
struct StatusPayload<'a> {
    id: u64,
    sha: String,
    sender: User,
    context: String,
    state: &'a str,
    #[serde(borrow)]
    repository: Repository<'a>,
}

/// A commit status's state (webhooks and API alike).
pub(crate) fn status_state(state: &str) -> CheckState {
    match state {
        "success" => CheckState::Success,
        "failure" | "error" => CheckState::Failure,
        _ => CheckState::Pending,
    }
}

fn status(p: StatusPayload<'_>) -> Option<Event> {
    let state = status_state(p.state);
    Some(Event::Check(Check {
        repo: p.repository.to_ref(),
        commit: p.sha,
        results: vec![CheckResult {
            name: p.context,
            state,
            // The status was posted by the delivery's sender.
            source: CheckSource::Status {
                creator: p.sender.login,
            },
            order: p.id,
        }],
    }))
}

#[derive(Deserialize)]
struct InstallationPayload {
    action: String,
    installation: InstallationBody,
}

#[derive(Deserialize)]
struct InstallationBody {
    id: u64,
    account: User,
}

fn installation(p: InstallationPayload) -> Option<Event> {
    Some(Event::Installation(Installation {
        action: p.action,
        installation_id: p.installation.id,
        account: p.installation.account.login,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(rel: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/github/webhooks/api.github.com")
            .join(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn every_github_fixture_parses_into_its_event() {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/github/webhooks/api.github.com");
        let mut seen = 0;
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            let kind = dir.file_name().unwrap().to_str().unwrap().to_string();
            assert!(EVENT_KINDS.contains(&kind.as_str()), "{kind} is subscribed");
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                let body = std::fs::read(&f).unwrap();
                let event = parse(&kind, &body).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                let name = f.file_name().unwrap().to_str().unwrap();
                // The examples of a tag push (a deletion) are the only ones that are not events.
                match (&event, kind.as_str()) {
                    (None, "push") => {}
                    (Some(Event::Push(_)), "push")
                    | (Some(Event::Comment(_)), "issue_comment")
                    | (Some(Event::Review(_)), "pull_request_review")
                    | (Some(Event::PullRequest(_)), "pull_request")
                    | (Some(Event::Check(_)), "check_run" | "check_suite" | "status")
                    | (Some(Event::Installation(_)), "installation") => {}
                    other => panic!("{kind}/{name}: unexpected {other:?}"),
                }
                // The stored form round-trips.
                if let Some(e) = event {
                    let json = serde_json::to_string(&e).unwrap();
                    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
                }
                seen += 1;
            }
        }
        assert!(seen >= 37, "all fixtures were read ({seen})");
    }

    #[test]
    fn push_to_a_branch_lists_changed_paths() {
        let Some(Event::Push(p)) =
            parse("push", &fixture("push/with-new-branch.payload.json")).unwrap()
        else {
            panic!("a push")
        };
        assert_eq!(p.branch, "master");
        assert_eq!(p.default_branch, "master");
        assert_eq!(p.repo.full_name, "Codertocat/Hello-World");
        assert_eq!(p.changed_paths, ["README.md"]);
        assert!(!p.truncated);
        assert_eq!(p.pusher.login, "Codertocat");
        // The plain example deletes a tag: no event.
        assert_eq!(parse("push", &fixture("push/payload.json")).unwrap(), None);
    }

    #[test]
    fn comments_reviews_and_checks_keep_what_the_bot_needs() {
        let Some(Event::Comment(c)) = parse(
            "issue_comment",
            &fixture("issue_comment/edited.payload.json"),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.action, CommentAction::Edited);
        assert_eq!(c.author.login, "Codertocat");
        assert!(!c.on_pull_request, "the example comments on an issue");

        // GitHub's review example is `commented`; an approval differs only in `state`.
        let body = String::from_utf8(fixture("pull_request_review/submitted.payload.json"))
            .unwrap()
            .replace("\"state\": \"commented\"", "\"state\": \"approved\"");
        let Some(Event::Review(r)) = parse("pull_request_review", body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.state, ReviewState::Approved);
        assert_eq!(r.commit, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");

        let Some(Event::Check(k)) =
            parse("check_run", &fixture("check_run/completed.payload.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (k.results[0].name.as_str(), k.results[0].state),
            ("Octocoders-linter", CheckState::Success)
        );
        let Some(Event::Check(s)) = parse("status", &fixture("status/payload.json")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (s.results[0].name.as_str(), s.results[0].state),
            ("default", CheckState::Success)
        );
    }

    #[test]
    fn a_broken_payload_names_the_json_path_and_unknown_kinds_are_ignored() {
        let body = String::from_utf8(fixture("issue_comment/created.payload.json"))
            .unwrap()
            .replacen("\"number\": ", "\"number\": \"x\", \"_n\": ", 1);
        let e = parse("issue_comment", body.as_bytes()).unwrap_err();
        assert_eq!(e.path, "issue.number", "{e}");
        assert!(
            e.to_string()
                .contains("`issue_comment` payload does not parse at `issue.number`")
        );
        assert_eq!(parse("ping", b"{\"zen\": \"hi\"}").unwrap(), None);
        assert_eq!(parse("deployment", b"not even json").unwrap(), None);
    }
}
