-- Stale statuses (issue 14, `status.supersede`): a status given up because a later status of
-- its call was accepted for the same subscriber is `superseded`, a state of its own (listed,
-- counted, redelivered and purged like dead). SQLite cannot alter a CHECK, so the table is
-- rebuilt: the same columns in the same order, the same indexes, only the CHECK differs.
CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY,
    event_row       INTEGER NOT NULL REFERENCES events(id),
    subscriber      TEXT    NOT NULL,
    call_id         TEXT    NOT NULL,
    sequence        INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead', 'superseded')),
    blocked         INTEGER NOT NULL DEFAULT 0,  -- waits for an earlier status of its call
    claimed         INTEGER NOT NULL DEFAULT 0,  -- an attempt is in flight; cleared at start
    attempts        INTEGER NOT NULL DEFAULT 0,  -- attempts made, all rounds
    round_start     INTEGER NOT NULL DEFAULT 0,  -- attempts made before the last redelivery
    next_attempt_at INTEGER NOT NULL,            -- epoch ms
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_attempt_at INTEGER,
    last_latency_ms INTEGER
);
INSERT INTO deliveries_new (id, event_row, subscriber, call_id, sequence, state, blocked, claimed, attempts,
                            round_start, next_attempt_at, last_status, last_error, created_at, updated_at,
                            delivered_at, last_attempt_at, last_latency_ms)
SELECT id, event_row, subscriber, call_id, sequence, state, blocked, claimed, attempts,
       round_start, next_attempt_at, last_status, last_error, created_at, updated_at,
       delivered_at, last_attempt_at, last_latency_ms
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (subscriber, next_attempt_at)
    WHERE state = 'pending' AND blocked = 0 AND claimed = 0;
CREATE INDEX deliveries_call ON deliveries (call_id, id);
CREATE INDEX deliveries_unfinished ON deliveries (state, id) WHERE state != 'delivered';
