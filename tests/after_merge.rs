//! After the merge: with Argo CD configured, an environment is deployed only when every
//! Application of its services synced a revision containing the merge and is healthy; the
//! next environment waits for that, and a failed sync or lasting bad health fails the release.
//! The fake Argo CD answers beside the fake forge and notifies the bot's real route.

mod common;

use common::*;
use fake_forge::{Flavor, User};

on_both_forges!(
    staging_then_production_follow_argo_cd_and_a_lost_notification_is_made_good,
    a_failed_sync_fails_the_release_and_retry_watches_the_deployment_again,
    argo_cd_down_never_fails_a_deployment_and_a_refused_token_is_said_and_does,
    the_argocd_route_takes_only_its_token_and_its_shape,
    a_chain_cannot_be_skipped_and_the_next_environment_opens_after_its_soak,
    a_role_holder_rolls_back_byte_exactly_and_a_stranger_cannot,
    an_edit_never_rolls_back_and_a_push_to_a_rollback_branch_is_gated,
    a_failed_sync_rolls_back_by_itself_when_the_operator_says_so,
    a_closed_rollback_can_be_asked_again_and_later_environments_come_first,
    a_rollback_that_would_undo_a_later_change_is_refused_and_otherwise_sets_back_only_the_values,
);

const APPS: [&str; 4] = [
    "podinfo-staging",
    "guestbook-staging",
    "podinfo-production",
    "guestbook-production",
];

async fn world_with_argo_cd(forge: Flavor) -> World {
    let w = World::with_config(forge, |c| format!("{c}{ARGOCD_CONFIG}")).await;
    for app in APPS {
        w.fake.argocd_app(app, DEPLOY, "main");
    }
    w
}

/// Staging merged with alice's approval and its checks.
async fn staging_merged(w: &World) {
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{:#?}", w.bot_comments(1));
}

/// Production merged with its checks and two roles (alice, qa-lead; bob, product-owner).
async fn production_merged(w: &World) {
    w.checks_pass(2, &["ci/build", "security-scan"]).await;
    w.comment(2, "alice", "/approve").await;
    w.fake
        .review(DEPLOY, 2, User::human("bob"), "APPROVED")
        .await;
    w.settle().await;
    assert!(w.pull(2).unwrap().merged, "{:#?}", w.bot_comments(2));
}

async fn events(w: &World) -> Vec<String> {
    audit_events(w).await.into_iter().map(|(e, _)| e).collect()
}

async fn staging_then_production_follow_argo_cd_and_a_lost_notification_is_made_good(
    forge: Flavor,
) {
    let w = world_with_argo_cd(forge).await;
    staging_merged(&w).await;

    // Merged, not deployed: production waits, and the pull request says for what.
    assert_eq!(w.release_state().await, "Deploying");
    assert!(w.pull(2).is_none(), "production waits for staging to run");
    let status = w.status_comment(1);
    assert!(status.contains("Argo CD is deploying it"), "{status}");
    assert!(
        status.contains("`podinfo-staging` has not synced the release yet"),
        "{status}"
    );

    // One Application synced and healthy, the other synced and still coming up.
    w.fake
        .argocd_sync("podinfo-staging", "Succeeded", "Healthy")
        .await;
    w.settle().await;
    w.fake
        .argocd_sync("guestbook-staging", "Succeeded", "Progressing")
        .await;
    w.settle().await;
    assert!(w.pull(2).is_none(), "guestbook-staging is not healthy yet");
    let status = w.status_comment(1);
    assert!(
        status.contains("`guestbook-staging` is synced and Progressing"),
        "{status}"
    );

    // It turns healthy, and Argo CD's notification is lost: reconcile reads it anyway.
    w.fake.lock().argocd.lose_notifications = 1;
    w.fake.argocd_health("guestbook-staging", "Healthy").await;
    w.settle().await;
    assert!(w.pull(2).is_none(), "nothing told the bot yet");
    assert_eq!(w.release_state().await, "Deploying");
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    let production = w.pull(2).expect("production opens once staging runs");
    assert_eq!(production.head, "release/mvp-v1/production");
    let status = w.status_comment(1);
    assert!(
        status.contains("Deployed: `guestbook-staging`, `podinfo-staging`"),
        "{status}"
    );

    // Production merges with its two roles, and completes only once it runs; the forge release
    // shows it deploying meanwhile.
    production_merged(&w).await;
    assert_eq!(w.release_state().await, "Deploying");
    let release = w.app_release("mvp-v1").expect("published when staging ran");
    assert!(
        release.body.contains("| staging | deployed 20")
            && release.body.contains("| production | deploying |"),
        "{}",
        release.body
    );
    // Published when staging ran, as a pre-release until production runs.
    let release = w.app_release("mvp-v1").expect("published when staging ran");
    assert_eq!(release.name, "Release mvp-v1 (rolling out)");
    assert!(
        release.body.contains("| staging | deployed 20"),
        "{}",
        release.body
    );
    // A hotfix lands on the base before Argo CD syncs: the revision it syncs is a later one,
    // which contains the merge.
    let hotfix = w
        .push_to_deploy(&[("HOTFIX.md", "hotfix\n")], "frank", "Hotfix")
        .await;
    for app in ["podinfo-production", "guestbook-production"] {
        w.fake.argocd_sync(app, "Succeeded", "Healthy").await;
        w.settle().await;
    }
    assert_eq!(w.release_state().await, "Completed");
    assert_eq!(w.fake.lock().repos[APP].releases.len(), 1);
    assert_eq!(
        w.fake.lock().argocd.apps["podinfo-production"]
            .revision
            .as_deref(),
        Some(hotfix.as_str())
    );

    // `status` shows each environment deployed.
    let overview = w
        .store()
        .await
        .release_overviews(Some("mvp-v1"), 0)
        .await
        .unwrap();
    let deployments: Vec<Option<&str>> = overview[0]
        .environments
        .iter()
        .map(|e| e.deployment.as_deref())
        .collect();
    assert_eq!(deployments, vec![Some("deployed"), Some("deployed")]);

    // On the record: each environment's deployment, staging's before production opened.
    let log = audit_events(&w).await;
    let at = |event: &str, env: &str| {
        log.iter()
            .position(|(e, d)| e == event && d["environment"] == env)
            .unwrap_or_else(|| panic!("{event} for {env} in {log:#?}"))
    };
    assert!(at("ReleaseDeploying", "staging") < at("ReleaseDeployed", "staging"));
    assert!(at("ReleaseDeployed", "staging") < at("ReleaseApprovalRequested", "production"));
    assert!(at("ReleaseMerged", "production") < at("ReleaseDeployed", "production"));
    let completed = log.iter().position(|(e, _)| e == "ReleaseCompleted");
    assert!(
        completed > Some(at("ReleaseDeployed", "production")),
        "{log:#?}"
    );
    let deployed = &log[at("ReleaseDeployed", "production")].1;
    assert_eq!(
        deployed["applications"],
        serde_json::json!(["guestbook-production", "podinfo-production"])
    );
}

async fn a_failed_sync_fails_the_release_and_retry_watches_the_deployment_again(forge: Flavor) {
    let w = world_with_argo_cd(forge).await;
    staging_merged(&w).await;

    // Argo CD fails to sync the merge.
    w.fake
        .argocd_sync("podinfo-staging", "Failed", "Healthy")
        .await;
    w.settle().await;
    assert_eq!(w.release_state().await, "Failed");
    let status = w.status_comment(1);
    assert!(
        status.contains("the deployment failed") && status.contains("podinfo-staging"),
        "{status}"
    );
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("failed to deploy to staging") && c.contains("/retry")),
        "{:#?}",
        w.bot_comments(1)
    );
    assert!(
        w.pull(2).is_none(),
        "production never opens on a failed staging"
    );
    assert!(
        events(&w)
            .await
            .contains(&"ReleaseDeployFailed".to_string())
    );

    // The requester fixes it in Argo CD (the sync succeeds; a notification while the release
    // is failed changes nothing) and asks again: the deployment is watched anew.
    w.fake
        .argocd_sync("podinfo-staging", "Succeeded", "Healthy")
        .await;
    w.fake
        .argocd_sync("guestbook-staging", "Succeeded", "Degraded")
        .await;
    w.settle().await;
    assert_eq!(w.release_state().await, "Failed");
    w.comment(1, "dave", "/retry").await;
    assert_eq!(
        w.release_state().await,
        "Deploying",
        "{:#?}",
        w.bot_comments(1)
    );
    let status = w.status_comment(1);
    assert!(
        status.contains("`guestbook-staging` is Degraded (fails after 5m)"),
        "{status}"
    );
    assert_eq!(w.release_state().await, "Deploying");

    // Degraded for longer than the health timeout: failed, at the next look.
    w.fake.advance(time::Duration::minutes(6));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert_eq!(w.release_state().await, "Failed");
    let status = w.status_comment(1);
    assert!(
        status.contains("`guestbook-staging` is Degraded longer than the health timeout (5m)"),
        "{status}"
    );
    assert!(w.pull(2).is_none());

    // Fixed and asked again, staging runs; production's sync then fails, and the forge release
    // (published when staging ran) says so.
    w.fake.argocd_health("guestbook-staging", "Healthy").await;
    w.comment(1, "dave", "/retry").await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(2).is_some(), "{:#?}", w.bot_comments(1));
    production_merged(&w).await;
    w.fake
        .argocd_sync("podinfo-production", "Failed", "Healthy")
        .await;
    w.settle().await;
    assert_eq!(w.release_state().await, "Failed");
    let release = w.app_release("mvp-v1").expect("published when staging ran");
    assert!(
        release.body.contains("| staging | deployed 20")
            && release.body.contains("| production | deployment failed |"),
        "{}",
        release.body
    );
}

/// Argo CD that cannot be asked (down, failing) says nothing about the deployment: the status
/// comment says it could not be read, and the sync timeout starts again once it answers. A token
/// Argo CD refuses (401) is the operator's to fix, said in the status comment (without the
/// token), and counts against the sync timeout like an Application the account may not read.
async fn argo_cd_down_never_fails_a_deployment_and_a_refused_token_is_said_and_does(forge: Flavor) {
    let w = world_with_argo_cd(forge).await;
    w.fake.fail(fake_forge::Failure {
        method: "GET".into(),
        path_prefix: "/api/v1/applications/".into(),
        status: 503,
        retry_after: None,
        times: usize::MAX,
        carried_out: false,
    });
    staging_merged(&w).await;
    w.fake.advance(time::Duration::minutes(31));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    let status = w.status_comment(1);
    assert_eq!(w.release_state().await, "Deploying", "{status}");
    assert!(status.contains("Argo CD answered 503"), "{status}");

    // Back, with the bot's token no longer valid: said at once; failed once the whole sync
    // timeout has passed since Argo CD answered (the outage did not use it up).
    w.fake.lock().failures.clear();
    w.fake.lock().argocd.token = Some("rotated-token".into());
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert_eq!(w.release_state().await, "Deploying");
    assert!(
        w.status_comment(1)
            .contains("Argo CD refused the bot's token (401)"),
        "{}",
        w.status_comment(1)
    );
    w.fake.advance(time::Duration::minutes(31));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert_eq!(w.release_state().await, "Failed");
    let status = w.status_comment(1);
    assert!(
        status.contains("Argo CD refused the bot's token (401)")
            && status.contains("argocd.tokenEnv")
            && status.contains("sync timeout"),
        "{status}"
    );
    assert!(!status.contains(ARGOCD_TOKEN), "{status}");
}

async fn the_argocd_route_takes_only_its_token_and_its_shape(forge: Flavor) {
    let w = world_with_argo_cd(forge).await;
    let url = format!("http://{}/webhooks/argocd", w.running.addr);
    let client = reqwest::Client::new();
    let body = serde_json::json!({"application": "podinfo-staging", "trigger": "on-deployed"});
    let post = |auth: Option<String>, body: serde_json::Value| {
        let mut req = client.post(&url).json(&body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    let no_auth = post(None, body.clone()).await.unwrap();
    assert_eq!(no_auth.status(), 401);
    let wrong = post(Some("Bearer not-the-token".into()), body.clone())
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(
        !wrong.text().await.unwrap().contains(ARGOCD_HOOK_TOKEN),
        "the token is never echoed"
    );
    let bearer = post(Some(format!("Bearer {ARGOCD_HOOK_TOKEN}")), body.clone())
        .await
        .unwrap();
    assert_eq!(bearer.status(), 202);
    // Argo CD's retry of the same body is a redelivery.
    let again = post(Some(format!("Bearer {ARGOCD_HOOK_TOKEN}")), body.clone())
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    // Basic auth with the token as the password (Argo CD's `basicAuth`).
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("argocd:{ARGOCD_HOOK_TOKEN}"));
    let ok = post(
        Some(format!("Basic {basic}")),
        serde_json::json!({"application": "guestbook-staging"}),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 202);
    let shapeless = post(
        Some(format!("Bearer {ARGOCD_HOOK_TOKEN}")),
        serde_json::json!({"app": "podinfo-staging"}),
    )
    .await
    .unwrap();
    assert_eq!(shapeless.status(), 400);
    let why = shapeless.text().await.unwrap();
    assert!(why.contains("application"), "{why}");
    w.settle().await;
}

async fn a_chain_cannot_be_skipped_and_the_next_environment_opens_after_its_soak(forge: Flavor) {
    let policy = String::from_utf8(manifest("demo/config/release-policy.yaml"))
        .unwrap()
        .replace("after: staging\n", "after: staging\n    soak: 30m\n");
    let w = World::with_policy(forge, &policy).await;

    // Straight to production: refused at the commit, nothing opened.
    let skip = with_trigger(|t| t.replace("  - deploy-to-staging\n", ""));
    let commit = w.push_trigger(&skip).await;
    {
        let st = w.fake.lock();
        assert!(st.repos[DEPLOY].pulls.is_empty(), "nothing was opened");
        let comment = st.repos[APP]
            .commit_comments
            .iter()
            .find(|c| c.sha == commit)
            .expect("a comment on the trigger commit");
        assert!(
            comment.body.contains(
                "release/promotion-trigger.yaml:6:5: `deploy-to-production` skips `staging`"
            ),
            "{}",
            comment.body
        );
    }

    // Through staging: production opens 30 minutes after staging merged, not before.
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{:#?}", w.bot_comments(1));
    assert!(w.pull(2).is_none(), "production soaks first");
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("soaks in staging for 30m")),
        "{:#?}",
        w.bot_comments(1)
    );
    w.fake.advance(time::Duration::minutes(20));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(2).is_none(), "20 minutes are not 30");
    w.fake.advance(time::Duration::minutes(11));
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(2).is_some(), "production opens after the soak");
    let soaks = w
        .bot_comments(1)
        .iter()
        .filter(|c| c.contains("soaks in staging"))
        .count();
    assert_eq!(soaks, 1, "said once");
}

/// The demo's policy, with a rollback rule for staging: platform admins roll back, and one
/// approval by someone else merges the rollback (no checks).
fn rollback_policy() -> String {
    String::from_utf8(manifest("demo/config/release-policy.yaml"))
        .unwrap()
        .replace(
            "    requiredChecks: [ci/build]\n  production:",
            "    requiredChecks: [ci/build]\n    rollbackRoles: [platform-admin]\n    rollback:\n      requiredApprovals: 1\n  production:",
        )
}

/// A rollback is gated as a release is: an old comment edited into `/rollback` (even a role
/// holder's) asks for nothing, and someone's push to the rollback branch keeps it from merging
/// on approvals of what the bot built.
async fn an_edit_never_rolls_back_and_a_push_to_a_rollback_branch_is_gated(forge: Flavor) {
    let w = World::with_policy(forge, &rollback_policy()).await;
    staging_merged(&w).await;
    let old = w.comment(1, "carol", "Watching the dashboards.").await;
    w.fake.edit_comment(DEPLOY, old, "/rollback").await;
    w.settle().await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(3).is_none(), "an edited comment rolled back");

    w.comment(1, "carol", "/rollback the pods crash").await;
    assert!(w.pull(3).is_some(), "{:#?}", w.bot_comments(1));
    w.push_to_release_branch(3, "mallory", "sneaky").await;
    w.settle().await;
    w.comment(3, "alice", "/approve").await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(!w.pull(3).unwrap().merged, "{}", w.status_comment(3));
    assert!(
        w.status_comment(3)
            .contains("@mallory pushed to the release branch"),
        "{}",
        w.status_comment(3)
    );
    assert!(
        !w.deploy_text("main:apps/podinfo/values-staging.yaml")
            .contains("sneaky")
    );

    // `/rollback` on the rollback pull request is answered by what it is; `/cancel` by its
    // requester drops the rollback, and says so, once, in its status comment too.
    w.comment(3, "carol", "/rollback").await;
    w.comment(3, "carol", "/cancel").await;
    let replies = w.bot_comments(3).join("\n");
    assert!(
        replies.contains("this is a rollback pull request; to drop it, comment `/cancel`")
            && replies.contains("Rollback of mvp-v1 in staging abandoned: cancelled with /cancel. The release is `Failed` as it stands (not cancelled)"),
        "{replies}"
    );
    assert_eq!(w.release_state().await, "Failed");
    assert_eq!(
        w.bot_comments(3)
            .iter()
            .filter(|c| c.contains("abandoned: cancelled with /cancel"))
            .count(),
        2,
        "the note and the status comment: {:#?}",
        w.bot_comments(3)
    );
    assert!(
        w.status_comment(3)
            .contains("⏹️ Rollback of mvp-v1 in staging abandoned"),
        "{}",
        w.status_comment(3)
    );
}

async fn a_role_holder_rolls_back_byte_exactly_and_a_stranger_cannot(forge: Flavor) {
    let w = World::with_policy(forge, &rollback_policy()).await;
    let before = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    staging_merged(&w).await;
    assert!(w.pull(2).is_some(), "production is open");

    // Someone without a rollback role: refused, nothing opened.
    w.comment(1, "mallory", "/rollback").await;
    assert!(w.pull(3).is_none());
    let replies = w.bot_comments(1);
    assert!(
        replies.iter().any(|c| c.contains("@mallory")
            && c.contains("only a holder of one of this environment's `rollbackRoles`")),
        "{replies:#?}"
    );
    // The requester of the release has no say either.
    w.comment(1, "dave", "/rollback").await;
    assert!(w.pull(3).is_none());

    // A platform admin: the rollback pull request opens, production goes no further.
    w.comment(1, "carol", "/rollback the new image crashes on start")
        .await;
    let rollback = w.pull(3).expect("the rollback pull request");
    assert_eq!(rollback.title, "Roll back mvp-v1 in staging");
    assert_eq!(rollback.head, "rollback/mvp-v1/staging");
    assert!(
        rollback.body.contains("the new image crashes on start")
            && rollback.body.contains("@carol"),
        "{}",
        rollback.body
    );
    let production = w.pull(2).unwrap();
    assert!(
        !production.open && !production.merged,
        "production was closed"
    );
    assert_eq!(w.release_state().await, "AwaitingApproval");
    let head = w.head(3);
    assert_eq!(
        w.deploy_text(&format!("{head}:apps/podinfo/values-staging.yaml")),
        before,
        "byte for byte as before the release"
    );
    let plan = w.deploy_text(&format!("{head}:releases/mvp-v1/rollback-plan.yaml"));
    for want in [
        "environment: staging",
        "requestedBy: carol",
        "reason: the new image crashes on start",
        "service: podinfo",
        "to: 6.14.1",
    ] {
        assert!(plan.contains(want), "{want} in {plan}");
    }

    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("merges under staging's `rollback:` rule")),
        "{:#?}",
        w.bot_comments(1)
    );
    assert!(
        w.status_comment(2)
            .contains("Closed: release mvp-v1 is being rolled back"),
        "{}",
        w.status_comment(2)
    );

    // Whoever asked does not approve it; someone else does, under the lighter rule.
    w.comment(3, "carol", "/approve").await;
    assert!(!w.pull(3).unwrap().merged);
    assert!(
        w.bot_comments(3).iter().any(|c| c.contains(
            "@carol, your approval does not count: whoever asked for this release (or for this rollback) cannot approve it"
        )),
        "{:#?}",
        w.bot_comments(3)
    );
    w.comment(3, "alice", "/approve").await;
    assert!(w.pull(3).unwrap().merged, "{:#?}", w.bot_comments(3));
    assert_eq!(w.release_state().await, "RolledBack");
    // The forge release (published when staging was done) says so.
    let release = w.app_release("mvp-v1").expect("the forge release");
    assert_eq!(release.name, "Release mvp-v1 (rolled back)");
    assert!(
        release.body.contains("| staging | rolled back |")
            && release.body.contains("| production | not released |"),
        "{}",
        release.body
    );
    assert_eq!(
        w.deploy_text("main:apps/podinfo/values-staging.yaml"),
        before
    );
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("rolled back in staging by #3")),
        "{:#?}",
        w.bot_comments(1)
    );
    let log = events(&w).await;
    for e in ["ReleaseRollbackRequested", "ReleaseRolledBack"] {
        assert!(log.contains(&e.to_string()), "{e} in {log:?}");
    }
    // `status` says which environment runs what it ran before.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_release-coordinator"))
        .args(["status", "mvp-v1", "--config"])
        .arg(w.root.join("config/orchestration-config.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("  staging      merged, rolled back #1"),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Asked again: nothing new. Nothing to try again either.
    w.comment(1, "carol", "/rollback").await;
    assert!(w.pull(4).is_none());
    w.comment(1, "dave", "/retry").await;
    assert!(
        w.bot_comments(1).iter().any(|c| c.contains(
            "Release mvp-v1 is RolledBack: nothing of it goes on, so there is nothing to try again"
        )),
        "{:#?}",
        w.bot_comments(1)
    );
}

async fn a_failed_sync_rolls_back_by_itself_when_the_operator_says_so(forge: Flavor) {
    let w = World::build(forge, false, Some(&rollback_policy()), |c| {
        format!("{c}{ARGOCD_CONFIG}")
            .replace("defaults:\n", "defaults:\n  autoRollbackOnFailure: true\n")
    })
    .await;
    for app in APPS {
        w.fake.argocd_app(app, DEPLOY, "main");
    }
    let before = w.deploy_text("main:apps/guestbook/values-staging.yaml");
    staging_merged(&w).await;
    w.fake
        .argocd_sync("guestbook-staging", "Failed", "Degraded")
        .await;
    w.settle().await;

    // Failed, and the rollback pull request opened by itself, saying so.
    let rollback = w
        .pull(2)
        .expect("the rollback pull request opens by itself");
    assert_eq!(rollback.title, "Roll back mvp-v1 in staging");
    assert!(
        rollback.body.contains("the deployment failed"),
        "{}",
        rollback.body
    );
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("automatic rollback is on")),
        "{:#?}",
        w.bot_comments(1)
    );
    // The failure note says the rollback comes, not to `/retry`.
    let failed = w
        .bot_comments(1)
        .into_iter()
        .find(|c| c.contains("failed to deploy to staging"))
        .expect("the failure note");
    assert!(
        failed.contains("Automatic rollback is on") && !failed.contains("/retry"),
        "{failed}"
    );
    assert_eq!(w.release_state().await, "AwaitingApproval");

    // Approved and merged; rolled back once Argo CD runs the restored values.
    w.comment(2, "alice", "/approve").await;
    assert!(w.pull(2).unwrap().merged, "{:#?}", w.bot_comments(2));
    assert_eq!(w.release_state().await, "Deploying");
    assert_eq!(
        w.deploy_text("main:apps/guestbook/values-staging.yaml"),
        before
    );
    for app in ["podinfo-staging", "guestbook-staging"] {
        w.fake.argocd_sync(app, "Succeeded", "Healthy").await;
        w.settle().await;
    }
    assert_eq!(w.release_state().await, "RolledBack");
    let log = audit_events(&w).await;
    let requested = log
        .iter()
        .find(|(e, _)| e == "ReleaseRollbackRequested")
        .expect("the rollback is on the record");
    assert_eq!(requested.1["automatic"], true);
    assert!(w.pull(3).is_none(), "production never opened");
}

async fn a_closed_rollback_can_be_asked_again_and_later_environments_come_first(forge: Flavor) {
    let w = World::with_policy(forge, &rollback_policy()).await;
    let original = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    staging_merged(&w).await;
    // Production merges too: staging cannot be rolled back under it.
    production_merged(&w).await;
    w.comment(1, "carol", "/rollback").await;
    assert!(w.pull(3).is_none());
    assert!(
        w.bot_comments(1).iter().any(|c| c
            .contains("production merged this release after staging: roll production back first")),
        "{:#?}",
        w.bot_comments(1)
    );
    // Production first (carol holds production's rollback role too).
    w.comment(2, "carol", "/rollback").await;
    let rollback = w.pull(3).expect("production's rollback");
    assert!(
        w.bot_comments(2).iter().any(|c| c.contains(
            "merges under production's own rule (the policy gives it no `rollback:` rule)"
        )),
        "{:#?}",
        w.bot_comments(2)
    );
    assert_eq!(rollback.head, "rollback/mvp-v1/production");

    // The release's requester has no say over the rollback; someone with write access closes
    // it: the rollback is abandoned and the release failed as it stands, not aborted.
    w.comment(3, "dave", "/cancel").await;
    assert!(w.pull(3).unwrap().open, "dave may not cancel it");
    w.fake.close_pull(DEPLOY, 3, "mallory").await;
    w.settle().await;
    assert_eq!(w.release_state().await, "Failed");
    assert!(
        w.bot_comments(3)
            .iter()
            .any(|c| c.contains("Rollback of mvp-v1 in production abandoned")),
        "{:#?}",
        w.bot_comments(3)
    );

    // Asked again: a second attempt.
    w.comment(2, "carol", "/rollback second try").await;
    let again = w.pull(4).expect("a second rollback pull request");
    assert_eq!(again.head, "rollback/mvp-v1/production-2");
    assert_eq!(w.release_state().await, "AwaitingApproval");

    // It merges under production's own rule: the release is rolled back there, and staging,
    // which still runs it, may be rolled back now.
    w.checks_pass(4, &["ci/build", "security-scan"]).await;
    w.comment(4, "alice", "/approve").await;
    w.fake
        .review(DEPLOY, 4, User::human("bob"), "APPROVED")
        .await;
    w.settle().await;
    assert!(w.pull(4).unwrap().merged, "{:#?}", w.bot_comments(4));
    assert_eq!(w.release_state().await, "RolledBack");
    w.comment(1, "carol", "/rollback staging too").await;
    let staging = w.pull(5).expect("staging's rollback");
    assert_eq!(staging.head, "rollback/mvp-v1/staging");
    w.comment(5, "alice", "/approve").await;
    assert!(w.pull(5).unwrap().merged, "{:#?}", w.bot_comments(5));
    assert_eq!(w.release_state().await, "RolledBack");
    assert_eq!(
        w.deploy_text("main:apps/podinfo/values-staging.yaml"),
        original,
        "staging runs what it ran before the release"
    );
    // Both are rolled back: asked again, nothing opens.
    w.comment(1, "carol", "/rollback").await;
    assert!(w.pull(6).is_none());
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("staging is rolled back already")),
        "{:#?}",
        w.bot_comments(1)
    );
}

async fn a_rollback_that_would_undo_a_later_change_is_refused_and_otherwise_sets_back_only_the_values(
    forge: Flavor,
) {
    let w = World::with_policy(forge, &rollback_policy()).await;
    let before = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    staging_merged(&w).await;
    let released = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    // Someone changes the released tag on the base afterwards.
    let values = w
        .deploy_text("main:apps/podinfo/values-staging.yaml")
        .replace("tag: mvp-v1", "tag: hotfix-7");
    w.push_to_deploy(
        &[("apps/podinfo/values-staging.yaml", &values)],
        "frank",
        "Hotfix",
    )
    .await;
    w.comment(1, "carol", "/rollback").await;
    assert!(w.pull(3).is_none(), "nothing opened");
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("is `hotfix-7` now, not `mvp-v1`")),
        "{:#?}",
        w.bot_comments(1)
    );

    // The hotfix is undone, but the file keeps another change: the rollback sets back the
    // values the release wrote, and keeps the rest of the file as it now is.
    let tuned = format!("# tuned by frank\n{released}");
    w.push_to_deploy(
        &[("apps/podinfo/values-staging.yaml", &tuned)],
        "frank",
        "Back to the release, with a comment",
    )
    .await;
    w.comment(1, "carol", "/rollback").await;
    assert!(w.pull(3).is_some(), "{:#?}", w.bot_comments(1));
    let head = w.head(3);
    assert_eq!(
        w.deploy_text(&format!("{head}:apps/podinfo/values-staging.yaml")),
        format!("# tuned by frank\n{before}")
    );
    let plan = w.deploy_text(&format!("{head}:releases/mvp-v1/rollback-plan.yaml"));
    assert!(
        plan.contains("the values only") && plan.contains("path: image.tag"),
        "{plan}"
    );
}
