//! Webhook deliveries: the durable queue between the webhook route and the worker.
//!
//! A delivery is answered only after it is committed (fsynced: the store runs with
//! `synchronous = FULL`), so a `kill -9` at any moment loses no acknowledged delivery. To make
//! that cheap at tens of thousands of deliveries a second, the [`DeliveryWriter`] commits them
//! in groups: while one transaction is being written, the next requests queue up and go into the
//! next one (group commit), so the cost of a commit is shared by everything that arrived during
//! the previous one. A delivery id seen before is recognized by the UNIQUE constraint, inside the
//! same statement, and reported as a duplicate.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::Row;
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{Store, StoreError, ts};
use crate::events::{Event, ForgeKind};

/// A verified, parsed delivery, ready to store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub forge: ForgeKind,
    pub delivery_id: String,
    pub kind: String,
    /// The [`Event`] as JSON (serialized by the request's own task, not the writer's).
    pub event_json: String,
    pub received_at: OffsetDateTime,
    /// False for events the bot has nothing to do with: stored as processed on arrival.
    pub needs_work: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stored,
    /// This delivery id was stored before: a redelivery, not processed again.
    Duplicate,
}

/// A stored delivery waiting for the worker.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub id: i64,
    pub forge: String,
    pub delivery_id: String,
    pub kind: String,
    pub event: Result<Event, String>,
    pub attempts: i64,
}

impl Store {
    /// Stores a group of deliveries in one statement (so one commit, one fsync); says for each
    /// whether it was new.
    ///
    /// The group travels as one JSON array parameter that SQLite unpacks with `json_each`: the
    /// statement text never changes, so it is prepared once, whatever the group's size, and the
    /// whole group is one round trip to SQLite's thread.
    pub async fn record_deliveries(
        &self,
        batch: &[NewDelivery],
    ) -> Result<Vec<Accepted>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = String::with_capacity(batch.iter().map(|d| d.event_json.len() + 160).sum());
        rows.push('[');
        for (i, d) in batch.iter().enumerate() {
            if i > 0 {
                rows.push(',');
            }
            // The event is already JSON: it is embedded as is, not escaped into a string.
            rows.push_str(&format!(
                "{{\"f\":\"{}\",\"p\":{},\"d\":{},\"k\":{},\"t\":\"{}\",\"e\":{}}}",
                d.forge.as_str(),
                d.needs_work,
                serde_json::Value::from(d.delivery_id.as_str()),
                serde_json::Value::from(d.kind.as_str()),
                ts(d.received_at),
                d.event_json
            ));
        }
        rows.push(']');
        let inserted = sqlx::query(
            "INSERT INTO deliveries (forge, delivery_id, kind, event, received_at, processed_at) \
             SELECT value ->> 'f', value ->> 'd', value ->> 'k', value -> 'e', value ->> 't', \
             CASE WHEN value ->> 'p' THEN NULL ELSE value ->> 't' END \
             FROM json_each(?) WHERE true \
             ON CONFLICT (forge, delivery_id) DO NOTHING RETURNING forge, delivery_id",
        )
        .bind(rows)
        .fetch_all(&self.pool)
        .await?;
        let mut stored: HashSet<(String, String)> =
            inserted.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        // The same id twice in one group: the first is stored, the second is the duplicate.
        Ok(batch
            .iter()
            .map(|d| {
                if stored.remove(&(d.forge.as_str().to_string(), d.delivery_id.clone())) {
                    Accepted::Stored
                } else {
                    Accepted::Duplicate
                }
            })
            .collect())
    }

    /// Deliveries not yet processed and not waiting for a retry, oldest first.
    pub async fn pending_deliveries(&self, limit: i64) -> Result<Vec<PendingDelivery>, StoreError> {
        self.pending_deliveries_after(0, limit, &[]).await
    }

    /// [`Store::pending_deliveries`] stored after the one with store id `after`, and every
    /// retry that is due (a worker that has seen the earlier ones asks only for what is new),
    /// leaving out the ids in `excluding` (those the worker is handling already).
    pub async fn pending_deliveries_after(
        &self,
        after: i64,
        limit: i64,
        excluding: &[i64],
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let excluding = serde_json::to_string(excluding).expect("ids serialize");
        let rows = sqlx::query(
            "SELECT id, forge, delivery_id, kind, event, attempts FROM deliveries \
             WHERE processed_at IS NULL AND (retry_at IS NULL OR retry_at <= ?) \
             AND (id > ? OR retry_at IS NOT NULL) \
             AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
        )
        .bind(ts(OffsetDateTime::now_utc()))
        .bind(after)
        .bind(excluding)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PendingDelivery {
                id: r.get(0),
                forge: r.get(1),
                delivery_id: r.get(2),
                kind: r.get(3),
                event: serde_json::from_str(r.get::<&str, _>(4)).map_err(|e| e.to_string()),
                attempts: r.get(5),
            })
            .collect())
    }

    /// Leaves a delivery unprocessed, to be tried again at `retry_at`, with the error recorded.
    pub async fn retry_delivery(
        &self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, retry_at = ? WHERE id = ?",
        )
        .bind(error)
        .bind(ts(retry_at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When the next delivery waiting for a retry is due.
    pub async fn next_retry_at(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        self.next_retry_after(OffsetDateTime::UNIX_EPOCH).await
    }

    /// The earliest retry due later than `after`.
    pub async fn next_retry_after(
        &self,
        after: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT MIN(retry_at) FROM deliveries WHERE processed_at IS NULL AND retry_at > ?",
        )
        .bind(ts(after))
        .fetch_one(&self.pool)
        .await?;
        Ok(at.and_then(|a| {
            OffsetDateTime::parse(&a, &time::format_description::well_known::Rfc3339).ok()
        }))
    }

    /// Marks a group of processed deliveries done in one transaction (one commit for the
    /// group, not one per delivery). A crash before this commit replays the group, which the
    /// handlers allow: they are idempotent.
    pub async fn finish_deliveries(
        &self,
        done: &[(i64, Option<String>)],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::IMMEDIATE).await?;
        let at = ts(now);
        // The ones that went well (nearly all) in one statement; the failures with their errors.
        let ok: Vec<i64> = done
            .iter()
            .filter(|(_, e)| e.is_none())
            .map(|(id, _)| *id)
            .collect();
        sqlx::query(
            "UPDATE deliveries SET processed_at = ?, attempts = attempts + 1 \
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(&at)
        .bind(serde_json::to_string(&ok).expect("ids serialize"))
        .execute(&mut *tx)
        .await?;
        for (id, error) in done.iter().filter(|(_, e)| e.is_some()) {
            sqlx::query(
                "UPDATE deliveries SET processed_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
            )
            .bind(&at)
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the store answers at all (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// How many deliveries are stored, and how many of them wait for the worker.
    pub async fn delivery_counts(&self) -> Result<(i64, i64), StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*), COALESCE(SUM(processed_at IS NULL), 0) FROM deliveries")
                .fetch_one(&self.pool)
                .await?;
        Ok((row.get(0), row.get(1)))
    }
}

type Reply = oneshot::Sender<Result<Accepted, Arc<StoreError>>>;

/// Why a delivery could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the delivery writer has stopped")]
    Stopped,
    #[error(transparent)]
    Store(Arc<StoreError>),
}

/// The group-commit writer: one task owns the inserts; requests wait for their group's commit.
#[derive(Clone)]
pub struct DeliveryWriter {
    tx: mpsc::Sender<(NewDelivery, Reply)>,
}

/// Most deliveries in one transaction.
const MAX_GROUP: usize = 2048;

impl DeliveryWriter {
    /// Starts the writer task. `stored` is notified after each commit that stored something new.
    pub fn spawn(store: Store, stored: Arc<Notify>) -> DeliveryWriter {
        let (tx, mut rx) = mpsc::channel::<(NewDelivery, Reply)>(MAX_GROUP * 4);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(MAX_GROUP);
            while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
                let (deliveries, replies): (Vec<NewDelivery>, Vec<Reply>) =
                    std::mem::take(&mut group).into_iter().unzip();
                let started = std::time::Instant::now();
                let result = store.record_deliveries(&deliveries).await;
                tracing::debug!(
                    group = deliveries.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "delivery group committed"
                );
                match result {
                    Ok(results) => {
                        if results
                            .iter()
                            .zip(&deliveries)
                            .any(|(r, d)| *r == Accepted::Stored && d.needs_work)
                        {
                            stored.notify_one();
                        }
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, count = deliveries.len(), "storing deliveries failed");
                        let e = Arc::new(e);
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        DeliveryWriter { tx }
    }

    /// Stores one delivery; returns once it is committed.
    pub async fn submit(&self, delivery: NewDelivery) -> Result<Accepted, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((delivery, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery {
            forge: ForgeKind::Github,
            delivery_id: id.to_string(),
            kind: "push".into(),
            event_json: "{\"type\":\"installation\",\"action\":\"created\",\"installation_id\":1,\"account\":\"o\"}".into(),
            received_at: OffsetDateTime::UNIX_EPOCH,
            needs_work: true,
        }
    }

    #[tokio::test]
    async fn redeliveries_are_recognized_across_and_within_groups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        let r = store
            .record_deliveries(&[delivery("a"), delivery("b"), delivery("a")])
            .await
            .unwrap();
        assert_eq!(r, [Accepted::Stored, Accepted::Stored, Accepted::Duplicate]);
        let mut gitlab = delivery("b");
        gitlab.forge = ForgeKind::Gitlab;
        let r = store
            .record_deliveries(&[delivery("b"), gitlab, delivery("c")])
            .await
            .unwrap();
        assert_eq!(r, [Accepted::Duplicate, Accepted::Stored, Accepted::Stored]);
        assert_eq!(store.delivery_counts().await.unwrap(), (4, 4));
        // An event the bot has nothing to do with is kept, already processed.
        let mut idle = delivery("z");
        idle.needs_work = false;
        assert_eq!(
            store.record_deliveries(&[idle]).await.unwrap(),
            [Accepted::Stored]
        );
        assert_eq!(store.delivery_counts().await.unwrap(), (5, 4));

        let pending = store.pending_deliveries(10).await.unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|p| p.delivery_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "b", "c"]
        );
        assert!(matches!(pending[0].event, Ok(Event::Installation(_))));
        store
            .finish_deliveries(
                &[(pending[0].id, Some("boom".into()))],
                OffsetDateTime::UNIX_EPOCH,
            )
            .await
            .unwrap();
        assert_eq!(store.delivery_counts().await.unwrap(), (5, 3));
    }

    /// The worker reads what is new after the last delivery it handed out, and the retries
    /// that are due, except those it is handling already.
    #[tokio::test]
    async fn new_deliveries_and_due_retries_except_those_being_handled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        let all: Vec<NewDelivery> = ["a", "b", "c", "d"].into_iter().map(delivery).collect();
        store.record_deliveries(&all).await.unwrap();
        let ids: Vec<i64> = store
            .pending_deliveries(10)
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        // `a` and `b` failed once and are due again; `b` is being handled.
        store.retry_delivery(ids[0], "x", past).await.unwrap();
        store.retry_delivery(ids[1], "x", past).await.unwrap();
        let read = |after: i64, excluding: Vec<i64>| {
            let store = store.clone();
            async move {
                store
                    .pending_deliveries_after(after, 10, &excluding)
                    .await
                    .unwrap()
                    .iter()
                    .map(|p| p.delivery_id.clone())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(read(ids[2], vec![ids[1]]).await, ["a", "d"]);
        assert_eq!(read(ids[2], vec![]).await, ["a", "b", "d"]);
        assert_eq!(read(0, vec![ids[0], ids[3]]).await, ["b", "c"]);
    }

    #[tokio::test]
    async fn the_writer_groups_concurrent_deliveries_and_answers_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        let notify = Arc::new(Notify::new());
        let writer = DeliveryWriter::spawn(store.clone(), notify.clone());
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.submit(delivery(&format!("d{}", i % 200))).await })
            })
            .collect();
        let mut stored = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() == Accepted::Stored {
                stored += 1;
            }
        }
        assert_eq!(
            stored, 200,
            "each id stored once, the rest answered as duplicates"
        );
        assert_eq!(store.delivery_counts().await.unwrap(), (200, 200));
        tokio::time::timeout(std::time::Duration::from_secs(1), notify.notified())
            .await
            .expect("the worker is told");
    }
}
