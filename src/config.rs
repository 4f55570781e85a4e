//! The operator's configuration: `orchestration-config.yaml` and the files it points to,
//! `release-policy.yaml`, `version-resolver.yaml` and `milestones.yaml`.
//!
//! Policy lives here, with the operator, and never in the application repository: a trigger
//! may ask for more scrutiny than these files demand, never less.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostics::{Diagnostic, Diagnostics, SourceFile};
use crate::inputs::is_valid_environment_name;
use crate::route;
use crate::version::VersionResolver;

/// `orchestration-config.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestrationConfig {
    pub deployment: DeploymentRepo,
    pub services: Vec<ServiceConfig>,
    pub signing: SigningConfig,
    /// A directory whose `release-notes.md.j2` / `release-description.txt.j2` replace the
    /// built-in templates (relative to this file).
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Paths of the other operator files, relative to this file.
    #[serde(default = "default_policy_file")]
    pub policy_file: PathBuf,
    #[serde(default = "default_resolver_file")]
    pub version_resolver_file: PathBuf,
    #[serde(default = "default_milestones_file")]
    pub milestones_file: PathBuf,
    #[serde(default)]
    pub defaults: Defaults,
    /// The forges the bot serves (`serve`); the offline commands do not need them.
    #[serde(default)]
    pub forges: Forges,
    /// Argo CD, which deploys the merged deployment repository: with it, a release is complete
    /// when it runs, not when it merged.
    #[serde(default)]
    pub argocd: Option<ArgoCdConfig>,
    /// Container images: with it, every image tag a release writes must exist in its registry
    /// before any pull request opens, and `tag-docker` copies each named service's image to the
    /// release tag.
    #[serde(default)]
    pub images: Option<ImagesConfig>,
    /// The values each deploy strategy writes, by strategy name (what a trigger names in
    /// `customDeployStrategy`), then by dotted path in every service's values file. A service's
    /// own `deployStrategies` add to these and win where both set a path.
    #[serde(default)]
    pub deploy_strategies: BTreeMap<String, StrategyValues>,
}

/// Dotted path in a values file (`rollout.canary.weight`) to the value a strategy writes there:
/// a string, a number or a boolean.
pub type StrategyValues = BTreeMap<String, yaml_serde::Value>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagesConfig {
    /// The tag `tag-docker` copies from: a template over `commit` (the trigger commit),
    /// `short_commit` (its first 12 digits) and `version`.
    #[serde(default = "default_source_tag")]
    pub source_tag: String,
    /// How to reach each registry (by host, with its port), where not anonymously over https.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
}

fn default_source_tag() -> String {
    "{{ commit }}".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    /// Environment variables holding the user name and the password (or token).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Plain http (a registry on this machine or a private network, never with credentials).
    #[serde(default)]
    pub insecure: bool,
}

impl ImagesConfig {
    /// The source tag of `tag-docker` for a release of `version` from `commit`.
    pub fn source_tag_for(&self, commit: &str, version: &str) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        // A misspelt name is an error, not an empty tag.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let tag = env
            .render_str(
                &self.source_tag,
                minijinja::context! {commit => commit, short_commit => commit.get(..12).unwrap_or(commit), version => version},
            )
            .map_err(|e| format!("images.sourceTag: {e}"))?;
        if !crate::images::is_image_tag(&tag) {
            return Err(format!(
                "images.sourceTag makes `{tag}`, which is not an image tag (letters, digits, `.`, `_`, `-`; at most 128)"
            ));
        }
        Ok(tag)
    }
}

/// Where the bot learns whether a merged release runs: Argo CD's API, read for every
/// environment being deployed, and its notifications, which tell the bot when to read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgoCdConfig {
    /// The Argo CD server, e.g. `https://argocd.example.com` (the API is `<url>/api/v1`).
    pub url: String,
    /// The environment variable holding an Argo CD API token (a read-only account's; see
    /// `deploy/argocd/`).
    pub token_env: String,
    /// The Application that deploys a service in an environment: a template over `service`
    /// and `environment`. A service's `argocdApplications` names its own.
    #[serde(default = "default_argocd_application")]
    pub application: String,
    /// How long an Application may stay `Degraded` or `Missing` after it synced the release
    /// before the deployment counts as failed (`30s`, `10m`, `1h`).
    #[serde(default = "default_health_timeout")]
    pub health_timeout: String,
    /// How long after the merge every Application may take to sync it (and to exist) before
    /// the deployment counts as failed.
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout: String,
    /// Environment variables that each hold a token Argo CD Notifications sends to
    /// `POST /webhooks/argocd` (as `Authorization: Bearer`, or as the basic-auth password);
    /// several, so one can be rotated. None: the route is closed and reconcile alone reads.
    #[serde(default)]
    pub webhook_token_env: Vec<String>,
}

fn default_argocd_application() -> String {
    "{{ service }}-{{ environment }}".into()
}
fn default_health_timeout() -> String {
    "10m".into()
}
fn default_sync_timeout() -> String {
    "30m".into()
}

impl ArgoCdConfig {
    /// The Application deploying `service` in `environment`.
    pub fn application_of(&self, service: &ServiceConfig, environment: &str) -> String {
        if let Some(name) = service.argocd_applications.get(environment) {
            return name.clone();
        }
        render_application(&self.application, &service.name, environment)
            .unwrap_or_else(|_| format!("{}-{environment}", service.name))
    }

    pub fn health_timeout_secs(&self) -> u64 {
        parse_duration_secs(&self.health_timeout).unwrap_or(600)
    }

    pub fn sync_timeout_secs(&self) -> u64 {
        parse_duration_secs(&self.sync_timeout).unwrap_or(1800)
    }
}

fn render_application(template: &str, service: &str, environment: &str) -> Result<String, String> {
    let name = minijinja::Environment::new()
        .render_str(
            template,
            minijinja::context! {service => service, environment => environment},
        )
        .map_err(|e| e.to_string())?;
    // Argo CD Applications are Kubernetes objects: DNS-1123 subdomain names.
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "`{name}` is not a valid Application name (lower-case letters, digits, `-`, `.`)"
        ));
    }
    Ok(name)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Forges {
    #[serde(default)]
    pub github: Option<GithubForge>,
    #[serde(default)]
    pub gitlab: Option<GitlabForge>,
}

/// GitLab (gitlab.com or self-managed): its webhooks and, with `deploymentRepo`, the forge
/// the bot releases through.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitlabForge {
    /// Environment variables that each hold a secret token GitLab sends as `X-Gitlab-Token`;
    /// several, so a token can be rotated.
    pub webhook_token_env: Vec<String>,
    /// The instance: `https://gitlab.com`, or a self-managed one (a path prefix is kept:
    /// `https://example.com/gitlab`). The REST API is `<url>/api/v4`.
    #[serde(default = "default_gitlab_url")]
    pub url: String,
    /// Where repositories are cloned from (`<cloneUrlBase>/<group>/<project>.git`); the
    /// instance URL when absent.
    #[serde(default)]
    pub clone_url_base: Option<String>,
    /// The environment variable holding a project, group or personal access token (scopes
    /// `api` and `write_repository`), used for the API and for git.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_trigger_path")]
    pub trigger_path: String,
    /// How release merge requests are merged (`merge` or `squash`).
    #[serde(default)]
    pub merge_method: MergeMethod,
    /// The deployment repository's full project path (`group/subgroup/project`). With it, the
    /// bot releases through GitLab.
    #[serde(default)]
    pub deployment_repo: Option<String>,
}

fn default_gitlab_url() -> String {
    "https://gitlab.com".into()
}

/// How the bot merges a release pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    #[default]
    Merge,
    Squash,
    Rebase,
}

impl MergeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        }
    }
}

/// What the release lifecycle needs of the forge that hosts the deployment repository.
#[derive(Debug, Clone)]
pub struct ForgeSettings {
    pub deployment_repo: String,
    pub trigger_path: String,
    pub merge_method: MergeMethod,
}

impl GithubForge {
    pub fn settings(&self) -> ForgeSettings {
        ForgeSettings {
            deployment_repo: self.deployment_repo.clone(),
            trigger_path: self.trigger_path.clone(),
            merge_method: self.merge_method,
        }
    }
}

impl GitlabForge {
    /// The lifecycle's settings, when the deployment repository is on GitLab.
    pub fn settings(&self) -> Option<ForgeSettings> {
        Some(ForgeSettings {
            deployment_repo: self.deployment_repo.clone()?,
            trigger_path: self.trigger_path.clone(),
            merge_method: self.merge_method,
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubForge {
    /// Environment variables that each hold a webhook secret. Deliveries signed with any of
    /// them are accepted, so a secret can be rotated without dropping deliveries: add the new
    /// one, change it on GitHub, remove the old one.
    pub webhook_secret_env: Vec<String>,
    /// The REST API: `https://api.github.com`, or `https://HOST/api/v3` on GitHub Enterprise.
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// Where repositories are cloned from: `<cloneUrlBase>/<owner>/<repo>.git`.
    #[serde(default = "default_github_clone")]
    pub clone_url_base: String,
    /// The environment variable holding an API token (a fine-grained or classic token); it also
    /// authenticates git over HTTPS. Either this or `appId` with `privateKeyFile`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The GitHub App's id: the bot authenticates as the App and uses installation tokens,
    /// renewed before they expire, for the API and for git.
    #[serde(default)]
    pub app_id: Option<u64>,
    /// The App's private key (PEM, as GitHub hands it out), relative to this file.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The installation to act as; found from the deployment repository when absent.
    #[serde(default)]
    pub installation_id: Option<u64>,
    /// The bot's own login: its comments are never commands.
    #[serde(default = "default_bot_login")]
    pub bot_login: String,
    /// Where the trigger file lives in application repositories; the other input files are
    /// read from the same directory.
    #[serde(default = "default_trigger_path")]
    pub trigger_path: String,
    /// How release pull requests are merged.
    #[serde(default)]
    pub merge_method: MergeMethod,
    /// The deployment repository on GitHub (`owner/name`), where release pull requests open.
    pub deployment_repo: String,
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}
fn default_github_clone() -> String {
    "https://github.com".into()
}
fn default_bot_login() -> String {
    "release-coordinator[bot]".into()
}
fn default_trigger_path() -> String {
    "promotion-trigger.yaml".into()
}

fn default_policy_file() -> PathBuf {
    "release-policy.yaml".into()
}
fn default_resolver_file() -> PathBuf {
    "version-resolver.yaml".into()
}
fn default_milestones_file() -> PathBuf {
    "milestones.yaml".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRepo {
    /// The deployment repository: a URL (`https://`, `ssh://`, `file://`, `git@host:path`) or a
    /// path, relative to this file.
    pub repo: String,
    #[serde(default = "default_base_branch")]
    pub base_branch: String,
    /// Where the bot keeps its bare clone (relative to this file).
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// History fetched into the cache: 1 (the default) is enough to build release commits.
    /// 0 fetches everything.
    #[serde(default = "default_fetch_depth")]
    pub fetch_depth: u32,
    /// Name of the environment variable holding an HTTPS token for the repository.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_author_name")]
    pub author_name: String,
    #[serde(default = "default_author_email")]
    pub author_email: String,
    /// Deletes a release branch once its pull request is merged (the pull request keeps its
    /// commits), so the deployment repository does not pile up thousands of branches.
    #[serde(default = "default_true")]
    pub delete_merged_branches: bool,
}

fn default_true() -> bool {
    true
}

fn default_base_branch() -> String {
    "main".into()
}
fn default_cache_dir() -> PathBuf {
    ".release-coordinator/cache".into()
}
fn default_fetch_depth() -> u32 {
    1
}
fn default_author_name() -> String {
    "Release Coordinator".into()
}
fn default_author_email() -> String {
    "release-coordinator@localhost".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// The image repository, e.g. `ghcr.io/acme/booking-service`.
    pub image: String,
    /// Dotted path of the tag inside the values file, e.g. `image.tag`.
    #[serde(default = "default_tag_path")]
    pub tag_path: String,
    /// One values file per environment, as paths inside the deployment repository.
    pub values: BTreeMap<String, String>,
    /// The image tag to write, as a template over the release (`{{ version }}` by default).
    #[serde(default)]
    pub image_tag: Option<String>,
    /// The application repositories (`owner/name`, a GitLab project path) whose triggers may
    /// release this service. The bot refuses a trigger from any other repository; none listed
    /// means no repository may release it through the bot.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// The Argo CD Application per environment, where it is not named by `argocd.application`.
    #[serde(default)]
    pub argocd_applications: BTreeMap<String, String>,
    /// Dotted path of the image digest beside the tag (`image.digest`): the release pins the
    /// digest the registry gives for the tag it writes (needs `images:`).
    #[serde(default)]
    pub digest_path: Option<String>,
    /// This service's values per deploy strategy, over the top-level `deployStrategies`.
    #[serde(default)]
    pub deploy_strategies: BTreeMap<String, StrategyValues>,
}

fn default_tag_path() -> String {
    "image.tag".into()
}

impl ServiceConfig {
    /// The tag path split into YAML keys (`image.tag` -> `["image", "tag"]`).
    pub fn tag_route(&self) -> Vec<&str> {
        self.tag_path.split('.').collect()
    }

    /// The values `strategy` writes into this service's values files, `None` when neither the
    /// top level nor the service configures it.
    pub fn strategy_values(
        &self,
        top: &BTreeMap<String, StrategyValues>,
        strategy: &str,
    ) -> Option<StrategyValues> {
        let (all, own) = (top.get(strategy), self.deploy_strategies.get(strategy));
        if all.is_none() && own.is_none() {
            return None;
        }
        let mut values = all.cloned().unwrap_or_default();
        values.extend(own.cloned().unwrap_or_default());
        Some(values)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningConfig {
    /// PKCS#8 PEM private key (relative to this file), as written by `keygen`.
    pub key_file: PathBuf,
    /// The name the manifest carries for the key; by default `ed25519:` and the first 16 hex
    /// digits of the SHA-256 of the public key.
    #[serde(default)]
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default)]
    pub auto_rollback_on_failure: bool,
    #[serde(default)]
    pub notify_channels: Vec<String>,
    /// Environments that always need a human approval.
    #[serde(default)]
    pub require_manual_approval_for: Vec<String>,
    /// The store: `sqlite://path` (a relative path is relative to this file's folder, like
    /// every other path here; see [`OperatorConfig::store_url`]).
    #[serde(default = "default_store")]
    pub store: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            auto_rollback_on_failure: false,
            notify_channels: Vec::new(),
            require_manual_approval_for: Vec::new(),
            store: default_store(),
        }
    }
}

fn default_max_retries() -> u32 {
    2
}
fn default_store() -> String {
    "sqlite://release-coordinator.db".into()
}

/// `release-policy.yaml`: who may approve what.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleasePolicy {
    #[serde(default)]
    pub roles: BTreeMap<String, RoleMembers>,
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentPolicy>,
    /// Accounts that never count as approvers (besides accounts the forge marks as bots).
    #[serde(default)]
    pub bots: Vec<String>,
}

impl ReleasePolicy {
    /// The rule for `environment`: its own entry, else the `default` entry the operator wrote
    /// out, else none (an environment without a rule cannot be released to).
    pub fn environment(&self, environment: &str) -> Option<&EnvironmentPolicy> {
        // A rollback pull request merges under the environment's `rollback` rule, or its own.
        if let Some(rolled_back) =
            crate::store::forge_releases::rolled_back_environment(environment)
        {
            let rule = self.environment(rolled_back)?;
            return Some(rule.rollback.as_deref().unwrap_or(rule));
        }
        self.environments
            .get(environment)
            .or_else(|| self.environments.get("default"))
    }

    /// The environments `environment` comes after, nearest first (`after:` followed).
    pub fn chain_before(&self, environment: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut at = environment;
        while let Some(before) = self.environments.get(at).and_then(|e| e.after.as_deref()) {
            if before == environment || out.contains(&before) {
                break; // a circle, reported by validation
            }
            out.push(before);
            at = before;
        }
        out
    }

    /// The circle `environment`'s chain runs into, if it does.
    fn chain_cycle(&self, environment: &str) -> Option<Vec<String>> {
        let mut seen = vec![environment.to_string()];
        let mut at = environment;
        while let Some(before) = self.environments.get(at).and_then(|e| e.after.as_deref()) {
            seen.push(before.to_string());
            if before == environment {
                return Some(seen);
            }
            if seen[..seen.len() - 1].iter().any(|s| s == before) {
                return None; // a circle further on, reported at its own members
            }
            at = before;
        }
        None
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleMembers {
    #[serde(default)]
    pub users: Vec<String>,
    /// `org/team-slug`.
    #[serde(default)]
    pub github_teams: Vec<String>,
    /// Full group paths, `group/subgroup`; members of subgroups count.
    #[serde(default)]
    pub gitlab_groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentPolicy {
    #[serde(default)]
    pub required_approvals: u32,
    /// Each of these roles must be among the approvers.
    #[serde(default)]
    pub required_roles: Vec<String>,
    /// Checks that must succeed on the head commit, each from the source it names.
    #[serde(default)]
    pub required_checks: Vec<RequiredCheck>,
    /// Minimum overall QA coverage (percent) for a release to this environment.
    #[serde(default)]
    pub qa_coverage_above: Option<f64>,
    /// How long a release waits for approval before it is aborted, e.g. `72h`, `30m`, `7d`.
    #[serde(default)]
    pub approval_timeout: Option<String>,
    /// Roles that may `/rollback`.
    #[serde(default)]
    pub rollback_roles: Vec<String>,
    /// Whether people's commits on a release branch may be merged. Off: only the commit the
    /// bot built is merged. On: everyone who pushed to the branch is excluded from approving.
    #[serde(default)]
    pub allow_people_commits: bool,
    /// The environment a release must have reached first (`production: {after: staging}`): a
    /// trigger may not skip it or list it later, and this environment's pull request opens
    /// only once that one is deployed (with Argo CD) or merged (without).
    #[serde(default)]
    pub after: Option<String>,
    /// How long the release stays in the environment before (`after`) before this one opens,
    /// e.g. `30m`, `2h`.
    #[serde(default)]
    pub soak: Option<String>,
    /// The rule a rollback pull request of this environment merges under, when lighter than
    /// the environment's own (for example one approval by a `platform-admin`, no checks).
    #[serde(default)]
    pub rollback: Option<Box<EnvironmentPolicy>>,
}

/// A check that must pass, and where it must come from. Written as a name (`ci/build`: a check
/// run of any GitHub App, or a job of the GitLab project's own pipeline; never a commit
/// status, which anyone with write access can post) or in full:
/// `{name: ci/build, app: github-actions}` (only that app's check runs, by slug or id),
/// `{name: security-scan, statusCreators: [scanner-bot]}` (commit statuses by those users).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequiredCheck {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_creators: Vec<String>,
}

impl RequiredCheck {
    pub fn named(name: &str) -> RequiredCheck {
        RequiredCheck {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Whether a run from `source` counts for this check.
    pub fn accepts(&self, source: &crate::events::CheckSource) -> bool {
        use crate::events::CheckSource;
        match source {
            CheckSource::App { slug, id } => match &self.app {
                None => self.status_creators.is_empty(),
                Some(app) => app.eq_ignore_ascii_case(slug) || *app == id.to_string(),
            },
            CheckSource::Pipeline => self.app.is_none() && self.status_creators.is_empty(),
            CheckSource::Status { creator } => self
                .status_creators
                .iter()
                .any(|c| c.eq_ignore_ascii_case(creator)),
        }
    }

    /// Where it must come from, for people.
    pub fn source_text(&self) -> String {
        match (&self.app, self.status_creators.as_slice()) {
            (Some(app), _) => format!("check runs of the app `{app}`"),
            (None, []) => "a check run of a GitHub App or a job of the project's pipeline".into(),
            (None, creators) => format!(
                "commit statuses by {}",
                creators
                    .iter()
                    .map(|c| format!("@{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl<'de> Deserialize<'de> for RequiredCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default)]
            app: Option<String>,
            #[serde(default)]
            status_creators: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Full(Full),
        }
        match Form::deserialize(d) {
            Ok(Form::Name(name)) => Ok(RequiredCheck::named(&name)),
            Ok(Form::Full(f)) => {
                if f.app.is_some() && !f.status_creators.is_empty() {
                    return Err(serde::de::Error::custom(
                        "a required check names either `app` or `statusCreators`, not both",
                    ));
                }
                Ok(RequiredCheck {
                    name: f.name,
                    app: f.app,
                    status_creators: f.status_creators,
                })
            }
            Err(_) => Err(serde::de::Error::custom(
                "a required check is a name, or a mapping with `name` and `app` or `statusCreators`",
            )),
        }
    }
}

/// Parses `72h`, `30m`, `45s`, `7d` into seconds.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

/// `milestones.yaml`: per-milestone overrides.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MilestonesFile {
    #[serde(default)]
    pub milestones: Vec<MilestoneOverride>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MilestoneOverride {
    pub id: String,
    #[serde(default)]
    pub version_tag: Option<String>,
    /// Environments this milestone may be promoted to (all, when absent).
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    #[serde(default)]
    pub manual_approval_required: Option<bool>,
    #[serde(default)]
    pub auto_promotion: Option<bool>,
    #[serde(default)]
    pub emit_signed_manifest: Option<bool>,
}

/// Everything the operator configured, with file locations kept for error positions.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Directory of `orchestration-config.yaml`; relative paths resolve against it.
    pub base_dir: PathBuf,
    pub orchestration: OrchestrationConfig,
    pub orchestration_src: SourceFile,
    pub policy: ReleasePolicy,
    pub resolver: VersionResolver,
    pub resolver_src: Option<SourceFile>,
    pub milestones: MilestonesFile,
    pub milestones_src: Option<SourceFile>,
}

impl OperatorConfig {
    /// Loads and validates the operator's files; every problem in every file is reported.
    pub fn load(config_path: &Path) -> Result<OperatorConfig, Diagnostics> {
        let name = config_path.display().to_string();
        let src = SourceFile::read(config_path, &name)?;
        let orchestration: OrchestrationConfig = src.parse_yaml()?;
        let base_dir = config_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        let mut problems = validate_orchestration(&orchestration, &src);

        // The optional files: absent means defaults, present means parsed strictly.
        let optional = |p: &Path| -> Result<Option<SourceFile>, Diagnostic> {
            let path = base_dir.join(p);
            if !path.exists() {
                return Ok(None);
            }
            SourceFile::read(&path, path.display().to_string()).map(Some)
        };
        let mut load_optional = |p: &Path| optional(p).map_err(|d| problems.push(d)).ok().flatten();
        let policy_src = load_optional(&orchestration.policy_file);
        let resolver_src = load_optional(&orchestration.version_resolver_file);
        let milestones_src = load_optional(&orchestration.milestones_file);

        let policy = match &policy_src {
            Some(s) => match s.parse_yaml::<ReleasePolicy>() {
                Ok(p) => {
                    problems.extend(validate_policy(&p, s, &orchestration));
                    p
                }
                Err(d) => {
                    problems.push(d);
                    ReleasePolicy::default()
                }
            },
            None => ReleasePolicy::default(),
        };
        let resolver = match &resolver_src {
            Some(s) => match s.parse_yaml::<VersionResolver>() {
                Ok(r) => {
                    problems.extend(r.validate(s));
                    r
                }
                Err(d) => {
                    problems.push(d);
                    VersionResolver::default()
                }
            },
            None => VersionResolver::default(),
        };
        let milestones = match &milestones_src {
            Some(s) => match s.parse_yaml::<MilestonesFile>() {
                Ok(m) => {
                    problems.extend(validate_milestones(&m, s, &orchestration));
                    m
                }
                Err(d) => {
                    problems.push(d);
                    MilestonesFile::default()
                }
            },
            None => MilestonesFile::default(),
        };
        problems.into_result(OperatorConfig {
            base_dir,
            orchestration,
            orchestration_src: src,
            policy,
            resolver,
            resolver_src,
            milestones,
            milestones_src,
        })
    }

    /// The store's URL (`defaults.store`), a relative SQLite path resolved against this
    /// file's folder like every other path in it: `release` run from another folder finds
    /// the same store.
    pub fn store_url(&self) -> String {
        let url = &self.orchestration.defaults.store;
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return url.clone();
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
            return url.clone();
        }
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!(
            "sqlite://{}{query}",
            self.resolve_path(Path::new(path)).display()
        )
    }

    /// Resolves a path from the configuration against the configuration's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Every environment some service can be deployed to.
    pub fn environments(&self) -> BTreeSet<&str> {
        self.orchestration
            .services
            .iter()
            .flat_map(|s| s.values.keys().map(String::as_str))
            .collect()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.orchestration.services.iter().find(|s| s.name == name)
    }

    pub fn milestone(&self, id: &str) -> Option<(usize, &MilestoneOverride)> {
        self.milestones
            .milestones
            .iter()
            .enumerate()
            .find(|(_, m)| m.id == id)
    }
}

/// A path inside a repository: relative, normalized, and never leaving the repository.
pub fn check_repo_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("path is empty".into());
    }
    if p.contains('\\') || p.contains('\0') {
        return Err(format!(
            "`{p}` contains a backslash or NUL; use `/` between directories"
        ));
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err(format!(
            "`{p}` is absolute; write it relative to the repository root"
        ));
    }
    for c in path.components() {
        match c {
            Component::Normal(part) if part != ".git" => {}
            Component::Normal(_) => return Err(format!("`{p}` points into the `.git` directory")),
            Component::ParentDir => {
                return Err(format!("`{p}` leaves the repository (`..` is not allowed)"));
            }
            Component::CurDir => return Err(format!("`{p}` contains `.`; write the plain path")),
            _ => return Err(format!("`{p}` is not a plain relative path")),
        }
    }
    Ok(())
}

pub fn validate_orchestration(c: &OrchestrationConfig, src: &SourceFile) -> Diagnostics {
    let mut d = Diagnostics::default();
    if c.deployment.repo.trim().is_empty() {
        d.push(src.at(
            route!["deployment", "repo"],
            "deployment.repo is empty; give a URL or a path",
        ));
    }
    if !git2::Reference::is_valid_name(&format!("refs/heads/{}", c.deployment.base_branch)) {
        d.push(src.at(
            route!["deployment", "baseBranch"],
            format!("`{}` is not a valid branch name", c.deployment.base_branch),
        ));
    }
    // Tokens never travel in clear: every place the bot sends one must be https (or this
    // machine).
    let clear = |url: &str| crate::git::in_clear(url);
    let token_for_git = c.deployment.token_env.is_some()
        || c.forges.github.is_some()
        || c.forges
            .gitlab
            .as_ref()
            .is_some_and(|g| g.deployment_repo.is_some());
    if token_for_git && clear(&c.deployment.repo) {
        d.push(src.at(
            route!["deployment", "repo"],
            format!(
                "`{}` is plain http: the bot's token would cross the network unencrypted; use https",
                crate::git::redact_url(&c.deployment.repo)
            ),
        ));
    }
    if let Some(g) = &c.forges.github {
        for (key, url) in [("apiUrl", &g.api_url), ("cloneUrlBase", &g.clone_url_base)] {
            if clear(url) {
                d.push(src.at(
                    route!["forges", "github", key],
                    format!("`{url}` is plain http: the bot's token would cross the network unencrypted; use https"),
                ));
            }
        }
    }
    if let Some(g) = &c.forges.gitlab {
        for (key, url) in [
            ("url", Some(&g.url)),
            ("cloneUrlBase", g.clone_url_base.as_ref()),
        ] {
            if let Some(url) = url
                && clear(url)
            {
                d.push(src.at(
                    route!["forges", "gitlab", key],
                    format!("`{url}` is plain http: the bot's token would cross the network unencrypted; use https"),
                ));
            }
        }
    }
    if let Some(g) = &c.forges.gitlab {
        if g.webhook_token_env.is_empty() {
            d.push(src.at(
                route!["forges", "gitlab", "webhookTokenEnv"],
                "name at least one environment variable holding the GitLab webhook token",
            ));
        }
        if g.deployment_repo.is_some() && g.token_env.is_none() {
            d.push(src.at(
                route!["forges", "gitlab"],
                "releasing through GitLab (`deploymentRepo`) needs `tokenEnv`: the variable holding the bot's access token",
            ));
        }
        if g.deployment_repo.is_some() && c.forges.github.is_some() {
            d.push(src.at(
                route!["forges", "gitlab", "deploymentRepo"],
                "the deployment repository lives on one forge: `forges.github` already names one; run one bot per forge",
            ));
        }
        if g.merge_method == MergeMethod::Rebase {
            d.push(src.at(
                route!["forges", "gitlab", "mergeMethod"],
                "GitLab sets rebasing per project (fast-forward merge); choose `merge` or `squash` here",
            ));
        }
    }
    if let Some(g) = &c.forges.github {
        if g.webhook_secret_env.is_empty() {
            d.push(src.at(
                route!["forges", "github", "webhookSecretEnv"],
                "name at least one environment variable holding the GitHub webhook secret",
            ));
        }
        let app = g.app_id.is_some() || g.private_key_file.is_some();
        if app && (g.app_id.is_none() || g.private_key_file.is_none()) {
            d.push(src.at(
                route!["forges", "github"],
                "a GitHub App needs both `appId` and `privateKeyFile`",
            ));
        }
        if app == g.token_env.is_some() {
            d.push(src.at(
                route!["forges", "github"],
                "authenticate either with `tokenEnv` or as a GitHub App (`appId` and `privateKeyFile`), not both and not neither",
            ));
        }
    }
    if let Some(images) = &c.images {
        if let Err(why) = images.source_tag_for(&"0".repeat(40), "v1.0.0") {
            d.push(src.at(route!["images", "sourceTag"], why));
        }
        for (i, s) in c.services.iter().enumerate() {
            // The image is a repository; the release writes its tag.
            let last = s.image.rsplit('/').next().unwrap_or_default();
            if s.image.contains('@') || last.contains(':') || s.image.trim().is_empty() {
                d.push(src.at(
                    route!["services", i, "image"],
                    format!("`{}` is not an image repository (no tag or digest: the release writes the tag)", s.image),
                ));
            }
        }
        for (host, r) in &images.registries {
            if host.contains('/') || host.is_empty() {
                d.push(src.at(
                    route!["images", "registries", host.as_str()],
                    format!("`{host}` is not a registry host (such as `ghcr.io` or `registry.example.com:5000`)"),
                ));
            }
            if r.insecure
                && r.password_env.is_some()
                && crate::git::in_clear(&format!("http://{host}/"))
            {
                d.push(src.at(
                    route!["images", "registries", host.as_str(), "insecure"],
                    format!("`{host}` over plain http would carry the registry password unencrypted; use https"),
                ));
            }
        }
    }
    if let Some(a) = &c.argocd {
        if !a.url.starts_with("https://") && !a.url.starts_with("http://") {
            d.push(src.at(
                route!["argocd", "url"],
                format!("`{}` is not an http(s) URL of an Argo CD server", a.url),
            ));
        } else if clear(&a.url) {
            d.push(src.at(
                route!["argocd", "url"],
                format!("`{}` is plain http: the bot's Argo CD token would cross the network unencrypted; use https", a.url),
            ));
        }
        for (key, value) in [
            ("healthTimeout", &a.health_timeout),
            ("syncTimeout", &a.sync_timeout),
        ] {
            if parse_duration_secs(value).is_none() {
                d.push(src.at(
                    route!["argocd", key],
                    format!("`{value}` is not a duration (like `90s`, `10m`, `1h`)"),
                ));
            }
        }
        let authority = a.url.split("://").nth(1).unwrap_or_default();
        if authority
            .split('/')
            .next()
            .unwrap_or_default()
            .contains('@')
        {
            d.push(src.at(
                route!["argocd", "url"],
                "the URL carries credentials; give the token in `tokenEnv` instead",
            ));
        }
        for s in &c.services {
            for env in s.values.keys() {
                if s.argocd_applications.contains_key(env) {
                    continue;
                }
                if let Err(why) = render_application(&a.application, &s.name, env) {
                    d.push(src.at(
                        route!["argocd", "application"],
                        format!("for service `{}` in `{env}`: {why}", s.name),
                    ));
                }
            }
        }
    }
    if c.services.is_empty() {
        d.push(src.at(
            route!["services"],
            "no services configured; add at least one service with its values files",
        ));
    }
    let mut seen = BTreeSet::new();
    // Several services may share a values file (a main image and a sidecar) but not a value.
    let mut places: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (i, s) in c.services.iter().enumerate() {
        for (env, path) in &s.values {
            for key in std::iter::once(&s.tag_path).chain(&s.digest_path) {
                if let Some(other) = places.insert((path.as_str(), key.as_str()), &s.name)
                    && other != s.name
                {
                    d.push(src.at(
                        route!["services", i, "values", env.as_str()],
                        format!(
                            "`{key}` in `{path}` is already the tag or digest of service `{other}`; give one of them its own path"
                        ),
                    ));
                }
            }
        }
        if let Some(dp) = &s.digest_path {
            if c.images.is_none() {
                d.push(src.at(
                    route!["services", i, "digestPath"],
                    "digestPath needs `images:` (the digest is asked of the image's registry)",
                ));
            }
            if dp.split('.').any(str::is_empty) {
                d.push(src.at(
                    route!["services", i, "digestPath"],
                    format!("`{dp}` is not a dotted key path such as `image.digest`"),
                ));
            } else if *dp == s.tag_path {
                d.push(src.at(
                    route!["services", i, "digestPath"],
                    format!("`{dp}` is the tagPath too; the digest needs its own value"),
                ));
            }
        }
        for (name, values) in &s.deploy_strategies {
            let base = route!["services", i, "deployStrategies", name.as_str()];
            check_strategy(&mut d, src, name, values, base, &[s]);
        }
        if !seen.insert(s.name.as_str()) {
            d.push(src.at(
                route!["services", i, "name"],
                format!("service `{}` is configured twice", s.name),
            ));
        }
        for env in s.values.keys() {
            // `rollback:<env>#<n>` names a rollback pull request's environment.
            if env.is_empty() || env.contains([':', '#', '/', ' ']) {
                d.push(src.at(
                    route!["services", i, "values", env.as_str()],
                    format!("`{env}` is not a valid environment name (no `:`, `#`, `/` or spaces)"),
                ));
            }
        }
        if s.name.is_empty() || s.name.contains(['/', ',', ' ']) {
            d.push(src.at(
                route!["services", i, "name"],
                format!("`{}` is not a valid service name", s.name),
            ));
        }
        if s.tag_path.split('.').any(str::is_empty) {
            d.push(src.at(
                route!["services", i, "tagPath"],
                format!(
                    "`{}` is not a dotted key path such as `image.tag`",
                    s.tag_path
                ),
            ));
        }
        if s.values.is_empty() {
            d.push(src.at(
                route!["services", i, "values"],
                format!("service `{}` has no values files", s.name),
            ));
        }
        for (env, path) in &s.values {
            if !is_valid_environment_name(env) {
                d.push(src.at(
                    route!["services", i, "values", env.as_str()],
                    format!("`{env}` is not a valid environment name: use lowercase letters, digits and `-`"),
                ));
            }
            if let Err(e) = check_repo_path(path) {
                d.push(src.at(route!["services", i, "values", env.as_str()], e));
            }
        }
        if let Some(t) = &s.image_tag
            && let Err(e) = minijinja::Environment::new().template_from_str(t)
        {
            d.push(src.at(
                route!["services", i, "imageTag"],
                format!("imageTag is not a valid template: {e}"),
            ));
        }
    }
    let services: Vec<&ServiceConfig> = c.services.iter().collect();
    for (name, values) in &c.deploy_strategies {
        let base = route!["deployStrategies", name.as_str()];
        check_strategy(&mut d, src, name, values, base, &services);
    }
    for (i, env) in c.defaults.require_manual_approval_for.iter().enumerate() {
        if !c.services.iter().any(|s| s.values.contains_key(env)) {
            d.push(src.at(
                route!["defaults", "requireManualApprovalFor", i],
                format!("no service deploys to environment `{env}`"),
            ));
        }
    }
    if !c.defaults.store.starts_with("sqlite:") {
        d.push(src.at(
            route!["defaults", "store"],
            "store must be `sqlite://<path>`",
        ));
    }
    d
}

/// A deploy strategy's name and values: plain names, dotted paths, single values, and never a
/// path that holds a service's image tag or digest (the release writes those).
fn check_strategy<'a>(
    d: &mut Diagnostics,
    src: &SourceFile,
    name: &str,
    values: &'a StrategyValues,
    base: &[crate::diagnostics::Seg<'a>],
    services: &[&ServiceConfig],
) {
    let at = |key: Option<&'a str>| {
        let mut route = base.to_vec();
        route.extend(key.map(crate::diagnostics::Seg::Key));
        route
    };
    if !is_valid_environment_name(name) {
        d.push(src.at(
            &at(None),
            format!("`{name}` is not a strategy name: use lowercase letters, digits and `-`"),
        ));
    }
    if values.is_empty() {
        d.push(src.at(
            &at(None),
            format!("strategy `{name}` writes no values; give it at least one `path: value`"),
        ));
    }
    for (key, value) in values {
        let problem = if key.split('.').any(str::is_empty) {
            Some(format!(
                "`{key}` is not a dotted key path such as `rollout.strategy`"
            ))
        } else if !matches!(
            value,
            yaml_serde::Value::String(_)
                | yaml_serde::Value::Number(_)
                | yaml_serde::Value::Bool(_)
        ) {
            Some(format!(
                "`{key}` must be a single value (a string, a number or a boolean)"
            ))
        } else {
            services
                .iter()
                .find(|s| s.tag_path == *key || s.digest_path.as_deref() == Some(key))
                .map(|s| format!("`{key}` is where service `{}` keeps its image tag or digest, which the release writes", s.name))
        };
        if let Some(p) = problem {
            d.push(src.at(&at(Some(key)), p));
        }
    }
}

fn validate_policy(p: &ReleasePolicy, src: &SourceFile, c: &OrchestrationConfig) -> Diagnostics {
    let mut d = Diagnostics::default();
    let known_envs: BTreeSet<&str> = c
        .services
        .iter()
        .flat_map(|s| s.values.keys().map(String::as_str))
        .collect();
    // An environment the policy covers: named, or any a service deploys to when there is a
    // `default` entry.
    let covered = |env: &str| {
        env != "default"
            && (p.environments.contains_key(env)
                || (p.environments.contains_key("default") && known_envs.contains(env)))
    };
    for (env, rules) in &p.environments {
        // `default` is the rule of every environment the policy does not name.
        if env != "default" && !known_envs.contains(env.as_str()) {
            d.push(src.at(
                route!["environments", env.as_str()],
                format!("no service in orchestration-config.yaml deploys to environment `{env}`"),
            ));
        }
        let rollback_roles = rules
            .rollback
            .as_ref()
            .map(|r| r.required_roles.clone())
            .unwrap_or_default();
        for (field, roles) in [
            ("requiredRoles", &rules.required_roles),
            ("rollbackRoles", &rules.rollback_roles),
            ("rollback.requiredRoles", &rollback_roles),
        ] {
            for (i, role) in roles.iter().enumerate() {
                if !p.roles.contains_key(role) {
                    let at = match field.split_once('.') {
                        Some((outer, inner)) => {
                            route!["environments", env.as_str(), outer, inner, i]
                        }
                        None => route!["environments", env.as_str(), field, i],
                    };
                    d.push(src.at(at, format!("role `{role}` is not defined under `roles`")));
                }
            }
        }
        if let Some(q) = rules.qa_coverage_above
            && !(0.0..=100.0).contains(&q)
        {
            d.push(src.at(
                route!["environments", env.as_str(), "qaCoverageAbove"],
                "qaCoverageAbove must be from 0 to 100",
            ));
        }
        if let Some(t) = &rules.approval_timeout
            && parse_duration_secs(t).is_none()
        {
            d.push(src.at(
                route!["environments", env.as_str(), "approvalTimeout"],
                format!("`{t}` is not a duration; write a number and a unit: `30m`, `72h`, `7d`"),
            ));
        }
        if let Some(t) = &rules.soak
            && parse_duration_secs(t).is_none()
        {
            d.push(src.at(
                route!["environments", env.as_str(), "soak"],
                format!("`{t}` is not a duration; write a number and a unit: `30m`, `2h`, `1d`"),
            ));
        }
        if let Some(r) = &rules.rollback {
            for (key, set) in [
                ("after", r.after.is_some()),
                ("soak", r.soak.is_some()),
                ("rollback", r.rollback.is_some()),
                ("rollbackRoles", !r.rollback_roles.is_empty()),
            ] {
                if set {
                    d.push(src.at(
                        route!["environments", env.as_str(), "rollback", key],
                        format!(
                            "`{key}` means nothing in a rollback rule; set it on `{env}` itself"
                        ),
                    ));
                }
            }
        }
        if rules.soak.is_some() && rules.after.is_none() {
            d.push(src.at(
                route!["environments", env.as_str(), "soak"],
                "a soak time needs `after`: the environment the release soaks in first",
            ));
        }
        if let Some(before) = &rules.after {
            if env == "default" {
                d.push(src.at(
                    route!["environments", env.as_str(), "after"],
                    "the `default` entry cannot chain; give `after` to each environment that has one",
                ));
            } else if before == env {
                d.push(src.at(
                    route!["environments", env.as_str(), "after"],
                    format!("`{env}` cannot come after itself"),
                ));
            } else if !covered(before) {
                d.push(src.at(
                    route!["environments", env.as_str(), "after"],
                    format!("`after: {before}` names no environment of this policy"),
                ));
            } else if let Some(cycle) = p.chain_cycle(env) {
                d.push(src.at(
                    route!["environments", env.as_str(), "after"],
                    format!(
                        "the chain goes round in a circle: {}",
                        cycle.join(" after ")
                    ),
                ));
            }
        }
    }
    for (role, members) in &p.roles {
        for (i, team) in members.github_teams.iter().enumerate() {
            if team.split('/').count() != 2 || team.split('/').any(str::is_empty) {
                d.push(src.at(
                    route!["roles", role.as_str(), "githubTeams", i],
                    format!("`{team}` is not `org/team-slug`"),
                ));
            }
        }
        for (i, group) in members.gitlab_groups.iter().enumerate() {
            if group.split('/').any(str::is_empty) {
                d.push(src.at(
                    route!["roles", role.as_str(), "gitlabGroups", i],
                    format!("`{group}` is not a group path such as `acme/platform`"),
                ));
            }
        }
    }
    d
}

fn validate_milestones(
    m: &MilestonesFile,
    src: &SourceFile,
    c: &OrchestrationConfig,
) -> Diagnostics {
    let mut d = Diagnostics::default();
    let known_envs: BTreeSet<&str> = c
        .services
        .iter()
        .flat_map(|s| s.values.keys().map(String::as_str))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, ms) in m.milestones.iter().enumerate() {
        if !seen.insert(ms.id.as_str()) {
            d.push(src.at(
                route!["milestones", i, "id"],
                format!("milestone `{}` is listed twice", ms.id),
            ));
        }
        for (j, env) in ms.environments.iter().flatten().enumerate() {
            if !known_envs.contains(env.as_str()) {
                d.push(src.at(
                    route!["milestones", i, "environments", j],
                    format!(
                        "no service in orchestration-config.yaml deploys to environment `{env}`"
                    ),
                ));
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_may_not_escape() {
        assert!(check_repo_path("apps/booking/values.yaml").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "apps/../../x",
            ".git/config",
            "a\\b",
            "./a",
            "",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("72h"), Some(72 * 3600));
        assert_eq!(parse_duration_secs("30m"), Some(1800));
        assert_eq!(parse_duration_secs("7d"), Some(7 * 86400));
        assert_eq!(parse_duration_secs("soon"), None);
        assert_eq!(parse_duration_secs("0h"), None);
        assert_eq!(parse_duration_secs("5w"), None);
    }

    fn orchestration(yaml: &str) -> (OrchestrationConfig, SourceFile) {
        let src = SourceFile::new("orchestration-config.yaml", yaml);
        (src.parse_yaml().unwrap(), src)
    }

    const BASE: &str = "deployment:\n  repo: ../deploy\nsigning:\n  keyFile: k.pem\nservices:\n  - name: booking\n    image: ghcr.io/acme/booking\n    values:\n      staging: apps/booking/values-staging.yaml\n";

    #[test]
    fn values_path_that_escapes_is_reported_at_its_line() {
        let (c, src) =
            orchestration(&BASE.replace("apps/booking/values-staging.yaml", "../../etc/passwd"));
        let d = validate_orchestration(&c, &src);
        assert_eq!(d.0.len(), 1, "{d}");
        assert_eq!((d.0[0].line, d.0[0].column), (9, 16), "{d}");
        assert!(d.0[0].message.contains("leaves the repository"));
    }

    #[test]
    fn services_may_share_a_values_file_but_not_a_value() {
        let sidecar = "  - name: booking-metrics\n    image: ghcr.io/acme/metrics\n    tagPath: metrics.image.tag\n    values:\n      staging: apps/booking/values-staging.yaml\n";
        let (c, src) = orchestration(&format!("{BASE}{sidecar}"));
        assert!(validate_orchestration(&c, &src).is_empty());
        let clash = sidecar.replace("metrics.image.tag", "image.tag");
        let (c, src) = orchestration(&format!("{BASE}{clash}"));
        let d = validate_orchestration(&c, &src);
        assert_eq!(d.0.len(), 1, "{d}");
        assert_eq!((d.0[0].line, d.0[0].column), (14, 16), "{d}");
        assert!(
            d.0[0]
                .message
                .contains("`image.tag` in `apps/booking/values-staging.yaml` is already the tag or digest of service `booking`"),
            "{d}"
        );
    }

    #[test]
    fn argocd_settings_are_checked_where_they_are_written() {
        let good = "argocd:\n  url: https://argocd.example.com\n  tokenEnv: ARGOCD_TOKEN\n";
        let (c, src) = orchestration(&format!("{BASE}{good}"));
        assert!(validate_orchestration(&c, &src).is_empty());
        let argo = c.argocd.as_ref().unwrap();
        assert_eq!(
            argo.application_of(&c.services[0], "staging"),
            "booking-staging"
        );
        assert_eq!(argo.health_timeout_secs(), 600);
        let bad = "argocd:\n  url: http://argocd.example.com\n  tokenEnv: ARGOCD_TOKEN\n  application: \"{{ service }}_{{ environment }}\"\n  healthTimeout: soon\n";
        let (c, src) = orchestration(&format!("{BASE}{bad}"));
        let d = validate_orchestration(&c, &src);
        let text = d.to_string();
        assert_eq!(d.0.len(), 3, "{text}");
        assert!(
            text.contains("the bot's Argo CD token would cross the network unencrypted"),
            "{text}"
        );
        assert!(text.contains("`soon` is not a duration"), "{text}");
        assert!(
            text.contains("for service `booking` in `staging`: `booking_staging` is not a valid Application name"),
            "{text}"
        );
        // Each at its own line: url (11), application (13), healthTimeout (14).
        let mut lines: Vec<usize> = d.0.iter().map(|p| p.line).collect();
        lines.sort();
        assert_eq!(lines, vec![11, 13, 14], "{text}");
        // A service names its own Application.
        let own = BASE.replace(
            "    values:\n",
            "    argocdApplications:\n      staging: booking-stg\n    values:\n",
        );
        let (c, src) = orchestration(&format!("{own}{good}"));
        assert!(validate_orchestration(&c, &src).is_empty());
        assert_eq!(
            c.argocd
                .as_ref()
                .unwrap()
                .application_of(&c.services[0], "staging"),
            "booking-stg"
        );
    }

    #[test]
    fn a_token_never_goes_to_a_plain_http_remote() {
        let config = BASE.replace(
            "  repo: ../deploy\n",
            "  repo: http://git.example.com/acme/deploy.git\n  tokenEnv: RC_TOKEN\n",
        );
        let (c, src) = orchestration(&config);
        let d = validate_orchestration(&c, &src);
        let text = d.to_string();
        assert!(
            text.contains("is plain http: the bot's token would cross the network unencrypted"),
            "{text}"
        );
        assert_eq!((d.0[0].line, d.0[0].column), (2, 9), "{d}");
        let gitlab = "forges:\n  gitlab:\n    webhookTokenEnv: [GL_HOOK]\n    url: http://gitlab.internal\n    tokenEnv: GL\n    deploymentRepo: acme/deploy\n";
        let (c, src) = orchestration(&format!("{BASE}{gitlab}"));
        let text = validate_orchestration(&c, &src).to_string();
        assert!(
            text.contains("`http://gitlab.internal` is plain http"),
            "{text}"
        );
        // This machine is fine (a local fake forge).
        let local = "forges:\n  gitlab:\n    webhookTokenEnv: [GL_HOOK]\n    url: http://127.0.0.1:9100\n    tokenEnv: GL\n    deploymentRepo: acme/deploy\n";
        let (c, src) = orchestration(&format!("{BASE}{local}"));
        assert!(
            !validate_orchestration(&c, &src)
                .to_string()
                .contains("plain http")
        );
    }

    #[test]
    fn releasing_through_gitlab_needs_a_token_and_one_deployment_forge() {
        let gitlab = "forges:\n  gitlab:\n    webhookTokenEnv: [GL_HOOK]\n    deploymentRepo: acme/deploy\n    mergeMethod: rebase\n";
        let (c, src) = orchestration(&format!("{BASE}{gitlab}"));
        let text = validate_orchestration(&c, &src).to_string();
        assert!(text.contains("needs `tokenEnv`"), "{text}");
        assert!(text.contains("choose `merge` or `squash`"), "{text}");
        assert_eq!(c.forges.gitlab.as_ref().unwrap().url, "https://gitlab.com");

        let both = "forges:\n  github:\n    webhookSecretEnv: [S]\n    tokenEnv: T\n    deploymentRepo: acme/deploy\n  gitlab:\n    webhookTokenEnv: [GL_HOOK]\n    tokenEnv: GL\n    deploymentRepo: acme/deploy\n";
        let (c, src) = orchestration(&format!("{BASE}{both}"));
        let text = validate_orchestration(&c, &src).to_string();
        assert!(
            text.contains("the deployment repository lives on one forge"),
            "{text}"
        );

        // Only the webhook door: fine beside GitHub.
        let door = "forges:\n  github:\n    webhookSecretEnv: [S]\n    tokenEnv: T\n    deploymentRepo: acme/deploy\n  gitlab:\n    webhookTokenEnv: [GL_HOOK]\n";
        let (c, src) = orchestration(&format!("{BASE}{door}"));
        assert!(validate_orchestration(&c, &src).0.is_empty());
        assert!(c.forges.gitlab.unwrap().settings().is_none());
    }

    #[test]
    fn gitlab_group_paths_are_checked() {
        let (c, _) = orchestration(BASE);
        let src = SourceFile::new(
            "release-policy.yaml",
            "roles:\n  qa-lead:\n    gitlabGroups: [acme/qa, /acme]\n",
        );
        let p: ReleasePolicy = src.parse_yaml().unwrap();
        let text = validate_policy(&p, &src, &c).to_string();
        assert!(text.contains("`/acme` is not a group path"), "{text}");
        assert!(!text.contains("`acme/qa`"), "{text}");
    }

    #[test]
    fn policy_roles_must_exist_and_environments_must_be_deployable() {
        let (c, _) = orchestration(BASE);
        let src = SourceFile::new(
            "release-policy.yaml",
            "roles:\n  qa-lead:\n    users: [alice]\nenvironments:\n  staging:\n    requiredRoles: [qa-lead, cto]\n    approvalTimeout: soon\n  prod:\n    requiredApprovals: 1\n",
        );
        let p: ReleasePolicy = src.parse_yaml().unwrap();
        let d = validate_policy(&p, &src, &c);
        let text = d.to_string();
        assert!(
            text.contains("release-policy.yaml:6:30: role `cto` is not defined under `roles`"),
            "{text}"
        );
        assert!(
            text.contains("release-policy.yaml:7:22: `soon` is not a duration"),
            "{text}"
        );
        assert!(text.contains("release-policy.yaml:8:3: no service in orchestration-config.yaml deploys to environment `prod`"), "{text}");
    }

    /// `default` is the rule of every environment the policy does not name: it is no
    /// environment of its own, and a chain may start from an environment it covers.
    #[test]
    fn a_default_entry_covers_the_environments_the_policy_does_not_name() {
        let two = BASE.replace(
            "      staging: apps/booking/values-staging.yaml\n",
            "      staging: apps/booking/values-staging.yaml\n      production: apps/booking/values-production.yaml\n",
        );
        let (c, _) = orchestration(&two);
        let policy = |yaml: &str| {
            let src = SourceFile::new("release-policy.yaml", yaml);
            let p: ReleasePolicy = src.parse_yaml().unwrap();
            (validate_policy(&p, &src, &c), p)
        };
        let (d, p) = policy(
            "environments:\n  default:\n    requiredApprovals: 1\n  production:\n    requiredApprovals: 2\n    after: staging\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(p.environment("staging").unwrap().required_approvals, 1);
        assert_eq!(p.chain_before("production"), ["staging"]);
        // Without `default`, staging is no environment of the policy.
        let (d, _) = policy("environments:\n  production:\n    after: staging\n");
        assert!(
            d.to_string().contains(
                "release-policy.yaml:3:12: `after: staging` names no environment of this policy"
            ),
            "{d}"
        );
    }
}
