//! The audit crate's integration tests, one binary: the pipeline end to end, decision
//! queries, the record's shape and the spool that keeps store records through an outage
//! (against PostgreSQL behind a relay the test cuts: `scripts/test.sh` provides it). Every pipeline test writes under its own temporary
//! directory.

mod pipeline;
mod query;
mod record;
mod spool;
