//! The GitHub implementation of [`Forge`], over octocrab.
//!
//! Requests go through octocrab's generic verbs with small response types of our own, declaring
//! only the fields the bot reads: every request is one operation of GitHub's REST description
//! (a test holds the fake forge's request log against `fixtures/github/openapi-subset.json`).

use std::time::Duration;

use async_trait::async_trait;
use octocrab::Octocrab;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::webhook::User;
use crate::events::{CheckResult as Check, CheckSource};
use crate::events::{ForgeKind, ReviewState};
use crate::forge::{
    COMMENT_LIMIT, ChangeRequest, ChangeState, CheckKinds, Forge, ForgeError, GitAccess,
    MergeMethod, MergeOutcome, NewChangeRequest, Note, PublishedRelease, ReviewInfo, STATUS_LIMIT,
    fit, release_marker,
};

/// How the bot authenticates to GitHub.
pub enum GithubAuth {
    /// A fine-grained or classic token, for the API and for git.
    Token(SecretString),
    /// A GitHub App: octocrab signs a JWT with the private key, exchanges it for an installation
    /// token and renews that before it expires; git gets the same installation token.
    App {
        app_id: u64,
        private_key_pem: SecretString,
        /// Found from `installation_repo` when not given.
        installation_id: Option<u64>,
        installation_repo: String,
    },
}

impl GithubAuth {
    /// The GitHub credentials the configuration names, read from the environment or a key file.
    /// Token (from the variable `tokenEnv` names, read by `secret`) or App authentication.
    pub fn from_config(
        config: &crate::config::OperatorConfig,
        github: &crate::config::GithubForge,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GithubAuth, String> {
        if let (Some(app_id), Some(key_file)) = (github.app_id, &github.private_key_file) {
            let path = config.resolve_path(key_file);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "cannot read the GitHub App private key {} (forges.github.privateKeyFile): {e}",
                    path.display()
                )
            })?;
            return Ok(GithubAuth::App {
                app_id,
                private_key_pem: secrecy::SecretString::from(pem),
                installation_id: github.installation_id,
                installation_repo: github.deployment_repo.clone(),
            });
        }
        let var = github.token_env.as_deref().unwrap_or_default();
        match secret(var) {
            Some(t) if !t.is_empty() => Ok(GithubAuth::Token(secrecy::SecretString::from(t))),
            _ => Err(format!(
                "environment variable {var} (forges.github.tokenEnv) is not set or empty"
            )),
        }
    }
}

enum GitCredentials {
    Static(SecretString),
    /// The installation token octocrab holds, renewed when less than five minutes are left.
    Installation,
}

pub struct GithubForge {
    client: Octocrab,
    /// ETag and body of the reads the reconcile pass repeats: asked again with
    /// `If-None-Match`, an unchanged resource answers 304, which GitHub does not count against
    /// the rate limit.
    cache: std::sync::Mutex<std::collections::HashMap<String, (http::HeaderValue, String)>>,
    /// Where repositories are cloned from: `<clone_base>/<owner>/<repo>.git`.
    clone_base: String,
    git: GitCredentials,
    bot_login: String,
    /// Named in errors that never reached GitHub (a stale `apiUrl` is the usual cause).
    api_url: String,
}

#[derive(Deserialize)]
struct InstallationBody {
    id: u64,
}

impl GithubForge {
    pub async fn connect(
        api_url: &str,
        clone_base: &str,
        auth: GithubAuth,
        bot_login: &str,
    ) -> Result<GithubForge, ForgeError> {
        let builder = || -> Result<octocrab::OctocrabBuilder<_, _, _, _>, ForgeError> {
            Ok(Octocrab::builder()
                .base_uri(api_url)
                .map_err(|e| ForgeError::Rejected(format!("GitHub API URL `{api_url}`: {e}")))?
                .set_connect_timeout(Some(Duration::from_secs(10)))
                .set_read_timeout(Some(Duration::from_secs(30)))
                // No retries inside octocrab: it would repeat a POST whose answer was lost (a
                // second comment). A failed call fails the step, and the worker tries the step
                // again after a pause, where every side effect is looked up before it is made.
                .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None))
        };
        let built =
            |r: octocrab::Result<Octocrab>| r.map_err(|e| ForgeError::Transient(e.to_string()));
        let (client, git) = match auth {
            GithubAuth::Token(token) => (
                built(builder()?.personal_token(token.clone()).build())?,
                GitCredentials::Static(token),
            ),
            GithubAuth::App {
                app_id,
                private_key_pem,
                installation_id,
                installation_repo,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(
                    secrecy::ExposeSecret::expose_secret(&private_key_pem).as_bytes(),
                )
                .map_err(|_| {
                    ForgeError::Rejected(
                        "the GitHub App private key is not an RSA key in PEM form".into(),
                    )
                })?;
                let app = built(builder()?.app(app_id.into(), key).build())?;
                let id = match installation_id {
                    Some(id) => id,
                    None => {
                        let i: InstallationBody = app
                            .get(
                                format!("/repos/{installation_repo}/installation"),
                                None::<&()>,
                            )
                            .await
                            .map_err(map_err)?;
                        i.id
                    }
                };
                (
                    built(app.installation(id.into()))?,
                    GitCredentials::Installation,
                )
            }
        };
        Ok(GithubForge {
            api_url: api_url.to_string(),
            client,
            cache: Default::default(),
            clone_base: clone_base.trim_end_matches('/').to_string(),
            git,
            bot_login: bot_login.to_string(),
        })
    }
}

/// Reads kept at most in the conditional-request cache (it is cleared when full).
const CACHE_ENTRIES: usize = 2048;

impl GithubForge {
    /// Every comment of a list (of an issue or a commit), page by page.
    async fn comments(&self, path: &str) -> Result<Vec<Note>, ForgeError> {
        let mut out = Vec::new();
        for page in 1u32.. {
            let comments: Vec<CommentBody> = self
                .get_cached(format!("{path}?per_page=100&page={page}"))
                .await?;
            let n = comments.len();
            out.extend(comments.into_iter().map(|c| Note {
                id: c.id,
                author: c.user.into(),
                body: c.body.unwrap_or_default(),
                created_at: c.created_at,
                updated_at: c.updated_at,
            }));
            if n < 100 {
                break;
            }
        }
        Ok(out)
    }

    /// A GET of `path_and_query` as a conditional request.
    async fn get_cached<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: String,
    ) -> Result<T, ForgeError> {
        let etag = self
            .cache
            .lock()
            .unwrap()
            .get(&path_and_query)
            .map(|(e, _)| e.clone());
        let mut headers = http::HeaderMap::new();
        if let Some(e) = &etag {
            headers.insert(http::header::IF_NONE_MATCH, e.clone());
        }
        let response = self
            .client
            ._get_with_headers(path_and_query.as_str(), Some(headers))
            .await
            .map_err(|e| self.api_err(e))?;
        let cached = (response.status() == http::StatusCode::NOT_MODIFIED)
            .then(|| {
                self.cache
                    .lock()
                    .unwrap()
                    .get(&path_and_query)
                    .map(|(_, b)| b.clone())
            })
            .flatten();
        let body = match cached {
            Some(body) => body,
            None => {
                let response = octocrab::map_github_error(response)
                    .await
                    .map_err(|e| self.api_err(e))?;
                let etag = response.headers().get(http::header::ETAG).cloned();
                let body = self
                    .client
                    .body_to_string(response)
                    .await
                    .map_err(|e| self.api_err(e))?;
                if let Some(etag) = etag {
                    let mut cache = self.cache.lock().unwrap();
                    if cache.len() >= CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(path_and_query.clone(), (etag, body.clone()));
                }
                body
            }
        };
        serde_json::from_str(&body).map_err(|e| {
            ForgeError::Rejected(format!("GET {path_and_query}: unexpected response: {e}"))
        })
    }
}

impl GithubForge {
    /// [`map_err`], with the API's address named when the request did not get an answer.
    fn api_err(&self, e: octocrab::Error) -> ForgeError {
        match map_err(e) {
            ForgeError::Transient(why) if !why.contains(&self.api_url) => {
                ForgeError::Transient(format!("{} (GitHub API at {})", why, self.api_url))
            }
            other => other,
        }
    }
}

/// Maps octocrab's error to the domain's, reading status and `Retry-After`.
fn map_err(e: octocrab::Error) -> ForgeError {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            let retry_after = source
                .headers
                .as_ref()
                .and_then(|h| h.get("retry-after"))
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(Duration::from_secs);
            let msg = source.message.clone();
            match status {
                404 => ForgeError::NotFound(msg),
                409 | 405 => ForgeError::Conflict(msg),
                401 => ForgeError::Unauthorized(msg),
                403 | 429 if retry_after.is_some() || msg.to_lowercase().contains("rate limit") => {
                    ForgeError::RateLimited { retry_after }
                }
                403 => ForgeError::Unauthorized(msg),
                500..=599 => ForgeError::Transient(format!("{status}: {msg}")),
                _ => ForgeError::Rejected(format!("{status}: {msg}")),
            }
        }
        // Every cause: hyper's own words stop at "client error (Connect)".
        other => ForgeError::Transient(crate::forge::with_causes(&other)),
    }
}

#[derive(Deserialize)]
struct PullBody {
    number: u64,
    html_url: String,
    state: String,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    #[serde(default)]
    merged_by: Option<User>,
    head: RefBody,
    base: RefBody,
}

#[derive(Deserialize)]
struct RefBody {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
}

impl From<PullBody> for ChangeRequest {
    fn from(p: PullBody) -> ChangeRequest {
        // The list endpoint omits `merged`; `merged_at` is in both.
        let merged = p.merged.unwrap_or(false) || p.merged_at.is_some();
        ChangeRequest {
            number: p.number,
            state: match (p.state.as_str(), merged) {
                (_, true) => ChangeState::Merged,
                ("open", _) => ChangeState::Open,
                _ => ChangeState::Closed,
            },
            merge_commit: if merged { p.merge_commit_sha } else { None },
            merged_by: p.merged_by.map(|u| u.login),
            head_branch: p.head.branch,
            head_commit: p.head.sha,
            base_branch: p.base.branch,
            url: p.html_url,
        }
    }
}

#[derive(Deserialize)]
struct CommentBody {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: User,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    created_at: Option<time::OffsetDateTime>,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    updated_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct ReviewBody {
    id: u64,
    state: String,
    #[serde(default)]
    commit_id: Option<String>,
    user: User,
    #[serde(default, deserialize_with = "crate::forge::when::option")]
    submitted_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct CheckRuns {
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: u64,
    #[serde(default)]
    app: Option<crate::forge::github::webhook::App>,
    name: String,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct StatusBody {
    id: u64,
    context: String,
    state: String,
    #[serde(default)]
    creator: Option<User>,
}

#[derive(Deserialize)]
struct Created {
    id: u64,
}

#[derive(Deserialize)]
struct MergeResult {
    sha: String,
}

#[derive(Deserialize)]
struct ReleaseBody {
    #[serde(default)]
    id: u64,
    html_url: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    prerelease: bool,
}

type Empty = serde_json::Value;

#[async_trait]
impl Forge for GithubForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Github
    }

    fn bot_login(&self) -> &str {
        &self.bot_login
    }

    async fn git_access(&self, repo: &str) -> Result<GitAccess, ForgeError> {
        let token = match &self.git {
            GitCredentials::Static(t) => t.clone(),
            GitCredentials::Installation => self
                .client
                .installation_token_with_buffer(chrono::Duration::minutes(5))
                .await
                .map_err(|e| self.api_err(e))?,
        };
        Ok(GitAccess {
            url: format!("{}/{repo}.git", self.clone_base),
            username: "x-access-token",
            token: Some(token),
        })
    }

    async fn find_change_request(
        &self,
        repo: &str,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError> {
        let owner = repo.split('/').next().unwrap_or(repo);
        let pulls: Vec<PullBody> = self
            .client
            .get(
                format!("/repos/{repo}/pulls"),
                Some(&json!({"head": format!("{owner}:{head_branch}"), "state": "all", "per_page": 10})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        // The newest first: a release branch gets at most one pull request from the bot.
        Ok(pulls
            .into_iter()
            .filter(|p| p.head.branch == head_branch)
            .map(ChangeRequest::from)
            .max_by_key(|p| p.number))
    }

    async fn change_request(&self, repo: &str, number: u64) -> Result<ChangeRequest, ForgeError> {
        let p: PullBody = self
            .get_cached(format!("/repos/{repo}/pulls/{number}"))
            .await?;
        Ok(p.into())
    }

    async fn open_change_request(
        &self,
        repo: &str,
        new: &NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError> {
        let p: PullBody = self
            .client
            .post(
                format!("/repos/{repo}/pulls"),
                Some(&json!({"title": new.title, "head": new.head_branch, "base": new.base_branch, "body": fit(new.body, COMMENT_LIMIT), "maintainer_can_modify": false})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(p.into())
    }

    async fn close_change_request(&self, repo: &str, number: u64) -> Result<(), ForgeError> {
        let _: Empty = self
            .client
            .patch(
                format!("/repos/{repo}/pulls/{number}"),
                Some(&json!({"state": "closed"})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(())
    }

    async fn notes(&self, repo: &str, number: u64) -> Result<Vec<Note>, ForgeError> {
        self.comments(&format!("/repos/{repo}/issues/{number}/comments"))
            .await
    }

    async fn post_note(&self, repo: &str, number: u64, body: &str) -> Result<u64, ForgeError> {
        let c: Created = self
            .client
            .post(
                format!("/repos/{repo}/issues/{number}/comments"),
                Some(&json!({"body": fit(body, COMMENT_LIMIT)})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(c.id)
    }

    async fn edit_note(
        &self,
        repo: &str,
        _number: u64,
        note_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let _: Empty = self
            .client
            .patch(
                format!("/repos/{repo}/issues/comments/{note_id}"),
                Some(&json!({"body": fit(body, COMMENT_LIMIT)})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(())
    }

    async fn reviews(&self, repo: &str, number: u64) -> Result<Vec<ReviewInfo>, ForgeError> {
        let mut reviews: Vec<ReviewBody> = Vec::new();
        for page in 1u32.. {
            let batch: Vec<ReviewBody> = self
                .get_cached(format!(
                    "/repos/{repo}/pulls/{number}/reviews?per_page=100&page={page}"
                ))
                .await?;
            let n = batch.len();
            reviews.extend(batch);
            if n < 100 {
                break;
            }
        }
        Ok(reviews
            .into_iter()
            .filter_map(|r| {
                let state = match r.state.as_str() {
                    "APPROVED" => ReviewState::Approved,
                    "CHANGES_REQUESTED" => ReviewState::ChangesRequested,
                    "COMMENTED" => ReviewState::Commented,
                    "DISMISSED" => ReviewState::Dismissed,
                    _ => return None,
                };
                Some(ReviewInfo {
                    source: format!("review:{}", r.id),
                    author: r.user.into(),
                    state,
                    commit: r.commit_id.unwrap_or_default(),
                    at: r.submitted_at,
                })
            })
            .collect())
    }

    async fn checks(
        &self,
        repo: &str,
        commit: &str,
        kinds: CheckKinds,
    ) -> Result<Vec<Check>, ForgeError> {
        let runs: CheckRuns = if kinds.runs {
            self.get_cached(format!(
                "/repos/{repo}/commits/{commit}/check-runs?filter=latest&per_page=100"
            ))
            .await?
        } else {
            CheckRuns {
                check_runs: Vec::new(),
            }
        };
        // Every status (newest first) with who posted it: a required check may name the
        // creators whose statuses count, and the combined status does not say who.
        let statuses: Vec<StatusBody> = if kinds.statuses {
            self.get_cached(format!(
                "/repos/{repo}/commits/{commit}/statuses?per_page=100"
            ))
            .await?
        } else {
            Vec::new()
        };
        let mut checks: Vec<Check> = runs
            .check_runs
            .into_iter()
            .map(|r| Check {
                name: r.name,
                state: super::webhook::check_state(Some(&r.status), r.conclusion.as_deref()),
                source: crate::forge::github::webhook::App::source(r.app),
                order: r.id,
            })
            .collect();
        checks.extend(statuses.into_iter().map(|s| Check {
            name: s.context,
            state: super::webhook::status_state(&s.state),
            source: CheckSource::Status {
                creator: s.creator.map(|u| u.login).unwrap_or_default(),
            },
            order: s.id,
        }));
        Ok(checks)
    }

    async fn merge(
        &self,
        repo: &str,
        number: u64,
        head_commit: &str,
        method: MergeMethod,
    ) -> Result<MergeOutcome, ForgeError> {
        let r: MergeResult = self
            .client
            .put(
                format!("/repos/{repo}/pulls/{number}/merge"),
                Some(&json!({"sha": head_commit, "merge_method": method.as_str()})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(MergeOutcome::Merged(r.sha))
    }

    async fn team_members(&self, team: &str) -> Result<Vec<String>, ForgeError> {
        let Some((org, slug)) = team.split_once('/') else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for page in 1u32.. {
            // Conditional: a team read again unchanged answers 304, free of the rate limit.
            let members: Result<Vec<User>, ForgeError> = self
                .get_cached(format!(
                    "/orgs/{org}/teams/{slug}/members?per_page=100&page={page}"
                ))
                .await;
            let members = match members {
                Ok(m) => m,
                Err(ForgeError::NotFound(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let n = members.len();
            out.extend(members.into_iter().map(|m| m.login.to_ascii_lowercase()));
            if n < 100 {
                break;
            }
        }
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
        // GitHub refuses a description over 140 characters.
        let description = fit(description, STATUS_LIMIT);
        let _: Empty = self
            .client
            .post(
                format!("/repos/{repo}/statuses/{commit}"),
                Some(&json!({"state": if failed { "failure" } else { "success" }, "context": context, "description": description})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(())
    }

    async fn commit_comments(&self, repo: &str, commit: &str) -> Result<Vec<Note>, ForgeError> {
        self.comments(&format!("/repos/{repo}/commits/{commit}/comments"))
            .await
    }

    async fn comment_on_commit(
        &self,
        repo: &str,
        commit: &str,
        body: &str,
    ) -> Result<(), ForgeError> {
        let _: Empty = self
            .client
            .post(
                format!("/repos/{repo}/commits/{commit}/comments"),
                Some(&json!({"body": fit(body, COMMENT_LIMIT)})),
            )
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(())
    }

    async fn publish_release(
        &self,
        repo: &str,
        release: &PublishedRelease<'_>,
        existing: bool,
    ) -> Result<String, ForgeError> {
        let body = fit(release.body, COMMENT_LIMIT);
        let fields = json!({"name": release.name, "body": body, "prerelease": release.prerelease});
        if !existing {
            let mut create = fields.clone();
            create["tag_name"] = json!(release.tag);
            let created: Result<ReleaseBody, _> = self
                .client
                .post(format!("/repos/{repo}/releases"), Some(&create))
                .await;
            match created.map_err(|e| self.api_err(e)) {
                Ok(r) => return Ok(r.html_url),
                // Already there: made by an earlier attempt, or by someone else.
                Err(ForgeError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let r: ReleaseBody = self
            .client
            .get(
                format!("/repos/{repo}/releases/tags/{}", release.tag),
                None::<&()>,
            )
            .await
            .map_err(|e| self.api_err(e))?;
        let theirs = r.body.as_deref().unwrap_or_default();
        if !theirs.contains(&release_marker(release.tag)) {
            return Err(ForgeError::Conflict(format!(
                "a release of {} that the bot did not make exists ({})",
                release.tag, r.html_url
            )));
        }
        if theirs.trim() == body.trim()
            && r.name.as_deref() == Some(release.name)
            && r.prerelease == release.prerelease
        {
            return Ok(r.html_url);
        }
        let updated: ReleaseBody = self
            .client
            .patch(format!("/repos/{repo}/releases/{}", r.id), Some(&fields))
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(updated.html_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale `apiUrl` (nothing listens there) fails with the address and the reason, not
    /// hyper's bare "client error (Connect)".
    #[tokio::test]
    async fn an_unreachable_api_is_named_with_the_reason() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let forge = GithubForge::connect(
            &url,
            "https://github.com",
            GithubAuth::Token(SecretString::from("a-token".to_string())),
            "release-coordinator[bot]",
        )
        .await
        .unwrap();
        let err = forge
            .find_change_request("acme/deploy", "release/x/staging")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("GitHub API at {url}")), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");
        assert!(!err.contains("a-token"), "{err}");
    }
}
