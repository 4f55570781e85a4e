//! `fake-forge`: the fake GitHub (or, with `--gitlab`, the fake GitLab) on its own, for trying
//! the bot locally (`demo/serve.sh` starts one with the bot). `fake-forge --help` lists the
//! options; the control port documents its actions at `GET /`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fake_forge::{FakeForge, Flavor, User};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: fake-forge --root DIR [options]

A stateful fake GitHub (or GitLab) over real bare git repositories, for running
release-coordinator locally. Repositories live under DIR/git; clone URLs are
file://DIR/git/OWNER/NAME.git.

options:
  --root DIR               where the fake keeps its repositories (required)
  --gitlab                 play GitLab: REST API under /api/v4, GitLab's hooks with the
                           secret as X-Gitlab-Token; --team values are group paths
  --api-port PORT          the forge's API port (default: a free one; the URL is printed)
  --control-port PORT      the port people act through (default: a free one); GET / on it
                           lists the actions and their bodies
  --webhook URL            where the forge's webhooks go (the bot's /webhooks/github or
                           /webhooks/gitlab)
  --secret SECRET          the webhook secret (GitHub signs with it; GitLab sends it)
  --repo OWNER/NAME=DIR    a repository whose first commit holds the files of DIR
                           (recursively), on branch main; repeatable
  --empty-repo OWNER/NAME  a repository whose first commit holds only a README; repeatable
  --team ORG/SLUG=LOGIN    LOGIN is a member of the team (GitLab: the group); repeatable
  --argocd-app NAME=OWNER/NAME
                           a fake Argo CD Application NAME deploying the repository's main
                           branch (answered at /api/v1/applications/NAME on the API port);
                           repeatable
  --argocd-token TOKEN     the only bearer token the fake Argo CD API accepts (default: any)
  --argocd-webhook URL     where Argo CD notifications go (the bot's /webhooks/argocd)
  --argocd-webhook-token TOKEN
                           the bearer token the notifications carry
  -h, --help               this text

Reads of the API (GET) need no token here, so `curl` can look around; writes want any token
(GitHub: Authorization, GitLab: PRIVATE-TOKEN).
";

/// What `GET /` on the control port answers.
const CONTROL_HELP: &str = "\
fake-forge control port: what people do on the forge. Each action sends the webhook the forge
would send. Bodies are JSON; answers are JSON, or 4xx with a message.

POST /push     {\"repo\": \"acme/shop\", \"branch\": \"main\", \"user\": \"dave\", \"message\": \"...\",
                \"files\": {\"path/in/repo\": \"content\", ...}}
               or, instead of \"files\", \"dir\": \"/local/folder\" (every file under it) and
               optionally \"under\": \"release\" (the folder in the repository to put them in)
               -> {\"commit\": SHA}
POST /comment  {\"repo\": \"acme/deploy\", \"number\": 1, \"user\": \"alice\", \"body\": \"/approve\"}
               -> {\"id\": ID}
POST /review   {\"repo\": \"acme/deploy\", \"number\": 1, \"user\": \"alice\", \"state\": \"APPROVED\"}
               (GitLab: the Approve button) -> {\"id\": ID}
POST /check    {\"repo\": \"acme/deploy\", \"number\": 1, \"name\": \"ci/build\", \"conclusion\": \"success\"}
               a check run on the pull request's head (or give \"sha\" instead of \"number\");
               conclusion \"success\", \"failure\" or null (still running). GitLab: a job of the
               commit's pipeline -> {\"sha\": SHA}
POST /argocd/sync   {\"app\": \"podinfo-staging\", \"phase\": \"Succeeded\", \"health\": \"Healthy\"}
               Argo CD syncs the Application to its branch's tip; phase \"Succeeded\", \"Failed\",
               \"Error\" or \"Running\"; health \"Healthy\", \"Progressing\", \"Degraded\",
               \"Missing\", \"Suspended\" or \"Unknown\"; sends the notification
               -> {\"revision\": SHA}
POST /argocd/health {\"app\": \"podinfo-staging\", \"health\": \"Degraded\"} the health changes
GET  /argocd        every Application: revision, sync status, phase, health
GET  /pulls    every pull (merge) request: repo, number, title, head branch and commit, state
GET  /releases the releases and tags of every repository
GET  /requests every API request the forge answered (method, path, status), oldest first: the
               bot's calls, and any reads made with curl
";

type Fake = State<Arc<FakeForge>>;

/// A control-port answer: JSON, or a status with a message people can act on.
type Answer = Result<Json<Value>, (StatusCode, String)>;

fn bad(message: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message + "\n")
}

fn text(v: &Value, key: &str) -> Result<String, (StatusCode, String)> {
    match v[key].as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(bad(format!(
            "\"{key}\" (a string) is missing; GET / lists the bodies"
        ))),
    }
}

/// The repository named in the body, which must exist.
fn repo(f: &FakeForge, v: &Value) -> Result<String, (StatusCode, String)> {
    let name = text(v, "repo")?;
    let st = f.lock();
    if st.repos.contains_key(&name) {
        return Ok(name);
    }
    let known: Vec<&str> = st.repos.keys().map(String::as_str).collect();
    Err((
        StatusCode::NOT_FOUND,
        format!(
            "no repository {name}; this fake has: {}\n",
            known.join(", ")
        ),
    ))
}

/// The pull request named in the body, which must exist in `repo`.
fn number(f: &FakeForge, repo: &str, v: &Value) -> Result<u64, (StatusCode, String)> {
    let number = match &v["number"] {
        Value::Null => {
            return Err(bad(
                "\"number\" (the pull request's number) is missing".into()
            ));
        }
        n => n.as_u64().ok_or_else(|| {
            bad(format!(
                "\"number\" must be a whole number such as 1, not {n}"
            ))
        })?,
    };
    if f.lock().repos[repo].pull(number).is_none() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("{repo} has no pull request {number}; GET /pulls lists them\n"),
        ));
    }
    Ok(number)
}

async fn push(State(f): Fake, Json(v): Json<Value>) -> Answer {
    let repo = repo(&f, &v)?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(dir) = v["dir"].as_str() {
        let under = v["under"].as_str().unwrap_or_default().trim_matches('/');
        let prefix = if under.is_empty() {
            String::new()
        } else {
            format!("{under}/")
        };
        files_of(Path::new(dir), &prefix, &mut files)
            .map_err(|e| bad(format!("reading {dir}: {e}")))?;
    } else if let Some(map) = v["files"].as_object() {
        for (path, content) in map {
            let content = content
                .as_str()
                .ok_or_else(|| bad(format!("the content of {path} is not a string")))?;
            files.push((path.clone(), content.as_bytes().to_vec()));
        }
    }
    if files.is_empty() {
        return Err(bad(
            "nothing to push: give \"files\" or \"dir\" (GET / lists the bodies)".into(),
        ));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let branch = v["branch"].as_str().unwrap_or("main");
    let message = v["message"].as_str().unwrap_or("A push through fake-forge");
    let commit = f
        .push(&repo, branch, &refs, &[], &text(&v, "user")?, message)
        .await;
    Ok(Json(json!({ "commit": commit })))
}

async fn comment(State(f): Fake, Json(v): Json<Value>) -> Answer {
    let repo = repo(&f, &v)?;
    let number = number(&f, &repo, &v)?;
    let id = f
        .comment(
            &repo,
            number,
            User::human(&text(&v, "user")?),
            &text(&v, "body")?,
        )
        .await;
    Ok(Json(json!({ "id": id })))
}

async fn review(State(f): Fake, Json(v): Json<Value>) -> Answer {
    let repo = repo(&f, &v)?;
    let number = number(&f, &repo, &v)?;
    let state = v["state"].as_str().unwrap_or("APPROVED");
    let id = f
        .review(&repo, number, User::human(&text(&v, "user")?), state)
        .await;
    Ok(Json(json!({ "id": id })))
}

async fn check(State(f): Fake, Json(v): Json<Value>) -> Answer {
    let repo = repo(&f, &v)?;
    let sha = match v["sha"].as_str() {
        Some(sha) => sha.to_string(),
        None => {
            let number = number(&f, &repo, &v)?;
            let st = f.lock();
            let r = &st.repos[&repo];
            let head = &r.pull(number).expect("checked above").head;
            r.branch_tip(head).ok_or_else(|| {
                (
                    StatusCode::CONFLICT,
                    format!("the branch {head} of pull request {number} is gone\n"),
                )
            })?
        }
    };
    // GitHub's conclusions of a completed check run; null is one still running.
    const CONCLUSIONS: [&str; 7] = [
        "success",
        "failure",
        "neutral",
        "cancelled",
        "skipped",
        "timed_out",
        "action_required",
    ];
    let conclusion = match &v["conclusion"] {
        Value::Null => None,
        Value::String(c) if CONCLUSIONS.contains(&c.as_str()) => Some(c.as_str()),
        other => {
            return Err(bad(format!(
                "\"conclusion\" must be one of {} or null (still running), not {other}",
                CONCLUSIONS.join(", ")
            )));
        }
    };
    f.check_run(&repo, &sha, &text(&v, "name")?, conclusion)
        .await;
    Ok(Json(json!({ "sha": sha })))
}

const PHASES: [&str; 4] = ["Succeeded", "Failed", "Error", "Running"];
const HEALTHS: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Missing",
    "Suspended",
    "Unknown",
];

/// The Application named in the body, which must exist.
fn argocd_app(f: &FakeForge, v: &Value) -> Result<String, (StatusCode, String)> {
    let name = text(v, "app")?;
    let st = f.lock();
    if st.argocd.apps.contains_key(&name) {
        return Ok(name);
    }
    let known: Vec<&str> = st.argocd.apps.keys().map(String::as_str).collect();
    Err((
        StatusCode::NOT_FOUND,
        format!(
            "no Argo CD Application {name}; this fake has: {} (--argocd-app adds one)\n",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    ))
}

fn one_of(
    v: &Value,
    key: &str,
    default: &str,
    allowed: &[&str],
) -> Result<String, (StatusCode, String)> {
    let value = v[key].as_str().unwrap_or(default);
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(bad(format!(
            "\"{key}\" must be one of {}, not {value}",
            allowed.join(", ")
        )))
    }
}

async fn argocd_sync(State(f): Fake, Json(v): Json<Value>) -> Answer {
    let app = argocd_app(&f, &v)?;
    let phase = one_of(&v, "phase", "Succeeded", &PHASES)?;
    let health = one_of(&v, "health", "Healthy", &HEALTHS)?;
    let revision = f.argocd_sync(&app, &phase, &health).await;
    Ok(Json(json!({ "revision": revision })))
}

async fn argocd_health(State(f): Fake, Json(v): Json<Value>) -> Answer {
    let app = argocd_app(&f, &v)?;
    let health = one_of(&v, "health", "Healthy", &HEALTHS)?;
    f.argocd_health(&app, &health).await;
    Ok(Json(json!({ "app": app, "health": health })))
}

async fn argocd_apps(State(f): Fake) -> Json<Value> {
    let st = f.lock();
    Json(Value::Array(
        st.argocd
            .apps
            .values()
            .map(|a| {
                json!({
                    "name": a.name,
                    "repo": a.repo,
                    "revision": a.revision,
                    "sync": a.sync_status,
                    "phase": a.phase,
                    "health": a.health,
                })
            })
            .collect(),
    ))
}

async fn pulls(State(f): Fake) -> Json<Value> {
    let st = f.lock();
    let mut out = Vec::new();
    for (name, r) in &st.repos {
        for p in &r.pulls {
            out.push(json!({
                "repo": name,
                "number": p.number,
                "title": p.title,
                "head": p.head,
                "sha": r.branch_tip(&p.head),
                "state": if p.merged { "merged" } else if p.open { "open" } else { "closed" },
            }));
        }
    }
    Json(Value::Array(out))
}

async fn releases(State(f): Fake) -> Json<Value> {
    let st = f.lock();
    let mut out = serde_json::Map::new();
    for (name, r) in &st.repos {
        let tags: Vec<String> = r
            .git()
            .tag_names(None)
            .map(|t| t.iter().flatten().flatten().map(str::to_string).collect())
            .unwrap_or_default();
        let releases: Vec<Value> = r
            .releases
            .iter()
            .map(|rel| json!({"tag": rel.tag, "name": rel.name}))
            .collect();
        out.insert(name.clone(), json!({ "tags": tags, "releases": releases }));
    }
    Json(Value::Object(out))
}

async fn requests(State(f): Fake) -> Json<Value> {
    let logged: Vec<Value> = f
        .requests()
        .into_iter()
        .map(|r| json!({"method": r.method, "path": r.path, "status": r.status}))
        .collect();
    Json(Value::Array(logged))
}

async fn help() -> Response {
    CONTROL_HELP.into_response()
}

async fn no_such_action(uri: axum::http::Uri) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!(
            "the control port has no action {}; GET / lists them\n",
            uri.path()
        ),
    )
}

fn files_of(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            files_of(&entry.path(), &format!("{name}/"), out)?;
        } else {
            out.push((name, std::fs::read(entry.path())?));
        }
    }
    Ok(())
}

async fn bind(port: u16, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port} for the {what}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut root: Option<PathBuf> = None;
    let mut webhook: Option<String> = None;
    let mut secret = String::new();
    let mut repos = Vec::new();
    let mut empty_repos = Vec::new();
    let mut teams = Vec::new();
    let mut api_port: u16 = 0;
    let mut control_port: u16 = 0;
    let mut flavor = Flavor::Github;
    let mut argocd_apps_wanted = Vec::new();
    let mut argocd_token: Option<String> = None;
    let mut argocd_webhook: Option<String> = None;
    let mut argocd_webhook_token = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value; see --help"))
        };
        match arg.as_str() {
            "--root" => root = Some(value()?.into()),
            "--webhook" => webhook = Some(value()?),
            "--secret" => secret = value()?,
            "--repo" => repos.push(value()?),
            "--empty-repo" => empty_repos.push(value()?),
            "--team" => teams.push(value()?),
            "--api-port" => api_port = value()?.parse()?,
            "--control-port" => control_port = value()?.parse()?,
            "--gitlab" => flavor = Flavor::Gitlab,
            "--argocd-app" => argocd_apps_wanted.push(value()?),
            "--argocd-token" => argocd_token = Some(value()?),
            "--argocd-webhook" => argocd_webhook = Some(value()?),
            "--argocd-webhook-token" => argocd_webhook_token = value()?,
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}; see --help"),
        }
    }
    let root = root.ok_or_else(|| anyhow::anyhow!("--root DIR is required; see --help"))?;
    let api = bind(api_port, "forge's API (--api-port)").await?;
    let control = bind(control_port, "control port (--control-port)").await?;
    let fake = FakeForge::serve_on(&root, flavor, api);
    fake.lock().anonymous_reads = true;
    for spec in &repos {
        let (name, seed) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--repo wants OWNER/NAME=SEED_DIR, got {spec}"))?;
        let mut files = Vec::new();
        files_of(Path::new(seed), "", &mut files)
            .map_err(|e| anyhow::anyhow!("--repo {spec}: reading {seed}: {e}"))?;
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        fake.create_repo(name, "main", &refs);
        println!("repository {name}: {}/{name}.git", fake.clone_base());
    }
    for name in &empty_repos {
        let readme = format!("# {name}\n");
        fake.create_repo(name, "main", &[("README.md", readme.as_bytes())]);
        println!("repository {name}: {}/{name}.git", fake.clone_base());
    }
    for spec in &teams {
        let (team, login) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--team wants ORG/SLUG=LOGIN, got {spec}"))?;
        fake.add_team_member(team, login);
    }
    if let Some(url) = webhook {
        fake.set_webhook(&url, &secret);
    }
    for spec in &argocd_apps_wanted {
        let (name, repo) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--argocd-app wants NAME=OWNER/NAME, got {spec}"))?;
        if !fake.lock().repos.contains_key(repo) {
            anyhow::bail!("--argocd-app {spec}: no repository {repo} (give it with --repo)");
        }
        fake.argocd_app(name, repo, "main");
    }
    {
        let mut st = fake.lock();
        st.argocd.token = argocd_token;
        st.argocd.notify = argocd_webhook.map(|url| (url, argocd_webhook_token));
    }
    if !argocd_apps_wanted.is_empty() {
        println!(
            "fake Argo CD at   {} (the bot's argocd.url)",
            fake.argocd_url()
        );
    }
    match flavor {
        Flavor::Github => println!("fake GitHub API at {} (the bot's apiUrl)", fake.api_url()),
        Flavor::Gitlab => println!(
            "fake GitLab at    {} (the bot's url; the API is under /api/v4)",
            fake.api_url()
        ),
    }
    println!(
        "clone base       {} (the bot's cloneUrlBase)",
        fake.clone_base()
    );
    println!(
        "control          http://{} (GET / lists the actions)",
        control.local_addr()?
    );
    let fake = Arc::new(fake);
    let app = axum::Router::new()
        .route("/", get(help))
        .route("/push", post(push))
        .route("/comment", post(comment))
        .route("/review", post(review))
        .route("/check", post(check))
        .route("/argocd", get(argocd_apps))
        .route("/argocd/sync", post(argocd_sync))
        .route("/argocd/health", post(argocd_health))
        .route("/pulls", get(pulls))
        .route("/releases", get(releases))
        .route("/requests", get(requests))
        .fallback(no_such_action)
        .with_state(fake);
    tokio::select! {
        r = axum::serve(control, app) => r?,
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
