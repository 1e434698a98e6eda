//! `UsageTap::terminal_seen`: the end marker of a response counts once the client could
//! have parsed it (an SSE event at its blank line, a JSON document at its last byte),
//! wherever frames split, whatever the encoding, and never earlier.

use crate::common::*;
use portcullis_llm::fuzzing::Encoding;
use portcullis_llm::{Api, Format, UsageTap};

/// Smallest prefix length after which a parser has the whole terminal marker: the byte
/// that completes the dispatching blank line (SSE) or closes the document (JSON).
fn marker_end(body: &[u8], sse: bool) -> usize {
    if !sse {
        return body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
    }
    // Every fixture ends with its terminal event and the blank line that dispatches it.
    // The blank line is dispatched by its first line-end byte: after `\r\n` the blank line
    // is `\r` (its `\n` adds nothing); after `\n` or `\r`, the last byte.
    if body.ends_with(b"\r\n\r\n") {
        body.len() - 1
    } else {
        body.len()
    }
}

#[test]
fn every_fixture_every_split_identity() {
    for f in fixtures() {
        let sse = f.content_type == "text/event-stream";
        for (le, body) in line_variants(&f) {
            let end = marker_end(&body, sse);
            for ct in [Some(f.content_type), None] {
                for at in 0..=body.len() {
                    let mut t = tap_for(&f, Encoding::Identity, ct);
                    t.feed(&body[..at]);
                    assert_eq!(
                        t.terminal_seen(),
                        at >= end,
                        "{} {le} ct={ct:?}: prefix {at} (marker ends at {end})",
                        f.name
                    );
                    t.feed(&body[at..]);
                    assert!(t.terminal_seen(), "{} {le} ct={ct:?} split {at}", f.name);
                }
            }
        }
    }
}

#[test]
fn byte_by_byte_the_marker_appears_exactly_once_complete() {
    for f in fixtures() {
        let sse = f.content_type == "text/event-stream";
        for (le, body) in line_variants(&f) {
            let end = marker_end(&body, sse);
            let mut t = tap_for(&f, Encoding::Identity, Some(f.content_type));
            for (i, b) in body.iter().enumerate() {
                t.feed(std::slice::from_ref(b));
                assert_eq!(t.terminal_seen(), i + 1 >= end, "{} {le} byte {i}", f.name);
            }
        }
    }
}

#[test]
fn compressed_bodies_are_parsed_as_fed_not_at_finish() {
    // A decompressor holds output back until asked; the tap flushes it per frame, so the
    // marker is seen as soon as its compressed bytes are fed, before `finish`.
    for f in fixtures() {
        for enc in &ENCODINGS[1..] {
            let encoded = enc.encode(f.body);
            for at in 0..=encoded.len() {
                let mut t = tap_for(&f, *enc, Some(f.content_type));
                t.feed(&encoded[..at]);
                if at < encoded.len() / 2 {
                    assert!(!t.terminal_seen(), "{} {enc:?} prefix {at}", f.name);
                }
                t.feed(&encoded[at..]);
                assert!(t.terminal_seen(), "{} {enc:?} split {at}", f.name);
                assert_eq!(t.finish(), f.expected, "{} {enc:?} split {at}", f.name);
            }
        }
    }
}

fn seen(format: Format, api: Option<Api>, ct: Option<&str>, body: &[u8]) -> bool {
    let mut t = UsageTap::new(format, api, None, ct);
    t.feed(body);
    t.terminal_seen()
}

#[test]
fn markers_of_another_format_or_inside_strings_do_not_count() {
    use Api::*;
    use Format::*;
    let sse = Some("text/event-stream");
    /// (format, API, body, marker seen, what the case is).
    type Case = (Format, Option<Api>, &'static [u8], bool, &'static str);
    let cases: &[Case] = &[
        (OpenAi, Some(ChatCompletions), b"data: [DONE]\n\n", true, "done"),
        (OpenAi, Some(ChatCompletions), b"data:[DONE]\r\n\r\n", true, "done, no space, crlf"),
        (OpenAi, Some(ChatCompletions), b"data: [DONE]\n", false, "no blank line yet"),
        (OpenAi, Some(ChatCompletions), b"data: [DONE]", false, "no line end yet"),
        (OpenAi, Some(ChatCompletions), b"data: [DONE] trailing\n\n", false, "not the sentinel"),
        (OpenAi, Some(ChatCompletions), b": data: [DONE]\n\n", false, "a comment"),
        (OpenAi, Some(ChatCompletions), b"event: x\nid: [DONE]\n\n", false, "another field"),
        (
            OpenAi,
            Some(ChatCompletions),
            b"data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\\n\\n\"}}]}\n\n",
            false,
            "sentinel inside content",
        ),
        (
            OpenAi,
            Some(ChatCompletions),
            b"data: {\"type\":\"message_stop\"}\n\n",
            false,
            "anthropic marker in an openai stream",
        ),
        (
            OpenAi,
            Some(Responses),
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n",
            true,
            "responses completed",
        ),
        (
            OpenAi,
            Some(Responses),
            b"data: {\"type\":\"response.incomplete\",\"response\":{}}\n\n",
            true,
            "responses incomplete",
        ),
        (
            OpenAi,
            Some(Responses),
            b"data: {\"type\":\"response.failed\",\"response\":{}}\n\n",
            true,
            "responses failed",
        ),
        (
            OpenAi,
            Some(Responses),
            b"data: {\"type\":\"response.output_text.delta\",\"delta\":\"response.completed\"}\n\n",
            false,
            "marker name inside a delta",
        ),
        (
            OpenAi,
            Some(Responses),
            b"event: response.completed\ndata: {\"type\":\"response.created\"}\n\n",
            false,
            "the JSON type wins over the event name",
        ),
        (
            Anthropic,
            Some(Messages),
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            true,
            "message_stop",
        ),
        (
            Anthropic,
            Some(Messages),
            b"event: message_stop\ndata: {}\n\n",
            true,
            "message_stop by event name",
        ),
        (
            Anthropic,
            Some(Messages),
            b"data: [DONE]\n\n",
            false,
            "openai sentinel in an anthropic stream",
        ),
        (
            Anthropic,
            Some(Messages),
            b"event: message_stop\ndata: {\"type\":\"message_stop\"\n\n",
            false,
            "malformed marker",
        ),
        (
            Anthropic,
            Some(Messages),
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
            true,
            "an error event ends the stream",
        ),
    ];
    for &(format, api, body, want, what) in cases {
        assert_eq!(seen(format, api, sse, body), want, "{what}");
        // Sniffed (no content type) the same.
        assert_eq!(seen(format, api, None, body), want, "{what} (sniffed)");
    }
    // JSON: the document must be complete and well formed.
    let json = Some("application/json");
    assert!(seen(OpenAi, None, json, b"{\"usage\":null}"));
    assert!(seen(OpenAi, None, json, b" {\"a\":[1,2]} \n"));
    assert!(!seen(OpenAi, None, json, b"{\"usage\":null"));
    assert!(!seen(OpenAi, None, json, b"{\"a\":1}}"));
    assert!(!seen(OpenAi, None, json, b""));
    // An encoding the tap cannot decode never claims a marker.
    let mut t = UsageTap::new(OpenAi, None, Some("zstd"), Some("text/event-stream"));
    t.feed(b"data: [DONE]\n\n");
    assert!(!t.terminal_seen());
}

#[test]
fn a_marker_split_across_frames_at_every_byte() {
    let streams: &[(Format, Api, &[u8])] = &[
        (
            Format::OpenAi,
            Api::ChatCompletions,
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\n\r\ndata: [DONE]\r\n\r\n",
        ),
        (
            Format::Anthropic,
            Api::Messages,
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
        (
            Format::OpenAi,
            Api::Responses,
            b"event: response.completed\rdata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}\r\r",
        ),
    ];
    for &(format, api, body) in streams {
        let end = marker_end(body, true);
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let mut t = UsageTap::new(format, Some(api), None, Some("text/event-stream"));
                for (from, to) in [(0, a), (a, b), (b, body.len())] {
                    t.feed(&body[from..to]);
                    assert_eq!(t.terminal_seen(), to >= end, "{api} frames {a}/{b} at {to}");
                }
                let u = t.finish();
                assert_eq!((u.input_tokens, u.output_tokens), (3, 4), "{api}");
                assert!(!u.truncated, "{api} frames {a}/{b}");
            }
        }
    }
}
