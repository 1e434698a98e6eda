//! The audit record is the one record type of the whole gateway ([`AuditRecord`], defined in
//! `portcullis-core` so the data plane can assemble it without depending on this crate);
//! this module only re-exports it.

pub use portcullis_core::{format_rfc3339_ms, AuditRecord, RequestKind, RECORD_FIELDS};
