-- A notification is `expanding` while its fan-out runs and `dispatching` from
-- then on; none ever becomes `done`, so the index of unfinished notifications
-- held an entry for every notification, written with each one. Only
-- expanding notifications are ever looked for (the sweep takes the stalled
-- ones by `updated_at`): their own small index replaces it. Building it reads
-- the notifications once.
DROP INDEX notifications_unfinished;
CREATE INDEX notifications_expanding ON notifications (updated_at) WHERE state = 'expanding';

-- Retention takes the oldest audit entries by `seq` (they are appended in
-- time order), so the index on `at` only cost an entry per write.
DROP INDEX audit_log_at;
