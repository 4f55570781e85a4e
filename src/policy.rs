//! The merge decision: a pure function of the environment's policy and what the forge says.
//!
//! Everything here is data in, decision out: no I/O, no clock, no forge. The forge modules read
//! approvals, checks and team memberships; this module says whether they add up. Both forges use
//! the same function, so GitHub and GitLab releases obey exactly the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use time::OffsetDateTime;

use crate::config::ReleasePolicy;
pub use crate::events::{CheckResult as Check, CheckSource, CheckState};

/// One approval in force: the latest act of its author approves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub user: String,
    /// The pull request's head commit when the approval was given; empty when that cannot be
    /// told (then it never counts).
    pub commit: String,
    /// The forge marks the account as a bot (GitHub `type: Bot`, GitLab `bot: true`).
    pub user_is_bot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    Approve,
    Withdraw,
}

impl ActKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActKind::Approve => "approve",
            ActKind::Withdraw => "withdraw",
        }
    }
}

/// An entry of the append-only approval ledger: someone approved or withdrew, through a
/// comment, a review or the approve button, at the time the forge gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAct {
    pub user: String,
    pub user_is_bot: bool,
    /// `comment:<id>`, `review:<id>`, `approval:<user>`.
    pub source: String,
    pub kind: ActKind,
    /// For an approval: the head it was given on, if that can be told.
    pub head: Option<String>,
    pub at: OffsetDateTime,
}

impl ApprovalAct {
    pub fn as_approval(&self) -> Approval {
        Approval {
            user: self.user.clone(),
            commit: self.head.clone().unwrap_or_default(),
            user_is_bot: self.user_is_bot,
        }
    }
}

/// The approvals in force: the latest act of each person wins (acts in ledger order; the
/// forge's time decides, the order of recording only between acts of the same second).
pub fn approvals_in_force(acts: &[ApprovalAct]) -> Vec<Approval> {
    let mut latest: BTreeMap<String, &ApprovalAct> = BTreeMap::new();
    for act in acts {
        let key = act.user.to_ascii_lowercase();
        if latest.get(&key).is_none_or(|prev| prev.at <= act.at) {
            latest.insert(key, act);
        }
    }
    latest
        .into_values()
        .filter(|a| a.kind == ActKind::Approve)
        .map(ApprovalAct::as_approval)
        .collect()
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub environment: &'a str,
    pub policy: &'a ReleasePolicy,
    /// The pull request's current head commit.
    pub head_commit: &'a str,
    /// The commit the bot built for this pull request.
    pub built_head: &'a str,
    /// Who asked for the release (the trigger commit's pusher and author): never approvers.
    pub requesters: &'a [String],
    /// People known to have pushed to the release branch.
    pub pushers: &'a [String],
    /// The head was pushed by someone the bot does not know (its push webhook was lost).
    pub head_pusher_unknown: bool,
    /// Roles the trigger adds to what the environment requires (`approvalRoles`, `signedBy`).
    pub extra_roles: &'a [String],
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
    NotInPolicy,
    /// The head is not the commit the bot built, and the policy does not allow people's commits.
    ForeignHead {
        built: String,
        head: String,
        pushers: Vec<String>,
    },
    /// People's commits are allowed, but who pushed the head is not known.
    UnknownPusher {
        head: String,
    },
    Held {
        by: String,
    },
    NeedsApprovals {
        have: u32,
        need: u32,
    },
    NeedsRole {
        role: String,
    },
    CheckPending {
        name: String,
    },
    CheckMissing {
        name: String,
    },
    /// Runs of a required check came only from sources the policy does not accept.
    CheckWrongSource {
        name: String,
        from: Vec<String>,
        wanted: String,
    },
    CheckFailed {
        name: String,
    },
    CoverageTooLow {
        have: Option<f64>,
        need: f64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotInPolicy => f.write_str(
                "this environment is not in the release policy: nothing merges to it until the operator adds it",
            ),
            Reason::ForeignHead { built, head, pushers } => write!(
                f,
                "the head {} is not the commit the bot built ({}){}; comment `/retry` to rebuild the branch",
                short(head),
                short(built),
                if pushers.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": pushed by {}",
                        pushers.iter().map(|p| format!("@{p}")).collect::<Vec<_>>().join(", ")
                    )
                }
            ),
            Reason::UnknownPusher { head } => write!(
                f,
                "who pushed {} is not known (its push was not received), so who may approve cannot be told; push again or comment `/retry`",
                short(head)
            ),
            Reason::Held { by } => write!(f, "on hold by @{by} (`/unhold` to lift)"),
            Reason::NeedsApprovals { have, need } => {
                write!(f, "{have} of {need} required approvals")
            }
            Reason::NeedsRole { role } => write!(f, "needs an approval from a `{role}`"),
            Reason::CheckPending { name } => write!(f, "check `{name}` is still running"),
            Reason::CheckMissing { name } => write!(f, "check `{name}` has not reported yet"),
            Reason::CheckWrongSource { name, from, wanted } => write!(
                f,
                "check `{name}` was reported only by {}, which does not count: the policy wants {wanted}",
                from.join(", ")
            ),
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
    /// Pushed commits to the release branch.
    Pusher,
    Bot,
    /// Given on an earlier head commit, or at a time whose head cannot be told.
    Stale {
        commit: String,
    },
    NoRole,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Requester => {
                f.write_str("whoever asked for this release (or for this rollback) cannot approve it")
            }
            Rejection::Pusher => f.write_str(
                "you pushed commits to this release branch, and whoever changed a release cannot approve it",
            ),
            Rejection::Bot => f.write_str("bot accounts cannot approve releases"),
            Rejection::Stale { commit } if commit.is_empty() => f.write_str(
                "it is not known on which head commit it was given (the branch changed since); approve again",
            ),
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

fn among(list: &[String], user: &str) -> bool {
    list.iter().any(|u| u.eq_ignore_ascii_case(user))
}

/// Whether an approval counts, and if not why.
pub fn check_approval(facts: &Facts<'_>, approval: &Approval) -> Result<(), Rejection> {
    let user = approval.user.as_str();
    if among(facts.requesters, user) {
        return Err(Rejection::Requester);
    }
    if among(facts.pushers, user) {
        return Err(Rejection::Pusher);
    }
    if approval.user_is_bot || among(&facts.policy.bots, user) {
        return Err(Rejection::Bot);
    }
    if approval.commit.is_empty() || approval.commit != facts.head_commit {
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

/// Judges the runs of one required check: the newest run from an accepted source, by the
/// forge's order; `Err` with the sources that reported it when none is accepted.
pub fn newest_accepted<'c>(
    rule: &crate::config::RequiredCheck,
    checks: &'c [Check],
) -> Result<Option<&'c Check>, Vec<String>> {
    let named: Vec<&Check> = checks.iter().filter(|c| c.name == rule.name).collect();
    // Newest per source; across accepted sources, any failure blocks and any pending waits.
    let mut newest: BTreeMap<&CheckSource, &Check> = BTreeMap::new();
    for c in named.iter().filter(|c| rule.accepts(&c.source)) {
        if newest.get(&c.source).is_none_or(|n| n.order <= c.order) {
            newest.insert(&c.source, c);
        }
    }
    if newest.is_empty() {
        let from: BTreeSet<String> = named.iter().map(|c| c.source.to_string()).collect();
        return if from.is_empty() {
            Ok(None)
        } else {
            Err(from.into_iter().collect())
        };
    }
    let worst = newest
        .values()
        .min_by_key(|c| match c.state {
            CheckState::Failure => 0,
            CheckState::Pending => 1,
            CheckState::Success => 2,
        })
        .copied();
    Ok(worst)
}

/// The decision for one environment's release pull request.
pub fn decide(facts: &Facts<'_>) -> Decision {
    // Closed by default: an environment without a rule (nor a `default` entry) never merges.
    let Some(env) = facts.policy.environment(facts.environment) else {
        return Decision::Block(vec![Reason::NotInPolicy]);
    };
    let mut wait = Vec::new();
    let mut block = Vec::new();

    if facts.head_commit != facts.built_head {
        if !env.allow_people_commits {
            block.push(Reason::ForeignHead {
                built: facts.built_head.to_string(),
                head: facts.head_commit.to_string(),
                pushers: facts.pushers.to_vec(),
            });
        } else if facts.head_pusher_unknown {
            block.push(Reason::UnknownPusher {
                head: facts.head_commit.to_string(),
            });
        }
    }

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
        .max(u32::from(facts.manual_approval_required))
        .max(u32::from(!facts.extra_roles.is_empty()));
    let have = approvers.len() as u32;
    if have < need {
        wait.push(Reason::NeedsApprovals { have, need });
    }
    let mut roles: Vec<&String> = env.required_roles.iter().collect();
    for extra in facts.extra_roles {
        if !roles.contains(&extra) {
            roles.push(extra);
        }
    }
    for role in roles {
        let covered = approvers
            .iter()
            .any(|u| facts.roles.get(*u).is_some_and(|r| r.contains(role)));
        if !covered {
            wait.push(Reason::NeedsRole { role: role.clone() });
        }
    }

    for rule in &env.required_checks {
        let name = rule.name.clone();
        match newest_accepted(rule, facts.checks) {
            Ok(None) => wait.push(Reason::CheckMissing { name }),
            Ok(Some(c)) => match c.state {
                CheckState::Failure => block.push(Reason::CheckFailed { name }),
                CheckState::Pending => wait.push(Reason::CheckPending { name }),
                CheckState::Success => {}
            },
            Err(from) => wait.push(Reason::CheckWrongSource {
                name,
                from,
                wanted: rule.source_text(),
            }),
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
    use crate::config::{EnvironmentPolicy, RequiredCheck, RoleMembers};

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
                required_checks: vec![
                    RequiredCheck::named("ci/build"),
                    RequiredCheck {
                        name: "security-scan".into(),
                        status_creators: vec!["scanner-bot".into()],
                        ..Default::default()
                    },
                ],
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

    fn app() -> CheckSource {
        CheckSource::App {
            slug: "github-actions".into(),
            id: 15368,
        }
    }

    fn scanner() -> CheckSource {
        CheckSource::Status {
            creator: "scanner-bot".into(),
        }
    }

    fn run_of(name: &str, state: CheckState, source: CheckSource, order: u64) -> Check {
        Check {
            name: name.into(),
            state,
            source,
            order,
        }
    }

    fn green() -> Vec<Check> {
        vec![
            run_of("ci/build", CheckState::Success, app(), 10),
            run_of("security-scan", CheckState::Success, scanner(), 11),
        ]
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

    const REQUESTERS: &[String] = &[];

    fn facts<'a>(
        p: &'a ReleasePolicy,
        r: &'a BTreeMap<String, BTreeSet<String>>,
        requesters: &'a [String],
        approvals: &'a [Approval],
        checks: &'a [Check],
    ) -> Facts<'a> {
        Facts {
            environment: "production",
            policy: p,
            head_commit: HEAD,
            built_head: HEAD,
            requesters,
            pushers: &[],
            head_pusher_unknown: false,
            extra_roles: &[],
            approvals,
            roles: r,
            checks,
            qa_coverage: Some(91.3),
            manual_approval_required: false,
            held_by: None,
        }
    }

    fn run(c: Case) -> Decision {
        let p = policy();
        let r = roles();
        let requesters = vec!["dave".to_string()];
        decide(&Facts {
            environment: c.env,
            qa_coverage: c.qa,
            manual_approval_required: c.manual,
            held_by: c.held,
            ..facts(&p, &r, &requesters, &c.approvals, &c.checks)
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
            let requesters = vec!["dave".to_string()];
            let checks = green();
            let facts = facts(&p, &r, &requesters, &a, &checks);
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
        checks.push(run_of("lint", CheckState::Failure, app(), 12));
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
    fn an_environment_the_policy_does_not_name_never_merges_unless_a_default_is_written() {
        let dev = |p: &ReleasePolicy| {
            let r = roles();
            let a = [approval("carol", HEAD), approval("alice", HEAD)];
            decide(&Facts {
                environment: "dev",
                checks: &[],
                ..facts(p, &r, REQUESTERS, &a, &[])
            })
        };
        assert_eq!(dev(&policy()), Decision::Block(vec![Reason::NotInPolicy]));
        let mut p = policy();
        p.environments.insert(
            "default".into(),
            EnvironmentPolicy {
                required_approvals: 3,
                ..Default::default()
            },
        );
        assert_eq!(
            dev(&p),
            Decision::Wait(vec![Reason::NeedsApprovals { have: 2, need: 3 }])
        );
    }

    #[test]
    fn a_head_the_bot_did_not_build_is_not_merged_unless_allowed_and_then_pushers_cannot_approve() {
        let p = policy();
        let r = roles();
        let a = [approval("alice", OLD), approval("bob", OLD)];
        let checks = green();
        let pushers = vec!["alice".to_string()];
        let foreign = Facts {
            head_commit: OLD,
            pushers: &pushers,
            ..facts(&p, &r, REQUESTERS, &a, &checks)
        };
        let Decision::Block(reasons) = decide(&foreign) else {
            panic!("a foreign head blocks")
        };
        assert_eq!(
            reasons[0],
            Reason::ForeignHead {
                built: HEAD.into(),
                head: OLD.into(),
                pushers: pushers.clone()
            }
        );
        let mut allowing = policy();
        allowing
            .environments
            .get_mut("production")
            .unwrap()
            .allow_people_commits = true;
        let allowed = Facts {
            policy: &allowing,
            ..foreign.clone()
        };
        assert_eq!(check_approval(&allowed, &a[0]), Err(Rejection::Pusher));
        assert!(
            matches!(decide(&allowed), Decision::Wait(ref r) if r.contains(&Reason::NeedsRole { role: "qa-lead".into() })),
            "{:?}",
            decide(&allowed)
        );
        let unknown = Facts {
            head_pusher_unknown: true,
            ..allowed.clone()
        };
        assert!(
            matches!(decide(&unknown), Decision::Block(ref r) if r[0] == Reason::UnknownPusher { head: OLD.into() })
        );
    }

    #[test]
    fn checks_count_from_their_source_and_the_newest_run_wins_by_the_forges_order() {
        // A commit status named like the required check, posted by anyone: it does not count.
        let mut checks = green();
        checks[0] = run_of(
            "ci/build",
            CheckState::Success,
            CheckSource::Status {
                creator: "mallory".into(),
            },
            99,
        );
        assert_eq!(
            run(Case {
                checks,
                ..Default::default()
            }),
            Decision::Wait(vec![Reason::CheckWrongSource {
                name: "ci/build".into(),
                from: vec!["a commit status by @mallory".into()],
                wanted: "a check run of a GitHub App or a job of the project's pipeline".into()
            }])
        );
        // A success delivered late (an older run) does not undo a newer failure.
        let mut checks = green();
        checks.push(run_of("ci/build", CheckState::Failure, app(), 20));
        checks.swap(0, 2);
        assert!(matches!(
            run(Case {
                checks,
                ..Default::default()
            }),
            Decision::Block(ref r) if r == &vec![Reason::CheckFailed { name: "ci/build".into() }]
        ));
        // The status of the named creator counts; the same name from an app does not.
        let mut checks = green();
        checks[1] = run_of("security-scan", CheckState::Success, app(), 30);
        assert!(matches!(
            run(Case {
                checks,
                ..Default::default()
            }),
            Decision::Wait(ref r) if matches!(r[0], Reason::CheckWrongSource { .. })
        ));
    }

    #[test]
    fn the_latest_act_of_each_person_wins() {
        let t = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        let act = |user: &str, source: &str, kind, at| ApprovalAct {
            user: user.into(),
            user_is_bot: false,
            source: source.into(),
            kind,
            head: (kind == ActKind::Approve).then(|| HEAD.to_string()),
            at,
        };
        let acts = vec![
            act("alice", "review:1", ActKind::Approve, t(10)),
            act("alice", "comment:2", ActKind::Withdraw, t(20)),
            // recorded later, but given earlier: the withdrawal still stands
            act("alice", "comment:0", ActKind::Approve, t(5)),
            act("bob", "comment:3", ActKind::Withdraw, t(1)),
            act("bob", "comment:4", ActKind::Approve, t(2)),
        ];
        let users: Vec<String> = approvals_in_force(&acts)
            .into_iter()
            .map(|a| a.user)
            .collect();
        assert_eq!(users, vec!["bob".to_string()]);
    }

    #[test]
    fn the_trigger_adds_roles_the_environment_must_see() {
        let p = policy();
        let r = roles();
        let a = [approval("alice", HEAD), approval("bob", HEAD)];
        let checks = green();
        let extra = vec!["platform-admin".to_string()];
        assert_eq!(
            decide(&Facts {
                extra_roles: &extra,
                ..facts(&p, &r, REQUESTERS, &a, &checks)
            }),
            Decision::Wait(vec![Reason::NeedsRole {
                role: "platform-admin".into()
            }])
        );
    }
}
