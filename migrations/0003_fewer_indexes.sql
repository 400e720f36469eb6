-- Every delivery insert and state change pays for each index. These two are not worth it:
-- a call's chain is found through deliveries_call (a call has a handful of deliveries), and
-- listing one subscriber's deliveries walks the table newest first (subscribers are few).
DROP INDEX IF EXISTS deliveries_chain;
DROP INDEX IF EXISTS deliveries_subscriber;
