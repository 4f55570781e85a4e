//! Every text the bot posts for people to read: the status comment, the pull request
//! description, replies to commands, the comment on a trigger it refused. Pure functions of
//! their inputs, snapshot-tested below, so wording changes show up in review.

use crate::commands::Command;
use crate::config::EnvironmentPolicy;
use crate::forge::{COMMENT_LIMIT, fit};
use crate::policy::Reason;
use crate::release::bot::model::Summary;
use crate::release::bot::{PrState, Stage};

/// Marks the bot's status comment, so a lost comment id can be found again.
pub const STATUS_MARKER: &str = "<!-- release-coordinator:status -->";
/// Begins the bot's comment on a trigger commit it could not release.
pub const TRIGGER_MARKER: &str = "<!-- release-coordinator:trigger -->";

pub fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

fn mentions(users: &[String]) -> String {
    users
        .iter()
        .map(|u| format!("@{u}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hidden marker of a one-off note, by which a note whose answer was lost is found again.
pub fn note_marker(key: &str) -> String {
    format!("<!-- release-coordinator:note:{key} -->")
}

/// The one status comment of a release pull request, kept current.
pub fn status_comment(
    version: &str,
    environment: &str,
    policy: Option<&EnvironmentPolicy>,
    status: &str,
) -> String {
    let commands: Vec<String> = Command::ALL
        .iter()
        .map(|c| format!("`{}`", c.usage().0))
        .collect();
    format!(
        "{STATUS_MARKER}\n### {}\n\n{}\n\n{}\n\n<sub>Commands: {}</sub>\n",
        match crate::store::forge_releases::rolled_back_environment(environment) {
            Some(env) => rollback_title(version, env),
            None => format!("Release {version} to {environment}"),
        },
        policy_line(policy),
        status.trim_end(),
        commands.join(", ")
    )
}

/// What the environment's policy asks for, in one line.
pub fn policy_line(env: Option<&EnvironmentPolicy>) -> String {
    let Some(e) = env else {
        return "Policy: this environment is not in the release policy, so nothing can be merged to it.".to_string();
    };
    let mut parts = vec![format!(
        "{} approval{}",
        e.required_approvals,
        if e.required_approvals == 1 { "" } else { "s" }
    )];
    let code = |items: &[String]| {
        items
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !e.required_roles.is_empty() {
        parts.push(format!("roles {}", code(&e.required_roles)));
    }
    if !e.required_checks.is_empty() {
        let checks: Vec<String> = e.required_checks.iter().map(|c| c.name.clone()).collect();
        parts.push(format!("checks {}", code(&checks)));
    }
    if let Some(q) = e.qa_coverage_above {
        parts.push(format!("QA coverage above {q}%"));
    }
    format!("Policy: {}.", parts.join("; "))
}

/// The status while the pull request cannot merge yet.
pub fn waiting_status(reasons: &[Reason], approvers: &[String], head: &str) -> String {
    let mut text = String::from("⏳ Not merged yet:\n");
    for r in reasons {
        text.push_str(&format!("- {r}\n"));
    }
    if !approvers.is_empty() {
        text.push_str(&format!(
            "\nApproved by {} on {}.",
            mentions(approvers),
            short(head)
        ));
    }
    text
}

pub fn merged_status(merge_commit: &str, approvers: &[String]) -> String {
    format!(
        "✅ Merged as {} (approved by {}).",
        short(merge_commit),
        if approvers.is_empty() {
            "policy: no approval required".to_string()
        } else {
            mentions(approvers)
        }
    )
}

/// The status of a pull request found merged without the bot's own merge call answering (its
/// answer was lost, or the bot restarted in between).
pub fn merged_found_status(merge_commit: &str) -> String {
    format!(
        "✅ Merged as {} (the merge was confirmed when the forge was read again).",
        short(merge_commit)
    )
}

pub fn scheduled_status(head: &str) -> String {
    format!(
        "⏳ Approved. The forge will merge {} once its own pipeline succeeds (a newer push cancels that).",
        short(head)
    )
}

pub fn merge_failed_status(error: &str) -> String {
    format!(
        "Merging failed: {error}. I will try again when something changes (or comment `/retry`)."
    )
}

pub fn pr_title(version: &str, environment: &str) -> String {
    format!("Release {version} to {environment}")
}

/// The pull request description: what changes, and the facts behind it.
pub fn pr_body(
    summary: &Summary,
    environment: &str,
    requester: &str,
    app_repo: &str,
    app_commit: &str,
) -> String {
    let mut body = format!(
        "Release **{}** of milestone `{}` to **{environment}**, requested by @{requester} in {app_repo}@{}.\n\n| service | image | tag |\n|---|---|---|\n",
        summary.version,
        summary.milestone_id,
        short(app_commit),
    );
    for c in summary.changes_to(environment) {
        body.push_str(&format!(
            "| {} | `{}` | `{}` → `{}` |\n",
            c.service, c.image, c.from, c.to
        ));
    }
    body.push_str(&format!(
        "\nQA coverage: {} · trace `{}`\n\nThe release documents (notes, metadata, signed manifest) are under `releases/{}/`. Comment `/help` for the commands.\n",
        summary
            .qa_coverage
            .map(|q| format!("{q}%"))
            .unwrap_or_else(|| "not reported".into()),
        summary.trace_id,
        summary.version,
    ));
    body
}

/// The comment on a trigger commit the bot could not release.
/// The rejection of a trigger: the problems kept (see [`Diagnostics::SHOWN`]) out of `total`.
///
/// [`Diagnostics::SHOWN`]: crate::diagnostics::Diagnostics::SHOWN
pub fn trigger_rejection(problems: &[String], total: usize) -> String {
    let n = total.max(problems.len());
    let more = if n > problems.len() {
        format!(" (the first {} are shown)", problems.len())
    } else {
        String::new()
    };
    let head = format!(
        "{TRIGGER_MARKER}\n**Release Coordinator could not start this release**: {n} problem{} found{more}.\n\n```text\n",
        if n == 1 { "" } else { "s" },
    );
    let foot = format!(
        "\n```\n\nFix {} and push again.",
        if n == 1 { "it" } else { "them" }
    );
    // However long the messages (they quote the values found), the comment fits the forge
    // and its code block is closed.
    let room = COMMENT_LIMIT - head.chars().count() - foot.chars().count();
    format!("{head}{}{foot}", fit(&problems.join("\n"), room))
}

pub fn trigger_rejection_status(problems: usize) -> String {
    format!("{problems} problem(s) in the promotion trigger; see the commit comment")
}

pub fn approval_refused(login: &str, why: &str) -> String {
    format!("@{login}, your approval does not count: {why}.")
}

/// A command found in an edited comment: not carried out.
pub fn edited_command(login: &str, command: Command) -> String {
    format!(
        "@{login}, `{}` in an edited comment is not carried out (anyone with write access can edit a comment); write it in a new comment.",
        command.usage().0
    )
}

pub fn approval_withdrawn(login: &str) -> String {
    format!("@{login}, your approval is withdrawn.")
}

/// A command its author may not give on this release.
pub fn command_refused(login: &str, command: Command, who_may: &str) -> String {
    format!(
        "@{login}, `{}` is not yours to give on this release: {who_may}.",
        command.usage().0
    )
}

pub fn nothing_to_retry(version: &str, state: crate::release::state::ReleaseState) -> String {
    format!(
        "Release {version} is {state}: nothing of it goes on, so there is nothing to try again."
    )
}

pub fn cancelled(version: &str, by: &str) -> String {
    format!("Release {version} was cancelled by @{by}.")
}

/// `releases/<version>/rollback-plan.yaml`: what a rollback restores, why, and who asked.
pub fn rollback_plan(
    rel: &crate::store::forge_releases::ForgeRelease,
    r: &crate::store::forge_releases::Rollback,
    merge_commit: &str,
) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Plan<'a> {
        version: &'a str,
        environment: &'a str,
        requested_by: &'a str,
        automatic: bool,
        reason: &'a str,
        requested_at: String,
        release_merge_commit: &'a str,
        restores: &'a serde_json::Value,
    }
    let plan = Plan {
        version: &rel.version_tag,
        environment: &r.environment,
        requested_by: &r.requested_by,
        automatic: r.automatic,
        reason: &r.reason,
        requested_at: r
            .requested_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        release_merge_commit: merge_commit,
        restores: &r.restores,
    };
    format!(
        "# Rollback of release {} in {}, written by Release Coordinator.\n{}",
        rel.version_tag,
        r.environment,
        yaml_serde::to_string(&plan).unwrap_or_default()
    )
}

pub fn rollback_commit_message(version: &str, environment: &str, by: &str, reason: &str) -> String {
    format!(
        "rollback({environment}): {version}\n\nRequested by {by}: {reason}\nSee releases/{version}/rollback-plan.yaml.\n"
    )
}

pub fn rollback_title(version: &str, environment: &str) -> String {
    format!("Roll back {version} in {environment}")
}

pub fn rollback_body(
    summary: &Summary,
    environment: &str,
    by: &str,
    reason: &str,
    automatic: bool,
    own_rule: bool,
) -> String {
    let who = if automatic {
        "the bot, because the deployment failed".to_string()
    } else {
        format!("@{by}")
    };
    let mut body = format!(
        "Rolls back release **{}** in **{environment}**, asked for by {who}.\n\n> {}\n\n| service | tag |\n|---|---|\n",
        summary.version,
        if reason.is_empty() {
            "(no reason given)"
        } else {
            reason
        },
    );
    for c in summary.changes_to(environment) {
        body.push_str(&format!("| {} | `{}` → `{}` |\n", c.service, c.to, c.from));
    }
    body.push_str(&format!(
        "\nThe values files are restored as they were before the release; `releases/{}/rollback-plan.yaml` says what and why. It merges under {} (release-policy.yaml); whoever asked for it does not approve it. Comment `/help` for the commands.\n",
        summary.version,
        rollback_rule(environment, own_rule)
    ));
    fit(&body, COMMENT_LIMIT).into_owned()
}

/// The rule a rollback pull request of `environment` merges under: its own `rollback:` rule
/// when the policy gives one (`own_rule`), else the environment's.
fn rollback_rule(environment: &str, own_rule: bool) -> String {
    if own_rule {
        format!("{environment}'s `rollback:` rule")
    } else {
        format!("{environment}'s own rule (the policy gives it no `rollback:` rule)")
    }
}

pub fn rollback_opened(login: &str, environment: &str, own_rule: bool) -> String {
    format!(
        "@{login}: rolling back {environment}; the rollback pull request opens next and merges under {}.",
        rollback_rule(environment, own_rule)
    )
}

pub fn rollback_already(environment: &str) -> String {
    format!("{environment} of this release is already being rolled back.")
}

pub fn rollback_refused(login: &str, why: &str) -> String {
    format!("@{login}: nothing was rolled back: {why}.")
}

pub fn rollback_abandoned(version: &str, environment: &str, why: &str) -> String {
    format!(
        "Rollback of {version} in {environment} abandoned: {why}. The release is `Failed` as it stands (not cancelled); a holder of a rollback role may comment `/rollback` on the release pull request to ask again."
    )
}

pub fn closed_for_rollback(version: &str) -> String {
    format!("Closed: release {version} is being rolled back, so it goes no further.")
}

pub fn automatic_rollback(version: &str, environment: &str) -> String {
    format!(
        "↩️ The deployment of {version} to {environment} failed, and automatic rollback is on (`rollbackEnabled` in the trigger, or `defaults.autoRollbackOnFailure`): the bot opened a pull request that restores {environment} as it was before the release."
    )
}

pub fn rolled_back(
    version: &str,
    environment: &str,
    number: Option<u64>,
    merge_commit: Option<&str>,
) -> String {
    format!(
        "↩️ Release {version} is rolled back in {environment}{}{}.",
        number.map(|n| format!(" by #{n}")).unwrap_or_default(),
        merge_commit
            .map(|m| format!(" (merged as {})", short(m)))
            .unwrap_or_default()
    )
}

pub fn retrying() -> String {
    "Trying again.".to_string()
}

pub fn command_error(login: &str, error: &str) -> String {
    format!("@{login}: {error}")
}

/// Told to the approvers whose approvals a new head made stale.
pub fn stale_approvals(head: &str, old_head: &str, users: &[String]) -> String {
    format!(
        "New commits were pushed (head is now {}, was {}). The approvals of {} were given on the earlier commit and no longer count: please review and `/approve` again.",
        short(head),
        short(old_head),
        mentions(users)
    )
}

/// An environment waits `soak` after the one before it is done.
pub fn soaking(
    version: &str,
    before: &str,
    soak: &str,
    next: &str,
    until: time::OffsetDateTime,
) -> String {
    let at = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "⏳ {version} soaks in {before} for {soak} (release-policy.yaml: `{next}.soak`); the {next} pull request opens at {at}."
    )
}

/// The status of a merged environment Argo CD is deploying.
pub fn deploying_status(detail: &str) -> String {
    format!("🚀 Merged; Argo CD is deploying it: {detail}.")
}

pub fn deployed_status(applications: &[String]) -> String {
    if applications.is_empty() {
        return "✅ Merged and deployed.".into();
    }
    format!(
        "✅ Deployed: {} synced the release and {} Healthy.",
        applications
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", "),
        if applications.len() == 1 { "is" } else { "are" }
    )
}

pub fn deploy_failed_status(why: &str) -> String {
    format!("❌ Merged, but the deployment failed: {why}.")
}

pub fn deploy_failed(version: &str, environment: &str, why: &str, rolls_back: bool) -> String {
    if rolls_back {
        return format!(
            "❌ Release {version} failed to deploy to {environment}: {why}. Automatic rollback is on: the bot opens a pull request that restores {environment} as it was before the release."
        );
    }
    format!(
        "❌ Release {version} failed to deploy to {environment}: {why}. The deployment repository has the change; fix what Argo CD reports and comment `/retry` here to watch the deployment again, or `/rollback [reason]` to restore {environment} as it was."
    )
}

pub fn failed_after_merge(version: &str, why: &str) -> String {
    format!(
        "❌ Release {version} failed after merging: {why}. The deployment repository has the change; tag the application commit by hand or remove the clashing tag and comment `/retry`."
    )
}

/// The status of a release branch that someone other than the bot pushed to.
pub fn foreign_commits_status(built: &str, head: &str, pushers: &[String]) -> String {
    let who = if pushers.is_empty() {
        "someone other than the bot".to_string()
    } else {
        mentions(pushers)
    };
    format!(
        "⛔ Not merged: the head {} is not the commit the bot built ({}). {who} pushed to the release branch, and this environment's policy does not allow people's commits on a release branch.\n\nTheir commits stay visible in this pull request's history. Comment `/retry` to rebuild the branch from the release (the extra commits are dropped from the branch), or close this pull request and start a new release.",
        short(head),
        short(built),
    )
}

/// Told when the branch is rebuilt by `/retry` after people's commits.
pub fn rebuilt_after_foreign_commits(built: &str, dropped_head: &str) -> String {
    format!(
        "The release branch was rebuilt from the release: its head is {} again (it was {}). Approvals given before count only if given on {}.",
        short(built),
        short(dropped_head),
        short(built)
    )
}

/// The annotated tag's message: the release, and the signed approval record of each merge.
pub fn tag_message(version: &str, records: &str) -> String {
    let mut m = format!("Release {version}\n\nRelease-Coordinator-Version: {version}\n");
    if !records.is_empty() {
        m.push_str(&format!(
            "\nApproval records, signed with the release key (verify: release-coordinator verify --key <public.pem> <this message>):\n\n{records}"
        ));
    }
    m
}

/// The forge release's name: a pre-release says how far the release has gone (GitLab has no
/// pre-release flag, so the name is what shows it there).
pub fn release_name(version: &str, stage: Stage) -> String {
    match stage {
        Stage::RollingOut => format!("Release {version} (rolling out)"),
        Stage::Failed => format!("Release {version} (failed)"),
        Stage::Complete => format!("Release {version}"),
        Stage::RolledBack => format!("Release {version} (rolled back)"),
    }
}

/// Each environment of the release and how it stands, in order, for the forge release.
pub fn rollout(prs: &[crate::store::forge_releases::ReleasePr]) -> Vec<(String, String)> {
    use crate::store::forge_releases::{DeployState, rolled_back_environment};
    let at = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
    };
    let rolled_back = |env: &str| {
        prs.iter().any(|p| {
            rolled_back_environment(&p.environment) == Some(env) && p.state == PrState::Merged
        })
    };
    prs.iter()
        .filter(|p| rolled_back_environment(&p.environment).is_none())
        .map(|p| {
            let outcome = match (p.state, p.deploy) {
                _ if rolled_back(&p.environment) => "rolled back".to_string(),
                (PrState::Merged, None) => format!("merged {}", at(p.deployed_at)),
                (PrState::Merged, Some(DeployState::Deployed)) => {
                    format!("deployed {}", at(p.deployed_at))
                }
                (PrState::Merged, Some(DeployState::Deploying)) => "deploying".to_string(),
                (PrState::Merged, Some(DeployState::Failed)) => "deployment failed".to_string(),
                (PrState::Open | PrState::Scheduled, _) => "awaiting approval".to_string(),
                (PrState::Waiting, _) => "not yet".to_string(),
                (PrState::Closed, _) => "not released".to_string(),
            };
            (p.environment.clone(), outcome.trim_end().to_string())
        })
        .collect()
}

/// The forge release's notes: the rendered release notes, each environment's outcome, then the
/// approval records, and the line that marks the release as the bot's own.
pub fn release_notes(
    notes: &str,
    records: &str,
    rollout: &[(String, String)],
    tag: &str,
) -> String {
    let mut body = notes.trim_end().to_string();
    if !rollout.is_empty() {
        body.push_str("\n\n## Rollout\n\n| environment | outcome |\n|---|---|\n");
        for (env, outcome) in rollout {
            body.push_str(&format!("| {env} | {outcome} |\n"));
        }
    }
    if !records.is_empty() {
        body.push_str(&format!(
            "\n## Approvals\n\nSigned with the release key; save this text and run `release-coordinator verify --key <public.pem> <file>`.\n\n```text\n{records}```\n"
        ));
    }
    body.push_str(&format!("\n{}\n", crate::forge::release_marker(tag)));
    body
}

/// Told when the branch was built again on a base that moved under it.
pub fn rebuilt_on_base(base: &str, was: &str, head: &str, changed: &[String]) -> String {
    let mut text = format!(
        "🔁 The base branch moved (now at {}), so the release branch was built again on it: head {} (was {}). The values edits are the same, the documents were rendered again and the release's history row is at the end of the history.",
        short(base),
        short(head),
        short(was)
    );
    if changed.is_empty() {
        text.push_str(" Every values file comes out the same as approved, so approvals carry over; required checks run again on the new head.");
    } else {
        text.push_str(&format!(
            " The base changed {} as well, so the change is not the one approved: approvals given before no longer count. Please review and `/approve` again.",
            changed
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text
}

/// The timeout ran out before the release was approved.
pub fn approval_timed_out(version: &str, environment: &str, timeout: &str) -> String {
    format!(
        "⌛ Release {version} to {environment} was aborted: it was not approved within its approval timeout of {timeout}. Start a new release to try again."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::bot::model::{EnvironmentChanges, ServiceChange};

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
    const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn production() -> EnvironmentPolicy {
        EnvironmentPolicy {
            required_approvals: 2,
            required_roles: vec!["qa-lead".into(), "product-owner".into()],
            required_checks: vec![
                crate::config::RequiredCheck::named("ci/build"),
                crate::config::RequiredCheck::named("security-scan"),
            ],
            qa_coverage_above: Some(85.0),
            ..Default::default()
        }
    }

    fn summary() -> Summary {
        Summary {
            version: "mvp-v1".into(),
            milestone_id: "mvp-ready".into(),
            trace_id: "trace-42".into(),
            qa_coverage: Some(91.3),
            git_tag: None,
            manual_approval_environments: vec![],
            rollback_enabled: None,
            extra_roles: vec![],
            changes: vec![EnvironmentChanges {
                environment: "production".into(),
                services: vec![ServiceChange {
                    service: "podinfo".into(),
                    image: "ghcr.io/stefanprodan/podinfo".into(),
                    file: "apps/podinfo/values-production.yaml".into(),
                    from: "6.14.1".into(),
                    to: "mvp-v1".into(),
                }],
            }],
            release_notes: String::new(),
        }
    }

    #[test]
    fn status_comments() {
        let reasons = vec![
            Reason::Held { by: "carol".into() },
            Reason::NeedsApprovals { have: 1, need: 2 },
            Reason::NeedsRole {
                role: "product-owner".into(),
            },
            Reason::CheckFailed {
                name: "ci/build".into(),
            },
        ];
        insta::assert_snapshot!(
            "waiting",
            status_comment(
                "mvp-v1",
                "production",
                Some(&production()),
                &waiting_status(&reasons, &["alice".into()], HEAD)
            )
        );
        insta::assert_snapshot!(
            "merged",
            status_comment(
                "mvp-v1",
                "staging",
                Some(&EnvironmentPolicy {
                    required_approvals: 1,
                    ..Default::default()
                }),
                &merged_status(HEAD, &["alice".into(), "bob".into()])
            )
        );
        insta::assert_snapshot!(
            "unnamed_environment",
            status_comment("mvp-v1", "qa", None, &merged_found_status(HEAD))
        );
        insta::assert_snapshot!(
            "foreign_commits",
            foreign_commits_status(OLD, HEAD, &["mallory".into()])
        );
        insta::assert_snapshot!("scheduled", scheduled_status(HEAD));
        insta::assert_snapshot!(
            "merge_failed",
            merge_failed_status("the forge is unavailable: 500")
        );
    }

    #[test]
    fn pull_request_texts() {
        assert_eq!(
            pr_title("mvp-v1", "production"),
            "Release mvp-v1 to production"
        );
        insta::assert_snapshot!(
            "pr_body",
            pr_body(&summary(), "production", "dave", "acme/shop", HEAD)
        );
    }

    #[test]
    fn replies_and_notes() {
        let all = [
            approval_refused("mallory", "you hold no approver role in the release policy"),
            approval_withdrawn("alice"),
            edited_command("carol", Command::Unhold),
            command_refused(
                "mallory",
                Command::Hold,
                "only the requester or a holder of a role of this environment may hold it",
            ),
            cancelled("mvp-v1", "dave"),
            retrying(),
            command_error(
                "alice",
                "`/aprove` is not a command I know; did you mean `/approve`?",
            ),
            stale_approvals(HEAD, OLD, &["alice".into(), "bob".into()]),
            failed_after_merge("mvp-v1", "conflict: tag mvp-v1 exists on another commit"),
            rebuilt_after_foreign_commits(OLD, HEAD),
            approval_timed_out("mvp-v1", "production", "72h"),
            rebuilt_on_base(HEAD, OLD, HEAD, &[]),
            rebuilt_on_base(
                HEAD,
                OLD,
                HEAD,
                &["apps/podinfo/values-production.yaml".into()],
            ),
            note_marker("reply:7:abc"),
        ];
        insta::assert_snapshot!("replies", all.join("\n\n---\n\n"));
    }

    #[test]
    fn trigger_rejections() {
        insta::assert_snapshot!(
            "trigger_rejection",
            trigger_rejection(
                &[
                    "release/promotion-trigger.yaml:3:14: found unexpected end of stream".into(),
                    "release/promotion-trigger.yaml:9:5: environment `qa` is not in the release policy"
                        .into(),
                ],
                2
            )
        );
        assert_eq!(
            trigger_rejection_status(2),
            "2 problem(s) in the promotion trigger; see the commit comment"
        );
        assert!(trigger_rejection(&["x".into()], 1).contains("1 problem found"));
        let many = trigger_rejection(&["x".into(), "y".into()], 9000);
        assert!(
            many.contains("9000 problems found (the first 2 are shown)"),
            "{many}"
        );
        // However long the problems, the comment fits the forge's limit and says so.
        let long = vec!["z".repeat(40_000), "é".repeat(40_000)];
        let text = trigger_rejection(&long, 2);
        assert!(text.chars().count() <= COMMENT_LIMIT, "{}", text.len());
        assert!(
            text.contains(&format!("{}\n```\n\nFix them", crate::forge::TRUNCATED)),
            "{}",
            &text[text.len() - 200..]
        );
    }

    #[test]
    fn tag_message_release_notes_and_help() {
        let block = crate::signing::record_block(&serde_json::json!({
            "kind": "release-coordinator/approval-record/v1",
            "environment": "staging",
            "signature": "c2lnbmF0dXJl",
        }));
        insta::assert_snapshot!("tag_message", tag_message("mvp-v1", &block));
        let rollout = vec![
            (
                "staging".to_string(),
                "deployed 2026-11-30T10:00:00Z".to_string(),
            ),
            ("production".to_string(), "awaiting approval".to_string()),
        ];
        insta::assert_snapshot!(
            "release_notes",
            release_notes(
                "# Release mvp-v1\n\n- BookingFlow\n",
                &block,
                &rollout,
                "mvp-v1"
            )
        );
        assert_eq!(
            tag_message("v1", ""),
            "Release v1\n\nRelease-Coordinator-Version: v1\n"
        );
        assert_eq!(
            release_notes("notes", "", &[], "v1"),
            "notes\n<!-- release-coordinator:release v1 -->\n"
        );
        insta::assert_snapshot!("help", crate::commands::help_text());
    }

    #[test]
    fn the_status_comment_lists_every_command() {
        let body = status_comment("v", "e", None, "");
        for c in Command::ALL {
            assert!(body.contains(&format!("`{}`", c.usage().0)), "{c:?}");
        }
    }
}
