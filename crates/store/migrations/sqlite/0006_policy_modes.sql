-- Portcullis schema, version 6: policy modes set at run time (`PUT /v1/policies/{name}/mode`),
-- kept in the store so that every gateway sharing it enforces them and a restart keeps
-- them. A row overrides the mode the policy declares; no row means the declared mode.
-- Writes bump the revision like every other decision-changing write.
CREATE TABLE policy_modes (
    name TEXT NOT NULL PRIMARY KEY,
    mode TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
