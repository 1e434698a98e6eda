//! HTTP header facts every crate must read the same way.

use http::header::{CONNECTION, UPGRADE};
use http::HeaderMap;

/// Whether a request with these headers asks for a protocol upgrade (`Upgrade` plus
/// `Connection: upgrade`): its body is relayed, never buffered.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}
