//! `[tls]`: the gateway CA and which CONNECT tunnels are intercepted.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[tls]`: the gateway CA and which CONNECT tunnels are intercepted.
///
/// Intercepted hosts are the union of the built-in LLM provider hosts (unless
/// `intercept_defaults = false`), `intercept`, and the host of every `[[llm.providers]]`
/// entry; `passthrough` wins over all of them (and over `intercept_all`). The host globs are
/// compiled (and checked) by the TLS crate's matcher, not here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Gateway CA certificate (PEM). Unset (with `ca_key` unset): a dev CA is loaded from,
    /// or generated into, `data/ca/`.
    pub ca_cert: Option<PathBuf>,
    /// Gateway CA private key (PEM); set together with `ca_cert`.
    pub ca_key: Option<PathBuf>,
    /// Extra PEM files of CAs trusted for upstream certificates, on top of the public
    /// and the system roots.
    pub upstream_ca: Vec<PathBuf>,
    /// Host globs intercepted in addition to the defaults and the `[[llm.providers]]` hosts.
    pub intercept: Vec<String>,
    /// Intercept the built-in LLM provider hosts (`false`: only `intercept` and the
    /// `[[llm.providers]]` hosts).
    pub intercept_defaults: bool,
    /// Intercept every tunnel except `passthrough` hosts.
    pub intercept_all: bool,
    /// Host globs never intercepted (clients that pin certificates); wins over the rest.
    pub passthrough: Vec<String>,
    /// Host globs whose intercepted tunnels may carry a protocol that is neither TLS nor HTTP,
    /// spliced to the origin unexamined (shown in the banner). Empty by default: such tunnels
    /// are closed, and anything that could be HTTP goes to the HTTP parser.
    pub splice_unknown: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_cert: None,
            ca_key: None,
            upstream_ca: Vec::new(),
            intercept: Vec::new(),
            intercept_defaults: true,
            intercept_all: false,
            passthrough: Vec::new(),
            splice_unknown: Vec::new(),
        }
    }
}

impl TlsConfig {
    /// Default directory of the dev CA when `ca_cert`/`ca_key` are unset.
    pub const DEFAULT_CA_DIR: &'static str = "data/ca";
}
