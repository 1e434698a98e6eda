//! `PUT /v1/credentials/{name}`: the agents a binding names must be agents of the
//! operator's tenant. An unknown agent and another tenant's agent are refused alike (422
//! naming the field and the agents), so the answer never reveals another tenant's ids.

use portcullis_admin::{serve, unusable_agents, Admin, ControlPlane, CredentialsApi};
use portcullis_core::{Agent, SystemClock};
use portcullis_identity::Registry;
use portcullis_store::{Role, SealKey, Store};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Harness {
    addr: SocketAddr,
    store: Store,
    acme: String,
    _shutdown: watch::Sender<bool>,
}

async fn start() -> Harness {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    for (id, tenant) in [
        ("billing_bot", "acme"),
        ("support_bot", "acme"),
        ("globex_bot", "globex"),
    ] {
        store
            .create_agent(&Agent::new(id, tenant, 1))
            .await
            .unwrap();
    }
    let registry = Arc::new(Registry::new());
    let cp = ControlPlane::new(store.clone(), registry, Arc::new(SystemClock));
    cp.enable_credentials(CredentialsApi {
        key: Arc::new(SealKey::from_bytes(&[7u8; 32]).unwrap()),
        config: Vec::new(),
    });
    cp.reload_registry().await.unwrap();
    let (tx, rx) = watch::channel(false);
    let admin = Admin::with_control_plane(prometheus::Registry::new(), Vec::new(), rx.clone(), cp);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, admin, rx));
    let (_, acme) = store
        .create_api_key("acme", Role::Admin, "ops", 1)
        .await
        .unwrap();
    Harness {
        addr,
        store,
        acme,
        _shutdown: tx,
    }
}

async fn put(h: &Harness, name: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let req = format!(
        "PUT /v1/credentials/{name} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        h.acme,
        body.len()
    );
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .ok();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn unknown_and_other_tenant_agents_are_refused_naming_them() {
    let h = start().await;
    let cases: [(&[&str], &[&str]); 4] = [
        (&["ghost_bot"], &["ghost_bot"]),
        (&["globex_bot"], &["globex_bot"]),
        (&["billing_bot", "globex_bot"], &["globex_bot"]),
        (
            &["nope_bot", "billing_bot", "globex_bot"],
            &["nope_bot", "globex_bot"],
        ),
    ];
    for (agents, refused) in cases {
        let (status, v) = put(
            &h,
            "openai_prod",
            &json!({"hosts": ["api.openai.com"], "agents": agents, "secret": "sk-test-1"}),
        )
        .await;
        assert_eq!(status, 422, "{agents:?}: {v}");
        assert_eq!(v["code"], "validation_error", "{v}");
        assert_eq!(v["errors"][0]["field"], "agents", "{v}");
        assert_eq!(v["agents"], json!(refused), "{v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        for r in refused {
            assert!(detail.contains(r), "{detail}");
        }
        assert!(detail.contains("tenant `acme`"), "{detail}");
        // Never whose the other agent is.
        assert!(
            !detail.contains("globex`") && !v.to_string().contains("\"globex\""),
            "{v}"
        );
        assert!(!v.to_string().contains("sk-test-1"), "{v}");
    }
    // Nothing was stored.
    assert!(h
        .store
        .get_credential("openai_prod")
        .await
        .unwrap()
        .is_none());

    // The tenant's own agents (and groups, which name no registry entry) are accepted.
    let (status, v) = put(
        &h,
        "openai_prod",
        &json!({"hosts": ["api.openai.com"], "agents": ["billing_bot", "support_bot"],
                "groups": ["finance"], "secret": "sk-test-1"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["agents"], json!(["billing_bot", "support_bot"]), "{v}");
    // An update that adds a foreign agent is refused and leaves the stored binding as is.
    let (status, v) = put(
        &h,
        "openai_prod",
        &json!({"hosts": ["api.openai.com"], "agents": ["billing_bot", "globex_bot"]}),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    let stored = h
        .store
        .get_credential("openai_prod")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.spec["agents"], json!(["billing_bot", "support_bot"]));
}

#[tokio::test]
async fn unusable_agents_tells_unknown_from_other_tenant_for_the_cli() {
    let h = start().await;
    let names: Vec<String> = ["billing_bot", "globex_bot", "ghost_bot"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let u = unusable_agents(&h.store, "acme", &names).await.unwrap();
    assert_eq!(u.unknown, vec!["ghost_bot".to_owned()]);
    assert_eq!(
        u.other_tenant,
        vec![("globex_bot".to_owned(), "globex".to_owned())]
    );
    assert_eq!(u.names(), vec!["ghost_bot", "globex_bot"]);
    assert!(unusable_agents(&h.store, "acme", &names[..1])
        .await
        .unwrap()
        .is_empty());
    assert!(unusable_agents(&h.store, "acme", &[])
        .await
        .unwrap()
        .is_empty());
}
