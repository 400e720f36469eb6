-- Subscribers the operator paused (POST /v1/subscribers/{id}/pause): they stay paused across
-- restarts until resumed. Their deliveries wait; nothing about them changes.
CREATE TABLE subscriber_pauses (
    subscriber TEXT    PRIMARY KEY,
    paused_at  INTEGER NOT NULL      -- epoch ms
) WITHOUT ROWID;
