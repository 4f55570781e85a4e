//! The webhook routes: verify, parse once, store, answer.
//!
//! Nothing is done with an event here beyond making it durable: the route answers as soon as the
//! delivery is committed, and the worker acts on it afterwards. A delivery that fails any check
//! is answered with the reason (GitHub shows it in the delivery log) and nothing is stored.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use sha2::Sha256;
use time::OffsetDateTime;

use super::AppState;
use crate::events::{Event, ForgeKind};
use crate::forge::PayloadError;
use crate::forge::github::webhook as github_payload;
use crate::forge::gitlab::webhook as gitlab_payload;
use crate::store::deliveries::{Accepted, NewDelivery};

/// Checks `X-Hub-Signature-256` against every configured secret (several during a rotation).
pub struct GithubVerifier {
    /// Keyed once at start-up; each request clones the keyed state instead of re-keying.
    macs: Vec<Hmac<Sha256>>,
}

impl GithubVerifier {
    pub fn new(secrets: &[SecretString]) -> GithubVerifier {
        GithubVerifier {
            macs: secrets
                .iter()
                .map(|s| {
                    Hmac::<Sha256>::new_from_slice(s.expose_secret().as_bytes())
                        .expect("HMAC takes keys of any length")
                })
                .collect(),
        }
    }

    /// The keyed MACs for one body, to be fed its chunks as they arrive.
    pub fn start(&self) -> Vec<Hmac<Sha256>> {
        self.macs.clone()
    }

    /// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 the fed `macs` computed, under one
    /// of the secrets. The comparison is constant-time (`verify_slice`).
    pub fn finish(macs: Vec<Hmac<Sha256>>, header: &[u8]) -> bool {
        let Some(hex_sig) = header.strip_prefix(b"sha256=") else {
            return false;
        };
        let mut sig = [0u8; 32];
        if hex::decode_to_slice(hex_sig, &mut sig).is_err() {
            return false;
        }
        macs.into_iter()
            .fold(false, |found, m| found | m.verify_slice(&sig).is_ok())
    }

    /// Whether `header` is the signature of the whole `body`.
    pub fn verify(&self, body: &[u8], header: &[u8]) -> bool {
        let mut macs = self.start();
        macs.iter_mut().for_each(|m| m.update(body));
        Self::finish(macs, header)
    }
}

/// Checks a shared token (GitLab's `X-Gitlab-Token`, Argo CD's bearer or basic-auth password)
/// against every configured token, in constant time: both sides are
/// hashed first (so lengths do not leak) and the digests compared without an early exit.
pub struct TokenVerifier {
    digests: Vec<[u8; 32]>,
}

impl TokenVerifier {
    pub fn new(tokens: &[SecretString]) -> TokenVerifier {
        TokenVerifier {
            digests: tokens
                .iter()
                .map(|t| <Sha256 as sha2::Digest>::digest(t.expose_secret().as_bytes()).into())
                .collect(),
        }
    }

    pub fn verify(&self, header: &[u8]) -> bool {
        let got: [u8; 32] = <Sha256 as sha2::Digest>::digest(header).into();
        // Every configured token is compared, whichever matches.
        self.digests.iter().fold(false, |found, want| {
            let same = want.iter().zip(&got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            found | same
        })
    }
}

/// Why a delivery was not accepted. Nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("this bot is not configured for {0} webhooks")]
    NotConfigured(&'static str),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not valid")]
    BadHeader(&'static str),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read")]
    Unreadable,
    #[error("the body did not arrive within {0} seconds")]
    SlowBody(u64),
    #[error("too many large deliveries are being received at once; redeliver it later")]
    Busy,
    #[error("the signature does not match any configured webhook secret")]
    BadSignature,
    #[error("the X-Gitlab-Token does not match any configured webhook token")]
    BadToken,
    #[error(
        "the Authorization header does not carry a configured Argo CD webhook token (Bearer, or basic auth with it as the password)"
    )]
    BadAuthorization,
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = match self {
            Rejection::NotConfigured(_) => StatusCode::NOT_FOUND,
            Rejection::BadSignature | Rejection::BadToken | Rejection::BadAuthorization => {
                StatusCode::UNAUTHORIZED
            }
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::Busy => {
                let headers = [(axum::http::header::RETRY_AFTER, "5")];
                return (StatusCode::SERVICE_UNAVAILABLE, headers, self.to_string())
                    .into_response();
            }
            _ => StatusCode::BAD_REQUEST,
        };
        if status == StatusCode::UNAUTHORIZED {
            refused_warning(&self);
        }
        (status, self.to_string()).into_response()
    }
}

/// Logs a refused delivery, at most once a second with how many more were refused since: a
/// client without the secret must not be able to fill the log.
fn refused_warning(why: &Rejection) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
    if LAST_SECOND.swap(now, Ordering::Relaxed) == now {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let more = UNLOGGED.swap(0, Ordering::Relaxed);
    if more > 0 {
        tracing::warn!(unlogged_before = more, "webhook refused: {why}");
    } else {
        tracing::warn!("webhook refused: {why}");
    }
}

/// A verified GitHub delivery: its id, its kind and the parsed event (`None`: a kind or
/// action the bot does not act on).
pub struct GithubDelivery {
    pub delivery_id: String,
    pub kind: String,
    pub event: Option<Event>,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Rejection> {
    let v = headers.get(name).ok_or(Rejection::MissingHeader(name))?;
    let s = v.to_str().map_err(|_| Rejection::BadHeader(name))?;
    if s.is_empty() || s.len() > 128 {
        return Err(Rejection::BadHeader(name));
    }
    Ok(s)
}

impl FromRequest<AppState> for GithubDelivery {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let verifier = state
            .github
            .as_ref()
            .ok_or(Rejection::NotConfigured("GitHub"))?;
        let (parts, body) = req.into_parts();
        let signature = parts
            .headers
            .get("x-hub-signature-256")
            .ok_or(Rejection::BadSignature)?;
        // The signature is computed as the body streams in; nothing about an unauthenticated
        // request is looked at further, and a large one never was in memory.
        let mut macs = verifier.start();
        let body = state
            .bodies
            .read(&parts, body, |chunk| {
                macs.iter_mut().for_each(|m| m.update(chunk))
            })
            .await?;
        if !GithubVerifier::finish(macs, signature.as_bytes()) {
            return Err(Rejection::BadSignature);
        }
        let body = body.into_bytes()?;
        let kind = header(&parts.headers, "x-github-event")?.to_string();
        let delivery_id = header(&parts.headers, "x-github-delivery")?.to_string();
        let event = github_payload::parse(&kind, &body)?;
        Ok(GithubDelivery {
            delivery_id,
            kind,
            event,
        })
    }
}

/// `POST /webhooks/github`.
pub async fn github(State(state): State<AppState>, delivery: GithubDelivery) -> Response {
    store_delivery(
        &state,
        ForgeKind::Github,
        delivery.delivery_id,
        delivery.kind,
        delivery.event,
    )
    .await
}

/// Stores a verified delivery and answers: 202 stored, 200 a redelivery or nothing to act on.
async fn store_delivery(
    state: &AppState,
    forge: ForgeKind,
    delivery_id: String,
    kind: String,
    event: Option<Event>,
) -> Response {
    let Some(event) = event else {
        return (
            StatusCode::OK,
            format!("ignored: the bot does not act on `{kind}`"),
        )
            .into_response();
    };
    let needs_work = (state.interest)(forge, &event);
    let event_json = serde_json::to_string(&event).expect("events serialize");
    let new = NewDelivery {
        forge,
        delivery_id,
        kind,
        event_json,
        received_at: OffsetDateTime::now_utc(),
        needs_work,
    };
    match state.writer.submit(new).await {
        Ok(Accepted::Stored) => StatusCode::ACCEPTED.into_response(),
        Ok(Accepted::Duplicate) => {
            (StatusCode::OK, "already received: not processed again").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "a delivery could not be stored");
            // 5xx: the forge records the failure and the delivery can be redelivered.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the delivery could not be stored; redeliver it later",
            )
                .into_response()
        }
    }
}

/// A verified GitLab delivery. Its id is `Idempotency-Key` (the same across GitLab's retries),
/// or, from GitLab versions before 17.4, `X-Gitlab-Event-UUID` with the event name and a
/// digest of the body.
pub struct GitlabDelivery {
    pub delivery_id: String,
    pub kind: String,
    pub event: Option<Event>,
}

impl FromRequest<AppState> for GitlabDelivery {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let verifier = state
            .gitlab
            .as_ref()
            .ok_or(Rejection::NotConfigured("GitLab"))?;
        let (parts, body) = req.into_parts();
        // The token is a header: checked before a byte of the body is read.
        let token = parts
            .headers
            .get("x-gitlab-token")
            .ok_or(Rejection::BadToken)?;
        if !verifier.verify(token.as_bytes()) {
            return Err(Rejection::BadToken);
        }
        let body = state
            .bodies
            .read(&parts, body, |_| {})
            .await?
            .into_bytes()?;
        let kind = header(&parts.headers, "x-gitlab-event")?.to_string();
        let delivery_id = match header(&parts.headers, "idempotency-key") {
            Ok(key) => key.to_string(),
            // Before 17.4 GitLab sends only the event UUID, which recursive webhooks share
            // between different events: a redelivery is the same UUID, event and body.
            Err(_) => {
                let uuid = header(&parts.headers, "x-gitlab-event-uuid")
                    .map_err(|_| Rejection::MissingHeader("idempotency-key"))?;
                let digest = sha2::Sha256::digest(&body);
                format!("{uuid}:{kind}:{}", hex::encode(&digest[..16]))
            }
        };
        let event = gitlab_payload::parse(&kind, &body)?;
        Ok(GitlabDelivery {
            delivery_id,
            kind,
            event,
        })
    }
}

/// `POST /webhooks/gitlab`.
pub async fn gitlab(State(state): State<AppState>, delivery: GitlabDelivery) -> Response {
    store_delivery(
        &state,
        ForgeKind::Gitlab,
        delivery.delivery_id,
        delivery.kind,
        delivery.event,
    )
    .await
}

/// A verified Argo CD notification (see `deploy/argocd/`): the Application it is about.
pub struct ArgoCdDelivery {
    pub delivery_id: String,
    pub notice: crate::events::DeploymentNotice,
}

/// The token of an `Authorization` header: `Bearer <token>`, or the password of
/// `Basic base64(user:password)` (Argo CD's webhook service offers both).
fn authorization_token(header: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, value) = text.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let pair = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        let colon = pair.iter().position(|b| *b == b':')?;
        return Some(pair[colon + 1..].to_vec());
    }
    None
}

impl FromRequest<AppState> for ArgoCdDelivery {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Rejection> {
        let verifier = state
            .argocd
            .as_ref()
            .ok_or(Rejection::NotConfigured("Argo CD"))?;
        let (parts, body) = req.into_parts();
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| authorization_token(h.as_bytes()))
            .ok_or(Rejection::BadAuthorization)?;
        if !verifier.verify(&token) {
            return Err(Rejection::BadAuthorization);
        }
        let body = state
            .bodies
            .read(&parts, body, |_| {})
            .await?
            .into_bytes()?;
        let notice: crate::events::DeploymentNotice = crate::forge::parse_payload("argocd", &body)?;
        if notice.application.is_empty() || notice.application.len() > 253 {
            return Err(Rejection::Payload(PayloadError {
                kind: "argocd".into(),
                path: "application".into(),
                message: "must name an Application (deploy/argocd/argocd-notifications-cm.yaml shows the body)".into(),
            }));
        }
        // Argo CD sends no delivery id; its retries repeat the body. A repeated notification
        // dropped as a redelivery costs nothing: reconcile reads the Application anyway.
        let digest = sha2::Sha256::digest(&body);
        Ok(ArgoCdDelivery {
            delivery_id: format!("argocd:{}", hex::encode(&digest[..16])),
            notice,
        })
    }
}

/// `POST /webhooks/argocd`.
pub async fn argocd(State(state): State<AppState>, delivery: ArgoCdDelivery) -> Response {
    let home = state.home;
    store_delivery(
        &state,
        home,
        delivery.delivery_id,
        "argocd".into(),
        Some(Event::Deployment(delivery.notice)),
    )
    .await
}
