use portcullis_core::{Principal, SystemClock, TokenInfo};
use portcullis_policy::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut p = Principal::anonymous();
    p.agent_id = Arc::from("demo");
    p.token = Some(Arc::new(TokenInfo {
        scopes: vec!["openai:chat:create".into()],
        exp: 4_000_000_000,
        jti: "t1".into(),
    }));
    let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256});
    let input = PolicyInput::new(RequestKind::Http, &p)
        .with_request(RequestFacts {
            method: "POST",
            scheme: "https",
            host: "api.openai.com",
            port: 443,
            path: "/v1/chat/completions",
            query: None,
            headers: None,
            body: Some(&body),
        })
        .with_llm(LlmFacts {
            provider: "openai",
            api: "chat.completions",
            model: Some("gpt-4o"),
            stream: false,
            max_tokens: Some(256),
        });
    let all = example_sources();
    let extra = std::env::args().nth(1);
    let sets: Vec<(&str, Vec<&str>)> = vec![
        ("baseline", vec!["baseline.rego", "lib/catalog.rego"]),
        ("models", vec!["model_allowlist.rego"]),
        ("stripe", vec!["stripe_readonly.rego"]),
        ("high_risk", vec!["high_risk_llm.rego"]),
    ];
    for (name, files) in sets {
        let mut srcs: Vec<SourceFile> = all
            .iter()
            .filter(|s| files.contains(&s.path.as_str()))
            .cloned()
            .collect();
        if let Some(x) = &extra {
            if name == "baseline" {
                srcs[1].contents = std::fs::read_to_string(x).unwrap();
            }
        }
        let cfg = EngineConfig {
            cache_ttl: Duration::ZERO,
            ..Default::default()
        };
        let e = PolicyEngine::with_sources(cfg, Arc::new(SystemClock), srcs).unwrap();
        for _ in 0..200 {
            e.decide(&input);
        }
        let t = Instant::now();
        for _ in 0..2000 {
            e.decide(&input);
        }
        println!(
            "{name}: {:?}/decision {:?}",
            t.elapsed() / 2000,
            e.decide(&input).decision.verdict
        );
    }
}
