-- Buying numbers from the catalogue (platform/number_catalogue.py): searches and reservations that hold
-- catalogue numbers for a while, the long-running operations the Phone Numbers API reports, and the
-- holds themselves, one row a number, so that two searches never offer the same number.
CREATE TABLE number_searches (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

CREATE TABLE number_reservations (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE number_operations (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);

-- `holder` is "search:<id>" or "reservation:<id>"; a hold past `expires_at` holds nothing.
CREATE TABLE number_holds (
    number TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX number_holds_holder ON number_holds (holder);
