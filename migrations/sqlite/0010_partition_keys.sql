-- Deliveries and fan-out chunks carry their notification's creation time
-- (`created_at`) in their primary key: the key PostgreSQL partitions all
-- three tables by. SQLite keeps the same columns and keys so both backends run
-- the same statements; its tables are rebuilt to change the keys.
CREATE TABLE deliveries_new (
    notification_id  TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    registration_id  TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    updated_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (notification_id, registration_id, created_at)
);
INSERT INTO deliveries_new
    SELECT d.notification_id, d.registration_id, d.state, d.reason, d.attempts,
           d.next_attempt_at, d.updated_at, n.created_at
    FROM deliveries d JOIN notifications n ON n.id = d.notification_id;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_queued ON deliveries (next_attempt_at) WHERE state = 'queued';

CREATE TABLE fanout_chunks_new (
    notification_id  TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    first_registration TEXT NOT NULL,
    registrations    TEXT NOT NULL,
    size             INTEGER NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    sent             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    leased_until     BIGINT NOT NULL DEFAULT 0,
    updated_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (notification_id, first_registration, created_at)
);
INSERT INTO fanout_chunks_new
    SELECT c.notification_id, c.first_registration, c.registrations, c.size, c.state,
           c.attempts, c.sent, c.next_attempt_at, c.leased_until, c.updated_at, n.created_at
    FROM fanout_chunks c JOIN notifications n ON n.id = c.notification_id;
DROP TABLE fanout_chunks;
ALTER TABLE fanout_chunks_new RENAME TO fanout_chunks;
CREATE INDEX fanout_chunks_queued ON fanout_chunks (next_attempt_at) WHERE state = 'queued';

-- Idempotency keys in a table of their own (PostgreSQL cannot hold a unique
-- index without the partition key on a partitioned table). Retention deletes
-- a key when it deletes notifications of its age.
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
DROP INDEX notifications_idempotency;
