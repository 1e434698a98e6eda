//! Resolve once, check every address, dial exactly a checked address.

use crate::ssrf::{Denied, Guard};
use crate::target::{Host, Target};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Why a destination could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The SSRF guard refused an address the name resolved to.
    #[error("{0}")]
    Denied(Denied),
    /// The name did not resolve.
    #[error("DNS resolution of {host} failed: {source}")]
    Dns {
        /// The name.
        host: String,
        /// Resolver error.
        source: io::Error,
    },
    /// The name resolved to nothing.
    #[error("{0} resolved to no address")]
    NoAddress(String),
    /// Resolution or connect did not finish within the connect timeout.
    #[error("connecting to {0} timed out")]
    Timeout(String),
    /// The TLS handshake with the upstream failed (certificate not trusted, protocol error).
    #[error("TLS with {target} failed: {reason}")]
    Tls {
        /// The destination.
        target: String,
        /// What failed, as a sentence saying how to fix it (never a library's error name).
        reason: String,
    },
    /// Every address refused or failed.
    #[error("connecting to {target} failed: {source}")]
    Connect {
        /// The destination.
        target: String,
        /// Last socket error.
        source: io::Error,
    },
}

/// Checks an IP-literal destination against the guard before anything else is decided, so a
/// forbidden address is answered as such (`destination_forbidden`) whatever policy would say.
/// Names are checked when they are resolved, at dial time.
pub fn check_literal(target: &Target, guard: &Guard) -> Result<(), DialError> {
    match target.host {
        Host::Ip(ip) => guard
            .check(SocketAddr::new(ip, target.port))
            .map_err(DialError::Denied),
        Host::Name(_) => Ok(()),
    }
}

impl Clone for DialError {
    /// A copy for answering (the `io::Error` sources are recreated with the same kind and
    /// message; they are only ever displayed).
    fn clone(&self) -> Self {
        let io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            DialError::Denied(d) => DialError::Denied(d.clone()),
            DialError::Dns { host, source } => DialError::Dns {
                host: host.clone(),
                source: io(source),
            },
            DialError::NoAddress(h) => DialError::NoAddress(h.clone()),
            DialError::Timeout(t) => DialError::Timeout(t.clone()),
            DialError::Tls { target, reason } => DialError::Tls {
                target: target.clone(),
                reason: reason.clone(),
            },
            DialError::Connect { target, source } => DialError::Connect {
                target: target.clone(),
                source: io(source),
            },
        }
    }
}

impl DialError {
    /// A failed TLS handshake with `target`: the reason says what is wrong with the
    /// upstream's certificate or TLS and how to fix it (see
    /// [`portcullis_tls::explain_handshake_error`]).
    pub fn tls_handshake(target: &Target, err: &io::Error) -> Self {
        DialError::Tls {
            target: target.to_string(),
            reason: portcullis_tls::explain_handshake_error(err, &target.host_str()),
        }
    }

    /// Metric label for `portcullis_upstream_errors_total{kind}`; `None` when the
    /// refusal is ours (SSRF guard), not an upstream failure.
    pub fn metric_kind(&self) -> Option<&'static str> {
        match self {
            DialError::Denied(_) => None,
            DialError::Dns { .. } | DialError::NoAddress(_) => Some("dns"),
            DialError::Timeout(_) => Some("connect_timeout"),
            DialError::Connect { .. } => Some("connect"),
            DialError::Tls { .. } => Some("tls"),
        }
    }

    /// What went wrong, for the answer's `detail`.
    pub fn detail(&self) -> String {
        match self {
            DialError::Denied(d) => d.to_string(),
            DialError::Dns { host, .. } => format!("could not resolve {host}"),
            DialError::NoAddress(host) => format!("{host} resolved to no address"),
            DialError::Timeout(t) => format!("connecting to {t} timed out"),
            DialError::Tls { target, reason } => format!("TLS with {target} failed: {reason}"),
            DialError::Connect { target, source } => {
                format!("connecting to {target} failed: {}", io_reason(source))
            }
        }
    }
}

fn io_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        _ => "connection failed",
    }
}

/// Resolves `target` once and checks every address; any refused address refuses
/// the whole destination (a name must not mix public and private answers).
pub async fn resolve_checked(
    target: &Target,
    guard: &Guard,
    deadline: Instant,
) -> Result<Vec<SocketAddr>, DialError> {
    let addrs: Vec<SocketAddr> = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), target.port));
            match timeout_at(deadline, lookup).await {
                Err(_) => return Err(DialError::Timeout(target.to_string())),
                Ok(Err(source)) => {
                    return Err(DialError::Dns {
                        host: name.clone(),
                        source,
                    })
                }
                Ok(Ok(it)) => it.collect(),
            }
        }
    };
    if addrs.is_empty() {
        return Err(DialError::NoAddress(target.host_str()));
    }
    for a in &addrs {
        guard.check(*a).map_err(DialError::Denied)?;
    }
    Ok(addrs)
}

/// Resolves, checks and connects within `connect_timeout`, trying each checked
/// address in turn. Returns the stream and the address it is connected to.
pub async fn dial(
    target: &Target,
    guard: &Guard,
    connect_timeout: Duration,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let deadline = Instant::now() + connect_timeout;
    let addrs = resolve_checked(target, guard, deadline).await?;
    let mut last = None;
    for addr in addrs {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(DialError::Timeout(target.to_string())),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) => last = Some(e),
        }
    }
    Err(DialError::Connect {
        target: target.to_string(),
        source: last.unwrap_or_else(|| io::Error::other("no address")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_tls::rustls::{CertificateError, Error as TlsError};

    #[test]
    fn tls_handshake_failures_answer_502_with_a_sentence() {
        let target = crate::target::parse_authority("localhost:8443").expect("target");
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let d = DialError::tls_handshake(&target, &e);
        assert_eq!(d.metric_kind(), Some("tls"));
        let refusal = crate::refusal::Refusal::from(d);
        assert_eq!(refusal.status(), portcullis_core::Status::BadGateway);
        assert_eq!(refusal.code(), "upstream_tls_error");
        let detail = refusal.detail();
        assert_eq!(
            detail,
            format!(
                "TLS with localhost:8443 failed: {}",
                portcullis_tls::explain_handshake_error(&e, "localhost")
            )
        );
        assert!(
            detail.contains("is not signed by a trusted CA")
                && detail.contains("tls.upstream_ca")
                && !detail.contains("UnknownIssuer"),
            "{detail}"
        );
        let eof = DialError::tls_handshake(&target, &io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(
            eof.detail()
                .ends_with("check that localhost serves HTTPS on this port"),
            "{eof}"
        );
    }
}
