//! Per-request identity costs: token verification, Basic-secret verification,
//! registry lookup. Target: at most 20 µs per verification. The `proxy_*` rows run what
//! the proxy runs per request (`authenticate_from` with the failure throttle on): a
//! cached Bearer token should cost about what a Basic secret does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::{Agent, ManualClock};
use portcullis_identity::{
    generate_secret, hash_secret, AuthThrottle, Authenticator, Registry, SigningKey,
    ThrottleSettings, TokenIssuer,
};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const NOW: u64 = 1_700_000_000;

fn setup() -> (Authenticator, Arc<TokenIssuer>, String, String) {
    let secret = generate_secret();
    let agents: Vec<Agent> = (0..1000)
        .map(|i| {
            let mut a = Agent::new(format!("agent_{i}"), "acme", NOW);
            a.secret_sha256 = Some(hash_secret(&secret));
            a.allowed_scopes = vec!["openai:chat:create".into(), "stripe:customer:read".into()];
            a
        })
        .collect();
    let registry = Arc::new(Registry::from_agents(agents));
    let issuer = Arc::new(TokenIssuer::new(
        "portcullis",
        Arc::new(SigningKey::generate()),
    ));
    let clock = Arc::new(ManualClock::at(NOW + 10));
    let throttle = Arc::new(AuthThrottle::new(
        ThrottleSettings::default(),
        clock.clone(),
    ));
    let auth = Authenticator::new(registry.clone(), issuer.clone(), clock).with_throttle(throttle);
    let agent = registry
        .get("agent_500")
        .unwrap_or_else(|| Arc::new(Agent::new("x", "y", 0)));
    let token = issuer
        .issue(&agent, &agent.allowed_scopes, NOW)
        .map(|t| t.access_token)
        .unwrap_or_default();
    (auth, issuer, secret, token)
}

fn bench(c: &mut Criterion) {
    let (auth, issuer, secret, token) = setup();
    let basic = format!("Basic {}", STANDARD.encode(format!("agent_500:{secret}")));
    let basic_jwt = format!("Basic {}", STANDARD.encode(format!("agent_500:{token}")));
    let bearer = format!("Bearer {token}");
    assert!(auth.authenticate(Some(basic.as_bytes())).is_ok());
    assert!(auth.authenticate(Some(bearer.as_bytes())).is_ok());

    c.bench_function("token_verify_cached", |b| {
        b.iter(|| issuer.verify(black_box(&token), NOW + 10))
    });
    let cold =
        TokenIssuer::new("portcullis", Arc::new(SigningKey::generate())).with_cache_capacity(0);
    let cold_token = auth
        .registry()
        .get("agent_500")
        .and_then(|a| cold.issue(&a, &a.allowed_scopes, NOW).ok())
        .map(|t| t.access_token)
        .unwrap_or_default();
    assert!(cold.verify(&cold_token, NOW + 10).is_ok());
    c.bench_function("token_verify_uncached", |b| {
        b.iter(|| cold.verify(black_box(&cold_token), NOW + 10))
    });
    c.bench_function("authenticate_bearer_jwt_cached", |b| {
        b.iter(|| auth.authenticate(Some(black_box(bearer.as_bytes()))))
    });
    c.bench_function("authenticate_basic_jwt_cached", |b| {
        b.iter(|| auth.authenticate(Some(black_box(basic_jwt.as_bytes()))))
    });
    c.bench_function("authenticate_basic_secret", |b| {
        b.iter(|| auth.authenticate(Some(black_box(basic.as_bytes()))))
    });
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert!(auth
        .authenticate_from(Some(bearer.as_bytes()), client)
        .is_ok());
    c.bench_function("proxy_bearer_jwt_cached", |b| {
        b.iter(|| auth.authenticate_from(Some(black_box(bearer.as_bytes())), client))
    });
    c.bench_function("proxy_basic_secret", |b| {
        b.iter(|| auth.authenticate_from(Some(black_box(basic.as_bytes())), client))
    });
    let wrong = format!("Basic {}", STANDARD.encode("agent_500:wrong"));
    c.bench_function("authenticate_basic_wrong_secret", |b| {
        b.iter(|| auth.authenticate(Some(black_box(wrong.as_bytes()))))
    });
    c.bench_function("registry_get_1000_agents", |b| {
        b.iter(|| auth.registry().get(black_box("agent_500")))
    });
    c.bench_function("token_issue", |b| {
        let agent = auth.registry().get("agent_500");
        b.iter(|| {
            agent
                .as_ref()
                .map(|a| issuer.issue(a, &a.allowed_scopes, NOW))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
