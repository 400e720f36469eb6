-- Leases as HOT updates (issue 15, session 8): no index covers `lease_owner` or `lease_until`,
-- so claiming a delivery or renewing its lease rewrites the row on its own page without a new
-- entry in every index (a claim was a non-HOT update writing all six). Pages keep room for it.
-- A replica renews its claims by id (it knows them); releasing them walks the pending rows.
DROP INDEX IF EXISTS deliveries_leased;
ALTER TABLE deliveries SET (fillfactor = 80);
