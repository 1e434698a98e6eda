//! Per-decision latency for the example policy set: RVM (one pass and per policy),
//! cache hit, and the interpreter for comparison.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::{Principal, SystemClock, TokenInfo};
use portcullis_policy::{
    example_sources, EngineConfig, EvalStrategy, LlmFacts, PolicyEngine, PolicyInput, RequestFacts,
    RequestKind,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn engine(cache_ttl: Duration, strategy: EvalStrategy) -> PolicyEngine {
    let cfg = EngineConfig {
        cache_ttl,
        strategy,
        ..Default::default()
    };
    PolicyEngine::with_sources(cfg, Arc::new(SystemClock), example_sources())
        .expect("examples compile")
}

fn bench(c: &mut Criterion) {
    let mut p = Principal::anonymous();
    p.agent_id = Arc::from("demo");
    p.groups = Arc::from(vec!["research".to_owned()]);
    p.token = Some(Arc::new(TokenInfo {
        scopes: vec!["openai:chat:create".into()],
        exp: 4_000_000_000,
        jti: "t1".into(),
    }));
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("header"));
    headers.insert(
        "user-agent",
        "OpenAI/Python 1.50.0".parse().expect("header"),
    );
    headers.insert("authorization", "Bearer sk-test".parse().expect("header"));
    let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256});
    let input = PolicyInput::new(RequestKind::Http, &p)
        .with_request(RequestFacts {
            method: "POST",
            scheme: "https",
            host: "api.openai.com",
            port: 443,
            path: "/v1/chat/completions",
            query: None,
            headers: Some(&headers),
            body: Some(&body),
        })
        .with_llm(LlmFacts {
            provider: "openai",
            api: "chat.completions",
            model: Some("gpt-4o"),
            stream: false,
            max_tokens: Some(256),
        });

    let one_pass = engine(Duration::ZERO, EvalStrategy::OnePass);
    assert!(one_pass.decide(&input).decision.allowed);
    c.bench_function("decide/rvm_one_pass_uncached", |b| {
        b.iter(|| black_box(one_pass.decide(black_box(&input))))
    });
    let per_policy = engine(Duration::ZERO, EvalStrategy::PerPolicy);
    c.bench_function("decide/rvm_per_policy_uncached", |b| {
        b.iter(|| black_box(per_policy.decide(black_box(&input))))
    });
    let cached = engine(Duration::from_secs(3600), EvalStrategy::Auto);
    cached.decide(&input);
    assert!(cached.decide(&input).decision.cached);
    c.bench_function("decide/cache_hit", |b| {
        b.iter(|| black_box(cached.decide(black_box(&input))))
    });
    c.bench_function("decide/interpreter", |b| {
        b.iter(|| black_box(one_pass.simulate(black_box(&input))))
    });
    c.bench_function("input/to_value", |b| {
        b.iter(|| black_box(input.to_value(std::time::SystemTime::UNIX_EPOCH)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
