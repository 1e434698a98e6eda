//! The audit crate's integration tests, one binary: the pipeline end to end, decision
//! queries and the record's shape. Every pipeline test writes under its own temporary
//! directory.

mod pipeline;
mod query;
mod record;
