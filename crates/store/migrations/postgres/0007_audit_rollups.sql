-- Portcullis schema, version 7, PostgreSQL: per-minute rollups of the audit table, so the
-- console's usage charts, top lists, refusals, shadow report and "tokens today" read a few
-- rows per minute instead of parsing every record's JSON (at a million records: seconds
-- to milliseconds). Written in the same transaction as the records they count, only for
-- records actually inserted (a retried batch adds nothing twice), and pruned with them.
-- Not partitioned: a minute's traffic is a handful of rows.
--
-- Absent values are '' (not NULL) so that every group has exactly one row: a unique key
-- treats NULLs as distinct. `minute` is the Unix ms of the minute's start.
CREATE TABLE audit_rollup (
    tenant TEXT NOT NULL,
    minute BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    verdict TEXT NOT NULL,
    policy TEXT NOT NULL,
    error TEXT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (tenant, minute, agent_id, provider, model, verdict, policy, error)
);
CREATE INDEX audit_rollup_minute ON audit_rollup (minute);

-- Would-be denials per shadow policy and minute: records refused or flagged
-- (`would_deny`, `deny`, `rate_limited`) that name the policy in `would_deny`.
CREATE TABLE audit_shadow_rollup (
    tenant TEXT NOT NULL,
    minute BIGINT NOT NULL,
    policy TEXT NOT NULL,
    requests BIGINT NOT NULL,
    PRIMARY KEY (tenant, minute, policy)
);
CREATE INDEX audit_shadow_rollup_minute ON audit_shadow_rollup (minute);

-- Sub-agents seen per minute, with the newest record's time.
CREATE TABLE audit_subagent_rollup (
    tenant TEXT NOT NULL,
    minute BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    subagent TEXT NOT NULL,
    requests BIGINT NOT NULL,
    last_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, minute, agent_id, subagent)
);
CREATE INDEX audit_subagent_rollup_minute ON audit_subagent_rollup (minute);

-- The records stored before this version (budget alerts are records, not requests). A token count that is not a whole number
-- (never written by the gateway) counts as none.
INSERT INTO audit_rollup
SELECT tenant, ts - (ts % 60000), agent_id, COALESCE(provider, ''), COALESCE(model, ''),
       verdict, COALESCE(policy, ''), COALESCE(record::json ->> 'error', ''),
       COUNT(*),
       COALESCE(SUM(CASE WHEN (record::json #>> '{usage,total_tokens}') ~ '^[0-9]{1,18}$'
                         THEN (record::json #>> '{usage,total_tokens}')::bigint END), 0)::bigint
FROM audit_records
WHERE kind <> 'alert'
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

INSERT INTO audit_shadow_rollup
SELECT tenant, ts - (ts % 60000), wd.value, COUNT(*)
FROM audit_records,
     LATERAL (SELECT audit_records.record::json -> 'would_deny' AS arr) AS l,
     json_array_elements_text(CASE WHEN json_typeof(l.arr) = 'array' THEN l.arr END) AS wd(value)
WHERE verdict IN ('would_deny', 'deny', 'rate_limited')
GROUP BY 1, 2, 3;

INSERT INTO audit_subagent_rollup
SELECT tenant, ts - (ts % 60000), agent_id, subagent, COUNT(*), MAX(ts)
FROM audit_records
WHERE subagent IS NOT NULL
GROUP BY 1, 2, 3, 4;
