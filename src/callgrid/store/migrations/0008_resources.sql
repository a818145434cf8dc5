-- Several Communication resources on one server (platform/resource.py). The default resource stays in
-- `meta` (resource.immutableId, resource.accessKey); the ones made with `callgrid resources create` are
-- rows here: `doc` holds their keys, subscription and resource group.
CREATE TABLE communication_resources (
    name TEXT PRIMARY KEY,
    immutable_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX communication_resources_immutable_id ON communication_resources (immutable_id);

-- A phone number belongs to one resource: its immutable id. Numbers owned before there were several
-- resources belong to the default one.
ALTER TABLE phone_numbers ADD COLUMN resource_id TEXT NOT NULL DEFAULT '';
UPDATE phone_numbers SET resource_id = COALESCE((SELECT value FROM meta WHERE key = 'resource.immutableId'), '');
CREATE INDEX phone_numbers_resource ON phone_numbers (resource_id, number);

-- A callback is signed with a JWT whose audience is the immutable id of the call's resource.
ALTER TABLE deliveries ADD COLUMN audience TEXT;
