use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn seeded(n: u8) -> Arc<SigningKey> {
    Arc::new(SigningKey::from_seed(&[n; 32]))
}

fn issuer() -> TokenIssuer {
    TokenIssuer::new("portcullis", seeded(1))
}

fn agent() -> Agent {
    let mut a = Agent::new("demo", "acme", NOW);
    a.generation = 3;
    a.token_ttl_secs = 600;
    a
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn good_claims() -> serde_json::Value {
    json!({
        "iss": "portcullis", "sub": "demo", "tenant": "acme", "scope": "a:b",
        "gen": 3, "iat": NOW, "nbf": NOW, "exp": NOW + 600, "jti": "x"
    })
}

/// Signs arbitrary claims with a real key through jsonwebtoken.
fn sign_with(key: &SigningKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key.encoding_key()).unwrap()
}

#[test]
fn issue_then_verify() {
    let iss = issuer();
    let t = iss.issue(&agent(), &scopes(&["a:b", "c:d"]), NOW).unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, 600);
    assert_eq!(t.scope, "a:b c:d");
    assert!(looks_like_jwt(&t.access_token));
    let c = iss.verify(&t.access_token, NOW).unwrap();
    assert_eq!(c, t.claims);
    assert_eq!(c.sub, "demo");
    assert_eq!(c.tenant, "acme");
    assert_eq!(c.gen, 3);
    assert_eq!((c.iat, c.nbf, c.exp), (NOW, NOW, NOW + 600));
    assert_eq!(c.scopes(), scopes(&["a:b", "c:d"]));
    // Unique token ids.
    let t2 = iss.issue(&agent(), &[], NOW).unwrap();
    assert_ne!(t.claims.jti, t2.claims.jti);
    assert_eq!(
        iss.verify(&t2.access_token, NOW).unwrap().scopes(),
        Vec::<String>::new()
    );
    // Serialised body has exactly the four OAuth fields.
    let body = serde_json::to_value(&t).unwrap();
    let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "scope", "token_type"]);
    // The header names our key.
    let h = jsonwebtoken::decode_header(&t.access_token).unwrap();
    assert_eq!(h.alg, Algorithm::EdDSA);
    assert_eq!(h.kid.as_deref(), Some(iss.key().kid()));
}

#[test]
fn expiry_is_strict() {
    let iss = issuer();
    let t = iss.issue(&agent(), &[], NOW).unwrap().access_token;
    assert!(iss.verify(&t, NOW + 599).is_ok());
    assert_eq!(iss.verify(&t, NOW + 600), Err(TokenError::Expired));
    assert_eq!(iss.verify(&t, u64::MAX), Err(TokenError::Expired));
}

#[test]
fn not_yet_valid_beyond_leeway() {
    let iss = issuer();
    let t = iss.issue(&agent(), &[], NOW).unwrap().access_token;
    assert!(iss.verify(&t, NOW - CLOCK_SKEW_LEEWAY_SECS).is_ok());
    assert_eq!(
        iss.verify(&t, NOW - CLOCK_SKEW_LEEWAY_SECS - 1),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(iss.verify(&t, 0), Err(TokenError::NotYetValid));
    // A future iat alone is refused as well.
    let mut c = good_claims();
    c["iat"] = json!(NOW + 100);
    c["exp"] = json!(NOW + 700);
    let t = sign_with(iss.key(), None, &c);
    assert_eq!(iss.verify(&t, NOW), Err(TokenError::NotYetValid));
}

#[test]
fn wrong_key_is_refused() {
    let iss = issuer();
    let other = TokenIssuer::new("portcullis", seeded(2));
    let t = other.issue(&agent(), &[], NOW).unwrap().access_token;
    assert_eq!(iss.verify(&t, NOW), Err(TokenError::UnknownKey));
    // Without a kid (or with ours) the signature itself fails.
    let t = sign_with(other.key(), None, &good_claims());
    assert_eq!(iss.verify(&t, NOW), Err(TokenError::BadSignature));
    let t = sign_with(other.key(), Some(iss.key().kid()), &good_claims());
    assert_eq!(iss.verify(&t, NOW), Err(TokenError::BadSignature));
    // Control: same claims with our key pass.
    let t = sign_with(iss.key(), None, &good_claims());
    assert!(iss.verify(&t, NOW).is_ok());
}

#[test]
fn tampered_payload_breaks_signature() {
    let iss = issuer();
    let t = iss
        .issue(&agent(), &scopes(&["a:b"]), NOW)
        .unwrap()
        .access_token;
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = good_claims();
    c["scope"] = json!("admin:all");
    let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_eq!(iss.verify(&forged, NOW), Err(TokenError::BadSignature));
    // Signature from another token.
    let t2 = iss.issue(&agent(), &[], NOW).unwrap().access_token;
    let sig2 = t2.rsplit('.').next().unwrap();
    let mixed = format!("{}.{}.{}", parts[0], parts[1], sig2);
    assert_eq!(iss.verify(&mixed, NOW), Err(TokenError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let iss = issuer();
    for alg in ["none", "None", "NONE", ""] {
        let h = b64(&json!({"alg": alg, "typ": "JWT"}));
        let c = b64(&good_claims());
        assert_eq!(
            iss.verify(&format!("{h}.{c}.AAAA"), NOW),
            Err(TokenError::UnsupportedAlgorithm),
            "{alg}"
        );
        // Unsigned form with an empty signature segment.
        assert_eq!(
            iss.verify(&format!("{h}.{c}."), NOW),
            Err(TokenError::Malformed)
        );
    }
    // No alg at all.
    let h = b64(&json!({"typ": "JWT"}));
    let c = b64(&good_claims());
    assert_eq!(
        iss.verify(&format!("{h}.{c}.AAAA"), NOW),
        Err(TokenError::Malformed)
    );
}

#[test]
fn hs256_key_confusion_is_refused() {
    let iss = issuer();
    let x = URL_SAFE_NO_PAD.encode(iss.key().public_key());
    let secrets: Vec<Vec<u8>> = vec![
        iss.key().public_key().to_vec(),
        x.into_bytes(),
        serde_json::to_vec(&iss.key().jwk()).unwrap(),
    ];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut h = Header::new(alg);
            h.kid = Some(iss.key().kid().to_owned());
            let t = jsonwebtoken::encode(&h, &good_claims(), &EncodingKey::from_secret(&secret))
                .unwrap();
            assert_eq!(iss.verify(&t, NOW), Err(TokenError::UnsupportedAlgorithm));
        }
    }
}

#[test]
fn other_asymmetric_algs_are_refused() {
    let iss = issuer();
    let c = b64(&good_claims());
    for alg in [
        "RS256", "PS256", "ES256", "ES384", "Ed25519", "eddsa", "EdDSA ",
    ] {
        let h = b64(&json!({"alg": alg, "kid": iss.key().kid()}));
        assert_eq!(
            iss.verify(&format!("{h}.{c}.AAAA"), NOW),
            Err(TokenError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
}

#[test]
fn wrong_issuer() {
    let key = seeded(1);
    let a = TokenIssuer::new("gateway-a", key.clone());
    let b = TokenIssuer::new("gateway-b", key);
    let t = a.issue(&agent(), &[], NOW).unwrap().access_token;
    assert_eq!(b.verify(&t, NOW), Err(TokenError::WrongIssuer));
    assert!(a.verify(&t, NOW).is_ok());
}

#[test]
fn truncated_tokens_never_verify() {
    let iss = issuer();
    let t = iss
        .issue(&agent(), &scopes(&["a:b"]), NOW)
        .unwrap()
        .access_token;
    for end in 0..t.len() {
        let r = iss.verify(&t[..end], NOW);
        assert!(r.is_err(), "prefix of {end} bytes verified");
    }
    // Truncated in the middle of each segment, kept three-part.
    let parts: Vec<&str> = t.split('.').collect();
    for i in 0..3 {
        let mut p: Vec<String> = parts.iter().map(|s| (*s).to_owned()).collect();
        let half = p[i].len() / 2;
        p[i].truncate(half);
        let r = iss.verify(&p.join("."), NOW);
        assert!(
            matches!(r, Err(TokenError::Malformed | TokenError::BadSignature)),
            "{i}: {r:?}"
        );
    }
}

#[test]
fn missing_or_mistyped_claims_are_malformed() {
    let iss = issuer();
    for field in [
        "iss", "sub", "tenant", "scope", "gen", "iat", "nbf", "exp", "jti",
    ] {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(field);
        let t = sign_with(iss.key(), None, &c);
        assert_eq!(iss.verify(&t, NOW), Err(TokenError::Malformed), "{field}");
    }
    for (field, v) in [
        ("gen", json!("3")),
        ("exp", json!(-1)),
        ("exp", json!(1.5)),
        ("scope", json!(["a:b"])),
        ("sub", json!(null)),
    ] {
        let mut c = good_claims();
        c[field] = v;
        let t = sign_with(iss.key(), None, &c);
        assert_eq!(iss.verify(&t, NOW), Err(TokenError::Malformed), "{field}");
    }
    // exp not after iat.
    let mut c = good_claims();
    c["exp"] = json!(NOW);
    let t = sign_with(iss.key(), None, &c);
    assert_eq!(iss.verify(&t, NOW - 1), Err(TokenError::Malformed));
}

#[test]
fn crit_header_is_refused() {
    let iss = issuer();
    let h = b64(&json!({"alg": "EdDSA", "crit": ["exp"], "exp": 1}));
    let c = b64(&good_claims());
    assert_eq!(
        iss.verify(&format!("{h}.{c}.AAAA"), NOW),
        Err(TokenError::Malformed)
    );
}

#[test]
fn garbage_never_panics() {
    let iss = issuer();
    let huge = "eyJ".to_owned() + &"A".repeat(1 << 20) + ".eyJ.AAAA";
    let inputs: Vec<String> = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "eyJ.eyJ.eyJ".into(),
        "eyJhbGciOiJFZERTQSJ9.eyJ9.sig".into(),
        "eyJhbGciOiJFZERTQSJ9..sig".into(),
        "eyJ+/=.x.y".into(),
        "é.é.é".into(),
        "eyJhbGciOiJFZERTQSJ9.bm90IGpzb24.c2ln".into(),
        format!("{}.{}.{}", b64(&json!([1, 2])), b64(&good_claims()), "AAAA"),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": "EdDSA"})),
            b64(&json!("str")),
            "AAAA"
        ),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": 5})),
            b64(&good_claims()),
            "AAAA"
        ),
        huge,
    ];
    for s in &inputs {
        assert!(iss.verify(s, NOW).is_err(), "{:?}", &s[..s.len().min(40)]);
    }
    // Valid structure, signature of the wrong length.
    let t = iss.issue(&agent(), &[], NOW).unwrap().access_token;
    let (msg, _) = t.rsplit_once('.').unwrap();
    for sig in ["AA", "A", &"A".repeat(200)] {
        let r = iss.verify(&format!("{msg}.{sig}"), NOW);
        assert!(
            matches!(r, Err(TokenError::Malformed | TokenError::BadSignature)),
            "{r:?}"
        );
    }
}

#[test]
fn jwt_shape_detection() {
    assert!(looks_like_jwt("eyJa.b.c"));
    assert!(!looks_like_jwt("eyJa.b"));
    assert!(!looks_like_jwt("eyJa.b.c.d"));
    assert!(!looks_like_jwt("eyJa..c"));
    assert!(!looks_like_jwt("abc.b.c"));
    assert!(!looks_like_jwt("eyJa.b.c="));
    // A generated secret never looks like a JWT.
    assert!(!looks_like_jwt(&crate::secret::generate_secret()));
}

#[test]
fn cached_tokens_still_get_time_checks() {
    let iss = issuer();
    let t = iss.issue(&agent(), &[], NOW).unwrap().access_token;
    assert_eq!(iss.verified_cache_len(), 0);
    assert!(iss.verify(&t, NOW).is_ok());
    assert_eq!(iss.verified_cache_len(), 1);
    // Second verification comes from the cache and still honours time.
    assert!(iss.verify(&t, NOW + 1).is_ok());
    assert_eq!(iss.verify(&t, NOW + 600), Err(TokenError::Expired));
    assert_eq!(
        iss.verify(&t, NOW - CLOCK_SKEW_LEEWAY_SECS - 1),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(iss.verified_cache_len(), 1);
    // Refused tokens are not remembered; a tampered copy is checked in full.
    let other = TokenIssuer::new("portcullis", seeded(2));
    let foreign = other.issue(&agent(), &[], NOW).unwrap().access_token;
    assert!(iss.verify(&foreign, NOW).is_err());
    let (msg, sig) = t.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{msg}.{flipped}{}", &sig[1..]);
    assert!(iss.verify(&tampered, NOW).is_err());
    assert_eq!(iss.verified_cache_len(), 1);
    // A token already expired at first sight is not remembered.
    let old = iss.issue(&agent(), &[], NOW - 10_000).unwrap().access_token;
    assert_eq!(iss.verify(&old, NOW), Err(TokenError::Expired));
    assert_eq!(iss.verified_cache_len(), 1);
    // Another issuer sharing the key but not the name does not share the cache.
    let b = TokenIssuer::new("elsewhere", seeded(1));
    assert_eq!(b.verify(&t, NOW), Err(TokenError::WrongIssuer));
}

#[test]
fn cache_stays_bounded() {
    let iss = issuer().with_cache_capacity(20);
    let mut a = agent();
    a.token_ttl_secs = 60;
    let mut first = String::new();
    for i in 0..70u64 {
        // One token per second; older tokens expire as time moves on.
        let now = NOW + i;
        let t = iss.issue(&a, &[], now).unwrap().access_token;
        if i == 0 {
            first.clone_from(&t);
        }
        assert!(iss.verify(&t, now).is_ok());
        assert!(iss.verified_cache_len() <= 20);
    }
    // Eviction never changes answers, only cost.
    assert_eq!(iss.verify(&first, NOW + 70), Err(TokenError::Expired));
    assert!(iss.verify(&first, NOW + 59).is_ok());
    let off = issuer().with_cache_capacity(0);
    let t = off.issue(&a, &[], NOW).unwrap().access_token;
    assert!(off.verify(&t, NOW).is_ok());
    assert_eq!(off.verified_cache_len(), 0);
}
