//! Fuzz helpers.
