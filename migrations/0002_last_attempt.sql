-- A successful final attempt is kept on the delivery row instead of as an `attempts` row
-- (one row write less per delivered event); the attempt log shows it from here.
ALTER TABLE deliveries ADD COLUMN last_attempt_at INTEGER;
ALTER TABLE deliveries ADD COLUMN last_latency_ms INTEGER;
