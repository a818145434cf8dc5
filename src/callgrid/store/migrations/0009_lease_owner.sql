-- Which node leased a delivery (its lease owner: a name kept in its data directory). A node that starts
-- again takes back its own leases at once; another node's it leaves to run out (store/postgresql.py).
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
