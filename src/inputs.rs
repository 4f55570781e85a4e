//! The developer's files, committed to the application repository beside each other:
//! `promotion-trigger.yaml`, `milestone-status.json` and the optional `qa-validation-report.md`,
//! `sprint-trace-matrix.json` and `approval-context.json`.
//!
//! Parsing is strict (unknown fields are errors); the cross-file rules live in
//! [`crate::release::validate`].

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diagnostics::{Diagnostic, Diagnostics, SourceFile};

pub const TRIGGER_FILE: &str = "promotion-trigger.yaml";
pub const STATUS_FILE: &str = "milestone-status.json";
pub const QA_REPORT_FILE: &str = "qa-validation-report.md";
pub const TRACE_MATRIX_FILE: &str = "sprint-trace-matrix.json";
pub const APPROVAL_CONTEXT_FILE: &str = "approval-context.json";

/// `promotion-trigger.yaml`: what the developer asks to release, and where.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "promotion-trigger.yaml",
    description = "Asks Release Coordinator to promote a reached milestone."
)]
pub struct PromotionTrigger {
    /// The milestone to promote; must match `milestone-status.json`.
    pub milestone_id: String,
    /// The version to release. When absent it comes from `milestones.yaml`, then
    /// `milestone-status.json`, then the operator's `version-resolver.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_tag: Option<String>,
    /// The trace this release belongs to; must match `milestone-status.json`.
    pub trace_id: String,
    /// At least one `deploy-to-<environment>` or `tag-git` / `tag-docker` target.
    pub promotion_targets: Vec<PromotionTarget>,
    /// Ask for a human approval even where the operator's policy would not.
    #[serde(
        rename = "manualApprovalRequired",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub manual_approval_required: Option<bool>,
    /// Who signs off the promotion; required when `manualApprovalRequired: true`.
    #[serde(rename = "signedBy", default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Roles whose approval the developer asks for, on top of the operator's policy.
    #[serde(
        rename = "approvalRoles",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub approval_roles: Vec<String>,
    /// Channels to notify, on top of the operator's defaults.
    #[serde(
        rename = "notifyChannels",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub notify_channels: Vec<String>,
    /// Whether a failed deployment may be rolled back automatically.
    #[serde(
        rename = "rollbackEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rollback_enabled: Option<bool>,
    /// The rollout strategy (`canary`, `blue-green`, ...): one of the operator's
    /// `deployStrategies`, whose values the release writes beside each image tag.
    #[serde(
        rename = "customDeployStrategy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_deploy_strategy: Option<String>,
}

/// One entry of `promotion_targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromotionTarget {
    /// `deploy-to-<env>`: open a release branch changing that environment's values files.
    DeployTo(String),
    /// `tag-git: <tag>` (or bare `tag-git`, meaning the version tag): tag the application commit.
    TagGit(Option<String>),
    /// `tag-docker: a, b`: the services whose image tags this release changes.
    TagDocker(Vec<String>),
    /// `notify: slack, email`: channels to tell.
    Notify(Vec<String>),
}

impl PromotionTarget {
    pub fn environment(&self) -> Option<&str> {
        match self {
            PromotionTarget::DeployTo(env) => Some(env),
            _ => None,
        }
    }
}

const TARGET_HELP: &str = "expected `deploy-to-<environment>`, `tag-git`, `tag-git: <tag>`, \
                           `tag-docker: <service>, ...` or `notify: <channel>, ...`";

/// Environment names become branch names and file names: keep them plain.
pub fn is_valid_environment_name(env: &str) -> bool {
    !env.is_empty()
        && env.len() <= 63
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !env.starts_with('-')
        && !env.ends_with('-')
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl<'de> Deserialize<'de> for PromotionTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ListOrString {
            One(String),
            Many(Vec<String>),
        }

        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = PromotionTarget;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(TARGET_HELP)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<PromotionTarget, E> {
                if s == "tag-git" {
                    return Ok(PromotionTarget::TagGit(None));
                }
                match s.strip_prefix("deploy-to-") {
                    Some(env) if is_valid_environment_name(env) => {
                        Ok(PromotionTarget::DeployTo(env.to_string()))
                    }
                    Some(env) => Err(E::custom(format!(
                        "`{env}` is not a valid environment name: use lowercase letters, digits and `-`"
                    ))),
                    None => Err(E::custom(format!(
                        "unknown promotion target `{s}`: {TARGET_HELP}"
                    ))),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PromotionTarget, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!(
                        "empty promotion target: {TARGET_HELP}"
                    )));
                };
                let value: ListOrString = map.next_value()?;
                let list = match value {
                    ListOrString::One(s) => split_list(&s),
                    ListOrString::Many(v) => v.into_iter().map(|s| s.trim().to_string()).collect(),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(
                        "a promotion target has exactly one key; put each target in its own list item",
                    ));
                }
                let target = match key.as_str() {
                    "tag-git" => match list.as_slice() {
                        [tag] => PromotionTarget::TagGit(Some(tag.clone())),
                        _ => return Err(de::Error::custom("`tag-git` takes exactly one tag")),
                    },
                    "tag-docker" | "notify" if list.is_empty() => {
                        return Err(de::Error::custom(format!(
                            "`{key}` needs at least one name"
                        )));
                    }
                    "tag-docker" => PromotionTarget::TagDocker(list),
                    "notify" => PromotionTarget::Notify(list),
                    "deploy-to" => {
                        return Err(de::Error::custom(
                            "write a deploy target as one string, `deploy-to-<environment>`",
                        ));
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown promotion target `{other}`: {TARGET_HELP}"
                        )));
                    }
                };
                Ok(target)
            }
        }

        deserializer.deserialize_any(TargetVisitor)
    }
}

impl Serialize for PromotionTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, value) = match self {
            PromotionTarget::DeployTo(env) => return s.serialize_str(&format!("deploy-to-{env}")),
            PromotionTarget::TagGit(None) => return s.serialize_str("tag-git"),
            PromotionTarget::TagGit(Some(tag)) => ("tag-git", tag.clone()),
            PromotionTarget::TagDocker(names) => ("tag-docker", names.join(", ")),
            PromotionTarget::Notify(names) => ("notify", names.join(", ")),
        };
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(key, &value)?;
        map.end()
    }
}

impl JsonSchema for PromotionTarget {
    fn schema_name() -> Cow<'static, str> {
        "PromotionTarget".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let list = json_schema!({
            "anyOf": [
                { "type": "string", "minLength": 1, "description": "comma-separated names" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 }
            ]
        });
        json_schema!({
            "description": TARGET_HELP,
            "oneOf": [
                { "type": "string", "pattern": "^deploy-to-[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$" },
                { "const": "tag-git" },
                { "type": "object", "properties": { "tag-git": { "type": "string", "minLength": 1 } },
                  "required": ["tag-git"], "additionalProperties": false },
                { "type": "object", "properties": { "tag-docker": list.clone() },
                  "required": ["tag-docker"], "additionalProperties": false },
                { "type": "object", "properties": { "notify": list },
                  "required": ["notify"], "additionalProperties": false }
            ]
        })
    }
}

/// `milestone-status.json`: the milestone as the planning side last saw it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "milestone-status.json",
    description = "The state of the milestone a trigger promotes."
)]
pub struct MilestoneStatus {
    pub milestone_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_tag: Option<String>,
    pub trace_id: String,
    /// Only a `reached` milestone can be promoted.
    pub status: MilestoneState,
    /// Overall QA coverage in percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa_coverage: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sprints_contributing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MilestoneState {
    Pending,
    InProgress,
    Reached,
    Blocked,
    Failed,
}

impl fmt::Display for MilestoneState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            MilestoneState::Pending => "pending",
            MilestoneState::InProgress => "in-progress",
            MilestoneState::Reached => "reached",
            MilestoneState::Blocked => "blocked",
            MilestoneState::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// `sprint-trace-matrix.json`: which sprints delivered which features under the trace.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceMatrix {
    pub trace_id: String,
    pub sprints: Vec<SprintTrace>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SprintTrace {
    pub sprint_id: String,
    #[serde(default)]
    pub features: Vec<String>,
}

/// `approval-context.json`: a recorded human sign-off.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalContext {
    pub approved_by: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: time::OffsetDateTime,
}

/// Coverage figures read from `qa-validation-report.md`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QaReport {
    /// Per-feature coverage, in the order of the report.
    pub features: Vec<(String, f64)>,
    /// The `Overall` line, when present.
    pub overall: Option<f64>,
}

impl QaReport {
    /// Reads coverage lines from Markdown: list items `- Feature: 93.1%` and table rows
    /// `| Feature | 93.1% |`. A line named `Overall` (any case) is the overall figure.
    pub fn parse(src: &SourceFile) -> Result<QaReport, Diagnostics> {
        let mut report = QaReport::default();
        let mut problems = Diagnostics::default();
        let mut offset = 0;
        for line in src.text.split_inclusive('\n') {
            let here = offset;
            offset += line.len();
            let Some((name, pct_text)) = coverage_line(line) else {
                continue;
            };
            let value = pct_text.trim_end_matches('%').trim().parse::<f64>();
            match value {
                Ok(v) if (0.0..=100.0).contains(&v) => {
                    if name.eq_ignore_ascii_case("overall") {
                        report.overall = Some(v);
                    } else {
                        report.features.push((name.to_string(), v));
                    }
                }
                _ => {
                    let col = line.find(pct_text).unwrap_or(0);
                    problems.push(src.at_offset(
                        here + col,
                        format!(
                            "coverage `{pct_text}` for `{name}` is not a percentage from 0% to 100%"
                        ),
                    ));
                }
            }
        }
        if report.features.is_empty() && report.overall.is_none() && problems.is_empty() {
            problems.push(Diagnostic::whole_file(
                &src.name,
                "no coverage figures found; write lines like `- Overall: 91.3%` or `| BookingFlow | 93.1% |`",
            ));
        }
        problems.into_result(report)
    }
}

/// `(name, "93.1%")` for a line that states a coverage figure, `None` for prose.
fn coverage_line(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if let Some(item) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
        let (name, value) = item.rsplit_once(':')?;
        let value = value.trim();
        return value
            .ends_with('%')
            .then(|| (name.trim().trim_matches('*').trim(), value));
    }
    if t.starts_with('|') {
        let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
        if let [name, value, ..] = cells.as_slice()
            && value.ends_with('%')
            && !name.is_empty()
        {
            return Some((name, value));
        }
    }
    None
}

/// Everything read from a trigger directory, with the sources kept for error positions.
#[derive(Debug, Clone)]
pub struct AppInputs {
    pub dir: PathBuf,
    pub trigger: PromotionTrigger,
    pub trigger_src: SourceFile,
    pub status: MilestoneStatus,
    pub status_src: SourceFile,
    pub qa: Option<(QaReport, SourceFile)>,
    pub matrix: Option<(TraceMatrix, SourceFile)>,
    pub approval: Option<(ApprovalContext, SourceFile)>,
}

impl AppInputs {
    /// Reads and parses every file of a trigger directory, reporting all problems at once.
    pub fn load(dir: &Path) -> Result<AppInputs, Diagnostics> {
        let mut problems = Diagnostics::default();
        let root = match dir.canonicalize() {
            Ok(r) => r,
            Err(e) => {
                return Err(Diagnostic::whole_file(
                    dir.display().to_string(),
                    format!("cannot open trigger directory: {e}"),
                )
                .into());
            }
        };
        if !root.is_dir() {
            let folder = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return Err(Diagnostic::whole_file(
                dir.display().to_string(),
                format!(
                    "this is a file; give the folder that holds {TRIGGER_FILE} and {STATUS_FILE} (here: {})",
                    folder.display()
                ),
            )
            .into());
        }
        let mut read = |file: &str, required: bool| -> Option<SourceFile> {
            let path = dir.join(file);
            let name = path.display().to_string();
            if !required && std::fs::symlink_metadata(&path).is_err() {
                return None;
            }
            // A symlink may not lead out of the trigger directory: the bot reads these files
            // from repositories it does not control.
            if let Ok(real) = path.canonicalize()
                && !real.starts_with(&root)
            {
                problems.push(Diagnostic::whole_file(
                    &name,
                    "file is a link that leads outside the trigger directory",
                ));
                return None;
            }
            match SourceFile::read(&path, name) {
                Ok(s) => Some(s),
                Err(d) => {
                    problems.push(d);
                    None
                }
            }
        };
        let trigger_src = read(TRIGGER_FILE, true);
        let status_src = read(STATUS_FILE, true);
        let qa_src = read(QA_REPORT_FILE, false);
        let matrix_src = read(TRACE_MATRIX_FILE, false);
        let approval_src = read(APPROVAL_CONTEXT_FILE, false);

        let trigger = trigger_src.as_ref().and_then(|s| {
            s.parse_yaml::<PromotionTrigger>()
                .map_err(|d| problems.push(d))
                .ok()
        });
        let status = status_src.as_ref().and_then(|s| {
            s.parse_json::<MilestoneStatus>()
                .map_err(|d| problems.push(d))
                .ok()
        });
        let qa = qa_src.and_then(|s| match QaReport::parse(&s) {
            Ok(r) => Some((r, s)),
            Err(d) => {
                problems.extend(d);
                None
            }
        });
        let matrix = matrix_src.and_then(|s| {
            s.parse_json::<TraceMatrix>()
                .map_err(|d| problems.push(d))
                .ok()
                .map(|m| (m, s))
        });
        let approval = approval_src.and_then(|s| {
            s.parse_json::<ApprovalContext>()
                .map_err(|d| problems.push(d))
                .ok()
                .map(|a| (a, s))
        });

        match (trigger, trigger_src, status, status_src) {
            (Some(trigger), Some(trigger_src), Some(status), Some(status_src))
                if problems.is_empty() =>
            {
                Ok(AppInputs {
                    dir: dir.to_path_buf(),
                    trigger,
                    trigger_src,
                    status,
                    status_src,
                    qa,
                    matrix,
                    approval,
                })
            }
            _ => Err(problems),
        }
    }
}

/// The JSON Schemas published under `schemas/`, generated from the types above.
pub fn json_schemas() -> Vec<(&'static str, String)> {
    let render = |s: Schema| serde_json::to_string_pretty(&s).expect("schema serializes") + "\n";
    vec![
        (
            "promotion-trigger.schema.json",
            render(schemars::schema_for!(PromotionTrigger)),
        ),
        (
            "milestone-status.schema.json",
            render(schemars::schema_for!(MilestoneStatus)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(yaml: &str) -> Result<PromotionTrigger, Diagnostic> {
        SourceFile::new(TRIGGER_FILE, yaml).parse_yaml()
    }

    #[test]
    fn the_spec_example_trigger_parses() {
        let t = trigger(
            "milestone_id: mvp-ready\nversion_tag: mvp-v1\ntrace_id: trace-xyz-789\npromotion_targets:\n\
             - deploy-to-staging\n- tag-git: mvp-v1\n- tag-docker: booking-service, notification-service\n\
             - notify: teams, email\nmanualApprovalRequired: false\nsignedBy: product-owner\n",
        )
        .unwrap();
        assert_eq!(
            t.promotion_targets,
            vec![
                PromotionTarget::DeployTo("staging".into()),
                PromotionTarget::TagGit(Some("mvp-v1".into())),
                PromotionTarget::TagDocker(vec![
                    "booking-service".into(),
                    "notification-service".into()
                ]),
                PromotionTarget::Notify(vec!["teams".into(), "email".into()]),
            ]
        );
        assert_eq!(t.signed_by.as_deref(), Some("product-owner"));
    }

    #[test]
    fn unknown_target_is_reported_at_its_item() {
        let d = trigger("milestone_id: m\ntrace_id: t\npromotion_targets:\n  - deploy-to-staging\n  - launch-rockets\n")
            .unwrap_err();
        assert_eq!(d.line, 5, "{d}");
        assert!(d.message.contains("promotion_targets[1]"), "{d}");
        assert!(
            d.message
                .contains("unknown promotion target `launch-rockets`"),
            "{d}"
        );
    }

    #[test]
    fn target_with_two_keys_is_an_error() {
        let d = trigger(
            "milestone_id: m\ntrace_id: t\npromotion_targets:\n  - {tag-git: v1, notify: slack}\n",
        )
        .unwrap_err();
        assert!(d.message.contains("exactly one key"), "{d}");
    }

    #[test]
    fn bad_environment_name_is_explained() {
        let d = trigger("milestone_id: m\ntrace_id: t\npromotion_targets: [deploy-to-Prod]\n")
            .unwrap_err();
        assert!(
            d.message.contains("`Prod` is not a valid environment name"),
            "{d}"
        );
    }

    #[test]
    fn targets_round_trip_through_serialization() {
        let t = trigger("milestone_id: m\ntrace_id: t\npromotion_targets: [deploy-to-qa, tag-git, {tag-docker: [a, b]}]\n").unwrap();
        let text = yaml_serde::to_string(&t).unwrap();
        assert_eq!(trigger(&text).unwrap(), t);
    }

    #[test]
    fn milestone_status_example_parses_and_rejects_unknown_status() {
        let ok = r#"{"milestone_id":"mvp-ready","version_tag":"mvp-v1","trace_id":"trace-xyz-789","status":"reached","qa_coverage":91.3,"sprints_contributing":["sprint-1","sprint-2"]}"#;
        let s: MilestoneStatus = SourceFile::new(STATUS_FILE, ok).parse_json().unwrap();
        assert_eq!(s.status, MilestoneState::Reached);
        let bad = SourceFile::new(
            STATUS_FILE,
            "{\"milestone_id\":\"m\",\"trace_id\":\"t\",\n\"status\":\"done\"}",
        );
        let d = bad.parse_json::<MilestoneStatus>().unwrap_err();
        assert_eq!(d.line, 2);
        assert!(d.message.contains("status: unknown variant `done`"), "{d}");
    }

    #[test]
    fn qa_report_reads_lists_and_tables() {
        let src = SourceFile::new(
            QA_REPORT_FILE,
            "# QA\n\n## QA Summary\n- BookingFlow: 93.1%\n- Notification.Send: 89.5%\n- Overall: 91.3%\n\n| Feature | Coverage |\n|---|---|\n| Payments | 80% |\n",
        );
        let r = QaReport::parse(&src).unwrap();
        assert_eq!(r.overall, Some(91.3));
        assert_eq!(
            r.features,
            vec![
                ("BookingFlow".into(), 93.1),
                ("Notification.Send".into(), 89.5),
                ("Payments".into(), 80.0)
            ]
        );
    }

    #[test]
    fn qa_report_rejects_impossible_percentages_with_position() {
        let src = SourceFile::new(QA_REPORT_FILE, "Summary\n- BookingFlow: 193.1%\n");
        let d = QaReport::parse(&src).unwrap_err();
        assert_eq!(d.0[0].line, 2);
        assert_eq!(d.0[0].column, 16);
        assert!(
            d.0[0].message.contains("`193.1%` for `BookingFlow`"),
            "{}",
            d.0[0]
        );
    }

    #[test]
    fn qa_report_without_figures_is_an_error() {
        let d = QaReport::parse(&SourceFile::new(QA_REPORT_FILE, "All good!\n")).unwrap_err();
        assert!(d.0[0].message.contains("no coverage figures found"));
    }
}
