//! Images that exist: with `images:` configured, every image tag a release writes must be in
//! its registry before any pull request opens, and `tag-docker` copies each named service's
//! image from the trigger commit's tag to the release tag. Against a real registry
//! (`docker-registry`, the CNCF distribution registry), on both fake forges.

mod common;

use common::registry::{REGISTRY_PASSWORD, REGISTRY_USER, Registry};
use common::*;
use fake_forge::Flavor;
use release_coordinator::images::{ImageError, Registries};

on_both_forges!(
    a_missing_image_is_refused_before_any_pull_request_and_tag_docker_copies_the_commits_image,
    a_release_tag_that_names_another_image_is_never_moved_and_nothing_is_copied,
    a_digest_is_pinned_beside_the_tag_and_asked_again_when_the_branch_is_rebuilt,
    credentials_the_registry_refuses_are_said_at_the_commit_and_a_redelivery_looks_again,
    a_pin_the_values_file_has_no_place_for_refuses_the_trigger_and_copies_nothing,
);

/// The demo's world, its two services' images in `registry`.
async fn world_with_registry(forge: Flavor, registry: &Registry) -> World {
    let host = registry.host.clone();
    World::build(forge, false, None, move |c| with_images(c, &host, "", "")).await
}

/// The demo's configuration with its two services' images in the registry at `host`: `podinfo`
/// is added to podinfo's service, and `login` to the registry's settings.
fn with_images(c: String, host: &str, podinfo: &str, login: &str) -> String {
    c.replacen(
        "image: ghcr.io/stefanprodan/podinfo\n    tagPath: image.tag\n",
        &format!("image: {host}/acme/podinfo\n    tagPath: image.tag\n{podinfo}"),
        1,
    )
    .replace(
        "image: gcr.io/google-samples/gb-frontend",
        &format!("image: {host}/acme/guestbook"),
    ) + &format!("images:\n  registries:\n    \"{host}\":\n      insecure: true\n{login}")
}

/// CI builds the trigger commit's images and pushes them under the commit's id; their digests
/// (podinfo's, guestbook's).
async fn ci_builds(registry: &Registry, commit: &str) -> (String, String) {
    (
        registry
            .push_image("acme/podinfo", commit, "podinfo build")
            .await,
        registry
            .push_image("acme/guestbook", commit, "guestbook build")
            .await,
    )
}

/// The last push the fake sent (the trigger's), sent again as a redelivery would.
async fn redeliver_the_push(w: &World) {
    let push = w
        .fake
        .sent()
        .iter()
        .rposition(|(kind, _)| kind == "push" || kind == "Push Hook")
        .expect("the trigger's push was sent");
    w.fake.resend(push).await;
    w.settle().await;
}

async fn a_release_tag_that_names_another_image_is_never_moved_and_nothing_is_copied(
    forge: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path()).await;
    let w = world_with_registry(forge, &registry).await;
    // Someone already pushed an image as guestbook's release tag.
    let theirs = registry
        .push_image("acme/guestbook", "mvp-v1", "someone else's build")
        .await;
    let commit = w.push_trigger(&trigger_files()).await;
    registry
        .push_image("acme/podinfo", &commit, "podinfo build")
        .await;
    registry
        .push_image("acme/guestbook", &commit, "guestbook build")
        .await;
    redeliver_the_push(&w).await;
    assert!(w.pull(1).is_none(), "nothing was opened");
    assert_eq!(
        registry
            .digest_of("acme/guestbook", "mvp-v1")
            .await
            .as_deref(),
        Some(theirs.as_str()),
        "their tag was not moved"
    );
    assert_eq!(
        registry.digest_of("acme/podinfo", "mvp-v1").await,
        None,
        "nothing is copied unless everything can be"
    );
}

async fn a_missing_image_is_refused_before_any_pull_request_and_tag_docker_copies_the_commits_image(
    forge: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path()).await;
    let w = world_with_registry(forge, &registry).await;
    let host = registry.host.clone();
    let refusal = |commit: &str| {
        let st = w.fake.lock();
        assert!(st.repos[DEPLOY].pulls.is_empty(), "nothing was opened");
        st.repos[APP]
            .commit_comments
            .iter()
            .find(|c| c.sha == commit)
            .map(|c| c.body.clone())
            .expect("a comment on the trigger commit")
    };

    // Without tag-docker the release tag itself must exist: it does not.
    let plain = with_trigger(|t| t.replace("  - tag-docker: podinfo, guestbook\n", ""));
    let commit = w.push_trigger(&plain).await;
    let body = refusal(&commit);
    assert!(
        body.contains(&format!("no such image in its registry: `{host}/acme/guestbook:mvp-v1`, `{host}/acme/podinfo:mvp-v1`"))
            || body.contains(&format!("`{host}/acme/podinfo:mvp-v1`")),
        "{body}"
    );
    assert!(
        body.contains("; push them, then redeliver this push"),
        "{body}"
    );

    // With tag-docker, the commit's images are copied: not built yet, so refused, naming them.
    let commit = w.push_trigger(&trigger_files()).await;
    let body = refusal(&commit);
    assert!(
        body.contains(&format!("`{host}/acme/podinfo:{commit}`")),
        "{body}"
    );
    assert_eq!(registry.digest_of("acme/podinfo", "mvp-v1").await, None);

    // CI pushes the commit's images; the push is delivered again (as a redelivery would).
    let (podinfo, guestbook) = ci_builds(&registry, &commit).await;
    redeliver_the_push(&w).await;
    assert!(w.pull(1).is_some(), "the staging pull request opens");
    assert_eq!(
        w.trigger_comments(&commit).len(),
        1,
        "the refusal was not said twice"
    );
    assert_eq!(
        registry
            .digest_of("acme/podinfo", "mvp-v1")
            .await
            .as_deref(),
        Some(podinfo.as_str()),
        "the release tag is the commit's image, byte for byte"
    );
    assert_eq!(
        registry
            .digest_of("acme/guestbook", "mvp-v1")
            .await
            .as_deref(),
        Some(guestbook.as_str())
    );
}

/// `plan` and `release` on the command line pin digests too, asking the registry with the
/// credentials `images:` names; a tag the registry does not have is named, and nothing is
/// planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_plan_pins_the_digest_and_names_a_missing_image() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path()).await;
    let w = world_pinning_podinfo(Flavor::Github, &registry).await;
    // The trigger's files in a working tree of the application repository.
    let app = tmp.path().join("app");
    for (path, bytes) in trigger_files() {
        let file = app.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
    for args in [
        &["init", "-q"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=d",
            "-c",
            "user.email=d@localhost",
            "commit",
            "-qm",
            "trigger",
        ],
    ] {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(&app)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
    let plan = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_release-coordinator"))
            .args(["plan", "--format", "json", "--config"])
            .arg(w.root.join("config/orchestration-config.yaml"))
            .arg("--trigger-dir")
            .arg(app.join("release"))
            .output()
            .unwrap()
    };
    let out = plan();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no such image in its registry, so there is no digest to pin: `{}/acme/podinfo:mvp-v1`",
            registry.host
        )),
        "{err}"
    );

    let digest = registry
        .push_image("acme/podinfo", "mvp-v1", "podinfo build")
        .await;
    let out = plan();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for env in plan["environments"].as_array().unwrap() {
        let podinfo = env["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == "podinfo")
            .unwrap();
        assert_eq!(podinfo["digest"], digest.as_str());
        let file = env["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == podinfo["values_file"])
            .unwrap();
        assert!(
            file["diff"]
                .as_str()
                .unwrap()
                .contains(&format!("+  digest: \"{digest}\"\n")),
            "{file}"
        );
    }
}

/// The demo's world with its images in `registry`, podinfo pinning its digest at
/// `image.digest`, a place the chart has for it (empty until a release pins one).
async fn world_pinning_podinfo(forge: Flavor, registry: &Registry) -> World {
    let host = registry.host.clone();
    let w = World::build(forge, false, None, move |c| {
        with_images(c, &host, "    digestPath: image.digest\n", "")
    })
    .await;
    let values = w
        .deploy_text("main:apps/podinfo/values-staging.yaml")
        .replacen("  tag: 6.14.1\n", "  tag: 6.14.1\n  digest: \"\"\n", 1);
    w.push_to_deploy(
        &[
            ("apps/podinfo/values-staging.yaml", &values),
            ("apps/podinfo/values-production.yaml", &values),
        ],
        "dave",
        "podinfo: a place for the digest",
    )
    .await;
    w
}

/// podinfo pins its digest (`digestPath: image.digest`): the release pull request writes the
/// digest of the image `tag-docker` copied beside the tag, the signed manifest names it, and a
/// rebuild on a moved base asks the registry again and pins the same digest.
async fn a_digest_is_pinned_beside_the_tag_and_asked_again_when_the_branch_is_rebuilt(
    forge: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path()).await;
    let w = world_pinning_podinfo(forge, &registry).await;
    let values = w.deploy_text("main:apps/podinfo/values-staging.yaml");
    let commit = w.push_trigger(&trigger_files()).await;
    let (podinfo, _) = ci_builds(&registry, &commit).await;
    redeliver_the_push(&w).await;
    assert!(
        w.pull(1).is_some(),
        "the staging pull request opens: {:#?}",
        w.fake.lock().repos[APP].commit_comments
    );
    let pinned = values.replacen(
        "  tag: 6.14.1\n  digest: \"\"\n",
        &format!("  tag: mvp-v1\n  digest: \"{podinfo}\"\n"),
        1,
    );
    let head = w.head(1);
    assert_eq!(
        w.deploy_text(&format!("{head}:apps/podinfo/values-staging.yaml")),
        pinned,
        "the tag and its digest, and not another byte"
    );
    let manifest = w.deploy_text(&format!(
        "{head}:releases/mvp-v1/signed-release-manifest.yaml"
    ));
    assert!(
        manifest.contains(&format!("digest: \"{podinfo}\"")),
        "{manifest}"
    );

    // The base moves under the file the release writes; the approval rebuilds the branch, and
    // the digest is asked again.
    let moved = format!("# podinfo in staging\n{values}");
    w.push_to_deploy(
        &[("apps/podinfo/values-staging.yaml", &moved)],
        "dave",
        "a comment",
    )
    .await;
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    let rebuilt = w.head(1);
    assert_ne!(rebuilt, head, "rebuilt on the moved base");
    // The file changed under the approval: approved again, on the new head.
    w.checks_pass(1, &["ci/build"]).await;
    w.comment(1, "alice", "/approve").await;
    assert!(w.pull(1).unwrap().merged, "{:#?}", w.bot_comments(1));
    assert_eq!(
        w.deploy_text("main:apps/podinfo/values-staging.yaml"),
        format!("# podinfo in staging\n{pinned}")
    );
}

/// A registry that wants a login (htpasswd, the distribution registry's own): an anonymous
/// request and a wrong password are refusals that say what to fix, not failures tried again;
/// the right login reads and copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_login_is_sent_and_a_refused_one_says_what_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start_with_login(tmp.path()).await;
    let host = registry.host.clone();
    let config = |login: Option<&str>| {
        let yaml = match login {
            None => format!("registries:\n  \"{host}\": {{insecure: true}}\n"),
            Some(_) => format!(
                "registries:\n  \"{host}\": {{insecure: true, usernameEnv: USER, passwordEnv: PASSWORD}}\n"
            ),
        };
        let images: release_coordinator::config::ImagesConfig =
            yaml_serde::from_str(&yaml).unwrap();
        let password = login.map(str::to_string);
        Registries::new(&images, &|var| match var {
            "USER" => Some(REGISTRY_USER.to_string()),
            "PASSWORD" => password.clone(),
            _ => None,
        })
        .unwrap()
    };
    let image = format!("{host}/acme/podinfo");
    let pushed = registry.push_image("acme/podinfo", "v1", "a build").await;

    let anonymous = config(None).digest(&image, "v1").await.unwrap_err();
    assert!(
        matches!(anonymous, ImageError::Denied { .. }),
        "{anonymous:?}"
    );
    assert_eq!(
        anonymous.to_string(),
        format!(
            "the registry `{host}` refused an anonymous request for {image}:v1; give the bot credentials in images.registries.\"{host}\" (usernameEnv, passwordEnv)"
        )
    );
    let wrong = config(Some("not-the-password"))
        .digest(&image, "v1")
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().starts_with(&format!(
            "the registry `{host}` refused the bot's credentials for {image}:v1; check"
        )),
        "{wrong}"
    );
    assert!(!wrong.to_string().contains("not-the-password"), "{wrong}");

    let right = config(Some(REGISTRY_PASSWORD));
    assert_eq!(
        right.digest(&image, "v1").await.unwrap(),
        Some(pushed.clone())
    );
    assert_eq!(right.digest(&image, "v2").await.unwrap(), None);
    let copy = right.plan_retag(&image, "v1", "v2").await.unwrap().unwrap();
    assert_eq!(right.retag(copy).await.unwrap(), pushed);
    assert_eq!(registry.digest_of("acme/podinfo", "v2").await, Some(pushed));
}

/// The bot's registry password is wrong: the trigger is refused at its commit, saying which
/// registry refused and what to check (and never the password). The operator fixes it; the
/// redelivered push opens the release and copies the images, logged in.
async fn credentials_the_registry_refuses_are_said_at_the_commit_and_a_redelivery_looks_again(
    forge: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start_with_login(tmp.path()).await;
    let host = registry.host.clone();
    let mut w = World::build(forge, false, None, move |c| {
        let login = "      usernameEnv: SCENARIO_REGISTRY_USER\n      passwordEnv: SCENARIO_REGISTRY_WRONG_PASSWORD\n";
        with_images(c, &host, "", login)
    })
    .await;
    let commit = w.push_trigger(&trigger_files()).await;
    let comments = w.fake.lock().repos[APP].commit_comments.clone();
    let body = comments
        .iter()
        .find(|c| c.sha == commit)
        .map(|c| c.body.clone())
        .expect("a comment on the trigger commit");
    assert!(
        body.contains(&format!(
            "the registry `{}` refused the bot's credentials",
            registry.host
        )) && body.contains("passwordEnv"),
        "{body}"
    );
    assert!(!body.contains("not-the-password"), "{body}");
    assert!(w.pull(1).is_none());

    let config = w.root.join("config/orchestration-config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "SCENARIO_REGISTRY_WRONG_PASSWORD",
            "SCENARIO_REGISTRY_PASSWORD",
        ),
    )
    .unwrap();
    w.restart().await;
    // Let in now, the bot finds the commit's images missing (CI has not pushed them): that is
    // said, once, below the first refusal.
    redeliver_the_push(&w).await;
    redeliver_the_push(&w).await;
    let said = w.trigger_comments(&commit);
    assert_eq!(said.len(), 2, "{said:#?}");
    assert!(
        said[1].contains(&format!(
            "no such image in its registry: `{}/acme/podinfo:{commit}`",
            registry.host
        )) || said[1].contains(&format!("`{}/acme/guestbook:{commit}`", registry.host)),
        "{said:#?}"
    );
    let (podinfo, _) = ci_builds(&registry, &commit).await;
    redeliver_the_push(&w).await;
    assert!(
        w.pull(1).is_some(),
        "{:#?}",
        w.fake.lock().repos[APP].commit_comments
    );
    assert_eq!(
        registry.digest_of("acme/podinfo", "mvp-v1").await,
        Some(podinfo),
        "copied, logged in"
    );
}

/// podinfo pins its digest, but its chart has no `image.digest`: the trigger is refused with
/// the values file's path and the keys that are there, and since the pin comes before any copy,
/// the release tag is not made (a later trigger of the version is not blocked by it).
async fn a_pin_the_values_file_has_no_place_for_refuses_the_trigger_and_copies_nothing(
    forge: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path()).await;
    let host = registry.host.clone();
    let w = World::build(forge, false, None, move |c| {
        with_images(c, &host, "    digestPath: image.digest\n", "")
    })
    .await;
    let commit = w.push_trigger(&trigger_files()).await;
    ci_builds(&registry, &commit).await;
    redeliver_the_push(&w).await;
    assert!(w.pull(1).is_none());
    let said = w.trigger_comments(&commit);
    assert!(
        said.last()
            .is_some_and(|b| b.contains("apps/podinfo/values-staging.yaml:")
                && b.contains("no key `digest` under `image`")),
        "{said:#?}"
    );
    assert_eq!(registry.digest_of("acme/podinfo", "mvp-v1").await, None);
    assert_eq!(registry.digest_of("acme/guestbook", "mvp-v1").await, None);
}
