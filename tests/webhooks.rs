//! The webhook door of `release-coordinator serve`, driven over HTTP with GitHub's real payload
//! examples: signatures, redeliveries, limits, and durability against `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hmac::{Hmac, KeyInit, Mac};
use release_coordinator::store::Store;
use sha2::Sha256;

const BIN: &str = env!("CARGO_BIN_EXE_release-coordinator");
const SECRET: &str = "s3cr3t-webhook-value-that-must-not-leak";
const OLD_SECRET: &str = "the-previous-secret-during-rotation";
const GITLAB_TOKEN: &str = "gitlab-webhook-token-value";
/// The API token of the GitLab-only configuration: it must reach the fake and nothing else.
const GITLAB_API_TOKEN: &str = "glpat-api-token-that-must-not-leak";
const FORGES: &str = "forges:\n  github:\n    webhookSecretEnv: [TEST_WEBHOOK_SECRET, TEST_WEBHOOK_SECRET_OLD]\n    tokenEnv: TEST_GITHUB_TOKEN\n    apiUrl: http://127.0.0.1:9\n    deploymentRepo: acme/deploy\n  gitlab:\n    webhookTokenEnv: [TEST_GITLAB_TOKEN, TEST_GITLAB_TOKEN_OLD]\n";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn fixtures() -> Vec<(String, PathBuf)> {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/github/webhooks/api.github.com");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).unwrap() {
        let dir = dir.unwrap().path();
        let kind = dir.file_name().unwrap().to_string_lossy().to_string();
        for f in std::fs::read_dir(&dir).unwrap() {
            out.push((kind.clone(), f.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// A running `serve` process with its own store.
struct Server {
    child: Child,
    base: String,
    store_url: String,
    _dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Server::start_with(dir, FORGES, None, extra, Some("debug"))
    }

    /// `serve` on the demo configuration with `forges` (YAML) and, when given, the deployment
    /// repository at `deploy_url`; `RC_LOG` set to `log` (`None`: serve's default).
    fn start_with(
        dir: tempfile::TempDir,
        forges: &str,
        deploy_url: Option<&str>,
        extra: &[&str],
        log: Option<&str>,
    ) -> Server {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        for f in [
            "release-policy.yaml",
            "version-resolver.yaml",
            "milestones.yaml",
        ] {
            std::fs::copy(manifest.join("demo/config").join(f), config_dir.join(f)).unwrap();
        }
        let mut config =
            std::fs::read_to_string(manifest.join("demo/config/orchestration-config.yaml"))
                .unwrap()
                + forges;
        if let Some(url) = deploy_url {
            config = config.replace("../deploy.git", url);
        }
        // `serve` checks at start-up that it can sign.
        release_coordinator::signing::keygen(&config_dir.join("release-signing.pem")).unwrap();
        std::fs::write(config_dir.join("orchestration-config.yaml"), config).unwrap();
        let store_url = format!("sqlite://{}/store.db", dir.path().display());
        let stderr_path = dir.path().join("stderr.log");
        let mut command = Command::new(BIN);
        match log {
            Some(filter) => command.env("RC_LOG", filter),
            None => command.env_remove("RC_LOG"),
        };
        let mut child = command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                &store_url,
                "--config",
            ])
            .arg(config_dir.join("orchestration-config.yaml"))
            .args(extra)
            .env("TEST_WEBHOOK_SECRET", SECRET)
            .env("TEST_WEBHOOK_SECRET_OLD", OLD_SECRET)
            .env("TEST_GITHUB_TOKEN", "test-token-never-logged")
            .env("TEST_GITLAB_TOKEN", GITLAB_TOKEN)
            .env("TEST_GITLAB_TOKEN_OLD", "gitlab-token-before-rotation")
            .env("TEST_GITLAB_API_TOKEN", GITLAB_API_TOKEN)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}: {}",
                    std::fs::read_to_string(&stderr_path).unwrap()
                )
            })
            .to_string();
        Server {
            child,
            base,
            store_url,
            _dir: dir,
            stderr_path,
        }
    }

    async fn deliver(
        &self,
        client: &reqwest::Client,
        kind: &str,
        id: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, String) {
        let mut req = client
            .post(format!("{}/webhooks/github", self.base))
            .header("X-GitHub-Event", kind)
            .header("X-GitHub-Delivery", id)
            .header("Content-Type", "application/json");
        if let Some(sig) = signature {
            req = req.header("X-Hub-Signature-256", sig);
        }
        let resp = req.body(body).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn signed(
        &self,
        client: &reqwest::Client,
        kind: &str,
        id: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let sig = sign(SECRET, &body);
        self.deliver(client, kind, id, body, Some(sig)).await
    }

    async fn store(&self) -> Store {
        Store::open(&self.store_url).await.unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn every_real_payload_is_stored_once_and_redeliveries_are_recognized() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let mut stored = 0;
    for (i, (kind, path)) in fixtures().into_iter().enumerate() {
        let body = std::fs::read(&path).unwrap();
        let (status, text) = server
            .signed(&client, &kind, &format!("d-{i}"), body.clone())
            .await;
        let name = path.display();
        // GitHub's plain push example deletes a tag: not an event the bot acts on.
        if kind == "push" && text.starts_with("ignored") {
            assert_eq!(status, 200, "{name}");
            continue;
        }
        assert_eq!(status, 202, "{name}: {text}");
        stored += 1;
        // GitHub redelivers with the same delivery id: answered 2xx, not stored again.
        let (status, text) = server.signed(&client, &kind, &format!("d-{i}"), body).await;
        assert_eq!(
            (status, text.as_str()),
            (200, "already received: not processed again")
        );
    }
    assert!(stored >= 30, "most examples are events ({stored})");
    let (total, _) = server.store().await.delivery_counts().await.unwrap();
    assert_eq!(total, stored);
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused_and_nothing_is_stored() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let body = std::fs::read(
        fixtures()
            .iter()
            .find(|(k, _)| k == "issue_comment")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();

    let wrong = sign("not-the-secret", &body);
    let tampered = {
        let mut b = body.clone();
        b[10] ^= 1;
        sign(SECRET, &b)
    };
    for (what, sig) in [
        ("missing", None),
        ("wrong secret", Some(wrong)),
        ("signature of other bytes", Some(tampered)),
        ("sha1 form", Some("sha1=0000".to_string())),
        ("not hex", Some("sha256=zz".to_string())),
    ] {
        let (status, text) = server
            .deliver(&client, "issue_comment", "x-1", body.clone(), sig)
            .await;
        assert_eq!(status, 401, "{what}: {text}");
        assert_eq!(
            text,
            "the signature does not match any configured webhook secret"
        );
    }
    assert_eq!(server.store().await.delivery_counts().await.unwrap().0, 0);

    // During a rotation the previous secret still works.
    let old = sign(OLD_SECRET, &body);
    let (status, _) = server
        .deliver(&client, "issue_comment", "x-2", body, Some(old))
        .await;
    assert_eq!(status, 202);
    assert_eq!(server.store().await.delivery_counts().await.unwrap().0, 1);
    assert!(
        !server.stderr().contains(SECRET)
            && !server.stderr().contains(OLD_SECRET)
            && !server.stderr().contains("test-token-never-logged"),
        "secrets never reach the log"
    );
    // The log goes to a file here: plain text, no terminal colours.
    let log = server.stderr();
    assert!(
        log.contains("DEBUG") && !log.contains('\x1b'),
        "{}",
        &log[..log.len().min(400)]
    );
}

#[tokio::test]
async fn limits_unknown_kinds_and_broken_payloads_get_clear_answers() {
    let server = Server::start(&["--max-body-bytes", "20000"]);
    let client = reqwest::Client::new();

    let big = vec![b' '; 20001];
    let (status, text) = server.signed(&client, "push", "big", big).await;
    assert_eq!(
        (status, text.as_str()),
        (413, "the body is larger than 20000 bytes")
    );

    let (status, text) = server
        .signed(
            &client,
            "ping",
            "p",
            b"{\"zen\":\"Keep it logically awesome.\"}".to_vec(),
        )
        .await;
    assert_eq!(
        (status, text.as_str()),
        (200, "ignored: the bot does not act on `ping`")
    );

    let body = b"{\"action\":\"created\",\"issue\":{\"number\":\"seven\"}}".to_vec();
    let (status, text) = server.signed(&client, "issue_comment", "b", body).await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("`issue_comment` payload does not parse at `issue.number`: invalid type: string \"seven\""),
        "{text}"
    );

    let body = b"{}".to_vec();
    let sig = sign(SECRET, &body);
    let resp = client
        .post(format!("{}/webhooks/github", server.base))
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.text().await.unwrap(), "missing header x-github-event");

    assert_eq!(server.store().await.delivery_counts().await.unwrap().0, 0);
    for probe in ["healthz", "readyz"] {
        let r = client
            .get(format!("{}/{probe}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{probe}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    // Two thousand connections from one address: the per-address limit is for the door's own
    // tests; here every delivery should reach the store or be refused by the kill.
    let mut server = Server::start_in(dir, &["--max-connections-per-ip", "0"]);
    let client = reqwest::Client::new();
    let body = std::fs::read(
        fixtures()
            .iter()
            .find(|(k, _)| k == "status")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let sig = sign(SECRET, &body);

    // Many deliveries in flight at once; SIGKILL once some are acknowledged and more arrive.
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let (client, base, body, sig) = (
            client.clone(),
            server.base.clone(),
            body.clone(),
            sig.clone(),
        );
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{base}/webhooks/github"))
                .header("X-GitHub-Event", "status")
                .header("X-GitHub-Delivery", format!("k-{i}"))
                .header("X-Hub-Signature-256", sig)
                .body(body)
                .send()
                .await;
            let status = r.map(|r| r.status().as_u16()).ok();
            if status == Some(202) {
                acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (i, status)
        }));
    }
    while acks.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        assert!(
            !tasks.iter().all(|t| t.is_finished()),
            "every delivery was answered before a hundred were acknowledged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    let mut acked = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (i, Some(202)) => acked.push(format!("k-{i}")),
            _ => refused += 1,
        }
    }
    server.child.wait().unwrap();
    assert!(
        refused > 0,
        "the kill came while deliveries were still arriving"
    );

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}/store.db", keep.display()))
        .await
        .unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT delivery_id FROM deliveries")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    for id in &acked {
        assert!(
            stored.contains(id.as_str()),
            "acknowledged delivery {id} was lost"
        );
    }
}

#[tokio::test]
async fn gitlab_deliveries_are_checked_by_token_and_recognized_by_idempotency_key() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gitlab/webhooks");
    let send = |kind: &'static str,
                file: &'static str,
                token: Option<&'static str>,
                id: (&'static str, String)| {
        let client = client.clone();
        let url = format!("{}/webhooks/gitlab", server.base);
        let body = std::fs::read(root.join(file)).unwrap();
        async move {
            let mut req = client
                .post(url)
                .header("X-Gitlab-Event", kind)
                .header(id.0, id.1)
                .body(body);
            if let Some(t) = token {
                req = req.header("X-Gitlab-Token", t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let key = |k: &str| ("Idempotency-Key", k.to_string());
    for (i, (kind, file)) in [
        ("Push Hook", "push_hook.json"),
        ("Note Hook", "note_hook_merge_request.json"),
        ("Merge Request Hook", "merge_request_hook.json"),
        ("Pipeline Hook", "pipeline_hook.json"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, text) = send(kind, file, Some(GITLAB_TOKEN), key(&format!("g-{i}"))).await;
        assert_eq!(status, 202, "{kind}: {text}");
        // GitLab retries with the same Idempotency-Key.
        let (status, text) = send(kind, file, Some(GITLAB_TOKEN), key(&format!("g-{i}"))).await;
        assert_eq!(
            (status, text.as_str()),
            (200, "already received: not processed again")
        );
    }
    let (status, text) = send(
        "Tag Push Hook",
        "tag_push_hook.json",
        Some(GITLAB_TOKEN),
        key("t"),
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (200, "ignored: the bot does not act on `Tag Push Hook`")
    );
    // Older GitLab: X-Gitlab-Event-UUID; a token from before a rotation still works.
    let uuid = (
        "X-Gitlab-Event-UUID",
        "13792a34-cac6-4fda-95a8-c58e00a3954e".to_string(),
    );
    let (status, _) = send(
        "Note Hook",
        "note_hook_merge_request.json",
        Some("gitlab-token-before-rotation"),
        uuid.clone(),
    )
    .await;
    assert_eq!(status, 202);
    // The same UUID, event and body again is a redelivery; recursive webhooks share the UUID
    // between different events, so another event under it is a delivery of its own.
    let (status, text) = send(
        "Note Hook",
        "note_hook_merge_request.json",
        Some(GITLAB_TOKEN),
        uuid.clone(),
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (200, "already received: not processed again")
    );
    let (status, _) = send(
        "Merge Request Hook",
        "merge_request_hook.json",
        Some(GITLAB_TOKEN),
        uuid,
    )
    .await;
    assert_eq!(
        status, 202,
        "a different event under the same UUID is stored"
    );
    for token in [None, Some("wrong"), Some("gitlab-webhook-token-valu")] {
        let (status, text) = send(
            "Note Hook",
            "note_hook_merge_request.json",
            token,
            key("bad"),
        )
        .await;
        assert_eq!(
            (status, text.as_str()),
            (
                401,
                "the X-Gitlab-Token does not match any configured webhook token"
            ),
            "{token:?}"
        );
    }
    assert_eq!(server.store().await.delivery_counts().await.unwrap().0, 6);
    assert!(
        !server.stderr().contains(GITLAB_TOKEN),
        "tokens never reach the log"
    );
}

/// `serve` with only GitLab configured releases through it: the binary connects with the token
/// from its environment variable, takes the fake GitLab's Push Hook and opens the merge request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_releases_through_gitlab_when_the_deployment_repository_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let fake =
        fake_forge::FakeForge::start_as(&dir.path().join("fake"), fake_forge::Flavor::Gitlab).await;
    fake.lock().gitlab_token = Some(GITLAB_API_TOKEN.into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let values = |p: &str| std::fs::read(manifest.join(p)).unwrap();
    let podinfo =
        values("fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml");
    let guestbook = values(
        "fixtures/deploy-repos/values/argoproj__argocd-example-apps/helm-guestbook/values.yaml",
    );
    fake.create_repo(
        "acme/deploy",
        "main",
        &[
            ("apps/podinfo/values-staging.yaml", &podinfo),
            ("apps/podinfo/values-production.yaml", &podinfo),
            ("apps/guestbook/values-staging.yaml", &guestbook),
            ("apps/guestbook/values-production.yaml", &guestbook),
        ],
    );
    fake.create_repo("acme/shop", "main", &[("README.md", b"# shop\n")]);
    let forges = format!(
        "forges:\n  gitlab:\n    webhookTokenEnv: [TEST_GITLAB_TOKEN]\n    url: {}\n    cloneUrlBase: {}\n    tokenEnv: TEST_GITLAB_API_TOKEN\n    deploymentRepo: acme/deploy\n    triggerPath: release/promotion-trigger.yaml\n",
        fake.api_url(),
        fake.clone_base()
    );
    let deploy = format!("{}/acme/deploy.git", fake.clone_base());
    // With serve's default log level, as JSON lines.
    let server = Server::start_with(dir, &forges, Some(&deploy), &["--log-format", "json"], None);
    fake.set_webhook(&format!("{}/webhooks/gitlab", server.base), GITLAB_TOKEN);
    // The first attempt to open the merge request meets a 500: the failure is logged with the
    // release it was about, and the next attempt opens it.
    fake.fail(fake_forge::Failure {
        method: "POST".into(),
        path_prefix: "/api/v4/projects/acme%2Fdeploy/merge_requests".into(),
        status: 500,
        retry_after: None,
        times: 1,
        carried_out: false,
    });

    let trigger: Vec<(String, Vec<u8>)> = std::fs::read_dir(manifest.join("demo/app"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .map(|p| {
            (
                format!("release/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    let files: Vec<(&str, &[u8])> = trigger
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    fake.push(
        "acme/shop",
        "main",
        &files,
        &[],
        "dave",
        "Promote mvp-ready",
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let opened = fake.lock().repos["acme/deploy"]
            .pull(1)
            .map(|p| (p.head.clone(), p.user.clone()));
        if let Some((head, author)) = opened {
            assert_eq!(head, "release/mvp-v1/staging");
            assert_eq!(author, "release-bot", "opened with the configured token");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no merge request: {}",
            server.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.status != 401), "{requests:#?}");
    // The bot told what it did, at info, with the release's fields (the merge request's line
    // may come a moment after the forge has it).
    let said = |message: &str| {
        server
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == message)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while said("status").is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failed = said("handling a delivery failed; it will be tried again")
        .expect("the failed attempt's line");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["span"]["release"], "mvp-v1", "{failed}");
    assert!(
        failed["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{failed}"
    );
    let accepted = said("trigger accepted: release branches pushed").expect("the trigger's line");
    assert_eq!(accepted["level"], "INFO");
    assert_eq!(accepted["fields"]["release"], "mvp-v1");
    assert_eq!(accepted["fields"]["repo"], "acme/shop");
    let opened = said("pull request open").expect("the merge request's line");
    assert_eq!(
        (
            &opened["fields"]["release"],
            &opened["fields"]["environment"],
            &opened["fields"]["pr"]
        ),
        (
            &serde_json::json!("mvp-v1"),
            &serde_json::json!("staging"),
            &serde_json::json!(1)
        )
    );
    // `status` shows the merge request and what it waits for, from the store.
    let out = Command::new(BIN)
        .args([
            "status",
            "--format",
            "json",
            "--store",
            &server.store_url,
            "--config",
        ])
        .arg(server._dir.path().join("config/orchestration-config.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let staging = &shown[0]["environments"][0];
    assert_eq!(staging["environment"], "staging");
    assert_eq!(staging["pull_request"], 1);
    assert!(
        staging["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/acme/deploy/-/merge_requests/1")),
        "{shown}"
    );
    assert!(
        staging["waits_for"]
            .as_str()
            .is_some_and(|w| w.contains("required approvals")),
        "{shown}"
    );
    assert_eq!(shown[0]["app_repo"], "acme/shop");
    let status = said("status").expect("what it waits for");
    assert!(
        status["fields"]["status"]
            .as_str()
            .is_some_and(|s| s.contains("required approvals")),
        "{status}"
    );
    assert!(
        !server.stderr().contains(GITLAB_API_TOKEN),
        "the API token never reaches the log"
    );
}

/// The server process's open descriptors.
fn open_fds(child: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .count()
}

/// The server process's peak resident memory, in KiB (`VmHWM`).
fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn connect(base: &str) -> std::net::TcpStream {
    let addr = base.strip_prefix("http://").unwrap();
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s
}

/// What the server answers on `s` (its status line), or `None` when it closes the connection
/// without an answer. Bounded by the stream's read timeout.
fn answer(s: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer and no close within the read timeout: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    text.lines().next().map(str::to_string)
}

#[test]
fn slow_and_idle_clients_cannot_hold_the_door() {
    use std::io::Write;
    let server = Server::start(&["--header-timeout-secs", "1", "--max-connections", "16"]);
    let before = open_fds(&server.child);

    // Two hundred connections that start a request and stop: the server serves sixteen at a
    // time and the rest wait in the kernel's backlog, costing the process nothing.
    let mut idle: Vec<_> = (0..200)
        .map(|_| {
            let mut s = connect(&server.base);
            s.write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(open_fds(&server.child));
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    // (A few more are the store's connections, opened as the worker wakes.)
    assert!(
        most <= before + 16 + 4,
        "{most} descriptors open, {before} before the flood"
    );
    // The first ones were served, and closed at the header timeout.
    assert_eq!(answer(&mut idle[0]).as_deref().unwrap_or(""), "");

    // A client that sends a header byte at a time keeps its connection no longer than one
    // that sends nothing.
    let mut drip = connect(&server.base);
    let dripped = std::thread::spawn({
        let mut drip = drip.try_clone().unwrap();
        move || {
            for b in b"POST /webhooks/github HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(400) {
                if drip.write_all(&[*b]).is_err() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            false
        }
    });
    // Once the idle clients give up, the door serves everyone again.
    drop(idle);
    assert_eq!(answer(&mut drip), None);
    assert!(dripped.join().unwrap(), "the dripping client was cut off");
    let mut probe = connect(&server.base);
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(answer(&mut probe).as_deref(), Some("HTTP/1.1 200 OK"));
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    use std::io::Write;
    let server = Server::start(&["--body-timeout-secs", "1"]);
    let mut s = connect(&server.base);
    s.write_all(
        b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: d\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n{\"ref\":",
    )
    .unwrap();
    assert_eq!(
        answer(&mut s).as_deref(),
        Some("HTTP/1.1 408 Request Timeout")
    );

    // Headers past the 64 KiB buffer are refused, not buffered.
    let mut s = connect(&server.base);
    let huge = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let _ = s.write_all(huge.as_bytes());
    assert_eq!(
        answer(&mut s).as_deref(),
        Some("HTTP/1.1 431 Request Header Fields Too Large")
    );
}

#[test]
fn unsigned_large_bodies_cost_no_memory() {
    use std::io::Write;
    let server = Server::start(&[]);
    let base = server.base.clone();
    // Twenty-four clients without the secret, each sending 24 MiB as fast as loopback goes.
    let statuses: Vec<Option<String>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..24)
            .map(|i| {
                let base = base.clone();
                scope.spawn(move || {
                    let mut s = connect(&base);
                    let len = 24 * 1024 * 1024;
                    let head = format!(
                        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: flood-{i}\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {len}\r\n\r\n",
                        "0".repeat(64)
                    );
                    s.write_all(head.as_bytes()).unwrap();
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..len / chunk.len() {
                        // Refused early (busy): the server stops reading.
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    answer(&mut s)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let unauthorized = statuses
        .iter()
        .filter(|s| s.as_deref() == Some("HTTP/1.1 401 Unauthorized"))
        .count();
    assert!(unauthorized >= 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(
            s.as_deref(),
            Some("HTTP/1.1 401 Unauthorized" | "HTTP/1.1 503 Service Unavailable") | None
        )),
        "{statuses:?}"
    );
    let peak = peak_rss_kib(&server.child);
    assert!(peak < 60 * 1024, "peak resident memory {peak} KiB");
}

#[tokio::test]
async fn signed_bodies_larger_than_memory_are_checked_from_a_file_and_stored() {
    let server = Server::start(&["--memory-body-bytes", "1024", "--max-large-bodies", "1"]);
    let client = reqwest::Client::new();
    let (kind, path) = fixtures()
        .into_iter()
        .find(|(k, _)| k == "issue_comment")
        .unwrap();
    let body = std::fs::read(&path).unwrap();
    assert!(body.len() > 1024);
    let (status, text) = server
        .deliver(
            &client,
            &kind,
            "wrong",
            body.clone(),
            Some(sign("guess", &body)),
        )
        .await;
    assert_eq!(
        (status, text.as_str()),
        (
            401,
            "the signature does not match any configured webhook secret"
        )
    );
    // A client that announces a large body and sends nothing holds no large-body slot.
    let mut silent = connect(&server.base);
    {
        use std::io::Write;
        silent
            .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
    }
    let (status, text) = server.signed(&client, &kind, "large-1", body.clone()).await;
    assert_eq!(status, 202, "{text}");
    drop(silent);
    let stored = server.store().await.delivery_counts().await.unwrap().0;
    assert_eq!(stored, 1);

    // No slot for a large body: answered at once, to be redelivered.
    let busy = Server::start(&["--memory-body-bytes", "1024", "--max-large-bodies", "0"]);
    let resp = client
        .post(format!("{}/webhooks/github", busy.base))
        .header("X-GitHub-Event", kind.as_str())
        .header("X-GitHub-Delivery", "large-2")
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(busy.store().await.delivery_counts().await.unwrap().0, 0);
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&[
        "--max-connections",
        "8",
        "--max-connections-per-ip",
        "4",
        "--header-timeout-secs",
        "30",
    ]);
    let addr: std::net::SocketAddr = server
        .base
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
        socket.connect(addr).await.unwrap()
    };
    // Twenty connections from one address that send nothing: four are served (and wait for
    // their headers), the rest are closed at once.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(from([127, 0, 0, 1]).await);
    }
    let mut closed = 0;
    for c in &mut idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(std::time::Duration::from_millis(500), c.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 16, "all but four closed");
    // Another address is served at once: the slots the first one could not take are free.
    let mut probe = from([127, 0, 0, 2]).await;
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), probe.read(&mut answer))
        .await
        .expect("answered without waiting for the idle connections")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
}

/// The container image's start-up, as the image runs it (`deploy/Dockerfile`, read here: its
/// `ENV`, `WORKDIR`, `USER` and `CMD`, with `/data` and `/config` moved under a temporary
/// directory): as UID 65532, writing only in the data directory, `serve` starts and answers
/// `/healthz`, and the store is made there. A data directory the user cannot write is named at
/// start-up. (There is no container engine here. Switching to the image's user needs root, as
/// CI is; run by anyone else, the test runs the same start-up as that user.)
#[test]
fn the_image_starts_the_bot_as_its_user_in_its_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let place = |p: &str| {
        p.replace("/data", &root.join("data").display().to_string())
            .replace("/config", &root.join("config").display().to_string())
    };
    // The image's settings, line by line (a `\` continues an instruction).
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    let value_of = |name: &str| {
        instructions
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{name} ")))
            .next_back()
            .unwrap_or_else(|| panic!("the Dockerfile has no {name}"))
            .to_string()
    };
    let env: Vec<(String, String)> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), place(v))))
        .collect();
    let image_uid: u32 = value_of("USER").split(':').next().unwrap().parse().unwrap();
    // `/proc/self` belongs to the effective user.
    let proc_self = std::fs::metadata("/proc/self").unwrap();
    let me = std::os::unix::fs::MetadataExt::uid(&proc_self);
    let (uid, gid) = if me == 0 {
        (image_uid, image_uid)
    } else {
        (me, std::os::unix::fs::MetadataExt::gid(&proc_self))
    };
    assert_eq!(image_uid, 65532);
    let workdir = place(&value_of("WORKDIR"));
    let cmd: Vec<String> = serde_json::from_str(&value_of("CMD")).unwrap();
    assert_eq!(value_of("EXPOSE"), "8080");
    assert!(value_of("VOLUME").contains("/data"));

    // What the image's RUN makes: /data owned by the user, /config read-only for it.
    let data = root.join("data");
    let config = root.join("config");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&config).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "orchestration-config.yaml",
        "release-policy.yaml",
        "version-resolver.yaml",
        "milestones.yaml",
    ] {
        std::fs::copy(manifest.join("demo/config").join(f), config.join(f)).unwrap();
    }
    let orchestration = config.join("orchestration-config.yaml");
    let text = std::fs::read_to_string(&orchestration).unwrap() + FORGES;
    std::fs::write(&orchestration, text).unwrap();
    release_coordinator::signing::keygen(&config.join("release-signing.pem")).unwrap();
    for entry in std::fs::read_dir(&config).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The signing key as the README says to give it: the image's user's, readable by it only.
    let key = config.join("release-signing.pem");
    std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The binary as the image has it (the checkout may sit where the user cannot read).
    let bin = root.join("release-coordinator");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let start = || {
        let mut command = Command::new(&bin);
        command
            .args(&cmd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Loopback and a free port instead of the image's 0.0.0.0:8080.
            .env("RC_LISTEN", "127.0.0.1:0")
            .env("TEST_WEBHOOK_SECRET", SECRET)
            .env("TEST_WEBHOOK_SECRET_OLD", OLD_SECRET)
            .env("TEST_GITHUB_TOKEN", "t")
            .env("TEST_GITLAB_TOKEN", GITLAB_TOKEN)
            .env("TEST_GITLAB_TOKEN_OLD", "g")
            .current_dir(&workdir)
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };

    // The data directory is not the user's to write yet (root's, or read-only for a user who
    // owns it): the start-up says which path it cannot write.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    let refused = start().output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        said.contains(&format!(
            "the git cache {} (deployment.cacheDir) is not writable",
            data.join("cache").display()
        )),
        "{said}"
    );

    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = start().spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string);
    let health = base.as_ref().map(|base| {
        let addr = base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        answer
    });
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        health
            .as_ref()
            .is_some_and(|h| h.starts_with("HTTP/1.0 200") || h.starts_with("HTTP/1.1 200")),
        "{line:?} {health:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let store = data.join("release-coordinator.db");
    assert!(store.exists(), "the store is made in the data directory");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&store).unwrap()),
        uid
    );
    assert!(data.join("cache").is_dir());
}
