//! The limiter's integration tests, one binary: requests and concurrency, token budgets,
//! scopes, budgets under concurrent tasks, and (in-memory only) eviction. Every test drives
//! its own limiter with its own manual clock. `requests`, `scopes`, `tokens` and `threads` are
//! backend-neutral: `portcullis-limits-redis` runs the same files against Redis.

mod common;

mod requests;
mod scopes;
mod sweep;
mod threads;
mod tokens;
mod usd;
