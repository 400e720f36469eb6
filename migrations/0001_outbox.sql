-- The outbox of one pusher: accepted events, one delivery per (event, subscriber), and the
-- attempt log. Both pushers use this schema, each in its own SQLite file.

-- Accepted events, kept as the exact bytes every attempt sends.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,   -- uuid v7, sent as webhook-id
    dedup_key   TEXT    NOT NULL UNIQUE,   -- callId|party (CDR) or callId|party|status
    call_id     TEXT    NOT NULL,
    party       TEXT    NOT NULL DEFAULT '',
    status      TEXT,                      -- status events only
    sequence    INTEGER,                   -- status events only: per-call position
    payload     TEXT    NOT NULL,          -- normalized JSON body
    created_at  INTEGER NOT NULL           -- epoch ms
);

-- One row per (event, subscriber).
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    event_row       INTEGER NOT NULL REFERENCES events(id),
    subscriber      TEXT    NOT NULL,
    call_id         TEXT    NOT NULL,
    sequence        INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    blocked         INTEGER NOT NULL DEFAULT 0,  -- waits for an earlier status of its call
    claimed         INTEGER NOT NULL DEFAULT 0,  -- an attempt is in flight; cleared at start
    attempts        INTEGER NOT NULL DEFAULT 0,  -- attempts made, all rounds
    round_start     INTEGER NOT NULL DEFAULT 0,  -- attempts made before the last redelivery
    next_attempt_at INTEGER NOT NULL,            -- epoch ms
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);

-- What is due, per subscriber: the claim query walks this.
CREATE INDEX deliveries_due ON deliveries (subscriber, next_attempt_at)
    WHERE state = 'pending' AND blocked = 0 AND claimed = 0;
-- Unfinished statuses of one call for one subscriber, in order: the per-call chain.
CREATE INDEX deliveries_chain ON deliveries (subscriber, call_id, sequence)
    WHERE state = 'pending';
CREATE INDEX deliveries_state ON deliveries (state, id);
CREATE INDEX deliveries_subscriber ON deliveries (subscriber, id);
CREATE INDEX deliveries_call ON deliveries (call_id, id);

-- Every attempt, for the operations API.
CREATE TABLE attempts (
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,   -- epoch ms
    status      INTEGER,            -- HTTP status, when there was an answer
    error       TEXT,               -- transport error or non-2xx summary
    latency_ms  INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

-- Next status sequence per call (status-pusher).
CREATE TABLE calls (
    call_id       TEXT PRIMARY KEY,
    next_sequence INTEGER NOT NULL
) WITHOUT ROWID;
