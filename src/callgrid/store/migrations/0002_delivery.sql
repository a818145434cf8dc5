-- Delivery, version 2: why a delivery ended, every attempt, and dead letters (eventgrid.md 4.5, 4.6).
-- The final reason of a delivered/dropped/dead-lettered row (deadLetterReason or the drop reason).
ALTER TABLE deliveries ADD COLUMN reason TEXT;

-- One row per attempt; a batch of N events is N rows sharing started_at and duration_ms.
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    status INTEGER,
    outcome TEXT NOT NULL,
    error TEXT,
    duration_ms REAL NOT NULL,
    batch_size INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

-- A dead-lettered event: the JSON element Azure writes into a blob, and where it went.
CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    subscription_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    item TEXT NOT NULL,
    destination TEXT NOT NULL,
    created_at REAL NOT NULL,
    write_due_at REAL NOT NULL,
    write_status TEXT NOT NULL,
    location TEXT,
    write_error TEXT,
    replayed_at REAL,
    replay_delivery_id TEXT
);
CREATE INDEX dead_letters_write ON dead_letters (write_status, write_due_at);
CREATE INDEX dead_letters_created ON dead_letters (created_at);
CREATE INDEX dead_letters_subscription ON dead_letters (subscription_id, created_at);

-- Metrics count unmatched events (no delivery row) per topic.
CREATE INDEX deliveries_event ON deliveries (event_id);
