-- Single-use identifiers (DPoP and notifier JWT `jti`) when no Redis is configured.
CREATE TABLE replay_cache (
    key         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX replay_cache_expiry ON replay_cache (expires_at);
