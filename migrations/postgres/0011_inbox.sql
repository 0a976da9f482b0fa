-- The device inbox: content sealed to a registration's encryption key (a
-- compact JWE), itself encrypted at rest with the master key. One item per
-- notification and registration; written before its notification, and shown
-- only once that notification exists. The content goes when the device acks
-- it or its TTL ends; the row stays for the notifier's status until the
-- notification's retention.
CREATE TABLE inbox_items (
    registration_id  TEXT NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    notification_id  TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    size             BIGINT NOT NULL,
    content          BYTEA,
    fetched_at       BIGINT,
    acked_at         BIGINT,
    PRIMARY KEY (registration_id, notification_id)
);
CREATE INDEX inbox_items_notification ON inbox_items (notification_id);
CREATE INDEX inbox_items_created ON inbox_items (created_at);
CREATE INDEX inbox_items_expiring ON inbox_items (expires_at) WHERE content IS NOT NULL;
