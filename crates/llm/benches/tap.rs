//! Usage tap throughput (large SSE stream, large JSON body, gzip SSE) and
//! classifier cost.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_llm::fuzzing::Encoding;
use portcullis_llm::{Api, Classifier, Format, RequestHead, UsageTap};
use std::hint::black_box;

/// ~`size` bytes of an OpenAI chat stream with include_usage, in 16 KiB frames.
fn chat_stream(size: usize) -> Vec<u8> {
    let mut s = Vec::with_capacity(size + 1024);
    let mut i = 0u64;
    while s.len() < size {
        s.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-BQkVGjMOPKAp5a0ACtUxfYpQ8fKGt\",\"object\":\"chat.completion.chunk\",\"created\":1745850178,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_0392822090\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i} with some text\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
            )
            .as_bytes(),
        );
        i += 1;
    }
    s.extend_from_slice(b"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29}}\n\ndata: [DONE]\n\n");
    s
}

/// Anthropic stream of about `size` bytes.
fn anthropic_stream(size: usize) -> Vec<u8> {
    let mut s = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n".to_vec();
    while s.len() < size {
        s.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there, this is a streamed token\"}}\n\n");
    }
    s.extend_from_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s
}

/// An embeddings JSON body of about `size` bytes with usage at the end.
fn embeddings_body(size: usize) -> Vec<u8> {
    let mut s = b"{\"object\":\"list\",\"data\":[".to_vec();
    let mut i = 0;
    while s.len() < size {
        s.extend_from_slice(format!("{{\"object\":\"embedding\",\"index\":{i},\"embedding\":[0.0023064255,-0.009327292,0.015797347,-0.0077780345,0.0211,-0.0042]}},").as_bytes());
        i += 1;
    }
    s.extend_from_slice(b"{\"index\":0}],\"model\":\"text-embedding-3-small\",\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}");
    s
}

fn run(format: Format, api: Api, enc: Option<&str>, ct: &str, body: &[u8]) -> u64 {
    let mut t = UsageTap::new(format, Some(api), enc, Some(ct));
    for frame in body.chunks(16 * 1024) {
        t.feed(frame);
    }
    t.finish().total_tokens
}

fn tap(c: &mut Criterion) {
    let size = 16 << 20;
    let chat = chat_stream(size);
    let anth = anthropic_stream(size);
    let emb = embeddings_body(size);
    let chat_gz = Encoding::Gzip.encode(&chat);
    assert_eq!(
        run(
            Format::OpenAi,
            Api::ChatCompletions,
            None,
            "text/event-stream",
            &chat
        ),
        29
    );
    assert_eq!(
        run(
            Format::Anthropic,
            Api::Messages,
            None,
            "text/event-stream",
            &anth
        ),
        40
    );
    assert_eq!(
        run(
            Format::OpenAi,
            Api::Embeddings,
            None,
            "application/json",
            &emb
        ),
        8
    );
    assert_eq!(
        run(
            Format::OpenAi,
            Api::ChatCompletions,
            Some("gzip"),
            "text/event-stream",
            &chat_gz
        ),
        29
    );

    let mut g = c.benchmark_group("tap");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(chat.len() as u64));
    g.bench_function(BenchmarkId::new("openai_chat_sse", "16MiB"), |b| {
        b.iter(|| {
            run(
                Format::OpenAi,
                Api::ChatCompletions,
                None,
                "text/event-stream",
                black_box(&chat),
            )
        })
    });
    g.throughput(Throughput::Bytes(anth.len() as u64));
    g.bench_function(BenchmarkId::new("anthropic_sse", "16MiB"), |b| {
        b.iter(|| {
            run(
                Format::Anthropic,
                Api::Messages,
                None,
                "text/event-stream",
                black_box(&anth),
            )
        })
    });
    g.throughput(Throughput::Bytes(emb.len() as u64));
    g.bench_function(BenchmarkId::new("embeddings_json", "16MiB"), |b| {
        b.iter(|| {
            run(
                Format::OpenAi,
                Api::Embeddings,
                None,
                "application/json",
                black_box(&emb),
            )
        })
    });
    // Throughput counted in decoded bytes.
    g.throughput(Throughput::Bytes(chat.len() as u64));
    g.bench_function(BenchmarkId::new("openai_chat_sse_gzip", "16MiB"), |b| {
        b.iter(|| {
            run(
                Format::OpenAi,
                Api::ChatCompletions,
                Some("gzip"),
                "text/event-stream",
                black_box(&chat_gz),
            )
        })
    });
    g.finish();
}

fn classify(c: &mut Criterion) {
    let classifier = Classifier::default();
    let head = RequestHead {
        method: "POST",
        host: "api.openai.com",
        port: 443,
        path: "/v1/chat/completions",
        content_type: Some("application/json"),
    };
    let small = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":256,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#;
    let history: Vec<String> = (0..400)
        .map(|i| format!("{{\"role\":\"user\",\"content\":\"message number {i} with a reasonably long text body to simulate a conversation history\"}}"))
        .collect();
    let large = format!(
        "{{\"model\":\"gpt-4o\",\"messages\":[{}],\"max_tokens\":1024}}",
        history.join(",")
    );
    let mut g = c.benchmark_group("classify");
    g.bench_function("head_only", |b| {
        b.iter(|| classifier.classify_head(black_box(&head)))
    });
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("small_body", |b| {
        b.iter(|| classifier.classify(black_box(&head), Some(black_box(small)), 1 << 20))
    });
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.bench_function(BenchmarkId::new("history_body", large.len()), |b| {
        b.iter(|| classifier.classify(black_box(&head), Some(black_box(large.as_bytes())), 1 << 20))
    });
    g.finish();
}

criterion_group!(benches, tap, classify);
criterion_main!(benches);
