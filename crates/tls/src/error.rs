//! Errors of the TLS crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, generating or using TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A host cannot be put in a certificate (empty, bad characters, wildcard, zone id...).
    /// Caused by client input.
    #[error("invalid host for a certificate: {host:?}: {reason}")]
    InvalidHost {
        /// The host as given (possibly truncated for display).
        host: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A host glob in `tls.intercept` / `tls.passthrough` is malformed.
    #[error("invalid host pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as configured.
        pattern: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A CA certificate file is missing a certificate, malformed or unusable.
    #[error("CA certificate {path}: {reason}")]
    CaCertificate {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA key file is missing a key or malformed.
    #[error("CA key {path}: {reason}")]
    CaKey {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("CA key {key} does not match the public key of certificate {cert}")]
    CaKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA directory holds only one of certificate and key; refusing to overwrite it.
    #[error("{present} exists but {missing} does not; refusing to overwrite a half CA (remove it or restore the missing file)")]
    PartialCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// An extra upstream CA file (`tls.upstream_ca`) is unreadable or holds no certificate.
    #[error("upstream CA file {path}: {reason}")]
    UpstreamCa {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid TLS setting {key}: {reason}")]
    InvalidConfig {
        /// The setting.
        key: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Certificate generation failed (CA or leaf; see `portcullis-ca`).
    #[error("certificate generation failed: {0}")]
    Generation(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Building a rustls configuration failed.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The blocking mint task panicked or was cancelled.
    #[error("certificate minting task failed: {0}")]
    MintTask(String),
}

impl TlsError {
    /// Whether the error was caused by the client's input (a bad host), as opposed to the
    /// gateway's configuration or an internal failure.
    pub fn is_client_error(&self) -> bool {
        matches!(self, TlsError::InvalidHost { .. })
    }

    pub(crate) fn invalid_host(host: &str, reason: &'static str) -> Self {
        let mut shown: String = host.chars().take(80).collect();
        if shown.len() < host.len() {
            shown.push('…');
        }
        TlsError::InvalidHost {
            host: shown,
            reason,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TlsError::Io {
            path: path.into(),
            source,
        }
    }
}
