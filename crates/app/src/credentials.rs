//! Credential injection plugged into the data plane and the admin API's reloads.

use portcullis_core::{Injection, Principal};
use portcullis_credentials::Credentials;
use portcullis_proxy::phases::CredentialInjector;
use portcullis_store::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The credentials as the data plane's injector and as a reload hook of the control plane
/// (stored credentials follow the store).
pub struct CredentialPhase(pub Arc<Credentials>);

impl CredentialInjector for CredentialPhase {
    fn intercepts(&self, host: &str) -> bool {
        self.0.intercepts(host)
    }

    fn bound(&self, principal: &Principal, host: &str) -> Option<Arc<str>> {
        self.0.bound(principal, host)
    }

    fn injection(&self, name: &str) -> Result<Injection, String> {
        self.0.injection(name)
    }
}

impl portcullis_admin::ReloadHook for CredentialPhase {
    fn reload<'a>(&'a self, store: &'a Store) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.0.reload_stored(store))
    }
}
