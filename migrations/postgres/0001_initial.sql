-- Initial schema. Times are BIGINT milliseconds since the Unix epoch (UTC).

CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Provider credentials: metadata in clear, secret material sealed (AES-256-GCM).
CREATE TABLE credentials (
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    provider    TEXT NOT NULL CHECK (provider IN ('apns', 'fcm')),
    metadata    TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    expires_at  BIGINT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, provider)
);

-- Auth servers and their keys (static JWKS inline, or a JWKS URL).
CREATE TABLE notifiers (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    jwks        TEXT,
    jwks_url    TEXT,
    created_at  BIGINT NOT NULL,
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);
CREATE INDEX notifiers_app ON notifiers (app_id);

CREATE TABLE attestation (
    app_id      TEXT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    jwks        TEXT NOT NULL,
    required    BOOLEAN NOT NULL,
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
    updated_at      BIGINT NOT NULL
);
-- Fan-out walks (app, status) by id: keyset pagination, never OFFSET.
CREATE INDEX registrations_app_status ON registrations (app_id, status, id);
CREATE INDEX registrations_thumbprint ON registrations (key_thumbprint);
-- A provider token is held by at most one active registration per app.
CREATE UNIQUE INDEX registrations_active_token ON registrations (app_id, provider, token)
    WHERE status = 'active' AND token IS NOT NULL;

CREATE TABLE aliases (
    app_id           TEXT NOT NULL,
    alias            TEXT NOT NULL,
    registration_id  TEXT NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, alias, registration_id)
);
CREATE INDEX aliases_registration ON aliases (registration_id);

CREATE TABLE notifications (
    id               TEXT PRIMARY KEY,
    app_id           TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    notifier_id      TEXT NOT NULL,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    targets          TEXT NOT NULL,
    content          TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    state            TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX notifications_idempotency ON notifications (app_id, notifier_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_unfinished ON notifications (state, created_at) WHERE state <> 'done';

CREATE TABLE deliveries (
    notification_id  TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    registration_id  TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (notification_id, registration_id)
);
