//! GitLab-shaped bodies: webhook payloads from GitLab's documented examples
//! (`fixtures/gitlab/webhooks`) and API responses from recorded GitLab responses
//! (`fixtures/gitlab/api`), with the fake's state written over the fields that carry it.

use serde_json::{Value, json};

use crate::payloads::set;
use crate::{CheckRun, Comment, CommitComment, Pull, Repo, State};

macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/gitlab/",
            $path
        ))
    };
}

fn template(text: &str) -> Value {
    serde_json::from_str(text).expect("GitLab's examples are JSON")
}

const WEB: &str = "https://gitlab.example.com";

/// A user as the REST API shows one (`author`, `user`, a member).
pub fn user(st: &State, login: &str) -> Value {
    let mut v = template(fixture!("api/user.json"));
    set(&mut v, "id", json!(st.user_id(login)));
    set(&mut v, "username", json!(login));
    set(&mut v, "name", json!(login));
    set(&mut v, "bot", json!(st.is_bot(login)));
    set(&mut v, "web_url", json!(format!("{WEB}/{login}")));
    v
}

fn author(st: &State, login: &str) -> Value {
    json!({
        "id": st.user_id(login),
        "username": login,
        "name": login,
        "state": "active",
        "bot": st.is_bot(login),
        "web_url": format!("{WEB}/{login}"),
    })
}

/// The project object webhooks carry.
fn hook_project(r: &Repo, from: &Value) -> Value {
    let mut v = from["project"].clone();
    let name = r.full_name.rsplit('/').next().unwrap_or_default();
    set(&mut v, "id", json!(r.id));
    set(&mut v, "name", json!(name));
    set(&mut v, "path_with_namespace", json!(r.full_name));
    set(&mut v, "default_branch", json!(r.default_branch));
    set(&mut v, "web_url", json!(format!("{WEB}/{}", r.full_name)));
    set(
        &mut v,
        "git_http_url",
        json!(format!("file://{}", r.path.display())),
    );
    v
}

pub fn merge_request(st: &State, r: &Repo, p: &Pull) -> Value {
    let mut v = template(fixture!("api/merge_request.json"));
    let sha = r.branch_tip(&p.head);
    set(&mut v, "id", json!(r.id * 100_000 + p.number));
    set(&mut v, "iid", json!(p.number));
    set(&mut v, "project_id", json!(r.id));
    set(&mut v, "title", json!(p.title));
    set(&mut v, "description", json!(p.body));
    set(&mut v, "source_branch", json!(p.head));
    set(&mut v, "target_branch", json!(p.base));
    set(
        &mut v,
        "state",
        json!(match (p.open, p.merged) {
            (true, _) => "opened",
            (false, true) => "merged",
            (false, false) => "closed",
        }),
    );
    set(&mut v, "sha", json!(sha));
    set(&mut v, "merge_commit_sha", json!(p.merge_commit_sha));
    set(&mut v, "squash_commit_sha", Value::Null);
    set(&mut v, "merge_when_pipeline_succeeds", json!(p.auto_merge));
    let merger = p
        .merged_by
        .as_deref()
        .map(|m| author(st, m))
        .unwrap_or(Value::Null);
    set(&mut v, "merged_by", merger.clone());
    set(&mut v, "merge_user", merger);
    set(&mut v, "author", author(st, &p.user));
    set(
        &mut v,
        "web_url",
        json!(format!(
            "{WEB}/{}/-/merge_requests/{}",
            r.full_name, p.number
        )),
    );
    let pipeline = sha
        .as_deref()
        .and_then(|s| r.pipelines.iter().rev().find(|pl| pl.sha == s));
    let head_pipeline = pipeline.map(|pl| pipeline_body(r, pl));
    set(&mut v, "head_pipeline", json!(head_pipeline));
    set(&mut v, "pipeline", json!(head_pipeline));
    v
}

/// A time as GitLab's API writes it (RFC 3339, with milliseconds).
fn api_time(t: time::OffsetDateTime) -> Value {
    json!(
        t.format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap()
    )
}

/// A time as GitLab's webhooks write it (`2015-05-17 18:21:36 UTC`).
fn hook_time(t: time::OffsetDateTime) -> Value {
    json!(
        t.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap()
    )
}

pub fn note(st: &State, c: &Comment) -> Value {
    let mut v = template(fixture!("api/note.json"));
    set(&mut v, "id", json!(c.id));
    set(&mut v, "created_at", api_time(c.created_at));
    set(&mut v, "updated_at", api_time(c.updated_at));
    set(&mut v, "body", json!(c.body));
    set(&mut v, "author", author(st, &c.user.login));
    set(&mut v, "noteable_iid", json!(c.number));
    set(&mut v, "noteable_type", json!("MergeRequest"));
    set(&mut v, "system", json!(false));
    v
}

/// GitLab's commit comment (no fixture holds one: the shape of GitLab's API documentation,
/// `doc/api/commits.md`, with the author from the recorded user).
pub fn commit_comment(st: &State, c: &CommitComment) -> Value {
    json!({
        "note": c.body,
        "path": null,
        "line": null,
        "line_type": null,
        "author": author(st, &c.author),
        "created_at": "2026-01-01T00:00:00.000Z",
    })
}

pub fn approvals(st: &State, r: &Repo, p: &Pull) -> Value {
    let mut v = template(fixture!("api/merge_request_approvals.json"));
    set(&mut v, "iid", json!(p.number));
    set(&mut v, "project_id", json!(r.id));
    set(&mut v, "title", json!(p.title));
    let approved: Vec<Value> = r
        .reviews
        .iter()
        .filter(|rv| rv.number == p.number && rv.state == "APPROVED")
        .map(|rv| json!({"user": author(st, &rv.user.login)}))
        .collect();
    set(&mut v, "approvals_left", json!(0));
    set(&mut v, "approved_by", json!(approved));
    v
}

/// A pipeline in the fake: the jobs (check runs) reported on one commit.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: u64,
    pub sha: String,
    pub branch: String,
}

impl Pipeline {
    /// GitLab's pipeline status from its jobs' statuses.
    pub fn status(&self, r: &Repo) -> &'static str {
        let jobs: Vec<&CheckRun> = r.check_runs.iter().filter(|c| c.sha == self.sha).collect();
        if jobs
            .iter()
            .any(|j| matches!(j.conclusion.as_deref(), Some("failure" | "failed")))
        {
            "failed"
        } else if !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| j.conclusion.as_deref() == Some("success"))
        {
            "success"
        } else {
            "running"
        }
    }
}

fn job_status(c: &CheckRun) -> &'static str {
    match c.conclusion.as_deref() {
        Some("success") => "success",
        Some("failure" | "failed") => "failed",
        Some("cancelled" | "canceled") => "canceled",
        Some(_) => "failed",
        None if c.status == "queued" => "pending",
        None => "running",
    }
}

pub fn pipeline_body(r: &Repo, pl: &Pipeline) -> Value {
    let mut v = template(fixture!("api/pipeline_basic.json"));
    set(&mut v, "id", json!(pl.id));
    set(&mut v, "iid", json!(pl.id));
    set(&mut v, "project_id", json!(r.id));
    set(&mut v, "sha", json!(pl.sha));
    set(&mut v, "ref", json!(pl.branch));
    set(&mut v, "source", json!("merge_request_event"));
    set(&mut v, "status", json!(pl.status(r)));
    set(
        &mut v,
        "web_url",
        json!(format!("{WEB}/{}/-/pipelines/{}", r.full_name, pl.id)),
    );
    v
}

/// Commit statuses: each job of the commit's pipeline and each external status, latest only.
pub fn commit_statuses(st: &State, r: &Repo, sha: &str) -> Value {
    let mut out = Vec::new();
    let runner = st.token_login.clone();
    for c in r.check_runs.iter().filter(|c| c.sha == sha) {
        out.push(commit_status(
            st,
            c.id,
            sha,
            &c.name,
            job_status(c),
            "",
            &runner,
        ));
    }
    for s in r.statuses.iter().filter(|s| s.sha == sha) {
        out.push(commit_status(
            st,
            s.id,
            sha,
            &s.context,
            &s.state,
            &s.description,
            &s.creator,
        ));
    }
    json!(out)
}

/// The jobs of a pipeline (`GET /projects/:id/pipelines/:pipeline_id/jobs`): GitLab's job
/// fields the bot reads (id, name, status), on the recorded commit status's shape.
pub fn pipeline_jobs(st: &State, r: &Repo, pl: &Pipeline) -> Value {
    let runner = st.token_login.clone();
    json!(
        r.check_runs
            .iter()
            .filter(|c| c.sha == pl.sha)
            .map(|c| commit_status(st, c.id, &pl.sha, &c.name, job_status(c), "", &runner))
            .collect::<Vec<_>>()
    )
}

pub fn commit_status(
    st: &State,
    id: u64,
    sha: &str,
    name: &str,
    status: &str,
    description: &str,
    creator: &str,
) -> Value {
    let mut v = template(fixture!("api/commit_status.json"));
    set(&mut v, "id", json!(id));
    set(&mut v, "sha", json!(sha));
    set(&mut v, "name", json!(name));
    set(&mut v, "status", json!(status));
    set(&mut v, "description", json!(description));
    set(&mut v, "author", author(st, creator));
    v
}

pub fn tag(name: &str, commit: &str, message: &str) -> Value {
    let mut v = template(fixture!("api/tag.json"));
    set(&mut v, "name", json!(name));
    set(&mut v, "message", json!(message));
    set(&mut v, "target", json!(commit));
    set(&mut v, "commit/id", json!(commit));
    set(&mut v, "commit/short_id", json!(&commit[..8]));
    v
}

pub fn release(r: &Repo, rel: &crate::Release) -> Value {
    let mut v = template(fixture!("api/release.json"));
    set(&mut v, "tag_name", json!(rel.tag));
    set(&mut v, "name", json!(rel.name));
    set(&mut v, "description", json!(rel.body));
    set(
        &mut v,
        "_links/self",
        json!(format!("{WEB}/{}/-/releases/{}", r.full_name, rel.tag)),
    );
    v
}

pub fn member(st: &State, login: &str) -> Value {
    let mut v = template(fixture!("api/member.json"));
    set(&mut v, "id", json!(st.user_id(login)));
    set(&mut v, "username", json!(login));
    set(&mut v, "name", json!(login));
    set(&mut v, "state", json!("active"));
    v
}

pub fn group(id: u64, full_path: &str) -> Value {
    let mut v = template(fixture!("api/group.json"));
    let path = full_path.rsplit('/').next().unwrap_or_default();
    set(&mut v, "id", json!(id));
    set(&mut v, "full_path", json!(full_path));
    set(&mut v, "path", json!(path));
    set(&mut v, "name", json!(path));
    set(&mut v, "full_name", json!(full_path));
    set(&mut v, "projects", json!([]));
    v
}

// --- webhooks ---

pub fn push_hook(
    st: &State,
    r: &Repo,
    branch: &str,
    (before, after): (&str, &str),
    changes: (&[&str], &[&str], &[&str]),
    pusher: &str,
    message: &str,
) -> Value {
    let mut v = template(fixture!("webhooks/push_hook.json"));
    let (added, modified, removed) = changes;
    set(&mut v, "ref", json!(format!("refs/heads/{branch}")));
    set(&mut v, "before", json!(before));
    set(&mut v, "after", json!(after));
    set(&mut v, "checkout_sha", json!(after));
    set(&mut v, "user_username", json!(pusher));
    set(&mut v, "user_name", json!(pusher));
    set(&mut v, "user_id", json!(st.user_id(pusher)));
    set(&mut v, "project_id", json!(r.id));
    let project = hook_project(r, &v);
    set(&mut v, "project", project);
    let mut commit = v["commits"][0].clone();
    set(&mut commit, "id", json!(after));
    set(&mut commit, "message", json!(message));
    set(&mut commit, "title", json!(message));
    set(&mut commit, "added", json!(added));
    set(&mut commit, "modified", json!(modified));
    set(&mut commit, "removed", json!(removed));
    set(&mut v, "commits", json!([commit]));
    set(&mut v, "total_commits_count", json!(1));
    v
}

pub fn note_hook(st: &State, r: &Repo, p: &Pull, c: &Comment, action: &str) -> Value {
    let mut v = template(fixture!("webhooks/note_hook_merge_request.json"));
    let project = hook_project(r, &v);
    set(&mut v, "project", project);
    set(&mut v, "project_id", json!(r.id));
    set(&mut v, "user/username", json!(c.user.login));
    set(&mut v, "user/name", json!(c.user.login));
    set(&mut v, "user/id", json!(st.user_id(&c.user.login)));
    set(&mut v, "user/bot", json!(c.user.is_bot));
    set(&mut v, "object_attributes/id", json!(c.id));
    set(&mut v, "object_attributes/note", json!(c.body));
    set(
        &mut v,
        "object_attributes/noteable_type",
        json!("MergeRequest"),
    );
    set(&mut v, "object_attributes/system", json!(false));
    set(&mut v, "object_attributes/action", json!(action));
    set(
        &mut v,
        "object_attributes/created_at",
        hook_time(c.created_at),
    );
    set(
        &mut v,
        "object_attributes/updated_at",
        hook_time(c.updated_at),
    );
    set(&mut v, "merge_request/iid", json!(p.number));
    set(&mut v, "merge_request/source_branch", json!(p.head));
    set(&mut v, "merge_request/target_branch", json!(p.base));
    set(
        &mut v,
        "merge_request/last_commit/id",
        json!(r.branch_tip(&p.head)),
    );
    v
}

pub fn merge_request_hook(
    st: &State,
    r: &Repo,
    p: &Pull,
    action: &str,
    actor: &str,
    oldrev: Option<&str>,
) -> Value {
    let mut v = template(fixture!("webhooks/merge_request_hook.json"));
    let project = hook_project(r, &v);
    set(&mut v, "project", project);
    set(&mut v, "user/username", json!(actor));
    set(&mut v, "user/name", json!(actor));
    set(&mut v, "user/id", json!(st.user_id(actor)));
    set(&mut v, "user/bot", json!(st.is_bot(actor)));
    let a = "object_attributes";
    set(&mut v, &format!("{a}/iid"), json!(p.number));
    set(&mut v, &format!("{a}/title"), json!(p.title));
    set(&mut v, &format!("{a}/source_branch"), json!(p.head));
    set(&mut v, &format!("{a}/target_branch"), json!(p.base));
    set(&mut v, &format!("{a}/action"), json!(action));
    set(&mut v, &format!("{a}/updated_at"), hook_time(p.updated_at));
    set(
        &mut v,
        &format!("{a}/state"),
        json!(match (p.open, p.merged) {
            (true, _) => "opened",
            (false, true) => "merged",
            (false, false) => "closed",
        }),
    );
    set(
        &mut v,
        &format!("{a}/last_commit/id"),
        json!(r.branch_tip(&p.head)),
    );
    set(
        &mut v,
        &format!("{a}/merge_commit_sha"),
        json!(p.merge_commit_sha),
    );
    match oldrev {
        Some(old) => set(&mut v, &format!("{a}/oldrev"), json!(old)),
        None => {
            if let Some(attrs) = v[a].as_object_mut() {
                attrs.remove("oldrev");
            }
        }
    }
    v
}

pub fn pipeline_hook(r: &Repo, pl: &Pipeline) -> Value {
    let mut v = template(fixture!("webhooks/pipeline_hook.json"));
    let project = hook_project(r, &v);
    set(&mut v, "project", project);
    set(&mut v, "object_attributes/id", json!(pl.id));
    set(&mut v, "object_attributes/sha", json!(pl.sha));
    set(&mut v, "object_attributes/ref", json!(pl.branch));
    set(&mut v, "object_attributes/status", json!(pl.status(r)));
    let template_build = v["builds"][0].clone();
    let builds: Vec<Value> = r
        .check_runs
        .iter()
        .filter(|c| c.sha == pl.sha)
        .map(|c| {
            let mut b = template_build.clone();
            set(&mut b, "id", json!(c.id));
            set(&mut b, "name", json!(c.name));
            set(&mut b, "status", json!(job_status(c)));
            b
        })
        .collect();
    set(&mut v, "builds", json!(builds));
    v
}
