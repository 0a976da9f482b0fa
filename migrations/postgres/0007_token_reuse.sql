-- A notifier may reuse a token until its `exp` (at most an hour), as APNs and
-- FCM let a sender do; single-use `jti` stays the default.
ALTER TABLE notifiers ADD COLUMN token_reuse BOOLEAN NOT NULL DEFAULT FALSE;
