-- deliveries_state indexed every delivery by state: each delivered one moved its entry
-- (a delete and an insert in the same commit), and the index grew with the whole history.
-- Only unfinished deliveries are looked up by state (pending counts at start, listing the
-- pending or dead ones); a listing of delivered ones walks the table newest first.
DROP INDEX IF EXISTS deliveries_state;
CREATE INDEX deliveries_unfinished ON deliveries (state, id) WHERE state != 'delivered';
