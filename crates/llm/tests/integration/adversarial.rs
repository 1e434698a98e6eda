//! Random splits (proptest) and hostile input: the tap never panics, keeps
//! bounded state, and never invents usage.

use crate::common::*;
use portcullis_llm::fuzzing::{self, Encoding, RETAINED_BOUND};
use portcullis_llm::{Api, Format, TapLimits, Usage, UsageSource, UsageTap};
use proptest::prelude::*;
use std::io::Write;

fn tap(format: Format, enc: Option<&str>, ct: Option<&str>) -> UsageTap {
    UsageTap::new(format, None, enc, ct)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_splits_give_exact_usage(
        which in 0usize..14,
        enc in 0usize..5,
        sniff in any::<bool>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let fx = fixtures();
        let f = &fx[which % fx.len()];
        let enc = ENCODINGS[enc];
        let body = enc.encode(f.body);
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        let ct = if sniff { None } else { Some(f.content_type) };
        prop_assert_eq!(feed(f, enc, ct, &body, &cuts), f.expected);
    }

    #[test]
    fn fuzz_tap_entry_holds_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::tap(&data);
    }

    #[test]
    fn fuzz_classify_entry_holds_on_random_input(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::classify(&data);
    }

    #[test]
    fn garbage_never_yields_usage(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        fmt in any::<bool>(),
        enc in 0usize..5,
    ) {
        let format = if fmt { Format::Anthropic } else { Format::OpenAi };
        let mut t = tap(format, ENCODINGS[enc].header(), None);
        fuzzing::run_tap(&mut t, &data, &[data.len() / 3]);
        let u = t.finish();
        // Random bytes essentially never form a usage object.
        prop_assert_eq!(u.source, UsageSource::Missing);
    }
}

#[test]
fn nul_bytes_and_invalid_utf8() {
    // NUL and invalid UTF-8 inside strings of other events don't disturb the
    // scanner; a usage object that itself is invalid UTF-8 is dropped.
    let mut body = Vec::new();
    body.extend_from_slice(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\0b\xff\xfe\xc3\"}}]}\n\n",
    );
    body.extend_from_slice(b"data: \0\0\0\n\n");
    body.extend_from_slice(b"data: {\"usage\":{\"prompt_tokens\":\"\xff\",\"x\":1}}\n\n");
    body.extend_from_slice(b"data: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n");
    body.extend_from_slice(b"\0\xff\n\ndata: [DONE]\n\n");
    for at in 0..=body.len() {
        let mut t = tap(Format::OpenAi, None, Some("text/event-stream"));
        fuzzing::run_tap(&mut t, &body, &[at]);
        assert_eq!(t.finish(), Usage::provider(7, 3, 0, 0), "split {at}");
    }
}

#[test]
fn out_of_range_numbers() {
    let cases: &[(&[u8], Usage)] = &[
        // serde_json rejects 1e400: the usage object is dropped.
        (br#"{"usage":{"prompt_tokens":1e400,"completion_tokens":2}}"#, Usage::missing(false)),
        // > u64::MAX, negative, fractional: that field is unknown, others kept.
        (
            br#"{"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":2}}"#,
            Usage::provider(0, 2, 0, 0),
        ),
        (br#"{"usage":{"prompt_tokens":-5,"completion_tokens":2.5}}"#, Usage::missing(false)),
        (
            br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}}"#,
            Usage {
                total_tokens: u64::MAX,
                ..Usage::provider(u64::MAX, u64::MAX, 0, 0)
            },
        ),
    ];
    for (body, want) in cases {
        let mut t = tap(Format::OpenAi, None, Some("application/json"));
        t.feed(body);
        assert_eq!(t.finish(), *want, "{}", String::from_utf8_lossy(body));
    }
    // Anthropic sums saturate.
    let mut t = tap(Format::Anthropic, None, None);
    t.feed(br#"{"type":"message","usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":10,"output_tokens":1}}"#);
    let u = t.finish();
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens, u.total_tokens),
        (u64::MAX, 10, u64::MAX)
    );
}

#[test]
fn huge_event_lines_are_skipped_in_bounded_memory() {
    let mut t = tap(Format::OpenAi, None, Some("text/event-stream"));
    t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"");
    let block = vec![b'x'; 1 << 20];
    for _ in 0..32 {
        t.feed(&block);
        assert!(t.retained_bytes() <= RETAINED_BOUND);
    }
    t.feed(b"\"}}]}\n\n");
    // A 32 MiB usage value (bigger than any capture) is dropped, bounded.
    t.feed(b"data: {\"usage\":{\"pad\":\"");
    for _ in 0..32 {
        t.feed(&block);
        assert!(t.retained_bytes() <= RETAINED_BOUND);
    }
    t.feed(b"\"}}\n\n");
    t.feed(b"data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n");
    let u = t.finish();
    assert_eq!((u.input_tokens, u.output_tokens), (4, 1));
    // The oversized capture is reported.
    assert!(u.truncated);
}

#[test]
fn huge_json_body_finds_usage_at_the_end() {
    // A 24 MiB embeddings body: usage is the last field.
    let mut t = tap(Format::OpenAi, None, Some("application/json"));
    t.feed(b"{\"object\":\"list\",\"data\":[");
    let item = b"{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.0023064255,-0.009327292,0.015797347,-0.0077780345]},";
    let chunk: Vec<u8> = item
        .iter()
        .copied()
        .cycle()
        .take(item.len() * 10_000)
        .collect();
    let mut fed = 0;
    while fed < 24 << 20 {
        t.feed(&chunk);
        fed += chunk.len();
        assert!(t.retained_bytes() <= RETAINED_BOUND);
    }
    t.feed(b"{\"index\":1}],\"model\":\"text-embedding-3-large\",\"usage\":{\"prompt_tokens\":8191,\"total_tokens\":8191}}");
    assert_eq!(t.finish(), Usage::provider(8191, 0, 0, 0));
}

#[test]
fn deep_nesting_does_not_overflow() {
    for ct in ["application/json", "text/event-stream"] {
        let mut t = tap(Format::OpenAi, None, Some(ct));
        if ct == "text/event-stream" {
            t.feed(b"data: ");
        }
        t.feed(b"{\"a\":");
        let open = vec![b'['; 1 << 20];
        t.feed(&open);
        t.feed(&vec![b']'; 1 << 20]);
        t.feed(b"}\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
        assert!(t.retained_bytes() <= RETAINED_BOUND);
        let u = t.finish();
        if ct == "text/event-stream" {
            // The next event still counts.
            assert_eq!(u.input_tokens, 1);
        } else {
            assert_eq!(u.source, UsageSource::Missing);
        }
    }
    // Deep nesting inside the captured usage value: bounded by the capture
    // size and serde_json's recursion limit.
    let mut t = tap(Format::OpenAi, None, Some("application/json"));
    let deep = format!(
        "{{\"usage\":{{\"prompt_tokens\":1,\"x\":{}{}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    t.feed(deep.as_bytes());
    assert_eq!(t.finish().source, UsageSource::Missing);
}

#[test]
fn decompression_bomb_stops_at_the_limit() {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b"data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n")
        .unwrap();
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..8 {
        e.write_all(&zeros).unwrap();
    }
    e.write_all(
        b"\ndata: {\"usage\":{\"prompt_tokens\":99,\"completion_tokens\":99}}\n\ndata: [DONE]\n\n",
    )
    .unwrap();
    let gz = e.finish().unwrap();
    assert!(gz.len() < 64 * 1024);
    let limits = TapLimits {
        max_decoded_bytes: 1 << 20,
    };
    let mut t = UsageTap::with_limits(
        Format::OpenAi,
        Some(Api::ChatCompletions),
        Some("gzip"),
        Some("text/event-stream"),
        limits,
    );
    for c in gz.chunks(4096) {
        t.feed(c);
    }
    let u = t.finish();
    assert_eq!((u.input_tokens, u.output_tokens, u.truncated), (2, 3, true));
    // Within the default limit the whole stream is read.
    let mut t = UsageTap::new(
        Format::OpenAi,
        None,
        Some("gzip"),
        Some("text/event-stream"),
    );
    t.feed(&gz);
    assert_eq!(t.finish(), Usage::provider(99, 99, 0, 0));
}

#[test]
fn corrupt_and_truncated_compression() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "anthropic_stream.sse")
        .unwrap();
    for enc in [
        Encoding::Gzip,
        Encoding::Zlib,
        Encoding::RawDeflate,
        Encoding::Brotli,
    ] {
        let e = enc.encode(f.body);
        // Truncated: what was decoded is kept, marked truncated.
        let u = feed(&f, enc, Some(f.content_type), &e[..e.len() - 8], &[]);
        assert!(u.truncated, "{enc:?}");
        assert!(u.input_tokens == 0 || u.input_tokens == 12760, "{enc:?}");
        // Corrupted in the middle: never panics, never over-reports.
        let mut bad = e.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 8] {
            *b ^= 0x5a;
        }
        let u = feed(&f, enc, Some(f.content_type), &bad, &[mid]);
        assert!(u.input_tokens <= 12760 && u.output_tokens <= 156, "{enc:?}");
        // Trailing bytes after the compressed stream are ignored.
        let mut trailing = e.clone();
        trailing.extend_from_slice(b"garbage after the end");
        let u = feed(&f, enc, Some(f.content_type), &trailing, &[]);
        if enc != Encoding::RawDeflate && enc != Encoding::Brotli {
            assert_eq!(u, f.expected, "{enc:?}");
        } else {
            assert_eq!((u.input_tokens, u.output_tokens), (12760, 156), "{enc:?}");
        }
    }
    // Plain text declared as gzip: missing, truncated.
    let u = feed(&f, Encoding::Gzip, Some(f.content_type), f.body, &[]);
    assert_eq!(u, Usage::missing(true));
}

#[test]
fn empty_and_non_usage_bodies_are_missing() {
    assert_eq!(
        tap(Format::OpenAi, None, None).finish(),
        Usage::missing(true)
    );
    let mut t = tap(Format::OpenAi, None, Some("application/json"));
    t.feed(br#"{"error":{"message":"Rate limit","type":"requests","code":"rate_limit_exceeded"}}"#);
    assert_eq!(t.finish(), Usage::missing(false));
    let mut t = tap(Format::Anthropic, None, Some("application/json"));
    t.feed(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
    assert_eq!(t.finish(), Usage::missing(false));
    let mut t = tap(Format::OpenAi, None, Some("text/html"));
    t.feed(b"<html><body>502 Bad Gateway</body></html>");
    assert_eq!(t.finish().source, UsageSource::Missing);
}

#[test]
fn api_overrides_format() {
    // An OpenAI-compatible server's /v1/messages speaks Anthropic's format.
    let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let mut t = UsageTap::new(
        Format::OpenAi,
        Some(Api::Messages),
        None,
        Some("text/event-stream"),
    );
    t.feed(body);
    assert_eq!(t.finish(), Usage::provider(3, 9, 0, 0));
}
