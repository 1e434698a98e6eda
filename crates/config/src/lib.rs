//! Portcullis configuration.
//!
//! One TOML document, parsed from a string ([`Config::from_toml`]) and validated
//! separately ([`Config::validate`]) so tests need no files; [`Config::load`]
//! adds reading the file. Every key has a default in one place (the `Default`
//! impls below) and is documented in `config/portcullis.toml`.
#![warn(missing_docs)]

pub mod duration;
mod model;

pub use model::*;

use std::path::Path;

/// A configuration error naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `proxy.allowed_ports`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Parses a TOML document (no validation beyond types and known keys).
    pub fn from_toml(src: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(src).map_err(|e| toml_error("(document)", &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(document)".to_owned()
            } else {
                key
            };
            toml_error(&key, e.inner())
        })
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        let cfg = Self::from_toml(&src)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn toml_error(key: &str, e: &toml::de::Error) -> ConfigError {
    // toml's messages carry a source excerpt; keep the first line of the message proper
    // plus the position so the operator can find it.
    let msg = e.message().trim().to_owned();
    let at = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    ConfigError::new(key, format!("{msg}{at}"))
}
