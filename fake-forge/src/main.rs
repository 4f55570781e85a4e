//! `fake-forge`: the fake GitHub (or, with `--gitlab`, the fake GitLab) on its own, for trying
//! the bot locally.
//!
//! usage: fake-forge --root DIR [--gitlab] [--control-port PORT] [--webhook URL --secret SECRET]
//!                   [--repo OWNER/NAME=SEED_DIR]... [--team ORG/SLUG=LOGIN]...
//!
//! Each `--repo` becomes a bare repository under DIR/git whose first commit holds the files of
//! SEED_DIR (recursively). The fake prints its API URL and clone base, then serves until
//! interrupted. The bot talks to it as to GitHub (or GitLab). People's actions go to a control
//! port:
//!
//!   POST /push     {"repo", "branch", "user", "message", "files": {"path": "content"}}
//!   POST /comment  {"repo", "number", "user", "body"}
//!   POST /review   {"repo", "number", "user", "state": "APPROVED"}
//!   POST /check    {"repo", "sha", "name", "conclusion": "success" | "failure" | null}
//!
//! Each sends the webhook the forge would send (on GitLab, `/review` is the approve button and
//! `/check` a job of the commit's pipeline).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use fake_forge::{FakeGithub, User};
use serde_json::Value;

type Fake = State<Arc<FakeGithub>>;

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

async fn push(State(f): Fake, Json(v): Json<Value>) -> String {
    let files: Vec<(String, Vec<u8>)> = v["files"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, c)| {
                    (
                        k.clone(),
                        c.as_str().unwrap_or_default().as_bytes().to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    f.push(
        &text(&v, "repo"),
        &text(&v, "branch"),
        &refs,
        &[],
        &text(&v, "user"),
        &text(&v, "message"),
    )
    .await
}

async fn comment(State(f): Fake, Json(v): Json<Value>) -> String {
    let id = f
        .comment(
            &text(&v, "repo"),
            v["number"].as_u64().unwrap_or_default(),
            User::human(&text(&v, "user")),
            &text(&v, "body"),
        )
        .await;
    id.to_string()
}

async fn review(State(f): Fake, Json(v): Json<Value>) -> String {
    let id = f
        .review(
            &text(&v, "repo"),
            v["number"].as_u64().unwrap_or_default(),
            User::human(&text(&v, "user")),
            &text(&v, "state"),
        )
        .await;
    id.to_string()
}

async fn check(State(f): Fake, Json(v): Json<Value>) -> &'static str {
    f.check_run(
        &text(&v, "repo"),
        &text(&v, "sha"),
        &text(&v, "name"),
        v["conclusion"].as_str(),
    )
    .await;
    "ok"
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut root: Option<PathBuf> = None;
    let mut webhook: Option<String> = None;
    let mut secret = String::new();
    let mut repos = Vec::new();
    let mut teams = Vec::new();
    let mut control_port: u16 = 0;
    let mut flavor = fake_forge::Flavor::Github;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--root" => root = Some(value()?.into()),
            "--webhook" => webhook = Some(value()?),
            "--secret" => secret = value()?,
            "--repo" => repos.push(value()?),
            "--team" => teams.push(value()?),
            "--control-port" => control_port = value()?.parse()?,
            "--gitlab" => flavor = fake_forge::Flavor::Gitlab,
            "--help" | "-h" => {
                println!(
                    "usage: fake-forge --root DIR [--gitlab] [--webhook URL --secret SECRET] [--repo OWNER/NAME=SEED_DIR]... [--team ORG/SLUG=LOGIN]...\n  --gitlab  play GitLab (REST API under /api/v4, GitLab's hooks with the secret as X-Gitlab-Token); teams are group paths"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}; see --help"),
        }
    }
    let root = root.ok_or_else(|| anyhow::anyhow!("--root DIR is required"))?;
    let fake = FakeGithub::start_as(&root, flavor).await;
    for spec in &repos {
        let (name, seed) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--repo wants OWNER/NAME=SEED_DIR, got {spec}"))?;
        let mut files = Vec::new();
        files_of(Path::new(seed), "", &mut files)?;
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        fake.create_repo(name, "main", &refs);
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
    match flavor {
        fake_forge::Flavor::Github => println!("fake GitHub API at {}", fake.api_url()),
        fake_forge::Flavor::Gitlab => println!("fake GitLab at    {}/api/v4", fake.api_url()),
    }
    println!("clone base       {}", fake.clone_base());
    let fake = Arc::new(fake);
    let control = tokio::net::TcpListener::bind(("127.0.0.1", control_port)).await?;
    println!("control          http://{}", control.local_addr()?);
    let app = axum::Router::new()
        .route("/push", post(push))
        .route("/comment", post(comment))
        .route("/review", post(review))
        .route("/check", post(check))
        .with_state(fake);
    tokio::select! {
        r = axum::serve(control, app) => r?,
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
