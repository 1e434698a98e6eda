//! A credential the gateway sets on an upstream request on the agent's behalf.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

/// A credential to set on an upstream request. Its `Debug` never shows the value, and the
/// value is marked sensitive (never indexed by HPACK, shown as `Sensitive` by `http`).
#[derive(Clone)]
pub struct Injection {
    /// The credential's name (policy input, audit, metrics).
    pub name: Arc<str>,
    /// Header to set.
    pub header: HeaderName,
    /// Header value, secret included.
    pub value: HeaderValue,
    /// `true`: replace what the agent sent; `false`: only when it sent none.
    pub replace: bool,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("name", &self.name)
            .field("header", &self.header)
            .field("replace", &self.replace)
            .finish_non_exhaustive()
    }
}

impl Injection {
    /// Applies the credential to upstream request headers; returns whether it was set.
    pub fn apply(&self, headers: &mut HeaderMap) -> bool {
        if !self.replace && headers.contains_key(&self.header) {
            return false;
        }
        headers.insert(self.header.clone(), self.value.clone());
        true
    }
}
