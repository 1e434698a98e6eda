//! Fuzz entry points (used by the `cargo fuzz` targets in `fuzz/` and by the
//! crate's own tests). Each one panics only when an invariant is broken.

use crate::classify::{Classifier, RequestHead};
use crate::format::{Api, Format};
use crate::provider::ProviderEntry;
use crate::scan::MAX_CAPTURE;
use crate::tap::{TapLimits, UsageTap};
use portcullis_core::{Usage, UsageSource};
use std::io::Write;

/// Parser state allowed per tap, whatever the input.
pub const RETAINED_BOUND: usize = MAX_CAPTURE + 1024;

const FORMATS: [Format; 2] = [Format::OpenAi, Format::Anthropic];
const APIS: [Option<Api>; 5] = [
    None,
    Some(Api::ChatCompletions),
    Some(Api::Responses),
    Some(Api::Messages),
    Some(Api::Embeddings),
];
const TYPES: [Option<&str>; 4] = [
    None,
    Some("text/event-stream"),
    Some("application/json"),
    Some("text/plain"),
];

/// Encodings the tap fuzzer applies to its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No encoding.
    Identity,
    /// gzip.
    Gzip,
    /// zlib-wrapped deflate.
    Zlib,
    /// raw deflate (sent as `deflate` by some servers).
    RawDeflate,
    /// brotli.
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` header value.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Zlib | Self::RawDeflate => Some("deflate"),
            Self::Brotli => Some("br"),
        }
    }

    /// Compresses `data` (infallible for in-memory writers).
    pub fn encode(self, data: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::fast();
        let out: std::io::Result<Vec<u8>> = match self {
            Self::Identity => Ok(data.to_vec()),
            Self::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(data).and_then(|()| e.finish())
            }
            Self::Zlib => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).and_then(|()| e.finish())
            }
            Self::RawDeflate => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
                e.write_all(data).and_then(|()| e.finish())
            }
            Self::Brotli => {
                let mut out = Vec::new();
                {
                    let mut e = brotli::CompressorWriter::new(&mut out, 4096, 2, 18);
                    let _ = e.write_all(data);
                }
                Ok(out)
            }
        };
        out.unwrap_or_default()
    }
}

const ENCODINGS: [Encoding; 5] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::Zlib,
    Encoding::RawDeflate,
    Encoding::Brotli,
];

/// Feeds `body` in chunks cut at `cuts` (offsets, any order, clamped).
pub fn run_tap(tap: &mut UsageTap, body: &[u8], cuts: &[usize]) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
    cuts.sort_unstable();
    let mut last = 0;
    for c in cuts {
        tap.feed(&body[last..c]);
        last = c;
        assert!(
            tap.retained_bytes() <= RETAINED_BOUND,
            "tap state over bound"
        );
    }
    tap.feed(&body[last..]);
    assert!(
        tap.retained_bytes() <= RETAINED_BOUND,
        "tap state over bound"
    );
}

fn check_usage(u: &Usage) {
    match u.source {
        UsageSource::Missing => assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (0, 0, 0),
            "missing usage must not carry counts"
        ),
        UsageSource::Provider => assert_eq!(
            u.total_tokens,
            u.input_tokens.saturating_add(u.output_tokens),
            "total must be input + output"
        ),
    }
}

/// Tap fuzz target. Byte 0 picks format, API, content type and encoding;
/// byte 1 how many cuts; then 2 bytes per cut; the rest is the body. Checks:
/// no panic, bounded parser state, sane usage, and — for bodies the harness
/// encoded itself — the same usage whatever the chunking. With the top bit of
/// byte 1 set, the payload is fed raw under the chosen encoding (garbage for
/// the decoder).
pub fn tap(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let sel = usize::from(data[0]);
    let format = FORMATS[sel % 2];
    let api = APIS[(sel / 2) % APIS.len()];
    let ct = TYPES[(sel / 10) % TYPES.len()];
    let enc = ENCODINGS[(sel / 40) % ENCODINGS.len()];
    let raw = data[1] & 0x80 != 0;
    let ncuts = usize::from(data[1] & 0x3f);
    let rest = &data[2..];
    let (cut_bytes, payload) = rest.split_at((ncuts * 2).min(rest.len()));
    let body = if raw {
        payload.to_vec()
    } else {
        enc.encode(payload)
    };
    let cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| {
            let v = usize::from(c[0]) << 8 | usize::from(*c.get(1).unwrap_or(&0));
            if body.is_empty() {
                0
            } else {
                v % (body.len() + 1)
            }
        })
        .collect();
    let limits = TapLimits {
        max_decoded_bytes: 1 << 20,
    };
    let mut whole = UsageTap::with_limits(format, api, enc.header(), ct, limits);
    run_tap(&mut whole, &body, &[]);
    let whole_terminal = whole.terminal_seen();
    let whole = whole.finish();
    check_usage(&whole);
    let mut split = UsageTap::with_limits(format, api, enc.header(), ct, limits);
    run_tap(&mut split, &body, &cuts);
    let split_terminal = split.terminal_seen();
    let split = split.finish();
    check_usage(&split);
    if !raw || enc == Encoding::Identity {
        assert_eq!(whole, split, "usage depends on chunking");
        assert_eq!(
            whole_terminal, split_terminal,
            "terminal marker depends on chunking"
        );
    }
}

/// Classifier fuzz target. The input is split on `\n` into method, host,
/// port, path, content type, then the body. Checks: no panic, classification
/// serializes and round-trips, bounded tool list.
pub fn classify(data: &[u8]) {
    let mut parts = data.splitn(6, |&b| b == b'\n');
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (method, host, port, path, ct) = (next(), next(), next(), next(), next());
    let body_start = data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(4)
        .map_or(data.len(), |(i, _)| i + 1);
    let body = &data[body_start..];
    let classifier = Classifier::new(&[ProviderEntry {
        name: "fuzz".into(),
        host: if host.is_empty() {
            "h".into()
        } else {
            host.clone()
        },
        format: None,
    }])
    .unwrap_or_default();
    let port = port.trim().parse::<u16>().unwrap_or(443);
    for host in [host.as_str(), "api.openai.com", "api.anthropic.com"] {
        let head = RequestHead {
            method: &method,
            host,
            port,
            path: &path,
            content_type: if ct.is_empty() { None } else { Some(&ct) },
        };
        let _ = classifier.wants_body(&head);
        for max in [0, body.len() / 2, body.len()] {
            if let Some(c) = classifier.classify(&head, Some(body), max) {
                assert!(c.tools.len() <= crate::MAX_TOOLS);
                assert_eq!(c.body_inspected, c.note.is_none());
                let v = serde_json::to_vec(&c).unwrap_or_default();
                let back: crate::Classification =
                    serde_json::from_slice(&v).unwrap_or_else(|_| panic!("round trip"));
                assert_eq!(back, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_inputs_hold_invariants() {
        let sse =
            b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        for sel in [0u8, 10, 40, 80, 120, 160, 21, 255] {
            for ctl in [0u8, 3, 0x83] {
                let mut d = vec![sel, ctl, 0, 5, 1, 0, 0, 9];
                d.extend_from_slice(sse);
                tap(&d);
            }
        }
        classify(
            b"POST\napi.openai.com\n443\n/v1/chat/completions\napplication/json\n{\"model\":\"m\"}",
        );
        classify(b"\n\n\n\n\n");
        classify(b"");
    }
}
