//! Many releases at once: N triggers for N services of one deployment repository, pushed one
//! after another without waiting, then every pull request approved. Reports how long until all
//! pull requests are open and until all are merged, against the fake GitHub (or GitLab) and the
//! real bot, store and git, as the scenarios run them.
//!
//! usage: cargo bench --bench many_releases -- [N] [github|gitlab]     (bench/many-releases.sh)

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_forge::{Flavor, User};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(500);
    let forge = match args.get(1).map(String::as_str) {
        Some("gitlab") => Flavor::Gitlab,
        _ => Flavor::Github,
    };
    // RC_LOG=release_coordinator=debug shows what the bot does (on stderr).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RC_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(n, forge));
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> usize, n: usize) -> Duration {
    let start = Instant::now();
    loop {
        let count = done();
        if count >= n {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            panic!("{what}: {count} of {n} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(n: usize, forge: Flavor) {
    let w = World::with_services(forge, n).await;
    let triggers: Vec<Vec<(&str, Vec<u8>)>> = (1..=n).map(service_trigger).collect();
    // The deployment repository counts the pushes it takes (releases push together when they
    // push at once).
    let deploy_git = w.fake.lock().repos[DEPLOY].path.clone();
    let hook = deploy_git.join("hooks/post-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho push >> \"$GIT_DIR/pushes\"\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pushes = || {
        std::fs::read_to_string(deploy_git.join("pushes"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };

    let start = Instant::now();
    for files in &triggers {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
        w.fake
            .push(APP, "main", &files, &[], "dave", "Promote")
            .await;
    }
    let pushed = start.elapsed();
    let open = |w: &World| {
        let st = w.fake.lock();
        st.repos[DEPLOY].pulls.iter().filter(|p| p.open).count()
    };
    let opened = wait_until(
        "pull requests open",
        Duration::from_secs(1800),
        || open(&w),
        n,
    )
    .await;
    let all_open = start.elapsed();
    println!(
        "{n} triggers pushed in {:.1} s; all {n} pull requests open {:.1} s after the first push ({:.1} s after the last); their branches came in {} pushes",
        pushed.as_secs_f64(),
        all_open.as_secs_f64(),
        opened.as_secs_f64(),
        pushes()
    );

    let numbers: Vec<u64> = w.fake.lock().repos[DEPLOY]
        .pulls
        .iter()
        .map(|p| p.number)
        .collect();
    let approving = Instant::now();
    for number in &numbers {
        w.fake
            .comment(DEPLOY, *number, User::human("alice"), "/approve")
            .await;
    }
    let merged = |w: &World| {
        let st = w.fake.lock();
        st.repos[DEPLOY].pulls.iter().filter(|p| p.merged).count()
    };
    let limit = Duration::from_secs(
        std::env::var("BENCH_MERGE_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1800),
    );
    if tokio::time::timeout(
        limit,
        wait_until("pull requests merged", limit * 2, || merged(&w), n),
    )
    .await
    .is_err()
    {
        // Say what the ones left wait for: the bot's last word on each.
        {
            let st = w.fake.lock();
            let repo = &st.repos[DEPLOY];
            for pull in repo.pulls.iter().filter(|p| !p.merged).take(3) {
                let last = repo.comments.iter().rev().find(|c| c.number == pull.number);
                eprintln!(
                    "#{} not merged; last comment: {}",
                    pull.number,
                    last.map(|c| c.body.as_str()).unwrap_or("(none)")
                );
            }
        }
        eprintln!("{} of {n} merged after {limit:?}", merged(&w));
        std::process::exit(1);
    }
    let took = approving.elapsed();
    // The last merges' branches are deleted right after them.
    w.settle().await;
    let branches = {
        let st = w.fake.lock();
        let git = st.repos[DEPLOY].git();
        git.branches(Some(git2::BranchType::Local))
            .unwrap()
            .filter(|b| {
                b.as_ref()
                    .ok()
                    .and_then(|b| b.0.name().ok().flatten().map(|n| n.starts_with("release/")))
                    .unwrap_or(false)
            })
            .count()
    };
    println!(
        "all {n} approved and merged in {:.1} s ({:.1} merges/s); release branches left: {branches}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
