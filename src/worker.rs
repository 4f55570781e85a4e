//! The worker: acts on stored deliveries one at a time, in the order they arrived, and runs the
//! reconcile pass at start-up and on every tick.
//!
//! Timers and webhooks go through the same serial path ([`Bot`] holds one lock), so a tick never
//! races a delivery. A delivery whose handling fails is recorded with its error and not
//! retried as such: the next reconcile re-reads the forge, which is the retry.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::release::lifecycle::Bot;
use crate::store::Store;

pub async fn run(bot: Arc<Bot>, store: Store, stored: Arc<Notify>, tick: Duration) {
    if let Err(e) = bot.reconcile().await {
        tracing::error!(error = %e, "reconcile at start-up failed");
    }
    let mut next_tick = tokio::time::Instant::now() + tick;
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
            tokio::select! {
                _ = stored.notified() => {}
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + tick;
                    if let Err(e) = bot.reconcile().await {
                        tracing::error!(error = %e, "reconcile failed");
                    }
                }
            }
            continue;
        }
        let mut done = Vec::with_capacity(pending.len());
        for d in pending {
            let span = tracing::info_span!("delivery", id = %d.delivery_id, kind = %d.kind);
            let error = match &d.event {
                Ok(event) => match bot.handle(event).instrument(span).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(delivery = %d.delivery_id, error = %e, "handling a delivery failed; reconcile will retry");
                        Some(e.to_string())
                    }
                },
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
