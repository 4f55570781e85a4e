//! GitLab's REST API (v4): the operations the bot uses, over the same state and real git
//! repositories as the GitHub routes. Paths and bodies after GitLab's API documentation and the
//! recorded responses in `fixtures/gitlab/api`; request bodies are form-encoded or JSON, as the
//! `gitlab` crate sends them.

// Handlers answer `Result<Response, Response>` so `?` works on look-ups.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use git2::Signature;
use serde_json::{Value, json};

use crate::gitlab_payloads as gl;
use crate::{
    Comment, CommitComment, CommitStatus, Pull, Release, Repo, Shared, State as FakeState,
};

type Answer = Result<Response, Response>;
type Params = HashMap<String, String>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("404 {what} Not Found"))
}

fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

fn created(v: Value) -> Answer {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// A request body as the crate sends it: `application/x-www-form-urlencoded` or JSON.
fn params(headers: &HeaderMap, body: &[u8]) -> Params {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let s = v
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string());
                        (k.clone(), s)
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        serde_urlencoded::from_bytes(body).unwrap_or_default()
    }
}

fn flag(p: &Params, name: &str) -> bool {
    p.get(name).is_some_and(|v| v == "true")
}

/// A project by its full path (URL-decoded by the router) or numeric id.
fn project_name(st: &FakeState, id: &str) -> Option<String> {
    if st.repos.contains_key(id) {
        return Some(id.to_string());
    }
    let n: u64 = id.parse().ok()?;
    st.repos
        .values()
        .find(|r| r.id == n)
        .map(|r| r.full_name.clone())
}

fn project<'a>(st: &'a FakeState, id: &str) -> Result<&'a Repo, Response> {
    let name = project_name(st, id).ok_or_else(|| not_found("Project"))?;
    Ok(&st.repos[&name])
}

fn project_mut<'a>(st: &'a mut FakeState, id: &str) -> Result<&'a mut Repo, Response> {
    let name = project_name(st, id).ok_or_else(|| not_found("Project"))?;
    Ok(st.repos.get_mut(&name).unwrap())
}

/// A first page only: the fake's lists are short, and a later page is empty (GitLab's offset
/// pagination, which the crate follows until a page is not full).
fn page(list: Vec<Value>, q: &Params) -> Answer {
    if q.get("page").is_some_and(|p| p != "1") {
        return ok(json!([]));
    }
    ok(Value::Array(list))
}

pub fn router(state: Shared) -> Router {
    let project = "/api/v4/projects/{id}";
    let mr = "/api/v4/projects/{id}/merge_requests/{iid}";
    Router::new()
        .route("/api/v4/user", get(current_user))
        .route(
            &format!("{project}/merge_requests"),
            get(list_merge_requests).post(create_merge_request),
        )
        .route(mr, get(get_merge_request).put(update_merge_request))
        .route(&format!("{mr}/merge"), put(merge))
        .route(
            &format!("{mr}/cancel_merge_when_pipeline_succeeds"),
            post(cancel_auto_merge),
        )
        .route(&format!("{mr}/notes"), get(list_notes).post(create_note))
        .route(&format!("{mr}/notes/{{note}}"), put(update_note))
        .route(&format!("{mr}/approvals"), get(approvals))
        .route(&format!("{project}/pipelines"), get(pipelines))
        .route(
            &format!("{project}/pipelines/{{pipeline}}/jobs"),
            get(pipeline_jobs),
        )
        .route(
            &format!("{project}/repository/commits/{{sha}}/statuses"),
            get(commit_statuses),
        )
        .route(&format!("{project}/statuses/{{sha}}"), post(create_status))
        .route(
            &format!("{project}/repository/commits/{{sha}}/comments"),
            post(create_commit_comment).get(list_commit_comments),
        )
        .route(&format!("{project}/repository/tags"), post(create_tag))
        .route(&format!("{project}/repository/tags/{{tag}}"), get(get_tag))
        .route(&format!("{project}/releases"), post(create_release))
        .route(
            &format!("{project}/releases/{{tag}}"),
            get(get_release).put(update_release),
        )
        .route("/api/v4/groups/{id}/members/all", get(all_members))
        .route("/api/v4/groups/{id}/members", get(direct_members))
        .route(
            "/api/v4/groups/{id}/descendant_groups",
            get(descendant_groups),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api::log_and_fail,
        ))
        .with_state(state)
}

async fn current_user(State(s): State<Shared>) -> Answer {
    let st = s.lock().unwrap();
    ok(gl::user(&st, &st.token_login))
}

async fn list_merge_requests(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let list = repo
        .pulls
        .iter()
        .rev()
        .filter(|p| q.get("source_branch").is_none_or(|b| *b == p.head))
        .filter(|p| match q.get("state").map(String::as_str) {
            Some("opened") => p.open,
            Some("merged") => p.merged,
            Some("closed") => !p.open && !p.merged,
            _ => true,
        })
        .map(|p| gl::merge_request(&st, repo, p))
        .collect();
    page(list, &q)
}

async fn create_merge_request(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let (answer, hook) = {
        let mut st = s.lock().unwrap();
        let user = st.token_login.clone();
        let now = st.now();
        let repo = project_mut(&mut st, &id)?;
        let (head, base) = (
            p.get("source_branch").cloned().unwrap_or_default(),
            p.get("target_branch").cloned().unwrap_or_default(),
        );
        if repo.branch_tip(&head).is_none() || repo.branch_tip(&base).is_none() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "source_branch or target_branch does not exist",
            ));
        }
        if repo
            .pulls
            .iter()
            .any(|x| x.open && x.head == head && x.base == base)
        {
            return Err(error(
                StatusCode::CONFLICT,
                &format!(
                    "Another open merge request already exists for this source branch: !{}",
                    repo.pulls
                        .iter()
                        .find(|x| x.open && x.head == head)
                        .unwrap()
                        .number
                ),
            ));
        }
        let number = repo.next_number;
        repo.next_number += 1;
        let pull = Pull {
            number,
            title: p.get("title").cloned().unwrap_or_default(),
            body: p.get("description").cloned().unwrap_or_default(),
            head,
            base,
            open: true,
            merged: false,
            merge_commit_sha: None,
            user: user.clone(),
            auto_merge: false,
            updated_at: now,
            merged_by: None,
        };
        repo.pulls.push(pull.clone());
        let st = &*st;
        let repo = project(st, &id)?;
        (
            gl::merge_request(st, repo, &pull),
            gl::merge_request_hook(st, repo, &pull, "open", &user, None),
        )
    };
    crate::deliver(&s, &crate::http(&s), "Merge Request Hook", hook).await;
    created(answer)
}

async fn get_merge_request(
    State(s): State<Shared>,
    UrlPath((id, iid)): UrlPath<(String, u64)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let pull = repo.pull(iid).ok_or_else(|| not_found("Merge Request"))?;
    ok(gl::merge_request(&st, repo, pull))
}

async fn update_merge_request(
    State(s): State<Shared>,
    UrlPath((id, iid)): UrlPath<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let (answer, hook) = {
        let mut st = s.lock().unwrap();
        let user = st.token_login.clone();
        let repo = project_mut(&mut st, &id)?;
        let pull = repo
            .pulls
            .iter_mut()
            .find(|x| x.number == iid)
            .ok_or_else(|| not_found("Merge Request"))?;
        let mut closed_now = false;
        if p.get("state_event").map(String::as_str) == Some("close") && pull.open {
            pull.open = false;
            pull.auto_merge = false;
            closed_now = true;
        }
        if let Some(t) = p.get("title") {
            pull.title = t.clone();
        }
        let pull = pull.clone();
        let st = &*st;
        let repo = project(st, &id)?;
        (
            gl::merge_request(st, repo, &pull),
            closed_now.then(|| gl::merge_request_hook(st, repo, &pull, "close", &user, None)),
        )
    };
    if let Some(h) = hook {
        crate::deliver(&s, &crate::http(&s), "Merge Request Hook", h).await;
    }
    ok(answer)
}

/// `PUT .../merge`: pinned by `sha`; refused while "Pipelines must succeed" is not met, unless
/// asked to merge when the pipeline succeeds.
async fn merge(
    State(s): State<Shared>,
    UrlPath((id, iid)): UrlPath<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let (answer, hook) = {
        let mut st = s.lock().unwrap();
        let user = st.token_login.clone();
        let repo = project_mut(&mut st, &id)?;
        let pull = repo
            .pull(iid)
            .ok_or_else(|| not_found("Merge Request"))?
            .clone();
        if !pull.open {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed",
            ));
        }
        let head = repo.branch_tip(&pull.head).unwrap_or_default();
        if p.get("sha").is_some_and(|s| *s != head) {
            return Err(error(
                StatusCode::CONFLICT,
                &format!("SHA does not match HEAD of source branch: {head}"),
            ));
        }
        let pipeline = repo
            .pipelines
            .iter()
            .rev()
            .find(|pl| pl.sha == head)
            .map(|pl| pl.status(repo));
        let when_green = flag(&p, "merge_when_pipeline_succeeds") || flag(&p, "auto_merge");
        if when_green && pipeline.is_some_and(|s| s == "running") {
            let pull = repo.pulls.iter_mut().find(|x| x.number == iid).unwrap();
            pull.auto_merge = true;
            let pull = pull.clone();
            let st = &*st;
            return ok(gl::merge_request(st, project(st, &id)?, &pull));
        }
        if repo.pipeline_must_succeed && pipeline != Some("success") {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed",
            ));
        }
        repo.merge_pull(
            iid,
            flag(&p, "squash"),
            ("GitLab", "noreply@gitlab.example.com"),
            &user,
        )
        .map_err(|_| error(StatusCode::NOT_ACCEPTABLE, "Branch cannot be merged"))?;
        let pull = repo.pull(iid).unwrap().clone();
        let st = &*st;
        let repo = project(st, &id)?;
        (
            gl::merge_request(st, repo, &pull),
            gl::merge_request_hook(st, repo, &pull, "merge", &user, None),
        )
    };
    crate::deliver(&s, &crate::http(&s), "Merge Request Hook", hook).await;
    ok(answer)
}

async fn cancel_auto_merge(
    State(s): State<Shared>,
    UrlPath((id, iid)): UrlPath<(String, u64)>,
) -> Answer {
    let mut st = s.lock().unwrap();
    let repo = project_mut(&mut st, &id)?;
    let pull = repo
        .pulls
        .iter_mut()
        .find(|x| x.number == iid)
        .ok_or_else(|| not_found("Merge Request"))?;
    if !pull.open || !pull.auto_merge {
        return Err(error(StatusCode::NOT_ACCEPTABLE, "406 Not Acceptable"));
    }
    pull.auto_merge = false;
    let pull = pull.clone();
    let st = &*st;
    created(gl::merge_request(st, project(st, &id)?, &pull))
}

async fn list_notes(
    State(s): State<Shared>,
    UrlPath((id, iid)): UrlPath<(String, u64)>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    repo.pull(iid).ok_or_else(|| not_found("Merge Request"))?;
    let list = repo
        .comments
        .iter()
        .filter(|c| c.number == iid)
        .map(|c| gl::note(&st, c))
        .collect();
    page(list, &q)
}

async fn create_note(
    State(s): State<Shared>,
    UrlPath((id, iid)): UrlPath<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let (answer, hook) = {
        let mut st = s.lock().unwrap();
        let user = crate::User {
            login: st.token_login.clone(),
            is_bot: true,
        };
        let note_id = st.id();
        let now = st.now();
        let repo = project_mut(&mut st, &id)?;
        repo.pull(iid).ok_or_else(|| not_found("Merge Request"))?;
        let c = Comment {
            id: note_id,
            number: iid,
            user,
            body: p.get("body").cloned().unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        repo.comments.push(c.clone());
        let st = &*st;
        let repo = project(st, &id)?;
        (
            gl::note(st, &c),
            gl::note_hook(st, repo, repo.pull(iid).unwrap(), &c, "create"),
        )
    };
    crate::deliver(&s, &crate::http(&s), "Note Hook", hook).await;
    created(answer)
}

async fn update_note(
    State(s): State<Shared>,
    UrlPath((id, iid, note)): UrlPath<(String, u64, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let (answer, hook) = {
        let mut st = s.lock().unwrap();
        let repo = project_mut(&mut st, &id)?;
        let c = repo
            .comments
            .iter_mut()
            .find(|c| c.id == note && c.number == iid)
            .ok_or_else(|| not_found("Note"))?;
        if let Some(b) = p.get("body") {
            c.body = b.clone();
        }
        let c = c.clone();
        let st = &*st;
        let repo = project(st, &id)?;
        (
            gl::note(st, &c),
            gl::note_hook(st, repo, repo.pull(iid).unwrap(), &c, "update"),
        )
    };
    crate::deliver(&s, &crate::http(&s), "Note Hook", hook).await;
    ok(answer)
}

async fn approvals(State(s): State<Shared>, UrlPath((id, iid)): UrlPath<(String, u64)>) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let pull = repo.pull(iid).ok_or_else(|| not_found("Merge Request"))?;
    ok(gl::approvals(&st, repo, pull))
}

async fn pipelines(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    // Newest first, GitLab's default order (by id, descending).
    let list = repo
        .pipelines
        .iter()
        .rev()
        .filter(|pl| q.get("sha").is_none_or(|s| *s == pl.sha))
        .map(|pl| gl::pipeline_body(repo, pl))
        .collect();
    page(list, &q)
}

async fn pipeline_jobs(
    State(s): State<Shared>,
    UrlPath((id, pipeline)): UrlPath<(String, u64)>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let pl = repo
        .pipelines
        .iter()
        .find(|p| p.id == pipeline)
        .ok_or_else(|| not_found("Pipeline"))?;
    let list = gl::pipeline_jobs(&st, repo, pl)
        .as_array()
        .cloned()
        .unwrap_or_default();
    page(list, &q)
}

async fn commit_statuses(
    State(s): State<Shared>,
    UrlPath((id, sha)): UrlPath<(String, String)>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let list = gl::commit_statuses(&st, repo, &sha)
        .as_array()
        .cloned()
        .unwrap_or_default();
    page(list, &q)
}

async fn create_status(
    State(s): State<Shared>,
    UrlPath((id, sha)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let mut st = s.lock().unwrap();
    let status_id = st.id();
    let creator = st.token_login.clone();
    let repo = project_mut(&mut st, &id)?;
    let name = p.get("name").cloned().unwrap_or_else(|| "default".into());
    let state = p.get("state").cloned().unwrap_or_default();
    if !matches!(
        state.as_str(),
        "pending" | "running" | "success" | "failed" | "canceled" | "skipped"
    ) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "state does not have a valid value",
        ));
    }
    let status = CommitStatus {
        id: status_id,
        sha: sha.clone(),
        context: name.clone(),
        state: state.clone(),
        description: p.get("description").cloned().unwrap_or_default(),
        creator,
    };
    repo.statuses
        .retain(|x| !(x.sha == sha && x.context == name && x.creator == status.creator));
    repo.statuses.push(status.clone());
    let st = &*st;
    created(gl::commit_status(
        st,
        status_id,
        &sha,
        &name,
        &state,
        &status.description,
        &status.creator,
    ))
}

async fn create_commit_comment(
    State(s): State<Shared>,
    UrlPath((id, sha)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let mut st = s.lock().unwrap();
    let comment_id = st.id();
    let author = st.token_login.clone();
    let repo = project_mut(&mut st, &id)?;
    let c = CommitComment {
        id: comment_id,
        sha,
        body: p.get("note").cloned().unwrap_or_default(),
        author,
    };
    repo.commit_comments.push(c.clone());
    let body = gl::commit_comment(&st, &c);
    created(body)
}

async fn list_commit_comments(
    State(s): State<Shared>,
    UrlPath((id, sha)): UrlPath<(String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    ok(Value::Array(
        repo.commit_comments
            .iter()
            .filter(|c| c.sha == sha)
            .map(|c| gl::commit_comment(&st, c))
            .collect(),
    ))
}

async fn create_tag(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let git = repo.git();
    let name = p.get("tag_name").cloned().unwrap_or_default();
    if git.find_reference(&format!("refs/tags/{name}")).is_ok() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("Tag {name} already exists"),
        ));
    }
    let target = git
        .revparse_single(p.get("ref").map(String::as_str).unwrap_or_default())
        .and_then(|o| o.peel(git2::ObjectType::Commit))
        .map_err(|_| error(StatusCode::BAD_REQUEST, "Target ref is invalid"))?;
    let message = p.get("message").cloned().unwrap_or_default();
    if message.is_empty() {
        git.reference(&format!("refs/tags/{name}"), target.id(), false, "api")
            .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    } else {
        let sig = Signature::now(&st.token_login, "bot@gitlab.example.com").unwrap();
        git.tag_annotation_create(&name, &target, &sig, &message)
            .and_then(|oid| git.reference(&format!("refs/tags/{name}"), oid, false, "api"))
            .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    }
    created(gl::tag(&name, &target.id().to_string(), &message))
}

async fn get_tag(State(s): State<Shared>, UrlPath((id, tag)): UrlPath<(String, String)>) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let git = repo.git();
    let reference = git
        .find_reference(&format!("refs/tags/{tag}"))
        .map_err(|_| not_found("Tag"))?;
    let commit = reference.peel_to_commit().map_err(|_| not_found("Tag"))?;
    let message = reference
        .peel_to_tag()
        .ok()
        .and_then(|t| t.message().ok().flatten().map(String::from))
        .unwrap_or_default();
    ok(gl::tag(&tag, &commit.id().to_string(), &message))
}

async fn create_release(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let mut st = s.lock().unwrap();
    let release_id = st.id();
    let repo = project_mut(&mut st, &id)?;
    let tag = p.get("tag_name").cloned().unwrap_or_default();
    if repo.releases.iter().any(|x| x.tag == tag) {
        return Err(error(StatusCode::CONFLICT, "Release already exists"));
    }
    if repo
        .git()
        .find_reference(&format!("refs/tags/{tag}"))
        .is_err()
    {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Ref is not specified",
        ));
    }
    let rel = Release {
        id: release_id,
        tag,
        name: p.get("name").cloned().unwrap_or_default(),
        body: p.get("description").cloned().unwrap_or_default(),
        prerelease: false,
    };
    repo.releases.push(rel.clone());
    created(gl::release(repo, &rel))
}

/// `PUT /projects/:id/releases/:tag_name`: name and description, each if given.
async fn update_release(
    State(s): State<Shared>,
    UrlPath((id, tag)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let p = params(&headers, &body);
    let mut st = s.lock().unwrap();
    let repo = project_mut(&mut st, &id)?;
    let rel = repo
        .releases
        .iter_mut()
        .find(|x| x.tag == tag)
        .ok_or_else(|| not_found("Release"))?;
    if let Some(name) = p.get("name") {
        rel.name = name.clone();
    }
    if let Some(text) = p.get("description") {
        rel.body = text.clone();
    }
    let rel = rel.clone();
    let repo = project(&st, &id)?;
    ok(gl::release(repo, &rel))
}

async fn get_release(
    State(s): State<Shared>,
    UrlPath((id, tag)): UrlPath<(String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = project(&st, &id)?;
    let rel = repo
        .releases
        .iter()
        .find(|x| x.tag == tag)
        .ok_or_else(|| not_found("Release"))?;
    ok(gl::release(repo, rel))
}

/// A group by full path or id.
fn group_path(st: &FakeState, id: &str) -> Result<String, Response> {
    if st.group_ids.contains_key(id) {
        return Ok(id.to_string());
    }
    let n: u64 = id.parse().map_err(|_| not_found("Group"))?;
    st.group_ids
        .iter()
        .find(|(_, gid)| **gid == n)
        .map(|(p, _)| p.clone())
        .ok_or_else(|| not_found("Group"))
}

fn members_of(st: &FakeState, groups: &[&str], q: &Params) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    for g in groups {
        for m in st.teams.get(*g).into_iter().flatten() {
            if q.get("query")
                .is_none_or(|needle| m.contains(needle.as_str()))
            {
                seen.insert(m.clone());
            }
        }
    }
    seen.iter().map(|m| gl::member(st, m)).collect()
}

/// Direct members and those inherited from every ancestor group.
async fn all_members(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let path = group_path(&st, &id)?;
    let ancestors: Vec<&str> = st
        .group_ids
        .keys()
        .filter(|g| path == **g || path.starts_with(&format!("{g}/")))
        .map(String::as_str)
        .collect();
    page(members_of(&st, &ancestors, &q), &q)
}

async fn direct_members(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let path = group_path(&st, &id)?;
    page(members_of(&st, &[path.as_str()], &q), &q)
}

async fn descendant_groups(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Params>,
) -> Answer {
    let st = s.lock().unwrap();
    let path = group_path(&st, &id)?;
    let list = st
        .group_ids
        .iter()
        .filter(|(g, _)| g.starts_with(&format!("{path}/")))
        .map(|(g, gid)| gl::group(*gid, g))
        .collect();
    page(list, &q)
}
