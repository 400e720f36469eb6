-- Retention (outbox.retention, outbox.dead_retention, outbox.dedup_window): finished events
-- are purged with their deliveries and attempts. An event purged while still inside the
-- dedup window leaves its key here, so a duplicate is still answered with its original
-- eventId, and a status after a purged HANGUP is still refused (SPEC §3). The keys go once
-- they leave the window; `calls` rows (the next sequence of a call) go with the last trace of
-- their call.
CREATE TABLE purged_keys (
    dedup_key  TEXT    PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    call_id    TEXT    NOT NULL,
    created_at INTEGER NOT NULL      -- the event's, epoch ms
) WITHOUT ROWID;
CREATE INDEX purged_keys_age ON purged_keys (created_at);
CREATE INDEX purged_keys_call ON purged_keys (call_id);
