//! What the pages show and do, through the same operations as the API.

use super::harness::{record, Db, H};
use portcullis_core::{AgentStatus, Verdict};

crate::tests::both_backends!(
    requests_default_to_the_last_day_and_filter_in_the_url,
    pages_of_many_records_use_a_cursor,
    agents_are_created_changed_and_suspended_through_the_operations,
    the_simulator_decides_like_the_recorded_denial,
    usage_shadow_report_and_policy_modes,
);

async fn requests_default_to_the_last_day_and_filter_in_the_url(db: Db) {
    let h = H::new(db).await;
    let now = h.now_ms();
    let mut old = record(
        "00OLD",
        "default",
        "bot",
        Verdict::Allow,
        now - 2 * 86_400_000,
    );
    old.path = Some("/old".into());
    let mut denied = record("01D", "default", "bot", Verdict::Deny, now - 5000);
    denied.policy = Some("guard".into());
    denied.reasons = vec!["path /admin is off limits".into()];
    denied.host = Some("other.example".into());
    let allowed = record("01E", "default", "helper", Verdict::Allow, now - 4000);
    h.insert(vec![old, denied, allowed]).await;
    let (cookie, _) = h.sign_in(&h.admin_key).await;
    let page = h.get("/ui/", Some(&cookie)).await;
    assert!(page.body.contains("(last 24h)"), "range shown");
    assert!(page.body.contains("2 records"));
    assert!(!page.body.contains("/ui/requests/00OLD"));
    let e = page.body.find("/ui/requests/01E").unwrap();
    let d = page.body.find("/ui/requests/01D").unwrap();
    assert!(e < d, "newest first");
    assert!(
        page.body
            .contains("hx-get=\"/ui/requests/live?since=24h&#38;seen="),
        "live updates"
    );

    let f = h.get("/ui/?verdict=deny", Some(&cookie)).await;
    assert!(f.body.contains("/ui/requests/01D") && !f.body.contains("/ui/requests/01E"));
    assert!(
        f.body.contains("<option value=\"deny\" selected>"),
        "filter kept in the form"
    );
    let f = h
        .get("/ui/?host=other.example&status=403", Some(&cookie))
        .await;
    assert!(
        f.body.contains("1 records") && f.body.contains("01D"),
        "{}",
        f.body
    );
    let f = h.get("/ui/?since=3d", Some(&cookie)).await;
    assert!(f.body.contains("00OLD"));
    let bad = h.get("/ui/?status=9999", Some(&cookie)).await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("status: must be an HTTP status"));

    let live = h
        .get("/ui/requests/live?since=24h&seen=1.01D", Some(&cookie))
        .await;
    assert_eq!(live.status, 200);
    assert!(live.body.trim_start().starts_with("<tbody"), "a fragment");
    assert!(
        live.body.contains("class=\"fresh\""),
        "rows newer than `seen` are marked"
    );

    let detail = h.get("/ui/requests/01D", Some(&cookie)).await;
    assert_eq!(detail.status, 200);
    for want in [
        "guard",
        "path /admin is off limits",
        "denied",
        "/ui/simulate?from=01D",
        "upstream first byte",
        "total tokens",
    ] {
        assert!(detail.body.contains(want), "detail lacks {want}");
    }
}

async fn pages_of_many_records_use_a_cursor(db: Db) {
    let h = H::new(db).await;
    let now = h.now_ms();
    let records = (0..120)
        .map(|i| {
            record(
                &format!("01R{i:04}"),
                "default",
                "bot",
                Verdict::Allow,
                now - 100_000 + i,
            )
        })
        .collect();
    h.insert(records).await;
    let (cookie, _) = h.sign_in(&h.admin_key).await;
    let p1 = h.get("/ui/", Some(&cookie)).await;
    assert!(p1.body.contains("01R0119") && !p1.body.contains("01R0069"));
    let older = p1
        .body
        .split("id=\"older\"")
        .next()
        .and_then(|s| s.rsplit("href=\"").next())
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&");
    let p2 = h.get(&older, Some(&cookie)).await;
    assert!(
        p2.body.contains("01R0069") && !p2.body.contains("01R0070<"),
        "{older}"
    );
    assert!(
        !p2.body.contains("hx-get"),
        "no live refresh on older pages"
    );
}

async fn agents_are_created_changed_and_suspended_through_the_operations(db: Db) {
    let h = H::new(db).await;
    let (cookie, csrf) = h.sign_in(&h.admin_key).await;
    let r = h
        .post(
            "/ui/agents",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("id", "scout"),
                ("groups", "research, prod"),
                ("rpm", "30"),
                ("mode", "shadow"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");
    let secret = r
        .body
        .split("id=\"secret\"")
        .next()
        .and_then(|s| s.rsplit("value=\"").next())
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(secret.len() > 20, "{secret}");
    assert!(r.body.contains("export HTTP_PROXY=http://scout:"));
    let a = h.store.get_agent("scout").await.unwrap().unwrap();
    assert_eq!(a.groups, vec!["research", "prod"]);
    assert_eq!(a.limits.rpm, Some(30));
    assert_eq!(
        a.secret_sha256.as_deref(),
        Some(portcullis_store::sha256_hex(&secret).as_str())
    );
    let list = h.get("/ui/agents", Some(&cookie)).await;
    assert!(!list.body.contains(&secret), "shown once");

    let bad = h
        .post(
            "/ui/agents",
            Some(&cookie),
            &[("csrf", &csrf), ("id", "Bad Id")],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("<code>id</code>"), "{}", bad.body);
    let dup = h
        .post(
            "/ui/agents",
            Some(&cookie),
            &[("csrf", &csrf), ("id", "scout")],
        )
        .await;
    assert_eq!(dup.status, 409);

    let r = h
        .post(
            "/ui/agents/scout/config",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("mode", "active"),
                ("rpm", ""),
                ("tpm", "1000"),
                ("groups", "research"),
                ("scopes", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let a = h.store.get_agent("scout").await.unwrap().unwrap();
    assert_eq!((a.limits.rpm, a.limits.tpm), (None, Some(1000)));
    assert_eq!(a.groups, vec!["research"]);

    let r = h
        .post("/ui/agents/scout/rotate", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("New secret for scout"));
    assert_eq!(
        h.store
            .get_agent("scout")
            .await
            .unwrap()
            .unwrap()
            .generation,
        a.generation + 1
    );
    let r = h
        .post("/ui/agents/scout/revoke", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        h.store.get_agent("scout").await.unwrap().unwrap().status,
        AgentStatus::Revoked
    );
    let r = h
        .post(
            "/ui/agents/scout/activate",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 409, "revocation is permanent");
}

async fn the_simulator_decides_like_the_recorded_denial(db: Db) {
    let h = H::new(db).await;
    let now = h.now_ms();
    let mut denied = record("01S", "default", "bot", Verdict::Deny, now - 1000);
    denied.method = Some("GET".into());
    denied.path = Some("/admin/users".into());
    denied.provider = None;
    denied.model = None;
    denied.policy = Some("guard".into());
    denied.reasons = vec!["path /admin is off limits".into()];
    h.insert(vec![denied]).await;
    let (cookie, csrf) = h.sign_in(&h.viewer_key).await;
    let pre = h.get("/ui/simulate?from=01S", Some(&cookie)).await;
    assert!(
        pre.body
            .contains("value=\"https://api.example/admin/users\""),
        "prefilled"
    );
    assert!(pre.body.contains("<option value=\"bot\" selected>"));
    let r = h
        .post(
            "/ui/simulate",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("from", "01S"),
                ("agent", "bot"),
                ("method", "GET"),
                ("url", "https://api.example/admin/users"),
                ("headers", ""),
                ("body", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"sim-verdict\">deny<"), "{}", r.body);
    assert!(r.body.contains("<dd id=\"sim-policy\">guard</dd>"));
    assert!(r.body.contains("path /admin is off limits"));
    let bad = h
        .post(
            "/ui/simulate",
            Some(&cookie),
            &[("csrf", &csrf), ("agent", "bot"), ("url", "nope")],
        )
        .await;
    assert_eq!(bad.status, 422);
}

async fn usage_shadow_report_and_policy_modes(db: Db) {
    let h = H::new(db).await;
    let now = h.now_ms();
    let mut w = record("01W", "default", "bot", Verdict::WouldDeny, now - 1000);
    w.would_deny = vec!["guard".into()];
    h.insert(vec![
        w,
        record("01U", "default", "helper", Verdict::Allow, now - 2000),
    ])
    .await;
    let (cookie, csrf) = h.sign_in(&h.admin_key).await;
    let u = h.get("/ui/usage?window=1h&by=model", Some(&cookie)).await;
    assert_eq!(u.status, 200);
    assert!(
        u.body.contains("<svg") && u.body.contains("class=\"bar v-allow\""),
        "a chart"
    );
    assert!(u.body.contains("id=\"total-tokens\">30<"), "{}", u.body);
    assert!(u.body.contains("gpt-4o"));
    let p = h.get("/ui/policies?window=24h", Some(&cookie)).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("id=\"shadow\""), "{}", p.body);
    assert!(p.body.contains("/ui/requests/01W"));
    let r = h
        .post(
            "/ui/policies/guard/mode",
            Some(&cookie),
            &[("csrf", &csrf), ("mode", "shadow")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let p = h.get("/ui/policies", Some(&cookie)).await;
    assert!(p.body.contains("Promote to active"));
    let r = h
        .post(
            "/ui/policies/guard/mode",
            Some(&cookie),
            &[("csrf", &csrf), ("mode", "clear")],
        )
        .await;
    assert_eq!(r.status, 303);
    let (acme, acme_csrf) = h.sign_in(&h.acme_key).await;
    let r = h
        .post(
            "/ui/policies/guard/mode",
            Some(&acme),
            &[("csrf", &acme_csrf), ("mode", "disabled")],
        )
        .await;
    assert_eq!(r.status, 403, "only platform admins change modes");
}
