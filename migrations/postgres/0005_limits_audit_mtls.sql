-- A notifier may be bound to a client certificate (JSON: {"spki_sha256": ...} or {"ca": PEM}).
ALTER TABLE notifiers ADD COLUMN client_cert TEXT;

-- Operator's rate limits of an app (JSON); absent means the configured defaults.
CREATE TABLE app_limits (
    app_id      TEXT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    limits      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Who changed what, when and from where. No foreign keys: entries outlive what they name.
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
CREATE INDEX audit_log_at ON audit_log (at);
