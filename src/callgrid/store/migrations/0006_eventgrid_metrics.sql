-- Event Grid metrics as durable counters, added to in the transactions that publish events and
-- record delivery outcomes: a scrape reads these rows (one per topic, subscription, metric and label)
-- instead of every delivery ever made, and counts outlive the rows that retention purges.
-- `subscription_id` is '' for topic-level metrics; `label` is the metric's extra dimension
-- (error type, drop or dead-letter reason, histogram bucket) or ''.
CREATE TABLE eventgrid_metrics (
    topic TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    label TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (topic, subscription_id, metric, label)
) WITHOUT ROWID;

-- Counts so far, from the rows an older version kept (histograms start empty).
INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(topic), '', 'PublishSuccessCount', '', COUNT(*) FROM events
WHERE topic LIKE '/subscriptions/%' GROUP BY lower(topic);

INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(e.topic), '', 'UnmatchedEventCount', '', COUNT(*) FROM events e
WHERE e.topic LIKE '/subscriptions/%' AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
GROUP BY lower(e.topic);

INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(e.topic), d.subscription_id, 'MatchedEventCount', '', COUNT(*) FROM deliveries d
JOIN events e ON e.id = d.event_id WHERE d.kind = 'eventgrid' GROUP BY lower(e.topic), d.subscription_id;

INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(e.topic), d.subscription_id, 'DeliverySuccessCount', '', COUNT(*) FROM deliveries d
JOIN events e ON e.id = d.event_id WHERE d.kind = 'eventgrid' AND d.status = 'delivered'
GROUP BY lower(e.topic), d.subscription_id;

INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(e.topic), d.subscription_id, 'DeadLetteredCount', COALESCE(d.reason, ''), COUNT(*) FROM deliveries d
JOIN events e ON e.id = d.event_id WHERE d.kind = 'eventgrid' AND d.status = 'deadLettered'
GROUP BY lower(e.topic), d.subscription_id, COALESCE(d.reason, '');

INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(e.topic), d.subscription_id, 'DroppedEventCount', COALESCE(d.reason, ''), COUNT(*) FROM deliveries d
JOIN events e ON e.id = d.event_id WHERE d.kind = 'eventgrid' AND d.status = 'dropped'
GROUP BY lower(e.topic), d.subscription_id, COALESCE(d.reason, '');

INSERT INTO eventgrid_metrics (topic, subscription_id, metric, label, value)
SELECT lower(e.topic), d.subscription_id, 'DeliveryAttemptFailCount', a.outcome, COUNT(*) FROM delivery_attempts a
JOIN deliveries d ON d.id = a.delivery_id JOIN events e ON e.id = d.event_id
WHERE d.kind = 'eventgrid' AND (a.status IS NULL OR a.status < 200 OR a.status > 204)
GROUP BY lower(e.topic), d.subscription_id, a.outcome;

-- Retention purges an event once no delivery or dead letter refers to it.
CREATE INDEX dead_letters_event ON dead_letters (event_id);
