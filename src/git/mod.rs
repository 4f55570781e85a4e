//! Git, without a working tree.
//!
//! The deployment repository is kept as a bare clone in a cache directory. Network work
//! (fetch, push) runs the `git` command line, which brings every transport and credential
//! helper an operator already uses; everything else (reading files at a commit, building trees
//! and commits, creating branches) is object work through libgit2. A release commit is built
//! from the base commit's tree with only the changed paths replaced, so a repository of any
//! size costs the same few object writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, LazyLock, Mutex, Weak};

mod batch;

use base64::Engine;
use git2::{FileMode, ObjectType, Oid, Repository, Signature, Time};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {0}")]
    Libgit(#[from] git2::Error),
    #[error("`git` could not be run ({0}); install git 2.30 or newer")]
    NoGitBinary(String),
    #[error("fetching `{branch}` from {remote} failed: {stderr}")]
    Fetch {
        remote: String,
        branch: String,
        stderr: String,
    },
    #[error("pushing to {remote} was refused: {detail}")]
    PushRejected { remote: String, detail: String },
    #[error("pushing to {remote} failed: {stderr}")]
    Push { remote: String, stderr: String },
    #[error("`{path}` in the deployment repository is not a file")]
    NotAFile { path: String },
    #[error("environment variable {0} (deployment.tokenEnv) is not set")]
    MissingToken(String),
    #[error("cannot create the cache directory {path}: {reason}")]
    Cache { path: String, reason: String },
    #[error("git did not finish talking to {remote} within {} s and was stopped", .limit.as_secs_f64())]
    TimedOut {
        remote: String,
        limit: std::time::Duration,
        /// Stopped at the deadline of the job that ran it, before the remote's own limit.
        at_job_deadline: bool,
    },
}

/// How long one git command that talks to the remote may take before it is stopped: a remote
/// that accepts a connection and never answers must not hold a release (or the merge turn)
/// for ever.
pub const NETWORK_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Where the deployment repository lives and how to authenticate to it.
#[derive(Clone)]
pub struct Remote {
    /// A URL, or an absolute local path.
    pub url: String,
    /// An HTTPS token, sent as an `Authorization` header; never put into a URL or a log.
    token: Option<String>,
    /// The user name that goes with the token.
    basic_user: &'static str,
    /// How long one command talking to the remote may take.
    time_limit: std::time::Duration,
    /// Branches one push may carry for several releases at once (see [`DeployRepo::push`]).
    push_batch: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Remote {
    pub fn new(url: impl Into<String>, token: Option<String>) -> Self {
        Self {
            url: url.into(),
            token,
            basic_user: "x-access-token",
            time_limit: NETWORK_LIMIT,
            push_batch: 1,
        }
    }

    /// Lets one push carry up to `branches` branches of several releases (default 1: each
    /// release pushes alone). A forge may treat a push of many refs differently: GitLab runs
    /// no webhooks for a push of more than 3 (`push_event_hooks_limit`) and no pipelines past
    /// the 4th ref; GitHub creates no push events past 5,000 branches.
    pub fn with_push_batch(mut self, branches: usize) -> Self {
        self.push_batch = branches.max(1);
        self
    }

    /// Stops any command talking to the remote after `limit` (default [`NETWORK_LIMIT`]).
    pub fn with_time_limit(mut self, limit: std::time::Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The user name sent with the token (GitLab documents `oauth2`).
    pub fn with_basic_user(mut self, user: &'static str) -> Self {
        self.basic_user = user;
        self
    }

    /// The URL as it may be shown to people: credentials in it are replaced.
    pub fn display(&self) -> String {
        redact_url(&self.url)
    }

    /// What `git` is given: local paths become `file://` URLs so shallow fetches work.
    fn transport_url(&self) -> String {
        if is_url(&self.url) {
            self.url.clone()
        } else {
            format!("file://{}", self.url)
        }
    }

    fn git(&self, git_dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(git_dir);
        // No housekeeping after every fetch: [`housekeeping`] does it on the reconcile timer.
        cmd.args(["-c", "maintenance.auto=false", "-c", "gc.auto=0"]);
        cmd.env("GIT_TERMINAL_PROMPT", "0").stdin(Stdio::null());
        // A token never travels in clear: over plain http (to anything but this machine) it is
        // not sent, and the configuration check refuses such a remote before it gets here.
        if let Some(token) = self.token.as_ref().filter(|_| !in_clear(&self.url)) {
            // Passed through the environment, not the command line, so `ps` does not show it.
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{token}", self.basic_user));
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        cmd
    }
}

/// Whether `url` is plain `http://` to a host other than this machine (where a credential
/// would cross a network unencrypted).
pub fn in_clear(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    !(host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback()))
}

pub fn is_url(s: &str) -> bool {
    s.contains("://") || (s.contains('@') && s.contains(':') && !s.starts_with('/'))
}

/// Replaces `user:password@` in a URL with `***@`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((_, host)) = rest.split_once('@')
    {
        return format!("{scheme}://***@{host}");
    }
    url.to_string()
}

/// A file change for a release commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub content: Vec<u8>,
}

/// The cached bare clone of the deployment repository.
pub struct DeployRepo {
    repo: Repository,
    pub remote: Remote,
    pub path: PathBuf,
    /// Held while a fetch writes into the cache: releases are handled side by side, and two
    /// fetches into one repository at once fight over its ref and `shallow` locks.
    writing: Arc<Mutex<()>>,
}

/// One lock per cache directory, shared by every [`DeployRepo`] open on it in this process.
fn cache_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Weak<Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lock) = locks.get(path).and_then(Weak::upgrade) {
        return lock;
    }
    locks.retain(|_, l| l.strong_count() > 0);
    let lock = Arc::new(Mutex::new(()));
    locks.insert(path.to_path_buf(), Arc::downgrade(&lock));
    lock
}

/// Keeps the caches under `cache_root` (the deployment repository's and, under `apps/`, the
/// application repositories') lean: `git maintenance run --auto` on each, which packs loose
/// objects once there are many. Run on the reconcile timer instead of after every fetch.
pub fn housekeeping(cache_root: &Path) {
    let dirs = [cache_root.to_path_buf(), cache_root.join("apps")];
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "git") {
                continue;
            }
            let lock = cache_lock(&path);
            tidy_cache(
                &path,
                &["maintenance", "run", "--auto", "--quiet"],
                Some(&lock),
            );
        }
    }
}

/// Branches pushed from a cache between two tidy-ups (see [`DeployRepo::tidy_now_and_then`]).
const TIDY_EVERY: usize = 64;

/// Runs the local git command `args` on the cache at `path`, holding `lock` (the cache's
/// writing lock, when the caller does not hold it already) while it runs; a failure is logged
/// (the cache works untidy, only slower). The lock is waited for off the async worker.
fn tidy_cache(path: &Path, args: &[&str], lock: Option<&Mutex<()>>) {
    let result = blocking(|| {
        let _writing = lock.map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
        Command::new("git")
            .arg("--git-dir")
            .arg(path)
            .args(args)
            .stdin(Stdio::null())
            .output()
    });
    match result {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            tracing::warn!(cache = %path.display(), command = ?args, error = %clean_stderr(&out.stderr), "tidying the cache failed")
        }
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "tidying the cache could not run git")
        }
    }
}

/// What a batched command came to for one request: `Err(None)`, the batch failed and the
/// request is to be made alone.
type BatchAnswer = Result<(), Option<GitError>>;

/// Reads of one set of refs of one cache's remote (see [`DeployRepo::shared_read`]).
#[derive(Default)]
struct SharedReads {
    state: Mutex<ReadState>,
    done: Condvar,
}

#[derive(Default)]
struct ReadState {
    /// Reads begun so far.
    started: u64,
    reading: bool,
    /// The last successful read: its number and what it found.
    answered: Option<(u64, Vec<(String, Oid)>)>,
    /// The last failed read: its number and why.
    failed: Option<(u64, String)>,
}

/// Per cache directory and set of refs.
type ReadsByKey = HashMap<(PathBuf, String), Arc<SharedReads>>;

fn shared_reads(path: &Path, key: &str) -> Arc<SharedReads> {
    static READS: LazyLock<Mutex<ReadsByKey>> = LazyLock::new(Default::default);
    READS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((path.to_path_buf(), key.to_string()))
        .or_default()
        .clone()
}

/// What `git push --porcelain` said.
struct PushOutput {
    lines: Vec<String>,
    success: bool,
    /// Its error output, as it may be shown.
    stderr: String,
}

impl PushOutput {
    /// The remote refused the push (`!`): an atomic push then changed nothing.
    fn refused(&self) -> bool {
        self.lines.iter().any(|l| l.starts_with('!'))
    }
}

/// What every release of a push that failed to run is told. It may have failed after the
/// remote took it (a timeout, the connection lost), so none pushes again now: each tries again
/// later, when its own record of the branches lets it recognize them as its own.
fn failure_for_each(e: &GitError, pushed_to: &Remote) -> GitError {
    match e {
        GitError::TimedOut {
            remote,
            limit,
            at_job_deadline,
        } => GitError::TimedOut {
            remote: remote.clone(),
            limit: *limit,
            at_job_deadline: *at_job_deadline,
        },
        GitError::Push { remote, stderr } => GitError::Push {
            remote: remote.clone(),
            stderr: stderr.clone(),
        },
        other => GitError::Push {
            remote: pushed_to.display(),
            stderr: other.to_string(),
        },
    }
}

/// Runs blocking git work without holding up the async runtime: on a multi-threaded runtime
/// the thread is handed over for the wait (webhooks keep being answered, other releases keep
/// moving), elsewhere it simply runs.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

tokio::task_local! {
    /// When the job running git must end (see [`within`]).
    static DEADLINE: tokio::time::Instant;
}

/// Runs `work` with a deadline for the git commands it runs: each is stopped at the deadline
/// at the latest, and none starts after it. A job's time limit stops its future only where it
/// awaits, and git commands run one after another without an await between them.
pub async fn within<T>(deadline: tokio::time::Instant, work: impl Future<Output = T>) -> T {
    DEADLINE.scope(deadline, work).await
}

/// Runs a git command that talks to `remote` (see [`blocking`]), stopping it (with the
/// processes it started) after the remote's time limit, or at the job's deadline, when
/// running on the multi-threaded runtime (the bot).
fn output(cmd: &mut Command, remote: &Remote) -> Result<std::process::Output, GitError> {
    let no_git = |e: std::io::Error| GitError::NoGitBinary(e.to_string());
    let h = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => h,
        _ => return cmd.output().map_err(no_git),
    };
    let left = time_left().unwrap_or(remote.time_limit);
    let limit = remote.time_limit.min(left);
    let timed_out = || GitError::TimedOut {
        remote: remote.display(),
        limit,
        at_job_deadline: limit < remote.time_limit,
    };
    if limit.is_zero() {
        return Err(timed_out());
    }
    let mut command = tokio::process::Command::from(std::mem::replace(cmd, Command::new("git")));
    // Its own process group, so that at the deadline the helpers git started (a transport,
    // `ssh`) are stopped with it.
    command
        .process_group(0)
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::block_in_place(|| {
        h.block_on(async {
            let child = command.spawn().map_err(no_git)?;
            let group = child.id();
            match tokio::time::timeout(limit, child.wait_with_output()).await {
                Ok(out) => out.map_err(no_git),
                Err(_) => {
                    if let Some(group) = group {
                        stop_group(group);
                    }
                    Err(timed_out())
                }
            }
        })
    })
}

/// Time left before the running job's deadline (`None`: no deadline).
fn time_left() -> Option<std::time::Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(tokio::time::Instant::now()))
        .ok()
}

/// Stops every process of the group `group` (a git command and the helpers it started).
fn stop_group(group: u32) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: killpg only sends a signal; `group` is a child's process id (> 0, so never
    // this process's own group by way of 0), made its own group leader at spawn.
    if group > 0 && unsafe { libc::killpg(group, libc::SIGKILL) } != 0 {
        let e = std::io::Error::last_os_error();
        // Already gone (every process of the group ended) is fine.
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(group, error = %e, "stopping a git command's processes failed");
        }
    }
}

impl std::fmt::Debug for DeployRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployRepo")
            .field("path", &self.path)
            .field("remote", &self.remote)
            .finish()
    }
}

/// What pushing a tag came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPush {
    Created,
    /// This tag was there already (an earlier attempt pushed it).
    Existed,
    /// Another tag of that name is there (its object id).
    Clash(String),
}

/// The remote-tracking ref the base branch is fetched into.
pub fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

impl DeployRepo {
    /// Opens the cache for `remote` under `cache_root`, creating an empty bare repository the
    /// first time. One cache directory serves many remotes: each gets its own by URL hash.
    pub fn open(remote: Remote, cache_root: &Path) -> Result<Self, GitError> {
        let digest = hex::encode(Sha256::digest(remote.url.as_bytes()));
        let path = cache_root.join(format!("{}.git", &digest[..16]));
        let repo = match Repository::open_bare(&path) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(cache_root).map_err(|e| GitError::Cache {
                    path: cache_root.display().to_string(),
                    reason: e.to_string(),
                })?;
                Repository::init_bare(&path)?
            }
        };
        let writing = cache_lock(&path);
        Ok(Self {
            repo,
            remote,
            path,
            writing,
        })
    }

    /// Waits for any other fetch into this cache to end (see `writing`).
    fn lock_for_writing(&self) -> std::sync::MutexGuard<'_, ()> {
        blocking(|| self.writing.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Every [`TIDY_EVERY`] branches pushed from this cache (`pushed` of them now), packs its
    /// loose objects and refs. Each release leaves a few loose objects (its commit, trees, files) and a tracking ref, and a
    /// push reads the commit of every release branch the remote shows: from hundreds of loose
    /// files that costs tens of milliseconds a push, from a pack a few (the shallow cache
    /// cannot have a commit-graph). `git maintenance --auto` waits for 6,700 loose objects.
    fn tidy_now_and_then(&self, pushed: usize) {
        static PUSHES: LazyLock<Mutex<HashMap<PathBuf, usize>>> = LazyLock::new(Default::default);
        let due = {
            let mut pushes = PUSHES.lock().unwrap_or_else(|e| e.into_inner());
            let n = pushes.entry(self.path.clone()).or_default();
            *n += pushed;
            let due = *n >= TIDY_EVERY;
            if due {
                *n = 0;
            }
            due
        };
        if !due {
            return;
        }
        let _writing = self.lock_for_writing();
        tidy_cache(&self.path, &["repack", "-d", "-q"], None);
        tidy_cache(&self.path, &["pack-refs", "--all"], None);
    }

    /// Fetches the base branch (and any existing branches under `extra_prefix`, such as a
    /// release's branches) into the cache. `depth` 0 fetches all history.
    pub fn fetch(
        &self,
        branch: &str,
        depth: u32,
        extra_prefix: Option<&str>,
    ) -> Result<Oid, GitError> {
        // Asking for the branch tip first costs one round trip; when the cache already has that
        // commit (the common case for a busy bot) it saves the fetch, which even with nothing new
        // re-negotiates the shallow boundary and sends a pack.
        if extra_prefix.is_none() {
            let tip = self.remote_tip(branch)?;
            if let Some(tip) = tip
                && self.remote_branch(branch) == Some(tip)
                && self.repo.find_commit(tip).is_ok()
            {
                return Ok(tip);
            }
        }
        let _writing = self.lock_for_writing();
        let mut cmd = self.remote.git(&self.path);
        cmd.args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--prune",
            "--no-write-fetch-head",
        ]);
        if depth > 0 {
            cmd.arg(format!("--depth={depth}"));
        }
        cmd.arg(self.remote.transport_url());
        cmd.arg(format!("+refs/heads/{branch}:{}", tracking_ref(branch)));
        if let Some(prefix) = extra_prefix {
            cmd.arg(format!(
                "+refs/heads/{prefix}*:refs/remotes/origin/{prefix}*"
            ));
        }
        self.read_from_remote(&mut cmd, branch.to_string())?;
        Ok(self.repo.refname_to_id(&tracking_ref(branch))?)
    }

    /// The commit a remote branch pointed at when last fetched.
    pub fn remote_branch(&self, branch: &str) -> Option<Oid> {
        self.repo.refname_to_id(&tracking_ref(branch)).ok()
    }

    /// The bytes of `path` at `commit`, `None` when there is no such path.
    pub fn read_file(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Err(GitError::NotAFile {
                path: path.to_string(),
            });
        }
        Ok(Some(self.repo.find_blob(entry.id())?.content().to_vec()))
    }

    /// Builds a commit on top of `parent` that writes `files`, with a fixed author and time so
    /// that building the same release twice gives the same commit id.
    pub fn build_commit(
        &self,
        parent: Oid,
        files: &[FileWrite],
        author: (&str, &str),
        when: time::OffsetDateTime,
        message: &str,
    ) -> Result<Oid, GitError> {
        let parent = self.repo.find_commit(parent)?;
        let base_tree = parent.tree()?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        for f in files {
            let blob = self.repo.blob(&f.content)?;
            update.upsert(f.path.as_str(), blob, FileMode::Blob);
        }
        let tree_id = update.create_updated(&self.repo, &base_tree)?;
        let tree = self.repo.find_tree(tree_id)?;
        let sig = Signature::new(author.0, author.1, &Time::new(when.unix_timestamp(), 0))?;
        Ok(self
            .repo
            .commit(None, &sig, &sig, message, &tree, &[&parent])?)
    }

    /// Points the local branch `name` at `commit`.
    pub fn set_branch(&self, name: &str, commit: Oid) -> Result<(), GitError> {
        self.repo.reference(
            &format!("refs/heads/{name}"),
            commit,
            true,
            "release-coordinator: release branch",
        )?;
        Ok(())
    }

    pub fn branch(&self, name: &str) -> Option<Oid> {
        self.repo.refname_to_id(&format!("refs/heads/{name}")).ok()
    }

    /// The remote's branches under `prefix` (e.g. `release/v1/`), with their commits.
    pub fn remote_branches(&self, prefix: &str) -> Result<Vec<(String, Oid)>, GitError> {
        self.ls_remote(&format!("refs/heads/{prefix}*"))
    }

    /// The remote's branches matching `pattern` (ls-remote's tail match), without fetching.
    fn ls_remote(&self, pattern: &str) -> Result<Vec<(String, Oid)>, GitError> {
        let mut cmd = self.remote.git(&self.path);
        cmd.args(["ls-remote", "--heads"])
            .arg(self.remote.transport_url())
            .arg(pattern);
        let out = self.read_from_remote(&mut cmd, pattern.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (oid, name) = l.split_once('\t')?;
                Some((
                    name.strip_prefix("refs/heads/")?.to_string(),
                    Oid::from_str(oid).ok()?,
                ))
            })
            .collect())
    }

    /// Makes sure `commit` is in the cache: asks for the commit itself (one round trip; GitHub
    /// and GitLab serve any reachable commit) and, from a server that serves only branch tips,
    /// fetches `branch` shallowly.
    pub fn fetch_commit(&self, branch: &str, commit: &str) -> Result<Oid, GitError> {
        let oid = Oid::from_str(commit)?;
        if self.repo.find_commit(oid).is_ok() {
            return Ok(oid);
        }
        if let Ok(oid) = self.fetch_any_commit(commit) {
            return Ok(oid);
        }
        self.fetch(branch, 1, None)?;
        self.fetch_any_commit(commit)
    }

    /// The commit `branch` points at on the remote now (`None`: no such branch).
    pub fn remote_tip(&self, branch: &str) -> Result<Option<Oid>, GitError> {
        let refs = self.shared_read(&format!("refs/heads/{branch}"), || {
            self.ls_remote(&format!("refs/heads/{branch}"))
        })?;
        Ok(refs
            .into_iter()
            .find_map(|(name, oid)| (name == branch).then_some(oid)))
    }

    /// Runs `read` of the remote's refs under `key`, shared: callers that ask while a read is
    /// on its way share the next one, never one that began before they asked. Many releases
    /// looking at one base branch (or one repository's tags) at once cost one or two reads.
    fn shared_read(
        &self,
        key: &str,
        read: impl Fn() -> Result<Vec<(String, Oid)>, GitError>,
    ) -> Result<Vec<(String, Oid)>, GitError> {
        let reads = shared_reads(&self.path, key);
        let asked = std::time::Instant::now();
        let mut state = blocking(|| reads.state.lock().unwrap_or_else(|e| e.into_inner()));
        // The first read to begin after now.
        let wanted = state.started + 1;
        loop {
            if let Some((number, refs)) = &state.answered
                && *number >= wanted
            {
                return Ok(refs.clone());
            }
            // A read that began after the caller asked failed: its callers share the failure
            // (one after another, each making its own read of a remote that does not answer,
            // they would wait the time limit once each).
            if let Some((number, why)) = &state.failed
                && *number >= wanted
            {
                return Err(GitError::Fetch {
                    remote: self.remote.display(),
                    branch: key.to_string(),
                    stderr: why.clone(),
                });
            }
            if !state.reading {
                state.started += 1;
                state.reading = true;
                let number = state.started;
                drop(state);
                // Ends the read even if `read` panics, so the waiters make their own.
                struct Reading<'a>(&'a SharedReads, bool);
                impl Drop for Reading<'_> {
                    fn drop(&mut self) {
                        if self.1 {
                            self.0
                                .state
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .reading = false;
                            self.0.done.notify_all();
                        }
                    }
                }
                let mut reading = Reading(&reads, true);
                let refs = read();
                reading.1 = false;
                let mut state = reads.state.lock().unwrap_or_else(|e| e.into_inner());
                state.reading = false;
                match &refs {
                    Ok(refs) => state.answered = Some((number, refs.clone())),
                    // Stopped at this caller's own deadline: the others read for themselves.
                    Err(GitError::TimedOut {
                        at_job_deadline: true,
                        ..
                    }) => {}
                    Err(e) => state.failed = Some((number, e.to_string())),
                }
                reads.done.notify_all();
                return refs;
            }
            // Waiting ends at this caller's own deadline at the latest.
            state = match time_left() {
                None => blocking(|| reads.done.wait(state).unwrap_or_else(|e| e.into_inner())),
                Some(left) if left.is_zero() => {
                    return Err(GitError::TimedOut {
                        remote: self.remote.display(),
                        limit: asked.elapsed(),
                        at_job_deadline: true,
                    });
                }
                Some(left) => blocking(|| {
                    reads
                        .done
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }),
            };
        }
    }

    /// Makes sure `commit` is in the cache, fetching it by itself when it is not.
    pub fn fetch_any_commit(&self, commit: &str) -> Result<Oid, GitError> {
        let oid = Oid::from_str(commit)?;
        if self.repo.find_commit(oid).is_ok() {
            return Ok(oid);
        }
        // Fetched together with the commits other callers ask for meanwhile (see `batch`):
        // when hundreds of triggers arrive at once, each fetch's processes are most of the
        // cost, and fetches into one cache take turns.
        let fetched = batch::batcher::<String, BatchAnswer>(&self.path, "fetch commits").ask(
            commit.to_string(),
            |commits| match self.fetch_by_ids(&commits, "--depth=1") {
                Ok(()) => commits.iter().map(|_| Ok(())).collect(),
                Err(e) if commits.len() == 1 => vec![Err(Some(e))],
                // A remote that does not answer does not answer any of them.
                Err(e @ GitError::TimedOut { .. }) => commits
                    .iter()
                    .map(|_| Err(Some(failure_for_each(&e, &self.remote))))
                    .collect(),
                // One commit the remote does not serve fails them all: each is asked alone.
                Err(_) => commits.iter().map(|_| Err(None)).collect(),
            },
        );
        match fetched {
            Some(Ok(())) => {}
            Some(Err(Some(e))) => return Err(e),
            // A batch that ended meanwhile may have brought it.
            Some(Err(None)) | None if self.repo.find_commit(oid).is_ok() => {}
            Some(Err(None)) | None => self.fetch_by_id(commit, "--depth=1")?,
        }
        Ok(oid)
    }

    /// Fetches `commit` by its id, with `depth` (a `--depth=` or `--shallow-since=` option).
    fn fetch_by_id(&self, commit: &str, depth: &str) -> Result<(), GitError> {
        self.fetch_by_ids(&[commit.to_string()], depth)
    }

    /// Fetches `commits` by their ids in one command (see [`DeployRepo::fetch_by_id`]).
    fn fetch_by_ids(&self, commits: &[String], depth: &str) -> Result<(), GitError> {
        // With no time left, not even the wait for another fetch's lock.
        if time_left().is_some_and(|left| left.is_zero()) {
            return Err(GitError::TimedOut {
                remote: self.remote.display(),
                limit: std::time::Duration::ZERO,
                at_job_deadline: true,
            });
        }
        let _writing = self.lock_for_writing();
        self.read_from_remote(
            self.remote
                .git(&self.path)
                .args([
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    depth,
                ])
                .arg(self.remote.transport_url())
                .args(commits),
            commits.join(" "),
        )?;
        Ok(())
    }

    /// `commit` of the remote and its first parent (what the base was before a merge), fetched
    /// as deep as that takes.
    pub fn fetch_with_parent(&self, commit: &str) -> Result<(Oid, Oid), GitError> {
        let oid = Oid::from_str(commit)?;
        let parent = |repo: &Repository| -> Option<Oid> {
            let c = repo.find_commit(oid).ok()?;
            let p = c.parent_id(0).ok()?;
            repo.find_commit(p).ok().map(|_| p)
        };
        if let Some(p) = parent(&self.repo) {
            return Ok((oid, p));
        }
        self.fetch_by_id(commit, "--depth=2")?;
        let p = parent(&self.repo).ok_or_else(|| GitError::Fetch {
            remote: self.remote.display(),
            branch: commit.to_string(),
            stderr: "the commit has no parent to restore from".into(),
        })?;
        Ok((oid, p))
    }

    /// Whether `revision` of the remote has `commit` in its history (Argo CD reports the
    /// revision it synced; a release is deployed once that revision contains its merge). The
    /// cache is shallow: the revision is fetched with its history back to `commit`'s time, and
    /// a revision older than the commit cannot contain it, so nothing deeper is ever fetched.
    pub fn contains(&self, revision: &str, commit: &str) -> Result<bool, GitError> {
        if revision == commit {
            return Ok(true);
        }
        let rev = self.fetch_any_commit(revision)?;
        let merged = self.fetch_any_commit(commit)?;
        let time = |oid| -> Result<i64, GitError> {
            Ok(self.repo.find_commit(oid)?.committer().when().seconds())
        };
        let since = time(merged)?;
        if time(rev)? < since {
            return Ok(false);
        }
        // A second of slack: "since" is exclusive in some versions of git.
        self.fetch_by_id(revision, &format!("--shallow-since={}", since - 1))?;
        let out = output(
            self.remote
                .git(&self.path)
                .args(["merge-base", "--is-ancestor", commit, revision]),
            &self.remote,
        )?;
        Ok(out.status.success())
    }

    /// The names of the remote's tags, without fetching them (a read shared with others
    /// asking at the same time, see [`DeployRepo::shared_read`]).
    pub fn remote_tags(&self) -> Result<Vec<String>, GitError> {
        let tags = self.shared_read("refs/tags/*", || {
            let out = self.read_from_remote(
                self.remote
                    .git(&self.path)
                    .args(["ls-remote", "--tags", "--refs"])
                    .arg(self.remote.transport_url()),
                "refs/tags/*",
            )?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let (oid, name) = l.split_once('\t')?;
                    Some((
                        name.strip_prefix("refs/tags/")?.to_string(),
                        Oid::from_str(oid).ok()?,
                    ))
                })
                .collect())
        })?;
        Ok(tags.into_iter().map(|(name, _)| name).collect())
    }

    /// The regular files directly in directory `dir` at `commit` (symlinks and submodules are
    /// left out: a trigger file that is a link is not read).
    pub fn read_dir(&self, commit: Oid, dir: &str) -> Result<Vec<(String, Vec<u8>)>, GitError> {
        let root = self.repo.find_commit(commit)?.tree()?;
        let tree = if dir.is_empty() {
            root
        } else {
            match root.get_path(Path::new(dir)) {
                Ok(e) if e.kind() == Some(ObjectType::Tree) => self.repo.find_tree(e.id())?,
                _ => return Ok(Vec::new()),
            }
        };
        let mut files = Vec::new();
        for entry in tree.iter() {
            if entry.kind() == Some(ObjectType::Blob)
                && entry.filemode() != i32::from(git2::FileMode::Link)
                && let Ok(name) = entry.name()
            {
                files.push((
                    name.to_string(),
                    self.repo.find_blob(entry.id())?.content().to_vec(),
                ));
            }
        }
        Ok(files)
    }

    /// Runs a git command that reads from the remote; a failure names what was being read.
    fn read_from_remote(
        &self,
        cmd: &mut Command,
        what: impl Into<String>,
    ) -> Result<std::process::Output, GitError> {
        let out = output(cmd, &self.remote)?;
        if !out.status.success() {
            return Err(GitError::Fetch {
                remote: self.remote.display(),
                branch: what.into(),
                stderr: clean_stderr(&out.stderr),
            });
        }
        Ok(out)
    }

    /// Creates the branches on the remote, all together or not at all. Each must not exist
    /// there yet (`--force-with-lease` with an empty expectation): a branch someone else
    /// created between our look and our push is refused, never overwritten or fast-forwarded.
    ///
    /// Releases that push while another push from this cache is on its way go out together,
    /// in the next push (one atomic `git push` for all of them, up to the remote's
    /// [`Remote::with_push_batch`] branches): each push costs the same handful of processes
    /// on both ends, and both ends read every branch the remote shows, whatever it carries.
    /// When that push is refused, each of them pushes again alone, so a refusal is always
    /// about one release's own branches (see [`failure_for_each`] for other failures).
    pub fn push(&self, branches: &[(String, Oid)]) -> Result<(), GitError> {
        let limit = self.remote.push_batch;
        // Up to `limit` branches in all, and no branch twice (git refuses two updates of one
        // ref in one push).
        let fits = |taken: &[Vec<(String, Oid)>], next: &Vec<(String, Oid)>| {
            let mut names = taken.iter().flatten().map(|(name, _)| name);
            taken.iter().map(Vec::len).sum::<usize>() + next.len() <= limit
                && !names.any(|name| next.iter().any(|(n, _)| n == name))
        };
        let pushed = batch::batcher::<Vec<(String, Oid)>, BatchAnswer>(&self.path, "push")
            .ask_fitting(branches.to_vec(), fits, |requests| {
                let refs: Vec<(String, Oid)> = requests.iter().flatten().cloned().collect();
                let out = match self.run_push(&refs) {
                    Ok(out) => out,
                    Err(e) if requests.len() == 1 => return vec![Err(Some(e))],
                    Err(e) => {
                        return requests
                            .iter()
                            .map(|_| Err(Some(failure_for_each(&e, &self.remote))))
                            .collect();
                    }
                };
                // Refused: nothing was pushed (the push is atomic), and whose refusal it was
                // is learnt by pushing alone.
                if requests.len() > 1 && out.refused() {
                    return requests.iter().map(|_| Err(None)).collect();
                }
                if requests.len() > 1 {
                    tracing::debug!(
                        releases = requests.len(),
                        "pushed release branches together"
                    );
                }
                // Otherwise each release's branches went as they would have alone: a branch
                // already at this commit (`=`, an earlier attempt's push) is its release's
                // own refusal, while the others' branches were created.
                let answers: Vec<BatchAnswer> = requests
                    .iter()
                    .map(|r| self.judge_push(r, &out).map_err(Some))
                    .collect();
                let created = requests
                    .iter()
                    .zip(&answers)
                    .filter(|(_, a)| a.is_ok())
                    .map(|(r, _)| r.len())
                    .sum();
                self.tidy_now_and_then(created);
                answers
            });
        match pushed {
            Some(Ok(())) => Ok(()),
            Some(Err(Some(e))) => Err(e),
            Some(Err(None)) | None => self.push_now(branches),
        }
    }

    /// Pushes the branches in one atomic `git push` (see [`DeployRepo::push`]).
    fn push_now(&self, branches: &[(String, Oid)]) -> Result<(), GitError> {
        let out = self.run_push(branches)?;
        self.judge_push(branches, &out)?;
        self.tidy_now_and_then(branches.len());
        Ok(())
    }

    /// Runs one atomic `git push` creating `branches`, each with the lease that it must not
    /// exist yet.
    fn run_push(&self, branches: &[(String, Oid)]) -> Result<PushOutput, GitError> {
        let mut cmd = self.remote.git(&self.path);
        cmd.args(["push", "--porcelain", "--atomic"]);
        for (name, _) in branches {
            cmd.arg(format!("--force-with-lease=refs/heads/{name}:"));
        }
        cmd.arg(self.remote.transport_url());
        for (name, oid) in branches {
            cmd.arg(format!("{oid}:refs/heads/{name}"));
        }
        let out = output(&mut cmd, &self.remote)?;
        Ok(PushOutput {
            lines: String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            success: out.status.success(),
            stderr: clean_stderr(&out.stderr),
        })
    }

    /// What a push's output says of `branches` (some or all of the branches it pushed), as
    /// if they had been pushed alone; records where the created ones now are.
    fn judge_push(&self, branches: &[(String, Oid)], out: &PushOutput) -> Result<(), GitError> {
        // Porcelain lines: `<flag>\t<from>:<to>\t<summary>`; `!` is a rejection. `=` (up to
        // date) is one too: each branch must not exist yet, and git checks that lease only
        // for refs it would change, so a branch already at this very commit would pass.
        let rejected: Vec<String> = out
            .lines
            .iter()
            .filter(|l| l.starts_with('!') || l.starts_with('='))
            .filter_map(|l| {
                let parts: Vec<&str> = l.split('\t').collect();
                let to = parts.get(1).and_then(|r| r.split(':').nth(1))?;
                let branch = to.strip_prefix("refs/heads/")?;
                branches
                    .iter()
                    .any(|(name, _)| name == branch)
                    .then(|| format!("{branch} ({})", parts.get(2).unwrap_or(&"rejected")))
            })
            .collect();
        if !rejected.is_empty() {
            return Err(GitError::PushRejected {
                remote: self.remote.display(),
                detail: rejected.join(", "),
            });
        }
        if !out.success {
            return Err(GitError::Push {
                remote: self.remote.display(),
                stderr: out.stderr.clone(),
            });
        }
        for (name, oid) in branches {
            self.pushed(name, *oid);
        }
        Ok(())
    }

    /// Records in the cache where a pushed branch now is (as git does for a named remote):
    /// the cache's view of the remote stays right, and the pushed objects are reachable, so
    /// the tidy-up packs them.
    fn pushed(&self, branch: &str, commit: Oid) {
        if let Err(e) = self
            .repo
            .reference(&tracking_ref(branch), commit, true, "pushed")
        {
            tracing::debug!(branch, error = %e, "recording a pushed branch in the cache failed");
        }
    }

    /// Makes the annotated tag `name` on `commit` (in the cache) and pushes it, only if the
    /// remote has no such tag yet. A tag already there is fine when it is this very tag object
    /// (an earlier attempt pushed it); any other is a [`TagPush::Clash`].
    pub fn push_tag(
        &self,
        name: &str,
        commit: Oid,
        message: &str,
        tagger: (&str, &str),
        at: time::OffsetDateTime,
    ) -> Result<TagPush, GitError> {
        let target = self
            .repo
            .find_object(commit, Some(git2::ObjectType::Commit))?;
        let when = git2::Time::new(at.unix_timestamp(), 0);
        let sig = git2::Signature::new(tagger.0, tagger.1, &when)?;
        let tag = self
            .repo
            .tag_annotation_create(name, &target, &sig, message)?;
        let (rejected, out) = self.leased_push(
            format!("refs/tags/{name}:"),
            format!("{tag}:refs/tags/{name}"),
        )?;
        if !rejected && out.status.success() {
            return Ok(TagPush::Created);
        }
        // Refused: see which tag object the remote has under that name. Only the very object
        // this push made counts as ours (every attempt makes the same one); a tag someone else
        // made, even on the same commit, is a clash.
        let listed = self.read_from_remote(
            self.remote
                .git(&self.path)
                .args(["ls-remote", "--tags"])
                .arg(self.remote.transport_url())
                .arg(format!("refs/tags/{name}")),
            format!("refs/tags/{name}"),
        )?;
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        let theirs = listed
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, refname)| *refname == format!("refs/tags/{name}"))
            .map(|(oid, _)| oid.to_string());
        match theirs {
            Some(theirs) if theirs == tag.to_string() => Ok(TagPush::Existed),
            Some(theirs) => Ok(TagPush::Clash(theirs)),
            None => Err(GitError::Push {
                remote: self.remote.display(),
                stderr: clean_stderr(&out.stderr),
            }),
        }
    }

    /// Pushes one `refspec` with `--force-with-lease=<lease>`; true when the remote refused it
    /// (a porcelain `!` line), with git's output for the caller to explain other failures.
    fn leased_push(
        &self,
        lease: String,
        refspec: String,
    ) -> Result<(bool, std::process::Output), GitError> {
        let out = output(
            self.remote
                .git(&self.path)
                .args(["push", "--porcelain"])
                .arg(format!("--force-with-lease={lease}"))
                .arg(self.remote.transport_url())
                .arg(refspec),
            &self.remote,
        )?;
        let rejected = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with('!'));
        Ok((rejected, out))
    }

    /// Points the remote `branch` back at `commit`, only if it is still at `expected` (a lease:
    /// a push that raced in between is not overwritten). `commit` must be in the cache.
    pub fn reset_branch(&self, branch: &str, commit: Oid, expected: &str) -> Result<(), GitError> {
        let (rejected, out) = self.leased_push(
            format!("refs/heads/{branch}:{expected}"),
            format!("+{commit}:refs/heads/{branch}"),
        )?;
        if rejected {
            return Err(GitError::PushRejected {
                remote: self.remote.display(),
                detail: format!("{branch} moved on (it is no longer at {expected})"),
            });
        }
        if !out.status.success() {
            return Err(GitError::Push {
                remote: self.remote.display(),
                stderr: clean_stderr(&out.stderr),
            });
        }
        self.pushed(branch, commit);
        self.tidy_now_and_then(1);
        Ok(())
    }

    /// Deletes the remote `branch` if it is still at `expected` (a push since is kept). True
    /// when it was deleted, false when it was already gone or had moved on.
    pub fn delete_branch(&self, branch: &str, expected: &str) -> Result<bool, GitError> {
        let (rejected, out) = self.leased_push(
            format!("refs/heads/{branch}:{expected}"),
            format!(":refs/heads/{branch}"),
        )?;
        if rejected {
            return Ok(false);
        }
        if !out.status.success() {
            return Err(GitError::Push {
                remote: self.remote.display(),
                stderr: clean_stderr(&out.stderr),
            });
        }
        if let Ok(mut tracking) = self.repo.find_reference(&tracking_ref(branch)) {
            let _ = tracking.delete();
        }
        Ok(true)
    }

    /// A unified diff between two versions of a file, in the form `git apply` takes: a file
    /// the base does not have (`old` is `None`) is a new-file diff from `/dev/null`.
    pub fn unified_diff(path: &str, old: Option<&[u8]>, new: &[u8]) -> Result<String, GitError> {
        let mut opts = git2::DiffOptions::new();
        opts.context_lines(2);
        let mut patch = git2::Patch::from_buffers(
            old.unwrap_or(&[]),
            Some(Path::new(path)),
            new,
            Some(Path::new(path)),
            Some(&mut opts),
        )?;
        let text = String::from_utf8_lossy(&patch.to_buf()?).into_owned();
        if old.is_some() || text.is_empty() {
            return Ok(text);
        }
        // libgit2 compares buffers, not trees, so it writes an edit of an empty file; the
        // header says what it is instead.
        let mut out = String::with_capacity(text.len() + 32);
        for line in text.split_inclusive('\n') {
            if let Some(rest) = line.strip_prefix("index ") {
                let new_id = rest
                    .split_whitespace()
                    .next()
                    .and_then(|ids| ids.split_once(".."))
                    .map(|(_, n)| n)
                    .unwrap_or_default();
                out.push_str(&format!("new file mode 100644\nindex 0000000..{new_id}\n"));
            } else if line.starts_with("--- ") {
                out.push_str("--- /dev/null\n");
            } else {
                out.push_str(line);
            }
        }
        Ok(out)
    }
}

fn clean_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    redact_urls_in(&text)
}

/// `text` with the credentials of every URL in it replaced (git echoes the remote's URL, and
/// its message is logged, stored and shown by `status`).
fn redact_urls_in(text: &str) -> String {
    let is_separator = |c: char| c.is_whitespace() || c == '\'' || c == '"';
    let mut words = text.split(is_separator);
    let mut separators = text.matches(is_separator);
    let mut result = String::with_capacity(text.len());
    if let Some(first) = words.next() {
        result.push_str(&redact_url(first));
    }
    for word in words {
        result.push_str(separators.next().unwrap_or(" "));
        result.push_str(&redact_url(word));
    }
    result
}

/// What the bot needs from the application repository the trigger was committed to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppRepoInfo {
    pub head_commit: Option<String>,
    pub tags: Vec<String>,
}

impl AppRepoInfo {
    /// Reads the commit and tags of the repository containing `dir`, if there is one.
    pub fn discover(dir: &Path) -> Result<AppRepoInfo, GitError> {
        let repo = match Repository::discover(dir) {
            Ok(r) => r,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(AppRepoInfo::default()),
            Err(e) => return Err(e.into()),
        };
        let head_commit = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .map(|c| c.id().to_string());
        let tags = repo
            .tag_names(None)?
            .iter()
            .flatten()
            .flatten()
            .map(String::from)
            .collect();
        Ok(AppRepoInfo { head_commit, tags })
    }
}

#[cfg(test)]
mod in_clear_tests {
    use super::*;

    #[test]
    fn only_plain_http_off_this_machine_is_in_clear() {
        for url in [
            "http://git.example.com/acme/deploy.git",
            "http://user@10.0.0.5:8080/deploy.git",
            "HTTP://example.com/x",
        ] {
            assert!(in_clear(&url.replace("HTTP://", "http://")), "{url}");
        }
        for url in [
            "https://github.com/acme/deploy.git",
            "http://127.0.0.1:9100/acme/deploy.git",
            "http://localhost/x",
            "http://[::1]:8080/x",
            "/srv/git/deploy.git",
            "git@github.com:acme/deploy.git",
        ] {
            assert!(!in_clear(url), "{url}");
        }
        let remote = Remote::new("http://git.example.com/d.git", Some("secret-token".into()));
        let cmd = remote.git(Path::new("/tmp/x"));
        assert!(
            !cmd.get_envs().any(|(k, _)| k == "GIT_CONFIG_VALUE_0"),
            "no credential over plain http"
        );
        let remote = Remote::new("https://git.example.com/d.git", Some("secret-token".into()));
        let cmd = remote.git(Path::new("/tmp/x"));
        assert!(cmd.get_envs().any(|(k, _)| k == "GIT_CONFIG_VALUE_0"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognized_and_redacted() {
        assert!(is_url("https://github.com/a/b.git"));
        assert!(is_url("git@github.com:a/b.git"));
        assert!(!is_url("/srv/git/deploy.git"));
        assert!(!is_url("../deploy"));
        assert_eq!(
            redact_url("https://user:secret@host/a.git"),
            "https://***@host/a.git"
        );
        assert_eq!(redact_url("https://host/a.git"), "https://host/a.git");
        let r = Remote::new("https://host/a.git", Some("tok3n".into()));
        assert!(!format!("{r:?}").contains("tok3n"));
        // git's messages name the remote: its credentials never pass into an error.
        assert_eq!(
            clean_stderr(
                b"fatal: unable to access 'https://bot:s3cret@git.example.com/a.git/': 403\n"
            ),
            "fatal: unable to access 'https://***@git.example.com/a.git/': 403"
        );
    }
}

#[cfg(test)]
mod time_limit_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A remote at a loopback port that accepts connections and never answers; counts them.
    fn silent_remote() -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/deploy.git", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                open.push(stream);
            }
        });
        (url, accepted)
    }

    /// Callers waiting for a shared read that fails share its failure: against a remote that
    /// never answers, three callers cost two reads (the one running when the others asked, and
    /// the one they share), not three one after another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_of_a_failed_shared_read_share_the_failure() {
        let (url, accepted) = silent_remote();
        let cache = tempfile::tempdir().unwrap();
        let limit = std::time::Duration::from_millis(600);
        let read = |delay: u64| {
            let (url, root) = (url.clone(), cache.path().to_path_buf());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let remote = Remote::new(url, None).with_time_limit(limit);
                DeployRepo::open(remote, &root).unwrap().remote_tags()
            })
        };
        let first = read(0);
        let (second, third) = (read(200), read(250));
        for reader in [first, second, third] {
            let err = reader.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("and was stopped"), "{err}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Commits asked for while a fetch runs are fetched together; when the remote does not
    /// answer that fetch, each is told so, rather than each asking it again alone (one after
    /// another, a time limit each).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_fetched_together_from_a_silent_remote_fail_together() {
        let (url, accepted) = silent_remote();
        let cache = tempfile::tempdir().unwrap();
        let limit = std::time::Duration::from_millis(600);
        let fetch = |delay: u64, commit: &'static str| {
            let (url, root) = (url.clone(), cache.path().to_path_buf());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let remote = Remote::new(url, None).with_time_limit(limit);
                DeployRepo::open(remote, &root)
                    .unwrap()
                    .fetch_any_commit(commit)
            })
        };
        let first = fetch(0, "1111111111111111111111111111111111111111");
        let second = fetch(200, "2222222222222222222222222222222222222222");
        let third = fetch(250, "3333333333333333333333333333333333333333");
        for fetcher in [first, second, third] {
            let err = fetcher.await.unwrap().unwrap_err();
            assert!(matches!(err, GitError::TimedOut { .. }), "{err}");
        }
        // The first alone, then the other two together.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A caller waiting for another's shared read stops waiting at its own job's deadline
    /// (the read it waits for may run much longer).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_waiting_for_a_shared_read_stops_at_its_deadline() {
        let (url, _accepted) = silent_remote();
        let cache = tempfile::tempdir().unwrap();
        let open = {
            let root = cache.path().to_path_buf();
            move || {
                let remote = Remote::new(url.clone(), None)
                    .with_time_limit(std::time::Duration::from_secs(3));
                DeployRepo::open(remote, &root).unwrap()
            }
        };
        let first = {
            let open = open.clone();
            tokio::spawn(async move { open().remote_tags() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
        let waiter = tokio::spawn(within(deadline, async move { open().remote_tags() }));
        let err = waiter.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                GitError::TimedOut {
                    at_job_deadline: true,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            !first.is_finished(),
            "the waiter gave up before the read it waited for ended"
        );
        assert!(first.await.unwrap().is_err());
    }

    /// Past the job's deadline no git command starts: the remote is not even asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_git_command_starts_after_the_job_deadline() {
        let (url, accepted) = silent_remote();
        let cache = tempfile::tempdir().unwrap();
        let repo = DeployRepo::open(Remote::new(url, None), cache.path()).unwrap();
        let past = tokio::time::Instant::now();
        let err = within(past, async { repo.remote_branches("release/") })
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::TimedOut { .. }), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    /// Runs git in `cwd`, which must succeed; its output.
    fn run(cwd: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(cwd)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A bare remote `remote.git` in `dir` with one commit on `main`, and a cache of it that
    /// has fetched `main` (its commit), pushing up to 3 branches at once as for GitLab.
    fn seeded(dir: &Path) -> (DeployRepo, Oid) {
        let remote = dir.join("remote.git");
        let seed = dir.join("seed");
        run(dir, &["init", "-q", "--bare", "remote.git"]);
        run(dir, &["init", "-q", "-b", "main", "seed"]);
        std::fs::write(seed.join("values.yaml"), "tag: 1\n").unwrap();
        run(&seed, &["add", "."]);
        run(&seed, &["commit", "-qm", "seed"]);
        run(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
        let url = format!("file://{}", remote.display());
        let remote = Remote::new(url, None).with_push_batch(3);
        let repo = DeployRepo::open(remote, &dir.join("cache")).unwrap();
        let base = repo.fetch("main", 1, None).unwrap();
        (repo, base)
    }

    /// A release commit on `base` in the cache, its own for each `i`.
    fn release_commit(repo: &DeployRepo, base: Oid, i: usize) -> Oid {
        repo.build_commit(
            base,
            &[FileWrite {
                path: format!("apps/svc-{i}/values.yaml"),
                content: format!("tag: {i}\n").into_bytes(),
            }],
            ("t", "t@t"),
            time::OffsetDateTime::UNIX_EPOCH,
            "release",
        )
        .unwrap()
    }

    /// `result` is a refusal of `branch` alone.
    fn refused_alone(result: &Result<(), GitError>, branch: &str) {
        match result {
            Err(GitError::PushRejected { detail, .. }) => {
                assert!(detail.starts_with(&format!("{branch} (")), "{detail}");
                assert!(!detail.contains(", "), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Releases that push while a push is on its way go out together in the next one, as
    /// many branches at once as the remote takes; when that push is refused for one of them,
    /// the others still push, and only that one is refused, naming its own branch; a branch
    /// already there at the release's commit is that release's answer alone.
    #[test]
    fn releases_waiting_to_push_go_out_together() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, base) = seeded(dir.path());
        let remote = dir.path().join("remote.git");
        // The remote counts the pushes it takes (one `post-receive` each).
        let hook = remote.join("hooks/post-receive");
        std::fs::write(&hook, "#!/bin/sh\necho push >> \"$GIT_DIR/pushes\"\n").unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let pushes = || {
            std::fs::read_to_string(remote.join("pushes"))
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        // Someone else's branch, where one release below wants to push.
        let theirs = release_commit(&repo, base, 99);
        repo.push(&[("release/taken".to_string(), theirs)]).unwrap();
        assert_eq!(pushes(), 1);

        // `branches` pushed from threads of their own while a push is on its way (the queue
        // is held as busy until all of them wait); what each push came to, by branch.
        let push_while_busy = |branches: Vec<(String, Oid)>| {
            let queue = batch::batcher::<Vec<(String, Oid)>, BatchAnswer>(&repo.path, "push");
            queue.state.lock().unwrap().running = true;
            let threads: Vec<_> = branches
                .into_iter()
                .map(|(name, oid)| {
                    let remote = repo.remote.clone();
                    let cache = dir.path().join("cache");
                    std::thread::spawn(move || {
                        let repo = DeployRepo::open(remote, &cache).unwrap();
                        (name.clone(), repo.push(&[(name, oid)]))
                    })
                })
                .collect();
            while queue.state.lock().unwrap().queued.len() < threads.len() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            queue.state.lock().unwrap().running = false;
            queue.done.notify_all();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<HashMap<_, _>>()
        };

        let four: Vec<_> = (0..4)
            .map(|i| (format!("release/{i}"), release_commit(&repo, base, i)))
            .collect();
        let results = push_while_busy(four.clone());
        assert!(results.values().all(Result::is_ok), "{results:?}");
        assert_eq!(
            pushes(),
            3,
            "the four went out in two pushes (three, then one)"
        );

        let mut three: Vec<_> = (4..6)
            .map(|i| (format!("release/{i}"), release_commit(&repo, base, i)))
            .collect();
        three.push(("release/taken".to_string(), release_commit(&repo, base, 6)));
        let results = push_while_busy(three);
        assert!(results["release/4"].is_ok(), "{results:?}");
        assert!(results["release/5"].is_ok(), "{results:?}");
        refused_alone(&results["release/taken"], "release/taken");
        // The refused push together, then two alone that were taken (the third refused).
        assert_eq!(pushes(), 5);

        // A release pushing again a branch an earlier attempt pushed (`=`: already at its
        // commit), beside a new one: the new branch is created in that one push, and only
        // the other release is told its branch is there.
        let again = four[0].clone();
        let new = ("release/7".to_string(), release_commit(&repo, base, 7));
        let results = push_while_busy(vec![again.clone(), new.clone()]);
        assert!(results["release/7"].is_ok(), "{results:?}");
        refused_alone(&results["release/0"], "release/0");
        assert_eq!(pushes(), 6, "one push");
        let on_remote: HashMap<String, Oid> = repo
            .remote_branches("release/")
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(on_remote.len(), 8, "{on_remote:?}");
        assert_eq!(on_remote[&new.0], new.1);
        assert_eq!(on_remote["release/taken"], theirs);
        for (name, oid) in &four {
            assert_eq!(on_remote[name], *oid);
        }
    }

    /// Pushes leave loose objects and refs in the cache; every `TIDY_EVERY` pushes they are
    /// packed, and the cache reads the same afterwards.
    #[test]
    fn the_cache_is_packed_every_so_many_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, base) = seeded(dir.path());
        let loose = || {
            let counts = run(&repo.path, &["count-objects", "-v"]);
            counts
                .lines()
                .find_map(|l| l.strip_prefix("count: "))
                .unwrap()
                .parse::<usize>()
                .unwrap()
        };
        for i in 0..TIDY_EVERY {
            let commit = release_commit(&repo, base, i);
            repo.push(&[(format!("release/{i}"), commit)]).unwrap();
            if i == TIDY_EVERY - 2 {
                assert!(loose() > 0, "loose objects before the tidy-up");
            }
        }
        assert_eq!(loose(), 0, "packed after {TIDY_EVERY} pushes");
        let packed = std::fs::read_to_string(repo.path.join("packed-refs")).unwrap();
        assert!(packed.contains("refs/remotes/origin/release/0"), "{packed}");
        let branches = repo.remote_branches("release/").unwrap();
        assert_eq!(branches.len(), TIDY_EVERY);
    }

    /// A remote that accepts the connection and never answers is given up after the limit,
    /// and the error says so (rather than the job hanging until the process is killed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_that_never_answers_is_given_up_after_the_limit() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and keeps every connection open without a byte of answer.
        let held = std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming().take(2) {
                open.push(stream);
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
        });
        let cache = tempfile::tempdir().unwrap();
        let remote = Remote::new(format!("http://127.0.0.1:{port}/deploy.git"), None)
            .with_time_limit(std::time::Duration::from_millis(500));
        let repo = DeployRepo::open(remote, cache.path()).unwrap();
        let err = repo.remote_branches("release/").unwrap_err();
        match &err {
            GitError::TimedOut { remote, limit, .. } => {
                assert_eq!(remote, &format!("http://127.0.0.1:{port}/deploy.git"));
                assert_eq!(*limit, std::time::Duration::from_millis(500));
            }
            other => panic!("expected a time-out, got {other}"),
        }
        assert!(
            err.to_string().contains("within 0.5 s and was stopped"),
            "{err}"
        );
        // The helper git started for the transport (`git-remote-http`) was stopped with it.
        let url = format!("127.0.0.1:{port}/deploy.git");
        let still_running = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
                .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&url))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while still_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!still_running(), "a git process for {url} is still running");
        drop(held);
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    /// A bare remote with `n` commits besides `main` (each on a branch of its own), and an
    /// empty cache of it.
    fn remote_with_commits(n: usize) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let remote = Repository::init_bare(dir.path().join("remote.git")).unwrap();
        let sig = Signature::now("t", "t@example.com").unwrap();
        let empty = remote.treebuilder(None).unwrap().write().unwrap();
        let empty = remote.find_tree(empty).unwrap();
        let base = remote
            .commit(Some("refs/heads/main"), &sig, &sig, "base", &empty, &[])
            .unwrap();
        let base = remote.find_commit(base).unwrap();
        let commits = (0..n)
            .map(|i| {
                let blob = remote.blob(format!("{i}").as_bytes()).unwrap();
                let mut tree = remote.treebuilder(None).unwrap();
                tree.insert("f", blob, 0o100644).unwrap();
                let tree = remote.find_tree(tree.write().unwrap()).unwrap();
                let branch = format!("refs/heads/b{i}");
                remote
                    .commit(Some(&branch), &sig, &sig, "m", &tree, &[&base])
                    .unwrap()
                    .to_string()
            })
            .collect();
        (dir, commits)
    }

    fn open(dir: &Path) -> DeployRepo {
        let url = dir.join("remote.git").to_str().unwrap().to_string();
        DeployRepo::open(Remote::new(url, None), &dir.join("cache")).unwrap()
    }

    /// Each of `commits` fetched from a thread of its own, into the cache at `dir`, at once.
    fn fetch_at_once(dir: &Path, commits: &[String]) -> Vec<Result<Oid, GitError>> {
        let askers: Vec<_> = commits
            .iter()
            .map(|c| {
                let (repo, c) = (open(dir), c.clone());
                std::thread::spawn(move || repo.fetch_any_commit(&c))
            })
            .collect();
        askers.into_iter().map(|a| a.join().unwrap()).collect()
    }

    /// Commits asked for at once are all fetched (in as few commands as came together), each
    /// caller's into the one cache.
    #[test]
    fn commits_asked_for_at_once_are_all_fetched() {
        let (dir, commits) = remote_with_commits(6);
        for (fetched, commit) in fetch_at_once(dir.path(), &commits)
            .into_iter()
            .zip(&commits)
        {
            assert_eq!(fetched.unwrap().to_string(), *commit);
        }
        let cache = open(dir.path());
        for c in &commits {
            assert!(cache.repo().find_commit(Oid::from_str(c).unwrap()).is_ok());
        }
    }

    /// One commit the remote does not have fails a fetch of several (git refuses the whole
    /// command); each is then fetched alone: the others arrive, only the missing one fails.
    #[test]
    fn a_missing_commit_in_a_batch_fails_only_its_own_fetch() {
        let (dir, commits) = remote_with_commits(4);
        let missing = "0123456789abcdef0123456789abcdef01234567".to_string();
        assert!(
            open(dir.path())
                .fetch_by_ids(&[commits[0].clone(), missing.clone()], "--depth=1")
                .is_err()
        );
        let mut wanted = commits.clone();
        wanted.insert(2, missing.clone());
        for (fetched, commit) in fetch_at_once(dir.path(), &wanted).into_iter().zip(&wanted) {
            assert_eq!(
                fetched.is_err(),
                *commit == missing,
                "{commit}: {fetched:?}"
            );
        }
    }
}
