//! The merge gate, tried as an attacker with write access would, and as an unlucky operator:
//! each scenario is one way around the gate that once ended in a merge the policy forbids (or a
//! release that was stuck or wrongly recorded), run on both forges wherever the forge has the
//! feature. The bot, its webhook server and forge clients are real; the forge is the fake.

mod common;

use common::*;
use fake_forge::{Flavor, User};

on_both_forges!(
    an_edit_never_approves_even_an_approvers_own_comment,
    an_approval_found_late_binds_to_the_head_of_its_time,
    whoever_pushes_to_a_release_branch_cannot_approve_it,
    a_withdrawal_outlives_every_re_read,
    a_late_success_does_not_undo_a_newer_failure,
    a_commit_status_named_like_a_required_check_does_not_count,
    a_repository_releases_only_the_services_it_owns,
    commands_have_owners,
    an_environment_the_policy_does_not_name_cannot_be_targeted,
    a_merge_whose_answer_was_lost_is_recorded_as_made,
    a_release_not_approved_in_time_is_aborted,
    the_trigger_adds_the_roles_it_names,
    a_base_moved_by_a_person_is_built_on_again_and_the_manifest_verifies,
    fifty_releases_in_flight_to_one_environment_all_merge,
    an_edited_comment_gives_no_command,
    a_hold_found_by_re_reading_holds,
    a_push_whose_webhook_was_lost_leaves_its_pusher_unknown,
    a_merge_by_hand_is_signed_as_what_it_was,
    a_merge_reads_memberships_afresh_even_after_reconcile,
    a_tag_or_release_someone_else_made_is_not_adopted,
);

/// The demo's policy, with people's commits allowed on staging (so that what is tested is the
/// approvals, not the refusal of a head the bot did not build).
const ALLOWING: &str = "roles:\n  qa-lead:\n    users: [alice]\n  product-owner:\n    users: [bob]\n    githubTeams: [acme/product]\n    gitlabGroups: [acme/product]\n  platform-admin:\n    users: [carol]\nenvironments:\n  staging:\n    requiredApprovals: 1\n    requiredChecks: [ci/build]\n    allowPeopleCommits: true\n  production:\n    requiredApprovals: 2\n    requiredRoles: [qa-lead, product-owner]\n    requiredChecks: [ci/build, security-scan]\n    qaCoverageAbove: 85\n";

fn replies(w: &World, pr: u64) -> String {
    w.bot_comments(pr).join("\n---\n")
}

async fn an_edit_never_approves_even_an_approvers_own_comment(forge: Flavor) {
    let w = World::with_policy(forge, ALLOWING).await;
    w.push_trigger(&trigger_files()).await;
    let old = w.comment(1, "alice", "Looking at it after CI.").await;
    // Someone with no role pushes a change, then edits the approver's old comment.
    w.push_to_release_branch(1, "mallory", "sneaky").await;
    w.settle().await;
    w.fake.edit_comment(DEPLOY, old, "/approve").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "an edited comment approved: {}",
        w.status_comment(1)
    );
    assert!(
        w.status_comment(1).contains("0 of 1 required approvals"),
        "{}",
        w.status_comment(1)
    );
    assert!(
        replies(&w, 1).contains("`/approve` in an edited comment is not carried out"),
        "{}",
        replies(&w, 1)
    );
    // The approver's own new comment does.
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn an_approval_found_late_binds_to_the_head_of_its_time(forge: Flavor) {
    let w = World::with_policy(forge, ALLOWING).await;
    w.push_trigger(&trigger_files()).await;
    // alice approves the commit the bot built; the webhook is lost.
    w.fake.lock().lose_webhooks = 1;
    w.fake
        .comment(DEPLOY, 1, User::human("alice"), "/approve")
        .await;
    w.settle().await;
    // Then erin pushes a change (people's commits are allowed here), and CI passes on it.
    w.push_to_release_branch(1, "erin", "erins").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    // Reconcile finds the approval: it was given before erin's push, so it is for the old head.
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "an approval of the earlier head merged erin's commit"
    );
    assert!(
        replies(&w, 1).contains("which is no longer the head of this pull request"),
        "{}",
        replies(&w, 1)
    );
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn whoever_pushes_to_a_release_branch_cannot_approve_it(forge: Flavor) {
    // By default a head the bot did not build is never merged, even when an approver pushed
    // it and approves it.
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.push_to_release_branch(1, "alice", "alices").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    w.comment(1, "carol", "/approve").await;
    assert!(!w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    assert!(
        w.status_comment(1)
            .contains("@alice pushed to the release branch"),
        "{}",
        w.status_comment(1)
    );
    let events: Vec<String> = audit_events(&w).await.into_iter().map(|e| e.0).collect();
    assert!(
        events.contains(&"ReleaseBranchForeignCommits".to_string()),
        "{events:?}"
    );

    // Where the operator allows people's commits, the pusher is excluded like the requester.
    let w = World::with_policy(forge, ALLOWING).await;
    w.push_trigger(&trigger_files()).await;
    w.push_to_release_branch(1, "alice", "alices").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    assert!(
        replies(&w, 1).contains("@alice, your approval does not count: you pushed commits"),
        "{}",
        replies(&w, 1)
    );
    w.comment(1, "carol", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn a_withdrawal_outlives_every_re_read(forge: Flavor) {
    let mut w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "carol", "/hold").await;
    // An approving review (GitLab: the Approve button), then the approver takes it back.
    w.fake
        .review(DEPLOY, 1, User::human("alice"), "APPROVED")
        .await;
    w.settle().await;
    w.comment(1, "alice", "/approve cancel").await;
    w.comment(1, "carol", "/unhold").await;
    assert!(!w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    // The forge still lists the review (and GitLab the approval): re-reading must not revive it.
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    w.restart().await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "the withdrawn approval came back: {}",
        w.status_comment(1)
    );
    assert!(w.status_comment(1).contains("0 of 1 required approvals"));
    let events: Vec<String> = audit_events(&w).await.into_iter().map(|e| e.0).collect();
    assert!(
        events.contains(&"ApprovalWithdrawn".to_string()),
        "{events:?}"
    );
}

async fn a_late_success_does_not_undo_a_newer_failure(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    let head = w.head(1);
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("success"))
        .await;
    let success = w.fake.sent().len() - 1;
    w.comment(1, "carol", "/hold").await;
    w.comment(1, "alice", "/approve").await;
    // The check runs again and fails; then the first run's success arrives again, late.
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("failure"))
        .await;
    w.settle().await;
    w.fake.resend(success).await;
    w.settle().await;
    // Already before any merge decision re-reads the forge, the stored state is the failure.
    assert!(
        w.status_comment(1).contains("check `ci/build` failed"),
        "{}",
        w.status_comment(1)
    );
    w.comment(1, "carol", "/unhold").await;
    assert!(
        !w.pull(1).unwrap().merged,
        "merged with CI failed: {}",
        w.status_comment(1)
    );
    assert!(
        w.status_comment(1).contains("check `ci/build` failed"),
        "{}",
        w.status_comment(1)
    );
}

async fn a_commit_status_named_like_a_required_check_does_not_count(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    let head = w.head(1);
    w.fake
        .post_status(DEPLOY, &head, "ci/build", "success", "mallory")
        .await;
    w.settle().await;
    w.comment(1, "alice", "/approve").await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "a status anyone can post satisfied a required check"
    );
    if forge == Flavor::Github {
        // GitHub sends the status: the status comment names where it came from.
        assert!(
            w.status_comment(1)
                .contains("check `ci/build` was reported only by a commit status by @mallory"),
            "{}",
            w.status_comment(1)
        );
    }
    w.checks_pass(1, &["ci/build"]).await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));

    // A check that commit statuses satisfy counts only from the creators the policy names.
    let w = World::with_policy(
        forge,
        "roles:\n  qa-lead:\n    users: [alice]\nenvironments:\n  staging:\n    requiredApprovals: 1\n    requiredChecks:\n      - {name: security-scan, statusCreators: [scanner-bot]}\n  production:\n    requiredApprovals: 1\n",
    )
    .await;
    w.push_trigger(&trigger_files()).await;
    let head = w.head(1);
    w.fake
        .post_status(DEPLOY, &head, "security-scan", "success", "mallory")
        .await;
    w.settle().await;
    w.comment(1, "alice", "/approve").await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(!w.pull(1).unwrap().merged, "mallory's status counted");
    assert!(
        w.status_comment(1).contains(
            "check `security-scan` was reported only by a commit status by @mallory, which does not count"
        ),
        "{}",
        w.status_comment(1)
    );
    w.fake
        .post_status(DEPLOY, &head, "security-scan", "success", "scanner-bot")
        .await;
    w.settle().await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn a_repository_releases_only_the_services_it_owns(forge: Flavor) {
    let w = World::with_config(forge, |c| {
        c.replacen("repositories: [acme/shop]", "repositories: [acme/other]", 2)
            .replacen("repositories: [acme/other]", "repositories: [acme/shop]", 1)
    })
    .await;
    let commit = w.push_trigger(&trigger_files()).await;
    assert!(w.pull(1).is_none(), "nothing was opened");
    let st = w.fake.lock();
    let app = &st.repos[APP];
    assert_eq!(app.commit_comments.len(), 1);
    let body = &app.commit_comments[0].body;
    assert!(
        body.contains("acme/shop may not release `guestbook`"),
        "{body}"
    );
    assert!(app.statuses.iter().any(|s| s.sha == commit));
}

async fn commands_have_owners(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "mallory", "/hold").await;
    w.comment(1, "mallory", "/cancel").await;
    let text = replies(&w, 1);
    assert!(
        text.contains("@mallory, `/hold` is not yours to give on this release"),
        "{text}"
    );
    assert!(
        text.contains("@mallory, `/cancel` is not yours to give on this release"),
        "{text}"
    );
    assert!(!w.status_comment(1).contains("on hold"));
    assert_eq!(w.release_state().await, "AwaitingApproval");
    // A role holder holds; someone else may not lift it (the requester neither); she may.
    w.comment(1, "carol", "/hold").await;
    w.comment(1, "mallory", "/unhold").await;
    w.comment(1, "dave", "/unhold").await;
    // An approval through the forge's button by someone without a role gets the same reply.
    w.fake
        .review(DEPLOY, 1, User::human("mallory"), "APPROVED")
        .await;
    w.settle().await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged, "still held by carol");
    let text = replies(&w, 1);
    assert!(
        text.contains("@dave, `/unhold` is not yours to give on this release"),
        "{text}"
    );
    assert!(
        text.contains("@mallory, your approval does not count: you hold no approver role"),
        "{text}"
    );
    w.comment(1, "carol", "/unhold").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn an_environment_the_policy_does_not_name_cannot_be_targeted(forge: Flavor) {
    let w = World::with_policy(
        forge,
        "roles:\n  qa-lead:\n    users: [alice]\nenvironments:\n  staging:\n    requiredApprovals: 1\n",
    )
    .await;
    w.push_trigger(&trigger_files()).await;
    assert!(w.pull(1).is_none(), "nothing was opened");
    let st = w.fake.lock();
    let body = &st.repos[APP].commit_comments[0].body;
    assert!(
        body.contains(
            "release/promotion-trigger.yaml:7:5: environment `production` is not in the release policy"
        ),
        "{body}"
    );
}

async fn a_merge_whose_answer_was_lost_is_recorded_as_made(forge: Flavor) {
    let w = World::new(forge).await;
    let merge = match forge {
        Flavor::Github => "/repos/acme/deploy/pulls/1/merge",
        Flavor::Gitlab => "/api/v4/projects/acme%2Fdeploy/merge_requests/1/merge",
    };
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.fake.fail(fake_forge::Failure {
        method: "PUT".into(),
        path_prefix: merge.into(),
        status: 502,
        retry_after: None,
        times: 1,
        carried_out: true,
    });
    // The forge's own word of the merge (its webhook) is lost too: the bot learns of the merge
    // only by reading the pull request again.
    w.fake.lock().lose_kinds.push(
        match forge {
            Flavor::Github => "pull_request",
            Flavor::Gitlab => "Merge Request Hook",
        }
        .into(),
    );
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged);
    // The retry found it merged: recorded like a merge the bot made, and production opened.
    let status = w.status_comment(1);
    assert!(status.contains("✅ Merged as"), "{status}");
    assert!(!status.contains("Merging failed"), "{status}");
    assert!(w.pull(2).is_some(), "the next environment opened");
    let merged = audit_events(&w)
        .await
        .into_iter()
        .filter(|e| e.0 == "ReleaseMerged")
        .count();
    assert_eq!(merged, 1, "one merge, recorded once");
}

async fn a_release_not_approved_in_time_is_aborted(forge: Flavor) {
    let w = World::with_policy(
        forge,
        "roles:\n  qa-lead:\n    users: [alice]\nenvironments:\n  staging:\n    requiredApprovals: 1\n    approvalTimeout: 24h\n  production:\n    requiredApprovals: 1\n",
    )
    .await;
    w.push_trigger(&trigger_files()).await;
    w.fake.advance(time::Duration::hours(23));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(1).unwrap().open, "not yet");
    w.fake.advance(time::Duration::hours(2));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    let pull = w.pull(1).unwrap();
    assert!(!pull.open && !pull.merged, "closed without merging");
    assert!(
        replies(&w, 1).contains("was not approved within its approval timeout of 24h"),
        "{}",
        replies(&w, 1)
    );
    assert_eq!(w.release_state().await, "Aborted");
    let aborted: Vec<serde_json::Value> = audit_events(&w)
        .await
        .into_iter()
        .filter(|e| e.0 == "ReleaseAborted")
        .map(|e| e.1)
        .collect();
    assert_eq!(aborted.len(), 1);
    assert!(
        aborted[0]["reason"]
            .as_str()
            .unwrap()
            .contains("approval timeout"),
        "{aborted:?}"
    );
    // A late approval changes nothing.
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged);
}

async fn the_trigger_adds_the_roles_it_names(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&with_trigger(|t| {
        format!("{t}approvalRoles: [platform-admin]\n")
    }))
    .await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged);
    assert!(
        w.status_comment(1)
            .contains("needs an approval from a `platform-admin`"),
        "{}",
        w.status_comment(1)
    );
    w.comment(1, "carol", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));

    // A role the policy does not have is refused at the commit, with its position.
    let w = World::new(forge).await;
    w.push_trigger(&with_trigger(|t| format!("{t}signedBy: the-boss\n")))
        .await;
    assert!(w.pull(1).is_none());
    let st = w.fake.lock();
    let body = &st.repos[APP].commit_comments[0].body;
    assert!(
        body.contains("`the-boss` is not a role of the release policy"),
        "{body}"
    );
}

async fn a_base_moved_by_a_person_is_built_on_again_and_the_manifest_verifies(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&with_trigger(|t| {
        t.replace("  - deploy-to-production\n", "")
    }))
    .await;
    w.checks_pass(1, &["ci/build"]).await;
    let built = w.head(1);
    // Someone changes the same values file on main, elsewhere in it, while the release waits.
    let values = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    w.push_to_deploy(
        &[(
            "apps/podinfo/values-staging.yaml",
            &values.replacen("replicaCount: 1", "replicaCount: 3", 1),
        )],
        "frank",
        "Scale podinfo",
    )
    .await;
    w.comment(1, "alice", "/approve").await;
    // Not merged on the stale base: built again, and the change is not the approved one.
    let pull = w.pull(1).unwrap();
    assert!(!pull.merged, "{}", w.status_comment(1));
    assert_ne!(w.head(1), built, "the branch was built again");
    let text = replies(&w, 1);
    assert!(
        text.contains("The base changed `apps/podinfo/values-staging.yaml` as well"),
        "{text}"
    );
    assert!(
        w.status_comment(1).contains("0 of 1 required approvals"),
        "{}",
        w.status_comment(1)
    );
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    // The merged file has both changes, and the signed manifest speaks of exactly that file.
    let (merged_values, manifest) = {
        let st = w.fake.lock();
        let git = st.repos[DEPLOY].git();
        let read = |path: &str| {
            let blob = git.revparse_single(&format!("main:{path}")).unwrap();
            blob.as_blob().unwrap().content().to_vec()
        };
        (
            read("apps/podinfo/values-staging.yaml"),
            String::from_utf8(read("releases/mvp-v1/signed-release-manifest.yaml")).unwrap(),
        )
    };
    let text = String::from_utf8(merged_values.clone()).unwrap();
    assert!(
        text.contains("replicaCount: 3") && text.contains("tag: mvp-v1"),
        "{text}"
    );
    let key = release_coordinator::signing::load_public_key(
        &w.root.join("config/release-signing.pem.pub"),
    )
    .unwrap();
    release_coordinator::signing::verify_manifest(&manifest, &key).expect("the manifest verifies");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&merged_values))
    };
    assert!(
        manifest.contains(&digest),
        "the manifest names the merged file's digest {digest}:\n{manifest}"
    );
    let history = w.deploy_text("main:releases/release-history.csv");
    assert_eq!(history.matches("mvp-v1,").count(), 1, "{history}");
}

/// Fifty services, each released on its own from the same application repository to the one
/// environment; all fifty pull requests open before any is approved.
async fn fifty_releases_in_flight_to_one_environment_all_merge(forge: Flavor) {
    const N: usize = 50;
    let w = World::with_services(forge, N).await;
    for i in 1..=N {
        w.push_trigger(&service_trigger(i)).await;
    }
    for n in 1..=N as u64 {
        assert!(
            w.pull(n).is_some_and(|p| p.open),
            "pull request {n} is open: {:#?}",
            w.fake.lock().repos[APP].commit_comments
        );
    }
    for n in 1..=N as u64 {
        w.comment(n, "alice", "/approve").await;
    }
    let not_merged: Vec<u64> = (1..=N as u64)
        .filter(|n| !w.pull(*n).unwrap().merged)
        .collect();
    assert!(
        not_merged.is_empty(),
        "not merged: {not_merged:?}; {}",
        w.status_comment(not_merged[0])
    );
    let history = w.deploy_text("main:releases/release-history.csv");
    assert_eq!(
        history.lines().count(),
        N + 1,
        "a header and a row each:\n{history}"
    );
}

async fn an_edited_comment_gives_no_command(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    let hold = w.comment(1, "carol", "/hold").await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged, "held");
    // mallory edits carol's `/hold` into `/unhold`: the edit's webhook names carol.
    w.fake.edit_comment(DEPLOY, hold, "/unhold").await;
    w.settle().await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "an edit lifted the hold: {}",
        w.status_comment(1)
    );
    assert!(
        replies(&w, 1).contains("`/unhold` in an edited comment is not carried out"),
        "{}",
        replies(&w, 1)
    );
    assert!(w.status_comment(1).contains("on hold by @carol"));
}

async fn a_hold_found_by_re_reading_holds(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    // carol's `/hold` webhook is lost; alice approves: the re-read before the merge finds it.
    w.fake.lock().lose_webhooks = 1;
    w.comment(1, "carol", "/hold").await;
    w.comment(1, "alice", "/approve").await;
    assert!(
        !w.pull(1).unwrap().merged,
        "merged past a hold: {}",
        w.status_comment(1)
    );
    assert!(w.status_comment(1).contains("on hold by @carol"));
    // And a reconcile pass keeps it.
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    let store = w.store().await;
    let id = store.find_release("mvp-v1").await.unwrap().unwrap().id;
    assert_eq!(
        store.release_prs(id).await.unwrap()[0].held_by.as_deref(),
        Some("carol")
    );
    w.comment(1, "carol", "/unhold").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn a_push_whose_webhook_was_lost_leaves_its_pusher_unknown(forge: Flavor) {
    let w = World::with_policy(forge, ALLOWING).await;
    w.push_trigger(&trigger_files()).await;
    // alice (an approver) pushes, and both her webhooks are lost; erin pushes on top.
    w.fake.lock().lose_webhooks = 2;
    w.push_to_release_branch(1, "alice", "alices").await;
    w.settle().await;
    w.push_to_release_branch(1, "erin", "erins").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(
        !w.pull(1).unwrap().merged,
        "alice approved her own commit: {}",
        w.status_comment(1)
    );
    assert!(
        w.status_comment(1).contains("is not known"),
        "{}",
        w.status_comment(1)
    );
}

async fn a_merge_by_hand_is_signed_as_what_it_was(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    // mallory merges by hand, unapproved, and the forge's webhook of it is lost.
    w.fake.lock().lose_kinds.push(
        match forge {
            Flavor::Github => "pull_request",
            Flavor::Gitlab => "Merge Request Hook",
        }
        .into(),
    );
    w.fake.merge_by_hand(DEPLOY, 1, "mallory").await;
    w.settle().await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    let store = w.store().await;
    let id = store.find_release("mvp-v1").await.unwrap().unwrap().id;
    let records = store.approval_records(id).await.unwrap();
    assert_eq!(records[0]["merged_by"], "mallory", "{:#}", records[0]);
    assert_eq!(records[0]["policy_met"], false, "{:#}", records[0]);
    assert!(
        records[0]["unmet"][0]
            .as_str()
            .unwrap()
            .contains("0 of 1 required approvals"),
        "{:#}",
        records[0]
    );
    let merged: Vec<serde_json::Value> = audit_events(&w)
        .await
        .into_iter()
        .filter(|e| e.0 == "ReleaseMerged")
        .map(|e| e.1)
        .collect();
    assert_eq!(merged[0]["by_hand"], true, "{merged:?}");
    assert_eq!(merged[0]["policy_met"], false, "{merged:?}");
}

async fn a_merge_reads_memberships_afresh_even_after_reconcile(forge: Flavor) {
    let w = World::new(forge).await;
    w.fake.add_team_member("acme/product", "frank");
    w.push_trigger(&trigger_files()).await;
    w.comment(1, "frank", "/approve").await;
    assert!(!w.pull(1).unwrap().merged, "no checks yet");
    // frank leaves the team; the check's webhook is lost, so a reconcile pass decides.
    w.fake
        .lock()
        .teams
        .get_mut("acme/product")
        .unwrap()
        .remove("frank");
    w.fake.lock().lose_webhooks = 1;
    w.checks_pass(1, &["ci/build"]).await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "merged on a membership read before: {}",
        w.status_comment(1)
    );
}

async fn a_tag_or_release_someone_else_made_is_not_adopted(forge: Flavor) {
    let w = World::new(forge).await;
    let app_commit = w
        .push_trigger(&with_trigger(|t| {
            t.replace("  - deploy-to-production\n", "")
        }))
        .await;
    // mallory tags the application commit with the release's version first.
    {
        let st = w.fake.lock();
        let git = st.repos[APP].git();
        let target = git
            .find_object(git2::Oid::from_str(&app_commit).unwrap(), None)
            .unwrap();
        let sig = git2::Signature::now("mallory", "mallory@example.com").unwrap();
        git.tag("mvp-v1", &target, &sig, "FORGED", false).unwrap();
    }
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged);
    assert_eq!(
        w.release_state().await,
        "Failed",
        "the forged tag was adopted"
    );
    assert!(
        replies(&w, 1).contains("already exists in acme/shop and is not the bot's"),
        "{}",
        replies(&w, 1)
    );
    // Her tag removed, a release she made of the tag is not adopted either.
    {
        let mut st = w.fake.lock();
        let app = st.repo(APP).unwrap();
        app.git()
            .find_reference("refs/tags/mvp-v1")
            .unwrap()
            .delete()
            .unwrap();
        app.releases.push(fake_forge::Release {
            id: 999_999,
            tag: "mvp-v1".into(),
            name: "Release mvp-v1".into(),
            body: "FORGED release notes".into(),
            prerelease: false,
        });
    }
    w.comment(1, "alice", "/retry").await;
    assert_eq!(w.release_state().await, "Failed");
    assert!(
        replies(&w, 1).contains("a release of mvp-v1 that the bot did not make exists"),
        "{}",
        replies(&w, 1)
    );
}

/// GitLab's approvals API dates no approval: one found by re-reading (its webhook lost) does not
/// outrank a later `/approve cancel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_an_undated_approval_does_not_outrank_a_later_withdrawal() {
    let w = World::new(Flavor::Gitlab).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "carol", "/hold").await;
    w.fake.lock().lose_webhooks = 1;
    w.fake
        .review(DEPLOY, 1, User::human("alice"), "APPROVED")
        .await;
    w.settle().await;
    w.comment(1, "alice", "/approve cancel").await;
    w.comment(1, "carol", "/unhold").await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "the withdrawn approval came back: {}",
        w.status_comment(1)
    );
}
