//! The config document mapped onto the settings types of the crates that use it, and the
//! checks that need those crates' logic (host globs, provider entries, limit settings,
//! interception rules). `portcullis-config` depends on no domain crate; this is the one
//! place that knows both sides.

use portcullis_config::{BindingConfig, Config, ConfigError, LimitsBackend, ProviderFormat};
use portcullis_limits::{LimitSettings, SettingsError};
use portcullis_limits_redis::{OnRedisError, RedisSettings};
use portcullis_llm::{Classifier, Format, ProviderEntry};
use portcullis_policy::{Binding, DefaultDecision, EngineConfig, OnBlock};
use portcullis_tls::{HostMatcher, InterceptRules, DEFAULT_INTERCEPT_HOSTS};
use std::collections::HashSet;
use std::path::PathBuf;

/// Runs the checks of the config that need the domain crates, naming the key; run after
/// [`Config::validate`] (which [`Config::load`] runs) on every document the binary uses.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    splice_unknown(cfg)?;
    classifier(cfg)?;
    crate::pricing::PriceTable::from_config(cfg)?;
    if let Err(SettingsError::Zero { key }) = limit_settings(cfg).validate() {
        return Err(ConfigError::new(
            format!("limits.{key}"),
            "must be more than zero (remove the key for unlimited)",
        ));
    }
    tenant_limit_settings(cfg)?;
    console_settings(cfg)?;
    redis_settings(cfg, std::env::var(REDIS_URL_ENV).ok())?;
    let rules = intercept_rules(cfg)?;
    mcp_servers(cfg)?;
    for (i, c) in cfg.credentials.iter().enumerate() {
        let key = format!("credentials[{i}].hosts");
        HostMatcher::new(&c.hosts).map_err(|e| ConfigError::new(&key, e.to_string()))?;
        if let Some(h) = c
            .hosts
            .iter()
            .find(|h| rules.passthrough.matches(h.trim_start_matches("*.")))
        {
            return Err(ConfigError::new(
                key,
                format!("`{h}` is in tls.passthrough: a credential cannot be injected into a spliced tunnel"),
            ));
        }
    }
    Ok(())
}

/// `[limits]` as the limiter's default settings.
pub fn limit_settings(cfg: &Config) -> LimitSettings {
    let l = &cfg.limits;
    LimitSettings {
        rpm: l.rpm,
        tpm: l.tpm,
        tokens_per_day: l.tokens_per_day,
        max_concurrent: l.max_concurrent,
        usd_per_day: l.usd_per_day,
        usd_per_month: l.usd_per_month,
        default_max_tokens: l.default_max_tokens,
        chars_per_token: l.chars_per_token,
        day_reset_offset: l.day_reset_offset,
    }
}

/// `[limits.tenants."<tenant>"]` as the limiter's settings of each tenant scope: only the
/// tenant's own limits (the per-agent defaults of `[limits]` do not apply to a tenant), with
/// the reservation and day-reset settings of `[limits]`.
pub fn tenant_limit_settings(
    cfg: &Config,
) -> Result<std::collections::HashMap<String, LimitSettings>, ConfigError> {
    let base = limit_settings(cfg);
    let mut out = std::collections::HashMap::new();
    for (tenant, t) in &cfg.limits.tenants {
        let key = |k: &str| format!("limits.tenants.{tenant:?}.{k}");
        if !portcullis_core::is_valid_id(tenant) {
            return Err(ConfigError::new(
                key(""),
                "a tenant name must match ^[a-z][a-z0-9_]{1,63}$",
            ));
        }
        let s = LimitSettings {
            rpm: t.rpm,
            tpm: t.tpm,
            tokens_per_day: t.tokens_per_day,
            max_concurrent: t.max_concurrent,
            usd_per_day: t.usd_per_day,
            usd_per_month: t.usd_per_month,
            ..base.clone()
        };
        if let Err(SettingsError::Zero { key: k }) = s.validate() {
            return Err(ConfigError::new(
                key(k),
                "must be more than zero (remove the key for unlimited)",
            ));
        }
        out.insert(tenant.clone(), s);
    }
    Ok(out)
}

/// Environment variable that overrides `limits.redis_url` (keeps the password in a Secret).
pub const REDIS_URL_ENV: &str = "PORTCULLIS_REDIS_URL";

/// The shared limiter's settings when `limits.backend = "redis"` (`None` for `memory`): the URL
/// is `env_url` (the value of `PORTCULLIS_REDIS_URL`) when set, else `limits.redis_url`.
pub fn redis_settings(
    cfg: &Config,
    env_url: Option<String>,
) -> Result<Option<RedisSettings>, ConfigError> {
    let l = &cfg.limits;
    if l.backend == LimitsBackend::Memory {
        return Ok(None);
    }
    let url = env_url
        .filter(|u| !u.is_empty())
        .or_else(|| l.redis_url.clone())
        .ok_or_else(|| {
            ConfigError::new(
                "limits.redis_url",
                format!("backend = \"redis\" needs a URL (this key, or {REDIS_URL_ENV})"),
            )
        })?;
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ConfigError::new(
            "limits.redis_url",
            format!(
                "{} is not a redis:// or rediss:// URL",
                portcullis_limits_redis::redact_url(&url)
            ),
        ));
    }
    if l.redis_lease < std::time::Duration::from_secs(1) {
        return Err(ConfigError::new(
            "limits.redis_lease",
            "must be at least 1s",
        ));
    }
    if l.redis_timeout.is_zero() {
        return Err(ConfigError::new(
            "limits.redis_timeout",
            "must be more than 0",
        ));
    }
    let mut s = RedisSettings::new(url);
    s.prefix = l.redis_prefix.clone();
    s.lease = l.redis_lease;
    s.timeout = l.redis_timeout;
    s.on_error = match l.on_redis_error {
        portcullis_config::OnRedisError::Local => OnRedisError::Local,
        portcullis_config::OnRedisError::Deny => OnRedisError::Deny,
        portcullis_config::OnRedisError::Allow => OnRedisError::Allow,
    };
    Ok(Some(s))
}

/// `[[llm.providers]]` as provider table entries (unchecked; [`classifier`] checks them).
pub fn providers(cfg: &Config) -> Vec<ProviderEntry> {
    cfg.llm
        .providers
        .iter()
        .map(|p| ProviderEntry {
            name: p.name.clone(),
            host: p.host.clone(),
            format: p.format.map(|f| match f {
                ProviderFormat::OpenAi => Format::OpenAi,
                ProviderFormat::Anthropic => Format::Anthropic,
            }),
        })
        .collect()
}

/// The provider classifier: the built-in providers plus `[[llm.providers]]`.
pub fn classifier(cfg: &Config) -> Result<Classifier, ConfigError> {
    Classifier::new(&providers(cfg)).map_err(|e| ConfigError::new("llm.providers", e.to_string()))
}

/// `[policy]` as the policy engine's settings, reading policies from `dir` (`None`: the
/// caller supplies the sources).
pub fn policy_settings(cfg: &Config, dir: Option<PathBuf>) -> EngineConfig {
    let p = &cfg.policy;
    EngineConfig {
        dir,
        default: match p.default {
            portcullis_config::DefaultDecision::Allow => DefaultDecision::Allow,
            portcullis_config::DefaultDecision::Deny => DefaultDecision::Deny,
        },
        on_block: on_block(p.on_block),
        cache_ttl: p.cache_ttl,
        bindings: p.bindings.iter().map(binding).collect(),
        ..EngineConfig::default()
    }
}

/// `policy.bundle_*` as the bundle poller's settings (`None` without `policy.bundle_url`).
pub fn bundle_settings(cfg: &Config) -> Option<crate::bundles::BundleSettings> {
    let p = &cfg.policy;
    p.bundle_url
        .as_ref()
        .map(|url| crate::bundles::BundleSettings {
            url: url.clone(),
            path: p.bundle_path.clone(),
            poll: p.bundle_poll,
            long_poll: p.bundle_long_poll,
            max_bytes: p.bundle_max_bytes,
            extra_ca: cfg.tls.upstream_ca.clone(),
        })
}

fn binding(b: &BindingConfig) -> Binding {
    Binding {
        policy: b.policy.clone(),
        agents: b.agents.clone(),
        groups: b.groups.clone(),
        tenants: b.tenants.clone(),
        mode: b.mode,
        on_block: b.on_block.map(on_block),
    }
}

fn on_block(o: portcullis_config::OnBlock) -> OnBlock {
    match o {
        portcullis_config::OnBlock::Json => OnBlock::Json,
        portcullis_config::OnBlock::Stub => OnBlock::Stub,
    }
}

/// Every intercepted host glob, each once, in order: the built-in provider hosts (when
/// `tls.intercept_defaults`), `tls.intercept`, then the `[[llm.providers]]` hosts without
/// their ports. `tls.passthrough` is not applied here (see [`intercept_rules`]).
pub fn intercept_hosts(cfg: &Config) -> Result<Vec<String>, ConfigError> {
    let t = &cfg.tls;
    let defaults: &[&str] = if t.intercept_defaults {
        DEFAULT_INTERCEPT_HOSTS
    } else {
        &[]
    };
    let defaults = defaults.iter().map(|h| (*h).to_owned());
    let mut globs: Vec<String> = defaults.chain(t.intercept.iter().cloned()).collect();
    for (i, p) in providers(cfg).iter().enumerate() {
        let glob = p
            .host_glob()
            .map_err(|e| ConfigError::new(format!("llm.providers[{i}].host"), e.to_string()))?;
        globs.push(glob);
    }
    let mut seen = HashSet::new();
    globs.retain(|g| seen.insert(g.trim_end_matches('.').to_ascii_lowercase()));
    Ok(globs)
}

/// The interception rules: `[tls]` plus every `[[llm.providers]]` host.
pub fn intercept_rules(cfg: &Config) -> Result<InterceptRules, ConfigError> {
    let t = &cfg.tls;
    // Compiled apart first so an error names the key that holds the bad glob.
    HostMatcher::new(&t.intercept).map_err(|e| ConfigError::new("tls.intercept", e.to_string()))?;
    let passthrough = HostMatcher::new(&t.passthrough)
        .map_err(|e| ConfigError::new("tls.passthrough", e.to_string()))?;
    for (i, p) in providers(cfg).iter().enumerate() {
        if let Ok(glob) = p.host_glob() {
            HostMatcher::new([&glob])
                .map_err(|e| ConfigError::new(format!("llm.providers[{i}].host"), e.to_string()))?;
        }
    }
    let intercept = HostMatcher::new(intercept_hosts(cfg)?)
        .map_err(|e| ConfigError::new("tls.intercept", e.to_string()))?;
    Ok(InterceptRules {
        intercept,
        intercept_all: t.intercept_all,
        passthrough,
    })
}

/// The hosts of `tls.splice_unknown`.
pub fn splice_unknown(cfg: &Config) -> Result<HostMatcher, ConfigError> {
    HostMatcher::new(&cfg.tls.splice_unknown)
        .map_err(|e| ConfigError::new("tls.splice_unknown", e.to_string()))
}

/// What makes a declared provider unreachable or unaudited, one sentence each, for the
/// startup log: a host under `tls.passthrough` (its HTTPS tunnels are spliced, so its
/// calls are neither classified nor metered) or a port outside `proxy.allowed_ports`.
pub fn provider_warnings(cfg: &Config) -> Vec<String> {
    let Ok(rules) = intercept_rules(cfg) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in providers(cfg) {
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
            .filter(|port| !cfg.proxy.allowed_ports.contains(port))
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

/// `[[mcp.servers]]` as the data plane's endpoints (host globs checked).
pub fn mcp_servers(cfg: &Config) -> Result<Vec<portcullis_proxy::mcp::McpServer>, ConfigError> {
    cfg.mcp
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let hosts = HostMatcher::new(&s.hosts)
                .map_err(|e| ConfigError::new(format!("mcp.servers[{i}].hosts"), e.to_string()))?;
            Ok(portcullis_proxy::mcp::McpServer {
                name: s.name.clone(),
                hosts,
                path: s.path.clone(),
            })
        })
        .collect()
}

/// `[mcp]` and `audit.mcp_arguments` as the data plane's MCP settings; `None` without servers.
pub fn mcp_settings(
    cfg: &Config,
) -> Result<Option<portcullis_proxy::mcp::McpSettings>, ConfigError> {
    let servers = mcp_servers(cfg)?;
    if servers.is_empty() {
        return Ok(None);
    }
    let m = &cfg.mcp;
    Ok(Some(portcullis_proxy::mcp::McpSettings {
        servers,
        on_block: match m.on_block {
            portcullis_config::McpOnBlock::Error => portcullis_mcp::OnBlock::Error,
            portcullis_config::McpOnBlock::ToolResult => portcullis_mcp::OnBlock::ToolResult,
        },
        filter_tools_list: m.filter_tools_list,
        limits: portcullis_mcp::Limits {
            max_body: m.max_body,
            max_depth: m.max_depth,
            max_batch: m.max_batch,
        },
        max_answer: m.max_answer,
        arguments: match cfg.audit.mcp_arguments {
            portcullis_config::McpArguments::None => portcullis_mcp::ArgumentsAudit::None,
            portcullis_config::McpArguments::Hash => portcullis_mcp::ArgumentsAudit::Hash,
            portcullis_config::McpArguments::Full => portcullis_mcp::ArgumentsAudit::Full,
        },
        calls_per_minute: m.calls_per_minute,
        max_tool_labels: m.max_tool_labels,
    }))
}

/// The MCP servers' host globs (intercepted), for the banner.
pub fn mcp_hosts(cfg: &Config) -> Vec<String> {
    cfg.mcp
        .servers
        .iter()
        .flat_map(|s| s.hosts.iter().cloned())
        .collect()
}

/// `[console]` as the console's settings (`None` when `console.enabled = false`).
pub fn console_settings(
    cfg: &Config,
) -> Result<Option<portcullis_console::ConsoleSettings>, ConfigError> {
    let c = &cfg.console;
    if !c.enabled {
        return Ok(None);
    }
    let t = &c.trusted_header;
    let trusted_header = if t.sources.is_empty() {
        None
    } else {
        let name = |key: &str, v: &str| {
            http::HeaderName::from_bytes(v.as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("console.trusted_header.{key}"),
                    "must be a header name",
                )
            })
        };
        let mut roles = Vec::with_capacity(t.roles.len());
        for (i, r) in t.roles.iter().enumerate() {
            let role = r.role.parse().map_err(|_| {
                ConfigError::new(
                    format!("console.trusted_header.roles[{i}].role"),
                    "must be admin or viewer",
                )
            })?;
            roles.push((r.group.clone(), r.tenant.clone(), role));
        }
        Some(portcullis_console::TrustedHeaders {
            sources: t.sources.clone(),
            user: name("user_header", &t.user_header)?,
            email: name("email_header", &t.email_header)?,
            groups: name("groups_header", &t.groups_header)?,
            roles,
        })
    };
    Ok(Some(portcullis_console::ConsoleSettings {
        session_ttl: c.session_ttl,
        idle_timeout: c.idle_timeout,
        secure_cookie: c.secure_cookie,
        live_interval_secs: c.live_interval_secs,
        trusted_header,
    }))
}

/// `[alerts]` as the alert engine's settings, the webhooks' secrets read (`secret_env` from
/// `env`, `secret_file` from disk, surrounding whitespace dropped): `None` when no webhook is
/// configured (alerts off). A missing or empty secret is an error naming the key; the secret
/// itself never appears in an error. `shared` is where replicas dedupe (the limits' Redis).
pub fn alert_settings(
    cfg: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    shared: Option<&RedisSettings>,
) -> Result<Option<portcullis_alerts::AlertSettings>, ConfigError> {
    use portcullis_alerts::{Format, SharedDedupe, Webhook};
    let a = &cfg.alerts;
    if a.webhooks.is_empty() {
        return Ok(None);
    }
    let mut webhooks = Vec::with_capacity(a.webhooks.len());
    for (i, w) in a.webhooks.iter().enumerate() {
        let key = |f: &str| format!("alerts.webhooks[{i}].{f}");
        let url: http::Uri = w
            .url
            .parse()
            .map_err(|_| ConfigError::new(key("url"), "is not a valid URL"))?;
        if url.host().is_none_or(str::is_empty) {
            return Err(ConfigError::new(key("url"), "must name a host"));
        }
        let secret = match (&w.secret_env, &w.secret_file) {
            (Some(var), _) => Some(
                env(var)
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        ConfigError::new(
                            key("secret_env"),
                            format!("environment variable {var} is not set or empty"),
                        )
                    })?,
            ),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        key("secret_file"),
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                let text = text.trim().to_owned();
                if text.is_empty() {
                    return Err(ConfigError::new(
                        key("secret_file"),
                        format!("{} is empty", path.display()),
                    ));
                }
                Some(text)
            }
            (None, None) => None,
        };
        webhooks.push(Webhook {
            name: w.name.clone(),
            url,
            format: match w.format {
                portcullis_config::WebhookFormat::Json => Format::Json,
                portcullis_config::WebhookFormat::Slack => Format::Slack,
            },
            secret: secret.map(String::into_bytes),
            timeout: w.timeout,
            max_retries: w.max_retries,
            retry_backoff: w.retry_backoff,
        });
    }
    Ok(Some(portcullis_alerts::AlertSettings {
        thresholds: a.sorted_thresholds(),
        queue: a.queue,
        webhooks,
        max_tracked: portcullis_alerts::DEFAULT_MAX_TRACKED,
        shared: shared.map(|r| SharedDedupe {
            url: r.url.clone(),
            prefix: r.prefix.clone(),
            timeout: r.timeout,
        }),
    }))
}

/// `[telemetry]` mapped onto the exporter's settings; `None` when telemetry is off.
pub fn telemetry_settings(cfg: &Config) -> Option<portcullis_telemetry::TelemetrySettings> {
    let t = &cfg.telemetry;
    Some(portcullis_telemetry::TelemetrySettings {
        endpoint: t.otlp_endpoint.clone()?,
        service_name: t.service_name.clone(),
        resource_attributes: t.resource_attributes.clone(),
        queue_size: t.queue_size,
        batch_size: t.batch_size,
        export_interval: t.export_interval,
        export_timeout: t.export_timeout,
    })
}

/// What the data plane does with trace context (`[telemetry]`): nothing when telemetry is
/// off; otherwise a span per request, and `traceparent` upstream with `propagate`.
pub fn trace_mode(cfg: &Config) -> portcullis_proxy::trace::TraceMode {
    use portcullis_proxy::trace::TraceMode;
    match (cfg.telemetry.enabled(), cfg.telemetry.propagate) {
        (false, _) => TraceMode::Off,
        (true, propagate) => TraceMode::On { propagate },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_config::{DEFAULT_CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS};
    use portcullis_core::UtcOffset;
    use std::path::Path;

    /// What the binary runs on a document: the config's own checks, then the domain ones.
    fn check(c: &Config) -> Result<(), ConfigError> {
        c.validate()?;
        validate(c)
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
    fn limits_defaults_and_agent_overrides() {
        let c = Config::from_toml(&format!(
            "[limits]\nrpm = 60\ntpm = 1000\ndefault_max_tokens = 256\nday_reset_offset = \"+02:00\"\n\
             {AGENT}[agents.limits]\nrpm = 5\nmax_concurrent = 2\n"
        ))
        .unwrap();
        check(&c).unwrap();
        let s = limit_settings(&c).with_overrides(&c.agents[0].limits);
        assert_eq!(
            (s.rpm, s.tpm, s.tokens_per_day, s.max_concurrent),
            (Some(5), Some(1000), None, Some(2))
        );
        assert_eq!(s.default_max_tokens, 256);
        assert_eq!(s.day_reset_offset.to_string(), "+02:00");
        // Dollar budgets and tenant limits.
        let c = Config::from_toml(
            "[limits]\nusd_per_day = 2.5\nrpm = 9\n[limits.tenants.acme]\nusd_per_month = 100\n\
             tokens_per_day = 5000\n",
        )
        .unwrap();
        check(&c).unwrap();
        let s = limit_settings(&c);
        assert_eq!(s.usd_per_day.map(|u| u.micros()), Some(2_500_000));
        let t = tenant_limit_settings(&c).unwrap();
        let acme = &t["acme"];
        assert_eq!(acme.usd_per_month.map(|u| u.micros()), Some(100_000_000));
        assert_eq!(
            (acme.tokens_per_day, acme.rpm, acme.usd_per_day),
            (Some(5000), None, None),
            "agent defaults do not apply to a tenant"
        );
        for (bad, key) in [
            ("[limits.tenants.acme]\nusd_per_day = 0.0\n", "usd_per_day"),
            ("[limits.tenants.acme]\nrpm = 0\n", "rpm"),
            ("[limits.tenants.\"Bad Name\"]\nrpm = 1\n", "tenants"),
        ] {
            let c = Config::from_toml(bad).unwrap();
            let err = check(&c).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        assert!(Config::from_toml("[limits]\nusd_per_day = -2\n").is_err());
        // Nothing configured: unlimited, UTC.
        let d = Config::default();
        assert!(limit_settings(&d).is_unlimited());
        assert_eq!(limit_settings(&d).day_reset_offset, UtcOffset::UTC);
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
            assert_eq!(check(&c).unwrap_err().key, key, "{doc}");
        }
        let twice = format!(
            "{}[[credentials]]\nname = \"openai_prod\"\nhosts = [\"b.example.com\"]\nenv = \"K\"\n",
            credential_doc(&[])
        );
        let c = Config::from_toml(&twice).unwrap();
        assert_eq!(check(&c).unwrap_err().key, "credentials[1].name");
        let e = Config::from_toml(&credential_doc(&[("secret", "\"sk-in-config\"")])).unwrap_err();
        assert!(e.key.starts_with("credentials"), "{e:?}");
        let e = Config::from_toml(&credential_doc(&[("mode", "\"append\"")])).unwrap_err();
        assert!(e.key.starts_with("credentials"), "{e:?}");
    }

    #[test]
    fn redis_backend_settings() {
        assert!(redis_settings(&Config::default(), None).unwrap().is_none());
        let c = Config::from_toml("[limits]\nbackend = \"redis\"\n").unwrap();
        assert_eq!(
            redis_settings(&c, None).unwrap_err().key,
            "limits.redis_url",
            "redis without a URL"
        );
        let s = redis_settings(&c, Some("redis://:pw@r:6379".into()))
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "redis://:pw@r:6379", "the environment provides it");
        let c = Config::from_toml(
            "[limits]\nbackend = \"redis\"\nredis_url = \"redis://file:6379\"\n\
             redis_lease = \"10s\"\nredis_timeout = \"50ms\"\non_redis_error = \"deny\"\n",
        )
        .unwrap();
        let s = redis_settings(&c, None).unwrap().unwrap();
        assert_eq!(s.url, "redis://file:6379");
        assert_eq!(s.lease, std::time::Duration::from_secs(10));
        assert_eq!(s.timeout, std::time::Duration::from_millis(50));
        assert_eq!(s.on_error, OnRedisError::Deny);
        let s = redis_settings(&c, Some("redis://env:6379".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.url, "redis://env:6379",
            "the environment wins over the file"
        );
        let e = redis_settings(&c, Some("http://user:pw@x".into())).unwrap_err();
        assert_eq!(e.key, "limits.redis_url");
        assert!(!e.reason.contains("pw"), "{}", e.reason);
        let short = Config::from_toml(
            "[limits]\nbackend = \"redis\"\nredis_url = \"redis://r\"\nredis_lease = \"500ms\"\n",
        )
        .unwrap();
        assert_eq!(
            redis_settings(&short, None).unwrap_err().key,
            "limits.redis_lease"
        );
        assert_eq!(
            Config::from_toml("[limits]\non_redis_error = \"open\"\n")
                .unwrap_err()
                .key,
            "limits.on_redis_error"
        );
    }

    #[test]
    fn bad_limits_name_the_key() {
        let c = Config::from_toml("[limits]\ntpm = 0\n").unwrap();
        assert_eq!(check(&c).unwrap_err().key, "limits.tpm");
        let c =
            Config::from_toml(&format!("{AGENT}[agents.limits]\nmax_concurrent = 0\n")).unwrap();
        assert_eq!(
            check(&c).unwrap_err().key,
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
        assert_eq!(check(&c).unwrap_err().key, "tls.intercept");
        let c = Config::from_toml("[tls]\npassthrough = [\"\"]\n").unwrap();
        assert_eq!(check(&c).unwrap_err().key, "tls.passthrough");
        let c = Config::from_toml("[tls]\nca_cert = \"x.pem\"\n").unwrap();
        assert_eq!(check(&c).unwrap_err().key, "tls.ca_key");
        let c = Config::from_toml(
            "[tls]\nintercept = [\"localhost\", \"*.example.com\"]\npassthrough = [\"pinned.example.com\"]\n",
        )
        .unwrap();
        check(&c).unwrap();
        let rules = intercept_rules(&c).unwrap();
        assert!(rules.should_intercept("localhost"));
        assert!(rules.should_intercept("api.example.com"));
        assert!(!rules.should_intercept("pinned.example.com"));
        // `intercept` adds to the defaults.
        assert!(rules.should_intercept("api.openai.com"));
        let d = intercept_rules(&Config::default()).unwrap();
        assert!(d.should_intercept("api.openai.com"));
        assert!(!d.should_intercept("example.com"));
    }

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
        let w = provider_warnings(&c);
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
        assert!(!intercept_rules(&c)
            .unwrap()
            .should_intercept("vllm.internal"));
        // Nothing to say when the port is allowed and nothing is spliced.
        let c = Config::from_toml(&format!(
            "[proxy]\nallowed_ports = [443, 8443]\n{VLLM}{AZURE}\n[[llm.providers]]\nname = \"six\"\nhost = \"[::1]:443\"\n"
        ))
        .unwrap();
        check(&c).unwrap();
        assert_eq!(provider_warnings(&c), Vec::<String>::new());
        let c = Config::from_toml("[[llm.providers]]\nname = \"six\"\nhost = \"[fd00::1]:9000\"\n")
            .unwrap();
        assert_eq!(provider_warnings(&c).len(), 1);
        assert!(provider_warnings(&c)[0].contains("add 9000"));
    }

    #[test]
    fn provider_hosts_that_cannot_be_intercepted_are_refused_naming_the_entry() {
        // Valid for classification, not as a certificate name (numeric last label).
        let c = Config::from_toml(
            "[[llm.providers]]\nname = \"ok\"\nhost = \"a.example\"\n[[llm.providers]]\nname = \"odd\"\nhost = \"gpu.42\"\n",
        )
        .unwrap();
        let e = check(&c).unwrap_err();
        assert_eq!(e.key, "llm.providers[1].host", "{e:?}");
        let c = Config::from_toml("[tls]\nintercept_defaults = \"no\"\n");
        assert!(c.unwrap_err().key.starts_with("tls.intercept_defaults"));
    }

    fn intercepted(doc: &str) -> (Vec<String>, InterceptRules) {
        let c = Config::from_toml(doc).unwrap();
        check(&c).unwrap_or_else(|e| panic!("{doc}: {e}"));
        (intercept_hosts(&c).unwrap(), intercept_rules(&c).unwrap())
    }

    const VLLM: &str = "[[llm.providers]]\nname = \"vllm\"\nhost = \"vllm.internal:8443\"\n";
    const AZURE: &str = "[[llm.providers]]\nname = \"azure\"\nhost = \"*.corp-openai.example\"\n";
    const AGENT: &str = "[[agents]]\nid = \"bot\"\nsecret_env = \"BOT_SECRET\"\n";

    #[test]
    fn config_defaults_are_the_domain_defaults() {
        let c = Config::default();
        assert_eq!(limit_settings(&c), LimitSettings::default());
        assert_eq!(DEFAULT_MAX_TOKENS, portcullis_limits::DEFAULT_MAX_TOKENS);
        assert_eq!(
            DEFAULT_CHARS_PER_TOKEN,
            portcullis_limits::DEFAULT_CHARS_PER_TOKEN
        );
        let (ours, theirs) = (policy_settings(&c, None), EngineConfig::default());
        assert_eq!(
            (ours.default, ours.on_block, ours.cache_ttl, ours.bindings),
            (
                theirs.default,
                theirs.on_block,
                theirs.cache_ttl,
                theirs.bindings
            )
        );
    }

    #[test]
    fn sections_map_field_by_field() {
        let c = Config::from_toml(
            "[policy]\ndefault = \"allow\"\non_block = \"stub\"\ncache_ttl = 5\n\
             [[policy.bindings]]\npolicy = \"models\"\ngroups = [\"finance\"]\nmode = \"shadow\"\non_block = \"json\"\n\
             [[llm.providers]]\nname = \"vllm\"\nhost = \"vllm.internal:8000\"\nformat = \"anthropic\"\n\
             [[llm.providers]]\nname = \"azure\"\nhost = \"*.azure.example\"\n",
        )
        .unwrap();
        check(&c).unwrap();
        let p = policy_settings(&c, Some(PathBuf::from("pol")));
        assert_eq!(p.dir.as_deref(), Some(Path::new("pol")));
        assert_eq!(
            (p.default, p.on_block, p.cache_ttl.as_secs()),
            (DefaultDecision::Allow, OnBlock::Stub, 5)
        );
        let b = &p.bindings[0];
        assert_eq!(
            (b.policy.as_str(), &b.groups[..], b.mode, b.on_block),
            (
                "models",
                &["finance".to_owned()][..],
                portcullis_core::PolicyMode::Shadow,
                Some(OnBlock::Json)
            )
        );
        let p = providers(&c);
        assert_eq!(p[0].effective_format(), Format::Anthropic);
        assert_eq!(
            (p[1].format, p[1].effective_format()),
            (None, Format::OpenAi)
        );
        assert_eq!(p[0].port(), Some(8000));
    }

    /// The shipped files pass the domain checks too (the config crate's test runs its own).
    #[test]
    fn every_shipped_config_passes_the_domain_checks() {
        fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    toml_files(&p, out);
                } else if p.extension().is_some_and(|e| e == "toml") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        toml_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config"),
            &mut files,
        );
        assert!(files.len() >= 2, "expected config files, found {files:?}");
        for f in files {
            let c = Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            validate(&c).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }

    #[test]
    fn alert_secrets_are_read_and_a_missing_one_names_its_key() {
        let dir = std::env::temp_dir().join(format!("portcullis-alerts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hook.key");
        std::fs::write(&file, "  file-secret\n").unwrap();
        let doc = format!(
            "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\n\
             secret_env = \"HOOK_SECRET\"\n\
             [[alerts.webhooks]]\nname = \"chat\"\nurl = \"http://127.0.0.1:9/\"\n\
             format = \"slack\"\nsecret_file = \"{}\"\n",
            file.display()
        );
        let cfg = Config::from_toml(&doc).unwrap();
        cfg.validate().unwrap();
        let env = |k: &str| (k == "HOOK_SECRET").then(|| "env-secret".to_owned());
        let s = alert_settings(&cfg, &env, None).unwrap().unwrap();
        assert_eq!(s.thresholds, vec![0.5, 0.8, 1.0]);
        assert_eq!(s.webhooks[0].secret.as_deref(), Some(&b"env-secret"[..]));
        assert_eq!(s.webhooks[1].secret.as_deref(), Some(&b"file-secret"[..]));
        assert_eq!(s.webhooks[1].format, portcullis_alerts::Format::Slack);
        assert!(s.shared.is_none());
        let e = alert_settings(&cfg, &|_| None, None).unwrap_err();
        assert_eq!(e.key, "alerts.webhooks[0].secret_env");
        assert!(!e.reason.contains("secret\""), "{}", e.reason);
        std::fs::remove_file(&file).unwrap();
        let e = alert_settings(&cfg, &env, None).unwrap_err();
        assert_eq!(e.key, "alerts.webhooks[1].secret_file");
        // No webhook: alerts are off.
        assert!(alert_settings(&Config::default(), &env, None)
            .unwrap()
            .is_none());
    }
}
