-- Portcullis schema, version 3: run-time decisions on config-declared agents.
-- When an operator changes a config agent's mode or rotates its secret through the CLI or
-- the admin API, the config's value at that moment is kept here, so the config upsert at
-- the next start keeps the operator's decision while the config still declares that value.
ALTER TABLE agents ADD COLUMN overridden_config_mode TEXT;
ALTER TABLE agents ADD COLUMN rotated_config_secret_sha256 TEXT;
