//! A stateful fake of GitHub's REST API, or of GitLab's (`Flavor::Gitlab`: REST v4 under
//! `/api/v4`, GitLab's hooks and `X-Gitlab-Token`), backed by real bare git repositories on disk.
//!
//! Pull requests are between real branches, a merge is a real git merge (libgit2), tags are
//! real tag objects, and the bot pushes to the repositories with the real `git` over `file://`.
//! Response bodies start from GitHub's official examples (`fixtures/github/api-examples`) with
//! the fake's state written over them; webhooks start from GitHub's payload examples
//! (`fixtures/github/webhooks`) and are signed like GitHub's. Every request is logged, so a test
//! can count API calls and check each against GitHub's OpenAPI description, and calls can be
//! made to fail (a status, `Retry-After`) to test the bot's error paths.

mod api;
pub mod argocd;
mod gitlab_api;
mod gitlab_payloads;
mod payloads;

pub use gitlab_payloads::Pipeline;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use git2::{Oid, Repository, Signature};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use time::OffsetDateTime;

pub use api::router;

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// A failure to inject: the next `times` requests matching `method` and a path starting with
/// `path_prefix` are answered with `status` (and `Retry-After` when given). Status 0 is a forge
/// that stops answering: the request is held open and never answered.
#[derive(Debug, Clone)]
pub struct Failure {
    pub method: String,
    pub path_prefix: String,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub times: usize,
    /// The request is carried out first and only its answer is the failure: a gateway that
    /// timed out, a connection lost on the way back. The client cannot tell it from a request
    /// that never happened.
    pub carried_out: bool,
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
    /// GitLab: merge when the pipeline succeeds (set through the merge API).
    pub auto_merge: bool,
    /// When it last changed (opened, pushed to, approved, merged).
    pub updated_at: OffsetDateTime,
    /// Who merged it.
    pub merged_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub number: u64,
    pub user: User,
    pub body: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub id: u64,
    pub number: u64,
    pub user: User,
    pub state: String,
    pub commit_id: String,
    pub submitted_at: OffsetDateTime,
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
    /// Who posted it.
    pub creator: String,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub id: u64,
    pub tag: String,
    pub name: String,
    pub body: String,
    /// GitHub's pre-release flag (GitLab has none).
    pub prerelease: bool,
}

#[derive(Debug, Clone)]
pub struct CommitComment {
    pub id: u64,
    pub sha: String,
    pub body: String,
    pub author: String,
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
    /// GitLab: the pipelines run, one per pushed commit that reported jobs.
    pub pipelines: Vec<Pipeline>,
    /// GitLab's "Pipelines must succeed": the merge API refuses while the head's is not green.
    pub pipeline_must_succeed: bool,
    /// When the last push reached the repository.
    pub pushed_at: OffsetDateTime,
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

    /// Merges a pull request for real (a merge commit, or one squashed commit) and moves its
    /// base branch; refuses a closed one and a conflict.
    pub fn merge_pull(
        &mut self,
        number: u64,
        squash: bool,
        committer: (&str, &str),
        merged_by: &str,
    ) -> Result<Oid, &'static str> {
        let pull = self.pull(number).ok_or("Not found")?.clone();
        if !pull.open {
            return Err("Pull Request is not mergeable");
        }
        let git = self.git();
        let head = self.branch_tip(&pull.head).ok_or("Not found")?;
        let base = self.branch_tip(&pull.base).ok_or("Not found")?;
        let (head_c, base_c) = (
            git.find_commit(Oid::from_str(&head).unwrap()).unwrap(),
            git.find_commit(Oid::from_str(&base).unwrap()).unwrap(),
        );
        let mut index = git.merge_commits(&base_c, &head_c, None).unwrap();
        if index.has_conflicts() {
            return Err("Merge conflict");
        }
        let tree = git.find_tree(index.write_tree_to(&git).unwrap()).unwrap();
        let sig = Signature::now(committer.0, committer.1).unwrap();
        let message = format!("{} (#{number})", pull.title);
        let parents: Vec<&git2::Commit> = if squash {
            vec![&base_c]
        } else {
            vec![&base_c, &head_c]
        };
        let merged = git
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .unwrap();
        git.reference(&format!("refs/heads/{}", pull.base), merged, true, "merge")
            .unwrap();
        let p = self.pulls.iter_mut().find(|p| p.number == number).unwrap();
        p.open = false;
        p.merged = true;
        p.auto_merge = false;
        p.merge_commit_sha = Some(merged.to_string());
        p.merged_by = Some(merged_by.to_string());
        Ok(merged)
    }
}

/// Which forge the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Github,
    Gitlab,
}

#[derive(Default)]
pub struct State {
    pub flavor: Flavor,
    next_id: u64,
    pub repos: BTreeMap<String, Repo>,
    /// `org/slug` to member logins.
    pub teams: BTreeMap<String, BTreeSet<String>>,
    pub requests: Vec<LoggedRequest>,
    pub failures: Vec<Failure>,
    webhook: Option<(String, String)>,
    /// Webhooks not sent (lost on purpose), to test that the bot does not depend on them.
    pub lose_webhooks: usize,
    /// The next webhook of each of these kinds is not sent (lost on purpose).
    pub lose_kinds: Vec<String>,
    pub delivered: Vec<String>,
    /// The login API calls are made as (the bot).
    pub token_login: String,
    /// A registered GitHub App: its id, public key (PEM) and installation id. While one is
    /// registered, API calls need an installation token the fake issued.
    pub app: Option<(u64, String, u64)>,
    pub issued_tokens: Vec<String>,
    /// GitLab: the only `PRIVATE-TOKEN` accepted, when set.
    pub gitlab_token: Option<String>,
    /// Reads (`GET`) without credentials are answered, for people looking at a local fake
    /// with `curl` (the `fake-forge` binary); the tests keep the forge's rule.
    pub anonymous_reads: bool,
    /// GitLab: group ids by full path (members are in `teams`).
    pub group_ids: BTreeMap<String, u64>,
    /// The forge's clock: it starts at the real time and moves one second with every act of a
    /// person or the forge, so that the times it reports order every act, as a real forge's
    /// do when people act seconds apart. Tests move it further with [`FakeForge::advance`].
    pub clock: Clock,
    /// The client webhooks are sent with.
    pub http: reqwest::Client,
    /// Every webhook sent, in order, to send again late ([`FakeForge::resend`]).
    pub sent: Vec<(String, Value)>,
    /// The fake Argo CD beside the forge (`/api/v1/applications`).
    pub argocd: argocd::ArgoCdState,
}

impl State {
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The time of a new act: one second after the previous one.
    pub fn tick(&mut self) -> OffsetDateTime {
        self.clock.0 += time::Duration::seconds(1);
        self.clock.0
    }

    /// The forge's time now.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.0
    }

    pub fn repo(&mut self, full_name: &str) -> Option<&mut Repo> {
        self.repos.get_mut(full_name)
    }

    /// A user's numeric id: stable for a login, no registry needed.
    pub fn user_id(&self, login: &str) -> u64 {
        let digest = <Sha256 as sha2::Digest>::digest(login.as_bytes());
        1000 + u64::from_be_bytes(digest[..8].try_into().unwrap()) % 1_000_000
    }

    /// Bot accounts: GitHub Apps (`name[bot]`) and the account the API is used as.
    pub fn is_bot(&self, login: &str) -> bool {
        login.ends_with("[bot]") || login == self.token_login
    }
}

/// The forge's time (a newtype so that [`State`] has a default: the Unix epoch until started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Clock(pub OffsetDateTime);

impl Default for Clock {
    fn default() -> Self {
        Clock(OffsetDateTime::UNIX_EPOCH)
    }
}

pub type Shared = Arc<Mutex<State>>;

/// A forge keeps its repositories packed on its own machines (GitHub and GitLab repack and
/// pack refs in the background): once a second, each repository with loose refs or many
/// loose objects (pushes leave both) has them packed, so that receiving a push into a
/// repository with hundreds of release branches costs what it costs a forge, not what
/// reading hundreds of loose files costs.
async fn housekeeping(state: Shared) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let paths: Vec<PathBuf> = {
                let st = state.lock().unwrap_or_else(|e| e.into_inner());
                st.repos.values().map(|r| r.path.clone()).collect()
            };
            for path in paths {
                if loose_refs(&path.join("refs")) {
                    // Under the fake's lock: its own writes (libgit2) fail on a ref that git
                    // holds locked instead of waiting, as the bot's pushes (git) do.
                    let _st = state.lock().unwrap_or_else(|e| e.into_inner());
                    git_in(&path, &["pack-refs", "--all"]);
                }
                // Packing objects takes no ref locks: new loose objects written meanwhile stay.
                if loose_objects(&path.join("objects")) > 256 {
                    git_in(&path, &["repack", "-d", "-q"]);
                }
            }
        })
        .await;
    }
}

fn git_in(path: &Path, args: &[&str]) {
    let _ = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
}

fn loose_refs(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let path = e.path();
            if path.is_dir() {
                loose_refs(&path)
            } else {
                true
            }
        })
}

fn loose_objects(objects: &Path) -> usize {
    std::fs::read_dir(objects)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().len() == 2)
        .map(|e| std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0))
        .sum()
}

/// The running fake: an HTTP server on a free port of 127.0.0.1, playing GitHub or GitLab.
pub struct FakeForge {
    pub state: Shared,
    pub addr: SocketAddr,
    root: PathBuf,
    client: reqwest::Client,
}

/// The name the GitHub scenarios grew up with.
pub type FakeGithub = FakeForge;

impl FakeForge {
    /// Starts a fake GitHub with its repositories under `root`.
    pub async fn start(root: &Path) -> FakeForge {
        FakeForge::start_as(root, Flavor::Github).await
    }

    /// Starts a fake of `flavor`: GitHub's REST API at `/`, or GitLab's at `/api/v4`.
    pub async fn start_as(root: &Path, flavor: Flavor) -> FakeForge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        FakeForge::serve_on(root, flavor, listener)
    }

    /// Starts a fake of `flavor` answering on `listener`.
    pub fn serve_on(root: &Path, flavor: Flavor, listener: tokio::net::TcpListener) -> FakeForge {
        let state: Shared = Arc::new(Mutex::new(State {
            flavor,
            clock: Clock(
                OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .expect("0 is a valid nanosecond"),
            ),
            token_login: match flavor {
                Flavor::Github => "release-coordinator[bot]",
                Flavor::Gitlab => "release-bot",
            }
            .into(),
            // A fresh connection per webhook, as a forge's delivery service opens: a kept-alive
            // one may meet the bot's idle timeout just as it is reused, and the fake does not
            // redeliver.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("a plain HTTP client builds"),
            ..State::default()
        }));
        let addr = listener.local_addr().unwrap();
        let app = match flavor {
            Flavor::Github => router(state.clone()),
            Flavor::Gitlab => gitlab_api::router(state.clone()),
        }
        .merge(argocd::router(state.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake serves");
        });
        tokio::spawn(housekeeping(state.clone()));
        FakeForge {
            client: http(&state),
            state,
            addr,
            root: root.to_path_buf(),
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.lock().flavor
    }

    /// GitHub's API root, or the GitLab instance URL (the API is under `/api/v4`).
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

    /// Where webhooks go, signed with `secret` (GitHub) or carrying it as `X-Gitlab-Token`.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.lock().webhook = Some((url.to_string(), secret.to_string()));
    }

    /// A member of a GitHub team (`org/slug`) or, directly, of a GitLab group (full path).
    pub fn add_team_member(&self, team: &str, login: &str) {
        let mut st = self.lock();
        if !st.group_ids.contains_key(team) {
            let id = st.id();
            st.group_ids.insert(team.to_string(), id);
        }
        st.teams
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
        // The forge's own housekeeping is not the bot's cost: no `git gc --auto` after every
        // push the bot makes (a forge repacks on its own schedule, on its own machines).
        let mut config = git.config().unwrap();
        config.set_bool("receive.autogc", false).unwrap();
        config.set_i32("gc.auto", 0).unwrap();
        config.set_bool("maintenance.auto", false).unwrap();
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
        let pushed_at = st.now();
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
                pipelines: Vec::new(),
                pipeline_must_succeed: false,
                pushed_at,
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
        let (kind, payload, after) = {
            let mut st = self.lock();
            let at = st.tick();
            st.repo(repo).unwrap().pushed_at = at;
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
            let before = before
                .map(|b| b.to_string())
                .unwrap_or_else(|| "0".repeat(40));
            let after_s = after.to_string();
            let (kind, payload) = match st.flavor {
                Flavor::Github => (
                    "push",
                    payloads::push(
                        r, branch, &before, &after_s, &added, &modified, deleted, pusher, message,
                    ),
                ),
                Flavor::Gitlab => (
                    "Push Hook",
                    gitlab_payloads::push_hook(
                        &st,
                        r,
                        branch,
                        (&before, &after_s),
                        (&added, &modified, deleted),
                        pusher,
                        message,
                    ),
                ),
            };
            (kind, payload, after_s)
        };
        self.send(kind, payload).await;
        after
    }

    /// The comment webhook of `c` (`action`: created, edited, deleted). GitLab sends none for
    /// a deleted note.
    fn comment_hook(
        st: &State,
        repo: &str,
        c: &Comment,
        action: &str,
    ) -> Option<(&'static str, Value)> {
        let r = &st.repos[repo];
        match st.flavor {
            Flavor::Github => Some(("issue_comment", payloads::issue_comment(r, c, action))),
            Flavor::Gitlab => {
                let action = match action {
                    "created" => "create",
                    "edited" => "update",
                    _ => return None,
                };
                let p = r.pull(c.number)?;
                Some(("Note Hook", gitlab_payloads::note_hook(st, r, p, c, action)))
            }
        }
    }

    async fn send_opt(&self, hook: Option<(&'static str, Value)>) {
        if let Some((kind, payload)) = hook {
            self.send(kind, payload).await;
        }
    }

    /// Someone comments on a pull request.
    pub async fn comment(&self, repo: &str, number: u64, user: User, body: &str) -> u64 {
        let (hook, id) = {
            let mut st = self.lock();
            let id = st.id();
            let at = st.tick();
            let c = Comment {
                id,
                number,
                user,
                body: body.to_string(),
                created_at: at,
                updated_at: at,
            };
            st.repo(repo).unwrap().comments.push(c.clone());
            (Self::comment_hook(&st, repo, &c, "created"), id)
        };
        self.send_opt(hook).await;
        id
    }

    pub async fn edit_comment(&self, repo: &str, id: u64, body: &str) {
        let hook = {
            let mut st = self.lock();
            let at = st.tick();
            let r = st.repo(repo).unwrap();
            let c = r.comments.iter_mut().find(|c| c.id == id).unwrap();
            c.body = body.to_string();
            c.updated_at = at;
            let c = c.clone();
            Self::comment_hook(&st, repo, &c, "edited")
        };
        self.send_opt(hook).await;
    }

    /// Sends the `created` webhook of an existing comment again, under a new delivery id (as
    /// when the forge's event stream repeats itself).
    pub async fn repeat_comment_webhook(&self, repo: &str, id: u64) {
        let hook = {
            let st = self.lock();
            let c = st.repos[repo].comments.iter().find(|c| c.id == id).unwrap();
            Self::comment_hook(&st, repo, c, "created")
        };
        self.send_opt(hook).await;
    }

    pub async fn delete_comment(&self, repo: &str, id: u64) {
        let hook = {
            let mut st = self.lock();
            let r = st.repo(repo).unwrap();
            let i = r.comments.iter().position(|c| c.id == id).unwrap();
            let c = r.comments.remove(i);
            Self::comment_hook(&st, repo, &c, "deleted")
        };
        self.send_opt(hook).await;
    }

    /// Someone submits a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) on the head. On
    /// GitLab only `APPROVED` exists: the approve button (once per user).
    pub async fn review(&self, repo: &str, number: u64, user: User, state: &str) -> u64 {
        let (kind, payload, id) = {
            let mut st = self.lock();
            let id = st.id();
            let at = st.tick();
            let flavor = st.flavor;
            let r = st.repo(repo).unwrap();
            if let Some(p) = r.pulls.iter_mut().find(|p| p.number == number) {
                p.updated_at = at;
            }
            let pull = r.pull(number).unwrap().clone();
            let commit_id = r.branch_tip(&pull.head).unwrap();
            if flavor == Flavor::Gitlab {
                assert_eq!(state, "APPROVED", "GitLab has only the approve button");
                r.reviews
                    .retain(|rv| !(rv.number == number && rv.user.login == user.login));
            }
            let review = Review {
                id,
                number,
                user,
                state: state.to_string(),
                commit_id,
                submitted_at: at,
            };
            r.reviews.push(review.clone());
            let st = &*st;
            let r = &st.repos[repo];
            match flavor {
                Flavor::Github => (
                    "pull_request_review",
                    payloads::review(r, &pull, &review),
                    id,
                ),
                Flavor::Gitlab => (
                    "Merge Request Hook",
                    gitlab_payloads::merge_request_hook(
                        st,
                        r,
                        &pull,
                        "approval",
                        &review.user.login,
                        None,
                    ),
                    id,
                ),
            }
        };
        self.send(kind, payload).await;
        id
    }

    /// GitLab: someone takes their approval back ("Revoke approval").
    pub async fn unapprove(&self, repo: &str, number: u64, login: &str) {
        let payload = {
            let mut st = self.lock();
            let at = st.tick();
            let r = st.repo(repo).unwrap();
            if let Some(p) = r.pulls.iter_mut().find(|p| p.number == number) {
                p.updated_at = at;
            }
            r.reviews
                .retain(|rv| !(rv.number == number && rv.user.login == login));
            let pull = r.pull(number).unwrap().clone();
            let st = &*st;
            gitlab_payloads::merge_request_hook(
                st,
                &st.repos[repo],
                &pull,
                "unapproval",
                login,
                None,
            )
        };
        self.send("Merge Request Hook", payload).await;
    }

    /// A CI system reports a check run on `sha` (`conclusion` None: still in progress). On
    /// GitLab it is a job of the commit's pipeline, and the Pipeline Hook reports them all.
    pub async fn check_run(&self, repo: &str, sha: &str, name: &str, conclusion: Option<&str>) {
        let (hook, merge) = {
            let mut st = self.lock();
            let id = st.id();
            let flavor = st.flavor;
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
            match flavor {
                Flavor::Github => (("check_run", payloads::check_run(r, &run)), None),
                Flavor::Gitlab => {
                    if !r.pipelines.iter().any(|p| p.sha == sha) {
                        let branch = r
                            .pulls
                            .iter()
                            .find(|p| r.branch_tip(&p.head).as_deref() == Some(sha))
                            .map(|p| p.head.clone())
                            .unwrap_or_default();
                        r.pipelines.push(Pipeline {
                            id,
                            sha: sha.to_string(),
                            branch,
                        });
                    }
                    let pl = r.pipelines.iter().rev().find(|p| p.sha == sha).unwrap();
                    let hook = ("Pipeline Hook", gitlab_payloads::pipeline_hook(r, pl));
                    // "Merge when pipeline succeeds", pinned to the head it was set on.
                    let merge = (pl.status(r) == "success")
                        .then(|| {
                            r.pulls
                                .iter()
                                .find(|p| {
                                    p.open
                                        && p.auto_merge
                                        && r.branch_tip(&p.head).as_deref() == Some(sha)
                                })
                                .map(|p| p.number)
                        })
                        .flatten();
                    (hook, merge)
                }
            }
        };
        self.send(hook.0, hook.1).await;
        if let Some(number) = merge {
            let payload = {
                let mut st = self.lock();
                let actor = st.token_login.clone();
                let r = st.repo(repo).unwrap();
                r.merge_pull(
                    number,
                    false,
                    ("GitLab", "noreply@gitlab.example.com"),
                    &actor,
                )
                .expect("the scheduled merge goes through");
                let pull = r.pull(number).unwrap().clone();
                let st = &*st;
                gitlab_payloads::merge_request_hook(
                    st,
                    &st.repos[repo],
                    &pull,
                    "merge",
                    &actor,
                    None,
                )
            };
            self.send("Merge Request Hook", payload).await;
        }
    }

    /// GitLab: "Retry" on a pipeline: its failed jobs run again (pending), under new job ids.
    pub async fn retry_pipeline(&self, repo: &str, sha: &str) {
        let payload = {
            let mut st = self.lock();
            let mut ids: Vec<u64> = Vec::new();
            let failed = st.repos[repo]
                .check_runs
                .iter()
                .filter(|c| c.sha == sha && c.conclusion.as_deref() == Some("failure"))
                .count();
            for _ in 0..failed {
                ids.push(st.id());
            }
            let r = st.repo(repo).unwrap();
            let mut ids = ids.into_iter();
            for c in r
                .check_runs
                .iter_mut()
                .filter(|c| c.sha == sha && c.conclusion.as_deref() == Some("failure"))
            {
                c.id = ids.next().unwrap();
                c.status = "queued".into();
                c.conclusion = None;
            }
            let pl = r.pipelines.iter().rev().find(|p| p.sha == sha).unwrap();
            gitlab_payloads::pipeline_hook(r, pl)
        };
        self.send("Pipeline Hook", payload).await;
    }

    /// Someone merges a pull request by hand (in the web UI).
    pub async fn merge_by_hand(&self, repo: &str, number: u64, who: &str) {
        self.end_pull(repo, number, who, true).await
    }

    /// Someone with write access closes a pull request without merging it.
    pub async fn close_pull(&self, repo: &str, number: u64, who: &str) {
        self.end_pull(repo, number, who, false).await
    }

    /// A person merges (`merge`) or closes a pull request, and the forge says so: GitHub's
    /// `pull_request` `closed` either way, GitLab's merge request hook `merge` or `close`.
    async fn end_pull(&self, repo: &str, number: u64, who: &str, merge: bool) {
        let (kind, payload) = {
            let mut st = self.lock();
            let at = st.tick();
            let flavor = st.flavor;
            let r = st.repo(repo).unwrap();
            if merge {
                r.merge_pull(number, false, (who, "someone@example.com"), who)
                    .expect("the merge by hand goes through");
            }
            let p = r
                .pulls
                .iter_mut()
                .find(|p| p.number == number)
                .expect("the pull request exists");
            p.open = false;
            p.updated_at = at;
            let pull = p.clone();
            let st = &*st;
            let r = &st.repos[repo];
            match flavor {
                Flavor::Github => (
                    "pull_request",
                    payloads::pull_request(r, &pull, "closed", who),
                ),
                Flavor::Gitlab => (
                    "Merge Request Hook",
                    gitlab_payloads::merge_request_hook(
                        st,
                        r,
                        &pull,
                        if merge { "merge" } else { "close" },
                        who,
                        None,
                    ),
                ),
            }
        };
        self.send(kind, payload).await;
    }

    /// Someone pushes a commit to a pull request's head branch.
    pub async fn push_to_pull(
        &self,
        repo: &str,
        number: u64,
        file: (&str, &[u8]),
        pusher: &str,
    ) -> String {
        let (head, payload_repo, old) = {
            let st = self.lock();
            let r = &st.repos[repo];
            let head = r.pull(number).unwrap().head.clone();
            let old = r.branch_tip(&head).unwrap_or_default();
            (head, r.full_name.clone(), old)
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
        let (kind, payload) = {
            let mut st = self.lock();
            let flavor = st.flavor;
            let r = st.repo(repo).unwrap();
            let pushed_at = r.pushed_at;
            // A push cancels GitLab's "merge when pipeline succeeds".
            if let Some(p) = r.pulls.iter_mut().find(|p| p.number == number) {
                p.auto_merge = false;
                p.updated_at = pushed_at;
            }
            let st = &*st;
            let r = &st.repos[repo];
            let pull = r.pull(number).unwrap();
            match flavor {
                Flavor::Github => (
                    "pull_request",
                    payloads::pull_request(r, pull, "synchronize", pusher),
                ),
                Flavor::Gitlab => (
                    "Merge Request Hook",
                    gitlab_payloads::merge_request_hook(st, r, pull, "update", pusher, Some(&old)),
                ),
            }
        };
        self.send(kind, payload).await;
        sha
    }

    /// Signs and sends a webhook, unless told to lose it.
    pub async fn send(&self, kind: &str, payload: Value) {
        deliver(&self.state, &self.client, kind, payload).await;
    }

    /// The webhooks sent so far (kind and payload), in order.
    pub fn sent(&self) -> Vec<(String, Value)> {
        self.lock().sent.clone()
    }

    /// Sends webhook `index` of [`FakeForge::sent`] again, late, under a new delivery id: as a
    /// delayed or replayed delivery arrives after newer ones.
    pub async fn resend(&self, index: usize) {
        let (kind, payload) = self.lock().sent[index].clone();
        self.send(&kind, payload).await;
    }

    /// The forge's clock now.
    pub fn now(&self) -> OffsetDateTime {
        self.lock().now()
    }

    /// Moves the forge's clock on (time passing with nobody acting).
    pub fn advance(&self, by: time::Duration) {
        self.lock().clock.0 += by;
    }

    /// Someone with write access posts a commit status (GitHub) or an external commit status
    /// (GitLab) through the API, under any name they like.
    pub async fn post_status(&self, repo: &str, sha: &str, context: &str, state: &str, who: &str) {
        let (kind, payload) = {
            let mut st = self.lock();
            let id = st.id();
            st.tick();
            let flavor = st.flavor;
            let r = st.repo(repo).unwrap();
            let status = CommitStatus {
                id,
                sha: sha.to_string(),
                context: context.to_string(),
                state: state.to_string(),
                description: String::new(),
                creator: who.to_string(),
            };
            r.statuses
                .retain(|x| !(x.sha == sha && x.context == context && x.creator == who));
            r.statuses.push(status.clone());
            match flavor {
                Flavor::Github => ("status", payloads::status_event(r, &status)),
                // GitLab sends no hook for an external commit status; the bot reads it.
                Flavor::Gitlab => return,
            }
        };
        self.send(kind, payload).await;
    }

    /// The fake Argo CD's URL (it answers beside the forge, on the same port).
    pub fn argocd_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Argo CD's API accepts only `token`; its notifications go to `url` with `hook_token` as
    /// a bearer token.
    pub fn set_argocd(&self, token: &str, url: &str, hook_token: &str) {
        let mut st = self.lock();
        st.argocd.token = Some(token.to_string());
        st.argocd.notify = Some((url.to_string(), hook_token.to_string()));
    }

    /// An Argo CD Application deploying `repo`'s `target` branch, synced to its tip and
    /// healthy, as one is before any release.
    pub fn argocd_app(&self, name: &str, repo: &str, target: &str) {
        let mut st = self.lock();
        let now = st.tick();
        let tip = st.repos[repo].branch_tip(target);
        let id = st.id();
        st.argocd.apps.insert(
            name.to_string(),
            argocd::ArgoApp {
                name: name.to_string(),
                repo: repo.to_string(),
                target: target.to_string(),
                sync_status: "Synced".into(),
                revision: tip.clone(),
                health: "Healthy".into(),
                phase: Some("Succeeded".into()),
                message: "successfully synced (all tasks run)".into(),
                operation_revision: tip.clone(),
                started_at: Some(now),
                finished_at: Some(now),
                history: tip.map(|t| (id, t, now)).into_iter().collect(),
            },
        );
    }

    /// Argo CD syncs Application `name` to the tip of its branch: the sync ends in `phase`
    /// (`Succeeded`, `Failed`, `Error`, `Running`) with `health`, and the notification of the
    /// matching stock trigger is sent (unless lost). Returns the revision synced.
    pub async fn argocd_sync(&self, name: &str, phase: &str, health: &str) -> String {
        let (revision, note) = {
            let mut st = self.lock();
            let now = st.tick();
            let id = st.id();
            let app = st.argocd.apps[name].clone();
            let tip = st.repos[&app.repo]
                .branch_tip(&app.target)
                .expect("the tracked branch exists");
            let app = st.argocd.apps.get_mut(name).unwrap();
            app.phase = Some(phase.to_string());
            app.operation_revision = Some(tip.clone());
            app.started_at = Some(now);
            app.finished_at = (phase != "Running").then_some(now);
            app.health = health.to_string();
            match phase {
                "Succeeded" => {
                    app.sync_status = "Synced".into();
                    app.revision = Some(tip.clone());
                    app.message = "successfully synced (all tasks run)".into();
                    app.history.push((id, tip.clone(), now));
                }
                "Running" => {
                    app.sync_status = "OutOfSync".into();
                    app.message = "waiting for completion of hook batch/Job/migrate".into();
                }
                _ => {
                    app.sync_status = "OutOfSync".into();
                    app.revision = Some(tip.clone());
                    app.message = "one or more objects failed to apply, reason: Deployment.apps \"web\" is invalid: spec.template.spec.containers[0].image: Required value".into();
                }
            }
            let app = app.clone();
            (
                tip,
                argocd::trigger_of(&app).map(|t| argocd::notification(&app, t)),
            )
        };
        if let Some(note) = note {
            self.notify_argocd(note).await;
        }
        revision
    }

    /// The Application's health changes (pods crash, or recover) without a sync.
    pub async fn argocd_health(&self, name: &str, health: &str) {
        let note = {
            let mut st = self.lock();
            st.tick();
            let app = st.argocd.apps.get_mut(name).unwrap();
            app.health = health.to_string();
            let app = app.clone();
            argocd::trigger_of(&app).map(|t| argocd::notification(&app, t))
        };
        if let Some(note) = note {
            self.notify_argocd(note).await;
        }
    }

    /// Sends an Argo CD notification as its webhook service does (unless told to lose it).
    pub async fn notify_argocd(&self, body: Value) {
        let target = {
            let mut st = self.lock();
            st.argocd.notifications.push(body.clone());
            if st.argocd.lose_notifications > 0 {
                st.argocd.lose_notifications -= 1;
                return;
            }
            st.argocd.notify.clone()
        };
        let Some((url, token)) = target else { return };
        let sent = self
            .client
            .post(&url)
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .header("User-Agent", "argocd-notifications/fake")
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => eprintln!("fake-argocd: notification answered {}", r.status()),
            Err(e) => eprintln!("fake-argocd: notification not delivered: {e}"),
        }
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().requests.clone()
    }
}

/// Posts a webhook to the configured URL (if any), signed as GitHub does or with GitLab's token.
/// The fake's HTTP client for webhooks (one per fake: a client per delivery would load the
/// system's root certificates every time; one per process would outlive a test's runtime).
pub(crate) fn http(state: &Shared) -> reqwest::Client {
    state.lock().unwrap().http.clone()
}

pub async fn deliver(state: &Shared, client: &reqwest::Client, kind: &str, payload: Value) {
    let (target, id) = {
        let mut st = state.lock().unwrap();
        if st.lose_webhooks > 0 {
            st.lose_webhooks -= 1;
            return;
        }
        if let Some(i) = st.lose_kinds.iter().position(|k| k == kind) {
            st.lose_kinds.remove(i);
            return;
        }
        let id = st.id();
        (st.webhook.clone(), format!("fake-delivery-{id}"))
    };
    state
        .lock()
        .unwrap()
        .sent
        .push((kind.to_string(), payload.clone()));
    let Some((url, secret)) = target else { return };
    let flavor = state.lock().unwrap().flavor;
    let body = serde_json::to_vec(&payload).unwrap();
    let request = match flavor {
        Flavor::Github => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(&body);
            let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            client
                .post(&url)
                .header("X-GitHub-Event", kind)
                .header("X-GitHub-Delivery", &id)
                .header("X-Hub-Signature-256", sig)
                .header("User-Agent", "GitHub-Hookshot/fake")
        }
        // GitLab's delivery headers (fixtures/gitlab/webhooks/HEADERS.md).
        Flavor::Gitlab => client
            .post(&url)
            .header("X-Gitlab-Event", kind)
            .header("X-Gitlab-Token", secret)
            .header("X-Gitlab-Event-UUID", &id)
            .header("Idempotency-Key", &id)
            .header("X-Gitlab-Instance", "https://gitlab.example.com")
            .header("User-Agent", "GitLab/17.4.0-fake"),
    };
    let resp = request
        .header("Content-Type", "application/json")
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
