//! The document's parsing and the checks of [`Config::validate`].

use crate::*;
use portcullis_core::{AgentMode, RiskLevel};
use std::time::Duration;

fn credential_doc(fields: &[(&str, &str)]) -> String {
    let mut f: Vec<(&str, &str)> = vec![
        ("name", "\"openai_prod\""),
        ("hosts", "[\"api.example.com\"]"),
        ("file", "\"openai.key\""),
        ("agents", "[\"bot\"]"),
    ];
    for (k, v) in fields {
        f.retain(|(key, _)| key != k);
        if !v.is_empty() {
            f.push((k, v));
        }
    }
    let body: String = f.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!("[tls]\npassthrough = [\"pinned.example.com\"]\n[[credentials]]\n{body}")
}

#[test]
fn credentials_default_to_bearer_and_replace() {
    let c = Config::from_toml(&credential_doc(&[])).unwrap();
    c.validate().unwrap();
    let cred = &c.credentials[0];
    assert_eq!(cred.header, "authorization");
    assert_eq!(cred.format, "Bearer {secret}");
    assert_eq!(cred.mode, CredentialMode::Replace);
    let c = Config::from_toml(&credential_doc(&[
        ("header", "\"x-api-key\""),
        ("format", "\"{secret}\""),
        ("mode", "\"if_absent\""),
    ]))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.credentials[0].mode, CredentialMode::IfAbsent);
}

#[test]
fn empty_document_is_the_defaults() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c, Config::default());
    c.validate().unwrap();
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(c.proxy.allowed_ports, vec![80, 443]);
    assert!(!c.proxy.allow_unauthenticated);
}

#[test]
fn values_parse() {
    let c = Config::from_toml(
        r#"
        [proxy]
        listen = "0.0.0.0:3128"
        allowed_ports = [443, 8443]
        allow_private = ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
        idle_timeout = "2m"
        connect_timeout = 5
        [log]
        format = "json"
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.proxy.allowed_ports, vec![443, 8443]);
    assert_eq!(c.proxy.allow_private.len(), 3);
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.proxy.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn unknown_keys_are_named() {
    let e = Config::from_toml("[proxy]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
    assert_eq!(e.key, "proxy.listen_addr");
    assert!(e.reason.contains("listen_addr"), "{e}");
    let e = Config::from_toml("[nope]\n").unwrap_err();
    assert!(e.reason.contains("nope"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        ("[proxy]\nallowed_ports = [\"x\"]", "proxy.allowed_ports"),
        (
            "[proxy]\nallow_private = [\"10.0.0.0/33\"]",
            "proxy.allow_private",
        ),
        (
            "[proxy]\nidle_timeout = \"10 parsecs\"",
            "proxy.idle_timeout",
        ),
        ("[proxy]\nlisten = \"nowhere\"", "proxy.listen"),
        ("[log]\nformat = \"xml\"", "log.format"),
    ];
    for (src, key) in cases {
        let e = Config::from_toml(src).unwrap_err();
        assert!(e.key.starts_with(key), "{src}: {e}");
    }
    let e = Config::from_toml("[proxy]\nlisten = ").unwrap_err();
    assert_eq!(e.key, "(document)");
}

#[test]
fn agents() {
    let c = Config::from_toml(
        r#"
        [[agents]]
        id = "billing_bot"
        tenant = "acme"
        groups = ["finance"]
        allowed_scopes = ["stripe:customer:read"]
        secret_env = "BILLING_BOT_SECRET"
        mode = "shadow"
        risk_level = "HIGH"
        token_ttl = "5m"
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    let a = &c.agents[0];
    assert_eq!(a.mode, AgentMode::Shadow);
    assert_eq!(a.risk_level, RiskLevel::High);
    assert_eq!(a.token_ttl, Some(Duration::from_secs(300)));
    let bad = [
        ("id = \"Bad\"\nsecret_env = \"X\"", "agents[0].id"),
        ("id = \"ok_id\"", "agents[0].secret_sha256"),
        (
            "id = \"ok_id\"\nsecret_sha256 = \"ABC\"",
            "agents[0].secret_sha256",
        ),
        (
            "id = \"ok_id\"\nsecret_env = \"X\"\nallowed_scopes = [\"a b\"]",
            "agents[0].allowed_scopes",
        ),
        (
            "id = \"ok_id\"\nsecret_env = \"X\"\ntoken_ttl = 5",
            "agents[0].token_ttl",
        ),
    ];
    for (body, key) in bad {
        let e = Config::from_toml(&format!("[[agents]]\n{body}"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, key, "{body}");
    }
    let e = Config::from_toml("[[agents]]\nid = \"a1\"\nsecret_env = \"X\"\nfoo = 1").unwrap_err();
    assert_eq!(e.key, "agents[0].foo");
}

#[test]
fn validation() {
    let cases = [
        ("[proxy]\nallowed_ports = []", "proxy.allowed_ports"),
        ("[proxy]\nallowed_ports = [0]", "proxy.allowed_ports"),
        ("[proxy]\nmax_header_bytes = 10", "proxy.max_header_bytes"),
        ("[proxy]\nmax_headers = 0", "proxy.max_headers"),
        ("[proxy]\nmax_connections = 0", "proxy.max_connections"),
        ("[proxy]\nidle_timeout = 0", "proxy.idle_timeout"),
        (
            "[proxy]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"",
            "admin.listen",
        ),
        (
            "[policy]\ndir = \"p\"\nbundle_url = \"http://b.example/b.tar.gz\"",
            "policy.bundle_url",
        ),
        (
            "[policy]\nbundle_url = \"ftp://b.example/b.tar.gz\"",
            "policy.bundle_url",
        ),
        (
            "[policy]\nbundle_url = \"http:///b.tar.gz\"",
            "policy.bundle_url",
        ),
        (
            "[policy]\nbundle_url = \"http://b.example/b\"\nbundle_poll = 0",
            "policy.bundle_poll",
        ),
        (
            "[policy]\nbundle_url = \"http://b.example/b\"\nbundle_long_poll = \"1h\"",
            "policy.bundle_long_poll",
        ),
        (
            "[policy]\nbundle_url = \"http://b.example/b\"\nbundle_max_bytes = 0",
            "policy.bundle_max_bytes",
        ),
    ];
    let ok = "[policy]\nbundle_url = \"https://bundles.example:8443/v1/portcullis.tar.gz\"";
    Config::from_toml(ok).unwrap().validate().unwrap();
    for (src, key) in cases {
        let e = Config::from_toml(src).unwrap().validate().unwrap_err();
        assert_eq!(e.key, key, "{src}");
    }
}

#[test]
fn the_store_url_from_the_environment_wins_over_the_file() {
    let mut c = Config::from_toml("[store]\nurl = \"sqlite://data/p.db\"\n").unwrap();
    let pg = "postgres://gw:secret@db:5432/portcullis";
    assert!(!c.store.apply_env(|_| None));
    assert!(!c.store.apply_env(|_| Some("  ".to_owned())));
    assert_eq!(c.store.url, "sqlite://data/p.db");
    assert!(c
        .store
        .apply_env(|k| (k == STORE_URL_ENV).then(|| format!(" {pg}\n"))));
    assert_eq!(c.store.url, pg);
    c.validate().unwrap();
    c.store.url = "postgresql://db/p".to_owned();
    c.validate().unwrap();
    c.store.url = "mysql://db/p".to_owned();
    assert_eq!(c.validate().unwrap_err().key, "store.url");
    c.store.url = pg.to_owned();
    c.store.max_connections = 0;
    assert_eq!(c.validate().unwrap_err().key, "store.max_connections");
}

#[test]
fn audit_retention_and_spool() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.audit.retention, None);
    assert_eq!(c.audit.spool_max_bytes, 1024 * 1024 * 1024);
    let c = Config::from_toml("[audit]\nretention = \"30d\"\nspool_max_bytes = 0\n").unwrap();
    c.validate().unwrap();
    assert_eq!(c.audit.retention, Some(Duration::from_secs(30 * 86_400)));
    for (doc, key) in [
        ("[audit]\nretention = \"10m\"\n", "audit.retention"),
        ("[audit]\nretention = \"36600d\"\n", "audit.retention"),
        ("[audit]\nspool_path = \"\"\n", "audit.spool_path"),
    ] {
        let c = Config::from_toml(doc).unwrap();
        assert_eq!(c.validate().unwrap_err().key, key, "{doc}");
    }
    let e = Config::from_toml("[audit]\nretention = \"thirty days\"\n").unwrap_err();
    assert_eq!(e.key, "audit.retention");
}
