//! Host names as they appear in CONNECT targets, SNI and certificates.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::TlsError;

/// Longest DNS name accepted (RFC 1035, without the trailing dot).
const MAX_DNS_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// A host a leaf certificate can be minted for: a DNS name or an IP address.
///
/// DNS names are lower-cased and lose a trailing dot; IPv6 literals may come with or
/// without brackets. The [`Display`](fmt::Display) form is the canonical cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeafHost {
    /// A DNS name (lower case, no trailing dot).
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl LeafHost {
    /// Parses a host (no port). Refuses empty names, bad characters, wildcards, over-long
    /// names or labels, IPv6 zone ids and names whose last label is numeric (they look like
    /// IP addresses in forms such as `127.1`).
    pub fn parse(host: &str) -> Result<Self, TlsError> {
        if host.is_empty() {
            return Err(TlsError::invalid_host(host, "empty"));
        }
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| TlsError::invalid_host(host, "unbalanced brackets"))?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| LeafHost::Ip(IpAddr::V6(ip)))
                .map_err(|_| {
                    TlsError::invalid_host(host, "bracketed host is not an IPv6 address")
                });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(LeafHost::Ip(ip));
        }
        let name = host.strip_suffix('.').unwrap_or(host);
        validate_dns_name(name).map_err(|reason| TlsError::invalid_host(host, reason))?;
        Ok(LeafHost::Dns(name.to_ascii_lowercase()))
    }

    /// Whether this is an IP address (clients send no SNI for those).
    pub fn is_ip(&self) -> bool {
        matches!(self, LeafHost::Ip(_))
    }
}

impl fmt::Display for LeafHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafHost::Dns(name) => f.write_str(name),
            LeafHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Checks LDH(+underscore) syntax of a DNS name without trailing dot.
pub(crate) fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_DNS_LEN {
        return Err("name longer than 253 characters");
    }
    let mut last_label = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
        if label == "*" || label.contains('*') {
            return Err("wildcards are not allowed");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("invalid character");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        last_label = label;
    }
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err("numeric top-level label (not a valid IP address either)");
    }
    Ok(())
}

/// Normalises a host for matching: strips a port (`host:443`, `[v6]:443`), brackets and a
/// trailing dot, and lower-cases. Returns `None` for an empty or malformed authority.
pub(crate) fn normalize_for_match(host: &str) -> Option<String> {
    let host = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = rest.get(end + 1..)?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        rest.get(..end)?
    } else if host.bytes().filter(|b| *b == b':').count() == 1 {
        let (h, port) = host.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        h
    } else {
        // No colon, or a bare IPv6 literal.
        host
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dns_and_ip_forms() {
        assert_eq!(
            LeafHost::parse("API.OpenAI.com.").ok(),
            Some(LeafHost::Dns("api.openai.com".into()))
        );
        assert_eq!(
            LeafHost::parse("127.0.0.1").ok(),
            Some(LeafHost::Ip("127.0.0.1".parse().expect("ip")))
        );
        assert_eq!(
            LeafHost::parse("[::1]").ok(),
            Some(LeafHost::Ip("::1".parse().expect("ip")))
        );
        assert_eq!(
            LeafHost::parse("2001:db8::1").ok(),
            Some(LeafHost::Ip("2001:db8::1".parse().expect("ip")))
        );
        assert_eq!(
            LeafHost::parse("_dmarc.example.com").ok(),
            Some(LeafHost::Dns("_dmarc.example.com".into()))
        );
        assert_eq!(
            LeafHost::parse("[::ffff:127.0.0.1]")
                .map(|h| h.to_string())
                .ok(),
            Some("::ffff:127.0.0.1".into())
        );
    }

    #[test]
    fn rejects_bad_hosts() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        for bad in [
            "",
            ".",
            "a..b",
            "*.example.com",
            "ex*mple.com",
            "-a.com",
            "a-.com",
            "a b.com",
            "a/b.com",
            "exa\u{e9}mple.com",
            "[::1",
            "[example.com]",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            "127.1",
            "0x7f.1",
            "1.2.3.4.5",
            "host:443",
            "a\0.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            let err = LeafHost::parse(bad);
            assert!(
                matches!(err, Err(TlsError::InvalidHost { .. })),
                "{bad:?} -> {err:?}"
            );
        }
        assert!(TlsError::invalid_host("x", "y").is_client_error());
    }

    #[test]
    fn match_normalisation() {
        let cases = [
            ("api.openai.com", Some("api.openai.com")),
            ("API.OpenAI.com.:443", Some("api.openai.com")),
            ("[::1]:8443", Some("::1")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("10.0.0.1:80", Some("10.0.0.1")),
            ("host:", None),
            ("host:abc", None),
            ("[::1]x", None),
            ("", None),
            (":443", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_for_match(input).as_deref(),
                want,
                "input {input:?}"
            );
        }
    }
}
