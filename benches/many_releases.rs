//! Many releases at once: N triggers for N services of one deployment repository, pushed one
//! after another without waiting, then every pull request approved. Reports how long until all
//! pull requests are open and until all are merged, against the fake GitHub (or GitLab) and the
//! real bot, store and git, as the scenarios run them.
//!
//! usage: cargo bench --bench many_releases -- [N] [github|gitlab]     (bench/many-releases.sh)

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
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

/// How many services the configuration lists (`World::build` takes a plain function).
static SERVICES: AtomicUsize = AtomicUsize::new(0);

async fn run(n: usize, forge: Flavor) {
    SERVICES.store(n, Ordering::Relaxed);
    let w = World::build(
        forge,
        false,
        Some("roles:\n  qa-lead:\n    users: [alice]\nenvironments:\n  staging:\n    requiredApprovals: 1\n"),
        |config| {
            let mut services = String::from("services:\n");
            for i in 1..=SERVICES.load(Ordering::Relaxed) {
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

    let triggers: Vec<Vec<(&str, Vec<u8>)>> = (1..=n)
        .map(|i| {
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
        })
        .collect();

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
        "{n} triggers pushed in {:.1} s; all {n} pull requests open {:.1} s after the first push ({:.1} s after the last)",
        pushed.as_secs_f64(),
        all_open.as_secs_f64(),
        opened.as_secs_f64()
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
    wait_until(
        "pull requests merged",
        Duration::from_secs(1800),
        || merged(&w),
        n,
    )
    .await;
    let took = approving.elapsed();
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
