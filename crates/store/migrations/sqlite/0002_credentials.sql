-- Portcullis schema, version 2: provider credentials managed through the admin API / CLI.
-- The secret is stored sealed (ChaCha20-Poly1305 under a key kept outside the database,
-- the name as associated data); the binding (hosts, header, format, who) is plain JSON.
CREATE TABLE credentials (
    name TEXT NOT NULL PRIMARY KEY,
    tenant TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX credentials_tenant ON credentials (tenant);
