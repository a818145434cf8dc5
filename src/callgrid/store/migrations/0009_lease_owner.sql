-- Which node leased a delivery: a 64-bit digest of its lease owner name, kept in its data directory
-- (store/postgresql.py). A node that starts again takes back its own leases at once; another node's it
-- leaves to run out.
ALTER TABLE deliveries ADD COLUMN lease_owner INTEGER;
