//! The server-side scripts, loaded once per server (`EVALSHA`, reloaded on `NOSCRIPT`).

use redis::Script;
use std::sync::LazyLock;

/// Check and charge a request against every scope (`lua/acquire.lua`).
pub(crate) static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/acquire.lua")));
/// Free a slot and settle tokens (`lua/settle.lua`).
pub(crate) static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/settle.lua")));
/// Renew leases (`lua/renew.lua`).
pub(crate) static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/renew.lua")));
/// Read one scope's usage (`lua/usage.lua`).
pub(crate) static USAGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/usage.lua")));
