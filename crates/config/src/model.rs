//! The serde model with its defaults and validation.

use crate::{duration, ConfigError};
use ipnet::IpNet;
use portcullis_core::{is_valid_id, is_valid_scope, AgentLimits, AgentMode, RiskLevel};
pub use portcullis_limits::{LimitSettings, UtcOffset};
pub use portcullis_llm::ProviderEntry;
pub use portcullis_policy::{Binding, DefaultDecision, OnBlock};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The agent-facing proxy listener.
    pub proxy: ProxyConfig,
    /// The operator-facing admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Persistence.
    pub store: StoreConfig,
    /// Agent identity and tokens.
    pub identity: IdentityConfig,
    /// Rego policy.
    pub policy: PolicyConfig,
    /// LLM provider recognition.
    pub llm: LlmConfig,
    /// Sidecar mode: one agent per gateway, loopback clients need no credentials.
    pub sidecar: SidecarConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Agents declared in the config (GitOps), upserted at start.
    pub agents: Vec<AgentConfig>,
    /// TLS interception of CONNECT tunnels.
    pub tls: TlsConfig,
    /// Default per-agent rate limits and token budgets (`[agents.limits]` overrides them).
    pub limits: LimitSettings,
    /// Provider credentials the gateway injects into allowed requests.
    pub credentials: Vec<CredentialConfig>,
}

/// `[[credentials]]`: a provider credential held by the gateway and added to requests that
/// policy allowed, so agents never hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// `^[a-z][a-z0-9_]{1,63}$`; appears in policy input, audit and metrics.
    pub name: String,
    /// Host globs it is injected for (`api.openai.com`, `*.openai.azure.com`). These hosts are
    /// intercepted automatically.
    pub hosts: Vec<String>,
    /// Header to set.
    #[serde(default = "default_credential_header")]
    pub header: String,
    /// Header value; `{secret}` is replaced by the secret.
    #[serde(default = "default_credential_format")]
    pub format: String,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (surrounding whitespace ignored), re-read when it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Agents that may use it.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Groups whose agents may use it.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tenants whose agents may use it.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `replace` (drop what the agent sent in `header`) or `if_absent`.
    #[serde(default)]
    pub mode: CredentialMode,
}

/// How an injected credential meets one the agent sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialMode {
    /// Drop the agent's value of the header and set the real one.
    #[default]
    Replace,
    /// Set the header only when the agent sent none.
    IfAbsent,
}

fn default_credential_header() -> String {
    "authorization".to_owned()
}

fn default_credential_format() -> String {
    "Bearer {secret}".to_owned()
}

/// Headers a credential may not set: framing, routing, hop-by-hop and the gateway's own.
const FORBIDDEN_CREDENTIAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

impl CredentialConfig {
    /// Checks the name and the binding (hosts, header, format, who), not the secret source:
    /// also what the admin API accepts. Keys are named under `prefix` (`credentials[0]`), or
    /// bare when `prefix` is empty.
    pub fn validate_binding(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |f: &str| {
            if prefix.is_empty() {
                f.to_owned()
            } else {
                format!("{prefix}.{f}")
            }
        };
        if !is_valid_id(&self.name) {
            return Err(ConfigError::new(
                key("name"),
                "must match ^[a-z][a-z0-9_]{1,63}$",
            ));
        }
        if self.hosts.is_empty() {
            return Err(ConfigError::new(
                key("hosts"),
                "must list at least one host glob",
            ));
        }
        portcullis_tls::HostMatcher::new(&self.hosts)
            .map_err(|e| ConfigError::new(key("hosts"), e.to_string()))?;
        let header = self.header.as_str();
        let token = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !token {
            return Err(ConfigError::new(
                key("header"),
                "must be a lower-case header name (letters, digits, '-', '_')",
            ));
        }
        if FORBIDDEN_CREDENTIAL_HEADERS.contains(&header) || header.starts_with("x-portcullis-") {
            return Err(ConfigError::new(
                key("header"),
                format!("`{header}` cannot carry a credential"),
            ));
        }
        if self.format.matches("{secret}").count() != 1 {
            return Err(ConfigError::new(
                key("format"),
                "must contain {secret} exactly once",
            ));
        }
        if !self
            .format
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(ConfigError::new(key("format"), "must be printable ASCII"));
        }
        for (field, list) in [
            ("agents", &self.agents),
            ("groups", &self.groups),
            ("tenants", &self.tenants),
        ] {
            if let Some(bad) = list.iter().find(|v| !is_valid_id(v)) {
                return Err(ConfigError::new(key(field), format!("invalid id `{bad}`")));
            }
        }
        Ok(())
    }

    fn validate(
        &self,
        i: usize,
        passthrough: &portcullis_tls::HostMatcher,
    ) -> Result<(), ConfigError> {
        self.validate_binding(&format!("credentials[{i}]"))?;
        let key = |f: &str| format!("credentials[{i}].{f}");
        if let Some(h) = self
            .hosts
            .iter()
            .find(|h| passthrough.matches(h.trim_start_matches("*.")))
        {
            return Err(ConfigError::new(
                key("hosts"),
                format!("`{h}` is in tls.passthrough: a credential cannot be injected into a spliced tunnel"),
            ));
        }
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("env"),
                    "set either env or file, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    key("env"),
                    "a credential needs env or file",
                ))
            }
            (Some(e), None) if e.is_empty() => {
                return Err(ConfigError::new(key("env"), "must name a variable"))
            }
            _ => {}
        }
        Ok(())
    }
}

/// `[tls]`: the gateway CA and which CONNECT tunnels are intercepted.
///
/// Intercepted hosts are the union of the built-in LLM provider hosts
/// ([`portcullis_tls::DEFAULT_INTERCEPT_HOSTS`], unless `intercept_defaults = false`),
/// `intercept`, and the host of every `[[llm.providers]]` entry; `passthrough` wins over
/// all of them (and over `intercept_all`).
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

    /// Every intercepted host glob, each once, in order: the built-in provider hosts
    /// (when `intercept_defaults`), `intercept`, then the `providers`' hosts without their
    /// ports. `passthrough` is not applied here (see [`TlsConfig::intercept_rules`]).
    pub fn intercept_hosts(&self, providers: &[ProviderEntry]) -> Result<Vec<String>, ConfigError> {
        let defaults: &[&str] = if self.intercept_defaults {
            portcullis_tls::DEFAULT_INTERCEPT_HOSTS
        } else {
            &[]
        };
        let defaults = defaults.iter().map(|h| (*h).to_owned());
        let mut globs: Vec<String> = defaults.chain(self.intercept.iter().cloned()).collect();
        for (i, p) in providers.iter().enumerate() {
            let glob = p
                .host_glob()
                .map_err(|e| ConfigError::new(format!("llm.providers[{i}].host"), e.to_string()))?;
            globs.push(glob);
        }
        let mut seen = std::collections::HashSet::new();
        globs.retain(|g| seen.insert(g.trim_end_matches('.').to_ascii_lowercase()));
        Ok(globs)
    }

    /// The interception rules these settings and the `[[llm.providers]]` entries describe.
    pub fn intercept_rules(
        &self,
        providers: &[ProviderEntry],
    ) -> Result<portcullis_tls::InterceptRules, ConfigError> {
        // Compiled apart first so an error names the key that holds the bad glob.
        portcullis_tls::HostMatcher::new(&self.intercept)
            .map_err(|e| ConfigError::new("tls.intercept", e.to_string()))?;
        let passthrough = portcullis_tls::HostMatcher::new(&self.passthrough)
            .map_err(|e| ConfigError::new("tls.passthrough", e.to_string()))?;
        for (i, p) in providers.iter().enumerate() {
            if let Ok(glob) = p.host_glob() {
                portcullis_tls::HostMatcher::new([&glob]).map_err(|e| {
                    ConfigError::new(format!("llm.providers[{i}].host"), e.to_string())
                })?;
            }
        }
        let intercept = portcullis_tls::HostMatcher::new(self.intercept_hosts(providers)?)
            .map_err(|e| ConfigError::new("tls.intercept", e.to_string()))?;
        Ok(portcullis_tls::InterceptRules {
            intercept,
            intercept_all: self.intercept_all,
            passthrough,
        })
    }

    /// The hosts of `splice_unknown`.
    pub fn splice_unknown_hosts(&self) -> Result<portcullis_tls::HostMatcher, ConfigError> {
        portcullis_tls::HostMatcher::new(&self.splice_unknown)
            .map_err(|e| ConfigError::new("tls.splice_unknown", e.to_string()))
    }
}

/// Where audit records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    /// The store's audit table (queryable: `/v1/decisions`, `portcullis audit`).
    Store,
    /// An append-only JSON Lines file with size-based rotation.
    Jsonl,
    /// One JSON line per record on stdout.
    Stdout,
}

/// What happens when the audit queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOnFull {
    /// Wait up to `block_max_wait` for room, then drop the record (counted).
    #[default]
    Block,
    /// Refuse requests with 503 `audit_unavailable` while the queue is full.
    FailClosed,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sinks: any of `store`, `jsonl`, `stdout`.
    pub sinks: Vec<AuditSink>,
    /// The JSON Lines file.
    pub jsonl_path: PathBuf,
    /// Rotate the file before it grows past this many bytes (0: never).
    pub jsonl_max_bytes: u64,
    /// Rotated files kept.
    pub jsonl_keep: u32,
    /// Behaviour when the queue is full.
    pub on_full: AuditOnFull,
    /// Longest wait for queue room with `on_full = "block"`.
    #[serde(with = "duration")]
    pub block_max_wait: Duration,
    /// Queue capacity (records).
    pub queue: usize,
    /// Most records per write batch.
    pub batch_max: usize,
    /// Longest wait for a batch to fill.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sinks: vec![AuditSink::Store, AuditSink::Jsonl],
            jsonl_path: PathBuf::from("data/audit.jsonl"),
            jsonl_max_bytes: 100 * 1024 * 1024,
            jsonl_keep: 5,
            on_full: AuditOnFull::Block,
            block_max_wait: Duration::from_millis(100),
            queue: 65_536,
            batch_max: 1_000,
            flush_interval: Duration::from_millis(200),
        }
    }
}

/// `[sidecar]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Requests from 127.0.0.1/::1 without `Proxy-Authorization` are attributed to this
    /// agent. Every container sharing the pod's network namespace shares this identity.
    pub agent: Option<String>,
}

impl Config {
    /// The interception rules: `[tls]` plus every `[[llm.providers]]` host.
    pub fn intercept_rules(&self) -> Result<portcullis_tls::InterceptRules, ConfigError> {
        self.tls.intercept_rules(&self.llm.providers)
    }

    /// What makes a declared provider unreachable or unaudited, one sentence each, for the
    /// startup log: a host under `tls.passthrough` (its HTTPS tunnels are spliced, so its
    /// calls are neither classified nor metered) or a port outside `proxy.allowed_ports`.
    pub fn provider_warnings(&self) -> Vec<String> {
        let Ok(rules) = self.intercept_rules() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in &self.llm.providers {
            let Ok(glob) = p.host_glob() else { continue };
            // A wildcard entry is checked with a label no real host uses.
            let probe = match glob.strip_prefix('*') {
                Some(suffix) => format!("_{suffix}"),
                None => glob.clone(),
            };
            if rules.passthrough.matches(&probe) {
                out.push(format!(
                    "llm provider `{}` ({}) is in tls.passthrough: its HTTPS tunnels are spliced, \
                     so its calls are neither classified nor metered",
                    p.name, p.host
                ));
            }
            if let Some(port) = p
                .port()
                .filter(|port| !self.proxy.allowed_ports.contains(port))
            {
                out.push(format!(
                    "llm provider `{}` ({}) is unreachable through the gateway: add {port} to \
                     proxy.allowed_ports",
                    p.name, p.host
                ));
            }
        }
        out
    }
}

/// `[llm]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Extra OpenAI- or Anthropic-compatible hosts (`[[llm.providers]]`), on top of the
    /// built-in api.openai.com and api.anthropic.com. Each host is also intercepted (HTTPS).
    pub providers: Vec<ProviderEntry>,
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of `.rego` files, watched for changes. Unset: `config/policies` when it
    /// exists in the working directory, else the built-in example set.
    pub dir: Option<PathBuf>,
    /// Decision when no active policy applies: `deny` (default) or `allow`.
    pub default: DefaultDecision,
    /// Blocked response: `json` (403 JSON) or `stub` (a provider-shaped refusal for LLM APIs).
    pub on_block: OnBlock,
    /// Decision cache lifetime; `0` disables the cache.
    #[serde(with = "duration")]
    pub cache_ttl: Duration,
    /// Which agents each policy applies to, and its mode.
    pub bindings: Vec<Binding>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: None,
            default: DefaultDecision::Deny,
            on_block: OnBlock::Json,
            cache_ttl: Duration::from_secs(60),
            bindings: Vec::new(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the working directory) or `sqlite::memory:`.
    pub url: String,
    /// Key sealing the secrets of credentials managed through the admin API and CLI (base64
    /// of 32 bytes; generated on first use, mode 0600). The environment variable
    /// `PORTCULLIS_CREDENTIALS_KEY` (same format) takes precedence.
    pub credentials_key: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/portcullis.db".to_owned(),
            credentials_key: PathBuf::from("data/credentials.key"),
        }
    }
}

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `iss` of issued tokens; verified on every request.
    pub issuer: String,
    /// Default token lifetime for agents that do not set their own.
    #[serde(with = "duration")]
    pub token_ttl: Duration,
    /// Ed25519 signing key (PKCS#8 PEM); generated with mode 0600 on first run.
    pub signing_key: PathBuf,
    /// On first start with an empty store, create a `demo` agent and print its secret once.
    pub create_demo_agent: bool,
    /// Failed authentications (proxy and token endpoint) allowed back to back per client
    /// address and per claimed agent before further attempts get 429 `auth_throttled`
    /// without being verified; 0 turns throttling off.
    pub auth_failure_burst: u32,
    /// Attempts regained per minute after the burst (1-6000).
    pub auth_failure_per_minute: u32,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            issuer: "portcullis".to_owned(),
            token_ttl: Duration::from_secs(600),
            signing_key: PathBuf::from("data/signing.key"),
            create_demo_agent: true,
            auth_failure_burst: 20,
            auth_failure_per_minute: 10,
        }
    }
}

/// `[[agents]]`: an agent declared in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `^[a-z][a-z0-9_]{1,63}$`.
    pub id: String,
    /// Tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Groups for policy bindings.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Scopes tokens may carry.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Lower-case hex SHA-256 of the secret exactly as the client sends it.
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `active`, `shadow` or `disabled`.
    #[serde(default)]
    pub mode: AgentMode,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    #[serde(default)]
    pub risk_level: RiskLevel,
    /// Token lifetime; defaults to `identity.token_ttl`.
    #[serde(default, with = "opt_duration")]
    pub token_ttl: Option<Duration>,
    /// Limit overrides (`rpm`, `tpm`, `tokens_per_day`, `max_concurrent`) on top of `[limits]`.
    #[serde(default)]
    pub limits: AgentLimits,
}

fn default_tenant() -> String {
    "default".to_owned()
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    struct Wrap(#[serde(with = "crate::duration")] Duration);

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<Wrap>::deserialize(d).map(|o| o.map(|w| w.0))
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs()).serialize(s)
    }
}

/// `[proxy]`: the data plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address agents connect to.
    pub listen: SocketAddr,
    /// Destination ports agents may reach (CONNECT and absolute-form).
    pub allowed_ports: Vec<u16>,
    /// Private/reserved destinations that are nevertheless allowed (CIDRs).
    pub allow_private: Vec<IpNet>,
    /// Development only: serve without authenticating agents.
    pub allow_unauthenticated: bool,
    /// Largest request body buffered for classification and policy (LLM requests);
    /// larger bodies are streamed and classified without body fields.
    pub max_inspect_body: usize,
    /// Largest request head (request line + headers) accepted; larger → 431.
    pub max_header_bytes: usize,
    /// Most request headers accepted; more → 431.
    pub max_headers: usize,
    /// Time allowed to receive a complete request head (slowloris guard).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Upstream TCP connect timeout (→ 504).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Pooled idle upstream connections are closed after this.
    #[serde(with = "duration")]
    pub upstream_idle_timeout: Duration,
    /// Most idle pooled connections kept per upstream host.
    pub upstream_pool_max_idle: usize,
    /// Most concurrent client connections; beyond it new connections get 503.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, time allowed for in-flight requests and tunnels to finish.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// A request body that sends nothing for this long is cut: 408 `body_read_timeout`.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// Keep `%2F`, `%5C` and `\` in request paths as sent instead of refusing them (400
    /// `ambiguous_path`). They are never decoded; the rest of the path is still canonicalised.
    pub allow_encoded_slashes: bool,
    /// `Upgrade` protocols relayed to the upstream (case-insensitive tokens). Any other token is
    /// stripped from the request, and a 101 the client did not get through this list is refused.
    pub allowed_upgrades: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_ports: vec![80, 443],
            allow_private: Vec::new(),
            allow_unauthenticated: false,
            max_inspect_body: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(90),
            upstream_pool_max_idle: 256,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            allow_encoded_slashes: false,
            allowed_upgrades: vec!["websocket".to_owned()],
        }
    }
}

/// `[admin]`: the operator API, health and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `portcullis=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Upper bound accepted for `proxy.max_header_bytes`.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1024 * 1024;

impl Config {
    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.proxy;
        if p.allowed_ports.is_empty() {
            return Err(ConfigError::new(
                "proxy.allowed_ports",
                "must list at least one port",
            ));
        }
        if p.allowed_ports.contains(&0) {
            return Err(ConfigError::new(
                "proxy.allowed_ports",
                "port 0 is not a port",
            ));
        }
        if !(1024..=MAX_HEADER_BYTES_LIMIT).contains(&p.max_header_bytes) {
            return Err(ConfigError::new(
                "proxy.max_header_bytes",
                format!("must be between 1024 and {MAX_HEADER_BYTES_LIMIT}"),
            ));
        }
        if !(1..=1000).contains(&p.max_headers) {
            return Err(ConfigError::new(
                "proxy.max_headers",
                "must be between 1 and 1000",
            ));
        }
        if p.max_connections == 0 {
            return Err(ConfigError::new(
                "proxy.max_connections",
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("proxy.header_read_timeout", p.header_read_timeout),
            ("proxy.idle_timeout", p.idle_timeout),
            ("proxy.connect_timeout", p.connect_timeout),
            ("proxy.body_read_timeout", p.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        for token in &p.allowed_upgrades {
            let is_token = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
            if !is_token {
                return Err(ConfigError::new(
                    "proxy.allowed_upgrades",
                    format!("`{token}` is not an HTTP upgrade token"),
                ));
            }
        }
        self.tls.splice_unknown_hosts()?;
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres://")) {
            return Err(ConfigError::new(
                "store.url",
                "must be sqlite://PATH, sqlite::memory: or postgres://...",
            ));
        }
        if self.identity.issuer.is_empty() {
            return Err(ConfigError::new("identity.issuer", "must not be empty"));
        }
        let ttl = self.identity.token_ttl.as_secs();
        if !(60..=86_400).contains(&ttl) {
            return Err(ConfigError::new(
                "identity.token_ttl",
                "must be between 60s and 24h",
            ));
        }
        if self.identity.auth_failure_burst > 10_000 {
            return Err(ConfigError::new(
                "identity.auth_failure_burst",
                "must be between 0 (off) and 10000",
            ));
        }
        if !(1..=6_000).contains(&self.identity.auth_failure_per_minute) {
            return Err(ConfigError::new(
                "identity.auth_failure_per_minute",
                "must be between 1 and 6000",
            ));
        }
        if !(1..=10_000_000).contains(&self.audit.queue) {
            return Err(ConfigError::new(
                "audit.queue",
                "must be between 1 and 10000000",
            ));
        }
        if !(1..=100_000).contains(&self.audit.batch_max) {
            return Err(ConfigError::new(
                "audit.batch_max",
                "must be between 1 and 100000",
            ));
        }
        if let Some(a) = &self.sidecar.agent {
            if !is_valid_id(a) {
                return Err(ConfigError::new(
                    "sidecar.agent",
                    "must match ^[a-z][a-z0-9_]{1,63}$",
                ));
            }
            if self.proxy.allow_unauthenticated {
                return Err(ConfigError::new(
                    "sidecar.agent",
                    "cannot be combined with proxy.allow_unauthenticated",
                ));
            }
        }
        if let Err(e) = portcullis_llm::Classifier::new(&self.llm.providers) {
            return Err(ConfigError::new("llm.providers", e.to_string()));
        }
        for (i, b) in self.policy.bindings.iter().enumerate() {
            if b.policy.is_empty() {
                return Err(ConfigError::new(
                    format!("policy.bindings[{i}].policy"),
                    "must name a policy",
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let key = |f: &str| format!("agents[{i}].{f}");
            if !is_valid_id(&a.id) {
                return Err(ConfigError::new(
                    key("id"),
                    "must match ^[a-z][a-z0-9_]{1,63}$",
                ));
            }
            if !seen.insert(a.id.as_str()) {
                return Err(ConfigError::new(
                    key("id"),
                    format!("`{}` is declared twice", a.id),
                ));
            }
            if !is_valid_id(&a.tenant) {
                return Err(ConfigError::new(
                    key("tenant"),
                    "must match ^[a-z][a-z0-9_]{1,63}$",
                ));
            }
            if let Some(g) = a.groups.iter().find(|g| !is_valid_id(g)) {
                return Err(ConfigError::new(
                    key("groups"),
                    format!("invalid group `{g}`"),
                ));
            }
            if let Some(s) = a.allowed_scopes.iter().find(|s| !is_valid_scope(s)) {
                return Err(ConfigError::new(
                    key("allowed_scopes"),
                    format!("invalid scope `{s}`"),
                ));
            }
            match (&a.secret_sha256, &a.secret_env) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        key("secret_sha256"),
                        "set either secret_sha256 or secret_env, not both",
                    ))
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        key("secret_sha256"),
                        "an agent needs secret_sha256 or secret_env",
                    ))
                }
                (Some(h), None)
                    if h.len() != 64
                        || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
                {
                    return Err(ConfigError::new(
                        key("secret_sha256"),
                        "must be 64 lower-case hex characters",
                    ));
                }
                (None, Some(e)) if e.is_empty() => {
                    return Err(ConfigError::new(key("secret_env"), "must name a variable"))
                }
                _ => {}
            }
            if let Some(t) = a.token_ttl {
                if !(60..=86_400).contains(&t.as_secs()) {
                    return Err(ConfigError::new(
                        key("token_ttl"),
                        "must be between 60s and 24h",
                    ));
                }
            }
            if let Some((k, _)) = a.limits.entries().into_iter().find(|(_, v)| *v == Some(0)) {
                return Err(ConfigError::new(
                    key(&format!("limits.{k}")),
                    "must be at least 1 (remove the key for the [limits] default)",
                ));
            }
        }
        if let Err(portcullis_limits::SettingsError::Zero { key }) = self.limits.validate() {
            return Err(ConfigError::new(
                format!("limits.{key}"),
                "must be at least 1 (remove the key for unlimited)",
            ));
        }
        let tls_rules = self.intercept_rules()?;
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.credentials.iter().enumerate() {
            c.validate(i, &tls_rules.passthrough)?;
            if !names.insert(c.name.as_str()) {
                return Err(ConfigError::new(
                    format!("credentials[{i}].name"),
                    format!("`{}` is declared twice", c.name),
                ));
            }
        }
        if self.tls.ca_cert.is_some() != self.tls.ca_key.is_some() {
            return Err(ConfigError::new(
                if self.tls.ca_cert.is_some() {
                    "tls.ca_key"
                } else {
                    "tls.ca_cert"
                },
                "tls.ca_cert and tls.ca_key must be set together",
            ));
        }
        if p.listen == self.admin.listen && p.listen.port() != 0 {
            return Err(ConfigError::new(
                "admin.listen",
                "must differ from proxy.listen (agents must never reach the admin API)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "[[agents]]\nid = \"bot\"\nsecret_env = \"BOT_SECRET\"\n";

    #[test]
    fn limits_defaults_and_agent_overrides() {
        let c = Config::from_toml(&format!(
            "[limits]\nrpm = 60\ntpm = 1000\ndefault_max_tokens = 256\nday_reset_offset = \"+02:00\"\n\
             {AGENT}[agents.limits]\nrpm = 5\nmax_concurrent = 2\n"
        ))
        .unwrap();
        c.validate().unwrap();
        let s = c.limits.with_overrides(&c.agents[0].limits);
        assert_eq!(
            (s.rpm, s.tpm, s.tokens_per_day, s.max_concurrent),
            (Some(5), Some(1000), None, Some(2))
        );
        assert_eq!(s.default_max_tokens, 256);
        assert_eq!(s.day_reset_offset.to_string(), "+02:00");
        // Nothing configured: unlimited, UTC.
        let d = Config::default();
        assert!(d.limits.is_unlimited());
        assert_eq!(d.limits.day_reset_offset, UtcOffset::UTC);
    }

    fn credential_doc(fields: &[(&str, &str)]) -> String {
        let mut f: Vec<(&str, &str)> = vec![
            ("name", "\"openai_prod\""),
            ("hosts", "[\"api.example.com\"]"),
            ("file", "\"openai.key\""),
            ("agents", "[\"bot\"]"),
        ];
        for (k, v) in fields {
            f.retain(|(key, _)| key != k);
            if !v.is_empty() {
                f.push((k, v));
            }
        }
        let body: String = f.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        format!("[tls]\npassthrough = [\"pinned.example.com\"]\n[[credentials]]\n{body}")
    }

    #[test]
    fn credentials_default_to_bearer_and_replace() {
        let c = Config::from_toml(&credential_doc(&[])).unwrap();
        c.validate().unwrap();
        let cred = &c.credentials[0];
        assert_eq!(cred.header, "authorization");
        assert_eq!(cred.format, "Bearer {secret}");
        assert_eq!(cred.mode, CredentialMode::Replace);
        let c = Config::from_toml(&credential_doc(&[
            ("header", "\"x-api-key\""),
            ("format", "\"{secret}\""),
            ("mode", "\"if_absent\""),
        ]))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.credentials[0].mode, CredentialMode::IfAbsent);
    }

    #[test]
    fn bad_credentials_name_the_key() {
        for (fields, key) in [
            (vec![("name", "\"Open AI\"")], "credentials[0].name"),
            (vec![("hosts", "[]")], "credentials[0].hosts"),
            (vec![("hosts", "[\"api.*.com\"]")], "credentials[0].hosts"),
            (
                vec![("hosts", "[\"pinned.example.com\"]")],
                "credentials[0].hosts",
            ),
            (
                vec![("header", "\"Authorization\"")],
                "credentials[0].header",
            ),
            (vec![("header", "\"host\"")], "credentials[0].header"),
            (
                vec![("header", "\"x-portcullis-key\"")],
                "credentials[0].header",
            ),
            (vec![("header", "\"bad header\"")], "credentials[0].header"),
            (vec![("format", "\"Bearer\"")], "credentials[0].format"),
            (
                vec![("format", "\"{secret}{secret}\"")],
                "credentials[0].format",
            ),
            (
                vec![("format", "\"Bearer {secret}\\n\"")],
                "credentials[0].format",
            ),
            (vec![("env", "\"OPENAI_KEY\"")], "credentials[0].env"),
            (vec![("file", "")], "credentials[0].env"),
            (vec![("file", ""), ("env", "\"\"")], "credentials[0].env"),
            (vec![("agents", "[\"Bot\"]")], "credentials[0].agents"),
            (vec![("groups", "[\"a b\"]")], "credentials[0].groups"),
            (vec![("tenants", "[\"\"]")], "credentials[0].tenants"),
        ] {
            let doc = credential_doc(&fields);
            let c = Config::from_toml(&doc).unwrap_or_else(|e| panic!("{doc}: {e:?}"));
            assert_eq!(c.validate().unwrap_err().key, key, "{doc}");
        }
        let twice = format!(
            "{}[[credentials]]\nname = \"openai_prod\"\nhosts = [\"b.example.com\"]\nenv = \"K\"\n",
            credential_doc(&[])
        );
        let c = Config::from_toml(&twice).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "credentials[1].name");
        let e = Config::from_toml(&credential_doc(&[("secret", "\"sk-in-config\"")])).unwrap_err();
        assert!(e.key.starts_with("credentials"), "{e:?}");
        let e = Config::from_toml(&credential_doc(&[("mode", "\"append\"")])).unwrap_err();
        assert!(e.key.starts_with("credentials"), "{e:?}");
    }

    #[test]
    fn bad_limits_name_the_key() {
        let c = Config::from_toml("[limits]\ntpm = 0\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "limits.tpm");
        let c =
            Config::from_toml(&format!("{AGENT}[agents.limits]\nmax_concurrent = 0\n")).unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "agents[0].limits.max_concurrent"
        );
        for (doc, key) in [
            ("[limits]\nrpn = 1\n".to_owned(), "limits"),
            (
                format!("{AGENT}[agents.limits]\nburst = 1\n"),
                "agents[0].limits",
            ),
            ("[limits]\nrpm = -1\n".to_owned(), "limits.rpm"),
            ("[limits]\nrpm = \"fast\"\n".to_owned(), "limits.rpm"),
            (
                "[limits]\nday_reset_offset = \"Europe/Paris\"\n".to_owned(),
                "limits.day_reset_offset",
            ),
        ] {
            let e = Config::from_toml(&doc).unwrap_err();
            assert!(e.key.starts_with(key), "{doc}: {e:?}");
        }
    }

    #[test]
    fn tls_globs_are_validated_naming_the_key() {
        let c = Config::from_toml("[tls]\nintercept = [\"a.*.com\"]\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "tls.intercept");
        let c = Config::from_toml("[tls]\npassthrough = [\"\"]\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "tls.passthrough");
        let c = Config::from_toml("[tls]\nca_cert = \"x.pem\"\n").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "tls.ca_key");
        let c = Config::from_toml(
            "[tls]\nintercept = [\"localhost\", \"*.example.com\"]\npassthrough = [\"pinned.example.com\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let rules = c.intercept_rules().unwrap();
        assert!(rules.should_intercept("localhost"));
        assert!(rules.should_intercept("api.example.com"));
        assert!(!rules.should_intercept("pinned.example.com"));
        // `intercept` adds to the defaults.
        assert!(rules.should_intercept("api.openai.com"));
        let d = Config::default().intercept_rules().unwrap();
        assert!(d.should_intercept("api.openai.com"));
        assert!(!d.should_intercept("example.com"));
    }

    fn intercepted(doc: &str) -> (Vec<String>, portcullis_tls::InterceptRules) {
        let c = Config::from_toml(doc).unwrap();
        c.validate().unwrap_or_else(|e| panic!("{doc}: {e}"));
        (
            c.tls.intercept_hosts(&c.llm.providers).unwrap(),
            c.intercept_rules().unwrap(),
        )
    }

    const VLLM: &str = "[[llm.providers]]\nname = \"vllm\"\nhost = \"vllm.internal:8443\"\n";
    const AZURE: &str = "[[llm.providers]]\nname = \"azure\"\nhost = \"*.corp-openai.example\"\n";

    #[test]
    fn one_provider_entry_makes_its_host_intercepted() {
        let defaults = portcullis_tls::DEFAULT_INTERCEPT_HOSTS.len();
        // Unset `tls.intercept`: defaults plus the providers' hosts (port dropped).
        let (hosts, rules) = intercepted(&format!("{VLLM}{AZURE}"));
        assert_eq!(hosts.len(), defaults + 2, "{hosts:?}");
        assert_eq!(
            &hosts[defaults..],
            ["vllm.internal", "*.corp-openai.example"]
        );
        for host in [
            "vllm.internal",
            "VLLM.internal.:8443",
            "eastus.corp-openai.example",
            "api.openai.com",
            "api.anthropic.com",
            "x.openai.azure.com",
        ] {
            assert!(rules.should_intercept(host), "{host}");
        }
        for host in [
            "corp-openai.example",
            "internal",
            "example.com",
            "vllm.internal.evil",
        ] {
            assert!(!rules.should_intercept(host), "{host}");
        }

        // `tls.intercept` set to another host adds to defaults and providers.
        let (hosts, rules) =
            intercepted(&format!("[tls]\nintercept = [\"git.example.com\"]\n{VLLM}"));
        assert_eq!(&hosts[defaults..], ["git.example.com", "vllm.internal"]);
        for host in ["git.example.com", "vllm.internal", "api.openai.com"] {
            assert!(rules.should_intercept(host), "{host}");
        }

        // Defaults dropped explicitly: only what is listed, providers included.
        let (hosts, rules) = intercepted(&format!(
            "[tls]\nintercept_defaults = false\nintercept = [\"git.example.com\"]\n{VLLM}"
        ));
        assert_eq!(hosts, ["git.example.com", "vllm.internal"]);
        assert!(rules.should_intercept("vllm.internal"));
        assert!(!rules.should_intercept("api.openai.com"));
        assert!(!rules.should_intercept("api.anthropic.com"));
        let (hosts, _) = intercepted("[tls]\nintercept_defaults = false\n");
        assert!(hosts.is_empty());

        // Duplicates (any case, trailing dot) are listed once.
        let (hosts, _) = intercepted(
            "[tls]\nintercept = [\"API.OpenAI.com.\", \"vllm.internal\"]\n[[llm.providers]]\nname = \"corp\"\nhost = \"api.openai.com\"\n[[llm.providers]]\nname = \"vllm\"\nhost = \"VLLM.internal\"\n",
        );
        assert_eq!(&hosts[defaults..], ["vllm.internal"]);
    }

    #[test]
    fn passthrough_still_wins_over_provider_hosts_and_is_reported() {
        let doc = format!(
            "[tls]\npassthrough = [\"vllm.internal\", \"*.corp-openai.example\"]\n{VLLM}{AZURE}"
        );
        let (_, rules) = intercepted(&doc);
        assert!(!rules.should_intercept("vllm.internal"));
        assert!(!rules.should_intercept("eu.corp-openai.example"));
        let c = Config::from_toml(&doc).unwrap();
        let w = c.provider_warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].contains("`vllm`") && w[0].contains("tls.passthrough"),
            "{w:?}"
        );
        assert!(w[1].contains("add 8443 to proxy.allowed_ports"), "{w:?}");
        assert!(
            w[2].contains("`azure`") && w[2].contains("tls.passthrough"),
            "{w:?}"
        );
        // intercept_all does not override passthrough either.
        let c = Config::from_toml(&format!(
            "[tls]\nintercept_all = true\npassthrough = [\"vllm.internal\"]\n{VLLM}"
        ))
        .unwrap();
        assert!(!c
            .intercept_rules()
            .unwrap()
            .should_intercept("vllm.internal"));
        // Nothing to say when the port is allowed and nothing is spliced.
        let c = Config::from_toml(&format!(
            "[proxy]\nallowed_ports = [443, 8443]\n{VLLM}{AZURE}\n[[llm.providers]]\nname = \"six\"\nhost = \"[::1]:443\"\n"
        ))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.provider_warnings(), Vec::<String>::new());
        let c = Config::from_toml("[[llm.providers]]\nname = \"six\"\nhost = \"[fd00::1]:9000\"\n")
            .unwrap();
        assert_eq!(c.provider_warnings().len(), 1);
        assert!(c.provider_warnings()[0].contains("add 9000"));
    }

    #[test]
    fn provider_hosts_that_cannot_be_intercepted_are_refused_naming_the_entry() {
        // Valid for classification, not as a certificate name (numeric last label).
        let c = Config::from_toml(
            "[[llm.providers]]\nname = \"ok\"\nhost = \"a.example\"\n[[llm.providers]]\nname = \"odd\"\nhost = \"gpu.42\"\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "llm.providers[1].host", "{e:?}");
        let c = Config::from_toml("[tls]\nintercept_defaults = \"no\"\n");
        assert!(c.unwrap_err().key.starts_with("tls.intercept_defaults"));
    }

    #[test]
    fn empty_document_is_the_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.proxy.allowed_ports, vec![80, 443]);
        assert!(!c.proxy.allow_unauthenticated);
    }

    #[test]
    fn values_parse() {
        let c = Config::from_toml(
            r#"
            [proxy]
            listen = "0.0.0.0:3128"
            allowed_ports = [443, 8443]
            allow_private = ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
            idle_timeout = "2m"
            connect_timeout = 5
            [log]
            format = "json"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.proxy.allowed_ports, vec![443, 8443]);
        assert_eq!(c.proxy.allow_private.len(), 3);
        assert_eq!(c.proxy.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("[proxy]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(e.key, "proxy.listen_addr");
        assert!(e.reason.contains("listen_addr"), "{e}");
        let e = Config::from_toml("[nope]\n").unwrap_err();
        assert!(e.reason.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[proxy]\nallowed_ports = [\"x\"]", "proxy.allowed_ports"),
            (
                "[proxy]\nallow_private = [\"10.0.0.0/33\"]",
                "proxy.allow_private",
            ),
            (
                "[proxy]\nidle_timeout = \"10 parsecs\"",
                "proxy.idle_timeout",
            ),
            ("[proxy]\nlisten = \"nowhere\"", "proxy.listen"),
            ("[log]\nformat = \"xml\"", "log.format"),
        ];
        for (src, key) in cases {
            let e = Config::from_toml(src).unwrap_err();
            assert!(e.key.starts_with(key), "{src}: {e}");
        }
        let e = Config::from_toml("[proxy]\nlisten = ").unwrap_err();
        assert_eq!(e.key, "(document)");
    }

    #[test]
    fn agents() {
        let c = Config::from_toml(
            r#"
            [[agents]]
            id = "billing_bot"
            tenant = "acme"
            groups = ["finance"]
            allowed_scopes = ["stripe:customer:read"]
            secret_env = "BILLING_BOT_SECRET"
            mode = "shadow"
            risk_level = "HIGH"
            token_ttl = "5m"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let a = &c.agents[0];
        assert_eq!(a.mode, AgentMode::Shadow);
        assert_eq!(a.risk_level, RiskLevel::High);
        assert_eq!(a.token_ttl, Some(Duration::from_secs(300)));
        let bad = [
            ("id = \"Bad\"\nsecret_env = \"X\"", "agents[0].id"),
            ("id = \"ok_id\"", "agents[0].secret_sha256"),
            (
                "id = \"ok_id\"\nsecret_sha256 = \"ABC\"",
                "agents[0].secret_sha256",
            ),
            (
                "id = \"ok_id\"\nsecret_env = \"X\"\nallowed_scopes = [\"a b\"]",
                "agents[0].allowed_scopes",
            ),
            (
                "id = \"ok_id\"\nsecret_env = \"X\"\ntoken_ttl = 5",
                "agents[0].token_ttl",
            ),
        ];
        for (body, key) in bad {
            let e = Config::from_toml(&format!("[[agents]]\n{body}"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.key, key, "{body}");
        }
        let e =
            Config::from_toml("[[agents]]\nid = \"a1\"\nsecret_env = \"X\"\nfoo = 1").unwrap_err();
        assert_eq!(e.key, "agents[0].foo");
    }

    #[test]
    fn validation() {
        let cases = [
            ("[proxy]\nallowed_ports = []", "proxy.allowed_ports"),
            ("[proxy]\nallowed_ports = [0]", "proxy.allowed_ports"),
            ("[proxy]\nmax_header_bytes = 10", "proxy.max_header_bytes"),
            ("[proxy]\nmax_headers = 0", "proxy.max_headers"),
            ("[proxy]\nmax_connections = 0", "proxy.max_connections"),
            ("[proxy]\nidle_timeout = 0", "proxy.idle_timeout"),
            (
                "[proxy]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"",
                "admin.listen",
            ),
        ];
        for (src, key) in cases {
            let e = Config::from_toml(src).unwrap().validate().unwrap_err();
            assert_eq!(e.key, key, "{src}");
        }
    }
}
