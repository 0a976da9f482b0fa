-- The PostgreSQL schema that migrations 0001-0013 (../postgres) end with,
-- written out whole. An empty database is made from this file in one
-- transaction and every migration recorded as applied
-- (push-service/src/store/postgres.rs): a first start skips the tables,
-- columns and indexes the migrations make and then replace (the copy of the
-- unpartitioned tables in migration 10, the indexes migration 12 drops).
-- A database that holds anything else is migrated step by step.
--
-- A new migration changes this file too. The test
-- `migrations::a_fresh_database_made_at_once_equals_one_migrated_step_by_step`
-- compares the two paths' schemas (pg_dump) and fails until they agree.

CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE credentials (
    app_id         TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    provider       TEXT NOT NULL CHECK (provider IN ('apns', 'fcm')),
    metadata       TEXT NOT NULL,
    sealed         BYTEA NOT NULL,
    expires_at     BIGINT,
    updated_at     BIGINT NOT NULL,
    last_error     TEXT,
    last_error_at  BIGINT,
    PRIMARY KEY (app_id, provider)
);

CREATE TABLE notifiers (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    jwks         TEXT,
    jwks_url     TEXT,
    created_at   BIGINT NOT NULL,
    client_cert  TEXT,
    token_reuse  BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);
CREATE INDEX notifiers_app ON notifiers (app_id);

CREATE TABLE attestation (
    app_id      TEXT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    jwks        TEXT NOT NULL,
    required    BOOLEAN NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE app_limits (
    app_id      TEXT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    limits      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE registrations (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    provider        TEXT NOT NULL CHECK (provider IN ('apns', 'fcm', 'direct')),
    token           TEXT,
    environment     TEXT,
    platform        TEXT NOT NULL,
    key_thumbprint  TEXT NOT NULL,
    encryption_jwk  TEXT,
    status          TEXT NOT NULL,
    invalid_reason  TEXT,
    invalidated_at  BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    direct_cursor   BIGINT NOT NULL DEFAULT 0,
    attested        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX registrations_app_status ON registrations (app_id, status, id);
CREATE INDEX registrations_thumbprint ON registrations (key_thumbprint);
CREATE UNIQUE INDEX registrations_active_token ON registrations (app_id, provider, token)
    WHERE status = 'active' AND token IS NOT NULL;
CREATE INDEX registrations_unattested ON registrations (app_id) WHERE status = 'active' AND NOT attested;

CREATE TABLE aliases (
    app_id           TEXT NOT NULL,
    alias            TEXT NOT NULL,
    registration_id  TEXT NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, alias, registration_id)
);
CREATE INDEX aliases_registration ON aliases (registration_id);

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

CREATE TABLE replay_cache (
    key         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX replay_cache_expiry ON replay_cache (expires_at);

CREATE TABLE direct_events (
    seq              BIGSERIAL PRIMARY KEY,
    registration_id  TEXT NOT NULL,
    notification_id  TEXT NOT NULL,
    payload          TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX direct_events_registration ON direct_events (registration_id, seq);
CREATE UNIQUE INDEX direct_events_once ON direct_events (registration_id, notification_id);
CREATE INDEX direct_events_expiry ON direct_events (expires_at);

CREATE TABLE audit_log (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    app_id      TEXT,
    target      TEXT,
    source      TEXT,
    details     TEXT
);
CREATE INDEX audit_log_app ON audit_log (app_id, seq);

CREATE TABLE notification_keys (
    app_id           TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    notifier_id      TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    notification_id  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (app_id, notifier_id, idempotency_key)
);
CREATE INDEX notification_keys_created ON notification_keys (created_at);

CREATE TABLE notifications (
    id               TEXT NOT NULL,
    app_id           TEXT NOT NULL,
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
    updated_at       BIGINT NOT NULL DEFAULT 0,
    -- No foreign key to apps since migration 13: app deletion deletes them.
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX notifications_created ON notifications (created_at);
CREATE INDEX notifications_expanding ON notifications (updated_at) WHERE state = 'expanding';

CREATE TABLE deliveries (
    notification_id  TEXT NOT NULL,
    registration_id  TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    updated_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (notification_id, registration_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX deliveries_queued ON deliveries (next_attempt_at) WHERE state = 'queued';

CREATE TABLE fanout_chunks (
    notification_id     TEXT NOT NULL,
    first_registration  TEXT NOT NULL,
    registrations       TEXT NOT NULL,
    size                INTEGER NOT NULL,
    state               TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    sent                INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    leased_until        BIGINT NOT NULL DEFAULT 0,
    updated_at          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (notification_id, first_registration, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX fanout_chunks_queued ON fanout_chunks (next_attempt_at) WHERE state = 'queued';

-- As migration 10 made them: the partition that took what a database held
-- before partitioning (empty here), ending at the start of tomorrow (UTC),
-- and the default partition. The days ahead are the sweep's.
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
