//! The worker: acts on stored deliveries one at a time, in the order they arrived, and runs the
//! reconcile pass at start-up and on every tick.
//!
//! Timers and webhooks go through the same serial path ([`Bot`] holds one lock), so a tick never
//! races a delivery. A delivery whose handling fails (the forge answered 500, git could not
//! reach a remote) is tried again with backoff, `MAX_ATTEMPTS` times in all; releases already
//! in flight are also made good by the reconcile pass, which re-reads the forge.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::release::bot::{Bot, BotError};
use crate::store::Store;

/// Attempts at handling one delivery before it is given up (and logged).
pub const MAX_ATTEMPTS: i64 = 5;

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Between reconcile passes.
    pub reconcile_every: Duration,
    /// The first retry of a failed delivery; each further one waits four times longer.
    pub retry_base: Duration,
    /// The longest one delivery's handling may take. Past it the handling is stopped (as if
    /// the process had stopped there: every step is durable before the next) and tried again
    /// later, so one stuck release does not hold up the others.
    pub job_limit: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            reconcile_every: Duration::from_secs(300),
            retry_base: Duration::from_secs(5),
            job_limit: Duration::from_secs(300),
        }
    }
}

pub async fn run(bot: Arc<Bot>, store: Store, stored: Arc<Notify>, pacing: Pacing) {
    if let Err(e) = bot.reconcile().await {
        tracing::error!(error = %e, "reconcile at start-up failed");
    }
    let mut next_tick = tokio::time::Instant::now() + pacing.reconcile_every;
    loop {
        let pending = match store.pending_deliveries(100).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading stored deliveries failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if pending.is_empty() {
            // Sleep until a delivery arrives, a retry is due, or the next reconcile.
            let mut wake = next_tick;
            if let Ok(Some(at)) = store.next_retry_at().await {
                let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                let due = tokio::time::Instant::now()
                    + Duration::try_from(wait).unwrap_or_default()
                    + Duration::from_millis(5);
                wake = wake.min(due);
            }
            tokio::select! {
                _ = stored.notified() => {}
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_tick {
                        next_tick = tokio::time::Instant::now() + pacing.reconcile_every;
                        if let Err(e) = bot.reconcile().await {
                            tracing::error!(error = %e, "reconcile failed");
                        }
                    }
                }
            }
            continue;
        }
        let mut done = Vec::with_capacity(pending.len());
        for d in pending {
            let span = tracing::info_span!("delivery", id = %d.delivery_id, kind = %d.kind);
            let error = match &d.event {
                Ok(event) => {
                    match tokio::time::timeout(pacing.job_limit, bot.handle(event).instrument(span))
                        .await
                        .unwrap_or_else(|_| Err(BotError::TimedOut(pacing.job_limit)))
                    {
                        Ok(()) => None,
                        Err(e) if d.attempts + 1 < MAX_ATTEMPTS => {
                            let wait = pacing.retry_base * 4u32.pow(d.attempts as u32);
                            tracing::warn!(delivery = %d.delivery_id, error = %e, retry_in = ?wait, "handling a delivery failed; it will be tried again");
                            let at = OffsetDateTime::now_utc() + wait;
                            if let Err(e) = store.retry_delivery(d.id, &e.to_string(), at).await {
                                tracing::error!(error = %e, "scheduling a retry failed");
                            }
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(delivery = %d.delivery_id, error = %e, "handling a delivery failed for the last time");
                            Some(e.to_string())
                        }
                    }
                }
                Err(e) => Some(format!("stored event does not parse: {e}")),
            };
            done.push((d.id, error));
        }
        if let Err(e) = store
            .finish_deliveries(&done, OffsetDateTime::now_utc())
            .await
        {
            tracing::error!(error = %e, "recording processed deliveries failed");
        }
    }
}
