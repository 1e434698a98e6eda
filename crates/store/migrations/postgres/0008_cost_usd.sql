-- Portcullis schema, version 8: what each LLM call cost, in integer micro-dollars (10^-6 USD)
-- so that sums are exact. NULL when the usage was missing or no price was known (never a
-- silent zero). The record JSON carries it too, in dollars (`cost_usd`); the column lets the
-- store add it up.
ALTER TABLE audit_records ADD COLUMN cost_usd_micros BIGINT;
