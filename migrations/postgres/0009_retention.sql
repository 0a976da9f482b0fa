-- no-transaction
-- Retention walks notifications from the oldest (`created_at`), in batches.
-- Built CONCURRENTLY so an upgrade does not block writes on a large table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS notifications_created ON notifications (created_at);
