//! Parsing and validating where a request wants to go (CONNECT authority or
//! absolute-form URI) before anything is resolved or dialed.

use crate::ssrf::parse_ipv4_lenient;
use std::fmt;
use std::net::IpAddr;

/// A destination host: a DNS name (lower-cased, no trailing dot) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name.
    Name(String),
    /// An IP literal (including lenient IPv4 forms like `2130706433`).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl Target {
    /// The host as policy and audit see it (IPv6 without brackets).
    pub fn host_str(&self) -> String {
        match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a target was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Authority has no port (CONNECT requires one).
    #[error("the CONNECT target must be host:port")]
    MissingPort,
    /// Port is not a number in 1..=65535.
    #[error("invalid port")]
    BadPort,
    /// Host is empty or has characters no DNS name or IP literal has.
    #[error("invalid host")]
    BadHost,
    /// `user:pass@` in the authority.
    #[error("credentials in the target URL are not allowed")]
    Userinfo,
}

const MAX_HOST_LEN: usize = 253;

/// Parses a CONNECT authority: `host:port`, `[v6]:port`. Port is required.
pub fn parse_authority(auth: &str) -> Result<Target, TargetError> {
    parse_host_port(auth, None)
}

/// Parses `host[:port]` with a default port (absolute-form URIs).
pub fn parse_host_port(auth: &str, default_port: Option<u16>) -> Result<Target, TargetError> {
    if auth.contains('@') {
        return Err(TargetError::Userinfo);
    }
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let end = rest.find(']').ok_or(TargetError::BadHost)?;
        let (h, after) = (&rest[..end], &rest[end + 1..]);
        let ip: std::net::Ipv6Addr = h.parse().map_err(|_| TargetError::BadHost)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(TargetError::BadHost),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (h, port) = match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        };
        (parse_host(h)?, port)
    };
    let port = match port {
        Some(p) => parse_port(p)?,
        None => default_port.ok_or(TargetError::MissingPort)?,
    };
    Ok(Target { host, port })
}

fn parse_port(p: &str) -> Result<u16, TargetError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(TargetError::BadPort),
        Ok(n) => Ok(n),
    }
}

fn parse_host(h: &str) -> Result<Host, TargetError> {
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() || h.len() > MAX_HOST_LEN {
        return Err(TargetError::BadHost);
    }
    if let Ok(ip) = h.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if let Some(v4) = parse_ipv4_lenient(h) {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !h.split('.').all(valid_label) {
        return Err(TargetError::BadHost);
    }
    Ok(Host::Name(h.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse_authority(s).unwrap().to_string()
    }

    #[test]
    fn authorities() {
        assert_eq!(ok("example.com:443"), "example.com:443");
        assert_eq!(ok("EXAMPLE.com.:443"), "example.com:443");
        assert_eq!(ok("127.0.0.1:8443"), "127.0.0.1:8443");
        assert_eq!(ok("[::1]:443"), "[::1]:443");
        assert_eq!(ok("[::ffff:127.0.0.1]:443"), "[::ffff:127.0.0.1]:443");
        assert_eq!(ok("2130706433:443"), "127.0.0.1:443");
        assert_eq!(ok("0177.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(ok("0x7f.1:80"), "127.0.0.1:80");
        assert_eq!(ok("my_host.internal:80"), "my_host.internal:80");
    }

    #[test]
    fn bad_authorities() {
        use TargetError::*;
        let table = [
            ("example.com", MissingPort),
            ("example.com:", BadPort),
            ("example.com:0", BadPort),
            ("example.com:65536", BadPort),
            ("example.com:+443", BadPort),
            ("example.com:443 ", BadPort),
            ("example.com:4a3", BadPort),
            (":443", BadHost),
            ("exa mple.com:443", BadHost),
            ("example..com:443", BadHost),
            ("-example.com:443", BadHost),
            ("exa/mple.com:443", BadHost),
            ("[::1:443", BadHost),
            ("[::1]x:443", BadHost),
            ("[nothex]:443", BadHost),
            ("::1:443", BadHost),
            ("user:pw@example.com:443", Userinfo),
            ("", BadHost),
            ("[::1]", MissingPort),
        ];
        for (s, want) in table {
            assert_eq!(parse_authority(s), Err(want), "{s:?}");
        }
        let long = format!("{}.com:443", "a".repeat(300));
        assert_eq!(parse_authority(&long), Err(BadHost));
    }

    #[test]
    fn default_port() {
        assert_eq!(
            parse_host_port("example.com", Some(80))
                .unwrap()
                .to_string(),
            "example.com:80"
        );
        assert_eq!(
            parse_host_port("[::1]", Some(80)).unwrap().to_string(),
            "[::1]:80"
        );
    }
}
