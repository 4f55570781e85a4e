-- Webhook deliveries: stored before the webhook is answered, processed afterwards.
CREATE TABLE deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    forge         TEXT NOT NULL,
    -- X-GitHub-Delivery / Idempotency-Key: a redelivery carries the same id and is not stored twice.
    delivery_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    -- The forge-neutral event (crate::events::Event) as JSON: parsed once, at the door.
    event         TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    processed_at  TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    UNIQUE (forge, delivery_id)
);

CREATE INDEX deliveries_unprocessed ON deliveries (id) WHERE processed_at IS NULL;
