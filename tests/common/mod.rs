//! The world the end-to-end scenarios run in: the real webhook server, worker and forge
//! clients against the stateful fake forge, with the demo's configuration.
#![allow(dead_code)]

pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_forge::{FakeForge, Flavor, User};
use release_coordinator::clock::Clock;
use release_coordinator::config::OperatorConfig;
use release_coordinator::release::bot::Bot;
use release_coordinator::server::{self, Running, ServiceConfig};
use release_coordinator::store::Store;
use secrecy::SecretString;

pub const SECRET: &str = "scenario-webhook-secret";
pub const DEPLOY: &str = "acme/deploy";
pub const APP: &str = "acme/shop";
pub const BOT: &str = "release-coordinator[bot]";
/// The fake GitLab's token user (a project access token's bot user).
pub const GITLAB_BOT: &str = "release-bot";
pub const GITLAB_TOKEN: &str = "glpat-scenario-token";
/// The fake Argo CD's API token, and the token its notifications carry.
pub const ARGOCD_TOKEN: &str = "argocd-scenario-token";
pub const ARGOCD_HOOK_TOKEN: &str = "argocd-scenario-hook-token";
/// An `argocd:` section for [`World::with_config`]: the fake Argo CD beside the fake forge.
pub const ARGOCD_CONFIG: &str = "argocd:\n  url: {argocd}\n  tokenEnv: SCENARIO_ARGOCD_TOKEN\n  healthTimeout: 5m\n  webhookTokenEnv: [UNUSED_IN_PROCESS]\n";
pub const PODINFO: &str =
    "fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml";
pub const GUESTBOOK: &str =
    "fixtures/deploy-repos/values/argoproj__argocd-example-apps/helm-guestbook/values.yaml";

pub fn manifest(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

pub struct World {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub fake: FakeForge,
    pub bot: Arc<Bot>,
    pub running: Running,
    pub store_url: String,
    /// API calls made before the first scenario step (connecting, finding who the bot is).
    pub calls_at_start: usize,
    /// Deliveries the worker handles at once.
    pub jobs: usize,
}

impl World {
    pub async fn new(forge: Flavor) -> World {
        World::new_with(forge, false).await
    }

    /// With `app`, the bot authenticates as a GitHub App (JWT, installation tokens) instead of
    /// with a token.
    pub async fn new_with(forge: Flavor, app: bool) -> World {
        World::build(forge, app, None, |c| c).await
    }

    /// With the release policy `policy` (YAML) instead of the demo's.
    pub async fn with_policy(forge: Flavor, policy: &str) -> World {
        World::build(forge, false, Some(policy), |c| c).await
    }

    /// With the orchestration config (the demo's, for the fake) edited by `edit`.
    pub async fn with_config(forge: Flavor, edit: fn(String) -> String) -> World {
        World::build(forge, false, None, edit).await
    }

    pub async fn build(
        forge: Flavor,
        app: bool,
        policy: Option<&str>,
        edit: impl FnOnce(String) -> String,
    ) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let fake = FakeForge::start_as(&root.join("fake"), forge).await;
        fake.lock().gitlab_token = Some(GITLAB_TOKEN.into());
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
        if let Some(policy) = policy {
            std::fs::write(config_dir.join("release-policy.yaml"), policy).unwrap();
        }
        let store_url = format!("sqlite://{}/store.db", root.display());
        let config = format!(
            "deployment:\n  repo: {clone}/{DEPLOY}.git\n  baseBranch: main\n  cacheDir: ../cache\n\
             signing:\n  keyFile: release-signing.pem\n\
             services:\n\
             \x20 - name: podinfo\n    image: ghcr.io/stefanprodan/podinfo\n    tagPath: image.tag\n    repositories: [{APP}]\n    values:\n      staging: apps/podinfo/values-staging.yaml\n      production: apps/podinfo/values-production.yaml\n\
             \x20 - name: guestbook\n    image: gcr.io/google-samples/gb-frontend\n    tagPath: image.tag\n    repositories: [{APP}]\n    values:\n      staging: apps/guestbook/values-staging.yaml\n      production: apps/guestbook/values-production.yaml\n\
             defaults:\n  store: {store_url}\n  maxRetries: 4\n\
             {forges}",
            clone = fake.clone_base(),
            forges = match forge {
                Flavor::Github => format!(
                    "forges:\n  github:\n    webhookSecretEnv: [UNUSED_IN_PROCESS]\n    {auth}\n    apiUrl: {api}\n    cloneUrlBase: {clone}\n    deploymentRepo: {DEPLOY}\n    triggerPath: release/promotion-trigger.yaml\n",
                    clone = fake.clone_base(),
                    api = fake.api_url(),
                    auth = if app {
                        "appId: 4242\n    privateKeyFile: github-app.pem"
                    } else {
                        "tokenEnv: SCENARIO_GITHUB_TOKEN"
                    },
                ),
                Flavor::Gitlab => format!(
                    "forges:\n  gitlab:\n    webhookTokenEnv: [UNUSED_IN_PROCESS]\n    url: {api}\n    cloneUrlBase: {clone}\n    tokenEnv: SCENARIO_GITLAB_TOKEN\n    deploymentRepo: {DEPLOY}\n    triggerPath: release/promotion-trigger.yaml\n",
                    clone = fake.clone_base(),
                    api = fake.api_url(),
                ),
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
        let config = edit(config).replace("{argocd}", &fake.argocd_url());
        std::fs::write(config_dir.join("orchestration-config.yaml"), config).unwrap();
        release_coordinator::signing::keygen(&config_dir.join("release-signing.pem")).unwrap();

        let jobs = 8;
        let (bot, running) = start_bot(&root, &fake, &store_url, jobs).await;
        let calls_at_start = fake.requests().len();
        World {
            _tmp: tmp,
            root,
            fake,
            bot,
            running,
            store_url,
            calls_at_start,
            jobs,
        }
    }

    /// A world whose configuration lists `n` services, `svc-1` to `svc-n`, each with a staging
    /// values file in the deployment repository (a copy of podinfo's) and released from the
    /// application repository; one approval by alice (qa-lead) merges in staging.
    pub async fn with_services(forge: Flavor, n: usize) -> World {
        let w = World::build(
            forge,
            false,
            Some("roles:\n  qa-lead:\n    users: [alice]\nenvironments:\n  staging:\n    requiredApprovals: 1\n  production:\n    requiredApprovals: 1\n"),
            |config| {
                let mut services = String::from("services:\n");
                for i in 1..=n {
                    services.push_str(&format!(
                        "  - name: svc-{i}\n    image: ghcr.io/acme/svc-{i}\n    tagPath: image.tag\n    repositories: [acme/shop]\n    values:\n      staging: apps/svc-{i}/values-staging.yaml\n"
                    ));
                }
                config.replacen("services:\n", &services, 1)
            },
        )
        .await;
        let podinfo = manifest(PODINFO);
        let paths: Vec<String> = (1..=n)
            .map(|i| format!("apps/svc-{i}/values-staging.yaml"))
            .collect();
        let files: Vec<(&str, &[u8])> = paths
            .iter()
            .map(|p| (p.as_str(), podinfo.as_slice()))
            .collect();
        w.fake
            .push(DEPLOY, "main", &files, &[], "frank", "Services")
            .await;
        w.settle().await;
        w
    }

    pub fn forge(&self) -> Flavor {
        self.fake.flavor()
    }

    pub fn bot_login(&self) -> &'static str {
        match self.forge() {
            Flavor::Github => BOT,
            Flavor::Gitlab => GITLAB_BOT,
        }
    }

    /// The API calls the scenario caused (not the ones made at start-up).
    pub fn calls(&self) -> Vec<fake_forge::LoggedRequest> {
        self.fake.requests()[self.calls_at_start..].to_vec()
    }

    /// Stops the bot at once (as a crash would) and starts a new one on the same store.
    pub async fn restart(&mut self) {
        self.running.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (bot, running) = start_bot(&self.root, &self.fake, &self.store_url, self.jobs).await;
        self.bot = bot;
        self.running = running;
    }

    pub async fn store(&self) -> Store {
        Store::open(&self.store_url).await.unwrap()
    }

    /// Waits until every stored delivery is processed (webhooks caused by processing are
    /// stored before the processing ends, so this is quiescence).
    pub async fn settle(&self) {
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

    pub async fn push_trigger(&self, files: &[(&str, Vec<u8>)]) -> String {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
        let sha = self
            .fake
            .push(APP, "main", &files, &[], "dave", "Promote mvp-ready")
            .await;
        self.settle().await;
        sha
    }

    /// `who` pushes one commit writing `files` to the deployment repository's `main` (a change
    /// by hand beside the bot's), and the bot has seen it.
    pub async fn push_to_deploy(&self, files: &[(&str, &str)], who: &str, message: &str) -> String {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        let sha = self
            .fake
            .push(DEPLOY, "main", &files, &[], who, message)
            .await;
        self.settle().await;
        sha
    }

    pub async fn comment(&self, pr: u64, who: &str, body: &str) -> u64 {
        let id = self.fake.comment(DEPLOY, pr, User::human(who), body).await;
        self.settle().await;
        id
    }

    pub async fn checks_pass(&self, pr: u64, names: &[&str]) {
        let head = self.head(pr);
        for n in names {
            self.fake.check_run(DEPLOY, &head, n, Some("success")).await;
        }
        self.settle().await;
    }

    /// Someone pushes a commit to a release branch, setting the staging values to `tag`.
    pub async fn push_to_release_branch(&self, pr: u64, who: &str, tag: &str) -> String {
        let values = format!("image:\n  tag: {tag}\n");
        self.fake
            .push_to_pull(
                DEPLOY,
                pr,
                ("apps/podinfo/values-staging.yaml", values.as_bytes()),
                who,
            )
            .await
    }

    /// A file of the deployment repository as text, by `<rev>:<path>`.
    pub fn deploy_text(&self, spec: &str) -> String {
        let st = self.fake.lock();
        let git = st.repos[DEPLOY].git();
        let blob = git.revparse_single(spec).unwrap();
        String::from_utf8(blob.as_blob().unwrap().content().to_vec()).unwrap()
    }

    pub fn head(&self, pr: u64) -> String {
        let st = self.fake.lock();
        let repo = &st.repos[DEPLOY];
        repo.branch_tip(&repo.pull(pr).expect("the pull request exists").head)
            .unwrap()
    }

    /// The application repository's forge release of `tag`, if there is one.
    pub fn app_release(&self, tag: &str) -> Option<fake_forge::Release> {
        self.fake.lock().repos[APP]
            .releases
            .iter()
            .find(|r| r.tag == tag)
            .cloned()
    }

    pub fn pull(&self, number: u64) -> Option<fake_forge::Pull> {
        self.fake.lock().repos[DEPLOY].pull(number).cloned()
    }

    /// The bot's comments on a pull request, in order.
    pub fn bot_comments(&self, number: u64) -> Vec<String> {
        let bot = self.bot_login();
        self.fake.lock().repos[DEPLOY]
            .comments
            .iter()
            .filter(|c| c.number == number && c.user.login == bot)
            .map(|c| c.body.clone())
            .collect()
    }

    /// The comments on the application repository's commit `commit` (the bot's word on a
    /// trigger), oldest first.
    pub fn trigger_comments(&self, commit: &str) -> Vec<String> {
        self.fake.lock().repos[APP]
            .commit_comments
            .iter()
            .filter(|c| c.sha == commit)
            .map(|c| c.body.clone())
            .collect()
    }

    pub fn status_comment(&self, number: u64) -> String {
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

    pub async fn release_state(&self) -> String {
        self.store()
            .await
            .find_release("mvp-v1")
            .await
            .unwrap()
            .map(|r| r.state)
            .unwrap_or_default()
    }
}

/// The bot reads the fake forge's clock: one time for both, which tests move on (the fake
/// moves it a second with every act, and [`FakeForge::advance`] by as much as a test needs).
pub struct ForgeTime(fake_forge::Shared);

impl std::fmt::Debug for ForgeTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForgeTime")
    }
}

impl Clock for ForgeTime {
    fn now(&self) -> time::OffsetDateTime {
        self.0.lock().unwrap().now()
    }
}

/// How long the bot may spend on one delivery in the scenarios.
pub const JOB_LIMIT: Duration = Duration::from_secs(5);

pub async fn start_bot(
    root: &Path,
    fake: &FakeForge,
    store_url: &str,
    jobs: usize,
) -> (Arc<Bot>, Running) {
    let config = OperatorConfig::load(&root.join("config/orchestration-config.yaml"))
        .unwrap_or_else(|d| panic!("{d}"));
    let store = Store::open(store_url).await.unwrap();
    let max_retries = config.orchestration.defaults.max_retries;
    // The forge is connected as the service connects it, with the test's tokens.
    let secrets = |var: &str| match var {
        "SCENARIO_GITHUB_TOKEN" => Some("test-token".to_string()),
        "SCENARIO_GITLAB_TOKEN" => Some(GITLAB_TOKEN.to_string()),
        "SCENARIO_REGISTRY_USER" => Some(registry::REGISTRY_USER.to_string()),
        "SCENARIO_REGISTRY_PASSWORD" => Some(registry::REGISTRY_PASSWORD.to_string()),
        "SCENARIO_REGISTRY_WRONG_PASSWORD" => Some("not-the-password".to_string()),
        _ => None,
    };
    let (settings, forge) = release_coordinator::forge::connect(&config, &secrets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let argocd = config.orchestration.argocd.as_ref().map(|a| {
        release_coordinator::argocd::ArgoCd::new(&a.url, SecretString::from(ARGOCD_TOKEN))
    });
    let mut bot = Bot::with_clock(
        config,
        settings,
        store,
        forge,
        Arc::new(ForgeTime(fake.state.clone())),
    );
    if let Some(argocd) = argocd {
        bot = bot.with_argocd(argocd);
    }
    if let Some(images) = &bot.config.orchestration.images {
        let registries = release_coordinator::images::Registries::new(images, &secrets)
            .unwrap_or_else(|e| panic!("{e}"));
        bot = bot.with_registries(registries);
    }
    let secret = Some(vec![SecretString::from(SECRET)]);
    let (service, hook) = match fake.flavor() {
        Flavor::Github => (
            ServiceConfig {
                github_webhook_secrets: secret,
                gitlab_webhook_tokens: None,
                argocd_webhook_tokens: Some(vec![SecretString::from(ARGOCD_HOOK_TOKEN)]),
                limits: server::DoorLimits::default(),
            },
            "github",
        ),
        Flavor::Gitlab => (
            ServiceConfig {
                github_webhook_secrets: None,
                gitlab_webhook_tokens: secret,
                argocd_webhook_tokens: Some(vec![SecretString::from(ARGOCD_HOOK_TOKEN)]),
                limits: server::DoorLimits::default(),
            },
            "gitlab",
        ),
    };
    let bot = Arc::new(bot);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::start(
        bot.clone(),
        service,
        listener,
        release_coordinator::worker::Pacing {
            reconcile_every: Duration::from_secs(3600),
            retry_base: Duration::from_millis(100),
            job_limit: JOB_LIMIT,
            jobs,
            retries: max_retries,
        },
    );
    fake.set_webhook(&format!("http://{}/webhooks/{hook}", running.addr), SECRET);
    fake.set_argocd(
        ARGOCD_TOKEN,
        &format!("http://{}/webhooks/argocd", running.addr),
        ARGOCD_HOOK_TOKEN,
    );
    (bot, running)
}

/// A runtime for one scenario: two worker threads with the service's stack (see
/// `release_coordinator::worker::STACK_SIZE`), as `serve` runs the bot.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(release_coordinator::worker::STACK_SIZE)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs each scenario against the fake GitHub and the fake GitLab.
#[macro_export]
macro_rules! on_both_forges {
    ($($scenario:ident),* $(,)?) => {
        mod on_github {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::runtime().block_on(super::$scenario(fake_forge::Flavor::Github))
                }
            )*
        }
        mod on_gitlab {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::runtime().block_on(super::$scenario(fake_forge::Flavor::Gitlab))
                }
            )*
        }
    };
}

/// The demo's trigger files, under `release/` of the application repository.
pub fn trigger_files() -> Vec<(&'static str, Vec<u8>)> {
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
pub fn openapi_operations() -> Vec<(String, regex_lite::Regex)> {
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

/// The trigger that releases `svc-{i}` of [`World::with_services`] alone, to staging, as
/// `svc-{i}-v1`.
pub fn service_trigger(i: usize) -> Vec<(&'static str, Vec<u8>)> {
    with_trigger(|t| {
        t.replace("version_tag: mvp-v1", &format!("version_tag: svc-{i}-v1"))
            .replace("  - deploy-to-production\n", "")
            .replace("tag-git: mvp-v1", &format!("tag-git: svc-{i}-v1"))
            .replace(
                "tag-docker: podinfo, guestbook",
                &format!("tag-docker: svc-{i}"),
            )
    })
    .into_iter()
    .map(|(p, c)| {
        if p.ends_with("milestone-status.json") {
            let text = String::from_utf8(c).unwrap();
            (
                p,
                text.replace("\"mvp-v1\"", &format!("\"svc-{i}-v1\""))
                    .into_bytes(),
            )
        } else {
            (p, c)
        }
    })
    .collect()
}

pub fn with_trigger(edit: impl Fn(String) -> String) -> Vec<(&'static str, Vec<u8>)> {
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

pub async fn audit_events(w: &World) -> Vec<(String, serde_json::Value)> {
    let store = w.store().await;
    let id = store.find_release("mvp-v1").await.unwrap().unwrap().id;
    store
        .audit_log(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.detail))
        .collect()
}
