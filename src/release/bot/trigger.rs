//! A push to an application repository: read the trigger at the pushed commit, release it or
//! say exactly why not on the commit.

use serde_json::json;

use super::model::{Intent, Summary, TriggerOutcome};
use super::{Bot, BotError, texts};
use crate::events;
use crate::git::AppRepoInfo;
use crate::images::Digests;
use crate::release::plan::needs_digests;
use crate::release::state::AuditEvent;
use crate::release::{DeployAccess, ReleaseError, execute, prepare_with_app};
use crate::store::ReleaseRecord;
use crate::store::forge_releases::ForgeRelease;

impl Bot {
    pub(super) async fn on_push(&self, p: &events::Push) -> Result<(), BotError> {
        if self.is_deployment_repo(&p.repo) {
            return self.on_release_branch_push(p).await;
        }
        if !super::push_may_trigger(&self.settings, p) {
            return Ok(());
        }
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        let outcome = self.store.trigger_outcome(forge, repo, &p.after).await?;
        // Rejected before and cut short (an answer lost, a crash): its comment may be there.
        let rejected_before = outcome == Some(TriggerOutcome::Rejecting);
        match outcome {
            // Recorded as started, then the process died before the release was linked to
            // this forge: link it now (its branches are pushed, or the push is resumed).
            Some(TriggerOutcome::Starting(intent)) => {
                if let Some(record) = self.store.find_release(&intent.version).await?
                    && record.state != crate::release::state::ReleaseState::Pending.as_str()
                {
                    let _release = self.lanes.hold(&super::Lane::Release(record.id)).await;
                    return self.link_release(p, record, *intent).await;
                }
            }
            // A replayed push (or a retry after a failure further on): carry on from the store.
            Some(TriggerOutcome::Released { version }) => {
                if let Some(record) = self.store.find_release(&version).await? {
                    let _release = self.lanes.hold(&super::Lane::Release(record.id)).await;
                    return self.advance(record.id, false).await;
                }
                return Ok(());
            }
            Some(TriggerOutcome::Rejected) => return Ok(()),
            Some(TriggerOutcome::Rejecting) | None => {}
        }
        self.release_trigger(p, rejected_before).await
    }

    /// Reads the trigger at the pushed commit and releases it, or refuses it on the commit.
    async fn release_trigger(
        &self,
        p: &events::Push,
        rejected_before: bool,
    ) -> Result<(), BotError> {
        let trigger = self.settings.trigger_path.as_str();
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        let app = self.open_app_repo(repo).await?;
        let commit = app.fetch_commit(&p.branch, &p.after)?;
        let dir = trigger.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let Some(tmp) = self.trigger_dir(&app, commit)? else {
            return Ok(()); // the trigger was deleted
        };
        let info = AppRepoInfo {
            head_commit: Some(p.after.clone()),
            tags: app.remote_tags()?,
        };
        let deploy_access = self.deploy_access().await?;
        let prepare = || {
            prepare_with_app(
                &self.config,
                tmp.path(),
                info.clone(),
                deploy_access.clone(),
                Some(&self.store),
                self.now(),
            )
        };
        let mut prepared = prepare().await;
        // Two trigger commits naming one version are released one after the other: the
        // second waits for the first, then is read again, as a one-at-a-time worker would
        // have read it (and is refused as a reused version, or finds its own release).
        // Read again until the version held is the version read (a version derived from the
        // recorded ones can move on while this trigger waits).
        let mut _version = None;
        let mut held_version = None;
        for _ in 0..3 {
            let Ok(p) = &prepared else {
                break;
            };
            let version = p.plan.spec.version.clone();
            _version = None;
            _version = Some(
                self.lanes
                    .hold(&super::Lane::Version(version.clone()))
                    .await,
            );
            held_version = Some(version.clone());
            // The delivery's log lines (a failure's among them) name the release.
            tracing::Span::current().record("release", version.as_str());
            if self.store.find_release(&version).await?.is_none() {
                break;
            }
            prepared = prepare().await;
            if prepared
                .as_ref()
                .is_ok_and(|p| p.plan.spec.version == version)
            {
                break;
            }
        }
        // Still moving after three reads: read again later rather than reserve a version whose
        // lane this job does not hold.
        if let Ok(p) = &prepared
            && held_version.as_ref() != Some(&p.plan.spec.version)
        {
            return Err(BotError::Io(format!(
                "the version this trigger names kept changing while it was read (now {}); it is read again",
                p.plan.spec.version
            )));
        }
        let prepared = match prepared {
            Ok(prepared) => match self.owner_check(repo, &prepared.plan) {
                Ok(()) => self.images_ready(prepared, &p.after).await?,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let outcome = match prepared {
            Ok(prepared) => {
                let intent = Intent {
                    version: prepared.plan.spec.version.clone(),
                    summary: Summary::of(&prepared.plan),
                    environments: prepared
                        .plan
                        .environments
                        .iter()
                        .map(|e| (e.environment.clone(), e.branch.clone()))
                        .collect(),
                };
                // Written before the push, so a crash between the push and the link below
                // is finished by the replay of this delivery instead of refused.
                self.store
                    .set_trigger_outcome(
                        forge,
                        repo,
                        &p.after,
                        &TriggerOutcome::Starting(Box::new(intent.clone())),
                    )
                    .await?;
                execute(prepared, &self.store, true, &p.pusher.login)
                    .await
                    .map(|_| intent)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(intent) => {
                let environments: Vec<&str> = intent
                    .environments
                    .iter()
                    .map(|(e, _)| e.as_str())
                    .collect();
                tracing::info!(release = %intent.version, repo = %repo, commit = %p.after, environments = ?environments, "trigger accepted: release branches pushed");
                let record = self
                    .store
                    .find_release(&intent.version)
                    .await?
                    .ok_or_else(|| BotError::Io(format!("release {} vanished", intent.version)))?;
                // Its pull requests' events (and reconcile) wait until it is linked.
                let _release = self.lanes.hold(&super::Lane::Release(record.id)).await;
                self.just_built
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(record.id, super::lanes::current_job());
                self.link_release(p, record, intent).await
            }
            Err(e) if e.is_user_error() => self.reject_trigger(p, dir, &e, rejected_before).await,
            Err(e) => Err(e.into()),
        }
    }

    /// The trigger directory at `commit`, copied to a scratch directory with the trigger under
    /// its usual name; `None` when the commit has no trigger.
    pub(super) fn trigger_dir(
        &self,
        app: &crate::git::DeployRepo,
        commit: git2::Oid,
    ) -> Result<Option<tempfile::TempDir>, BotError> {
        let trigger = self.settings.trigger_path.as_str();
        let (dir, file) = match trigger.rsplit_once('/') {
            Some((d, f)) => (d, f),
            None => ("", trigger),
        };
        let files = app.read_dir(commit, dir)?;
        if !files.iter().any(|(name, _)| name == file) {
            return Ok(None);
        }
        let tmp = tempfile::tempdir().map_err(|e| BotError::Io(e.to_string()))?;
        for (name, content) in &files {
            let target = if name == file {
                tmp.path().join("promotion-trigger.yaml")
            } else {
                tmp.path().join(name)
            };
            std::fs::write(target, content).map_err(|e| BotError::Io(e.to_string()))?;
        }
        Ok(Some(tmp))
    }

    /// How the bot reaches the deployment repository: its forge credentials, if it uses any,
    /// and pushes shared as the forge allows.
    pub(super) async fn deploy_access(&self) -> Result<Option<DeployAccess>, BotError> {
        let deploy = self
            .forge
            .git_access(&self.settings.deployment_repo)
            .await?;
        Ok(Some(DeployAccess {
            credentials: deploy.token.map(|t| {
                (
                    deploy.username,
                    secrecy::ExposeSecret::expose_secret(&t).to_string(),
                )
            }),
            // Releases pushing at once share a push, within what the forge handles as usual
            // pushes: GitLab runs webhooks and pipelines only for pushes of up to 3 refs.
            push_batch: match self.forge.kind() {
                events::ForgeKind::Github => 64,
                events::ForgeKind::Gitlab => 3,
            },
        }))
    }

    /// The bot's cache of the deployment repository, reached with the forge's credentials
    /// (nothing fetched).
    pub(super) async fn deploy_repo(&self) -> Result<crate::git::DeployRepo, BotError> {
        let access = self.deploy_access().await?;
        Ok(crate::release::deploy_repo(&self.config, access)?)
    }

    /// With `images:` configured, every image tag the release writes must exist: `tag-docker`'s
    /// services are copied from their source tag. Everything is looked up first, then the
    /// digests are pinned where services have `digestPath` (the plan made again), and only
    /// then is anything copied: a refused trigger copies nothing. The outer error is the
    /// registry's (tried again); the inner one refuses the trigger, naming what it looked for.
    async fn images_ready(
        &self,
        prepared: crate::release::Prepared,
        commit: &str,
    ) -> Result<Result<crate::release::Prepared, ReleaseError>, BotError> {
        let (Some(registries), Some(images)) =
            (&self.registries, &self.config.orchestration.images)
        else {
            return Ok(Ok(prepared));
        };
        let mut digests = Digests::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut missing = Vec::new();
        // (image, source tag, release tag, the copy looked up)
        let mut copies = Vec::new();
        // A registry that could not be asked is tried again; its other refusals are said.
        let refused = |e: crate::images::ImageError| match ReleaseError::from(e) {
            ReleaseError::Registry(why) => Err(BotError::Io(why)),
            refusal => Ok(Err(refusal)),
        };
        let plan = &prepared.plan;
        // The images the release writes as they are (not copied by `tag-docker`).
        let mut as_they_are = Vec::new();
        for change in plan.environments.iter().flat_map(|e| &e.changes) {
            if !seen.insert((change.image.clone(), change.tag.clone())) {
                continue;
            }
            if plan.spec.tag_docker.contains(&change.service) {
                let source = match images.source_tag_for(commit, &plan.spec.version) {
                    Ok(s) => s,
                    Err(why) => return Ok(Err(ReleaseError::Refused(why))),
                };
                match registries
                    .plan_retag(&change.image, &source, &change.tag)
                    .await
                {
                    Ok(Some(copy)) => {
                        let key = format!("{}:{}", change.image, change.tag);
                        digests.insert(key, copy.digest.clone());
                        copies.push((change.image.clone(), source, change.tag.clone(), copy));
                    }
                    Ok(None) => missing.push(format!(
                        "`{}:{source}` (what `tag-docker` copies to `{}`; images.sourceTag)",
                        change.image, change.tag
                    )),
                    Err(e) => return refused(e),
                }
            } else {
                as_they_are.push((change.image.clone(), change.tag.clone()));
            }
        }
        match registries.digests_of(as_they_are, &mut digests).await {
            Ok(not_there) => missing.extend(not_there),
            Err(e) => return refused(e),
        }
        if !missing.is_empty() {
            return Ok(Err(ReleaseError::ImagesMissing(format!(
                "no such image in its registry: {}; push {}, then redeliver this push from the forge's webhook page (or push again)",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ))));
        }
        // Services with `digestPath` pin the digests just looked up.
        let prepared = if needs_digests(&self.config, &prepared.plan).is_empty() {
            prepared
        } else {
            match crate::release::pin(&self.config, prepared, &digests) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            }
        };
        for (image, source, tag, copy) in copies {
            match registries.retag(copy).await {
                Ok(digest) => {
                    tracing::info!(image = %image, from = %source, to = %tag, digest = %digest, "image tagged for the release");
                }
                Err(e) => return refused(e),
            }
        }
        Ok(Ok(prepared))
    }

    /// A service is released only from the application repositories that own it.
    fn owner_check(
        &self,
        repo: &str,
        plan: &crate::release::plan::ReleasePlan,
    ) -> Result<(), ReleaseError> {
        let mut refused = Vec::new();
        for env in &plan.environments {
            for change in &env.changes {
                let Some(service) = self
                    .config
                    .orchestration
                    .services
                    .iter()
                    .find(|s| s.name == change.service)
                else {
                    continue;
                };
                if !service
                    .repositories
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(repo))
                    && !refused.contains(&change.service)
                {
                    refused.push(change.service.clone());
                }
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(ReleaseError::Refused(format!(
            "{repo} may not release {}: the operator's configuration names the application repositories that own each service (services[].repositories)",
            refused
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Links a recorded release to the forge and opens its first pull request.
    async fn link_release(
        &self,
        p: &events::Push,
        record: ReleaseRecord,
        intent: Intent,
    ) -> Result<(), BotError> {
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        let state = crate::release::state::ReleaseState::parse(&record.state)
            .unwrap_or(crate::release::state::ReleaseState::Pending);
        let rel = ForgeRelease {
            release_id: record.id,
            version_tag: intent.version.clone(),
            state,
            forge: forge.to_string(),
            app_repo: repo.clone(),
            app_commit: p.after.clone(),
            requester: p.pusher.login.clone(),
            trigger_author: p.head_author.clone(),
            summary: intent.summary,
            tagged: false,
            release_url: None,
        };
        let linked = self
            .store
            .record_forge_release(&rel, &intent.environments)
            .await?;
        if linked {
            self.audit(
                &rel,
                AuditEvent::ReleaseLinked,
                &p.pusher.login,
                json!({"forge": forge, "repo": repo, "commit": p.after, "author": p.head_author}),
            )
            .await?;
        }
        self.store
            .set_trigger_outcome(
                forge,
                repo,
                &p.after,
                &TriggerOutcome::Released {
                    version: intent.version,
                },
            )
            .await?;
        self.advance(record.id, false).await
    }

    /// A trigger that cannot be released: a failed status and a comment on the commit that
    /// list every problem with its file, line and column. `rejected_before`: an earlier attempt
    /// was cut short, so the comment is looked for before it is made.
    async fn reject_trigger(
        &self,
        p: &events::Push,
        dir: &str,
        e: &ReleaseError,
        rejected_before: bool,
    ) -> Result<(), BotError> {
        let forge = self.forge.kind().as_str();
        let repo = &p.repo.full_name;
        self.store
            .set_trigger_outcome(forge, repo, &p.after, &TriggerOutcome::Rejecting)
            .await?;
        let total = match e {
            ReleaseError::Invalid(d) => d.total(),
            _ => 1,
        };
        let problems: Vec<String> = match e {
            ReleaseError::Invalid(d) => {
                d.0.iter()
                    .map(|d| {
                        let path = std::path::Path::new(&d.file);
                        // The operator's files by their name in the configuration folder (not
                        // the bot's own paths); a values file by its path in the deployment
                        // repository, as the plan names it.
                        if let Ok(own) = path.strip_prefix(&self.config.base_dir) {
                            return format!(
                                "{}:{}:{}: {}",
                                own.display(),
                                d.line,
                                d.column,
                                d.message
                            );
                        }
                        if path.is_relative() {
                            return format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message);
                        }
                        // The developer's files were read from a scratch directory; name them as
                        // in the repository.
                        let name = path
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default();
                        let name = if name == "promotion-trigger.yaml" {
                            self.settings.trigger_path.clone()
                        } else if dir.is_empty() {
                            name
                        } else {
                            format!("{dir}/{name}")
                        };
                        format!("{name}:{}:{}: {}", d.line, d.column, d.message)
                    })
                    .collect()
            }
            other => vec![other.to_string()],
        };
        tracing::info!(repo = %repo, commit = %p.after, problems = total, first = %problems.first().map(String::as_str).unwrap_or_default(), "trigger refused");
        self.forge
            .set_commit_status(
                repo,
                &p.after,
                true,
                "release-coordinator",
                &texts::trigger_rejection_status(total),
            )
            .await?;
        // Said once: a redelivery that finds the same problems says nothing; one that finds
        // others (the images arrived, and now the registry refuses the bot) says those.
        let body = texts::trigger_rejection(&problems, total);
        let said = rejected_before
            && self
                .forge
                .commit_comments(repo, &p.after)
                .await?
                .iter()
                .any(|n| {
                    n.author.login.eq_ignore_ascii_case(self.bot_login())
                        && n.body.trim() == body.trim()
                });
        if !said {
            self.forge.comment_on_commit(repo, &p.after, &body).await?;
        }
        // Images may still be on their way: a redelivery of this push looks again; every other
        // refusal is final for this commit.
        if !matches!(e, ReleaseError::ImagesMissing(_)) {
            self.store
                .set_trigger_outcome(forge, repo, &p.after, &TriggerOutcome::Rejected)
                .await?;
        }
        Ok(())
    }
}
