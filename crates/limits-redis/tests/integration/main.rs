//! The Redis limiter against a real Redis: the in-memory limiter's table of cases (the same
//! files, run here on this backend), then what only a shared backend has: leases that expire
//! when their holder dies, replicas sharing one budget, and the fallbacks when Redis is down.

mod common;

#[path = "../../../limits/tests/integration/requests.rs"]
mod requests;
#[path = "../../../limits/tests/integration/scopes.rs"]
mod scopes;
#[path = "../../../limits/tests/integration/threads.rs"]
mod threads;
#[path = "../../../limits/tests/integration/tokens.rs"]
mod tokens;
#[path = "../../../limits/tests/integration/usd.rs"]
mod usd;

mod fallback;
mod shared;
