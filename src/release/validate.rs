//! The spec's validation rules, across the developer's files and against the operator's
//! configuration, each reported at the place to fix. A valid set of inputs becomes a
//! [`ReleaseSpec`]: every decision made, with the reason for it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::OperatorConfig;
use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::git::AppRepoInfo;
use crate::inputs::{AppInputs, MilestoneState, PromotionTarget};
use crate::route;
use crate::version::{VersionContext, check_version_tag};

/// What will be released, as decided from the inputs and the policy.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReleaseSpec {
    pub version: String,
    pub version_reason: String,
    pub milestone_id: String,
    pub trace_id: String,
    /// In the order of the trigger's deploy targets.
    pub environments: Vec<EnvironmentSpec>,
    pub git_tag: Option<String>,
    pub notify: Vec<String>,
    pub manual_approval_required: bool,
    pub manual_approval_reasons: Vec<String>,
    pub qa_coverage: Option<f64>,
    pub qa_features: Vec<(String, f64)>,
    pub features: Vec<String>,
    pub sprints: Vec<String>,
    pub agents: Vec<String>,
    /// Who the developer says signed off (`approval-context.json` or `signedBy`): a claim,
    /// not an approval; who approved is in the signed approval record made at merge.
    pub claimed_sign_off: Option<String>,
    /// Policy roles the trigger asks approvals from (`approvalRoles`, `signedBy`), added to
    /// what each environment requires.
    pub extra_roles: Vec<String>,
    pub app_commit: Option<String>,
    /// The trigger's `rollbackEnabled`: whether a failed deployment is rolled back by itself
    /// (absent: the operator's `defaults.autoRollbackOnFailure`). Not a document field.
    #[serde(skip)]
    pub rollback_enabled: Option<bool>,
    /// The services `tag-docker` names: their images are copied to the release tag.
    #[serde(skip)]
    pub tag_docker: Vec<String>,
    /// The trigger's `customDeployStrategy`, configured for every service the release changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_strategy: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentSpec {
    pub name: String,
    /// Services whose image tag changes in this environment, in configuration order.
    pub services: Vec<String>,
    pub required_approvals: u32,
    pub required_roles: Vec<String>,
    pub required_checks: Vec<crate::config::RequiredCheck>,
}

/// The rules that need nothing but the developer's files (`validate` without `--config`).
pub fn check_inputs(inputs: &AppInputs) -> Diagnostics {
    let mut d = Diagnostics::default();
    let (t, ts) = (&inputs.trigger, &inputs.trigger_src);
    let (s, ss) = (&inputs.status, &inputs.status_src);

    if s.status != MilestoneState::Reached {
        d.push_with(|| {
            ss.at(
                route!["status"],
                format!(
                    "milestone `{}` is `{}`; only a `reached` milestone can be promoted",
                    s.milestone_id, s.status
                ),
            )
        });
    }
    if t.milestone_id != s.milestone_id {
        d.push_with(|| {
            ts.at(
                route!["milestone_id"],
                format!(
                    "milestone_id `{}` does not match `{}` in {}",
                    t.milestone_id,
                    s.milestone_id,
                    file_name(&ss.name)
                ),
            )
        });
    }
    if t.trace_id != s.trace_id {
        d.push_with(|| {
            ts.at(
                route!["trace_id"],
                format!(
                    "trace_id `{}` does not match `{}` in {}",
                    t.trace_id,
                    s.trace_id,
                    file_name(&ss.name)
                ),
            )
        });
    }
    if let Some(v) = &t.version_tag {
        if let Err(e) = check_version_tag(v) {
            d.push_with(|| ts.at(route!["version_tag"], e));
        } else if let Some(sv) = s.version_tag.as_ref().filter(|sv| *sv != v) {
            d.push_with(|| {
                ts.at(
                    route!["version_tag"],
                    format!(
                        "version_tag `{v}` does not match `{sv}` in {}",
                        file_name(&ss.name)
                    ),
                )
            });
        }
    }
    if let Some(sv) = &s.version_tag
        && let Err(e) = check_version_tag(sv)
    {
        d.push_with(|| ss.at(route!["version_tag"], e));
    }
    let acts = t.promotion_targets.iter().any(|p| {
        matches!(
            p,
            PromotionTarget::DeployTo(_)
                | PromotionTarget::TagGit(_)
                | PromotionTarget::TagDocker(_)
        )
    });
    if !acts {
        d.push_with(|| ts.at(
            route!["promotion_targets"],
            "promotion_targets has no deploy or tagging target; add `deploy-to-<environment>`, `tag-git` or `tag-docker: <service>`",
        ));
    }
    let mut envs = BTreeSet::new();
    for (i, p) in t.promotion_targets.iter().enumerate() {
        match p {
            PromotionTarget::DeployTo(env) if !envs.insert(env.as_str()) => {
                d.push_with(|| {
                    ts.at(
                        route!["promotion_targets", i],
                        format!("`deploy-to-{env}` is listed twice"),
                    )
                });
            }
            PromotionTarget::TagGit(Some(tag)) => {
                if let Err(e) = check_version_tag(tag) {
                    d.push_with(|| {
                        ts.at(
                            route!["promotion_targets", i],
                            e.replace("version tag", "git tag"),
                        )
                    });
                }
            }
            _ => {}
        }
    }
    if t.promotion_targets
        .iter()
        .filter(|p| matches!(p, PromotionTarget::TagGit(_)))
        .count()
        > 1
    {
        d.push_with(|| {
            ts.at(
                route!["promotion_targets"],
                "more than one `tag-git` target; a release has one git tag",
            )
        });
    }
    if t.manual_approval_required == Some(true)
        && t.signed_by.as_deref().is_none_or(|s| s.trim().is_empty())
    {
        d.push_with(|| ts.at(
            route!["manualApprovalRequired"],
            "manualApprovalRequired is true, so signedBy is required: name who signs off this promotion",
        ));
    }
    if let Some((m, ms)) = &inputs.matrix
        && m.trace_id != s.trace_id
    {
        d.push_with(|| {
            ms.at(
                route!["trace_id"],
                format!(
                    "trace_id `{}` does not match `{}` in {}",
                    m.trace_id,
                    s.trace_id,
                    file_name(&ss.name)
                ),
            )
        });
    }
    if let (Some((q, qs)), Some(status_cov)) = (&inputs.qa, s.qa_coverage)
        && let Some(overall) = q.overall
        && (overall - status_cov).abs() > 0.05
    {
        d.push(Diagnostic::whole_file(
            &qs.name,
            format!(
                "overall coverage {overall}% does not match qa_coverage {status_cov}% in {}",
                file_name(&ss.name)
            ),
        ));
    }
    if let Some(c) = s.qa_coverage
        && !(0.0..=100.0).contains(&c)
    {
        d.push_with(|| {
            ss.at(
                route!["qa_coverage"],
                format!("qa_coverage {c} is not a percentage from 0 to 100"),
            )
        });
    }
    d
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Everything besides the files that a decision depends on.
pub struct Context<'a> {
    pub config: &'a OperatorConfig,
    pub inputs: &'a AppInputs,
    pub app: &'a AppRepoInfo,
    /// Versions recorded in the store.
    pub recorded: &'a [String],
    /// The version an unfinished run of the same inputs reserved: it does not count as taken,
    /// so the same precedence gives the same version again.
    pub resumed_version: Option<&'a str>,
    pub today: time::Date,
}

/// All rules, then every decision: the release to make, or every problem found.
pub fn decide(ctx: &Context<'_>) -> Result<ReleaseSpec, Diagnostics> {
    let mut d = check_inputs(ctx.inputs);
    let (cfg, inputs) = (ctx.config, ctx.inputs);
    let (t, ts) = (&inputs.trigger, &inputs.trigger_src);
    let s = &inputs.status;
    let known_envs = cfg.environments();
    let milestone = cfg.milestone(&t.milestone_id);

    // tag-docker narrows the services; without it every service of the environment changes.
    let mut only_services: Option<Vec<String>> = None;
    for (i, p) in t.promotion_targets.iter().enumerate() {
        if let PromotionTarget::TagDocker(names) = p {
            for name in names {
                if cfg.service(name).is_none() {
                    let configured: Vec<&str> = cfg
                        .orchestration
                        .services
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect();
                    d.push_with(|| {
                        ts.at_word(
                            route!["promotion_targets", i, "tag-docker"],
                            name,
                            format!(
                                "service `{name}` is not configured (configured: {})",
                                configured.join(", ")
                            ),
                        )
                    });
                }
            }
            only_services
                .get_or_insert_with(Vec::new)
                .extend(names.iter().cloned());
        }
    }

    let mut environments = Vec::new();
    let mut manual_reasons = Vec::new();
    if t.manual_approval_required == Some(true) {
        manual_reasons.push("the trigger asks for it (manualApprovalRequired: true)".to_string());
    }
    if let Some((_, m)) = milestone
        && m.manual_approval_required == Some(true)
    {
        manual_reasons.push(format!("milestones.yaml requires it for `{}`", m.id));
    }
    let qa = s
        .qa_coverage
        .or(inputs.qa.as_ref().and_then(|(q, _)| q.overall));
    let mut decided = BTreeSet::new();
    // Where each environment is first listed, for the policy's chains.
    let mut listed: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in t.promotion_targets.iter().enumerate() {
        if let Some(env) = p.environment() {
            listed.entry(env).or_insert(i);
        }
    }
    for (i, p) in t.promotion_targets.iter().enumerate() {
        let Some(env) = p.environment() else { continue };
        // A repeated target is reported once, above; each environment is decided once.
        if !decided.insert(env) {
            continue;
        }
        // A chain (`production: {after: staging}`) may be neither skipped nor reordered.
        let chain = cfg.policy.chain_before(env);
        if let Some(before) = chain.first() {
            let whole = std::iter::once(env)
                .chain(chain.iter().copied())
                .collect::<Vec<_>>()
                .join(" after ");
            match listed.get(before) {
                None => d.push_with(|| {
                    ts.at(
                        route!["promotion_targets", i],
                        format!(
                            "`deploy-to-{env}` skips `{before}`: release-policy.yaml chains {whole}; add `deploy-to-{before}` before it"
                        ),
                    )
                }),
                Some(&j) if j > i => d.push_with(|| {
                    ts.at(
                        route!["promotion_targets", i],
                        format!(
                            "`deploy-to-{env}` is listed before `deploy-to-{before}`, but release-policy.yaml chains {whole}; list `deploy-to-{before}` first"
                        ),
                    )
                }),
                _ => {}
            }
        }
        if !known_envs.contains(env) {
            let list: Vec<&str> = known_envs.iter().copied().collect();
            d.push_with(|| {
                ts.at(
                    route!["promotion_targets", i],
                    format!(
                        "no service deploys to environment `{env}` (configured: {})",
                        list.join(", ")
                    ),
                )
            });
            continue;
        }
        if let Some((mi, m)) = milestone
            && let Some(allowed) = &m.environments
            && !allowed.iter().any(|a| a == env)
        {
            let _ = mi;
            d.push_with(|| {
                ts.at(
                    route!["promotion_targets", i],
                    format!(
                        "milestone `{}` may only be promoted to {} (milestones.yaml)",
                        m.id,
                        allowed.join(", ")
                    ),
                )
            });
            continue;
        }
        let services: Vec<String> = cfg
            .orchestration
            .services
            .iter()
            .filter(|svc| svc.values.contains_key(env))
            .filter(|svc| {
                only_services
                    .as_ref()
                    .is_none_or(|only| only.contains(&svc.name))
            })
            .map(|svc| svc.name.clone())
            .collect();
        if services.is_empty() {
            d.push_with(|| ts.at(
                route!["promotion_targets", i],
                format!("none of the services named by `tag-docker` has a values file for environment `{env}`"),
            ));
            continue;
        }
        // Closed by default: an environment the policy does not name (nor a `default` entry)
        // has no approvers, checks or coverage to enforce, so it cannot be released to.
        let Some(policy) = cfg.policy.environment(env).cloned() else {
            let named: Vec<&str> = cfg.policy.environments.keys().map(String::as_str).collect();
            d.push_with(|| ts.at(
                route!["promotion_targets", i],
                format!(
                    "environment `{env}` is not in the release policy (release-policy.yaml names {}); the operator must add it, or a `default` entry",
                    if named.is_empty() { "none".to_string() } else { named.join(", ") }
                ),
            ));
            continue;
        };
        if let Some(min) = policy.qa_coverage_above {
            match qa {
                Some(c) if c < min => d.push_with(|| inputs.status_src.at(
                    route!["qa_coverage"],
                    format!("QA coverage {c}% is below the {min}% that environment `{env}` requires (release-policy.yaml)"),
                )),
                None => d.push_with(|| inputs.status_src.at(
                    route![],
                    format!("environment `{env}` requires QA coverage above {min}%, but no qa_coverage is given"),
                )),
                _ => {}
            }
        }
        if cfg
            .orchestration
            .defaults
            .require_manual_approval_for
            .iter()
            .any(|e| e == env)
        {
            manual_reasons.push(format!("orchestration-config.yaml requires it for `{env}`"));
        }
        if policy.required_approvals > 0 {
            manual_reasons.push(format!(
                "release-policy.yaml requires {} approval(s) for `{env}`",
                policy.required_approvals
            ));
        }
        environments.push(EnvironmentSpec {
            name: env.to_string(),
            services,
            required_approvals: policy.required_approvals,
            required_roles: policy.required_roles,
            required_checks: policy.required_checks,
        });
    }

    // A strategy writes the operator's values: every service the release changes must have them.
    if let Some(strategy) = &t.custom_deploy_strategy {
        let configured: BTreeSet<&str> = cfg
            .orchestration
            .deploy_strategies
            .keys()
            .chain(
                cfg.orchestration
                    .services
                    .iter()
                    .flat_map(|s| s.deploy_strategies.keys()),
            )
            .map(String::as_str)
            .collect();
        let without: BTreeSet<&str> = environments
            .iter()
            .flat_map(|e| &e.services)
            .filter(|name| {
                cfg.service(name).is_some_and(|svc| {
                    svc.strategy_values(&cfg.orchestration.deploy_strategies, strategy)
                        .is_none()
                })
            })
            .map(String::as_str)
            .collect();
        let list = |names: &BTreeSet<&str>| names.iter().copied().collect::<Vec<_>>().join(", ");
        if !configured.contains(strategy.as_str()) {
            d.push_with(|| {
                ts.at(
                    route!["customDeployStrategy"],
                    format!(
                        "deploy strategy `{strategy}` is not configured (orchestration-config.yaml deployStrategies: {})",
                        if configured.is_empty() { "none".to_string() } else { list(&configured) }
                    ),
                )
            });
        } else if !without.is_empty() {
            d.push_with(|| {
                ts.at(
                    route!["customDeployStrategy"],
                    format!(
                        "deploy strategy `{strategy}` is not configured for service(s) {} (orchestration-config.yaml: add it to deployStrategies or to the service's own)",
                        list(&without)
                    ),
                )
            });
        }
    }

    // The version, by precedence, and whether it is still free.
    let mut taken: Vec<String> = ctx
        .recorded
        .iter()
        .filter(|v| Some(v.as_str()) != ctx.resumed_version)
        .cloned()
        .collect();
    taken.extend(ctx.app.tags.iter().cloned());
    let sprints: Vec<String> = s.sprints_contributing.clone();
    let explicit = if let Some(v) = &t.version_tag {
        Some((
            v.clone(),
            "version_tag in the trigger".to_string(),
            Some(ts.at(route!["version_tag"], "")),
        ))
    } else if let Some((mi, m)) = milestone.filter(|(_, m)| m.version_tag.is_some()) {
        let at = cfg
            .milestones_src
            .as_ref()
            .map(|src| src.at(route!["milestones", mi, "versionTag"], ""));
        Some((
            m.version_tag.clone().unwrap_or_default(),
            "versionTag in milestones.yaml".to_string(),
            at,
        ))
    } else {
        s.version_tag.as_ref().map(|v| {
            (
                v.clone(),
                "version_tag in milestone-status.json".to_string(),
                Some(inputs.status_src.at(route!["version_tag"], "")),
            )
        })
    };
    let (version, version_reason) = match explicit {
        Some((v, why, at)) => {
            let place = |msg: String| match &at {
                Some(p) => Diagnostic {
                    message: msg,
                    ..p.clone()
                },
                None => Diagnostic::whole_file(&ts.name, msg),
            };
            if let Err(e) = check_version_tag(&v) {
                d.push(place(e));
            } else if ctx.recorded.contains(&v) && ctx.resumed_version != Some(v.as_str()) {
                d.push(place(format!("version `{v}` was already released (recorded in the store); choose a new version_tag")));
            } else if ctx.app.tags.contains(&v) {
                d.push(place(format!("version `{v}` is already a tag in the application repository; choose a new version_tag")));
            }
            (v, why)
        }
        None => {
            let vctx = VersionContext {
                milestone_id: &t.milestone_id,
                sprints: &sprints,
                taken: &taken,
                app_commit: ctx.app.head_commit.as_deref(),
                today: ctx.today,
            };
            match cfg.resolver.resolve(&vctx) {
                Ok(r) => {
                    if let Err(e) = check_version_tag(&r.version) {
                        d.push(Diagnostic::whole_file(
                            &ts.name,
                            format!("the version resolver produced an invalid version: {e}"),
                        ));
                    }
                    (r.version, r.reason)
                }
                Err(e) => {
                    d.push_with(|| {
                        ts.at(
                            route!["milestone_id"],
                            format!(
                                "no version_tag given and the version resolver cannot make one: {e}"
                            ),
                        )
                    });
                    (String::new(), String::new())
                }
            }
        }
    };

    let mut git_tag = None;
    for (i, p) in t.promotion_targets.iter().enumerate() {
        if let PromotionTarget::TagGit(tag) = p {
            let tag = tag.clone().unwrap_or_else(|| version.clone());
            if tag != version && ctx.app.tags.contains(&tag) {
                d.push_with(|| {
                    ts.at(
                        route!["promotion_targets", i],
                        format!("git tag `{tag}` already exists in the application repository"),
                    )
                });
            }
            git_tag = Some(tag);
        }
    }
    let notify: Vec<String> = {
        let mut n: Vec<String> = cfg.orchestration.defaults.notify_channels.clone();
        for p in &t.promotion_targets {
            if let PromotionTarget::Notify(ch) = p {
                n.extend(ch.iter().cloned());
            }
        }
        n.extend(t.notify_channels.iter().cloned());
        let mut seen = BTreeSet::new();
        n.retain(|c| seen.insert(c.clone()));
        n
    };
    let features: Vec<String> = {
        let mut f = s.features.clone();
        if let Some((m, _)) = &inputs.matrix {
            f.extend(m.sprints.iter().flat_map(|sp| sp.features.iter().cloned()));
        }
        let mut seen = BTreeSet::new();
        f.retain(|x| seen.insert(x.clone()));
        f
    };
    let mut sprint_ids = sprints;
    if let Some((m, _)) = &inputs.matrix {
        for sp in &m.sprints {
            if !sprint_ids.contains(&sp.sprint_id) {
                sprint_ids.push(sp.sprint_id.clone());
            }
        }
    }
    // `approvalRoles` and `signedBy` name policy roles whose approval this release needs on
    // top of each environment's rule: more scrutiny, never less.
    let mut extra_roles: Vec<String> = Vec::new();
    let known: Vec<&str> = cfg.policy.roles.keys().map(String::as_str).collect();
    let unknown_role = |role: &str| {
        format!(
            "`{role}` is not a role of the release policy (roles: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    };
    for (i, role) in t.approval_roles.iter().enumerate() {
        if !cfg.policy.roles.contains_key(role) {
            d.push_with(|| ts.at(route!["approvalRoles", i], unknown_role(role)));
        } else if !extra_roles.contains(role) {
            extra_roles.push(role.clone());
        }
    }
    if let Some(role) = &t.signed_by {
        if !cfg.policy.roles.contains_key(role) {
            d.push_with(|| ts.at(route!["signedBy"], unknown_role(role)));
        } else if !extra_roles.contains(role) {
            extra_roles.push(role.clone());
        }
    }

    d.into_result(ReleaseSpec {
        extra_roles,
        version,
        version_reason,
        milestone_id: t.milestone_id.clone(),
        trace_id: t.trace_id.clone(),
        environments,
        git_tag,
        notify,
        manual_approval_required: !manual_reasons.is_empty(),
        manual_approval_reasons: manual_reasons,
        qa_coverage: qa,
        qa_features: inputs
            .qa
            .as_ref()
            .map(|(q, _)| q.features.clone())
            .unwrap_or_default(),
        features,
        sprints: sprint_ids,
        agents: s.agents.clone(),
        claimed_sign_off: inputs
            .approval
            .as_ref()
            .map(|(a, _)| a.approved_by.clone())
            .or_else(|| t.signed_by.clone()),
        app_commit: ctx.app.head_commit.clone(),
        rollback_enabled: t.rollback_enabled,
        deploy_strategy: t.custom_deploy_strategy.clone(),
        tag_docker: t
            .promotion_targets
            .iter()
            .filter_map(|p| match p {
                PromotionTarget::TagDocker(names) => Some(names.clone()),
                _ => None,
            })
            .flatten()
            .collect(),
    })
}

/// Settings the bot reads but does not act on yet, where they are set: `validate` and `plan`
/// say so, so that nobody takes them for working (notifications come with later work).
pub fn inert_settings(cfg: &OperatorConfig, inputs: &AppInputs) -> Vec<Diagnostic> {
    const NOT_ACTED_ON: &str = "recorded, not acted on yet:";
    let (t, ts) = (&inputs.trigger, &inputs.trigger_src);
    let mut notes = Vec::new();
    if !t.notify_channels.is_empty() {
        notes.push(ts.at(
            route!["notifyChannels"],
            format!("notifyChannels: {NOT_ACTED_ON} nothing is notified (the release records the channels)"),
        ));
    }
    for (i, p) in t.promotion_targets.iter().enumerate() {
        if let PromotionTarget::Notify(_) = p {
            notes.push(ts.at(
                route!["promotion_targets", i, "notify"],
                format!("promotion_targets[{i}].notify: {NOT_ACTED_ON} nothing is notified (the release records the channels)"),
            ));
        }
    }
    // A failed deployment is only seen through Argo CD: without it, nothing rolls back by
    // itself (`/rollback` works either way).
    let no_argocd = cfg.orchestration.argocd.is_none();
    if t.rollback_enabled == Some(true) && no_argocd {
        notes.push(ts.at(
            route!["rollbackEnabled"],
            format!("rollbackEnabled: {NOT_ACTED_ON} without `argocd:` in orchestration-config.yaml no deployment is seen to fail, so nothing rolls back by itself (`/rollback` works)"),
        ));
    }
    let (c, cs) = (&cfg.orchestration.defaults, &cfg.orchestration_src);
    if !c.notify_channels.is_empty() {
        notes.push(cs.at(
            route!["defaults", "notifyChannels"],
            format!("defaults.notifyChannels: {NOT_ACTED_ON} nothing is notified"),
        ));
    }
    if c.auto_rollback_on_failure && no_argocd {
        notes.push(cs.at(
            route!["defaults", "autoRollbackOnFailure"],
            format!("defaults.autoRollbackOnFailure: {NOT_ACTED_ON} without `argocd:` no deployment is seen to fail, so nothing rolls back by itself"),
        ));
    }
    notes
}
