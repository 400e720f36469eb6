-- Subscribers the operator paused (issue 14), kept for every replica and every later start.
CREATE TABLE subscriber_pauses (
    subscriber TEXT   PRIMARY KEY,
    paused_at  BIGINT NOT NULL
);
