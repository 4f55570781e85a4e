//! Images that exist: with `images:` configured, every image tag a release writes must be in
//! its registry before any pull request opens, and `tag-docker` copies each named service's
//! image from the trigger commit's tag to the release tag. Against a real registry
//! (`docker-registry`, the CNCF distribution registry), on both fake forges.

mod common;

use common::registry::Registry;
use common::*;
use fake_forge::Flavor;

on_both_forges!(
    a_missing_image_is_refused_before_any_pull_request_and_tag_docker_copies_the_commits_image
);

async fn a_missing_image_is_refused_before_any_pull_request_and_tag_docker_copies_the_commits_image(
    forge: Flavor,
) {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path()).await;
    let host = registry.host.clone();
    let w = World::build(forge, false, None, move |c| {
        c.replace(
            "image: ghcr.io/stefanprodan/podinfo",
            &format!("image: {host}/acme/podinfo"),
        )
        .replace(
            "image: gcr.io/google-samples/gb-frontend",
            &format!("image: {host}/acme/guestbook"),
        ) + &format!("images:\n  registries:\n    \"{host}\":\n      insecure: true\n")
    })
    .await;
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
    let push = w
        .fake
        .sent()
        .iter()
        .rposition(|(kind, _)| kind == "push" || kind == "Push Hook")
        .expect("the trigger's push was sent");
    w.fake.resend(push).await;
    w.settle().await;
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
