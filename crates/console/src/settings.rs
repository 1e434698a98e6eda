//! What the console is configured with (mapped from `[console]` by the binary) and the
//! gateway facts its overview strip shows.

use http::HeaderName;
use ipnet::IpNet;
use portcullis_audit::{AuditMetrics, SinkKind};
use portcullis_store::Role;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Longest life of a session.
    pub session_ttl: Duration,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// Mark the session cookie `Secure` (the console is reached over HTTPS).
    pub secure_cookie: bool,
    /// Seconds between live-update polls of the Requests page.
    pub live_interval_secs: u64,
    /// Sign-in by headers from a trusted authenticating proxy, when configured.
    pub trusted_header: Option<TrustedHeaders>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(30 * 60),
            secure_cookie: false,
            live_interval_secs: 5,
            trusted_header: None,
        }
    }
}

/// Trusted-header sign-in: which proxy may assert who the operator is, in which headers,
/// and how its groups map to a tenant and role.
#[derive(Debug, Clone)]
pub struct TrustedHeaders {
    /// Source addresses of the proxy; headers from elsewhere are ignored.
    pub sources: Vec<IpNet>,
    /// Header naming the user.
    pub user: HeaderName,
    /// Header with the e-mail (shown instead of the user when present).
    pub email: HeaderName,
    /// Header with comma-separated groups.
    pub groups: HeaderName,
    /// `(group, tenant, role)`, first match wins.
    pub roles: Vec<(String, String, Role)>,
}

impl TrustedHeaders {
    /// Whether a request from `peer` may assert an identity.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.sources.iter().any(|net| net.contains(&peer))
    }

    /// The tenant and role of the first mapping whose group is in `groups`.
    pub fn role_for<'a>(
        &self,
        groups: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<(&str, Role)> {
        self.roles.iter().find_map(|(g, tenant, role)| {
            groups
                .clone()
                .any(|have| have == g)
                .then_some((tenant.as_str(), *role))
        })
    }
}

/// What the startup banner says, for the overview strip.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Gateway version.
    pub version: String,
    /// Proxy listener.
    pub proxy: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Store description (never a password).
    pub store: String,
    /// Intercepted hosts, as the banner states them.
    pub intercept: String,
    /// The audit pipeline's counters and its sinks.
    pub audit: Option<(AuditMetrics, Vec<SinkKind>)>,
    /// Default per-agent limits (`[limits]`): rpm, tpm, tokens per day, concurrency.
    pub default_limits: [Option<u64>; 4],
}

impl Default for Overview {
    fn default() -> Self {
        Self {
            version: String::new(),
            proxy: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8081)),
            store: String::new(),
            intercept: String::new(),
            audit: None,
            default_limits: [None; 4],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_and_role_mapping() {
        let t = TrustedHeaders {
            sources: vec!["10.0.0.0/8".parse().expect("net")],
            user: HeaderName::from_static("x-forwarded-user"),
            email: HeaderName::from_static("x-forwarded-email"),
            groups: HeaderName::from_static("x-forwarded-groups"),
            roles: vec![
                ("ops".into(), "default".into(), Role::Admin),
                ("readers".into(), "acme".into(), Role::Viewer),
            ],
        };
        assert!(t.trusts("10.1.2.3".parse().expect("ip")));
        assert!(t.trusts("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!t.trusts("127.0.0.1".parse().expect("ip")));
        let g = ["readers", "ops"];
        assert_eq!(
            t.role_for(g.iter().copied()),
            Some(("default", Role::Admin))
        );
        assert_eq!(
            t.role_for(["readers"].iter().copied()),
            Some(("acme", Role::Viewer))
        );
        assert_eq!(t.role_for(["Ops"].iter().copied()), None);
    }
}
