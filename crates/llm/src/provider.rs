//! Provider table: which hosts are LLM providers and which wire format they speak.

use crate::format::Format;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// One operator-defined provider, embedded in the config as `[[llm.providers]]`.
///
/// ```toml
/// [[llm.providers]]
/// name = "azure"
/// host = "*.openai.azure.com"   # "host", "host:port" or "*.suffix"
/// format = "openai"             # optional
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Provider name used in policy input, audit and metric labels
    /// (`^[a-z0-9][a-z0-9_.-]{0,63}$`).
    pub name: String,
    /// `host`, `host:port` (only that port) or `*.suffix` (any subdomain of
    /// `suffix`, optionally with `:port`). IPv6 literals in brackets.
    pub host: String,
    /// Wire format; default `anthropic` when `name` is `anthropic`, else `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

impl ProviderEntry {
    /// The format this entry resolves to, applying the default.
    pub fn effective_format(&self) -> Format {
        match self.format {
            Some(f) => f,
            None if self.name == "anthropic" => Format::Anthropic,
            None => Format::OpenAi,
        }
    }

    /// The port the entry is limited to (`host:port`), if any; `None` also for an invalid
    /// host (refused by [`Providers::new`]).
    pub fn port(&self) -> Option<u16> {
        parse_pattern(&self.host).ok()?.port
    }

    /// The entry's host as a host glob without its port (`api.example.com`,
    /// `*.openai.azure.com`, `[::1]`), lower case: the form `tls.intercept` takes, so the
    /// provider's HTTPS tunnels are intercepted. Interception is decided per host, so an
    /// entry for `host:8443` intercepts `host` on every allowed port (only port 8443 is
    /// classified as this provider).
    pub fn host_glob(&self) -> Result<String, ProviderError> {
        let pat = parse_pattern(&self.host).map_err(|reason| ProviderError::InvalidHost {
            name: self.name.clone(),
            host: self.host.clone(),
            reason,
        })?;
        Ok(if pat.wildcard {
            format!("*{}", pat.host)
        } else if pat.host.contains(':') {
            format!("[{}]", pat.host)
        } else {
            pat.host
        })
    }
}

/// Why a provider table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The name is empty, too long or uses characters outside `[a-z0-9_.-]`.
    #[error("llm.providers: invalid provider name {0:?} (expected ^[a-z0-9][a-z0-9_.-]{{0,63}}$)")]
    InvalidName(String),
    /// The host is not `host`, `host:port` or `*.suffix[:port]`.
    #[error("llm.providers: invalid host {host:?} for provider {name:?}: {reason}")]
    InvalidHost {
        /// Provider name.
        name: String,
        /// The offending host string.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two operator entries claim the same host and port.
    #[error("llm.providers: host {0:?} is listed more than once")]
    DuplicateHost(String),
}

/// A resolved provider: its name and default wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Provider name (`openai`, `anthropic`, or an operator's).
    pub name: Arc<str>,
    /// Default wire format (an API recognised by path may override it).
    pub format: Format,
}

/// Host pattern after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Lower-case host without brackets or trailing dot; for wildcards, the
    /// suffix including its leading dot (`.openai.azure.com`).
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// Host → provider lookup with the built-in OpenAI and Anthropic entries plus
/// operator entries. Operator entries take precedence over built-ins for the
/// same host. Order of precedence: exact `host:port`, exact `host`, then
/// wildcards (the longest suffix wins, port-specific before any-port).
#[derive(Debug, Clone)]
pub struct Providers {
    exact: HashMap<String, HostPorts>,
    wildcards: Vec<(Pattern, usize)>,
    providers: Vec<Provider>,
}

/// Exact-host entries: one for any port, plus port-specific ones.
#[derive(Debug, Clone, Default)]
struct HostPorts {
    any: Option<usize>,
    ports: Vec<(u16, usize)>,
}

impl HostPorts {
    /// Inserts unless taken; returns false when the slot was already taken.
    fn insert(&mut self, port: Option<u16>, idx: usize) -> bool {
        match port {
            None if self.any.is_some() => false,
            None => {
                self.any = Some(idx);
                true
            }
            Some(p) if self.ports.iter().any(|(q, _)| *q == p) => false,
            Some(p) => {
                self.ports.push((p, idx));
                true
            }
        }
    }

    fn get(&self, port: u16) -> Option<usize> {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, i)| *i)
            .or(self.any)
    }
}

/// The built-in table.
pub const BUILTIN_PROVIDERS: &[(&str, &str, Format)] = &[
    ("openai", "api.openai.com", Format::OpenAi),
    ("anthropic", "api.anthropic.com", Format::Anthropic),
];

impl Default for Providers {
    fn default() -> Self {
        // The built-ins are valid by construction; an empty operator list
        // cannot collide with anything.
        Self::new(&[]).unwrap_or_else(|_| Self {
            exact: HashMap::new(),
            wildcards: Vec::new(),
            providers: Vec::new(),
        })
    }
}

impl Providers {
    /// Builds the table from operator entries (validated here) on top of the
    /// built-ins.
    pub fn new(entries: &[ProviderEntry]) -> Result<Self, ProviderError> {
        let mut t = Self {
            exact: HashMap::new(),
            wildcards: Vec::new(),
            providers: Vec::new(),
        };
        for e in entries {
            if !valid_name(&e.name) {
                return Err(ProviderError::InvalidName(e.name.clone()));
            }
            let pat = parse_pattern(&e.host).map_err(|reason| ProviderError::InvalidHost {
                name: e.name.clone(),
                host: e.host.clone(),
                reason,
            })?;
            let idx = t.providers.len();
            t.providers.push(Provider {
                name: Arc::from(e.name.as_str()),
                format: e.effective_format(),
            });
            if pat.wildcard {
                if t.wildcards.iter().any(|(p, _)| *p == pat) {
                    return Err(ProviderError::DuplicateHost(e.host.clone()));
                }
                t.wildcards.push((pat, idx));
            } else if !t.exact.entry(pat.host).or_default().insert(pat.port, idx) {
                return Err(ProviderError::DuplicateHost(e.host.clone()));
            }
        }
        for &(name, host, format) in BUILTIN_PROVIDERS {
            let idx = t.providers.len();
            t.providers.push(Provider {
                name: Arc::from(name),
                format,
            });
            // An operator entry for the same host wins; the built-in is then unused.
            t.exact
                .entry(host.to_owned())
                .or_default()
                .insert(None, idx);
        }
        // Longest suffix first, then port-specific before any-port.
        t.wildcards.sort_by(|(a, _), (b, _)| {
            b.host
                .len()
                .cmp(&a.host.len())
                .then(b.port.is_some().cmp(&a.port.is_some()))
        });
        Ok(t)
    }

    /// The provider serving `host` on `port`, if any. `host` may be in any
    /// case, carry a trailing dot, or be a bracketed IPv6 literal.
    pub fn lookup(&self, host: &str, port: u16) -> Option<&Provider> {
        let h = normalize_host(host);
        let idx = self
            .exact
            .get(h.as_ref())
            .and_then(|hp| hp.get(port))
            .or_else(|| {
                self.wildcards
                    .iter()
                    .find(|(p, _)| {
                        p.port.is_none_or(|pp| pp == port)
                            && h.len() > p.host.len()
                            && h.ends_with(p.host.as_str())
                    })
                    .map(|(_, i)| *i)
            })?;
        self.providers.get(idx)
    }
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

fn normalize_host(host: &str) -> Cow<'_, str> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

fn parse_pattern(raw: &str) -> Result<Pattern, &'static str> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unterminated IPv6 literal")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("garbage after IPv6 literal")?),
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid IPv6 literal");
        }
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("port must be 1-65535"),
            Ok(p) => Some(p),
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    if name.is_empty() {
        return Err("empty host name");
    }
    if !name.contains(':') {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err("empty or over-long DNS label");
            }
            if !label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                return Err("host may contain only letters, digits, '-', '_' and '.'");
            }
        }
    }
    let host = if wildcard {
        format!(".{name}")
    } else {
        name.to_owned()
    };
    Ok(Pattern {
        host,
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, host: &str, format: Option<Format>) -> ProviderEntry {
        ProviderEntry {
            name: name.into(),
            host: host.into(),
            format,
        }
    }

    #[test]
    fn builtins() {
        let t = Providers::default();
        let p = t.lookup("api.openai.com", 443).unwrap();
        assert_eq!((&*p.name, p.format), ("openai", Format::OpenAi));
        let p = t.lookup("API.Anthropic.COM.", 443).unwrap();
        assert_eq!((&*p.name, p.format), ("anthropic", Format::Anthropic));
        assert!(t.lookup("example.com", 443).is_none());
        assert!(t.lookup("evil-api.openai.com", 443).is_none());
        assert!(t.lookup("openai.com", 443).is_none());
    }

    #[test]
    fn operator_entries_ports_and_wildcards() {
        let t = Providers::new(&[
            entry("vllm", "localhost:8000", None),
            entry("vllm_any", "localhost", None),
            entry("azure", "*.openai.azure.com", None),
            entry("azure_eu", "*.eu.openai.azure.com", None),
            entry("anthropic", "claude.internal", None),
            entry("proxy6", "[::1]:9000", Some(Format::Anthropic)),
        ])
        .unwrap();
        assert_eq!(&*t.lookup("localhost", 8000).unwrap().name, "vllm");
        assert_eq!(&*t.lookup("localhost", 8001).unwrap().name, "vllm_any");
        assert_eq!(&*t.lookup("a.openai.azure.com", 443).unwrap().name, "azure");
        assert_eq!(
            &*t.lookup("x.eu.openai.azure.com", 443).unwrap().name,
            "azure_eu"
        );
        assert!(t.lookup("openai.azure.com", 443).is_none());
        assert!(t.lookup("evilopenai.azure.com", 443).is_none());
        let a = t.lookup("claude.internal", 443).unwrap();
        assert_eq!(a.format, Format::Anthropic);
        let v6 = t.lookup("[::1]", 9000).unwrap();
        assert_eq!((&*v6.name, v6.format), ("proxy6", Format::Anthropic));
        assert!(t.lookup("[::1]", 9001).is_none());
        assert_eq!(t.lookup("localhost", 8000).unwrap().format, Format::OpenAi);
    }

    #[test]
    fn host_globs_drop_the_port_and_keep_the_wildcard() {
        for (host, glob) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM.", "api.example.com"),
            ("vllm.internal:8000", "vllm.internal"),
            ("*.openai.azure.com", "*.openai.azure.com"),
            ("*.Eu.OpenAI.Azure.com:8443", "*.eu.openai.azure.com"),
            ("[::1]:9000", "[::1]"),
            ("[::1]", "[::1]"),
            ("10.0.0.7:8000", "10.0.0.7"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(
                entry("p", host, None).host_glob().as_deref(),
                Ok(glob),
                "{host}"
            );
        }
        assert_eq!(entry("p", "vllm.internal:8000", None).port(), Some(8000));
        assert_eq!(entry("p", "[::1]:9000", None).port(), Some(9000));
        assert_eq!(entry("p", "[::1]", None).port(), None);
        assert_eq!(entry("p", "*.a.example", None).port(), None);
        assert_eq!(entry("p", "host:0", None).port(), None);
        for bad in ["", "host:0", "[::1", "a b", "*."] {
            assert!(
                matches!(
                    entry("p", bad, None).host_glob(),
                    Err(ProviderError::InvalidHost { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn operator_overrides_builtin() {
        let t = Providers::new(&[entry("corp_openai", "api.openai.com", None)]).unwrap();
        assert_eq!(
            &*t.lookup("api.openai.com", 443).unwrap().name,
            "corp_openai"
        );
    }

    #[test]
    fn invalid_entries_are_refused() {
        for host in [
            "",
            "a..b",
            "host:0",
            "host:99999",
            "host:x",
            "[::1",
            "[zz]:1",
            "a b",
            "a/b",
            "user@host",
            "*.",
        ] {
            let r = Providers::new(&[entry("x", host, None)]);
            assert!(
                matches!(r, Err(ProviderError::InvalidHost { .. })),
                "{host:?} gave {r:?}"
            );
        }
        for name in ["", "Upper", "-x", "a b", &"a".repeat(65)] {
            assert!(matches!(
                Providers::new(&[entry(name, "h", None)]),
                Err(ProviderError::InvalidName(_))
            ));
        }
        assert!(matches!(
            Providers::new(&[entry("a", "h:1", None), entry("b", "H:1", None)]),
            Err(ProviderError::DuplicateHost(_))
        ));
    }

    #[test]
    fn serde_defaults_and_unknown_fields() {
        let e: ProviderEntry =
            serde_json::from_str(r#"{"name":"anthropic","host":"a.example"}"#).unwrap();
        assert_eq!(e.effective_format(), Format::Anthropic);
        let e: ProviderEntry =
            serde_json::from_str(r#"{"name":"groq","host":"api.groq.com"}"#).unwrap();
        assert_eq!(e.effective_format(), Format::OpenAi);
        let e: ProviderEntry =
            serde_json::from_str(r#"{"name":"x","host":"h","format":"anthropic"}"#).unwrap();
        assert_eq!(e.effective_format(), Format::Anthropic);
        assert!(
            serde_json::from_str::<ProviderEntry>(r#"{"name":"x","host":"h","fmt":"openai"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<ProviderEntry>(
            r#"{"name":"x","host":"h","format":"gemini"}"#
        )
        .is_err());
    }
}
