-- Portcullis schema, version 4: which policy set decided each audit record (the bundle's
-- manifest revision, or a hash of the policy directory's files). The full record JSON carries
-- it too; the column lets an operator filter and index by it.
ALTER TABLE audit_records ADD COLUMN policy_revision TEXT;
