-- Portcullis schema, version 3 (PostgreSQL): run-time decisions on config-declared agents
-- (see the SQLite migration of the same number).
ALTER TABLE agents ADD COLUMN overridden_config_mode TEXT;
ALTER TABLE agents ADD COLUMN rotated_config_secret_sha256 TEXT;
