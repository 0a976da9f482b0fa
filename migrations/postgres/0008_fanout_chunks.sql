-- A fan-out (an alias or whole-app send) is sent in chunks: one row per chunk
-- of registrations, not one per target. A target gets a delivery row only
-- when its first attempt does not end in `sent` (a failure, a retry, a hold
-- on the direct channel); successes are counted per chunk. A worker takes a
-- chunk for a lease (`leased_until`) while no other holds it; the sweep
-- re-drives a chunk still queued at `next_attempt_at` (its task lost, or its
-- worker gone: a claim moves `next_attempt_at` to the end of its lease).
CREATE TABLE fanout_chunks (
    notification_id  TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    -- The chunk's first registration id: its key within the notification.
    first_registration TEXT NOT NULL,
    -- The chunk's registration ids, a JSON array.
    registrations    TEXT NOT NULL,
    size             INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    leased_until     BIGINT NOT NULL DEFAULT 0,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (notification_id, first_registration)
);

CREATE INDEX fanout_chunks_queued ON fanout_chunks (next_attempt_at) WHERE state = 'queued';
