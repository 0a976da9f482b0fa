-- Last provider error of a credential (circuit opened), shown to operators.
ALTER TABLE credentials ADD COLUMN last_error TEXT;
ALTER TABLE credentials ADD COLUMN last_error_at BIGINT;
