//! Shared fixture table for the integration tests.
#![allow(dead_code, unreachable_pub)]

use portcullis_llm::fuzzing::Encoding;
use portcullis_llm::{Api, Format, Usage, UsageTap};

/// One recorded-shape response body and the usage it must yield.
pub struct Fixture {
    pub name: &'static str,
    pub body: &'static [u8],
    pub format: Format,
    pub api: Option<Api>,
    pub content_type: &'static str,
    pub expected: Usage,
}

const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

fn trunc(mut u: Usage) -> Usage {
    u.truncated = true;
    u
}

pub fn fixtures() -> Vec<Fixture> {
    macro_rules! f {
        ($name:literal, $format:expr, $api:expr, $ct:expr, $u:expr) => {
            Fixture {
                name: $name,
                body: include_bytes!(concat!("../../fixtures/", $name)),
                format: $format,
                api: $api,
                content_type: $ct,
                expected: $u,
            }
        };
    }
    use Api::*;
    use Format::*;
    vec![
        f!(
            "openai_chat.json",
            OpenAi,
            Some(ChatCompletions),
            JSON,
            Usage::provider(1117, 46, 1024, 12)
        ),
        f!(
            "openai_chat_stream.sse",
            OpenAi,
            Some(ChatCompletions),
            SSE,
            Usage::provider(19, 10, 0, 0)
        ),
        f!(
            "openai_chat_stream_no_usage.sse",
            OpenAi,
            Some(ChatCompletions),
            SSE,
            Usage::missing(false)
        ),
        f!(
            "openai_chat_stream_cumulative.sse",
            OpenAi,
            Some(ChatCompletions),
            SSE,
            Usage::provider(31, 1024, 16, 900)
        ),
        f!(
            "groq_chat_stream.sse",
            OpenAi,
            Some(ChatCompletions),
            SSE,
            Usage::provider(18, 556, 0, 0)
        ),
        f!(
            "responses.json",
            OpenAi,
            Some(Responses),
            JSON,
            Usage::provider(2006, 345, 1920, 256)
        ),
        f!(
            "responses_stream.sse",
            OpenAi,
            Some(Responses),
            SSE,
            Usage::provider(2006, 345, 1920, 256)
        ),
        f!(
            "responses_stream_incomplete.sse",
            OpenAi,
            Some(Responses),
            SSE,
            Usage::provider(37, 16, 0, 0)
        ),
        f!(
            "responses_stream_failed.sse",
            OpenAi,
            Some(Responses),
            SSE,
            Usage::provider(12, 0, 0, 0)
        ),
        f!(
            "anthropic.json",
            Anthropic,
            Some(Messages),
            JSON,
            Usage::provider(3895, 503, 1800, 0)
        ),
        f!(
            "anthropic_stream.sse",
            Anthropic,
            Some(Messages),
            SSE,
            Usage::provider(12760, 156, 10240, 0)
        ),
        f!(
            "anthropic_stream_delta_input.sse",
            Anthropic,
            Some(Messages),
            SSE,
            Usage::provider(12788, 156, 10240, 0)
        ),
        f!(
            "anthropic_stream_error.sse",
            Anthropic,
            Some(Messages),
            SSE,
            trunc(Usage::provider(12760, 2, 10240, 0))
        ),
        f!(
            "embeddings.json",
            OpenAi,
            Some(Embeddings),
            JSON,
            Usage::provider(24, 0, 0, 0)
        ),
    ]
}

pub const ENCODINGS: [Encoding; 5] = [
    Encoding::Identity,
    Encoding::Gzip,
    Encoding::Zlib,
    Encoding::RawDeflate,
    Encoding::Brotli,
];

/// Line-ending variants of an SSE body: LF as recorded, CRLF and CR.
pub fn line_variants(f: &Fixture) -> Vec<(&'static str, Vec<u8>)> {
    let lf = f.body.to_vec();
    if f.content_type != SSE {
        return vec![("lf", lf)];
    }
    let crlf = String::from_utf8_lossy(f.body)
        .replace('\n', "\r\n")
        .into_bytes();
    let cr = String::from_utf8_lossy(f.body)
        .replace('\n', "\r")
        .into_bytes();
    vec![("lf", lf), ("crlf", crlf), ("cr", cr)]
}

pub fn tap_for(f: &Fixture, enc: Encoding, ct: Option<&str>) -> UsageTap {
    UsageTap::new(f.format, f.api, enc.header(), ct)
}

/// Feeds `body` split at `cuts` and returns the usage.
pub fn feed(f: &Fixture, enc: Encoding, ct: Option<&str>, body: &[u8], cuts: &[usize]) -> Usage {
    let mut t = tap_for(f, enc, ct);
    portcullis_llm::fuzzing::run_tap(&mut t, body, cuts);
    t.finish()
}

pub fn bytewise(f: &Fixture, enc: Encoding, ct: Option<&str>, body: &[u8]) -> Usage {
    let mut t = tap_for(f, enc, ct);
    for b in body.chunks(1) {
        t.feed(b);
    }
    t.finish()
}
