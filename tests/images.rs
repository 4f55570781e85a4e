//! Images that exist: with `images:` configured, every image tag a release writes must be in
//! its registry before any pull request opens, and `tag-docker` copies each named service's
//! image from the trigger commit's tag to the release tag. Against a real registry
//! (`docker-registry`, the CNCF distribution registry), on both fake forges.

mod common;

use common::registry::Registry;
use common::*;
use fake_forge::Flavor;

on_both_forges!(
    a_missing_image_is_refused_before_any_pull_request_and_tag_docker_copies_the_commits_image,
    a_release_tag_that_names_another_image_is_never_moved_and_nothing_is_copied,
);

/// The demo's world, its two services' images in `registry`.
async fn world_with_registry(forge: Flavor, registry: &Registry) -> World {
    let host = registry.host.clone();
    World::build(forge, false, None, move |c| {
        c.replace(
            "image: ghcr.io/stefanprodan/podinfo",
            &format!("image: {host}/acme/podinfo"),
        )
        .replace(
            "image: gcr.io/google-samples/gb-frontend",
            &format!("image: {host}/acme/guestbook"),
        ) + &format!("images:\n  registries:\n    \"{host}\":\n      insecure: true\n")
    })
    .await
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

    // With tag-docker, the commit's images are copied: not built yet, so refused, naming them.
    let commit = w.push_trigger(&trigger_files()).await;
    let body = refusal(&commit);
    assert!(
        body.contains(&format!("`{host}/acme/podinfo:{commit}`")),
        "{body}"
    );
    assert_eq!(registry.digest_of("acme/podinfo", "mvp-v1").await, None);

    // CI pushes the commit's images; the push is delivered again (as a redelivery would).
    let podinfo = registry
        .push_image("acme/podinfo", &commit, "podinfo build")
        .await;
    let guestbook = registry
        .push_image("acme/guestbook", &commit, "guestbook build")
        .await;
    redeliver_the_push(&w).await;
    assert!(w.pull(1).is_some(), "the staging pull request opens");
    assert_eq!(
        w.fake.lock().repos[APP]
            .commit_comments
            .iter()
            .filter(|c| c.sha == commit)
            .count(),
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
