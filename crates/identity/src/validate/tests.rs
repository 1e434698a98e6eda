use super::*;

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn scopes() {
    assert!(validate_scopes(&strings(&[
        "stripe:customer:read",
        "openai:chat:create",
        "a"
    ]))
    .is_ok());
    assert!(validate_scopes(&[]).is_ok());
    for (bad, field) in [
        (strings(&["ok:x", "a::b"]), "scopes[1]"),
        (strings(&[""]), "scopes[0]"),
        (strings(&["a b"]), "scopes[0]"),
        (strings(&["a:b", "a:b"]), "scopes[1]"),
        (strings(&["é"]), "scopes[0]"),
        (vec!["a".repeat(129)], "scopes[0]"),
    ] {
        assert_eq!(validate_scopes(&bad).unwrap_err().field, field, "{bad:?}");
    }
    let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
    assert_eq!(validate_scopes(&many).unwrap_err().field, "scopes");
    // Case-sensitive: differing case is not a duplicate.
    assert!(validate_scopes(&strings(&["a:B", "a:b"])).is_ok());
}

#[test]
fn ids_tenants_groups_ttl() {
    assert!(validate_id("id", "demo_agent1").is_ok());
    for bad in ["", "a", "Demo", "1a", "a-b", "a b", &"a".repeat(65)] {
        assert_eq!(validate_id("id", bad).unwrap_err().field, "id");
        assert_eq!(validate_tenant(bad).unwrap_err().field, "tenant");
    }
    assert!(validate_groups(&strings(&["ops", "bots"])).is_ok());
    assert_eq!(
        validate_groups(&strings(&["ops", "Ops"]))
            .unwrap_err()
            .field,
        "groups[1]"
    );
    assert_eq!(
        validate_groups(&strings(&["ops", "ops"]))
            .unwrap_err()
            .reason,
        "duplicate entry"
    );
    assert!(validate_token_ttl(60).is_ok());
    assert!(validate_token_ttl(86_400).is_ok());
    assert_eq!(validate_token_ttl(59).unwrap_err().field, "token_ttl");
    assert!(validate_token_ttl(86_401).is_err());
    assert!(validate_token_ttl(0).is_err());
}

#[test]
fn whole_agent_reports_every_field() {
    let mut a = Agent::new("demo", "acme", 0);
    assert!(validate_agent(&a).is_ok());
    a.id = "Bad".into();
    a.tenant = "acme-corp".into();
    a.groups = strings(&["x"]);
    a.allowed_scopes = strings(&["::"]);
    a.token_ttl_secs = 5;
    a.secret_sha256 = Some("abc".into());
    a.parent = Some("P".into());
    a.generation = 0;
    let errs = validate_agent(&a).unwrap_err();
    let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "id",
            "tenant",
            "parent",
            "groups[0]",
            "scopes[0]",
            "token_ttl",
            "secret_sha256",
            "generation"
        ]
    );
    let api = errs.to_api_error();
    assert_eq!(api.status_code(), 422);
    let body = api.to_json(None);
    assert_eq!(body["code"], "validation_error");
    assert_eq!(body["errors"].as_array().unwrap().len(), 8);
    assert_eq!(body["errors"][0]["field"], "id");
}

#[test]
fn update_parsing() {
    let u = AgentConfigUpdate::from_json(
        br#"{"mode":"Shadow","risk_level":"high","token_ttl":"10m","scopes":["a:b"],"groups":["ops"]}"#,
    )
    .unwrap();
    assert_eq!(u.mode, Some(AgentMode::Shadow));
    assert_eq!(u.risk_level, Some(RiskLevel::High));
    assert_eq!(u.token_ttl, Some(600));
    let mut a = Agent::new("demo", "acme", 0);
    u.apply(&mut a, 42);
    assert_eq!(a.mode, AgentMode::Shadow);
    assert_eq!(a.risk_level, RiskLevel::High);
    assert_eq!(a.token_ttl_secs, 600);
    assert_eq!(a.allowed_scopes, strings(&["a:b"]));
    assert_eq!(a.groups, strings(&["ops"]));
    assert_eq!(a.updated_at, 42);

    let off = AgentConfigUpdate::from_json(br#"{"enabled":false}"#).unwrap();
    off.apply(&mut a, 43);
    assert_eq!(a.mode, AgentMode::Disabled);
    let on = AgentConfigUpdate::from_json(br#"{"enabled":true}"#).unwrap();
    on.apply(&mut a, 44);
    assert_eq!(a.mode, AgentMode::Active);
    // Re-enabling a shadow agent keeps it in shadow.
    a.mode = AgentMode::Shadow;
    on.apply(&mut a, 45);
    assert_eq!(a.mode, AgentMode::Shadow);
    assert_eq!(
        AgentConfigUpdate::from_json(br#"{"token_ttl":120}"#)
            .unwrap()
            .token_ttl,
        Some(120)
    );
    // Empty scope list is a valid update (removes every scope).
    assert_eq!(
        AgentConfigUpdate::from_json(br#"{"scopes":[]}"#)
            .unwrap()
            .scopes,
        Some(vec![])
    );
}

#[test]
fn limit_updates_set_keep_and_clear() {
    let mut a = Agent::new("demo", "acme", 0);
    a.limits.tpm = Some(9_000);
    a.limits.max_concurrent = Some(3);
    let u = AgentConfigUpdate::from_json(
        br#"{"limits":{"rpm":60,"tokens_per_day":1000000,"max_concurrent":null}}"#,
    )
    .unwrap();
    u.apply(&mut a, 1);
    assert_eq!(a.limits.rpm, Some(60));
    assert_eq!(a.limits.tpm, Some(9_000), "absent keys are kept");
    assert_eq!(a.limits.tokens_per_day, Some(1_000_000));
    assert_eq!(a.limits.max_concurrent, None, "null removes the override");
    let u = AgentConfigUpdate::from_json(br#"{"limits":{"mcp_calls_per_minute":5}}"#).unwrap();
    u.apply(&mut a, 2);
    assert_eq!(a.limits.mcp_calls_per_minute, Some(5));
    assert_eq!(a.limits.rpm, Some(60), "other overrides are kept");
    let u = AgentConfigUpdate::from_json(br#"{"limits":{"mcp_calls_per_minute":null}}"#).unwrap();
    u.apply(&mut a, 3);
    assert_eq!(a.limits.mcp_calls_per_minute, None);
    for bad in [
        &br#"{"limits":{"mcp_calls_per_minute":0}}"#[..],
        br#"{"limits":{"mcp_calls_per_minute":"5"}}"#,
    ] {
        assert!(
            AgentConfigUpdate::from_json(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Dollar budgets: decimal dollars, kept as micro-dollars; null removes them.
    let u = AgentConfigUpdate::from_json(br#"{"limits":{"usd_per_day":2.5,"usd_per_month":100}}"#)
        .unwrap();
    u.apply(&mut a, 4);
    assert_eq!(a.limits.usd_per_day.map(|u| u.micros()), Some(2_500_000));
    assert_eq!(
        a.limits.usd_per_month.map(|u| u.micros()),
        Some(100_000_000)
    );
    let u = AgentConfigUpdate::from_json(br#"{"limits":{"usd_per_day":null}}"#).unwrap();
    u.apply(&mut a, 5);
    assert_eq!(a.limits.usd_per_day, None);
    assert_eq!(
        a.limits.usd_per_month.map(|u| u.micros()),
        Some(100_000_000)
    );
    for bad in [
        &br#"{"limits":{"usd_per_day":0}}"#[..],
        br#"{"limits":{"usd_per_day":-1}}"#,
        br#"{"limits":{"usd_per_day":"5"}}"#,
        br#"{"limits":{"usd_per_month":1e12}}"#,
        br#"{"limits":{"usd_per_week":5}}"#,
    ] {
        assert!(
            AgentConfigUpdate::from_json(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // An empty limits object changes nothing, which alone is "no fields".
    assert_eq!(
        AgentConfigUpdate::from_json(br#"{"limits":{}}"#).unwrap_err(),
        UpdateError::NoFields
    );
}

#[test]
fn update_errors() {
    for body in [&br#"{}"#[..], br#"{"mode":null}"#] {
        let e = AgentConfigUpdate::from_json(body).unwrap_err();
        assert_eq!(e, UpdateError::NoFields);
        let api = e.to_api_error();
        assert_eq!(
            (api.status_code(), api.detail.as_ref()),
            (400, "No fields to update")
        );
    }
    for body in [&b"[]"[..], b"nope", b"", b"\"x\""] {
        assert_eq!(
            AgentConfigUpdate::from_json(body)
                .unwrap_err()
                .to_api_error()
                .status_code(),
            400
        );
    }
    let cases: &[(&[u8], &str)] = &[
        (br#"{"mode":"off"}"#, "mode"),
        (br#"{"mode":1}"#, "mode"),
        (br#"{"enabled":"yes"}"#, "enabled"),
        (br#"{"risk_level":"EXTREME"}"#, "risk_level"),
        (br#"{"token_ttl":59}"#, "token_ttl"),
        (br#"{"token_ttl":-1}"#, "token_ttl"),
        (br#"{"token_ttl":"2d"}"#, "token_ttl"),
        (br#"{"token_ttl":"99999999999999999999h"}"#, "token_ttl"),
        (br#"{"token_ttl":"25h"}"#, "token_ttl"),
        (br#"{"token_ttl":1.5}"#, "token_ttl"),
        (br#"{"scopes":"a:b"}"#, "scopes"),
        (br#"{"scopes":["a b"]}"#, "scopes[0]"),
        (br#"{"scopes":[1]}"#, "scopes"),
        (br#"{"groups":["Ops"]}"#, "groups[0]"),
        (br#"{"name":"x"}"#, "name"),
        (br#"{"mode":"active","enabled":true}"#, "enabled"),
        (br#"{"limits":5}"#, "limits"),
        (br#"{"limits":{"rpm":0}}"#, "limits.rpm"),
        (br#"{"limits":{"tpm":-5}}"#, "limits.tpm"),
        (
            br#"{"limits":{"tokens_per_day":1.5}}"#,
            "limits.tokens_per_day",
        ),
        (
            br#"{"limits":{"max_concurrent":"4"}}"#,
            "limits.max_concurrent",
        ),
        (br#"{"limits":{"burst":4}}"#, "limits.burst"),
    ];
    for (body, field) in cases {
        let e = AgentConfigUpdate::from_json(body).unwrap_err();
        let UpdateError::Invalid(v) = &e else {
            panic!("{}: {e:?}", String::from_utf8_lossy(body));
        };
        assert_eq!(v.0[0].field, *field, "{}", String::from_utf8_lossy(body));
        assert_eq!(e.to_api_error().status_code(), 422);
    }
}
