-- The PostgreSQL outbox (issue 15): the same tables as the SQLite one (migrations/), shared
-- by every replica of one pusher. Times are epoch ms (BIGINT), as in SQLite.
-- A claim is a lease: `lease_owner` (a replica id) may attempt the delivery until
-- `lease_until`; after that any replica may claim it again.

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    event_id    TEXT   NOT NULL UNIQUE,   -- uuid v7, sent as webhook-id
    dedup_key   TEXT   NOT NULL UNIQUE,   -- callId|party (CDR) or callId|party|status
    call_id     TEXT   NOT NULL,
    party       TEXT   NOT NULL DEFAULT '',
    status      TEXT,                     -- status events only
    sequence    BIGINT,                   -- status events only: per-call position
    payload     TEXT   NOT NULL,          -- normalized JSON body
    created_at  BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_row       BIGINT  NOT NULL,
    subscriber      TEXT    NOT NULL,
    call_id         TEXT    NOT NULL,
    sequence        BIGINT  NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'pending',
    blocked         BOOLEAN NOT NULL DEFAULT FALSE, -- waits for an earlier status of its call
    lease_owner     TEXT,                           -- the replica attempting it
    lease_until     BIGINT,                         -- until when (epoch ms)
    attempts        BIGINT  NOT NULL DEFAULT 0,
    round_start     BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    delivered_at    BIGINT,
    last_attempt_at BIGINT,
    last_latency_ms BIGINT
);

-- What is due, per subscriber: the claim walks this (leases are checked on its rows).
CREATE INDEX deliveries_due ON deliveries (subscriber, next_attempt_at) WHERE state = 'pending' AND NOT blocked;
-- A call's unfinished statuses per subscriber, in order: the per-call chain.
CREATE INDEX deliveries_chain ON deliveries (call_id, subscriber, sequence) WHERE state = 'pending';
CREATE INDEX deliveries_call ON deliveries (call_id, id);
CREATE INDEX deliveries_event ON deliveries (event_row);
CREATE INDEX deliveries_unfinished ON deliveries (state, id) WHERE state <> 'delivered';
CREATE INDEX deliveries_leased ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE attempts (
    delivery_id BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT,
    error       TEXT,
    latency_ms  BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Next status sequence per call (status-pusher).
CREATE TABLE calls (
    call_id       TEXT PRIMARY KEY,
    next_sequence BIGINT NOT NULL
);

CREATE TABLE purged_keys (
    dedup_key  TEXT   PRIMARY KEY,
    event_id   TEXT   NOT NULL,
    call_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX purged_keys_age ON purged_keys (created_at);
CREATE INDEX purged_keys_call ON purged_keys (call_id);

CREATE TABLE rejects (
    id         BIGSERIAL PRIMARY KEY,
    source     TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    raw        TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX rejects_source ON rejects (source, id);

CREATE TABLE source_marks (
    source     TEXT   PRIMARY KEY,
    mark       TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
