//! The HTTP service: webhook routes and health probes.
//!
//! The routes only verify, parse and store (see [`webhook`]); the worker does the work. The
//! store is shared with the worker and the reconcile loop.

pub mod door;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio::sync::Notify;

use crate::store::Store;
use crate::store::deliveries::DeliveryWriter;
use webhook::{GithubVerifier, TokenVerifier};

pub use door::{DEFAULT_MAX_BODY_BYTES, DoorLimits};

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub store: Store,
    pub writer: DeliveryWriter,
    pub github: Option<GithubVerifier>,
    pub gitlab: Option<TokenVerifier>,
    pub argocd: Option<TokenVerifier>,
    /// The forge the bot releases through: Argo CD's notifications are stored under it.
    pub home: crate::events::ForgeKind,
    /// Reads bodies within the door's limits.
    pub bodies: door::BodyReader,
    /// Notified when a delivery was stored, to wake the worker.
    pub stored: Arc<Notify>,
    /// Whether an event is for the worker at all (see `bot::concerns_the_bot`).
    pub interest: Interest,
}

/// Decides at the door whether an event needs the worker.
pub type Interest =
    Arc<dyn Fn(crate::events::ForgeKind, &crate::events::Event) -> bool + Send + Sync>;

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// How the service is set up; secrets arrive already read from the environment.
pub struct ServiceConfig {
    pub github_webhook_secrets: Option<Vec<SecretString>>,
    /// `X-Gitlab-Token` values accepted (several during a rotation).
    pub gitlab_webhook_tokens: Option<Vec<SecretString>>,
    /// Tokens Argo CD Notifications authenticate with (`POST /webhooks/argocd`).
    pub argocd_webhook_tokens: Option<Vec<SecretString>>,
    pub limits: DoorLimits,
}

impl AppState {
    /// Starts the delivery writer over `store`.
    pub fn new(
        store: Store,
        config: ServiceConfig,
        interest: Interest,
        home: crate::events::ForgeKind,
    ) -> AppState {
        let stored = Arc::new(Notify::new());
        let writer = DeliveryWriter::spawn(store.clone(), stored.clone());
        AppState {
            inner: Arc::new(Inner {
                store,
                writer,
                github: config
                    .github_webhook_secrets
                    .as_deref()
                    .map(GithubVerifier::new),
                gitlab: config
                    .gitlab_webhook_tokens
                    .as_deref()
                    .map(TokenVerifier::new),
                argocd: config
                    .argocd_webhook_tokens
                    .as_deref()
                    .map(TokenVerifier::new),
                home,
                bodies: door::BodyReader::new(config.limits.clone()),
                stored,
                interest,
            }),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/github", post(webhook::github))
        .route("/webhooks/gitlab", post(webhook::gitlab))
        .route("/webhooks/argocd", post(webhook::argocd))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Ready when the store answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "the store does not answer")
        }
    }
}

/// A running service: the HTTP server and the worker, both on the current runtime.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub server: tokio::task::JoinHandle<()>,
    pub worker: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops both tasks at once, as a crash would (nothing is flushed: that is the point).
    pub fn abort(&self) {
        self.server.abort();
        self.worker.abort();
    }
}

/// Starts the webhook server on `listener` and the worker for `bot`.
pub fn start(
    bot: std::sync::Arc<crate::release::bot::Bot>,
    config: ServiceConfig,
    listener: tokio::net::TcpListener,
    pacing: crate::worker::Pacing,
) -> Running {
    let store = bot.store.clone();
    let settings = bot.settings.clone();
    let kind = bot.forge.kind();
    // Deliveries from the other forge (its webhook door may be open too) are kept, not acted on.
    let interest: Interest = Arc::new(move |forge, e| {
        forge == kind && crate::release::bot::concerns_the_bot(&settings, e)
    });
    let limits = config.limits.clone();
    let state = AppState::new(store.clone(), config, interest, kind);
    let stored = state.stored.clone();
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let server = tokio::spawn(door::serve(listener, router(state), limits));
    let worker = tokio::spawn(crate::worker::run(bot, store, stored, pacing));
    Running {
        addr,
        server,
        worker,
    }
}
