-- Notifications, deliveries and fan-out chunks are partitioned by the
-- notification's creation time (`created_at`, ms), one partition a day, so
-- retention drops a day whole instead of deleting its rows. The sweep creates
-- the days ahead (`<table>_dYYYYMMDD`) and drops the days past retention.
-- Everything already stored is copied into one partition per table that ends
-- at the start of tomorrow (UTC), `<table>_before_YYYYMMDD`, dropped like a
-- day once its end is past retention; queued deliveries and fan-out chunks
-- are copied with the rest and go on where they were. A `_default`
-- partition takes any row whose day has no partition (the sweep was stopped
-- for a week): nothing is refused, and such rows are deleted in batches.
--
-- Deliveries and chunks do not reference notifications by a foreign key: a
-- partition that such a key references can only be detached after a check
-- that scans the referencing table. The store deletes them with their
-- notification instead (retention, app deletion).

-- Idempotency keys in a table of their own: a partitioned table cannot hold a
-- unique index that does not include its partition key.
CREATE TABLE notification_keys (
    app_id           TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    notifier_id      TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    notification_id  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (app_id, notifier_id, idempotency_key)
);
CREATE INDEX notification_keys_created ON notification_keys (created_at);
INSERT INTO notification_keys (app_id, notifier_id, idempotency_key, notification_id, created_at)
    SELECT app_id, notifier_id, idempotency_key, id, created_at FROM notifications
    WHERE idempotency_key IS NOT NULL;

ALTER TABLE fanout_chunks RENAME TO fanout_chunks_unpartitioned;
ALTER TABLE deliveries RENAME TO deliveries_unpartitioned;
ALTER TABLE notifications RENAME TO notifications_unpartitioned;

CREATE TABLE notifications (
    id               TEXT NOT NULL,
    app_id           TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    notifier_id      TEXT NOT NULL,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    targets          TEXT NOT NULL,
    content          TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    state            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    response         TEXT,
    expand_cursor    TEXT,
    updated_at       BIGINT NOT NULL DEFAULT 0
) PARTITION BY RANGE (created_at);

CREATE TABLE deliveries (
    notification_id  TEXT NOT NULL,
    registration_id  TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    updated_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
) PARTITION BY RANGE (created_at);

CREATE TABLE fanout_chunks (
    notification_id  TEXT NOT NULL,
    first_registration TEXT NOT NULL,
    registrations    TEXT NOT NULL,
    size             INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    leased_until     BIGINT NOT NULL DEFAULT 0,
    updated_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
) PARTITION BY RANGE (created_at);

DO $$
DECLARE
    tomorrow BIGINT := (floor(extract(epoch FROM now()) / 86400)::BIGINT + 1) * 86400000;
    suffix TEXT := to_char(to_timestamp(tomorrow / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD');
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['notifications', 'deliveries', 'fanout_chunks'] LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%s)',
                       t || '_before_' || suffix, t, tomorrow);
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
    END LOOP;
END $$;

INSERT INTO notifications
    SELECT id, app_id, notifier_id, idempotency_key, request_hash, targets, content, expires_at,
           state, created_at, response, expand_cursor, updated_at
    FROM notifications_unpartitioned;
INSERT INTO deliveries
    SELECT d.notification_id, d.registration_id, d.state, d.reason, d.attempts,
           d.next_attempt_at, d.updated_at, n.created_at
    FROM deliveries_unpartitioned d JOIN notifications_unpartitioned n ON n.id = d.notification_id;
INSERT INTO fanout_chunks
    SELECT c.notification_id, c.first_registration, c.registrations, c.size, c.state, c.attempts,
           c.sent, c.next_attempt_at, c.leased_until, c.updated_at, n.created_at
    FROM fanout_chunks_unpartitioned c JOIN notifications_unpartitioned n ON n.id = c.notification_id;

DROP TABLE fanout_chunks_unpartitioned;
DROP TABLE deliveries_unpartitioned;
DROP TABLE notifications_unpartitioned;

ALTER TABLE notifications ADD PRIMARY KEY (id, created_at);
CREATE INDEX notifications_unfinished ON notifications (state, created_at) WHERE state <> 'done';
CREATE INDEX notifications_created ON notifications (created_at);
ALTER TABLE deliveries ADD PRIMARY KEY (notification_id, registration_id, created_at);
CREATE INDEX deliveries_queued ON deliveries (next_attempt_at) WHERE state = 'queued';
ALTER TABLE fanout_chunks ADD PRIMARY KEY (notification_id, first_registration, created_at);
CREATE INDEX fanout_chunks_queued ON fanout_chunks (next_attempt_at) WHERE state = 'queued';
