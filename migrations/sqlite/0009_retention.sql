-- Retention walks notifications from the oldest (`created_at`), in batches.
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at);
