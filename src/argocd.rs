//! Argo CD: what the bot reads to know whether a merged release runs.
//!
//! The API is read (`GET /api/v1/applications/{name}`) for every environment being deployed;
//! Argo CD Notifications only tell the bot when to read (see `deploy/argocd/`), so a lost
//! notification delays the outcome and a forged one changes nothing. [`judge`] is the decision,
//! a pure function of what the API said.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ArgoCdError {
    #[error("Argo CD at {url} could not be reached: {why}")]
    Unreachable { url: String, why: String },
    #[error(
        "Argo CD refused the bot's token ({status}) for {url}; check `argocd.tokenEnv` and the account's RBAC (deploy/argocd/)"
    )]
    Refused { url: String, status: u16 },
    #[error("Argo CD answered {status} for {url}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("Argo CD's answer for {url} could not be read: {why}")]
    Unreadable { url: String, why: String },
}

/// An Argo CD server, reached with the bot's read-only token.
pub struct ArgoCd {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

/// What the bot reads of an Application (the fields of `v1alpha1.Application` in Argo CD's
/// API description that say what is deployed and how it runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppStatus {
    pub name: String,
    /// `status.sync.status`: `Synced`, `OutOfSync`, `Unknown`.
    pub sync_status: String,
    /// `status.sync.revision`: the revision the live state was compared with.
    pub sync_revision: Option<String>,
    /// `status.health.status`: `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing`,
    /// `Unknown`.
    pub health: String,
    /// `status.operationState.phase` of the last sync: `Running`, `Succeeded`, `Failed`,
    /// `Error`, `Terminating`.
    pub phase: Option<String>,
    /// The revision of the last sync operation.
    pub operation_revision: Option<String>,
    pub message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Wire {
    metadata: WireMeta,
    status: WireStatus,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireMeta {
    name: String,
}
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireStatus {
    sync: WireSync,
    health: WireHealth,
    operation_state: Option<WireOperationState>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireSync {
    status: String,
    revision: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireHealth {
    status: String,
}
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireOperationState {
    phase: Option<String>,
    message: Option<String>,
    operation: WireOperation,
    sync_result: Option<WireSyncResult>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireOperation {
    sync: Option<WireSyncResult>,
}
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireSyncResult {
    revision: Option<String>,
}

impl AppStatus {
    /// Reads an Application as the API (JSON) or `kubectl get -o yaml` (YAML) shows it.
    pub fn parse(body: &[u8]) -> Result<AppStatus, String> {
        let wire: Wire = serde_json::from_slice(body)
            .or_else(|_| yaml_serde::from_slice(body))
            .map_err(|e| e.to_string())?;
        let op = wire.status.operation_state;
        Ok(AppStatus {
            name: wire.metadata.name,
            sync_status: wire.status.sync.status,
            sync_revision: wire.status.sync.revision,
            health: wire.status.health.status,
            phase: op.as_ref().and_then(|o| o.phase.clone()),
            operation_revision: op.as_ref().and_then(|o| {
                o.sync_result
                    .as_ref()
                    .and_then(|r| r.revision.clone())
                    .or_else(|| o.operation.sync.as_ref().and_then(|s| s.revision.clone()))
            }),
            message: op.and_then(|o| o.message),
        })
    }
}

impl ArgoCd {
    pub fn new(url: &str, token: SecretString) -> ArgoCd {
        ArgoCd {
            base: url.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("a client with rustls builds"),
        }
    }

    /// `GET /api/v1/applications/{name}`; `None`: Argo CD has no such Application, or the
    /// bot's account may not read it.
    pub async fn application(&self, name: &str) -> Result<Option<AppStatus>, ArgoCdError> {
        let url = format!("{}/api/v1/applications/{name}", self.base);
        let answer = self
            .http
            .get(&url)
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| ArgoCdError::Unreachable {
                url: url.clone(),
                why: crate::forge::with_causes(&e),
            })?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| ArgoCdError::Unreadable {
            url: url.clone(),
            why: e.to_string(),
        })?;
        match status {
            200 => AppStatus::parse(&body)
                .map(Some)
                .map_err(|why| ArgoCdError::Unreadable { url, why }),
            // Argo CD answers 403 "permission denied" for an Application that does not exist
            // (so that names do not leak), as for one the account may not read.
            404 | 403 => Ok(None),
            401 => Err(ArgoCdError::Refused { url, status }),
            _ => Err(ArgoCdError::Status {
                url,
                status,
                // Argo CD answers errors as `{"error": ..., "code": ..., "message": ...}`.
                message: serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect()),
            }),
        }
    }
}

/// How one Application stands with a release's merge commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppVerdict {
    /// Synced to a revision containing the merge, and `Healthy`.
    Deployed,
    /// Synced to it, health not `Healthy` yet: `Degraded`/`Missing` count against the health
    /// timeout, the others (`Progressing`, ...) are still coming up.
    Synced { health: String },
    /// Not synced to the merge yet.
    Waiting(String),
    /// The sync of a revision containing the merge failed.
    Failed(String),
}

/// Judges one Application: `contains(revision)` says whether a revision has the merge commit
/// in its history.
pub fn judge(app: &AppStatus, contains: &mut dyn FnMut(&str) -> bool) -> AppVerdict {
    let name = &app.name;
    if let (Some(phase), Some(rev)) = (&app.phase, &app.operation_revision)
        && matches!(phase.as_str(), "Failed" | "Error")
        && contains(rev)
    {
        // Argo CD's message can be long (every resource's error); the status keeps its start.
        let message: String = app
            .message
            .as_deref()
            .unwrap_or("no message")
            .chars()
            .take(300)
            .collect();
        return AppVerdict::Failed(format!(
            "the sync of `{name}` to {} failed ({phase}): {message}",
            short(rev),
        ));
    }
    let synced = app.sync_status == "Synced"
        && app.sync_revision.as_deref().is_some_and(&mut *contains)
        // A sync of the merge still running is not done, whatever the comparison says.
        && !(app.phase.as_deref() == Some("Running")
            && app.operation_revision.as_deref().is_some_and(&mut *contains));
    if !synced {
        let at = app
            .sync_revision
            .as_deref()
            .map(short)
            .unwrap_or("no revision");
        return AppVerdict::Waiting(format!(
            "`{name}` has not synced the release yet ({} at {at}{})",
            if app.sync_status.is_empty() {
                "Unknown"
            } else {
                &app.sync_status
            },
            app.phase
                .as_deref()
                .map(|p| format!(", last sync {p}"))
                .unwrap_or_default()
        ));
    }
    if app.health == "Healthy" {
        AppVerdict::Deployed
    } else {
        AppVerdict::Synced {
            health: if app.health.is_empty() {
                "Unknown".into()
            } else {
                app.health.clone()
            },
        }
    }
}

/// Whether a health status counts against the health timeout.
pub fn is_unhealthy(health: &str) -> bool {
    matches!(health, "Degraded" | "Missing")
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGE: &str = "ea8759964626a583667a2bfd08f334ec2070040a";

    fn fixture(name: &str) -> AppStatus {
        let path = format!(
            "{}/fixtures/argocd/applications/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        AppStatus::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn a_real_application_is_read() {
        let app = fixture("synced-with-operation-state.yaml");
        assert_eq!(app.name, "velero-test");
        assert_eq!(app.sync_status, "Synced");
        assert_eq!(app.sync_revision.as_deref(), Some("rev1"));
        assert_eq!(app.health, "Healthy");
        assert_eq!(app.phase.as_deref(), Some("Succeeded"));
        assert_eq!(app.operation_revision.as_deref(), Some(MERGE));
        let degraded = fixture("health-degraded.yaml");
        assert_eq!(degraded.health, "Degraded");
        assert_eq!(degraded.phase, None);
    }

    #[test]
    fn deployed_only_when_synced_to_the_merge_and_healthy() {
        let mut app = fixture("synced-with-operation-state.yaml");
        // The fixture's sync revision is `rev1`: it does not contain the merge.
        let mut only_merge = |r: &str| r == MERGE;
        assert!(matches!(
            judge(&app, &mut only_merge),
            AppVerdict::Waiting(w) if w.contains("velero-test") && w.contains("Synced at rev1")
        ));
        app.sync_revision = Some(MERGE.into());
        assert_eq!(judge(&app, &mut only_merge), AppVerdict::Deployed);
        app.health = "Progressing".into();
        assert_eq!(
            judge(&app, &mut only_merge),
            AppVerdict::Synced {
                health: "Progressing".into()
            }
        );
        app.health = "Degraded".into();
        assert!(is_unhealthy("Degraded") && !is_unhealthy("Progressing"));
        app.sync_status = "OutOfSync".into();
        assert!(matches!(
            judge(&app, &mut only_merge),
            AppVerdict::Waiting(_)
        ));
        // A sync of the merge still running is not a deployment yet.
        app.sync_status = "Synced".into();
        app.health = "Healthy".into();
        app.phase = Some("Running".into());
        assert!(matches!(
            judge(&app, &mut only_merge),
            AppVerdict::Waiting(_)
        ));
    }

    #[test]
    fn a_failed_sync_of_the_merge_fails_and_an_older_one_does_not() {
        let mut app = fixture("synced-with-operation-state.yaml");
        app.phase = Some("Failed".into());
        app.message = Some("one or more objects failed to apply".into());
        let mut only_merge = |r: &str| r == MERGE;
        assert!(matches!(
            judge(&app, &mut only_merge),
            AppVerdict::Failed(why) if why.contains("velero-test") && why.contains("failed to apply")
        ));
        // The failed sync was of a revision before the release: not this release's failure.
        let mut nothing = |_: &str| false;
        assert!(matches!(judge(&app, &mut nothing), AppVerdict::Waiting(_)));
    }
}
