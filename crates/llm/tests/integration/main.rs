//! The usage tap's integration tests, one binary: every recorded fixture at every split
//! point, hostile and random input, and the terminal marker.

mod common;

mod adversarial;
mod fixtures;
mod terminal;
