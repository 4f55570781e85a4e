-- A delivery whose handling failed is tried again later (with backoff), up to a limit.
ALTER TABLE deliveries ADD COLUMN retry_at TEXT;
