//! The release lifecycle: from a trigger directory to release branches in the deployment
//! repository, recorded in the store.
//!
//! Order of work, so that a crash anywhere loses nothing and repeats nothing visible:
//! 1. everything is read and validated, and the whole release is planned, before anything is
//!    written;
//! 2. the version is reserved in the store (`Pending`), keyed by version and by a digest of
//!    the inputs;
//! 3. commits are built with the reserved time, so a re-run builds identical commits;
//! 4. branches are pushed atomically, and only then is the release moved on.
//!
//! A re-run with the same inputs resumes an unfinished release; any other re-use of a
//! version is refused.

pub mod bot;
pub mod plan;
pub mod state;
pub mod validate;

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::OperatorConfig;
use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::git::{AppRepoInfo, DeployRepo, GitError, Remote, is_url};
use crate::inputs::AppInputs;
use crate::release::plan::{PlanError, PlanInput, ReleasePlan};
use crate::release::state::{AuditEvent, ReleaseState};
use crate::release::validate::{Context, decide};
use crate::signing::{ReleaseSigner, SigningError};
use crate::store::{
    BranchRecord, NewRelease, ReleaseRecord, Reservation, Store, StoreError, Transition,
};
use crate::templates::Templates;

/// Why a release did not happen. The first two are the user's to fix and are shown as they
/// are; the others are failures of the machinery, shown with their context.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    Refused(String),
    /// An image the release writes is not in its registry (yet: CI may still be pushing it).
    #[error("{0}")]
    ImagesMissing(String),
    /// A registry could not be asked (tried again later).
    #[error("{0}")]
    Registry(String),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signing(#[from] SigningError),
}

impl ReleaseError {
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            ReleaseError::Invalid(_) | ReleaseError::Refused(_) | ReleaseError::ImagesMissing(_)
        )
    }
}

/// A registry's answer that stops a release: one that could not be had is tried again; another
/// image under the release tag, or credentials the registry refuses, are said on the trigger
/// (once someone deletes that image, or the operator fixes the credentials, a redelivery looks
/// again); anything else refuses the release.
impl From<crate::images::ImageError> for ReleaseError {
    fn from(e: crate::images::ImageError) -> Self {
        use crate::images::ImageError;
        match e {
            ImageError::Registry { .. } => ReleaseError::Registry(e.to_string()),
            ImageError::Moved { .. } | ImageError::Denied { .. } => {
                ReleaseError::ImagesMissing(e.to_string())
            }
            other => ReleaseError::Refused(other.to_string()),
        }
    }
}

impl From<Diagnostics> for ReleaseError {
    fn from(d: Diagnostics) -> Self {
        ReleaseError::Invalid(d)
    }
}

impl From<Diagnostic> for ReleaseError {
    fn from(d: Diagnostic) -> Self {
        ReleaseError::Invalid(d.into())
    }
}

impl From<PlanError> for ReleaseError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Invalid(d) => ReleaseError::Invalid(d),
            PlanError::Git(g) => ReleaseError::Git(g),
        }
    }
}

/// A planned release and what is needed to carry it out.
pub struct Prepared {
    pub plan: ReleasePlan,
    pub repo: DeployRepo,
    pub inputs_digest: String,
    /// The unfinished release of the same inputs this run continues, if any.
    pub resumed: Option<ReleaseRecord>,
    pub released_at: OffsetDateTime,
    /// Name and email the release commits are made under.
    pub author: (String, String),
    /// The developer's files the plan was made from (planned again to pin image digests).
    pub inputs: AppInputs,
}

/// Plans `prepared` again with the registry's image digests pinned at each service's
/// `digestPath`: the same inputs, version, base commit and time, so only the pins differ.
pub fn pin(
    config: &OperatorConfig,
    prepared: Prepared,
    digests: &crate::images::Digests,
) -> Result<Prepared, ReleaseError> {
    let (templates, signer) = plan_tools(config)?;
    let base_commit =
        git2::Oid::from_str(&prepared.plan.base_commit).expect("the plan's own commit id");
    let plan = plan::plan(PlanInput {
        config,
        inputs: &prepared.inputs,
        spec: prepared.plan.spec.clone(),
        repo: &prepared.repo,
        base_commit,
        templates: &templates,
        signer: &signer,
        released_at: prepared.released_at,
        digests: Some(digests),
    })?;
    Ok(Prepared { plan, ..prepared })
}

/// [`pin`] with the digests asked of the registries; a tag that is not there refuses the
/// release, naming it.
pub async fn pin_digests(
    config: &OperatorConfig,
    prepared: Prepared,
    registries: &crate::images::Registries,
) -> Result<Prepared, ReleaseError> {
    let wanted = plan::needs_digests(config, &prepared.plan);
    if wanted.is_empty() {
        return Ok(prepared);
    }
    let mut digests = crate::images::Digests::new();
    let missing = registries.digests_of(wanted, &mut digests).await?;
    if !missing.is_empty() {
        return Err(ReleaseError::ImagesMissing(format!(
            "no such image in its registry, so there is no digest to pin: {}",
            missing.join(", ")
        )));
    }
    pin(config, prepared, &digests)
}

fn plan_tools(config: &OperatorConfig) -> Result<(Templates, ReleaseSigner), ReleaseError> {
    let templates = Templates::load(
        config
            .orchestration
            .templates_dir
            .as_ref()
            .map(|d| config.resolve_path(d))
            .as_deref(),
    )?;
    let signing = &config.orchestration.signing;
    let signer = ReleaseSigner::load(
        &config.resolve_path(&signing.key_file),
        signing.key_id.clone(),
    )?;
    Ok((templates, signer))
}

/// SHA-256 over the names and contents of the developer's files.
pub fn inputs_digest(inputs: &AppInputs) -> String {
    let mut h = Sha256::new();
    let mut add = |name: &str, text: &str| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_be_bytes());
        h.update(text.as_bytes());
    };
    add("trigger", &inputs.trigger_src.text);
    add("status", &inputs.status_src.text);
    if let Some((_, s)) = &inputs.qa {
        add("qa", &s.text);
    }
    if let Some((_, s)) = &inputs.matrix {
        add("matrix", &s.text);
    }
    if let Some((_, s)) = &inputs.approval {
        add("approval", &s.text);
    }
    hex::encode(h.finalize())
}

/// How the bot reaches the deployment repository; without it (the command line), as the
/// configuration says.
#[derive(Clone)]
pub struct DeployAccess {
    /// The forge's credentials (a basic-auth user name and a token), in the place of
    /// `deployment.tokenEnv`.
    pub credentials: Option<(&'static str, String)>,
    /// Branches one push may carry for several releases at once (see
    /// [`Remote::with_push_batch`]).
    pub push_batch: usize,
}

/// Opens the deployment repository's cache and brings its base branch up to date.
pub fn open_deploy_repo(
    config: &OperatorConfig,
    access: Option<DeployAccess>,
) -> Result<(DeployRepo, git2::Oid), ReleaseError> {
    let d = &config.orchestration.deployment;
    let repo = deploy_repo(config, access)?;
    let base = repo.fetch(&d.base_branch, d.fetch_depth, None)?;
    Ok((repo, base))
}

/// The cache of the deployment repository, as it is (nothing fetched).
pub fn deploy_repo(
    config: &OperatorConfig,
    access: Option<DeployAccess>,
) -> Result<DeployRepo, ReleaseError> {
    let d = &config.orchestration.deployment;
    let url = if is_url(&d.repo) {
        d.repo.clone()
    } else {
        let p = config.resolve_path(Path::new(&d.repo));
        let abs = p.canonicalize().map_err(|e| {
            config.orchestration_src.at(
                crate::route!["deployment", "repo"],
                format!(
                    "deployment repository `{}` cannot be opened: {e}",
                    p.display()
                ),
            )
        })?;
        abs.display().to_string()
    };
    let (credentials, push_batch) = access.map_or((None, 1), |a| (a.credentials, a.push_batch));
    let remote = match (credentials, &d.token_env) {
        (Some((user, t)), _) => Remote::new(url, Some(t)).with_basic_user(user),
        (None, Some(var)) => Remote::new(
            url,
            Some(std::env::var(var).map_err(|_| GitError::MissingToken(var.clone()))?),
        ),
        (None, None) => Remote::new(url, None),
    };
    let remote = remote.with_push_batch(push_batch);
    Ok(DeployRepo::open(
        remote,
        &config.resolve_path(&d.cache_dir),
    )?)
}

/// Reads, validates, decides and plans; writes nothing but the cache's fetched objects.
pub async fn prepare(
    config: &OperatorConfig,
    trigger_dir: &Path,
    store: Option<&Store>,
    now: OffsetDateTime,
) -> Result<Prepared, ReleaseError> {
    let app = AppRepoInfo::discover(trigger_dir)?;
    prepare_with_app(config, trigger_dir, app, None, store, now).await
}

/// [`prepare`] for trigger files that are not in a working tree (the bot reads them from git
/// objects): `app` says which commit they are from and which tags the repository has.
pub async fn prepare_with_app(
    config: &OperatorConfig,
    trigger_dir: &Path,
    app: AppRepoInfo,
    deploy_access: Option<DeployAccess>,
    store: Option<&Store>,
    now: OffsetDateTime,
) -> Result<Prepared, ReleaseError> {
    let inputs = AppInputs::load(trigger_dir)?;
    let digest = inputs_digest(&inputs);
    let (recorded, resumed) = match store {
        Some(s) => (
            s.recorded_versions().await?,
            s.find_unfinished(&digest).await?,
        ),
        None => (Vec::new(), None),
    };
    prepare_inputs(
        config,
        inputs,
        digest,
        app,
        deploy_access,
        &recorded,
        resumed,
        now,
    )
}

/// Plans the release `record` again from its inputs on the base branch as it is now, for a
/// release pull request whose base moved: the same version, time and edits, the documents
/// rendered again, the history row appended at the end of the history as it now stands.
pub fn replan(
    config: &OperatorConfig,
    trigger_dir: &Path,
    app: AppRepoInfo,
    deploy_access: Option<DeployAccess>,
    record: &ReleaseRecord,
    recorded: &[String],
) -> Result<Prepared, ReleaseError> {
    let inputs = AppInputs::load(trigger_dir)?;
    let digest = inputs_digest(&inputs);
    let prepared = prepare_inputs(
        config,
        inputs,
        digest,
        app,
        deploy_access,
        recorded,
        Some(record.clone()),
        record.created_at,
    )?;
    if prepared.plan.spec.version != record.version_tag {
        return Err(ReleaseError::Refused(format!(
            "release {} planned again as version {}: its inputs no longer give the same version",
            record.version_tag, prepared.plan.spec.version
        )));
    }
    Ok(prepared)
}

#[allow(clippy::too_many_arguments)]
fn prepare_inputs(
    config: &OperatorConfig,
    inputs: AppInputs,
    digest: String,
    app: AppRepoInfo,
    deploy_access: Option<DeployAccess>,
    recorded: &[String],
    resumed: Option<ReleaseRecord>,
    now: OffsetDateTime,
) -> Result<Prepared, ReleaseError> {
    // A resumed release keeps the time it was first recorded with, so its commits are the same.
    let released_at = resumed.as_ref().map(|r| r.created_at).unwrap_or(now);
    let spec = decide(&Context {
        config,
        inputs: &inputs,
        app: &app,
        recorded,
        resumed_version: resumed.as_ref().map(|r| r.version_tag.as_str()),
        today: released_at.date(),
    })?;
    let (templates, signer) = plan_tools(config)?;
    let (repo, base_commit) = open_deploy_repo(config, deploy_access)?;
    let plan = plan::plan(PlanInput {
        config,
        inputs: &inputs,
        spec,
        repo: &repo,
        base_commit,
        templates: &templates,
        signer: &signer,
        released_at,
        digests: None,
    })?;
    let author = (
        config.orchestration.deployment.author_name.clone(),
        config.orchestration.deployment.author_email.clone(),
    );
    Ok(Prepared {
        plan,
        repo,
        inputs_digest: digest,
        resumed,
        released_at,
        author,
        inputs,
    })
}

/// What `release` did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub version: String,
    pub resumed: bool,
    pub branches: Vec<BranchRecord>,
    pub pushed: bool,
    pub state: ReleaseState,
}

/// Records the release, builds its branches and, with `push`, publishes them.
pub async fn execute(
    prepared: Prepared,
    store: &Store,
    push: bool,
    actor: &str,
) -> Result<Outcome, ReleaseError> {
    let Prepared {
        plan,
        repo,
        inputs_digest,
        released_at,
        author,
        ..
    } = prepared;
    let spec = &plan.spec;
    let reservation = store
        .reserve_release(NewRelease {
            version_tag: &spec.version,
            milestone_id: &spec.milestone_id,
            trace_id: &spec.trace_id,
            inputs_digest: &inputs_digest,
            now: released_at,
            actor,
            detail: json!({"environments": spec.environments.iter().map(|e| &e.name).collect::<Vec<_>>(),
                           "version_reason": spec.version_reason, "base_commit": plan.base_commit}),
        })
        .await?;
    let (record, resumed) = match reservation {
        Reservation::New(r) => (r, false),
        Reservation::Existing(r)
            if r.inputs_digest == inputs_digest && r.state == ReleaseState::Pending.as_str() =>
        {
            (r, true)
        }
        Reservation::Existing(r) if r.inputs_digest == inputs_digest => {
            return Err(ReleaseError::Refused(format!(
                "release {} was already made from these inputs on {} (state {}); nothing to do",
                r.version_tag,
                r.created_at.date(),
                r.state
            )));
        }
        Reservation::Existing(r) => {
            return Err(ReleaseError::Refused(format!(
                "version {} was already used by another release (milestone {}, recorded {}); choose a new version_tag",
                r.version_tag,
                r.milestone_id,
                r.created_at.date()
            )));
        }
    };

    let existing = store.branches(record.id).await?;
    if resumed && !push && existing.len() == plan.environments.len() {
        return Err(ReleaseError::Refused(format!(
            "release {} already has its branches built in the cache; run again with --push to publish them",
            spec.version
        )));
    }

    let mut branches = Vec::new();
    for env in &plan.environments {
        let files = plan.files_for(env);
        let commit = repo.build_commit(
            git2::Oid::from_str(&plan.base_commit).map_err(GitError::from)?,
            &files,
            (author.0.as_str(), author.1.as_str()),
            released_at,
            &env.commit_message,
        )?;
        repo.set_branch(&env.branch, commit)?;
        let b = BranchRecord {
            environment: env.environment.clone(),
            branch: env.branch.clone(),
            commit_id: commit.to_string(),
            pushed: false,
        };
        store.record_branch(record.id, &b).await?;
        if !existing
            .iter()
            .any(|e| e.environment == b.environment && e.commit_id == b.commit_id)
        {
            store.record_event(record.id, AuditEvent::ReleaseBranchBuilt, actor, json!({"environment": b.environment, "branch": b.branch, "commit": b.commit_id}), OffsetDateTime::now_utc()).await?;
        }
        branches.push(b);
    }

    let mut state = ReleaseState::Pending;
    if push {
        let refs: Vec<(String, git2::Oid)> = branches
            .iter()
            .map(|b| Ok((b.branch.clone(), git2::Oid::from_str(&b.commit_id)?)))
            .collect::<Result<_, git2::Error>>()
            .map_err(GitError::from)?;
        // The push itself is the check (each branch must not exist yet, atomically); only
        // when it is refused do we look at the remote, to tell a resumed push from a clash.
        match repo.push(&refs) {
            Ok(()) => {}
            Err(refused @ GitError::PushRejected { .. }) => {
                let on_remote = repo.remote_branches(&format!("release/{}/", spec.version))?;
                let theirs = |branch: &str| {
                    on_remote
                        .iter()
                        .find_map(|(name, oid)| (name == branch).then_some(*oid))
                };
                if let Some((branch, other)) = refs
                    .iter()
                    .find_map(|(b, ours)| theirs(b).filter(|t| t != ours).map(|t| (b, t)))
                {
                    return Err(ReleaseError::Refused(format!(
                        "branch {branch} already exists in the deployment repository at {}, and this release did not make it; \
                         delete that branch or choose a new version_tag",
                        &other.to_string()[..12]
                    )));
                }
                // All already there with our commits: an earlier run pushed them and stopped
                // before recording that. Anything else is a refusal we cannot explain better.
                if !refs.iter().all(|(b, _)| theirs(b).is_some()) {
                    return Err(refused.into());
                }
                // The same commits can come from a run this store knows nothing of: another
                // store, within the same second (commits carry whole seconds). Only a run that
                // recorded these very commits before pushing may resume.
                let built_here = |b: &str, ours: &git2::Oid| {
                    existing
                        .iter()
                        .any(|e| e.branch == b && e.commit_id == ours.to_string())
                };
                if let Some((branch, _)) = refs.iter().find(|(b, ours)| !built_here(b, ours)) {
                    return Err(ReleaseError::Refused(format!(
                        "branch {branch} already exists in the deployment repository, and this store has no record of making it \
                         (was the release made with another store?); delete that branch or choose a new version_tag"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        for b in &mut branches {
            b.pushed = true;
            store.record_branch(record.id, b).await?;
        }
        let detail = json!({
            "branches": branches.iter().map(|b| &b.branch).collect::<Vec<_>>(),
            "remote": repo.remote.display(),
            "manual_approval_reasons": spec.manual_approval_reasons,
        });
        let t = Transition {
            from: ReleaseState::Pending,
            to: ReleaseState::AwaitingApproval,
            // The bot audits each pull request it opens as `ReleaseApprovalRequested`; here the
            // branches are published, for the bot and for `release --push` alike.
            event: AuditEvent::ReleaseBranchesPushed,
            actor,
            detail,
        };
        store
            .transition(record.id, t, OffsetDateTime::now_utc())
            .await?;
        state = ReleaseState::AwaitingApproval;
    }
    Ok(Outcome {
        version: spec.version.clone(),
        resumed,
        branches,
        pushed: push,
        state,
    })
}
