//! The command line: the edge where errors become exit codes and text.
//!
//! Exit codes: 0 success; 1 the input is invalid or the request is refused (the message says
//! what to change); 2 the command could not run (bad arguments, git or disk failures).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;

use crate::config::OperatorConfig;
use crate::diagnostics::Diagnostics;
use crate::git::AppRepoInfo;
use crate::inputs::AppInputs;
use crate::release::plan::ReleasePlan;
use crate::release::validate::{Context, check_inputs, decide};
use crate::release::{self, ReleaseError};
use crate::signing;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "release-coordinator",
    version,
    about = "GitOps release bot: promotion triggers in, signed release branches out"
)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, env = "RC_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a trigger directory (and, with --config, against the operator's configuration).
    Validate {
        /// Directory holding promotion-trigger.yaml and milestone-status.json.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, env = "RC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show what a release would do: version, environments, services and the exact diffs.
    Plan {
        #[arg(long, env = "RC_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        trigger_dir: PathBuf,
        #[arg(long, default_value = "text")]
        format: OutputFormat,
    },
    /// Build the release branches in the deployment repository and record the release.
    Release {
        #[arg(long, env = "RC_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        trigger_dir: PathBuf,
        /// Push the release branches to the deployment repository's remote.
        #[arg(long)]
        push: bool,
        /// Store URL, overriding `defaults.store` (e.g. sqlite://release-coordinator.db).
        #[arg(long, env = "RC_STORE")]
        store: Option<String>,
    },
    /// Run the bot: receive forge webhooks and store each delivery durably before answering.
    Serve {
        #[arg(long, env = "RC_CONFIG")]
        config: PathBuf,
        /// Address to listen on; port 0 picks a free port (the address is printed).
        #[arg(long, env = "RC_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Store URL, overriding `defaults.store`.
        #[arg(long, env = "RC_STORE")]
        store: Option<String>,
        /// The git cache, overriding `deployment.cacheDir` (relative to the working directory).
        #[arg(long, env = "RC_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        limits: crate::server::DoorLimits,
        /// Seconds between reconcile passes (each re-reads the forge for releases in flight).
        #[arg(long, env = "RC_RECONCILE_SECS", default_value_t = 300)]
        reconcile_every_secs: u64,
        /// Longest time one delivery's handling may take before it is stopped and retried.
        #[arg(long, env = "RC_JOB_TIMEOUT_SECS", default_value_t = 300)]
        job_timeout_secs: u64,
        /// Deliveries handled at once (events about one release are always handled one at a
        /// time; those about one pull request, branch or commit in the order they came).
        #[arg(long, env = "RC_JOBS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
    },
    /// Show each release in flight (and the last finished ones) from the store: its state,
    /// pull requests, what each waits for, and its last failed attempt.
    Status {
        /// Only this release.
        version: Option<String>,
        #[arg(long, env = "RC_CONFIG")]
        config: PathBuf,
        /// Store URL, overriding `defaults.store`.
        #[arg(long, env = "RC_STORE")]
        store: Option<String>,
        /// How many finished releases to show besides those in flight.
        #[arg(long, default_value_t = 10)]
        recent: u32,
        #[arg(long, default_value = "text")]
        format: OutputFormat,
    },
    /// Print a release's audit log from the store (every release's, newest last, without
    /// VERSION).
    Audit {
        version: Option<String>,
        #[arg(long, env = "RC_CONFIG")]
        config: PathBuf,
        /// Store URL, overriding `defaults.store`.
        #[arg(long, env = "RC_STORE")]
        store: Option<String>,
        #[arg(long, default_value = "text")]
        format: OutputFormat,
    },
    /// Create an Ed25519 key pair: PATH (private, mode 0600) and PATH.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the signature of a signed-release-manifest.yaml.
    Verify {
        /// The public key (SubjectPublicKeyInfo PEM).
        #[arg(long)]
        key: PathBuf,
        manifest: PathBuf,
    },
    /// Write the JSON Schemas of promotion-trigger.yaml and milestone-status.json.
    Schema {
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

pub fn main() -> ExitCode {
    // A usage error is invalid input (exit 1, as documented), not clap's 2, which here means
    // the command could not run; `--help` and `--version` exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The bot tells what it does at `info`; a one-shot command speaks through its output.
    let default_filter = match cli.command {
        Command::Serve { .. } => "warn,release_coordinator=info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_filter);
    // A one-shot command whose reader goes away (`status | head`) ends quietly, as Unix tools
    // do, instead of panicking on the broken pipe. The service keeps Rust's default (SIGPIPE
    // ignored): a client that hangs up is an error on that connection, not the end.
    if !matches!(cli.command, Command::Serve { .. }) {
        // SAFETY: done first, before any other thread exists; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The service uses every core; a one-shot command needs no threads of its own.
    let mut builder = if matches!(cli.command, Command::Serve { .. }) {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.thread_stack_size(crate::worker::STACK_SIZE);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli.command))
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RC_LOG")
        .unwrap_or_else(|_| default_filter.into());
    // Colours only for a person at a terminal: a file or a log collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whole seconds: release commits carry the time, and a resumed run must rebuild them exactly.
/// The release time, in whole seconds as commits carry it. `SOURCE_DATE_EPOCH` (the
/// reproducible-builds convention) fixes it, so a release's commits can be made again
/// byte for byte.
fn now() -> OffsetDateTime {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(|| {
            OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .expect("0 is a valid nanosecond")
        })
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Validate { dir, config } => validate(&dir, config.as_deref()).await,
        Command::Plan {
            config,
            trigger_dir,
            format,
        } => plan(&config, &trigger_dir, format).await,
        Command::Release {
            config,
            trigger_dir,
            push,
            store,
        } => release(&config, &trigger_dir, push, store).await,
        Command::Serve {
            config,
            listen,
            store,
            cache_dir,
            limits,
            reconcile_every_secs,
            job_timeout_secs,
            jobs,
        } => {
            let pacing = crate::worker::Pacing {
                reconcile_every: std::time::Duration::from_secs(reconcile_every_secs),
                job_limit: std::time::Duration::from_secs(job_timeout_secs.max(1)),
                jobs: jobs.into(),
                ..Default::default()
            };
            serve(&config, listen, store, cache_dir, limits, pacing).await
        }
        Command::Status {
            version,
            config,
            store,
            recent,
            format,
        } => status(&config, store, version.as_deref(), recent, format).await,
        Command::Audit {
            version,
            config,
            store,
            format,
        } => audit(&config, store, version.as_deref(), format).await,
        Command::Keygen { out } => match signing::keygen(&out) {
            Ok((id, public)) => {
                println!(
                    "private key: {} (mode 0600)\npublic key:  {}\nkey id:      {id}",
                    out.display(),
                    public.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(2, &e.to_string()),
        },
        Command::Verify { key, manifest } => verify(&key, &manifest),
        Command::Schema { out } => {
            if let Err(e) = std::fs::create_dir_all(&out) {
                return fail(2, &format!("cannot create {}: {e}", out.display()));
            }
            for (name, text) in crate::inputs::json_schemas() {
                let path = out.join(name);
                if let Err(e) = std::fs::write(&path, text) {
                    return fail(2, &format!("cannot write {}: {e}", path.display()));
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn report(d: &Diagnostics) -> ExitCode {
    for problem in &d.0 {
        eprintln!("{problem}");
    }
    if d.omitted() > 0 {
        eprintln!("(the first {} are shown)", d.0.len());
    }
    let n = d.total();
    eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
    ExitCode::from(1)
}

/// The plan with image digests pinned where services have `digestPath`, asked of the
/// registries with the credentials `images:` names.
async fn with_digests(
    config: &OperatorConfig,
    prepared: release::Prepared,
) -> Result<release::Prepared, ReleaseError> {
    let Some(images) = &config.orchestration.images else {
        return Ok(prepared);
    };
    if release::plan::needs_digests(config, &prepared.plan).is_empty() {
        return Ok(prepared);
    }
    let registries = crate::images::Registries::new(images, &|var| std::env::var(var).ok())
        .map_err(ReleaseError::Refused)?;
    release::pin_digests(config, prepared, &registries).await
}

fn release_failure(e: &ReleaseError) -> ExitCode {
    match e {
        ReleaseError::Invalid(d) => report(d),
        ReleaseError::Refused(msg) | ReleaseError::ImagesMissing(msg) => fail(1, msg),
        // A key that is missing or not a key is the operator's configuration to fix.
        ReleaseError::Signing(
            e @ (signing::SigningError::MissingKey { .. } | signing::SigningError::BadKey { .. }),
        ) => fail(1, &e.to_string()),
        other => fail(2, &other.to_string()),
    }
}

/// The configured signing key, if it cannot be loaded: at `signing.keyFile`, with what to do.
fn signing_key_problem(config: &OperatorConfig) -> Option<crate::diagnostics::Diagnostic> {
    let signing = &config.orchestration.signing;
    let path = config.resolve_path(&signing.key_file);
    let e = signing::ReleaseSigner::load(&path, signing.key_id.clone()).err()?;
    Some(
        config
            .orchestration_src
            .at(crate::route!["signing", "keyFile"], e.to_string()),
    )
}

/// The store's URL: `--store`, or the configuration's (relative to its folder). A store left
/// where earlier versions looked for it (relative to the working directory) is not passed over
/// for a new, empty one: that would forget every version used and every release in flight.
fn store_url(config: &OperatorConfig, flag: Option<String>) -> Result<String, ExitCode> {
    if let Some(url) = flag {
        return Ok(url);
    }
    let url = config.store_url();
    let written = &config.orchestration.defaults.store;
    if let (Some(new), Some(old)) = (
        crate::store::sqlite_path(&url),
        crate::store::sqlite_path(written),
    ) {
        let (new, old) = (Path::new(new), Path::new(old));
        let same = std::path::absolute(new).ok() == std::path::absolute(old).ok();
        if !same && !new.exists() && old.exists() {
            return Err(fail(
                1,
                &format!(
                    "the store is now looked for beside the configuration, at {}, and is not there; \
                     {} (relative to the working directory, where earlier versions kept it) exists: \
                     move it there, or pass --store sqlite://{}",
                    new.display(),
                    old.display(),
                    std::path::absolute(old)
                        .unwrap_or(old.to_path_buf())
                        .display()
                ),
            ));
        }
    }
    Ok(url)
}

/// Opens the store, or says which one could not be opened.
async fn open_store(url: &str) -> Result<Store, ExitCode> {
    Store::open(url)
        .await
        .map_err(|e| fail(2, &format!("cannot open the store {url}: {e}")))
}

/// The store named by the configuration (or `--store`), which must exist, opened to read
/// only: reading commands never create or change one.
async fn existing_store(config_path: &Path, flag: Option<String>) -> Result<Store, ExitCode> {
    let config = OperatorConfig::load(config_path).map_err(|d| report(&d))?;
    let url = store_url(&config, flag)?;
    match Store::open_read_only(&url).await {
        Ok(Some(store)) => Ok(store),
        Ok(None) => Err(fail(
            1,
            &format!(
                "there is no store at {url} yet: nothing has been released with this configuration"
            ),
        )),
        Err(e) => Err(fail(2, &format!("cannot open the store {url}: {e}"))),
    }
}

async fn status(
    config_path: &Path,
    store_flag: Option<String>,
    version: Option<&str>,
    recent: u32,
    format: OutputFormat,
) -> ExitCode {
    let store = match existing_store(config_path, store_flag).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let releases = match store.release_overviews(version, recent.into()).await {
        Ok(r) => r,
        Err(e) => return fail(2, &e.to_string()),
    };
    if let Some(v) = version
        && releases.is_empty()
    {
        return fail(1, &format!("no release {v} in the store"));
    }
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&releases).expect("overviews serialize")
        );
        return ExitCode::SUCCESS;
    }
    if releases.is_empty() {
        println!(
            "no releases in flight or finished yet (a refused trigger makes none: the commit status and comment on the trigger commit, and the bot's log, say why)"
        );
    }
    for r in &releases {
        let from = match (&r.app_repo, &r.app_commit) {
            (Some(repo), Some(commit)) => format!("{repo}@{}, ", &commit[..commit.len().min(12)]),
            _ => String::new(),
        };
        println!(
            "{}  {}  ({from}updated {})",
            r.version, r.state, r.updated_at
        );
        for e in &r.environments {
            let pr = match (e.pull_request, &e.url) {
                (Some(n), Some(url)) => format!("#{n} {url}"),
                (Some(n), None) => format!("#{n}"),
                _ => String::new(),
            };
            // An environment whose rollback pull request merged runs what it ran before.
            let rolled_back = r.environments.iter().any(|o| {
                crate::store::forge_releases::rolled_back_environment(&o.environment)
                    == Some(e.environment.as_str())
                    && o.pull_request_state == crate::release::bot::PrState::Merged.as_str()
            });
            let state = match &e.deployment {
                _ if rolled_back => format!("{}, rolled back", e.pull_request_state),
                Some(d) => format!("{}, {d}", e.pull_request_state),
                None => e.pull_request_state.clone(),
            };
            println!("  {:<12} {state:<9} {pr}", e.environment);
            if let Some(w) = &e.waits_for {
                println!("  {:<12} {w}", "");
            }
        }
        if let Some(err) = &r.last_error {
            println!("  last error ({}): {}", err.at, err.error);
        }
    }
    ExitCode::SUCCESS
}

async fn audit(
    config_path: &Path,
    store_flag: Option<String>,
    version: Option<&str>,
    format: OutputFormat,
) -> ExitCode {
    let store = match existing_store(config_path, store_flag).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let entries = match store.audit_entries(version).await {
        Ok(e) => e,
        Err(e) => return fail(2, &e.to_string()),
    };
    if let Some(v) = version
        && entries.is_empty()
    {
        return fail(1, &format!("no release {v} in the store"));
    }
    if entries.is_empty() && format == OutputFormat::Text {
        println!("no releases in the store yet");
    }
    for (release, e) in &entries {
        if format == OutputFormat::Json {
            let line = serde_json::json!({
                "release": release, "at": e.at, "event": e.event, "actor": e.actor, "detail": e.detail,
            });
            println!("{line}");
        } else {
            println!(
                "{}  {release}  {}  by {}  {}",
                e.at, e.event, e.actor, e.detail
            );
        }
    }
    ExitCode::SUCCESS
}

/// Creates `dir` if needed and checks that a file can be written in it.
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tempfile::tempfile_in(dir).map(drop)
}

/// Reads each named environment variable as a secret; the error names the variable only.
fn secrets_from_env(vars: &[String], setting: &str) -> Result<Vec<secrecy::SecretString>, String> {
    vars.iter()
        .map(|var| match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(secrecy::SecretString::from(v)),
            _ => Err(format!(
                "environment variable {var} ({setting}) is not set or empty"
            )),
        })
        .collect()
}

async fn serve(
    config_path: &Path,
    listen: std::net::SocketAddr,
    store_flag: Option<String>,
    cache_flag: Option<PathBuf>,
    limits: crate::server::DoorLimits,
    pacing: crate::worker::Pacing,
) -> ExitCode {
    use crate::server::ServiceConfig;
    let mut config = match OperatorConfig::load(config_path) {
        Ok(c) => c,
        Err(d) => return report(&d),
    };
    if let Some(dir) = cache_flag {
        config.orchestration.deployment.cache_dir = std::path::absolute(&dir).unwrap_or(dir);
    }
    // A failed delivery is tried again this many times; then reconcile goes on with it.
    let pacing = crate::worker::Pacing {
        retries: config.orchestration.defaults.max_retries,
        ..pacing
    };
    // What every release will need, checked once at start-up rather than at the first release.
    if let Some(problem) = signing_key_problem(&config) {
        return fail(1, &problem.to_string());
    }
    let cache = config.resolve_path(&config.orchestration.deployment.cache_dir);
    if let Err(e) = writable_dir(&cache) {
        return fail(
            2,
            &format!(
                "the git cache {} (deployment.cacheDir) is not writable: {e}",
                cache.display()
            ),
        );
    }
    let forges = config.orchestration.forges.clone();
    let github_secrets = match &forges.github {
        Some(g) => {
            match secrets_from_env(&g.webhook_secret_env, "forges.github.webhookSecretEnv") {
                Ok(s) => Some(s),
                Err(e) => return fail(1, &e),
            }
        }
        None => None,
    };
    let gitlab_tokens = match &forges.gitlab {
        Some(g) => match secrets_from_env(&g.webhook_token_env, "forges.gitlab.webhookTokenEnv") {
            Ok(t) => Some(t),
            Err(e) => return fail(1, &e),
        },
        None => None,
    };
    // Argo CD: the API token is needed; the notification route opens with its tokens.
    let (argocd, argocd_tokens) = match &config.orchestration.argocd {
        Some(a) => {
            let token =
                match secrets_from_env(std::slice::from_ref(&a.token_env), "argocd.tokenEnv") {
                    Ok(mut t) => t.remove(0),
                    Err(e) => return fail(1, &e),
                };
            let hooks = if a.webhook_token_env.is_empty() {
                None
            } else {
                match secrets_from_env(&a.webhook_token_env, "argocd.webhookTokenEnv") {
                    Ok(t) => Some(t),
                    Err(e) => return fail(1, &e),
                }
            };
            (Some(crate::argocd::ArgoCd::new(&a.url, token)), hooks)
        }
        None => (None, None),
    };
    let url = match store_url(&config, store_flag) {
        Ok(url) => url,
        Err(code) => return code,
    };
    let store = match open_store(&url).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The forge that hosts the deployment repository is the one the bot releases through.
    let (settings, forge) =
        match crate::forge::connect(&config, &|var| std::env::var(var).ok()).await {
            Ok(f) => f,
            Err(e) => return fail(1, &format!("{}: {e}", config_path.display())),
        };
    let registries = match &config.orchestration.images {
        Some(images) => {
            match crate::images::Registries::new(images, &|var| std::env::var(var).ok()) {
                Ok(r) => Some(r),
                Err(e) => return fail(1, &e),
            }
        }
        None => None,
    };
    let mut bot = crate::release::bot::Bot::new(config, settings, store, forge);
    if let Some(argocd) = argocd {
        bot = bot.with_argocd(argocd);
    }
    if let Some(registries) = registries {
        bot = bot.with_registries(registries);
    }
    let bot = std::sync::Arc::new(bot);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return fail(2, &format!("cannot listen on {listen}: {e}")),
    };
    let running = crate::server::start(
        bot,
        ServiceConfig {
            github_webhook_secrets: github_secrets,
            gitlab_webhook_tokens: gitlab_tokens,
            argocd_webhook_tokens: argocd_tokens,
            limits,
        },
        listener,
        pacing,
    );
    // Tests and scripts read this line to find the port.
    println!("listening on http://{}", running.addr);
    tracing::info!(address = %running.addr, "listening");
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => return fail(2, &format!("cannot handle SIGTERM: {e}")),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Every acknowledged delivery is already stored; work in progress resumes at the next
    // start from the store and the forge.
    tracing::info!("shutting down");
    running.abort();
    ExitCode::SUCCESS
}

async fn validate(dir: &Path, config: Option<&Path>) -> ExitCode {
    let inputs = match AppInputs::load(dir) {
        Ok(i) => i,
        Err(d) => {
            // The operator's files are worth checking too, even when the trigger is broken.
            let mut all = d;
            if let Some(Err(cd)) = config.map(OperatorConfig::load) {
                all.extend(cd);
            }
            return report(&all);
        }
    };
    let Some(config_path) = config else {
        let d = check_inputs(&inputs);
        if !d.is_empty() {
            return report(&d);
        }
        println!(
            "{}: valid (give --config to check against the operator's configuration too)",
            dir.display()
        );
        return ExitCode::SUCCESS;
    };
    let config = match OperatorConfig::load(config_path) {
        Ok(c) => c,
        Err(d) => {
            let mut all = check_inputs(&inputs);
            all.extend(d);
            return report(&all);
        }
    };
    let mut key_problem = signing_key_problem(&config);
    let app = match AppRepoInfo::discover(dir) {
        Ok(a) => a,
        Err(e) => return fail(2, &e.to_string()),
    };
    let recorded = match store_url(&config, None) {
        Err(code) => return code,
        Ok(url) => Store::open_existing(&url).await,
    };
    let recorded = match recorded {
        Ok(Some(s)) => match s.recorded_versions().await {
            Ok(v) => v,
            Err(e) => return fail(2, &e.to_string()),
        },
        Ok(None) => Vec::new(),
        Err(e) => return fail(2, &e.to_string()),
    };
    let ctx = Context {
        config: &config,
        inputs: &inputs,
        app: &app,
        recorded: &recorded,
        resumed_version: None,
        today: now().date(),
    };
    match decide(&ctx) {
        Ok(_) if key_problem.is_some() => {
            let mut d = Diagnostics::default();
            d.extend_from(key_problem.take());
            report(&d)
        }
        Err(mut d) => {
            d.extend_from(key_problem.take());
            report(&d)
        }
        Ok(spec) => {
            print_inert_settings(&config, &inputs);
            let envs: Vec<&str> = spec.environments.iter().map(|e| e.name.as_str()).collect();
            println!(
                "{}: valid; would release {} to {}",
                dir.display(),
                spec.version,
                envs.join(", ")
            );
            ExitCode::SUCCESS
        }
    }
}

async fn plan(config_path: &Path, trigger_dir: &Path, format: OutputFormat) -> ExitCode {
    let config = match OperatorConfig::load(config_path) {
        Ok(c) => c,
        Err(d) => return report(&d),
    };
    let store = match store_url(&config, None) {
        Err(code) => return code,
        Ok(url) => Store::open_existing(&url).await,
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => return fail(2, &e.to_string()),
    };
    let prepared = match release::prepare(&config, trigger_dir, store.as_ref(), now()).await {
        Ok(p) => with_digests(&config, p).await,
        Err(e) => Err(e),
    };
    match prepared {
        Ok(p) => {
            if let Ok(inputs) = AppInputs::load(trigger_dir) {
                print_inert_settings(&config, &inputs);
            }
            match format {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&p.plan).expect("plan serializes")
                ),
                OutputFormat::Text => print!("{}", render_plan(&p.plan)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => release_failure(&e),
    }
}

/// Settings that are set and not acted on yet, as notes on standard error.
fn print_inert_settings(config: &OperatorConfig, inputs: &AppInputs) {
    for d in crate::release::validate::inert_settings(config, inputs) {
        eprintln!("{}:{}:{}: note: {}", d.file, d.line, d.column, d.message);
    }
}

/// The plan as people read it: decisions with their reasons, then every diff.
pub fn render_plan(plan: &ReleasePlan) -> String {
    let s = &plan.spec;
    let mut out = format!("Release {}\n", s.version);
    out.push_str(&format!(
        "  version:     {} ({})\n",
        s.version, s.version_reason
    ));
    out.push_str(&format!(
        "  milestone:   {}\n  trace:       {}\n",
        s.milestone_id, s.trace_id
    ));
    out.push_str(&format!(
        "  base:        {} at {}\n",
        plan.base_branch,
        &plan.base_commit[..12]
    ));
    if let Some(q) = s.qa_coverage {
        out.push_str(&format!("  QA coverage: {q}%\n"));
    }
    if let Some(tag) = &s.git_tag {
        out.push_str(&format!("  git tag:     {tag} on the application commit\n"));
    }
    if !s.notify.is_empty() {
        out.push_str(&format!("  notify:      {}\n", s.notify.join(", ")));
    }
    if s.manual_approval_required {
        out.push_str("  approval:    required, because\n");
        for r in &s.manual_approval_reasons {
            out.push_str(&format!("               - {r}\n"));
        }
    } else {
        out.push_str("  approval:    not required by the trigger or the policy\n");
    }
    for (env, env_spec) in plan.environments.iter().zip(&s.environments) {
        out.push_str(&format!(
            "\nEnvironment {} -> branch {}\n",
            env.environment, env.branch
        ));
        if !env_spec.required_checks.is_empty() {
            out.push_str(&format!(
                "  required checks: {}\n",
                env_spec
                    .required_checks
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for c in &env.changes {
            out.push_str(&format!(
                "  {}: {} -> {} ({} in {})\n",
                c.service, c.old_tag, c.tag, c.tag_path, c.values_file
            ));
        }
        for f in &env.files {
            out.push_str(&indent(&f.diff));
        }
    }
    out.push_str("\nRelease documents (the same on every branch):\n");
    for d in &plan.documents {
        out.push_str(&format!("  {}\n", d.path));
    }
    for d in &plan.documents {
        out.push_str(&indent(&d.diff));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

async fn release(
    config_path: &Path,
    trigger_dir: &Path,
    push: bool,
    store_flag: Option<String>,
) -> ExitCode {
    let config = match OperatorConfig::load(config_path) {
        Ok(c) => c,
        Err(d) => return report(&d),
    };
    let url = match store_url(&config, store_flag) {
        Ok(url) => url,
        Err(code) => return code,
    };
    let store = match open_store(&url).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let prepared = match release::prepare(&config, trigger_dir, Some(&store), now()).await {
        Ok(p) => with_digests(&config, p).await,
        Err(e) => Err(e),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => return release_failure(&e),
    };
    let cache = prepared.repo.path.clone();
    match release::execute(prepared, &store, push, "cli").await {
        Ok(outcome) => {
            let verb = if outcome.resumed {
                "Resumed"
            } else {
                "Recorded"
            };
            println!("{verb} release {} ({})", outcome.version, outcome.state);
            for b in &outcome.branches {
                let pushed = if b.pushed { "pushed" } else { "built" };
                println!("  {pushed} {} at {}", b.branch, &b.commit_id[..12]);
            }
            if !outcome.pushed {
                println!(
                    "Branches are in the cache {}; run again with --push to publish them.",
                    cache.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => release_failure(&e),
    }
}

fn verify(key: &Path, manifest: &Path) -> ExitCode {
    let public = match signing::load_public_key(key) {
        Ok(k) => k,
        Err(e) => return fail(2, &e.to_string()),
    };
    let text = match std::fs::read_to_string(manifest) {
        Ok(t) => t,
        Err(e) => return fail(2, &format!("cannot read {}: {e}", manifest.display())),
    };
    // A tag message or release notes carry approval records; a manifest is one document.
    let blocks = signing::record_blocks(&text);
    let documents: Vec<&str> = if blocks.is_empty() {
        vec![text.as_str()]
    } else {
        blocks
    };
    let mut failed = false;
    for (i, doc) in documents.iter().enumerate() {
        let what = if documents.len() > 1 || doc.len() != text.len() {
            format!("{} (approval record {})", manifest.display(), i + 1)
        } else {
            manifest.display().to_string()
        };
        match signing::verify_manifest(doc, &public) {
            Ok(id) => println!("{what}: valid signature by {id}"),
            Err(e) => {
                eprintln!("{what}: INVALID: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
