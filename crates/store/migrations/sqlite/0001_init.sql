-- Portcullis schema, version 1.
-- Portable SQL shared by the SQLite and (later) PostgreSQL backends:
-- TEXT and BIGINT only, no AUTOINCREMENT, no backend-specific types.

-- Single-row change counter. Every agent, credential and API-key write bumps it
-- in the same transaction, so a gateway can poll it cheaply and reload only on change.
CREATE TABLE meta (
    id BIGINT NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO meta (id, revision) VALUES (1, 0);

-- Agents and sub-agents. Top-level agents have parent = '' so their ids are
-- globally unique; a sub-agent's id is unique under its parent.
CREATE TABLE agents (
    parent TEXT NOT NULL,
    id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    status TEXT NOT NULL,
    mode TEXT NOT NULL,
    risk_level TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    token_ttl_secs BIGINT NOT NULL,
    attributes_json TEXT NOT NULL,
    generation BIGINT NOT NULL,
    secret_sha256 TEXT,
    limits_json TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (parent, id)
);
CREATE INDEX agents_tenant ON agents (tenant);

-- Operator API keys for the admin API; only the SHA-256 of the key is stored.
CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

-- Audit records: filterable columns plus the full JSON record.
CREATE TABLE audit_records (
    id TEXT NOT NULL PRIMARY KEY,
    ts BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    subagent TEXT,
    verdict TEXT NOT NULL,
    policy TEXT,
    provider TEXT,
    model TEXT,
    kind TEXT NOT NULL,
    status BIGINT,
    record TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit_records (ts, id);
CREATE INDEX audit_agent_ts ON audit_records (agent_id, ts, id);
CREATE INDEX audit_verdict_ts ON audit_records (verdict, ts, id);
CREATE INDEX audit_tenant_ts ON audit_records (tenant, ts, id);
