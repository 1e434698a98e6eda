//! Decision-query parameters: defaults, good values, and every 422 case.

use portcullis_audit::query::{build_query, parse_time, DEFAULT_SINCE_MS};

const NOW: i64 = 1_800_000_000_000;

fn q(
    params: &[(&str, &str)],
) -> Result<portcullis_store::AuditQuery, portcullis_audit::QueryError> {
    build_query(params.iter().copied(), Some("acme"), NOW)
}

#[test]
fn defaults() {
    let query = q(&[]).unwrap();
    assert_eq!(query.tenant.as_deref(), Some("acme"));
    assert_eq!(query.limit, 50);
    assert_eq!(query.offset, 0);
    assert_eq!(query.since_ms, Some(NOW - DEFAULT_SINCE_MS));
    assert_eq!(query.until_ms, None);
    assert_eq!(query.agent_id, None);
    let all_tenants = build_query([], None, NOW).unwrap();
    assert_eq!(all_tenants.tenant, None);
}

#[test]
fn every_filter_is_carried() {
    let query = q(&[
        ("agent_id", "a1"),
        ("subagent", "s1"),
        ("verdict", "rate_limited"),
        ("policy", "models"),
        ("provider", "openai"),
        ("model", "gpt-4o"),
        ("since", "2026-01-02T03:04:05.678Z"),
        ("until", "2026-01-02T06:04:05+02:00"),
        ("limit", "200"),
        ("offset", "9000"),
    ])
    .unwrap();
    assert_eq!(query.agent_id.as_deref(), Some("a1"));
    assert_eq!(query.subagent.as_deref(), Some("s1"));
    assert_eq!(query.verdict.as_deref(), Some("rate_limited"));
    assert_eq!(query.policy.as_deref(), Some("models"));
    assert_eq!(query.provider.as_deref(), Some("openai"));
    assert_eq!(query.model.as_deref(), Some("gpt-4o"));
    assert_eq!(query.since_ms, Some(1_767_323_045_678));
    assert_eq!(query.until_ms, Some(1_767_326_645_000));
    assert_eq!(query.limit, 200);
    assert_eq!(query.offset, 9000);
}

#[test]
fn relative_times() {
    for (text, ago) in [
        ("90s", 90_000),
        ("30m", 1_800_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        ("0h", 0),
    ] {
        assert_eq!(parse_time("since", text, NOW), Ok(NOW - ago), "{text}");
    }
    assert_eq!(
        parse_time("since", "2026-01-02T05:04:05 02:00", NOW),
        parse_time("since", "2026-01-02T03:04:05Z", NOW)
    );
    assert!(parse_time("since", " 1h", NOW).is_err());
    assert!(parse_time("since", "1 h", NOW).is_err());
    assert!(parse_time("since", "1hé", NOW).is_err());
    assert!(parse_time("since", "", NOW).is_err());
    let query = q(&[("since", "2h"), ("until", "1h")]).unwrap();
    assert_eq!(query.since_ms, Some(NOW - 7_200_000));
    assert_eq!(query.until_ms, Some(NOW - 3_600_000));
}

#[test]
fn refusals_name_the_field() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("limit", "0")], "limit"),
        (&[("limit", "201")], "limit"),
        (&[("limit", "-1")], "limit"),
        (&[("limit", "+5")], "limit"),
        (&[("limit", "1e2")], "limit"),
        (&[("limit", " 5")], "limit"),
        (&[("limit", "99999999999999999999999")], "limit"),
        (&[("offset", "-1")], "offset"),
        (&[("offset", "abc")], "offset"),
        (&[("offset", "9223372036854775808")], "offset"),
        (&[("since", "yesterday")], "since"),
        (&[("since", "1w")], "since"),
        (&[("since", "h")], "since"),
        (&[("since", "-1h")], "since"),
        (&[("since", "2026-13-01T00:00:00Z")], "since"),
        (&[("since", "2026-01-01")], "since"),
        (&[("since", "999999999999999999d")], "since"),
        (&[("until", "soon")], "until"),
        (&[("since", "1h"), ("until", "2h")], "until"),
        (&[("verdict", "maybe")], "verdict"),
        (&[("verdict", "ALLOW")], "verdict"),
        (&[("agent_id", "")], "agent_id"),
        (&[("agent_id", "a"), ("agent_id", "b")], "agent_id"),
        (&[("agent", "a")], "agent"),
        (&[("tenant", "other")], "tenant"),
    ];
    for (params, field) in cases {
        let err = q(params).unwrap_err();
        assert_eq!(err.field, *field, "{params:?}");
        let api = err.to_api_error();
        assert_eq!(api.status_code(), 422, "{params:?}");
        assert_eq!(api.code, "validation_error");
        let body = api.to_json(None);
        assert_eq!(body["errors"][0]["field"], *field);
        assert!(body["detail"].as_str().unwrap().starts_with(field));
    }
}

#[test]
fn boundaries_accepted() {
    assert_eq!(q(&[("limit", "1")]).unwrap().limit, 1);
    assert_eq!(q(&[("limit", "200")]).unwrap().limit, 200);
    assert_eq!(q(&[("offset", "0")]).unwrap().offset, 0);
    let same = q(&[("since", "1h"), ("until", "1h")]).unwrap();
    assert_eq!(same.since_ms, same.until_ms);
}
