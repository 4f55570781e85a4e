//! The bot end to end on GitHub and on GitLab: the real webhook server, worker and forge
//! clients (octocrab; the `gitlab` crate's AsyncGitlab) against the stateful fake forge
//! (`fake-forge`), whose repositories are real bare git repositories. Each scenario reads as a
//! user story and is written once: `on_both_forges!` runs it against the fake GitHub (signed
//! webhooks in GitHub's shapes) and the fake GitLab (GitLab's hooks and token header). The
//! scenarios only one forge has come after it.

mod common;

use common::*;
use fake_forge::{Flavor, User};

on_both_forges!(
    a_delivery_is_tried_again_only_max_retries_times,
    a_forge_that_stops_answering_holds_a_delivery_only_until_the_job_limit,
    a_release_whose_forge_hangs_holds_up_no_other_release,
    a_busy_release_with_events_queued_takes_no_slot_from_another,
    an_approval_withdrawn_while_waiting_for_the_merge_turn_stops_the_merge,
    a_bot_stopped_right_after_pushing_a_rebuild_knows_the_push_for_its_own,
    a_trigger_becomes_a_published_release_through_approved_pull_requests,
    a_broken_trigger_gets_a_failed_status_and_one_comment_with_positions,
    problems_in_the_operators_files_and_the_charts_are_named_as_their_owners_know_them,
    approvals_from_the_requester_bots_strangers_and_old_commits_do_not_count,
    a_hold_keeps_a_ready_release_until_unhold_and_failed_checks_block_until_rerun,
    deleted_approvals_are_dropped_and_repeated_webhooks_are_not_acted_on_twice,
    forge_errors_are_retried_and_a_lost_webhook_is_made_good_by_reconcile,
    a_restart_in_the_middle_continues_without_duplicates,
    a_release_to_one_environment_costs_at_most_twelve_api_calls,
    an_edited_approval_is_re_read_and_a_hotfix_on_the_base_is_built_on,
    a_clashing_tag_fails_the_release_visibly_and_retry_finishes_it,
    lost_answers_post_nothing_twice_and_a_command_cut_short_is_finished,
);

async fn a_trigger_becomes_a_published_release_through_approved_pull_requests(forge: Flavor) {
    let w = World::new(forge).await;
    let trigger_commit = w.push_trigger(&trigger_files()).await;

    // The staging pull request is open, and says what it waits for.
    let staging = w.pull(1).expect("the staging pull request is open");
    assert_eq!(staging.head, "release/mvp-v1/staging");
    assert_eq!(staging.title, "Release mvp-v1 to staging");
    assert!(
        staging
            .body
            .contains("| podinfo | `ghcr.io/stefanprodan/podinfo` | `6.14.1` → `mvp-v1` |"),
        "{}",
        staging.body
    );
    assert!(
        staging.body.contains("QA coverage: 91.3%"),
        "{}",
        staging.body
    );
    assert!(w.pull(2).is_none(), "production waits for staging");
    let status = w.status_comment(1);
    assert!(status.contains("0 of 1 required approvals"), "{status}");
    assert!(
        status.contains("check `ci/build` has not reported yet"),
        "{status}"
    );
    assert_eq!(w.release_state().await, "AwaitingApproval");

    w.checks_pass(1, &["ci/build"]).await;
    assert!(w.status_comment(1).contains("0 of 1 required approvals"));
    w.comment(1, "alice", "Looks right.\n\n/approve\n").await;

    // Staging merged for real; production opened next.
    let staging = w.pull(1).unwrap();
    assert!(staging.merged, "staging merged: {:#?}", w.bot_comments(1));
    assert!(
        w.status_comment(1).contains("Merged as"),
        "{}",
        w.status_comment(1)
    );
    let main_values = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    assert!(
        main_values.contains("tag: mvp-v1"),
        "the merge changed main"
    );
    let production = w.pull(2).expect("the production pull request is open");
    assert_eq!(production.head, "release/mvp-v1/production");
    // The release follows the rollout: tagged and published as a pre-release once staging is
    // done, its notes saying where it stands.
    {
        let release = w
            .app_release("mvp-v1")
            .expect("published when staging was done");
        assert_eq!(release.name, "Release mvp-v1 (rolling out)");
        assert_eq!(
            release.prerelease,
            forge == Flavor::Github,
            "GitLab has no flag"
        );
        assert!(
            release.body.contains("| staging | merged 20"),
            "{}",
            release.body
        );
        assert!(
            release.body.contains("| production | not yet |"),
            "{}",
            release.body
        );
    }

    // Production: two roles (alice is qa-lead; bob is product-owner through the acme/product team).
    w.checks_pass(2, &["ci/build", "security-scan"]).await;
    w.comment(2, "alice", "/approve").await;
    assert!(!w.pull(2).unwrap().merged);
    assert!(
        w.status_comment(2)
            .contains("needs an approval from a `product-owner`"),
        "{}",
        w.status_comment(2)
    );
    w.fake
        .review(DEPLOY, 2, User::human("bob"), "APPROVED")
        .await;
    w.settle().await;
    assert!(w.pull(2).unwrap().merged, "{:#?}", w.bot_comments(2));

    // The application commit is tagged (annotated) and the release is published with the notes.
    {
        let st = w.fake.lock();
        let app = &st.repos[APP];
        let git = app.git();
        let tag_ref = git
            .find_reference("refs/tags/mvp-v1")
            .expect("the tag exists");
        let tag = tag_ref.peel_to_tag().expect("an annotated tag");
        assert_eq!(tag.target_id().to_string(), trigger_commit);
        let release = app
            .releases
            .iter()
            .find(|r| r.tag == "mvp-v1")
            .expect("a release");
        assert!(release.body.contains("mvp-v1"), "{}", release.body);
        assert_eq!(release.name, "Release mvp-v1");
        assert!(!release.prerelease);
        assert!(
            release.body.contains("| production | merged 20"),
            "{}",
            release.body
        );
        // The merged release branches are deleted from the deployment repository.
        let deploy = st.repos[DEPLOY].git();
        let left: Vec<String> = deploy
            .branches(Some(git2::BranchType::Local))
            .unwrap()
            .filter_map(|b| Some(b.ok()?.0.name().ok()??.to_string()))
            .filter(|name| name.starts_with("release/"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    assert_eq!(w.release_state().await, "Completed");
    approval_records_verify(&w).await;
    let store = w.store().await;
    let id = store.find_release("mvp-v1").await.unwrap().unwrap().id;
    let events: Vec<String> = store
        .audit_log(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in [
        "ReleaseTriggered",
        "ReleaseApprovalRequested",
        "ReleaseMerged",
        "ReleaseCompleted",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }

    // Every call the bot made is an operation of GitHub's description (GitLab publishes none
    // in a form stored here); a 404 is an answer to a look-up, never a failure. Count them.
    let ops = openapi_operations();
    let requests = w.calls();
    for r in &requests {
        if forge == Flavor::Github {
            assert!(
                ops.iter()
                    .any(|(m, p)| *m == r.method && p.is_match(&r.path)),
                "{} {} is not an operation of GitHub's REST description",
                r.method,
                r.path
            );
        }
        assert!(
            r.status < 400 || (r.status == 404 && r.method == "GET"),
            "{} {} answered {}",
            r.method,
            r.path,
            r.status
        );
    }
    let calls: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    eprintln!(
        "{} API calls for a release to two environments on {forge:?}:\n{calls:#?}",
        requests.len()
    );
    // Per environment: open, status comment and its updates, the re-read of the pull
    // request, its comments, reviews and checks right before the merge, the merge; then the
    // release (the tag is pushed with git). GitLab has no conditional requests, reads the
    // pipeline and its jobs, and a group with its subgroups. The release is published when
    // staging is done (a pre-release) and brought up to date at the end: a read and an update.
    let limit = if forge == Flavor::Github { 26 } else { 30 };
    assert!(
        requests.len() <= limit,
        "{} calls: {requests:#?}",
        requests.len()
    );
}

async fn a_forge_that_stops_answering_holds_a_delivery_only_until_the_job_limit(forge: Flavor) {
    let w = World::new(forge).await;
    // The pull request is opened, but the answer never comes: the handling is stopped at the
    // job limit and tried again, which finds the pull request instead of opening another.
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: match forge {
            Flavor::Github => "/repos/acme/deploy/pulls",
            Flavor::Gitlab => "/api/v4/projects/acme%2Fdeploy/merge_requests",
        }
        .into(),
        status: 0,
        retry_after: None,
        times: 1,
        carried_out: true,
    });
    let started = std::time::Instant::now();
    w.push_trigger(&trigger_files()).await;
    assert!(
        started.elapsed() >= common::JOB_LIMIT,
        "the hang was waited out"
    );
    assert_eq!(
        w.fake.lock().repos[DEPLOY].pulls.len(),
        1,
        "staging's, not twice (production waits for staging)"
    );
    // The retry finished what the stopped handling began.
    let status = w.status_comment(1);
    assert!(status.contains("0 of 1 required approvals"), "{status}");
}

/// Releases are handled independently: while the forge never answers the opening of one
/// release's pull request, another release is approved and merges; the first opens once its
/// handling is stopped at the job limit and tried again.
async fn a_release_whose_forge_hangs_holds_up_no_other_release(forge: Flavor) {
    let w = World::with_services(forge, 2).await;
    w.push_trigger(&service_trigger(2)).await;
    assert!(w.pull(1).is_some_and(|p| p.open), "svc-2's pull request");
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: match forge {
            Flavor::Github => "/repos/acme/deploy/pulls",
            Flavor::Gitlab => "/api/v4/projects/acme%2Fdeploy/merge_requests",
        }
        .into(),
        status: 0,
        retry_after: None,
        times: 1,
        carried_out: false,
    });
    let files = service_trigger(1);
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    w.fake
        .push(APP, "main", &files, &[], "dave", "Promote svc-1")
        .await;
    let hanging = || w.fake.lock().failures.iter().all(|f| f.times == 0);
    wait_for("svc-1's pull request is being opened", hanging).await;

    w.fake
        .comment(DEPLOY, 1, User::human("alice"), "/approve")
        .await;
    wait_for("svc-2 merges", || w.pull(1).is_some_and(|p| p.merged)).await;
    // ... while svc-1's trigger is still being handled.
    let store = w.store().await;
    let trigger_still_handled = store
        .pending_deliveries(100)
        .await
        .unwrap()
        .iter()
        .any(|d| matches!(&d.event, Ok(release_coordinator::events::Event::Push(p)) if p.repo.full_name == APP));
    assert!(
        trigger_still_handled && w.pull(2).is_none(),
        "svc-2 merged only after svc-1's handling ended"
    );

    w.settle().await;
    assert!(
        w.pull(2).is_some_and(|p| p.open),
        "tried again after the job limit"
    );
}

/// One release's job hangs on the forge while more of its events wait for its lane: they wait
/// without a job slot, so with two slots another release still gets one and merges.
async fn a_busy_release_with_events_queued_takes_no_slot_from_another(forge: Flavor) {
    let mut w = World::with_services(forge, 2).await;
    w.push_trigger(&service_trigger(1)).await;
    w.push_trigger(&service_trigger(2)).await;
    assert!(w.pull(1).is_some_and(|p| p.open) && w.pull(2).is_some_and(|p| p.open));
    w.jobs = 2;
    w.restart().await;

    // Mallory may not approve: the bot's answer on pull request 1 never gets through.
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: match forge {
            Flavor::Github => "/repos/acme/deploy/issues/1/comments",
            Flavor::Gitlab => "/api/v4/projects/acme%2Fdeploy/merge_requests/1/notes",
        }
        .into(),
        status: 0,
        retry_after: None,
        times: 1,
        carried_out: false,
    });
    w.fake
        .comment(DEPLOY, 1, User::human("mallory"), "/approve")
        .await;
    let hanging = || w.fake.lock().failures.iter().all(|f| f.times == 0);
    wait_for("the answer to mallory hangs", hanging).await;
    // Another event of release 1 (its check, queued apart from its comments) waits for the
    // release's lane; give the worker time to start on it.
    let head = w.head(1);
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("success"))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    w.fake
        .comment(DEPLOY, 2, User::human("alice"), "/approve")
        .await;
    wait_for("svc-2 merges", || w.pull(2).is_some_and(|p| p.merged)).await;
    // ... while the job answering mallory is still in its first attempt.
    let store = w.store().await;
    let pending = store.pending_deliveries(100).await.unwrap();
    let mallory = pending.iter().find(|d| {
        matches!(&d.event, Ok(release_coordinator::events::Event::Comment(c)) if c.author.login == "mallory")
    });
    assert!(
        mallory.is_some_and(|d| d.attempts == 0),
        "svc-2 merged only after release 1's stuck job ended: {pending:#?}"
    );
    w.settle().await;
    assert!(
        !w.pull(1).unwrap().merged,
        "mallory's approval counts for nothing"
    );
}

/// Release 1's merge hangs while it holds the merge turn; release 2, approved meanwhile, waits
/// for the turn; its approval is deleted while it waits. Its turn comes once release 1's job is
/// stopped, and it does not merge: the forge is read afresh under the turn.
async fn an_approval_withdrawn_while_waiting_for_the_merge_turn_stops_the_merge(forge: Flavor) {
    let w = World::with_services(forge, 2).await;
    w.push_trigger(&service_trigger(1)).await;
    w.push_trigger(&service_trigger(2)).await;
    w.fake.fail(fake_forge::Failure {
        method: "PUT".into(),
        path_prefix: match forge {
            Flavor::Github => "/repos/acme/deploy/pulls/1/merge",
            Flavor::Gitlab => "/api/v4/projects/acme%2Fdeploy/merge_requests/1/merge",
        }
        .into(),
        status: 0,
        retry_after: None,
        times: 1,
        carried_out: false,
    });
    w.fake
        .comment(DEPLOY, 1, User::human("alice"), "/approve")
        .await;
    let hanging = || w.fake.lock().failures.iter().all(|f| f.times == 0);
    wait_for("release 1's merge hangs", hanging).await;
    let approval = w
        .fake
        .comment(DEPLOY, 2, User::human("alice"), "/approve")
        .await;
    // Release 2's job reaches the merge turn and waits there.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!w.pull(2).unwrap().merged, "release 1 holds the turn");
    w.fake.delete_comment(DEPLOY, approval).await;

    w.settle().await;
    assert!(
        w.pull(1).unwrap().merged,
        "release 1 merges when tried again"
    );
    assert!(
        !w.pull(2).unwrap().merged,
        "release 2 merged on an approval deleted before its turn came"
    );
    let status = w.status_comment(2);
    assert!(status.contains("0 of 1 required approvals"), "{status}");
}

/// Release 2's branch is rebuilt on the base release 1's merge moved (the same change, so its
/// approval carries over), and the push lands on the remote but never answers: the job is
/// stopped at its time limit between the push and its record (as a crash there would). The
/// bot, trying again, takes the pushed head for its own (no foreign commits, the approval
/// still counts) and merges.
async fn a_bot_stopped_right_after_pushing_a_rebuild_knows_the_push_for_its_own(forge: Flavor) {
    let w = World::with_services(forge, 2).await;
    w.push_trigger(&service_trigger(1)).await;
    w.push_trigger(&service_trigger(2)).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "release 1 merges");
    let built = w.head(2);

    // The deployment repository's hook holds the first push of a rebuilt release branch (a
    // forced update: the branch existed) after the branch moved: the push never answers.
    let marks = w.root.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let hook = w
        .root
        .join(format!("fake/git/{DEPLOY}.git/hooks/post-receive"));
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nm={marks}\nwhile read old new ref; do\n  case \"$ref\" in refs/heads/release/*)\n    if [ \"$old\" != 0000000000000000000000000000000000000000 ] && [ ! -e $m/pushed ]; then\n      touch $m/pushed; sleep 30\n    fi;;\n  esac\ndone\n",
            marks = marks.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    w.fake
        .comment(DEPLOY, 2, User::human("alice"), "/approve")
        .await;
    wait_for("the rebuild is pushed", || marks.join("pushed").exists()).await;
    let rebuilt = w.head(2);
    assert_ne!(rebuilt, built, "the branch was rebuilt on the moved base");
    let store = w.store().await;
    let release = store.find_release("svc-2-v1").await.unwrap().unwrap();
    assert_eq!(
        store.branches(release.id).await.unwrap()[0].commit_id,
        built,
        "the push is not recorded while it has not answered"
    );

    w.settle().await;
    assert!(
        w.pull(2).unwrap().merged,
        "the approval carried over to the rebuilt head: {:#?}",
        w.bot_comments(2)
    );
    let audit = store.audit_entries(Some("svc-2-v1")).await.unwrap();
    let events: Vec<&str> = audit.iter().map(|(_, a)| a.event.as_str()).collect();
    assert!(
        !events.contains(&"ReleaseBranchForeignCommits"),
        "its own push taken for a stranger's: {events:?}"
    );
    let rebuilds: Vec<_> = audit
        .iter()
        .filter(|(_, a)| a.event == "ReleaseRebuilt")
        .collect();
    assert_eq!(rebuilds.len(), 1, "one rebuild: {events:?}");
    assert_eq!(rebuilds[0].1.detail["head"], rebuilt.as_str());
    assert_eq!(rebuilds[0].1.detail["same_change"], true);
}

/// Polls `done` (the bot works in the background) for at most 30 s.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn a_broken_trigger_gets_a_failed_status_and_one_comment_with_positions(forge: Flavor) {
    let w = World::new(forge).await;
    let files = with_trigger(|t| t.replace("version_tag: mvp-v1", "version_tag: \"mvp-v1"));
    // The comment is made but its answer is lost: the retry finds it and does not comment again.
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: match forge {
            Flavor::Github => "/repos/acme/shop/commits/",
            Flavor::Gitlab => "/api/v4/projects/acme%2Fshop/repository/commits/",
        }
        .into(),
        status: 502,
        retry_after: None,
        times: 1,
        carried_out: true,
    });
    let commit = w.push_trigger(&files).await;
    assert_eq!(
        w.fake.requests().iter().filter(|r| r.status == 502).count(),
        1
    );
    // Pushed again (GitHub's stream repeats events): still one comment.
    w.fake
        .push(
            APP,
            "main",
            &[("README.md", b"# shop\n\nunrelated\n")],
            &[],
            "dave",
            "Docs",
        )
        .await;
    w.settle().await;
    let st = w.fake.lock();
    let app = &st.repos[APP];
    assert!(st.repos[DEPLOY].pulls.is_empty(), "nothing was opened");
    let status = app
        .statuses
        .iter()
        .find(|s| s.sha == commit)
        .expect("a commit status");
    let failed = match forge {
        Flavor::Github => "failure",
        Flavor::Gitlab => "failed",
    };
    assert_eq!(
        (status.context.as_str(), status.state.as_str()),
        ("release-coordinator", failed)
    );
    assert_eq!(
        app.commit_comments.len(),
        1,
        "one comment on the trigger commit"
    );
    let body = &app.commit_comments[0].body;
    assert!(body.contains("release/promotion-trigger.yaml:3:"), "{body}");
    assert!(body.contains("1 problem found"), "{body}");
}

/// A refusal that comes from the operator's files or the deployment repository's charts names
/// them as their owners know them: the configuration file by its name (not the bot's own path
/// to it, nor as if it were beside the trigger), a values file by its path in the deployment
/// repository.
async fn problems_in_the_operators_files_and_the_charts_are_named_as_their_owners_know_them(
    forge: Flavor,
) {
    let bad_tag: fn(String) -> String = |c| {
        c.replace(
            "gb-frontend\n    tagPath: image.tag\n",
            "gb-frontend\n    tagPath: image.tag\n    imageTag: \"{{ version }}+build\"\n",
        )
    };
    let bad_path: fn(String) -> String =
        |c| c.replacen("tagPath: image.tag\n", "tagPath: image.tagg\n", 1);
    for (edit, expected) in [
        (
            bad_tag,
            "\norchestration-config.yaml:18:15: `mvp-v1+build` is not a valid image tag",
        ),
        (
            bad_path,
            "\napps/podinfo/values-staging.yaml:9:1: no key `tagg` under `image`",
        ),
    ] {
        let w = World::with_config(forge, edit).await;
        let commit = w.push_trigger(&trigger_files()).await;
        let st = w.fake.lock();
        let body = &st.repos[APP]
            .commit_comments
            .iter()
            .find(|c| c.sha == commit)
            .expect("a comment on the trigger commit")
            .body;
        assert!(body.contains(expected), "{expected} not in {body}");
        assert!(!body.contains(&w.root.display().to_string()), "{body}");
        assert!(
            !body.contains("release/orchestration-config.yaml"),
            "{body}"
        );
    }
}

async fn approvals_from_the_requester_bots_strangers_and_old_commits_do_not_count(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.comment(1, "dave", "/approve").await;
    w.comment(1, "mallory", "/approve").await;
    w.fake
        .comment(
            DEPLOY,
            1,
            User {
                login: "dependabot[bot]".into(),
                is_bot: true,
            },
            "/approve",
        )
        .await;
    w.settle().await;
    let replies = w.bot_comments(1).join("\n---\n");
    assert!(
        replies.contains(
            "@dave, your approval does not count: whoever asked for this release (or for this rollback) cannot approve it."
        ),
        "{replies}"
    );
    assert!(
        replies.contains("@mallory, your approval does not count: you hold no approver role"),
        "{replies}"
    );
    assert!(
        replies.contains(
            "@dependabot[bot], your approval does not count: bot accounts cannot approve releases."
        ),
        "{replies}"
    );
    // The audit log says the same: each approval is on record, with why it does not count.
    let audit = w.store().await.audit_entries(Some("mvp-v1")).await.unwrap();
    let recorded = |who: &str| {
        audit
            .iter()
            .find(|(_, a)| a.event == "ApprovalRecorded" && a.actor == who)
            .map(|(_, a)| a.detail.clone())
            .unwrap_or_else(|| panic!("{who}'s approval is on record: {audit:#?}"))
    };
    for (who, why) in [
        (
            "dave",
            "whoever asked for this release (or for this rollback) cannot approve it",
        ),
        ("mallory", "you hold no approver role"),
    ] {
        let detail = recorded(who);
        assert_eq!(detail["counts"], false, "{detail}");
        assert!(
            detail["refused"].as_str().is_some_and(|r| r.contains(why)),
            "{detail}"
        );
    }

    // alice approves; then someone pushes to the release branch: her approval is for the old head.
    w.comment(1, "alice", "/approve").await;
    let audit = w.store().await.audit_entries(Some("mvp-v1")).await.unwrap();
    assert!(
        audit.iter().any(|(_, a)| a.event == "ApprovalRecorded"
            && a.actor == "alice"
            && a.detail["counts"] == true),
        "{audit:#?}"
    );
    let old_head = w.head(1);
    w.push_to_release_branch(1, "mallory", "sneaky").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    assert!(
        !w.pull(1).unwrap().merged,
        "the stale approval does not merge"
    );
    let replies = w.bot_comments(1).join("\n---\n");
    assert!(
        replies.contains(&format!(
            "was {}). The approvals of @alice were given on the earlier commit",
            &old_head[..12]
        )),
        "{replies}"
    );
    // A head the bot did not build is not merged, whoever approves it, and the status says
    // who pushed and how to go on.
    let status = w.status_comment(1);
    assert!(
        status.contains("is not the commit the bot built")
            && status.contains("@mallory pushed to the release branch")
            && status.contains("`/retry`"),
        "{status}"
    );
    w.comment(1, "alice", "/approve").await;
    assert!(
        !w.pull(1).unwrap().merged,
        "an approval of someone else's commit does not merge it"
    );
    // `/retry` puts the branch back on the commit the bot built; the approval of the other
    // head does not carry over, a new one merges the release without mallory's change.
    w.comment(1, "mallory", "/retry").await;
    assert_ne!(w.head(1), old_head, "mallory holds no role: no /retry");
    assert!(
        w.bot_comments(1)
            .join("\n")
            .contains("@mallory, `/retry` is not yours to give on this release"),
        "{:#?}",
        w.bot_comments(1)
    );
    w.comment(1, "alice", "/retry").await;
    assert_eq!(w.head(1), old_head, "rebuilt on the bot's commit");
    w.checks_pass(1, &["ci/build"]).await;
    assert!(!w.pull(1).unwrap().merged, "approved another head");
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    let main_values = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    assert!(!main_values.contains("sneaky"), "{main_values}");
    assert!(main_values.contains("tag: mvp-v1"));
}

async fn a_hold_keeps_a_ready_release_until_unhold_and_failed_checks_block_until_rerun(
    forge: Flavor,
) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    let head = w.head(1);
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("failure"))
        .await;
    w.comment(1, "carol", "/hold").await;
    w.comment(1, "alice", "/approve").await;
    let status = w.status_comment(1);
    assert!(status.contains("check `ci/build` failed"), "{status}");
    assert!(status.contains("on hold by @carol"), "{status}");
    w.checks_pass(1, &["ci/build"]).await;
    assert!(!w.pull(1).unwrap().merged, "held");
    assert!(w.status_comment(1).contains("on hold by @carol"));
    w.comment(1, "carol", "/unhold").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
}

async fn deleted_approvals_are_dropped_and_repeated_webhooks_are_not_acted_on_twice(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    let help = w.comment(1, "alice", "/help").await;
    w.fake.repeat_comment_webhook(DEPLOY, help).await;
    w.settle().await;
    let helps = w
        .bot_comments(1)
        .iter()
        .filter(|c| c.contains("Commands I understand"))
        .count();
    assert_eq!(
        helps, 1,
        "one reply to one comment, however often it is delivered"
    );

    let approve = w.comment(1, "alice", "/approve").await;
    w.fake.delete_comment(DEPLOY, approve).await;
    w.settle().await;
    if forge == Flavor::Gitlab {
        // GitLab sends no webhook for a deleted note: the reconcile pass finds it gone.
        w.bot.reconcile().await.unwrap();
    }
    w.checks_pass(1, &["ci/build"]).await;
    assert!(
        !w.pull(1).unwrap().merged,
        "the deleted approval does not count"
    );
    w.comment(1, "alice", "/aprove").await;
    assert!(
        w.bot_comments(1)
            .iter()
            .any(|c| c.contains("`/aprove` is not a command I know; did you mean `/approve`?"))
    );
}

async fn forge_errors_are_retried_and_a_lost_webhook_is_made_good_by_reconcile(forge: Flavor) {
    let w = World::new(forge).await;
    // The forge answers 500 when the bot opens the pull request, twice: neither client repeats
    // a request by itself; the worker tries the delivery again after a pause, twice, and the
    // second retry succeeds.
    let (open_path, merge_path, failures) = match forge {
        Flavor::Github => (
            "/repos/acme/deploy/pulls",
            "/repos/acme/deploy/pulls/1/merge",
            2,
        ),
        Flavor::Gitlab => (
            "/api/v4/projects/acme%2Fdeploy/merge_requests",
            "/api/v4/projects/acme%2Fdeploy/merge_requests/1/merge",
            2,
        ),
    };
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: open_path.into(),
        status: 500,
        retry_after: None,
        times: failures,
        carried_out: false,
    });
    w.push_trigger(&trigger_files()).await;
    let failed = w.fake.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(
        failed, failures,
        "each failure is one request: no client retries"
    );
    assert!(w.pull(1).is_some(), "the worker's retry opened it");
    assert!(w.pull(2).is_none(), "once");

    w.checks_pass(1, &["ci/build"]).await;
    // The approval's webhook is lost; the release waits until the next reconcile reads it.
    w.fake.lock().lose_webhooks = 1;
    w.fake
        .comment(DEPLOY, 1, User::human("alice"), "/approve")
        .await;
    w.settle().await;
    assert!(!w.pull(1).unwrap().merged);
    // A rate limit on the merge (GitHub: 403, GitLab: 429, both with Retry-After): the release
    // stays, the status says why.
    w.fake.fail(fake_forge::Failure {
        method: "PUT".into(),
        path_prefix: merge_path.into(),
        status: if forge == Flavor::Github { 403 } else { 429 },
        retry_after: Some(30),
        times: 1,
        carried_out: false,
    });
    let _ = w.bot.reconcile().await;
    w.settle().await;
    assert!(!w.pull(1).unwrap().merged);
    assert!(
        w.status_comment(1)
            .contains("rate limited by the forge; retry after 30s"),
        "{}",
        w.status_comment(1)
    );
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(1).unwrap().merged);
}

async fn a_delivery_is_tried_again_only_max_retries_times(forge: Flavor) {
    let w = World::with_config(forge, |c| c.replace("maxRetries: 4", "maxRetries: 1")).await;
    let open_path = match forge {
        Flavor::Github => "/repos/acme/deploy/pulls",
        Flavor::Gitlab => "/api/v4/projects/acme%2Fdeploy/merge_requests",
    };
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: open_path.into(),
        status: 500,
        retry_after: None,
        times: 3,
        carried_out: false,
    });
    w.push_trigger(&trigger_files()).await;
    // Once, and once again: then it is left to reconcile.
    let failed = w.fake.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(failed, 2, "one try and maxRetries (1) more");
    assert!(w.pull(1).is_none());
    let _ = w.bot.reconcile().await; // the third failure
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    assert!(w.pull(1).is_some(), "reconcile goes on with it");
}

/// The forge carries out a request and the answer is lost (a gateway timeout, a reset
/// connection), or a command fails half-way: the step is tried again and nothing is done twice
/// or left undone.
async fn lost_answers_post_nothing_twice_and_a_command_cut_short_is_finished(forge: Flavor) {
    let w = World::new(forge).await;
    let (pulls, notes_of, members) = match forge {
        Flavor::Github => (
            "/repos/acme/deploy/pulls".to_string(),
            "/repos/acme/deploy/issues/{n}/comments",
            "/orgs/acme/teams/product/members",
        ),
        Flavor::Gitlab => (
            "/api/v4/projects/acme%2Fdeploy/merge_requests".to_string(),
            "/api/v4/projects/acme%2Fdeploy/merge_requests/{n}/notes",
            "/api/v4/groups/acme%2Fproduct/members/all",
        ),
    };
    let notes_of = |n: u64| notes_of.replace("{n}", &n.to_string());
    let lost_answer = |method: &str, path: String| fake_forge::Failure {
        method: method.into(),
        path_prefix: path,
        status: 502,
        retry_after: None,
        times: 1,
        carried_out: true,
    };
    // The pull request is opened and the status comment posted, both answers lost.
    w.fake.fail(lost_answer("POST", pulls));
    w.fake.fail(lost_answer("POST", notes_of(1)));
    w.push_trigger(&trigger_files()).await;
    assert!(w.pull(1).is_some());
    assert!(
        w.pull(2).is_none(),
        "one pull request, found again, not opened twice"
    );
    let status = w.status_comment(1); // exactly one
    assert!(status.contains("Release mvp-v1 to staging"), "{status}");
    let lost = w.fake.requests().iter().filter(|r| r.status == 502).count();
    assert_eq!(lost, 2, "both answers were lost");

    // A reply to a command, its answer lost: one reply.
    w.fake.fail(lost_answer("POST", notes_of(1)));
    w.comment(1, "mallory", "/approve").await;
    let replies: Vec<String> = w
        .bot_comments(1)
        .into_iter()
        .filter(|c| c.contains("@mallory, your approval does not count"))
        .collect();
    assert_eq!(replies.len(), 1, "{replies:#?}");

    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));

    // Production: alice's `/approve` is cut short by a failed read of the product team's
    // members (production needs a product owner, and erin is one through the team only); the
    // worker tries the comment again and her approval counts (it was not marked done before
    // it was done).
    w.fake.add_team_member("acme/product", "erin");
    w.checks_pass(2, &["ci/build", "security-scan"]).await;
    // Past the few minutes a team's members are reused for (they were read for staging).
    w.fake.advance(time::Duration::minutes(6));
    w.fake.fail(fake_forge::Failure {
        method: "GET".into(),
        path_prefix: members.into(),
        status: 500,
        retry_after: None,
        times: 1,
        carried_out: false,
    });
    w.comment(2, "alice", "/approve").await;
    w.comment(2, "erin", "/approve").await;
    let failed: Vec<_> = w
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.status == 500)
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the membership read failed once: {failed:?}"
    );
    assert!(w.pull(2).unwrap().merged, "{}", w.status_comment(2));
    assert_eq!(w.release_state().await, "Completed");
}

async fn a_restart_in_the_middle_continues_without_duplicates(forge: Flavor) {
    let mut w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.restart().await;
    w.bot.reconcile().await.unwrap();
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged);
    assert!(w.pull(2).is_some(), "production opened after the restart");
    assert!(w.pull(3).is_none(), "no pull request twice");
    let _ = w.status_comment(1); // exactly one status comment
}

async fn a_release_to_one_environment_costs_at_most_twelve_api_calls(forge: Flavor) {
    let w = World::new(forge).await;
    // erin holds her role through a team (a GitLab group); mallory holds none.
    w.fake.add_team_member("acme/product", "erin");
    w.push_trigger(&with_trigger(|t| {
        t.replace("  - deploy-to-production\n", "")
    }))
    .await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "mallory", "/approve").await;
    w.comment(1, "erin", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    assert!(
        w.bot_comments(1)
            .join("\n")
            .contains("@mallory, your approval does not count"),
        "{:#?}",
        w.bot_comments(1)
    );
    assert!(w.pull(2).is_none());
    assert_eq!(w.release_state().await, "Completed");
    // What counts against the rate limit: every call but a 304 (a conditional read of
    // something unchanged, which GitHub does not count).
    let calls: Vec<_> = w.calls().into_iter().filter(|c| c.status != 304).collect();
    eprintln!(
        "{} API calls for a release to one environment on {forge:?}: {:#?}",
        calls.len(),
        calls
            .iter()
            .map(|c| format!("{} {} {}", c.method, c.path, c.status))
            .collect::<Vec<_>>()
    );
    // GitLab has no conditional requests: its groups are read afresh before the merge.
    let limit = if forge == Flavor::Github { 12 } else { 17 };
    assert!(calls.len() <= limit, "{} calls: {calls:#?}", calls.len());
}

async fn an_edited_approval_is_re_read_and_a_hotfix_on_the_base_is_built_on(forge: Flavor) {
    let w = World::new(forge).await;
    w.push_trigger(&trigger_files()).await;
    let approve = w.comment(1, "alice", "/approve").await;
    w.fake.edit_comment(DEPLOY, approve, "Wait, not yet.").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    assert!(!w.pull(1).unwrap().merged, "the approval was edited away");

    // Someone changes the same line on main by hand (a hotfix): the release is built again
    // on it, and since it now replaces the hotfix, the earlier approval does not carry over.
    let values = String::from_utf8(manifest(PODINFO))
        .unwrap()
        .replace("  tag: 6.14.1", "  tag: 6.15.0-hotfix");
    w.push_to_deploy(
        &[("apps/podinfo/values-staging.yaml", &values)],
        "carol",
        "Hotfix by hand",
    )
    .await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged);
    let replies = w.bot_comments(1).join("\n");
    assert!(
        replies.contains("The base changed `apps/podinfo/values-staging.yaml` as well"),
        "{replies}"
    );
    let body = w.deploy_text("release/mvp-v1/staging:apps/podinfo/values-staging.yaml");
    assert!(body.contains("tag: mvp-v1"), "{body}");
    assert_eq!(w.release_state().await, "AwaitingApproval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_the_bot_uses_installation_tokens() {
    let w = World::new_with(Flavor::Github, true).await;
    w.push_trigger(&with_trigger(|t| {
        t.replace("  - deploy-to-production\n", "")
    }))
    .await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged);
    assert_eq!(w.release_state().await, "Completed");
    let calls = w.fake.requests();
    // The installation was found from the deployment repository, one token was minted (and
    // reused), and every other call carried it: the fake refuses anything else with a 401.
    assert_eq!(calls[0].path, "/repos/acme/deploy/installation");
    let minted = calls
        .iter()
        .filter(|c| c.path == "/app/installations/77/access_tokens")
        .count();
    assert_eq!(minted, 1, "{calls:#?}");
    assert!(calls.iter().all(|c| c.status != 401), "{calls:#?}");
}

async fn a_clashing_tag_fails_the_release_visibly_and_retry_finishes_it(forge: Flavor) {
    let w = World::new(forge).await;
    let trigger = w
        .push_trigger(&with_trigger(|t| {
            t.replace("  - deploy-to-production\n", "")
        }))
        .await;
    // Someone tags another commit with the release's version before the release finishes.
    let other = w
        .fake
        .push(
            APP,
            "main",
            &[("README.md", b"# shop\n\nv2\n")],
            &[],
            "dave",
            "Docs",
        )
        .await;
    {
        let st = w.fake.lock();
        let git = st.repos[APP].git();
        let oid = git2::Oid::from_str(&other).unwrap();
        git.reference("refs/tags/mvp-v1", oid, false, "by hand")
            .unwrap();
    }
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged);
    assert_eq!(w.release_state().await, "Failed");
    let replies = w.bot_comments(1).join("\n");
    assert!(
        replies.contains(
            "Release mvp-v1 failed after merging: the tag mvp-v1 already exists in acme/shop and is not the bot's"
        ),
        "{replies}"
    );

    // The stray tag is removed; /retry finishes the release on the trigger commit.
    w.fake.lock().repos[APP]
        .git()
        .find_reference("refs/tags/mvp-v1")
        .unwrap()
        .delete()
        .unwrap();
    w.comment(1, "alice", "/retry").await;
    assert_eq!(w.release_state().await, "Completed");
    let git = w.fake.lock().repos[APP].git();
    let tag = git
        .find_reference("refs/tags/mvp-v1")
        .unwrap()
        .peel_to_tag()
        .unwrap();
    assert_eq!(tag.target_id().to_string(), trigger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_rereads_with_conditional_requests() {
    let w = World::new(Flavor::Github).await;
    w.push_trigger(&trigger_files()).await;
    w.bot.reconcile().await.unwrap();
    let before = w.fake.requests().len();
    // Nothing changed: every read is answered 304 (free of GitHub's rate limit), nothing written.
    w.bot.reconcile().await.unwrap();
    let again = w.fake.requests()[before..].to_vec();
    assert!(again.len() >= 3, "{again:#?}");
    assert!(
        again.iter().all(|r| r.method == "GET" && r.status == 304),
        "{again:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_serves_file_contents_from_git_in_githubs_shape() {
    use base64::Engine;
    let w = World::new(Flavor::Github).await;
    let resp: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/repos/{DEPLOY}/contents/apps/podinfo/values-staging.yaml?ref=main",
            w.fake.api_url()
        ))
        .header("Authorization", "token t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let example: serde_json::Value = serde_json::from_slice(&manifest(
        "fixtures/github/api-examples/content-file-response-if-content-is-a-file.json",
    ))
    .unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&resp), keys(&example), "the shape of GitHub's example");
    let b64: String = resp["content"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes, manifest(PODINFO));
}

// --- GitLab only ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_approve_button_counts_as_approve_and_revoking_takes_it_back() {
    let w = World::new(Flavor::Gitlab).await;
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    // alice presses "Approve": that is her `/approve`.
    w.fake
        .review(DEPLOY, 1, User::human("alice"), "APPROVED")
        .await;
    w.settle().await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));

    // Production: alice and bob press the button; bob revokes before the checks are in. GitLab
    // counts alice's approval, the policy also wants a product owner: the policy wins and the
    // note says why.
    w.fake
        .review(DEPLOY, 2, User::human("alice"), "APPROVED")
        .await;
    w.fake
        .review(DEPLOY, 2, User::human("bob"), "APPROVED")
        .await;
    w.fake.unapprove(DEPLOY, 2, "bob").await;
    w.settle().await;
    w.checks_pass(2, &["ci/build", "security-scan"]).await;
    assert!(!w.pull(2).unwrap().merged);
    let status = w.status_comment(2);
    assert!(
        status.contains("needs an approval from a `product-owner`"),
        "{status}"
    );
    // alice revokes too, and that webhook is lost: reconcile reads GitLab's list and drops it.
    w.fake.lock().lose_webhooks = 1;
    w.fake.unapprove(DEPLOY, 2, "alice").await;
    w.bot.reconcile().await.unwrap();
    w.settle().await;
    let status = w.status_comment(2);
    assert!(status.contains("0 of 2 required approvals"), "{status}");

    w.fake
        .review(DEPLOY, 2, User::human("alice"), "APPROVED")
        .await;
    w.fake
        .review(DEPLOY, 2, User::human("bob"), "APPROVED")
        .await;
    w.settle().await;
    assert!(w.pull(2).unwrap().merged, "{}", w.status_comment(2));
    assert_eq!(w.release_state().await, "Completed");
    let st = w.fake.lock();
    let release = st.repos[APP]
        .releases
        .iter()
        .find(|r| r.tag == "mvp-v1")
        .expect("a GitLab release");
    assert!(release.body.contains("mvp-v1"), "{}", release.body);
    let git = st.repos[APP].git();
    let tag = git
        .find_reference("refs/tags/mvp-v1")
        .unwrap()
        .peel_to_tag()
        .expect("an annotated tag");
    assert!(
        tag.message()
            .unwrap()
            .unwrap_or_default()
            .contains("Release mvp-v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_a_failed_pipeline_that_is_retried_lets_the_release_through() {
    let w = World::new(Flavor::Gitlab).await;
    w.push_trigger(&trigger_files()).await;
    let head = w.head(1);
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("failure"))
        .await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged);
    assert!(
        w.status_comment(1).contains("check `ci/build` failed"),
        "{}",
        w.status_comment(1)
    );
    // "Retry": the failed job runs again in the same pipeline.
    w.fake.retry_pipeline(DEPLOY, &head).await;
    w.settle().await;
    assert!(
        w.status_comment(1)
            .contains("check `ci/build` is still running"),
        "{}",
        w.status_comment(1)
    );
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("success"))
        .await;
    w.settle().await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    assert_eq!(
        w.fake.lock().repos[DEPLOY].pipelines.len(),
        1,
        "one pipeline, retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_members_of_subgroups_and_parent_groups_hold_the_groups_role() {
    let w = World::new(Flavor::Gitlab).await;
    // product-owner is the group acme/product (bob is a direct member, from World::new).
    w.fake.add_team_member("acme/product/mobile", "erin"); // a subgroup
    w.fake.add_team_member("acme", "frank"); // the parent: inherited membership
    w.fake.add_team_member("other/product", "mallory"); // a group of the same name elsewhere
    w.push_trigger(&trigger_files()).await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "mallory", "/approve").await;
    assert!(!w.pull(1).unwrap().merged, "mallory holds no role");
    w.comment(1, "frank", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));

    w.checks_pass(2, &["ci/build", "security-scan"]).await;
    w.comment(2, "alice", "/approve").await;
    w.fake
        .review(DEPLOY, 2, User::human("erin"), "APPROVED")
        .await;
    w.settle().await;
    assert!(w.pull(2).unwrap().merged, "{}", w.status_comment(2));
    let merging = audit_events(&w)
        .await
        .into_iter()
        .filter(|(e, _)| e == "ReleaseMerging")
        .map(|(_, d)| {
            let mut who: Vec<String> = serde_json::from_value(d["approvers"].clone()).unwrap();
            who.sort();
            who.join(",")
        })
        .collect::<Vec<_>>();
    assert_eq!(merging, ["frank", "alice,erin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_a_merge_request_merged_by_hand_moves_the_release_on() {
    let w = World::new(Flavor::Gitlab).await;
    w.push_trigger(&trigger_files()).await;
    w.fake.merge_by_hand(DEPLOY, 1, "carol").await;
    w.settle().await;
    assert!(
        w.pull(2).is_some(),
        "production opened after the hand merge"
    );
    let by_hand: Vec<serde_json::Value> = audit_events(&w)
        .await
        .into_iter()
        .filter(|(e, _)| e == "ReleaseMerged")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(by_hand.len(), 1);
    assert_eq!(by_hand[0]["by_hand"], true);
    assert_eq!(by_hand[0]["environment"], "staging");

    w.checks_pass(2, &["ci/build", "security-scan"]).await;
    w.comment(2, "alice", "/approve").await;
    w.comment(2, "bob", "/approve").await;
    assert!(w.pull(2).unwrap().merged);
    assert_eq!(w.release_state().await, "Completed");
}

/// A staging-only release on a GitLab project with "Pipelines must succeed", approved while the
/// policy's check has passed but a job the policy does not name (`e2e`) is still running: GitLab
/// refuses to merge, so the bot asks it to merge when the pipeline succeeds. Returns the head.
async fn staging_release_approved_while_gitlab_pipeline_runs() -> (World, String) {
    let w = World::new(Flavor::Gitlab).await;
    w.fake
        .lock()
        .repos
        .get_mut(DEPLOY)
        .unwrap()
        .pipeline_must_succeed = true;
    w.push_trigger(&with_trigger(|t| {
        t.replace("  - deploy-to-production\n", "")
    }))
    .await;
    let head = w.head(1);
    w.fake
        .check_run(DEPLOY, &head, "ci/build", Some("success"))
        .await;
    w.fake.check_run(DEPLOY, &head, "e2e", None).await;
    w.comment(1, "alice", "/approve").await;
    (w, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_pipelines_must_succeed_so_the_bot_schedules_the_merge_and_a_hold_takes_it_back() {
    let (w, head) = staging_release_approved_while_gitlab_pipeline_runs().await;
    let pull = w.pull(1).unwrap();
    assert!(!pull.merged && pull.auto_merge, "scheduled, not merged");
    assert!(
        w.status_comment(1)
            .contains("once its own pipeline succeeds"),
        "{}",
        w.status_comment(1)
    );
    // A hold takes the scheduled merge back: the policy wins over GitLab's own merge.
    w.comment(1, "carol", "/hold").await;
    assert!(
        !w.pull(1).unwrap().auto_merge,
        "the scheduled merge was cancelled"
    );
    w.fake
        .check_run(DEPLOY, &head, "e2e", Some("success"))
        .await;
    w.settle().await;
    assert!(!w.pull(1).unwrap().merged, "held");
    // Released; the pipeline is green by now, so the bot merges at once.
    w.comment(1, "carol", "/unhold").await;
    assert!(w.pull(1).unwrap().merged, "{}", w.status_comment(1));
    assert_eq!(w.release_state().await, "Completed");
    let merged: Vec<serde_json::Value> = audit_events(&w)
        .await
        .into_iter()
        .filter(|(e, _)| e == "ReleaseMerged")
        .map(|(_, d)| d)
        .collect();
    assert!(merged[0]["merge_commit"].is_string(), "{merged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_merges_a_scheduled_release_itself_and_the_bot_does_not_race_it() {
    let (w, head) = staging_release_approved_while_gitlab_pipeline_runs().await;
    assert!(w.pull(1).unwrap().auto_merge);
    let merges_before = w
        .calls()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/merge"))
        .count();
    w.fake
        .check_run(DEPLOY, &head, "e2e", Some("success"))
        .await;
    w.settle().await;
    assert!(w.pull(1).unwrap().merged);
    assert_eq!(w.release_state().await, "Completed");
    let merges_after = w
        .calls()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/merge"))
        .count();
    assert_eq!(
        merges_before, merges_after,
        "the bot left the merge to GitLab"
    );
    let merged: Vec<serde_json::Value> = audit_events(&w)
        .await
        .into_iter()
        .filter(|(e, _)| e == "ReleaseMerged")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0]["by_hand"], false, "{merged:?}");
}

/// The annotated tag of a finished release carries a signed approval record per environment,
/// which verifies with the tool and with the README's recipe as written, and stops verifying
/// when changed; the forge release's notes carry the same records.
async fn approval_records_verify(w: &World) {
    use release_coordinator::signing;
    let (message, notes) = {
        let st = w.fake.lock();
        let app = &st.repos[APP];
        let git = app.git();
        let tag = git
            .find_reference("refs/tags/mvp-v1")
            .unwrap()
            .peel_to_tag()
            .unwrap();
        let release = app.releases.iter().find(|r| r.tag == "mvp-v1").unwrap();
        (
            String::from_utf8_lossy(tag.message_bytes().unwrap()).to_string(),
            release.body.clone(),
        )
    };
    let key_file = w.root.join("config/release-signing.pem.pub");
    let key = signing::load_public_key(&key_file).unwrap();
    // The tag was made when staging was done: it carries staging's record. The forge release's
    // notes carry every environment's, as the rollout went on.
    let records = signing::record_blocks(&notes);
    assert_eq!(records.len(), 2, "one record per environment:\n{notes}");
    assert_eq!(
        signing::record_blocks(&message),
        records[..1].to_vec(),
        "{message}"
    );
    for (record, (env, approvers)) in records.iter().zip([
        ("staging", vec!["alice"]),
        ("production", vec!["alice", "bob"]),
    ]) {
        signing::verify_manifest(record, &key).expect("the record verifies");
        let r: serde_json::Value = serde_json::from_str(record).unwrap();
        assert_eq!(r["environment"], env);
        assert_eq!(r["release"], "mvp-v1");
        let who: Vec<&str> = r["approvers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["user"].as_str().unwrap())
            .collect();
        assert_eq!(who, approvers, "{r:#}");
        assert!(
            r["approvers"][0]["roles"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "qa-lead")
        );
        assert_eq!(r["checks"][0]["name"], "ci/build");
        assert_eq!(r["checks"][0]["conclusion"], "success");
        assert_eq!(r["policy_sha256"].as_str().unwrap().len(), 64);
    }
    // The tool, on the tag as `git cat-file tag` shows it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tag.txt"), &message).unwrap();
    std::fs::write(dir.path().join("notes.txt"), &notes).unwrap();
    std::fs::copy(&key_file, dir.path().join("release-signing.pem.pub")).unwrap();
    let bin = env!("CARGO_BIN_EXE_release-coordinator");
    let verify = |file: &str| {
        std::process::Command::new(bin)
            .current_dir(dir.path())
            .args(["verify", "--key", "release-signing.pem.pub", file])
            .output()
            .unwrap()
    };
    for (file, records) in [("tag.txt", 1), ("notes.txt", 2)] {
        let out = verify(file);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.matches("valid signature").count(),
            records,
            "{file}: {stdout}"
        );
    }
    // The README's recipe without the tool, as written there.
    let readme = String::from_utf8(manifest("README.md")).unwrap();
    let recipe = readme
        .split("Without this tool (every value in a record")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("\n```").next())
        .expect("the README has the recipe");
    let out = std::process::Command::new("bash")
        .current_dir(dir.path())
        .args(["-euo", "pipefail", "-c", recipe])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("Signature Verified Successfully").count(),
        1,
        "the tag's record: {stdout}"
    );
    // A record someone changed does not verify.
    std::fs::write(
        dir.path().join("forged.txt"),
        message.replacen("\"user\":\"alice\"", "\"user\":\"mallory\"", 1),
    )
    .unwrap();
    let out = verify("forged.txt");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID"));
}
