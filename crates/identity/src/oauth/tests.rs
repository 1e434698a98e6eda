use super::*;
use crate::key::SigningKey;
use crate::secret::hash_secret;
use base64::engine::general_purpose::STANDARD;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "Zr0_secret-value";
const FORM: &[u8] = b"application/x-www-form-urlencoded";
const JSON: &[u8] = b"application/json";

/// (Authorization, body, what).
type Case401 = (Option<Vec<u8>>, Vec<u8>, &'static str);
/// (Content-Type, Authorization, body, what).
type Case400 = (
    Option<&'static [u8]>,
    Option<Vec<u8>>,
    Vec<u8>,
    &'static str,
);

fn agent(id: &str) -> Agent {
    let mut a = Agent::new(id, "acme", NOW);
    a.secret_sha256 = Some(hash_secret(SECRET));
    a.allowed_scopes = vec!["a:read".into(), "b:write".into(), "c:x".into()];
    a.token_ttl_secs = 300;
    a
}

fn registry() -> Registry {
    let mut sus = agent("sus");
    sus.status = AgentStatus::Suspended;
    let mut rev = agent("rev");
    rev.status = AgentStatus::Revoked;
    let mut off = agent("off");
    off.mode = AgentMode::Disabled;
    let mut helper = agent("helper");
    helper.parent = Some("demo".into());
    let mut plus = agent("plus");
    plus.secret_sha256 = Some(hash_secret("a+b c%"));
    Registry::from_agents(vec![agent("demo"), sus, rev, off, helper, plus])
}

fn issuer() -> TokenIssuer {
    TokenIssuer::new("portcullis", Arc::new(SigningKey::from_seed(&[4; 32])))
}

fn basic(id: &str, secret: &str) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))).into_bytes()
}

fn form_creds(extra: &str) -> Vec<u8> {
    format!("grant_type=client_credentials&client_id=demo&client_secret={SECRET}{extra}")
        .into_bytes()
}

fn auth(ct: &[u8], authz: Option<&[u8]>, body: &[u8]) -> Result<ClientGrantRequest, OAuthError> {
    authenticate_client(Some(ct), authz, body, &registry())
}

#[test]
fn form_body_credentials_issue_a_verifiable_token() {
    let r = registry();
    let iss = issuer();
    let g = token_endpoint(Some(FORM), None, &form_creds(""), &r, &iss, NOW).unwrap();
    assert_eq!(g.agent.id, "demo");
    assert_eq!(g.token.scope, "a:read b:write c:x");
    assert_eq!(g.token.expires_in, 300);
    let body = g.to_json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body.as_object().unwrap().len(), 4);
    let claims = iss
        .verify(body["access_token"].as_str().unwrap(), NOW)
        .unwrap();
    assert_eq!(claims.sub, "demo");
    assert_eq!(claims.gen, 1);
    assert_eq!(claims.scopes().len(), 3);
}

#[test]
fn basic_header_credentials_and_scope_subset() {
    let g = auth(
        b"application/x-www-form-urlencoded; charset=UTF-8",
        Some(&basic("demo", SECRET)),
        b"grant_type=client_credentials&scope=b%3Awrite+a:read+b:write",
    )
    .unwrap();
    assert_eq!(g.scopes, ["b:write".to_owned(), "a:read".to_owned()]);
    // The Basic id may be repeated in the body.
    assert!(auth(
        FORM,
        Some(&basic("demo", SECRET)),
        b"grant_type=client_credentials&client_id=demo"
    )
    .is_ok());
}

#[test]
fn basic_secrets_form_decoded_or_verbatim() {
    // RFC 6749 §2.3.1 encoding: "a+b c%" -> "a%2Bb+c%25".
    assert!(auth(
        FORM,
        Some(&basic("plus", "a%2Bb+c%25")),
        b"grant_type=client_credentials"
    )
    .is_ok());
    // A client that did not encode (curl -u).
    assert!(auth(
        FORM,
        Some(&basic("plus", "a+b c%")),
        b"grant_type=client_credentials"
    )
    .is_ok());
    assert_eq!(
        auth(
            FORM,
            Some(&basic("plus", "a b c%")),
            b"grant_type=client_credentials"
        )
        .unwrap_err()
        .status_code(),
        401
    );
}

#[test]
fn json_bodies() {
    let body = format!(
        r#"{{"grant_type":"client_credentials","client_id":"demo","client_secret":"{SECRET}","scope":"c:x"}}"#
    );
    assert_eq!(
        auth(JSON, None, body.as_bytes()).unwrap().scopes,
        ["c:x".to_owned()]
    );
    let body = format!(
        r#"{{"grant_type":"client_credentials","client_id":"demo","client_secret":"{SECRET}","scope":["c:x","a:read"],"extra":1}}"#
    );
    assert_eq!(
        auth(b"Application/JSON", None, body.as_bytes())
            .unwrap()
            .scopes
            .len(),
        2
    );
    for bad in [
        &b"not json"[..],
        b"[]",
        b"\"x\"",
        br#"{"grant_type":"client_credentials","grant_type":"client_credentials"}"#,
        br#"{"grant_type":5}"#,
        br#"{"grant_type":"client_credentials","scope":{"a":1}}"#,
        b"",
    ] {
        let e = auth(JSON, Some(&basic("demo", SECRET)), bad).unwrap_err();
        assert_eq!(
            (e.status_code(), e.error),
            (400, "invalid_request"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn grant_type_checks() {
    let e = auth(FORM, Some(&basic("demo", SECRET)), b"scope=a:read").unwrap_err();
    assert_eq!((e.status_code(), e.error), (400, "invalid_request"));
    let e = auth(FORM, Some(&basic("demo", SECRET)), b"grant_type=password").unwrap_err();
    assert_eq!((e.status_code(), e.error), (400, "unsupported_grant_type"));
    let e = auth(
        FORM,
        Some(&basic("demo", SECRET)),
        b"grant_type=Client_Credentials",
    )
    .unwrap_err();
    assert_eq!(e.error, "unsupported_grant_type");
}

#[test]
fn client_authentication_failures_are_401() {
    let cases: Vec<Case401> = vec![
        (
            None,
            b"grant_type=client_credentials&client_id=demo&client_secret=wrong".to_vec(),
            "wrong",
        ),
        (
            Some(basic("demo", "wrong")),
            b"grant_type=client_credentials".to_vec(),
            "wrong basic",
        ),
        (
            Some(basic("ghost", SECRET)),
            b"grant_type=client_credentials".to_vec(),
            "unknown",
        ),
        (
            Some(basic("Bad-Id", SECRET)),
            b"grant_type=client_credentials".to_vec(),
            "bad id",
        ),
        (
            Some(basic("sus", SECRET)),
            b"grant_type=client_credentials".to_vec(),
            "suspended",
        ),
        (
            Some(basic("rev", SECRET)),
            b"grant_type=client_credentials".to_vec(),
            "revoked",
        ),
        (
            Some(basic("helper", SECRET)),
            b"grant_type=client_credentials".to_vec(),
            "sub-agent",
        ),
        (
            None,
            b"grant_type=client_credentials".to_vec(),
            "no credentials",
        ),
        (
            None,
            b"grant_type=client_credentials&client_id=demo".to_vec(),
            "no secret",
        ),
        (
            Some(b"Bearer abc".to_vec()),
            b"grant_type=client_credentials".to_vec(),
            "bearer",
        ),
    ];
    for (authz, body, what) in cases {
        let e = auth(FORM, authz.as_deref(), &body).unwrap_err();
        assert_eq!(
            (e.status_code(), e.error),
            (401, "invalid_client"),
            "{what}"
        );
        assert_eq!(e.www_authenticate(), Some("Basic realm=\"portcullis\""));
    }
    // Suspended/revoked are only told apart once the secret was right.
    let e = auth(
        FORM,
        Some(&basic("sus", "wrong")),
        b"grant_type=client_credentials",
    )
    .unwrap_err();
    assert_eq!(e.error_description, "client authentication failed");
}

#[test]
fn disabled_agent_is_400_agent_disabled() {
    let e = auth(
        FORM,
        Some(&basic("off", SECRET)),
        b"grant_type=client_credentials",
    )
    .unwrap_err();
    assert_eq!((e.status_code(), e.code), (400, "agent_disabled"));
    let j = e.to_json();
    assert_eq!(j["code"], "agent_disabled");
    assert_eq!(j["error"], "invalid_grant");
    assert_eq!(j["detail"], j["error_description"]);
}

#[test]
fn scope_errors() {
    let b = |s: &str| format!("grant_type=client_credentials&scope={s}").into_bytes();
    let h = basic("demo", SECRET);
    let e = auth(FORM, Some(&h), &b("a:read+admin:all")).unwrap_err();
    assert_eq!((e.status_code(), e.error), (403, "invalid_scope"));
    assert!(e.error_description.contains("admin:all"));
    // Case-sensitive, exact.
    assert_eq!(
        auth(FORM, Some(&h), &b("A:read"))
            .unwrap_err()
            .status_code(),
        403
    );
    assert_eq!(
        auth(FORM, Some(&h), &b("a:*")).unwrap_err().status_code(),
        403
    );
    // Malformed scope syntax is 400.
    for s in ["a::b", "a%2Fb", "%22x%22", ":"] {
        let e = auth(FORM, Some(&h), &b(s)).unwrap_err();
        assert_eq!((e.status_code(), e.error), (400, "invalid_scope"), "{s}");
    }
    let many: Vec<String> = (0..=MAX_REQUESTED_SCOPES)
        .map(|i| format!("s{i}"))
        .collect();
    assert_eq!(
        auth(FORM, Some(&h), &b(&many.join("+")))
            .unwrap_err()
            .status_code(),
        400
    );
    // Empty scope means every allowed scope.
    assert_eq!(auth(FORM, Some(&h), &b("")).unwrap().scopes.len(), 3);
    assert_eq!(auth(FORM, Some(&h), &b("++")).unwrap().scopes.len(), 3);
    // Agent with no allowed scopes asking for one.
    let mut a = agent("empty");
    a.allowed_scopes.clear();
    let r = Registry::from_agents(vec![a]);
    let e = authenticate_client(Some(FORM), Some(&basic("empty", SECRET)), &b("a:read"), &r)
        .unwrap_err();
    assert_eq!(e.status_code(), 403);
    assert!(
        authenticate_client(Some(FORM), Some(&basic("empty", SECRET)), &b(""), &r)
            .unwrap()
            .scopes
            .is_empty()
    );
}

#[test]
fn malformed_requests_are_400() {
    let h = basic("demo", SECRET);
    let cases: Vec<Case400> = vec![
        (
            None,
            Some(h.clone()),
            b"grant_type=client_credentials".to_vec(),
            "no content type",
        ),
        (
            Some(b"text/plain"),
            Some(h.clone()),
            b"grant_type=client_credentials".to_vec(),
            "text",
        ),
        (
            Some(b"\xff"),
            Some(h.clone()),
            b"grant_type=client_credentials".to_vec(),
            "bad ct",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            b"grant_type=client_credentials&grant_type=client_credentials".to_vec(),
            "dup",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            b"grant_type=client_credentials&scope=%zz".to_vec(),
            "escape",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            b"grant_type=client_credentials&scope=%ff".to_vec(),
            "utf8",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            b"grant_type=client\xff".to_vec(),
            "raw utf8",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            format!(
                "grant_type=client_credentials&scope={}",
                "a".repeat(MAX_SCOPE_LEN + 1)
            )
            .into_bytes(),
            "long scope",
        ),
        (
            Some(FORM),
            None,
            format!(
                "grant_type=client_credentials&client_id=demo&client_secret={}",
                "x".repeat(MAX_FIELD_LEN + 1)
            )
            .into_bytes(),
            "long secret",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            "a=1&".repeat(40).into_bytes(),
            "too many pairs",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            form_creds(""),
            "basic and body secret",
        ),
        (
            Some(FORM),
            Some(h.clone()),
            b"grant_type=client_credentials&client_id=other".to_vec(),
            "different ids",
        ),
        (
            Some(FORM),
            Some(b"Basic !!!".to_vec()),
            b"grant_type=client_credentials".to_vec(),
            "bad base64",
        ),
        (
            Some(FORM),
            Some(format!("Basic {}", STANDARD.encode("nocolon")).into_bytes()),
            b"grant_type=client_credentials".to_vec(),
            "no colon",
        ),
        (
            Some(FORM),
            Some(format!("Basic {}", STANDARD.encode(b"demo:\xff")).into_bytes()),
            b"grant_type=client_credentials".to_vec(),
            "non-utf8 basic",
        ),
        (
            Some(FORM),
            Some(b"Basic".to_vec()),
            b"grant_type=client_credentials".to_vec(),
            "no param",
        ),
        (
            Some(FORM),
            Some(basic(&"a".repeat(MAX_FIELD_LEN + 1), "x")),
            b"grant_type=client_credentials".to_vec(),
            "long basic",
        ),
    ];
    for (ct, authz, body, what) in cases {
        let e = authenticate_client(ct, authz.as_deref(), &body, &registry()).unwrap_err();
        assert_eq!(e.status_code(), 400, "{what}: {e}");
        let j = e.to_json();
        assert_eq!(j["code"], j["error"], "{what}");
        assert!(!e.error_description.contains('"') && !e.error_description.contains('\\'));
    }
}

#[test]
fn two_step_lets_policy_intervene() {
    let r = registry();
    let iss = issuer();
    let req = authenticate_client(
        Some(FORM),
        Some(&basic("demo", SECRET)),
        b"grant_type=client_credentials",
        &r,
    )
    .unwrap();
    // A kind=token policy denial is answered with scope_denied.
    let denied = OAuthError::scope_denied("denied by policy");
    assert_eq!(
        (denied.status_code(), denied.error, denied.result()),
        (403, "invalid_scope", "invalid_scope")
    );
    let g = issue_token(&req, &iss, NOW).unwrap();
    assert_eq!(g.token.claims.scopes(), req.scopes);
    assert!(String::from_utf8(g.to_body()).unwrap().ends_with("}\n"));
}

#[test]
fn garbage_never_panics() {
    let r = registry();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for len in 0..400 {
        let mut body = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let alphabet = b"=&%+a:_ \xff{}\"[]";
            body.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        for ct in [FORM, JSON] {
            assert!(authenticate_client(Some(ct), Some(&body), &body, &r).is_err());
            assert!(authenticate_client(Some(ct), None, &body, &r).is_err());
        }
    }
}

/// A refusal names the agent exactly when its credentials were verified: status, mode and
/// scope refusals are attributed; unknown clients and wrong secrets never are, whatever id
/// they claim.
#[test]
fn refusals_after_authentication_carry_the_agent() {
    let r = registry();
    let refusal = |authz: Vec<u8>, body: &str| {
        TokenRequest::parse(Some(FORM), Some(&authz), body.as_bytes())
            .unwrap()
            .authenticate(&r)
            .unwrap_err()
    };
    let grant = "grant_type=client_credentials";
    let attributed = [
        (basic("sus", SECRET), grant, "invalid_client"),
        (basic("rev", SECRET), grant, "invalid_client"),
        (basic("off", SECRET), grant, "agent_disabled"),
        (
            basic("demo", SECRET),
            "grant_type=client_credentials&scope=a:read%20z:admin",
            "invalid_scope",
        ),
    ];
    for (authz, body, code) in attributed {
        let e = refusal(authz, body);
        assert_eq!(e.error.code, code, "{e:?}");
        let agent = e.agent.unwrap_or_else(|| panic!("not attributed: {code}"));
        assert_eq!(agent.tenant, "acme");
    }
    let e = refusal(
        basic("demo", SECRET),
        "grant_type=client_credentials&scope=z:admin",
    );
    assert_eq!(e.agent.map(|a| a.id.clone()).as_deref(), Some("demo"));
    for (authz, what) in [
        (basic("demo", "wrong-secret-value"), "wrong secret"),
        (
            basic("sus", "wrong-secret-value"),
            "wrong secret of a suspended agent",
        ),
        (basic("ghost", SECRET), "unknown client"),
        (basic("helper", SECRET), "a sub-agent"),
        (basic("BAD ID", SECRET), "an impossible id"),
    ] {
        let e = refusal(authz, grant);
        assert_eq!(e.error.code, "invalid_client", "{what}");
        assert!(e.agent.is_none(), "{what} attributed");
    }
    // The parsed request exposes the claim and the candidates, not a verdict.
    let t =
        TokenRequest::parse(Some(FORM), Some(&basic("demo", "a%2Bb")), grant.as_bytes()).unwrap();
    assert_eq!(t.client_id(), "demo");
    assert_eq!(t.secrets(), ["a+b".to_owned(), "a%2Bb".to_owned()]);
}

#[test]
fn token_requests_are_throttled_and_the_real_client_still_passes() {
    use crate::{AuthThrottle, ThrottleScope, ThrottleSettings};
    use portcullis_core::ManualClock;
    let strong = crate::generate_secret();
    let mut a = agent("strong_bot");
    a.secret_sha256 = Some(hash_secret(&strong));
    let r = Registry::from_agents(vec![agent("demo"), a]);
    let clock = Arc::new(ManualClock::at(NOW));
    let t = AuthThrottle::new(
        ThrottleSettings {
            burst: 4,
            per_minute: 10,
            max_entries: 100,
        },
        clock.clone(),
    );
    let nat: std::net::IpAddr = "203.0.113.4".parse().unwrap();
    let req = |id: &str, secret: &str, scope: &str| {
        TokenRequest::parse(
            Some(FORM),
            Some(&basic(id, secret)),
            format!("grant_type=client_credentials{scope}").as_bytes(),
        )
        .unwrap()
    };
    // The real client gets a token first.
    assert!(req("strong_bot", &strong, "")
        .authenticate_throttled(&r, nat, &t)
        .is_ok());
    // A scope escalation by an authenticated client is not a guess.
    for _ in 0..10 {
        let e = req("strong_bot", &strong, "&scope=z:admin")
            .authenticate_throttled(&r, nat, &t)
            .unwrap_err();
        assert_eq!(e.error.code, "invalid_scope");
    }
    for i in 0..4 {
        let e = req("strong_bot", &format!("guess-{i}"), "")
            .authenticate_throttled(&r, nat, &t)
            .unwrap_err();
        assert_eq!(e.error.code, "invalid_client");
        assert!(e.throttled.is_none());
    }
    let e = req("demo", SECRET, "")
        .authenticate_throttled(&r, nat, &t)
        .unwrap_err();
    assert_eq!(e.error.status_code(), 429);
    assert_eq!(e.error.code, "auth_throttled");
    assert_eq!(e.error.error, "temporarily_unavailable");
    assert_eq!(e.error.retry_after_secs, Some(6));
    assert_eq!(e.throttled.map(|t| t.scope), Some(ThrottleScope::Client));
    assert!(e.agent.is_none());
    assert_eq!(e.error.to_json()["code"], "auth_throttled");
    // The real client's secret still passes; a short one (SECRET) never would.
    let g = req("strong_bot", &strong, "")
        .authenticate_throttled(&r, nat, &t)
        .unwrap();
    assert_eq!(g.agent.id, "strong_bot");
    // From elsewhere, the guessed-at agent is throttled too.
    let elsewhere: std::net::IpAddr = "198.51.100.4".parse().unwrap();
    let e = req("strong_bot", "another-guess", "")
        .authenticate_throttled(&r, elsewhere, &t)
        .unwrap_err();
    assert_eq!(e.throttled.map(|t| t.scope), Some(ThrottleScope::Agent));
    clock.advance(std::time::Duration::from_secs(6));
    assert!(req("demo", SECRET, "")
        .authenticate_throttled(&r, nat, &t)
        .is_ok());
    // An unknown client id is charged to that id only, not to the address.
    let fresh: std::net::IpAddr = "192.0.2.44".parse().unwrap();
    for _ in 0..4 {
        let e = req("ghost", SECRET, "")
            .authenticate_throttled(&r, fresh, &t)
            .unwrap_err();
        assert_eq!(e.error.code, "invalid_client");
    }
    let e = req("ghost", SECRET, "")
        .authenticate_throttled(&r, fresh, &t)
        .unwrap_err();
    assert_eq!(e.throttled.map(|t| t.scope), Some(ThrottleScope::Agent));
    assert!(req("demo", SECRET, "")
        .authenticate_throttled(&r, fresh, &t)
        .is_ok());
}
