//! The REST routes: the operations of GitHub's description the bot uses, over the fake's state.

// Handlers answer `Result<Response, Response>` so `?` works on look-ups; the size of the error
// variant does not matter in a test double.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use git2::{Oid, Signature};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Comment, CommitComment, CommitStatus, Pull, Release, Shared, payloads};

type Answer = Result<Response, Response>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

fn ok(v: Value) -> Answer {
    Ok(Json(v).into_response())
}

fn created(v: Value) -> Answer {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub fn router(state: Shared) -> Router {
    let repo = "/repos/{owner}/{repo}";
    Router::new()
        .route(repo, get(get_repo))
        .route(&format!("{repo}/pulls"), get(list_pulls).post(create_pull))
        .route(
            &format!("{repo}/pulls/{{number}}"),
            get(get_pull).patch(update_pull),
        )
        .route(&format!("{repo}/pulls/{{number}}/merge"), put(merge_pull))
        .route(
            &format!("{repo}/pulls/{{number}}/reviews"),
            get(list_reviews),
        )
        .route(
            &format!("{repo}/issues/{{number}}/comments"),
            get(list_comments).post(create_comment),
        )
        .route(
            &format!("{repo}/issues/comments/{{id}}"),
            patch(update_comment),
        )
        .route(
            &format!("{repo}/commits/{{sha}}/check-runs"),
            get(list_check_runs),
        )
        .route(
            &format!("{repo}/commits/{{sha}}/status"),
            get(combined_status),
        )
        .route(
            &format!("{repo}/commits/{{sha}}/statuses"),
            get(list_statuses),
        )
        .route(
            &format!("{repo}/commits/{{sha}}/comments"),
            post(create_commit_comment).get(list_commit_comments),
        )
        .route(&format!("{repo}/statuses/{{sha}}"), post(create_status))
        .route(&format!("{repo}/git/ref/{{*name}}"), get(get_ref))
        .route(&format!("{repo}/git/refs"), post(create_ref))
        .route(&format!("{repo}/git/tags"), post(create_tag))
        .route(&format!("{repo}/git/tags/{{sha}}"), get(get_tag))
        .route(&format!("{repo}/releases"), post(create_release))
        .route(
            &format!("{repo}/releases/{{release_id}}"),
            patch(update_release),
        )
        .route(
            &format!("{repo}/releases/tags/{{tag}}"),
            get(release_by_tag),
        )
        .route(
            "/orgs/{org}/teams/{slug}/memberships/{user}",
            get(membership),
        )
        .route("/orgs/{org}/teams/{slug}/members", get(team_members))
        .route(&format!("{repo}/installation"), get(repo_installation))
        .route(&format!("{repo}/contents/{{*path}}"), get(get_content))
        .route("/app/installations/{id}/access_tokens", post(access_token))
        .layer(middleware::from_fn_with_state(state.clone(), log_and_fail))
        .with_state(state)
}

/// The injected failure that matches a request, if one does (and one fewer of it): its status,
/// `Retry-After`, and whether the request is carried out first.
pub(crate) fn take_failure(
    state: &Shared,
    method: &str,
    path: &str,
) -> Option<(u16, Option<u64>, bool)> {
    let mut st = state.lock().unwrap();
    let hit = st
        .failures
        .iter_mut()
        .find(|f| f.times > 0 && f.method == method && path.starts_with(&f.path_prefix));
    hit.map(|f| {
        f.times -= 1;
        (f.status, f.retry_after, f.carried_out)
    })
}

/// Logs every request; answers with an injected failure when one matches; wants a token.
pub(crate) async fn log_and_fail(
    State(state): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let injected = take_failure(&state, &method, &path);
    let response = if let Some((status, retry_after, carried_out)) = injected {
        if carried_out {
            let done = next.run(req).await;
            assert!(
                done.status().is_success(),
                "a request whose answer is to be lost must succeed: {method} {path} -> {}",
                done.status()
            );
        }
        if status == 0 {
            return std::future::pending().await;
        }
        let status = StatusCode::from_u16(status).unwrap();
        let message = if retry_after.is_some() {
            "API rate limit exceeded"
        } else {
            "Injected failure"
        };
        let mut r = error(status, message);
        if let Some(s) = retry_after {
            r.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&s.to_string()).unwrap(),
            );
        }
        r
    } else if let Err(why) = authorized(&state, &path, &method, req.headers()) {
        error(StatusCode::UNAUTHORIZED, why)
    } else {
        let if_none_match = req.headers().get("if-none-match").cloned();
        let is_get = req.method() == axum::http::Method::GET;
        let response = next.run(req).await;
        if is_get && response.status() == StatusCode::OK {
            with_etag(response, if_none_match).await
        } else {
            response
        }
    };
    state.lock().unwrap().requests.push(crate::LoggedRequest {
        method,
        path,
        status: response.status().as_u16(),
    });
    response
}

/// GitHub's conditional requests: every read carries an ETag of its body, and a request that
/// names the current one gets 304 with no body.
async fn with_etag(response: Response, if_none_match: Option<HeaderValue>) -> Response {
    use sha2::Digest;
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&bytes)[..16]));
    let etag = HeaderValue::from_str(&etag).unwrap();
    parts.headers.insert("etag", etag.clone());
    if if_none_match.as_ref() == Some(&etag) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove("content-length");
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Without an App, any token will do. With one, the App endpoints want its JWT (RS256, signed
/// with its private key, `iss` = app id, not expired) and everything else an installation token
/// the fake issued.
fn authorized(
    state: &Shared,
    path: &str,
    method: &str,
    headers: &axum::http::HeaderMap,
) -> Result<(), &'static str> {
    let st = state.lock().unwrap();
    let anonymous =
        !headers.contains_key("authorization") && !headers.contains_key("private-token");
    if st.anonymous_reads && method == "GET" && anonymous {
        return Ok(());
    }
    if st.flavor == crate::Flavor::Gitlab {
        // GitLab's personal, project and group tokens travel as `PRIVATE-TOKEN`.
        let token = headers.get("private-token").and_then(|v| v.to_str().ok());
        return match (token, &st.gitlab_token) {
            (None, _) => Err("401 Unauthorized"),
            (Some(t), Some(want)) if t != want => Err("401 Unauthorized"),
            _ => Ok(()),
        };
    }
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err("Requires authentication");
    };
    let Some((app_id, public_pem, _)) = &st.app else {
        return Ok(());
    };
    let credential = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .unwrap_or_default();
    if path.starts_with("/app/") || path.ends_with("/installation") {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes())
            .map_err(|_| "the registered App key is not an RSA public key")?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // `iss` is checked below: GitHub Apps put a number there, which the crate does not read.
        validation.set_required_spec_claims(&["exp", "iat"]);
        let claims = jsonwebtoken::decode::<Value>(credential, &key, &validation)
            .map_err(|_| "A JSON web token could not be decoded")?
            .claims;
        let iss = claims["iss"]
            .as_u64()
            .or_else(|| claims["iss"].as_str()?.parse().ok());
        if iss != Some(*app_id) {
            return Err("'Issuer' claim ('iss') must be the App's id");
        }
        Ok(())
    } else if st.issued_tokens.iter().any(|t| t == credential) {
        Ok(())
    } else {
        Err("Bad credentials")
    }
}

async fn repo_installation(
    State(s): State<Shared>,
    UrlPath((o, r)): UrlPath<(String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let (app_id, _, installation) = st.app.clone().ok_or_else(not_found)?;
    ok(
        json!({"id": installation, "app_id": app_id, "account": {"login": o, "type": "Organization"},
              "repository_selection": "all", "target_type": "Organization",
              "permissions": {"contents": "write", "pull_requests": "write"}}),
    )
}

async fn access_token(State(s): State<Shared>, UrlPath(id): UrlPath<u64>) -> Answer {
    let mut st = s.lock().unwrap();
    if st.app.as_ref().map(|a| a.2) != Some(id) {
        return Err(not_found());
    }
    let n = st.id();
    let token = format!("ghs_fake{n:032}");
    st.issued_tokens.push(token.clone());
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    created(json!({"token": token, "expires_at": expires,
                   "permissions": {"contents": "write"}, "repository_selection": "all"}))
}

/// A file at a branch, tag or commit (`?ref=`, the default branch otherwise), read from git.
async fn get_content(
    State(s): State<Shared>,
    UrlPath((o, r, path)): UrlPath<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let git = repo.git();
    let rev = q
        .get("ref")
        .cloned()
        .unwrap_or_else(|| repo.default_branch.clone());
    let commit = git
        .revparse_single(&rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| not_found())?;
    let entry = commit
        .tree()
        .and_then(|t| t.get_path(std::path::Path::new(&path)))
        .map_err(|_| not_found())?;
    let blob = git.find_blob(entry.id()).map_err(|_| not_found())?;
    ok(payloads::content(
        repo,
        &path,
        &entry.id().to_string(),
        blob.content(),
    ))
}

async fn get_repo(State(s): State<Shared>, UrlPath((o, r)): UrlPath<(String, String)>) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    ok(payloads::repository(repo))
}

async fn list_pulls(
    State(s): State<Shared>,
    UrlPath((o, r)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let state = q.get("state").map(String::as_str).unwrap_or("open");
    let head = q
        .get("head")
        .and_then(|h| h.split_once(':'))
        .map(|(_, b)| b.to_string());
    let pulls: Vec<Value> = repo
        .pulls
        .iter()
        .rev()
        .filter(|p| head.as_deref().is_none_or(|h| p.head == h))
        .filter(|p| state == "all" || (state == "open") == p.open)
        .map(|p| {
            let mut v = payloads::pull(repo, p);
            // The list endpoint's items have no `merged` field; `merged_at` tells.
            v.as_object_mut().unwrap().remove("merged");
            v
        })
        .collect();
    ok(Value::Array(pulls))
}

#[derive(Deserialize)]
struct NewPull {
    title: String,
    head: String,
    base: String,
    #[serde(default)]
    body: Option<String>,
}

async fn create_pull(
    State(s): State<Shared>,
    UrlPath((o, r)): UrlPath<(String, String)>,
    Json(new): Json<NewPull>,
) -> Answer {
    let (body, payload) = {
        let mut st = s.lock().unwrap();
        let user = st.token_login.clone();
        let now = st.now();
        let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
        if repo.branch_tip(&new.head).is_none() || repo.branch_tip(&new.base).is_none() {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation Failed: head or base does not exist",
            ));
        }
        if repo
            .pulls
            .iter()
            .any(|p| p.open && p.head == new.head && p.base == new.base)
        {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "Validation Failed: A pull request already exists for {o}:{}.",
                    new.head
                ),
            ));
        }
        let number = repo.next_number;
        repo.next_number += 1;
        let pull = Pull {
            number,
            title: new.title,
            body: new.body.unwrap_or_default(),
            head: new.head,
            base: new.base,
            open: true,
            merged: false,
            merge_commit_sha: None,
            user: user.clone(),
            auto_merge: false,
            updated_at: now,
            merged_by: None,
        };
        repo.pulls.push(pull.clone());
        (
            payloads::pull(repo, &pull),
            payloads::pull_request(repo, &pull, "opened", &user),
        )
    };
    crate::deliver(&s, &crate::http(&s), "pull_request", payload).await;
    created(body)
}

async fn get_pull(
    State(s): State<Shared>,
    UrlPath((o, r, n)): UrlPath<(String, String, u64)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let pull = repo.pull(n).ok_or_else(not_found)?;
    ok(payloads::pull(repo, pull))
}

async fn update_pull(
    State(s): State<Shared>,
    UrlPath((o, r, n)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Answer {
    let (answer, payload) = {
        let mut st = s.lock().unwrap();
        let user = st.token_login.clone();
        let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
        let pull = repo
            .pulls
            .iter_mut()
            .find(|p| p.number == n)
            .ok_or_else(not_found)?;
        let mut closed_now = false;
        if body["state"] == "closed" && pull.open {
            pull.open = false;
            closed_now = true;
        }
        if let Some(t) = body["title"].as_str() {
            pull.title = t.to_string();
        }
        let pull = pull.clone();
        let payload = closed_now.then(|| payloads::pull_request(repo, &pull, "closed", &user));
        (payloads::pull(repo, &pull), payload)
    };
    if let Some(p) = payload {
        crate::deliver(&s, &crate::http(&s), "pull_request", p).await;
    }
    ok(answer)
}

#[derive(Deserialize)]
struct MergeBody {
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    merge_method: Option<String>,
}

async fn merge_pull(
    State(s): State<Shared>,
    UrlPath((o, r, n)): UrlPath<(String, String, u64)>,
    Json(body): Json<MergeBody>,
) -> Answer {
    let (answer, payload) = {
        let mut st = s.lock().unwrap();
        let user = st.token_login.clone();
        let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
        let pull = repo.pull(n).ok_or_else(not_found)?.clone();
        if !pull.open {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Pull Request is not mergeable",
            ));
        }
        let head = repo.branch_tip(&pull.head).ok_or_else(not_found)?;
        if body.sha.as_ref().is_some_and(|s| *s != head) {
            return Err(error(
                StatusCode::CONFLICT,
                "Head branch was modified. Review and try the merge again.",
            ));
        }
        let squash = body.merge_method.as_deref() == Some("squash");
        let merged = repo
            .merge_pull(n, squash, ("GitHub", "noreply@github.com"), &user)
            .map_err(|why| error(StatusCode::METHOD_NOT_ALLOWED, why))?;
        let p = repo.pull(n).unwrap().clone();
        (
            payloads::merge_result(&merged.to_string()),
            payloads::pull_request(repo, &p, "closed", &user),
        )
    };
    crate::deliver(&s, &crate::http(&s), "pull_request", payload).await;
    ok(answer)
}

async fn list_reviews(
    State(s): State<Shared>,
    UrlPath((o, r, n)): UrlPath<(String, String, u64)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    repo.pull(n).ok_or_else(not_found)?;
    ok(Value::Array(
        repo.reviews
            .iter()
            .filter(|rv| rv.number == n)
            .map(payloads::review_body)
            .collect(),
    ))
}

async fn list_comments(
    State(s): State<Shared>,
    UrlPath((o, r, n)): UrlPath<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    ok(Value::Array(
        repo.comments
            .iter()
            .filter(|c| c.number == n)
            .skip((page.max(1) - 1) * per_page)
            .take(per_page)
            .map(payloads::comment)
            .collect(),
    ))
}

async fn create_comment(
    State(s): State<Shared>,
    UrlPath((o, r, n)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Answer {
    let (answer, payload) = {
        let mut st = s.lock().unwrap();
        let id = st.id();
        let at = st.now();
        let user = crate::User {
            login: st.token_login.clone(),
            is_bot: true,
        };
        let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
        let c = Comment {
            id,
            number: n,
            user,
            body: body["body"].as_str().unwrap_or_default().to_string(),
            created_at: at,
            updated_at: at,
        };
        repo.comments.push(c.clone());
        (
            payloads::comment(&c),
            payloads::issue_comment(repo, &c, "created"),
        )
    };
    crate::deliver(&s, &crate::http(&s), "issue_comment", payload).await;
    created(answer)
}

async fn update_comment(
    State(s): State<Shared>,
    UrlPath((o, r, id)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Answer {
    let (answer, payload) = {
        let mut st = s.lock().unwrap();
        let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
        let c = repo
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(not_found)?;
        c.body = body["body"].as_str().unwrap_or_default().to_string();
        let c = c.clone();
        (
            payloads::comment(&c),
            payloads::issue_comment(repo, &c, "edited"),
        )
    };
    crate::deliver(&s, &crate::http(&s), "issue_comment", payload).await;
    ok(answer)
}

async fn list_check_runs(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let runs: Vec<&crate::CheckRun> = repo.check_runs.iter().filter(|c| c.sha == sha).collect();
    ok(payloads::check_runs(&runs))
}

async fn combined_status(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    ok(payloads::combined_status(repo, &sha))
}

async fn list_statuses(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    // Newest first, as GitHub lists them.
    ok(Value::Array(
        repo.statuses
            .iter()
            .rev()
            .filter(|x| x.sha == sha)
            .map(payloads::status_body)
            .collect(),
    ))
}

async fn create_status(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Answer {
    let mut st = s.lock().unwrap();
    let id = st.id();
    let creator = st.token_login.clone();
    let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let status = CommitStatus {
        id,
        sha: sha.clone(),
        context: body["context"].as_str().unwrap_or("default").to_string(),
        state: body["state"].as_str().unwrap_or("pending").to_string(),
        description: body["description"].as_str().unwrap_or_default().to_string(),
        creator,
    };
    repo.statuses
        .retain(|x| !(x.sha == sha && x.context == status.context && x.creator == status.creator));
    repo.statuses.push(status.clone());
    created(payloads::status(id, &sha, &status.context, &status.state))
}

async fn create_commit_comment(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Answer {
    let mut st = s.lock().unwrap();
    let id = st.id();
    let author = st.token_login.clone();
    let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let c = CommitComment {
        id,
        sha,
        body: body["body"].as_str().unwrap_or_default().to_string(),
        author,
    };
    repo.commit_comments.push(c.clone());
    created(payloads::commit_comment(&c))
}

async fn list_commit_comments(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    ok(Value::Array(
        repo.commit_comments
            .iter()
            .filter(|c| c.sha == sha)
            .map(payloads::commit_comment)
            .collect(),
    ))
}

async fn get_ref(
    State(s): State<Shared>,
    UrlPath((o, r, name)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let git = repo.git();
    let full = format!("refs/{name}");
    let reference = git.find_reference(&full).map_err(|_| not_found())?;
    let target = reference.target().ok_or_else(not_found)?;
    let kind = match git.find_object(target, None).ok().and_then(|o| o.kind()) {
        Some(git2::ObjectType::Tag) => "tag",
        _ => "commit",
    };
    ok(payloads::git_ref(repo, &full, &target.to_string(), kind))
}

async fn create_ref(
    State(s): State<Shared>,
    UrlPath((o, r)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let git = repo.git();
    let name = body["ref"].as_str().unwrap_or_default();
    let sha = Oid::from_str(body["sha"].as_str().unwrap_or_default())
        .map_err(|_| error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: sha"))?;
    if !name.starts_with("refs/") || git.find_reference(name).is_ok() {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reference already exists",
        ));
    }
    git.reference(name, sha, false, "api")
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()))?;
    let kind = match git.find_object(sha, None).ok().and_then(|o| o.kind()) {
        Some(git2::ObjectType::Tag) => "tag",
        _ => "commit",
    };
    created(payloads::git_ref(repo, name, &sha.to_string(), kind))
}

async fn create_tag(
    State(s): State<Shared>,
    UrlPath((o, r)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let git = repo.git();
    let tag = body["tag"].as_str().unwrap_or_default();
    let message = body["message"].as_str().unwrap_or_default();
    let target = Oid::from_str(body["object"].as_str().unwrap_or_default())
        .ok()
        .and_then(|o| git.find_object(o, None).ok())
        .ok_or_else(|| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation Failed: object",
            )
        })?;
    let sig = Signature::now(&st.token_login, "bot@users.noreply.github.com").unwrap();
    let oid = git
        .tag_annotation_create(tag, &target, &sig, message)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()))?;
    created(payloads::git_tag(
        tag,
        &oid.to_string(),
        message,
        &target.id().to_string(),
    ))
}

async fn get_tag(
    State(s): State<Shared>,
    UrlPath((o, r, sha)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let git = repo.git();
    let tag = Oid::from_str(&sha)
        .ok()
        .and_then(|o| git.find_tag(o).ok())
        .ok_or_else(not_found)?;
    ok(payloads::git_tag(
        tag.name().unwrap_or_default(),
        &sha,
        tag.message().ok().flatten().unwrap_or_default(),
        &tag.target_id().to_string(),
    ))
}

async fn create_release(
    State(s): State<Shared>,
    UrlPath((o, r)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Answer {
    let mut st = s.lock().unwrap();
    let id = st.id();
    let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let tag = body["tag_name"].as_str().unwrap_or_default().to_string();
    if repo.releases.iter().any(|x| x.tag == tag) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: already_exists tag_name",
        ));
    }
    if repo
        .git()
        .find_reference(&format!("refs/tags/{tag}"))
        .is_err()
    {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: tag does not exist",
        ));
    }
    let rel = Release {
        id,
        tag,
        name: body["name"].as_str().unwrap_or_default().to_string(),
        body: body["body"].as_str().unwrap_or_default().to_string(),
        prerelease: body["prerelease"].as_bool().unwrap_or(false),
    };
    repo.releases.push(rel.clone());
    created(payloads::release(repo, &rel))
}

/// `repos/update-release`: name, body and the pre-release flag, each if given.
async fn update_release(
    State(s): State<Shared>,
    UrlPath((o, r, id)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Answer {
    let mut st = s.lock().unwrap();
    let repo = st.repo(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let rel = repo
        .releases
        .iter_mut()
        .find(|x| x.id == id)
        .ok_or_else(not_found)?;
    if let Some(name) = body["name"].as_str() {
        rel.name = name.to_string();
    }
    if let Some(text) = body["body"].as_str() {
        rel.body = text.to_string();
    }
    if let Some(pre) = body["prerelease"].as_bool() {
        rel.prerelease = pre;
    }
    let rel = rel.clone();
    let repo = &st.repos[&format!("{o}/{r}")];
    ok(payloads::release(repo, &rel))
}

async fn release_by_tag(
    State(s): State<Shared>,
    UrlPath((o, r, tag)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let repo = st.repos.get(&format!("{o}/{r}")).ok_or_else(not_found)?;
    let rel = repo
        .releases
        .iter()
        .find(|x| x.tag == tag)
        .ok_or_else(not_found)?;
    ok(payloads::release(repo, rel))
}

/// `teams/list-members-in-org`: the team's members (child teams' included), page by page.
async fn team_members(
    State(s): State<Shared>,
    UrlPath((org, slug)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let st = s.lock().unwrap();
    let team = format!("{org}/{slug}");
    let members = st.teams.get(&team).ok_or_else(not_found)?;
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    ok(Value::Array(
        members
            .iter()
            .skip((page.max(1) - 1) * per_page)
            .take(per_page)
            .map(|login| payloads::team_member(login))
            .collect(),
    ))
}

async fn membership(
    State(s): State<Shared>,
    UrlPath((org, slug, user)): UrlPath<(String, String, String)>,
) -> Answer {
    let st = s.lock().unwrap();
    let team = format!("{org}/{slug}");
    if st.teams.get(&team).is_some_and(|m| m.contains(&user)) {
        ok(payloads::membership(&team, &user))
    } else {
        Err(not_found())
    }
}
