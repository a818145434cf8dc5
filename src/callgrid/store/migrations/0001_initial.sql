-- callgrid schema, version 1. Documents are JSON text; the columns beside them are what we query on.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    tokens_revoked_at REAL
);

CREATE TABLE phone_numbers (
    number TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

CREATE TABLE endpoints (
    raw_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

CREATE TABLE calls (
    server_call_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX calls_updated ON calls (updated_at);

CREATE TABLE call_connections (
    call_connection_id TEXT PRIMARY KEY,
    server_call_id TEXT NOT NULL
);

CREATE TABLE timers (
    id TEXT PRIMARY KEY,
    due_at REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);

CREATE TABLE event_subscriptions (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events (id),
    url TEXT NOT NULL,
    subscription_id TEXT,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    expires_at REAL,
    status TEXT NOT NULL,
    last_status INTEGER,
    last_outcome TEXT,
    last_error TEXT,
    last_attempt_at REAL,
    lease_until REAL
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, created_at);
