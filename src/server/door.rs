//! The webhook door's limits: what a client may cost the process before it has proven anything.
//!
//! The webhook route faces the internet. A client that sends its headers or body one byte at a
//! time, opens a thousand idle connections, or announces bodies of 24 MiB without knowing the
//! secret must not take connections, file descriptors or memory from GitHub's deliveries. So:
//!
//! - each connection is served by hyper with a timer, so the header read timeout applies (axum's
//!   `serve` sets no timer, which silently disables it), and applies between requests on a
//!   kept-alive connection too: that is the idle timeout;
//! - a fixed number of connections are served at once; more wait in the kernel's backlog, so the
//!   process never runs out of descriptors;
//! - a body must arrive whole within its own timeout;
//! - one address may hold only so many connections, so a client cannot take every slot;
//! - small bodies are read into memory; larger ones stream into an anonymous temporary file while
//!   the signature is computed over them, so a body with a wrong signature costs no memory, and
//!   only a few large bodies are read at once (more are answered 503 with `Retry-After`).

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::webhook::Rejection;

/// GitHub's own limit for a webhook payload.
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The door's limits, each a `serve` flag and environment variable (the README's "Limits").
#[derive(Debug, Clone, clap::Args)]
pub struct DoorLimits {
    /// Largest webhook body accepted, in bytes (GitHub sends at most 25 MiB).
    #[arg(long, env = "RC_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's line and headers; also how long a kept-alive
    /// connection may sit idle before the next request.
    #[arg(long, env = "RC_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a whole body.
    #[arg(long, env = "RC_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "RC_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// Connections served at once from one address; more are closed as soon as they are
    /// accepted. 0: no limit (behind a proxy, where every client has the proxy's address).
    #[arg(long, env = "RC_MAX_CONNECTIONS_PER_IP", default_value_t = 128)]
    pub max_connections_per_ip: usize,
    /// Bodies up to this many bytes are read into memory; larger ones are written to a
    /// temporary file while their signature is checked.
    #[arg(long, env = "RC_MEMORY_BODY_BYTES", default_value_t = 64 * 1024)]
    pub memory_body_bytes: usize,
    /// Bodies larger than `--memory-body-bytes` read at once; more are answered 503.
    #[arg(long, env = "RC_MAX_LARGE_BODIES", default_value_t = 16)]
    pub max_large_bodies: usize,
}

impl Default for DoorLimits {
    fn default() -> Self {
        DoorLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 256,
            max_connections_per_ip: 128,
            memory_body_bytes: 64 * 1024,
            max_large_bodies: 16,
        }
    }
}

/// How long hyper keeps a request's header bytes, and its read buffer: enough for any forge's
/// headers (about 1 KB), and small enough that a connection's buffers are bounded (hyper's
/// default is about 400 KB).
const MAX_HEADER_BUFFER: usize = 16 * 1024;

/// Serves `app` on `listener` within `limits`, until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, limits: DoorLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(std::sync::Mutex::new(HashMap::<IpAddr, usize>::new()));
    let header_timeout = Duration::from_secs(limits.header_timeout_secs.max(1));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (other parts of the process hold some too): wait for some
                // to be freed rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // One address may hold only so many of the slots: a client opening hundreds of
        // connections that send nothing would otherwise keep every forge delivery waiting.
        let Some(address) = AddressSlot::take(&per_ip, peer.ip(), limits.max_connections_per_ip)
        else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BUFFER)
                .max_header_size(MAX_HEADER_BUFFER);
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(address);
            drop(permit);
        });
    }
}

/// One connection counted against its address; the count goes down when it is dropped.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    /// A slot for `ip`, unless it holds `limit` already (0: no limit).
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<AddressSlot> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(ip).or_insert(0);
        if limit > 0 && *held >= limit {
            return None;
        }
        *held += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = map.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Reads request bodies within the limits. Shared by the webhook routes.
pub struct BodyReader {
    limits: DoorLimits,
    large: Arc<Semaphore>,
}

impl BodyReader {
    pub fn new(limits: DoorLimits) -> BodyReader {
        BodyReader {
            large: Arc::new(Semaphore::new(limits.max_large_bodies)),
            limits,
        }
    }

    pub fn max_body_bytes(&self) -> usize {
        self.limits.max_body_bytes
    }

    /// The body, each chunk handed to `inspect` as it arrives (the signature is computed
    /// there), refused when it is (or announces itself) larger than the limit or does not
    /// arrive in time.
    pub async fn read(
        &self,
        parts: &axum::http::request::Parts,
        body: axum::body::Body,
        inspect: impl FnMut(&[u8]),
    ) -> Result<Body, Rejection> {
        let limit = self.limits.max_body_bytes;
        let announced = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if announced.is_some_and(|len| len > limit) {
            return Err(Rejection::TooLarge(limit));
        }
        let deadline = Duration::from_secs(self.limits.body_timeout_secs.max(1));
        tokio::time::timeout(deadline, self.read_all(body, announced, inspect))
            .await
            .map_err(|_| Rejection::SlowBody(self.limits.body_timeout_secs))?
    }

    async fn read_all(
        &self,
        mut body: axum::body::Body,
        announced: Option<usize>,
        mut inspect: impl FnMut(&[u8]),
    ) -> Result<Body, Rejection> {
        let limit = self.limits.max_body_bytes;
        let in_memory = self.limits.memory_body_bytes;
        let mut sink = Sink::Memory(Vec::with_capacity(announced.unwrap_or(0).min(in_memory)));
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Rejection::Unreadable)?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            len += chunk.len();
            if len > limit {
                return Err(Rejection::TooLarge(limit));
            }
            inspect(&chunk);
            match &mut sink {
                Sink::Memory(buf) if len > in_memory => {
                    let mut so_far = std::mem::take(buf);
                    so_far.extend_from_slice(&chunk);
                    sink = self.spool(so_far)?;
                }
                Sink::Memory(buf) => {
                    // Grown by doubling, but never past the in-memory limit.
                    if buf.capacity() < len {
                        let want = (buf.capacity() * 2).clamp(len, in_memory);
                        buf.reserve_exact(want - buf.len());
                    }
                    buf.extend_from_slice(&chunk)
                }
                Sink::File { file, .. } => {
                    file.write_all(&chunk).map_err(|_| Rejection::Unreadable)?
                }
            }
        }
        Ok(Body { sink, len })
    }

    /// Moves a body to a temporary file, if a large-body slot is free.
    fn spool(&self, so_far: Vec<u8>) -> Result<Sink, Rejection> {
        let permit = self
            .large
            .clone()
            .try_acquire_owned()
            .map_err(|_| Rejection::Busy)?;
        let mut file = tempfile::tempfile().map_err(|e| {
            tracing::error!(error = %e, "no temporary file for a large webhook body");
            Rejection::Busy
        })?;
        file.write_all(&so_far).map_err(|_| Rejection::Unreadable)?;
        Ok(Sink::File {
            file,
            _permit: permit,
        })
    }
}

enum Sink {
    Memory(Vec<u8>),
    /// An anonymous file, gone when closed; the permit is a large-body slot.
    File {
        file: std::fs::File,
        _permit: OwnedSemaphorePermit,
    },
}

/// A body read within the limits, not yet looked at.
pub struct Body {
    sink: Sink,
    len: usize,
}

impl Body {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes: only called once the request is authenticated.
    pub fn into_bytes(self) -> Result<Bytes, Rejection> {
        match self.sink {
            Sink::Memory(buf) => Ok(Bytes::from(buf)),
            Sink::File { mut file, .. } => {
                let mut buf = Vec::with_capacity(self.len);
                file.rewind()
                    .and_then(|_| file.read_to_end(&mut buf))
                    .map_err(|_| Rejection::Unreadable)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}
