//! `demo/serve.sh`, the README's local walkthrough, run as a newcomer runs it: the script starts
//! the fake forge and the bot, and the commands it prints are run exactly as printed, step by
//! step, until the release is merged in both environments, tagged and published, on the fake
//! GitHub and on the fake GitLab.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The script with its process group, stopped (all of it) when the test ends.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the process group the script leads.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(flag: &str) -> (Demo, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let control = free_port();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("demo/serve.sh"))
        .args((!flag.is_empty()).then_some(flag))
        .env("DEMO_DIR", dir.path().join("demo"))
        .env("DEMO_BOT_PORT", free_port().to_string())
        .env("DEMO_API_PORT", free_port().to_string())
        .env("DEMO_CONTROL_PORT", control.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = cmd.spawn().expect("bash runs the script");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Demo { child, lines, dir }, control)
}

/// The printed walkthrough: the commands of each numbered step, in order.
fn steps(demo: &Demo) -> Vec<Vec<String>> {
    // Building the two binaries comes first (a fresh checkout compiles them).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut steps: Vec<Vec<String>> = Vec::new();
    let mut ready = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = demo
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the script did not print its walkthrough in time"));
        if line.starts_with("Ready.") {
            ready = true;
        }
        if !ready {
            continue;
        }
        if line.starts_with("Ctrl-C") {
            return steps;
        }
        if let Some(rest) = line.strip_prefix("# ")
            && rest
                .split('.')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            steps.push(Vec::new());
        } else if (line.starts_with("curl ") || line.starts_with('/'))
            && let Some(step) = steps.last_mut()
        {
            step.push(line);
        }
    }
}

fn run(command: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(command)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn state_of(pulls: &serde_json::Value, number: u64) -> Option<String> {
    pulls.as_array()?.iter().find_map(|p| {
        (p["number"] == number).then(|| p["state"].as_str().unwrap_or_default().to_string())
    })
}

/// Polls the fake forge until `done` holds (the bot works in the background).
fn wait_until(what: &str, control: u16, demo: &Demo, done: impl Fn(&serde_json::Value) -> bool) {
    wait_for_read(
        what,
        &format!("http://127.0.0.1:{control}/pulls"),
        demo,
        done,
    )
}

/// Polls a JSON read of the fake forge until `done` holds.
fn wait_for_read(what: &str, url: &str, demo: &Demo, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read: serde_json::Value =
            serde_json::from_str(&run(&format!("curl -fsS {url}"))).unwrap();
        if done(&read) {
            return;
        }
        if Instant::now() > deadline {
            let log = |name: &str| {
                std::fs::read_to_string(demo.dir.path().join("demo").join(name)).unwrap_or_default()
            };
            panic!(
                "{what}: not after 60 s; {url}: {read}\nbot log:\n{}\nfake forge log:\n{}",
                log("bot.log"),
                log("fake-forge.log")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn walkthrough(flag: &str) {
    let (demo, control) = start(flag);
    let steps = steps(&demo);
    assert_eq!(steps.len(), 4, "four steps: {steps:#?}");
    assert!(
        steps.iter().all(|s| !s.is_empty()),
        "every step has commands: {steps:#?}"
    );

    for command in &steps[0] {
        run(command);
    }
    wait_until("the staging pull request opens", control, &demo, |p| {
        state_of(p, 1).as_deref() == Some("open")
    });
    for command in &steps[1] {
        run(command);
    }
    wait_until("staging merges and production opens", control, &demo, |p| {
        state_of(p, 1).as_deref() == Some("merged") && state_of(p, 2).as_deref() == Some("open")
    });
    for command in &steps[2] {
        run(command);
    }
    wait_until("production merges", control, &demo, |p| {
        state_of(p, 2).as_deref() == Some("merged")
    });
    // Tagging and publishing come right after the last merge.
    wait_for_read(
        "the release is published",
        &format!("http://127.0.0.1:{control}/releases"),
        &demo,
        |r| {
            r["acme/shop"]["releases"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );

    // Step 4 looks at the outcome: tagged, published, completed, audited.
    // The release is completed a moment after it is published.
    let deadline = Instant::now() + Duration::from_secs(30);
    let outputs = loop {
        let outputs: Vec<String> = steps[3].iter().map(|c| run(c)).collect();
        if outputs.join("\n").contains("ReleaseCompleted") || Instant::now() > deadline {
            break outputs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let all = outputs.join("\n");
    let releases: serde_json::Value = serde_json::from_str(
        outputs
            .iter()
            .find(|o| o.contains("\"releases\""))
            .expect("the releases are shown"),
    )
    .unwrap();
    let shop = &releases["acme/shop"];
    assert!(
        shop["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "mvp-v1"),
        "tagged: {releases}"
    );
    assert!(
        shop["releases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tag"] == "mvp-v1"),
        "published: {releases}"
    );
    assert!(all.contains("Completed"), "status says completed: {all}");
    assert!(all.contains("ReleaseCompleted"), "the audit log: {all}");
    // The bot told its story in its log.
    let log = std::fs::read_to_string(demo.dir.path().join("demo/bot.log")).unwrap();
    for line in ["trigger accepted", "merged", "tagged and published"] {
        assert!(log.contains(line), "the log says {line:?}: {log}");
    }
}

#[test]
fn the_local_walkthrough_releases_through_the_fake_github() {
    walkthrough("");
}

#[test]
fn the_local_walkthrough_releases_through_the_fake_gitlab() {
    walkthrough("--gitlab");
}

/// The fake forge's control port says what it does, and answers a mistake with what to do.
#[test]
fn the_control_port_documents_itself_and_names_what_is_wrong() {
    let (demo, control) = start("");
    let _ = steps(&demo);
    let help = run(&format!("curl -fsS http://127.0.0.1:{control}/"));
    for action in [
        "POST /push",
        "POST /comment",
        "POST /review",
        "POST /check",
        "GET  /requests",
    ] {
        assert!(help.contains(action), "{action} documented: {help}");
    }
    let unknown = run(&format!(
        "curl -sS -w ' %{{http_code}}' http://127.0.0.1:{control}/comment -H 'content-type: application/json' -d '{{\"repo\": \"acme/nope\", \"number\": 1, \"user\": \"a\", \"body\": \"/approve\"}}'"
    ));
    assert!(
        unknown.contains("no repository acme/nope; this fake has: acme/deploy, acme/shop")
            && unknown.ends_with(" 404"),
        "{unknown}"
    );
    let no_pull = run(&format!(
        "curl -sS -w ' %{{http_code}}' http://127.0.0.1:{control}/check -H 'content-type: application/json' -d '{{\"repo\": \"acme/deploy\", \"number\": 7, \"name\": \"ci/build\"}}'"
    ));
    assert!(
        no_pull.contains("acme/deploy has no pull request 7") && no_pull.ends_with(" 404"),
        "{no_pull}"
    );
    let typo = run(&format!(
        "curl -sS -w ' %{{http_code}}' http://127.0.0.1:{control}/check -H 'content-type: application/json' -d '{{\"repo\": \"acme/deploy\", \"sha\": \"abc\", \"name\": \"ci/build\", \"conclusion\": \"sucess\"}}'"
    ));
    assert!(
        typo.contains("\"conclusion\" must be one of success, failure") && typo.ends_with(" 400"),
        "{typo}"
    );
    let text_number = run(&format!(
        "curl -sS -w ' %{{http_code}}' http://127.0.0.1:{control}/comment -H 'content-type: application/json' -d '{{\"repo\": \"acme/deploy\", \"number\": \"1\", \"user\": \"a\", \"body\": \"/approve\"}}'"
    ));
    assert!(
        text_number.contains("\"number\" must be a whole number such as 1, not \"1\"")
            && text_number.ends_with(" 400"),
        "{text_number}"
    );
    let no_action = run(&format!(
        "curl -sS -w ' %{{http_code}}' -X POST http://127.0.0.1:{control}/approve"
    ));
    assert!(
        no_action.contains("no action /approve; GET / lists them") && no_action.ends_with(" 404"),
        "{no_action}"
    );
    // The forge's API can be read without a token, as people look around with curl.
    let api = demo_api_reads(&demo);
    assert!(api.contains("acme/deploy"), "{api}");
    // The bot's API calls are logged for people to read.
    let requests: serde_json::Value = serde_json::from_str(&run(&format!(
        "curl -fsS http://127.0.0.1:{control}/requests"
    )))
    .unwrap();
    assert!(
        requests
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "GET" && r["status"] == 200),
        "{requests}"
    );
}

/// `GET /repos/acme/deploy` on the fake GitHub's API, without a token.
fn demo_api_reads(demo: &Demo) -> String {
    let config = std::fs::read_to_string(
        demo.dir
            .path()
            .join("demo/config/orchestration-config.yaml"),
    )
    .unwrap();
    let api = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("apiUrl: "))
        .expect("the configuration names the API");
    run(&format!("curl -fsS {api}/repos/acme/deploy"))
}
