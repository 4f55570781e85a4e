//! From a [`ReleaseSpec`] and the deployment repository's base commit to the exact files of
//! each release branch. Pure apart from reading blobs: nothing is written here.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::OperatorConfig;
use crate::diagnostics::{Diagnostic, Diagnostics, SourceFile};
use crate::git::{DeployRepo, FileWrite, GitError};
use crate::inputs::AppInputs;
use crate::release::validate::ReleaseSpec;
use crate::route;
use crate::signing::{ReleaseSigner, to_quoted_yaml};
use crate::templates::{RELEASE_DESCRIPTION, RELEASE_NOTES, Templates};
use crate::yaml_edit::EditError;

pub const HISTORY_FILE: &str = "releases/release-history.csv";
const HISTORY_HEADER: &str = "version_tag,milestone_id,trace_id,environments,services,qa_coverage,released_at,application_commit\n";

/// One image tag change in one values file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValuesChange {
    pub service: String,
    pub environment: String,
    pub image: String,
    pub values_file: String,
    pub tag_path: String,
    pub old_tag: String,
    pub tag: String,
    /// The image's digest, pinned at the service's `digestPath` beside the tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The digest of the values file as the release writes it: with every change of this
    /// environment to that file, so two services of one file name the same digest.
    pub values_sha256: String,
}

/// One values file as a release writes it, with all of its changes composed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValuesFile {
    pub path: String,
    #[serde(skip)]
    pub content: Vec<u8>,
    pub sha256: String,
    pub diff: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentPlan {
    pub environment: String,
    pub branch: String,
    pub changes: Vec<ValuesChange>,
    pub files: Vec<ValuesFile>,
    pub commit_message: String,
}

/// A documentation file written to every release branch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DocFile {
    pub path: String,
    #[serde(skip)]
    pub content: Vec<u8>,
    pub diff: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReleasePlan {
    pub spec: ReleaseSpec,
    pub base_branch: String,
    pub base_commit: String,
    pub released_at: String,
    pub environments: Vec<EnvironmentPlan>,
    pub documents: Vec<DocFile>,
}

impl ReleasePlan {
    /// The files of one environment's release commit.
    pub fn files_for(&self, env: &EnvironmentPlan) -> Vec<FileWrite> {
        env.files
            .iter()
            .map(|f| FileWrite {
                path: f.path.clone(),
                content: f.content.clone(),
            })
            .chain(self.documents.iter().map(|d| FileWrite {
                path: d.path.clone(),
                content: d.content.clone(),
            }))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error(transparent)]
    Git(#[from] GitError),
}

impl From<Diagnostics> for PlanError {
    fn from(d: Diagnostics) -> Self {
        PlanError::Invalid(d)
    }
}

impl From<Diagnostic> for PlanError {
    fn from(d: Diagnostic) -> Self {
        PlanError::Invalid(d.into())
    }
}

/// The branch a release uses for one environment.
pub fn branch_name(version: &str, env: &str) -> String {
    format!("release/{version}/{env}")
}

pub struct PlanInput<'a> {
    pub config: &'a OperatorConfig,
    pub inputs: &'a AppInputs,
    pub spec: ReleaseSpec,
    pub repo: &'a DeployRepo,
    pub base_commit: git2::Oid,
    pub templates: &'a Templates,
    pub signer: &'a ReleaseSigner,
    pub released_at: OffsetDateTime,
    /// The registry's digest of each `image:tag` the release writes, pinned at the services'
    /// `digestPath`s. `None` plans without pins, to learn which images to ask for (see
    /// [`needs_digests`]); the plan is then made again with them.
    pub digests: Option<&'a crate::images::Digests>,
}

/// The `image:tag` references whose digests the plan pins (services with `digestPath`).
pub fn needs_digests(cfg: &OperatorConfig, plan: &ReleasePlan) -> Vec<(String, String)> {
    let mut wanted: Vec<(String, String)> = plan
        .environments
        .iter()
        .flat_map(|e| &e.changes)
        .filter(|c| {
            cfg.service(&c.service)
                .is_some_and(|s| s.digest_path.is_some())
        })
        .map(|c| (c.image.clone(), c.tag.clone()))
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted
}

pub fn plan(p: PlanInput<'_>) -> Result<ReleasePlan, PlanError> {
    let cfg = p.config;
    let spec = p.spec.clone();
    let released_at = p.released_at.format(&Rfc3339).expect("UTC time formats");
    let mut problems = Diagnostics::default();
    let base_label = format!(
        "{}@{}",
        cfg.orchestration.deployment.base_branch,
        &p.base_commit.to_string()[..12]
    );

    let mut environments = Vec::new();
    for env in &spec.environments {
        let mut changes = Vec::new();
        // Each values file once: (its bytes at the base, its text with the edits so far).
        let mut files: Vec<(String, Vec<u8>, String)> = Vec::new();
        // The strategy values written so far: (file slot, path, value, service).
        let mut written: Vec<(usize, String, yaml_serde::Value, String)> = Vec::new();
        for service_name in &env.services {
            let (si, svc) = cfg
                .orchestration
                .services
                .iter()
                .enumerate()
                .find(|(_, s)| &s.name == service_name)
                .expect("validated service");
            let path = &svc.values[&env.name];
            let tag = image_tag(svc.image_tag.as_deref(), &spec, &env.name).map_err(|msg| {
                cfg.orchestration_src
                    .at(route!["services", si, "imageTag"], msg)
            })?;
            let slot = match files.iter().position(|(p, _, _)| p == path) {
                Some(i) => i,
                None => {
                    let Some(old) = p.repo.read_file(p.base_commit, path)? else {
                        problems.push(cfg.orchestration_src.at(
                            route!["services", si, "values", env.name.as_str()],
                            format!(
                                "`{path}` does not exist in the deployment repository at {base_label}"
                            ),
                        ));
                        continue;
                    };
                    let src = match SourceFile::from_bytes(path.clone(), old.clone()) {
                        Ok(s) => s,
                        Err(d) => {
                            problems.push(d);
                            continue;
                        }
                    };
                    files.push((path.clone(), old, src.text));
                    files.len() - 1
                }
            };
            // The tag, then the digest beside it, then the strategy's values: each edit is
            // made on the text the previous one left.
            let image_ref = format!("{}:{tag}", svc.image);
            let digest = match (&svc.digest_path, p.digests) {
                (None, _) | (_, None) => None,
                (Some(_), Some(digests)) => match digests.get(&image_ref) {
                    Some(d) => Some(d.clone()),
                    None => {
                        problems.push(cfg.orchestration_src.at(
                            route!["services", si, "digestPath"],
                            format!("the digest of `{image_ref}` is not known: its registry was not asked (`images:` is not configured)"),
                        ));
                        continue;
                    }
                },
            };
            let mut edits: Vec<(String, yaml_serde::Value, String)> = vec![(
                svc.tag_path.clone(),
                yaml_serde::Value::String(tag.clone()),
                format!("tagPath `{}`", svc.tag_path),
            )];
            if let (Some(path), Some(d)) = (&svc.digest_path, &digest) {
                edits.push((
                    path.clone(),
                    yaml_serde::Value::String(d.clone()),
                    format!("digestPath `{path}`"),
                ));
            }
            if let Some(strategy) = &spec.deploy_strategy {
                let values = svc
                    .strategy_values(&cfg.orchestration.deploy_strategies, strategy)
                    .unwrap_or_default();
                for (path, value) in values {
                    // Nor write where a service of this file keeps its tag or digest.
                    if let Some(other) = cfg.orchestration.services.iter().find(|o| {
                        o.values.get(&env.name) == Some(&files[slot].0)
                            && (o.tag_path == path || o.digest_path.as_deref() == Some(&path))
                    }) {
                        problems.push(cfg.orchestration_src.at(
                            route!["services", si, "name"],
                            format!("deploy strategy `{strategy}` of service `{}` writes `{path}` in `{}`, where service `{}` keeps its image tag or digest", svc.name, files[slot].0, other.name),
                        ));
                        continue;
                    }
                    // Two services of one file may not ask one path for different values.
                    let earlier = written.iter().find(|(f, k, _, _)| f == &slot && k == &path);
                    if let Some((_, _, v, who)) = earlier
                        && v != &value
                    {
                        problems.push(cfg.orchestration_src.at(
                            route!["services", si, "name"],
                            format!("deploy strategy `{strategy}` writes `{path}` in `{}` for service `{who}` and, differently, for `{}`; give them one value", files[slot].0, svc.name),
                        ));
                        continue;
                    }
                    written.push((slot, path.clone(), value.clone(), svc.name.clone()));
                    let what = format!("deployStrategies.{strategy} `{path}`");
                    edits.push((path, value, what));
                }
            }
            let mut old_tag = None;
            for (key, value, what) in edits {
                let keys: Vec<&str> = key.split('.').collect();
                let current = &files[slot].2;
                match crate::yaml_edit::set_value(current, &keys, &value) {
                    Ok(edit) => {
                        files[slot].2 = edit.text;
                        old_tag.get_or_insert(edit.old_value);
                    }
                    Err(e) => {
                        let hint = format!(
                            " (service `{}`, {what} in orchestration-config.yaml)",
                            svc.name
                        );
                        let d = match &e {
                            EditError::NotYaml { line, column, .. } => Diagnostic::new(
                                files[slot].0.as_str(),
                                *line,
                                *column,
                                e.to_string(),
                            ),
                            _ => {
                                let route: Vec<_> = keys
                                    .iter()
                                    .map(|k| crate::diagnostics::Seg::Key(k))
                                    .collect();
                                SourceFile::new(files[slot].0.clone(), current.clone())
                                    .at(&route, e.to_string())
                            }
                        };
                        problems.push(Diagnostic {
                            message: format!("{}{hint}", d.message),
                            ..d
                        });
                        break;
                    }
                }
            }
            if let Some(old_tag) = old_tag {
                changes.push(ValuesChange {
                    service: svc.name.clone(),
                    environment: env.name.clone(),
                    image: svc.image.clone(),
                    values_file: path.clone(),
                    tag_path: svc.tag_path.clone(),
                    old_tag,
                    tag: tag.clone(),
                    digest,
                    values_sha256: String::new(),
                });
            }
        }
        let files = files
            .into_iter()
            .map(|(path, old, text)| {
                let content = text.into_bytes();
                Ok(ValuesFile {
                    diff: DeployRepo::unified_diff(&path, Some(&old), &content)?,
                    sha256: hex::encode(Sha256::digest(&content)),
                    path,
                    content,
                })
            })
            .collect::<Result<Vec<_>, GitError>>()?;
        for change in &mut changes {
            if let Some(f) = files.iter().find(|f| f.path == change.values_file) {
                change.values_sha256 = f.sha256.clone();
            }
        }
        let commit_message = commit_message(&spec, &env.name, &changes);
        environments.push(EnvironmentPlan {
            environment: env.name.clone(),
            branch: branch_name(&spec.version, &env.name),
            changes,
            files,
            commit_message,
        });
    }
    if !problems.is_empty() {
        return Err(problems.into());
    }

    let documents = documents(&p, &spec, &environments, &released_at)?;
    Ok(ReleasePlan {
        spec,
        base_branch: cfg.orchestration.deployment.base_branch.clone(),
        base_commit: p.base_commit.to_string(),
        released_at,
        environments,
        documents,
    })
}

fn image_tag(template: Option<&str>, spec: &ReleaseSpec, env: &str) -> Result<String, String> {
    let tag = match template {
        None => spec.version.clone(),
        Some(t) => minijinja::Environment::new()
            .render_str(t, minijinja::value::Serde(json!({"version": spec.version, "milestone_id": spec.milestone_id, "trace_id": spec.trace_id, "environment": env})))
            .map_err(|e| format!("imageTag template failed: {e}"))?,
    };
    if !crate::images::is_image_tag(&tag) {
        return Err(format!(
            "`{tag}` is not a valid image tag (letters, digits, `.`, `_`, `-`; at most 128)"
        ));
    }
    Ok(tag)
}

fn commit_message(spec: &ReleaseSpec, env: &str, changes: &[ValuesChange]) -> String {
    let mut m = format!(
        "release({env}): {} from milestone {}\n\n",
        spec.version, spec.milestone_id
    );
    for c in changes {
        // An empty value is shown as such, not as a gap.
        let old = if c.old_tag.is_empty() {
            "\"\""
        } else {
            c.old_tag.as_str()
        };
        m.push_str(&format!(
            "- {}: {old} -> {} ({})\n",
            c.service, c.tag, c.values_file
        ));
    }
    m.push_str(&format!(
        "\nRelease-Version: {}\nRelease-Milestone: {}\nRelease-Trace-Id: {}\nRelease-Environment: {env}\n",
        spec.version, spec.milestone_id, spec.trace_id
    ));
    if let Some(strategy) = &spec.deploy_strategy {
        m.push_str(&format!("Release-Deploy-Strategy: {strategy}\n"));
    }
    m
}

/// The release documents. They are the same on every environment's branch, so merging the
/// branches in any order never conflicts.
fn documents(
    p: &PlanInput<'_>,
    spec: &ReleaseSpec,
    envs: &[EnvironmentPlan],
    released_at: &str,
) -> Result<Vec<DocFile>, PlanError> {
    let dir = format!("releases/{}", spec.version);
    let components: Vec<&ValuesChange> = envs.iter().flat_map(|e| e.changes.iter()).collect();
    // A pinned digest is named where it is known; releases without one read as before.
    let with_digest = |mut v: Value, c: &ValuesChange| {
        if let Some(d) = &c.digest {
            v["digest"] = json!(d);
        }
        v
    };
    let component_json: Vec<Value> = components
        .iter()
        .map(|c| {
            with_digest(json!({"service": c.service, "environment": c.environment, "image": c.image, "tag": c.tag,
                   "old_tag": c.old_tag, "values_file": c.values_file, "values_sha256": c.values_sha256}), c)
        })
        .collect();
    let env_names: Vec<&str> = envs.iter().map(|e| e.environment.as_str()).collect();
    let released_on = released_at.get(..10).unwrap_or(released_at);

    let ctx = json!({
        "version": spec.version,
        "milestone_id": spec.milestone_id,
        "trace_id": spec.trace_id,
        "released_at": released_at,
        "released_on": released_on,
        "environments": env_names,
        "components": component_json,
        "features": spec.features,
        "sprints": spec.sprints,
        "agents": spec.agents,
        "qa_coverage": spec.qa_coverage,
        "qa_features": spec.qa_features.iter().map(|(n, c)| json!({"name": n, "coverage": c})).collect::<Vec<_>>(),
        "claimed_sign_off": spec.claimed_sign_off,
        "app_commit": spec.app_commit,
    });
    let notes = p.templates.render(RELEASE_NOTES, &ctx)?;
    let description = p.templates.render(RELEASE_DESCRIPTION, &ctx)?;

    let docker_images = unique(components.iter().map(|c| format!("{}:{}", c.image, c.tag)));
    let metadata = json!({
        "milestone_id": spec.milestone_id,
        "version_tag": spec.version,
        "version_reason": spec.version_reason,
        "trace_id": spec.trace_id,
        "released_at": released_at,
        "features": spec.features,
        "sprint_ids": spec.sprints,
        "qa_coverage": spec.qa_coverage,
        "git_tag": spec.git_tag,
        "docker_images": docker_images,
        "environments": env_names,
        "components": component_json,
        "manual_approval_required": spec.manual_approval_required,
        "manual_approval_reasons": spec.manual_approval_reasons,
        "claimed_sign_off": spec.claimed_sign_off,
        "approval_context": p.inputs.approval.as_ref().map(|(a, _)| a),
        "notify": spec.notify,
        "application_commit": spec.app_commit,
        "deployment_base_commit": p.base_commit.to_string(),
        "deploy_strategy": spec.deploy_strategy,
    });

    let mut signed = json!({
        "milestone": spec.milestone_id,
        "version": spec.version,
        "released_at": released_at,
        "trace_id": spec.trace_id,
        "qa_coverage": spec.qa_coverage,
        "features": spec.features,
        "sprints": spec.sprints,
        "claimed_sign_off": spec.claimed_sign_off,
        "application_commit": spec.app_commit,
        "components": components.iter().map(|c| with_digest(json!({
            "service": c.service, "environment": c.environment, "image": c.image, "tag": c.tag,
            "values_file": c.values_file, "values_sha256": c.values_sha256,
        }), c)).collect::<Vec<_>>(),
    });
    if let Some(strategy) = &spec.deploy_strategy {
        signed["deploy_strategy"] = json!(strategy);
    }
    let manifest = p.signer.sign(&signed);
    let manifest_text = format!(
        "# Signed by Release Coordinator: ed25519 over the RFC 8785 canonical JSON of this document\n\
         # without `signature`. Verify: release-coordinator verify --key <public.pem> <this file>\n{}",
        to_quoted_yaml(&manifest)
    );

    let mut confirmed = p.inputs.trigger.clone();
    confirmed.version_tag = Some(spec.version.clone());
    confirmed.manual_approval_required = Some(spec.manual_approval_required);
    if confirmed.signed_by.is_none() {
        confirmed.signed_by = spec.claimed_sign_off.clone();
    }
    let confirmed_text = format!(
        "# promotion-trigger.yaml as Release Coordinator resolved it.\n# version: {} ({})\n{}",
        spec.version,
        spec.version_reason,
        yaml_serde::to_string(&confirmed).expect("trigger serializes")
    );

    let history = {
        let existing = p
            .repo
            .read_file(p.base_commit, HISTORY_FILE)?
            .unwrap_or_default();
        // Planned again on a base where another environment of this release already merged:
        // its row is there, and stays there once.
        let recorded = csv::ReaderBuilder::new()
            .from_reader(existing.as_slice())
            .records()
            .flatten()
            .any(|r| r.get(0) == Some(spec.version.as_str()));
        let mut text = if existing.is_empty() {
            HISTORY_HEADER.as_bytes().to_vec()
        } else {
            existing.clone()
        };
        if !recorded {
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            let services = unique(components.iter().map(|c| c.service.clone()));
            w.write_record([
                spec.version.as_str(),
                spec.milestone_id.as_str(),
                spec.trace_id.as_str(),
                &env_names.join(";"),
                &services.join(";"),
                &spec.qa_coverage.map(|q| q.to_string()).unwrap_or_default(),
                released_at,
                spec.app_commit.as_deref().unwrap_or(""),
            ])
            .expect("writing to memory");
            text.extend(w.into_inner().expect("writing to memory"));
        }
        text
    };

    let mut docs = Vec::new();
    // Each document against what the base holds at its path (another environment of this
    // release may have merged it already), so the diffs apply to the base tree as shown.
    let mut add = |path: String, content: Vec<u8>| -> Result<(), PlanError> {
        let old = p.repo.read_file(p.base_commit, &path)?;
        let diff = DeployRepo::unified_diff(&path, old.as_deref(), &content)?;
        docs.push(DocFile {
            path,
            content,
            diff,
        });
        Ok(())
    };
    add(format!("{dir}/release-notes.md"), notes.into_bytes())?;
    add(
        format!("{dir}/release-description.txt"),
        description.into_bytes(),
    )?;
    add(
        format!("{dir}/release-metadata.json"),
        (serde_json::to_string_pretty(&metadata).expect("json") + "\n").into_bytes(),
    )?;
    add(
        format!("{dir}/promotion-trigger-confirmed.yaml"),
        confirmed_text.into_bytes(),
    )?;
    add(
        format!("{dir}/signed-release-manifest.yaml"),
        manifest_text.into_bytes(),
    )?;
    add(HISTORY_FILE.to_string(), history)?;
    Ok(docs)
}

/// The items in first-seen order, each once.
fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    items.filter(|i| seen.insert(i.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_message_shows_an_empty_old_value_as_such() {
        let spec = ReleaseSpec {
            version: "v2.14.0".into(),
            version_reason: "version_tag in the trigger".into(),
            milestone_id: "m".into(),
            trace_id: "t".into(),
            environments: vec![],
            git_tag: None,
            notify: vec![],
            manual_approval_required: false,
            manual_approval_reasons: vec![],
            qa_coverage: None,
            qa_features: vec![],
            features: vec![],
            sprints: vec![],
            agents: vec![],
            claimed_sign_off: None,
            extra_roles: vec![],
            app_commit: None,
            rollback_enabled: None,
            tag_docker: vec![],
            deploy_strategy: None,
        };
        let change = |old: &str| ValuesChange {
            service: "node-exporter".into(),
            environment: "staging".into(),
            image: "quay.io/prometheus/node-exporter".into(),
            values_file: "apps/ne/values.yaml".into(),
            tag_path: "image.tag".into(),
            old_tag: old.into(),
            tag: "v2.14.0".into(),
            digest: None,
            values_sha256: String::new(),
        };
        let m = commit_message(&spec, "staging", &[change(""), change("v2.13.0")]);
        assert!(
            m.contains("- node-exporter: \"\" -> v2.14.0 (apps/ne/values.yaml)\n"),
            "{m}"
        );
        assert!(m.contains("- node-exporter: v2.13.0 -> v2.14.0"), "{m}");
    }
}
