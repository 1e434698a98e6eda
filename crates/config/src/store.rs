//! `[store]`: persistence.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Environment variable whose value, when set, replaces `store.url` (so a PostgreSQL
/// password can stay in a Secret rather than in the config file).
pub const STORE_URL_ENV: &str = "PORTCULLIS_STORE_URL";

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the working directory), `sqlite::memory:`, or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` for a store shared by several gateways.
    /// [`STORE_URL_ENV`] wins over the file.
    pub url: String,
    /// Most connections one gateway (or CLI command) keeps to a PostgreSQL store, besides
    /// the one that listens for changes. Ignored for SQLite.
    pub max_connections: u32,
    /// Key sealing the secrets of credentials managed through the admin API and CLI (base64
    /// of 32 bytes; generated on first use, mode 0600). The environment variable
    /// `PORTCULLIS_CREDENTIALS_KEY` (same format) takes precedence.
    pub credentials_key: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/portcullis.db".to_owned(),
            max_connections: 8,
            credentials_key: PathBuf::from("data/credentials.key"),
        }
    }
}

impl StoreConfig {
    /// Applies [`STORE_URL_ENV`] as read by `var` (a non-empty value replaces `url`);
    /// returns whether it did. Kept apart from reading the environment so tests need none.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> bool {
        match var(STORE_URL_ENV) {
            Some(url) if !url.trim().is_empty() => {
                self.url = url.trim().to_owned();
                true
            }
            _ => false,
        }
    }
}
