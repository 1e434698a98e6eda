//! CSRF, roles, tenants, escaping and headers.

use super::harness::{local, record, Db, H};
use bytes::Bytes;
use http_body_util::Full;
use portcullis_core::{AgentStatus, Verdict};

crate::tests::both_backends!(
    every_answer_carries_the_security_headers,
    a_change_without_the_csrf_token_or_from_another_site_is_refused,
    a_viewer_sees_no_controls_and_a_forged_change_is_refused,
    an_operator_never_sees_another_tenant,
    agent_controlled_strings_render_as_text,
);

async fn every_answer_carries_the_security_headers(db: Db) {
    let h = H::new(db).await;
    let (cookie, _) = h.sign_in(&h.admin_key).await;
    for path in [
        "/ui/",
        "/ui/agents",
        "/ui/policies",
        "/ui/simulate",
        "/ui/usage",
        "/ui/credentials",
        "/ui/login",
    ] {
        let r = h.get(path, Some(&cookie)).await;
        assert!(r.status == 200 || r.status == 303, "{path}: {}", r.status);
        let csp = r.header("content-security-policy");
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(d), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(r.header("referrer-policy"), "no-referrer");
        assert_eq!(r.header("cache-control"), "no-store", "{path}");
        assert!(
            !r.body.contains("<script>") && !r.body.contains("style="),
            "{path}: inline script or style"
        );
    }
    let page = h.get("/ui/", Some(&cookie)).await;
    assert!(page.body.contains("\"includeIndicatorStyles\":false"));
    let css = page
        .body
        .split("href=\"/ui/assets/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let a = h.get(&format!("/ui/assets/{css}"), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(a.header("content-type"), "text/css; charset=utf-8");
    let etag = a.header("etag").to_owned();
    let req = http::Request::builder()
        .uri(format!("/ui/assets/{css}"))
        .header("if-none-match", etag)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.send_from(req, local()).await.status, 304);
    assert_eq!(h.get("/ui/assets/console.css", None).await.status, 404);
    assert_eq!(h.get("/ui/assets/../../etc/passwd", None).await.status, 404);
}

async fn a_change_without_the_csrf_token_or_from_another_site_is_refused(db: Db) {
    let h = H::new(db).await;
    let (cookie, csrf) = h.sign_in(&h.admin_key).await;
    assert_eq!(csrf.len(), 64);
    let zeros = "0".repeat(64);
    // (form fields, request headers, what is wrong)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case<'_>; 4] = [
        (vec![], vec![("origin", "http://admin.test")], "no token"),
        (vec![("csrf", zeros.as_str())], vec![], "wrong token"),
        (
            vec![("csrf", csrf.as_str())],
            vec![("origin", "http://evil.example")],
            "foreign origin",
        ),
        (
            vec![("csrf", csrf.as_str())],
            vec![("sec-fetch-site", "cross-site")],
            "cross-site fetch",
        ),
    ];
    for (fields, headers, why) in cases {
        let r = h
            .post_with("/ui/agents/bot/suspend", Some(&cookie), &fields, &headers)
            .await;
        assert_eq!(r.status, 403, "{why}: {}", r.body);
    }
    assert_eq!(
        h.store.get_agent("bot").await.unwrap().unwrap().status,
        AgentStatus::Active
    );
    // The token in a header works too (htmx); and in the form.
    let r = h
        .post_with(
            "/ui/agents/bot/suspend",
            Some(&cookie),
            &[],
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        h.store.get_agent("bot").await.unwrap().unwrap().status,
        AgentStatus::Suspended
    );
    let r = h
        .post("/ui/agents/bot/activate", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        h.store.get_agent("bot").await.unwrap().unwrap().status,
        AgentStatus::Active
    );
    // A token belongs to its session.
    let (other, _) = h.sign_in(&h.admin_key).await;
    let r = h
        .post("/ui/agents/bot/suspend", Some(&other), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 403);
}

async fn a_viewer_sees_no_controls_and_a_forged_change_is_refused(db: Db) {
    let h = H::new(db).await;
    let (cookie, csrf) = h.sign_in(&h.viewer_key).await;
    let page = h.get("/ui/agents", Some(&cookie)).await;
    assert_eq!(page.status, 200);
    for control in [
        "/suspend",
        "/revoke",
        "/rotate",
        "action=\"/ui/agents\"",
        "Create an agent",
    ] {
        assert!(!page.body.contains(control), "viewer sees {control}");
    }
    let detail = h.get("/ui/agents/bot", Some(&cookie)).await;
    assert!(!detail.body.contains("/config") && !detail.body.contains("/suspend"));
    let c = csrf.as_str();
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("/ui/agents/bot/suspend", vec![("csrf", c)]),
        (
            "/ui/agents/bot/config",
            vec![("csrf", c), ("mode", "shadow")],
        ),
        ("/ui/agents", vec![("csrf", c), ("id", "sneaky")]),
        (
            "/ui/policies/guard/mode",
            vec![("csrf", c), ("mode", "disabled")],
        ),
        (
            "/ui/credentials",
            vec![
                ("csrf", c),
                ("name", "key_one"),
                ("hosts", "api.example"),
                ("secret", "s"),
            ],
        ),
    ];
    for (path, fields) in cases {
        let r = h.post(path, Some(&cookie), &fields).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.body.contains("viewer"), "{path}: {}", r.body);
    }
    let bot = h.store.get_agent("bot").await.unwrap().unwrap();
    assert_eq!(bot.status, AgentStatus::Active);
    assert!(h.store.get_agent("sneaky").await.unwrap().is_none());
}

async fn an_operator_never_sees_another_tenant(db: Db) {
    let h = H::new(db).await;
    let now = h.now_ms();
    h.insert(vec![
        record("01A", "default", "bot", Verdict::Allow, now - 1000),
        record("01B", "acme", "rival", Verdict::Deny, now - 2000),
    ])
    .await;
    let (acme, acme_csrf) = h.sign_in(&h.acme_key).await;
    let page = h.get("/ui/", Some(&acme)).await;
    assert!(page.body.contains("/ui/requests/01B"));
    assert!(
        !page.body.contains("/ui/requests/01A"),
        "another tenant's record"
    );
    assert_eq!(h.get("/ui/requests/01A", Some(&acme)).await.status, 404);
    assert_eq!(h.get("/ui/requests/01B", Some(&acme)).await.status, 200);
    let agents = h.get("/ui/agents", Some(&acme)).await;
    assert!(agents.body.contains("rival") && !agents.body.contains("data-agent=\"bot\""));
    assert_eq!(h.get("/ui/agents/bot", Some(&acme)).await.status, 404);
    let r = h
        .post(
            "/ui/agents/bot/suspend",
            Some(&acme),
            &[("csrf", &acme_csrf)],
        )
        .await;
    assert_eq!(r.status, 404, "another tenant's agent reads as unknown");
    assert_eq!(
        h.store.get_agent("bot").await.unwrap().unwrap().status,
        AgentStatus::Active
    );
    let sim = h
        .post(
            "/ui/simulate",
            Some(&acme),
            &[
                ("csrf", &acme_csrf),
                ("agent", "bot"),
                ("method", "GET"),
                ("url", "https://api.example/"),
            ],
        )
        .await;
    assert_eq!(sim.status, 404, "cannot simulate as another tenant's agent");
    let usage = h.get("/ui/usage", Some(&acme)).await;
    assert!(usage.body.contains("rival") && !usage.body.contains(">bot<"));
    assert_eq!(
        h.get("/ui/policies/guard", Some(&acme)).await.status,
        404,
        "sources are for the platform tenant"
    );
    let (platform, _) = h.sign_in(&h.admin_key).await;
    assert_eq!(
        h.get("/ui/policies/guard", Some(&platform)).await.status,
        200
    );
}

async fn agent_controlled_strings_render_as_text(db: Db) {
    let h = H::new(db).await;
    let now = h.now_ms();
    let mut r = record("01X", "default", "bot", Verdict::Deny, now - 1000);
    r.path = Some("/<script>alert(1)</script>".into());
    r.subagent = Some("\"><img src=x onerror=alert(2)>".into());
    r.model = Some("<svg onload=alert(3)>".into());
    r.host = Some("javascript:alert(4)".into());
    r.reasons = vec!["<b>bold</b> & \"quoted\"".into()];
    r.policy = Some("guard".into());
    h.insert(vec![r]).await;
    let (cookie, _) = h.sign_in(&h.admin_key).await;
    for path in [
        "/ui/",
        "/ui/requests/01X",
        "/ui/agents",
        "/ui/usage?by=model",
        "/ui/simulate?from=01X",
        "/ui/?subagent=%22%3E%3Cimg%20src%3Dx%3E",
    ] {
        let p = h.get(path, Some(&cookie)).await;
        assert_eq!(p.status, 200, "{path}");
        for raw in [
            "<script>alert",
            "<img src=x",
            "<svg onload",
            "<b>bold",
            "href=\"javascript:",
        ] {
            assert!(!p.body.contains(raw), "{path} contains {raw}");
        }
    }
    let d = h.get("/ui/requests/01X", Some(&cookie)).await;
    assert!(
        d.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "visible as text"
    );
    assert!(
        d.body
            .contains("&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"),
        "{}",
        d.body
    );
}
