//! Handler tests without a browser: a real store (in memory), control plane, policy engine
//! and console, driven with in-memory requests. Tenant isolation, roles, CSRF, sessions,
//! trusted headers, escaping of agent-controlled strings and the security headers.

mod harness;
mod pages;
mod security;
mod sessions;
