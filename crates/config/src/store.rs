//! `[store]`: persistence.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the working directory) or `sqlite::memory:`.
    pub url: String,
    /// Key sealing the secrets of credentials managed through the admin API and CLI (base64
    /// of 32 bytes; generated on first use, mode 0600). The environment variable
    /// `PORTCULLIS_CREDENTIALS_KEY` (same format) takes precedence.
    pub credentials_key: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/portcullis.db".to_owned(),
            credentials_key: PathBuf::from("data/credentials.key"),
        }
    }
}
