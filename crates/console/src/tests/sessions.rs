//! Sign-in, sessions in the store, expiry, sign-out, revoked keys, trusted headers.

use super::harness::{local, Db, H, T0};
use crate::{ConsoleSettings, TrustedHeaders};
use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;
use portcullis_store::{sha256_hex, Role};
use std::net::SocketAddr;
use std::time::Duration;

crate::tests::both_backends!(
    a_key_signs_in_and_a_wrong_one_is_refused,
    without_a_session_pages_redirect_and_changes_are_refused,
    sign_out_deletes_the_session_everywhere,
    sessions_expire_when_idle_and_at_their_lifetime,
    revoking_the_key_ends_its_sessions,
    trusted_headers_count_only_from_the_configured_sources,
);

async fn a_key_signs_in_and_a_wrong_one_is_refused(db: Db) {
    let h = H::new(db).await;
    let wrong = h
        .post("/ui/login", None, &[("key", "pck_not_a_real_key")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    assert!(wrong.body.contains("not accepted"), "{}", wrong.body);
    let empty = h.post("/ui/login", None, &[("key", "")]).await;
    assert_eq!(empty.status, 401);

    let r = h
        .post(
            "/ui/login",
            None,
            &[("key", &h.admin_key), ("next", "/ui/agents")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/ui/agents");
    let set = r.header("set-cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS configured: {set}");
    assert!(
        !set.contains(&h.admin_key),
        "the key never reaches the browser"
    );
    let cookie = set.split(';').next().unwrap_or("");
    let id = cookie.trim_start_matches("portcullis_session=");
    assert_eq!(id.len(), 64);
    // Only the hash is stored; the id itself finds nothing.
    assert!(h
        .store
        .console_session(&sha256_hex(id), T0, 3600)
        .await
        .unwrap()
        .is_some());
    assert!(h
        .store
        .console_session(id, T0, 3600)
        .await
        .unwrap()
        .is_none());

    let page = h.get("/ui/", Some(cookie)).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(&h.admin_key));
    // An off-site `next` is ignored.
    let r = h
        .post(
            "/ui/login",
            None,
            &[("key", &h.admin_key), ("next", "//evil.example/")],
        )
        .await;
    assert_eq!(r.header("location"), "/ui/");
}

async fn without_a_session_pages_redirect_and_changes_are_refused(db: Db) {
    let h = H::new(db).await;
    let r = h.get("/ui/agents?x=1", None).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        "/ui/login?next=%2Fui%2Fagents%3Fx%3D1"
    );
    let r = h.get("/ui/", Some("portcullis_session=0000000000000000000000000000000000000000000000000000000000000000")).await;
    assert_eq!(r.status, 303);
    let r = h
        .post("/ui/agents/bot/suspend", None, &[("csrf", "x")])
        .await;
    assert_eq!(r.status, 401);
    let agent = h.store.get_agent("bot").await.unwrap().unwrap();
    assert_eq!(agent.status, portcullis_core::AgentStatus::Active);
}

async fn sign_out_deletes_the_session_everywhere(db: Db) {
    let h = H::new(db).await;
    let (cookie, csrf) = h.sign_in(&h.admin_key).await;
    let r = h
        .post("/ui/logout", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(
        h.get("/ui/", Some(&cookie)).await.status,
        303,
        "the old cookie is dead"
    );
}

async fn sessions_expire_when_idle_and_at_their_lifetime(db: Db) {
    let h = H::with_settings(
        db,
        ConsoleSettings {
            session_ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            ..ConsoleSettings::default()
        },
    )
    .await;
    let (cookie, _) = h.sign_in(&h.admin_key).await;
    h.clock.advance(Duration::from_secs(500));
    assert_eq!(
        h.get("/ui/", Some(&cookie)).await.status,
        200,
        "used within the idle timeout"
    );
    h.clock.advance(Duration::from_secs(500));
    assert_eq!(
        h.get("/ui/", Some(&cookie)).await.status,
        200,
        "the last use extended it"
    );
    h.clock.advance(Duration::from_secs(601));
    assert_eq!(
        h.get("/ui/", Some(&cookie)).await.status,
        303,
        "idle too long"
    );

    let (cookie, _) = h.sign_in(&h.admin_key).await;
    for _ in 0..8 {
        h.clock.advance(Duration::from_secs(500));
        let _ = h.get("/ui/", Some(&cookie)).await;
    }
    assert_eq!(
        h.get("/ui/", Some(&cookie)).await.status,
        303,
        "past the lifetime"
    );
    let pruned = h
        .store
        .prune_console_sessions(T0 + 10_000, 600)
        .await
        .unwrap();
    assert!(pruned >= 2, "{pruned}");
}

async fn revoking_the_key_ends_its_sessions(db: Db) {
    let h = H::new(db).await;
    let (cookie, _) = h.sign_in(&h.viewer_key).await;
    let keys = h.store.list_api_keys(Some("default")).await.unwrap();
    let viewer = keys.iter().find(|k| k.role == Role::Viewer).unwrap();
    h.store.revoke_api_key(None, &viewer.id, T0).await.unwrap();
    assert_eq!(h.get("/ui/", Some(&cookie)).await.status, 303);
}

fn trusted() -> ConsoleSettings {
    ConsoleSettings {
        trusted_header: Some(TrustedHeaders {
            sources: vec!["10.0.0.0/8".parse().unwrap()],
            user: HeaderName::from_static("x-forwarded-user"),
            email: HeaderName::from_static("x-forwarded-email"),
            groups: HeaderName::from_static("x-forwarded-groups"),
            roles: vec![
                ("platform".into(), "default".into(), Role::Admin),
                ("auditors".into(), "acme".into(), Role::Viewer),
            ],
        }),
        ..ConsoleSettings::default()
    }
}

async fn from(h: &H, peer: SocketAddr, headers: &[(&str, &str)]) -> super::harness::Resp {
    let mut b = Request::builder()
        .uri("/ui/agents")
        .header("host", "admin.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    h.send_from(b.body(Full::new(Bytes::new())).unwrap(), peer)
        .await
}

async fn trusted_headers_count_only_from_the_configured_sources(db: Db) {
    let h = H::with_settings(db, trusted()).await;
    let proxy = SocketAddr::from(([10, 1, 2, 3], 5000));
    let ids = [
        ("x-forwarded-user", "alice"),
        ("x-forwarded-email", "alice@example.com"),
        ("x-forwarded-groups", "staff, auditors"),
    ];

    // Spoofed from anywhere else: ignored, the login page it is.
    let r = from(&h, local(), &ids).await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").starts_with("/ui/login"));

    let r = from(&h, proxy, &ids).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("alice@example.com"));
    assert!(r.body.contains("rival"), "acme's agent");
    assert!(!r.body.contains(">bot<"), "not the default tenant's");
    assert!(!r.body.contains("/suspend"), "viewer: no controls");
    assert!(r.header("set-cookie").contains("HttpOnly"));

    let r = from(
        &h,
        proxy,
        &[
            ("x-forwarded-user", "mallory"),
            ("x-forwarded-groups", "staff"),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "no mapped group");
    let r = from(
        &h,
        SocketAddr::from(([0, 0, 0, 0, 0, 0xffff, 0x0a01, 0x0203], 5000)),
        &ids,
    )
    .await;
    assert_eq!(
        r.status, 200,
        "an IPv4-mapped IPv6 peer is the same address"
    );
}
