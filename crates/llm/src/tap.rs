//! The usage tap: an incremental parser over a copy of the response body.

use crate::extract::Accumulator;
use crate::format::{Api, Format};
use crate::scan::Scanner;
use crate::sse::{sniff, SseParser};
use brotli::DecompressorWriter;
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use portcullis_core::Usage;
use std::io::{self, Write};

/// Default cap on bytes decoded from a compressed body (decompression bombs
/// stop here; the usage seen so far is kept and marked truncated).
pub const DEFAULT_MAX_DECODED: u64 = 256 * 1024 * 1024;
/// Leading spaces beyond this make an SSE field name unrecognisable anyway.
const MAX_HELD_SPACES: u8 = 16;
/// Brotli output buffer size.
const BROTLI_BUF: usize = 16 * 1024;

/// Bounds of one tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapLimits {
    /// Most bytes decoded from a compressed body; identity bodies are parsed
    /// whole (their cost is the bytes the proxy forwards anyway).
    pub max_decoded_bytes: u64,
}

impl Default for TapLimits {
    fn default() -> Self {
        Self {
            max_decoded_bytes: DEFAULT_MAX_DECODED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Decide from the first non-whitespace byte.
    Sniff,
    Json,
    Sse,
}

/// The decoded-body consumer: JSON or SSE parsing into the accumulator.
#[derive(Debug)]
struct Sink {
    mode: Mode,
    scan: Scanner,
    sse: SseParser,
    acc: Accumulator,
    decoded: u64,
    /// `None` for identity bodies.
    limit: Option<u64>,
    /// The decoded-bytes limit was hit.
    limited: bool,
    /// Leading whitespace seen while sniffing, in the only form that can
    /// matter to an SSE parser: the last line terminator and the spaces after it.
    ws_newline: Option<u8>,
    ws_spaces: u8,
}

impl Sink {
    fn consume(&mut self, mut buf: &[u8]) {
        if self.mode == Mode::Sniff {
            match sniff(buf) {
                None => {
                    self.hold_whitespace(buf);
                    return;
                }
                Some(true) => {
                    self.mode = Mode::Sse;
                    self.replay_whitespace();
                }
                Some(false) => self.mode = Mode::Json,
            }
        }
        if let Some(limit) = self.limit {
            let room = limit.saturating_sub(self.decoded);
            if (buf.len() as u64) > room {
                self.limited = true;
                // `room < buf.len()` so it fits in usize.
                buf = &buf[..usize::try_from(room).unwrap_or(0)];
            }
        }
        self.decoded = self.decoded.saturating_add(buf.len() as u64);
        match self.mode {
            Mode::Json => self.scan.feed(buf),
            Mode::Sse => self.sse.feed(buf, &mut self.scan, &mut self.acc),
            Mode::Sniff => {}
        }
    }

    /// Whitespace before the first significant byte, whatever the chunking,
    /// reaches the SSE parser with the same effect: everything before the
    /// last line end only makes empty or nameless lines (no data).
    fn hold_whitespace(&mut self, buf: &[u8]) {
        for &b in buf {
            if matches!(b, b'\r' | b'\n') {
                if self.ws_newline == Some(b'\r') && b == b'\n' && self.ws_spaces == 0 {
                    // `\r\n` is one line end; keep `\r` so a later `\n` pairs alike.
                    self.ws_newline = Some(b'\n');
                } else {
                    self.ws_newline = Some(b);
                }
                self.ws_spaces = 0;
            } else {
                self.ws_spaces = self.ws_spaces.saturating_add(1).min(MAX_HELD_SPACES);
            }
        }
    }

    fn replay_whitespace(&mut self) {
        if let Some(nl) = self.ws_newline {
            self.sse.feed(&[nl], &mut self.scan, &mut self.acc);
        }
        let spaces = [b' '; MAX_HELD_SPACES as usize];
        self.sse.feed(
            &spaces[..usize::from(self.ws_spaces)],
            &mut self.scan,
            &mut self.acc,
        );
    }

    fn finish(&mut self) {
        match self.mode {
            Mode::Json => {
                self.scan.finish();
                // A cut-short body still yields what was captured.
                self.acc.document(&self.scan, None, false);
                if self.scan.complete() {
                    self.acc.terminal = true;
                }
            }
            Mode::Sse => self.sse.finish(&mut self.scan, &mut self.acc),
            Mode::Sniff => {}
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.limited {
            return Err(io::Error::other("decoded size limit"));
        }
        self.consume(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Content-Encoding pipeline in front of the sink.
enum Decoder {
    Identity(Sink),
    Gzip(Box<GzDecoder<Sink>>),
    Zlib(Box<ZlibDecoder<Sink>>),
    Raw(Box<DeflateDecoder<Sink>>),
    /// `deflate` before its first two bytes tell zlib from raw.
    DeflateSniff(Sink, Option<u8>),
    Brotli(Box<DecompressorWriter<Sink>>),
    /// An encoding we cannot decode: nothing is parsed.
    Unsupported(Sink),
}

impl Decoder {
    fn sink(&self) -> &Sink {
        match self {
            Self::Identity(s) | Self::DeflateSniff(s, _) | Self::Unsupported(s) => s,
            Self::Gzip(d) => d.get_ref(),
            Self::Zlib(d) => d.get_ref(),
            Self::Raw(d) => d.get_ref(),
            Self::Brotli(d) => d.get_ref(),
        }
    }

    fn sink_mut(&mut self) -> &mut Sink {
        match self {
            Self::Identity(s) | Self::DeflateSniff(s, _) | Self::Unsupported(s) => s,
            Self::Gzip(d) => d.get_mut(),
            Self::Zlib(d) => d.get_mut(),
            Self::Raw(d) => d.get_mut(),
            Self::Brotli(d) => d.get_mut(),
        }
    }

    fn writer(&mut self) -> Option<&mut dyn Write> {
        match self {
            Self::Gzip(d) => Some(&mut **d),
            Self::Zlib(d) => Some(&mut **d),
            Self::Raw(d) => Some(&mut **d),
            Self::Brotli(d) => Some(&mut **d),
            Self::Identity(_) | Self::DeflateSniff(..) | Self::Unsupported(_) => None,
        }
    }
}

/// Incremental usage extractor over a copy of a response body.
///
/// The data plane creates one per response of a classified LLM request,
/// calls [`feed`](UsageTap::feed) with a copy of each body frame as it is
/// forwarded (frames may split anywhere), and [`finish`](UsageTap::finish)
/// when the body ends or the client aborts. The tap never fails: malformed,
/// truncated or oversized input just yields less usage (`source = missing`
/// or `truncated = true`). Memory is bounded whatever the body size: a few
/// KiB of parser state, at most one capture of [`MAX_CAPTURE`](crate::MAX_CAPTURE)
/// bytes, plus the decoder window (32 KiB for gzip/deflate, up to 16 MiB for
/// brotli as the stream's window demands).
pub struct UsageTap {
    decoder: Decoder,
    /// Decoding failed or the encoding is unsupported.
    broken: bool,
}

impl std::fmt::Debug for UsageTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageTap")
            .field("sink", self.decoder.sink())
            .field("broken", &self.broken)
            .finish()
    }
}

impl UsageTap {
    /// A tap for a response in `format` (the API, when known, decides the
    /// format: `messages` is Anthropic's, the others OpenAI's), with the
    /// response's `Content-Encoding` and `Content-Type` headers.
    pub fn new(
        format: Format,
        api: Option<Api>,
        content_encoding: Option<&str>,
        content_type: Option<&str>,
    ) -> Self {
        Self::with_limits(
            format,
            api,
            content_encoding,
            content_type,
            TapLimits::default(),
        )
    }

    /// [`UsageTap::new`] with explicit bounds.
    pub fn with_limits(
        format: Format,
        api: Option<Api>,
        content_encoding: Option<&str>,
        content_type: Option<&str>,
        limits: TapLimits,
    ) -> Self {
        let format = api.map_or(format, Api::format);
        let mode = match content_type.map(mime) {
            Some(m) if m.eq_ignore_ascii_case("text/event-stream") => Mode::Sse,
            Some(m) if m.eq_ignore_ascii_case("application/json") => Mode::Json,
            _ => Mode::Sniff,
        };
        let coding = coding(content_encoding);
        let mut sink = Sink {
            mode,
            scan: Scanner::default(),
            sse: SseParser::default(),
            acc: Accumulator::new(format),
            decoded: 0,
            limit: Some(limits.max_decoded_bytes),
            limited: false,
            ws_newline: None,
            ws_spaces: 0,
        };
        let (decoder, broken) = match coding {
            Coding::Identity => {
                sink.limit = None;
                (Decoder::Identity(sink), false)
            }
            Coding::Gzip => (Decoder::Gzip(Box::new(GzDecoder::new(sink))), false),
            Coding::Deflate => (Decoder::DeflateSniff(sink, None), false),
            Coding::Brotli => (
                Decoder::Brotli(Box::new(DecompressorWriter::new(sink, BROTLI_BUF))),
                false,
            ),
            Coding::Unsupported => (Decoder::Unsupported(sink), true),
        };
        Self { decoder, broken }
    }

    /// Consumes a copy of the next body frame. Never fails; never panics.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.broken || chunk.is_empty() {
            return;
        }
        let mut rest = chunk;
        if let Decoder::DeflateSniff(_, first) = &mut self.decoder {
            let b0 = match *first {
                Some(b) => b,
                None => {
                    let b = rest[0];
                    rest = &rest[1..];
                    if rest.is_empty() {
                        *first = Some(b);
                        return;
                    }
                    b
                }
            };
            let b1 = rest[0];
            let zlib =
                b0 & 0x0f == 8 && b0 >> 4 <= 7 && (u16::from(b0) << 8 | u16::from(b1)) % 31 == 0;
            let vacant = Decoder::Identity(vacant_sink());
            let Decoder::DeflateSniff(sink, _) = std::mem::replace(&mut self.decoder, vacant)
            else {
                return;
            };
            self.decoder = if zlib {
                Decoder::Zlib(Box::new(ZlibDecoder::new(sink)))
            } else {
                Decoder::Raw(Box::new(DeflateDecoder::new(sink)))
            };
            self.write_decoded(&[b0]);
        }
        match &mut self.decoder {
            Decoder::Identity(sink) => sink.consume(rest),
            Decoder::Unsupported(_) | Decoder::DeflateSniff(..) => {}
            _ => {
                self.write_decoded(rest);
                self.flush_decoded();
            }
        }
    }

    /// Pushes what the decompressor holds back through to the parser, so every fed byte
    /// is parsed now: [`terminal_seen`](UsageTap::terminal_seen) must not lag behind the
    /// frames the client already has.
    fn flush_decoded(&mut self) {
        if self.broken {
            return;
        }
        if let Some(w) = self.decoder.writer() {
            if w.flush().is_err() {
                self.broken = true;
            }
        }
    }

    /// Whether the bytes fed so far hold the response's end marker: the `data: [DONE]`
    /// event of an OpenAI chat stream, `message_stop` of an Anthropic stream,
    /// `response.completed | response.incomplete | response.failed` of a Responses API
    /// stream, an `error` event that ends a stream, or the end of a JSON document.
    ///
    /// An SSE event counts once it is dispatched (its blank line was fed), as a client's
    /// SSE parser sees it; compressed bodies are decoded as they are fed, so this never
    /// lags behind the frames fed. A response whose marker was delivered is complete even
    /// if the client closes before the origin does. Pure: feeding is the only input.
    pub fn terminal_seen(&self) -> bool {
        let sink = self.decoder.sink();
        match sink.mode {
            Mode::Sse => sink.acc.terminal,
            Mode::Json => sink.scan.complete(),
            Mode::Sniff => false,
        }
    }

    fn write_decoded(&mut self, mut rest: &[u8]) {
        let Some(w) = self.decoder.writer() else {
            return;
        };
        while !rest.is_empty() {
            match w.write(rest) {
                // The compressed stream ended: trailing bytes are ignored.
                Ok(0) => break,
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
    }

    /// Ends the body (complete or aborted) and returns the usage seen.
    pub fn finish(mut self) -> Usage {
        let flushed = match &mut self.decoder {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Zlib(d) => d.try_finish(),
            Decoder::Raw(d) => d.try_finish(),
            Decoder::Brotli(d) => d.close(),
            Decoder::Identity(_) | Decoder::Unsupported(_) => Ok(()),
            Decoder::DeflateSniff(_, first) => {
                if first.is_some() {
                    Err(io::Error::other("truncated deflate"))
                } else {
                    Ok(())
                }
            }
        };
        if !self.broken && flushed.is_err() {
            self.broken = true;
        }
        let broken = self.broken;
        let sink = self.decoder.sink_mut();
        sink.finish();
        let truncated = broken
            || sink.limited
            || sink.scan.overflowed
            || !sink.acc.terminal
            || sink.acc.errored;
        match sink.acc.usage() {
            Some(mut u) => {
                u.truncated = truncated;
                u
            }
            None => Usage::missing(truncated),
        }
    }

    /// Bytes held by the parser state (excluding the decompressor's window),
    /// for bounded-memory checks in tests and fuzzing.
    pub fn retained_bytes(&self) -> usize {
        self.decoder.sink().scan.retained()
    }
}

fn vacant_sink() -> Sink {
    Sink {
        mode: Mode::Sniff,
        scan: Scanner::default(),
        sse: SseParser::default(),
        acc: Accumulator::new(Format::OpenAi),
        decoded: 0,
        limit: None,
        limited: false,
        ws_newline: None,
        ws_spaces: 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Unsupported,
}

/// One supported coding (`identity` entries ignored); stacked codings are
/// not supported (no LLM provider sends them).
fn coding(header: Option<&str>) -> Coding {
    let Some(h) = header else {
        return Coding::Identity;
    };
    let mut found = Coding::Identity;
    for c in h.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let this = if c.eq_ignore_ascii_case("identity") {
            continue;
        } else if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") {
            Coding::Gzip
        } else if c.eq_ignore_ascii_case("deflate") {
            Coding::Deflate
        } else if c.eq_ignore_ascii_case("br") {
            Coding::Brotli
        } else {
            return Coding::Unsupported;
        };
        if found != Coding::Identity {
            return Coding::Unsupported;
        }
        found = this;
    }
    found
}

fn mime(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_and_classifier_can_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<UsageTap>();
        send_sync::<crate::Classifier>();
        send_sync::<crate::Classification>();
    }

    #[test]
    fn codings() {
        assert_eq!(coding(None), Coding::Identity);
        assert_eq!(coding(Some("identity")), Coding::Identity);
        assert_eq!(coding(Some(" GZIP ")), Coding::Gzip);
        assert_eq!(coding(Some("x-gzip")), Coding::Gzip);
        assert_eq!(coding(Some("identity, br")), Coding::Brotli);
        assert_eq!(coding(Some("Deflate")), Coding::Deflate);
        assert_eq!(coding(Some("gzip, br")), Coding::Unsupported);
        assert_eq!(coding(Some("zstd")), Coding::Unsupported);
    }

    #[test]
    fn unsupported_encoding_is_missing_and_truncated() {
        let mut t = UsageTap::new(Format::OpenAi, None, Some("zstd"), Some("application/json"));
        t.feed(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#);
        assert_eq!(t.finish(), Usage::missing(true));
    }
}
