//! The bot on GitHub, end to end: the real webhook server, worker and octocrab client against
//! the stateful fake GitHub (`fake-forge`), whose repositories are real bare git repositories.
//! Each test reads as a user story; the fake sends signed webhooks in GitHub's payload shapes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_forge::{FakeGithub, User};
use release_coordinator::config::OperatorConfig;
use release_coordinator::forge::github::client::{GithubAuth, GithubForge};
use release_coordinator::release::lifecycle::Bot;
use release_coordinator::server::{self, Running, ServiceConfig};
use release_coordinator::store::Store;
use secrecy::SecretString;

const SECRET: &str = "scenario-webhook-secret";
const DEPLOY: &str = "acme/deploy";
const APP: &str = "acme/shop";
const BOT: &str = "release-coordinator[bot]";
const PODINFO: &str =
    "fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml";
const GUESTBOOK: &str =
    "fixtures/deploy-repos/values/argoproj__argocd-example-apps/helm-guestbook/values.yaml";

fn manifest(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fake: FakeGithub,
    bot: Arc<Bot>,
    running: Running,
    store_url: String,
}

impl World {
    async fn new() -> World {
        World::new_with(false).await
    }

    /// With `app`, the bot authenticates as a GitHub App (JWT, installation tokens) instead of
    /// with a token.
    async fn new_with(app: bool) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let fake = FakeGithub::start(&root.join("fake")).await;
        let (podinfo, guestbook) = (manifest(PODINFO), manifest(GUESTBOOK));
        fake.create_repo(
            DEPLOY,
            "main",
            &[
                ("apps/podinfo/values-staging.yaml", &podinfo),
                ("apps/podinfo/values-production.yaml", &podinfo),
                ("apps/guestbook/values-staging.yaml", &guestbook),
                ("apps/guestbook/values-production.yaml", &guestbook),
            ],
        );
        fake.create_repo(APP, "main", &[("README.md", b"# shop\n")]);
        fake.add_team_member("acme/product", "bob");

        let config_dir = root.join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        for f in [
            "release-policy.yaml",
            "version-resolver.yaml",
            "milestones.yaml",
        ] {
            std::fs::write(config_dir.join(f), manifest(&format!("demo/config/{f}"))).unwrap();
        }
        let store_url = format!("sqlite://{}/store.db", root.display());
        let config = format!(
            "deployment:\n  repo: {clone}/{DEPLOY}.git\n  baseBranch: main\n  cacheDir: ../cache\n\
             signing:\n  keyFile: release-signing.pem\n\
             services:\n\
             \x20 - name: podinfo\n    image: ghcr.io/stefanprodan/podinfo\n    tagPath: image.tag\n    values:\n      staging: apps/podinfo/values-staging.yaml\n      production: apps/podinfo/values-production.yaml\n\
             \x20 - name: guestbook\n    image: gcr.io/google-samples/gb-frontend\n    tagPath: image.tag\n    values:\n      staging: apps/guestbook/values-staging.yaml\n      production: apps/guestbook/values-production.yaml\n\
             defaults:\n  store: {store_url}\n\
             forges:\n  github:\n    webhookSecretEnv: [UNUSED_IN_PROCESS]\n    {auth}\n    apiUrl: {api}\n    cloneUrlBase: {clone}\n    deploymentRepo: {DEPLOY}\n    triggerPath: release/promotion-trigger.yaml\n",
            clone = fake.clone_base(),
            api = fake.api_url(),
            auth = if app {
                "appId: 4242\n    privateKeyFile: github-app.pem"
            } else {
                "tokenEnv: SCENARIO_GITHUB_TOKEN"
            },
        );
        if app {
            // A key as GitHub hands it out (PKCS#1 PEM), made with openssl.
            let key = config_dir.join("github-app.pem");
            let ok = std::process::Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(&key)
                .arg("2048")
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "openssl makes an RSA key");
            let public = std::process::Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .output()
                .unwrap();
            assert!(public.status.success());
            fake.register_app(4242, &String::from_utf8(public.stdout).unwrap(), 77);
        }
        std::fs::write(config_dir.join("orchestration-config.yaml"), config).unwrap();
        release_coordinator::signing::keygen(&config_dir.join("release-signing.pem")).unwrap();

        let (bot, running) = start_bot(&root, &fake, &store_url).await;
        World {
            _tmp: tmp,
            root,
            fake,
            bot,
            running,
            store_url,
        }
    }

    /// Stops the bot at once (as a crash would) and starts a new one on the same store.
    async fn restart(&mut self) {
        self.running.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (bot, running) = start_bot(&self.root, &self.fake, &self.store_url).await;
        self.bot = bot;
        self.running = running;
    }

    async fn store(&self) -> Store {
        Store::open(&self.store_url).await.unwrap()
    }

    /// Waits until every stored delivery is processed (webhooks caused by processing are
    /// stored before the processing ends, so this is quiescence).
    async fn settle(&self) {
        let store = self.store().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut idle = 0;
        while idle < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bot did not settle"
            );
            tokio::time::sleep(Duration::from_millis(15)).await;
            let (_, waiting) = store.delivery_counts().await.unwrap();
            idle = if waiting == 0 { idle + 1 } else { 0 };
        }
    }

    async fn push_trigger(&self, files: &[(&str, Vec<u8>)]) -> String {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
        let sha = self
            .fake
            .push(APP, "main", &files, &[], "dave", "Promote mvp-ready")
            .await;
        self.settle().await;
        sha
    }

    async fn comment(&self, pr: u64, who: &str, body: &str) -> u64 {
        let id = self.fake.comment(DEPLOY, pr, User::human(who), body).await;
        self.settle().await;
        id
    }

    async fn checks_pass(&self, pr: u64, names: &[&str]) {
        let head = self.head(pr);
        for n in names {
            self.fake.check_run(DEPLOY, &head, n, Some("success")).await;
        }
        self.settle().await;
    }

    fn head(&self, pr: u64) -> String {
        let st = self.fake.lock();
        let repo = &st.repos[DEPLOY];
        repo.branch_tip(&repo.pull(pr).expect("the pull request exists").head)
            .unwrap()
    }

    fn pull(&self, number: u64) -> Option<fake_forge::Pull> {
        self.fake.lock().repos[DEPLOY].pull(number).cloned()
    }

    /// The bot's comments on a pull request, in order.
    fn bot_comments(&self, number: u64) -> Vec<String> {
        self.fake.lock().repos[DEPLOY]
            .comments
            .iter()
            .filter(|c| c.number == number && c.user.login == BOT)
            .map(|c| c.body.clone())
            .collect()
    }

    fn status_comment(&self, number: u64) -> String {
        let comments = self.bot_comments(number);
        let status: Vec<&String> = comments
            .iter()
            .filter(|c| c.starts_with("<!-- release-coordinator:status -->"))
            .collect();
        assert_eq!(
            status.len(),
            1,
            "one status comment, kept up to date: {comments:#?}"
        );
        status[0].clone()
    }

    async fn release_state(&self) -> String {
        self.store()
            .await
            .find_release("mvp-v1")
            .await
            .unwrap()
            .map(|r| r.state)
            .unwrap_or_default()
    }
}

async fn start_bot(root: &Path, fake: &FakeGithub, store_url: &str) -> (Arc<Bot>, Running) {
    let config = OperatorConfig::load(&root.join("config/orchestration-config.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let settings = config.orchestration.forges.github.clone().unwrap();
    let store = Store::open(store_url).await.unwrap();
    let auth = match settings.app_id {
        Some(_) => GithubAuth::from_config(&config, &settings).unwrap(),
        None => GithubAuth::Token(SecretString::from("test-token")),
    };
    let forge = GithubForge::connect(&fake.api_url(), &fake.clone_base(), auth, BOT)
        .await
        .unwrap();
    let bot = Arc::new(Bot::new(config, settings, store, Arc::new(forge)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::start(
        bot.clone(),
        ServiceConfig {
            github_webhook_secrets: Some(vec![SecretString::from(SECRET)]),
            gitlab_webhook_tokens: None,
            max_body_bytes: server::DEFAULT_MAX_BODY_BYTES,
        },
        listener,
        release_coordinator::worker::Pacing {
            reconcile_every: Duration::from_secs(3600),
            retry_base: Duration::from_millis(100),
        },
    );
    fake.set_webhook(&format!("http://{}/webhooks/github", running.addr), SECRET);
    (bot, running)
}

/// The demo's trigger files, under `release/` of the application repository.
fn trigger_files() -> Vec<(&'static str, Vec<u8>)> {
    [
        "promotion-trigger.yaml",
        "milestone-status.json",
        "qa-validation-report.md",
        "sprint-trace-matrix.json",
        "approval-context.json",
    ]
    .into_iter()
    .map(|f| {
        let path: &'static str = Box::leak(format!("release/{f}").into_boxed_str());
        (path, manifest(&format!("demo/app/{f}")))
    })
    .collect()
}

/// GitHub's operations the fake's request log must stay within.
fn openapi_operations() -> Vec<(String, regex_lite::Regex)> {
    let spec: serde_json::Value =
        serde_json::from_slice(&manifest("fixtures/github/openapi-subset.json")).unwrap();
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let pattern = regex_lite::Regex::new(&format!(
                "^{}$",
                regex_lite::Regex::new(r"\\\{[a-z_]+\\\}")
                    .unwrap()
                    .replace_all(&regex_lite::escape(path), "[^/]+(/[^/]+)*")
            ))
            .unwrap();
            ops.push((method.to_uppercase(), pattern));
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_becomes_a_published_release_through_approved_pull_requests() {
    let w = World::new().await;
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
    let main_values = {
        let st = w.fake.lock();
        let git = st.repos[DEPLOY].git();
        let main = git
            .revparse_single("main:apps/podinfo/values-staging.yaml")
            .unwrap();
        String::from_utf8(main.as_blob().unwrap().content().to_vec()).unwrap()
    };
    assert!(
        main_values.contains("tag: mvp-v1"),
        "the merge changed main"
    );
    let production = w.pull(2).expect("the production pull request is open");
    assert_eq!(production.head, "release/mvp-v1/production");

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
    }
    assert_eq!(w.release_state().await, "Completed");
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

    // Every call the bot made is an operation of GitHub's description; count them.
    let ops = openapi_operations();
    let requests = w.fake.requests();
    for r in &requests {
        assert!(
            ops.iter()
                .any(|(m, p)| *m == r.method && p.is_match(&r.path)),
            "{} {} is not an operation of GitHub's REST description",
            r.method,
            r.path
        );
        // A 404 is an answer to a look-up (not a team member, no such tag yet), never a failure.
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
        "{} API calls for a release to two environments:\n{calls:#?}",
        requests.len()
    );
    // Per environment: open, status comment, its updates, merge; then tag (2) and release (1).
    assert!(
        requests.len() <= 16,
        "{} calls: {requests:#?}",
        requests.len()
    );
}

fn with_trigger(edit: impl Fn(String) -> String) -> Vec<(&'static str, Vec<u8>)> {
    trigger_files()
        .into_iter()
        .map(|(p, c)| {
            if p.ends_with("promotion-trigger.yaml") {
                (p, edit(String::from_utf8(c).unwrap()).into_bytes())
            } else {
                (p, c)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_trigger_gets_a_failed_status_and_one_comment_with_positions() {
    let w = World::new().await;
    let files = with_trigger(|t| t.replace("version_tag: mvp-v1", "version_tag: \"mvp-v1"));
    let commit = w.push_trigger(&files).await;
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
    assert_eq!(
        (status.context.as_str(), status.state.as_str()),
        ("release-coordinator", "failure")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_from_the_requester_bots_strangers_and_old_commits_do_not_count() {
    let w = World::new().await;
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
            "@dave, your approval does not count: the requester of a release cannot approve it."
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

    // alice approves; then someone pushes to the release branch: her approval is for the old head.
    w.comment(1, "alice", "/approve").await;
    let old_head = w.head(1);
    w.fake
        .push_to_pull(
            DEPLOY,
            1,
            (
                "apps/podinfo/values-staging.yaml",
                b"image:\n  tag: sneaky\n",
            ),
            "mallory",
        )
        .await;
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
    assert!(
        w.status_comment(1).contains("0 of 1 required approvals"),
        "{}",
        w.status_comment(1)
    );
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "approved again on the new head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_keeps_a_ready_release_until_unhold_and_failed_checks_block_until_rerun() {
    let w = World::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_approvals_are_dropped_and_repeated_webhooks_are_not_acted_on_twice() {
    let w = World::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_errors_are_retried_and_a_lost_webhook_is_made_good_by_reconcile() {
    let w = World::new().await;
    // GitHub answers 500 when the bot opens the pull request: octocrab retries three times at
    // once, then the worker tries the delivery again after a pause, and that succeeds.
    w.fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: "/repos/acme/deploy/pulls".into(),
        status: 500,
        retry_after: None,
        times: 4,
    });
    w.push_trigger(&trigger_files()).await;
    let failed = w.fake.requests().iter().filter(|r| r.status == 500).count();
    assert_eq!(failed, 4, "one attempt and three retries by octocrab");
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
    // A rate limit on the merge: the release stays, the status says why.
    w.fake.fail(fake_forge::Failure {
        method: "PUT".into(),
        path_prefix: "/repos/acme/deploy/pulls/1/merge".into(),
        status: 403,
        retry_after: Some(30),
        times: 1,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_continues_without_duplicates() {
    let mut w = World::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_to_one_environment_costs_at_most_twelve_api_calls() {
    let w = World::new().await;
    w.push_trigger(&with_trigger(|t| {
        t.replace("  - deploy-to-production\n", "")
    }))
    .await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged);
    assert!(w.pull(2).is_none());
    assert_eq!(w.release_state().await, "Completed");
    let calls = w.fake.requests();
    assert!(calls.len() <= 12, "{} calls: {calls:#?}", calls.len());
    eprintln!("{} API calls for a release to one environment", calls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_approval_is_re_read_and_a_merge_conflict_is_reported() {
    let w = World::new().await;
    w.push_trigger(&trigger_files()).await;
    let approve = w.comment(1, "alice", "/approve").await;
    w.fake.edit_comment(DEPLOY, approve, "Wait, not yet.").await;
    w.settle().await;
    w.checks_pass(1, &["ci/build"]).await;
    assert!(!w.pull(1).unwrap().merged, "the approval was edited away");

    // Someone changes the same line on main by hand: the release branch no longer merges.
    let values = String::from_utf8(manifest(PODINFO))
        .unwrap()
        .replace("  tag: 6.14.1", "  tag: 6.15.0-hotfix");
    w.fake
        .push(
            DEPLOY,
            "main",
            &[("apps/podinfo/values-staging.yaml", values.as_bytes())],
            &[],
            "carol",
            "Hotfix by hand",
        )
        .await;
    w.settle().await;
    w.comment(1, "alice", "/approve").await;
    assert!(!w.pull(1).unwrap().merged);
    let status = w.status_comment(1);
    assert!(
        status.contains("Merging failed: conflict: Merge conflict"),
        "{status}"
    );
    assert_eq!(w.release_state().await, "AwaitingApproval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_the_bot_uses_installation_tokens() {
    let w = World::new_with(true).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clashing_tag_fails_the_release_visibly_and_retry_finishes_it() {
    let w = World::new().await;
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
            "Release mvp-v1 failed after merging: conflict: tag mvp-v1 already exists on commit"
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
    let w = World::new().await;
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
    let w = World::new().await;
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
