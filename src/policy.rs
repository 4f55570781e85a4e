//! The merge decision: a pure function of the environment's policy and what the forge says.
//!
//! Everything here is data in, decision out: no I/O, no clock, no forge. The forge modules read
//! approvals, checks and team memberships; this module says whether they add up. Both forges use
//! the same function, so GitHub and GitLab releases obey exactly the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{EnvironmentPolicy, ReleasePolicy};

/// One approval as the forge recorded it: a `/approve` comment or an approving review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub user: String,
    /// The pull request's head commit when the approval was given.
    pub commit: String,
    /// The forge marks the account as a bot (GitHub `type: Bot`, GitLab `bot: true`).
    pub user_is_bot: bool,
}

/// The state of one check run or commit status on the head commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    Pending,
    Success,
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub state: CheckState,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub environment: &'a str,
    pub policy: &'a ReleasePolicy,
    /// The pull request's current head commit.
    pub head_commit: &'a str,
    /// Who asked for the release (the author of the trigger commit).
    pub requester: &'a str,
    /// Approvals in force: the latest word of each user, cancellations already applied.
    pub approvals: &'a [Approval],
    /// The roles of each approver, resolved by the forge (users, teams, groups).
    pub roles: &'a BTreeMap<String, BTreeSet<String>>,
    pub checks: &'a [Check],
    pub qa_coverage: Option<f64>,
    /// The trigger file or the operator's defaults ask for a human approval here.
    pub manual_approval_required: bool,
    /// Who put the release on hold, if anyone.
    pub held_by: Option<&'a str>,
}

/// Why a release cannot merge yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Held { by: String },
    NeedsApprovals { have: u32, need: u32 },
    NeedsRole { role: String },
    CheckPending { name: String },
    CheckMissing { name: String },
    CheckFailed { name: String },
    CoverageTooLow { have: Option<f64>, need: f64 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Held { by } => write!(f, "on hold by @{by} (`/unhold` to lift)"),
            Reason::NeedsApprovals { have, need } => {
                write!(f, "{have} of {need} required approvals")
            }
            Reason::NeedsRole { role } => write!(f, "needs an approval from a `{role}`"),
            Reason::CheckPending { name } => write!(f, "check `{name}` is still running"),
            Reason::CheckMissing { name } => write!(f, "check `{name}` has not reported yet"),
            Reason::CheckFailed { name } => {
                write!(
                    f,
                    "check `{name}` failed; re-run it, then the release continues"
                )
            }
            Reason::CoverageTooLow {
                have: Some(h),
                need,
            } => write!(f, "QA coverage {h}% is below the required {need}%"),
            Reason::CoverageTooLow { have: None, need } => write!(
                f,
                "QA coverage of at least {need}% is required and the release has no QA report"
            ),
        }
    }
}

/// What to do with the release pull request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Merge,
    /// Not yet; each reason can resolve by waiting or by someone's action on the pull request.
    Wait(Vec<Reason>),
    /// Cannot merge as it stands: a required check failed, or the release itself falls short.
    Block(Vec<Reason>),
}

/// Why an approval does not count; told to the approver in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Requester,
    Bot,
    /// Given on an earlier head commit.
    Stale {
        commit: String,
    },
    NoRole,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Requester => {
                f.write_str("the requester of a release cannot approve it")
            }
            Rejection::Bot => f.write_str("bot accounts cannot approve releases"),
            Rejection::Stale { commit } => write!(
                f,
                "it was given on commit {}, which is no longer the head of this pull request",
                short(commit)
            ),
            Rejection::NoRole => f.write_str(
                "you hold no approver role in the release policy (roles come from release-policy.yaml)",
            ),
        }
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Whether an approval counts, and if not why.
pub fn check_approval(facts: &Facts<'_>, approval: &Approval) -> Result<(), Rejection> {
    let user = approval.user.as_str();
    if user.eq_ignore_ascii_case(facts.requester) {
        return Err(Rejection::Requester);
    }
    if approval.user_is_bot
        || facts
            .policy
            .bots
            .iter()
            .any(|b| b.eq_ignore_ascii_case(user))
    {
        return Err(Rejection::Bot);
    }
    if approval.commit != facts.head_commit {
        return Err(Rejection::Stale {
            commit: approval.commit.clone(),
        });
    }
    // With roles defined, only role holders approve; a policy without roles lets anyone.
    if !facts.policy.roles.is_empty() && facts.roles.get(user).is_none_or(|r| r.is_empty()) {
        return Err(Rejection::NoRole);
    }
    Ok(())
}

/// The decision for one environment's release pull request.
pub fn decide(facts: &Facts<'_>) -> Decision {
    // An environment the policy does not name still needs one approval from a role holder:
    // forgetting to write a rule must not open a path to production without a human.
    let unnamed = EnvironmentPolicy {
        required_approvals: 1,
        ..Default::default()
    };
    let env = facts
        .policy
        .environments
        .get(facts.environment)
        .unwrap_or(&unnamed);
    let mut wait = Vec::new();
    let mut block = Vec::new();

    if let Some(by) = facts.held_by {
        wait.push(Reason::Held { by: by.to_string() });
    }

    if let Some(need) = env.qa_coverage_above
        && facts.qa_coverage.is_none_or(|have| have < need)
    {
        block.push(Reason::CoverageTooLow {
            have: facts.qa_coverage,
            need,
        });
    }

    let approvers: BTreeSet<&str> = facts
        .approvals
        .iter()
        .filter(|a| check_approval(facts, a).is_ok())
        .map(|a| a.user.as_str())
        .collect();
    // The trigger may ask for more scrutiny than the policy, never less.
    let need = env
        .required_approvals
        .max(u32::from(facts.manual_approval_required));
    let have = approvers.len() as u32;
    if have < need {
        wait.push(Reason::NeedsApprovals { have, need });
    }
    for role in &env.required_roles {
        let covered = approvers
            .iter()
            .any(|u| facts.roles.get(*u).is_some_and(|r| r.contains(role)));
        if !covered {
            wait.push(Reason::NeedsRole { role: role.clone() });
        }
    }

    for name in &env.required_checks {
        // The forge modules pass the latest run of each check; should a name still appear
        // more than once (a check run and a commit status of the same name), any failure
        // blocks and any pending run waits.
        let states: Vec<CheckState> = facts
            .checks
            .iter()
            .filter(|c| &c.name == name)
            .map(|c| c.state)
            .collect();
        if states.is_empty() {
            wait.push(Reason::CheckMissing { name: name.clone() });
        } else if states.contains(&CheckState::Failure) {
            block.push(Reason::CheckFailed { name: name.clone() });
        } else if states.contains(&CheckState::Pending) {
            wait.push(Reason::CheckPending { name: name.clone() });
        }
    }

    if !block.is_empty() {
        block.extend(wait);
        Decision::Block(block)
    } else if !wait.is_empty() {
        Decision::Wait(wait)
    } else {
        Decision::Merge
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleMembers;

    const HEAD: &str = "1111111111111111111111111111111111111111";
    const OLD: &str = "2222222222222222222222222222222222222222";

    fn policy() -> ReleasePolicy {
        let mut p = ReleasePolicy::default();
        for (role, users) in [
            ("qa-lead", vec!["alice"]),
            ("product-owner", vec!["bob"]),
            ("platform-admin", vec!["carol"]),
        ] {
            p.roles.insert(
                role.into(),
                RoleMembers {
                    users: users.into_iter().map(String::from).collect(),
                    ..Default::default()
                },
            );
        }
        p.environments.insert(
            "production".into(),
            EnvironmentPolicy {
                required_approvals: 2,
                required_roles: vec!["qa-lead".into(), "product-owner".into()],
                required_checks: vec!["ci/build".into(), "security-scan".into()],
                qa_coverage_above: Some(85.0),
                ..Default::default()
            },
        );
        p.environments.insert(
            "staging".into(),
            EnvironmentPolicy {
                required_approvals: 0,
                ..Default::default()
            },
        );
        p.bots = vec!["renovate".into()];
        p
    }

    fn roles() -> BTreeMap<String, BTreeSet<String>> {
        [
            ("alice", "qa-lead"),
            ("bob", "product-owner"),
            ("carol", "platform-admin"),
            ("dependabot[bot]", "qa-lead"),
            ("renovate", "qa-lead"),
            ("dave", "qa-lead"),
        ]
        .into_iter()
        .map(|(u, r)| (u.to_string(), BTreeSet::from([r.to_string()])))
        .collect()
    }

    fn approval(user: &str, commit: &str) -> Approval {
        Approval {
            user: user.into(),
            commit: commit.into(),
            user_is_bot: user.ends_with("[bot]"),
        }
    }

    fn green() -> Vec<Check> {
        ["ci/build", "security-scan"]
            .into_iter()
            .map(|n| Check {
                name: n.into(),
                state: CheckState::Success,
            })
            .collect()
    }

    struct Case {
        env: &'static str,
        approvals: Vec<Approval>,
        checks: Vec<Check>,
        qa: Option<f64>,
        manual: bool,
        held: Option<&'static str>,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                env: "production",
                approvals: vec![approval("alice", HEAD), approval("bob", HEAD)],
                checks: green(),
                qa: Some(91.3),
                manual: false,
                held: None,
            }
        }
    }

    fn run(c: Case) -> Decision {
        let p = policy();
        let r = roles();
        decide(&Facts {
            environment: c.env,
            policy: &p,
            head_commit: HEAD,
            requester: "dave",
            approvals: &c.approvals,
            roles: &r,
            checks: &c.checks,
            qa_coverage: c.qa,
            manual_approval_required: c.manual,
            held_by: c.held,
        })
    }

    #[test]
    fn everything_in_place_merges() {
        assert_eq!(run(Case::default()), Decision::Merge);
    }

    #[test]
    fn missing_approvals_and_roles_wait() {
        let d = run(Case {
            approvals: vec![approval("alice", HEAD), approval("carol", HEAD)],
            ..Default::default()
        });
        assert_eq!(
            d,
            Decision::Wait(vec![Reason::NeedsRole {
                role: "product-owner".into()
            }])
        );
        let d = run(Case {
            approvals: vec![approval("bob", HEAD)],
            ..Default::default()
        });
        assert_eq!(
            d,
            Decision::Wait(vec![
                Reason::NeedsApprovals { have: 1, need: 2 },
                Reason::NeedsRole {
                    role: "qa-lead".into()
                }
            ])
        );
    }

    #[test]
    fn requester_bots_stale_and_roleless_approvals_do_not_count() {
        for (who, commit, why) in [
            ("dave", HEAD, Rejection::Requester),
            ("dependabot[bot]", HEAD, Rejection::Bot),
            ("renovate", HEAD, Rejection::Bot),
            ("alice", OLD, Rejection::Stale { commit: OLD.into() }),
            ("mallory", HEAD, Rejection::NoRole),
        ] {
            let p = policy();
            let r = roles();
            let a = [approval(who, commit), approval("bob", HEAD)];
            let facts = Facts {
                environment: "production",
                policy: &p,
                head_commit: HEAD,
                requester: "dave",
                approvals: &a,
                roles: &r,
                checks: &green(),
                qa_coverage: Some(90.0),
                manual_approval_required: false,
                held_by: None,
            };
            assert_eq!(check_approval(&facts, &a[0]), Err(why.clone()), "{who}");
            assert!(
                matches!(decide(&facts), Decision::Wait(ref r) if r.contains(&Reason::NeedsApprovals { have: 1, need: 2 })),
                "{who}: {why}"
            );
        }
    }

    #[test]
    fn hold_waits_even_when_all_else_is_ready() {
        assert_eq!(
            run(Case {
                held: Some("carol"),
                ..Default::default()
            }),
            Decision::Wait(vec![Reason::Held { by: "carol".into() }])
        );
    }

    #[test]
    fn checks_pending_missing_and_failed() {
        let mut checks = green();
        checks[0].state = CheckState::Pending;
        checks.pop();
        assert_eq!(
            run(Case {
                checks,
                ..Default::default()
            }),
            Decision::Wait(vec![
                Reason::CheckPending {
                    name: "ci/build".into()
                },
                Reason::CheckMissing {
                    name: "security-scan".into()
                }
            ])
        );
        let mut checks = green();
        checks[1].state = CheckState::Failure;
        assert_eq!(
            run(Case {
                checks,
                approvals: vec![],
                ..Default::default()
            }),
            Decision::Block(vec![
                Reason::CheckFailed {
                    name: "security-scan".into()
                },
                Reason::NeedsApprovals { have: 0, need: 2 },
                Reason::NeedsRole {
                    role: "qa-lead".into()
                },
                Reason::NeedsRole {
                    role: "product-owner".into()
                },
            ])
        );
        // Checks that are not required do not matter.
        let mut checks = green();
        checks.push(Check {
            name: "lint".into(),
            state: CheckState::Failure,
        });
        assert_eq!(
            run(Case {
                checks,
                ..Default::default()
            }),
            Decision::Merge
        );
    }

    #[test]
    fn coverage_below_policy_blocks() {
        assert_eq!(
            run(Case {
                qa: Some(80.0),
                ..Default::default()
            }),
            Decision::Block(vec![Reason::CoverageTooLow {
                have: Some(80.0),
                need: 85.0
            }])
        );
        assert!(matches!(
            run(Case {
                qa: None,
                ..Default::default()
            }),
            Decision::Block(_)
        ));
    }

    #[test]
    fn the_trigger_can_ask_for_an_approval_the_policy_does_not() {
        let staging = |manual, approvals| {
            run(Case {
                env: "staging",
                approvals,
                checks: vec![],
                manual,
                ..Default::default()
            })
        };
        assert_eq!(staging(false, vec![]), Decision::Merge);
        assert_eq!(
            staging(true, vec![]),
            Decision::Wait(vec![Reason::NeedsApprovals { have: 0, need: 1 }])
        );
        assert_eq!(
            staging(true, vec![approval("carol", HEAD)]),
            Decision::Merge
        );
    }

    #[test]
    fn an_environment_the_policy_does_not_name_needs_one_approval() {
        let dev = |approvals| {
            run(Case {
                env: "dev",
                approvals,
                checks: vec![],
                qa: None,
                ..Default::default()
            })
        };
        assert_eq!(
            dev(vec![]),
            Decision::Wait(vec![Reason::NeedsApprovals { have: 0, need: 1 }])
        );
        assert_eq!(dev(vec![approval("carol", HEAD)]), Decision::Merge);
    }
}
