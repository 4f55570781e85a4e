//! The typed states the bot keeps: a release pull request's state, what became of a trigger
//! commit, and the summary of a release that its comments and forge release are written from.

use serde::{Deserialize, Serialize};

use crate::release::plan::ReleasePlan;

/// Where one environment's release pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrState {
    /// Not opened yet: an earlier environment goes first.
    Waiting,
    Open,
    /// The forge merges it by itself once its own pipeline succeeds (GitLab).
    Scheduled,
    Merged,
    Closed,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Waiting => "waiting",
            PrState::Open => "open",
            PrState::Scheduled => "scheduled",
            PrState::Merged => "merged",
            PrState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<PrState> {
        [
            PrState::Waiting,
            PrState::Open,
            PrState::Scheduled,
            PrState::Merged,
            PrState::Closed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Open on the forge, merged or not yet.
    pub fn is_open(self) -> bool {
        matches!(self, PrState::Open | PrState::Scheduled)
    }
}

/// What became of a trigger commit, so a replayed push neither comments nor releases twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TriggerOutcome {
    /// Recorded before the release branches are pushed: a crash between the push and linking
    /// the release is finished by the replayed delivery instead of refused as a re-used version.
    Starting(Box<Intent>),
    /// The release exists and is linked to the forge.
    Released { version: String },
    /// Refused; the commit status and comment may be there (an attempt was cut short).
    Rejecting,
    /// Refused, and the commit carries the status and the comment.
    Rejected,
}

/// A release started from a trigger commit, recorded before its branches are pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub version: String,
    pub summary: Summary,
    /// Environment and release branch, in the order they are released.
    pub environments: Vec<(String, String)>,
}

/// What a release's comments and its forge release need, kept with the release.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub version: String,
    pub milestone_id: String,
    pub trace_id: String,
    pub qa_coverage: Option<f64>,
    pub git_tag: Option<String>,
    /// Environments where the trigger asks for a human approval even if the policy does not.
    #[serde(default)]
    pub manual_approval_environments: Vec<String>,
    /// Policy roles the trigger adds to what each environment requires (`approvalRoles`,
    /// `signedBy`).
    #[serde(default)]
    pub extra_roles: Vec<String>,
    pub changes: Vec<EnvironmentChanges>,
    pub release_notes: String,
    /// The trigger's `rollbackEnabled`, if it says.
    #[serde(default)]
    pub rollback_enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentChanges {
    pub environment: String,
    pub services: Vec<ServiceChange>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub service: String,
    pub image: String,
    pub file: String,
    pub from: String,
    pub to: String,
}

impl Summary {
    pub fn of(plan: &ReleasePlan) -> Summary {
        let spec = &plan.spec;
        let release_notes = plan
            .documents
            .iter()
            .find(|d| d.path.ends_with("release-notes.md"))
            .map(|d| String::from_utf8_lossy(&d.content).to_string())
            .unwrap_or_default();
        Summary {
            version: spec.version.clone(),
            milestone_id: spec.milestone_id.clone(),
            trace_id: spec.trace_id.clone(),
            qa_coverage: spec.qa_coverage,
            git_tag: spec.git_tag.clone(),
            manual_approval_environments: if spec.manual_approval_required {
                spec.environments.iter().map(|e| e.name.clone()).collect()
            } else {
                Vec::new()
            },
            extra_roles: spec.extra_roles.clone(),
            changes: plan
                .environments
                .iter()
                .map(|e| EnvironmentChanges {
                    environment: e.environment.clone(),
                    services: e
                        .changes
                        .iter()
                        .map(|c| ServiceChange {
                            service: c.service.clone(),
                            image: c.image.clone(),
                            file: c.values_file.clone(),
                            from: c.old_tag.clone(),
                            to: c.tag.clone(),
                        })
                        .collect(),
                })
                .collect(),
            release_notes,
            rollback_enabled: spec.rollback_enabled,
        }
    }

    pub fn changes_to(&self, environment: &str) -> &[ServiceChange] {
        self.changes
            .iter()
            .find(|c| c.environment == environment)
            .map(|c| c.services.as_slice())
            .unwrap_or_default()
    }

    pub fn needs_manual_approval(&self, environment: &str) -> bool {
        self.manual_approval_environments
            .iter()
            .any(|e| e == environment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_outcomes_are_tagged_json() {
        let o = TriggerOutcome::Released {
            version: "v1".into(),
        };
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, r#"{"outcome":"released","version":"v1"}"#);
        assert_eq!(serde_json::from_str::<TriggerOutcome>(&json).unwrap(), o);
        assert_eq!(
            serde_json::to_string(&TriggerOutcome::Rejected).unwrap(),
            r#"{"outcome":"rejected"}"#
        );
    }

    #[test]
    fn pr_states_round_trip() {
        for s in ["waiting", "open", "scheduled", "merged", "closed"] {
            assert_eq!(PrState::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(PrState::parse("gone"), None);
    }
}
