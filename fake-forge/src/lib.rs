//! A stateful fake of GitHub's REST API, backed by real bare git repositories on disk.
//!
//! Pull requests are between real branches, a merge is a real git merge (libgit2), tags are
//! real tag objects, and the bot pushes to the repositories with the real `git` over `file://`.
//! Response bodies start from GitHub's official examples (`fixtures/github/api-examples`) with
//! the fake's state written over them; webhooks start from GitHub's payload examples
//! (`fixtures/github/webhooks`) and are signed like GitHub's. Every request is logged, so a test
//! can count API calls and check each against GitHub's OpenAPI description, and calls can be
//! made to fail (a status, `Retry-After`) to test the bot's error paths.

mod api;
mod payloads;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use git2::{Oid, Repository, Signature};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

pub use api::router;

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A failure to inject: the next `times` requests matching `method` and a path starting with
/// `path_prefix` are answered with `status` (and `Retry-After` when given).
#[derive(Debug, Clone)]
pub struct Failure {
    pub method: String,
    pub path_prefix: String,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub times: usize,
}

#[derive(Debug, Clone)]
pub struct User {
    pub login: String,
    pub is_bot: bool,
}

impl User {
    pub fn human(login: &str) -> User {
        User {
            login: login.into(),
            is_bot: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub open: bool,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub user: String,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub number: u64,
    pub user: User,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub id: u64,
    pub number: u64,
    pub user: User,
    pub state: String,
    pub commit_id: String,
}

#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub sha: String,
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CommitStatus {
    pub id: u64,
    pub sha: String,
    pub context: String,
    pub state: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub id: u64,
    pub tag: String,
    pub name: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct CommitComment {
    pub id: u64,
    pub sha: String,
    pub body: String,
}

#[derive(Debug)]
pub struct Repo {
    pub id: u64,
    pub full_name: String,
    pub default_branch: String,
    pub path: PathBuf,
    pub pulls: Vec<Pull>,
    pub comments: Vec<Comment>,
    pub reviews: Vec<Review>,
    pub check_runs: Vec<CheckRun>,
    pub statuses: Vec<CommitStatus>,
    pub releases: Vec<Release>,
    pub commit_comments: Vec<CommitComment>,
    next_number: u64,
}

impl Repo {
    pub fn git(&self) -> Repository {
        Repository::open_bare(&self.path).expect("the fake's repositories open")
    }

    /// The commit a branch points at.
    pub fn branch_tip(&self, branch: &str) -> Option<String> {
        self.git()
            .refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
            .map(|o| o.to_string())
    }

    pub fn pull(&self, number: u64) -> Option<&Pull> {
        self.pulls.iter().find(|p| p.number == number)
    }
}

#[derive(Default)]
pub struct State {
    next_id: u64,
    pub repos: BTreeMap<String, Repo>,
    /// `org/slug` to member logins.
    pub teams: BTreeMap<String, BTreeSet<String>>,
    pub requests: Vec<LoggedRequest>,
    pub failures: Vec<Failure>,
    webhook: Option<(String, String)>,
    /// Webhooks not sent (lost on purpose), to test that the bot does not depend on them.
    pub lose_webhooks: usize,
    pub delivered: Vec<String>,
    /// The login API calls are made as (the bot).
    pub token_login: String,
    /// A registered GitHub App: its id, public key (PEM) and installation id. While one is
    /// registered, API calls need an installation token the fake issued.
    pub app: Option<(u64, String, u64)>,
    pub issued_tokens: Vec<String>,
}

impl State {
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn repo(&mut self, full_name: &str) -> Option<&mut Repo> {
        self.repos.get_mut(full_name)
    }
}

pub type Shared = Arc<Mutex<State>>;

/// The running fake: an HTTP server on a free port of 127.0.0.1.
pub struct FakeGithub {
    pub state: Shared,
    pub addr: SocketAddr,
    root: PathBuf,
    client: reqwest::Client,
}

impl FakeGithub {
    /// Starts the fake with its repositories under `root`.
    pub async fn start(root: &Path) -> FakeGithub {
        let state: Shared = Arc::new(Mutex::new(State {
            token_login: "release-coordinator[bot]".into(),
            ..State::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake serves");
        });
        FakeGithub {
            state,
            addr,
            root: root.to_path_buf(),
            client: reqwest::Client::new(),
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Clone URLs are `<clone_base>/<owner>/<name>.git`.
    pub fn clone_base(&self) -> String {
        format!("file://{}", self.root.join("git").display())
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Where webhooks go, signed with `secret`.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.lock().webhook = Some((url.to_string(), secret.to_string()));
    }

    pub fn add_team_member(&self, team: &str, login: &str) {
        self.lock()
            .teams
            .entry(team.to_string())
            .or_default()
            .insert(login.to_string());
    }

    /// Registers a GitHub App (public key in PEM) installed as `installation_id`; from now on
    /// only its installation tokens are accepted, and the token endpoint wants its JWT.
    pub fn register_app(&self, app_id: u64, public_key_pem: &str, installation_id: u64) {
        self.lock().app = Some((app_id, public_key_pem.to_string(), installation_id));
    }

    pub fn fail(&self, failure: Failure) {
        self.lock().failures.push(failure);
    }

    /// A new repository with one commit holding `files` on `default_branch`.
    pub fn create_repo(
        &self,
        full_name: &str,
        default_branch: &str,
        files: &[(&str, &[u8])],
    ) -> String {
        let path = self.root.join("git").join(format!("{full_name}.git"));
        std::fs::create_dir_all(&path).unwrap();
        let git = Repository::init_bare(&path).unwrap();
        git.set_head(&format!("refs/heads/{default_branch}"))
            .unwrap();
        let commit = write_commit(&git, None, files, &[], "Initial commit", "octocat");
        git.reference(
            &format!("refs/heads/{default_branch}"),
            commit,
            true,
            "init",
        )
        .unwrap();
        let mut st = self.lock();
        let id = st.id();
        st.repos.insert(
            full_name.to_string(),
            Repo {
                id,
                full_name: full_name.to_string(),
                default_branch: default_branch.to_string(),
                path,
                pulls: Vec::new(),
                comments: Vec::new(),
                reviews: Vec::new(),
                check_runs: Vec::new(),
                statuses: Vec::new(),
                releases: Vec::new(),
                commit_comments: Vec::new(),
                next_number: 1,
            },
        );
        commit.to_string()
    }

    /// A developer pushes one commit writing `files` (and deleting `deleted`) to `branch`.
    pub async fn push(
        &self,
        repo: &str,
        branch: &str,
        files: &[(&str, &[u8])],
        deleted: &[&str],
        pusher: &str,
        message: &str,
    ) -> String {
        let (payload, after) = {
            let st = self.lock();
            let r = &st.repos[repo];
            let git = r.git();
            let before = git.refname_to_id(&format!("refs/heads/{branch}")).ok();
            let after = write_commit(&git, before, files, deleted, message, pusher);
            git.reference(&format!("refs/heads/{branch}"), after, true, "push")
                .unwrap();
            let before_tree = before.map(|b| git.find_commit(b).unwrap().tree().unwrap());
            let (added, modified): (Vec<&str>, Vec<&str>) =
                files.iter().map(|(p, _)| *p).partition(|p| {
                    before_tree
                        .as_ref()
                        .is_none_or(|t| t.get_path(Path::new(p)).is_err())
                });
            let payload = payloads::push(
                r,
                branch,
                &before
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "0".repeat(40)),
                &after.to_string(),
                &added,
                &modified,
                deleted,
                pusher,
                message,
            );
            (payload, after.to_string())
        };
        self.send("push", payload).await;
        after
    }

    /// Someone comments on a pull request.
    pub async fn comment(&self, repo: &str, number: u64, user: User, body: &str) -> u64 {
        let (payload, id) = {
            let mut st = self.lock();
            let id = st.id();
            let r = st.repo(repo).unwrap();
            let c = Comment {
                id,
                number,
                user,
                body: body.to_string(),
            };
            r.comments.push(c.clone());
            (payloads::issue_comment(r, &c, "created"), id)
        };
        self.send("issue_comment", payload).await;
        id
    }

    pub async fn edit_comment(&self, repo: &str, id: u64, body: &str) {
        let payload = {
            let mut st = self.lock();
            let r = st.repo(repo).unwrap();
            let c = r.comments.iter_mut().find(|c| c.id == id).unwrap();
            c.body = body.to_string();
            let c = c.clone();
            payloads::issue_comment(r, &c, "edited")
        };
        self.send("issue_comment", payload).await;
    }

    /// Sends the `created` webhook of an existing comment again, under a new delivery id (as
    /// when GitHub's event stream repeats itself).
    pub async fn repeat_comment_webhook(&self, repo: &str, id: u64) {
        let payload = {
            let mut st = self.lock();
            let r = st.repo(repo).unwrap();
            let c = r.comments.iter().find(|c| c.id == id).unwrap().clone();
            payloads::issue_comment(r, &c, "created")
        };
        self.send("issue_comment", payload).await;
    }

    pub async fn delete_comment(&self, repo: &str, id: u64) {
        let payload = {
            let mut st = self.lock();
            let r = st.repo(repo).unwrap();
            let i = r.comments.iter().position(|c| c.id == id).unwrap();
            let c = r.comments.remove(i);
            payloads::issue_comment(r, &c, "deleted")
        };
        self.send("issue_comment", payload).await;
    }

    /// Someone submits a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) on the head.
    pub async fn review(&self, repo: &str, number: u64, user: User, state: &str) -> u64 {
        let (payload, id) = {
            let mut st = self.lock();
            let id = st.id();
            let r = st.repo(repo).unwrap();
            let pull = r.pull(number).unwrap().clone();
            let commit_id = r.branch_tip(&pull.head).unwrap();
            let review = Review {
                id,
                number,
                user,
                state: state.to_string(),
                commit_id,
            };
            r.reviews.push(review.clone());
            (payloads::review(r, &pull, &review), id)
        };
        self.send("pull_request_review", payload).await;
        id
    }

    /// A CI system reports a check run on `sha` (`conclusion` None: still in progress).
    pub async fn check_run(&self, repo: &str, sha: &str, name: &str, conclusion: Option<&str>) {
        let payload = {
            let mut st = self.lock();
            let id = st.id();
            let r = st.repo(repo).unwrap();
            let run = CheckRun {
                id,
                sha: sha.to_string(),
                name: name.to_string(),
                status: if conclusion.is_some() {
                    "completed"
                } else {
                    "in_progress"
                }
                .into(),
                conclusion: conclusion.map(String::from),
            };
            r.check_runs.retain(|c| !(c.sha == sha && c.name == name));
            r.check_runs.push(run.clone());
            payloads::check_run(r, &run)
        };
        self.send("check_run", payload).await;
    }

    /// Someone pushes a commit to a pull request's head branch.
    pub async fn push_to_pull(
        &self,
        repo: &str,
        number: u64,
        file: (&str, &[u8]),
        pusher: &str,
    ) -> String {
        let (head, payload_repo) = {
            let st = self.lock();
            let r = &st.repos[repo];
            (r.pull(number).unwrap().head.clone(), r.full_name.clone())
        };
        let sha = self
            .push(
                &payload_repo,
                &head,
                &[file],
                &[],
                pusher,
                "A change on the release branch",
            )
            .await;
        let payload = {
            let st = self.lock();
            let r = &st.repos[repo];
            payloads::pull_request(r, r.pull(number).unwrap(), "synchronize", pusher)
        };
        self.send("pull_request", payload).await;
        sha
    }

    /// Signs and sends a webhook, unless told to lose it.
    pub async fn send(&self, kind: &str, payload: Value) {
        deliver(&self.state, &self.client, kind, payload).await;
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }
}

/// Signs and posts a webhook to the configured URL (if any), as GitHub does.
pub async fn deliver(state: &Shared, client: &reqwest::Client, kind: &str, payload: Value) {
    let (target, id) = {
        let mut st = state.lock().unwrap();
        if st.lose_webhooks > 0 {
            st.lose_webhooks -= 1;
            return;
        }
        let id = st.id();
        (st.webhook.clone(), format!("fake-delivery-{id}"))
    };
    let Some((url, secret)) = target else { return };
    let body = serde_json::to_vec(&payload).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = client
        .post(&url)
        .header("X-GitHub-Event", kind)
        .header("X-GitHub-Delivery", &id)
        .header("X-Hub-Signature-256", sig)
        .header("Content-Type", "application/json")
        .header("User-Agent", "GitHub-Hookshot/fake")
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => state.lock().unwrap().delivered.push(id),
        Ok(r) => eprintln!("fake-forge: webhook {kind} answered {}", r.status()),
        Err(e) => eprintln!("fake-forge: webhook {kind} not delivered: {e}"),
    }
}

/// Writes a commit on top of `parent` with `files` written and `deleted` removed.
pub fn write_commit(
    git: &Repository,
    parent: Option<Oid>,
    files: &[(&str, &[u8])],
    deleted: &[&str],
    message: &str,
    author: &str,
) -> Oid {
    let parent = parent.map(|p| git.find_commit(p).unwrap());
    let base = match &parent {
        Some(p) => p.tree().unwrap(),
        None => {
            let empty = git.treebuilder(None).unwrap().write().unwrap();
            git.find_tree(empty).unwrap()
        }
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in files {
        let blob = git.blob(content).unwrap();
        update.upsert(*path, blob, git2::FileMode::Blob);
    }
    for path in deleted {
        update.remove(*path);
    }
    let tree = git
        .find_tree(update.create_updated(git, &base).unwrap())
        .unwrap();
    let sig = Signature::now(author, &format!("{author}@users.noreply.github.com")).unwrap();
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    git.commit(None, &sig, &sig, message, &tree, &parents)
        .unwrap()
}
