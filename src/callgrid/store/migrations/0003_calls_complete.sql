-- Call Automation, complete: the repeatability cache and call recordings.
-- A retried request (same Repeatability-Request-ID) is answered from here instead of acting again.
-- status is NULL while the first request is still being processed.
CREATE TABLE repeatable_requests (
    request_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER,
    response TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX repeatable_requests_expiry ON repeatable_requests (expires_at);

CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    server_call_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX recordings_call ON recordings (server_call_id);
