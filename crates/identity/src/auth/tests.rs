use super::*;
use crate::key::SigningKey;
use crate::secret::hash_secret;
use crate::ThrottleScope;
use portcullis_core::{Agent, ManualClock};
use std::time::Duration;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "s3cr3t-demo-secret";

struct Fixture {
    auth: Authenticator,
    clock: Arc<ManualClock>,
    issuer: Arc<TokenIssuer>,
}

fn agent(id: &str) -> Agent {
    let mut a = Agent::new(id, "acme", NOW);
    a.secret_sha256 = Some(hash_secret(SECRET));
    a.allowed_scopes = vec!["a:read".into(), "b:write".into()];
    a.groups = vec!["bots".into()];
    a.generation = 2;
    a
}

fn agents() -> Vec<Agent> {
    let mut sus = agent("sus");
    sus.status = AgentStatus::Suspended;
    let mut rev = agent("rev");
    rev.status = AgentStatus::Revoked;
    let mut off = agent("off");
    off.mode = AgentMode::Disabled;
    let mut shadow = agent("shadow");
    shadow.mode = AgentMode::Shadow;
    let mut nosecret = agent("nosecret");
    nosecret.secret_sha256 = None;
    let mut helper = agent("helper");
    helper.parent = Some("demo".into());
    vec![agent("demo"), sus, rev, off, shadow, nosecret, helper]
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::at(NOW));
    let issuer = Arc::new(TokenIssuer::new(
        "portcullis",
        Arc::new(SigningKey::from_seed(&[9; 32])),
    ));
    let registry = Arc::new(Registry::from_agents(agents()));
    let auth = Authenticator::new(registry, issuer.clone(), clock.clone());
    Fixture {
        auth,
        clock,
        issuer,
    }
}

fn basic(user: &str, pass: &str) -> Vec<u8> {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {enc}").into_bytes()
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

fn token_for(f: &Fixture, id: &str, scopes: &[&str]) -> String {
    let a = f.auth.registry().get(id).unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    f.issuer.issue(&a, &scopes, NOW).unwrap().access_token
}

fn set(f: &Fixture, id: &str, change: impl Fn(&mut Agent)) {
    let mut all: Vec<Agent> = f
        .auth
        .registry()
        .snapshot()
        .agents()
        .iter()
        .map(|a| Agent::clone(a))
        .collect();
    for a in &mut all {
        if a.id == id && a.parent.is_none() {
            change(a);
        }
    }
    f.auth.registry().replace(all);
}

#[test]
fn basic_secret_gives_agent_principal() {
    let f = fixture();
    let p = f.auth.authenticate(Some(&basic("demo", SECRET))).unwrap();
    assert_eq!(&*p.agent_id, "demo");
    assert_eq!(&*p.tenant, "acme");
    assert_eq!(&*p.groups, ["bots".to_owned()]);
    assert_eq!(&*p.scopes, ["a:read".to_owned(), "b:write".to_owned()]);
    assert!(p.token.is_none());
    assert_eq!(p.generation, 2);
    // Shadow agents authenticate normally.
    let p = f.auth.authenticate(Some(&basic("shadow", SECRET))).unwrap();
    assert_eq!(p.mode, AgentMode::Shadow);
}

#[test]
fn basic_secret_failures() {
    let f = fixture();
    let cases: Vec<(Vec<u8>, AuthError)> = vec![
        (basic("demo", "wrong"), AuthError::BadSecret),
        (basic("demo", ""), AuthError::BadSecret),
        (basic("demo", &format!("{SECRET} ")), AuthError::BadSecret),
        (basic("nosecret", SECRET), AuthError::BadSecret),
        (basic("ghost", SECRET), AuthError::UnknownAgent),
        (basic("Demo", SECRET), AuthError::UnknownAgent),
        (basic("demo\u{0}", SECRET), AuthError::UnknownAgent),
        // Sub-agents have no credentials of their own.
        (basic("helper", SECRET), AuthError::UnknownAgent),
    ];
    for (h, want) in cases {
        assert_eq!(
            f.auth.authenticate(Some(&h)),
            Err(want),
            "{}",
            String::from_utf8_lossy(&h)
        );
    }
}

#[test]
fn tokens_in_basic_and_bearer() {
    let f = fixture();
    let t = token_for(&f, "demo", &["a:read"]);
    for h in [basic("demo", &t), bearer(&t)] {
        let p = f.auth.authenticate(Some(&h)).unwrap();
        assert_eq!(&*p.agent_id, "demo");
        assert_eq!(&*p.scopes, ["a:read".to_owned()]);
        let info = p.token.as_ref().unwrap();
        assert_eq!(info.scopes, ["a:read".to_owned()]);
        assert_eq!(info.exp, NOW + 600);
        assert!(!info.jti.is_empty());
    }
}

#[test]
fn basic_with_token_of_another_agent_is_refused() {
    let f = fixture();
    let t = token_for(&f, "shadow", &[]);
    let err = f.auth.authenticate(Some(&basic("demo", &t))).unwrap_err();
    assert_eq!(err, AuthError::SubjectMismatch);
    assert_eq!(err.reason(), "bad_token");
    assert_eq!(err.status().code(), 407);
}

#[test]
fn expired_and_not_yet_valid_tokens() {
    let f = fixture();
    let t = token_for(&f, "demo", &[]);
    f.clock.advance(Duration::from_secs(600));
    let err = f.auth.authenticate(Some(&bearer(&t))).unwrap_err();
    assert_eq!(err, AuthError::Token(TokenError::Expired));
    assert_eq!(err.reason(), "expired");
    assert_eq!(
        f.auth.authenticate_at(Some(&bearer(&t)), NOW - 60),
        Err(AuthError::Token(TokenError::NotYetValid))
    );
}

#[test]
fn bad_tokens() {
    let f = fixture();
    let t = token_for(&f, "demo", &[]);
    let other = TokenIssuer::new("portcullis", Arc::new(SigningKey::from_seed(&[1; 32])));
    let a = f.auth.registry().get("demo").unwrap();
    let foreign = other.issue(&a, &[], NOW).unwrap().access_token;
    for h in [
        bearer(&t[..t.len() - 3]),
        bearer("not-a-token"),
        bearer(&foreign),
        bearer(&format!("{t}.x")),
    ] {
        let err = f.auth.authenticate(Some(&h)).unwrap_err();
        assert!(matches!(err, AuthError::Token(_)), "{err:?}");
        assert_eq!(err.reason(), "bad_token");
    }
}

#[test]
fn rotation_invalidates_old_tokens_and_secret_on_next_call() {
    let f = fixture();
    let t = token_for(&f, "demo", &[]);
    assert!(f.auth.authenticate(Some(&bearer(&t))).is_ok());
    let tunnel = f.auth.authenticate(Some(&basic("demo", SECRET))).unwrap();
    set(&f, "demo", |a| {
        a.generation = 3;
        a.secret_sha256 = Some(hash_secret("new-secret"));
    });
    assert_eq!(
        f.auth.authenticate(Some(&bearer(&t))),
        Err(AuthError::Rotated)
    );
    assert_eq!(
        f.auth.authenticate(Some(&basic("demo", &t))),
        Err(AuthError::Rotated)
    );
    assert_eq!(
        f.auth.authenticate(Some(&basic("demo", SECRET))),
        Err(AuthError::BadSecret)
    );
    assert_eq!(f.auth.recheck(&tunnel), Err(AuthError::Rotated));
    assert!(f
        .auth
        .authenticate(Some(&basic("demo", "new-secret")))
        .is_ok());
    let fresh = token_for(&f, "demo", &[]);
    assert_eq!(
        f.auth
            .authenticate(Some(&bearer(&fresh)))
            .unwrap()
            .generation,
        3
    );
    // A token from a generation the registry has not seen yet is refused too.
    set(&f, "demo", |a| a.generation = 2);
    assert_eq!(
        f.auth.authenticate(Some(&bearer(&fresh))),
        Err(AuthError::Rotated)
    );
}

#[test]
fn suspension_and_revocation_apply_to_next_call_after_credentials() {
    let f = fixture();
    assert_eq!(
        f.auth.authenticate(Some(&basic("sus", SECRET))),
        Err(AuthError::Suspended)
    );
    assert_eq!(
        f.auth.authenticate(Some(&basic("rev", SECRET))),
        Err(AuthError::Revoked)
    );
    // Status is not revealed without the right credential.
    assert_eq!(
        f.auth.authenticate(Some(&basic("sus", "wrong"))),
        Err(AuthError::BadSecret)
    );
    let t = token_for(&f, "demo", &[]);
    let bound = f.auth.authenticate(Some(&bearer(&t))).unwrap();
    set(&f, "demo", |a| a.status = AgentStatus::Suspended);
    assert_eq!(
        f.auth.authenticate(Some(&bearer(&t))),
        Err(AuthError::Suspended)
    );
    assert_eq!(f.auth.recheck(&bound), Err(AuthError::Suspended));
    set(&f, "demo", |a| a.status = AgentStatus::Active);
    assert!(f.auth.recheck(&bound).is_ok());
    set(&f, "demo", |a| a.status = AgentStatus::Revoked);
    let err = f
        .auth
        .authenticate(Some(&basic("demo", SECRET)))
        .unwrap_err();
    assert_eq!((err.reason(), err.status().code()), ("revoked", 407));
}

#[test]
fn disabled_agent_is_403() {
    let f = fixture();
    let err = f
        .auth
        .authenticate(Some(&basic("off", SECRET)))
        .unwrap_err();
    assert_eq!(err, AuthError::AgentDisabled);
    assert_eq!(err.status().code(), 403);
    let body = err.to_api_error().to_json(None);
    assert_eq!(body["code"], "agent_disabled");
    assert_eq!(body["reason"], "agent_disabled");
    let t = token_for(&f, "demo", &[]);
    let bound = f.auth.authenticate(Some(&bearer(&t))).unwrap();
    set(&f, "demo", |a| a.mode = AgentMode::Disabled);
    assert_eq!(
        f.auth.authenticate(Some(&bearer(&t))),
        Err(AuthError::AgentDisabled)
    );
    assert_eq!(f.auth.recheck(&bound), Err(AuthError::AgentDisabled));
}

#[test]
fn recheck_refreshes_and_expires() {
    let f = fixture();
    let t = token_for(&f, "demo", &["a:read", "b:write"]);
    let bound = f.auth.authenticate(Some(&bearer(&t))).unwrap();
    set(&f, "demo", |a| {
        a.allowed_scopes = vec!["b:write".into()];
        a.mode = AgentMode::Shadow;
    });
    let p = f.auth.recheck(&bound).unwrap();
    assert_eq!(p.mode, AgentMode::Shadow);
    assert_eq!(&*p.scopes, ["b:write".to_owned()]);
    assert_eq!(p.token.as_ref().unwrap().scopes.len(), 2);
    f.clock.advance(Duration::from_secs(600));
    assert_eq!(
        f.auth.recheck(&bound),
        Err(AuthError::Token(TokenError::Expired))
    );
    set(&f, "demo", |a| a.id = "renamed".into());
    assert_eq!(f.auth.recheck_at(&bound, NOW), Err(AuthError::UnknownAgent));
}

#[test]
fn tenant_change_invalidates_tokens() {
    let f = fixture();
    let t = token_for(&f, "demo", &[]);
    set(&f, "demo", |a| a.tenant = "other".into());
    assert_eq!(
        f.auth.authenticate(Some(&bearer(&t))),
        Err(AuthError::TenantMismatch)
    );
}

#[test]
fn malformed_headers() {
    let f = fixture();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let long = format!("Basic {}", "A".repeat(MAX_AUTHORIZATION_LEN));
    let cases: Vec<Vec<u8>> = vec![
        b"Basic".to_vec(),
        b"Bearer".to_vec(),
        b"Basic !!!!".to_vec(),
        b"Basic ZGVtbw=x".to_vec(),
        format!("Basic {}", b64(b"nocolon")).into_bytes(),
        format!("Basic {}", b64(b":secret")).into_bytes(),
        format!("Basic {}", b64(b"demo:\xff\xfe")).into_bytes(),
        b"Basic \xff\xfe".to_vec(),
        b"Digest username=demo".to_vec(),
        b"Negotiate abc".to_vec(),
        b"BasicZGVtbzpz".to_vec(),
        long.into_bytes(),
    ];
    for h in cases {
        let err = f.auth.authenticate(Some(&h)).unwrap_err();
        assert!(
            matches!(err, AuthError::Malformed(_)),
            "{:?} -> {err:?}",
            String::from_utf8_lossy(&h[..h.len().min(40)])
        );
        assert_eq!(err.reason(), "malformed");
        assert_eq!(err.status().code(), 407);
    }
    assert_eq!(f.auth.authenticate(None), Err(AuthError::Missing));
    assert_eq!(f.auth.authenticate(Some(b"")), Err(AuthError::Missing));
    assert_eq!(f.auth.authenticate(Some(b"  ")), Err(AuthError::Missing));
}

#[test]
fn lenient_but_correct_parsing() {
    let f = fixture();
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("demo:{SECRET}"));
    let unpadded = enc.trim_end_matches('=').to_owned();
    for h in [
        format!("basic {enc}"),
        format!("BASIC   {enc}"),
        format!("  Basic {enc}  "),
        format!("Basic\t{enc}"),
        format!("Basic {unpadded}"),
    ] {
        assert!(f.auth.authenticate(Some(h.as_bytes())).is_ok(), "{h}");
    }
    // A password containing ':' keeps everything after the first ':'.
    let mut a = agent("colon");
    a.secret_sha256 = Some(hash_secret("a:b:c"));
    f.auth.registry().upsert(a);
    assert!(f.auth.authenticate(Some(&basic("colon", "a:b:c"))).is_ok());
    let t = token_for(&f, "demo", &[]);
    assert!(f
        .auth
        .authenticate(Some(format!("bearer   {t}").as_bytes()))
        .is_ok());
}

#[test]
fn garbage_never_panics() {
    let f = fixture();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..300 {
        let mut buf = Vec::with_capacity(len + 6);
        buf.extend_from_slice(if len % 2 == 0 { b"Basic " } else { b"Bearer " });
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push((x & 0xff) as u8);
        }
        assert!(f.auth.authenticate(Some(&buf)).is_err());
    }
}

#[test]
fn reasons_are_bounded_and_errors_are_json() {
    let allowed = [
        "missing",
        "malformed",
        "unknown_agent",
        "bad_secret",
        "bad_token",
        "expired",
        "suspended",
        "revoked",
        "rotated",
        "agent_disabled",
    ];
    let all = [
        AuthError::Missing,
        AuthError::Malformed("x"),
        AuthError::UnknownAgent,
        AuthError::SubagentCredentials,
        AuthError::BadSecret,
        AuthError::Token(TokenError::Malformed),
        AuthError::Token(TokenError::Expired),
        AuthError::SubjectMismatch,
        AuthError::TenantMismatch,
        AuthError::Rotated,
        AuthError::Suspended,
        AuthError::Revoked,
        AuthError::AgentDisabled,
    ];
    for e in &all {
        assert!(allowed.contains(&e.reason()), "{e:?}");
        let body = e.to_api_error().to_json(None);
        assert!(body["detail"].is_string());
        assert_eq!(body["code"], e.code());
    }
    // Unknown agent and wrong secret look the same to the client.
    assert_eq!(
        AuthError::UnknownAgent.to_api_error().detail,
        AuthError::BadSecret.to_api_error().detail
    );
}

#[test]
fn subagent_header_validation() {
    assert_eq!(validate_subagent(b"researcher"), Ok("researcher"));
    assert_eq!(validate_subagent(b"r2_d2"), Ok("r2_d2"));
    for bad in [
        &b""[..],
        b"a",
        b"Researcher",
        b"1abc",
        b"a-b",
        b" ab",
        b"ab ",
        b"a\xffb",
        b"ab\r\nx-evil: 1",
        &[b'a'; 65],
        &[b'a'; 10_000],
    ] {
        let err = validate_subagent(bad).unwrap_err();
        assert_eq!(err.to_api_error().status_code(), 400);
    }
}

/// A fixture whose authenticator throttles after `burst` failures (10 per minute), with
/// `strong_bot` holding a 43-character secret.
fn throttled_fixture(burst: u32) -> (Fixture, Arc<AuthThrottle>, String) {
    let f = fixture();
    let strong = crate::generate_secret();
    let mut agents = agents();
    let mut a = agent("strong_bot");
    a.secret_sha256 = Some(hash_secret(&strong));
    agents.push(a);
    f.auth.registry().replace(agents);
    let t = Arc::new(AuthThrottle::new(
        crate::ThrottleSettings {
            burst,
            per_minute: 10,
            max_entries: 100,
        },
        f.clock.clone(),
    ));
    let auth = Authenticator::new(f.auth.registry().clone(), f.issuer.clone(), f.clock.clone())
        .with_throttle(t.clone());
    (Fixture { auth, ..f }, t, strong)
}

#[test]
fn throttled_after_the_burst_without_verifying_and_the_real_agent_still_passes() {
    let (f, _t, strong) = throttled_fixture(5);
    let nat: IpAddr = "203.0.113.1".parse().unwrap();
    // The real agent authenticated before the attack (secret and a token).
    let good = basic("strong_bot", &strong);
    assert!(f.auth.authenticate_from(Some(&good), nat).is_ok());
    let tok = bearer(&token_for(&f, "strong_bot", &["a:read"]));
    assert!(f.auth.authenticate_from(Some(&tok), nat).is_ok());
    for i in 0..5 {
        let e = f
            .auth
            .authenticate_from(Some(&basic("strong_bot", &format!("guess-{i}"))), nat)
            .unwrap_err();
        assert_eq!(e, AuthError::BadSecret);
    }
    // Even the right guess is not verified now ...
    let e = f
        .auth
        .authenticate_from(Some(&basic("demo", SECRET)), nat)
        .unwrap_err();
    let AuthError::Throttled(t) = e.clone() else {
        panic!("{e:?}")
    };
    assert_eq!(t.retry_after_secs, 6);
    let api = e.to_api_error();
    assert_eq!(
        (api.status_code(), api.code.as_ref()),
        (429, "auth_throttled")
    );
    assert_eq!(api.retry_after_secs, Some(6));
    assert_eq!(api.to_json(None)["reason"], "throttled");
    // ... while the real agent's known credentials pass through normal verification.
    assert_eq!(
        f.auth
            .authenticate_from(Some(&good), nat)
            .map(|p| p.agent_id.to_string()),
        Ok("strong_bot".to_owned())
    );
    assert!(f.auth.authenticate_from(Some(&tok), nat).is_ok());
    // Another address is not affected by this one's failures (the agent had 5 too).
    let other: IpAddr = "198.51.100.1".parse().unwrap();
    assert!(matches!(
        f.auth.authenticate_from(Some(&basic("strong_bot", "x")), other),
        Err(AuthError::Throttled(t)) if t.scope == ThrottleScope::Agent
    ));
    assert!(f
        .auth
        .authenticate_from(Some(&basic("demo", SECRET)), other)
        .is_ok());
    // Refill: after 6 s one more attempt is verified.
    f.clock.advance(Duration::from_secs(6));
    assert!(f
        .auth
        .authenticate_from(Some(&basic("demo", SECRET)), nat)
        .is_ok());
}

#[test]
fn only_guesses_count_against_the_throttle() {
    let (f, t, _) = throttled_fixture(3);
    let c: IpAddr = "203.0.113.2".parse().unwrap();
    let expired = token_for(&f, "demo", &["a:read"]);
    f.clock.advance(Duration::from_secs(3_600));
    // Missing, malformed, expired, suspended, disabled: none of them is a guess.
    for _ in 0..10 {
        for h in [
            None,
            Some(b"Digest x".to_vec()),
            Some(b"Basic !!!".to_vec()),
            Some(bearer(&expired)),
            Some(basic("sus", SECRET)),
            Some(basic("off", SECRET)),
        ] {
            let e = f.auth.authenticate_from(h.as_deref(), c).unwrap_err();
            assert!(!e.is_guess(), "{e:?}");
        }
    }
    assert_eq!(t.entries(), (0, 0, 0), "nothing counted");
    // Ids that are no registered agent (unknown, a sub-agent) count for that id only: the
    // address keeps its budget for the agents behind it.
    for _ in 0..3 {
        for id in ["ghost", "helper"] {
            let e = f
                .auth
                .authenticate_from(Some(&basic(id, SECRET)), c)
                .unwrap_err();
            assert!(e.is_guess(), "{e:?}");
        }
    }
    assert_eq!(t.entries().0, 0, "the address was not charged");
    assert!(f
        .auth
        .authenticate_from(Some(&basic("demo", SECRET)), c)
        .is_ok());
    let elsewhere: IpAddr = "198.51.100.2".parse().unwrap();
    assert!(matches!(
        f.auth.authenticate_from(Some(&basic("ghost", SECRET)), elsewhere),
        Err(AuthError::Throttled(t)) if t.scope == ThrottleScope::Agent
    ));
    // Wrong secrets of registered agents and bad tokens count against the address.
    for h in [
        basic("demo", "wrong"),
        basic("sus", "wrong"),
        bearer("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJkZW1vIn0.c2ln"),
    ] {
        let e = f.auth.authenticate_from(Some(&h), c).unwrap_err();
        assert!(e.is_guess(), "{e:?}");
    }
    assert!(matches!(
        f.auth.authenticate_from(Some(&basic("demo", SECRET)), c),
        Err(AuthError::Throttled(t)) if t.scope == ThrottleScope::Client
    ));
    // The unthrottled entry point is unchanged.
    assert!(f.auth.authenticate(Some(&basic("demo", SECRET))).is_ok());
}

#[test]
fn a_short_secret_gets_no_pass_while_throttled() {
    let (f, _t, _) = throttled_fixture(2);
    let c: IpAddr = "203.0.113.3".parse().unwrap();
    // SECRET is 18 characters: verified, but not remembered.
    assert!(f
        .auth
        .authenticate_from(Some(&basic("demo", SECRET)), c)
        .is_ok());
    for _ in 0..2 {
        let _ = f.auth.authenticate_from(Some(&basic("demo", "wrong")), c);
    }
    assert!(matches!(
        f.auth.authenticate_from(Some(&basic("demo", SECRET)), c),
        Err(AuthError::Throttled(_))
    ));
}
