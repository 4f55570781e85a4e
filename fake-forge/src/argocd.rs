//! A fake Argo CD beside the fake forge: `GET /api/v1/applications/{name}` answers an
//! Application in the shape of Argo CD's API description (`fixtures/argocd/swagger.json`,
//! `v1alpha1Application`), written over a real Application
//! (`fixtures/argocd/applications/synced-with-operation-state.yaml`). A test (or a person, on
//! the control port) "syncs" an Application to the deployment repository's base branch with a
//! sync phase and a health of its choosing, and the fake sends the notification Argo CD
//! Notifications would send with the bot's `deploy/argocd/` configuration.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Shared;

/// The real Application the answers are written over.
const APPLICATION: &str =
    include_str!("../../fixtures/argocd/applications/synced-with-operation-state.yaml");

/// One Application: what it deploys from and how its last sync went.
#[derive(Debug, Clone)]
pub struct ArgoApp {
    pub name: String,
    /// The deployment repository (`owner/name` in the fake) and the branch it tracks.
    pub repo: String,
    pub target: String,
    /// `status.sync`: `Synced`/`OutOfSync`, and the revision compared with.
    pub sync_status: String,
    pub revision: Option<String>,
    /// `status.health.status`.
    pub health: String,
    /// The last sync operation: phase, message, revision, times.
    pub phase: Option<String>,
    pub message: String,
    pub operation_revision: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    /// Successful syncs: id, revision, when.
    pub history: Vec<(u64, String, OffsetDateTime)>,
}

#[derive(Debug, Default)]
pub struct ArgoCdState {
    pub apps: BTreeMap<String, ArgoApp>,
    /// The only bearer token the API accepts, when set.
    pub token: Option<String>,
    /// Where notifications go, and the bearer token they carry.
    pub notify: Option<(String, String)>,
    /// Notifications not sent (lost on purpose).
    pub lose_notifications: usize,
    /// Every notification body, sent or lost, in order.
    pub notifications: Vec<Value>,
    /// How many times the API was read.
    pub reads: usize,
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/applications/{name}", get(get_application))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            injected_failure,
        ))
        .with_state(state)
}

/// An injected failure (`FakeForge::fail`) that matches: Argo CD down or failing.
async fn injected_failure(
    axum::extract::State(state): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    match crate::api::take_failure(&state, &method, &path) {
        Some((status, _, _)) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            14,
            "injected failure",
        ),
        None => next.run(req).await,
    }
}

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Argo CD's error body (`runtimeError` in its API description).
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": message, "code": code, "message": message})),
    )
        .into_response()
}

async fn get_application(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    let argo = &mut st.argocd;
    argo.reads += 1;
    if let Some(token) = &argo.token {
        let given = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                16,
                "invalid session: token signature is invalid",
            );
        }
    }
    match argo.apps.get(&name) {
        Some(app) => axum::Json(application_json(app)).into_response(),
        // As Argo CD answers since CVE-2022-41354: no telling a missing Application from one
        // the account may not read.
        None => error(StatusCode::FORBIDDEN, 7, "permission denied"),
    }
}

/// The Application as the API shows it: the real one, with this one's name, source and status.
pub fn application_json(app: &ArgoApp) -> Value {
    let mut v: Value = yaml_serde::from_str(APPLICATION).expect("the fixture is YAML");
    v["metadata"]["name"] = json!(app.name);
    v["spec"]["source"]["repoURL"] = json!(format!("https://github.com/{}.git", app.repo));
    v["spec"]["source"]["targetRevision"] = json!(app.target);
    let status = &mut v["status"];
    status["sync"]["status"] = json!(app.sync_status);
    status["sync"]["revision"] = json!(app.revision);
    status["sync"]["comparedTo"]["source"]["targetRevision"] = json!(app.target);
    status["health"]["status"] = json!(app.health);
    status["history"] = json!(
        app.history
            .iter()
            .map(|(id, rev, at)| json!({"id": id, "revision": rev, "deployedAt": ts(*at), "deployStartedAt": ts(*at)}))
            .collect::<Vec<_>>()
    );
    match &app.phase {
        Some(phase) => {
            let op = &mut status["operationState"];
            op["phase"] = json!(phase);
            op["message"] = json!(app.message);
            op["operation"]["sync"]["revision"] = json!(app.operation_revision);
            op["syncResult"]["revision"] = json!(app.operation_revision);
            op["startedAt"] = json!(app.started_at.map(ts));
            op["finishedAt"] = json!(app.finished_at.map(ts));
        }
        None => {
            if let Some(o) = status.as_object_mut() {
                o.remove("operationState");
            }
        }
    }
    if let Some(t) = app.finished_at {
        status["reconciledAt"] = json!(ts(t));
    }
    v
}

/// The trigger of Argo CD's stock catalog a state matches (`on-deployed`, `on-sync-failed`,
/// `on-health-degraded`, `on-sync-succeeded`), if any: the ones `deploy/argocd/` subscribes
/// the bot to.
pub fn trigger_of(app: &ArgoApp) -> Option<&'static str> {
    match (app.phase.as_deref(), app.health.as_str()) {
        (Some("Failed" | "Error"), _) => Some("on-sync-failed"),
        (_, "Degraded") => Some("on-health-degraded"),
        (Some("Succeeded"), "Healthy") => Some("on-deployed"),
        (Some("Succeeded"), _) => Some("on-sync-succeeded"),
        _ => None,
    }
}

/// The bot's Argo CD Notifications configuration, whose template the fake fills in.
const NOTIFICATIONS_CM: &str = include_str!("../../deploy/argocd/argocd-notifications-cm.yaml");

/// The body Argo CD sends for `app` with `deploy/argocd/argocd-notifications-cm.yaml`: its
/// `template.release-coordinator` webhook body, each `{{.app.…}}` filled in from the
/// Application as the API shows it (a missing field prints `<no value>`, as Go's templates
/// do). The trigger is named only in the fake's log.
pub fn notification(app: &ArgoApp, trigger: &str) -> Value {
    let cm: Value = yaml_serde::from_str(NOTIFICATIONS_CM).expect("the ConfigMap is YAML");
    let template: Value = yaml_serde::from_str(
        cm["data"]["template.release-coordinator"]
            .as_str()
            .expect("the ConfigMap has the bot's template"),
    )
    .expect("the template is YAML");
    let body = template["webhook"]["release-coordinator"]["body"]
        .as_str()
        .expect("the template has a webhook body");
    let app_json = application_json(app);
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closed action") + start;
        let path = rest[start + 2..end].trim();
        let field = path
            .strip_prefix(".app.")
            .expect("the template reads the Application only")
            .split('.')
            .fold(&app_json, |v, key| &v[key]);
        match field {
            Value::String(s) => out.push_str(s),
            Value::Null => out.push_str("<no value>"),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    let note: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("the template makes JSON ({e}): {out}"));
    eprintln!("fake-argocd: {trigger} for {}", app.name);
    note
}
