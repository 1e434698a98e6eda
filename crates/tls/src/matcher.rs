//! Which CONNECT tunnels are intercepted: host globs for `tls.intercept` and
//! `tls.passthrough`.

use std::collections::HashSet;

use crate::host::normalize_for_match;
use crate::TlsError;

/// The hosts intercepted by default (`tls.intercept` when not configured): the public APIs
/// of well-known LLM providers. Region-templated endpoints that a glob cannot express
/// (e.g. `us-central1-aiplatform.googleapis.com`, `bedrock-runtime.<region>.amazonaws.com`)
/// must be listed explicitly by the operator.
pub const DEFAULT_INTERCEPT_HOSTS: &[&str] = &[
    "api.openai.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.cohere.com",
    "api.cohere.ai",
    "api.together.xyz",
    "api.deepseek.com",
    "openrouter.ai",
    "api.x.ai",
    "api.perplexity.ai",
    "api.fireworks.ai",
];

/// A set of host globs, matched case-insensitively, ignoring a trailing dot and a port.
///
/// Pattern forms: an exact name or IP address (`api.openai.com`, `10.0.0.7`, `[::1]`);
/// `*.example.com`, matching one or more labels before `example.com` but not
/// `example.com` itself; `*` alone, matching every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMatcher {
    any: bool,
    exact: HashSet<String>,
    /// Suffixes with their leading dot: `.example.com`.
    suffixes: HashSet<String>,
    patterns: Vec<String>,
}

impl HostMatcher {
    /// Compiles `globs`. Fails on a malformed pattern (empty, a `*` anywhere but a whole
    /// leading label, a port, bad characters).
    pub fn new<I, S>(globs: I) -> Result<Self, TlsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut matcher = HostMatcher::default();
        for glob in globs {
            let glob = glob.as_ref();
            let invalid = |reason| TlsError::InvalidPattern {
                pattern: glob.to_string(),
                reason,
            };
            matcher.patterns.push(glob.to_string());
            if glob == "*" {
                matcher.any = true;
                continue;
            }
            let (wildcard, rest) = match glob.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, glob),
            };
            if rest.contains('*') {
                return Err(invalid(
                    "'*' is only allowed as a whole leading label (\"*.example.com\") or alone",
                ));
            }
            let normalized = if rest.starts_with('[') {
                normalize_for_match(rest)
                    .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok() && rest.ends_with(']'))
                    .ok_or_else(|| {
                        invalid("bracketed pattern must be an IPv6 address without port")
                    })?
            } else if rest.parse::<std::net::IpAddr>().is_ok() {
                rest.to_ascii_lowercase()
            } else {
                if rest.contains(':') {
                    return Err(invalid("patterns match host names; remove the port"));
                }
                let name = rest.strip_suffix('.').unwrap_or(rest);
                crate::host::validate_dns_name(name).map_err(invalid)?;
                name.to_ascii_lowercase()
            };
            if wildcard {
                if normalized.parse::<std::net::IpAddr>().is_ok() {
                    return Err(invalid("'*.' cannot prefix an IP address"));
                }
                matcher.suffixes.insert(format!(".{normalized}"));
            } else {
                matcher.exact.insert(normalized);
            }
        }
        Ok(matcher)
    }

    /// Whether `host` (a CONNECT authority, SNI or Host header: port and brackets allowed)
    /// matches any pattern. A malformed host never matches.
    pub fn matches(&self, host: &str) -> bool {
        let Some(host) = normalize_for_match(host) else {
            return false;
        };
        self.matches_normalized(&host)
    }

    fn matches_normalized(&self, host: &str) -> bool {
        if self.any || self.exact.contains(host) {
            return true;
        }
        if self.suffixes.is_empty() {
            return false;
        }
        // Every proper suffix starting at a dot, longest first: a.b.example.com ->
        // .b.example.com, .example.com, .com
        host.char_indices()
            .filter(|(i, c)| *c == '.' && *i > 0)
            .any(|(i, _)| host.get(i..).is_some_and(|s| self.suffixes.contains(s)))
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as configured (for the startup banner).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// The interception decision for a CONNECT tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptRules {
    /// Hosts to intercept (`tls.intercept`).
    pub intercept: HostMatcher,
    /// Intercept every host (`tls.intercept_all`), except passthrough ones.
    pub intercept_all: bool,
    /// Hosts never intercepted, e.g. clients that pin certificates (`tls.passthrough`).
    pub passthrough: HostMatcher,
}

impl Default for InterceptRules {
    /// [`DEFAULT_INTERCEPT_HOSTS`], nothing else, no passthrough exceptions.
    fn default() -> Self {
        Self {
            intercept: HostMatcher::new(DEFAULT_INTERCEPT_HOSTS).unwrap_or_default(),
            intercept_all: false,
            passthrough: HostMatcher::default(),
        }
    }
}

impl InterceptRules {
    /// Whether a tunnel to `host` is intercepted. Passthrough wins over everything.
    pub fn should_intercept(&self, host: &str) -> bool {
        let Some(host) = normalize_for_match(host) else {
            return false;
        };
        if self.passthrough.matches_normalized(&host) {
            return false;
        }
        self.intercept_all || self.intercept.matches_normalized(&host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_compiles() {
        let m = HostMatcher::new(DEFAULT_INTERCEPT_HOSTS).expect("defaults");
        assert_eq!(m.patterns().len(), DEFAULT_INTERCEPT_HOSTS.len());
        let rules = InterceptRules::default();
        assert_eq!(rules.intercept, m);
        assert!(rules.should_intercept("api.openai.com:443"));
        assert!(rules.should_intercept("my-resource.openai.azure.com"));
        assert!(rules.should_intercept("API.ANTHROPIC.COM."));
        assert!(!rules.should_intercept("github.com:443"));
        assert!(!rules.should_intercept("openai.azure.com"));
    }

    #[test]
    fn glob_table() {
        let m = HostMatcher::new([
            "api.openai.com",
            "*.openai.azure.com",
            "EXAMPLE.org.",
            "10.0.0.7",
            "[::1]",
        ])
        .expect("compile");
        let table = [
            ("api.openai.com", true),
            ("API.OpenAI.Com", true),
            ("api.openai.com.", true),
            ("api.openai.com:443", true),
            ("api.openai.com:", false),
            ("xapi.openai.com", false),
            ("api.openai.com.evil.com", false),
            ("openai.com", false),
            ("foo.openai.azure.com", true),
            ("a.b.openai.azure.com", true),
            ("FOO.OpenAI.Azure.Com.:8443", true),
            ("openai.azure.com", false),
            ("fooopenai.azure.com", false),
            (".openai.azure.com", false),
            ("example.org", true),
            ("www.example.org", false),
            ("10.0.0.7", true),
            ("10.0.0.7:443", true),
            ("10.0.0.70", false),
            ("[::1]:443", true),
            ("::1", true),
            ("[::2]", false),
            ("", false),
            (":443", false),
        ];
        for (host, want) in table {
            assert_eq!(m.matches(host), want, "host {host:?}");
        }
    }

    #[test]
    fn star_matches_everything_valid() {
        let m = HostMatcher::new(["*"]).expect("star");
        assert!(m.matches("anything.example"));
        assert!(m.matches("127.0.0.1:80"));
        assert!(!m.matches(""));
        assert!(HostMatcher::new(Vec::<String>::new())
            .expect("empty")
            .is_empty());
        assert!(!HostMatcher::default().matches("a.com"));
    }

    #[test]
    fn invalid_patterns() {
        for bad in [
            "",
            "*.",
            "**.a.com",
            "a.*.com",
            "*a.com",
            "a*",
            "*.*.com",
            "api.openai.com:443",
            "[::1]:443",
            "[::1",
            "*.10.0.0.1",
            "bad host",
            "a..com",
        ] {
            assert!(
                matches!(
                    HostMatcher::new([bad]),
                    Err(TlsError::InvalidPattern { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn passthrough_wins() {
        let rules = InterceptRules {
            intercept: HostMatcher::new(["*.example.com", "pinned.example.com"]).expect("i"),
            intercept_all: false,
            passthrough: HostMatcher::new(["pinned.example.com", "*.bank.example.com"]).expect("p"),
        };
        assert!(rules.should_intercept("api.example.com"));
        assert!(!rules.should_intercept("pinned.example.com:443"));
        assert!(!rules.should_intercept("www.bank.example.com"));
        assert!(!rules.should_intercept("example.com"));

        let all = InterceptRules {
            intercept_all: true,
            ..rules
        };
        assert!(all.should_intercept("anything.test"));
        assert!(all.should_intercept("example.com"));
        assert!(!all.should_intercept("PINNED.example.com."));
        assert!(!all.should_intercept("x.bank.example.com"));
        assert!(!all.should_intercept("host:notaport"));
    }
}
