use super::*;
use portcullis_core::ManualClock;
use std::time::Duration;

const STRONG: &str = "q8Jm3Xv0bW2nK9sT4yR7uE1pL6cZ5aHd0fG3iO8wQ2e"; // 43 chars, like generated
const WEAK: &str = "hunter2hunter2!!"; // 16 chars

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn throttle(burst: u32, per_minute: u32) -> (AuthThrottle, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(1_700_000_000));
    let t = AuthThrottle::new(
        ThrottleSettings {
            burst,
            per_minute,
            max_entries: DEFAULT_MAX_ENTRIES,
        },
        clock.clone(),
    );
    (t, clock)
}

fn secret_fp(agent: &str, secret: &str) -> Fingerprint {
    Presented::Secret { agent, secret }.fingerprint()
}

/// Fails `n` times from `client` claiming `agent`; every attempt must be allowed.
fn fail_n(t: &AuthThrottle, client: IpAddr, agent: Option<&str>, n: u32) {
    for i in 0..n {
        let fp = secret_fp(agent.unwrap_or("x"), &format!("guess-{i}"));
        assert_eq!(t.check(client, agent, &[fp]), Ok(()), "attempt {i}");
        t.failed(client, agent, &[fp]);
    }
}

#[test]
fn a_burst_of_failures_then_429_with_retry_after_then_refill() {
    let (t, clock) = throttle(20, 10);
    let c = ip("203.0.113.9");
    fail_n(&t, c, Some("billing_bot"), 20);
    let refused = t.check(
        c,
        Some("billing_bot"),
        &[secret_fp("billing_bot", "guess-20")],
    );
    assert_eq!(
        refused,
        Err(Throttled {
            scope: ThrottleScope::Client,
            retry_after_secs: 6
        })
    );
    // Throttled attempts are not counted: the wait does not grow while refused.
    for _ in 0..100 {
        assert!(t.check(c, Some("billing_bot"), &[]).is_err());
    }
    assert_eq!(
        t.check(c, None, &[]).map_err(|e| e.retry_after_secs),
        Err(6)
    );
    // 10 per minute: one more attempt every 6 s.
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        t.check(c, None, &[]).map_err(|e| e.retry_after_secs),
        Err(1)
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(t.check(c, Some("billing_bot"), &[]), Ok(()));
    t.failed(c, Some("billing_bot"), &[]);
    assert!(t.check(c, None, &[]).is_err());
    // A full refill forgets the entries entirely (idle keys cost nothing).
    clock.advance(Duration::from_secs(20 * 6));
    fail_n(&t, c, Some("billing_bot"), 20);
    assert!(t.check(c, None, &[]).is_err());
}

#[test]
fn client_and_agent_buckets_are_separate() {
    let (t, _clock) = throttle(5, 60);
    // One address spraying five claimed agents: the address is throttled, not the agents.
    let attacker = ip("198.51.100.7");
    for i in 0..5 {
        let agent = format!("bot_{i}");
        fail_n(&t, attacker, Some(&agent), 1);
    }
    let e = t.check(attacker, Some("bot_9"), &[]).unwrap_err();
    assert_eq!(e.scope, ThrottleScope::Client);
    assert_eq!(t.check(ip("198.51.100.8"), Some("bot_0"), &[]), Ok(()));

    // Many addresses guessing one agent: the agent is throttled from any address.
    for i in 0..5 {
        fail_n(&t, ip(&format!("192.0.2.{i}")), Some("victim"), 1);
    }
    let e = t.check(ip("192.0.2.200"), Some("victim"), &[]).unwrap_err();
    assert_eq!(e.scope, ThrottleScope::Agent);
    assert_eq!(e.scope.label(), "agent");
    assert_eq!(ThrottleScope::Client.label(), "client");
    // ... but not that address for another agent.
    assert_eq!(t.check(ip("192.0.2.200"), Some("other"), &[]), Ok(()));
    // A bearer token claims no agent: only the address counts.
    assert_eq!(t.check(ip("192.0.2.201"), None, &[]), Ok(()));
}

#[test]
fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
    let (t, _clock) = throttle(3, 60);
    fail_n(&t, ip("2001:db8:1:2::1"), None, 2);
    fail_n(&t, ip("2001:db8:1:2:ffff::9"), None, 1);
    assert!(t.check(ip("2001:db8:1:2:abcd::1"), None, &[]).is_err());
    assert_eq!(t.check(ip("2001:db8:1:3::1"), None, &[]), Ok(()));
    fail_n(&t, ip("::ffff:203.0.113.5"), None, 3);
    assert!(t.check(ip("203.0.113.5"), None, &[]).is_err());
}

#[test]
fn a_recently_verified_strong_credential_passes_while_throttled() {
    let (t, _clock) = throttle(20, 10);
    let shared_nat = ip("203.0.113.50");
    // The real agent authenticated before the attack.
    t.verified(
        "billing_bot",
        Presented::Secret {
            agent: "billing_bot",
            secret: STRONG,
        },
    );
    t.verified("billing_bot", Presented::Token("eyJ.issued.token"));
    fail_n(&t, shared_nat, Some("billing_bot"), 20);
    assert!(t.check(shared_nat, Some("billing_bot"), &[]).is_err());
    // Its exact credentials pass; anything else does not.
    let good = secret_fp("billing_bot", STRONG);
    assert_eq!(t.check(shared_nat, Some("billing_bot"), &[good]), Ok(()));
    let token = Presented::Token("eyJ.issued.token").fingerprint();
    assert_eq!(t.check(shared_nat, None, &[token]), Ok(()));
    for bad in [
        secret_fp("billing_bot", &format!("{STRONG}x")),
        secret_fp("other_bot", STRONG),
        Presented::Token("eyJ.other.token").fingerprint(),
    ] {
        assert!(t.check(shared_nat, Some("billing_bot"), &[bad]).is_err());
    }
    // A remembered credential that then fails verification (e.g. rotated) is forgotten.
    t.failed(shared_nat, Some("billing_bot"), &[good]);
    assert!(t.check(shared_nat, Some("billing_bot"), &[good]).is_err());
}

#[test]
fn weak_secrets_never_pass_a_throttle() {
    let (t, _clock) = throttle(3, 10);
    let c = ip("203.0.113.60");
    let weak = Presented::Secret {
        agent: "weak_bot",
        secret: WEAK,
    };
    assert!(!weak.may_bypass());
    assert!(Presented::Token("t").may_bypass());
    t.verified("weak_bot", weak);
    assert_eq!(t.entries().2, 0);
    fail_n(&t, c, Some("weak_bot"), 3);
    assert!(t.check(c, Some("weak_bot"), &[weak.fingerprint()]).is_err());
}

#[test]
fn memory_stays_bounded_under_spraying() {
    let clock = Arc::new(ManualClock::at(1_700_000_000));
    let t = AuthThrottle::new(
        ThrottleSettings {
            burst: 2,
            per_minute: 1,
            max_entries: 64,
        },
        clock.clone(),
    );
    for i in 0..5_000u32 {
        let client = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let agent = format!("claimed_{i}");
        t.failed(client, Some(&agent), &[]);
        t.verified(
            &agent,
            Presented::Secret {
                agent: &agent,
                secret: STRONG,
            },
        );
    }
    let (clients, agents, good) = t.entries();
    assert!(
        clients <= 64 && agents <= 64 && good <= 64,
        "{clients} {agents} {good}"
    );
    // Per agent, only the most recent credentials are kept.
    for i in 0..20 {
        t.verified("busy_bot", Presented::Token(&format!("token-{i}")));
    }
    let first = Presented::Token("token-0").fingerprint();
    let last = Presented::Token("token-19").fingerprint();
    let c = ip("203.0.113.70");
    fail_n(&t, c, None, 2);
    assert!(t.check(c, None, &[first]).is_err());
    assert_eq!(t.check(c, None, &[last]), Ok(()));
    // Refilled entries are forgotten when room is needed.
    clock.advance(Duration::from_secs(3_600));
    let fresh = ip("203.0.113.71");
    fail_n(&t, fresh, None, 2);
    assert!(t.check(fresh, None, &[]).is_err());
    assert!(t.entries().0 <= 64);
}

#[test]
fn burst_zero_turns_throttling_off() {
    let (t, _clock) = throttle(0, 10);
    assert!(!t.enabled());
    let c = ip("203.0.113.80");
    for _ in 0..1_000 {
        assert_eq!(t.check(c, Some("bot"), &[]), Ok(()));
        t.failed(c, Some("bot"), &[]);
    }
    assert_eq!(t.entries(), (0, 0, 0));
}

#[test]
fn a_throttled_attempt_is_a_429_with_retry_after() {
    let clock = Arc::new(ManualClock::at(0));
    let t = AuthThrottle::new(ThrottleSettings::default(), clock);
    let c = ip("203.0.113.90");
    fail_n(&t, c, Some("bot"), 20);
    let e = t.check(c, Some("bot"), &[]).unwrap_err();
    assert_eq!(e.to_api_error().status_code(), 429);
    assert_eq!(e.to_api_error().code, "auth_throttled");
    assert_eq!(e.to_api_error().retry_after_secs, Some(6));
}
