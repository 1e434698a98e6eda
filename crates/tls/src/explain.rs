//! Plain sentences for failed TLS handshakes with upstreams: what is wrong and how to fix
//! it, instead of a library's error name (`CaUsedAsEndEntity`) in a 502 body or a log.

use std::io;

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error};

/// Most names of a certificate quoted in a message.
const MAX_NAMES: usize = 5;

/// Why the TLS handshake with the upstream `host` failed, given the error of the
/// handshake future (a rustls error wrapped in an [`io::Error`], or a socket error).
pub fn explain_handshake_error(err: &io::Error, host: &str) -> String {
    if let Some(e) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        return explain_tls_error(e, host);
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => format!(
            "the upstream closed the connection during the TLS handshake; check that {host} \
             serves HTTPS on this port"
        ),
        _ => format!("the TLS handshake with the upstream failed ({err})"),
    }
}

/// Why the TLS handshake with the upstream `host` failed, as a sentence that says what is
/// wrong and how to fix it.
pub fn explain_tls_error(err: &Error, host: &str) -> String {
    match err {
        Error::InvalidCertificate(c) => explain_certificate_error(c, host),
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => format!(
            "the upstream did not answer with TLS; check that {host} serves HTTPS on this port \
             (a plain HTTP endpoint is reached with http://)"
        ),
        Error::PeerIncompatible(_) => "the upstream and the gateway have no TLS version or \
             cipher suite in common (the gateway speaks TLS 1.2 and 1.3); enable TLS 1.2 or \
             1.3 with current cipher suites on the upstream"
            .to_owned(),
        Error::NoCertificatesPresented => {
            "the upstream presented no certificate; configure a server certificate on it".to_owned()
        }
        Error::AlertReceived(alert) => explain_alert(*alert, host),
        other => format!("the TLS handshake with the upstream failed ({other})"),
    }
}

fn explain_alert(alert: AlertDescription, host: &str) -> String {
    match alert {
        AlertDescription::UnrecognisedName => format!(
            "the upstream does not serve the name {host} over TLS (it answered \
             unrecognized_name); check the host name"
        ),
        AlertDescription::CertificateRequired | AlertDescription::BadCertificate => {
            "the upstream requires a client certificate, which the gateway does not send".to_owned()
        }
        AlertDescription::ProtocolVersion
        | AlertDescription::HandshakeFailure
        | AlertDescription::InsufficientSecurity => "the upstream refused the TLS handshake: \
             it has no TLS version or cipher suite in common with the gateway (TLS 1.2 and \
             1.3), or requires a client certificate"
            .to_owned(),
        AlertDescription::NoApplicationProtocol => "the upstream refused the protocols the \
             gateway offers (HTTP/1.1, HTTP/2)"
            .to_owned(),
        other => format!(
            "the upstream aborted the TLS handshake (TLS alert {})",
            u8::from(other)
        ),
    }
}

fn explain_certificate_error(err: &CertificateError, host: &str) -> String {
    match err {
        CertificateError::UnknownIssuer => format!(
            "the upstream's certificate for {host} is not signed by a trusted CA; if it comes \
             from a private CA, add that CA's certificate (PEM) to tls.upstream_ca; a \
             self-signed server certificate cannot be trusted: issue one from a CA and trust \
             that CA"
        ),
        CertificateError::NotValidForName => format!(
            "the upstream's certificate is not valid for {host}; issue it with {host} in its \
             subject alternative names, or reach the upstream by a name it covers"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => {
            let mut names: Vec<&str> = presented
                .iter()
                .take(MAX_NAMES)
                .map(String::as_str)
                .collect();
            if presented.len() > MAX_NAMES {
                names.push("...");
            }
            let names = if names.is_empty() {
                "no names".to_owned()
            } else {
                names.join(", ")
            };
            format!(
                "the upstream's certificate is not valid for {host} (it names {names}); issue \
                 it with {host} in its subject alternative names, or reach the upstream by a \
                 name it covers"
            )
        }
        CertificateError::Expired => format!(
            "the upstream's certificate for {host} has expired; renew it on the upstream (or \
             check the gateway's clock)"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the upstream's certificate for {host} expired at {} (now {}); renew it on the \
             upstream (or check the gateway's clock)",
            rfc3339(*not_after),
            rfc3339(*time)
        ),
        CertificateError::NotValidYet => format!(
            "the upstream's certificate for {host} is not valid yet; check the clocks of the \
             gateway and of the machine that issued it"
        ),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the upstream's certificate for {host} is valid only from {} (now {}); check the \
             clocks of the gateway and of the machine that issued it",
            rfc3339(*not_before),
            rfc3339(*time)
        ),
        CertificateError::BadSignature => format!(
            "a signature in the upstream's certificate chain for {host} does not verify: the \
             chain it serves is broken or mismatched; install the server certificate with the \
             intermediates of the CA that issued it"
        ),
        #[allow(deprecated)] // still produced by rustls for some certificates
        CertificateError::UnsupportedSignatureAlgorithm
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => format!(
            "the upstream's certificate for {host} is signed with an algorithm the gateway does \
             not accept; reissue it with ECDSA (P-256/P-384), Ed25519 or RSA with SHA-256 or \
             stronger"
        ),
        CertificateError::Revoked => format!(
            "the upstream's certificate for {host} was revoked by its issuer; install a new one \
             on the upstream"
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "the upstream's certificate for {host} is not issued for TLS servers; reissue it \
                 with the serverAuth extended key usage"
            )
        }
        CertificateError::BadEncoding => format!(
            "the upstream's certificate for {host} is malformed; reinstall a valid certificate \
             on the upstream"
        ),
        CertificateError::UnhandledCriticalExtension => format!(
            "the upstream's certificate for {host} has a critical extension the gateway does not \
             understand; reissue it without that extension"
        ),
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => format!(
                "the upstream presented a CA certificate as its server certificate; issue a \
                     leaf certificate for {host} signed by that CA and add the CA to \
                     tls.upstream_ca"
            ),
            Some(webpki::Error::EndEntityUsedAsCa) => format!(
                "the upstream's certificate chain for {host} uses a server certificate as an \
                     issuer; serve a leaf certificate issued by a CA certificate"
            ),
            Some(
                webpki::Error::PathLenConstraintViolated
                | webpki::Error::NameConstraintViolation
                | webpki::Error::MaximumPathDepthExceeded,
            ) => format!(
                "the upstream's certificate for {host} breaks a constraint of the CA that \
                     issued it (path length or name constraints); issue it from a CA allowed to \
                     issue for {host}"
            ),
            _ => rejected(err, host),
        },
        _ => rejected(err, host),
    }
}

fn rejected(err: &CertificateError, host: &str) -> String {
    format!(
        "the upstream's certificate for {host} was rejected ({err}); check the certificate it \
         serves and tls.upstream_ca"
    )
}

/// `2025-01-31T12:00:00Z`, or the Unix seconds when out of range.
fn rfc3339(t: UnixTime) -> String {
    let secs = t.as_secs();
    match i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        None => format!("{secs} (Unix time)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{OtherError, PeerIncompatible};
    use std::sync::Arc;
    use std::time::Duration;

    const HOST: &str = "api.example.com";

    fn cert(e: CertificateError) -> String {
        explain_tls_error(&Error::InvalidCertificate(e), HOST)
    }

    fn webpki(e: webpki::Error) -> String {
        cert(CertificateError::Other(OtherError(Arc::new(e))))
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    /// A sentence: no library error names, no debug formatting, a fix.
    fn assert_plain(msg: &str, contains: &[&str]) {
        for bad in [
            "CaUsedAsEndEntity",
            "UnknownIssuer",
            "NotValidForName",
            "OtherError",
            "Other(",
            "{",
            "\"",
        ] {
            assert!(!msg.contains(bad), "{bad} in {msg:?}");
        }
        for want in contains {
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
        }
    }

    #[test]
    fn certificate_errors_say_what_is_wrong_and_how_to_fix_it() {
        let table: Vec<(String, &[&str])> = vec![
            (
                webpki(webpki::Error::CaUsedAsEndEntity),
                &[
                    "presented a CA certificate as its server certificate",
                    "issue a leaf certificate for api.example.com signed by that CA",
                    "add the CA to tls.upstream_ca",
                ],
            ),
            (
                cert(CertificateError::UnknownIssuer),
                &["not signed by a trusted CA", "tls.upstream_ca"],
            ),
            (
                cert(CertificateError::NotValidForName),
                &["not valid for api.example.com", "subject alternative names"],
            ),
            (
                cert(CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from(HOST).expect("name").to_owned(),
                    presented: (0..7).map(|i| format!("h{i}.example")).collect(),
                }),
                &[
                    "not valid for api.example.com",
                    "it names h0.example, h1.example, h2.example, h3.example, h4.example, ...",
                ],
            ),
            (
                cert(CertificateError::Expired),
                &["has expired", "renew it"],
            ),
            (
                cert(CertificateError::ExpiredContext {
                    time: at(1_700_000_000),
                    not_after: at(1_600_000_000),
                }),
                &[
                    "expired at 2020-09-13T12:26:40Z (now 2023-11-14T22:13:20Z)",
                    "renew it",
                ],
            ),
            (
                cert(CertificateError::NotValidYet),
                &["not valid yet", "clocks"],
            ),
            (
                cert(CertificateError::NotValidYetContext {
                    time: at(0),
                    not_before: at(86_400),
                }),
                &[
                    "valid only from 1970-01-02T00:00:00Z (now 1970-01-01T00:00:00Z)",
                    "clocks",
                ],
            ),
            (
                cert(CertificateError::BadSignature),
                &[
                    "does not verify",
                    "install the server certificate with the intermediates",
                ],
            ),
            (
                cert(CertificateError::Revoked),
                &["revoked", "install a new one"],
            ),
            (cert(CertificateError::InvalidPurpose), &["serverAuth"]),
            (cert(CertificateError::BadEncoding), &["malformed"]),
            (
                #[allow(deprecated)]
                cert(CertificateError::UnsupportedSignatureAlgorithm),
                &["algorithm the gateway does not accept"],
            ),
            (
                webpki(webpki::Error::EndEntityUsedAsCa),
                &["uses a server certificate as an issuer"],
            ),
            (
                webpki(webpki::Error::PathLenConstraintViolated),
                &["breaks a constraint of the CA"],
            ),
        ];
        for (msg, want) in &table {
            assert_plain(msg, want);
        }
    }

    #[test]
    fn unmapped_certificate_errors_still_point_at_the_fix() {
        for msg in [
            cert(CertificateError::ApplicationVerificationFailure),
            webpki(webpki::Error::UnsupportedCertVersion),
        ] {
            assert!(
                msg.starts_with("the upstream's certificate for api.example.com was rejected ("),
                "{msg}"
            );
            assert!(
                msg.ends_with("check the certificate it serves and tls.upstream_ca"),
                "{msg}"
            );
        }
    }

    #[test]
    fn protocol_errors_and_socket_errors() {
        let not_tls = explain_tls_error(
            &Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            HOST,
        );
        assert_plain(&not_tls, &["did not answer with TLS", "http://"]);
        let old = explain_tls_error(
            &Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered),
            HOST,
        );
        assert_plain(&old, &["no TLS version or cipher suite in common"]);
        assert_plain(
            &explain_tls_error(
                &Error::AlertReceived(AlertDescription::UnrecognisedName),
                HOST,
            ),
            &["does not serve the name api.example.com"],
        );
        assert_plain(
            &explain_tls_error(
                &Error::AlertReceived(AlertDescription::CertificateRequired),
                HOST,
            ),
            &["requires a client certificate"],
        );
        assert_eq!(
            explain_tls_error(&Error::AlertReceived(AlertDescription::AccessDenied), HOST),
            "the upstream aborted the TLS handshake (TLS alert 49)"
        );

        // Through io::Error, as the handshake future returns it.
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(
            explain_handshake_error(&wrapped, HOST),
            cert(CertificateError::UnknownIssuer)
        );
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_plain(
            &explain_handshake_error(&eof, HOST),
            &[
                "closed the connection during the TLS handshake",
                "api.example.com serves HTTPS",
            ],
        );
    }

    #[test]
    fn a_real_handshake_with_a_ca_as_server_certificate() {
        // The origin serves its CA certificate itself, and the gateway trusts that CA.
        let ca = crate::testutil::TestCa::generate("Self-signed CA origin");
        let dir = tempfile::tempdir().expect("dir");
        let cert = ca.write_cert(dir.path());
        let client = crate::upstream_client_config(std::slice::from_ref(&cert), crate::ALPN_HTTP11)
            .expect("client");
        let server = ca.server_presenting_itself();
        let err = crate::testutil::client_error(client, server, "localhost");
        let msg = explain_tls_error(&err, "localhost");
        assert!(
            msg.starts_with("the upstream presented a CA certificate as its server certificate"),
            "{msg}"
        );
    }
}
