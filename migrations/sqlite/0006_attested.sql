-- Whether a registration came with a verified client attestation: the per-app
-- cap on registrations without one counts the others.
ALTER TABLE registrations ADD COLUMN attested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX registrations_unattested ON registrations (app_id) WHERE status = 'active' AND attested = 0;
