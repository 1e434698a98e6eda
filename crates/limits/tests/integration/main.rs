//! The limiter's integration tests, one binary: requests and concurrency, token budgets,
//! scopes and eviction, and budgets under threads. Every test drives its own limiter with
//! its own manual clock.

mod common;

mod requests;
mod scopes;
mod threads;
mod tokens;
