//! LLM awareness for Portcullis, sans-IO: no sockets, no runtime.
//!
//! - [`Classifier`]: which provider a request goes to (by host and port, from
//!   the built-in table plus `[[llm.providers]]`), which API it calls (by
//!   method and path), and the governance fields of its JSON body (`model`,
//!   `stream`, max tokens, tool names). The result, a [`Classification`],
//!   feeds the policy input `llm` and the audit record.
//! - [`UsageTap`]: an incremental parser fed a copy of each response frame
//!   that extracts the provider-reported token [`Usage`] from JSON or SSE
//!   bodies (gzip, deflate and br decoded on the copy) in bounded memory.
//!   It never touches the bytes the client receives.
#![warn(missing_docs)]

mod classify;
mod extract;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod provider;
mod scan;
mod sse;
mod tap;

pub use classify::{Classification, Classifier, Note, RequestHead, MAX_TOOLS, MAX_TOOL_NAME};
pub use format::{error_envelope, Api, Format};
pub use portcullis_core::{Usage, UsageSource};
pub use provider::{Provider, ProviderEntry, ProviderError, Providers, BUILTIN_PROVIDERS};
pub use scan::MAX_CAPTURE;
pub use tap::{TapLimits, UsageTap, DEFAULT_MAX_DECODED};
