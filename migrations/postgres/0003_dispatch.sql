-- Dispatch: stored answers for idempotent retries, fan-out progress, the direct channel.
ALTER TABLE notifications ADD COLUMN response TEXT;
ALTER TABLE notifications ADD COLUMN expand_cursor TEXT;
ALTER TABLE notifications ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE registrations ADD COLUMN direct_cursor BIGINT NOT NULL DEFAULT 0;

-- The sweep finds queued deliveries whose queue entry is overdue.
CREATE INDEX deliveries_queued ON deliveries (next_attempt_at) WHERE state = 'queued';

-- Events held for direct-channel devices until their TTL; `seq` is the SSE event id.
CREATE TABLE direct_events (
    seq              BIGSERIAL PRIMARY KEY,
    registration_id  TEXT NOT NULL,
    notification_id  TEXT NOT NULL,
    payload          TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX direct_events_registration ON direct_events (registration_id, seq);
-- A redelivered task does not put the same notification twice on a device's channel.
CREATE UNIQUE INDEX direct_events_once ON direct_events (registration_id, notification_id);
CREATE INDEX direct_events_expiry ON direct_events (expires_at);
