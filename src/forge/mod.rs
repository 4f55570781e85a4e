//! The forges the bot talks to, behind one domain-level [`Forge`] trait.
//!
//! The release lifecycle speaks of change requests (GitHub pull requests, GitLab merge
//! requests), notes (comments), reviews, checks, tags and releases; each forge module maps those
//! onto its REST API and its webhooks onto [`crate::events::Event`]s.

pub mod github;
pub mod gitlab;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::config::MergeMethod;
use crate::events::{Actor, CheckResult as Check, ForgeKind, ReviewState};

/// Parses a webhook payload of `kind` into `T` with the fast parser; only a payload that fails
/// is parsed again to find the JSON path of the problem.
pub(crate) fn parse_payload<'a, T: serde::Deserialize<'a>>(
    kind: &str,
    body: &'a [u8],
) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|first| {
        let mut d = serde_json::Deserializer::from_slice(body);
        let (path, message) = match serde_path_to_error::deserialize::<_, T>(&mut d) {
            Err(e) => (e.path().to_string(), e.inner().to_string()),
            Ok(_) => (".".to_string(), first.to_string()),
        };
        PayloadError {
            kind: kind.to_string(),
            path,
            message,
        }
    })
}

/// Connects to the forge that hosts the deployment repository, as the operator's config says
/// (`forges.gitlab` with `deploymentRepo`, else `forges.github`). `secret` reads the variable
/// a `tokenEnv` names (the process environment in the service; the tests pass their own).
pub async fn connect(
    config: &crate::config::OperatorConfig,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<(crate::config::ForgeSettings, std::sync::Arc<dyn Forge>), String> {
    let forges = &config.orchestration.forges;
    if let Some(gitlab) = &forges.gitlab
        && let Some(settings) = gitlab.settings()
    {
        let var = gitlab.token_env.as_deref().unwrap_or_default();
        let token = match secret(var) {
            Some(t) if !t.is_empty() => secrecy::SecretString::from(t),
            _ => {
                return Err(format!(
                    "forges.gitlab.tokenEnv: environment variable `{var}` is not set"
                ));
            }
        };
        let forge = gitlab::client::GitlabForge::connect(
            &gitlab.url,
            gitlab.clone_url_base.as_deref(),
            token,
        )
        .await
        .map_err(|e| format!("connecting to GitLab at {}: {e}", gitlab.url))?;
        return Ok((settings, std::sync::Arc::new(forge)));
    }
    let Some(github) = &forges.github else {
        return Err(
            "no forge to release through: configure `forges.github`, or `forges.gitlab` with `deploymentRepo`"
                .to_string(),
        );
    };
    let auth = github::client::GithubAuth::from_config(config, github, secret)?;
    let forge = github::client::GithubForge::connect(
        &github.api_url,
        &github.clone_url_base,
        auth,
        &github.bot_login,
    )
    .await
    .map_err(|e| format!("connecting to GitHub at {}: {e}", github.api_url))?;
    Ok((github.settings(), std::sync::Arc::new(forge)))
}

/// Times as the forges write them, read leniently: a time that does not parse is unknown
/// (`None`), never a payload error. GitHub writes RFC 3339; GitLab's API does too, its webhooks
/// write `2015-05-17 18:21:36 UTC`.
pub(crate) mod when {
    use serde::Deserialize;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn parse(s: &str) -> Option<OffsetDateTime> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(t);
        }
        let format = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
        );
        let s = s.replace(" UTC", " +0000");
        OffsetDateTime::parse(&s, &format).ok()
    }

    pub fn option<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        Ok(s.as_deref().and_then(parse))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn both_forges_times_parse() {
            let t = super::parse("2015-05-17 18:21:36 UTC").unwrap();
            assert_eq!(t, super::parse("2015-05-17T18:21:36Z").unwrap());
            assert!(super::parse("2019-08-29T13:31:17.886-04:00").is_some());
            assert_eq!(super::parse("yesterday"), None);
        }
    }
}

/// A webhook payload that does not parse as the kind its headers say.
#[derive(Debug, thiserror::Error)]
#[error("`{kind}` payload does not parse at `{path}`: {message}")]
pub struct PayloadError {
    pub kind: String,
    pub path: String,
    pub message: String,
}

/// What went wrong talking to a forge, in the terms a retry decision needs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The request clashes with the forge's state (a merge conflict, a head that moved).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the forge refused the bot's credentials: {0}")]
    Unauthorized(String),
    #[error("rate limited by the forge{}", .retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// A 5xx, a timeout, a dropped connection: worth trying again.
    #[error("the forge is unavailable: {0}")]
    Transient(String),
    /// The forge understood and refused (422 and the like); retrying will not help.
    #[error("the forge refused the request: {0}")]
    Rejected(String),
}

/// An error's words with every cause after them (HTTP clients put the reason, such as
/// "Connection refused", in a cause), each said once.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !why.contains(&text) {
            why = format!("{why}: {text}");
        }
        source = cause.source();
    }
    why
}

impl ForgeError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ForgeError::RateLimited { .. } | ForgeError::Transient(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeState {
    Open,
    Closed,
    Merged,
}

/// A pull request (GitHub) or merge request (GitLab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub number: u64,
    pub head_branch: String,
    pub head_commit: String,
    pub base_branch: String,
    pub state: ChangeState,
    pub merge_commit: Option<String>,
    /// Who merged it, where the forge says.
    pub merged_by: Option<String>,
    pub url: String,
}

/// A forge release as the bot publishes it.
pub struct PublishedRelease<'a> {
    pub tag: &'a str,
    pub name: &'a str,
    /// Ends with [`release_marker`].
    pub body: &'a str,
    pub prerelease: bool,
}

/// The hidden line that marks a forge release of `tag` as the bot's own: one it may bring up to
/// date as the rollout goes on.
pub fn release_marker(tag: &str) -> String {
    format!("<!-- release-coordinator:release {tag} -->")
}

/// The longest comment, pull request or release body GitHub takes, in characters (GitLab's
/// limit is higher); every text the bot writes is cut to fit rather than refused.
pub const COMMENT_LIMIT: usize = 65_536;
/// The longest commit status description GitHub takes (GitLab's is 255).
pub const STATUS_LIMIT: usize = 140;
/// What a text cut to fit ends with.
pub const TRUNCATED: &str = "\n\n… (cut to fit the forge's size limit)";

/// `text` if it has at most `limit` characters, else its start and [`TRUNCATED`] (or `…` for
/// limits too short for that note), `limit` characters in all.
pub fn fit(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit || text.chars().count() <= limit {
        return std::borrow::Cow::Borrowed(text);
    }
    let tail = if limit > 4 * TRUNCATED.chars().count() {
        TRUNCATED
    } else {
        "…"
    };
    let keep = limit.saturating_sub(tail.chars().count());
    let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    std::borrow::Cow::Owned(format!("{}{tail}", &text[..end]))
}

pub struct NewChangeRequest<'a> {
    pub head_branch: &'a str,
    pub base_branch: &'a str,
    pub title: &'a str,
    pub body: &'a str,
}

/// A comment on a change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub id: u64,
    pub author: Actor,
    pub body: String,
    /// When the forge says it was written.
    pub created_at: Option<time::OffsetDateTime>,
    /// When it was last edited (equal to `created_at`, or absent, if never).
    pub updated_at: Option<time::OffsetDateTime>,
}

/// An approval or review as the forge lists it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewInfo {
    /// Stable per review: `review:<id>` on GitHub, `approval:<user>` on GitLab (one per user).
    pub source: String,
    pub author: Actor,
    pub state: ReviewState,
    /// The head commit the review was given on; empty where the forge does not say (GitLab).
    pub commit: String,
    /// When it was given, where the forge says.
    pub at: Option<time::OffsetDateTime>,
}

/// Which kinds of check a decision can use: reading only those saves requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckKinds {
    /// Check runs of apps (GitHub), the project's pipeline and jobs (GitLab).
    pub runs: bool,
    /// Commit statuses posted through the API.
    pub statuses: bool,
}

impl CheckKinds {
    /// What the required checks of an environment can be satisfied by.
    pub fn of(required: &[crate::config::RequiredCheck]) -> CheckKinds {
        CheckKinds {
            runs: required.iter().any(|c| c.status_creators.is_empty()),
            statuses: required.iter().any(|c| !c.status_creators.is_empty()),
        }
    }
}

/// What a merge request to the forge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged now (or found merged already): the merge commit.
    Merged(String),
    /// The forge will merge by itself, pinned to the head the bot approved, once its own
    /// pipeline succeeds (GitLab's "merge when pipeline succeeds").
    Scheduled,
}

/// How to reach a repository with git: its clone URL and, for HTTPS, a token.
pub struct GitAccess {
    pub url: String,
    /// The user name sent with the token (HTTP basic): `x-access-token` on GitHub, `oauth2`
    /// on GitLab.
    pub username: &'static str,
    pub token: Option<secrecy::SecretString>,
}

/// Everything the release lifecycle asks of a forge. Every method that creates something
/// either looks before it creates or is safe to repeat, so a replayed delivery or a restart
/// never makes a second pull request, tag or release.
#[async_trait]
pub trait Forge: Send + Sync {
    fn kind(&self) -> ForgeKind;
    /// The bot's own account, whose comments are never commands or approvals.
    fn bot_login(&self) -> &str;
    async fn git_access(&self, repo: &str) -> Result<GitAccess, ForgeError>;

    /// The change request from `head_branch`, in any state, if one exists.
    async fn find_change_request(
        &self,
        repo: &str,
        head_branch: &str,
    ) -> Result<Option<ChangeRequest>, ForgeError>;
    async fn change_request(&self, repo: &str, number: u64) -> Result<ChangeRequest, ForgeError>;
    async fn open_change_request(
        &self,
        repo: &str,
        new: &NewChangeRequest<'_>,
    ) -> Result<ChangeRequest, ForgeError>;
    async fn close_change_request(&self, repo: &str, number: u64) -> Result<(), ForgeError>;

    async fn notes(&self, repo: &str, number: u64) -> Result<Vec<Note>, ForgeError>;
    async fn post_note(&self, repo: &str, number: u64, body: &str) -> Result<u64, ForgeError>;
    async fn edit_note(
        &self,
        repo: &str,
        number: u64,
        note_id: u64,
        body: &str,
    ) -> Result<(), ForgeError>;
    async fn reviews(&self, repo: &str, number: u64) -> Result<Vec<ReviewInfo>, ForgeError>;
    /// The runs of the checks on `commit` of the kinds asked for: check runs (GitHub) or the
    /// project's pipeline and its jobs (GitLab), and commit statuses with their creators.
    async fn checks(
        &self,
        repo: &str,
        commit: &str,
        kinds: CheckKinds,
    ) -> Result<Vec<Check>, ForgeError>;

    /// Merges if the head is still `head_commit`.
    async fn merge(
        &self,
        repo: &str,
        number: u64,
        head_commit: &str,
        method: MergeMethod,
    ) -> Result<MergeOutcome, ForgeError>;

    /// Takes back a merge the forge was asked to make by itself ([`MergeOutcome::Scheduled`]),
    /// because the policy no longer allows it. Nothing to do where nothing was scheduled.
    async fn cancel_scheduled_merge(&self, _repo: &str, _number: u64) -> Result<(), ForgeError> {
        Ok(())
    }

    /// The active members of `team` (`org/team-slug` on GitHub, with child teams; a group path
    /// on GitLab, with inherited members and members of its subgroups), logins in lower case.
    /// A team that does not exist has no members.
    async fn team_members(&self, team: &str) -> Result<Vec<String>, ForgeError>;

    async fn set_commit_status(
        &self,
        repo: &str,
        commit: &str,
        failed: bool,
        context: &str,
        description: &str,
    ) -> Result<(), ForgeError>;
    async fn comment_on_commit(
        &self,
        repo: &str,
        commit: &str,
        body: &str,
    ) -> Result<(), ForgeError>;
    /// The comments on a commit (GitLab's carry no id: theirs is 0).
    async fn commit_comments(&self, repo: &str, commit: &str) -> Result<Vec<Note>, ForgeError>;

    /// The release for `tag`, created, or brought up to date when it is the bot's (its body
    /// carries [`release_marker`]); anyone else's release of the tag is a conflict. A
    /// pre-release on GitHub (GitLab has no such flag: the name says it). `existing`: the bot
    /// made it before, so it is looked up first instead of created. Returns its URL.
    async fn publish_release(
        &self,
        repo: &str,
        release: &PublishedRelease<'_>,
        existing: bool,
    ) -> Result<String, ForgeError>;
}

#[cfg(test)]
mod fit_tests {
    use super::*;

    #[test]
    fn texts_are_cut_at_a_character_to_the_limit() {
        assert_eq!(fit("short", 10), "short");
        let long = "é".repeat(1000);
        let cut = fit(&long, 400);
        assert_eq!(cut.chars().count(), 400);
        assert!(cut.ends_with(TRUNCATED), "{cut}");
        let status = fit(&long, 10);
        assert_eq!(status, format!("{}…", "é".repeat(9)));
    }
}
