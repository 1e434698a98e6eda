-- Portcullis schema, version 5: operator console sessions.
-- A session id is a random 256-bit value held only by the operator's browser (an HttpOnly
-- cookie); the store keeps its SHA-256, so reading the database never yields a usable
-- session. Every gateway sharing the store knows every session. Sign-in through an
-- operator API key records the key's id (the key itself is never stored): revoking the
-- key ends its sessions. Sign-in through a trusted auth proxy has no key (key_id NULL) and
-- keeps the tenant and role it was mapped to. Sessions do not bump meta.revision.
CREATE TABLE console_sessions (
    id_sha256 TEXT NOT NULL PRIMARY KEY,
    key_id TEXT,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_key ON console_sessions (key_id);
