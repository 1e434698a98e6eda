//! The phases of the data plane, implemented with the domain crates: who an agent is
//! (`identity`), whether it may (`policy`), how much (`limits`), what it may carry
//! (`credentials`), what is kept (`audit`), and where intercepted tunnels' certificates come
//! from (`leaves`). The proxy calls them through its narrow interfaces
//! (`portcullis_proxy::phases`); the binary wires them together.
#![warn(missing_docs)]

pub mod alerts;
pub mod audit;
pub mod bundles;
pub mod credentials;
pub mod identity;
pub mod leaves;
pub mod limits;
pub mod policy;
pub mod pricing;
pub mod settings;
