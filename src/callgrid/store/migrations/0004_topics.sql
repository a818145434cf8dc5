-- Event Grid topics as ARM resources: custom topics (Microsoft.EventGrid/topics) and system topics
-- (Microsoft.EventGrid/systemTopics). Keyed by the lower-cased ARM id; `name` is the lower-cased
-- topic name (custom topic names are unique per server, as Azure's are per region: they are DNS names).
CREATE TABLE eventgrid_topics (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX eventgrid_topics_name ON eventgrid_topics (kind, name);
