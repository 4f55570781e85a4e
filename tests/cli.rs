//! End-to-end tests of the command line against real git repositories in temporary
//! directories: a bare deployment repository seeded with real Helm values files, an
//! application repository holding the trigger, and the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_release-coordinator");
const PODINFO: &str =
    "fixtures/deploy-repos/values/stefanprodan__podinfo/charts/podinfo/values.yaml";
const GUESTBOOK: &str =
    "fixtures/deploy-repos/values/argoproj__argocd-example-apps/helm-guestbook/values.yaml";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@localhost",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A world: deployment repo, application repo with a trigger, operator config, keys.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    deploy: PathBuf,
    app: PathBuf,
    config: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));

        // The deployment repository: real Helm values files, as a bare remote.
        let seed = root.join("seed");
        for env in ["staging", "production"] {
            for (app, src) in [("podinfo", PODINFO), ("guestbook", GUESTBOOK)] {
                let dir = seed.join("apps").join(app);
                fs::create_dir_all(&dir).unwrap();
                fs::copy(
                    manifest_dir.join(src),
                    dir.join(format!("values-{env}.yaml")),
                )
                .unwrap();
            }
        }
        git(&seed, &["init", "-q"]);
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "-q", "-m", "initial"]);
        let deploy = root.join("deploy.git");
        git(&root, &["init", "-q", "--bare", "deploy.git"]);
        git(&seed, &["push", "-q", deploy.to_str().unwrap(), "main"]);

        // The application repository with the trigger files.
        let app = root.join("app");
        fs::create_dir_all(app.join("release")).unwrap();
        for f in [
            "promotion-trigger.yaml",
            "milestone-status.json",
            "qa-validation-report.md",
            "sprint-trace-matrix.json",
            "approval-context.json",
        ] {
            fs::copy(
                manifest_dir.join("demo/app").join(f),
                app.join("release").join(f),
            )
            .unwrap();
        }
        git(&app, &["init", "-q"]);
        git(&app, &["add", "."]);
        git(&app, &["commit", "-q", "-m", "trigger"]);
        git(&app, &["tag", "v0.9.0"]);

        // The operator's configuration, from the demo, pointed at this world.
        let config_dir = root.join("config");
        fs::create_dir_all(&config_dir).unwrap();
        for f in [
            "orchestration-config.yaml",
            "release-policy.yaml",
            "version-resolver.yaml",
            "milestones.yaml",
        ] {
            fs::copy(manifest_dir.join("demo/config").join(f), config_dir.join(f)).unwrap();
        }
        let config = config_dir.join("orchestration-config.yaml");
        let text = fs::read_to_string(&config)
            .unwrap()
            .replace("sqlite://release-coordinator.db", "sqlite://store.db");
        fs::write(&config, text).unwrap();
        let w = World {
            _tmp: tmp,
            root,
            deploy,
            app,
            config,
        };
        let out = w.run(&[
            "keygen",
            "--out",
            config_dir.join("release-signing.pem").to_str().unwrap(),
        ]);
        assert!(out.status.success());
        w
    }

    fn trigger_dir(&self) -> PathBuf {
        self.app.join("release")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("binary runs")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(&self.root)
            .env_remove("RC_CONFIG")
            .env_remove("RC_STORE");
        cmd
    }

    fn release(&self, push: bool) -> Output {
        let dir = self.trigger_dir();
        let mut args = vec![
            "release",
            "--config",
            self.config.to_str().unwrap(),
            "--trigger-dir",
            dir.to_str().unwrap(),
        ];
        if push {
            args.push("--push");
        }
        self.run(&args)
    }

    fn remote_refs(&self) -> String {
        git(
            &self.deploy,
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        )
    }

    fn show(&self, rev_path: &str) -> String {
        git(&self.deploy, &["show", rev_path])
    }

    fn edit(&self, file: &str, f: impl FnOnce(String) -> String) {
        let p = self.trigger_dir().join(file);
        let text = fs::read_to_string(&p).unwrap();
        fs::write(&p, f(text)).unwrap();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn release_push_opens_one_branch_per_environment_with_tags_changed_in_place() {
    let w = World::new();
    let out = w.release(true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Recorded release mvp-v1 (AwaitingApproval)"),
        "{}",
        stdout(&out)
    );

    let refs = w.remote_refs();
    assert!(refs.contains("refs/heads/release/mvp-v1/staging"), "{refs}");
    assert!(
        refs.contains("refs/heads/release/mvp-v1/production"),
        "{refs}"
    );

    // Every byte of the real values files is kept but the tag's.
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (app, src, old) in [
        ("podinfo", PODINFO, "  tag: 6.14.1\n"),
        ("guestbook", GUESTBOOK, "  tag: v5\n"),
    ] {
        let original = fs::read_to_string(manifest_dir.join(src)).unwrap();
        assert!(original.contains(old));
        for env in ["staging", "production"] {
            let got = w.show(&format!(
                "release/mvp-v1/{env}:apps/{app}/values-{env}.yaml"
            ));
            assert_eq!(
                got,
                original.replacen(old, "  tag: mvp-v1\n", 1),
                "{app} {env}"
            );
        }
        // The other environment's file is untouched on each branch.
        let other = w.show(&format!(
            "release/mvp-v1/staging:apps/{app}/values-production.yaml"
        ));
        assert_eq!(other, original);
    }

    // One commit on top of main, with trailers.
    let log = git(
        &w.deploy,
        &["log", "--format=%B%x00", "main..release/mvp-v1/production"],
    );
    assert_eq!(log.matches('\0').count(), 1, "{log}");
    assert!(log.contains("Release-Version: mvp-v1\nRelease-Milestone: mvp-ready\nRelease-Trace-Id: trace-xyz-789\nRelease-Environment: production"), "{log}");

    // The release documents.
    let files = git(
        &w.deploy,
        &[
            "ls-tree",
            "-r",
            "--name-only",
            "release/mvp-v1/staging",
            "releases/",
        ],
    );
    for f in [
        "release-notes.md",
        "release-description.txt",
        "release-metadata.json",
        "promotion-trigger-confirmed.yaml",
        "signed-release-manifest.yaml",
    ] {
        assert!(
            files.contains(&format!("releases/mvp-v1/{f}")),
            "{f} missing: {files}"
        );
    }
    let notes = w.show("release/mvp-v1/staging:releases/mvp-v1/release-notes.md");
    assert!(notes.contains("`podinfo` in staging: `ghcr.io/stefanprodan/podinfo:6.14.1` → `ghcr.io/stefanprodan/podinfo:mvp-v1`"), "{notes}");
    assert!(notes.contains("- Overall: 91.3%"), "{notes}");
    let metadata: serde_json::Value = serde_json::from_str(
        &w.show("release/mvp-v1/staging:releases/mvp-v1/release-metadata.json"),
    )
    .unwrap();
    assert_eq!(metadata["version_tag"], "mvp-v1");
    assert_eq!(metadata["manual_approval_required"], true);
    assert_eq!(
        metadata["sprint_ids"],
        serde_json::json!(["sprint-06", "sprint-07"])
    );
    let app_head = git(&w.app, &["rev-parse", "HEAD"]);
    assert_eq!(metadata["application_commit"], app_head.trim());
    let history = w.show("release/mvp-v1/staging:releases/release-history.csv");
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(
        history.lines().nth(1).unwrap().starts_with(
            "mvp-v1,mvp-ready,trace-xyz-789,staging;production,podinfo;guestbook,91.3,"
        ),
        "{history}"
    );
    let confirmed =
        w.show("release/mvp-v1/staging:releases/mvp-v1/promotion-trigger-confirmed.yaml");
    assert!(
        confirmed.contains("manualApprovalRequired: true"),
        "{confirmed}"
    );

    // The documents are identical on both branches, so the branches merge in any order.
    let docs = |env: &str| {
        git(
            &w.deploy,
            &["rev-parse", &format!("release/mvp-v1/{env}:releases")],
        )
    };
    assert_eq!(docs("staging"), docs("production"));

    // The manifest verifies with the CLI.
    let manifest = w.root.join("manifest.yaml");
    fs::write(
        &manifest,
        w.show("release/mvp-v1/production:releases/mvp-v1/signed-release-manifest.yaml"),
    )
    .unwrap();
    let key = w.root.join("config/release-signing.pem.pub");
    let ok = w.run(&[
        "verify",
        "--key",
        key.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    // ... and a tampered one does not.
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replacen("\"mvp-v1\"", "\"mvp-v2\"", 1)).unwrap();
    let bad = w.run(&[
        "verify",
        "--key",
        key.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("INVALID: signature does not match"),
        "{}",
        stderr(&bad)
    );
}

/// The README's recipe: another implementation (Python's json for RFC 8785 canonical form of
/// this manifest, openssl for Ed25519) verifies the signature.
/// The README's verification recipe, as written there.
fn readme_recipe() -> String {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("python3 - signed-release-manifest.yaml")
        .expect("the README has the recipe");
    let len = readme[start..]
        .find("```")
        .expect("the recipe's block ends");
    readme[start..start + len].to_string()
}

#[test]
fn the_readme_recipe_verifies_manifests_with_whole_fractional_and_absent_numbers() {
    let recipe = readme_recipe();
    for coverage in [Some("90"), Some("91.3"), Some("100.0"), None] {
        let w = World::new();
        w.edit("milestone-status.json", |t| {
            let line = "  \"qa_coverage\": 91.3,\n";
            match coverage {
                Some(c) => t.replace(line, &format!("  \"qa_coverage\": {c},\n")),
                None => t.replace(line, ""),
            }
        });
        w.edit("qa-validation-report.md", |t| match coverage {
            Some(c) => t.replace("- Overall: 91.3%", &format!("- Overall: {c}%")),
            None => t.replace("- Overall: 91.3%", ""),
        });
        if coverage.is_none() {
            // Production's policy asks for coverage; staging alone does not.
            w.edit("promotion-trigger.yaml", |t| {
                t.replace("  - deploy-to-production\n", "")
            });
        }
        git(&w.app, &["commit", "-qam", "coverage", "--allow-empty"]);
        let out = w.release(true);
        assert!(out.status.success(), "{}", stderr(&out));
        let manifest =
            w.show("release/mvp-v1/staging:releases/mvp-v1/signed-release-manifest.yaml");
        assert_eq!(
            manifest.contains("qa_coverage: null"),
            coverage.is_none(),
            "qa_coverage {coverage:?}: {manifest}"
        );
        let dir = w.root.join("verify");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("signed-release-manifest.yaml"), &manifest).unwrap();
        fs::copy(
            w.root.join("config/release-signing.pem.pub"),
            dir.join("release-signing.pem.pub"),
        )
        .unwrap();
        let run = |dir: &Path| {
            Command::new("bash")
                .args(["-euc", &recipe])
                .current_dir(dir)
                .output()
                .unwrap()
        };
        let good = run(&dir);
        assert!(
            good.status.success(),
            "qa_coverage {coverage:?}: {}{}",
            stdout(&good),
            stderr(&good)
        );
        // The recipe can fail: a manifest changed after signing does not verify.
        fs::write(
            dir.join("signed-release-manifest.yaml"),
            manifest.replace("mvp-v1", "mvp-v2"),
        )
        .unwrap();
        assert!(!run(&dir).status.success());
    }
}

#[test]
fn a_reused_version_is_refused_and_nothing_changes() {
    let w = World::new();
    assert!(w.release(true).status.success());
    let refs = w.remote_refs();
    let again = w.release(true);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again)
            .contains("promotion-trigger.yaml:3:14: version `mvp-v1` was already released"),
        "{}",
        stderr(&again)
    );
    assert_eq!(w.remote_refs(), refs);
}

/// A missing signing key is reported by `validate --config` at `signing.keyFile` with the
/// command that makes one, and `plan`, `release` and `serve` refuse it the same way, once, with
/// exit code 1 (the configuration is to fix), before doing anything.
#[test]
fn a_missing_signing_key_is_found_early_with_the_command_that_makes_one() {
    let w = World::new();
    let key = w.config.with_file_name("release-signing.pem");
    fs::remove_file(&key).unwrap();
    let hint = format!(
        "signing key {} does not exist; make one with: release-coordinator keygen --out {}",
        key.display(),
        key.display()
    );
    let config = w.config.to_str().unwrap();
    let dir = w.trigger_dir();
    let dir = dir.to_str().unwrap();
    let validate = w.run(&["validate", dir, "--config", config]);
    assert_eq!(validate.status.code(), Some(1), "{}", stderr(&validate));
    let line = stderr(&validate)
        .lines()
        .find(|l| l.contains("signing key"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with(&format!("{}:", w.config.display())) && line.ends_with(&hint),
        "{}",
        stderr(&validate)
    );
    for args in [
        vec!["plan", "--config", config, "--trigger-dir", dir],
        vec![
            "release",
            "--config",
            config,
            "--trigger-dir",
            dir,
            "--push",
        ],
        vec!["serve", "--config", config, "--listen", "127.0.0.1:0"],
    ] {
        let out = w
            .cmd(&args)
            .env("GITHUB_WEBHOOK_SECRET", "s")
            .env("GITHUB_TOKEN", "t")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).matches("does not exist").count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(&hint), "{args:?}: {}", stderr(&out));
    }
    assert!(w.remote_refs().lines().all(|r| !r.contains("release/")));
}

/// `status` and `audit` read the store: the release, its state, and its audit log; a version
/// the store does not know, or no store at all, is said so.
#[test]
fn status_and_audit_read_the_store() {
    let w = World::new();
    let config = w.config.to_str().unwrap();
    let none = w.run(&["status", "--config", config]);
    assert_eq!(none.status.code(), Some(1), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("there is no store at sqlite://"),
        "{}",
        stderr(&none)
    );
    assert!(w.release(true).status.success());

    let status = w.run(&["status", "--config", config]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).starts_with("mvp-v1  AwaitingApproval  (updated "),
        "{}",
        stdout(&status)
    );
    let json = w.run(&["status", "mvp-v1", "--config", config, "--format", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(parsed[0]["version"], "mvp-v1");
    assert_eq!(parsed[0]["state"], "AwaitingApproval");
    let unknown = w.run(&["status", "v9", "--config", config]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr(&unknown), "error: no release v9 in the store\n");

    let audit = w.run(&["audit", "mvp-v1", "--config", config]);
    assert!(audit.status.success(), "{}", stderr(&audit));
    let text = stdout(&audit);
    let events: Vec<&str> = text
        .lines()
        .map(|l| l.split("  ").nth(2).unwrap_or_default())
        .collect();
    assert_eq!(
        events,
        [
            "ReleaseTriggered",
            "ReleaseBranchBuilt",
            "ReleaseBranchBuilt",
            "ReleaseBranchesPushed"
        ],
        "{}",
        stdout(&audit)
    );
}

/// Settings the bot does not act on yet are named, where they are set, by `validate` and
/// `plan` (which still succeed).
#[test]
fn settings_not_acted_on_are_named_where_they_are_set() {
    let w = World::new();
    w.edit("promotion-trigger.yaml", |t| t + "rollbackEnabled: true\n");
    let config = w.config.to_str().unwrap();
    let dir = w.trigger_dir();
    let dir = dir.to_str().unwrap();
    let trigger = w.trigger_dir().join("promotion-trigger.yaml");
    let expected = [
        format!(
            "{}:10:13: note: promotion_targets[4].notify: recorded, not acted on yet: nothing is notified",
            trigger.display()
        ),
        format!(
            "{}:12:18: note: rollbackEnabled: recorded, not acted on yet: without `argocd:` in orchestration-config.yaml no deployment is seen to fail",
            trigger.display()
        ),
        format!(
            "{}:24:19: note: defaults.notifyChannels: recorded, not acted on yet: nothing is notified",
            w.config.display()
        ),
    ];
    for args in [
        vec!["validate", dir, "--config", config],
        vec!["plan", "--config", config, "--trigger-dir", dir],
    ] {
        let out = w.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        for note in &expected {
            assert!(
                stderr(&out).contains(note.as_str()),
                "{args:?}: {note} not in\n{}",
                stderr(&out)
            );
        }
        // Rollback roles are acted on (`/rollback`): no note.
        assert!(!stderr(&out).contains("rollbackRoles"), "{}", stderr(&out));
    }
}

/// Given the trigger file instead of its folder, the error says which folder to give.
#[test]
fn the_trigger_file_instead_of_its_folder_is_explained() {
    let w = World::new();
    let file = w.trigger_dir().join("promotion-trigger.yaml");
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:1:1: this is a file; give the folder that holds promotion-trigger.yaml and milestone-status.json (here: {})\n1 problem found\n",
            file.display(),
            w.trigger_dir().display()
        )
    );
}

/// The store's path in the configuration is relative to the configuration's folder, like
/// every other path there: a run from another folder finds the same store.
#[test]
fn the_configured_store_is_found_from_any_folder() {
    let w = World::new();
    assert!(w.release(true).status.success());
    assert!(w.config.with_file_name("store.db").exists());
    assert!(!w.root.join("store.db").exists());
    let dir = w.trigger_dir();
    let again = Command::new(BIN)
        .args(["release", "--push", "--config"])
        .arg(&w.config)
        .arg("--trigger-dir")
        .arg(&dir)
        .current_dir(&w.app)
        .env_remove("RC_CONFIG")
        .env_remove("RC_STORE")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("version `mvp-v1` was already released (recorded in the store)"),
        "{}",
        stderr(&again)
    );
    assert!(!w.app.join("store.db").exists(), "no second store");
}

/// A store where earlier versions kept it (relative to the working directory) is not passed
/// over for a new, empty one beside the configuration: the run stops and says where both are.
#[test]
fn a_store_where_earlier_versions_kept_it_is_not_passed_over() {
    let w = World::new();
    let dir = w.trigger_dir();
    let first = w.run(&[
        "release",
        "--config",
        w.config.to_str().unwrap(),
        "--trigger-dir",
        dir.to_str().unwrap(),
        "--store",
        "sqlite://store.db",
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(w.root.join("store.db").exists());
    let again = w.release(true);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains(&format!(
            "the store is now looked for beside the configuration, at {}, and is not there; store.db",
            w.config.with_file_name("store.db").display()
        )) && stderr(&again).contains(&format!("pass --store sqlite://{}", w.root.join("store.db").display())),
        "{}",
        stderr(&again)
    );
    assert!(
        !w.config.with_file_name("store.db").exists(),
        "no new store"
    );
}

#[test]
fn a_rerun_from_another_store_is_refused_in_the_same_second_and_the_next() {
    for (first, second) in [
        (1_790_000_000, 1_790_000_000),
        (1_790_000_000, 1_790_000_001),
    ] {
        let w = World::new();
        let dir = w.trigger_dir();
        let run = |at: i64, store: &str| {
            Command::new(BIN)
                .args(["release", "--push", "--config"])
                .arg(&w.config)
                .arg("--trigger-dir")
                .arg(&dir)
                .args(["--store", store])
                .env("SOURCE_DATE_EPOCH", at.to_string())
                .current_dir(&w.root)
                .output()
                .unwrap()
        };
        let made = run(first, "sqlite://store.db");
        assert!(made.status.success(), "{}", stderr(&made));
        let refs = w.remote_refs();
        let again = run(second, "sqlite://other.db");
        assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
        assert!(
            stderr(&again).contains("branch release/mvp-v1/")
                && stderr(&again).contains("already exists in the deployment repository"),
            "{}",
            stderr(&again)
        );
        assert_eq!(w.remote_refs(), refs);
    }
}

#[test]
fn an_unpushed_release_is_resumed_by_push_with_the_same_commits() {
    let w = World::new();
    let first = w.release(false);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("run again with --push"),
        "{}",
        stdout(&first)
    );
    assert!(
        !w.remote_refs().contains("release/"),
        "nothing is pushed without --push"
    );
    let built: Vec<String> = stdout(&first)
        .lines()
        .filter(|l| l.contains("built release/"))
        .map(|l| l.split(" at ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(built.len(), 2);

    // Without --push a second time there is nothing to do, and it says so.
    let again = w.release(false);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("run again with --push"),
        "{}",
        stderr(&again)
    );

    let pushed = w.release(true);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(
        stdout(&pushed).contains("Resumed release mvp-v1 (AwaitingApproval)"),
        "{}",
        stdout(&pushed)
    );
    for c in built {
        assert!(
            w.remote_refs().contains(&c),
            "the pushed commits are the ones built first"
        );
    }
}

#[test]
fn a_release_that_died_right_after_its_push_completes_on_the_next_run() {
    let w = World::new();
    let first = w.release(false);
    assert!(first.status.success(), "{}", stderr(&first));
    // The push lands but the process dies before recording it: push the cached branches by hand.
    let cache = fs::read_dir(w.root.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "git"))
        .expect("the bare cache exists");
    git(
        &cache,
        &[
            "push",
            "-q",
            w.deploy.to_str().unwrap(),
            "refs/heads/release/*:refs/heads/release/*",
        ],
    );
    let landed = w.remote_refs();
    assert_eq!(landed.matches("refs/heads/release/mvp-v1/").count(), 2);

    let again = w.release(true);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("Resumed release mvp-v1 (AwaitingApproval)"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        w.remote_refs(),
        landed,
        "the branches that landed are kept as they are"
    );
}

#[test]
fn plan_shows_decisions_and_diffs_and_writes_nothing() {
    let w = World::new();
    let refs = w.remote_refs();
    let out = w.run(&[
        "plan",
        "--config",
        w.config.to_str().unwrap(),
        "--trigger-dir",
        w.trigger_dir().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("version:     mvp-v1 (version_tag in the trigger)"),
        "{text}"
    );
    assert!(
        text.contains("release-policy.yaml requires 2 approval(s) for `production`"),
        "{text}"
    );
    assert!(
        text.contains("Environment production -> branch release/mvp-v1/production"),
        "{text}"
    );
    assert!(
        text.contains("-  tag: 6.14.1\n") && text.contains("+  tag: mvp-v1\n"),
        "{text}"
    );
    assert!(text.contains("+mvp-v1,mvp-ready,trace-xyz-789"), "{text}");
    assert_eq!(w.remote_refs(), refs);
    assert!(
        !w.config.with_file_name("store.db").exists(),
        "plan creates no store"
    );

    let json = w.run(&[
        "plan",
        "--config",
        w.config.to_str().unwrap(),
        "--trigger-dir",
        w.trigger_dir().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["environments"][0]["changes"][0]["old_tag"], "6.14.1");
    assert_eq!(v["spec"]["version"], "mvp-v1");
}

/// Configures a second image in podinfo's chart (`redis.tag`), released as its own service
/// `podinfo-redis` with `own` (more of its keys, indented as such); `more` edits the rest.
fn with_redis_sidecar(w: &World, own: &str, more: impl Fn(String) -> String) {
    let text = fs::read_to_string(&w.config).unwrap().replacen(
        "  - name: guestbook\n",
        &format!(
            "  - name: podinfo-redis\n    image: docker.io/redis\n    tagPath: redis.tag\n{own}    values:\n      staging: apps/podinfo/values-staging.yaml\n      production: apps/podinfo/values-production.yaml\n  - name: guestbook\n"
        ),
        1,
    );
    fs::write(&w.config, more(text)).unwrap();
}

#[test]
fn edits_of_one_values_file_compose_and_plan_diffs_apply_to_the_base() {
    let w = World::new();
    with_redis_sidecar(&w, "", |c| c);
    w.edit("promotion-trigger.yaml", |t| {
        t.replace(
            "tag-docker: podinfo, guestbook",
            "tag-docker: podinfo, podinfo-redis, guestbook",
        )
    });
    // A values file that ends without a newline, with the tag not on its last line.
    let work = w.root.join("work");
    git(
        &w.root,
        &["clone", "-q", w.deploy.to_str().unwrap(), "work"],
    );
    let gb = work.join("apps/guestbook/values-staging.yaml");
    let trimmed = fs::read_to_string(&gb).unwrap().trim_end().to_string();
    fs::write(&gb, &trimmed).unwrap();
    git(&work, &["commit", "-qam", "no final newline"]);
    git(&work, &["push", "-q", "origin", "main"]);

    let json = w.run(&[
        "plan",
        "--config",
        w.config.to_str().unwrap(),
        "--trigger-dir",
        w.trigger_dir().to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(json.status.success(), "{}", stderr(&json));
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let out = w.release(true);
    assert!(out.status.success(), "{}", stderr(&out));
    git(&work, &["fetch", "-q", "origin"]);

    for env in plan["environments"].as_array().unwrap() {
        let name = env["environment"].as_str().unwrap();
        let files = env["files"].as_array().unwrap();
        // podinfo's file once, with both of its tags changed.
        let podinfo = format!("apps/podinfo/values-{name}.yaml");
        let f = files
            .iter()
            .find(|f| f["path"] == podinfo.as_str())
            .unwrap();
        assert_eq!(
            files
                .iter()
                .filter(|f| f["path"] == podinfo.as_str())
                .count(),
            1
        );
        let diff = f["diff"].as_str().unwrap();
        assert!(
            diff.contains("+  tag: mvp-v1\n") && diff.contains("-  tag: 8.8.0\n"),
            "{diff}"
        );
        let shas: Vec<&str> = env["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["values_file"] == podinfo.as_str())
            .map(|c| c["values_sha256"].as_str().unwrap())
            .collect();
        assert_eq!(shas, vec![f["sha256"].as_str().unwrap(); 2]);

        // Every diff the plan shows applies to the base tree and gives the branch's tree.
        git(&work, &["checkout", "-q", "--detach", "origin/main"]);
        let patch: String = files
            .iter()
            .chain(plan["documents"].as_array().unwrap())
            .map(|f| f["diff"].as_str().unwrap())
            .collect();
        fs::write(w.root.join("plan.patch"), patch).unwrap();
        git(
            &work,
            &[
                "apply",
                "--index",
                w.root.join("plan.patch").to_str().unwrap(),
            ],
        );
        let branch = format!("origin/release/mvp-v1/{name}");
        let left = git(&work, &["diff", "--cached", "--stat", &branch]);
        // The documents carry the time they were rendered; everything else is identical.
        let other: Vec<&str> = left
            .lines()
            .filter(|l| l.contains('|') && !l.contains("releases/"))
            .collect();
        assert!(other.is_empty(), "{left}");
        git(&work, &["reset", "-q", "--hard"]);

        let on_branch = git(&work, &["show", &format!("{branch}:{podinfo}")]);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(on_branch.as_bytes()));
        assert_eq!(sha, f["sha256"].as_str().unwrap());
    }
    let gb_now = w.show("release/mvp-v1/staging:apps/guestbook/values-staging.yaml");
    assert_eq!(gb_now, trimmed.replace("tag: v5", "tag: mvp-v1"));
}

/// `customDeployStrategy` writes the operator's values for that strategy beside each image tag
/// (the top level's, with a service's own over them), typed as configured, composed with the
/// tag edit in one change; a strategy the operator did not configure, for the whole release or
/// for one of its services, is refused where the trigger names it.
#[test]
fn a_deploy_strategy_writes_the_operators_values_and_an_unknown_one_is_refused() {
    let w = World::new();
    let text = fs::read_to_string(&w.config).unwrap();
    let text = text
        .replace(
            "defaults:\n",
            "deployStrategies:\n  canary:\n    replicaCount: 2\n    image.pullPolicy: Always\ndefaults:\n",
        )
        .replacen(
            "    repositories: [acme/shop]  # the application repositories whose triggers may release it\n",
            "    repositories: [acme/shop]  # the application repositories whose triggers may release it\n    deployStrategies:\n      canary:\n        faults.delay: true\n        ui.message: \"canary of {{ version }}\"\n        replicaCount: 3\n      blue-green:\n        service.type: NodePort\n",
            1,
        );
    fs::write(&w.config, text).unwrap();
    w.edit("promotion-trigger.yaml", |t| {
        t + "customDeployStrategy: canary\n"
    });
    let out = w.release(true);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(PODINFO)).unwrap();
    let podinfo = w.show("release/mvp-v1/staging:apps/podinfo/values-staging.yaml");
    // Every other byte as it was: the tag, then the strategy's values, each in place.
    assert_eq!(
        podinfo,
        before
            .replacen("replicaCount: 1", "replicaCount: 3", 1)
            .replacen("  tag: 6.14.1", "  tag: mvp-v1", 1)
            .replacen("  pullPolicy: IfNotPresent", "  pullPolicy: Always", 1)
            .replacen("  delay: false", "  delay: true", 1)
            .replacen(
                "  message: \"\"",
                "  message: \"canary of {{ version }}\"",
                1
            )
    );
    let before = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(GUESTBOOK)).unwrap();
    let guestbook = w.show("release/mvp-v1/staging:apps/guestbook/values-staging.yaml");
    assert_eq!(
        guestbook,
        before
            .replacen("replicaCount: 1", "replicaCount: 2", 1)
            .replacen("  tag: v5", "  tag: mvp-v1", 1)
            .replacen("  pullPolicy: IfNotPresent", "  pullPolicy: Always", 1)
    );
    let log = git(
        &w.deploy,
        &["log", "-1", "--format=%B", "release/mvp-v1/staging"],
    );
    assert!(log.contains("Release-Deploy-Strategy: canary\n"), "{log}");
    let manifest = w.show("release/mvp-v1/staging:releases/mvp-v1/signed-release-manifest.yaml");
    assert!(
        manifest.contains("deploy_strategy: \"canary\""),
        "{manifest}"
    );

    // Configured for podinfo only; and not at all.
    let trigger = w.trigger_dir().join("promotion-trigger.yaml");
    let dir = w.trigger_dir();
    for (strategy, expected) in [
        (
            "blue-green",
            "deploy strategy `blue-green` is not configured for service(s) guestbook",
        ),
        (
            "batch",
            "deploy strategy `batch` is not configured (orchestration-config.yaml deployStrategies: blue-green, canary)",
        ),
    ] {
        w.edit("promotion-trigger.yaml", |t| {
            t.lines()
                .map(|l| {
                    if l.starts_with("customDeployStrategy:") {
                        format!("customDeployStrategy: {strategy}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect()
        });
        let out = w.run(&[
            "validate",
            dir.to_str().unwrap(),
            "--config",
            w.config.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let line = fs::read_to_string(&trigger)
            .unwrap()
            .lines()
            .position(|l| l.starts_with("customDeployStrategy:"))
            .unwrap()
            + 1;
        let want = format!("{}:{line}:23: {expected}", trigger.display());
        assert!(
            stderr(&out).contains(&want),
            "{want}\nnot in\n{}",
            stderr(&out)
        );
    }
}

/// A service's own strategy may not write where another service of the same values file keeps
/// its tag (a chart with a main image and a sidecar): the plan refuses, naming both.
#[test]
fn a_strategy_never_writes_another_services_tag() {
    let w = World::new();
    with_redis_sidecar(
        &w,
        "    deployStrategies:\n      canary:\n        image.tag: latest\n",
        |c| {
            c.replace(
                "defaults:\n",
                "deployStrategies:\n  canary:\n    replicaCount: 2\ndefaults:\n",
            )
        },
    );
    w.edit("promotion-trigger.yaml", |t| {
        t.replace(
            "tag-docker: podinfo, guestbook",
            "tag-docker: podinfo, podinfo-redis",
        ) + "customDeployStrategy: canary\n"
    });
    let out = w.run(&[
        "plan",
        "--config",
        w.config.to_str().unwrap(),
        "--trigger-dir",
        w.trigger_dir().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("deploy strategy `canary` of service `podinfo-redis` writes `image.tag` in `apps/podinfo/values-staging.yaml`, where service `podinfo` keeps its image tag or digest"),
        "{}",
        stderr(&out)
    );
}

/// What the operator configures for strategies and digests is checked where it is written.
#[test]
fn strategies_and_digest_paths_are_checked_in_the_operators_file() {
    let w = World::new();
    let text = fs::read_to_string(&w.config).unwrap();
    fs::write(
        &w.config,
        text.replace(
            "defaults:\n",
            "deployStrategies:\n  Canary:\n    replicaCount: [1, 2]\n    image.tag: x\n  batch: {}\ndefaults:\n",
        )
        .replacen("    tagPath: image.tag\n", "    tagPath: image.tag\n    digestPath: image.tag\n", 1),
    )
    .unwrap();
    let out = w.run(&[
        "validate",
        w.trigger_dir().to_str().unwrap(),
        "--config",
        w.config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let config = w.config.display().to_string();
    for expected in [
        format!("{config}:12:17: digestPath needs `images:`"),
        format!("{config}:12:17: `image.tag` is the tagPath too"),
        format!("{config}:25:3: `Canary` is not a strategy name"),
        format!("{config}:26:19: `replicaCount` must be a single value"),
        format!(
            "{config}:27:16: `image.tag` is where service `podinfo` keeps its image tag or digest"
        ),
        format!("{config}:28:10: strategy `batch` writes no values"),
    ] {
        assert!(
            stderr(&out).contains(&expected),
            "{expected}\nnot in\n{}",
            stderr(&out)
        );
    }
}

/// A reader that goes away (`plan | head`) ends the command quietly, as it ends any Unix tool:
/// by SIGPIPE, not with a panic about a broken pipe.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    let dir = w.trigger_dir();
    let mut child = w
        .cmd(&[
            "plan",
            "--config",
            w.config.to_str().unwrap(),
            "--trigger-dir",
            dir.to_str().unwrap(),
            "--format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(13),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn validate_reports_every_problem_as_file_line_column() {
    let w = World::new();
    let ok = w.run(&["validate", w.trigger_dir().to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let ok = w.run(&[
        "validate",
        w.trigger_dir().to_str().unwrap(),
        "--config",
        w.config.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("would release mvp-v1 to staging, production"));

    w.edit("promotion-trigger.yaml", |t| {
        t.replace("trace_id: trace-xyz-789", "trace_id: trace-other")
            .replace("signedBy: product-owner", "")
            .replace(
                "manualApprovalRequired: false",
                "manualApprovalRequired: true",
            )
    });
    w.edit("milestone-status.json", |t| {
        t.replace("\"reached\"", "\"in-progress\"")
    });
    let bad = w.run(&["validate", w.trigger_dir().to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    let dir = w.trigger_dir().display().to_string();
    assert!(
        err.contains(&format!(
            "{dir}/milestone-status.json:5:13: milestone `mvp-ready` is `in-progress`"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{dir}/promotion-trigger.yaml:4:11: trace_id `trace-other` does not match `trace-xyz-789`")), "{err}");
    assert!(err.contains(&format!("{dir}/promotion-trigger.yaml:11:25: manualApprovalRequired is true, so signedBy is required")), "{err}");
    assert!(err.contains("3 problems found"), "{err}");
}

#[test]
fn a_chain_of_environments_cannot_be_skipped_or_reordered() {
    let w = World::new();
    let dir = w.trigger_dir().display().to_string();
    let validate = || {
        w.run(&[
            "validate",
            w.trigger_dir().to_str().unwrap(),
            "--config",
            w.config.to_str().unwrap(),
        ])
    };
    // The demo's policy: production after staging.
    w.edit("promotion-trigger.yaml", |t| {
        t.replace(
            "  - deploy-to-staging\n  - deploy-to-production\n",
            "  - deploy-to-production\n  - deploy-to-staging\n",
        )
    });
    let out = validate();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("{dir}/promotion-trigger.yaml:6:5: `deploy-to-production` is listed before `deploy-to-staging`, but release-policy.yaml chains production after staging; list `deploy-to-staging` first")),
        "{}",
        stderr(&out)
    );
    w.edit("promotion-trigger.yaml", |t| {
        t.replace("  - deploy-to-staging\n", "")
    });
    let out = validate();
    assert!(
        stderr(&out).contains(&format!("{dir}/promotion-trigger.yaml:6:5: `deploy-to-production` skips `staging`: release-policy.yaml chains production after staging; add `deploy-to-staging` before it")),
        "{}",
        stderr(&out)
    );
    // The policy's own chain is checked where it is written.
    let policy = w.config.with_file_name("release-policy.yaml");
    let text = fs::read_to_string(&policy).unwrap();
    fs::write(
        &policy,
        text.replace("after: staging", "after: stagign\n    soak: a while"),
    )
    .unwrap();
    let out = validate();
    let err = stderr(&out);
    let p = policy.display().to_string();
    assert!(
        err.contains(&format!(
            "{p}:16:12: `after: stagign` names no environment of this policy"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:17:11: `a while` is not a duration")),
        "{err}"
    );
}

/// Bad input: each case gets its own specific error, and the deployment repository and the
/// store are left as they were.
#[test]
fn bad_input_gets_a_specific_error_and_changes_nothing() {
    type Setup = Box<dyn Fn(&World)>;
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "malformed YAML",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace("trace_id: trace-xyz-789", "trace_id: \"trace-xyz-789")
                })
            }),
            "promotion-trigger.yaml:4:11: trace_id: found unexpected end of stream, while scanning a quoted scalar",
        ),
        (
            "wrong type",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace(
                        "manualApprovalRequired: false",
                        "manualApprovalRequired: sometimes",
                    )
                })
            }),
            "promotion-trigger.yaml:11:25: manualApprovalRequired: invalid type: string \"sometimes\", expected a boolean",
        ),
        (
            "unknown field",
            Box::new(|w| w.edit("promotion-trigger.yaml", |t| t + "colour: red\n")),
            "promotion-trigger.yaml:12:1: colour: unknown field `colour`, expected one of `milestone_id`",
        ),
        (
            "unknown tag-docker service",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace(
                        "tag-docker: podinfo, guestbook",
                        "tag-docker: podinfo, gestbook",
                    )
                })
            }),
            // Line 9 is `  - tag-docker: podinfo, gestbook`: the column is the misspelt name's.
            "promotion-trigger.yaml:9:26: service `gestbook` is not configured",
        ),
        (
            "misspelt field",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace("version_tag: mvp-v1", "versoin_tag: mvp-v1")
                })
            }),
            "promotion-trigger.yaml:3:1: versoin_tag: unknown field `versoin_tag`, expected one of `milestone_id`, `version_tag`, `trace_id`, `promotion_targets`, `manualApprovalRequired`, `signedBy`, `approvalRoles`, `notifyChannels`, `rollbackEnabled`, `customDeployStrategy`; did you mean `version_tag`?",
        ),
        (
            "a colon in a plain value",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace("version_tag: mvp-v1", "version_tag: mvp: v1")
                })
            }),
            "promotion-trigger.yaml:3:17: YAML syntax: mapping values are not allowed in this context (a value holding `: ` must be quoted, or a key is indented wrongly)",
        ),
        (
            "unknown JSON field",
            Box::new(|w| {
                w.edit("milestone-status.json", |t| {
                    t.replacen("{", "{\"owner\": \"x\",", 1)
                })
            }),
            "milestone-status.json:1:8: owner: unknown field `owner`",
        ),
        (
            "billion laughs",
            Box::new(|w| {
                let mut y = String::from(
                    "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
                );
                for (i, c) in "bcdefghi".chars().enumerate() {
                    let prev = (b'a' + i as u8) as char;
                    y.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
                }
                fs::write(w.trigger_dir().join("promotion-trigger.yaml"), y).unwrap();
            }),
            "promotion-trigger.yaml:",
        ),
        (
            "50 MB file",
            Box::new(|w| {
                let f = fs::File::create(w.trigger_dir().join("milestone-status.json")).unwrap();
                f.set_len(50 * 1024 * 1024).unwrap();
            }),
            "milestone-status.json:1:1: file is 52428800 bytes; the limit is 1048576 bytes",
        ),
        (
            "version is an existing tag",
            Box::new(|w| {
                git(&w.app, &["tag", "mvp-v1"]);
            }),
            "promotion-trigger.yaml:3:14: version `mvp-v1` is already a tag in the application repository",
        ),
        (
            "version escapes a path",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace("version_tag: mvp-v1", "version_tag: ../../etc")
                });
                w.edit("milestone-status.json", |t| {
                    t.replace("\"version_tag\": \"mvp-v1\",", "")
                });
            }),
            "promotion-trigger.yaml:3:14: `../../etc` is not a valid version tag",
        ),
        (
            "version named like a branch",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace("version_tag: mvp-v1", "version_tag: main")
                });
                w.edit("milestone-status.json", |t| {
                    t.replace("\"version_tag\": \"mvp-v1\",", "")
                });
            }),
            "promotion-trigger.yaml:3:14: `main` is not a valid version tag: it would shadow git's `main`",
        ),
        (
            "values path escapes the repository",
            Box::new(|w| {
                let text = fs::read_to_string(&w.config)
                    .unwrap()
                    .replace("apps/podinfo/values-staging.yaml", "../../../etc/passwd");
                fs::write(&w.config, text).unwrap();
            }),
            "orchestration-config.yaml:14:16: `../../../etc/passwd` leaves the repository",
        ),
        (
            "trigger file links outside",
            Box::new(|w| {
                let outside = w.root.join("outside.json");
                fs::copy(w.trigger_dir().join("milestone-status.json"), &outside).unwrap();
                fs::remove_file(w.trigger_dir().join("milestone-status.json")).unwrap();
                std::os::unix::fs::symlink(&outside, w.trigger_dir().join("milestone-status.json"))
                    .unwrap();
            }),
            "milestone-status.json:1:1: file is a link that leads outside the trigger directory",
        ),
        (
            "unknown environment",
            Box::new(|w| {
                w.edit("promotion-trigger.yaml", |t| {
                    t.replace("deploy-to-production", "deploy-to-moon")
                })
            }),
            "promotion-trigger.yaml:7:5: no service deploys to environment `moon` (configured: production, staging)",
        ),
        (
            "environment the policy does not name",
            Box::new(|w| {
                let policy = w.config.with_file_name("release-policy.yaml");
                let text = fs::read_to_string(&policy).unwrap();
                let kept = text.split("  production:").next().unwrap().to_string();
                fs::write(&policy, kept).unwrap();
            }),
            "promotion-trigger.yaml:7:5: environment `production` is not in the release policy (release-policy.yaml names staging)",
        ),
        (
            "coverage below policy",
            Box::new(|w| {
                w.edit("milestone-status.json", |t| t.replace("91.3", "80.5"));
                fs::remove_file(w.trigger_dir().join("qa-validation-report.md")).unwrap();
            }),
            "milestone-status.json:6:18: QA coverage 80.5% is below the 85% that environment `production` requires",
        ),
        (
            "tag path missing in the values file",
            Box::new(|w| {
                let text = fs::read_to_string(&w.config).unwrap().replacen(
                    "tagPath: image.tag",
                    "tagPath: image.version",
                    1,
                );
                fs::write(&w.config, text).unwrap();
            }),
            "apps/podinfo/values-staging.yaml:9:1: no key `version` under `image` (keys there: repository, tag, pullPolicy, pullSecrets) (service `podinfo`, tagPath `image.version`",
        ),
    ];
    for (name, setup, expected) in cases {
        let w = World::new();
        setup(&w);
        let refs = w.remote_refs();
        let out = w.release(true);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(expected),
            "{name}: expected `{expected}` in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(w.remote_refs(), refs, "{name}: the deployment repo changed");
    }
}

#[test]
fn a_push_race_is_refused_and_the_remote_branch_kept() {
    let w = World::new();
    // Someone else created the production release branch first.
    let main = git(&w.deploy, &["rev-parse", "main"]);
    git(
        &w.deploy,
        &[
            "update-ref",
            "refs/heads/release/mvp-v1/production",
            main.trim(),
        ],
    );
    let before = w.remote_refs();
    let out = w.release(true);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "branch release/mvp-v1/production already exists in the deployment repository"
        ),
        "{}",
        stderr(&out)
    );
    // The push is atomic: staging was not pushed either.
    assert_eq!(w.remote_refs(), before);
}

#[test]
fn schemas_in_the_repository_match_the_types() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["schema", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "promotion-trigger.schema.json",
        "milestone-status.schema.json",
    ] {
        let generated = fs::read_to_string(dir.path().join(name)).unwrap();
        let committed =
            fs::read_to_string(manifest_dir.join("schemas").join(name)).unwrap_or_default();
        assert_eq!(
            generated, committed,
            "schemas/{name} is stale: run `release-coordinator schema`"
        );
    }
}

/// A usage error is invalid input: exit 1 with clap's words, as the README's exit codes say;
/// `--help` exits 0.
#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let missing = Command::new(BIN).arg("status").output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("--config"),
        "{}",
        stderr(&missing)
    );
    let bad_value = Command::new(BIN)
        .args(["status", "--config", "x.yaml", "--format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(bad_value.status.code(), Some(1), "{}", stderr(&bad_value));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Usage"), "{}", stdout(&help));
}
