//! W3C trace context in the data plane (`[telemetry]` on): each exchange gets a span id,
//! continues the client's trace when it sent a valid `traceparent` (also inside intercepted
//! tunnels) and, with `propagate`, names the gateway's span as parent upstream. Off, nothing
//! here runs: no header is read and nothing is allocated.

use http::header::HeaderMap;
use http::HeaderValue;
use portcullis_core::{to_hex, TraceContext, TraceParent};

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";

/// Trace flag "sampled": the gateway records every governed request.
const SAMPLED: u8 = 0x01;

/// What the data plane does with trace context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceMode {
    /// Telemetry off: records carry no trace, requests go upstream as sent.
    #[default]
    Off,
    /// A span per exchange; `propagate`: send `traceparent` upstream with the gateway's
    /// span as parent (otherwise the request's own headers pass unchanged).
    On {
        /// Replace `traceparent` upstream with the gateway's span.
        propagate: bool,
    },
}

impl TraceMode {
    /// Whether exchanges get a span.
    pub fn is_on(self) -> bool {
        matches!(self, Self::On { .. })
    }
}

/// The gateway's span of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// The trace (the client's, or a new one).
    pub trace_id: [u8; 16],
    /// The gateway's span.
    pub span_id: [u8; 8],
    /// The client's span, when it sent a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// Trace flags sent upstream (the client's, or sampled for a new trace).
    pub flags: u8,
}

impl SpanIds {
    /// A new trace with a new span.
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(rand::random()),
            span_id: new_span_id(),
            parent: None,
            flags: SAMPLED,
        }
    }

    /// Continues the trace of the request's `traceparent` (keeping this span's id). A missing,
    /// repeated or malformed header leaves the exchange on its own new trace.
    pub fn continue_from(&mut self, headers: &HeaderMap) {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return;
        };
        if let Some(tp) = TraceParent::parse(v.as_bytes()) {
            self.trace_id = tp.trace_id;
            self.parent = Some(tp.span_id);
            self.flags = tp.flags;
        }
    }

    /// The `traceparent` naming this span as parent (sent upstream with `propagate`).
    pub fn header(&self) -> HeaderValue {
        let tp = TraceParent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            flags: self.flags,
        };
        // Lowercase hex and dashes only: always a valid header value.
        HeaderValue::from_str(&tp.to_header()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The record's link to the trace.
    pub fn context(&self) -> TraceContext {
        TraceContext {
            trace_id: to_hex(&self.trace_id),
            span_id: to_hex(&self.span_id),
            parent_span_id: self.parent.as_ref().map(|p| to_hex(p)),
        }
    }
}

/// A new span id (never all zeros).
pub fn new_span_id() -> [u8; 8] {
    let mut s: [u8; 8] = rand::random();
    if s == [0; 8] {
        s[7] = 1;
    }
    s
}

fn nonzero(mut t: [u8; 16]) -> [u8; 16] {
    if t == [0; 16] {
        t[15] = 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn continues_a_valid_client_trace_with_its_own_span() {
        let mut ids = SpanIds::root();
        let own = ids.span_id;
        ids.continue_from(&headers(&[CLIENT]));
        let c = ids.context();
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(ids.span_id, own);
        assert_ne!(c.span_id, "00f067aa0ba902b7");
        // Upstream: same trace, the gateway's span as parent, the client's flags.
        let up = ids.header();
        let want = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00", c.span_id);
        assert_eq!(up.to_str().unwrap(), want);
    }

    #[test]
    fn malformed_or_repeated_headers_start_a_new_trace() {
        for h in [
            headers(&[]),
            headers(&["garbage"]),
            headers(&["00-00000000000000000000000000000000-00f067aa0ba902b7-01"]),
            headers(&[CLIENT, CLIENT]),
        ] {
            let mut ids = SpanIds::root();
            let before = ids;
            ids.continue_from(&h);
            assert_eq!(ids, before);
            assert_eq!(ids.parent, None);
            assert_eq!(ids.flags, SAMPLED);
            assert_eq!(ids.context().trace_id.len(), 32);
            assert_eq!(ids.context().span_id.len(), 16);
        }
    }

    #[test]
    fn new_ids_differ() {
        let a = SpanIds::root();
        let b = SpanIds::root();
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }
}
